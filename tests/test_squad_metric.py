"""SQuAD v1.1 Exact Match and F1: hand-worked cases (arithmetic in the comments) and properties on
fresh random strings checked against an independent formula."""

import random
import string
from collections import Counter

import pytest

from sparse24.squad.metric import (
    best_over_golds,
    exact_match,
    f1,
    normalize_answer,
    squad_v1_scores,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        # lower "the  cat, sat!"; punctuation "the  cat sat"; articles "   cat sat"; spaces.
        ("The  Cat, sat!", "cat sat"),
        # "an" and "a" are articles, "day" is not.
        ("an apple a day", "apple day"),
        # Whole words only: "theory" and "another" keep their letters; "the" goes.
        ("Theory of the Atom, another", "theory of atom another"),
        # "A." -> "a." -> "a" -> "" : an answer can normalize to nothing.
        ("A.", ""),
        # Punctuation inside a word is deleted, not turned into a space (as the official script).
        ("Saint-Denis, 1,000", "saintdenis 1000"),
        # Punctuation is removed before articles: "(the" becomes the word "the" and is dropped.
        ("(the) Beatles", "beatles"),
        ("\tNew\n York ", "new york"),
        # Articles only as whole words, neither at the end of a word ("Santa" is not "Sant")...
        ("Santa, Cuban, bathe", "santa cuban bathe"),
        # ... nor at its start.
        ("Then another atlas", "then another atlas"),
        # Punctuation goes before the articles: "a-ha" -> "aha", not "-ha" -> "ha".
        ("A-ha", "aha"),
        # Exactly ASCII punctuation (string.punctuation, "_" included) goes; other characters,
        # punctuation or not, stay. An article between them becomes a space (two tokens).
        (string.punctuation + "x", "x"),
        ("«Café»—the—end", "«café»— —end"),
        # Lowercase is str.lower, not casefold ("ß" stays); whitespace is any Unicode whitespace,
        # runs of it become one space.
        ("Straße  ÉCOLE", "straße école"),
        ("New\u00a0York \u2009 City", "new york city"),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_after_normalization():
    assert exact_match("The Eiffel Tower.", "eiffel tower") == 1.0
    assert exact_match("Eiffel Towers", "eiffel tower") == 0.0
    # "a" inside or at the end of a word is no article: these differ (issue 21 mutation).
    assert exact_match("Santa", "Sant") == 0.0
    assert f1("Santa Clara", "Sant Clar") == 0.0
    assert exact_match("another", "other") == 0.0


def test_f1_hand_worked():
    # pred "the cat sat on the mat" -> [cat, sat, on, mat] (4 tokens)
    # gold "a cat on a mat"         -> [cat, on, mat]      (3 tokens)
    # overlap 3; precision 3/4, recall 3/3; F1 = 2 * 0.75 * 1 / 1.75 = 6/7.
    assert f1("the cat sat on the mat", "a cat on a mat") == pytest.approx(6 / 7)
    # Repeated tokens count as a multiset: pred [new, york, new, york] vs gold [new, york]:
    # overlap min(2,1) + min(2,1) = 2; precision 2/4, recall 2/2; F1 = 2 * 0.5 * 1 / 1.5 = 2/3.
    assert f1("New York New York", "New York") == pytest.approx(2 / 3)
    # No shared token, an empty prediction, and an answer that normalizes to nothing: all 0.
    assert f1("Paris", "London") == 0.0
    assert f1("", "London") == 0.0
    assert f1("the", "a") == 0.0


def test_max_over_gold_answers():
    # pred "in the year 1990" -> [in, year, 1990] (3 tokens)
    # gold "1990":      overlap 1, P 1/3, R 1/1, F1 = 2 * (1/3) / (4/3) = 0.5
    # gold "year 1990": overlap 2, P 2/3, R 2/2, F1 = 2 * (2/3) / (5/3) = 0.8  <- the max
    golds = ["1990", "year 1990"]
    assert best_over_golds(f1, "in the year 1990", golds) == pytest.approx(0.8)
    assert best_over_golds(exact_match, "in the year 1990", golds) == 0.0
    assert best_over_golds(exact_match, "the Denver Broncos", ["Broncos", "Denver Broncos"]) == 1.0
    with pytest.raises(ValueError, match="at least one gold answer"):
        best_over_golds(f1, "x", [])


def test_dataset_scores_in_percent():
    gold = {
        "q1": ["Denver Broncos", "The Denver Broncos"],
        "q2": ["1990", "year 1990"],
        "q3": ["Santa Clara"],
    }
    predictions = {"q1": "Denver Broncos", "q2": "in the year 1990", "extra": "ignored"}
    scores = squad_v1_scores(predictions, gold)
    # q1: EM 1, F1 1.  q2: EM 0, F1 0.8 (above).  q3: no prediction -> 0, 0.
    # EM = 100 * (1 + 0 + 0) / 3 = 33.33...;  F1 = 100 * (1 + 0.8 + 0) / 3 = 60.0
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(60.0)
    assert (scores["n_questions"], scores["n_missing"]) == (3, 1)
    with pytest.raises(ValueError, match="no questions to score"):
        squad_v1_scores(predictions, {})


def _random_answer(rng: random.Random) -> str:
    # Words from a tiny alphabet so random strings share tokens; articles and punctuation mixed in.
    words = ["a", "an", "the", "x", "y", "xy", "yx", "z"]
    parts = [rng.choice(words) + rng.choice(["", "", ",", "."]) for _ in range(rng.randint(0, 6))]
    return " ".join(w.upper() if rng.random() < 0.2 else w for w in parts)


def test_f1_properties_on_random_strings(seed):
    rng = random.Random(seed)
    for _ in range(300):
        a, b = _random_answer(rng), _random_answer(rng)
        ta, tb = normalize_answer(a).split(), normalize_answer(b).split()
        # Independent formula: F1 = 2 * overlap / (|pred| + |gold|) (same value, other algebra).
        overlap = sum((Counter(ta) & Counter(tb)).values())
        expected = 2 * overlap / (len(ta) + len(tb)) if overlap else 0.0
        assert f1(a, b) == pytest.approx(expected), (seed, a, b)
        assert f1(a, b) == pytest.approx(f1(b, a)), (seed, a, b)
        assert 0.0 <= f1(a, b) <= 1.0
        if exact_match(a, b) and ta:
            assert f1(a, b) == pytest.approx(1.0), (seed, a, b)
        # Case and punctuation never change a score.
        noisy = a.upper() + rng.choice(string.punctuation)
        assert exact_match(noisy, a) == 1.0, (seed, a)


def _official_normalization(text: str) -> str:
    """The SQuAD v1.1 normalization restated for ASCII text, by tokens instead of regular
    expressions: once lowercased and stripped of punctuation, ASCII text is letters, digits and
    whitespace, so the articles "as whole words" are exactly the tokens a, an and the."""
    kept = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(token for token in kept.split() if token not in ("a", "an", "the"))


def test_normalize_answer_matches_the_official_rules_on_random_text(seed):
    """Words that start or end with an article's letters, joined by punctuation and whitespace of
    every kind, in random case."""
    rng = random.Random(seed)
    words = ["a", "an", "the", "A", "The", "santa", "cuban", "bathe", "another", "theory", "atlas",
             "anthem", "thea", "ana", "x1"]
    joins = [" ", "  ", "\t", "\n", "-", ",", ".", "'", "(", ") ", "_", ", the ", " a-"]
    for _ in range(500):
        text = "".join(rng.choice(words) + rng.choice(joins) for _ in range(rng.randint(1, 6)))
        text = text.upper() if rng.random() < 0.1 else text
        assert normalize_answer(text) == _official_normalization(text), (seed, text)
