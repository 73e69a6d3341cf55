"""The BERT-base goals of the end-to-end issue against recorded runs of bench/bert.py. No GPU needed.

Goals (sparse24 speedup over dense in the same mode, seq 384): >= 1.25x eager at batch >= 16;
>= 1.15x compiled (default) and compiled reduce-overhead at batch >= 16; >= 1.0x at batch 4 in
every mode. Each goal is checked per batch size, on the latest run of each file.

    python bench/bert_goals.py bench/results/h200/bert.jsonl bench/results/h200/bert_bfloat16.jsonl
        [--out bench/results/h200/bert_goals.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MODES = ("eager", "default", "reduce-overhead")
# (name, mode, batch sizes it covers, goal)
GOALS = [
    ("eager, batch >= 16", "eager", lambda bs: bs >= 16, 1.25),
    ("compiled default, batch >= 16", "default", lambda bs: bs >= 16, 1.15),
    ("compiled reduce-overhead, batch >= 16", "reduce-overhead", lambda bs: bs >= 16, 1.15),
    ("eager, batch 4", "eager", lambda bs: bs == 4, 1.0),
    ("compiled default, batch 4", "default", lambda bs: bs == 4, 1.0),
    ("compiled reduce-overhead, batch 4", "reduce-overhead", lambda bs: bs == 4, 1.0),
]


def latest_run(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    run_id = rows[-1]["run_id"]
    return [r for r in rows if r["run_id"] == run_id]


def speedups(rows: list[dict]) -> dict[tuple[str, int], float]:
    """(mode, batch size) -> dense ms / sparse24 ms."""
    ms = {}
    for r in rows:
        if r.get("ms") is None:
            continue
        mode = (r.get("compile_mode") or "default") if r.get("compiled") else "eager"
        ms[r["variant"], mode, r["batch_size"]] = r["ms"]
    return {(mode, bs): ms["dense", mode, bs] / ms["sparse24", mode, bs]
            for (variant, mode, bs) in ms if variant == "sparse24" and ("dense", mode, bs) in ms}


def table(paths: list[Path]) -> str:
    lines = ["| dtype | run | goal | target | measured (batch: speedup) | met |",
             "|---|---|---|---|---|---|"]
    for path in paths:
        rows = latest_run(path)
        env = rows[0]["env"]
        ratio = speedups(rows)
        for name, mode, covers, target in GOALS:
            points = sorted((bs, s) for (m, bs), s in ratio.items() if m == mode and covers(bs))
            measured = ", ".join(f"{bs}: {s:.2f}x" for bs, s in points) or "-"
            met = "yes" if points and all(s >= target for _, s in points) else "no"
            lines.append(f"| {rows[0]['dtype']} | `{rows[0]['run_id']}` ({env['git_commit']}) | {name} "
                         f"| >= {target}x | {measured} | {met} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    text = "# BERT-base goals (sparse24 / dense, same mode, same run)\n\n" + table(args.paths)
    text += ("\nSpeedup = dense ms / sparse24 ms from bench/bert.py (seq 384, random bert-base-cased "
             "weights, median of blocked_autorange); a goal is met when every batch size it covers "
             "meets it.\n")
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
