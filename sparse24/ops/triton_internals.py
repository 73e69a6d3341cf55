"""The one place where sparse24 reaches into Triton below its public API (checked against Triton
3.6, the GPU machine's, and 3.9, CI's; tests/test_launch.py and tests/test_wgmma_compile.py run
every part of it on a CPU). Six things live here:

1. ``CachedLaunch``: launch a kernel through its compiled handle, skipping Triton's per-call
   binding. ``kernel[grid](*args)`` binds and specializes every argument, builds a cache key and
   looks the compiled kernel up on each call. sparse24.ops.linear is called 72 times per BERT-base
   forward, and at small batches eager inference is decided by host time per call
   (bench/results/h200/overhead.md). ``CachedLaunch`` does the first launch of each specialization
   through Triton (which compiles it) and keeps the returned ``CompiledKernel``; later calls with
   the same specialization go straight to its launcher (``CompiledKernel.run``, the call Triton
   itself makes). The specialization key mirrors what Triton specializes on, so a cached kernel is
   never called with arguments it was not compiled for: the value of every constexpr; for each
   tensor its dtype and whether its address is 16-byte aligned; for each TMA descriptor its dtype,
   box and layout; for each int whether it is 1 (Triton makes it a constant), whether it is
   divisible by 16, and whether it fits in 32 bits; num_warps, num_stages and the current device.
   Fallback: ``CachedLaunch.enabled = False`` (and the Triton interpreter) send every call through
   ``kernel[grid]``. Not in the key: Triton's debug and instrumentation knobs, and its pre-run
   hooks; set ``CachedLaunch.enabled = False`` before turning those on mid-process.

2. ``tensor_descriptor``: a Gluon TMA descriptor without its constructor's checks (4-5 us a
   descriptor on the host, three per sm90 GEMM call), for arguments the caller has checked.

3. ``compile_gluon_for``: compile a Gluon kernel for sm_90a on a machine without that GPU.

4. ``shared_memory_offsets(ttgir)``: the byte offset from ``global_smem`` at which Triton's
   allocator places each shared-memory allocation of a compiled kernel, keyed by the allocation's
   name in the kernel source (``%operand_ring_x = ttg.local_alloc ...``). The sm90 family's inline
   asm addresses its operand rings from ``global_smem`` (Gluon cannot pass shared-memory
   descriptors to asm), so its launcher must know, not assume, where they are. The final TTGIR of
   a compiled kernel carries no offsets (they are assigned while lowering to LLVM), so this runs
   the same passes that ``make_llir`` runs before allocation, up to and including the allocation
   pass, on a parsed copy of that TTGIR, and reads the ``allocation.offset`` attributes.

5. ``DescriptorLauncher``: launch a compiled kernel whose first parameters are TMA descriptors
   by filling the descriptors itself and calling Triton's C launcher, skipping the Python layers
   Triton puts in front of it (CudaLauncher.__call__ and a per-descriptor
   ``make_tensordesc_arg``, plus the descriptor objects themselves). ``DescriptorLauncher.of``
   checks that the compiled kernel's launcher has exactly one of the two shapes read here
   (Triton 3.6's: a C launcher compiled for the kernel behind a ``wrap_handle_tensordesc``
   closure; Triton 3.9's: the generic C launcher behind ``wrap_handle_tensordesc_impl``'s
   closure; no scratch memory) and returns None otherwise, so another Triton keeps the
   ``CachedLaunch`` path.

6. ``pointer_launcher``: the same for kernels without descriptors (the mma, dot and split-K
   reduction kernels), on Triton 3.6's launcher and on 3.9's: a function that hands the C
   launcher the grid, the stream and the arguments, with tensors passed as their ``data_ptr()``
   (the C launcher takes an int as a pointer and skips its per-tensor ``data_ptr`` call and
   ``cuPointerGetAttribute`` check). Triton's own ``CompiledKernel.run`` puts a Python frame, two
   closures and two scratch allocations in front of the same call. The caller keys it by what
   fixes the specialization (sparse24/ops/ops/direct.py), so it never sees other arguments.
   ``DescriptorLauncher.enabled = False`` turns both direct paths off.
"""

from __future__ import annotations

import functools
import re
import tempfile

import triton
from triton.runtime import driver

from sparse24.ops._checks import interpreter_active

try:  # Triton >= 3.4
    from triton import knobs as _knobs
except ImportError:  # pragma: no cover - older Triton: no launch hooks to honour
    _knobs = None


def _hooks_active() -> bool:
    """Whether a launch hook (e.g. a profiler's) is registered. Triton 3.6 and 3.9 always hold a
    HookChain there, empty by default: then the launcher gets None, and no launch metadata is
    built (a Python call per launch; the C launcher skips None hooks)."""
    if _knobs is None:
        return False
    # spelled out, not any() over a generator: every direct launch asks (0.40 -> 0.16 us on the
    # dev CPU, bench/results/cpu/hooks_active_ab.txt)
    runtime = _knobs.runtime
    enter, leave = runtime.launch_enter_hook, runtime.launch_exit_hook
    return ((enter is not None and bool(getattr(enter, "calls", True)))
            or (leave is not None and bool(getattr(leave, "calls", True))))


def _bind_driver() -> None:
    """Replace _current_device / _current_stream by the active driver's own functions: through
    ``driver.active`` (a lazy proxy) each call costs a few attribute look-ups more."""
    global _current_device, _current_stream
    active = driver.active
    _current_device, _current_stream = active.get_current_device, active.get_current_stream


def _current_device() -> int:
    _bind_driver()
    return _current_device()


def _current_stream(device: int):
    _bind_driver()
    return _current_stream(device)


_layout_keys: dict[int, tuple[object, str]] = {}


def _layout_key(layout) -> str:
    """repr(layout), memoized by identity: a dataclass repr is about 3 us on the H200's host and
    a sm90 launch has three descriptors, almost always of one layout object. The entry keeps its
    layout alive, so a recycled id() can never name another layout."""
    entry = _layout_keys.get(id(layout))
    if entry is None or entry[0] is not layout:
        entry = _layout_keys[id(layout)] = (layout, repr(layout))
    return entry[1]


def _spec(arg) -> object:
    """What Triton specializes a runtime argument on (see the module docstring)."""
    if type(arg) is int:
        if arg == 1:
            return "one"
        return arg % 16 == 0, -(2**31) <= arg < 2**31, arg >= 2**63
    if hasattr(arg, "block_shape"):  # a TMA descriptor: its type is the dtype, box and layout
        return arg.base.dtype, tuple(arg.block_shape), _layout_key(arg.layout)
    if hasattr(arg, "data_ptr"):
        return arg.dtype, arg.data_ptr() % 16 == 0
    return type(arg), arg  # bool, None, float: a type of their own (no caller passes them today)


def current_device() -> int:
    """Triton's current device (the one CachedLaunch keys its kernels on)."""
    return _current_device()


def current_stream(device: int):
    return _current_stream(device)


spec = _spec


class CachedLaunch:
    """``CachedLaunch(kernel)(grid, args, constexprs, num_warps=, num_stages=, maxnreg=)``.

    ``args``: the runtime arguments (tensors and ints) and ``constexprs``: the values of the
    constexpr parameters, each a tuple in signature order; the kernel must declare every runtime
    parameter before its constexprs. ``CachedLaunch.enabled = False`` sends every call through
    ``kernel[grid]`` (bench/overhead.py times both).
    """

    enabled = True

    def __init__(self, kernel: triton.JITFunction):
        self.kernel = kernel
        self._compiled: dict[tuple, object] = {}
        self._interpreted = interpreter_active()  # set before any kernel exists (tests/conftest.py)

    def __call__(self, grid: tuple[int, int, int], args: tuple, constexprs: tuple, *,
                 num_warps: int, num_stages: int | None = None, maxnreg: int | None = None) -> None:
        # The hot path first, in as few Python calls as it takes: each costs about 0.3-1 us on
        # the H200 machine's host, and a BERT-base forward makes 72 launches.
        if CachedLaunch.enabled and not self._interpreted:
            device = _current_device()
            key = (device, num_warps, num_stages, maxnreg, constexprs, *map(_spec, args))
            compiled = self._compiled.get(key)
            if compiled is not None:
                stream = _current_stream(device)
                enter = exit_ = metadata = None
                if _hooks_active():
                    enter, exit_ = _knobs.runtime.launch_enter_hook, _knobs.runtime.launch_exit_hook
                    metadata = compiled.launch_metadata(grid, stream, *args, *constexprs)
                compiled.run(grid[0], grid[1], grid[2], stream, compiled.function,
                             compiled.packed_metadata, metadata, enter, exit_, *args, *constexprs)
                return
        # num_stages None: not passed (Gluon kernels, whose compile options must stay those of
        # their warmup, sparse24/ops/wgmma.py)
        options = {"num_warps": num_warps}
        if num_stages is not None:
            options["num_stages"] = num_stages
        if maxnreg is not None:  # a register cap a thread (ptxas .maxnreg), e.g. for 3 programs an SM
            options["maxnreg"] = maxnreg
        compiled = self.kernel[grid](*args, *constexprs, **options)
        if CachedLaunch.enabled and not self._interpreted:  # interpreter: no compiled handle
            self._check_signature(len(args), len(constexprs))
            self._compiled[key] = compiled

    def compiled_for(self, args: tuple, constexprs: tuple, *, num_warps: int,
                     num_stages: int | None = None, maxnreg: int | None = None):
        """The CompiledKernel a call with these arguments launches, None before its first call."""
        key = (_current_device(), num_warps, num_stages, maxnreg, constexprs, *map(_spec, args))
        return self._compiled.get(key)

    def _check_signature(self, n_args: int, n_constexprs: int) -> None:
        kinds = [p.is_constexpr for p in self.kernel.params]
        if kinds != [False] * n_args + [True] * n_constexprs:
            raise TypeError(f"{self.kernel.__name__}: CachedLaunch needs every runtime parameter "
                            f"before the constexprs, got {n_args} + {n_constexprs} for {kinds}")


# The C launcher's fixed leading arguments in Triton 3.6 (driver.py's _BASE_ARGS_FORMAT
# "iiiKKppOOOOOO"): grid x/y/z, stream, function, cooperative grid, PDL, global scratch, profile
# scratch, packed metadata, launch metadata, enter hook, exit hook.
_BASE_ARGS = 13


# Parameters of CudaLauncher.__call__ in the two launcher shapes DescriptorLauncher and
# pointer_launcher drive. 3.6: the kernel's own compiled C launcher takes the 13 fixed arguments
# (_BASE_ARGS), then the kernel's, spread out. 3.9: one generic C launcher takes 16: the packed
# metadata before the two scratch buffers, then the argument annotations, the kernel signature
# and the kernel's arguments as one sequence ("iiiKKpp(iii)OOOOOOy*O", driver.c).
_CALL_3_6 = ["self", "gridX", "gridY", "gridZ", "stream", "function", "args"]
_CALL_3_9 = ["self", "gridX", "gridY", "gridZ", "stream", "function", "kernel_metadata",
             "launch_metadata", "launch_enter_hook", "launch_exit_hook", "args"]


def _launcher_shape(run) -> str | None:
    """"3.6" or "3.9": which of the two CudaLauncher shapes (_CALL_3_6) ``run`` has, with no
    scratch memory and no GSan instrumentation (neither direct launcher passes them); None for
    anything else."""
    import inspect

    if (type(run).__name__ != "CudaLauncher" or getattr(run, "global_scratch_size", 1)
            or getattr(run, "profile_scratch_size", 1) or getattr(run, "gsan_enabled", False)):
        return None
    try:
        params = list(inspect.signature(type(run).__call__).parameters)
    except (TypeError, ValueError):
        return None
    if params == _CALL_3_6:
        return "3.6"
    if params == _CALL_3_9 and hasattr(run, "arg_annotations"):
        return "3.9"
    return None


def direct_launch_allowed() -> bool:
    """The direct launches (DescriptorLauncher, pointer_launcher) may run: DescriptorLauncher and
    CachedLaunch enabled, no launch hook registered."""
    return DescriptorLauncher.enabled and CachedLaunch.enabled and not _hooks_active()


class DescriptorLauncher:
    """``DescriptorLauncher.of(compiled, n_descriptors)(grid0, stream, tensors, args, constexprs)``
    launches ``compiled`` (a CompiledKernel whose first ``n_descriptors`` parameters are TMA
    descriptors) on ``tensors`` (2-D, one per descriptor, each with the box and layout the kernel
    was compiled for), then the runtime ``args`` and the ``constexprs``, on a 1-D grid. The
    arguments reach the C launcher exactly as the installed Triton's own wrapper would pass them,
    on Triton 3.6 and on 3.9 (their two launcher shapes: _CALL_3_6; tests/test_launch.py
    compares the two on the installed version). No launch hooks: callers take the CachedLaunch
    path while one is registered. ``DescriptorLauncher.enabled = False`` sends every call back
    through CachedLaunch (bench/overhead.py times both)."""

    enabled = True

    # A filled descriptor (a CUtensorMap) is a function of the address, shape and strides alone
    # (the launcher fixes the box, swizzle and element type) and the C launcher copies it into the
    # kernel's parameters, so one filled for an earlier call serves every later call with the
    # same three: kept per descriptor, the weight's for good (one per layer of that shape) and
    # x's and y's while the caching allocator hands out the same blocks.
    keep_descriptors = True
    _KEPT = 256  # descriptors kept per parameter; all forgotten when full

    def __init__(self, compiled, launcher, metas, fill, annotations=None, signature=None):
        # kept: its module (the function handle) is unloaded when it is collected (Triton 3.9)
        self._compiled = compiled
        self._function = compiled.function
        self._packed = compiled.packed_metadata
        self._cooperative = compiled.run.launch_cooperative_grid
        self._pdl = compiled.run.launch_pdl
        self._launcher = launcher
        self._fill = fill
        # (swizzle, element bytes, host dtype enum, box) per descriptor, in parameter order
        self._metas = metas
        # Triton 3.9's generic C launcher reads the argument annotations and the kernel
        # signature; None on Triton 3.6 (a C launcher compiled for the kernel)
        self._annotations, self._signature = annotations, signature
        self._kept: tuple[dict, ...] = tuple({} for _ in metas)

    @classmethod
    def of(cls, compiled, n_descriptors: int) -> DescriptorLauncher | None:
        """None unless the launcher has one of the two shapes described at _CALL_3_6."""
        import inspect

        try:
            from triton.backends.nvidia import driver as nvidia_driver
        except ImportError:
            return None
        run = compiled.run
        shape = _launcher_shape(run)
        if shape is None or not hasattr(nvidia_driver, "TMA_DTYPE_DEVICE_TO_HOST"):
            return None
        try:
            closure = inspect.getclosurevars(run.launch).nonlocals
        except TypeError:  # not a Python closure: no wrapper to skip
            return None
        if shape == "3.6" and set(closure) == {"launcher", "tensordesc_indices",
                                               "tensordesc_meta"}:
            if (getattr(nvidia_driver, "_BASE_ARGS_FORMAT_LEN", None) != _BASE_ARGS
                    or list(inspect.signature(nvidia_driver.make_tensordesc_arg).parameters)
                    != ["arg", "metadata"]
                    or closure["tensordesc_indices"] != set(range(n_descriptors))):
                return None
            annotations = signature = None
            fill = driver.active.utils.fill_tma_descriptor
        elif (shape == "3.9"
              and set(closure) == {"launcher", "make_tensordesc_arg", "relevant_paths",
                                   "signature", "tensordesc_meta"}
              and closure["launcher"] is getattr(driver.active.utils, "launch", None)):
            # the descriptors at the top-level parameters 0..n-1, filled by Triton's own
            # make_tensordesc_arg (tiled mode: what it does for metadata without fp4 padding
            # or im2col)
            if (closure["make_tensordesc_arg"] is not nvidia_driver.make_tensordesc_arg
                    or closure["relevant_paths"] != {i: {} for i in range(n_descriptors)}):
                return None
            annotations, signature = run.arg_annotations, run.kernel_signature
            fill = driver.active.utils.fill_tma_descriptor_tiled
        else:
            return None
        metas = closure["tensordesc_meta"]
        if len(metas) != n_descriptors or any(
                m is None or m.get("fp4_padded") or m.get("is_im2col") for m in metas):
            return None
        to_host = nvidia_driver.TMA_DTYPE_DEVICE_TO_HOST
        metas = tuple((m["swizzle"], m["elem_size"], to_host[m["elem_type"]], m["block_size"])
                      for m in metas)
        return cls(compiled, closure["launcher"], metas, fill, annotations, signature)

    def __call__(self, grid0: int, stream, tensors: tuple, args: tuple, constexprs: tuple) -> None:
        expanded = []
        if self.keep_descriptors:
            for tensor, spec, kept in zip(tensors, self._metas, self._kept):
                shape, strides = tensor.shape, tensor.stride()
                key = (tensor.data_ptr(), *shape, *strides)
                descriptor = kept.get(key)
                if descriptor is None:
                    descriptor = self._filled(kept, key, spec, shape, strides)
                expanded += (descriptor, *shape, *strides)
        else:
            for index, tensor in enumerate(tensors):
                expanded += self.descriptor_args(index, tensor)
        self.launch_expanded(grid0, stream, expanded, args, constexprs)

    def descriptor_args(self, index: int, tensor) -> tuple:
        """What descriptor parameter ``index`` passes for ``tensor``: its filled descriptor, then
        the tensor's shape and strides (the C launcher's arguments for it)."""
        swizzle, elem_size, dtype, box = self._metas[index]
        shape, strides = tensor.shape, tensor.stride()
        return (self._fill(tensor.data_ptr(), swizzle, elem_size, dtype, box, shape, strides, 0),
                *shape, *strides)

    def launch_expanded(self, grid0: int, stream, expanded, args: tuple, constexprs: tuple) -> None:
        """The launch, the descriptors given as ``expanded``: every descriptor_args in
        parameter order, concatenated (a caller that keeps them passes them so)."""
        if self._annotations is None:  # Triton 3.6: 13 fixed arguments, then the kernel's
            self._launcher(grid0, 1, 1, stream, self._function, self._cooperative, self._pdl, None,
                           None, self._packed, None, None, None, *expanded, *args, *constexprs)
            return
        # Triton 3.9: the packed metadata before the scratch buffers, the kernel's arguments as
        # one list (as its wrapper hands them over)
        self._launcher(grid0, 1, 1, stream, self._function, self._cooperative, self._pdl,
                       self._packed, None, None, None, None, None, self._annotations,
                       self._signature, [*expanded, *args, *constexprs])

    def _filled(self, kept: dict, key: tuple, spec: tuple, shape, strides):
        if len(kept) >= self._KEPT:
            kept.clear()
        swizzle, elem_size, dtype, box = spec
        descriptor = kept[key] = self._fill(key[0], swizzle, elem_size, dtype, box, shape,
                                            strides, 0)
        return descriptor


def pointer_launcher(compiled):
    """``launch(grid0, grid1, grid2, stream, *args)``: run ``compiled`` (a CompiledKernel without
    TMA descriptor parameters) on that grid with ``args`` (its runtime arguments,
    tensors or their data_ptr(), then its constexprs, as CachedLaunch passes them), exactly as
    its ``run`` would with no launch hooks (tests/test_launch.py compares the two on the installed
    Triton). None unless the launcher has one of the two shapes described at _CALL_3_6 (a
    Python wrapper around the C launcher, scratch memory or GSan instrumentation: None)."""
    import inspect

    run = getattr(compiled, "run", None)
    shape = _launcher_shape(run)
    c_launch = getattr(run, "launch", None)
    if shape is None or c_launch is None or inspect.isfunction(c_launch):  # a wrapper: not ours
        return None
    function, packed = compiled.function, compiled.packed_metadata
    cooperative, pdl = run.launch_cooperative_grid, run.launch_pdl
    if shape == "3.6":
        from triton.backends.nvidia import driver as nvidia_driver

        if getattr(nvidia_driver, "_BASE_ARGS_FORMAT_LEN", None) != _BASE_ARGS:
            return None

        def launch(grid0, grid1, grid2, stream, *args):
            c_launch(grid0, grid1, grid2, stream, function, cooperative, pdl, None, None, packed,
                     None, None, None, *args)
    elif c_launch is getattr(driver.active.utils, "launch", None):  # shape "3.9"
        # 3.9's generic C launcher does not check the arguments' count against the annotations:
        # only the launcher Triton itself installed is driven
        annotations, signature = run.arg_annotations, run.kernel_signature

        def launch(grid0, grid1, grid2, stream, *args):
            c_launch(grid0, grid1, grid2, stream, function, cooperative, pdl, packed, None, None,
                     None, None, None, annotations, signature, args)
    else:
        return None
    # the closure holds the CompiledKernel: its module (the function handle) is unloaded when it
    # is collected (Triton 3.9's CompiledKernel.__del__)
    launch.compiled = compiled
    return launch


def tensor_descriptor(tensor, block_shape: list[int], layout):
    """Gluon's TensorDescriptor of a 2-D tensor, built without ``__post_init__``: the same fields
    as ``TensorDescriptor.from_tensor`` (a test compares them), the optional ones at their class
    defaults. Only for tensors the caller has checked: 16-byte aligned, unit last stride, other
    strides multiples of 16 bytes, no empty dimension."""
    desc = object.__new__(_descriptor_class())
    desc.__dict__.update(base=tensor, shape=tensor.shape, strides=tensor.stride(),
                         block_shape=block_shape, layout=layout)
    return desc


@functools.lru_cache(maxsize=None)
def _descriptor_class():
    # imported on first use: an import statement per call costs about 1 us
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    return TensorDescriptor


def compile_gluon_for(kernel, signature: dict, constexprs: dict, *, capability: int,
                      num_warps: int):
    """Compile a Gluon kernel for a GPU that need not be here (``triton.compile`` with a
    ``GPUTarget``; ptxas ships in the wheel). ``signature``: the runtime parameters' types as
    Triton spells them; ``constexprs``: their values. Gluon's source class is not public."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    full = {**signature, **dict.fromkeys(constexprs, "constexpr")}
    source = GluonASTSource(kernel, full, constexprs)
    return triton.compile(source, target=GPUTarget("cuda", capability, 32),
                          options={"num_warps": num_warps})


_ALLOC = re.compile(r"%([A-Za-z_][\w.]*) = ttg\.local_alloc \{[^}]*allocation\.offset = (\d+) : i32")


def _run_allocation(ttgir: str, capability: int) -> str:
    from triton._C.libtriton import ir, nvidia, passes
    from triton.backends.nvidia.compiler import get_ptx_version_from_options

    context = ir.context()
    ir.load_dialects(context)
    nvidia.load_dialects(context)
    with tempfile.NamedTemporaryFile("w", suffix=".ttgir") as f:
        f.write(ttgir)
        f.flush()
        module = ir.parse_mlir_module(f.name, context)
    manager = ir.pass_manager(context)
    passes.ttgpuir.add_combine_tensor_select_and_if(manager)
    try:  # Triton 3.9 added a flag (concurrency sanitizer); 3.6 takes none
        passes.ttgpuir.add_allocate_warp_groups(manager)
    except TypeError:
        passes.ttgpuir.add_allocate_warp_groups(manager, False)
    passes.convert.add_scf_to_cf(manager)
    passes.gluon.add_inliner(manager)

    class _Options:  # what get_ptx_version_from_options reads
        ptx_version = None

    ptx_version = get_ptx_version_from_options(_Options(), capability)
    nvidia.passes.ttgpuir.add_allocate_shared_memory_nv(manager, capability, ptx_version)
    manager.run(module, "sparse24-allocation-probe")
    return str(module)


def shared_memory_offsets(ttgir: str, capability: int = 90) -> dict[str, int]:
    """{allocation name: byte offset} of every named ``ttg.local_alloc`` of a compiled kernel."""
    return {name: int(offset) for name, offset in _ALLOC.findall(_run_allocation(ttgir, capability))}
