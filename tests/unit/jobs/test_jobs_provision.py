"""A rewrap's provisioning does not wait for a stuck Dask worker (review, 2026-12-07).

The driver child registered the job's plugin, collected the workers' public keys and
installed their sealed KEKs with ``client.run`` over all workers, which waits for every
one of them: a worker whose event loop was blocked stalled the job's main loop for as long
as it stayed blocked (for ever, for a job without a ``timeout``). Real worker processes (a
LocalCluster of 2, its own: the stuck worker is killed at the end), a real keyring.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

from dask_cluster import two_workers
from distributed import Client

from keysplit import Keyring, jobs

NAMES = ["alice", "bob", "carol"]


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with two_workers() as c:  # plain tcp on loopback: a job accepts it
        yield c


def _blocking(client: Client, worker: str, seconds: float, flag: str) -> None:
    """(A thread of the test) Block ``worker``'s loop; the call fails once it is killed."""
    with contextlib.suppress(Exception):
        client.run(_block, seconds, flag, workers=[worker])


def _block(seconds: float, flag: str) -> None:
    """(Worker) Block this worker's event loop (``client.run`` calls it on the loop), as a
    GIL-holding task or a swapping host would; ``flag`` says it has begun."""
    Path(flag).touch()
    time.sleep(seconds)


def test_a_rewrap_goes_on_without_a_worker_whose_event_loop_is_stuck(
    client: Client, tmp_path: Path
) -> None:
    """Worker a's loop is blocked for 120 s while a rewrap without ``timeout`` starts: the
    job skips a (after ``PROVISION_WAIT``), runs every partition on b and finishes well
    inside the 60 s bound. Before, registering the plugin and provisioning waited for a,
    so the job was still running at the bound (fails)."""
    path = tmp_path / "kr"
    _, shares = Keyring.create(path, 2, NAMES)
    quorum = [shares["alice"], shares["bob"]]
    n = 200
    with Keyring.open(path).unseal(quorum) as ukr:
        raw = np.frombuffer(os.urandom(16 * n), np.uint8).reshape(n, 16)
        rows = ukr.keks_for_rewrap().only([1]).wrap([f"user/{i:04d}" for i in range(n)], raw)
        ukr.store.insert_many(rows)
        ukr.rotate()
    pids = client.run(os.getpid)
    a = sorted(pids)[0]
    flag = tmp_path / "blocked"
    blocker = threading.Thread(target=_blocking, args=(client, a, 120.0, str(flag)), daemon=True)
    blocker.start()
    outcome: list[object] = []

    def job() -> None:
        try:
            with Keyring.open(path).unseal(quorum) as ukr:
                outcome.append(
                    jobs.rewrap(ukr, cluster=jobs.Cluster(client.scheduler.address), partitions=4)
                )
        except Exception as exc:  # the test's thread: looked at below
            outcome.append(exc)

    try:
        for _ in range(600):  # bounded: 30 s
            if flag.exists():
                break
            threading.Event().wait(0.05)
        assert flag.exists()
        runner = threading.Thread(target=job, daemon=True)
        runner.start()
        runner.join(60.0)  # bounded (before: still waiting for a)
        assert not runner.is_alive()
        assert len(outcome) == 1 and not isinstance(outcome[0], Exception), outcome
        result = outcome[0]
        assert result.rewrapped == n and result.remaining == 0  # type: ignore[attr-defined]
    finally:
        with contextlib.suppress(OSError):
            os.kill(pids[a], signal.SIGKILL)  # the stuck worker (its nanny starts another)
