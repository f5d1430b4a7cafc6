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

import numpy as np

from .._mappings import _POOL as _POOL  # (the tests count the pool's mappings here)
from .._mappings import MAX_POOLED, MIN_BYTES, clear, take_mapping

__all__ = ["MAX_POOLED", "MIN_BYTES", "clear", "take"]


def take(shape: tuple[int, ...], dtype: type = np.uint8) -> np.ndarray:
    """An uninitialised C-contiguous array of ``shape``; reused memory when possible."""
    dt = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype=dt)
    found = take_mapping(nbytes)  # a view: the mapping is this array's while it lives
    return np.frombuffer(found, dtype=dt, count=nbytes // dt.itemsize).reshape(shape)
