"""Re-render the SQuAD tables (bench/results/h200/squad_*.md) with the timing rows of a BERT bench run.

The accuracy rows come from each table's JSON (written by `python -m sparse24 squad`) and are not
touched; the timing rows (ms per batch, dense vs sparse24, eager / compiled / compiled
reduce-overhead) come from the latest run in a bench/bert.py JSON-lines file, by default the
H200's. The JSON's "speed_results" records which file and rows the table shows.

    python -m bench.squad_tables [--speed-results bench/results/h200/bert.jsonl] [NAME ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sparse24.records import read_jsonl
from sparse24.squad import report

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_TABLES = ("squad_mpnet", "squad_minilm", "squad_mpnet_sparse5")


def footnote(results: dict, speed_path: Path, speed_rows: list[dict]) -> str:
    hp = results["hyperparameters"]
    bench = read_jsonl(speed_path)[-1]
    env = bench.get("env", {})
    return (
        f"Timing rows: bench/bert.py (bert-base-cased geometry, {bench.get('dtype', 'float16')}, "
        f"seq {bench.get('seq_len', 384)}, random weights), run {bench.get('run_id')} at commit "
        f"{env.get('git_commit')} on the {env.get('gpu')}, in "
        f"{speed_path.resolve().relative_to(RESULTS.parent.parent)}; the accuracy rows come from "
        f"`python -m sparse24 squad` ({hp.get('epochs')} dense + {hp.get('sparse_epochs')} "
        f"sparse epochs, lr {hp.get('lr')}, batch {hp.get('batch_size')}, seed "
        f"{hp.get('seed')})."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(DEFAULT_TABLES))
    parser.add_argument("--speed-results", type=Path, default=RESULTS / "h200" / "bert.jsonl")
    args = parser.parse_args()
    speed_rows = report.load_speed_rows(args.speed_results)
    for name in args.names:
        json_path = RESULTS / "h200" / f"{name}.json"
        results = json.loads(json_path.read_text())
        results["speed_results"] = {"path": str(args.speed_results.resolve().relative_to(RESULTS.parent.parent)),
                                    "rows": speed_rows}
        text = report.markdown_table(results, speed_rows)
        text += "\n" + footnote(results, args.speed_results, speed_rows) + "\n"
        (RESULTS / "h200" / f"{name}.md").write_text(text)
        report.write_json(results, json_path)
        print(f"wrote {RESULTS / 'h200' / f'{name}.md'} ({len(speed_rows)} timing rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
