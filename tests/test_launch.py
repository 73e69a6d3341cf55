"""sparse24.ops.triton_internals: the cached-launch key must tell apart every pair of arguments that Triton
itself compiles differently, or a kernel would run with assumptions its arguments break."""

import inspect
import itertools

import pytest
import torch

from sparse24.ops.triton_internals import _spec

libtriton = pytest.importorskip("triton._C.libtriton")
from triton.backends.compiler import BaseBackend  # noqa: E402


def triton_spec(arg):
    # (type, specialization) as Triton's launcher computes them for a non-constexpr argument
    return libtriton.native_specialize_impl(BaseBackend, arg, False, True, True)


INTS = [0, 1, 2, 15, 16, 17, 48, 768, 2**31 - 16, 2**31 - 1, 2**31, 2**31 + 16, -16, -17, 2**40,
        2**63, 2**63 + 1]


def tensors():
    base = torch.randn(64, dtype=torch.float16)
    return [base, base[1:], base[8:], base.float(), base.float()[2:], base.view(torch.int32),
            base.view(torch.int32)[1:], base.bfloat16()]


@pytest.mark.parametrize("args", [INTS, tensors()], ids=["ints", "tensors"])
def test_spec_separates_what_triton_specializes(args):
    for a, b in itertools.combinations(args, 2):
        if triton_spec(a) != triton_spec(b):
            assert _spec(a) != _spec(b), (a if isinstance(a, int) else a.dtype,
                                          b if isinstance(b, int) else b.dtype)


def test_unchecked_descriptor_equals_the_checked_one():
    """tensor_descriptor skips TensorDescriptor's checks, not its fields: every field (including
    the optional ones, at their defaults) matches from_tensor's, in this Triton version."""
    hopper = pytest.importorskip("triton.experimental.gluon.nvidia.hopper")
    from sparse24.ops import wgmma
    from sparse24.ops.triton_internals import _spec, tensor_descriptor

    layout = wgmma._nvmma_layout()
    x = torch.randn(96, 128, dtype=torch.float16)
    fast = tensor_descriptor(x, [64, 64], layout)
    assert fast == hopper.TensorDescriptor.from_tensor(x, [64, 64], layout)
    assert _spec(fast) == _spec(hopper.TensorDescriptor.from_tensor(x, [64, 64], layout))
    others = [tensor_descriptor(x, [128, 64], layout), tensor_descriptor(x.bfloat16(), [64, 64], layout)]
    assert all(_spec(other) != _spec(fast) for other in others)


class _FakeCompiled:
    function, packed_metadata = "function", "packed"

    def __init__(self, log):
        self.log = log

    def run(self, *launch):
        self.log.append(("run", launch))

    def launch_metadata(self, *args):
        return "metadata"


class _FakeKernel:
    """What CachedLaunch uses of a JITFunction: ``params`` and ``kernel[grid](...)``."""

    def __init__(self, n_args, n_constexprs):
        self.__name__ = "fake"
        self.params = [type("P", (), {"is_constexpr": i >= n_args})()
                       for i in range(n_args + n_constexprs)]
        self.log = []

    def __getitem__(self, grid):
        def launch(*args, **options):
            self.log.append(("bind", grid, args, options))
            return _FakeCompiled(self.log)
        return launch


def _cached_fake(monkeypatch, n_args, n_constexprs):
    """A CachedLaunch of a fake kernel, on the compiled-handle path (as on a GPU), device 0."""
    from sparse24.ops import triton_internals

    monkeypatch.setattr(triton_internals, "_current_device", lambda: 0)
    monkeypatch.setattr(triton_internals, "_current_stream", lambda device: "stream")
    kernel = _FakeKernel(n_args, n_constexprs)
    launch = triton_internals.CachedLaunch(kernel)
    launch._interpreted = False
    return kernel, launch


def test_cached_launch_binds_once_per_specialization(monkeypatch):
    """The first launch of a specialization goes through kernel[grid] (Triton binds and compiles),
    later ones straight to the compiled launcher with the same arguments; another specialization
    binds again; CachedLaunch.enabled = False (the plain fallback) always binds."""
    from sparse24.ops import triton_internals

    kernel, launch = _cached_fake(monkeypatch, 2, 1)
    t = torch.zeros(8)
    launch((3, 1, 1), (t, 16), (True,), num_warps=4)
    launch((5, 1, 1), (t, 32), (True,), num_warps=4)  # 32: divisible by 16 like 16, same kernel
    launch((5, 1, 1), (t, 17), (True,), num_warps=4)  # 17: another specialization
    kinds = [entry[0] for entry in kernel.log]
    assert kinds == ["bind", "run", "bind"]
    assert kernel.log[1][1] == (5, 1, 1, "stream", "function", "packed", None, None, None, t, 32, True)
    assert kernel.log[0][3] == {"num_warps": 4}  # num_stages None: not passed (Gluon)
    monkeypatch.setattr(triton_internals.CachedLaunch, "enabled", False)
    launch((5, 1, 1), (t, 32), (True,), num_warps=4, num_stages=2)
    assert kernel.log[-1][0] == "bind" and kernel.log[-1][3] == {"num_warps": 4, "num_stages": 2}


def test_cached_launch_keeps_a_register_cap_apart(monkeypatch):
    """maxnreg is a compile option: passed to kernel[grid], and a capped launch is its own
    compiled kernel (the uncapped one is not reused for it, nor it for the uncapped)."""
    kernel, launch = _cached_fake(monkeypatch, 2, 1)
    t = torch.zeros(8)
    launch((3, 1, 1), (t, 16), (True,), num_warps=4, num_stages=1)
    launch((3, 1, 1), (t, 16), (True,), num_warps=4, num_stages=1, maxnreg=168)
    launch((3, 1, 1), (t, 16), (True,), num_warps=4, num_stages=1, maxnreg=168)
    assert [entry[0] for entry in kernel.log] == ["bind", "bind", "run"]
    assert kernel.log[1][3] == {"num_warps": 4, "num_stages": 1, "maxnreg": 168}
    assert launch.compiled_for((t, 16), (True,), num_warps=4, num_stages=1, maxnreg=168) is not \
        launch.compiled_for((t, 16), (True,), num_warps=4, num_stages=1)


def test_cached_launch_passes_registered_hooks(monkeypatch):
    """With a launch hook registered (a profiler), the cached path builds the launch metadata and
    passes the hooks, as kernel[grid] would."""
    knobs = pytest.importorskip("triton.knobs")
    kernel, launch = _cached_fake(monkeypatch, 1, 0)
    t = torch.zeros(8)
    seen = []
    knobs.runtime.launch_enter_hook.add(seen.append)
    try:
        launch((1, 1, 1), (t,), (), num_warps=4)
        launch((1, 1, 1), (t,), (), num_warps=4)
    finally:
        knobs.runtime.launch_enter_hook.remove(seen.append)
    run = kernel.log[1][1]
    assert run[6] == "metadata" and run[7] is knobs.runtime.launch_enter_hook


def test_hooks_and_plain_python_arguments(monkeypatch):
    """An exit hook alone counts as a registered hook; bool and None arguments get keys of their
    own instead of failing."""
    knobs = pytest.importorskip("triton.knobs")
    from sparse24.ops import triton_internals

    assert not triton_internals._hooks_active()
    seen = []
    knobs.runtime.launch_exit_hook.add(seen.append)
    try:
        assert triton_internals._hooks_active()
    finally:
        knobs.runtime.launch_exit_hook.remove(seen.append)
    specs = {_spec(v) for v in (True, False, None, 1.5)}
    assert len(specs) == 4 and _spec(True) != _spec(1)


# ---------------------------------------------------------------- DescriptorLauncher
# The descriptors' metadata of the sm90 GEMM's three TMA operands (values, x, y), as Triton's
# compiler records it: 128B swizzle, 2-byte elements, fp16, boxes of 128 and 64 rows.
_METAS = [{"swizzle": 3, "elem_size": 2, "elem_type": 6, "block_size": [rows, 64],
           "fp4_padded": False} for rows in (128, 64, 64)]


def _fake_triton_launcher(monkeypatch):
    """A CompiledKernel of the sm90 GEMM's signature (three TMA descriptors, then meta_addr,
    bias, N, K, then constexprs) whose launcher is the installed Triton's own CudaLauncher code
    (its __call__ and wrap_handle_tensordesc closure, nothing compiled) in front of a C launcher
    that records its arguments; fill_tma_descriptor records its inputs too, so two argument
    lists are equal only if every descriptor was filled alike."""
    nvidia_driver = pytest.importorskip("triton.backends.nvidia.driver")
    from triton.runtime import driver

    from sparse24.ops import triton_internals

    calls = []
    fill = lambda *args: ("tensormap", args)  # noqa: E731
    # told apart, so that a direct launch must fill with the function Triton's own wrapper uses
    fill_tiled = lambda *args: ("tensormap", args, "tiled")  # noqa: E731
    record = lambda *args: calls.append(args)  # noqa: E731  the C launcher (3.9: utils.launch)
    utils = type("Utils", (), {"fill_tma_descriptor": staticmethod(fill),
                               "fill_tma_descriptor_tiled": staticmethod(fill_tiled),
                               "launch": staticmethod(record)})()
    monkeypatch.setattr(driver, "_active", type("Driver", (), {"utils": utils})())
    signature = {"a_desc": "tensordesc<fp16[128, 64]>", "x_desc": "tensordesc<fp16[64, 64]>",
                 "y_desc": "tensordesc<fp16[64, 64]>", "meta_addr": "i64", "bias_ptr": "*fp16",
                 "N": "i32", "K": "i32", "BT": "constexpr"}
    run = object.__new__(nvidia_driver.CudaLauncher)
    run.__dict__.update(
        launch=nvidia_driver.wrap_handle_tensordesc(record, signature, [dict(m) for m in _METAS]),
        num_ctas=1, global_scratch_size=0, global_scratch_align=1, profile_scratch_size=0,
        profile_scratch_align=1, launch_cooperative_grid=False, launch_pdl=False, gsan_enabled=False,
        arg_annotations="annotations", kernel_signature=b"signature")
    compiled = type("Compiled", (), {"run": run, "function": 1234, "packed_metadata": "packed"})()
    return triton_internals, compiled, calls


class _CLauncher:
    """Stands in for a C launcher (not a Python function): records its arguments."""

    def __init__(self):
        self.calls = []

    def __call__(self, *args):
        self.calls.append(args)


def _launcher_class(params):
    """A class named CudaLauncher whose __call__ has these parameters (after self)."""
    namespace = {}
    exec(f"def __call__(self, {', '.join(params)}): pass", namespace)
    return type("CudaLauncher", (), {"__call__": namespace["__call__"]})


_SHAPE_3_6 = ["gridX", "gridY", "gridZ", "stream", "function", "*args"]
_SHAPE_3_9 = ["gridX", "gridY", "gridZ", "stream", "function", "kernel_metadata",
              "launch_metadata", "launch_enter_hook", "launch_exit_hook", "*args"]


def _triton_3_6_wrapper(launcher, tensordesc_indices, tensordesc_meta):
    """A closure over what Triton 3.6's wrap_handle_tensordesc closes over (all that
    DescriptorLauncher.of reads of it)."""
    def launch(*args):
        return launcher(*args, tensordesc_indices, tensordesc_meta)
    return launch


def _triton_3_9_wrapper(launcher, make_tensordesc_arg, relevant_paths, signature, tensordesc_meta):
    """A closure over what Triton 3.9's wrap_handle_tensordesc_impl closes over."""
    def launch(*args):
        return launcher(make_tensordesc_arg, relevant_paths, signature, tensordesc_meta, *args)
    return launch


def _known_launcher(monkeypatch, shape="3.6"):
    """_fake_triton_launcher's kernel with a launcher of exactly one shape DescriptorLauncher.of
    knows, whatever Triton is installed: Triton 3.6's (13 fixed C-launcher arguments,
    make_tensordesc_arg(arg, metadata), its wrapper closure) or 3.9's (the generic launcher,
    Triton's own make_tensordesc_arg, descriptors at top-level parameters 0-2); so the refusals
    below mean the same on every version."""
    nvidia_driver = pytest.importorskip("triton.backends.nvidia.driver")
    internals, compiled, calls = _fake_triton_launcher(monkeypatch)
    monkeypatch.setattr(nvidia_driver, "TMA_DTYPE_DEVICE_TO_HOST", {6: "fp16 on the host"},
                        raising=False)
    run = object.__new__(_launcher_class(_SHAPE_3_6 if shape == "3.6" else _SHAPE_3_9))
    run.__dict__.update(compiled.run.__dict__)
    monkeypatch.setattr(compiled, "run", run)
    from triton.runtime import driver

    record = driver.active.utils.launch  # the recording C launcher, Triton's own (3.9)
    metas = [dict(m) for m in _METAS]
    if shape == "3.6":
        monkeypatch.setattr(nvidia_driver, "_BASE_ARGS_FORMAT_LEN", 13, raising=False)
        monkeypatch.setattr(nvidia_driver, "make_tensordesc_arg", lambda arg, metadata: None)
        run.launch = _triton_3_6_wrapper(record, {0, 1, 2}, metas)
    else:
        def make_tensordesc_arg(arg, metadata, _):
            return None

        monkeypatch.setattr(nvidia_driver, "make_tensordesc_arg", make_tensordesc_arg)
        run.launch = _triton_3_9_wrapper(record, make_tensordesc_arg, {0: {}, 1: {}, 2: {}},
                                         ("sig",), metas)
    return internals, compiled, calls


def _on_a_known_triton() -> bool:
    """Triton 3.6 (the GPU machine's) or 3.9: launcher shapes DescriptorLauncher drives."""
    import triton

    return triton.__version__.startswith(("3.6", "3.9"))


def test_descriptor_launcher_passes_what_triton_would(monkeypatch):
    """Where DescriptorLauncher drives the installed Triton's launcher (3.6, the GPU machine's;
    3.9), the C launcher gets exactly the arguments Triton's own wrappers give it for the same
    call. Another version: test_wgmma_launch_goes_direct_on_known_tritons checks the fallback."""
    pytest.importorskip("triton.experimental.gluon.nvidia.hopper")
    import triton

    from sparse24.ops import wgmma

    internals, compiled, calls = _fake_triton_launcher(monkeypatch)
    direct = internals.DescriptorLauncher.of(compiled, 3)
    if not _on_a_known_triton():
        assert direct is None
        pytest.skip(f"Triton {triton.__version__}: not a launcher shape DescriptorLauncher drives")
    assert direct is not None
    layout = wgmma._nvmma_layout()
    values = torch.randn(256, 64, dtype=torch.float16)
    x = torch.randn(200, 256, dtype=torch.float16)[:, 64:192]  # a strided view: its own strides
    y = torch.empty(200, 256, dtype=torch.float16)
    bias = torch.randn(256, dtype=torch.float16)
    descriptors = (internals.tensor_descriptor(values, [128, 64], layout),
                   internals.tensor_descriptor(x, [64, 64], layout),
                   internals.tensor_descriptor(y, [64, 64], layout))
    compiled.run(7, 1, 1, "stream", compiled.function, compiled.packed_metadata, None, None, None,
                 *descriptors, 4096, bias.data_ptr(), 256, 128, 64)
    direct(7, "stream", (values, x, y), (4096, bias.data_ptr(), 256, 128), (64,))
    assert len(calls) == 2
    assert calls[1] == calls[0]
    # the fill inputs really differ per descriptor (box rows, pointer, shape)
    flat = [arg for call_arg in calls[0] for arg in (call_arg if isinstance(call_arg, list)
                                                     else [call_arg])]
    maps = [arg for arg in flat if isinstance(arg, tuple) and arg and arg[0] == "tensormap"]
    assert len({repr(m[1]) for m in maps}) == 3


def test_wgmma_launch_goes_direct_on_known_tritons(monkeypatch):
    """What wgmma.launch decides for the installed Triton's real launcher: on Triton 3.6 and 3.9
    the second call of a specialization goes through DescriptorLauncher; on any other version
    DescriptorLauncher.of refuses that launcher, wgmma.launch remembers the refusal (False, so
    it is not asked again) and every call takes CachedLaunch."""
    pytest.importorskip("triton.experimental.gluon.nvidia.hopper")
    from sparse24.ops import wgmma

    internals, compiled, c_calls = _fake_triton_launcher(monkeypatch)
    known = _on_a_known_triton()
    assert (internals.DescriptorLauncher.of(compiled, 3) is not None) == known
    cached_calls = []

    class FakeCached:  # CachedLaunch after its first launch compiled `compiled`
        def __call__(self, grid, args, constexprs, num_warps):
            cached_calls.append(grid)

        def compiled_for(self, args, constexprs, num_warps):
            return compiled

    fake = FakeCached()
    monkeypatch.setattr(wgmma, "_plans", {})
    monkeypatch.setattr(wgmma._direct, "known", {})
    monkeypatch.setattr(wgmma, "_sm_count", lambda index: 132)
    monkeypatch.setattr(wgmma, "_verify", lambda *args: (4096, 0, 200000, 200032))
    monkeypatch.setattr(wgmma, "_cached_launch", lambda: fake)
    monkeypatch.setattr(internals, "_current_device", lambda: 0)
    monkeypatch.setattr(internals, "_current_stream", lambda device: "stream")
    x = torch.randn(300, 256, dtype=torch.float16)
    values = torch.randn(512, 128, dtype=torch.float16)
    meta = torch.zeros(32, 4, 32, dtype=torch.int32)
    y = torch.empty(300, 512, dtype=torch.float16)
    cfg = {"family": "wgmma", "BT": 128, "STAGES": 4, "GROUP": 8}  # one dict, as linear's plan holds
    for _ in range(3):
        wgmma.launch(x, values, meta, None, y, 0, cfg)
    ((_, entry),) = wgmma._direct.known.values()
    decision = entry and entry[0]  # the launcher, or False
    if known:
        assert isinstance(decision, internals.DescriptorLauncher)
        assert len(cached_calls) == 1 and len(c_calls) == 2
    else:
        assert decision is False
        assert len(cached_calls) == 3 and not c_calls


@pytest.mark.parametrize("shape", ["3.6", "3.9"])
def test_descriptor_launcher_refuses_launchers_it_does_not_know(monkeypatch, shape):
    """DescriptorLauncher.of takes a launcher of the shapes it knows, and refuses any launcher
    that differs from one in a thing it reads (each case starts from the known one)."""
    nvidia_driver = pytest.importorskip("triton.backends.nvidia.driver")

    def rewrap(mp, compiled, metas):
        nonlocals = inspect.getclosurevars(compiled.run.launch).nonlocals
        if shape == "3.6":
            wrapper = _triton_3_6_wrapper(print, {0, 1, 2}, metas)
        else:
            wrapper = _triton_3_9_wrapper(print, nonlocals["make_tensordesc_arg"],
                                          {0: {}, 1: {}, 2: {}}, ("sig",), metas)
        mp.setattr(compiled.run, "launch", wrapper)

    def other_paths(mp, compiled, paths):
        nonlocals = inspect.getclosurevars(compiled.run.launch).nonlocals
        mp.setattr(compiled.run, "launch", _triton_3_9_wrapper(
            print, nonlocals["make_tensordesc_arg"], paths, ("sig",), [dict(m) for m in _METAS]))

    def other_launcher(mp, compiled):
        nonlocals = inspect.getclosurevars(compiled.run.launch).nonlocals
        mp.setattr(compiled.run, "launch", _triton_3_9_wrapper(
            lambda *args: None, nonlocals["make_tensordesc_arg"], {0: {}, 1: {}, 2: {}}, ("sig",),
            [dict(m) for m in _METAS]))

    def another_class(mp, compiled):
        other = object.__new__(type("OtherLauncher", (), {}))
        other.__dict__.update(compiled.run.__dict__)
        mp.setattr(compiled, "run", other)

    def another_call(mp, compiled):
        other = object.__new__(_launcher_class(["gridX", "gridY", "stream", "*args"]))
        other.__dict__.update(compiled.run.__dict__)
        mp.setattr(compiled, "run", other)

    def another_wrapper(launcher, signature, tensordesc_meta):
        return lambda *args: launcher(*args, signature, tensordesc_meta)

    cases = {
        "global scratch memory": lambda mp, c: mp.setattr(c.run, "global_scratch_size", 64),
        "profile scratch memory": lambda mp, c: mp.setattr(c.run, "profile_scratch_size", 64),
        "GSan instrumentation": lambda mp, c: mp.setattr(c.run, "gsan_enabled", True),
        "no host dtype table": lambda mp, c: mp.delattr(nvidia_driver, "TMA_DTYPE_DEVICE_TO_HOST"),
        "a launch that wraps nothing": lambda mp, c: mp.setattr(c.run, "launch", lambda *a: None),
        "a launch that is no Python function": lambda mp, c: mp.setattr(c.run, "launch", print),
        "another wrapper": lambda mp, c: mp.setattr(
            c.run, "launch", another_wrapper(print, {}, [dict(m) for m in _METAS])),
        "an fp4-padded descriptor": lambda mp, c: rewrap(
            mp, c, [dict(m, fp4_padded=m["block_size"][0] == 128) for m in _METAS]),
        "an im2col descriptor": lambda mp, c: rewrap(
            mp, c, [dict(m, is_im2col=m["block_size"][0] == 128) for m in _METAS]),
        "a descriptor without metadata": lambda mp, c: rewrap(mp, c, [None, *_METAS[1:]]),
        "not a CudaLauncher": another_class,
        "another __call__": another_call,
    }
    if shape == "3.6":
        cases |= {
            "other fixed C arguments": lambda mp, c: mp.setattr(
                nvidia_driver, "_BASE_ARGS_FORMAT_LEN", 14),
            "no fixed-argument count": lambda mp, c: mp.delattr(
                nvidia_driver, "_BASE_ARGS_FORMAT_LEN"),
            "make_tensordesc_arg with another signature": lambda mp, c: mp.setattr(
                nvidia_driver, "make_tensordesc_arg", lambda arg, metadata, _: None),
            "descriptors at other parameters": lambda mp, c: mp.setattr(
                c.run, "launch", _triton_3_6_wrapper(print, {0, 1, 3}, [dict(m) for m in _METAS])),
        }
    else:
        cases |= {
            "another make_tensordesc_arg": lambda mp, c: mp.setattr(
                nvidia_driver, "make_tensordesc_arg", lambda arg, metadata, _: None),
            "descriptors at other parameters": lambda mp, c: other_paths(
                mp, c, {0: {}, 1: {}, 3: {}}),
            "a descriptor inside a tuple argument": lambda mp, c: other_paths(
                mp, c, {0: {}, 1: {}, 2: {0: {}}}),
            "no argument annotations": lambda mp, c: mp.delattr(c.run, "arg_annotations"),
            "a C launcher other than Triton's": lambda mp, c: other_launcher(mp, c),
        }
    for case, breaks in cases.items():
        with monkeypatch.context() as mp:
            internals, compiled, _ = _known_launcher(mp, shape)
            assert isinstance(internals.DescriptorLauncher.of(compiled, 3),
                              internals.DescriptorLauncher), "the known shape must be accepted"
            assert internals.DescriptorLauncher.of(compiled, 2) is None  # another descriptor count
            breaks(mp, compiled)
            assert internals.DescriptorLauncher.of(compiled, 3) is None, case
    assert internals.DescriptorLauncher.of(type("C", (), {"run": object()})(), 3) is None


@pytest.mark.parametrize("shape", ["3.6", "3.9"])
def test_descriptor_launcher_calls_a_known_launcher_in_its_argument_order(monkeypatch, shape):
    """On a launcher of a known shape (any Triton installed). 3.6: the C launcher gets the 13
    fixed arguments (grid, stream, function, cooperative grid, PDL, no scratch, the packed
    metadata, no launch metadata or hooks), then per descriptor its filled map, shape and
    strides, then the runtime arguments and constexprs. 3.9: the packed metadata before the
    scratch buffers, then annotations, signature, and those kernel arguments as one list. On
    Triton 3.6 and 3.9, test_descriptor_launcher_passes_what_triton_would checks the same
    against Triton's own wrapper."""
    internals, compiled, calls = _known_launcher(monkeypatch, shape)
    direct = internals.DescriptorLauncher.of(compiled, 3)
    values = torch.randn(256, 64, dtype=torch.float16)
    x = torch.randn(200, 256, dtype=torch.float16)[:, 64:192]
    y = torch.empty(200, 256, dtype=torch.float16)
    direct(7, "stream", (values, x, y), (4096, 1024, 256, 128), (64,))
    expanded = []
    for t, rows in zip((values, x, y), (128, 64, 64)):
        filled = ("tensormap", (t.data_ptr(), 3, 2, "fp16 on the host", [rows, 64], t.shape,
                                t.stride(), 0))
        expanded += [filled, *t.shape, *t.stride()]
    if shape == "3.9":  # Triton 3.9 fills with fill_tma_descriptor_tiled
        expanded = [(*e, "tiled") if isinstance(e, tuple) else e for e in expanded]
    if shape == "3.6":
        assert calls == [(7, 1, 1, "stream", 1234, False, False, None, None, "packed", None, None,
                          None, *expanded, 4096, 1024, 256, 128, 64)]
    else:
        assert calls == [(7, 1, 1, "stream", 1234, False, False, "packed", None, None, None, None,
                          None, "annotations", b"signature", [*expanded, 4096, 1024, 256, 128, 64])]


@pytest.mark.parametrize("shape", ["3.6", "3.9"])
def test_descriptor_launcher_keeps_filled_descriptors(monkeypatch, shape):
    """A descriptor is filled once per (address, shape, strides) and passed again to later calls
    with the same three (the C launcher copies it into the kernel's parameters); a tensor with
    another address, shape or strides gets its own fill; with keep_descriptors off, every call
    fills all three; a full memo is emptied, not grown."""
    internals, compiled, calls = _known_launcher(monkeypatch, shape)
    direct = internals.DescriptorLauncher.of(compiled, 3)
    fills = []
    inner = direct._fill

    def counting_fill(*args):
        fills.append(args[0])  # the address filled for
        return inner(*args)

    direct._fill = counting_fill
    values = torch.randn(256, 64, dtype=torch.float16)
    x = torch.randn(200, 256, dtype=torch.float16)[:, 64:192]
    y = torch.empty(200, 256, dtype=torch.float16)

    def launch(*tensors):
        direct(7, "stream", tensors, (4096, 1024, 256, 128), (64,))
        return calls[-1]

    first = launch(values, x, y)
    assert len(fills) == 3
    assert launch(values, x, y) == first and len(fills) == 3  # nothing filled again
    other_x = torch.randn(200, 128, dtype=torch.float16)  # same shape, other address and strides
    launch(values, other_x, y)
    assert fills[3:] == [other_x.data_ptr()]
    launch(values, x[:100], y)  # x's address, another shape
    assert fills[4:] == [x.data_ptr()]
    assert launch(values, x, y) == first and len(fills) == 5
    monkeypatch.setattr(internals.DescriptorLauncher, "keep_descriptors", False)
    assert launch(values, x, y) == first and len(fills) == 8  # filled each call, same arguments
    monkeypatch.setattr(internals.DescriptorLauncher, "keep_descriptors", True)
    monkeypatch.setattr(internals.DescriptorLauncher, "_KEPT", 2)
    launch(values, torch.randn(200, 128, dtype=torch.float16), y)  # x's third: the memo is full
    assert len(direct._kept[1]) == 1 and len(direct._kept[0]) == 1


# -------------------------------------------------------------------- pointer_launcher
def _pointer_kernel(monkeypatch, launcher_class=None):
    """A CompiledKernel without descriptor parameters whose launcher is the installed Triton's
    CudaLauncher (its own __call__, nothing compiled), or an instance of ``launcher_class``, in
    front of a recording C launcher."""
    nvidia_driver = pytest.importorskip("triton.backends.nvidia.driver")
    from triton.runtime import driver

    c_launch = _CLauncher()
    utils = type("Utils", (), {"launch": c_launch})()  # Triton 3.9's generic C launcher
    monkeypatch.setattr(driver, "_active", type("Driver", (), {"utils": utils})())
    run = object.__new__(launcher_class or nvidia_driver.CudaLauncher)
    run.__dict__.update(
        launch=c_launch, num_ctas=1, global_scratch_size=0, global_scratch_align=1,
        profile_scratch_size=0, profile_scratch_align=1, launch_cooperative_grid=False,
        launch_pdl=False, gsan_enabled=False, arg_annotations="annotations",
        kernel_signature=b"signature")
    compiled = type("Compiled", (), {"run": run, "function": 1234, "packed_metadata": "packed"})()
    return compiled, c_launch.calls


def test_pointer_launcher_passes_what_triton_would(monkeypatch):
    """On the installed Triton (3.6 on the GPU machine, the newest in CI): the C launcher gets
    exactly what CompiledKernel.run gives it for the same call without hooks, pointers and all."""
    from sparse24.ops.triton_internals import pointer_launcher

    compiled, calls = _pointer_kernel(monkeypatch)
    launch = pointer_launcher(compiled)
    assert launch is not None, "the installed Triton's launcher must be one pointer_launcher drives"
    t = torch.zeros(8)
    args = (t.data_ptr(), t, 5, 768, True, 3)  # a pointer as an int and as a tensor, ints, constexprs
    compiled.run(7, 3, 2, "stream", compiled.function, compiled.packed_metadata, None, None, None,
                 *args)
    launch(7, 3, 2, "stream", *args)
    assert len(calls) == 2 and calls[1] == calls[0]


def test_pointer_launcher_calls_each_known_shape_in_its_order(monkeypatch):
    """Whatever Triton is installed: Triton 3.6's launcher shape gets the 13 fixed arguments
    (grid, stream, function, cooperative grid, PDL, no scratch, packed metadata, no launch
    metadata or hooks) then the arguments spread out; 3.9's gets the packed metadata before the
    two scratch buffers, then annotations, signature and the arguments as one tuple."""
    nvidia_driver = pytest.importorskip("triton.backends.nvidia.driver")
    from sparse24.ops.triton_internals import pointer_launcher

    monkeypatch.setattr(nvidia_driver, "_BASE_ARGS_FORMAT_LEN", 13, raising=False)
    compiled, calls = _pointer_kernel(monkeypatch, _launcher_class(_SHAPE_3_6))
    pointer_launcher(compiled)(7, 3, 2, "stream", 4096, 5, True)
    assert calls == [(7, 3, 2, "stream", 1234, False, False, None, None, "packed", None, None, None,
                      4096, 5, True)]
    compiled, calls = _pointer_kernel(monkeypatch, _launcher_class(_SHAPE_3_9))
    pointer_launcher(compiled)(7, 3, 2, "stream", 4096, 5, True)
    assert calls == [(7, 3, 2, "stream", 1234, False, False, "packed", None, None, None, None, None,
                      "annotations", b"signature", (4096, 5, True))]


@pytest.mark.parametrize("shape", ["3.6", "3.9"])
def test_pointer_launcher_refuses_launchers_it_does_not_know(monkeypatch, shape):
    """Each case starts from a known shape and changes one thing pointer_launcher reads."""
    nvidia_driver = pytest.importorskip("triton.backends.nvidia.driver")
    from sparse24.ops.triton_internals import pointer_launcher

    cases = {
        "global scratch memory": lambda mp, c: mp.setattr(c.run, "global_scratch_size", 64),
        "profile scratch memory": lambda mp, c: mp.setattr(c.run, "profile_scratch_size", 64),
        "GSan instrumentation": lambda mp, c: mp.setattr(c.run, "gsan_enabled", True),
        "a Python wrapper (descriptors)": lambda mp, c: mp.setattr(c.run, "launch", lambda *a: 0),
        "another __call__": lambda mp, c: mp.setattr(
            c, "run", _launcher_class(["gridX", "gridY", "stream", "*args"])()),
        "not a CudaLauncher": lambda mp, c: mp.setattr(c, "run", object()),
    }
    if shape == "3.6":
        cases["other fixed C arguments"] = lambda mp, c: mp.setattr(
            nvidia_driver, "_BASE_ARGS_FORMAT_LEN", 14, raising=False)
    else:
        cases["a C launcher other than Triton's"] = lambda mp, c: mp.setattr(
            c.run, "launch", _CLauncher())
        cases["no argument annotations"] = lambda mp, c: mp.delattr(c.run, "arg_annotations")
    for case, breaks in cases.items():
        with monkeypatch.context() as mp:
            mp.setattr(nvidia_driver, "_BASE_ARGS_FORMAT_LEN", 13, raising=False)
            compiled, _ = _pointer_kernel(mp, _launcher_class(_SHAPE_3_6 if shape == "3.6"
                                                              else _SHAPE_3_9))
            assert pointer_launcher(compiled) is not None, "the known shape must be accepted"
            breaks(mp, compiled)
            assert pointer_launcher(compiled) is None, case
