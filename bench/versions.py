"""The same GEMMs through two sparse24 trees, timed in turns in one run: where did a gain go?

A regression between commits shows only when both run on the same GPU in the same session, with
the same cuBLAS beside them (issue 25: at M = 1-64 the sparse GEMM fell from 1.28-1.53x to
1.10-1.15x cuBLAS between 3f7bd99 and ce650da, and no bench caught it). This runs sparse24's
public ``ops.linear`` of a BASE tree and of this checkout, each in its own process (one package
name cannot be imported twice), alternately for ``--rounds`` rounds, each process timing its
GEMMs and cuBLAS in CUDA graphs on operands rotated beyond the L2. Each tree packs its own weight
(the layouts differ between commits) from the same seed, and its output is checked against
F.linear on the pruned weight (a wrong one is reported, not compared). Reported per shape: each tree's median speedup over cuBLAS, the
ratio head / base, and the bytes a second the sparse kernel streams (values + metadata + x + y).

    git archive ce650da sparse24 | (mkdir -p .ab/ce650da && tar -x -C .ab/ce650da)
    python -m bench.versions .ab/ce650da [--shapes 1x4096x4096,...] [--rounds 3]

On the GPU machine, which gets no .git: prepare .ab/<commit> here (``echo /.ab/ >>
.git/info/exclude``) and name ``.ab`` in the call's carry. Tuned configs do not take part: both
trees run with an empty $SPARSE24_CACHE_DIR (heuristics and their shipped defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Issue 25's decode shapes (Llama-3-8B layers at 1-64 tokens, BERT-base at 16) and issue 22's
# few-tile and large shapes.
DEFAULT_SHAPES = ("1x4096x4096,16x4096x4096,64x4096x4096,1x14336x4096,16x14336x4096,"
                  "64x14336x4096,1x4096x14336,16x4096x14336,64x4096x14336,16x768x768,"
                  "16x3072x768,384x3072x768,384x768x3072,6144x768x768,4096x4096x4096")

# Runs in a fresh interpreter whose sparse24 is the tree under test; imports nothing of this repo
# but sparse24, so an old tree's package need not have what today's bench helpers import.
WORKER = r'''
import json, math, sys
import torch, torch.nn.functional as F, triton.testing
import sparse24, sparse24.ops as ops
shapes, dtype_name = json.loads(sys.argv[1]), sys.argv[2]
dtype = getattr(torch, dtype_name)
l2 = torch.cuda.get_device_properties(0).L2_cache_size or 50 * 2**20
print(json.dumps({"package": sparse24.__file__, "kernels": sys.modules["sparse24.kernels"].__file__}),
      flush=True)
for m, n, k in shapes:
    torch.manual_seed(0)
    w = ops.prune_24(torch.randn(n, k, device="cuda", dtype=dtype))
    values, meta = ops.compress(w)
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    ref = F.linear(x.float(), w.float())
    err = ((ops.linear(x, values, meta).float() - ref).norm() / ref.norm()).item()
    moved = values.nbytes + meta.nbytes + x.nbytes + m * n * x.element_size()
    copies = max(1, min(48, math.ceil(3 * l2 / (moved + w.nbytes))))
    sets = [(x.clone(), w.clone(), values.clone(), meta.clone()) for _ in range(copies)]
    def sparse():
        for xc, wc, vc, mc in sets:
            ops.linear(xc, vc, mc)
    def dense():
        for xc, wc, vc, mc in sets:
            F.linear(xc, wc)
    sparse_ms = triton.testing.do_bench_cudagraph(sparse, rep=40) / copies
    dense_ms = triton.testing.do_bench_cudagraph(dense, rep=40) / copies
    print(json.dumps({"m": m, "n": n, "k": k, "sparse_us": sparse_ms * 1e3,
                      "dense_us": dense_ms * 1e3, "err": err, "bytes": moved}), flush=True)
'''


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    shapes = []
    for item in text.replace(" ", "").split(","):
        try:
            m, n, k = (int(v) for v in item.split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"shape {item!r} is not MxNxK") from None
        shapes.append((m, n, k))
    return shapes


def tree_env(tree: Path, cache_dir: str) -> dict[str, str]:
    """The environment of a worker whose ``import sparse24`` finds ``tree``'s package: first on
    PYTHONPATH, and run from a scratch directory (``python -c`` puts the working directory, not
    the repository, first on sys.path)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree.resolve()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["SPARSE24_CACHE_DIR"] = cache_dir
    env.pop("TRITON_INTERPRET", None)
    return env


def importable(tree: Path, scratch: Path) -> Path:
    """``tree`` itself where its kernels are in sparse24/kernels/; for a tree from before
    2026-12-04, whose kernels were a top-level kernels/ that pyproject.toml mapped to
    sparse24.kernels (3f7bd99, ce650da), a copy under ``scratch`` with them moved there. On
    PYTHONPATH alone that mapping is lost, and ``import sparse24.kernels`` found this checkout's
    kernels instead (editable install): the first run on the H200 failed so."""
    if (tree / "sparse24" / "kernels").is_dir() or not (tree / "kernels" / "__init__.py").is_file():
        return tree
    staged = scratch / tree.resolve().name
    shutil.copytree(tree / "sparse24", staged / "sparse24")
    shutil.copytree(tree / "kernels", staged / "sparse24" / "kernels")
    return staged


def run_worker(tree: Path, shapes, dtype: str, cache_dir: str, timeout: float) -> list[dict]:
    with tempfile.TemporaryDirectory() as scratch:
        done = subprocess.run([sys.executable, "-c", WORKER, json.dumps(shapes), dtype],
                              capture_output=True, text=True, cwd=scratch, timeout=timeout,
                              env=tree_env(tree, cache_dir))
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not rows:
        raise RuntimeError(f"the worker for {tree} failed (exit {done.returncode}):\n"
                           f"{done.stderr[-2000:]}")
    for part in ("package", "kernels"):  # the tree we meant, not an installed sparse24
        found = Path(rows[0][part]).resolve()
        if tree.resolve() not in found.parents:
            raise RuntimeError(f"the worker for {tree} imported sparse24's {part} from {found}")
    return rows[1:]


def turns(rounds: int) -> list[str]:
    """Which tree runs when: base then head, then head then base, ... (neither always first)."""
    order = []
    for r in range(rounds):
        order += ["base", "head"] if r % 2 == 0 else ["head", "base"]
    return order


# A tree whose GEMM is further than this from F.linear (relative Frobenius error) computes
# something else: its time is not compared (fp16/bf16 rounding is ~1e-3).
MAX_ERROR = 2e-2


def summarize(rows: list[dict]) -> list[dict]:
    """Per shape: each tree's median speedup over its own run's cuBLAS, median times, bandwidth,
    worst error, and head / base. A tree with a wrong answer at the shape gets "wrong" instead."""
    table = []
    for shape in dict.fromkeys((r["m"], r["n"], r["k"]) for r in rows):
        entry = {"m": shape[0], "n": shape[1], "k": shape[2]}
        for tree in ("base", "head"):
            mine = [r for r in rows if r["tree"] == tree and (r["m"], r["n"], r["k"]) == shape]
            if not mine:
                continue
            if any(r.get("wrong") for r in mine):
                entry[tree] = {"wrong": True, "err": max(r["err"] for r in mine)}
                continue
            sparse_us = statistics.median(r["sparse_us"] for r in mine)
            entry[tree] = {
                "speedup": statistics.median(r["dense_us"] / r["sparse_us"] for r in mine),
                "sparse_us": sparse_us,
                "dense_us": statistics.median(r["dense_us"] for r in mine),
                "tb_per_s": mine[0]["bytes"] / sparse_us / 1e6,
                "err": max(r["err"] for r in mine),
            }
        if all("speedup" in entry.get(tree, {}) for tree in ("base", "head")):
            entry["head_over_base"] = entry["head"]["speedup"] / entry["base"]["speedup"]
        table.append(entry)
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, nargs="?",
                        help="a directory holding another tree's sparse24/ package")
    parser.add_argument("--label", default=None, help="the base's name in the results (default: its folder)")
    parser.add_argument("--shapes", type=parse_shapes, default=parse_shapes(DEFAULT_SHAPES),
                        help="MxNxK list")
    parser.add_argument("--dtype", choices=["float16", "bfloat16"], default="float16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600, help="seconds for one worker")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where versions.jsonl goes (default: bench/results/<device>)")
    args = parser.parse_args()
    from bench import common

    common.require_cuda("python -m bench.versions")
    if args.base is None or not (args.base / "sparse24" / "__init__.py").is_file():
        parser.error(f"{args.base} holds no sparse24/ package (see the usage above)")
    label = args.label or args.base.resolve().name
    env, run_id = common.env_record(), common.new_run_id()
    out_dir = args.out_dir or common.DEFAULT_OUT_DIR
    rows = []
    with tempfile.TemporaryDirectory() as cache_dir, tempfile.TemporaryDirectory() as scratch:
        trees = {"base": importable(args.base, Path(scratch)), "head": REPO}
        for i, tree in enumerate(turns(args.rounds)):
            common.progress(f"round {i // 2 + 1}: {tree} ({trees[tree]})")
            mine = [{**row, "tree": tree, "round": i // 2, "wrong": not row["err"] < MAX_ERROR}
                    for row in run_worker(trees[tree], args.shapes, args.dtype, cache_dir,
                                          args.timeout)]
            rows += mine
            # each worker's rows as they come: a run cut short by a time limit keeps them
            common.append_jsonl(out_dir / "versions_rounds.jsonl", [
                {"bench": "versions_round", "run_id": run_id, "base": label, "dtype": args.dtype,
                 **row, "env": env} for row in mine])
    table = summarize(rows)
    common.append_jsonl(out_dir / "versions.jsonl", [
        {"bench": "versions", "run_id": run_id, "base": label, "dtype": args.dtype, **entry,
         "env": env} for entry in table])

    def cell(entry, tree):
        t = entry.get(tree)
        if t is None:
            return "-"
        if t.get("wrong"):
            return f"WRONG (err {t['err']:.0e})"
        return (f"{t['speedup']:.2f}x ({t['sparse_us']:.1f} us, {t['tb_per_s']:.2f} TB/s, "
                f"err {t['err']:.0e})")

    print(common.markdown_table(
        ["M x N x K", f"base {label}", "head", "head / base"],
        [[f"{e['m']}x{e['n']}x{e['k']}", cell(e, "base"), cell(e, "head"),
          f"{e['head_over_base']:.2f}" if "head_over_base" in e else "-"] for e in table]))
    print(f"appended to {out_dir / 'versions.jsonl'} (run {run_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
