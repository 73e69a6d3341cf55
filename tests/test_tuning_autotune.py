"""autotune: correctness before speed, failures recorded, results cached."""

import math

import pytest
import torch

from sparse24.tuning.autotune import REP_MS, WARMUP_MS, NoValidConfigError, autotune
from sparse24.tuning.cache import TuningCache, TuningCacheWarning, TuningKey

KEY = TuningKey("NVIDIA H100 80GB HBM3", "3.6.0", "float16", n=48, k=200, m_bucket=8)


class OutOfResources(Exception):
    """Stands in for triton.runtime.errors.OutOfResources (same name, raised at launch)."""


class FakeGemm:
    """A GEMM "kernel" with config-dependent behaviour, in plain torch.

    BLOCK_K splits the K loop; the "skip_tail" family forgets the remainder when BLOCK_K does
    not divide K (a classic wrong-but-fast bug); BLOCK_K=512 "runs out of shared memory".
    ``run`` records the last config so that a fake timer can charge each config its own time.
    """

    def __init__(self, m=7, n=KEY.n, k=KEY.k):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(m, k, generator=g, dtype=torch.float64)
        self.w = torch.randn(n, k, generator=g, dtype=torch.float64)
        self.ref = self.x @ self.w.T
        self.last = None
        self.launches = []

    def run(self, cfg):
        self.last = cfg
        self.launches.append(cfg["BLOCK_K"])
        bk = cfg["BLOCK_K"]
        if bk > 256:
            raise OutOfResources(f"out of resource: shared memory, Required: {bk * 256}, "
                                 "Hardware limit: 232448\n(long compiler listing follows)")
        stop = self.x.shape[1]
        if cfg["family"] == "skip_tail":
            stop -= stop % bk
        out = torch.zeros_like(self.ref)
        for k0 in range(0, stop, bk):
            out += self.x[:, k0:k0 + bk] @ self.w[:, k0:k0 + bk].T
        return out

    def check(self, cfg):
        out = self.run(cfg)
        err = (out - self.ref).abs().max().item()
        return None if err <= 1e-9 else f"max abs error {err:.3g} > 1e-9"


def cfg(bk, family="plain"):
    return {"BLOCK_K": bk, "family": family}


def timer_from(gemm, times):
    """A timer that charges each config the time listed for its (BLOCK_K, family): it runs
    ``fn`` once and reads which config that launched."""
    def timer(fn):
        fn()
        return times[(gemm.last["BLOCK_K"], gemm.last["family"])]
    return timer


@pytest.fixture
def gemm():
    return FakeGemm()


@pytest.fixture
def cache(tmp_path):
    return TuningCache(tmp_path / "cache", defaults_dir=tmp_path / "no_defaults")


def test_fast_wrong_candidate_never_chosen(gemm, cache):
    candidates = [cfg(8), cfg(64, "skip_tail"), cfg(50), cfg(64)]
    # The wrong one (K=200 is not a multiple of 64, so it drops 8 columns) is by far the fastest.
    times = {(8, "plain"): 3.0, (64, "skip_tail"): 0.1, (50, "plain"): 2.0, (64, "plain"): 1.0}
    result = autotune(KEY, candidates, gemm.run, gemm.check, timer=timer_from(gemm, times),
                      progress=False, cache=cache)
    assert result.config == cfg(64)
    assert result.ms == 1.0
    assert [r.config for r in result.rejected] == [cfg(64, "skip_tail")]
    assert result.rejected[0].stage == "check"
    assert "max abs error" in result.rejected[0].reason
    assert sorted(ms for _, ms in result.timings) == [1.0, 2.0, 3.0]
    assert (result.n_candidates, result.n_rejected) == (4, 1)


def test_compile_errors_recorded_and_skipped(gemm, cache):
    candidates = [cfg(512), cfg(40), cfg(1024), cfg(25)]
    times = {(40, "plain"): 1.5, (25, "plain"): 2.5}
    result = autotune(KEY, candidates, gemm.run, gemm.check, timer=timer_from(gemm, times),
                      progress=False, cache=cache)
    assert result.config == cfg(40)
    assert [r.config["BLOCK_K"] for r in result.rejected] == [512, 1024]
    reason = result.rejected[0].reason
    assert reason.startswith("OutOfResources: out of resource: shared memory")
    assert "listing" not in reason  # first line only
    # Rejected configs are launched once (their check) and never timed.
    assert gemm.launches.count(512) == 1 and gemm.launches.count(1024) == 1


def test_result_stored_with_timing_and_rejections(gemm, cache, tmp_path):
    times = {(40, "plain"): 1.5, (64, "skip_tail"): 0.2}
    autotune(KEY, [cfg(40), cfg(64, "skip_tail"), cfg(4096)], gemm.run, gemm.check,
             timer=timer_from(gemm, times), progress=False, cache=cache)
    stored = TuningCache(tmp_path / "cache", defaults_dir=tmp_path / "no_defaults").lookup(KEY)
    assert stored.config == cfg(40)
    assert (stored.ms, stored.n_candidates, stored.n_rejected) == (1.5, 3, 2)


def test_all_fail_raises_clear_error(gemm, cache):
    candidates = [cfg(64, "skip_tail"), cfg(512), cfg(48, "skip_tail")]
    with pytest.raises(NoValidConfigError, match="none of the 3 candidates is valid") as info:
        autotune(KEY, candidates, gemm.run, gemm.check, timer=timer_from(gemm, {}), progress=False,
                 cache=cache)
    text = str(info.value)
    assert "N=48, K=200, M bucket 8" in text
    assert "[check] BLOCK_K=64 family=skip_tail: max abs error" in text
    assert "[check] BLOCK_K=512 family=plain: OutOfResources" in text
    assert cache.lookup(KEY) is None
    assert [r.config["BLOCK_K"] for r in info.value.rejected] == [64, 512, 48]


def test_timer_failures_and_bad_times_reject(gemm, cache):
    def timer(fn):
        fn()
        bk = gemm.last["BLOCK_K"]
        if bk == 8:
            raise RuntimeError("CUDA error: launch timeout")
        return {20: math.nan, 40: 0.0, 25: 4.0}[bk]

    result = autotune(KEY, [cfg(8), cfg(20), cfg(40), cfg(25)], gemm.run, gemm.check, timer=timer,
                      progress=False, cache=cache)
    assert result.config == cfg(25)
    assert [(r.config["BLOCK_K"], r.stage) for r in result.rejected] == [
        (8, "time"), (20, "time"), (40, "time")]
    assert result.rejected[0].reason == "RuntimeError: CUDA error: launch timeout"


def test_duplicates_checked_once(gemm, cache):
    times = {(40, "plain"): 1.0, (25, "plain"): 2.0}
    result = autotune(KEY, [cfg(40), dict(cfg(40)), cfg(25)], gemm.run, gemm.check,
                      timer=timer_from(gemm, times), progress=False, cache=cache)
    assert result.n_candidates == 2


def test_check_must_return_none_or_text(gemm, cache):
    with pytest.raises(TypeError, match="check\\(\\) must return None"):
        autotune(KEY, [cfg(40)], gemm.run, lambda c: True, timer=timer_from(gemm, {}),
                 progress=False, cache=cache)
    with pytest.raises(ValueError, match="no candidates"):
        autotune(KEY, [], gemm.run, gemm.check, progress=False, cache=cache)
    with pytest.raises(ValueError, match="int or a str"):
        autotune(KEY, [{"BLOCK_K": 32.0}], gemm.run, gemm.check, progress=False, cache=cache)


def test_default_timer_is_do_bench_median(gemm, cache, monkeypatch):
    import triton.testing

    calls = []

    def fake_do_bench(fn, warmup, rep, return_mode):
        calls.append((warmup, rep, return_mode))
        fn()
        return {40: 2.0, 25: 1.0}[gemm.last["BLOCK_K"]]

    monkeypatch.setattr(triton.testing, "do_bench", fake_do_bench)
    result = autotune(KEY, [cfg(40), cfg(25)], gemm.run, gemm.check, progress=True, cache=cache)
    assert result.config == cfg(25)
    assert calls == [(WARMUP_MS, REP_MS, "median")] * 2


def test_unwritable_cache_warns_but_returns(gemm, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = TuningCache(blocker / "sub", defaults_dir=tmp_path / "no_defaults")  # cannot mkdir
    with pytest.warns(TuningCacheWarning, match="could not save"):
        result = autotune(KEY, [cfg(40)], gemm.run, gemm.check,
                          timer=timer_from(gemm, {(40, "plain"): 1.0}), progress=False, cache=cache)
    assert result.config == cfg(40)
    assert cache.lookup(KEY).config == cfg(40)  # still served from memory


def test_store_false_leaves_cache_alone(gemm, cache):
    autotune(KEY, [cfg(40)], gemm.run, gemm.check, timer=timer_from(gemm, {(40, "plain"): 1.0}),
             progress=False, cache=cache, store=False)
    assert cache.lookup(KEY) is None
