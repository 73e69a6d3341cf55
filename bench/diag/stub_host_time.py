"""The Python half of an sm90 call's host time, on a CPU: sparse24's paths with the launch stubbed.

bench/overhead.py measures host time on a GPU, where the device time is scarce. This runs the
same entry points on any CPU with the plan's launch replaced by a no-op that takes N-D rows (as
``wgmma.PlannedLaunch`` does), so everything of ours around the launch runs: ``ops.linear`` on
2-D and 3-D x, ``SparseLinear`` on 3-D x, and a self-attention-like block whose query, key and
value ``sparsify_`` packed into one fused GEMM (its FusionWindow hooks, three ProjectionSlice
calls). Rounds alternate the cases; each round's figure is the best of 3 x ``--calls`` calls.

For A/Bs of host-side changes between trees, run it under each tree's package:

    git archive <commit> sparse24 | (mkdir -p /tmp/base && tar -x -C /tmp/base)
    PYTHONPATH=/tmp/base python -m bench.diag.stub_host_time
    python -m bench.diag.stub_host_time [--calls 5000] [--rounds 7]

It uses only what older trees have too (ops.linear, SparseLinear, sparsify_, gemm._plan; for
--stub mma, the mma family's launch and its DirectLaunches).
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import sys
import timeit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--stub", choices=("plan", "launcher", "mma"), default="plan",
                        help="plan: the plan's whole launch is a no-op (older trees too); "
                             "launcher: sm90's PlannedLaunch runs (its keys, kept arguments and "
                             "the bound launches where the tree has them) and only Triton's C "
                             "launcher is a stand-in that does nothing; mma: the same for the "
                             "mma family (Ampere's and Ada's): its launch with its direct "
                             "launcher learned, that launcher a no-op")
    args = parser.parse_args()
    os.environ.pop("TRITON_INTERPRET", None)  # the stub stands in for the kernels
    import torch
    from torch import nn

    import sparse24
    import sparse24.ops as ops
    from sparse24.nn import SparseLinear, sparsify_
    from sparse24.ops import gemm

    class Noop:  # a plan's launch: takes N-D rows, launches nothing
        takes_rows = True

        def __call__(self, *call):
            return None

    noop, cfg = Noop(), {"family": "wgmma"}
    three = "takes_rows" in inspect.getsource(gemm._plan)  # plans of 3 items (this tree) or 2

    def stub_plan(key):
        plan = gemm._plans[key] = (noop, cfg, True) if three else (noop, cfg)
        return plan

    if args.stub == "launcher":
        stub_plan = _planned_launch_stub(gemm)
    elif args.stub == "mma":
        stub_plan = _mma_stub(gemm)
    gemm.use_triton = lambda t: True
    gemm._plan = stub_plan

    class Attention(nn.Module):  # the shape of BERT's self-attention projections
        def __init__(self, width):
            super().__init__()
            self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))

        def forward(self, hidden):
            return self.query(hidden), self.key(hidden), self.value(hidden)

    torch.manual_seed(0)
    width = 768
    block = Attention(width).half()
    with torch.no_grad():
        for linear in (block.query, block.key, block.value):
            linear.weight.copy_(ops.prune_24(linear.weight))
    sparsify_(block)
    values, meta = ops.compress(ops.prune_24(torch.randn(width, width, dtype=torch.float16)))
    bias = torch.randn(width, dtype=torch.float16)
    layer = SparseLinear(width, width, dtype=torch.float16)
    layer.values, layer.meta = values, meta
    x2 = torch.randn(32, width, dtype=torch.float16)
    x3 = x2.view(4, 8, width)
    torch.set_grad_enabled(False)
    cases = {"ops.linear, 2-D x": lambda: ops.linear(x2, values, meta, bias),
             "ops.linear, 3-D x": lambda: ops.linear(x3, values, meta, bias),
             "the op, 2-D x": lambda: torch.ops.sparse24.linear(x2, values, meta, bias, None),
             "SparseLinear, 3-D x": lambda: layer(x3),
             "fused Q/K/V block, 3-D x": lambda: block(x3)}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, call in cases.items():
            times[name].append(min(timeit.repeat(call, number=args.calls, repeat=3))
                               / args.calls * 1e6)
    stubbed = {"plan": "launch stubbed", "launcher": "Triton's C launcher stubbed",
               "mma": "the mma family, Triton's C launcher stubbed"}[args.stub]
    print(f"sparse24 from {os.path.dirname(sparse24.__file__)} · torch {torch.__version__} · "
          f"{args.rounds} rounds, best of 3 x {args.calls} calls; {stubbed}")
    for name, values_us in times.items():
        print(f"{name:26s} median {statistics.median(values_us):6.2f} us  "
              f"(rounds {min(values_us):.2f}-{max(values_us):.2f})")
    return 0


def _planned_launch_stub(gemm):
    """A plan maker whose plans are sm90 PlannedLaunches with their direct launch already learned
    for every key a call may ask, on a launcher that does nothing; the CPU (device -1) is the
    current device and stream 0 the current stream."""
    import torch

    from sparse24.ops import device, triton_internals, wgmma

    class NoLauncher:  # DescriptorLauncher's two entry points, launching nothing
        def descriptor_args(self, index, tensor):
            return (object(), *tensor.shape, *tensor.stride())

        def launch_expanded(self, grid0, stream, expanded, args, constexprs):
            return None

    launcher = NoLauncher()

    class Learned(dict):  # every key has its entry, as after the plan's first launch
        def get(self, key, default=None):
            entry = dict.get(self, key)
            if entry is None:
                entry = self[key] = (launcher, 132, (), {}, {}, {})
            return entry

    triton_internals.current_stream = lambda index: 0
    device._current_cuda_device = lambda: -1

    def plan(key):
        m, n, k, dtype, _ = key
        planned = wgmma.PlannedLaunch({"family": "wgmma", "BT": 16}, m, n, k, dtype,
                                      torch.device("cuda", 0))
        planned.device, planned.direct = -1, Learned()
        made = gemm._plans[key] = (planned, {"family": "wgmma"}, True)
        return made

    return plan


def _mma_stub(gemm):
    """A plan maker whose plans run the mma family's launch (one unsplit config) with its direct
    launcher already learned for every key a call may ask, a launcher that does nothing; the
    CPU (device -1) is the current device and stream 0 the current stream."""
    from sparse24.ops import device, direct, triton_internals
    from sparse24.ops.families import mma

    cfg = {"family": "mma", "BLOCK_F": 64, "BLOCK_T": 16, "GROUP_T": 8, "PREFETCH": 1,
           "SPLIT_K": 1, "num_warps": 4, "num_stages": 1}

    def launcher(*arguments):
        return None

    class Learned(direct.DirectLaunches):  # every key has its entry, as after its first launch
        def get(self, key, owner=None):
            if key not in self.known:
                self.known[key] = (owner, (launcher, 1, 1, key[3], False, (0,) * 10))
            return super().get(key, owner)

    mma._direct = Learned()
    mma._direct.off = False
    mma.current_device = lambda: -1
    mma.current_stream = triton_internals.current_stream = lambda index: 0
    device._current_cuda_device = lambda: -1

    def plan(key):
        made = gemm._plans[key] = (mma.launch, cfg, False)
        return made

    return plan


if __name__ == "__main__":
    sys.exit(main())
