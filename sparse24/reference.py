"""Plain-PyTorch references of every sparse24 op.

Each function here computes the same thing as the Triton kernel of the same name (without ``_ref``),
with ordinary tensor operations, on any device. Tests compare kernels against these; packing is
compared bit for bit. The packed layout is described at the top of ``sparse24/kernels/pack.py``.
"""

from __future__ import annotations

import torch

from sparse24.activations import GATED, REFERENCE as ACTIVATIONS_REF
from sparse24.layout import ATOM_N, INT_VIEW, LANES, split_gate_up

REL_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}
"""Relative Frobenius error (norm of the difference / norm of the reference) that a kernel's output
may have against these references computed in float64 from the same rounded inputs, per dtype:
the output is rounded to its dtype, which bounds how tight this can be. Tests (tests/tolerances.py)
and benches check against it."""


def _top2_of_4(score: torch.Tensor) -> torch.Tensor:
    """Boolean mask [..., 4]: the two largest scores of each group, ties toward the lower index."""
    order = torch.sort(score, dim=-1, descending=True, stable=True).indices[..., :2]
    keep = torch.zeros(score.shape, dtype=torch.bool, device=score.device)
    return keep.scatter_(-1, order, True)


def mask_24_ref(w: torch.Tensor) -> torch.Tensor:
    """Magnitude 2:4 mask along the last dim: keep the two largest |w| of every 4, ties to lower."""
    n, k = w.shape
    groups = w.reshape(n, k // 4, 4).abs().float()
    return _top2_of_4(groups).reshape(n, k)


def prune_24_ref(w: torch.Tensor) -> torch.Tensor:
    """w with the two smallest |w| of every group of 4 set to +0.0 (never -0.0)."""
    return torch.where(mask_24_ref(w), w, torch.zeros((), dtype=w.dtype, device=w.device))


def kept_positions_ref(w: torch.Tensor) -> torch.Tensor:
    """[N, K/4, 2] positions (0..3, ascending) that compress keeps in each group of 4.

    Nonzero values first, then negative zeros (so their sign bit survives a round trip), then the
    lowest positions; a group of a 2:4 weight has at most two entries that are not +0.0.
    """
    n, k = w.shape
    groups = w.reshape(n, k // 4, 4)
    bits_nonzero = groups.view(INT_VIEW[w.dtype]) != 0
    score = (groups != 0).to(torch.int8) * 2 + bits_nonzero.to(torch.int8)
    keep = _top2_of_4(score)
    pos = torch.arange(4, device=w.device).expand_as(keep)
    return pos[keep].reshape(n, k // 4, 2)


def _to_int32(words: torch.Tensor) -> torch.Tensor:
    """int64 holding 32-bit patterns -> int32 with the same bits."""
    words = words & 0xFFFFFFFF
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def values_v1_to_natural(values: torch.Tensor) -> torch.Tensor:
    """Layout-1 values (mma.sp A-fragment order) -> layout-2 values (natural row-major order): for
    loading checkpoints written before layout version 2. The metadata did not change."""
    return _values_from_fragment_order(values).contiguous()


def _values_to_fragment_order(kept: torch.Tensor) -> torch.Tensor:
    """[N, K/2] row-major compressed values -> [N, K/2] in mma.sp A-fragment order (layout 1)."""
    n, kh = kept.shape
    # row = 16*nt + 8*hr + g ; compressed col = 16*kb + 8*qh + 2*t + j
    v = kept.reshape(n // ATOM_N, 2, 8, kh // 16, 2, 4, 2)  # nt, hr, g, kb, qh, t, j
    # fragment order: nt, kb, lane = 4*g + t, register = 2*qh + hr, j
    return v.permute(0, 3, 2, 5, 4, 1, 6).reshape(n, kh)


def _values_from_fragment_order(values: torch.Tensor) -> torch.Tensor:
    n, kh = values.shape
    v = values.reshape(n // ATOM_N, kh // 16, 8, 4, 2, 2, 2)  # nt, kb, g, t, qh, hr, j
    return v.permute(0, 5, 2, 1, 4, 3, 6).reshape(n, kh)


def _meta_words(idx: torch.Tensor) -> torch.Tensor:
    """[N, K/4, 2] kept positions -> int32 [N/16, K/64, 32] metadata words (see sparse24/kernels/pack.py)."""
    n, groups, _ = idx.shape
    nibble = (idx[..., 0] | (idx[..., 1] << 2)).to(torch.int64)  # [N, K/4]
    # half-word t of a 64-wide chunk holds groups 4t..4t+3, group q at bits 4q..4q+3
    shifts = 4 * torch.arange(4, device=idx.device)
    half = (nibble.reshape(n, groups // 16, 4, 4) << shifts).sum(-1)  # [N, K/64, 4]
    half = half.reshape(n // ATOM_N, 2, 8, groups // 16, 4)  # nt, hr, g, chunk, t
    word = half[:, 0] | (half[:, 1] << 16)  # nt, g, chunk, t
    return _to_int32(word.permute(0, 2, 1, 3).reshape(n // ATOM_N, groups // 16, LANES))


def _meta_positions(meta: torch.Tensor) -> torch.Tensor:
    """Inverse of _meta_words: int32 [N/16, K/64, 32] -> [N, K/4, 2] kept positions."""
    tiles, chunks, _ = meta.shape
    word = meta.to(torch.int64) & 0xFFFFFFFF
    word = word.reshape(tiles, chunks, 8, 4).permute(0, 2, 1, 3)  # nt, g, chunk, t
    half = torch.stack([word & 0xFFFF, word >> 16], dim=1)  # nt, hr, g, chunk, t
    half = half.reshape(tiles * ATOM_N, chunks, 4)
    shifts = 4 * torch.arange(4, device=meta.device)
    nibble = (half[..., None] >> shifts) & 0xF  # [N, chunk, t, q]
    nibble = nibble.reshape(tiles * ATOM_N, chunks * 16)
    return torch.stack([nibble & 3, nibble >> 2], dim=-1)


def invalid_meta_groups(meta: torch.Tensor) -> int:
    """How many groups of 4 the metadata gives positions no packed weight has: compress keeps
    idx0 < idx1 (an all-zero group keeps positions 0 and 1), so zeros or uninitialized memory (a
    packed layer a checkpoint did not fill) fail."""
    positions = _meta_positions(meta)
    return int((positions[..., 0] >= positions[..., 1]).sum())


def compress_ref(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense 2:4 weight [N, K] -> (values [N, K/2], natural order; meta int32 [N/16, K/64, 32])."""
    n, k = w.shape
    idx = kept_positions_ref(w)
    kept = torch.gather(w.reshape(n, k // 4, 4), -1, idx).reshape(n, k // 2)
    return kept.contiguous(), _meta_words(idx)


def decompress_ref(values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """Exact inverse of compress_ref."""
    n, kh = values.shape
    idx = _meta_positions(meta)
    kept = values.reshape(n, kh // 2, 2)
    dense = torch.zeros(n, kh // 2, 4, dtype=values.dtype, device=values.device)
    return dense.scatter_(-1, idx, kept).reshape(n, 2 * kh)


def activation_ref(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    """The epilogue on float sums y [..., N]; a gated one (sparse24/activations.py, GATED) pairs
    the interleaved gate and up rows of the last dim and returns [..., N / 2]."""
    if activation in GATED:
        gate, up = split_gate_up(y.movedim(-1, 0))
        return (ACTIVATIONS_REF[GATED[activation]](gate) * up).movedim(0, -1)
    return ACTIVATIONS_REF[activation](y)


def linear_ref(
    x: torch.Tensor,
    values: torch.Tensor,
    meta: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
) -> torch.Tensor:
    """act(x @ W^T + bias) with W = decompress(values, meta), accumulated in float32.

    Pruned weights are skipped, not multiplied, exactly as the sparse tensor cores do: an Inf or
    NaN in x meets only the kept weights of its column, so 0 * Inf never makes a NaN here. (The
    weight-streaming kernel family multiplies unpacked zeros instead; see sparse24.ops.linear.)
    """
    w = decompress_ref(values, meta)
    n, k = w.shape
    x2 = x.reshape(-1, k).float()
    idx = _meta_positions(meta)  # [N, K/4, 2]
    kept_w = torch.gather(w.reshape(n, k // 4, 4), -1, idx).float()  # [N, K/4, 2]
    if torch.isfinite(x2).all():
        y = x2 @ w.float().t()
    else:
        # Gather the x entries each kept weight meets, so skipped positions contribute nothing.
        cols = (torch.arange(k // 4, device=x.device)[:, None] * 4 + idx).reshape(n, k // 2)
        y = torch.einsum("mnc,nc->mn", x2[:, cols], kept_w.reshape(n, k // 2))
    if bias is not None:
        y = y + bias.float()
    y = activation_ref(y, activation)
    return y.to(x.dtype).reshape(*x.shape[:-1], y.shape[-1])


def linear_flops(m: int, n: int, k: int) -> float:
    """Dense-equivalent FLOPs of x[m,k] @ W[n,k]^T (the convention used by every bench)."""
    return 2.0 * m * n * k


def packed_bytes(n: int, k: int, element_size: int) -> int:
    """Bytes of (values, meta) for a dense [n, k] weight: k/2 values and k/8 bytes of meta per row."""
    return n * (k // 2) * element_size + n * k // 8

