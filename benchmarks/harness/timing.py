"""What a benchmark module needs: clocks, repeats, throughput statistics and contract rows.

Every ``bench_*.py`` takes its timing and its rows from here, so every figure in the
results is measured the same way: ``time.perf_counter`` around the call alone (setup and a
``gc.collect()`` outside the timed window), and median/min/max of ``work / seconds``
over the repeats.

The row contract (``validate_rows``)::

    {"benchmark": str, "impl": str, "n": int, "unit": str, "median": float,
     "min": float, "max": float, "baseline": bool}

median/min/max are *throughputs* (higher is better) over >= 5 repeats (quick mode: >= 3
repeats and small sizes). Exactly one row per (benchmark, n) has ``baseline: True``: the
reference measured in the same run, against which every other row's ratio is computed.
Optional keys: ``"peak_mb"`` (peak memory of one call, e.g. from :func:`peak_memory_mb`),
``"timed_n"`` (when a slow peer was timed on a sample of ``timed_n`` items and reported
per item), ``"target"`` (the project's target for this row, same unit: drawn on the plot
and listed as met or not) and ``"note"`` (one short sentence).
"""

from __future__ import annotations

import gc
import math
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

__all__ = [
    "PROGRESS_PREFIX",
    "REQUIRED_KEYS",
    "Stats",
    "in_turn",
    "latency_ms",
    "measure",
    "measure_interleaved",
    "peak_memory_mb",
    "progress",
    "row",
    "throughput",
    "time_calls",
    "validate_rows",
]

T = TypeVar("T")

Stats = tuple[float, float, float]
"""(median, min, max) throughput."""

REQUIRED_KEYS = {
    "benchmark": str,
    "impl": str,
    "n": int,
    "unit": str,
    "median": float,
    "min": float,
    "max": float,
    "baseline": bool,
}
PROGRESS_PREFIX = "::progress::"


def throughput(work: float, seconds: Sequence[float]) -> Stats:
    """(median, min, max) of ``work / t`` over the timed repeats ``seconds``."""
    if not seconds:
        raise ValueError("need at least one timing")
    rates = [work / max(t, 1e-12) for t in seconds]
    return statistics.median(rates), min(rates), max(rates)


def _timed(fn: Callable[[], object]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(
    fn: Callable[[], object],
    work: float,
    repeats: int,
    *,
    warmup: int = 1,
    setup: Callable[[], object] | None = None,
) -> Stats:
    """Time ``fn`` ``repeats`` times; return (median, min, max) throughput = ``work / seconds``.

    ``setup`` (untimed) runs before every call, e.g. to reset a buffer. ``warmup`` untimed
    calls come first (thread pools, lazy imports, first-touch page faults of reused buffers).
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        times.append(_timed(fn))
    return throughput(work, times)


def measure_interleaved(
    fns: Mapping[str, Callable[[], object]], work: float, repeats: int, *, warmup: int = 1
) -> dict[str, Stats]:
    """:func:`measure` for several impls at once, their repeats interleaved (a, b, b, a, ...:
    each round in turn, :func:`in_turn`).

    On a shared machine the load drifts; interleaving gives every impl the same conditions,
    so same-run ratios stay meaningful when one repeat is long (seconds, e.g. a 1 GiB file).
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in in_turn(names, r):
            times[name].append(_timed(fns[name]))
    return {name: throughput(work, t) for name, t in times.items()}


def in_turn(items: Sequence[T], r: int) -> list[T]:
    """Round ``r``'s order of interleaved ``items``: rotated by ``r``, so over ``len(items)``
    rounds each impl runs once in each position. A fixed order hands one impl the caches of
    the impl before it every round: in the service rows the in-process baseline followed the
    floor row's identical in-process call and gained 0.4-0.6 ms per 1,000-record call
    (benchmarks/README.md, "0.40 in the goal row, 0.59 in the frame A/B")."""
    k = r % len(items) if items else 0
    return [*items[k:], *items[:k]]


def time_calls(
    fn: Callable[[], object],
    calls: int,
    *,
    warmup: int = 1,
    budget_s: float | None = None,
    min_calls: int = 3,
) -> list[float]:
    """Seconds of each of up to ``calls`` calls of ``fn`` (after ``warmup`` untimed ones).

    For sizing a sample (how many items a slow per-item peer can be timed on), or for
    latency percentiles where throughput is not the figure. ``budget_s`` stops early once
    that much wall time has passed and at least ``min_calls`` calls were timed.
    """
    for _ in range(warmup):
        fn()
    deadline = None if budget_s is None else time.monotonic() + budget_s
    out: list[float] = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
        if deadline is not None and time.monotonic() > deadline and len(out) >= min_calls:
            break
    return out


def latency_ms(seconds: Sequence[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds of per-call ``seconds`` (from :func:`time_calls`).

    p99 is the inclusive 99th percentile (with fewer than two calls, the one call).
    """
    if not seconds:
        raise ValueError("need at least one timing")
    q = (
        statistics.quantiles(seconds, n=100, method="inclusive")
        if len(seconds) > 1
        else list(seconds) * 99
    )
    return statistics.median(seconds) * 1e3, q[98] * 1e3


def row(
    benchmark: str,
    impl: str,
    n: int,
    unit: str,
    stats: Stats,
    *,
    baseline: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """Build a contract row from :func:`measure`'s result."""
    med, lo, hi = stats
    out: dict[str, Any] = {
        "benchmark": benchmark,
        "impl": impl,
        "n": int(n),
        "unit": unit,
        "median": float(med),
        "min": float(lo),
        "max": float(hi),
        "baseline": bool(baseline),
    }
    out.update(extra)
    return out


def peak_memory_mb(fn: Callable[[], object]) -> float:
    """Peak memory (MB) allocated while ``fn`` runs, via tracemalloc.

    numpy reports its buffers to tracemalloc, so this counts arrays and Python objects;
    memory that C libraries allocate privately (OpenSSL contexts) is not seen. Run it outside
    the timed loop: tracing slows Python-level code down.
    """
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 1e6


def progress(message: str) -> None:
    """Tell the harness what is running now (shown in its progress display)."""
    sys.stderr.write(f"{PROGRESS_PREFIX}{message}\n")
    sys.stderr.flush()


def validate_rows(rows: object) -> list[dict[str, Any]]:
    """Check rows against the contract; raise ``ValueError`` naming the first problem."""
    if not isinstance(rows, list):
        raise ValueError(f"run() must return a list of dicts, got {type(rows).__name__}")
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise ValueError(f"row {i}: not a dict")
        for key, typ in REQUIRED_KEYS.items():
            if key not in r:
                raise ValueError(f"row {i}: missing key {key!r}")
            v = r[key]
            if typ is float:
                ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            elif typ is int:
                ok = isinstance(v, int) and not isinstance(v, bool)
            else:
                ok = isinstance(v, typ)
            if not ok:
                raise ValueError(f"row {i}: {key!r} must be {typ.__name__}, got {v!r}")
        if not r["min"] <= r["median"] <= r["max"]:
            raise ValueError(f"row {i}: need min <= median <= max")
        for key in ("target", "peak_mb"):
            v = r.get(key)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"row {i}: {key!r} must be a non-negative number, got {v!r}")
    groups: dict[tuple[str, int], int] = {}
    for r in rows:
        group = (r["benchmark"], r["n"])
        groups[group] = groups.get(group, 0) + (1 if r["baseline"] else 0)
    for (bench, n), count in groups.items():
        if count != 1:
            raise ValueError(f"{bench!r} n={n}: {count} baseline rows (need exactly one)")
    return rows
