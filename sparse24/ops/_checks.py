"""Input checks shared by the ops: every problem is named before any kernel runs."""

from __future__ import annotations

import os

import torch

from sparse24.layout import K_MULTIPLE, granularity_error, meta_shape

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
GEMM_DTYPES = (torch.float16, torch.bfloat16)


def interpreter_active() -> bool:
    """True when Triton kernels run through the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def use_triton(t: torch.Tensor) -> bool:
    """Kernels run on CUDA tensors, and on CPU tensors only under the Triton interpreter."""
    return t.is_cuda or (t.device.type == "cpu" and interpreter_active())


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
    expected = meta_shape(n, k)
    if meta.dtype != torch.int32 or tuple(meta.shape) != expected:
        raise ValueError(
            f"sparse24.{op}: meta does not match values: values {tuple(values.shape)} pack a "
            f"[{n}, {k}] weight, whose meta is int32 of shape {expected}; got {meta.dtype} of "
            f"shape {tuple(meta.shape)}"
        )
    if values.device != meta.device:
        raise ValueError(
            f"sparse24.{op}: values are on {values.device} but meta is on {meta.device}"
        )
    if not (values.is_contiguous() and meta.is_contiguous()):
        raise ValueError(
            f"sparse24.{op}: values and meta must be contiguous (they are in sparse24's packed "
            "layout; slicing or transposing them does not give another packed weight)"
        )
    return n, k


def raise_first_bad_group(w: torch.Tensor) -> None:
    """Locate and report the first NaN or non-2:4 group of w (only called once a kernel saw one)."""
    n, k = w.shape
    nan = torch.isnan(w)
    if nan.any():
        r, c = (int(i) for i in nan.nonzero()[0])
        raise ValueError(
            f"sparse24.compress: w has NaN at row {r}, column {c}; a weight with NaN cannot be compressed"
        )
    counts = (w.reshape(n, k // 4, 4) != 0).sum(-1)
    bad = (counts > 2).nonzero()
    if len(bad):
        r, g = (int(i) for i in bad[0])
        raise ValueError(
            f"sparse24.compress: w is not 2:4 sparse: row {r}, group {g} (columns {4 * g}..{4 * g + 3}) "
            f"has {int(counts[r, g])} nonzero values, at most 2 allowed; {len(bad)} such groups in all. "
            "Prune it first with sparse24.ops.prune_24(w), or pass check=False to keep the two "
            "largest-scoring entries silently"
        )


__all__ = [
    "FLOAT_DTYPES", "GEMM_DTYPES", "K_MULTIPLE", "check_packed", "check_weight",
    "interpreter_active", "raise_first_bad_group", "use_triton",
]
