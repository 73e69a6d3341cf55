"""A Llama-style MLP's gate and up projections with the gated epilogue, against what it replaces.

silu(x @ Wg^T) * (x @ Wu^T) for gate and up weights [I, K] (2:4 pruned) and M tokens, four ways,
timed in turns in one run (CUDA graphs, operands rotated past the L2; fp16 by default):
  dense         cuBLAS on the [2I, K] concatenation, then silu and the product under
                torch.compile (one inductor kernel): what a compiled dense model runs
  sparse24      sparse24.linear on the packed [2I, K] concatenation, then the same compiled
                silu * up: what sparsify_'s gate_up grouping runs today
  gated         sparse24.linear(activation="swiglu") on the packed interleaved weight
                (sparse24.layout.interleave_gate_up): silu * up in the GEMM's epilogue, half the
                outputs written, no second kernel
  gated_paired  the same, with the sm90 kernel pairing the rows in its own epilogue
                (wgmma.PAIR_GATED_IN_KERNEL; it matters only where the sm90 family runs: above
                64 tokens, and at 9-16 on some shapes) instead of a second pass
  gated_eager   the gated call in eager mode (host time included; L2 flushed before each call)
Each path's output is first checked against the float64 product of the two projections; a wrong
one is reported as WRONG and not timed. Speedups are against dense in the same run.

    python -m bench.gated [--shapes 14336x4096,11008x4096] [--m 1,16,64,256,2048,8192]
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from bench import common
from sparse24.reference import REL_TOL

BENCH = "gated"
# (I, K): Llama-3-8B (and Mistral-7B), Llama-2-7B
DEFAULT_SHAPES = "14336x4096,11008x4096"
DEFAULT_M = "1,16,64,256,2048,8192"
PATHS = ("dense", "sparse24", "gated", "gated_paired", "gated_eager")


def _silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def _paired(linear, x, values, meta):
    """The gated call with the sm90 kernel pairing the rows itself (read at each launch, so a
    captured graph holds that form)."""
    from sparse24.ops import wgmma

    wgmma.PAIR_GATED_IN_KERNEL = True
    try:
        return linear(x, values, meta, None, "swiglu")
    finally:
        wgmma.PAIR_GATED_IN_KERNEL = False


def main() -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="I x K items (gate/up weight shape)")
    parser.add_argument("--m", default=DEFAULT_M, help="token counts")
    parser.add_argument("--dtype", type=common.parse_dtype, default=torch.float16)
    args = parser.parse_args()
    common.require_cuda("python -m bench.gated")
    import sparse24.ops as ops
    from sparse24.layout import interleave_gate_up

    # dynamic: one compiled kernel for every shape (static shapes would recompile per (M, I) and
    # fall back to eager, two kernels, past dynamo's recompile limit of 8)
    silu_mul = torch.compile(_silu_mul, dynamic=True)
    env, run_id = common.env_record(), common.new_run_id()
    rows, table = [], []
    for i, k in common.parse_shapes(args.shapes):
        gate, up = (ops.prune_24(torch.randn(i, k, device="cuda", dtype=args.dtype))
                    for _ in range(2))
        dense_w = torch.cat([gate, up])
        concat_values, concat_meta = ops.compress(dense_w)
        values, meta = ops.compress(interleave_gate_up(gate, up))
        weight_bytes = values.numel() * values.element_size() + meta.numel() * 4
        for m in common.parse_int_list(args.m):
            sets = common.rotation_count(m * k * 2 + weight_bytes, common.l2_bytes())
            xs = [(torch.randn(m, k, device="cuda", dtype=args.dtype) / k ** 0.5,)
                  for _ in range(sets)]
            calls = {
                "dense": lambda x: silu_mul(F.linear(x, dense_w)),
                "sparse24": lambda x: silu_mul(ops.linear(x, concat_values, concat_meta)),
                "gated": lambda x: ops.linear(x, values, meta, None, "swiglu"),
            }
            calls["gated_paired"] = lambda x: _paired(ops.linear, x, values, meta)
            calls["gated_eager"] = calls["gated"]
            x0 = xs[0][0].double()
            want = F.silu(x0 @ gate.double().t()) * (x0 @ up.double().t())
            times, errors = {}, {}
            for path in PATHS:
                with torch.no_grad():
                    errors[path] = common.rel_fro_error(calls[path](xs[0][0]), want)
                if not errors[path] < REL_TOL[args.dtype]:
                    times[path] = None
                    continue
                mode = "eager" if path.endswith("eager") else "graph"
                fn = common.Rotating(calls[path], xs if mode == "graph" else xs[:1])
                with torch.no_grad():
                    times[path] = common.time_mode(mode, fn)
            dense_ms = times["dense"].ms if times["dense"] else None
            for path in PATHS:
                t = times[path]
                speedup = dense_ms / t.ms if t and dense_ms else None
                rows.append({"bench": BENCH, "run_id": run_id, "env": env, "m": m, "i": i, "k": k,
                             "dtype": common.dtype_name(args.dtype), "path": path,
                             "rel_err": errors[path], **(t.as_row() if t else {"ms": None}),
                             "speedup_vs_dense": speedup})
            table.append([f"{m}x{i}x{k}"] + [
                "WRONG" if times[p] is None else
                f"{common.fmt_us(times[p].ms)} ({dense_ms / times[p].ms:.2f}x)" if dense_ms
                else common.fmt_us(times[p].ms) for p in PATHS])
            common.progress(f"[gated] {table[-1]}")
    common.append_jsonl(args.out_dir / f"{BENCH}.jsonl", rows)
    _, text = common.write_markdown(
        args.out_dir, BENCH, f"Gate and up projections with silu * up ({common.dtype_name(args.dtype)})",
        env, run_id, ["M x I x K", *(f"{p} us (vs dense)" for p in PATHS)], table,
        notes=["dense, sparse24, gated: CUDA graphs (GPU time), operands rotated past the L2; "
               "gated_eager: eager calls, L2 flushed before each (host time included)",
               "dense and sparse24 run silu * up as one torch.compile kernel after the GEMM; gated "
               "computes it in the GEMM's epilogue (sparse24.ops.linear, activation 'swiglu')"])
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
