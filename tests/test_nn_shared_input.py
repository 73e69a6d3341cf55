"""Q/K/V packed as one SparseLinear (sparse24/nn/shared_input.py): packing, call patterns, checkpoints."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sparse24 import ops
from sparse24.nn import SparseLinear, sparsify_
from sparse24.nn.shared_input import FUSED_NAME, ProjectionSlice
from tolerances import REL_TOL, rel_err

IN, OUT = 128, 64


class SelfAttentionLike(nn.Module):
    """The call pattern of Hugging Face's self-attention: query, key, value on one tensor."""

    def __init__(self, bias: bool = True):
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(IN, OUT, bias=bias) for _ in range(3))
        with torch.no_grad():
            for m in (self.query, self.key, self.value):
                m.weight.copy_(ops.prune_24(m.weight))

    def forward(self, x, other=None):
        kv = x if other is None else other  # other: cross-attention's encoder states
        return torch.cat([self.query(x), self.key(kv), self.value(kv)], dim=-1)


def fused_pair(bias: bool = True):
    dense = SelfAttentionLike(bias)
    sparse = copy.deepcopy(dense)
    report = sparsify_(sparse)
    return dense, sparse, report


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
    x, other = torch.randn(2, 5, IN), torch.randn(2, 5, IN)
    with torch.no_grad():
        for args in ((x,), (x, other)):  # one input; key and value on another tensor
            want = dense(*args)
            assert rel_err(sparse(*args), want) < REL_TOL[torch.float32], args[-1].shape
    assert sparse.query._stash == [None]  # nothing kept after a forward


def test_a_slice_on_a_new_tensor_never_reuses_the_stash(seed):
    """key called on another tensor than query's must not return query's fused output."""
    dense, sparse, _ = fused_pair()
    a, b = torch.randn(3, IN), torch.randn(3, IN)
    with torch.no_grad():
        sparse.query(a)
        got_key, got_value = sparse.key(b), sparse.value(b)
        assert rel_err(got_key, dense.key(b)) < REL_TOL[torch.float32]
        assert rel_err(got_value, dense.value(b)) < REL_TOL[torch.float32]
        # value alone (the last slice, nothing stashed): its own rows only
        assert rel_err(sparse.value(a), dense.value(a)) < REL_TOL[torch.float32]


def test_state_dict_keeps_the_unfused_keys_both_ways(seed):
    dense, fused, _ = fused_pair()
    unfused = copy.deepcopy(dense)
    sparsify_(unfused, fuse_qkv=False)
    assert isinstance(unfused.query, SparseLinear)
    fused_state, unfused_state = fused.state_dict(), unfused.state_dict()
    assert fused_state.keys() == unfused_state.keys()
    for key in unfused_state:
        assert torch.equal(fused_state[key], unfused_state[key]), key
    x = torch.randn(4, IN)
    target = copy.deepcopy(fused)
    with torch.no_grad():
        for m in target.modules():
            if isinstance(m, SparseLinear):
                m.bias.normal_()  # scrambled, so a load that does nothing is caught
        assert rel_err(target(x), fused(x)) > 0.1
        target.load_state_dict(unfused_state)  # an unfused checkpoint into the fused model
        assert torch.equal(target(x), fused(x))
        unfused.load_state_dict(fused_state)  # and back
        assert torch.equal(unfused(x), fused(x))


def test_not_grouped_when_a_projection_stays_dense(seed):
    _, sparse, report = (lambda d: (d, d, sparsify_(d, filter_fn=lambda m, fqn: fqn != "key")))(
        SelfAttentionLike())
    assert "" in report.not_grouped and not report.grouped
    assert isinstance(sparse.query, SparseLinear) and type(sparse.key) is nn.Linear
