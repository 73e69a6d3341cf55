"""One sm90-family launch per shape, for Nsight Compute (the largest BERT and LLM shapes):

    ncu --clock-control none -k regex:_sparse_wgmma_kernel --launch-skip 1 --launch-count 2 \
        --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
        python -m bench.investigations.2026-12-sm90-ncu.profile_wgmma

Each shape runs twice (a warm-up launch that compiles, then the profiled one). With an argument,
a JSON list of [M, N, K, config or null] (null: the config linear would choose), those instead:

    ... profile_wgmma '[[4096, 4096, 4096, {"family": "wgmma", "BT": 128, "STAGES": 3,
                         "GROUP": 4, "BLOCK_F": 256}]]'
"""

import json
import sys

import torch

SHAPES = [(98304, 3072, 768), (8192, 8192, 8192)]


def main() -> int:
    import sparse24.ops as ops
    from sparse24.ops import gemm

    runs = json.loads(sys.argv[1]) if len(sys.argv) > 1 else [[*s, None] for s in SHAPES]
    for m, n, k, chosen in runs:
        w = ops.prune_24(torch.randn(n, k, device="cuda", dtype=torch.float16))
        values, meta = ops.compress(w)
        x = torch.randn(m, k, device="cuda", dtype=torch.float16)
        cfg = chosen or gemm.choose_config(m, n, k, x.dtype, x.device)
        print(m, n, k, cfg, flush=True)
        for _ in range(2):
            gemm.run_config(x, values, meta, None, 0, cfg)
        torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
