"""The mma family's kernel compiled for sm_80 and sm_90 on a CPU (ptxas ships in the Triton wheel):
the in-kernel split-K reduction (FUSED_REDUCE) is there with the memory order it relies on, and
costs the streaming loop no registers. The interpreter runs the same code path in the dot family
(tests/test_families.py); the numbers of the mma family need a GPU (tests/test_gemm.py)."""

import json
import os
import re
import subprocess
import sys

import pytest

_COMPILE_IN_CHILD = """
import json, os, re, subprocess, sys, tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from sparse24.kernels.sparse_mma import _sparse_mma_kernel
capability, fused, a_tile, maxnreg, overrides = json.loads(sys.argv[1])
signature = {"x32_ptr": "*i32", "values32_ptr": "*i32", "values_addr": "i64", "meta_addr": "i64",
             "bias_ptr": "*fp32", "y_ptr": "*fp16", "partial_ptr": "*fp32", "counter_ptr": "*i32",
             "M": "i32", "N": "i32", "K": "i32", "stride_x32": "i32", "stride_ym": "i32",
             "chunks_per_split": "i32"}
constexprs = dict(BLOCK_F=128, BLOCK_T=16, GROUP_T=8, PREFETCH=1, SPLIT_K=8, HAS_BIAS=True,
                  ACTIVATION=2, IS_BF16=False, A_TILE=a_tile, FUSED_REDUCE=fused)
constexprs.update(overrides)
# what a launch specializes on: 16-byte aligned tensors, sizes and strides divisible by 16
names = list(signature)
aligned = ("x32_ptr", "values32_ptr", "bias_ptr", "y_ptr", "partial_ptr", "counter_ptr", "N", "K",
           "stride_x32", "stride_ym")
attrs = {(names.index(name),): [["tt.divisibility", 16]] for name in aligned}
signature.update(dict.fromkeys(constexprs, "constexpr"))
compiled = triton.compile(ASTSource(fn=_sparse_mma_kernel, signature=signature, constexprs=constexprs,
                                    attrs=attrs),
                          target=GPUTarget("cuda", capability, 32),
                          options={"num_warps": 4, "num_stages": 1, **({"maxnreg": maxnreg} if maxnreg else {})})
tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
    cubin.write(compiled.asm["cubin"])
    cubin.flush()
    usage = subprocess.run([tool, "-res-usage", cubin.name], capture_output=True, text=True).stdout
    sass = subprocess.run([tool, "-sass", cubin.name], capture_output=True, text=True).stdout
print(json.dumps({"ptx": compiled.asm["ptx"], "usage": usage, "sass": sass}))
"""


def compile_in_child(capability, fused, a_tile=1, maxnreg=None, **overrides):
    """The kernel's PTX, SASS and resource usage; ``overrides``: other constexpr values."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    args = json.dumps([capability, fused, a_tile, maxnreg, overrides])
    done = subprocess.run([sys.executable, "-c", _COMPILE_IN_CHILD, args],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    facts["registers"] = int(re.search(r"REG:(\d+)", facts["usage"]).group(1))
    return facts


@pytest.mark.slow
@pytest.mark.parametrize("capability", [80, 90])
def test_fused_reduce_compiles_with_its_memory_order_and_few_extra_registers(capability):
    plain, fused = compile_in_child(capability, False), compile_in_child(capability, True)
    assert "atom." not in plain["ptx"]
    # the count: acquire-release at GPU scope; the reset; the other splits' partials read past L1
    assert re.search(r"atom\.global\.gpu\.acq_rel\.add\.u32", fused["ptx"])
    assert re.search(r"atom\.global\.gpu\.acq_rel\.exch\.b32", fused["ptx"])
    assert "ld.global.cg" in fused["ptx"]
    # the reduction loop is not unrolled: unrolled over 8 splits it took 176-235 registers a
    # thread (Triton 3.6 and 3.9, sm_90, compiled without the launch's alignment facts). Rolled,
    # and compiled as a launch specializes (16-byte aligned, sizes divisible by 16): sm_90
    # 136-138 against 114, sm_80 134-136 against 116-118 (Triton 3.9 and 3.6): 4 programs of
    # 128 threads an SM become 3. The tuner times both forms.
    extra = 24
    assert fused["registers"] <= plain["registers"] + extra, (fused["registers"], plain["registers"])
    assert re.search(r"STACK:0\b", fused["usage"]), fused["usage"]


@pytest.mark.slow
@pytest.mark.parametrize("capability", [80, 90])
def test_a_tile_2_loads_whole_lines_without_spilling(capability):
    """A_TILE 2 (two chunks of K a step): each thread's share of the [128, 32]-word values tile is
    16-byte loads (LDG.E.128: 8 threads cover a row's 128 bytes), twice A_TILE 1's, and the
    double-buffered pair fits in registers (no local memory; sm_90: 168-174 registers against
    114, Triton 3.9 and 3.6)."""
    one, two = compile_in_child(capability, False, 1), compile_in_child(capability, False, 2)
    wide = [len(re.findall(r"LDG\.E\.128", facts["sass"])) for facts in (one, two)]
    assert wide[1] == 2 * wide[0] and wide[0] > 0, wide
    assert re.search(r"STACK:0\b", two["usage"]), two["usage"]
    assert "LDL" not in two["sass"] and "STL" not in two["sass"]


@pytest.mark.slow
@pytest.mark.parametrize("capability", [80, 90])
def test_a_tile_2_fits_168_registers_without_spilling(capability):
    """The tuner's MAXNREG 168 form of A_TILE 2 (128 x 16 tiles): three programs of 128 threads
    an SM instead of two, and still no local memory (Triton 3.6 and 3.9)."""
    capped = compile_in_child(capability, False, 2, maxnreg=168)
    assert capped["registers"] <= 168, capped["registers"]
    assert re.search(r"STACK:0\b", capped["usage"]), capped["usage"]
    assert "LDL" not in capped["sass"] and "STL" not in capped["sass"]


@pytest.mark.slow
@pytest.mark.parametrize("capability", [80, 90])
@pytest.mark.parametrize("split_k, fused", [(1, False), (8, True)])
def test_gated_epilogue_compiles_without_spills(capability, split_k, fused):
    """The SwiGLU epilogue pairs rows r and r + 8 of each 16-row block (sparse24/kernels/
    epilogue.py): both sit in one thread of the mma accumulator, so the reshape and split it is
    written with should cost no spills, in the kernel's own epilogue (unsplit, 256 x 32 tiles)
    and in the last split's (FUSED_REDUCE, 128 x 16, A_TILE 2)."""
    from sparse24.activations import EPILOGUE_CODES, GATED_CODES

    shape = dict(BLOCK_F=256, BLOCK_T=32, SPLIT_K=1) if split_k == 1 else {}
    a_tile = 1 if split_k == 1 else 2
    plain = compile_in_child(capability, fused, a_tile, ACTIVATION=EPILOGUE_CODES["silu"], **shape)
    gated = compile_in_child(capability, fused, a_tile, ACTIVATION=GATED_CODES["swiglu"], **shape)
    assert re.search(r"STACK:0\b", gated["usage"]), gated["usage"]
    print(capability, split_k, "registers: silu", plain["registers"], "swiglu", gated["registers"])
