"""Autotuning for the sparse GEMM: keys, the JSON cache (user + shipped defaults), the tuner.

Kernel-agnostic: ``sparse24.ops.configs`` asks ``default_cache().lookup`` for a launch config, and
``sparse24.ops.tune`` calls ``autotune`` with its candidates, a ``run`` and a ``check``.
``python -m sparse24 tune`` (``sparse24.tuning.cli``) drives that over many shapes. Importing this
package touches neither the GPU nor Triton.
"""

from sparse24.tuning.autotune import NoValidConfigError, Rejected, TuneResult, autotune
from sparse24.tuning.cache import (
    CacheEntry, TuningCache, TuningCacheWarning, TuningKey, cache_dir, current_gpu_name,
    default_cache, dtype_name, m_bucket, triton_version, write_defaults,
)

__all__ = ["CacheEntry", "NoValidConfigError", "Rejected", "TuneResult", "TuningCache",
           "TuningCacheWarning", "TuningKey", "autotune", "cache_dir", "current_gpu_name",
           "default_cache", "dtype_name", "m_bucket", "triton_version", "write_defaults"]
