"""The epilogue activations of sparse24.ops.linear, defined once.

``EPILOGUE_CODES`` maps each name to the int code the Triton epilogue takes
(sparse24/kernels/epilogue.py, ``_activate``, reads its codes from here); ``NAMES`` is the tuple of
the accepted names (``sparse24.nn.ACTIVATION_NAMES``); ``REFERENCE`` maps the same names to the
plain-PyTorch function (float32 and up), which ``sparse24.reference`` uses.

Gated forms (``GATED``: SwiGLU, GEGLU, ReGLU) take a weight whose rows hold two projections of
the same input, a gate and an "up" one, and return ``act(gate) * up``: half as many outputs as
the weight has rows. The rows are interleaved in blocks of 8 (``sparse24.layout.interleave_gate_up``):
rows 16g .. 16g + 7 are gate features 8g .. 8g + 7 and rows 16g + 8 .. 16g + 15 the same up
features. Why 8: in the accumulator of both mma.sp (m16n8k32) and wgmma (m64nNk32) a thread holds
rows r and r + 8 of each 16-row block, so each output's two operands are already in one thread's
registers. Their codes are the activation's code plus ``GATED_FLAG``.
"""

from __future__ import annotations

import torch.nn.functional as F

EPILOGUE_CODES: dict[str | None, int] = {None: 0, "relu": 1, "gelu": 2, "gelu_tanh": 3, "silu": 4}
"""None, ReLU, GELU in its erf form (nn.GELU(), Hugging Face "gelu"), GELU's tanh approximation
(nn.GELU(approximate="tanh"), Hugging Face "gelu_new"), SiLU (x * sigmoid(x), Hugging Face
"silu"/"swish")."""

NAMES: tuple[str | None, ...] = tuple(EPILOGUE_CODES)

REFERENCE = {
    None: lambda y: y,
    "relu": F.relu,
    "gelu": lambda y: F.gelu(y, approximate="none"),
    "gelu_tanh": lambda y: F.gelu(y, approximate="tanh"),
    "silu": F.silu,
}
assert REFERENCE.keys() == EPILOGUE_CODES.keys()

GELU_APPROXIMATE: dict[str, str] = {"none": "gelu", "tanh": "gelu_tanh"}
"""F.gelu's / nn.GELU's ``approximate`` -> the epilogue that computes it."""
assert set(GELU_APPROXIMATE.values()) <= EPILOGUE_CODES.keys()

GATED_FLAG = 8
"""Added to an activation's code for its gated form; every plain code is below it."""
assert max(EPILOGUE_CODES.values()) < GATED_FLAG

GATED: dict[str, str] = {"swiglu": "silu", "geglu": "gelu", "geglu_tanh": "gelu_tanh",
                         "reglu": "relu"}
"""Gated epilogue -> the activation of its gate: SwiGLU (Llama, Mistral, Qwen MLPs), GEGLU in
the erf and tanh forms (Gemma's MLP uses the tanh one), ReGLU."""

GATED_CODES: dict[str, int] = {name: EPILOGUE_CODES[act] + GATED_FLAG for name, act in GATED.items()}

ALL_CODES: dict[str | None, int] = {**EPILOGUE_CODES, **GATED_CODES}
"""Every activation sparse24.ops.linear takes, plain and gated, by code."""


def is_gated(activation: str | None) -> bool:
    return activation in GATED
