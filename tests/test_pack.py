"""mask_24 / prune_24 / compress / decompress: kernels against the references, bit for bit."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sparse24.ops as ops
from sparse24 import reference as ref
from sparse24.layout import FLOAT_DTYPES, INT_VIEW

DTYPES = list(FLOAT_DTYPES)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(INT_VIEW[t.dtype])


def assert_bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    assert torch.equal(bits(a.cpu()), bits(b.cpu()))


def random_24(n, k, dtype, device, seed_gen=None):
    """A random 2:4 weight with fresh values (never zeros except at pruned positions)."""
    w = torch.randn(n, k, generator=seed_gen).to(dtype)
    return ref.prune_24_ref(w).to(device)


# ------------------------------------------------------------------------ hand-made cases
def test_mask_hand_made_groups():
    w = torch.tensor([[1.0, -3.0, 2.0, 0.5,   0.0, 0.0, 0.0, 0.0],
                      [2.0, 2.0, 2.0, 2.0,   -1.0, 1.0, -1.0, 5.0]])
    expected = torch.tensor([[0, 1, 1, 0,   1, 1, 0, 0],
                             [1, 1, 0, 0,   1, 0, 0, 1]], dtype=torch.bool)
    # ties go to the lower index: all-equal keeps 0 and 1; |-1| == |1| == |-1| keeps 4 (first)
    assert torch.equal(ref.mask_24_ref(w), expected)
    assert torch.equal(ops.mask_24(w.half()), expected)


def test_compress_hand_made_layout():
    """Row 0 of a 16 x 64 weight, groups with known kept positions, at known packed places."""
    w = torch.zeros(16, 64, dtype=torch.float16)
    w[0, 0:4] = torch.tensor([0.0, 7.0, 0.0, 9.0])      # group 0 keeps 1, 3  -> nibble 0b1101
    w[0, 4:8] = torch.tensor([5.0, 0.0, 0.0, 0.0])      # group 1 keeps 0, 1  -> nibble 0b0100
    w[9, 36:40] = torch.tensor([0.0, 0.0, 3.0, 4.0])    # row 9 = g 1, hr 1; group 9 keeps 2, 3
    values, meta = ops.compress(w)
    # natural order (layout 2): group q of row r at values[r, 2q], values[r, 2q + 1]
    assert values[0, 0].item() == 7.0 and values[0, 1].item() == 9.0
    assert values[0, 2].item() == 5.0 and values[0, 3].item() == 0.0
    assert values[9, 18].item() == 3.0 and values[9, 19].item() == 4.0
    assert torch.count_nonzero(values).item() == 5
    # meta word of lane 0 (g 0, t 0) = half-word of groups 0..3 of row 0 | row 8's << 16;
    # row 8 is all zero -> kept (0, 1) in each group -> nibble 0b0100 = 4 -> 0x4444
    assert meta[0, 0, 0].item() == (0xD | 0x4 << 4 | 0x4 << 8 | 0x4 << 12) | (0x4444 << 16)


def test_negative_zero_and_specials_round_trip(device):
    w = torch.zeros(16, 64, dtype=torch.float16)
    w[0, 0:4] = torch.tensor([-0.0, 0.0, float("inf"), 0.0])
    w[1, 4:8] = torch.tensor([6e-8, 0.0, 0.0, -float("inf")])  # a subnormal and -inf
    w[2, 8:12] = torch.tensor([0.0, -0.0, -0.0, 0.0])
    w = w.to(device)
    values, meta = ops.compress(w)
    assert_bitwise_equal(ops.decompress(values, meta), w)
    rv, rm = ref.compress_ref(w.cpu())
    assert_bitwise_equal(values, rv)
    assert torch.equal(meta.cpu(), rm)


# --------------------------------------------------------------------- kernels vs references
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(16, 64), (48, 192), (80, 320), (128, 128)])
def test_kernels_match_references(shape, dtype, device, seed):
    n, k = shape
    w = torch.randn(n, k).to(dtype).to(device)
    assert torch.equal(ops.mask_24(w).cpu(), ref.mask_24_ref(w.cpu()))
    pruned = ops.prune_24(w)
    assert_bitwise_equal(pruned, ref.prune_24_ref(w.cpu()))
    values, meta = ops.compress(pruned)
    rv, rm = ref.compress_ref(pruned.cpu())
    assert_bitwise_equal(values, rv)
    assert torch.equal(meta.cpu(), rm)
    assert_bitwise_equal(ops.decompress(values, meta), pruned)
    assert_bitwise_equal(ref.decompress_ref(rv, rm), pruned.cpu())


@pytest.mark.parametrize("shape", [(3, 8), (5, 36), (33, 260)])
def test_mask_odd_shapes(shape, device, seed):
    w = torch.randn(*shape, dtype=torch.float16, device=device)
    mask = ops.mask_24(w)
    assert torch.equal(mask.cpu(), ref.mask_24_ref(w.cpu()))
    assert torch.all(mask.reshape(shape[0], -1, 4).sum(-1) == 2)


def test_prune_keeps_largest_and_writes_positive_zero(device, seed):
    w = -torch.rand(32, 64, device=device, dtype=torch.float16) - 0.5  # all negative
    pruned = ops.prune_24(w)
    dropped = pruned == 0
    assert torch.all(bits(pruned[dropped]) == 0)  # +0.0, not -0.0
    kept_min = pruned.abs().masked_fill(dropped, float("inf")).reshape(32, 16, 4).amin(-1)
    dropped_max = w.abs().masked_fill(~dropped, 0).reshape(32, 16, 4).amax(-1)
    assert torch.all(kept_min >= dropped_max)


@settings(max_examples=25, deadline=None)
@given(
    tiles_n=st.integers(1, 4),
    chunks=st.integers(1, 4),
    dtype=st.sampled_from(DTYPES),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_round_trip_property(tiles_n, chunks, dtype, density, seed):
    """decompress(compress(w)) == w bit for bit, for 2:4 weights with 0, 1 or 2 entries per group."""
    g = torch.Generator().manual_seed(seed)
    n, k = 16 * tiles_n, 64 * chunks
    w = ref.prune_24_ref(torch.randn(n, k, generator=g).to(dtype))
    w = torch.where(torch.rand(n, k, generator=g) < density, w, torch.zeros((), dtype=dtype))
    values, meta = ops.compress(w)
    assert_bitwise_equal(ops.decompress(values, meta), w)
    rv, rm = ref.compress_ref(w)
    assert_bitwise_equal(values, rv)
    assert torch.equal(meta, rm)


def test_check_false_keeps_two_of_a_dense_group(device):
    w = torch.arange(1, 16 * 64 + 1, dtype=torch.float32, device=device).reshape(16, 64)
    values, meta = ops.compress(w, check=False)
    dense = ops.decompress(values, meta)
    # every group of 4 nonzeros keeps positions 0 and 1 (equal scores: lower index wins)
    expected = w.reshape(16, 16, 4).clone()
    expected[..., 2:] = 0
    assert torch.equal(dense, expected.reshape(16, 64))


# ---------------------------------------------------------------------------- bad input
def test_errors_name_the_problem(device):
    good = random_24(16, 64, torch.float16, device)
    with pytest.raises(ValueError, match="must be 2-D"):
        ops.compress(good.reshape(4, 4, 64))
    with pytest.raises(TypeError, match="unsupported dtype torch.int32"):
        ops.compress(torch.zeros(16, 64, dtype=torch.int32, device=device))
    with pytest.raises(ValueError, match=r"K=96 \(in_features\) must be a multiple of 64"):
        ops.compress(random_24(16, 96, torch.float16, device))
    with pytest.raises(ValueError, match=r"N=24 \(out_features\) must be a multiple of 16"):
        ops.compress(random_24(24, 64, torch.float16, device))
    with pytest.raises(ValueError, match="multiple of 4"):
        ops.mask_24(torch.randn(8, 6, device=device))
    dense = torch.randn(16, 64, device=device, dtype=torch.float16) + 3.0
    with pytest.raises(ValueError, match=r"not 2:4 sparse: row 0, group 0 \(columns 0..3\) has 4"):
        ops.compress(dense)
    nan = good.clone()
    nan[3, 10] = float("nan")
    with pytest.raises(ValueError, match="NaN at row 3, column 10"):
        ops.compress(nan)
    with pytest.raises(ValueError, match="NaN at row 3, column 10"):
        ops.mask_24(nan)
    values, meta = ops.compress(good)
    with pytest.raises(ValueError, match="meta does not match values"):
        ops.decompress(values, meta[:, :, :16].contiguous())
    with pytest.raises(ValueError, match="meta does not match values"):
        ops.decompress(values, meta.to(torch.int64))
    with pytest.raises(ValueError, match="must be contiguous"):
        ops.decompress(values.t().contiguous().t(), meta)
    if device == "cuda":
        with pytest.raises(ValueError, match="values are on cuda:0 but meta is on cpu"):
            ops.decompress(values, meta.cpu())


NAN = float("nan")


@pytest.mark.parametrize("path", ["kernel", "reference"])
@pytest.mark.parametrize("group", [[NAN, 0.0, 0.0, 0.0], [0.0, 1.0, NAN, 0.0], [-0.0, 0.0, 0.0, NAN]],
                         ids=["nan-alone", "nan-and-one", "nan-and-negative-zero"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_compress_refuses_nan_in_an_otherwise_2to4_group(path, group, dtype, device, monkeypatch):
    """A NaN in a group of at most two nonzero values: only the NaN check can refuse it (in
    test_errors_name_the_problem the NaN also makes its group over-full, which the over-full
    check reports the same way). Both the kernel's NaN count and the reference path's check."""
    from sparse24.ops._checks import first_overfull_group, use_triton

    w = random_24(16, 64, dtype, device)
    w[5, 8:12] = torch.tensor(group, dtype=dtype)
    if path == "reference":  # CPU tensors without the interpreter take the reference path
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        w = w.cpu()
    assert use_triton(w) == (path == "kernel")
    assert first_overfull_group(w) is None, "the NaN's group must be 2:4 for this test"
    with pytest.raises(ValueError, match=f"NaN at row 5, column {8 + group.index(NAN)}"):
        ops.compress(w)
    values, meta = ops.compress(w, check=False)  # packed as asked, NaN kept
    assert torch.isnan(values[5]).sum() == 1
    with pytest.raises(ValueError, match=f"NaN at row 5, column {8 + group.index(NAN)}"):
        ops.mask_24(w)


@pytest.mark.parametrize("dtype", DTYPES)
def test_negative_zeros_count_as_zeros(dtype, device):
    """A group of three negative zeros and one value is 2:4: compress packs it as the reference
    does instead of calling it over-full (as the interpreter's bfloat16 comparisons, on raw bits,
    once did)."""
    w = torch.zeros(16, 64, dtype=dtype)
    w[2, 4:8] = torch.tensor([-0.0, -0.0, 3.0, -0.0])
    values, meta = ops.compress(w.to(device))
    rv, rm = ref.compress_ref(w)
    assert_bitwise_equal(values, rv)
    assert torch.equal(meta.cpu(), rm)


def test_non_contiguous_weight_is_handled(device, seed):
    base = random_24(64, 256, torch.float16, device)
    view = base[::2, :128]  # row stride 512, not packed rows
    values, meta = ops.compress(view)
    assert_bitwise_equal(ops.decompress(values, meta), view.contiguous())


# ---------------------------------------------------------------------------- torch.library
def test_opcheck(device, seed):
    w = random_24(32, 128, torch.float16, device)
    values, meta = ops.compress(w)
    torch.library.opcheck(torch.ops.sparse24.mask_24.default, (torch.randn(32, 128, device=device),))
    torch.library.opcheck(torch.ops.sparse24.prune_24.default, (torch.randn(32, 128, device=device),))
    torch.library.opcheck(torch.ops.sparse24.compress.default, (w, True))
    torch.library.opcheck(torch.ops.sparse24.decompress.default, (values, meta))


def test_meta_device_shapes():
    w = torch.empty(48, 128, device="meta", dtype=torch.bfloat16)
    values, meta = torch.ops.sparse24.compress(w, True)
    assert values.shape == (48, 64) and values.dtype == torch.bfloat16
    assert meta.shape == (3, 2, 32) and meta.dtype == torch.int32
    assert torch.ops.sparse24.decompress(values, meta).shape == (48, 128)
    assert torch.ops.sparse24.mask_24(w).dtype == torch.bool
