"""Python frames of sparse24's own modules in a repeated eager linear() call, on a CPU.

The code-shape half of the host time that bench/overhead.py measures on a GPU: which of our
functions one call of ``sparse24.ops.linear`` enters once its problem has been planned and its
weight recorded and bound (the third call: the first plans, the second binds), with the kernel launch stubbed, so it runs without a GPU and without the Triton
interpreter (TRITON_INTERPRET unset, ``gemm.use_triton`` pretending the kernels run). ``--stub
kernel`` stubs the CachedLaunch objects (the family's launcher still runs, as on a GPU);
``--stub family`` stubs the dot family's whole launch.

    python -m bench.diag.eager_frames [--stub kernel|family] [--time]

``--time`` also times, on this CPU, the stubbed call and its input checks (best of 5 rounds of
20,000 calls): the Python half of a call's host time, for A/Bs of host-side changes between
trees (run it in each); the GPU's figures come from bench/overhead.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit


def frames_of(fn) -> list[tuple[str, str]]:
    """(module, function) of each sparse24 frame one call of fn enters."""
    seen = []

    def tracer(frame, event, arg):
        if event == "call" and frame.f_globals.get("__name__", "").startswith("sparse24"):
            seen.append((frame.f_globals["__name__"], frame.f_code.co_name))

    sys.setprofile(tracer)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stub", choices=("kernel", "family"), default="kernel")
    parser.add_argument("--time", action="store_true",
                        help="also time the stubbed call and its checks on this CPU")
    args = parser.parse_args()
    os.environ.pop("TRITON_INTERPRET", None)  # before any kernel module is imported
    import torch

    import sparse24.ops as ops
    from sparse24.ops import gemm
    from sparse24.ops.families import FAMILIES, _splitk, dot

    def stub(*args, **kwargs):
        return None

    gemm.use_triton = lambda t: True
    if args.stub == "kernel":
        from sparse24.ops import direct as _direct

        class Compiled:  # CachedLaunch after its first launch: a compiled kernel to launch
            def __call__(self, *args, **kwargs):
                return None

            def compiled_for(self, *args, **kwargs):
                return "compiled"

        # as on a GPU: the first call of a shape through CachedLaunch, later ones through the
        # direct launch (ops/direct.py) on device 0's stream
        dot._dot_launch = _splitk._reduce_launch = Compiled()
        _direct.pointer_launcher = lambda compiled: stub
        _direct.direct_launch_allowed = lambda: True
        for module, memo in ((dot, "_direct"), (_splitk, "_reduce_direct")):
            setattr(module, memo, _direct.DirectLaunches())
            getattr(module, memo).off = False
            module.current_device = lambda: 0
            module.current_stream = lambda device: None
    else:
        dot.launch = stub
    values, meta = ops.compress(ops.prune_24(torch.randn(128, 256, dtype=torch.float16)))
    x = torch.randn(5, 256, dtype=torch.float16)
    bias = torch.randn(128, dtype=torch.float16)
    with torch.no_grad():
        for label, call in (("no bias", lambda: ops.linear(x, values, meta)),
                            ("bias", lambda: ops.linear(x, values, meta, bias))):
            call()  # the first call of a problem plans it and records the weight
            call()  # the second binds a launch to the weight, where the family has one
            frames = frames_of(call)
            plan = gemm._plans[(5, 128, 256, torch.float16, x.device)]
            assert FAMILIES[plan[1]["family"]] is dot
            print(f"{label}: {len(frames)} frames of sparse24 in the third call "
                  f"(stub: {args.stub}): {' '.join(name for _, name in frames)}")
            if args.time:
                for part, fn in ((f"linear(), {label}", call), (
                        "  its input checks", lambda: gemm.check_linear_inputs(
                            x, values, meta, bias if label == "bias" else None, None))):
                    best = min(timeit.repeat(fn, number=20000, repeat=5)) / 20000 * 1e6
                    print(f"    {part}: {best:.2f} us a call on this CPU (stubbed launch)")
        if args.time:  # the module around it: SparseLinear.forward through nn.Module.__call__
            from sparse24.nn import SparseLinear

            layer = SparseLinear(256, 128, dtype=torch.float16)
            layer.values, layer.meta = values, meta
            layer.bias.copy_(bias)
            layer(x)
            best = min(timeit.repeat(lambda: layer(x), number=20000, repeat=5)) / 20000 * 1e6
            print(f"SparseLinear(x), bias: {len(frames_of(lambda: layer(x)))} frames of sparse24, "
                  f"{best:.2f} us a call on this CPU (stubbed launch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
