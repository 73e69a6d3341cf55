"""Sparse x dense GEMM by unpacking the 2:4 weight in registers and feeding ``tl.dot``.

y[M, N] = act(x[M, K] @ W[N, K]^T + bias), computed transposed: acc[features, tokens] =
W_tile @ x_tile^T, so the unpacked weight (already in registers) is the A operand and few tokens
only set the small N side of the instruction (wgmma takes A from registers and N down to 8; with
the tokens as the M side Triton 3.6 needed M >= 64 for wgmma and its OptimizeDotOperands pass
crashed on the transposed register operand). This family runs on the dense tensor cores, so it
cannot beat the dense math rate; it wins where moving the weight dominates (few tokens): the
packed weight is 9/16 of the dense bytes. Split-K spreads a small-M
problem over enough programs to keep every SM streaming weight bytes; partial sums go to a float32
workspace and ``_splitk_reduce_kernel`` adds them up and applies the epilogue, or (FUSED_REDUCE)
the tile's last split does (epilogue.py, ``_store_split``); both add the splits in order, so the
result is deterministic and the same. Packed layout: sparse24/kernels/pack.py.
"""

import triton
import triton.language as tl

from sparse24.kernels.epilogue import _GATED, _epilogue, _epilogue_store, _store_split
from sparse24.kernels.pack import _decode_meta, _expand, _load_kept


@triton.jit
def _sparse_dot_kernel(
    x_ptr, values_ptr, meta_ptr, bias_ptr, y_ptr, partial_ptr, counter_ptr,
    M, N, K, stride_xm, stride_ym,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT_K: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, DOT_IN_FP32: tl.constexpr,
    FUSED_REDUCE: tl.constexpr,
):
    """DOT_IN_FP32 is set only under the Triton interpreter: its bf16 tl.dot returns garbage
    (Triton 3.9, relative error ~1e9 on a 16x16 product) while its fp32 dot is exact."""
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    tile_n = pid_n * (BLOCK_N // 16)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    features = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k64 = tl.arange(0, 64)

    chunks = K // 64
    per_split = tl.cdiv(chunks, SPLIT_K)
    first = pid_k * per_split
    last = tl.minimum(first + per_split, chunks)
    acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    for chunk in range(first, last):
        idx0, idx1 = _decode_meta(meta_ptr, tile_n, chunk, K, BLOCK_N)
        v0, v1 = _load_kept(values_ptr, tile_n, chunk, K, BLOCK_N)
        w = _expand(v0, v1, idx0, idx1, BLOCK_N, 64)  # [BLOCK_N, 64] dense, zeros at pruned spots
        x = tl.load(x_ptr + rows[:, None] * stride_xm + (chunk * 64 + k64)[None, :],
                    mask=rows[:, None] < M, other=0.0)
        if DOT_IN_FP32:
            acc = tl.dot(w.to(tl.float32), tl.trans(x.to(tl.float32)), acc)
        else:
            acc = tl.dot(w, tl.trans(x), acc)

    inside = rows[None, :] < M
    if SPLIT_K == 1:
        _epilogue_store(acc, bias_ptr, features[:, None], y_ptr, rows[None, :], stride_ym, inside,
                        HAS_BIAS, ACTIVATION)
    else:
        _store_split(acc, partial_ptr, counter_ptr, pid_m * tl.num_programs(0) + pid_n, pid_k,
                     rows[None, :], features[:, None], M, N, bias_ptr, y_ptr, stride_ym, SPLIT_K,
                     HAS_BIAS, ACTIVATION, FUSED_REDUCE)


@triton.jit
def _splitk_reduce_kernel(
    partial_ptr, bias_ptr, y_ptr, M, N, stride_ym, split_stride,
    SPLIT_K: tl.constexpr, BLOCK: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
):
    """y = act(sum over splits of partial[split] + bias); split s's row-major [M, N] float32 sums
    start split_stride elements after split s - 1's. A gated ACTIVATION writes [M, N / 2]:
    output j of a row pairs sums 16 * (j // 8) + j % 8 (gate) and that + 8 (up)."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    if ACTIVATION >= _GATED:
        half = N // 2
        inside = offsets < M * half
        row = offsets // half
        out = offsets % half
        gate_at = row * N + (out // 8) * 16 + out % 8
        gate = tl.zeros([BLOCK], dtype=tl.float32)
        up = tl.zeros([BLOCK], dtype=tl.float32)
        for split in range(SPLIT_K):
            gate += tl.load(partial_ptr + split * split_stride + gate_at, mask=inside, other=0.0)
            up += tl.load(partial_ptr + split * split_stride + gate_at + 8, mask=inside, other=0.0)
        gate_feature = gate_at - row * N
        gate = _epilogue(gate, bias_ptr, gate_feature, HAS_BIAS, ACTIVATION - _GATED)
        up = _epilogue(up, bias_ptr, gate_feature + 8, HAS_BIAS, 0)
        tl.store(y_ptr + row * stride_ym + out, (gate * up).to(y_ptr.dtype.element_ty),
                 mask=inside)
    else:
        inside = offsets < M * N
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for split in range(SPLIT_K):
            acc += tl.load(partial_ptr + split * split_stride + offsets, mask=inside, other=0.0)
        row = offsets // N
        feature = offsets % N
        y = _epilogue(acc, bias_ptr, feature, HAS_BIAS, ACTIVATION)
        tl.store(y_ptr + row * stride_ym + feature, y.to(y_ptr.dtype.element_ty), mask=inside)
