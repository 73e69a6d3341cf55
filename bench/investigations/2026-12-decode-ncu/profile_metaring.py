"""The sm90 kernel's few-token tile under Nsight Compute, with its metadata loaded by each thread
two k-blocks ahead (META_AHEAD 2, the shipped rule's form) or copied through the ring
(META_RING 1): issue 25's before and after, at 1 and 16 tokens on a Llama-8B MLP weight:

    ncu --clock-control none -k regex:_sparse_wgmma_kernel --launch-skip 1 --launch-count 2 \\
        --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \\
        python -m bench.investigations.2026-12-decode-ncu.profile_metaring RING

RING 0 or 1 (the argument). Token tile 8 at 1 token, 16 at 16; 10 stages; unsplit. Each shape
runs twice (a warm-up launch that compiles, then the profiled one), each checked against
F.linear on the decompressed weight first.
"""

import sys

import torch

N, K = 14336, 4096


def main() -> int:
    import torch.nn.functional as F

    import sparse24.ops as ops
    from sparse24.ops import gemm

    ring = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    w = ops.prune_24(torch.randn(N, K, device="cuda", dtype=torch.float16))
    values, meta = ops.compress(w)
    for m, bt in ((1, 8), (16, 16)):
        x = torch.randn(m, K, device="cuda", dtype=torch.float16)
        cfg = {"family": "wgmma", "BT": bt, "STAGES": 10, "GROUP": 8,
               **({"META_RING": 1} if ring else {"META_AHEAD": 2})}
        want = F.linear(x.float(), ops.decompress(values, meta).float())
        got = gemm.run_config(x, values, meta, None, 0, cfg).float()
        err = ((got - want).norm() / want.norm()).item()
        print(m, N, K, cfg, f"rel err {err:.1e}", flush=True)
        if not err < 2e-3:
            print("WRONG: not profiled", flush=True)
            return 1
        gemm.run_config(x, values, meta, None, 0, cfg)
        torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
