"""Which nn.Linear layers of a model sparse24 can take over, and why not the others.

Shared by ``prune_`` (training side) and ``sparsify_`` (inference side), so both select the same
layers by default: a model pruned with the defaults packs with the defaults.
"""

from __future__ import annotations

import functools
import inspect
import re
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from sparse24.layout import FLOAT_DTYPES, granularity_error
from sparse24.ops._checks import GEMM_DTYPES, first_nan, first_overfull_group

FilterFn = Callable[[nn.Module, str], bool]
"""``filter_fn(module, fqn) -> bool``: called on every nn.Linear; False leaves it alone."""


@dataclass
class LinearSite:
    """One nn.Linear and every (parent, attribute name) through which the model reaches it.

    A Linear shared by two parents must be replaced at both, or half the model keeps the old one.
    """

    fqn: str
    module: nn.Linear
    parents: list[tuple[nn.Module, str]] = field(default_factory=list)


def linear_sites(model: nn.Module) -> list[LinearSite]:
    """Every nn.Linear (subclasses included) below ``model``, once each, in module order."""
    sites: dict[int, LinearSite] = {}
    for parent_fqn, parent in model.named_modules(remove_duplicate=False):
        # parent._modules, not named_children(), which yields a child held twice only once.
        for name, child in parent._modules.items():
            if not isinstance(child, nn.Linear):
                continue
            fqn = f"{parent_fqn}.{name}" if parent_fqn else name
            site = sites.setdefault(id(child), LinearSite(fqn, child))
            # A shared parent is visited once per path to it; record each attribute only once.
            if not any(p is parent and n == name for p, n in site.parents):
                site.parents.append((parent, name))
    return list(sites.values())


def unhandled_layers(model: nn.Module) -> dict[str, str]:
    """Layers with a weight matrix that are not nn.Linear, so sparse24 never sees them otherwise,
    with why: transformers' Conv1D (GPT-2 style: x @ W + b with W [in, out])."""
    return {fqn: ("transformers' Conv1D (GPT-2 style, weight [in, out]) is not an nn.Linear; "
                  "sparse24 leaves it dense")
            for fqn, module in model.named_modules() if type(module).__name__ == "Conv1D"}


def parameter_owners(model: nn.Module) -> dict[int, list[str]]:
    """id(parameter) -> "module_fqn.name" for every distinct module that holds it directly."""
    owners: dict[int, list[str]] = {}
    for fqn, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append(f"{fqn}.{name}" if fqn else name)
    return owners


def tied_reason(site: LinearSite, owners: dict[int, list[str]]) -> str | None:
    """A weight tied to another module (e.g. an LM head tied to the input embeddings) is left alone:
    pruning or packing it would silently untie the two, or prune the embeddings with it."""
    holders = owners.get(id(site.module.weight), [])
    others = [h for h in holders if h != f"{site.fqn}.weight"]
    if others:
        return f"weight is tied to {', '.join(others)}; packing it would untie them"
    return None


@functools.lru_cache(maxsize=None)
def _source(function) -> str:
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):  # built in, or defined where no source is kept
        return ""


def weight_reader_reason(site: LinearSite) -> str | None:
    """An owner whose ``forward`` reads the Linear's ``.weight`` by its attribute name would find
    none on a SparseLinear (it holds packed values): T5's feed-forward reads
    ``self.wo.weight.dtype``. Read off the source text of the owner's forward. (The model's
    ``_init_weights``, which reads ``module.q.weight`` in T5, is kept off the packed layers'
    owners when a checkpoint loads: sparse24/nn/hf.py.)"""
    for parent, name in site.parents:
        if re.search(rf"\.{re.escape(name)}\.weight\b", _source(type(parent).forward)):
            return (f"{type(parent).__name__}.forward reads .{name}.weight, which a packed layer "
                    "does not have; it is left dense")
    return None


def unsupported_reason(linear: nn.Linear, for_inference: bool = True) -> str | None:
    """None when sparse24's kernels can serve this Linear's shape and dtype, else why not.

    ``for_inference=False`` (prune_): float32 on CUDA is fine, since mixed-precision training keeps
    float32 master weights there and the mask kernel takes float32; only packing needs fp16/bf16.
    """
    if type(linear) is not nn.Linear:
        # e.g. nn.MultiheadAttention.out_proj (NonDynamicallyQuantizableLinear): its owner reads
        # .weight directly instead of calling forward, so a swapped module would be bypassed.
        return (f"{type(linear).__name__} is a subclass of nn.Linear; its owner may read .weight "
                "directly, so it is left alone")
    w = linear.weight
    if type(w.data) is not torch.Tensor:
        return f"weight is a {type(w.data).__name__}, not a plain tensor"
    if w.is_meta:
        return "weight is on the meta device (load or materialize the weights first)"
    if w.dtype not in FLOAT_DTYPES:
        return f"dtype {w.dtype} is not supported (float16, bfloat16 or float32)"
    if for_inference and w.is_cuda and w.dtype not in GEMM_DTYPES:
        return (f"dtype {w.dtype} on CUDA: the sparse GEMM kernels serve float16 and bfloat16; "
                "cast the model (model.half()) first")
    return granularity_error(linear.out_features, linear.in_features)


def not_24_reason(w: torch.Tensor) -> str | None:
    """None when ``w`` is 2:4 along K and has no NaN (what compress accepts), else the first problem."""
    if first_nan(w):
        return "weight has NaN"
    overfull = first_overfull_group(w)
    if overfull:
        r, g, nonzero, groups = overfull
        return (f"weight is not 2:4 sparse (row {r}, columns {4 * g}..{4 * g + 3} hold "
                f"{nonzero} nonzero values; {groups} such groups); prune it first with "
                "sparse24.nn.prune_ (then fine-tune and squash_)")
    return None


def filtered_out(filter_fn: FilterFn | None, site: LinearSite) -> bool:
    return filter_fn is not None and not filter_fn(site.module, site.fqn)


def is_parametrized(module: nn.Module) -> bool:
    return parametrize.is_parametrized(module, "weight")


def format_section(title: str, entries: dict[str, str] | list[str]) -> list[str]:
    """Lines of one report section: a title, then one indented line per layer."""
    if not entries:
        return []
    lines = [f"  {title} ({len(entries)}):"]
    if isinstance(entries, dict):
        lines += [f"    {fqn}: {why}" for fqn, why in entries.items()]
    else:
        lines += [f"    {fqn}" for fqn in entries]
    return lines
