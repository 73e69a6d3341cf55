"""Tuning keys: M buckets, JSON round trip, config validation, GPU/Triton helpers."""

import json
import subprocess
import sys

import pytest
import torch

from sparse24.tuning import cache as keys
from sparse24.tuning.cache import TuningKey, dtype_name, m_bucket, slug, validate_config


@pytest.mark.parametrize(
    "m, bucket",
    [(1, 1), (2, 2), (3, 4), (4, 4), (5, 8), (63, 64), (64, 64), (65, 128), (4096, 4096),
     (4097, 8192), (300_000, 524_288), (2**20 + 1, 2**21)],
)
def test_m_bucket_edges(m, bucket):
    assert m_bucket(m) == bucket


def test_m_bucket_covers_half_open_range():
    # Bucket b holds exactly (b/2, b]: the config tuned at M = b serves every M of its bucket.
    for m in range(1, 5000):
        b = m_bucket(m)
        assert b & (b - 1) == 0
        assert b // 2 < m <= b


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-3, ValueError), (2.0, TypeError),
                                      (True, TypeError)])
def test_m_bucket_rejects(bad, exc):
    with pytest.raises(exc, match="m must be"):
        m_bucket(bad)


def _key(**kw):
    base = dict(gpu="NVIDIA H100 80GB HBM3", triton="3.6.0", dtype="float16", n=3072, k=768,
                m_bucket=64)
    base.update(kw)
    return TuningKey(**base)


def test_key_json_round_trip():
    key = _key()
    data = key.to_json()
    assert isinstance(data, dict)
    assert data == {"gpu": "NVIDIA H100 80GB HBM3", "triton": "3.6.0", "dtype": "float16",
                    "n": 3072, "k": 768, "m_bucket": 64}
    again = TuningKey.from_json(json.loads(json.dumps(data)))
    assert again == key
    assert hash(again) == hash(key)
    assert {key: 1}[again] == 1


def test_key_is_frozen():
    with pytest.raises(AttributeError):
        _key().n = 1


@pytest.mark.parametrize(
    "data, match",
    [
        ("not a dict", "do not match"),
        ({"gpu": "x", "triton": "3", "dtype": "float16", "n": 16, "k": 64}, "do not match"),
        ({**_key().to_json(), "extra": 1}, "do not match"),
        ({**_key().to_json(), "m_bucket": 48}, "power of two"),
        ({**_key().to_json(), "n": "3072"}, "positive int"),
        ({**_key().to_json(), "k": True}, "positive int"),
        ({**_key().to_json(), "gpu": ""}, "non-empty str"),
    ],
)
def test_key_from_json_rejects(data, match):
    with pytest.raises(ValueError, match=match):
        TuningKey.from_json(data)


def test_dtype_name_and_slug():
    assert dtype_name(torch.bfloat16) == "bfloat16"
    assert dtype_name("float16") == "float16"
    assert slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert slug("3.6.0+git1234") == "3.6.0-git1234"


def test_validate_config():
    cfg = {"BLOCK_M": 64, "num_warps": 4, "family": "splitk"}
    assert validate_config(cfg) == cfg
    for bad in ({"BLOCK_M": 64.0}, {"BLOCK_M": True}, {1: 2}, [("BLOCK_M", 64)], {"x": None}):
        with pytest.raises(ValueError):
            validate_config(bad)


def test_current_gpu_name_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        keys.current_gpu_name()


def test_current_gpu_name_with_fake_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"Fake GPU {i}")
    assert keys.current_gpu_name("cuda:1") == "Fake GPU 1"
    assert keys.current_gpu_name() == "Fake GPU 0"
    assert keys.current_gpu_name(1) == "Fake GPU 1"
    with pytest.raises(ValueError, match="CUDA device"):
        keys.current_gpu_name("cpu")


def test_import_touches_no_gpu_and_no_triton():
    code = (
        "import sys, sparse24.tuning, sparse24.tuning.cli\n"
        "assert 'triton' not in sys.modules, 'triton imported'\n"
        "assert 'torch' not in sys.modules or not sys.modules['torch'].cuda.is_initialized()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
