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

import triton
from triton.runtime import driver

from sparse24.ops._checks import interpreter_active

try:  # Triton >= 3.4
    from triton import knobs as _knobs
except ImportError:  # pragma: no cover - older Triton: no launch hooks to honour
    _knobs = None

def _spec(arg) -> object:
    """What Triton specializes a runtime argument on (see the module docstring)."""
    if type(arg) is int:
        if arg == 1:
            return "one"
        return arg % 16 == 0, -(2**31) <= arg < 2**31, arg >= 2**63
    return arg.dtype, arg.data_ptr() % 16 == 0


class CachedLaunch:
    """``CachedLaunch(kernel)(grid, args, constexprs, num_warps=, num_stages=)``.

    ``args``: the runtime arguments (tensors and ints) and ``constexprs``: the values of the
    constexpr parameters, each a tuple in signature order; the kernel must declare every runtime
    parameter before its constexprs. ``CachedLaunch.enabled = False`` sends every call through
    ``kernel[grid]`` (bench/overhead.py times both).
    """

    enabled = True

    def __init__(self, kernel: triton.JITFunction):
        self.kernel = kernel
        self._compiled: dict[tuple, object] = {}

    def __call__(self, grid: tuple[int, int, int], args: tuple, constexprs: tuple, *,
                 num_warps: int, num_stages: int) -> None:
        if not CachedLaunch.enabled or interpreter_active():  # interpreter: no compiled handle
            self.kernel[grid](*args, *constexprs, num_warps=num_warps, num_stages=num_stages)
            return
        device = driver.active.get_current_device()
        key = (device, num_warps, num_stages, constexprs, *map(_spec, args))
        compiled = self._compiled.get(key)
        if compiled is None:
            self._check_signature(len(args), len(constexprs))
            self._compiled[key] = self.kernel[grid](*args, *constexprs, num_warps=num_warps,
                                                    num_stages=num_stages)
            return
        stream = driver.active.get_current_stream(device)
        enter = exit_ = metadata = None
        if _knobs is not None and _knobs.runtime.launch_enter_hook is not None:
            enter, exit_ = _knobs.runtime.launch_enter_hook, _knobs.runtime.launch_exit_hook
            metadata = compiled.launch_metadata(grid, stream, *args, *constexprs)
        compiled.run(grid[0], grid[1], grid[2], stream, compiled.function, compiled.packed_metadata,
                     metadata, enter, exit_, *args, *constexprs)

    def _check_signature(self, n_args: int, n_constexprs: int) -> None:
        kinds = [p.is_constexpr for p in self.kernel.params]
        if kinds != [False] * n_args + [True] * n_constexprs:
            raise TypeError(f"{self.kernel.__name__}: CachedLaunch needs every runtime parameter "
                            f"before the constexprs, got {n_args} + {n_constexprs} for {kinds}")

    def cache_size(self) -> int:
        return len(self._compiled)
