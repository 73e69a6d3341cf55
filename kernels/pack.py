"""2:4 mask, compress and decompress kernels, and the packed layout they define (version 1).

Packed layout contract
======================
A dense weight W [N, K] (nn.Linear layout: N = out_features, K = in_features) is 2:4 along K: in
every group of 4 consecutive columns at most two entries are not +0.0. N % 16 == 0, K % 64 == 0.

Kept positions. Each group keeps two positions idx0 < idx1 (0..3): entries with a nonzero value
first, then negative zeros (so their sign bit survives the round trip), then the lowest positions.

Atoms. The weight is cut into atoms of 16 rows x 32 columns, the A operand of one
``mma.sp.sync.aligned.m16n8k32`` (W is the sparse A operand: 16 output features per instruction).
Atom (nt, kb) covers rows 16*nt .. 16*nt+15 and columns 32*kb .. 32*kb+31. Within an atom, row r =
8*hr + g (hr = 0/1, g = 0..7) and group q = 4*qh + t (qh = 0/1, t = 0..3) of that row.

values: same dtype as W, shape [N, K/2], memory order [N/16][K/32][lane 32][8 elements]. The two
kept values of group q of row r of atom (nt, kb) (idx0 value first) are elements j = 0, 1 of

    offset = (nt * (K/32) + kb) * 256 + lane * 8 + reg * 2 + j,   lane = 4*g + t,  reg = 2*qh + hr

so lane l of a warp reads its whole A fragment {r0, r1, r2, r3} of atom (nt, kb) as one 16-byte
load at offset (nt*(K/32) + kb)*256 + 8*l, and a warp reads 512 contiguous bytes. (PTX's A fragment:
r0 = A[g, 2t:2t+2], r1 = A[g+8, 2t:2t+2], r2 = A[g, 2t+8:2t+10], r3 = A[g+8, 2t+8:2t+10] of the 16x16
compressed tile, low half first.) Rows of ``values`` are therefore NOT rows of W.

meta: int32, shape [N/16, K/64, 32]. Chunk c covers columns 64*c .. 64*c+63 of an atom row band =
atoms kb = 2c (issued with sparsity selector 0) and kb = 2c+1 (selector 1). Per row r, group q of
the chunk (q = 0..15) has the nibble idx0 | idx1 << 2. The 16-bit half-word h[r, t] (t = 0..3)
holds groups 4t..4t+3, group 4t+i at bits 4i..4i+3. The word of lane l = 4*g + t is

    meta[nt, c, l] = h[g, t] | h[g + 8, t] << 16

which is exactly the metadata register mma.sp expects: with selector s, lane (g, t) with t = 2s + h
carries half h (groups 4h..4h+3) of the atom's row g (low 16 bits) and row g+8 (high 16 bits).
One 4-byte load per lane brings the metadata of two consecutive atoms.

Bytes: K/2 values + K/8 bytes of metadata per row = 9/16 of the dense fp16 weight.
"""

import triton
import triton.language as tl


@triton.jit
def _split4(tile, BN: tl.constexpr, BK: tl.constexpr):
    """[BN, BK] -> the four positions p0..p3 of each group of 4, each [BN, BK // 4]."""
    quad = tl.reshape(tile, [BN, BK // 4, 2, 2])
    even, odd = tl.split(quad)  # positions {0, 2} and {1, 3}
    p0, p2 = tl.split(even)
    p1, p3 = tl.split(odd)
    return p0, p1, p2, p3


@triton.jit
def _join4(p0, p1, p2, p3, BN: tl.constexpr, BK: tl.constexpr):
    """Inverse of _split4."""
    return tl.reshape(tl.join(tl.join(p0, p2), tl.join(p1, p3)), [BN, BK])


@triton.jit
def _top2(s0, s1, s2, s3):
    """Keep flags of the two largest scores of each group of 4, ties toward the lower position.

    Position i is kept when fewer than two others beat it; j beats i when s_j > s_i, or when
    s_j == s_i and j < i.
    """
    k0 = ((s1 > s0).to(tl.int32) + (s2 > s0).to(tl.int32) + (s3 > s0).to(tl.int32)) < 2
    k1 = ((s0 >= s1).to(tl.int32) + (s2 > s1).to(tl.int32) + (s3 > s1).to(tl.int32)) < 2
    k2 = ((s0 >= s2).to(tl.int32) + (s1 >= s2).to(tl.int32) + (s3 > s2).to(tl.int32)) < 2
    k3 = ((s0 >= s3).to(tl.int32) + (s1 >= s3).to(tl.int32) + (s2 >= s3).to(tl.int32)) < 2
    return k0, k1, k2, k3


@triton.jit
def _mask_24_kernel(
    w_ptr, out_ptr, nan_ptr, N, K, stride_wn, stride_on,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRUNE: tl.constexpr,
):
    """PRUNE=False: out = the keep mask (int8). PRUNE=True: out = w with dropped entries +0.0.
    nan[pid] = NaN count of the tile, so the host refuses NaN weights without a second pass."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    inside = (rows[:, None] < N) & (cols[None, :] < K)
    tile = tl.load(w_ptr + rows[:, None] * stride_wn + cols[None, :], mask=inside, other=0.0)
    p0, p1, p2, p3 = _split4(tl.abs(tile.to(tl.float32)), BLOCK_N, BLOCK_K)
    k0, k1, k2, k3 = _top2(p0, p1, p2, p3)
    keep = _join4(k0, k1, k2, k3, BLOCK_N, BLOCK_K)
    if PRUNE:
        out = tl.where(keep, tile, tl.zeros_like(tile))
    else:
        out = keep.to(tl.int8)
    tl.store(out_ptr + rows[:, None] * stride_on + cols[None, :], out, mask=inside)
    tl.store(nan_ptr + tl.program_id(0) * tl.num_programs(1) + tl.program_id(1),
             tl.sum(tl.sum((tile != tile).to(tl.int32), axis=1), axis=0))


@triton.jit
def _values_offsets(tile_n, chunk, K, BLOCK_N: tl.constexpr):
    """Offsets [BLOCK_N, 16, 2] of the kept values of rows 16*tile_n.. and groups of 64-col chunk."""
    r = tl.arange(0, BLOCK_N)
    q16 = tl.arange(0, 16)
    j = tl.arange(0, 2)
    nt = tile_n + r // 16
    hr = (r % 16) // 8
    g = r % 8
    kb = chunk * 2 + q16 // 8
    q = q16 % 8
    atom = nt[:, None] * (K // 32) + kb[None, :]
    lane = 4 * g[:, None] + (q % 4)[None, :]
    reg = 2 * (q // 4)[None, :] + hr[:, None]
    return (atom * 256 + lane * 8 + reg * 2)[:, :, None] + j[None, None, :]


@triton.jit
def _compress_kernel(
    w_ptr, values_ptr, meta_ptr, flags_ptr, N, K, stride_wn,
    BLOCK_N: tl.constexpr, CHUNKS: tl.constexpr, INT_DTYPE: tl.constexpr,
):
    """One program packs a [BLOCK_N, 64 * CHUNKS] tile (BLOCK_N divides N, CHUNKS divides K / 64).

    flags[pid] = (groups with more than two nonzero values, NaN count), for the host's checks.
    """
    pid_n = tl.program_id(0)
    bad_groups = 0
    nans = 0
    for step in range(CHUNKS):
        chunk = tl.program_id(1) * CHUNKS + step
        b, n = _compress_chunk(w_ptr, values_ptr, meta_ptr, K, stride_wn, pid_n, chunk,
                               BLOCK_N, INT_DTYPE)
        bad_groups += b
        nans += n
    flags = flags_ptr + 2 * (pid_n * tl.num_programs(1) + tl.program_id(1))
    tl.store(flags, bad_groups)
    tl.store(flags + 1, nans)


@triton.jit
def _compress_chunk(w_ptr, values_ptr, meta_ptr, K, stride_wn, pid_n, chunk,
                    BLOCK_N: tl.constexpr, INT_DTYPE: tl.constexpr):
    """Pack rows pid_n * BLOCK_N.. and columns 64 * chunk..; return (bad groups, NaNs) counts."""
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = chunk * 64 + tl.arange(0, 64)
    tile = tl.load(w_ptr + rows[:, None] * stride_wn + cols[None, :])
    nonzero = tile != 0
    # score 2: nonzero value; 1: negative zero (nonzero bits); 0: +0.0
    score = nonzero.to(tl.int32) * 2 + (tile.to(INT_DTYPE, bitcast=True) != 0).to(tl.int32)
    s0, s1, s2, s3 = _split4(score, BLOCK_N, 64)
    k0, k1, k2, k3 = _top2(s0, s1, s2, s3)
    p0, p1, p2, p3 = _split4(tile, BLOCK_N, 64)
    idx0 = tl.where(k0, 0, tl.where(k1, 1, 2))
    idx1 = tl.where(k3, 3, tl.where(k2, 2, 1))
    v0 = tl.where(k0, p0, tl.where(k1, p1, p2))
    v1 = tl.where(k3, p3, tl.where(k2, p2, p1))

    # Fragment order of the chunk's two atoms, built in registers so that each atom row band is
    # written as one contiguous 1 KB run (scattered 4-byte stores reached ~35% of copy bandwidth).
    pairs = tl.reshape(tl.join(v0, v1), [BLOCK_N // 16, 2, 8, 2, 2, 4, 2])  # nt hr g s qh t j
    pairs = tl.permute(pairs, [0, 3, 2, 5, 4, 1, 6])  # nt s g t qh hr j
    pairs = tl.reshape(pairs, [BLOCK_N // 16, 512])
    tile_rows = pid_n * (BLOCK_N // 16) + tl.arange(0, BLOCK_N // 16)
    run = (tile_rows[:, None] * (K // 32) + 2 * chunk) * 256 + tl.arange(0, 512)[None, :]
    tl.store(values_ptr + run, pairs)

    nibble = (idx0 | (idx1 << 2)).to(tl.uint32)  # [BLOCK_N, 16]
    shifts = 4 * tl.arange(0, 4).to(tl.uint32)
    half = tl.sum(tl.reshape(nibble, [BLOCK_N, 4, 4]) << shifts[None, None, :], axis=2)
    half = tl.permute(tl.reshape(half, [BLOCK_N // 16, 2, 8, 4]), [0, 2, 3, 1])  # nt, g, t, hr
    low, high = tl.split(half)
    word = tl.reshape(low | (high << 16), [BLOCK_N // 16, 32]).to(tl.int32, bitcast=True)
    nt = pid_n * (BLOCK_N // 16) + tl.arange(0, BLOCK_N // 16)
    lane = tl.arange(0, 32)
    meta_off = (nt[:, None] * (K // 64) + chunk) * 32 + lane[None, :]
    tl.store(meta_ptr + meta_off, word)

    bad_groups = tl.sum(((s0 >= 2).to(tl.int32) + (s1 >= 2).to(tl.int32) + (s2 >= 2).to(tl.int32)
                         + (s3 >= 2).to(tl.int32) > 2).to(tl.int32))
    nans = tl.sum((tile != tile).to(tl.int32))
    return bad_groups, nans


@triton.jit
def _decode_meta(meta_ptr, tile_n, chunk, K, BLOCK_N: tl.constexpr):
    """Kept positions (idx0, idx1), each [BLOCK_N, 16], of one [BLOCK_N, 64] tile."""
    nt = tile_n + tl.arange(0, BLOCK_N // 16)
    lane = tl.arange(0, 32)
    word = tl.load(meta_ptr + (nt[:, None] * (K // 64) + chunk) * 32 + lane[None, :])
    word = tl.reshape(word.to(tl.uint32, bitcast=True), [BLOCK_N // 16, 8, 4])  # nt, g, t
    half = tl.join(word & 0xFFFF, word >> 16)  # nt, g, t, hr
    half = tl.reshape(tl.permute(half, [0, 3, 1, 2]), [BLOCK_N, 4])  # row, t
    shifts = 4 * tl.arange(0, 4).to(tl.uint32)
    nibble = tl.reshape((half[:, :, None] >> shifts[None, None, :]) & 0xF, [BLOCK_N, 16])
    return (nibble & 3).to(tl.int32), (nibble >> 2).to(tl.int32)


@triton.jit
def _expand(v0, v1, idx0, idx1, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Kept values and positions of each group -> the dense [BLOCK_N, BLOCK_K] tile (+0.0 elsewhere)."""
    zero = tl.zeros_like(v0)
    p0 = tl.where(idx0 == 0, v0, zero)
    p1 = tl.where(idx0 == 1, v0, tl.where(idx1 == 1, v1, zero))
    p2 = tl.where(idx0 == 2, v0, tl.where(idx1 == 2, v1, zero))
    p3 = tl.where(idx1 == 3, v1, zero)
    return _join4(p0, p1, p2, p3, BLOCK_N, BLOCK_K)


@triton.jit
def _decompress_kernel(values_ptr, meta_ptr, w_ptr, N, K, stride_wn, BLOCK_N: tl.constexpr):
    """One program unpacks a [BLOCK_N, 64] tile (BLOCK_N divides N)."""
    pid_n = tl.program_id(0)
    chunk = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = chunk * 64 + tl.arange(0, 64)
    tile_n = pid_n * (BLOCK_N // 16)
    idx0, idx1 = _decode_meta(meta_ptr, tile_n, chunk, K, BLOCK_N)
    offsets = _values_offsets(tile_n, chunk, K, BLOCK_N)
    pairs = tl.load(values_ptr + offsets)
    v0, v1 = tl.split(pairs)
    dense = _expand(v0, v1, idx0, idx1, BLOCK_N, 64)
    tl.store(w_ptr + rows[:, None] * stride_wn + cols[None, :], dense)
