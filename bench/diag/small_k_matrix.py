"""Regression matrix of the mma family on tiny problems (bug found 2026-11-21: 128x64 weight, M=24,
rel err 0.3; root cause and fix in bench/NOTES.md, session 3: fixed, 0 of 264 wrong after it).

Runs every small mma config through ``sparse24.ops.gemm.run_config`` (the launcher the op and the
tuner use, so the kernel's argument list is written in one place) on weights of 1-4 chunks of 64
columns, with SPLIT_K 1, 2 and 4 where the chunks allow (1 chunk per program is the case Triton
specializes into a constant). The output is poisoned with NaN first, so an unwritten element
shows. For each wrong case it prints where the errors sit inside the 16 x 8 mma tiles
(feature % 16, token % 8) and which feature blocks, to tell a fragment-layout fault from a
missing chunk. Before the fix, the hand-built launches of this script found 16 of 264 cases wrong
(bench/results/h100/gpu_tests/small_k_matrix_58bd6a5_before_fix.txt).
"""
import itertools

import torch

import sparse24.ops as ops
from sparse24 import reference as ref
from sparse24.ops import gemm

TOLERANCE = ref.REL_TOL[torch.float16]


def run_mma(x, values, meta, cfg):
    y = torch.full((x.shape[0], values.shape[0]), float("nan"), dtype=x.dtype, device=x.device)
    return gemm.run_config(x, values, meta, None, 0, cfg, out=y)


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
    for bf, bt, pf, nw, split_k in itertools.product((64, 128), (16, 32), (0, 1, 2), (4,), (1, 2, 4)):
        cfg = {"family": "mma", "BLOCK_F": bf, "BLOCK_T": bt, "GROUP_T": 8, "PREFETCH": pf,
               "SPLIT_K": split_k, "num_warps": nw, "num_stages": 1}
        if not gemm.config_fits(cfg, n, k):  # BLOCK_F divides N, SPLIT_K at most the chunk count
            continue
        got = run_mma(x, v, e, cfg).double().cpu()
        err = float((got - want).norm() / want.norm())
        rows.append((n, k, m, bf, bt, pf, nw, split_k, err))
        if not err < TOLERANCE:
            print("BAD", n, k, m, cfg, round(err, 3), where_wrong(got, want), flush=True)
print("n k m | BLOCK_F BLOCK_T PREFETCH warps SPLIT_K | err")
for row in rows:
    print(*row[:-1], f"{row[-1]:.2e}")
print("bad", sum(not r[-1] < TOLERANCE for r in rows), "of", len(rows))
