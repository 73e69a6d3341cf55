"""Pick the fastest *correct* config among candidates, and remember it.

A small loop rather than ``triton.autotune``, which times configs but cannot check them: here each
candidate is first compared with a reference, so a config that is fast because it computes the
wrong thing (a bad split-K reduction, a tile that skips a remainder) never wins.

Which is which: this is the kernel-agnostic loop of the search; the op-side search that builds the
GEMM's candidates and calls it is ``sparse24.ops.tune.tune``, the winner goes to
``sparse24.tuning.cache``, and ``linear`` reads it through ``sparse24.ops.configs.tuned`` when it
plans a problem (its next call, since a put empties the plans).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sparse24.tuning.cache import (
    CacheEntry, Config, TuningCache, TuningCacheWarning, TuningKey, default_cache, format_config,
    validate_config,
)

try:  # optional: `python -m sparse24` runs without the extras (tests/test_cli.py)
    from tqdm.auto import tqdm
except ImportError:
    def tqdm(items, **kwargs):  # no bar
        return items

# do_bench budget per candidate: hundreds of launches of a 10-100 us kernel, ~4 s for 30
# candidates. The median, so one clock or scheduling outlier does not reorder close candidates.
WARMUP_MS = 25
REP_MS = 100


class NoValidConfigError(RuntimeError):
    """No candidate passed; ``rejected`` says why each failed."""

    def __init__(self, message: str, rejected: list[Rejected]) -> None:
        super().__init__(message)
        self.rejected = rejected  # bench/gemm_variants.py reports every candidate


class Rejected(NamedTuple):
    config: Config
    stage: str  # "check" or "time"
    reason: str


@dataclass
class TuneResult:
    key: TuningKey
    config: Config
    ms: float
    n_candidates: int
    timings: list[tuple[Config, float]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def n_rejected(self) -> int:
        return len(self.rejected)


def do_bench_timer(fn: Callable[[], Any]) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=WARMUP_MS, rep=REP_MS, return_mode="median"))


def describe_exception(exc: BaseException) -> str:
    # First line only: Triton compile errors carry the whole source listing after it.
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def autotune(key: TuningKey, candidates: Iterable[dict], run: Callable[[dict], Any],
             check: Callable[[dict], str | None], timer: Callable | None = None,
             progress: bool = True, *, cache: TuningCache | None = None,
             store: bool = True) -> TuneResult:
    """Check each candidate (``check(config)``: None when the output matches the reference, else
    how it differs), time those that pass (``timer(lambda: run(config)) -> ms``, default do_bench's
    median), return the fastest and (``store``) put it in ``cache`` (default: the user cache; a
    failed write only warns, so a long sweep is not lost). An exception or a non-finite time also
    rejects a candidate; ``NoValidConfigError`` when none survives. Duplicates are tried once.
    """
    what = f"{key.gpu}, {key.dtype}, N={key.n}, K={key.k}, M bucket {key.m_bucket}"
    configs = list({json.dumps(c, sort_keys=True): validate_config(c) for c in candidates}.values())
    if not configs:
        raise ValueError(f"autotune({what}): no candidates given")
    rejected: list[Rejected] = []
    timings: list[tuple[Config, float]] = []
    for config in tqdm(configs, desc=f"tune {key.n}x{key.k} M<={key.m_bucket}", leave=False,
                       disable=not progress):
        try:
            verdict = check(dict(config))  # a copy: the caller must not alter the candidate
        except Exception as exc:  # noqa: BLE001 - any failure disqualifies this candidate only
            verdict = describe_exception(exc)
        else:
            if verdict is not None and not isinstance(verdict, str):
                raise TypeError(f"check() must return None or a str, got {verdict!r}")
        if verdict is not None:
            rejected.append(Rejected(config, "check", verdict))
            continue
        try:
            ms = float((timer or do_bench_timer)(lambda: run(dict(config))))
            if not (math.isfinite(ms) and ms > 0):
                raise ValueError(f"timer returned {ms!r} ms")
        except Exception as exc:  # noqa: BLE001
            rejected.append(Rejected(config, "time", describe_exception(exc)))
            continue
        timings.append((config, ms))

    if not timings:
        lines = [f"autotune({what}): none of the {len(configs)} candidates is valid"]
        lines += [f"  [{r.stage}] {format_config(r.config)}: {r.reason}" for r in rejected[:5]]
        raise NoValidConfigError("\n".join(lines), rejected)
    config, ms = min(timings, key=lambda item: item[1])
    if store:
        try:
            (cache or default_cache()).put(CacheEntry(key, dict(config), ms, len(configs),
                                                      len(rejected)))
        except OSError as exc:
            warnings.warn(f"sparse24 tuning: could not save the result for {what}: {exc}",
                          TuningCacheWarning, stacklevel=2)
    return TuneResult(key, config, ms, len(configs), timings, rejected)
