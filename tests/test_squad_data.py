"""SQuAD loading: the offline split of the real dev set (exact counts), JSON / gzip files, source
selection and its fallbacks, and the error messages."""

import gzip
import json
import random
import subprocess
import sys

import pytest

from sparse24.squad import data
from sparse24.squad.tiny import synthetic_squad


def _real_dev_gz():
    try:
        return data.find_dev_gz()
    except FileNotFoundError:
        pytest.skip("the shared SQuAD dev set is not on this machine")


def test_offline_split_counts_on_the_real_dev_set():
    path = _real_dev_gz()
    articles, digest = data.read_squad_json(path)
    # shared/data/squad/README.txt: byte-identical official file, 48 articles, 10,570 questions.
    assert digest == data.DEV_V11_SHA256
    assert len(articles) == 48
    squad = data.load_offline_split(path)
    assert (squad.n_eval_articles, squad.n_train_articles) == (16, 32)
    assert (len(squad.eval), len(squad.train)) == (4624, 5946)
    assert sum(len(ex.answer_texts) for ex in squad.eval + squad.train) == 34726
    # Article 0 is evaluation; the README names its first question.
    first = squad.eval[0]
    assert first.id == "56be4db0acb8001400a502ec"
    assert first.question == "Which NFL team represented the AFC at Super Bowl 50?"
    # Split by article: no paragraph and no title on both sides.
    assert not {ex.context for ex in squad.eval} & {ex.context for ex in squad.train}
    assert not {ex.title for ex in squad.eval} & {ex.title for ex in squad.train}


def test_split_by_article_positions():
    articles = [{"title": str(i)} for i in range(10)]
    train, evaluation = data.split_by_article(articles)
    assert [a["title"] for a in evaluation] == ["0", "3", "6", "9"]
    assert [a["title"] for a in train] == ["1", "2", "4", "5", "7", "8"]


@pytest.fixture
def squad_files(tmp_path, seed):
    """The same random SQuAD data as .json and as .json.gz, plus a second random file."""
    rng = random.Random(seed)
    doc = synthetic_squad(rng, n_articles=4, answers_per_question=2)
    other = synthetic_squad(rng, n_articles=2)
    plain = tmp_path / "train.json"
    plain.write_text(json.dumps(doc))
    zipped = tmp_path / "train.json.gz"
    zipped.write_bytes(gzip.compress(json.dumps(doc).encode()))
    dev = tmp_path / "dev.json"
    dev.write_text(json.dumps(other))
    return doc, plain, zipped, dev


def test_json_and_gzip_load_the_same_examples(squad_files):
    doc, plain, zipped, _ = squad_files
    a, digest_a = data.read_squad_json(plain)
    b, digest_b = data.read_squad_json(zipped)
    assert a == b == doc["data"]
    assert digest_a == digest_b  # the hash is of the decompressed JSON
    examples = data.flatten_articles(a)
    n_questions = sum(len(p["qas"]) for art in doc["data"] for p in art["paragraphs"])
    assert len(examples) == n_questions
    for ex in examples:
        assert len(ex.answer_texts) == 2
        for text, start in zip(ex.answer_texts, ex.answer_starts, strict=True):
            assert ex.context[start : start + len(text)] == text


def test_load_squad_from_files(squad_files):
    doc, _, zipped, dev = squad_files
    messages = []
    squad = data.load_squad(train_file=zipped, dev_file=dev, log=messages.append)
    assert squad.source == "files"
    assert squad.n_train_articles == 4 and squad.n_eval_articles == 2
    assert len(squad.train) == 4 * 2 * 3 and len(squad.eval) == 2 * 2 * 3
    assert "files" in messages[-1] and f"fine-tune {len(squad.train)} questions" in messages[-1]


def test_file_errors(tmp_path, squad_files):
    doc, plain, _, dev = squad_files
    with pytest.raises(FileNotFoundError, match="SQuAD file not found"):
        data.read_squad_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        data.read_squad_json(bad)
    bad.write_text(json.dumps({"version": "1.1", "articles": []}))
    with pytest.raises(ValueError, match="not in SQuAD format"):
        data.read_squad_json(bad)
    # An answer_start that does not point at the answer text is refused.
    qa = doc["data"][0]["paragraphs"][0]["qas"][0]
    qa["answers"][0]["answer_start"] += 1
    with pytest.raises(ValueError, match=f"question {qa['id']}: answer .* is not at character"):
        data.flatten_articles(doc["data"])
    with pytest.raises(ValueError, match="--train-file and --dev-file go together"):
        data.load_squad(train_file=plain)
    with pytest.raises(ValueError, match="--train-file and --dev-file go together"):
        data.load_squad(dev_file=dev)
    with pytest.raises(FileNotFoundError, match="--squad-dev-gz"):
        data.load_squad(dev_gz=tmp_path / "nowhere.json.gz")


@pytest.fixture
def dev_gz_in_cwd(tmp_path, monkeypatch, seed):
    """A random dev set at ./shared/data/squad/dev-v1.1.json.gz of a fresh working directory,
    with the package's own checkout hidden, so only the current-directory lookup can find it."""
    doc = synthetic_squad(random.Random(seed), n_articles=7)
    path = tmp_path / "work" / "shared" / "data" / "squad" / data.DEV_GZ_NAME
    path.parent.mkdir(parents=True)
    path.write_bytes(gzip.compress(json.dumps(doc).encode()))
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setattr(data, "repo_root", lambda: tmp_path / "no-repo")
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return path


def test_default_dev_gz_is_found_from_the_cwd(dev_gz_in_cwd):
    assert data.find_dev_gz() == dev_gz_in_cwd.resolve()
    squad = data.load_offline_split()
    # 7 articles: positions 0, 3, 6 evaluate; 1, 2, 4, 5 fine-tune; 2 paragraphs x 3 questions each.
    assert (squad.n_eval_articles, squad.n_train_articles) == (3, 4)
    assert (len(squad.eval), len(squad.train)) == (3 * 6, 4 * 6)


def test_missing_default_dev_gz_names_the_places_searched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "repo_root", lambda: tmp_path / "repo")
    with pytest.raises(
        FileNotFoundError, match=r"dev-v1\.1\.json\.gz not found \(searched .*shared"
    ):
        data.find_dev_gz()


def test_without_datasets_the_offline_protocol_is_used(dev_gz_in_cwd, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # "import datasets" now raises ImportError
    messages = []
    squad = data.load_squad(log=messages.append)
    assert squad.source == "offline-split"
    assert "not installed" in messages[0] and "offline-split" in messages[-1]


def test_unreachable_hub_falls_back(dev_gz_in_cwd, monkeypatch):
    def no_network(name):
        raise ConnectionError("name resolution failed")

    monkeypatch.setattr(data, "load_hub", no_network)
    messages = []
    assert data.load_squad(log=messages.append).source == "offline-split"
    assert "hub unreachable (ConnectionError: name resolution failed)" in messages[0]


@pytest.mark.parametrize("how", ["flag", "env"])
def test_offline_never_touches_the_hub(dev_gz_in_cwd, monkeypatch, how):
    def forbidden(name):
        raise AssertionError("the hub was tried")

    monkeypatch.setattr(data, "load_hub", forbidden)
    if how == "env":
        monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    squad = data.load_squad(offline=how == "flag", log=lambda m: None)
    assert squad.source == "offline-split"


def test_hub_rows_become_examples(seed):
    rng = random.Random(seed)
    context = " ".join(rng.choice(["alpha", "beta", "gamma"]) for _ in range(12))
    start = context.index(" ") + 1
    text = context[start:].split(" ")[0]
    rows = [
        {
            "id": "h1",
            "title": "T",
            "context": context,
            "question": "Which?",
            "answers": {"text": [text], "answer_start": [start]},
        }
    ]
    (ex,) = data._examples_from_hub_split(rows)
    assert (ex.id, ex.answer_texts, ex.answer_starts) == ("h1", (text,), (start,))
    rows[0]["answers"]["answer_start"] = [start + 1]
    with pytest.raises(ValueError, match="is not at character"):
        data._examples_from_hub_split(rows)


def test_importing_the_package_does_not_import_datasets_or_transformers():
    # `datasets` is absent on the GPU machine and in CI; transformers is only needed to run.
    code = (
        "import sys, sparse24.squad, sparse24.squad.cli; "
        "bad = [m for m in ('datasets', 'transformers') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------- malformed files (issue 21)
def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


def _gz(doc) -> bytes:
    return gzip.compress(json.dumps(doc).encode(), mtime=0)


# name -> the bad bytes of a file, and what the message says is wrong with it
_UNREADABLE = {
    "truncated gzip": (lambda doc: _gz(doc)[:-10], "not a readable gzip file"),
    "gzip, bad header": (
        lambda doc: _gz(doc)[:2] + b"\x00" + _gz(doc)[3:], "not a readable gzip file"
    ),
    "gzip, bad CRC": (lambda doc: _gz(doc)[:-8] + b"\x00" * 8, "not a readable gzip file"),
    "gzip, bad data": (
        lambda doc: _gz(doc)[:12] + bytes(b ^ 0xFF for b in _gz(doc)[12:40]) + _gz(doc)[40:],
        "not a readable gzip file",
    ),
    "bad UTF-8": (lambda doc: json.dumps(doc).encode().replace(b"Article_0", b"Art\xffcle"),
                  "not UTF-8 text"),
    "deeply nested": (lambda doc: b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                      "nests JSON too deeply"),
}


@pytest.mark.parametrize("fault", list(_UNREADABLE))
def test_unreadable_file_is_one_line_naming_it(fault, tmp_path, seed):
    """These raised EOFError, gzip.BadGzipFile, zlib.error, UnicodeDecodeError or RecursionError
    with no file name in them."""
    make, says = _UNREADABLE[fault]
    path = tmp_path / "train.json.gz"
    path.write_bytes(make(synthetic_squad(random.Random(seed), n_articles=2)))
    with pytest.raises(ValueError) as err:
        data.read_squad_json(path)
    assert isinstance(err.value, data.SquadFormatError)
    message = _one_line(err)
    assert message.startswith(str(path)) and says in message, message


def _drop(key):
    return lambda obj: obj.pop(key)


def _set(key, value):
    return lambda obj: obj.__setitem__(key, value)


# (where in the document, how it is spoiled, what the message says after the file name)
_MALFORMED = {
    "no paragraphs": (("data", 1), _drop("paragraphs"), "data[1] has no 'paragraphs'"),
    "no context": (
        ("data", 0, "paragraphs", 1), _drop("context"), "data[0].paragraphs[1] has no 'context'"
    ),
    "no qas": (("data", 0, "paragraphs", 0), _drop("qas"), "data[0].paragraphs[0] has no 'qas'"),
    "no answers": (
        ("data", 1, "paragraphs", 0, "qas", 2),
        _drop("answers"),
        "data[1].paragraphs[0].qas[2] has no 'answers'",
    ),
    "no id": (("data", 0, "paragraphs", 0, "qas", 1), _drop("id"), "qas[1] has no 'id'"),
    "no question": (
        ("data", 0, "paragraphs", 0, "qas", 0), _drop("question"), "qas[0] has no 'question'"
    ),
    "no answer text": (
        ("data", 0, "paragraphs", 1, "qas", 0, "answers", 0),
        _drop("text"),
        "data[0].paragraphs[1].qas[0].answers[0] has no 'text'",
    ),
    "no answer_start": (
        ("data", 0, "paragraphs", 1, "qas", 0, "answers", 0),
        _drop("answer_start"),
        "answers[0] has no 'answer_start'",
    ),
    "article not an object": (
        ("data",), _set(1, "Article_1"), "data[1] is a string, expected an object"
    ),
    "paragraphs not a list": (
        ("data", 0), _set("paragraphs", {}), "data[0].paragraphs is an object, expected a list"
    ),
    "context not a string": (
        ("data", 0, "paragraphs", 0), _set("context", ["x"]), "context is a list, expected a string"
    ),
    "qa is null": (("data", 0, "paragraphs", 0, "qas"), _set(0, None), "qas[0] is null, expected"),
    "answer_start a string": (
        ("data", 0, "paragraphs", 0, "qas", 0, "answers", 0),
        _set("answer_start", "12"),
        "answer_start is a string, expected an integer",
    ),
    "answer_start a bool": (
        ("data", 0, "paragraphs", 0, "qas", 0, "answers", 0),
        _set("answer_start", False),
        "answer_start is true or false, expected an integer",
    ),
    "title not a string": (("data", 0), _set("title", 7), "data[0].title is an integer, expected"),
    "no answer at all": (
        ("data", 0, "paragraphs", 0, "qas", 0), _set("answers", []), "has no answer"
    ),
}


@pytest.mark.parametrize("fault", list(_MALFORMED))
@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_malformed_squad_is_one_line_naming_file_and_place(fault, suffix, tmp_path, seed):
    """Missing keys and wrong types raised a bare KeyError ('paragraphs'), TypeError or
    AttributeError from flatten_articles, naming neither the file nor the place in it."""
    doc = synthetic_squad(random.Random(seed), n_articles=2)
    where, spoil, says = _MALFORMED[fault]
    obj = doc
    for key in where:
        obj = obj[key]
    spoil(obj)
    train = tmp_path / f"train{suffix}"
    text = json.dumps(doc).encode()
    train.write_bytes(gzip.compress(text) if suffix.endswith(".gz") else text)
    dev = tmp_path / "dev.json"
    dev.write_text(json.dumps(synthetic_squad(random.Random(seed + 1), n_articles=1)))
    with pytest.raises(ValueError) as err:
        data.load_files(train, dev)
    assert isinstance(err.value, data.SquadFormatError)
    message = _one_line(err)
    assert message.startswith(f"{train}: ") and says in message, message


def test_negative_answer_start_is_refused(seed):
    """context[-n:...] could find the text from the end: a negative start was accepted."""
    doc = synthetic_squad(random.Random(seed), n_articles=1)
    paragraph = doc["data"][0]["paragraphs"][0]
    context, answer = paragraph["context"], paragraph["qas"][0]["answers"][0]
    answer["answer_start"] -= len(context)  # the same characters, counted from the end
    assert context[answer["answer_start"] :].startswith(answer["text"])
    with pytest.raises(ValueError, match=r"SQuAD data: question q000000: answer .* is not at char"):
        data.flatten_articles(doc["data"])


def test_offline_split_names_the_place_in_the_whole_file(tmp_path, seed):
    """The split renumbers articles; the message counts them in the file."""
    doc = synthetic_squad(random.Random(seed), n_articles=5)
    del doc["data"][4]["paragraphs"][1]["qas"][0]["question"]  # article 4 fine-tunes (4 % 3 != 0)
    path = tmp_path / data.DEV_GZ_NAME
    path.write_bytes(_gz(doc))
    with pytest.raises(ValueError, match=r"data\[4\]\.paragraphs\[1\]\.qas\[0\] has no 'question'"):
        data.load_offline_split(path)
