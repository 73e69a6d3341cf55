"""The few-token mma kernel under Nsight Compute (issue 25: how many bytes a second it moves and
where the rest goes), in both A loads, at M = 1 on a Llama-8B MLP weight:

    ncu --clock-control none -k regex:_sparse_mma_kernel --launch-skip 1 --launch-count 1 \\
        --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \\
        --section WarpStateStats python -m bench.investigations.2026-12-decode-ncu.profile_decode A_TILE

A_TILE 1 or 2 (the argument): the heuristic's config at 1 x 14336 x 4096 with that A load. Each
runs twice (a warm-up launch that compiles, then the profiled one); the split-K reduction is
another kernel, not matched by -k.
"""

import sys

import torch

M, N, K = 1, 14336, 4096


def main() -> int:
    import sparse24.ops as ops
    from sparse24.ops import gemm

    a_tile = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    w = ops.prune_24(torch.randn(N, K, device="cuda", dtype=torch.float16))
    values, meta = ops.compress(w)
    x = torch.randn(M, K, device="cuda", dtype=torch.float16)
    cfg = {**gemm.choose_config(M, N, K, x.dtype, x.device), "A_TILE": a_tile}
    print(M, N, K, cfg, flush=True)
    for _ in range(2):
        gemm.run_config(x, values, meta, None, 0, cfg)
    torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
