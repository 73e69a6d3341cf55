"""The kernel families behind one interface (sparse24/ops/families), and linear's launch plans.

Launch arguments, golden: the mma family cannot run here (inline asm) and neither family's
compiled launch path runs without a GPU, so the launch objects are replaced by recorders and each
family's launch is checked to pass exactly the grid, arguments, constexprs, warps and stages that
the launchers passed before they moved out of gemm.py (the expected values below are written out
from that code, and these tests passed against it first). Plans: made once per problem, emptied
when the tuned configs change and when full; a repeated call enters few Python frames of ours.
"""

import inspect

import pytest
import torch

import sparse24.ops as ops
from sparse24 import tuning
from sparse24.activations import EPILOGUE_CODES
from sparse24.ops import configs, gemm
from sparse24.ops.families import FAMILIES, _splitk, dot, mma
from sparse24.tuning import cache as cache_mod

M, N, K = 5, 128, 256
MMA = {"family": "mma", "BLOCK_F": 128, "BLOCK_T": 16, "GROUP_T": 8, "PREFETCH": 1, "SPLIT_K": 1,
       "A_TILE": 1, "num_warps": 4, "num_stages": 1}
DOT = {"family": "dot", "BLOCK_M": 16, "BLOCK_N": 32, "SPLIT_K": 1, "num_warps": 4, "num_stages": 3}


class Recorder:
    def __init__(self, name):
        self.name = name
        self.calls = []
        self.maxnregs = []

    def compiled_for(self, args, constexprs, **options):
        """What the direct launches learn from (a CachedLaunch's compiled kernel): the name."""
        return self.name

    def __call__(self, grid, args, constexprs, num_warps, num_stages, maxnreg=None):
        self.calls.append((grid, args, constexprs, num_warps, num_stages))
        self.maxnregs.append(maxnreg)


def same(value):
    """A comparable form: tensors by address, shape, strides and dtype; anything else by value."""
    if isinstance(value, torch.Tensor):
        return ("tensor", value.data_ptr(), tuple(value.shape), value.stride(), value.dtype)
    if isinstance(value, tuple):
        return tuple(same(v) for v in value)
    return type(value).__name__, value


@pytest.fixture
def recorders(monkeypatch):
    found = {name: Recorder(name) for name in ("mma", "dot", "reduce")}
    monkeypatch.setattr(mma, "_mma_launch", found["mma"])
    monkeypatch.setattr(dot, "_dot_launch", found["dot"])
    monkeypatch.setattr(_splitk, "_reduce_launch", found["reduce"])
    return found


def family_launch(name):
    return FAMILIES[name].launch


def problem(dtype, with_bias):
    """x2 with rows wider than K (stride 320: the launches must pass strides, not K), a packed
    weight, an optional float32 bias and the output."""
    values, meta = ops.compress(ops.prune_24(torch.randn(N, K, dtype=dtype)))
    x2 = torch.randn(M, 320, dtype=dtype)[:, :K]
    bias = torch.randn(N) if with_bias else None
    y = torch.empty(M, N, dtype=dtype)
    return x2, values, meta, bias, y


CASES = [  # (split K, dtype, bias, activation, FUSED_REDUCE)
    (1, torch.float16, False, None, 0),
    (4, torch.bfloat16, True, "gelu", 0),
    (4, torch.float16, True, "relu", 1),
]


def check_counters(counter, meta, fused, tiles):
    """FUSED_REDUCE: the kernel gets zeroed int32 tile counters, enough for its tiles; else meta
    stands in for the unused pointer."""
    if not fused:
        assert counter is meta
        return
    assert counter.dtype == torch.int32 and counter.numel() >= tiles and not counter.any()


@pytest.mark.parametrize("split_k, dtype, with_bias, activation, fused", CASES)
def test_mma_launch_arguments(recorders, split_k, dtype, with_bias, activation, fused):
    x2, values, meta, bias, y = problem(dtype, with_bias)
    act = EPILOGUE_CODES[activation]
    family_launch("mma")(x2, values, meta, bias, y, act,
                         MMA | {"SPLIT_K": split_k, "FUSED_REDUCE": fused})
    [(grid, args, constexprs, warps, stages)] = recorders["mma"].calls
    assert not recorders["dot"].calls
    partial, counter = args[6], args[7]
    # K = 256 is 4 chunks of 64: SPLIT_K 4 is 4 splits of 1 chunk
    assert grid == (1, split_k, 1)  # ceil(5 / 16) token blocks x 128 / 128 feature blocks
    assert same(args) == same((
        x2.view(torch.int32), values.view(torch.int32), values.data_ptr(), meta.data_ptr(),
        bias if with_bias else y, y, partial, counter, M, N, K, 160, N, 4 // split_k))
    check_counters(counter, meta, fused, 1)
    assert constexprs == (128, 16, 8, 1, split_k, with_bias, act, dtype == torch.bfloat16, 1,
                          bool(fused))
    assert (warps, stages) == (4, 1) and recorders["mma"].maxnregs == [None]
    check_reduce(recorders, split_k, partial, bias, y, act, fused)


def test_mma_launch_passes_the_register_cap(recorders):
    x2, values, meta, bias, y = problem(torch.float16, False)
    family_launch("mma")(x2, values, meta, bias, y, 0,
                         MMA | {"SPLIT_K": 2, "A_TILE": 2, "MAXNREG": 168})
    [(grid, args, constexprs, warps, stages)] = recorders["mma"].calls
    assert constexprs[8] == 2 and recorders["mma"].maxnregs == [168]


@pytest.mark.parametrize("split_k, dtype, with_bias, activation, fused", [
    (1, torch.float16, False, None, 0), (2, torch.bfloat16, True, "relu", 0),
    (2, torch.float16, False, "gelu", 1)])
def test_dot_launch_arguments(recorders, split_k, dtype, with_bias, activation, fused):
    x2, values, meta, bias, y = problem(dtype, with_bias)
    act = EPILOGUE_CODES[activation]
    family_launch("dot")(x2, values, meta, bias, y, act,
                         DOT | {"SPLIT_K": split_k, "FUSED_REDUCE": fused})
    [(grid, args, constexprs, warps, stages)] = recorders["dot"].calls
    assert not recorders["mma"].calls
    partial, counter = args[5], args[6]
    assert grid == (N // 32, 1, split_k)
    assert same(args) == same((x2, values, meta, bias if with_bias else y, y, partial, counter,
                               M, N, K, 320, N))
    check_counters(counter, meta, fused, N // 32)
    assert constexprs == (16, 32, split_k, with_bias, act, True, bool(fused))  # True: not CUDA
    assert (warps, stages) == (4, 3)
    check_reduce(recorders, split_k, partial, bias, y, act, fused)


def check_reduce(recorders, split_k, partial, bias, y, act, fused=0):
    """Unsplit: the kernel writes y itself. Split: float32 partials [splits, M, N], then one
    reduce launch over M * N elements in blocks of 1024 applies bias and activation, unless the
    kernel reduces them itself (FUSED_REDUCE)."""
    if split_k == 1:
        assert partial is y and not recorders["reduce"].calls
        return
    assert partial.shape == (split_k, M, N) and partial.dtype == torch.float32
    if fused:
        assert not recorders["reduce"].calls
        return
    [(grid, args, constexprs, warps, stages)] = recorders["reduce"].calls
    assert grid == (1, 1, 1)
    # the split stride (elements between splits' partial sums) is M * N for these families
    assert same(args) == same((partial, bias if bias is not None else y, y, M, N, N, M * N))
    assert constexprs == (split_k, 1024, bias is not None, act)
    assert (warps, stages) == (4, 1)


# --------------------------------------------------------------------------------- interface
SHAPES = [(1, 768, 768), (16, 4096, 4096), (65, 3072, 768), (4096, 768, 3072)]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_has_the_interface(name):
    family = FAMILIES[name]
    assert family.NAME == name
    assert isinstance(family.FIELDS, tuple) and all(isinstance(f, str) for f in family.FIELDS)
    interface = {"candidates": ["m", "n", "k"], "heuristic": ["m", "n", "k", "sms"],
                 "fits": ["config", "n", "k"],
                 "launch": ["x2", "values", "meta", "bias", "y", "activation", "cfg"]}
    for function, params in interface.items():
        found = inspect.signature(getattr(family, function)).parameters.values()
        # a family may take more, optional, arguments (the tuner's or a bench's), never fewer
        assert [p.name for p in found][:len(params)] == params, function
        assert all(p.default is not p.empty for p in list(found)[len(params):]), function
    for m, n, k in SHAPES:  # N a multiple of 64: every family takes these
        for cfg in [family.heuristic(m, n, k, 132), *family.candidates(m, n, k)]:
            assert cfg["family"] == name and configs.well_formed(cfg), cfg
            assert family.fits(cfg, n, k) and gemm.config_fits(cfg, n, k), cfg


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_well_formed_wants_every_field_of_the_family(name):
    cfg = FAMILIES[name].heuristic(16, 768, 768, 132)
    assert configs.well_formed(cfg)
    for field in FAMILIES[name].FIELDS:
        assert not configs.well_formed({k: v for k, v in cfg.items() if k != field}), field
        assert not configs.well_formed(cfg | {field: 0 if field != "PREFETCH" else -1}), field


def test_dispatch_is_the_table(monkeypatch):
    """run_config launches through FAMILIES[cfg["family"]], whatever the family."""
    seen = []
    fake = type("Family", (), {"launch": staticmethod(lambda *args: seen.append(args[-1]))})
    monkeypatch.setitem(FAMILIES, "fake", fake)
    x = torch.randn(3, 64, dtype=torch.float16)
    values, meta = ops.compress(ops.prune_24(torch.randn(16, 64, dtype=torch.float16)))
    cfg = {"family": "fake"}
    y = gemm.run_config(x, values, meta, None, 0, cfg)
    assert seen == [cfg] and y.shape == (3, 16)


# ------------------------------------------------------------------------------------- plans
DOT_64 = DOT | {"BLOCK_N": 64}


@pytest.fixture
def plans(monkeypatch, recorders):
    """linear on the CPU with the kernels' launches recorded and a fresh plan table."""
    monkeypatch.setattr(gemm, "_plans", {})
    monkeypatch.setattr(gemm, "use_triton", lambda t: True)
    return gemm._plans


def packed(n=N, k=K):
    return ops.compress(ops.prune_24(torch.randn(n, k, dtype=torch.float16)))


def test_a_plan_is_made_once_per_problem(plans, recorders, monkeypatch):
    values, meta = packed()
    x = torch.randn(M, K, dtype=torch.float16)
    asked = []
    real = gemm.choose_config
    monkeypatch.setattr(gemm, "choose_config", lambda *key: asked.append(key) or real(*key))
    for _ in range(3):
        ops.linear(x, values, meta)
    ops.linear(x[:3], values, meta)  # another M: another plan
    assert asked == [(M, N, K, torch.float16, x.device), (3, N, K, torch.float16, x.device)]
    assert plans[asked[0]] == (dot.launch, gemm.heuristic_config(M, N, K, x.device), False)
    assert len(recorders["dot"].calls) == 4


def test_an_sm90_plan_holds_its_planned_launch(plans, monkeypatch):
    """A family with plan_launch (the sm90 one) has its plans hold what plan_launch made for
    them, a wgmma.PlannedLaunch bound to the plan's config, sizes and device."""
    from sparse24.ops import wgmma

    cfg = {"family": "wgmma", "BT": 128, "STAGES": 4, "GROUP": 8}
    monkeypatch.setattr(gemm, "choose_config", lambda *key: cfg)
    key = (300, 512, 256, torch.float16, torch.device("cuda", 1))
    launch, held, takes_rows = gemm._plan(key)
    assert isinstance(launch, wgmma.PlannedLaunch) and held is cfg and launch.cfg is cfg
    assert (launch.n, launch.k, launch.device) == (512, 256, 1)
    assert plans[key] == (launch, cfg, True) and takes_rows  # it reads N-D x and y's rows


class TakesRows:
    """A plan's launch that takes N-D rows (as wgmma.PlannedLaunch does): records what it got."""
    takes_rows = True

    def __init__(self):
        self.calls = []

    def __call__(self, x2, values, meta, bias, y, activation, cfg):
        self.calls.append((x2, y))


@pytest.mark.parametrize("takes_rows", [True, False])
def test_linear_hands_n_d_rows_only_to_a_launch_that_takes_them(plans, monkeypatch, takes_rows):
    """_linear_impl passes a contiguous N-D x as it is, with y made in its final shape, to a
    plan's launch that takes rows (no reshape per call), and 2-D views of the same memory to
    one that does not; an x whose rows are not evenly spaced (permuted) arrives as a contiguous
    2-D copy, a 1-D x as one row, and a misaligned x (2-D or not) as an aligned copy. The
    output always has x's leading dims."""
    values, meta = packed()
    launch = TakesRows()
    launch.takes_rows = takes_rows
    monkeypatch.setattr(gemm, "_plan", lambda key: plans.setdefault(key, (launch, DOT, takes_rows)))
    x = torch.randn(2, 3, K, dtype=torch.float16)
    y = ops.linear(x, values, meta)
    got_x, got_y = launch.calls[-1]
    assert y.shape == (2, 3, N)
    if takes_rows:
        assert got_x is x and got_y is y
    else:
        assert got_x.shape == (6, K) and got_x.data_ptr() == x.data_ptr()
        assert got_y.shape == (6, N) and got_y.data_ptr() == y.data_ptr()
    permuted = torch.randn(3, 2, K, dtype=torch.float16).permute(1, 0, 2)
    assert ops.linear(permuted, values, meta).shape == (2, 3, N)
    got_x, got_y = launch.calls[-1]
    assert got_x.shape == (6, K) and got_x.is_contiguous() and got_y.shape == (6, N)
    assert torch.equal(got_x, permuted.reshape(6, K))
    assert ops.linear(x[0, 0], values, meta).shape == (N,)
    assert launch.calls[-1][0].shape == (1, K)
    # contiguous but 2 bytes past a 16-byte boundary (TMA refuses the address): a copy
    buf = torch.randn(6 * K + 8, dtype=torch.float16)
    for misaligned in (buf[1:1 + 6 * K].view(6, K), buf[1:1 + 6 * K].view(2, 3, K)):
        assert misaligned.is_contiguous() and misaligned.data_ptr() % 16
        assert ops.linear(misaligned, values, meta).shape == (*misaligned.shape[:-1], N)
        got_x = launch.calls[-1][0]
        assert not got_x.data_ptr() % 16 and torch.equal(got_x.reshape(6, K), buf[1:1 + 6 * K].view(6, K))


@pytest.fixture
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(cache_mod.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(cache_mod, "_default_cache", None)
    return tmp_path / "cache"


def test_a_tuning_put_empties_the_plans(plans, recorders, monkeypatch, user_cache):
    """A put (tune() storing its winner) empties the plans, so the next call asks choose_config
    again and runs the new config. On the CPU the tuned lookup answers None, so choose_config
    stands in for it here; tests/test_tune_wiring.py checks that it returns the tuned config."""
    values, meta = packed()
    x = torch.randn(M, K, dtype=torch.float16)
    answer = {"cfg": DOT}
    monkeypatch.setattr(gemm, "choose_config", lambda *key: answer["cfg"])
    ops.linear(x, values, meta)
    answer["cfg"] = DOT_64  # "tuned", not yet stored: the plan still holds
    ops.linear(x, values, meta)
    assert [call[0][0] for call in recorders["dot"].calls] == [N // 32, N // 32]
    key = tuning.TuningKey("Fake GPU", tuning.triton_version(), "float16", N, K, 8)
    tuning.default_cache().put(tuning.CacheEntry(key=key, config=DOT_64, ms=0.01))
    assert plans == {}
    ops.linear(x, values, meta)
    assert recorders["dot"].calls[-1][0][0] == N // 64  # the new config's grid
    # another cache directory is another set of tuned configs: replanned too
    monkeypatch.setenv(cache_mod.CACHE_DIR_ENV, str(user_cache / "other"))
    tuning.default_cache()
    assert plans == {}


def test_the_plans_stay_bounded(plans, monkeypatch):
    monkeypatch.setattr(gemm, "_MAX_PLANS", 4)
    values, meta = packed()
    for m in range(1, 11):
        ops.linear(torch.randn(m, K, dtype=torch.float16), values, meta)
        assert 1 <= len(plans) <= 4
        assert (m, N, K, torch.float16, torch.device("cpu")) in plans


def sparse24_frames(fn) -> list[str]:
    """The functions of sparse24 modules one call of fn enters (bench.diag.eager_frames' tracer)."""
    from bench.diag.eager_frames import frames_of

    return [function for _, function in frames_of(fn)]


@pytest.mark.interpreter
def test_a_repeated_call_checks_looks_up_and_launches(plans):
    """Code shape, not speed: a repeated call of a problem (the first plans and records the
    weight, the second asks for a bound launch, which this family has not) checks the weight's
    record and x, looks the plan up in _linear_impl, checks the device guard and enters the
    family's launch (split_k: its one helper unsplit), and nothing that chooses a config or
    checks the weight rule by rule. 19 frames of ours before the plans (bench/NOTES.md,
    2026-12-04)."""
    values, meta = packed()
    x = torch.randn(M, K, dtype=torch.float16)
    with torch.no_grad():
        ops.linear(x, values, meta)
        ops.linear(x, values, meta)
        frames = sparse24_frames(lambda: ops.linear(x, values, meta))
    assert frames == ["linear", "held", "linear_on_checked_weight", "_linear_impl",
                      "launch_guard", "launch", "split_k"], frames


@pytest.mark.interpreter
def test_reduce_reads_splits_at_their_stride():
    """The split-K reduction (run by the interpreter here) with a split stride larger than M * N,
    as the sm90 family pads each split's rows to whole token tiles: the padding rows (NaN here)
    are never read, and y = act(sum of the splits + bias)."""
    import torch.nn.functional as F

    m, n, rows, splits = 5, 64, 8, 3
    partial = torch.full((splits, rows, n), float("nan"))
    partial[:, :m] = torch.randn(splits, m, n)
    bias = torch.randn(n)
    y = torch.empty(m, n, dtype=torch.float16)
    _splitk.reduce(partial, bias, y, EPILOGUE_CODES["relu"], splits, split_stride=rows * n)
    expected = F.relu(partial[:, :m].sum(0) + bias)
    assert torch.allclose(y.float(), expected, rtol=2e-3, atol=2e-3)


def test_a_plan_chosen_while_the_tuned_configs_change_is_not_kept(plans, recorders, monkeypatch):
    """Another thread's put between choosing and storing: the config chosen from the old
    answers runs this once, but is not kept as the plan (the next call chooses again)."""
    values, meta = packed()
    x = torch.randn(M, K, dtype=torch.float16)
    real = gemm.choose_config

    def choose_while_a_put_lands(*key):
        config = real(*key)
        tuning.cache.changed()  # what a put does
        return config

    monkeypatch.setattr(gemm, "choose_config", choose_while_a_put_lands)
    ops.linear(x, values, meta)
    assert plans == {} and len(recorders["dot"].calls) == 1
    monkeypatch.setattr(gemm, "choose_config", real)
    ops.linear(x, values, meta)
    assert list(plans) == [(M, N, K, torch.float16, x.device)]


def test_a_tuned_answer_looked_up_while_the_configs_change_is_not_kept(monkeypatch):
    """configs.tuned's memo follows the same rule as the plans."""
    monkeypatch.setattr(configs, "_answers", {})
    monkeypatch.setattr(configs, "device_info", lambda index: ("Fake GPU", "9.0", 132))

    class Cache:
        def lookup(self, key):
            tuning.cache.changed()  # a put lands during the lookup
            return None

        def shipped_gpus(self, *gpu):
            return []

    monkeypatch.setattr(tuning, "default_cache", lambda: Cache())
    assert configs.tuned(64, 256, 256, torch.float16, torch.device("cuda", 0)) is None
    assert configs._answers == {}


@pytest.mark.parametrize("config, runnable", [
    ({"BT": 128, "STAGES": 4, "GROUP": 8}, True),
    ({"BT": 128, "STAGES": 4, "GROUP": 8, "ASM_LOOP": 2}, True),
    ({"BT": 32, "STAGES": 4, "GROUP": 8}, True),  # a few-token tile
    ({"BT": 48, "STAGES": 4, "GROUP": 8}, False),  # no m64n48 tile in the kernel
    ({"BT": 16, "STAGES": 4, "GROUP": 8, "ASM_LOOP": 2}, False),  # no asm loop for it
    ({"BT": 16, "STAGES": 12, "GROUP": 8}, False),  # 12 x 20 KB of rings: past 227 KB
    ({"BT": 128, "STAGES": 1, "GROUP": 8, "ASM_LOOP": 2}, False),  # the asm loop needs 2 stages
    ({"BT": 64, "STAGES": 9, "GROUP": 8, "ASM_LOOP": 1}, False),  # ... and at most 8
    ({"BT": 256, "STAGES": 3, "GROUP": 8}, False),  # 3 x 80 KB of rings: past 227 KB
    ({"BT": 128, "STAGES": 4, "GROUP": 8, "SPLIT_K": 2}, False),  # float32 epilogue tiles too
    ({"BT": 128, "STAGES": 3, "GROUP": 8, "SPLIT_K": 2}, True),
])
def test_a_tuned_sm90_config_that_cannot_run_is_not_well_formed(config, runnable):
    """A tuned config read from a file is used only if the kernel can run it: otherwise the
    heuristic serves (configs.tuned never raises, so linear must not either)."""
    assert configs.well_formed({"family": "wgmma", **config}) is runnable


@pytest.mark.interpreter
@pytest.mark.parametrize("m, n, k, split, activation, with_bias", [
    (5, 64, 256, 4, "gelu", True), (33, 96, 192, 3, None, False), (17, 32, 512, 8, "relu", True),
    (1, 128, 128, 2, "gelu_tanh", False)])
def test_fused_reduce_equals_the_reduce_launch(m, n, k, split, activation, with_bias, monkeypatch):
    """The dot kernel run by the interpreter, split K: the in-kernel reduction (FUSED_REDUCE, the
    tile's last split adds the partials) gives y bit for bit as the separate reduce launch, over
    several token blocks, and leaves every tile counter at zero for the next launch. The
    workspace is poisoned with NaN: a split that reduced before the others wrote would show."""
    real_workspace = _splitk.workspace
    monkeypatch.setattr(dot, "workspace",
                        lambda splits, y, n: real_workspace(splits, y, n).fill_(float("nan")))
    torch.manual_seed(m * 1000 + n)
    values, meta = ops.compress(ops.prune_24(torch.randn(n, k, dtype=torch.float16)))
    x = torch.randn(m, k, dtype=torch.float16) / k ** 0.5
    bias = torch.randn(n) if with_bias else None
    code = EPILOGUE_CODES[activation]
    cfg = {"family": "dot", "BLOCK_M": 16, "BLOCK_N": 32, "SPLIT_K": split, "num_warps": 4,
           "num_stages": 2}
    two_pass = gemm.run_config(x, values, meta, bias, code, cfg)
    for _ in range(2):  # the second launch finds the counters the first left
        fused = gemm.run_config(x, values, meta, bias, code, cfg | {"FUSED_REDUCE": 1},
                                out=torch.full((m, n), float("nan"), dtype=torch.float16))
        assert torch.equal(fused, two_pass)
    assert not _splitk.counters(torch.device("cpu"), 1).any()
    assert gemm.run_config(x, values, meta, bias, code, cfg | {"SPLIT_K": 1}).sub(two_pass).abs().max() < 2e-2


@pytest.mark.parametrize("m", [0, 1, 5, 16, 17, 64])
@pytest.mark.parametrize("n,k", [(768, 768), (3072, 768), (4096, 4096), (14336, 4096),
                                 (4096, 14336), (192, 1024), (11008, 4096), (256, 64),
                                 (256, 192)])
@pytest.mark.parametrize("sms", [108, 132])
def test_mma_few_token_heuristic_fills_two_programs_an_sm(m, n, k, sms):
    """Up to 64 tokens: A_TILE 2 (two programs of 128 threads an SM), the most splits, a power of
    two, that keep programs within two an SM and are no more than the pairs of chunks."""
    from sparse24.ops.families import mma

    cfg = mma.heuristic(m, n, k, sms)
    assert cfg["A_TILE"] == 2 and mma.fits(cfg, n, k)
    tiles = (n // cfg["BLOCK_F"]) * -(-m // cfg["BLOCK_T"])
    split = cfg["SPLIT_K"]
    assert split & (split - 1) == 0
    assert split == 1 or (tiles * split <= 2 * sms and k // 64 // split >= 2)
    doubled = 2 * split  # the next power of two breaks one of the two limits
    assert max(1, tiles) * doubled > 2 * sms or k // 64 // doubled < 2


# ---------------------------------------------------------------------- direct launches
def pointers(args):
    """The arguments as the direct path passes them: tensors as their data_ptr()."""
    return tuple(a.data_ptr() if isinstance(a, torch.Tensor) else a for a in args)


@pytest.fixture
def direct(monkeypatch, recorders):
    """Every family's DirectLaunches on: the first launch of a call shape goes to the recorders
    (CachedLaunch; their compiled kernel is their name), the next ones to a recording pointer
    launcher, as on a GPU."""
    from sparse24.ops import direct as _direct

    launched = []

    def pointer_launcher(name):
        return lambda *grid_stream_args: launched.append((name, grid_stream_args))

    monkeypatch.setattr(_direct, "pointer_launcher", pointer_launcher)
    monkeypatch.setattr(_direct, "direct_launch_allowed", lambda: True)
    for module, attribute in ((mma, "_direct"), (dot, "_direct"), (_splitk, "_reduce_direct")):
        fresh = _direct.DirectLaunches()
        fresh.off = False
        monkeypatch.setattr(module, attribute, fresh)
        monkeypatch.setattr(module, "current_device", lambda: 0)
        monkeypatch.setattr(module, "current_stream", lambda device: "stream")
    return launched


@pytest.mark.parametrize("name", ["mma", "dot"])
@pytest.mark.parametrize("split_k, dtype, with_bias, activation, fused", CASES)
def test_direct_launch_passes_what_the_first_launch_did(direct, recorders, name, split_k, dtype,
                                                          with_bias, activation, fused):
    """The second call of a call shape launches straight through the compiled kernel's C
    launcher with the first call's grid, ints and constexprs and its tensors' pointers (the
    float32 partials are allocated per call); so does the split-K reduction. y with rows wider
    than N: the row stride must reach both kernels."""
    x2, values, meta, bias, _ = problem(dtype, with_bias)
    y = torch.empty(M, N + 64, dtype=dtype)[:, :N]
    act = EPILOGUE_CODES[activation]
    cfg = (MMA if name == "mma" else DOT) | {"SPLIT_K": split_k, "FUSED_REDUCE": fused}
    partial_at = 6 if name == "mma" else 5
    family_launch(name)(x2, values, meta, bias, y, act, cfg)
    assert not direct and len(recorders[name].calls) == 1
    for _ in range(2):
        family_launch(name)(x2, values, meta, bias, y, act, cfg)
    assert len(recorders[name].calls) == 1  # no second CachedLaunch call
    [(grid, args, constexprs, _, _)] = recorders[name].calls
    kernel_calls = [call for who, call in direct if who == name]
    assert len(kernel_calls) == 2
    expected = list(pointers(args))
    for call in kernel_calls:
        found = list(call)
        assert found[:4] == [*grid, "stream"]
        found, expected[partial_at] = found[4:], found[4 + partial_at]  # a fresh workspace
        if split_k == 1:
            assert found[partial_at] == y.data_ptr()
        assert tuple(found) == (*expected, *constexprs)
    reduce_calls = [call for who, call in direct if who == "reduce"]
    if split_k == 1 or fused:
        assert not reduce_calls and not recorders["reduce"].calls
    else:
        [(rgrid, rargs, rconstexprs, _, _)] = recorders["reduce"].calls
        assert len(reduce_calls) == 2
        for call, kernel_call in zip(reduce_calls, kernel_calls):
            rexpected = list(pointers(rargs))
            rexpected[0] = call[4]  # the partials of that call
            assert call == (*rgrid, "stream", *rexpected, *rconstexprs)
            # the reduction reads the partials the kernel wrote, not y
            assert call[4] == kernel_call[4 + partial_at] != y.data_ptr()


def test_direct_launch_only_for_the_same_shape_config_and_alignment(direct, recorders):
    """What is not in the key goes back to CachedLaunch: another config dict (even an equal
    one), another row stride, a bias whose pointer is not 16-byte aligned (every such call), and
    every call while direct launches are off (a launch hook)."""
    from sparse24.ops import direct as _direct

    x2, values, meta, _, y = problem(torch.float16, False)
    cfg = dict(MMA)
    launch = family_launch("mma")
    launch(x2, values, meta, None, y, 0, cfg)
    launch(x2, values, meta, None, y, 0, cfg)
    assert len(recorders["mma"].calls) == 1 and len(direct) == 1
    launch(x2, values, meta, None, y, 0, dict(MMA))  # equal, but another dict
    launch(x2.contiguous(), values, meta, None, y, 0, cfg)  # row stride 256, not 320
    assert len(recorders["mma"].calls) == 3
    bias = torch.randn(N + 1, dtype=torch.float16)[1:]  # 2 bytes past an aligned address
    for _ in range(2):
        launch(x2, values, meta, bias, y, 0, cfg)
    assert len(recorders["mma"].calls) == 5 and len(direct) == 1
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_direct, "direct_launch_allowed", lambda: False)
        launch(x2, values, meta, None, y, 0, cfg)
    assert len(recorders["mma"].calls) == 6 and len(direct) == 1
    launch(x2, values, meta, None, y, 0, cfg)
    assert len(direct) == 2


def test_direct_launches_keep_their_owner_and_a_bound(monkeypatch):
    """An entry answers only the owner it was learned for (a config dict held by id(): a new
    dict at a recycled address must not find another config's launcher); a launcher Triton's
    launcher cannot give is remembered as False; the memo is emptied when full."""
    from sparse24.ops import direct as _direct

    monkeypatch.setattr(_direct, "direct_launch_allowed", lambda: True)
    monkeypatch.setattr(_direct, "pointer_launcher", lambda compiled: compiled and "launcher")
    memo = _direct.DirectLaunches()
    owner, other = {"a": 1}, {"a": 1}
    memo.learn(("key",), "kernel", ("derived",), owner)
    assert memo.get(("key",), owner) == ("launcher", "derived")
    assert memo.get(("key",), other) is None and memo.get(("another",), owner) is None
    memo.learn(("none",), None, (), owner)  # no compiled kernel (the interpreter)
    assert memo.get(("none",), owner) is False
    monkeypatch.setattr(_direct, "direct_launch_allowed", lambda: False)
    assert memo.get(("key",), owner) is False
    monkeypatch.setattr(_direct, "direct_launch_allowed", lambda: True)
    monkeypatch.setattr(_direct, "_MAX_SHAPES", 2)
    memo.learn(("third",), "kernel", (), owner)
    assert list(memo.known) == [("third",)]


def _one_field_apart(dtype=torch.float16, n=N, k=K, m=M, x_stride=320, y_cols=N, bias=None):
    values, meta = ops.compress(ops.prune_24(torch.randn(n, k, dtype=dtype)))
    x2 = torch.randn(m, x_stride, dtype=dtype)[:, :k]
    y = torch.empty(m, y_cols, dtype=dtype)[:, :n]
    return x2, values, meta, bias, y


@pytest.mark.parametrize("name", ["mma", "dot"])
def test_direct_launch_key_tells_apart_every_field(direct, recorders, monkeypatch, name):
    """Each field of a family's key, changed alone, makes a call shape of its own: its first call
    takes CachedLaunch (compiling what Triton specializes), its second goes direct. A field left
    out of the key would send the first call of the changed shape straight to a launcher
    compiled for another one."""
    cfg = MMA | {"SPLIT_K": 2} if name == "mma" else DOT | {"SPLIT_K": 2}
    launch = family_launch(name)
    base = _one_field_apart()
    variants = {
        "M": _one_field_apart(m=M + 1),
        "N": _one_field_apart(n=2 * N),
        "K": _one_field_apart(k=2 * K),
        "x2's row stride": _one_field_apart(x_stride=K),
        "y's row stride": _one_field_apart(y_cols=N + 64),
        "dtype": _one_field_apart(dtype=torch.bfloat16),
        "a bias": _one_field_apart(bias=torch.randn(N, dtype=torch.float16)),
        "a float32 bias": _one_field_apart(bias=torch.randn(N)),
    }
    launch(*base[:4], base[4], 0, cfg)
    launch(*base[:4], base[4], 0, cfg)
    assert len(recorders[name].calls) == 1
    calls = 1
    for field, args in [*variants.items(), ("activation", base), ("config", base)]:
        act = 2 if field == "activation" else 0
        config = dict(cfg) if field == "config" else cfg
        for _ in range(2):
            launch(*args[:4], args[4], act, config)
        calls += 1
        assert len(recorders[name].calls) == calls, field
    y = base[4].to(torch.bfloat16)  # y's dtype alone
    for _ in range(2):
        launch(*base[:4], y, 0, cfg)
    assert len(recorders[name].calls) == calls + 1, "y's dtype"
    monkeypatch.setattr(FAMILIES[name], "current_device", lambda: 1)  # another device
    for _ in range(2):
        launch(*base[:4], base[4], 0, cfg)
    assert len(recorders[name].calls) == calls + 2, "device"


def test_reduce_direct_key_tells_apart_every_field(direct, recorders):
    """The split-K reduction's key, one field at a time (as above)."""
    y = torch.empty(M, N, dtype=torch.float16)
    partial = torch.randn(4, M, N)

    def call(partial=partial, bias=None, y=y, activation=0, splits=4, split_stride=None):
        for _ in range(2):
            _splitk.reduce(partial, bias, y, activation, splits, split_stride)

    call()
    assert len(recorders["reduce"].calls) == 1
    variants = {
        "M": dict(y=torch.empty(M - 1, N, dtype=torch.float16)),
        "N": dict(y=torch.empty(M, N // 2, dtype=torch.float16)),
        "y's row stride": dict(y=torch.empty(M, N + 64, dtype=torch.float16)[:, :N]),
        "y's dtype": dict(y=torch.empty(M, N, dtype=torch.bfloat16)),
        "the split stride": dict(split_stride=M * N + 128),
        "splits": dict(splits=2),
        "a bias": dict(bias=torch.randn(N, dtype=torch.float16)),
        "a float32 bias": dict(bias=torch.randn(N)),
        "activation": dict(activation=2),
    }
    for calls, (field, changed) in enumerate(variants.items(), start=2):
        call(**changed)
        assert len(recorders["reduce"].calls) == calls, field
