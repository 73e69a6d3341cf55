"""sparse24.ops.linear against cuBLAS dense, torch's 2:4 (cuSPARSELt / CUTLASS) and a Triton dense GEMM.

For every weight shape N x K and token count M: y = x @ W^T with x [M, K] and W a 2:4-pruned
[N, K] weight. Every backend is timed twice in the same run:
  eager  per-call launches from Python, L2 flushed before each call (triton do_bench, median);
  graph  many calls captured in one CUDA graph and replayed (do_bench_cudagraph, median), operands
         rotating through enough copies that the L2 does not keep them between calls.
Speedups are against cuBLAS timed the same way in the same run. TFLOP/s counts the dense-equivalent
2*M*N*K; GB/s counts the minimal bytes of each backend (x + its weight + y, + bias). Before timing,
each backend's output is checked against F.linear on the decompressed weight; a wrong one is
reported as WRONG and not timed.

    python -m bench.gemm [--quick] [--shapes bert,4096x4096] [--m 1,16] [--dtype bfloat16]
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F

from bench import common
from sparse24.reference import REL_TOL, linear_flops

BENCH = "gemm"
BERT_SHAPES = common.BERT_SHAPES
# few tokens (issue 25: every shape at M <= 64 >= 1.0x cuBLAS), then sequence length 384 x batch size
BERT_M = [1, 16, 64] + [384 * b for b in (1, 4, 16, 64, 256)]
LLM_SHAPES = common.LLM_SHAPES
LLM_M = [1, 16, 32, 64, 256, 1024, 4096]  # decode ... prefill (issues 22 and 25's goal classes)
QUICK = {(3072, 768): [384, 24576], (4096, 4096): [16, 4096]}
# BERT's intermediate dense (768 -> 3072) is followed by bias + erf-GELU: the fused-epilogue rows.
EPILOGUE_SHAPE = (3072, 768)
# relative Frobenius error, for the dtypes of the sparse tensor cores
TOLERANCE = {dtype: REL_TOL[dtype] for dtype in (torch.float16, torch.bfloat16)}

# (backend, mode) -> column title; the order of the markdown columns and of the plot's lines.
SERIES = [
    ("sparse24", "eager", "sparse24"),
    ("sparse24", "graph", "sparse24 graph"),
    ("torch24_cslt", "eager", "torch 2:4 eager"),
    ("torch24_cslt", "graph", "torch 2:4 graph"),
    ("torch24_cutlass", "eager", "torch 2:4 CUTLASS eager"),
    ("torch24_cutlass", "graph", "torch 2:4 CUTLASS graph"),
    ("triton_dense", "eager", "Triton dense"),
    ("triton_dense", "graph", "Triton dense graph"),
]


def default_ms(shape: tuple[int, int]) -> list[int]:
    return BERT_M if shape in BERT_SHAPES else LLM_M


@dataclasses.dataclass
class Case:
    """One backend at one (M, N, K): how to build its rotating operand sets and what it computes."""
    backend: str
    baseline: str  # the backend whose time (same mode) this one's speedup is against
    fn: Callable
    make_sets: Callable[[], list[tuple]]
    bytes: int
    reference: torch.Tensor  # expected output on operand set 0
    unsupported_on_failure: bool = False  # a baseline torch cannot run here, not a bug of ours


@dataclasses.dataclass
class Point:
    """The operands of one (M, N, K) and their rotated copies, shared by the backends."""
    m: int
    n: int
    k: int
    dtype: torch.dtype
    sets: int
    xs: list[torch.Tensor]
    dense_ws: list[torch.Tensor]
    packed: list[tuple[torch.Tensor, torch.Tensor]]
    bias: list[torch.Tensor]


def make_point(m: int, n: int, k: int, dtype: torch.dtype, l2: int) -> Point:
    from sparse24 import ops
    from sparse24.reference import packed_bytes

    el = torch.empty((), dtype=dtype).element_size()
    # Rotation is sized on the smallest footprint of any backend (the packed one).
    sets = common.rotation_count((m * k + m * n + n) * el + packed_bytes(n, k, el), l2)
    torch.manual_seed(1000 * n + k + m)
    # Scaled like an initialised Linear so fp16 outputs stay O(1) even at K = 11008.
    w = torch.randn(n, k, device="cuda", dtype=dtype) * k**-0.5
    values, meta = ops.compress(ops.prune_24(w))
    wd = ops.decompress(values, meta)
    return Point(
        m, n, k, dtype, sets,
        xs=[torch.randn(m, k, device="cuda", dtype=dtype) for _ in range(sets)],
        dense_ws=[wd] + [wd.clone() for _ in range(sets - 1)],
        packed=[(values, meta)] + [(values.clone(), meta.clone()) for _ in range(sets - 1)],
        bias=[torch.randn(n, device="cuda", dtype=dtype) for _ in range(sets)],
    )


def torch24_weights(ws: list[torch.Tensor], cutlass: bool) -> list[torch.Tensor]:
    """The tutorial's conversion, on the chosen backend; the flag is restored afterwards."""
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    if cutlass and torch.cuda.get_device_capability()[0] != 8:
        raise NotImplementedError("torch's CUTLASS 2:4 kernels are built for sm8x only")
    old = SparseSemiStructuredTensor._FORCE_CUTLASS
    SparseSemiStructuredTensor._FORCE_CUTLASS = cutlass
    try:
        return [to_sparse_semi_structured(w) for w in ws]
    finally:
        SparseSemiStructuredTensor._FORCE_CUTLASS = old


def cases_for(p: Point, epilogue: bool) -> list[Case]:
    from sparse24 import ops
    from bench.triton_dense import dense_linear
    from sparse24.reference import packed_bytes

    el = torch.empty((), dtype=p.dtype).element_size()
    io = (p.m * p.k + p.m * p.n) * el
    dense_b, sparse_b = io + p.n * p.k * el, io + packed_bytes(p.n, p.k, el)
    ref = F.linear(p.xs[0], p.dense_ws[0])
    xw = lambda: list(zip(p.xs, p.dense_ws))  # noqa: E731
    cases = [
        Case("cublas", "cublas", F.linear, xw, dense_b, ref),
        Case("sparse24", "cublas", ops.linear,
             lambda: [(x, v, mt) for x, (v, mt) in zip(p.xs, p.packed)], sparse_b, ref),
        Case("torch24_cslt", "cublas", F.linear,
             lambda: list(zip(p.xs, torch24_weights(p.dense_ws, cutlass=False))), sparse_b, ref,
             unsupported_on_failure=True),
        Case("torch24_cutlass", "cublas", F.linear,
             lambda: list(zip(p.xs, torch24_weights(p.dense_ws, cutlass=True))), sparse_b, ref,
             unsupported_on_failure=True),
        Case("triton_dense", "cublas", dense_linear, xw, dense_b, ref),
    ]
    if epilogue:
        ref_e = F.gelu(F.linear(p.xs[0], p.dense_ws[0], p.bias[0]))
        bias_b = p.n * el
        cases += [
            # What a dense model runs: cuBLAS GEMM with bias, then a separate erf-GELU pass.
            Case("cublas+bias+gelu", "cublas+bias+gelu", lambda x, w, b: F.gelu(F.linear(x, w, b)),
                 lambda: list(zip(p.xs, p.dense_ws, p.bias)), dense_b + bias_b, ref_e),
            Case("sparse24+bias+gelu", "cublas+bias+gelu",
                 lambda x, v, mt, b: ops.linear(x, v, mt, b, "gelu"),
                 lambda: [(x, v, mt, b) for x, (v, mt), b in zip(p.xs, p.packed, p.bias)],
                 sparse_b + bias_b, ref_e),
        ]
    return cases


def run_point(p: Point, modes: list[str], rep_ms: float, epilogue: bool) -> list[dict]:
    """Check then time every backend at one point; returns one row per (backend, mode)."""
    tol = TOLERANCE[p.dtype]
    flops = linear_flops(p.m, p.n, p.k)
    rows: dict[tuple[str, str], dict] = {}
    runnable: list[tuple[Case, common.Rotating]] = []
    for case in cases_for(p, epilogue):
        base = {"backend": case.backend, "baseline": case.baseline, "bytes": case.bytes,
                "flops": flops, "rotation_sets": p.sets, "rel_err": None, "tolerance": tol,
                "ms": None, "p20_ms": None, "p80_ms": None, "tflops": None, "gbps": None,
                "speedup": None, "status": "ok", "error": None}
        try:
            rot = common.Rotating(case.fn, case.make_sets())
            err = common.rel_fro_error(case.fn(*rot.sets[0]), case.reference)
            base["rel_err"] = err
            if not err <= tol:
                base.update(status="WRONG", error=f"relative error {err:.2e} > {tol:.0e}")
        except Exception as exc:  # noqa: BLE001 - one backend failing must not stop the others
            base.update(status="unsupported" if case.unsupported_on_failure else "failed",
                        error=common.error_text(exc))
        for mode in modes:
            rows[case.backend, mode] = {**base, "mode": mode}
        if base["status"] == "ok":
            runnable.append((case, rot))

    # All eager timings first: a graph capture that goes wrong cannot spoil them.
    for mode in modes:
        for case, rot in runnable:
            row = rows[case.backend, mode]
            try:
                t = common.time_mode(mode, rot, rep_ms=rep_ms)
                row.update(t.as_row(), tflops=flops / t.ms / 1e9, gbps=case.bytes / t.ms / 1e6)
            except Exception as exc:  # noqa: BLE001
                row.update(status="unsupported" if case.unsupported_on_failure else "failed",
                           error=common.error_text(exc))
                try:
                    torch.cuda.synchronize()
                except Exception:  # noqa: BLE001 - the next timing will report a dead context
                    pass
        for (_, row_mode), row in rows.items():
            base_row = rows.get((row["baseline"], row_mode))
            if row_mode == mode and row["ms"] and base_row and base_row["ms"]:
                row["speedup"] = base_row["ms"] / row["ms"]
    return list(rows.values())


def cell(rows: dict, backend: str, mode: str) -> str:
    r = rows.get((backend, mode))
    if r is None:
        return ""
    if r["status"] != "ok":
        return {"unsupported": "unsup.", "failed": "failed"}.get(r["status"], r["status"])
    return f"{r['speedup']:.2f}x" if r["speedup"] else "-"


def table(all_rows: list[dict], modes: list[str]) -> tuple[list[str], list[list[str]]]:
    by_point: dict[tuple, dict] = {}
    for r in all_rows:
        by_point.setdefault((r["n"], r["k"], r["m"]), {})[r["backend"], r["mode"]] = r
    ok = {(r["backend"], r["mode"]) for r in all_rows if r["status"] == "ok"}
    # Columns for series that never ran here (e.g. CUTLASS on sm90) become a note instead.
    series = [(b, m, t) for b, m, t in SERIES if m in modes and ((b, m) in ok or b != "torch24_cutlass")]
    headers = (["N x K", "M", "cuBLAS us", "sparse24 us", "TFLOP/s", "GB/s", "rel err"]
               + [f"{t} x" for _, _, t in series])
    lines = []
    for (n, k, m), rows in by_point.items():
        s, c = rows.get(("sparse24", "eager"), {}), rows.get(("cublas", "eager"), {})
        lines.append([f"{n}x{k}", str(m), common.fmt_us(c.get("ms")), common.fmt_us(s.get("ms")),
                      common.fmt(s.get("tflops"), 0), common.fmt(s.get("gbps"), 0),
                      "-" if s.get("rel_err") is None else f"{s['rel_err']:.1e}"]
                     + [cell(rows, b, md) for b, md, _ in series])
        if ("sparse24+bias+gelu", "eager") in rows:
            s, c = rows[("sparse24+bias+gelu", "eager")], rows.get(("cublas+bias+gelu", "eager"), {})
            extra = [cell(rows, "sparse24+bias+gelu", "graph")] if "graph" in modes else []
            pad = len(series) - 1 - len(extra)
            lines.append([f"{n}x{k} +bias+gelu", str(m), common.fmt_us(c.get("ms")),
                          common.fmt_us(s.get("ms")), common.fmt(s.get("tflops"), 0),
                          common.fmt(s.get("gbps"), 0),
                          "-" if s.get("rel_err") is None else f"{s['rel_err']:.1e}",
                          cell(rows, "sparse24+bias+gelu", "eager")] + extra + ["-"] * pad)
    return headers, lines


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a few points: " + ", ".join(f"{n}x{k} M={ms}" for (n, k), ms in QUICK.items()))
    parser.add_argument("--shapes", type=common.parse_shapes, default=None,
                        help="comma list of NxK (out x in features), or 'bert' / 'llm'")
    parser.add_argument("--m", type=common.parse_int_list, default=None,
                        help="comma list of M for every shape (default: 1, 16, 64 and 384 x "
                             "{1,4,16,64,256} for BERT shapes, {1,16,32,64,256,1024,4096} for LLM "
                             "shapes)")
    parser.add_argument("--dtype", type=common.parse_dtype, default=torch.float16,
                        help="float16 (default) or bfloat16")
    parser.add_argument("--modes", default="eager,graph", help="timing modes (default eager,graph)")
    parser.add_argument("--rep-ms", type=float, default=40, help="timed milliseconds per eager measurement")
    parser.add_argument("--no-plot", action="store_true", help="skip drawing gemm_speedup.png")
    args = parser.parse_args(argv)
    if args.dtype not in TOLERANCE:
        parser.error("--dtype must be float16 or bfloat16 (the sparse tensor cores' 16-bit types)")
    modes = [m for m in args.modes.split(",") if m]
    if not set(modes) <= {"eager", "graph"}:
        parser.error(f"--modes takes eager and/or graph, got {args.modes!r}")
    common.require_cuda("python -m bench.gemm")

    if args.shapes:
        plan = [(s, args.m or default_ms(s)) for s in args.shapes]
    elif args.quick:
        plan = [(s, args.m or ms) for s, ms in QUICK.items()]
    else:
        plan = [(s, args.m or default_ms(s)) for s in BERT_SHAPES + LLM_SHAPES]

    env = common.env_record()
    rec = common.Recorder(BENCH, args.out_dir, env)
    l2 = common.l2_bytes()
    npoints = sum(len(ms) for _, ms in plan)
    common.progress(f"[gemm] {common.env_line(env)}; {npoints} points, {common.dtype_name(args.dtype)}, "
                    f"modes {modes}, L2 {l2 >> 20} MiB")

    all_rows: list[dict] = []
    for (n, k), ms in plan:
        model = "bert" if (n, k) in BERT_SHAPES else "llm" if (n, k) in LLM_SHAPES else "custom"
        for m in ms:
            point = make_point(m, n, k, args.dtype, l2)
            rows = run_point(point, modes, args.rep_ms, epilogue=(n, k) == EPILOGUE_SHAPE)
            for r in rows:
                r = rec.add({"shape": f"{n}x{k}", "model": model, "n": n, "k": k, "m": m,
                             "dtype": common.dtype_name(args.dtype), **r})
                all_rows.append(r)
                common.progress(
                    f"[gemm] {n:>5}x{k:<5} M={m:<6} {r['backend']:<18} {r['mode']:<5} "
                    f"{r['status']:<11} {common.fmt_us(r['ms']):>8} us "
                    f"{common.fmt(r['tflops'], 0):>5} TFLOP/s  x{common.fmt(r['speedup'])}"
                    + (f"  ({r['error']})" if r["error"] else ""))
            del point, rows
            torch.cuda.empty_cache()

    headers, lines = table(all_rows, modes)
    notes = [
        "x = speedup over cuBLAS (F.linear on the dense pruned weight) timed the same way in this "
        "run: eager columns against eager cuBLAS, graph columns against cuBLAS in a CUDA graph.",
        "TFLOP/s counts 2*M*N*K; GB/s counts x + packed weight (values + metadata) + y.",
        "eager: triton do_bench median, L2 flushed before each call; graph: do_bench_cudagraph "
        "median, operands rotated through enough copies to exceed the L2.",
        "+bias+gelu rows: sparse24 with its fused bias + erf-GELU epilogue against F.linear "
        "with bias followed by F.gelu.",
        f"rel err: ||y - F.linear(x, decompress(w))||_F / ||.||_F; tolerance "
        f"{TOLERANCE[args.dtype]:.0e}; a backend above it is WRONG and not timed.",
    ]
    if not any(r["backend"] == "torch24_cutlass" and r["status"] == "ok" for r in all_rows):
        why = next((r["error"] for r in all_rows if r["backend"] == "torch24_cutlass"), None)
        notes.append(f"torch 2:4 CUTLASS backend did not run here: {why}")
    _, text = common.write_markdown(args.out_dir, BENCH, "sparse24 2:4 GEMM vs dense and torch 2:4",
                                    env, rec.run_id, headers, lines, notes)
    if not args.no_plot:
        try:
            from bench import plot_gemm

            png = plot_gemm.plot(all_rows, args.out_dir / "gemm_speedup.png")
            common.progress(f"[gemm] wrote {png}")
        except Exception as exc:  # noqa: BLE001 - the table matters more than the picture
            common.progress(f"[gemm] no plot: {common.error_text(exc)}")
    print("\n" + text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
