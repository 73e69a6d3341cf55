"""Dense against sparse24 BERT-base, timed in turns in one process: the small-batch ratios, with spread.

At batch 4 and 16 both models are host-bound in eager and default-mode compile, and the lent
H200's host varies run to run by up to 2x (bench/NOTES.md, BERT item 7). bench/bert.py times all
dense rows, then all sparse24 rows, so a slow spell of the host lands on one model only. Here
each round times dense, then sparse24, at each batch size and mode; the ratio per round and their
median and range tell a real difference from noise. No profiler runs in this process (a profiled
process launches slower: pytorch/pytorch#144455).

    python -m bench.diag.ab_interleaved [--batch-sizes 4,16] [--modes eager,default,reduce-overhead]
                                        [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from bench import bert, common


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="4,16")
    parser.add_argument("--modes", default="eager,default,reduce-overhead")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--min-run-time", type=float, default=0.3)
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    args = parser.parse_args()
    common.require_cuda("python -m bench.diag.ab_interleaved")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    torch.set_grad_enabled(False)
    print(f"{common.env_line(common.env_record())} · {args.dtype} seq 384, "
          f"{args.rounds} rounds of {args.min_run_time} s per row", flush=True)
    dense = bert.build_dense(dtype=getattr(torch, args.dtype))
    sparse = bert.build_sparse24(dense)[0]
    batches = bert.make_batches(batch_sizes, 384)
    for mode in args.modes.split(","):
        torch._dynamo.reset()
        # both compiled into one dynamo cache (no reset between them): each call's guards pick
        # its model
        fns = {name: bert.compile_for(model, mode, fresh=False)
               for name, model in (("dense", dense), ("sparse24", sparse))}
        with torch.inference_mode():
            for bs in batch_sizes:
                for fn in fns.values():
                    for _ in range(3):
                        fn(**batches[bs])
                ms = {name: [] for name in fns}
                for _ in range(args.rounds):
                    for name, fn in fns.items():
                        ms[name].append(bert.time_tutorial(fn, batches[bs], args.min_run_time))
                ratios = [d / s for d, s in zip(ms["dense"], ms["sparse24"])]
                print(f"{mode:<15} bs={bs:<3} dense {statistics.median(ms['dense']):6.2f} ms "
                      f"[{min(ms['dense']):.2f}-{max(ms['dense']):.2f}]  sparse24 "
                      f"{statistics.median(ms['sparse24']):6.2f} ms "
                      f"[{min(ms['sparse24']):.2f}-{max(ms['sparse24']):.2f}]  speedup median "
                      f"{statistics.median(ratios):.2f}x, rounds {min(ratios):.2f}-{max(ratios):.2f}x",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
