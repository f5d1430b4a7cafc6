"""A rewrap's key renewals reach each Dask worker on their own (review, 2026-12-07).

The driver child renewed the job's KEKs with one ``client.run`` over all workers, which
waits for every one of them: a worker whose event loop was blocked past the lease stalled
the renewals, so every other worker's keys lapsed too. And a renewal that sat queued for a
stuck worker must not extend its keys past ``KEY_LEASE`` after the driver child is gone.

Real worker processes (a LocalCluster of 2), a short lease; the stand-in KEKs are only
looked at for their presence.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("distributed")

from dask_cluster import two_workers
from distributed import Client

from keysplit.jobs._worker import JobKeysPlugin, plugin_name
from keysplit.jobs.rewrap import RENEWALS, _renewing
from keysplit.keyring import KekSet


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with two_workers() as c:  # (plain tcp: no key of a real job is sent here)
        yield c


def _install_stand_in(job_id: str, dask_worker: Any = None) -> None:
    """(Worker) Give the job's plugin KEKs (a stand-in: only their presence is looked at)."""
    plugin = dask_worker.plugins[plugin_name(job_id)]
    plugin.keks = KekSet.__new__(KekSet)


def _holds_keys(job_id: str, dask_worker: Any = None) -> bool:
    """(Worker) Does this worker still hold the job's KEKs (as a task would find them)?"""
    plugin = dask_worker.plugins.get(plugin_name(job_id))
    return plugin is not None and plugin.keks is not None and not plugin.lapsed()


def _block(seconds: float, flag: str) -> None:
    """(Worker) Block this worker's event loop (``client.run`` calls it on the loop), as a
    GIL-holding task or a swapping host would; ``flag`` says it has begun."""
    Path(flag).touch()
    time.sleep(seconds)


def _job(client: Client, job_id: str, lease: float) -> list[str]:
    """Register the job's plugin with ``lease`` on every worker and give it stand-in KEKs."""
    client.register_plugin(JobKeysPlugin(job_id, "kid", lease=lease), name=plugin_name(job_id))
    client.run(_install_stand_in, job_id)
    assert all(client.run(_holds_keys, job_id).values())
    return sorted(client.scheduler_info()["workers"])


def _blocking(client: Client, worker: str, seconds: float, flag: Path) -> threading.Thread:
    """Block ``worker``'s event loop for ``seconds`` from a thread; return once it began."""
    thread = threading.Thread(
        target=client.run, args=(_block, seconds, str(flag)), kwargs={"workers": [worker]}
    )
    thread.start()
    for _ in range(600):
        if flag.exists():
            break
        threading.Event().wait(0.05)
    assert flag.exists()
    return thread


def test_a_stuck_worker_does_not_stop_the_renewals_of_the_others(
    client: Client, tmp_path: Path
) -> None:
    """Worker a's event loop blocked for 3 leases while the job's keys are renewed: b still
    holds them 2 leases in (before: the one ``client.run`` waited on a, so b's lapsed too);
    a lost its own, and renewals after it woke do not bring them back."""
    job_id, lease = "1" * 32, 3.0
    a, b = _job(client, job_id, lease)
    try:
        with _renewing(client, job_id, lease):
            threading.Event().wait(lease / RENEWALS * 2)  # a few renewals on both
            blocked = _blocking(client, a, 3 * lease, tmp_path / "a-blocked")
            threading.Event().wait(2 * lease)  # (a wait past b's lease, not a timing check)
            assert client.run(_holds_keys, job_id, workers=[b]) == {b: True}
            blocked.join(timeout=120)
            assert not blocked.is_alive()
            threading.Event().wait(lease / RENEWALS * 2)  # renewals reach a again
            assert client.run(_holds_keys, job_id) == {a: False, b: True}
    finally:
        client.unregister_worker_plugin(plugin_name(job_id))


_DRIVER = """
import sys, threading
from distributed import Client
from keysplit.jobs.rewrap import _renewing
client = Client(sys.argv[1], timeout=60)
with _renewing(client, sys.argv[2], float(sys.argv[3])):
    print("renewing", flush=True)
    threading.Event().wait(600)
"""


def test_renewals_queued_for_a_stuck_worker_do_not_outlive_the_killed_driver(
    client: Client, tmp_path: Path
) -> None:
    """A driver process renews the job's keys (lease L = 10 s, every 2.5 s); worker a's
    event loop is blocked for 6.8 s, too short for its keys to lapse; the driver is
    SIGKILLed 3.3 s into the block, after a renewal was sent to a. Past the stated bound
    (L after the kill, plus a second and a half) no worker holds the keys: before, a
    applied the renewal it found queued when it woke and kept them L past its wake-up."""
    job_id, lease = "2" * 32, 10.0
    a, _b = _job(client, job_id, lease)
    driver = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, client.scheduler.address, job_id, str(lease)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert driver.stdout is not None
        started: list[bytes] = []
        reader = threading.Thread(target=lambda: started.append(driver.stdout.readline()))
        reader.start()
        reader.join(timeout=120)
        assert started == [b"renewing\n"]
        threading.Event().wait(lease / RENEWALS * 1.5)  # a renewal or two on both
        blocked = _blocking(client, a, 6.8, tmp_path / "a-blocked")
        threading.Event().wait(3.3)  # > L / RENEWALS: a renewal to a was sent, and queued
        driver.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        driver.wait(timeout=60)
        blocked.join(timeout=120)
        assert not blocked.is_alive()
        threading.Event().wait(max(0.0, killed + lease + 1.5 - time.monotonic()))
        assert not any(client.run(_holds_keys, job_id).values())  # (fails before: a did)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=60)
        client.unregister_worker_plugin(plugin_name(job_id))


def test_a_renewal_past_the_drivers_deadline_is_ignored() -> None:
    """In-process: a renewal whose deadline has passed (it sat in a queue) extends
    nothing, a fresh one extends to its deadline at most, and keys that lapsed stay gone
    whatever renewal comes after."""

    class _Worker:
        address = "tcp://127.0.0.1:1"

    plugin = JobKeysPlugin("3" * 32, "kid", lease=3600.0)
    plugin.setup(_Worker())
    plugin.keks = KekSet.__new__(KekSet)
    try:
        due = plugin._due()
        assert due is not None
        plugin.renew(time.time() - 1)  # stale: ignored
        assert plugin._due() == due
        plugin.renew(time.time() + 7200)  # never past a lease from now
        renewed = plugin._due()
        assert renewed is not None and renewed <= time.monotonic() + 3600.0
        plugin.renew(time.time() - 0.001)
        assert plugin._due() == renewed and plugin.keks is not None
        plugin._lease_end = time.monotonic() - 1  # lapsed (its watching thread has not run)
        plugin.renew(time.time() + 3600.0)
        assert plugin.keks is None and plugin.lapsed()
        assert plugin.lapsed_why is not None and "past their deadline" in plugin.lapsed_why
    finally:
        plugin.teardown(_Worker())
