"""Direct launches of the pointer kernels (the mma and dot families, the split-K reduction): after
the first launch of a call shape through CachedLaunch (which compiles the kernel and keys it by
every argument), later calls of that shape hand their data pointers straight to the compiled
kernel's C launcher (triton_internals.pointer_launcher): no per-argument specialization key, no
CompiledKernel.run frame, no data_ptr() or pointer check per tensor in the C launcher.

A family keys a call by everything that fixes what Triton specialized but the pointers: the
config, the sizes and strides (ints), the dtypes, the epilogue and the device. The pointers
are fixed by one rule instead: only calls whose pointers are all 16-byte aligned come here
(Triton specializes a pointer on that alone), the others always take CachedLaunch.
"""

from __future__ import annotations

from sparse24.ops._checks import interpreter_active
from sparse24.ops.triton_internals import direct_launch_allowed, pointer_launcher

# Call shapes a family remembers at most: every token count of a server is a shape of its own
_MAX_SHAPES = 4096


class DirectLaunches:
    """{call-shape key: (the pointer launcher of the kernel CachedLaunch compiled for it, then
    what the family derived from the key: grid, constexprs, ...)}."""

    def __init__(self, cached):
        self.cached = cached
        self.known: dict[tuple, tuple] = {}
        # the Triton interpreter (CPU tests) has no compiled kernel: families then key nothing
        self.off = interpreter_active()

    def get(self, key: tuple, owner=None):
        """The entry for ``key``: (launcher, *derived); False where there is none (another Triton's
        launcher, the interpreter) or direct launches are off (a launch hook, bench/overhead.py's
        A/B); None while unknown. ``owner``: an object the key holds by id() (a config dict);
        its entry keeps it alive, so a recycled id() never finds another owner's launcher."""
        entry = self.known.get(key)
        if entry is None or entry[0] is not owner:
            return None
        return entry[1] if direct_launch_allowed() else False

    def learn(self, key: tuple, args: tuple, constexprs: tuple, derived: tuple, owner=None,
              **options) -> None:
        """After ``self.cached(grid, args, constexprs, **options)``: remember its launcher and
        ``derived``, what the family computed from the key's values."""
        if not direct_launch_allowed():
            return  # a hook's launch: learn from a plain one
        if len(self.known) >= _MAX_SHAPES:
            self.known.clear()
        compiled = self.cached.compiled_for(args, constexprs, **options)
        launcher = compiled is not None and pointer_launcher(compiled)
        self.known[key] = (owner, (launcher, *derived) if launcher else False)

