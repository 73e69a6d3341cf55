"""Which mma configs are wrong on tiny problems (found 2026-11-21: 128x64 weight, M=24, rel err 0.3).

Runs the mma kernel directly, bypassing the host's config checks, on weights of 1-4 chunks of 64
columns, with the chunk count per program passed either as the true count (Triton specializes
the value 1 into a constant) or as a larger value (a runtime loop bound: the loop clamps to K).
For each wrong case it prints where the errors sit inside the 16 x 8 mma tiles (feature % 16,
token % 8) and which feature blocks, to tell a fragment-layout fault from a missing chunk.
bench/NOTES.md, session 2, item 5 and session 3.
"""
import itertools

import torch

import sparse24.ops as ops
from sparse24 import reference as ref
from sparse24.ops import gemm


def run_mma(x, values, meta, cfg, per_split):
    m, k = x.shape
    n = values.shape[0]
    y = torch.full((m, n), float("nan"), dtype=x.dtype, device=x.device)
    grid = (gemm._cdiv(m, cfg["BLOCK_T"]) * (n // cfg["BLOCK_F"]), 1, 1)
    gemm._mma_launch(
        grid, (x.view(torch.int32), values.data_ptr(), meta.data_ptr(), y, y, y, m, n, k,
               x.stride(0) // 2, y.stride(0), per_split),
        (cfg["BLOCK_F"], cfg["BLOCK_T"], 8, cfg["PREFETCH"], 1, False, 0, False),
        num_warps=cfg["num_warps"], num_stages=1)
    return y


def where_wrong(got, want):
    """(features % 16, tokens % 8, feature blocks of 64) holding an element off by > 1e-2 rel."""
    bad = ((got - want).abs() > 1e-2 * want.abs().max()) | got.isnan()
    tokens, features = bad.nonzero(as_tuple=True)
    return (sorted(set((features % 16).tolist())), sorted(set((tokens % 8).tolist())),
            sorted(set((features // 64).tolist())), int(bad.sum()), bad.numel())


torch.manual_seed(0)
rows = []
for (n, k), m in itertools.product([(64, 64), (128, 64), (256, 64), (128, 128), (128, 192), (128, 256)],
                                   [24, 40]):
    w = ops.prune_24(torch.randn(n, k, dtype=torch.float16, device="cuda"))
    v, e = ops.compress(w)
    x = torch.randn(m, k, dtype=torch.float16, device="cuda")
    want = ref.linear_ref(x.double().cpu(), v.double().cpu(), e.cpu(), None, None)
    chunks = k // 64
    for bf, bt, pf, nw, loose in itertools.product((64, 128), (16, 32), (0, 1, 2), (4,), (False, True)):
        if n % bf:
            continue
        cfg = {"BLOCK_F": bf, "BLOCK_T": bt, "PREFETCH": pf, "num_warps": nw}
        got = run_mma(x, v, e, cfg, chunks + 3 if loose else chunks).double().cpu()
        err = float((got - want).norm() / want.norm())
        rows.append((n, k, m, bf, bt, pf, nw, loose, err))
        if not err < 2e-3:
            print("BAD", n, k, m, cfg, "loose" if loose else "exact", round(err, 3), where_wrong(got, want),
                  flush=True)
print("n k m | BLOCK_F BLOCK_T PREFETCH warps loose | err")
for row in rows:
    print(*row[:-1], f"{row[-1]:.2e}")
print("bad", sum(not r[-1] < 2e-3 for r in rows), "of", len(rows))
