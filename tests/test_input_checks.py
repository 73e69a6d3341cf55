"""Every tensor argument of every op, in every memory layout a caller can hand over.

For each op and argument: strided, expanded (stride 0), with a storage offset, transposed, and
starting at an address that is not 16-byte aligned. Each case is either computed correctly
(checked against the reference on a contiguous copy) or refused with an error that says what to
do; the tables below say which, and the tests hold the code to them.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparse24.ops as ops
from sparse24 import Sparse24Weight
from sparse24 import reference as ref
from sparse24.nn import SparseLinear
from tolerances import REL_TOL, rel_err

N, K, M = 32, 128, 5
DTYPE = torch.float16


def misaligned(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of t that starts one element past a fresh allocation (2 or 4 bytes: never
    16-byte aligned)."""
    buf = torch.empty(t.numel() + 16, dtype=t.dtype, device=t.device)
    out = buf[1 : 1 + t.numel()].view(t.shape)
    out.copy_(t)
    assert out.data_ptr() % 16 and out.is_contiguous()
    return out


def with_offset(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of t with a storage offset that keeps 16-byte alignment (8 halves)."""
    per16 = 16 // t.element_size()
    buf = torch.empty(t.numel() + 2 * per16, dtype=t.dtype, device=t.device)
    out = buf[per16 : per16 + t.numel()].view(t.shape)
    out.copy_(t)
    assert out.storage_offset() == per16 and out.data_ptr() % 16 == 0
    return out


# -------------------------------------------------------------------------------- ops.linear x
def _x_layouts(device):
    """name -> x [M, K] (or [2, 3, K]) in that layout; all handled (copied where the kernels need)."""
    base = (torch.randn(M, K, device=device) / (K / 2) ** 0.5).to(DTYPE)
    wide = torch.zeros(M, 2 * K, dtype=DTYPE, device=device)
    wide[:, ::2] = base
    row = base[:1]
    return {
        "contiguous": base,
        "transposed": base.t().contiguous().t(),  # strides (1, M)
        "strided": wide[:, ::2],  # element stride 2
        "row_stride": torch.cat([base, base], dim=1)[:, :K],  # rows 2K apart, stride(1) == 1
        "expanded_rows": row.expand(M, K),  # stride (0, 1)
        "expanded_cols": base[:, :1].expand(M, K),  # stride (1, 0)
        "storage_offset": with_offset(base),
        "misaligned": misaligned(base),
        "permuted_3d": torch.randn(3, 2, K, device=device).to(DTYPE).permute(1, 0, 2),
    }


@pytest.mark.parametrize("layout", list(_x_layouts("cpu")))
def test_linear_x_any_layout_is_computed_correctly(layout, device, seed):
    x = _x_layouts(device)[layout]
    w = ops.prune_24(torch.randn(N, K, dtype=DTYPE, device=device))
    values, meta = ops.compress(w)
    bias = torch.randn(N, dtype=DTYPE, device=device)
    y = ops.linear(x, values, meta, bias, activation="gelu")
    expected = ref.linear_ref(x.contiguous().double().cpu(), values.double().cpu(), meta.cpu(),
                              bias.double().cpu(), "gelu")
    assert y.shape == (*x.shape[:-1], N)
    assert rel_err(y.cpu(), expected) < REL_TOL[DTYPE], layout


def test_transposed_x_through_the_kernels(device, seed):
    """The kernels read x rows with unit element stride: a transposed x must be copied first (the
    fallback in _linear_impl). Without the copy the result is off by ~50 (max abs)."""
    from sparse24.ops._checks import use_triton

    x = torch.randn(K, 40, dtype=DTYPE, device=device).t()  # [40, K], strides (1, 40)
    assert use_triton(x), "this test is about the kernel path"
    values, meta = ops.compress(ops.prune_24(torch.randn(N, K, dtype=DTYPE, device=device)))
    y = ops.linear(x, values, meta)
    expected = ref.linear_ref(x.contiguous().double().cpu(), values.double().cpu(), meta.cpu())
    assert rel_err(y.cpu(), expected) < REL_TOL[DTYPE]


# ----------------------------------------------------------------------------- ops.linear bias
def _packed(device):
    values, meta = ops.compress(ops.prune_24(torch.randn(N, K, dtype=DTYPE, device=device)))
    x = (torch.randn(M, K, device=device) / (K / 2) ** 0.5).to(DTYPE)
    return x, values, meta


@pytest.mark.parametrize("layout", ["storage_offset", "misaligned", "float32"])
def test_linear_bias_layouts_that_are_handled(layout, device, seed):
    x, values, meta = _packed(device)
    b = torch.randn(N, dtype=DTYPE, device=device)
    bias = {"storage_offset": with_offset(b), "misaligned": misaligned(b), "float32": b.float()}[layout]
    y = ops.linear(x, values, meta, bias)
    expected = ref.linear_ref(x.double().cpu(), values.double().cpu(), meta.cpu(), b.double().cpu())
    assert rel_err(y.cpu(), expected) < REL_TOL[DTYPE]


@pytest.mark.parametrize("layout", ["strided", "expanded", "column"])
def test_linear_bias_strided_or_expanded_is_refused(layout, device):
    """The epilogue reads bias at bias_ptr + feature: a strided bias gave wrong outputs (max abs
    error 3.8) and an expanded one read past its storage (NaN). Refused, with the fix named."""
    x, values, meta = _packed(device)
    bias = {
        "strided": torch.randn(2 * N, dtype=DTYPE, device=device)[::2],
        "expanded": torch.randn(1, dtype=DTYPE, device=device).expand(N),
        "column": torch.randn(N, 3, dtype=DTYPE, device=device)[:, 0],
    }[layout]
    with pytest.raises(ValueError, match=r"bias must be a contiguous vector \(stride 1\).*bias\.contiguous\(\)"):
        ops.linear(x, values, meta, bias)
    y = ops.linear(x, values, meta, bias.contiguous())  # what the message says works
    assert torch.isfinite(y).all()


# ------------------------------------------------------------------ ops.linear values and meta
@pytest.mark.parametrize("layout", ["storage_offset", "misaligned"])
def test_linear_packed_with_offset_is_handled_off_gpu(layout, device, seed):
    """Off the GPU (interpreter or reference) any start address works; on a GPU a misaligned
    `values` or `meta` is refused (next test), a 16-byte-aligned offset is fine everywhere."""
    x, values, meta = _packed(device)
    move = with_offset if layout == "storage_offset" else misaligned
    if device == "cuda" and layout == "misaligned":
        pytest.skip("refused on a GPU: test_linear_misaligned_values_refused_gpu")
    y = ops.linear(x, move(values), move(meta))
    assert torch.equal(y, ops.linear(x, values, meta))


@pytest.mark.gpu
def test_linear_misaligned_values_refused_gpu():
    """Values (TMA) and metadata (the sm90 family's META_RING form copies it in 16-byte pieces)
    must start 16-byte aligned on a GPU; their clones do."""
    x, values, meta = _packed("cuda")
    with pytest.raises(ValueError, match="packed values start .* not 16-byte aligned.*values.clone"):
        ops.linear(x, misaligned(values), meta)
    with pytest.raises(ValueError, match="packed metadata start .* not 16-byte aligned.*meta.clone"):
        ops.linear(x, values, misaligned(meta))
    ops.linear(x, misaligned(values).clone(), misaligned(meta).clone())


@pytest.mark.parametrize("which", ["values", "meta"])
@pytest.mark.parametrize("layout", ["transposed", "strided"])
def test_linear_and_decompress_refuse_non_contiguous_packed(which, layout, device):
    x, values, meta = _packed(device)
    t = values if which == "values" else meta
    if layout == "transposed":
        bad = t.transpose(0, 1).contiguous().transpose(0, 1)
    else:
        bad = torch.stack([t, t], -1)[..., 0]  # element stride 2
    assert not bad.is_contiguous() and torch.equal(bad, t)
    args = (bad, meta) if which == "values" else (values, bad)
    with pytest.raises(ValueError, match="must be contiguous"):
        ops.linear(x, *args)
    with pytest.raises(ValueError, match="must be contiguous"):
        ops.decompress(*args)


# ------------------------------------------------------------- pack ops: mask, prune, compress
def _w_layouts(device, dtype=DTYPE):
    base = torch.randn(N, K, device=device).to(dtype)
    wide = torch.zeros(N, 2 * K, dtype=dtype, device=device)
    wide[:, ::2] = base
    return {
        "transposed": base.t().contiguous().t(),
        "strided": wide[:, ::2],
        "row_stride": torch.cat([base, base], dim=1)[:, :K],
        "expanded_rows": base[:1].expand(N, K),
        "storage_offset": with_offset(base),
        "misaligned": misaligned(base),
    }


@pytest.mark.parametrize("layout", list(_w_layouts("cpu")))
def test_mask_prune_compress_any_layout(layout, device, seed):
    w = _w_layouts(device)[layout]
    dense = w.contiguous()
    assert torch.equal(ops.mask_24(w).cpu(), ref.mask_24_ref(dense.cpu()))
    pruned = ops.prune_24(w)
    assert torch.equal(pruned.cpu().view(torch.int16), ref.prune_24_ref(dense.cpu()).view(torch.int16))
    # compress the same layout of a 2:4 weight: build it by pruning, then re-lay it out
    pruned_layout = _relayout(ref.prune_24_ref(dense.cpu()).to(device), layout)
    values, meta = ops.compress(pruned_layout)
    rv, rm = ref.compress_ref(pruned_layout.contiguous().cpu())
    assert torch.equal(values.cpu().view(torch.int16), rv.view(torch.int16))
    assert torch.equal(meta.cpu(), rm)


def _relayout(w: torch.Tensor, layout: str) -> torch.Tensor:
    """w (contiguous) in the named layout (expanded: its first row repeated)."""
    if layout == "transposed":
        return w.t().contiguous().t()
    if layout == "strided":
        wide = torch.zeros(w.shape[0], 2 * w.shape[1], dtype=w.dtype, device=w.device)
        wide[:, ::2] = w
        return wide[:, ::2]
    if layout == "row_stride":
        return torch.cat([w, w], dim=1)[:, : w.shape[1]]
    if layout == "expanded_rows":
        return w[:1].expand(*w.shape)
    return {"storage_offset": with_offset, "misaligned": misaligned}[layout](w)


@pytest.mark.parametrize("layout", ["storage_offset", "misaligned"])
def test_decompress_with_offset(layout, device, seed):
    values, meta = ops.compress(ops.prune_24(torch.randn(N, K, dtype=DTYPE, device=device)))
    move = with_offset if layout == "storage_offset" else misaligned
    got = ops.decompress(move(values), move(meta))
    assert torch.equal(got.view(torch.int16), ops.decompress(values, meta).view(torch.int16))


# ------------------------------------------------------------------------- nn and Sparse24Weight
def test_sparse_linear_takes_any_x_layout(device, seed):
    lin = nn.Linear(K, N, dtype=DTYPE, device=device)
    with torch.no_grad():
        lin.weight.copy_(ops.prune_24(lin.weight))
    module = SparseLinear.from_linear(lin, activation="relu")
    for layout, x in _x_layouts(device).items():
        want = torch.relu(lin.double()(x.double())) if device == "cpu" else None
        got = module(x)
        if want is not None:
            assert rel_err(got, want) < REL_TOL[DTYPE], layout


def test_sparse_linear_with_a_strided_bias_is_refused(device):
    module = SparseLinear(K, N, dtype=DTYPE, device=device)
    module.bias = nn.Parameter(torch.zeros(2 * N, dtype=DTYPE, device=device)[::2], requires_grad=False)
    with pytest.raises(ValueError, match="bias must be a contiguous vector"):
        module(torch.randn(M, K, dtype=DTYPE, device=device))


def test_sparse24_weight_from_safetensors_on_cpu(tmp_path, seed):
    """safetensors lays tensors out back to back: loaded on the CPU, values may start at any
    address; linear must still be right there."""
    pytest.importorskip("safetensors")
    w = Sparse24Weight.from_dense(ops.prune_24(torch.randn(N, K, dtype=DTYPE)))
    w.save(tmp_path / "w.safetensors")
    loaded = Sparse24Weight.load(tmp_path / "w.safetensors")
    x = torch.randn(K, M, dtype=DTYPE).t()
    assert torch.equal(loaded.linear(x), w.linear(x.contiguous()))


@pytest.mark.parametrize("argument", ["x", "values", "meta", "bias"])
def test_a_non_tensor_argument_is_named(argument):
    values, meta = ops.compress(ops.prune_24(torch.randn(N, K, dtype=DTYPE)))
    args = {"x": torch.randn(M, K, dtype=DTYPE), "values": values, "meta": meta, "bias": None}
    args[argument] = [[0.0] * K]
    with pytest.raises(TypeError, match=f"sparse24.linear: {argument} must be a torch.Tensor, got list"):
        ops.linear(**args)


def test_an_activation_that_is_not_a_name_is_named():
    """A list is named as an unknown activation (it was "unhashable type"); a subclass of str
    (a str-valued Enum) is a name, as before."""
    values, meta = ops.compress(ops.prune_24(torch.randn(N, K, dtype=DTYPE)))
    x = torch.randn(M, K, dtype=DTYPE)
    with pytest.raises(ValueError, match=r"unknown activation \['relu'\]"):
        ops.linear(x, values, meta, activation=["relu"])

    class Name(str):
        pass

    assert torch.equal(ops.linear(x, values, meta, activation=Name("relu")),
                       ops.linear(x, values, meta, activation="relu"))


_OP_BAD_X = {
    "narrow": (lambda: torch.randn(4, K // 2, dtype=DTYPE), ValueError, "x's last dim must be"),
    "narrow_3d": (lambda: torch.randn(2, 8, K // 4, dtype=DTYPE), ValueError, "x's last dim must be"),
    "bfloat16": (lambda: torch.randn(4, K, dtype=torch.bfloat16), TypeError, "x is torch.bfloat16"),
    "int32": (lambda: torch.ones(4, K, dtype=torch.int32), TypeError, "x is torch.int32"),
    "on_the_cpu": (lambda: torch.randn(4, K, dtype=DTYPE), ValueError, "x is on cpu but the weight"),
}


@pytest.mark.parametrize("case", list(_OP_BAD_X))
@pytest.mark.parametrize("weight", ["recorded", "a_slice"])
def test_the_op_called_directly_names_an_x_that_does_not_fit(case, weight, device, seed):
    """torch.ops.sparse24.linear called directly, on a weight linear() has recorded or on a
    slice of one (never recorded): an x of another width or dtype is refused by name, never run
    (the kernel would read past x's rows). The record's shapes only ever hold xs that fit."""
    if case == "on_the_cpu" and device == "cpu":
        pytest.skip("an x on the CPU against a weight on the GPU")
    values, meta = ops.compress(ops.prune_24(torch.randn(2 * N, K, dtype=DTYPE, device=device)))
    bias = torch.randn(2 * N, dtype=DTYPE, device=device)
    if weight == "a_slice":
        values, meta, bias = values[:N], meta[: N // 16], bias[:N]
    good = torch.randn(4, K, dtype=DTYPE, device=device)
    op = torch.ops.sparse24.linear
    with torch.no_grad():
        for _ in range(3):  # recorded, then bound to good's shape
            ops.linear(good, values, meta, bias), op(good, values, meta, bias, None)
        make_x, error, message = _OP_BAD_X[case]
        for _ in range(2):
            with pytest.raises(error, match=message):
                op(make_x() if case == "on_the_cpu" else make_x().to(device), values, meta,
                   bias, None)
        want = ref.linear_ref(good.double().cpu(), values.double().cpu(), meta.cpu(),
                              bias.double().cpu())
        assert rel_err(op(good, values, meta, bias, None).cpu(), want) < REL_TOL[DTYPE]


def test_the_op_called_directly_refuses_a_strided_bias(device):
    """The check ops.linear makes (test_linear_bias_strided_or_expanded_is_refused), made by the
    op too: such a bias is a view, which the op never records, and is checked on every call."""
    x, values, meta = _packed(device)
    bias = torch.randn(2 * N, dtype=DTYPE, device=device)[::2]
    with torch.no_grad(), pytest.raises(ValueError, match=r"bias must be a contiguous vector"):
        torch.ops.sparse24.linear(x, values, meta, bias, None)


def test_meta_tensors_give_shapes_like_nn_linear():
    """Shape inference on the meta device (accelerate's init_empty_weights): the op's fake
    kernel answers; there is no data to compute with."""
    layer = SparseLinear(K, N, device="meta", dtype=DTYPE)
    y = layer(torch.empty(3, 7, K, device="meta", dtype=DTYPE))
    assert y.shape == (3, 7, N) and y.is_meta
    assert ops.linear(torch.empty(2, K, device="meta", dtype=DTYPE), layer.values,
                      layer.meta).shape == (2, N)


@pytest.mark.parametrize("n, k", [(0, 64), (16, 0), (0, 0)])
def test_a_weight_without_features_is_refused_or_skipped(n, k):
    """nn.Linear takes 0 features; there is nothing to pack: SparseLinear refuses it with the
    reason, sparsify_ leaves such a layer dense (it works there) and says why."""
    from sparse24.nn import sparsify_

    with pytest.raises(ValueError, match="no 2:4 groups"):
        SparseLinear(k, n)
    model = nn.Sequential(nn.Linear(k, n))
    report = sparsify_(model)
    assert report.swapped == [] and isinstance(model[0], nn.Linear)
    assert model(torch.randn(2, k)).shape == (2, n)
