"""prune_ / squash_: fixed 2:4 masks survive fine-tuning (own loop and Hugging Face Trainer)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from sparse24.nn import Mask24, SparseLinear, prune_, sparsify_, squash_
from sparse24.ops import compress
from sparse24.reference import mask_24_ref

transformers = pytest.importorskip("transformers")

VOCAB, SEQ = 100, 12


def tiny_classifier() -> nn.Module:
    """Tiny random BERT classifier: 12 encoder Linear layers + a 64x64 pooler (all prunable) and a
    2-wide classifier (not)."""
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=64, num_labels=2)
    return transformers.BertForSequenceClassification(config)


def masked_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {fqn: m for fqn, m in model.named_modules() if parametrize.is_parametrized(m, "weight")}


def batch(n: int) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.randint(3, VOCAB, (n, SEQ)),
            "attention_mask": torch.ones(n, SEQ, dtype=torch.long),
            "labels": torch.randint(0, 2, (n,))}


def assert_pruned_exactly(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Pruned entries are +0.0 (not -0.0, not tiny), and the masks did not move."""
    for fqn, module in masked_layers(model).items():
        w = module.weight.detach()
        mask = module.parametrizations.weight[0].mask
        assert torch.equal(mask, masks[fqn]), f"{fqn}: mask changed"
        pruned = w[~mask]
        assert torch.equal(pruned, torch.zeros_like(pruned)), f"{fqn}: pruned weights moved"
        assert not torch.signbit(pruned).any(), f"{fqn}: -0.0 at pruned positions"


def test_prune_masks_by_magnitude(seed):
    model = tiny_classifier()
    dense = {fqn: m.weight.detach().clone() for fqn, m in model.named_modules()
             if isinstance(m, nn.Linear)}
    report = prune_(model)
    assert len(report.pruned) == 13 and list(report.skipped) == ["classifier"]
    assert "N=2 " in report.skipped["classifier"] and "classifier: N=2" in str(report)
    for fqn, module in masked_layers(model).items():
        w0 = dense[fqn]
        mask = module.parametrizations.weight[0].mask
        assert mask.dtype == torch.bool and torch.equal(mask, mask_24_ref(w0))
        assert torch.equal(module.weight, torch.where(mask, w0, torch.zeros(())))
        # The dense values live on, untouched, in the parametrization's original.
        assert torch.equal(module.parametrizations.weight.original, w0)
    assert set(masked_layers(model)) == set(report.pruned)


def test_mask_gives_positive_zero_and_zero_gradient():
    w = -torch.rand(16, 64) - 0.5  # all negative: w * 0 would give -0.0
    w.requires_grad_()
    mask = mask_24_ref(torch.randn(16, 64))
    out = Mask24(mask)(w)
    assert not torch.signbit(out[~mask]).any() and torch.equal(out[mask], w[mask])
    out.backward(torch.full_like(out, float("inf")))  # even an Inf gradient stops at the mask
    assert torch.equal(w.grad[~mask], torch.zeros_like(w.grad[~mask]))
    with pytest.raises(TypeError, match="mask must be bool"):
        Mask24(mask.float())


def test_prune_twice_does_not_stack_masks(seed):
    model = tiny_classifier()
    first = prune_(model)
    second = prune_(model)
    assert second.pruned == [] and all(second.skipped[fqn] == "already pruned by prune_"
                                       for fqn in first.pruned)
    assert all(len(m.parametrizations.weight) == 1 for m in masked_layers(model).values())


def test_prune_filter_fn(seed):
    model = tiny_classifier()
    report = prune_(model, filter_fn=lambda module, fqn: fqn.endswith("intermediate.dense"))
    assert report.pruned == ["bert.encoder.layer.0.intermediate.dense",
                             "bert.encoder.layer.1.intermediate.dense"]
    assert report.skipped["bert.pooler.dense"] == "filter_fn returned False"


def test_training_keeps_pruned_weights_zero(seed):
    """Own loop: AdamW with weight decay, CPU autocast bf16, two micro-batches per step."""
    model = tiny_classifier().train()
    prune_(model)
    layers = masked_layers(model)
    masks = {fqn: m.parametrizations.weight[0].mask.clone() for fqn, m in layers.items()}
    kept_before = {fqn: m.weight.detach()[masks[fqn]].clone() for fqn, m in layers.items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(4):
        for _ in range(2):  # gradient accumulation
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(**batch(4)).loss / 2
            loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert_pruned_exactly(model, masks)
    for fqn, module in layers.items():
        assert not torch.equal(module.weight.detach()[masks[fqn]], kept_before[fqn]), f"{fqn} did not train"
        # Weight decay did reach the hidden pruned entries of the original: only the mask hides them.
        assert (module.parametrizations.weight.original.detach()[~masks[fqn]] != 0).all()


def test_hugging_face_trainer(seed, tmp_path):
    """Three optimizer steps of the HF Trainer in bf16 mixed precision with gradient accumulation."""
    pytest.importorskip("accelerate")
    model = tiny_classifier()
    prune_(model)
    masks = {fqn: m.parametrizations.weight[0].mask.clone() for fqn, m in masked_layers(model).items()}
    kept_before = {fqn: m.weight.detach()[masks[fqn]].clone() for fqn, m in masked_layers(model).items()}
    seen_dtypes = set()
    model.bert.encoder.layer[0].intermediate.dense.register_forward_hook(
        lambda module, args, out: seen_dtypes.add(out.dtype))

    data = batch(24)
    dataset = [{k: v[i] for k, v in data.items()} for i in range(24)]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=3,
        per_device_train_batch_size=4, gradient_accumulation_steps=2, bf16=True,
        learning_rate=1e-2, weight_decay=0.1, save_strategy="no", logging_steps=1,
        dataloader_num_workers=0, disable_tqdm=True, seed=seed,
    )
    result = transformers.Trainer(model=model, args=args, train_dataset=dataset).train()

    assert result.global_step == 3 and torch.isfinite(torch.tensor(result.training_loss))
    assert seen_dtypes == {torch.bfloat16}, "the Trainer did not run under bf16 autocast"
    assert_pruned_exactly(model, masks)
    changed = [not torch.equal(m.weight.detach()[masks[fqn]], kept_before[fqn])
               for fqn, m in masked_layers(model).items()]
    assert all(changed)


def test_squash_then_sparsify(seed):
    model = tiny_classifier().eval()
    report = prune_(model)
    originals = {fqn: m.parametrizations.weight.original for fqn, m in masked_layers(model).items()}
    masked = {fqn: m.weight.detach().clone() for fqn, m in masked_layers(model).items()}
    assert sorted(squash_(model)) == sorted(report.pruned)
    for fqn in report.pruned:
        module = model.get_submodule(fqn)
        assert type(module) is nn.Linear and not parametrize.is_parametrized(module)
        # Same Parameter object as the trained original (an optimizer holding it stays valid).
        assert module.weight is originals[fqn]
        assert torch.equal(module.weight, masked[fqn])
        assert not torch.signbit(module.weight[module.weight == 0]).any()
        compress(module.weight.detach())  # 2:4 for good: packs without complaint
    assert squash_(model) == []  # nothing left to squash

    dense = copy.deepcopy(model)
    assert sparsify_(model).swapped == report.pruned
    b = batch(3)
    del b["labels"]
    with torch.no_grad():
        want, got = dense(**b).logits, model(**b).logits
    assert float((got - want).norm() / want.norm()) < 1e-5
    assert isinstance(model.bert.pooler.dense, SparseLinear)


def test_pruned_state_dict_restores_masks(seed):
    """A checkpoint taken mid fine-tuning carries its masks (persistent buffers)."""
    src, dst = tiny_classifier().eval(), tiny_classifier().eval()
    prune_(src)
    prune_(dst)  # other random weights: other masks
    dst.load_state_dict(src.state_dict())
    for fqn, module in masked_layers(src).items():
        other = dst.get_submodule(fqn)
        assert torch.equal(other.parametrizations.weight[0].mask, module.parametrizations.weight[0].mask)
        assert torch.equal(other.weight, module.weight)


def test_pruned_model_casts_keep_bool_masks(seed):
    model = tiny_classifier()
    prune_(model, filter_fn=lambda module, fqn: fqn == "bert.pooler.dense")
    model.to(torch.bfloat16)
    pooler = model.bert.pooler.dense
    assert pooler.parametrizations.weight[0].mask.dtype == torch.bool
    assert pooler.weight.dtype == torch.bfloat16
