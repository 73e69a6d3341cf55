"""Bar plot of BERT speedup over dense per batch size and mode, from bench/results/<device>/bert.jsonl.

    python -m bench.plot_bert [--run-id ID] [--jsonl PATH] [--out-dir DIR]

Reads the latest run unless --run-id is given; writes <out-dir>/bert_speedup.png. No GPU needed.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from bench import common

BARS = [  # (variant, mode) -> label, colour; light for eager, darker for each compiled mode
    (("torch24", "eager"), ("torch 2:4 eager", "#f5b971")),
    (("torch24", "default"), ("torch 2:4 compiled", "#d9730d")),
    (("torch24", "reduce-overhead"), ("torch 2:4 CUDA graphs", "#8a4500")),
    (("sparse24", "eager"), ("sparse24 eager", "#8fb8e0")),
    (("sparse24", "default"), ("sparse24 compiled", "#1f5fa8")),
    (("sparse24", "reduce-overhead"), ("sparse24 CUDA graphs", "#0b2e5c")),
]


def _mode(row: dict) -> str:
    return (row.get("compile_mode") or "default") if row.get("compiled") else "eager"


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {(r["variant"], _mode(r), r["batch_size"]): r for r in rows}
    batch_sizes = sorted({r["batch_size"] for r in rows})
    bars = [(key, style) for key, style in BARS if any((*key, bs) in by for bs in batch_sizes)]
    if not batch_sizes or not bars:
        raise ValueError("no torch24/sparse24 rows to plot")
    width = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * len(batch_sizes)), 4.2))
    top = 1.0
    for i, ((variant, mode), (label, colour)) in enumerate(bars):
        for j, bs in enumerate(batch_sizes):
            x = j + (i - (len(bars) - 1) / 2) * width
            r = by.get((variant, mode, bs))
            if r is None:
                continue
            if r.get("status") == "ok" and r.get("speedup"):
                s = r["speedup"]
                top = max(top, s)
                ax.bar(x, s, width, color=colour, label=label if j == 0 else None)
                ax.text(x, s, f"{s:.2f}", ha="center", va="bottom", fontsize=7)
            else:
                # A failed row stays visible: an empty slot would read as "not measured".
                ax.bar(x, 0, width, color=colour, label=label if j == 0 else None)
                ax.text(x, 0.02, "failed", ha="center", va="bottom", rotation=90, fontsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(batch_sizes)), [f"bs {bs}" for bs in batch_sizes])
    ax.set_ylim(0, top * 1.15)
    dtype = rows[0].get("dtype", "float16")
    ax.set_ylabel(f"speedup over dense {dtype} (same mode)")
    seq = rows[0].get("seq_len")
    env_text = textwrap.fill(common.env_line(rows[0].get("env", {})), 85)
    ax.set_title(f"BERT-base QA, seq {seq}, {dtype}; compiled = torch.compile(fullgraph=True), "
                 f"CUDA graphs = its mode='reduce-overhead'\n{env_text}", fontsize=8)
    ax.legend(fontsize=8, ncol=2, frameon=False)
    fig.tight_layout()
    return common.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    return common.plot_main("bert", "bert_speedup.png", plot, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
