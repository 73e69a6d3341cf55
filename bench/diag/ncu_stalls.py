"""Where the sm90 kernel's warps wait, from Nsight Compute's per-instruction stall samples.

Input: the SASS source page of one profiled launch, as CSV (plain or gzipped), e.g.

    ncu --clock-control none -k regex:_sparse_wgmma_kernel --launch-skip 1 --launch-count 1 \\
        --section SourceCounters --section WarpStateStats --page source --print-source sass --csv \\
        python -m bench.investigations.2026-12-sm90-ncu.profile_wgmma '[[4096, 4096, 4096, null]]'

Each instruction's "Warp Stall Sampling (All Samples)" is put in one of these groups:
  - wgmma drain: ``WARPGROUP.DEPBAR`` (a math warpgroup waits for its wgmmas: the tensor cores
    are working for it, or for the other warpgroup first);
  - mbarrier wait: the branch of a ``SYNCS.PHASECHK`` try-wait loop (a warp waits for a ring
    stage), split by how often it ran: the loader's waits (for a free stage) run once per k-block
    in one warp, the math warpgroups' (for a full stage) in 4 warps each;
  - idle warps: instructions run at most twice per program (the spare warps of the loader's
    warpgroup park at the kernel's final barrier from start to end; they are not the kernel's
    cost, but they take samples);
  - the rest.

    python -m bench.diag.ncu_stalls FILE.csv[.gz] [--top 12]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import sys
from collections import Counter
from pathlib import Path

SAMPLES = "Warp Stall Sampling (All Samples)"
EXECUTED = "Instructions Executed"


def read_rows(path: Path) -> tuple[list[str], list[dict]]:
    """(the lines before the table: the profiled process's output, the table's rows)."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    lines = raw.decode().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('"Address"'))
    rows = [row for row in csv.DictReader(io.StringIO("\n".join(lines[start:])))
            if row.get("Source")]
    return lines[:start], rows


def groups(rows: list[dict]) -> Counter:
    """Samples per group (see the module docstring)."""
    programs = min(int(r[EXECUTED]) for r in rows if int(r[EXECUTED]) > 0)
    out = Counter()
    for i, row in enumerate(rows):
        samples, runs, sass = int(row[SAMPLES]), int(row[EXECUTED]), row["Source"].strip()
        if "WARPGROUP.DEPBAR" in sass:
            out["wgmma drain"] += samples
        # a try-wait loop's branch: ptxas schedules the descriptor arithmetic between the
        # try-wait and its branch (12 instructions apart in the 4096^3 kernel)
        elif sass.startswith("@!P") and "BRA" in sass and any(
                "SYNCS.PHASECHK" in r["Source"] for r in rows[max(0, i - 16):i]):
            out[f"mbarrier wait, run {runs} times"] += samples
        elif runs <= 2 * programs:
            out["idle warps (once per program)"] += samples
        else:
            out["other"] += samples
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--top", type=int, default=12, help="also list the N instructions with "
                        "the most samples")
    args = parser.parse_args()
    header, rows = read_rows(args.csv)
    total = sum(int(r[SAMPLES]) for r in rows)
    print(f"{args.csv.name}: {total} stall samples over {len(rows)} SASS instructions")
    for line in header:
        if line[:1].isdigit():  # profile_wgmma's "M N K config" lines: every run of the process
            print("  the process ran:", line)  # (--launch-skip chose which launch was profiled)
    counts = groups(rows)
    for name, samples in counts.most_common():
        if not samples:
            continue
        print(f"  {100 * samples / total:5.1f}%  {samples:6d}  {name}")
    if args.top:
        print(f"  top {args.top} instructions (index, samples, runs, SASS):")
        ranked = sorted(range(len(rows)), key=lambda i: -int(rows[i][SAMPLES]))[:args.top]
        for i in sorted(ranked):
            row = rows[i]
            print(f"    {i:5d} {int(row[SAMPLES]):6d} {int(row[EXECUTED]):8d}  "
                  f"{row['Source'].strip()[:70]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
