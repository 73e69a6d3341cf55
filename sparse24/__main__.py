"""python -m sparse24 {demo,tune,squad} ..."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparse24", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="GPU: quick benchmark; CPU: correctness demo through the Triton interpreter")
    from sparse24.tuning import cli as tune_cli
    from sparse24.squad import cli as squad_cli

    tune_cli.add_arguments(sub.add_parser("tune", help="autotune the sparse GEMM for a model or shapes"))
    squad_cli.add_arguments(sub.add_parser("squad", help="prune, fine-tune, accelerate and evaluate on SQuAD"))
    args = parser.parse_args(argv)
    if args.command == "demo":
        from sparse24 import demo

        return demo.main(args)
    if args.command == "tune":
        return tune_cli.main(args)
    return squad_cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
