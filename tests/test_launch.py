"""sparse24.ops.triton_internals: the cached-launch key must tell apart every pair of arguments that Triton
itself compiles differently, or a kernel would run with assumptions its arguments break."""

import itertools

import pytest
import torch

from sparse24.ops.triton_internals import _spec

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


def test_unchecked_descriptor_equals_the_checked_one():
    """tensor_descriptor skips TensorDescriptor's checks, not its fields: every field (including
    the optional ones, at their defaults) matches from_tensor's, in this Triton version."""
    hopper = pytest.importorskip("triton.experimental.gluon.nvidia.hopper")
    from sparse24.ops import wgmma
    from sparse24.ops.triton_internals import _spec, tensor_descriptor

    layout = wgmma._nvmma_layout()
    x = torch.randn(96, 128, dtype=torch.float16)
    fast = tensor_descriptor(x, [64, 64], layout)
    assert fast == hopper.TensorDescriptor.from_tensor(x, [64, 64], layout)
    assert _spec(fast) == _spec(hopper.TensorDescriptor.from_tensor(x, [64, 64], layout))
    others = [tensor_descriptor(x, [128, 64], layout), tensor_descriptor(x.bfloat16(), [64, 64], layout)]
    assert all(_spec(other) != _spec(fast) for other in others)
