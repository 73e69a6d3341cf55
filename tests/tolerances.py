"""The one tolerance table of the tests: relative Frobenius error (norm of the difference / norm
of the reference) allowed per dtype. The reference is float64 (or float32 where said) from the same
rounded inputs; the output itself is rounded to its dtype, which bounds how tight this can be.
It is the package's table (sparse24.reference.REL_TOL), which the benches check against too."""

from sparse24.reference import REL_TOL

__all__ = ["REL_TOL"]
