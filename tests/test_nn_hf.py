"""A sparsified Hugging Face model saves with save_pretrained and comes back exactly with
from_pretrained (sparse24/nn/hf.py); torch.save of the whole model works."""

from __future__ import annotations

import copy
import inspect
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from sparse24.nn import SparseLinear, sparsify_
from sparse24.nn.shared_input import FUSED_NAME, ProjectionSlice
from test_nn_sparsify import inputs, logits, pruned
from tolerances import REL_TOL, rel_err

transformers = pytest.importorskip("transformers")

ARCH_CLASSES = {"bert": "BertForQuestionAnswering", "roberta": "RobertaForSequenceClassification",
                "distilbert": "DistilBertForQuestionAnswering", "mpnet": "MPNetForMaskedLM"}


def structure(model: nn.Module) -> list[tuple[str, str, str | None]]:
    """(fqn, class, activation) of every module: what must come back from a checkpoint."""
    return [(fqn, type(m).__name__, m.activation if isinstance(m, SparseLinear) else None)
            for fqn, m in model.named_modules()]


def assert_reloads_the_same(model: nn.Module, tmp_path, cls) -> nn.Module:
    """save_pretrained, then cls.from_pretrained: the same modules and the same logits."""
    model.save_pretrained(tmp_path)
    loaded = cls.from_pretrained(tmp_path).eval()
    assert structure(loaded) == structure(model)
    batch = inputs()
    assert torch.equal(logits(loaded, batch), logits(model, batch))
    return loaded


@pytest.mark.parametrize("arch", list(ARCH_CLASSES))
def test_save_pretrained_then_from_pretrained_gives_the_same_model(seed, tmp_path, arch):
    model = pruned(arch)
    report = sparsify_(model)
    assert report.grouped and report.swapped
    loaded = assert_reloads_the_same(model, tmp_path, getattr(transformers, ARCH_CLASSES[arch]))
    saved = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert saved["quant_method"] == "sparse24"
    assert saved["base"]["groups"] and saved["base"]["linears"]
    for (name, mine), (_, theirs) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(mine, theirs), name


def test_a_model_sparsified_in_two_calls_records_both(seed, tmp_path):
    model = pruned("bert")
    sparsify_(model, filter_fn=lambda m, fqn: "intermediate" in fqn)
    sparsify_(model)
    assert_reloads_the_same(model, tmp_path, transformers.BertForQuestionAnswering)


def test_the_base_model_sparsified_on_its_own_saves_with_its_head(seed, tmp_path):
    model = pruned("bert")
    sparsify_(model.bert)  # the base model: a PreTrainedModel whose config the head shares
    assert_reloads_the_same(model, tmp_path, transformers.BertForQuestionAnswering)


def test_a_head_checkpoint_loads_as_its_base_model_and_back(seed, tmp_path):
    model = pruned("roberta")  # its classification head has a packable 64 x 64 dense layer
    report = sparsify_(model)
    assert "classifier.dense" in report.swapped
    model.save_pretrained(tmp_path / "head")
    with pytest.warns(UserWarning, match="head layers"):
        base = transformers.RobertaModel.from_pretrained(tmp_path / "head").eval()
    # RobertaModel has a pooler that the classification model's base leaves out
    assert [e for e in structure(base) if not e[0].startswith("pooler")] == structure(model.roberta)
    batch = inputs()
    with torch.no_grad():
        assert torch.equal(base(**batch).last_hidden_state, model.roberta(**batch).last_hidden_state)
    base.save_pretrained(tmp_path / "base")
    again = transformers.RobertaForSequenceClassification.from_pretrained(tmp_path / "base")
    assert structure(again.roberta) == structure(model.roberta)
    assert type(again.classifier.dense) is nn.Linear  # the base checkpoint has no head


def test_sparsify_on_a_part_of_a_transformers_model_warns_that_nothing_is_recorded(seed):
    model = pruned("bert")
    with pytest.warns(UserWarning, match="nothing is recorded"):
        sparsify_(model.bert.encoder)
    assert getattr(model.config, "quantization_config", None) is None


def test_loads_in_another_dtype(seed, tmp_path):
    model = pruned("bert")
    sparsify_(model)
    model.save_pretrained(tmp_path)
    loaded = transformers.BertForQuestionAnswering.from_pretrained(tmp_path, dtype=torch.bfloat16)
    qkv = getattr(loaded.bert.encoder.layer[0].attention.self, FUSED_NAME)
    assert qkv.values.dtype == torch.bfloat16 and qkv.meta.dtype == torch.int32
    want = getattr(model.bert.encoder.layer[0].attention.self, FUSED_NAME)
    assert torch.equal(qkv.meta, want.meta) and torch.equal(qkv.values, want.values.bfloat16())


def test_another_layout_version_is_refused(seed, tmp_path):
    model = pruned("bert")
    sparsify_(model)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["quantization_config"]["layout_version"] = 1
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="layout version 1"):
        transformers.BertForQuestionAnswering.from_pretrained(tmp_path)


def test_a_structure_that_does_not_fit_the_model_is_named(seed, tmp_path):
    model = pruned("bert")
    sparsify_(model)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["quantization_config"]["base"]["linears"]["encoder.layer.0.nothing"] = None
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="encoder.layer.0.nothing"):
        transformers.BertForQuestionAnswering.from_pretrained(tmp_path)


def test_a_dense_model_is_not_quantized_on_loading(seed, tmp_path):
    from sparse24.nn.hf import Sparse24Config

    pruned("bert").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="pre-quantized"):
        transformers.BertForQuestionAnswering.from_pretrained(
            tmp_path, quantization_config=Sparse24Config())


def test_torch_save_of_the_whole_model(seed, tmp_path):
    model = pruned("bert")
    sparsify_(model)
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    batch = inputs()
    assert torch.equal(logits(loaded, batch), logits(model, batch))
    block = loaded.bert.encoder.layer[1].attention.self
    assert isinstance(block.query, ProjectionSlice) and block.query._fused is getattr(block, FUSED_NAME)
    assert isinstance(loaded.bert.encoder.layer[1].output.dense, SparseLinear)


def test_sparsify_does_not_touch_a_model_without_a_transformers_config(seed):
    model = nn.Sequential(nn.Linear(64, 32))
    with torch.no_grad():
        model[0].weight.zero_()
    model = copy.deepcopy(model)
    sparsify_(model)
    assert not hasattr(model, "config")


def test_importing_sparse24_nn_registers_the_method():
    code = ("import sparse24.nn; from transformers.quantizers.auto import AUTO_QUANTIZER_MAPPING; "
            "print('sparse24' in AUTO_QUANTIZER_MAPPING)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_llama_with_gate_up_groups_round_trips(seed, tmp_path):
    model = pruned("llama")
    report = sparsify_(model, fuse_gated_mlp=False)  # the gated form: test_nn_gated_mlp.py
    assert sorted(report.grouped) == [f"model.layers.{i}.{block}" for i in range(2)
                                      for block in ("mlp", "self_attn")]
    assert all(hasattr(layer.mlp, "gate_up") and hasattr(layer.mlp, "gate_proj")
               and isinstance(layer.self_attn.k_proj, ProjectionSlice)
               for layer in model.model.layers)
    model.save_pretrained(tmp_path)
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert structure(loaded) == structure(model)
    ids = torch.randint(0, 100, (2, 7))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_a_packed_layer_the_checkpoint_did_not_fill_is_refused(seed, tmp_path):
    """A head of another size (ignore_mismatched_sizes=True): transformers would "initialize" the
    packed classifier with _init_weights, which knows no SparseLinear, leaving zeros or garbage
    (NaN logits); loading refuses, naming the layer. The same checkpoint loads at its own size."""
    model = pruned("roberta", num_labels=16)  # 16 outputs: the head's out_proj packs too
    sparsify_(model)
    assert isinstance(model.classifier.out_proj, SparseLinear)
    model.save_pretrained(tmp_path)
    cls = type(model)
    cls.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="was not filled from the checkpoint"):
        cls.from_pretrained(tmp_path, num_labels=2 * model.config.num_labels,
                            ignore_mismatched_sizes=True)


def test_an_unloaded_packed_layer_is_refused_by_transformers_mark(seed):
    """transformers 5.25 marks what it loaded (_is_hf_initialized) and re-initializes a mismatched
    layer's tensors with torch.empty_like, whose memory may hold valid metadata (freed
    checkpoint tensors): where the model's tensors carry the mark, a packed layer without it is
    refused even with valid metadata; without marks anywhere (another transformers), or where
    accelerate's hooks placed the model (they move tensors to new, unmarked objects), nothing is
    inferred from it."""
    from sparse24.nn.hf import refuse_unfilled

    model = pruned("roberta", num_labels=16)
    sparsify_(model)
    refuse_unfilled(model)  # no marks: valid metadata passes
    for tensor in list(model.parameters()) + list(model.buffers()):
        tensor._is_hf_initialized = True
    refuse_unfilled(model)
    del model.classifier.out_proj.meta._is_hf_initialized  # valid contents, not loaded
    with pytest.raises(ValueError, match="classifier.out_proj was not filled from the checkpoint"):
        refuse_unfilled(model)
    # the mark is read from the whole model: every packed tensor unmarked is still refused
    for module in model.modules():
        if isinstance(module, SparseLinear):
            for tensor in (module.values, module.meta):
                tensor.__dict__.pop("_is_hf_initialized", None)
    with pytest.raises(ValueError, match="was not filled from the checkpoint"):
        refuse_unfilled(model)
    # where accelerate placed the model, its hooks move tensors to new, unmarked objects
    # (offloading): the mark is not read there
    model.classifier._hf_hook = object()
    refuse_unfilled(model)


def test_loading_refuses_tensors_whose_shapes_changed(seed):
    """transformers 5.17 checks no shapes while a quantizer loads (5.25 does): it set a
    checkpoint's 16-row head into a layer built for 32 rows. So the quantizer records every
    tensor's shape once it has rebuilt the skeleton, and after loading refuses, by name, any
    that changed: a packed layer's and a dense one's alike (here set by hand, as 5.17 does)."""
    from sparse24.nn.hf import Sparse24HfQuantizer

    model = pruned("roberta", num_labels=16)
    sparsify_(model)
    refusals = {"classifier.out_proj.bias": "classifier.out_proj was not filled from the checkpoint",
                "roberta.embeddings.word_embeddings.weight":
                    r"roberta.embeddings.word_embeddings.weight \(8, 64\) \(the model: \(\d+, 64\)\)"}
    for tensor_name, refusal in refusals.items():
        skeleton = type(model)(copy.deepcopy(model.config))
        quantizer = Sparse24HfQuantizer(skeleton.config.quantization_config)
        quantizer._process_model_before_weight_loading(skeleton)
        skeleton.load_state_dict(model.state_dict())
        tensor = skeleton.get_parameter(tensor_name)
        tensor.data = tensor.data[:8].clone()  # another shape under the same name
        with pytest.raises(ValueError, match=refusal):
            quantizer._process_model_after_weight_loading(skeleton)
    intact = type(model)(copy.deepcopy(model.config))
    quantizer = Sparse24HfQuantizer(intact.config.quantization_config)
    quantizer._process_model_before_weight_loading(intact)
    intact.load_state_dict(model.state_dict())
    assert quantizer._process_model_after_weight_loading(intact) is intact


def test_t5_packs_what_it_can_and_reloads(seed, tmp_path):
    """T5 reads its feed-forward output layer's .weight in forward (wo: left dense, with the
    reason) and its _init_weights reads the projections' .weight on loading (kept off the
    packed layers' owners): the sparsified model runs as the dense one and reloads bit for bit."""
    from sparse24.nn import prune_, squash_

    config = transformers.T5Config(d_model=64, d_kv=32, d_ff=128, num_layers=1, num_heads=2,
                                   vocab_size=128)
    dense = transformers.T5ForConditionalGeneration(config).eval()
    prune_(dense)
    squash_(dense)
    model = copy.deepcopy(dense)
    report = sparsify_(model)
    assert "reads .wo.weight" in report.skipped["encoder.block.0.layer.1.DenseReluDense.wo"]
    assert "encoder.block.0.layer.1.DenseReluDense.wi" in report.swapped
    ids = torch.randint(0, 128, (2, 7))
    with torch.no_grad():
        out = model(input_ids=ids, decoder_input_ids=ids).logits
        assert torch.allclose(out, dense(input_ids=ids, decoder_input_ids=ids).logits, atol=1e-5)
        model.save_pretrained(tmp_path)
        loaded = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
        assert torch.equal(loaded(input_ids=ids, decoder_input_ids=ids).logits, out)


def test_gpt2_conv1d_layers_are_named_as_left_dense(seed):
    """GPT-2's projections are transformers' Conv1D, not nn.Linear: prune_ and sparsify_ name each
    one as left dense, with the reason, instead of saying nothing."""
    from sparse24.nn import prune_

    config = transformers.GPT2Config(n_embd=64, n_layer=1, n_head=2, vocab_size=128, n_positions=32)
    model = transformers.GPT2LMHeadModel(config).eval()
    for report in (prune_(model), sparsify_(model)):
        conv = {fqn: why for fqn, why in report.skipped.items() if "Conv1D" in why}
        assert set(conv) == {"transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj",
                             "transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj"}


def test_llama_attention_packs_q_k_v_with_grouped_query_attention(seed):
    """q_proj, k_proj and v_proj (K and V half Q's rows: 2 key/value heads for 4 query heads) as
    one SparseLinear; a prefill and a decode step over the KV cache give the logits of the same
    weights unpacked, and each step runs the fused GEMM once per layer."""
    dense = pruned("llama")
    model, unfused = copy.deepcopy(dense), copy.deepcopy(dense)
    report = sparsify_(model)
    sparsify_(unfused, fuse_qkv=False)
    assert "model.layers.0.self_attn" in report.grouped
    attention = model.model.layers[0].self_attn
    assert getattr(attention, FUSED_NAME).out_features == 64 + 32 + 32
    assert [(p.start, p.stop) for p in (attention.q_proj, attention.k_proj, attention.v_proj)] == [
        (0, 64), (64, 96), (96, 128)]
    calls = []
    for layer in model.model.layers:
        getattr(layer.self_attn, FUSED_NAME).register_forward_hook(
            lambda module, args, kwargs, out: calls.append(kwargs.get("rows")), with_kwargs=True)
    ids = torch.randint(0, 100, (2, 7))
    # transformers 5.25 names the argument `cache`, earlier releases `past_key_values`
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.no_grad():
        steps = []
        for m in (model, unfused):
            cache = transformers.DynamicCache()
            prefill = m(ids, use_cache=True, **{key: cache})
            step = m(ids[:, :1], use_cache=True, **{key: cache})
            steps.append((prefill.logits, step.logits))
    assert calls == [None] * 4  # two layers, prefill and decode: the fused GEMM, whole
    for got, want in zip(*steps):
        assert rel_err(got, want) < REL_TOL[torch.float32]
