"""Pre-processing (windows, labels, offsets) with tiny offline tokenizers, and post-processing
(logits to answer text) on hand-built logits and against a brute-force search."""

import random
import types

import numpy as np
import pytest

from sparse24.squad import data, preprocess
from sparse24.squad.postprocess import best_span, predict_answers
from sparse24.squad.preprocess import EvalFeatureMap
from sparse24.squad.tiny import squad_texts, synthetic_squad, tiny_tokenizer

MAX_LENGTH, STRIDE = 48, 16  # small windows so that most contexts overflow into several


@pytest.fixture
def squad(seed):
    """Random SQuAD data (contexts of 20-80 words, whole-word answers) as JSON and examples."""
    doc = synthetic_squad(random.Random(seed), n_articles=3, context_words=(20, 80))
    return doc, data.flatten_articles(doc["data"])


@pytest.fixture
def bert_tokenizer(squad, tmp_path):
    return tiny_tokenizer(squad_texts(squad[0]), tmp_path)


@pytest.fixture
def roberta_tokenizer(squad, tmp_path):
    """A byte-level BPE tokenizer trained on the data: RoBERTa-style, no token_type_ids."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        squad_texts(squad[0]),
        vocab_size=1000,
        min_frequency=1,
        show_progress=False,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    vocab, merges = bpe.save_model(str(tmp_path))
    return RobertaTokenizerFast(vocab, merges)  # positional: the names differ across versions


def _window_chars(tokenizer, example, max_length, stride):
    """Per window: (offsets, sequence ids) straight from the tokenizer, for checking labels."""
    enc = preprocess._tokenize(tokenizer, [example], max_length, stride)
    return [(enc["offset_mapping"][f], enc.sequence_ids(f)) for f in range(len(enc["input_ids"]))]


@pytest.mark.parametrize("tokenizer_name", ["bert_tokenizer", "roberta_tokenizer"])
def test_labels_map_back_to_the_answer(squad, tokenizer_name, request, seed):
    tokenizer = request.getfixturevalue(tokenizer_name)
    _, examples = squad
    max_length = MAX_LENGTH if tokenizer_name == "bert_tokenizer" else 96  # BPE: more tokens/word
    ds = preprocess.build_train_dataset(examples, tokenizer, max_length, STRIDE, progress=False)
    expected_inputs = set(tokenizer.model_input_names)
    assert set(ds.columns) == expected_inputs | {"start_positions", "end_positions"}
    assert ("token_type_ids" in ds.columns) == (tokenizer_name == "bert_tokenizer")

    f = 0
    for example in examples:
        answer = example.answer_texts[0]
        a_start, a_end = example.answer_starts[0], example.answer_starts[0] + len(answer)
        found = False
        for offsets, seq in _window_chars(tokenizer, example, max_length, STRIDE):
            start, end = int(ds.columns["start_positions"][f]), int(ds.columns["end_positions"][f])
            context_offsets = [o for o, s in zip(offsets, seq, strict=True) if s == 1]
            window = (context_offsets[0][0], context_offsets[-1][1])
            inside = window[0] <= a_start and a_end <= window[1]
            if inside:
                # Synthetic answers are whole words, so the token span is exactly the answer.
                assert example.context[offsets[start][0] : offsets[end][1]] == answer, (
                    seed,
                    example.id,
                )
                assert seq[start] == seq[end] == 1
                found = True
            else:
                # The answer is not whole in this window: both labels point at CLS (position 0).
                assert (start, end) == (0, 0), (seed, example.id, f)
            f += 1
        # Overlapping windows (stride) keep every short answer whole in at least one window.
        assert found, (seed, example.id)
    assert f == len(ds)


def test_cls_label_when_the_answer_is_outside_the_window(tmp_path, seed):
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    context = " ".join(rng.choice(words) for _ in range(60)) + " omega."
    question = "Where is omega?"
    tokenizer = tiny_tokenizer([context, question], tmp_path)
    example = data.SquadExample("e1", "T", context, question, ("omega",), (context.index("omega"),))
    ds = preprocess.build_train_dataset([example], tokenizer, 32, 8, progress=False)
    starts, ends = ds.columns["start_positions"].tolist(), ds.columns["end_positions"].tolist()
    # 60 one-token words + "omega" + "." in windows of 32 - 4 (question) - 3 (specials) = 25
    # context tokens advancing by 25 - 8 = 17: windows start at 0, 17, 34, 51 -> 4 features.
    assert len(ds) == 4
    # The answer ends the context, so only the last window holds it; all others label CLS (0).
    assert starts[:-1] == ends[:-1] == [0, 0, 0]
    ids = ds.columns["input_ids"][-1].tolist()
    assert tokenizer.convert_ids_to_tokens(ids[starts[-1] : ends[-1] + 1]) == ["omega"]


def test_eval_features_map_back_to_context(squad, bert_tokenizer):
    _, examples = squad
    ds, fmap = preprocess.build_eval_features(
        examples, bert_tokenizer, MAX_LENGTH, STRIDE, progress=False
    )
    assert "start_positions" not in ds.columns and "offset_mapping" not in ds.columns
    assert len(ds) == len(fmap.example_index) == len(fmap.offsets)
    # Every example has at least one feature, in order; long ones several.
    assert sorted(set(fmap.example_index)) == list(range(len(examples)))
    assert fmap.example_index == sorted(fmap.example_index)
    assert len(ds) > len(examples)
    for f, (i, offsets) in enumerate(zip(fmap.example_index, fmap.offsets, strict=True)):
        ids = ds.columns["input_ids"][f].tolist()
        assert offsets[0] is None  # CLS
        for token_id, off in zip(ids, offsets, strict=True):
            if off is None:
                continue
            piece = bert_tokenizer.convert_ids_to_tokens(token_id).removeprefix("##")
            assert examples[i].context[off[0] : off[1]] == piece


def test_preprocess_errors(squad, bert_tokenizer):
    _, examples = squad
    with pytest.raises(ValueError, match="fast .*tokenizer is needed"):
        preprocess.build_train_dataset(
            examples, types.SimpleNamespace(is_fast=False), progress=False
        )
    with pytest.raises(ValueError, match=r"stride must be in \[0, max_length\)"):
        preprocess.build_eval_features(examples, bert_tokenizer, 32, 32, progress=False)
    with pytest.raises(ValueError, match="no examples"):
        preprocess.build_train_dataset([], bert_tokenizer, progress=False)
    with pytest.raises(ValueError, match=f"question {examples[0].id} takes .* tokens"):
        preprocess.build_train_dataset(examples, bert_tokenizer, 20, 16, progress=False)
    with pytest.raises(ValueError, match="different numbers of rows"):
        preprocess.FeatureDataset({"a": np.zeros(2), "b": np.zeros(3)})


# ------------------------------------------------------------------------------ post-processing
CONTEXT = "Alpha beta gamma delta epsilon."
#          0     6    11    17    23     30


def _hand_built():
    """Two overlapping windows over CONTEXT; None marks question, special and padding tokens."""
    q = [None, None, None, None]  # [CLS] q q [SEP]
    offsets = [
        q + [(0, 5), (6, 10), (11, 16), None],  # alpha beta gamma [SEP]
        q + [(11, 16), (17, 22), (23, 30), (30, 31), None],  # gamma delta epsilon . [SEP]
    ]
    width = 9
    start = np.full((2, width), -5.0)
    end = np.full((2, width), -5.0)
    # Window 0: the CLS logits (10 + 10) are the highest but CLS is no answer. Best valid span:
    # start "beta" (2.0) + end "gamma" (1.0) = 3.0.
    start[0, 0] = end[0, 0] = 10.0
    start[0, 5], end[0, 6] = 2.0, 1.0
    # Window 1: end "gamma" (4.0) comes before start "delta" (3.0): invalid. Valid candidates:
    # "delta".."epsilon" = 3.0 + 2.5 = 5.5 (the best of all), "gamma".."gamma" = 0.5 + 4.0 = 4.5.
    start[1, 5], end[1, 4] = 3.0, 4.0
    end[1, 6] = 2.5
    start[1, 4] = 0.5
    example = data.SquadExample("h", "T", CONTEXT, "?", ("delta epsilon",), (17,))
    return (
        example,
        EvalFeatureMap([0, 0], [o + [None] * (width - len(o)) for o in offsets]),
        start,
        end,
    )


def test_postprocess_hand_built_logits():
    example, fmap, start, end = _hand_built()
    assert best_span(start[0], end[0], fmap.offsets[0]) == (3.0, 5, 6)
    assert best_span(start[1], end[1], fmap.offsets[1]) == (5.5, 5, 6)
    assert predict_answers([example], fmap, start, end) == {"h": "delta epsilon"}
    # Without delta's start logit, window 1's best is "gamma".."gamma" = 0.5 + 4.0 = 4.5
    # ("gamma".."epsilon" is 0.5 + 2.5 = 3.0), still above window 0's 3.0.
    start[1, 5] = -5.0
    assert predict_answers([example], fmap, start, end) == {"h": "gamma"}


def test_postprocess_max_answer_length():
    offsets = [None] + [(2 * i, 2 * i + 1) for i in range(40)] + [None]
    context = "x " * 40
    start = np.full(42, -1.0)
    end = np.full(42, -1.0)
    # Candidates (token positions 1-based in the feature): start 1 (10.0), start 21 (6.0),
    # end 36 (10.0), end 11 (5.0).  Spans: 1..36 = 36 tokens, score 20; 21..36 = 16 tokens,
    # score 16; 1..11 = 11 tokens, score 15.
    start[1], start[21], end[36], end[11] = 10.0, 6.0, 10.0, 5.0
    assert best_span(start, end, offsets, max_answer_length=30)[1:] == (21, 36)
    assert best_span(start, end, offsets, max_answer_length=40)[1:] == (1, 36)
    example = data.SquadExample("m", "T", context, "?", ("x",), (0,))
    fmap = EvalFeatureMap([0], [offsets])
    answer = predict_answers([example], fmap, start[None], end[None])["m"]
    assert answer == context[40:71]  # tokens 21..36 are characters 40..70


def test_postprocess_no_valid_span_and_shape_errors():
    example = data.SquadExample("n", "T", "abc", "?", ("abc",), (0,))
    fmap = EvalFeatureMap([0], [[None, None, None]])  # no context token at all
    logits = np.zeros((1, 3))
    assert predict_answers([example], fmap, logits, logits) == {"n": ""}
    with pytest.raises(ValueError, match="do not match 1 features"):
        predict_answers([example], fmap, np.zeros((2, 3)), np.zeros((2, 3)))


def test_postprocess_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        length = int(rng.integers(8, 40))
        n_question = int(rng.integers(1, 5))
        offsets = (
            [None] * n_question + [(i, i + 1) for i in range(length - n_question - 1)] + [None]
        )
        start, end = rng.standard_normal(length), rng.standard_normal(length)
        max_len = int(rng.integers(1, 12))
        best = None
        for s in range(length):
            for e in range(s, min(length, s + max_len)):
                if offsets[s] is not None and offsets[e] is not None:
                    score = start[s] + end[e]
                    if best is None or score > best[0]:
                        best = (score, s, e)
        # With n_best = the window length, the top-k search is exhaustive.
        got = best_span(start, end, offsets, n_best=length, max_answer_length=max_len)
        assert got[1:] == best[1:], seed
        assert got[0] == pytest.approx(best[0])
        # A smaller n_best searches fewer pairs: never a better score than the exhaustive search.
        small = best_span(start, end, offsets, n_best=3, max_answer_length=max_len)
        assert small is None or small[0] <= best[0] + 1e-12
