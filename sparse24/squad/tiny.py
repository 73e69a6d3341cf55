"""Offline stand-ins for tests and smoke runs: a tiny WordPiece tokenizer, a tiny random BERT QA
model, and random SQuAD-format data. Nothing here touches the network.

The vocabulary holds every word of the given texts (as BERT's pre-tokenizer splits them) plus every
character alone and as a "##" continuation, so any text over the same characters tokenizes without
[UNK] and offsets stay exact.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# The tiny model of the tests: small enough to train a step on CPU in well under a second, and with
# dimensions that are multiples of 64 so 2:4 packing (K % 64 == 0, N % 16 == 0) applies.
TINY_CONFIG = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
)


def write_wordpiece_vocab(texts: Iterable[str], path: str | Path) -> Path:
    """Write a cased WordPiece vocab (one token a line) covering ``texts``; returns the path."""
    from tokenizers.pre_tokenizers import BertPreTokenizer  # noqa: PLC0415  (ships with transformers)

    pre = BertPreTokenizer()
    words: set[str] = set()
    chars: set[str] = set()
    for text in texts:
        for word, _ in pre.pre_tokenize_str(text):
            words.add(word)
            chars.update(word)
    tokens = list(SPECIAL_TOKENS)
    tokens += sorted(chars) + sorted(f"##{c}" for c in chars)
    tokens += sorted(words - chars)
    path = Path(path)
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def tiny_tokenizer(texts: Iterable[str], directory: str | Path):
    """A cased ``BertTokenizerFast`` whose vocab covers ``texts`` (vocab.txt goes to directory)."""
    from transformers import BertTokenizerFast  # noqa: PLC0415

    vocab = write_wordpiece_vocab(texts, Path(directory) / "vocab.txt")
    # Positional: the argument is `vocab_file` in transformers 4 and `vocab` in 5.
    return BertTokenizerFast(str(vocab), do_lower_case=False)


def tiny_qa_model(vocab_size: int, seed: int = 0, max_position_embeddings: int = 512):
    """A randomly initialized 2-layer BertForQuestionAnswering (hidden 64, intermediate 128)."""
    import torch  # noqa: PLC0415
    from transformers import BertConfig, BertForQuestionAnswering  # noqa: PLC0415

    config = BertConfig(
        vocab_size=vocab_size, max_position_embeddings=max_position_embeddings, **TINY_CONFIG
    )
    torch.manual_seed(seed)
    return BertForQuestionAnswering(config)


def save_tiny_checkpoint(texts: Iterable[str], directory: str | Path, seed: int = 0) -> Path:
    """Save a tiny tokenizer and model into ``directory``, loadable with ``from_pretrained``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer(texts, directory)
    tiny_qa_model(len(tokenizer), seed).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _random_word(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 8)))


def synthetic_squad(
    rng: random.Random,
    n_articles: int = 3,
    paragraphs_per_article: int = 2,
    questions_per_paragraph: int = 3,
    context_words: tuple[int, int] = (20, 60),
    answers_per_question: int = 1,
) -> dict:
    """Random SQuAD v1.1-format data: word-salad contexts with commas and full stops, answers that
    are runs of 1-4 whole words, ids unique. Returns the JSON object ({"version", "data"})."""
    vocabulary = [_random_word(rng) for _ in range(200)]
    data = []
    qid = 0
    for a in range(n_articles):
        paragraphs = []
        for _ in range(paragraphs_per_article):
            spans = []  # (start, end) character span of each word
            context = ""
            for i in range(rng.randint(*context_words)):
                if context:
                    context += ", " if rng.random() < 0.1 else " "
                word = rng.choice(vocabulary).capitalize() if i == 0 else rng.choice(vocabulary)
                spans.append((len(context), len(context) + len(word)))
                context += word
            context += "."
            qas = []
            for _ in range(questions_per_paragraph):
                answers = []
                for _ in range(answers_per_question):
                    first = rng.randrange(len(spans))
                    last = min(len(spans) - 1, first + rng.randint(0, 3))
                    start, end = spans[first][0], spans[last][1]
                    answers.append({"answer_start": start, "text": context[start:end]})
                question = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(3, 8))) + "?"
                qas.append(
                    {"id": f"q{qid:06d}", "question": question.capitalize(), "answers": answers}
                )
                qid += 1
            paragraphs.append({"context": context, "qas": qas})
        data.append({"title": f"Article_{a}", "paragraphs": paragraphs})
    return {"version": "1.1", "data": data}


def squad_texts(squad_json: dict) -> list[str]:
    """Every context and question of a SQuAD JSON object (to build a vocabulary from)."""
    texts = []
    for article in squad_json["data"]:
        for paragraph in article["paragraphs"]:
            texts.append(paragraph["context"])
            texts.extend(qa["question"] for qa in paragraph["qas"])
    return texts
