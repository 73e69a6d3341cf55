"""Shared pieces of the benches: environment record, timing, rotating inputs, result writers.

Every bench measures its baselines in the same run and reports ratios against them; a number is only
comparable with numbers from the same run (same device, clocks, software). Each measurement is one
JSON line in ``<out-dir>/<bench>.jsonl`` carrying the environment record and a ``run_id``, appended
as soon as it is measured (so a run cut off by a time limit keeps what it measured); the latest
run's table overwrites ``<out-dir>/<bench>.md``.

Nothing here touches the GPU at import time: the scripts must be importable (and their ``--help``
usable) on the CPU-only developer machines and CI.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from sparse24.tuning import dtype_name  # noqa: F401 - re-exported: the benches' name for it

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "bench" / "results"

DTYPES = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32}

# Exit code of a bench that cannot run here (no CUDA), distinct from a crash (1).
EXIT_NO_CUDA = 2


# ------------------------------------------------------------------------------------ CLI and setup
def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR,
                        help=f"where <bench>.jsonl / .md / .png go (default: {DEFAULT_OUT_DIR})")
    return parser


def require_cuda(script: str) -> None:
    """Exit with code 2 and a plain message when there is no CUDA device: timings on CPU mean nothing."""
    if torch.cuda.is_available():
        return
    built = torch.version.cuda or "no CUDA (CPU-only build)"
    print(f"{script}: needs a CUDA GPU, and torch.cuda.is_available() is False here "
          f"(torch {torch.__version__}, built with {built}). Run it on the GPU machine.",
          file=sys.stderr, flush=True)
    sys.exit(EXIT_NO_CUDA)


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise argparse.ArgumentTypeError(f"unknown dtype {name!r}; use one of {sorted(DTYPES)}") from None


def parse_int_list(text: str) -> list[int]:
    return [int(v) for v in text.replace(" ", "").split(",") if v]


def progress(msg: str) -> None:
    print(msg, flush=True)


# -------------------------------------------------------------------------------- environment record
def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty). SPARSE24_COMMIT, when set, wins: the GPU machine runs on a copy of the
    working tree whose .git may be a stale one (seen 2026-11-21: it reported an older commit)."""
    pinned = os.environ.get("SPARSE24_COMMIT")
    if pinned:
        return pinned, None
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    dirty = None if status is None else bool(status)
    return commit, dirty


def _driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if out.returncode == 0 and lines else None


def _version_of(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except (ImportError, AttributeError):
        return None


def env_record(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Where and with what a number was measured. No hostname: results are committed to the repo."""
    import sparse24

    commit, dirty = git_state()
    rec: dict[str, Any] = {
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "gpu": None,
        "capability": None,
        "sm_count": None,
        "gpu_memory_gib": None,
        "driver": None,
        "torch": torch.__version__,
        "triton": _version_of("triton"),
        "cuda": torch.version.cuda,
        "cusparselt": None,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.machine()}",
        "sparse24": sparse24.__version__,
        "layout_version": sparse24.LAYOUT_VERSION,
        "git_commit": commit,
        "git_dirty": dirty,
    }
    try:
        rec["cusparselt"] = torch.backends.cusparselt.version()
    except (AttributeError, RuntimeError):
        pass
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        rec.update(gpu=torch.cuda.get_device_name(), capability=f"{props.major}.{props.minor}",
                   sm_count=props.multi_processor_count,
                   gpu_memory_gib=round(props.total_memory / 2**30, 1), driver=_driver_version())
    rec.update(extra or {})
    return rec


def new_run_id() -> str:
    """Sortable and unique: UTC time plus a few random hex digits (two runs in one second differ)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def env_line(env: dict[str, Any]) -> str:
    """One readable line naming the device, versions and commit, for the top of a table."""
    cap = env.get("capability")
    gpu = env.get("gpu") or "no GPU"
    if cap:
        gpu += f" (sm{cap.replace('.', '')})"
    commit = (env.get("git_commit") or "unknown")[:12]
    if env.get("git_dirty"):
        commit += " +dirty"
    parts = [gpu, f"torch {env.get('torch')}", f"triton {env.get('triton')}",
             f"CUDA {env.get('cuda')}", f"cuSPARSELt {env.get('cusparselt')}",
             f"commit {commit}", env.get("timestamp_utc") or ""]
    return " · ".join(p for p in parts if p)


# ---------------------------------------------------------------------------------------- timing
QUANTILES = (0.2, 0.5, 0.8)


@dataclasses.dataclass
class Timing:
    """Milliseconds per call: the median and the 20th/80th percentiles of the timed runs."""
    ms: float
    p20_ms: float
    p80_ms: float
    mode: str  # "eager": every call launched from Python, L2 flushed before each; "graph": replayed

    def as_row(self) -> dict[str, Any]:
        return {"ms": self.ms, "p20_ms": self.p20_ms, "p80_ms": self.p80_ms, "mode": self.mode}


def time_eager(fn: Callable[[], Any], warmup_ms: float = 10, rep_ms: float = 50) -> Timing:
    """Median of per-call CUDA-event timings; triton's do_bench flushes the L2 before every call,
    so a small weight is read from HBM as it would be in a model too big for the L2. Host work
    that keeps the GPU waiting (e.g. torch 2:4's per-call setup) is part of the time."""
    from triton.testing import do_bench

    p20, p50, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=list(QUANTILES))
    return Timing(p50, p20, p80, "eager")


def time_graph(fn: Callable[[], Any], rep_ms: float = 20) -> Timing:
    """Median over replays of a CUDA graph holding many calls of fn: no launch or host overhead.
    The L2 is not flushed between calls, so give fn rotating inputs (see Rotating)."""
    from triton.testing import do_bench_cudagraph

    p20, p50, p80 = do_bench_cudagraph(fn, rep=rep_ms, quantiles=list(QUANTILES))
    return Timing(p50, p20, p80, "graph")


def time_mode(mode: str, fn: Callable[[], Any], *, warmup_ms: float = 10, rep_ms: float = 50) -> Timing:
    if mode == "eager":
        return time_eager(fn, warmup_ms, rep_ms)
    if mode == "graph":
        # do_bench_cudagraph returns ~10 samples of rep_ms each; less time buys the same precision.
        return time_graph(fn, max(5.0, rep_ms / 2))
    raise ValueError(f"unknown timing mode {mode!r}")


def l2_bytes() -> int:
    """L2 size of the current GPU (50 MiB on H100 if the property is missing)."""
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return int(getattr(props, "L2_cache_size", 50 * 2**20) or 50 * 2**20)


def rotation_count(bytes_per_set: int, l2: int, *, factor: float = 3.0, cap: int = 48) -> int:
    """How many distinct input sets make one pass over them touch `factor` times the L2, so each
    call finds its operands evicted (the L2 is not strict LRU, hence more than 1x)."""
    if bytes_per_set <= 0:
        return 1
    return max(1, min(cap, math.ceil(factor * l2 / bytes_per_set)))


class Rotating:
    """Calls fn on the next of several prepared argument tuples at every call.

    Captured in a CUDA graph, consecutive captured calls hold different pointers, so a replay walks
    through all the sets and small operands do not stay in the L2 from one call to the next.
    """

    def __init__(self, fn: Callable[..., Any], sets: Sequence[tuple]):
        if not sets:
            raise ValueError("Rotating needs at least one argument set")
        self.fn, self.sets, self.i = fn, list(sets), 0

    def __len__(self) -> int:
        return len(self.sets)

    def __call__(self) -> Any:
        args = self.sets[self.i]
        self.i = (self.i + 1) % len(self.sets)
        return self.fn(*args)


def rel_fro_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref||_F / ||ref||_F in float32 (inf when out has NaN/Inf where ref does not)."""
    out, ref = out.float(), ref.float()
    denom = torch.linalg.vector_norm(ref).item()
    err = torch.linalg.vector_norm(out - ref).item()
    if not math.isfinite(err):
        return math.inf
    return err / denom if denom > 0 else err


def error_text(exc: BaseException, limit: int = 300) -> str:
    """An exception as one short line for a table cell and a JSON field."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ").strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------- writers
def jsonable(value: Any) -> Any:
    """JSON-safe copy: NaN/Inf become null (strict JSON), dtypes/paths become strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, torch.dtype):
        return dtype_name(value)
    if isinstance(value, torch.Size):
        return list(value)
    return str(value)


def append_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(jsonable(row), allow_nan=False) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    return rows


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
    """Appends one JSON line per measurement, each with the bench name, run id and env record."""

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


def fmt_us(ms: float | None) -> str:
    """Milliseconds as microseconds with 3 significant-ish digits."""
    if ms is None:
        return "-"
    us = ms * 1e3
    return f"{us:.1f}" if us < 100 else f"{us:.0f}"


# Linear weight shapes (N x K = out x in features) the benches share.
BERT_SHAPES = [(768, 768), (3072, 768), (768, 3072)]
LLM_SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (14336, 4096)]


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """'bert', 'llm' and 'NxK' items, comma separated -> [(N, K), ...]."""
    groups = {"bert": BERT_SHAPES, "llm": LLM_SHAPES}
    shapes: list[tuple[int, int]] = []
    for item in text.replace(" ", "").split(","):
        if item in groups:
            shapes += groups[item]
        elif item:
            n, k = item.lower().split("x")
            shapes.append((int(n), int(k)))
    return shapes


def save_figure(fig, path) -> Path:
    """Write a matplotlib figure as a PNG (parent folders made) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_main(bench: str, png_name: str, plot: Callable[[list, Path], Path], description: str,
              argv: list[str] | None = None) -> int:
    """The command line of a plot script: read <out-dir>/<bench>.jsonl, plot one run to a PNG."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("--jsonl", type=Path, default=None, help=f"default: <out-dir>/{bench}.jsonl")
    parser.add_argument("--run-id", default=None, help="default: the latest run in the file")
    args = parser.parse_args(argv)
    src = args.jsonl or args.out_dir / f"{bench}.jsonl"
    if not src.exists():
        print(f"plot_{bench}: {src} does not exist; run bench/{bench}.py first", file=sys.stderr)
        return 1
    rows = select_run(read_jsonl(src), args.run_id)
    png = plot(rows, args.out_dir / png_name)
    print(f"wrote {png} (run {rows[0]['run_id']}, {len(rows)} rows)")
    return 0
