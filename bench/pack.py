"""Bandwidth of the packing ops (mask_24, prune_24, compress, decompress) against a plain copy.

The packing ops are memory bound, so the figure of merit is GB/s over the minimal bytes each op must
move, as a fraction of what a device-to-device copy moving the same number of bytes reaches in the
same run (goal: >= 70% on the large shapes). torch's own to_sparse_semi_structured conversion is
timed as a reference row where it works.

    python -m bench.pack [--quick] [--shapes 768x768,4096x4096] [--dtype bfloat16] [--out-dir DIR]
"""

from __future__ import annotations

import functools
import sys

import torch

from bench import common

BENCH = "pack"
BERT_SHAPES = common.BERT_SHAPES
LLM_SHAPES = common.LLM_SHAPES
QUICK_SHAPES = [(3072, 768), (11008, 4096)]
# Shapes whose weight is far bigger than the L2: there the goal of 70% of copy bandwidth applies.
LARGE_BYTES = 16 * 2**20


def op_cases(n: int, k: int, dtype: torch.dtype):
    """(name, fn(w, wp, packed) -> output, bytes read + written) per op; bytes are the minimum the
    op must move: its input once and its output once."""
    from sparse24 import ops
    from sparse24.reference import packed_bytes

    el = torch.empty((), dtype=dtype).element_size()
    dense = n * k * el
    packed = packed_bytes(n, k, el)
    return [
        ("mask_24", lambda w, wp, p: ops.mask_24(w), dense + n * k),  # bool output: 1 byte each
        ("prune_24", lambda w, wp, p: ops.prune_24(w), 2 * dense),
        ("compress", lambda w, wp, p: ops.compress(wp, check=False), dense + packed),
        ("compress_check", lambda w, wp, p: ops.compress(wp, check=True), dense + packed),
        ("decompress", lambda w, wp, p: ops.decompress(*p), packed + dense),
    ]


def torch24_convert(wp: torch.Tensor):
    """torch's own 2:4 conversion through cuSPARSELt (its CUTLASS backend refuses sm90)."""
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    SparseSemiStructuredTensor._FORCE_CUTLASS = False
    return to_sparse_semi_structured(wp)


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK_SHAPES}")
    parser.add_argument("--shapes", type=common.parse_shapes, default=None,
                        help="comma list of NxK, or 'bert' / 'llm' (default: both)")
    parser.add_argument("--dtype", type=common.parse_dtype, default=torch.float16)
    parser.add_argument("--rep-ms", type=float, default=40, help="timed milliseconds per op")
    args = parser.parse_args(argv)
    common.require_cuda("python -m bench.pack")

    import sparse24.ops as ops

    shapes = args.shapes or (QUICK_SHAPES if args.quick else BERT_SHAPES + LLM_SHAPES)
    dtype = args.dtype
    env = common.env_record()
    rec = common.Recorder(BENCH, args.out_dir, env)
    common.progress(f"[pack] {common.env_line(env)}; {len(shapes)} shapes, {common.dtype_name(dtype)}")

    copy_cache: dict[int, common.Timing] = {}

    def copy_timing(total_bytes: int) -> common.Timing:
        # A copy of total/2 bytes reads and writes `total` bytes, the same traffic as the op.
        if total_bytes not in copy_cache:
            src = torch.empty(total_bytes // 2, dtype=torch.uint8, device="cuda").random_(0, 255)
            dst = torch.empty_like(src)
            copy_cache[total_bytes] = common.time_eager(lambda: dst.copy_(src), rep_ms=args.rep_ms)
        return copy_cache[total_bytes]

    table = []
    for n, k in shapes:
        shape = f"{n}x{k}"
        torch.manual_seed(0)
        w = torch.randn(n, k, dtype=dtype, device="cuda")
        wp = ops.prune_24(w)
        packed = ops.compress(wp)
        # Round trip is exact by contract; a broken pack kernel would make its bandwidth meaningless.
        exact = bool(torch.equal(ops.decompress(*packed), wp))
        base = {"shape": shape, "n": n, "k": k, "dtype": common.dtype_name(dtype),
                "weight_bytes": w.numel() * w.element_size(), "roundtrip_exact": exact}

        cases = op_cases(n, k, dtype)
        cases.append(("torch_to_sparse_semi_structured", lambda w, wp, p: torch24_convert(wp),
                      cases[2][2]))
        for name, fn, nbytes in cases:
            copy = copy_timing(nbytes)
            copy_gbps = nbytes / copy.ms / 1e6
            row = {**base, "op": name, "bytes": nbytes, "copy_ms": copy.ms, "copy_gbps": copy_gbps,
                   "status": "ok", "error": None, "ms": None, "gbps": None, "ratio_to_copy": None}
            if not exact and name != "torch_to_sparse_semi_structured":
                row["status"] = "WRONG"
                row["error"] = "decompress(compress(prune_24(w))) != prune_24(w)"
            else:
                try:
                    fn(w, wp, packed)  # first call compiles; failures surface here
                    t = common.time_eager(functools.partial(fn, w, wp, packed), rep_ms=args.rep_ms)
                    row.update(t.as_row(), gbps=nbytes / t.ms / 1e6, ratio_to_copy=copy.ms / t.ms)
                except Exception as exc:  # noqa: BLE001 - record, keep benchmarking the others
                    torch_row = name.startswith("torch")
                    row.update(status="unsupported" if torch_row else "failed",
                               error=common.error_text(exc))
            rec.add(row)
            common.progress(f"[pack] {shape:>11} {name:<32} {row['status']:<11} "
                            f"{common.fmt_us(row['ms']):>8} us  {common.fmt(row['gbps'], 0):>6} GB/s  "
                            f"copy {copy_gbps:.0f} GB/s  ratio {common.fmt(row['ratio_to_copy'])}")
            table.append(row)
        del w, wp, packed
        torch.cuda.empty_cache()

    headers = ["N x K", "op", "time (us)", "GB/s", "copy GB/s", "of copy", "goal", "status"]
    lines = []
    for r in table:
        large = r["weight_bytes"] >= LARGE_BYTES and not r["op"].startswith("torch")
        goal = ""
        if large and r["ratio_to_copy"] is not None:
            goal = "met" if r["ratio_to_copy"] >= 0.7 else "below 70%"
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['error']}"
        lines.append([r["shape"], r["op"], common.fmt_us(r["ms"]), common.fmt(r["gbps"], 0),
                      common.fmt(r["copy_gbps"], 0),
                      "-" if r["ratio_to_copy"] is None else f"{100 * r['ratio_to_copy']:.0f}%",
                      goal, status])
    notes = [
        "bytes = the op's input read once plus its output written once: prune reads and writes "
        "N*K elements; compress reads N*K and writes the packed weight (9/16 of fp16); decompress "
        "the reverse; mask_24 writes 1 byte per element.",
        "copy = dst.copy_(src) moving the same number of bytes (read + write), timed in this run; "
        "'of copy' = copy time / op time. Goal: >= 70% on weights of 16 MiB and more.",
        "Eager timings (triton do_bench, median, L2 flushed before each call); prune_24 and mask_24 "
        "include their NaN check (a host sync), compress_check its 2:4 check.",
        f"dtype {common.dtype_name(dtype)}; torch_to_sparse_semi_structured uses cuSPARSELt and is "
        "counted with sparse24's packed size.",
    ]
    _, text = common.write_markdown(args.out_dir, BENCH, "sparse24 packing bandwidth", env, rec.run_id,
                                    headers, lines, notes)
    print("\n" + text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
