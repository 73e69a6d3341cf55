"""Projections of one input run as one sparse GEMM: self-attention's Q, K and V in one launch.

BERT-base's query, key and value are three [768, 768] GEMMs on the same hidden states. At 6144
tokens (batch 16, seq 384) each is a 48 x 6 grid of 128 x 128 tiles, 2.2 waves on the H200's
132 SMs, and sparse24 ran them at 0.87x cuBLAS (bench/results/h200/gemm.md, 4e31f5f); packed as
one [2304, 768] weight the grid is 3x larger and the launch is one instead of three.

``sparsify_`` packs such a group into one SparseLinear registered on the block as ``qkv`` and puts
a ``ProjectionSlice`` at ``query``, ``key`` and ``value``. The block's forward is untouched: the
first slice called on a tensor runs the fused GEMM and keeps the result; the others, called on the
same tensor object, return their columns of it (views, no copy); the group's last slice drops it,
so nothing outlives the forward. A slice called on another tensor (cross-attention's key and
value read the encoder's states) computes what it needs on its own, so the outputs never depend
on the call pattern. The state dict keeps the unfused keys (``query.values``, ``key.meta``, ...):
hooks on the block split the fused buffers on save and join them on load.
"""

from __future__ import annotations

import torch
from torch import nn

from sparse24 import ops
from sparse24.nn.linear import SparseLinear

# Attribute names of the projections that one block applies to the same input, in call order.
# DistilBERT's attention takes query, key and value arguments: in self-attention the same tensor.
SHARED_INPUT_PATTERNS = (("query", "key", "value"), ("q", "k", "v"), ("q_lin", "k_lin", "v_lin"))
FUSED_NAME = "qkv"
_FIELDS = ("values", "meta", "bias")


class ProjectionSlice(nn.Module):
    """Output features [start, stop) of a fused SparseLinear (see the module docstring)."""

    def __init__(self, fused: SparseLinear, stash: list, start: int, stop: int, last: bool):
        super().__init__()
        # Not registered as a child: the block holds the fused module once, under FUSED_NAME.
        object.__setattr__(self, "_fused", fused)
        self._stash = stash  # [None] or [(x, fused output)], shared by the group's slices
        self.start, self.stop, self.last = start, stop, last
        self.in_features, self.out_features = fused.in_features, stop - start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        held = self._stash[0]
        if held is not None and held[0] is x:
            y = held[1]
        elif self.last:
            self._stash[0] = None
            return self._own_rows(x)
        else:
            y = self._fused(x)
            self._stash[0] = (x, y)
        if self.last:
            self._stash[0] = None
        return y[..., self.start:self.stop]

    def _own_rows(self, x: torch.Tensor) -> torch.Tensor:
        fused = self._fused
        if x.dtype != fused.values.dtype and x.is_floating_point():
            x = x.to(fused.values.dtype)  # as SparseLinear.forward
        bias = None if fused.bias is None else fused.bias[self.start:self.stop]
        return ops.linear(x, fused.values[self.start:self.stop],
                          fused.meta[self.start // 16:self.stop // 16], bias, fused.activation)

    def extra_repr(self) -> str:
        return f"features [{self.start}, {self.stop}) of {FUSED_NAME} (in_features={self.in_features})"


def shared_input_groups(block: nn.Module) -> tuple[str, ...] | None:
    """The projection attribute names of ``block`` if it has one of the known patterns."""
    for names in SHARED_INPUT_PATTERNS:
        if all(isinstance(getattr(block, n, None), nn.Linear) for n in names):
            return names
    return None


def fusion_problem(block: nn.Module, names: tuple[str, ...]) -> str | None:
    """Why these Linear layers of ``block`` cannot be packed as one, or None."""
    linears = [getattr(block, n) for n in names]
    if hasattr(block, FUSED_NAME):
        return f"the block already has an attribute {FUSED_NAME!r}"
    if len({(m.in_features, m.weight.dtype, m.weight.device) for m in linears}) != 1:
        return "the projections differ in in_features, dtype or device"
    if len({m.bias is None for m in linears}) != 1:
        return "some projections have a bias and some do not"
    if any(m.out_features % 16 for m in linears):
        return "an out_features is not a multiple of 16 (the packed metadata's row group)"
    return None


def fuse_(block: nn.Module, names: tuple[str, ...]) -> SparseLinear:
    """Pack ``block``'s Linear layers ``names`` (2:4 weights, checked by the caller) as one
    SparseLinear at ``block.qkv`` and replace each by its ProjectionSlice."""
    linears = [getattr(block, n) for n in names]
    parts = [SparseLinear.from_linear(m) for m in linears]
    fused = SparseLinear(parts[0].in_features, sum(p.out_features for p in parts),
                         bias=parts[0].bias is not None, device="meta", dtype=parts[0].values.dtype)
    # Packed rows are independent in 16-row groups, so the packed parts concatenate.
    fused.values = torch.cat([p.values for p in parts])
    fused.meta = torch.cat([p.meta for p in parts])
    if fused.bias is not None:
        fused.bias = nn.Parameter(torch.cat([p.bias for p in parts]), requires_grad=False)
    del parts
    block.add_module(FUSED_NAME, fused)
    stash: list = [None]
    start = 0
    bounds = {}
    for i, (name, m) in enumerate(zip(names, linears)):
        setattr(block, name, ProjectionSlice(fused, stash, start, start + m.out_features,
                                             last=i == len(names) - 1))
        bounds[name] = (start, start + m.out_features)
        start += m.out_features
    block._register_state_dict_hook(_split_on_save(bounds))
    block._register_load_state_dict_pre_hook(_join_on_load(bounds, fused.bias is not None))
    return fused


def _split_on_save(bounds: dict[str, tuple[int, int]]):
    """state_dict hook: the fused buffers saved as each projection's own SparseLinear entries."""

    def hook(module, state_dict, prefix, local_metadata):
        fused_prefix = prefix + FUSED_NAME + "."
        version = state_dict.pop(fused_prefix + "_extra_state", None)
        for field in _FIELDS:
            whole = state_dict.pop(fused_prefix + field, None)
            if whole is None:
                continue
            for name, (start, stop) in bounds.items():
                rows = slice(start // 16, stop // 16) if field == "meta" else slice(start, stop)
                # a copy: views of one storage are refused by safetensors
                state_dict[f"{prefix}{name}.{field}"] = whole[rows].clone()
        if version is not None:
            for name in bounds:
                state_dict[f"{prefix}{name}._extra_state"] = version.clone()
        return state_dict

    return hook


def _join_on_load(bounds: dict[str, tuple[int, int]], has_bias: bool):
    """load_state_dict pre-hook: per-projection entries (as saved above, or by an unfused model)
    joined into the fused module's."""

    def hook(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        fused_prefix = prefix + FUSED_NAME + "."
        for field in _FIELDS[:3 if has_bias else 2]:
            keys = [f"{prefix}{name}.{field}" for name in bounds]
            if all(k in state_dict for k in keys):
                state_dict[fused_prefix + field] = torch.cat([state_dict.pop(k) for k in keys])
        versions = [state_dict.pop(f"{prefix}{name}._extra_state", None) for name in bounds]
        if versions[0] is not None:
            state_dict[fused_prefix + "_extra_state"] = versions[0]

    return hook
