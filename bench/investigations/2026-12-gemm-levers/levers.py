"""One lever at a time: its variants timed side by side in one run, against cuBLAS, each checked first.

Every variant runs through sparse24.ops.gemm.run_config with an explicit config, in CUDA graphs,
operands rotated through enough copies to exceed the L2 (common.Rotating); before timing, its
output (poisoned with NaN) is compared with F.linear on the dense pruned weight, and a variant
above the tolerance is reported WRONG and not timed. Levers:

  mma-a-tile  the mma family's A operand at 1-64 tokens (LLM shapes): four 4-byte asm loads per
              lane straight into the mma layout (A_TILE 0) or coalesced 16-byte loads of a
              [features, 8 words] tile rearranged through shared memory (A_TILE 1), each on the
              heuristic's config and its neighbours in split-K;
  wgmma-tile  the sm90 token tile (64, 128, 256) at 256-6144 tokens, next to the heuristic's pick;
  gelu        the sm90 epilogue's erf-GELU in its current form against libdevice's erf (the form
              of commit 6cfd617), 3072 x 768 with bias; "--variant libdevice-erf" runs the old
              form in a child process that patches the kernel's _activate before it compiles.

    python -m bench.investigations.2026-12-gemm-levers.levers LEVER [LEVER ...] [--out-dir DIR]

One JSON line per measurement in <out-dir>/levers.jsonl with the environment record.
"""

from __future__ import annotations

import subprocess
import sys

import torch
import torch.nn.functional as F

from bench import common
from sparse24.reference import REL_TOL as TOLERANCE

LLM_SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (14336, 4096)]


def _problem(m, n, k, dtype, has_bias, gen):
    from sparse24 import ops

    w = ops.prune_24(torch.randn(n, k, device="cuda", generator=gen).to(dtype))
    values, meta = ops.compress(w)
    bias = torch.randn(n, device="cuda", generator=gen).to(dtype) if has_bias else None
    # scaled so pre-activations are O(1), where GELU bends
    x = (torch.randn(m, k, device="cuda", generator=gen) / k ** 0.5).to(dtype)
    return w, values, meta, bias, x


def _measure(m, n, k, dtype, variants, activation=None, has_bias=False, seed=0):
    """{label: Timing or 'WRONG ...'} for each (label, config) and 'cuBLAS' (with its epilogue)."""
    from sparse24.activations import EPILOGUE_CODES
    from sparse24.ops import gemm

    gen = torch.Generator(device="cuda").manual_seed(seed)
    w, values, meta, bias, x = _problem(m, n, k, dtype, has_bias, gen)
    act = EPILOGUE_CODES[activation]
    ref = F.linear(x.float(), w.float(), None if bias is None else bias.float())
    if activation == "gelu":
        ref = F.gelu(ref)
    sets = common.rotation_count(x.nbytes + values.nbytes + meta.nbytes + 2 * m * n,
                                 common.l2_bytes())
    copies = [(x.clone(), values.clone(), meta.clone()) for _ in range(sets)]
    dense = [(xc, w.clone()) for xc, _, _ in copies]

    def cublas(xc, wc):
        y = F.linear(xc, wc, bias)
        return F.gelu(y) if activation == "gelu" else y

    results = {"cuBLAS": common.time_graph(common.Rotating(cublas, dense))}
    for label, cfg in variants:
        out = torch.full((m, n), float("nan"), dtype=dtype, device="cuda")
        y = gemm.run_config(x, values, meta, bias, act, cfg, out=out)
        err = common.rel_fro_error(y, ref)
        if not err < TOLERANCE[dtype]:
            results[label] = f"WRONG rel err {err:.2e}"
            continue
        results[label] = common.time_graph(common.Rotating(
            lambda xc, vc, mc, cfg=cfg: gemm.run_config(xc, vc, mc, bias, act, cfg), copies))
        results[label].rel_err = err
    return results


def _report(recorder, lever, shape, dtype, results):
    base = results["cuBLAS"].ms
    line = [f"{lever:10s} {shape[0]:6d}x{shape[1]:5d}x{shape[2]:5d} cuBLAS {base * 1e3:7.1f} us"]
    for label, res in results.items():
        if label == "cuBLAS":
            continue
        if isinstance(res, str):
            line.append(f"{label} {res}")
            recorder.add(dict(lever=lever, m=shape[0], n=shape[1], k=shape[2], variant=label,
                              dtype=common.dtype_name(dtype), wrong=res))
            continue
        line.append(f"{label} {res.ms * 1e3:.1f} us x{base / res.ms:.2f}")
        recorder.add(dict(lever=lever, m=shape[0], n=shape[1], k=shape[2], variant=label,
                          dtype=common.dtype_name(dtype), ms=res.ms, p20_ms=res.p20_ms,
                          p80_ms=res.p80_ms, cublas_ms=base, vs_cublas=base / res.ms,
                          rel_err=res.rel_err))
    common.progress(" | ".join(line))


def lever_mma_a_tile(recorder, dtype):
    from sparse24.ops import gemm

    for (n, k), m in ((s, m) for s in LLM_SHAPES for m in (1, 16, 64)):
        base = dict(gemm.heuristic_config(m, n, k, torch.device("cuda", 0)))
        if base["family"] != "mma":
            continue
        variants = []
        for split in sorted({max(1, base["SPLIT_K"] // 2), base["SPLIT_K"], 2 * base["SPLIT_K"]}):
            for a_tile in (0, 1):
                variants.append((f"S{split}/A{a_tile}", {**base, "SPLIT_K": split, "A_TILE": a_tile}))
        _report(recorder, "mma-a-tile", (m, n, k), dtype, _measure(m, n, k, dtype, variants))


def lever_wgmma_tile(recorder, dtype):
    from sparse24.ops import gemm, wgmma

    shapes = [(256, n, k) for n, k in LLM_SHAPES] + [(1536, 768, 768), (1536, 3072, 768),
                                                     (6144, 768, 768), (6144, 3072, 768),
                                                     (6144, 768, 3072)]
    for m, n, k in shapes:
        pick = gemm.heuristic_config(m, n, k, torch.device("cuda", 0))
        deepest = {c["BT"]: c for c in wgmma.candidates(m, n, k)}  # ordered by stages: the last
        variants = [(f"BT{c['BT']}/S{c['STAGES']}" + ("*" if c == pick else ""), c)
                    for c in deepest.values()]
        _report(recorder, "wgmma-tile", (m, n, k), dtype, _measure(m, n, k, dtype, variants))


def lever_gelu(recorder, dtype, variant):
    from sparse24.ops import gemm

    for m in (6144, 24576, 98304):
        cfg = gemm.heuristic_config(m, 3072, 768, torch.device("cuda", 0))
        _report(recorder, "gelu", (m, 3072, 768), dtype,
                _measure(m, 3072, 768, dtype, [(f"{variant} BT{cfg['BT']}", cfg)],
                         activation="gelu", has_bias=True))


def _patch_libdevice_erf():
    """The erf-GELU of commit 6cfd617 (libdevice erf), swapped in before anything compiles."""
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl

    import sparse24.kernels.sparse_wgmma as kernel_module

    @gluon.jit
    def _activate(y, ACTIVATION: gl.constexpr):
        if ACTIVATION == 2:
            y = 0.5 * y * (1.0 + gl.erf(y * 0.7071067811865476))
        return y

    kernel_module._activate = _activate


def main(argv=None) -> int:
    parser = common.base_parser(__doc__)
    parser.add_argument("levers", nargs="+", choices=["mma-a-tile", "wgmma-tile", "gelu"])
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--variant", default="fast-erf", choices=["fast-erf", "libdevice-erf"],
                        help="gelu lever only: the epilogue form to time (libdevice-erf patches "
                             "the kernel)")
    args = parser.parse_args(argv)
    common.require_cuda("python -m bench.investigations.2026-12-gemm-levers.levers")
    if args.variant == "libdevice-erf":
        _patch_libdevice_erf()
    dtype = common.parse_dtype(args.dtype)
    env = common.env_record({"variant": args.variant})
    common.progress(common.env_line(env))
    recorder = common.Recorder("levers", args.out_dir, env)
    for lever in args.levers:
        if lever == "mma-a-tile":
            lever_mma_a_tile(recorder, dtype)
        elif lever == "wgmma-tile":
            lever_wgmma_tile(recorder, dtype)
        else:
            lever_gelu(recorder, dtype, args.variant)
            if args.variant == "fast-erf":  # the old form, same run, its own process
                child = [sys.executable, "-m", __spec__.name, "gelu", "--variant", "libdevice-erf",
                         "--dtype", args.dtype, "--out-dir", str(args.out_dir)]
                subprocess.run(child, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
