"""A small shared thread pool for the batch paths (Shamir, key wrap).

numpy ufuncs and OpenSSL's bulk cipher calls release the GIL on large buffers, so a batch
split into contiguous ranges runs on several cores. Work is split only when every thread
gets several chunks; with one range the work runs in the caller's thread.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

__all__ = ["MAX_THREADS", "run_jobs", "run_ranges", "split_ranges", "workers"]

MAX_THREADS = 4
_POOL: ThreadPoolExecutor | None = None
_LOCK = threading.Lock()


def workers(total: int, threads: int | None, min_per_thread: int) -> int:
    """How many threads to use for ``total`` units (at least ``min_per_thread`` each)."""
    if threads is None:
        threads = min(os.cpu_count() or 1, MAX_THREADS)
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise TypeError("threads must be an int")
    if threads < 1:
        raise ValueError("threads must be at least 1")
    return max(1, min(threads, total // max(1, min_per_thread)))


def split_ranges(total: int, parts: int, align: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ranges covering ``0..total``, boundaries multiples of ``align``."""
    step = -(-total // parts)
    step = -(-step // align) * align
    return [(a, min(a + step, total)) for a in range(0, total, step)]


def run_jobs(jobs: list[Callable[[], None]]) -> None:
    """Run the jobs on the shared pool (inline if there is one) and re-raise any error."""
    if len(jobs) == 1:
        jobs[0]()
        return
    global _POOL
    with _LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix="keysplit")
        pool = _POOL
    for fut in [pool.submit(job) for job in jobs]:
        fut.result()


def run_ranges(
    work: Callable[[int, int], None], total: int, align: int, threads: int | None
) -> None:
    """Call ``work(lo, hi)`` over contiguous ranges of ``0..total`` on up to ``threads``."""
    if total == 0:
        return
    parts = split_ranges(total, workers(total, threads, 4 * align), align)
    run_jobs([functools.partial(work, lo, hi) for lo, hi in parts])
