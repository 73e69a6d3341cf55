"""bench/versions.py without a GPU: each worker imports the tree it was given (not this checkout
or an installed sparse24), the turns alternate, and the summary is per shape and tree."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench import versions


def fake_tree(root, name):
    package = root / name / "sparse24"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"TREE = {name!r}\n")
    return root / name


def test_a_worker_imports_the_tree_it_is_given(tmp_path):
    tree = fake_tree(tmp_path, "base")
    done = subprocess.run([sys.executable, "-c", "import sparse24; print(sparse24.TREE, sparse24.__file__)"],
                          capture_output=True, text=True, cwd=tmp_path,
                          env=versions.tree_env(tree, str(tmp_path / "cache")))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "base" and str(tree) in done.stdout


def test_a_tree_with_top_level_kernels_imports_its_own_kernels(tmp_path):
    """Before 2026-12-04 the kernels were a top-level kernels/ that pyproject mapped to
    sparse24.kernels: staged, the tree's sparse24.kernels is its own, not this checkout's."""
    tree = fake_tree(tmp_path, "old")
    (tree / "kernels").mkdir()
    (tree / "kernels" / "__init__.py").write_text("TREE = 'old kernels'\n")
    staged = versions.importable(tree, tmp_path / "scratch")
    assert versions.importable(staged, tmp_path / "again") == staged  # already importable
    done = subprocess.run([sys.executable, "-c", "import sparse24.kernels as k; print(k.TREE)"],
                          capture_output=True, text=True, cwd=tmp_path,
                          env=versions.tree_env(staged, str(tmp_path / "cache")))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "old kernels"


def test_a_failing_worker_is_reported_with_its_error(tmp_path):
    tree = fake_tree(tmp_path, "broken")  # no sparse24.ops: the worker cannot start
    with pytest.raises(RuntimeError, match="the worker for .*broken failed"):
        versions.run_worker(tree, [(1, 64, 64)], "float16", str(tmp_path / "cache"), timeout=120)


def test_turns_alternate_which_tree_goes_first():
    assert versions.turns(3) == ["base", "head", "head", "base", "base", "head"]


def test_summary_takes_medians_per_shape_and_tree():
    def row(tree, sparse, dense, m=16):
        return {"tree": tree, "m": m, "n": 4096, "k": 4096, "sparse_us": sparse, "dense_us": dense,
                "err": 1e-4, "bytes": 20e6}

    rows = [row("base", 10, 15), row("base", 12, 15), row("base", 11, 16),
            row("head", 20, 15), row("head", 21, 16), row("head", 19, 15), row("head", 5, 5, m=1)]
    first, second = versions.summarize(rows)
    # the median of each round's ratio to its own cuBLAS, not a ratio of medians
    assert first["base"]["speedup"] == pytest.approx(16 / 11)
    assert first["head"]["speedup"] == pytest.approx(16 / 21)
    assert first["head_over_base"] == pytest.approx((16 / 21) / (16 / 11))
    assert first["base"]["tb_per_s"] == pytest.approx(20e6 / 11 / 1e6)
    assert "base" not in second and "head_over_base" not in second


def test_shapes_are_parsed_or_refused():
    assert versions.parse_shapes("1x4096x4096, 16x768x3072") == [(1, 4096, 4096), (16, 768, 3072)]
    with pytest.raises(Exception, match="not MxNxK"):
        versions.parse_shapes("16x4096")


def test_the_worker_is_python_that_imports_only_torch_triton_and_sparse24():
    code = compile(versions.WORKER, "versions-worker", "exec")
    imported = {name.split(".")[0] for name in code.co_names} & {"bench", "numpy", "pandas"}
    assert not imported  # an old tree's environment need not have today's bench helpers


def test_a_wrong_answer_is_reported_not_compared():
    rows = [{"tree": "base", "m": 1, "n": 64, "k": 64, "sparse_us": 5, "dense_us": 5, "err": 0.5,
             "bytes": 1, "wrong": True},
            {"tree": "head", "m": 1, "n": 64, "k": 64, "sparse_us": 5, "dense_us": 5, "err": 1e-3,
             "bytes": 1, "wrong": False}]
    [entry] = versions.summarize(rows)
    assert entry["base"] == {"wrong": True, "err": 0.5}
    assert entry["head"]["speedup"] == 1 and "head_over_base" not in entry


def test_ptx_diff_tells_identical_reordered_and_different_code():
    from bench.diag import ptx_diff

    ptx = ("\t.loc\t1 165 0\n\tmov.u32 %r1, %tid.x;\n$L__tmp3:\n\tadd.s32 %r2, %r1, 1; // x\n"
           "\tmul.lo.s32 %r3, %r2, %r2;\n.section .debug_info\n\t.b8 177\n")
    base = ptx_diff.normalized(ptx)
    assert base == ["\tmov.u32 %r1, %tid.x;", "\tadd.s32 %r2, %r1, 1;", "\tmul.lo.s32 %r3, %r2, %r2;",
                    ".section .debug_info"]
    moved_line = ptx_diff.normalized(ptx.replace(".loc\t1 165", ".loc\t1 175").replace("177", "187"))
    assert ptx_diff.compare(base, moved_line) == "identical"  # source lines only
    swapped = [base[1], base[0], *base[2:]]
    assert ptx_diff.compare(base, swapped).startswith("the same instructions")
    assert ptx_diff.compare(base, base[:-2] + ["\tmul.lo.s32 %r3, %r2, 3;", base[-1]]).startswith("differs: 2 lines")

