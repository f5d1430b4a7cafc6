"""A rewrap's provisioning does not wait for a stuck Dask worker (review, 2026-12-07).

The driver child registered the job's plugin, collected the workers' public keys and
installed their sealed KEKs with ``client.run`` over all workers, which waits for every
one of them: a worker whose event loop was blocked stalled the job's main loop for as long
as it stayed blocked (for ever, for a job without a ``timeout``). Real worker processes (a
LocalCluster of 2, its own: the stuck worker is killed at the end), a real keyring.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from dask_cluster import two_workers
from distributed import Client
from test_jobs import _keyring  # n stale keys: KEK v1, rotated to v2

from keysplit import Keyring, jobs

rewrap_module = importlib.import_module("keysplit.jobs.rewrap")  # (jobs.rewrap: the function)

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
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker a's loop is blocked for 120 s while a rewrap without ``timeout`` starts: the
    job skips a (after ``PROVISION_WAIT``, here 5 s: each of its three waits for a is one),
    runs every partition on b and finishes well inside the 60 s bound. Before, registering
    the plugin and provisioning waited for a, so the job was still running at the bound
    (fails)."""
    monkeypatch.setattr(rewrap_module, "PROVISION_WAIT", 5.0)
    path = tmp_path / "kr"
    n = 200
    _, quorum = _keyring(path, n)
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


def test_a_round_cancelled_because_its_workers_left_says_so_when_the_job_fails(
    client: Client, tmp_path: Path
) -> None:
    """(known problem) The guard cancels a round's partitions once every worker holding the
    job's keys has left (they would wait for ever); a job that then failed (no round left)
    said "... did not finish (FutureCancelledError)". Now its JobError names the cause:
    the round cancelled, which workers held the keys and left. Real worker processes (the
    module's cluster: both are killed, and their nannies start new ones), a real keyring;
    the partitions are held mid-round by a write lock the test holds on the SQLite store
    (reads go on)."""
    import sqlite3

    path = tmp_path / "kr"
    n = 200
    _, quorum = _keyring(path, n)
    client.wait_for_workers(2, timeout=60)  # (after the test before: a worker killed)
    pids = client.run(os.getpid)
    unsealed, locked, finished, released = (threading.Event() for _ in range(4))
    outcome: list[object] = []

    def job() -> None:
        # unsealed (its lease written) before the test takes the store's write lock,
        # and sealed (its lease dropped) after the test lets go of it
        with Keyring.open(path).unseal(quorum) as ukr:
            unsealed.set()
            assert locked.wait(60)
            try:
                cluster = jobs.Cluster(client.scheduler.address)
                outcome.append(jobs.rewrap(ukr, cluster=cluster, partitions=4, rounds=1))
            except Exception as exc:  # the test's thread: looked at below
                outcome.append(exc)
            finished.set()
            assert released.wait(60)

    runner = threading.Thread(target=job, daemon=True)
    runner.start()
    assert unsealed.wait(60)
    held = sqlite3.connect(path / "keys.sqlite", isolation_level=None, timeout=30)
    try:
        held.execute("BEGIN IMMEDIATE")  # every replace_many waits (30 s), reads go on
        locked.set()
        for _ in range(1200):  # bounded: 60 s, until both workers run a partition
            busy = client.processing()
            if all(any("keysplit-rewrap-" in str(k) for k in busy.get(w, ())) for w in pids):
                break
            threading.Event().wait(0.05)
        else:
            raise AssertionError(f"the partitions never ran: {client.processing()}")
        for pid in pids.values():
            os.kill(pid, signal.SIGKILL)  # their nannies start new ones, without keys
        assert finished.wait(60)  # bounded
    finally:
        locked.set()
        held.execute("ROLLBACK")
        held.close()
        released.set()
        runner.join(60)
        client.wait_for_workers(2, timeout=60)  # the nannies' new workers, for what follows
    assert len(outcome) == 1 and isinstance(outcome[0], jobs.JobError), outcome
    text = str(outcome[0])
    assert "FutureCancelledError" not in text, text
    assert "round 1's partitions were cancelled: every worker holding the job's keys" in text
    assert all(w in text for w in pids), text  # which workers: both held the keys
