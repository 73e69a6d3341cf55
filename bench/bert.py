"""BERT-base question answering, end to end: dense vs torch's 2:4 vs sparse24, eager and compiled.

bert-base-cased geometry (BertForQuestionAnswering, vocab 28996) with random weights (timing does
not depend on their values), fp16 (or bf16), sequence length 384, as in PyTorch's semi-structured
sparsity tutorial. Rows per batch size and mode, measured in the same run:
  dense         the model as is;
  torch24       every encoder nn.Linear weight 2:4-pruned and replaced, as the tutorial does, by
                nn.Parameter(to_sparse_semi_structured(pruned_weight)) (cuSPARSELt on sm90);
  sparse24      sparse24.nn.prune_ / squash_ / sparsify_ (Q, K and V packed as one GEMM);
  sparse24_sep  the same with sparsify_(fuse_qkv=False): the QKV lever's A/B.
Timed as the tutorial does, with torch.utils.benchmark.Timer(...).blocked_autorange() after a
warm-up, but in turns: each round times every variant of a batch size and mode once, dense first,
for --rounds rounds (after one untimed turn); a row's time is the median of its rounds and its speedup the
median of the rounds' dense / variant ratios. At batch 4 and 16 eager rows are host-bound, and the
lent machines' host speed drifts: dense eager at batch 16 took 4.62 to 9.21 ms across the three
rounds of one H100 run (bench/NOTES.md, session 10); timed one variant after another, a slow spell
landed on whichever ran in it. Modes:
eager, torch.compile(fullgraph=True) ("default") and its mode="reduce-overhead" (CUDA graphs).
Speedups are over dense in the same mode.

    python -m bench.bert [--quick] [--batch-sizes 4,16] [--modes eager,default,reduce-overhead]
                         [--dtype bfloat16] [--variants dense,sparse24] [--rounds 3] [--profile 16,64]

--profile saves torch.profiler tables of the dense and sparse24 rows, taken in a child process
after every row is timed: the profiler leaves CUPTI subscribed when it ends (Kineto tears it down
only with TEARDOWN_CUPTI=1, which inductor's CUDA graphs turn off: pytorch/pytorch#144455), and
every later launch in the process pays for it: dense eager at bs 16 took 4.38 ms before a
profile and 5.18 ms after it, in one process on the H200 (bench/results/h200/diag/
gpu_breakdown_642f629.txt). Runs before 642f629 profiled in-line and timed later rows in a
slowed process (bench/NOTES.md).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench import common

BENCH = "bert"
VOCAB = 28996  # bert-base-cased
BATCH_SIZES = [4, 16, 64, 256]
QUICK_BATCH_SIZES = [16, 64]
VARIANTS = ["dense", "torch24", "sparse24", "sparse24_sep"]
LABELS = {"dense": "dense", "torch24": "torch 2:4", "sparse24": "sparse24",
          "sparse24_sep": "sparse24, Q/K/V apart"}
MODES = ["eager", "default", "reduce-overhead"]
DTYPES = {"float16": "float16", "bfloat16": "bfloat16"}
PROFILED = ("dense", "sparse24")  # the variants --profile saves tables of


def encoder_linears(model: torch.nn.Module):
    """The tutorial's selection: every nn.Linear inside the encoder layers (not the QA head)."""
    return [(name, mod) for name, mod in model.named_modules()
            if isinstance(mod, torch.nn.Linear) and ".encoder.layer." in f".{name}"]


def build_dense(seed: int = 0, dtype: torch.dtype = torch.float16) -> torch.nn.Module:
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(seed)
    with torch.device("cuda"):  # initialising on the GPU saves seconds of CPU init
        model = BertForQuestionAnswering(BertConfig(vocab_size=VOCAB))
    return model.to(dtype).eval()


def build_torch24(dense: torch.nn.Module):
    """(model, reference): reference is the dense model with the same pruned weights."""
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    from sparse24.ops import prune_24

    SparseSemiStructuredTensor._FORCE_CUTLASS = False  # its CUTLASS kernels refuse sm90
    reference = copy.deepcopy(dense)
    for _, linear in encoder_linears(reference):
        linear.weight.data = prune_24(linear.weight.data)
    model = copy.deepcopy(reference)
    linears = encoder_linears(model)
    for _, linear in linears:
        linear.weight = torch.nn.Parameter(to_sparse_semi_structured(linear.weight.data))
    return model, reference, {"converted": len(linears)}


def build_sparse24(dense: torch.nn.Module, fuse_qkv: bool = True):
    """(model, reference, report): reference is the pruned, squashed model before sparsify_, so
    the comparison is exact whatever prune_ chose to prune."""
    import sparse24.nn as snn

    model = copy.deepcopy(dense)
    pruned = snn.prune_(model)
    snn.squash_(model)
    reference = copy.deepcopy(model)
    report = snn.sparsify_(model, fuse_qkv=fuse_qkv)
    return model, reference, {"prune": report_summary(pruned), "sparsify": report_summary(report)}


def make_batch(bs: int, seq_len: int) -> dict[str, torch.Tensor]:
    g = torch.Generator(device="cuda").manual_seed(bs)
    return {
        "input_ids": torch.randint(0, VOCAB, (bs, seq_len), device="cuda", generator=g),
        "token_type_ids": torch.zeros(bs, seq_len, dtype=torch.long, device="cuda"),
        "attention_mask": torch.ones(bs, seq_len, dtype=torch.long, device="cuda"),
    }


def make_batches(batch_sizes, seq_len: int) -> dict[int, dict[str, torch.Tensor]]:
    """make_batch per batch size, the batch dim marked dynamic: one compile serves every batch
    size (a static compile per batch size costs tens of seconds each). "maybe": no error if some
    code specializes on it, it then recompiles instead."""
    batches = {bs: make_batch(bs, seq_len) for bs in batch_sizes}
    for batch in batches.values():
        for t in batch.values():
            torch._dynamo.maybe_mark_dynamic(t, 0)
    return batches


def compile_for(model: torch.nn.Module, mode: str, fresh: bool = True):
    """The model itself for "eager", else torch.compile(fullgraph=True) in that mode; ``fresh``
    empties dynamo's caches first, so each model compiles from scratch, once per mode."""
    if mode == "eager":
        return model
    if fresh:
        torch._dynamo.reset()
    return torch.compile(model, fullgraph=True, **({} if mode == "default" else {"mode": mode}))


def logits(out) -> torch.Tensor:
    return torch.cat([out.start_logits, out.end_logits], dim=-1)


def time_tutorial(fn, batch, min_run_time: float) -> float:
    """Median ms per call from torch.utils.benchmark's blocked_autorange (syncs around blocks)."""
    from torch.utils.benchmark import Timer

    timer = Timer(stmt="fn(**batch)", globals={"fn": fn, "batch": batch})
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def profile_text(fn, batch, iters: int = 3) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn(**batch)
        torch.cuda.synchronize()
    averages = prof.key_averages()
    for key in ("self_device_time_total", "self_cuda_time_total"):  # newer, then older torch
        try:
            return averages.table(sort_by=key, row_limit=20)
        except (AttributeError, KeyError, ValueError):
            continue
    return averages.table(row_limit=20)


def report_summary(report):
    """A prune_/sparsify_ report as counts per field (swapped: 72, skipped: 1, ...): every row
    carries it, and the full lists would repeat 70-odd module names in each."""
    fields = common.jsonable(report)
    if not isinstance(fields, dict):
        return fields
    return {k: len(v) if isinstance(v, (list, dict)) else v for k, v in fields.items()}


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"batch sizes {QUICK_BATCH_SIZES}, shorter timing")
    parser.add_argument("--batch-sizes", type=common.parse_int_list, default=None,
                        help=f"comma list (default {','.join(map(str, BATCH_SIZES))})")
    parser.add_argument("--seq-len", type=int, default=384)
    parser.add_argument("--dtype", choices=list(DTYPES), default="float16")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {','.join(VARIANTS)}")
    parser.add_argument("--modes", default=",".join(MODES), help=f"subset of {','.join(MODES)}")
    parser.add_argument("--rounds", type=int, default=3,
                        help="turns of every variant per batch size and mode (default 3)")
    parser.add_argument("--min-run-time", type=float, default=None,
                        help="seconds of timed runs per variant and round (default 0.3, --quick 0.1)")
    parser.add_argument("--profile", type=common.parse_int_list, default=[],
                        help="batch sizes at which to save a torch.profiler table per dense and "
                             "sparse24 row (in a child process, after the timed rows)")
    parser.add_argument("--profile-only", action="store_true",
                        help="only the profiles (what --profile runs in its child process)")
    parser.add_argument("--no-plot", action="store_true", help="skip drawing the speedup plot")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    modes = [m for m in args.modes.split(",") if m]
    if "dense" not in variants or not set(variants) <= set(VARIANTS):
        parser.error(f"--variants: a subset of {VARIANTS} that includes dense (the baseline)")
    variants = ["dense"] + [v for v in variants if v != "dense"]  # the baseline first in each turn
    if not modes or not set(modes) <= set(MODES):
        parser.error(f"--modes: a subset of {MODES}")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.profile_only and not args.profile:
        parser.error("--profile-only needs --profile BATCH_SIZES")
    common.require_cuda("python -m bench.bert")

    import transformers

    bench = "bert" if args.dtype == "float16" else f"bert_{args.dtype}"
    dtype = getattr(torch, args.dtype)
    batch_sizes = args.batch_sizes or (QUICK_BATCH_SIZES if args.quick else BATCH_SIZES)
    if args.profile_only:
        batch_sizes = args.profile
        variants = [v for v in variants if v != "torch24"]  # its profile says nothing new: host-bound
    min_run_time = args.min_run_time or (0.1 if args.quick else 0.3)
    env = common.env_record({"transformers": transformers.__version__})
    rec = common.Recorder(bench, args.out_dir, env)
    common.progress(f"[bert] {common.env_line(env)}; {args.dtype}, batch sizes {batch_sizes}, "
                    f"seq {args.seq_len}, modes {modes}, {args.rounds} rounds in turns")

    torch.set_grad_enabled(False)
    dense = build_dense(dtype=dtype)
    attn = getattr(dense.config, "_attn_implementation", None)
    batches = make_batches(batch_sizes, args.seq_len)
    builders = {"dense": lambda: (dense, None, None), "torch24": lambda: build_torch24(dense),
                "sparse24": lambda: build_sparse24(dense),
                "sparse24_sep": lambda: build_sparse24(dense, fuse_qkv=False)}
    built = {v: build_variant(builders[v]) for v in variants}
    if args.profile_only:
        for variant in variants:
            for mode in modes:
                b = built[variant]
                fn = None if b.model is None else compile_for(b.model, mode)
                for bs in batch_sizes:
                    profile_row(fn, batches[bs], Path(args.out_dir) / f"bert_profile_{variant}_{mode}_bs{bs}.txt",
                                b.error)
        return 0

    # Reference logits per variant and batch size, eager: the dense model itself, or the dense
    # model with the same pruned weights. Informative only (not a gate): a 2:4 path whose logits
    # drift far from its own pruned dense model is computing something else.
    refs: dict[str, dict[int, torch.Tensor]] = {v: {} for v in variants}
    # One code object (transformers' forward wrapper) is compiled for every variant, with a static
    # graph beside the dynamic one where a batch size of 1 is timed: 2 entries a variant against
    # dynamo's default limit of 8 (a ninth fails a fullgraph compile).
    limits = contextlib.ExitStack()
    limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    limits.enter_context(torch._dynamo.config.patch(**{limit: max(8, 4 * len(variants))}))
    for mode in modes:
        # one dynamo cache per mode holding every variant's graph (its guards pick the model), so
        # that the variants of a batch size can be timed in turns
        torch._dynamo.reset()
        fns = {v: None if b.model is None else compile_for(b.model, mode, fresh=False)
               for v, b in built.items()}
        errors = {v: b.error for v, b in built.items()}
        for bs in batch_sizes:
            rows = {}
            for v in variants:
                b = built[v]
                row = {"variant": v, "seq_len": args.seq_len, "dtype": args.dtype, "model": "bert-base-cased",
                       "attn_implementation": attn, "build_s": b.build_s, "reports": b.report,
                       "batch_size": bs, "compiled": mode != "eager",
                       "compile_mode": None if mode == "eager" else mode}
                row.update(first_call_row(fns[v], b.model, b.reference, batches[bs], refs[v], bs, errors[v]))
                if mode != "eager" and row["first_call_s"] is None and row["status"] == "failed":
                    # A failed compile fails the same way at every batch size; retrying would cost
                    # a compile attempt each.
                    errors[v] = errors[v] or f"{row['error']} (first seen at bs {bs}; not retried)"
                rows[v] = row
            time_in_turns(fns, batches[bs], rows, args.rounds, min_run_time)
            dense_rounds = rows["dense"]["ms_rounds"] if rows["dense"]["ms"] else None
            for v, row in rows.items():
                if v != "dense" and row["ms"] and dense_rounds:
                    both = min(len(dense_rounds), len(row["ms_rounds"]))  # fewer if the turns stopped
                    row.update(common.ratio_summary(dense_rounds[:both], row["ms_rounds"][:both]))
                if bs in args.profile and v in PROFILED:
                    row["profile"] = f"bert_profile_{v}_{mode}_bs{bs}.txt"
                rec.add(row)
                common.progress(
                    f"[bert] {v:<12} {mode:<15} bs={bs:<4} "
                    f"{row['status']:<7} {common.fmt(row['ms'])} ms  {speedup_text(row)}"
                    + (f"  rel err {row['rel_err']:.1e}" if row["rel_err"] is not None else "")
                    + (f"  first call {row['first_call_s']:.1f} s" if row["first_call_s"] else "")
                    + (f"  ({row['error']})" if row["error"] else ""))
        del fns
        torch._dynamo.reset()
        torch.cuda.empty_cache()
    limits.close()

    headers, lines, notes = tutorial_table(rec.rows, variants, batch_sizes, modes)
    notes = [
        f"Time (bs=N): ms per batch of N sequences of {args.seq_len} tokens. The variants of a "
        f"batch size and mode are timed in turns, {args.rounds} rounds of torch.utils.benchmark "
        f"blocked_autorange ({min_run_time} s each) after warm-up; time = the median of the "
        "rounds; speedup = the median of the rounds' dense / variant ratios, their range in "
        "brackets.",
        "modes: eager; default = torch.compile(fullgraph=True); reduce-overhead = the same with "
        "mode='reduce-overhead' (CUDA graphs); batch dim dynamic.",
        f"random bert-base-cased weights, {args.dtype}, attention {attn}, torch.inference_mode().",
    ] + notes
    _, text = common.write_markdown(args.out_dir, bench, f"BERT-base QA inference ({args.dtype}): dense vs 2:4",
                                    env, rec.run_id, headers, lines, notes)
    if not args.no_plot:
        try:
            from bench import plot_bert

            png = plot_bert.plot(rec.rows, Path(args.out_dir) / f"{bench}_speedup.png")
            common.progress(f"[bert] wrote {png}")
        except Exception as exc:  # noqa: BLE001 - the table matters more than the picture
            common.progress(f"[bert] no plot: {common.error_text(exc)}")
    print("\n" + text, flush=True)
    if args.profile:
        profiled = [v for v in variants if v in PROFILED]
        common.progress(f"[bert] profiles of {profiled} at bs {args.profile}, in a child process")
        # the same module in a fresh interpreter, same cwd and environment (python -m bench.bert)
        child = [sys.executable, "-m", __spec__.name, "--profile-only",
                 "--profile", ",".join(map(str, args.profile)), "--dtype", args.dtype,
                 "--seq-len", str(args.seq_len), "--variants", ",".join(profiled),
                 "--modes", ",".join(modes), "--out-dir", str(args.out_dir)]
        if subprocess.run(child, check=False).returncode:
            common.progress("[bert] the profile pass failed (the timed rows stand)")
    return 0


@dataclasses.dataclass
class Built:
    """One variant's model, built once for every mode: ``reference`` is the dense model with the
    same pruned weights (None for dense itself); ``error`` says why the build failed."""
    model: torch.nn.Module | None
    reference: torch.nn.Module | None
    report: Any
    error: str | None
    build_s: float


def build_variant(builder) -> Built:
    t0 = time.perf_counter()
    try:
        # Built with grad off but outside inference_mode: the tutorial's nn.Parameter(...) of a
        # 2:4 tensor must not wrap an inference tensor.
        model, reference, report = builder()
        error = None
    except Exception as exc:  # noqa: BLE001 - e.g. sparse24.nn not there yet: record, go on
        model = reference = report = None
        error = common.error_text(exc)
    return Built(model, reference, report, error, time.perf_counter() - t0)


def speedup_text(row: dict) -> str:
    if row.get("speedup") is None:
        return "-"
    return f"{row['speedup']:.2f}x ({row['speedup_min']:.2f}-{row['speedup_max']:.2f})"


def profile_row(fn, batch, path: Path, error: str | None) -> None:
    if error or fn is None:
        common.progress(f"[bert] no profile {path.name}: {error}")
        return
    try:
        with torch.inference_mode():
            for _ in range(3):  # warm-up, as the timed rows have
                fn(**batch)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(profile_text(fn, batch), encoding="utf-8")
        common.progress(f"[bert] wrote {path}")
    except Exception as exc:  # noqa: BLE001 - one failed profile should not end the others
        common.progress(f"[bert] no profile {path.name}: {common.error_text(exc)}")


def first_call_row(fn, model, reference, batch, refs, bs, error) -> dict:
    """A row before its timing: the first call (a compile, in a compiled mode), the logits' error
    against the reference, then the warm-up calls."""
    row = {"status": "ok", "error": None, "ms": None, "ms_rounds": None, "speedup": None,
           "rel_err": None, "first_call_s": None, "profile": None}
    if error:
        row.update(status="failed", error=error)
        return row
    try:
        with torch.inference_mode():
            t0 = time.perf_counter()
            out = logits(fn(**batch))
            torch.cuda.synchronize()
            row["first_call_s"] = time.perf_counter() - t0
            if bs not in refs:
                refs[bs] = logits((model if reference is None else reference)(**batch))
            row["rel_err"] = common.rel_fro_error(out, refs[bs])
            for _ in range(3):  # warm-up (cuBLAS heuristics, allocator, graphs)
                fn(**batch)
    except Exception as exc:  # noqa: BLE001
        row.update(status="failed", error=common.error_text(exc))
    return row


class ContextLost(RuntimeError):
    """A variant's error left the CUDA context unusable (an illegal memory access, say): every
    later call fails with it, so the turns of that batch size stop there."""


def row_timer(fn, batch, row: dict, min_run_time: float, record: bool = True):
    """One turn's timing of a row, for common.in_turns: appended to row["ms_rounds"] (``record``)
    and returned; None once the row has failed (a failure in a later round, an out-of-memory say,
    fails the whole row). Raises ContextLost where the failure broke the CUDA context."""
    def run() -> float | None:
        if row["status"] != "ok":
            return None
        try:
            with torch.inference_mode():
                ms = time_tutorial(fn, batch, min_run_time)
        except Exception as exc:  # noqa: BLE001
            row.update(status="failed", error=common.error_text(exc))
            try:
                torch.cuda.synchronize()
            except Exception as lost:  # noqa: BLE001 - sticky: the other rows' turns fail too
                raise ContextLost(f"{row['variant']}: {row['error']}") from lost
            return None
        if record:
            row["ms_rounds"].append(ms)
        return ms
    return run


def time_in_turns(fns: dict, batch, rows: dict, rounds: int, min_run_time: float) -> None:
    """The rows of one batch size and mode timed in turns (dense first): one untimed turn, then
    ``rounds``; each ok row gets ms (the median of its rounds), ms_rounds and rounds. The untimed
    turn: the first ran 1.3-1.6x slower for every variant at batch 4 under reduce-overhead (H100,
    runs 20261206T060114Z-817f74 and 20261206T062619Z-e64e08). If a variant's failure broke the
    CUDA context, the turns stop: the other rows keep the rounds they finished, with a note."""
    for row in rows.values():
        row["ms_rounds"] = []
    try:
        common.in_turns({v: row_timer(fns[v], batch, row, min_run_time, record=False)
                         for v, row in rows.items()}, 1)
        common.in_turns({v: row_timer(fns[v], batch, row, min_run_time)
                         for v, row in rows.items()}, rounds)
    except ContextLost as lost:
        for row in rows.values():
            if row["status"] == "ok":
                row["note"] = f"turns stopped after {len(row['ms_rounds'])} of {rounds} rounds: {lost}"
    for row in rows.values():
        if row["status"] == "ok" and not row["ms_rounds"]:
            row.update(status="failed", error=row.pop("note", "no round finished"))
        if row["status"] == "ok":
            row.update(ms=statistics.median(row["ms_rounds"]), rounds=len(row["ms_rounds"]))


def tutorial_table(rows, variants, batch_sizes, modes):
    """The tutorial's layout: one 'Time (bs=N)' line per batch size and mode."""
    by = {(r["variant"], r["compile_mode"] or "eager", r["batch_size"]): r for r in rows}
    headers = ["Metrics", LABELS["dense"]]
    for v in variants[1:]:
        headers += [LABELS[v], f"{LABELS[v]} speedup"]
    headers.append("mode")
    lines, errors = [], {}
    for mode in modes:
        for bs in batch_sizes:
            line = [f"Time (bs={bs})"]
            for v in variants:
                r = by.get((v, mode, bs))
                if r is None or r["status"] != "ok":
                    if r is not None:
                        errors.setdefault(r["error"], []).append(f"{LABELS[v]} bs={bs} {mode}")
                    line += ["failed"] if v == "dense" else ["failed", "-"]
                    continue
                line.append(common.fmt(r["ms"]))
                if v != "dense":
                    line.append(speedup_text(r))
            line.append(mode)
            lines.append(line)
    notes = [f"failed ({', '.join(where)}): {err}" for err, where in errors.items()]
    return headers, lines, notes


if __name__ == "__main__":
    sys.exit(main())
