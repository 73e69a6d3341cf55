"""Host time per call of sparse24.ops.linear against F.linear, at sizes where the GPU work is tiny.

At batch 4 of BERT-base each of the 72 Linear calls does a few microseconds of GPU work, so eager
inference is decided by how long the host takes to issue each call. This bench times back-to-back
calls of a small problem with a host clock (synchronizing once at the end), for: F.linear (cuBLAS),
sparse24's public linear() (direct path in plain eager calls) and the registered op
torch.ops.sparse24.linear (the path torch.compile and autograd use), and the layers nn.Linear and
SparseLinear, at few, some and many tokens. For each path it also counts the Python frames one
call enters, and in how many modules (``sys.setprofile``): the host path's length in code.

    python -m bench.overhead [--calls 1000] [--rounds 5] [--profile] [--out-dir DIR]
        [--config '{"family": "mma", ...}']

``--config`` times another family's host path on this GPU: the config is stored as the tuned one
for every shape, in a tuning cache of its own (``$SPARSE24_CACHE_DIR`` set to a fresh folder),
as a user's ``python -m sparse24 tune`` would leave it; a shape it cannot serve (past the sm90
rule, the wgmma family only) keeps its heuristic. The run_config row names the family that served.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile

import torch
import torch.nn.functional as F

from bench import common


def python_frames(fn) -> tuple[int, list[str]]:
    """(Python frames entered by one call of fn, the modules they belong to, in first-seen order).
    C functions (torch ops, the driver) are not frames; fn's own frame is not counted."""
    seen: list = []  # one entry per frame entered, fn's own first

    def tracer(frame, event, arg):
        if event == "call":
            seen.append(frame.f_globals.get("__name__", "?"))

    sys.setprofile(tracer)
    try:
        fn()
    finally:
        sys.setprofile(None)
    inner = seen[1:]
    return len(inner), list(dict.fromkeys(inner))


def run_uncached(fn):
    from sparse24.ops.triton_internals import CachedLaunch

    CachedLaunch.enabled = False
    try:
        return fn()
    finally:
        CachedLaunch.enabled = True


def run_wrapped(fn):
    """With the direct launches off (DescriptorLauncher.enabled = False): every launch through
    Triton's CompiledKernel.run and its CudaLauncher wrappers (which fill the TMA descriptors)."""
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


def store_tuned(config: dict, m: int, n: int, k: int, x: torch.Tensor) -> None:
    """``config`` as the tuned config of [m, k] x [n, k]^T on x's GPU, dtype and Triton."""
    from sparse24 import tuning

    key = tuning.TuningKey(tuning.current_gpu_name(x.device), tuning.triton_version(),
                           tuning.dtype_name(x.dtype), n, k, tuning.m_bucket(m))
    tuning.default_cache().put(tuning.CacheEntry(key, config))


def main() -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per path and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every path in turn")
    parser.add_argument("--profile", action="store_true",
                        help="also print a cProfile of linear() calls (where the host time goes)")
    parser.add_argument("--config", type=json.loads, default=None,
                        help="a config (JSON) to store as every shape's tuned one, e.g. the mma "
                             "family's on an sm90 GPU, whose heuristic plans wgmma")
    args = parser.parse_args()
    common.require_cuda("python -m bench.overhead")
    if args.config is not None:  # before sparse24 reads its cache
        os.environ["SPARSE24_CACHE_DIR"] = tempfile.mkdtemp(prefix="sparse24_overhead_")
    import sparse24.ops as ops
    from sparse24.ops import gemm

    env = common.env_record()
    run_id = common.new_run_id()
    rows, table = [], []
    from sparse24.nn import SparseLinear

    # 16 x 4096 x 4096: an LLM decode step's GEMM (the mma family, split-K and its reduction)
    for m, n, k in ((16, 768, 768), (16, 4096, 4096), (1536, 768, 768), (8192, 4096, 4096)):
        w = ops.prune_24(torch.randn(n, k, dtype=torch.float16, device="cuda"))
        values, meta = ops.compress(w)
        x = torch.randn(m, k, dtype=torch.float16, device="cuda")
        bias = torch.randn(n, dtype=torch.float16, device="cuda")
        if args.config is not None:
            store_tuned(args.config, m, n, k, x)
        cfg = gemm.choose_config(m, n, k, x.dtype, x.device)
        dense_layer = torch.nn.Linear(k, n, device="cuda", dtype=torch.float16)
        with torch.no_grad():
            dense_layer.weight.copy_(w)
            dense_layer.bias.copy_(bias)
        sparse_layer = SparseLinear.from_linear(dense_layer)
        paths = {
            "F.linear (cuBLAS)": lambda: F.linear(x, w, bias),
            "nn.Linear.forward": lambda: dense_layer(x),
            "SparseLinear.forward": lambda: sparse_layer(x),
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
        with torch.no_grad():
            # the paths in turns, ``--rounds`` times: a lent machine's host time drifts by 1.5x
            # within a run (F.linear at 16 x 768 x 768: 15.8 and 26.2 us in two runs on one H100
            # host), so each path's figure is its median over rounds spread across the run
            times = {name: [] for name in paths}
            for _ in range(args.rounds):
                for name, fn in paths.items():
                    times[name].append(common.back_to_back_us(fn, args.calls, warmup=50))
            for name, fn in paths.items():
                us = statistics.median(times[name])
                frames, modules = python_frames(fn)
                rows.append({"bench": "overhead", "run_id": run_id, "env": env, "m": m, "n": n,
                             "k": k, "path": name, "us_per_call": us, "rounds_us": times[name],
                             "python_frames": frames, "modules": modules,
                             "stored_config": args.config})
                table.append([f"{m}x{n}x{k}", name, f"{us:.1f}",
                              f"{min(times[name]):.1f}-{max(times[name]):.1f}", frames,
                              len(modules)])
                common.progress(f"[overhead] {m}x{n}x{k} {name}: {us:.1f} us per call, "
                                f"{frames} Python frames in {len(modules)} modules")
        if args.profile:
            profile_calls(lambda: ops.linear(x, values, meta, bias), f"{m}x{n}x{k}")
    common.append_jsonl(args.out_dir / "overhead.jsonl", rows)
    _, text = common.write_markdown(
        args.out_dir, "overhead", "Host time per call (back-to-back eager calls, fp16)", env, run_id,
        ["M x N x K", "path", "us per call", "rounds' range", "Python frames", "modules"], table,
        notes=["wall time of back-to-back calls divided by their number, one sync at the end; "
               "where the GPU work is shorter than the host's, this is the host's cost per call; "
               f"the median of {args.rounds} rounds of {args.calls} calls, every path timed in "
               "turn in each round",
               "Python frames: functions entered by one call (sys.setprofile), under no_grad; "
               "modules: how many modules they belong to (the JSON lines list them)"]
        + ([f"--config: {json.dumps(args.config)} stored as every shape's tuned config (the "
            "run_config row names the family that served each shape)"] if args.config else []))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
