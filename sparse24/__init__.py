"""sparse24: Triton kernels for 2:4 (semi-structured) sparsity on NVIDIA sparse tensor cores."""

from sparse24.layout import LAYOUT_VERSION

__version__ = "0.1.0"
__all__ = ["LAYOUT_VERSION", "__version__"]
