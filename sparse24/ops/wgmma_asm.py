"""PTX text of the sm90 family's inline asm (sparse24/kernels/sparse_wgmma.py), generated from its shape.

Gluon (Triton 3.6) cannot hand a shared-memory descriptor to inline asm, so the asm builds the
wgmma descriptors itself from ``global_smem`` (the dynamic shared memory symbol Triton declares in
every kernel) plus the byte offsets at which Triton placed the operand rings. Those offsets are
immediates here; ``sparse24.ops.wgmma`` reads the real ones off the compiled kernel and refuses to
run a kernel whose rings are elsewhere.

Operand layout in shared memory (one stage s of the ring, filled by TMA, 128-byte swizzle):
  A ring:  [STAGES, 128 features, 64 compressed values]   (16 KB a stage; warpgroup w owns rows
           64w..64w+63, 8 KB into the stage)
  x ring:  [2 * STAGES, BT tokens, 64 inputs]              (k-half 0 of stage s at index 2s,
           k-half 1 at 2s + 1; BT * 128 bytes each)
One asm statement is one k-block of 128 inputs: four m64nBTk32 sparse wgmmas (k32 each), A moving
32 bytes and x 64 bytes per step, then commit and wait, so that the accumulator registers are
never touched by other code while a wgmma reads them (ptxas C7513 otherwise).

Descriptor bits (PTX ISA, matrix descriptor): start address >> 4 in bits 0-13, leading byte
offset >> 4 in 16-29 (ignored for swizzled K-major tiles; 1), stride byte offset >> 4 in 32-45
(1024 B: 8 rows of 128 B), swizzle mode in 62-63 (1 = 128 B).

Metadata: the k-block's two words (64-column chunks 2kb and 2kb + 1, sparsity selectors 0 and 1
within each) arrive as elements 0 and 1 of the metadata operand's pack (see the kernel).
"""

from __future__ import annotations

A_STAGE_BYTES = 128 * 64 * 2  # [128 features, 64 values] of 2 bytes
A_WARPGROUP_BYTES = 64 * 64 * 2  # rows 64w.. of the A stage
DESCRIPTOR_HIGH_BITS = 0x40000040_00010000  # 128B swizzle | SBO 1024 B | LBO 16 B

DTYPES = {"float16": "f16", "bfloat16": "bf16"}


def accumulator_registers(bt: int) -> int:
    """float32 accumulator registers per thread of one warpgroup's [64, bt] tile."""
    return bt // 2


def x_stage_bytes(bt: int) -> int:
    """Bytes of one k-half of x in the ring: [bt tokens, 64 inputs] of 2 bytes."""
    return bt * 128


def _descriptor(dst: str, addr: str) -> list[str]:
    return [f"and.b32 {addr}, {addr}, 0x3FFFF;", f"shr.u32 {addr}, {addr}, 4;",
            f"cvt.u64.u32 {dst}, {addr};", f"or.b64 {dst}, {dst}, hi;"]


def mma_asm(bt: int, dtype: str, warpgroup: int, a_offset: int, x_offset: int) -> str:
    """One k-block for warpgroup ``warpgroup``'s 64 features x ``bt`` tokens.

    Operands: $0..$P-1 the accumulator (tied to inputs $P..$2P-1), $2P / $2P+1 the metadata words
    of chunks 2kb / 2kb+1, $3P the ring stage. a_offset / x_offset: byte offsets of the A and x
    rings from global_smem.
    """
    if dtype not in DTYPES:
        raise ValueError(f"wgmma.sp: unsupported dtype {dtype!r}; use one of {list(DTYPES)}")
    if bt not in (64, 128, 256):
        raise ValueError(f"wgmma.sp: BT={bt} tokens per tile is not 64, 128 or 256")
    ptx_type = DTYPES[dtype]
    p = accumulator_registers(bt)
    acc = ",".join(f"${i}" for i in range(p))
    meta0, meta1, stage = f"${2 * p}", f"${2 * p + 1}", f"${3 * p}"
    lines = [
        "{",
        ".reg .u32 base, sa, sb0, sb1;",
        ".reg .b64 da, db, hi;",
        ".reg .pred pd;",
        "setp.eq.u32 pd, 1, 1;",  # scale-d true: D = A * B + D
        "mov.u32 base, global_smem;",
        f"mad.lo.u32 sa, {stage}, {A_STAGE_BYTES}, base;",
        f"add.u32 sa, sa, {a_offset + warpgroup * A_WARPGROUP_BYTES};",
        f"mad.lo.u32 sb0, {stage}, {2 * x_stage_bytes(bt)}, base;",
        f"add.u32 sb0, sb0, {x_offset};",
        f"add.u32 sb1, sb0, {x_stage_bytes(bt)};",
        f"mov.b64 hi, {DESCRIPTOR_HIGH_BITS:#x};",
    ]
    lines += _descriptor("da", "sa") + _descriptor("db", "sb0")
    lines.append("wgmma.fence.sync.aligned;")
    for step in range(4):  # k32 steps of the k-block of 128
        if step == 2:
            lines += _descriptor("db", "sb1")
        meta = meta0 if step < 2 else meta1
        lines.append(f"wgmma.mma_async.sp.sync.aligned.m64n{bt}k32.f32.{ptx_type}.{ptx_type} "
                     f"{{{acc}}}, da, db, {meta}, {step % 2}, pd, 1, 1, 0, 0;")
        lines.append("add.s64 da, da, 2;")  # 32 bytes of compressed A along K
        if step % 2 == 0:
            lines.append("add.s64 db, db, 4;")  # 64 bytes of x along K
    lines += ["wgmma.commit_group.sync.aligned;", "wgmma.wait_group.sync.aligned 0;", "}"]
    return "\n".join(lines)


def mma_constraints(bt: int) -> str:
    p = accumulator_registers(bt)
    return ",".join(["=f"] * p + [str(i) for i in range(p)] + ["r"] * p + ["r"] * p)


def meta_asm(bt: int) -> str:
    """Element 0 of each pack gets the word at its own address, element 1 the word at element 1's
    address (the kernel gives them chunks 2kb and 2kb + 1); the other elements stay unused."""
    p = accumulator_registers(bt)
    return f"ld.global.nc.u32 $0, [${p}];\nld.global.nc.u32 $1, [${p + 1}];"


def meta_constraints(bt: int) -> str:
    p = accumulator_registers(bt)
    return ",".join(["=r"] * p + ["l"] * p)
