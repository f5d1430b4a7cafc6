"""A Dask scheduler and worker, each its own process, forked from one that imported Dask once.

The jobs tests that kill a scheduler need it in a process of its own, and a worker in
another. Started as ``python -m distributed.cli.dask_scheduler`` (or ``dask_worker``) each
spent 1.2-1.5 s of CPU importing Dask before it listened (8-11 s of wall time at load 17),
for every such test. Here they are forked by multiprocessing's forkserver, which imports
``distributed`` once per test process; each is still a process of its own, with its own
pid, killed with SIGKILL by the test as before. Only ``distributed`` is imported ahead:
nothing that starts threads at import (a fork keeps only the forking thread).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["DaskProcess", "scheduler_process", "worker_process"]

_started: list[Any] = []


def _context() -> Any:
    if not _started:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["distributed"])
        _started.append(ctx)
    return _started[0]


def _quiet() -> None:
    """Standard output and error to /dev/null, as the tests started the CLI processes
    (the forkserver's own are whatever pytest captured when it started)."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)


def _run_scheduler(port: int) -> None:
    _quiet()
    from distributed import Scheduler

    async def main() -> None:
        # as ``dask scheduler --host 127.0.0.1 --port PORT --no-dashboard``
        async with Scheduler(host="127.0.0.1", port=port, dashboard=False) as scheduler:
            await scheduler.finished()

    asyncio.run(main())


def _run_worker(address: str, preload: list[str], env: dict[str, str]) -> None:
    _quiet()
    os.environ.update(env)  # before the preload is imported: it reads its settings then
    from distributed import Worker

    async def main() -> None:
        # as ``dask worker ADDRESS --nthreads 1 --no-nanny --no-dashboard [--preload P]``:
        # without a nanny, the worker closes (and this process ends) once it loses its
        # scheduler
        async with Worker(address, nthreads=1, preload=preload, dashboard=False) as worker:
            await worker.finished()

    asyncio.run(main())


class DaskProcess:
    """A forked Dask process with the part of :class:`subprocess.Popen`'s API the tests use."""

    def __init__(self, proc: Any) -> None:
        self._proc = proc
        self.pid: int = proc.pid

    def poll(self) -> int | None:
        code: int | None = self._proc.exitcode
        return code

    def kill(self) -> None:
        if self._proc.exitcode is None:
            self._proc.kill()

    def wait(self, timeout: float | None = None) -> int:
        self._proc.join(timeout)
        code = self._proc.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(f"dask process {self.pid}", timeout or 0.0)
        return int(code)


def _start(target: Any, args: tuple[Any, ...]) -> DaskProcess:
    proc = _context().Process(target=target, args=args, daemon=True)
    proc.start()
    return DaskProcess(proc)


def scheduler_process(port: int) -> DaskProcess:
    """A scheduler listening on 127.0.0.1:``port`` (plain tcp), no dashboard."""
    return _start(_run_scheduler, (port,))


def worker_process(
    address: str, preload: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> DaskProcess:
    """A single-threaded worker of the scheduler at ``address``, without a nanny;
    ``preload``: Dask preload files; ``env``: set in its environment before they load."""
    return _start(_run_worker, (address, list(preload), dict(env or {})))
