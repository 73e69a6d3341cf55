"""The configs of sparse24.ops.linear: which to try, whether one is well formed, which tuned one
to use. A config is a JSON-able dict {"family": ..., its fields}; each family's fields, candidates,
heuristic, fit and launch live in its module (``sparse24.ops.families``: mma.py, dot.py, and
``wgmma_family`` over sparse24/ops/wgmma.py). gemm imports this module (``tuned``), so it does not
import gemm.

Which is which: ``tuned`` is the lookup ``linear`` makes when it plans a problem (through
``gemm.choose_config``) in the results of ``sparse24.tuning.cache``; ``candidates`` is what the
op-side search ``sparse24.ops.tune.tune`` times; neither searches nor writes."""

from __future__ import annotations

import torch

from sparse24 import tuning
from sparse24.ops.device import device_info  # looked up as configs.device_info: tests fake it here
from sparse24.ops.families import FAMILIES

# Fields that must be powers of two (tile sizes, warps), whichever family reads them.
_POWERS_OF_TWO = ("BLOCK_F", "BLOCK_T", "BLOCK_M", "BLOCK_N", "num_warps", "BT")


def candidates(m: int, n: int, k: int, on_gpu: bool, wgmma_side: bool = False,
               sm90: bool = False) -> list[dict]:
    """Every config worth timing for an [m, k] x [n, k]^T problem (mma needs a GPU). With
    ``wgmma_side`` (the caller's ``gemm.uses_wgmma(m, device)``: the sm90 rule) only the wgmma
    family serves; below it, on an sm90 GPU (``sm90``), the wgmma family's candidates for m (its
    token tiles of 8-128) compete with the others."""
    if wgmma_side:
        return FAMILIES["wgmma"].candidates(m, n, k)
    mma = FAMILIES["mma"].candidates(m, n, k) if on_gpu else []
    few = FAMILIES["wgmma"].candidates(m, n, k) if on_gpu and sm90 else []
    return mma + few + FAMILIES["dot"].candidates(m, n, k)


def well_formed(config: dict) -> bool:
    """A known family with the positive (PREFETCH: >= 0) int fields its launcher reads (its
    ``FIELDS``), and its optional fields (``CHOICES``, where it has some) at allowed values;
    whether it fits the weight is ``gemm.config_fits``."""
    family = FAMILIES.get(config.get("family"))
    if family is None:
        return False
    fields = family.FIELDS
    for name in fields + (("SPLIT_K",) if "SPLIT_K" in config else ()):
        value = config.get(name)
        if type(value) is not int or value < (name != "PREFETCH"):
            return False
        if name in _POWERS_OF_TWO and value & (value - 1):
            return False
    # optional fields with a few allowed values (wgmma's ASM_LOOP and META_AHEAD, mma's A_TILE...)
    if not all(type(config[name]) is int and config[name] in allowed
               for name, allowed in getattr(family, "CHOICES", {}).items() if name in config):
        return False
    # rules across fields (wgmma: stages the asm loop takes, shared memory)
    return getattr(family, "valid", _any_config)(config)


def _any_config(config: dict) -> bool:
    return True


# tuned's answers by (tuning cache, GPU, dtype, N, K, M bucket): without them a lookup took 9-13 us
# on the H200's host. Kept here, not in the tuning layer, which only says when to forget them.
_answers: dict[tuple, dict | None] = {}
tuning.on_change(_answers.clear)


def tuned(m: int, n: int, k: int, dtype: torch.dtype, device: torch.device) -> dict | None:
    """This CUDA GPU's tuned or shipped config (a near M bucket too), else the shipped one of a GPU
    declaring the same compute capability and SM count (H100 SXM, H200: any config launches on the
    same architecture, and the SM count keeps grid and split-K sizing sensible); None: use the
    heuristic. Never raises (a bad file means "none"). Do not modify the dict returned."""
    if device.type != "cuda" or m < 1:
        return None
    try:
        cache = tuning.default_cache()
        gpu = device_info(torch.cuda.current_device() if device.index is None else device.index)
        memo = (cache, gpu, dtype, n, k, tuning.m_bucket(m))
        answer = _answers.get(memo, _answers)  # _answers itself: not memoized yet
        if answer is _answers:
            generation = tuning.generation()
            key = tuning.TuningKey(gpu[0], tuning.triton_version(), tuning.dtype_name(dtype), n, k,
                                   memo[-1])
            entries = (cache.lookup(key._replace(gpu=name))
                       for name in (gpu[0], *cache.shipped_gpus(*gpu[1:])))
            answer = next((e.config for e in entries
                           if e is not None and well_formed(e.config)), None)
            _answers[memo] = answer
            if tuning.generation() != generation:  # a put (another thread's) landed meanwhile
                _answers.pop(memo, None)
        return answer
    except Exception:  # noqa: BLE001 - a cache problem (or a warning made an error): heuristic
        return None
