"""Fused GEMM epilogue: bias, activation and the cast happen in registers before the single store."""

import triton
import triton.language as tl

from sparse24.activations import EPILOGUE_CODES

# The ACTIVATION codes, as sparse24/activations.py defines them (0 is no activation).
_RELU = tl.constexpr(EPILOGUE_CODES["relu"])
_GELU = tl.constexpr(EPILOGUE_CODES["gelu"])
_GELU_TANH = tl.constexpr(EPILOGUE_CODES["gelu_tanh"])


@triton.jit
def _activate(y, ACTIVATION: tl.constexpr):
    """ACTIVATION: none, relu, gelu (erf form, as nn.GELU() and Hugging Face's "gelu"), gelu_tanh
    ("gelu_new"), by the codes of sparse24/activations.py."""
    if ACTIVATION == _RELU:
        y = tl.maximum(y, 0.0)
    elif ACTIVATION == _GELU:
        y = 0.5 * y * (1.0 + tl.erf(y * 0.7071067811865476))
    elif ACTIVATION == _GELU_TANH:
        # 0.5 * (1 + tanh(u)) == sigmoid(2u): one exp instead of a tanh Triton lacks on every backend.
        # sigmoid(z) from e = exp(-|z|), which never overflows (1 / (1 + exp(-z)) overflows exp for
        # z below about -88: harmless on a GPU, a RuntimeWarning under the interpreter).
        z = 1.5957691216057308 * (y + 0.044715 * y * y * y)
        e = tl.exp(-tl.abs(z))
        y = y * tl.where(z >= 0, 1.0, e) / (1.0 + e)
    return y


@triton.jit
def _epilogue(acc, bias_ptr, features, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr):
    """acc (float32) + bias[features], then the activation; ``features`` broadcasts against acc."""
    if HAS_BIAS:
        acc = acc + tl.load(bias_ptr + features).to(tl.float32)
    return _activate(acc, ACTIVATION)
