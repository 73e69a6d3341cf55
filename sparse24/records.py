"""Where and with what a number was measured, and how results are written: one module for the
benches under ``bench/``, ``python -m sparse24 bench`` and the SQuAD report.

- ``env_record()``: device, library versions, git commit (``SPARSE24_COMMIT`` wins when set: the
  GPU machine runs on a copy of the working tree whose ``.git`` may be stale), as a flat dict.
- ``results_dir()``: ``bench/results/<device>/`` of the checkout (``h200``, ``h100``, ``cpu``, ...),
  one tree per device, so results of different machines never mix.
- JSON lines: one line per measurement with ``bench``, ``run_id`` and ``env``
  (``Recorder``/``append_jsonl``/``read_jsonl``/``select_run``), strict JSON (NaN becomes null).
- Markdown: ``markdown_table`` and ``write_markdown`` (the latest run's table, headed by
  ``env_line``).

Nothing here touches the GPU at import time, and nothing is imported beyond torch.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import re
import secrets
import subprocess
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

COMMIT_ENV = "SPARSE24_COMMIT"


def repo_root() -> Path:
    """The checkout this package runs from (the parent of sparse24/ when it holds pyproject.toml),
    else the current directory (an installed copy)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() else Path.cwd()


def device_slug(name: str | None = None) -> str:
    """A short folder name for a device: 'NVIDIA H200' -> 'h200', 'NVIDIA H100 80GB HBM3' ->
    'h100', 'NVIDIA A100-SXM4-80GB' -> 'a100'; no GPU -> 'cpu'."""
    if name is None:
        name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    model = re.search(r"\b([a-z]{1,3}\d{2,4}[a-z]?)\b", name.lower().replace("-", " "))
    if model:
        return model.group(1)
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def results_dir(device: str | None = None) -> Path:
    """``bench/results/<device slug>`` of the checkout: where results of this machine go."""
    return repo_root() / "bench" / "results" / device_slug(device)


# ------------------------------------------------------------------------------ environment
def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=repo_root(), capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty). ``SPARSE24_COMMIT``, when set, wins (dirty then unknown): the GPU machine
    runs on a copy of the working tree whose .git may name an older commit (seen 2026-11-21)."""
    pinned = os.environ.get(COMMIT_ENV)
    if pinned:
        return pinned, None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return _git("rev-parse", "HEAD"), None if status is None else bool(status)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if out.returncode == 0 and lines else None


def env_record(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Where and with what a number was measured. No hostname: results are committed."""
    import sparse24

    commit, dirty = git_state()
    rec: dict[str, Any] = {
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "gpu": None, "capability": None, "sm_count": None, "gpu_memory_gib": None, "driver": None,
        "torch": torch.__version__,  # with its local tag (+cu130, +cpu): which build ran
        "triton": _version("triton"), "cuda": torch.version.cuda, "cusparselt": None,
        "transformers": _version("transformers"), "accelerate": _version("accelerate"),
        "numpy": _version("numpy"),
        "python": platform.python_version(), "os": f"{platform.system()} {platform.machine()}",
        "sparse24": sparse24.__version__, "layout_version": sparse24.LAYOUT_VERSION,
        "git_commit": commit, "git_dirty": dirty,
    }
    try:
        rec["cusparselt"] = torch.backends.cusparselt.version()
    except (AttributeError, RuntimeError):
        pass
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        name = torch.cuda.get_device_name()
        rec.update(device=name, gpu=name, capability=f"{props.major}.{props.minor}",
                   sm_count=props.multi_processor_count,
                   gpu_memory_gib=round(props.total_memory / 2**30, 1), driver=_driver_version())
    rec.update(extra or {})
    return rec


def env_line(env: dict[str, Any]) -> str:
    """One readable line naming the device, versions and commit, for the top of a table."""
    device = env.get("gpu") or env.get("device") or "no GPU"
    if env.get("capability"):
        device += f" (sm{env['capability'].replace('.', '')})"
    commit = (env.get("git_commit") or "unknown")[:12]
    if env.get("git_dirty"):
        commit += " +dirty"
    parts = [device, f"torch {env.get('torch')}", f"triton {env.get('triton')}",
             f"CUDA {env.get('cuda')}", f"cuSPARSELt {env.get('cusparselt')}",
             f"commit {commit}", env.get("timestamp_utc") or ""]
    return " · ".join(p for p in parts if p)


def new_run_id() -> str:
    """Sortable and unique: UTC time plus a few random hex digits (two runs in one second differ)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


# ------------------------------------------------------------------------------- JSON lines
def jsonable(value: Any) -> Any:
    """A strict-JSON copy: NaN/Inf become null, dataclasses dicts, dtypes/paths/other strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, torch.Size):
        return list(value)
    return str(value)


def append_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append rows, one strict JSON object a line (a run cut off keeps what it measured)."""
    if isinstance(rows, dict):  # one row passed bare would be written as its keys, one a line
        raise TypeError("append_jsonl takes an iterable of rows: pass [row] for one")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(jsonable(row), allow_nan=False) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def select_run(rows: list[dict[str, Any]], run_id: str | None = None) -> list[dict[str, Any]]:
    """The rows of one run: the given run_id, or the run of the last line (the latest appended)."""
    if not rows:
        return []
    wanted = run_id or rows[-1].get("run_id")
    picked = [r for r in rows if r.get("run_id") == wanted]
    if not picked:
        known = sorted({str(r.get("run_id")) for r in rows})
        raise SystemExit(f"run_id {wanted!r} not found; runs in the file: {', '.join(known)}")
    return picked


class Recorder:
    """Appends one JSON line per measurement to ``<out_dir>/<bench>.jsonl``, each with the bench
    name, the run id and the environment record."""

    def __init__(self, bench: str, out_dir: Path, env: dict[str, Any], run_id: str | None = None):
        self.bench, self.out_dir, self.env = bench, Path(out_dir), env
        self.run_id = run_id or new_run_id()
        self.rows: list[dict[str, Any]] = []

    @property
    def jsonl_path(self) -> Path:
        return self.out_dir / f"{self.bench}.jsonl"

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        full = {"bench": self.bench, "run_id": self.run_id, **row, "env": self.env}
        append_jsonl(self.jsonl_path, [full])
        self.rows.append(full)
        return full


# --------------------------------------------------------------------------------- markdown
def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table, columns padded so it also reads well as plain text."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"

    sep = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def write_markdown(out_dir: Path, bench: str, title: str, env: dict[str, Any], run_id: str,
                   headers: Sequence[str], rows: Sequence[Sequence[Any]],
                   notes: Sequence[str] = ()) -> tuple[Path, str]:
    """Overwrite <out_dir>/<bench>.md with the latest run's table; returns (path, text)."""
    parts = [f"# {title}", "", env_line(env) + f" · run `{run_id}`", "", markdown_table(headers, rows)]
    if notes:
        parts += [""] + [f"- {n}" for n in notes]
    text = "\n".join(parts) + "\n"
    path = Path(out_dir) / f"{bench}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path, text


def fmt(value: float | None, digits: int = 2) -> str:
    """A number for a table cell; '-' when missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"
