"""bench/llm.py on a tiny Llama config on the CPU: the models, the decode step over a static KV
cache, prefill, and the rows it records (the timings themselves need the GPU)."""

from __future__ import annotations

import time

import pytest
import torch

pytest.importorskip("transformers")
from bench import llm  # noqa: E402

TINY = dict(hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=100, max_position_embeddings=64)


def wall_clock(fn):
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def test_rows_for_decode_and_prefill(seed):
    dense, sparse, report = llm.build_models(2, torch.float32, "cpu", **TINY)
    assert len(report.swapped) == 2 * 7 and not any(f.startswith("embed") for f in report.swapped)
    # gate + up as one GEMM, and q + k + v
    assert sorted(report.grouped) == [f"layers.{i}.{block}" for i in range(2)
                                      for block in ("mlp", "self_attn")]
    recorded = []
    rows = llm.run_rows(dense, sparse, modes=["eager"], batches=[1, 3], context=5, prefill=9,
                        device="cpu", dtype=torch.float32, timer=wall_clock, rounds=2,
                        add=lambda row: recorded.append(row) or row)
    assert rows == recorded
    assert [(r["phase"], r["batch"], r["tokens"]) for r in rows] == [
        ("decode", 1, 1), ("decode", 3, 3), ("prefill", 1, 9)]
    for row in rows:
        assert row["status"] == "ok", row["error"]
        assert row["dense_ms"] > 0 and row["sparse24_ms"] > 0 and row["speedup"] > 0
        # same pruned weights: the sparse24 decoder computes what the dense one does
        assert row["rel_err"] < 1e-4


def test_decode_step_attends_over_the_cache(seed):
    dense, _, _ = llm.build_models(1, torch.float32, "cpu", **TINY)
    with torch.inference_mode():
        a = llm.decode_step(dense, 2, 4, "cpu", torch.float32, seed=0)()
        b = llm.decode_step(dense, 2, 4, "cpu", torch.float32, seed=1)()
    assert a.shape == (2, 1, 128) and not torch.equal(a, b)


def test_goals_reads_llm_rows(tmp_path, capsys):
    from bench import goals
    from sparse24 import records

    rec = records.Recorder("llm", tmp_path, {"device": "x"})
    for phase, batch, speedup in (("decode", 1, 1.5), ("decode", 16, 1.3), ("prefill", 1, 1.35)):
        rec.add({"phase": phase, "mode": "graph", "batch": batch, "tokens": batch, "dtype": "float16",
                 "dense_ms": speedup, "sparse24_ms": 1.0, "speedup": speedup})
    assert goals.main([str(rec.jsonl_path)]) == 0
    text = capsys.readouterr().out
    assert "| float16 | `" in text
    decode = next(line for line in text.splitlines() if "decode, CUDA graphs" in line)
    prefill = next(line for line in text.splitlines() if "prefill, CUDA graphs" in line)
    assert "1: 1.50x, 16: 1.30x" in decode and decode.rstrip(" |").endswith("no")
    assert "1: 1.35x" in prefill and prefill.rstrip(" |").endswith("yes")


def test_gated_mlp_models_compute_the_same(seed):
    """--gated-mlp: every MLP a SparseGatedMLP (silu(gate) * up in the GEMM's epilogue), and the
    decoder still computes what the dense one does."""
    from sparse24.nn import SparseGatedMLP

    dense, sparse, report = llm.build_models(2, torch.float32, "cpu", fuse_gated_mlp=True, **TINY)
    assert report.fused == {f"layers.{i}.mlp.gate_up": "swiglu" for i in range(2)}
    assert all(isinstance(layer.mlp, SparseGatedMLP) for layer in sparse.layers)
    rows = llm.run_rows(dense, sparse, modes=["eager"], batches=[2], context=5, prefill=0,
                        device="cpu", dtype=torch.float32, timer=wall_clock, rounds=1,
                        add=lambda row: row)
    assert rows[0]["status"] == "ok" and rows[0]["rel_err"] < 1e-4, rows[0]
