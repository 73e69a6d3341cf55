"""Which mma configs are wrong on tiny problems (found 2026-11-21: 128x64 weight, M=24, rel err 0.3).
Written after the device time ran out: not run yet (bench/NOTES.md, session 2, item 5)."""
import itertools

import torch

import sparse24.ops as ops
from sparse24 import reference as ref
from sparse24.ops import gemm

torch.manual_seed(0)
bad = []
for (n, k), m in itertools.product([(128, 64), (128, 128), (256, 64), (256, 192), (128, 256)], [24, 32, 64]):
    w = ops.prune_24(torch.randn(n, k, dtype=torch.float16, device="cuda"))
    v, e = ops.compress(w)
    x = torch.randn(m, k, dtype=torch.float16, device="cuda")
    want = ref.linear_ref(x.double().cpu(), v.double().cpu(), e.cpu(), None, None)
    for bf, bt, pf, sk, nw in itertools.product((64, 128, 256), (16, 32, 64), (1, 2), (1, 2), (4, 8)):
        if n % bf or bf < 16 * nw or sk > k // 64:
            continue
        cfg = {"family": "mma", "BLOCK_F": bf, "BLOCK_T": bt, "GROUP_T": 8, "PREFETCH": pf, "SPLIT_K": sk,
               "num_warps": nw, "num_stages": 1}
        out = torch.full((m, n), float("nan"), dtype=torch.float16, device="cuda")
        got = gemm.run_config(x, v, e, None, 0, cfg, out=out).double().cpu()
        err = float((got - want).norm() / want.norm())
        if not err < 2e-3:
            bad.append((n, k, m, bf, bt, pf, sk, nw, round(err, 3)))
print("n k m | BLOCK_F BLOCK_T PREFETCH SPLIT_K warps | err")
for row in bad:
    print(*row)
print("bad", len(bad))
