"""sparsify_: swap a model's 2:4 nn.Linear layers for SparseLinear, in place."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from torch import nn

from sparse24.nn._activations import describe, ffn_pattern, fusable_activation
from sparse24.nn._select import (
    FilterFn, LinearSite, filtered_out, format_section, is_parametrized, linear_sites,
    not_24_reason, parameter_owners, tied_reason, unhandled_layers, unsupported_reason,
    weight_reader_reason,
)
from sparse24.nn.gated_mlp import GATED_NAME, fuse_gated_, gated_problem
from sparse24.nn.hf import record_structure
from sparse24.nn.linear import SparseLinear
from sparse24.nn.shared_input import (
    FUSED_NAME, fuse_, fused_name, fusion_problem, move_hooks, shared_input_groups,
)


@dataclass
class SparsifyReport:
    """What ``sparsify_`` did, by fully qualified module name. ``print(report)`` lists it all.

    swapped: Linear layers now SparseLinear. skipped: Linear layers left dense, with the reason.
    fused: swapped layers that apply their block's activation in their epilogue -> the epilogue.
    not_fused: feed-forward blocks whose activation stays a separate module, with the reason.
    grouped: blocks whose projections of one input (Q, K, V; gate, up) run as one GEMM -> what was packed.
    not_grouped: blocks with such projections left as separate GEMMs, with the reason.
    """

    swapped: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    fused: dict[str, str] = field(default_factory=dict)
    not_fused: dict[str, str] = field(default_factory=dict)
    grouped: dict[str, str] = field(default_factory=dict)
    not_grouped: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        head = (f"sparsify_: {len(self.swapped)} Linear layers packed 2:4, {len(self.skipped)} "
                f"left dense, {len(self.fused)} activations fused, {len(self.grouped)} projection "
                "groups in one GEMM each")
        return "\n".join([head]
                         + format_section("swapped", self.swapped)
                         + format_section("fused", self.fused)
                         + format_section("not fused", self.not_fused)
                         + format_section("grouped", self.grouped)
                         + format_section("not grouped", self.not_grouped)
                         + format_section("skipped", self.skipped))


def sparsify_(
    model: nn.Module, filter_fn: FilterFn | None = None, fuse_activations: bool = True,
    fuse_qkv: bool = True, fuse_gate_up: bool = True, fuse_gated_mlp: bool = True,
) -> SparsifyReport:
    """Replace every eligible nn.Linear of ``model`` by a SparseLinear holding its packed weight.

    ``filter_fn(module, fqn) -> bool`` picks the Linear layers to consider (default: all). Of
    those, a layer is left dense, with the reason in the report, when the kernels cannot serve it
    (N % 16, K % 64, dtype, Linear subclasses), when its weight is tied to another module, still
    parametrized (call ``squash_`` first) or not 2:4 sparse (a warning is raised too: prune first).
    So an unsupported layer never surfaces as an error deep inside a forward pass.

    With ``fuse_activations``, the activation of a Hugging Face feed-forward block (BERT-style
    ``dense`` + ``intermediate_act_fn``, DistilBERT's ``lin1`` + ``activation``) that is ReLU, erf
    GELU, tanh GELU or SiLU moves into the SparseLinear's epilogue and the block's activation becomes
    nn.Identity; any other activation stays where it is and is listed under ``not_fused``.

    With ``fuse_qkv``, a self-attention block's ``query``/``key``/``value`` (or ``q``/``k``/``v``,
    ``q_lin``/..., ``q_proj``/...) projections are packed as one SparseLinear at ``block.qkv``, run as one GEMM
    within one call of the block on its own input; a projection called any other way computes its
    own rows (sparse24/nn/shared_input.py). Cross-attention blocks stay unfused.

    With ``fuse_gate_up``, a Llama-style MLP's ``gate_proj`` and ``up_proj`` are packed the same way,
    as one SparseLinear at ``block.gate_up``.

    With ``fuse_gated_mlp``, such an MLP whose activation has a gated epilogue (SiLU: SwiGLU; the
    GELUs, ReLU) is replaced by a ``SparseGatedMLP``: ``gate_up`` computes act(gate) * up in its
    epilogue, and ``down_proj`` follows (sparse24/nn/gated_mlp.py, with its safety rules; a block
    that breaks one keeps the ``gate_up`` grouping, and the report says why). H100, four
    Llama-3-8B layers in CUDA graphs: prefill of 2048 tokens 1.31x dense against 1.22x with the
    product left to the model, decode 1.10-1.34x against 1.09-1.33x (bench/results/h100/llm.md).
    Its packed rows are interleaved, so a state dict saved with it off loads only into a model
    sparsified with it off (from_pretrained rebuilds the recorded structure either way).

    Forward hooks of each replaced Linear move to its replacement. For a transformers model the
    result is recorded in ``model.config.quantization_config`` so that ``save_pretrained`` and
    ``from_pretrained`` round-trip it (sparse24/nn/hf.py).
    """
    report = SparsifyReport()
    if isinstance(model, nn.Linear):
        report.skipped[""] = "the model itself is a Linear; use SparseLinear.from_linear(model)"
        return report

    report.skipped.update(unhandled_layers(model))
    owners = parameter_owners(model)
    chosen: list[LinearSite] = []
    not_24: list[str] = []
    sites = linear_sites(model)
    for site in sites:
        reason = _skip_reason(site, filter_fn, owners) or weight_reader_reason(site)
        if reason is None:
            reason = not_24_reason(site.module.weight.detach())
            if reason:
                not_24.append(site.fqn)
        if reason:
            report.skipped[site.fqn] = reason
        else:
            chosen.append(site)

    epilogue: dict[int, str] = {}  # id(Linear) -> activation its SparseLinear applies
    identity_at: list[tuple[nn.Module, str]] = []
    if fuse_activations:
        epilogue, identity_at = _plan_fusion(model, chosen, report)

    if fuse_gated_mlp:
        chosen = _fuse_gated_mlps(model, chosen, epilogue, report)
    kinds = {name for name, on in ((FUSED_NAME, fuse_qkv), ("gate_up", fuse_gate_up)) if on}
    if kinds:
        chosen = _group_projections(model, chosen, epilogue, report, kinds)

    # Swap one layer at a time and drop the plan's reference to it, so each dense weight can be
    # freed as soon as its packed copy exists (peak memory: the model plus about one layer).
    chosen.reverse()
    while chosen:
        site = chosen.pop()
        act = epilogue.get(id(site.module))
        sparse = SparseLinear.from_linear(site.module, activation=act)
        move_hooks(site.module, sparse)
        for parent, name in site.parents:
            setattr(parent, name, sparse)
        report.swapped.append(site.fqn)
        if act is not None:
            report.fused[site.fqn] = act
    for block, act_attr in identity_at:
        setattr(block, act_attr, nn.Identity())
    record_structure(model, report, identity_at)
    order = {site.fqn: i for i, site in enumerate(sites)}
    report.swapped.sort(key=order.__getitem__)  # model order, grouped projections included

    if not_24:
        warnings.warn(
            f"sparsify_ left {len(not_24)} Linear layers dense because their weights are not 2:4 "
            f"sparse (first: {not_24[0]}); prune them first: sparse24.nn.prune_(model), fine-tune, "
            "sparse24.nn.squash_(model)",
            stacklevel=2,
        )
    return report


def _group_projections(model: nn.Module, chosen: list[LinearSite], epilogue: dict[int, str],
                       report: SparsifyReport, kinds: set[str]) -> list[LinearSite]:
    """Pack each block's Q/K/V (and gate/up) as one SparseLinear, for the fused names in
    ``kinds``; the sites left to swap one by one."""
    single = {id(s.module): s for s in chosen if len(s.parents) == 1 and id(s.module) not in epilogue}
    grouped: set[int] = set()
    for fqn, block in list(model.named_modules()):
        names = shared_input_groups(block)
        if names is None or fused_name(names) not in kinds:
            continue
        sites = [single.get(id(getattr(block, n))) for n in names]
        if any(s is None for s in sites):
            report.not_grouped[fqn] = ("not every projection is swapped on its own (skipped, "
                                       "shared, or with a fused activation)")
            continue
        problem = fusion_problem(block, names)
        if problem:
            report.not_grouped[fqn] = problem
            continue
        fused = fuse_(block, names)
        grouped.update(id(s.module) for s in sites)
        report.swapped.extend(s.fqn for s in sites)
        report.grouped[fqn] = (f"{'+'.join(names)} -> {fused_name(names)} "
                               f"[{fused.out_features}, {fused.in_features}]: one GEMM per call of "
                               "the block on one input; the tensors are named "
                               f"{fused_name(names)}.*, each projection alone computes its own rows")
    return [s for s in chosen if id(s.module) not in grouped]


def _fuse_gated_mlps(model: nn.Module, chosen: list[LinearSite], epilogue: dict[int, str],
                     report: SparsifyReport) -> list[LinearSite]:
    """Replace each Llama-style MLP that qualifies by a SparseGatedMLP; the sites left to swap
    (down_proj stays one: it is swapped on its own, now as the SparseGatedMLP's child)."""
    single = {id(s.module): s for s in chosen if len(s.parents) == 1 and id(s.module) not in epilogue}
    places: dict[int, int] = {}  # id(module) -> how many (parent, name) places reach it
    for _, module in model.named_modules(remove_duplicate=False):
        places[id(module)] = places.get(id(module), 0) + 1
    replaced: set[int] = set()
    for fqn, block in list(model.named_modules()):
        if shared_input_groups(block) != ("gate_proj", "up_proj") or not fqn:
            continue
        if places[id(block)] > 1:  # one replacement would leave the other places dense
            report.not_grouped[fqn] = ("gated epilogue: the block is reached through more than "
                                       "one parent")
            continue
        if any(id(getattr(block, n)) not in single for n in ("gate_proj", "up_proj")):
            report.not_grouped[fqn] = ("gated epilogue: gate_proj or up_proj is not swapped on "
                                       "its own (skipped or shared)")
            continue
        problem = fusion_problem(block, ("gate_proj", "up_proj")) or gated_problem(block)
        if problem:
            report.not_grouped[fqn] = f"gated epilogue: {problem}"
            continue
        fused = fuse_gated_(block)
        move_hooks(block, fused)
        parent, name = _parent_and_name(model, fqn)
        setattr(parent, name, fused)
        down = single.get(id(block.down_proj))
        if down is not None:  # swapped later: where it now lives
            down.parents = [(fused, "down_proj")]
        for n in ("gate_proj", "up_proj"):
            site = single[id(getattr(block, n))]
            replaced.add(id(site.module))
            report.swapped.append(site.fqn)
        act = fused.gate_up.activation
        report.fused[f"{fqn}.{GATED_NAME}"] = act
        report.grouped[fqn] = (f"gate_proj+up_proj -> {GATED_NAME} [{fused.gate_up.out_features}, "
                               f"{fused.gate_up.in_features}] with {act} in its epilogue "
                               f"({type(block).__name__} -> SparseGatedMLP): one GEMM writes "
                               "act(gate) * up; the tensors are named gate_up.*, rows interleaved")
    return [s for s in chosen if id(s.module) not in replaced]


def _parent_and_name(model: nn.Module, fqn: str) -> tuple[nn.Module, str]:
    parent_fqn, _, name = fqn.rpartition(".")
    return (model.get_submodule(parent_fqn) if parent_fqn else model), name


def _skip_reason(site: LinearSite, filter_fn: FilterFn | None, owners: dict[int, list[str]]) -> str | None:
    if filtered_out(filter_fn, site):
        return "filter_fn returned False"
    if is_parametrized(site.module):
        return ("weight is parametrized (pruned by prune_ and not squashed?); call "
                "sparse24.nn.squash_(model) first")
    return unsupported_reason(site.module) or tied_reason(site, owners)


def _plan_fusion(
    model: nn.Module, chosen: list[LinearSite], report: SparsifyReport
) -> tuple[dict[int, str], list[tuple[nn.Module, str]]]:
    """Which chosen Linear layers take their block's activation, and which activations to remove."""
    reached_once = {id(s.module) for s in chosen if len(s.parents) == 1}
    epilogue: dict[int, str] = {}
    identity_at: list[tuple[nn.Module, str]] = []
    for fqn, block in model.named_modules():
        pattern = ffn_pattern(block)
        if pattern is None:
            continue
        linear_attr, act_attr = pattern
        lin = getattr(block, linear_attr)
        if id(lin) not in reached_once:
            # Not swapped (reported as skipped), or also used elsewhere without the activation.
            continue
        act = getattr(block, act_attr)
        hooked = [n for n, m in ((linear_attr, lin), (act_attr, act))  # act may be a function
                  if getattr(m, "_forward_hooks", None) or getattr(m, "_forward_pre_hooks", None)]
        if hooked:
            # A hook on the Linear would see the activated output once it moved to the fused
            # layer, and the activation's hooks would be dropped with it: outputs would change.
            verb = "has" if len(hooked) == 1 else "have"
            report.not_fused[fqn] = (f"{' and '.join(hooked)} {verb} forward hooks; fusing the "
                                     "activation would change what they see")
            continue
        name = fusable_activation(act)
        if name is None:
            report.not_fused[fqn] = (f"{act_attr} is {describe(act)}; SparseLinear fuses only "
                                     "ReLU, erf GELU, tanh GELU and SiLU")
            continue
        epilogue[id(lin)] = name
        identity_at.append((block, act_attr))
    return epilogue, identity_at
