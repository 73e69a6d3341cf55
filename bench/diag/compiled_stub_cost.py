"""Host time per sparse24.linear call inside a torch.compile'd graph, on a CPU, the launch stubbed.

bench/diag/compiled_op_cost.py measures the op inside an inductor graph on a GPU, where device
time is scarce. This runs the same chain of 24 calls on any CPU, with the sm90 plans of
bench.diag.stub_host_time (Triton's C launcher a no-op, everything of ours around it real), and
splits what a compiled graph adds per call:

  linear() eager        the records and the bound launch, no dispatcher
  the op eager          + the dispatcher's hop into Python (torch.ops.sparse24.linear)
  compiled              the op inside inductor's graph: + the graph's entry (guards, wrappers)
                        and inductor's assert_size_stride on every input and on each op's output
  compiled, no op       24 calls of aten.alias, no weights: the graph's entry and wrappers alone

then a cProfile of the compiled chain (its per-call C functions: the op's builtin, the asserts).

    python -m bench.diag.compiled_stub_cost [--rounds 5] [--calls 2000]
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit

CHAIN = 24  # calls per graph, as compiled_op_cost's chain


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000, help="graph runs per timing")
    args = parser.parse_args()
    os.environ.pop("TRITON_INTERPRET", None)  # the stub stands in for the kernels
    import torch

    import sparse24.ops as ops
    from bench.diag.compiled_op_cost import profile_of, sparse_chains
    from bench.diag.stub_host_time import _planned_launch_stub
    from sparse24.ops import gemm

    gemm.use_triton = lambda t: True
    gemm._plan = _planned_launch_stub(gemm)
    torch.manual_seed(0)
    width = 256
    packed = [ops.compress(ops.prune_24(torch.randn(width, width, dtype=torch.float16)))
              for _ in range(CHAIN)]
    biases = [torch.randn(width, dtype=torch.float16) for _ in range(CHAIN)]
    x = torch.randn(32, width, dtype=torch.float16)

    linear_chain, op_chain = sparse_chains(packed, biases)

    def alias_chain(h):  # a graph of as many calls, no weights: its entry alone
        for _ in range(CHAIN):
            h = torch.ops.aten.alias(h)
        return h

    paths = {"linear() eager": linear_chain, "the op eager": op_chain,
             "compiled": torch.compile(linear_chain, fullgraph=True),
             "compiled, no op": torch.compile(alias_chain, fullgraph=True)}
    print(f"torch {torch.__version__} · chain of {CHAIN} calls on [32, {width}] fp16 · "
          f"Triton's C launcher stubbed · best of 3 x {args.calls} runs, {args.rounds} rounds")
    with torch.inference_mode():
        for fn in paths.values():
            for _ in range(5):
                fn(x)
        figures = {name: [] for name in paths}
        for _ in range(args.rounds):
            for name, fn in paths.items():
                best = min(timeit.repeat(lambda: fn(x), number=args.calls, repeat=3))
                figures[name].append(best / args.calls / CHAIN * 1e6)
        for name, values in figures.items():
            values.sort()
            print(f"{name:18s} median {values[len(values) // 2]:6.2f} us a call  "
                  f"(rounds {values[0]:.2f}-{values[-1]:.2f})")
        print(profile_of(lambda: paths["compiled"](x), 500, 12))
    return 0


if __name__ == "__main__":
    sys.exit(main())
