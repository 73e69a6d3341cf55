"""sparsify_ on tiny random Hugging Face encoders: which layers swap, fusion, numerics, checkpoints."""

from __future__ import annotations

import copy
import functools
import os
import zlib

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from sparse24.nn import SparseLinear, SparsifyReport, prune_, sparsify_, squash_
from sparse24.nn._activations import fusable_activation
from sparse24.nn.shared_input import FUSED_NAME, ProjectionSlice
from tolerances import REL_TOL, rel_err

transformers = pytest.importorskip("transformers")

VOCAB, SEQ = 100, 12

# Hidden 64 and intermediate 128: every encoder Linear is [64|128, 64|128], packable as is.
_BERT_LIKE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=2, max_position_embeddings=64)


def tiny(arch: str, **config) -> nn.Module:
    """A tiny random model in eval mode (no dropout: outputs must be comparable)."""
    t = transformers
    if arch == "bert":
        model = t.BertForQuestionAnswering(t.BertConfig(**{**_BERT_LIKE, **config}))
    elif arch == "roberta":
        model = t.RobertaForSequenceClassification(t.RobertaConfig(**{**_BERT_LIKE, **config}))
    elif arch == "distilbert":
        model = t.DistilBertForQuestionAnswering(t.DistilBertConfig(
            vocab_size=VOCAB, dim=64, hidden_dim=128, n_layers=2, n_heads=2,
            max_position_embeddings=64, **config))
    elif arch == "mpnet":
        model = t.MPNetForMaskedLM(t.MPNetConfig(**{**_BERT_LIKE, **config}))
    elif arch == "llama":  # grouped-query attention: 2 key/value heads for 4 query heads
        model = t.LlamaForCausalLM(t.LlamaConfig(**{
            "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
            "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 100,
            "max_position_embeddings": 64, **config}))
    else:
        raise ValueError(arch)
    return model.eval()


def pruned(arch: str, **config) -> nn.Module:
    """A tiny model whose eligible weights are 2:4: prune_ then squash_ (the training workflow)."""
    model = tiny(arch, **config)
    prune_(model)
    squash_(model)
    return model


@pytest.fixture(scope="module")
def zoo():
    """zoo(arch) -> (masked dense model, its sparsify_'d copy, the report), built once per module.

    Packing runs the Triton kernels through the CPU interpreter (about 1 s per model), so tests
    share these and deep-copy them before changing anything.
    """
    # fixed (not per test: the models are shared), shifted by SPARSE24_TEST_SEED like the others
    torch.manual_seed(zlib.crc32(b"test_nn_sparsify::zoo") + int(os.environ.get("SPARSE24_TEST_SEED", "0")))
    cache: dict[str, tuple[nn.Module, nn.Module, SparsifyReport]] = {}

    def get(arch: str) -> tuple[nn.Module, nn.Module, SparsifyReport]:
        if arch not in cache:
            dense = pruned(arch)
            sparse = copy.deepcopy(dense)
            cache[arch] = (dense, sparse, sparsify_(sparse))
        return cache[arch]

    return get


def inputs() -> dict[str, torch.Tensor]:
    ids = torch.randint(3, VOCAB, (2, SEQ))
    mask = torch.ones_like(ids)
    mask[1, SEQ - 4:] = 0  # padding in the second sequence exercises the attention mask
    return {"input_ids": ids, "attention_mask": mask}


@torch.no_grad()
def logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(**batch)
    parts = [out.start_logits, out.end_logits] if hasattr(out, "start_logits") else [out.logits]
    return torch.cat([p.flatten() for p in parts])


def linear_fqns(model: nn.Module, cls: type = nn.Linear) -> list[str]:
    return [fqn for fqn, m in model.named_modules() if type(m) is cls]


# Per architecture: the head Linear that the kernels cannot serve, the rule it breaks, and how many
# Linear layers swap (2 layers x 6, plus a 64x64 head projection for RoBERTa and MPNet).
ARCHS = {
    "bert": ("qa_outputs", "N=2 ", 12),
    "roberta": ("classifier.out_proj", "N=2 ", 13),
    "distilbert": ("qa_outputs", "N=2 ", 12),
    "mpnet": ("lm_head.decoder", "N=100 ", 13),
}


@pytest.mark.parametrize("arch", ARCHS)
def test_swaps_encoder_layers_and_skips_the_head(zoo, arch):
    head, rule, n_swapped = ARCHS[arch]
    dense, model, report = zoo(arch)
    expected = [fqn for fqn in linear_fqns(dense) if fqn != head]
    assert isinstance(report, SparsifyReport)
    assert report.swapped == expected and len(expected) == n_swapped
    assert list(report.skipped) == [head] and rule in report.skipped[head]
    # Each attention block's Q, K and V: one SparseLinear at <block>.qkv, a slice of it at each
    blocks = sorted({fqn.rsplit(".", 1)[0] for fqn in linear_fqns(model, ProjectionSlice)})
    assert list(report.grouped) == blocks and len(blocks) == 2
    assert sorted(linear_fqns(model, SparseLinear) + linear_fqns(model, ProjectionSlice)) == sorted(
        expected + [f"{block}.{FUSED_NAME}" for block in blocks])
    assert linear_fqns(model) == [head]
    text = str(report)
    assert f"{n_swapped} Linear layers packed 2:4" in text and f"{head}: {rule}" in text


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_match_the_masked_dense_model(zoo, seed, arch):
    dense, fused, fused_report = zoo(arch)
    unfused = copy.deepcopy(dense)
    unfused_report = sparsify_(unfused, fuse_activations=False)
    assert len(fused_report.fused) == 2 and not unfused_report.fused
    batch = inputs()
    want = logits(dense, batch)
    assert rel_err(logits(fused, batch), want) < REL_TOL[torch.float32]
    assert rel_err(logits(unfused, batch), want) < REL_TOL[torch.float32]
    assert rel_err(logits(fused, batch), logits(unfused, batch)) < REL_TOL[torch.float32]


# hidden_act -> the epilogue it fuses into (None: not fused).
HIDDEN_ACTS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
               "relu": "relu", "silu": "silu", "quick_gelu": None}


def _ffn_only(module: nn.Module, fqn: str) -> bool:
    return fqn.endswith("intermediate.dense")


@pytest.mark.parametrize("hidden_act", HIDDEN_ACTS)
def test_fused_activation_per_kind(zoo, seed, hidden_act):
    epilogue = HIDDEN_ACTS[hidden_act]
    dense = copy.deepcopy(zoo("bert")[0])
    for layer in dense.bert.encoder.layer:  # what config.hidden_act would have built
        layer.intermediate.intermediate_act_fn = transformers.activations.ACT2FN[hidden_act]
    act_type = type(dense.bert.encoder.layer[0].intermediate.intermediate_act_fn)
    model = copy.deepcopy(dense)
    report = sparsify_(model, filter_fn=_ffn_only)  # only the FFN input layers: faster
    assert report.swapped == ["bert.encoder.layer.0.intermediate.dense",
                              "bert.encoder.layer.1.intermediate.dense"]
    block = model.bert.encoder.layer[0].intermediate
    if epilogue is None:
        assert report.fused == {}
        assert act_type.__name__ in report.not_fused["bert.encoder.layer.0.intermediate"]
        assert type(block.intermediate_act_fn) is act_type and block.dense.activation is None
    else:
        assert report.fused == {fqn: epilogue for fqn in report.swapped}
        assert type(block.intermediate_act_fn) is nn.Identity and block.dense.activation == epilogue
    batch = inputs()
    assert rel_err(logits(model, batch), logits(dense, batch)) < REL_TOL[torch.float32]


def test_functional_activation_is_fused(zoo, seed):
    dense = copy.deepcopy(zoo("bert")[0])
    for layer in dense.bert.encoder.layer:  # BertIntermediate keeps a callable hidden_act as is
        del layer.intermediate.intermediate_act_fn  # a child module: a function cannot replace it
        layer.intermediate.intermediate_act_fn = F.relu
    model = copy.deepcopy(dense)
    assert sparsify_(model, filter_fn=_ffn_only).fused["bert.encoder.layer.1.intermediate.dense"] == "relu"
    batch = inputs()
    assert rel_err(logits(model, batch), logits(dense, batch)) < REL_TOL[torch.float32]


def test_distilbert_ffn_activation_is_fused(zoo):
    _, model, report = zoo("distilbert")
    ffn = model.distilbert.transformer.layer[1].ffn
    assert report.fused["distilbert.transformer.layer.1.ffn.lin1"] == "gelu"
    assert type(ffn.activation) is nn.Identity and ffn.lin1.activation == "gelu"
    assert ffn.lin2.activation is None


class _GeluSubclass(nn.GELU):
    def forward(self, x):  # overrides forward: may compute anything, so never fused
        return super().forward(x) * 2


@pytest.mark.parametrize("act, expected", [
    (nn.GELU(), "gelu"), (nn.GELU(approximate="tanh"), "gelu_tanh"), (F.gelu, "gelu"),
    (functools.partial(F.gelu, approximate="tanh"), "gelu_tanh"), (nn.ReLU(inplace=True), "relu"),
    (F.relu, "relu"), (torch.relu, "relu"), (nn.SiLU(), "silu"), (F.silu, "silu"),
    (torch.tanh, None),
    (_GeluSubclass(), None),
])
def test_activation_detection(act, expected):
    assert fusable_activation(act) == expected


def test_activation_detection_of_transformers_classes():
    acts = transformers.activations
    assert fusable_activation(acts.GELUActivation()) == "gelu"
    assert fusable_activation(acts.GELUActivation(use_gelu_python=True)) == "gelu"
    assert fusable_activation(acts.NewGELUActivation()) == "gelu_tanh"
    assert fusable_activation(acts.GELUTanh()) == "gelu_tanh"
    assert fusable_activation(acts.SiLUActivation()) == "silu"
    assert fusable_activation(acts.FastGELUActivation()) is None
    assert fusable_activation(acts.QuickGELUActivation()) is None


def test_dense_weights_are_skipped_with_a_warning(seed):
    model = tiny("bert")
    with pytest.warns(UserWarning, match="not 2:4 sparse.*prune_"):
        report = sparsify_(model)
    assert report.swapped == [] and not linear_fqns(model, SparseLinear)
    assert "not 2:4 sparse (row " in report.skipped["bert.encoder.layer.0.attention.self.query"]


def test_filter_fn_picks_layers(zoo):
    model = copy.deepcopy(zoo("bert")[0])
    seen = []

    def only_ffn(module: nn.Module, fqn: str) -> bool:
        seen.append((type(module), fqn))
        return "intermediate" in fqn or ".output.dense" in fqn

    report = sparsify_(model, filter_fn=only_ffn)
    assert {cls for cls, _ in seen} == {nn.Linear} and len(seen) == 13
    assert len(report.swapped) == 6  # attention.output.dense, intermediate.dense, output.dense x 2
    assert report.skipped["bert.encoder.layer.0.attention.self.key"] == "filter_fn returned False"


def test_parametrized_weights_ask_for_squash(seed):
    model = tiny("bert")
    prune_(model, filter_fn=lambda module, fqn: fqn == "bert.encoder.layer.1.output.dense")
    with pytest.warns(UserWarning, match="not 2:4"):  # the 11 layers prune_ left dense
        report = sparsify_(model)
    assert "squash_" in report.skipped["bert.encoder.layer.1.output.dense"]
    assert type(model.bert.encoder.layer[1].output.dense) is not SparseLinear


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(32, 64)
        self.head = nn.Linear(64, 32, bias=False)
        self.head.weight = self.emb.weight  # tied, as in LM heads


def test_tied_weights_are_left_alone(seed):
    model = _Tied()
    with torch.no_grad():
        model.emb.weight.copy_(torch.nn.functional.dropout(model.emb.weight, 0.5))
    before = model.emb.weight.detach().clone()
    assert "tied to emb.weight" in prune_(model).skipped["head"]
    assert "tied to emb.weight" in sparsify_(model).skipped["head"]
    assert type(model.head) is nn.Linear and model.head.weight is model.emb.weight
    assert torch.equal(model.emb.weight, before)


class _Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(64, 32)
        self.b = self.a  # one module reached through two attributes

    def forward(self, x):
        return self.a(x) + self.b(x)


def test_a_shared_linear_is_swapped_everywhere(seed):
    model = _Shared()
    prune_(model)
    squash_(model)
    x = torch.randn(5, 64)
    want = model(x)
    report = sparsify_(model)
    assert report.swapped == ["a"]
    assert isinstance(model.a, SparseLinear) and model.b is model.a
    assert rel_err(model(x), want) < REL_TOL[torch.float32]


def test_linear_subclasses_are_left_alone(seed):
    model = nn.Sequential(nn.MultiheadAttention(64, 2, batch_first=True))
    x = torch.randn(2, 5, 64)
    want = model[0](x, x, x)[0]
    assert "subclass of nn.Linear" in prune_(model).skipped["0.out_proj"]
    assert "subclass of nn.Linear" in sparsify_(model).skipped["0.out_proj"]
    assert torch.equal(model[0](x, x, x)[0], want)


def test_a_bare_linear_is_not_swapped_in_place():
    report = sparsify_(nn.Linear(64, 32))
    assert report.swapped == [] and "from_linear" in report.skipped[""]


def _scrambled(model: nn.Module) -> nn.Module:
    """A copy with every parameter and packed buffer redrawn: a receiver that proves loading works."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
        for m in model.modules():
            if isinstance(m, SparseLinear):
                m.values.normal_()
                m.meta.copy_(SparseLinear(m.in_features, m.out_features).meta)  # another pattern
    return model


def _skeleton(model: nn.Module) -> nn.Module:
    """``model`` with each packable Linear replaced by a fresh SparseLinear of the same shape."""
    for site_fqn, linear in list(model.named_modules()):
        if type(linear) is nn.Linear and linear.out_features % 16 == 0:
            parent_fqn, _, name = site_fqn.rpartition(".")
            setattr(model.get_submodule(parent_fqn), name,
                    SparseLinear(linear.in_features, linear.out_features))
    return model


def test_state_dict_round_trip(zoo, seed, tmp_path):
    src = zoo("bert")[1]
    dst = _scrambled(src)
    batch = inputs()
    want = logits(src, batch)
    assert rel_err(logits(dst, batch), want) > 0.1
    dst.load_state_dict(src.state_dict())
    assert torch.equal(logits(dst, batch), want)

    path = tmp_path / "model.safetensors"
    save_file(src.state_dict(), str(path))
    via_file = _scrambled(src)
    via_file.load_state_dict(load_file(str(path)))
    assert torch.equal(logits(via_file, batch), want)


def test_loading_into_another_shape_names_both_shapes(zoo):
    src = zoo("bert")[1]
    dst = _skeleton(tiny("bert", intermediate_size=192))
    with pytest.raises(RuntimeError, match=r"intermediate\.dense\.values packs a \[128, 64\] weight "
                                           r".* this SparseLinear is \[192, 64\]"):
        dst.load_state_dict(src.state_dict())


def test_bfloat16_model(zoo, seed):
    model = copy.deepcopy(zoo("bert")[1])
    batch = inputs()
    want = logits(model, batch)
    metas = {fqn: m.meta.clone() for fqn, m in model.named_modules() if isinstance(m, SparseLinear)}
    model.to(torch.bfloat16)
    for fqn, m in model.named_modules():
        if isinstance(m, SparseLinear):
            assert m.values.dtype == torch.bfloat16 and m.bias.dtype == torch.bfloat16
            assert m.meta.dtype == torch.int32 and torch.equal(m.meta, metas[fqn])
    got = logits(model, batch)
    assert got.dtype == torch.bfloat16
    assert rel_err(got, want) < REL_TOL[torch.bfloat16]


@pytest.mark.parametrize("hooked", ["dense", "intermediate_act_fn"])
def test_a_hooked_linear_or_activation_is_not_fused(zoo, seed, hooked):
    """A forward hook on the FFN's Linear or on its activation: fusing would hand the Linear's
    hook the activated output and drop the activation's hooks, so the pair stays unfused (the
    Linear is still packed) and the hooks see what they saw before."""
    dense = copy.deepcopy(zoo("bert")[0])
    model = copy.deepcopy(dense)
    seen = []
    for net in (dense, model):
        block = net.bert.encoder.layer[0].intermediate
        getattr(block, hooked).register_forward_hook(
            lambda module, args, out, net=net: seen.append(net) or out * 2)
    report = sparsify_(model, filter_fn=_ffn_only)
    assert "forward hooks" in report.not_fused["bert.encoder.layer.0.intermediate"]
    assert "bert.encoder.layer.0.intermediate.dense" in report.swapped
    batch = inputs()
    assert rel_err(logits(model, batch), logits(dense, batch)) < REL_TOL[torch.float32]
    assert seen.count(model) == seen.count(dense) == 1
