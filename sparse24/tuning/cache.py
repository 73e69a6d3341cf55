"""Tuned configs: their key, the JSON files they live in, and the one in-memory cache of them.

A key is (GPU name, Triton version, dtype, N, K, M bucket). Two kinds of file, one format::

    {"format": "sparse24-tuning", "schema_version": 1, "gpu": "NVIDIA H100 80GB HBM3",
     "triton": "3.6.0", "entries": [{"key": {...}, "config": {...}, "ms": 0.0123,
                                     "n_candidates": 24, "n_rejected": 3}, ...]}

- the user cache, ``$SPARSE24_CACHE_DIR`` (default ``~/.cache/sparse24``), one file per (GPU,
  Triton version): ``<gpu slug>__triton-<version>.json``. Written atomically (a temp file in the
  same directory, then ``os.replace``), so a reader sees the old file or the new one, never a part.
  No lock: two processes tuning at once may drop each other's newest entry, which is then tuned
  again; the file stays valid.
- shipped defaults, ``sparse24/tuning/defaults/<gpu slug>.json``, read-only package data, one per
  GPU model whatever the Triton version (an older version's config is still a valid launch and a
  better first guess than a heuristic; the user cache wins over it). Their header may also carry
  ``capability`` ("9.0") and ``sm_count``, which let another GPU of the same kind use them.

A file that is not valid JSON, has another format or schema version, or was written for another
GPU (user cache: or another Triton version) is ignored as a whole, with a ``TuningCacheWarning``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

FORMAT = "sparse24-tuning"
SCHEMA_VERSION = 1
CACHE_DIR_ENV = "SPARSE24_CACHE_DIR"
DEFAULTS_DIR = Path(__file__).resolve().parent / "defaults"
# A config tuned for another M bucket is used up to this factor away; further off (say split-K
# tuned at M=16 for M=4096) the launcher's shape heuristic is the better guess.
MAX_BUCKET_RATIO = 4

Config = dict[str, int | str]


class TuningCacheWarning(UserWarning):
    """A tuning file was ignored (corrupt, foreign, other schema) or could not be written."""


def m_bucket(m: int) -> int:
    """The smallest power of two >= m. Block sizes are powers of two, so the best config changes
    when M crosses one; rounding up means the config of bucket b was tuned at its largest M."""
    if isinstance(m, bool) or not isinstance(m, int):
        raise TypeError(f"m must be an int, got {type(m).__name__}")
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    return 1 << (m - 1).bit_length()


def dtype_name(dtype: Any) -> str:
    """'float16' for ``torch.float16`` or for 'float16'."""
    return str(dtype).removeprefix("torch.")


def slug(text: str) -> str:
    """A file-name-safe form: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.") or "unnamed"


class TuningKey(NamedTuple):
    """What a tuned config is for. A NamedTuple (not a validating dataclass) because the GEMM
    builds one on every call; keys read from files are checked by ``from_json``."""

    gpu: str  # torch.cuda.get_device_name()
    triton: str
    dtype: str  # 'float16'
    n: int  # weight [N, K], nn.Linear layout
    k: int
    m_bucket: int

    @classmethod
    def for_problem(cls, n: int, k: int, m: int, dtype: Any, device: Any = None) -> TuningKey:
        return cls(current_gpu_name(device), triton_version(), dtype_name(dtype), n, k, m_bucket(m))

    def to_json(self) -> dict[str, Any]:
        return self._asdict()

    @classmethod
    def from_json(cls, data: Any) -> TuningKey:
        if not isinstance(data, dict) or set(data) != set(cls._fields):
            raise ValueError(f"key fields {sorted(data) if isinstance(data, dict) else data!r} "
                             f"do not match {sorted(cls._fields)}")
        for name in cls._fields:
            value = data[name]
            ok = value and isinstance(value, str) if name in ("gpu", "triton", "dtype") else (
                type(value) is int and value >= 1)
            if not ok:
                raise ValueError(f"key field {name}={value!r} is not a non-empty str / positive int")
        if data["m_bucket"] & (data["m_bucket"] - 1):
            raise ValueError(f"key m_bucket {data['m_bucket']} is not a power of two")
        return cls(**data)


def validate_config(config: Any) -> Config:
    """``config`` as a plain dict, after checking it is str -> int | str. Floats are refused (64.0
    is no Triton constexpr), and so is bool, so that True never becomes BLOCK_M=1."""
    if not isinstance(config, dict):
        raise ValueError(f"a config must be a dict, got {type(config).__name__}")
    for name, value in config.items():
        if not isinstance(name, str) or isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"config value {name!r}={value!r} must be an int or a str")
    return dict(config)


def format_config(config: Config) -> str:
    return " ".join(f"{name}={value}" for name, value in config.items())


def current_gpu_name(device: Any = None) -> str:
    """The CUDA name of ``device`` (default: the current device); RuntimeError without CUDA."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device: tuning keys need a GPU name")
    dev = torch.device("cuda", device) if isinstance(device, int) else torch.device(device or "cuda")
    if dev.type != "cuda":
        raise ValueError(f"tuning keys need a CUDA device, got {dev}")
    return _gpu_name(torch.cuda.current_device() if dev.index is None else dev.index)


@functools.cache  # the name of a device cannot change while the process runs
def _gpu_name(index: int) -> str:
    import torch

    return torch.cuda.get_device_name(index)


def triton_version() -> str:
    import triton

    return triton.__version__


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """One tuned config; ``source`` ("user", "defaults", "nearest:user", "nearest:defaults") says
    where a lookup found it and is not written to disk."""

    key: TuningKey
    config: Config
    ms: float | None = None
    n_candidates: int | None = None
    n_rejected: int | None = None
    source: str = dataclasses.field(default="user", compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key.to_json(), "config": dict(self.config), "ms": self.ms,
                "n_candidates": self.n_candidates, "n_rejected": self.n_rejected}

    @classmethod
    def from_json(cls, data: Any, source: str) -> CacheEntry:
        if not isinstance(data, dict) or "key" not in data or "config" not in data:
            raise ValueError("an entry must be an object with 'key' and 'config'")
        ms = data.get("ms")
        if ms is not None and (type(ms) not in (int, float) or not math.isfinite(ms)):
            raise ValueError(f"entry 'ms' must be a finite number or null, got {ms!r}")
        counts = {name: data.get(name) for name in ("n_candidates", "n_rejected")}
        if any(v is not None and type(v) is not int for v in counts.values()):
            raise ValueError(f"entry counts must be ints or null, got {counts}")
        return cls(TuningKey.from_json(data["key"]), validate_config(data["config"]),
                   None if ms is None else float(ms), source=source, **counts)


def cache_dir() -> Path:
    """``$SPARSE24_CACHE_DIR``, else ``~/.cache/sparse24``; read at each call."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sparse24"


def defaults_path(gpu: str, directory: str | os.PathLike[str] | None = None) -> Path:
    return Path(directory if directory is not None else DEFAULTS_DIR) / f"{slug(gpu)}.json"


def load(path: Path, gpu: str | None, triton: str | None, source: str) -> dict[str, Any]:
    """A tuning file's header, with its entries under "entries" as {key: entry}; raises OSError
    or ValueError. ``gpu``/``triton``, when given, must match the header and every entry.
    Without ``triton`` (shipped defaults) entries are keyed with triton "*": any version serves."""
    text = path.read_text(encoding="utf-8")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"not a sparse24 tuning file (no \"format\": \"{FORMAT}\")")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"schema_version {doc.get('schema_version')!r}, this sparse24 "
                         f"reads {SCHEMA_VERSION}")
    for field, want in (("gpu", gpu), ("triton", triton)):
        if want is not None and doc.get(field) != want:
            raise ValueError(f"written for {field} {doc.get(field)!r}, this is {want!r}")
    if not isinstance(doc.get("entries"), list):
        raise ValueError("'entries' must be a list")
    entries = [CacheEntry.from_json(raw, source) for raw in doc["entries"]]
    if any(e.key.gpu != doc["gpu"] or triton not in (None, e.key.triton) for e in entries):
        raise ValueError("an entry is keyed for another GPU or Triton version")
    by_key = {e.key if triton else e.key._replace(triton="*"): e for e in entries}
    return {**doc, "entries": by_key}


def read_file(path: Path, gpu: str | None, triton: str | None, source: str) -> dict[str, Any]:
    """``load``, or no entries when the file is missing or (with a warning) must be ignored."""
    try:
        return load(path, gpu, triton, source)
    except (FileNotFoundError, NotADirectoryError):  # nothing tuned yet
        pass
    except (OSError, ValueError) as exc:
        warnings.warn(f"sparse24 tuning: ignoring {path}: {exc}", TuningCacheWarning, stacklevel=2)
    return {"entries": {}}


def write_file(path: Path, header: dict[str, Any], entries: dict[TuningKey, CacheEntry]) -> None:
    """Write a tuning file atomically: temp file in the same directory (``os.replace`` is atomic
    only within one file system), then replace. Entries sorted so shipped files diff cleanly."""
    doc = {"format": FORMAT, "schema_version": SCHEMA_VERSION, **header,
           "entries": [e.to_json() for e in sorted(entries.values(), key=lambda e: e.key[2:])]}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(doc, indent=1) + "\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a shipped file must be readable by all
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


class TuningCache:
    """The user cache and the shipped defaults, each file read once and kept in memory.

    ``lookup``: the user cache's entry of the key, else the defaults' (any Triton version), else
    the same in the nearest M bucket at most ``MAX_BUCKET_RATIO`` away, on a tie the larger (a
    config tuned for more rows only wastes part of a tile on small M, while a small-M split-K
    config costs more as M grows). None: the caller uses its heuristic. A handful of dict
    look-ups, no scan, so the GEMM can ask on every call without a memo in front.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None,
                 defaults_dir: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else cache_dir()
        self.defaults_dir = Path(defaults_dir) if defaults_dir is not None else DEFAULTS_DIR
        # (gpu, triton): the user file's entries; (gpu, None): the shipped defaults'; each as
        # {(dtype, n, k): {m bucket: entry}}, so that a look-up of an untuned shape is one miss.
        self._entries: dict[tuple[str, str | None], dict[tuple, dict[int, CacheEntry]]] = {}
        self._shipped: list[tuple[Any, Any, str]] | None = None  # (capability, SM count, gpu)
        self._lock = threading.Lock()  # put() is read-merge-write

    def path_for(self, gpu: str, triton: str) -> Path:
        return self.directory / f"{slug(gpu)}__triton-{slug(triton)}.json"

    def clear_memory(self) -> None:
        """Forget the files read so far (after another process wrote them)."""
        self._entries.clear()
        self._shipped = None

    def _of(self, gpu: str, triton: str | None) -> dict[tuple, dict[int, CacheEntry]]:
        index = self._entries.get((gpu, triton))
        if index is None:
            path = self.path_for(gpu, triton) if triton else defaults_path(gpu, self.defaults_dir)
            entries = read_file(path, gpu, triton, "user" if triton else "defaults")["entries"]
            index = self._entries[gpu, triton] = _index(entries.values())
        return index

    def get(self, key: TuningKey) -> CacheEntry | None:
        """The user cache's entry of exactly ``key``."""
        return self._of(key.gpu, key.triton).get(key[2:5], {}).get(key.m_bucket)

    def lookup(self, key: TuningKey) -> CacheEntry | None:
        mine = self._of(key.gpu, key.triton).get(key[2:5])
        shipped = self._of(key.gpu, None).get(key[2:5])
        if not (mine or shipped):
            return None
        for ratio in _NEAREST_FIRST:
            found = (mine or {}).get(int(key.m_bucket * ratio)) or (shipped or {}).get(
                int(key.m_bucket * ratio))
            if found is not None:
                return found if ratio == 1 else dataclasses.replace(
                    found, source=f"nearest:{found.source}")
        return None

    def shipped_gpus(self, capability: str, sm_count: int) -> list[str]:
        """GPUs whose shipped defaults declare this compute capability and SM count."""
        if self._shipped is None:  # the directory is listed once, not on every call
            headers = [read_file(p, None, None, "defaults")
                       for p in sorted(self.defaults_dir.glob("*.json"))]
            self._shipped = [(h.get("capability"), h.get("sm_count"), h["gpu"])
                             for h in headers if "gpu" in h]
        return [gpu for cap, sms, gpu in self._shipped if (cap, sms) == (capability, sm_count)]

    def put(self, entry: CacheEntry) -> None:
        """Keep ``entry`` in memory and merge it into its user cache file (re-read first, so other
        processes' entries are kept). Raises OSError when the file cannot be written; the entry
        stays in memory regardless."""
        key = entry.key
        entry = dataclasses.replace(entry, config=validate_config(entry.config), source="user")
        path = self.path_for(key.gpu, key.triton)
        with self._lock:
            merged = read_file(path, key.gpu, key.triton, "user")["entries"]
            merged.update({e.key: e for bucket in self._of(key.gpu, key.triton).values()
                           for e in bucket.values()})
            merged[key] = entry
            self._entries[key.gpu, key.triton] = _index(merged.values())  # even if writing fails
            write_file(path, {"gpu": key.gpu, "triton": key.triton}, merged)


def _index(entries: Iterable[CacheEntry]) -> dict[tuple, dict[int, CacheEntry]]:
    index: dict[tuple, dict[int, CacheEntry]] = {}
    for e in entries:
        index.setdefault(e.key[2:5], {})[e.key.m_bucket] = e
    return index


# Buckets tried for a key of bucket b, as multiples of b: b itself, then nearer before farther
# (log2 distance), the larger on a tie, up to MAX_BUCKET_RATIO.
_NEAREST_FIRST = (1, 2, 0.5, 4, 0.25)


_default_cache: tuple[str | None, TuningCache] | None = None  # ($SPARSE24_CACHE_DIR, cache)


def default_cache() -> TuningCache:
    """The process-wide cache of the current ``cache_dir()`` (a new one when it changed)."""
    global _default_cache
    env = os.environ.get(CACHE_DIR_ENV)  # compared as text: cheap enough for every GEMM call
    if _default_cache is None or _default_cache[0] != env:
        _default_cache = (env, TuningCache())
    return _default_cache[1]


def write_defaults(source: str | os.PathLike[str], dest_dir: str | os.PathLike[str] | None = None,
                   merge: bool = True, **header: Any) -> Path:
    """Copy a user cache file's entries into ``<dest_dir>/<gpu slug>.json`` (default: this
    package's shipped defaults). With ``merge``, entries of other shapes already there are kept,
    and so is their header's ``capability`` / ``sm_count`` unless ``header`` gives them. Raises
    ValueError for a missing, invalid or empty source rather than ship an empty file."""
    src = Path(source)
    try:
        new = load(src, None, None, "defaults")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{src} is not a valid sparse24 tuning file: {exc}") from None
    if not new["entries"]:
        raise ValueError(f"{src} has no entries; tune some shapes first")
    dest = defaults_path(new["gpu"], dest_dir)
    old = read_file(dest, new["gpu"], None, "defaults") if merge else {"entries": {}}
    keep = {name: old[name] for name in ("capability", "sm_count") if name in old}
    write_file(dest, {"gpu": new["gpu"], "triton": new["triton"], **keep, **header},
               {**old["entries"], **new["entries"]})  # keyed by shape: the source wins
    return dest
