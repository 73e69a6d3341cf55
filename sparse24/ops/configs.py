"""The configs of sparse24.ops.linear: what one looks like, which to try, which tuned one to use.

A config is a JSON-able dict. "mma" configs tile [BLOCK_F features x BLOCK_T tokens] per program,
"dot" configs [BLOCK_M tokens x BLOCK_N features], both may split K; "wgmma" (sm90) configs come
from ``wgmma.candidates``. gemm imports this module (``tuned``), so it does not import gemm.

Which is which: ``tuned`` is the lookup ``linear`` makes on every call (through
``gemm.choose_config``, memoized) in the results of ``sparse24.tuning.cache``; ``candidates`` is
what the op-side search ``sparse24.ops.tune.tune`` times; neither searches nor writes."""

from __future__ import annotations

import functools
import itertools

import torch

from sparse24 import tuning
from sparse24.ops import wgmma

# Fields each family's launcher reads (mma configs tuned before split-K existed lack SPLIT_K and
# run unsplit), and those that must be powers of two (tile sizes, warps).
_FIELDS = {
    "mma": ("BLOCK_F", "BLOCK_T", "GROUP_T", "PREFETCH", "num_warps", "num_stages"),
    "dot": ("BLOCK_M", "BLOCK_N", "SPLIT_K", "num_warps", "num_stages"),
    "wgmma": ("BT", "STAGES", "GROUP"),
}
_POWERS_OF_TWO = ("BLOCK_F", "BLOCK_T", "BLOCK_M", "BLOCK_N", "num_warps", "BT")

# fp32 accumulator registers a thread (BLOCK_F * BLOCK_T / (32 * num_warps)) at most 128 of 255:
# the A fragments and x tiles of two chunks (prefetch) must fit beside them
_MAX_ACC_REGS = 128

# mma split-K only where token blocks leave too few programs (16 x 4096 x 4096: 32 for 132 SMs)
_MMA_SPLIT_MAX_M = 128


def mma_candidates(m: int, n: int, k: int) -> list[dict]:
    configs = []
    for block_f, block_t, warps, prefetch in itertools.product((64, 128, 256), (16, 32, 64, 128),
                                                               (4, 8), (1, 2)):
        if n % block_f or block_t > max(16, 2 * m):
            continue
        if block_f * block_t // (32 * warps) > _MAX_ACC_REGS or block_f < 16 * warps:
            continue
        configs.append({"family": "mma", "BLOCK_F": block_f, "BLOCK_T": block_t, "GROUP_T": 8,
                        "PREFETCH": prefetch, "SPLIT_K": 1, "num_warps": warps, "num_stages": 1})
    if m <= _MMA_SPLIT_MAX_M:
        for block_f, block_t, split_k in itertools.product((64, 128, 256), (16, 32), (2, 4, 8, 16)):
            if n % block_f or block_t > max(16, 2 * m) or split_k > k // 64:
                continue
            configs.append({"family": "mma", "BLOCK_F": block_f, "BLOCK_T": block_t, "GROUP_T": 8,
                            "PREFETCH": 1, "SPLIT_K": split_k, "num_warps": 4, "num_stages": 1})
    return configs


def dot_candidates(m: int, n: int, k: int) -> list[dict]:
    configs = []
    chunks = k // 64
    for block_m, block_n, split_k, stages in itertools.product((16, 32, 64), (32, 64, 128),
                                                               (1, 2, 4, 8, 16), (2, 3, 4)):
        if n % block_n or split_k > chunks or block_m > max(16, 2 * m):
            continue
        if split_k > 1 and m > 256:  # the fp32 workspace would cost more than it saves
            continue
        configs.append({"family": "dot", "BLOCK_M": block_m, "BLOCK_N": block_n,
                        "SPLIT_K": split_k, "num_warps": 4, "num_stages": stages})
    return configs


def candidates(m: int, n: int, k: int, on_gpu: bool, wgmma_side: bool = False) -> list[dict]:
    """Every config worth timing for an [m, k] x [n, k]^T problem (mma needs a GPU). With
    ``wgmma_side`` (the caller's ``gemm.uses_wgmma(m, device)``: the sm90 rule) only the wgmma
    family serves."""
    if wgmma_side:
        return wgmma.candidates(m, n, k)
    return (mma_candidates(m, n, k) if on_gpu else []) + dot_candidates(m, n, k)


def well_formed(config: dict) -> bool:
    """A known family with the positive (PREFETCH: >= 0) int fields its launcher reads (whether it
    fits the weight is ``gemm.config_fits``)."""
    fields = _FIELDS.get(config.get("family"))
    if fields is None:
        return False
    for name in fields + (("SPLIT_K",) if "SPLIT_K" in config else ()):
        value = config.get(name)
        if type(value) is not int or value < (name != "PREFETCH"):
            return False
        if name in _POWERS_OF_TWO and value & (value - 1):
            return False
    return True


def tuned(m: int, n: int, k: int, dtype: torch.dtype, device: torch.device) -> dict | None:
    """This CUDA GPU's tuned or shipped config (a near M bucket too), else the shipped one of a GPU
    declaring the same compute capability and SM count (H100 SXM, H200: any config launches on the
    same architecture, and the SM count keeps grid and split-K sizing sensible); None: use the
    heuristic. Never raises (a bad file means "none"). Do not modify the dict returned."""
    if device.type != "cuda" or m < 1:
        return None
    try:  # memoized in the cache object (emptied by put): else 9-13 us a call on the H200's host
        cache = tuning.default_cache()
        gpu = device_info(torch.cuda.current_device() if device.index is None else device.index)
        memo = (gpu, dtype, n, k, tuning.m_bucket(m))
        if memo not in cache.answers:
            key = tuning.TuningKey(gpu[0], tuning.triton_version(), tuning.dtype_name(dtype), n, k,
                                   memo[-1])
            entries = (cache.lookup(key._replace(gpu=name))
                       for name in (gpu[0], *cache.shipped_gpus(*gpu[1:])))
            cache.answers[memo] = next((e.config for e in entries
                                        if e is not None and well_formed(e.config)), None)
        return cache.answers[memo]
    except Exception:  # noqa: BLE001 - a cache problem (or a warning made an error): heuristic
        return None


@functools.cache
def device_info(index: int) -> tuple[str, str, int]:
    """(name, compute capability "9.0", SM count) of a CUDA device."""
    props = torch.cuda.get_device_properties(index)
    return props.name, f"{props.major}.{props.minor}", props.multi_processor_count
