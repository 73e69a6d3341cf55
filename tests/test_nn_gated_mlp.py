"""sparsify_(model, fuse_gated_mlp=True): Llama-style MLPs run as one GEMM with act(gate) * up in
its epilogue (sparse24/nn/gated_mlp.py): which blocks qualify, what they compute, checkpoints."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sparse24 import ops
from sparse24.layout import interleave_gate_up
from sparse24.nn import SparseGatedMLP, SparseLinear, sparsify_
from sparse24.weight import Sparse24Weight
from tolerances import REL_TOL, rel_err

IN, HIDDEN = 128, 64


class LlamaStyleMLP(nn.Module):
    """down_proj(act_fn(gate_proj(x)) * up_proj(x)), as transformers' LlamaMLP."""

    def __init__(self, act: nn.Module | None = None, bias: bool = False):
        super().__init__()
        self.gate_proj, self.up_proj = (nn.Linear(IN, HIDDEN, bias=bias) for _ in range(2))
        self.down_proj = nn.Linear(HIDDEN, IN, bias=bias)
        self.act_fn = act if act is not None else nn.SiLU()
        with torch.no_grad():
            for m in (self.gate_proj, self.up_proj, self.down_proj):
                m.weight.copy_(ops.prune_24(m.weight))

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class DoubledMLP(LlamaStyleMLP):
    def forward(self, x):  # the same children, another computation
        return 2 * super().forward(x)


class DropoutMLP(LlamaStyleMLP):
    def __init__(self):
        super().__init__()
        self.dropout = nn.Dropout(0.0)


class Layer(nn.Module):
    def __init__(self, mlp: nn.Module):
        super().__init__()
        self.mlp = mlp

    def forward(self, x):
        return x + self.mlp(x)


def sparsified(mlp: nn.Module, **kwargs):
    dense = Layer(mlp).eval()
    sparse = copy.deepcopy(dense)
    return dense, sparse, sparsify_(sparse, fuse_gated_mlp=True, **kwargs)


@pytest.mark.parametrize("act, gated", [(nn.SiLU(), "swiglu"), (nn.GELU(), "geglu"),
                                        (nn.GELU(approximate="tanh"), "geglu_tanh"),
                                        (nn.ReLU(), "reglu")])
@pytest.mark.parametrize("bias", [False, True])
def test_mlp_runs_as_one_gated_gemm(act, gated, bias, seed):
    dense, sparse, report = sparsified(LlamaStyleMLP(act, bias))
    block = sparse.mlp
    assert isinstance(block, SparseGatedMLP) and block.gate_up.activation == gated
    assert report.fused == {"mlp.gate_up": gated}
    assert f"with {gated} in its epilogue" in report.grouped["mlp"]
    assert sorted(report.swapped) == ["mlp.down_proj", "mlp.gate_proj", "mlp.up_proj"]
    weights = interleave_gate_up(dense.mlp.gate_proj.weight, dense.mlp.up_proj.weight).detach()
    assert torch.equal(block.gate_up.values, ops.compress(weights)[0])
    assert isinstance(block.down_proj, SparseLinear)  # swapped on its own, in its new place
    x = torch.randn(2, 5, IN)
    with torch.no_grad():
        assert rel_err(sparse(x), dense(x)) < REL_TOL[torch.float32]


def test_on_by_default_and_without_it_gate_up_is_grouped(seed):
    default = Layer(LlamaStyleMLP())
    sparsify_(default)
    assert isinstance(default.mlp, SparseGatedMLP)
    dense = Layer(LlamaStyleMLP())
    report = sparsify_(dense, fuse_gated_mlp=False)
    assert not isinstance(dense.mlp, SparseGatedMLP) and hasattr(dense.mlp, "gate_up")
    assert "with" not in report.grouped["mlp"]


@pytest.mark.parametrize("mlp, reason", [
    (DoubledMLP(), "differs from down_proj(act_fn(gate_proj(x)) * up_proj(x))"),
    (DropoutMLP(), "not exactly"),
    (LlamaStyleMLP(nn.Tanh()), "Tanh, which has no gated epilogue"),
])
def test_blocks_that_break_a_rule_keep_their_forward(mlp, reason, seed):
    """Each falls back to the gate_up grouping (its own forward, the same outputs)."""
    dense, sparse, report = sparsified(mlp)
    assert reason in report.not_grouped["mlp"]
    assert not isinstance(sparse.mlp, SparseGatedMLP) and hasattr(sparse.mlp, "gate_up")
    x = torch.randn(3, IN)
    with torch.no_grad():
        assert rel_err(sparse(x), dense(x)) < REL_TOL[torch.float32]


def test_hooks_on_a_projection_refuse_and_hooks_on_the_block_move(seed):
    """Hooks on gate_proj, up_proj or act_fn refuse the replacement; the block's and down_proj's
    stay (moved with them), and neither sees the forward probe sparsify_ runs."""
    hooked = LlamaStyleMLP()
    hooked.up_proj.register_forward_hook(lambda *args: None)
    _, sparse, report = sparsified(hooked)
    assert "up_proj have forward hooks" in report.not_grouped["mlp"]
    seen = []
    block = LlamaStyleMLP()
    block.register_forward_hook(lambda module, args, out: seen.append(("block", out.shape)))
    block.down_proj.register_forward_hook(lambda module, args, out: seen.append(("down", out.shape)))
    layer = Layer(block)
    sparsify_(layer, fuse_gated_mlp=True)
    assert isinstance(layer.mlp, SparseGatedMLP) and seen == []  # the probe ran no hook
    with torch.no_grad():
        layer(torch.randn(3, IN))
    assert seen == [("down", (3, IN)), ("block", (3, IN))]


def test_a_block_in_two_places_keeps_its_forward(seed):
    """A block reached through two parents would be replaced at one only: it is not."""
    shared = LlamaStyleMLP()
    model = nn.ModuleDict({"a": Layer(shared), "b": Layer(shared)})
    dense = copy.deepcopy(model)
    report = sparsify_(model, fuse_gated_mlp=True)
    assert "more than one parent" in report.not_grouped["a.mlp"]
    assert model["a"].mlp is model["b"].mlp and not isinstance(model["a"].mlp, SparseGatedMLP)
    x = torch.randn(3, IN)
    with torch.no_grad():
        for name in ("a", "b"):
            assert rel_err(model[name](x), dense[name](x)) < REL_TOL[torch.float32]


def test_checkpoints_keep_their_row_order(seed):
    """The gated layer's state loads into the same structure, and neither form (interleaved
    rows, plain gate_up rows) loads the other's: the record says which it is."""
    _, gated, _ = sparsified(LlamaStyleMLP())
    plain = Layer(LlamaStyleMLP())
    sparsify_(plain, fuse_gated_mlp=False)
    state = gated.state_dict()
    assert state["mlp.gate_up._extra_state"].tolist() == [2, 1]
    assert set(state) == set(plain.state_dict())  # the same keys
    _, again, _ = sparsified(LlamaStyleMLP())
    again.load_state_dict(state)
    x = torch.randn(3, IN)
    with torch.no_grad():
        assert torch.equal(again(x), gated(x))
    with pytest.raises(RuntimeError, match="interleaved gate and up rows"):
        plain.load_state_dict(state)
    with pytest.raises(RuntimeError, match="expects interleaved gate and up rows"):
        again.load_state_dict(plain.state_dict())
    future = dict(state, **{"mlp.gate_up._extra_state": torch.tensor([2, 7], dtype=torch.int32)})
    with pytest.raises(RuntimeError, match=r"unrecognized layout record \[2, 7\]"):
        again.load_state_dict(future)
    with pytest.raises(ValueError, match="gated layer's packed weight"):
        Sparse24Weight.from_state_dict(state, prefix="mlp.gate_up.")


def test_llama_with_gated_mlps_round_trips(seed, tmp_path):
    transformers = pytest.importorskip("transformers")
    from test_nn_sparsify import pruned

    dense = pruned("llama")
    model = copy.deepcopy(dense)
    report = sparsify_(model, fuse_gated_mlp=True)
    assert report.fused == {f"model.layers.{i}.mlp.gate_up": "swiglu" for i in range(2)}
    assert all(isinstance(layer.mlp, SparseGatedMLP) for layer in model.model.layers)
    ids = torch.randint(0, 100, (2, 7))
    with torch.no_grad():
        assert rel_err(model(ids).logits, dense(ids).logits) < REL_TOL[torch.float32]
    model.save_pretrained(tmp_path)
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert all(isinstance(layer.mlp, SparseGatedMLP) for layer in loaded.model.layers)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
