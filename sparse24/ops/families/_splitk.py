"""What the mma and dot families share: split-K sizing, the float32 workspace of partial sums, the
launch of the kernel that reduces them (sparse24/kernels/sparse_dot.py), and the tile counters of
the in-kernel reduction (FUSED_REDUCE: the last split of a tile reduces, no second launch)."""

from __future__ import annotations

import torch

from sparse24.kernels.sparse_dot import _splitk_reduce_kernel
from sparse24.ops.direct import DirectLaunches
from sparse24.ops.triton_internals import CachedLaunch, current_device, current_stream

_reduce_launch = CachedLaunch(_splitk_reduce_kernel)
# (M, N, y's row stride, the split stride, splits, dtypes of partial, y and bias, activation,
# device) -> the reduction's pointer launcher (ops/direct.py)
_reduce_direct = DirectLaunches()


def cdiv(a: int, b: int) -> int:
    # plain ints: triton.cdiv is a constexpr function, ~5 us per call on the host (cProfile, H100)
    return -(-a // b)


def split_k(cfg: dict, k: int) -> tuple[int, int]:
    """(splits, chunks per split) for a config's SPLIT_K: no split is left empty (K = 768 is 12
    chunks of 64: SPLIT_K 8 gives 6 splits of 2)."""
    chunks = k // 64
    # cdiv spelled out: this runs on every launch, and each call of ours is a Python frame
    per_split = -(-chunks // min(cfg.get("SPLIT_K", 1), chunks))
    return -(-chunks // per_split), per_split


def workspace(splits: int, y: torch.Tensor, n: int) -> torch.Tensor:
    """The float32 partial sums [splits, M, N] of a split launch (unsplit, the kernel writes y);
    n is the weight's rows (y has n / 2 columns under a gated epilogue)."""
    return torch.empty((splits, y.shape[0], n), dtype=torch.float32, device=y.device)


def reduce(partial, bias, y, activation: int, splits: int, split_stride: int | None = None) -> None:
    """y = act(sum of the splits' partials + bias), after a split launch. Split s's [M, N] sums
    start at partial + s * split_stride elements (M * N by default; the sm90 family pads each
    split's rows to whole token tiles). N is partial's last dim: y's, or twice y's under a gated
    epilogue."""
    m, n = y.shape[0], partial.shape[-1]
    stride = m * n if split_stride is None else split_stride
    pp, yp = partial.data_ptr(), y.data_ptr()
    bp = yp if bias is None else bias.data_ptr()
    # only 16-byte aligned pointers take the direct path (ops/direct.py)
    key = None if _reduce_direct.off or (pp | yp | bp) & 15 else (
        m, n, y.stride(0), stride, splits, partial.dtype, y.dtype,
        bias is not None and bias.dtype, activation, current_device())
    entry = key and _reduce_direct.get(key)
    if entry:
        direct, grid0, constexprs = entry
        direct(grid0, 1, 1, current_stream(key[-1]), pp, bp, yp, m, n, y.stride(0), stride,
               *constexprs)
        return
    block = 1024
    grid0 = cdiv(y.numel(), block)
    args = (partial, bias if bias is not None else y, y, m, n, y.stride(0), stride)
    constexprs = (splits, block, bias is not None, activation)
    _reduce_launch((grid0, 1, 1), args, constexprs, num_warps=4, num_stages=1)
    if key and entry is None:
        _reduce_direct.learn(key, _reduce_launch.compiled_for(args, constexprs, num_warps=4,
                                                              num_stages=1), (grid0, constexprs))


# (device, stream) -> int32 zeros, one counter per tile of an eager FUSED_REDUCE launch. A launch
# leaves every counter it used at zero again (its last split resets it), so one buffer serves
# every eager launch of a stream, in stream order; per stream, because launches on two streams
# may run at once. A CUDA graph never uses these (see counters()).
_counters: dict[tuple, torch.Tensor] = {}


def counters(device: torch.device, tiles: int) -> torch.Tensor:
    """At least ``tiles`` zeroed int32 tile counters for a FUSED_REDUCE launch on this device's
    current stream.

    While a CUDA graph is being captured: fresh zeros every time, never a kept buffer. The graph
    then zeroes its own counters before each replay (the captured memset), whatever stream it is
    replayed on, and no later eager call can free or share them: a kept buffer captured into a
    graph would be freed when an eager call on the stream needs a larger one, and shared with
    eager calls when the graph is replayed on another stream (a reviewer's finding)."""
    if device.type == "cuda":
        if torch.cuda.is_current_stream_capturing():
            return torch.zeros(max(tiles, 1024), dtype=torch.int32, device=device)
        index = device.index if device.index is not None else torch.cuda.current_device()
        key = (index, current_stream(index))
    else:
        key = (device.type, None)
    held = _counters.get(key)
    if held is None or held.numel() < tiles:
        held = _counters[key] = torch.zeros(max(tiles, 1024), dtype=torch.int32, device=device)
    return held
