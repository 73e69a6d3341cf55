"""The shared checks of packed weights and 2:4 weights (sparse24.layout, sparse24.ops._checks)."""

import pytest
import torch

from sparse24.layout import meta_error, meta_shape, placement_error
from sparse24.nn._select import not_24_reason
from sparse24.ops import compress
from sparse24.ops._checks import first_nan, first_overfull_group, raise_first_bad_group


def _two_per_group(n: int = 16, k: int = 64) -> torch.Tensor:
    w = torch.zeros(n, k)
    w[:, 0::4] = 1.0
    w[:, 3::4] = -2.0
    return w


def test_a_group_with_three_nonzeros_is_the_first_bad_one():
    w = _two_per_group()
    assert first_overfull_group(w) is None and first_nan(w) is None
    raise_first_bad_group(w)  # nothing to report: returns quietly
    w[5, 9] = 3.0  # group 2 of row 5 now holds three nonzero values
    w[7, 1] = 3.0
    assert first_overfull_group(w) == (5, 2, 3, 2)
    with pytest.raises(ValueError, match=r"row 5, group 2 \(columns 8..11\) has 3 nonzero values.*2 such"):
        compress(w)
    assert "row 5, columns 8..11 hold 3 nonzero values; 2 such groups" in not_24_reason(w)


def test_nan_comes_before_the_groups():
    w = _two_per_group()
    w[:, 1] = 5.0  # the first group of every row now holds three nonzero values
    w[4, 50] = float("nan")
    assert first_nan(w) == (4, 50)
    with pytest.raises(ValueError, match="NaN at row 4, column 50"):
        raise_first_bad_group(w)
    assert not_24_reason(w) == "weight has NaN"


def test_meta_error_names_dtype_and_shape():
    meta = torch.zeros(meta_shape(32, 128), dtype=torch.int32)
    assert meta_error(meta, 32, 128) is None
    assert "a packed [32, 128] weight has int32 meta of shape [2, 2, 32]" in meta_error(meta.long(), 32, 128)
    assert "meta is torch.int32 of shape [2, 2, 32]" in meta_error(meta, 32, 192)


def test_placement_error():
    values, meta = torch.zeros(16, 32), torch.zeros(1, 1, 32, dtype=torch.int32)
    assert placement_error(values, meta) is None
    assert "values are on cpu but meta is on meta" in placement_error(values, meta.to("meta"))
    assert "must be contiguous" in placement_error(values.t().contiguous().t(), meta)


# ------------------------------------------------------------------------ ops.runs_kernels
@pytest.mark.parametrize("interpret", ["0", "1"])
@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1", "meta"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_runs_kernels_answers_as_the_private_checks(monkeypatch, interpret, device, dtype):
    """The public sparse24.ops.runs_kernels (what the SQuAD app asks) is use_triton(t) and
    t.dtype in GEMM_DTYPES, the rule ops.linear follows, for every device, dtype and interpreter."""
    from types import SimpleNamespace

    import sparse24.ops
    from sparse24.ops._checks import GEMM_DTYPES, use_triton

    monkeypatch.setenv("TRITON_INTERPRET", interpret)
    dev = torch.device(device)
    # use_triton reads only is_cuda and device: a stand-in serves for CUDA on a machine without one
    t = SimpleNamespace(is_cuda=dev.type == "cuda", device=dev, dtype=dtype)
    private = use_triton(t) and t.dtype in GEMM_DTYPES
    assert sparse24.ops.runs_kernels(dev, dtype) is private
    assert sparse24.ops.runs_kernels(device, dtype) is private  # a str device too
    assert "runs_kernels" in sparse24.ops.__all__


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_runs_kernels_says_whether_linear_runs_the_kernels(monkeypatch, dtype):
    """On CPU under the interpreter: fp16 runs the kernels, float32 the PyTorch reference."""
    import sparse24.ops
    from sparse24.ops import gemm

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    calls = []
    linear_ref = gemm.reference.linear_ref
    monkeypatch.setattr(gemm.reference, "linear_ref",
                        lambda *args, **kwargs: calls.append(1) or linear_ref(*args, **kwargs))
    values, meta = compress(_two_per_group(16, 64).to(dtype))
    sparse24.ops.linear(torch.ones(1, 64, dtype=dtype), values, meta)
    kernels = not calls  # the reference was not called
    assert kernels is (dtype == torch.float16)
    assert sparse24.ops.runs_kernels("cpu", dtype) is kernels
