"""2:4 mask, compress and decompress kernels, and the packed layout they define (version 2).

Packed layout contract
======================
A dense weight W [N, K] (nn.Linear layout: N = out_features, K = in_features) is 2:4 along K: in
every group of 4 consecutive columns at most two entries are not +0.0. N % 16 == 0, K % 64 == 0.

Kept positions. Each group keeps two positions idx0 < idx1 (0..3): entries with a nonzero value
first, then negative zeros (so their sign bit survives the round trip), then the lowest positions.

values: same dtype as W, shape [N, K/2], plain row-major in natural order: row n of values is row n
of W compressed, and group q (columns 4q..4q+3) of that row keeps its idx0 value at column 2q and
its idx1 value at column 2q + 1. So TMA copies boxes of it straight into the sparse A operand of
Hopper's wgmma.sp (sparse24/kernels/sparse_wgmma.py), and a [rows, 32] tile is the kept values of a 64-column
chunk of W. (Layout 1 stored the same values in mma.sp A-fragment order;
sparse24.reference.values_v1_to_natural converts.)

meta: int32, shape [N/16, K/64, 32]. Rows are cut into bands of 16 (one mma.sp atom's rows; 16 of
a wgmma.sp warp's 64) and columns into chunks of 64. Row r = 16 * band + 8 * hr + g (hr = 0/1,
g = 0..7); group q = 0..15 of chunk c has the nibble idx0 | idx1 << 2. The 16-bit half-word
h[r, t] (t = 0..3) holds groups 4t..4t+3, group 4t+i at bits 4i..4i+3. The word of lane l = 4g + t:

    meta[band, c, l] = h[16 * band + g, t] | h[16 * band + g + 8, t] << 16

which is exactly the metadata register both sparse instructions expect for 32-column steps 2c
(sparsity selector 0) and 2c + 1 (selector 1): with selector s, lane (g, t) with t = 2s + h carries
half h of row g (low 16 bits) and of row g + 8 (high 16 bits). mma.sp m16n8k32 reads one band per
warp; wgmma.sp m64nNk32 reads band w of its 64 rows from warp w of the warpgroup.

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
    wide = tile.to(tl.float32)  # exact; compared in float32, see _compress_chunk
    p0, p1, p2, p3 = _split4(tl.abs(wide), BLOCK_N, BLOCK_K)
    k0, k1, k2, k3 = _top2(p0, p1, p2, p3)
    keep = _join4(k0, k1, k2, k3, BLOCK_N, BLOCK_K)
    if PRUNE:
        out = tl.where(keep, tile, tl.zeros_like(tile))
    else:
        out = keep.to(tl.int8)
    tl.store(out_ptr + rows[:, None] * stride_on + cols[None, :], out, mask=inside)
    tl.store(nan_ptr + tl.program_id(0) * tl.num_programs(1) + tl.program_id(1),
             tl.sum(tl.sum((wide != wide).to(tl.int32), axis=1), axis=0))


@triton.jit
def _load_kept(values_ptr, tile_n, chunk, K, BLOCK_N: tl.constexpr):
    """(v0, v1), each [BLOCK_N, 16]: the kept values of rows 16*tile_n.. in 64-column chunk."""
    rows = tile_n * 16 + tl.arange(0, BLOCK_N)
    pairs = tl.load(values_ptr + rows[:, None] * (K // 2) + chunk * 32 + tl.arange(0, 32)[None, :])
    return tl.split(tl.reshape(pairs, [BLOCK_N, 16, 2]))


@triton.jit
def _compress_kernel(
    w_ptr, values_ptr, meta_ptr, flags_ptr, N, K, stride_wn,
    BLOCK_N: tl.constexpr, INT_DTYPE: tl.constexpr,
):
    """One program packs a [BLOCK_N, 64] tile: rows pid 0 * BLOCK_N.., chunk pid 1 of 64 columns
    (BLOCK_N divides N; 4 chunks a program measured slower: bench/NOTES.md).

    flags[pid] = (groups with more than two nonzero values, NaN count), for the host's checks.
    """
    pid_n = tl.program_id(0)
    bad_groups, nans = _compress_chunk(w_ptr, values_ptr, meta_ptr, K, stride_wn, pid_n,
                                       tl.program_id(1), BLOCK_N, INT_DTYPE)
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
    # Compared in float32 (exact): the Triton interpreter holds bfloat16 as uint16 bits and
    # compares those, so there NaN == NaN and -0.0 != 0 (on a GPU both forms are the same).
    wide = tile.to(tl.float32)
    nonzero = wide != 0
    # score 2: nonzero value; 1: negative zero (nonzero bits); 0: +0.0
    score = nonzero.to(tl.int32) * 2 + (tile.to(INT_DTYPE, bitcast=True) != 0).to(tl.int32)
    s0, s1, s2, s3 = _split4(score, BLOCK_N, 64)
    k0, k1, k2, k3 = _top2(s0, s1, s2, s3)
    p0, p1, p2, p3 = _split4(tile, BLOCK_N, 64)
    idx0 = tl.where(k0, 0, tl.where(k1, 1, 2))
    idx1 = tl.where(k3, 3, tl.where(k2, 2, 1))
    v0 = tl.where(k0, p0, tl.where(k1, p1, p2))
    v1 = tl.where(k3, p3, tl.where(k2, p2, p1))

    # natural order: the chunk's kept values are a [BLOCK_N, 32] row-major tile of values
    pairs = tl.reshape(tl.join(v0, v1), [BLOCK_N, 32])
    tl.store(values_ptr + rows[:, None] * (K // 2) + chunk * 32 + tl.arange(0, 32)[None, :], pairs)

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
    nans = tl.sum((wide != wide).to(tl.int32))
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
    v0, v1 = _load_kept(values_ptr, tile_n, chunk, K, BLOCK_N)
    dense = _expand(v0, v1, idx0, idx1, BLOCK_N, 64)
    tl.store(w_ptr + rows[:, None] * stride_wn + cols[None, :], dense)
