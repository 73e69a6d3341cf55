"""sparse24.ops.linear (module gemm): y = act(x @ W^T + bias) with W packed 2:4; launchers and registration.

Three kernel families serve it (sparse24/kernels/sparse_wgmma.py, sparse24/kernels/sparse_mma.py, sparse24/kernels/sparse_dot.py):
- "wgmma": Hopper's sparse tensor cores (wgmma.mma_async.sp, a Gluon kernel) for more than
  ``MMA_MAX_TOKENS_SM90`` tokens on sm90 (H100, H200): 1.24-1.53x cuBLAS on the bench shapes at
  M >= 24576 (BERT) and M >= 1024 (LLM) on an H200 (bench/results/h200/wgmma_sweep_b50bc5c.log);
- "mma": the sparse tensor cores through the sm80 instruction (mma.sp), on sm80-sm89 for token
  counts where arithmetic dominates, and everywhere for few tokens (split-K streams the weight);
- "dot": unpack the weight in registers and tl.dot, with split-K, for few tokens, where moving the
  weight dominates (the packed weight is 9/16 of the dense bytes). It is also the family the Triton
  interpreter can run (inline asm cannot), so CPU tests exercise it.
A config is a plain dict (family, tile sizes, warps, stages, split-K); `choose_config` takes it from
the tuning cache when there is an entry, else from a shape heuristic.
"""

from __future__ import annotations

import functools

import torch

from sparse24 import reference
from sparse24.activations import EPILOGUE_CODES
from sparse24.kernels.sparse_dot import _sparse_dot_kernel, _splitk_reduce_kernel
from sparse24.kernels.sparse_mma import _sparse_mma_kernel
from sparse24.ops._checks import GEMM_DTYPES, check_packed, use_triton
from sparse24.ops import configs, wgmma
from sparse24.ops.triton_internals import CachedLaunch


# ------------------------------------------------------------------------------------ configs
def _sm_count(device_index: int) -> int:
    return configs.device_info(device_index)[2]  # memoized there


def _cdiv(a: int, b: int) -> int:
    # plain ints: triton.cdiv is a constexpr function, ~5 us per call on the host (cProfile, H100)
    return -(-a // b)


def _divides(block: int, n: int) -> bool:
    return n % block == 0


# The most tokens the mma family takes on sm90: up to it, the mma family's split-K streams the
# weight (1.37-1.55x cuBLAS at M <= 16 in CUDA graphs, bench/results/h100/gemm.md); more tokens
# (m > MMA_MAX_TOKENS_SM90) go to the wgmma family.
MMA_MAX_TOKENS_SM90 = 64


def uses_wgmma(m: int, device: torch.device) -> bool:
    """The one dispatch rule for the sm90 family (the tuner and the heuristic both follow it):
    wgmma for more than ``MMA_MAX_TOKENS_SM90`` tokens on an sm90 GPU."""
    return device.type == "cuda" and m > MMA_MAX_TOKENS_SM90 and wgmma.supported(device.index or 0)


@functools.lru_cache(maxsize=4096)
def heuristic_config(m: int, n: int, k: int, device: torch.device) -> dict:
    """A config without tuning, shaped after the H100 sweep in bench/results/h100/gemm_variants.jsonl.

    Up to 64 tokens (weight streaming): mma.sp with 128 (else 64) features x 16 (32 from 17
    tokens) per program and split-K, so that about four programs per SM stream the weight with at
    least 8 chunks of 64 columns each (the sweep's best at 16 x 4096 x 4096: 128 x 16, SPLIT_K 8;
    at 16 x 14336 x 4096: SPLIT_K 4; at 16 x 4096 x 11008: SPLIT_K 16). More tokens: mma.sp, 256
    (else 128) features x 32 tokens, 4 warps, register prefetch; 64 tokens with 8 warps from 16384
    tokens on. A_TILE 1 (A from coalesced tiles; the default of configs without the key): equal or
    2-9% faster than per-lane loads at each shape's best split, 1-64 tokens on the LLM shapes
    (bench/results/h200/levers_8821ead.jsonl). Shipped defaults (sparse24/tuning/defaults)
    take precedence where they exist.
    On CPU (the Triton interpreter cannot run inline asm) and for N not a multiple of 64: the
    weight-streaming "dot" family. Memoized (it runs on every untuned call): do not modify the
    returned dict.
    """
    if uses_wgmma(m, device):
        return wgmma.heuristic_config(m, n, k, _sm_count(device.index or 0))
    block_f = next((b for b in (256, 128, 64) if _divides(b, n)), None)
    if device.type != "cuda" or block_f is None:
        block_n = next(b for b in (128, 64, 32, 16) if _divides(b, n))
        block_m = 16 if m <= 16 else 32 if m <= 32 else 64
        split_k = 1
        if m <= 32:  # few tokens: split K so that about two programs per SM stream the weight
            programs = max(1, (n // block_n) * _cdiv(m, block_m))
            sms = _sm_count(device.index or 0) if device.type == "cuda" else 1
            split_k = max(1, min(k // 64 // 4, _cdiv(2 * sms, programs)))
        return {"family": "dot", "BLOCK_M": block_m, "BLOCK_N": block_n, "SPLIT_K": split_k,
                "num_warps": 4, "num_stages": 3}
    if m <= 64:
        block_f = 128 if _divides(128, n) else 64
        block_t = 16 if m <= 16 else 32
        # max(1, ...): m = 0 makes no programs (linear returns first; a bench or tool may ask)
        programs = max(1, (n // block_f) * _cdiv(m, block_t))
        most = max(1, min(k // 64 // 8, 4 * _sm_count(device.index or 0) // programs))
        split_k = 1 << (most.bit_length() - 1)  # a power of two, at most `most`
        return {"family": "mma", "BLOCK_F": block_f, "BLOCK_T": block_t, "GROUP_T": 8,
                "PREFETCH": 1, "SPLIT_K": split_k, "A_TILE": 1, "num_warps": 4, "num_stages": 1}
    big = m >= 16384 and block_f == 256
    return {"family": "mma", "BLOCK_F": block_f, "BLOCK_T": 64 if big else 32, "GROUP_T": 8,
            "PREFETCH": 1, "SPLIT_K": 1, "A_TILE": 1, "num_warps": 8 if big else 4, "num_stages": 1}


def config_fits(config: dict, n: int, k: int) -> bool:
    """Whether a (possibly cached) config can serve an [n, k] weight."""
    if config["family"] == "wgmma":  # TMA and clamped metadata reads take any packable [n, k]
        return True
    block = config["BLOCK_F"] if config["family"] == "mma" else config["BLOCK_N"]
    return _divides(block, n) and config.get("SPLIT_K", 1) <= k // 64


def choose_config(m: int, n: int, k: int, dtype: torch.dtype, device: torch.device) -> dict:
    cached = configs.tuned(m, n, k, dtype, device)  # None off CUDA
    # a cached config of the other side of the sm90 rule (e.g. an mma entry tuned before the
    # wgmma family existed) is not used
    if (cached is not None and config_fits(cached, n, k)
            and (cached["family"] == "wgmma") == uses_wgmma(m, device)):
        return cached
    config = heuristic_config(m, n, k, device)
    if device.type != "cuda" and config["family"] == "mma":
        raise AssertionError("the mma family needs a GPU")
    return config


# ---------------------------------------------------------------------------------- launchers
_mma_launch = CachedLaunch(_sparse_mma_kernel)
_dot_launch = CachedLaunch(_sparse_dot_kernel)
_reduce_launch = CachedLaunch(_splitk_reduce_kernel)


def _split_k(cfg: dict, k: int) -> tuple[int, int]:
    """(splits, chunks per split) for a config's SPLIT_K: no split is left empty (K = 768 is 12
    chunks of 64: SPLIT_K 8 gives 6 splits of 2)."""
    chunks = k // 64
    per_split = _cdiv(chunks, min(cfg.get("SPLIT_K", 1), chunks))
    return _cdiv(chunks, per_split), per_split


def _partials(splits: int, y: torch.Tensor) -> torch.Tensor:
    """float32 workspace [splits, M, N] for split-K (y itself when there is no split)."""
    if splits == 1:
        return y
    return torch.empty((splits, y.shape[0], y.shape[1]), dtype=torch.float32, device=y.device)


def _reduce_partials(partial, bias, y, activation: int, splits: int) -> None:
    if splits == 1:
        return
    m, n = y.shape
    block = 1024
    _reduce_launch(
        (_cdiv(m * n, block), 1, 1), (partial, bias if bias is not None else y, y, m, n, y.stride(0)),
        (splits, block, bias is not None, activation), num_warps=4, num_stages=1,
    )


def _launch_mma(x2, values, meta, bias, y, activation: int, cfg: dict) -> None:
    m, k = x2.shape
    n = values.shape[0]
    splits, per_split = _split_k(cfg, k)
    partial = _partials(splits, y)
    grid = (_cdiv(m, cfg["BLOCK_T"]) * (n // cfg["BLOCK_F"]), splits, 1)
    _mma_launch(
        grid,
        (x2.view(torch.int32), values.view(torch.int32), values.data_ptr(), meta.data_ptr(),
         bias if bias is not None else y, y, partial, m, n, k, x2.stride(0) // 2, y.stride(0),
         per_split),
        (cfg["BLOCK_F"], cfg["BLOCK_T"], cfg["GROUP_T"], cfg["PREFETCH"], splits,
         bias is not None, activation, x2.dtype == torch.bfloat16, cfg.get("A_TILE", 1)),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    _reduce_partials(partial, bias, y, activation, splits)


def _launch_dot(x2, values, meta, bias, y, activation: int, cfg: dict) -> None:
    m, k = x2.shape
    n = values.shape[0]
    splits, _ = _split_k(cfg, k)
    partial = _partials(splits, y)
    grid = (n // cfg["BLOCK_N"], _cdiv(m, cfg["BLOCK_M"]), splits)
    _dot_launch(
        grid,
        (x2, values, meta, bias if bias is not None else y, y, partial,
         m, n, k, x2.stride(0), y.stride(0)),
        (cfg["BLOCK_M"], cfg["BLOCK_N"], splits, bias is not None, activation, not x2.is_cuda),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    _reduce_partials(partial, bias, y, activation, splits)


def run_config(x2, values, meta, bias, activation: int, cfg: dict, out=None) -> torch.Tensor:
    """Run one config on 2-D x; used by the op and by the tuner (which checks every candidate).
    ``out`` lets tests poison the output first, to prove every element is written."""
    y = out if out is not None else torch.empty(
        (x2.shape[0], values.shape[0]), dtype=x2.dtype, device=x2.device)
    if x2.shape[0] == 0:
        return y
    if cfg["family"] == "wgmma":
        wgmma.launch(x2, values, meta, bias, y, activation, cfg)
    elif cfg["family"] == "mma":
        _launch_mma(x2, values, meta, bias, y, activation, cfg)
    else:
        _launch_dot(x2, values, meta, bias, y, activation, cfg)
    return y


# ------------------------------------------------------------------------------- registration
def _linear_impl(
    x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor, bias: torch.Tensor | None,
    activation: str | None,
) -> torch.Tensor:
    if not use_triton(x) or x.dtype not in GEMM_DTYPES:
        return reference.linear_ref(x, values, meta, bias, activation)
    n, k = values.shape[0], values.shape[1] * 2
    flat = x.dim() == 2  # no reshapes for 2-D x: a torch call each (~2 us on the H200's host)
    x2 = x if flat else x.reshape(-1, k)
    if x2.shape[0] == 0:  # no tokens: nothing to compute, so no config to choose (nor to tune)
        return x.new_empty((*x.shape[:-1], n))
    # The kernels read x rows with 4-byte (inline asm) and 16-byte (tl.load) accesses.
    if x2.stride(1) != 1 or x2.stride(0) % 8 or x2.data_ptr() % 16:
        x2 = x2.contiguous()
    cfg = choose_config(x2.shape[0], n, k, x2.dtype, x2.device)
    y = run_config(x2, values, meta, bias, EPILOGUE_CODES[activation], cfg)
    return y if flat else y.reshape(*x.shape[:-1], n)


# Registered with torch.library.Library rather than torch.library.custom_op: under torch.compile
# the compiled graph calls the op through the dispatcher, and custom_op's Python layers around the
# kernel (a dynamo-disable wrapper and an output aliasing check per call) made each call about
# 110 us dearer than the same kernel called directly (12.5 ms vs 7.9 ms for a BERT-base forward
# at batch 4 on the H200, bench/diag/host_paths.py: bench/results/h200/diag/host_paths_9eef2b5.txt).
# Autograd: the dispatcher's fallthrough (no Python per call); linear is inference only: linear()
# attaches _NoBackward to outputs that autograd would track, so a backward raises instead of
# stopping silently.
_LIB = torch.library.Library("sparse24", "FRAGMENT")
_LIB.define("linear(Tensor x, Tensor values, Tensor meta, Tensor? bias, str? activation) -> Tensor")
for _key in ("CUDA", "CPU"):
    _LIB.impl("linear", _linear_impl, _key)
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
    return not torch.compiler.is_compiling()


@torch.library.register_fake("sparse24::linear")
def _(x, values, meta, bias, activation):
    return x.new_empty((*x.shape[:-1], values.shape[0]))


def check_linear_inputs(x, values, meta, bias, activation) -> None:
    n, k = check_packed("linear", values, meta)
    if activation not in EPILOGUE_CODES:
        raise ValueError(
            f"sparse24.linear: unknown activation {activation!r}; use one of {list(EPILOGUE_CODES)}"
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
    if values.is_cuda and not torch.compiler.is_compiling() and values.data_ptr() % 16:
        # TMA (the wgmma family) needs 16-byte aligned tensors.
        raise ValueError(
            f"sparse24.linear: the packed values start at an address that is not 16-byte aligned "
            f"(storage offset {values.storage_offset()} elements); every tensor torch allocates "
            "is aligned: pass values.clone()"
        )


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
    made them (contiguous; on a GPU, values 16-byte aligned). activation: None, "relu", "gelu" (erf)
    or "gelu_tanh". Accumulation is float32.

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
    check_linear_inputs(x, values, meta, bias, activation)
    if _plain_eager_call(x, values, meta, bias):
        return _linear_impl(x, values, meta, bias, activation)
    y = _linear_op(x, values, meta, bias, activation)
    tracked = [t for t in (x, values, bias) if t is not None and t.requires_grad]
    if tracked and torch.is_grad_enabled():
        y = _NoBackward.apply(y, *tracked)
    return y
