"""Sparse x dense GEMM on Hopper's sparse tensor cores: ``wgmma.mma_async.sp`` from Gluon (sm_90a).

y[M, N] = act(x[M, K] @ W[N, K]^T + bias), computed transposed per tile: acc[features, tokens] =
A @ x^T with A = W's packed values (the sparse operand, 64 or 128 features per warpgroup) and x the
dense B operand (BT tokens, K-major, straight from its row-major storage). Packed layout:
sparse24/kernels/pack.py (values in natural order, so TMA copies them as a plain [N, K/2] matrix).

A persistent, warp-specialized kernel. Each program walks tiles tile = pid, pid + programs, ...
(feature tiles of BLOCK_F grouped by GROUP token tiles so that co-running programs share weights in
L2), with three partitions:
  - loader (1 warp): TMA copies of each k-block (128 inputs: one [BLOCK_F, 64] box of values and two
    [BT, 64] boxes of x) into a ring of STAGES shared-memory stages; stage s is refilled once its
    ``empty`` barrier says both warpgroups are done with it, and its ``full`` barrier counts the
    bytes in;
  - two math warpgroups (4 warps each), features 0-63 and 64-127 of the tile: per k-block, wait
    for ``full``, issue four m64nBTk32 sparse wgmmas through inline asm (sparse24/ops/wgmma_asm.py
    generates it), arrive on ``empty``. The two warpgroups are separate partitions, so neither
    waits for the other between k-blocks: while one drains its wgmmas the other issues.
    Each then runs the epilogue of its [64, BT] tile (bias, activation, cast) and stores it with TMA
    through its own shared-memory buffer, while the loader already fills the next tile's stages.
    With BLOCK_F 256 (256 features a tile) each warpgroup owns two bands of 64 (features 0-127
    and 128-255), issues both bands' wgmmas on each x descriptor (eight a k-block) and stores the
    bands one after the other: each x byte brought from L2 feeds twice the math.
The asm addresses the rings from ``global_smem`` plus offsets that the launcher checks against the
compiled kernel (sparse24/ops/wgmma.py): Gluon cannot pass shared-memory descriptors to asm.
The partitions share their state as aggregates (as in Gluon's tutorials): the ``Ring`` (stages
and mbarriers), the ``Schedule`` (which tiles and k-blocks a program works on), a warpgroup's
``WgmmaAsm`` and the ``Epilogue``.

Three opt-in forms (constexprs; sparse24/ops/wgmma.py says which configs use them):
  - ASM_LOOP: each math warpgroup runs a tile's whole k-loop in one asm statement (waits on
    ``full``, wgmmas, releases of ``empty``, metadata loads), keeping a wgmma group in flight
    between drains (wgmma_asm.loop_asm); the Gluon k-loop below is the other form.
  - SPLIT_K > 1: work units are (split, tile), each covering its split's k-blocks; the epilogue
    stores float32 partial sums (no bias or activation) at row (split * tiles_t + token tile) * BT
    of a workspace that a reduction kernel adds up.
  - META_RING: the loader also copies each k-block's metadata (2 KB for the tile) into a third
    ring with cp.async, counted on the stage's ``full`` mbarrier, and the MMA asm reads each
    thread's two words from shared memory: the k-loop waits on no global load (the Gluon loop
    loads them from global memory META_AHEAD k-blocks ahead, and at few tokens their latency
    showed: bench/NOTES.md 2026-12-05).

Tails: TMA fills out-of-bounds rows and columns of a box with zeros and clips out-of-bounds rows
of a store, so M, N (a multiple of 16) and K (a multiple of 64) need no masks; metadata reads of
feature bands or chunks past the weight are clamped to the last one (valid nibbles over zero
values). Pruned weights are skipped by the tensor cores, not multiplied: an Inf in x meets only
the kept weights of its column.
"""

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma

from sparse24.activations import EPILOGUE_CODES, GATED_FLAG
from sparse24.kernels.gluon_compat import (aggregate, cp_async_arrive, cp_async_load, tma_load,
                                           tma_store)

# The ACTIVATION codes, as sparse24/activations.py defines them (0 is no activation).
_RELU = gl.constexpr(EPILOGUE_CODES["relu"])
_GELU = gl.constexpr(EPILOGUE_CODES["gelu"])
_GELU_TANH = gl.constexpr(EPILOGUE_CODES["gelu_tanh"])
_SILU = gl.constexpr(EPILOGUE_CODES["silu"])
_GATED = gl.constexpr(GATED_FLAG)


@gluon.jit
def _tile_coords(tile, tiles_f, tiles_t, GROUP: gl.constexpr):
    """(feature tile, token tile) of linear tile index ``tile``: GROUP token tiles per feature
    tile run next to each other, so they read the same weight tile from L2."""
    per_group = GROUP * tiles_f
    first_t = (tile // per_group) * GROUP
    group_size = gl.minimum(tiles_t - first_t, GROUP)
    pid_t = first_t + (tile % per_group) % group_size
    pid_f = (tile % per_group) // group_size
    return pid_f, pid_t


@aggregate
class Schedule:
    """A program's work: tiles of BLOCK_F features x BT tokens (GROUP token tiles per feature tile,
    see ``_tile_coords``), and with SPLIT_K > 1 each tile's k-blocks in splits: the work units
    are then (split, tile). The loader and both math warpgroups walk the same units, each
    computing them itself (values passed into warp_specialize partitions change the unsplit
    kernel's code)."""

    tiles_f: gl.tensor
    tiles_t: gl.tensor
    k_blocks: gl.tensor
    BT: gl.constexpr
    GROUP: gl.constexpr
    SPLIT_K: gl.constexpr
    BLOCK_F: gl.constexpr

    @gluon.constexpr_function
    def __init__(self, tiles_f, tiles_t, k_blocks, BT, GROUP, SPLIT_K, BLOCK_F):
        self.tiles_f = tiles_f
        self.tiles_t = tiles_t
        self.k_blocks = k_blocks
        self.BT = gl.constexpr(BT)
        self.GROUP = gl.constexpr(GROUP)
        self.SPLIT_K = gl.constexpr(SPLIT_K)
        self.BLOCK_F = gl.constexpr(BLOCK_F)

    @gluon.jit
    def units(self):
        """(work units, k-blocks per split). Split, no split is left empty (as
        sparse24/ops/wgmma.py sizes the workspace): 6 k-blocks in SPLIT_K 4 are 3 splits of 2."""
        if self.SPLIT_K == 1:
            units = self.tiles_f * self.tiles_t
            per_split = self.k_blocks
        else:
            per_split = gl.cdiv(self.k_blocks, self.SPLIT_K)
            units = self.tiles_f * self.tiles_t * gl.cdiv(self.k_blocks, per_split)
        return units, per_split

    @gluon.jit
    def unit(self, unit, per_split):
        """(feature tile, token tile, first k-block, end k-block, split) of work unit ``unit``:
        unsplit, a tile and every k-block; split, unit = split * tiles + tile and the split's
        ``per_split`` k-blocks."""
        if self.SPLIT_K == 1:
            pid_f, pid_t = _tile_coords(unit, self.tiles_f, self.tiles_t, self.GROUP)
            kb_first = 0
            kb_end = self.k_blocks
            split = 0
        else:
            tiles = self.tiles_f * self.tiles_t
            split = unit // tiles
            pid_f, pid_t = _tile_coords(unit % tiles, self.tiles_f, self.tiles_t, self.GROUP)
            kb_first = split * per_split
            kb_end = gl.minimum(kb_first + per_split, self.k_blocks)
        return pid_f, pid_t, kb_first, kb_end, split


@aggregate
class Ring:
    """The operand ring: STAGES stages of A ([BLOCK_F, 64] values) and x (two [BT, 64] halves), the
    ``full`` mbarriers (the loader's TMA bytes arrived) and ``empty`` ones (both math warpgroups
    are done with the stage)."""

    a: gl.shared_memory_descriptor
    x: gl.shared_memory_descriptor
    full: gl.shared_memory_descriptor
    empty: gl.shared_memory_descriptor
    STAGES: gl.constexpr

    @gluon.constexpr_function
    def __init__(self, a, x, full, empty, STAGES):
        self.a = a
        self.x = x
        self.full = full
        self.empty = empty
        self.STAGES = gl.constexpr(STAGES)


@gluon.jit
def _loader(a_desc, x_desc, ring: Ring, schedule: Schedule):
    units, per_split = schedule.units()
    STAGES: gl.constexpr = ring.STAGES
    step = 0
    for unit in range(gl.program_id(0), units, gl.num_programs(0)):
        pid_f, pid_t, kb_first, kb_end, split = schedule.unit(unit, per_split)
        for kb in range(kb_first, kb_end):
            s = step % STAGES
            # the first pass over the ring waits for the phase before init, which has completed
            mbarrier.wait(ring.empty.index(s), ((step // STAGES) & 1) ^ 1)
            bar = ring.full.index(s)
            mbarrier.expect(bar, a_desc.block_type.nbytes + 2 * x_desc.block_type.nbytes)
            tma_load(a_desc, [pid_f * schedule.BLOCK_F, kb * 64], bar, ring.a.index(s))
            tma_load(x_desc, [pid_t * schedule.BT, kb * 128], bar, ring.x.index(2 * s))
            tma_load(x_desc, [pid_t * schedule.BT, kb * 128 + 64], bar, ring.x.index(2 * s + 1))
            step += 1


@gluon.jit
def _loader_with_metadata(a_desc, x_desc, ring: Ring, schedule: Schedule, meta_ring, meta_addr,
                          N, K):
    """The loader of META_RING: each k-block's metadata goes into the ring too. The [8 bands,
    2 chunks, 32 words] box of the tile's 128 features (2 KB) is copied with cp.async into
    ``meta_ring`` stage s, as rows 2 * band + chunk, before the TMA copies; the stage's ``full``
    mbarrier then also waits for those copies (cp.async.mbarrier.arrive, counted), so the math
    warpgroups read their words from shared memory with no global-memory latency in the k-loop.
    Bands and chunks past the weight read its last one (valid nibbles over zero values)."""
    gl.static_assert(schedule.BLOCK_F == 128, "the metadata ring holds 128-feature tiles")
    units, per_split = schedule.units()
    STAGES: gl.constexpr = ring.STAGES
    # one warp: 16 rows x 32 words, 4 words (16 bytes, one cp.async) a thread, 4 rows a pass
    box: gl.constexpr = gl.BlockedLayout([1, 4], [4, 8], [1, 1], [1, 0])
    row = gl.arange(0, 16, layout=gl.SliceLayout(1, box))
    word = gl.arange(0, 32, layout=gl.SliceLayout(0, box))
    meta_ptr = meta_addr.to(gl.pointer_type(gl.int32))
    bands = N // 16
    chunks = K // 64
    step = 0
    for unit in range(gl.program_id(0), units, gl.num_programs(0)):
        pid_f, pid_t, kb_first, kb_end, split = schedule.unit(unit, per_split)
        band = gl.minimum(pid_f * 8 + row // 2, bands - 1).to(gl.int64)
        for kb in range(kb_first, kb_end):
            s = step % STAGES
            mbarrier.wait(ring.empty.index(s), ((step // STAGES) & 1) ^ 1)
            bar = ring.full.index(s)
            chunk = gl.minimum(2 * kb + row % 2, chunks - 1)
            words = meta_ptr + ((band * chunks + chunk) * 32)[:, None] + word[None, :]
            # 16-byte copies: each row is 128 contiguous bytes, 16-byte aligned (the launch
            # passes only aligned metadata); an address made from an int carries no such fact
            words = gl.max_contiguous(gl.multiple_of(words, [16, 16]), [1, 32])
            cp_async_load(meta_ring.index(s), words)
            # counted (each lane raises the pending count, then arrives once its copies land);
            # the warp is converged and Triton syncs it after this op (bar.warp.sync in the PTX),
            # so every lane has raised the count before the expect below arrives
            cp_async_arrive(bar)
            mbarrier.expect(bar, a_desc.block_type.nbytes + 2 * x_desc.block_type.nbytes)
            tma_load(a_desc, [pid_f * schedule.BLOCK_F, kb * 64], bar, ring.a.index(s))
            tma_load(x_desc, [pid_t * schedule.BT, kb * 128], bar, ring.x.index(2 * s))
            tma_load(x_desc, [pid_t * schedule.BT, kb * 128 + 64], bar, ring.x.index(2 * s + 1))
            step += 1


@gluon.jit
def _fast_unary(asm: gl.constexpr, x):
    """One MUFU instruction: gl.exp2 and gl.fdiv add range checks for subnormals (3 FSETP and 10
    FMUL an element in the GELU epilogue, SASS sm_90a); these arguments are normal or flush to 0."""
    return gl.inline_asm_elementwise(asm, "=f,f", [x], dtype=gl.float32, is_pure=True, pack=1)


@gluon.jit
def _activate(y, ACTIVATION: gl.constexpr):
    """ACTIVATION: none, relu, gelu (erf form), gelu_tanh, silu, by the codes of sparse24/activations.py;
    the same functions as sparse24/kernels/epilogue.py, in forms that are cheaper on sm90 (see each)."""
    if ACTIVATION == _RELU:
        # where, not maximum: max(NaN, 0) is 0 on the GPU and in the interpreter, and torch's relu
        # keeps NaN (and -0.0); so does this
        y = gl.where(y < 0.0, 0.0, y)
    elif ACTIVATION == _GELU:
        # GELU(y) = y * Phi(y), Phi(y) = erfc(-y / sqrt(2)) / 2, with erfc(|y| / sqrt(2)) from
        # Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7): about 17 instructions an element
        # where libdevice's erf takes about 33, and with it the 128 x 256 tile's epilogue spilled
        # 272 bytes a thread (ptxas, sm_90a).
        x = gl.abs(y) * 0.7071067811865476
        t = _fast_unary("rcp.approx.ftz.f32 $0, $1;", 1.0 + 0.3275911 * x)
        poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027
                                                                               + t * 1.061405429))))
        exp_x2 = _fast_unary("ex2.approx.ftz.f32 $0, $1;", x * x * -1.4426950408889634)
        half_erfc = 0.5 * poly * exp_x2
        y = y * gl.where(y >= 0.0, 1.0 - half_erfc, half_erfc)
    elif ACTIVATION == _GELU_TANH:
        # 0.5 * (1 + tanh(u)) = 1 / (1 + exp(-2u)); exp(-2u) overflows to inf for very negative
        # u, and 1 / inf = 0 is the right limit. exp(-2u) = 2^(-2u log2(e)).
        u = 0.7978845608028654 * (y + 0.044715 * y * y * y)
        e = _fast_unary("ex2.approx.ftz.f32 $0, $1;", u * -2.8853900817779268)
        y = y * _fast_unary("rcp.approx.ftz.f32 $0, $1;", 1.0 + e)
    elif ACTIVATION == _SILU:
        # y * sigmoid(y) = y / (1 + exp(-y)), exp(-y) = 2^(-y log2(e)); for very negative y it
        # overflows to inf and 1 / inf = 0, the right limit
        e = _fast_unary("ex2.approx.ftz.f32 $0, $1;", y * -1.4426950408889634)
        y = y * _fast_unary("rcp.approx.ftz.f32 $0, $1;", 1.0 + e)
    return y


@aggregate
class WgmmaAsm:
    """The inline asm a math warpgroup issues (sparse24/ops/wgmma_asm.py generates the text for
    its offsets and shape): MMA one k-block (ASM_LOOP off) or a tile's whole k-loop (on), META
    the metadata loads of the Gluon k-loop, META_AHEAD (1-4) how many k-blocks ahead they
    run; CON their constraint strings. META_RING: the metadata comes through the ring (the
    MMA asm reads its words from the stage; META is unused)."""

    MMA: gl.constexpr
    MMA_CON: gl.constexpr
    META: gl.constexpr
    META_CON: gl.constexpr
    ASM_LOOP: gl.constexpr
    META_AHEAD: gl.constexpr
    META_RING: gl.constexpr

    @gluon.constexpr_function
    def __init__(self, MMA, MMA_CON, META, META_CON, ASM_LOOP, META_AHEAD, META_RING):
        self.MMA = gl.constexpr(MMA)
        self.MMA_CON = gl.constexpr(MMA_CON)
        self.META = gl.constexpr(META)
        self.META_CON = gl.constexpr(META_CON)
        self.ASM_LOOP = gl.constexpr(ASM_LOOP)
        self.META_AHEAD = gl.constexpr(META_AHEAD)
        self.META_RING = gl.constexpr(META_RING)


@aggregate
class Epilogue:
    """What happens to a finished [64, BT] accumulator: + bias, the activation, the cast, and the
    TMA store into y (or, split, the float32 partials)."""

    bias_ptr: gl.tensor
    y_desc: tma.tensor_descriptor
    HAS_BIAS: gl.constexpr
    ACTIVATION: gl.constexpr

    @gluon.constexpr_function
    def __init__(self, bias_ptr, y_desc, HAS_BIAS, ACTIVATION):
        self.bias_ptr = bias_ptr
        self.y_desc = y_desc
        self.HAS_BIAS = gl.constexpr(HAS_BIAS)
        self.ACTIVATION = gl.constexpr(ACTIVATION)


@gluon.jit
def _metadata(meta_addr, row_words, kb, odd_chunk, chunks, META_ASM: gl.constexpr,
              META_CON: gl.constexpr, P: gl.constexpr):
    """Each thread's metadata words of k-block ``kb`` (chunks 2kb and 2kb + 1 as elements 0 and 1
    of its pack), clamped to the weight's last chunk: a read past a split stays in the weight."""
    chunk = gl.minimum(2 * kb + odd_chunk, chunks - 1)
    return gl.inline_asm_elementwise(META_ASM, META_CON, [meta_addr + (row_words + chunk * 32) * 4],
                                     dtype=gl.int32, is_pure=False, pack=P)


@gluon.jit
def _store_band(acc, first_feature, pid_t, split, N, schedule: Schedule, epilogue: Epilogue,
                y_smem, f):
    """The epilogue of one finished [64, BT] band of 64 features from ``first_feature``: bias,
    activation and cast (or, split, the float32 partial sums), then a TMA store through
    ``y_smem`` once the previous store has left it."""
    BT: gl.constexpr = schedule.BT
    y_desc = epilogue.y_desc
    column = first_feature
    if schedule.SPLIT_K == 1:
        features = first_feature + f
        if epilogue.HAS_BIAS:
            bias = gl.load(epilogue.bias_ptr + features, mask=features < N, other=0.0)
            acc = acc + bias.to(gl.float32)[:, None]
        if epilogue.ACTIVATION >= _GATED:
            # rows 16g + r and 16g + 8 + r (gate, up; sparse24/layout.py) are one thread's
            # (rows r and r + 8 of each warp's 16): a [32, BT] tile of act(gate) * up
            pairs = gl.permute(gl.reshape(acc, [4, 2, 8, BT]), [0, 2, 3, 1])
            gate, up = gl.split(pairs)
            out = _activate(gl.reshape(gate, [32, BT]), epilogue.ACTIVATION - _GATED)
            out = (out * gl.reshape(up, [32, BT])).to(y_desc.dtype)
            column = first_feature // 2
        else:
            out = _activate(acc, epilogue.ACTIVATION).to(y_desc.dtype)
        row = pid_t * BT
    else:
        # the split's float32 partial sums; bias and activation come after the reduction.
        # Each split's rows are padded to whole token tiles, so a tile never writes into
        # the next split's rows.
        out = acc
        row = (split * schedule.tiles_t + pid_t) * BT
    tma.store_wait(0)  # the previous store has left y_smem
    y_smem.store(gl.permute(out, [1, 0]))
    fence_async_shared()
    tma_store(y_desc, [row, column], y_smem)


@gluon.jit
def _math_warpgroup(meta_addr, N, K, ring: Ring, schedule: Schedule, asm: WgmmaAsm,
                    epilogue: Epilogue, y_smem, WARPGROUP: gl.constexpr):
    BT: gl.constexpr = schedule.BT
    STAGES: gl.constexpr = ring.STAGES
    SPLIT_K: gl.constexpr = schedule.SPLIT_K
    # bands of 64 features this warpgroup owns in a tile (BLOCK_F 128: one, 256: two)
    BANDS: gl.constexpr = schedule.BLOCK_F // 128
    MMA_ASM: gl.constexpr = asm.MMA
    MMA_CON: gl.constexpr = asm.MMA_CON
    META_ASM: gl.constexpr = asm.META
    META_CON: gl.constexpr = asm.META_CON
    P: gl.constexpr = BT // 2 * BANDS
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BT, 16])
    f = gl.arange(0, 64, layout=gl.SliceLayout(1, acc_layout))
    n = gl.arange(0, BT, layout=gl.SliceLayout(0, acc_layout))
    # The thread of element (f, n) is lane 4 * (f % 8) + (n % 8) // 2 of its warp, and every
    # element of one thread has the same lane and feature band: the metadata addresses below are
    # two distinct values per thread and band, elements 0 and 1 of its pack (tokens 2t and 2t + 1).
    lane = (4 * (f % 8))[:, None] + ((n % 8) // 2)[None, :]
    odd_chunk = (n % 2)[None, :]
    chunks = K // 64
    stage_zero = gl.zeros([64, BT], gl.int32, layout=acc_layout)
    meta_odd = odd_chunk  # the metadata loads' chunk parity, in the accumulator's shape
    if BANDS == 2:
        # Two bands run as one joined [64, BT, 2] tensor: register 2i of a thread is band 0's
        # register i, 2i + 1 band 1's (gl.join; wgmma_asm.mma_asm addresses them so), and the
        # asm issues both bands' wgmmas on each x descriptor.
        meta_odd = gl.join(odd_chunk + stage_zero, odd_chunk + stage_zero)
        stage_zero = gl.join(stage_zero, stage_zero)
    units, per_split = schedule.units()
    step = 0
    for unit in range(gl.program_id(0), units, gl.num_programs(0)):
        pid_f, pid_t, kb_first, kb_end, split = schedule.unit(unit, per_split)
        first_feature = pid_f * schedule.BLOCK_F + WARPGROUP * 64 * BANDS
        band = gl.minimum(first_feature // 16 + f // 16, N // 16 - 1).to(gl.int64)[:, None]
        row_words = (band * chunks) * 32 + lane
        acc = gl.zeros([64, BT], gl.float32, layout=acc_layout)
        if BANDS == 2:
            band_1 = gl.minimum(first_feature // 16 + 4 + f // 16, N // 16 - 1).to(gl.int64)
            row_words = gl.join(row_words, (band_1[:, None] * chunks) * 32 + lane)
            acc = gl.join(acc, acc)
        if asm.ASM_LOOP:
            gl.static_assert(BANDS == 1, "the asm k-loop issues one band per warpgroup")
            # the whole k-loop in one asm statement (waits, wgmmas, releases, metadata loads),
            # which keeps wgmma groups in flight: ptxas allows that only within one statement
            if SPLIT_K == 1:
                acc = gl.inline_asm_elementwise(
                    MMA_ASM, MMA_CON, [acc, meta_addr + row_words * 4, stage_zero + step,
                                       stage_zero + chunks],
                    dtype=gl.float32, is_pure=False, pack=P)
            else:
                # the split's chunks: its first is chunk 2 * kb_first, and the asm clamps to its
                # last (the weight's last where the split ends at K)
                split_chunks = gl.minimum(chunks - 2 * kb_first, 2 * (kb_end - kb_first))
                acc = gl.inline_asm_elementwise(
                    MMA_ASM, MMA_CON, [acc, meta_addr + (row_words + 64 * kb_first) * 4,
                                       stage_zero + step, stage_zero + split_chunks],
                    dtype=gl.float32, is_pure=False, pack=P)
            step += kb_end - kb_first
        elif asm.META_RING:
            gl.static_assert(BANDS == 1, "the metadata ring holds one band per warpgroup")
            # the metadata is in the stage (_loader_with_metadata): the asm reads this thread's
            # two words at these byte offsets of the stage's [16, 32] box (row 2 * band + chunk)
            meta_bytes = ((((4 * WARPGROUP + f // 16) * 2)[:, None] + odd_chunk) * 32 + lane) * 4
            for kb in range(kb_first, kb_end):
                s = step % STAGES
                mbarrier.wait(ring.full.index(s), (step // STAGES) & 1)
                acc = gl.inline_asm_elementwise(MMA_ASM, MMA_CON, [acc, meta_bytes, stage_zero + s],
                                                dtype=gl.float32, is_pure=False, pack=P)
                mbarrier.arrive(ring.empty.index(s))
                step += 1
        else:
            # The metadata of the next META_AHEAD k-blocks is in flight during this one's wgmmas
            # (reads past the split stay inside the weight: clamped to its last chunk). Few
            # tokens make a k-block's wgmmas short and the metadata's memory latency long
            # against them: the weight streams only if it is hidden.
            AHEAD: gl.constexpr = asm.META_AHEAD
            # a queue of registers: meta (this k-block), meta_1 .. meta_3 (the next ones)
            meta = _metadata(meta_addr, row_words, kb_first, meta_odd, chunks, META_ASM,
                             META_CON, P)
            if AHEAD >= 2:
                meta_1 = _metadata(meta_addr, row_words, kb_first + 1, meta_odd, chunks,
                                   META_ASM, META_CON, P)
            if AHEAD >= 3:
                meta_2 = _metadata(meta_addr, row_words, kb_first + 2, meta_odd, chunks,
                                   META_ASM, META_CON, P)
            if AHEAD >= 4:
                meta_3 = _metadata(meta_addr, row_words, kb_first + 3, meta_odd, chunks,
                                   META_ASM, META_CON, P)
            for kb in range(kb_first, kb_end):
                meta_next = _metadata(meta_addr, row_words, kb + AHEAD, meta_odd, chunks,
                                      META_ASM, META_CON, P)
                s = step % STAGES
                mbarrier.wait(ring.full.index(s), (step // STAGES) & 1)
                acc = gl.inline_asm_elementwise(MMA_ASM, MMA_CON, [acc, meta, stage_zero + s],
                                                dtype=gl.float32, is_pure=False, pack=P)
                mbarrier.arrive(ring.empty.index(s))
                if AHEAD == 1:
                    meta = meta_next
                elif AHEAD == 2:
                    meta = meta_1
                    meta_1 = meta_next
                elif AHEAD == 3:
                    meta = meta_1
                    meta_1 = meta_2
                    meta_2 = meta_next
                else:
                    meta = meta_1
                    meta_1 = meta_2
                    meta_2 = meta_3
                    meta_3 = meta_next
                step += 1

        if BANDS == 1:
            _store_band(acc, first_feature, pid_t, split, N, schedule, epilogue, y_smem, f)
        else:
            acc_0, acc_1 = gl.split(acc)  # the join's inverse: the same registers, renamed
            _store_band(gl.convert_layout(acc_0, acc_layout), first_feature, pid_t, split, N,
                        schedule, epilogue, y_smem, f)
            _store_band(gl.convert_layout(acc_1, acc_layout), first_feature + 64, pid_t, split,
                        N, schedule, epilogue, y_smem, f)
    tma.store_wait(0)


@gluon.jit
def _sparse_wgmma_kernel(
    a_desc, x_desc, y_desc, meta_addr, bias_ptr, N, K,
    MMA_ASM_0: gl.constexpr, MMA_ASM_1: gl.constexpr, MMA_CON: gl.constexpr,
    META_ASM: gl.constexpr, META_CON: gl.constexpr,
    BT: gl.constexpr, STAGES: gl.constexpr, GROUP: gl.constexpr,
    HAS_BIAS: gl.constexpr, ACTIVATION: gl.constexpr, ASM_LOOP: gl.constexpr,
    SPLIT_K: gl.constexpr, LOADER_REGS: gl.constexpr, MATH_REGS: gl.constexpr,
    META_AHEAD: gl.constexpr, META_RING: gl.constexpr, BLOCK_F: gl.constexpr,
):
    """a_desc: values [N, K/2] in [BLOCK_F, 64] boxes (BLOCK_F 128 or 256 features a tile);
    x_desc: x [M, K] in [BT, 64] boxes; y_desc: y
    [M, N] in [BT, 64] boxes (a gated ACTIVATION: [M, N / 2] in [BT, 32] boxes); meta_addr: the metadata's device address (int64). Launch with
    num_warps=4 (the first math warpgroup) and a grid of at most one program per SM."""
    M = x_desc.shape[0]
    tiles_f = gl.cdiv(N, BLOCK_F)
    tiles_t = gl.cdiv(M, BT)
    k_blocks = gl.cdiv(K, 128)
    # The rings' and (ASM_LOOP) the mbarriers' offsets are baked into the asm:
    # sparse24/ops/wgmma.py checks them.
    operand_ring_x = gl.allocate_shared_memory(x_desc.dtype, [2 * STAGES, BT, 64], x_desc.layout)
    operand_ring_a = gl.allocate_shared_memory(a_desc.dtype, [STAGES, BLOCK_F, 64], a_desc.layout)
    # [BT, 64] tiles, or [BT, 32] where a gated epilogue pairs the rows (the descriptor's box)
    y_smem_0 = gl.allocate_shared_memory(y_desc.dtype, y_desc.block_type.shape, y_desc.layout)
    y_smem_1 = gl.allocate_shared_memory(y_desc.dtype, y_desc.block_type.shape, y_desc.layout)
    ring_full = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    ring_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ring_full.index(i), count=1)
        mbarrier.init(ring_empty.index(i), count=2)  # one arrival per math warpgroup
    fence_async_shared()

    ring = Ring(operand_ring_a, operand_ring_x, ring_full, ring_empty, STAGES)
    schedule = Schedule(tiles_f, tiles_t, k_blocks, BT, GROUP, SPLIT_K, BLOCK_F)
    epilogue = Epilogue(bias_ptr, y_desc, HAS_BIAS, ACTIVATION)
    asm_0 = WgmmaAsm(MMA_ASM_0, MMA_CON, META_ASM, META_CON, ASM_LOOP, META_AHEAD, META_RING)
    asm_1 = WgmmaAsm(MMA_ASM_1, MMA_CON, META_ASM, META_CON, ASM_LOOP, META_AHEAD, META_RING)
    if META_RING:
        # [STAGES, 16, 32] int32: each stage's metadata box (_loader_with_metadata); the asm
        # reads it at the offset sparse24/ops/wgmma.py checks
        operand_ring_meta = gl.allocate_shared_memory(
            gl.int32, [STAGES, 16, 32], gl.SwizzledSharedLayout(1, 1, 1, order=[1, 0]))
        gl.warp_specialize([
            (_math_warpgroup, (meta_addr, N, K, ring, schedule, asm_0, epilogue, y_smem_0, 0)),
            (_math_warpgroup, (meta_addr, N, K, ring, schedule, asm_1, epilogue, y_smem_1, 1)),
            (_loader_with_metadata, (a_desc, x_desc, ring, schedule, operand_ring_meta,
                                     meta_addr, N, K)),
        ], [4, 1], [MATH_REGS, LOADER_REGS])
    else:
        gl.warp_specialize([
            (_math_warpgroup, (meta_addr, N, K, ring, schedule, asm_0, epilogue, y_smem_0, 0)),
            (_math_warpgroup, (meta_addr, N, K, ring, schedule, asm_1, epilogue, y_smem_1, 1)),
            (_loader, (a_desc, x_desc, ring, schedule)),
        ], [4, 1], [MATH_REGS, LOADER_REGS])
