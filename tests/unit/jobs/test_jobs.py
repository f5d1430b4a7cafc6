"""keysplit.jobs on a real LocalCluster (2 worker processes, one cluster for the module).

Cross-checks against the in-process paths: a distributed rewrap must leave the store
byte-identical to ``UnsealedKeyring.rewrap`` (RFC 3394 is deterministic), and records
sealed by workers must open with ``UnsealedKeyring.decrypt``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from Crypto.Cipher import AES

pytest.importorskip("distributed")

import pandas as pd
from dask_cluster import two_workers
from dask_procs import DaskProcess, scheduler_process, worker_process
from distributed import Client
from distributed.security import Security
from paths import VECTORS_DIR
from service_helpers import pid_gone as _pid_gone

from keysplit import IntegrityError, Keyring, Share, UnsealedKeyring, ceremony, jobs, load_share
from keysplit import errors as keysplit_errors
from keysplit import record as keysplit_record
from keysplit.jobs import JobError, LoopbackDataKeys, _isolate, serve_keys
from keysplit.jobs._kek import open_keks, seal_keks
from keysplit.keyring import KEYRING_FILE, STORE_FILE, KekSet
from keysplit.store import SQLiteKeyStore, WrappedKey

NAMES = ["alice", "bob", "carol"]
TIMEOUT = 240.0  # per job round: generous for a loaded 2-core machine


SECURITY = Security.temporary()  # the module's cluster runs mutual TLS, as a real one must


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with two_workers(SECURITY) as c:
        yield c


def _cluster(client: Client) -> jobs.Cluster:
    """The module's cluster as a job sees it: its tls:// address and a client certificate."""
    return jobs.Cluster(
        client.scheduler.address,
        workers=2,  # its jobs plan for both workers, even while one restarts
        tls_ca=SECURITY.tls_ca_file,
        tls_cert=SECURITY.tls_client_cert,
        tls_key=SECURITY.tls_client_key,
    )


@pytest.fixture()
def cluster(client: Client) -> jobs.Cluster:
    return _cluster(client)


@pytest.fixture()
def dask_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Dask's TLS settings for CLI runs (in this process and in child processes)."""
    import dask.config

    files = {}
    for key, pem in (
        ("CA_FILE", SECURITY.tls_ca_file),
        ("CLIENT__CERT", SECURITY.tls_client_cert),
        ("CLIENT__KEY", SECURITY.tls_client_key),
    ):
        path = tmp_path / f"dask-{key.lower()}.pem"
        path.write_text(pem)
        path.chmod(0o600)
        files[key] = str(path)
        monkeypatch.setenv(f"DASK_DISTRIBUTED__COMM__TLS__{key}", str(path))
    with dask.config.set(
        {
            "distributed.comm.tls.ca-file": files["CA_FILE"],
            "distributed.comm.tls.client.cert": files["CLIENT__CERT"],
            "distributed.comm.tls.client.key": files["CLIENT__KEY"],
        }
    ):
        yield


SAMPLE = "user/0000007"


def _keyring(path: Path, n: int) -> tuple[Path, list[Share]]:
    """A keyring with ``n`` data keys under KEK v1, rotated to v2 (so all n are stale);
    ``sample.rec`` beside it is a record of SAMPLE sealed before the rotation."""
    _, shares = Keyring.create(path, 2, NAMES)
    quorum = [shares["alice"], shares["bob"]]
    with Keyring.open(path).unseal(quorum) as ukr:
        # Bulk-made keys, stored the way the keyring stores them (job_keks' wrap).
        raw = np.frombuffer(os.urandom(16 * n), np.uint8).reshape(n, 16)
        rows = ukr.keks_for_rewrap().only([1]).wrap([f"user/{i:07d}" for i in range(n)], raw)
        ukr.store.insert_many(rows)
        (path.parent / f"{path.name}.rec").write_bytes(ukr.encrypt(b"old", subject=SAMPLE))
        ukr.rotate()
    return path, quorum


def _rows(path: Path, keyring_id: str) -> list[WrappedKey]:
    store = SQLiteKeyStore(path / "keys.sqlite", keyring_id)
    try:
        return [r for batch in store.iter_subjects(10_000) for r in batch]
    finally:
        store.close()


def _open(path: Path, quorum: list[Share]) -> UnsealedKeyring:
    return Keyring.open(path).unseal(quorum)


def test_plan_cuts_stale_keys_into_disjoint_ranges(tmp_path: Path) -> None:
    path, quorum = _keyring(tmp_path / "kr", 300)
    with _open(path, quorum) as ukr:
        store = ukr.store
        assert jobs.plan(store, 1, 4) == []  # relative to v1 nothing is stale
        for parts in (1, 3, 7, 300, 1000):
            ranges = jobs.plan(store, 2, parts)
            assert ranges[0].after == "" and ranges[-1].last is None
            assert len(ranges) <= min(parts, 300)
            covered: list[str] = []
            for r in ranges:
                rows = store.stale_batch(2, r.after, 10_000)
                covered += [x.subject for x in rows if r.last is None or x.subject <= r.last]
            assert covered == sorted(f"user/{i:07d}" for i in range(300))
            sizes = [
                sum(
                    1
                    for x in store.stale_batch(2, r.after, 10_000)
                    if r.last is None or x.subject <= r.last
                )
                for r in ranges
            ]
            assert max(sizes) - min(sizes) <= max(sizes) // 2 + 1
            # the stale count the job's parent passes on gives the same plan
            assert jobs.plan(store, 2, parts, stale=300) == ranges
        with pytest.raises(ValueError):
            jobs.plan(store, 2, 0)


def test_a_rewrap_worker_keeps_a_store_per_thread_until_it_forgets_the_job(
    tmp_path: Path,
) -> None:
    """A partition reuses its worker thread's open store (no connection set-up per
    partition); forgetting the job (teardown, the ttl) closes the idle ones at once and
    one a partition is using when that partition returns (its batch still commits), so a
    job whose driver was killed does not hold connections for the worker's lifetime."""
    import time

    from keysplit.jobs._worker import NoJobKeys
    from keysplit.jobs.rewrap import StoreSpec, _RewrapPlugin

    path, quorum = _keyring(tmp_path / "kr", 3)
    with _open(path, quorum) as ukr:
        spec = StoreSpec(ukr.keyring.store_url, ukr.keyring.keyring_id, str(path.resolve()))
    # as a worker receives it: pickled, then set up
    plugin = pickle.loads(pickle.dumps(_RewrapPlugin("j1", spec.keyring_id)))
    assert "<redacted>" in repr(plugin)
    plugin.setup(type("W", (), {"address": "tcp://127.0.0.1:1"})())
    first = plugin.acquire(spec)
    plugin.release()
    assert plugin.acquire(spec) is first  # the thread's next partition: the same store
    other: list[Any] = []
    forgotten, returned = threading.Event(), threading.Event()

    def partition() -> None:  # on another task thread: still running when the job ends
        other.append(plugin.acquire(spec))
        forgotten.wait(30)
        other.append(other[0].count_by_version())  # its batch in progress still works
        plugin.release()
        returned.set()

    thread = threading.Thread(target=partition)
    thread.start()
    plugin.release()  # this thread's partition returned: its store is idle
    deadline = time.monotonic() + 30
    while not other and time.monotonic() < deadline:
        time.sleep(0.01)
    assert other and other[0] is not first  # one per task thread
    plugin.forget()
    with pytest.raises(NoJobKeys):
        plugin.acquire(spec)  # nothing opens a store for a forgotten job
    forgotten.set()
    thread.join(30)
    assert returned.is_set() and other[1] == {1: 4}  # the 3 keys and SAMPLE's

    def closed(store: Any) -> bool:
        try:
            store.count_by_version()
        except keysplit_errors.KeyringError:
            return True
        return False

    deadline = time.monotonic() + 30  # the idle one is closed off the caller's thread
    while not (closed(first) and closed(other[0])) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert closed(first) and closed(other[0])


def test_kek_bundle_opens_only_for_its_worker_and_job() -> None:
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    def pub(k: X25519PrivateKey) -> bytes:
        return k.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)

    a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    job, kid = os.urandom(16).hex(), os.urandom(16).hex()
    keks = KekSet(kid, 3, {1: os.urandom(16), 2: os.urandom(16), 3: os.urandom(16)}, unbound=[1])
    sealed = seal_keks(keks, pub(a), job_id=job, worker="tcp://w1:1")
    got = open_keks(sealed, a, job_id=job, keyring_id=kid, worker="tcp://w1:1")
    assert (got.keyring_id, got.current, got.versions) == (kid, 3, (1, 2, 3))
    assert got.unbound == {1}  # the legacy flag travels: v1 rows keep RFC 3394's default IV
    assert all(got.kek(v) == keks.kek(v) for v in (1, 2, 3))
    # The opened set wraps and unwraps exactly like the driver's, per version: v1 with the
    # default IV (an independent RFC 3394 unwrap opens it), v2/v3 bound to the subject.
    raw = np.frombuffer(os.urandom(32), np.uint8).reshape(2, 16)
    for v in (1, 2, 3):
        ref = KekSet(kid, v, {v: keks.kek(v)}, unbound=[1] if v == 1 else [])
        mine = KekSet(got.keyring_id, v, {v: got.kek(v)}, unbound=got.unbound & {v})
        rows = mine.wrap(["s/a", "s/b"], raw)
        assert rows == ref.wrap(["s/a", "s/b"], raw)
        keys, ok = got.unwrap(rows)
        assert bool(ok.all()) and keys.tobytes() == raw.tobytes()
        default_iv_opens = True
        try:  # pycryptodome's KW (RFC 3394, default IV only): an independent implementation
            assert AES.new(keks.kek(v), AES.MODE_KW).unseal(rows[0].wrapped) == raw[0].tobytes()
        except ValueError:
            default_iv_opens = False
        assert default_iv_opens == (v == 1)
    for key, j, k, w in [
        (b, job, kid, "tcp://w1:1"),  # another worker's key
        (a, os.urandom(16).hex(), kid, "tcp://w1:1"),  # another job
        (a, job, os.urandom(16).hex(), "tcp://w1:1"),  # another keyring
        (a, job, kid, "tcp://w2:1"),  # replayed to another worker address
    ]:
        with pytest.raises(IntegrityError):
            open_keks(sealed, key, job_id=j, keyring_id=k, worker=w)
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    with pytest.raises(IntegrityError):
        open_keks(bytes(flipped), a, job_id=job, keyring_id=kid, worker="tcp://w1:1")
    assert keks.kek(1).hex() not in repr(keks) and keks.kek(1).hex() not in repr(got)


@pytest.mark.slow
def test_rewrap_1e5_keys_equals_in_process(cluster: jobs.Cluster, tmp_path: Path) -> None:
    path, quorum = _keyring(tmp_path / "a", 100_000)
    shutil.copytree(path, tmp_path / "b")
    with _open(path, quorum) as ukr:
        expected = ukr.rewrap()
        kid = ukr.keyring.keyring_id
    seen: list[tuple[int, int]] = []
    with _open(tmp_path / "b", quorum) as ukr:
        result = jobs.rewrap(
            ukr,
            cluster=cluster,
            partitions=8,
            progress=lambda d, t: seen.append((d, t)),
            timeout=TIMEOUT,
        )
        old = (tmp_path / "a.rec").read_bytes()
        assert ukr.decrypt(old, subject=SAMPLE) == b"old"  # records untouched by rewrap
    assert (result.rewrapped, result.kek_version, result.remaining) == (100_000, 2, 0)
    assert (expected.rewrapped, expected.remaining) == (100_000, 0)
    assert seen[0] == (0, 100_000) and seen[-1] == (100_000, 100_000)  # keys, per partition
    assert len(seen) == 9 and [d for d, _ in seen] == sorted(d for d, _ in seen)
    a, b = _rows(path, kid), _rows(tmp_path / "b", kid)
    assert len(a) == 100_000 and all(r.kek_version == 2 for r in a)
    assert a == b  # byte-identical to the in-process rewrap


def _raw_keys(ukr: UnsealedKeyring, rows: list[WrappedKey]) -> list[bytes]:
    """Every stored row unwrapped under its own KEK version; fails on any bad row."""
    keks = ukr.keks_for_rewrap().only(sorted({r.kek_version for r in rows}))
    raw, ok = keks.unwrap(rows)
    assert bool(ok.all()), "a stored key does not unwrap: a half-done write"
    return [k.tobytes() for k in raw]


LEGACY = json.loads((VECTORS_DIR / "keyring_legacy_store.json").read_text())


def _default_iv_opens(kek: bytes, row: WrappedKey) -> bool:
    """pycryptodome's RFC 3394 (default IV only): an implementation independent of ours."""
    try:
        AES.new(kek, AES.MODE_KW).unseal(row.wrapped)
    except ValueError:
        return False
    return True


def test_rewrap_ceremony_on_dask_binds_legacy_and_bound_rows(
    cluster: jobs.Cluster, tmp_path: Path
) -> None:
    """A keyring from before subject binding (tests/vectors): v1 rows use the default IV,
    v2 rows are bound; rotated to v3, the Dask rewrap must open both kinds (the unbound
    flag reaches the workers) and bind every row, byte-identical to the in-process rewrap;
    the keyring then reads every key, and the ceremony records one ``rewrap`` entry."""
    path, kid = tmp_path / "a", LEGACY["keyring_id"]
    path.mkdir()
    (path / KEYRING_FILE).write_bytes(bytes.fromhex(LEGACY["keyring_file"]))
    store = SQLiteKeyStore(path / STORE_FILE, kid, create=True)
    store.insert_many([WrappedKey(s, v, bytes.fromhex(w)) for s, v, w in LEGACY["data_keys"]])
    store.close()
    shares = [Share.parse(LEGACY["shares"][n]) for n in ("c1", "c3")]
    legacy, bound = [f"legacy/{i:04d}" for i in range(2000)], [f"bound/{i:04d}" for i in range(500)]
    n = len(LEGACY["data_keys"]) + 2500
    with _open(path, shares) as ukr:
        assert ukr.keyring.unbound_kek_versions == (1,)
        ukr.data_keys(legacy, create=True)  # under v1, written with the default IV
        ukr.rotate()  # v2, bound
        ukr.data_keys(bound, create=True)
        ukr.rotate()  # v3
        keks = {v: ukr.keks_for_rewrap().kek(v) for v in (1, 2, 3)}
        rows = _rows(path, kid)
        before = dict(zip([r.subject for r in rows], _raw_keys(ukr, rows), strict=True))
    assert {r.kek_version for r in rows} == {1, 2} and len(rows) == n
    assert all(_default_iv_opens(keks[1], r) for r in rows if r.kek_version == 1)
    assert not any(_default_iv_opens(keks[2], r) for r in rows if r.kek_version == 2)
    shutil.copytree(path, tmp_path / "b")
    with _open(tmp_path / "b", shares) as ukr:
        assert ukr.rewrap().rewrapped == n  # the in-process reference

    kr = Keyring.open(path)
    done = ceremony.rewrap(
        kr,
        ceremony.Quorum(kr, shares),
        batch_size=300,
        runner=lambda ukr, b, p: jobs.rewrap(
            ukr, cluster=cluster, partitions=4, batch_size=b, progress=p, timeout=TIMEOUT
        ),
    )
    assert (done.value.rewrapped, done.value.remaining, done.value.corrupt) == (n, 0, ())
    after = _rows(path, kid)
    assert after == _rows(tmp_path / "b", kid)  # byte-identical to the in-process rewrap
    assert {r.kek_version for r in after} == {3}
    assert not any(_default_iv_opens(keks[3], r) for r in after)  # every row bound now
    with _open(path, shares) as ukr:
        assert None not in ukr.data_keys(list(before))  # raises if any row fails its check
        assert dict(zip(list(before), _raw_keys(ukr, after), strict=True)) == before
        for s, rec in LEGACY["records"].items():
            assert ukr.decrypt(bytes.fromhex(rec), subject=s) == f"record of {s}".encode()
    entries = [e for e in Keyring.open(path).audit_log().entries() if e.event == "rewrap"]
    assert len(entries) == 1 and done.entry == entries[0]
    assert entries[0].data["rewrapped"] == n and entries[0].data["kek_version"] == 3


def test_worker_killed_mid_job_leaves_nothing_half_done(client: Client, tmp_path: Path) -> None:
    n = 20_000  # 16 partitions of 1 250 keys: the kill lands after the first one
    path, quorum = _keyring(tmp_path / "a", n)
    shutil.copytree(path, tmp_path / "b")
    with _open(tmp_path / "b", quorum) as ukr:
        ukr.rewrap()  # the in-process reference
        kid = ukr.keyring.keyring_id
    pids = client.run(os.getpid)
    victim = sorted(pids)[0]
    killed: list[int] = []

    def kill_once(done: int, total: int) -> None:
        if done >= 1 and not killed:
            os.kill(pids[victim], signal.SIGKILL)
            killed.append(pids[victim])

    with _open(path, quorum) as ukr:
        before = _raw_keys(ukr, _rows(path, kid))
        try:
            first = jobs.rewrap(
                ukr,
                cluster=_cluster(client),
                partitions=16,
                batch_size=500,
                progress=kill_once,
                timeout=TIMEOUT,
            )
            finished_first = first.remaining == 0
        except JobError:
            finished_first = False
        assert killed
        mid = _rows(path, kid)
        assert len(mid) == n and {r.kek_version for r in mid} <= {1, 2}
        assert _raw_keys(ukr, mid) == before  # each key: old wrap or new wrap, same key
        client.wait_for_workers(2, timeout=120)
        again = jobs.rewrap(ukr, cluster=_cluster(client), partitions=4, timeout=TIMEOUT)
        assert again.remaining == 0
        assert finished_first == (again.rewrapped == 0)
    assert _rows(path, kid) == _rows(tmp_path / "b", kid)


# -- a scheduler killed mid-job (the client's reconnect wait is not the job's) ---------------


@contextlib.contextmanager
def _stuck_key_service() -> Iterator[jobs.ServiceDataKeys]:
    """A "key service" that never answers: a listening Unix socket that is never read
    (connections and requests go through, no answer ever comes)."""
    sockdir = Path(tempfile.mkdtemp(prefix="kst", dir="/tmp"))  # AF_UNIX paths are short
    stuck = socket.socket(socket.AF_UNIX)
    try:
        stuck.bind(str(sockdir / "s.sock"))
        stuck.listen(64)
        yield jobs.ServiceDataKeys(f"unix:{sockdir / 's.sock'}", "ks-token-never-read")
    finally:
        stuck.close()  # the workers' pending requests fail now, not at their 60 s timeout
        shutil.rmtree(sockdir, ignore_errors=True)


@contextlib.contextmanager
def _doomed_cluster(
    kill_at: str | None = None, notes: Path | None = None, procs: list[Any] | None = None
) -> Iterator[tuple[str, DaskProcess]]:
    """A scheduler and one worker, each its own process on loopback (plain tcp: a test
    may kill the scheduler), forked with Dask imported (tests/support/dask_procs.py);
    ``kill_at``: the worker kills the scheduler at that point of a job
    (tests/support/dask_kill_preload.py), noting into ``notes``; ``procs`` gets the worker."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    addr = f"tcp://127.0.0.1:{port}"
    sched = scheduler_process(port)
    preload: list[str] = []
    env: dict[str, str] = {}
    if kill_at is not None:
        preload = [str(Path(__file__).parents[2] / "support" / "dask_kill_preload.py")]
        env = {"KS_TEST_SCHEDULER_PID": str(sched.pid), "KS_TEST_KILL_AT": kill_at}
        env["KS_TEST_NOTES"] = str(notes)
    worker = worker_process(addr, preload, env)
    if procs is not None:
        procs.append(worker)
    try:
        with Client(addr, timeout=120) as c:
            c.wait_for_workers(1, timeout=120)
        yield addr, sched
    finally:
        for p in (worker, sched):
            p.kill()
            p.wait(timeout=60)


def _kill(proc: subprocess.Popen[bytes] | DaskProcess) -> None:
    proc.kill()
    proc.wait(timeout=60)


def _no_driver_kept_for(cluster: jobs.Cluster) -> bool:
    key = hashlib.sha256(json.dumps(cluster.to_doc(), sort_keys=True).encode()).hexdigest()
    return not any(p.poll() is None for p in _isolate._idle.get(key, []))


def test_a_rewrap_whose_scheduler_is_killed_fails_at_once_naming_it(
    client: Client, tmp_path: Path
) -> None:
    """Before: Dask cancelled the job's futures when the scheduler's connection closed, the
    rewrap went on to its next round and waited in ``client.run`` for Dask's reconnect
    (the cluster's connect timeout, 120 s, whatever the job's ``timeout``), then failed
    with "OSError: Timed out trying to connect". Now the job stops when its client loses
    the scheduler: its error names it and what was committed stays (each key under its old
    or its new KEK); its driver child is not kept; a rerun elsewhere finishes the job."""
    n = 20_000
    path, quorum = _keyring(tmp_path / "a", n)
    kid = Keyring.open(path).keyring_id
    with _doomed_cluster() as (addr, sched), _open(path, quorum) as ukr:
        before = _raw_keys(ukr, _rows(path, kid))

        def kill_after_first(done: int, total: int) -> None:
            if done >= 1 and sched.poll() is None:
                _kill(sched)

        doomed = jobs.Cluster(addr)  # its connect timeout: Dask's 120 s by default
        with pytest.raises(JobError, match="did not finish") as e:
            jobs.rewrap(
                ukr, cluster=doomed, partitions=16, batch_size=500, progress=kill_after_first,
                timeout=TIMEOUT,
            )  # fmt: skip
        assert sched.poll() is not None
        assert f"(lost the connection to the Dask scheduler at {addr})" in str(e.value)
        assert "keys were rewrapped and committed" in str(e.value)
        assert _no_driver_kept_for(doomed)
        mid = _rows(path, kid)
        assert len(mid) == n and {r.kek_version for r in mid} <= {1, 2}
        assert 1 in {r.kek_version for r in mid}  # the job did stop part-way
        assert _raw_keys(ukr, mid) == before
    with _open(path, quorum) as ukr:  # (the doomed worker is gone: nothing rewraps meanwhile)
        again = jobs.rewrap(ukr, cluster=_cluster(client), partitions=4, timeout=TIMEOUT)
        assert again.remaining == 0 and again.rewrapped > 0
        assert _raw_keys(ukr, _rows(path, kid)) == before


@pytest.mark.parametrize("point", ["register_plugin", "client.run", "after provisioning"])
def test_a_rewrap_whose_scheduler_dies_inside_a_dask_call_fails_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    """The scheduler dies while the driver child is inside ``register_plugin`` (the worker
    kills it from the job plugin's setup), inside ``client.run`` (from the worker's answer
    to the key request), or just before its next ``client.run`` (this process kills it
    when asked to seal the keys). Before: the first two failed at once but, the client not
    having seen the loss yet, as a bare "CommClosedError" (or any Dask error); the third
    waited out the client's reconnect (the cluster's connect timeout, here 300 s; the job's
    own timeout does not cover these calls), so the job's deadline (5 s and a grace of
    30 s) killed the child. Now each ends with the rewrap's error naming the lost
    scheduler, the store consistent (each key under its old or its new KEK), no driver
    child kept."""
    n = 2_000
    path, quorum = _keyring(tmp_path / "a", n)
    kid = Keyring.open(path).keyring_id
    monkeypatch.setattr(_isolate, "DEADLINE_GRACE", 30.0)
    kill_at = {"register_plugin": "setup", "client.run": "run"}.get(point)
    with _doomed_cluster(kill_at) as (addr, sched), _open(path, quorum) as ukr:
        before = _raw_keys(ukr, _rows(path, kid))
        if point == "after provisioning":
            rewrap_module = importlib.import_module("keysplit.jobs.rewrap")
            real_sealer = rewrap_module._sealer

            def sealer(*args: Any) -> Any:
                seal = real_sealer(*args)

                def on_keys(msg: Any) -> Any:
                    _kill(sched)  # the child's next call: installing the sealed keys
                    return seal(msg)

                return on_keys

            monkeypatch.setattr(rewrap_module, "_sealer", sealer)
        doomed = jobs.Cluster(addr, timeout=300)
        with pytest.raises(JobError) as e:
            jobs.rewrap(ukr, cluster=doomed, partitions=4, rounds=1, timeout=5)
        assert sched.poll() is not None, e.value
        assert str(e.value) == (
            f"4 of 4 rewrap partitions did not finish (lost the connection to the Dask "
            f"scheduler at {addr}); 0 keys were rewrapped and committed"
        )
        assert _no_driver_kept_for(doomed)
        rows = _rows(path, kid)
        assert {r.kek_version for r in rows} == {1} and _raw_keys(ukr, rows) == before


def test_a_dataset_job_on_a_scheduler_lost_between_jobs_fails_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A driver child kept from an earlier job whose scheduler then died: before, the next
    job's ``compute`` went to a client still waiting out its reconnect (300 s here), its
    futures were never cancelled, the job's own timeout (5 s) expired and its ``cancel``
    waited for the reconnect, so the job's deadline killed the child. Now the child closed
    its client when it lost the scheduler, and the job fails at once naming it."""
    _dataset(tmp_path / "in")
    path, quorum = _keyring(tmp_path / "a", 10)
    monkeypatch.setattr(_isolate, "DEADLINE_GRACE", 30.0)
    with _doomed_cluster() as (addr, sched), _open(path, quorum) as ukr:
        doomed = jobs.Cluster(addr, timeout=301)
        assert jobs.rewrap(ukr, cluster=doomed, partitions=1).remaining == 0
        assert not _no_driver_kept_for(doomed)  # kept for the next job on this cluster
        _kill(sched)
        with _stuck_key_service() as source, pytest.raises(JobError) as e:
            jobs.scan_dataset(
                tmp_path / "in", "body", "user", service=source, cluster=doomed, timeout=5
            )
        assert str(e.value) == (
            f"the job lost the connection to the Dask scheduler at {addr} "
            "(Dask cancelled its tasks); nothing was written"
        )
        assert _no_driver_kept_for(doomed)


def test_a_worker_orphaned_by_its_scheduler_stops_its_partition_at_the_next_batch(
    tmp_path: Path,
) -> None:
    """The scheduler dies while the only worker runs a rewrap partition (of 20 batches):
    Dask closes the worker, which tears the job's plugin down, but before, the partition
    went on with the KEKs it had taken at its start, rewrapping its 19 other batches
    (committed, under no job) and keeping the KEKs until the process exited. Now the
    task asks for the KEKs batch by batch and stops at its next batch. The worker notes,
    from inside the partition, when its plugins held no KEKs any more (a worker-side probe)
    and every batch it rewrapped after that."""
    n = 2_000
    path, quorum = _keyring(tmp_path / "a", n)
    kid = Keyring.open(path).keyring_id
    notes = tmp_path / "notes"
    procs: list[DaskProcess] = []
    with _doomed_cluster("batch", notes, procs) as (addr, _), _open(path, quorum) as ukr:
        before = _raw_keys(ukr, _rows(path, kid))
        with pytest.raises(JobError, match="lost the connection to the Dask scheduler"):
            jobs.rewrap(ukr, cluster=jobs.Cluster(addr), partitions=1, batch_size=100, timeout=60)
        procs[0].wait(timeout=120)  # the orphan closed once its partition ended
        assert notes.read_text().splitlines() == ["forgotten"]
        rows = _rows(path, kid)
        assert _raw_keys(ukr, rows) == before
        assert sum(r.kek_version == 2 for r in rows) == 100  # the one batch before the kill


def _recording_drivers(monkeypatch: pytest.MonkeyPatch) -> list[subprocess.Popen[bytes]]:
    """The driver children jobs start from now on (their processes, to signal)."""
    started: list[subprocess.Popen[bytes]] = []
    real_start = _isolate._start

    def start() -> subprocess.Popen[bytes]:
        started.append(real_start())
        return started[-1]

    monkeypatch.setattr(_isolate, "_start", start)
    return started


def _job_plugins_holding_keys(dask_worker: Any = None) -> int:
    from keysplit.jobs._worker import JobKeysPlugin

    plugins = dask_worker.plugins.values()
    return sum(isinstance(p, JobKeysPlugin) and p.keks is not None for p in plugins)


def _job_plugin_names(dask_worker: Any = None) -> list[str]:
    return [name for name in dask_worker.plugins if str(name).startswith("keysplit-job-")]


def _job_plugins(client: Client) -> set[str]:
    return {name for names in client.run(_job_plugin_names).values() for name in names}


def _signal_at_first_part(
    started: list[subprocess.Popen[bytes]], sig: int
) -> tuple[Callable[[int, int], None], list[int]]:
    """A job's progress callback that sends ``sig`` to its driver child once the first
    partition is done, and the list it notes that count in."""
    sent: list[int] = []

    def progress(done: int, total: int) -> None:
        if done and not sent:
            sent.append(done)
            os.kill(started[-1].pid, sig)

    return progress, sent


def _forgotten_everywhere(client: Client) -> bool:
    """Wait (at most 60 s) until no job plugin on any worker holds KEKs (a worker probe)."""
    for _ in range(600):
        if not any(client.run(_job_plugins_holding_keys).values()):
            return True
        threading.Event().wait(0.1)
    return False


def test_workers_forget_a_jobs_keks_past_its_deadline_when_its_driver_was_killed(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rewrap's driver child, suspended after its first partition, is killed at the
    job's deadline (10 s and a grace of 5 s): it never unregisters the job's plugin, and
    before, every worker kept the job's KEKs for as long as it ran. Now each worker's
    plugin forgets them once the job's deadline has passed since its setup (the plugin's
    own timer): a probe on every worker finds no job plugin holding keys. The key lease is
    an hour here, so only that timer can make them forget within the probe's 60 s."""
    path, quorum = _keyring(tmp_path / "a", 4_000)
    started = _recording_drivers(monkeypatch)
    monkeypatch.setattr(_isolate, "DEADLINE_GRACE", 5.0)
    rewrap_module = importlib.import_module("keysplit.jobs.rewrap")
    monkeypatch.setattr(rewrap_module, "KEY_LEASE", 3600.0)  # (60 s: it lapsed in the probe)
    suspend, suspended = _signal_at_first_part(started, signal.SIGSTOP)
    cluster = dataclasses.replace(_cluster(client), timeout=118)  # a driver of its own
    before = _job_plugins(client)
    try:
        with _open(path, quorum) as ukr, pytest.raises(JobError, match="it was killed"):
            jobs.rewrap(
                ukr, cluster=cluster, partitions=8, batch_size=100, progress=suspend,
                rounds=1, timeout=10,
            )  # fmt: skip
        assert suspended and started[0].poll() == -signal.SIGKILL
        left = _job_plugins(client) - before
        assert left  # the killed driver unregistered nothing
        assert _forgotten_everywhere(client)
    finally:
        for name in _job_plugins(client) - before:
            client.unregister_worker_plugin(name)


def test_workers_forget_the_keks_of_a_job_without_timeout_once_its_driver_was_killed(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rewrap without a ``timeout`` (no deadline, so no ``ttl``) whose driver child is
    SIGKILLed after its first partition: it unregisters nothing, and before, every worker
    of the (living) scheduler kept the job's KEKs for as long as it ran. Now the driver
    renews them on every worker while the job runs and each worker's plugin forgets them
    :data:`KEY_LEASE` (here 3 s) past the last renewal: a probe on every worker finds no
    job plugin holding keys."""
    path, quorum = _keyring(tmp_path / "a", 4_000)
    started = _recording_drivers(monkeypatch)
    rewrap_module = importlib.import_module("keysplit.jobs.rewrap")
    monkeypatch.setattr(rewrap_module, "KEY_LEASE", 3.0, raising=False)  # (new: fails before)
    kill, killed = _signal_at_first_part(started, signal.SIGKILL)
    cluster = dataclasses.replace(_cluster(client), timeout=117)  # a driver of its own
    before = _job_plugins(client)
    try:
        with _open(path, quorum) as ukr, pytest.raises(JobError, match="without a result"):
            jobs.rewrap(ukr, cluster=cluster, partitions=8, batch_size=100, progress=kill, rounds=1)
        assert killed and started[0].poll() == -signal.SIGKILL
        assert _job_plugins(client) - before  # the killed driver unregistered nothing
        assert _forgotten_everywhere(client)
    finally:
        for name in _job_plugins(client) - before:
            client.unregister_worker_plugin(name)


def test_a_rewrap_whose_keys_lapse_on_its_workers_says_so(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease no renewal can keep (1 ms, where a renewal's round trip takes longer), as
    for a worker whose event loop is starved past ``KEY_LEASE``: each worker forgets the
    job's keys mid-job and its partitions fail. Before, the job said "workers kept joining
    without keys", which points at the cluster's membership; now it says the keys lapsed,
    why, and what to do."""
    path, quorum = _keyring(tmp_path / "a", 400)
    rewrap_module = importlib.import_module("keysplit.jobs.rewrap")
    monkeypatch.setattr(rewrap_module, "KEY_LEASE", 0.001)
    before = _job_plugins(client)
    try:
        with _open(path, quorum) as ukr, pytest.raises(JobError) as failed:
            jobs.rewrap(
                ukr, cluster=_cluster(client), partitions=4, batch_size=100, rounds=2,
                timeout=TIMEOUT,
            )  # fmt: skip
        text = str(failed.value)
        assert "keys lapsed on worker" in text  # (before: "workers kept joining without keys")
        assert "lease was not renewed in time" in text and "spare CPU" in text
    finally:
        for name in _job_plugins(client) - before:
            client.unregister_worker_plugin(name)


def test_a_job_plugin_keeps_its_keys_while_renewed_and_forgets_them_once_not() -> None:
    """In-process (the cluster test above kills the renewing driver): renewals every
    0.05 s keep a 2 s lease's keys for 3 s; once they stop, the keys go, also for a task
    that asks before the plugin's own thread has run."""
    from keysplit.jobs._worker import JobKeysPlugin

    class _Worker:
        address = "tls://127.0.0.1:1"

    plugin = JobKeysPlugin("0" * 32, "kid", lease=2.0)
    plugin.setup(_Worker())
    plugin.keks = KekSet.__new__(KekSet)  # a stand-in: only its presence is looked at
    for _ in range(60):
        plugin.renew()
        threading.Event().wait(0.05)
    assert plugin.keks is not None and not plugin.lapsed()
    for _ in range(300):
        if plugin.keks is None:
            break
        threading.Event().wait(0.05)
    assert plugin.keks is None and plugin.lapsed()
    plugin.teardown(_Worker())


def test_a_dataset_job_whose_scheduler_is_killed_fails_at_once_and_writes_nothing(
    tmp_path: Path,
) -> None:
    """Its parts wait on a key service that never answers; the scheduler is killed once
    they run. The job fails with a JobError naming the lost scheduler, leaves no
    destination and no staging directory, and its driver child is not kept."""
    _dataset(tmp_path / "in")
    with _stuck_key_service() as source, _doomed_cluster() as (addr, sched):
        killed: list[int] = []

        def kill_when_running(done: int, total: int) -> None:
            if not killed:
                killed.append(done)
                _kill(sched)

        doomed = jobs.Cluster(addr)
        with pytest.raises(JobError) as e:
            jobs.encrypt_dataset(
                tmp_path / "in", tmp_path / "enc", "body", "user", service=source,
                cluster=doomed, timeout=TIMEOUT, progress=kill_when_running,
            )  # fmt: skip
        assert killed == [0]
        assert str(e.value) == (
            f"the job lost the connection to the Dask scheduler at {addr} "
            "(Dask cancelled its tasks); nothing was written"
        )
        assert "scheduler is back" in (e.value.hint or "")
        assert _no_driver_kept_for(doomed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no dst, no stage


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_suspended_driver_child_is_killed_at_the_jobs_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: only the driver child enforced a job's ``timeout``; a child that stopped
    answering (here SIGSTOP, right after it reported its first progress) held the job's
    process for ever. Now the parent kills the child's process group (the child and its
    LocalCluster's worker processes) past the timeout and a grace, the job fails with a
    JobError saying so, and the stage the killed child left is removed. (Before the fix a
    safety timer kills the child after 90 s: the job then fails otherwise.)"""
    _dataset(tmp_path / "in")
    started = _recording_drivers(monkeypatch)
    monkeypatch.setattr(_isolate, "DEADLINE_GRACE", 10.0, raising=False)  # (new: fails before)
    safety: list[threading.Timer] = []

    def suspend(done: int, total: int) -> None:
        if not safety:  # the parts run (and wait on the key service): stop the child
            os.kill(started[-1].pid, signal.SIGSTOP)
            safety.append(threading.Timer(90, started[-1].kill))
            safety[0].start()

    local = jobs.Cluster(workers=1, timeout=119)  # its own driver child, never a reused one
    try:
        with _stuck_key_service() as source, pytest.raises(JobError) as e:
            jobs.encrypt_dataset(
                tmp_path / "in", tmp_path / "enc", "body", "user", service=source,
                cluster=local, timeout=3, progress=suspend,
            )  # fmt: skip
    finally:
        for t in safety:
            t.cancel()
    assert len(started) == 1 and safety
    assert str(e.value) == (
        "the job driver process did not finish the job within 13 s (its timeout and a grace); "
        "it was killed"
    )
    assert started[0].poll() == -signal.SIGKILL
    pgid = started[0].pid
    for _ in range(600):  # the LocalCluster's processes went with it (reaped by init)
        if _group_gone(pgid):
            break
        threading.Event().wait(0.1)
    assert _group_gone(pgid)
    assert _no_driver_kept_for(local)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no dst, no stage


def _dataset(path: Path) -> pd.DataFrame:
    """Two Parquet files (so two partitions): 300 rows over 7 users, one null value."""
    users = [f"contacts/{i % 7}" for i in range(300)]
    values: list[bytes | None] = [f"row {i} ".encode() * (i % 5) for i in range(300)]
    values[17] = None
    df = pd.DataFrame({"id": range(300), "user": users, "body": values})
    path.mkdir()
    df.iloc[:150].to_parquet(path / "part.0.parquet")
    df.iloc[150:].to_parquet(path / "part.1.parquet")
    return df


def test_parquet_round_trip_byte_compatible_and_moved_row_fails(
    cluster: jobs.Cluster, tmp_path: Path
) -> None:
    _, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    df = _dataset(tmp_path / "in")
    ctx = {"table": "contacts", "column": "body"}
    with _open(tmp_path / "kr", [shares["bob"], shares["carol"]]) as ukr:
        with pytest.raises(TypeError):
            pickle.dumps(ukr)  # the unsealed keyring never travels to workers
        with serve_keys(ukr) as source:
            steps: list[tuple[int, int]] = []
            n = jobs.encrypt_dataset(
                tmp_path / "in",
                tmp_path / "enc",
                "body",
                "user",
                service=source,
                context=ctx,
                cluster=cluster,
                progress=lambda d, t: steps.append((d, t)),
            )
            assert n == 300 and steps[-1] == (2, 2)
            enc = pd.read_parquet(tmp_path / "enc").sort_values("id").reset_index(drop=True)
            assert enc["body"][17] is None
            for i in (0, 5, 150, 299):  # the keyring itself opens the workers' records
                rec = enc["body"][i]
                assert ukr.decrypt(rec, subject=enc["user"][i], context=ctx) == df["body"][i]
            jobs.decrypt_dataset(
                tmp_path / "enc",
                tmp_path / "dec",
                "body",
                "user",
                service=source,
                context=ctx,
                cluster=cluster,
            )
            dec = pd.read_parquet(tmp_path / "dec").sort_values("id").reset_index(drop=True)
            assert dec["body"].tolist() == df["body"].tolist()
            assert dec["user"].tolist() == df["user"].tolist()
            assert jobs.scan_dataset(
                tmp_path / "enc", "body", "user", service=source, context=ctx, cluster=cluster
            ).ok

            # A row moved to another user, a flipped bit, garbage, a shredded subject.
            bad = enc.copy()
            bad.loc[3, "user"] = "contacts/4"
            flipped = bytearray(bad["body"][8])
            flipped[-1] ^= 1
            bad.at[8, "body"] = bytes(flipped)
            bad.at[9, "body"] = b"not a record"
            bad.loc[10, "user"] = "contacts/never"
            (tmp_path / "bad").mkdir()
            bad.to_parquet(tmp_path / "bad" / "part.0.parquet")
            with pytest.raises(IntegrityError):
                jobs.decrypt_dataset(
                    tmp_path / "bad",
                    tmp_path / "dec2",
                    "body",
                    "user",
                    service=source,
                    context=ctx,
                    cluster=cluster,
                )
            report = jobs.scan_dataset(
                tmp_path / "bad", "body", "user", service=source, context=ctx, cluster=cluster
            )
            assert report.checked == 299
            assert {(b.row, b.subject, b.reason) for b in report.bad} == {
                (3, "contacts/4", "authentication failed"),
                (8, bad["user"][8], "authentication failed"),
                (9, bad["user"][9], "malformed"),
                (10, "contacts/never", "no data key"),
            }
            # Same records under another context: all fail.
            other = jobs.scan_dataset(
                tmp_path / "enc",
                "body",
                "user",
                service=source,
                context={"table": "other"},
                cluster=cluster,
            )
            assert len(other.bad) == 299


def test_a_dataset_is_put_in_place_only_once_its_entry_is_recorded(
    cluster: jobs.Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ceremony.dataset`` appended its ``dataset`` entry after the job, and the job (on a
    cluster: its driver child) had already renamed the finished output into place: a kill
    of the keyring process between the two, or an append that failed, left a decrypted
    dataset on disk with nothing on the record. Now the entry is appended once every part
    is written and before the output is renamed (the driver child waits for the parent's
    answer), so an append that fails leaves no output and no staging directory."""
    from keysplit.audit import events

    _, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    df = _dataset(tmp_path / "in")
    kr = Keyring.open(tmp_path / "kr")
    with _open(tmp_path / "kr", [shares["alice"], shares["bob"]]) as ukr, serve_keys(ukr) as src:
        jobs.encrypt_dataset(tmp_path / "in", tmp_path / "enc", "body", "user", service=src)
    real = events.record
    out = tmp_path / "dec"

    def failing(log: object, event: events.Event) -> object:
        if isinstance(event, events.Dataset):
            assert not out.exists(), "the dataset was put in place before its entry"
            raise OSError("disk full (the audit log)")
        return real(log, event)  # type: ignore[arg-type]

    def decrypt(on: jobs.Cluster | None) -> ceremony.Done[int]:
        def run(ukr: UnsealedKeyring, release: Any) -> int:
            with serve_keys(ukr) as source:
                return jobs.decrypt_dataset(
                    tmp_path / "enc", out, "body", "user",
                    service=source, cluster=on, timeout=TIMEOUT, before_release=release,
                )  # fmt: skip

        quorum = ceremony.Quorum(kr, [shares["alice"], shares["carol"]])
        return ceremony.dataset(
            kr, quorum, "decrypt", run, source="enc", destination="dec", column="body",
            count=lambda n: (n, 0),
        )  # fmt: skip

    def dataset_entries() -> list[dict[str, Any]]:
        return [dict(e.data) for e in kr.audit_log().entries() if e.event == "dataset"]

    monkeypatch.setattr(events, "record", failing)
    for on in (None, cluster):  # in this process; from the driver child (a real process)
        with pytest.raises(OSError, match="disk full"):
            decrypt(on)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["enc", "in", "kr"]  # no stage
        assert dataset_entries() == []
    monkeypatch.setattr(events, "record", real)
    done = decrypt(cluster)
    assert done.value == 300 and done.entry is not None and done.entry.event == "dataset"
    [entry] = dataset_entries()
    assert (entry["operation"], entry["rows"], entry["bad"]) == ("decrypt", 300, 0)
    dec = pd.read_parquet(out).sort_values("id").reset_index(drop=True)
    assert dec["body"].tolist() == df["body"].tolist()


_KILLED_AT_RELEASE = """
import os, signal, sys
from pathlib import Path
from keysplit import Keyring, jobs
from keysplit.jobs import serve_keys
here, address = Path(sys.argv[1]), sys.argv[2]
pem = [(here / f"{n}.pem").read_text() for n in ("ca", "cert", "key")]
cluster = jobs.Cluster(address, tls_ca=pem[0], tls_cert=pem[1], tls_key=pem[2])
_, shares = Keyring.create(here / "kr", 2, ["a", "b"])
with Keyring.open(here / "kr").unseal([shares["a"], shares["b"]]) as ukr, serve_keys(ukr) as src:
    jobs.encrypt_dataset(here / "in", here / "enc", "body", "user", service=src)
    print("encrypted", flush=True)

    def release(rows: int) -> None:  # the entry's append, cut: this process is killed
        print("release", rows, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    jobs.decrypt_dataset(
        here / "enc", here / "dec", "body", "user",
        service=src, cluster=cluster, timeout=240, before_release=release,
    )
print("released", flush=True)
"""


def _write_pems(path: Path) -> None:
    """The module cluster's CA and client certificate and key, for a job in another process."""
    for name, pem in (
        ("ca", SECURITY.tls_ca_file),
        ("cert", SECURITY.tls_client_cert),
        ("key", SECURITY.tls_client_key),
    ):
        (path / f"{name}.pem").write_text(pem)


def test_a_killed_keyring_process_leaves_no_decrypted_dataset(
    client: Client, tmp_path: Path
) -> None:
    """SIGKILL of the keyring process where it records the decrypt (a real process, its real
    driver child on the module's cluster): the driver was waiting for its answer, so it
    never renames its parts into place; it sees the pipe close and removes its staging."""
    import subprocess
    import sys
    import time

    _dataset(tmp_path / "in")
    _write_pems(tmp_path)
    r = subprocess.run(
        [sys.executable, "-c", _KILLED_AT_RELEASE, tmp_path, client.scheduler.address],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert r.stdout.split() == ["encrypted", "release", "300"], r.stderr
    deadline = time.monotonic() + 60  # the orphaned driver child cleans up on its own
    while any(p.name.startswith(".dec.") for p in tmp_path.iterdir()):
        assert not (tmp_path / "dec").exists()
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".pem"))
    assert left == ["enc", "in", "kr"]  # no dec, no staging with its plaintext parts


_KILLED_MID_JOB = """
import os, signal, sys
from pathlib import Path
from keysplit import jobs
from keysplit.jobs import _isolate
here, address, url = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
pem = [(here / f"{n}.pem").read_text() for n in ("ca", "cert", "key")]
cluster = jobs.Cluster(address, tls_ca=pem[0], tls_cert=pem[1], tls_key=pem[2])
start = _isolate._start

def recorded():
    proc = start()
    print("driver", proc.pid, flush=True)
    return proc

def killed(done, total):  # the parts run (and wait on a key service that never answers)
    os.kill(os.getpid(), signal.SIGKILL)

_isolate._start = recorded
jobs.encrypt_dataset(
    here / "in", here / "enc", "body", "user", service=jobs.ServiceDataKeys(url, "ks-t"),
    cluster=cluster, progress=killed,
)
"""


def _killed_keyring_process(args: list[object], log: Path) -> int:
    """Run a keyring process (``python -c`` and ``args``) that SIGKILLs itself mid-job,
    printing its driver child's pid; that pid. Its stderr goes to ``log`` (not a pipe: the
    orphan inherits it and would hold it open)."""
    with log.open("w") as err:
        r = subprocess.run(
            [sys.executable, "-c", *args],
            stdout=subprocess.PIPE, stderr=err, text=True, timeout=300,
        )  # fmt: skip
    assert r.returncode == -signal.SIGKILL, log.read_text()
    [(what, pid)] = [line.split() for line in r.stdout.splitlines()]
    assert what == "driver"
    return int(pid)


def _gone_within_45_s(pid: int) -> bool:
    for _ in range(450):
        if _pid_gone(pid):
            return True
        threading.Event().wait(0.1)
    return _pid_gone(pid)


def test_a_driver_child_whose_keyring_process_was_killed_ends_its_job(
    client: Client, tmp_path: Path
) -> None:
    """SIGKILL of a real keyring process while its dataset job's parts run (on the
    module's cluster, waiting on a key service that never answers; the job has no
    timeout). Before, its orphaned driver child went on waiting on the job (the parts fail
    only at the key service client's 60 s timeout; a rewrap's driver runs on, committing,
    until a partition ends) with the job's keys on its workers. Now it reads EOF on its
    lifeline pipe from the parent, closes its Dask client (the job fails, its stage is
    removed) and exits: its process is gone and nothing of the job is left on disk."""
    _dataset(tmp_path / "in")
    _write_pems(tmp_path)
    driver = 0
    log = tmp_path / "stderr.log"  # not a pipe: the orphan inherits it and would hold it open
    try:
        with _stuck_key_service() as stuck:
            args = [_KILLED_MID_JOB, tmp_path, client.scheduler.address, stuck.url]
            driver = _killed_keyring_process(args, log)
            # before: alive for the key service client's 60 s at least
            assert _gone_within_45_s(driver)
    finally:
        if driver and not _pid_gone(driver):
            with contextlib.suppress(OSError):
                os.killpg(driver, signal.SIGKILL)
    left = sorted(p.name for p in tmp_path.iterdir() if p.suffix not in (".pem", ".log"))
    assert left == ["in"]  # no enc, no staging


_KILLED_MID_REWRAP = """
import importlib, os, signal, sys
from pathlib import Path
import numpy as np
from keysplit import Keyring, jobs
from keysplit.jobs import _isolate
here, address = Path(sys.argv[1]), sys.argv[2]
pem = [(here / f"{n}.pem").read_text() for n in ("ca", "cert", "key")]
cluster = jobs.Cluster(address, tls_ca=pem[0], tls_cert=pem[1], tls_key=pem[2])
# a lease far past the test's bound: only an unregister makes the workers forget in time
importlib.import_module("keysplit.jobs.rewrap").KEY_LEASE = 3600.0
start = _isolate._start

def recorded():
    proc = start()
    print("driver", proc.pid, flush=True)
    return proc

def killed(done, total):  # the first partition is done, the others run (slowed)
    if done:
        os.kill(os.getpid(), signal.SIGKILL)

_isolate._start = recorded
_, shares = Keyring.create(here / "kr", 2, ["a", "b"])
with Keyring.open(here / "kr").unseal([shares["a"], shares["b"]]) as ukr:
    raw = np.frombuffer(os.urandom(16 * 4000), np.uint8).reshape(4000, 16)
    subjects = [f"user/{i:07d}" for i in range(4000)]
    ukr.store.insert_many(ukr.keks_for_rewrap().only([1]).wrap(subjects, raw))
    ukr.rotate()
    jobs.rewrap(ukr, cluster=cluster, partitions=8, batch_size=100, progress=killed, rounds=1)
"""


def _slow_batches(seconds: float, dask_worker: Any = None) -> None:
    """(On a worker) Make each rewrap batch take ``seconds`` longer (0: as before)."""
    import importlib
    import time

    m = importlib.import_module("keysplit.jobs.rewrap")
    real = getattr(m, "_keysplit_fast_batch", m._rewrap_batch)
    m._keysplit_fast_batch = real

    def slow(*args: Any) -> Any:
        time.sleep(seconds)
        return real(*args)

    m._rewrap_batch = slow if seconds else real


def test_a_rewrap_driver_child_whose_keyring_process_was_killed_unregisters_its_keys(
    client: Client, tmp_path: Path
) -> None:
    """SIGKILL of a real keyring process while its rewrap's partitions run (each batch
    slowed on the module's workers; the job's KEK lease set to an hour). Its driver child's
    lifeline closed its Dask client, so the job's own ``finally`` could no longer
    unregister the plugin: before, every worker kept the job's KEKs until the lease lapsed
    (here past the test's 60 s bound: fails). Now the lifeline unregisters the job's plugin
    before it closes the client: a probe on every worker finds no plugin holding KEKs."""
    _write_pems(tmp_path)
    driver = 0
    before = _job_plugins(client)
    client.run(_slow_batches, 0.3)
    log = tmp_path / "stderr.log"
    try:
        driver = _killed_keyring_process(
            [_KILLED_MID_REWRAP, tmp_path, client.scheduler.address], log
        )
        assert _forgotten_everywhere(client)  # (fails before: held for KEY_LEASE)
    finally:
        client.run(_slow_batches, 0)
        # it ends itself (its client closed, its job failed)
        if driver and not _gone_within_45_s(driver):
            with contextlib.suppress(OSError):
                os.killpg(driver, signal.SIGKILL)
        for name in _job_plugins(client) - before:
            client.unregister_worker_plugin(name)


def _cli(args: list[object]) -> Any:
    from keysplit_cli.app import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def test_cli_rewrap_dask_local_cluster_and_datasets(
    client: Client, tmp_path: Path, dask_tls: None
) -> None:
    kr = tmp_path / "vault"
    assert (
        _cli(["init", kr, "-k", "2", "-c", "a", "-c", "b", "-c", "c", "--plain-shares"]).exit_code
        == 0
    )
    quorum = [
        "--share",
        tmp_path / "vault-shares" / "a.g1.kss",
        "--share",
        tmp_path / "vault-shares" / "c.g1.kss",
    ]
    df = _dataset(tmp_path / "in")
    # encrypt-dataset on the module's cluster (a real scheduler address), keys from --keyring
    r = _cli(
        [
            "encrypt-dataset",
            tmp_path / "in",
            tmp_path / "enc",
            "--column",
            "body",
            "--subject-column",
            "user",
            "--keyring",
            kr,
            "--context",
            "t=contacts",
            "--scheduler",
            client.scheduler.address,
            *quorum,
        ]
    )
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "300"
    with Keyring.open(kr).unseal(
        [
            load_share((tmp_path / "vault-shares" / "b.g1.kss").read_bytes()),
            load_share((tmp_path / "vault-shares" / "c.g1.kss").read_bytes()),
        ]
    ) as ukr:
        enc = pd.read_parquet(tmp_path / "enc").sort_values("id").reset_index(drop=True)
        assert (
            ukr.decrypt(enc["body"][1], subject="contacts/1", context={"t": "contacts"})
            == df["body"][1]
        )
        ukr.rotate()
    r = _cli(
        [
            "scan-dataset",
            tmp_path / "enc",
            "--column",
            "body",
            "--subject-column",
            "user",
            "--keyring",
            kr,
            "--scheduler",
            client.scheduler.address,
            *quorum,
        ]
    )  # wrong context: all bad
    assert r.exit_code == 1 and "error: 299 of 299 records do not decrypt" in r.stderr
    assert "contacts/3\tauthentication failed" in r.stdout
    # rewrap --dask with no address: a LocalCluster of its own
    r = _cli(["rewrap", kr, "--dask", *quorum, "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert (doc["rewrapped"], doc["kek_version"], doc["remaining"]) == (7, 2, 0)
    rewraps = [e for e in Keyring.open(kr).audit_log().entries() if e.event == "rewrap"]
    assert len(rewraps) == 1 and rewraps[0].hash == doc["audit_head"]  # one ceremony entry
    assert rewraps[0].data["authorized_by"][0]["custodian"] == "a"
    r = _cli(
        [
            "decrypt-dataset",
            tmp_path / "enc",
            tmp_path / "dec",
            "--column",
            "body",
            "--subject-column",
            "user",
            "--context",
            "t=contacts",
            "--keyring",
            kr,
            "--scheduler",
            client.scheduler.address,
            *quorum,
        ]
    )
    assert r.exit_code == 0, r.output
    dec = pd.read_parquet(tmp_path / "dec").sort_values("id").reset_index(drop=True)
    assert dec["body"].tolist() == df["body"].tolist()
    # with --keyring each command is a ceremony: one 'dataset' entry each (issue 18)
    runs = [e.data for e in Keyring.open(kr).audit_log().entries() if e.event == "dataset"]
    assert [(d["operation"], d["rows"], d["bad"]) for d in runs] == [
        ("encrypt", 300, 0),
        ("scan", 299, 299),
        ("decrypt", 300, 0),
    ]
    assert runs[0]["source"] == str(tmp_path / "in") and runs[0]["column"] == "body"
    assert [c["custodian"] for c in runs[2]["authorized_by"]] == ["a", "c"]
    r = _cli(
        [
            "encrypt-dataset",
            tmp_path / "in",
            tmp_path / "x",
            "--column",
            "body",
            "--subject-column",
            "user",
            "--server",
            "unix:/nonexistent.sock",
        ]
    )
    assert r.exit_code == 2 and "error: --server needs --token-file" in r.stderr


def test_the_key_servers_errors_reach_the_worker_as_their_own_class(tmp_path: Path) -> None:
    """A worker's key fetch failing in the driver's keyring raises the keyring's class
    (``KeyringError`` for a closed keyring), not a bare ``KeysplitError``; other keysplit
    classes keep their name in the text."""
    _, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    ukr = _open(tmp_path / "kr", [shares["alice"], shares["carol"]])
    with serve_keys(ukr) as source:
        handle = pickle.loads(pickle.dumps(source))  # what a worker gets
        handle.export(["s/1"], create=True)
        ukr.close()
        with pytest.raises(keysplit_errors.KeyringError, match="closed"):
            handle.export(["s/1"], create=False)
    from keysplit.jobs.datakeys import _server_error

    err = _server_error("StaleKekError", "re-read the keyring")
    assert type(err) is keysplit_errors.KeysplitError
    assert str(err) == "StaleKekError: re-read the keyring"
    assert type(_server_error("IntegrityError", "authentication failed")) is IntegrityError
    assert (
        type(_server_error("error", "subject must not be empty")) is keysplit_errors.KeysplitError
    )
    assert str(_server_error("__import__", "x")) == "__import__: x"  # a name, never looked up


def test_loopback_source_needs_its_key_and_service_source_plumbing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import multiprocessing

    import keysplit
    from keysplit.jobs import LoopbackDataKeys, ServiceDataKeys
    from keysplit.keyring import DataKeys
    from keysplit.keyring.records import Records

    _, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    ukr = _open(tmp_path / "kr", [shares["alice"], shares["carol"]])
    with ukr, serve_keys(ukr) as source:
        handle = pickle.loads(pickle.dumps(source))  # what a worker gets
        assert isinstance(handle, DataKeys)
        (k1,) = handle.export(["s/1"], create=True)
        assert ukr.records.export(["s/1"], create=False) == [k1]
        assert handle.export(["s/2", "s/1"], create=False) == [None, k1]
        with pytest.raises(IntegrityError):
            Records(handle).decrypt_many(["s/2"], [ukr.encrypt(b"x", subject="s/3")])
        rec = Records(handle).encrypt(b"worker", subject="s/1")
        assert ukr.decrypt(rec, subject="s/1") == b"worker"
        assert handle._authkey.hex() not in repr(handle)
        # SECURITY.md: the socket lives in a private 0700 directory
        assert Path(handle.address).parent.stat().st_mode & 0o777 == 0o700
        forged = LoopbackDataKeys(handle.address, os.urandom(32), handle.keyring_id)
        with pytest.raises(multiprocessing.AuthenticationError):
            forged.export(["s/1"], create=False)

    calls: list[tuple[Any, ...]] = []

    class FakeClient:  # stands in for keysplit.Client (the key service's client)
        def __init__(self, url: str, *, token: str) -> None:
            calls.append(("init", url, token))

        def fetch_datakeys(self, subjects: list[str], *, create: bool) -> list[bytes | None]:
            calls.append(("datakeys", list(subjects), create))
            return [bytes(16)] * len(subjects)

    src = ServiceDataKeys("unix:/tmp/ks.sock", "tok-secret")
    assert "tok-secret" not in repr(src)
    # a keysplit without the client (keysplit resolves its names on first use, PEP 562: a
    # deleted name would be resolved again, so the name is there and empty)
    monkeypatch.setattr(keysplit, "Client", None, raising=False)
    with pytest.raises(keysplit.KeysplitError, match="no key service client"):
        src.export(["a"], create=True)
    monkeypatch.setattr(keysplit, "Client", FakeClient, raising=False)
    worker_copy = pickle.loads(pickle.dumps(src))
    assert worker_copy.export(["a", "b"], create=False) == [bytes(16)] * 2
    worker_copy.resolve(["c", "c"], create=True)
    assert calls == [
        ("init", "unix:/tmp/ks.sock", "tok-secret"),
        ("datakeys", ["a", "b"], False),
        ("datakeys", ["c"], True),
    ]


def test_cli_datasets_through_keysplit_serve(
    client: Client, tmp_path: Path, dask_tls: None
) -> None:
    """End to end: ``keysplit serve`` holds the keyring; ``keysplit encrypt-dataset`` and
    ``decrypt-dataset --server unix:...`` (real processes, on the module's cluster) get
    each partition's data keys from it with a ``datakey`` token."""
    from service_helpers import Server, cli

    from keysplit.service import Client as ServiceClient
    from keysplit.service.tokens import TokenList, mac_key

    sockdir = Path(tempfile.mkdtemp(prefix="ksj", dir="/tmp"))  # AF_UNIX paths are short
    try:
        kr, shares = Keyring.create(tmp_path / "vault", 2, NAMES)
        with kr.unseal([shares["alice"], shares["bob"]]) as ukr:
            key = mac_key(ukr.audit_key(), kr.keyring_id)
            tl = TokenList.read(kr.path, kr.keyring_id)
            for name, allow in (("jobs", "datakey"), ("enc", "encrypt")):
                token = tl.create(key, name=name, allow=[allow], subject_prefix="contacts/")[0]
                (tmp_path / f"{name}.token").write_text(token)
        df = _dataset(tmp_path / "in")
        with Server(kr.path, sockdir / "s.sock") as srv:
            c = ServiceClient(srv.url)
            for n in ("alice", "carol"):
                c.submit_share(shares[n], c.unseal_offer(), keyring_id=kr.keyring_id)
            opts: list[object] = ["--column", "body", "--subject-column", "user"]
            opts += ["--server", srv.url, "--scheduler", client.scheduler.address]
            opts += ["--context", "t=contacts", "--token-file", tmp_path / "jobs.token"]
            r = cli("encrypt-dataset", "in", "enc", *map(str, opts), cwd=tmp_path)
            assert r.returncode == 0, r.stderr
            assert r.stdout.strip() == "300"
            r = cli("decrypt-dataset", "enc", "dec", *map(str, opts), cwd=tmp_path)
            assert r.returncode == 0, r.stderr
            dec = pd.read_parquet(tmp_path / "dec").sort_values("id").reset_index(drop=True)
            assert dec["body"].tolist() == df["body"].tolist()
            assert dec["user"].tolist() == df["user"].tolist()
            # a token without 'datakey' is refused: one error line, no traceback
            opts[-1] = tmp_path / "enc.token"
            r = _cli(["decrypt-dataset", tmp_path / "enc", tmp_path / "dec2", *opts])
            assert r.exit_code == 1 and r.stderr.count("error:") == 1, r.output
            assert not (tmp_path / "dec2").exists() or not any((tmp_path / "dec2").iterdir())
        enc = pd.read_parquet(tmp_path / "enc").sort_values("id").reset_index(drop=True)
        with kr.unseal([shares["bob"], shares["carol"]]) as ukr:  # ordinary keysplit records
            for i in (0, 150, 299):
                rec, subject = enc["body"][i], enc["user"][i]
                assert ukr.decrypt(rec, subject=subject, context={"t": "contacts"}) == df["body"][i]
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


def test_a_stuck_dataset_job_times_out_and_writes_nothing(
    client: Client, cluster: jobs.Cluster, tmp_path: Path, dask_tls: None
) -> None:
    """A worker waiting on a key service that never answers held a dataset job until Dask
    declared the worker dead (its TTL: minutes; once seen in CI, 558 s, when a worker
    hung). With ``timeout`` the job fails at the deadline with one clear error, cancels
    its parts and leaves no destination and no staging directory. The "key service" is a
    listening Unix socket that is never read: connections and requests go through, no
    answer ever comes."""
    _dataset(tmp_path / "in")
    with _stuck_key_service() as source:
        with pytest.raises(JobError, match=r"did not finish within 3 s \(2 of 2 parts left\)") as e:
            jobs.encrypt_dataset(
                tmp_path / "in", tmp_path / "enc", "body", "user",
                service=source, cluster=cluster, timeout=3,
            )  # fmt: skip
        assert "stuck" in (e.value.hint or "")
        (tmp_path / "t").write_text("ks-token-never-read")
        opts: list[object] = ["--column", "body", "--subject-column", "user", "--server"]
        opts += [
            source.url,
            "--token-file",
            tmp_path / "t",
            "--scheduler",
            client.scheduler.address,
        ]
        r = _cli(["encrypt-dataset", tmp_path / "in", tmp_path / "enc", *opts, "--timeout", "3"])
        assert r.exit_code == 1 and r.stderr.count("error:") == 1, r.output
        assert "did not finish within 3 s" in r.stderr
        for bad in ("nan", "inf", "0", "-1", "x"):
            r = _cli(["scan-dataset", tmp_path / "in", *opts, "--timeout", bad])
            assert r.exit_code == 2 and "--timeout" in r.stderr, (bad, r.output)
        (tmp_path / "t").unlink()
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("dask-"))
    assert left == ["in"]  # no dst, no stage (dask-*.pem: the TLS files of dask_tls)
    for bad in (0, -1.0, float("nan"), float("inf"), True, "5"):
        with pytest.raises(ValueError, match="timeout"):
            jobs.decrypt_dataset(
                tmp_path / "in", tmp_path / "dec", "body", "user",
                service=source, cluster=cluster, timeout=bad,  # type: ignore[arg-type]
            )  # fmt: skip
        with pytest.raises(ValueError, match="timeout"):
            jobs.scan_dataset(
                tmp_path / "in", "body", "user", service=source, timeout=bad,  # type: ignore[arg-type]
            )  # fmt: skip

    # the rewrap job checks its timeout the same way; the CLI takes it only with --dask
    path, quorum = _keyring(tmp_path / "kr", 10)
    with _open(path, quorum) as ukr:
        for bad in (0, float("nan"), True):
            with pytest.raises(ValueError, match="timeout"):
                jobs.rewrap(ukr, cluster=cluster, timeout=bad)  # type: ignore[arg-type]
    r = _cli(["rewrap", path, "--timeout", "5"])  # refused before any share is asked for
    assert r.exit_code == 2 and "--dask" in r.stderr, r.output
    r = _cli(["rewrap", path, "--dask", "--timeout", "nan"])
    assert r.exit_code == 2 and "--timeout" in r.stderr, r.output


# -- the driver never deserializes what the cluster produced (issue 21 item 2) ---------------


def _poison(code: str, dask_worker: Any = None) -> None:
    """(On a worker) Make every rewrap partition return an object whose unpickling runs
    ``code``, as code planted on a compromised worker could."""
    import importlib

    m = importlib.import_module("keysplit.jobs.rewrap")  # (the package's 'rewrap' is the function)

    class Hostile:
        def __reduce__(self) -> tuple[Any, ...]:
            return (exec, (code,))

    m._keysplit_unpoisoned = m.rewrap_rows  # type: ignore[attr-defined]
    m.rewrap_rows = lambda keks, rows: ([], [Hostile()])  # type: ignore[assignment]


def _unpoison(dask_worker: Any = None) -> None:
    import importlib

    m = importlib.import_module("keysplit.jobs.rewrap")

    m.rewrap_rows = m._keysplit_unpoisoned  # type: ignore[attr-defined]


def test_hostile_worker_result_never_runs_in_the_keyring_process(
    client: Client, cluster: jobs.Cluster, tmp_path: Path
) -> None:
    """Before: the driver held the unsealed keyring and unpickled task results, so a worker
    could run code in it. Now the Dask client runs in a child process: the hostile pickle
    runs there (it holds no keyring and no KEK), the job fails with a clear error, and the
    keyring process runs nothing."""
    import sys

    import cloudpickle

    marks = tmp_path / "marks"
    marks.mkdir()
    where = repr(str(marks))
    code = f"import os; open(os.path.join({where}, 'ran-in-' + str(os.getpid())), 'w').close()"
    path, quorum = _keyring(tmp_path / "a", 200)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        client.run(_poison, code)
        with _open(path, quorum) as ukr:
            with pytest.raises(JobError, match="malformed partition result") as info:
                jobs.rewrap(ukr, cluster=cluster, partitions=2, rounds=1, timeout=TIMEOUT)
            assert "run the rewrap again" in (info.value.hint or "")
    finally:
        client.run(_unpoison)
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ran = sorted(p.name for p in marks.iterdir())
    assert ran, "the hostile object never reached a deserializer (the test proves nothing)"
    assert f"ran-in-{os.getpid()}" not in ran  # never in the process holding the keyring
    with _open(path, quorum) as ukr:  # nothing was committed; the store is intact
        assert ukr.rewrap().rewrapped == 200


def test_cluster_refuses_unauthenticated_remote_schedulers() -> None:
    from keysplit.jobs import Cluster, ClusterError

    pem = {"tls_ca": "ca.pem", "tls_cert": "c.pem", "tls_key": "k.pem"}
    for bad in ("tcp://10.1.2.3:8786", "10.1.2.3:8786", "tcp://sched.example:8786"):
        with pytest.raises(ClusterError, match="unauthenticated scheduler on another host"):
            Cluster(bad)
    with pytest.raises(ClusterError, match="needs a CA"):
        Cluster("tls://10.1.2.3:8786")
    with pytest.raises(ClusterError, match="all three"):
        Cluster("tls://10.1.2.3:8786", tls_ca="ca.pem")
    with pytest.raises(ClusterError, match="not a Dask scheduler address"):
        Cluster("inproc://x")
    assert Cluster("tls://10.1.2.3:8786", **pem).authenticated
    assert Cluster("tcp://127.0.0.1:8786").scheduler == "tcp://127.0.0.1:8786"  # this host
    assert Cluster().local and Cluster().authenticated  # the job's own LocalCluster: mutual TLS
    assert "k.pem" not in repr(Cluster("tls://10.1.2.3:8786", **pem))


def test_a_workers_error_reaches_the_caller_with_its_class_and_reason(
    cluster: jobs.Cluster, tmp_path: Path
) -> None:
    """A task that fails on a worker with a keysplit error keysplit.errors does not define
    (the workers' ``ServiceError``: the key service cannot be reached) became a JobError
    without its class's name; the caller's error, and the CLI's ``error:`` line, now say
    ``ServiceError: <its message>`` (red team). Never the token, never a traceback."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"user": ["u1"], "body": [b"x"]}), src / "p.parquet")
    gone = jobs.ServiceDataKeys(f"unix:{tmp_path / 'no.sock'}", "tok-planted-secret")
    with pytest.raises(JobError) as job_info:
        jobs.encrypt_dataset(
            src, tmp_path / "out", "body", "user", service=gone, cluster=cluster, timeout=TIMEOUT
        )
    assert str(job_info.value).startswith("ServiceError: cannot reach the key service"), str(
        job_info.value
    )
    assert "Traceback" not in str(job_info.value) and "planted" not in str(job_info.value)


def test_driver_messages_are_checked_never_trusted() -> None:
    """What the child says is parsed as plain data: an error names a keysplit class or is
    a JobError; counts and rows of the wrong type are refused."""
    from keysplit import FormatError
    from keysplit.jobs._isolate import _error, clean
    from keysplit.jobs.records import _bad_rows
    from keysplit.jobs.rewrap import _checked_result, _subject_list

    assert type(_error({"kind": "IntegrityError", "message": "x"})) is IntegrityError
    assert type(_error({"kind": "FormatError", "message": "x"})) is FormatError
    for kind in ("Exception", "SystemExit", "__import__", "os.system", None, 3):
        assert type(_error({"kind": kind, "message": "x"})) is JobError
    assert clean("a\x1b[2Jb" + "c" * 5000) == "a?[2Jb" + "c" * 994
    for bad in (
        {"rewrapped": "1", "unfinished": 0, "total": 1},
        {"rewrapped": True, "unfinished": 0, "total": 1},
        {"rewrapped": -1, "unfinished": 0, "total": 1},
    ):
        with pytest.raises(JobError, match="malformed"):
            _checked_result(bad)
    for subjects in ([1], "s", None, ["x" * 4097]):  # corrupt subjects come in pieces
        with pytest.raises(JobError, match="malformed"):
            _subject_list(subjects)
    assert _subject_list(["a", "b"]) == ["a", "b"]
    with pytest.raises(JobError, match="did not finish"):
        _checked_result({"rewrapped": 3, "unfinished": 1, "total": 2, "why": "x"})
    assert _bad_rows([[0, 3, "s", "malformed"]])[0].row == 3
    for rows in ([[0, 3, "s", "other"]], [[0, [], "s", "malformed"]], {"a": 1}, [[0, 1, 2]]):
        with pytest.raises(JobError):
            _bad_rows(rows)


# -- jobs that scale (issue 23) ---------------------------------------------------------------


def test_decrypt_dataset_gives_each_column_its_original_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a sealed str column came back as bytes. Now the sealed dataset records each
    sealed column's original type (Parquet schema metadata) and decrypt restores it; one
    large file of many row groups is read as several bounded partitions; decrypted parts
    are written 0600."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import keysplit.jobs.records as jr

    _, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    n = 600
    df = pd.DataFrame(
        {
            "id": range(n),
            "user": [f"u/{i % 13}" for i in range(n)],
            "name": [None if i == 5 else f"név {i}" for i in range(n)],  # str, not ASCII
            "blob": [bytes([i % 256]) * (i % 7) for i in range(n)],
        }
    )
    (tmp_path / "in").mkdir()
    pq.write_table(pa.Table.from_pandas(df), tmp_path / "in" / "big.parquet", row_group_size=50)
    monkeypatch.setattr(jr, "PART_BYTES", 4096)  # the one file is far larger than a partition
    with _open(tmp_path / "kr", [shares["bob"], shares["carol"]]) as ukr, serve_keys(ukr) as src:
        jobs.encrypt_dataset(tmp_path / "in", tmp_path / "e1", "name", "user", service=src)
        assert len(list((tmp_path / "e1").iterdir())) > 1  # split by row groups
        jobs.encrypt_dataset(tmp_path / "e1", tmp_path / "e2", "blob", "user", service=src)
        sealed = pq.read_table(tmp_path / "e2")
        assert sealed.schema.field("name").type == pa.binary()
        assert json.loads(sealed.schema.metadata[b"keysplit"])["sealed"] == {
            "name": "str",
            "blob": "bytes",
        }
        with pytest.raises(keysplit_errors.KeysplitError, match="already sealed"):
            jobs.encrypt_dataset(tmp_path / "e2", tmp_path / "x", "name", "user", service=src)
        jobs.decrypt_dataset(tmp_path / "e2", tmp_path / "d1", "name", "user", service=src)
        jobs.decrypt_dataset(tmp_path / "d1", tmp_path / "d2", "blob", "user", service=src)
    out = pq.read_table(tmp_path / "d2")
    name_type = out.schema.field("name").type
    assert pa.types.is_string(name_type) or pa.types.is_large_string(name_type)
    assert out.schema.field("blob").type == pa.binary()
    assert b"keysplit" not in (out.schema.metadata or {})
    back = out.to_pandas().sort_values("id").reset_index(drop=True)
    assert back["name"].tolist() == df["name"].tolist()
    assert back["blob"].tolist() == df["blob"].tolist()
    for part in (tmp_path / "d1").iterdir():
        assert part.stat().st_mode & 0o777 == 0o600


def test_a_row_group_larger_than_a_part_is_read_in_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(red team, 'found, not fixed') A row group is never split by the plan, so a file of
    one row group larger than a worker's memory share was one part, read, sealed and
    written whole (about 6.5x its size resident): such a part OOM-killed its workers again
    on every retry. Now a part holding a row group above the part size reads it in slices
    of about the part size (ParquetFile.iter_batches) and writes each as it goes: one part
    file, several row groups, every value round trips."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import keysplit.jobs.records as jr

    _, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    n = 3000
    (tmp_path / "in" / "k=a").mkdir(parents=True)  # a hive partition column too
    table = pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "user": [f"u/{i % 97}" for i in range(n)],
            "blob": [bytes([i % 256]) * 100 + str(i).encode() for i in range(n)],
        }
    )
    pq.write_table(table, tmp_path / "in" / "k=a" / "one.parquet", row_group_size=n)
    assert pq.ParquetFile(tmp_path / "in" / "k=a" / "one.parquet").num_row_groups == 1
    monkeypatch.setattr(jr, "PART_BYTES", 64 << 10)  # the row group is ~5 times larger
    with _open(tmp_path / "kr", [shares["bob"], shares["carol"]]) as ukr, serve_keys(ukr) as src:
        assert jobs.encrypt_dataset(tmp_path / "in", tmp_path / "e", "blob", "user", service=src)
        (part,) = sorted((tmp_path / "e").iterdir())
        meta = pq.ParquetFile(part).metadata
        assert meta.num_row_groups >= 4, meta  # before: 1, the whole row group at once
        assert meta.num_rows == n
        assert jobs.decrypt_dataset(tmp_path / "e", tmp_path / "d", "blob", "user", service=src)
    back = pq.read_table(tmp_path / "d").sort_by("id")
    assert back.column("blob").to_pylist() == table.column("blob").to_pylist()
    assert back.column("user").to_pylist() == table.column("user").to_pylist()
    assert set(back.column("k").to_pylist()) == {"a"}


class _CountingKeys(LoopbackDataKeys):
    """Counts key fetches (module level: the graph pickles its arguments by reference)."""

    calls: list[int] = []  # noqa: RUF012

    def export(self, subjects: Any, *, create: bool) -> list[bytes | None]:
        self.calls.append(len(subjects))
        return super().export(subjects, create=create)


@contextlib.contextmanager
def _counted_source(tmp_path: Path) -> Iterator[tuple[UnsealedKeyring, _CountingKeys]]:
    """A keyring, :func:`_dataset` at ``tmp_path/in`` and its keys served through
    :class:`_CountingKeys` (its calls cleared)."""
    _CountingKeys.calls.clear()
    _, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    _dataset(tmp_path / "in")
    with _open(tmp_path / "kr", [shares["bob"], shares["carol"]]) as ukr, serve_keys(ukr) as src:
        yield ukr, _CountingKeys(src.address, src._authkey, src.keyring_id)


def test_a_worker_derives_each_subject_key_once_per_job(tmp_path: Path) -> None:
    """Keys are fetched and derived once per job and worker, not once per partition."""
    from keysplit.jobs import _cache

    _, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    _dataset(tmp_path / "in")  # two partitions, the same 7 users in both
    calls = _CountingKeys.calls
    calls.clear()
    with _open(tmp_path / "kr", [shares["bob"], shares["carol"]]) as ukr, serve_keys(ukr) as src:
        counting = _CountingKeys(src.address, src._authkey, src.keyring_id)
        jobs.encrypt_dataset(tmp_path / "in", tmp_path / "enc", "body", "user", service=counting)
        assert calls == [7]  # before: [7, 7], one fetch per partition
        jobs.scan_dataset(tmp_path / "enc", "body", "user", service=counting)
        assert calls == [7, 7]  # a new job, a new cache
    assert len(_cache._jobs) <= _cache.JOBS_KEPT
    with pytest.raises(TypeError):
        pickle.dumps(next(iter(_cache._jobs.values())))


def test_small_files_make_one_part_per_worker_thread_in_order(tmp_path: Path) -> None:
    """Before: one partition per input file, so each subject's key lookup, AAD and grouping
    ran once per file (8 times here), and every value went through pandas twice. Now the
    row groups are packed into max(ceil(bytes / part size), worker threads) parts: one
    here (in process), rows in file order; pandas reads the sealed column as bytes and
    the decrypted one as str again."""
    import pyarrow.parquet as pq

    _, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    n = 400
    df = pd.DataFrame(
        {
            "id": range(n),
            "user": [f"u/{i % 9}" for i in range(n)],
            "note": [None if i % 50 == 3 else f"nöte {i}" for i in range(n)],
        }
    )
    (tmp_path / "in").mkdir()
    for i, part in enumerate(np.array_split(np.arange(n), 8)):
        df.iloc[part].to_parquet(tmp_path / "in" / f"part.{i}.parquet")
    steps: list[tuple[int, int]] = []
    with _open(tmp_path / "kr", [shares["bob"], shares["carol"]]) as ukr, serve_keys(ukr) as src:
        kwargs: dict[str, Any] = {"service": src, "context": {"t": "notes"}}
        rows = jobs.encrypt_dataset(
            tmp_path / "in",
            tmp_path / "enc",
            "note",
            "user",
            progress=lambda d, t: steps.append((d, t)),
            **kwargs,
        )
        assert rows == n
        assert steps == [(0, 1), (1, 1)]
        assert [p.name for p in (tmp_path / "enc").iterdir()] == ["part.00000.parquet"]
        enc = pd.read_parquet(tmp_path / "enc")
        assert enc["id"].tolist() == list(range(n))  # file order kept
        assert enc["note"][3] is None and isinstance(enc["note"][0], bytes)
        sealed = enc["note"][0]
        assert ukr.decrypt(sealed, subject="u/0", context={"t": "notes"}) == "nöte 0".encode()
        jobs.decrypt_dataset(tmp_path / "enc", tmp_path / "dec", "note", "user", **kwargs)
    dec = pd.read_parquet(tmp_path / "dec")
    assert dec["note"].tolist() == df["note"].tolist()
    assert pq.read_table(tmp_path / "dec").schema.metadata.get(b"keysplit") is None


def test_a_jobs_plan_follows_its_options_not_who_is_connected(tmp_path: Path) -> None:
    """Under load (25-33) jobs on the module's 2-worker cluster were written as 1 part
    where 2 were expected (progress (1, 1)): a job planned one part per worker thread
    connected *at that moment*, and a worker restarting (the scheduler drops a worker
    whose connection broke; its nanny starts another) or slow to join was not counted.
    Now the count comes from the options: a scheduler's ``workers`` (here 2, with only one
    of them connected: before, 1 part), a LocalCluster's own worker count. So does a
    rewrap's default partition count (4 per planned thread: 8 here; before, 4 per thread
    connected: 4), and the CLI's ``--workers`` names them (before: no such option)."""
    from keysplit.jobs.cluster import local_workers, planned_threads

    local = jobs.Cluster(workers=3, threads_per_worker=2).to_doc()
    assert planned_threads(local) == 6 and local_workers(local) == 3
    default = jobs.Cluster().to_doc()  # Dask's default: a single-threaded worker per CPU
    from dask.system import CPU_COUNT

    assert planned_threads(default) == local_workers(default) == max(1, CPU_COUNT)
    assert planned_threads(jobs.Cluster("tcp://127.0.0.1:1").to_doc()) is None  # connected
    _, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    df = _dataset(tmp_path / "in")  # two files: up to two parts
    steps: list[tuple[int, int]] = []
    quorum: list[object] = []
    for name in ("alice", "bob"):
        (tmp_path / f"{name}.kss").write_text(f"{shares[name]}\n")
        quorum += ["-s", tmp_path / f"{name}.kss"]
    with _doomed_cluster() as (addr, _):
        with (
            _open(tmp_path / "kr", [shares["alice"], shares["bob"]]) as ukr,
            serve_keys(ukr) as source,
        ):
            n = jobs.encrypt_dataset(
                tmp_path / "in", tmp_path / "enc", "body", "user", service=source,
                cluster=jobs.Cluster(addr, workers=2),
                progress=lambda d, t: steps.append((d, t)), timeout=TIMEOUT,
            )  # fmt: skip
            assert n == 300 and steps[-1] == (2, 2), steps  # (before: (1, 1))
            # a rewrap's default partitions: 4 per planned thread (progress: start + each)
            keys = ukr.keks_for_rewrap().only([1])
            raw = np.frombuffer(os.urandom(16 * 80), np.uint8).reshape(80, 16)
            ukr.store.insert_many(keys.wrap([f"r/{i:03d}" for i in range(80)], raw))
            ukr.rotate()
            rewrap_steps: list[tuple[int, int]] = []
            done = jobs.rewrap(
                ukr, cluster=jobs.Cluster(addr, workers=2), timeout=TIMEOUT,
                progress=lambda d, t: rewrap_steps.append((d, t)),
            )  # fmt: skip
            assert done.remaining == 0 and done.rewrapped >= 80
            assert len(rewrap_steps) == 1 + 8, rewrap_steps  # (before: 1 + 4)
        # the CLI's --scheduler path: --workers 2 plans two parts on the one connected
        opts = ["--column", "body", "--subject-column", "user", "--keyring", tmp_path / "kr"]
        args = ["encrypt-dataset", tmp_path / "in", tmp_path / "cli", *opts]
        r = _cli([*args, "--scheduler", addr, "--workers", "2", *quorum])
        assert r.exit_code == 0, r.output  # (before: 2, no such option)
    for out in ("enc", "cli"):
        assert sorted(p.name for p in (tmp_path / out).iterdir()) == [
            "part.00000.parquet",
            "part.00001.parquet",
        ]
        enc = pd.read_parquet(tmp_path / out)
        assert enc["id"].tolist() == df["id"].tolist()
    r = _cli(["rewrap", tmp_path / "kr", "--workers", "2", *quorum])
    assert r.exit_code == 2 and "error: --workers sizes a Dask job: give it with --dask" in r.stderr


def test_a_dataset_jobs_part_size_follows_its_options_not_who_is_connected() -> None:
    """A dataset job sized its parts by the memory limits of the workers connected when it
    planned (none connected yet: 64 MB parts; all: up to 512 MB), so the plan depended on
    timing. Now from the options: a LocalCluster's workers get an explicit limit (Dask's
    default share of this host's memory, or ``memory_limit``) and the job plans for it; a
    scheduler given ``workers`` plans for ``memory_limit`` (None: no stated limit); only a
    scheduler given no ``workers`` still asks who is connected."""
    from distributed.system import MEMORY_LIMIT

    from keysplit.jobs import records as jr
    from keysplit.jobs.cluster import local_memory, planned_workers

    gib = 1 << 30

    class Connected:  # a client whose one connected worker states 24 GiB
        def scheduler_info(self, n_workers: int = -1) -> dict[str, Any]:
            return {"workers": {"w": {"memory_limit": 24 * gib, "nthreads": 1}}}

    client: Any = Connected()
    remote = jobs.Cluster("tcp://127.0.0.1:1", workers=2).to_doc()
    assert planned_workers(remote) == [(0, 1), (0, 1)]
    assert jr._part_bytes(client, planned_workers(remote)) == jr.PART_BYTES  # (before: MAX)
    sized = jobs.Cluster("tcp://127.0.0.1:1", workers=2, memory_limit=4 * gib).to_doc()
    assert jr._part_bytes(client, planned_workers(sized)) == 256 << 20
    unnamed = jobs.Cluster("tcp://127.0.0.1:1").to_doc()
    assert planned_workers(unnamed) is None
    assert jr._part_bytes(client, None) == jr.PART_BYTES_MAX  # who is connected
    local = jobs.Cluster(workers=2, threads_per_worker=2).to_doc()
    assert local_memory(local) == MEMORY_LIMIT // 2  # Dask's own "auto" for 2 workers
    assert planned_workers(local) == [(MEMORY_LIMIT // 2, 2)] * 2
    own = jobs.Cluster(workers=1, memory_limit=2 * gib).to_doc()
    assert local_memory(own) == 2 * gib and planned_workers(own) == [(2 * gib, 1)]
    for bad in (0, -1, True, 1.5, "1G"):
        with pytest.raises(ValueError, match="memory_limit"):
            jobs.Cluster(memory_limit=bad)  # type: ignore[arg-type]


def test_a_part_is_sealed_subject_by_subject_with_keys_in_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part's rows are taken subject by subject, sealed one key batch after another (the
    next batch fetched meanwhile) and put back in row order. Before: one request for all
    the part's keys before sealing started (calls == [9, 9]: encrypt, decrypt)."""
    from keysplit.jobs import _parquet

    monkeypatch.setattr(_parquet, "KEY_BATCH", 2, raising=False)
    _, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    n = 300
    df = pd.DataFrame(
        {
            "id": range(n),
            "user": [f"u{(7 * i) % 9}" for i in range(n)],  # interleaved: 9 users
            "body": [None if i % 31 == 5 else f"row {i}".encode() for i in range(n)],
        }
    )
    (tmp_path / "in").mkdir()
    df.to_parquet(tmp_path / "in" / "part.0.parquet")
    calls = _CountingKeys.calls
    calls.clear()
    with _open(tmp_path / "kr", [shares["bob"], shares["carol"]]) as ukr, serve_keys(ukr) as src:
        counting = _CountingKeys(src.address, src._authkey, src.keyring_id)
        kwargs: dict[str, Any] = {"service": counting}
        jobs.encrypt_dataset(tmp_path / "in", tmp_path / "enc", "body", "user", **kwargs)
        assert calls == [2, 2, 2, 2, 1]
        enc = pd.read_parquet(tmp_path / "enc")
        assert enc["id"].tolist() == list(range(n))
        for user, body, sealed in zip(df["user"], df["body"], enc["body"], strict=True):
            if body is None:
                assert sealed is None
            else:  # each row's record, on its own row, for its own subject
                assert ukr.decrypt(sealed, subject=user) == body
        calls.clear()
        jobs.decrypt_dataset(tmp_path / "enc", tmp_path / "dec", "body", "user", **kwargs)
        assert calls == [2, 2, 2, 2, 1]
    dec = pd.read_parquet(tmp_path / "dec")
    assert dec["body"].tolist() == df["body"].tolist()


def test_a_part_is_as_large_as_the_workers_memory_allows() -> None:
    """Before: 64 MB parts whatever the workers' memory, so a 10^6-row dataset was sealed
    in 5 parts on one worker and the engine's per-subject work ran 5 times. Now 1/16 of
    the smallest memory limit per worker thread, within [PART_BYTES, PART_BYTES_MAX]."""
    from keysplit.jobs import records as jr

    gib = 1 << 30
    assert jr.part_bytes([(24 * gib, 1)]) == jr.PART_BYTES_MAX
    assert jr.part_bytes([(4 * gib, 1), (8 * gib, 4)]) == 128 << 20  # the smallest share
    assert jr.part_bytes([(gib, 2)]) == jr.PART_BYTES  # never below the floor
    assert jr.part_bytes([(0, 1)]) == jr.PART_BYTES  # no stated limit
    assert jr.part_bytes([]) == jr.PART_BYTES


def test_plan_packs_row_groups_into_bounded_parts(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from keysplit.jobs import _parquet

    (tmp_path / "d").mkdir()
    table = pa.table(
        {"s": [f"u{i}" for i in range(100)], "v": [os.urandom(100) for _ in range(100)]}
    )
    for name in ("part.2.parquet", "part.10.parquet", "part.1.parquet"):
        pq.write_table(table, tmp_path / "d" / name, row_group_size=10)  # 10 row groups each
    one = _parquet.plan(str(tmp_path / "d"), 1, 1 << 30)
    assert one.rows == 300 and len(one.parts) == 1
    assert [Path(p).name for p, _, _ in one.parts[0]] == [
        "part.1.parquet",
        "part.2.parquet",
        "part.10.parquet",
    ]  # natural order, each file's row groups together
    assert len(_parquet.plan(str(tmp_path / "d"), 2, 1 << 30).parts) == 2  # one per thread
    small = _parquet.plan(str(tmp_path / "d"), 1, 5_000)  # about 4 row groups a part
    assert 6 <= len(small.parts) <= 10
    groups = [(Path(p).name, g) for part in small.parts for p, gs, _ in part for g in gs]
    assert len(groups) == 30 and len(set(groups)) == 30  # every row group once
    assert len(_parquet.plan(str(tmp_path / "d"), 500, 1 << 30).parts) == 30  # never split one
    with pytest.raises(keysplit_errors.KeysplitError, match="no Parquet files"):
        (tmp_path / "empty").mkdir()
        _parquet.plan(str(tmp_path / "empty"), 1, 1 << 30)
    (tmp_path / "d" / "part.3.parquet").write_bytes(b"not Parquet at all")
    with pytest.raises(keysplit_errors.KeysplitError, match="cannot read the Parquet"):
        _parquet.plan(str(tmp_path / "d"), 1, 1 << 30)


class _CountedKey(keysplit_record.DataKey):
    made: list[int] = []  # noqa: RUF012

    def __init__(self, key: bytes) -> None:
        self.made.append(1)
        super().__init__(key)


def test_a_worker_derives_a_key_again_only_when_the_source_changed_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deriving 10^4 keys cost as much as sealing 10^5 records (issue 23). A new job still
    fetches every key (so a shred counts from the next job on), but reuses the previous
    job's derived key where the source hands out the same raw key."""
    from keysplit.jobs import _cache

    monkeypatch.setattr(_cache, "DataKey", _CountedKey)
    _CountedKey.made.clear()
    with _counted_source(tmp_path) as (ukr, counting):
        jobs.encrypt_dataset(tmp_path / "in", tmp_path / "enc", "body", "user", service=counting)
        assert (_CountingKeys.calls, len(_CountedKey.made)) == ([7], 7)
        jobs.decrypt_dataset(tmp_path / "enc", tmp_path / "d1", "body", "user", service=counting)
        assert (_CountingKeys.calls, len(_CountedKey.made)) == ([7, 7], 7)  # fetched, not derived
        ukr.shred("contacts/3")
        with pytest.raises(keysplit_errors.KeysplitError):  # the shredded key is not served
            jobs.decrypt_dataset(
                tmp_path / "enc", tmp_path / "d2", "body", "user", service=counting
            )
        assert _CountingKeys.calls[2] == 7 and len(_CountedKey.made) == 7
    for old in list(_cache._jobs.values()):
        old.drop()
    assert all(not j._derived and not j._keys for j in _cache._jobs.values())


def test_a_worker_encodes_a_subject_once_across_jobs_and_fetches_its_key_per_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: each job's engine on a worker started with empty memos, so a dataset's
    subjects were checked and encoded again for every job (5 to 10 % of a job, issue 23),
    and it asked its cache for every occurrence of a subject, not each subject once. Now
    a job's engine shares the previous job's memos (public: spellings, AAD tails); its
    keys are still fetched per job."""
    from keysplit.jobs import _cache
    from keysplit.keyring import records

    encoded: list[str] = []
    subject = records._encoded_subject

    def counted(memo: dict[str, tuple[str, bytes]], s: str) -> tuple[str, bytes]:
        if s not in memo:  # an encoding made, not one read from the memo
            encoded.append(s)
        return subject(memo, s)

    monkeypatch.setattr(records, "_encoded_subject", counted)
    monkeypatch.setattr(_cache, "_jobs", type(_cache._jobs)())  # no job before this one
    with _counted_source(tmp_path) as (ukr, counting):
        jobs.encrypt_dataset(tmp_path / "in", tmp_path / "enc", "body", "user", service=counting)
        assert len(encoded) == 7
        jobs.decrypt_dataset(tmp_path / "enc", tmp_path / "dec", "body", "user", service=counting)
        assert len(encoded) == 7  # before: 14
        assert _CountingKeys.calls == [7, 7]  # a new job fetches its keys again
        job = _cache.job_keys(counting, "0" * 32)
        assert getattr(job, "counts_records", True) is False  # each subject once per batch
        ukr.shred("contacts/3")
        with pytest.raises(keysplit_errors.KeysplitError):  # shared memos serve no key
            jobs.decrypt_dataset(
                tmp_path / "enc", tmp_path / "d2", "body", "user", service=counting
            )
    assert pd.read_parquet(tmp_path / "dec").equals(pd.read_parquet(tmp_path / "in"))


def test_a_job_cache_over_a_counting_source_passes_every_occurrence() -> None:
    """A source that counts the records sealed per key (``counts_records``) still gets
    every occurrence from the engine through the job's cache; a raw-key source does not."""
    from keysplit.jobs import _cache

    class Counting:
        keyring_id = "00" * 16
        counts_records = True

    assert _cache._JobKeys(Counting()).counts_records is True  # type: ignore[arg-type]
    Counting.counts_records = False
    assert _cache._JobKeys(Counting()).counts_records is False  # type: ignore[arg-type]


def _counting_exports(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many keys each keyring export asks for, from now on (one entry per export)."""
    from keysplit.keyring.records import Records

    calls: list[int] = []
    export = Records.export

    def counting(self: Records, subjects: Any, *, create: bool = False) -> Any:
        calls.append(len(subjects))
        return export(self, subjects, create=create)

    monkeypatch.setattr(Records, "export", counting)
    return calls


def test_the_key_server_exports_a_jobs_key_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: each worker's request unwrapped its keys again in the keyring process (35 ms
    per 10^4 keys, one request after the other), so a second worker slowed a job down.
    Now requests naming a job get the keys already exported for it; another job (or a
    request naming none) asks the keyring again, and a shred empties the job's keys."""
    calls = _counting_exports(monkeypatch)
    _, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    with _open(tmp_path / "kr", [shares["bob"], shares["carol"]]) as ukr, serve_keys(ukr) as src:
        one, other = src.for_job("a" * 32), pickle.loads(pickle.dumps(src.for_job("a" * 32)))
        k1, k2 = one.export(["s/1", "s/2"], create=True)
        assert other.export(["s/2", "s/1", "s/3"], create=True)[:2] == [k2, k1]
        assert calls == [2, 1]  # only s/3 was new to the job
        ukr.shred("s/1")
        assert other.export(["s/1"], create=False) == [None]  # a shred empties the job's keys
        assert src.for_job("b" * 32).export(["s/1", "s/2"], create=False) == [None, k2]
        assert src.export(["s/2"], create=False) == [k2] and calls[-2:] == [2, 1]
        with pytest.raises(ValueError):
            src.for_job("not a job id")


def test_the_key_server_never_answers_a_shredded_subject_from_an_earlier_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Red team: a worker holding ``serve_keys``' authentication key named an earlier job's
    id and got that job's cached key of a subject shredded since (while the job was one of
    the two most recent). Now every answer first checks the keyring's drops: a shred here
    or one polled from another process empties every job's keys on the server."""
    monkeypatch.setenv("KEYSPLIT_POLL", "0.05")
    _, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    quorum = [shares["bob"], shares["carol"]]
    with _open(tmp_path / "kr", quorum) as ukr, serve_keys(ukr) as src:
        earlier, current = src.for_job("a" * 32), src.for_job("b" * 32)
        k1, k2, k3 = earlier.export(["s/1", "s/2", "s/3"], create=True)
        assert current.export(["s/2"], create=False) == [k2]  # a newer job: "a" is kept
        assert earlier.export(["s/1"], create=False) == [k1]
        ukr.shred("s/1")  # in this process
        assert earlier.export(["s/1", "s/2"], create=False) == [None, k2]
        assert current.export(["s/1"], create=False) == [None]
        assert earlier.export(["s/3"], create=False) == [k3]
        with _open(tmp_path / "kr", quorum) as other:  # another holder shreds
            other.shred("s/3")
        member = ukr.local_data_keys().member
        for _ in range(400):  # until this keyring has polled the tombstone (bounded)
            if member.acked >= ukr.store.state().tombstone_seq:
                break
            member._stop.wait(0.05)
        assert member.acked >= ukr.store.state().tombstone_seq
        assert earlier.export(["s/3", "s/2"], create=False) == [None, k2]


def test_the_key_server_serves_no_kept_key_once_the_lease_lapsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: a lapsed lease (renewals failing: the store away, the lease thread starved)
    makes the keyring serve no cached key until it has renewed and taken in the shreds
    since; the key server answered a job from the keys it kept without asking it, so a
    subject another holder shredded meanwhile kept its key for the job's workers. Now a
    lapsed lease empties the server's keys and the answer comes from the keyring."""
    monkeypatch.setenv("KEYSPLIT_LEASE_TTL", "1200")
    monkeypatch.setenv("KEYSPLIT_POLL", "600")  # the shred is heard of only by asking
    _, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    quorum = [shares["bob"], shares["carol"]]
    with _open(tmp_path / "kr", quorum) as ukr, serve_keys(ukr) as src:
        job = src.for_job("a" * 32)
        _, k2 = job.export(["s/1", "s/2"], create=True)
        with _open(tmp_path / "kr", quorum) as other:  # another holder shreds
            other.shred("s/1")
        ukr.local_data_keys().member.lapse()  # as when renewals failed for the whole TTL
        assert job.export(["s/1", "s/2"], create=False) == [None, k2]
        assert ukr.data_keys(["s/1"]) == [None]  # as the keyring itself answers
        assert job.export(["s/1"], create=False) == [None]


def _recorded_key_servers(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The ``serve_keys`` servers made from now on (to look at what they keep)."""
    datakeys = importlib.import_module("keysplit.jobs.datakeys")
    servers: list[Any] = []

    class Recorded(datakeys._KeyServer):  # type: ignore[name-defined,misc]
        def __init__(self, keyring: UnsealedKeyring) -> None:
            super().__init__(keyring)
            servers.append(self)

    monkeypatch.setattr(datakeys, "_KeyServer", Recorded)
    return servers


def test_the_key_server_forgets_a_jobs_raw_keys_once_the_job_is_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the raw keys ``serve_keys`` kept for a job stayed in the keyring process
    until the block ended or two newer jobs came (a job that ended, failed or lost its
    driver left them there for as long as the block ran). Now, as on the workers, they go
    once the job has not asked for one for ``_cache.IDLE`` (here 0.2 s), with no request
    to trigger it: the block's own thread empties them."""
    from keysplit.jobs import _cache

    servers = _recorded_key_servers(monkeypatch)
    monkeypatch.setattr(_cache, "IDLE", 0.2)
    _, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    with _open(tmp_path / "kr", [shares["bob"], shares["carol"]]) as ukr, serve_keys(ukr) as src:
        job = src.for_job("a" * 32)
        k1, _ = job.export(["s/1", "s/2"], create=True)
        [server] = servers
        assert any(server._jobs.values())  # kept for the job's other workers
        for _ in range(300):  # bounded: 30 s
            if not any(server._jobs.values()):
                break
            threading.Event().wait(0.1)
        assert not any(server._jobs.values())  # (fails before: kept)
        assert job.export(["s/1"], create=False) == [k1]  # the job asks again: served


def test_the_key_server_forgets_a_busy_jobs_raw_keys_at_their_max_age(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job that keeps asking still has its kept keys dropped ``_cache.MAX_AGE`` (here
    0.5 s) after the first was kept: its next request exports them from the keyring again
    (before: never, while the job was one of the two most recent)."""
    from keysplit.jobs import _cache

    calls = _counting_exports(monkeypatch)
    monkeypatch.setattr(_cache, "MAX_AGE", 0.5)
    _, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    with _open(tmp_path / "kr", [shares["bob"], shares["carol"]]) as ukr, serve_keys(ukr) as src:
        job = src.for_job("a" * 32)
        [k1] = job.export(["s/1"], create=True)
        assert calls == [1]
        for _ in range(600):  # bounded: 30 s of requests every 0.05 s (never idle)
            assert job.export(["s/1"], create=False) == [k1]
            if len(calls) > 1:
                break
            threading.Event().wait(0.05)
        assert len(calls) > 1  # exported again (fails before: answered from the kept key)


def test_a_dask_rewrap_right_after_another_holder_rotated_moves_the_keys(
    cluster: jobs.Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Red team (the in-process fix of rewrap, for the Dask job): a holder that had not
    polled since another rotated ran ``jobs.rewrap`` under its old current version: "0
    rewrapped, 0 remaining" at version 1 while every key still sat under it (and a
    ceremony recorded that). The job now follows the store's state first."""
    monkeypatch.setenv("KEYSPLIT_LEASE_TTL", "1200")
    monkeypatch.setenv("KEYSPLIT_POLL", "600")  # b hears of the rotate only from the store
    _, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    quorum = [shares["alice"], shares["bob"]]
    with _open(tmp_path / "kr", quorum) as a, _open(tmp_path / "kr", quorum) as b:
        subjects = [f"s/{i}" for i in range(50)]
        recs = a.encrypt_many(subjects, [b"x"] * 50)
        assert a.rotate() == 2
        res = jobs.rewrap(b, cluster=cluster, partitions=2, timeout=TIMEOUT)
        assert (res.kek_version, res.rewrapped, res.remaining) == (2, 50, 0)
        assert a.status().keys_by_version == {2: 50}
        assert b.decrypt_many(subjects, recs) == [b"x"] * 50


def test_many_corrupt_keys_or_bad_rows_are_reported_whole(
    cluster: jobs.Cluster, tmp_path: Path
) -> None:
    """Red team: the job driver child sent a rewrap's corrupt subjects in its one ``done``
    line and a scan's bad rows 5,000 to a line; past 1 MiB (1,100 subjects of 1,000
    characters; 5,000 bad rows of 300-character subjects) the parent refused the line as
    oversized: the job failed with "oversized message" on every run, though its keys
    were committed (the Dask rewrap could never finish such a store). Now sent in lines
    bounded by size, and every one is reported, as the in-process paths do."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    quorum = [shares["alice"], shares["bob"]]
    bad = [f"{i:04d}" + "x" * 996 for i in range(1100)]
    with _open(tmp_path / "kr", quorum) as ukr:
        ukr.encrypt_many(["good/1", "good/2"], [b"a", b"b"])
        ukr.store.insert_many([WrappedKey(s, 1, os.urandom(24)) for s in bad])  # fail to unwrap
        ukr.rotate()
        res = jobs.rewrap(ukr, cluster=cluster, partitions=2, timeout=TIMEOUT)
        assert (res.rewrapped, res.remaining) == (2, 1100)
        assert list(res.corrupt) == bad
        subjects = [f"{i:05d}" + "y" * 295 for i in range(5000)]
        (tmp_path / "in").mkdir()
        table = pa.table({"user": subjects, "body": [b"not a record"] * 5000})
        pq.write_table(table, tmp_path / "in" / "p.parquet")
        with serve_keys(ukr) as src:
            report = jobs.scan_dataset(
                tmp_path / "in", "body", "user", service=src, cluster=cluster, timeout=TIMEOUT
            )
    assert report.checked == 5000 and len(report.bad) == 5000
    assert sorted(b.subject for b in report.bad) == subjects


def test_a_local_cluster_leaves_port_8787_alone(tmp_path: Path) -> None:
    """The job's LocalCluster serves no dashboard and takes no fixed port: with 8787 held by
    another process (another cluster on this host), Dask printed 'UserWarning: Port 8787 is
    already in use' on every dataset command's stderr."""
    import socket
    import subprocess
    import sys

    held = socket.socket()
    try:
        held.bind(("", 8787))
        held.listen()
    except OSError:
        pass  # someone else holds it already: the same situation
    code = (
        "from keysplit.jobs._driver import _client\n"
        "doc = {'scheduler': None, 'workers': 1, 'threads_per_worker': 1, 'memory_limit': None,\n"
        "       'timeout': 60}\n"
        "with _client(doc) as c:\n"
        "    assert c.submit(sum, [1, 2]).result(timeout=60) == 3\n"
        "print('ok')\n"
    )
    try:
        r = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=tmp_path
        )
    finally:
        held.close()
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    assert "8787" not in r.stderr and "Warning" not in r.stderr, r.stderr


def _cached_job_keys(dask_worker: Any = None) -> dict[str, dict[str, int]]:
    """(A worker probe) Each job cache of this process: raw-key digest -> id of the derived
    key it holds (most recent job last)."""
    from keysplit.jobs import _cache

    with _cache._lock:
        held = list(_cache._jobs.items())
    return {job_id: {d.hex(): id(k) for d, k in dict(j._derived).items()} for job_id, j in held}


def _set_key_idle(seconds: float, dask_worker: Any = None) -> None:
    """(On a worker) The idle bound of its job caches, looked at again at once."""
    from keysplit.jobs import _cache

    _cache.IDLE = seconds
    wake = getattr(_cache, "_wake", None)
    if wake is not None:
        wake.set()


def _keys_held(client: Client) -> int:
    return sum(
        len(keys) for held in client.run(_cached_job_keys).values() for keys in held.values()
    )


def _sources_kept(dask_worker: Any = None) -> int:
    """(A worker probe) How many jobs' key sources (a service token, serve_keys' key) its
    job caches still hold."""
    from keysplit.jobs import _cache

    with _cache._lock:
        return sum(1 for j in _cache._jobs.values() if getattr(j, "_inner", None) is not None)


def test_workers_drop_a_dataset_jobs_keys_once_it_is_idle(
    client: Client, cluster: jobs.Cluster, tmp_path: Path
) -> None:
    """Before: a worker kept the derived data keys of its two most recent dataset jobs
    until a newer job replaced them or it exited, however long the cluster stayed idle
    (and whether or not the job's driver still lived). Now a job's cache is emptied once
    it has not been asked for a key for ``_cache.IDLE`` seconds (60 s; set short here).
    And the job is forgotten then, its key source with it: before, the worker kept the
    emptied job, its service token or serve_keys authentication key (and connection)
    included, until two newer jobs came, however long that took."""
    _, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    _dataset(tmp_path / "in")
    try:
        with (
            _open(tmp_path / "kr", [shares["bob"], shares["carol"]]) as ukr,
            serve_keys(ukr) as src,
        ):
            kwargs: dict[str, Any] = {"service": src, "cluster": cluster}
            assert jobs.encrypt_dataset(tmp_path / "in", tmp_path / "e", "body", "user", **kwargs)
        after = client.run(_cached_job_keys)
        assert any(keys for held in after.values() for keys in held.values())  # held
        assert sum(client.run(_sources_kept).values()) >= 1
        client.run(_set_key_idle, 0.2)
        for _ in range(300):  # at most 30 s
            if not _keys_held(client) and not sum(client.run(_sources_kept).values()):
                break
            threading.Event().wait(0.1)
        assert not _keys_held(client)  # before: every key of the job, on its workers
        assert not sum(client.run(_sources_kept).values())  # before: until 2 newer jobs
    finally:
        client.run(_set_key_idle, 60.0)


def test_workers_reuse_the_derived_keys_of_a_job_run_just_before(
    client: Client, cluster: jobs.Cluster, tmp_path: Path
) -> None:
    """Jobs run back to back (within the idle bound) still reuse the previous job's
    derived keys on a worker: the very same key objects, not derived again."""
    _, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    _dataset(tmp_path / "in")
    with _open(tmp_path / "kr", [shares["bob"], shares["carol"]]) as ukr, serve_keys(ukr) as src:
        kwargs: dict[str, Any] = {"service": src, "cluster": cluster}
        jobs.encrypt_dataset(tmp_path / "in", tmp_path / "enc", "body", "user", **kwargs)
        first = client.run(_cached_job_keys)
        jobs.decrypt_dataset(tmp_path / "enc", tmp_path / "dec", "body", "user", **kwargs)
        second = client.run(_cached_job_keys)
    reused = 0
    for worker, held in second.items():
        if not first[worker] or list(held)[-1] == list(first[worker])[-1]:
            continue  # the worker ran no part of one of the two jobs
        before, now = list(first[worker].values())[-1], list(held.values())[-1]
        shared = before.keys() & now.keys()
        assert all(now[d] == before[d] for d in shared)  # the same objects: not derived again
        reused += len(shared)
    assert reused >= 7  # each of the 7 subjects' keys, on some worker
    assert pd.read_parquet(tmp_path / "dec").equals(pd.read_parquet(tmp_path / "in"))


def test_a_job_dropped_while_its_part_runs_keeps_no_key_it_fetches_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker keeps the caches of its ``JOBS_KEPT`` most recent jobs: a third job's
    first part drops the oldest, whose part may still be running. Before, that part's
    next batches filled the dropped cache again: its keys and its derived keys, which the
    next job holds as its ``prior``; the expiry thread looks only at kept jobs, so those
    keys stayed past ``IDLE`` and ``MAX_AGE``, for as long as the worker ran the jobs
    after it. Now a dropped job's cache answers (its part finishes) and keeps nothing."""
    from collections import OrderedDict

    from keysplit.jobs import _cache
    from keysplit.keyring.datakeys import DerivedDataKeys

    raw = {"s/1": os.urandom(16), "s/2": os.urandom(16)}

    class Source(DerivedDataKeys):
        keyring_id = "00" * 16

        def export(self, subjects: Sequence[str], *, create: bool) -> list[bytes | None]:
            return [raw.get(s) for s in subjects]

    monkeypatch.setattr(_cache, "_jobs", OrderedDict())
    a = _cache.job_keys(Source(), "a" * 32)
    a.resolve(["s/1"], create=False)
    b = _cache.job_keys(Source(), "b" * 32)  # prior: a's derived keys
    c = _cache.job_keys(Source(), "c" * 32)  # a is dropped
    assert list(_cache._jobs) == ["b" * 32, "c" * 32]
    (key,) = a.resolve(["s/2"], create=False)  # a's part, still running: its next batch
    assert key is not None
    sealed = keysplit_record.encrypt(key, b"row", subject="s/2")
    assert keysplit_record.decrypt(keysplit_record.DataKey(raw["s/2"]), sealed, subject="s/2")
    jobs_here = [j for j in (a, b, c) if isinstance(j, _cache._JobKeys)]
    assert len(jobs_here) == 3
    held = [
        k for j in jobs_here for cache in (j._keys, j._derived, j._prior) for k in cache.values()
    ]
    assert not any(k is key for k in held), "a dropped job's cache kept a key"


def test_a_busy_jobs_cache_is_emptied_at_its_max_age(monkeypatch: pytest.MonkeyPatch) -> None:
    """However often a job asks for keys, its cache is emptied ``MAX_AGE`` after its first
    key was cached (so a shred reaches a long job by then); it fills again on demand."""
    import time

    from keysplit.jobs import _cache

    class Source:
        keyring_id = "00" * 16

        def resolve(self, subjects: list[str], *, create: bool) -> list[keysplit_record.DataKey]:
            return [keysplit_record.DataKey(bytes(16)) for _ in subjects]

    job = _cache._JobKeys(Source())  # type: ignore[arg-type]
    job.resolve(["a", "b"], create=False)
    assert job.expire(time.monotonic()) is not None and job._keys  # within both bounds
    monkeypatch.setattr(_cache, "MAX_AGE", 0.0)
    job.resolve(["a"], create=False)  # just used: not idle
    assert job.expire(time.monotonic()) is None and not job._keys
    job.resolve(["a"], create=False)
    assert list(job._keys) == ["a"]
