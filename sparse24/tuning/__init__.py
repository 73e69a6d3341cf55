"""Autotuning infrastructure for the sparse GEMM: keys, a JSON cache, a correctness-first tuner.

Kernel-agnostic: a GEMM launcher builds a ``TuningKey``, calls ``lookup`` (user cache, shipped
defaults, nearest M bucket) and falls back to its heuristic on None; its tune entry point calls
``autotune`` with its candidates, a ``run`` and a ``check``. ``python -m sparse24 tune`` drives
that over many shapes (``sparse24.tuning.cli``).

Importing this package touches neither the GPU nor Triton.
"""

from sparse24.tuning.autotune import NoValidConfigError, Rejected, TuneResult, autotune
from sparse24.tuning.cache import (
    CacheEntry,
    TuningCache,
    TuningCacheWarning,
    cache_dir,
    default_cache,
    lookup,
    write_defaults,
)
from sparse24.tuning.keys import (
    TuningKey,
    current_gpu_name,
    dtype_name,
    m_bucket,
    triton_version,
)

__all__ = [
    "CacheEntry",
    "NoValidConfigError",
    "Rejected",
    "TuneResult",
    "TuningCache",
    "TuningCacheWarning",
    "TuningKey",
    "autotune",
    "cache_dir",
    "current_gpu_name",
    "default_cache",
    "dtype_name",
    "lookup",
    "m_bucket",
    "triton_version",
    "write_defaults",
]
