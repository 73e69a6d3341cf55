"""The JSON tuning cache: round trips, atomic writes, bad files, defaults, nearest bucket."""

import json
import multiprocessing as mp
import os

import pytest
from filelock import FileLock

from sparse24.tuning import cache as cache_mod
from sparse24.tuning.cache import (
    CacheEntry,
    TuningCache,
    TuningCacheWarning,
    default_cache,
    defaults_path,
    write_defaults,
)
from sparse24.tuning.cache import TuningKey

GPU = "NVIDIA H100 80GB HBM3"
TRITON = "3.6.0"


def key(n=768, k=3072, m_bucket=64, dtype="float16", gpu=GPU, triton=TRITON):
    return TuningKey(gpu=gpu, triton=triton, dtype=dtype, n=n, k=k, m_bucket=m_bucket)


def entry(tag=64, **kw):
    """An entry whose config carries ``tag`` so that tests can tell entries apart."""
    return CacheEntry(key(**kw), {"BLOCK_M": tag, "num_warps": 4, "family": "plain"}, ms=0.5,
                      n_candidates=10, n_rejected=2)


def _context():
    # fork is fast (no re-import of torch); spawn where fork does not exist.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    return mp.get_context(method)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("SPARSE24_CACHE_DIR", str(d))
    return d


@pytest.fixture
def no_defaults(tmp_path):
    d = tmp_path / "no_defaults"
    d.mkdir()
    return d


def test_put_get_round_trip(cache_dir, no_defaults):
    c = TuningCache(defaults_dir=no_defaults)
    assert c.directory == cache_dir
    assert c.lookup(key()) is None
    c.put(entry())
    assert c.lookup(key()).config == entry().config  # a None resolved earlier was forgotten

    fresh = TuningCache(defaults_dir=no_defaults)
    got = fresh.lookup(key())
    assert got == entry()
    assert (got.ms, got.n_candidates, got.n_rejected) == (0.5, 10, 2)

    path = c.path_for(GPU, TRITON)
    assert path.name == "nvidia-h100-80gb-hbm3__triton-3.6.0.json"
    doc = json.loads(path.read_text())
    assert doc["format"] == "sparse24-tuning"
    assert doc["schema_version"] == 1
    assert (doc["gpu"], doc["triton"]) == (GPU, TRITON)
    assert doc["entries"][0]["key"] == key().to_json()


def test_other_triton_version_is_another_file(cache_dir, no_defaults):
    c = TuningCache(defaults_dir=no_defaults)
    c.put(entry())
    assert TuningCache(defaults_dir=no_defaults).lookup(key(triton="3.7.0")) is None


def _child_put(directory, tags):
    c = TuningCache(directory, defaults_dir=os.path.join(directory, "no_defaults"))
    for tag in tags:
        c.put(entry(tag=tag, n=16 * tag))


def _child_get(directory, queue):
    got = TuningCache(directory, defaults_dir=os.path.join(directory, "no_defaults")).lookup(
        key(n=1600))
    queue.put(None if got is None else got.to_json())


def test_round_trip_across_processes(tmp_path):
    ctx = _context()
    p = ctx.Process(target=_child_put, args=(str(tmp_path), [100]))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    fresh = TuningCache(tmp_path, defaults_dir=tmp_path / "no_defaults")
    assert fresh.lookup(key(n=1600)) == entry(100, n=1600)

    # And the other way: written here, read in a fresh process.
    TuningCache(tmp_path).put(entry(7, n=1600))
    queue = ctx.Queue()
    p = ctx.Process(target=_child_get, args=(str(tmp_path), queue))
    p.start()
    got = queue.get(timeout=30)
    p.join(30)
    assert got == entry(7, n=1600).to_json()


def test_two_caches_keep_each_others_entries(tmp_path, no_defaults):
    """put re-reads the file: a cache that loaded it before another cache wrote keeps that entry."""
    a = TuningCache(tmp_path, defaults_dir=no_defaults)
    b = TuningCache(tmp_path, defaults_dir=no_defaults)
    assert a.lookup(key(n=16)) is None and b.lookup(key(n=32)) is None  # both loaded the file
    a.put(entry(1, n=16))
    b.put(entry(2, n=32))  # b's memory has not seen a's entry
    fresh = TuningCache(tmp_path, defaults_dir=no_defaults)
    assert (fresh.lookup(key(n=16)), fresh.lookup(key(n=32))) == (entry(1, n=16), entry(2, n=32))


WRITERS, PER_WRITER = 3, 20


def _child_put_at_once(directory, barrier, first):
    barrier.wait(60)  # all writers started (imports done), so that their puts overlap
    for tag in range(first, first + PER_WRITER):
        # A fresh cache per put, as from many short tuning runs: no memory of an entry to write
        # back, so without the lock any put between another's read and replace is lost for good.
        TuningCache(directory, defaults_dir=os.path.join(directory, "no_defaults")).put(
            entry(tag, n=16 * tag))


def test_concurrent_writers_lose_nothing(tmp_path):
    """Issue 21: writers racing between their read and their replace lost entries (14 of 150 in
    one run) until put took the file's lock."""
    ctx = mp.get_context("spawn")  # a fresh interpreter: no fork of this one's threads
    barrier = ctx.Barrier(WRITERS)
    writers = [ctx.Process(target=_child_put_at_once, args=(str(tmp_path), barrier, first))
               for first in range(1, WRITERS * PER_WRITER, PER_WRITER)]
    for p in writers:
        p.start()
    for p in writers:
        p.join(120)
    assert [p.exitcode for p in writers] == [0] * WRITERS
    fresh = TuningCache(tmp_path, defaults_dir=tmp_path / "no_defaults")
    lost = [tag for tag in range(1, WRITERS * PER_WRITER + 1) if fresh.lookup(key(n=16 * tag))
            != entry(tag, n=16 * tag)]
    assert lost == []


def test_put_gives_up_on_a_held_lock(tmp_path, no_defaults, monkeypatch):
    """A lock held past LOCK_TIMEOUT_S: put raises filelock.Timeout, an OSError (which autotune
    turns into a warning), and the entry is still served from memory."""
    monkeypatch.setattr(cache_mod, "LOCK_TIMEOUT_S", 0.05)
    c = TuningCache(tmp_path, defaults_dir=no_defaults)
    path = c.path_for(GPU, TRITON)
    with FileLock(path.with_name(path.name + ".lock")):  # another writer, stuck
        with pytest.raises(OSError):
            c.put(entry())
    assert c.lookup(key()) == entry() and not path.exists()


def test_atomic_write_keeps_old_file_when_replace_fails(tmp_path, monkeypatch):
    c = TuningCache(tmp_path, defaults_dir=tmp_path / "no_defaults")
    c.put(entry(1))
    path = c.path_for(GPU, TRITON)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated"):
        c.put(entry(2, n=1600))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []
    monkeypatch.undo()
    # The entry is still served from memory in this process; the file only has the first one.
    assert c.lookup(key(n=1600)).config["BLOCK_M"] == 2
    assert TuningCache(tmp_path, defaults_dir=tmp_path / "no_defaults").lookup(key(n=1600)) is None


def _write_doc(path, **overrides):
    doc = {"format": "sparse24-tuning", "schema_version": 1, "gpu": GPU, "triton": TRITON,
           "entries": [entry().to_json()]}
    doc.update(overrides)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "JSONDecodeError"),
        ("[1, 2]", "not a sparse24 tuning file"),
        ({"schema_version": 99}, "schema_version 99"),
        ({"format": "gemlite"}, "not a sparse24 tuning file"),
        ({"gpu": "NVIDIA A100-SXM4-80GB"}, "written for gpu 'NVIDIA A100-SXM4-80GB'"),
        ({"triton": "3.1.0"}, "written for triton '3.1.0'"),
        ({"entries": [{"key": {"gpu": GPU}, "config": {}}]}, "do not match"),
        ({"entries": 3}, "TypeError"),
        ({"entries": None, "gpu": None}, "gpu None"),
        ({"entries": [{**entry().to_json(), "config": {"BLOCK_M": 1.5}}]}, "int or a str"),
        ("[" * 100000, "RecursionError"),  # json's parser recurses per level (issue 21)
    ],
)
def test_bad_user_file_ignored_with_warning(tmp_path, no_defaults, content, match):
    c = TuningCache(tmp_path, defaults_dir=no_defaults)
    path = c.path_for(GPU, TRITON)
    if isinstance(content, str):
        path.write_text(content)
    else:
        _write_doc(path, **content)
    with pytest.warns(TuningCacheWarning, match=match) as record:
        assert c.lookup(key()) is None
    assert str(path) in str(record[0].message)


def test_corrupt_file_is_replaced_on_put(tmp_path, no_defaults):
    c = TuningCache(tmp_path, defaults_dir=no_defaults)
    path = c.path_for(GPU, TRITON)
    path.write_text("\x00garbage")
    with pytest.warns(TuningCacheWarning, match="JSONDecodeError"):
        c.put(entry())
    assert TuningCache(tmp_path, defaults_dir=no_defaults).lookup(key()) == entry()


def test_file_never_pickled(tmp_path):
    c = TuningCache(tmp_path, defaults_dir=tmp_path / "no_defaults")
    c.put(entry())
    json.loads(c.path_for(GPU, TRITON).read_text(encoding="utf-8"))  # plain JSON text


# ---------------------------------------------------------------------------------------------
# Shipped defaults and the nearest bucket


@pytest.fixture
def defaults(tmp_path):
    """A defaults dir with buckets 16 and 256 of 768x3072 fp16 (tuned under another Triton)."""
    d = tmp_path / "defaults"
    _write_doc(defaults_path(GPU, d), triton="3.4.0",
               entries=[entry(16, m_bucket=16, triton="3.4.0").to_json(),
                        entry(256, m_bucket=256, triton="3.4.0").to_json()])
    return d


def test_defaults_fallback(tmp_path, defaults):
    c = TuningCache(tmp_path / "user", defaults_dir=defaults)
    got = c.lookup(key(m_bucket=16))
    assert got.config["BLOCK_M"] == 16
    # A user entry for the same key wins over the shipped one.
    c.put(entry(99, m_bucket=16))
    got = c.lookup(key(m_bucket=16))
    assert got.config["BLOCK_M"] == 99


def test_defaults_of_another_gpu_ignored(tmp_path):
    d = tmp_path / "defaults"
    _write_doc(defaults_path(GPU, d), gpu="NVIDIA H100 PCIe")
    with pytest.warns(TuningCacheWarning, match="nvidia-h100-80gb-hbm3.json"):
        assert TuningCache(tmp_path / "user", defaults_dir=d).lookup(key()) is None


@pytest.mark.parametrize(
    "wanted, chosen",
    [
        (32, 16),     # 2x from 16, 8x from 256
        (64, 256),    # 4x from both: the larger bucket wins
        (128, 256),
        (8, 16),
        (4, 16),      # 4x: still used
        (2, None),    # 8x from the nearest: too far, the caller's heuristic decides
        (2048, None),
    ],
)
def test_nearest_bucket_rule(tmp_path, defaults, wanted, chosen):
    c = TuningCache(tmp_path / "user", defaults_dir=defaults)
    got = c.lookup(key(m_bucket=wanted))
    if chosen is None:
        assert got is None
        return
    assert got.config["BLOCK_M"] == chosen
    assert got.key.m_bucket == chosen  # the entry says which bucket it was tuned for


def test_nearest_bucket_same_shape_only(tmp_path, defaults):
    c = TuningCache(tmp_path / "user", defaults_dir=defaults)
    assert c.lookup(key(n=1536, m_bucket=16)) is None
    assert c.lookup(key(dtype="bfloat16", m_bucket=16)) is None
    assert c.lookup(key(gpu="NVIDIA A100-SXM4-80GB", m_bucket=16)) is None


def test_nearest_bucket_spans_user_and_defaults(tmp_path, defaults):
    c = TuningCache(tmp_path / "user", defaults_dir=defaults)
    c.put(entry(64, m_bucket=64))
    got = c.lookup(key(m_bucket=32))  # 16 (defaults) and 64 (user) both at distance 1
    assert got.config["BLOCK_M"] == 64  # the user's (the defaults' would be tagged 16)
    c.put(entry(17, m_bucket=16))  # same bucket in user and defaults: user wins
    got = c.lookup(key(m_bucket=8))
    assert got.config["BLOCK_M"] == 17


def test_write_defaults_from_user_cache(tmp_path, defaults):
    user = TuningCache(tmp_path / "user", defaults_dir=tmp_path / "no_defaults")
    user.put(entry(61, m_bucket=16))  # refreshes bucket 16
    user.put(entry(62, m_bucket=4096))  # new bucket
    dest = write_defaults(user.path_for(GPU, TRITON), dest_dir=defaults)
    assert dest == defaults_path(GPU, defaults)

    c = TuningCache(tmp_path / "empty", defaults_dir=defaults)
    assert {b: c.lookup(key(m_bucket=b)).config["BLOCK_M"] for b in (16, 256, 4096)} == {
        16: 61, 256: 256, 4096: 62}  # 256 kept from the old defaults

    write_defaults(user.path_for(GPU, TRITON), dest_dir=defaults, merge=False)
    c = TuningCache(tmp_path / "empty", defaults_dir=defaults)
    assert c.lookup(key(m_bucket=256)) is None  # 16 and 4096 are 16x away


def test_write_defaults_declares_the_kind_of_gpu(tmp_path, defaults):
    """capability / sm_count: given, kept by a later merge, and what shipped_gpus matches."""
    user = TuningCache(tmp_path / "user", defaults_dir=tmp_path / "no_defaults")
    user.put(entry(61, m_bucket=16))
    write_defaults(user.path_for(GPU, TRITON), dest_dir=defaults, capability="9.0", sm_count=132)
    write_defaults(user.path_for(GPU, TRITON), dest_dir=defaults)  # a later refresh
    doc = json.loads(defaults_path(GPU, defaults).read_text())
    assert (doc["capability"], doc["sm_count"]) == ("9.0", 132)
    c = TuningCache(tmp_path / "empty", defaults_dir=defaults)
    assert c.shipped_gpus("9.0", 132) == [GPU]
    assert c.shipped_gpus("9.0", 114) == [] and c.shipped_gpus("8.0", 132) == []


def test_write_defaults_refuses_bad_source(tmp_path):
    with pytest.raises(ValueError, match="has no tuned entries"):
        write_defaults(tmp_path / "missing.json", dest_dir=tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.warns(TuningCacheWarning, match="JSONDecodeError"):
        with pytest.raises(ValueError, match="has no tuned entries"):
            write_defaults(bad, dest_dir=tmp_path)
    _write_doc(tmp_path / "empty.json", entries=[])
    with pytest.raises(ValueError, match="has no tuned entries"):
        write_defaults(tmp_path / "empty.json", dest_dir=tmp_path)
    assert not list(tmp_path.glob("nvidia*"))


def test_default_cache_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSE24_CACHE_DIR", str(tmp_path / "a"))
    a = default_cache()
    assert a is default_cache() and a.directory == tmp_path / "a"
    monkeypatch.setenv("SPARSE24_CACHE_DIR", str(tmp_path / "b"))
    assert default_cache().directory == tmp_path / "b"
    monkeypatch.delenv("SPARSE24_CACHE_DIR")
    assert cache_mod.cache_dir() == cache_mod.Path.home() / ".cache" / "sparse24"
