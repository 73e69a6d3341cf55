"""Host time per call of sparse24.ops.linear against F.linear, at sizes where the GPU work is tiny.

At batch 4 of BERT-base each of the 72 Linear calls does a few microseconds of GPU work, so eager
inference is decided by how long the host takes to issue each call. This bench times back-to-back
calls of a small problem with a host clock (synchronizing once at the end), for: F.linear (cuBLAS),
sparse24's public linear() (direct path in plain eager calls) and the registered op
torch.ops.sparse24.linear (the path torch.compile and autograd use).

    python -m bench.overhead [--calls 2000] [--profile] [--out-dir DIR]
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

from bench import common


def per_call_us(fn, calls: int) -> float:
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e6


def run_uncached(fn):
    from sparse24.ops.triton_internals import CachedLaunch

    CachedLaunch.enabled = False
    try:
        return fn()
    finally:
        CachedLaunch.enabled = True


def run_wrapped(fn):
    """With DescriptorLauncher off: Triton's CudaLauncher wrappers fill the TMA descriptors."""
    from sparse24.ops.triton_internals import DescriptorLauncher

    DescriptorLauncher.enabled = False
    try:
        return fn()
    finally:
        DescriptorLauncher.enabled = True


def profile_calls(fn, label: str, calls: int = 500) -> None:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    profiler.disable()
    print(f"--- cProfile of {calls} linear() calls, {label} (tottime) ---")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


def main() -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--profile", action="store_true",
                        help="also print a cProfile of linear() calls (where the host time goes)")
    args = parser.parse_args()
    common.require_cuda("python -m bench.overhead")
    import sparse24.ops as ops
    from sparse24.ops import gemm

    env = common.env_record()
    run_id = common.new_run_id()
    rows, table = [], []
    for m, n, k in ((16, 768, 768), (1536, 768, 768)):
        w = ops.prune_24(torch.randn(n, k, dtype=torch.float16, device="cuda"))
        values, meta = ops.compress(w)
        x = torch.randn(m, k, dtype=torch.float16, device="cuda")
        bias = torch.randn(n, dtype=torch.float16, device="cuda")
        cfg = gemm.choose_config(m, n, k, x.dtype, x.device)
        paths = {
            "F.linear (cuBLAS)": lambda: F.linear(x, w, bias),
            "sparse24 linear()": lambda: ops.linear(x, values, meta, bias),
            "torch.ops.sparse24.linear": lambda: torch.ops.sparse24.linear(x, values, meta, bias, None),
            # the pieces of linear(), to see where the host time goes
            f"  run_config ({cfg['family']}, split {cfg.get('SPLIT_K', 1)})":
                lambda: gemm.run_config(x, values, meta, bias, 0, cfg),
            "  run_config through Triton's launcher wrappers": lambda: run_wrapped(
                lambda: gemm.run_config(x, values, meta, bias, 0, cfg)),
            "  run_config through kernel[grid]": lambda: run_uncached(
                lambda: gemm.run_config(x, values, meta, bias, 0, cfg)),
            "  input checks": lambda: gemm.check_linear_inputs(x, values, meta, bias, None),
            "  choose_config": lambda: gemm.choose_config(m, n, k, x.dtype, x.device),
        }
        for name, fn in paths.items():
            us = per_call_us(fn, args.calls)
            rows.append({"bench": "overhead", "run_id": run_id, "env": env, "m": m, "n": n, "k": k,
                         "path": name, "us_per_call": us})
            table.append([f"{m}x{n}x{k}", name, f"{us:.1f}"])
            common.progress(f"[overhead] {m}x{n}x{k} {name}: {us:.1f} us per call")
        if args.profile:
            profile_calls(lambda: ops.linear(x, values, meta, bias), f"{m}x{n}x{k}")
    common.append_jsonl(args.out_dir / "overhead.jsonl", rows)
    _, text = common.write_markdown(
        args.out_dir, "overhead", "Host time per call (back-to-back eager calls, fp16)", env, run_id,
        ["M x N x K", "path", "us per call"], table,
        notes=["wall time of back-to-back calls divided by their number, one sync at the end; "
               "where the GPU work is shorter than the host's, this is the host's cost per call"])
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
