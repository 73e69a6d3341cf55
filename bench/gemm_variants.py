"""Time every candidate config of sparse24.ops.linear on a few shapes, against cuBLAS in the same run.

Exploration tool for choosing tile shapes and shipped defaults, through the tuner's own loop
(sparse24.tuning.autotune) with this script's timers: each config is first checked against F.linear
on the decompressed weight, a wrong one is reported and never timed. Prints the fastest configs per
shape; appends one JSON line per config (with the environment record) to --out, the input of
python -m bench.make_defaults.

    python -m bench.gemm_variants [--shapes 24576x3072x768,...] [--family mma|dot|wgmma]
                                  [--top 5] [--mode eager|graph] [--min-tile-tokens 128]
                                  [--asm-loop] [--split-k] [--split-ks 2,4,8] [--meta-ring]
                                  [--with-heuristic] [--every-tile] [--groups 1,4,8,16]
                                  [--only BLOCK_F=128,SPLIT_K=2/4]

--asm-loop adds, beside each sm90 config, its forms with the whole k-loop in one asm statement
(ASM_LOOP 1, 2, 4: wgmma groups kept in flight, drained every 1, 2 or 4 k-blocks;
sparse24/ops/wgmma_asm.py), and the summary gives the best of each form: ASM_LOOP 1 against the
Gluon loop is the asm loop's own cost or gain, 2 and 4 against 1 the groups in flight. Every form
is checked before it is timed. --split-k adds the sm90 configs that split K (SPLIT_K 2, 4, 8, or
--split-ks, where the tiles are fewer than four waves): the A/B of split-K for few-tile shapes.
--meta-ring adds, beside each sm90 Gluon-loop config of those pools, its META_RING form (the
k-block's metadata copied into the ring with the operands instead of loaded by each thread in the
k-loop; the default pool has them, as the tuner's does); the summary's last column is its best. --family wgmma offers the sm90 family below its token rule too (the few-token tiles, BT 8-32), and
--with-heuristic adds the config linear runs untuned, past every filter: the baseline of an A/B.

eager: do_bench, L2 flushed before each call; the time includes any host gap between the two
launches of a split-K config (its reduction). graph: the calls captured in a CUDA graph, operands
rotated through enough copies to exceed the L2: GPU time only, the measure for choosing kernels.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton.testing

import sparse24.ops as ops
from bench import common
from sparse24 import tuning
from sparse24.ops import configs, gemm, wgmma

DEFAULT_SHAPES = "24576x3072x768,24576x768x3072,6144x768x768,1536x3072x768,16x4096x4096,64x11008x4096"


# what a config without the field runs as (the launchers' defaults)
FIELD_DEFAULTS = {"A_TILE": 1, "SPLIT_K": 1, "FUSED_REDUCE": 0, "ASM_LOOP": 0, "MAXNREG": 0,
                  "META_AHEAD": 1, "META_RING": 0, "BLOCK_F": 128}  # BLOCK_F: an sm90 config's


def parse_only(text: str) -> dict[str, set[int]]:
    """"BLOCK_F=128,SPLIT_K=2/4" -> {"BLOCK_F": {128}, "SPLIT_K": {2, 4}} (MAXNREG=0: no cap)."""
    only = {}
    for item in filter(None, text.replace(" ", "").split(",")):
        try:
            name, values = item.split("=")
            only[name] = {int(v) for v in values.split("/")}
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} is not FIELD=V1/V2/...") from None
    return only


def kept(cfg: dict, only: dict[str, set[int]]) -> bool:
    return all(cfg.get(name, FIELD_DEFAULTS.get(name)) in values for name, values in only.items())


def with_groups(cands: list[dict], groups: tuple[int, ...]) -> list[dict]:
    """The tile order's A/B: each sm90 config once per GROUP of ``groups`` (the others as they
    are); no groups, the configs unchanged."""
    if not groups:
        return cands
    return [cfg | {"GROUP": g} if cfg["family"] == "wgmma" else cfg
            for cfg in cands for g in groups]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="MxNxK list")
    parser.add_argument("--family", choices=["mma", "dot", "wgmma", "all"], default="all")
    parser.add_argument("--asm-loop", action="store_true",
                        help="also time the sm90 configs' asm k-loop forms (ASM_LOOP 1, 2, 4)")
    parser.add_argument("--split-k", action="store_true",
                        help="also time the sm90 configs that split K (SPLIT_K 2, 4, 8)")
    parser.add_argument("--split-ks", type=lambda t: tuple(int(v) for v in t.split(",")),
                        default=wgmma.SPLIT_KS, help="the splits --split-k offers (default 2,4,8)")
    parser.add_argument("--meta-ring", action="store_true",
                        help="with --asm-loop / --split-k: also their META_RING forms (metadata "
                        "through the ring; the default pool has them)")
    parser.add_argument("--every-tile", action="store_true",
                        help="with --meta-ring/--split-k/--asm-loop: offer the sm90 token tiles of "
                             "8-32 at any token count (more programs where the large tiles are few)")
    parser.add_argument("--block-f-256", action="store_true",
                        help="also time the sm90 tiles of 256 features (BLOCK_F 256: two bands a "
                             "warpgroup)")
    parser.add_argument("--configs", type=json.loads, default=None,
                        help="time these configs (a JSON list; each checked first) instead of a "
                             "family's pool, e.g. '[{\"family\": \"wgmma\", \"BT\": 256, "
                             "\"STAGES\": 2, \"GROUP\": 4, \"META_AHEAD\": 2}]'")
    parser.add_argument("--with-heuristic", action="store_true",
                        help="also time the config linear runs untuned (the A/B's baseline)")
    parser.add_argument("--only", type=parse_only, default={},
                        help="keep configs whose fields take these values, e.g. "
                             "BLOCK_F=128,SPLIT_K=2/4/8 (a field a config lacks takes its default)")
    parser.add_argument("--groups", type=lambda t: tuple(int(v) for v in t.split(",")), default=(),
                        help="time each sm90 config with each of these GROUP values (token tiles "
                             "per feature tile in the persistent grid's tile order; default: as the "
                             "pool offers them, wgmma.tile_group's)")
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--min-tile-tokens", type=int, default=0,
                        help="skip configs whose token tile (BLOCK_M or BLOCK_T) is smaller")
    parser.add_argument("--mode", choices=["eager", "graph", "auto"], default="eager",
                        help="auto: graph up to 128 tokens (split-K configs launch twice), else eager")
    parser.add_argument("--out", type=Path,
                        default=Path(os.environ.get("OUT") or common.DEFAULT_OUT_DIR) / "gemm_variants.jsonl",
                        help="JSON lines, appended (default: $OUT or bench/results/<device>)")
    args = parser.parse_args()
    if args.every_tile and not (args.meta_ring or args.split_k or args.asm_loop):
        parser.error("--every-tile widens the pools of --meta-ring, --split-k and --asm-loop: "
                     "give one of them")
    if args.configs is not None:
        bad = [cfg for cfg in args.configs if not configs.well_formed(cfg)]
        if bad:
            parser.error(f"--configs: not a config sparse24 can run: {bad}")
    common.require_cuda("python -m bench.gemm_variants")
    env, run_id = common.env_record(), common.new_run_id()
    device = torch.device("cuda")
    gpu = torch.cuda.get_device_name()
    summary = []
    for shape in args.shapes.split(","):
        m, n, k = (int(v) for v in shape.split("x"))
        torch.manual_seed(0)
        w = ops.prune_24(torch.randn(n, k, dtype=torch.float16, device=device))
        values, meta = ops.compress(w)
        x = torch.randn(m, k, dtype=torch.float16, device=device)
        expected = F.linear(x.float(), w.float())
        mode = args.mode if args.mode != "auto" else ("graph" if m <= 128 else "eager")
        if mode == "graph":
            sets = common.rotation_count(x.nbytes + values.nbytes + meta.nbytes + 2 * m * n,
                                         common.l2_bytes())
            copies = [(x.clone(), w.clone(), values.clone(), meta.clone()) for _ in range(sets)]

            def timed(fn):
                rot = common.Rotating(fn, copies)
                return common.time_graph(rot, rep_ms=20).ms

            dense_ms = timed(lambda x, w, v, e: F.linear(x, w))
        else:
            def timed(fn):
                return triton.testing.do_bench(lambda: fn(x, w, values, meta), warmup=10, rep=40,
                                               return_mode="median")

            dense_ms = triton.testing.do_bench(lambda: F.linear(x, w), warmup=25, rep=100,
                                               return_mode="median")
        flops = 2.0 * m * n * k
        side = gemm.uses_wgmma(m, device)
        block_fs = (128, 256) if args.block_f_256 else (128,)
        if args.configs is not None:
            pool = list(args.configs)
        elif (side or args.family == "wgmma") and (args.asm_loop or args.split_k or args.meta_ring):
            pool = wgmma.candidates(m, n, k, asm_loops=(0, *wgmma.ASM_LOOPS) if args.asm_loop else (0,),
                                    split_ks=(1, *args.split_ks) if args.split_k else (1,),
                                    meta_ring=args.meta_ring, every_tile=args.every_tile,
                                    block_fs=block_fs)
        elif args.family == "wgmma":  # the sm90 family below its token rule too (few-token tiles)
            pool = wgmma.candidates(m, n, k, block_fs=block_fs)
        else:
            pool = configs.candidates(m, n, k, on_gpu=True, wgmma_side=side,
                                      sm90=wgmma.supported(device.index or 0))
            if side and args.block_f_256:
                pool += [c for c in wgmma.candidates(m, n, k, block_fs=(256,)) if "BLOCK_F" in c]
        if args.with_heuristic:  # the config linear runs untuned, whatever the filters
            pool = [dict(gemm.heuristic_config(m, n, k, device))] + pool
        cands = [cfg for i, cfg in enumerate(pool) if (args.with_heuristic and i == 0) or (
                 args.family in ("all", cfg["family"])
                 and cfg.get("BLOCK_M", cfg.get("BLOCK_T", cfg.get("BT"))) >= args.min_tile_tokens
                 and kept(cfg, args.only))]
        cands = with_groups(cands, args.groups)
        cands = list({json.dumps(cfg, sort_keys=True): cfg for cfg in cands}.values())
        errs = {}

        def check(cfg):
            y = gemm.run_config(x, values, meta, None, 0, cfg)
            errs[json.dumps(cfg)] = err = ((y.float() - expected).norm() / expected.norm()).item()
            return None if err < 2e-3 else f"WRONG rel err {err:.2e}"

        def timer(fn):
            cfg = fn()  # run (below) hands back its config, so that timed() rotates the operands
            return timed(lambda x, w, v, e: gemm.run_config(x, v, e, None, 0, cfg))

        # The tuner's own loop: every config checked first, a wrong one never timed.
        key = tuning.TuningKey(gpu, tuning.triton_version(), "float16", n, k, tuning.m_bucket(m))
        try:
            result = tuning.autotune(key, cands, run=lambda cfg: cfg, check=check, timer=timer,
                                     progress=False, store=False)
            timings, rejected = result.timings, result.rejected
        except tuning.NoValidConfigError as exc:
            timings, rejected = [], exc.rejected
        rows = [{"cfg": cfg, "ms": ms, "err": errs[json.dumps(cfg)]} for cfg, ms in timings]
        rows += [{"cfg": r.config, "error": r.reason} for r in rejected]
        common.append_jsonl(args.out, [
            {"bench": "gemm_variants", "run_id": run_id, "gpu": gpu, "triton": key.triton,
             "dtype": "float16", "mode": mode, "m": m, "n": n, "k": k, "dense_ms": dense_ms, **row,
             "env": env} for row in rows])
        ok = sorted((r for r in rows if "ms" in r), key=lambda r: r["ms"])
        bad = [r for r in rows if "error" in r]
        print(f"\n{shape}: cuBLAS {dense_ms * 1e3:.1f} us ({flops / dense_ms / 1e9:.0f} TFLOP/s); "
              f"{len(ok)} configs ok, {len(bad)} failed", flush=True)
        for r in bad[:3]:
            print("   FAILED", r["cfg"], r["error"], flush=True)
        for r in ok[: args.top]:
            print(f"   {dense_ms / r['ms']:.2f}x  {r['ms'] * 1e3:8.1f} us  {flops / r['ms'] / 1e9:6.0f} TFLOP/s  {r['cfg']}", flush=True)
        def best(family, asm_loop=None, split=False, meta_ring=0, block_f=128):
            return next((r for r in ok if r["cfg"]["family"] == family and (
                asm_loop is None or r["cfg"].get("ASM_LOOP", 0) == asm_loop)
                and (split is None or (r["cfg"].get("SPLIT_K", 1) > 1) == split)
                and (family != "wgmma" or (r["cfg"].get("META_RING", 0) == meta_ring
                                           and r["cfg"].get("BLOCK_F", 128) == block_f))), None)

        summary.append((shape, dense_ms, best("mma", split=None), best("dot", split=None),
                        best("wgmma", 0), *(best("wgmma", d) for d in wgmma.ASM_LOOPS),
                        best("wgmma", split=True), best("wgmma", 0, split=None, meta_ring=1),
                        best("wgmma", 0, block_f=256)))

    def cell(r, dense_ms):
        return "-" if r is None else f"{dense_ms / r['ms']:.2f}x ({r['ms'] * 1e3:.1f} us)"

    print("\n" + common.markdown_table(
        ["M x N x K", "cuBLAS us", "best mma.sp", "best dot", "best wgmma.sp",
         *(f"best wgmma.sp ASM_LOOP {d}" for d in wgmma.ASM_LOOPS), "best wgmma.sp split-K",
         "best wgmma.sp META_RING", "best wgmma.sp BLOCK_F 256"],
        [[shape, f"{dense_ms * 1e3:.1f}", *(cell(r, dense_ms) for r in bests)]
         for shape, dense_ms, *bests in summary]))
    print(f"appended to {args.out} (run {run_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
