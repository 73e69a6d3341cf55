"""Direct launches (every kernel family, the split-K reduction): after
the first launch of a call shape through CachedLaunch (which compiles the kernel and keys it by
every argument), later calls of that shape go straight to the compiled kernel's C launcher
(triton_internals.pointer_launcher with data pointers; the sm90 family: DescriptorLauncher): no
per-argument specialization key, no CompiledKernel.run frame, no data_ptr() or pointer check per
tensor in the C launcher.

A family keys a call by everything that fixes what Triton specialized but the pointers: the
config, the sizes and strides (ints), the dtypes, the epilogue and the device. The pointers
are fixed by one rule instead: only calls whose pointers are all 16-byte aligned come here
(Triton specializes a pointer on that alone), the others always take CachedLaunch. The
family passes its key and owner to ``get`` on every call, and after a CachedLaunch call of a
shape it does not know, the compiled kernel to ``learn``.
"""

from __future__ import annotations

import torch

from sparse24.ops._checks import interpreter_active
from sparse24.ops.triton_internals import direct_launch_allowed, pointer_launcher

# Call shapes a family remembers at most: every token count of a server is a shape of its own
_MAX_SHAPES = 4096


class DirectLaunches:
    """{call-shape key: (the direct launcher of the kernel CachedLaunch compiled for it, then
    what the family derived from the key: grid, constexprs, ...)}. ``make(compiled)`` builds the
    launcher, None where Triton's launcher is not one it drives (pointer_launcher by default;
    the sm90 family's DescriptorLauncher.of)."""

    def __init__(self, make=None):
        self.make = make  # None: pointer_launcher, looked up when a shape is learned
        self.known: dict[tuple, tuple] = {}
        # the Triton interpreter (CPU tests) has no compiled kernel: the pointer families then
        # key nothing (they read this flag; the sm90 kernel never runs in the interpreter)
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

    def learn(self, key: tuple, compiled, derived: tuple, owner=None) -> None:
        """After a CachedLaunch call that ran ``compiled`` (its ``compiled_for`` the same
        arguments; None if it has none): remember its launcher and ``derived``, what the
        family computed from the key's values."""
        if not direct_launch_allowed():
            return  # a hook's launch: learn from a plain one
        if len(self.known) >= _MAX_SHAPES:
            self.known.clear()
        launcher = compiled is not None and (self.make or pointer_launcher)(compiled)
        self.known[key] = (owner, (launcher, *derived) if launcher else False)


def output_template(values: torch.Tensor, shape: torch.Size, width: int) -> torch.Tensor:
    """What a bound launch (wgmma.BoundLaunch, mma.BoundLaunch) allocates y from on each call:
    ``empty_like`` of a tensor whose strides are all 0 gives a contiguous tensor of its shape
    (torch's preserve_format rule), with no sizes or dtype to parse; y is [*x's leading dims,
    width] in the weight's dtype, on its device."""
    return torch.empty((), dtype=values.dtype, device=values.device).expand(*shape[:-1], width)
