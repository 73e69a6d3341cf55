"""SQuAD v1.1 Exact Match and F1, following the definitions of the official evaluation script.

An answer string is normalized by: lowercasing, removing every ASCII punctuation character, removing
the articles "a", "an", "the" as whole words, and collapsing runs of whitespace to single spaces.
Exact match is 1 when the normalized prediction equals a normalized gold answer. F1 is the harmonic
mean of token precision and recall, where tokens are the whitespace-split normalized strings and the
overlap counts each shared token as many times as it appears in both (a multiset intersection).
A question's score is the maximum over its gold answers; the dataset score is the mean, in percent.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping

_PUNCTUATION = frozenset(string.punctuation)
# Articles are removed as whole words only: "theory" keeps its "the".
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    text = text.lower()
    # Punctuation is removed before the articles so that "the," and "(a" are still found as words.
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the two strings are equal after normalization, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    """Token-level F1 in [0, 1] between the normalized prediction and one gold answer."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    overlap = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if overlap == 0:
        # Also covers an empty prediction or an answer made only of articles/punctuation: no
        # shared token, no credit (the official script does the same).
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def best_over_golds(score_fn, prediction: str, golds: Iterable[str]) -> float:
    """The best score of ``prediction`` against any of its gold answers (up to ~6 in SQuAD)."""
    golds = list(golds)
    if not golds:
        raise ValueError("a question needs at least one gold answer to be scored")
    return max(score_fn(prediction, gold) for gold in golds)


def squad_v1_scores(
    predictions: Mapping[str, str], gold_answers: Mapping[str, Iterable[str]]
) -> dict[str, float]:
    """Mean Exact Match and F1 in percent over every question of ``gold_answers``.

    ``predictions`` maps question id to answer text; ``gold_answers`` maps question id to its gold
    answer texts. A question with no prediction scores 0 (as in the official script); predictions
    for ids that are not in ``gold_answers`` are ignored. Returns ``exact_match``, ``f1``, and
    ``n_questions`` and ``n_missing`` so a partial prediction file is visible in the results.
    """
    if not gold_answers:
        raise ValueError("no questions to score: gold_answers is empty")
    em_total = f1_total = 0.0
    missing = 0
    for qid, golds in gold_answers.items():
        if qid not in predictions:
            missing += 1
            continue
        em_total += best_over_golds(exact_match, predictions[qid], golds)
        f1_total += best_over_golds(f1, predictions[qid], golds)
    n = len(gold_answers)
    return {
        "exact_match": 100.0 * em_total / n,
        "f1": 100.0 * f1_total / n,
        "n_questions": n,
        "n_missing": missing,
    }
