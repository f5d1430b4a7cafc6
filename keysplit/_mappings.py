"""Kept anonymous mappings for large batch outputs, reused once nothing refers to them.

Why: a fresh large buffer page-faults in again on every call (glibc maps anything over 32
MiB fresh and unmaps it on free; numpy returns large arrays to the kernel): on this machine
(a VM) filling a fresh array ran at 1.7-3 GB/s while refilling an already-touched one ran at
~16 GB/s, and a fresh 54 MB buffer of 50k 1 KiB records cost ~1 us of CPU per record. The
Shamir and key-wrap outputs (:mod:`keysplit.hazmat._outputs`, as NumPy arrays) and the
one-buffer record batches (:mod:`keysplit.packed`) take their memory here.

:func:`take_mapping` hands out a view of a kept mapping only when nothing refers to it any
more (every array, view and memoryview over it is gone), so a caller never sees its result
overwritten. At most :data:`MAX_POOLED` bytes are kept, and :func:`clear` drops them all. A
recycled mapping still holds the last batch that used it until it is overwritten by the
next (the same exposure as any freed heap memory of the process; see SECURITY.md "Where
constant time is not claimed"). No NumPy here: a record batch must not import it.
"""

from __future__ import annotations

import mmap
import threading

__all__ = ["MAX_POOLED", "MIN_BYTES", "clear", "take_mapping"]

MIN_BYTES = 8 << 20
"""Smaller outputs are allocated as usual (their faults are a small share of the work)."""
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


def take_mapping(nbytes: int) -> memoryview:
    """A view of ``nbytes`` over a kept anonymous mapping that was free (no buffer over
    it exported), or over a new one. Made under the lock, so the mapping is the caller's
    for as long as this view (or any buffer made from it) lives; the old contents stay
    until overwritten."""
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
        return memoryview(found)[:nbytes]


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
    """Drop every kept mapping (the memory returns to the system once no buffer uses it)."""
    with _LOCK:
        _POOL.clear()
