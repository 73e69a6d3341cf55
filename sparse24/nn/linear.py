"""SparseLinear: an inference nn.Module holding a 2:4 weight in sparse24's packed layout."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sparse24 import ops
from sparse24.activations import GATED, NAMES
from sparse24.layout import LAYOUT_VERSION, granularity_error, meta_error, meta_shape, values_shape
from sparse24.weight import Sparse24Weight, natural_values

ACTIVATION_NAMES = NAMES
"""Epilogues that SparseLinear fuses: none, ReLU, erf GELU, tanh GELU, SiLU (sparse24.activations;
sparse24.ops.linear also takes the gated forms, which need an interleaved weight)."""

# compress keeps positions (0, 1) of an all-zero group: nibble 0 | 1 << 2 = 4 in every group.
# Starting from this (instead of zeros, which would name position 0 twice) makes a freshly built
# SparseLinear hold a valid packed all-zero weight until real values are loaded.
_ZERO_WEIGHT_META = 0x44444444


class SparseLinear(nn.Module):
    """``y = act(x @ W^T + bias)`` with a 2:4 weight W [out_features, in_features] stored packed.

    Buffers ``values`` ([N, K/2], the weight's dtype) and ``meta`` (int32 [N/16, K/64, 32]) hold W
    in the layout described in ``sparse24/kernels/pack.py``; ``bias`` is a frozen parameter. The forward pass
    runs ``sparse24.ops.linear``; ``activation`` (None, "relu", "gelu", "gelu_tanh", "silu") is
    applied in its epilogue. Inference only: fine-tune with ``sparse24.nn.prune_`` before packing.

    ``.to(dtype)`` / ``.half()`` cast values and bias and leave meta int32 (torch only casts
    floating-point tensors). The state dict records the layout version and refuses another one.

    A gated ``activation`` ("swiglu", "geglu", "geglu_tanh", "reglu"; sparse24/nn/gated_mlp.py
    builds these): the ``out_features`` rows of W interleave a gate and an up projection
    (``sparse24.layout.interleave_gate_up``) and the forward returns ``out_features // 2``
    features, act(gate) * up. The state dict records that row order too, so such a layer loads
    only a checkpoint of interleaved rows, and a plain one never loads it.
    """

    in_features: int
    out_features: int
    activation: str | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        problem = granularity_error(out_features, in_features)
        if problem:
            raise ValueError(f"SparseLinear: cannot pack a [{out_features}, {in_features}] weight: {problem}")
        if activation not in ACTIVATION_NAMES and activation not in GATED:
            raise ValueError(
                f"SparseLinear: unknown activation {activation!r}; choose one of "
                f"{ACTIVATION_NAMES} or a gated one, {tuple(GATED)}"
            )
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        dtype = dtype or torch.get_default_dtype()
        self.register_buffer(
            "values", torch.zeros(values_shape(out_features, in_features), dtype=dtype, device=device)
        )
        self.register_buffer(
            "meta",
            torch.full(meta_shape(out_features, in_features), _ZERO_WEIGHT_META,
                       dtype=torch.int32, device=device),
        )
        # A parameter (not a buffer) so parameter counts and dtype/device probes see it like
        # nn.Linear's; frozen because the packed weight beside it does not train.
        self.bias = (nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device),
                                  requires_grad=False) if bias else None)

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, prune: bool = False, activation: str | None = None
    ) -> SparseLinear:
        """Pack ``linear``'s weight (which must be 2:4 unless ``prune=True``) and copy its bias.

        With ``prune=True`` the two smallest |w| of every group of 4 are dropped on the way
        (``sparse24.ops.prune_24``); ``linear`` itself is never modified.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"SparseLinear.from_linear: expected an nn.Linear, got {type(linear).__name__}")
        problem = granularity_error(linear.out_features, linear.in_features)
        if problem:
            raise ValueError(f"SparseLinear.from_linear: cannot pack {linear}: {problem}")
        w = linear.weight.detach()
        if prune:
            w = ops.prune_24(w)
        try:
            values, meta = ops.compress(w)
        except ValueError as e:
            raise ValueError(f"SparseLinear.from_linear: {e}. Or pass prune=True to prune on the way") from e
        # Built on the meta device so no throw-away buffers are allocated before the real ones.
        out = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                  activation=activation, device="meta", dtype=w.dtype)
        out.values = values
        out.meta = meta
        if linear.bias is not None:
            out.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        return out

    @classmethod
    def from_weight(cls, weight: Sparse24Weight, bias: torch.Tensor | None = None,
                    activation: str | None = None) -> SparseLinear:
        """A SparseLinear holding ``weight``'s packed tensors (not copies) and ``bias``."""
        if not isinstance(weight, Sparse24Weight):
            raise TypeError(f"SparseLinear.from_weight: expected a Sparse24Weight, got {type(weight).__name__}")
        n, k = weight.shape
        if bias is not None and tuple(bias.shape) != (n,):
            raise ValueError(f"SparseLinear.from_weight: bias has shape {tuple(bias.shape)}, expected ({n},)")
        out = cls(k, n, bias=bias is not None, activation=activation, device="meta", dtype=weight.dtype)
        out.values, out.meta = weight.values, weight.meta
        if bias is not None:
            out.bias = nn.Parameter(bias.detach(), requires_grad=False)
        return out

    @property
    def packed(self) -> Sparse24Weight:
        """The packed weight as a Sparse24Weight (the same tensors, checked; for save/load or
        another layer), the one container of a 2:4 weight."""
        return Sparse24Weight(self.values, self.meta, (self.out_features, self.in_features))

    def forward(self, x: torch.Tensor, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """``rows=(start, stop)``: only output features [start, stop), multiples of 16 (a fused
        Q/K/V group's projection called on its own; through forward, so that hooks that move or
        load the weights, such as accelerate's offloading, run for it too)."""
        # The buffers and the bias read from nn.Module's dicts: through nn.Module.__getattr__ each
        # read is a Python call, 0.7 us on the dev CPU (torch 2.13), and this runs 48-72 times per
        # BERT-base forward; a stubbed SparseLinear(x) went 13.6-13.8 -> 11.5-12.2 us on the dev
        # CPU (bench/results/cpu/sparselinear_reads_ab.txt).
        buffers, params = self._buffers, self._parameters
        try:
            values, meta = buffers["values"], buffers["meta"]
        except KeyError:  # re-registered as parameters (setattr of an nn.Parameter): attributes
            values, meta = self.values, self.meta
        # a bias built as None (or later set to a plain tensor) is an ordinary attribute
        bias = params["bias"] if "bias" in params else self.bias
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"SparseLinear: input has {x.shape[-1]} features in its last dim, expected "
                f"in_features={self.in_features}"
            )
        if x.dtype != values.dtype and x.is_floating_point():
            # As nn.Linear under autocast: a float32 activation (e.g. from a LayerNorm kept in fp32)
            # meets fp16/bf16 weights in the weights' dtype; the output has the weights' dtype.
            x = x.to(values.dtype)
        if rows is None:
            # ops.linear checks a weight once while the same tensor objects hold the same memory
            # (its record), then only x; on sm90 a repeated shape takes the launch bound to the
            # weight (ops.gemm.bind)
            return ops.linear(x, values, meta, bias, self.activation)
        if self.activation in GATED:
            raise ValueError("SparseLinear: rows= selects output features of a plain layer; a "
                             "gated one's rows are interleaved gate and up pairs")
        start, stop = rows
        # slices made on every call: never recorded (ops.gemm._recordable)
        return ops.linear(x, values[start:stop], meta[start // 16:stop // 16],
                          None if bias is None else bias[start:stop], self.activation)

    def to_dense(self) -> torch.Tensor:
        """The dense weight [out_features, in_features], +0.0 at pruned positions (for inspection)."""
        return ops.decompress(self.values, self.meta)

    # ------------------------------------------------------------------------- state dict
    def get_extra_state(self) -> torch.Tensor:
        # A tensor, not a dict: safetensors stores tensors only. [layout version], and a second
        # element, INTERLEAVED_ROWS, where the rows are gate/up pairs (a gated activation).
        record = [LAYOUT_VERSION] + ([INTERLEAVED_ROWS] if self.activation in GATED else [])
        return torch.tensor(record, dtype=torch.int32)

    def set_extra_state(self, state: Any) -> None:
        problem = _record_problem(state, self.activation in GATED)
        if problem:
            raise ValueError(f"SparseLinear: {problem}")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        # A layout-1 checkpoint (values in mma.sp fragment order) is converted, as Sparse24Weight
        # converts it: one conversion for both (state_dict is load_state_dict's own copy).
        version_key = prefix + "_extra_state"
        if version_key in state_dict and prefix + "values" in state_dict:
            record = state_dict[version_key]
            if isinstance(record, torch.Tensor) and record.numel() == 1 and int(record) == 1:
                state_dict[prefix + "values"], version = natural_values(state_dict[prefix + "values"], 1)
                state_dict[version_key] = torch.tensor([version], dtype=torch.int32)
        # Checked here, before torch copies anything, so a mismatch is reported in terms of the
        # dense weight ([N, K]) rather than as a size mismatch of the packed buffers.
        problems = self._checkpoint_problems(state_dict, prefix, strict)
        if problems:
            error_msgs.extend(problems)
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def _checkpoint_problems(self, state_dict: dict[str, Any], prefix: str, strict: bool) -> list[str]:
        mine = (self.out_features, self.in_features)
        problems = []
        version_key = prefix + "_extra_state"
        if version_key in state_dict:
            problem = _record_problem(state_dict[version_key], self.activation in GATED)
            if problem:
                problems.append(f"{version_key}: {problem}")
        values = state_dict.get(prefix + "values")
        if values is None:
            if strict and prefix + "weight" in state_dict:
                problems.append(
                    f"{prefix}weight is a dense weight; this SparseLinear {list(mine)} expects a "
                    "packed one ('values', 'meta'). Load it into the dense model, then pack with "
                    "SparseLinear.from_linear or sparse24.nn.sparsify_"
                )
            return problems
        theirs = (values.shape[0], values.shape[1] * 2) if values.dim() == 2 else None
        if theirs != mine:
            shape = list(theirs) if theirs else f"values of shape {list(values.shape)}"
            problems.append(
                f"{prefix}values packs a {shape} weight (out_features x in_features) but this "
                f"SparseLinear is {list(mine)} (in_features={self.in_features}, "
                f"out_features={self.out_features})"
            )
            return problems
        meta = state_dict.get(prefix + "meta")
        problem = None if meta is None else meta_error(meta, *mine)
        if problem:
            problems.append(prefix + problem)
        return problems

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, activation={self.activation}, dtype={self.values.dtype}, "
            f"density={self._density()}, values={list(self.values.shape)}, "
            f"meta={list(self.meta.shape)} {self.meta.dtype}"
        )

    def _density(self) -> str:
        """Nonzero share of the dense weight: at most 0.50 for a 2:4 weight."""
        if self.values.is_meta:
            return "2:4"  # no data to count
        nonzero = int(torch.count_nonzero(self.values))
        return f"{nonzero / (self.out_features * self.in_features):.2f}"


# The second element of a layout record whose rows interleave gate and up projections.
INTERLEAVED_ROWS = 1


def _record_problem(state: Any, interleaved: bool) -> str | None:
    """None when ``state`` records this sparse24's layout version and the row order this layer
    has (``interleaved``: gate/up pairs of a gated activation), else what is wrong."""
    if isinstance(state, torch.Tensor) and state.numel() in (1, 2):
        record = [int(v) for v in state.reshape(-1).tolist()]
    elif isinstance(state, int):
        record = [state]
    else:
        return f"unrecognized layout version record {state!r}"
    problem = _version_problem(record[0])
    if problem:
        return problem
    if record[1:] not in ([], [INTERLEAVED_ROWS]):
        return f"unrecognized layout record {record} (a newer sparse24's?)"
    theirs = record[1:] == [INTERLEAVED_ROWS]
    if theirs != interleaved:
        which = {True: "interleaved gate and up rows (a gated activation)", False: "plain rows"}
        return (f"the checkpoint's packed weight has {which[theirs]}, this layer expects "
                f"{which[interleaved]}: it was saved by another structure (sparsify_'s "
                "fuse_gated_mlp); build the model the same way before loading")
    return None


def _version_problem(version: int) -> str | None:
    """None when ``version`` is this sparse24's layout version, else what is wrong."""
    if version != LAYOUT_VERSION:
        return (f"the checkpoint was packed with layout version {version}, this sparse24 reads "
                f"layout version {LAYOUT_VERSION}; repack it from the dense weights")
    return None
