"""``sparse24 tune`` CLI with a fake tune function (no GPU needed)."""

import argparse
import json
import os
import re

import pytest
import torch

from sparse24.tuning import cli
from sparse24.tuning.autotune import TuneResult, autotune
from sparse24.tuning.cache import TuningKey, dtype_name, m_bucket

GPU = "Fake GPU 80GB"


class FakeTune:
    """Stands in for sparse24.ops.linear.tune: goes through the real autotune and cache.

    Each candidate's time is set so that the winner runs at exactly 100 dense-equivalent TFLOP/s.
    """

    def __init__(self, fail_on=()):
        self.calls = []
        self.fail_on = set(fail_on)

    def __call__(self, n, k, m, dtype, device="cuda", progress=True) -> TuneResult:
        self.calls.append((n, k, m, dtype, device))
        if (n, k) in self.fail_on:
            raise RuntimeError("no candidate compiled\nlong listing")
        key = TuningKey(GPU, "3.6.0", dtype_name(dtype), n, k, m_bucket(m))
        ms = 2 * m * n * k / 1e11
        slow = {"BLOCK_M": 16, "BLOCK_N": 64, "num_warps": 4}
        fast = {"BLOCK_M": 64, "BLOCK_N": 128, "num_warps": 8}
        wrong = {"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 8}
        last = {}
        times = {16: 2 * ms, 64: ms, 128: ms / 10}
        return autotune(
            key,
            [slow, fast, wrong],
            run=lambda c: last.update(c),
            check=lambda c: "mismatch" if c == wrong else None,
            timer=lambda fn: (fn(), times[last["BLOCK_M"]])[1],
            progress=progress,
        )


@pytest.fixture
def cuda(monkeypatch):
    monkeypatch.setattr(cli, "_cuda_available", lambda: True)


def run_cli(argv, tune):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    cli.add_arguments(sub.add_parser("tune"))
    args = parser.parse_args(["tune", *argv])
    return cli.main(args, tune=tune)


def test_shapes_and_m_buckets(cuda, tmp_path, capsys):
    fake = FakeTune()
    env_before = os.environ.get("SPARSE24_CACHE_DIR")
    rc = run_cli(["--shapes", "768x768, 3072x768", "--m", "1,16,17,20,4096", "--no-progress",
                  "--cache-dir", str(tmp_path)], fake)
    assert rc == 0
    # 17 and 20 share bucket 32 with each other: tuned once, at the first count given.
    assert [(n, k, m) for n, k, m, *_ in fake.calls] == [
        (768, 768, 1), (768, 768, 16), (768, 768, 17), (768, 768, 4096),
        (3072, 768, 1), (3072, 768, 16), (3072, 768, 17), (3072, 768, 4096)]
    assert {c[3] for c in fake.calls} == {torch.float16}
    assert {c[4] for c in fake.calls} == {"cuda"}
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "TFLOP/s" in lines[1] and "config" in lines[1]
    row = next(line for line in lines if line.startswith("3072x768") and " 4096 " in line)
    assert "100.0" in row and "1/3" in row and "BLOCK_M=64 BLOCK_N=128 num_warps=8" in row
    # The results went to --cache-dir, and the environment was restored afterwards.
    files = list(tmp_path.glob("fake-gpu-80gb__triton-3.6.0.json"))
    assert len(json.loads(files[0].read_text())["entries"]) == 8
    assert os.environ.get("SPARSE24_CACHE_DIR") == env_before


def test_model_dir_lists_packable_linears(cuda, tmp_path, capsys):
    from transformers import BertConfig

    # hidden 128, intermediate 352: linears (128,128), (352,128) and (128,352); 352 % 64 != 0,
    # so the output projection (K=352) cannot be packed and is skipped.
    BertConfig(hidden_size=128, intermediate_size=352, num_hidden_layers=1, num_attention_heads=2,
               vocab_size=64, max_position_embeddings=32).save_pretrained(tmp_path / "tiny")
    fake = FakeTune()
    rc = run_cli(["--model", str(tmp_path / "tiny"), "--shapes", "256x128", "--m", "64",
                  "--dtype", "bfloat16", "--no-progress", "--cache-dir", str(tmp_path / "c")], fake)
    assert rc == 0
    assert [(n, k) for n, k, *_ in fake.calls] == [(256, 128), (128, 128), (352, 128)]
    assert {c[3] for c in fake.calls} == {torch.bfloat16}
    err = capsys.readouterr().err
    assert "skipping 128x352" in err and "K=352" in err


def test_no_cuda_exits_2_like_bench(monkeypatch, capsys):
    """Issue 21: `python -m sparse24 tune` on a CPU exited 1 (as a failed run), bench exits 2."""
    from sparse24 import __main__ as sparse24_main
    from sparse24 import bench_quick

    monkeypatch.setattr(cli, "_cuda_available", lambda: False)
    fake = FakeTune()
    assert run_cli(["--shapes", "768x768"], fake) == bench_quick.EXIT_NO_CUDA == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("sparse24 tune: needs a CUDA GPU")
    assert fake.calls == []
    # and through the program's entry point, without the fake
    assert sparse24_main.main(["tune", "--shapes", "768x768", "--no-progress"]) == 2
    assert capsys.readouterr().err == err


@pytest.mark.parametrize(
    "argv, match",
    [
        ([], "give --shapes and/or --model"),
        (["--shapes", "768x100"], "K=100 .* multiple of 64"),
        (["--shapes", "24x768"], "N=24 .* multiple of 16"),
        (["--shapes", "0x768"], "must be positive"),
        (["--shapes", "768by768"], "not N x K"),
        (["--shapes", "768x768", "--m", "0"], "'0' is not an integer >= 1"),
        (["--shapes", "768x768", "--m", "a"], "not an integer"),
        (["--shapes", " , "], "--shapes: nothing given"),
        (["--shapes", "768x768", "--device", "cpu"], "CUDA device"),
    ],
)
def test_usage_errors(cuda, capsys, argv, match):
    assert run_cli(argv, FakeTune()) == 2
    err = capsys.readouterr().err
    assert err.startswith("sparse24 tune: error:")
    assert re.search(match, err)


def test_failed_shape_reported_and_others_tuned(cuda, tmp_path, capsys):
    fake = FakeTune(fail_on={(768, 768)})
    rc = cli.main(["--shapes", "768x768,1536x768", "--m", "8", "--no-progress", "--cache-dir",
                   str(tmp_path)], tune=fake)
    assert rc == 1
    out, err = capsys.readouterr()
    assert "FAILED RuntimeError: no candidate compiled" in out
    assert "long listing" not in out
    assert any(line.startswith("1536x768") and "BLOCK_M=64" in line for line in out.splitlines())
    assert "1 of 2 shapes failed" in err


def test_write_defaults_after_tuning(cuda, tmp_path, monkeypatch, capsys):
    from sparse24.tuning import cache as cache_mod

    monkeypatch.setattr(cache_mod, "DEFAULTS_DIR", tmp_path / "defaults")
    rc = cli.main(["--shapes", "768x768", "--m", "1,64", "--cache-dir", str(tmp_path / "c"),
                   "--write-defaults"], tune=FakeTune())  # progress bars on
    assert rc == 0
    doc = json.loads((tmp_path / "defaults" / "fake-gpu-80gb.json").read_text())
    assert doc["gpu"] == GPU
    assert sorted(e["key"]["m_bucket"] for e in doc["entries"]) == [1, 64]
    assert "wrote shipped defaults" in capsys.readouterr().err


def test_default_tune_is_the_ops_tuner(cuda, tmp_path, monkeypatch):
    from sparse24.ops import tune as tune_mod

    fake = FakeTune()
    monkeypatch.setattr(tune_mod, "tune", fake)
    assert cli.main(["--shapes", "768x768", "--m", "2", "--no-progress", "--cache-dir",
                     str(tmp_path)]) == 0
    assert fake.calls == [(768, 768, 2, torch.float16, "cuda")]


def test_help_renders():
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    text = " ".join(parser.format_help().split())  # argparse wraps lines
    assert "N % 16 == 0 and K % 64 == 0" in text and "--cache-dir" in text


def test_unreadable_model_is_a_clear_error(cuda, tmp_path, capsys):
    assert cli.main(["--model", str(tmp_path / "nowhere"), "--no-progress"], tune=FakeTune()) == 1
    assert "cannot read model" in capsys.readouterr().err
