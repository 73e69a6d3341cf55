"""Draw speedup over cuBLAS vs M, one panel per weight shape, from bench/results/<device>/gemm.jsonl.

    python -m bench.plot_gemm [--run-id ID] [--jsonl PATH] [--out-dir DIR]

Reads the latest run in the file unless --run-id is given; writes <out-dir>/gemm_speedup.png.
Runs on any machine (no GPU needed).
"""

from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path

from bench import common

# (backend, mode) -> (label, line style); what is not in the run is skipped.
LINES = [
    (("sparse24", "eager"), ("sparse24", dict(color="C0", marker="o", linestyle="-"))),
    (("sparse24", "graph"), ("sparse24 (CUDA graph)", dict(color="C0", marker="o", linestyle="--"))),
    (("torch24_cslt", "eager"), ("torch 2:4 eager", dict(color="C1", marker="s", linestyle="-"))),
    (("torch24_cslt", "graph"), ("torch 2:4 (CUDA graph)", dict(color="C1", marker="s", linestyle="--"))),
    (("torch24_cutlass", "eager"), ("torch 2:4 CUTLASS eager", dict(color="C3", marker="^", linestyle="-"))),
    (("torch24_cutlass", "graph"),
     ("torch 2:4 CUTLASS (graph)", dict(color="C3", marker="^", linestyle="--"))),
    (("triton_dense", "eager"), ("Triton dense", dict(color="C2", marker="d", linestyle="-"))),
]


def plot(rows: list[dict], path: Path) -> Path:
    """One panel per N x K: speedup over cuBLAS (same timing mode) against M, log2 x axis."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on the GPU machine or CI
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys((r["n"], r["k"]) for r in rows))
    if not shapes:
        raise ValueError("no gemm rows to plot")
    cols = min(4, len(shapes))
    nrows = math.ceil(len(shapes) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    handles = {}
    for ax, (n, k) in zip(axes.flat, shapes):
        here = [r for r in rows if (r["n"], r["k"]) == (n, k)]
        for key, (label, style) in LINES:
            pts = sorted((r["m"], r["speedup"]) for r in here
                         if (r["backend"], r["mode"]) == key and r.get("status") == "ok" and r.get("speedup"))
            if pts:
                (h,) = ax.plot([m for m, _ in pts], [s for _, s in pts], label=label, **style)
                handles.setdefault(label, h)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ms = sorted({r["m"] for r in here})
        ax.set_xticks(ms, [str(m) for m in ms], fontsize=8)  # the measured M, not powers of 2
        ax.minorticks_off()
        ax.set_title(f"N x K = {n} x {k}", fontsize=10)
        ax.set_xlabel("M (tokens)")
        ax.set_ylabel("speedup over cuBLAS")
        ax.grid(True, which="major", alpha=0.3)
    for ax in list(axes.flat)[len(shapes):]:
        ax.set_visible(False)
    env = rows[0].get("env", {})
    env_text = textwrap.fill(common.env_line(env), 60 * cols)
    fig.suptitle(f"2:4 GEMM speedup over cuBLAS ({rows[0].get('dtype', '')})\n{env_text}", fontsize=10)
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center",
               ncol=min(4, max(1, len(handles))), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.08 if nrows == 1 else 0.05, 1, 0.92))
    return common.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    return common.plot_main("gemm", "gemm_speedup.png", plot, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
