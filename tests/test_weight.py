"""Sparse24Weight: dense and torch semi-structured conversions, checks, state dict and safetensors."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from sparse24 import reference as ref
from sparse24.layout import FLOAT_DTYPES, INT_VIEW, LAYOUT_VERSION, meta_shape, values_shape
from sparse24.weight import Sparse24Weight

DTYPES = list(FLOAT_DTYPES)
N, K = 48, 128


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.cpu().view(INT_VIEW[t.dtype])


def assert_bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    assert torch.equal(bits(a), bits(b))


def random_24(n=N, k=K, dtype=torch.float32, device="cpu"):
    """A fresh random 2:4 weight; one kept entry is a negative zero, whose sign must survive."""
    w = ref.prune_24_ref(torch.randn(n, k).to(dtype))
    row, col = (int(i) for i in (w != 0).nonzero()[0])
    w[row, col] = -0.0
    return w.to(device)


def same_packed(a: Sparse24Weight, b: Sparse24Weight) -> None:
    assert a.shape == b.shape and a.layout_version == b.layout_version
    assert_bitwise_equal(a.values, b.values)
    assert torch.equal(a.meta.cpu(), b.meta.cpu()) and b.meta.dtype == torch.int32


# ------------------------------------------------------------------------ dense round trip
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(N, K), (16, 64)])
def test_dense_round_trip_is_bitwise(device, seed, dtype, shape):
    w = random_24(*shape, dtype=dtype, device=device)
    sw = Sparse24Weight.from_dense(w)
    assert sw.shape == shape and sw.dtype == dtype and sw.device == w.device
    assert sw.layout_version == LAYOUT_VERSION
    assert tuple(sw.values.shape) == values_shape(*shape)
    assert tuple(sw.meta.shape) == meta_shape(*shape) and sw.meta.dtype == torch.int32
    assert_bitwise_equal(sw.to_dense(), w)


def test_from_dense_refuses_a_weight_that_is_not_24(seed):
    w = torch.randn(N, K)
    with pytest.raises(ValueError, match="not 2:4 sparse"):
        Sparse24Weight.from_dense(w)
    # check=False keeps two entries per group silently: nonzero first, then the lower positions
    first_two = w.reshape(N, K // 4, 4).clone()
    first_two[..., 2:] = 0.0
    assert_bitwise_equal(Sparse24Weight.from_dense(w, check=False).to_dense(), first_two.reshape(N, K))


def test_from_dense_detaches(seed):
    w = random_24().requires_grad_()
    sw = Sparse24Weight.from_dense(w)
    assert not sw.values.requires_grad


# ------------------------------------------------------------------------ construction checks
def packed_parts(dtype=torch.float16):
    """Tensors of the shapes and dtypes of a packed [N, K] weight (the constructor checks no bits)."""
    values = torch.randn(values_shape(N, K)).to(dtype)
    meta = torch.randint(-2**31, 2**31, meta_shape(N, K), dtype=torch.int32)
    return values, meta


def test_constructor_accepts_consistent_parts_and_normalizes_shape(seed):
    values, meta = packed_parts()
    sw = Sparse24Weight(values, meta, torch.Size([N, K]))
    assert sw.shape == (N, K) and type(sw.shape) is tuple
    assert Sparse24Weight(values, meta, torch.tensor([N, K])).shape == (N, K)


def test_constructor_refuses_another_layout_version(seed):
    values, meta = packed_parts()
    match = f"layout version {LAYOUT_VERSION + 1} does not match .* layout version {LAYOUT_VERSION}"
    with pytest.raises(ValueError, match=match):
        Sparse24Weight(values, meta, (N, K), layout_version=LAYOUT_VERSION + 1)
    with pytest.raises(TypeError, match="layout_version must be an int"):
        Sparse24Weight(values, meta, (N, K), layout_version="1")


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda v, m: (v, m[:, :1], (N, K)), ValueError,
         r"meta has shape \[3, 1, 32\], but a packed \[48, 128\] weight has meta of shape \[3, 2, 32\]"),
        (lambda v, m: (v, m.reshape(-1), (N, K)), ValueError, r"meta has shape \[192\]"),
        (lambda v, m: (v, m.to(torch.int64), (N, K)), TypeError, "meta has dtype torch.int64, must be torch.int32"),
        (lambda v, m: (v, m.float(), (N, K)), TypeError, "meta has dtype torch.float32"),
        (lambda v, m: (v, m, (N, 2 * K)), ValueError,
         r"values have shape \[48, 64\], but a packed \[48, 256\] weight has values of shape \[48, 128\]"),
        (lambda v, m: (v[:16], m, (N, K)), ValueError, r"values have shape \[16, 64\]"),
        (lambda v, m: (v.to(torch.int16), m, (N, K)), TypeError, "values have dtype torch.int16"),
        (lambda v, m: (v, m, (40, K)), ValueError, "N=40 .* must be a multiple of 16"),
        (lambda v, m: (v, m, (N, K, 1)), ValueError, "shape must be the dense shape"),
        (lambda v, m: (v, m, (N, 0)), ValueError, "shape must be positive"),
        (lambda v, m: (v, m, 5), TypeError, "shape must be a pair of ints"),
        (lambda v, m: (v, m.to("meta"), (N, K)), ValueError, "values are on cpu but meta is on meta"),
        (lambda v, m: (v.t().contiguous().t(), m, (N, K)), ValueError, "must be contiguous"),
        (lambda v, m: (v.numpy(), m, (N, K)), TypeError, "values must be a torch.Tensor"),
    ],
)
def test_constructor_names_the_inconsistency(seed, change, error, match):
    values, meta = packed_parts()
    with pytest.raises(error, match=match):
        Sparse24Weight(*change(values, meta))


def test_fields_cannot_be_reassigned(seed):
    sw = Sparse24Weight.from_dense(random_24())
    with pytest.raises(dataclasses.FrozenInstanceError):
        sw.shape = (16, 64)


# ------------------------------------------------------------------------ properties, repr, to
def test_properties_and_repr(seed):
    sw = Sparse24Weight.from_dense(random_24(dtype=torch.bfloat16))
    assert sw.device == torch.device("cpu") and sw.dtype == torch.bfloat16
    assert sw.nbytes == ref.packed_bytes(N, K, 2) == sw.values.nbytes + sw.meta.nbytes
    assert sw.nbytes * 16 == torch.empty(N, K, dtype=torch.bfloat16).nbytes * 9
    assert sw.density == 0.5
    text = repr(sw)
    for part in ("Sparse24Weight(", "shape=[48, 128]", "torch.bfloat16", "device=cpu",
                 f"layout_version={LAYOUT_VERSION}", "meta=[3, 2, 32] int32", f"nbytes={sw.nbytes}"):
        assert part in text


@pytest.mark.parametrize("src", DTYPES)
@pytest.mark.parametrize("dst", DTYPES)
def test_to_dtype_casts_values_and_keeps_meta_int32(seed, src, dst):
    w = random_24(dtype=src)
    sw = Sparse24Weight.from_dense(w)
    cast = sw.to(dtype=dst)
    assert cast.dtype == dst and cast.meta.dtype == torch.int32
    assert torch.equal(cast.meta, sw.meta)
    assert_bitwise_equal(cast.values, sw.values.to(dst))
    assert_bitwise_equal(cast.to_dense(), w.to(dst))
    assert_bitwise_equal(sw.to(dst).values, cast.values)  # positional dtype, like Tensor.to
    assert sw.dtype == src  # the original is untouched


def test_to_refuses_other_dtypes_and_returns_self_when_nothing_changes(seed):
    sw = Sparse24Weight.from_dense(random_24())
    for dtype in (torch.int32, torch.float64):
        with pytest.raises(TypeError, match=f"cannot cast values to {dtype}"):
            sw.to(dtype=dtype)
    assert sw.to() is sw and sw.to("cpu") is sw and sw.to(dtype=torch.float32) is sw


def test_to_device(device, seed):
    sw = Sparse24Weight.from_dense(random_24(dtype=torch.float16))
    moved = sw.to(device)
    assert moved.device.type == device and moved.meta.device == moved.values.device
    same_packed(sw, moved)
    assert_bitwise_equal(moved.to("cpu").to_dense(), sw.to_dense())


# ------------------------------------------------------------------------ linear
@pytest.mark.parametrize("activation", [None, "relu"])
def test_linear_matches_f_linear_fp32_reference_path(seed, activation):
    w = random_24(dtype=torch.float32)
    x, bias = torch.randn(5, 3, K), torch.randn(N)
    y = Sparse24Weight.from_dense(w).linear(x, bias, activation=activation)
    expected = F.linear(x.double(), w.double(), bias.double())
    if activation == "relu":
        expected = F.relu(expected)
    assert y.shape == (5, 3, N) and y.dtype == torch.float32
    assert ((y.double() - expected).abs().max() / expected.abs().max()).item() < 1e-5


def test_linear_matches_f_linear_fp16(device, seed):
    w = random_24(dtype=torch.float16, device=device)
    x = torch.randn(7, K, device=device).half()
    bias = torch.randn(N, device=device).half()
    y = Sparse24Weight.from_dense(w).linear(x, bias)
    expected = F.linear(x.float(), w.float(), bias.float())
    assert y.shape == (7, N) and y.dtype == torch.float16
    assert ((y.float() - expected).abs().max() / expected.abs().max()).item() < 2e-3


# ------------------------------------------------------------------------ state dict
def test_state_dict_round_trip_is_bitwise(seed):
    sw = Sparse24Weight.from_dense(random_24(dtype=torch.bfloat16))
    sd = sw.state_dict()
    assert sd.keys() == {"values", "meta", "shape", "layout_version"}
    assert sd["shape"].dtype == torch.int64 and sd["shape"].tolist() == [N, K]
    assert sd["layout_version"].dtype == torch.int32 and sd["layout_version"].tolist() == [LAYOUT_VERSION]
    back = Sparse24Weight.from_state_dict(sd)
    same_packed(sw, back)
    assert_bitwise_equal(back.to_dense(), sw.to_dense())


def test_state_dict_prefix_and_foreign_keys(seed):
    a = Sparse24Weight.from_dense(random_24())
    b = Sparse24Weight.from_dense(random_24(n=16, k=64))
    sd = {**a.state_dict("layer.0."), **b.state_dict("layer.1."), "layer.0.bias": torch.zeros(N)}
    same_packed(Sparse24Weight.from_state_dict(sd, prefix="layer.0."), a)
    same_packed(Sparse24Weight.from_state_dict(sd, prefix="layer.1."), b)
    with pytest.raises(ValueError, match="missing layer.2.values, layer.2.meta"):
        Sparse24Weight.from_state_dict(sd, prefix="layer.2.")


def test_state_dict_of_another_layout_version_is_refused(seed):
    sd = Sparse24Weight.from_dense(random_24()).state_dict()
    sd["layout_version"] = torch.tensor([LAYOUT_VERSION + 1], dtype=torch.int32)
    # also with values of a shape that layout would not have: the version is named, not the shapes
    sd["values"] = sd["values"][:, :8]
    with pytest.raises(ValueError, match=f"layout_version: layout version {LAYOUT_VERSION + 1} does not match"):
        Sparse24Weight.from_state_dict(sd)
    sd["layout_version"] = torch.tensor([1.0])
    with pytest.raises(ValueError, match="layout_version must be an integer tensor"):
        Sparse24Weight.from_state_dict(sd)


def test_state_dict_with_wrong_meta_shape_is_refused(seed):
    good = Sparse24Weight.from_dense(random_24()).state_dict()
    sd = {**good, "meta": good["meta"].reshape(N // 16, -1)}
    with pytest.raises(ValueError, match=r"meta has shape \[3, 64\], but a packed \[48, 128\] weight"):
        Sparse24Weight.from_state_dict(sd)
    sd = {**good, "shape": torch.tensor([N, K, 1])}
    with pytest.raises(ValueError, match=r"shape must be an integer tensor \[N, K\]"):
        Sparse24Weight.from_state_dict(sd)


# ------------------------------------------------------------------------ safetensors
@pytest.mark.parametrize("dtype", DTYPES)
def test_safetensors_round_trip_is_bitwise(device, seed, tmp_path, dtype):
    w = random_24(dtype=dtype, device=device)
    sw = Sparse24Weight.from_dense(w)
    path = tmp_path / "w.safetensors"
    sw.save(path)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "sparse24", "layout_version": str(LAYOUT_VERSION)}
        assert set(f.keys()) == {"values", "meta", "shape", "layout_version"}
    back = Sparse24Weight.load(path, device=device)
    assert back.device == sw.device
    same_packed(sw, back)
    assert_bitwise_equal(back.to_dense(), w)
    assert Sparse24Weight.load(str(path)).device == torch.device("cpu")


def test_foreign_safetensors_files_are_refused(seed, tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"weight": torch.zeros(N, K)}, str(plain))
    with pytest.raises(ValueError, match="is not a sparse24 weight file: .* no 'format' entry"):
        Sparse24Weight.load(plain)
    # a state dict of the right tensors, but written without sparse24's metadata
    sd = Sparse24Weight.from_dense(random_24()).state_dict()
    torch_file = tmp_path / "torch.safetensors"
    save_file(sd, str(torch_file), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="format 'pt', expected format 'sparse24'"):
        Sparse24Weight.load(torch_file)
    other_version = tmp_path / "v2.safetensors"
    save_file(sd, str(other_version), metadata={"format": "sparse24", "layout_version": "3"})
    with pytest.raises(ValueError, match=f"layout version 3 does not match .* {LAYOUT_VERSION}"):
        Sparse24Weight.load(other_version)


# ------------------------------------------------------------------------ torch semi-structured
def test_from_semi_structured_refuses_other_types(seed):
    w = random_24(dtype=torch.float16)
    # A dense tensor has to_dense() too: the type is checked, not the method.
    with pytest.raises(TypeError, match="got Tensor .*use Sparse24Weight.from_dense"):
        Sparse24Weight.from_semi_structured(w)

    class StandIn:
        def to_dense(self):
            return w

    with pytest.raises(TypeError, match="expected a torch.sparse.SparseSemiStructuredTensor, got StandIn"):
        Sparse24Weight.from_semi_structured(StandIn())


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cutlass", "cusparselt"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_from_semi_structured_on_cuda(seed, monkeypatch, backend, dtype):
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    if backend == "cusparselt" and not torch.backends.cusparselt.is_available():
        pytest.skip("this torch build has no cuSPARSELt")
    monkeypatch.setattr(SparseSemiStructuredTensor, "_FORCE_CUTLASS", backend == "cutlass")
    w = ref.prune_24_ref(torch.randn(64, 128).to(dtype)).cuda()  # finite: cuSPARSELt unpacks by a matmul
    t = to_sparse_semi_structured(w)
    assert isinstance(t, SparseSemiStructuredTensor) and backend.upper() in type(t).__name__.upper()
    sw = Sparse24Weight.from_semi_structured(t)
    assert sw.shape == (64, 128) and sw.dtype == dtype and sw.device == w.device
    assert_bitwise_equal(sw.to_dense(), w)
    same_packed(sw, Sparse24Weight.from_dense(w))


def test_layout_1_checkpoint_loads_converted(tmp_path):
    """A state dict / file written by sparse24 before layout 2 (values in mma.sp fragment order)."""
    from safetensors.torch import save_file

    from sparse24 import ops
    from sparse24.reference import _values_to_fragment_order

    torch.manual_seed(3)
    dense = ops.prune_24(torch.randn(32, 128, dtype=torch.float16))
    values, meta = ops.compress(dense)
    old = {"values": _values_to_fragment_order(values).contiguous(), "meta": meta,
           "shape": torch.tensor([32, 128], dtype=torch.int32),
           "layout_version": torch.tensor([1], dtype=torch.int32)}
    assert not torch.equal(old["values"], values)
    loaded = Sparse24Weight.from_state_dict(old)
    assert loaded.layout_version == LAYOUT_VERSION == 2
    assert torch.equal(loaded.values, values) and torch.equal(ops.decompress(loaded.values, loaded.meta), dense)
    save_file(old, str(tmp_path / "v1.safetensors"), metadata={"format": "sparse24", "layout_version": "1"})
    assert torch.equal(Sparse24Weight.load(tmp_path / "v1.safetensors").values, values)
