"""sparse24.ops.launch: the cached-launch key must tell apart every pair of arguments that Triton
itself compiles differently, or a kernel would run with assumptions its arguments break."""

import itertools

import pytest
import torch

from sparse24.ops.launch import _spec

libtriton = pytest.importorskip("triton._C.libtriton")
from triton.backends.compiler import BaseBackend  # noqa: E402


def triton_spec(arg):
    # (type, specialization) as Triton's launcher computes them for a non-constexpr argument
    return libtriton.native_specialize_impl(BaseBackend, arg, False, True, True)


INTS = [0, 1, 2, 15, 16, 17, 48, 768, 2**31 - 16, 2**31 - 1, 2**31, 2**31 + 16, -16, -17, 2**40,
        2**63, 2**63 + 1]


def tensors():
    base = torch.randn(64, dtype=torch.float16)
    return [base, base[1:], base[8:], base.float(), base.float()[2:], base.view(torch.int32),
            base.view(torch.int32)[1:], base.bfloat16()]


@pytest.mark.parametrize("args", [INTS, tensors()], ids=["ints", "tensors"])
def test_spec_separates_what_triton_specializes(args):
    for a, b in itertools.combinations(args, 2):
        if triton_spec(a) != triton_spec(b):
            assert _spec(a) != _spec(b), (a if isinstance(a, int) else a.dtype,
                                          b if isinstance(b, int) else b.dtype)
