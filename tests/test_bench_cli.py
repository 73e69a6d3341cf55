"""The benches as a tool: every standing bench and diagnostic runs as ``python -m bench.<name>``
from the repository root, with no sys.path edits (bench/ has no __init__.py: an implicit namespace
package, so a regular ``bench`` installed elsewhere wins over it instead of being shadowed; see
tests/test_packaging.py).

Each script is run in its own interpreter, as a user would: ``--help`` exits 0 and prints its
usage; on a machine without CUDA, each GPU bench run without arguments exits 2 with one line that
names it (what bench/common.py's require_cuda prints), before it measures or writes anything.
Finished investigations (bench/investigations/) are not standing tools and are not run here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def standing_scripts() -> list[str]:
    """bench/*.py and bench/diag/*.py with a command line (an ``if __name__ == "__main__"`` entry)."""
    paths = sorted([*BENCH.glob("*.py"), *(BENCH / "diag").glob("*.py")])
    return [module_name(p) for p in paths if 'if __name__ == "__main__":' in p.read_text()]


SCRIPTS = standing_scripts()
# The benches that time on a GPU: they call common.require_cuda before anything else.
GPU_SCRIPTS = [m for m in SCRIPTS
               if "require_cuda(" in (REPO / (m.replace(".", "/") + ".py")).read_text()]


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def help_runs() -> dict[str, subprocess.CompletedProcess]:
    """Every script's --help, a few interpreters at a time (each imports torch: ~1-2 s)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(SCRIPTS, pool.map(lambda m: run_module(m, "--help"), SCRIPTS)))


@pytest.fixture(scope="module")
def bare_runs() -> dict[str, subprocess.CompletedProcess]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(GPU_SCRIPTS, pool.map(run_module, GPU_SCRIPTS)))


def test_the_standing_scripts_are_found():
    expected = {"bench.gemm", "bench.bert", "bench.pack", "bench.overhead", "bench.goals",
                "bench.squad_tables", "bench.plot_gemm", "bench.plot_bert", "bench.gemm_variants",
                "bench.make_defaults", "bench.diag.gpu_breakdown", "bench.diag.ab_interleaved",
                "bench.diag.host_paths", "bench.diag.compiled_op_cost"}
    assert expected <= set(SCRIPTS), expected - set(SCRIPTS)
    assert {"bench.gemm", "bench.bert", "bench.pack", "bench.overhead", "bench.gemm_variants",
            "bench.diag.gpu_breakdown"} <= set(GPU_SCRIPTS)
    assert not {"bench.goals", "bench.plot_gemm", "bench.make_defaults"} & set(GPU_SCRIPTS)


def test_no_script_edits_sys_path():
    for path in BENCH.rglob("*.py"):
        assert not re.search(r"sys\.path\s*(\.(insert|append|extend)|\[|\+?=)", path.read_text()), path
    assert not (BENCH / "__init__.py").exists()  # a namespace package, never a regular one


@pytest.mark.parametrize("module", SCRIPTS)
def test_every_script_is_in_the_bench_readme(module):
    assert f"python -m {module}" in (BENCH / "README.md").read_text()


@pytest.mark.slow  # one interpreter per script, ~15 s for all on 2 cores
@pytest.mark.parametrize("module", SCRIPTS)
def test_help_from_the_repository_root(module, help_runs):
    out = help_runs[module]
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("usage:"), out.stdout[:500]
    assert "--help" in out.stdout


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without CUDA")
@pytest.mark.parametrize("module", GPU_SCRIPTS)
def test_gpu_bench_without_cuda_exits_2_with_one_line(module, bare_runs):
    out = bare_runs[module]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(lines) == 1, out.stderr[-2000:]
    assert re.fullmatch(rf"python -m {re.escape(module)}: needs a CUDA GPU, .*Run it on the GPU machine\.",
                        lines[0]), lines[0]
    assert not out.stdout.strip()  # nothing measured, no environment line printed


def test_overhead_counts_the_python_frames_of_one_call():
    from bench.overhead import python_frames

    def leaf():
        return 1

    def middle():
        return leaf() + leaf()

    frames, modules = python_frames(lambda: middle())
    assert frames == 3 and modules == [__name__]
    import sparse24.ops as ops
    import torch

    w = ops.prune_24(torch.randn(32, 64))
    values, meta = ops.compress(w)
    frames, modules = python_frames(lambda: ops.linear(torch.randn(4, 64), values, meta))
    assert frames > 3 and "sparse24.ops.gemm" in modules


def test_gemm_variants_only_keeps_configs_by_field_values_and_defaults():
    from bench import gemm_variants

    only = gemm_variants.parse_only("BLOCK_F=128,A_TILE=1/2")
    assert only == {"BLOCK_F": {128}, "A_TILE": {1, 2}}
    assert gemm_variants.kept({"BLOCK_F": 128}, only)  # no A_TILE: runs as 1
    assert gemm_variants.kept({"BLOCK_F": 128, "A_TILE": 2}, only)
    assert not gemm_variants.kept({"BLOCK_F": 128, "A_TILE": 0}, only)
    assert not gemm_variants.kept({"BLOCK_F": 64}, only)
    with pytest.raises(Exception, match="FIELD=V1/V2"):
        gemm_variants.parse_only("BLOCK_F")


def test_gemm_variants_groups_give_each_sm90_config_once_per_group():
    from bench import gemm_variants

    sm90 = {"family": "wgmma", "BT": 256, "STAGES": 4, "GROUP": 8}
    mma = {"family": "mma", "BLOCK_F": 64}
    assert gemm_variants.with_groups([sm90, mma], ()) == [sm90, mma]
    widened = gemm_variants.with_groups([sm90, mma], (1, 16))
    assert [c.get("GROUP") for c in widened if c["family"] == "wgmma"] == [1, 16]
    assert widened.count(mma) == 2 and sm90["GROUP"] == 8  # the mma config kept; the input untouched
