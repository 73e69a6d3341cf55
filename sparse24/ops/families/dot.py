"""The "dot" family: unpack the 2:4 weight in registers and multiply with tl.dot
(sparse24/kernels/sparse_dot.py), with split-K, for few tokens, where moving the weight dominates
(the packed weight is 9/16 of the dense bytes), and for N not a multiple of 64 (the mma family's
feature blocks). It is the family the Triton interpreter can run (inline asm cannot), so the CPU
runs it and CPU tests exercise it.

A config tiles [BLOCK_M tokens x BLOCK_N features] per program: {"family": "dot", "BLOCK_M",
"BLOCK_N", "SPLIT_K", "num_warps", "num_stages", optional "FUSED_REDUCE": 1 (a split tile's last
program reduces the splits, instead of a second launch)}.
"""

from __future__ import annotations

import itertools

from sparse24.kernels.sparse_dot import _sparse_dot_kernel
from sparse24.ops.families._splitk import cdiv, counters, reduce, split_k, workspace
from sparse24.ops.direct import DirectLaunches
from sparse24.ops.triton_internals import CachedLaunch, current_device, current_stream

NAME = "dot"
FIELDS = ("BLOCK_M", "BLOCK_N", "SPLIT_K", "num_warps", "num_stages")
CHOICES = {"FUSED_REDUCE": (0, 1)}


def candidates(m: int, n: int, k: int) -> list[dict]:
    """Every dot config worth timing for [m, k] x [n, k]^T."""
    configs = []
    chunks = k // 64
    for block_m, block_n, split, stages in itertools.product((16, 32, 64), (32, 64, 128),
                                                             (1, 2, 4, 8, 16), (2, 3, 4)):
        if n % block_n or split > chunks or block_m > max(16, 2 * m):
            continue
        if split > 1 and m > 256:  # the fp32 workspace would cost more than it saves
            continue
        cfg = {"family": "dot", "BLOCK_M": block_m, "BLOCK_N": block_n, "SPLIT_K": split,
               "num_warps": 4, "num_stages": stages}
        configs.append(cfg)
        if split > 1:
            configs.append(cfg | {"FUSED_REDUCE": 1})
    return configs


def heuristic(m: int, n: int, k: int, sms: int) -> dict:
    """A config without tuning: the widest feature block dividing N, 16/32/64 tokens; up to 32
    tokens, K split so that about two programs per SM stream the weight (sms: 1 on the CPU)."""
    block_n = next(b for b in (128, 64, 32, 16) if n % b == 0)
    block_m = 16 if m <= 16 else 32 if m <= 32 else 64
    split = 1
    if m <= 32:
        programs = max(1, (n // block_n) * cdiv(m, block_m))
        split = max(1, min(k // 64 // 4, cdiv(2 * sms, programs)))
    return {"family": "dot", "BLOCK_M": block_m, "BLOCK_N": block_n, "SPLIT_K": split,
            "num_warps": 4, "num_stages": 3}


def fits(config: dict, n: int, k: int) -> bool:
    """Whole feature blocks, and no more splits than 64-wide chunks of K."""
    return n % config["BLOCK_N"] == 0 and config.get("SPLIT_K", 1) <= k // 64


_dot_launch = CachedLaunch(_sparse_dot_kernel)
# keyed as the mma family's (families/mma.py, ops/direct.py)
_direct = DirectLaunches()


def launch(x2, values, meta, bias, y, activation: int, cfg: dict) -> None:
    """y[M, N] = act(x2 @ W^T + bias); x2 [M, K] with unit stride along K."""
    m, k = x2.shape
    n = values.shape[0]
    xp, vp, mp, yp = x2.data_ptr(), values.data_ptr(), meta.data_ptr(), y.data_ptr()
    bp = yp if bias is None else bias.data_ptr()
    # only 16-byte aligned pointers take the direct path (ops/direct.py)
    key = None if _direct.off or (xp | vp | mp | yp | bp) & 15 else (
        id(cfg), m, n, k, x2.stride(0), y.stride(0), x2.dtype, values.dtype, y.dtype,
        bias is not None and bias.dtype, activation, current_device())
    entry = key and _direct.get(key, cfg)
    if entry:
        direct, grid, splits, fused, constexprs = entry
        partial = y if splits == 1 else workspace(splits, y, n)
        # held until the launch is queued (under capture: fresh zeros, see counters)
        count = counters(y.device, grid[0] * grid[1]) if fused else meta
        direct(*grid, current_stream(key[-1]), xp, vp, mp, bp, yp, partial.data_ptr(),
               count.data_ptr(), m, n, k, x2.stride(0), y.stride(0), *constexprs)
    else:
        splits, _ = split_k(cfg, k)
        partial = y if splits == 1 else workspace(splits, y, n)  # unsplit: straight into y
        grid = (n // cfg["BLOCK_N"], -(-m // cfg["BLOCK_M"]), splits)
        fused = splits > 1 and cfg.get("FUSED_REDUCE", 0) == 1
        # the tile counters of the in-kernel reduction; meta (int32) stands in where there are none
        count = counters(y.device, grid[0] * grid[1]) if fused else meta
        args = (x2, values, meta, bias if bias is not None else y, y, partial, count,
                m, n, k, x2.stride(0), y.stride(0))
        constexprs = (cfg["BLOCK_M"], cfg["BLOCK_N"], splits, bias is not None, activation,
                      not x2.is_cuda, fused)
        options = {"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]}
        _dot_launch(grid, args, constexprs, **options)
        if key and entry is None:
            _direct.learn(key, _dot_launch.compiled_for(args, constexprs, **options),
                          (grid, splits, fused, constexprs), cfg)
    if splits > 1 and not fused:
        reduce(partial, bias, y, activation, splits)
