"""Large batch outputs that do not page-fault on every call.

Why: writing a fresh 320 MiB array (the shares of a 4 * 10^6-key 3-of-5 split) costs more
in first-touch page faults than the split itself: on this machine (a VM) filling a fresh
array ran at 1.7-3 GB/s while refilling an already-touched one ran at ~16 GB/s
(benchmarks/bench_shamir.py measures both, "cold" and steady). numpy returns large arrays
to the kernel when they are freed, so a batch loop pays the faults again every call.

:func:`take` hands out arrays over anonymous mappings it keeps: a mapping is handed out
again only when nothing refers to it any more (every array and view over it is gone: its
reference count is back to the pool's own), so a caller never sees its result
overwritten. Only outputs of at least :data:`MIN_BYTES` are pooled, at most
:data:`MAX_POOLED` bytes are kept, and :func:`clear` drops them all. A recycled mapping
still holds the last batch that used it until it is overwritten by the next (the same
exposure as any freed heap memory of the process; see SECURITY.md "Side channels and
memory").
"""

from __future__ import annotations

import mmap
import threading

import numpy as np

__all__ = ["MAX_POOLED", "MIN_BYTES", "clear", "take"]

MIN_BYTES = 8 << 20
"""Smaller outputs come from numpy as usual (their faults are a small share of the work)."""
MAX_POOLED = 1 << 30
"""Most bytes of free mappings kept for reuse."""

_LOCK = threading.Lock()
_POOL: list[mmap.mmap] = []


def _free(m: mmap.mmap) -> bool:
    # Free when no buffer over the mapping is exported: every array, view or memoryview
    # over it holds an export, and mmap refuses to resize while one exists. A resize to the
    # same size is a no-op mremap otherwise (contents and touched pages kept, < 1 us). This
    # asked sys.getrefcount(m) <= 4 before: exact on 3.11, but an interpreter that counts
    # fewer references (borrowed ones on newer Pythons) would have handed out a mapping
    # still in use, overwriting a caller's shares. (tests/unit/hazmat/test_shamir.py checks
    # both directions.)
    try:
        m.resize(len(m))
    except BufferError:
        return False
    return True


def take(shape: tuple[int, ...], dtype: type = np.uint8) -> np.ndarray:
    """An uninitialised C-contiguous array of ``shape``; reused memory when possible."""
    dt = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype=dt)
    with _LOCK:
        found = None
        for m in _POOL:
            if len(m) >= nbytes and len(m) <= 2 * nbytes and _free(m):
                found = m
                break
        if found is None:
            found = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            if hasattr(mmap, "MADV_HUGEPAGE"):
                found.madvise(mmap.MADV_HUGEPAGE)  # fewer faults where the kernel allows
            _POOL.append(found)
            _trim()
        else:  # most recently used last: it is the one trimmed last
            _POOL.remove(found)
            _POOL.append(found)
        return np.frombuffer(found, dtype=dt, count=nbytes // dt.itemsize).reshape(shape)


def _trim() -> None:
    """Forget the oldest free mappings while more than MAX_POOLED bytes are kept."""
    total = sum(len(m) for m in _POOL)
    i = 0
    while total > MAX_POOLED and i < len(_POOL):
        m = _POOL[i]
        if _free(m):
            del _POOL[i]
            total -= len(m)
        else:
            i += 1


def clear() -> None:
    """Drop every kept mapping (the memory returns to the system once no array uses it)."""
    with _LOCK:
        _POOL.clear()
