"""torch.compile of a sparsified model: one graph (fullgraph=True) and the eager model's logits."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._dynamo.backends.registry import lookup_backend

from sparse24.nn import prune_, sparsify_, squash_
from test_nn_sparsify import pruned
from tolerances import rel_err

transformers = pytest.importorskip("transformers")

VOCAB, SEQ = 100, 12
# Relative error of the compiled logits against eager. On CPU aot_eager runs the same aten ops as
# eager. On CUDA inductor fuses LayerNorm, softmax and GELU in its own order, so fp16 rounding
# differs: a relative error of a few 1e-3 is expected; a wrong kernel or layout gives O(1).
REL_TOL = {torch.float32: 1e-5, torch.float16: 1e-2}


def sparsified_bert(device: str = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=64)
    model = transformers.BertForQuestionAnswering(config).eval().to(device, dtype)
    prune_(model)
    squash_(model)
    report = sparsify_(model)
    assert len(report.swapped) == 12 and len(report.fused) == 2
    return model


def inputs(device: str = "cpu") -> dict[str, torch.Tensor]:
    ids = torch.randint(3, VOCAB, (2, SEQ), device=device)
    mask = torch.ones_like(ids)
    mask[0, SEQ - 3:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@torch.no_grad()
def logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(**batch)
    return torch.stack([out.start_logits, out.end_logits]).clone()  # clone: CUDA graphs reuse outputs


def test_aot_eager_fullgraph_matches_eager(seed):
    torch._dynamo.reset()
    model = sparsified_bert()
    batch = inputs()
    want = logits(model, batch)
    graphs: list[torch.fx.GraphModule] = []

    def aot_eager_recording(gm: torch.fx.GraphModule, example_inputs):
        graphs.append(gm)
        return lookup_backend("aot_eager")(gm, example_inputs)

    compiled = torch.compile(model, fullgraph=True, backend=aot_eager_recording)
    got = logits(compiled, batch)
    assert rel_err(got, want) < REL_TOL[torch.float32]
    # One graph, in which each SparseLinear is one opaque sparse24 op: per layer, Q/K/V as one
    # (the slices share one call), the attention output, the FFN's two (2 layers: 8 calls).
    assert len(graphs) == 1
    targets = [str(node.target) for node in graphs[0].graph.nodes if node.op == "call_function"]
    assert sum("sparse24.linear" in t for t in targets) == 8, targets
    # A second, fresh batch of the same shape reuses the graph and still matches.
    batch = inputs()
    assert rel_err(logits(compiled, batch), logits(model, batch)) < REL_TOL[torch.float32]
    assert len(graphs) == 1


def test_compiled_model_with_grad_enabled_says_why_backward_fails(seed):
    """Outside no_grad / inference_mode a fullgraph compile must not fail with Dynamo's
    "Observed exception" (the cause buried in its debug context): the forward runs as in eager,
    and the backward raises sparse24's own one-line message."""
    torch._dynamo.reset()
    model = sparsified_bert()
    batch = inputs()
    want = logits(model, batch)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out = compiled(**batch)  # grad enabled: the embeddings' weights require grad
    assert out.start_logits.requires_grad
    assert rel_err(torch.stack([out.start_logits, out.end_logits]), want) < REL_TOL[torch.float32]
    with pytest.raises(RuntimeError) as raised:
        (out.start_logits.sum() + out.end_logits.sum()).backward()
    first_line = str(raised.value).splitlines()[0]
    assert first_line.startswith("sparse24.linear has no backward") and "inference_mode" in first_line


@pytest.mark.gpu
@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_cuda_inductor_fullgraph_fp16_matches_eager(seed, mode):
    torch._dynamo.reset()
    model = sparsified_bert("cuda", torch.float16)
    compiled = torch.compile(model, fullgraph=True, mode=mode)
    for _ in range(3):  # warm-up, CUDA graph recording (reduce-overhead), replay
        batch = inputs("cuda")
        got = logits(compiled, batch)
        want = logits(model, batch)
        assert got.dtype == torch.float16
        assert rel_err(got, want) < REL_TOL[torch.float16]


def sparsified_llama(device: str = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """A tiny Llama with SparseGatedMLP blocks (sparsify_'s fuse_gated_mlp)."""
    model = pruned("llama", vocab_size=VOCAB).to(device, dtype)  # 2:4 survives the cast
    report = sparsify_(model, fuse_gated_mlp=True)
    assert set(report.fused.values()) == {"swiglu"}
    return model


def test_gated_mlp_model_compiles_to_one_graph(seed):
    """The gated epilogue's op under aot_eager: one graph, one sparse24.linear per gate_up (its
    fake says [..., I], half the weight's rows), the eager logits."""
    torch._dynamo.reset()
    model = sparsified_llama()
    ids = torch.randint(3, VOCAB, (2, SEQ))
    graphs: list[torch.fx.GraphModule] = []

    def aot_eager_recording(gm: torch.fx.GraphModule, example_inputs):
        graphs.append(gm)
        return lookup_backend("aot_eager")(gm, example_inputs)

    compiled = torch.compile(model, fullgraph=True, backend=aot_eager_recording)
    with torch.no_grad():
        want, got = model(ids).logits, compiled(ids).logits
    assert rel_err(got, want) < REL_TOL[torch.float32]
    assert len(graphs) == 1
    calls = [node for node in graphs[0].graph.nodes
             if node.op == "call_function" and "sparse24.linear" in str(node.target)]
    assert sum("swiglu" in node.args for node in calls) == 2, [n.args[-1] for n in calls]


@pytest.mark.gpu
@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_cuda_gated_mlp_model_compiles_and_matches_eager(seed, mode):
    torch._dynamo.reset()
    model = sparsified_llama("cuda", torch.float16)
    compiled = torch.compile(model, fullgraph=True, mode=mode)
    for _ in range(3):  # warm-up, CUDA graph recording (reduce-overhead), replay
        ids = torch.randint(3, VOCAB, (2, SEQ), device="cuda")
        with torch.no_grad():
            got, want = compiled(ids).logits.clone(), model(ids).logits
        assert rel_err(got, want) < REL_TOL[torch.float16]
