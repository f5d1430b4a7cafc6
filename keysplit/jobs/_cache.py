"""Each worker derives a subject's :class:`~keysplit.record.DataKey` once per job.

A dataset's subjects recur in every partition (a user's rows are spread over files), and
fetching plus deriving their keys again per partition was 43 % of a job's time (issue 23).
:func:`job_keys` wraps the job's picklable :class:`~keysplit.keyring.DataKeys` in one
cache per job id and worker process: the first partition that needs a subject fetches and
derives its key, later partitions of the same job on that worker reuse it.

Bounds: at most :data:`MAX_KEYS` keys per job (the cache is emptied, not grown, past it)
and the caches of the :data:`JOBS_KEPT` most recent jobs; an older job's keys are dropped
when a newer job starts on the worker. Trade-off, stated in SECURITY.md: a worker keeps a
job's derived keys for that job's lifetime (not only a partition's), and a subject shredded
while the job runs keeps being served from the cache until the job ends, as it would be
within one partition.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from ..keyring import DataKeys
from ..keyring.records import Records
from ..record import DataKey

__all__ = ["JOBS_KEPT", "MAX_KEYS", "job_keys", "job_records"]

MAX_KEYS = 1 << 18
JOBS_KEPT = 2
_lock = threading.Lock()
_jobs: OrderedDict[str, _JobKeys] = OrderedDict()


class _JobKeys:
    """A caching :class:`DataKeys` over one job's source (this worker process only)."""

    def __init__(self, inner: DataKeys) -> None:
        self._inner = inner
        self._keys: dict[str, DataKey] = {}
        self._lock = threading.Lock()
        self.records = Records(self)  # its AAD tails are cached across partitions too

    def __repr__(self) -> str:
        return f"_JobKeys({len(self._keys)} keys, <redacted>)"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a worker's key cache never leaves the worker")

    @property
    def keyring_id(self) -> str:
        return self._inner.keyring_id

    def resolve(self, subjects: Sequence[str], *, create: bool) -> list[DataKey | None]:
        with self._lock:
            keys = self._keys
            missing = [s for s in dict.fromkeys(subjects) if s not in keys]
        if missing:
            got = self._inner.resolve(missing, create=create)
            with self._lock:
                if len(self._keys) + len(missing) > MAX_KEYS:
                    self._keys = {}
                keys = self._keys
                for s, k in zip(missing, got, strict=True):
                    if k is not None:
                        keys[s] = k
            found = dict(zip(missing, got, strict=True))
            return [keys.get(s) or found.get(s) for s in subjects]
        return [keys[s] for s in subjects]

    def export(self, subjects: Sequence[str], *, create: bool) -> list[bytes | None]:
        return self._inner.export(subjects, create=create)

    def close(self) -> None:
        with self._lock:
            self._keys = {}
        self._inner.close()


def job_keys(source: DataKeys, job_id: str) -> DataKeys:
    """This worker's caching view of ``source`` for job ``job_id`` (made on first use)."""
    with _lock:
        cached = _jobs.get(job_id)
        if cached is None:
            cached = _jobs[job_id] = _JobKeys(source)
            while len(_jobs) > JOBS_KEPT:
                _, old = _jobs.popitem(last=False)
                old._keys = {}
        else:
            _jobs.move_to_end(job_id)
        return cached


def job_records(source: DataKeys, job_id: str) -> Records:
    """The record engine over :func:`job_keys` (one per job and worker process)."""
    keys = job_keys(source, job_id)
    assert isinstance(keys, _JobKeys)
    return keys.records
