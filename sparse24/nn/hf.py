"""Hugging Face integration: a sparsified model saves with ``save_pretrained`` and comes back
exactly with ``from_pretrained``.

``sparsify_`` writes what it changed into ``model.config.quantization_config`` (a
``Sparse24Config``, ``quant_method: "sparse24"``): the Linear layers it packed (with their fused
activation), the Q/K/V groups it packed as one, the activations it replaced by ``nn.Identity``,
and the packed layout's version. ``save_pretrained`` writes that into ``config.json`` and the
packed tensors (``*.values``, ``*.meta``, ``*.bias``) into the weights file, as ``state_dict()``
has them.

transformers lets a package register a quantization method; sparse24 registers ``sparse24``
when ``sparse24.nn`` is imported with transformers installed. ``from_pretrained`` then builds
the model's skeleton on the meta device, ``Sparse24HfQuantizer`` rebuilds the recorded structure
on it (empty SparseLinear layers, the fused groups, the identities), and transformers fills the
packed buffers from the checkpoint: the model that was saved, kernels and all.

Without ``import sparse24.nn`` first, transformers does not know the method: it warns "Unknown
quantization type, got sparse24" and loads a dense model with the Linear weights missing. That
warning is transformers' own; sparse24 cannot be asked before it is imported (README).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from sparse24.layout import LAYOUT_VERSION

QUANT_METHOD = "sparse24"


def _transformers_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("transformers") is not None


def structure_of(model: nn.Module, identities: list[str]) -> dict[str, Any]:
    """What ``sparsify_`` changed in ``model``, as plain JSON data (see Sparse24Config)."""
    from sparse24.nn.linear import SparseLinear
    from sparse24.nn.shared_input import FUSED_NAME, ProjectionSlice

    linears: dict[str, str | None] = {}
    groups: dict[str, list[str]] = {}
    fused = set()  # the packed groups' SparseLinear modules: rebuilt with their group
    for fqn, module in model.named_modules():
        slices = [(child.start, name) for name, child in module._modules.items()
                  if isinstance(child, ProjectionSlice)]
        if slices:
            groups[fqn] = [name for _, name in sorted(slices)]
            fused.add(id(module._modules[FUSED_NAME]))
    for fqn, module in model.named_modules():
        if isinstance(module, SparseLinear) and id(module) not in fused:
            linears[fqn] = module.activation
    return {"layout_version": LAYOUT_VERSION, "linears": linears, "groups": groups,
            "identities": sorted(set(identities))}


def record_structure(model: nn.Module, report, identity_at: list[tuple[nn.Module, str]]) -> None:
    """Store what ``sparsify_`` did in ``model.config.quantization_config`` when ``model`` is a
    transformers model (anything with a ``config`` that transformers can save); a no-op else."""
    config = getattr(model, "config", None)
    if config is None or not _transformers_available():
        return
    from transformers import PretrainedConfig

    if not isinstance(config, PretrainedConfig):
        return
    where = {id(m): fqn for fqn, m in model.named_modules()}
    identities = [f"{where[id(block)]}.{attr}".lstrip(".") for block, attr in identity_at]
    previous = getattr(config, "quantization_config", None)
    if isinstance(previous, Sparse24Config):  # sparsify_ called again: keep what it did before
        identities += previous.identities
    config.quantization_config = Sparse24Config(**structure_of(model, identities))


def rebuild_(model: nn.Module, structure: dict[str, Any]) -> None:
    """Apply a recorded structure to a dense skeleton: the Linear layers become SparseLinear
    layers of the same shapes, dtype and device, holding an all-zero packed weight until a
    checkpoint fills them. Each problem (a module that is not there or not a Linear) is named."""
    from sparse24.nn.linear import SparseLinear
    from sparse24.nn.shared_input import install_fused_, move_hooks

    for fqn in structure.get("identities", []):
        parent, name = _parent_of(model, fqn)
        setattr(parent, name, nn.Identity())
    for fqn, activation in structure.get("linears", {}).items():
        parent, name = _parent_of(model, fqn)
        linear = _linear_at(parent, name, fqn)
        sparse = SparseLinear(linear.in_features, linear.out_features, bias=linear.bias is not None,
                              activation=activation, device=linear.weight.device,
                              dtype=linear.weight.dtype)
        move_hooks(linear, sparse)
        setattr(parent, name, sparse)
    for fqn, names in structure.get("groups", {}).items():
        block = model.get_submodule(fqn) if fqn else model
        for name in names:
            _linear_at(block, name, f"{fqn}.{name}")
        install_fused_(block, tuple(names))


def _parent_of(model: nn.Module, fqn: str) -> tuple[nn.Module, str]:
    parent_fqn, _, name = fqn.rpartition(".")
    try:
        parent = model.get_submodule(parent_fqn) if parent_fqn else model
    except AttributeError:
        raise ValueError(f"sparse24: the checkpoint's structure names {fqn!r}, which this model "
                         "does not have: was it saved from another architecture?") from None
    if name not in parent._modules:
        raise ValueError(f"sparse24: the checkpoint's structure names {fqn!r}, which this model "
                         "does not have: was it saved from another architecture?")
    return parent, name


def _linear_at(parent: nn.Module, name: str, fqn: str) -> nn.Linear:
    module = getattr(parent, name, None)
    if not isinstance(module, nn.Linear):
        raise ValueError(f"sparse24: the checkpoint packs {fqn!r} as a 2:4 Linear layer, but this "
                         f"model has {type(module).__name__} there")
    return module


if _transformers_available():
    from transformers.quantizers import HfQuantizer, register_quantization_config, register_quantizer
    from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING
    from transformers.utils.quantization_config import QuantizationConfigMixin

    class Sparse24Config(QuantizationConfigMixin):
        """``quantization_config`` of a model that ``sparsify_`` packed: enough to rebuild it.

        linears: fqn -> fused activation (None, "relu", "gelu", "gelu_tanh") of each SparseLinear;
        groups: block fqn -> the projection names packed as one SparseLinear at ``block.qkv``;
        identities: fqns of activations moved into an epilogue (now ``nn.Identity``);
        layout_version: the packed layout of the weights file.
        """

        def __init__(self, linears: dict | None = None, groups: dict | None = None,
                     identities: list | None = None, layout_version: int = LAYOUT_VERSION,
                     **kwargs: Any) -> None:
            self.quant_method = QUANT_METHOD
            self.linears = dict(linears or {})
            self.groups = {k: list(v) for k, v in (groups or {}).items()}
            self.identities = list(identities or [])
            self.layout_version = layout_version

    class Sparse24HfQuantizer(HfQuantizer):
        """Loads what ``save_pretrained`` wrote of a sparsified model (see the module docstring).
        Loading only: a dense checkpoint is pruned with ``sparse24.nn.prune_`` and fine-tuned
        first, so ``from_pretrained(..., quantization_config=Sparse24Config())`` is refused."""

        requires_calibration = True  # transformers refuses to "quantize" a dense checkpoint with it

        def validate_environment(self, *args: Any, **kwargs: Any) -> None:
            version = self.quantization_config.layout_version
            if version != LAYOUT_VERSION:
                raise ValueError(
                    f"sparse24: this checkpoint was packed with layout version {version}; this "
                    f"sparse24 reads layout version {LAYOUT_VERSION}. Load the weights with the "
                    "sparse24 that wrote them, save the dense model, and sparsify it again")

        def _process_model_before_weight_loading(self, model: nn.Module, **kwargs: Any) -> None:
            rebuild_(model, {"linears": self.quantization_config.linears,
                             "groups": self.quantization_config.groups,
                             "identities": self.quantization_config.identities})

        def _process_model_after_weight_loading(self, model: nn.Module, **kwargs: Any) -> nn.Module:
            return model

        def is_serializable(self, *args: Any, **kwargs: Any) -> bool:
            return True

        @property
        def is_trainable(self) -> bool:
            return False  # SparseLinear has no backward: inference only

    # Registered once per process, also when this module is reloaded (tests do).
    if QUANT_METHOD not in AUTO_QUANTIZATION_CONFIG_MAPPING:
        register_quantization_config(QUANT_METHOD)(Sparse24Config)
        register_quantizer(QUANT_METHOD)(Sparse24HfQuantizer)
    else:
        Sparse24Config = AUTO_QUANTIZATION_CONFIG_MAPPING[QUANT_METHOD]  # noqa: F811
        Sparse24HfQuantizer = AUTO_QUANTIZER_MAPPING[QUANT_METHOD]  # noqa: F811
else:
    class Sparse24Config:  # noqa: D101 (no transformers: nothing to save or load through it)
        pass
