"""The sm90 family on a CPU: its asm text, and the Gluon kernel compiled for sm_90a (no GPU needed:
ptxas ships in the Triton wheel). The interpreter cannot run Gluon or asm; tests/test_wgmma_gpu.py
checks the numbers on a GPU."""

import itertools
import json
import os
import re
import subprocess
import sys

import pytest

from sparse24.ops import configs, wgmma, wgmma_asm


@pytest.mark.parametrize("bt", [8, 16, 32, 64, 128, 256])
def test_mma_asm_issues_four_k32_steps_with_both_selectors(bt):
    text = wgmma_asm.mma_asm(bt, "bfloat16", 1, a_offset=4096, x_offset=0)
    p = bt // 2
    steps = re.findall(rf"wgmma\.mma_async\.sp\.sync\.aligned\.m64n{bt}k32\.f32\.bf16\.bf16 "
                       rf"\{{[^}}]*\}}, da, db, (\$\d+), (\d), pd, 1, 1, 0, 0;", text)
    # chunk 2kb (metadata operand $2P) for the first two k32 steps, chunk 2kb + 1 for the last two;
    # within a chunk, selector 0 covers its first 32 inputs and selector 1 the next
    assert steps == [(f"${2 * p}", "0"), (f"${2 * p}", "1"), (f"${2 * p + 1}", "0"),
                     (f"${2 * p + 1}", "1")]
    # warpgroup 1 reads A rows 64..127: 8 KB past the A ring's stage base
    assert f"add.u32 sa, sa, {4096 + wgmma_asm.A_WARPGROUP_BYTES};" in text
    assert f"mad.lo.u32 sa, ${3 * p}, {wgmma_asm.A_STAGE_BYTES}, base;" in text
    assert text.count("add.s64 da, da, 2;") == 4 and text.count("add.s64 db, db, 4;") == 2
    assert text.strip().endswith("wgmma.wait_group.sync.aligned 0;\n}")
    assert wgmma_asm.mma_constraints(bt).split(",").count("=f") == p


def test_mma_asm_refuses_what_it_cannot_issue():
    with pytest.raises(ValueError, match="float32"):
        wgmma_asm.mma_asm(128, "float32", 0, 0, 0)
    with pytest.raises(ValueError, match="BT=96"):
        wgmma_asm.mma_asm(96, "float16", 0, 0, 0)


# ---------------------------------------------------------------- the asm k-loop (ASM_LOOP D)
def _expected_loop(bt, warpgroup, stages, drain, step, chunks, meta_base, a_off, x_off, leader):
    """What the asm k-loop must do, written from its contract: k-block kb uses ring step
    ``step + kb`` (stage and phase) and the metadata words of chunks 2kb and 2kb + 1 (the last
    chunk where 2kb + 1 is past K); its stage is freed once the next k-block of its batch is
    issued (wait_group 1), or at the drain that ends its batch or the tile."""
    blocks = -(-chunks // 2)
    events = []
    for kb in range(blocks):
        stage, phase = (step + kb) % stages, ((step + kb) // stages) & 1
        events.append(("wait_full", stage, phase))
        words = [meta_base + 128 * min(c, chunks - 1) for c in (2 * kb, 2 * kb + 1)]
        a_addr = a_off + stage * wgmma_asm.A_STAGE_BYTES + warpgroup * wgmma_asm.A_WARPGROUP_BYTES
        x_addr = x_off + stage * 2 * wgmma_asm.x_stage_bytes(bt)
        for k32 in range(4):
            half = x_addr + (k32 // 2) * wgmma_asm.x_stage_bytes(bt)
            events.append(("mma", stage, words[k32 // 2], k32 % 2,
                           ((a_addr >> 4) + 2 * k32) | wgmma_asm.DESCRIPTOR_HIGH_BITS,
                           ((half >> 4) + 4 * (k32 % 2)) | wgmma_asm.DESCRIPTOR_HIGH_BITS))
        if leader and kb % drain:
            events.append(("arrive_empty", (step + kb - 1) % stages))
        if leader and (kb % drain == drain - 1 or kb == blocks - 1):
            events.append(("arrive_empty", stage))
    return events


@pytest.mark.parametrize("bt, stages, drain, ahead", [
    (64, 2, 1, 1), (128, 3, 2, 1), (256, 4, 4, 1), (64, 6, 8, 1), (128, 2, 4, 1),
    # the metadata 2-4 batches ahead (a queue of scratch registers)
    (256, 2, 2, 3), (128, 3, 1, 4), (64, 4, 4, 2)])
@pytest.mark.parametrize("warpgroup", [0, 1])
def test_loop_asm_walks_the_ring_like_the_gluon_loop(bt, stages, drain, ahead, warpgroup):
    """Run the loop's PTX in a one-thread model (tests/ptx_sim.py) for tiles that start anywhere
    in the ring and K of 1 to 19 chunks of 64: stages, phases, metadata words, descriptors and
    releases are those of the contract; no register a group in flight reads is written and no
    stage it reads is freed before a wait_group retires it; the loop ends drained, and waits for
    all groups only between batches of ``drain`` k-blocks; with its metadata loaded ``ahead``
    batches ahead, each wgmma still reads its own k-block's words."""
    import ptx_sim

    a_off, x_off, full, empty = 69632, 0, 200000, 200000 + 8 * stages
    text = wgmma_asm.loop_asm(bt, "bfloat16", warpgroup, stages, drain, a_off, x_off, full, empty,
                              ahead)
    p = wgmma_asm.accumulator_registers(bt)
    for step in (0, 1, stages - 1, 5 * stages + 1):
        for chunks in range(1, 20):
            for tid in (128 * warpgroup, 128 * warpgroup + 37):
                events = ptx_sim.run(text, {2 * p: 1 << 40, 3 * p: step, 4 * p: chunks}, tid=tid,
                                     full_offset=full, empty_offset=empty, stages=stages,
                                     a_offset=a_off, a_stage_bytes=wgmma_asm.A_STAGE_BYTES)
                kept = [e for e in events if e[0] in ("wait_full", "mma", "arrive_empty")]
                assert kept == _expected_loop(bt, warpgroup, stages, drain, step, chunks, 1 << 40,
                                              a_off, x_off, leader=tid % 128 == 0), (step, chunks, tid)
                blocks = -(-chunks // 2)
                waits = [e[1] for e in events if e[0] == "wait_group"]
                assert waits.count(0) == -(-blocks // drain) and waits[-1] == 0
                assert waits.count(1) == blocks - -(-blocks // drain)


@pytest.mark.parametrize("meta_ring", [False, True])
@pytest.mark.parametrize("bt, warpgroup", [(8, 0), (16, 1), (128, 0), (256, 1)])
def test_mma_asm_reads_its_metadata_words(bt, warpgroup, meta_ring):
    """The one-k-block asm in the one-thread model: four wgmmas on stage s, chunk 2kb's word for
    k32 steps 0 and 1 (selectors 0, 1) and chunk 2kb + 1's for steps 2 and 3. Without META_RING
    the words are the operands; with it the operands are byte offsets in the stage's metadata
    box, read from shared memory at global_smem + the ring's offset + s * 2 KB + offset (the
    model's loads return their address)."""
    import ptx_sim

    a_off, x_off, meta_off, base = 69632, 0, 180224, 1024  # a descriptor holds 18 address bits
    text = wgmma_asm.mma_asm(bt, "float16", warpgroup, a_off, x_off,
                             meta_off if meta_ring else None)
    p = wgmma_asm.accumulator_registers(bt)
    for stage, (first, second) in itertools.product((0, 1, 5), ((0, 128), (1412, 1540))):
        events = ptx_sim.run(text, {2 * p: first, 2 * p + 1: second, 3 * p: stage},
                             smem_base=base, full_offset=0, empty_offset=0, stages=8,
                             a_offset=a_off + warpgroup * wgmma_asm.A_WARPGROUP_BYTES,
                             a_stage_bytes=wgmma_asm.A_STAGE_BYTES)
        box = base + meta_off + stage * wgmma_asm.META_STAGE_BYTES if meta_ring else 0
        mmas = [(e[1], e[2], e[3]) for e in events if e[0] == "mma"]
        assert mmas == [(stage, box + first, 0), (stage, box + first, 1),
                        (stage, box + second, 0), (stage, box + second, 1)], (stage, mmas)
        assert [e[0] for e in events][-2:] == ["commit", "wait_group"]


@pytest.mark.parametrize("bt, warpgroup", [(64, 0), (128, 1)])
def test_two_band_asm_issues_each_band_on_its_rows_and_words(bt, warpgroup):
    """BLOCK_F 256, in the one-thread model: each k32 step issues band 0's then band 1's wgmma on
    the same x descriptor; band b reads A rows 128w + 64b (16 KB per warpgroup and 8 KB per band
    into a 32 KB stage) and its own metadata words, which the kernel's joined tensor hands over
    as elements 2 * chunk + band of the pack; band b's accumulator is registers b, b + 2, ..."""
    import ptx_sim

    a_off, x_off, base = 98304, 0, 1024
    text = wgmma_asm.mma_asm(bt, "float16", warpgroup, a_off, x_off, bands=2)
    p = wgmma_asm.accumulator_registers(bt, 2)
    assert p == bt
    words = [[1000, 2000], [3000, 4000]]  # [band][chunk]
    operands = {2 * p + 2 * chunk + band: words[band][chunk] for band in (0, 1) for chunk in (0, 1)}
    high = wgmma_asm.DESCRIPTOR_HIGH_BITS
    for stage in (0, 2):
        events = ptx_sim.run(text, operands | {3 * p: stage}, smem_base=base, full_offset=0,
                             empty_offset=0, stages=8, a_offset=a_off + warpgroup * 16384,
                             a_stage_bytes=wgmma_asm.a_stage_bytes(256))
        want = []
        for k32, band in itertools.product(range(4), (0, 1)):
            a_addr = base + a_off + stage * 32768 + (2 * warpgroup + band) * 8192
            x_addr = (base + x_off + stage * 2 * wgmma_asm.x_stage_bytes(bt)
                      + (k32 // 2) * wgmma_asm.x_stage_bytes(bt))
            want.append(("mma", stage, words[band][k32 // 2], k32 % 2,
                         ((a_addr >> 4) + 2 * k32) | high, ((x_addr >> 4) + 4 * (k32 % 2)) | high))
        assert [e for e in events if e[0] == "mma"] == want, stage
        assert [e[0] for e in events][-2:] == ["commit", "wait_group"]
    accumulators = re.findall(r"m64n\d+k32\.f32\.f16\.f16 \{([^}]*)\}", text)
    assert accumulators[0] == ",".join(f"${i}" for i in range(0, p, 2))
    assert accumulators[1] == ",".join(f"${i}" for i in range(1, p, 2))
    assert accumulators == accumulators[:2] * 4
    # the metadata loads fill elements 0-3 of the pack from their own addresses
    assert wgmma_asm.meta_asm(bt, 2).splitlines() == [
        f"ld.global.nc.u32 ${e}, [${p + e}];" for e in range(4)]
    assert wgmma_asm.mma_constraints(bt, 2).split(",").count("=f") == p


def test_256_feature_tiles_are_offered_where_they_run():
    """BLOCK_F 256 only on request, only as the kernel takes it: token tiles of 64 and 128 (two
    bands of 64 x 256 float32 accumulators would not fit), the Gluon k-loop with its metadata
    from global memory (the ring's loader and box hold 128 features), unsplit, and rings that fit
    in shared memory (BT 128: 3 stages of 64 KB)."""
    base = {"family": "wgmma", "BT": 128, "STAGES": 3, "GROUP": 4, "BLOCK_F": 256}
    assert wgmma.runnable(base) and configs.well_formed(base)
    assert not wgmma.runnable(base | {"STAGES": 4})  # 4 x 64 KB
    assert wgmma.runnable(base | {"BT": 64, "STAGES": 4})
    assert wgmma.shared_bytes(128, 3, block_f=256) == 3 * 65536 + 2 * 128 * 64 * 2 + 512
    for other in ({"BT": 256, "STAGES": 1}, {"BT": 32}, {"META_RING": 1, "STAGES": 2},
                  {"ASM_LOOP": 2, "STAGES": 2}, {"SPLIT_K": 2, "STAGES": 2}):
        assert not wgmma.runnable(base | other), other
    assert not configs.well_formed(base | {"BLOCK_F": 192})
    assert all("BLOCK_F" not in c for c in wgmma.candidates(4096, 4096, 4096))
    wide = [c for c in wgmma.candidates(4096, 4096, 4096, block_fs=(128, 256)) if "BLOCK_F" in c]
    assert {(c["BT"], c["STAGES"]) for c in wide} == {(64, 2), (64, 3), (64, 4), (128, 2),
                                                        (128, 3)}
    assert all(wgmma.runnable(c) for c in wide)
    # a tile of 256 features: half the feature tiles, the loader's A box 256 rows
    assert wgmma.output_tiles(4096, 768, 128, 256) == 3 * 32
    with pytest.raises(ValueError, match="BLOCK_F=192"):
        wgmma_asm.bands_of(192)
    with pytest.raises(ValueError, match="one band"):
        wgmma_asm.mma_asm(128, "float16", 0, 0, 0, meta_offset=4096, bands=2)


def test_loop_asm_model_catches_a_stage_freed_too_early():
    """The model's own check: with wait_group 2 the previous stage would be freed while its
    group may still read it."""
    import ptx_sim

    text = wgmma_asm.loop_asm(128, "float16", 0, 4, 4, 0, 65536, 200000, 200032)
    broken = text.replace("wait_group.sync.aligned 1;", "wait_group.sync.aligned 2;")
    with pytest.raises(ptx_sim.PipelineViolation, match="stage"):
        ptx_sim.run(broken, {128: 4096, 192: 0, 256: 8}, full_offset=200000, empty_offset=200032,
                    stages=4, a_offset=0, a_stage_bytes=wgmma_asm.A_STAGE_BYTES)


def test_loop_asm_model_catches_metadata_written_in_flight():
    """The model's other check: without the drain between batches, the next batch's words are
    moved into the registers the wgmmas read while the last group still reads them."""
    import ptx_sim

    text = wgmma_asm.loop_asm(128, "float16", 0, 4, 2, 0, 65536, 200000, 200032)
    broken = text.replace("wait_group.sync.aligned 0;", "wait_group.sync.aligned 1;", 1)
    with pytest.raises(ptx_sim.PipelineViolation, match="written while a wgmma"):
        # a thread that releases no stage (not the warpgroup's first), so the write is what fails
        ptx_sim.run(broken, {128: 4096, 192: 0, 256: 8}, tid=37, full_offset=200000, empty_offset=200032,
                    stages=4, a_offset=0, a_stage_bytes=wgmma_asm.A_STAGE_BYTES)


def test_loop_asm_refuses_what_it_cannot_run():
    with pytest.raises(ValueError, match="2 to 8 ring stages"):
        wgmma_asm.loop_asm(128, "float16", 0, 1, 2, 0, 0, 0, 8)
    with pytest.raises(ValueError, match="BT=32"):
        wgmma_asm.loop_asm(32, "float16", 0, 2, 2, 0, 0, 0, 16)
    with pytest.raises(ValueError, match="drain every 3"):
        wgmma_asm.loop_asm(128, "float16", 0, 2, 3, 0, 0, 0, 16)
    assert wgmma_asm.loop_constraints(256).split(",").count("=f") == 128


def test_asm_loop_candidates_only_on_request():
    assert all("ASM_LOOP" not in c for c in wgmma.candidates(4096, 768, 768))
    # (without META_RING forms: the asm k-loop has none)
    every = wgmma.candidates(4096, 768, 768, asm_loops=(0, *wgmma.ASM_LOOPS), meta_ring=False)
    assert len(every) == (1 + len(wgmma.ASM_LOOPS)) * len(
        wgmma.candidates(4096, 768, 768, meta_ring=False))
    assert {c.get("ASM_LOOP", 0) for c in every} == {0, *wgmma.ASM_LOOPS}
    assert "ASM_LOOP" not in wgmma.heuristic_config(4096, 768, 768)
    from sparse24.ops import configs

    assert all(configs.well_formed(c) for c in every)
    assert not configs.well_formed(every[0] | {"ASM_LOOP": 3})
    assert not configs.well_formed(every[0] | {"ASM_LOOP": True})


def test_candidates_fit_shared_memory():
    configs = wgmma.candidates(4096, 768, 768)
    assert {c["BT"] for c in configs} == {64, 128, 256}
    assert all(wgmma.shared_bytes(c["BT"], c["STAGES"]) <= wgmma.MAX_SHARED_BYTES for c in configs)
    assert {c["BT"] for c in wgmma.candidates(40, 768, 768)} == {16, 32, 64}
    # few tokens: tiles of 8-32 with deep rings, small tiles never where they re-read the
    # weight many times
    assert {c["BT"] for c in wgmma.candidates(1, 768, 768)} == {8}
    assert max(c["STAGES"] for c in wgmma.candidates(1, 768, 768)) == 12
    assert min(c["BT"] for c in wgmma.candidates(300, 3072, 768)) == 64
    # 300 tokens on 768 features: 30 programs of 64 tokens, so the mid-token rule's 32 too
    assert min(c["BT"] for c in wgmma.candidates(300, 768, 768)) == 32
    assert all("ASM_LOOP" not in c or c["BT"] >= 64 for c in wgmma.candidates(
        16, 768, 768, asm_loops=(0, *wgmma.ASM_LOOPS)))


# The compile runs in a fresh process: once the Triton interpreter has run kernels in a process
# (the rest of the CPU suite), Triton 3.9's code generator no longer treats some Gluon builtins as
# builtins there ("Did you forget to add @triton.gluon.jit?", seen with an empty Triton cache).
_COMPILE_IN_CHILD = """
import json, os, subprocess, sys, tempfile
import triton
from sparse24.ops import wgmma
cfg, dtype, activation = json.loads(sys.argv[1])
compiled, offsets = wgmma.compile_sm90(cfg, dtype, has_bias=True, activation=activation)
bin_dir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
tool = os.path.join(bin_dir, "cuobjdump")
try:  # the ptxas Triton itself runs for sm_90 (Triton 3.9: "ptxas-blackwell", CUDA 13)
    from triton.backends.nvidia.compiler import get_ptxas
    ptxas = get_ptxas(90).path
except Exception:
    ptxas = os.path.join(bin_dir, "ptxas")
with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
    cubin.write(compiled.asm["cubin"])
    cubin.flush()
    usage = subprocess.run([tool, "-res-usage", cubin.name], capture_output=True, text=True).stdout
    sass = subprocess.run([tool, "--dump-sass", cubin.name], capture_output=True, text=True).stdout
with tempfile.NamedTemporaryFile("w", suffix=".ptx") as ptx:
    ptx.write(compiled.asm["ptx"])
    ptx.flush()
    done = subprocess.run([ptxas, "-v", "--gpu-name=sm_90a", ptx.name, "-o", os.devnull],
                          capture_output=True, text=True)
# the guess a launch compiles with first (a split has no bias: compile_sm90 drops it)
guess = wgmma.guessed_offsets(cfg, has_bias=cfg.get("SPLIT_K", 1) == 1, gated=activation >= 8)
print(json.dumps({"ptx": compiled.asm["ptx"], "ttgir": compiled.asm["ttgir"], "offsets": offsets,
                  "guess": guess,
                  "shared": compiled.metadata.shared,
                  "found": wgmma.ring_offsets(compiled.asm["ttgir"]), "usage": usage,
                  "sass": sass, "ptxas": done.stdout + done.stderr}))
"""


def compile_in_child(cfg, dtype, activation) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", _COMPILE_IN_CHILD, json.dumps([cfg, dtype, activation])],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("cfg, dtype, activation", [
    ({"family": "wgmma", "BT": 128, "STAGES": 4, "GROUP": 8}, "float16", 2),
    ({"family": "wgmma", "BT": 256, "STAGES": 2, "GROUP": 8}, "bfloat16", 0),
    ({"family": "wgmma", "BT": 256, "STAGES": 2, "GROUP": 8}, "float16", 2),
    ({"family": "wgmma", "BT": 64, "STAGES": 6, "GROUP": 8}, "float16", 3),
    ({"family": "wgmma", "BT": 128, "STAGES": 4, "GROUP": 8}, "bfloat16", 4),  # silu
    # the metadata through the ring (META_RING): streaming tiles, a large one, a split
    ({"family": "wgmma", "BT": 16, "STAGES": 10, "GROUP": 8, "META_RING": 1}, "float16", 2),
    ({"family": "wgmma", "BT": 8, "STAGES": 10, "GROUP": 8, "META_RING": 1}, "bfloat16", 0),
    ({"family": "wgmma", "BT": 128, "STAGES": 3, "GROUP": 8, "META_RING": 1}, "float16", 2),
    ({"family": "wgmma", "BT": 32, "STAGES": 8, "GROUP": 8, "SPLIT_K": 2, "META_RING": 1}, "float16", 0),
    # swiglu paired in the kernel's epilogue ([BT, 32] output tiles; PAIR_GATED_IN_KERNEL)
    ({"family": "wgmma", "BT": 128, "STAGES": 4, "GROUP": 8}, "float16", 12),
    ({"family": "wgmma", "BT": 16, "STAGES": 10, "GROUP": 8, "META_AHEAD": 2}, "bfloat16", 12),
    ({"family": "wgmma", "BT": 256, "STAGES": 2, "GROUP": 8, "ASM_LOOP": 2}, "float16", 2),
    ({"family": "wgmma", "BT": 128, "STAGES": 3, "GROUP": 8, "ASM_LOOP": 4}, "bfloat16", 1),
    ({"family": "wgmma", "BT": 128, "STAGES": 4, "GROUP": 8, "ASM_LOOP": 4}, "float16", 2),
    ({"family": "wgmma", "BT": 64, "STAGES": 6, "GROUP": 8, "ASM_LOOP": 1}, "float16", 0),
    # the asm k-loop with its metadata 2-4 batches ahead (a queue of scratch registers)
    ({"family": "wgmma", "BT": 256, "STAGES": 2, "GROUP": 4, "ASM_LOOP": 2, "META_AHEAD": 3},
     "float16", 2),
    ({"family": "wgmma", "BT": 256, "STAGES": 2, "GROUP": 4, "ASM_LOOP": 1, "META_AHEAD": 4},
     "bfloat16", 0),
    ({"family": "wgmma", "BT": 128, "STAGES": 4, "GROUP": 8, "ASM_LOOP": 4, "META_AHEAD": 2},
     "float16", 1),
    ({"family": "wgmma", "BT": 128, "STAGES": 3, "GROUP": 8, "SPLIT_K": 4}, "float16", 2),
    ({"family": "wgmma", "BT": 64, "STAGES": 5, "GROUP": 8, "SPLIT_K": 2, "ASM_LOOP": 2}, "bfloat16", 0),
    # 256-feature tiles: two bands a warpgroup (GELU, SwiGLU paired, metadata two k-blocks ahead)
    ({"family": "wgmma", "BT": 128, "STAGES": 3, "GROUP": 4, "BLOCK_F": 256}, "float16", 2),
    ({"family": "wgmma", "BT": 128, "STAGES": 2, "GROUP": 4, "BLOCK_F": 256, "META_AHEAD": 2},
     "bfloat16", 12),
    ({"family": "wgmma", "BT": 64, "STAGES": 4, "GROUP": 8, "BLOCK_F": 256}, "bfloat16", 0),
    # the few-token tiles at their deepest rings (weight streaming)
    ({"family": "wgmma", "BT": 8, "STAGES": 12, "GROUP": 8, "SPLIT_K": 4}, "float16", 0),
    ({"family": "wgmma", "BT": 16, "STAGES": 10, "GROUP": 8}, "bfloat16", 2),
    ({"family": "wgmma", "BT": 16, "STAGES": 10, "GROUP": 8, "SPLIT_K": 4, "META_AHEAD": 2}, "float16", 0),
    ({"family": "wgmma", "BT": 8, "STAGES": 12, "GROUP": 8, "META_AHEAD": 4}, "bfloat16", 1),
    ({"family": "wgmma", "BT": 32, "STAGES": 8, "GROUP": 8, "SPLIT_K": 2, "META_AHEAD": 3}, "float16", 0),
    ({"family": "wgmma", "BT": 32, "STAGES": 8, "GROUP": 8, "SPLIT_K": 3}, "bfloat16", 0),
])
def test_kernel_compiles_for_sm90a_with_verified_offsets(cfg, dtype, activation):
    facts = compile_in_child(cfg, dtype, activation)
    ptx, (a_off, x_off, full_off, empty_off, *meta_off) = facts["ptx"], facts["offsets"]
    ptx_type = wgmma_asm.DTYPES[dtype]
    # four k32 steps per k-block in each of the two math warpgroups (the asm k-loop: D k-blocks
    # in its body)
    # in each of its bands (BLOCK_F 256: two)
    drain, bands = cfg.get("ASM_LOOP", 0), cfg.get("BLOCK_F", 128) // 128
    assert ptx.count(f"wgmma.mma_async.sp.sync.aligned.m64n{cfg['BT']}k32.f32.{ptx_type}.{ptx_type}") == 8 * max(1, drain) * bands
    # the offsets baked into the asm are the ones the allocator gave the rings and mbarriers
    assert facts["found"] == [a_off, x_off, full_off, empty_off, *meta_off]
    # and the first guess was right: a plan's first launch compiles once, not twice
    assert facts["guess"] == facts["found"]
    assert abs(empty_off - full_off) >= 8 * cfg["STAGES"]  # 8 bytes an mbarrier, padded
    # ptxas keeps the wgmmas asynchronous: no C7512 / C7513 ("wgmma.mma_async instructions are
    # serialized"), which a register a wgmma reads written while a group is in flight causes
    assert "serialized" not in facts["ptxas"], facts["ptxas"]
    waits = re.findall(r"WARPGROUP\.DEPBAR\.LE gsb0, (0x\d)", facts["sass"])
    if drain:
        # per warpgroup: wait_group 1 after each k-block of a batch but its first, wait_group 0
        # at the batch's end and at a tile's end mid-batch (one only where drain is 1)
        assert waits.count("0x1") == 2 * (drain - 1), waits
        assert 2 <= waits.count("0x0") <= 4, waits
        assert f"add.u32 bar, bar, {full_off};" in ptx and f"add.u32 bar, bar, {empty_off};" in ptx
    else:
        assert waits == ["0x0"] * 2, waits
    assert f"add.u32 sb0, sb0, {x_off};" in ptx
    if bands == 2:
        # the asm numbers band b's accumulator registers b, b + 2, ... and its metadata words
        # 2 * chunk + b: gl.join must put the band in register bit 0, the token pair (n, n + 1)
        # in bit 1, as the NVMMA layout has it (Triton 3.6 and 3.9 do)
        joined = set(re.findall(r"tt\.join [^\n]*-> tensor<64x\d+x2x\w+, (#\w+)>", facts["ttgir"]))
        assert joined, "no joined [64, BT, 2] tensor"
        for name in joined:
            assert re.search(rf"^{name} = #ttg\.linear<{{register = \[\[0, 0, 1\], \[0, 1, 0\], ",
                             facts["ttgir"], re.M), name
    # warpgroup 1's rows start 64 (one band) or 128 (two) rows into the A stage
    assert f"add.u32 sa, sa, {a_off};" in ptx and f"add.u32 sa, sa, {a_off + 8192 * bands};" in ptx
    assert facts["shared"] <= wgmma.MAX_SHARED_BYTES
    assert facts["shared"] <= wgmma.shared_bytes(cfg["BT"], cfg["STAGES"], cfg.get("SPLIT_K", 1) > 1,
                                                 cfg.get("META_RING", 0) == 1,
                                                 cfg.get("BLOCK_F", 128))
    if cfg.get("META_RING", 0):
        # the metadata through the ring: the loader's 16-byte cp.async copies into the ring at
        # the offset the asm reads (two words a thread, a stage of 2 KB), no global metadata load
        # in the k-loop; the copies counted on the stage's full barrier (not .noinc)
        assert len(re.findall(r"cp\.async\.c[ag]\.shared\.global [^;]*0x10, 0x10;", ptx)) == 4
        assert "cp.async.mbarrier.arrive.shared.b64" in ptx and ".noinc" not in ptx
        assert f"add.u32 sm, sm, {meta_off[0]};" in ptx and "ld.shared.b32 mw1, [mw1];" in ptx
        assert "ld.global.nc.u32" not in ptx
    else:
        assert len(meta_off) == 0 and "cp.async.c" not in ptx
    if cfg.get("SPLIT_K", 1) > 1:  # float32 partial sums, stored unswizzled; no epilogue math
        assert "cvt.rn.f16.f32" not in ptx and "cvt.rn.bf16.f32" not in ptx
        assert "ex2.approx" not in ptx
    # warp specialization: 3 warpgroups (two math, one holding the loader warp)
    assert ".reqntid 384" in ptx
    # no spills, the GELU epilogue of the 128 x 256 tile included (libdevice's erf spilled 272
    # bytes a thread there and ran at half speed: bench/NOTES.md)
    assert re.search(r"STACK:0\b", facts["usage"]), facts["usage"]


def test_offset_mismatch_refuses_to_run(monkeypatch):
    # an allocator that moves the rings whatever the asm assumes: the launcher must refuse
    answers = iter([(0, 65536, 1, 9), (65536, 0, 1, 9), (0, 65536, 1, 9)])
    monkeypatch.setattr(wgmma, "ring_offsets", lambda ttgir: next(answers))

    class FakeKernel:
        def warmup(self, *args, **kwargs):
            return type("Compiled", (), {"asm": {"ttgir": ""}})()

    import sparse24.kernels.sparse_wgmma as kernel_module

    monkeypatch.setattr(kernel_module, "_sparse_wgmma_kernel", FakeKernel())
    cfg = {"family": "wgmma", "BT": 128, "STAGES": 2, "GROUP": 8}
    with pytest.raises(wgmma.SharedMemoryOffsetError, match="Refusing to run"):
        wgmma._verify((), (1,), cfg, "float16", False, 0)


# ------------------------------------------------------------------ dispatch (one rule, CPU-checked)
def _pretend_sm90(monkeypatch, sm90: bool):
    import torch

    from sparse24.ops import gemm

    monkeypatch.setattr(wgmma, "supported", lambda index: sm90)
    monkeypatch.setattr(gemm, "_sm_count", lambda index: 132)
    gemm.heuristic_config.cache_clear()
    return torch.device("cuda", 0)


@pytest.mark.parametrize("capability, sm90", [
    ((8, 0), False), ((8, 9), False), ((9, 0), True), ((10, 0), False), ((12, 0), False)],
    ids=["sm80", "sm89", "sm90", "sm100", "sm120"])
def test_sm90_family_only_on_compute_capability_9_0(monkeypatch, capability, sm90):
    """wgmma.mma_async.sp is an sm_90a instruction: sm100 and sm120 (Blackwell) have no wgmma, so
    ``supported`` must want capability 9.0 exactly, not 9.0 and up, and the dispatch follows it."""
    import torch

    from sparse24.ops import gemm

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(gemm, "_sm_count", lambda index: 132)
    wgmma.supported.cache_clear()
    gemm.heuristic_config.cache_clear()
    try:
        assert wgmma.supported(0) is sm90
        cuda = torch.device("cuda", 0)
        assert gemm.uses_wgmma(4096, cuda) is sm90
        assert gemm.heuristic_config(4096, 768, 768, cuda)["family"] == ("wgmma" if sm90 else "mma")
    finally:  # the answers for the pretended GPU must not outlive the test
        wgmma.supported.cache_clear()
        gemm.heuristic_config.cache_clear()


@pytest.mark.parametrize("sm90", [True, False])
def test_dispatch_rule_sm90_many_tokens_take_wgmma(monkeypatch, sm90):
    from sparse24.ops import configs, gemm

    cuda = _pretend_sm90(monkeypatch, sm90)
    try:
        for m in (1, 16, 64, 65, 384, 24576):
            # on sm90 the wgmma kernel at every m (its few-token rule below 65 tokens)
            want = "wgmma" if sm90 else "mma"
            assert gemm.heuristic_config(m, 768, 3072, cuda)["family"] == want, m
            side = gemm.uses_wgmma(m, cuda)  # what tune() passes
            assert side is (sm90 and m > gemm.MMA_MAX_TOKENS_SM90)
            families = {c["family"] for c in configs.candidates(m, 768, 3072, on_gpu=True,
                                                                 wgmma_side=side, sm90=sm90)}
            if side:
                assert families == {"wgmma"}, (m, families)
            else:  # below the rule the sm90 kernel's few-token tiles compete, on sm90 only
                assert ("wgmma" in families) is sm90 and "mma" in families, (m, families)
    finally:
        gemm.heuristic_config.cache_clear()


@pytest.mark.parametrize("sm90", [True, False])
def test_few_token_shapes_where_the_sm90_kernel_streams_faster(monkeypatch, sm90):
    """At 0-64 tokens the sm90 kernel serves with the metadata through the ring, in the largest
    token tile (at least a quarter of the tokens) that leaves 80 programs, else the smallest
    (8 up to 32 tokens, 16 above), unsplit where it has 24 feature tiles or more (3072
    features) or K is short (768), with 4 stages where a tile of 16 or more tokens holds all the
    tokens and else 10 (BT 8, 16), 6 (32) or 4 (64); else in 4 splits (8 stages: 768 x 3072);
    from 65 tokens the large-M rule; off sm90 the mma kernel throughout (the dot kernel where N
    is not a multiple of 64)."""
    from sparse24.ops import gemm

    cuda = _pretend_sm90(monkeypatch, sm90)
    try:
        def pick(m, n, k):
            cfg = gemm.heuristic_config(m, n, k, cuda)
            return (cfg["family"], cfg.get("BT"), cfg.get("META_RING", 0), cfg.get("SPLIT_K", 1),
                    cfg.get("STAGES"))

        for m, n, k, bt, split, stages in [
                (1, 14336, 4096, 8, 1, 10), (16, 4096, 4096, 8, 1, 10), (8, 3072, 768, 8, 1, 10),
                (1, 768, 768, 8, 1, 10), (32, 4096, 4096, 8, 1, 10), (33, 4096, 4096, 16, 1, 10),
                (64, 3072, 768, 16, 1, 10), (16, 4096, 14336, 8, 1, 10), (0, 4096, 4096, 8, 1, 10),
                (48, 4096, 4096, 16, 1, 10), (16, 768, 3072, 8, 4, 8), (1, 2304, 3072, 8, 4, 8),
                (64, 768, 3072, 16, 4, 8),
                # 48-224 feature tiles: fewer re-reads of the weight, shallow rings for a lone tile
                (16, 14336, 4096, 16, 1, 4), (32, 14336, 4096, 32, 1, 4), (64, 14336, 4096, 64, 1, 4),
                (16, 28672, 4096, 16, 1, 4), (64, 28672, 4096, 64, 1, 4), (64, 6144, 4096, 32, 1, 6),
                (9, 14336, 4096, 16, 1, 4), (3, 28672, 4096, 8, 1, 10),
                # 80-95 feature tiles (11008: 86) take the tile that reads the weight once
                (64, 11008, 4096, 64, 1, 4), (16, 11008, 4096, 16, 1, 4),
                (48, 10240, 4096, 64, 1, 4), (64, 10112, 4096, 32, 1, 6)]:
            if sm90:
                assert pick(m, n, k) == ("wgmma", bt, 1, split, stages), (m, n, k)
            else:
                assert pick(m, n, k)[:3] == ("mma", None, 0), (m, n, k)
        assert pick(16, 96, 256)[0] == ("wgmma" if sm90 else "dot")  # N % 64 != 0
        assert pick(16, 96, 2048)[0] == "dot"  # and a long K: a split, not yet run on a GPU
        assert pick(65, 4096, 4096)[0] == ("wgmma" if sm90 else "mma")
        if sm90:
            # from 65 tokens the mid-token rule: 64 feature tiles x 2 token tiles of 64 would be
            # 64 programs, so 32-token tiles (96), the metadata through the ring
            assert pick(65, 4096, 4096) == ("wgmma", 32, 1, 1, 6)
            from sparse24.ops import wgmma as family

            for m, n, k in [(16, 768, 3072), (64, 4096, 4096), (1, 96, 256)]:
                assert family.runnable(gemm.heuristic_config(m, n, k, cuda)), (m, n, k)
    finally:
        gemm.heuristic_config.cache_clear()


@pytest.mark.parametrize("m, n, k, bt, ring, stages, block_f", [
    (384, 768, 3072, 32, 1, 6, 128), (384, 768, 768, 32, 1, 6, 128), (100, 768, 768, 32, 1, 6, 128),
    (384, 2304, 768, 64, 1, 6, 128), (1024, 768, 3072, 64, 1, 6, 128),
    (256, 4096, 4096, 64, 1, 6, 128), (384, 3072, 768, 128, 1, 3, 128),
    (1536, 768, 768, 128, 1, 3, 128), (6144, 768, 768, 128, 1, 3, 128),
    (6144, 768, 3072, 128, 1, 3, 128), (24576, 3072, 768, 256, 0, 2, 128),
    (256, 14336, 4096, 128, 0, 3, 256), (4096, 4096, 4096, 256, 0, 2, 128)])
def test_mid_token_rule(monkeypatch, m, n, k, bt, ring, stages, block_f):
    """Where the token-tile estimate picks 64 tokens (65 to about 1000 tokens on BERT-base's
    weights), the metadata comes through the ring, 6 stages, and the tile halves to 32 where 64
    would leave fewer than 96 programs (384 x 768: 36); where it picks 128, the ring with 3
    stages; where 256, no ring (none fits), and 256 features x 128 tokens where the 256-token
    tiles would be one partial wave (256 x 14336: 112 programs). The rule's config is one the
    tuner times and a tuned one of its tile is served."""
    import torch

    from sparse24.ops import gemm

    cuda = _pretend_sm90(monkeypatch, True)
    try:
        cfg = gemm.heuristic_config(m, n, k, cuda)
        assert (cfg["BT"], cfg.get("META_RING", 0), cfg["STAGES"], cfg.get("SPLIT_K", 1),
                cfg.get("BLOCK_F", 128)) == (bt, ring, stages, 1, block_f)
        assert wgmma.runnable(cfg) and cfg in wgmma.candidates(m, n, k)
        monkeypatch.setattr(gemm.configs, "tuned", lambda *a: cfg | {"GROUP": 4})
        assert gemm.choose_config(m, n, k, torch.float16, cuda) == cfg | {"GROUP": 4}
    finally:
        gemm.heuristic_config.cache_clear()


@pytest.mark.parametrize("m, n, k, bt, group", [
    (6144, 2304, 768, 256, 2), (24576, 768, 3072, 256, 2), (6144, 768, 768, 128, 2),
    (2048, 4096, 4096, 256, 4), (4096, 14336, 4096, 256, 4), (8192, 8192, 8192, 256, 4),
    (384, 3072, 768, 128, 2), (1024, 4096, 4096, 256, 4),
    (384, 768, 3072, 32, 8), (256, 4096, 4096, 64, 8), (16, 4096, 4096, 8, 8)])
def test_tile_order_rule(monkeypatch, m, n, k, bt, group):
    """128- and 256-token tiles walk 2 token tiles per feature tile under 32 feature tiles, else
    4 (the H100 sweep in wgmma.py); the few- and mid-token tiles keep 8; the tuner's pool
    offers the rule's own order."""
    from sparse24.ops import gemm

    cuda = _pretend_sm90(monkeypatch, True)
    try:
        cfg = gemm.heuristic_config(m, n, k, cuda)
        assert (cfg["BT"], cfg["GROUP"]) == (bt, group)
        if bt >= 64:
            assert cfg in wgmma.candidates(m, n, k)
    finally:
        gemm.heuristic_config.cache_clear()


def test_a_config_tuned_before_the_tile_order_rule_takes_the_rules_order(monkeypatch):
    """A cached 128/256-token config with GROUP 8 (the only order the pool offered before the
    rule) runs in the rule's order; another GROUP, or a smaller tile's 8, runs as tuned."""
    import torch

    from sparse24.ops import gemm

    cuda = _pretend_sm90(monkeypatch, True)
    old = {"family": "wgmma", "BT": 256, "STAGES": 2, "GROUP": 8}
    for tuned, n, served in [(old, 768, old | {"GROUP": 2}), (old, 14336, old | {"GROUP": 4}),
                             (old | {"GROUP": 1}, 768, old | {"GROUP": 1}),
                             ({"family": "wgmma", "BT": 64, "STAGES": 6, "GROUP": 8, "META_RING": 1},
                              768, None)]:
        monkeypatch.setattr(gemm.configs, "tuned", lambda *a, tuned=tuned: tuned)
        m = 512 if tuned["BT"] == 64 else 4096
        assert gemm.choose_config(m, n, 768, torch.float16, cuda) == (served or tuned), (tuned, n)
    assert old["GROUP"] == 8  # the cached entry itself untouched
    # a tuned 32-token tile at 768 tokens on 768 features: a second wave on 132 SMs (not
    # served: the heuristic's 64 runs), one wave on a GPU of 144 (served as tuned)
    tile_32 = {"family": "wgmma", "BT": 32, "STAGES": 6, "GROUP": 8, "META_RING": 1}
    monkeypatch.setattr(gemm.configs, "tuned", lambda *a: tile_32)
    assert gemm.choose_config(768, 768, 3072, torch.float16, cuda)["BT"] == 64
    monkeypatch.setattr(gemm, "_sm_count", lambda index: 144)
    assert gemm.choose_config(768, 768, 3072, torch.float16, cuda) == tile_32


def test_mid_token_tile_of_32_only_where_64_leaves_sms_idle_and_32_fits_a_wave():
    assert wgmma.mid_token_tile(384, 768) == 32  # 6 x 6 = 36 programs at 64, 72 at 32
    assert wgmma.mid_token_tile(640, 768) == 32  # 60 at 64, 120 at 32: one wave of 132
    assert wgmma.mid_token_tile(704, 768) == 32  # 66 at 64, 6 x 22 = 132 at 32: still one wave
    assert wgmma.mid_token_tile(705, 768) == 64  # 138 at 32: a second wave
    assert wgmma.mid_token_tile(768, 768) == 64  # 144 at 32 (0.58x against 0.85x at 64, K 3072)
    assert wgmma.mid_token_tile(768, 768, sms=144) == 32  # a GPU with 144 SMs fits them
    assert wgmma.mid_token_tile(960, 768) == 64  # 90 at 64 (idle SMs) but 180 at 32
    assert wgmma.mid_token_tile(1024, 768) == 64  # 6 x 16 = 96
    assert wgmma.mid_token_tile(1023, 768) == 64  # a partial last tile still counts
    assert wgmma.heuristic_config(768, 768, 3072)["BT"] == 64
    assert wgmma.heuristic_config(768, 768, 3072, sms=144)["BT"] == 32
    # a tuned 32-token tile is timed and served where the rule could pick it, not where 64
    # tiles fill the GPU (each token tile reads the weight again)
    assert wgmma.worth_timing(32, 384, 768) and not wgmma.worth_timing(32, 384, 4096)
    assert not wgmma.worth_timing(32, 768, 768)
    assert not wgmma.worth_timing(16, 384, 768)


def test_one_wave_of_256_token_tiles_takes_256_feature_tiles():
    """Where the estimate picks 256-token tiles for at most 256 tokens in less than a wave, the
    heuristic runs 256 x 128 tiles in 3 stages (as many tiles, half of x each); not past 256
    tokens, not where the estimate picks other tiles, not where the 256-token tiles fill more than
    a wave; and the tuner's pool has the config at 129-256 tokens."""
    wide = {"family": "wgmma", "BT": 128, "STAGES": 3, "GROUP": 4, "BLOCK_F": 256}
    for m, n in ((256, 11008), (256, 14336), (200, 12288), (256, 8704), (256, 16384)):
        assert wgmma.heuristic_config(m, n, 4096) == wide, (m, n)
        assert wide in wgmma.candidates(m, n, 4096), (m, n)
    # 224 tiles of 256 x 256 (Llama-3's fused gate/up): more than a wave, the estimate's stays
    assert wgmma.heuristic_config(256, 28672, 4096) == {"family": "wgmma", "BT": 256,
                                                        "STAGES": 2, "GROUP": 4}
    assert wgmma.heuristic_config(257, 11008, 4096)["BT"] == 128
    assert "BLOCK_F" not in wgmma.heuristic_config(257, 11008, 4096)  # two 256-token tiles
    assert wgmma.heuristic_config(192, 11008, 4096)["BT"] == 64  # the estimate's 64 stays
    assert "BLOCK_F" not in wgmma.heuristic_config(256, 8448, 4096)  # 128-token tiles: one wave
    assert "BLOCK_F" not in wgmma.heuristic_config(256, 20480, 4096)  # 160 tiles of 256
    assert wgmma.heuristic_config(4096, 768, 768) == {"family": "wgmma", "BT": 256, "STAGES": 2,
                                                      "GROUP": 2}  # 16 token tiles
    assert all("BLOCK_F" not in c for c in wgmma.candidates(4096, 4096, 4096))
    assert all("BLOCK_F" not in c for c in wgmma.candidates(128, 11008, 4096))
    # only where the rule takes them: not on small weights, not where the estimate picks others
    assert all("BLOCK_F" not in c for c in wgmma.candidates(256, 128, 4096))
    assert all("BLOCK_F" not in c for c in wgmma.candidates(192, 11008, 4096))


def test_cached_config_across_the_rule_is_not_used(monkeypatch):
    import torch

    from sparse24.ops import configs, gemm

    cuda = _pretend_sm90(monkeypatch, True)
    old_mma = {"family": "mma", "BLOCK_F": 128, "BLOCK_T": 32, "GROUP_T": 8, "PREFETCH": 1,
               "SPLIT_K": 1, "num_warps": 4, "num_stages": 1}
    tuned = {"family": "wgmma", "BT": 128, "STAGES": 3, "GROUP": 2}  # the tile-order rule's at 768 rows
    try:
        monkeypatch.setattr(configs, "tuned", lambda *a: old_mma)
        assert gemm.choose_config(4096, 768, 768, torch.float16, cuda)["family"] == "wgmma"
        assert gemm.choose_config(16, 768, 768, torch.float16, cuda) == old_mma
        monkeypatch.setattr(configs, "tuned", lambda *a: tuned)
        assert gemm.choose_config(4096, 768, 768, torch.float16, cuda) == tuned
        # below the rule: not a tile of 128 tokens for 16 (a near bucket's entry), but a
        # few-token tile
        assert gemm.choose_config(16, 768, 768, torch.float16, cuda) == gemm.heuristic_config(
            16, 768, 768, cuda) != tuned
        few = {**tuned, "BT": 16, "STAGES": 10}
        monkeypatch.setattr(configs, "tuned", lambda *a: few)
        assert gemm.choose_config(16, 768, 768, torch.float16, cuda) == few
        assert gemm.choose_config(16, 3072, 4096, torch.float16, cuda) == few
        # and above the rule not a few-token tile (a near bucket's entry): each token tile would
        # read the whole weight again
        assert gemm.choose_config(256, 768, 768, torch.float16, cuda) == gemm.heuristic_config(
            256, 768, 768, cuda) != few
        assert configs.well_formed(tuned)
        assert not configs.well_formed({**tuned, "BT": 96})
    finally:
        gemm.heuristic_config.cache_clear()


def _fake_launch_path(monkeypatch, direct_launcher=None):
    """wgmma.launch's collaborators replaced by recorders: (verified, launches, direct calls)."""
    from sparse24.ops import triton_internals

    verified, launches, direct_calls = [], [], []

    class FakeCached:
        def __call__(self, grid, args, constexprs, num_warps):
            launches.append((grid, args, constexprs))

        def compiled_for(self, args, constexprs, num_warps):
            return "compiled" if direct_launcher else None

    fake = FakeCached()
    monkeypatch.setattr(wgmma, "_plans", {})
    monkeypatch.setattr(wgmma._direct, "known", {})
    monkeypatch.setattr(wgmma, "_sm_count", lambda index: 132)
    monkeypatch.setattr(wgmma, "_verify", lambda *a: verified.append(a) or (4096, 0, 90000, 90032))
    monkeypatch.setattr(wgmma, "_cached_launch", lambda: fake)
    monkeypatch.setattr(triton_internals, "_current_device", lambda: 0)
    monkeypatch.setattr(triton_internals, "_current_stream", lambda device: "stream")
    class FakeDirect:  # a DescriptorLauncher: calls recorded, descriptor arguments made up
        fills = []

        def __call__(self, *call):
            direct_calls.append(call)

        def descriptor_args(self, index, tensor):
            self.fills.append(index)
            return ("descriptor", index, tensor.data_ptr(), *tensor.shape, *tensor.stride())

        def launch_expanded(self, grid0, stream, expanded, args, constexprs):
            direct_calls.append((grid0, stream, ("expanded", expanded), args, constexprs))

    monkeypatch.setattr(triton_internals.DescriptorLauncher, "of",
                        lambda compiled, n: direct_launcher and FakeDirect())
    return verified, launches, direct_calls


def _launch_operands():
    import torch

    x = torch.randn(300, 256, dtype=torch.float16)
    values = torch.randn(512, 128, dtype=torch.float16)
    meta = torch.zeros(32, 4, 32, dtype=torch.int32)
    y = torch.empty(300, 512, dtype=torch.float16)
    return x, values, meta, y


def test_launch_verifies_once_per_plan_then_reuses_it(monkeypatch):
    """wgmma.launch checks the ring offsets on the first launch of a plan (config, dtypes,
    activation) and passes the kernel the constexprs built with the verified offsets; later
    launches of the plan reuse them, another plan is verified again. Without a
    DescriptorLauncher (another Triton) every launch takes CachedLaunch."""
    import torch

    verified, launches, direct_calls = _fake_launch_path(monkeypatch)
    cfg = {"family": "wgmma", "BT": 128, "STAGES": 4, "GROUP": 8}
    x, values, meta, y = _launch_operands()
    for _ in range(2):
        wgmma.launch(x, values, meta, None, y, 2, cfg)
    wgmma.launch(x, values, meta, torch.randn(512), y, 2, cfg)
    assert len(verified) == 2 and len(launches) == 3 and not direct_calls
    # the metadata queue's depth is part of the plan: its own constexprs, verified on its own
    wgmma.launch(x, values, meta, None, y, 2, cfg | {"META_AHEAD": 2})
    ahead = list(wgmma._constexprs(cfg, "float16", False, 2, (0, 0, 0, 0))).index("META_AHEAD")
    assert len(verified) == 3 and launches[3][2][ahead] == 2 and launches[0][2][ahead] == 1
    grid, args, constexprs = launches[1]
    assert grid == (4 * 3, 1, 1)  # 4 feature tiles x 3 token tiles of 128, fewer than 132 SMs
    assert constexprs == tuple(wgmma._constexprs(cfg, "float16", False, 2,
                                                 (4096, 0, 90000, 90032)).values())
    assert [a.block_shape for a in args[:3]] == [[128, 64], [128, 64], [128, 64]]
    assert args[3:] == (meta.data_ptr(), y, 512, 256)


def test_launch_goes_direct_from_the_second_call_of_a_specialization(monkeypatch):
    """The first launch of a specialization goes through CachedLaunch (which compiles it); later
    ones through its DescriptorLauncher with the same grid, tensors, scalars and constexprs. A
    new specialization (here: K no longer a multiple of 16) starts on CachedLaunch again, and
    disabling DescriptorLauncher sends calls back."""
    from sparse24.ops import triton_internals

    verified, launches, direct_calls = _fake_launch_path(monkeypatch, direct_launcher=True)
    cfg = {"family": "wgmma", "BT": 128, "STAGES": 4, "GROUP": 8}
    x, values, meta, y = _launch_operands()
    for _ in range(3):
        wgmma.launch(x, values, meta, None, y, 2, cfg)
    assert len(launches) == 1 and len(direct_calls) == 2
    grid0, stream, tensors, scalars, constexprs = direct_calls[0]
    assert (grid0, stream) == (12, "stream")
    assert all(a is b for a, b in zip(tensors, (values, x, y)))
    assert scalars == (meta.data_ptr(), y.data_ptr(), 512, 256)  # the bias pointer as an int
    assert constexprs == launches[0][2]
    wgmma.launch(x[:, :248], values[:, :124], meta, None, y, 2, cfg)  # K = 248
    assert len(launches) == 2 and len(direct_calls) == 2
    wgmma.launch(x, values, meta, None, y, 2, dict(cfg))  # an equal config, another dict
    assert len(launches) == 3 and len(direct_calls) == 2
    import torch

    unaligned_bias = torch.randn(513)[1:]  # 4 bytes past an aligned address: every call cached
    for _ in range(2):
        wgmma.launch(x, values, meta, unaligned_bias, y, 2, cfg)
    assert len(launches) == 5 and len(direct_calls) == 2
    monkeypatch.setattr(triton_internals.DescriptorLauncher, "enabled", False)
    wgmma.launch(x, values, meta, None, y, 2, cfg)
    assert len(launches) == 6 and len(direct_calls) == 2


def test_a_planned_launch_keeps_its_plans_direct_launches(monkeypatch):
    """The launch that gemm's plan holds for an sm90 problem (wgmma.PlannedLaunch): from the
    second call of a specialization it calls the direct launcher itself, with exactly what
    wgmma.launch's direct path passes, without entering wgmma.launch. Each bias dtype and
    epilogue is a specialization of its own (its own constexprs); a misaligned bias, direct
    launches turned off, and a split config take wgmma.launch on every call. (Without kept
    launch arguments here: the next test keeps them.)"""
    import torch

    from sparse24.ops import triton_internals

    verified, launches, direct_calls = _fake_launch_path(monkeypatch, direct_launcher=True)
    monkeypatch.setattr(wgmma.PlannedLaunch, "keep_arguments", False)
    entered = []
    real_launch = wgmma.launch
    monkeypatch.setattr(wgmma, "launch", lambda *a: entered.append(a[5]) or real_launch(*a))
    cfg = {"family": "wgmma", "BT": 128, "STAGES": 4, "GROUP": 8}
    x, values, meta, y = _launch_operands()
    planned = wgmma.PlannedLaunch(cfg, 300, 512, 256, torch.float16, torch.device("cuda", 0))
    for _ in range(3):
        planned(x, values, meta, None, y, 2, cfg)
    assert entered == [2] and len(launches) == 1 and len(direct_calls) == 2
    real_launch(x, values, meta, None, y, 2, cfg)  # wgmma.launch's own direct path
    assert len(direct_calls) == 3
    for planned_call in direct_calls[:2]:
        assert planned_call[:2] == direct_calls[2][:2] == (12, "stream")
        assert all(a is b for a, b in zip(planned_call[2], direct_calls[2][2]))
        assert planned_call[3:] == direct_calls[2][3:]
        assert planned_call[4] == launches[0][2]
    # a float32 bias, then no epilogue: each learned on its first call, then direct
    bias = torch.randn(512)
    for activation, bias_arg in ((2, bias), (0, None)):
        for _ in range(2):
            planned(x, values, meta, bias_arg, y, activation, cfg)
        assert entered[-1] == activation and direct_calls[-1][4] == launches[-1][2]
    assert entered == [2, 2, 0] and len(launches) == 3 and len(direct_calls) == 5
    assert len({call[4] for call in direct_calls[:2] + direct_calls[3:]}) == 3
    assert direct_calls[3][3] == (meta.data_ptr(), bias.data_ptr(), 512, 256)
    # the same epilogue with an fp16 bias: another specialization (a pointer of another dtype),
    # learned on its own rather than given the float32 bias's launcher
    half_bias = torch.randn(512, dtype=torch.float16)
    for _ in range(2):
        planned(x, values, meta, half_bias, y, 2, cfg)
    assert entered[-1] == 2 and len(entered) == 4 and len(direct_calls) == 6
    assert direct_calls[-1][3][1] == half_bias.data_ptr()

    class LowMeta:  # metadata at an address below 2**31: Triton specializes the int on it
        def data_ptr(self):
            return 4096

    for _ in range(2):
        planned(x, values, LowMeta(), None, y, 2, cfg)
    assert len(entered) == 5 and len(direct_calls) == 7 and direct_calls[-1][3][0] == 4096
    unaligned_bias = torch.randn(513)[1:]
    for _ in range(2):
        planned(x, values, meta, unaligned_bias, y, 2, cfg)
    monkeypatch.setattr(triton_internals.DescriptorLauncher, "enabled", False)
    planned(x, values, meta, None, y, 2, cfg)
    assert len(entered) == 8 and len(direct_calls) == 7 and len(launches) == 8
    monkeypatch.setattr(triton_internals.DescriptorLauncher, "enabled", True)
    split = cfg | {"SPLIT_K": 2}
    monkeypatch.setattr(wgmma, "_reduce", lambda: lambda *a, **kw: None)
    planned_split = wgmma.PlannedLaunch(split, 300, 512, 256, torch.float16, torch.device("cuda", 0))
    for _ in range(2):
        planned_split(x, values, meta, None, y, 2, split)
    assert len(entered) == 10


def test_a_planned_launch_keeps_the_descriptors_launch_arguments(monkeypatch):
    """With keep_arguments, a PlannedLaunch's direct launch passes each descriptor's launch
    arguments (descriptor_args: the filled descriptor, shape, strides) made once per weight
    address, x address and row stride, y address, and kept: exactly the arguments made fresh
    for that call. Another weight, x (or x's row stride) or y gets its own; a non-contiguous
    weight is never kept (its strides are not the plan's); a full memo is emptied."""
    import torch

    verified, launches, direct_calls = _fake_launch_path(monkeypatch, direct_launcher=True)
    cfg = {"family": "wgmma", "BT": 128, "STAGES": 4, "GROUP": 8}
    x, values, meta, y = _launch_operands()
    planned = wgmma.PlannedLaunch(cfg, 300, 512, 256, torch.float16, torch.device("cuda", 0))
    planned(x, values, meta, None, y, 2, cfg)  # learns: CachedLaunch
    [entry] = planned.direct.values()
    launcher = entry[0]
    fills = type(launcher).fills

    def fresh(*tensors):
        return tuple(a for i, t in enumerate(tensors) for a in launcher.descriptor_args(i, t))

    def call(*tensors):
        planned(tensors[1], tensors[0], meta, None, tensors[2], 2, cfg)
        return direct_calls[-1]

    first = call(values, x, y)
    assert len(fills) == 3
    assert first[2] == ("expanded", fresh(values, x, y)) and first[3:] == (
        (meta.data_ptr(), y.data_ptr(), 512, 256), launches[0][2])
    del fills[3:]
    assert call(values, x, y) == first and len(fills) == 3  # nothing made again
    wide = x.as_strided((300, 256), (128, 1))  # x's address, rows 128 apart (they overlap)
    other_values = values.clone()
    for tensors, role in (((values, wide, y), 1), ((other_values, x, y), 0),
                          ((values, x, torch.empty_like(y)), 2)):
        made = len(fills)
        assert call(*tensors)[2] == ("expanded", fresh(*tensors))
        assert fills[made] == role and len(fills) == made + 1 + 3  # one made, three for fresh()
    made = len(fills)
    strided = torch.randn(512, 256, dtype=torch.float16)[:, ::2]  # [512, 128], not contiguous
    planned(x, strided, meta, None, y, 2, cfg)
    assert direct_calls[-1][2] == (strided, x, y) and len(fills) == made  # the generic launch
    monkeypatch.setattr(wgmma.PlannedLaunch, "_KEPT", 2)
    call(values.clone(), x, y)  # the third weight: the memo is full
    assert len(entry[3]) == 1 and len(entry[4]) == 2


def test_a_planned_launch_takes_n_d_rows_as_their_2_d_view(monkeypatch):
    """A PlannedLaunch takes a contiguous N-D x and y (takes_rows: _linear_impl skips their
    reshapes): the first call, which learns through wgmma.launch, gets their 2-D views; later
    calls key x by its address and row stride and y by its address, so 3-D and 2-D views of
    the same memory share one set of kept arguments, and launch with exactly the arguments
    the 2-D call does."""
    import torch

    verified, launches, direct_calls = _fake_launch_path(monkeypatch, direct_launcher=True)
    cfg = {"family": "wgmma", "BT": 128, "STAGES": 4, "GROUP": 8}
    x, values, meta, y = _launch_operands()
    x3, y3 = x.view(3, 100, 256), y.view(3, 100, 512)
    planned = wgmma.PlannedLaunch(cfg, 300, 512, 256, torch.float16, torch.device("cuda", 0))
    assert planned.takes_rows
    planned(x3, values, meta, None, y3, 2, cfg)  # learns: wgmma.launch with 2-D views
    [(grid, args, constexprs)] = launches
    assert args[1].base.shape == (300, 256) and args[1].base.data_ptr() == x.data_ptr()
    assert args[2].base.shape == (300, 512) and args[2].base.data_ptr() == y.data_ptr()
    fills = type(planned.direct[next(iter(planned.direct))][0]).fills
    planned(x3, values, meta, None, y3, 2, cfg)
    made = len(fills)
    planned(x, values, meta, None, y, 2, cfg)
    assert len(fills) == made  # the 2-D views: the same keys, nothing made again
    # contiguous, its size-1 middle dim's stride free: the rows are still K apart
    odd = x.as_strided((300, 1, 256), (256, 7, 1))
    assert odd.is_contiguous() and odd.stride(-2) == 7
    planned(odd, values, meta, None, y3, 2, cfg)
    assert len(fills) == made
    assert direct_calls[-1] == direct_calls[-2] == direct_calls[-3]
    assert direct_calls[-1][2] == ("expanded", (
        "descriptor", 0, values.data_ptr(), 512, 128, 128, 1,
        "descriptor", 1, x.data_ptr(), 300, 256, 256, 1,
        "descriptor", 2, y.data_ptr(), 300, 512, 512, 1))


@pytest.mark.parametrize("asm_loop", [0, 2])
def test_constexprs_follow_the_kernel_signature(asm_loop):
    """CachedLaunch and DescriptorLauncher pass the constexprs by position: their order must be
    the kernel's, after its seven runtime parameters."""
    from sparse24.kernels.sparse_wgmma import _sparse_wgmma_kernel

    cfg = {"family": "wgmma", "BT": 128, "STAGES": 3, "GROUP": 8, "ASM_LOOP": asm_loop}
    constexprs = wgmma._constexprs(cfg, "float16", True, 1, (0, 98304, 200000, 200032))
    assert _sparse_wgmma_kernel.arg_names[7:] == list(constexprs)
    assert constexprs["ASM_LOOP"] is bool(asm_loop)


def test_split_k_launch_writes_padded_partials_then_reduces(monkeypatch):
    """A SPLIT_K config: the kernel gets a float32 workspace of splits x (M rounded up to whole
    token tiles) rows in unswizzled [BT, 64] boxes, no bias and no activation (the constexprs
    say so), one program per work unit up to the SM count; then the shared split-K reduction
    adds the splits up with the bias and activation, split s at s * rows * N elements."""
    import torch

    verified, launches, direct_calls = _fake_launch_path(monkeypatch)
    reductions = []
    monkeypatch.setattr(wgmma, "_reduce", lambda: lambda *a, **kw: reductions.append((a, kw)))
    cfg = {"family": "wgmma", "BT": 128, "STAGES": 3, "GROUP": 8, "SPLIT_K": 4}
    x, values, meta, y = _launch_operands()  # M 300, N 512, K 256: 2 k-blocks, 4 x 3 tiles
    bias = torch.randn(512)
    wgmma.launch(x, values, meta, bias, y, 2, cfg)
    assert wgmma.splits_of(cfg, 256) == 2  # 2 k-blocks: SPLIT_K 4 leaves 2 splits of 1
    [(grid, args, constexprs)] = launches
    assert grid == (4 * 3 * 2, 1, 1)
    partial = args[2].base
    assert partial.dtype == torch.float32 and partial.shape == (2 * 384, 512)
    assert args[2].block_shape == [128, 64] and args[2].layout == wgmma._partials_layout()
    assert args[4] is y  # the bias pointer is unused: y stands in
    named = dict(zip(wgmma._constexprs(cfg, "float16", False, 0, (4096, 0, 90000, 90032)), constexprs))
    assert named["HAS_BIAS"] is False and named["ACTIVATION"] == 0 and named["SPLIT_K"] == 4
    [((r_partial, r_bias, r_y, r_act, r_splits), kw)] = reductions
    assert r_partial is partial and r_bias is bias and r_y is y and (r_act, r_splits) == (2, 2)
    assert kw == {"split_stride": 384 * 512}


@pytest.mark.parametrize("paired", [False, True])
def test_gated_launch_pairs_in_the_kernel_or_in_a_second_pass(monkeypatch, paired):
    """A gated activation, unsplit: with PAIR_GATED_IN_KERNEL the kernel writes y [M, N / 2] in
    [BT, 32] boxes (64-byte swizzle) with the gated code and nothing follows; without it the
    kernel writes the sums with bias into [M, N] of x's dtype (activation 0) and the reduction's
    gated form pairs them, one split."""
    import torch

    from sparse24.activations import GATED_CODES

    verified, launches, direct_calls = _fake_launch_path(monkeypatch)
    reductions = []
    monkeypatch.setattr(wgmma, "_reduce", lambda: lambda *a, **kw: reductions.append((a, kw)))
    monkeypatch.setattr(wgmma, "PAIR_GATED_IN_KERNEL", paired)
    cfg = {"family": "wgmma", "BT": 128, "STAGES": 4, "GROUP": 8}
    x, values, meta, _ = _launch_operands()
    y, bias, code = torch.empty(300, 256, dtype=torch.float16), torch.randn(512), GATED_CODES["swiglu"]
    wgmma.launch(x, values, meta, bias, y, code, cfg)
    [(grid, args, constexprs)] = launches
    named = dict(zip(wgmma._constexprs(cfg, "float16", True, 0, (4096, 0, 90000, 90032)), constexprs))
    assert args[4] is bias and named["HAS_BIAS"] is True
    if paired:
        assert args[2].base is y and args[2].block_shape == [128, 32]
        assert args[2].layout == wgmma._gated_layout() and named["ACTIVATION"] == code
        assert not reductions
    else:
        sums = args[2].base
        assert sums.shape == (300, 512) and sums.dtype == torch.float16
        assert args[2].block_shape == [128, 64] and named["ACTIVATION"] == 0
        [((r_in, r_bias, r_y, r_act, r_splits), kw)] = reductions
        assert r_in is sums and r_bias is None and r_y is y and (r_act, r_splits) == (code, 1)


def test_meta_ring_configs_fit_and_are_offered():
    """META_RING forms (the metadata through the ring, 2 KB more a stage) come beside Gluon-loop
    configs (not with meta_ring=False), and only where the bigger stages fit in shared memory;
    a config file cannot ask for one with the asm k-loop or metadata loads ahead."""
    from sparse24.ops import configs

    assert not any("META_RING" in c for c in wgmma.candidates(16, 4096, 4096, meta_ring=False))
    ring = [c for c in wgmma.candidates(16, 4096, 4096) if c.get("META_RING")]
    assert ring and all(wgmma.runnable(c) and configs.well_formed(c) for c in ring)
    assert {c["STAGES"] for c in ring if c["BT"] == 8} == {4, 6, 8, 10}  # 12 stages do not fit
    assert all(wgmma.shared_bytes(c["BT"], c["STAGES"], False, True) <= wgmma.MAX_SHARED_BYTES
               for c in ring)
    base = {"family": "wgmma", "BT": 16, "STAGES": 8, "GROUP": 8, "META_RING": 1}
    assert wgmma.runnable(base)
    assert not wgmma.runnable(base | {"META_AHEAD": 2})
    assert not wgmma.runnable({"family": "wgmma", "BT": 128, "STAGES": 4, "GROUP": 8,
                               "META_RING": 1, "ASM_LOOP": 2})
    assert wgmma.runnable(base | {"BT": 8, "STAGES": 12, "META_RING": 0})
    assert not wgmma.runnable(base | {"BT": 8, "STAGES": 12})  # 12 x 18 KB fit, 12 x 20 KB not


def test_split_k_candidates_only_for_few_tiles():
    few = wgmma.candidates(384, 768, 768, split_ks=(1, *wgmma.SPLIT_KS))
    assert {c.get("SPLIT_K", 1) for c in few} == {1, 2, 4}  # 6 k-blocks: 8 splits would idle
    assert all(wgmma.shared_bytes(c["BT"], c["STAGES"], c.get("SPLIT_K", 1) > 1)
               <= wgmma.MAX_SHARED_BYTES for c in few)
    many = wgmma.candidates(24576, 3072, 768, split_ks=(1, *wgmma.SPLIT_KS))
    assert all("SPLIT_K" not in c for c in many)  # 2304+ tiles: no split
    assert all("SPLIT_K" not in c for c in wgmma.candidates(384, 768, 768))


def test_every_tile_offers_small_tiles_at_any_token_count():
    """bench.gemm_variants --every-tile: the 16-32 token tiles beside the large ones at 384
    tokens, which the default pool leaves out (each small tile reads the weight again)."""
    default = {c["BT"] for c in wgmma.candidates(384, 2304, 3072)}
    every = {c["BT"] for c in wgmma.candidates(384, 2304, 3072, every_tile=True)}
    assert default == {64, 128, 256}
    assert every == default | {8, 16, 32}
    assert {c["BT"] for c in wgmma.candidates(4, 768, 768, every_tile=True)} == {8}


def test_direct_key_tells_apart_every_field(monkeypatch):
    """Each field of the sm90 launch's direct key, changed alone, makes a specialization of its
    own: its first call takes CachedLaunch, its second goes direct (a field left out of the key
    would send the first call straight to a launcher compiled for another one)."""
    import torch

    verified, launches, direct_calls = _fake_launch_path(monkeypatch, direct_launcher=True)
    cfg = {"family": "wgmma", "BT": 128, "STAGES": 4, "GROUP": 8}
    x, values, meta, y = _launch_operands()
    half = torch.empty(300, 256, dtype=torch.float16)
    variants = {
        "M": (x[:299], values, None, y[:299], 2),
        "N": (x, values[:256], None, half, 2),
        "a bias": (x, values, torch.randn(512, dtype=torch.float16), y, 2),
        "a float32 bias": (x, values, torch.randn(512), y, 2),
        "activation": (x, values, None, y, 0),
        "dtype": (x.bfloat16(), values.bfloat16(), None, y.bfloat16(), 2),
        # run_config's out= may be of another dtype than x (linear's never is): the descriptors'
        # dtypes are each in the key
        "y's dtype": (x, values, None, y.bfloat16(), 2),
        "values' dtype": (x, values.bfloat16(), None, y, 2),
    }
    for _ in range(2):
        wgmma.launch(x, values, meta, None, y, 2, cfg)
    assert len(launches) == 1 and len(direct_calls) == 1
    for calls, (field, (xv, vv, bias, yv, act)) in enumerate(variants.items(), start=2):
        for _ in range(2):
            wgmma.launch(xv, vv, meta, bias, yv, act, cfg)
        assert len(launches) == calls and len(direct_calls) == calls, field
