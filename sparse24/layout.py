"""Shapes and granularity of sparse24's packed 2:4 format (layout version 2).

The bit-level contract (which value goes where, metadata bit order) is written once, at the top of
``kernels/pack.py``. This module only holds the numbers that host code needs.
"""

LAYOUT_VERSION = 2

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
