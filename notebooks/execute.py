"""Execute notebooks/semi_structured_sparse.ipynb with nbclient and save it with its outputs.

    python notebooks/execute.py [--out PATH] [--timeout SECONDS]

Environment: SPARSE24_NOTEBOOK_MODEL (checkpoint directory or hub name), SPARSE24_NOTEBOOK_TINY=1
for the tiny CPU configuration, SPARSE24_REPO (the repository root; default: this file's parent).
"""

import argparse
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "semi_structured_sparse.ipynb"


def execute(out: Path, timeout: int) -> nbformat.NotebookNode:
    os.environ.setdefault("SPARSE24_REPO", str(HERE.parent))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(HERE)}}).execute()
    nbformat.write(nb, out)
    return nb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=NOTEBOOK)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args()
    execute(args.out, args.timeout)
    print("executed ->", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
