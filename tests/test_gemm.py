"""sparse24.ops.linear: both kernel families against the float64 reference.

CPU (Triton interpreter): the "dot" family. GPU (marked): every candidate config of both families,
so that no config the tuner may pick is wrong, on odd shapes, random data and poisoned outputs.
"""

import itertools

import pytest
import torch

import sparse24.ops as ops
from sparse24 import reference as ref
from sparse24.activations import ALL_CODES, GATED, REFERENCE
from sparse24.layout import interleave_gate_up, split_gate_up
from sparse24.ops import configs, gemm, wgmma
from sparse24.ops.families import FAMILIES
from bound_checks import (check_declined_x_still_right, check_side_stream_and_graph, fresh_calls,
                          gpu_layer, spy_on_bound_launches)
from tolerances import REL_TOL as TOLERANCE, rel_err

ACTIVATION_NAMES = [None, "relu", "gelu", "gelu_tanh", "silu"]
GATED_NAMES = list(GATED)


def packed_weight(n, k, dtype, device):
    w = ops.prune_24(torch.randn(n, k, dtype=dtype, device=device))
    return ops.compress(w)


def reference_output(x, values, meta, bias, activation):
    return ref.linear_ref(x.cpu().double(), values.cpu().double(), meta.cpu(),
                          None if bias is None else bias.cpu().double(), activation)


def unit_input(m, k, dtype, device):
    """x whose products with a packed randn weight (K/2 kept terms) have a standard deviation near
    1: there every activation bends (GELU's erf, ReLU's kink), so a wrong constant in an epilogue
    shows. Unscaled randn would give pre-activations near sqrt(K/2), where GELU is ReLU."""
    return (torch.randn(m, k, device=device) / (k / 2) ** 0.5).to(dtype)


def run_poisoned(x, values, meta, bias, activation, cfg):
    width = values.shape[0] // 2 if activation in GATED else values.shape[0]
    out = torch.full((x.shape[0], width), float("nan"), dtype=x.dtype, device=x.device)
    return gemm.run_config(x, values, meta, bias, ALL_CODES[activation], cfg, out=out)


def gated_weight(i, k, dtype, device):
    """(gate, up) dense 2:4 projections [i, k], their biases [i], and the packed interleaved
    weight and bias a gated epilogue takes."""
    gate, up = (ops.prune_24(torch.randn(i, k, dtype=dtype, device=device)) for _ in range(2))
    bias_gate, bias_up = ((0.5 * torch.randn(i, device=device)).to(dtype) for _ in range(2))
    values, meta = ops.compress(interleave_gate_up(gate, up))
    return gate, up, bias_gate, bias_up, values, meta, interleave_gate_up(bias_gate, bias_up)


def gated_reference(x, gate, up, bias_gate, bias_up, activation):
    """act(x @ gate^T + bias_gate) * (x @ up^T + bias_up) in float64, from the two projections
    themselves: no interleaved order in it, so it checks that order too."""
    xd = x.cpu().double()
    pre_gate = xd @ gate.cpu().double().t() + bias_gate.cpu().double()
    pre_up = xd @ up.cpu().double().t() + bias_up.cpu().double()
    return REFERENCE[GATED[activation]](pre_gate) * pre_up


# ------------------------------------------------------------------ CPU: interpreter, "dot"
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m,n,k,activation,split_k", [
    (1, 32, 256, None, 2), (7, 64, 128, "gelu", 1), (33, 48, 192, "gelu_tanh", 3),
    (20, 16, 64, "relu", 1), (5, 96, 128, "gelu", 2),
])
def test_dot_family_matches_reference(m, n, k, activation, split_k, dtype, device, seed):
    values, meta = packed_weight(n, k, dtype, device)
    x = unit_input(m, k, dtype, device)
    bias = (0.5 * torch.randn(n, device=device)).to(dtype)
    cfg = gemm.heuristic_config(m, n, k, torch.device("cpu")) | {"SPLIT_K": split_k}
    y = run_poisoned(x, values, meta, bias, activation, cfg)
    assert not torch.isnan(y).any(), "an output element was not written"
    assert rel_err(y.cpu(), reference_output(x, values, meta, bias, activation)) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("activation", GATED_NAMES)
@pytest.mark.parametrize("m,i,k,split_k,fused", [
    (1, 32, 256, 2, 0), (7, 64, 128, 1, 0), (33, 48, 192, 3, 1), (5, 8, 128, 2, 0),
    (20, 16, 64, 1, 0),
])
def test_gated_epilogues_match_reference(m, i, k, split_k, fused, activation, dtype, device,
                                         seed):
    """Gated epilogues (SwiGLU, GEGLU, ReGLU) of the dot family: unsplit (the kernel pairs a
    tile's rows), split with the reduction kernel's gated form, and split with the last split's
    (FUSED_REDUCE); feature tiles of 16 (i = 8), 32 and 64 rows. Against the two projections
    computed apart in float64, and against linear_ref's gated form."""
    gate, up, bias_gate, bias_up, values, meta, bias = gated_weight(i, k, dtype, device)
    x = unit_input(m, k, dtype, device)
    cfg = gemm.heuristic_config(m, 2 * i, k, torch.device("cpu")) | {"SPLIT_K": split_k}
    if fused:
        cfg |= {"FUSED_REDUCE": 1}
    y = run_poisoned(x, values, meta, bias, activation, cfg)
    assert y.shape == (m, i) and not torch.isnan(y).any(), "an output element was not written"
    expected = gated_reference(x, gate, up, bias_gate, bias_up, activation)
    assert rel_err(y.cpu(), expected) < TOLERANCE[dtype]
    assert rel_err(reference_output(x, values, meta, bias, activation), expected) < 1e-6  # float32


def test_gated_linear_op(device, seed):
    """linear with a gated activation: any leading dims, the registered op's path and its fake
    (opcheck), and no tokens; half as many outputs as the weight has rows."""
    gate, up, bias_gate, bias_up, values, meta, bias = gated_weight(32, 128, torch.float16, device)
    x = unit_input(6, 128, torch.float16, device)
    y = ops.linear(x.reshape(2, 3, 128), values, meta, bias, "swiglu")
    assert y.shape == (2, 3, 32)
    expected = gated_reference(x, gate, up, bias_gate, bias_up, "swiglu")
    assert rel_err(y.reshape(6, 32).cpu(), expected) < TOLERANCE[torch.float16]
    via_op = gemm._linear_op(x, values, meta, bias, "swiglu")
    assert rel_err(via_op.cpu(), expected) < TOLERANCE[torch.float16]
    torch.library.opcheck(torch.ops.sparse24.linear.default, (x, values, meta, bias, "geglu"))
    empty = torch.empty(0, 4, 128, dtype=torch.float16, device=device)
    assert ops.linear(empty, values, meta, None, "swiglu").shape == (0, 4, 32)


def test_interleave_gate_up_and_back():
    gate, up = torch.randn(24, 64), torch.randn(24, 64)
    rows = interleave_gate_up(gate, up)
    assert torch.equal(rows[:8], gate[:8]) and torch.equal(rows[8:16], up[:8])
    assert torch.equal(rows[16:24], gate[8:16]) and torch.equal(rows[40:], up[16:])
    back = split_gate_up(rows)
    assert torch.equal(back[0], gate) and torch.equal(back[1], up)
    bias_rows = interleave_gate_up(torch.arange(8.0), -torch.arange(8.0))
    assert bias_rows.tolist() == [*range(8), *(-float(v) for v in range(8))]
    with pytest.raises(ValueError, match="multiple of 8"):
        interleave_gate_up(torch.randn(12, 64), torch.randn(12, 64))
    with pytest.raises(ValueError, match="same shape"):
        interleave_gate_up(torch.randn(8, 64), torch.randn(16, 64))
    with pytest.raises(ValueError, match="multiple of 16"):
        split_gate_up(torch.randn(24, 64))


@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh", "silu"])
def test_epilogue_activations_where_they_bend(activation, device, seed):
    """Each activation against the float64 reference on pre-activations of unit scale, checked
    on the bent part alone (|pre-activation| < 3): there GELU with 0.75 in place of 1/sqrt(2), or a
    tanh GELU with another constant, is off by about 1%, five times the fp16 tolerance."""
    m, n, k = 32, 64, 256
    values, meta = packed_weight(n, k, torch.float16, device)
    x = unit_input(m, k, torch.float16, device)
    bias = (0.5 * torch.randn(n, device=device)).to(torch.float16)
    pre = reference_output(x, values, meta, bias, None).double()
    bent = pre.abs() < 3
    assert bent.float().mean() > 0.9 and pre.std() > 0.5, "the input no longer has unit scale"
    cfg = gemm.heuristic_config(m, n, k, torch.device("cpu"))
    y = run_poisoned(x, values, meta, bias, activation, cfg).cpu().double()
    expected = reference_output(x, values, meta, bias, activation)
    assert rel_err(y[bent], expected[bent]) < TOLERANCE[torch.float16]


def test_gelu_tanh_of_large_negative_inputs_does_not_overflow(device, seed):
    """Pre-activations far below -88 / 1.6: a sigmoid written as 1 / (1 + exp(-z)) overflows exp
    there (a RuntimeWarning under the interpreter); the epilogue's form never does."""
    import warnings

    m, n, k = 4, 16, 64
    values, meta = packed_weight(n, k, torch.float16, device)
    x = unit_input(m, k, torch.float16, device)
    bias = torch.full((n,), -200.0, dtype=torch.float16, device=device)
    cfg = gemm.heuristic_config(m, n, k, torch.device("cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        y = run_poisoned(x, values, meta, bias, "gelu_tanh", cfg).cpu()
    assert torch.equal(y.abs(), torch.zeros_like(y))  # gelu(-200) is -0.0 or 0.0


def test_linear_any_leading_dims_and_fp32_reference(seed):
    values, meta = packed_weight(32, 128, torch.float16, "cpu")
    x = torch.randn(2, 3, 128, dtype=torch.float16)
    y = ops.linear(x, values, meta, activation="relu")
    assert y.shape == (2, 3, 32)
    expected = reference_output(x.reshape(6, 128), values, meta, None, "relu").reshape(2, 3, 32)
    assert rel_err(y, expected) < TOLERANCE[torch.float16]
    y32 = ops.linear(x.float(), values.float(), meta)  # float32: the CPU reference path
    assert y32.dtype == torch.float32
    assert rel_err(y32, reference_output(x.float(), values.float(), meta, None, None)) < 1e-6


def test_zero_tokens():
    values, meta = packed_weight(16, 64, torch.float16, "cpu")
    assert ops.linear(torch.empty(0, 64, dtype=torch.float16), values, meta).shape == (0, 16)


@pytest.mark.parametrize("activation", sorted(GATED))
def test_zero_tokens_of_a_gated_epilogue_on_the_reference_path(activation):
    """float32 (or a CPU without the interpreter) runs the PyTorch reference: no tokens with a
    gated epilogue gave 'cannot reshape tensor of 0 elements' in split_gate_up."""
    values, meta = packed_weight(32, 64, torch.float32, "cpu")
    for lead in [(0,), (2, 0)]:
        y = ops.linear(torch.empty(*lead, 64), values, meta, None, activation)
        assert y.shape == (*lead, 16) and y.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_zero_tokens_choose_no_config(monkeypatch, dtype, device):
    """An empty product needs no kernel, so linear returns its empty output before choosing a
    config: on a GPU the choice divided by zero for m = 0 (issue 21), whatever x's leading dims."""
    def no_config(*args):
        raise AssertionError(f"a config was chosen for an empty product: {args}")

    monkeypatch.setattr(gemm, "choose_config", no_config)
    values, meta = packed_weight(64, 128, dtype, device)
    bias = torch.randn(64, device=device)
    for lead in [(0,), (3, 0), (0, 5)]:
        x = torch.empty(*lead, 128, dtype=dtype, device=device)
        for activation in ACTIVATION_NAMES:
            for y in (ops.linear(x, values, meta, bias, activation),
                      gemm._linear_op(x, values, meta, None, activation)):  # the dispatcher's path
                assert y.shape == (*lead, 64) and y.dtype == dtype and y.device == x.device


@pytest.mark.parametrize("sm90", [True, False])
def test_heuristic_takes_zero_tokens_on_cuda(monkeypatch, sm90):
    """The CUDA side of the heuristic, on a CPU (device facts pretended): m = 0 gets a config that
    fits instead of a ZeroDivisionError (its weight-streaming branch divided by the program count,
    0 for no tokens), as any other m <= 64 does."""
    from sparse24.ops import wgmma

    monkeypatch.setattr(wgmma, "supported", lambda index: sm90)
    monkeypatch.setattr(gemm, "_sm_count", lambda index: 132)
    cuda = torch.device("cuda", 0)
    gemm.heuristic_config.cache_clear()
    try:
        for n, k in [(768, 768), (4096, 11008), (96, 256)]:
            cfg = gemm.choose_config(0, n, k, torch.float16, cuda)  # no tuned entry for m < 1
            assert gemm.config_fits(cfg, n, k) and configs.well_formed(cfg), cfg
            assert cfg["family"] == gemm.heuristic_config(1, n, k, cuda)["family"]
    finally:
        gemm.heuristic_config.cache_clear()


def _nan_inf_case(device, dtype=torch.float16):
    n, k = 64, 256
    w = ops.prune_24(torch.randn(n, k, dtype=dtype, device=device))
    values, meta = ops.compress(w)
    x = torch.randn(4, k, dtype=dtype, device=device)
    x[1, 5] = float("nan")
    x[2, 9] = float("inf")
    return w.cpu(), values, meta, x


def test_nan_reaches_every_output_it_feeds(device, seed):
    w, values, meta, x = _nan_inf_case(device)
    y = ops.linear(x, values, meta).cpu()
    assert torch.isnan(y[1, w[:, 5] != 0]).all()
    assert not torch.isfinite(y[2, w[:, 9] != 0]).any()
    assert torch.isfinite(y[[0, 3]]).all()


def test_dot_family_non_finite_x_is_like_f_linear(device, seed):
    """What linear's docstring says of the "dot" family: like F.linear on the masked dense weight,
    an Inf at x[2, 9] gives +-Inf where W[:, 9] is kept and NaN where it is pruned (0 x Inf), and
    the NaN at x[1, 5] makes the whole row NaN; the other rows stay finite."""
    w, values, meta, x = _nan_inf_case(device)
    cfg = {"family": "dot", "BLOCK_M": 16, "BLOCK_N": 64, "SPLIT_K": 1, "num_warps": 4,
           "num_stages": 1}
    y = run_poisoned(x, values, meta, None, None, cfg).cpu()
    dense = torch.nn.functional.linear(x.cpu().float(), w.float())
    assert torch.equal(torch.isnan(y), torch.isnan(dense))
    assert torch.equal(torch.isinf(y), torch.isinf(dense))
    assert torch.equal(torch.sign(y[torch.isinf(y)]), torch.sign(dense[torch.isinf(dense)]))
    kept = w[:, 9] != 0
    assert torch.isinf(y[2, kept]).all() and torch.isnan(y[2, ~kept]).all()
    assert 0 < int(kept.sum()) < 64  # both kinds occur in the row
    assert torch.isnan(y[1]).all() and torch.isfinite(y[[0, 3]]).all()
    if device == "cpu":  # the op itself runs this family on the CPU
        assert torch.equal(torch.isnan(ops.linear(x, values, meta)), torch.isnan(y))


@pytest.mark.gpu
def test_mma_skips_pruned_weights_gpu(seed):
    """The sparse tensor cores never multiply pruned weights: NaN reaches only the outputs whose
    kept weights meet it, and Inf never meets a pruned zero (unlike the masked dense product)."""
    w, values, meta, x = _nan_inf_case("cuda")
    cfg = next(c for c in configs.candidates(64, 64, 256, on_gpu=True) if c["family"] == "mma")
    y = gemm.run_config(x, values, meta, None, 0, cfg).cpu()
    fed_by_nan = w[:, 5] != 0
    assert torch.isnan(y[1, fed_by_nan]).all() and not torch.isnan(y[1, ~fed_by_nan]).any()
    pruned_at_9 = w[:, 9] == 0
    assert torch.isfinite(y[2, pruned_at_9]).all() and torch.isinf(y[2, ~pruned_at_9]).all()
    expected = reference_output(x, values, meta, None, None)
    assert torch.equal(torch.isnan(y), torch.isnan(expected))


def _one_config_per_family(device, m, n, k) -> list[dict]:
    """The dot family's config on the CPU (the interpreter runs no other); on a GPU, the first
    candidate of each family it runs (the sm90 kernel's few-token tiles on sm90)."""
    if device == "cpu":
        return [{"family": "dot", "BLOCK_M": 16, "BLOCK_N": 64, "SPLIT_K": 1, "num_warps": 4,
                 "num_stages": 1}]
    first = {}
    for cfg in configs.candidates(m, n, k, on_gpu=True, sm90=wgmma.supported(0)):
        first.setdefault(cfg["family"], cfg)
    return list(first.values())


@pytest.mark.parametrize("activation", ACTIVATION_NAMES[1:] + GATED_NAMES)
def test_nan_comes_out_of_every_activation(device, activation, seed):
    """A NaN in x or in the bias stays NaN through every epilogue, as torch's activations keep it
    (a ReLU written as maximum(y, 0) made it 0, on the GPU and in the interpreter alike): every
    output the float64 reference makes NaN is NaN, in each family and through linear()."""
    n, k = 64, 256
    values, meta = packed_weight(n, k, torch.float16, device)
    x = unit_input(4, k, torch.float16, device)
    x[1, 5] = float("nan")
    bias = (0.5 * torch.randn(n, device=device)).half()
    bias[0] = float("nan")  # row 0: output 0, or output 0's gate where the activation is gated
    want = torch.isnan(reference_output(x, values, meta, bias, activation))
    assert want[:, 0].all() and want[1].any() and not want[[0, 2, 3], 1:].any()
    code = ALL_CODES[activation]
    runs = [(cfg, gemm.run_config(x, values, meta, bias, code, cfg))
            for cfg in _one_config_per_family(device, 4, n, k)]
    runs.append(("linear()", ops.linear(x, values, meta, bias, activation)))
    for how, y in runs:
        y = y.cpu()
        assert torch.isnan(y[want]).all(), (how, activation)
        assert torch.isfinite(y[[0, 2, 3], 1:]).all(), (how, activation)


def test_linear_errors(device):
    values, meta = packed_weight(32, 128, torch.float16, device)
    x = torch.randn(4, 128, dtype=torch.float16, device=device)
    with pytest.raises(ValueError, match="x's last dim must be in_features=128"):
        ops.linear(torch.randn(4, 64, dtype=torch.float16, device=device), values, meta)
    with pytest.raises(TypeError, match="x is torch.bfloat16 but the packed weight is torch.float16"):
        ops.linear(x.bfloat16(), values, meta)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        ops.linear(x, values, meta, activation="swish")
    with pytest.raises(ValueError, match=r"bias has shape \(16,\), expected \(32,\)"):
        ops.linear(x, values, meta, bias=torch.randn(16, dtype=torch.float16, device=device))
    with pytest.raises(ValueError, match="meta does not match values"):
        ops.linear(x, values, meta[:1].contiguous())
    if device == "cuda":
        with pytest.raises(ValueError, match="x is on cpu but the weight is on cuda:0"):
            ops.linear(x.cpu(), values, meta)
        with pytest.raises(TypeError, match="the kernels take float16 or bfloat16"):
            ops.linear(x.float(), values.float(), meta)


def test_opcheck_linear(device, seed):
    values, meta = packed_weight(32, 128, torch.float16, device)
    x = torch.randn(3, 128, dtype=torch.float16, device=device)
    bias = torch.randn(32, dtype=torch.float16, device=device)
    torch.library.opcheck(torch.ops.sparse24.linear.default, (x, values, meta, bias, "gelu"))
    torch.library.opcheck(torch.ops.sparse24.linear.default, (x, values, meta, None, None))


def test_backward_through_linear_raises(device, seed):
    """linear is inference only: the forward works on tensors that require grad, a backward
    through it raises (rather than stopping the gradient silently), and no_grad tracks nothing."""
    values, meta = packed_weight(32, 128, torch.float16, device)
    x = torch.randn(3, 128, dtype=torch.float16, device=device, requires_grad=True)
    y = ops.linear(x, values, meta)
    assert y.requires_grad
    with pytest.raises(RuntimeError, match="sparse24.linear has no backward"):
        y.float().sum().backward()
    with torch.no_grad():
        assert not ops.linear(x, values, meta).requires_grad


def test_a_forward_with_grad_enabled_keeps_no_input_alive(device, seed):
    """The no-backward guard remembers shapes, not tensors: an activation that requires grad is
    freed once nothing else holds it, as after a forward under no_grad."""
    import weakref

    values, meta = packed_weight(32, 128, torch.float16, device)
    leaf = torch.randn(3, 128, dtype=torch.float16, device=device, requires_grad=True)
    x = leaf * 2  # an activation: a non-leaf the graph need not keep for sparse24.linear
    alive = weakref.ref(x)
    y = ops.linear(x, values, meta)
    del x
    assert alive() is None and y.requires_grad


def test_split_k_covers_every_chunk_once():
    """No split is empty and the splits cover K: the mma kernel adds chunks [first, first + per)
    of its split, clamped to K, so a config may serve any K that is a multiple of 64."""
    for family in ("mma", "dot"):
        for k in (64, 128, 192, 768, 4096, 11008):
            for split in (1, 2, 3, 4, 8, 16, 64):
                cfg = {"family": family, "SPLIT_K": split}
                splits, per_split = gemm._split_k(cfg, k)
                chunks = k // 64
                assert splits * per_split >= chunks > (splits - 1) * per_split, (k, split)
                assert splits <= min(split, chunks)
    cands = configs.candidates(24, 128, 64, on_gpu=True)
    assert any(c["family"] == "mma" for c in cands)  # one chunk: mma too (see GPU_SHAPES)
    assert all(gemm.config_fits(c, 128, 64) for c in cands)
    mma = {"family": "mma", "BLOCK_F": 128, "BLOCK_T": 32, "GROUP_T": 8, "PREFETCH": 1,
           "SPLIT_K": 4, "num_warps": 4, "num_stages": 1}
    assert not gemm.config_fits(mma, 128, 192)  # 3 chunks cannot take 4 splits
    assert not gemm.config_fits(mma, 192, 1024)  # 192 features in blocks of 128
    assert gemm.config_fits(mma, 128, 256)


def test_heuristic_configs_fit_and_are_candidates():
    for m in (1, 16, 64, 333, 4096):
        for n, k in ((768, 768), (3072, 768), (768, 3072), (4096, 11008)):
            cfg = gemm.heuristic_config(m, n, k, torch.device("cpu"))
            assert gemm.config_fits(cfg, n, k)
            assert cfg["family"] == "dot"  # the interpreter cannot run inline asm


# ------------------------------------------------------------------------------ GPU suite
# (24, 128, 64) and (40, 256, 192): programs of one to three chunks, where an mma kernel without a
# loop once read uninitialized accumulators (sparse_mma.py, the accumulator's comment)
GPU_SHAPES = [(1, 768, 768), (7, 3072, 768), (64, 768, 3072), (333, 1024, 256), (2048, 768, 768),
              (24, 128, 64), (40, 256, 192)]


@pytest.mark.gpu
@pytest.mark.parametrize("family", ["mma", "dot"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m,n,k", GPU_SHAPES)
def test_every_candidate_config_is_correct_gpu(m, n, k, dtype, family, seed):
    values, meta = packed_weight(n, k, dtype, "cuda")
    x = torch.randn(m, k, dtype=dtype, device="cuda")
    bias = torch.randn(n, dtype=dtype, device="cuda")
    expected = reference_output(x, values, meta, bias, "gelu")
    failures, tried = [], []
    for cfg in configs.candidates(m, n, k, on_gpu=True):
        if cfg["family"] != family:
            continue
        # the mma family's two A loads that a default or the tuner picks (sparse24/kernels/
        # sparse_mma.py, A_TILE 1 and 2; A_TILE 0 runs in test_mma_programs_of_few_chunks_gpu)
        loads = [cfg] + ([{**cfg, "A_TILE": 2}] if family == "mma" and "A_TILE" not in cfg else [])
        for variant in loads:
            if variant in tried:  # an A_TILE 2 form the tuner offers as a candidate too
                continue
            tried.append(variant)
            y = run_poisoned(x, values, meta, bias, "gelu", variant)
            err = rel_err(y.cpu(), expected)
            if not err < TOLERANCE[dtype]:
                failures.append((variant, err))
    assert not failures, failures[:5]


# Every mma config on weights of one to four 64-column chunks, whole or split, so that programs of
# exactly one chunk (which Triton specializes into a constant, and the loop vanishes) are run
# with 64, 128 and 256 features: the matrix that found the single-chunk bug (16 of 264 cases
# wrong before the fix; bench/investigations/2026-11-mma-single-chunk/README.md).
@pytest.mark.gpu
@pytest.mark.parametrize("n,k", [(64, 64), (128, 64), (256, 64), (128, 128), (128, 192), (128, 256)])
def test_mma_programs_of_few_chunks_gpu(n, k, seed):
    values, meta = packed_weight(n, k, torch.float16, "cuda")
    failures, cases = [], 0
    for m in (24, 40):
        x = torch.randn(m, k, dtype=torch.float16, device="cuda")
        expected = reference_output(x, values, meta, None, None)
        for block_f, block_t, prefetch, split_k, a_tile in itertools.product(
                (64, 128), (16, 32), (1, 2), (1, 2, 4), (0, 1, 2)):
            cfg = {"family": "mma", "BLOCK_F": block_f, "BLOCK_T": block_t, "GROUP_T": 8,
                   "PREFETCH": prefetch, "SPLIT_K": split_k, "A_TILE": a_tile, "num_warps": 4,
                   "num_stages": 1}
            if not gemm.config_fits(cfg, n, k):  # BLOCK_F divides N, SPLIT_K <= the chunk count
                continue
            cases += 1
            err = rel_err(run_poisoned(x, values, meta, None, None, cfg).cpu(), expected)
            if not err < TOLERANCE[torch.float16]:
                failures.append((m, cfg, err))
    assert cases and not failures, failures[:5]


@pytest.mark.gpu
@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
@pytest.mark.parametrize("family", ["mma", "dot"])
def test_epilogues_gpu(activation, family, seed):
    m, n, k = 200, 256, 512
    values, meta = packed_weight(n, k, torch.float16, "cuda")
    x = torch.randn(m, k, dtype=torch.float16, device="cuda")
    bias = torch.randn(n, dtype=torch.float32, device="cuda")
    # the family's own candidates: on sm90, 200 tokens dispatch to the wgmma family (tested in
    # tests/test_wgmma_gpu.py), but mma and dot must stay right for the tuner and for sm80
    cfg = FAMILIES[family].candidates(m, n, k)[0]
    y = run_poisoned(x, values, meta, bias, activation, cfg)
    expected = reference_output(x, values, meta, bias, activation)
    assert rel_err(y.cpu(), expected) < TOLERANCE[torch.float16]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("family", ["mma", "dot"])
def test_gated_epilogues_gpu(family, dtype, seed):
    """SwiGLU on every candidate config of the family (unsplit, split with the reduction kernel
    and with FUSED_REDUCE, each A_TILE) at 7 and 333 tokens, then every gated activation on the
    heuristic's config; against the two projections computed apart, NaN-poisoned outputs."""
    failures = []
    for m, i, k in ((7, 384, 768), (333, 128, 192)):
        gate, up, bias_gate, bias_up, values, meta, bias = gated_weight(i, k, dtype, "cuda")
        x = unit_input(m, k, dtype, "cuda")
        configs_here = [cfg for cfg in configs.candidates(m, 2 * i, k, on_gpu=True)
                        if cfg["family"] == family]
        heuristic = FAMILIES[family].heuristic(m, 2 * i, k, 132)
        runs = [(cfg, "swiglu") for cfg in configs_here] + [(heuristic, a) for a in GATED_NAMES]
        for cfg, activation in runs:
            y = run_poisoned(x, values, meta, bias, activation, cfg)
            err = rel_err(y.cpu(), gated_reference(x, gate, up, bias_gate, bias_up, activation))
            if torch.isnan(y).any() or not err < TOLERANCE[dtype]:
                failures.append((m, i, k, activation, cfg, err))
    assert not failures, failures[:5]


@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 7, 333, 4096])
def test_linear_op_gpu(m, seed):
    values, meta = packed_weight(768, 768, torch.float16, "cuda")
    x = torch.randn(m, 768, dtype=torch.float16, device="cuda")
    y = ops.linear(x, values, meta, activation="gelu")
    expected = reference_output(x, values, meta, None, "gelu")
    assert rel_err(y.cpu(), expected) < TOLERANCE[torch.float16]


def _default_config_failures(dtype, weights, token_counts, graph_tokens, must_take, tmp_path,
                             monkeypatch):
    """linear's own choice (an empty tuning cache) on each [n, k] of ``weights`` at each token
    count, with bias and GELU, every other count on a non-contiguous x (rows k + 64 apart), its
    config also run on a NaN-poisoned output (every element written); then replayed from a CUDA
    graph at ``graph_tokens``. ``must_take(m, n, k, cfg)`` asserts what the rule must have
    picked, so that the test runs the kernel it means to. Returns the failures."""
    from sparse24.tuning import cache as cache_mod

    monkeypatch.setenv(cache_mod.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(cache_mod, "_default_cache", None)
    failures = []
    for n, k in weights:
        values, meta = packed_weight(n, k, dtype, "cuda")
        bias = torch.randn(n, dtype=dtype, device="cuda")
        for m in token_counts:
            x = unit_input(m, k, dtype, "cuda")
            if m % 2 == 0:  # rows k + 64 apart: a slice of a wider tensor
                wide = torch.randn(m, k + 64, dtype=dtype, device="cuda")
                wide[:, :k] = x
                x = wide[:, :k]
            cfg = gemm.choose_config(m, n, k, dtype, x.device)
            must_take(m, n, k, cfg)
            expected = reference_output(x, values, meta, bias, "gelu")
            for how, y in (("linear", ops.linear(x, values, meta, bias, "gelu")),
                           ("poisoned", run_poisoned(x.contiguous(), values, meta, bias, "gelu", cfg))):
                err = rel_err(y.cpu(), expected)
                if not err < TOLERANCE[dtype]:
                    failures.append((how, m, n, k, cfg, err))
        static_x = unit_input(graph_tokens, k, dtype, "cuda")
        graph, stream = torch.cuda.CUDAGraph(), torch.cuda.Stream()
        with torch.cuda.stream(stream):
            ops.linear(static_x, values, meta, bias, "gelu")  # compile and plan outside capture
            with torch.cuda.graph(graph, stream=stream):
                static_y = ops.linear(static_x, values, meta, bias, "gelu")
        static_x.copy_(unit_input(graph_tokens, k, dtype, "cuda"))
        graph.replay()
        torch.cuda.synchronize()
        err = rel_err(static_y.cpu(), reference_output(static_x, values, meta, bias, "gelu"))
        if not err < TOLERANCE[dtype]:
            failures.append(("graph", n, k, err))
    return failures


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_linear_few_tokens_default_configs_gpu(dtype, seed, tmp_path, monkeypatch):
    """linear's own choice (no tuning) at 1-64 tokens on shapes either side of the sm90 few-token
    rule (wgmma.few_token_config: token tiles of 8-64 with the metadata through the ring, 4
    stages for a lone tile (14336 features from 9 tokens, 11008 from 9 since session 13), in 4
    splits for 768 x 3072; 96 features, not a multiple of 64, took the dot kernel before it)
    and on a non-contiguous x,
    with bias and GELU, eager and replayed from a CUDA graph (16 tokens); on Hopper the rule's
    shapes must have taken the wgmma kernel, so that this test runs it."""
    from sparse24.ops import wgmma

    hopper = torch.cuda.get_device_capability() == (9, 0)

    def must_take(m, n, k, cfg):
        if hopper and wgmma.few_token_config(m, n, k) is not None:
            assert cfg["family"] == "wgmma", (m, n, k, cfg)

    failures = _default_config_failures(
        dtype, [(14336, 4096), (11008, 4096), (3072, 768), (2304, 768), (768, 768), (4096, 4096),
                (768, 3072), (96, 256)], (1, 5, 8, 9, 16, 17, 33, 64), 16, must_take, tmp_path,
        monkeypatch)
    assert not failures, failures[:5]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_linear_mid_tokens_default_configs_gpu(dtype, seed, tmp_path, monkeypatch):
    """linear's own choice at 65-1100 tokens, where the sm90 mid-token rule (wgmma.
    mid_token_config) runs tiles of 32 or 64 tokens with the metadata through the ring: odd
    counts (a partial last tile), 32-token tiles (384 x 768) and 64 (1024 x 768, 384 x 2304), a
    ragged N (96 features), a long K; and the estimate's 128-token tiles beside them (384 x
    3072), eager, poisoned and from a CUDA graph (384 tokens)."""
    hopper = torch.cuda.get_device_capability() == (9, 0)
    seen = set()

    def must_take(m, n, k, cfg):
        if hopper:
            assert cfg["family"] == "wgmma", (m, n, k, cfg)
            seen.add((cfg["BT"], cfg.get("META_RING", 0)))

    failures = _default_config_failures(
        dtype, [(768, 3072), (768, 768), (2304, 768), (3072, 768), (96, 256), (4096, 4096)],
        (65, 100, 255, 384, 1000, 1100), 384, must_take, tmp_path, monkeypatch)
    assert not failures, failures[:5]
    if hopper:
        assert {(32, 1), (64, 1), (128, 1)} <= seen, seen


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_linear_one_wave_wide_tiles_default_configs_gpu(dtype, seed, tmp_path, monkeypatch):
    """linear's own choice at 129-256 tokens on LLM MLP weights, where the sm90 heuristic runs
    256-feature tiles (wgmma.one_wave_wide_config): odd counts (a partial tile), a ragged N
    (8720 rows: the last 256-feature tile has 16), on a non-contiguous x, with bias and GELU,
    poisoned and from a CUDA graph (256 tokens); and one count past the rule (257)."""
    hopper = torch.cuda.get_device_capability() == (9, 0)
    seen = set()

    def must_take(m, n, k, cfg):
        if hopper:
            assert cfg["family"] == "wgmma", (m, n, k, cfg)
            seen.add((m, cfg.get("BLOCK_F", 128)))

    failures = _default_config_failures(
        dtype, [(11008, 4096), (8720, 2048)], (201, 255, 256, 257), 256, must_take, tmp_path,
        monkeypatch)
    assert not failures, failures[:5]
    if hopper:
        assert {(201, 256), (256, 256), (257, 128)} <= seen, seen


@pytest.mark.gpu
def test_linear_compiles_fullgraph_and_cuda_graph_gpu(seed):
    values, meta = packed_weight(768, 768, torch.float16, "cuda")
    bias = torch.randn(768, dtype=torch.float16, device="cuda")
    x = torch.randn(64, 768, dtype=torch.float16, device="cuda")

    def f(x):
        return ops.linear(x, values, meta, bias, "gelu") * 2

    eager = f(x)
    compiled = torch.compile(f, fullgraph=True)
    assert rel_err(compiled(x), eager.double()) < 1e-3
    graph_mode = torch.compile(f, fullgraph=True, mode="reduce-overhead")
    for _ in range(3):
        out = graph_mode(x)
    assert rel_err(out, eager.double()) < 1e-3


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("lead", [(0,), (4, 0)])
def test_zero_tokens_gpu(lead, dtype):
    """x with no rows on the GPU (issue 21: a ZeroDivisionError choosing the config): the empty
    output of the right shape, dtype and device, with or without bias and activation, eager and
    compiled."""
    values, meta = packed_weight(768, 768, dtype, "cuda")
    bias = torch.randn(768, dtype=dtype, device="cuda")
    x = torch.empty(*lead, 768, dtype=dtype, device="cuda")
    for activation in ACTIVATION_NAMES:
        for b in (None, bias, bias.float()):
            y = ops.linear(x, values, meta, b, activation)
            assert y.shape == (*lead, 768) and y.dtype == dtype and y.device == x.device
    y = torch.compile(lambda x: ops.linear(x, values, meta, bias, "gelu") * 2, fullgraph=True)(x)
    assert y.shape == (*lead, 768) and y.dtype == dtype and y.device == x.device


def test_plain_eager_calls_skip_the_op_dispatch():
    """SparseLinear's bias is an nn.Parameter: without autograd to record, the call is a plain
    eager one (the direct path); with a bias that requires grad, or a tensor subclass, it is not."""
    x, values, meta = torch.randn(2, 64), torch.randn(16, 32), torch.zeros(1, 1, 32, dtype=torch.int32)
    bias = torch.nn.Parameter(torch.randn(16))
    with torch.no_grad():
        assert gemm._plain_eager_call(x, values, meta, bias)
    assert not gemm._plain_eager_call(x, values, meta, bias)  # grad enabled, bias requires grad
    assert gemm._plain_eager_call(x, values, meta, bias.detach())

    class Sub(torch.Tensor):
        pass

    assert not gemm._plain_eager_call(x.as_subclass(Sub), values, meta, None)


@pytest.mark.gpu
@pytest.mark.parametrize("family", ["mma", "dot"])
def test_fused_reduce_eager_and_in_cuda_graphs_gpu(family, seed):
    """FUSED_REDUCE (the tile's last split reduces): the same y as the reduce launch, call after
    call (the tile counters reset themselves) with the workspace poisoned with NaN (a split that
    reduced before the others wrote would show), and replayed from a CUDA graph captured with
    its own counters, on new inputs, also after an eager call has grown the kept counters (which
    frees the old buffer); the kept counters end at zero."""
    from sparse24.ops.families import _splitk

    real_workspace = _splitk.workspace
    family_module = FAMILIES[family]
    poisoned = lambda splits, y, n: real_workspace(splits, y, n).fill_(float("nan"))  # noqa: E731

    n, k = 3072, 768
    values, meta = packed_weight(n, k, torch.float16, "cuda")
    bias = torch.randn(n, dtype=torch.float16, device="cuda")
    cfg = ({"family": "mma", "BLOCK_F": 128, "BLOCK_T": 16, "GROUP_T": 8, "PREFETCH": 1,
            "SPLIT_K": 4, "A_TILE": 1, "num_warps": 4, "num_stages": 1} if family == "mma" else
           {"family": "dot", "BLOCK_M": 16, "BLOCK_N": 64, "SPLIT_K": 4, "num_warps": 4,
            "num_stages": 3})
    code = ALL_CODES["gelu"]
    xs = [torch.randn(9, k, dtype=torch.float16, device="cuda") for _ in range(3)]
    two_pass = [gemm.run_config(x, values, meta, bias, code, cfg) for x in xs]
    fused_cfg = cfg | {"FUSED_REDUCE": 1}
    family_module.workspace, saved = poisoned, family_module.workspace
    try:
        for x, expected in zip(xs, two_pass):
            for _ in range(2):
                y = run_poisoned(x, values, meta, bias, "gelu", fused_cfg)
                assert rel_err(y, expected) < 1e-3
        static_x = xs[0].clone()
        gemm.run_config(static_x, values, meta, bias, code, fused_cfg)  # compiled before capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_y = gemm.run_config(static_x, values, meta, bias, code, fused_cfg)
        big = torch.randn(4096, k, dtype=torch.float16, device="cuda")  # more tiles: regrown
        assert rel_err(gemm.run_config(big, values, meta, bias, code, fused_cfg),
                       gemm.run_config(big, values, meta, bias, code, cfg)) < 1e-3
        for x, expected in zip(xs[1:], two_pass[1:]):
            static_x.copy_(x)
            graph.replay()
            torch.cuda.synchronize()
            assert rel_err(static_y, expected) < 1e-3
    finally:
        family_module.workspace = saved
    assert all(not c.any() for c in _splitk._counters.values())


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_direct_launches_gpu(dtype, seed, monkeypatch):
    """From the second call of a call shape on, the mma and dot kernels and the split-K reduction
    launch through Triton's C launcher with data pointers (ops/direct.py): the launcher
    of the installed Triton must be one pointer_launcher drives, and every call must match the
    float64 reference on fresh inputs and a NaN-poisoned output, for each split form, with and
    without a float32 bias, on a strided x, and when the calls are replayed from a CUDA graph."""
    from sparse24.ops import direct as _direct
    from sparse24.ops.families import _splitk, dot, mma

    real = _direct.pointer_launcher
    launched = []

    def counting(compiled):
        launch = real(compiled)
        assert launch is not None, "the installed Triton's launcher is not one pointer_launcher drives"

        def counted(*args):
            launched.append(compiled.name)
            launch(*args)
        return counted

    monkeypatch.setattr(_direct, "pointer_launcher", counting)
    for module, attribute in ((mma, "_direct"), (dot, "_direct"), (_splitk, "_reduce_direct")):
        monkeypatch.setattr(module, attribute, _direct.DirectLaunches())
    base_mma = {"family": "mma", "BLOCK_F": 128, "BLOCK_T": 16, "GROUP_T": 8, "PREFETCH": 1,
                "SPLIT_K": 1, "A_TILE": 2, "num_warps": 4, "num_stages": 1}
    base_dot = {"family": "dot", "BLOCK_M": 16, "BLOCK_N": 64, "SPLIT_K": 1, "num_warps": 4,
                "num_stages": 3}
    cases = [base_mma, base_mma | {"SPLIT_K": 4}, base_mma | {"SPLIT_K": 4, "FUSED_REDUCE": 1},
             base_mma | {"SPLIT_K": 4, "A_TILE": 1}, base_dot, base_dot | {"SPLIT_K": 4}]
    n, k = 1024, 768
    values, meta = packed_weight(n, k, dtype, "cuda")
    failures = []
    for cfg in cases:
        for bias in (None, torch.randn(n, device="cuda")):
            before = len(launched)
            kernel = "_sparse_mma_kernel" if cfg["family"] == "mma" else "_sparse_dot_kernel"
            for m in (9, 9, 9, 33, 33):
                wide = unit_input(m, k + 64, dtype, "cuda")
                x = wide[:, :k]  # rows k + 64 apart
                y = run_poisoned(x, values, meta, bias, "gelu", cfg)
                err = rel_err(y.cpu(), reference_output(x, values, meta, bias, "gelu"))
                if not err < TOLERANCE[dtype]:
                    failures.append((cfg, m, bias is not None, err))
            # 9 tokens: the 2nd and 3rd call direct, 33: the 2nd (the reduction's key has no
            # config: a split config may find it learned by the one before)
            assert launched[before:].count(kernel) == 3, (cfg, launched[before:])
            reduces = cfg.get("SPLIT_K", 1) > 1 and not cfg.get("FUSED_REDUCE")
            assert ("_splitk_reduce_kernel" in launched[before:]) == reduces, cfg
        static_x = unit_input(9, k, dtype, "cuda")
        code = ALL_CODES["gelu"]
        gemm.run_config(static_x, values, meta, None, code, cfg)  # learned: the capture is direct
        graph = torch.cuda.CUDAGraph()
        before = len(launched)
        with torch.cuda.graph(graph):
            static_y = gemm.run_config(static_x, values, meta, None, code, cfg)
        assert len(launched) > before, cfg
        for _ in range(2):
            static_x.copy_(unit_input(9, k, dtype, "cuda"))
            graph.replay()
            torch.cuda.synchronize()
            err = rel_err(static_y.cpu(), reference_output(static_x, values, meta, None, "gelu"))
            if not err < TOLERANCE[dtype]:
                failures.append(("graph", cfg, err))
    assert not failures, failures[:5]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mma_bound_launches_gpu(dtype, seed, monkeypatch):
    """With the mma family planned (as on sm80-sm89), a checked weight's repeated calls take the
    launches bound to it (families.mma.BoundLaunch): bit for bit the general path's outputs
    (gemm._linear_impl), for 1-D, 2-D and 3-D x, each epilogue with and without bias (gated
    paired), a fresh x each call; on a side stream; captured in a CUDA graph and replayed on new
    data; a float32 bias; split-K configs (the fused reduction too) bind nothing and are still
    right; an x the bound launch must decline (misaligned, transposed) still right."""
    from sparse24.ops.families import mma

    unsplit = {"family": "mma", "BLOCK_F": 64, "BLOCK_T": 32, "GROUP_T": 8, "PREFETCH": 1,
               "SPLIT_K": 1, "A_TILE": 1, "num_warps": 4, "num_stages": 1}
    split = {"family": "mma", "BLOCK_F": 128, "BLOCK_T": 16, "GROUP_T": 8, "PREFETCH": 1,
             "SPLIT_K": 4, "A_TILE": 2, "num_warps": 4, "num_stages": 1}
    offered = spy_on_bound_launches(monkeypatch, mma.BoundLaunch)
    gen = torch.Generator(device="cuda").manual_seed(31)
    for cfg, n, k, bias_on, activation, shapes in (
            (unsplit, 768, 768, True, None, ((768,), (16, 768), (2, 8, 768), (1000, 768))),
            (unsplit, 3072, 768, True, "gelu", ((3, 5, 768), (333, 768))),
            (unsplit, 768, 3072, False, "relu", ((64, 3072), (4, 100, 3072))),
            (unsplit, 1536, 768, True, "swiglu", ((7, 768), (2, 50, 768))),
            (split, 768, 768, True, "gelu", ((16, 768),)),
            (split | {"FUSED_REDUCE": 1}, 768, 768, False, None, ((16, 768),))):
        monkeypatch.setattr(gemm, "choose_config", lambda *key, cfg=cfg: cfg)
        monkeypatch.setattr(gemm, "_plans", {})
        w = ops.prune_24(torch.randn(n, k, device="cuda", generator=gen).to(dtype))
        layer = gpu_layer(w, bias_on, activation, gen)
        with torch.inference_mode():
            for shape in shapes:
                before = len(offered)
                xs, general, got = fresh_calls(layer, shape, gen)
                case = (cfg["SPLIT_K"], n, k, activation, shape)
                for a, b in zip(general, got):
                    assert torch.equal(a, b), case
                record = gemm._checked[(id(layer.values), id(layer.meta), id(layer.bias),
                                        activation)]
                launch = record[4].get(torch.Size(shape))
                assert isinstance(launch, mma.BoundLaunch) == (cfg is unsplit), (case, launch)
                # the layer's 2nd call binds (the general path's calls learned the launch), the
                # 3rd and 4th are served by it
                served = [y for y in offered[before:] if y is not None]
                assert (len(served) >= 2) == (cfg is unsplit), (case, len(served))
                check_side_stream_and_graph(layer, xs, general, case)
            x = xs[3].reshape(-1, k)
            want = gemm._linear_impl(x, layer.values, layer.meta, layer.bias, activation)
            check_declined_x_still_right(layer, x, want, (n, k, activation))
            if cfg is unsplit and bias_on:  # a float32 bias: its own record and bound launch
                bias32 = layer.bias.float()
                want = gemm._linear_impl(xs[0], layer.values, layer.meta, bias32, activation)
                for _ in range(3):
                    got = ops.linear(xs[0], layer.values, layer.meta, bias32, activation)
                    assert torch.equal(got, want), (n, k, activation, "float32 bias")
                assert isinstance(gemm._checked[(id(layer.values), id(layer.meta), id(bias32),
                                                 activation)][4].get(xs[0].shape), mma.BoundLaunch)


# ------------------------------------------------------------------- a GPU other than the current
def test_launch_guard_only_for_another_gpu(monkeypatch):
    """Triton launches on the current CUDA device: a tensor on another GPU needs a guard, the
    current GPU and the CPU do not (and the CPU never asks CUDA which device is current)."""
    from sparse24.ops import device as device_mod
    from sparse24.ops.device import launch_guard

    monkeypatch.setattr(device_mod, "_current_cuda_device", lambda: 0)
    guard = launch_guard(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert launch_guard(torch.device("cuda", 0)) is None

    def no_cuda():
        raise AssertionError("asked for the current CUDA device on a CPU tensor")

    monkeypatch.setattr(device_mod, "_current_cuda_device", no_cuda)
    assert launch_guard(torch.device("cpu")) is None


def test_linear_launches_under_the_guard_of_its_device(monkeypatch, seed):
    """linear's kernel launch runs inside the guard launch_guard gives for x's device (the
    interpreter stands in for the GPU; the guard is recorded, not a real device switch)."""
    entered = []

    class Guard:
        def __enter__(self):
            entered.append("enter")

        def __exit__(self, *exc):
            entered.append("exit")

    real_launch = FAMILIES["dot"].launch

    def launch(*args):
        entered.append("launch")
        real_launch(*args)

    monkeypatch.setattr(gemm, "launch_guard", lambda device: Guard())
    monkeypatch.setattr(FAMILIES["dot"], "launch", launch)
    monkeypatch.setattr(gemm, "_plans", {})
    values, meta = packed_weight(64, 128, torch.float16, "cpu")
    x = unit_input(3, 128, torch.float16, "cpu")
    if not gemm.use_triton(x):
        pytest.skip("the kernels run on a CPU only under TRITON_INTERPRET=1")
    y = ops.linear(x, values, meta)
    assert entered == ["enter", "launch", "exit"]
    assert rel_err(y, reference_output(x, values, meta, None, None)) < TOLERANCE[torch.float16]


@pytest.mark.gpu
def test_ops_on_a_gpu_that_is_not_current(seed):
    """A model split across GPUs (device_map="auto") calls the ops on cuda:1 while cuda:0 is
    current: pruning, packing, decompressing and linear (both the mma and the sm90 paths) must
    run on the tensors' own GPU and give the reference's answers."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    torch.cuda.set_device(0)
    dev = torch.device("cuda", 1)
    w = ops.prune_24(torch.randn(1024, 768, dtype=torch.float16, device=dev))
    assert w.device == dev
    values, meta = ops.compress(w)
    assert torch.equal(ops.decompress(values, meta), w)
    bias = torch.randn(1024, dtype=torch.float16, device=dev)
    for m in (16, 1000):  # few tokens (mma split or sm90 streaming) and many (sm90 on Hopper)
        x = unit_input(m, 768, torch.float16, dev)
        for _ in range(2):  # the second call through the direct launch
            y = ops.linear(x, values, meta, bias, "gelu")
            assert y.device == dev
            err = rel_err(y.cpu(), reference_output(x, values, meta, bias, "gelu"))
            assert err < TOLERANCE[torch.float16], (m, err)
    from sparse24.ops.tune import tune

    result = tune(768, 768, 16, device=dev, progress=False, store=False)  # every config checked
    assert result.timings and not result.rejected, result.rejected[:3]
    assert torch.cuda.current_device() == 0
