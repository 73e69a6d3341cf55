"""``python -m sparse24 tune``: tune the sparse GEMM for N x K shapes or a model's linears, e.g.
``--shapes 768x768,3072x768 --m 1,16,64`` or ``--model bert-base-uncased --write-defaults``.

Token counts of one M bucket are tuned once. Results go to the user cache (``--cache-dir`` or
``$SPARSE24_CACHE_DIR``); ``--write-defaults`` merges that file into the shipped defaults.

Which is which: this is the CLI only; it calls the op-side search ``sparse24.ops.tune.tune`` per
(shape, M), which stores in ``sparse24.tuning.cache``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any
from unittest import mock

from sparse24.layout import K_MULTIPLE, N_MULTIPLE, granularity_error
from sparse24.tuning.autotune import describe_exception, tqdm
from sparse24.tuning.cache import CACHE_DIR_ENV, TuningCache, format_config, m_bucket
from sparse24.tuning.cache import write_defaults

DEFAULT_M = "1,16,64,256,4096"
EXIT_NO_CUDA = 2  # "cannot run here", as `python -m sparse24 bench` (bench_quick.EXIT_NO_CUDA)


class UsageError(ValueError):
    """A bad command line: reported without a traceback, exit status 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``tune`` options (on a subcommand parser or a standalone one)."""
    parser.add_argument("--shapes", help="N x K weight shapes, e.g. 768x768,3072x768")
    parser.add_argument("--model", help="a transformers model name or local directory: tune its "
                        f"distinct nn.Linear shapes (those with N %% {N_MULTIPLE} == 0 and "
                        f"K %% {K_MULTIPLE} == 0)")  # %% : argparse %-formats help texts
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="pass trust_remote_code to AutoConfig")
    parser.add_argument("--m", default=DEFAULT_M, help=f"token counts M (default {DEFAULT_M})")
    parser.add_argument("--dtype", choices=("float16", "bfloat16"), default="float16")
    parser.add_argument("--device", default="cuda", help="CUDA device to tune on (default cuda)")
    parser.add_argument("--cache-dir", help="where tuned configs are written "
                        f"(default ${CACHE_DIR_ENV} or ~/.cache/sparse24)")
    parser.add_argument("--write-defaults", action="store_true", help="afterwards, merge this "
                        "GPU's cache file into the shipped sparse24/tuning/defaults")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bars")


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """'768x768,3072x768' -> [(768, 768), (3072, 768)]; UsageError for bad or unpackable ones."""
    shapes: dict[tuple[int, int], None] = {}  # ordered, without repeats
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            n, k = (int(p) for p in item.lower().split("x"))
        except ValueError:
            raise UsageError(f"--shapes: {item!r} is not N x K (e.g. 3072x768)") from None
        problem = "must be positive" if min(n, k) < 1 else granularity_error(n, k)
        if problem:
            raise UsageError(f"--shapes: {item}: {problem}")
        shapes[n, k] = None
    if not shapes:
        raise UsageError("--shapes: nothing given")
    return list(shapes)


def parse_m(text: str) -> list[int]:
    """'1,16,17,20' -> [1, 16, 17]: the first M of each M bucket."""
    by_bucket: dict[int, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        if not item.isdigit() or int(item) < 1:
            raise UsageError(f"--m: {item!r} is not an integer >= 1")
        by_bucket.setdefault(m_bucket(int(item)), int(item))
    if not by_bucket:
        raise UsageError("--m: nothing given")
    return list(by_bucket.values())


def model_linear_shapes(name_or_dir: str, trust_remote_code: bool = False
                        ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(packable, skipped) distinct (out_features, in_features) of a model's nn.Linear layers,
    built on the meta device (no weights) with ``AutoModel`` (no task head: those stay dense)."""
    import torch
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(name_or_dir, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    shapes = sorted({(m.out_features, m.in_features) for m in model.modules()
                     if isinstance(m, torch.nn.Linear)})
    skipped = [s for s in shapes if granularity_error(*s)]
    return [s for s in shapes if s not in skipped], skipped


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def main(args: argparse.Namespace | Sequence[str] | None = None,
         tune: Callable[..., Any] | None = None) -> int:
    """Exit status 0 ok, 1 tuning failed, 2 bad usage or no CUDA GPU. ``tune`` defaults to
    ``sparse24.ops.tune.tune`` (imported only when run: it pulls in Triton); tests pass a fake."""
    if not isinstance(args, argparse.Namespace):
        parser = argparse.ArgumentParser(
            prog="sparse24 tune", description="Tune the sparse GEMM for shapes or a model.")
        add_arguments(parser)
        args = parser.parse_args(args)
    try:
        return _main(args, tune)
    except UsageError as exc:
        print(f"sparse24 tune: error: {exc}", file=sys.stderr)
        return 2


def _fail(message: str) -> int:
    print(f"sparse24 tune: error: {message}", file=sys.stderr)
    return 1


def _main(args: argparse.Namespace, tune: Callable[..., Any] | None) -> int:
    import torch

    if not args.shapes and not args.model:
        raise UsageError("give --shapes and/or --model")
    shapes, ms = parse_shapes(args.shapes) if args.shapes else [], parse_m(args.m)
    if not str(args.device).startswith("cuda"):
        raise UsageError(f"--device {args.device}: tuning runs on a CUDA device")
    if not _cuda_available():
        print("sparse24 tune: needs a CUDA GPU (torch.cuda.is_available() is False here): it "
              "times the kernels on the GPU they will run on", file=sys.stderr)
        return EXIT_NO_CUDA
    if args.model:
        try:
            packable, skipped = model_linear_shapes(args.model, args.trust_remote_code)
        except (ImportError, OSError, ValueError) as exc:  # no transformers, no such model
            return _fail(f"cannot read model {args.model!r}: {describe_exception(exc)}")
        for n, k in skipped:
            print(f"sparse24 tune: skipping {n}x{k} from {args.model}: {granularity_error(n, k)}",
                  file=sys.stderr)
        shapes += [s for s in packable if s not in shapes]
        if not shapes:
            return _fail(f"{args.model} has no packable nn.Linear shape")
    if tune is None:
        from sparse24.ops.tune import tune

    rows: list[tuple[int, int, int, Any]] = []  # (n, k, m, TuneResult or error text)
    env = {CACHE_DIR_ENV: args.cache_dir} if args.cache_dir else {}
    with mock.patch.dict(os.environ, env):  # tune() stores in the cache of $SPARSE24_CACHE_DIR
        for n, k, m in tqdm([(n, k, m) for n, k in shapes for m in ms], desc="tune",
                            unit="shape", disable=not args.progress):
            try:
                result = tune(n, k, m, getattr(torch, args.dtype), device=args.device,
                              progress=args.progress)
            except Exception as exc:  # noqa: BLE001 - reported in the table, the rest goes on
                result = describe_exception(exc)
            rows.append((n, k, m, result))
        print(format_table(rows, args.dtype))
        tuned = [row[3] for row in rows if not isinstance(row[3], str)]
        if args.write_defaults and tuned:
            source = TuningCache().path_for(tuned[0].key.gpu, tuned[0].key.triton)
            kind = {}  # declared so that GPUs of the same kind use the file (configs.tuned)
            if torch.cuda.is_available():
                props = torch.cuda.get_device_properties(args.device)
                kind = {"capability": f"{props.major}.{props.minor}",
                        "sm_count": props.multi_processor_count}
            print(f"wrote shipped defaults {write_defaults(source, **kind)} from {source}",
                  file=sys.stderr)
    if len(tuned) < len(rows):
        return _fail(f"{len(rows) - len(tuned)} of {len(rows)} shapes failed to tune")
    return 0


def format_table(rows: Sequence[tuple[int, int, int, Any]], dtype: str) -> str:
    """One line per (shape, M); TFLOP/s count 2*M*N*K, to compare with a dense GEMM directly."""
    lines = [f"sparse24 tuned configs ({dtype}; TFLOP/s counts dense-equivalent 2*M*N*K)",
             f"{'N x K':<11} {'M':>6} {'bucket':>6} {'ms':>9} {'TFLOP/s':>8} rejected  config"]
    for n, k, m, r in rows:
        if isinstance(r, str):
            lines.append(f"{f'{n}x{k}':<11} {m:>6} {m_bucket(m):>6} {'-':>9} {'-':>8} {'-':>8}  "
                         f"FAILED {r}")
        else:
            lines.append(f"{f'{n}x{k}':<11} {m:>6} {r.key.m_bucket:>6} {r.ms:>9.4f} "
                         f"{2 * m * n * k / r.ms / 1e9:>8.1f} "
                         f"{f'{r.n_rejected}/{r.n_candidates}':>8}  {format_config(r.config)}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
