"""SparseLinear: packing from nn.Linear, forward, dtype/device moves, state dict and safetensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from sparse24.layout import LAYOUT_VERSION, meta_shape
from sparse24.nn import SparseLinear
from sparse24.ops import compress, prune_24
from tolerances import REL_TOL, rel_err


# An odd number of atoms along N (48 = 3 x 16) and two 64-wide metadata chunks along K.
N, K = 48, 128

ACTS = {
    None: lambda y: y,
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda y: F.gelu(y, approximate="tanh"),
}


def pruned_linear(n: int = N, k: int = K, bias: bool = True, dtype=torch.float32) -> nn.Linear:
    lin = nn.Linear(k, n, bias=bias, dtype=dtype)
    with torch.no_grad():
        lin.weight.copy_(prune_24(torch.randn(n, k, dtype=dtype)))
        if bias:
            lin.bias.copy_(torch.randn(n, dtype=dtype))
    return lin


@pytest.mark.parametrize("activation", [None, "relu", "gelu", "gelu_tanh"])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_matches_dense_linear(seed, activation, bias):
    lin = pruned_linear(bias=bias)
    sparse = SparseLinear.from_linear(lin, activation=activation)
    assert (sparse.in_features, sparse.out_features, sparse.activation) == (K, N, activation)
    x = torch.randn(3, 5, K)  # leading batch dims are kept
    want = ACTS[activation](F.linear(x.double(), lin.weight.double(),
                                     lin.bias.double() if bias else None))
    got = sparse(x)
    assert got.shape == (3, 5, N) and got.dtype == x.dtype
    assert rel_err(got, want) < REL_TOL[torch.float32]


def test_forward_reads_the_weight_and_bias_however_they_were_set(seed):
    """forward reads values, meta and bias from nn.Module's dicts (fast): whatever way they were
    set, it uses what attribute access gives. A bias built as None and later set to a plain
    tensor is an ordinary attribute; values and meta set as nn.Parameters move out of the
    buffers; a Parameter bias set to None is None."""
    lin = pruned_linear()
    x = torch.randn(4, K)
    want = F.linear(x.double(), lin.weight.double(), lin.bias.double())
    no_bias = SparseLinear.from_linear(pruned_linear(bias=False))
    no_bias.values, no_bias.meta = compress(lin.weight.detach())
    no_bias.bias = lin.bias.detach().clone()  # a plain tensor: not a parameter
    assert "bias" not in no_bias._parameters
    assert rel_err(no_bias(x), want) < REL_TOL[torch.float32]
    moved = SparseLinear.from_linear(lin)
    values, meta = moved.values, moved.meta
    moved.values = nn.Parameter(values, requires_grad=False)
    moved.meta = nn.Parameter(meta, requires_grad=False)
    assert "values" not in moved._buffers and "meta" in moved._parameters
    assert rel_err(moved(x), want) < REL_TOL[torch.float32]
    moved.bias = None
    assert rel_err(moved(x), want - lin.bias.double()) < REL_TOL[torch.float32]


def test_to_dense_is_the_weight_bit_for_bit(seed):
    w = prune_24(torch.randn(N, K))
    w[w == 0] = 0.0  # +0.0 where pruned
    lin = nn.Linear(K, N)
    with torch.no_grad():
        lin.weight.copy_(w)
    dense = SparseLinear.from_linear(lin).to_dense()
    assert dense.dtype == w.dtype and torch.equal(dense.view(torch.int32), w.view(torch.int32))


def test_from_linear_prune_prunes_a_copy(seed):
    lin = nn.Linear(K, N)
    before = lin.weight.detach().clone()
    sparse = SparseLinear.from_linear(lin, prune=True)
    assert torch.equal(sparse.to_dense(), prune_24(before))
    assert torch.equal(lin.weight, before), "from_linear must not modify the Linear it reads"
    assert torch.equal(sparse.bias, lin.bias) and sparse.bias.data_ptr() != lin.bias.data_ptr()


def test_from_linear_refuses_a_dense_weight(seed):
    with pytest.raises(ValueError, match=r"not 2:4 sparse.*prune=True"):
        SparseLinear.from_linear(nn.Linear(K, N))


@pytest.mark.parametrize("n, k, rule", [(24, 64, "N=24"), (32, 96, "K=96")])
def test_shapes_the_kernels_cannot_pack_are_refused(n, k, rule):
    with pytest.raises(ValueError, match=rule):
        SparseLinear(k, n)
    with pytest.raises(ValueError, match=rule):
        SparseLinear.from_linear(nn.Linear(k, n), prune=True)


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        SparseLinear(K, N, activation="swish")



def test_a_gated_layer_returns_half_its_rows(seed):
    """A gated activation: the rows interleave gate and up (sparse24.layout), the output is
    act(gate) * up with half as many features, and rows= (a plain layer's slices) is refused."""
    from sparse24.layout import interleave_gate_up

    gate, up = pruned_linear(), pruned_linear()
    rows = nn.Linear(K, 2 * N, bias=False)
    with torch.no_grad():
        rows.weight.copy_(interleave_gate_up(gate.weight, up.weight))
    sparse = SparseLinear.from_linear(rows, activation="swiglu")
    x = torch.randn(3, K)
    with torch.no_grad():
        want = F.silu(x @ gate.weight.t()) * (x @ up.weight.t())
        assert rel_err(sparse(x), want) < REL_TOL[torch.float32]
        with pytest.raises(ValueError, match="gated one's rows are interleaved"):
            sparse(x, rows=(0, 16))


def test_wrong_input_width_is_named(seed):
    sparse = SparseLinear.from_linear(pruned_linear())
    with pytest.raises(ValueError, match=f"expected in_features={K}"):
        sparse(torch.randn(2, K + 64))


def test_fresh_module_holds_a_valid_zero_weight(seed):
    sparse = SparseLinear(K, N)
    zero_values, zero_meta = compress(torch.zeros(N, K))
    assert torch.equal(sparse.meta, zero_meta)
    assert torch.equal(sparse.values, zero_values)
    assert torch.equal(sparse(torch.randn(4, K)), torch.zeros(4, N))


def test_buffers_parameters_and_state_dict_keys(seed):
    sparse = SparseLinear.from_linear(pruned_linear())
    assert dict(sparse.named_buffers()).keys() == {"values", "meta"}
    assert [name for name, _ in sparse.named_parameters()] == ["bias"]
    assert not sparse.bias.requires_grad  # the packed weight beside it does not train either
    sd = sparse.state_dict()
    assert sd.keys() == {"values", "meta", "bias", "_extra_state"}
    assert sd["meta"].dtype == torch.int32 and tuple(sd["meta"].shape) == meta_shape(N, K)
    assert sd["_extra_state"].tolist() == [LAYOUT_VERSION]


@pytest.mark.parametrize("activation", [None, "gelu"])
def test_state_dict_round_trip(seed, activation):
    src = SparseLinear.from_linear(pruned_linear(), activation=activation)
    dst = SparseLinear(K, N, activation=activation)
    dst.load_state_dict(src.state_dict())
    x = torch.randn(7, K)
    assert torch.equal(dst(x), src(x))
    assert torch.equal(dst.to_dense(), src.to_dense())


def test_safetensors_round_trip(seed, tmp_path):
    src = SparseLinear.from_linear(pruned_linear(), activation="relu")
    path = tmp_path / "layer.safetensors"
    save_file(src.state_dict(), str(path))
    dst = SparseLinear(K, N, activation="relu")
    dst.load_state_dict(load_file(str(path)))
    x = torch.randn(7, K)
    assert torch.equal(dst(x), src(x))
    assert torch.equal(dst.meta, src.meta) and dst.meta.dtype == torch.int32


def test_loading_another_shape_names_both_shapes(seed):
    sd = SparseLinear.from_linear(pruned_linear(N, K)).state_dict()
    shapes = r"values packs a \[48, 128\] weight .* this SparseLinear is \[32, 64\]"
    with pytest.raises(RuntimeError, match=shapes):
        SparseLinear(64, 32).load_state_dict(sd)


def test_loading_another_layout_version_is_refused(seed):
    sd = SparseLinear.from_linear(pruned_linear()).state_dict()
    sd["_extra_state"] = torch.tensor([LAYOUT_VERSION + 1], dtype=torch.int32)
    versions = f"layout version {LAYOUT_VERSION + 1}, this sparse24 reads layout version {LAYOUT_VERSION}"
    with pytest.raises(RuntimeError, match=versions):
        SparseLinear(K, N).load_state_dict(sd)
    with pytest.raises(ValueError, match="layout version"):
        SparseLinear(K, N).set_extra_state(torch.tensor([LAYOUT_VERSION + 1]))


def test_loading_without_layout_version_fails_when_strict(seed):
    sd = SparseLinear.from_linear(pruned_linear()).state_dict()
    del sd["_extra_state"]
    with pytest.raises(RuntimeError, match="_extra_state"):
        SparseLinear(K, N).load_state_dict(sd)


def test_loading_cast_meta_is_refused(seed):
    sd = SparseLinear.from_linear(pruned_linear()).state_dict()
    sd["meta"] = sd["meta"].float()
    with pytest.raises(RuntimeError, match="meta is torch.float32 .* int32 meta"):
        SparseLinear(K, N).load_state_dict(sd)


def test_loading_a_dense_checkpoint_says_to_pack_it(seed):
    with pytest.raises(RuntimeError, match="dense weight.*from_linear"):
        SparseLinear(K, N).load_state_dict(nn.Linear(K, N).state_dict())


@pytest.mark.parametrize("cast", ["to_bf16", "half"])
def test_dtype_casts_keep_meta_int32(seed, cast):
    src = SparseLinear.from_linear(pruned_linear(), activation="gelu")
    meta_before, x = src.meta.clone(), torch.randn(6, K)
    want = src(x)
    low = src.to(torch.bfloat16) if cast == "to_bf16" else src.half()
    dtype = torch.bfloat16 if cast == "to_bf16" else torch.float16
    assert low.values.dtype == dtype and low.bias.dtype == dtype
    assert low.meta.dtype == torch.int32 and torch.equal(low.meta, meta_before)
    got = low(x.to(dtype))
    assert got.dtype == dtype
    assert rel_err(got, want) < REL_TOL[dtype]


def test_to_device_moves_every_buffer(seed):
    sparse = SparseLinear.from_linear(pruned_linear()).to("meta")
    assert {t.device.type for t in sparse.state_dict().values() if t.device.type != "cpu"} == {"meta"}
    assert sparse.values.is_meta and sparse.meta.is_meta and sparse.meta.dtype == torch.int32
    assert "density=2:4" in repr(sparse)  # no data to count on the meta device


def test_repr_is_readable(seed):
    sparse = SparseLinear.from_linear(pruned_linear(), activation="gelu_tanh")
    text = repr(sparse)
    for part in (f"in_features={K}", f"out_features={N}", "bias=True", "activation=gelu_tanh",
                 "dtype=torch.float32", "density=0.50", f"values=[{N}, {K // 2}]",
                 f"meta={list(meta_shape(N, K))} torch.int32"):
        assert part in text, (part, text)
    # A weight sparser than 2:4 shows its real density.
    lin = pruned_linear()
    with torch.no_grad():
        lin.weight[: N // 2] = 0
    assert "density=0.25" in repr(SparseLinear.from_linear(lin))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_forward_matches_cpu_reference(seed, dtype):
    lin = pruned_linear(dtype=torch.float32)
    sparse = SparseLinear.from_linear(lin, activation="gelu").to("cuda", dtype)
    assert sparse.meta.dtype == torch.int32 and sparse.meta.is_cuda
    x = torch.randn(33, K)
    w, b = sparse.to_dense().cpu().double(), sparse.bias.cpu().double()
    want = F.gelu(F.linear(x.to(dtype).double(), w, b))
    got = sparse(x.to("cuda", dtype))
    assert rel_err(got.cpu(), want) < REL_TOL[dtype]


def test_input_of_another_float_dtype_is_cast_to_the_weights(device, seed):
    """A float32 activation (a LayerNorm kept in fp32 under autocast) meets fp16 packed weights."""
    from sparse24.nn import SparseLinear

    linear = torch.nn.Linear(128, 64).half().to(device)
    layer = SparseLinear.from_linear(linear, prune=True)
    x = torch.randn(5, 128, device=device)
    y = layer(x)
    assert y.dtype == torch.float16
    assert torch.equal(y, layer(x.half()))


def test_a_layout_1_checkpoint_is_converted_on_loading(seed):
    """Layout 1 held the values in mma.sp fragment order: loaded, they are put in natural order
    (the conversion Sparse24Weight uses), so the module computes what it did when saved."""
    from sparse24.reference import _values_to_fragment_order

    layer = SparseLinear.from_linear(pruned_linear())
    old = layer.state_dict()
    old["values"] = _values_to_fragment_order(old["values"])
    old["_extra_state"] = torch.tensor([1], dtype=torch.int32)
    loaded = SparseLinear(K, N)
    loaded.load_state_dict(old)
    assert torch.equal(loaded.values, layer.values) and torch.equal(loaded.meta, layer.meta)
    assert loaded.state_dict()["_extra_state"].tolist() == [LAYOUT_VERSION]


def test_one_container_both_ways(seed):
    from sparse24 import Sparse24Weight

    dense = pruned_linear()
    layer = SparseLinear.from_linear(dense, activation="relu")
    weight = layer.packed
    assert isinstance(weight, Sparse24Weight) and weight.shape == (N, K)
    assert weight.values is layer.values and weight.meta is layer.meta
    again = SparseLinear.from_weight(weight, dense.bias.detach(), activation="relu")
    x = torch.randn(3, K)
    assert torch.equal(again(x), layer(x))
    # a SparseLinear's state dict is read by Sparse24Weight too, prefixed as in a model
    state = {f"block.{k}": v for k, v in layer.state_dict().items()}
    read = Sparse24Weight.from_state_dict(state, prefix="block.")
    assert torch.equal(read.values, layer.values) and read.shape == (N, K)
    with pytest.raises(ValueError, match="bias has shape"):
        SparseLinear.from_weight(weight, torch.zeros(N + 1))


def _spy_checked_calls(monkeypatch) -> list:
    """Records each call of linear()'s short path (the weight checked in an earlier call) that
    no bound launch served (on the CPU: every one)."""
    from sparse24.ops import gemm

    calls = []
    real = gemm.linear_on_checked_weight
    monkeypatch.setattr(gemm, "linear_on_checked_weight", lambda *a: calls.append(a) or real(*a))
    return calls


def test_a_weight_is_checked_once_until_it_changes(seed, monkeypatch):
    """forward checks the weight (values, meta, bias, activation) on its first call and then
    only x, while the same tensors hold the same memory (address, shape, strides, dtype); a
    buffer replaced, a bias whose data changed under the same object (.data =, as .to() does
    to a parameter; even at the same address), or another activation is checked again, and a
    bad one is refused by name, never run."""
    calls = _spy_checked_calls(monkeypatch)
    lin = pruned_linear()
    sparse = SparseLinear.from_linear(lin)
    x = torch.randn(2, 3, K)
    first = sparse(x)
    assert not calls
    assert torch.equal(sparse(x), first) and len(calls) == 1
    good = sparse.bias.data
    sparse.bias.data = torch.randn(N + 16)  # same object, other data: checked again
    with pytest.raises(ValueError, match=r"bias has shape \(64,\), expected \(48,\)"):
        sparse(x)
    sparse.bias.data = good
    assert torch.equal(sparse(x), first) and torch.equal(sparse(x), first)
    made = len(calls)
    # the same address, fewer elements: the address alone would not tell
    sparse.bias.data = torch.empty(0).set_(good.untyped_storage(), 0, (N - 16,), (1,))
    assert sparse.bias.data_ptr() == good.data_ptr()
    with pytest.raises(ValueError, match=r"bias has shape \(32,\), expected \(48,\)"):
        sparse(x)
    sparse.bias.data = good
    sparse.meta = sparse.meta[:, :1].contiguous()  # a new buffer of the wrong shape
    with pytest.raises(ValueError, match="meta does not match values"):
        sparse(x)
    sparse.meta = compress(lin.weight.detach())[1]
    assert torch.equal(sparse(x), first)
    sparse.activation = "bogus"
    with pytest.raises(ValueError, match="unknown activation 'bogus'"):
        sparse(x)
    assert len(calls) == made


def test_a_checked_weight_still_checks_x(seed, monkeypatch):
    """The short path checks x: an integer x is refused by name, an x that requires grad takes
    the op (whose backward refuses), and the output matches the full path's."""
    from sparse24.ops.gemm import NO_BACKWARD

    calls = _spy_checked_calls(monkeypatch)
    sparse = SparseLinear.from_linear(pruned_linear())
    x = torch.randn(4, K)
    want = sparse(x)
    with pytest.raises(TypeError, match="x is torch.int64 but the packed weight is torch.float32"):
        sparse(torch.ones(4, K, dtype=torch.int64))
    assert len(calls) == 1
    trained = x.clone().requires_grad_()
    y = sparse(trained)
    assert torch.equal(y.detach(), want) and y.requires_grad
    with pytest.raises(RuntimeError, match="has no backward"):
        y.sum().backward()
    assert NO_BACKWARD.startswith("sparse24.linear has no backward")


def test_the_checked_record_keeps_no_weight_alive_and_is_not_saved(seed, tmp_path):
    """linear()'s record of a checked weight holds weak references: a weight replaced is freed;
    torch.save of the module and copy.deepcopy carry no record (a copy's tensors are checked on
    its first call)."""
    from sparse24.ops import gemm

    import copy
    import gc
    import weakref

    sparse = SparseLinear.from_linear(pruned_linear())
    x = torch.randn(4, K)
    want = sparse(x)
    old = weakref.ref(sparse.values)
    sparse.values = sparse.values.clone()
    gc.collect()
    assert old() is None
    sparse(x)
    path = tmp_path / "layer.pt"
    torch.save(sparse, path)
    loaded = torch.load(path, weights_only=False)
    assert not _recorded(gemm, loaded) and torch.equal(loaded(x), want) and _recorded(gemm, loaded)
    twin = copy.deepcopy(sparse)
    assert not _recorded(gemm, twin) and torch.equal(twin(x), want) and _recorded(gemm, twin)


def _recorded(gemm, layer) -> bool:
    """Whether linear() holds a record of this layer's weight."""
    return (id(layer.values), id(layer.meta), id(layer.bias), layer.activation) in gemm._checked


def test_a_subclass_weight_sees_every_call_through_the_op(seed):
    """A weight of a tensor subclass (a __torch_function__ wrapper here; a DTensor or an
    offloading wrapper alike) takes linear()'s op path on every call, never the short path of a
    checked plain weight, so the subclass sees each call."""
    import sparse24.ops as ops_module

    class Watched(torch.Tensor):
        seen: list = []

        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            cls.seen.append(func)
            return super().__torch_function__(func, types, args, kwargs or {})

    sparse = SparseLinear.from_linear(pruned_linear())
    sparse.values = sparse.values.as_subclass(Watched)
    x = torch.randn(3, K)
    want = None
    for _ in range(3):
        Watched.seen.clear()
        got = sparse(x)
        assert any(func is ops_module.gemm._linear_op for func in Watched.seen)
        want = got if want is None else want
        assert torch.equal(got.as_subclass(torch.Tensor), want.as_subclass(torch.Tensor))
    from sparse24.ops import gemm

    assert not _recorded(gemm, sparse)


def test_the_short_path_checks_x_width(seed):
    """linear_on_checked_weight, the short path, takes an x of the weight's width only: another
    width (or a 0-d x) goes to linear(), whose check names it."""
    from sparse24.ops.gemm import linear_on_checked_weight

    sparse = SparseLinear.from_linear(pruned_linear())
    sparse(torch.randn(2, K))
    with pytest.raises(ValueError, match=f"x's last dim must be in_features={K}"):
        linear_on_checked_weight(torch.randn(2, K + 64), sparse.values, sparse.meta, sparse.bias, None)
    with pytest.raises(ValueError, match="x has shape"):
        linear_on_checked_weight(torch.tensor(1.0), sparse.values, sparse.meta, sparse.bias, None)
