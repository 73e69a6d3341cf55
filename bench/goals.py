"""The issues' goals against recorded runs: GEMM (bench.gemm), BERT-base (bench.bert), LLM (bench.llm).

One report from JSON-lines files of either bench: the latest run of each file, its kind taken from
the rows' "bench" field. No GPU needed.

GEMM goals (issues 22 and 25): per goal class, the measured range of sparse24's CUDA-graph time
ratio against cuBLAS and against torch's 2:4 (cuSPARSELt), both from the same run, next to the
goal, and the points below a goal; and, at M >= 4096, how far the eager ratio is from the graph
one (goal: within 10%).

BERT-base goals (issues 22 and 23; sparse24 speedup over dense in the same mode, seq 384):
>= 1.25x eager at batch >= 16 (at least 1.1x at 16); >= 1.15x compiled (default) at batch >= 16;
compiled reduce-overhead >= 1.15x at batch 16 and >= 1.3x at 64; >= 1.0x at batch 4 in every
mode. Each goal is checked per batch size, and is met when every batch size it covers meets it.

    python -m bench.goals [FILE.jsonl ...] [--device h200] [--out bench/results/h200/goals.md]

Without files: gemm.jsonl, gemm_bf16.jsonl, bert.jsonl and bert_bfloat16.jsonl of
bench/results/<device>/, those that exist (--device: this machine's by default).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import common

DEFAULT_FILES = ("gemm.jsonl", "gemm_bf16.jsonl", "bert.jsonl", "bert_bfloat16.jsonl", "llm.jsonl")

# ------------------------------------------------------------------------------------------ GEMM
GEMM_BERT_SHAPES = {(768, 768), (3072, 768), (768, 3072), (2304, 768)}
# (name, selects a (m, n, k) point, goal against cuBLAS or None, goal against cuSPARSELt or None)
GEMM_CLASSES = [
    # issue 22 (the sm90 kernel at every token count)
    ("LLM shapes (N, K >= 4096), M >= 4096", lambda m, n, k: n >= 4096 and k >= 4096 and m >= 4096,
     1.5, None),
    ("BERT-base shapes, M 6144-98304",
     lambda m, n, k: (n, k) in GEMM_BERT_SHAPES and 6144 <= m <= 98304, 1.2, None),
    ("every shape, M >= 256", lambda m, n, k: m >= 256, 1.0, 1.0),
    # issue 25 (decode at the memory's speed)
    ("LLM shapes, M <= 16", lambda m, n, k: n >= 4096 and k >= 4096 and m <= 16, 1.6, None),
    ("LLM shapes, M 32-64", lambda m, n, k: n >= 4096 and k >= 4096 and 32 <= m <= 64, 1.4, None),
    ("every shape, M <= 64", lambda m, n, k: m <= 64, 1.0, None),
]
GEMM_HEADERS = ["dtype", "run", "class", "points", "sparse24 / cuBLAS", "goal",
                "sparse24 / cuSPARSELt", "goal", "points below a goal"]
GEMM_NOTE = ("Ratios are time(baseline) / time(sparse24), CUDA graphs, from the same run "
             "(python -m bench.gemm: operands rotated past the L2); the eager row compares the "
             "eager ratio against cuBLAS with the graph one.")

# ------------------------------------------------------------------------------------- BERT-base
# (name, mode, batch sizes it covers, goal)
BERT_GOALS = [
    ("eager, batch >= 16", "eager", lambda bs: bs >= 16, 1.25),  # the standing goal
    ("eager, batch 16 (issue 23's floor)", "eager", lambda bs: bs == 16, 1.1),
    ("compiled default, batch >= 16", "default", lambda bs: bs >= 16, 1.15),
    ("compiled reduce-overhead, batch 16", "reduce-overhead", lambda bs: bs == 16, 1.15),
    ("compiled reduce-overhead, batch 64", "reduce-overhead", lambda bs: bs == 64, 1.3),
    ("eager, batch 4", "eager", lambda bs: bs == 4, 1.0),
    ("compiled default, batch 4", "default", lambda bs: bs == 4, 1.0),
    ("compiled reduce-overhead, batch 4", "reduce-overhead", lambda bs: bs == 4, 1.0),
]
BERT_HEADERS = ["dtype", "run", "goal", "target", "measured (batch: speedup)", "met"]
BERT_NOTE = ("Speedup = dense ms / sparse24 ms from python -m bench.bert (seq 384, random "
             "bert-base-cased weights, blocked_autorange; runs from 2026-12-06 06:00 UTC on time the "
             "variants in turns and give the median of the rounds' ratios); a goal is met when every "
             "batch size it covers meets it.")


LLM_GOALS = [  # issue 25: (goal, phase, mode, target)
    ("decode, CUDA graphs, every batch", "decode", "graph", 1.4),
    ("prefill, CUDA graphs", "prefill", "graph", 1.3),
]
LLM_HEADERS = ["dtype", "run", "goal", "target", "measured (batch: speedup)", "met"]
LLM_NOTE = ("Speedup = median over rounds of dense ms / sparse24 ms, timed in turns, from python -m "
            "bench.llm (Llama-3-8B layer shapes, random weights, the decoder without its LM head).")


def kind(rows: list[dict]) -> str:
    """'gemm' or 'bert' (bench/gemm.py writes bench 'gemm', bench/bert.py 'bert' or 'bert_<dtype>')."""
    bench = str(rows[0].get("bench") or "")
    if bench in ("gemm", "llm"):
        return bench
    if bench == "bert" or bench.startswith("bert_"):  # bert_bfloat16; gemm_variants is no gemm run
        return "bert"
    raise ValueError(f"rows of bench {bench!r}: not from python -m bench.gemm, bench.bert or bench.llm")


def run_cell(rows: list[dict]) -> str:
    commit = (rows[0].get("env", {}).get("git_commit") or "unknown")[:12]
    return f"`{rows[0]['run_id']}` ({commit})"


def span(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}x" if values else "-"


def gemm_points(rows: list[dict]) -> dict[tuple, dict[tuple[str, str], float]]:
    """{(dtype, m, n, k): {(backend, mode): ms}} of the plain (no epilogue) rows that ran."""
    out: dict[tuple, dict[tuple[str, str], float]] = {}
    for r in rows:
        if r.get("status") == "ok" and r.get("ms"):
            out.setdefault((r["dtype"], r["m"], r["n"], r["k"]), {})[r["backend"], r["mode"]] = r["ms"]
    return out


def gemm_rows(rows: list[dict]) -> list[list[str]]:
    """The GEMM goal table's rows for one run of python -m bench.gemm."""
    pts, run, out = gemm_points(rows), run_cell(rows), []
    for dtype in sorted({key[0] for key in pts}):
        for name, selects, goal_dense, goal_cslt in GEMM_CLASSES:
            dense, cslt, below = [], [], []
            for (dt, m, n, k), ms in sorted(pts.items()):
                if dt != dtype or not selects(m, n, k) or ("sparse24", "graph") not in ms:
                    continue
                ours = ms["sparse24", "graph"]
                if ("cublas", "graph") in ms:
                    dense.append(ms["cublas", "graph"] / ours)
                    if goal_dense and dense[-1] < goal_dense:
                        below.append(f"{m}x{n}x{k} {dense[-1]:.2f}x cuBLAS")
                if ("torch24_cslt", "graph") in ms:
                    cslt.append(ms["torch24_cslt", "graph"] / ours)
                    if goal_cslt and cslt[-1] < goal_cslt:
                        below.append(f"{m}x{n}x{k} {cslt[-1]:.2f}x cuSPARSELt")
            out.append([dtype, run, name, str(len(dense)), span(dense),
                        f">= {goal_dense}x" if goal_dense else "-", span(cslt),
                        f">= {goal_cslt}x" if goal_cslt else "-", ", ".join(below) or "-"])
        gaps = {f"{m}x{n}x{k}": abs(ms["cublas", "eager"] / ms["sparse24", "eager"]
                                    / (ms["cublas", "graph"] / ms["sparse24", "graph"]) - 1)
                for (dt, m, n, k), ms in sorted(pts.items()) if dt == dtype and m >= 4096
                and {("sparse24", "eager"), ("cublas", "eager"), ("sparse24", "graph"),
                     ("cublas", "graph")} <= ms.keys()}
        if gaps:
            off = ", ".join(f"{p} {g:.0%}" for p, g in gaps.items() if g > 0.1) or "-"
            out.append([dtype, run, "eager vs graph ratio, M >= 4096", str(len(gaps)),
                        f"{sum(g <= 0.1 for g in gaps.values())} within 10%", "within 10%", "-", "-",
                        f"off by more: {off}"])
    return out


def bert_speedups(rows: list[dict]) -> dict[tuple[str, int], float]:
    """(mode, batch size) -> sparse24's speedup over dense: the row's own (the median of the
    rounds' ratios, where the run timed in turns), else dense ms / sparse24 ms. Host-bound rows
    differ: eager batch 16 on the H100, rounds dense 4.77 / 4.62 / 9.21 ms, sparse24 5.42 / 8.95
    / 9.61 ms, is 0.88x by its rounds and 0.53x by its medians (run 20261206T060114Z-817f74)."""
    ms, own = {}, {}
    for r in rows:
        if r.get("ms") is None:
            continue
        mode = (r.get("compile_mode") or "default") if r.get("compiled") else "eager"
        ms[r["variant"], mode, r["batch_size"]] = r["ms"]
        if r["variant"] == "sparse24" and r.get("speedup") is not None:
            own[mode, r["batch_size"]] = r["speedup"]
    return {(mode, bs): own.get((mode, bs), ms["dense", mode, bs] / ms["sparse24", mode, bs])
            for (variant, mode, bs) in ms if variant == "sparse24" and ("dense", mode, bs) in ms}


def bert_rows(rows: list[dict]) -> list[list[str]]:
    """The BERT-base goal table's rows for one run of python -m bench.bert."""
    ratio, run, out = bert_speedups(rows), run_cell(rows), []
    for name, mode, covers, target in BERT_GOALS:
        points = sorted((bs, s) for (m, bs), s in ratio.items() if m == mode and covers(bs))
        measured = ", ".join(f"{bs}: {s:.2f}x" for bs, s in points) or "-"
        met = "yes" if points and all(s >= target for _, s in points) else "no"
        out.append([rows[0]["dtype"], run, name, f">= {target}x", measured, met])
    return out


def llm_rows(rows: list[dict]) -> list[list[str]]:
    """The LLM goal table's rows for one run of python -m bench.llm."""
    run, out = run_cell(rows), []
    for name, phase, mode, target in LLM_GOALS:
        points = sorted((r["batch"], r["speedup"]) for r in rows
                        if r["phase"] == phase and r["mode"] == mode and r.get("speedup"))
        measured = ", ".join(f"{b}: {s:.2f}x" for b, s in points) or "-"
        met = "yes" if points and all(s >= target for _, s in points) else "no"
        out.append([rows[0].get("dtype", "-"), run, name, f">= {target}x", measured, met])
    return out


def report(runs: list[list[dict]]) -> str:
    """One markdown report: the GEMM table, the BERT-base table (each where runs of its kind were
    given), then the environment line of every run."""
    gemm = [line for rows in runs if kind(rows) == "gemm" for line in gemm_rows(rows)]
    bert = [line for rows in runs if kind(rows) == "bert" for line in bert_rows(rows)]
    llm = [line for rows in runs if kind(rows) == "llm" for line in llm_rows(rows)]
    parts = ["# Goals against the recorded runs", ""]
    if gemm:
        parts += ["## GEMM: sparse24 against cuBLAS and torch's 2:4 (cuSPARSELt)", "",
                  common.markdown_table(GEMM_HEADERS, gemm), "", GEMM_NOTE, ""]
    if bert:
        parts += ["## BERT-base QA: sparse24 against dense, same mode, same run", "",
                  common.markdown_table(BERT_HEADERS, bert), "", BERT_NOTE, ""]
    if llm:
        parts += ["## Llama-8B-shaped decoder: sparse24 against dense, same mode, same run", "",
                  common.markdown_table(LLM_HEADERS, llm), "", LLM_NOTE, ""]
    parts += ["Runs:", ""] + [f"- `{rows[0]['run_id']}`: {common.env_line(rows[0].get('env', {}))}"
                              for rows in runs]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jsonl", nargs="*", type=Path,
                        help="JSON lines of python -m bench.gemm or bench.bert, in any mix (default: "
                             f"{', '.join(DEFAULT_FILES)} of bench/results/<device>)")
    parser.add_argument("--device", default=None,
                        help="the results folder of the default files, e.g. h200 (default: this "
                             "machine's)")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    folder = common.results_dir(args.device)
    paths = args.jsonl or [folder / name for name in DEFAULT_FILES if (folder / name).exists()]
    if not paths:
        parser.error(f"no result files in {folder}; name JSON-lines files or a --device (e.g. h200)")
    runs = []
    for path in paths:
        if not path.is_file():
            parser.error(f"{path} does not exist")
        rows = common.select_run(common.read_jsonl(path))
        if not rows:
            parser.error(f"{path} holds no rows")
        try:
            kind(rows)
        except ValueError as exc:
            parser.error(f"{path}: {exc}")
        runs.append(rows)
    text = report(runs)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
