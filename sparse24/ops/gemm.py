"""sparse24.ops.linear (module gemm): y = act(x @ W^T + bias) with W packed 2:4; dispatch, plans
and registration.

Three kernel families serve it, each one module behind one interface (sparse24/ops/families:
its config fields, candidates, heuristic, fit and launch; ``FAMILIES`` maps a config's "family"
to it):
- "wgmma" (sparse24/ops/wgmma.py, kernel sparse24/kernels/sparse_wgmma.py): Hopper's sparse tensor
  cores (wgmma.mma_async.sp, a Gluon kernel) for more than ``MMA_MAX_TOKENS_SM90`` tokens on sm90
  (H100, H200): 1.24-1.53x cuBLAS on the bench shapes at M >= 24576 (BERT) and M >= 1024 (LLM) on
  an H200 (bench/results/h200/wgmma_sweep_b50bc5c.log); and at 0-64 tokens, where its TMA ring,
  with the metadata through it, streams the weight at 1.56-1.70x cuBLAS on LLM shapes of an H100
  (wgmma.few_token_config);
- "mma" (families/mma.py, kernel sparse_mma.py): the sparse tensor cores through the sm80
  instruction (mma.sp), on sm80-sm89 at every token count (split-K streams the weight for few
  tokens), and on sm90 only where the tuner picks it;
- "dot" (families/dot.py, kernel sparse_dot.py): unpack the weight in registers and tl.dot, with
  split-K, for few tokens where moving the weight dominates, and for N not a multiple of 64. It is
  also the family the Triton interpreter can run (inline asm cannot), so CPU tests exercise it.
A config is a plain dict (family and that family's fields); ``choose_config`` takes it from the
tuning cache when there is an entry, else from ``heuristic_config`` (which family: the dispatch
rule here; its fields: the family's heuristic). ``linear`` asks ``choose_config`` once per
problem (M, N, K, dtype, device) and keeps the answer as a plan, (the family's launch, config,
whether that launch takes N-D rows);
the sm90 family's launch there is a ``wgmma.PlannedLaunch`` that keeps the plan's direct launches.
A weight whose checks passed is recorded (``_checked``, by its tensors' ids, while they hold the
same memory): a repeated call of it checks only x, then takes the launch bound to the weight and
x's shape (sm90: ``wgmma.BoundLaunch``) or looks the plan up, and launches. The registered op,
which a compiled graph calls, uses the same records.
"""

from __future__ import annotations

import functools
import weakref

import torch

from sparse24 import reference, tuning
from sparse24.activations import ALL_CODES, GATED, GATED_FLAG
from sparse24.ops import configs, wgmma
from sparse24.ops._checks import GEMM_DTYPES, check_packed, use_triton
from sparse24.ops.device import launch_guard
from sparse24.ops.families import FAMILIES, _splitk


_split_k = _splitk.split_k  # (splits, chunks per split) of a config: tests and tools ask gemm


# ------------------------------------------------------------------------------------ configs
def _sm_count(device_index: int) -> int:
    """The SM count the heuristics size grids and split-K by (tests pretend one here)."""
    return configs.device_info(device_index)[2]  # memoized there


# The most tokens the families compete for on sm90 (the tuner times them all; the heuristic gives
# them to the sm90 kernel's few-token tiles, wgmma.few_token_config); more tokens
# (m > MMA_MAX_TOKENS_SM90) go to the wgmma family's large-M configs.
MMA_MAX_TOKENS_SM90 = wgmma.FEW_TOKEN_MAX


def uses_wgmma(m: int, device: torch.device) -> bool:
    """The sm90 token rule (the tuner and the heuristic both follow it): only wgmma for more than
    ``MMA_MAX_TOKENS_SM90`` tokens on an sm90 GPU. Below it the families compete (the heuristic:
    wgmma.few_token_config; the tuner: every family's candidates)."""
    return device.type == "cuda" and m > MMA_MAX_TOKENS_SM90 and wgmma.supported(device.index or 0)


def _may_serve(config: dict, m: int, n: int, device: torch.device) -> bool:
    """Whether a (tuned) config may serve m tokens: past the sm90 rule only wgmma; below it any
    other family, and on sm90 wgmma too. A wgmma config only with a token tile the family would
    offer for m: a near M bucket's entry may hold a tile of 128 tokens for 16, or of 16 for 256
    (each token tile reads the whole weight again)."""
    if config["family"] != "wgmma":
        return not uses_wgmma(m, device)
    return (device.type == "cuda" and wgmma.supported(device.index or 0)
            and wgmma.worth_timing(config["BT"], m, n, _sm_count(device.index or 0)))


@functools.lru_cache(maxsize=4096)
def heuristic_config(m: int, n: int, k: int, device: torch.device) -> dict:
    """A config without tuning. The family: wgmma by ``uses_wgmma``, and on sm90 for the few-token
    shapes where its weight streaming wins (``wgmma.few_token_config``); else mma on a GPU when its
    feature blocks (64, 128 or 256 wide) fit N; else dot (on CPU, where the Triton interpreter
    cannot run inline asm, and for N not a multiple of 64). Its fields: that family's
    ``heuristic``, given this GPU's SM count. Shipped defaults (sparse24/tuning/defaults) take
    precedence where they exist (``choose_config``). Memoized (``choose_config`` asks once per
    problem, benches and tools more): do not modify the returned dict.
    """
    sms = _sm_count(device.index or 0) if device.type == "cuda" else 1
    if uses_wgmma(m, device):
        family = FAMILIES["wgmma"]
    elif device.type == "cuda" and wgmma.supported(device.index or 0) and (
            streaming := wgmma.few_token_config(m, n, k)):
        # a few tokens on sm90: the wgmma kernel where it streams faster (any N it can pack)
        return streaming
    elif device.type == "cuda" and n % 64 == 0:
        family = FAMILIES["mma"]
    else:
        family = FAMILIES["dot"]
    return family.heuristic(m, n, k, sms)


def config_fits(config: dict, n: int, k: int) -> bool:
    """Whether a (possibly cached) config can serve an [n, k] weight."""
    return FAMILIES[config["family"]].fits(config, n, k)


def choose_config(m: int, n: int, k: int, dtype: torch.dtype, device: torch.device) -> dict:
    """The one function that decides a problem's config (``linear`` plans with it)."""
    cached = configs.tuned(m, n, k, dtype, device)  # None off CUDA
    # a cached config of the other side of the sm90 rule (e.g. an mma entry tuned before the
    # wgmma family existed), or with a wgmma token tile far from M, is not used (_may_serve)
    if (cached is not None and config_fits(cached, n, k)
            and _may_serve(cached, m, n, device)):
        served = getattr(FAMILIES[cached["family"]], "served", None)
        return cached if served is None else served(cached, n)
    config = heuristic_config(m, n, k, device)
    if device.type != "cuda" and config["family"] == "mma":
        raise AssertionError("the mma family needs a GPU")
    return config


def run_config(x2, values, meta, bias, activation: int, cfg: dict, out=None) -> torch.Tensor:
    """Run one config on 2-D x; used by the tuner (which checks every candidate), benches and
    tests. ``out`` lets tests poison the output first, to prove every element is written.
    ``activation``: a code of sparse24.activations.ALL_CODES (a gated one halves the outputs)."""
    width = values.shape[0] // 2 if activation >= GATED_FLAG else values.shape[0]
    y = out if out is not None else torch.empty(
        (x2.shape[0], width), dtype=x2.dtype, device=x2.device)
    if x2.shape[0] == 0:
        return y
    FAMILIES[cfg["family"]].launch(x2, values, meta, bias, y, activation, cfg)
    return y


# -------------------------------------------------------------------------------------- plans
# (M, N, K, dtype, device) -> (the family's launch, or its plan_launch for this plan, config,
# whether that launch takes N-D rows): what choose_config decided for the problem, so that a
# repeated call skips choosing (choose_config, configs.tuned and run_config were 3 of its 19
# Python frames on a CPU, bench/NOTES.md 2026-12-04). Exact M, not its bucket: the
# heuristic sizes split-K and the wgmma grid by M. Emptied when the tuned configs change
# (tuning.on_change: a put, so the next call runs a newly tuned config; a new cache directory,
# noticed when a new problem is planned or tuning.default_cache() is called: a planned problem
# does not read $SPARSE24_CACHE_DIR again), and when full, so that token counts without end
# (every sequence length of a server) cannot grow it without bound.
_plans: dict[tuple, tuple] = {}
_MAX_PLANS = 4096


@tuning.on_change
def _forget_plans() -> None:
    _plans.clear()  # the global, looked up at each call: tests may swap the dict
    # the records' bound launches hold the old plans' launches: checked and bound again
    _checked.clear()


def _plan(key: tuple) -> tuple:
    if len(_plans) >= _MAX_PLANS:
        _plans.clear()
    generation = tuning.generation()
    cfg = choose_config(*key)
    family = FAMILIES[cfg["family"]]
    planned = getattr(family, "plan_launch", None)
    launch = family.launch if planned is None else planned(cfg, *key)
    plan = _plans[key] = (launch, cfg, getattr(launch, "takes_rows", False))
    if tuning.generation() != generation:  # a put (another thread's) landed while choosing
        _plans.pop(key, None)  # stored, then checked: a put between check and store is seen too
    return plan


# ------------------------------------------------------------------------------- registration
def _linear_impl(
    x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor, bias: torch.Tensor | None,
    activation: str | None,
) -> torch.Tensor:
    if not use_triton(x) or x.dtype not in GEMM_DTYPES:
        return reference.linear_ref(x, values, meta, bias, activation)
    n, k = values.shape[0], values.shape[1] * 2
    # The kernels read x rows with 4-byte (inline asm) and 16-byte (tl.load) accesses: unit
    # stride along K, rows 8 elements apart, a 16-byte aligned start. A contiguous, aligned N-D
    # x is not reshaped: a launch that takes rows (the sm90 plans) reads its address and row
    # stride, and y is made in its final shape (the two reshapes were 5.3 us a call on the
    # H100's host, bench/NOTES.md session 11). Any other x is flattened to 2-D, and copied where
    # it does not fit: clone, since contiguous() returns a contiguous x that starts misaligned
    # as it is, and TMA refuses its address.
    shape = None  # the output's leading dims where y is made 2-D for an N-D x
    if x.dim() > 2 and x.is_contiguous() and not x.data_ptr() % 16:
        m = x.numel() // k
        rows = False  # decided by the plan below
    else:
        if x.dim() != 2:  # 1-D, misaligned or not contiguous
            shape = x.shape[:-1]
            x = x.reshape(-1, k)  # a view where the rows allow one, else a copy
        if x.stride(1) != 1 or x.stride(0) % 8 or x.data_ptr() % 16:
            x = x.clone(memory_format=torch.contiguous_format)
        m, rows = x.shape[0], True  # 2-D: every launch takes it
    width = n // 2 if activation in GATED else n  # a gated epilogue halves the outputs
    if m == 0:  # no tokens: nothing to compute, so no config to choose (nor to tune)
        return x.new_empty((*(x.shape[:-1] if shape is None else shape), width))
    dtype, device = x.dtype, x.device
    key = (m, n, k, dtype, device)
    launch, cfg, takes_rows = _plans.get(key) or _plan(key)
    code = ALL_CODES[activation]
    # new_empty: x's dtype and device without parsing them as arguments (0.25-0.45 us a call
    # less on the dev CPU, bench/NOTES.md session 11)
    y = x.new_empty((m, width) if rows else (*x.shape[:-1], width))
    x2, y2 = (x, y) if rows or takes_rows else (x.view(m, k), y.view(m, width))
    guard = launch_guard(device)  # a GPU other than the current one: launch there
    if guard is None:
        launch(x2, values, meta, bias, y2, code, cfg)
    else:
        with guard:
            launch(x2, values, meta, bias, y2, code, cfg)
    return y if shape is None else y.view(*shape, width)


# Registered with torch.library.Library rather than torch.library.custom_op: under torch.compile
# the compiled graph calls the op through the dispatcher, and custom_op's Python layers around the
# kernel (a dynamo-disable wrapper and an output aliasing check per call) made each call about
# 110 us dearer than the same kernel called directly (12.5 ms vs 7.9 ms for a BERT-base forward
# at batch 4 on the H200, bench/diag/host_paths.py: bench/results/h200/diag/host_paths_9eef2b5.txt).
# Autograd: the dispatcher's fallthrough (no Python per call); linear is inference only: linear()
# attaches _NoBackward to outputs that autograd would track, so a backward raises instead of
# stopping silently.
def _op_impl(x, values, meta, bias, activation) -> torch.Tensor:
    """The registered op's implementation, what a compiled graph calls on every run. A weight
    linear() has recorded (the same objects holding the same memory) takes the launch bound to
    it and x's shape where there is one; any other call runs ``_linear_impl``. A whole, plain
    weight not recorded yet is checked here first and then recorded: its checks run once, not
    on every run of the graph; a recorded weight's call tests only x (its width, dtype and
    device, where no bound launch served it). Weights that cannot be recorded (slices taken per
    call, as a fused group's rows) are checked on every call. The op has no autograd formula
    (the dispatcher's fallthrough, no Python per call): called directly with inputs that
    require grad, its output does not; linear() attaches the refusal of a backward
    (_NoBackward), and a compiled or exported graph of it runs the op without one."""
    record = _checked.get((id(values), id(meta), id(bias), activation))
    if (record is not None and record[0]() is values and record[1]() is meta
            and (bias is None or record[2]() is bias) and record[3] == held(values, meta, bias)):
        bound = record[4]
        # a shape is bound only after a call that passed the test below or the full checks
        launch = bound.get(x.shape)
        if launch:
            y = launch(x, values, bias)
            if y is not None:
                return y
        if not (type(x) is torch.Tensor and x.dim() and x.shape[-1] == 2 * values.shape[1]
                and x.dtype is values.dtype and x.get_device() == values.get_device()):
            # the op called directly (torch.ops.sparse24.linear) with an x that does not fit:
            # the checks name the problem
            check_linear_inputs(x, values, meta, bias, activation)
        y = _linear_impl(x, values, meta, bias, activation)
        if x.shape not in bound:
            _bind_into(bound, x, values, meta, bias, activation)
        return y
    if not _recordable(values, meta, bias):
        # checked on every call (a fused group's rows, sliced per call; a weight that is part of
        # a larger tensor): 2.4-2.8 us on the dev CPU, where a compiled graph calls the op so
        check_linear_inputs(x, values, meta, bias, activation)
        return _linear_impl(x, values, meta, bias, activation)
    state = held(values, meta, bias)  # before the checks: what they passed is what is recorded
    check_linear_inputs(x, values, meta, bias, activation)
    y = _linear_impl(x, values, meta, bias, activation)
    _remember(values, meta, bias, activation, state)
    return y


_LIB = torch.library.Library("sparse24", "FRAGMENT")
_LIB.define("linear(Tensor x, Tensor values, Tensor meta, Tensor? bias, str? activation) -> Tensor")
for _key in ("CUDA", "CPU"):
    _LIB.impl("linear", _op_impl, _key)
_LIB.impl("linear", torch.library.fallthrough_kernel, "Autograd")
_linear_op = torch.ops.sparse24.linear.default


NO_BACKWARD = (
    "sparse24.linear has no backward: SparseLinear is for inference. Run the model under "
    "torch.inference_mode() (or torch.no_grad()); to train, fine-tune the dense model with "
    "sparse24.nn.prune_ (fixed 2:4 masks), then squash_ and sparsify_ it")


# The backward's refusal is an op of its own, raised when a backward runs, not when one is
# traced: torch.compile traces an autograd.Function's backward while compiling the forward, and a
# Python raise there became an "Observed exception" graph break that buried this message in its
# debug context (issue 21). So a compiled model runs forward with grad enabled, like eager does,
# and the first backward through it raises this message itself.
_LIB.define("no_backward(Tensor grad, SymInt[] shape, ScalarType dtype) -> Tensor")


def _refuse_backward(grad: torch.Tensor, shape, dtype) -> torch.Tensor:
    raise RuntimeError(NO_BACKWARD)


_LIB.impl("no_backward", _refuse_backward, "CompositeExplicitAutograd")


@torch.library.register_fake("sparse24::no_backward")
def _(grad, shape, dtype):
    return grad.new_empty(shape, dtype=dtype)


class _NoBackward(torch.autograd.Function):
    """Identity on y whose backward raises: sparse24.linear has no gradient (inference only).
    Only the inputs' shapes and dtypes are kept (the traced backward's outputs need them), not
    the inputs themselves: a forward with grad enabled holds no activation alive for this."""

    @staticmethod
    def forward(ctx, y, *inputs):
        ctx.input_meta = [(t.shape, t.dtype) for t in inputs]
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad):
        return (None, *(torch.ops.sparse24.no_backward(grad, shape, dtype)
                        for shape, dtype in ctx.input_meta))


def _plain_eager_call(x, values, meta, bias) -> bool:
    """True for an ordinary eager call: no tracing (torch.compile, export, fake or functional
    tensors) and no autograd to record. Then linear() runs the implementation directly, skipping
    the custom-op dispatch: host time per call (~62 us in an H200 profile of BERT-base, batch 64)
    decides small batches in eager mode; bench/overhead.py measures both paths. Spelled out
    rather than with any()/all() over generators: this runs on every call."""
    plain = (torch.Tensor, torch.nn.Parameter)  # SparseLinear's bias is a Parameter
    if type(x) not in plain or type(values) not in plain or type(meta) not in plain:
        return False
    if bias is not None and type(bias) not in plain:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or values.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return False
    if x.is_meta:  # shapes only (accelerate's init_empty_weights): the op's fake kernel answers
        return False
    return not torch.compiler.is_compiling()


@torch.library.register_fake("sparse24::linear")
def _(x, values, meta, bias, activation):
    n = values.shape[0]
    return x.new_empty((*x.shape[:-1], n // 2 if activation in GATED else n))


def check_linear_inputs(x, values, meta, bias, activation) -> None:
    if not isinstance(x, torch.Tensor) or not (bias is None or isinstance(bias, torch.Tensor)):
        name, value = ("x", x) if not isinstance(x, torch.Tensor) else ("bias", bias)
        raise TypeError(f"sparse24.linear: {name} must be a torch.Tensor, got {type(value).__name__}")
    n, k = check_packed("linear", values, meta)
    if not (activation is None or isinstance(activation, str)) or activation not in ALL_CODES:
        raise ValueError(
            f"sparse24.linear: unknown activation {activation!r}; use one of {list(ALL_CODES)}"
        )
    if x.dim() < 1 or x.shape[-1] != k:
        raise ValueError(
            f"sparse24.linear: x has shape {tuple(x.shape)} but the packed weight is [{n}, {k}]: "
            f"x's last dim must be in_features={k}"
        )
    if x.device != values.device:
        raise ValueError(f"sparse24.linear: x is on {x.device} but the weight is on {values.device}")
    if x.dtype != values.dtype:
        raise TypeError(
            f"sparse24.linear: x is {x.dtype} but the packed weight is {values.dtype}; cast one of them"
        )
    if x.is_cuda and x.dtype not in GEMM_DTYPES:
        raise TypeError(
            f"sparse24.linear: the kernels take float16 or bfloat16, got {x.dtype} "
            "(float32 runs only on the CPU reference path)"
        )
    if bias is not None:
        if bias.shape != (n,):
            raise ValueError(f"sparse24.linear: bias has shape {tuple(bias.shape)}, expected ({n},)")
        if bias.device != x.device:
            raise ValueError(f"sparse24.linear: bias is on {bias.device} but x is on {x.device}")
        if bias.dtype not in (x.dtype, torch.float32):
            raise TypeError(f"sparse24.linear: bias is {bias.dtype}; use {x.dtype} or float32")
        if bias.stride(0) != 1:
            # The epilogue loads bias[features] at bias_ptr + features: a strided bias would be
            # read at the wrong places, an expanded one (stride 0) past its storage.
            raise ValueError(
                f"sparse24.linear: bias must be a contiguous vector (stride 1), got stride "
                f"{bias.stride(0)} (a slice such as b[::2], or an expand()); pass bias.contiguous()"
            )
    # data_ptr() does not exist on the fake tensors of torch.compile tracing; eager calls check it
    if values.is_cuda and not torch.compiler.is_compiling():
        # TMA (the wgmma family) needs 16-byte aligned values; its META_RING form copies the
        # metadata in 16-byte pieces (cp.async)
        for name, t in (("values", values), ("metadata", meta)):
            if t.data_ptr() % 16:
                raise ValueError(
                    f"sparse24.linear: the packed {name} start at an address that is not 16-byte "
                    f"aligned (storage offset {t.storage_offset()} elements); every tensor torch "
                    f"allocates is aligned: pass {'values' if name == 'values' else 'meta'}.clone()"
                )


# Weights whose checks passed (in linear() or in the op): (id(values), id(meta), id(bias),
# activation) -> (weak references to the three, what they held then (``held``), the launches
# bound to the weight by x's shape). The checks read some 30 tensor attributes, 2.4-2.8 us of
# an eager call on the dev CPU (in one expression as much: bench/NOTES.md session 15); the
# record's test reads 12 and compares one tuple. Weak references: a weight dropped is not kept
# alive here (its record leaves with it, by the references' callback), and a recycled id()
# finds a dead reference. Emptied when full (more live weights than any model has layers) and
# when the tuned configs change.
_checked: dict[tuple, tuple] = {}
_MAX_CHECKED = 65536


def held(values: torch.Tensor, meta: torch.Tensor, bias: torch.Tensor | None) -> tuple:
    """What a weight's tensor objects hold (each one's address, shape, strides, dtype), as one
    flat tuple: a record of checks that passed stands while it is unchanged. ``.data =`` (as
    .to() and .half() do to a parameter) changes it under the same object and bumps no
    version counter. One tuple in one frame: 1.15-1.17 us on the dev CPU against 1.34-1.38 us
    for a tuple per tensor (bench/results/cpu/host_parts_session15.txt)."""
    if bias is None:
        return (values.data_ptr(), values.shape, values.stride(), values.dtype,
                meta.data_ptr(), meta.shape, meta.stride(), meta.dtype)
    return (values.data_ptr(), values.shape, values.stride(), values.dtype,
            meta.data_ptr(), meta.shape, meta.stride(), meta.dtype,
            bias.data_ptr(), bias.shape, bias.stride(), bias.dtype)


def _recordable(values, meta, bias) -> bool:
    """Whether a weight may be recorded: plain tensors (a tensor subclass must see every call
    through the op), each whole (not a part of a larger tensor: a caller that slices a weight on
    every call, as a fused group's rows, makes new objects each time, which would only churn
    the records; compress's values are a view of all of their base)."""
    plain = (torch.Tensor, torch.nn.Parameter)
    for t in (values, meta) if bias is None else (values, meta, bias):
        if type(t) not in plain or (t._base is not None and t._base.numel() != t.numel()):
            return False
    return True


def _remember(values, meta, bias, activation, state: tuple) -> None:
    """Record a weight (``_recordable``) whose checks passed while it held ``state``."""
    if len(_checked) >= _MAX_CHECKED:
        _checked.clear()
    key = (id(values), id(meta), id(bias), activation)

    def forget(dead, key=key):  # one of the weight's tensors was freed: its record goes too
        record = _checked.get(key)
        if record is not None and dead in record[:3]:  # a dead reference equals only itself
            _checked.pop(key, None)  # pop: another thread may have emptied the records

    _checked[key] = (weakref.ref(values, forget), weakref.ref(meta, forget),
                     None if bias is None else weakref.ref(bias, forget), state, {})


def linear(
    x: torch.Tensor,
    values: torch.Tensor,
    meta: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
) -> torch.Tensor:
    """y = act(x @ W^T + bias), W the dense 2:4 weight [N, K] that (values, meta) pack.

    x: [..., K], float16 or bfloat16 (float32 on the CPU reference path), any number of tokens, any
    strides (a transposed or otherwise non-contiguous x is copied first). bias: [N], float32 or
    x's dtype, contiguous (a strided or expanded bias is refused). values and meta: as compress
    made them (contiguous; on a GPU, values and meta 16-byte aligned, as every tensor torch
    allocates and every 16-row slice of one is). activation: None, "relu", "gelu" (erf),
    "gelu_tanh" or "silu"; or a gated one, "swiglu", "geglu", "geglu_tanh", "reglu": W's rows then
    interleave a gate and an up projection (sparse24.layout.interleave_gate_up) and y is
    act(gate) * up, [..., N / 2]. Accumulation is float32.

    Non-finite x: a NaN in x reaches every output whose kept weights meet it. What an Inf gives
    depends on the kernel family that runs. The weight-streaming "dot" family (the one the CPU
    interpreter runs, and GPU configs for N not a multiple of 64) multiplies the unpacked zeros,
    exactly as F.linear on the masked dense weight: an Inf at x[r, c] makes y[r, f] +-Inf where
    W[f, c] is kept and NaN where it is pruned (0 x Inf), so about half the row is NaN and half
    Inf, and a NaN makes the whole row NaN. On the sparse tensor cores (the "mma" family) pruned
    weights are skipped, not multiplied: the Inf gives +-Inf where W[f, c] is kept and leaves the
    other outputs of the row finite, and a NaN reaches only the outputs whose kept weights meet it
    (as sparse24.reference.linear_ref computes).
    """
    # A weight whose checks passed in an earlier eager call, the same tensor objects holding
    # the same memory: only x is checked, by the launch bound to the weight and x's shape or by
    # linear_on_checked_weight. is_compiling first: traced, the branch is not taken.
    if not torch.compiler.is_compiling() and (activation is None or type(activation) is str):
        record = _checked.get((id(values), id(meta), id(bias), activation))
        if (record is not None and record[0]() is values and record[1]() is meta
                and (bias is None or record[2]() is bias)
                and record[3] == held(values, meta, bias)):
            bound = record[4]
            launch = bound.get(x.shape) if type(x) is torch.Tensor else None
            if launch:
                y = launch(x, values, bias)
                if y is not None:
                    return y
            return linear_on_checked_weight(x, values, meta, bias, activation, bound)
    return _checked_linear(x, values, meta, bias, activation)


def _checked_linear(x, values, meta, bias, activation) -> torch.Tensor:
    """``linear`` with every input checked: the implementation for a plain eager call (whose
    weight is then recorded where ``_recordable``), else the op."""
    # what the weight holds, read before the checks: a change from another thread between the
    # checks and the record must not be recorded as checked
    state = held(values, meta, bias) if _recordable(values, meta, bias) else None
    check_linear_inputs(x, values, meta, bias, activation)
    if _plain_eager_call(x, values, meta, bias):
        y = _linear_impl(x, values, meta, bias, activation)
        if state is not None:
            _remember(values, meta, bias, activation, state)
        return y
    y = _linear_op(x, values, meta, bias, activation)
    tracked = [t for t in (x, values, bias) if t is not None and t.requires_grad]
    if tracked and torch.is_grad_enabled():
        y = _NoBackward.apply(y, *tracked)
    return y


# Launches bound to a recorded weight, by x's shape: every sequence length of a server is one,
# so a record's table holds at most this many
_MAX_BOUND = 64


def bind(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor, bias: torch.Tensor | None,
         activation: str | None):
    """The plan of this call bound to its weight and x's shape (a family's ``BoundLaunch``: it
    checks x and what may have changed since, allocates y and launches), for a record of a
    weight whose checks passed; None while the plan has not learned its direct launch; False
    where its family has no such launch (the dot family; split-K) or the call never runs a
    kernel. The sm90 plans bind through ``PlannedLaunch.bind``, the mma family through
    ``families.mma.bind``."""
    k = values.shape[1] * 2
    if not use_triton(x) or x.dtype not in GEMM_DTYPES or not k or not x.numel():
        return False
    generation = tuning.generation()
    plan = _plans.get((x.numel() // k, values.shape[0], k, x.dtype, x.device))
    if plan is None:
        return None
    width = values.shape[0] // 2 if activation in GATED else values.shape[0]
    binder = getattr(plan[0], "bind", None)  # a plan that keeps its launch (the sm90 family)
    if binder is not None:
        return binder(values, meta, bias, ALL_CODES[activation], x.shape, width, generation)
    family = FAMILIES.get(plan[1].get("family"))  # else the family's own (the mma family)
    binder = getattr(family, "bind", None)
    if binder is None:
        return False
    return binder(plan[1], values, meta, bias, ALL_CODES[activation], x.shape, width, generation)


def linear_on_checked_weight(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor,
                             bias: torch.Tensor | None, activation: str | None,
                             bound: dict | None = None) -> torch.Tensor:
    """``linear`` for a weight (values, meta, bias, activation) whose checks passed in an earlier
    call, as ``linear``'s record of it knows (the same tensor objects holding the same memory):
    only x is checked (its type, width, dtype, device, autograd), and a plain eager call runs
    the implementation. Anything unusual about x (another width, dtype or device, autograd, a
    tensor subclass, the meta device) takes every check, which names the problem.
    The weight's checks and the op's dispatch were 3.3-5.6 us of an eager call's host time on
    the H100's host (bench/results/h100/overhead.md). ``bound``: the caller's table of bound
    launches for this weight ({x.shape: what ``bind`` gave}), filled here after a call."""
    if (type(x) is torch.Tensor and x.dim() and x.shape[-1] == 2 * values.shape[1]
            and x.dtype == values.dtype and x.device == values.device
            and not x.is_meta and not (torch.is_grad_enabled() and (
                x.requires_grad or values.requires_grad
                or (bias is not None and bias.requires_grad)))):
        y = _linear_impl(x, values, meta, bias, activation)
        if bound is not None and x.shape not in bound:
            _bind_into(bound, x, values, meta, bias, activation)
        return y
    return _checked_linear(x, values, meta, bias, activation)


def _bind_into(bound: dict, x, values, meta, bias, activation) -> None:
    """After a call of a recorded weight on an x shape its table has no answer for: keep what
    ``bind`` gives for that shape."""
    launch = bind(x, values, meta, bias, activation)
    if launch is not None:  # None: not learned yet, asked again on the next call
        if len(bound) >= _MAX_BOUND:
            bound.clear()
        bound[x.shape] = launch
