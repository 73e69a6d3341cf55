"""Tune sparse24.ops.linear for one problem size: every candidate checked, the fastest stored.

The winner goes to the user cache, where ``linear`` finds it on its next call (``configs.tuned``).
On CPU (only under TRITON_INTERPRET=1, for tests) the "dot" family is tuned with a wall-clock
timer, under the GPU name ``CPU_GPU_NAME``.

Which is which: this module is the op-side search (``tune`` builds the GEMM's problem, candidates
and check, and hands them to ``sparse24.tuning.autotune``, the kernel-agnostic loop that times
them); the results live in ``sparse24.tuning.cache``; ``python -m sparse24 tune`` is
``sparse24.tuning.cli``; the lookup ``linear`` makes when it plans a problem is
``sparse24.ops.configs.tuned``.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch

from sparse24 import tuning
from sparse24.activations import EPILOGUE_CODES
from sparse24.layout import granularity_error
from sparse24.ops import configs, gemm, wgmma
from sparse24.ops._checks import GEMM_DTYPES, use_triton
from sparse24.ops.device import launch_guard
from sparse24.ops.pack import compress, decompress, prune_24
from sparse24.reference import REL_TOL as TOLERANCE  # against the float64 product

CPU_GPU_NAME = "cpu (triton interpreter)"


def tune(n: int, k: int, m: int, dtype: torch.dtype = torch.float16,
         device: torch.device | str = "cuda", progress: bool = True, *,
         timer: Callable[[Callable[[], Any]], float] | None = None, store: bool = True,
         seed: int = 0) -> tuning.TuneResult:
    """The fastest correct config for y[m, n] = x[m, k] @ W[n, k]^T + bias, random 2:4 data, each
    candidate checked against F.linear in float64 (so TF32 settings cannot blur it). ``timer(fn)
    -> ms``: do_bench's median on CUDA, wall-clock on CPU. ``tuning.NoValidConfigError`` when none
    is correct; ValueError / TypeError for a problem the kernels do not take."""
    device = torch.device(device)
    if dtype not in GEMM_DTYPES:
        raise TypeError(f"sparse24 tune: the kernels take float16 or bfloat16, got {dtype}")
    if granularity_error(n, k):
        raise ValueError(f"sparse24 tune: cannot pack [{n}, {k}]: {granularity_error(n, k)}")
    bucket = tuning.m_bucket(m)  # TypeError / ValueError unless m is an int >= 1
    if not use_triton(torch.empty(0, device=device)):
        raise ValueError(f"sparse24 tune: the kernels do not run on {device} "
                         "(CPU only under TRITON_INTERPRET=1)")

    gen = torch.Generator(device=device).manual_seed(seed)
    values, meta = compress(prune_24(torch.randn(n, k, generator=gen, device=device, dtype=dtype)))
    x = torch.randn(m, k, generator=gen, device=device, dtype=dtype)
    bias = torch.randn(n, generator=gen, device=device, dtype=dtype)
    expected = torch.nn.functional.linear(x.double(), decompress(values, meta).double(),
                                          bias.double())
    activation = EPILOGUE_CODES[None]

    def run(cfg: dict) -> torch.Tensor:
        return gemm.run_config(x, values, meta, bias, activation, cfg)

    def check(cfg: dict) -> str | None:
        # NaN first, so that an element the config leaves unwritten fails the comparison.
        out = torch.full((m, n), float("nan"), dtype=dtype, device=device)
        y = gemm.run_config(x, values, meta, bias, activation, cfg, out=out)
        err = (y.double() - expected).norm().item() / max(expected.norm().item(), 1e-30)
        ok = err < TOLERANCE[dtype]  # also False for NaN
        return None if ok else f"relative error {err:.3e} >= {TOLERANCE[dtype]:.0e}"

    on_gpu = device.type == "cuda"
    gpu = tuning.current_gpu_name(device) if on_gpu else CPU_GPU_NAME
    key = tuning.TuningKey(gpu, tuning.triton_version(), tuning.dtype_name(dtype), n, k, bucket)
    sm90 = on_gpu and wgmma.supported(device.index if device.index is not None
                                      else torch.cuda.current_device())
    candidates = configs.candidates(m, n, k, on_gpu, wgmma_side=gemm.uses_wgmma(m, device),
                                    sm90=sm90)
    # on the problem's GPU: Triton launches, and do_bench's CUDA events time, the current one
    with launch_guard(device) or nullcontext():
        return tuning.autotune(key, candidates, run, check, progress=progress, store=store,
                               timer=timer or (None if on_gpu else wall_timer))


def wall_timer(fn: Callable[[], Any]) -> float:
    """Mean wall-clock ms of three calls of ``fn`` (CPU: no CUDA events for do_bench)."""
    return timeit.timeit(fn, number=3) / 3 * 1e3
