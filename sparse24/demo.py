"""The README's main job: on a GPU a short benchmark, on a CPU a correctness demo (interpreter).

Both start the same way: prune a random Linear 2:4, pack it, unpack it, check the round trip bit
for bit, and check sparse24.ops.linear against F.linear on the pruned weight. On a GPU it then times
sparse24 against cuBLAS dense and torch's own 2:4 (to_sparse_semi_structured) on BERT-base shapes;
the full, recorded benchmarks are the scripts under bench/.
"""

from __future__ import annotations

import os

import torch

# relative Frobenius error of the kernel output (rounded to its dtype) against a float32 reference
from sparse24.reference import REL_TOL  # plain PyTorch: no kernel is built by importing it


def _check(device: str, dtype: torch.dtype) -> None:
    import sparse24.ops as ops  # imported after TRITON_INTERPRET is settled (see main)

    n, k, m = (768, 768, 384) if device == "cuda" else (64, 128, 24)
    w = torch.randn(n, k, dtype=dtype, device=device)
    pruned = ops.prune_24(w)
    values, meta = ops.compress(pruned)
    same = torch.equal(ops.decompress(values, meta).view(torch.int16), pruned.view(torch.int16))
    x = torch.randn(m, k, dtype=dtype, device=device)
    bias = torch.randn(n, dtype=dtype, device=device)
    y = ops.linear(x, values, meta, bias, activation="gelu")
    ref = torch.nn.functional.gelu(x.float() @ pruned.float().t() + bias.float())
    err = ((y.float() - ref).norm() / ref.norm()).item()
    print(f"linear {n}x{k}, {m} tokens, {dtype}: pruned {int((pruned == 0).sum())}/{n * k} weights, "
          f"packed {values.numel() * values.element_size() + meta.numel() * 4} bytes "
          f"(dense {n * k * pruned.element_size()}), round trip bit-exact: {same}, "
          f"relative error vs F.linear: {err:.1e}")
    if not (same and err < REL_TOL[dtype]):
        raise SystemExit("sparse24 demo: CHECK FAILED")


def _bench() -> None:
    import triton.testing
    import torch.nn.functional as F

    import sparse24.ops as ops

    print(f"\n{torch.cuda.get_device_name()}: median times (triton.testing.do_bench), fp16")
    print("| tokens | N x K | cuBLAS dense us | torch 2:4 us | sparse24 us | sparse24 / dense |")
    print("|---|---|---|---|---|---|")
    for m in (16, 1536, 24576):
        for n, k in ((768, 768), (3072, 768), (768, 3072)):
            w = ops.prune_24(torch.randn(n, k, dtype=torch.float16, device="cuda"))
            values, meta = ops.compress(w)
            x = torch.randn(m, k, dtype=torch.float16, device="cuda")
            dense = triton.testing.do_bench(lambda: F.linear(x, w), return_mode="median")
            try:
                sparse_t = torch.sparse.to_sparse_semi_structured(w)
                torch24 = triton.testing.do_bench(lambda: F.linear(x, sparse_t), return_mode="median")
                torch24_cell = f"{torch24 * 1e3:.1f}"
            except Exception as exc:  # e.g. CUTLASS refusing sm90: say so, don't hide it
                torch24_cell = f"failed ({type(exc).__name__})"
            ours = triton.testing.do_bench(lambda: ops.linear(x, values, meta), return_mode="median")
            print(f"| {m} | {n}x{k} | {dense * 1e3:.1f} | {torch24_cell} | {ours * 1e3:.1f} | {dense / ours:.2f}x |")
    print("\nFull benchmarks, recorded with device and commit: python -m bench.gemm, python -m bench.bert (from the repository root)")


def main(args=None) -> int:
    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        # Must be set before sparse24's kernels are first imported (triton reads it at decoration).
        os.environ.setdefault("TRITON_INTERPRET", "1")
        print("No CUDA GPU: running a small correctness demo of the Triton kernels through the "
              "Triton interpreter on the CPU (slow, small sizes; no timings).")
        for dtype in (torch.float16, torch.bfloat16):
            _check("cpu", dtype)
        print("demo OK")
        return 0
    for dtype in (torch.float16, torch.bfloat16):
        _check("cuda", dtype)
    _bench()
    return 0
