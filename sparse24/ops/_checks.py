"""Input checks shared by the ops: every problem is named before any kernel runs."""

from __future__ import annotations

import os

import torch

from sparse24.layout import (ATOM_N, FLOAT_DTYPES, K_MULTIPLE, LANES, N_MULTIPLE, granularity_error,
                             meta_error, placement_error)

GEMM_DTYPES = (torch.float16, torch.bfloat16)


def interpreter_active() -> bool:
    """True when Triton kernels run through the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def use_triton(t: torch.Tensor) -> bool:
    """Kernels run on CUDA tensors, and on CPU tensors only under the Triton interpreter."""
    return t.is_cuda or (t.device.type == "cpu" and interpreter_active())


def runs_kernels(device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether ``sparse24.ops.linear`` runs sparse24's Triton kernels for tensors of this device
    and dtype: float16 / bfloat16 on CUDA, or on CPU under the Triton interpreter
    (TRITON_INTERPRET=1). False: it computes with its PyTorch reference instead (e.g. float32, or
    CPU without the interpreter). The public form of ``use_triton`` and ``GEMM_DTYPES``."""
    device = torch.device(device)
    on_triton = device.type == "cuda" or (device.type == "cpu" and interpreter_active())
    return on_triton and dtype in GEMM_DTYPES


def check_weight(op: str, w: torch.Tensor, *, pack: bool) -> None:
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"sparse24.{op}: expected a torch.Tensor, got {type(w).__name__}")
    if w.dim() != 2:
        raise ValueError(
            f"sparse24.{op}: w must be 2-D [out_features, in_features], got shape {tuple(w.shape)}"
        )
    if w.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"sparse24.{op}: unsupported dtype {w.dtype}; use float16, bfloat16 or float32"
        )
    n, k = w.shape
    if pack:
        problem = granularity_error(n, k)
        if problem:
            raise ValueError(f"sparse24.{op}: cannot pack a weight of shape {tuple(w.shape)}: {problem}")
    elif k % 4:
        raise ValueError(
            f"sparse24.{op}: in_features K={k} must be a multiple of 4 (2:4 groups run along K)"
        )


def check_packed(op: str, values: torch.Tensor, meta: torch.Tensor) -> tuple[int, int]:
    """Validate a (values, meta) pair; return the dense shape (N, K)."""
    # linear() checks its weight on every call: first every rule below in one expression, without
    # the calls that build messages (linear()'s input checks 2.0 -> 1.65 us a call on a CPU host,
    # bench/results/cpu/host_checks_3adeeb2.txt); a miss takes the rules one by one, which name
    # the problem.
    if isinstance(values, torch.Tensor) and isinstance(meta, torch.Tensor) and values.dim() == 2:
        n, half = values.shape
        k = 2 * half
        if (n > 0 and k > 0 and not n % N_MULTIPLE and not k % K_MULTIPLE
                and values.dtype in FLOAT_DTYPES and meta.dtype == torch.int32
                and meta.shape == (n // ATOM_N, k // K_MULTIPLE, LANES)
                and values.device == meta.device
                and values.is_contiguous() and meta.is_contiguous()):
            return n, k
    return _check_packed_rules(op, values, meta)


def _check_packed_rules(op: str, values, meta) -> tuple[int, int]:
    if not isinstance(values, torch.Tensor) or not isinstance(meta, torch.Tensor):
        name, value = ("values", values) if not isinstance(values, torch.Tensor) else ("meta", meta)
        raise TypeError(f"sparse24.{op}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if values.dim() != 2:
        raise ValueError(
            f"sparse24.{op}: values must be 2-D [N, K/2], got shape {tuple(values.shape)}"
        )
    if values.dtype not in FLOAT_DTYPES:
        raise TypeError(f"sparse24.{op}: values have unsupported dtype {values.dtype}")
    n, k = values.shape[0], values.shape[1] * 2
    problem = granularity_error(n, k)
    if problem:
        raise ValueError(f"sparse24.{op}: values of shape {tuple(values.shape)} pack no valid weight: {problem}")
    problem = meta_error(meta, n, k)
    if problem:
        raise ValueError(f"sparse24.{op}: meta does not match values {tuple(values.shape)}: {problem}")
    problem = placement_error(values, meta)
    if problem:
        raise ValueError(f"sparse24.{op}: {problem}")
    return n, k


def first_nan(w: torch.Tensor) -> tuple[int, int] | None:
    """(row, column) of the first NaN of a 2-D w, or None."""
    nan = torch.isnan(w)
    if not nan.any():
        return None
    r, c = (int(i) for i in nan.nonzero()[0])
    return r, c


def first_overfull_group(w: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(row, group, its nonzero count, how many such groups) for the first group of 4 along K of w
    with more than two nonzero values (what makes w not 2:4), or None."""
    n, k = w.shape
    counts = (w.reshape(n, k // 4, 4) != 0).sum(-1)
    bad = (counts > 2).nonzero()
    if not len(bad):
        return None
    r, g = (int(i) for i in bad[0])
    return r, g, int(counts[r, g]), len(bad)


def raise_first_bad_group(w: torch.Tensor) -> None:
    """Report the first NaN, else the first non-2:4 group of w, as compress refuses them; return
    quietly when there is neither."""
    nan = first_nan(w)
    if nan:
        r, c = nan
        raise ValueError(
            f"sparse24.compress: w has NaN at row {r}, column {c}; a weight with NaN cannot be compressed"
        )
    overfull = first_overfull_group(w)
    if overfull:
        r, g, nonzero, groups = overfull
        raise ValueError(
            f"sparse24.compress: w is not 2:4 sparse: row {r}, group {g} (columns {4 * g}..{4 * g + 3}) "
            f"has {nonzero} nonzero values, at most 2 allowed; {groups} such groups in all. "
            "Prune it first with sparse24.ops.prune_24(w), or pass check=False to keep the two "
            "largest-scoring entries silently"
        )


__all__ = [
    "FLOAT_DTYPES", "GEMM_DTYPES", "K_MULTIPLE", "check_packed", "check_weight", "first_nan",
    "first_overfull_group", "interpreter_active", "raise_first_bad_group", "runs_kernels",
    "use_triton",
]
