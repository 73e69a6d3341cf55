"""Evaluation: logits for every feature, best spans, then Exact Match and F1.

A plain inference loop rather than ``Trainer.predict``: the last evaluation runs a model whose
linear layers were swapped for sparse24 kernels and cast to fp16, and the loop must not re-wrap,
move or autocast that model behind our back.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from sparse24.squad._progress import tqdm
from sparse24.squad.data import SquadExample
from sparse24.squad.metric import squad_v1_scores
from sparse24.squad.postprocess import predict_answers
from sparse24.squad.preprocess import EvalFeatureMap, FeatureDataset


@torch.inference_mode()
def compute_logits(
    model: torch.nn.Module,
    dataset: FeatureDataset,
    batch_size: int,
    device: torch.device | str,
    autocast_dtype: torch.dtype | None = None,
    desc: str = "eval",
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """float32 [n_features, seq_len] start and end logits of ``model`` on every feature."""
    device = torch.device(device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    was_training = model.training
    model.eval()
    starts, ends = [], []
    try:
        for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(
                device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None
            ):
                out = model(**batch)
            starts.append(out.start_logits.float().cpu())
            ends.append(out.end_logits.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(starts).numpy(), torch.cat(ends).numpy()


def evaluate(
    model: torch.nn.Module,
    examples: Sequence[SquadExample],
    dataset: FeatureDataset,
    feature_map: EvalFeatureMap,
    batch_size: int,
    device: torch.device | str,
    autocast_dtype: torch.dtype | None = None,
    n_best: int = 20,
    max_answer_length: int = 30,
    desc: str = "eval",
    progress: bool = True,
) -> dict:
    """SQuAD v1.1 scores of ``model`` on ``examples`` (``exact_match`` and ``f1`` in percent),
    with the evaluation time and the predicted answers."""
    t0 = time.perf_counter()
    start_logits, end_logits = compute_logits(
        model, dataset, batch_size, device, autocast_dtype, desc, progress
    )
    predictions = predict_answers(
        examples, feature_map, start_logits, end_logits, n_best, max_answer_length
    )
    scores = squad_v1_scores(predictions, {ex.id: ex.answer_texts for ex in examples})
    scores["eval_time_s"] = time.perf_counter() - t0
    scores["predictions"] = predictions
    return scores
