"""PTX text of the sm90 family's inline asm (sparse24/kernels/sparse_wgmma.py), generated from its shape.

Gluon (Triton 3.6) cannot hand a shared-memory descriptor to inline asm, so the asm builds the
wgmma descriptors itself from ``global_smem`` (the dynamic shared memory symbol Triton declares in
every kernel) plus the byte offsets at which Triton placed the operand rings. Those offsets are
immediates here; ``sparse24.ops.wgmma`` reads the real ones off the compiled kernel and refuses to
run a kernel whose rings are elsewhere.

Operand layout in shared memory (one stage s of the ring, filled by TMA, 128-byte swizzle):
  A ring:  [STAGES, BLOCK_F features, 64 compressed values]   (BLOCK_F 128: 16 KB a stage,
           warpgroup w owns rows 64w..64w+63, 8 KB into the stage; BLOCK_F 256: 32 KB a stage,
           warpgroup w owns rows 128w..128w+127 as two bands of 64, 16 KB into the stage)
  x ring:  [2 * STAGES, BT tokens, 64 inputs]              (k-half 0 of stage s at index 2s,
           k-half 1 at 2s + 1; BT * 128 bytes each)
Two forms of the mainloop (the config's ASM_LOOP field picks one):
- ``mma_asm`` (ASM_LOOP 0): one asm statement is one k-block of 128 inputs: four m64nBTk32 sparse
  wgmmas (k32 each), A moving 32 bytes and x 64 bytes per step, then commit and
  ``wait_group 0``, so that the accumulator registers are never touched by other code while a
  wgmma reads them. The Gluon loop around it waits for the stage, loads the metadata and frees
  the stage. Each k-block drains the tensor cores before the next is issued (ncu: 13-18 of 22-28
  cycles per issued instruction waiting at a barrier, bench/NOTES.md); keeping a group in flight
  across asm statements makes ptxas serialize every HGMMA instead (C7513, NOTES item 11).
- ``loop_asm`` (ASM_LOOP D = 1, 2, 4, 8): one asm statement is a tile's whole k-loop, waits,
  releases and metadata loads included, and keeps one group in flight within batches of D
  k-blocks (see its docstring for why it drains between batches).

Descriptor bits (PTX ISA, matrix descriptor): start address >> 4 in bits 0-13, leading byte
offset >> 4 in 16-29 (ignored for swizzled K-major tiles; 1), stride byte offset >> 4 in 32-45
(1024 B: 8 rows of 128 B), swizzle mode in 62-63 (1 = 128 B).

Metadata: the k-block's two words (64-column chunks 2kb and 2kb + 1, sparsity selectors 0 and 1
within each) arrive as elements 0 and 1 of the metadata operand's pack (see the kernel).
"""

from __future__ import annotations

A_BAND_BYTES = 64 * 64 * 2  # one band of 64 features (one m64 wgmma's A) in a stage
A_STAGE_BYTES = 2 * A_BAND_BYTES  # [128 features, 64 values] of 2 bytes (BLOCK_F 128)
A_WARPGROUP_BYTES = A_BAND_BYTES  # rows 64w.. of the A stage (BLOCK_F 128: one band each)
# Features per tile: two warpgroups of one band each (128) or of two bands each (256). A band is
# one m64 wgmma; a warpgroup with two issues both bands' wgmmas on the same x descriptor, so each
# x byte brought from L2 feeds twice the math (the kernel's L2 traffic per flop: 1/(2 BT) +
# 1/BLOCK_F bytes, the x term the larger; bench/NOTES.md session 12).
BLOCK_FS = (128, 256)


def bands_of(block_f: int) -> int:
    """Bands of 64 features a warpgroup owns in a tile of ``block_f`` features."""
    if block_f not in BLOCK_FS:
        raise ValueError(f"wgmma.sp: BLOCK_F={block_f} features per tile is not one of {BLOCK_FS}")
    return block_f // 128


def a_stage_bytes(block_f: int = 128) -> int:
    """Bytes of one A stage: [block_f features, 64 values] of 2 bytes."""
    return block_f // 64 * A_BAND_BYTES


DESCRIPTOR_HIGH_BITS = 0x40000040_00010000  # 128B swizzle | SBO 1024 B | LBO 16 B

DTYPES = {"float16": "f16", "bfloat16": "bf16"}

# Token tiles (the N of m64nNk32; PTX allows multiples of 8 up to 256). 8-32 serve few tokens
# (decode), where a tile is a stream of weight bytes through the TMA ring; the asm k-loop
# (ASM_LOOP, opt-in) was only built and checked for the large ones.
TOKEN_TILES = (8, 16, 32, 64, 128, 256)
LOOP_TOKEN_TILES = (64, 128, 256)


def accumulator_registers(bt: int, bands: int = 1) -> int:
    """float32 accumulator registers per thread of one warpgroup's ``bands`` [64, bt] tiles."""
    return bt // 2 * bands


def x_stage_bytes(bt: int) -> int:
    """Bytes of one k-half of x in the ring: [bt tokens, 64 inputs] of 2 bytes."""
    return bt * 128


def _descriptor(dst: str, addr: str) -> list[str]:
    return [f"and.b32 {addr}, {addr}, 0x3FFFF;", f"shr.u32 {addr}, {addr}, 4;",
            f"cvt.u64.u32 {dst}, {addr};", f"or.b64 {dst}, {dst}, hi;"]


# One stage of the metadata ring (META_RING): [8 bands, 2 chunks, 32 words] of int32, the
# k-block's metadata of a 128-feature tile, as rows 2 * band + chunk.
META_STAGE_BYTES = 16 * 32 * 4


def mma_asm(bt: int, dtype: str, warpgroup: int, a_offset: int, x_offset: int,
            meta_offset: int | None = None, bands: int = 1) -> str:
    """One k-block for warpgroup ``warpgroup``'s ``bands`` x 64 features x ``bt`` tokens.

    Operands (P = accumulator_registers(bt, bands)): $0..$P-1 the accumulator (tied to inputs
    $P..$2P-1), $2P.. the metadata words, $3P the ring stage. One band: $2P / $2P+1 are the words
    of chunks 2kb / 2kb+1. Two bands: the kernel joins the bands' tiles (gl.join: register 2i is
    band 0's register i, 2i + 1 band 1's), so band b's accumulator is $b, $b+2, ... and its words
    are $2P+b (chunk 2kb) and $2P+2+b (chunk 2kb+1). a_offset / x_offset: byte offsets of the A
    and x rings from global_smem. With ``meta_offset`` (META_RING, one band only: the metadata
    ring's byte offset), $2P / $2P+1 are instead the byte offsets of those words within the
    stage's metadata box, and the asm loads them from shared memory itself.
    """
    if dtype not in DTYPES:
        raise ValueError(f"wgmma.sp: unsupported dtype {dtype!r}; use one of {list(DTYPES)}")
    if bt not in TOKEN_TILES:
        raise ValueError(f"wgmma.sp: BT={bt} tokens per tile is not one of {TOKEN_TILES}")
    if bands not in (1, 2):
        raise ValueError(f"wgmma.sp: {bands} bands of 64 features per warpgroup; use 1 or 2")
    if bands == 2 and meta_offset is not None:
        raise ValueError("wgmma.sp: the metadata ring (META_RING) holds one band per warpgroup")
    ptx_type = DTYPES[dtype]
    p = accumulator_registers(bt, bands)
    accs = [",".join(f"${i}" for i in range(band, p, bands)) for band in range(bands)]
    # words[band][chunk]: the operand of the band's metadata word of chunk 2kb + chunk
    words = [[f"${2 * p + bands * chunk + band}" for chunk in (0, 1)] for band in range(bands)]
    stage = f"${3 * p}"
    da = ["da"] if bands == 1 else ["da0", "da1"]  # one band: the names it always had
    lines = [
        "{",
        ".reg .u32 base, sa, sb0, sb1;",
        f".reg .b64 {', '.join(da)}, db, hi;",
        ".reg .pred pd;",
        "setp.eq.u32 pd, 1, 1;",  # scale-d true: D = A * B + D
        "mov.u32 base, global_smem;",
        f"mad.lo.u32 sa, {stage}, {a_stage_bytes(128 * bands)}, base;",
        f"add.u32 sa, sa, {a_offset + warpgroup * bands * A_BAND_BYTES};",
        f"mad.lo.u32 sb0, {stage}, {2 * x_stage_bytes(bt)}, base;",
        f"add.u32 sb0, sb0, {x_offset};",
        f"add.u32 sb1, sb0, {x_stage_bytes(bt)};",
        f"mov.b64 hi, {DESCRIPTOR_HIGH_BITS:#x};",
    ]
    if meta_offset is not None:  # the words from the stage's metadata box
        meta0, meta1 = words[0]
        lines += [
            ".reg .u32 sm, mw0, mw1;",
            f"mad.lo.u32 sm, {stage}, {META_STAGE_BYTES}, base;",
            f"add.u32 sm, sm, {meta_offset};",
            f"add.u32 mw0, sm, {meta0};",
            f"add.u32 mw1, sm, {meta1};",
            "ld.shared.b32 mw0, [mw0];",
            "ld.shared.b32 mw1, [mw1];",
        ]
        words = [["mw0", "mw1"]]
    lines += _descriptor(da[0], "sa")
    if bands == 2:  # band 1's rows follow band 0's: 8 KB on, 512 in the descriptor's units
        lines.append(f"add.s64 da1, da0, {A_BAND_BYTES >> 4};")
    lines += _descriptor("db", "sb0")
    lines.append("wgmma.fence.sync.aligned;")
    for step in range(4):  # k32 steps of the k-block of 128
        if step == 2:
            lines += _descriptor("db", "sb1")
        for band in range(bands):
            lines.append(f"wgmma.mma_async.sp.sync.aligned.m64n{bt}k32.f32.{ptx_type}.{ptx_type} "
                         f"{{{accs[band]}}}, {da[band]}, db, {words[band][step // 2]}, "
                         f"{step % 2}, pd, 1, 1, 0, 0;")
            lines.append(f"add.s64 {da[band]}, {da[band]}, 2;")  # 32 bytes of compressed A along K
        if step % 2 == 0:
            lines.append("add.s64 db, db, 4;")  # 64 bytes of x along K
    lines += ["wgmma.commit_group.sync.aligned;", "wgmma.wait_group.sync.aligned 0;", "}"]
    return "\n".join(lines)


def mma_constraints(bt: int, bands: int = 1) -> str:
    p = accumulator_registers(bt, bands)
    return ",".join(["=f"] * p + [str(i) for i in range(p)] + ["r"] * p + ["r"] * p)


def meta_asm(bt: int, bands: int = 1) -> str:
    """Element e < 2 * bands of each pack gets the word at element e's own address (the kernel
    gives them the words ``mma_asm`` reads: chunks 2kb and 2kb + 1, per band); the other
    elements stay unused."""
    p = accumulator_registers(bt, bands)
    return "\n".join(f"ld.global.nc.u32 ${e}, [${p + e}];" for e in range(2 * bands))


def meta_constraints(bt: int, bands: int = 1) -> str:
    p = accumulator_registers(bt, bands)
    return ",".join(["=r"] * p + ["l"] * p)


# ------------------------------------------------------------------ the whole k-loop in one asm
def loop_asm(bt: int, dtype: str, warpgroup: int, stages: int, drain: int, a_offset: int,
             x_offset: int, full_offset: int, empty_offset: int, ahead: int = 1) -> str:
    """A tile's whole k-loop for warpgroup ``warpgroup``, in batches of ``drain`` k-blocks.

    Within a batch one wgmma group stays in flight: k-block j waits on its stage's ``full``
    mbarrier, issues its four wgmmas, commits, then ``wait_group 1`` retires k-block j - 1,
    whose stage is released (``empty`` arrive, one thread per warpgroup). Between batches the
    loop drains (``wait_group 0``), frees the last stage and moves the batch's metadata words into
    the registers the wgmmas read; they were loaded into a queue of scratch registers ``ahead``
    batches earlier (1: while the previous batch ran; under the TMA traffic of 256-token tiles
    that came too late: the moves waited on those loads in 12% of the stall samples at
    ``drain`` 2 and 30% at 1, bench/NOTES.md session 13). So no register a wgmma reads is
    written while any group is in flight: ptxas 12.8 and 12.9 (Triton 3.6) serialize every
    wgmma otherwise (C7513), and the sm90 sparse mainloop of CUTLASS likewise waits for all its
    groups each k-tile. ``drain`` 1 is the drained loop
    (one batch per k-block) without the Gluon code between k-blocks: the A/B baseline.

    Operands: $0..$P-1 the accumulator (tied to $P..$2P-1, zeros in); $2P the byte address of
    this thread's metadata word of chunk 0 (chunk c is 128 * c bytes further); $3P the ring step
    at which the tile starts (its stage is step % stages, its phase (step // stages) & 1); $4P the
    number of 64-column chunks, K / 64. The ring offsets and the mbarrier arrays ``full`` and
    ``empty`` ([stages] of 8 bytes each) are byte offsets from global_smem.
    """
    if dtype not in DTYPES:
        raise ValueError(f"wgmma.sp: unsupported dtype {dtype!r}; use one of {list(DTYPES)}")
    if bt not in LOOP_TOKEN_TILES:
        raise ValueError(f"wgmma.sp: BT={bt} tokens per tile is not one the asm k-loop takes "
                         f"{LOOP_TOKEN_TILES}")
    if not 2 <= stages <= 8:
        # a warpgroup holds two stages while a group is in flight: one stage would never refill
        raise ValueError(f"wgmma.sp: the asm k-loop needs 2 to 8 ring stages, got {stages}")
    if drain not in (1, 2, 4, 8):
        raise ValueError(f"wgmma.sp: drain every {drain} k-blocks: use 1, 2, 4 or 8")
    if not 1 <= ahead <= 4:
        raise ValueError(f"wgmma.sp: metadata {ahead} batches ahead: use 1 to 4")
    p = accumulator_registers(bt)
    words = 2 * drain  # metadata words of one batch: chunks 2kb and 2kb + 1 of each k-block
    meta = [f"m{i}" for i in range(words)]
    # batches ahead (the first keeps the names it had when it was the only one)
    queue = [[f"q{i}" if b == 0 else f"q{b}_{i}" for i in range(words)] for b in range(ahead)]
    scratch = [reg for batch in queue for reg in batch]
    tag = f"W{warpgroup}"  # labels are scoped by the braces; the tag keeps PTX dumps readable
    release = [  # free stage ps: one arrival per warpgroup
        "mad.lo.u32 bar, ps, 8, base;",
        f"add.u32 bar, bar, {empty_offset};",
        "@leader mbarrier.arrive.shared::cta.b64 st, [bar];",
    ]
    lines = [
        "{",
        ".reg .u32 base, s, ph, ps, kb, nkb, bar, sa, sb0, sb1, t;",
        f".reg .u32 {', '.join(meta + scratch)};",
        ".reg .b64 hi, da, db, mq, mw, mlast, st;",
        ".reg .pred pd, pw, leader, wrap, more;",
        "setp.eq.u32 pd, 1, 1;",  # scale-d true: D = A * B + D
        "mov.u32 base, global_smem;",
        f"mov.b64 hi, {DESCRIPTOR_HIGH_BITS:#x};",
        "mov.u32 t, %tid.x;",
        "and.b32 t, t, 127;",
        "setp.eq.u32 leader, t, 0;",
        f"rem.u32 s, ${3 * p}, {stages};",
        f"div.u32 ph, ${3 * p}, {stages};",
        "and.b32 ph, ph, 1;",
        f"add.u32 nkb, ${4 * p}, 1;",
        "shr.u32 nkb, nkb, 1;",  # k-blocks of 128 inputs: ceil(chunks / 2)
        # chunks past K (the odd one of an odd count, those of a batch past the last k-block)
        # read the last chunk instead: valid nibbles, over values and x that TMA fills with zeros
        f"sub.u32 t, ${4 * p}, 1;",
        "mul.wide.u32 mlast, t, 128;",
        f"add.s64 mlast, mlast, ${2 * p};",
        f"mov.b64 mq, ${2 * p};",
    ]
    lines += _batch_loads(meta, "mq")  # the first batch: nothing is in flight yet
    for batch in queue:  # the next ``ahead``, in flight during the first
        lines += [f"add.s64 mq, mq, {128 * words};"]
        lines += _batch_loads(batch, "mq")
    lines += ["mov.u32 kb, 0;", f"LOOP_{tag}:"]
    for j in range(drain):
        lines += _loop_k_block(bt, DTYPES[dtype], warpgroup, stages, a_offset, x_offset,
                               full_offset, meta[2 * j:2 * j + 2], f"{tag}_{j}")
        if j:  # wait_group 1 retired k-block j - 1: free its stage
            lines += ["wgmma.wait_group.sync.aligned 1;", *release]
        lines += [
            "mov.u32 ps, s;",
            "add.u32 s, s, 1;",
            f"setp.eq.u32 wrap, s, {stages};",
            "@wrap mov.u32 s, 0;",
            "@wrap xor.b32 ph, ph, 1;",
            "add.u32 kb, kb, 1;",
            "setp.lt.u32 more, kb, nkb;",
        ]
        if j < drain - 1:
            lines.append(f"@!more bra DONE_{tag};")
    lines += ["wgmma.wait_group.sync.aligned 0;", *release, f"@!more bra EXIT_{tag};"]
    # nothing in flight here: the queue moves up one batch, the next batch's loads join it
    for into, out_of in zip([meta] + queue[:-1], queue):
        lines += [f"mov.u32 {m}, {q};" for m, q in zip(into, out_of)]
    lines += [f"add.s64 mq, mq, {128 * words};"]
    lines += _batch_loads(queue[-1], "mq")
    lines += [f"bra LOOP_{tag};", f"DONE_{tag}:", "wgmma.wait_group.sync.aligned 0;", *release,
              f"EXIT_{tag}:", "}"]
    return "\n".join(lines)


def _batch_loads(registers: list[str], address: str) -> list[str]:
    """Load the metadata words of chunks c, c + 1, ... (c at ``address``) into ``registers``,
    each clamped to the last chunk."""
    lines = []
    for i, reg in enumerate(registers):
        lines += [f"add.s64 mw, {address}, {128 * i};", "min.u64 mw, mw, mlast;",
                  f"ld.global.nc.u32 {reg}, [mw];"]
    return lines


def _loop_k_block(bt, ptx_type, warpgroup, stages, a_offset, x_offset, full_offset, meta,
                  tag) -> list[str]:
    """One k-block of ``loop_asm``: wait until stage s is full, issue its four wgmmas on the
    metadata words ``meta`` (chunks 2kb and 2kb + 1), commit."""
    lines = [
        "mad.lo.u32 bar, s, 8, base;",
        f"add.u32 bar, bar, {full_offset};",
        f"WAIT_{tag}:",
        "mbarrier.try_wait.parity.shared::cta.b64 pw, [bar], ph;",
        f"@!pw bra WAIT_{tag};",
        f"mad.lo.u32 sa, s, {A_STAGE_BYTES}, base;",
        f"add.u32 sa, sa, {a_offset + warpgroup * A_WARPGROUP_BYTES};",
        f"mad.lo.u32 sb0, s, {2 * x_stage_bytes(bt)}, base;",
        f"add.u32 sb0, sb0, {x_offset};",
        f"add.u32 sb1, sb0, {x_stage_bytes(bt)};",
    ]
    lines += _descriptor("da", "sa") + _descriptor("db", "sb0")
    lines.append("wgmma.fence.sync.aligned;")
    acc = ",".join(f"${i}" for i in range(accumulator_registers(bt)))
    for step in range(4):
        if step == 2:
            lines += _descriptor("db", "sb1")
        lines.append(f"wgmma.mma_async.sp.sync.aligned.m64n{bt}k32.f32.{ptx_type}.{ptx_type} "
                     f"{{{acc}}}, da, db, {meta[step // 2]}, {step % 2}, pd, 1, 1, 0, 0;")
        lines.append("add.s64 da, da, 2;")
        if step % 2 == 0:
            lines.append("add.s64 db, db, 4;")
    lines.append("wgmma.commit_group.sync.aligned;")
    return lines


def loop_constraints(bt: int) -> str:
    """The accumulator (out, tied in), the metadata address (64-bit), the step, the chunk count."""
    p = accumulator_registers(bt)
    return ",".join(["=f"] * p + [str(i) for i in range(p)] + ["l"] * p + ["r"] * p + ["r"] * p)
