"""The mma.sp family's host-visible index code on a CPU (the interpreter cannot run its asm): the
A-register addresses each element of the tile carries, against PTX's fragment table."""

import numpy as np
import pytest
import torch
import triton
import triton.language as tl

from sparse24.kernels.sparse_mma import _a_operand, _a_tile_pointers, _a_word_offsets, _pair_atoms


@triton.jit
def _offsets_kernel(out_ptr, first_row, K, BLOCK_F: tl.constexpr, BLOCK_T: tl.constexpr):
    f = tl.arange(0, BLOCK_F)
    n = tl.arange(0, BLOCK_T)
    tl.store(out_ptr + f[:, None] * BLOCK_T + n[None, :], _a_word_offsets(f, n, first_row, K))


def expected_offsets(block_f, block_t, first_row, k):
    """PTX m16n8k32 A fragment (16 x 16 compressed tile, two halves per register): lane 4g + t
    holds r0 = A[g, 2t:2t+2], r1 = A[g+8, 2t:2t+2], r2 = A[g, 2t+8:2t+10], r3 = A[g+8, 2t+8:2t+10].
    The element (f, n) of the D grid is register 2h + c of lane 4 * (f % 8) + (n % 8) // 2."""
    table = [(0, 0), (8, 0), (0, 8), (8, 8)]  # (row offset, compressed column offset) of r0..r3
    out = np.zeros((block_f, block_t), dtype=np.int64)
    for f in range(block_f):
        for n in range(block_t):
            g, t = f % 8, (n % 8) // 2
            r = 2 * ((f % 16) // 8) + n % 2
            drow, dcol = table[r]
            row = first_row + 16 * (f // 16) + g + drow
            out[f, n] = (row * (k // 2) + 2 * t + dcol) // 2  # in 4-byte words
    return out


@pytest.mark.parametrize("block_f, block_t, first_row, k", [(16, 8, 0, 64), (64, 32, 128, 768)])
def test_a_register_addresses_follow_the_ptx_fragment(block_f, block_t, first_row, k):
    out = torch.zeros(block_f, block_t, dtype=torch.int64)
    _offsets_kernel[(1,)](out, first_row, k, block_f, block_t)
    assert np.array_equal(out.numpy(), expected_offsets(block_f, block_t, first_row, k))


@triton.jit
def _tile_operand_kernel(values32_ptr, out_ptr, first_row, K, BLOCK_F: tl.constexpr,
                         BLOCK_T: tl.constexpr):
    f = tl.arange(0, BLOCK_F)
    n = tl.arange(0, BLOCK_T)
    tile = tl.load(_a_tile_pointers(values32_ptr, f, first_row, K, 8))
    tl.store(out_ptr + f[:, None] * BLOCK_T + n[None, :], _a_operand(tile, BLOCK_F, BLOCK_T))


@pytest.mark.parametrize("block_f, block_t, first_row, k", [(16, 8, 0, 64), (64, 32, 128, 768),
                                                             (128, 16, 256, 256)])
def test_a_tile_rearranged_is_the_ptx_fragment(block_f, block_t, first_row, k):
    """A_TILE 1: the coalesced [BLOCK_F, 8] word tile of the first atom, rearranged, gives every
    element the word the PTX fragment table assigns it (each word of values holds its own index)."""
    rows = first_row + block_f
    words = torch.arange(rows * (k // 4), dtype=torch.int32).reshape(rows, k // 4)
    out = torch.zeros(block_f, block_t, dtype=torch.int32)
    _tile_operand_kernel[(1,)](words, out, first_row, k, block_f, block_t)
    assert np.array_equal(out.numpy(), expected_offsets(block_f, block_t, first_row, k))


@triton.jit
def _pair_operands_kernel(values32_ptr, out_ptr, first_row, K, BLOCK_F: tl.constexpr,
                          BLOCK_T: tl.constexpr):
    """A_TILE 2: the four atoms of one [BLOCK_F, 32] two-chunk tile, each rearranged, stored as
    out[atom of the pair, f, n]."""
    f = tl.arange(0, BLOCK_F)
    n = tl.arange(0, BLOCK_T)
    grid = f[:, None] * BLOCK_T + n[None, :]
    tile = tl.load(_a_tile_pointers(values32_ptr, f, first_row, K, 32))
    a00, a01, a10, a11 = _pair_atoms(tile, BLOCK_F)
    tl.store(out_ptr + grid, _a_operand(a00, BLOCK_F, BLOCK_T))
    tl.store(out_ptr + BLOCK_F * BLOCK_T + grid, _a_operand(a01, BLOCK_F, BLOCK_T))
    tl.store(out_ptr + 2 * BLOCK_F * BLOCK_T + grid, _a_operand(a10, BLOCK_F, BLOCK_T))
    tl.store(out_ptr + 3 * BLOCK_F * BLOCK_T + grid, _a_operand(a11, BLOCK_F, BLOCK_T))


@pytest.mark.parametrize("block_f, block_t, first_row, k", [(16, 8, 0, 128), (64, 32, 128, 768),
                                                             (128, 16, 256, 256)])
def test_a_pair_tile_splits_into_the_four_atoms_fragments(block_f, block_t, first_row, k):
    """A_TILE 2: atom j of the two chunks (j = 2 * chunk + atom) is 8 words further along each row
    than atom j - 1; each gets the words the PTX fragment table assigns its elements."""
    rows = first_row + block_f
    words = torch.arange(rows * (k // 4), dtype=torch.int32).reshape(rows, k // 4)
    out = torch.zeros(4, block_f, block_t, dtype=torch.int32)
    _pair_operands_kernel[(1,)](words, out, first_row, k, block_f, block_t)
    for atom in range(4):
        assert np.array_equal(out[atom].numpy(), expected_offsets(block_f, block_t, first_row, k) + 8 * atom), atom
