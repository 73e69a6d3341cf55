"""The sm90 family of sparse24.ops.linear: launcher, configs and the shared-memory offset check.

The kernel (sparse24/kernels/sparse_wgmma.py) issues ``wgmma.mma_async.sp`` from inline asm that addresses
its operand rings from ``global_smem`` plus byte offsets baked into the asm text
(sparse24/ops/wgmma_asm.py). Where Triton's allocator puts the rings is its business, not ours, so
the first launch of each specialization compiles the kernel with a guess (x ring at 0, A ring
right after it, the order of a largest-first allocator), reads the real offsets off the compiled
kernel (sparse24/ops/triton_internals.py), recompiles with those if the guess was wrong, and
refuses to run if they still disagree: a wrong offset would compute garbage, never crash.

A config: {"family": "wgmma", "BT": tokens per tile (8, 16, 32: few tokens; 64, 128, 256),
"STAGES": ring depth,
"GROUP": token tiles per feature tile in the tile order, "ASM_LOOP": 0 (or absent) for the Gluon
k-loop, one asm statement a k-block, or D = 1, 2, 4, 8 for the whole k-loop in one asm statement
that keeps a wgmma group in flight and drains every D k-blocks (sparse24/ops/wgmma_asm.py),
optional "META_AHEAD": 1 (default) to 4, the k-blocks ahead whose metadata the Gluon k-loop has
in flight (2 and 4 offered with the few-token tiles), or with ASM_LOOP the batches of D k-blocks
ahead whose metadata the asm k-loop has in flight}.
Optional "BLOCK_F": features per tile, 128 (where absent: two warpgroups of one 64-feature band
each) or 256 (two bands each, token tiles of 64 and 128, the Gluon k-loop with its metadata loaded
ahead; ``BLOCK_F_256_TOKEN_TILES`` and ``one_wave_wide_config`` say why and where). The grid is
persistent: one program per SM, or fewer when there are fewer tiles. ASM_LOOP and SPLIT_K configs
are offered only on request (``candidates(..., asm_loops=..., split_ks=...)``); only the few-token
rule splits K (4 splits where feature tiles are few and K long): the H200 timed both slower where
they were meant to win at many tokens (bench/NOTES.md, 2026-12-05), and the H100 split lost at
384-1536 (see ``mid_token_config``). The few-token tiles (BT 8-32) serve 1-64 tokens where
``few_token_config`` says so, with "META_RING": 1 (the loader copies each k-block's metadata into
the ring; the default there), and from 65 tokens, where the heuristic's estimate picks 64-token
tiles, ``mid_token_config`` keeps the ring (tiles of 32 or 64 tokens); 128-token tiles take it too,
with 3 stages."""

from __future__ import annotations

import functools

import torch

from sparse24.activations import GATED_FLAG
from sparse24.ops import device as _device
from sparse24.ops import triton_internals, wgmma_asm
from sparse24.ops.device import device_info
from sparse24.ops.direct import DirectLaunches, output_template
from sparse24.tuning import generation as _tuning_generation

# Registers per thread after setmaxnreg: the two math warpgroups take 232, the loader warp's
# warpgroup 40 (4 * 232 + 4 * 232 + 4 * 40 = 2016 <= 2048 = 65536 registers / 32 lanes).
MATH_REGS = 232
LOADER_REGS = 40
# Shared memory a block can have on sm90 (227 KB): the configs' rings, epilogue tiles and barriers
# must fit.
MAX_SHARED_BYTES = 232448


def shared_bytes(bt: int, stages: int, split: bool = False, meta_ring: bool = False,
                 block_f: int = 128) -> int:
    """Shared memory of one program: the A and x rings (and the metadata ring of META_RING), two
    [bt, 64] epilogue tiles (float32 for split-K partial sums), barriers."""
    epilogue = 2 * bt * 64 * (4 if split else 2)
    stage = wgmma_asm.a_stage_bytes(block_f) + 2 * wgmma_asm.x_stage_bytes(bt)
    if meta_ring:
        stage += wgmma_asm.META_STAGE_BYTES
    # barriers and the allocator's padding: 200-232 bytes in the kernels compiled by
    # tests/test_wgmma_compile.py (Triton 3.6 and 3.9)
    return stages * stage + epilogue + 512


# ASM_LOOP values the asm k-loop takes (k-blocks between drains), and those worth timing: drained
# every k-block (the lever's baseline), every 2 and every 4.
ASM_LOOP_VALUES = (1, 2, 4, 8)
ASM_LOOPS = (1, 2, 4)


def runnable(cfg: dict) -> bool:
    """Whether a well-formed sm90 config (positive int BT, STAGES, GROUP; ASM_LOOP one of its
    values) can run: a token tile wgmma has, the asm k-loop's 2-8 stages, and shared memory
    (a tuned config read from a file may ask for anything)."""
    if cfg["BT"] not in wgmma_asm.TOKEN_TILES:
        return False
    if cfg.get("ASM_LOOP", 0) and not (2 <= cfg["STAGES"] <= 8
                                       and cfg["BT"] in wgmma_asm.LOOP_TOKEN_TILES
                                       and 1 <= cfg.get("META_AHEAD", 1) <= 4):
        return False  # META_AHEAD: its own metadata loads, that many batches ahead
    meta_ring = cfg.get("META_RING", 0) == 1
    if meta_ring and (cfg.get("ASM_LOOP", 0) or cfg.get("META_AHEAD", 1) != 1):
        return False  # the metadata comes through the ring: no asm k-loop, no loads ahead
    block_f = cfg.get("BLOCK_F", 128)
    if block_f == 256 and (cfg["BT"] not in BLOCK_F_256_TOKEN_TILES or meta_ring
                           or cfg.get("ASM_LOOP", 0) or cfg.get("SPLIT_K", 1) > 1):
        return False  # two bands: the Gluon k-loop, metadata from global memory, unsplit
    return shared_bytes(cfg["BT"], cfg["STAGES"], cfg.get("SPLIT_K", 1) > 1,
                        meta_ring, block_f) <= MAX_SHARED_BYTES


# Split-K counts worth timing where tiles are few (SPLIT_K > 1 is not yet checked on a GPU), and
# the tile count from which no split is offered (four waves of an H100/H200's 132 SMs).
SPLIT_KS = (2, 4, 8)
_SPLIT_MAX_TILES = 4 * 132
# The SM count the candidate pools assume (an H100's / H200's): candidates() takes no device
_TUNER_SMS = 132


# Ring depths worth timing. A small token tile is mostly a 16 KB stage of weight: a deep ring keeps
# up to 10-12 of them in flight an SM (BT 16: 20 KB a stage, 11 fit; BT 8: 18 KB, 12), for
# few-token calls to stream the weight.
_STAGES = (2, 3, 4, 5, 6)
_STREAMING_STAGES = (4, 6, 8, 10, 12)


def output_tiles(m: int, n: int, bt: int, block_f: int = 128) -> int:
    """Output tiles of block_f features x bt tokens: the programs a launch has work for (per
    split)."""
    return -(-n // block_f) * -(-m // bt)


# BLOCK_F 256: each warpgroup issues two 64-feature bands' wgmmas on one x descriptor. The
# kernel reads, per flop, 1 / (2 BT) bytes of A and 1 / BLOCK_F of x from L2 (k-blocks of
# 128 inputs: A is BLOCK_F x 64 values, x BT x 128): 128 x 256 tiles 0.0098 B/flop, 256 x 128
# tiles 0.0078. Per token, the H200 sweep's 128 x 128 tiles ran 0.85x the speed of 128 x 256
# and 128 x 64 0.6x (_TILE_RATE), close to the ratio of those bytes (0.84 and 0.63): the
# throughput follows the L2 traffic. Two bands hold 2 x BT / 2 float32 accumulators a thread:
# token tiles of 64 and 128 only (128 x 2 registers at BT 256 do not fit).
BLOCK_F_256_TOKEN_TILES = (64, 128)


def worth_timing(bt: int, m: int, n: int | None = None, sms: int = 132) -> bool:
    """Token tiles up to twice the tokens (8 at least); the small ones (8-32, weight streaming)
    only where they are at least a quarter of the tokens: each token tile reads the weight again;
    and, given the weight's n, the mid-token rule's 32 where 64-token tiles leave SMs idle and
    32-token ones fit a wave of ``sms`` (``mid_token_tile``)."""
    if bt > max(8, 2 * m):
        return False
    if bt >= 64 or 4 * bt >= m:
        return True
    return n is not None and bt == 32 and mid_token_tile(m, n, sms) == 32


def candidates(m: int, n: int, k: int, asm_loops: tuple[int, ...] = (0,),
               split_ks: tuple[int, ...] = (1,), meta_ring: bool = True,
               every_tile: bool = False, block_fs: tuple[int, ...] = (128,)) -> list[dict]:
    """Every sm90 config worth timing for [m, k] x [n, k]^T, in each mainloop form of
    ``asm_loops`` (0: the Gluon k-loop; D: the asm k-loop draining every D k-blocks) and each
    split of K in ``split_ks`` (1: none; S: S splits of the k-blocks, float32 partial sums and a
    reduction launch; only where there are fewer tiles than four waves of 132 SMs: below two the
    SMs idle, and up to four a partial last wave idles a share of them, as the 288 tiles of
    6144 x 768 at 128 x 128 fill 2.2 waves). Both forms pass the GPU suite, and both lost on the
    H200 where they were meant to win (ASM_LOOP 3-9% slower on large GEMMs; SPLIT_K faster only
    at 384 x 768 x 3072; bench/NOTES.md 2026-12-05): they are offered only on request.
    Token tiles: those ``worth_timing`` for m (8-32 only for few tokens), with rings of 2-6
    stages, or 4-12 for the small tiles, which also come with their metadata 2 and 4 k-blocks
    ahead (META_AHEAD); the asm k-loop only for tiles of 64 tokens and more. ``meta_ring`` adds,
    beside each Gluon-loop config, its META_RING form (the metadata through the ring, the
    few-token rule's) where it fits in shared memory. ``every_tile`` offers the small tiles at any
    token count (a sweep's question: where tiles are few, do more programs, each reading its weight
    tile again, beat a few large ones?). ``block_fs`` with 256 adds the 256-feature tiles
    (``BLOCK_F_256_TOKEN_TILES``) of 64 and 128 tokens, in the Gluon k-loop with every ring that
    fits; where the heuristic takes them (``one_wave_wide_config``) its config is offered anyway."""
    configs = []
    k_blocks = -(-k // 128)
    for bt in wgmma_asm.TOKEN_TILES:
        if not (worth_timing(bt, m, n) or (every_tile and bt <= max(8, 2 * m))):
            continue
        tiles = output_tiles(m, n, bt)
        for split in split_ks:
            if split > 1 and (split > k_blocks or tiles >= _SPLIT_MAX_TILES):
                continue
            for stages in _STAGES if bt >= 64 else _STREAMING_STAGES:
                if shared_bytes(bt, stages, split > 1) > MAX_SHARED_BYTES:
                    continue
                for drain in asm_loops:
                    if drain and bt not in wgmma_asm.LOOP_TOKEN_TILES:
                        continue
                    cfg = {"family": "wgmma", "BT": bt, "STAGES": stages,
                           "GROUP": tile_group(n, bt)}
                    if drain:
                        cfg["ASM_LOOP"] = drain
                    if split > 1:
                        cfg["SPLIT_K"] = split
                    configs.append(cfg)
                    if bt < 64 and not drain:  # weight streaming: metadata further ahead
                        configs += [cfg | {"META_AHEAD": 2}, cfg | {"META_AHEAD": 4}]
                    if (meta_ring and not drain
                            and shared_bytes(bt, stages, split > 1, True) <= MAX_SHARED_BYTES):
                        configs.append(cfg | {"META_RING": 1})
    wide = 256 in block_fs
    if wide or _one_wave_wide(m, n, _TUNER_SMS):  # the heuristic's pick there: the tuner times it
        for bt in BLOCK_F_256_TOKEN_TILES if wide else (128,):
            if not worth_timing(bt, m, n):
                continue
            configs += [{"family": "wgmma", "BT": bt, "STAGES": stages,
                         "GROUP": tile_group(n, bt), "BLOCK_F": 256} for stages in _STAGES
                        if shared_bytes(bt, stages, block_f=256) <= MAX_SHARED_BYTES]
    return configs


# The few-token calls the sm90 kernel takes from the mma kernel (up to MMA_MAX_TOKENS_SM90 tokens,
# sparse24/ops/gemm.py): every one of 1 to 64 tokens, the metadata through the ring (META_RING).
# H100, CUDA graphs, against the best config of the other forms timed in the same run (the mma
# kernel's split-K, this kernel with its metadata loaded ahead, split or not; the rule before this
# one among them; bench/results/h100/gemm_variants.jsonl, run 20261205T213707Z-cf1b4d), cuBLAS = 1:
#   1 x 14336 x 4096  1.47x -> 1.60x     16 x 14336 x 4096  1.43x -> 1.60x
#   1 x 4096 x 4096   1.41x -> 1.56x     16 x 4096 x 4096   1.35x -> 1.59x
#   16 x 3072 x 768   0.95x -> 1.00x     64 x 4096 x 4096   0.89x -> 1.33x
# (Those runs had token tiles of 8 up to 32 tokens and 16 above, 10 stages: the token tile and
# its ring are chosen as below since.) Unsplit where there are 24 feature tiles or more: a split
# lost there (1 x 4096 x 4096: 1.43x split 4 against 1.56x). With fewer tiles and a long K, 4 splits
# (and 8 stages, what fits beside the float32 partial tiles): 16 x 768 x 3072 1.14x and 64 x 768 x
# 3072 1.10x, against 0.93x and 0.79x for the mma kernel's split-K and 0.96x unsplit (run
# 20261205T220235Z-64d494).
# Below cuBLAS still: BERT-base's K = 768 shapes, 0.94-0.97x at 1-64 tokens (4.3-5.1 us
# kernels against 4.0-4.8 us: launch and pipeline latency, not bandwidth).
# The token tile, from runs 20261205T233552Z-111ec7 and 20261205T234520Z-a64c99 (H100, graphs,
# every META_RING tile and depth timed): each token tile reads the weight tile again (from L2
# where its neighbours run beside it), so the largest tile that still leaves _STREAMING_PROGRAMS
# programs, else the smallest (at least a quarter of the tokens). Best tile and ring, and the
# rule before this one (BT 8 up to 32 tokens, else 16, 10 stages):
#   16 x 14336 x 4096  BT 16, 4 stages 1.64x (1.61x)   32 x 14336 x 4096  BT 32, 4: 1.66x (1.41x)
#   64 x 14336 x 4096  BT 64, 4: 1.60x (1.35x)         16 x 28672 x 4096  BT 16, 4: 1.71x (1.66x)
#   64 x 28672 x 4096  BT 64, 4: 1.71x (1.35-1.44x)    64 x 6144 x 4096   BT 32, 6: 1.48x (1.14x)
#   64 x 4096 x 4096   BT 16, 10: 1.36x (the same)     32 x 4096 x 4096   BT 8, 10: 1.39x (same)
#   64 x 4096 x 14336  BT 16, 10: 1.62x (the same)     48 x 4096 x 4096   BT 16, 10: 1.33x (same)
# 96 programs was the threshold these agreed with (192 would give 64 x 6144 x 4096 BT 16,
# 1.14x); none had 80-95. Then 64 x 11008 x 4096 (86 feature tiles): BT 64, 3 or 6 stages, 22.8
# and 23.2 us against the rule's BT 32 (172 programs) 25.1 us (H100, run
# 20261206T115102Z-c98541, bench/results/h100/gemm_variants_streamk.jsonl): 80, which the
# shapes above agree with too. Same-run A/B against 96 (run 20261206T140234Z-8cd86a,
# versions_rule80.md): 16-64 x 11008 x 4096 and 64 x 10240 x 4096 1.07-1.20x faster
# (16 x 11008 x 4096 1.47x -> 1.74x cuBLAS), 14336, 4096 and 6144 features unchanged (1.00).
# The ring: where the tile is the only one reading its weight (one token tile), 4 stages
# (1.60-1.71x against 1.55-1.69x at 6 and more, five shapes); where several token tiles
# share it, deep rings (BT 16 at 4096 features: 4 stages 1.16-1.25x, 10 stages 1.32-1.62x).
# BT 8 keeps 10 stages at every count: 4 was not timed for it.
FEW_TOKEN_MAX = 64  # the most tokens of the rule (sparse24/ops/gemm.py's MMA_MAX_TOKENS_SM90)
_FEW_TILES = 24  # 128-feature tiles under which a long K is split
_SHORT_K = 1024
_BUSY_PROGRAMS = 96  # about three quarters of an H100's / H200's 132 SMs (the mid-token rule)
_STREAMING_PROGRAMS = 80  # the few-token rule's (see above)
_SHARED_TILE_STAGES = {8: 10, 16: 10, 32: 6, 64: 4}  # rings where token tiles share a weight tile


def few_token_tile(m: int, n: int) -> int:
    """The token tile of the few-token rule (see above): 8-64 tokens, at least a quarter of m
    and, above 8, less than twice it."""
    allowed = [bt for bt in (8, 16, 32, 64) if 4 * bt >= m and bt < max(16, 2 * m)]
    busy = [bt for bt in allowed if output_tiles(m, n, bt) >= _STREAMING_PROGRAMS]
    return max(busy) if busy else min(allowed)


def few_token_stages(m: int, bt: int) -> int:
    """The ring depth of the few-token rule's tile (see above)."""
    return 4 if bt >= 16 and m <= bt else _SHARED_TILE_STAGES[bt]


def few_token_config(m: int, n: int, k: int) -> dict | None:
    """The sm90 config for 0-64 tokens (this kernel streams the weight faster than the mma
    kernel's split-K at every shape timed, see above), else None."""
    if m > FEW_TOKEN_MAX:
        return None
    bt = few_token_tile(m, n)
    cfg = {"family": "wgmma", "BT": bt, "STAGES": few_token_stages(m, bt),
           "GROUP": tile_group(n, bt), "META_RING": 1}
    if -(-n // 128) < _FEW_TILES and k > _SHORT_K:
        if n % 64:
            # a split's float32 partials of a ragged N have not run on a GPU at few tokens: such
            # weights keep the dot kernel's split-K, as before this rule (unsplit, a ragged N ran:
            # tests/test_gemm.py, test_linear_few_tokens_default_configs_gpu, 96 features)
            return None
        cfg.update(STAGES=8, SPLIT_K=4)
    return cfg


# Speed per token of each token tile relative to 128 x 256, from the H200 sweep
# (bench/results/h200/wgmma_sweep_b50bc5c.log: 128 x 128 was 10-20% slower, 128 x 64 35-50%).
_TILE_RATE = {256: 1.0, 128: 0.85, 64: 0.6}


def heuristic_config(m: int, n: int, k: int, sms: int = 132) -> dict:
    """Without tuning: the token tile with the least estimated time, waves of the persistent grid
    times the time of one tile. A tile of 256 tokens is the fastest per token, but where it leaves
    SMs idle a smaller one wins: 256 x 4096 x 4096 is 32 tiles of 256 for 132 SMs, 128 of 64;
    6144 x 768 x 768 is 144 tiles of 256 (two waves for 1.09 of work), 288 of 128 (3 for 2.18).
    64- and 128-token tiles with the metadata through the ring (``mid_token_config``, and
    ``_RING_128_STAGES`` at 128); 256-token tiles with as many stages as fit, except where they
    are one token tile in at most a wave (``one_wave_wide_config``)."""
    bt = _estimated_token_tile(m, n, sms)
    if _one_wave_wide(m, n, sms, bt):
        return one_wave_wide_config(n)
    if bt == 64:
        return mid_token_config(m, n, sms)
    if bt == 128:
        return {"family": "wgmma", "BT": 128, "STAGES": _RING_128_STAGES,
                "GROUP": tile_group(n, 128), "META_RING": 1}
    stages = max(s for s in range(2, 7) if shared_bytes(bt, s) <= MAX_SHARED_BYTES)
    return {"family": "wgmma", "BT": bt, "STAGES": stages, "GROUP": tile_group(n, bt)}


def _estimated_token_tile(m: int, n: int, sms: int) -> int:
    """The token tile (64, 128 or 256) with the least estimated time (``heuristic_config``)."""
    def estimate(bt):
        tiles = output_tiles(m, n, bt)
        return -(-tiles // sms) * bt / _TILE_RATE[bt]

    return min((b for b in (256, 128, 64) if b <= max(64, 2 * m)), key=estimate)


def _one_wave_wide(m: int, n: int, sms: int, bt: int | None = None) -> bool:
    """Whether the estimate's tile is 256 tokens, one token tile, in at most a wave (below)."""
    bt = _estimated_token_tile(m, n, sms) if bt is None else bt
    return bt == 256 and m <= 256 and output_tiles(m, n, 256) <= sms


# Where the estimate picks 256-token tiles for at most 256 tokens in at most one wave (the
# LLM MLP weights at 129-256 tokens: 8449-16896 rows, where 128-token tiles would take two
# waves), 256 features x 128 tokens in three stages: as many tiles, each reading half of x, and a
# ring one stage deeper. H100, CUDA graphs, runs 20261206T103853Z-a4d074,
# 20261206T104000Z-f79044 and (through this rule) 20261206T104256Z-c25910
# (bench/results/h100/gemm_variants_m256.jsonl), cuBLAS = 1, 128 x 256 -> 256 x 128:
#   256 x 11008 x 4096  0.97x / 1.00x / 0.95x -> 1.12x / 1.18x / 1.10x
#   256 x 14336 x 4096  1.16x / 1.15x / 1.20x -> 1.28x / 1.32x / 1.35x
#   256 x 8704 x 4096   0.88x / 0.93x -> 1.00x / 1.04x   256 x 16384 x 4096  1.27x -> 1.40x
#   200 x 12288 x 4096  0.99x -> 1.15x                   256 x 11008 x 8192  1.02x -> 1.14x
#   224 x 11008 x 4096  0.99x -> 0.98x (a tie)
# (192 x 11008 x 4096 keeps the estimate's 64-token tiles: 1.41x against 1.07x.) Timed at 200-256
# tokens; from 129 the rule fires where N is larger (both tiles cover 256 token slots), not
# timed. Elsewhere the 256-feature tiles tied or lost (bench/NOTES.md, session 12).
def one_wave_wide_config(n: int) -> dict:
    """256 features x 128 tokens, 3 stages (see above)."""
    return {"family": "wgmma", "BT": 128, "STAGES": 3, "GROUP": tile_group(n, 128), "BLOCK_F": 256}


# Where the estimate above picks 64-token tiles (65 to about 1000 tokens on BERT-base's weights,
# up to 256 on 4096 x 4096): the metadata through the ring, as the few-token rule has it, and
# 32-token tiles where 64-token ones leave SMs idle (fewer than _BUSY_PROGRAMS programs). From
# run 20261206T012549Z-551941 (H100, CUDA graphs, every META_RING tile of 16-128 tokens, split
# or not, timed; bench/results/h100/gemm_variants.jsonl), cuBLAS = 1, before -> after:
#   384 x 768 x 3072   BT 64, 6 stages 0.50x -> BT 32 ring, 6: 0.89x (BT 64 ring 0.78x; 36 programs)
#   384 x 768 x 768    BT 64 0.72x -> BT 32 ring 0.95x (BT 64 ring 0.87x)
#   384 x 2304 x 768   BT 64 0.81x -> BT 64 ring 1.01x (108 programs; BT 32 0.84x)
#   1024 x 768 x 3072  BT 64 0.70x -> BT 64 ring, 6: 0.98x (96 programs; BT 32 0.79x)
# But not where the 32-token tiles take a second wave (more than 132 programs): run
# 20261206T085101Z-bc3518 (H100, CUDA graphs, ring, 6 stages, programs at 64 / at 32;
# bench/results/h100/gemm_variants_midtoken.jsonl), BT 32 against BT 64:
#   512 x 768 x 3072   (48 / 96)   0.99x against 0.88x      512 x 768 x 768 (48 / 96)  0.95x / 0.86x
#   640 x 768 x 3072   (60 / 120)  0.89x against 0.80x
#   768 x 768 x 3072   (72 / 144)  0.58x against 0.85x      768 x 768 x 768 (72 / 144) 0.82x / 0.97x
#   900 x 768 x 3072   (90 / 180)  0.68x against 1.00x
# so 32 only where its tiles fit one wave. The change moves 705-960 tokens on 768 features to 64
# (961+ had 96 programs at 64 already) and, where the estimate picks 64-token tiles, 513-704 on
# 1024, 225-320 on 2304, 161-192 on 3072 (132 SMs; those three not measured).
# Tiles of 16 lost at each (0.57-0.77x: 144+ programs, each a quarter of a wgmma's width), and
# so did splitting K (2 or 4 splits, 0.33-0.79x) and, where the estimate picks 128-token tiles,
# 64 with the ring (384 x 3072 x 768 0.79x against 0.83x, 1536 x 768 x 768 0.82x against 0.88x).
_MID_TOKEN_STAGES = 6
# And where it picks 128-token tiles: the ring too, with 3 stages (4 do not fit beside its 2 KB
# a stage), against the 4 stages with the metadata loaded in the k-loop. Run
# 20261206T033010Z-88287a (H100, CUDA graphs, bench/results/h100/gemm_variants.jsonl), cuBLAS = 1:
#   384 x 3072 x 768   0.85x -> 0.91x     1536 x 768 x 768   0.90x -> 0.92x
#   6144 x 768 x 768   0.86x -> 0.93x     6144 x 768 x 3072  0.83x -> 0.89x (BT 64 ring 0.90x)
# Where it picks 256 (no ring fits: 2 stages of it are 1.5 KB over) the 256 tiles stay:
# 4096 x 4096 x 4096 1.38x against 1.29x for BT 128 with the ring, 4096 x 14336 x 4096 1.32x
# against 1.13x, 6144 x 3072 x 768 1.22x against 1.25x.
_RING_128_STAGES = 3


# The persistent grid's tile order for token tiles of 128 and 256 (GROUP: token tiles walked per
# feature tile before the next feature tile; with 132 programs in flight a wave covers GROUP token
# tiles of 132 / GROUP feature tiles). Of the 20 shape-runs of the sweep where 8 and the rule's
# pick give different orders, 8 was slower at 15, equal at 3 (4096 x 11008 x 4096; two grids of
# one wave), faster at 2 (4096 x 4096 x 11008 in one of two runs, 1.28x against 1.17x; 1536 x
# 3072 x 768, 0.99x against 0.98x). Why is not established (counted in unique tiles, a wave of
# 8 x 16.5 moves as many bytes a k-block as one of 4 x 32; not profiled). Runs
# 20261206T061610Z-64eb39 and 20261206T061748Z-104f22 (H100, CUDA graphs, the heuristic's config
# at GROUP 1, 2, 4, 8, each checked against F.linear, then timed;
# bench/results/h100/gemm_variants.jsonl, bench/NOTES.md session 10), cuBLAS = 1, GROUP 8 ->
# this rule:
#   fewer than 32 feature tiles (n <= 3968), 2:  6144 x 2304 x 768 1.04x -> 1.24x,
#     24576 x 3072 x 768 1.24x -> 1.38x, 24576 x 768 x 3072 1.09x -> 1.17x, 6144 x 3072 x 768
#     1.13x / 1.18x -> 1.29x / 1.23x (two runs), 6144 x 768 x 3072 (BT 128) 0.99x -> 1.02x;
#   32 and more, 4:  2048 x 4096 x 4096 1.21x -> 1.45x, 8192^3 1.27x -> 1.45x, 2048 x 28672 x 4096
#     1.31x -> 1.48x, 4096 x 14336 x 4096 1.29x -> 1.39x, 4096 x 4096 x 11008 1.28x / 1.23x ->
#     1.17x / 1.44x (two runs), 4096 x 11008 x 4096 1.46x both, 1024 x 14336 x 4096 1.28x ->
#     1.26x (4 token tiles: GROUP 4 and 8 give the same order).
# Where the tiles of a feature tile are 4 or fewer (up to 1024 tokens at 256) the order is the
# same for 4 and 8. The few- and mid-token tiles (8-64, up to 64 and about 1000 tokens) keep 8,
# so that the token tiles reading one weight tile run together; those orders were not swept.
_FEW_FEATURE_TILES = 32


def tile_group(n: int, bt: int) -> int:
    """GROUP of the tile order for a weight of n rows and token tiles of bt (see above)."""
    if bt < 128:
        return 8
    return 2 if -(-n // 128) < _FEW_FEATURE_TILES else 4


def served(cfg: dict, n: int) -> dict:
    """A tuned config as linear runs it. Entries tuned before the tile-order rule (f6bd302) hold
    GROUP 8 at 128- and 256-token tiles, the only order their pool offered (the tuner chose the
    tile and the ring, never the order): they take the rule's order. Any other GROUP, and every
    other field, is served as tuned."""
    if cfg.get("GROUP") == 8:
        return cfg | {"GROUP": tile_group(n, cfg["BT"])}
    return cfg


def mid_token_tile(m: int, n: int, sms: int = 132) -> int:
    """64, or 32 where 64-token tiles would leave fewer than _BUSY_PROGRAMS programs and
    32-token ones still fit in one wave of the SMs (a second wave of 32-token tiles lost more
    than the idle SMs cost: see above)."""
    if output_tiles(m, n, 64) >= _BUSY_PROGRAMS or output_tiles(m, n, 32) > sms:
        return 64
    return 32


def mid_token_config(m: int, n: int, sms: int = 132) -> dict:
    """The sm90 config where the token-tile estimate picks 64 (see above)."""
    bt = mid_token_tile(m, n, sms)
    return {"family": "wgmma", "BT": bt, "STAGES": _MID_TOKEN_STAGES, "GROUP": tile_group(n, bt),
            "META_RING": 1}


@functools.lru_cache(maxsize=None)
def supported(device_index: int) -> bool:
    """wgmma.sp needs sm_90a (H100, H200); Gluon is in every Triton sparse24 supports."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability(device_index) == (9, 0)


def _sm_count(device_index: int) -> int:
    return device_info(device_index)[2]  # memoized there, the one source gemm's heuristic reads too


@functools.lru_cache(maxsize=None)
def _nvmma_layout():
    from triton.experimental.gluon import language as gl

    return gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)


@functools.lru_cache(maxsize=None)
def _gated_layout():
    # [bt, 32] 16-bit boxes of a gated epilogue's output: 64 bytes a row, a 64-byte swizzle
    from triton.experimental.gluon import language as gl

    return gl.NVMMASharedLayout(swizzle_byte_width=64, element_bitwidth=16, rank=2)


@functools.lru_cache(maxsize=None)
def _partials_layout():
    # float32 [bt, 64] boxes are 256 bytes a row, more than a 128-byte swizzle spans: unswizzled
    from triton.experimental.gluon import language as gl

    return gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=2)


def splits_of(cfg: dict, k: int) -> int:
    """Splits of a SPLIT_K config's k-blocks of 128, none left empty (the kernel's own rule)."""
    k_blocks = -(-k // 128)
    per_split = -(-k_blocks // cfg.get("SPLIT_K", 1))
    return -(-k_blocks // per_split)


@functools.lru_cache(maxsize=None)
def _reduce():
    # imported on first use: sparse24.ops.families imports this module
    from sparse24.ops.families import _splitk

    return _splitk.reduce


class SharedMemoryOffsetError(RuntimeError):
    """Triton placed the operand rings where the asm does not look for them."""


def _constexprs(cfg: dict, dtype: str, has_bias: bool, activation: int, offsets: tuple) -> dict:
    return _constexprs_cached(cfg["BT"], cfg["STAGES"], cfg["GROUP"], cfg.get("ASM_LOOP", 0),
                              cfg.get("SPLIT_K", 1), dtype, has_bias, activation, tuple(offsets),
                              cfg.get("META_AHEAD", 1), cfg.get("META_RING", 0),
                              cfg.get("BLOCK_F", 128))


@functools.lru_cache(maxsize=None)
def _constexprs_cached(bt, stages, group, asm_loop, split_k, dtype, has_bias, activation,
                       offsets, meta_ahead=1, meta_ring=0, block_f=128) -> dict:
    # memoized: the asm text is a few KB of string formatting, too slow to redo per call; the
    # order is the kernel's (CachedLaunch passes them positionally). offsets: the
    # ASM_ALLOCATIONS', and with META_RING the metadata ring's last.
    a_off, x_off, full_off, empty_off = offsets[:4]
    bands = wgmma_asm.bands_of(block_f)  # 64-feature bands a warpgroup owns
    if asm_loop:
        mma = [wgmma_asm.loop_asm(bt, dtype, wg, stages, asm_loop, a_off, x_off, full_off,
                                  empty_off, meta_ahead) for wg in (0, 1)]
        mma_con = wgmma_asm.loop_constraints(bt)
    else:
        meta_off = offsets[4] if meta_ring else None
        mma = [wgmma_asm.mma_asm(bt, dtype, wg, a_off, x_off, meta_off, bands) for wg in (0, 1)]
        mma_con = wgmma_asm.mma_constraints(bt, bands)
    return dict(
        MMA_ASM_0=mma[0], MMA_ASM_1=mma[1], MMA_CON=mma_con,
        META_ASM=wgmma_asm.meta_asm(bt, bands),
        META_CON=wgmma_asm.meta_constraints(bt, bands),
        BT=bt, STAGES=stages, GROUP=group, HAS_BIAS=has_bias,
        ACTIVATION=activation, ASM_LOOP=bool(asm_loop), SPLIT_K=split_k, LOADER_REGS=LOADER_REGS,
        MATH_REGS=MATH_REGS, META_AHEAD=meta_ahead, META_RING=bool(meta_ring),
        BLOCK_F=block_f,
    )


# The kernel's shared-memory allocations the asm addresses, by their names in the kernel source:
# the operand rings (both forms) and the ring's mbarriers (the asm k-loop waits and arrives on
# them itself).
ASM_ALLOCATIONS = ("operand_ring_a", "operand_ring_x", "ring_full", "ring_empty")
# and, in a META_RING kernel, the metadata ring (the MMA asm reads its words there)
META_RING_ALLOCATION = "operand_ring_meta"


def ring_offsets(ttgir: str) -> tuple[int, ...]:
    """Byte offsets from global_smem of the ``ASM_ALLOCATIONS`` in a compiled kernel's TTGIR, and
    of ``META_RING_ALLOCATION`` last where the kernel has one."""
    offsets = triton_internals.shared_memory_offsets(ttgir)
    names = ASM_ALLOCATIONS + ((META_RING_ALLOCATION,) if META_RING_ALLOCATION in offsets else ())
    try:
        return tuple(offsets[name] for name in names)
    except KeyError as missing:
        raise SharedMemoryOffsetError(
            f"sparse24 wgmma: the compiled kernel has no allocation named {missing}; found "
            f"{sorted(offsets)}. The kernel source and sparse24/ops/wgmma.py disagree") from None


# The bytes Triton places between the epilogue tiles and the mbarriers: the warp_specialize
# op's captured partition arguments (meta_addr, N, K, the rings, the descriptors, ...), 144
# bytes, 16 more with the bias pointer. Read from the allocation of compiled kernels, the same
# under Triton 3.6 and 3.9 at every token tile, ring depth, k-loop form and split
# (tests/test_wgmma_compile.py: the guess must equal the allocation).
_CAPTURE_BYTES = 144
_BIAS_CAPTURE_BYTES = 16
# META_RING's loader takes the metadata ring, its address, N and K
_META_RING_CAPTURE_BYTES = 16


def guessed_offsets(cfg: dict, has_bias: bool = False,
                    gated: bool = False) -> tuple[int, ...]:
    """Where Triton's allocator places the ``ASM_ALLOCATIONS`` (and META_RING's metadata ring,
    last): the buffers largest first, ties in the kernel's order of allocation (the x ring,
    2 * STAGES * BT * 128 bytes; the A ring, STAGES * BLOCK_F * 128; two epilogue tiles of BT x 64
    elements, float32 partial sums where split, BT x 32 where ``gated`` pairs the rows in the
    kernel; the metadata ring, STAGES * 2 KB), then the captured partition arguments, then the
    mbarriers (8 bytes each). A launch still checks the guess on the compiled kernel and
    compiles again with the real offsets where it was wrong (another Triton's allocator): the
    asm must never address bytes it only guessed."""
    meta_ring = cfg.get("META_RING", 0) == 1
    block_f = cfg.get("BLOCK_F", 128)
    y_bytes = 4 if cfg.get("SPLIT_K", 1) > 1 else 2
    y_columns = 32 if gated and cfg.get("SPLIT_K", 1) == 1 else 64
    y_tile = cfg["BT"] * y_columns * y_bytes
    # the buffers in the kernel's order of allocation; the allocator places the larger first,
    # ties in that order (seen at every config the compile tests build)
    buffers = [("x", 2 * cfg["STAGES"] * wgmma_asm.x_stage_bytes(cfg["BT"])),
               ("a", cfg["STAGES"] * wgmma_asm.a_stage_bytes(block_f)),
               ("y0", y_tile), ("y1", y_tile)]
    if meta_ring:
        buffers.append(("meta", cfg["STAGES"] * wgmma_asm.META_STAGE_BYTES))
    offset, at = 0, {}
    for name, size in sorted(buffers, key=lambda item: -item[1]):  # stable: ties keep the order
        at[name] = offset
        offset += size
    full = (offset + _CAPTURE_BYTES + (_BIAS_CAPTURE_BYTES if has_bias else 0)
            + (_META_RING_CAPTURE_BYTES if meta_ring else 0))
    barriers = -(-8 * cfg["STAGES"] // 16) * 16  # padded to 16 bytes (Triton 3.9, 3 stages: 32)
    guess = (at["a"], at["x"], full, full + barriers)
    return guess + (at["meta"],) if meta_ring else guess


@functools.lru_cache(maxsize=None)
def _cached_launch():
    from sparse24.kernels.sparse_wgmma import _sparse_wgmma_kernel

    return triton_internals.CachedLaunch(_sparse_wgmma_kernel)


# (BT, STAGES, GROUP, ASM_LOOP, SPLIT_K, META_AHEAD, META_RING, BLOCK_F, x dtype, bias dtype or
#  None, ACTIVATION) ->
# the kernel's constexpr values, with the shared-memory offsets verified on the compiled kernel
_plans: dict[tuple, tuple] = {}
# (id(config), M, N, K, the dtypes of x, values and the output (each a descriptor's), bias
# dtype or False, ACTIVATION, splits, whether meta's address fits 32 bits, device) -> the
# DescriptorLauncher of that specialization, its grid and constexprs (ops/direct.py; False
# where Triton's launcher is not one it can drive: then every call takes CachedLaunch). Only
# calls whose meta and bias pointers are 16-byte aligned look here (Triton specializes a pointer
# on that alone; the descriptors' tensors are aligned: TMA needs it); N and K are in the key by
# value, so every int Triton specialized is fixed. A call through it costs ~15 us less host time
# than through Triton's own wrappers (bench/overhead.py).
_direct = DirectLaunches(lambda compiled: triton_internals.DescriptorLauncher.of(compiled, 3))


def launch(x2: torch.Tensor, values: torch.Tensor, meta: torch.Tensor, bias, y: torch.Tensor,
           activation: int, cfg: dict):
    """y[M, N] = act(x2 @ W^T + bias) (y [M, N / 2] under a gated activation, see below). x2
    [M, K] with unit stride along K, 16-byte aligned rows
    (the caller copies otherwise: TMA needs it); values [N, K/2] and y [M, N] contiguous.
    SPLIT_K > 1: the kernel writes each split's float32 partial sums, each split's rows padded to
    whole token tiles, and the split-K reduction of the mma and dot families adds them up with
    the bias and activation. A gated activation (y [M, N / 2]): unsplit, the kernel pairs the
    rows in its epilogue where ``PAIR_GATED_IN_KERNEL``; else it writes the sums with bias in x's
    dtype ([M, N], each rounded once as an unfused model's two projections are) and the
    reduction's gated form pairs them, a second pass over [M, N].
    Returns the direct launch that serves this call's specialization from now on, where y is
    written in one launch (``_launch_kernel``'s entry), else None: ``PlannedLaunch`` keeps it."""
    m, k = x2.shape
    n = values.shape[0]
    if cfg.get("SPLIT_K", 1) == 1:
        if activation < GATED_FLAG or PAIR_GATED_IN_KERNEL:
            return _launch_kernel(x2, values, meta, bias, y, activation, cfg, 1, y)
        else:
            sums = torch.empty((m, n), dtype=y.dtype, device=y.device)
            _launch_kernel(x2, values, meta, bias, sums, 0, cfg, 1, sums)
            _reduce()(sums, None, y, activation, 1)
        return None
    splits = splits_of(cfg, k)
    rows = -(-m // cfg["BT"]) * cfg["BT"]
    partial = torch.empty((splits * rows, n), dtype=torch.float32, device=y.device)
    _launch_kernel(x2, values, meta, None, partial, 0, cfg, splits, y)
    _reduce()(partial, bias, y, activation, splits, split_stride=rows * n)
    return None


# Whether the kernel's own epilogue pairs a gated activation's rows (a [BT, 32] tile of
# act(gate) * up per warpgroup) instead of a second pass: 1.47-1.66x dense against 1.24-1.37x for
# the second pass at 256-8192 tokens (H100, bench/results/h100/gated.md); both forms pass
# tests/test_wgmma_gpu.py's test_gated_epilogues. Read per call by ``launch``; a linear() plan
# that has launched a paired gated epilogue keeps that direct launch (PlannedLaunch), so set it
# before the first call (or empty sparse24.ops.gemm._plans).
PAIR_GATED_IN_KERNEL = True


def _launch_kernel(x2, values, meta, bias, out, activation: int, cfg: dict, splits: int,
                   y):
    """One launch: out is y, or the float32 partial sums of a SPLIT_K config (then bias is None
    and activation 0: the reduction applies them); y stands in for the unused bias pointer.
    Returns the direct launch's entry (launcher, grid0, constexprs) that serves this call's key
    from now on, or None (a misaligned pointer; a launcher it cannot drive; a launch hook)."""
    m, k = x2.shape
    n = values.shape[0]
    device = triton_internals.current_device()
    meta_addr = meta.data_ptr()
    bias_addr = y.data_ptr() if bias is None else bias.data_ptr()
    key = None if (meta_addr | bias_addr) & 15 else (
        id(cfg), m, n, k, x2.dtype, values.dtype, out.dtype, bias is not None and bias.dtype,
        activation, splits, meta_addr < 2**31, device)
    entry = key and _direct.get(key, cfg)
    if entry:
        direct, grid0, constexprs = entry
        direct(grid0, triton_internals.current_stream(device), (values, x2, out),
               (meta_addr, bias_addr, n, k), constexprs)
        return entry
    bt, block_f = cfg["BT"], cfg.get("BLOCK_F", 128)
    grid0 = min(output_tiles(m, n, bt, block_f) * splits, _sm_count(device))
    bias_arg = y if bias is None else bias
    plan_key = (bt, cfg["STAGES"], cfg["GROUP"], cfg.get("ASM_LOOP", 0), cfg.get("SPLIT_K", 1),
                cfg.get("META_AHEAD", 1), cfg.get("META_RING", 0), block_f,
                x2.dtype, None if bias is None else bias.dtype, activation)
    layout = _nvmma_layout()
    out_layout, out_box = (layout, [bt, 64]) if out is y else (_partials_layout(), [bt, 64])
    if activation >= GATED_FLAG:  # the kernel pairs the rows: [bt, 32] tiles of y [M, N / 2]
        out_layout, out_box = _gated_layout(), [bt, 32]
    args = (triton_internals.tensor_descriptor(values, [block_f, 64], layout),
            triton_internals.tensor_descriptor(x2, [bt, 64], layout),
            triton_internals.tensor_descriptor(out, out_box, out_layout),
            meta_addr, bias_arg, n, k)
    constexprs = _plans.get(plan_key)
    grid = (grid0, 1, 1)
    if constexprs is None:
        dtype = "bfloat16" if x2.dtype == torch.bfloat16 else "float16"
        offsets = _verify(args, grid, cfg, dtype, bias is not None, activation)
        constexprs = tuple(_constexprs(cfg, dtype, bias is not None, activation, offsets).values())
        _plans[plan_key] = constexprs
    cached = _cached_launch()
    cached(grid, args, constexprs, num_warps=4)
    if key and entry is None:
        _direct.learn(key, cached.compiled_for(args, constexprs, num_warps=4),
                      (grid0, constexprs), cfg)
        return _direct.get(key, cfg) or None
    return None


class PlannedLaunch:
    """``launch`` for one plan of sparse24.ops.gemm (M, N, K, dtype, device and the config it
    chose), called as launch is, by ``_linear_impl`` only: x2 [M, K] with unit stride along K, y
    [M, N] (or [M, N / 2], gated) contiguous; or (``takes_rows``) x2 [..., K] and y [..., N] of
    more dims, both contiguous, whose rows are the M rows (an N-D x costs no reshapes where the
    call launches directly; the other paths flatten it first). An unsplit config's direct
    launches are kept here by what a call of the plan may still vary in: the weight's and bias's
    dtypes, the epilogue, and whether meta's address fits 32 bits (Triton specializes on it);
    the rest of ``_launch_kernel``'s key (config, sizes, x's and y's dtype, device) is the
    plan's. A repeated call then builds a four-item key instead of twelve and skips launch's and
    _launch_kernel's frames and the current-device query. With ``keep_arguments``, each entry
    also keeps the descriptors' launch arguments (DescriptorLauncher.descriptor_args) by what
    the plan leaves free: the weight's address (its shape is the plan's; contiguous, checked
    here), x's address and row stride, y's address; instead of reading every shape and stride
    each call (bench/diag/launch_parts.py times the three ways). Calls with a misaligned meta or
    bias, a launch hook, or direct launches off take ``launch``."""

    __slots__ = ("cfg", "device", "n", "k", "direct")
    keep_arguments = True
    takes_rows = True
    binds = True  # bind() makes BoundLaunches (False: no new ones; those made serve on)
    # launch arguments kept per tensor role and entry, all forgotten when full (as
    # DescriptorLauncher._KEPT): a model with more than 256 weights of one shape and epilogue
    # would fill its weights' arguments again on every call, slower, never wrong
    _KEPT = 256

    def __init__(self, cfg: dict, m: int, n: int, k: int, dtype: torch.dtype,
                 device: torch.device):
        self.cfg, self.n, self.k = cfg, n, k
        self.device = device.index  # a CUDA tensor's device always has its index
        # split-K: two launches (partials, reduction) whose buffers change per call
        self.direct: dict | None = {} if cfg.get("SPLIT_K", 1) == 1 else None

    def __call__(self, x2, values, meta, bias, y, activation: int, cfg: dict) -> None:
        # ``cfg``: launch's signature; the plan's own config is the one its entries were learned
        # for, so that one runs
        direct, cfg = self.direct, self.cfg
        if direct is None:
            launch(_rows(x2), values, meta, bias, _rows(y), activation, cfg)
            return
        meta_addr = meta.data_ptr()
        key = (values.dtype, bias is not None and bias.dtype, activation, meta_addr < 2**31)
        entry = direct.get(key)
        if entry is not None:
            bias_addr = y.data_ptr() if bias is None else bias.data_ptr()
            if not (meta_addr | bias_addr) & 15 and triton_internals.direct_launch_allowed():
                launcher, grid0, constexprs, weights, inputs, outputs = entry
                stream = triton_internals.current_stream(self.device)
                args = (meta_addr, bias_addr, self.n, self.k)
                if not (self.keep_arguments and values.is_contiguous()):
                    launcher(grid0, stream, (values, _rows(x2), _rows(y)), args, constexprs)
                    return
                # x's row stride: a 2-D x's own (rows may be padded); a contiguous N-D x's is K
                # (not stride(-2), which a size-1 dim of a contiguous tensor leaves free)
                x_key = (x2.data_ptr(), x2.stride(0) if x2.dim() == 2 else self.k)
                w_key, y_key = values.data_ptr(), y.data_ptr()
                w_args = weights.get(w_key) or _kept(weights, w_key, launcher, 0, values)
                x_args = inputs.get(x_key) or _kept(inputs, x_key, launcher, 1, _rows(x2))
                y_args = outputs.get(y_key) or _kept(outputs, y_key, launcher, 2, _rows(y))
                launcher.launch_expanded(grid0, stream, w_args + x_args + y_args, args, constexprs)
                return
        entry = launch(_rows(x2), values, meta, bias, _rows(y), activation, cfg)
        if entry:
            direct[key] = (*entry, {}, {}, {})

    def bind(self, values, meta, bias, activation: int, shape: torch.Size, width: int,
             generation: int) -> BoundLaunch | bool | None:
        """This plan's direct launch bound to one weight (values, meta, bias, activation) and one
        shape of x; None where it has none yet (the plan's first plain call learns it: not under
        a launch hook); False where it never will (split-K, a misaligned meta or bias, a strided
        weight)."""
        direct = self.direct
        if (direct is None or not self.binds or not self.keep_arguments
                or not values.is_contiguous()):
            return False
        meta_addr = meta.data_ptr()
        bias_addr = None if bias is None else bias.data_ptr()
        if meta_addr & 15 or (bias_addr or 0) & 15:
            return False
        entry = direct.get((values.dtype, bias is not None and bias.dtype, activation,
                            meta_addr < 2**31))
        if entry is None:
            return None
        launcher, grid0, constexprs, weights, inputs, outputs = entry
        w_key = values.data_ptr()
        w_args = weights.get(w_key) or _kept(weights, w_key, launcher, 0, values)
        return BoundLaunch(self, launcher, grid0, constexprs, w_args, inputs, outputs,
                           meta_addr, bias_addr, output_template(values, shape, width),
                           generation)


class BoundLaunch:
    """A ``PlannedLaunch`` bound to one weight and one shape of x, as sparse24.ops.gemm's record
    of a checked weight keeps them: ``bound(x, values, bias)`` allocates y, launches and returns
    it, or returns None where this call needs the general path (x not a contiguous, aligned plain
    tensor of the plan's dtype on the plan's device with rows K apart; autograd to record; another
    current device; a launch hook; tuned configs that changed since binding). The caller vouches
    for the weight (the same tensors holding the same memory as when bound) and for x's shape
    (its table's key)."""

    __slots__ = ("dtype", "device", "n", "k", "launcher", "grid0", "constexprs", "w_args",
                 "inputs", "outputs", "meta_addr", "bias_addr", "template", "generation")

    def __init__(self, plan, launcher, grid0, constexprs, w_args, inputs, outputs, meta_addr,
                 bias_addr, template, generation):
        self.dtype, self.device, self.n, self.k = template.dtype, plan.device, plan.n, plan.k
        self.launcher, self.grid0, self.constexprs = launcher, grid0, constexprs
        self.w_args, self.inputs, self.outputs = w_args, inputs, outputs
        self.meta_addr, self.bias_addr, self.template = meta_addr, bias_addr, template
        self.generation = generation

    def __call__(self, x, values, bias):
        if type(x) is not torch.Tensor or x.dtype is not self.dtype or x.get_device() != self.device:
            return None
        x_addr = x.data_ptr()
        k = self.k
        if (x_addr & 15 or not x.is_contiguous()
                or (torch.is_grad_enabled() and (x.requires_grad or values.requires_grad or (
                    bias is not None and bias.requires_grad)))
                or _tuning_generation() != self.generation
                or _device._current_cuda_device() != self.device
                or not triton_internals.direct_launch_allowed()):
            return None
        y = torch.empty_like(self.template)
        y_addr = y.data_ptr()
        # keyed by x's address, its rows K apart: a contiguous x's elements are dense whatever
        # strides its size-1 dims carry ([1, K] with rows 139 apart is contiguous), so its
        # descriptor is made from the [M, K] view with those strides
        x_args = self.inputs.get((x_addr, k)) or _kept(
            self.inputs, (x_addr, k), self.launcher, 1, x.as_strided((x.numel() // k, k), (k, 1)))
        y_args = self.outputs.get(y_addr) or _kept(self.outputs, y_addr, self.launcher, 2, _rows(y))
        bias_addr = self.bias_addr
        self.launcher.launch_expanded(
            self.grid0, triton_internals.current_stream(self.device),
            self.w_args + x_args + y_args,
            (self.meta_addr, y_addr if bias_addr is None else bias_addr, self.n, k),
            self.constexprs)
        return y


def _rows(t: torch.Tensor) -> torch.Tensor:
    """A contiguous N-D tensor as the 2-D [rows, last dim] view the descriptors describe."""
    return t if t.dim() == 2 else t.view(-1, t.shape[-1])


def _kept(kept: dict, key, launcher, index: int, tensor) -> tuple:
    """PlannedLaunch's miss: ``tensor``'s launch arguments for descriptor ``index``, kept."""
    if len(kept) >= PlannedLaunch._KEPT:
        kept.clear()
    arguments = kept[key] = launcher.descriptor_args(index, tensor)
    return arguments


def _verify(args, grid, cfg, dtype, has_bias, activation) -> tuple[int, int, int, int]:
    from sparse24.kernels.sparse_wgmma import _sparse_wgmma_kernel

    guess = guessed_offsets(cfg, has_bias, activation >= GATED_FLAG)
    for attempt in range(2):
        compiled = _sparse_wgmma_kernel.warmup(
            *args, grid=grid, **_constexprs(cfg, dtype, has_bias, activation, guess), num_warps=4)
        found = ring_offsets(compiled.asm["ttgir"])
        if found == guess:
            return found
        guess = found  # the asm text does not change the allocation: the second try must agree
    raise SharedMemoryOffsetError(
        f"sparse24 wgmma: the asm assumes {ASM_ALLOCATIONS} at shared-memory offsets {guess}, but "
        f"the kernel compiled with them has them at {found} (config {cfg}). Refusing to run: the "
        "wgmma descriptors would point at the wrong bytes")


def compile_sm90(cfg: dict, dtype: str = "float16", has_bias: bool = True, activation: int = 0,
                 bias_dtype: str = "fp32"):
    """Compile the kernel for sm_90a without a GPU (ptxas ships in the Triton wheel), with the
    same offset guess-and-check as a launch; returns (compiled kernel, verified offsets). For CPU
    tests and for reading registers, spills and SASS before spending GPU time."""
    from sparse24.kernels.sparse_wgmma import _sparse_wgmma_kernel

    elem = {"float16": "fp16", "bfloat16": "bf16"}[dtype]
    layout = _nvmma_layout()

    def desc(rows, element=elem, box_layout=layout, columns=64):
        return f"tensordesc<{element}[{rows}, {columns}],{box_layout!r}>"

    y_desc = desc(cfg["BT"])
    if cfg.get("SPLIT_K", 1) > 1:  # as launch runs it: float32 partials, no bias or activation
        y_desc = desc(cfg["BT"], "fp32", _partials_layout())
        has_bias, activation = False, 0
    elif activation >= GATED_FLAG:  # the kernel pairs the rows (PAIR_GATED_IN_KERNEL)
        y_desc = desc(cfg["BT"], box_layout=_gated_layout(), columns=32)
    signature = {"a_desc": desc(cfg.get("BLOCK_F", 128)), "x_desc": desc(cfg["BT"]),
                 "y_desc": y_desc,
                 "meta_addr": "i64", "bias_ptr": f"*{bias_dtype if has_bias else elem}",
                 "N": "i32", "K": "i32"}
    guess = guessed_offsets(cfg, has_bias, activation >= GATED_FLAG)
    for _ in range(2):
        constexprs = _constexprs(cfg, dtype, has_bias, activation, guess)
        compiled = triton_internals.compile_gluon_for(_sparse_wgmma_kernel, signature, constexprs,
                                                      capability=90, num_warps=4)
        found = ring_offsets(compiled.asm["ttgir"])
        if found == guess:
            return compiled, found
        guess = found
    raise SharedMemoryOffsetError(f"sparse24 wgmma: offsets {guess} and {found} disagree for {cfg}")
