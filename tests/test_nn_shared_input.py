"""Q/K/V packed as one SparseLinear (sparse24/nn/shared_input.py): packing, call patterns, checkpoints."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sparse24 import ops
from sparse24.nn import SparseLinear, sparsify_
from sparse24.nn.shared_input import FUSED_NAME, GATE_UP_NAME, ProjectionSlice
from tolerances import REL_TOL, rel_err

IN, OUT = 128, 64


class SelfAttentionLike(nn.Module):
    """The call pattern of Hugging Face's attention (4.x): query, key, value on the block's input,
    key and value on the encoder's states when the block is given them (cross-attention)."""

    def __init__(self, bias: bool = True):
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(IN, OUT, bias=bias) for _ in range(3))
        with torch.no_grad():
            for m in (self.query, self.key, self.value):
                m.weight.copy_(ops.prune_24(m.weight))

    def forward(self, hidden_states, encoder_hidden_states=None):
        kv = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        return torch.cat([self.query(hidden_states), self.key(kv), self.value(kv)], dim=-1)


class QueryKeyOnly(SelfAttentionLike):
    """A block that never calls value."""

    def forward(self, hidden_states):
        return torch.cat([self.query(hidden_states), self.key(hidden_states)], dim=-1)


class GatedMLP(nn.Module):
    """A Llama-style MLP: down(silu(gate(x)) * up(x))."""

    def __init__(self, bias: bool = False):
        super().__init__()
        self.gate_proj, self.up_proj = (nn.Linear(IN, OUT, bias=bias) for _ in range(2))
        self.down_proj = nn.Linear(OUT, IN, bias=bias)
        with torch.no_grad():
            for m in (self.gate_proj, self.up_proj, self.down_proj):
                m.weight.copy_(ops.prune_24(m.weight))

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


def fused_pair(bias: bool = True, cls=SelfAttentionLike):
    dense = cls(bias)
    sparse = copy.deepcopy(dense)
    report = sparsify_(sparse)
    return dense, sparse, report


def count_fused_calls(block, name: str = FUSED_NAME) -> list:
    """Shapes of the inputs of the fused GEMM's calls over all its rows (not one projection's)."""
    calls = []

    def hook(module, args, kwargs, output):
        if kwargs.get("rows") is None:
            calls.append(args[0].shape)

    getattr(block, name).register_forward_hook(hook, with_kwargs=True)
    return calls


def test_fused_weight_packs_like_the_concatenated_dense_weight(seed):
    dense, sparse, report = fused_pair()
    assert list(report.grouped) == [""] and "query+key+value -> qkv [192, 128]" in str(report)
    fused = getattr(sparse, FUSED_NAME)
    assert isinstance(fused, SparseLinear) and all(
        isinstance(getattr(sparse, n), ProjectionSlice) for n in ("query", "key", "value"))
    w = torch.cat([dense.query.weight, dense.key.weight, dense.value.weight]).detach()
    values, meta = ops.compress(w)
    assert torch.equal(fused.values, values) and torch.equal(fused.meta, meta)  # bit for bit
    assert torch.equal(fused.bias, torch.cat([dense.query.bias, dense.key.bias, dense.value.bias]))


@pytest.mark.parametrize("bias", [True, False])
def test_outputs_match_dense_for_self_and_cross_attention(seed, bias):
    dense, sparse, _ = fused_pair(bias)
    calls = count_fused_calls(sparse)
    x, other = torch.randn(2, 5, IN), torch.randn(2, 5, IN)
    with torch.no_grad():
        assert rel_err(sparse(x), dense(x)) < REL_TOL[torch.float32]
        assert len(calls) == 1  # self-attention: one fused GEMM for the three projections
        assert all(getattr(sparse, n)._slot is None for n in ("query", "key", "value"))  # nothing kept
        # cross-attention: query on x, key and value on other; the fused GEMM (3x the rows
        # that query needs) must not run
        assert rel_err(sparse(x, other), dense(x, other)) < REL_TOL[torch.float32]
        assert rel_err(sparse(x, encoder_hidden_states=other),
                       dense(x, encoder_hidden_states=other)) < REL_TOL[torch.float32]
        assert len(calls) == 1
        assert rel_err(sparse(x, x), dense(x)) < REL_TOL[torch.float32]  # the same tensor twice
        assert len(calls) == 2


def test_a_refilled_input_buffer_never_gets_a_stale_result(seed):
    """A block that calls query and key but not value, then runs again on its input buffer
    refilled in place (the fused output of the first call must not be reused)."""
    dense, sparse, report = fused_pair(cls=QueryKeyOnly)
    assert report.grouped
    buffer = torch.randn(4, IN)
    with torch.no_grad():
        sparse(buffer)
        buffer.copy_(torch.randn(4, IN))
        assert rel_err(sparse(buffer), dense(buffer)) < REL_TOL[torch.float32]


class ScalesItsInputMidway(SelfAttentionLike):
    """Modifies its own input in place between query and key (a user's block can)."""

    def forward(self, x, encoder_hidden_states=None):
        q = self.query(x)
        x.mul_(2)
        return q + self.key(x) + self.value(x)


def test_an_input_changed_in_place_between_projections_is_not_served_stale(seed):
    """Eager: the fused output computed for query is not reused for key and value once x has
    changed in place (its version counter moved): the GEMM runs again on the new values."""
    dense, sparse, report = fused_pair(cls=ScalesItsInputMidway)
    assert report.grouped
    calls = count_fused_calls(sparse)
    x = torch.randn(4, IN)
    with torch.no_grad():
        assert rel_err(sparse(x.clone()), dense(x.clone())) < REL_TOL[torch.float32]
    assert len(calls) == 2  # once for query, once more for key and value


def test_direct_calls_never_reuse_a_result(seed):
    dense, sparse, _ = fused_pair()
    calls = count_fused_calls(sparse)
    a, b = torch.randn(3, IN), torch.randn(3, IN)
    with torch.no_grad():
        sparse.query(a)
        a.add_(1)  # in place: the same tensor object, other values
        assert rel_err(sparse.value(a), dense.value(a)) < REL_TOL[torch.float32]
        assert rel_err(sparse.key(b), dense.key(b)) < REL_TOL[torch.float32]
        assert rel_err(sparse.query(b), dense.query(b)) < REL_TOL[torch.float32]
    assert not calls  # outside the block's forward each projection computes its own rows


def test_names_agree_between_buffers_parameters_and_state_dict(seed):
    _, sparse, _ = fused_pair()
    named = {n for n, _ in sparse.named_buffers()} | {n for n, _ in sparse.named_parameters()}
    state = {k for k in sparse.state_dict() if not k.endswith("_extra_state")}
    assert named == state == {f"{FUSED_NAME}.values", f"{FUSED_NAME}.meta", f"{FUSED_NAME}.bias"}


def test_an_unfused_checkpoint_loads_into_the_fused_model(seed):
    dense, fused, _ = fused_pair()
    unfused = copy.deepcopy(dense)
    sparsify_(unfused, fuse_qkv=False)
    assert isinstance(unfused.query, SparseLinear)
    x = torch.randn(4, IN)
    target = copy.deepcopy(fused)
    with torch.no_grad():
        getattr(target, FUSED_NAME).bias.normal_()  # scrambled, so a load that does nothing is caught
        assert rel_err(target(x), fused(x)) > 0.1
        target.load_state_dict(unfused.state_dict())  # query.values, key.values, ... joined
        assert torch.equal(target(x), fused(x))


def test_pickles_and_deep_copies(seed, tmp_path):
    _, sparse, _ = fused_pair()
    x = torch.randn(2, 3, IN)
    torch.save(sparse, tmp_path / "block.pt")
    loaded = torch.load(tmp_path / "block.pt", weights_only=False)
    calls = count_fused_calls(loaded)
    with torch.no_grad():
        assert torch.equal(loaded(x), sparse(x)) and torch.equal(copy.deepcopy(sparse)(x), sparse(x))
    assert len(calls) == 1 and loaded.query._fused is getattr(loaded, FUSED_NAME)


def test_forward_hooks_of_the_projections_survive(seed):
    dense = SelfAttentionLike()
    seen = []
    dense.key.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    dense.value.register_forward_pre_hook(lambda m, args: (args[0] * 2,))
    sparse = copy.deepcopy(dense)
    sparsify_(sparse)
    x = torch.randn(3, IN)
    with torch.no_grad():
        want = dense(x)
        got = sparse(x)
    assert len(seen) == 2 and rel_err(seen[1], seen[0]) < REL_TOL[torch.float32]
    assert rel_err(got, want) < REL_TOL[torch.float32]  # value's pre-hook doubled its input


def test_data_parallel_replicas_use_their_own_fused_module(seed):
    """nn.DataParallel copies each module's __dict__: a replica's slices must run the replica's
    qkv (on its GPU), not the original's, and keep their call state apart."""
    dense, sparse, _ = fused_pair()

    def replicate(module):  # as torch.nn.parallel.replicate, with copies of the parameters
        replica = module._replicate_for_data_parallel()
        replica._parameters = {k: nn.Parameter(p.detach().clone(), requires_grad=False)
                               for k, p in module._parameters.items()}
        replica._modules = {k: replicate(child) for k, child in module._modules.items()}
        return replica

    replica = replicate(sparse)
    own = replica._modules[FUSED_NAME]
    with torch.no_grad():
        own.bias.add_(1.0)  # tells the two fused modules apart by their outputs
        x, other = torch.randn(3, IN), torch.randn(3, IN)
        shifted = dense(x) + 1.0
        assert rel_err(replica(x), shifted) < REL_TOL[torch.float32]
        assert rel_err(replica(x, other), dense(x, other) + 1.0) < REL_TOL[torch.float32]
        assert rel_err(sparse(x), dense(x)) < REL_TOL[torch.float32]  # the original untouched
    assert replica.query._fused is own and sparse.query._fused is getattr(sparse, FUSED_NAME)


def test_hook_handles_taken_before_sparsify_still_remove_the_hooks(seed):
    dense = SelfAttentionLike()
    seen = []
    handle = dense.key.register_forward_hook(lambda m, i, o: seen.append(1))
    sparsify_(dense)
    with torch.no_grad():
        dense(torch.randn(2, IN))
        handle.remove()
        dense(torch.randn(2, IN))
    assert seen == [1]


@pytest.mark.parametrize("bias", [True, False])
def test_gate_and_up_run_as_one_gemm(seed, bias):
    dense, sparse, report = fused_pair(bias, cls=GatedMLP)
    assert "gate_proj+up_proj -> gate_up [128, 128]" in report.grouped[""]
    fused = getattr(sparse, GATE_UP_NAME)
    w = torch.cat([dense.gate_proj.weight, dense.up_proj.weight]).detach()
    assert torch.equal(fused.values, ops.compress(w)[0])
    assert isinstance(sparse.down_proj, SparseLinear)  # swapped on its own
    calls = count_fused_calls(sparse, GATE_UP_NAME)
    x = torch.randn(2, 3, IN)
    with torch.no_grad():
        assert rel_err(sparse(x), dense(x)) < REL_TOL[torch.float32]
        assert rel_err(sparse.up_proj(x), dense.up_proj(x)) < REL_TOL[torch.float32]
    assert len(calls) == 1
    names = {n for n, _ in sparse.named_buffers()}
    assert {f"{GATE_UP_NAME}.values", f"{GATE_UP_NAME}.meta"} <= names
    unfused = copy.deepcopy(dense)
    sparsify_(unfused, fuse_gate_up=False)
    assert isinstance(unfused.gate_proj, SparseLinear) and not hasattr(unfused, GATE_UP_NAME)


def test_cross_attention_blocks_are_not_grouped(seed):
    cls = type("BertCrossAttention", (SelfAttentionLike,), {})
    _, sparse, report = fused_pair(cls=cls)
    assert "cross-attention" in report.not_grouped[""] and not report.grouped
    assert isinstance(sparse.key, SparseLinear)


def test_not_grouped_when_a_projection_stays_dense(seed):
    _, sparse, report = (lambda d: (d, d, sparsify_(d, filter_fn=lambda m, fqn: fqn != "key")))(
        SelfAttentionLike())
    assert "" in report.not_grouped and not report.grouped
    assert isinstance(sparse.query, SparseLinear) and type(sparse.key) is nn.Linear


def test_inference_mode_keeps_the_fusion(seed):
    """Inference tensors have no version counter: the fused GEMM still runs once per block call."""
    dense, sparse, _ = fused_pair()
    calls = count_fused_calls(sparse)
    x = torch.randn(4, IN)
    with torch.inference_mode():
        assert rel_err(sparse(x), dense(x)) < REL_TOL[torch.float32]
    assert len(calls) == 1
