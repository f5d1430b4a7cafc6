"""The KeyStore contract: one suite every store passes (in-memory, SQLite, PostgreSQL).

Each test states one promise of :class:`keysplit.store.KeyStore` and checks it against a
real store: the in-memory one in tests/support/memory_store.py (the protocol's meaning in a few
lines), SQLite in a temp dir and PostgreSQL on the session's throwaway server (one schema
per test). Races run real threads and real processes; the crash test SIGKILLs a process
in the middle of bulk replaces. A new store is added to ``BACKENDS`` and must pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from memory_store import MemoryKeyStore

from keysplit import KeyringError, LegalHoldError
from keysplit.store import KeyStore, WrappedKey, open_store
from keysplit.store.base import AuditStore, Lease, RangedAuditStore, StaleKekError

if TYPE_CHECKING:
    from keysplit import UnsealedKeyring

KID = "ab" * 16
OTHER = "cd" * 16
BACKENDS = ["memory", "sqlite", "postgres"]
PROCESS_BACKENDS = ["sqlite", "postgres"]  # the in-memory store lives in one process
TIMEOUT = 120


def wrap(subject: str, version: int, salt: str = "") -> bytes:
    """A stand-in for a wrapped key that says which (subject, version) it belongs to."""
    return hashlib.sha256(f"{subject}/{version}/{salt}".encode()).digest()[:24]


def wk(subject: str, version: int = 1, salt: str = "") -> WrappedKey:
    return WrappedKey(subject, version, wrap(subject, version, salt))


@dataclass
class Backend:
    name: str
    url: str | None  # None: not reachable from another process
    home: Path
    opened: list[KeyStore]

    def open(self, keyring_id: str = KID, *, create: bool = False) -> KeyStore:
        store: KeyStore
        if self.url is None:
            store = MemoryKeyStore(str(self.home), keyring_id, create=create)
        else:
            store = open_store(self.url, keyring_id=keyring_id, home=self.home, create=create)
        self.opened.append(store)
        return store


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from _backend(request, tmp_path)


@pytest.fixture(params=PROCESS_BACKENDS)
def shared_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from _backend(request, tmp_path)


def _backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    name = request.param
    if name == "memory":
        url = None
    elif name == "sqlite":
        url = f"sqlite://{tmp_path}/keys.sqlite"
    else:
        server = request.getfixturevalue("pg_server")
        url = f"{server.url}&schema=t_{uuid.uuid4().hex[:16]}"
    b = Backend(name, url, tmp_path, [])
    try:
        yield b
    finally:
        for s in b.opened:
            s.close()


@pytest.fixture
def store(backend: Backend) -> KeyStore:
    return backend.open(create=True)


# --------------------------------------------------------------------------- every method


def test_is_a_keystore_bound_to_its_keyring(backend: Backend) -> None:
    with pytest.raises(KeyringError, match="not found"):
        backend.open()  # nothing there yet and no create
    s = backend.open(create=True)
    assert isinstance(s, KeyStore)
    assert s.keyring_id == KID
    s.insert_many([wk("a")])
    again = backend.open()  # a second handle sees the same keys
    assert again.get_many(["a"]) == {"a": wk("a")}
    with pytest.raises(KeyringError, match="another keyring"):
        backend.open(OTHER)
    with pytest.raises(KeyringError, match="another keyring"):
        backend.open(OTHER, create=True)


def test_insert_many_existing_wins_and_order_kept(store: KeyStore) -> None:
    assert store.insert_many([]) == []
    first = [wk(f"s{i:04d}", salt="first") for i in range(3)]
    assert store.insert_many(first) == first
    again = [wk("new", salt="second"), wk("s0001", salt="second"), wk("new", salt="third")]
    got = store.insert_many(again)
    assert got == [again[0], first[1], again[0]], "existing key wins; first of a repeat wins"
    assert store.get_many(["s0001", "new"]) == {"s0001": first[1], "new": again[0]}


def test_get_many(store: KeyStore) -> None:
    assert store.get_many([]) == {}
    store.insert_many([wk(f"u{i}") for i in range(1500)])
    wanted = [f"u{i}" for i in range(0, 3000, 2)] + ["u0", "nobody"]
    got = store.get_many(wanted)
    assert got == {f"u{i}": wk(f"u{i}") for i in range(0, 1500, 2)}


def test_replace_many_is_compare_and_swap(store: KeyStore) -> None:
    store.insert_many([wk("a"), wk("b"), wk("c")])
    assert store.replace_many([]) == 0
    pairs = [
        (wk("a"), wk("a", 2)),  # matches: replaced
        (wk("b", 7), wk("b", 2)),  # wrong old version
        (WrappedKey("c", 1, b"\x00" * 24), wk("c", 2)),  # wrong old bytes
        (wk("gone"), wk("gone", 2)),  # no such key: never created by a replace
        (wk("b"), wk("x", 2)),  # subjects differ: ignored
    ]
    assert store.replace_many(pairs) == 1
    assert store.get_many(["a", "b", "c", "gone", "x"]) == {
        "a": wk("a", 2),
        "b": wk("b"),
        "c": wk("c"),
    }
    assert store.replace_many([(wk("a"), wk("a", 3))]) == 0, "the old row is no longer stored"


SUBJECTS = ["a", "B", "b", "ä", "z", "é", "Z", "日本", "𝄞clef", "a b", "a-b", "a\u00a0", "~", "0"]


def test_stale_batch_is_a_keyset_cursor_in_codepoint_order(store: KeyStore) -> None:
    rnd = random.Random(11)
    subjects = SUBJECTS + [f"user-{rnd.randrange(10**6):06d}" for _ in range(200)]
    rows = [wk(s, rnd.choice([1, 2, 3])) for s in dict.fromkeys(subjects)]
    store.insert_many(rows)
    for current in (1, 2, 3, 4):
        expect = sorted(r for r in rows if r.kek_version != current)  # Python: code points
        for limit in (1, 7, 1000):
            got, after = [], ""
            while page := store.stale_batch(current, after, limit):
                assert len(page) <= limit
                got += page
                after = page[-1].subject
            assert got == expect, (current, limit)
    assert store.stale_batch(1, "\U0010ffff", 10) == []
    for current in (1, 2, 4):  # the planner's cuts, computed in the store, match Python's
        stale = sorted(r.subject for r in rows if r.kek_version != current)
        for every in (1, 2, 7, len(stale) - 1, len(stale), 10**6):
            assert store.stale_cuts(current, every) == stale[every - 1 : len(stale) - 1 : every]
    with pytest.raises(ValueError):
        store.stale_cuts(1, 0)


def test_count_by_version_and_delete(store: KeyStore) -> None:
    assert store.count_by_version() == {}
    store.insert_many([wk(f"s{i}", 1 + i % 3) for i in range(10)])
    assert store.count_by_version() == {1: 4, 2: 3, 3: 3}
    assert store.delete("s0") is True
    assert store.delete("s0") is False
    assert store.delete("never") is False
    assert store.count_by_version() == {1: 3, 2: 3, 3: 3}
    assert store.get_many(["s0"]) == {}


def test_legal_hold_refuses_shred(store: KeyStore) -> None:
    store.insert_many([wk("held"), wk("free")])
    assert store.legal_holds() == []
    store.set_legal_hold("held", True)
    store.set_legal_hold("held", True)  # idempotent
    store.set_legal_hold("keyless", True)  # a hold does not need a key
    assert store.legal_holds() == ["held", "keyless"]
    with pytest.raises(LegalHoldError):
        store.delete("held")
    assert store.get_many(["held"]) == {"held": wk("held")}, "a refused shred deletes nothing"
    with pytest.raises(LegalHoldError):
        store.delete("keyless")
    assert store.delete("free")
    store.set_legal_hold("held", False)
    store.set_legal_hold("held", False)
    assert store.legal_holds() == ["keyless"]
    assert store.delete("held")


def test_close_releases(backend: Backend) -> None:
    s = backend.open(create=True)
    s.insert_many([wk("a")])
    s.close()
    backend.opened.remove(s)
    again = backend.open()
    assert again.get_many(["a"]) == {"a": wk("a")}


# --------------------------------------------------------------------------- fleet state


def lease(lid: str, current: int, *, acked: int = 0) -> Lease:
    return Lease(lid, "host-a", 4242, "serve", current, acked, 0, 0.0)


def test_state_guards_inserts_under_the_current_kek(store: KeyStore) -> None:
    st = store.state()
    assert (st.current_kek, st.retired, st.tombstone_seq) == (0, (), 0)
    store.insert_many([wk("legacy", 3)])  # nothing recorded yet: any version not retired
    st1 = store.set_current_kek(1)
    assert st1.current_kek == 1 and st1.epoch > st.epoch
    with pytest.raises(StaleKekError) as info:
        store.insert_many([wk("a", 1), wk("b", 2)])
    assert info.value.state.current_kek == 1
    assert store.get_many(["a", "b"]) == {}, "a refused insert stores nothing"
    assert store.insert_many([wk("a", 1)]) == [wk("a", 1)]
    st2 = store.set_current_kek(2)
    assert st2.epoch > st1.epoch
    with pytest.raises(StaleKekError, match="not current"):
        store.insert_many([wk("c", 1)])
    with pytest.raises(KeyringError, match="not newer"):
        store.set_current_kek(1)
    with pytest.raises(KeyringError, match="another process rotated"):
        store.set_current_kek(2)  # two rotations from 1 made two different KEKs "2"
    assert store.state() == st2


def test_admin_lock_makes_rotations_take_turns(backend: Backend) -> None:
    """Two handles on one store (two hosts): while one holds the admin lock the other
    waits, and gives up with a KeyringError after its timeout; once released it is free."""
    one, two = backend.open(create=True), backend.open()
    with one.admin_lock(), pytest.raises(KeyringError, match="rotation lock"):  # noqa: SIM117
        with two.admin_lock(timeout=0.3):  # raises on entry: no body runs
            pass
    with two.admin_lock(timeout=5):
        pass
    with pytest.raises(RuntimeError), one.admin_lock():
        raise RuntimeError("a failed rotation releases it too")
    with two.admin_lock(timeout=5):
        pass


def test_retire_is_safe_by_construction(store: KeyStore) -> None:
    store.set_current_kek(1)
    store.insert_many([wk("a", 1)])
    store.set_current_kek(2)
    with pytest.raises(KeyringError, match="current"):
        store.retire_kek(2)
    with pytest.raises(KeyringError, match="1 data keys are still wrapped under KEK version 1"):
        store.retire_kek(1)
    assert store.replace_many([(wk("a", 1), wk("a", 2))]) == 1
    store.renew_lease(lease("L1", 1), 60.0)
    with pytest.raises(KeyringError, match=r"live process: host-a pid 4242 \(serve\)"):
        store.retire_kek(1)
    assert [x.id for x in store.leases()] == ["L1"]
    store.renew_lease(lease("L1", 1), -1.0)  # expired: no longer blocks
    assert store.leases() == [] and [x.id for x in store.leases(live=False)] == ["L1"]
    before = store.state()
    st = store.retire_kek(1)
    assert st.retired == (1,) and st.epoch > before.epoch
    with pytest.raises(StaleKekError, match="retired"):
        store.replace_many([(wk("a", 2), wk("a", 1))])
    assert store.get_many(["a"]) == {"a": wk("a", 2)}
    store.drop_lease("L1")
    assert store.leases(live=False) == []


def test_a_leases_time_left_is_read_on_the_stores_clock(store: KeyStore) -> None:
    """A lease's ``expires`` is on the store's clock; a store that keeps one says it
    (``clock()``: the PostgreSQL server's, the SQLite host's), so ``status`` subtracts that,
    not this host's ``time.time()`` (stop 42, found: off by the skew); a store without one
    (the in-memory test store) is read on this host's clock."""
    from keysplit.keyring.status import _clock

    store.renew_lease(lease("L1", 1), 60.0)
    (x,) = store.leases()
    assert 30.0 < x.expires - _clock(store) <= 60.0  # 30: a loaded host's slack
    assert callable(getattr(store, "clock", None)) == (not isinstance(store, MemoryKeyStore))


def test_delete_tombstones_in_its_transaction(store: KeyStore) -> None:
    tag_a, tag_b = b"\x01" * 16, b"\x02" * 16
    store.insert_many([wk("a"), wk("b")])
    e0 = store.state().epoch
    assert store.delete("a", tag_a)
    assert not store.delete("a", tag_a), "nothing deleted: no second tombstone"
    assert not store.delete("nobody", tag_b)
    st = store.state()
    assert st.tombstone_seq == 1 and st.epoch == e0 + 1
    (t,) = store.tombstones_since(0)
    assert (t.seq, t.tag) == (1, tag_a) and t.time > 0
    assert store.has_tombstone([tag_b, tag_a]) and not store.has_tombstone([tag_b])
    store.set_legal_hold("b", True)
    assert store.state().epoch == e0 + 2, "a hold bumps the epoch"
    with pytest.raises(LegalHoldError):
        store.delete("b", tag_b)
    assert store.tombstones_since(1) == [] and store.state().tombstone_seq == 1
    with pytest.raises(ValueError):
        store.delete("b", b"short")
    assert store.delete("c") is False  # no tombstone asked: plain delete as before
    rekeyed = store.note_rekey("set-2")
    assert rekeyed.rekeys == 1 and rekeyed.epoch == e0 + 3


def test_note_rekey_counts_each_rekey_once(store: KeyStore) -> None:
    """A rekey's count is kept with its share set's id: the next unseal after a rekey
    killed past its switch notes it again, whether or not the count was made before the
    kill, and the store counts it once (the count stayed one short, or would count it
    twice). A new share set counts again, and so does one after it."""
    first = store.note_rekey("set-2")
    assert first.rekeys == 1
    assert store.note_rekey("set-2") == first  # noted again: no count, no epoch bump
    assert store.state() == first
    second = store.note_rekey("set-3")
    assert second.rekeys == 2 and second.epoch == first.epoch + 1
    assert store.note_rekey("set-3") == second


def test_delete_appends_several_tombstones_in_order(store: KeyStore) -> None:
    """A shred that deletes a legacy spelling's key tombstones that spelling and its
    subject in one transaction (keysplit.keyring.admin)."""
    tags = [b"\x03" * 16, b"\x04" * 16]
    store.insert_many([wk("a")])
    e0 = store.state().epoch
    assert not store.delete("nobody", tags)
    assert store.delete("a", tags)
    st = store.state()
    assert st.tombstone_seq == 2 and st.epoch == e0 + 1
    assert [(t.seq, t.tag) for t in store.tombstones_since(0)] == [(1, tags[0]), (2, tags[1])]
    store.insert_many([wk("b")])
    with pytest.raises(ValueError):
        store.delete("b", [tags[0], b"short"])
    assert store.get_many(["b"]) and store.state().tombstone_seq == 2


def test_delete_many_deletes_every_subject_or_none(store: KeyStore) -> None:
    """One subject's spellings are shredded in one transaction: a hold on any of them
    (keyed or not) refuses the whole delete; else every key goes, the tombstones are
    appended once, in order, with one epoch bump."""
    tags = [b"\x05" * 16, b"\x06" * 16]
    store.insert_many([wk("x-nfc"), wk("x-nfd"), wk("y")])
    store.set_legal_hold("x-odd", True)  # held, no key there
    e0 = store.state().epoch
    with pytest.raises(LegalHoldError, match="x-odd"):
        store.delete_many(["x-nfc", "x-nfd", "x-odd"], tags)
    assert set(store.get_many(["x-nfc", "x-nfd"])) == {"x-nfc", "x-nfd"}
    assert store.state().epoch == e0 and store.tombstones_since(0) == []
    with pytest.raises(TypeError):
        store.delete_many("x-nfc", tags)  # type: ignore[arg-type]  # a str, not subjects
    assert not store.delete_many(["nobody", "nobody-else"], tags)
    assert store.delete_many(["x-nfc", "x-nfd", "x-nfd", "never"], tags)
    assert store.get_many(["x-nfc", "x-nfd", "y"]).keys() == {"y"}
    st = store.state()
    assert st.epoch == e0 + 1 and st.tombstone_seq == 2
    assert [(t.seq, t.tag) for t in store.tombstones_since(0)] == [(1, tags[0]), (2, tags[1])]
    assert not store.delete_many([])


def test_audit_chain_appends_serialize(backend: Backend) -> None:
    store = backend.open(create=True)
    if not isinstance(store, AuditStore):
        pytest.skip(f"{backend.name} keeps the audit chain in a file")
    assert store.audit_lines() == []

    def build(last: bytes | None) -> bytes:
        n = int(last.split(b":")[0]) if last else 0
        return f"{n + 1}:{hashlib.sha256(last or b'').hexdigest()}".encode()

    _in_threads(4, lambda i: [backend.open().audit_append(build) for _ in range(10)])  # type: ignore[attr-defined]
    lines = store.audit_lines()
    assert [int(x.split(b":")[0]) for x in lines] == list(range(1, 41))
    prev = b""
    for line in lines:  # every line built on the one before it: no lost or forked append
        assert line.split(b":")[1] == hashlib.sha256(prev).hexdigest().encode()
        prev = line
    if isinstance(store, RangedAuditStore):  # the ranged reads a quorum's gap check uses
        assert store.audit_lines_from(39) == lines[38:]
        assert store.audit_lines_from(1) == lines and store.audit_lines_from(41) == []
        assert store.audit_last() == lines[-1]


def test_retire_races_inserts_of_stale_writers(backend: Backend) -> None:
    """Writers keep creating keys under the version they last saw while the KEK is rotated
    and the old one retired: after the retire, no row is ever under the retired version."""
    store = backend.open(create=True)
    store.set_current_kek(1)
    stop = threading.Event()
    refused = [0]

    def writer(i: int) -> None:
        s = backend.open()
        version, n = 1, 0
        while not stop.is_set():
            try:
                s.insert_many([wk(f"w{i}-{n:05d}", version)])
                n += 1
            except StaleKekError as exc:
                refused[0] += 1
                version = exc.state.current_kek

    def admin() -> None:
        time.sleep(0.2)
        store.set_current_kek(2)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            after = ""
            while page := store.stale_batch(2, after, 200):
                after = page[-1].subject
                store.replace_many([(r, wk(r.subject, 2)) for r in page])
            try:
                store.retire_kek(1)
                break
            except KeyringError:
                continue
        time.sleep(0.2)
        stop.set()

    _in_threads(3, lambda i: admin() if i == 2 else writer(i))
    assert store.state().retired == (1,)
    assert 1 not in store.count_by_version(), "a key was stored under a retired version"
    assert refused[0] >= 1


def _sqlite_store_of_version_1(path: Path) -> None:
    """A SQLite store at ``path`` as version 1 made it (no fleet tables), holding key a."""
    import sqlite3

    from keysplit.store import SQLiteKeyStore

    s = SQLiteKeyStore(path, KID, create=True)
    s.insert_many([wk("a", 1)])
    s.close()
    db = sqlite3.connect(path)
    db.executescript(
        "DROP TABLE keyring_state; DROP TABLE tombstones; DROP TABLE leases;"
        "UPDATE meta SET value = '1' WHERE name = 'version';"
    )
    db.close()


def test_sqlite_store_of_version_1_is_upgraded(tmp_path: Path) -> None:
    from keysplit.store import SQLiteKeyStore

    path = tmp_path / "keys.sqlite"
    _sqlite_store_of_version_1(path)
    s = SQLiteKeyStore(path, KID)
    assert s.get_many(["a"]) == {"a": wk("a", 1)}
    assert s.state().current_kek == 0
    assert s.delete("a", b"\x03" * 16) and s.state().tombstone_seq == 1
    s.close()


def test_a_read_only_open_of_a_sqlite_store_of_version_1_changes_nothing(tmp_path: Path) -> None:
    """(stop 41, found) ``open_store(read_only=True)`` (``keysplit status``, a sealed
    keyring's audit log) upgraded a version 1 store in place: a write from an open that
    promised to read (on a read-only copy or mount it fails). It is now refused naming both
    versions; the file is unchanged; a writing open upgrades it, and reads then open."""
    path = tmp_path / "keys.sqlite"
    _sqlite_store_of_version_1(path)
    before = hashlib.sha256(path.read_bytes()).digest()
    with pytest.raises(KeyringError) as info:
        open_store("sqlite:keys.sqlite", keyring_id=KID, home=tmp_path, read_only=True)
    assert type(info.value) is KeyringError
    assert str(info.value) == (
        f"key store {path} is at version 1, this keysplit needs version 2; it is "
        "upgraded only by an open for writing, and this one only reads: nothing was changed"
    )
    assert info.value.hint == (
        "open it for writing once with this keysplit (keysplit unseal does), then run this again"
    )
    assert hashlib.sha256(path.read_bytes()).digest() == before
    open_store("sqlite:keys.sqlite", keyring_id=KID, home=tmp_path).close()  # upgrades it
    s = open_store("sqlite:keys.sqlite", keyring_id=KID, home=tmp_path, read_only=True)
    try:
        assert s.get_many(["a"]) == {"a": wk("a", 1)} and s.state().rekeys == 0
    finally:
        s.close()


def _contents(backend: Backend) -> object:
    """What a store holds, byte for byte: the SQLite file's SHA-256 (and its WAL's size), or
    a dump of every table in the PostgreSQL store's schema (each row as text, sorted), read
    as the owner role on a connection of the test's own."""
    if backend.name == "sqlite":
        path = backend.home / "keys.sqlite"
        wal = path.with_name(path.name + "-wal")
        return hashlib.sha256(path.read_bytes()).digest(), wal.exists() and wal.stat().st_size
    import psycopg
    from psycopg import sql

    from keysplit.store.url import postgres_conninfo

    assert backend.url is not None
    conninfo, schema = postgres_conninfo(backend.url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        found = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,)
        )
        dump = {}
        for (table,) in found.fetchall():
            each = sql.SQL("SELECT t::text FROM {}.{} t")
            rows = conn.execute(each.format(sql.Identifier(schema), sql.Identifier(table)))
            dump[table] = sorted(r[0] for r in rows)
    assert {"data_keys", "keyring_state", "leases", "legal_holds", "meta"} <= set(dump)
    return dump


def test_a_read_only_store_refuses_every_write_and_changes_nothing(
    shared_backend: Backend,
) -> None:
    """(stop 42, found; PostgreSQL stop 43) ``read_only`` only kept the open from upgrading
    a schema: every write through such a store went through (``keysplit status`` and a
    sealed keyring's audit log open one; a bug there could write). SQLite's connection is
    now ``query_only``, PostgreSQL's pooled connections ``default_transaction_read_only``
    (before: on an owner role, every write but a bulk one committed): the server refuses
    each write, raised as the same :class:`KeyringError` naming the read-only open, and the
    store's contents (the SQLite file's SHA-256; a dump of the PostgreSQL schema's tables)
    are unchanged; reads still work, and a writing open still writes."""
    b = shared_backend
    assert b.url is not None
    w = open_store(b.url, keyring_id=KID, home=b.home, create=True)
    w.insert_many([wk("a", 1), wk("b", 1)])
    w.renew_lease(Lease("l1", "h", 1, "serve", 1, 0, 0, 0.0), 60)
    if isinstance(w, AuditStore):
        w.audit_append(lambda last: b"line 1")
    w.close()  # SQLite: its last connection, so the WAL is checkpointed into the file
    before = _contents(b)
    s = open_store(b.url, keyring_id=KID, home=b.home, read_only=True)
    writes: list[Callable[[], object]] = [
        lambda: s.insert_many([wk("c", 1)]),
        lambda: s.insert_many([wk(f"u{i}", 1) for i in range(100)]),  # PostgreSQL: staged
        lambda: s.replace_many([(wk("a", 1), wk("a", 1, "x"))]),
        lambda: s.delete("a", b"\x03" * 16),
        lambda: s.delete_many(["a", "b"]),
        lambda: s.set_legal_hold("b", True),
        lambda: s.set_current_kek(1),
        lambda: s.retire_kek(7),
        lambda: s.note_rekey("r1"),
        lambda: s.renew_lease(Lease("l2", "h", 2, "serve", 1, 0, 0, 0.0), 60),
        lambda: s.drop_lease("l1"),
    ]
    if isinstance(s, AuditStore):
        writes.append(lambda: s.audit_append(lambda last: b"line 2"))
    if vacuum := getattr(s, "vacuum", None):  # PostgreSQL: the server would run it
        writes += [vacuum, lambda: vacuum(full=True)]
    sqlite_path = b.home / "keys.sqlite"
    where = f"key store {sqlite_path}" if b.name == "sqlite" else "PostgreSQL key store at "
    try:
        for write in writes:
            with pytest.raises(KeyringError) as info:
                write()
            assert type(info.value) is KeyringError, info.value
            assert str(info.value).startswith(where), info.value
            assert str(info.value).endswith(
                ": opened for reading only, so it takes no writes; nothing was changed"
            ), info.value
            assert info.value.hint == "open the store for writing (without read_only=True)"
        # it still reads
        assert s.get_many(["a", "b", "c"]) == {"a": wk("a", 1), "b": wk("b", 1)}
        assert [x.id for x in s.leases()] == ["l1"] and s.legal_holds() == []
        assert s.state().current_kek == 0 and s.count_by_version() == {1: 2}
    finally:
        s.close()
    assert _contents(b) == before
    w = open_store(b.url, keyring_id=KID, home=b.home)  # a writing open still writes
    try:
        assert w.insert_many([wk("c", 1)]) == [wk("c", 1)]
    finally:
        w.close()


# --------------------------------------------------------------------------- races


def _in_threads(n: int, fn: Callable[[int], object]) -> list[object]:
    barrier = threading.Barrier(n, timeout=TIMEOUT)
    out: list[object] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            out[i] = fn(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]
    return out


def test_threads_creating_the_same_subjects_agree(backend: Backend) -> None:
    backend.open(create=True)
    subjects = [f"user-{i:04d}" for i in range(400)]

    def writer(i: int) -> list[WrappedKey]:
        mine = subjects[:]
        rnd_i = random.Random(i)
        rnd_i.shuffle(mine)  # different orders: a store must not deadlock on them
        store = backend.open()
        got = []
        for lo in range(0, len(mine), 100):
            got += store.insert_many([wk(s, salt=f"writer{i}") for s in mine[lo : lo + 100]])
        return sorted(got)

    results = _in_threads(6, writer)
    assert all(r == results[0] for r in results), "every writer got the same keys"
    stored = backend.open().get_many(subjects)
    assert sorted(stored.values()) == results[0]
    winners = {r.wrapped for r in results[0]}  # type: ignore[union-attr]
    assert len(winners) == len(subjects), "one key per subject"


WRITER_CHILD = """
import json, sys, time
from pathlib import Path
from keysplit.store import WrappedKey, open_store
url, home, kid, me, go, todo = sys.argv[1:7]
subjects = json.loads(Path(todo).read_text())
store = open_store(url, keyring_id=kid, home=home)
deadline = time.monotonic() + 60
while not Path(go).exists() and time.monotonic() < deadline:
    time.sleep(0.002)
rows = [WrappedKey(s, 1, f"{me}:{s}".encode().ljust(24, b".")[:24]) for s in subjects]
got = []
for lo in range(0, len(rows), 50):
    got += store.insert_many(rows[lo : lo + 50])
store.close()
print(json.dumps(sorted([r.subject, r.kek_version, r.wrapped.hex()] for r in got)))
"""


def test_processes_creating_the_same_subjects_agree(shared_backend: Backend) -> None:
    b = shared_backend
    b.open(create=True)
    subjects = [f"user-{i:04d}" for i in range(300)]
    go = b.home / "go"
    procs = []
    for me in range(3):
        todo = b.home / f"todo{me}.json"
        todo.write_text(json.dumps(subjects[:: 1 if me % 2 == 0 else -1]))
        args = [str(b.url), str(b.home), KID, f"w{me}", str(go), str(todo)]
        p = subprocess.Popen(
            [sys.executable, "-c", WRITER_CHILD, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(p)
    time.sleep(0.5)  # let them connect, then start all at once
    go.touch()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=TIMEOUT)
        assert p.returncode == 0, err
        outs.append(json.loads(out))
    assert outs[0] == outs[1] == outs[2]
    stored = b.open().get_many(subjects)
    assert sorted([r.subject, r.kek_version, r.wrapped.hex()] for r in stored.values()) == outs[0]
    assert len({w for _, _, w in outs[0]}) == len(subjects)


def test_rewrap_races_inserts_and_shreds(backend: Backend) -> None:
    """A rewrap loop (stale_batch + compare-and-swap replace_many) while other threads
    insert new subjects and shred old ones: nothing shredded comes back, nothing else is
    lost, every key is exactly one version's, and a final pass finishes the rewrap."""
    store = backend.open(create=True)
    old = [f"old-{i:05d}" for i in range(1200)]
    store.insert_many([wk(s) for s in old])
    held = set(old[5::50])
    for s in held:
        store.set_legal_hold(s, True)
    shredded: set[str] = set()
    inserted: set[str] = set()
    replaced = [0]

    def rewrapper() -> None:
        after = ""
        while page := store.stale_batch(2, after, 97):
            after = page[-1].subject
            replaced[0] += store.replace_many([(r, wk(r.subject, 2)) for r in page])

    def inserter() -> None:
        s2 = backend.open()
        for lo in range(0, 600, 60):
            rows = [wk(f"new-{i:05d}") for i in range(lo, lo + 60)]
            # existing keys the shredder never touches (a shredded one may be created anew)
            rows += [wk(f"old-{i:05d}", salt="late") for i in range(lo, lo + 6) if i % 7]
            got = s2.insert_many(rows)
            for r, g in zip(rows, got, strict=True):
                if r.subject.startswith("new-"):
                    assert g == r
                    inserted.add(r.subject)
                else:
                    assert g.wrapped != r.wrapped, "an existing key was overwritten"

    def shredder() -> None:
        s3 = backend.open()
        for s in old[::7]:
            if s in held:
                with pytest.raises(LegalHoldError):
                    s3.delete(s)
            elif s3.delete(s):
                shredded.add(s)

    _in_threads(3, lambda i: (rewrapper, inserter, shredder)[i]())
    everyone = set(old) | inserted
    final = store.get_many(sorted(everyone))
    assert shredded and set(final) == everyone - shredded
    assert held <= set(final)
    for r in final.values():
        assert r.wrapped == wrap(r.subject, r.kek_version), f"torn or foreign row: {r}"
    at_v2 = store.count_by_version().get(2, 0)
    # each subject is swapped at most once (v1 -> v2); some swapped ones were shredded later
    assert at_v2 <= replaced[0] <= at_v2 + len(shredded)
    # a second pass finishes the job; the shredded stay shredded
    after = ""
    while page := store.stale_batch(2, after, 500):
        after = page[-1].subject
        store.replace_many([(r, wk(r.subject, 2)) for r in page])
    assert store.count_by_version() == {2: len(everyone - shredded)}
    assert store.get_many(sorted(shredded)) == {}


def test_holds_on_several_subjects_are_one_change(store: KeyStore) -> None:
    """set_legal_holds: every subject held (or lifted) by one transaction, one epoch bump."""
    epoch = store.state().epoch
    store.set_legal_holds(["b", "a", "b"], True)
    assert store.legal_holds() == ["a", "b"]
    assert store.state().epoch == epoch + 1
    store.set_legal_holds([], True)  # nothing to do: no change
    assert store.state().epoch == epoch + 1
    store.set_legal_holds(["a", "b", "never-held"], False)
    assert store.legal_holds() == []
    assert store.state().epoch == epoch + 2


def test_hold_then_shred_race_never_loses_a_held_key(backend: Backend) -> None:
    """Once set_legal_hold returns and the key is there, no concurrent shred removes it."""
    store = backend.open(create=True)
    subjects = [f"s{i:03d}" for i in range(120)]
    store.insert_many([wk(s) for s in subjects])
    lost: list[str] = []
    done = threading.Event()

    def holder() -> None:
        h = backend.open()
        for s in subjects:
            h.set_legal_hold(s, True)
            if h.get_many([s]):  # the shredder had not won before the hold
                time.sleep(0.001)
                if not h.get_many([s]):
                    lost.append(s)
        done.set()

    def shredder() -> None:
        d = backend.open()
        while not done.is_set():
            for s in subjects:
                with contextlib.suppress(LegalHoldError):
                    d.delete(s)

    _in_threads(2, lambda i: (holder, shredder)[i]())
    assert lost == [], "a key was shredded after its hold was placed"


REPLACER_CHILD = """
import sys
from keysplit.store import WrappedKey, open_store
import hashlib
def wrap(s, v):
    return hashlib.sha256(f"{s}/{v}/".encode()).digest()[:24]
url, home, kid, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
store = open_store(url, keyring_id=kid, home=home)
i = 0
while page := store.stale_batch(2, "", batch):
    print("start", i, flush=True)
    store.replace_many([(r, WrappedKey(r.subject, 2, wrap(r.subject, 2))) for r in page])
    print("done", i, flush=True)
    i += 1
print("finished", flush=True)
"""


def test_sigkill_mid_bulk_replace_loses_nothing(shared_backend: Backend) -> None:
    b = shared_backend
    n, batch = 30_000, 5_000
    store = b.open(create=True)
    subjects = [f"user-{i:06d}" for i in range(n)]
    for lo in range(0, n, 10_000):
        store.insert_many([wk(s) for s in subjects[lo : lo + 10_000]])
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(REPLACER_CHILD), str(b.url), str(b.home), KID,
         str(batch)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("start 2"):
                time.sleep(random.uniform(0.0, 0.05))  # somewhere inside the third batch
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else lines
    assert "finished" not in lines
    counts = store.count_by_version()
    assert sum(counts.values()) == n, "no key lost"
    assert counts.get(2, 0) % batch == 0, f"a batch was half applied: {counts}"
    assert counts.get(2, 0) >= 2 * batch
    stored = store.get_many(subjects)
    assert len(stored) == n
    for r in stored.values():
        assert r.wrapped == wrap(r.subject, r.kek_version)
    # and the interrupted work resumes to completion
    while page := store.stale_batch(2, "", batch):
        store.replace_many([(r, wk(r.subject, 2)) for r in page])
    assert store.count_by_version() == {2: n}


# ------------------------------------------------------- one wording for one condition


@contextlib.contextmanager
def _writer_holding_the_lock(backend: Backend, store: KeyStore) -> Iterator[None]:
    """Another writer of the keyring holds the lock a change takes (SQLite: an open write
    transaction on the file; PostgreSQL: the keyring state's lock), for the block."""
    if backend.name == "sqlite":
        import sqlite3

        store._db.execute("PRAGMA busy_timeout = 1000")  # type: ignore[attr-defined]
        other = sqlite3.connect(str(backend.home / "keys.sqlite"), isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            yield
        finally:
            other.close()
        return
    import psycopg

    from keysplit.store.url import postgres_conninfo

    conninfo, schema = postgres_conninfo(backend.url or "")
    with psycopg.connect(conninfo) as other:  # a transaction, held until the block ends
        other.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"keysplit/{schema}//state",)
        )
        yield
        other.rollback()


@pytest.mark.parametrize("name", PROCESS_BACKENDS)
def test_note_rekey_says_each_failure_as_the_other_store_does(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """note_rekey's failures, pinned whole: the same sentence on both stores for the same
    condition (SQLite's lock wait said sqlite3's 'database is locked'), each one sentence
    saying what happened and, in its hint, what to do; no SQL, no value. The PostgreSQL
    store's lost COMMIT ('unknown') has no SQLite twin: test_postgres_rotation_commit."""
    from keysplit import StoreUnreachableError

    backend = next(_backend(_Param(request, name), tmp_path))
    if name == "postgres":
        # The schema is made under the default bound (its DDL took over 0.25 s per call at
        # load ~15), then opened again with a short call bound: its lock wait is 0.8 of it,
        # 1 s as SQLite's busy_timeout below, so a loaded machine's slow call is not a wait.
        backend.open(create=True).close()
        backend.url = f"{backend.url}&call_timeout=1.25"
    store = backend.open(create=True)
    prefix = (
        f"key store {tmp_path / 'keys.sqlite'}"
        if name == "sqlite"
        else f"PostgreSQL key store at {store._where}"  # type: ignore[attr-defined]
    )
    with _writer_holding_the_lock(backend, store), pytest.raises(StoreUnreachableError) as held:
        store.note_rekey("set-2")
    assert str(held.value) == (
        f"{prefix}: waited 1 s for a lock held by another writer of this keyring (a long "
        "bulk insert, rewrap, rotation or shred, or a process holding its transaction open); "
        "nothing was changed"
    )
    look = (
        ""
        if name == "sqlite"
        else (
            "; pg_stat_activity shows who holds it (the wait is 0.8 of call_timeout=N in the "
            "store URL)"
        )
    )
    assert held.value.hint == f"try again once that writer is done{look}"
    assert store.state().rekeys == 0
    assert store.note_rekey("set-2").rekeys == 1  # once the writer is done
    store.close()
    with pytest.raises(KeyringError) as closed:
        store.note_rekey("set-3")
    assert str(closed.value) == "key store is closed"
    for s in backend.opened:
        s.close()


class _Param:
    """A fixture request whose ``param`` is given (``_backend`` outside a fixture)."""

    def __init__(self, request: pytest.FixtureRequest, param: str) -> None:
        self.param = param
        self.getfixturevalue = request.getfixturevalue


@pytest.mark.parametrize("name", PROCESS_BACKENDS)
def test_a_rekey_the_store_failed_to_count_is_counted_later_once_and_in_order(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A rekey whose switch stood while the store failed to count it (here another writer
    held the lock a change takes: a real lock wait on each store) was logged, and the
    fleet's ``rekeys`` stayed one short for good: nothing owed the count (a *kill* there
    was made safe by the owed-switch mark). Now the rekeys not counted are kept in the
    keyring's home and counted, in order, by the next unseal or the next rekey's count;
    each once, however often unsealed."""
    from keysplit import Keyring

    backend = next(_backend(_Param(request, name), tmp_path))
    kr, shares = Keyring.create(tmp_path / "vault", 2, ["a", "b", "c"], store_url=backend.url)
    # a short lock wait for the unsealed sessions (the schema was made under the default)
    url = f"{backend.url}&call_timeout=1.25" if name == "postgres" else backend.url
    assert url is not None

    def unsealed(quorum: dict) -> UnsealedKeyring:
        store = open_store(url, keyring_id=kr.keyring_id, home=kr.path)
        return Keyring.open(kr.path).unseal([quorum["a"], quorum["b"]], store=store)

    def rekeys() -> int:
        fleet = Keyring.open(kr.path).status().fleet
        assert fleet is not None
        return fleet.rekeys

    def rekey_uncounted(u: UnsealedKeyring) -> dict:
        new = u.prepare_rekey()
        with _writer_holding_the_lock(backend, u.store):
            u.commit_rekey()  # the switch stands; the count fails (logged)
        return new

    with unsealed(shares) as u:
        second = rekey_uncounted(u)
    assert rekeys() == 0
    for _ in range(2):
        with unsealed(second):
            pass
        assert rekeys() == 1  # before the fix: 0
    with unsealed(second) as u:  # two uncounted, then one counted: all three, in order
        rekey_uncounted(u)
        rekey_uncounted(u)
        assert rekeys() == 1
        fifth = u.rekey()
        assert rekeys() == 4
    with unsealed(fifth) as u:
        assert u.status().fleet is not None and rekeys() == 4
    for s in backend.opened:
        s.close()
