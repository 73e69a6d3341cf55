"""python -m sparse24: help texts, the main job from a bare install, bench, and SQuAD usage errors."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import time

import pytest

from sparse24 import __main__ as cli
from sparse24 import bench_quick


def test_help_describes_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for name, description in cli.COMMANDS.items():
        assert f"{name} {' '.join(description.split())}" in out


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_each_command_help_has_its_description(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert " ".join(cli.COMMANDS[command].split()) in out


_BARE = (
    "import sys\n"
    "for name in ('tqdm', 'transformers', 'accelerate', 'matplotlib', 'datasets', 'safetensors'):\n"
    "    sys.modules[name] = None  # what a bare install (torch, triton, numpy) lacks\n"
    "from sparse24.__main__ import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _bare(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _BARE, *argv], capture_output=True, text=True,
                          timeout=300)


def test_main_job_runs_without_the_extras():
    """The README's main job, `python -m sparse24 demo`, from a bare install: the extras' modules
    (tqdm among them) are made unimportable. It used to die in ModuleNotFoundError: tqdm."""
    done = _bare("demo")
    assert done.returncode == 0, done.stderr
    assert "demo OK" in done.stdout
    if "No CUDA GPU" in done.stdout:
        assert "Triton interpreter" in done.stdout  # it says which job it ran


def test_squad_without_transformers_says_what_to_install():
    done = _bare("squad", "--offline")
    assert done.returncode == 2
    assert "pip install -e '.[bert]'" in done.stderr and "Traceback" not in done.stderr


# ------------------------------------------------------------------------------------ bench
def test_bench_on_a_cpu_says_it_needs_a_gpu(monkeypatch, capsys):
    monkeypatch.setattr(bench_quick.torch.cuda, "is_available", lambda: False)
    assert cli.main(["bench"]) == bench_quick.EXIT_NO_CUDA == 2
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "python -m sparse24 demo" in err


def test_bench_table_and_results_with_fake_timings(tmp_path):
    fake = {"cublas": 0.010, "sparse24": 0.008, "torch24": "failed (RuntimeError)"}
    rows = bench_quick.gemm_rows(lambda backend, m, n, k: fake[backend], tokens=(16,),
                                 shapes=((768, 768), (3072, 768)))
    rows.append({"bench": "bert", "batch_size": 4, "seq_len": 384, "dense_ms": 3.0,
                 "sparse24_ms": 2.0})
    env = {"device": "FAKE GPU 80GB", "gpu": "FAKE GPU 80GB", "torch": "9.9", "triton": "8.8",
           "git_commit": "abc123", "timestamp_utc": "2026-12-04T00:00:00Z"}
    jsonl, md = bench_quick.write_results(rows, env, tmp_path)
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 3 and len({r["run_id"] for r in records}) == 1
    assert all(r["env"] == env for r in records)
    assert records[0] | {"run_id": None, "env": None} == {
        "bench": "gemm", "m": 16, "n": 768, "k": 768, "cublas_ms": 0.010, "sparse24_ms": 0.008,
        "torch24_ms": "failed (RuntimeError)", "run_id": None, "env": None}
    table = md.read_text()
    assert "FAKE GPU 80GB · torch 9.9 · triton 8.8" in table and "commit abc123" in table
    assert "| 16 | 768x768 | 10.0 | failed (RuntimeError) | 8.0 | 1.25x |" in table
    assert "| batch 4 | 3.00 | 2.00 | 1.50x |" in table
    bench_quick.write_results(rows[:1], env, tmp_path)  # appends: runs accumulate
    assert len(jsonl.read_text().splitlines()) == 4


# ------------------------------------------------------------------------ squad usage errors
@pytest.fixture
def dev_gz(tmp_path):
    import gzip

    from sparse24.squad.tiny import synthetic_squad

    path = tmp_path / "dev-v1.1.json.gz"
    path.write_bytes(gzip.compress(json.dumps(synthetic_squad(random.Random(0))).encode()))
    return path


def _squad(argv, capsys) -> tuple[int, str]:
    status = cli.main(["squad", *argv])
    return status, capsys.readouterr().err


def test_squad_offline_missing_model_is_one_line_without_network(dev_gz, tmp_path, monkeypatch,
                                                                 capsys):
    """--offline means no network at all: it used to retry the hub for ~50 s, then raise OSError."""
    pytest.importorskip("transformers")

    attempts = []

    def no_network(*args, **kwargs):
        attempts.append(args)  # recorded: the libraries catch what a connection raises
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)  # the run sets them itself
    missing = "sparse24-tests/no-such-model"  # a hub name: without --offline the hub is asked
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    status, err = _squad(["--model", str(missing), "--offline", "--squad-dev-gz", str(dev_gz),
                          "--output-dir", str(tmp_path / "out"), "--no-progress"], capsys)
    assert time.perf_counter() - t0 < 30
    assert not attempts, f"--offline tried the network: {attempts[:2]}"
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert repr(missing) in lines[0] and str(tmp_path / missing) in lines[0]
    assert "Hugging Face cache" in lines[0] and "--offline" in lines[0]


@pytest.mark.parametrize("given", ["--train-file", "--dev-file"])
def test_squad_train_file_needs_dev_file(given, tmp_path, capsys):
    status, err = _squad([given, str(tmp_path / "x.json"), "--offline"], capsys)
    other = "--dev-file" if given == "--train-file" else "--train-file"
    assert status == 2 and f"{given} needs {other}" in err and "Traceback" not in err


def test_squad_missing_dev_set_is_a_message(tmp_path, capsys):
    pytest.importorskip("transformers")
    status, err = _squad(["--offline", "--squad-dev-gz", str(tmp_path / "none.json.gz")], capsys)
    assert status == 2 and "SQuAD dev set not found" in err and "none.json.gz" in err


def test_squad_missing_local_file_is_a_message(tmp_path, capsys):
    pytest.importorskip("transformers")
    status, err = _squad(["--train-file", str(tmp_path / "t.json"), "--dev-file",
                          str(tmp_path / "d.json")], capsys)
    assert status == 2 and "SQuAD file not found" in err and "t.json" in err


# ----------------------------------------------------- squad: bad values and files (issue 21)
def _squad_cli_entry(argv, capsys) -> tuple[int, str]:
    from sparse24.squad import cli as squad_cli

    status = squad_cli._entry(argv)  # python -m sparse24.squad.cli (what torchrun starts)
    return status, capsys.readouterr().err


_ENTRIES = {"python -m sparse24 squad": _squad, "python -m sparse24.squad.cli": _squad_cli_entry}


@pytest.mark.parametrize("entry", list(_ENTRIES))
@pytest.mark.parametrize(
    "flag,value",
    [("--epochs", "-1"), ("--batch-size", "0"), ("--max-length", "10"), ("--stride", "500"),
     ("--grad-accum", "0"), ("--warmup-ratio", "1"), ("--lr", "nan"), ("--seed", "-1")],
)
def test_squad_bad_value_is_one_line_naming_the_flag(entry, flag, value, monkeypatch, capsys):
    """These ended in a traceback (ZeroDivisionError, numpy's seed error, preprocess' stride
    check after the model was loaded) or ran to meaningless scores."""
    from sparse24.squad import pipeline

    def loaded(*args, **kwargs):
        raise AssertionError("loaded before the options were checked")

    monkeypatch.setattr(pipeline, "set_seed", loaded)
    monkeypatch.setattr(pipeline, "_prepare", loaded)
    status, err = _ENTRIES[entry]([flag, value], capsys)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"python -m sparse24 squad: error: {flag} must be "), lines[0]


def test_squad_bad_value_is_refused_before_anything_is_imported():
    """In a fresh process without the [bert] extra: the value is refused first, exit status 2."""
    done = _bare("squad", "--batch-size", "0")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "python -m sparse24 squad: error: --batch-size must be an integer >= 1, got 0"
    )


@pytest.mark.parametrize("entry", list(_ENTRIES))
@pytest.mark.parametrize("fault", ["truncated gzip", "no answers"])
def test_squad_malformed_file_is_one_line_naming_it(entry, fault, tmp_path, monkeypatch, capsys):
    """A truncated .json.gz ended in EOFError, a question without 'answers' in KeyError."""
    import gzip

    from sparse24.squad import pipeline
    from sparse24.squad.tiny import synthetic_squad

    pytest.importorskip("transformers")
    monkeypatch.setattr(pipeline, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    doc = synthetic_squad(random.Random(0), n_articles=2)
    train = tmp_path / "train.json.gz"
    if fault == "truncated gzip":
        train.write_bytes(gzip.compress(json.dumps(doc).encode())[:-10])
    else:
        del doc["data"][1]["paragraphs"][0]["qas"][2]["answers"]
        train.write_bytes(gzip.compress(json.dumps(doc).encode()))
    dev = tmp_path / "dev.json"
    dev.write_text(json.dumps(synthetic_squad(random.Random(1), n_articles=1)))
    argv = ["--train-file", str(train), "--dev-file", str(dev), "--model", "none",
            "--no-progress", "--output-dir", str(tmp_path / "out")]
    status, err = _ENTRIES[entry](argv, capsys)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"python -m sparse24 squad: error: {train}"), lines[0]
    says = "not a readable gzip file" if fault == "truncated gzip" else (
        "data[1].paragraphs[0].qas[2] has no 'answers'")
    assert says in lines[0], lines[0]
