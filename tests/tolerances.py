"""The one tolerance table of the tests: relative Frobenius error (norm of the difference / norm
of the reference) allowed per dtype. The reference is float64 (or float32 where said) from the same
rounded inputs; the output itself is rounded to its dtype, which bounds how tight this can be."""

import torch

REL_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}
