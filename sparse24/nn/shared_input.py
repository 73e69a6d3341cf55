"""Projections of one input packed as one SparseLinear, run as one GEMM inside the block's forward:
self-attention's Q, K and V (``qkv``), and a Llama-style MLP's gate and up (``gate_up``).

BERT-base's query, key and value are three [768, 768] GEMMs on the same hidden states. At 6144
tokens (batch 16, seq 384) each is a 48 x 6 grid of 128 x 128 tiles, 2.2 waves on the H200's
132 SMs; packed as one [2304, 768] weight the grid is 3x larger and the launch is one instead of
three (31.4 us against 3 x 14.4 us, bench/results/h200/diag/gpu_breakdown_eager_6bd7bbc.txt).
A Llama MLP's gate_proj and up_proj ([14336, 4096] each at 8B) read the same x: one [28672, 4096]
GEMM streams both weights in one launch (the activation and the product stay where they are).
Llama-style attention (Llama, Mistral, Qwen2, OPT, BART, Whisper: ``q_proj``/``k_proj``/``v_proj``)
packs the same way; with grouped-query attention, K and V are small ([1024, 4096] at 8B: 8
feature tiles, too few for 132 SMs on their own), and in one [6144, 4096] GEMM they stream with Q.

``sparsify_`` packs such a group into one SparseLinear registered on the block (``qkv`` or
``gate_up``) and puts a ``ProjectionSlice`` at each projection's name. The fusion is scoped to one
call of the block, never to a tensor's identity alone:

- A forward pre-hook on the block opens a window for the tensor the block was called with, if
  no other input (``encoder_hidden_states``, ``key_value_states``, or separate ``key``/``value``
  arguments) is given; a forward hook (``always_call``, so also on an exception) closes it.
- Inside the window, the first slice called on exactly that tensor runs the fused GEMM; the
  others, called on the same tensor, return their columns of its output (views, no copy).
- Any other call (outside the block's forward, on another tensor, a cross-attention's key and
  value) computes only the slice's own rows: ``qkv(x, rows=(start, stop))``, through the fused
  module's forward so that hooks on it (accelerate's offloading) run.

So a result can only be reused within the one block call that computed it, on the tensor it was
computed from, unchanged: a block that modifies its input in place between its projections
gets the fused output computed again (the tensor's version counter moved). That check cannot be
made under torch.inference_mode (inference tensors keep no version counter) or torch.compile
(Dynamo does not branch on one), where such a block would read the earlier output; the attention
and MLP blocks of transformers that match the patterns below do not modify their input.

Names agree: the packed tensors exist once, as ``qkv.values``, ``qkv.meta``, ``qkv.bias``, in
``named_buffers()``, ``named_parameters()`` and ``state_dict()``. Checkpoints with one entry per
projection (``query.values``, ...: an unfused sparse model, or sparse24 before 2026-12-04) are
joined on loading. Forward hooks of the original Linear layers move to their slices, which stand
where the Linear layers stood, so they still see each projection's input and output.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from sparse24 import ops
from sparse24.nn.linear import SparseLinear

FUSED_NAME = "qkv"
GATE_UP_NAME = "gate_up"
# (attribute names of the projections that one block applies to the same input, the name of the
# fused SparseLinear on the block). Llama-style MLPs (Llama, Mistral, Qwen2, ...) compute
# down_proj(act(gate_proj(x)) * up_proj(x)): gate and up read x, and pack as one [2I, K] GEMM.
SHARED_INPUT_PATTERNS = (
    (("query", "key", "value"), FUSED_NAME), (("q", "k", "v"), FUSED_NAME),
    (("q_lin", "k_lin", "v_lin"), FUSED_NAME), (("q_proj", "k_proj", "v_proj"), FUSED_NAME),
    (("gate_proj", "up_proj"), GATE_UP_NAME),
)


def fused_name(names: tuple[str, ...]) -> str:
    """The attribute of the fused SparseLinear of a group of projections ``names``."""
    return dict(SHARED_INPUT_PATTERNS)[tuple(names)]
# Arguments of an attention block's forward through which key and value may read another input
# than the first argument (BERT 4.x: encoder_hidden_states; T5/BART: key_value_states; DistilBERT
# 4.x: forward(query, key, value, mask)). When one of them is given and is another tensor, the
# call runs the projections unfused.
OTHER_INPUT_ARGS = ("encoder_hidden_states", "key_value_states", "key", "value")
_FIELDS = ("values", "meta", "bias")


class FusionWindow:
    """The hooks of one fused block: which tensor may take the fused GEMM, for one call.

    It holds no per-call state and no module: the pre-hook writes the call's state into the
    block's own slices (``_slot``) and points them at the block's own fused module, so replicas
    of the block (``nn.DataParallel``, ``copy.deepcopy``) each use their own. A plain object (not
    a Module) whose bound methods are the hooks, so that the block pickles (``torch.save``).
    """

    def __init__(self, block: nn.Module, bounds: dict[str, tuple[int, int]], has_bias: bool):
        self.bounds = bounds
        self.has_bias = has_bias
        self.fused_name = fused_name(tuple(bounds))
        params = list(inspect.signature(block.forward).parameters.values())
        positional = [p.name for p in params
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self.first_name = params[0].name if params else None
        # (name, position or None) of each argument that may carry another input
        self.other_inputs = [(p.name, positional.index(p.name) if p.name in positional else None)
                             for p in params if p.name in OTHER_INPUT_ARGS]

    def open(self, block, args, kwargs) -> None:
        x = args[0] if args else kwargs.get(self.first_name)
        one_input = isinstance(x, torch.Tensor) and self._one_input(x, args, kwargs)
        fused = block._modules[self.fused_name]
        # [input, fused output once computed, input's version then]
        slot = [x, None, None] if one_input else None
        compiling = torch.compiler.is_compiling()
        for name in self.bounds:
            piece = block._modules[name]
            if piece._fused is not fused:  # a replica of the block (nn.DataParallel): its own
                object.__setattr__(piece, "_fused", fused)  # not registered as a child
            _set_slot(piece, slot, compiling)

    def close(self, block, args, kwargs, output) -> None:
        compiling = torch.compiler.is_compiling()
        for name in self.bounds:
            _set_slot(block._modules[name], None, compiling)

    def _one_input(self, x, args, kwargs) -> bool:
        for name, position in self.other_inputs:
            other = args[position] if position is not None and position < len(args) else kwargs.get(name)
            if other is not None and other is not x:
                return False
        return True

    def join_on_load(self, state_dict, prefix, local_metadata, strict, missing_keys,
                     unexpected_keys, error_msgs) -> None:
        """load_state_dict pre-hook: per-projection entries joined into the fused module's."""
        fused_prefix = prefix + self.fused_name + "."
        for field in _FIELDS[:3 if self.has_bias else 2]:
            keys = [f"{prefix}{name}.{field}" for name in self.bounds]
            if all(k in state_dict for k in keys):
                state_dict[fused_prefix + field] = torch.cat([state_dict.pop(k) for k in keys])
        versions = [state_dict.pop(f"{prefix}{name}._extra_state", None) for name in self.bounds]
        if versions[0] is not None and fused_prefix + "_extra_state" not in state_dict:
            state_dict[fused_prefix + "_extra_state"] = versions[0]


def _set_slot(piece: nn.Module, slot: list | None, compiling: bool) -> None:
    """``piece._slot = slot``. In eager calls written to the instance's __dict__: a list or None
    is a plain attribute, and nn.Module.__setattr__ (which first looks for the name among
    parameters, buffers and modules) cost six calls per block call, 2.9 of a stubbed fused
    Q/K/V block's 37 us on the dev CPU (bench/results/cpu/host_path_levers.txt). Dynamo traces
    the ordinary assignment."""
    if compiling:
        piece._slot = slot
    else:
        piece.__dict__["_slot"] = slot


class ProjectionSlice(nn.Module):
    """Output features [start, stop) of a fused SparseLinear (see the module docstring)."""

    def __init__(self, fused: SparseLinear, start: int, stop: int, fused_name: str = FUSED_NAME):
        super().__init__()
        # Not registered as a child: the block holds the fused module once, under fused_name, so
        # its tensors have one name. The block's pre-hook re-points it at each call (replicas).
        object.__setattr__(self, "_fused", fused)
        self._slot = None  # [input, fused output, version] during the block's call: FusionWindow
        self.start, self.stop, self.fused_name = start, stop, fused_name
        self.in_features, self.out_features = fused.in_features, stop - start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slot = self._slot
        if slot is not None and slot[0] is x:
            # x changed in place since the fused output was computed (its version moved): compute
            # it again. Not caught where there is no version to read: inference tensors have
            # none, and Dynamo cannot branch on one (module docstring).
            version = (None if torch.compiler.is_compiling() or x.is_inference()
                       else x._version)
            if slot[1] is None or slot[2] != version:
                slot[1], slot[2] = self._fused(x), version
            return slot[1][..., self.start:self.stop]
        return self._fused(x, rows=(self.start, self.stop))

    def to_dense(self) -> torch.Tensor:
        """This projection's dense weight [out_features, in_features] (for inspection)."""
        fused = self._fused
        return ops.decompress(fused.values[self.start:self.stop],
                              fused.meta[self.start // 16:self.stop // 16])

    def extra_repr(self) -> str:
        return (f"features [{self.start}, {self.stop}) of {self.fused_name} "
                f"(in_features={self.in_features})")


def shared_input_groups(block: nn.Module) -> tuple[str, ...] | None:
    """The projection attribute names of ``block`` if it has one of the known patterns."""
    for names, _ in SHARED_INPUT_PATTERNS:
        if all(isinstance(getattr(block, n, None), nn.Linear) for n in names):
            return names
    return None


def fusion_problem(block: nn.Module, names: tuple[str, ...]) -> str | None:
    """Why these Linear layers of ``block`` cannot be packed as one, or None."""
    linears = [getattr(block, n) for n in names]
    if hasattr(block, fused_name(names)):
        return f"the block already has an attribute {fused_name(names)!r}"
    if getattr(block, "is_cross_attention", False) or "CrossAttention" in type(block).__name__:
        return "cross-attention: key and value read another input than query"
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
    fused = install_fused_(block, names)
    # Packed rows are independent in 16-row groups, so the packed parts concatenate.
    fused.values = torch.cat([p.values for p in parts])
    fused.meta = torch.cat([p.meta for p in parts])
    if fused.bias is not None:
        fused.bias = nn.Parameter(torch.cat([p.bias for p in parts]), requires_grad=False)
    return fused


def install_fused_(block: nn.Module, names: tuple[str, ...]) -> SparseLinear:
    """The structure of ``fuse_`` with an all-zero packed weight, for a checkpoint to fill (the
    Hugging Face loader rebuilds a saved sparse model this way). The Linear layers at ``names``
    give the shapes, dtype and device (the meta device costs no memory) and their forward hooks."""
    linears = [getattr(block, n) for n in names]
    first = linears[0]
    fused = SparseLinear(first.in_features, sum(m.out_features for m in linears),
                         bias=first.bias is not None, device=first.weight.device,
                         dtype=first.weight.dtype)
    block.add_module(fused_name(names), fused)
    bounds, start = {}, 0
    for name, m in zip(names, linears):
        bounds[name] = (start, start + m.out_features)
        start += m.out_features
    window = FusionWindow(block, bounds, fused.bias is not None)
    for name, m in zip(names, linears):
        piece = ProjectionSlice(fused, *bounds[name], fused_name=fused_name(names))
        move_hooks(m, piece)
        setattr(block, name, piece)
    block.register_forward_pre_hook(window.open, with_kwargs=True)
    block.register_forward_hook(window.close, with_kwargs=True, always_call=True)
    block._register_load_state_dict_pre_hook(window.join_on_load)
    return fused


def move_hooks(old: nn.Module, new: nn.Module) -> None:
    """Give ``new`` the forward hooks and pre-hooks of ``old``, which it replaces in the model.
    ``new`` takes ``old``'s hook dicts themselves, so handles taken on ``old`` still remove them."""
    for attr in ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks",
                 "_forward_hooks_with_kwargs", "_forward_hooks_always_called"):
        mine = getattr(new, attr)
        if mine:  # new has hooks of its own: add old's (their handles then point at old's dict)
            mine.update(getattr(old, attr))
        else:
            object.__setattr__(new, attr, getattr(old, attr))
