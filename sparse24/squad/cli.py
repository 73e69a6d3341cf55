"""Command line of the SQuAD experiment: ``add_arguments(parser)`` and ``main(args) -> int``.

Also runnable on its own, which is how ``torchrun`` starts it on several GPUs::

    python -m sparse24.squad.cli --model bert-base-cased --offline
    torchrun --nproc_per_node 8 -m sparse24.squad.cli --model bert-base-cased --offline
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sparse24.squad import pipeline
from sparse24.squad.pipeline import SquadConfig

_DEFAULTS = SquadConfig()


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the SQuAD options to ``parser`` (defaults are SquadConfig's); returns the parser."""
    d = _DEFAULTS
    g = parser.add_argument_group("model and data")
    g.add_argument(
        "--model", default=d.model, help="hub name or local directory (default %(default)s)"
    )
    g.add_argument(
        "--train-file",
        help="local SQuAD JSON (.json or .json.gz) to fine-tune on; needs --dev-file",
    )
    g.add_argument(
        "--dev-file", help="local SQuAD JSON (.json or .json.gz) to evaluate on; needs --train-file"
    )
    g.add_argument(
        "--squad-dev-gz",
        help="dev-v1.1.json.gz for the offline protocol (split by article: i %% 3 == 0 evaluates); "
        "default: ../shared/data/squad/ of the checkout or the current directory",
    )
    g.add_argument(
        "--offline", action="store_true", help="do not try the hub: use the offline protocol"
    )
    g.add_argument(
        "--hub-dataset", default=d.hub_dataset, help="hub dataset name (default %(default)s)"
    )
    g.add_argument("--max-train-samples", type=int, help="fine-tune on the first N questions only")
    g.add_argument("--max-eval-samples", type=int, help="evaluate on the first N questions only")

    g = parser.add_argument_group("features and answers")
    g.add_argument(
        "--max-length",
        type=int,
        default=d.max_length,
        help=f"tokens per window, at least {pipeline.MIN_MAX_LENGTH} (default %(default)s)",
    )
    g.add_argument(
        "--stride",
        type=int,
        default=d.stride,
        help="tokens shared by overlapping windows, less than half of --max-length "
        "(default %(default)s)",
    )
    g.add_argument(
        "--n-best",
        type=int,
        default=d.n_best,
        help="start/end candidates per window (default %(default)s)",
    )
    g.add_argument(
        "--max-answer-length",
        type=int,
        default=d.max_answer_length,
        help="tokens (default %(default)s)",
    )

    g = parser.add_argument_group("training")
    g.add_argument(
        "--epochs",
        type=float,
        default=d.epochs,
        help="dense fine-tuning epochs (default %(default)s)",
    )
    g.add_argument(
        "--sparse-epochs",
        type=float,
        default=d.sparse_epochs,
        help="2:4 fine-tuning epochs (default %(default)s)",
    )
    g.add_argument(
        "--max-steps",
        type=int,
        default=d.max_steps,
        help="> 0: optimizer steps per phase, overriding epochs",
    )
    g.add_argument("--lr", type=float, default=d.lr, help="learning rate (default %(default)s)")
    g.add_argument("--sparse-lr", type=float, help="learning rate of the 2:4 phase (default: --lr)")
    g.add_argument(
        "--batch-size", type=int, default=d.batch_size, help="per device (default %(default)s)"
    )
    g.add_argument(
        "--eval-batch-size", type=int, default=d.eval_batch_size, help="(default %(default)s)"
    )
    g.add_argument(
        "--grad-accum",
        type=int,
        default=d.grad_accum,
        help="gradient accumulation steps (default %(default)s)",
    )
    g.add_argument(
        "--warmup-ratio", type=float, default=d.warmup_ratio, help="(default %(default)s)"
    )
    g.add_argument(
        "--weight-decay", type=float, default=d.weight_decay, help="(default %(default)s)"
    )
    g.add_argument("--seed", type=int, default=d.seed, help="(default %(default)s)")
    g.add_argument(
        "--precision",
        choices=("auto", "fp32", "fp16", "bf16"),
        default=d.precision,
        help="training precision; auto: bf16 (or fp16) on CUDA, fp32 on CPU (default %(default)s)",
    )
    g.add_argument(
        "--logging-steps", type=int, default=d.logging_steps, help="(default %(default)s)"
    )

    g = parser.add_argument_group("outputs")
    g.add_argument(
        "--output-dir", help="where the JSON, markdown and PNG go (default: bench/results/<device>)"
    )
    g.add_argument("--run-name", help="file name stem of the outputs (default: squad_<model>)")
    g.add_argument(
        "--speed-results",
        help="BERT speed bench results whose timings become rows of the markdown table: "
        "bench/bert.py's bert.jsonl (latest run, dense vs sparse24) or rows with batch_size, "
        "dense_ms, sparse_ms",
    )
    g.add_argument(
        "--skip-kernels", action="store_true", help="stop before sparsify_ (no sparse24 kernels)"
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def config_from_args(args: argparse.Namespace) -> SquadConfig:
    """The SquadConfig an argparse namespace from ``add_arguments`` describes."""
    fields = {f: getattr(args, f) for f in SquadConfig.__dataclass_fields__ if hasattr(args, f)}
    fields["progress"] = not getattr(args, "no_progress", False)
    return SquadConfig(**fields)


def main(args: argparse.Namespace) -> int:
    """Run the experiment; 0 on success, 1 when the sparse24 check fails, 2 on a usage error (a
    missing model or data file, a malformed data file, options that go together, a value no run
    can use), printed as one line."""
    try:
        results = pipeline.run(config_from_args(args))
    except pipeline.SquadUsageError as err:
        print(f"python -m sparse24 squad: error: {err}", file=sys.stderr)
        return 2
    if results is None:  # a non-main torchrun rank: it trained, the main rank reports
        return 0
    check = results.get("kernel_check")
    return 1 if check is not None and not check["passed"] else 0


def _entry(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sparse24.squad.cli",
        description="SQuAD v1.1: dense fine-tune, 2:4 prune, sparse fine-tune, sparse24 kernels.",
    )
    return main(add_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    sys.exit(_entry())
