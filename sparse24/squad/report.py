"""Writing a run's results: JSON (everything), a markdown table (for people), a loss plot (PNG).

The markdown table follows the PyTorch "accelerating BERT with semi-structured sparsity" tutorial:
rows Exact Match (%) and F1 (%) with columns dense, 2:4 sparse and the delta, then optional timing
rows (milliseconds per batch, speedup = dense / sparse) from a BERT speed bench JSON.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path


from sparse24 import records

# Row labels of the results JSON, in pipeline order, with their names in the tables.
STAGES = {
    "dense": "dense fine-tuned",
    "pruned_no_retrain": "2:4 pruned, no retraining",
    "sparse_finetuned": "2:4 sparse fine-tuned (masked dense)",
    "masked_dense_fp16": "2:4 masked dense, whole model fp16 (F.linear)",
    "sparse24_kernels": "2:4 sparse24 kernels",
    "sparse24_reference": "2:4 sparse24 layers, PyTorch reference (no GPU)",
}
_SPEED_KEYS = ("batch_size", "dense_ms", "sparse_ms")


def default_output_dir() -> Path:
    """bench/results/<device> of this checkout (of the current directory for an installed copy)."""
    return records.results_dir()


def slug(text: str) -> str:
    """A file-name-safe version of a model name ("bert-base-cased", "/m/x" -> "m-x")."""
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-.") or "model"


def environment() -> dict:
    """Device, library versions and git commit, for the results JSON (sparse24.records)."""
    return records.env_record()


jsonable = records.jsonable


def write_json(obj: dict, path: Path) -> Path:
    """Write atomically (temporary file, then rename) so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        json.dump(jsonable(obj), f, indent=2)
        f.write("\n")
    os.chmod(f.name, 0o644)  # NamedTemporaryFile creates 0600; results are for everyone to read
    os.replace(f.name, path)
    return path


def _read_records(path: Path) -> list[dict]:
    """The records of a JSON list, an object with "rows", one object, or a JSON-lines file."""
    text = path.read_text()
    try:
        doc = json.loads(text)
        # A single object is either a wrapper with "rows" or one row (a one-line JSON-lines file).
        rows = doc.get("rows", [doc]) if isinstance(doc, dict) else doc
    except json.JSONDecodeError:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a list of rows, an object with 'rows', or JSON lines")
    return rows


_MODES = ("eager", "default", "reduce-overhead")  # bench/bert.py's modes, in table order


def _pivot_bench_rows(records: list[dict], path: Path) -> list[dict]:
    """Long-format rows of ``bench/bert.py`` (one per variant, batch size and compile setting)
    to wide rows: dense and sparse24 milliseconds side by side, from the latest run in the file."""
    run_id = records[-1].get("run_id")
    timed, speedups = {}, {}
    for r in records:
        if r.get("run_id") == run_id and r.get("ms") is not None:
            mode = (r.get("compile_mode") or "default") if r.get("compiled") else "eager"
            key = (_MODES.index(mode), r["batch_size"], r.get("seq_len"))
            timed[key, r["variant"]] = r["ms"]
            if r["variant"] == "sparse24" and r.get("speedup") is not None:
                speedups[key] = r["speedup"]  # a run in turns: the median of its rounds' ratios
    rows = []
    # Eager, compiled, reduce-overhead; then by batch size (seq_len may be missing: not sorted on).
    for key, variant in sorted(timed, key=lambda kv: kv[0][:2]):
        if variant != "dense" or (key, "sparse24") not in timed:
            continue
        mode, bs, seq = key
        row = {"batch_size": bs, "compiled": mode > 0, "mode": _MODES[mode]}
        row.update(dense_ms=timed[key, "dense"], sparse_ms=timed[key, "sparse24"])
        if key in speedups:
            row["speedup"] = speedups[key]
        if seq is not None:
            row["seq_len"] = seq
        rows.append(row)
    if not rows:
        raise ValueError(
            f"{path}: run {run_id} has no batch size timed for both dense and sparse24"
        )
    return rows


def load_speed_rows(path: str | os.PathLike) -> list[dict]:
    """Timing rows for the markdown table, from a BERT speed bench.

    Either the long-format JSON lines of ``bench/bert.py`` (``variant``, ``batch_size``, ``ms``,
    ``compiled``, ``run_id``; the latest run is used, dense vs sparse24), or wide rows with
    ``batch_size``, ``dense_ms`` and ``sparse_ms`` (milliseconds per batch, measured in one run;
    ``seq_len`` and ``compiled`` are shown when present).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"speed results not found: {path}")
    records = _read_records(path)
    if records and all("variant" in r for r in records):
        return _pivot_bench_rows(records, path)
    for i, row in enumerate(records):
        missing = [k for k in _SPEED_KEYS if k not in row]
        if missing:
            raise ValueError(
                f"{path}: row {i} lacks {missing} (each row needs {list(_SPEED_KEYS)}, or use "
                "bench/bert.py's JSON lines)"
            )
    return records


def _fmt_delta(x: float) -> str:
    return f"{x:+.2f}"


def markdown_table(results: dict, speed_rows: Sequence[dict] = ()) -> str:
    """The tutorial's table (dense vs 2:4 sparse with the delta), then every stage's scores."""
    scores = results["results"]
    dense_label = f"dense ({results['precision']['eval']})"
    # The 2:4 column is the sparse24 kernel model when it ran, else the masked dense model.
    sparse_key = next(
        k for k in ("sparse24_kernels", "sparse24_reference", "sparse_finetuned") if k in scores
    )
    lines = [
        f"SQuAD v1.1, {results['model']}, {results['data']['source']} "
        f"({results['data']['train_questions']:,} fine-tune / "
        f"{results['data']['eval_questions']:,} eval questions), "
        f"{results['environment']['device']}",
        "",
        f"| Metrics | {dense_label} | 2:4 sparse | delta / speedup |",
        "| --- | ---: | ---: | ---: |",
    ]
    for metric, name in (("exact_match", "Exact Match (%)"), ("f1", "F1 (%)")):
        d, s = scores["dense"][metric], scores[sparse_key][metric]
        lines.append(f"| {name} | {d:.2f} | {s:.2f} | {_fmt_delta(s - d)} |")
    for row in speed_rows:
        label = f"bs={row['batch_size']}"
        label += f", seq={row['seq_len']}" if "seq_len" in row else ""
        if row.get("compiled"):
            mode = row.get("mode", "default")
            label += ", compiled" if mode == "default" else f", compiled {mode}"
        # bench/bert.py's own figure where it has one (timed in turns, the median of the rounds'
        # ratios), else the ratio of the two medians
        speedup = row.get("speedup") or row["dense_ms"] / row["sparse_ms"]
        lines.append(
            f"| Time ({label}) ms | {row['dense_ms']:.2f} | {row['sparse_ms']:.2f} "
            f"| {speedup:.3f}x |"
        )
    lines += ["", "| Stage | Exact Match (%) | F1 (%) |", "| --- | ---: | ---: |"]
    for key, name in STAGES.items():
        if key in scores:
            lines.append(f"| {name} | {scores[key]['exact_match']:.2f} | {scores[key]['f1']:.2f} |")
    check = results.get("kernel_check")
    if check:
        verdict = "passed" if check["passed"] else "FAILED"
        lines += [
            "",
            f"{STAGES[check.get('stage', 'sparse24_kernels')]} vs "
            f"{STAGES[check.get('reference', 'sparse_finetuned')]}: "
            f"|dF1| = {check['abs_diff_f1']:.3f} "
            f"(tolerance {check['tolerance_f1']}): {verdict}",
        ]
    return "\n".join(lines) + "\n"


def plot_losses(training: dict[str, dict], path: Path) -> Path:
    """Training loss vs optimizer step, one line per phase, each phase continuing the step count
    of the one before. ``training`` maps phase -> {"loss_history": [...], "global_steps": n}."""
    import matplotlib  # noqa: PLC0415  (optional dependency, only needed here)

    matplotlib.use("Agg")  # no display on the GPU machine or in CI
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 4))
    offset = 0
    for phase, summary in training.items():
        history = summary["loss_history"]
        if offset:
            ax.axvline(offset, color="grey", lw=0.8, ls=":")  # where 2:4 pruning happened
        ax.plot(
            [offset + e["step"] for e in history],
            [e["loss"] for e in history],
            marker="." if len(history) < 30 else None,
            label=f"{phase} fine-tuning",
        )
        offset += summary["global_steps"]
    ax.set_xlabel("optimizer step (dotted: 2:4 prune, then fine-tuning with fixed masks)")
    ax.set_ylabel("training loss")
    ax.set_title("SQuAD fine-tuning: dense, then 2:4 sparse with fixed masks")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(
    results: dict, output_dir: str | os.PathLike, run_name: str, speed_results: str | None = None
) -> dict[str, str]:
    """Write <run_name>.json, .md and _loss.png under ``output_dir``; returns their paths."""
    out = Path(output_dir)
    paths = {
        "json": out / f"{run_name}.json",
        "markdown": out / f"{run_name}.md",
        "loss_plot": out / f"{run_name}_loss.png",
    }
    speed_rows = load_speed_rows(speed_results) if speed_results else []
    results["speed_results"] = {"path": speed_results, "rows": speed_rows} if speed_rows else None
    results["files"] = {k: str(p) for k, p in paths.items()}
    plot_losses(results["training"], paths["loss_plot"])
    paths["markdown"].parent.mkdir(parents=True, exist_ok=True)
    paths["markdown"].write_text(markdown_table(results, speed_rows))
    write_json(results, paths["json"])
    print(f"[squad] wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return {k: str(p) for k, p in paths.items()}
