"""``python -m sparse24 tune``: tune the sparse GEMM for given shapes or for a model's linears.

Examples::

    python -m sparse24 tune --shapes 768x768,3072x768 --m 1,16,64,256,4096
    python -m sparse24 tune --model bert-base-uncased --dtype bfloat16 --write-defaults

Shapes are N x K (nn.Linear out_features x in_features). ``--m`` lists token counts; counts that
fall in the same M bucket are tuned once. Results go to the user cache (``--cache-dir`` or
``$SPARSE24_CACHE_DIR``); ``--write-defaults`` then copies that cache file into the package's
shipped defaults for this GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sparse24.layout import K_MULTIPLE, N_MULTIPLE, granularity_error
from sparse24.tuning.autotune import describe_exception
from sparse24.tuning.cache import CACHE_DIR_ENV, TuningCache, write_defaults
from sparse24.tuning.keys import format_config, m_bucket

DESCRIPTION = "Tune the sparse GEMM for given shapes or for a model's linear layers."
DTYPES = ("float16", "bfloat16")
DEFAULT_M = "1,16,64,256,4096"
# Where tune(n, k, m, dtype, device="cuda", progress=True) -> TuneResult lives, first match wins.
# (sparse24.ops.linear is the op function, not a module; the tuner is its own module.)
TUNE_MODULES = ("sparse24.ops.tune",)

TuneFn = Callable[..., Any]  # tune(n, k, m, dtype, device="cuda", progress=True) -> TuneResult


class UsageError(ValueError):
    """A bad command line: reported without a traceback, exit status 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``tune`` options to ``parser`` (a subcommand parser or a standalone one)."""
    parser.add_argument(
        "--shapes", help="comma-separated N x K weight shapes, e.g. 768x768,3072x768"
    )
    parser.add_argument(
        "--model",
        help="a transformers model name or local directory: tune its distinct nn.Linear shapes "
        # argparse %-formats help strings, hence %%.
        f"(those with N %% {N_MULTIPLE} == 0 and K %% {K_MULTIPLE} == 0)",
    )
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="pass trust_remote_code to AutoConfig"
    )
    parser.add_argument("--m", default=DEFAULT_M, help=f"token counts M (default {DEFAULT_M})")
    parser.add_argument("--dtype", choices=DTYPES, default="float16")
    parser.add_argument("--device", default="cuda", help="CUDA device to tune on (default cuda)")
    parser.add_argument(
        "--cache-dir",
        help=f"where tuned configs are written (default ${CACHE_DIR_ENV} or ~/.cache/sparse24)",
    )
    parser.add_argument(
        "--write-defaults",
        action="store_true",
        help="afterwards, merge this GPU's cache file into the shipped sparse24/tuning/defaults",
    )
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bars"
    )


# ---------------------------------------------------------------------------------------------
# Parsing inputs


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """'768x768,3072x768' -> [(768, 768), (3072, 768)]; raises UsageError on bad or unpackable."""
    shapes: list[tuple[int, int]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        parts = item.lower().split("x")
        try:
            n, k = (int(p) for p in parts)
        except ValueError:
            raise UsageError(f"--shapes: {item!r} is not N x K (e.g. 3072x768)") from None
        if n < 1 or k < 1:
            raise UsageError(f"--shapes: {item!r} must be positive")
        problem = granularity_error(n, k)
        if problem:
            raise UsageError(f"--shapes: {item}: {problem}")
        if (n, k) not in shapes:
            shapes.append((n, k))
    if not shapes:
        raise UsageError("--shapes: no shape given")
    return shapes


def parse_m(text: str) -> list[int]:
    """'1,16,64' -> [1, 16, 64], keeping only the first M of each M bucket."""
    ms: list[int] = []
    buckets: set[int] = set()
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            m = int(item)
        except ValueError:
            raise UsageError(f"--m: {item!r} is not an integer") from None
        if m < 1:
            raise UsageError(f"--m: {m} must be >= 1")
        if m_bucket(m) not in buckets:
            buckets.add(m_bucket(m))
            ms.append(m)
    if not ms:
        raise UsageError("--m: no token count given")
    return ms


def model_linear_shapes(
    name_or_dir: str, trust_remote_code: bool = False
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(packable, skipped): the distinct (out_features, in_features) of a model's nn.Linear layers.

    The model is built from its config on the meta device, so no weights are downloaded or
    allocated. Built with ``AutoModel``: task heads (LM head, classifier) are left out, as they
    usually stay dense. Layers that are not ``nn.Linear`` (GPT-2's Conv1D) are not listed.
    """
    import torch
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(name_or_dir, trust_remote_code=trust_remote_code)
    extra = {"trust_remote_code": True} if trust_remote_code else {}
    with torch.device("meta"):
        model = AutoModel.from_config(config, **extra)
    shapes = sorted(
        {(m.out_features, m.in_features) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    )
    packable = [s for s in shapes if granularity_error(*s) is None]
    skipped = [s for s in shapes if granularity_error(*s) is not None]
    return packable, skipped


# ---------------------------------------------------------------------------------------------
# Running


@dataclass
class Row:
    """One line of the final table."""

    n: int
    k: int
    m: int
    result: Any = None  # TuneResult when tuning succeeded
    error: str | None = None

    @property
    def tflops(self) -> float:
        # Dense-equivalent FLOPs 2*M*N*K, so the figure compares directly with a dense GEMM.
        return 2 * self.m * self.n * self.k / (self.result.ms * 1e-3) / 1e12


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@contextlib.contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    """Set an environment variable for the duration (the tune function reads the cache dir from
    it), then restore it, so calling ``main`` from Python leaves no trace."""
    if value is None:
        yield
        return
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _progress(total: int, enabled: bool) -> Any:
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc="tune", unit="shape")
        except ImportError:
            pass
    return None


def main(args: argparse.Namespace | Sequence[str] | None = None, tune: TuneFn | None = None) -> int:
    """Run ``tune``; returns the exit status (0 ok, 1 tuning failed or no CUDA, 2 bad usage).

    ``args`` is the parsed namespace from a parser given to ``add_arguments`` (or an argv list).
    ``tune`` defaults to the GEMM module's ``tune`` (see ``TUNE_MODULES``), imported only here
    so that building the parser stays cheap; tests pass a fake.
    """
    if not isinstance(args, argparse.Namespace):
        parser = argparse.ArgumentParser(prog="sparse24 tune", description=DESCRIPTION)
        add_arguments(parser)
        args = parser.parse_args(args)
    try:
        return _main(args, tune)
    except UsageError as exc:
        print(f"sparse24 tune: error: {exc}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace, tune: TuneFn | None) -> int:
    import torch

    if not args.shapes and not args.model:
        raise UsageError("give --shapes and/or --model")
    shapes = parse_shapes(args.shapes) if args.shapes else []
    ms = parse_m(args.m)
    dtype = getattr(torch, args.dtype)
    if not str(args.device).startswith("cuda"):
        raise UsageError(f"--device {args.device}: tuning runs on a CUDA device")
    if not _cuda_available():
        print(
            "sparse24 tune: error: no CUDA GPU found (torch.cuda.is_available() is False); "
            "tuning times the kernels on the GPU they will run on",
            file=sys.stderr,
        )
        return 1

    if args.model:
        try:
            packable, skipped = model_linear_shapes(args.model, args.trust_remote_code)
        except (ImportError, OSError, ValueError) as exc:  # no transformers, no such model
            print(f"sparse24 tune: error: cannot read model {args.model!r}: "
                  f"{describe_exception(exc)}", file=sys.stderr)
            return 1
        for n, k in skipped:
            print(f"sparse24 tune: skipping {n}x{k} from {args.model}: {granularity_error(n, k)}",
                  file=sys.stderr)
        shapes += [s for s in packable if s not in shapes]
        if not shapes:
            print(f"sparse24 tune: error: {args.model} has no packable nn.Linear shape",
                  file=sys.stderr)
            return 1

    if tune is None:
        tune = _load_tune()
        if tune is None:
            return 1

    rows: list[Row] = []
    with _env(CACHE_DIR_ENV, args.cache_dir):
        bar = _progress(len(shapes) * len(ms), args.progress)
        for n, k in shapes:
            for m in ms:
                if bar is not None:
                    bar.set_postfix_str(f"{n}x{k} M={m}")
                row = Row(n, k, m)
                try:
                    row.result = tune(n, k, m, dtype, device=args.device, progress=args.progress)
                except Exception as exc:  # noqa: BLE001 - report it in the table, tune the rest
                    row.error = describe_exception(exc)
                rows.append(row)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        print(format_table(rows, args.dtype))
        failed = sum(row.error is not None for row in rows)
        if args.write_defaults and failed < len(rows):
            _write_defaults(rows)
    if failed:
        print(f"sparse24 tune: {failed} of {len(rows)} shapes failed to tune", file=sys.stderr)
        return 1
    return 0


def _load_tune() -> TuneFn | None:
    """``tune`` from the first module of ``TUNE_MODULES`` that defines it (``sparse24.ops.tune``),
    imported only now (it compiles nothing, but pulls in Triton and the kernels)."""
    errors = []
    for name in TUNE_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
            continue
        tune = getattr(module, "tune", None)
        if callable(tune):
            return tune
        errors.append(f"{name} has no tune()")
    print(f"sparse24 tune: error: the GEMM tuner is not available ({'; '.join(errors)})",
          file=sys.stderr)
    return None


def _write_defaults(rows: list[Row]) -> None:
    key = next(row.result.key for row in rows if row.result is not None)
    source = TuningCache().path_for(key.gpu, key.triton)
    dest = write_defaults(source)
    print(f"wrote shipped defaults {dest} from {source}", file=sys.stderr)


def format_table(rows: Sequence[Row], dtype: str) -> str:
    """A fixed-width table of what was chosen, one line per (shape, M)."""
    header = ("N x K", "M", "bucket", "ms", "TFLOP/s", "rejected", "config")
    lines: list[tuple[str, ...]] = []
    for row in rows:
        bucket = str(m_bucket(row.m))
        if row.result is None:
            failed = f"FAILED {row.error}"
            lines.append((f"{row.n}x{row.k}", str(row.m), bucket, "-", "-", "-", failed))
            continue
        r = row.result
        lines.append((
            f"{row.n}x{row.k}",
            str(row.m),
            str(r.key.m_bucket),
            f"{r.ms:.4f}",
            f"{row.tflops:.1f}",
            f"{r.n_rejected}/{r.n_candidates}",
            format_config(r.config),
        ))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(header)]

    def fmt(cells: tuple[str, ...]) -> str:
        # Left-align text columns, right-align numbers; the config column is not padded.
        out = []
        for i, cell in enumerate(cells):
            if i == len(cells) - 1:
                out.append(cell)
            elif i == 0:
                out.append(cell.ljust(widths[i]))
            else:
                out.append(cell.rjust(widths[i]))
        return "  ".join(out)

    title = f"sparse24 tuned configs ({dtype}; TFLOP/s counts dense-equivalent 2*M*N*K)"
    return "\n".join([title, fmt(header), *(fmt(line) for line in lines)])


if __name__ == "__main__":
    sys.exit(main())
