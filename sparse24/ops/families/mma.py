"""The "mma" family: the sparse tensor cores through the sm80 instruction (mma.sp, inline asm in
sparse24/kernels/sparse_mma.py). On sm80-sm89 it serves every token count; on sm90 it competes
in the tuner up to gemm.MMA_MAX_TOKENS_SM90 tokens, where the heuristic now gives every shape to
the sm90 kernel's few-token tiles (wgmma.few_token_config: 21-39% faster than this family's
split-K on the H100). It needs a GPU.

A config tiles [BLOCK_F features x BLOCK_T tokens] per program: {"family": "mma", "BLOCK_F",
"BLOCK_T", "GROUP_T": token blocks per feature block in the tile order, "PREFETCH": steps of the
k-loop loaded ahead (a step: a chunk of 64 columns of K, or two with A_TILE 2), "SPLIT_K",
"A_TILE": how A is loaded (0: per-lane asm loads; 1: from coalesced [BLOCK_F, 8]-word tiles, one
atom at a time, where absent; 2: [BLOCK_F, 32]-word tiles, two chunks of K at a time, 128
contiguous bytes of each row, the default up to 64 tokens), "num_warps", "num_stages", optional
"MAXNREG": registers a thread at most (ptxas; 168: three programs of 128 threads an SM instead of
two; a tuner candidate, not yet timed), optional "FUSED_REDUCE": 1 (a split tile's last program
reduces the splits instead of a second launch; 4-10% slower at few tokens on the H200,
bench/NOTES.md 2026-12-05)}.
"""

from __future__ import annotations

import itertools

import torch

from sparse24.kernels.sparse_mma import _sparse_mma_kernel
from sparse24.ops import device as _device
from sparse24.ops import triton_internals
from sparse24.ops.families._splitk import cdiv, counters, reduce, split_k, workspace
from sparse24.ops.direct import DirectLaunches, output_template
from sparse24.ops.triton_internals import CachedLaunch, current_device, current_stream
from sparse24.tuning import generation as _tuning_generation

NAME = "mma"
# What the launcher reads; configs tuned before split-K existed lack SPLIT_K and run unsplit, and
# A_TILE is 1 where absent
FIELDS = ("BLOCK_F", "BLOCK_T", "GROUP_T", "PREFETCH", "num_warps", "num_stages")
CHOICES = {"FUSED_REDUCE": (0, 1), "A_TILE": (0, 1, 2), "MAXNREG": (128, 168)}

# fp32 accumulator registers a thread (BLOCK_F * BLOCK_T / (32 * num_warps)) at most 128 of 255:
# the A fragments and x tiles of two chunks (prefetch) must fit beside them
_MAX_ACC_REGS = 128

# split-K only where token blocks leave too few programs (16 x 4096 x 4096: 32 for 132 SMs)
_SPLIT_MAX_M = 128


def candidates(m: int, n: int, k: int) -> list[dict]:
    """Every mma config worth timing for [m, k] x [n, k]^T."""
    configs = []
    for block_f, block_t, warps, prefetch in itertools.product((64, 128, 256), (16, 32, 64, 128),
                                                               (4, 8), (1, 2)):
        if n % block_f or block_t > max(16, 2 * m):
            continue
        if block_f * block_t // (32 * warps) > _MAX_ACC_REGS or block_f < 16 * warps:
            continue
        configs.append({"family": "mma", "BLOCK_F": block_f, "BLOCK_T": block_t, "GROUP_T": 8,
                        "PREFETCH": prefetch, "SPLIT_K": 1, "num_warps": warps, "num_stages": 1})
    if m <= _SPLIT_MAX_M:
        for block_f, block_t, split in itertools.product((64, 128, 256), (16, 32), (2, 4, 8, 16)):
            if n % block_f or block_t > max(16, 2 * m) or split > k // 64:
                continue
            cfg = {"family": "mma", "BLOCK_F": block_f, "BLOCK_T": block_t, "GROUP_T": 8,
                   "PREFETCH": 1, "SPLIT_K": split, "num_warps": 4, "num_stages": 1}
            # the split reduced in the kernel, and A loaded two chunks at a time (each one lever
            # against cfg; not both at once: the candidates stay 3 per tile and split)
            configs += [cfg, cfg | {"FUSED_REDUCE": 1}, cfg | {"A_TILE": 2}]
            if block_f == 128 and block_t == 16:
                # A_TILE 2 takes 174 registers under Triton 3.6 (two programs an SM), 168 under
                # 3.9 (three); capped at 168 it compiles without spills under both (sm_80 and
                # sm_90, tests/test_mma_compile.py). 128 x 32 spills at that cap: not offered.
                configs.append(cfg | {"A_TILE": 2, "MAXNREG": 168})
    return configs


def heuristic(m: int, n: int, k: int, sms: int) -> dict:
    """A config without tuning for N a multiple of 64.

    Up to 64 tokens (weight streaming): 128 (else 64) features x 16 (32 from 17 tokens) per
    program, values loaded two chunks of K at a time (A_TILE 2: 128 contiguous bytes of each row),
    and K split so that every SM holds two programs (A_TILE 2 takes 168-174 registers a thread,
    so two programs of 128 threads fit an SM), with no more splits than pairs of chunks. H200, CUDA
    graphs, against the rule before it (A_TILE 1, four programs an SM, splits of at least 8 chunks),
    same run (bench/results/h200/gemm_variants.jsonl, run 20261205T021452Z-94a792): 1 x 4096 x 4096
    1.07x -> 1.22x cuBLAS, 16 x 4096 x 4096 1.10x -> 1.23x, 64 x 4096 x 4096 0.61x -> 0.71x,
    1 x 14336 x 4096 1.11x -> 1.31x, 16 x 4096 x 14336 1.04x -> 1.28x; 16 x 3072 x 768, which the
    old floor of 8 chunks left unsplit (0.44x, bench.versions), 0.77x. Measured on the H200 only.
    More tokens: 256 (else 128) features x 32 tokens, 4 warps, register prefetch; 64 tokens with
    8 warps from 16384 tokens on (shaped after the H100 sweep, bench/results/h100)."""
    if m <= 64:
        block_f = 128 if n % 128 == 0 else 64
        block_t = 16 if m <= 16 else 32
        # max(1, ...): m = 0 makes no programs (linear returns first; a bench or tool may ask)
        programs = max(1, (n // block_f) * cdiv(m, block_t))
        most = max(1, min(k // 64 // 2, 2 * sms // programs))
        split = 1 << (most.bit_length() - 1)  # a power of two, at most `most`
        return {"family": "mma", "BLOCK_F": block_f, "BLOCK_T": block_t, "GROUP_T": 8,
                "PREFETCH": 1, "SPLIT_K": split, "A_TILE": 2, "num_warps": 4, "num_stages": 1}
    block_f = next(b for b in (256, 128, 64) if n % b == 0)
    big = m >= 16384 and block_f == 256
    return {"family": "mma", "BLOCK_F": block_f, "BLOCK_T": 64 if big else 32, "GROUP_T": 8,
            "PREFETCH": 1, "SPLIT_K": 1, "A_TILE": 1, "num_warps": 8 if big else 4, "num_stages": 1}


def fits(config: dict, n: int, k: int) -> bool:
    """Whole feature blocks, and no more splits than 64-wide chunks of K."""
    return n % config["BLOCK_F"] == 0 and config.get("SPLIT_K", 1) <= k // 64


_mma_launch = CachedLaunch(_sparse_mma_kernel)
# (id(config), M, N, K, x2's and y's row strides, x2's and y's dtypes, bias dtype or False,
# activation, whether values' and meta's addresses fit 32 bits, device)
# -> the kernel's pointer launcher; the sizes and strides fix the grid, the split and every int
# argument's specialization (ops/direct.py)
_direct = DirectLaunches()


def launch(x2, values, meta, bias, y, activation: int, cfg: dict) -> None:
    """y[M, N] = act(x2 @ W^T + bias); x2 [M, K] with unit stride along K and even row stride."""
    m, k = x2.shape
    n = values.shape[0]
    xp, vp, mp, yp = x2.data_ptr(), values.data_ptr(), meta.data_ptr(), y.data_ptr()
    bp = yp if bias is None else bias.data_ptr()
    # only 16-byte aligned pointers take the direct path (ops/direct.py)
    # values' and meta's addresses are also int arguments: Triton specializes those on their
    # 32-bit range too
    key = None if _direct.off or (xp | vp | mp | yp | bp) & 15 else (
        id(cfg), m, n, k, x2.stride(0), y.stride(0), x2.dtype, y.dtype,
        bias is not None and bias.dtype, activation, vp < 2**31, mp < 2**31, current_device())
    entry = key and _direct.get(key, cfg)
    if entry:
        direct, tiles, splits, per_split, fused, constexprs = entry
        partial = y if splits == 1 else workspace(splits, y, n)
        # held until the launch is queued (under capture: fresh zeros, see counters)
        count = counters(y.device, tiles) if fused else meta
        direct(tiles, splits, 1, current_stream(key[-1]), xp, vp, vp, mp, bp, yp,
               partial.data_ptr(), count.data_ptr(), m, n, k, x2.stride(0) // 2, y.stride(0),
               per_split, *constexprs)
    else:
        splits, per_split = split_k(cfg, k)
        fused = splits > 1 and cfg.get("FUSED_REDUCE", 0) == 1
        tiles = -(-m // cfg["BLOCK_T"]) * (n // cfg["BLOCK_F"])
        partial = y if splits == 1 else workspace(splits, y, n)  # unsplit: straight into y
        # the tile counters of the in-kernel reduction; meta (int32) stands in where there are none
        count = counters(y.device, tiles) if fused else meta
        constexprs = (cfg["BLOCK_F"], cfg["BLOCK_T"], cfg["GROUP_T"], cfg["PREFETCH"], splits,
                      bias is not None, activation, x2.dtype == torch.bfloat16,
                      cfg.get("A_TILE", 1), fused)
        args = (x2.view(torch.int32), values.view(torch.int32), vp, mp,
                bias if bias is not None else y, y, partial, count, m, n, k, x2.stride(0) // 2,
                y.stride(0), per_split)
        options = {"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"],
                   "maxnreg": cfg.get("MAXNREG")}
        _mma_launch((tiles, splits, 1), args, constexprs, **options)
        if key and entry is None:
            _direct.learn(key, _mma_launch.compiled_for(args, constexprs, **options),
                          (tiles, splits, per_split, fused, constexprs), cfg)
    if splits > 1 and not fused:
        reduce(partial, bias, y, activation, splits)


def bind(cfg: dict, values, meta, bias, activation: int, shape: torch.Size, width: int,
         generation: int):
    """This config's direct launch bound to one weight (values, meta, bias, activation) and one
    shape of x, for sparse24.ops.gemm's record of a checked weight (``gemm.bind``): a
    ``BoundLaunch``; None where the launch has not been learned yet (the shape's first plain
    call learns it: not under a launch hook); False where it never will be (split-K, whose
    partial sums and reduction a bound launch does not hold; a strided or misaligned weight; K
    not a multiple of 8, whose rows the kernel cannot read 16 bytes at a time).
    The key is the one ``launch`` builds for a contiguous x (rows K apart) and y of this shape
    (written out in both; tests/test_bound_mma.py fails if they drift apart), so the bound
    launch passes the kernel what the direct path would. One difference: a
    one-row x is contiguous whatever its row stride; the bound launch passes K as its row
    stride where the direct path passes x's own, the same launch, since the kernel reads only
    row 0 of a one-row x. (A one-row shape whose calls all had another row stride learned only
    keys that hold it, and does not bind: it stays on the general path.)"""
    n, k = values.shape[0], values.shape[1] * 2
    if not k or k % 8 or not values.is_contiguous() or split_k(cfg, k)[0] > 1:
        return False
    vp, mp = values.data_ptr(), meta.data_ptr()
    bp = None if bias is None else bias.data_ptr()
    if (vp | mp | (bp or 0)) & 15:
        return False
    index = values.get_device()  # the device the call launched on (gemm's launch guard)
    key = (id(cfg), shape.numel() // k, n, k, k, width, values.dtype, values.dtype,
           bias is not None and bias.dtype, activation, vp < 2**31, mp < 2**31, index)
    entry = _direct.get(key, cfg)
    if not entry:  # False from a launch hook is for now only: asked again on the next call
        return None if entry is None or not triton_internals.direct_launch_allowed() else False
    direct, tiles, _, per_split, _, constexprs = entry  # unsplit: never the fused reduction
    return BoundLaunch(direct, index, tiles, (vp, mp), bp,
                       (shape.numel() // k, n, k, k // 2, width, per_split, *constexprs),
                       output_template(values, shape, width), generation)


class BoundLaunch:
    """The mma family's direct launch bound to one weight and one shape of x (``bind``):
    ``bound(x, values, bias)`` allocates y, launches and returns it, or returns None where this
    call needs the general path (x not a contiguous, 16-byte aligned plain tensor of the
    weight's dtype on its device; autograd to record; another current device; a launch hook;
    tuned configs that changed since binding). The caller vouches for the weight (the same
    tensors holding the same memory as when bound) and for x's shape (its table's key).
    What it skips against ``gemm._linear_impl`` and ``launch``: the plan's lookup, x's
    strides, the launch key of 13 items and its lookup, and y's allocation from a shape."""

    __slots__ = ("direct", "device", "dtype", "tiles", "weight", "bias_addr", "ints",
                 "template", "generation")

    def __init__(self, direct, device, tiles, weight, bias_addr, ints, template, generation):
        self.direct, self.device, self.dtype, self.tiles = direct, device, template.dtype, tiles
        self.weight, self.bias_addr, self.ints = weight, bias_addr, ints
        self.template, self.generation = template, generation

    def __call__(self, x, values, bias):
        # the same checks as wgmma.BoundLaunch's, written out in each: a shared helper would add
        # a Python frame to a call of about 4 us (dev CPU, bench.diag.stub_host_time --stub mma)
        if type(x) is not torch.Tensor or x.dtype is not self.dtype or x.get_device() != self.device:
            return None
        x_addr = x.data_ptr()
        if (x_addr & 15 or not x.is_contiguous()
                or (torch.is_grad_enabled() and (x.requires_grad or values.requires_grad or (
                    bias is not None and bias.requires_grad)))
                or _tuning_generation() != self.generation
                or _device._current_cuda_device() != self.device
                or not triton_internals.direct_launch_allowed()):
            return None
        y = torch.empty_like(self.template)
        y_addr = y.data_ptr()
        bias_addr = y_addr if self.bias_addr is None else self.bias_addr
        # unsplit: the partial sums go straight into y, and meta stands in for the tile counters
        # (launch's arguments for SPLIT_K 1); a contiguous x's rows are K apart, K / 2 words
        values_addr, meta_addr = self.weight
        self.direct(self.tiles, 1, 1, triton_internals.current_stream(self.device), x_addr,
                    values_addr, values_addr, meta_addr, bias_addr, y_addr, y_addr, meta_addr,
                    *self.ints)
        return y
