"""Model layer: SparseLinear, and in-place model passes for training (prune_, squash_) and
inference (sparsify_).

    prune_(model)       # fixed 2:4 magnitude masks as parametrizations; fine-tune as usual
    squash_(model)      # make the masks permanent
    report = sparsify_(model)   # pack 2:4 Linear layers into SparseLinear, fuse FFN activations
    print(report)
"""

from sparse24.nn import hf  # registers the "sparse24" quantization method with transformers
from sparse24.nn.gated_mlp import SparseGatedMLP
from sparse24.nn.linear import ACTIVATION_NAMES, SparseLinear
from sparse24.nn.prune import Mask24, PruneReport, prune_, squash_
from sparse24.nn.sparsify import SparsifyReport, sparsify_

__all__ = [
    "ACTIVATION_NAMES", "Mask24", "PruneReport", "SparseGatedMLP", "SparseLinear", "SparsifyReport",
    "prune_", "sparsify_", "squash_",
]
