"""Candidate kernel configs for sparse24.ops.linear: one list for the tuner and the GPU tests.

A config is a JSON-able dict. "mma" configs tile [BLOCK_F features x BLOCK_T tokens] per program;
"dot" configs tile [BLOCK_M tokens x BLOCK_N features] and may split K.
"""

from __future__ import annotations

import itertools

# float32 accumulator registers per thread = BLOCK_F * BLOCK_T / (32 * num_warps). Capped at 128,
# half of a thread's 255, so the A fragments and x tiles of two chunks (prefetch) fit beside it.
_MAX_ACC_REGS = 128


# Split-K for the mma family only where a token block leaves too few programs: at 16 tokens a
# 4096-feature weight in 128-feature blocks is 32 programs for 132 SMs.
_MMA_SPLIT_MAX_M = 128


def mma_candidates(m: int, n: int, k: int) -> list[dict]:
    configs = []
    for block_f, block_t, warps, prefetch in itertools.product(
        (64, 128, 256), (16, 32, 64, 128), (4, 8), (1, 2)
    ):
        if n % block_f or block_t > max(16, 2 * m):
            continue
        if block_f * block_t // (32 * warps) > _MAX_ACC_REGS or block_f < 16 * warps:
            continue
        configs.append({"family": "mma", "BLOCK_F": block_f, "BLOCK_T": block_t, "GROUP_T": 8,
                        "PREFETCH": prefetch, "SPLIT_K": 1, "num_warps": warps, "num_stages": 1})
    if m <= _MMA_SPLIT_MAX_M:
        for block_f, block_t, split_k in itertools.product((64, 128, 256), (16, 32), (2, 4, 8, 16)):
            if n % block_f or block_t > max(16, 2 * m) or split_k > k // 64:
                continue
            configs.append({"family": "mma", "BLOCK_F": block_f, "BLOCK_T": block_t, "GROUP_T": 8,
                            "PREFETCH": 1, "SPLIT_K": split_k, "num_warps": 4, "num_stages": 1})
    return configs


def dot_candidates(m: int, n: int, k: int) -> list[dict]:
    configs = []
    chunks = k // 64
    for block_m, block_n, split_k, stages in itertools.product(
        (16, 32, 64), (32, 64, 128), (1, 2, 4, 8, 16), (2, 3, 4)
    ):
        if n % block_n or split_k > chunks or block_m > max(16, 2 * m):
            continue
        if split_k > 1 and m > 256:  # the fp32 workspace would cost more than it saves
            continue
        configs.append({"family": "dot", "BLOCK_M": block_m, "BLOCK_N": block_n,
                        "SPLIT_K": split_k, "num_warps": 4, "num_stages": stages})
    return configs


def candidates(m: int, n: int, k: int, on_gpu: bool, device=None) -> list[dict]:
    """Every config worth timing for an [m, k] x [n, k]^T problem (mma needs a GPU). On sm90 with
    more than ``gemm.WGMMA_MIN_TOKENS`` tokens only the wgmma family serves (the dispatch rule)."""
    import torch

    from sparse24.ops import gemm, wgmma

    if on_gpu and device is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    if on_gpu and device is not None and gemm.uses_wgmma(m, device):
        return wgmma.candidates(m, n, k)
    return (mma_candidates(m, n, k) if on_gpu else []) + dot_candidates(m, n, k)
