"""Distributed rewrap: move every data key to the current KEK on a Dask cluster.

Shape of a job (each step is idempotent, so a job is resumable by running it again). The
*parent* is the process holding the unsealed keyring; the *child* runs the Dask client
(:mod:`keysplit.jobs._isolate`: the parent never deserializes anything from the cluster):

1. **plan** (child): cut the stale keys into ``partitions`` subject ranges ``(after, last]``
   of equal size (:func:`plan`, through the :class:`~keysplit.store.KeyStore` protocol, so
   it works for every store :func:`~keysplit.store.open_store` opens).
2. **provision** (child + parent + workers): a per-job worker plugin makes an X25519 key
   pair on every worker; the child relays the public keys, the parent seals the stale KEK
   versions and the current one (a :class:`~keysplit.keyring.KekSet` with its
   unbound-version flags) to each (HPKE) and the child installs the sealed bundles. Workers
   and the child never see the master key, the keyring file or other KEKs; the child sees
   no KEK at all.
3. **partition tasks** (workers): open the store by URL (once per worker thread and job,
   kept open for its next partitions), read the range batch by batch,
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
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from distributed import Client, as_completed, get_worker

from ..errors import KeysplitError
from ..keyring import RewrapResult, UnsealedKeyring
from ..keyring.rewrap import rewrap_rows
from ..store import KeyStore, open_store
from ..store.base import check_batch_size
from . import _isolate
from ._channel import Channel
from ._isolate import ITEMS_LINE, JobError, Message, clean, progress_of, run_job
from ._kek import seal_keks
from ._worker import (
    JobKeysPlugin,
    KeysLapsed,
    NoJobKeys,
    _plugin,
    install_keks,
    plugin_name,
    public_keys,
    registered,
    renew_keys,
    worker_keks,
)
from .cluster import LOST_SETTLE, Cluster, check_timeout, planned_threads, scheduler_lost

__all__ = ["JobError", "StoreSpec", "SubjectRange", "plan", "rewrap", "rewrap_range"]

Progress = Callable[[int, int], None]

KEY_LEASE = 60.0
"""Seconds a worker keeps a rewrap's KEKs past the last renewal from the job's driver
child, which renews them on every worker every :data:`KEY_LEASE` / :data:`RENEWALS`
seconds while the job runs: a driver child that died (killed with its keyring process or on
its own), was suspended or lost its scheduler without unregistering the job's plugin leaves
its workers holding the KEKs at most this long, with or without a job ``timeout``."""
RENEWALS = 4

PROVISION_WAIT = 10.0
"""Seconds the driver child waits for one worker's answer while it provisions the job
(registering the job's plugin, a worker's public key, installing its bundle): a worker whose
event loop is blocked longer is skipped for that round (no partition is sent to it) and
asked again in the next; the job goes on with the others. Read by the keyring process when
the job starts and sent to the child with the job, as :data:`KEY_LEASE` is."""


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


def plan(
    store: KeyStore, current_version: int, partitions: int, stale: int | None = None
) -> list[SubjectRange]:
    """Cut the keys not under ``current_version`` into at most ``partitions`` ranges of
    (nearly) equal size, in subject order; the last range is open-ended. The cut points
    come from the store in one statement (:meth:`KeyStore.stale_cuts`: row numbers over the
    subject index), so planning reads no rows, whatever the store's size. ``stale``: the
    count of those keys if the caller just counted them (None: counted here); only the
    ranges' sizes depend on it, never which keys they cover."""
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise ValueError("partitions must be a positive int")
    total = (
        sum(c for v, c in store.count_by_version().items() if v != current_version)
        if stale is None
        else stale
    )
    if total == 0:
        return []
    cuts = store.stale_cuts(current_version, math.ceil(total / partitions))
    bounds = ["", *cuts]
    return [SubjectRange(a, b) for a, b in zip(bounds, [*cuts, None], strict=True)]


class _RewrapPlugin(JobKeysPlugin):
    """The rewrap job's :class:`JobKeysPlugin`: also keeps the job's key store open on its
    worker, one per task thread, from the first partition that thread runs until the
    worker forgets the job (teardown: the end of the job or the worker's close; the lease;
    the ttl). A store opened per partition cost each one a PostgreSQL connection set-up
    (two connections, the schema check, the staging tables: ~45 ms of a partition's wall
    time and ~20 ms of the server's CPU on a loaded 2-core machine), 8 times per job on 2
    workers. The store holds no secret; the KEKs stay the plugin's, forgotten as before.
    A store a partition is using when the job is forgotten is closed when that partition
    returns (its batch in progress still commits, as before), the others at once."""

    # set up on the worker (setup), never pickled: nothing of them exists in the driver
    _stores_lock: threading.Lock | None = None
    _closed = False

    def __repr__(self) -> str:
        return f"_RewrapPlugin(job={self.job_id}, <redacted>)"

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for name in ("_stores", "_busy", "_stores_lock", "_closed"):
            state.pop(name, None)
        return state

    def setup(self, worker: Any) -> None:
        self._stores: dict[int, KeyStore] = {}
        self._busy: set[int] = set()
        self._closed = False
        self._stores_lock = threading.Lock()
        super().setup(worker)

    def forget(self) -> None:
        """Forget the KEKs (teardown, the lease, the ttl) and close the stores: a job whose
        driver was killed never unregisters its plugin, and its stores must not hold server
        connections for the worker's lifetime."""
        super().forget()
        lock = self._stores_lock
        if lock is None:
            return
        with lock:
            self._closed = True
            idle = [t for t in self._stores if t not in self._busy]
            stores = [self._stores.pop(t) for t in idle]
        if stores:  # off the worker's event loop (teardown runs there): a close may wait
            threading.Thread(target=_close_all, args=(stores,), daemon=True).start()

    def acquire(self, spec: StoreSpec) -> KeyStore:
        """This thread's open store for the job (opened on first use), for one partition;
        :meth:`release` it when the partition returns."""
        lock = self._stores_lock
        if lock is None:
            raise NoJobKeys("this worker has not set the job up")
        me = threading.get_ident()
        with lock:
            if self._closed:
                raise NoJobKeys("this worker has ended the job")
            store = self._stores.get(me)
            self._busy.add(me)
        if store is not None:
            return store
        try:
            store = spec.open()  # outside the lock: other threads' tasks need not wait
        except BaseException:
            self.release()
            raise
        with lock:
            self._stores[me] = store
        return store

    def release(self) -> None:
        """The partition on this thread returned: close its store if the job was
        forgotten meanwhile."""
        lock = self._stores_lock
        if lock is None:
            return
        me = threading.get_ident()
        with lock:
            self._busy.discard(me)
            store = self._stores.pop(me, None) if self._closed else None
        if store is not None:
            _close_all([store])


def _close_all(stores: list[KeyStore]) -> None:
    """Close a job's stores (none is in use by a partition)."""
    for store in stores:
        with contextlib.suppress(Exception):
            store.close()


def _job_plugin(job_id: str) -> _RewrapPlugin:
    """Inside a task: this worker's plugin for the job."""
    plugin = _plugin(get_worker(), job_id)
    if not isinstance(plugin, _RewrapPlugin):
        raise NoJobKeys("this worker holds no keys for the job")
    return plugin


def rewrap_range(job_id: str, spec: StoreSpec, rng: SubjectRange, batch_size: int) -> _PartResult:
    """The partition task (runs on a worker): rewrap the stale keys in ``rng``. It asks
    for the worker's KEKs batch by batch: once the worker forgot them (its scheduler is
    gone, the job's deadline passed) it stops at its next batch (:class:`NoJobKeys`).
    The store is the worker thread's, kept open for the job's next partitions."""
    worker_keks(job_id)  # a worker without keys: fail before opening the store
    plugin = _job_plugin(job_id)
    store = plugin.acquire(spec)
    try:
        after, done, corrupt = rng.after, 0, []
        while True:
            n, replaced, bad, after = _rewrap_batch(job_id, store, after, rng.last, batch_size)
            done += replaced
            corrupt += bad
            if n < batch_size:
                return _PartResult(done, corrupt)
    finally:
        plugin.release()


def _rewrap_batch(
    job_id: str, store: KeyStore, after: str, last: str | None, batch_size: int
) -> tuple[int, int, list[str], str]:
    """One batch of :func:`rewrap_range`: (rows in range, replaced, corrupt, new ``after``).
    The KEKs are referenced only in this frame (not in the task's, which a failure's
    traceback would keep)."""
    keks = worker_keks(job_id)
    rows = store.stale_batch(keks.current, after, batch_size)
    inside = [r for r in rows if last is None or r.subject <= last]
    if not inside:
        return 0, 0, [], after
    pairs, bad = rewrap_rows(keks, inside)
    del keks
    return len(inside), store.replace_many(pairs), bad, inside[-1].subject


def _provision(
    client: Client, job_id: str, chan: Channel, wait: float = PROVISION_WAIT
) -> set[str]:
    """(Child) Ask the parent to seal the job's KEKs to every worker still waiting for them;
    install the sealed bundles. Returns the workers provisioned now.

    Each worker is asked by a call of its own, and one that has not answered within
    ``wait`` (:data:`PROVISION_WAIT`) is skipped this round (a later round asks it again):
    one ``client.run`` over all workers waits for every one of them, so a worker whose event
    loop was blocked held back the job's main loop for as long as it stayed blocked."""
    asks = {w: (job_id,) for w in _workers(client)}
    answers = _each_worker(client, public_keys, asks, wait)
    wanting = {a: pk.hex() for a, pk in answers.items() if isinstance(pk, bytes) and len(pk) == 32}
    if not wanting:
        return set()
    reply = chan.ask({"t": "keys", "workers": wanting})
    sealed = {str(a): bytes.fromhex(h) for a, h in reply["bundles"].items()}
    installs = {w: (job_id, {w: b}) for w, b in sealed.items()}
    done = _each_worker(client, install_keks, installs, wait)
    return {w for w, ok in done.items() if ok is True}


def _workers(client: Client) -> list[str]:
    """(Child) The workers the scheduler knows now."""
    return [str(w) for w in client.scheduler_info(n_workers=-1)["workers"]]


def _each_worker(
    client: Client,
    func: Callable[..., Any],
    args: dict[str, tuple[Any, ...]],
    wait: float = PROVISION_WAIT,
) -> dict[str, Any]:
    """(Child) Run ``func`` on each worker of ``args`` with its own arguments, by a call of
    its own (threads), and return the answers that came within ``wait`` seconds: a worker
    that did not answer in time, failed or left is absent."""
    answers: dict[str, Any] = {}
    lock = threading.Lock()

    def one(worker: str, call: tuple[Any, ...]) -> None:
        with contextlib.suppress(Exception):  # a worker gone: absent
            got = client.run(func, *call, workers=[worker], on_error="return")
            if worker in got and not isinstance(got[worker], BaseException):
                with lock:
                    answers[worker] = got[worker]

    threads = [
        threading.Thread(target=one, args=(w, a), name="keysplit-provision", daemon=True)
        for w, a in args.items()
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + wait
    for thread in threads:  # not joined past the deadline: a stuck worker's call waits on
        thread.join(max(0.0, deadline - time.monotonic()))
    with lock:
        return dict(answers)


def _bounded(call: Callable[[], Any], wait: float) -> None:
    """(Child) Run ``call`` (a broadcast to every worker: registering or unregistering the
    job's plugin) and wait at most ``wait`` seconds for it; re-raise its error if it failed
    in time. The scheduler records the plugin before it broadcasts, so a worker whose loop
    is blocked gets it when it wakes, and workers that join later get it at once."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=run, name="keysplit-plugin-call", daemon=True)
    thread.start()
    thread.join(wait)
    if failed:
        raise failed[0]


def _describe(exc: BaseException) -> str:
    """A secret-free line for a failed task (our errors carry no secrets; others: the type)."""
    if isinstance(exc, KeysplitError):
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__


_ADDRESS_MAX = 256


def _sealer(kr: UnsealedKeyring, job_id: str, versions: list[int]) -> Callable[[Message], Message]:
    """(Parent) Answers the child's key requests: checks each worker address and public key
    (plain strings and hex, nothing else) and seals the job's KEKs to it."""

    def on_keys(msg: Message) -> Message:
        workers = msg.get("workers")
        if not isinstance(workers, dict) or not workers or len(workers) > 100_000:
            raise JobError("the job driver sent a malformed key request")
        keks = kr.keks_for_rewrap().only(versions)
        bundles: dict[str, str] = {}
        for addr, pk in workers.items():
            if not (isinstance(addr, str) and 0 < len(addr) <= _ADDRESS_MAX and addr.isprintable()):
                raise JobError("the job driver sent a malformed worker address")
            if not (isinstance(pk, str) and len(pk) == 64):
                raise JobError("the job driver sent a malformed worker key")
            try:
                raw = bytes.fromhex(pk)
            except ValueError:
                raise JobError("the job driver sent a malformed worker key") from None
            bundles[addr] = seal_keks(keks, raw, job_id=job_id, worker=addr).hex()
        del keks
        return {"t": "sealed", "bundles": bundles}

    return on_keys


def rewrap(
    keyring: UnsealedKeyring,
    store_url: str | None = None,
    *,
    cluster: Cluster,
    partitions: int | None = None,
    batch_size: int = 10_000,
    progress: Progress | None = None,
    rounds: int = 3,
    timeout: float | None = None,
) -> RewrapResult:
    """Move every data key not under the current KEK to it, on the Dask ``cluster``.

    The Dask client runs in a child process (:mod:`keysplit.jobs._isolate`): this process,
    which holds the unsealed keyring, deserializes nothing from the cluster; it seals the
    stale and current KEKs to each worker's per-job key and reads back plain counts.
    ``store_url`` names the key store as workers reach it (None: the keyring's own,
    ``keyring.keyring.store_url``; a SQLite store must then be on a path every worker
    sees). ``partitions`` defaults to 4 per worker thread the cluster's options name
    (:func:`keysplit.jobs.cluster.planned_threads`; a scheduler given no ``workers``: the
    threads connected when the job plans). ``progress(done, total)`` counts
    keys like :meth:`UnsealedKeyring.rewrap` (``total``: the stale keys at the start), once
    at the start and once per finished partition. Nothing is recorded here: the audit
    entry comes from :func:`keysplit.ceremony.rewrap` with this job as its runner. Failed
    partitions are retried up to ``rounds`` times (after provisioning workers that joined);
    if some still fail, or ``timeout`` seconds pass in one round, :class:`JobError` says so
    and a rerun finishes the job.
    """
    check_batch_size(batch_size)
    timeout = check_timeout(timeout)
    if partitions is not None and (
        isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1
    ):
        raise ValueError("partitions must be a positive int")
    if not isinstance(cluster, Cluster):
        raise TypeError("cluster must be a keysplit.jobs.Cluster")
    home = str(Path(keyring.keyring.path).resolve())
    kid = keyring.keyring.keyring_id
    url = keyring.keyring.store_url if store_url is None else store_url
    spec = StoreSpec(url, kid, home)
    local = keyring.local_data_keys()
    local.catch_up()  # the store's current KEK, even if another process just rotated
    current = local.keks.current
    # counted on the keyring's own open store (the same keys, reached from this process):
    # opening the workers' URL here cost a connection set-up before and after the job
    counts = local.store.count_by_version()
    stale_versions = sorted(v for v in counts if v != current)
    stale = sum(c for v, c in counts.items() if v != current)
    if progress is not None:
        progress(0, stale)
    if stale:
        job_id = secrets.token_hex(16)
        seal = _sealer(keyring, job_id, stale_versions)
        corrupt: list[str] = []

        def on_message(msg: Message) -> Message | None:
            if msg.get("t") == "keys":
                return seal(msg)
            if msg.get("t") == "corrupt":
                corrupt.extend(_subject_list(msg.get("subjects")))
                return None
            step = progress_of(msg)
            if step is not None and progress is not None:
                progress(min(step[0], stale), stale)
            return None

        request = {
            "kind": "rewrap",
            "job_id": job_id,
            "spec": spec,
            "current": current,
            "stale": stale,  # the plan need not count again
            "partitions": partitions,
            "batch_size": batch_size,
            "rounds": rounds,
            "timeout": timeout,
        }
        budget = None if timeout is None else max(1, rounds) * timeout  # timeout: per round
        # past the driver's deadline (then killed, it unregisters nothing) workers drop the KEKs
        request["key_ttl"] = None if budget is None else budget + _isolate.DEADLINE_GRACE
        request["key_lease"] = KEY_LEASE  # and whatever the deadline, once renewals stop
        request["provision_wait"] = PROVISION_WAIT  # (read here, as KEY_LEASE is)
        done = _checked_result(run_job(request, cluster, on_message, budget=budget))
    else:
        done, corrupt = 0, []
    remaining = sum(c for v, c in local.store.count_by_version().items() if v != current)
    return RewrapResult(done, current, remaining, tuple(sorted(corrupt)))


def _subject_list(subjects: object) -> list[str]:
    """(Parent) A piece of the corrupt subjects' list from the child, checked."""
    if not isinstance(subjects, list) or not all(
        isinstance(c, str) and len(c) <= 4096 for c in subjects
    ):
        raise JobError("the job driver sent a malformed rewrap result")
    return subjects


def _checked_result(msg: Message) -> int:
    """(Parent) The child's result: the count of keys rewrapped, checked; or its JobError
    (the corrupt subjects came before it, in pieces: ``{"t": "corrupt"}``)."""
    done = msg.get("rewrapped")
    unfinished, total, why = msg.get("unfinished"), msg.get("total"), msg.get("why")
    ints = (done, unfinished, total)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints):
        raise JobError("the job driver sent a malformed rewrap result")
    if unfinished:
        raise JobError(
            f"{unfinished} of {total} rewrap partitions did not finish ({clean(why)}); "
            f"{done} keys were rewrapped and committed",
            hint="run the rewrap again: it continues with what is left",
        )
    return int(done)  # type: ignore[arg-type]


def child_job(client: Client, request: dict[str, Any], chan: Channel) -> dict[str, Any]:
    """(Child) Plan the ranges, provision the workers, run the partitions; plain counts out."""
    spec: StoreSpec = request["spec"]
    current: int = request["current"]
    partitions = request["partitions"]
    if partitions is None:  # the options' threads, not who is connected (planned_threads)
        threads = planned_threads(request["cluster"])
        if threads is None:  # a scheduler given no worker count
            threads = sum(client.nthreads().values())
        partitions = 4 * max(1, threads)
    store = spec.open()
    try:
        ranges = plan(store, current, partitions, request.get("stale"))
    finally:
        store.close()
    done, corrupt, todo, why = _run(
        client,
        request["job_id"],
        spec,
        ranges,
        request["batch_size"],
        chan,
        request["rounds"],
        request["timeout"],
        request.get("key_ttl"),
        request.get("key_lease"),
        request.get("provision_wait", PROVISION_WAIT),
    )
    chan.send_items("corrupt", "subjects", corrupt, ITEMS_LINE)  # may be long: in pieces
    return {
        "rewrapped": done,
        "unfinished": todo,
        "total": len(ranges),
        "why": why,
    }


def _run(
    client: Client,
    job_id: str,
    spec: StoreSpec,
    ranges: list[SubjectRange],
    batch_size: int,
    chan: Channel,
    rounds: int,
    timeout: float | None,
    key_ttl: float | None = None,
    key_lease: float | None = None,
    wait: float = PROVISION_WAIT,
) -> tuple[int, list[str], int, str | None]:
    """(Child) Returns (rewrapped, corrupt subjects, unfinished partitions, why).
    ``key_ttl``: seconds a worker keeps the job's KEKs after it set the job up;
    ``key_lease``: seconds past this process's last renewal (:func:`_renewing`);
    ``wait``: :data:`PROVISION_WAIT`, as the parent read it."""
    if not ranges:
        return 0, [], 0, None
    name = plugin_name(job_id)
    plugin = _RewrapPlugin(job_id, spec.keyring_id, ttl=key_ttl, lease=key_lease)
    todo = dict(enumerate(ranges))
    done = 0
    corrupt: list[str] = []
    errors: list[str] = []
    lost: str | None = None
    lapsed: str | None = None  # a worker forgot the job's keys mid-job (lease, deadline)
    ready: set[str] = set()  # workers holding the job's keys
    stack = contextlib.ExitStack()
    guard = _ReadyGuard(client)
    try:
        stack.callback(guard.stop)
        registered.add(name)  # (before: the lifeline may unregister it from now on)
        _bounded(lambda: client.register_plugin(plugin, name=name), wait)
        stack.enter_context(_renewing(client, job_id, key_lease))
        for attempt in range(max(1, rounds)):
            if not todo:
                break
            lost = scheduler_lost(client)
            if lost is not None:  # each call would wait out Dask's reconnect (Cluster.timeout)
                errors = [lost]
                break
            ready |= _provision(client, job_id, chan, wait)
            ready &= set(_workers(client))  # workers that left since are no place for a part
            # only to workers that hold the keys: Dask would also queue parts on a worker
            # whose loop is blocked (it looks idle), and the job would wait for it. None
            # does: anywhere, as before (their tasks say why: lapsed keys, none yet)
            futures: dict[Any, int] = {
                client.submit(
                    rewrap_range,
                    job_id,
                    spec,
                    rng,
                    batch_size,
                    pure=False,
                    key=f"keysplit-rewrap-{job_id}-{i}-{attempt}",
                    workers=sorted(ready) or None,
                    allow_other_workers=False,
                ): i
                for i, rng in todo.items()
            }
            errors = []
            try:
                if ready:
                    guard.set(list(futures), ready)
                for fut in as_completed(futures, timeout=timeout):
                    i = futures[fut]
                    try:
                        part = fut.result()
                    except KeysLapsed as exc:  # for good on that worker: say so at the end
                        lapsed = str(exc)
                        continue
                    except NoJobKeys:
                        continue  # the worker joined after provisioning: next round
                    except Exception as exc:
                        lost = scheduler_lost(client)  # Dask cancelled every future: stop
                        if lost is not None:
                            break
                        gone = guard.cancelled(fut) if isinstance(exc, CancelledError) else None
                        # the guard's cancel: say why, not a bare "FutureCancelledError"
                        failed = _describe(exc) if gone is None else _left(gone, attempt, wait)
                        errors.append(failed)
                        continue
                    if not _is_part_result(part):
                        errors.append("a worker returned a malformed partition result")
                        continue
                    del todo[i]
                    done += part.rewrapped
                    corrupt += part.corrupt
                    chan.progress(done, 0)
            except TimeoutError:
                errors.insert(0, f"timed out after {timeout} s")
                client.cancel(list(futures))
                break
            if lost is not None:
                errors = [lost]
                break
    except Exception as exc:  # a call to the cluster failed: its scheduler may be gone
        lost = scheduler_lost(client, LOST_SETTLE if isinstance(exc, OSError) else 0.0)
        if lost is None:
            raise
        errors = [lost]
    finally:
        stack.close()
        registered.discard(name)
        if lost is None:  # a lost scheduler forgets it anyway (the call would wait for it)
            with contextlib.suppress(Exception):  # best effort: a dead cluster forgets anyway
                _bounded(lambda: client.unregister_worker_plugin(name), wait)
    why = (errors[0] if errors else lapsed or "workers kept joining without keys") if todo else None
    return done, corrupt, len(todo), why


def _left(workers: tuple[str, ...], attempt: int, wait: float = PROVISION_WAIT) -> str:
    """Why a round's parts were cancelled by :class:`_ReadyGuard` (a job that then fails
    said only "FutureCancelledError"): which workers held the job's keys, and that none
    is left. Addresses only: no secret. ``wait``: the job's :data:`PROVISION_WAIT`."""
    return (
        f"round {attempt + 1}'s partitions were cancelled: every worker holding the job's "
        f"keys ({', '.join(workers)}) left the cluster before they finished, and the others "
        f"were not provisioned (no answer within {wait:g} s, or joined later); "
        "the next round provisions the workers present then"
    )


class _ReadyGuard:
    """(Child) Cancels a round's parts once none of the workers they may run on (those
    holding the job's keys) is left: they would wait for one for ever (Dask keeps a task
    whose only allowed workers are gone), where cancelled they are run again next round,
    on workers provisioned then. A thread, checking every second. :meth:`cancelled` says
    whether it cancelled a future, and which workers it had found gone."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._futures: list[Any] = []
        self._ready: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gone: dict[str, tuple[str, ...]] = {}  # future key -> the workers gone

    def cancelled(self, future: Any) -> tuple[str, ...] | None:
        """The workers whose leaving made this guard cancel ``future``, or None."""
        with self._lock:
            return self._gone.get(str(future.key))

    def set(self, futures: list[Any], ready: set[str]) -> None:
        with self._lock:
            self._futures, self._ready = futures, set(ready)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._watch, name="keysplit-rewrap-ready", daemon=True
            )
            self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                futures, ready = self._futures, self._ready
            if not futures:
                continue
            with contextlib.suppress(Exception):  # the scheduler away: the job sees it
                if not ready & set(_workers(self._client)):
                    with self._lock:  # before the cancel: the job may see it at once
                        self._gone.update((str(f.key), tuple(sorted(ready))) for f in futures)
                    self._client.cancel(futures)
                    with self._lock:
                        if self._futures is futures:
                            self._futures = []

    def stop(self) -> None:
        self._stop.set()


@contextlib.contextmanager
def _renewing(client: Client, job_id: str, lease: float | None) -> Iterator[None]:
    """(Child) While inside, renew the job's keys on every worker every ``lease`` /
    :data:`RENEWALS` seconds (a thread: the job's own calls may block for longer). Only
    this process renews them, so they lapse on every worker once it stops (see
    :data:`KEY_LEASE`).

    Each worker is renewed by a call of its own: ``client.run`` waits for every worker it
    runs on (``wait=False`` only skips awaiting a coroutine on the worker), so one worker
    whose event loop is blocked past the lease would hold back the others' renewals and
    their keys would lapse too. A worker whose last renewal has not returned gets no new
    one (at most one queued per worker), and each carries its deadline (send time plus
    ``lease``): one that reaches a stuck worker late extends nothing past it."""
    if lease is None:
        yield
        return
    stop = threading.Event()
    pending: set[str] = set()  # workers whose renewal has not returned yet
    lock = threading.Lock()

    def renew_one(worker: str, until: float) -> None:
        try:
            with contextlib.suppress(Exception):  # a worker gone, the client closed: retry
                client.run(renew_keys, job_id, until, workers=[worker], on_error="ignore")
        finally:
            with lock:
                pending.discard(worker)

    def renew() -> None:
        while not stop.wait(lease / RENEWALS):
            with contextlib.suppress(Exception):  # the scheduler away: next round
                workers = _workers(client)
                until = time.time() + lease
                with lock:
                    due = [w for w in workers if w not in pending]
                    pending.update(due)
                for worker in due:
                    threading.Thread(
                        target=renew_one,
                        args=(worker, until),
                        name="keysplit-renew-worker",
                        daemon=True,
                    ).start()

    thread = threading.Thread(target=renew, name="keysplit-renew-keys", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()  # not joined: a renewal in flight may wait on the cluster


def _is_part_result(part: object) -> bool:
    return (
        isinstance(part, _PartResult)
        and isinstance(part.rewrapped, int)
        and isinstance(part.corrupt, list)
        and all(isinstance(c, str) for c in part.corrupt)
    )
