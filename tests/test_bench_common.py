"""CPU tests of the bench plumbing: environment record, writers, run selection, plots, goals, CUDA refusal.

Timings themselves need a GPU and are never asserted; these tests only check that what the benches
write is well-formed and that they refuse to run without CUDA.
"""

from __future__ import annotations

import importlib
import json
import math
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import common

REPO = Path(__file__).resolve().parent.parent

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_env_record_fields():
    rec = common.env_record({"transformers": "x.y"})
    for key in ("gpu", "capability", "torch", "triton", "cuda", "cusparselt", "python",
                "git_commit", "git_dirty", "timestamp_utc", "sparse24", "layout_version"):
        assert key in rec, key
    assert rec["torch"] == torch.__version__
    assert rec["transformers"] == "x.y"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rec["timestamp_utc"])
    if rec["git_commit"] is not None:  # None in a copied tree without git or SPARSE24_COMMIT
        assert re.fullmatch(r"[0-9a-f]{40}", rec["git_commit"])
    if (REPO / ".git").exists() and rec["git_dirty"] is not None:
        assert isinstance(rec["git_dirty"], bool)
    if not torch.cuda.is_available():
        assert rec["gpu"] is None and rec["capability"] is None
    json.dumps(rec)  # serialisable as is


def test_env_record_has_no_hostname():
    host = platform.node()
    text = json.dumps(common.env_record())
    assert "hostname" not in text and "node" not in text
    if len(host) >= 6:  # a short name could occur by chance inside a version string
        assert host not in text


def test_env_line_names_device_and_commit():
    env = {"gpu": "NVIDIA H100 80GB HBM3", "capability": "9.0", "torch": "2.11.0", "triton": "3.6.0",
           "cuda": "12.8", "cusparselt": 800, "git_commit": "0123456789abcdef0123", "git_dirty": True,
           "timestamp_utc": "2026-01-01T00:00:00Z"}
    line = common.env_line(env)
    assert "NVIDIA H100 80GB HBM3 (sm90)" in line
    assert "commit 0123456789ab +dirty" in line
    assert "triton 3.6.0" in line and "cuSPARSELt 800" in line


def test_append_jsonl_appends_valid_json(tmp_path):
    path = tmp_path / "sub" / "x.jsonl"
    common.append_jsonl(path, [{"a": 1, "ms": 0.5}])
    common.append_jsonl(path, [{"a": 2, "ms": math.nan, "dtype": torch.float16, "inf": math.inf}])
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    rows = [json.loads(line) for line in lines]  # strict JSON: NaN/Inf were turned into null
    assert rows[0] == {"a": 1, "ms": 0.5}
    assert rows[1] == {"a": 2, "ms": None, "dtype": "float16", "inf": None}
    assert "NaN" not in path.read_text()


def test_append_jsonl_refuses_one_bare_row(tmp_path):
    """A dict passed bare iterates over its keys: session 14's first stream_rate and
    llm_breakdown runs wrote their rows' key names, one a line, and lost the rows."""
    path = tmp_path / "x.jsonl"
    with pytest.raises(TypeError, match=r"\[row\]"):
        common.append_jsonl(path, {"a": 1})
    assert not path.exists()


def test_recorder_rows_carry_env_and_run_id(tmp_path):
    env = {"gpu": "test-gpu", "git_commit": "abc"}
    rec = common.Recorder("demo", tmp_path, env)
    rec.add({"shape": "768x768", "ms": 1.25})
    rec.add({"shape": "3072x768", "ms": 2.5})
    rows = common.read_jsonl(tmp_path / "demo.jsonl")
    assert [r["shape"] for r in rows] == ["768x768", "3072x768"]
    assert all(r["env"] == env and r["bench"] == "demo" and r["run_id"] == rec.run_id for r in rows)
    # a second run appends, and select_run returns the latest run (or the one asked for)
    rec2 = common.Recorder("demo", tmp_path, env)
    rec2.add({"shape": "4096x4096", "ms": 3.0})
    rows = common.read_jsonl(tmp_path / "demo.jsonl")
    assert len(rows) == 3
    assert [r["shape"] for r in common.select_run(rows)] == ["4096x4096"]
    assert len(common.select_run(rows, rec.run_id)) == 2
    with pytest.raises(SystemExit, match="not found"):
        common.select_run(rows, "no-such-run")


def test_run_ids_sort_by_time_and_differ():
    a, b = common.new_run_id(), common.new_run_id()
    assert a != b
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", a)


def test_markdown_writer(tmp_path):
    env = {"gpu": "NVIDIA H100 80GB HBM3", "capability": "9.0", "git_commit": "feedbeef" * 5,
           "git_dirty": False, "torch": "2.11.0"}
    headers = ["N x K", "M", "speedup"]
    path, text = common.write_markdown(tmp_path, "demo", "Demo table", env, "run-1", headers,
                                       [["768x768", 384, "1.23x"], ["4096x4096", 1, None]],
                                       notes=["a note"])
    assert path == tmp_path / "demo.md" and path.read_text() == text
    lines = text.splitlines()
    assert lines[0] == "# Demo table"
    assert "NVIDIA H100 80GB HBM3 (sm90)" in lines[2] and "commit feedbeeffeed" in lines[2]
    assert "run `run-1`" in lines[2]
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 4  # header, separator, 2 rows
    assert re.fullmatch(r"\| N x K +\| M +\| speedup \|", table[0])
    assert set(table[1]) <= {"|", "-", " "}
    assert "1.23x" in table[2] and "4096x4096" in table[3]
    assert len({len(line) for line in table}) == 1  # padded columns
    assert lines[-1] == "- a note"
    # the next run overwrites the file
    common.write_markdown(tmp_path, "demo", "Second", env, "run-2", ["a"], [[1]])
    assert path.read_text().startswith("# Second")


def test_rotation_count_and_rotating():
    l2 = 50 * 2**20
    assert common.rotation_count(200 * 2**20, l2) == 1  # bigger than the L2 already
    assert common.rotation_count(10 * 2**20, l2) == 15  # 3x the L2 in all
    assert common.rotation_count(1, l2) == 48  # capped
    calls = []
    rot = common.Rotating(lambda a, b: calls.append((a, b)) or a + b, [(1, 2), (3, 4), (5, 6)])
    assert [rot() for _ in range(4)] == [3, 7, 11, 3]
    assert len(rot) == 3


def test_rel_fro_error():
    ref = torch.tensor([3.0, 4.0])
    assert common.rel_fro_error(ref, ref) == 0.0
    assert common.rel_fro_error(torch.tensor([3.0, 4.5]), ref) == pytest.approx(0.1)
    assert common.rel_fro_error(torch.tensor([math.nan, 4.0]), ref) == math.inf


def _gemm_rows(run_id: str) -> list[dict]:
    env = {"gpu": "Synthetic GPU", "capability": "9.0", "git_commit": "0" * 40, "torch": "2.11.0"}
    rows = []
    for n, k, ms in [(768, 768, [384, 1536, 6144]), (4096, 4096, [1, 16, 4096])]:
        for m in ms:
            for backend, mode, speedup in [("cublas", "eager", 1.0), ("sparse24", "eager", 1.4),
                                           ("sparse24", "graph", 1.5), ("torch24_cslt", "eager", 0.1),
                                           ("torch24_cslt", "graph", 0.9), ("triton_dense", "eager", 0.8)]:
                rows.append({"bench": "gemm", "run_id": run_id, "n": n, "k": k, "m": m,
                             "dtype": "float16", "backend": backend, "mode": mode, "status": "ok",
                             "speedup": speedup, "env": env})
            rows.append({"bench": "gemm", "run_id": run_id, "n": n, "k": k, "m": m, "dtype": "float16",
                         "backend": "torch24_cutlass", "mode": "eager", "status": "unsupported",
                         "speedup": None, "env": env})
    return rows


def test_plot_gemm_writes_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from bench import plot_gemm

    common.append_jsonl(tmp_path / "gemm.jsonl", _gemm_rows("20260101T000000Z-aaaaaa"))
    common.append_jsonl(tmp_path / "gemm.jsonl", _gemm_rows("20260102T000000Z-bbbbbb"))
    assert plot_gemm.main(["--out-dir", str(tmp_path)]) == 0
    assert "bbbbbb" in capsys.readouterr().out  # the latest run by default
    png = tmp_path / "gemm_speedup.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    png.unlink()
    assert plot_gemm.main(["--out-dir", str(tmp_path), "--run-id", "20260101T000000Z-aaaaaa"]) == 0
    assert "aaaaaa" in capsys.readouterr().out
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_plot_bert_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    from bench import plot_bert

    env = {"gpu": "Synthetic GPU", "capability": "9.0"}
    rows = []
    for bs in (4, 16, 64, 256):
        for variant, compiled, status, speedup in [
            ("dense", False, "ok", 1.0), ("dense", True, "ok", 1.0),
            ("torch24", False, "ok", 0.2), ("torch24", True, "failed", None),
            ("sparse24", False, "ok", 1.1), ("sparse24", True, "ok", 1.2),
        ]:
            rows.append({"bench": "bert", "run_id": "r1", "variant": variant, "compiled": compiled,
                         "batch_size": bs, "seq_len": 384, "status": status, "speedup": speedup,
                         "env": env})
    common.append_jsonl(tmp_path / "bert.jsonl", rows)
    assert plot_bert.main(["--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "bert_speedup.png").read_bytes()[:8] == PNG_MAGIC


def test_plot_without_results_says_so(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from bench import plot_gemm

    assert plot_gemm.main(["--out-dir", str(tmp_path)]) == 1
    assert "run python -m bench.gemm first" in capsys.readouterr().err


def test_gemm_table_marks_failures():
    from bench import gemm

    rows = [{"n": 768, "k": 768, "m": 384, "backend": b, "mode": md, "status": st, "speedup": sp,
             "ms": 0.01, "tflops": 100.0, "gbps": 900.0, "rel_err": 1e-4, "error": None}
            for b, md, st, sp in [("cublas", "eager", "ok", 1.0), ("sparse24", "eager", "WRONG", None),
                                  ("torch24_cslt", "eager", "unsupported", None),
                                  ("triton_dense", "eager", "ok", 0.81)]]
    headers, lines = gemm.table(rows, ["eager"])
    assert "torch 2:4 CUTLASS eager x" not in headers  # a backend that never ran: a note instead
    row = dict(zip(headers, lines[0]))
    assert row["sparse24 x"] == "WRONG"
    assert row["torch 2:4 eager x"] == "unsup."
    assert row["Triton dense x"] == "0.81x"


def test_shape_parsing():
    assert common.parse_shapes("768x768, 4096X11008") == [(768, 768), (4096, 11008)]
    assert common.parse_shapes("bert,11008x4096") == common.BERT_SHAPES + [(11008, 4096)]
    assert common.parse_int_list("1, 16,4096") == [1, 16, 4096]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without CUDA")
def test_gemm_script_refuses_without_cuda():
    out = subprocess.run([sys.executable, "-m", "bench.gemm", "--quick"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == common.EXIT_NO_CUDA, out.stderr
    assert "needs a CUDA GPU" in out.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without CUDA")
@pytest.mark.parametrize("script", ["pack", "bert"])
def test_other_benches_refuse_without_cuda(script, tmp_path):
    module = importlib.import_module(f"bench.{script}")
    with pytest.raises(SystemExit) as exc:
        module.main(["--quick", "--out-dir", str(tmp_path)])
    assert exc.value.code == common.EXIT_NO_CUDA
    assert not list(tmp_path.iterdir())  # nothing written


def test_triton_dense_kernel_matches_matmul():
    """The baseline computes x @ w^T (one config, through the interpreter on CPU; the autotuner
    itself needs a GPU to time configs)."""
    import triton

    from bench import triton_dense

    device = "cuda" if torch.cuda.is_available() else "cpu"
    m, n, k = 5, 48, 100  # ragged M, N and K
    x = torch.randn(m, k, device=device)
    w = torch.randn(n, k, device=device)
    if device == "cuda":
        y = triton_dense.dense_linear(x.half(), w.half()).float()
        torch.testing.assert_close(y, x.half().float() @ w.half().float().t(), rtol=2e-2, atol=2e-2)
        return
    cfg = triton_dense._CONFIGS[1].kwargs  # BLOCK_M=16, BLOCK_N=64, BLOCK_K=128
    y = torch.empty(m, n)
    grid = (triton.cdiv(m, cfg["BLOCK_M"]) * triton.cdiv(n, cfg["BLOCK_N"]),)
    triton_dense._dense_linear_kernel.fn[grid](x, w, y, m, n, k, x.stride(0), w.stride(0), y.stride(0),
                                               **cfg)
    torch.testing.assert_close(y, x @ w.t(), rtol=1e-4, atol=1e-4)


GOALS_ENV = {"gpu": "Synthetic GPU", "capability": "9.0", "git_commit": "abcdef0", "torch": "2.11.0"}


def _gemm_goal_rows(run_id="g1"):
    def row(m, n, k, backend, mode, ms):
        return {"bench": "gemm", "run_id": run_id, "env": GOALS_ENV, "status": "ok", "dtype": "float16",
                "m": m, "n": n, "k": k, "backend": backend, "mode": mode, "ms": ms}

    return [row(4096, 4096, 4096, "sparse24", "graph", 1.0), row(4096, 4096, 4096, "cublas", "graph", 1.4),
            row(4096, 4096, 4096, "torch24_cslt", "graph", 0.9),
            row(8192, 4096, 4096, "sparse24", "graph", 2.0), row(8192, 4096, 4096, "cublas", "graph", 3.2),
            row(8192, 4096, 4096, "torch24_cslt", "graph", 2.2),
            # eager ratio 1.3 against 1.4 in the graph: 7% off, within the 10% goal
            row(4096, 4096, 4096, "sparse24", "eager", 1.0), row(4096, 4096, 4096, "cublas", "eager", 1.3)]


def _bert_goal_rows(run_id="b1", dtype="float16"):
    rows = []
    for bs, eager, default, graphs in [(4, 1.1, 0.5, 1.0), (16, 1.3, 1.2, 1.2), (64, 1.2, 1.3, 1.3)]:
        for mode, compiled, speedup in [("eager", False, eager), ("default", True, default),
                                        ("reduce-overhead", True, graphs)]:
            for variant, ms in [("dense", 10.0), ("sparse24", 10.0 / speedup), ("torch24", 50.0)]:
                rows.append({"bench": "bert" if dtype == "float16" else f"bert_{dtype}", "run_id": run_id,
                             "env": GOALS_ENV, "variant": variant, "dtype": dtype, "batch_size": bs,
                             "compiled": compiled, "compile_mode": mode if compiled else None, "ms": ms})
    return rows


def _cells(report: str, first_cells: tuple[str, ...]) -> list[str]:
    """The cells of the report's table line that starts with first_cells (padding stripped)."""
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if tuple(cells[:len(first_cells)]) == first_cells:
            return cells
    raise AssertionError(f"no table line starting with {first_cells} in\n{report}")


def test_goals_gemm_ranges_come_from_the_rows():
    """python -m bench.goals, GEMM part: a class's range is time(baseline) / time(sparse24) over its
    points, a point under the cuSPARSELt goal is named, the eager ratio is held against the graph one."""
    from bench import goals

    report = goals.report([_gemm_goal_rows()])
    run = "`g1` (abcdef0)"
    assert _cells(report, ("float16", run, "LLM shapes (N, K >= 4096), M >= 4096")) == [
        "float16", run, "LLM shapes (N, K >= 4096), M >= 4096", "2", "1.40-1.60x", ">= 1.5x",
        "0.90-1.10x", "-", "4096x4096x4096 1.40x cuBLAS"]
    assert _cells(report, ("float16", run, "every shape, M >= 256"))[3:] == [
        "2", "1.40-1.60x", ">= 1.0x", "0.90-1.10x", ">= 1.0x", "4096x4096x4096 0.90x cuSPARSELt"]
    assert _cells(report, ("float16", run, "LLM shapes, M <= 16"))[3:5] == ["0", "-"]
    assert _cells(report, ("float16", run, "eager vs graph ratio, M >= 4096"))[3:] == [
        "1", "1 within 10%", "within 10%", "-", "-", "off by more: -"]
    assert "## BERT-base" not in report  # no BERT run given: no BERT table


def test_goals_bert_per_batch_size_and_met_only_when_all_are():
    from bench import goals

    report = goals.report([_bert_goal_rows(), _bert_goal_rows("b2", "bfloat16")])
    run = "`b1` (abcdef0)"
    assert _cells(report, ("float16", run, "eager, batch >= 16"))[3:] == [
        ">= 1.25x", "16: 1.30x, 64: 1.20x", "no"]  # 64 misses it
    assert _cells(report, ("float16", run, "eager, batch 16 (issue 23's floor)"))[3:] == [
        ">= 1.1x", "16: 1.30x", "yes"]
    assert _cells(report, ("float16", run, "compiled reduce-overhead, batch 16"))[3:] == [
        ">= 1.15x", "16: 1.20x", "yes"]
    assert _cells(report, ("float16", run, "compiled reduce-overhead, batch 64"))[3:] == [
        ">= 1.3x", "64: 1.30x", "yes"]
    assert _cells(report, ("float16", run, "compiled default, batch 4"))[3:] == [">= 1.0x", "4: 0.50x", "no"]
    assert _cells(report, ("bfloat16", "`b2` (abcdef0)", "eager, batch 4"))[3:] == [">= 1.0x", "4: 1.10x", "yes"]
    assert "## GEMM" not in report


def test_goals_bert_take_a_rows_own_speedup_over_its_medians():
    """A run timed in turns carries the median of its rounds' ratios; the goal reads that, not
    the ratio of the two medians (which a slow spell of the host in one round distorts)."""
    from bench import goals

    rows = _bert_goal_rows()
    for r in rows:
        if r["variant"] == "sparse24" and r["compile_mode"] is None and r["batch_size"] == 16:
            r["speedup"] = 0.88  # its ms say 1.30x
    report = goals.report([rows])
    assert _cells(report, ("float16", "`b1` (abcdef0)", "eager, batch 16 (issue 23's floor)"))[3:] == [
        ">= 1.1x", "16: 0.88x", "no"]


def test_goals_one_report_from_files_of_both_benches(tmp_path, capsys):
    """Files of python -m bench.gemm and bench.bert in any order, the latest run of each; the
    report is markdown tables (header, separator, rows of equal width) and every run's env line."""
    from bench import goals

    common.append_jsonl(tmp_path / "bert.jsonl", _bert_goal_rows("old-bert"))
    common.append_jsonl(tmp_path / "bert.jsonl", _bert_goal_rows("b1"))
    common.append_jsonl(tmp_path / "gemm.jsonl", _gemm_goal_rows())
    out = tmp_path / "goals.md"
    assert goals.main([str(tmp_path / "bert.jsonl"), str(tmp_path / "gemm.jsonl"), "--out", str(out)]) == 0
    report = out.read_text()
    assert capsys.readouterr().out.strip() == report.strip()
    assert report.index("## GEMM") < report.index("## BERT-base")
    assert "old-bert" not in report
    for table in re.findall(r"(?:^\|.*\|\n)+", report, flags=re.M):
        lines = table.splitlines()
        assert len(lines) >= 3 and set(lines[1]) <= {"|", "-", " "}
        assert len({len(line) for line in lines}) == 1
    assert report.count("Synthetic GPU (sm90)") == 2  # one env line per run

def test_goals_default_files_come_from_the_device_folder(tmp_path, monkeypatch, capsys):
    from bench import goals

    common.append_jsonl(tmp_path / "gemm.jsonl", _gemm_goal_rows())
    common.append_jsonl(tmp_path / "bert_bfloat16.jsonl", _bert_goal_rows("b2", "bfloat16"))
    common.append_jsonl(tmp_path / "gemm_variants.jsonl", [{"gpu": "x", "m": 1}])  # not a goal input
    asked = []
    monkeypatch.setattr(common, "results_dir", lambda device=None: asked.append(device) or tmp_path)
    assert goals.main(["--device", "h200"]) == 0
    assert asked == ["h200"]
    report = capsys.readouterr().out
    assert "`g1` (abcdef0)" in report and "`b2` (abcdef0)" in report


def test_goals_refuses_unknown_or_missing_input(tmp_path, capsys):
    from bench import goals

    common.append_jsonl(tmp_path / "pack.jsonl", [{"bench": "pack", "run_id": "p", "env": GOALS_ENV}])
    for argv, message in [([str(tmp_path / "pack.jsonl")], "not from python -m bench.gemm, bench.bert or bench.llm"),
                          ([str(tmp_path / "missing.jsonl")], "does not exist"),
                          (["--device", "no-such-device-xyz"], "no result files in")]:
        with pytest.raises(SystemExit) as exc:
            goals.main(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_back_to_back_us_reads_the_clock_before_or_after_the_final_sync(monkeypatch):
    """bench/overhead.py's timing waits for the GPU (the sync inside the clock); launch_parts'
    (host_only) reads the clock before the final sync. A sync that takes 20 ms shows in the first
    per-call figure (10 calls: >= 2000 us a call) and not in the second."""
    import time

    from bench import common

    syncs = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: syncs.append(time.sleep(0.02)))
    calls = []
    waited = common.back_to_back_us(lambda: calls.append(1), 10, warmup=3)
    host = common.back_to_back_us(lambda: calls.append(1), 10, warmup=3, host_only=True)
    assert len(calls) == 26 and len(syncs) == 4
    assert waited >= 2000 > 500 > host
