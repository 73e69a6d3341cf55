"""Tune sparse24.ops.linear for one problem size: every candidate checked, the fastest stored.

``tune(n, k, m, dtype, device)`` builds a random 2:4 weight [n, k] (packed with prune_24 +
compress), x [m, k] and a bias, checks every candidate of ``configs.candidates`` against F.linear on
the decompressed weight (in float64, so TF32 settings cannot blur the comparison), times those that
pass, and stores the winner in the persistent tuning cache (``sparse24.tuning``) under
``TuningKey.for_problem(n, k, m, dtype, device)``. ``linear`` picks it up on its next call through
``tuning_bridge``. ``python -m sparse24 tune`` (``sparse24.tuning.cli``) drives this over shapes.

On CPU (only under TRITON_INTERPRET=1, for tests) the "dot" family is tuned with a wall-clock
timer, under the GPU name ``CPU_GPU_NAME``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from sparse24 import tuning
from sparse24.layout import granularity_error
from sparse24.ops import configs, gemm, tuning_bridge
from sparse24.ops._checks import GEMM_DTYPES, use_triton

# Relative Frobenius error allowed against the float64 product (the output is rounded to dtype).
TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 2e-2}
CPU_GPU_NAME = "cpu (triton interpreter)"
DEFAULT_M = (1, 16, 64, 256, 4096)


def tune(
    n: int,
    k: int,
    m: int,
    dtype: torch.dtype = torch.float16,
    device: torch.device | str = "cuda",
    progress: bool = True,
    *,
    timer: Callable[[Callable[[], Any]], float] | None = None,
    store: bool = True,
    seed: int = 0,
) -> tuning.TuneResult:
    """Find the fastest correct config for y[m, n] = x[m, k] @ W[n, k]^T + bias and cache it.

    ``timer(fn) -> ms`` defaults to ``triton.testing.do_bench``'s median on CUDA and a wall-clock
    median on CPU. Raises ``sparse24.tuning.NoValidConfigError`` when no candidate is correct,
    ValueError / TypeError for a shape, dtype or device the kernels do not take.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if dtype not in GEMM_DTYPES:
        raise TypeError(f"sparse24 tune: the kernels take float16 or bfloat16, got {dtype}")
    problem = granularity_error(n, k)
    if problem:
        raise ValueError(f"sparse24 tune: cannot pack a [{n}, {k}] weight: {problem}")
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"sparse24 tune: m must be a positive int, got {m!r}")
    probe = torch.empty(0, device=device)
    if not use_triton(probe):
        raise ValueError(f"sparse24 tune: the kernels do not run on {device} "
                         "(CPU only under TRITON_INTERPRET=1)")

    from sparse24 import ops

    gen = torch.Generator(device=device).manual_seed(seed)
    w = ops.prune_24(torch.randn(n, k, generator=gen, device=device, dtype=dtype))
    values, meta = ops.compress(w)
    x = torch.randn(m, k, generator=gen, device=device, dtype=dtype)
    bias = torch.randn(n, generator=gen, device=device, dtype=dtype)
    dense = ops.decompress(values, meta)
    expected = torch.nn.functional.linear(x.double(), dense.double(), bias.double())
    expected_norm = expected.norm().item()
    tolerance = TOLERANCE[dtype]
    activation = gemm.ACTIVATIONS[None]

    def run(cfg: dict) -> torch.Tensor:
        return gemm.run_config(x, values, meta, bias, activation, cfg)

    def check(cfg: dict) -> str | None:
        # NaN first, so that an element the config leaves unwritten fails the comparison.
        out = torch.full((m, n), float("nan"), dtype=dtype, device=device)
        y = gemm.run_config(x, values, meta, bias, activation, cfg, out=out)
        if tuple(y.shape) != (m, n) or y.dtype != dtype:
            return f"output is {tuple(y.shape)} {y.dtype}, expected {(m, n)} {dtype}"
        err = (y.double() - expected).norm().item() / max(expected_norm, 1e-30)
        if not err < tolerance:  # also catches NaN
            return f"relative error {err:.3e} >= {tolerance:.0e}"
        return None

    on_gpu = device.type == "cuda"
    key = problem_key(n, k, m, dtype, device)
    candidates = configs.candidates(m, n, k, on_gpu=on_gpu)
    if timer is None and not on_gpu:
        timer = wall_timer
    try:
        result = tuning.autotune(key, candidates, run, check, timer=timer, progress=progress,
                                 store=store)
    finally:
        tuning_bridge.clear()  # the bridge's memo may hold a stale answer for this key
    return result


def problem_key(n: int, k: int, m: int, dtype: torch.dtype, device: torch.device) -> tuning.TuningKey:
    """The cache key of a problem: the GPU's name on CUDA, ``CPU_GPU_NAME`` on CPU."""
    if device.type == "cuda":
        return tuning.TuningKey.for_problem(n, k, m, dtype, device)
    return tuning.TuningKey(gpu=CPU_GPU_NAME, triton=tuning.triton_version(),
                            dtype=tuning.dtype_name(dtype), n=n, k=k, m_bucket=tuning.m_bucket(m))


def wall_timer(fn: Callable[[], Any], repeats: int = 3) -> float:
    """Median wall-clock time of ``fn`` in ms, after one warm-up call (CPU only)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def model_shapes(model: torch.nn.Module) -> list[tuple[int, int]]:
    """Distinct packable (out_features, in_features) of a model's nn.Linear and SparseLinear
    layers, in order of first appearance."""
    shapes: list[tuple[int, int]] = []
    for module in model.modules():
        packed = hasattr(module, "values") and hasattr(module, "meta")
        if not (isinstance(module, torch.nn.Linear) or packed):
            continue
        n, k = getattr(module, "out_features", None), getattr(module, "in_features", None)
        packable = isinstance(n, int) and isinstance(k, int) and granularity_error(n, k) is None
        if packable and (n, k) not in shapes:
            shapes.append((n, k))
    return shapes


def tune_model_shapes(
    model_or_shapes: torch.nn.Module | Iterable[tuple[int, int]],
    ms: Sequence[int] = DEFAULT_M,
    dtype: torch.dtype = torch.float16,
    device: torch.device | str = "cuda",
    progress: bool = True,
) -> dict[tuple[int, int, int], tuning.TuneResult | Exception]:
    """Tune every (N, K) of a model (or of a list of shapes) for each M bucket of ``ms``.

    Returns {(n, k, m bucket): TuneResult, or the exception that shape raised}; one failing shape
    does not stop the others. Results are stored in the user cache as ``tune`` does.
    """
    if isinstance(model_or_shapes, torch.nn.Module):
        shapes = model_shapes(model_or_shapes)
    else:
        shapes = [(int(n), int(k)) for n, k in model_or_shapes]
    results: dict[tuple[int, int, int], tuning.TuneResult | Exception] = {}
    for n, k in shapes:
        for m in ms:
            slot = (n, k, tuning.m_bucket(m))
            if slot in results:
                continue
            try:
                results[slot] = tune(n, k, m, dtype, device=device, progress=progress)
            except Exception as exc:  # noqa: BLE001 - reported in the result, the rest goes on
                results[slot] = exc
    return results


__all__ = ["CPU_GPU_NAME", "TOLERANCE", "model_shapes", "problem_key", "tune", "tune_model_shapes",
           "wall_timer"]
