"""Test setup: Triton kernels run through the interpreter on CPU-only machines; fixed seeds.

TRITON_INTERPRET must be set before any @triton.jit function is created, i.e. before
sparse24.kernels is imported; conftest.py is loaded before the test modules, so it is set here.

Seeds: every test starts from a seed fixed by its name (so each test draws different data, and the
same data on every run), seeded into torch, random and numpy before it runs. A failing test's
report names its seed. SPARSE24_TEST_SEED=N shifts every seed by N, to draw other data on purpose
(breadth); a failure under it replays with the same SPARSE24_TEST_SEED.
"""

import os
import random
import zlib

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

try:  # property tests draw from a fixed sequence too (the falsifying example is printed)
    from hypothesis import settings

    settings.register_profile("sparse24", derandomize=True)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "sparse24"))
except ImportError:
    pass

HAS_CUDA = torch.cuda.is_available()
SEED_OFFSET = int(os.environ.get("SPARSE24_TEST_SEED", "0"))


def test_seed(nodeid: str) -> int:
    """The seed of one test: a hash of its pytest node id, shifted by SPARSE24_TEST_SEED."""
    return (zlib.crc32(nodeid.encode()) + SEED_OFFSET) % 2**32


test_seed.__test__ = False  # a helper, not a test


def pytest_report_header(config):
    return f"sparse24 test seeds: crc32(test id) + SPARSE24_TEST_SEED={SEED_OFFSET}"


def undefined_fixtures(item) -> set[str]:
    """Arguments of a collected test that no fixture or parametrization provides. Pytest reports
    them only when the test is set up, and a GPU test is never set up on a CPU machine: a
    parametrize mark once left on a helper cost a device run 34 tests. Empty where pytest's
    (private) fixture info is not there to read."""
    info = getattr(item, "_fixtureinfo", None)
    if not (hasattr(info, "name2fixturedefs") and hasattr(info, "names_closure")):
        return set()
    return set(info.names_closure) - set(info.name2fixturedefs) - {"request"}


def pytest_collection_modifyitems(config, items):
    unprovided = {item.nodeid: sorted(undefined_fixtures(item)) for item in items}
    unprovided = {nodeid: names for nodeid, names in unprovided.items() if names}
    if unprovided:
        raise pytest.UsageError(f"tests with arguments nothing provides: {unprovided}")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_interpreter = pytest.mark.skip(
        reason="runs Triton on CPU tensors: needs TRITON_INTERPRET=1 (conftest sets it without a GPU)")
    interpreting = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)
        if "interpreter" in item.keywords and not interpreting:
            item.add_marker(skip_interpreter)


@pytest.fixture(autouse=True)
def _seed_everything(request):
    s = test_seed(request.node.nodeid)
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s)
    request.node.user_properties.append(("seed", s))
    return s


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        seed = dict(item.user_properties).get("seed", test_seed(item.nodeid))
        report.sections.append(
            ("sparse24 seed", f"seed {seed} (SPARSE24_TEST_SEED={SEED_OFFSET}); "
                              f"replay: SPARSE24_TEST_SEED={SEED_OFFSET} pytest '{item.nodeid}'")
        )


@pytest.fixture
def device():
    """Where kernel tests run: the GPU when there is one, else the CPU through the interpreter."""
    return "cuda" if HAS_CUDA else "cpu"


@pytest.fixture
def seed(_seed_everything):
    """This test's seed (already applied to torch, random and numpy): fixed, see the module doc."""
    return _seed_everything
