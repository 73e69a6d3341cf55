"""Where a Llama-style decode step's GPU time goes, dense against sparse24 (issue 25's decode goal).

bench/llm.py times whole decode steps. A 2:4 GEMM can only speed up the GEMMs: if the rest of
the step (attention over the KV cache, norms, rotary, the cache writes) takes a share s of dense's
time, the step's speedup is at most 1 / (s + (1 - s) / g) for a GEMM speedup g (1.78 at most
when the weight is streamed: 9/16 of the bytes). This splits each step's GPU time into GEMMs and
the rest, per model, batch size and phase, and prints that ceiling beside the GEMM speedup.

The models are bench/llm.py's (Llama-3-8B layer shapes, random 2:4 weights, --layers of them),
compiled with ``torch.compile(fullgraph=True)`` in default mode: the kernels are those of the
reduce-overhead mode bench/llm.py times, launched without the CUDA graph, so the profiler sees
each. GPU time is the sum of the kernels' times over 3 steps (torch.profiler), per step.

    python -m bench.diag.llm_breakdown [--layers 2] [--batches 1,16,64] [--context 512] [--prefill 2048]
"""

from __future__ import annotations

import re
from collections import defaultdict

import torch

from bench import common

STEPS = 3
GEMM = re.compile(r"sparse_(wgmma|mma|dot)|splitk|_reduce|gemm|xmma|nvjet|cutlass|cublas|sm90_", re.I)
ATTENTION = re.compile(r"sdpa|flash|fmha|attention|softmax", re.I)
STREAMING_CEILING = 16 / 9  # a 2:4 weight is 9/16 of the dense bytes


def part_of(kernel_name: str) -> str:
    # attention first: its kernels' names can hold "cutlass" or "sm90_" too (fmha_cutlassF_...)
    if ATTENTION.search(kernel_name):
        return "attention"
    return "gemm" if GEMM.search(kernel_name) else "other"


def split_by_part(events) -> tuple[dict[str, float], dict[str, float]]:
    """(ms per step by part, ms per step by kernel name) of profiled CUDA kernel events."""
    parts: dict[str, float] = defaultdict(float)
    kernels: dict[str, float] = defaultdict(float)
    for name, us in events:
        parts[part_of(name)] += us / 1e3 / STEPS
        kernels[name[:60]] += us / 1e3 / STEPS
    return dict(parts), dict(kernels)


def ceiling(dense_parts: dict[str, float], gemm_speedup: float) -> float:
    """The step's speedup if only the GEMMs ran ``gemm_speedup`` times faster."""
    total = sum(dense_parts.values())
    gemm = dense_parts.get("gemm", 0.0)
    return total / (total - gemm + gemm / gemm_speedup)


def profiled_parts(step) -> tuple[dict[str, float], dict[str, float]]:
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(STEPS):
                step()
            torch.cuda.synchronize()
    return split_by_part((e.name, e.time_range.elapsed_us()) for e in prof.events()
                         if e.device_type == DeviceType.CUDA)


def main() -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batches", type=common.parse_int_list, default=[1, 16, 64])
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--prefill", type=int, default=2048)
    args = parser.parse_args()
    common.require_cuda("python -m bench.diag.llm_breakdown")
    from bench import llm

    env, run_id = common.env_record(), common.new_run_id()
    print(common.env_line(env), "· run", run_id, flush=True)
    dense, sparse, _ = llm.build_models(args.layers, torch.float16, "cuda")
    cases = [("decode", b, b) for b in args.batches] + [("prefill", 1, args.prefill)]
    print("phase   batch tokens | dense ms: gemm  attn  other | sparse24 ms: gemm  attn  other |"
          " GEMM speedup | step speedup | ceiling at that GEMM speedup, at 1.78x", flush=True)
    for phase, batch, tokens in cases:
        row = {"phase": phase, "batch": batch, "tokens": tokens, "layers": args.layers,
               "run_id": run_id, "env": env}
        for label, model in (("dense", dense), ("sparse24", sparse)):
            torch._dynamo.reset()
            fn = torch.compile(model, fullgraph=True)
            step = (llm.decode_step(fn, batch, args.context, "cuda", torch.float16)
                    if phase == "decode" else llm.prefill_step(fn, tokens, "cuda"))
            parts, kernels = profiled_parts(step)
            row[label] = {"parts": parts,
                          "top_kernels": dict(sorted(kernels.items(), key=lambda kv: -kv[1])[:6])}
        d, s = row["dense"]["parts"], row["sparse24"]["parts"]
        gemm_speedup = d.get("gemm", 0.0) / max(s.get("gemm", 0.0), 1e-9)
        row.update(gemm_speedup=gemm_speedup, step_speedup=sum(d.values()) / sum(s.values()),
                   ceiling=ceiling(d, gemm_speedup), ceiling_streaming=ceiling(d, STREAMING_CEILING))
        common.append_jsonl(args.out_dir / "llm_breakdown.jsonl", [row])

        def cols(p):
            return "  ".join(f"{p.get(k, 0.0):5.3f}" for k in ("gemm", "attention", "other"))

        print(f"{phase:<7} {batch:>5} {tokens:>6} | {cols(d)} | {cols(s)} | {gemm_speedup:5.2f}x |"
              f" {row['step_speedup']:5.2f}x | {row['ceiling']:5.2f}x, {row['ceiling_streaming']:5.2f}x",
              flush=True)
        for label in ("dense", "sparse24"):
            print(f"    {label} top kernels:", {k: round(v, 3) for k, v in row[label]["top_kernels"].items()},
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
