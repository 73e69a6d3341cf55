"""A Llama-style decoder end to end: dense against sparse24 with the same 2:4 weights, decode and prefill.

The layers have Llama-3-8B's shapes (transformers' LlamaConfig: hidden 4096, intermediate 14336,
32 query and 8 key/value heads; per layer q/o 4096 x 4096, k/v 1024 x 4096, gate/up 14336 x 4096,
down 4096 x 14336), random weights, --layers of them (default 4: 1.7 GB of fp16 weights, which
is several times the H200's 60 MB L2, so each step streams its weights as a whole model would).
The timed step is the decoder (``LlamaModel``): embeddings, layers, final norm. The LM head is left
out. It is dense in both models, and at four layers it would be a third of every decode step.

- dense: every decoder-layer Linear pruned 2:4 (``sparse24.ops.prune_24``) and left dense;
- sparse24: the same weights after ``sparsify_``.

Rows (one JSON line each in bench/results/<device>/llm.jsonl):
- decode: one new token per sequence, at batch 1, 4, 16 and 64, attending over a static KV cache
  of --context tokens;
- prefill: --prefill tokens of one sequence, no cache.

Modes: "graph" is ``torch.compile(mode="reduce-overhead")`` (CUDA graphs); "eager" is plain
calls. Dense and sparse24 are timed in turns for --rounds rounds (triton's do_bench, median), and
the speedup is the median of the rounds' ratios. Issue 25's goals are decode >= 1.4x and
prefill >= 1.3x.

    python -m bench.llm [--layers 4] [--batches 1,4,16,64] [--prefill 2048] [--modes graph,eager]
"""

from __future__ import annotations

import argparse
import copy
import inspect
import statistics
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

from bench import common

BENCH = "llm"
LLAMA_8B = dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192,
                rope_theta=500000.0)
BATCHES = [1, 4, 16, 64]
MODES = ["graph", "eager"]

# timer(fn) -> milliseconds per call; the benches use do_bench, the CPU test a wall clock
Timer = Callable[[Callable[[], Any]], float]


def build_models(layers: int, dtype: torch.dtype, device: str, fuse_gate_up: bool = True,
                 fuse_gated_mlp: bool = True, fuse_qkv: bool = True,
                 **config: Any) -> tuple[torch.nn.Module, torch.nn.Module, Any]:
    """(dense, sparse24, sparsify report): LlamaModel with 2:4-pruned decoder-layer weights, and a
    copy of it sparsify_'d (gate_proj and up_proj as one GEMM unless ``fuse_gate_up`` is off;
    with ``fuse_gated_mlp``, silu(gate) * up in that GEMM's epilogue; q_proj, k_proj and v_proj
    as one GEMM unless ``fuse_qkv`` is off)."""
    from transformers import LlamaConfig, LlamaModel

    from sparse24.nn import sparsify_
    from sparse24.ops import prune_24

    cfg = LlamaConfig(**{**LLAMA_8B, **config, "num_hidden_layers": layers})
    with torch.device(device):
        dense = LlamaModel(cfg).to(dtype).eval()
    with torch.no_grad():
        for name, module in dense.named_modules():
            if isinstance(module, torch.nn.Linear) and name.startswith("layers."):
                module.weight.copy_(prune_24(module.weight))
    sparse = copy.deepcopy(dense)
    report = sparsify_(sparse, filter_fn=lambda module, fqn: fqn.startswith("layers."),
                       fuse_gate_up=fuse_gate_up, fuse_gated_mlp=fuse_gated_mlp,
                       fuse_qkv=fuse_qkv)
    return dense, sparse, report


def static_cache(model: torch.nn.Module, batch: int, length: int, device: str, dtype: torch.dtype):
    from transformers import StaticCache

    try:  # transformers 5: the layers allocate on their first update
        return StaticCache(config=model.config, max_cache_len=length)
    except TypeError:  # transformers 4.x
        return StaticCache(config=model.config, max_batch_size=batch, max_cache_len=length,
                           device=device, dtype=dtype)


def decode_step(model, batch: int, context: int, device: str, dtype: torch.dtype, seed: int = 0):
    """A callable running one decode step of ``batch`` sequences at position ``context`` of a
    static cache filled by a prefill of ``context`` tokens. Every call writes the same cache slot,
    so the step can be timed again and again at the same length."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    module = getattr(model, "_orig_mod", model)  # torch.compile's wrapper hides the signature
    vocab = module.config.vocab_size
    cache = static_cache(module, batch, context + 1, device, dtype)
    prompt = torch.randint(0, vocab, (batch, context), generator=g).to(device)
    token = torch.randint(0, vocab, (batch, 1), generator=g).to(device)
    # transformers 5.25 names the argument `cache`, earlier releases `past_key_values`
    key = "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"
    with torch.inference_mode():
        module(input_ids=prompt, use_cache=True, **{key: cache},
               **({} if key == "cache" else {"cache_position": torch.arange(context, device=device)}))
    lengths = [getattr(layer, "cumulative_length", None) for layer in getattr(cache, "layers", [])]
    if lengths and all(torch.is_tensor(n) for n in lengths):
        # transformers 5.x: each static layer writes at its own running length, which every step
        # advances (a cache_position argument is ignored): set it back after each step.
        position = torch.full((batch, 1), context, device=device)

        def step():
            out = model(input_ids=token, use_cache=True, position_ids=position, **{key: cache})
            for length in lengths:
                length.fill_(context)
            return out.last_hidden_state

        return step
    # transformers 4.x: written at the cache_position given
    position = torch.tensor([context], device=device)

    def step():
        return model(input_ids=token, past_key_values=cache, use_cache=True,
                     cache_position=position).last_hidden_state

    return step


def prefill_step(model, tokens: int, device: str, seed: int = 0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (1, tokens), generator=g).to(device)

    def step():
        return model(input_ids=ids, use_cache=False).last_hidden_state

    return step


def compiled(model, mode: str):
    if mode == "eager":
        return model
    torch._dynamo.reset()
    return torch.compile(model, fullgraph=True, mode="reduce-overhead")


def measure(dense_fn, sparse_fn, timer: Timer, rounds: int) -> dict[str, Any]:
    """Both callables timed in turns; the rows' times are medians over the rounds, the speedup the
    median of the rounds' ratios (so a drift of the machine between rounds cancels)."""
    with torch.inference_mode():
        want, got = dense_fn().float(), sparse_fn().float()
        rel_err = (torch.linalg.vector_norm(got - want) / torch.linalg.vector_norm(want)).item()
        ms = common.in_turns({"dense": lambda: timer(dense_fn), "sparse24": lambda: timer(sparse_fn)},
                             rounds)
    return {"dense_ms": statistics.median(ms["dense"]), "sparse24_ms": statistics.median(ms["sparse24"]),
            **common.ratio_summary(ms["dense"], ms["sparse24"]), "rel_err": rel_err}


def run_rows(dense, sparse, *, modes: Sequence[str], batches: Sequence[int], context: int,
             prefill: int, device: str, dtype: torch.dtype, timer: Timer, rounds: int,
             add: Callable[[dict], dict]) -> list[dict]:
    """Every (mode, phase, batch) row, in that order; ``add`` records each as it is measured."""
    rows = []
    for mode in modes:
        dense_model, sparse_model = compiled(dense, mode), compiled(sparse, mode)
        cases = [("decode", b, b) for b in batches] + ([("prefill", 1, prefill)] if prefill else [])
        for phase, batch, tokens in cases:
            if phase == "decode":
                fns = [decode_step(m, batch, context, device, dtype) for m in (dense_model, sparse_model)]
            else:
                fns = [prefill_step(m, tokens, device) for m in (dense_model, sparse_model)]
            row = {"phase": phase, "mode": mode, "batch": batch, "tokens": tokens,
                   "context": context if phase == "decode" else 0}
            try:
                row.update(measure(*fns, timer, rounds), status="ok", error=None)
            except Exception as exc:  # noqa: BLE001 - one failed row must not cost the others
                row.update(dense_ms=None, sparse24_ms=None, speedup=None, status="failed",
                           error=common.error_text(exc))
            rows.append(add(row))
            common.progress(f"[llm] {mode:<6} {phase:<8} batch {batch:<3} tokens {tokens:<5} "
                            f"{common.fmt(row['dense_ms'], 3)} / {common.fmt(row['sparse24_ms'], 3)} ms"
                            f"  x{common.fmt(row['speedup'])}" + (f"  ({row['error']})" if row["error"] else ""))
    return rows


def do_bench_timer(ms_budget: float) -> Timer:  # pragma: no cover (GPU)
    from triton.testing import do_bench

    return lambda fn: do_bench(fn, warmup=ms_budget / 4, rep=ms_budget, return_mode="median")


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4, help="decoder layers (default 4)")
    parser.add_argument("--batches", type=common.parse_int_list, default=BATCHES,
                        help=f"decode batch sizes (default {','.join(map(str, BATCHES))})")
    parser.add_argument("--context", type=int, default=512,
                        help="tokens in the KV cache before the timed decode step (default 512)")
    parser.add_argument("--prefill", type=int, default=2048, help="prefill tokens (0: no prefill row)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"subset of {','.join(MODES)}")
    parser.add_argument("--dtype", choices=["float16", "bfloat16"], default="float16")
    parser.add_argument("--rounds", type=int, default=5, help="turns of dense and sparse24 (default 5)")
    parser.add_argument("--rep-ms", type=float, default=50.0, help="do_bench time per turn")
    parser.add_argument("--fuse-gate-up", action=argparse.BooleanOptionalAction, default=True,
                        help="gate_proj and up_proj as one GEMM in the sparse24 model (the A/B)")
    parser.add_argument("--gated-mlp", action=argparse.BooleanOptionalAction, default=True,
                        help="the MLPs as SparseGatedMLP: silu(gate) * up in the GEMM's epilogue")
    parser.add_argument("--fuse-qkv", action=argparse.BooleanOptionalAction, default=True,
                        help="q_proj, k_proj and v_proj as one GEMM in the sparse24 model (the A/B)")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if not modes or not set(modes) <= set(MODES):
        parser.error(f"--modes: a subset of {MODES}")
    if args.layers < 1 or args.rounds < 1 or args.context < 1 or args.prefill < 0:
        parser.error("--layers, --rounds and --context must be >= 1, --prefill >= 0")
    common.require_cuda("python -m bench.llm")

    dtype = getattr(torch, args.dtype)
    env = common.env_record()
    rec = common.Recorder(BENCH, args.out_dir, env)
    common.progress(f"[llm] {common.env_line(env)}; {args.layers} Llama-8B layers, {args.dtype}")
    torch.set_grad_enabled(False)
    # Dense and sparse24 share LlamaModel.forward's code object: each (model, shape) is its own
    # compiled entry, 2 x 5 here, past dynamo's default limit of 8 (it would run eager silently).
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    dense, sparse, report = build_models(args.layers, dtype, "cuda", fuse_gate_up=args.fuse_gate_up,
                                         fuse_gated_mlp=args.gated_mlp, fuse_qkv=args.fuse_qkv)
    common.progress(f"[llm] sparsify_: {len(report.swapped)} swapped, {len(report.skipped)} left dense")
    base = {"layers": args.layers, "dtype": args.dtype, "model": "llama-8b-shapes",
            "fuse_gate_up": args.fuse_gate_up, "gated_mlp": args.gated_mlp, "fuse_qkv": args.fuse_qkv}
    rows = run_rows(dense, sparse, modes=modes, batches=args.batches, context=args.context,
                    prefill=args.prefill, device="cuda", dtype=dtype,
                    timer=do_bench_timer(args.rep_ms), rounds=args.rounds,
                    add=lambda row: rec.add({**base, **row}))
    headers = ["mode", "phase", "batch", "tokens", "dense ms", "sparse24 ms", "speedup (min-max)",
               "rel err"]
    lines = [[r["mode"], r["phase"], r["batch"], r["tokens"], common.fmt(r["dense_ms"], 3),
              common.fmt(r["sparse24_ms"], 3),
              f"{common.fmt(r['speedup'])}x ({common.fmt(r.get('speedup_min'))}-"
              f"{common.fmt(r.get('speedup_max'))})" if r["speedup"] else r["error"],
              f"{r['rel_err']:.1e}" if r.get("rel_err") is not None else "-"] for r in rows]
    notes = [f"{args.layers} decoder layers of Llama-3-8B shapes, random weights, {args.dtype}; the "
             "LM head is not in the timed step.",
             f"decode: one token per sequence over a static KV cache of {args.context} tokens; "
             "graph = torch.compile(fullgraph=True, mode='reduce-overhead').",
             f"dense and sparse24 timed in turns, {args.rounds} rounds of do_bench; speedup = median "
             "of the rounds' dense / sparse24 ratios; goals (issue 25): decode >= 1.4x, prefill >= 1.3x."]
    _, text = common.write_markdown(args.out_dir, BENCH, "Llama-8B-shaped decoder: dense vs sparse24",
                                    env, rec.run_id, headers, lines, notes)
    print("\n" + text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
