"""Recognize activations that SparseLinear can fuse, and the blocks where fusing them is safe."""

from __future__ import annotations

import functools
import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sparse24.activations import EPILOGUE_CODES, GELU_APPROXIMATE

# (Linear attribute, activation attribute) of feed-forward blocks whose forward is exactly
# ``act(linear(x))``: Hugging Face's *Intermediate blocks (BERT, RoBERTa, MPNet, ELECTRA, ...)
# and DistilBERT's FFN (lin1 -> activation -> lin2).
FFN_PATTERNS = (("dense", "intermediate_act_fn"), ("lin1", "activation"))

# transformers classes by name -> epilogue. Looked up in sys.modules instead of imported: if
# transformers.activations was never imported, no model can hold one of its modules, and
# ``import sparse24.nn`` stays free of the (slow, optional) transformers import.
_TRANSFORMERS_ACTIVATIONS = (
    ("GELUActivation", "gelu"),          # erf GELU (also its use_gelu_python variant)
    ("NewGELUActivation", "gelu_tanh"),  # tanh approximation written out
    ("GELUTanh", "gelu_tanh"),           # F.gelu(approximate="tanh")
    ("PytorchGELUTanh", "gelu_tanh"),    # older name of GELUTanh
    ("SiLUActivation", "silu"),          # F.silu (transformers 4.x's "silu"; 5.x maps it to nn.SiLU)
)
assert {epilogue for _, epilogue in _TRANSFORMERS_ACTIVATIONS} <= EPILOGUE_CODES.keys()


def _plain_instance(act: Any, cls: type | None) -> bool:
    """isinstance, but a subclass that overrides forward may compute something else: not fused."""
    return cls is not None and isinstance(act, cls) and type(act).forward is cls.forward


def fusable_activation(act: Any) -> str | None:
    """The SparseLinear epilogue ("relu", "gelu", "gelu_tanh", "silu") that computes ``act``, or
    None."""
    if act is F.relu or act is torch.relu or _plain_instance(act, nn.ReLU):
        return "relu"
    if act is F.silu or _plain_instance(act, nn.SiLU):
        return "silu"
    if act is F.gelu:
        return "gelu"
    if (isinstance(act, functools.partial) and act.func is F.gelu and not act.args
            and act.keywords.keys() == {"approximate"} and isinstance(act.keywords["approximate"], str)):
        return GELU_APPROXIMATE.get(act.keywords["approximate"])
    if _plain_instance(act, nn.GELU):
        return GELU_APPROXIMATE.get(act.approximate)
    hf = sys.modules.get("transformers.activations")
    if hf is not None:
        for name, epilogue in _TRANSFORMERS_ACTIVATIONS:
            if _plain_instance(act, getattr(hf, name, None)):
                return epilogue
    return None


def describe(act: Any) -> str:
    """A short name for an activation in reports: the class, or the function's name."""
    if isinstance(act, nn.Module):
        return f"{type(act).__name__}()"
    return getattr(act, "__qualname__", None) or type(act).__name__


def ffn_pattern(block: nn.Module) -> tuple[str, str] | None:
    """The (linear, activation) attribute names if ``block`` is a known feed-forward block."""
    for linear_attr, act_attr in FFN_PATTERNS:
        if isinstance(getattr(block, linear_attr, None), nn.Linear) and hasattr(block, act_attr):
            return linear_attr, act_attr
    return None
