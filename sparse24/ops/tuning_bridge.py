"""Where linear() finds tuned configs: sparse24.tuning's cache, memoized for the hot path.

``lookup(m, n, k, dtype, device)`` is called by ``gemm.choose_config`` on every CUDA launch. The
first call for a (device index, dtype, N, K, M bucket) asks ``sparse24.tuning.lookup`` (user cache,
shipped defaults, nearest M bucket) and remembers the answer in a plain dict, so later calls cost
one dict lookup. It never raises: a missing, corrupt or odd cache entry gives None, and the caller
falls back to its heuristic.

Rules on top of the cache's own lookup order:
- an entry from a "nearest" M bucket more than ``MAX_BUCKET_RATIO`` (4x) away from M's bucket is
  skipped: a config tuned for M=16 (split-K, tiny tiles) is a poor guess for M=4096 and the shape
  heuristic does better;
- a config that is malformed (unknown family, missing or non-positive tile sizes, block sizes that
  are not powers of two) or does not fit [N, K] is skipped;
- sibling GPUs: when this GPU has no usable entry, the shipped defaults of another GPU model with
  the same compute capability and SM count (``SIBLING_DEFAULTS``) are tried, e.g. an H100 SXM
  (sm_90, 132 SMs) and an H200 use each other's. Every config is a valid launch on any GPU of the same
  architecture (same instructions, shared memory and register file), so this is safe for
  correctness; the same SM count keeps grid / split-K sizing sensible, only memory bandwidth
  differs. A GPU's own entries (tuned or shipped, nearest bucket included) always win.

The returned dict is shared with the memo: callers must not modify it (``gemm`` only reads it).
``clear()`` forgets the memo (``sparse24.ops.tune.tune`` calls it after storing a new entry; call
it yourself after changing ``$SPARSE24_CACHE_DIR`` or writing cache files from another process).
"""

from __future__ import annotations

import functools

import torch

# An entry from a "nearest" M bucket is used only if its bucket is within this factor of M's.
MAX_BUCKET_RATIO = 4

# (compute capability, SM count) -> GPU names whose shipped defaults other GPUs with the same
# capability and SM count may use, in order of preference. Add a line when a defaults file for a
# new GPU model lands.
SIBLING_DEFAULTS: dict[tuple[tuple[int, int], int], tuple[str, ...]] = {
    # H100 SXM5 and H200; not H100 PCIe (114 SMs)
    ((9, 0), 132): ("NVIDIA H100 80GB HBM3", "NVIDIA H200"),
}

_REQUIRED = {
    "mma": ("BLOCK_F", "BLOCK_T", "GROUP_T", "PREFETCH", "num_warps", "num_stages"),
    "dot": ("BLOCK_M", "BLOCK_N", "SPLIT_K", "num_warps", "num_stages"),
    "wgmma": ("BT", "STAGES", "GROUP"),
}
# Keys a config may leave out (mma configs tuned before split-K existed run unsplit).
_OPTIONAL = {"mma": ("SPLIT_K",), "dot": (), "wgmma": ()}
_POWERS_OF_TWO = ("BLOCK_F", "BLOCK_T", "BLOCK_M", "BLOCK_N", "num_warps", "BT")

# (device index, dtype, n, k, m bucket) -> config or None
_memo: dict[tuple[int, torch.dtype, int, int, int], dict | None] = {}


def clear() -> None:
    """Forget every memoized answer (after tuning, or when the cache directory changed)."""
    _memo.clear()


def lookup(m: int, n: int, k: int, dtype: torch.dtype, device: torch.device) -> dict | None:
    """The tuned (or shipped default) config for an [m, k] x [n, k]^T product on ``device``, or
    None when there is none worth using. Never raises."""
    try:
        if m < 1 or device.type != "cuda":  # no tokens (no M bucket), or no GPU: the heuristic
            return None
        index = device.index
        if index is None:
            index = torch.cuda.current_device()
        memo_key = (index, dtype, n, k, 1 << (m - 1).bit_length())
    except Exception:  # noqa: BLE001 - a bad argument: let the heuristic deal with it
        return None
    try:
        return _memo[memo_key]
    except KeyError:
        pass
    try:
        found = _resolve(m, n, k, dtype, index)
    except Exception:  # noqa: BLE001 - any cache problem means "no tuned config"
        found = None
    _memo[memo_key] = found
    return found


def _resolve(m: int, n: int, k: int, dtype: torch.dtype, index: int) -> dict | None:
    from sparse24 import tuning

    name, capability, sm_count = _device_info(index)
    base = tuning.TuningKey(gpu=name, triton=tuning.triton_version(), dtype=tuning.dtype_name(dtype),
                            n=n, k=k, m_bucket=tuning.m_bucket(m))
    config = _usable(_cache_lookup(tuning, base), base, n, k)
    if config is not None:
        return config
    for sibling in SIBLING_DEFAULTS.get((capability, sm_count), ()):
        if sibling == name:
            continue
        key = tuning.TuningKey(gpu=sibling, triton=base.triton, dtype=base.dtype, n=n, k=k,
                               m_bucket=base.m_bucket)
        config = _usable(_cache_lookup(tuning, key), key, n, k)
        if config is not None:
            return config
    return None


def _cache_lookup(tuning, key):
    # Its own function so that tests can count calls; the cache warns (never raises) on bad files.
    return tuning.lookup(key)


def _usable(entry, key, n: int, k: int) -> dict | None:
    if entry is None:
        return None
    if entry.source.startswith("nearest"):
        ratio = max(entry.key.m_bucket, key.m_bucket) / min(entry.key.m_bucket, key.m_bucket)
        if ratio > MAX_BUCKET_RATIO:
            return None
    config = dict(entry.config)
    return config if well_formed(config, n, k) else None


def well_formed(config: dict, n: int, k: int) -> bool:
    """Whether ``config`` names a known family with positive int tile sizes that fit [n, k]."""
    required = _REQUIRED.get(config.get("family"))
    if required is None:
        return False
    optional = tuple(name for name in _OPTIONAL[config["family"]] if name in config)
    for name in required + optional:
        value = config.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            return False
        if value < (0 if name == "PREFETCH" else 1):
            return False
        if name in _POWERS_OF_TWO and value & (value - 1):
            return False
    from sparse24.ops.gemm import config_fits

    return config_fits(config, n, k)


@functools.cache
def _device_info(index: int) -> tuple[str, tuple[int, int], int]:
    """(name, compute capability, SM count) of CUDA device ``index``."""
    props = torch.cuda.get_device_properties(index)
    return props.name, (props.major, props.minor), props.multi_processor_count


__all__ = ["MAX_BUCKET_RATIO", "SIBLING_DEFAULTS", "clear", "lookup", "well_formed"]
