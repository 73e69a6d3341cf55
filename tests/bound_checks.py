"""What the tests of the bound launches (the sm90 family's and the mma family's) share: spies on
the bound launch and the general path, the x a bound launch must decline, and the GPU checks of
a layer whose calls take one (a side stream, a CUDA graph, declined x)."""

from __future__ import annotations

import torch

import sparse24.ops as ops
from sparse24.activations import GATED
from sparse24.layout import interleave_gate_up
from sparse24.nn import SparseLinear
from sparse24.ops import gemm


def spy_on_bound_launches(monkeypatch, bound_class) -> list:
    """What each call of a ``bound_class`` instance returned (None: declined), in order."""
    offered = []
    real_call = bound_class.__call__
    monkeypatch.setattr(bound_class, "__call__",
                        lambda self, *a: offered.append(real_call(self, *a)) or offered[-1])
    return offered


def spy_on_the_general_path(monkeypatch) -> list:
    """The arguments of each call that took the general path (gemm._linear_impl)."""
    general = []
    real = gemm._linear_impl
    monkeypatch.setattr(gemm, "_linear_impl", lambda *a: general.append(a) or real(*a))
    return general


def declined_x(case: str, rows: int, k: int, dtype=torch.float16, device="cpu") -> torch.Tensor:
    """An x of [rows, k] a bound launch must decline: "misaligned" (its address 2 bytes past a
    16-byte boundary) or "transposed" (not contiguous)."""
    if case == "misaligned":
        return torch.randn(rows * k + 1, dtype=dtype, device=device)[1:].view(rows, k)
    return torch.randn(k, rows, dtype=dtype, device=device).t()


def gpu_layer(w: torch.Tensor, bias_on: bool, activation, gen: torch.Generator) -> SparseLinear:
    """A SparseLinear on the GPU packing the dense 2:4 ``w`` [n, k] (its halves as gate and up
    rows, interleaved, for a gated activation), with a random bias where ``bias_on``."""
    n, k = w.shape
    if activation in GATED:
        w = interleave_gate_up(w[: n // 2], w[n // 2:])
    layer = SparseLinear(k, n, bias=bias_on, dtype=w.dtype, device="cuda", activation=activation)
    layer.values, layer.meta = ops.compress(w)
    if bias_on:
        with torch.no_grad():
            layer.bias.copy_(torch.randn(n, device="cuda", generator=gen) * 0.5)
    return layer


def fresh_calls(layer: SparseLinear, shape, gen: torch.Generator) -> tuple[list, list, list]:
    """Four fresh x of ``shape``, the general path's outputs for them (gemm._linear_impl itself:
    linear() would take the records' bound launches) and then the layer's own."""
    k, dtype = layer.in_features, layer.values.dtype
    xs = [(torch.randn(shape, device="cuda", generator=gen) / k ** 0.5).to(dtype)
          for _ in range(4)]
    general = [gemm._linear_impl(x, layer.values, layer.meta, layer.bias, layer.activation)
               for x in xs]
    return xs, general, [layer(x) for x in xs]


def check_side_stream_and_graph(layer, xs, general, case) -> None:
    """``layer`` called on a side stream, and captured in a CUDA graph then replayed on new
    data, gives the general path's outputs bit for bit (``general[i]`` for ``xs[i]``)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        on_side = layer(xs[1])
    torch.cuda.current_stream().wait_stream(stream)
    assert torch.equal(on_side, general[1]), case
    static_x = xs[0].clone()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = layer(static_x)
    static_x.copy_(xs[2])
    graph.replay()
    assert torch.equal(static_y, general[2]), case


def check_declined_x_still_right(layer, x, want, case) -> None:
    """A misaligned and a transposed copy of the 2-D ``x``, each called twice (the second call
    would take a bound launch if the first had made one), give ``want``."""
    misaligned = torch.empty(x.numel() + 8, dtype=x.dtype, device=x.device)[1:][:x.numel()]
    misaligned = misaligned.view_as(x).copy_(x)
    transposed = x.t().contiguous().t()
    for odd in (misaligned, transposed, misaligned, transposed):
        assert torch.equal(layer(odd), want), case
