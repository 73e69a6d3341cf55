"""sparse24: Triton kernels for 2:4 (semi-structured) sparsity on NVIDIA sparse tensor cores."""

from sparse24.layout import LAYOUT_VERSION
from sparse24.weight import Sparse24Weight

__version__ = "0.1.0"
__all__ = ["LAYOUT_VERSION", "Sparse24Weight", "__version__", "prune_", "sparsify_", "squash_"]


def __getattr__(name):
    # The model layer is imported on first use: `import sparse24.ops` stays light.
    if name in ("prune_", "sparsify_", "squash_"):
        import sparse24.nn

        return getattr(sparse24.nn, name)
    raise AttributeError(f"module 'sparse24' has no attribute {name!r}")
