"""Where a few-token GEMM's time goes, by fitting time = fixed + bytes / rate (issue 25).

At 1-64 tokens a GEMM streams its weight. A kernel that takes longer than bytes / copy bandwidth
either streams slower (a lower marginal rate) or pays a fixed cost per call (launch, pipeline
fill, the last wave, the epilogue). Timing one shape cannot tell the two apart; timing the same
N at several K can: a least-squares line through (bytes, time) has the fixed cost as its
intercept and the streaming rate as its inverse slope. Each line is fitted twice, over every K
and without the largest: where the two disagree, the path's rate is not constant over K and its
intercept is not a fixed cost.

Three paths, each in CUDA graphs (rotating inputs, so nothing stays in the L2), same run:
sparse24 ``linear`` (its own config), cuBLAS dense ``F.linear``, and a device-to-device copy
reading the same bytes as sparse24's weight (the card's copy rate, counted as bytes read + written).

    python -m bench.diag.stream_rate [--tokens 1,16,64] [--n 14336] [--ks 1024,2048,4096,8192,16384]

Prints a table and writes ``stream_rate.jsonl`` (one line per path and token count, with every
point) to --out-dir.
"""

from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F

from bench import common


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares intercept and slope of ys against xs."""
    line = statistics.linear_regression(xs, ys)
    return line.intercept, line.slope


def sparse_case(m: int, n: int, k: int, dtype: torch.dtype, l2: int):
    import sparse24.ops as ops
    from sparse24.reference import packed_bytes

    el = torch.tensor([], dtype=dtype).element_size()
    weight_bytes = packed_bytes(n, k, el)
    sets = []
    for _ in range(common.rotation_count(weight_bytes + (m * k + m * n) * el, l2)):
        values, meta = ops.compress(ops.prune_24(torch.randn(n, k, device="cuda", dtype=dtype)))
        sets.append((torch.randn(m, k, device="cuda", dtype=dtype), values, meta))
    x, values, meta = sets[0]
    want = F.linear(x.float(), ops.decompress(values, meta).float())
    err = common.rel_fro_error(ops.linear(x, values, meta), want)
    if not err < 2e-3:
        raise RuntimeError(f"sparse24 linear wrong at {m}x{n}x{k}: rel err {err:.1e}")
    return common.Rotating(ops.linear, sets), weight_bytes


def dense_case(m: int, n: int, k: int, dtype: torch.dtype, l2: int):
    el = torch.tensor([], dtype=dtype).element_size()
    weight_bytes = n * k * el
    sets = [(torch.randn(m, k, device="cuda", dtype=dtype),
             torch.randn(n, k, device="cuda", dtype=dtype))
            for _ in range(common.rotation_count(weight_bytes, l2))]
    return common.Rotating(F.linear, sets), weight_bytes


def copy_case(nbytes: int, l2: int):
    sets = [(torch.empty(nbytes, device="cuda", dtype=torch.uint8),
             torch.randint(0, 255, (nbytes,), device="cuda", dtype=torch.uint8))
            for _ in range(common.rotation_count(2 * nbytes, l2))]
    return common.Rotating(torch.Tensor.copy_, sets), 2 * nbytes


def main() -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=common.parse_int_list, default=[1, 16, 64])
    parser.add_argument("--n", type=int, default=14336)
    parser.add_argument("--ks", type=common.parse_int_list, default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--dtype", default="float16")
    args = parser.parse_args()
    common.require_cuda("python -m bench.diag.stream_rate")
    dtype, l2 = common.parse_dtype(args.dtype), common.l2_bytes()
    env, run_id = common.env_record(), common.new_run_id()
    print(common.env_line(env), "· run", run_id, flush=True)

    def measure(label, make):
        points = []
        for k in args.ks:
            fn, nbytes = make(k)
            points.append((nbytes, common.time_graph(fn).ms * 1e3, k))
            del fn
            torch.cuda.empty_cache()
        fixed_us, us_per_byte = fit_line([p[0] for p in points], [p[1] for p in points])
        worst = max(abs(t - fixed_us - b * us_per_byte) for b, t, _ in points)
        # the same line without the largest K: a kernel whose rate changes at the largest size
        # (cuBLAS's did at K = 16384, session 14) bends the full fit's intercept by ~3 us
        fixed_short, per_byte_short = fit_line([p[0] for p in points[:-1]],
                                               [p[1] for p in points[:-1]])
        row = {"path": label, "n": args.n, "dtype": args.dtype, "fixed_us": fixed_us,
               "rate_tbps": 1e-6 / us_per_byte, "worst_residual_us": worst,
               "fixed_us_without_largest_k": fixed_short,
               "rate_tbps_without_largest_k": 1e-6 / per_byte_short,
               "points": [{"k": k, "bytes": b, "us": t, "tbps": b / t / 1e6} for b, t, k in points],
               "run_id": run_id, "env": env}
        common.append_jsonl(args.out_dir / "stream_rate.jsonl", [row])
        pts = " ".join(f"K{k}:{t:.1f}us/{b / t / 1e6:.2f}" for b, t, k in points)
        print(f"{label:<22} fixed {fixed_us:6.2f} us  rate {row['rate_tbps']:.2f} TB/s  "
              f"(worst residual {worst:.2f} us; without the largest K: {fixed_short:.2f} us, "
              f"{1e-6 / per_byte_short:.2f} TB/s)  {pts}", flush=True)

    from sparse24.reference import packed_bytes

    el = torch.tensor([], dtype=dtype).element_size()
    measure("copy (read+write)", lambda k: copy_case(packed_bytes(args.n, k, el), l2))
    for m in args.tokens:
        measure(f"sparse24 M={m}", lambda k, m=m: sparse_case(m, args.n, k, dtype, l2))
        measure(f"cuBLAS dense M={m}", lambda k, m=m: dense_case(m, args.n, k, dtype, l2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
