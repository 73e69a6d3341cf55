"""Gluon names that moved between Triton releases, resolved once at import (3.6 name first).

Gluon is experimental. Between Triton 3.6 (the GPU machine) and 3.9 (CI, newest on PyPI) the
names used by sparse24's sm90 family changed as follows; everything else it uses is spelled the
same in both:
  tma.async_copy_global_to_shared -> tma.async_load
  tma.async_copy_shared_to_global -> tma.async_store
(3.9 keeps the old names as aliases; the new ones are preferred where they exist.)
"""

from triton.experimental.gluon.language.nvidia.hopper import tma

tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
tma_store = getattr(tma, "async_store", None) or tma.async_copy_shared_to_global

__all__ = ["tma_load", "tma_store"]
