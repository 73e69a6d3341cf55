"""Shapes and granularity of sparse24's packed 2:4 format (layout version 2).

The bit-level contract (which value goes where, metadata bit order) is written once, at the top of
``sparse24/kernels/pack.py``. This module only holds the numbers, dtypes and shape rules that host code
needs (it imports torch only, so ``sparse24.weight`` can use it without building any kernel).
"""

import torch

LAYOUT_VERSION = 2

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
"""dtypes a weight (and so its packed values) may have; the GEMM kernels take the 16-bit two."""

INT_VIEW = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32}
"""The integer dtype of each float dtype's width: compress tells -0.0 from +0.0 by its bits."""

# One mma.sp.m16n8k32 instruction consumes a 16 x 32 tile of the dense weight ("an atom"):
# 16 output features by 32 input features, of which 16 values are kept.
ATOM_N = 16
ATOM_K = 32
# One metadata word per lane covers two atoms along K (selector 0 for the even atom, 1 for the odd),
# so K must be a multiple of 64.
N_MULTIPLE = 16
K_MULTIPLE = 64
LANES = 32


def values_shape(n: int, k: int) -> tuple[int, int]:
    """Shape of the packed values of a dense [n, k] weight (same dtype as the weight)."""
    return (n, k // 2)


def meta_shape(n: int, k: int) -> tuple[int, int, int]:
    """Shape of the int32 metadata of a dense [n, k] weight."""
    return (n // ATOM_N, k // K_MULTIPLE, LANES)


def granularity_error(n: int, k: int) -> str | None:
    """None when [n, k] can be packed, else the rule that it breaks, for error messages."""
    if n <= 0 or k <= 0:  # nothing to pack (nn.Linear takes 0 features; a 2:4 GEMM has no groups)
        return f"[{n}, {k}] has no 2:4 groups: out_features and in_features must be positive"
    problems = []
    if n % N_MULTIPLE:
        problems.append(f"N={n} (out_features) must be a multiple of {N_MULTIPLE}")
    if k % K_MULTIPLE:
        problems.append(f"K={k} (in_features) must be a multiple of {K_MULTIPLE}")
    if not problems:
        return None
    return (
        "; ".join(problems)
        + f" (one mma.sp instruction covers {ATOM_N} features x {ATOM_K} inputs and one metadata "
        f"word covers {K_MULTIPLE} inputs)"
    )


def meta_error(meta: torch.Tensor, n: int, k: int) -> str | None:
    """None when ``meta`` is the metadata of a packed [n, k] weight, else what it is instead."""
    expected = meta_shape(n, k)
    if meta.dtype == torch.int32 and tuple(meta.shape) == expected:
        return None
    return (
        f"meta is {meta.dtype} of shape {list(meta.shape)}; a packed [{n}, {k}] weight has int32 "
        f"meta of shape {list(expected)} (its words are bit patterns: they cannot be cast to "
        "another dtype)"
    )


def placement_error(values: torch.Tensor, meta: torch.Tensor) -> str | None:
    """None when values and meta sit contiguous on one device, as a packed weight must."""
    if values.device != meta.device:
        return f"values are on {values.device} but meta is on {meta.device}; they must be on the same device"
    if not (values.is_contiguous() and meta.is_contiguous()):
        return (
            "values and meta must be contiguous (they are in sparse24's packed layout; a slice, "
            "transpose or other strided view of them is not another packed weight)"
        )
    return None


# Gated epilogues (sparse24/activations.py, GATED): the gate's and the up projection's rows
# alternate in blocks of GATE_BLOCK, so that each output's two sums sit in one thread's registers
# (rows r and r + 8 of a 16-row block, in both mma.sp's and wgmma's accumulators).
GATE_BLOCK = 8


def gated_error(n: int) -> str | None:
    """None when a weight of n rows can hold interleaved gate and up projections."""
    if n % (2 * GATE_BLOCK):
        return (f"a gated weight interleaves gate and up rows in blocks of {GATE_BLOCK}: its "
                f"{n} rows must be a multiple of {2 * GATE_BLOCK}")
    return None


def interleave_gate_up(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The rows of a gate and an up projection ([I, ...] each, I a multiple of 8: weights [I, K]
    or biases [I]) in the gated epilogues' order: [2I, ...], 8 gate rows, then the same 8 up rows,
    and so on. Pack the result (2:4 is along K, so rows move freely) and pass it to
    ``sparse24.ops.linear`` with a gated activation ("swiglu", ...)."""
    if gate.shape != up.shape or gate.dim() < 1 or gate.shape[0] % GATE_BLOCK:
        raise ValueError(
            f"interleave_gate_up: gate {tuple(gate.shape)} and up {tuple(up.shape)} must have the "
            f"same shape, with a number of rows that is a multiple of {GATE_BLOCK}")
    rest = gate.shape[1:]
    blocks = torch.stack([gate.reshape(-1, GATE_BLOCK, *rest), up.reshape(-1, GATE_BLOCK, *rest)], 1)
    return blocks.reshape(2 * gate.shape[0], *rest)


def split_gate_up(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of ``interleave_gate_up``: (gate, up), each [I, ...], copies."""
    problem = gated_error(rows.shape[0]) if rows.dim() >= 1 else "a tensor without rows"
    if problem:
        raise ValueError(f"split_gate_up: {problem}")
    # the block count spelled out: -1 cannot be inferred when a trailing dim is 0 (no tokens)
    blocks = rows.reshape(rows.shape[0] // (2 * GATE_BLOCK), 2, GATE_BLOCK, *rows.shape[1:])
    half = rows.shape[0] // 2
    return (blocks[:, 0].reshape(half, *rows.shape[1:]).clone(),
            blocks[:, 1].reshape(half, *rows.shape[1:]).clone())
