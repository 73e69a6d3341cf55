"""Tuned configs: their key, the JSON files they live in, and the one in-memory cache of them.

Key: (GPU name, Triton version, dtype, N, K, M bucket). One JSON format (defaults/README.md), two
kinds of file: the user cache, ``$SPARSE24_CACHE_DIR`` (default ``~/.cache/sparse24``), a file per
(GPU, Triton version), updated under a lock file beside it (``<file>.lock``, the ``filelock``
package): re-read, merged with the new entry, written atomically (temp file + ``os.replace``),
so processes tuning at once keep each other's entries; and the shipped defaults, read-only, a file
per GPU model for any Triton version (an older version's config still launches). A bad or foreign
file (corrupt, nested too deep to parse, other schema) is ignored as a whole, with a
``TuningCacheWarning``.

Which is which: this is the cache of results, written by the search (``sparse24.ops.tune.tune``
through ``sparse24.tuning.autotune``) and read by the lookup ``sparse24.ops.configs.tuned`` when
``linear`` plans a problem; it neither times nor picks configs, and holds none of the op's memos
(``on_change`` tells their owners when to forget them).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from filelock import FileLock

FORMAT = "sparse24-tuning"
SCHEMA_VERSION = 1
CACHE_DIR_ENV = "SPARSE24_CACHE_DIR"
DEFAULTS_DIR = Path(__file__).resolve().parent / "defaults"
# put holds a cache file's lock for one read and one write (milliseconds), so a waiting process
# polls often (filelock's default is 50 ms), and gives up after a minute with filelock.Timeout, an
# OSError: autotune then warns and goes on, rather than hanging on a stuck lock.
LOCK_POLL_S, LOCK_TIMEOUT_S = 0.005, 60
# Buckets tried for a key of bucket b, as multiples of b: b, then nearer before farther (log2),
# on a tie the larger (a config tuned for more rows only wastes part of a tile on small M, while
# a small-M split-K config costs more as M grows). Not further than 4x: there (split-K tuned at
# M=16 for M=4096, say) the launcher's shape heuristic is the better guess.
NEAREST_FIRST = (1, 2, 0.5, 4, 0.25)

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
    return str(dtype).removeprefix("torch.")  # torch.float16 or 'float16' -> 'float16'


def slug(text: str) -> str:
    """A file-name-safe form: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.") or "unnamed"


class TuningKey(NamedTuple):
    """What a tuned config is for. A NamedTuple, not a validating dataclass, because the GEMM
    builds one on every call; ``from_json`` checks the keys read from files."""

    gpu: str  # torch.cuda.get_device_name()
    triton: str
    dtype: str  # 'float16'
    n: int  # weight [N, K], nn.Linear layout
    k: int
    m_bucket: int

    def to_json(self) -> dict[str, Any]:
        return self._asdict()

    @classmethod
    def from_json(cls, data: Any) -> TuningKey:
        if not isinstance(data, dict) or set(data) != set(cls._fields):
            raise ValueError(f"key fields of {data!r} do not match {cls._fields}")
        for name, value in data.items():
            if not (value and isinstance(value, str) if name in cls._fields[:3]
                    else type(value) is int and value >= 1):
                raise ValueError(f"key {name}={value!r} is not a non-empty str / positive int")
        if data["m_bucket"] != m_bucket(data["m_bucket"]):
            raise ValueError(f"key m_bucket {data['m_bucket']} is not a power of two")
        return cls(**data)


def validate_config(config: Any) -> Config:
    """``config`` as a plain dict of str -> int | str. Floats are refused (64.0 is no Triton
    constexpr), and so is bool, so that True never becomes BLOCK_M=1."""
    if not isinstance(config, dict):
        raise ValueError(f"a config must be a dict, got {type(config).__name__}")
    for name, value in config.items():
        if type(name) is not str or type(value) not in (int, str):  # type(True) is bool, not int
            raise ValueError(f"config value {name!r}={value!r} must be an int or a str")
    return dict(config)


def format_config(config: Config) -> str:
    return " ".join(f"{name}={value}" for name, value in config.items())


def current_gpu_name(device: Any = None) -> str:
    """The CUDA name of ``device`` (default: the current device); RuntimeError without CUDA."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device: tuning keys need a GPU name")
    dev = torch.device(f"cuda:{device}" if isinstance(device, int) else device or "cuda")
    if dev.type != "cuda":
        raise ValueError(f"tuning keys need a CUDA device, got {dev}")
    index = torch.cuda.current_device() if dev.index is None else dev.index
    return torch.cuda.get_device_name(index)


def triton_version() -> str:
    import triton

    return triton.__version__


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """One tuned config, with the time of the winner and how many candidates were tried."""

    key: TuningKey
    config: Config
    ms: float | None = None
    n_candidates: int | None = None
    n_rejected: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key.to_json(), "config": dict(self.config), "ms": self.ms,
                "n_candidates": self.n_candidates, "n_rejected": self.n_rejected}

    @classmethod
    def from_json(cls, data: Any) -> CacheEntry:
        if not isinstance(data, dict) or "key" not in data or "config" not in data:
            raise ValueError("an entry must be an object with 'key' and 'config'")
        counts = (data.get(name) for name in ("ms", "n_candidates", "n_rejected"))  # for reports
        return cls(TuningKey.from_json(data["key"]), validate_config(data["config"]), *counts)


def cache_dir() -> Path:
    """``$SPARSE24_CACHE_DIR``, else ``~/.cache/sparse24``; read at each call."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sparse24"


def defaults_path(gpu: str, directory: str | os.PathLike[str] | None = None) -> Path:
    return Path(directory if directory is not None else DEFAULTS_DIR) / f"{slug(gpu)}.json"


def read_file(path: Path, gpu: str | None = None, triton: str | None = None) -> dict[str, Any]:
    """A tuning file's header, with "entries" as {key: entry}; no entries when the file is
    missing or (with a warning) must be ignored. ``gpu``/``triton``, when given, must match the
    header and every entry. Without ``triton`` (shipped defaults) entries are keyed with triton
    "*": any version serves."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not a sparse24 tuning file (no \"format\": \"{FORMAT}\")")
        if doc.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"schema_version {doc.get('schema_version')!r}, this reads "
                             f"{SCHEMA_VERSION}")
        for name, want in (("gpu", gpu), ("triton", triton)):
            if want is not None and doc.get(name) != want:
                raise ValueError(f"written for {name} {doc.get(name)!r}, this is {want!r}")
        entries = [CacheEntry.from_json(raw) for raw in doc["entries"]]
        if any(e.key.gpu != doc["gpu"] or triton not in (None, e.key.triton) for e in entries):
            raise ValueError("an entry is keyed for another GPU or Triton version")
    except (FileNotFoundError, NotADirectoryError):  # nothing tuned yet
        return {"entries": {}}
    # JSONDecodeError is a ValueError; RecursionError: json recurses once per nesting level, so
    # '[' * 100000 exhausts the stack before it can be found to be no tuning file.
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        warnings.warn(f"sparse24 tuning: ignoring {path}: {type(exc).__name__}: {exc}",
                      TuningCacheWarning, stacklevel=2)
        return {"entries": {}}
    return {**doc, "entries": {e.key if triton else e.key._replace(triton="*"): e for e in entries}}


def write_file(path: Path, header: dict[str, Any], entries: dict[TuningKey, CacheEntry]) -> None:
    """Write atomically: a temp file in the same directory (``os.replace`` is atomic only within
    one file system), then replace. Entries sorted by shape, so shipped files diff cleanly."""
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
    """The user cache and the shipped defaults, each file read once. ``lookup``: for each bucket
    of ``NEAREST_FIRST`` the user's entry, else the shipped one; a few dict gets per call."""

    def __init__(self, directory: str | os.PathLike[str] | None = None,
                 defaults_dir: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else cache_dir()
        self.defaults_dir = Path(defaults_dir) if defaults_dir is not None else DEFAULTS_DIR
        # (gpu, triton): the user file's entries, (gpu, None): the shipped defaults', each as
        # {(dtype, n, k): {m bucket: entry}}, so that an untuned shape costs one miss.
        self._entries: dict[tuple[str, str | None], dict[tuple, dict[int, CacheEntry]]] = {}
        self._shipped: list[tuple[Any, Any, str]] | None = None  # (capability, SM count, gpu)

    def path_for(self, gpu: str, triton: str) -> Path:
        return self.directory / f"{slug(gpu)}__triton-{slug(triton)}.json"

    def _of(self, gpu: str, triton: str | None) -> dict[tuple, dict[int, CacheEntry]]:
        index = self._entries.get((gpu, triton))
        if index is None:
            path = self.path_for(gpu, triton) if triton else defaults_path(gpu, self.defaults_dir)
            entries = read_file(path, gpu, triton)["entries"]
            index = self._entries[gpu, triton] = _index(entries.values())
        return index

    def lookup(self, key: TuningKey) -> CacheEntry | None:
        mine = self._of(key.gpu, key.triton).get(key[2:5], {})
        shipped = self._of(key.gpu, None).get(key[2:5], {})
        for ratio in NEAREST_FIRST if mine or shipped else ():
            found = mine.get(int(key.m_bucket * ratio)) or shipped.get(int(key.m_bucket * ratio))
            if found is not None:
                return found  # its key says which bucket it was tuned for
        return None

    def shipped_gpus(self, capability: str, sm_count: int) -> list[str]:
        """GPUs whose shipped defaults declare this compute capability and SM count."""
        if self._shipped is None:  # the directory is listed once, not on every call
            headers = [read_file(p) for p in sorted(self.defaults_dir.glob("*.json"))]
            self._shipped = [(h.get("capability"), h.get("sm_count"), h["gpu"])
                             for h in headers if "gpu" in h]
        return [gpu for cap, sms, gpu in self._shipped if (cap, sms) == (capability, sm_count)]

    def put(self, entry: CacheEntry) -> None:
        """Keep ``entry`` and merge it into its file: under the file's lock, re-read it (other
        processes' entries stay), add this cache's entries, write. OSError when the file cannot
        be locked or written; memory keeps the entry anyway."""
        key = entry.key
        entry = dataclasses.replace(entry, config=validate_config(entry.config))
        mine = self._of(key.gpu, key.triton)
        mine.setdefault(key[2:5], {})[key.m_bucket] = entry  # first, so that an OSError keeps it
        changed()  # the next lookup must see it
        path = self.path_for(key.gpu, key.triton)
        path.parent.mkdir(parents=True, exist_ok=True)  # the lock file goes there too
        # Without the lock, a process writing between our read and our replace loses its entries.
        lock = FileLock(path.with_name(path.name + ".lock"), timeout=LOCK_TIMEOUT_S)
        with lock.acquire(poll_interval=LOCK_POLL_S):
            merged = read_file(path, key.gpu, key.triton)["entries"]
            merged.update({e.key: e for bucket in mine.values() for e in bucket.values()})
            self._entries[key.gpu, key.triton] = _index(merged.values())
            changed()  # again: other processes' entries just arrived too
            write_file(path, {"gpu": key.gpu, "triton": key.triton}, merged)


def _index(entries: Iterable[CacheEntry]) -> dict[tuple, dict[int, CacheEntry]]:
    index: dict[tuple, dict[int, CacheEntry]] = {}
    for e in entries:
        index.setdefault(e.key[2:5], {})[e.key.m_bucket] = e
    return index


# Functions that forget what their owners memoized from the tuned configs (the op's lookups and
# launch plans, sparse24.ops.configs and sparse24.ops.gemm): the memos stay with the op, and this
# layer only says when they may be stale.
_forgetters: list[Callable[[], None]] = []


def on_change(forget: Callable[[], None]) -> Callable[[], None]:
    """Have ``forget()`` called whenever the tuned configs may change: a ``put`` (on any cache),
    or ``default_cache`` starting a new cache (``$SPARSE24_CACHE_DIR`` changed)."""
    _forgetters.append(forget)
    return forget


_generation = 0  # how many times the tuned configs may have changed


def generation() -> int:
    """A number that grows whenever ``changed`` runs: a memo computed from the tuned configs is
    stored only if the generation read before computing it is still current (another thread's
    ``put`` in between would otherwise leave a stale answer behind)."""
    return _generation


def changed() -> None:
    global _generation
    _generation += 1
    for forget in _forgetters:
        forget()


_default_cache: tuple[str | None, TuningCache] | None = None  # ($SPARSE24_CACHE_DIR, cache)


def default_cache() -> TuningCache:
    """The process-wide cache of the current ``cache_dir()`` (a new one when it changed)."""
    global _default_cache
    env = os.environ.get(CACHE_DIR_ENV)  # compared as text: no Path built on every GEMM call
    if _default_cache is None or _default_cache[0] != env:
        _default_cache = (env, TuningCache())
        changed()
    return _default_cache[1]


def write_defaults(source: str | os.PathLike[str], dest_dir: str | os.PathLike[str] | None = None,
                   merge: bool = True, **header: Any) -> Path:
    """Copy a user cache file's entries into ``<dest_dir>/<gpu slug>.json`` (default: the shipped
    defaults). With ``merge``, entries of other shapes there are kept, and so are ``capability``
    and ``sm_count`` unless ``header`` gives them. ValueError for a bad or empty source."""
    new = read_file(Path(source))  # a bad file warns, and has no entries
    if not new["entries"]:
        raise ValueError(f"{source} has no tuned entries; nothing written")
    dest = defaults_path(new["gpu"], dest_dir)
    old = read_file(dest, new["gpu"], None) if merge else {"entries": {}}
    keep = {name: old[name] for name in ("capability", "sm_count") if name in old}
    write_file(dest, {"gpu": new["gpu"], "triton": new["triton"], **keep, **header},
               {**old["entries"], **new["entries"]})  # keyed by shape: the source wins
    return dest
