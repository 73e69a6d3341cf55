"""Can inductor launch the sm90 Gluon kernel itself? (issue 23: "no Python of ours per call")

``torch.library.triton_op`` + ``wrap_triton`` let inductor see a Triton kernel and launch it from
its generated code, with no Python of the op's own per call. This probe wraps
``_sparse_wgmma_kernel`` that way (one fixed config, its constexprs and shared-memory offsets
verified outside the op, as ``sparse24.ops.wgmma`` does) and tries it eagerly and under
``torch.compile(fullgraph=True)`` with the eager, aot_eager and inductor backends, printing for
each step OK with the result's error against F.linear, or the exception's first lines. Two
arguments of the kernel are the first suspects: the Gluon TensorDescriptors (with shared-memory
layouts, a class torch does not know) and the metadata's address as an int (``data_ptr()``).

    python -m bench.diag.wrap_triton_probe
"""

from __future__ import annotations

import traceback

import torch
import torch.nn.functional as F

from bench import common

M, N, K = 256, 768, 768
CFG = {"family": "wgmma", "BT": 64, "STAGES": 4, "GROUP": 8}


def main() -> int:
    common.base_parser(__doc__.splitlines()[0]).parse_args()
    common.require_cuda("python -m bench.diag.wrap_triton_probe")
    from torch.library import triton_op, wrap_triton

    import sparse24.ops as ops
    from sparse24.kernels.sparse_wgmma import _sparse_wgmma_kernel
    from sparse24.ops import triton_internals, wgmma

    print(common.env_line(common.env_record()), flush=True)
    values, meta = ops.compress(ops.prune_24(torch.randn(N, K, device="cuda", dtype=torch.float16)))
    x = torch.randn(M, K, device="cuda", dtype=torch.float16)
    want = F.linear(x.float(), ops.decompress(values, meta).float())
    layout = wgmma._nvmma_layout()
    bt = CFG["BT"]
    grid = (min(wgmma.output_tiles(M, N, bt), wgmma._sm_count(0)), 1, 1)

    def descriptors(x, values, y):
        return (triton_internals.tensor_descriptor(values, [128, 64], layout),
                triton_internals.tensor_descriptor(x, [bt, 64], layout),
                triton_internals.tensor_descriptor(y, [bt, 64], layout))

    y0 = torch.empty(M, N, device="cuda", dtype=torch.float16)
    offsets = wgmma._verify((*descriptors(x, values, y0), meta.data_ptr(), y0, N, K), grid, CFG,
                            "float16", False, 0)
    constexprs = wgmma._constexprs(CFG, "float16", False, 0, offsets)

    @triton_op("sparse24_probe::wgmma_linear", mutates_args=())
    def probe_linear(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        y = x.new_empty((x.shape[0], values.shape[0]))
        wrap_triton(_sparse_wgmma_kernel)[grid](
            *descriptors(x, values, y), meta.data_ptr(), y, values.shape[0], x.shape[1],
            **constexprs, num_warps=4)
        return y

    def step(name, fn):
        try:
            got = fn(x, values, meta)
            torch.cuda.synchronize()
            print(f"{name}: OK, rel err {common.rel_fro_error(got, want):.1e}", flush=True)
        except Exception as exc:  # noqa: BLE001 - the probe reports every failure and goes on
            lines = traceback.format_exception_only(type(exc), exc)
            print(f"{name}: FAILED: {''.join(lines).strip()[:1200]}", flush=True)

    step("eager triton_op", probe_linear)
    for backend in ("eager", "aot_eager", "inductor"):
        torch._dynamo.reset()
        step(f"compile fullgraph backend={backend}",
             torch.compile(probe_linear, backend=backend, fullgraph=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
