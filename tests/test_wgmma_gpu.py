"""The sm90 family (wgmma.sp, Gluon) on a Hopper GPU: every candidate config in both mainloop forms
(the Gluon k-loop, and the asm k-loop of each ASM_LOOP) and split of K, both dtypes, every epilogue, odd token counts, on the bench's weight
shapes, against a float64 reference; outputs are poisoned with NaN first, so every element must
be written. A deadlock of the asm k-loop's mbarrier bookkeeping would hang: run this file
under ``timeout`` (bench/device_session.sh does)."""

import itertools

import pytest
import torch

import sparse24.ops as ops
from sparse24.activations import EPILOGUE_CODES, GATED, GATED_CODES
from sparse24.activations import REFERENCE as REFERENCE_ACTIVATIONS
from sparse24.layout import interleave_gate_up
from sparse24.ops import wgmma
from bound_checks import (check_declined_x_still_right, check_side_stream_and_graph, fresh_calls,
                          gpu_layer, spy_on_bound_launches)
from tolerances import REL_TOL, rel_err

pytestmark = pytest.mark.gpu

M_VALUES = [1, 5, 333, 1000, 4097]
WEIGHT_SHAPES = [(768, 768), (3072, 768), (768, 3072), (2304, 768), (4096, 4096)]
EPILOGUES = [(False, None), (True, None), (True, "relu"), (True, "gelu"), (False, "gelu_tanh"),
             (True, "silu")]


def hopper():
    return torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


def packed(n, k, dtype, generator):
    w = ops.prune_24(torch.randn(n, k, device="cuda", generator=generator).to(dtype))
    values, meta = ops.compress(w)
    return w, values, meta


def expected(x, w, bias, activation):
    y = x.double() @ w.double().t()
    if bias is not None:
        y = y + bias.double()
    return REFERENCE_ACTIVATIONS[activation](y)


def failed_cases(cfg, dtype, cases, gen) -> list[tuple]:
    """Run ``cfg`` on each (m, (n, k)) of ``cases`` with fresh operands, the epilogues in turn,
    into NaN-poisoned outputs; the cases that left a NaN or missed the float64 reference."""
    failures = []
    for i, (m, (n, k)) in enumerate(cases):
        w, values, meta = packed(n, k, dtype, gen)
        # pre-activations of unit scale, where relu and both GELUs bend
        x = (torch.randn(m, k, device="cuda", generator=gen) / k ** 0.5).to(dtype)
        has_bias, activation = EPILOGUES[i % len(EPILOGUES)]
        bias = torch.randn(n, device="cuda", generator=gen) * 0.5 if has_bias else None
        y = torch.full((m, n), float("nan"), dtype=dtype, device="cuda")
        wgmma.launch(x, values, meta, bias, y, EPILOGUE_CODES[activation], cfg)
        err = rel_err(y, expected(x, w, bias, activation))
        if torch.isnan(y).any() or not err < REL_TOL[dtype]:
            failures.append((m, n, k, has_bias, activation, err, int(torch.isnan(y).sum())))
    return failures


def deepest_of_each_form(configs: list[dict]) -> list[dict]:
    """Per (BT, ASM_LOOP, SPLIT_K, META_AHEAD, META_RING), the config with the most stages: the opt-in forms are checked
    at one ring depth each (every depth of each would be 92 configs a dtype, too many compiles
    for one device call); the default form keeps every depth."""
    deepest = {}
    for cfg in configs:
        form = (cfg["BT"], cfg.get("ASM_LOOP", 0), cfg.get("SPLIT_K", 1), cfg.get("META_AHEAD", 1),
                cfg.get("META_RING", 0), cfg.get("BLOCK_F", 128))
        if form not in deepest or cfg["STAGES"] > deepest[form]["STAGES"]:
            deepest[form] = cfg
    return list(deepest.values())


GPU_CONFIGS = wgmma.candidates(4096, 768, 768) + [
    cfg for cfg in deepest_of_each_form(wgmma.candidates(
        4096, 768, 768, asm_loops=(0, *wgmma.ASM_LOOPS), split_ks=(1, *wgmma.SPLIT_KS),
        meta_ring=True))
    if cfg.get("ASM_LOOP", 0) or cfg.get("SPLIT_K", 1) > 1 or cfg.get("META_RING", 0)] + [
    # the tile orders the heuristic takes (wgmma.tile_group: 2 under 32 feature tiles, as the
    # pool above has them for 768 rows; 4 from 32) and 1, at the 128- and 256-token tiles
    cfg | {"GROUP": group} for cfg in deepest_of_each_form(wgmma.candidates(4096, 768, 768))
    if cfg["BT"] >= 128 for group in (1, 4)]


@pytest.mark.skipif(not hopper(), reason="wgmma.sp needs sm_90a (H100/H200)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cfg", GPU_CONFIGS,
                         ids=lambda c: f"BT{c['BT']}-S{c['STAGES']}-L{c.get('ASM_LOOP', 0)}"
                                       f"-K{c.get('SPLIT_K', 1)}-R{c.get('META_RING', 0)}-G{c['GROUP']}")
def test_every_config_every_epilogue(cfg, dtype):
    gen = torch.Generator(device="cuda").manual_seed(cfg["BT"] * 10 + cfg["STAGES"])
    failures = failed_cases(cfg, dtype, itertools.product(M_VALUES, WEIGHT_SHAPES), gen)
    assert not failures, failures[:6]


# 256-feature tiles (BLOCK_F 256: two 64-feature bands a warpgroup): every ring of both token
# tiles, and the metadata two k-blocks ahead at the deepest; on the bench's weights and on ragged
# ones (400 rows: the last tile's second warpgroup has 16 rows, one band and a quarter empty;
# 4160: its last tile has 64 rows, the second warpgroup none; K = 704: a half-empty last k-block).
BLOCK_F_256_CONFIGS = [c for c in wgmma.candidates(4096, 768, 768, block_fs=(256,))
                       if c.get("BLOCK_F") == 256]
BLOCK_F_256_CONFIGS += [c | {"META_AHEAD": 2} for c in deepest_of_each_form(BLOCK_F_256_CONFIGS)]


@pytest.mark.skipif(not hopper(), reason="wgmma.sp needs sm_90a (H100/H200)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cfg", BLOCK_F_256_CONFIGS,
                         ids=lambda c: f"F256-BT{c['BT']}-S{c['STAGES']}-A{c.get('META_AHEAD', 1)}")
def test_256_feature_tiles(cfg, dtype):
    gen = torch.Generator(device="cuda").manual_seed(cfg["BT"] * 10 + cfg["STAGES"] + 7)
    shapes = WEIGHT_SHAPES + [(400, 704), (4160, 320)]
    failures = failed_cases(cfg, dtype, itertools.product(M_VALUES, shapes), gen)
    assert not failures, failures[:6]


# The few-token tiles (BT 8-32, weight streaming): every ring depth unsplit, and splits of K (even,
# odd, and more splits than some weights have k-blocks) and the metadata 2 or 4 k-blocks ahead
# (META_AHEAD), split or not, at each tile's deepest ring.
FEW_TOKEN_CONFIGS = [cfg for cfg in wgmma.candidates(16, 4096, 4096)
                     if cfg["BT"] < 64 and "META_AHEAD" not in cfg] + [
    cfg for cfg in deepest_of_each_form(wgmma.candidates(16, 4096, 4096, split_ks=(1, 2, 3, 16),
                                                         meta_ring=True))
    if cfg["BT"] < 64 and (cfg.get("SPLIT_K", 1) > 1 or cfg.get("META_AHEAD", 1) > 1
                           or cfg.get("META_RING", 0))]


@pytest.mark.skipif(not hopper(), reason="wgmma.sp needs sm_90a (H100/H200)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cfg", FEW_TOKEN_CONFIGS,
                         ids=lambda c: f"BT{c['BT']}-S{c['STAGES']}-K{c.get('SPLIT_K', 1)}"
                                       f"-A{c.get('META_AHEAD', 1)}-R{c.get('META_RING', 0)}")
def test_few_token_tiles(cfg, dtype):
    """Token counts below, at and past the tile (several token tiles), weights of 6-32 k-blocks
    and one whose last k-block is half empty (K = 704), every epilogue."""
    gen = torch.Generator(device="cuda").manual_seed(cfg["BT"] * 100 + cfg["STAGES"])
    shapes = [(768, 768), (3072, 768), (768, 3072), (4096, 4096), (768, 704)]
    failures = failed_cases(cfg, dtype, itertools.product([1, 3, 8, 13, 31, 64], shapes), gen)
    assert not failures, failures[:6]


# The asm k-loop with its metadata loaded 2-4 batches ahead (META_AHEAD with ASM_LOOP: a queue
# of scratch registers), at each drain; K of 3 k-blocks (fewer than the batches ahead: the loads
# past K read the last chunk), 704 (a half-empty last k-block) and 4096.
ASM_LOOP_AHEAD_CONFIGS = [
    {"family": "wgmma", "BT": 256, "STAGES": 2, "GROUP": 4, "ASM_LOOP": 2, "META_AHEAD": 2},
    {"family": "wgmma", "BT": 256, "STAGES": 2, "GROUP": 4, "ASM_LOOP": 2, "META_AHEAD": 3},
    {"family": "wgmma", "BT": 256, "STAGES": 2, "GROUP": 4, "ASM_LOOP": 1, "META_AHEAD": 4},
    {"family": "wgmma", "BT": 128, "STAGES": 4, "GROUP": 8, "ASM_LOOP": 4, "META_AHEAD": 2},
    {"family": "wgmma", "BT": 64, "STAGES": 6, "GROUP": 8, "ASM_LOOP": 1, "META_AHEAD": 3}]


@pytest.mark.skipif(not hopper(), reason="wgmma.sp needs sm_90a (H100/H200)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cfg", ASM_LOOP_AHEAD_CONFIGS,
                         ids=lambda c: f"BT{c['BT']}-L{c['ASM_LOOP']}-A{c['META_AHEAD']}")
def test_asm_loop_metadata_batches_ahead(cfg, dtype):
    gen = torch.Generator(device="cuda").manual_seed(cfg["BT"] + 10 * cfg["META_AHEAD"])
    shapes = WEIGHT_SHAPES + [(768, 320), (400, 704)]
    failures = failed_cases(cfg, dtype, itertools.product([1, 333, 4097], shapes), gen)
    assert not failures, failures[:6]


@pytest.mark.skipif(not hopper(), reason="wgmma.sp needs sm_90a (H100/H200)")
def test_inf_in_x_meets_only_kept_weights():
    gen = torch.Generator(device="cuda").manual_seed(7)
    w, values, meta = packed(256, 256, torch.float16, gen)
    x = torch.randn(64, 256, device="cuda", generator=gen).half()
    x[3, 5] = float("inf")
    y = torch.empty(64, 256, dtype=torch.float16, device="cuda")
    wgmma.launch(x, values, meta, None, y, 0, wgmma.heuristic_config(64, 256, 256))
    kept = w[:, 5] != 0
    # row 3: +-inf where the weight of column 5 was kept, finite where it was pruned (skipped)
    assert torch.isinf(y[3, kept]).all() and torch.isfinite(y[3, ~kept]).all()
    assert torch.isfinite(torch.cat([y[:3], y[4:]])).all()


@pytest.mark.skipif(not hopper(), reason="wgmma.sp needs sm_90a (H100/H200)")
@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "silu"])
def test_gelu_epilogues_elementwise(activation):
    """The epilogue's GELUs (a rational erfc approximation, MUFU exp2 and reciprocal: see
    sparse24/kernels/sparse_wgmma.py) element by element over pre-activations of about -10 to 10, against
    float64 GELU of the float64 product: within the output's rounding plus 1e-3 absolute."""
    gen = torch.Generator(device="cuda").manual_seed(11)
    w, values, meta = packed(768, 768, torch.float16, gen)
    x = (torch.randn(333, 768, device="cuda", generator=gen) * 3 / 768 ** 0.5).half()
    y = torch.full((333, 768), float("nan"), dtype=torch.float16, device="cuda")
    wgmma.launch(x, values, meta, None, y, EPILOGUE_CODES[activation],
                 wgmma.heuristic_config(333, 768, 768))
    ref = expected(x, w, None, activation)
    assert ref.abs().max() > 8 and ref.min() < -0.16  # both tails and the bend are exercised
    excess = (y.double() - ref).abs() - (2 ** -10 * ref.abs() + 1e-3)
    assert excess.max().item() <= 0, excess.max().item()


@pytest.mark.skipif(not hopper(), reason="wgmma.sp needs sm_90a (H100/H200)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_direct_launch_matches_the_cached_launch_path(dtype):
    """From the second call of a specialization wgmma.launch fills the TMA descriptors itself and
    calls Triton's C launcher (DescriptorLauncher, on Triton 3.6 and 3.9), and a split's
    reduction goes through its pointer launcher: the outputs must be bit for bit those of the
    CachedLaunch path, on fresh tensors each call (the descriptors carry the addresses), then
    on the same ones again (descriptors kept by DescriptorLauncher), with bias and GELU, unsplit
    and split, and replayed from a CUDA graph."""
    import triton

    from sparse24.ops import triton_internals

    gen = torch.Generator(device="cuda").manual_seed(11)
    w, values, meta = packed(768, 768, dtype, gen)
    bias = torch.randn(768, device="cuda", generator=gen)
    code = EPILOGUE_CODES["gelu"]
    heuristic = wgmma.heuristic_config(1000, 768, 768)
    split = heuristic | {"SPLIT_K": 2}  # float32 partial tiles: a shallower ring where needed
    while not wgmma.runnable(split):
        split = split | {"STAGES": split["STAGES"] - 1}
    for cfg in (heuristic, split):
        def run(x):
            y = torch.full((x.shape[0], 768), float("nan"), dtype=dtype, device="cuda")
            wgmma.launch(x, values, meta, bias, y, code, cfg)
            return y

        xs = [(torch.randn(1000, 768, device="cuda", generator=gen) / 28).to(dtype)
              for _ in range(3)]
        triton_internals.DescriptorLauncher.enabled = False  # every direct launch off
        try:
            cached = [run(x) for x in xs]
        finally:
            triton_internals.DescriptorLauncher.enabled = True
        direct = [run(x) for x in xs]
        if triton.__version__.startswith(("3.6", "3.9")):
            assert any(owner is cfg and entry
                       and isinstance(entry[0], triton_internals.DescriptorLauncher)
                       for owner, entry in wgmma._direct.known.values()), cfg
        for a, b in zip(cached, direct):
            assert torch.equal(a, b), cfg
        # again, with the weight's and each x's descriptors kept from the calls above, and each
        # output freed before the next call (the allocator hands its block back: a kept
        # descriptor of the same address, shape and strides)
        for x, want in zip(xs, cached):
            assert torch.equal(run(x), want), cfg
        assert rel_err(direct[0], expected(xs[0], w, bias, "gelu")) < REL_TOL[dtype]
        static_x = xs[0].clone()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_y = run(static_x)
        static_x.copy_(xs[1])
        graph.replay()
        assert torch.equal(static_y, cached[1]), cfg


@pytest.mark.skipif(not hopper(), reason="wgmma.sp needs sm_90a (H100/H200)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_linear_through_its_planned_launch(dtype, monkeypatch):
    """ops.linear's repeated calls of an sm90 problem launch through the plan's PlannedLaunch
    (its kept direct launches): bit for bit the outputs of the cached launch path, for each
    epilogue and bias dtype it keeps apart (unsplit at 1000 and 4097 tokens; gated, paired in
    the kernel), a fresh x each call, then each x again with the earlier output freed (x's and
    y's kept launch arguments reused), then as 3-D x (its rows read without a reshape);
    wgmma.launch entered only by the call that learns."""
    import triton

    from sparse24.ops import gemm, triton_internals

    entered = []
    real_launch = wgmma.launch
    monkeypatch.setattr(wgmma, "launch", lambda *a: entered.append(a[5]) or real_launch(*a))
    monkeypatch.setattr(gemm, "_plans", {})  # fresh plans: none has learned a launch yet
    gen = torch.Generator(device="cuda").manual_seed(23)
    for m, n, k, bias_dtype, activation in ((1000, 768, 768, None, None),
                                            (1000, 768, 768, torch.float32, "gelu"),
                                            (1000, 768, 768, dtype, "relu"),
                                            (4097, 3072, 768, dtype, "gelu_tanh"),
                                            (1000, 1536, 768, None, "swiglu")):
        w, values, meta = packed(n, k, dtype, gen)
        if activation in GATED:
            values, meta = ops.compress(interleave_gate_up(w[: n // 2], w[n // 2:]))
        bias = None if bias_dtype is None else (
            torch.randn(n, device="cuda", generator=gen) * 0.5).to(bias_dtype)
        xs = [(torch.randn(m, k, device="cuda", generator=gen) / k ** 0.5).to(dtype)
              for _ in range(3)]
        triton_internals.DescriptorLauncher.enabled = False
        try:
            cached = [ops.linear(x, values, meta, bias, activation) for x in xs]
        finally:
            triton_internals.DescriptorLauncher.enabled = True
        entered.clear()
        planned = [ops.linear(x, values, meta, bias, activation) for x in xs]
        launch, cfg, _ = gemm._plans[(m, n, k, dtype, xs[0].device)]
        case = (m, n, k, bias_dtype, activation, cfg)
        assert isinstance(launch, wgmma.PlannedLaunch), case
        direct = cfg.get("SPLIT_K", 1) == 1 and triton.__version__.startswith(("3.6", "3.9"))
        for a, b in zip(cached, planned):
            assert torch.equal(a, b), case
        del planned[1:]
        for x, want in zip(xs, cached):  # each output freed before the next call
            assert torch.equal(ops.linear(x, values, meta, bias, activation), want), case
        for x, want in zip(xs, cached):  # 3-D x: the planned launch reads its rows unreshaped
            rows3 = ops.linear(x.unsqueeze(0), values, meta, bias, activation)
            assert rows3.shape == (1, *want.shape) and torch.equal(rows3[0], want), case
        if direct:  # only the first planned call entered launch (to learn); the rest went direct
            assert len(entered) == 1 and launch.direct, (case, entered)
        if activation not in GATED:
            assert rel_err(planned[0], expected(xs[0], w, bias, activation)) < REL_TOL[dtype], case


@pytest.mark.skipif(not hopper(), reason="wgmma.sp needs sm_90a (H100/H200)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_sparse_linear_through_its_bound_launches(dtype, monkeypatch):
    """SparseLinear's repeated calls take the launches bound to its weight (wgmma.BoundLaunch):
    bit for bit the general path's outputs (gemm._linear_impl, the plan's launch), for 1-D,
    2-D and 3-D x at few, some and many tokens, each epilogue with and without bias (gated
    paired in the kernel; a split-K plan has none and is served by the general path), a fresh
    x each call; on a side stream; captured in a CUDA graph and replayed on new data; and an x
    the bound launch must decline (misaligned, transposed) still right."""
    from sparse24.ops import gemm

    monkeypatch.setattr(gemm, "_plans", {})
    monkeypatch.setattr(wgmma.PlannedLaunch, "binds", True)
    offered = spy_on_bound_launches(monkeypatch, wgmma.BoundLaunch)
    gen = torch.Generator(device="cuda").manual_seed(29)
    for n, k, bias_on, activation, shapes in (
            (768, 768, True, None, ((768,), (16, 768), (2, 8, 768), (1000, 768))),
            (3072, 768, True, "gelu", ((3, 5, 768), (333, 768))),
            (768, 3072, False, "relu", ((64, 3072), (4, 384, 3072))),
            (1536, 768, True, "swiglu", ((7, 768), (2, 500, 768)))):
        w, _, _ = packed(n, k, dtype, gen)
        layer = gpu_layer(w, bias_on, activation, gen)
        with torch.inference_mode():
            for shape in shapes:
                before = len(offered)
                xs, general, got = fresh_calls(layer, shape, gen)
                case = (n, k, activation, shape)
                for a, b in zip(general, got):
                    assert torch.equal(a, b), case
                cfg = gemm._plans[(xs[0].numel() // k, n, k, dtype, xs[0].device)][1]
                record = gemm._checked[(id(layer.values), id(layer.meta), id(layer.bias),
                                        activation)]
                launch = record[4].get(torch.Size(shape))
                unsplit = cfg["family"] == "wgmma" and cfg.get("SPLIT_K", 1) == 1
                assert isinstance(launch, wgmma.BoundLaunch) == unsplit, (case, cfg, launch)
                # the layer's 2nd call binds (the general path's calls learned the launch), the
                # 3rd and 4th are served by it
                served = [y for y in offered[before:] if y is not None]
                assert (len(served) >= 2) == unsplit, (case, len(served))
                check_side_stream_and_graph(layer, xs, general, case)
            x = xs[3].reshape(-1, k)
            want = ops.linear(x, layer.values, layer.meta, layer.bias, activation)
            check_declined_x_still_right(layer, x, want, (n, k, activation))


@pytest.mark.skipif(not hopper(), reason="wgmma.sp needs sm_90a (H100/H200)")
@pytest.mark.parametrize("k", [320, 704, 1216])  # 5, 11, 19 chunks: odd, and splits of unequal length
def test_split_k_with_uneven_splits(k):
    """SPLIT_K where the k-blocks do not divide evenly, K is an odd number of 64-wide chunks (the
    last k-block half empty) and SPLIT_K 8 may leave fewer splits: every split config the
    candidates offer at this K, with the Gluon loop and the asm loop, against float64."""
    gen = torch.Generator(device="cuda").manual_seed(k)
    n = 768
    w, values, meta = packed(n, k, torch.float16, gen)
    bias = torch.randn(n, device="cuda", generator=gen) * 0.5
    failures, cases = [], 0
    for m in (5, 333):
        x = (torch.randn(m, k, device="cuda", generator=gen) / k ** 0.5).half()
        want = expected(x, w, bias, "gelu")
        for cfg in deepest_of_each_form(wgmma.candidates(m, n, k, asm_loops=(0, 2),
                                                         split_ks=wgmma.SPLIT_KS)):
            y = torch.full((m, n), float("nan"), dtype=torch.float16, device="cuda")
            wgmma.launch(x, values, meta, bias, y, EPILOGUE_CODES["gelu"], cfg)
            cases += 1
            err = rel_err(y, want)
            if torch.isnan(y).any() or not err < REL_TOL[torch.float16]:
                failures.append((m, cfg, err))
    assert cases and not failures, failures[:5]


@pytest.mark.skipif(not hopper(), reason="wgmma.sp needs sm_90a (H100/H200)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("split, paired", [(1, False), (1, True), (3, False)])
def test_gated_epilogues(split, paired, dtype, monkeypatch):
    """SwiGLU, GEGLU and ReGLU on the sm90 family: unsplit, paired in the kernel's epilogue
    (PAIR_GATED_IN_KERNEL) or by the reduction kernel after the kernel wrote the sums; split (the
    reduction pairs the partials); at token counts of one tile, several and a ragged last one;
    against the gate and up projections computed apart in float64, into NaN-poisoned outputs of
    half the weight's rows."""
    monkeypatch.setattr(wgmma, "PAIR_GATED_IN_KERNEL", paired)
    gen = torch.Generator(device="cuda").manual_seed(17 + split)
    failures, cases = [], 0
    for (i, k), m, name in itertools.product([(768, 768), (1536, 4096), (136, 704)],
                                             [1, 5, 333, 4097], list(GATED)):
        # 136 rows a projection: 272 interleaved rows, 17 blocks of 16 (a ragged last tile);
        # only the interleaved weight is packed (136 alone is not a multiple of 16)
        gate, up = (ops.prune_24(torch.randn(i, k, device="cuda", generator=gen).to(dtype))
                    for _ in range(2))
        values, meta = ops.compress(interleave_gate_up(gate, up))
        bias_gate, bias_up = (torch.randn(i, device="cuda", generator=gen) * 0.5 for _ in range(2))
        x = (torch.randn(m, k, device="cuda", generator=gen) / k ** 0.5).to(dtype)
        want = (expected(x, gate, bias_gate, GATED[name]) * expected(x, up, bias_up, None))
        for cfg in gated_configs(m, 2 * i, k, split):
            cases += 1
            y = torch.full((m, i), float("nan"), dtype=dtype, device="cuda")
            wgmma.launch(x, values, meta, interleave_gate_up(bias_gate, bias_up), y,
                         GATED_CODES[name], cfg)
            err = rel_err(y, want)
            if torch.isnan(y).any() or not err < REL_TOL[dtype]:
                failures.append((i, k, m, name, cfg, err))
    assert cases and not failures, failures[:6]


def gated_configs(m: int, n: int, k: int, split: int) -> list[dict]:
    """The heuristic's config for m, and at few tokens the streaming tiles (BT 16 with the
    metadata ahead, BT 8 with it through the ring), each with ``split`` splits of K at the most
    stages that fit."""
    configs = [wgmma.heuristic_config(m, n, k)]
    if split == 1:  # 256-feature tiles pair each band's rows (no split: they take none)
        configs += [{"family": "wgmma", "BT": 128 if m > 64 else 64, "STAGES": 2, "GROUP": 4,
                     "BLOCK_F": 256},
                    {"family": "wgmma", "BT": 128, "STAGES": 3, "GROUP": 4, "BLOCK_F": 256}]
    if m <= 16:
        configs += [{"family": "wgmma", "BT": 16, "STAGES": 10, "GROUP": 8, "META_AHEAD": 2},
                    {"family": "wgmma", "BT": 8, "STAGES": 10, "GROUP": 8, "META_RING": 1}]
    runnable = []
    for cfg in configs:
        cfg = dict(cfg, SPLIT_K=split)
        while not wgmma.runnable(cfg):  # float32 split tiles need more room than the heuristic's
            cfg["STAGES"] -= 1
        runnable.append(cfg)
    return runnable
