"""Fused GEMM epilogue: bias, activation and the cast happen in registers before the single store.

Gated activations (sparse24/activations.py, GATED: SwiGLU, ...) pair the interleaved gate and up
rows of a tile in registers and store half as many features: y[token, j] = act(gate_j) * up_j."""

import triton
import triton.language as tl

from sparse24.activations import EPILOGUE_CODES, GATED_FLAG

# The ACTIVATION codes, as sparse24/activations.py defines them (0 is no activation).
_RELU = tl.constexpr(EPILOGUE_CODES["relu"])
_GELU = tl.constexpr(EPILOGUE_CODES["gelu"])
_GELU_TANH = tl.constexpr(EPILOGUE_CODES["gelu_tanh"])
_SILU = tl.constexpr(EPILOGUE_CODES["silu"])
_GATED = tl.constexpr(GATED_FLAG)


@triton.jit
def _activate(y, ACTIVATION: tl.constexpr):
    """ACTIVATION: none, relu, gelu (erf form, as nn.GELU() and Hugging Face's "gelu"), gelu_tanh
    ("gelu_new"), silu, by the codes of sparse24/activations.py."""
    if ACTIVATION == _RELU:
        # where, not maximum: max(NaN, 0) is 0 on the GPU and in the interpreter, and torch's relu
        # keeps NaN (and -0.0); so does this
        y = tl.where(y < 0.0, 0.0, y)
    elif ACTIVATION == _GELU:
        y = 0.5 * y * (1.0 + tl.erf(y * 0.7071067811865476))
    elif ACTIVATION == _GELU_TANH:
        # 0.5 * (1 + tanh(u)) == sigmoid(2u): one exp instead of a tanh Triton lacks on every backend.
        # sigmoid(z) from e = exp(-|z|), which never overflows (1 / (1 + exp(-z)) overflows exp for
        # z below about -88: harmless on a GPU, a RuntimeWarning under the interpreter).
        z = 1.5957691216057308 * (y + 0.044715 * y * y * y)
        e = tl.exp(-tl.abs(z))
        y = y * tl.where(z >= 0, 1.0, e) / (1.0 + e)
    elif ACTIVATION == _SILU:
        # y * sigmoid(y), the sigmoid from exp(-|y|) as above (never overflows)
        e = tl.exp(-tl.abs(y))
        y = y * tl.where(y >= 0, 1.0, e) / (1.0 + e)
    return y


@triton.jit
def _gate_pairs(t):
    """(gate rows, up rows) of a [F, T] tile whose rows are the interleaved order of
    sparse24/layout.py (F a multiple of 16, the tile starting at a multiple of 16): rows 16g + r
    and 16g + 8 + r, r < 8, each [F / 2, T]. In mma.sp's and wgmma's accumulators one thread holds
    both rows of a pair."""
    F: tl.constexpr = t.shape[0]
    T: tl.constexpr = t.shape[1]
    gate, up = tl.split(tl.permute(tl.reshape(t, (F // 16, 2, 8, T)), (0, 2, 3, 1)))
    return tl.reshape(gate, (F // 2, T)), tl.reshape(up, (F // 2, T))


@triton.jit
def _epilogue_store(acc, bias_ptr, features, y_ptr, tokens, stride_ym, inside,
                    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr):
    """y[tokens, features] = act(acc + bias[features]) for a [F, T] float32 tile (features
    [F, 1], the weight rows; tokens [1, T]; inside: which to store). A gated ACTIVATION stores
    act(gate) * up at output features 8 * (f // 16) + f % 8 of the tile's gate rows f."""
    y = acc
    if HAS_BIAS:
        y = y + tl.load(bias_ptr + features).to(tl.float32)
    if ACTIVATION >= _GATED:
        gate, up = _gate_pairs(y)
        y = _activate(gate, ACTIVATION - _GATED) * up
        rows, _ = _gate_pairs(features)  # [F, 1] -> [F / 2, 1]
        features = (rows // 16) * 8 + rows % 8
    else:
        y = _activate(y, ACTIVATION)
    tl.store(y_ptr + tokens * stride_ym + features, y.to(y_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _epilogue(acc, bias_ptr, features, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr):
    """acc (float32) + bias[features], then the activation; ``features`` broadcasts against acc."""
    if HAS_BIAS:
        acc = acc + tl.load(bias_ptr + features).to(tl.float32)
    return _activate(acc, ACTIVATION)


@triton.jit
def _store_split(acc, partial_ptr, counter_ptr, tile, split, tokens, features, M, N, bias_ptr,
                 y_ptr, stride_ym, SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr,
                 ACTIVATION: tl.constexpr, FUSED_REDUCE: tl.constexpr):
    """One split's float32 partial sums acc[features, tokens] into partial[split, token, feature]
    (features [F, 1], tokens [1, T]).

    FUSED_REDUCE: the tile's last split to finish adds all SPLIT_K partials (in split order, as
    ``_splitk_reduce_kernel`` does, so the result is the same) and writes y through the epilogue,
    instead of a second launch doing it. Each program counts itself in ``counter_ptr[tile]`` with
    an acq_rel atomic after a CTA barrier (every thread's partial is written before the count
    says so; the last program reads the others' after seeing it, bypassing L1), and the last one
    sets the counter back to zero for the next launch."""
    inside = tokens < M
    # 32-bit offsets within a split (one split's M * N sums fit), 64-bit split bases: 64-bit
    # offset tensors kept live across the count cost the sm80 build 20 registers a thread
    within = tokens * N + features
    tl.store(partial_ptr + (split * M).to(tl.int64) * N + within, acc, mask=inside)
    if FUSED_REDUCE:
        tl.debug_barrier()
        arrived = tl.atomic_add(counter_ptr + tile, 1, sem="acq_rel")
        if arrived == SPLIT_K - 1:
            total = tl.zeros_like(acc)
            for s in range(SPLIT_K):  # a loop, not unrolled: 8 splits unrolled took 55-115 registers more
                total += tl.load(partial_ptr + (s * M).to(tl.int64) * N + within, mask=inside,
                                 other=0.0, cache_modifier=".cg")
            _epilogue_store(total, bias_ptr, features, y_ptr, tokens, stride_ym, inside, HAS_BIAS,
                            ACTIVATION)
            tl.atomic_xchg(counter_ptr + tile, 0)
