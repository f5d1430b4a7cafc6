"""The first code of a bulk job's driver process (``python -m keysplit._jobs_boot``).

It starts reading the driver's *lifeline* (:func:`keysplit.jobs._isolate._start`) before
the driver imports :mod:`keysplit.jobs` (Dask, distributed, pandas, pyarrow: about 3 s of
CPU, 20-50 s of wall time on a loaded 2-core host). Before, the driver read its lifeline only
once those imports were done, so a driver whose parent died while it started ran on, doing
nothing, for as long as they took. An EOF before the driver takes the lifeline over
(:func:`hand_over`) ends this process at once: no Dask client, cluster, job or staging
directory exists yet. This module is outside :mod:`keysplit.jobs` so that running it
imports nothing heavy (``keysplit``'s own package is light).
"""

from __future__ import annotations

import contextlib
import os
import runpy
import sys
import threading
from collections.abc import Callable

__all__ = ["hand_over", "main"]

_lock = threading.Lock()
_watched: list[int] = []  # the lifeline this process's watcher reads (once main ran)
_on_eof: list[Callable[[], None]] = []  # the driver's handler, once it took over


def _watch(fd: int) -> None:
    """(A daemon thread) Read the lifeline to its EOF, then run the driver's handler, or,
    if the driver has not taken over yet, end this process (nothing to clean up)."""
    with contextlib.suppress(OSError):
        while os.read(fd, 1 << 12):
            pass
    with _lock:
        if not _on_eof:
            os._exit(1)
        handler = _on_eof[0]
    handler()


def hand_over(fd: int, on_eof: Callable[[], None]) -> bool:
    """(The driver) Have ``on_eof`` run once the lifeline ``fd`` reads EOF; False if this
    process's watcher does not read ``fd`` (started some other way: watch it yourself)."""
    with _lock:
        if fd not in _watched:
            return False
        _on_eof.append(on_eof)  # under the lock: an EOF already read has ended the process
        return True


def main() -> None:
    """Watch ``--lifeline N`` (if given), then run the driver as ``python -m`` would."""
    argv = sys.argv
    if len(argv) == 3 and argv[1] == "--lifeline" and argv[2].isdigit():
        fd = int(argv[2])
        _watched.append(fd)
        threading.Thread(target=_watch, args=(fd,), name="keysplit-lifeline", daemon=True).start()
    runpy.run_module("keysplit.jobs._driver", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    # through the module's own name: the driver's hand_over must find this state, not a
    # second copy of the module (``-m`` runs this file as __main__)
    from keysplit import _jobs_boot

    _jobs_boot.main()
