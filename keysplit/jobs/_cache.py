"""Each worker fetches a subject's key once per job and derives it once per key.

A dataset's subjects recur in every partition (a user's rows are spread over files), and
fetching plus deriving their keys again per partition was 43 % of a job's time (issue 23).
:func:`job_keys` wraps the job's picklable :class:`~keysplit.keyring.DataKeys` in one
cache per job id and worker process: the first partition that needs a subject fetches and
derives its key, later partitions of the same job on that worker reuse it.

Deriving (two HKDF calls and an AES-GCM key schedule per key) cost as much as sealing
the records of a 10^5-row job whose 10^4 subjects each get 10 rows (issue 23: 14 % of the
job, against 18 % for the AES loop). So for a raw-key source (a
:class:`~keysplit.keyring.datakeys.DerivedDataKeys`: the key service, a job's key server)
a job still *fetches* every key it uses (a shredded subject gets none), but a key the
source hands out unchanged since the previous job on this worker reuses that job's derived
:class:`DataKey` instead of deriving it again. Derived keys are found by a keyed BLAKE2b
digest of the raw key (a per-process random key), so no raw key is kept.

Bounds: at most :data:`MAX_KEYS` keys per job (the cache is emptied, not grown, past it)
and the caches of the :data:`JOBS_KEPT` most recent jobs; an older job's keys are dropped
when a newer job starts on the worker. In time: a job's cache is emptied (in place) once
the job has not asked it for a key for :data:`IDLE` seconds (60 s, as a rewrap's
``KEY_LEASE``), and at the latest :data:`MAX_AGE` seconds (10 min) after its first key was
cached (a job still running fetches and derives its keys again); a job idle for ``IDLE`` is
forgotten whole, its key source (a service token, serve_keys' key) with it. One daemon thread per
process (:func:`_expire`, started by the first job) does this; it holds no lock while it
waits. So a worker keeps no data key longer than ``IDLE`` after its last job stopped using
it (whether that job ended, failed, or its driver died), nor longer than ``MAX_AGE`` after
its source handed it out, however long the job runs. Jobs run back to back within ``IDLE``
still reuse the previous job's derived keys. Trade-off, stated in SECURITY.md: within those
bounds a worker keeps a job's derived keys between its partitions, and a subject shredded
while the job runs keeps being served from the cache until the job ends or ``MAX_AGE``
has passed, as it would be within one partition.

An emptied job keeps its engine's memos (subject spellings, context encodings, AAD tails),
shared with the next job's engine: they are public, derived from no key.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

from ..errors import KeyringError
from ..keyring import DataKeys
from ..keyring.datakeys import DerivedDataKeys
from ..keyring.records import Records
from ..record import DataKey

__all__ = ["IDLE", "JOBS_KEPT", "MAX_AGE", "MAX_KEYS", "job_keys", "job_records"]

MAX_KEYS = 1 << 18
JOBS_KEPT = 2
IDLE = 60.0  # seconds a job's keys stay cached past its last request for one
MAX_AGE = 600.0  # seconds a job's cache stays filled, however busy the job
_lock = threading.Lock()
_jobs: OrderedDict[str, _JobKeys] = OrderedDict()
_DIGEST_KEY = os.urandom(32)  # this process's: the digests mean nothing elsewhere
_wake = threading.Event()  # the expiry thread looks again (a job's cache filled, a test)
_expiry: threading.Thread | None = None


def _digest(raw: bytes) -> bytes:
    return hashlib.blake2b(raw, key=_DIGEST_KEY, digest_size=16).digest()


class _JobKeys:
    """A caching :class:`DataKeys` over one job's source (this worker process only).

    ``prior``: the job before this one on the worker: its derived keys (by raw-key
    digest), emptied in place when that job is dropped, and its engine's memos of subject
    and context encodings (public), which this job's engine shares.
    """

    def __init__(self, inner: DataKeys, prior: _JobKeys | None = None) -> None:
        self._inner = inner
        self._keys: dict[str, DataKey] = {}
        self._derived: dict[bytes, DataKey] = {}
        self._prior = prior._derived if prior is not None else {}
        self._lock = threading.Lock()
        self._dropped = False  # (drop) its parts still running are answered, nothing kept
        self._used = self._filled = time.monotonic()  # last request; first key cached
        # what the engine passes for a batch: each distinct subject once, unless the
        # source counts the records sealed with a key (then every occurrence, as it asks)
        self.counts_records = not isinstance(inner, DerivedDataKeys) and bool(
            getattr(inner, "counts_records", True)
        )
        self.records = Records(self)  # its AAD tails are cached across partitions too
        if prior is not None:  # and across jobs: they are public (subject names, contexts)
            self.records.share_encodings(prior.records)

    def __repr__(self) -> str:
        return f"_JobKeys({len(self._keys)} keys, <redacted>)"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a worker's key cache never leaves the worker")

    @property
    def keyring_id(self) -> str:
        return self._inner.keyring_id

    def _fetch(
        self, subjects: list[str], *, create: bool
    ) -> tuple[list[DataKey | None], dict[bytes, DataKey]]:
        """Keys of ``subjects`` from the source: fetched, derived only if new to the worker;
        and the derived keys by digest, for :meth:`resolve` to keep (or not)."""
        inner = self._inner
        if not isinstance(inner, DerivedDataKeys):
            return inner.resolve(subjects, create=create), {}  # it derives (and caches) itself
        raws = inner.export(subjects, create=create)
        if len(raws) != len(subjects):
            raise KeyringError("the data key source returned the wrong number of keys")
        derived, prior = self._derived, self._prior
        fresh: dict[bytes, DataKey] = {}
        out: list[DataKey | None] = []
        for raw in raws:
            if raw is None:
                out.append(None)
                continue
            d = _digest(raw)
            key = fresh.get(d) or derived.get(d) or prior.get(d)
            if key is None:
                key = DataKey(raw)
            fresh[d] = key
            out.append(key)
        return out, fresh

    def resolve(self, subjects: Sequence[str], *, create: bool) -> list[DataKey | None]:
        with self._lock:
            self._used = time.monotonic()
            keys = self._keys
            missing = [s for s in dict.fromkeys(subjects) if s not in keys]
        if missing:
            got, fresh = self._fetch(missing, create=create)
            found = dict(zip(missing, got, strict=True))
            with self._lock:
                if not self._dropped:  # (dropped: a part still running, answered, not kept)
                    self._keep(found, fresh)
                    keys = self._keys
            return [keys.get(s) or found.get(s) for s in subjects]
        return [keys[s] for s in subjects]

    def _keep(self, found: dict[str, DataKey | None], fresh: dict[bytes, DataKey]) -> None:
        """(Under the lock) Cache the keys :meth:`resolve` just fetched."""
        self._used = time.monotonic()  # (a slow source is no idle job)
        if len(self._keys) + len(found) > MAX_KEYS:
            self._keys = {}
            self._derived.clear()
        if not self._keys:
            self._filled = self._used
            _wake.set()  # the expiry thread may be waiting for no cache at all
        self._derived.update(fresh)
        keys = self._keys
        for s, k in found.items():
            if k is not None:
                keys[s] = k

    def export(self, subjects: Sequence[str], *, create: bool) -> list[bytes | None]:
        return self._inner.export(subjects, create=create)

    def expire(self, now: float) -> float | None:
        """Drop this job's keys if due at ``now`` (``time.monotonic()``); else when they are
        due (None: none held)."""
        with self._lock:
            if not self._keys and not self._derived:
                return None
            due = min(self._used + IDLE, self._filled + MAX_AGE)
            if due > now:
                return due
            self._keys = {}
            self._derived.clear()  # in place, as drop does
            return None

    def idle_until(self, now: float) -> float | None:
        """When this job will have been idle for ``IDLE`` (no key asked for), or None if it
        has been by ``now``: the worker then keeps nothing of it, its key source included."""
        with self._lock:
            due = self._used + IDLE
        return None if due <= now else due

    def drop(self) -> None:
        """Forget this job's keys (also for the job after it, which may look here), for
        good: the worker no longer keeps this job (:func:`job_keys`), so no expiry would
        reach what a part still running fetched next; such a part is answered, nothing kept."""
        with self._lock:
            self._dropped = True
            self._keys = {}
            self._derived.clear()  # in place: the next job holds a reference to it

    def close(self) -> None:
        self.drop()
        self._inner.close()


def _expire(wake: threading.Event) -> None:
    """(The process's daemon thread) Drop each job's keys once due, and forget a job that
    has been idle for ``IDLE`` altogether (see the module)."""
    while True:
        wake.clear()  # before looking: a cache filled meanwhile wakes the next wait
        with _lock:
            held = list(_jobs.items())
        now, soonest = time.monotonic(), None
        for job_id, job in held:
            due = job.expire(now)
            idle = job.idle_until(now)
            if idle is None:  # its key source (a service token, serve_keys' key) goes too
                _forget(job_id, job)
                continue
            for t in (due, idle):
                if t is not None:
                    soonest = t if soonest is None else min(soonest, t)
        wake.wait(None if soonest is None else soonest - now)


def _forget(job_id: str, job: _JobKeys) -> None:
    """Stop keeping ``job`` (idle): nothing of this module refers to it, or to its key
    source, any more; a part of it still running is answered and keeps nothing (drop)."""
    with _lock:
        if _jobs.get(job_id) is job:
            del _jobs[job_id]
    job.drop()


def job_keys(source: DataKeys, job_id: str) -> DataKeys:
    """This worker's caching view of ``source`` for job ``job_id`` (made on first use)."""
    global _expiry, _wake
    with _lock:
        if _expiry is None or not _expiry.is_alive():  # the first job (or a forked child)
            _wake = threading.Event()
            _expiry = threading.Thread(
                target=_expire, args=(_wake,), name="keysplit-job-keys-expiry", daemon=True
            )
            _expiry.start()
        cached = _jobs.get(job_id)
        if cached is None:
            prior = next(reversed(_jobs.values())) if _jobs else None
            # a source that can name the job in its requests (serve_keys' handle) does
            for_job = getattr(source, "for_job", None)
            inner = for_job(job_id) if callable(for_job) else source
            cached = _jobs[job_id] = _JobKeys(inner, prior)
            while len(_jobs) > JOBS_KEPT:
                _, old = _jobs.popitem(last=False)
                old.drop()
            _wake.set()  # the expiry thread forgets it once idle
        else:
            _jobs.move_to_end(job_id)
        return cached


def job_records(source: DataKeys, job_id: str) -> Records:
    """The record engine over :func:`job_keys` (one per job and worker process)."""
    keys = job_keys(source, job_id)
    assert isinstance(keys, _JobKeys)
    return keys.records
