"""sparse24's public ops. ``import sparse24.ops`` registers them under ``torch.ops.sparse24``.

Weights are 2-D [N, K] (nn.Linear layout), 2:4 along K. Packing needs N % 16 == 0 and K % 64 == 0.
``runs_kernels(device, dtype)`` says whether ``linear`` runs the Triton kernels for such tensors or
its PyTorch reference.
"""

from sparse24.ops._checks import runs_kernels
from sparse24.ops.gemm import linear
from sparse24.ops.pack import compress, decompress, mask_24, prune_24

__all__ = ["compress", "decompress", "linear", "mask_24", "prune_24", "runs_kernels"]
