"""Autotuning, kernel-agnostic: the JSON cache (user + shipped defaults) and the tuner loop.
``sparse24.ops.configs`` and ``sparse24.ops.tune`` use it for the GEMM; ``python -m sparse24 tune``
is ``sparse24.tuning.cli``. Importing it touches neither the GPU nor Triton.

Which is which: ``sparse24.ops.tune.tune`` is the op-side search (it drives ``autotune``, this
package's loop that checks and times candidates); ``cache`` holds the results; ``cli`` is
``python -m sparse24 tune``; ``sparse24.ops.configs.tuned`` is the lookup ``linear`` makes when it
plans a problem."""

from sparse24.tuning.autotune import NoValidConfigError, Rejected, TuneResult, autotune
from sparse24.tuning.cache import (CacheEntry, TuningCache, TuningCacheWarning, TuningKey, cache_dir,
                                   current_gpu_name, default_cache, dtype_name, m_bucket,
                                   on_change, triton_version, write_defaults, generation)

__all__ = ["CacheEntry", "NoValidConfigError", "Rejected", "TuneResult", "TuningCache",
           "TuningCacheWarning", "TuningKey", "autotune", "cache_dir", "current_gpu_name",
           "default_cache", "dtype_name", "generation", "m_bucket", "on_change", "triton_version",
           "write_defaults"]
