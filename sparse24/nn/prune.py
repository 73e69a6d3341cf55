"""Training side: fixed 2:4 masks as parametrizations (prune_), then baked in (squash_).

Workflow: ``prune_(model)`` -> fine-tune (any loop, the Hugging Face Trainer, autocast, gradient
accumulation) -> ``squash_(model)`` -> ``sparsify_(model)``.

The mask of each weight is computed once, from the magnitudes at ``prune_`` time, and never moves:
``weight = where(mask, original, +0.0)`` on every access. The gradient reaching ``original`` is
zero at pruned positions, and whatever the optimizer does to those entries of ``original``
(weight decay, momentum) never shows in ``weight``, which stays exactly +0.0 there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from sparse24.nn._select import (
    FilterFn, LinearSite, filtered_out, format_section, is_parametrized, linear_sites,
    parameter_owners, tied_reason, unhandled_layers, unsupported_reason,
)
from sparse24.ops import mask_24


class Mask24(nn.Module):
    """Parametrization ``w -> where(mask, w, +0.0)`` with a fixed bool mask buffer.

    torch.where rather than ``w * mask``: a negative weight times 0 gives -0.0, and gradients of
    where are exactly 0 at masked positions whatever the upstream gradient holds (Inf included).
    A bool buffer is left alone by ``.to(dtype)`` / ``.half()`` and follows ``.to(device)``.
    """

    mask: torch.Tensor

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        if mask.dtype != torch.bool:
            raise TypeError(f"Mask24: mask must be bool, got {mask.dtype}")
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask, weight, weight.new_zeros(()))

    def extra_repr(self) -> str:
        return f"shape={list(self.mask.shape)}, kept={int(self.mask.sum())}/{self.mask.numel()}"


@dataclass
class PruneReport:
    """What ``prune_`` did, by fully qualified module name. ``print(report)`` lists it all."""

    pruned: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        head = f"prune_: {len(self.pruned)} Linear layers masked 2:4, {len(self.skipped)} left dense"
        return "\n".join([head] + format_section("pruned", self.pruned)
                         + format_section("skipped", self.skipped))


def prune_(model: nn.Module, filter_fn: FilterFn | None = None) -> PruneReport:
    """Mask every eligible nn.Linear weight of ``model`` to 2:4 by magnitude, in place.

    Eligible means what ``sparsify_`` would pack: picked by ``filter_fn(module, fqn)`` (default:
    all), a shape and dtype the kernels serve, not tied to another module, not parametrized yet.
    The mask is ``sparse24.ops.mask_24`` of the weight now, registered as a Mask24
    parametrization; the dense values live on in ``module.parametrizations.weight.original``.
    """
    report = PruneReport()
    report.skipped.update(unhandled_layers(model))
    owners = parameter_owners(model)
    for site in linear_sites(model):
        reason = _skip_reason(site, filter_fn, owners)
        if reason:
            report.skipped[site.fqn] = reason
            continue
        mask = mask_24(site.module.weight.detach())
        # Registering changes the module's class in place, so every parent sees the masked weight.
        parametrize.register_parametrization(site.module, "weight", Mask24(mask))
        report.pruned.append(site.fqn)
    return report


def squash_(model: nn.Module) -> list[str]:
    """Bake the masks of ``prune_`` into the weights (pruned entries become +0.0 for good).

    Afterwards each weight is a plain parameter again (same Parameter object as the trained
    original, now holding the masked values), ready for ``sparsify_`` or ``save_pretrained``.
    Other parametrizations of a masked weight are baked in with it. Returns the squashed fqns.
    """
    masked = [(fqn, m) for fqn, m in model.named_modules() if has_mask24(m)]
    for _, module in masked:
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return [fqn for fqn, _ in masked]


def has_mask24(module: nn.Module) -> bool:
    """True when ``module.weight`` carries a Mask24 parametrization (set by prune_)."""
    return is_parametrized(module) and any(
        isinstance(p, Mask24) for p in module.parametrizations["weight"]
    )


def _skip_reason(site: LinearSite, filter_fn: FilterFn | None, owners: dict[int, list[str]]) -> str | None:
    if filtered_out(filter_fn, site):
        return "filter_fn returned False"
    if has_mask24(site.module):
        return "already pruned by prune_"
    if is_parametrized(site.module):
        return "weight already has a parametrization; sparse24 masks plain weights only"
    return unsupported_reason(site.module, for_inference=False) or tied_reason(site, owners)
