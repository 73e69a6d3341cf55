"""A Llama-style MLP, ``down_proj(act_fn(gate_proj(x)) * up_proj(x))``, with ``act(gate) * up``
computed in the epilogue of one GEMM (``sparsify_(model, fuse_gated_mlp=True)``).

``SparseGatedMLP`` holds ``gate_up``, one SparseLinear whose rows interleave the gate and up
projections in blocks of 8 (sparse24.layout.interleave_gate_up) and whose activation is the gated
form of the block's ("swiglu" for SiLU, "geglu", "geglu_tanh", "reglu"), and the block's
``down_proj``. Against the ``gate_up`` grouping (one GEMM, the product left to the model) it
writes half the GEMM's outputs and runs no separate kernel for the activation and the product.

It replaces the block, so its forward is its own; the block's is not run again. Hence the rules
(``gated_problem``): the block has exactly the four children gate_proj, up_proj, down_proj and
act_fn, with no hooks on the first two or the activation; the activation has a gated form; and
the block's own forward, run once on a probe input with the dense weights before packing, gives
what ``down_proj(act_fn(gate_proj(x)) * up_proj(x))`` gives. A block of another computation
(a scale, a clamp, another combination), or one that cannot be probed (weights on the meta
device), keeps its forward and falls back to the ``gate_up`` grouping. Names: the packed tensors
are ``<block>.gate_up.*`` as in that grouping; their rows are interleaved, which the layer's
layout record says (sparse24/nn/linear.py), so neither form loads the other's checkpoint.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from sparse24 import ops
from sparse24.activations import GATED
from sparse24.layout import interleave_gate_up
from sparse24.nn._activations import fusable_activation
from sparse24.nn.linear import SparseLinear

GATED_NAME = "gate_up"
PARTS = ("gate_proj", "up_proj", "down_proj", "act_fn")
GATED_FORM = {act: gated for gated, act in GATED.items()}  # "silu" -> "swiglu", ...


class SparseGatedMLP(nn.Module):
    """``down_proj(gate_up(x))``: gate_up's epilogue computes act(gate) * up (module docstring)."""

    def __init__(self, gate_up: SparseLinear, down_proj: nn.Module):
        super().__init__()
        self.gate_up = gate_up
        self.down_proj = down_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.gate_up(x))

    @classmethod
    def empty_like(cls, block: nn.Module, activation: str) -> SparseGatedMLP:
        """The structure for ``block`` (a Llama-style MLP) with an all-zero packed weight, for a
        checkpoint to fill (sparse24/nn/hf.py rebuilds a saved model so)."""
        gate = block.gate_proj
        gate_up = SparseLinear(gate.in_features, 2 * gate.out_features, bias=gate.bias is not None,
                               activation=activation, device=gate.weight.device,
                               dtype=gate.weight.dtype)
        return cls(gate_up, block.down_proj)


def gated_form(block: nn.Module) -> str | None:
    """The gated epilogue of ``block``'s activation ("swiglu", ...), or None."""
    return GATED_FORM.get(fusable_activation(getattr(block, "act_fn", None)))


def gated_problem(block: nn.Module) -> str | None:
    """Why ``block`` (with Linear gate_proj and up_proj) cannot become a SparseGatedMLP, or None.
    Runs the block once on a probe input (its dense weights, before packing)."""
    children = set(block._modules)
    if children != set(PARTS):
        return (f"its children are {sorted(children)}, not exactly {list(PARTS)}: its forward may "
                "compute more than down_proj(act_fn(gate_proj(x)) * up_proj(x))")
    if gated_form(block) is None:
        return f"act_fn is {type(block.act_fn).__name__}, which has no gated epilogue"
    hooked = [name for name in ("gate_proj", "up_proj", "act_fn")
              if block._modules[name]._forward_hooks or block._modules[name]._forward_pre_hooks]
    if hooked:
        return f"{' and '.join(hooked)} have forward hooks, which the fused GEMM would skip"
    return _forward_problem(block)


def _forward_problem(block: nn.Module) -> str | None:
    gate = block.gate_proj
    if gate.weight.is_meta:
        return "its weights are on the meta device: its forward cannot be checked"
    generator = torch.Generator(device=gate.weight.device).manual_seed(0)
    x = torch.randn(3, gate.in_features, generator=generator, device=gate.weight.device)
    x = x.to(gate.weight.dtype)
    try:
        # no hook (the block's or down_proj's: a statistics hook must not record a probe) runs
        with torch.no_grad(), _hooks_off(block):
            theirs = block.forward(x)
            ours = block.down_proj(block.act_fn(gate(x)) * block.up_proj(x))
    except Exception as e:  # noqa: BLE001 - a forward of another signature: not this pattern
        return f"its forward did not run on a probe input ({type(e).__name__}: {e})"
    # the same operations in the same order: equal but for a GEMM library's run-to-run noise
    if (not isinstance(theirs, torch.Tensor) or theirs.shape != ours.shape
            or not (theirs.float() - ours.float()).norm() <= 1e-3 * ours.float().norm()):
        return ("its forward, run on a probe input, differs from "
                "down_proj(act_fn(gate_proj(x)) * up_proj(x))")
    return None


_HOOK_DICTS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks",
               "_forward_hooks_with_kwargs", "_forward_hooks_always_called")


@contextlib.contextmanager
def _hooks_off(block: nn.Module):
    """The forward hooks of ``block`` and its submodules set aside, then put back as they were."""
    saved = [(module, name, getattr(module, name)) for module in block.modules()
             for name in _HOOK_DICTS if getattr(module, name, None)]
    try:
        for module, name, hooks in saved:
            object.__setattr__(module, name, type(hooks)())
        yield
    finally:
        for module, name, hooks in saved:
            object.__setattr__(module, name, hooks)


def fuse_gated_(block: nn.Module) -> SparseGatedMLP:
    """A SparseGatedMLP for ``block`` (checked by ``gated_problem``; gate and up 2:4), holding
    the block's down_proj as it is; the caller puts it where the block was."""
    gate, up = block.gate_proj, block.up_proj
    fused = SparseGatedMLP.empty_like(block, gated_form(block))
    fused.gate_up.values, fused.gate_up.meta = ops.compress(interleave_gate_up(
        gate.weight.detach(), up.weight.detach()))
    if gate.bias is not None:
        fused.gate_up.bias = nn.Parameter(
            interleave_gate_up(gate.bias.detach(), up.bias.detach()), requires_grad=False)
    return fused
