"""Sparse24Weight: one 2:4 weight in sparse24's packed layout, with its dense shape and layout version.

A small, framework-free holder of what ``sparse24.ops.compress`` produces, for code that wants to
pass a packed weight around (or store it) without an ``nn.Module``::

    w = Sparse24Weight.from_dense(dense)            # dense: [N, K] float, 2:4 along K
    y = w.linear(x, bias, activation="gelu")        # sparse24.ops.linear
    w.save("w.safetensors"); w = Sparse24Weight.load("w.safetensors", device="cuda")

Importing this module is cheap: it needs torch and ``sparse24.layout`` only. ``sparse24.ops``
(which builds the Triton kernels) is imported on first use, and ``safetensors`` only by
``save`` / ``load``.

Errors: ``TypeError`` for an argument of the wrong kind or dtype; ``ValueError`` for shapes,
devices, layout versions and checkpoints that do not fit, each message naming what does not match.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from sparse24.layout import (
    FLOAT_DTYPES, LAYOUT_VERSION, granularity_error, meta_shape, placement_error, values_shape,
)

_KEYS = ("values", "meta", "shape", "layout_version")
FILE_FORMAT = "sparse24"
"""The ``format`` entry of the metadata of a safetensors file written by ``Sparse24Weight.save``."""


def _ops():
    # Deferred: importing sparse24.ops builds the Triton kernels and registers torch.library ops,
    # which must not happen as a side effect of importing sparse24 (TRITON_INTERPRET is read then).
    import sparse24.ops

    return sparse24.ops


def _version_mismatch(version: Any) -> str:
    return (f"layout version {version} does not match this sparse24's layout version "
            f"{LAYOUT_VERSION}; repack it from the dense weight with Sparse24Weight.from_dense")


@dataclass(frozen=True, eq=False, repr=False)
class Sparse24Weight:
    """A dense 2:4 weight W [N, K] (nn.Linear layout) held packed: ``values`` and ``meta``.

    - ``values``: [N, K/2], float16 / bfloat16 / float32, contiguous, natural row-major order
      (row n holds the kept values of row n of W; see ``sparse24/kernels/pack.py``). A layout-1 state dict
      or file (values in mma.sp fragment order) is converted when loaded.
    - ``meta``: int32 [N/16, K/64, 32], contiguous, on the same device.
    - ``shape``: the dense shape (N, K), N % 16 == 0 and K % 64 == 0.
    - ``layout_version``: the packed layout the tensors are in; only ``sparse24.LAYOUT_VERSION``
      is accepted.

    Everything is checked at construction. The object is frozen (fields cannot be reassigned);
    the tensors themselves are not copied, so in-place edits of them show through. Methods that
    change dtype or device return a new object.
    """

    values: torch.Tensor
    meta: torch.Tensor
    shape: tuple[int, int]
    layout_version: int = LAYOUT_VERSION

    def __post_init__(self) -> None:
        values, meta = self.values, self.meta
        for name, t in (("values", values), ("meta", meta)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"Sparse24Weight: {name} must be a torch.Tensor, got {type(t).__name__}")
        if isinstance(self.layout_version, bool):
            raise TypeError("Sparse24Weight: layout_version must be an int, got a bool")
        try:
            version = operator.index(self.layout_version)
        except TypeError:
            raise TypeError(
                f"Sparse24Weight: layout_version must be an int, got {type(self.layout_version).__name__}"
            ) from None
        if version != LAYOUT_VERSION:
            raise ValueError(f"Sparse24Weight: {_version_mismatch(version)}")
        object.__setattr__(self, "layout_version", version)

        shape = _dense_shape(self.shape)
        object.__setattr__(self, "shape", shape)
        n, k = shape
        problem = granularity_error(n, k)
        if problem:
            raise ValueError(f"Sparse24Weight: cannot hold a weight of shape {list(shape)}: {problem}")

        if values.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"Sparse24Weight: values have dtype {values.dtype}; use float16, bfloat16 or float32"
            )
        if tuple(values.shape) != values_shape(n, k):
            raise ValueError(
                f"Sparse24Weight: values have shape {list(values.shape)}, but a packed "
                f"{list(shape)} weight has values of shape {list(values_shape(n, k))}"
            )
        if meta.dtype != torch.int32:
            raise TypeError(
                f"Sparse24Weight: meta has dtype {meta.dtype}, must be torch.int32 (its words are bit "
                "patterns: they cannot be cast to another dtype)"
            )
        if tuple(meta.shape) != meta_shape(n, k):
            raise ValueError(
                f"Sparse24Weight: meta has shape {list(meta.shape)}, but a packed {list(shape)} "
                f"weight has meta of shape {list(meta_shape(n, k))}"
            )
        problem = placement_error(values, meta)
        if problem:
            raise ValueError(f"Sparse24Weight: {problem}")

    # ------------------------------------------------------------------------ construction
    @classmethod
    def from_dense(cls, w: torch.Tensor, check: bool = True) -> Sparse24Weight:
        """Pack a dense 2:4 weight [N, K] with ``sparse24.ops.compress``.

        With ``check=True`` (the default) a weight that is not 2:4 (or has NaN) is refused with an
        error naming the first bad group; prune it first with ``sparse24.ops.prune_24``.
        ``check=False`` keeps the two highest-scoring entries of each group silently.
        """
        if not isinstance(w, torch.Tensor):
            raise TypeError(f"Sparse24Weight.from_dense: expected a torch.Tensor, got {type(w).__name__}")
        w = w.detach()
        values, meta = _ops().compress(w, check=check)
        return cls(values, meta, tuple(w.shape))

    @classmethod
    def from_semi_structured(cls, t: torch.Tensor, check: bool = True) -> Sparse24Weight:
        """Convert a ``torch.sparse.SparseSemiStructuredTensor`` (CUTLASS or cuSPARSELt backend).

        torch's packed formats are not sparse24's: the weight is unpacked with ``t.to_dense()`` and
        re-packed into sparse24's own layout with ``from_dense`` (a new copy of the weight on t's
        device; ``t`` is not modified and shares nothing with the result). Only the strict type is
        accepted: a plain tensor also has ``to_dense()``, so use ``from_dense`` for it.

        The cuSPARSELt subclass unpacks through a product with the identity, so a kept Inf or NaN
        weight comes back as NaN in its whole row; finite weights come back exactly.
        """
        semi = torch.sparse.SparseSemiStructuredTensor
        if not isinstance(t, semi):
            hint = (" (a dense tensor: use Sparse24Weight.from_dense)"
                    if isinstance(t, torch.Tensor) else "")
            raise TypeError(
                "Sparse24Weight.from_semi_structured: expected a torch.sparse.SparseSemiStructuredTensor, "
                f"got {type(t).__name__}{hint}"
            )
        return cls.from_dense(t.detach().to_dense(), check=check)

    # ------------------------------------------------------------------------ use
    def to_dense(self) -> torch.Tensor:
        """The dense weight [N, K] (``sparse24.ops.decompress``), +0.0 at pruned positions."""
        return _ops().decompress(self.values, self.meta)

    def linear(
        self, x: torch.Tensor, bias: torch.Tensor | None = None, activation: str | None = None
    ) -> torch.Tensor:
        """``act(x @ W^T + bias)`` through ``sparse24.ops.linear`` (activation: None, "relu",
        "gelu", "gelu_tanh", "silu", or a gated form ("swiglu", ...) for a weight whose rows
        ``sparse24.layout.interleave_gate_up`` ordered). x: [..., K] of the weight's dtype, on
        its device."""
        return _ops().linear(x, self.values, self.meta, bias, activation)

    def to(
        self,
        device: torch.device | str | int | None = None,
        dtype: torch.dtype | None = None,
    ) -> Sparse24Weight:
        """A copy on ``device`` with values cast to ``dtype`` (float16, bfloat16 or float32).

        meta stays int32 (its words are bit patterns, not numbers). ``w.to(torch.float16)`` is
        accepted too. Returns ``self`` when nothing changes. Casting values is exact for the
        layout: the result unpacks to ``self.to_dense().to(dtype)``.
        """
        if isinstance(device, torch.dtype) and dtype is None:
            device, dtype = None, device
        if dtype is not None:
            if not isinstance(dtype, torch.dtype):
                raise TypeError(f"Sparse24Weight.to: dtype must be a torch.dtype, got {dtype!r}")
            if dtype not in FLOAT_DTYPES:
                raise TypeError(
                    f"Sparse24Weight.to: cannot cast values to {dtype}; use float16, bfloat16 or float32"
                )
        values = self.values.to(device=device, dtype=dtype)
        meta = self.meta.to(device=device)
        if values is self.values and meta is self.meta:
            return self
        return Sparse24Weight(values, meta, self.shape, self.layout_version)

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def nbytes(self) -> int:
        """Bytes held: values plus meta (9/16 of the dense weight in float16)."""
        return self.values.numel() * self.values.element_size() + self.meta.numel() * 4

    @property
    def density(self) -> float:
        """Share of the dense weight's entries that the format stores: 0.5, by construction.

        This is the structural density of 2:4 and costs nothing (no device sync, no read of the
        data). A weight may have further zeros among its kept entries; their share of the dense
        weight is ``torch.count_nonzero(w.values).item() / (N * K)`` if you need it.
        """
        return 0.5

    def __repr__(self) -> str:
        return (
            f"Sparse24Weight(shape={list(self.shape)}, dtype={self.dtype}, device={self.device}, "
            f"layout_version={self.layout_version}, values={list(self.values.shape)}, "
            f"meta={list(self.meta.shape)} int32, nbytes={self.nbytes})"
        )

    # ------------------------------------------------------------------------ state dict
    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """``{prefix}values``, ``{prefix}meta``, ``{prefix}shape`` (int64 [2], CPU) and
        ``{prefix}layout_version`` (int32 [1], CPU): tensors only, so safetensors can store it.
        values and meta are the held tensors (not copies), as ``nn.Module.state_dict`` does."""
        return {
            prefix + "values": self.values.detach(),
            prefix + "meta": self.meta.detach(),
            prefix + "shape": torch.tensor(self.shape, dtype=torch.int64),
            prefix + "layout_version": torch.tensor([self.layout_version], dtype=torch.int32),
        }

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], prefix: str = "") -> Sparse24Weight:
        """Inverse of ``state_dict``; other keys (without the four of this weight) are ignored.

        The layout version is checked first, so a checkpoint of another layout is refused as such
        rather than for its shapes.
        """
        if prefix + "layout_version" not in state_dict and prefix + "_extra_state" in state_dict:
            return cls._from_module_state_dict(state_dict, prefix)
        missing = [prefix + key for key in _KEYS if prefix + key not in state_dict]
        if missing:
            raise ValueError(
                f"Sparse24Weight.from_state_dict: missing {', '.join(missing)} (a Sparse24Weight state "
                f"dict has {', '.join(prefix + key for key in _KEYS)}; a SparseLinear's has values, "
                "meta and _extra_state)"
            )
        version_record = state_dict[prefix + "layout_version"]
        version = _integer_record(version_record, 1)
        if version is None:
            raise ValueError(
                f"Sparse24Weight.from_state_dict: {prefix}layout_version must be an integer tensor "
                f"of one element, got {_describe(version_record)}"
            )
        values, version = natural_values(state_dict[prefix + "values"], version[0])
        if version != LAYOUT_VERSION:
            raise ValueError(f"Sparse24Weight.from_state_dict: {prefix}layout_version: "
                             f"{_version_mismatch(version)}")
        shape_record = state_dict[prefix + "shape"]
        shape = _integer_record(shape_record, 2)
        if shape is None:
            raise ValueError(
                f"Sparse24Weight.from_state_dict: {prefix}shape must be an integer tensor [N, K], got "
                f"{_describe(shape_record)}"
            )
        return cls(values, state_dict[prefix + "meta"], tuple(shape), version)

    @classmethod
    def _from_module_state_dict(cls, state_dict: Mapping[str, Any], prefix: str) -> Sparse24Weight:
        """A SparseLinear's entries (values, meta, _extra_state = the layout version): the dense
        shape is [N, 2 * values' columns]."""
        if _integer_record(state_dict[prefix + "_extra_state"], 2) is not None:
            # [version, 1]: a gated layer's (sparse24/nn/linear.py), rows interleaved gate/up
            raise ValueError(f"Sparse24Weight.from_state_dict: {prefix} is a gated layer's packed "
                             "weight (gate and up rows interleaved, sparse24.layout."
                             "interleave_gate_up), not a plain one; split its rows first")
        record = _integer_record(state_dict[prefix + "_extra_state"], 1)
        if record is None:
            raise ValueError(f"Sparse24Weight.from_state_dict: {prefix}_extra_state must be the "
                             "layout version, an integer tensor of one element")
        if prefix + "meta" not in state_dict or prefix + "values" not in state_dict:
            raise ValueError(f"Sparse24Weight.from_state_dict: {prefix}values and {prefix}meta "
                             "are needed")
        values, version = natural_values(state_dict[prefix + "values"], record[0])
        if version != LAYOUT_VERSION:
            raise ValueError(f"Sparse24Weight.from_state_dict: {prefix}_extra_state: "
                             f"{_version_mismatch(version)}")
        if not isinstance(values, torch.Tensor) or values.dim() != 2:
            raise ValueError(f"Sparse24Weight.from_state_dict: {prefix}values must be 2-D [N, K/2]")
        return cls(values, state_dict[prefix + "meta"], (values.shape[0], values.shape[1] * 2), version)

    # ------------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> None:
        """Write a safetensors file: the tensors of ``state_dict()`` and the metadata
        ``{"format": "sparse24", "layout_version": "<version>"}``."""
        from safetensors.torch import save_file

        metadata = {"format": FILE_FORMAT, "layout_version": str(self.layout_version)}
        save_file(self.state_dict(), os.fspath(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str | int = "cpu") -> Sparse24Weight:
        """Read a file written by ``save``, onto ``device``.

        A safetensors file without ``format: sparse24`` in its metadata, or of another layout
        version, is refused before any tensor is read.
        """
        from safetensors import safe_open

        path = os.fspath(path)
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FILE_FORMAT:
                found = (f"format {metadata['format']!r}" if "format" in metadata
                         else "no 'format' entry")
                raise ValueError(
                    f"Sparse24Weight.load: {path} is not a sparse24 weight file: its safetensors "
                    f"metadata has {found}, expected format {FILE_FORMAT!r} (files written by "
                    "Sparse24Weight.save)"
                )
            version = metadata.get("layout_version")
            if version is None:
                raise ValueError(f"Sparse24Weight.load: {path} has no 'layout_version' in its metadata")
            if version not in (str(LAYOUT_VERSION), "1"):  # 1 is converted by from_state_dict
                raise ValueError(f"Sparse24Weight.load: {path}: {_version_mismatch(version)}")
            state = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (a file, not a dict)
        return cls.from_state_dict(state).to(device=device)


def natural_values(values: Any, version: int) -> tuple[Any, int]:
    """(values in this layout, its version): layout-1 values (mma.sp fragment order, before
    2026-12-02; the metadata did not change) converted to layout 2, others as they are. The one
    layout-1 conversion of Sparse24Weight and SparseLinear checkpoints."""
    if version == 1 and isinstance(values, torch.Tensor) and values.dim() == 2:
        from sparse24.reference import values_v1_to_natural

        return values_v1_to_natural(values), LAYOUT_VERSION
    return values, version


def _dense_shape(shape: Any) -> tuple[int, int]:
    if isinstance(shape, torch.Tensor):
        record = _integer_record(shape, 2)
        if record is None:
            raise ValueError(f"Sparse24Weight: shape must be (N, K), got {_describe(shape)}")
        return record[0], record[1]
    try:
        items = tuple(shape)
        dims = tuple(operator.index(d) for d in items)
    except TypeError:
        raise TypeError(f"Sparse24Weight: shape must be a pair of ints (N, K), got {shape!r}") from None
    if len(dims) != 2 or any(isinstance(d, bool) for d in items):
        raise ValueError(f"Sparse24Weight: shape must be the dense shape (N, K), got {shape!r}")
    if min(dims) <= 0:
        raise ValueError(f"Sparse24Weight: shape must be positive, got {list(dims)}")
    return dims[0], dims[1]


def _integer_record(t: Any, numel: int) -> list[int] | None:
    """The values of an integer tensor of ``numel`` elements (any shape) as ints, else None."""
    if (not isinstance(t, torch.Tensor) or t.numel() != numel or t.dtype.is_floating_point
            or t.dtype.is_complex or t.dtype == torch.bool):
        return None
    return [int(v) for v in t.reshape(-1).tolist()]


def _describe(t: Any) -> str:
    if isinstance(t, torch.Tensor):
        return f"a {t.dtype} tensor of shape {list(t.shape)}"
    return repr(t)


__all__ = ["FILE_FORMAT", "Sparse24Weight"]
