"""A plain Triton dense GEMM, y = x @ w^T: the "what tl.dot gets without sparsity" baseline.

It is a baseline for bench/gemm.py, not product code: one tl.dot kernel with grouped tile order and
a short autotune list keyed on (M, N, K). On sm90 tl.dot lowers to wgmma for BLOCK_M >= 64 (486-614
TFLOP/s measured on an H200 against 652-664 for cuBLAS), so the gap between this row and sparse24
shows what the sparse tensor cores buy over Triton's own dense path.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


def _config(bm: int, bn: int, bk: int, stages: int, warps: int) -> triton.Config:
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8},
                         num_stages=stages, num_warps=warps)


_CONFIGS = [
    # decode-sized M: a thin tile, many programs along N so the weight streams from every SM
    _config(16, 32, 128, 4, 4),
    _config(16, 64, 128, 4, 4),
    _config(32, 128, 64, 4, 4),
    _config(64, 128, 64, 4, 4),
    # prefill-sized M: large tiles for wgmma; 3 stages of 128x64 + 64x256 fp16 fit in 228 KB smem
    _config(128, 128, 64, 3, 8),
    _config(128, 256, 64, 3, 8),
    _config(256, 128, 64, 3, 8),
]


def _prune(configs, named_args, **kwargs):
    """Drop tiles much taller than M (they would compute padding); autotuning is per shape."""
    m = named_args["M"]
    fits = [c for c in configs if c.kwargs["BLOCK_M"] <= max(16, triton.next_power_of_2(m))]
    return fits or configs[:1]


@triton.autotune(configs=_CONFIGS, key=["M", "N", "K"], prune_configs_by={"early_config_prune": _prune})
@triton.heuristics({"EVEN_K": lambda a: a["K"] % a["BLOCK_K"] == 0})
@triton.jit
def _dense_linear_kernel(x_ptr, w_ptr, y_ptr, M, N, K, stride_xm, stride_wn, stride_ym,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                         GROUP_M: tl.constexpr, EVEN_K: tl.constexpr):
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    # Grouped order: GROUP_M consecutive row blocks walk the same column blocks of w together,
    # so a column block of w is reused from the L2 instead of re-read from HBM.
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    rows_in_group = min(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % rows_in_group
    pid_n = (pid % per_group) // rows_in_group

    # Out-of-range rows/columns wrap around (modulo) so the loads need no M/N mask; the store masks.
    rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
    rn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N
    rk = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + rm[:, None] * stride_xm + rk[None, :]
    w_ptrs = w_ptr + rn[None, :] * stride_wn + rk[:, None]  # a [BLOCK_K, BLOCK_N] tile of w^T

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        if EVEN_K:
            a = tl.load(x_ptrs)
            b = tl.load(w_ptrs)
        else:
            k_ok = rk + k0 < K
            a = tl.load(x_ptrs, mask=k_ok[None, :], other=0.0)
            b = tl.load(w_ptrs, mask=k_ok[:, None], other=0.0)
        acc = tl.dot(a, b, acc)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K

    om = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    on = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    y_ptrs = y_ptr + om[:, None] * stride_ym + on[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=(om[:, None] < M) & (on[None, :] < N))


def dense_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x [M, K] @ w[N, K]^T -> [M, N] in x's dtype, fp32 accumulation."""
    if x.dim() != 2 or w.dim() != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"dense_linear: need x [M, K] and w [N, K], "
                         f"got {tuple(x.shape)} and {tuple(w.shape)}")
    if x.stride(1) != 1 or w.stride(1) != 1:
        raise ValueError("dense_linear: x and w must be contiguous along K")
    m, k = x.shape
    n = w.shape[0]
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

    _dense_linear_kernel[grid](x, w, y, m, n, k, x.stride(0), w.stride(0), y.stride(0))
    return y
