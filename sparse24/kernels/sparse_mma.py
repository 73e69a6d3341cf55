"""Sparse x dense GEMM on the sparse tensor cores: ``mma.sp.sync.aligned.m16n8k32`` via inline asm.

y[M, N] = act(x[M, K] @ W[N, K]^T + bias). W is the sparse A operand (16 output features per
instruction) and x^T the dense B operand (8 tokens per instruction). Stock Triton has no sparse
tl.dot, so the instruction is issued with ``tl.inline_asm_elementwise(pack=4)``.

Why the program computes a [BLOCK_F features, BLOCK_T tokens] tile in the *tl.dot accumulator
layout*: mma.sp is warp-collective, so the asm is only right if every group of four per-thread
registers it receives is one lane's fragment of one 16x8 tile. Triton picks register layouts
itself; left alone it gave the asm operands a blocked layout with the four registers spread over
four threads (seen in TTGIR, Triton 3.6 and 3.9). The accumulator of a tl.dot has exactly the
mma D-fragment layout: per 16x8 tile, lane (g, t) = lane // 4, lane % 4 holds, in register order,
(g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1) -- true of the Ampere mma layout and of Hopper's wgmma
accumulator, whose per-warp layout repeats that pattern every 8 columns. So the accumulator is born
from a tiny tl.dot; A and E come from inline-asm loads computed element-wise in that same layout,
and B from a Triton layout change into it (checked in TTGIR with Triton 3.6 and 3.9: every asm op
carries the #mma layout; SASS (layout 1): LDG.E.128 for A, HMMA.SP.16832.F32. ptxas for sm_90 with Triton 3.6,
256 x 64 tiles, 4 warps, bias + GELU epilogue: 28 local-memory instructions without prefetch, 72
with it; none without the epilogue).

Element (f, n) of the [BLOCK_F, BLOCK_T] tile, with g = f % 8, h = (f % 16) // 8, t = (n % 8) // 2,
c = n % 2, is register r = 2h + c of lane 4g + t in tile (f // 16, n // 8). Its operands:
  A  values word  (row g + 8c, word t + 4h of the atom's row segment; _a_word_offsets): four
     4-byte asm loads per lane from the natural-order values (sparse24/kernels/pack.py, A_TILE
     0), or coalesced row-major tiles rearranged through shared memory (_a_operand): one atom
     (32 bytes a row, A_TILE 1) or two chunks (128 bytes a row, A_TILE 2, the default up to 64
     tokens: a warp reads whole lines; bench/NOTES.md 2026-12-05)
  B  x word       (token 8 * (n // 8) + g, word 16 * atom + t + 4r): two halves, k = 2t + 8r, +1;
     loaded as a coalesced tile and rearranged by Triton through shared memory (_b_operand)
  E  meta word    (atom pair, lane), shared by the 4 registers; selector 0 / 1 for even / odd atom
  D  y[token n, feature f]
Tokens past M read zeros and are masked at the store.
Pruned weights are skipped, never multiplied: an Inf in x meets only the kept weights of its column.
"""

import triton
import triton.language as tl

from sparse24.kernels.epilogue import _epilogue_store, _store_split


@triton.jit
def _mma_sp(a, b, c, e, SELECTOR: tl.constexpr, IS_BF16: tl.constexpr):
    """c += A(a, e) @ B(b) for each 16x8 tile; a, b, e int32 words, c float32, all one layout."""
    # The asm text must be a literal inside the jit function, hence four spelled-out variants.
    if IS_BF16:
        if SELECTOR == 0:
            d = tl.inline_asm_elementwise(
                "mma.sp.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 {$0,$1,$2,$3}, {$4,$5,$6,$7}, {$8,$9,$10,$11}, {$12,$13,$14,$15}, $16, 0x0;",
                "=f,=f,=f,=f,r,r,r,r,r,r,r,r,f,f,f,f,r,r,r,r",
                [a, b, c, e], dtype=tl.float32, is_pure=True, pack=4)
        else:
            d = tl.inline_asm_elementwise(
                "mma.sp.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 {$0,$1,$2,$3}, {$4,$5,$6,$7}, {$8,$9,$10,$11}, {$12,$13,$14,$15}, $16, 0x1;",
                "=f,=f,=f,=f,r,r,r,r,r,r,r,r,f,f,f,f,r,r,r,r",
                [a, b, c, e], dtype=tl.float32, is_pure=True, pack=4)
    else:
        if SELECTOR == 0:
            d = tl.inline_asm_elementwise(
                "mma.sp.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32 {$0,$1,$2,$3}, {$4,$5,$6,$7}, {$8,$9,$10,$11}, {$12,$13,$14,$15}, $16, 0x0;",
                "=f,=f,=f,=f,r,r,r,r,r,r,r,r,f,f,f,f,r,r,r,r",
                [a, b, c, e], dtype=tl.float32, is_pure=True, pack=4)
        else:
            d = tl.inline_asm_elementwise(
                "mma.sp.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32 {$0,$1,$2,$3}, {$4,$5,$6,$7}, {$8,$9,$10,$11}, {$12,$13,$14,$15}, $16, 0x1;",
                "=f,=f,=f,=f,r,r,r,r,r,r,r,r,f,f,f,f,r,r,r,r",
                [a, b, c, e], dtype=tl.float32, is_pure=True, pack=4)
    return d


@triton.jit
def _load_a(addr):
    """One lane's 4 A registers, each from its own element's address (_a_addresses)."""
    return tl.inline_asm_elementwise(
        "ld.global.nc.u32 $0, [$4];\n\tld.global.nc.u32 $1, [$5];\n\t"
        "ld.global.nc.u32 $2, [$6];\n\tld.global.nc.u32 $3, [$7];",
        "=r,=r,=r,=r,l,l,l,l", [addr], dtype=tl.int32, is_pure=True, pack=4)


@triton.jit
def _a_tile_pointers(values32_ptr, f_local, first_row, K, WORDS: tl.constexpr):
    """[BLOCK_F, WORDS] pointers to the first WORDS words of each of the program's rows of values:
    a plain row-major tile, loaded coalesced (16-byte vectors) and rearranged into the mma layout
    by ``_a_operand``. WORDS 8: one atom (32 bytes a row, A_TILE 1); 32: two chunks (128 bytes a
    row, A_TILE 2). Rows of values are K / 4 words apart."""
    words = tl.arange(0, WORDS)
    rows = (first_row + f_local).to(tl.int64)[:, None]
    return values32_ptr + rows * (K // 4) + words[None, :]


@triton.jit
def _pair_atoms(tile, BLOCK_F: tl.constexpr):
    """A [BLOCK_F, 32] word tile of two chunks (word w: chunk w // 16, atom (w % 16) // 8, word
    w % 8 of the atom's row segment) as its four [BLOCK_F, 8] atom tiles, in the order
    chunk 0 atom 0, chunk 0 atom 1, chunk 1 atom 0, chunk 1 atom 1."""
    a = tl.permute(tl.reshape(tile, [BLOCK_F, 4, 8]), [0, 2, 1])  # row, word, 2 * chunk + atom
    atom0, atom1 = tl.split(tl.reshape(a, [BLOCK_F, 8, 2, 2]))  # last axis: the atom
    first0, second0 = tl.split(atom0)  # last axis: the chunk
    first1, second1 = tl.split(atom1)
    return first0, first1, second0, second1


@triton.jit
def _a_operand(tile, BLOCK_F: tl.constexpr, BLOCK_T: tl.constexpr):
    """One atom's [BLOCK_F, 8] word tile (row-major) as the A operand of the [BLOCK_F, BLOCK_T]
    element grid: element (f, n) needs word t + 4h of row 16 * (f // 16) + g + 8c (see
    ``_a_word_offsets``), with g = f % 8, h = (f % 16) // 8, t = (n % 8) // 2, c = n % 2. Row
    16 * blk + 8c + g, word 4h + t of the tile is its element (blk, c, g, h, t) after a reshape;
    permuted to (blk, h, g, t, c) and broadcast over the token tiles it is the grid. Triton
    stages the change through shared memory, as for B."""
    a = tl.reshape(tile, [BLOCK_F // 16, 2, 8, 2, 4])  # blk, c, g, h, t
    a = tl.permute(a, [0, 3, 2, 4, 1])  # blk, h, g, t, c
    a = tl.broadcast_to(a[:, :, :, None, :, :], [BLOCK_F // 16, 2, 8, BLOCK_T // 8, 4, 2])
    return tl.reshape(a, [BLOCK_F, BLOCK_T])


@triton.jit
def _a_word_offsets(f_local, n_local, first_row, K):
    """[BLOCK_F, BLOCK_T] word (4-byte) offsets into the natural-order values of the A register
    each element carries, for the first atom (32 columns) of the weight.

    Element (f, n) is register r = 2h + c of lane 4g + t, with g = f % 8, h = (f % 16) // 8,
    t = (n % 8) // 2, c = n % 2. PTX's A fragment: r0 = A[g, 2t:2t+2], r1 = A[g+8, 2t:2t+2],
    r2 = A[g, 2t+8:2t+10], r3 = A[g+8, 2t+8:2t+10] of the atom's 16 x 16 compressed tile, so
    register r sits in row g + 8 * (r % 2) = g + 8c and word t + 4 * (r // 2) = t + 4h of the
    atom's 8-word row segment. Rows of values are K / 4 words apart."""
    g = (f_local % 8)[:, None]
    h = ((f_local % 16) // 8)[:, None]
    t = ((n_local % 8) // 2)[None, :]
    c = (n_local % 2)[None, :]
    row = first_row + (f_local // 16 * 16)[:, None] + g + 8 * c
    return row.to(tl.int64) * (K // 4) + t + 4 * h


@triton.jit
def _load_x_tile(x32_ptr, tokens, atom, M, stride_x32):
    """Coalesced [BLOCK_T, 16] int32 tile: the 32 halves of one atom column for BLOCK_T tokens.
    Rows past M read 0; their outputs are never stored."""
    words = tl.arange(0, 16)
    return tl.load(x32_ptr + tokens[:, None] * stride_x32 + atom * 16 + words[None, :],
                   mask=tokens[:, None] < M, other=0)


@triton.jit
def _b_operand(tile, BLOCK_F: tl.constexpr, BLOCK_T: tl.constexpr):
    """The [BLOCK_T, 16] x tile as the B operand of the [BLOCK_F, BLOCK_T] element grid.

    Element (f, n) needs word t + 4r of token 8 * (n // 8) + g, with g = f % 8, h = (f % 16) // 8,
    t = (n % 8) // 2, c = n % 2, r = 2h + c. Written as reshape / permute / broadcast, it is a
    layout change that Triton stages through shared memory (one store, then 4-byte reads in the
    mma layout), instead of 4 strided global loads per fragment: 2 mma.sp per shared load.
    """
    x = tl.reshape(tile, [BLOCK_T // 8, 8, 2, 2, 4])  # token tile, g, h, c, t
    x = tl.permute(x, [2, 1, 0, 4, 3])  # h, g, token tile, t, c
    x = tl.broadcast_to(x[None, :, :, :, :, :], [BLOCK_F // 16, 2, 8, BLOCK_T // 8, 4, 2])
    return tl.reshape(x, [BLOCK_F, BLOCK_T])


@triton.jit
def _load_e(addr):
    """One lane's metadata word, copied to the 4 registers of its group."""
    return tl.inline_asm_elementwise(
        "ld.global.nc.u32 $0, [$4];\n\tmov.b32 $1, $0;\n\tmov.b32 $2, $0;\n\tmov.b32 $3, $0;",
        "=r,=r,=r,=r,l,l,l,l", [addr], dtype=tl.int32, is_pure=True, pack=4)


@triton.jit
def _load_chunk(x32_ptr, a_addr, a_ptrs, e_addr, tokens, chunk, step, M, stride_x32,
                A_TILE: tl.constexpr):
    """The operands of one 64-column chunk (2 atoms): metadata, A of both atoms, x tiles of both.
    a_addr / a_ptrs / e_addr point at the split's first chunk; ``step`` chunks past it is
    ``chunk``. A chunk is 32 values (64 bytes, 16 words) of each row of values, an atom 32 bytes.
    A_TILE 0: A straight into the mma layout, four 4-byte asm loads per lane and atom; A_TILE 1:
    two coalesced [BLOCK_F, 8] word tiles, rearranged when used (_mma_chunk); A_TILE 2 loads two
    chunks at a time (_load_pair)."""
    e = _load_e(e_addr + step * 128)
    if A_TILE:
        a0 = tl.load(a_ptrs + step * 16)
        a1 = tl.load(a_ptrs + step * 16 + 8)
    else:
        a0 = _load_a(a_addr + step * 64)
        a1 = _load_a(a_addr + step * 64 + 32)
    x0 = _load_x_tile(x32_ptr, tokens, 2 * chunk, M, stride_x32)
    x1 = _load_x_tile(x32_ptr, tokens, 2 * chunk + 1, M, stride_x32)
    return e, a0, a1, x0, x1


@triton.jit
def _mma_chunk(acc, operands, BLOCK_F: tl.constexpr, BLOCK_T: tl.constexpr, IS_BF16: tl.constexpr,
               A_TILE: tl.constexpr):
    e, a0, a1, x0, x1 = operands
    if A_TILE:
        a0 = _a_operand(a0, BLOCK_F, BLOCK_T)
        a1 = _a_operand(a1, BLOCK_F, BLOCK_T)
    acc = _mma_sp(a0, _b_operand(x0, BLOCK_F, BLOCK_T), acc, e, 0, IS_BF16)
    return _mma_sp(a1, _b_operand(x1, BLOCK_F, BLOCK_T), acc, e, 1, IS_BF16)


@triton.jit
def _load_pair(x32_ptr, a_ptrs, e_addr, tokens, chunk, step, last, M, stride_x32):
    """The operands of chunks ``chunk`` and ``chunk + 1`` (A_TILE 2): both metadata words, one
    [BLOCK_F, 32] word tile of values (128 contiguous bytes of each row: a whole cache line per
    row, where A_TILE 1 asks for 32-byte pieces of 16 rows per load), and the four x tiles.
    Where the second chunk is past the split's end (``last``), its values and x tiles load as
    zeros and its metadata word is the first's: it adds exactly 0 (no memory past the end is read).
    """
    second = chunk + 1 < last
    e0 = _load_e(e_addr + step * 128)
    e1 = _load_e(e_addr + (step + second.to(tl.int32)) * 128)
    words = tl.arange(0, 32)
    # words 16-31 (the second chunk) only where it exists; spelled as one comparison, which the
    # interpreter takes too (a bool block | a scalar comparison is int32 there, Triton 3.9)
    a = tl.load(a_ptrs + step * 16, mask=(words < 16 + 16 * second.to(tl.int32))[None, :], other=0)
    x0 = _load_x_tile(x32_ptr, tokens, 2 * chunk, M, stride_x32)
    x1 = _load_x_tile(x32_ptr, tokens, 2 * chunk + 1, M, stride_x32)
    m_second = tl.where(second, M, 0)  # no token row of a missing chunk is read
    x2 = _load_x_tile(x32_ptr, tokens, 2 * chunk + 2, m_second, stride_x32)
    x3 = _load_x_tile(x32_ptr, tokens, 2 * chunk + 3, m_second, stride_x32)
    return e0, e1, a, x0, x1, x2, x3


@triton.jit
def _mma_pair(acc, operands, BLOCK_F: tl.constexpr, BLOCK_T: tl.constexpr, IS_BF16: tl.constexpr):
    e0, e1, a, x0, x1, x2, x3 = operands
    a00, a01, a10, a11 = _pair_atoms(a, BLOCK_F)
    acc = _mma_chunk(acc, (e0, a00, a01, x0, x1), BLOCK_F, BLOCK_T, IS_BF16, 1)
    return _mma_chunk(acc, (e1, a10, a11, x2, x3), BLOCK_F, BLOCK_T, IS_BF16, 1)


@triton.jit
def _load_step(x32_ptr, a_addr, a_ptrs, e_addr, tokens, chunk, step, last, M, stride_x32,
               A_TILE: tl.constexpr):
    """The operands of one step of the k-loop: one chunk, or two with A_TILE 2."""
    if A_TILE == 2:
        ops = _load_pair(x32_ptr, a_ptrs, e_addr, tokens, chunk, step, last, M, stride_x32)
    else:
        ops = _load_chunk(x32_ptr, a_addr, a_ptrs, e_addr, tokens, chunk, step, M, stride_x32,
                          A_TILE)
    return ops


@triton.jit
def _mma_step(acc, operands, BLOCK_F: tl.constexpr, BLOCK_T: tl.constexpr, IS_BF16: tl.constexpr,
              A_TILE: tl.constexpr):
    if A_TILE == 2:
        acc = _mma_pair(acc, operands, BLOCK_F, BLOCK_T, IS_BF16)
    else:
        acc = _mma_chunk(acc, operands, BLOCK_F, BLOCK_T, IS_BF16, A_TILE)
    return acc


@triton.jit
def _sparse_mma_kernel(
    x32_ptr, values32_ptr, values_addr, meta_addr, bias_ptr, y_ptr, partial_ptr, counter_ptr,
    M, N, K, stride_x32, stride_ym, chunks_per_split,
    BLOCK_F: tl.constexpr, BLOCK_T: tl.constexpr, GROUP_T: tl.constexpr, PREFETCH: tl.constexpr,
    SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, IS_BF16: tl.constexpr,
    A_TILE: tl.constexpr, FUSED_REDUCE: tl.constexpr,
):
    """x32: x seen as int32 (pairs of halves); values32: the values seen as int32 [N, K / 4] (the
    A tiles of A_TILE 1). values_addr / meta_addr: raw device addresses (int64) of the values and
    the metadata, read by inline-asm loads in the mma layout.

    Programs are ordered in groups of GROUP_T token blocks per feature block, so that programs that
    run together share weight tiles in L2.

    Split-K (few tokens): program axis 1 takes ``chunks_per_split`` chunks of 64 columns (the host
    sizes the grid so that no split is empty) and writes float32 partial sums to
    partial[split, token, feature]; ``_splitk_reduce_kernel`` (sparse_dot.py) adds them and applies
    the epilogue, or (FUSED_REDUCE) the tile's last split does, in the same order (epilogue.py,
    ``_store_split``): one launch instead of two. Without it a 4096 x 4096 weight at 16 tokens gives 32 programs of 128 features
    for 132 SMs, and the kernel cannot stream the weight at memory speed.
    """
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    blocks_f = N // BLOCK_F
    blocks_t = tl.cdiv(M, BLOCK_T)
    per_group = GROUP_T * blocks_f
    first_t = (pid // per_group) * GROUP_T
    group_size = tl.minimum(blocks_t - first_t, GROUP_T)
    pid_t = first_t + (pid % per_group) % group_size
    pid_f = (pid % per_group) // group_size

    f_local = tl.arange(0, BLOCK_F)
    n_local = tl.arange(0, BLOCK_T)
    lane = 4 * (f_local % 8)[:, None] + ((n_local % 8) // 2)[None, :]
    atom_row = (pid_f * (BLOCK_F // 16) + f_local // 16)[:, None].to(tl.int64)
    # byte addresses of chunk 0; one chunk = 64 columns = 2 atoms
    a_addr = values_addr + _a_word_offsets(f_local, n_local, pid_f * BLOCK_F, K) * 4
    a_ptrs = _a_tile_pointers(values32_ptr, f_local, pid_f * BLOCK_F, K, 32 if A_TILE == 2 else 8)
    e_addr = meta_addr + (atom_row * (K // 64) * 32 + lane) * 4
    tokens = pid_t * BLOCK_T + n_local

    # The accumulator takes the layout of a tl.dot result (see the module docstring). Its A operand
    # is the row index times a zero B, not zeros times zeros: with two all-zero operands every
    # 64-row wgmma of that product is the same instruction, ptxas 12.8 (Triton 3.6, sm_90) keeps
    # one of them, and where no loop follows (a program of one chunk) the features past the first
    # 64 started from uninitialized registers (relative error 0.1-0.5 on the H100:
    # bench/investigations/2026-11-mma-single-chunk; tests/test_gemm.py guards it in
    # test_mma_programs_of_few_chunks_gpu). A finite A times a zero B is exactly zero.
    rows = (f_local[:, None] + tl.zeros([BLOCK_F, 16], dtype=tl.int32)).to(tl.float16)
    acc = tl.dot(rows, tl.zeros([16, BLOCK_T], dtype=tl.float16))
    first = pid_k * chunks_per_split
    last = tl.minimum(first + chunks_per_split, K // 64)
    a_addr += first * 64
    a_ptrs += first * 16
    e_addr += first * 128
    # One step of the k-loop is one chunk, or two (A_TILE 2: a step past the split's end adds 0).
    STEP: tl.constexpr = 2 if A_TILE == 2 else 1
    if PREFETCH == 1:
        # Registers double-buffer one step: the loads of step i+1 are in flight during the
        # mma of step i (a loop iteration is a scheduling barrier for ptxas).
        cur = _load_step(x32_ptr, a_addr, a_ptrs, e_addr, tokens, first, 0, last, M, stride_x32,
                         A_TILE)
        for chunk in range(first + STEP, last, STEP):
            nxt = _load_step(x32_ptr, a_addr, a_ptrs, e_addr, tokens, chunk, chunk - first, last,
                             M, stride_x32, A_TILE)
            acc = _mma_step(acc, cur, BLOCK_F, BLOCK_T, IS_BF16, A_TILE)
            cur = nxt
        acc = _mma_step(acc, cur, BLOCK_F, BLOCK_T, IS_BF16, A_TILE)
    else:
        # Two steps in flight. A split of one step loads it twice and adds it once.
        second = tl.where(first + STEP < last, first + STEP, first)
        cur = _load_step(x32_ptr, a_addr, a_ptrs, e_addr, tokens, first, 0, last, M, stride_x32,
                         A_TILE)
        nxt = _load_step(x32_ptr, a_addr, a_ptrs, e_addr, tokens, second, second - first, last, M,
                         stride_x32, A_TILE)
        for chunk in range(first + 2 * STEP, last, STEP):
            after = _load_step(x32_ptr, a_addr, a_ptrs, e_addr, tokens, chunk, chunk - first,
                               last, M, stride_x32, A_TILE)
            acc = _mma_step(acc, cur, BLOCK_F, BLOCK_T, IS_BF16, A_TILE)
            cur = nxt
            nxt = after
        acc = _mma_step(acc, cur, BLOCK_F, BLOCK_T, IS_BF16, A_TILE)
        if second > first:
            acc = _mma_step(acc, nxt, BLOCK_F, BLOCK_T, IS_BF16, A_TILE)

    features = (pid_f * BLOCK_F + f_local)[:, None]
    if SPLIT_K == 1:
        _epilogue_store(acc, bias_ptr, features, y_ptr, tokens[None, :], stride_ym,
                        tokens[None, :] < M, HAS_BIAS, ACTIVATION)
    else:
        _store_split(acc, partial_ptr, counter_ptr, pid, pid_k, tokens[None, :], features, M, N,
                     bias_ptr, y_ptr, stride_ym, SPLIT_K, HAS_BIAS, ACTIVATION, FUSED_REDUCE)
