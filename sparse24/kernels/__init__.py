"""Triton kernels of sparse24 (``@triton.jit`` code only), installed as ``sparse24.kernels``."""
