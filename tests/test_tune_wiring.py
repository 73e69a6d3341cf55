"""The tuner wired to the op: configs.tuned lookups, choose_config's guard, tune(), shipped defaults.

CPU only: CUDA device properties are faked through configs.device_info, and tune() runs the
"dot" family through the Triton interpreter on a tiny problem with an injected timer.
"""

import ast
import importlib.util
import json
import warnings
from pathlib import Path

import pytest
import torch

from sparse24 import tuning
from sparse24.ops import configs, gemm
from sparse24.ops import tune as tune_mod
from sparse24.tuning import cache as cache_mod

ROOT = Path(__file__).resolve().parents[1]
CUDA0 = torch.device("cuda", 0)
FAKE_GPU = "Fake GPU 9000"
DOT_A = {"family": "dot", "BLOCK_M": 16, "BLOCK_N": 32, "SPLIT_K": 1, "num_warps": 4, "num_stages": 2}
DOT_B = {"family": "dot", "BLOCK_M": 16, "BLOCK_N": 32, "SPLIT_K": 2, "num_warps": 4, "num_stages": 2}


@pytest.fixture
def user_cache(tmp_path, monkeypatch):
    """A fresh, empty user cache directory and a fresh process-wide cache."""
    monkeypatch.setenv(cache_mod.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(cache_mod, "_default_cache", None)
    return tmp_path / "cache"


def fake_device(monkeypatch, name=FAKE_GPU, capability="8.0", sms=108):
    monkeypatch.setattr(configs, "device_info", lambda index: (name, capability, sms))


def put(gpu, n, k, bucket, config, dtype="float16"):
    key = tuning.TuningKey(gpu, tuning.triton_version(), dtype, n, k, bucket)
    tuning.default_cache().put(tuning.CacheEntry(key=key, config=config, ms=0.01))


# ------------------------------------------------------------------------------- configs.tuned
def test_tuned_returns_the_cached_config_of_its_bucket(user_cache, monkeypatch):
    fake_device(monkeypatch)
    assert configs.tuned(9, 64, 256, torch.float16, CUDA0) is None
    put(FAKE_GPU, 64, 256, 16, DOT_B | {"BLOCK_N": 64})  # seen at once: no memo to clear
    assert configs.tuned(9, 64, 256, torch.float16, CUDA0) == DOT_B | {"BLOCK_N": 64}
    assert configs.tuned(16, 64, 256, torch.float16, CUDA0) == DOT_B | {"BLOCK_N": 64}
    assert configs.tuned(9, 64, 256, torch.bfloat16, CUDA0) is None  # another dtype
    assert configs.tuned(9, 64, 512, torch.float16, CUDA0) is None  # another K
    # no CUDA device or no tokens: the heuristic
    assert configs.tuned(9, 64, 256, torch.float16, torch.device("cpu")) is None
    assert configs.tuned(0, 64, 256, torch.float16, CUDA0) is None


def test_tuned_nearest_bucket_within_4x_only(user_cache, monkeypatch):
    fake_device(monkeypatch)
    put(FAKE_GPU, 64, 256, 64, DOT_A | {"BLOCK_N": 64})
    assert configs.tuned(256, 64, 256, torch.float16, CUDA0) is not None  # 4x: used
    assert configs.tuned(16, 64, 256, torch.float16, CUDA0) is not None  # 1/4x: used
    assert configs.tuned(512, 64, 256, torch.float16, CUDA0) is None  # 8x: heuristic
    assert configs.tuned(8, 64, 256, torch.float16, CUDA0) is None  # 1/8x: heuristic


MALFORMED = [
    {"family": "wgmma2", "BLOCK_M": 64},  # unknown family
    {"BLOCK_M": 16, "BLOCK_N": 32},  # no family
    DOT_A | {"BLOCK_M": 24},  # not a power of two
    DOT_A | {"num_stages": 0},  # not positive
    {k: v for k, v in DOT_A.items() if k != "num_warps"},  # missing field
]
ILL_FITTING = [
    DOT_A | {"BLOCK_N": 64},  # BLOCK_N does not divide N = 96
    DOT_A | {"SPLIT_K": 8},  # more K splits than 64-wide chunks of K = 256
]


@pytest.mark.parametrize("config", MALFORMED + ILL_FITTING)
def test_bad_cached_config_is_not_launched(user_cache, monkeypatch, config):
    fake_device(monkeypatch)
    put(FAKE_GPU, 96, 256, 128, config)
    # configs.tuned drops malformed configs, gemm.choose_config those that do not fit the weight
    assert (configs.tuned(128, 96, 256, torch.float16, CUDA0) is None) == (config in MALFORMED)
    heuristic = gemm.heuristic_config(128, 96, 256, CUDA0)  # N=96: "dot"
    assert gemm.choose_config(128, 96, 256, torch.float16, CUDA0) == heuristic


def test_well_formed_cached_config_is_launched(user_cache, monkeypatch):
    fake_device(monkeypatch)
    put(FAKE_GPU, 96, 256, 128, DOT_A)
    assert configs.well_formed(DOT_A)
    assert gemm.choose_config(128, 96, 256, torch.float16, CUDA0) == DOT_A


def test_tuned_never_raises(user_cache, monkeypatch):
    fake_device(monkeypatch)
    path = tuning.TuningCache().path_for(FAKE_GPU, tuning.triton_version())
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # even a warning turned into an error must not escape
        assert configs.tuned(16, 96, 256, torch.float16, CUDA0) is None

    def broken(index):
        raise RuntimeError("CUDA driver exploded")

    monkeypatch.setattr(configs, "device_info", broken)
    assert configs.tuned(16, 96, 256, torch.float16, CUDA0) is None


def test_choose_config_ignores_ill_fitting_cached_config(monkeypatch):
    """gemm.choose_config's own guard: a tuned config that does not fit is not used."""
    fits = DOT_A | {"BLOCK_N": 16}
    bad = DOT_A | {"BLOCK_N": 32}  # 32 does not divide N = 48
    answer = {}
    monkeypatch.setattr(configs, "tuned", lambda m, n, k, dtype, device: answer.get("cfg"))
    fake_device(monkeypatch)  # the heuristic asks for the SM count on "cuda"
    heuristic = gemm.heuristic_config(128, 48, 128, CUDA0)
    answer["cfg"] = bad
    assert gemm.choose_config(128, 48, 128, torch.float16, CUDA0) == heuristic
    answer["cfg"] = DOT_A | {"BLOCK_N": 16, "SPLIT_K": 4}  # K = 128 has 2 chunks
    assert gemm.choose_config(128, 48, 128, torch.float16, CUDA0) == heuristic
    answer["cfg"] = fits
    assert gemm.choose_config(128, 48, 128, torch.float16, CUDA0) == fits


# ---------------------------------------------------------------------------- shipped defaults
def test_no_shipped_entry_from_before_the_a_tile_2_kernel():
    """The H100 file (few-token mma configs tuned 2026-11-21) was removed: its configs load values
    one atom at a time (A_TILE 1), and on the H200 the best A_TILE 1 config of each of its shapes
    lost to the untuned rule by 7-23% (bench/results/h200/gemm_variants.jsonl, run
    20261205T021452Z-94a792); the H200 took them through the same-kind rule. A shipped mma entry
    must say which A load it was tuned with."""
    assert cache_mod.DEFAULTS_DIR.is_dir()  # where the shipped files would be: the loop looks there
    for path in sorted(cache_mod.DEFAULTS_DIR.glob("*.json")):
        doc = json.loads(path.read_text())
        stale = [e["key"] for e in doc["entries"]
                 if e["config"]["family"] == "mma" and "A_TILE" not in e["config"]]
        assert not stale, (path.name, stale[:3])


def test_h200_without_shipped_entries_takes_the_heuristic(user_cache, monkeypatch):
    fake_device(monkeypatch, "NVIDIA H200", "9.0", 132)
    assert configs.tuned(16, 4096, 4096, torch.float16, CUDA0) is None


def test_sibling_gpu_uses_the_other_defaults(user_cache, monkeypatch, tmp_path):
    """A shipped file of a GPU of the same kind (capability and SM count) serves where this GPU
    has no entry of its own; its own entry wins; another kind shares nothing."""
    sibling = DOT_A | {"SPLIT_K": 8}
    defaults = tmp_path / "defaults"
    defaults.mkdir()
    key = tuning.TuningKey("NVIDIA H100 80GB HBM3", "3.6.0", "float16", 4096, 4096, 16)
    (defaults / "nvidia-h100-80gb-hbm3.json").write_text(json.dumps({
        "format": "sparse24-tuning", "schema_version": 1, "gpu": key.gpu, "triton": key.triton,
        "capability": "9.0", "sm_count": 132,
        "entries": [{"key": key._asdict(), "config": sibling, "ms": 0.01}]}))
    monkeypatch.setattr(cache_mod, "DEFAULTS_DIR", defaults)
    monkeypatch.setattr(cache_mod, "_default_cache", None)
    fake_device(monkeypatch, "NVIDIA H200", "9.0", 132)
    assert configs.tuned(16, 4096, 4096, torch.float16, CUDA0) == sibling
    # the GPU's own entry wins over the sibling's
    own = DOT_A | {"BLOCK_N": 64, "SPLIT_K": 4}
    put("NVIDIA H200", 4096, 4096, 16, own)
    assert configs.tuned(16, 4096, 4096, torch.float16, CUDA0) == own
    # another SM count (H100 PCIe) or another architecture: no sharing
    for capability, sms in [("9.0", 114), ("8.0", 132)]:
        fake_device(monkeypatch, "NVIDIA H100 PCIe", capability, sms)
        assert configs.tuned(16, 4096, 4096, torch.float16, CUDA0) is None


def _load_make_defaults():
    spec = importlib.util.spec_from_file_location("make_defaults", ROOT / "bench" / "make_defaults.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_defaults_picks_fastest_correct(tmp_path):
    fast_wrong = DOT_A | {"num_stages": 4}
    rows = [
        {"gpu": "Test GPU", "m": 16, "n": 64, "k": 256, "cfg": DOT_A, "ms": 0.02, "err": 2e-4},
        {"gpu": "Test GPU", "m": 16, "n": 64, "k": 256, "cfg": DOT_B, "ms": 0.01, "err": 2e-4},
        {"gpu": "Test GPU", "m": 16, "n": 64, "k": 256, "cfg": fast_wrong, "ms": 0.001, "err": 0.5},
        {"gpu": "Test GPU", "m": 16, "n": 64, "k": 256, "cfg": DOT_A | {"SPLIT_K": 4},
         "error": "WRONG rel err 1e-1"},
        {"gpu": "Test GPU", "m": 300, "n": 64, "k": 256, "cfg": DOT_A, "ms": 0.05, "err": 2e-4},
    ]
    sweep = tmp_path / "sweep.jsonl"
    sweep.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _load_make_defaults().main([str(sweep), "--dest", str(tmp_path / "out")]) == 0
    doc = json.loads((tmp_path / "out" / "test-gpu.json").read_text())
    assert doc["gpu"] == "Test GPU" and doc["triton"] == "3.6.0"
    entries = cache_mod.read_file(tmp_path / "out" / "test-gpu.json", "Test GPU", None)
    small = entries["entries"][tuning.TuningKey("Test GPU", "*", "float16", 64, 256, 16)]
    assert small.config == DOT_B and small.n_candidates == 4 and small.n_rejected == 2
    assert entries["entries"][tuning.TuningKey("Test GPU", "*", "float16", 64, 256, 512)].config == DOT_A


# ------------------------------------------------------------------------------------ tune()
@pytest.fixture
def two_candidates(monkeypatch):
    monkeypatch.setattr(configs, "candidates", lambda m, n, k, on_gpu, wgmma_side, sm90: [DOT_A, DOT_B])


def test_tune_picks_correct_config_and_stores_it(user_cache, two_candidates, monkeypatch, device):
    times = {json.dumps(DOT_A): 2.0, json.dumps(DOT_B): 1.0}
    seen = []
    real_run = gemm.run_config

    def recording_run(x2, values, meta, bias, activation, cfg, out=None):
        seen.append(cfg)
        return real_run(x2, values, meta, bias, activation, cfg, out=out)

    monkeypatch.setattr(gemm, "run_config", recording_run)

    def timer(fn):
        fn()
        return times[json.dumps(seen[-1])]

    fake_device(monkeypatch, tune_mod.CPU_GPU_NAME)
    assert configs.tuned(4, 32, 128, torch.float16, CUDA0) is None
    result = tune_mod.tune(32, 128, 4, torch.float16, device=device, progress=False, timer=timer)
    assert result.config == DOT_B and result.ms == 1.0 and result.n_rejected == 0
    assert result.key.m_bucket == 4
    if device == "cpu":
        assert result.key.gpu == tune_mod.CPU_GPU_NAME
        # the op's next lookup sees the result at once (an op on a GPU of that name would use it)
        assert configs.tuned(4, 32, 128, torch.float16, CUDA0) == DOT_B
    # stored in the user cache file under the tmp dir, readable by a fresh cache
    fresh = tuning.TuningCache(user_cache)
    assert fresh.lookup(result.key).config == DOT_B
    assert list(user_cache.glob("*.json"))


def test_tune_rejects_fast_wrong_config(user_cache, two_candidates, monkeypatch, device):
    real_run = gemm.run_config
    seen = []

    def corrupting_run(x2, values, meta, bias, activation, cfg, out=None):
        seen.append(cfg)
        y = real_run(x2, values, meta, bias, activation, cfg, out=out)
        if cfg == DOT_B:
            y[1, 3] += 1.0 + y[1, 3].abs() * 4  # one wrong element: a subtle bug
        return y

    monkeypatch.setattr(gemm, "run_config", corrupting_run)

    def timer(fn):
        fn()
        return 0.001 if seen[-1] == DOT_B else 1.0  # the wrong config would be fastest

    result = tune_mod.tune(32, 128, 4, torch.bfloat16, device=device, progress=False, timer=timer)
    assert result.config == DOT_A
    assert [(r.config, r.stage) for r in result.rejected] == [(DOT_B, "check")]
    assert "relative error" in result.rejected[0].reason
    assert tuning.TuningCache(user_cache).lookup(result.key).config == DOT_A


def test_tune_rejects_unwritten_output(user_cache, two_candidates, monkeypatch, device):
    """A config that skips part of the output (left as the NaN poison) fails its check."""
    real_run = gemm.run_config

    def lazy_run(x2, values, meta, bias, activation, cfg, out=None):
        if cfg == DOT_A and out is not None:
            real_run(x2[:2], values, meta, bias, activation, cfg, out=out[:2])
            return out
        return real_run(x2, values, meta, bias, activation, cfg, out=out)

    monkeypatch.setattr(gemm, "run_config", lazy_run)
    result = tune_mod.tune(32, 128, 4, torch.float16, device=device, progress=False,
                           timer=lambda fn: 1.0, store=False)
    assert result.config == DOT_B and result.rejected[0].config == DOT_A


def test_tune_follows_the_sm90_rule(user_cache, monkeypatch, device):
    """tune() asks for the candidates of the side of gemm.uses_wgmma that its M falls on."""
    asked = []

    def candidates(m, n, k, on_gpu, wgmma_side, sm90):
        asked.append(wgmma_side)
        return [DOT_A]

    monkeypatch.setattr(configs, "candidates", candidates)
    for side in (True, False):
        monkeypatch.setattr(gemm, "uses_wgmma", lambda m, dev, side=side: side)
        tune_mod.tune(32, 128, 4, torch.float16, device=device, progress=False,
                      timer=lambda fn: 1.0, store=False)
    assert asked == [True, False]


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The ``modules`` a file imports, at module level or inside functions ("from package
    import submodule" counts as the submodule, not the package's __init__)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            found |= subs or {node.module}
    return found & modules


def test_no_import_circle_through_the_tuning_layer():
    """gemm -> configs -> families, tuning; tune -> configs, gemm; nothing back (lazy imports
    included)."""
    modules = {}
    for package in ("sparse24.ops", "sparse24.ops.families", "sparse24.tuning"):
        for p in (ROOT / package.replace(".", "/")).glob("*.py"):
            modules[package if p.stem == "__init__" else f"{package}.{p.stem}"] = p
    graph = {name: _imports(path, set(modules)) for name, path in modules.items()}

    def reaches(start, goal, seen=()):
        return any(dep == goal or (dep not in seen and reaches(dep, goal, (*seen, dep)))
                   for dep in graph[start])

    assert not [name for name in graph if reaches(name, name)]
    assert "sparse24.ops.configs" in graph["sparse24.ops.gemm"]
    assert "sparse24.ops.families" in graph["sparse24.ops.configs"]  # the families are below it
    assert "sparse24.ops.tune" in graph["sparse24.tuning.cli"]  # found even inside a function
