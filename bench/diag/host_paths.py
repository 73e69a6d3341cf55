"""Where BERT-base's host time goes, per mode: cProfile of sparse24 forwards, eager and compiled.

bench/bert.py measured sparse24's compiled (default mode) BERT at 29.7 ms per batch of 4 against
18.5 ms eager (4e31f5f, H200), about 360 us of host time per sparse GEMM under inductor against
130 us eager. This prints, for each mode, the time per forward and the functions that take the
host's time (cProfile, tottime and cumtime), so the slow layer is found rather than guessed.

    python -m bench.diag.host_paths [--batch-size 4] [--iters 20] [--modes eager,default]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time

import torch

from bench import bert, common


def per_call_ms(fn, batch, iters: int) -> float:
    for _ in range(3):
        fn(**batch)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn(**batch)
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters * 1e3


def profile(fn, batch, iters: int, rows: int = 28) -> str:
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(iters):
        fn(**batch)
    torch.cuda.synchronize()
    prof.disable()
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text)
    stats.sort_stats("tottime").print_stats(rows)
    stats.sort_stats("cumtime").print_stats(rows)
    return text.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--modes", default="eager,default")
    parser.add_argument("--variants", default="dense,sparse24")
    args = parser.parse_args()
    common.require_cuda("python -m bench.diag.host_paths")
    print(common.env_line(common.env_record()), flush=True)
    torch.set_grad_enabled(False)
    dense = bert.build_dense()
    batch = bert.make_batches([args.batch_size], 384)[args.batch_size]
    for variant in args.variants.split(","):
        model = dense if variant == "dense" else bert.build_sparse24(dense)[0]
        for mode in args.modes.split(","):
            fn = bert.compile_for(model, mode)
            with torch.inference_mode():
                fn(**batch)
                ms = per_call_ms(fn, batch, args.iters)
                print(f"=== {variant} {mode} bs {args.batch_size}: {ms:.2f} ms per forward", flush=True)
                if variant != "dense":
                    print(profile(fn, batch, max(3, args.iters // 4)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
