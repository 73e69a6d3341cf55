"""The one tolerance table of the tests, and the error it bounds: relative Frobenius error (norm of
the difference / norm of the reference) allowed per dtype. The reference is float64 (or float32
where said) from the same rounded inputs; the output itself is rounded to its dtype, which bounds
how tight this can be. The table is the package's (sparse24.reference.REL_TOL), which the benches
check against too."""

import torch

from sparse24.reference import REL_TOL


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want||_F / ||want||_F, in float64."""
    got, want = got.detach().double(), want.detach().double()
    return float((got - want).norm() / want.norm())


__all__ = ["REL_TOL", "rel_err"]
