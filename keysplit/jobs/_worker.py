"""What a Dask worker holds for one job: a per-job X25519 key, then the KEKs sealed to it.

:class:`JobKeysPlugin` is registered on the cluster for the duration of one job (its name
carries the job id). On every worker, including ones that join or restart mid-job, it
generates a fresh X25519 key pair in memory; the driver collects the public keys, seals the
KEKs to each (:func:`keysplit.jobs._kek.seal_keks`) and installs them; once opened, the
private key is dropped. Unregistering the plugin at the end of the job forgets the KEKs; so
does the worker itself when it closes (Dask closes a worker whose scheduler connection
broke); once ``lease`` seconds pass without the job's driver renewing them
(:func:`renew_keys`, which the driver runs on each worker on its own while the job runs: a
driver killed, suspended or cut off from the scheduler renews nothing, whether or not the
job has a deadline, and a renewal that reaches a worker late extends its keys no further
than ``lease`` past the moment the driver sent it); and, for a job with a deadline, once
``ttl`` seconds have passed since the plugin's setup on that worker. (The job's driver may
be gone without unregistering it.) A partition task asks for the KEKs batch by batch
(:func:`worker_keks`), so it stops at its next batch once they are forgotten.
A task that lands on a worker without KEKs fails with :class:`NoJobKeys` and the driver
provisions that worker and runs the task again; one on a worker that forgot them mid-job
(lease, deadline) fails with :class:`KeysLapsed`, which the job reports as such.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from distributed import get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from ..errors import KeysplitError
from ..keyring import KekSet
from ._kek import open_keks

__all__ = [
    "JobKeysPlugin",
    "KeysLapsed",
    "NoJobKeys",
    "install_keks",
    "plugin_name",
    "public_keys",
    "registered",
    "renew_keys",
    "worker_keks",
]


class NoJobKeys(KeysplitError):
    """This worker holds no KEKs for the job (it joined or restarted after provisioning)."""


class KeysLapsed(NoJobKeys):
    """This worker forgot the job's KEKs mid-job: its lease was not renewed in time, or the
    job's deadline passed. Not a worker that joined late: provisioning it again cannot help
    (the plugin forgets for good), so the job says what happened instead."""


def plugin_name(job_id: str) -> str:
    return f"keysplit-job-{job_id}"


registered: set[str] = set()
"""(Driver child) The job plugins this process registered and has not unregistered yet:
those its lifeline unregisters when its parent dies (:mod:`keysplit.jobs._driver`), so that
their workers forget the KEKs at once rather than a lease later."""


class JobKeysPlugin(WorkerPlugin):
    """Per-job key holder on one worker (see the module docstring)."""

    def __init__(
        self,
        job_id: str,
        keyring_id: str,
        ttl: float | None = None,
        lease: float | None = None,
    ) -> None:
        self.job_id = job_id
        self.keyring_id = keyring_id
        self.ttl = ttl
        """Seconds after setup after which this worker forgets the job's keys (None: never)."""
        self.lease = lease
        """Seconds this worker keeps the job's keys past the driver's last renewal (or the
        setup) (None: no lease)."""
        self._private: X25519PrivateKey | None = None
        self.keks: KekSet | None = None
        self.address = ""
        self._end: float | None = None
        self._lease_end: float | None = None
        self._late = False  # a renewal arrived past its deadline (ignored)
        self._stop: threading.Event | None = None
        self.lapsed_why: str | None = None
        """Why the keys were forgotten mid-job (lease or deadline), once they were."""

    def __repr__(self) -> str:
        return f"JobKeysPlugin(job={self.job_id}, <redacted>)"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_stop": None, "_private": None, "keks": None}

    def setup(self, worker: Any) -> None:
        self._private = X25519PrivateKey.generate()
        self.address = str(worker.address)
        now = time.monotonic()
        self._lease_end = None if self.lease is None else now + self.lease
        self._end = None if self.ttl is None else now + self.ttl
        if self._due() is not None:
            self._stop = threading.Event()
            watch = threading.Thread(
                target=self._watch, args=(self._stop,), name="keysplit-job-keys", daemon=True
            )
            watch.start()

    def teardown(self, worker: Any) -> None:
        if self._stop is not None:
            self._stop.set()
        self.forget()

    def _due(self) -> float | None:
        """When (``time.monotonic()``) this worker forgets the keys unless renewed first."""
        ends = [t for t in (self._end, self._lease_end) if t is not None]
        return min(ends) if ends else None

    def _watch(self, stop: threading.Event) -> None:
        """(A daemon thread) Forget the keys once due; a renewal moves the due time on."""
        while (due := self._due()) is not None:
            if stop.wait(max(0.0, due - time.monotonic())):
                return
            if self.lapsed():
                self.expire()
                return

    def lapsed(self) -> bool:
        """True once the keys are due to go (the watching thread may not have run yet)."""
        due = self._due()
        return due is not None and time.monotonic() >= due

    def expire(self) -> None:
        """Forget the keys because they lapsed, noting why (for the task that finds them
        gone: :class:`KeysLapsed`)."""
        if self.lapsed_why is None:
            now = time.monotonic()
            if self._end is not None and now >= self._end:
                self.lapsed_why = (
                    f"the job's keys lapsed on worker {self.address}: the job's deadline, "
                    f"{self.ttl:g} s after the worker set it up, passed"
                )
            else:
                self.lapsed_why = (
                    f"the job's keys lapsed on worker {self.address}: their {self.lease:g} s "
                    "lease was not renewed in time, as when the worker's event loop or the "
                    "job's driver is starved of CPU; leave the workers spare CPU, e.g. fewer "
                    "threads per worker"
                    + (
                        " (renewals reached it past their deadline: its event loop was "
                        "blocked, or its clock runs ahead of the driver's host's)"
                        if self._late
                        else ""
                    )
                )
        self.forget()

    def renew(self, until: float | None = None) -> None:
        """The job's driver is alive: keep the keys another ``lease`` seconds, but not past
        ``until`` (``time.time()``: the driver's send time plus the lease). A renewal that
        sat queued for a stuck worker past ``until`` extends nothing, so none outlives its
        driver by more than the lease. Keys already lapsed stay forgotten."""
        if self.lapsed():
            self.expire()
            return
        if self.lease is None or self._lease_end is None:
            return
        left = self.lease if until is None else min(self.lease, until - time.time())
        if left > 0:
            self._lease_end = max(self._lease_end, time.monotonic() + left)
        else:
            self._late = True

    def forget(self) -> None:
        """Drop the job's key pair and KEKs (for good: nothing installs them again)."""
        self._private = None
        self.keks = None

    def public_key(self) -> bytes | None:
        """This worker's per-job public key while it still waits for KEKs."""
        if self._private is None or self.keks is not None:
            return None
        return self._private.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)

    def install(self, sealed: bytes) -> None:
        if self._private is None:
            raise NoJobKeys("this worker has no pending key pair for the job")
        self.keks = open_keks(
            sealed,
            self._private,
            job_id=self.job_id,
            keyring_id=self.keyring_id,
            worker=self.address,
        )
        self._private = None  # the bundle is open: nothing else may be opened with it


def _plugin(worker: Any, job_id: str) -> JobKeysPlugin | None:
    plugin = worker.plugins.get(plugin_name(job_id))
    return plugin if isinstance(plugin, JobKeysPlugin) else None


def public_keys(job_id: str, dask_worker: Any = None) -> bytes | None:
    """Run on every worker by ``client.run``: its public key if it needs KEKs."""
    plugin = _plugin(dask_worker, job_id)
    return None if plugin is None else plugin.public_key()


def install_keks(job_id: str, sealed: dict[str, bytes], dask_worker: Any = None) -> bool:
    """Run by ``client.run``: open this worker's bundle (each worker can open only its own)."""
    plugin = _plugin(dask_worker, job_id)
    mine = sealed.get(str(dask_worker.address))
    if plugin is None or mine is None:
        return False
    plugin.install(mine)
    return True


def renew_keys(job_id: str, until: float | None = None, dask_worker: Any = None) -> None:
    """Run on each worker by the job's driver (``client.run``), every fraction of the
    lease: the driver still runs the job; ``until`` bounds the renewal (see
    :meth:`JobKeysPlugin.renew`)."""
    plugin = _plugin(dask_worker, job_id)
    if plugin is not None:
        plugin.renew(until)


def worker_keks(job_id: str) -> KekSet:
    """Inside a task: the KEKs this worker holds for the job."""
    plugin = _plugin(get_worker(), job_id)
    if plugin is not None and plugin.lapsed():
        plugin.expire()
    if plugin is not None and plugin.lapsed_why is not None:
        raise KeysLapsed(plugin.lapsed_why)
    if plugin is None or plugin.keks is None:
        raise NoJobKeys("this worker holds no keys for the job")
    return plugin.keks
