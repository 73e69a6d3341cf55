"""Records of checked weights and their bound launches (ops.gemm's records, wgmma.BoundLaunch,
ops.gemm.bind), through SparseLinear, linear() and the op, on a CPU: an sm90 plan whose
C launcher is a stand-in that computes y with the PyTorch reference from the tensors its kept
arguments name. What is checked is the plumbing the GPU cannot show apart from the kernel: which
calls take the bound launch, that they hand the launcher this call's x and y and the layer's
weight, and that every call it must not serve takes the general path and is still right."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparse24 import reference
from sparse24.tuning import cache as tuning_cache
from sparse24.nn import SparseLinear
from sparse24.ops import compress, device, gemm, prune_24, triton_internals, wgmma
from bound_checks import declined_x, spy_on_bound_launches, spy_on_the_general_path

N, K = 64, 128


class StandInLauncher:
    """A DescriptorLauncher's two entry points: a descriptor's arguments are the tensor itself
    (then shape and strides, as the real ones); the launch writes the reference result into y."""

    def __init__(self):
        self.launches = []
        self.descriptors = 0

    def descriptor_args(self, index, tensor):
        self.descriptors += 1
        return (tensor, *tensor.shape, *tensor.stride())

    def launch_expanded(self, grid0, stream, expanded, args, constexprs):
        values, x, y = expanded[0], expanded[5], expanded[10]
        meta_addr, bias_addr, n, k = args
        self.launches.append((x.data_ptr(), y.data_ptr(), meta_addr, bias_addr, x.stride()))
        weight = StandInLauncher.weight  # (values, meta, bias, activation) the test expects
        bias = weight[2] if bias_addr != y.data_ptr() else None
        assert values.data_ptr() == weight[0].data_ptr() and meta_addr == weight[1].data_ptr()
        assert bias is None or bias_addr == bias.data_ptr()
        assert (n, k) == (values.shape[0], 2 * values.shape[1])
        assert x.shape == (x.numel() // k, k) and y.shape == (x.shape[0], n)
        y.copy_(reference.linear_ref(x, values, weight[1], bias, weight[3]))


@pytest.fixture
def sm90_stand_in(monkeypatch):
    """Plans of CPU problems are sm90 PlannedLaunches whose direct launch is already learned, on
    a stand-in launcher; the CPU's device index (-1) is the 'current device'."""
    launcher = StandInLauncher()

    def plan(key):
        m, n, k, dtype, _ = key
        planned = wgmma.PlannedLaunch({"family": "wgmma", "BT": 16}, m, n, k, dtype,
                                      torch.device("cuda", 0))
        planned.device = -1
        for bias_dtype in (False, dtype, torch.float32):
            for activation in (0, 1):
                for low_meta in (True, False):  # meta's address below 2**31
                    planned.direct[(dtype, bias_dtype, activation, low_meta)] = (
                        launcher, 1, (), {}, {}, {})
        gemm._plans[key] = plan_ = (planned, {"family": "wgmma"}, True)
        return plan_

    monkeypatch.setattr(gemm, "_plan", plan)
    monkeypatch.setattr(gemm, "_plans", {})
    monkeypatch.setattr(gemm, "use_triton", lambda t: True)
    monkeypatch.setattr(device, "_current_cuda_device", lambda: -1)
    monkeypatch.setattr(triton_internals, "current_stream", lambda index: 0)
    monkeypatch.setattr(triton_internals, "direct_launch_allowed", lambda: True)
    monkeypatch.setattr(wgmma.PlannedLaunch, "__call__", _planned_call)
    monkeypatch.setattr(wgmma.PlannedLaunch, "binds", True)
    return launcher


def _planned_call(self, x2, values, meta, bias, y, activation, cfg):
    """PlannedLaunch.__call__ without its own kept arguments: the general path's launch."""
    launcher = self.direct[(values.dtype, bias is not None and bias.dtype, activation,
                            meta.data_ptr() < 2**31)][0]
    launcher.descriptor_args(0, values)  # counted as the real one would fill them
    launcher.launch_expanded(1, 0, (values, *values.shape, *values.stride(),
                                    wgmma._rows(x2), 0, 0, 0, 0, wgmma._rows(y), 0, 0, 0, 0),
                             (meta.data_ptr(), y.data_ptr() if bias is None else bias.data_ptr(),
                              self.n, self.k), ())


def _layer(bias=True, activation=None):
    lin = nn.Linear(K, N, bias=bias, dtype=torch.float16)
    with torch.no_grad():
        lin.weight.copy_(prune_24(torch.randn(N, K, dtype=torch.float16)))
    layer = SparseLinear.from_linear(lin, activation=activation)
    _expect(layer)
    return layer


def _expect(layer):
    """The stand-in launcher's launches must be of this layer's weight."""
    StandInLauncher.weight = (layer.values, layer.meta, layer.bias, layer.activation)


def _want(layer, x):
    return reference.linear_ref(x, layer.values, layer.meta, layer.bias, layer.activation)


def _bound(layer):
    """The launches linear()'s record of the layer's weight holds, by x's shape."""
    return gemm._checked[(id(layer.values), id(layer.meta), id(layer.bias), layer.activation)][4]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_a_layer_binds_each_shape_once_and_launches_it_directly(seed, sm90_stand_in, bias,
                                                                activation):
    """The first call checks the weight and plans; the second binds the plan to the weight and x's
    shape; later calls of that shape take the bound launch: the layer's weight, this call's x and
    a fresh, contiguous y reach the launcher, and y is the reference's. Another shape binds
    its own."""
    torch.set_grad_enabled(False)
    try:
        layer = _layer(bias, activation)
        for shape in ((2, 3, K), (5, K), (7, K), (2, 3, K)):
            for _ in range(3):
                x = torch.randn(shape, dtype=torch.float16)
                before = len(sm90_stand_in.launches)
                y = layer(x)
                assert len(sm90_stand_in.launches) == before + 1
                assert sm90_stand_in.launches[-1][:2] == (x.data_ptr(), y.data_ptr())
                assert y.shape == (*shape[:-1], N) and y.is_contiguous()
                assert torch.equal(y, _want(layer, x))
        bound = _bound(layer)
        assert set(bound) == {torch.Size((2, 3, K)), torch.Size((5, K)), torch.Size((7, K))}
        assert all(isinstance(b, wgmma.BoundLaunch) for b in bound.values())
    finally:
        torch.set_grad_enabled(True)


def test_the_bound_launch_serves_the_repeated_calls(seed, sm90_stand_in, monkeypatch):
    """From a shape's third call on, the general path (_linear_impl) is not entered."""
    torch.set_grad_enabled(False)
    try:
        layer = _layer()
        x = torch.randn(4, K, dtype=torch.float16)
        layer(x), layer(x)
        general = spy_on_the_general_path(monkeypatch)
        for _ in range(3):
            x = torch.randn(4, K, dtype=torch.float16)
            assert torch.equal(layer(x), _want(layer, x))
        assert not general
    finally:
        torch.set_grad_enabled(True)


@pytest.mark.parametrize("case", ["misaligned", "transposed", "int64", "requires_grad",
                                  "retuned", "hook", "other_device", "subclass"])
def test_calls_the_bound_launch_must_not_serve_take_the_general_path(seed, sm90_stand_in,
                                                                    monkeypatch, case):
    """An x that is misaligned, not contiguous, of another dtype or that autograd records;
    tuned configs changed since binding; a launch hook; another current device; an x of a
    tensor subclass: the bound launch declines, and the call takes the general path (through
    the op where autograd records it, whose backward refuses; or the check that names a wrong
    dtype)."""
    layer = _layer()
    x = torch.randn(6, K, dtype=torch.float16)
    with torch.no_grad():
        layer(x), layer(x)
    assert isinstance(_bound(layer)[x.shape], wgmma.BoundLaunch)
    offered = spy_on_bound_launches(monkeypatch, wgmma.BoundLaunch)
    general = spy_on_the_general_path(monkeypatch)
    grad = False
    if case in ("misaligned", "transposed"):
        x = declined_x(case, 6, K)
    elif case == "int64":
        with torch.no_grad(), pytest.raises(TypeError, match="x is torch.int64"):
            layer(torch.ones(6, K, dtype=torch.int64))
        assert offered == [None]
        return
    elif case == "requires_grad":
        x, grad = x.clone().requires_grad_(), True
    elif case == "retuned":  # a bound launch made before a put declines (the put also empties
        stale = _bound(layer)[x.shape]  # the records, so linear() does not offer it again)
        tuning_cache.changed()  # what a put does
        stale(x, layer.values, layer.bias)
    elif case == "hook":
        monkeypatch.setattr(triton_internals, "direct_launch_allowed", lambda: False)
    elif case == "other_device":
        monkeypatch.setattr(device, "_current_cuda_device", lambda: 3)
    elif case == "subclass":
        x = x.as_subclass(nn.Parameter)
    with torch.set_grad_enabled(grad):
        y = layer(x)
    assert torch.equal(y.detach(), _want(layer, x.detach()))
    # offered and declined; an x of a subclass is not offered (linear() looks only plain x up);
    # an x autograd records is offered by linear() and again by the op it then takes
    assert offered == {"subclass": [], "requires_grad": [None, None]}.get(case, [None])
    assert general  # the general path
    if case == "requires_grad":
        with pytest.raises(RuntimeError, match="has no backward"):
            y.sum().backward()


def test_a_replaced_weight_is_checked_and_bound_again(seed, sm90_stand_in):
    """New values (a new buffer, as .to() makes) start a new record: nothing bound to the old
    weight's address is used for the new one."""
    torch.set_grad_enabled(False)
    try:
        layer = _layer()
        x = torch.randn(3, K, dtype=torch.float16)
        layer(x), layer(x), layer(x)
        old = _bound(layer)
        layer.values = layer.values.clone()
        _expect(layer)
        y = layer(x)
        assert _bound(layer) is not old and torch.equal(y, _want(layer, x))
        layer(x)
        assert torch.equal(layer(x), _want(layer, x))  # the stand-in asserts the new address
    finally:
        torch.set_grad_enabled(True)


def test_bind_declines_what_has_no_bound_launch(seed, monkeypatch):
    """ops.gemm.bind: False where the family has no bound launch (the dot family the interpreter
    runs) or nothing runs a kernel (float32 on the reference path; no tokens); None for a
    problem not planned yet."""
    values, meta = compress(prune_24(torch.randn(N, K, dtype=torch.float16)))
    x = torch.randn(4, K, dtype=torch.float16)
    monkeypatch.setattr(gemm, "use_triton", lambda t: True)
    monkeypatch.setattr(gemm, "_plans", {})
    assert gemm.bind(x, values, meta, None, None) is None
    gemm._plans[(4, N, K, x.dtype, x.device)] = (gemm.FAMILIES["dot"].launch, {}, False)
    assert gemm.bind(x, values, meta, None, None) is False
    assert gemm.bind(x.float(), values, meta, None, None) is False
    assert gemm.bind(x[:0], values, meta, None, None) is False


def test_linear_records_a_checked_weight_but_not_per_call_slices(seed):
    """ops.linear records a plain weight after its first eager call and then checks only x
    (still naming a bad x); a record stands while the same objects hold the same memory; the
    slices SparseLinear's rows= takes on each call are not recorded (they would only churn)."""
    values, meta = compress(prune_24(torch.randn(N, K, dtype=torch.float16)))
    bias = torch.randn(N, dtype=torch.float16)
    key = (id(values), id(meta), id(bias), "relu")
    gemm._checked.pop(key, None)
    x = torch.randn(3, K, dtype=torch.float16)
    with torch.no_grad():
        want = reference.linear_ref(x, values, meta, bias, "relu")
        assert torch.equal(gemm.linear(x, values, meta, bias, "relu"), want)
        assert key in gemm._checked
        assert torch.equal(gemm.linear(x, values, meta, bias, "relu"), want)
        with pytest.raises(ValueError, match="x's last dim must be in_features"):
            gemm.linear(torch.randn(3, K + 64, dtype=torch.float16), values, meta, bias, "relu")
        bias.data = torch.randn(N + 16, dtype=torch.float16)  # same object, other memory
        with pytest.raises(ValueError, match=r"bias has shape \(80,\), expected \(64,\)"):
            gemm.linear(x, values, meta, bias, "relu")
        layer = SparseLinear.from_linear(_dense(), activation=None)
        before = len(gemm._checked)
        for _ in range(3):
            layer(x.float(), rows=(16, 48))
        assert len(gemm._checked) == before


def _dense():
    lin = nn.Linear(K, N, dtype=torch.float16)
    with torch.no_grad():
        lin.weight.copy_(prune_24(lin.weight))
    return lin


def test_the_op_records_a_whole_weight_and_takes_its_bound_launch(seed, sm90_stand_in,
                                                                   monkeypatch):
    """The registered op (what a compiled graph calls on every run) checks a whole, plain weight
    it has no record of (a bad one is refused by name), records it, and from a shape's third call
    takes the bound launch; slices of a weight are checked on every call and not recorded."""
    layer = _layer()
    x = torch.randn(5, K, dtype=torch.float16)
    op = torch.ops.sparse24.linear.default
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"bias has shape \(32,\), expected \(64,\)"):
            op(x, layer.values, layer.meta, layer.bias[:32].clone(), None)
        before = len(gemm._checked)
        op(x, layer.values, layer.meta, layer.bias, None), op(x, layer.values, layer.meta,
                                                              layer.bias, None)
        assert len(gemm._checked) == before + 1
        assert isinstance(_bound(layer)[x.shape], wgmma.BoundLaunch)
        general = spy_on_the_general_path(monkeypatch)
        for _ in range(2):
            x = torch.randn(5, K, dtype=torch.float16)
            assert torch.equal(op(x, layer.values, layer.meta, layer.bias, None),
                               _want(layer, x))
        assert not general
        parts = (layer.values[16:48], layer.meta[1:3], layer.bias[16:48])
        StandInLauncher.weight = (*parts, None)
        want = reference.linear_ref(x, *parts, None)
        checked = []
        monkeypatch.setattr(gemm, "check_linear_inputs", lambda *a: checked.append(a))
        # checked on every call (the op called directly with a slice that does not fit must
        # name the problem), never recorded
        assert torch.equal(op(x, *parts, None), want) and len(general) == 1 and len(checked) == 1
        assert len(gemm._checked) == before + 1


@pytest.mark.parametrize("case", ["subclass_through_the_op", "x_on_another_device",
                                  "values_require_grad", "bias_requires_grad"])
def test_the_bound_launch_declines_what_only_it_sees(seed, sm90_stand_in, monkeypatch, case):
    """Cases the bound launch itself must refuse (linear()'s own tests do not reach them): an x
    of a tensor subclass handed to the op, an x on another device than the plan's, and a weight
    that autograd records (values or bias made to require grad after binding)."""
    layer = _layer()
    x = torch.randn(6, K, dtype=torch.float16)
    with torch.no_grad():
        layer(x), layer(x)
    bound = _bound(layer)[x.shape]
    offered = spy_on_bound_launches(monkeypatch, wgmma.BoundLaunch)
    grad = False
    if case == "subclass_through_the_op":
        class Sub(torch.Tensor):
            pass

        with torch.no_grad():
            y = torch.ops.sparse24.linear(x.as_subclass(Sub), layer.values, layer.meta,
                                          layer.bias, None)
        assert offered == [None] and torch.equal(y.as_subclass(torch.Tensor), _want(layer, x))
        return
    if case == "x_on_another_device":
        bound.device = 0  # a plan of cuda:0, the current device; x is on the CPU (-1)
        monkeypatch.setattr(device, "_current_cuda_device", lambda: 0)
    elif case == "values_require_grad":
        layer.values.requires_grad_(True)
        grad = True
    else:
        layer.bias.requires_grad_(True)
        grad = True
    with torch.set_grad_enabled(grad):
        y = layer(x)
    assert offered and offered[0] is None
    assert torch.equal(y.detach(), _want(layer, x))
    if grad:  # the op's output: a backward refuses
        assert y.requires_grad
        with pytest.raises(RuntimeError, match="has no backward"):
            y.sum().backward()


def test_a_one_row_x_with_any_row_stride_is_launched_as_dense_rows(seed, sm90_stand_in):
    """A [1, K] x whose row stride is not K is contiguous (one row): the bound launch serves it
    with the descriptor of its dense row (rows K apart), the key it keeps arguments by."""
    torch.set_grad_enabled(False)
    try:
        layer = _layer()
        for _ in range(2):
            layer(torch.randn(1, K, dtype=torch.float16))
        odd = torch.randn(1, K + 8, dtype=torch.float16)[:, :K]
        assert odd.is_contiguous() and odd.stride(0) == K + 8
        assert torch.equal(layer(odd), _want(layer, odd))
        assert sm90_stand_in.launches[-1][4] == (K, 1)
    finally:
        torch.set_grad_enabled(True)


def test_tuned_configs_that_change_make_records_check_and_bind_again(seed, sm90_stand_in):
    """A put (or a new cache directory) empties the records: the next calls check the weight,
    bind anew, and the new bound launch serves."""
    torch.set_grad_enabled(False)
    try:
        layer = _layer()
        x = torch.randn(4, K, dtype=torch.float16)
        layer(x), layer(x)
        old = _bound(layer)[x.shape]
        tuning_cache.changed()
        layer(x), layer(x)
        new = _bound(layer)[x.shape]
        assert new is not old and isinstance(new, wgmma.BoundLaunch)
        assert torch.equal(new(x, layer.values, layer.bias), _want(layer, x))
    finally:
        torch.set_grad_enabled(True)


def test_a_change_during_the_checked_call_is_not_recorded_as_checked(seed, monkeypatch):
    """What the record keeps is read before the checks: a bias changed (.data =) while the
    checked call runs is checked again on the next call, and refused by name."""
    values, meta = compress(prune_24(torch.randn(N, K, dtype=torch.float16)))
    bias = torch.randn(N, dtype=torch.float16)
    x = torch.randn(3, K, dtype=torch.float16)
    real = gemm._linear_impl

    def swap_during(*args):
        y = real(*args)
        bias.data = torch.randn(N + 16, dtype=torch.float16)
        return y

    monkeypatch.setattr(gemm, "_linear_impl", swap_during)
    with torch.no_grad():
        gemm.linear(x, values, meta, bias)
        monkeypatch.setattr(gemm, "_linear_impl", real)
        with pytest.raises(ValueError, match=r"bias has shape \(80,\), expected \(64,\)"):
            gemm.linear(x, values, meta, bias)


def test_a_freed_weight_takes_its_record_with_it(seed):
    """A record leaves when one of its weight's tensors is freed (its weak references'
    callback), so a dropped model leaves no record or bound launch behind."""
    import gc

    values, meta = compress(prune_24(torch.randn(N, K, dtype=torch.float16)))
    x = torch.randn(3, K, dtype=torch.float16)
    with torch.no_grad():
        gemm.linear(x, values, meta)
    key = (id(values), id(meta), id(None), None)
    assert key in gemm._checked
    del values
    gc.collect()
    assert key not in gemm._checked
