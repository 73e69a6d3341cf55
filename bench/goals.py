"""The GEMM goals of the Hopper issue against a recorded run: ranges computed from bench/gemm.py's JSON.

For each goal class, the measured range of sparse24's CUDA-graph time ratio against cuBLAS and
against torch's 2:4 (cuSPARSELt), both from the same run, next to the goal; and, at M >= 4096,
how far the eager ratio is from the graph one (goal: within 10%). No GPU needed.

    python bench/goals.py bench/results/h200/gemm.jsonl [bench/results/h200/gemm_bf16.jsonl ...]
        [--out bench/results/h200/goals.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

BERT = {(768, 768), (3072, 768), (768, 3072), (2304, 768)}
# (name, selects a (m, n, k) point, goal against cuBLAS or None, goal against cuSPARSELt or None)
CLASSES = [
    ("LLM shapes (N, K >= 4096), M >= 1000", lambda m, n, k: n >= 4096 and k >= 4096 and m >= 1000,
     1.5, 1.05),
    ("BERT-base shapes, M 6144-98304", lambda m, n, k: (n, k) in BERT and 6144 <= m <= 98304,
     1.3, 1.0),
    ("every shape, M >= 256", lambda m, n, k: m >= 256, None, 1.0),
    ("LLM shapes, M <= 16", lambda m, n, k: n >= 4096 and k >= 4096 and m <= 16, 1.45, None),
]


def points(rows: list[dict]) -> dict[tuple, dict[tuple[str, str], float]]:
    """{(dtype, m, n, k): {(backend, mode): ms}} of the plain (no epilogue) rows that ran."""
    out: dict[tuple, dict[tuple[str, str], float]] = {}
    for r in rows:
        if r.get("status") == "ok" and r.get("ms"):
            out.setdefault((r["dtype"], r["m"], r["n"], r["k"]), {})[r["backend"], r["mode"]] = r["ms"]
    return out


def span(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}x" if values else "-"


def summary(rows: list[dict]) -> str:
    pts = points(rows)
    env = rows[0]["env"]
    lines = [f"# GEMM goals against run `{rows[0]['run_id']}`", "",
             f"{common.env_line(env)}", "",
             "| dtype | class | points | sparse24 / cuBLAS | goal | sparse24 / cuSPARSELt | goal | "
             "below the cuSPARSELt goal |", "|---|---|---|---|---|---|---|---|"]
    for dtype in sorted({key[0] for key in pts}):
        for name, selects, goal_dense, goal_cslt in CLASSES:
            dense, cslt, below = [], [], []
            for (dt, m, n, k), ms in sorted(pts.items()):
                if dt != dtype or not selects(m, n, k) or ("sparse24", "graph") not in ms:
                    continue
                ours = ms["sparse24", "graph"]
                if ("cublas", "graph") in ms:
                    dense.append(ms["cublas", "graph"] / ours)
                if ("torch24_cslt", "graph") in ms:
                    cslt.append(ms["torch24_cslt", "graph"] / ours)
                    if goal_cslt and cslt[-1] < goal_cslt:
                        below.append(f"{m}x{n}x{k} {cslt[-1]:.2f}x")
            lines.append(f"| {dtype} | {name} | {len(dense)} | {span(dense)} | "
                         f"{f'>= {goal_dense}x' if goal_dense else '-'} | {span(cslt)} | "
                         f"{f'>= {goal_cslt}x' if goal_cslt else '-'} | {', '.join(below) or '-'} |")
        gaps = {f"{m}x{n}x{k}": abs(ms["cublas", "eager"] / ms["sparse24", "eager"]
                                    / (ms["cublas", "graph"] / ms["sparse24", "graph"]) - 1)
                for (dt, m, n, k), ms in sorted(pts.items()) if dt == dtype and m >= 4096
                and {("sparse24", "eager"), ("cublas", "eager")} <= ms.keys()}
        if gaps:
            off = ", ".join(f"{p} {g:.0%}" for p, g in gaps.items() if g > 0.1) or "-"
            lines.append(f"| {dtype} | eager vs graph ratio, M >= 4096 | {len(gaps)} | "
                         f"{sum(g <= 0.1 for g in gaps.values())} within 10% | within 10% | - | - | "
                         f"off by more: {off} |")
    lines += ["", "Ratios are time(baseline) / time(sparse24), CUDA graphs, from the same run "
              "(bench/gemm.py: operands rotated past the L2)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jsonl", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    text = "\n".join(summary(common.select_run(common.read_jsonl(p))) for p in args.jsonl)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
