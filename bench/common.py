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
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from sparse24.records import (  # noqa: F401 - the benches use these through this module
    Recorder, append_jsonl, env_line, env_record, fmt, git_state, jsonable, markdown_table,
    new_run_id, read_jsonl, results_dir, select_run, write_markdown,
)
from sparse24.tuning import dtype_name  # noqa: F401 - re-exported: the benches' name for it

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = results_dir()  # bench/results/<this machine's device>: one tree per device

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


def back_to_back_us(fn: Callable[[], Any], calls: int, *, warmup: int = 20,
                    host_only: bool = False) -> float:
    """Wall time per call of ``calls`` back-to-back eager calls of fn, one sync at the end: where
    the GPU work is shorter than the host's, the host's cost per call. ``host_only``: the clock
    read before that sync, so that with fewer calls than the launch queue holds (1024) a kernel
    longer on the GPU than on the host is not waited for either."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    if host_only:
        elapsed = time.perf_counter() - start
        torch.cuda.synchronize()
    else:
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return elapsed / calls * 1e6


def in_turns(timers: dict[str, Callable[[], float | None]], rounds: int) -> dict[str, list]:
    """Each timer called once a round, in the dict's order, for ``rounds`` rounds: what each
    returned (ms, or None for a variant that failed). A drift of the machine lands on every
    variant of a round rather than on whichever was timed during it: on a lent H100, BERT-base's
    dense eager forward at batch 16 took 4.62 to 9.21 ms across three rounds of one run
    (bench/NOTES.md, session 10)."""
    times: dict[str, list] = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            times[name].append(timer())
    return times


def ratio_summary(base_ms: Sequence[float], ms: Sequence[float]) -> dict[str, float]:
    """base / ms per round (the rounds of in_turns): their median as the speedup, and their range."""
    ratios = [b / m for b, m in zip(base_ms, ms, strict=True)]
    return {"speedup": statistics.median(ratios), "speedup_min": min(ratios),
            "speedup_max": max(ratios)}


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
        print(f"plot_{bench}: {src} does not exist; run python -m bench.{bench} first", file=sys.stderr)
        return 1
    rows = select_run(read_jsonl(src), args.run_id)
    png = plot(rows, args.out_dir / png_name)
    print(f"wrote {png} (run {rows[0]['run_id']}, {len(rows)} rows)")
    return 0
