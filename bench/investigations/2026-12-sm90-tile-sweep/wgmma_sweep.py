"""Check and time every sm90 (wgmma.sp) config on the bench shapes, against cuBLAS and cuSPARSELt.

Part 1 (check): every candidate config x dtype x epilogue at odd token counts, output poisoned with
NaN first, against a float64 reference; a wrong config is listed, never timed.
Part 2 (time): CUDA-graph medians of each config next to cuBLAS (x @ W^T) and torch's 2:4 kernels
(cuSPARSELt, W @ x^T: the same work), all in this run. One JSON line per measurement in
<out-dir>/wgmma_sweep.jsonl with the environment record.

    python -m bench.investigations.2026-12-sm90-tile-sweep.wgmma_sweep [--quick] [--out-dir DIR]
"""

from __future__ import annotations

import itertools
import sys

import torch
import triton

from bench import common
from sparse24.activations import EPILOGUE_CODES as ACT_CODE
from sparse24.activations import REFERENCE
from sparse24.reference import REL_TOL as TOLERANCE

CHECK_SHAPES = [(1, 768, 768), (5, 256, 192), (333, 3072, 768), (1000, 768, 3072),
                (4097, 2304, 768), (333, 4096, 4096)]
TIME_SHAPES = [(6144, 768, 768), (24576, 768, 768), (24576, 3072, 768), (24576, 768, 3072),
               (24576, 2304, 768), (98304, 3072, 768), (1024, 4096, 4096), (4096, 4096, 4096),
               (4096, 11008, 4096), (4096, 4096, 11008), (8192, 8192, 8192)]
EPILOGUES = [(False, None), (True, "gelu"), (True, "relu"), (False, "gelu_tanh")]


def packed_weight(n: int, k: int, dtype, generator):
    """A random 2:4 weight, its natural-order values and its metadata (layout v2)."""
    from sparse24 import ops

    w = ops.prune_24(torch.randn(n, k, device="cuda", generator=generator).to(dtype))
    values, meta = ops.compress(w)
    return w, values, meta


def run(cfg, x, values, meta, bias, activation):
    from sparse24.ops import wgmma

    y = torch.full((x.shape[0], values.shape[0]), float("nan"), dtype=x.dtype, device=x.device)
    wgmma.launch(x, values, meta, bias, y, ACT_CODE[activation], cfg)
    return y


def reference(x, w, bias, activation):
    y = x.double() @ w.double().t()
    if bias is not None:
        y = y + bias.double()
    return REFERENCE[activation](y)


def check_all(recorder, quick: bool) -> set:
    from sparse24.ops import wgmma

    bad = set()
    gen = torch.Generator(device="cuda").manual_seed(0)
    shapes = CHECK_SHAPES[:3] if quick else CHECK_SHAPES
    for dtype, (m, n, k) in itertools.product((torch.float16, torch.bfloat16), shapes):
        w, values, meta = packed_weight(n, k, dtype, gen)
        # scaled so that pre-activations are O(1), where GELU and tanh bend
        x = (torch.randn(m, k, device="cuda", generator=gen) / k ** 0.5).to(dtype)
        for cfg in wgmma.candidates(max(m, 4096), n, k):
            for has_bias, act in EPILOGUES:
                bias = torch.randn(n, device="cuda", generator=gen) if has_bias else None
                try:
                    y = run(cfg, x, values, meta, bias, act)
                    torch.cuda.synchronize()
                    ref = reference(x, w, bias, act)
                    err = ((y.double() - ref).norm() / ref.norm()).item()
                    unwritten = int(torch.isnan(y).sum())
                    ok = unwritten == 0 and err < TOLERANCE[dtype]
                except Exception as exc:  # noqa: BLE001 - record and go on
                    err, unwritten, ok = None, None, False
                    common.progress(f"ERROR {cfg} {m}x{n}x{k}: {common.error_text(exc)}")
                if not ok:
                    bad.add((cfg["BT"], cfg["STAGES"]))
                recorder.add(dict(part="check", cfg=cfg, m=m, n=n, k=k, dtype=common.dtype_name(dtype),
                                  bias=has_bias, activation=act, rel_err=err, unwritten=unwritten,
                                  ok=ok))
                if not ok:
                    common.progress(f"WRONG {cfg} {common.dtype_name(dtype)} {m}x{n}x{k} "
                                    f"bias={has_bias} act={act} err={err} unwritten={unwritten}")
    return bad


def time_all(recorder, bad: set, quick: bool) -> None:
    from sparse24.ops import wgmma

    gen = torch.Generator(device="cuda").manual_seed(1)
    bench = triton.testing.do_bench_cudagraph
    shapes = TIME_SHAPES[1:3] + TIME_SHAPES[7:8] if quick else TIME_SHAPES
    for dtype, (m, n, k) in itertools.product((torch.float16, torch.bfloat16), shapes):
        w, values, meta = packed_weight(n, k, dtype, gen)
        x = torch.randn(m, k, device="cuda", generator=gen).to(dtype)
        y = torch.empty(m, n, device="cuda", dtype=dtype)
        flops = 2.0 * m * n * k
        dense_ms = bench(lambda: torch.matmul(x, w.t()), rep=100)
        try:
            wc = torch._cslt_compress(w)
            cslt_ms = bench(lambda: torch._cslt_sparse_mm(wc, x.t()), rep=100)
        except Exception as exc:  # noqa: BLE001
            cslt_ms = None
            common.progress(f"cuSPARSELt failed: {common.error_text(exc)}")
        best = None
        for cfg in wgmma.candidates(m, n, k):
            if (cfg["BT"], cfg["STAGES"]) in bad:
                continue
            ms = bench(lambda: wgmma.launch(x, values, meta, None, y, 0, cfg), rep=100)
            recorder.add(dict(part="time", cfg=cfg, m=m, n=n, k=k, dtype=common.dtype_name(dtype),
                              ms=ms, dense_ms=dense_ms, cslt_ms=cslt_ms, tflops=flops / ms / 1e9,
                              vs_cublas=dense_ms / ms, vs_cslt=cslt_ms / ms if cslt_ms else None))
            if best is None or ms < best[0]:
                best = (ms, cfg)
        ms, cfg = best
        common.progress(
            f"{common.dtype_name(dtype):8s} {m:6d}x{n:5d}x{k:5d} best BT{cfg['BT']} S{cfg['STAGES']} "
            f"{flops / ms / 1e9:6.1f} TFLOP/s  x{dense_ms / ms:.2f} cuBLAS  "
            + (f"x{cslt_ms / ms:.2f} cuSPARSELt" if cslt_ms else "cuSPARSELt n/a"))


def main(argv=None) -> int:
    parser = common.base_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="a few shapes only")
    parser.add_argument("--skip-check", action="store_true")
    args = parser.parse_args(argv)
    common.require_cuda("python -m bench.investigations.2026-12-sm90-tile-sweep.wgmma_sweep")
    env = common.env_record()
    common.progress(common.env_line(env))
    recorder = common.Recorder("wgmma_sweep", args.out_dir, env)
    bad = set() if args.skip_check else check_all(recorder, args.quick)
    common.progress(f"configs with a wrong result: {sorted(bad) or 'none'}")
    time_all(recorder, bad, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
