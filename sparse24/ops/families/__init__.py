"""The kernel families of sparse24.ops.linear, each behind one interface; ``FAMILIES`` maps a
config's "family" to it, so dispatch is a table look-up and a new family (Blackwell's, say) is
one new module here, one entry below, and its place in ``gemm.heuristic_config``'s rule.

The interface, as module-level names:
- ``NAME``: the "family" value of its configs;
- ``FIELDS``: the config fields its launcher reads (``configs.well_formed`` wants them);
- ``CHOICES`` (optional): {optional field: its allowed values};
- ``valid(config) -> bool`` (optional): rules across fields, checked after the ones above;
- ``candidates(m, n, k) -> list[dict]``: the configs worth timing (the tuner's search space);
- ``heuristic(m, n, k, sms) -> dict``: a config without tuning; ``sms``, the SM count (1 off
  CUDA), is passed in, so it is a pure function of ints;
- ``fits(config, n, k) -> bool``: whether a config (a cached one, say) can serve an [n, k] weight;
- ``served(config, n) -> dict`` (optional): a cached config as it runs (the sm90 family gives
  entries tuned before its tile-order rule the rule's order);
- ``launch(x2, values, meta, bias, y, activation, cfg) -> None``: y = act(x2 @ W^T + bias);
- ``plan_launch(cfg, m, n, k, dtype, device)`` (optional): a callable, called as ``launch`` is
  and only by ``gemm._linear_impl`` (x2 [m, k] with unit stride along K, y fresh and
  contiguous), that launches that plan's config, free to keep what the plan fixes (the sm90
  family's direct launches). With a true ``takes_rows`` attribute it also takes a contiguous
  N-D x2 and y whose rows are the m rows (no reshapes per call); without, ``_linear_impl``
  passes 2-D views. ``run_config``, the tuner and the benches call ``launch``;
- ``bind(config, values, meta, bias, activation, shape, width, generation)`` (optional): the
  launch bound to one checked weight and one shape of x (``gemm.bind``; a plan that has its own
  ``bind``, the sm90 family's, takes precedence): a callable ``(x, values, bias) -> y or None``,
  None while it cannot bind yet, False where it never will.

mma.py and dot.py are families; _splitk.py is what they share. The sm90 family lives in
sparse24/ops/wgmma.py beside its asm and shared-memory offset checks; ``wgmma_family`` below
gives it the same interface.
"""

from __future__ import annotations

from types import SimpleNamespace

from sparse24.ops import wgmma, wgmma_asm
from sparse24.ops.families import dot, mma


def _any_shape(config: dict, n: int, k: int) -> bool:
    return True  # TMA and clamped metadata reads take any packable [n, k]


wgmma_family = SimpleNamespace(
    NAME="wgmma",
    FIELDS=("BT", "STAGES", "GROUP"),
    CHOICES={"ASM_LOOP": (0, *wgmma.ASM_LOOP_VALUES), "META_AHEAD": (1, 2, 3, 4),
             "META_RING": (0, 1), "BLOCK_F": wgmma_asm.BLOCK_FS},
    valid=wgmma.runnable,
    candidates=wgmma.candidates,
    heuristic=wgmma.heuristic_config,
    fits=_any_shape,
    served=wgmma.served,
    launch=wgmma.launch,
    plan_launch=wgmma.PlannedLaunch,
)

FAMILIES = {"mma": mma, "dot": dot, "wgmma": wgmma_family}

__all__ = ["FAMILIES", "dot", "mma", "wgmma_family"]
