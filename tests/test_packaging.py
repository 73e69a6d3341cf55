"""The repository root must not shadow packages of the stack.

``python -m pytest`` and ``python -m sparse24 ...`` put the current directory first on sys.path. A
top-level ``kernels/`` package once shadowed PyPI's ``kernels``, which transformers 5.25 imports,
and every test that touched transformers failed from the root (issue 21).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def importable_root_names() -> list[str]:
    """Names that ``import NAME`` would find as a regular module or package at the root."""
    names = []
    for entry in ROOT.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and (entry / "__init__.py").exists():
            names.append(entry.name)
        elif entry.suffix == ".py":
            names.append(entry.stem)
    return sorted(names)


def test_only_sparse24_is_importable_from_the_root():
    # A directory without __init__.py (bench/, tests/) is at most a namespace portion, which any
    # regular package of the same name elsewhere on sys.path wins over.
    assert importable_root_names() == ["sparse24"]


def test_the_triton_code_is_part_of_the_package():
    spec = importlib.util.find_spec("sparse24.kernels.pack")
    assert spec is not None and Path(spec.origin).parent == ROOT / "sparse24" / "kernels"


@pytest.mark.skipif(importlib.util.find_spec("kernels") is None
                    or "site-packages" not in str(importlib.util.find_spec("kernels").origin),
                    reason="PyPI's kernels package is not installed")
def test_import_kernels_from_the_root_finds_pypi_package():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    found = subprocess.run(
        [sys.executable, "-c", "import kernels; print(kernels.__file__)"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert "site-packages" in found and not found.startswith(str(ROOT / "kernels")), found
