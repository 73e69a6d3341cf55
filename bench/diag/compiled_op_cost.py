"""Host time per sparse24.linear call inside a torch.compile'd graph, against the same op eager.

bench/bert.py on the H200 at 1c9b8a5: sparse24's BERT-base at batch 4 took 8.39 ms per forward
compiled (default mode) against 6.97 ms eager, and its profile put ~105 us of host time in each
sparse24::linear call under inductor, against ~45 us per call in bench/overhead.py's eager loop.
This times a chain of 24 calls on [1536, 768] x [768, 768]^T (one BERT-base batch of 4, the
attention output shape) so the per-call cost is isolated from the model:
  F.linear eager, F.linear compiled (inductor's extern mm), sparse24 linear() eager (direct path),
  torch.ops.sparse24.linear eager (dispatcher path), sparse24 compiled (default mode), and both
  chains compiled with every dimension dynamic (dynamic=True),
then prints a cProfile of the compiled chain (where the host time goes).

    python -m bench.diag.compiled_op_cost [--calls 24] [--iters 200]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time

import torch
import torch.nn.functional as F

from bench import common


def per_call_us(fn, x, iters: int, calls: int) -> float:
    for _ in range(5):
        fn(x)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn(x)
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters / calls * 1e6


def sparse_chains(packed: list, biases: list):
    """Two chains of sparse24 calls over the packed weights [(values, meta)] and their biases:
    through linear() (the records and bound launches) and through the registered op."""
    import sparse24.ops as ops

    def linear_chain(h):
        for (values, meta), bias in zip(packed, biases):
            h = ops.linear(h, values, meta, bias)
        return h

    def op_chain(h):
        for (values, meta), bias in zip(packed, biases):
            h = torch.ops.sparse24.linear(h, values, meta, bias, None)
        return h

    return linear_chain, op_chain


def profile_of(run, times: int, lines: int, sync=None) -> str:
    """cProfile's table of ``times`` calls of ``run`` (then ``sync``), its ``lines`` functions of
    most own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(times):
        run()
    if sync is not None:
        sync()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(lines)
    return text.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=24)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=1536)
    args = parser.parse_args()
    common.require_cuda("python -m bench.diag.compiled_op_cost")
    print(common.env_line(common.env_record()), flush=True)
    import sparse24.ops as ops

    torch.manual_seed(0)
    dense_w = [0.05 * torch.randn(768, 768, dtype=torch.float16, device="cuda") for _ in range(args.calls)]
    weights = [ops.prune_24(w) for w in dense_w]
    packed = [ops.compress(w) for w in weights]
    bias = [torch.randn(768, dtype=torch.float16, device="cuda") for _ in range(args.calls)]
    x = torch.randn(args.tokens, 768, dtype=torch.float16, device="cuda")

    def dense_chain(h):
        for w, b in zip(weights, bias):
            h = F.linear(h, w, b)
        return h

    sparse_chain, op_chain = sparse_chains(packed, bias)
    paths = {
        "F.linear eager": dense_chain,
        "F.linear compiled default": torch.compile(dense_chain, fullgraph=True),
        "sparse24 linear() eager": sparse_chain,
        "torch.ops.sparse24.linear eager": op_chain,
        "sparse24 compiled default": torch.compile(sparse_chain, fullgraph=True),
        # issue 23: a dynamic batch dimension should cost no more than a static one
        "F.linear compiled, dynamic": torch.compile(dense_chain, fullgraph=True, dynamic=True),
        "sparse24 compiled, dynamic": torch.compile(sparse_chain, fullgraph=True, dynamic=True),
    }
    from sparse24.ops.triton_internals import DescriptorLauncher

    with torch.inference_mode():
        for label, fn in paths.items():
            print(f"{label:<34} {per_call_us(fn, x, args.iters, args.calls):7.1f} us per call", flush=True)
        DescriptorLauncher.enabled = False  # the launch lever, A/B in the same process
        for label in ("sparse24 linear() eager", "sparse24 compiled default"):
            us = per_call_us(paths[label], x, args.iters, args.calls)
            print(f"{label + ', Triton wrappers':<34} {us:7.1f} us per call", flush=True)
        DescriptorLauncher.enabled = True
        compiled = paths["sparse24 compiled default"]
        print(profile_of(lambda: compiled(x), 50, 30, torch.cuda.synchronize))
    return 0


if __name__ == "__main__":
    sys.exit(main())
