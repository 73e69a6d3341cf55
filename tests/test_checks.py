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
