"""sparse24.ops.linear (placeholder until the GEMM kernels land: reference path only)."""

from __future__ import annotations

import torch

from sparse24 import reference
from sparse24.ops._checks import check_packed


def linear(x, values, meta, bias=None, activation=None):
    check_packed("linear", values, meta)
    return reference.linear_ref(x, values, meta, bias, activation)
