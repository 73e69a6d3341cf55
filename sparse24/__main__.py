"""The sparse24 command line: python -m sparse24 {demo,bench,tune,squad} ..."""

from __future__ import annotations

import argparse
import sys

# name -> one-line description (shown by --help of the program and of each subcommand)
COMMANDS = {
    "demo": "the main job: GPU correctness + short timings; CPU demo via the interpreter",
    "bench": "short GPU benchmark (GEMM + BERT-base), written to bench/results/<device>/quick.*",
    "tune": "autotune the sparse GEMM for a model's Linear shapes or N x K shapes",
    "squad": "prune, fine-tune and evaluate on SQuAD v1.1 (needs the [bert] extra)",
}

_EPILOG = "Run `python -m sparse24 COMMAND --help` for the options of one command."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sparse24",
        description="sparse24: Triton kernels for 2:4 sparsity on NVIDIA sparse tensor cores.",
        epilog=_EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=COMMANDS[name], description=COMMANDS[name] + ".")

    add("demo")
    from sparse24 import bench_quick  # light: torch only until it runs

    bench_quick.add_arguments(add("bench"))
    from sparse24.tuning import cli as tune_cli

    tune_cli.add_arguments(add("tune"))
    # The squad options are plain argparse (no transformers import); running it needs the extra.
    from sparse24.squad import cli as squad_cli

    squad_cli.add_arguments(add("squad"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from sparse24 import demo

        return demo.main(args)
    if args.command == "bench":
        from sparse24 import bench_quick

        return bench_quick.main(args)
    if args.command == "tune":
        from sparse24.tuning import cli as tune_cli

        return tune_cli.main(args)
    from sparse24.squad import cli as squad_cli

    return squad_cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
