"""Loading SQuAD v1.1: from the Hugging Face hub, from local JSON files, or the offline protocol.

The offline protocol exists because only the official dev set is available on the lab machines
(``shared/data/squad/README.txt``): its 48 articles are split by position, articles ``i % 3 == 0``
(16 articles, 4,624 questions) for evaluation and the other 32 (5,946 questions) for fine-tuning.
Splitting by article, not by question, keeps every context paragraph on one side of the split, so
the evaluation never sees a paragraph the model was fine-tuned on.

Nothing here imports ``datasets``: it is optional (not installed on the GPU machine nor in CI), so
the hub path imports it lazily and falls back to the offline protocol when it is missing.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

DEV_GZ_NAME = "dev-v1.1.json.gz"
# Where the dev set lives relative to a repository root: beside the checkout (the lab layout) or
# inside it (a copy of the working tree that carries shared/).
_DEV_GZ_RELATIVE = (Path("..") / "shared" / "data" / "squad", Path("shared") / "data" / "squad")
# sha256 of the decompressed official dev-v1.1.json (from shared/data/squad/README.txt).
DEV_V11_SHA256 = "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9"
EVAL_EVERY = 3  # articles at positions i % 3 == 0 are held out for evaluation
_T = TypeVar("_T")


@dataclass(frozen=True)
class SquadExample:
    """One question with its context paragraph and gold answers (character offsets into context)."""

    id: str
    title: str
    context: str
    question: str
    answer_texts: tuple[str, ...]
    answer_starts: tuple[int, ...]


@dataclass
class SquadData:
    """The examples a run uses, and where they came from (recorded in the results JSON)."""

    train: list[SquadExample]
    eval: list[SquadExample]
    source: str  # "hub", "files" or "offline-split"
    description: str  # human-readable: which files or hub name
    n_train_articles: int | None = None
    n_eval_articles: int | None = None
    sha256: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict:
        """Split sizes and provenance, for printing and for the results JSON."""
        return {
            "source": self.source,
            "description": self.description,
            "train_questions": len(self.train),
            "eval_questions": len(self.eval),
            "train_articles": self.n_train_articles,
            "eval_articles": self.n_eval_articles,
            "sha256": dict(self.sha256),
        }


class SquadFormatError(ValueError):
    """A SQuAD file (or hub split) that cannot be used: the message names the file and the fault."""


def read_squad_json(path: str | os.PathLike) -> tuple[list[dict], str]:
    """The ``data`` list (articles) of a SQuAD JSON file (.json or .json.gz), and its sha256.

    The hash is of the decompressed bytes, so a .json and its .json.gz hash the same.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SQuAD file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is named
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:  # corrupt or truncated
            raise SquadFormatError(f"{path} is not a readable gzip file: {err}") from None
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as err:
        raise SquadFormatError(f"{path} is not valid JSON: {err}") from None
    except UnicodeDecodeError as err:
        raise SquadFormatError(f"{path} is not UTF-8 text: {err}") from None
    except RecursionError:
        raise SquadFormatError(f"{path} nests JSON too deeply to be SQuAD") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise SquadFormatError(
            f"{path} is not in SQuAD format: expected an object with a 'data' list"
        )
    return doc["data"], hashlib.sha256(raw).hexdigest()


_JSON_TYPES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    type(None): "null",
}


def _typed(value, kind: type, where: str):
    """``value`` if it is of JSON type ``kind`` (bool is not an integer here), else an error."""
    if isinstance(value, kind) and not isinstance(value, bool):
        return value
    raise SquadFormatError(f"{where} is {_JSON_TYPES[type(value)]}, expected {_JSON_TYPES[kind]}")


def _field(obj: dict, key: str, kind: type, where: str):
    """``obj[key]``, which must be there and of JSON type ``kind``."""
    if key not in obj:
        raise SquadFormatError(f"{where} has no {key!r}")
    return _typed(obj[key], kind, f"{where}.{key}")


def _objects(obj: dict, key: str, where: str):
    """(item, where it is) for each item of the list ``obj[key]``; each must be an object."""
    for i, item in enumerate(_field(obj, key, list, where)):
        at = f"{where}.{key}[{i}]"
        yield _typed(item, dict, at), at


def _article_examples(article: dict, where: str) -> list[SquadExample]:
    title = _typed(article.get("title", ""), str, f"{where}.title")
    examples = []
    for paragraph, at_paragraph in _objects(article, "paragraphs", where):
        context = _field(paragraph, "context", str, at_paragraph)
        for qa, at in _objects(paragraph, "qas", at_paragraph):
            answers = list(_objects(qa, "answers", at))
            example = SquadExample(
                _field(qa, "id", str, at),
                title,
                context,
                _field(qa, "question", str, at),
                tuple(_field(a, "text", str, at_answer) for a, at_answer in answers),
                tuple(_field(a, "answer_start", int, at_answer) for a, at_answer in answers),
            )
            check_answers(example)
            examples.append(example)
    return examples


def examples_by_article(
    articles: Iterable[dict], source: str | os.PathLike = "SQuAD data"
) -> list[list[SquadExample]]:
    """The questions of each article, in file order, with their answers checked.

    Each answer's ``answer_start`` must point at its text in the context; a file where it does not
    is rejected here rather than silently training on wrong labels. That, a missing key or a value
    of the wrong type raises SquadFormatError naming ``source`` (the file) and the place in it,
    e.g. ``data[3].paragraphs[1].qas[0] has no 'answers'``.
    """
    try:
        return [
            _article_examples(_typed(article, dict, f"data[{i}]"), f"data[{i}]")
            for i, article in enumerate(articles)
        ]
    except SquadFormatError as err:
        raise SquadFormatError(f"{source}: {err}") from None


def flatten_articles(
    articles: Iterable[dict], source: str | os.PathLike = "SQuAD data"
) -> list[SquadExample]:
    """Every question of the given articles, in file order, checked as by examples_by_article."""
    return [ex for examples in examples_by_article(articles, source) for ex in examples]


def check_answers(example: SquadExample) -> None:
    """Raise SquadFormatError unless the example has answers and each start points at its text."""
    if not example.answer_texts:
        raise SquadFormatError(f"question {example.id} has no answer (SQuAD v1.1 always has one)")
    for text, start in zip(example.answer_texts, example.answer_starts, strict=True):
        if start < 0 or example.context[start : start + len(text)] != text:
            raise SquadFormatError(
                f"question {example.id}: answer {text!r} is not at character {start} of its context"
            )


def split_by_article(articles: Sequence[_T], every: int = EVAL_EVERY) -> tuple[list[_T], list[_T]]:
    """(train articles, eval articles): positions ``i % every == 0`` go to evaluation."""
    eval_articles = [a for i, a in enumerate(articles) if i % every == 0]
    train_articles = [a for i, a in enumerate(articles) if i % every != 0]
    return train_articles, eval_articles


def repo_root() -> Path:
    """The checkout this package is installed from (editable install): the parent of sparse24/."""
    return Path(__file__).resolve().parents[2]


def find_dev_gz(explicit: str | os.PathLike | None = None) -> Path:
    """The SQuAD v1.1 dev set for the offline protocol.

    An explicit path must exist. Otherwise look for ``dev-v1.1.json.gz`` under ``../shared/data/
    squad`` and ``shared/data/squad``, relative first to this package's repository and then to the
    current directory (so an installed copy run from the checkout still finds it).
    """
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"SQuAD dev set not found at --squad-dev-gz {path}")
        return path
    candidates = []
    for base in (repo_root(), Path.cwd()):
        for rel in _DEV_GZ_RELATIVE:
            candidates.append((base / rel / DEV_GZ_NAME).resolve())
    for path in dict.fromkeys(candidates):  # dedupe, keep order
        if path.is_file():
            return path
    searched = ", ".join(str(p) for p in dict.fromkeys(candidates))
    raise FileNotFoundError(
        f"SQuAD dev set {DEV_GZ_NAME} not found (searched {searched}); pass --squad-dev-gz PATH"
    )


def load_offline_split(dev_gz: str | os.PathLike | None = None) -> SquadData:
    """The offline protocol: the dev set split by article into fine-tune and eval halves."""
    path = find_dev_gz(dev_gz)
    articles, digest = read_squad_json(path)
    # Checked whole, before the split, so that an error names the article's place in the file.
    train_articles, eval_articles = split_by_article(examples_by_article(articles, path))
    return SquadData(
        train=[ex for examples in train_articles for ex in examples],
        eval=[ex for examples in eval_articles for ex in examples],
        source="offline-split",
        description=f"{path} split by article (i % {EVAL_EVERY} == 0 -> eval)",
        n_train_articles=len(train_articles),
        n_eval_articles=len(eval_articles),
        sha256={path.name: digest},
    )


def load_files(train_file: str | os.PathLike, dev_file: str | os.PathLike) -> SquadData:
    """Local SQuAD JSON files (.json or .json.gz): the train file for fine-tuning, dev for eval."""
    train_articles, train_digest = read_squad_json(train_file)
    dev_articles, dev_digest = read_squad_json(dev_file)
    return SquadData(
        train=flatten_articles(train_articles, train_file),
        eval=flatten_articles(dev_articles, dev_file),
        source="files",
        description=f"train={train_file} dev={dev_file}",
        n_train_articles=len(train_articles),
        n_eval_articles=len(dev_articles),
        sha256={
            f"train:{Path(train_file).name}": train_digest,
            f"dev:{Path(dev_file).name}": dev_digest,
        },
    )


def _examples_from_hub_split(rows: Iterable[dict]) -> list[SquadExample]:
    """Hub rows (id, title, context, question, answers{text, answer_start}) as examples."""
    examples = []
    for row in rows:
        answers = row["answers"]
        example = SquadExample(
            row["id"],
            row["title"],
            row["context"],
            row["question"],
            tuple(answers["text"]),
            tuple(int(s) for s in answers["answer_start"]),
        )
        check_answers(example)
        examples.append(example)
    return examples


def load_hub(name: str = "squad") -> SquadData:
    """SQuAD v1.1 from the Hugging Face hub (needs the optional ``datasets`` package)."""
    import datasets  # noqa: PLC0415  (optional dependency: imported only on this path)

    ds = datasets.load_dataset(name)
    return SquadData(
        train=_examples_from_hub_split(ds["train"]),
        eval=_examples_from_hub_split(ds["validation"]),
        source="hub",
        description=f"datasets.load_dataset({name!r}) train/validation",
        n_train_articles=len(set(ds["train"]["title"])),
        n_eval_articles=len(set(ds["validation"]["title"])),
    )


def _hub_disabled_by_env() -> bool:
    """True when the user told Hugging Face libraries to stay offline."""
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def load_squad(
    train_file: str | os.PathLike | None = None,
    dev_file: str | os.PathLike | None = None,
    dev_gz: str | os.PathLike | None = None,
    offline: bool = False,
    hub_name: str = "squad",
    log=print,
) -> SquadData:
    """Pick the data source and load it; ``log`` is told which source was used and why.

    Local files win when given (both are needed). Otherwise the hub is tried unless ``offline``,
    ``dev_gz`` or the HF_*_OFFLINE variables say not to; when ``datasets`` is missing or the hub
    cannot be reached, the offline protocol is used instead.
    """
    if (train_file is None) != (dev_file is None):
        raise ValueError(
            "--train-file and --dev-file go together; to split a single file by article use "
            "--squad-dev-gz PATH"
        )
    if train_file is not None:
        data = load_files(train_file, dev_file)
    elif offline or dev_gz is not None or _hub_disabled_by_env():
        data = load_offline_split(dev_gz)
    else:
        try:
            data = load_hub(hub_name)
        except ImportError:
            log("SQuAD: the 'datasets' package is not installed; using the offline protocol")
            data = load_offline_split(dev_gz)
        except Exception as err:  # noqa: BLE001  (network, auth and cache errors vary by version)
            log(f"SQuAD: hub unreachable ({type(err).__name__}: {err}); using the offline protocol")
            data = load_offline_split(dev_gz)
    s = data.summary()
    articles = ""
    if s["train_articles"] is not None:
        articles = f" ({s['train_articles']} / {s['eval_articles']} articles)"
    log(
        f"SQuAD source: {data.source}: {data.description}; fine-tune {s['train_questions']:,} "
        f"questions, eval {s['eval_questions']:,} questions{articles}"
    )
    return data
