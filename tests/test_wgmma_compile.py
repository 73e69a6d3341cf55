"""The sm90 family on a CPU: its asm text, and the Gluon kernel compiled for sm_90a (no GPU needed:
ptxas ships in the Triton wheel). The interpreter cannot run Gluon or asm; tests/test_wgmma_gpu.py
checks the numbers on a GPU."""

import json
import os
import re
import subprocess
import sys

import pytest

from sparse24.ops import wgmma, wgmma_asm


@pytest.mark.parametrize("bt", [64, 128, 256])
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


def test_candidates_fit_shared_memory():
    configs = wgmma.candidates(4096, 768, 768)
    assert {c["BT"] for c in configs} == {64, 128, 256}
    assert all(wgmma.shared_bytes(c["BT"], c["STAGES"]) <= wgmma.MAX_SHARED_BYTES for c in configs)
    assert {c["BT"] for c in wgmma.candidates(40, 768, 768)} == {64}


# The compile runs in a fresh process: once the Triton interpreter has run kernels in a process
# (the rest of the CPU suite), Triton 3.9's code generator no longer treats some Gluon builtins as
# builtins there ("Did you forget to add @triton.gluon.jit?", seen with an empty Triton cache).
_COMPILE_IN_CHILD = """
import json, os, subprocess, sys, tempfile
import triton
from sparse24.ops import wgmma
cfg, dtype, activation = json.loads(sys.argv[1])
compiled, offsets = wgmma.compile_sm90(cfg, dtype, has_bias=True, activation=activation)
tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
    cubin.write(compiled.asm["cubin"])
    cubin.flush()
    usage = subprocess.run([tool, "-res-usage", cubin.name], capture_output=True, text=True).stdout
print(json.dumps({"ptx": compiled.asm["ptx"], "offsets": offsets, "shared": compiled.metadata.shared,
                  "found": wgmma.ring_offsets(compiled.asm["ttgir"]), "usage": usage}))
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
])
def test_kernel_compiles_for_sm90a_with_verified_offsets(cfg, dtype, activation):
    facts = compile_in_child(cfg, dtype, activation)
    ptx, (a_off, x_off) = facts["ptx"], facts["offsets"]
    ptx_type = wgmma_asm.DTYPES[dtype]
    # four k32 steps per k-block in each of the two math warpgroups
    assert ptx.count(f"wgmma.mma_async.sp.sync.aligned.m64n{cfg['BT']}k32.f32.{ptx_type}.{ptx_type}") == 8
    # the offsets baked into the asm are the ones the allocator gave the rings
    assert facts["found"] == [a_off, x_off]
    assert f"add.u32 sb0, sb0, {x_off};" in ptx
    assert f"add.u32 sa, sa, {a_off};" in ptx and f"add.u32 sa, sa, {a_off + 8192};" in ptx
    assert facts["shared"] <= wgmma.MAX_SHARED_BYTES
    # warp specialization: 3 warpgroups (two math, one holding the loader warp)
    assert ".reqntid 384" in ptx
    # no spills, the GELU epilogue of the 128 x 256 tile included (libdevice's erf spilled 272
    # bytes a thread there and ran at half speed: bench/NOTES.md)
    assert re.search(r"STACK:0\b", facts["usage"]), facts["usage"]


def test_offset_mismatch_refuses_to_run(monkeypatch):
    # an allocator that moves the rings whatever the asm assumes: the launcher must refuse
    answers = iter([(0, 65536), (65536, 0), (0, 65536)])
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
            want = "wgmma" if sm90 and m > gemm.MMA_MAX_TOKENS_SM90 else "mma"
            assert gemm.heuristic_config(m, 3072, 768, cuda)["family"] == want, m
            side = gemm.uses_wgmma(m, cuda)  # what tune() passes
            families = {c["family"] for c in configs.candidates(m, 3072, 768, on_gpu=True,
                                                                 wgmma_side=side)}
            assert families == {"wgmma"} if want == "wgmma" else "wgmma" not in families, (m, families)
    finally:
        gemm.heuristic_config.cache_clear()


def test_cached_config_across_the_rule_is_not_used(monkeypatch):
    import torch

    from sparse24.ops import configs, gemm

    cuda = _pretend_sm90(monkeypatch, True)
    old_mma = {"family": "mma", "BLOCK_F": 128, "BLOCK_T": 32, "GROUP_T": 8, "PREFETCH": 1,
               "SPLIT_K": 1, "num_warps": 4, "num_stages": 1}
    tuned = {"family": "wgmma", "BT": 128, "STAGES": 3, "GROUP": 8}
    try:
        monkeypatch.setattr(configs, "tuned", lambda *a: old_mma)
        assert gemm.choose_config(4096, 768, 768, torch.float16, cuda)["family"] == "wgmma"
        assert gemm.choose_config(16, 768, 768, torch.float16, cuda) == old_mma
        monkeypatch.setattr(configs, "tuned", lambda *a: tuned)
        assert gemm.choose_config(4096, 768, 768, torch.float16, cuda) == tuned
        assert gemm.choose_config(16, 768, 768, torch.float16, cuda)["family"] == "mma"
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
    monkeypatch.setattr(wgmma, "_direct", {})
    monkeypatch.setattr(wgmma, "_sm_count", lambda index: 132)
    monkeypatch.setattr(wgmma, "_verify", lambda *a: verified.append(a) or (4096, 0))
    monkeypatch.setattr(wgmma, "_cached_launch", lambda: fake)
    monkeypatch.setattr(triton_internals, "_current_device", lambda: 0)
    monkeypatch.setattr(triton_internals, "_current_stream", lambda device: "stream")
    monkeypatch.setattr(triton_internals.DescriptorLauncher, "of",
                        lambda compiled, n: direct_launcher and (
                            lambda *call: direct_calls.append(call)))
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
    grid, args, constexprs = launches[1]
    assert grid == (4 * 3, 1, 1)  # 4 feature tiles x 3 token tiles of 128, fewer than 132 SMs
    assert constexprs == tuple(wgmma._constexprs(cfg, "float16", False, 2, 4096, 0).values())
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
    assert scalars == (meta.data_ptr(), y, 512, 256)
    assert constexprs == launches[0][2]
    wgmma.launch(x[:, :248], values[:, :124], meta, None, y, 2, cfg)  # K = 248
    assert len(launches) == 2 and len(direct_calls) == 2
    monkeypatch.setattr(triton_internals.DescriptorLauncher, "enabled", False)
    wgmma.launch(x, values, meta, None, y, 2, cfg)
    assert len(launches) == 3 and len(direct_calls) == 2
