"""The fused epilogue's activations (sparse24/kernels/epilogue.py) element by element, at the scale
of one unit in the last place (ulp) of the output. A weight whose kept values are an identity makes
the float32 pre-activation exactly x, so each output is the activation of a known number rounded
once, and the check can be far tighter than the GEMM tolerance: there erf-GELU for tanh-GELU (a
relative error of about 3e-4 over unit-scale inputs) hides under fp16's 2e-3."""

import pytest
import torch

import sparse24.ops as ops
from sparse24.activations import EPILOGUE_CODES, REFERENCE
from sparse24.ops import gemm
from sparse24.ops.families import FAMILIES

# None and ReLU are exact; a GELU is computed in float32 and rounded once, so its output may sit one
# ulp off the correctly rounded value where the exact one lies near a rounding boundary.
ULPS = {None: 0, "relu": 0, "gelu": 1, "gelu_tanh": 1, "silu": 1}


def ulp_index(t: torch.Tensor) -> torch.Tensor:
    """fp16 / bf16 -> an integer that grows by one from each representable value to the next
    (sign-magnitude bits made two's complement; -0.0 and +0.0 both 0)."""
    bits = t.view(torch.int16).int()
    return torch.where(bits < 0, -(bits & 0x7FFF), bits)


def identity_weight(dtype, device):
    """[64, 128]: the identity, then zeros. Each group of 4 along K holds at most one nonzero (2:4),
    y[:, f] = x[:, f] exactly (the zeros add 0), and K = 128 lets split-K run its own epilogue."""
    w = torch.cat([torch.eye(64), torch.zeros(64, 64)], dim=1)
    return ops.compress(w.to(dtype=dtype, device=device))


def family_configs(device):
    """The configs whose epilogue is sparse24/kernels/epilogue.py: the "dot" family (the one the
    interpreter runs) and on a GPU "mma" too, each unsplit and split in two (the reduce kernel
    applies the epilogue then). The sm90 family has its own activations (tests/test_wgmma_gpu.py)."""
    dot = gemm.heuristic_config(64, 64, 128, torch.device("cpu"))
    found = [dict(dot, SPLIT_K=1), dict(dot, SPLIT_K=2)]
    if device == "cuda":
        mma = next(c for c in FAMILIES["mma"].candidates(64, 64, 128) if c["SPLIT_K"] == 1)
        found += [dict(mma, SPLIT_K=1), dict(mma, SPLIT_K=2)]
    return found


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("activation", list(EPILOGUE_CODES))
def test_activations_within_an_ulp(activation, dtype, device):
    # Pre-activations from -6 to 6, where the two GELUs differ by up to 98% relative (at -6) and
    # 4.7e-4 absolute (near 2.7). erf-GELU from -3 only: below, float32 1 + erf(y / sqrt(2))
    # cancels (erfc(3 / sqrt(2)) is 2.7e-3, and float32 keeps about 6e-8 of it) and loses more than
    # an ulp of a bf16 output, as PyTorch's own float32 GELU does.
    low = -3.0 if activation == "gelu" else -6.0
    x = torch.linspace(low, 6.0, 64 * 64, dtype=torch.float64).to(dtype).reshape(64, 64)
    want = REFERENCE[activation](x.double()).to(dtype)  # float64, rounded once
    values, meta = identity_weight(dtype, device)
    x128 = torch.cat([x, x], dim=1).to(device)  # columns 64.. meet only zeros of the weight
    for cfg in family_configs(device):
        y = gemm.run_config(x128, values, meta, None, EPILOGUE_CODES[activation], cfg).cpu()
        off = (ulp_index(y) - ulp_index(want)).abs()
        worst = int(off.argmax())
        assert off.max() <= ULPS[activation], (
            f"{cfg}: {int(off.max())} ulps at pre-activation {x.flatten()[worst].item()}: "
            f"{y.flatten()[worst].item()} instead of {want.flatten()[worst].item()}")
