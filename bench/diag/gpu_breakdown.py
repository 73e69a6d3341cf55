"""Where BERT-base's forward time goes, dense against sparse24, per part of the model and mode.

Issue 13's goals are ratios of whole forwards; this splits each forward into the parts that make
the ratio. Per model (dense, sparse24; bench/bert.py builds them), mode and batch size:
  wall_ms     bench/bert.py's timer (blocked_autorange median after warm-up);
  gpu_ms      CUDA time of the forward's kernels (torch.profiler, mean of 3 forwards), by part:
              linear (cuBLAS or sparse24's GEMM, bias and GELU with them: inductor and sparse24
              fuse them, eager dense does not), attention (SDPA and its pre-processing),
              layernorm (with the residual add inductor fuses into it), other (embeddings,
              copies, memsets, elementwise);
  host_gap_ms wall_ms - gpu_ms: the time the GPU waits for the host (launch and Python work).
In eager mode it also splits the Linear layers' GPU time by GEMM shape: dense's from the ops'
recorded shapes; sparse24's eager path launches its kernel without an op record, so its kernels
are told apart by their order, four per encoder layer: Q/K/V packed, attention output,
intermediate (+GELU), output.

Every wall time is taken before the first profile of the process: the profiler leaves CUPTI
subscribed and every later launch slower (pytorch/pytorch#144455). The script shows it: dense
eager at batch 16 timed again after one profile ("cupti" lines).

    python -m bench.diag.gpu_breakdown [--batch-sizes 4,16,64] [--modes eager,default,reduce-overhead]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict

import torch

from bench import bert, common

ITERS = 3
# Kernel name -> part. Order matters: a fused inductor kernel named for SDPA and a layernorm is
# rare, and the first match wins.
PARTS = [
    ("linear", re.compile(r"sparse_wgmma|gemm|xmma|nvjet|cutlass|cublas|gelu|addmm", re.I)),
    ("attention", re.compile(r"sdpa|flash|fmha|attention|softmax", re.I)),
    ("layernorm", re.compile(r"layer_norm|layernorm", re.I)),
]
LINEAR_OPS = {"aten::addmm", "aten::mm"}


def part_of(kernel_name: str) -> str:
    return next((part for part, pattern in PARTS if pattern.search(kernel_name)), "other")


def profile(fn, batch, record_shapes: bool):
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
                       record_shapes=record_shapes) as prof:
        for _ in range(ITERS):
            fn(**batch)
        torch.cuda.synchronize()
    return prof


def kernel_parts(prof) -> tuple[dict[str, float], dict[str, float]]:
    """(ms per forward by part, ms per forward by kernel name) of the profiled kernels."""
    from torch.autograd import DeviceType

    parts: dict[str, float] = defaultdict(float)
    kernels: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.device_type != DeviceType.CUDA:
            continue
        ms = event.time_range.elapsed_us() / 1e3 / ITERS
        parts[part_of(event.name)] += ms
        kernels[event.name[:70]] += ms
    return dict(parts), dict(kernels)


def linear_shapes(prof) -> dict[str, tuple[int, float]]:
    """'N x K' -> (calls per forward, GPU ms per forward) of dense's Linear ops (eager only)."""
    shapes: dict[str, list] = defaultdict(lambda: [0, 0.0])
    for avg in prof.key_averages(group_by_input_shape=True):
        if avg.key not in LINEAR_OPS:
            continue
        dims = avg.input_shapes
        if avg.key == "aten::addmm":  # bias, x [M, K], weight.t() [K, N]
            k, n = dims[2]
        else:  # aten::mm: x [M, K], weight.t() [K, N]
            k, n = dims[1]
        device_us = getattr(avg, "device_time_total", None)
        if device_us is None:
            device_us = avg.cuda_time_total
        entry = shapes[f"{n}x{k}"]
        entry[0] += avg.count // ITERS
        entry[1] += device_us / 1e3 / ITERS
    return {key: (calls, ms) for key, (calls, ms) in shapes.items()}


SPARSE_LAYER_ORDER = ("2304x768", "768x768", "3072x768", "768x3072")  # sparsify_(fuse_qkv=True)


def sparse_kernel_shapes(prof) -> dict[str, tuple[int, float]]:
    """'N x K' -> (calls per forward, GPU ms per forward) of sparse24's GEMM kernels, by their
    position in the layer (see the docstring)."""
    from torch.autograd import DeviceType

    kernels = sorted((e for e in prof.events()
                      if e.device_type == DeviceType.CUDA and "sparse_wgmma" in e.name),
                     key=lambda e: e.time_range.start)
    if not kernels or len(kernels) % (len(SPARSE_LAYER_ORDER) * ITERS):
        return {}
    shapes: dict[str, list] = defaultdict(lambda: [0, 0.0])
    for i, event in enumerate(kernels):
        entry = shapes[SPARSE_LAYER_ORDER[i % len(SPARSE_LAYER_ORDER)]]
        entry[0] += 1
        entry[1] += event.time_range.elapsed_us() / 1e3
    return {key: (calls // ITERS, ms / ITERS) for key, (calls, ms) in shapes.items()}


def wall_ms(fn, batch, min_run_time: float) -> float:
    with torch.inference_mode():
        for _ in range(3):
            fn(**batch)
        return bert.time_tutorial(fn, batch, min_run_time)


def gpu_parts(fn, batch, mode: str) -> dict:
    with torch.inference_mode():
        for _ in range(3):
            fn(**batch)
        prof = profile(fn, batch, record_shapes=mode == "eager")
    parts, kernels = kernel_parts(prof)
    row = {"gpu_ms": sum(parts.values()), "parts": parts,
           "top_kernels": dict(sorted(kernels.items(), key=lambda kv: -kv[1])[:8])}
    if mode == "eager":
        row["linear_shapes"] = {**linear_shapes(prof), **sparse_kernel_shapes(prof)}
    return row


PART_NAMES = ("linear", "attention", "layernorm", "other")  # the table's columns


def fmt_table(rows: dict, batch_sizes, modes) -> str:
    lines = []
    for mode in modes:
        table = []
        for bs in batch_sizes:
            for model in ("dense", "sparse24"):
                r = rows.get((model, mode, bs))
                if r is None:
                    continue
                table.append([bs, model, f"{r['wall_ms']:.2f}", f"{r['gpu_ms']:.2f}",
                              f"{r['host_gap_ms']:.2f}",
                              *(f"{r['parts'].get(k, 0.0):.3f}" for k in PART_NAMES)])
            d, s = rows.get(("dense", mode, bs)), rows.get(("sparse24", mode, bs))
            if d and s:
                table.append([bs, "sparse24 - dense", f"{s['wall_ms'] - d['wall_ms']:+.2f}",
                              f"{s['gpu_ms'] - d['gpu_ms']:+.2f}",
                              f"{s['host_gap_ms'] - d['host_gap_ms']:+.2f}",
                              *(f"{s['parts'].get(k, 0.0) - d['parts'].get(k, 0.0):+.3f}"
                                for k in PART_NAMES)])
        lines += [f"\n## {mode}\n", common.markdown_table(
            ["bs", "model", "wall ms", "GPU ms", "host gap ms", *PART_NAMES], table)]
    if "eager" in modes:
        table = []
        for bs in batch_sizes:
            for model in ("dense", "sparse24"):
                r = rows.get((model, "eager", bs))
                if r and "linear_shapes" in r:
                    table.append([bs, model, ", ".join(
                        f"{shape}: {calls} x {1e3 * ms / max(calls, 1):.1f} us = {ms:.3f}"
                        for shape, (calls, ms) in sorted(r["linear_shapes"].items()))])
        lines += ["\n## Linear GPU time by shape (eager; calls per forward x us per call = ms per forward)\n",
                  common.markdown_table(["bs", "model", "shape N x K: calls, ms"], table)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="4,16,64")
    parser.add_argument("--modes", default="eager,default,reduce-overhead")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    parser.add_argument("--min-run-time", type=float, default=0.5)
    args = parser.parse_args()
    common.require_cuda("python -m bench.diag.gpu_breakdown")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    modes = args.modes.split(",")
    torch.set_grad_enabled(False)
    dtype = getattr(torch, args.dtype)
    print(f"{common.env_line(common.env_record())} · {args.dtype} seq 384", flush=True)
    dense = bert.build_dense(dtype=dtype)
    sparse, _, _ = bert.build_sparse24(dense)
    batches = bert.make_batches(batch_sizes, 384)
    models = (("dense", dense), ("sparse24", sparse))
    walls = {}
    for name, model in models:  # pass 1: wall times, no profiler yet in this process
        for mode in modes:
            fn = bert.compile_for(model, mode)
            for bs in batch_sizes:
                walls[name, mode, bs] = wall_ms(fn, batches[bs], args.min_run_time)
                print(f"[wall] {name:<9} {mode:<15} bs={bs:<3} {walls[name, mode, bs]:.2f} ms", flush=True)
    probe = batches[batch_sizes[min(1, len(batch_sizes) - 1)]]
    before = wall_ms(dense, probe, args.min_run_time)
    gpu_parts(dense, probe, "eager")
    after = wall_ms(dense, probe, args.min_run_time)
    print(f"[cupti] dense eager bs={probe['input_ids'].shape[0]}: {before:.2f} ms before the first "
          f"profile, {after:.2f} ms after it", flush=True)
    rows = {}
    for name, model in models:  # pass 2: GPU time by part
        for mode in modes:
            fn = bert.compile_for(model, mode)
            for bs in batch_sizes:
                row = rows[name, mode, bs] = {"wall_ms": walls[name, mode, bs], **gpu_parts(fn, batches[bs], mode)}
                row["host_gap_ms"] = row["wall_ms"] - row["gpu_ms"]
                print(f"[breakdown] {name:<9} {mode:<15} bs={bs:<3} wall {row['wall_ms']:.2f} ms  "
                      f"GPU {row['gpu_ms']:.2f} ms  parts " + ", ".join(
                          f"{k} {v:.3f}" for k, v in sorted(row["parts"].items())), flush=True)
                for kernel, ms in row["top_kernels"].items():
                    print(f"    {ms:8.3f} ms  {kernel}", flush=True)
    print(fmt_table(rows, batch_sizes, modes), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
