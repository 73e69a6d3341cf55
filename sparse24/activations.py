"""The epilogue activations of sparse24.ops.linear, defined once.

``EPILOGUE_CODES`` maps each name to the int code the Triton epilogue takes
(sparse24/kernels/epilogue.py, ``_activate``, reads its codes from here); ``NAMES`` is the tuple of
the accepted names (``sparse24.nn.ACTIVATION_NAMES``); ``REFERENCE`` maps the same names to the
plain-PyTorch function (float32 and up), which ``sparse24.reference`` uses.
"""

from __future__ import annotations

import torch.nn.functional as F

EPILOGUE_CODES: dict[str | None, int] = {None: 0, "relu": 1, "gelu": 2, "gelu_tanh": 3}
"""None, ReLU, GELU in its erf form (nn.GELU(), Hugging Face "gelu"), GELU's tanh approximation
(nn.GELU(approximate="tanh"), Hugging Face "gelu_new")."""

NAMES: tuple[str | None, ...] = tuple(EPILOGUE_CODES)

REFERENCE = {
    None: lambda y: y,
    "relu": F.relu,
    "gelu": lambda y: F.gelu(y, approximate="none"),
    "gelu_tanh": lambda y: F.gelu(y, approximate="tanh"),
}
assert REFERENCE.keys() == EPILOGUE_CODES.keys()

GELU_APPROXIMATE: dict[str, str] = {"none": "gelu", "tanh": "gelu_tanh"}
"""F.gelu's / nn.GELU's ``approximate`` -> the epilogue that computes it."""
assert set(GELU_APPROXIMATE.values()) <= EPILOGUE_CODES.keys()
