"""Diagnose tests/test_nn_compile.py's fp16 inductor mismatch (2026-11-21, H100): kernel check of
the tiny-BERT shapes at M=24, then eager vs compiled logits with the mma and the dot family."""
import sys

import torch

sys.path.insert(0, "tests")
import sparse24.ops as ops  # noqa: E402
from sparse24 import reference as ref  # noqa: E402
from sparse24.ops import gemm  # noqa: E402
from test_nn_compile import inputs, logits, rel_err, sparsified_bert  # noqa: E402

torch.manual_seed(0)
for n, k in [(64, 64), (128, 64), (64, 128), (192, 64)]:
    w = ops.prune_24(torch.randn(n, k, dtype=torch.float16, device="cuda"))
    v, e = ops.compress(w)
    x = torch.randn(24, k, dtype=torch.float16, device="cuda")
    b = torch.randn(n, dtype=torch.float16, device="cuda")
    cfg = gemm.choose_config(24, n, k, x.dtype, x.device)
    want = ref.linear_ref(x.double().cpu(), v.double().cpu(), e.cpu(), b.double().cpu(), "gelu")
    got = ops.linear(x, v, e, b, "gelu").double().cpu()
    print(f"kernel {n}x{k} M=24 {cfg['family']} rel err {rel_err(got, want):.2e}", flush=True)

heuristic = gemm.heuristic_config
for family in ("mma", "dot"):
    if family == "dot":
        gemm.heuristic_config = lambda m, n, k, d: heuristic(m, n, k, torch.device("cpu"))
    torch._dynamo.reset()
    torch.manual_seed(1)
    model = sparsified_bert("cuda", torch.float16)
    for mode in (None, "reduce-overhead"):
        compiled = torch.compile(model, fullgraph=True, mode=mode)
        errs = []
        for _ in range(3):
            batch = inputs("cuda")
            errs.append(rel_err(logits(compiled, batch), logits(model, batch)))
        print(f"{family} mode={mode}: compiled vs eager rel err {['%.1e' % x for x in errs]}", flush=True)
