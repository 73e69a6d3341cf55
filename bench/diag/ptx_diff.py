"""Did a change alter the GPU code of the sm90 kernel? Its PTX here against another tree's, on a CPU.

Without a GPU a kernel refactor cannot be run, but it can be compiled: Triton compiles the Gluon
kernel for sm_90a on any machine (ptxas ships in the wheel). This compiles the sm90 family's
kernel (``sparse24.ops.wgmma.compile_sm90``, which both trees must have) for each config in the
BASE tree and in this checkout, each in its own process, drops what only locates source lines
(``.loc``, debug sections, ``$L__tmp`` labels, comments) and reports per config: identical, the
same instructions in another order, or how many lines differ. "Identical" or "reordered" is
evidence that a change left the default kernel as it was (bench/NOTES.md, 2026-12-04).

    git archive 60a0a52 sparse24 | (mkdir -p .ab/60a0a52 && tar -x -C .ab/60a0a52)
    python -m bench.diag.ptx_diff .ab/60a0a52 [--configs '[{"BT": 128, "STAGES": 4}]']
"""

from __future__ import annotations

import argparse
import collections
import difflib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# (config, dtype, activation code): the heuristic's tiles, with and without an epilogue
DEFAULT_CASES = [
    ({"family": "wgmma", "BT": 128, "STAGES": 4, "GROUP": 8}, "float16", 2),
    ({"family": "wgmma", "BT": 256, "STAGES": 2, "GROUP": 8}, "bfloat16", 0),
    ({"family": "wgmma", "BT": 64, "STAGES": 6, "GROUP": 8}, "float16", 3),
]

WORKER = r'''
import json, sys
from sparse24.ops import wgmma
cfg, dtype, activation = json.loads(sys.argv[1])
compiled, offsets = wgmma.compile_sm90(cfg, dtype, has_bias=True, activation=activation)
print(json.dumps({"ptx": compiled.asm["ptx"]}))
'''

_SOURCE_ONLY = re.compile(r"^\s*(\.loc\b|\.file\b|//|\$L__tmp\d+:|\.b(8|16|32|64)\s)")


def normalized(ptx: str) -> list[str]:
    """The PTX lines that are code: debug locations, debug-section data, the labels of inlined
    locations and comments dropped, trailing comments cut."""
    lines = []
    for line in ptx.splitlines():
        if _SOURCE_ONLY.match(line):
            continue
        line = re.sub(r"//.*", "", line).rstrip()
        if line:
            lines.append(line)
    return lines


def compare(base: list[str], head: list[str]) -> str:
    if base == head:
        return "identical"
    if collections.Counter(base) == collections.Counter(head):
        moved = sum(1 for line in difflib.unified_diff(base, head, lineterm="", n=0)
                    if line.startswith("+") and not line.startswith("+++"))
        return f"the same instructions, {moved} in another place"
    changed = [line for line in difflib.unified_diff(base, head, lineterm="", n=0)
               if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    return f"differs: {len(changed)} lines (first: {changed[:2]})"


def compile_ptx(tree: Path, case) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(tree.resolve()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with tempfile.TemporaryDirectory() as scratch:  # not the repo first on sys.path
        done = subprocess.run([sys.executable, "-c", WORKER, json.dumps(case)], capture_output=True,
                              text=True, cwd=scratch, env=env, timeout=600)
    if done.returncode:
        raise RuntimeError(f"compiling {case} in {tree} failed:\n{done.stderr[-2000:]}")
    return normalized(json.loads(done.stdout.strip().splitlines()[-1])["ptx"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="a directory holding another tree's sparse24/ package")
    parser.add_argument("--configs", type=json.loads, default=None,
                        help="JSON list of sm90 configs (fields over the defaults' first), "
                             "each compiled as float16 with bias and erf-GELU")
    args = parser.parse_args()
    if not (args.base / "sparse24" / "__init__.py").is_file():
        parser.error(f"{args.base} holds no sparse24/ package (see the usage above)")
    cases = DEFAULT_CASES if args.configs is None else [
        (DEFAULT_CASES[0][0] | cfg, "float16", 2) for cfg in args.configs]
    for case in cases:
        print(f"{json.dumps(case[0])} {case[1]} activation {case[2]}: "
              f"{compare(compile_ptx(args.base, case), compile_ptx(REPO, case))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
