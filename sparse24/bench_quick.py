"""``python -m sparse24 bench``: a short benchmark on a GPU (a few minutes at most).

A GEMM table on BERT-base shapes (cuBLAS dense vs sparse24 vs torch's own 2:4, each measured in
this run), then BERT-base encoder batches (dense vs sparse24) when transformers is installed. The
result is one JSON line per measurement, with the device name, torch / triton versions and the git
commit, appended to ``<out-dir>/quick.jsonl``; the table goes to ``<out-dir>/quick.md`` and stdout.
The full, recorded benchmarks are the scripts under ``bench/`` of the checkout.

Timing and writing are separate so that the table writer can be tested on a CPU with fake timings.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from sparse24 import records

EXIT_NO_CUDA = 2  # "cannot run here", distinct from a crash (1); bench/common.py uses the same
GEMM_TOKENS = (16, 1536, 24576)
GEMM_SHAPES = ((768, 768), (3072, 768), (768, 3072))  # (N, K) of BERT-base's Linears
BERT_BATCHES = (4, 64)
BACKENDS = ("cublas", "sparse24", "torch24")

# timer(backend, m, n, k) -> milliseconds, or a string saying why it could not run
GemmTimer = Callable[[str, int, int, int], "float | str"]


def default_out_dir() -> Path:
    return records.results_dir()  # bench/results/<device> of the checkout


def gemm_rows(timer: GemmTimer, tokens: Sequence[int] = GEMM_TOKENS,
              shapes: Sequence[tuple[int, int]] = GEMM_SHAPES) -> list[dict]:
    """One row per (tokens, N, K): each backend's milliseconds (or why it failed)."""
    rows = []
    for m in tokens:
        for n, k in shapes:
            row = {"bench": "gemm", "m": m, "n": n, "k": k}
            for backend in BACKENDS:
                row[f"{backend}_ms"] = timer(backend, m, n, k)
            rows.append(row)
    return rows


def _cell(v) -> str:
    return f"{v * 1e3:.1f}" if isinstance(v, float) else str(v)


def markdown(rows: Sequence[dict], env: dict) -> str:
    """The tables: times in microseconds, and sparse24's speedup over the dense baseline."""
    lines = [records.env_line(env), ""]
    gemm = [r for r in rows if r["bench"] == "gemm"]
    if gemm:
        lines += ["| tokens | N x K | cuBLAS dense us | torch 2:4 us | sparse24 us | dense / sparse24 |",
                  "|---|---|---|---|---|---|"]
        for r in gemm:
            d, s = r["cublas_ms"], r["sparse24_ms"]
            ratio = f"{d / s:.2f}x" if isinstance(d, float) and isinstance(s, float) else "-"
            lines.append(f"| {r['m']} | {r['n']}x{r['k']} | {_cell(d)} | {_cell(r['torch24_ms'])} "
                         f"| {_cell(s)} | {ratio} |")
    bert = [r for r in rows if r["bench"] == "bert"]
    if bert:
        lines += ["", "| BERT-base encoder, seq 384 | dense ms | sparse24 ms | dense / sparse24 |",
                  "|---|---|---|---|"]
        for r in bert:
            lines.append(f"| batch {r['batch_size']} | {r['dense_ms']:.2f} | {r['sparse24_ms']:.2f} "
                         f"| {r['dense_ms'] / r['sparse24_ms']:.2f}x |")
    return "\n".join(lines) + "\n"


def write_results(rows: Sequence[dict], env: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Append one JSON line per row (with the run id and the environment record) to quick.jsonl
    and write quick.md; returns both paths."""
    out = Path(out_dir)
    recorder = records.Recorder("quick", out, env)
    for row in rows:
        recorder.add(row)
    md = out / "quick.md"
    md.write_text(markdown(rows, env))
    return recorder.jsonl_path, md


# ------------------------------------------------------------------------------- GPU timing
def cuda_gemm_timer(dtype: torch.dtype = torch.float16) -> GemmTimer:  # pragma: no cover (GPU)
    import torch.nn.functional as F  # noqa: PLC0415
    import triton.testing  # noqa: PLC0415

    import sparse24.ops as ops  # noqa: PLC0415

    def time_ms(fn) -> float:
        return float(triton.testing.do_bench(fn, return_mode="median"))

    def timer(backend: str, m: int, n: int, k: int):
        torch.manual_seed(0)
        w = ops.prune_24(torch.randn(n, k, dtype=dtype, device="cuda"))
        x = torch.randn(m, k, dtype=dtype, device="cuda")
        try:
            if backend == "cublas":
                return time_ms(lambda: F.linear(x, w))
            if backend == "sparse24":
                values, meta = ops.compress(w)
                return time_ms(lambda: ops.linear(x, values, meta))
            t24 = torch.sparse.to_sparse_semi_structured(w)
            return time_ms(lambda: F.linear(x, t24))
        except Exception as exc:  # noqa: BLE001  (e.g. CUTLASS refusing sm90: say so)
            return f"failed ({type(exc).__name__})"

    return timer


def bert_rows(batches: Sequence[int] = BERT_BATCHES) -> list[dict]:  # pragma: no cover (GPU)
    """BERT-base encoder (random weights, fp16, eager), dense vs sparsify_'d; [] without
    transformers."""
    try:
        import transformers  # noqa: PLC0415
    except ImportError:
        print("bench: transformers is not installed (pip install -e '.[bert]'): no BERT rows")
        return []
    import copy  # noqa: PLC0415

    import triton.testing  # noqa: PLC0415

    from sparse24.nn import prune_, sparsify_, squash_  # noqa: PLC0415

    torch.manual_seed(0)
    dense = transformers.BertModel(transformers.BertConfig()).eval().half().cuda()
    sparse = copy.deepcopy(dense)
    prune_(sparse)
    squash_(sparse)
    sparsify_(sparse)
    rows = []
    with torch.inference_mode():
        for bs in batches:
            ids = torch.randint(1000, 2000, (bs, 384), device="cuda")
            d = triton.testing.do_bench(lambda: dense(input_ids=ids), return_mode="median")
            s = triton.testing.do_bench(lambda: sparse(input_ids=ids), return_mode="median")
            rows.append({"bench": "bert", "batch_size": bs, "seq_len": 384,
                         "dense_ms": float(d), "sparse24_ms": float(s)})
    return rows


def add_arguments(parser):
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where quick.jsonl and quick.md go (default: bench/results/<device> of the "
                        "checkout, else of the current directory)")
    parser.add_argument("--no-bert", action="store_true", help="the GEMM table only")
    return parser


def main(args) -> int:
    if not torch.cuda.is_available():
        built = torch.version.cuda or "a CPU-only build"
        print(f"sparse24 bench: needs a CUDA GPU (sm80+); torch.cuda.is_available() is False here "
              f"(torch {torch.__version__}, {built}). On a CPU run `python -m sparse24 demo`, the "
              "correctness demo through the Triton interpreter.", file=sys.stderr)
        return EXIT_NO_CUDA
    env = records.env_record()  # pragma: no cover (GPU from here on)
    print(f"sparse24 bench on {env['device']}: GEMM (fp16, median of triton.testing.do_bench)")
    rows = gemm_rows(cuda_gemm_timer())
    if not args.no_bert:
        rows += bert_rows()
    jsonl, md = write_results(rows, env, args.out_dir or default_out_dir())
    print(markdown(rows, env))
    print(f"wrote {jsonl} and {md}; full benchmarks: python -m bench.gemm, python -m bench.bert")
    return 0
