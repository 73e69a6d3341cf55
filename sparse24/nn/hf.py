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

import itertools
import warnings
from typing import Any

from torch import nn

from sparse24.layout import LAYOUT_VERSION

QUANT_METHOD = "sparse24"


def _transformers_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("transformers") is not None


def structure_of(root: nn.Module, identities: list[str], skip: nn.Module | None = None) -> dict[str, Any]:
    """What ``sparsify_`` changed below ``root`` (not below ``skip``), names relative to
    ``root``: {"linears": {fqn: activation}, "groups": {block fqn: names}, "gated": {block fqn:
    gated activation} (SparseGatedMLP blocks; only where there are some), "identities": [...]}."""
    from sparse24.nn.gated_mlp import SparseGatedMLP
    from sparse24.nn.linear import SparseLinear
    from sparse24.nn.shared_input import ProjectionSlice, fused_name

    modules = _named_modules_outside(root, skip)
    linears: dict[str, str | None] = {}
    groups: dict[str, list[str]] = {}
    gated: dict[str, str] = {}
    fused = set()  # the packed groups' SparseLinear modules: rebuilt with their group
    for fqn, module in modules:
        slices = [(child.start, name) for name, child in module._modules.items()
                  if isinstance(child, ProjectionSlice)]
        if slices:
            groups[fqn] = [name for _, name in sorted(slices)]
            fused.add(id(module._modules[fused_name(tuple(groups[fqn]))]))
        if isinstance(module, SparseGatedMLP):
            gated[fqn] = module.gate_up.activation
            fused.add(id(module.gate_up))
    for fqn, module in modules:
        if isinstance(module, SparseLinear) and id(module) not in fused:
            linears[fqn] = module.activation
    record = {"linears": linears, "groups": groups, "identities": sorted(set(identities))}
    return record | ({"gated": gated} if gated else {})


def _named_modules_outside(root: nn.Module, skip: nn.Module | None) -> list[tuple[str, nn.Module]]:
    if skip is None:
        return list(root.named_modules())
    inside = {id(m) for m in skip.modules()}
    return [(fqn, m) for fqn, m in root.named_modules() if id(m) not in inside]


def record_structure(model: nn.Module, report, identity_at: list[tuple[nn.Module, str]]) -> None:
    """Store what ``sparsify_`` did in ``model.config.quantization_config`` when ``model`` is a
    transformers ``PreTrainedModel``; a no-op for other modules.

    Names are kept in two parts, so that a checkpoint loads into the base model and into any head
    model around it (``BertModel`` and ``BertForQuestionAnswering`` alike): "base", relative to
    ``model.base_model``, and "head", the layers outside the base model, relative to the head
    model. A later ``sparsify_`` call (on the whole model or on its base model) re-reads the
    parts it covers from the modules themselves, so the record follows the model."""
    if not _transformers_available():
        return
    from transformers import PretrainedConfig, PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        if isinstance(getattr(model, "config", None), PretrainedConfig):
            warnings.warn(
                f"sparsify_ ran on a {type(model).__name__}, a part of a transformers model: "
                "nothing is recorded for save_pretrained / from_pretrained. Call sparsify_ on the "
                "model itself (filter_fn picks layers)", stacklevel=3)
        return
    base = model.base_model
    where = {id(m): fqn for fqn, m in model.named_modules()}
    base_fqn = where[id(base)]
    previous = getattr(model.config, "quantization_config", None)
    previous = previous if isinstance(previous, Sparse24Config) else Sparse24Config()
    identities = {"base": list(previous.base.get("identities", [])),
                  "head": list(previous.head.get("identities", []))}
    for block, attr in identity_at:
        fqn = f"{where[id(block)]}.{attr}".lstrip(".")
        if base is not model and (fqn + ".").startswith(base_fqn + "."):
            identities["base"].append(fqn[len(base_fqn) + 1:])
        else:
            identities["base" if base is model else "head"].append(fqn)
    head = previous.head
    if base is not model:
        head = structure_of(model, identities["head"], skip=base)
    model.config.quantization_config = Sparse24Config(
        base=structure_of(base, identities["base"]), head=head)


def _tensor_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    named = list(model.named_parameters()) + list(model.named_buffers())
    return {name: tuple(t.shape) for name, t in named}


def refuse_unfilled(model: nn.Module) -> None:
    """Every packed layer must have come from the checkpoint: transformers "initializes" a layer
    whose entries are missing or had another shape (``ignore_mismatched_sizes``) by calling the
    model's ``_init_weights``, which knows no SparseLinear, so its tensors would stay as they were
    (zeros, or uninitialized memory: NaN logits, no error). Three things give it away:
    - transformers 5.25 marks each tensor it loaded (``_is_hf_initialized``); where the model's
      tensors carry the mark, a packed layer without it was not loaded. Its re-initialized
      tensors are torch.empty_like memory, which may hold valid-looking metadata (freed
      checkpoint tensors): the mark does not depend on it. Not read where accelerate placed the
      model (its hooks move tensors to new, unmarked objects, as offloading does);
    - metadata no packed weight has;
    - tensors of another shape than the layer's: transformers 5.17 checks no shapes while a
      quantizer loads, and swaps in the checkpoint's tensors of another shape as they are
      (valid metadata, the wrong number of rows); it also marks every tensor."""
    from sparse24.layout import meta_shape, values_shape
    from sparse24.nn.linear import SparseLinear
    from sparse24.reference import invalid_meta_groups

    packed = [(fqn, module) for fqn, module in model.named_modules()
              if isinstance(module, SparseLinear) and getattr(module, "meta", None) is not None
              and not module.meta.is_meta]
    tensors = itertools.chain(model.parameters(), model.buffers())
    marked = (any(getattr(t, "_is_hf_initialized", False) for t in tensors)
              and not any(hasattr(m, "_hf_hook") for m in model.modules()))
    for fqn, module in packed:
        meta = module.meta
        n, k = module.out_features, module.in_features
        shapes = [(module.values.shape, values_shape(n, k)), (meta.shape, meta_shape(n, k))]
        if module.bias is not None:
            shapes.append((module.bias.shape, (n,)))
        unloaded = marked and not all(getattr(t, "_is_hf_initialized", False)
                                      for t in (module.values, meta))
        if (unloaded or any(tuple(got) != tuple(want) for got, want in shapes)
                or invalid_meta_groups(meta)):
            raise ValueError(
                f"sparse24: the packed weight of {fqn or 'the model'} was not filled from the "
                "checkpoint (its entries are missing, or have another shape and were re-initialized, "
                "e.g. with ignore_mismatched_sizes=True); a packed layer has no random init. Load "
                "a checkpoint of the same shapes, or load the dense model and sparsify_ it")


def rebuild_(model: nn.Module, config: Any) -> None:
    """Apply a recorded structure (a Sparse24Config) to a dense skeleton: the Linear layers
    become SparseLinear layers of the same shapes, dtype and device, holding an all-zero packed
    weight until the checkpoint fills them. A base-model layer that is not there is an error (the
    checkpoint is of another architecture); a head layer that is not there (a head model's
    checkpoint loaded as its base model) is left out with a warning."""
    base = getattr(model, "base_model", model)
    _rebuild_part(base, config.base, missing_ok=False)
    if base is model:
        if any(config.head.get(part) for part in ("linears", "groups", "gated", "identities")):
            warnings.warn("sparse24: the checkpoint's head layers are not part of this base model; "
                          "they are left out", stacklevel=3)
        config.head = {}  # this model's record: what it saves must not name layers it lacks
    else:
        _rebuild_part(model, config.head, missing_ok=True)
    _keep_init_off_packed_owners(model)


def _keep_init_off_packed_owners(model: nn.Module) -> None:
    """Mark the modules that hold packed layers as initialized: transformers then does not run
    the model's ``_init_weights`` on them, which reads their projections' ``.weight`` by name in
    some models (T5: ``module.q.weight``) and would fail on a SparseLinear. What it would have
    initialized are the packed layers, which the checkpoint fills (refuse_unfilled checks)."""
    from sparse24.nn.linear import SparseLinear
    from sparse24.nn.shared_input import ProjectionSlice

    for module in model.modules():
        if any(isinstance(child, (SparseLinear, ProjectionSlice)) for child in module.children()):
            module._is_hf_initialized = True


def _rebuild_part(model: nn.Module, structure: dict[str, Any], missing_ok: bool) -> None:
    from sparse24.nn.gated_mlp import SparseGatedMLP
    from sparse24.nn.linear import SparseLinear
    from sparse24.nn.shared_input import install_fused_, move_hooks

    def present(fqn: str) -> bool:
        try:
            model.get_submodule(fqn)
        except AttributeError:
            if not missing_ok:
                return True  # _parent_of names it
            warnings.warn(f"sparse24: the checkpoint's {fqn!r} is not in this model; left out",
                          stacklevel=4)
            return False
        return True

    for fqn in structure.get("identities", []):
        if present(fqn):
            parent, name = _parent_of(model, fqn)
            setattr(parent, name, nn.Identity())
    for fqn, activation in structure.get("linears", {}).items():
        if not present(fqn):
            continue
        parent, name = _parent_of(model, fqn)
        linear = _linear_at(parent, name, fqn)
        sparse = SparseLinear(linear.in_features, linear.out_features, bias=linear.bias is not None,
                              activation=activation, device=linear.weight.device,
                              dtype=linear.weight.dtype)
        move_hooks(linear, sparse)
        setattr(parent, name, sparse)
    for fqn, names in structure.get("groups", {}).items():
        if fqn and not present(fqn):
            continue
        block = model.get_submodule(fqn) if fqn else model
        for name in names:
            _linear_at(block, name, f"{fqn}.{name}")
        install_fused_(block, tuple(names))
    for fqn, activation in structure.get("gated", {}).items():  # after "linears": down_proj
        if not present(fqn):
            continue
        parent, name = _parent_of(model, fqn)
        block = parent._modules[name]
        for part in ("gate_proj", "up_proj"):
            _linear_at(block, part, f"{fqn}.{part}")
        gated = SparseGatedMLP.empty_like(block, activation)
        move_hooks(block, gated)
        setattr(parent, name, gated)


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

        base (names relative to the base model) and head (the head model's layers outside it),
        each {"linears": fqn -> fused activation (None, "relu", "gelu", "gelu_tanh", "silu") of each
        SparseLinear, "groups": block fqn -> the projection names packed as one SparseLinear at
        ``block.qkv``, "gated" (where there are some): block fqn -> the gated activation of a
        SparseGatedMLP that replaced it, "identities": fqns of activations moved into an epilogue (now
        ``nn.Identity``)}; layout_version: the packed layout of the weights file.
        """

        def __init__(self, base: dict | None = None, head: dict | None = None,
                     layout_version: int = LAYOUT_VERSION, **kwargs: Any) -> None:
            self.quant_method = QUANT_METHOD
            self.layout_version = layout_version
            self.base = dict(base or {})
            self.head = dict(head or {})

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
            rebuild_(model, self.quantization_config)
            self._shapes = _tensor_shapes(model)  # transformers 5.17 checks none while we load

        def _process_model_after_weight_loading(self, model: nn.Module, **kwargs: Any) -> nn.Module:
            # The record as rebuilt (a base model drops its checkpoint's head part), also where
            # transformers left the config's raw dict from config.json (4.57).
            model.config.quantization_config = self.quantization_config
            refuse_unfilled(model)
            built = getattr(self, "_shapes", {})
            wrong = {name: (built[name], shape) for name, shape in _tensor_shapes(model).items()
                     if name in built and shape != built[name]}
            if wrong:
                raise ValueError(
                    "sparse24: the checkpoint's tensors have other shapes than this model's: "
                    + ", ".join(f"{n} {got} (the model: {want})" for n, (want, got) in wrong.items())
                    + "; this transformers loads a quantized checkpoint without checking shapes "
                    "(transformers 5.25 checks them, and re-initializes them under ignore_mismatched_sizes=True)")
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
