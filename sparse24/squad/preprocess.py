"""SQuAD examples to model features, the way the Hugging Face question-answering tutorial does it.

A (question, context) pair is tokenized with the question first (unless the tokenizer pads on the
left, e.g. XLNet, then the context comes first), truncating only the context. A context longer than
``max_length`` is cut into several overlapping windows ("features") that share ``stride`` tokens, so
an answer near a cut is whole in at least one window. Training labels are the token positions of the
answer's first and last tokens; a window that does not contain the whole answer points both labels
at the CLS token, which the model learns to mean "not in this window".

Evaluation features keep, per token, its character span in the context (``None`` for question,
special and padding tokens) so that post-processing can map a predicted token span back to text.

The datasets are plain ``torch.utils.data.Dataset``s of stacked tensors (no ``datasets`` package).
Only the inputs the tokenizer declares in ``model_input_names`` are kept, so models without
``token_type_ids`` (RoBERTa, MPNet, ...) get none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sparse24.squad._progress import tqdm
from sparse24.squad.data import SquadExample

MAX_LENGTH = 384
STRIDE = 128
# Examples tokenized per call: large enough for the Rust tokenizer's batching to pay off, small
# enough that the progress bar moves.
_CHUNK = 512

Offsets = list[tuple[int, int] | None]


class FeatureDataset(torch.utils.data.Dataset):
    """Equal-length tensors, one row per feature; an item is a dict of the row's tensors."""

    def __init__(self, columns: dict[str, torch.Tensor]):
        lengths = {name: len(t) for name, t in columns.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"columns have different numbers of rows: {lengths}")
        self.columns = columns

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {name: t[i] for name, t in self.columns.items()}


@dataclass
class EvalFeatureMap:
    """For each evaluation feature: which example it came from and its tokens' context offsets."""

    example_index: list[int]
    offsets: list[Offsets]


def _check_inputs(
    examples: Sequence[SquadExample], tokenizer, max_length: int, stride: int
) -> None:
    if not examples:
        raise ValueError("no examples to tokenize")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            "a fast (Rust) tokenizer is needed: offset mappings and overflowing windows "
            "come from it"
        )
    if not 0 <= stride < max_length:
        raise ValueError(
            f"stride must be in [0, max_length): stride={stride}, max_length={max_length}"
        )


def _question_first(tokenizer) -> bool:
    """Question before context, except for tokenizers that pad on the left (XLNet-style)."""
    return tokenizer.padding_side == "right"


def _check_question_lengths(
    tokenizer, examples: Sequence[SquadExample], questions: list[str], max_length: int, stride: int
) -> None:
    """Each window must leave more than ``stride`` tokens for the context.

    Otherwise the Rust tokenizer panics (an exception that is not even an ``Exception``) with a
    message that does not say which question was too long.
    """
    lengths = tokenizer(questions, add_special_tokens=False)["input_ids"]
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    for example, ids in zip(examples, lengths, strict=True):
        if budget - len(ids) <= stride:
            raise ValueError(
                f"question {example.id} takes {len(ids)} tokens, leaving {budget - len(ids)} of "
                f"max_length={max_length} for the context, which must exceed stride={stride}; "
                "raise --max-length or lower --stride"
            )


def _check_windows_cover_contexts(tokenizer, enc, examples: Sequence[SquadExample]) -> None:
    """The last window of each example must reach the end of its context.

    tokenizers 0.23.2 (seen on the GPU machines, 2026-11-21) silently stops after the second
    overflowing window: 2 windows where 0.23.3 gives 5, so the rest of every long context, and any
    answer in it, vanished from training and evaluation.
    """
    context_index = 1 if _question_first(tokenizer) else 0
    reach: dict[int, int] = {}
    for f, example_i in enumerate(enc["overflow_to_sample_mapping"]):
        ends = [end for (_, end), s in zip(enc["offset_mapping"][f], enc.sequence_ids(f))
                if s == context_index]
        reach[example_i] = max(reach.get(example_i, 0), max(ends, default=0))
    for i, example in enumerate(examples):
        if reach.get(i, 0) < len(example.context.rstrip()):
            import tokenizers  # noqa: PLC0415

            raise RuntimeError(
                f"the tokenizer's overflowing windows stop at character {reach.get(i, 0)} of the "
                f"{len(example.context)}-character context of {example.id}: the rest would be lost. "
                f"tokenizers {tokenizers.__version__} drops windows (0.23.2 is known to); use "
                "another version (0.23.3 works)"
            )


def _tokenize(tokenizer, examples: Sequence[SquadExample], max_length: int, stride: int):
    # Some SQuAD questions start with runs of spaces, which would only eat the window budget.
    questions = [ex.question.lstrip() for ex in examples]
    contexts = [ex.context for ex in examples]
    _check_question_lengths(tokenizer, examples, questions, max_length, stride)
    first, second = (questions, contexts) if _question_first(tokenizer) else (contexts, questions)
    enc = tokenizer(
        first,
        second,
        truncation="only_second" if _question_first(tokenizer) else "only_first",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    )
    _check_windows_cover_contexts(tokenizer, enc, examples)
    return enc


def answer_token_span(
    offsets: Sequence[tuple[int, int]],
    sequence_ids: Sequence[int | None],
    context_index: int,
    cls_index: int,
    start_char: int,
    end_char: int,
) -> tuple[int, int]:
    """Token positions (start, end) of the answer [start_char, end_char) in one window.

    Both are ``cls_index`` when the window's context tokens do not cover the whole answer. Otherwise
    start is the last context token beginning at or before ``start_char`` and end the first one
    ending at or after ``end_char``, so a token that straddles an answer edge is included.
    """
    context_tokens = [i for i, s in enumerate(sequence_ids) if s == context_index]
    first, last = context_tokens[0], context_tokens[-1]
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return cls_index, cls_index
    start = max(i for i in context_tokens if offsets[i][0] <= start_char)
    end = min(i for i in context_tokens if offsets[i][1] >= end_char)
    return start, end


def _cls_index(tokenizer, input_ids: Sequence[int]) -> int:
    cls_id = tokenizer.cls_token_id
    return input_ids.index(cls_id) if cls_id is not None and cls_id in input_ids else 0


def _chunks(examples: Sequence[SquadExample], desc: str, progress: bool):
    starts = range(0, len(examples), _CHUNK)
    for start in tqdm(starts, desc=desc, unit="chunk", disable=not progress):
        yield start, examples[start : start + _CHUNK]


def _input_columns(tokenizer, rows: dict[str, list]) -> dict[str, torch.Tensor]:
    names = [n for n in tokenizer.model_input_names if n in rows]
    return {n: torch.tensor(rows[n], dtype=torch.long) for n in names}


def build_train_dataset(
    examples: Sequence[SquadExample],
    tokenizer,
    max_length: int = MAX_LENGTH,
    stride: int = STRIDE,
    progress: bool = True,
) -> FeatureDataset:
    """Training features with ``start_positions``/``end_positions`` labels (first gold answer)."""
    _check_inputs(examples, tokenizer, max_length, stride)
    context_index = 1 if _question_first(tokenizer) else 0
    rows: dict[str, list] = {"start_positions": [], "end_positions": []}
    for _, chunk in _chunks(examples, "tokenize train", progress):
        enc = _tokenize(tokenizer, chunk, max_length, stride)
        for f, example_i in enumerate(enc["overflow_to_sample_mapping"]):
            example = chunk[example_i]
            # Training uses the first answer, as SQuAD's train split has exactly one.
            start_char = example.answer_starts[0]
            end_char = start_char + len(example.answer_texts[0])
            start, end = answer_token_span(
                enc["offset_mapping"][f],
                enc.sequence_ids(f),
                context_index,
                _cls_index(tokenizer, enc["input_ids"][f]),
                start_char,
                end_char,
            )
            rows["start_positions"].append(start)
            rows["end_positions"].append(end)
        for name in tokenizer.model_input_names:
            if name in enc:
                rows.setdefault(name, []).extend(enc[name])
    columns = _input_columns(tokenizer, rows)
    columns["start_positions"] = torch.tensor(rows["start_positions"], dtype=torch.long)
    columns["end_positions"] = torch.tensor(rows["end_positions"], dtype=torch.long)
    return FeatureDataset(columns)


def build_eval_features(
    examples: Sequence[SquadExample],
    tokenizer,
    max_length: int = MAX_LENGTH,
    stride: int = STRIDE,
    progress: bool = True,
) -> tuple[FeatureDataset, EvalFeatureMap]:
    """Evaluation features (model inputs only) and the map back to examples and context text."""
    _check_inputs(examples, tokenizer, max_length, stride)
    context_index = 1 if _question_first(tokenizer) else 0
    rows: dict[str, list] = {}
    example_index: list[int] = []
    all_offsets: list[Offsets] = []
    for base, chunk in _chunks(examples, "tokenize eval", progress):
        enc = _tokenize(tokenizer, chunk, max_length, stride)
        for f, example_i in enumerate(enc["overflow_to_sample_mapping"]):
            example_index.append(base + example_i)
            seq = enc.sequence_ids(f)
            all_offsets.append(
                [
                    tuple(o) if s == context_index else None
                    for o, s in zip(enc["offset_mapping"][f], seq, strict=True)
                ]
            )
        for name in tokenizer.model_input_names:
            if name in enc:
                rows.setdefault(name, []).extend(enc[name])
    dataset = FeatureDataset(_input_columns(tokenizer, rows))
    return dataset, EvalFeatureMap(example_index, all_offsets)
