"""Keep freed heap memory in the process for the next batch (glibc ``mallopt``).

A process that moves batches of records (a backend calling ``Client.encrypt_many``, or
``keysplit serve`` itself) allocates and frees about a megabyte of ``bytes`` per batch of
1,000 records. glibc's default hands memory back to the kernel as soon as 128 KiB lie free
at the top of the heap, so every batch faults its pages in again: 250-260 page faults per
``Client.encrypt_many(1000)``, about a quarter of the client's CPU time (benchmarks/README.md,
"keep_heap"). :func:`keep_heap` raises the thresholds once for the whole process.

It is a process-wide allocator policy, so the library never applies it by itself:
``keysplit serve`` calls it at start, and an application opts in. The cost is memory: up
to 64 MiB of freed heap stays with the process instead of going back to the kernel.
"""

from __future__ import annotations

import ctypes

__all__ = ["keep_heap"]

MMAP_THRESHOLD = 32 << 20
"""Blocks up to this size come from the heap (glibc's default: 128 KiB, then dynamic)."""
TRIM_THRESHOLD = 64 << 20
"""Free memory at the top of the heap kept before it is returned (default 128 KiB)."""
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>


def keep_heap() -> bool:
    """Let this process keep freed heap memory for its next batch; True if it took effect.

    Best effort: False (nothing changed) without glibc's ``mallopt`` (musl, macOS).
    Calling it again changes nothing more. Blocks larger than 32 MiB are still mapped
    and unmapped as before."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
