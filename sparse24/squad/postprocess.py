"""Model logits to answer text: the best valid span over all windows of an example.

For each window ("feature") of an example, the ``n_best`` highest start logits and the ``n_best``
highest end logits give up to n_best**2 candidate spans. A span is valid when both ends are context
tokens, the end is not before the start, and it is at most ``max_answer_length`` tokens long. The
candidate with the largest start + end logit over all of the example's windows wins, and its text is
cut from the context with the tokens' character offsets, so the answer is an exact substring of the
context (never a detokenized string). An example with no valid span gets the empty answer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from sparse24.squad.data import SquadExample
from sparse24.squad.preprocess import EvalFeatureMap, Offsets

N_BEST = 20
MAX_ANSWER_LENGTH = 30


def best_span(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    offsets: Offsets,
    n_best: int = N_BEST,
    max_answer_length: int = MAX_ANSWER_LENGTH,
) -> tuple[float, int, int] | None:
    """(score, start token, end token) of one window's best valid span, or None if it has none."""
    # Only the top n_best of each end are searched: the best sum nearly always pairs two top
    # logits, and this keeps the search at n_best**2 pairs instead of length**2.
    starts = np.argsort(-start_logits, kind="stable")[:n_best]
    ends = np.argsort(-end_logits, kind="stable")[:n_best]
    best = None
    for s in starts:
        if offsets[s] is None:
            continue
        for e in ends:
            if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                continue
            score = float(start_logits[s] + end_logits[e])
            if best is None or score > best[0]:
                best = (score, int(s), int(e))
    return best


def predict_answers(
    examples: Sequence[SquadExample],
    feature_map: EvalFeatureMap,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best: int = N_BEST,
    max_answer_length: int = MAX_ANSWER_LENGTH,
) -> dict[str, str]:
    """Question id -> answer text, from [n_features, seq_len] start and end logits."""
    n_features = len(feature_map.example_index)
    if start_logits.shape != end_logits.shape or start_logits.shape[0] != n_features:
        raise ValueError(
            f"logits of shape {start_logits.shape} / {end_logits.shape} do not match "
            f"{n_features} features"
        )
    features_of = defaultdict(list)
    for f, example_i in enumerate(feature_map.example_index):
        features_of[example_i].append(f)

    answers = {}
    for example_i, example in enumerate(examples):
        best = None  # (score, feature, start token, end token)
        for f in features_of.get(example_i, ()):
            span = best_span(
                start_logits[f], end_logits[f], feature_map.offsets[f], n_best, max_answer_length
            )
            if span is not None and (best is None or span[0] > best[0]):
                best = (span[0], f, span[1], span[2])
        if best is None:
            answers[example.id] = ""
            continue
        _, f, s, e = best
        offsets = feature_map.offsets[f]
        answers[example.id] = example.context[offsets[s][0] : offsets[e][1]]
    return answers
