"""The mma family's bound launches (families.mma.bind, mma.BoundLaunch) through linear(), the op
and SparseLinear, on a CPU. The family's kernel is a stand-in at both of its entry points:
Triton's launch (CachedLaunch, which hands it tensors) and the direct launcher it learns
(which hands it addresses and ints, as the C launcher takes them). Both compute y with the
PyTorch reference from what they were handed; the direct one reads x and writes y through their
addresses (CPU tensors: host memory). What is checked is the plumbing: which calls take the
bound launch, that it passes the kernel exactly what the family's direct path passes, and that
every call it must not serve takes the general path and is still right."""

from __future__ import annotations

import ctypes

import pytest
import torch
from torch import nn

from sparse24 import reference, tuning
from sparse24.activations import ALL_CODES
from sparse24.nn import SparseLinear
from sparse24.ops import compress, device, direct, gemm, prune_24, triton_internals
from sparse24.ops.families import mma
from sparse24.tuning import cache as tuning_cache
from bound_checks import declined_x, spy_on_bound_launches, spy_on_the_general_path

N, K = 64, 128
CFG = {"family": "mma", "BLOCK_F": 64, "BLOCK_T": 16, "GROUP_T": 8, "PREFETCH": 1, "SPLIT_K": 1,
       "num_warps": 4, "num_stages": 1}


def _at(address: int, rows: int, row_stride: int, cols: int, dtype) -> torch.Tensor:
    """The [rows, cols] tensor at a host address, rows row_stride elements apart (a view)."""
    size = torch.empty((), dtype=dtype).element_size()
    count = (rows - 1) * row_stride + cols
    flat = torch.frombuffer((ctypes.c_byte * (count * size)).from_address(address), dtype=dtype)
    return flat.as_strided((rows, cols), (row_stride, 1))


class StandInKernel:
    """The mma kernel at its two entry points. ``weight``: (values, meta, bias, activation) the
    test expects its launches to be of."""

    weight = None

    def __init__(self):
        self.launches = []  # ("cached" or "direct", x's address, y's address)
        self.direct_calls = []  # the direct launcher's arguments, as handed to it

    # CachedLaunch: kernel((grid), args, constexprs, **options)
    def __call__(self, grid, args, constexprs, **options):
        x2, values, _, meta_addr, bias_or_y, y = args[:6]
        x = x2.view(y.dtype)
        self.launches.append(("cached", x.data_ptr(), y.data_ptr()))
        self._compute(x, values.view(y.dtype), meta_addr, None if bias_or_y is y else bias_or_y,
                      y, constexprs[6])

    def compiled_for(self, args, constexprs, **options):
        return object()  # what DirectLaunches.learn hands ``make``: the stand-in's direct launcher

    def direct(self, gx, gy, gz, stream, x_addr, values_addr, values_addr2, meta_addr, bias_addr,
               y_addr, partial_addr, count_addr, m, n, k, x_row_words, y_row, per_split,
               *constexprs):
        self.direct_calls.append((gx, gy, gz, stream, values_addr, values_addr2, meta_addr,
                                  bias_addr == y_addr, bias_addr if bias_addr != y_addr else None,
                                  partial_addr == y_addr, count_addr, m, n, k, x_row_words,
                                  y_row, per_split, constexprs))
        self.launches.append(("direct", x_addr, y_addr))
        values, meta, bias, _ = StandInKernel.weight
        assert values_addr == values_addr2 == values.data_ptr() and (gy, gz) == (1, 1)
        assert partial_addr == y_addr and count_addr == meta_addr  # unsplit
        x = _at(x_addr, m, 2 * x_row_words, k, values.dtype)
        width = y_row
        y = _at(y_addr, m, y_row, width, values.dtype)
        self._compute(x, values, meta_addr, None if bias_addr == y_addr else bias, y,
                      constexprs[6])
        assert bias is None or bias_addr == y_addr or bias_addr == bias.data_ptr()

    @staticmethod
    def _compute(x, values, meta_addr, bias, y, activation_code):
        want_values, meta, want_bias, activation = StandInKernel.weight
        assert values.data_ptr() == want_values.data_ptr() and meta_addr == meta.data_ptr()
        assert activation_code == ALL_CODES[activation]
        assert bias is None or bias.data_ptr() == want_bias.data_ptr()
        y.copy_(reference.linear_ref(x, want_values, meta, bias, activation))


@pytest.fixture
def mma_stand_in(monkeypatch):
    """Plans of CPU problems run the mma family (one unsplit config) on the stand-in kernel; its
    direct launches are learned as on a GPU (the interpreter's 'off' is lifted); the CPU's
    device index (-1) is the current device."""
    kernel = StandInKernel()
    learned = direct.DirectLaunches(make=lambda compiled: kernel.direct)
    learned.off = False
    monkeypatch.setattr(mma, "_mma_launch", kernel)
    monkeypatch.setattr(mma, "_direct", learned)
    monkeypatch.setattr(mma, "current_device", lambda: -1)
    monkeypatch.setattr(mma, "current_stream", lambda index: 0)
    monkeypatch.setattr(triton_internals, "current_stream", lambda index: 0)
    monkeypatch.setattr(triton_internals, "direct_launch_allowed", lambda: True)
    monkeypatch.setattr(direct, "direct_launch_allowed", lambda: True)
    monkeypatch.setattr(device, "_current_cuda_device", lambda: -1)
    monkeypatch.setattr(gemm, "use_triton", lambda t: True)
    monkeypatch.setattr(gemm, "_plans", {})
    cfg = dict(CFG)

    def plan(key):
        made = gemm._plans[key] = (mma.launch, cfg, False)
        return made

    monkeypatch.setattr(gemm, "_plan", plan)
    return kernel


def _weight(bias=torch.float16, activation=None):
    """A packed weight, its bias (None, or of dtype ``bias``) and activation; the stand-in's."""
    values, meta = compress(prune_24(torch.randn(N, K, dtype=torch.float16)))
    bias = None if bias is None else torch.randn(N, dtype=bias)
    StandInKernel.weight = (values, meta, bias, activation)
    return values, meta, bias, activation


def _want(weight, x):
    return reference.linear_ref(x, *weight)


def _bound(weight):
    values, meta, bias, activation = weight
    return gemm._checked[(id(values), id(meta), id(bias), activation)][4]


@pytest.mark.parametrize("bias", [None, torch.float16, torch.float32])
@pytest.mark.parametrize("activation", [None, "relu", "swiglu"])
def test_a_weight_binds_each_shape_and_its_launch_passes_what_the_direct_path_does(
        seed, mma_stand_in, monkeypatch, bias, activation):
    """A shape's first call goes through Triton's launch (which learns the direct launcher),
    later ones directly; once bound, a call takes the bound launch, which hands the kernel the
    same arguments as the family's direct path for the same x (``gemm._linear_impl`` called
    itself), but y's address; y is fresh, contiguous and the reference's. Each shape binds its
    own; a bias of float32 or of x's dtype alike."""
    torch.set_grad_enabled(False)
    try:
        weight = _weight(bias, activation)
        width = N // 2 if activation == "swiglu" else N
        offered = spy_on_bound_launches(monkeypatch, mma.BoundLaunch)
        for shape in ((2, 3, K), (5, K), (40, K), (1, K)):
            for call in range(3):
                x = torch.randn(shape, dtype=torch.float16)
                y = gemm.linear(x, *weight)
                kind, x_addr, y_addr = mma_stand_in.launches[-1]
                assert kind == ("cached" if call == 0 else "direct")
                assert (x_addr, y_addr) == (x.data_ptr(), y.data_ptr())
                assert y.shape == (*shape[:-1], width) and y.is_contiguous()
                assert torch.equal(y, _want(weight, x))
            assert isinstance(_bound(weight)[torch.Size(shape)], mma.BoundLaunch)
            x = torch.randn(shape, dtype=torch.float16)
            general_y = gemm._linear_impl(x, *weight)  # the family's direct path itself
            general = mma_stand_in.direct_calls[-1]
            served = len([o for o in offered if o is not None])
            bound_y = gemm.linear(x, *weight)
            assert len([o for o in offered if o is not None]) == served + 1  # the bound launch
            assert mma_stand_in.direct_calls[-1] == general
            assert mma_stand_in.launches[-1][1] == x.data_ptr()
            assert torch.equal(bound_y, general_y) and bound_y.data_ptr() != general_y.data_ptr()
    finally:
        torch.set_grad_enabled(True)


def test_a_one_row_x_with_any_row_stride_is_served_as_its_row(seed, mma_stand_in, monkeypatch):
    """A [1, K] x whose row stride is not K is contiguous (one row): the bound launch serves it,
    handing the kernel its address (the kernel reads row 0 only), and y is the reference's."""
    torch.set_grad_enabled(False)
    try:
        weight = _weight()
        for _ in range(2):
            gemm.linear(torch.randn(1, K, dtype=torch.float16), *weight)
        offered = spy_on_bound_launches(monkeypatch, mma.BoundLaunch)
        padded = torch.randn(1, 2 * K, dtype=torch.float16)[:, :K]
        assert padded.is_contiguous() and padded.stride(0) == 2 * K
        assert torch.equal(gemm.linear(padded, *weight), _want(weight, padded))
        assert offered and offered[-1] is not None
        assert mma_stand_in.launches[-1][1] == padded.data_ptr()
    finally:
        torch.set_grad_enabled(True)


def test_the_bound_launch_serves_a_layer_and_the_op_without_the_general_path(
        seed, mma_stand_in, monkeypatch):
    """SparseLinear and the registered op: from a shape's third call on, _linear_impl is not
    entered, and y is the reference's."""
    lin = nn.Linear(K, N, dtype=torch.float16)
    with torch.no_grad():
        lin.weight.copy_(prune_24(lin.weight))
    layer = SparseLinear.from_linear(lin)
    weight = (layer.values, layer.meta, layer.bias, None)
    StandInKernel.weight = weight
    op = torch.ops.sparse24.linear.default
    with torch.no_grad():
        x = torch.randn(3, 8, K, dtype=torch.float16)
        layer(x), layer(x)
        general = spy_on_the_general_path(monkeypatch)
        for _ in range(3):
            x = torch.randn(3, 8, K, dtype=torch.float16)
            assert torch.equal(layer(x), _want(weight, x))
            assert torch.equal(op(x, *weight), _want(weight, x))
        assert not general
        assert isinstance(_bound(weight)[x.shape], mma.BoundLaunch)


@pytest.mark.parametrize("case", ["misaligned", "transposed", "int64", "requires_grad",
                                  "values_require_grad", "bias_requires_grad", "retuned", "hook",
                                  "other_device", "x_on_another_device", "subclass_through_the_op"])
def test_calls_the_bound_launch_must_not_serve_take_the_general_path(seed, mma_stand_in,
                                                                    monkeypatch, case):
    """An x that is misaligned, not contiguous, of another dtype or that autograd records (or a
    weight autograd records); tuned configs changed since binding; a launch hook; another
    current device; an x on another device than the bound one; an x of a tensor subclass handed
    to the op: the bound launch declines, and the call takes the general path (through the op
    where autograd records it, whose backward refuses; or the check that names a wrong dtype)."""
    weight = _weight()
    x = torch.randn(6, K, dtype=torch.float16)
    with torch.no_grad():
        gemm.linear(x, *weight), gemm.linear(x, *weight)
    bound = _bound(weight)[x.shape]
    assert isinstance(bound, mma.BoundLaunch)
    offered = spy_on_bound_launches(monkeypatch, mma.BoundLaunch)
    general = spy_on_the_general_path(monkeypatch)
    grad = False
    if case in ("misaligned", "transposed"):
        x = declined_x(case, 6, K)
    elif case == "int64":
        with torch.no_grad(), pytest.raises(TypeError, match="x is torch.int64"):
            gemm.linear(torch.ones(6, K, dtype=torch.int64), *weight)
        assert offered == [None]
        return
    elif case == "requires_grad":
        x, grad = x.clone().requires_grad_(), True
    elif case in ("values_require_grad", "bias_requires_grad"):
        weight[0 if case == "values_require_grad" else 2].requires_grad_(True)
        grad = True
    elif case == "retuned":  # a bound launch made before a put declines (the put also empties
        tuning_cache.changed()  # the records, so linear() does not offer it again)
        assert bound(x, weight[0], weight[2]) is None
        offered.clear()
        with torch.no_grad():
            assert torch.equal(gemm.linear(x, *weight), _want(weight, x))
        assert general and not offered
        return
    elif case == "hook":
        monkeypatch.setattr(triton_internals, "direct_launch_allowed", lambda: False)
    elif case == "other_device":
        monkeypatch.setattr(device, "_current_cuda_device", lambda: 3)
    elif case == "x_on_another_device":
        bound.device = 0  # bound to cuda:0, the current device; x is on the CPU (-1)
        monkeypatch.setattr(device, "_current_cuda_device", lambda: 0)
    elif case == "subclass_through_the_op":
        class Sub(torch.Tensor):
            pass

        with torch.no_grad():
            y = torch.ops.sparse24.linear(x.as_subclass(Sub), *weight)
        assert offered == [None] and torch.equal(y.as_subclass(torch.Tensor), _want(weight, x))
        return
    with torch.set_grad_enabled(grad):
        y = gemm.linear(x, *weight)
    assert torch.equal(y.detach(), _want(weight, x.detach()))
    # offered and declined; where autograd records the call, offered by linear() and again by
    # the op it then takes
    assert offered == ([None, None] if grad else [None])
    assert general
    if grad:
        with pytest.raises(RuntimeError, match="has no backward"):
            y.sum().backward()


def test_bind_declines_split_k_and_waits_for_a_learned_launch(seed, mma_stand_in, monkeypatch):
    """families.mma.bind: False for a split-K config (its partial sums and reduction are the
    general path's), a strided weight and a misaligned bias; None before the shape's direct launch is learned
    and while a launch hook holds the direct launches off (then it binds once they are back)."""
    weight = _weight()
    values, meta, bias, _ = weight
    x = torch.randn(4, K, dtype=torch.float16)
    gen = tuning.generation()
    args = (values, meta, bias, 0, x.shape, N, gen)
    assert mma.bind(CFG | {"SPLIT_K": 2}, *args) is False
    cfg = gemm._plan((4, N, K, x.dtype, x.device))[1]
    assert mma.bind(cfg, *args) is None  # not learned yet
    wide = torch.empty(N, K, dtype=torch.float16)[:, : K // 2]
    wide.copy_(values)
    assert mma.bind(cfg, wide, meta, bias, 0, x.shape, N, gen) is False
    misaligned_bias = torch.randn(N + 1, dtype=torch.float16)[1:]
    assert mma.bind(cfg, values, meta, misaligned_bias, 0, x.shape, N, gen) is False
    with torch.no_grad():
        gemm.linear(x, *weight)  # learns the direct launch
    monkeypatch.setattr(triton_internals, "direct_launch_allowed", lambda: False)
    monkeypatch.setattr(direct, "direct_launch_allowed", lambda: False)
    assert mma.bind(cfg, *args) is None
    monkeypatch.setattr(triton_internals, "direct_launch_allowed", lambda: True)
    monkeypatch.setattr(direct, "direct_launch_allowed", lambda: True)
    assert isinstance(mma.bind(cfg, *args), mma.BoundLaunch)
