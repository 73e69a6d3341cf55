"""Gluon names that moved between Triton releases, resolved once at import (3.6 name first).

Gluon is experimental. Between Triton 3.6 (the GPU machine) and 3.9 (CI, newest on PyPI) the
names used by sparse24's sm90 family changed as follows; everything else it uses is spelled the
same in both:
  tma.async_copy_global_to_shared -> tma.async_load
  tma.async_copy_shared_to_global -> tma.async_store
  triton.language.core._aggregate -> triton.experimental.gluon.aggregate (3.6's Gluon uses the
    former itself; 3.9 makes it public)
  ampere.async_copy.async_copy_global_to_shared -> ampere.async_copy.async_load (cp.async)
(3.9 keeps the old names as aliases; the new ones are preferred where they exist.)
"""

from triton.experimental import gluon
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.experimental.gluon.language.nvidia.hopper import tma

try:
    aggregate = gluon.aggregate
except AttributeError:  # Triton 3.6
    from triton.language.core import _aggregate as aggregate

tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
tma_store = getattr(tma, "async_store", None) or tma.async_copy_shared_to_global
cp_async_load = getattr(async_copy, "async_load", None) or async_copy.async_copy_global_to_shared
cp_async_arrive = async_copy.mbarrier_arrive

__all__ = ["aggregate", "cp_async_arrive", "cp_async_load", "tma_load", "tma_store"]
