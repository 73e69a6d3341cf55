"""Test setup: Triton kernels run through the interpreter on CPU-only machines.

TRITON_INTERPRET must be set before any @triton.jit function is created, i.e. before
sparse24.kernels is imported; conftest.py is loaded before the test modules, so it is set here.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

HAS_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)


@pytest.fixture
def device():
    """Where kernel tests run: the GPU when there is one, else the CPU through the interpreter."""
    return "cuda" if HAS_CUDA else "cpu"


@pytest.fixture
def seed():
    """A fresh seed per test, printed on failure so a failing draw can be replayed."""
    s = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(s)
    return s
