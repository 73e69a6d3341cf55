"""Tuned configs on disk: a JSON file per (GPU, Triton version), plus shipped per-GPU defaults.

File format (both the user cache and the shipped defaults)::

    {
      "format": "sparse24-tuning",
      "schema_version": 1,
      "gpu": "NVIDIA H100 80GB HBM3",
      "triton": "3.6.0",
      "entries": [
        {"key": {"gpu": ..., "triton": ..., "dtype": "float16", "n": 768, "k": 3072,
                 "m_bucket": 64},
         "config": {"BLOCK_M": 64, ...}, "ms": 0.0123, "n_candidates": 24, "n_rejected": 3},
        ...
      ]
    }

User cache: ``$SPARSE24_CACHE_DIR`` (default ``~/.cache/sparse24``), file
``<gpu slug>__triton-<version>.json``. Writes take an exclusive ``fcntl.flock`` on
``<file>.lock``, re-read the file, merge, and replace it atomically (temp file in the same
directory + ``os.replace``), so readers never see a partial file and two processes tuning different
shapes both keep their entries. Readers take no lock: ``os.replace`` is atomic.

Shipped defaults: ``sparse24/tuning/defaults/<gpu slug>.json``, read-only, one file per GPU model
whatever the Triton version (a config tuned under another Triton version is still a valid launch,
and a better first guess than a heuristic; the user cache, which is per version, wins over it).

A file that is not valid JSON, has another format or schema version, or was written for another
GPU (or, for the user cache, another Triton version) is ignored as a whole with a
``TuningCacheWarning`` naming it. Nothing is ever pickled.

Lookup order (``TuningCache.lookup``):
  1. in-memory results of earlier lookups and ``put``s in this process;
  2. the user cache, exact key;
  3. the shipped defaults, exact key (gpu, dtype, N, K, M bucket; Triton version not compared);
  4. the nearest M bucket with the same (gpu, dtype, N, K) in the user cache or the defaults:
     smallest distance |log2(bucket) - log2(wanted)|; on a tie the *larger* bucket (a config tuned
     for more rows only wastes part of a tile on small M, which is memory-bound anyway, whereas a
     small-M config may use split-K, whose extra reduction pass grows with M); then the user cache
     before the defaults. No distance limit: any tuned config of the same shape is a valid launch.
     The entry returned keeps the key it was tuned for, and ``source`` says "nearest:user" or
     "nearest:defaults", so a caller may prefer its heuristic when the bucket is far away;
  5. None: the caller falls back to its heuristic.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparse24.tuning.keys import Config, TuningKey, slug, validate_config

try:  # POSIX only; elsewhere writes stay atomic but concurrent writers may drop entries.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

FORMAT = "sparse24-tuning"
SCHEMA_VERSION = 1
CACHE_DIR_ENV = "SPARSE24_CACHE_DIR"
DEFAULTS_DIR = Path(__file__).resolve().parent / "defaults"

# (dtype, n, k, m_bucket) -> entry: the entries of one file, whose gpu (and triton) are fixed.
_FileEntries = dict[tuple[str, int, int, int], "CacheEntry"]


class TuningCacheWarning(UserWarning):
    """A tuning file was ignored (corrupt, foreign, other schema) or could not be written."""


@dataclass(frozen=True)
class CacheEntry:
    """One tuned config and how it was found.

    ``ms`` is the median time of the winner, ``n_candidates``/``n_rejected`` how many configs were
    tried and how many failed their correctness check or did not compile. ``source`` is where a
    lookup found it: "memory", "user", "defaults", "nearest:user" or "nearest:defaults"; it is not
    written to disk.
    """

    key: TuningKey
    config: Config
    ms: float | None = None
    n_candidates: int | None = None
    n_rejected: int | None = None
    source: str = field(default="memory", compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key.to_json(),
            "config": dict(self.config),
            "ms": self.ms,
            "n_candidates": self.n_candidates,
            "n_rejected": self.n_rejected,
        }

    @classmethod
    def from_json(cls, data: Any, source: str = "memory") -> CacheEntry:
        """Parse one entry; raises ValueError when it does not follow the schema."""
        if not isinstance(data, dict):
            raise ValueError(f"an entry must be a JSON object, got {type(data).__name__}")
        if "key" not in data or "config" not in data:
            raise ValueError("an entry needs 'key' and 'config'")
        ms = data.get("ms")
        if ms is not None and (isinstance(ms, bool) or not isinstance(ms, (int, float))
                               or not math.isfinite(ms)):
            raise ValueError(f"entry 'ms' must be a finite number or null, got {ms!r}")
        counts = {}
        for name in ("n_candidates", "n_rejected"):
            value = data.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"entry {name!r} must be an int or null, got {value!r}")
            counts[name] = value
        return cls(
            key=TuningKey.from_json(data["key"]),
            config=validate_config(data["config"]),
            ms=None if ms is None else float(ms),
            source=source,
            **counts,
        )


# ---------------------------------------------------------------------------------------------
# Paths


def cache_dir() -> Path:
    """The user cache directory: ``$SPARSE24_CACHE_DIR``, else ``~/.cache/sparse24`` (read at call
    time, so a test or the CLI can redirect it)."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sparse24"


def user_cache_path(gpu: str, triton: str, directory: str | os.PathLike[str] | None = None) -> Path:
    """``<dir>/<gpu slug>__triton-<version>.json``: one file per (GPU, Triton version)."""
    base = Path(directory) if directory is not None else cache_dir()
    return base / f"{slug(gpu)}__triton-{slug(triton)}.json"


def defaults_path(gpu: str, directory: str | os.PathLike[str] | None = None) -> Path:
    """``<defaults dir>/<gpu slug>.json``: shipped configs for one GPU model."""
    base = Path(directory) if directory is not None else DEFAULTS_DIR
    return base / f"{slug(gpu)}.json"


# ---------------------------------------------------------------------------------------------
# Reading and writing one file


def _warn(path: Path, why: str) -> None:
    warnings.warn(f"sparse24 tuning: ignoring {path}: {why}", TuningCacheWarning, stacklevel=3)


def read_file(
    path: Path, gpu: str | None = None, triton: str | None = None, source: str = "user"
) -> _FileEntries:
    """The entries of one tuning file, or {} if it is missing or must be ignored.

    ``gpu``/``triton``, when given, must match the file's header and every entry's key; a
    mismatch, bad JSON or another format/schema version ignores the whole file with a warning.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):  # no file yet: nothing tuned
        return {}
    except OSError as exc:
        _warn(path, f"cannot read it ({exc})")
        return {}
    try:
        return _parse(text, gpu, triton, source)
    except ValueError as exc:
        _warn(path, str(exc))
        return {}


def _parse(text: str, gpu: str | None, triton: str | None, source: str) -> _FileEntries:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"not a sparse24 tuning file (no \"format\": \"{FORMAT}\")")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"schema_version {data.get('schema_version')!r}, this sparse24 reads {SCHEMA_VERSION}"
        )
    if gpu is not None and data.get("gpu") != gpu:
        raise ValueError(f"tuned for GPU {data.get('gpu')!r}, this GPU is {gpu!r}")
    if triton is not None and data.get("triton") != triton:
        raise ValueError(f"tuned under Triton {data.get('triton')!r}, this is Triton {triton!r}")
    if not isinstance(data.get("entries"), list):
        raise ValueError("'entries' must be a list")
    entries: _FileEntries = {}
    for raw in data["entries"]:
        entry = CacheEntry.from_json(raw, source=source)
        if entry.key.gpu != data["gpu"]:
            raise ValueError(f"an entry is keyed for GPU {entry.key.gpu!r}, not {data['gpu']!r}")
        if triton is not None and entry.key.triton != triton:
            raise ValueError(f"an entry is keyed for Triton {entry.key.triton!r}, not {triton!r}")
        entries[entry.key.shape_id()] = entry
    return entries


def _dump(gpu: str, triton: str, entries: Mapping[Any, CacheEntry]) -> str:
    # Sorted so that shipped defaults diff cleanly in review.
    ordered = sorted(entries.values(), key=lambda e: e.key.shape_id())
    doc = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "gpu": gpu,
        "triton": triton,
        "entries": [e.to_json() for e in ordered],
    }
    return json.dumps(doc, indent=1) + "\n"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a part.

    The temp file lives in the same directory because ``os.replace`` is only atomic within one
    file system; it is removed if anything fails before the replace.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (a separate file, since ``path`` itself gets
    replaced and a lock on a replaced inode protects nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a+") as lock:
        if fcntl is not None:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def merge_into_file(
    path: Path, gpu: str, triton: str, new: Mapping[Any, CacheEntry], check_triton: bool = True
) -> _FileEntries:
    """Under the file lock: read ``path``, add/replace ``new`` entries, write it back atomically.

    Returns the merged entries. An existing file that must be ignored (corrupt, foreign) is
    replaced, after the warning from reading it.
    """
    with file_lock(path):
        merged = read_file(path, gpu, triton if check_triton else None)
        for entry in new.values():
            merged[entry.key.shape_id()] = entry
        atomic_write_text(path, _dump(gpu, triton, merged))
    return merged


# ---------------------------------------------------------------------------------------------
# The cache


class TuningCache:
    """In-memory view of the user cache and the shipped defaults, with the lookup order above.

    Files are read once per (gpu, triton) and kept; ``put`` re-reads and merges under the lock, so
    entries written meanwhile by other processes are picked up then (or after ``clear_memory``).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        defaults_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.directory = Path(directory) if directory is not None else cache_dir()
        self.defaults_dir = Path(defaults_dir) if defaults_dir is not None else DEFAULTS_DIR
        self._lock = threading.RLock()
        self._user: dict[tuple[str, str], _FileEntries] = {}
        self._defaults: dict[str, _FileEntries] = {}
        self._resolved: dict[TuningKey, CacheEntry | None] = {}

    def path_for(self, gpu: str, triton: str) -> Path:
        return user_cache_path(gpu, triton, self.directory)

    def clear_memory(self) -> None:
        """Forget everything read or resolved so far; the next lookup re-reads the files."""
        with self._lock:
            self._user.clear()
            self._defaults.clear()
            self._resolved.clear()

    def _user_entries(self, gpu: str, triton: str) -> _FileEntries:
        with self._lock:
            if (gpu, triton) not in self._user:
                self._user[(gpu, triton)] = read_file(self.path_for(gpu, triton), gpu, triton)
            return self._user[(gpu, triton)]

    def _default_entries(self, gpu: str) -> _FileEntries:
        with self._lock:
            if gpu not in self._defaults:
                path = defaults_path(gpu, self.defaults_dir)
                self._defaults[gpu] = read_file(path, gpu, None, source="defaults")
            return self._defaults[gpu]

    def get(self, key: TuningKey) -> CacheEntry | None:
        """The user-cache entry of exactly ``key`` (no defaults, no nearest bucket)."""
        return self._user_entries(key.gpu, key.triton).get(key.shape_id())

    def lookup(self, key: TuningKey) -> CacheEntry | None:
        """The config to launch for ``key``, following the lookup order in the module docstring."""
        with self._lock:
            if key in self._resolved:
                return self._resolved[key]
            found = self._resolve(key)
            self._resolved[key] = found
            return found

    def _resolve(self, key: TuningKey) -> CacheEntry | None:
        user = self._user_entries(key.gpu, key.triton)
        defaults = self._default_entries(key.gpu)
        sid = key.shape_id()
        if sid in user:
            return user[sid]
        if sid in defaults:
            return defaults[sid]
        return _nearest(key, user, defaults)

    def put(self, entry: CacheEntry, persist: bool = True) -> None:
        """Record ``entry`` in memory and, when ``persist``, merge it into the user cache file.

        Raises OSError if the file cannot be written; the in-memory entry is kept regardless.
        """
        key = entry.key
        entry = dataclasses.replace(entry, config=validate_config(entry.config), source="user")
        with self._lock:
            user = self._user_entries(key.gpu, key.triton)
            user[key.shape_id()] = entry
            # Results resolved before may have been defaults or a nearer bucket: recompute lazily.
            self._resolved.clear()
            if persist:
                merged = merge_into_file(self.path_for(key.gpu, key.triton), key.gpu, key.triton,
                                         {key.shape_id(): entry})
                user.update(merged)


def _nearest(key: TuningKey, user: _FileEntries, defaults: _FileEntries) -> CacheEntry | None:
    target = math.log2(key.m_bucket)
    best: tuple[float, int, int] | None = None
    chosen: CacheEntry | None = None
    pools = ((user, "nearest:user"), (defaults, "nearest:defaults"))
    for rank, (entries, source) in enumerate(pools):
        for entry in entries.values():
            k = entry.key
            if (k.dtype, k.n, k.k) != (key.dtype, key.n, key.k):
                continue
            # Smaller is better: log distance, then larger bucket, then user before defaults.
            score = (abs(math.log2(k.m_bucket) - target), -k.m_bucket, rank)
            if best is None or score < best:
                best = score
                chosen = dataclasses.replace(entry, source=source)
    return chosen


# ---------------------------------------------------------------------------------------------
# Process-wide cache and shipped defaults


_default_cache: TuningCache | None = None
_default_cache_lock = threading.Lock()


def default_cache() -> TuningCache:
    """The process-wide cache for the current ``cache_dir()`` (rebuilt if the directory changed)."""
    global _default_cache
    with _default_cache_lock:
        if _default_cache is None or _default_cache.directory != cache_dir():
            _default_cache = TuningCache()
        return _default_cache


def lookup(key: TuningKey) -> CacheEntry | None:
    """``default_cache().lookup(key)``: what a GEMM launcher calls before its heuristic."""
    return default_cache().lookup(key)


def write_defaults(
    source: str | os.PathLike[str],
    dest_dir: str | os.PathLike[str] | None = None,
    merge: bool = True,
) -> Path:
    """Write (or refresh) the shipped defaults of a GPU from a user cache file.

    ``source`` is a user cache file (e.g. ``TuningCache().path_for(gpu, triton)`` after tuning);
    its GPU names the output ``<dest_dir>/<gpu slug>.json`` (default: this package's
    ``tuning/defaults``). With ``merge``, entries already in the defaults that the source does not
    have are kept (source wins on the same dtype/N/K/bucket). Raises ValueError when the source is
    missing or invalid, rather than shipping an empty file.
    """
    src = Path(source)
    try:
        text = src.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read tuning file {src}: {exc}") from None
    try:
        data = json.loads(text)
        gpu = data["gpu"] if isinstance(data, dict) else None
        if not isinstance(gpu, str):
            raise ValueError("no 'gpu' in the header")
        new = _parse(text, gpu, None, "defaults")
    except (ValueError, KeyError) as exc:
        raise ValueError(f"{src} is not a valid sparse24 tuning file: {exc}") from None
    if not new:
        raise ValueError(f"{src} has no entries; tune some shapes first")
    dest = defaults_path(gpu, dest_dir)
    # No lock file here: this is a one-off developer step, and a stray .lock file inside the
    # package directory would show up in git.
    merged = read_file(dest, gpu, None, "defaults") if merge else {}
    merged.update(new)
    atomic_write_text(dest, _dump(gpu, data.get("triton") or "unknown", merged))
    return dest
