"""Pick the fastest *correct* config among candidates, and remember it.

Kernel-agnostic: the caller supplies ``run(config)`` (launch the kernel on fixed inputs) and
``check(config)`` (launch it once and compare with a reference; None when it matches, else a text
saying how it differs). Every candidate is checked before anything is timed, so a config that is
fast because it computes the wrong thing (a bad split-K reduction, a tile that skips a remainder)
can never win.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sparse24.tuning.cache import CacheEntry, TuningCache, TuningCacheWarning, default_cache
from sparse24.tuning.keys import Config, TuningKey, format_config, validate_config

# A timer takes a zero-argument callable and returns its time in milliseconds.
Timer = Callable[[Callable[[], Any]], float]

# do_bench budget per candidate: 25 ms of warm-up and 100 ms of repetitions, i.e. about 4 s of
# timing for a 30-candidate sweep of one shape, and hundreds of launches of a 10-100 us kernel.
# The median, not the mean, so one clock or scheduling outlier does not reorder close candidates.
WARMUP_MS = 25
REP_MS = 100

_T = TypeVar("_T")


class NoValidConfigError(RuntimeError):
    """No candidate passed its correctness check and timing."""


@dataclass(frozen=True)
class Rejected:
    """A candidate that was disqualified, and why (check text, or exception type and message)."""

    config: Config
    stage: str  # "check" or "time"
    reason: str


@dataclass
class TuneResult:
    """The outcome of ``autotune``: the winner, every survivor's time, and every rejection."""

    key: TuningKey
    config: Config
    ms: float
    n_candidates: int
    timings: list[tuple[Config, float]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def n_rejected(self) -> int:
        return len(self.rejected)

    def to_entry(self) -> CacheEntry:
        """The cache entry for this result (winner, its time, candidate counts)."""
        return CacheEntry(
            key=self.key,
            config=dict(self.config),
            ms=self.ms,
            n_candidates=self.n_candidates,
            n_rejected=self.n_rejected,
        )

    def summary(self) -> str:
        return (
            f"{self.key.dtype} N={self.key.n} K={self.key.k} M<={self.key.m_bucket}: "
            f"{format_config(self.config)} {self.ms:.4f} ms "
            f"({self.n_candidates - self.n_rejected}/{self.n_candidates} candidates valid)"
        )


def do_bench_timer(fn: Callable[[], Any], warmup: int = WARMUP_MS, rep: int = REP_MS) -> float:
    """Median time of ``fn`` in ms with ``triton.testing.do_bench`` (imported when first used)."""
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def describe_exception(exc: BaseException) -> str:
    """'TypeName: first line of the message'."""
    # First line only: Triton compile errors carry the whole source listing after it.
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _progress(items: Sequence[_T], desc: str, enabled: bool) -> Iterable[_T]:
    if not enabled:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional
        return items
    return tqdm(items, desc=desc, leave=False)


def _unique(candidates: Iterable[Any]) -> list[Config]:
    """Validated candidates with duplicates dropped (keeping the first), so none is timed twice."""
    seen: set[str] = set()
    unique: list[Config] = []
    for candidate in candidates:
        config = validate_config(candidate)
        ident = json.dumps(config, sort_keys=True)
        if ident not in seen:
            seen.add(ident)
            unique.append(config)
    return unique


def autotune(
    key: TuningKey,
    candidates: list[dict],
    run: Callable[[dict], Any],
    check: Callable[[dict], None | str],
    timer: Timer | None = None,
    progress: bool = True,
    *,
    cache: TuningCache | None = None,
    store: bool = True,
) -> TuneResult:
    """Check every candidate, time the survivors, keep the fastest, store it in the cache.

    - ``check(config)`` returns None when the output matches the reference, else an error text;
      an exception (compile error, out of resources, launch failure) also disqualifies the
      candidate. Either way the reason is kept in ``TuneResult.rejected``.
    - Survivors are timed with ``timer(lambda: run(config))`` (default: ``do_bench_timer``, the
      median of ``triton.testing.do_bench``); an exception or a non-finite time there also rejects.
    - The fastest survivor wins. With ``store`` (default) it is merged into ``cache`` (default: the
      process-wide user cache), with its time and the rejection count; a failure to write the file
      is a warning, not an error, so a long sweep is not lost.
    - Raises ``NoValidConfigError`` listing the reasons when no candidate survives.

    A fault that corrupts the CUDA context (illegal memory access) makes every later launch in the
    process fail too; the error then lists the first candidate that caused it.
    """
    configs = _unique(candidates)
    if not configs:
        raise ValueError(f"autotune({_key_text(key)}): no candidates given")
    timer = timer if timer is not None else do_bench_timer
    rejected: list[Rejected] = []

    passed: list[Config] = []
    for config in _progress(configs, f"check {key.n}x{key.k} M<={key.m_bucket}", progress):
        try:
            verdict = check(dict(config))  # a copy: the caller must not alter the candidate
        except Exception as exc:  # noqa: BLE001 - any failure disqualifies this candidate only
            rejected.append(Rejected(config, "check", describe_exception(exc)))
            continue
        if verdict is None:
            passed.append(config)
        elif isinstance(verdict, str):
            rejected.append(Rejected(config, "check", verdict))
        else:
            raise TypeError(
                "check() must return None (match) or a str (mismatch), "
                f"got {type(verdict).__name__}"
            )

    timings: list[tuple[Config, float]] = []
    for config in _progress(passed, f"time {key.n}x{key.k} M<={key.m_bucket}", progress):
        try:
            ms = float(timer(lambda c=config: run(dict(c))))
        except Exception as exc:  # noqa: BLE001
            rejected.append(Rejected(config, "time", describe_exception(exc)))
            continue
        if not math.isfinite(ms) or ms <= 0:
            rejected.append(Rejected(config, "time", f"timer returned {ms!r} ms"))
            continue
        timings.append((config, ms))

    if not timings:
        raise NoValidConfigError(_no_survivor_message(key, len(configs), rejected))

    best_config, best_ms = min(timings, key=lambda item: item[1])
    result = TuneResult(
        key=key,
        config=best_config,
        ms=best_ms,
        n_candidates=len(configs),
        timings=timings,
        rejected=rejected,
    )
    if store:
        target = cache if cache is not None else default_cache()
        try:
            target.put(result.to_entry())
        except OSError as exc:
            warnings.warn(
                f"sparse24 tuning: could not save the result for {_key_text(key)}: {exc}",
                TuningCacheWarning,
                stacklevel=2,
            )
    return result


def _key_text(key: TuningKey) -> str:
    return f"{key.gpu}, {key.dtype}, N={key.n}, K={key.k}, M bucket {key.m_bucket}"


def _no_survivor_message(key: TuningKey, n: int, rejected: list[Rejected], show: int = 5) -> str:
    lines = [f"autotune({_key_text(key)}): none of the {n} candidates is valid"]
    for r in rejected[:show]:
        lines.append(f"  [{r.stage}] {format_config(r.config)}: {r.reason}")
    if len(rejected) > show:
        lines.append(f"  ... and {len(rejected) - show} more")
    return "\n".join(lines)
