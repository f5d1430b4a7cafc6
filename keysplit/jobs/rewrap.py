"""Distributed rewrap: move every data key to the current KEK on a Dask cluster.

Shape of a job (each step is idempotent, so a job is resumable by running it again):

1. **plan** (driver): walk the store's rewrap cursor (``stale_batch``) once and cut the
   stale keys into ``partitions`` subject ranges ``(after, last]`` of equal size. It uses
   only the :class:`~keysplit.store.KeyStore` protocol, so it works for every store
   :func:`~keysplit.store.open_store` opens (the driver reads each stale row once).
2. **provision** (driver + workers): a per-job worker plugin makes an X25519 key pair on
   every worker; the driver seals the stale KEK versions and the current one (a
   :class:`~keysplit.keyring.KekSet` with its unbound-version flags) to each public key
   (HPKE). Workers never see the master key, the keyring file or other KEKs.
3. **partition tasks** (workers): open the store by URL, read the range batch by batch,
   unwrap/rewrap each batch with :func:`~keysplit.keyring.rewrap.rewrap_rows` (the
   in-process loop's body: subject-bound IVs, legacy rows opened with the default IV) and
   commit it with compare-and-swap (``replace_many``): a row changed meanwhile (shredded,
   rewrapped by a duplicate run) is simply not replaced. Every batch commits atomically, so a worker
   killed mid-partition leaves each key either under its old KEK or under the new one,
   never half-written; the partition is then run again (Dask reschedules it, or the driver
   does in its next round, or the next run of the job finds only what is left).

The job records nothing itself: run it as the ``runner`` of
:func:`keysplit.ceremony.rewrap`, which unseals with a quorum and appends the one ``rewrap``
entry to the keyring's audit log (``keysplit rewrap DIR --dask`` does).
"""

from __future__ import annotations

import contextlib
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from distributed import Client, as_completed

from ..errors import KeysplitError
from ..keyring import RewrapResult, UnsealedKeyring
from ..keyring.rewrap import rewrap_rows
from ..store import KeyStore, open_store
from ._kek import seal_keks
from ._worker import (
    JobKeysPlugin,
    NoJobKeys,
    install_keks,
    plugin_name,
    public_keys,
    worker_keks,
)

__all__ = ["JobError", "StoreSpec", "SubjectRange", "plan", "rewrap", "rewrap_range"]

Progress = Callable[[int, int], None]
_PLAN_PAGE = 50_000


class JobError(KeysplitError):
    """A distributed job could not finish; what it committed stays valid (run it again)."""


class SubjectRange(NamedTuple):
    """Subjects ``s`` with ``after < s <= last`` (``last=None``: no upper bound)."""

    after: str
    last: str | None


@dataclass(frozen=True)
class StoreSpec:
    """How a worker opens the key store: URL, keyring id, home (for relative sqlite paths)."""

    url: str | None
    keyring_id: str
    home: str

    def open(self) -> KeyStore:
        return open_store(self.url, keyring_id=self.keyring_id, home=self.home)


class _PartResult(NamedTuple):
    rewrapped: int
    corrupt: list[str]


def plan(store: KeyStore, current_version: int, partitions: int) -> list[SubjectRange]:
    """Cut the keys not under ``current_version`` into at most ``partitions`` ranges of
    (nearly) equal size, in subject order; the last range is open-ended."""
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise ValueError("partitions must be a positive int")
    total = sum(c for v, c in store.count_by_version().items() if v != current_version)
    if total == 0:
        return []
    size = math.ceil(total / partitions)
    cuts: list[str] = []
    after, need = "", size
    while True:
        page = store.stale_batch(current_version, after, min(need, _PLAN_PAGE))
        if not page:
            break
        after = page[-1].subject
        need -= len(page)
        if need == 0:
            cuts.append(after)
            need = size
    if cuts and need == size:  # the walk ended on a cut: the last range is open-ended
        cuts.pop()
    bounds = ["", *cuts]
    return [SubjectRange(a, b) for a, b in zip(bounds, [*cuts, None], strict=True)]


def rewrap_range(job_id: str, spec: StoreSpec, rng: SubjectRange, batch_size: int) -> _PartResult:
    """The partition task (runs on a worker): rewrap the stale keys in ``rng``."""
    keks = worker_keks(job_id)
    store = spec.open()
    try:
        after, done, corrupt = rng.after, 0, []
        while True:
            rows = store.stale_batch(keks.current, after, batch_size)
            inside = [r for r in rows if rng.last is None or r.subject <= rng.last]
            if inside:
                after = inside[-1].subject
                pairs, bad = rewrap_rows(keks, inside)
                done += store.replace_many(pairs)
                corrupt += bad
            if len(inside) < batch_size:
                return _PartResult(done, corrupt)
    finally:
        store.close()


def _provision(client: Client, job_id: str, kr: UnsealedKeyring, versions: list[int]) -> int:
    """Seal the job's KEKs to every worker still waiting for them; returns how many."""
    answers = client.run(public_keys, job_id, on_error="return")  # a dying worker: skip it
    wanting = {a: pk for a, pk in answers.items() if isinstance(pk, bytes)}
    if not wanting:
        return 0
    keks = kr.keks_for_rewrap().only(versions)
    sealed = {addr: seal_keks(keks, pk, job_id=job_id, worker=addr) for addr, pk in wanting.items()}
    del keks
    client.run(install_keks, job_id, sealed, workers=list(sealed), on_error="return")
    return len(sealed)


def _describe(exc: BaseException) -> str:
    """A secret-free line for a failed task (our errors carry no secrets; others: the type)."""
    if isinstance(exc, KeysplitError):
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__


def rewrap(
    keyring: UnsealedKeyring,
    store_url: str | None = None,
    *,
    client: Client,
    partitions: int | None = None,
    batch_size: int = 10_000,
    progress: Progress | None = None,
    rounds: int = 3,
    timeout: float | None = None,
) -> RewrapResult:
    """Move every data key not under the current KEK to it, on the Dask cluster ``client``.

    ``store_url`` names the key store as workers reach it (None: the keyring's own,
    ``keyring.keyring.store_url``; a SQLite store must then be on a path every worker
    sees). ``partitions`` defaults to 4 per worker thread. ``progress(done, total)`` counts
    keys like :meth:`UnsealedKeyring.rewrap` (``total``: the stale keys at the start), once
    at the start and once per finished partition. Nothing is recorded here: the audit
    entry comes from :func:`keysplit.ceremony.rewrap` with this job as its runner. Failed
    partitions are retried up to ``rounds`` times (after provisioning workers that joined);
    if some still fail, or ``timeout`` seconds pass in one round, :class:`JobError` says so
    and a rerun finishes the job.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError("batch_size must be a positive int")
    home = str(Path(keyring.keyring.path).resolve())
    kid = keyring.keyring.keyring_id
    url = keyring.keyring.store_url if store_url is None else store_url
    spec = StoreSpec(url, kid, home)
    current = keyring.keyring.meta.current_kek
    store = spec.open()
    try:
        counts = store.count_by_version()
        stale_versions = sorted(v for v in counts if v != current)
        stale = sum(c for v, c in counts.items() if v != current)
        if partitions is None:
            partitions = 4 * max(1, sum(client.nthreads().values()))
        ranges = plan(store, current, partitions)
    finally:
        store.close()
    done, corrupt = _run(
        client, keyring, spec, ranges, stale_versions, stale, batch_size, progress, rounds, timeout
    )
    store = spec.open()
    try:
        remaining = sum(c for v, c in store.count_by_version().items() if v != current)
    finally:
        store.close()
    return RewrapResult(done, current, remaining, tuple(sorted(corrupt)))


def _run(
    client: Client,
    kr: UnsealedKeyring,
    spec: StoreSpec,
    ranges: list[SubjectRange],
    versions: list[int],
    stale: int,
    batch_size: int,
    progress: Progress | None,
    rounds: int,
    timeout: float | None,
) -> tuple[int, list[str]]:
    job_id = secrets.token_hex(16)
    total = len(ranges)
    if progress is not None:
        progress(0, stale)
    if not ranges:
        return 0, []
    name = plugin_name(job_id)
    client.register_plugin(JobKeysPlugin(job_id, spec.keyring_id), name=name)
    todo = dict(enumerate(ranges))
    done = 0
    corrupt: list[str] = []
    errors: list[str] = []
    try:
        for attempt in range(max(1, rounds)):
            if not todo:
                break
            _provision(client, job_id, kr, versions)
            futures: dict[Any, int] = {
                client.submit(
                    rewrap_range,
                    job_id,
                    spec,
                    rng,
                    batch_size,
                    pure=False,
                    key=f"keysplit-rewrap-{job_id}-{i}-{attempt}",
                ): i
                for i, rng in todo.items()
            }
            errors = []
            try:
                for fut in as_completed(futures, timeout=timeout):
                    i = futures[fut]
                    try:
                        part: _PartResult = fut.result()
                    except NoJobKeys:
                        continue  # the worker joined after provisioning: next round
                    except Exception as exc:
                        errors.append(_describe(exc))
                        continue
                    del todo[i]
                    done += part.rewrapped
                    corrupt += part.corrupt
                    if progress is not None:
                        progress(done, stale)
            except TimeoutError:
                errors.insert(0, f"timed out after {timeout} s")
                client.cancel(list(futures))
                break
    finally:
        with contextlib.suppress(Exception):  # best effort: a dead cluster forgets anyway
            client.unregister_worker_plugin(name)
    if todo:
        why = errors[0] if errors else "workers kept joining without keys"
        raise JobError(
            f"{len(todo)} of {total} rewrap partitions did not finish ({why}); "
            f"{done} keys were rewrapped and committed",
            hint="run the rewrap again: it continues with what is left",
        )
    return done, corrupt
