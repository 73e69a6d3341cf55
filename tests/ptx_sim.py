"""A one-thread model of the sm90 family's in-flight loop asm (sparse24/ops/wgmma_asm.py,
``loop_asm``), for CPU tests: the Triton interpreter cannot run inline asm, and the loop's stage,
phase, metadata and release bookkeeping is plain integer code that can be checked without a GPU.

It executes the scalar instructions the loop uses, follows its branches, and records what a GPU
would do with the rest: mbarrier waits and arrivals (by byte offset), each wgmma (its
descriptors, metadata value and selector), commits and ``wait_group``. Memory loads return their
address, so a wgmma's metadata operand tells which word was read. It also models wgmma groups:
a register read by a wgmma of a group not yet retired by a ``wait_group`` must not be written,
and a stage must not be released (``empty`` arrive) while a group that reads it is in flight;
either raises ``PipelineViolation``.
"""

from __future__ import annotations

import re


class PipelineViolation(AssertionError):
    pass


_MASK = {"u32": 0xFFFFFFFF, "b32": 0xFFFFFFFF, "s32": 0xFFFFFFFF, "u64": (1 << 64) - 1,
         "s64": (1 << 64) - 1, "b64": (1 << 64) - 1}


_ALU = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "and": lambda a, b: a & b,
        "or": lambda a, b: a | b, "xor": lambda a, b: a ^ b, "shr": lambda a, b: a >> b,
        "rem": lambda a, b: a % b, "div": lambda a, b: a // b, "min": min}


def _instructions(text: str) -> list[str]:
    out = []
    for line in text.split("\n"):
        line = line.strip()
        if not line or line in "{}" or line.startswith(".reg"):
            continue
        out.append(line.rstrip(";"))
    return out


def _split_operands(rest: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in rest:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def run(text: str, operands: dict[int, int], *, tid: int = 0, smem_base: int = 0,
        full_offset: int, empty_offset: int, stages: int, a_offset: int, a_stage_bytes: int,
        max_steps: int = 100_000) -> list[tuple]:
    """Run the asm for one thread; ``operands`` maps $N to its value. Returns the events."""
    program = _instructions(text)
    labels = {line[:-1]: i for i, line in enumerate(program) if line.endswith(":")}
    regs: dict[str, int] = {}
    events: list[tuple] = []
    open_groups: list[dict] = []  # committed groups, oldest first: {"regs": set, "stages": set}
    pending = {"regs": set(), "stages": set()}  # wgmmas issued since the last commit

    def value(op: str) -> int:
        if op.startswith("$"):
            return operands[int(op[1:])]
        if op == "global_smem":
            return smem_base
        if op == "%tid.x":
            return tid
        if re.fullmatch(r"-?(0x[0-9a-fA-F]+|\d+)", op):
            return int(op, 0)
        return regs[op]

    def write(reg: str, val: int) -> None:
        for group in open_groups + [pending]:
            if reg in group["regs"]:
                raise PipelineViolation(f"{reg} written while a wgmma that reads it is in flight")
        regs[reg] = val

    def stage_of(offset: int, base: int) -> int:
        index, rem = divmod(offset - smem_base - base, 8)
        assert rem == 0 and 0 <= index < stages, (offset, base)
        return index

    pc, steps = 0, 0
    while pc < len(program):
        steps += 1
        if steps > max_steps:
            raise AssertionError("the asm did not finish (an endless loop?)")
        line = program[pc]
        pc += 1
        if line.endswith(":"):
            continue
        guard = None
        if line.startswith("@"):
            guard, line = line.split(None, 1)
            negate = guard.startswith("@!")
            if bool(regs[guard.lstrip("@!")]) == negate:
                continue
        opcode, _, rest = line.partition(" ")
        ops = _split_operands(rest)
        kind = opcode.split(".")
        ty = kind[-1]
        if opcode == "bra":
            pc = labels[ops[0]]
        elif kind[0] == "setp":
            a, b = value(ops[1]), value(ops[2])
            write(ops[0], {"eq": a == b, "ne": a != b, "lt": a < b}[kind[1]])
        elif opcode == "and.pred":
            write(ops[0], regs[ops[1]] and regs[ops[2]])
        elif kind[0] == "mov":
            write(ops[0], value(ops[1]))
        elif kind[0] in ("add", "sub", "and", "or", "xor", "shr", "rem", "div", "min"):
            write(ops[0], _ALU[kind[0]](value(ops[1]), value(ops[2])) & _MASK[ty])
        elif opcode == "mul.wide.u32":
            write(ops[0], value(ops[1]) * value(ops[2]))
        elif opcode == "mad.lo.u32":
            write(ops[0], (value(ops[1]) * value(ops[2]) + value(ops[3])) & _MASK["u32"])
        elif opcode == "cvt.u64.u32":
            write(ops[0], value(ops[1]))
        elif kind[0] == "ld":
            write(ops[0], value(ops[1].strip("[]")))
        elif opcode.startswith("mbarrier.try_wait"):
            events.append(("wait_full", stage_of(value(ops[1].strip("[]")), full_offset),
                           value(ops[2])))
            write(ops[0], 1)
        elif opcode.startswith("mbarrier.arrive"):
            stage = stage_of(value(ops[1].strip("[]")), empty_offset)
            for group in open_groups + [pending]:
                if stage in group["stages"]:
                    raise PipelineViolation(f"stage {stage} released while a wgmma reads it")
            events.append(("arrive_empty", stage))
        elif opcode == "wgmma.fence.sync.aligned":
            events.append(("fence",))
        elif opcode.startswith("wgmma.mma_async"):
            accumulators = ops[0].strip("{}").split(",")
            desc_a, desc_b, meta, selector = value(ops[1]), value(ops[2]), value(ops[3]), ops[4]
            # the A descriptor's start address (bits 0-13, in 16-byte units) names the stage
            a_addr = (desc_a & 0x3FFF) << 4
            stage = (a_addr - smem_base - a_offset) // a_stage_bytes
            # the descriptors are read when the wgmma issues; the metadata register and the
            # accumulators while it runs
            pending["regs"].update([ops[3]] + accumulators)
            pending["stages"].add(stage)
            events.append(("mma", stage, meta, int(selector), desc_a, desc_b))
        elif opcode == "wgmma.commit_group.sync.aligned":
            open_groups.append(pending)
            pending = {"regs": set(), "stages": set()}
            events.append(("commit",))
        elif opcode == "wgmma.wait_group.sync.aligned":
            keep = int(ops[0])
            del open_groups[:max(0, len(open_groups) - keep)]
            events.append(("wait_group", keep))
        else:
            raise AssertionError(f"ptx_sim: no model of {opcode!r}")
    if open_groups:
        raise PipelineViolation("the asm ended with wgmma groups in flight")
    return events
