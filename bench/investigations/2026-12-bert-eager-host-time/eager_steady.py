"""Where eager BERT-base's time per forward goes: host issue time, GPU time and what the bench sees.

bench/bert.py on the H200 at 1c9b8a5 timed sparse24's eager BERT-base at batch 64 at 15.4 ms
while its profile showed 8.9 ms of GPU work per forward, and the unfused variant, timed after
other models had been compiled in the same process, at 12.6-12.8 ms at every batch size. This
measures, per model and batch size:
  bench_ms   bench/bert.py's timer (blocked_autorange median, back-to-back forwards);
  sync_ms    one forward with a synchronize after it (median of 15);
  host_ms    the time the forward call takes to return, the GPU idle at its start (median of 15);
  gpu_ms     CUDA time of the forward's kernels (torch.profiler, mean of 3 forwards), at the end:
             the profiler leaves CUPTI subscribed and every later launch of the process slower
             (pytorch/pytorch#144455; the runs at 7019ac3 and 9953c11 profiled in-line and timed
             everything after the first profile in a slowed process);
in four settings: a fresh process; the dense model with every nn.Linear replaced by one that
returns a preallocated output ("free linears": the host time BERT spends outside its Linear
layers, the floor of any eager Linear swap); the garbage collector off; and again after a
torch.compile of each model has run in the process.

    python -m bench.investigations.2026-12-bert-eager-host-time.eager_steady [--batch-sizes 16,64]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time

import torch

from bench import bert, common


class FreeLinear(torch.nn.Module):
    """Returns one preallocated output per input shape: no GPU work, one dict look-up of host."""

    def __init__(self, out_features: int):
        super().__init__()
        self.out_features = out_features
        self.outputs: dict[tuple, torch.Tensor] = {}

    def forward(self, x):
        y = self.outputs.get(x.shape)
        if y is None:
            y = self.outputs[x.shape] = x.new_empty((*x.shape[:-1], self.out_features)).normal_()
        return y


def free_linears(model: torch.nn.Module) -> torch.nn.Module:
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear) and ".encoder.layer." in f".{name}.{child_name}":
                setattr(module, child_name, FreeLinear(child.out_features))
    return model


def host_and_sync_ms(fn, batch, iters: int = 15) -> tuple[float, float]:
    host, synced = [], []
    for _ in range(iters):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(**batch)
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        host.append((t1 - t0) * 1e3)
        synced.append((t2 - t0) * 1e3)
    return statistics.median(host), statistics.median(synced)


def gpu_ms(fn, batch, iters: int = 3) -> float:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn(**batch)
        torch.cuda.synchronize()
    total_us = 0.0
    for event in prof.key_averages():
        total_us += getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0)
    return total_us / iters / 1e3


def measure(label: str, fn, batches: dict) -> None:
    with torch.inference_mode():
        for bs, batch in batches.items():
            for _ in range(3):
                fn(**batch)
            bench_ms = bert.time_tutorial(fn, batch, 0.5)
            host, synced = host_and_sync_ms(fn, batch)
            print(f"{label:<34} bs={bs:<3} bench {bench_ms:6.2f}  sync {synced:6.2f}  host {host:6.2f} ms",
                  flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="16,64")
    args = parser.parse_args()
    common.require_cuda("python -m bench.investigations.2026-12-bert-eager-host-time.eager_steady")
    print(common.env_line(common.env_record()), flush=True)
    torch.set_grad_enabled(False)
    batches = {bs: bert.make_batch(bs, 384) for bs in map(int, args.batch_sizes.split(","))}
    dense = bert.build_dense()
    sparse = bert.build_sparse24(dense)[0]
    free = free_linears(bert.build_dense())
    print("== fresh process", flush=True)
    measure("dense eager", dense, batches)
    measure("sparse24 eager", sparse, batches)
    measure("dense, free linears, eager", free, batches)
    from sparse24.ops.triton_internals import DescriptorLauncher

    DescriptorLauncher.enabled = False  # the launch lever, A/B in the same process
    measure("sparse24 eager, Triton's wrappers", sparse, batches)
    DescriptorLauncher.enabled = True
    measure("sparse24 eager, DescriptorLauncher", sparse, batches)
    print("== garbage collector off", flush=True)
    gc.disable()
    measure("dense eager, gc off", dense, batches)
    measure("sparse24 eager, gc off", sparse, batches)
    gc.enable()
    print("== after torch.compile of each model (default mode) ran", flush=True)
    for model in (dense, sparse):
        compiled = torch.compile(model, fullgraph=True)
        with torch.inference_mode():
            for batch in batches.values():
                compiled(**batch)
    measure("dense eager, after compiles", dense, batches)
    measure("sparse24 eager, after compiles", sparse, batches)
    measure("sparse24 compiled default", compiled, batches)
    print("== GPU time per forward (torch.profiler; last, see the docstring)", flush=True)
    with torch.inference_mode():
        for label, fn in (("dense eager", dense), ("sparse24 eager", sparse),
                          ("dense, free linears, eager", free)):
            for bs, batch in batches.items():
                print(f"{label:<34} bs={bs:<3} gpu {gpu_ms(fn, batch):6.2f} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
