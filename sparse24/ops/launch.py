"""Launch Triton kernels through their compiled handles, skipping Triton's per-call binding.

``kernel[grid](*args)`` binds and specializes every argument, builds a cache key and looks the
compiled kernel up on each call. sparse24.ops.linear is called 72 times per BERT-base forward, and
at small batches eager inference is decided by host time per call (bench/results/overhead.md).
``CachedLaunch`` does the first launch of each specialization through Triton (which compiles it)
and keeps the returned ``CompiledKernel``; later calls with the same specialization go straight to
its launcher (``CompiledKernel.run``, the call Triton itself makes, Triton 3.6 to 3.9).

The specialization key mirrors what Triton specializes on, so a cached kernel is never called with
arguments it was not compiled for: the value of every constexpr; for each tensor its dtype and
whether its address is 16-byte aligned; for each int whether it is 1 (Triton makes it a constant),
whether it is divisible by 16, and whether it fits in 32 bits; num_warps, num_stages and the
current device. Under the Triton interpreter (CPU tests) every call goes through Triton.
"""

from __future__ import annotations

import torch
import triton
from triton.runtime import driver

from sparse24.ops._checks import interpreter_active

try:  # Triton >= 3.4
    from triton import knobs as _knobs
except ImportError:  # pragma: no cover - older Triton: no launch hooks to honour
    _knobs = None

_INT32 = range(-(2**31), 2**31)


def _spec(arg):
    if isinstance(arg, torch.Tensor):
        return arg.dtype, arg.data_ptr() % 16 == 0
    if isinstance(arg, bool) or not isinstance(arg, int):
        return arg
    return arg == 1, arg % 16 == 0, arg in _INT32


class CachedLaunch:
    """``CachedLaunch(kernel)(grid, *args, num_warps=, num_stages=)``: every kernel parameter
    positional, in signature order, constexprs included.

    ``CachedLaunch.enabled = False`` sends every call through ``kernel[grid]`` (bench/overhead.py
    times both)."""

    enabled = True

    def __init__(self, kernel: triton.JITFunction):
        self.kernel = kernel
        self._is_constexpr: tuple[bool, ...] | None = None  # read at the first compiled launch
        self._compiled: dict[tuple, object] = {}

    def __call__(self, grid: tuple[int, ...], *args, num_warps: int, num_stages: int) -> None:
        if not CachedLaunch.enabled or interpreter_active():  # interpreter: no compiled handle
            self.kernel[grid](*args, num_warps=num_warps, num_stages=num_stages)
            return
        if self._is_constexpr is None:
            self._is_constexpr = tuple(p.is_constexpr for p in self.kernel.params)
        if len(args) != len(self._is_constexpr):
            raise TypeError(f"{self.kernel.__name__}: expected {len(self._is_constexpr)} arguments, "
                            f"got {len(args)}")
        device = driver.active.get_current_device()
        key = (device, num_warps, num_stages) + tuple(
            arg if const else _spec(arg) for arg, const in zip(args, self._is_constexpr)
        )
        compiled = self._compiled.get(key)
        if compiled is None:
            self._compiled[key] = self.kernel[grid](*args, num_warps=num_warps, num_stages=num_stages)
            return
        grid = tuple(grid) + (1,) * (3 - len(grid))
        stream = driver.active.get_current_stream(device)
        enter = exit_ = None
        if _knobs is not None:
            enter, exit_ = _knobs.runtime.launch_enter_hook, _knobs.runtime.launch_exit_hook
        compiled.run(grid[0], grid[1], grid[2], stream, compiled.function, compiled.packed_metadata,
                     compiled.launch_metadata(grid, stream, *args), enter, exit_, *args)

    def cache_size(self) -> int:
        return len(self._compiled)
