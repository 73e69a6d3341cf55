"""mask_24 / prune_24 / compress / decompress: launchers and torch.library registration.

Each op is a ``torch.library.custom_op`` with a fake implementation, so torch.compile sees an opaque
node with exact output shapes and CUDA graphs capture it whole. The implementations run the Triton
kernels of ``sparse24.kernels.pack`` on CUDA (and on CPU under TRITON_INTERPRET=1), and the
plain-PyTorch references on CPU otherwise.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import triton
import triton.language as tl

from sparse24 import reference
from sparse24.kernels import pack as kernels
from sparse24.layout import INT_VIEW, meta_shape, values_shape
from sparse24.ops._checks import check_packed, check_weight, first_nan, raise_first_bad_group, use_triton
from sparse24.ops.device import launch_guard

# The kernel tells negative zeros from +0.0 through the weight's bits, seen as INT_VIEW's integer.
_TRITON_INT = {torch.int16: tl.int16, torch.int32: tl.int32}


def _rows_per_program(n: int) -> int:
    # The largest of 64 / 32 / 16 rows that divides N (N % 16 == 0 after the checks): the kernels
    # then need no row masks. 64 x 64 fp16 is 8 KB of weight per program.
    for rows in (64, 32, 16):
        if n % rows == 0:
            return rows
    raise AssertionError("N is a multiple of 16 after check_weight")


def _row_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


# ---------------------------------------------------------------------------------------- mask_24
def _run_mask_kernel(w: torch.Tensor, prune: bool, op: str) -> torch.Tensor:
    w = _row_contiguous(w)
    n, k = w.shape
    out = torch.empty((n, k), dtype=w.dtype if prune else torch.uint8, device=w.device)
    # 32 x 128 tiles, 4 warps: 58-64% of copy bandwidth for prune on an H200 (LLM shapes, fp16);
    # 64 x 256 tiles with 8 warps measured slower there (47-50%).
    block_n, block_k = 32, 128
    grid = (triton.cdiv(n, block_n), triton.cdiv(k, block_k))
    nans = torch.empty(grid[0] * grid[1], dtype=torch.int32, device=w.device)
    with launch_guard(w.device) or nullcontext():  # on w's GPU, whichever is current
        kernels._mask_24_kernel[grid](w, out, nans, n, k, w.stride(0), out.stride(0),
                                      BLOCK_N=block_n, BLOCK_K=block_k, PRUNE=prune)
    if bool(nans.any()):  # one host sync; NaN has no magnitude order, so refuse it
        _refuse_nan(op, w)
    return out if prune else out.view(torch.bool)


def _refuse_nan(op: str, w: torch.Tensor) -> None:
    nan = first_nan(w)
    if nan:
        r, c = nan
        raise ValueError(f"sparse24.{op}: w has NaN at row {r}, column {c}; its magnitude order is undefined")


def _mask_or_prune(w: torch.Tensor, prune: bool, op: str) -> torch.Tensor:
    """The kernel where Triton runs, else the reference; NaN refused either way."""
    if use_triton(w):
        return _run_mask_kernel(w, prune=prune, op=op)
    _refuse_nan(op, w)
    return reference.prune_24_ref(w) if prune else reference.mask_24_ref(w)


@torch.library.custom_op("sparse24::mask_24", mutates_args=())
def _mask_24_op(w: torch.Tensor) -> torch.Tensor:
    return _mask_or_prune(w, prune=False, op="mask_24")


@_mask_24_op.register_fake
def _(w):
    return torch.empty(w.shape, dtype=torch.bool, device=w.device)


@torch.library.custom_op("sparse24::prune_24", mutates_args=())
def _prune_24_op(w: torch.Tensor) -> torch.Tensor:
    return _mask_or_prune(w, prune=True, op="prune_24")


@_prune_24_op.register_fake
def _(w):
    return torch.empty(w.shape, dtype=w.dtype, device=w.device)


def mask_24(w: torch.Tensor) -> torch.Tensor:
    """Magnitude 2:4 mask [N, K] (bool): in every group of 4 along K, the two largest |w| are kept;
    ties go to the lower index. NaN weights are refused."""
    check_weight("mask_24", w, pack=False)
    return _mask_24_op(w)


def prune_24(w: torch.Tensor) -> torch.Tensor:
    """w with the two smallest |w| of every group of 4 along K set to +0.0 (one pass)."""
    check_weight("prune_24", w, pack=False)
    return _prune_24_op(w)


# --------------------------------------------------------------------------------------- compress
@torch.library.custom_op("sparse24::compress", mutates_args=())
def _compress_op(w: torch.Tensor, check: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if not use_triton(w):
        if check:
            raise_first_bad_group(w)
        return reference.compress_ref(w)
    w = _row_contiguous(w)
    n, k = w.shape
    values = torch.empty(values_shape(n, k), dtype=w.dtype, device=w.device)
    meta = torch.empty(meta_shape(n, k), dtype=torch.int32, device=w.device)
    rows = _rows_per_program(n)
    # One 64-column chunk per program. Looping over 4 chunks per program measured slower
    # on an H200 (11008 x 4096 fp16: 35% of copy bandwidth against 39% for one chunk).
    grid = (n // rows, k // 64)
    flags = torch.empty((grid[0] * grid[1], 2), dtype=torch.int32, device=w.device)
    with launch_guard(w.device) or nullcontext():
        kernels._compress_kernel[grid](w, values, meta, flags, n, k, w.stride(0),
                                       BLOCK_N=rows, INT_DTYPE=_TRITON_INT[INT_VIEW[w.dtype]])
    if check and bool(flags.any()):
        raise_first_bad_group(w)
    return values, meta


@_compress_op.register_fake
def _(w, check):
    n, k = w.shape
    return (w.new_empty(values_shape(n, k)),
            torch.empty(meta_shape(n, k), dtype=torch.int32, device=w.device))


def compress(w: torch.Tensor, check: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack a dense 2:4 weight [N, K] into (values [N, K/2], meta int32 [N/16, K/64, 32]).

    The layout is sparse24's own (see sparse24/kernels/pack.py). With ``check=True`` a weight with NaN, or
    with a group of 4 holding more than two nonzero values, is refused with an error naming the
    first bad row and group; with ``check=False`` such a group silently keeps its two
    highest-scoring entries (nonzero first, then the lower positions).
    """
    check_weight("compress", w, pack=True)
    return _compress_op(w, check)


# ------------------------------------------------------------------------------------- decompress
@torch.library.custom_op("sparse24::decompress", mutates_args=())
def _decompress_op(values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    if not use_triton(values):
        return reference.decompress_ref(values, meta)
    n, k = values.shape[0], values.shape[1] * 2
    w = torch.empty((n, k), dtype=values.dtype, device=values.device)
    rows = _rows_per_program(n)
    with launch_guard(values.device) or nullcontext():
        kernels._decompress_kernel[(n // rows, k // 64)](values, meta, w, n, k, w.stride(0),
                                                         BLOCK_N=rows)
    return w


@_decompress_op.register_fake
def _(values, meta):
    return values.new_empty((values.shape[0], values.shape[1] * 2))


def decompress(values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """Exact inverse of compress: the dense [N, K] weight, +0.0 at pruned positions."""
    check_packed("decompress", values, meta)
    return _decompress_op(values, meta)
