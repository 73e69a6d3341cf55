"""The mma kernel's k-loop on a CPU: the whole kernel runs in the Triton interpreter with its three
inline-asm functions (the mma.sp and two loads, which the interpreter cannot run) swapped for
stand-ins that check what they are given. Every A_TILE form, both PREFETCH loops, whole and
split K with odd and even chunks a split: each chunk of the split must be multiplied exactly
once, with its own metadata word and selector, and the second chunk of an A_TILE 2 step past the
split's end must add nothing. The numbers of the real instruction need a GPU (tests/test_gemm.py).

The operands are labels: every word of atom j (32 columns of K) holds j + 1, in the values and in
x; every metadata word of chunk c holds c + 1. The stand-in mma adds 4**j where A, x, metadata
and selector agree on atom j, NaN where they disagree, and 0 where both A and x are 0 (a missing
chunk). A split's partial sum is then the sum of 4**j over its atoms, exact in float32."""

import itertools

import pytest
import torch
import triton
import triton.language as tl

from sparse24.kernels import sparse_mma
from sparse24.ops.families._splitk import split_k


@triton.jit
def _checking_mma_sp(a, b, c, e, SELECTOR: tl.constexpr, IS_BF16: tl.constexpr):
    # An element's B register holds the x word of its lane's token (8 * (n // 8) + f % 8, the
    # real instruction shares them across lanes), which may be past M and read as 0 where the
    # element's own token is not: a zero b cannot be checked, any other must be a's atom.
    atom = a - 1
    agree = ((a == b) | (b == 0)) & (atom % 2 == SELECTOR) & (e == atom // 2 + 1)
    added = tl.where(agree, tl.exp2(2.0 * atom.to(tl.float32)), float("nan"))
    # a missing chunk (A_TILE 2's second chunk past the split's end): zero values and zero x
    return c + tl.where(a == 0, tl.where(b == 0, 0.0, float("nan")), added)


@triton.jit
def _plain_load(addr):
    return tl.load(addr.to(tl.pointer_type(tl.int32)))


def labelled_operands(m, n, k):
    chunks = k // 64
    values32 = (torch.arange(k // 4, dtype=torch.int32) // 8 + 1).repeat(n, 1).contiguous()
    meta = (torch.arange(chunks, dtype=torch.int32) + 1)[None, :, None].expand(
        n // 16, chunks, 32).contiguous()
    x32 = (torch.arange(k // 2, dtype=torch.int32) // 16 + 1).repeat(m, 1).contiguous()
    return values32, meta, x32


@triton.jit
def _loop_bound_probe(out, n):
    last = tl.minimum(tl.program_id(0) + n, 10)
    total = 0
    for i in range(1, last):
        total += i
    tl.store(out, total)


def interpreter_takes_tensor_loop_bounds() -> bool:
    """Triton 3.6's interpreter cannot loop to a tl.minimum result (TypeError: only 0-dimensional
    arrays ...), as the kernel's k-loop does; 3.9's can. Compiled kernels are not affected."""
    out = torch.zeros(1, dtype=torch.int32)
    try:
        _loop_bound_probe[(1,)](out, 4)
    except Exception:  # noqa: BLE001 - the interpreter wraps the TypeError in its own error
        return False
    return out.item() == 6


@pytest.fixture
def emulated(monkeypatch):
    if not interpreter_takes_tensor_loop_bounds():
        pytest.skip(f"Triton {triton.__version__}'s interpreter cannot run the k-loop's bounds")
    monkeypatch.setattr(sparse_mma, "_mma_sp", _checking_mma_sp)
    monkeypatch.setattr(sparse_mma, "_load_a", _plain_load)
    monkeypatch.setattr(sparse_mma, "_load_e", _plain_load)


def run_labelled(m, n, k, block_f, block_t, prefetch, split, a_tile):
    splits, per_split = split_k({"SPLIT_K": split}, k)
    values32, meta, x32 = labelled_operands(m, n, k)
    y = torch.full((m, n), float("nan"))
    partial = torch.full((splits, m, n), float("nan"))
    grid = (-(-m // block_t) * (n // block_f), splits, 1)
    sparse_mma._sparse_mma_kernel[grid](
        x32, values32, values32.data_ptr(), meta.data_ptr(), y, y, partial, meta,
        m, n, k, x32.stride(0), y.stride(0), per_split,
        BLOCK_F=block_f, BLOCK_T=block_t, GROUP_T=8, PREFETCH=prefetch, SPLIT_K=splits,
        HAS_BIAS=False, ACTIVATION=0, IS_BF16=False, A_TILE=a_tile, FUSED_REDUCE=False)
    sums = y[None] if splits == 1 else partial
    expected = [sum(4.0 ** atom for atom in range(2 * s * per_split, 2 * min((s + 1) * per_split, k // 64)))
                for s in range(splits)]
    return sums, torch.tensor(expected)[:, None, None].expand_as(sums)


# K of 1-6 chunks (12 atoms: 4**11 is still exact in float32), splits that leave 1-6 chunks
# each, odd and even
CASES = [(k, split) for k in (64, 128, 192, 256, 320, 384) for split in (1, 2, 3, 4) if split <= k // 64]


@pytest.mark.parametrize("a_tile, prefetch", list(itertools.product((0, 1, 2), (1, 2))))
def test_every_chunk_of_a_split_is_multiplied_once(emulated, a_tile, prefetch):
    wrong = []
    for k, split in CASES:
        # 21 tokens: a second token block that is mostly past M
        sums, expected = run_labelled(21, 32, k, 32, 16, prefetch, split, a_tile)
        if not torch.equal(sums, expected):
            wrong.append((k, split, sums.flatten()[:3].tolist(), expected.flatten()[:3].tolist()))
    assert not wrong, wrong


@pytest.mark.parametrize("split, fused", [(1, False), (2, False), (2, True), (3, True)])
def test_gated_epilogue_pairs_the_interleaved_rows(emulated, split, fused):
    """A gated epilogue (SwiGLU) on the labelled k-loop: every feature's sum is the same S, so the
    bias makes the pairs differ: bias[f] = -S + a value of its own in [-2, 2), where SiLU bends.
    Output j must be silu(S + bias[gate row]) * (S + bias[up row]) with gate row
    16 * (j // 8) + j % 8 and up row 8 past it; a bias paired off by a row, a block or a tile,
    the activation on the wrong half, or a store at the wrong column does not give it. Unsplit,
    the kernel's own epilogue; split, the reduction kernel's gated form or the last split's. The
    sums are the same at every feature here, so which sums a reduction pairs is checked with
    random weights (tests/test_gemm.py, test_gated_epilogues_match_reference)."""
    from sparse24.activations import GATED_CODES
    from sparse24.ops.families import _splitk

    m, n, k, block_f, block_t = 21, 64, 192, 32, 16
    splits, per_split = split_k({"SPLIT_K": split}, k)
    values32, meta, x32 = labelled_operands(m, n, k)
    total = sum(4.0 ** atom for atom in range(2 * (k // 64)))
    own = torch.randperm(n).float() / n * 4 - 2
    bias = own - total
    y = torch.full((m, n // 2), float("nan"))
    partial = torch.full((splits, m, n), float("nan"))
    counter = torch.zeros(64, dtype=torch.int32)
    grid = (-(-m // block_t) * (n // block_f), splits, 1)
    code = GATED_CODES["swiglu"]
    sparse_mma._sparse_mma_kernel[grid](
        x32, values32, values32.data_ptr(), meta.data_ptr(), bias, y, partial, counter,
        m, n, k, x32.stride(0), y.stride(0), per_split,
        BLOCK_F=block_f, BLOCK_T=block_t, GROUP_T=8, PREFETCH=1, SPLIT_K=splits,
        HAS_BIAS=True, ACTIVATION=code, IS_BF16=False, A_TILE=2, FUSED_REDUCE=fused)
    if splits > 1 and not fused:
        _splitk.reduce(partial, bias, y, code, splits)
    j = torch.arange(n // 2)
    gate_row = 16 * (j // 8) + j % 8
    gate, up = own[gate_row], own[gate_row + 8]
    expected = (gate * torch.sigmoid(gate) * up).expand(m, -1)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
