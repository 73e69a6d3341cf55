"""Shipped tuning defaults from a python -m bench.gemm_variants sweep: the fastest correct config per shape.

    python -m bench.make_defaults /path/to/gemm_variants.jsonl [--dest sparse24/tuning/defaults]

Each line of the sweep is one candidate config timed on one (gpu, m, n, k): fields gpu, m, n, k,
dense_ms, cfg, and either ms (and err, its relative error against F.linear) or error (compile
failure, wrong result). Optional fields: dtype (default float16), triton (the Triton version of
the sweep; default 3.6.0, the version the first sweeps ran under).

For every (gpu, dtype, m, n, k) the fastest config with a time, no error and err < the dtype's
tolerance wins; it becomes the entry of M bucket m_bucket(m) (two Ms of one bucket: the larger M
wins, as the cache stores configs tuned at the top of a bucket). The entries go through the tuning
module's own writer (a user cache file in a temp directory, then ``write_defaults``), so the
output is exactly the cache schema: ``<dest>/<gpu slug>.json``. Existing entries of the file for
other shapes are kept unless ``--no-merge``, and so are the file's ``capability`` and
``sm_count``, which let GPUs of the same kind share it (a new file gets them from
``python -m sparse24 tune --write-defaults`` on the GPU, or by hand).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from sparse24.records import read_jsonl
from sparse24.reference import REL_TOL
from sparse24.tuning import CacheEntry, TuningCache, TuningKey, dtype_name, m_bucket, write_defaults
from sparse24.tuning.cache import DEFAULTS_DIR, format_config

DEFAULT_TRITON = "3.6.0"
TOLERANCE = {dtype_name(dtype): tol for dtype, tol in REL_TOL.items()}


def correct(row: dict, dtype: str) -> bool:
    if "error" in row or not isinstance(row.get("ms"), (int, float)):
        return False
    if not (math.isfinite(row["ms"]) and row["ms"] > 0):
        return False
    err = row.get("err")
    return err is None or (isinstance(err, (int, float)) and err < TOLERANCE.get(dtype, 2e-3))


def best_entries(rows: list[dict]) -> dict[tuple[str, str], list[tuple[int, CacheEntry]]]:
    """{(gpu, triton): [(m, entry), ...]}: the winner of every (gpu, dtype, m, n, k)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        dtype = row.get("dtype", "float16")
        triton = row.get("triton") or DEFAULT_TRITON
        groups[(row["gpu"], triton, dtype, int(row["m"]), int(row["n"]), int(row["k"]))].append(row)
    chosen: dict[tuple, tuple[int, CacheEntry]] = {}
    for (gpu, triton, dtype, m, n, k), group in sorted(groups.items()):
        ok = [r for r in group if correct(r, dtype)]
        if not ok:
            print(f"{gpu} {dtype} {m}x{n}x{k}: no correct config, skipped", file=sys.stderr)
            continue
        best = min(ok, key=lambda r: r["ms"])
        key = TuningKey(gpu=gpu, triton=triton, dtype=dtype, n=n, k=k, m_bucket=m_bucket(m))
        entry = CacheEntry(key=key, config=dict(best["cfg"]), ms=float(best["ms"]),
                           n_candidates=len(group), n_rejected=len(group) - len(ok))
        slot = key  # (gpu, triton, dtype, n, k, m bucket)
        if slot in chosen and chosen[slot][0] >= m:
            continue
        chosen[slot] = (m, entry)
    by_file: dict[tuple[str, str], list[tuple[int, CacheEntry]]] = defaultdict(list)
    for slot, item in chosen.items():
        by_file[slot[:2]].append(item)
    return by_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jsonl", help="a gemm_variants.jsonl sweep")
    parser.add_argument("--dest", default=str(DEFAULTS_DIR), help="defaults directory")
    parser.add_argument("--no-merge", dest="merge", action="store_false",
                        help="replace the GPU's defaults file instead of merging into it")
    args = parser.parse_args(argv)

    rows = read_jsonl(Path(args.jsonl))
    by_file = best_entries(rows)
    if not by_file:
        print("no correct config in the sweep; nothing written", file=sys.stderr)
        return 1
    written = []
    merge_first = {gpu: args.merge for gpu, _ in by_file}
    with tempfile.TemporaryDirectory() as tmp:
        cache = TuningCache(tmp, defaults_dir=Path(tmp) / "no-defaults")
        for (gpu, triton), items in sorted(by_file.items()):
            for m, entry in sorted(items, key=lambda item: item[1].key):
                cache.put(entry)
                print(f"{gpu} {entry.key.dtype} M={m} (bucket {entry.key.m_bucket}) "
                      f"N={entry.key.n} K={entry.key.k}: {format_config(entry.config)} "
                      f"{entry.ms * 1e3:.1f} us ({entry.n_candidates - entry.n_rejected}/"
                      f"{entry.n_candidates} correct)")
            # Several Triton versions of one GPU go into the same defaults file: merge after the first.
            dest = write_defaults(cache.path_for(gpu, triton), args.dest, merge=merge_first[gpu])
            merge_first[gpu] = True
            written.append(dest)
    for dest in dict.fromkeys(written):
        print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
