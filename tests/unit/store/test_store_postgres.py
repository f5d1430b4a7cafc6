"""What only the PostgreSQL store has: URLs and schemas, migrations, vacuum, a whole keyring.

The protocol itself is tested for every store in test_store_contract.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from pg_fixture import end_admin_lock_backend, own_postgres, standby_of

from keysplit import FormatError, Keyring, KeyringError, LegalHoldError, StoreUnreachableError
from keysplit.store import KeyStore, WrappedKey, check_store_url, open_store
from keysplit.store.url import postgres_conninfo

KID = "ab" * 16


def _lock_waiters(conninfo: str) -> int:
    """How many keysplit connections of the server wait for a lock now."""
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as c:
        row = c.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'keysplit' AND wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0]) if row else 0


def until(cond: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    """Wait (bounded) until ``cond()`` is true."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _url(server: object, schema: str | None = None) -> str:
    return f"{server.url}&schema={schema or 't_' + uuid.uuid4().hex[:16]}"  # type: ignore[attr-defined]


def test_store_url_parsing() -> None:
    assert postgres_conninfo("postgresql:///ks?host=/tmp/pg") == (
        "postgresql:///ks?host=/tmp/pg",
        "keysplit",
    )
    assert postgres_conninfo("postgres://db.example:5433/ks?schema=eu_keys&sslmode=require") == (
        "postgres://db.example:5433/ks?sslmode=require",
        "eu_keys",
    )
    for bad in ("Eu", "1eu", "eu-keys", "eu;drop", "a" * 64, ""):
        with pytest.raises(KeyringError, match="invalid schema"):
            check_store_url(f"postgresql:///ks?schema={bad}")
    with pytest.raises(KeyringError, match="at most once"):
        check_store_url("postgresql:///ks?schema=a&schema=b")
    for secret in (
        "postgresql://u:hunter2@h/ks",
        "postgresql:///ks?password=hunter2",
        # (red team) libpq percent-decodes parameter names: these are password= too
        "postgresql:///ks?pass%77ord=hunter2",
        "postgresql:///ks?host=/run/pg&%70assword=hunter2",
        "postgresql:///ks?sslpass%77ord=hunter2",
    ):
        with pytest.raises(KeyringError, match="password") as info:
            check_store_url(secret)
        assert "hunter2" not in str(info.value)


def test_call_timeout_is_keysplits_own_url_parameter() -> None:
    from keysplit.store.url import DEFAULT_CALL_TIMEOUT, postgres_call_timeout

    url = "postgresql:///ks?host=/tmp/pg&call_timeout=2.5&schema=eu"
    assert postgres_conninfo(url) == ("postgresql:///ks?host=/tmp/pg", "eu")  # not for libpq
    assert postgres_call_timeout(url) == 2.5
    assert postgres_call_timeout("postgresql:///ks") == DEFAULT_CALL_TIMEOUT
    for bad in ("0", "-1", "nan", "inf", "soon", "1&call_timeout=2"):
        with pytest.raises(KeyringError, match="call_timeout"):
            check_store_url(f"postgresql:///ks?call_timeout={bad}")


def test_a_call_timeout_of_weeks_still_connects_over_tcp() -> None:
    """(red team) tcp_user_timeout was call_timeout in milliseconds, unbounded: libpq reads a
    C int, so over a TCP URL any call_timeout above ~24.8 days (an operator's "practically
    never") made every connection fail 'invalid integer value ... tcp_user_timeout',
    reported as the server being unreachable. It is capped at libpq's largest value; here
    the store meets the real cause (nothing listens on the port)."""
    pytest.importorskip("psycopg")
    from keysplit.store.postgres import PostgresKeyStore

    with socket.socket() as taken:  # bound, never listening: connect() is refused at once
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        for bound in ("1e7", "1e300"):
            url = f"postgresql://127.0.0.1:{port}/ks?call_timeout={bound}"
            with pytest.raises(StoreUnreachableError) as info:
                PostgresKeyStore(url, KID, connect_timeout=2)
            assert "invalid integer" not in str(info.value)
            assert "refused" in str(info.value).lower(), info.value


def test_a_stopped_backend_fails_the_call_within_call_timeout_and_is_replaced(
    pg_server: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(known problem) A backend that stops answering on an open connection (SIGSTOP here;
    a hung server or a host gone from the network alike) made a store call wait for ever:
    connect_timeout bounds connecting only, and a stopped backend's kernel still
    acknowledges every packet. Now the call raises StoreUnreachableError naming the host
    once the URL's call_timeout (2 s here) has passed, the connection is discarded, and
    the next call once the backend runs again works on a new connection."""
    import signal

    from keysplit.store.postgres import PostgresKeyStore

    monkeypatch.setenv("PGPASSWORD", "hunter2-not-in-errors")  # libpq's; trust auth ignores it
    store = PostgresKeyStore(f"{_url(pg_server)}&call_timeout=2", KID, create=True, pool_size=1)
    try:
        row = WrappedKey("alice", 1, b"\x01" * 24)
        store.insert_many([row])

        def backend() -> int:
            return int(store._tx(lambda c: c.execute("SELECT pg_backend_pid()").fetchone()[0]))

        pid = backend()
        os.kill(pid, signal.SIGSTOP)
        try:
            got = _outcome(lambda: store.get_many(["alice"]), guard=60.0)  # hang guard
        finally:
            os.kill(pid, signal.SIGCONT)
        assert isinstance(got, StoreUnreachableError), got
        msg = f"{got} {got.hint}"
        assert str(pg_server.dir) in msg and "2 s" in msg and "call_timeout" in msg  # type: ignore[attr-defined]
        assert "in flight" not in msg, msg  # a read: nothing in flight to be unsure of
        assert "hunter2" not in msg and "hunter2" not in repr(got)
        assert store.get_many(["alice"]) == {"alice": row}
        assert backend() != pid  # the stopped backend's connection was discarded
    finally:
        store.close()


def test_a_malformed_store_url_is_a_keyring_error() -> None:
    """(red team) urlsplit's ValueError escaped check_store_url and open_store."""
    for bad in ("postgresql://[::1/ks", "postgresql://h/ks\0", "sqlite:///tmp/k\0.sqlite"):
        with pytest.raises(KeyringError):
            check_store_url(bad)


def test_unreachable_server_is_one_keyring_error(tmp_path: Path) -> None:
    with pytest.raises(StoreUnreachableError, match=f"unreachable at host {tmp_path}"):
        open_store(
            f"postgresql:///ks?host={tmp_path}&connect_timeout=2", keyring_id=KID, home=tmp_path
        )


def test_a_lasting_refusal_is_not_taken_for_an_unreachable_server(
    pg_server: object, tmp_path: Path
) -> None:
    """A wrong database answers at once and will not pass by waiting: a KeyringError that
    says why, not StoreUnreachableError."""
    url = _url(pg_server).replace("/keysplit?", "/no_such_db?")
    with pytest.raises(KeyringError, match="no_such_db") as info:
        open_store(url, keyring_id=KID, home=tmp_path)
    assert not isinstance(info.value, StoreUnreachableError)


def test_a_create_whose_store_cannot_be_opened_leaves_no_record(tmp_path: Path) -> None:
    """(red team) Keyring.create with an unreachable store left store.json naming it, so
    a retry without store_url took it up as an interrupted create's store and failed the
    same way; now nothing is recorded and the retry makes the default store."""
    url = f"postgresql:///ks?host={tmp_path}&connect_timeout=2"
    with pytest.raises(KeyringError, match="PostgreSQL key store"):
        Keyring.create(tmp_path / "kr", 2, ["a", "b"], store_url=url)
    assert not (tmp_path / "kr" / "store.json").exists()
    kr, _ = Keyring.create(tmp_path / "kr", 2, ["a", "b"])
    assert kr.store_url.startswith("sqlite:")


def test_keyrings_share_a_database_by_schema(pg_server: object, tmp_path: Path) -> None:
    eu = open_store(_url(pg_server, "keys_eu"), keyring_id="e" * 32, home=tmp_path, create=True)
    us = open_store(_url(pg_server, "keys_us"), keyring_id="f" * 32, home=tmp_path, create=True)
    try:
        eu.insert_many([WrappedKey("alice", 1, b"e" * 24)])
        us.insert_many([WrappedKey("alice", 1, b"u" * 24)])
        assert eu.get_many(["alice"])["alice"].wrapped == b"e" * 24
        assert us.get_many(["alice"])["alice"].wrapped == b"u" * 24
        with pytest.raises(KeyringError, match="another keyring") as info:
            open_store(_url(pg_server, "keys_eu"), keyring_id="f" * 32, home=tmp_path)
        assert info.value.hint and "schema" in info.value.hint
    finally:
        eu.close()
        us.close()


def test_schema_is_versioned_and_strict(pg_server: object, tmp_path: Path) -> None:
    import psycopg

    from keysplit.store.postgres import SCHEMA_VERSION, PostgresKeyStore

    url = _url(pg_server)
    conninfo, schema = postgres_conninfo(url)
    PostgresKeyStore(url, KID, create=True).close()
    with psycopg.connect(conninfo, autocommit=True) as c:
        rows = c.execute(f"SELECT version FROM {schema}.keysplit_migrations").fetchall()
        assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
        c.execute(f"INSERT INTO {schema}.keysplit_migrations VALUES (99, 'from the future')")
    with pytest.raises(FormatError, match="unsupported version 99") as info:
        PostgresKeyStore(url, KID)
    # which server and database: the schema's name alone left that to guess
    assert "database keysplit: key store schema" in str(info.value)
    # a schema that holds someone else's tables is never taken over
    other = _url(pg_server)
    _, other_schema = postgres_conninfo(other)
    with psycopg.connect(conninfo, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {other_schema}")
        c.execute(f"CREATE TABLE {other_schema}.invoices (id int)")
    with pytest.raises(FormatError, match=r"database keysplit: schema .* other tables"):
        PostgresKeyStore(other, KID, create=True)
    with pytest.raises(KeyringError, match="database keysplit: key store not found"):
        PostgresKeyStore(other, KID)


def test_concurrent_creation_makes_one_schema(pg_server: object) -> None:
    from keysplit.store.postgres import PostgresKeyStore

    url = _url(pg_server)
    barrier = threading.Barrier(4, timeout=60)
    results: list[object] = []

    def create() -> None:
        barrier.wait()
        try:
            s = PostgresKeyStore(url, KID, create=True)
            s.insert_many([WrappedKey("x", 1, b"x" * 24)])
            s.close()
            results.append("ok")
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == ["ok"] * 4


def test_database_errors_are_secret_free_keyring_errors(pg_server: object) -> None:
    from keysplit.store.postgres import PostgresKeyStore

    s = PostgresKeyStore(_url(pg_server), KID, create=True)
    try:
        secret = bytes(range(24))
        with pytest.raises(KeyringError) as info:
            s.insert_many([WrappedKey("bad\x00subject", 1, secret)])  # text cannot hold NUL
        assert secret.hex() not in str(info.value) and "\\x0001" not in str(info.value)
        assert s.insert_many([WrappedKey("fine", 1, secret)])[0].wrapped == secret
    finally:
        s.close()
    with pytest.raises(KeyringError, match="closed"):
        s.get_many(["fine"])


def test_shred_then_vacuum_full_removes_the_bytes(pg_server: object) -> None:
    """What SECURITY.md says: a deleted key stays in the table file as a dead tuple until
    VACUUM; plain VACUUM may leave its bytes in free page space; VACUUM FULL rewrites."""
    import psycopg

    from keysplit.store.postgres import PostgresKeyStore

    url = _url(pg_server)
    conninfo, schema = postgres_conninfo(url)
    s = PostgresKeyStore(url, KID, create=True)
    marker = b"\xa5\x5a" * 12
    s.insert_many([WrappedKey(f"a{i:03d}", 1, bytes([i]) * 24) for i in range(40)])
    s.insert_many([WrappedKey("zz-victim", 1, marker)])  # sorts last: lowest page offset

    def in_table_file() -> bool:
        with psycopg.connect(conninfo, autocommit=True) as c:
            c.execute("CHECKPOINT")
            row = c.execute("SELECT pg_relation_filepath(%s)", (f"{schema}.data_keys",))
            rel = row.fetchone()
        assert rel is not None
        return marker in (pg_server.data / rel[0]).read_bytes()  # type: ignore[attr-defined]

    try:
        assert in_table_file()
        assert s.delete("zz-victim")
        assert in_table_file(), "a deleted row is a dead tuple until VACUUM"
        s.vacuum(full=True)
        assert not in_table_file()
        assert len(s.get_many([f"a{i:03d}" for i in range(40)])) == 40
        s.vacuum()
    finally:
        s.close()


def test_a_keyring_runs_on_postgres(pg_server: object, tmp_path: Path) -> None:
    url = _url(pg_server)
    kr, shares = Keyring.create(tmp_path / "kr", 2, ["a", "b", "c"])
    subjects = [f"u{i}" for i in range(300)]
    store = open_store(url, keyring_id=kr.keyring_id, home=kr.path, create=True)
    with kr.unseal([shares["a"], shares["b"]], store=store) as ku:
        recs = ku.encrypt_many(subjects, [s.encode() for s in subjects])
        ku.rotate()
        assert ku.rewrap(batch_size=70).rewrapped == 300
        ku.retire(1)
        ku.set_legal_hold("u0", True)
        with pytest.raises(LegalHoldError):
            ku.shred("u0")
        assert ku.shred("u1")
    store = open_store(url, keyring_id=kr.keyring_id, home=kr.path)
    with kr.unseal([shares["b"], shares["c"]], store=store) as ku:
        assert ku.decrypt_many(subjects[2:], recs[2:]) == [s.encode() for s in subjects[2:]]
        assert ku.decrypt(recs[0], subject="u0") == b"u0"
        assert store.count_by_version() == {2: 299}


def test_a_hold_placed_while_a_shred_is_blocked_is_never_lost(pg_server: object) -> None:
    """Deterministic form of the hold/shred race: the shred's statement has taken its
    snapshot (no hold yet) and waits on a row lock; a hold is placed meanwhile. The store
    must not then delete the now-held key: set_legal_hold waits for the shred instead."""
    import psycopg

    from keysplit.store.postgres import PostgresKeyStore

    url = _url(pg_server)
    conninfo, schema = postgres_conninfo(url)
    s = PostgresKeyStore(url, KID, create=True)
    s.insert_many([WrappedKey("v", 1, b"v" * 24)])
    seen: dict[str, object] = {}

    def waiting() -> int:
        return _lock_waiters(conninfo)

    def shred() -> None:
        try:
            seen["deleted"] = s.delete("v")
        except LegalHoldError:
            seen["deleted"] = "refused"

    def hold() -> None:
        s.set_legal_hold("v", True)
        seen["present_after_hold"] = bool(s.get_many(["v"]))

    blocker = psycopg.connect(conninfo)
    try:
        blocker.execute(f"SELECT 1 FROM {schema}.data_keys WHERE subject = 'v' FOR UPDATE")
        d = threading.Thread(target=shred)
        d.start()
        until(lambda: waiting() >= 1, "the shred to block on the row lock")
        h = threading.Thread(target=hold)
        h.start()
        until(lambda: not h.is_alive() or waiting() >= 2, "the hold to return or wait")
        blocker.commit()
        d.join(60)
        h.join(60)
        assert not d.is_alive() and not h.is_alive()
    finally:
        blocker.close()
    still_there = bool(s.get_many(["v"]))
    s.close()
    assert "deleted" in seen and "present_after_hold" in seen
    if seen["present_after_hold"]:
        assert still_there, "a key seen under a placed hold was shredded"
    assert still_there == (seen["deleted"] == "refused")


def test_survives_a_server_restart(pg_server: object) -> None:
    """Pooled connections die with a restart; the pool checks them out with a probe and
    replaces dead ones, so no call fails after the server is back."""
    from benchmarks._pgserver import ThrowawayPostgres
    from keysplit.store.postgres import PostgresKeyStore

    server = ThrowawayPostgres()  # its own server: the session's stays untouched
    try:
        server.start()
        s = PostgresKeyStore(server.url, KID, create=True, pool_size=3)
        s.insert_many([WrappedKey(f"k{i}", 1, b"k" * 24) for i in range(10)])
        threads = [threading.Thread(target=s.count_by_version) for _ in range(3)]
        for t in threads:  # put several connections into the pool
            t.start()
        for t in threads:
            t.join(60)
        server.restart()
        for _ in range(5):
            assert s.count_by_version() == {1: 10}
        s.close()
    finally:
        server.stop()


def test_vacuum_after_a_server_restart_runs_on_a_new_connection() -> None:
    """vacuum() took a pooled connection and ran VACUUM on it with no retry: the first
    vacuum after a server restart (a shred's follow-up) met the connection the restart
    had closed and failed ('terminating connection due to administrator command'). It now
    runs again on another connection, as every other call does (VACUUM is idempotent)."""
    from pg_fixture import own_postgres

    from keysplit.store.postgres import PostgresKeyStore

    with own_postgres() as server:
        s = PostgresKeyStore(server.url, KID, create=True)
        try:
            s.insert_many([WrappedKey(f"k{i}", 1, b"k" * 24) for i in range(10)])
            assert s.delete("k1", b"t" * 16)
            server.restart()  # the pooled connection dies with it
            s.vacuum(full=True)
            server.restart()
            s.vacuum()
            assert s.count_by_version() == {1: 9}
        finally:
            s.close()


def _outcome(call: object, guard: float) -> object:
    """What ``call()`` returned or raised, run in a thread; "hung" if it was still running
    after ``guard`` seconds (a hang guard, many times the bound under test, not a timing)."""
    got: list[object] = ["hung"]

    def run() -> None:
        try:
            got[0] = call()  # type: ignore[operator]
        except Exception as exc:
            got[0] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(guard)
    return got[0]


def test_a_stopped_server_fails_each_call_promptly_and_is_used_again_once_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(known problem) With PostgreSQL down, every call waited the pool's full timeout (30 s)
    and said "couldn't get a connection after 30.00 sec"; once the server was back, calls
    still failed until the pool's reconnect backoff (doubling, up to 5 min) tried again. Now
    a call fails with StoreUnreachableError naming the host, within the URL's
    ``connect_timeout`` (2 s here), and the first call after the restart succeeds."""
    from benchmarks._pgserver import ThrowawayPostgres

    monkeypatch.setenv("PGPASSWORD", "hunter2-not-in-errors")  # libpq's; trust auth ignores it
    server = ThrowawayPostgres()  # its own server: the session's stays up
    try:
        server.start()
        url = f"{server.url}&connect_timeout=2&schema=down"
        kr, shares = Keyring.create(tmp_path / "kr", 2, ["a", "b"])
        store = open_store(url, keyring_id=kr.keyring_id, home=kr.path, create=True)
        with kr.unseal([shares["a"], shares["b"]], store=store) as ku:
            rec = ku.encrypt(b"hi", subject="alice")
            server.halt()
            # a new subject's key needs the store: first on the dead pooled connection,
            # then with none to be had; the store's own calls likewise
            calls = [
                lambda: ku.encrypt(b"x", subject="bob"),
                lambda: ku.encrypt(b"y", subject="carol"),
                lambda: store.count_by_version(),
                lambda: store.get_many(["alice"]),
            ]
            for call in calls:
                got = _outcome(call, guard=20.0)  # was 30 s each
                assert isinstance(got, StoreUnreachableError), got
                msg = f"{got} {got.hint}"
                assert "unreachable" in msg and str(server.dir) in msg and "2 s" in msg
                assert "hunter2" not in msg and "hunter2" not in repr(got)
            server.resume()
            assert _outcome(lambda: ku.encrypt(b"x", subject="bob"), guard=20.0) != "hung"
            assert ku.decrypt(ku.encrypt(b"z", subject="dave"), subject="dave") == b"z"
            assert ku.decrypt(rec, subject="alice") == b"hi"
            assert store.count_by_version() == {1: 3}  # alice, bob, dave: not carol
    finally:
        server.stop()


def test_closing_a_store_whose_server_is_down_closes_it(tmp_path: Path) -> None:
    """(red team) ``close`` first wakes its change listener with a notification through
    the pool (best effort); with the server down that raised the store's KeyringError out
    of ``close``, leaving the store open (its pool reconnecting in the background), and a
    keyring's close stopped there, before dropping its cached keys and its store."""
    from benchmarks._pgserver import ThrowawayPostgres
    from keysplit.store.postgres import PostgresKeyStore

    server = ThrowawayPostgres()
    try:
        server.start()
        s = PostgresKeyStore(f"{server.url}&connect_timeout=2", KID, create=True)
        assert s.wait_for_change(0.01)  # the first wait LISTENs and returns at once
        server.halt()
        assert _outcome(s.close, guard=20.0) is None
        with pytest.raises(KeyringError, match="closed"):
            s.count_by_version()
    finally:
        server.stop()


def test_a_new_subjects_key_is_one_round_trip(pg_server: object, tmp_path: Path) -> None:
    """The store call behind ``UnsealedKeyring.encrypt`` for a new subject. Before: BEGIN,
    lock, state, insert, lookup and COMMIT with four Syncs, i.e. four round trips (issue
    23). Now one pipelined implicit transaction: three statements, one Sync, committed
    when it returns; a refused version still stores nothing and says why."""
    from psycopg.pq import Trace, TransactionStatus

    from keysplit.store.base import StaleKekError
    from keysplit.store.postgres import PostgresKeyStore

    store = PostgresKeyStore(_url(pg_server), KID, create=True, pool_size=1)
    trace = tmp_path / "libpq.trace"
    try:
        with trace.open("w") as fh:
            with store._pool.connection() as conn:  # the pool's one connection
                conn.pgconn.trace(fh.fileno())
                conn.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)
            got = store.insert_many([WrappedKey("new-subject", 1, b"k" * 24)])
            with store._pool.connection() as conn:
                assert conn.info.transaction_status == TransactionStatus.IDLE  # committed
                conn.pgconn.untrace()
        sent = [line.split("\t")[2] for line in trace.read_text().splitlines()
                if line.startswith("F\t")]  # fmt: skip
        assert sent.count("Sync") == 1, sent  # one round trip
        assert sent.count("Execute") == 3, sent  # lock, guarded insert (+ state), lookup
        assert got == [WrappedKey("new-subject", 1, b"k" * 24)]
        other = PostgresKeyStore(store._url, KID)  # another connection sees it committed
        assert other.get_many(["new-subject"]) == {"new-subject": got[0]}
        other.close()
        store.set_current_kek(2)  # a rotation elsewhere: version 1 is no longer current
        with pytest.raises(StaleKekError, match="version 2 is"):
            store.insert_many([WrappedKey("late", 1, b"l" * 24)])
        assert store.get_many(["late"]) == {}
    finally:
        store.close()


def test_a_server_at_its_connection_limit_is_unreachable_for_now(
    pg_server: object, tmp_path: Path
) -> None:
    """A server that refuses for now (no connection slot left for the role) is
    StoreUnreachableError, as for one that is down: waiting helps. It was taken for a
    lasting refusal (a plain KeyringError, like a wrong database)."""
    import psycopg

    role = "lim_" + uuid.uuid4().hex[:8]
    with psycopg.connect(pg_server.url, autocommit=True) as conn:  # type: ignore[attr-defined]
        conn.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0")
    url = _url(pg_server).replace("user=keysplit", f"user={role}")
    with pytest.raises(StoreUnreachableError, match="too many connections"):
        open_store(url, keyring_id=KID, home=tmp_path)


def _one_connection_then_gone(server_dir: str, where: str) -> threading.Thread:
    """A Unix-socket relay at ``where``/.s.PGSQL.5432 to the real server: it relays the
    first connection, then its socket disappears (the server died after it)."""
    import socket

    path = f"{where}/.s.PGSQL.5432"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)

    def pump(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)

    def relay() -> None:
        client, _ = listener.accept()
        listener.close()
        os.unlink(path)  # gone: later connections fail as to a dead server
        upstream = socket.socket(socket.AF_UNIX)
        upstream.connect(f"{server_dir}/.s.PGSQL.5432")
        back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
        back.start()
        pump(client, upstream)
        back.join(30)
        client.close()
        upstream.close()

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    return thread


def test_a_server_gone_between_the_first_connection_and_the_pool_is_unreachable(
    pg_server: object,
) -> None:
    """(red team, 'found, not fixed') The store's first connection (its schema check)
    worked, then the server died before the pool's first connection: the pool's own
    `PoolTimeout` ('pool initialization incomplete after 30.0 sec') escaped the
    constructor after 30 s. It is StoreUnreachableError, within the store's bound."""
    where = tempfile.mkdtemp(prefix="ks-relay-", dir="/tmp")  # a socket path must be short
    try:
        relay = _one_connection_then_gone(pg_server.dir, where)  # type: ignore[attr-defined]
        url = _url(pg_server).replace(f"host={pg_server.dir}", f"host={where}")  # type: ignore[attr-defined]
        with pytest.raises(StoreUnreachableError, match=f"unreachable at host {where}"):
            open_store(f"{url}&connect_timeout=2", keyring_id=KID, home=Path(where), create=True)
        relay.join(30)
    finally:
        shutil.rmtree(where, ignore_errors=True)


def test_the_watchdog_shuts_only_the_connection_it_was_armed_for(pg_server: object) -> None:
    """(review) The watchdog read the connection's descriptor number when the deadline
    passed, then shut down whatever socket had that number: had libpq closed it and another
    thread reused the number meanwhile (another pooled connection, a service's HTTP
    socket), that socket was cut. Forced here: during the call the connection's number is
    made to hold an unrelated socket until the watchdog fired. Now the call's own socket
    (a duplicate taken when the call was armed) is shut down, the unrelated one works on."""
    import select

    from keysplit.store.postgres import PostgresKeyStore

    store = PostgresKeyStore(f"{_url(pg_server)}&call_timeout=1", KID, create=True, pool_size=1)
    mine, peer = socket.socketpair()
    fired: list[str] = []
    try:

        def work(conn: object) -> None:
            fd = conn.fileno()  # type: ignore[attr-defined]
            kept = os.dup(fd)  # the connection's real socket, to put back
            os.dup2(mine.fileno(), fd)  # the number now names an unrelated socket
            try:  # until the watchdog shut one of them down (EOF is readable)
                ready, _, _ = select.select([kept, peer], [], [], 60.0)  # hang guard
                fired.extend("unrelated" if r is peer else "own" for r in ready)
            finally:
                os.dup2(kept, fd)
                os.close(kept)

        got = _outcome(lambda: store._tx(work), guard=90.0)
        assert fired == ["own"], fired
        assert isinstance(got, StoreUnreachableError), got
        mine.sendall(b"still here")  # the unrelated socket was not shut down
        assert peer.recv(16) == b"still here"
        assert store.count_by_version() == {}  # a new connection replaced the cut one
    finally:
        mine.close()
        peer.close()
        store.close()


def test_closing_a_store_whose_backend_stopped_returns_within_a_few_seconds(
    pg_server: object,
) -> None:
    """(review) ``close`` wakes its change listener with a notification through the pool:
    on a connection whose backend stopped answering (SIGSTOP here; a hung server alike) it
    waited the whole call_timeout (120 s by default) before closing. The wake now has a
    bound of its own (a few seconds): close returns, and the store is closed."""
    import signal

    from keysplit.store.postgres import PostgresKeyStore

    store = PostgresKeyStore(_url(pg_server), KID, create=True, pool_size=1)
    assert store.wait_for_change(0.01)  # the first wait LISTENs: close() then wakes it
    pid = int(store._tx(lambda c: c.execute("SELECT pg_backend_pid()").fetchone()[0]))
    os.kill(pid, signal.SIGSTOP)
    try:
        got = _outcome(store.close, guard=45.0)  # hang guard: the wake's bound is 3 s
    finally:
        os.kill(pid, signal.SIGCONT)
    assert got is None, got
    with pytest.raises(KeyringError, match="closed"):
        store.count_by_version()


def test_a_hold_on_every_spelling_of_a_subject_is_one_transaction(
    pg_server: object, tmp_path: Path
) -> None:
    """(review) A legal hold on a subject with several spellings (NFC and NFD here) was
    one transaction per spelling: while the second waited (or after it failed) the first
    was already committed, so another process saw the subject half held. Forced: the NFD
    spelling's subject (bucket) lock is held elsewhere while the hold is placed; meanwhile
    nothing of the hold is visible, and once the lock is let go both spellings are held."""
    import psycopg

    from keysplit.store.postgres import subject_bucket

    url = _url(pg_server)
    conninfo, schema = postgres_conninfo(url)
    nfc, nfd = "\u00e9", "e\u0301"
    kr, shares = Keyring.create(tmp_path / "kr", 2, ["a", "b"])
    store = open_store(url, keyring_id=kr.keyring_id, home=kr.path, create=True)
    done: list[object] = []
    with (
        kr.unseal([shares["a"], shares["b"]], store=store) as ku,
        psycopg.connect(conninfo, autocommit=True) as other,
    ):

        def holds() -> list[str]:
            rows = other.execute(f"SELECT subject FROM {schema}.legal_holds ORDER BY 1")
            return [r[0] for r in rows]

        def waiting() -> int:
            row = other.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = 'keysplit' AND wait_event_type = 'Lock'"
            ).fetchone()
            return int(row[0]) if row else 0

        def hold() -> None:
            try:
                ku.set_legal_hold(nfc, True)
                done.append("held")
            except Exception as exc:
                done.append(exc)

        with psycopg.connect(conninfo, autocommit=True) as blocker:
            blocker.execute(
                "SELECT pg_advisory_lock(hashtextextended(%s, 0))",
                (f"keysplit/{schema}//subjects/{subject_bucket(nfd)}",),
            )
            t = threading.Thread(target=hold, daemon=True)
            t.start()
            deadline = time.monotonic() + 60
            while waiting() < 1 and t.is_alive():
                assert time.monotonic() < deadline, "the hold never waited for the lock"
                time.sleep(0.02)
            seen = holds()  # while the NFD spelling's lock is taken
        t.join(60)  # the blocker's session ended: its lock is gone
        assert done == ["held"], done
        assert seen == [], seen  # half a hold was never visible
        assert sorted(holds()) == sorted([nfc, nfd])
        with pytest.raises(LegalHoldError):
            ku.shred(nfc)


def test_a_rotation_lock_lost_while_held_fails_the_guarded_change(pg_server: object) -> None:
    """(review) admin_lock holds a transaction advisory lock on an idle connection; when
    that connection is lost (keepalives end it after a network interruption; its backend
    terminated here) the server releases the lock while the process believes it holds it,
    and another process may take it. The guarded commit (set_current_kek) went ahead
    anyway; now it fails with a KeyringError saying the lock was lost, and changes nothing."""
    import psycopg

    from keysplit.store.postgres import PostgresKeyStore

    url = _url(pg_server)
    conninfo, schema = postgres_conninfo(url)
    store = PostgresKeyStore(url, KID, create=True)
    rival = PostgresKeyStore(url, KID)
    try:
        before = store.state()
        with psycopg.connect(conninfo, autocommit=True) as other, store.admin_lock():
            end_admin_lock_backend(other, schema)
            with rival.admin_lock(timeout=5):  # the server released it: another process may
                pass  # take it while this one still believes it holds it
            with pytest.raises(KeyringError, match="lost the keyring's rotation lock") as info:
                store.set_current_kek(1)
            assert "nothing was changed" in str(info.value)
        assert store.state() == before
        with store.admin_lock():  # taken afresh on a new connection
            assert store.set_current_kek(1).current_kek == 1
        assert store.note_rekey("set-2").rekeys == 1  # outside admin_lock: no check
    finally:
        rival.close()
        store.close()


def test_a_call_queued_behind_another_writers_lock_says_so(pg_server: object) -> None:
    """(review) A lock wait counted toward call_timeout and the error said the server "did
    not answer": a shred queued behind a long insert_many (which holds the keyring's state
    lock; held here by another session) was cut as if the server were down, "whether a
    change committed is unknown". Now the wait for a lock fails first, saying that another
    writer held it and that nothing was changed; the key is still there."""
    import psycopg

    from keysplit.store.postgres import PostgresKeyStore

    url = _url(pg_server)
    conninfo, schema = postgres_conninfo(url)
    store = PostgresKeyStore(f"{url}&call_timeout=2", KID, create=True)
    try:
        store.insert_many([WrappedKey("alice", 1, b"\x01" * 24)])
        with psycopg.connect(conninfo, autocommit=True) as writer:
            writer.execute(  # what a long insert_many holds for its whole transaction
                "SELECT pg_advisory_lock_shared(hashtextextended(%s, 0))",
                (f"keysplit/{schema}//state",),
            )
            got = _outcome(lambda: store.delete("alice"), guard=60.0)  # hang guard
        assert isinstance(got, StoreUnreachableError), got
        msg = f"{got} {got.hint}"
        assert "lock held by another writer" in msg and "nothing was changed" in msg, msg
        assert "did not answer" not in msg
        assert store.get_many(["alice"]) != {}  # nothing was changed, the store answers
        assert store.delete("alice")  # once the writer is done
    finally:
        store.close()


def test_an_admin_lock_that_got_no_answer_names_its_own_bound(pg_server: object) -> None:
    """(review) admin_lock's bound is its lock wait plus call_timeout; its error quoted
    call_timeout alone (1 s here, for a bound of 2 s)."""
    import signal

    from keysplit.store.postgres import PostgresKeyStore

    store = PostgresKeyStore(f"{_url(pg_server)}&call_timeout=1", KID, create=True, pool_size=1)
    try:
        pid = int(store._tx(lambda c: c.execute("SELECT pg_backend_pid()").fetchone()[0]))

        def take() -> None:
            with store.admin_lock(timeout=1):
                pass

        os.kill(pid, signal.SIGSTOP)
        try:
            got = _outcome(take, guard=60.0)  # hang guard
        finally:
            os.kill(pid, signal.SIGCONT)
        assert isinstance(got, StoreUnreachableError), got
        assert "did not answer within 2 s" in str(got), got
    finally:
        store.close()


def test_closing_a_store_ends_its_watchdog_thread_before_it_returns() -> None:
    """(CI, stop 36) ``close`` set the watchdog's stop flag and returned: on a loaded machine
    the thread was still alive afterwards (the README example's thread check failed once
    in CI). ``stop`` now joins the thread (bounded). Forced here: the thread takes 0.3 s to
    notice the flag."""
    from keysplit.store.postgres import _Watchdog

    class SlowEvent(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            got = super().wait(timeout)
            if got:
                time.sleep(0.3)
            return got

    dog = _Watchdog(0.01, "test-watchdog")
    dog._stop = SlowEvent()
    a, b = socket.socketpair()
    try:
        with dog.bound(a, 60.0):  # a call armed: the thread starts
            thread = dog._thread
            assert thread is not None and thread.is_alive()
            dog.stop()
            assert not thread.is_alive()
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("table", ["meta", "keysplit_migrations"])
def test_an_open_behind_another_sessions_lock_on_the_schema_says_so(
    pg_server: object, table: str
) -> None:
    """(review) The schema set-up at open had no lock_timeout: an open queued behind
    another session's lock on the schema's tables (a VACUUM FULL, a migration, a LOCK
    TABLE) waited until the watchdog took the server for one that "did not answer"
    (whether a change committed: "unknown"). Now the wait is bounded by lock_timeout (0.8
    of call_timeout) and fails as a StoreUnreachableError saying another session held a
    lock on the schema and nothing was changed; the open succeeds once it is released."""
    import psycopg
    from psycopg import sql

    from keysplit.store.postgres import PostgresKeyStore

    url = _url(pg_server)
    conninfo, schema = postgres_conninfo(url)
    PostgresKeyStore(url, KID, create=True).close()
    with psycopg.connect(conninfo) as other:  # a transaction, held until the with ends
        other.execute(
            sql.SQL("LOCK TABLE {s}.{t} IN ACCESS EXCLUSIVE MODE").format(
                s=sql.Identifier(schema), t=sql.Identifier(table)
            )
        )
        got = _outcome(lambda: PostgresKeyStore(f"{url}&call_timeout=2", KID), guard=60.0)
        assert isinstance(got, StoreUnreachableError), got
        msg = f"{got} {got.hint}"
        assert "lock" in msg and "nothing was changed" in msg, msg
        assert "did not answer" not in msg, msg
        other.rollback()
    PostgresKeyStore(f"{url}&call_timeout=2", KID).close()  # released: the open goes ahead


def test_a_lost_rotation_lock_fails_only_the_thread_that_held_it(pg_server: object) -> None:
    """(review: "the lost-lock check covers the holding thread only") admin_lock belongs
    to the thread that took it, on a connection of its own: two threads of one process
    sharing the store each take it in turn, and only the holder's guarded change may rely
    on it. After thread A's lock is lost, A's set_current_kek is refused; thread B, which
    then takes the lock on its own connection, commits; and a thread outside admin_lock
    (a shred: never guarded by the rotation lock) is not refused for A's loss."""
    import psycopg

    from keysplit.store.postgres import PostgresKeyStore

    url = _url(pg_server)
    conninfo, schema = postgres_conninfo(url)
    store = PostgresKeyStore(url, KID, create=True)
    try:
        store.insert_many([WrappedKey("alice", 1, b"\x01" * 24)])
        a_inside, b_done, got = threading.Event(), threading.Event(), {}

        def thread_b() -> None:
            a_inside.wait(30)
            with store.admin_lock(timeout=20):  # granted once A's backend is gone
                got["b"] = store.set_current_kek(2).current_kek
            got["shred"] = store.delete("alice")
            b_done.set()

        b = threading.Thread(target=thread_b, daemon=True)
        b.start()
        with psycopg.connect(conninfo, autocommit=True) as other, store.admin_lock():
            end_admin_lock_backend(other, schema)
            a_inside.set()
            assert b_done.wait(60)  # hang guard
            with pytest.raises(KeyringError, match="lost the keyring's rotation lock"):
                store.set_current_kek(3)
        b.join(30)
        assert got == {"b": 2, "shred": True}
        assert store.state().current_kek == 2
    finally:
        store.close()


def test_a_hold_on_twenty_thousand_subjects_fits_a_small_lock_table() -> None:
    """(cluster4) set_legal_holds took one advisory lock per subject in its one
    transaction: holds on 20,000 subjects (a cluster rotation copies every hold of the old
    store at once) on a server with max_locks_per_transaction = 10 (a shared lock table of
    10 x 60 connections) failed with 'out of shared memory' and placed nothing. Now one lock
    per subject bucket (at most 64); a shred still waits for a hold on its subject (the
    spelling and blocked-shred tests above)."""
    import psycopg
    from pg_fixture import own_postgres

    from keysplit.store.postgres import SUBJECT_BUCKETS, PostgresKeyStore

    with own_postgres() as server:
        conninfo, _ = postgres_conninfo(server.url)
        with psycopg.connect(conninfo, autocommit=True) as c:
            c.execute("ALTER SYSTEM SET max_locks_per_transaction = 10")
        server.restart()
        with psycopg.connect(conninfo, autocommit=True) as c:
            assert c.execute("SHOW max_locks_per_transaction").fetchone() == ("10",)
        store = PostgresKeyStore(server.url, KID, create=True)
        try:
            subjects = [f"contacts/{i:05d}" for i in range(20_000)]
            store.insert_many([WrappedKey(subjects[0], 1, b"k" * 24)])
            store.set_legal_holds(subjects, True)
            assert len(store.legal_holds()) == 20_000
            with pytest.raises(LegalHoldError):
                store.delete(subjects[0])
            store.set_legal_holds(subjects, False)
            assert store.legal_holds() == []
            assert store.delete(subjects[0])
            assert len(store._subject_locks(subjects)) == SUBJECT_BUCKETS
        finally:
            store.close()


_SHREDDER = """
import sys
from keysplit.store import WrappedKey
from keysplit.store.postgres import PostgresKeyStore
url, kid, who, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s = PostgresKeyStore(url, kid)
for i in range(n):
    sub = f"{who}/{i}"
    s.insert_many([WrappedKey(sub, 1, b"k" * 24)])
    assert s.delete(sub, f"{who}:{i}".encode().ljust(16, b"."))
s.close()
"""


def test_a_tombstone_poller_never_skips_a_shred_that_commits_late(pg_server: object) -> None:
    """(cluster4: a suspected fault, not found) Could a shred that took a lower
    tombstone_seq commit after one with a higher seq, so that a poller that had already
    read past the higher one (its ``acked``) never sees it? No: a shred takes its seq
    under the exclusive state lock and holds it to its commit. Shown two ways with real
    transactions: (1) a shred holding seq N+1 is stopped before its commit (its subject's
    lock held elsewhere); another shred in another process waits for it, and nothing above
    N is visible meanwhile; then they commit as N+1 and N+2. (2) Three processes shred 40
    subjects each while a poller advances its watermark as fleet members do: it sees every
    tombstone, each once."""
    import subprocess
    import sys

    import psycopg

    from keysplit.store.postgres import PostgresKeyStore, subject_bucket

    url = _url(pg_server)
    conninfo, schema = postgres_conninfo(url)
    store = PostgresKeyStore(url, KID, create=True)
    b = next(f"b{i}" for i in range(100) if subject_bucket(f"b{i}") != subject_bucket("a"))
    store.insert_many([WrappedKey("a", 1, b"a" * 24), WrappedKey(b, 1, b"b" * 24)])
    n = store.state().tombstone_seq
    out: dict[str, object] = {}

    def waiting() -> int:
        return _lock_waiters(conninfo)

    script = (
        "import sys\nfrom keysplit.store.postgres import PostgresKeyStore\n"
        "s = PostgresKeyStore(sys.argv[1], sys.argv[2])\n"
        "print(s.delete(sys.argv[3], b'B' * 16))\ns.close()\n"
    )
    blocker = psycopg.connect(conninfo, autocommit=True)
    try:
        blocker.execute(
            "SELECT pg_advisory_lock(hashtextextended(%s, 0))",
            (f"keysplit/{schema}//subjects/{subject_bucket('a')}",),
        )
        t = threading.Thread(target=lambda: out.setdefault("a", store.delete("a", b"A" * 16)))
        t.start()
        until(lambda: waiting() >= 1, "the first shred to hold its seq and wait")
        other = subprocess.Popen(
            [sys.executable, "-c", script, url, KID, b],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            until(lambda: waiting() >= 2 or other.poll() is not None, "the second shred")
            assert other.poll() is None, other.communicate()
            assert store.tombstones_since(n) == []  # nothing above N while N+1 is pending
            assert store.state().tombstone_seq == n
        finally:
            blocker.execute(
                "SELECT pg_advisory_unlock(hashtextextended(%s, 0))",
                (f"keysplit/{schema}//subjects/{subject_bucket('a')}",),
            )
            t.join(60)
            got, err = other.communicate(timeout=60)
        assert other.returncode == 0 and got.strip() == "True", err
    finally:
        blocker.close()
    assert out == {"a": True}
    assert [(x.seq, x.tag) for x in store.tombstones_since(n)] == [
        (n + 1, b"A" * 16),
        (n + 2, b"B" * 16),
    ]

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SHREDDER, url, KID, who, "40"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in ("p", "q", "r")
    ]
    acked, seen = n + 2, []
    deadline = time.monotonic() + 120
    try:
        while True:
            done = all(p.poll() is not None for p in procs)
            batch = store.tombstones_since(acked)
            seen += [x.tag for x in batch]
            acked = batch[-1].seq if batch else acked
            if done and not batch:
                break
            assert time.monotonic() < deadline, "the shredders did not finish"
            time.sleep(0.005)
    finally:
        for p in procs:
            p.kill() if p.poll() is None else None
            _, err = p.communicate(timeout=30)
            assert p.returncode == 0, err
    store.close()
    want = {f"{w}:{i}".encode().ljust(16, b".") for w in "pqr" for i in range(40)}
    assert len(seen) == len(want) and set(seen) == want


def test_vacuum_full_behind_an_open_transaction_gives_up_and_lets_other_calls_on(
    pg_server: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(pg3's finding, stop 36) ``vacuum(full=True)`` waited for its exclusive lock as long
    as it took: behind a session idle in a transaction it never returned, and every other
    call on the key tables, from every process, queued behind its wait and failed after
    lock_timeout. It now waits VACUUM_FULL_LOCK_WAIT (0.5 s here) and says why; other
    calls go on; once the transaction ended it runs."""
    import psycopg

    from keysplit.store import postgres
    from keysplit.store.postgres import PostgresKeyStore

    monkeypatch.setattr(postgres, "VACUUM_FULL_LOCK_WAIT", 0.5, raising=False)
    url = _url(pg_server)
    conninfo, schema = postgres_conninfo(url)
    store = PostgresKeyStore(url, KID, create=True)
    store.insert_many([WrappedKey("a", 1, b"\x01" * 24)])
    other = psycopg.connect(conninfo)  # a session idle in a transaction on data_keys
    try:
        other.execute(f'SELECT count(*) FROM "{schema}".data_keys').fetchone()
        got = _outcome(lambda: store.vacuum(full=True), guard=15.0)
        assert isinstance(got, KeyringError), got
        assert "VACUUM FULL" in str(got) and "exclusive lock" in str(got)
        assert got.hint is not None and "idle in a transaction" in got.hint
        assert list(store.get_many(["a"])) == ["a"]  # not queued behind a waiting VACUUM
        other.rollback()
        store.vacuum(full=True)  # no transaction open: it runs
        assert list(store.get_many(["a"])) == ["a"]
    finally:
        other.close()
        store.close()


@pytest.mark.parametrize("sqlstate", ["40P01", "40001"])
def test_a_deadlock_or_serialization_failure_runs_the_call_again(
    pg_server: object, sqlstate: str
) -> None:
    """A transaction the server rolled back to end a deadlock (40P01) or a serialization
    failure (40001) is run again (_tx's retry for them). The retry tested the exception
    for psycopg's TransactionRollback class, whose subclasses these SQLSTATEs are not in
    psycopg 3: it never ran, and the call failed with the server's error. Now the
    SQLSTATE decides: the call succeeds on its second attempt."""
    import psycopg
    from pg_fixture import fail_commits

    from keysplit.store.postgres import PostgresKeyStore

    url = _url(pg_server)
    conninfo, schema = postgres_conninfo(url)
    store = PostgresKeyStore(url, KID, create=True)
    try:
        fail_commits(conninfo, schema, "legal_holds", sqlstate, times=1)
        store.set_legal_holds(["ann"], True)  # before the fix: KeyringError 'cut at commit'
        assert store.legal_holds() == ["ann"]
        with psycopg.connect(conninfo, autocommit=True) as c:
            row = c.execute(f"SELECT last_value FROM {schema}.cuts").fetchone()
        assert row == (2,)  # the trigger ran at both attempts' COMMITs
    finally:
        store.close()


def _role(server: object, name: str, *settings: str) -> str:
    """A new login role ``name``_<random> with ``settings`` (``ALTER ROLE ... SET``)."""
    import psycopg

    role = f"{name}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server.url, autocommit=True) as conn:  # type: ignore[attr-defined]
        conn.execute(f"CREATE ROLE {role} LOGIN")
        for setting in settings:
            conn.execute(f"ALTER ROLE {role} SET {setting}")
    return role


def test_a_wrong_database_names_the_store_and_says_what_to_fix(
    pg_server: object, tmp_path: Path
) -> None:
    """A lasting refusal said libpq's whole line (socket path twice) with no hint."""
    url = _url(pg_server).replace("/keysplit?", "/no_such_db?")
    with pytest.raises(KeyringError) as info:
        open_store(url, keyring_id=KID, home=tmp_path)
    text = str(info.value)
    assert "database no_such_db refused the connection" in text and "nothing was changed" in text
    assert info.value.hint and "database or user" in info.value.hint


def test_a_role_without_the_privileges_it_needs_is_told_what_to_grant(
    pg_server: object, tmp_path: Path
) -> None:
    """A role that may not create the schema, or read the keys, met "PostgreSQL key store:
    permission denied for ..." with no store named and no hint."""
    import psycopg

    role = _role(pg_server, "weak")
    url = _url(pg_server)
    weak = url.replace("user=keysplit", f"user={role}")
    with pytest.raises(KeyringError) as info:  # may not CREATE SCHEMA
        open_store(weak, keyring_id=KID, home=tmp_path, create=True)
    assert type(info.value) is KeyringError
    assert "database keysplit" in str(info.value) and "nothing was changed" in str(info.value)
    assert info.value.hint and "grant" in info.value.hint
    open_store(url, keyring_id=KID, home=tmp_path, create=True).close()
    _, schema = postgres_conninfo(url)
    with psycopg.connect(pg_server.url, autocommit=True) as conn:  # type: ignore[attr-defined]
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        conn.execute(f"GRANT SELECT ON {schema}.keysplit_migrations, {schema}.meta TO {role}")
    # it opened, then failed at its first read; now the open names what is missing
    with pytest.raises(KeyringError) as info:
        open_store(weak, keyring_id=KID, home=tmp_path, read_only=True)
    assert type(info.value) is KeyringError
    assert f"role {role!r} lacks SELECT on data_keys" in str(info.value)
    assert info.value.hint and f"GRANT SELECT ON {schema}.data_keys TO {role};" in info.value.hint


def test_a_role_that_may_only_read_opens_for_reading_and_is_refused_for_writing(
    pg_server: object, tmp_path: Path
) -> None:
    """(known problem) A role granted SELECT alone opened the store, and a keyring's first
    write (after its custodians had typed their shares in) failed "permission denied for
    table data_keys". The open now names every table and privilege missing and the GRANT
    that fixes it; opened ``read_only`` (status, the audit chain), such a role reads."""
    import psycopg

    url = _url(pg_server)
    open_store(url, keyring_id=KID, home=tmp_path, create=True).close()
    _, schema = postgres_conninfo(url)
    role = _role(pg_server, "reader")
    with psycopg.connect(pg_server.url, autocommit=True) as conn:  # type: ignore[attr-defined]
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")
        conn.execute(f"GRANT UPDATE ON {schema}.keyring_state TO {role}")
    reader = url.replace("user=keysplit", f"user={role}")
    with pytest.raises(KeyringError) as info:
        open_store(reader, keyring_id=KID, home=tmp_path)
    text = str(info.value)
    assert type(info.value) is KeyringError and "nothing was changed" in text
    assert "lacks INSERT, UPDATE on meta; INSERT, UPDATE, DELETE on data_keys; " in text
    assert "; INSERT, DELETE on legal_holds" in text
    assert "keyring_state" not in text
    assert info.value.hint and (
        f"GRANT INSERT, UPDATE, DELETE ON {schema}.data_keys TO {role};" in info.value.hint
    )
    assert "SELECT only" in info.value.hint
    store = open_store(reader, keyring_id=KID, home=tmp_path, read_only=True)
    try:
        assert store.get_many(["alice"]) == {} and store.count_by_version() == {}
        with pytest.raises(KeyringError) as info:  # the server refuses the write: its
            # read-only session before the role's privileges (stop 43; a writing open of
            # this role names the GRANT, above)
            store.insert_many([WrappedKey("alice", 1, bytes(24))])
        assert "opened for reading only, so it takes no writes" in str(info.value)
        assert info.value.hint == "open the store for writing (without read_only=True)"
    finally:
        store.close()


def test_a_read_only_open_of_an_older_schema_names_both_versions_and_changes_nothing(
    pg_server: object, tmp_path: Path
) -> None:
    """(stop 41, found) A read-only open (``keysplit status``, a sealed keyring's audit
    log) of a schema older than this keysplit's ran the migrations: on a role granted
    SELECT alone (or a standby) it failed in words that named no version ("permission
    denied for schema ..."), and on a role that could it wrote. It is now refused naming
    both versions and the open for writing that upgrades it; nothing is changed."""
    import psycopg

    url = _url(pg_server)
    open_store(url, keyring_id=KID, home=tmp_path, create=True).close()
    _, schema = postgres_conninfo(url)
    with psycopg.connect(pg_server.url, autocommit=True) as conn:  # type: ignore[attr-defined]
        for table in ("keyring_state", "tombstones", "leases", "audit"):  # back to version 1
            conn.execute(f"DROP TABLE {schema}.{table}")
        conn.execute(f"DELETE FROM {schema}.keysplit_migrations WHERE version = 2")
    role = _role(pg_server, "reader")
    with psycopg.connect(pg_server.url, autocommit=True) as conn:  # type: ignore[attr-defined]
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")
    reader = url.replace("user=keysplit", f"user={role}")
    for who in (reader, url):  # a SELECT-only role; the owner, who could upgrade it
        with pytest.raises(KeyringError) as info:
            open_store(who, keyring_id=KID, home=tmp_path, read_only=True)
        text = str(info.value)
        assert type(info.value) is KeyringError, text
        assert (
            f"database keysplit: schema {schema!r} is at version 1, this keysplit needs version 2"
            in text
        )
        assert "nothing was changed" in text
        assert info.value.hint and "open it for writing once" in info.value.hint
        assert f"create tables in schema {schema!r}, on the primary" in info.value.hint
    with psycopg.connect(pg_server.url, autocommit=True) as conn:  # type: ignore[attr-defined]
        row = conn.execute(f"SELECT max(version) FROM {schema}.keysplit_migrations").fetchone()
        assert row == (1,)  # nothing was migrated
    open_store(url, keyring_id=KID, home=tmp_path).close()  # the writing open upgrades it
    with psycopg.connect(pg_server.url, autocommit=True) as conn:  # type: ignore[attr-defined]
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")
    store = open_store(reader, keyring_id=KID, home=tmp_path, read_only=True)
    try:
        assert store.state().rekeys == 0 and store.leases() == []
    finally:
        store.close()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("ALTER TABLE {s}.data_keys ALTER COLUMN wrapped TYPE text", "data_keys.wrapped is text"),
        ("ALTER TABLE {s}.data_keys ALTER COLUMN kek_version DROP NOT NULL",
         "data_keys.kek_version may be null"),
        ("ALTER TABLE {s}.leases DROP COLUMN acked", "table leases has no column acked"),
        ('ALTER TABLE {s}.legal_holds ALTER COLUMN subject TYPE text COLLATE "POSIX"',
         'legal_holds.subject is not COLLATE "C"'),
        ("ALTER TABLE {s}.data_keys ADD COLUMN note text NOT NULL",
         "table data_keys has a column note keysplit did not make"),
    ],
)  # fmt: skip
def test_a_column_altered_by_hand_is_found_when_the_store_opens(
    pg_server: object, tmp_path: Path, change: str, named: str
) -> None:
    """(known problem) A column retyped, made nullable or dropped by hand opened fine and
    failed only at the first call that touched it (or, made nullable, handed a None to
    the keyring). The open's catalogue query (the same one round trip that found a
    dropped table) now names the table and column."""
    import psycopg

    url = _url(pg_server)
    open_store(url, keyring_id=KID, home=tmp_path, create=True).close()
    _, schema = postgres_conninfo(url)
    with psycopg.connect(pg_server.url, autocommit=True) as conn:  # type: ignore[attr-defined]
        conn.execute(change.format(s=schema))
    for read_only in (False, True):
        with pytest.raises(FormatError) as info:
            open_store(url, keyring_id=KID, home=tmp_path, read_only=read_only)
        assert named in str(info.value) and "changed outside keysplit" in str(info.value)
        assert info.value.hint and "backup" in info.value.hint


def test_the_catalogue_check_knows_every_table_the_migrations_make() -> None:
    """_COLUMNS and _WRITES cover exactly the tables the migrations create (a table added
    by a later migration and left out would go unchecked)."""
    pytest.importorskip("psycopg")
    from keysplit.store import postgres

    assert set(postgres._COLUMNS) == postgres._TABLES
    assert set(postgres._WRITES) <= postgres._TABLES


def test_a_read_only_server_is_a_setting_to_fix_not_an_unreachable_one(
    pg_server: object, tmp_path: Path
) -> None:
    """A role (or a replica) whose transactions are read-only opened a store that existed,
    then every pooled connection failed its set-up: StoreUnreachableError "no answer"
    after the connect bound, as for a server that is down."""
    import psycopg

    url = _url(pg_server)
    open_store(url, keyring_id=KID, home=tmp_path, create=True).close()
    _, schema = postgres_conninfo(url)
    role = _role(pg_server, "ro", "default_transaction_read_only = on")
    with psycopg.connect(pg_server.url, autocommit=True) as conn:  # type: ignore[attr-defined]
        conn.execute(f"GRANT ALL ON SCHEMA {schema} TO {role}")
        conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO {role}")
    for create in (False, True):
        with pytest.raises(KeyringError, match="accepts no writes") as info:
            open_store(
                url.replace("user=keysplit", f"user={role}"),
                keyring_id=KID,
                home=tmp_path,
                create=create,
            )
        assert not isinstance(info.value, StoreUnreachableError)
        assert info.value.hint and "primary" in info.value.hint


def test_a_read_only_role_opens_for_reading_and_is_refused_a_writing_open_naming_it(
    pg_server: object, tmp_path: Path
) -> None:
    """(stop 40, found) A role (or a standby) whose transactions are read-only
    (``default_transaction_read_only = on``) was refused even ``open_store(read_only=True)``
    (``keysplit status``): the open refused any read-only transaction, and each pooled
    connection's staging tables cannot be created in one. Now a read-only open reads
    (keys, counts, state, the audit chain); a writing open fails at the open naming the
    setting; on the read-only store a bulk write (which stages rows) says the store was
    opened for reading only, a small one is refused by the server (said the same way), and
    nothing is written."""
    import psycopg

    url = _url(pg_server)
    writer = open_store(url, keyring_id=KID, home=tmp_path, create=True)
    try:
        writer.insert_many([WrappedKey("alice", 1, bytes(24))])
        state = writer.state()
    finally:
        writer.close()
    _, schema = postgres_conninfo(url)
    role = _role(pg_server, "ro", "default_transaction_read_only = on")
    with psycopg.connect(pg_server.url, autocommit=True) as conn:  # type: ignore[attr-defined]
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")
    ro = url.replace("user=keysplit", f"user={role}")
    with pytest.raises(KeyringError) as info:
        open_store(ro, keyring_id=KID, home=tmp_path)
    assert not isinstance(info.value, StoreUnreachableError)
    assert "default_transaction_read_only = on" in str(info.value)
    assert "nothing was changed" in str(info.value)
    store = open_store(ro, keyring_id=KID, home=tmp_path, read_only=True)
    try:
        assert store.get_many(["alice", "bob"]) == {"alice": WrappedKey("alice", 1, bytes(24))}
        assert store.count_by_version() == {1: 1}
        assert store.state() == state
        assert store.audit_lines() == []  # type: ignore[attr-defined]
        many = [WrappedKey(f"u{i}", 1, bytes(24)) for i in range(100)]  # above _SMALL: staged
        with pytest.raises(KeyringError, match="opened for reading only") as info:
            store.insert_many(many)
        assert type(info.value) is KeyringError and "nothing was changed" in str(info.value)
        old = WrappedKey("alice", 1, bytes(24))
        with pytest.raises(KeyringError, match="opened for reading only"):
            store.replace_many([(old, WrappedKey("alice", 1, bytes(range(24))))])
        # the server refuses it (the role's setting, and the store's own read-only
        # session, stop 43), said as the read-only open that it is
        with pytest.raises(KeyringError, match="opened for reading only, so it takes no"):
            store.insert_many([WrappedKey("bob", 1, bytes(24))])
        assert store.get_many(["alice", "bob", "u1"]) == {"alice": old}
    finally:
        store.close()


def test_a_standby_opens_for_reading_and_refuses_a_writing_open(tmp_path: Path) -> None:
    """The same on a real hot standby (a base backup streaming from its primary): opened
    ``read_only`` it reads what the primary wrote; a writing open fails at the open as a
    read-only server (not as one unreachable). Before, both opens failed alike. On the same
    standby, ``wait_for_change`` polls (:func:`_waits_poll_on_a_standby`)."""
    with own_postgres() as primary:
        url = _url(primary)
        writer = open_store(url, keyring_id=KID, home=tmp_path, create=True)
        try:
            writer.insert_many([WrappedKey("alice", 1, bytes(24))])
        finally:
            writer.close()
        with standby_of(primary) as standby:
            on_standby = url.replace(str(primary.dir), str(standby.dir))
            with pytest.raises(KeyringError, match="accepts no writes") as info:
                open_store(on_standby, keyring_id=KID, home=tmp_path)
            assert not isinstance(info.value, StoreUnreachableError)
            store = open_store(on_standby, keyring_id=KID, home=tmp_path, read_only=True)
            try:
                assert store.get_many(["alice"]) == {"alice": WrappedKey("alice", 1, bytes(24))}
                assert store.count_by_version() == {1: 1}
                _waits_poll_on_a_standby(store)
            finally:
                store.close()
            _a_promoted_standby_is_listened_on(standby, on_standby, tmp_path)


def _a_promoted_standby_is_listened_on(standby: object, url: str, tmp_path: Path) -> None:
    """(stop 42, found) A store whose server refused LISTEN (a hot standby) polled for the
    rest of its life: promoted to primary (``pg_ctl promote``), its changes still reached a
    waiter only at the end of each poll's timeout, until the store was reopened. The
    refusal is now kept for ``RELISTEN`` seconds (1 s here), then LISTEN is asked again: a
    change on the promoted server ends a 20 s wait at once (before: after its 20 s)."""
    from keysplit.store import postgres

    store = open_store(url, keyring_id=KID, home=tmp_path, read_only=True)
    writer = None
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(postgres, "RELISTEN", 1.0)
            assert store.wait_for_change(0.05) is True  # type: ignore[attr-defined]  # refused
            res = standby._run("pg_ctl", "-D", str(standby.data), "-w", "-t", "60", "promote")  # type: ignore[attr-defined]
            assert res.returncode == 0, res.stderr
            writer = open_store(url, keyring_id=KID, home=tmp_path)  # a primary now
            time.sleep(1.2)  # past RELISTEN
            assert store.wait_for_change(0.05) is True  # type: ignore[attr-defined]
            done: list[float] = []

            def wait() -> None:
                began = time.monotonic()
                store.wait_for_change(20.0)  # type: ignore[attr-defined]
                done.append(time.monotonic() - began)

            waiter = threading.Thread(target=wait)
            waiter.start()
            time.sleep(0.3)
            writer.note_rekey("r1")  # a state change: NOTIFY at its commit
            waiter.join(30.0)
            assert done and done[0] < 10.0, done  # before: 20 s, the poll's timeout
    finally:
        if writer is not None:
            writer.close()
        store.close()


def _waits_poll_on_a_standby(store: KeyStore) -> None:
    """(stop 41, found) ``wait_for_change`` LISTENs, which a hot standby refuses ("cannot
    execute LISTEN during recovery"). No read-only caller in keysplit reaches it (status and
    the audit log do not watch; a lease watcher needs a writing open, refused on a standby),
    but a direct caller of the public method did: every call opened a new connection, was
    refused, left that connection open and slept at most 1 s. Now the refusal is kept: the
    waits poll (each waits its ``timeout``, True: look at the state), open nothing more, and
    a close ends one at once."""
    import psycopg

    wait = store.wait_for_change  # type: ignore[attr-defined]
    real, opened = psycopg.connect, []

    def connect(*args: object, **kwargs: object) -> object:
        conn = real(*args, **kwargs)  # type: ignore[arg-type]
        opened.append(conn)
        return conn

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(psycopg, "connect", connect)
        assert wait(0.05) is True  # refused: the caller looks at once
        for _ in range(3):
            began = time.monotonic()
            assert wait(0.3) is True
            assert time.monotonic() - began >= 0.25  # waited its timeout: a poll
    assert len(opened) == 1, "a connection per wait"  # before: 4
    assert all(c.closed for c in opened), "the refused connection was left open"
    done: list[bool] = []
    waiter = threading.Thread(target=lambda: done.append(wait(30.0)))
    waiter.start()
    time.sleep(0.3)
    began = time.monotonic()
    store.close()
    waiter.join(10.0)
    assert done == [True] and time.monotonic() - began < 5.0


def test_a_table_dropped_by_hand_is_found_when_the_store_opens(
    pg_server: object, tmp_path: Path
) -> None:
    """It opened, and each call then failed with "relation ... does not exist"."""
    import psycopg

    url = _url(pg_server)
    store = open_store(url, keyring_id=KID, home=tmp_path, create=True)
    _, schema = postgres_conninfo(url)
    with psycopg.connect(pg_server.url, autocommit=True) as conn:  # type: ignore[attr-defined]
        conn.execute(f"DROP TABLE {schema}.data_keys")
    try:
        with pytest.raises(FormatError, match="changed outside keysplit; nothing was changed"):
            store.get_many(["alice"])  # an open store: at its next call
    finally:
        store.close()
    with pytest.raises(FormatError, match=r"lacks the table\(s\) data_keys") as info:
        open_store(url, keyring_id=KID, home=tmp_path)
    assert info.value.hint and "backup" in info.value.hint


def test_a_statement_timeout_is_a_condition_that_passes(pg_server: object, tmp_path: Path) -> None:
    """The server's statement_timeout (set on the role) was a plain KeyringError; trying
    again helps, as for a server that is slow: StoreUnreachableError, nothing changed."""
    import psycopg

    role = _role(pg_server, "slow", "statement_timeout = '1ms'")
    with psycopg.connect(pg_server.url, autocommit=True) as conn:  # type: ignore[attr-defined]
        conn.execute(f"GRANT CREATE ON DATABASE keysplit TO {role}")
        # a statement that outlasts 1 ms for certain: one waiting for a lock the test holds
        conn.execute("BEGIN")
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('keysplit/held', 0))")
        url = _url(pg_server, "held").replace("user=keysplit", f"user={role}")
        try:
            with pytest.raises(StoreUnreachableError, match="cancelled the call") as info:
                open_store(url, keyring_id=KID, home=tmp_path, create=True)
        finally:
            conn.execute("ROLLBACK")
    assert "nothing was changed" in str(info.value)
    assert info.value.hint and "statement_timeout" in info.value.hint


def test_a_shred_whose_backend_was_ended_mid_call_says_nothing_was_changed(
    pg_server: object, tmp_path: Path
) -> None:
    """A shred (not run twice) whose backend the server ended mid-call, before COMMIT (an
    operator's pg_terminate_backend; an immediate shutdown ends it the same way) said only
    "PostgreSQL key store: terminating connection due to administrator command": no store
    named, no word on its outcome (known: rolled back), no hint."""
    import psycopg

    url = _url(pg_server)
    _, schema = postgres_conninfo(url)
    store = open_store(url, keyring_id=KID, home=tmp_path, create=True)
    result: list[BaseException | None] = []

    def shred() -> None:
        try:
            store.delete_many(["alice"])
            result.append(None)
        except BaseException as exc:  # the test reads it
            result.append(exc)

    try:
        store.insert_many([WrappedKey("alice", 1, b"a" * 24)])
        with psycopg.connect(pg_server.url, autocommit=True) as conn:  # type: ignore[attr-defined]
            conn.execute("BEGIN")
            conn.execute(f"LOCK TABLE {schema}.data_keys IN ACCESS EXCLUSIVE MODE")
            thread = threading.Thread(target=shred)
            thread.start()
            until(lambda: _lock_waiters(pg_server.url) >= 1, "the shred to wait")  # type: ignore[attr-defined]
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'keysplit' AND wait_event_type = 'Lock'"
            )
            thread.join(60)
            conn.execute("ROLLBACK")
        assert not thread.is_alive()
        (err,) = result
        assert isinstance(err, KeyringError), err
        assert "database keysplit" in str(err) and "administrator command" not in str(err)
        assert "rolled it back; nothing was changed" in str(err) and err.hint
        assert store.get_many(["alice"])["alice"].wrapped == b"a" * 24  # nothing was
    finally:
        store.close()


def test_a_missing_or_wrong_password_is_a_setting_to_fix_and_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that wants a password the environment does not supply ("fe_sendauth: no
    password supplied", libpq's, not the server's FATAL) was StoreUnreachableError:
    "unreachable ... no connection within 5 s". A wrong one says so; neither shows it."""
    import psycopg

    secret = "S3cret-" + uuid.uuid4().hex
    with own_postgres() as server:
        (server.data / "pg_hba.conf").write_text(
            "local all keysplit trust\nlocal all all scram-sha-256\n"
        )
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE pw LOGIN PASSWORD '{secret}'")
            conn.execute("GRANT CREATE ON DATABASE keysplit TO pw")
            conn.execute("SELECT pg_reload_conf()")
        url = _url(server).replace("user=keysplit", "user=pw")
        monkeypatch.delenv("PGPASSWORD", raising=False)
        monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
        for password, why in ((None, "no password supplied"), ("wrong", "authentication failed")):
            if password:
                monkeypatch.setenv("PGPASSWORD", password)
            with pytest.raises(KeyringError, match=why) as info:
                open_store(url, keyring_id=KID, home=tmp_path, create=True)
            assert not isinstance(info.value, StoreUnreachableError)
            assert info.value.hint and "PGPASSWORD" in info.value.hint
            assert secret not in str(info.value) + repr(info.value) + info.value.hint
        monkeypatch.setenv("PGPASSWORD", secret)
        store = open_store(url, keyring_id=KID, home=tmp_path, create=True)
        assert secret not in repr(store)
        store.close()


def test_a_connection_refused_at_once_does_not_claim_a_wait() -> None:
    """A connection libpq could not make at once (nothing listens on the port) said
    "(no connection within 2 s)" after libpq's reason, though nothing was waited for."""
    pytest.importorskip("psycopg")
    from keysplit.store.postgres import PostgresKeyStore

    with socket.socket() as taken:  # bound, never listening: connect() is refused at once
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(StoreUnreachableError) as info:
            PostgresKeyStore(f"postgresql://127.0.0.1:{port}/ks", KID, connect_timeout=2)
    msg = str(info.value)
    assert f"unreachable at host 127.0.0.1, port {port}" in msg and "refused" in msg, msg
    assert "within" not in msg, msg


def test_no_free_connection_names_the_store(
    pg_server: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every pooled connection held by other calls: "PostgreSQL key store: no free
    connection within 30 s" named no store (every other store error does), nor said that
    nothing was changed. A condition that passes: StoreUnreachableError (the service's 503,
    as for a lock wait), not a plain KeyringError (400, a batch retried item by item)."""
    from keysplit.store import postgres

    monkeypatch.setattr(postgres, "_BUSY_WAIT", 0.5)
    store = postgres.PostgresKeyStore(
        f"{_url(pg_server)}&connect_timeout=2", KID, create=True, pool_size=1
    )
    held, release = threading.Event(), threading.Event()

    def hold(conn: object) -> None:
        held.set()
        assert release.wait(60)

    holder = threading.Thread(target=store._tx, args=(hold,), daemon=True)
    try:
        holder.start()
        assert held.wait(60)
        got = _outcome(lambda: store.get_many(["alice"]), guard=60.0)
        assert isinstance(got, StoreUnreachableError), got  # was a plain KeyringError
        assert f"PostgreSQL key store at host {pg_server.dir}" in str(got), got  # type: ignore[attr-defined]
        assert "no free connection" in str(got) and "nothing was changed" in str(got), got
        assert got.hint and "pool_size" in got.hint
    finally:
        release.set()
        holder.join(60)
        store.close()


def test_a_connection_lost_on_a_read_says_nothing_was_changed(
    pg_server: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read whose connection was lost (after the retries: one here) said "whether a
    change in flight was made is unknown", odd for a call that changes nothing. A write's
    error still says its outcome is unknown."""
    import psycopg

    from keysplit.store import postgres

    store = postgres.PostgresKeyStore(_url(pg_server), KID, create=True, pool_size=1)
    try:
        store.insert_many([WrappedKey("alice", 1, b"\x01" * 24)])
        monkeypatch.setattr(postgres, "_RETRIES", 1)

        def end_the_backend() -> None:
            pid = store._tx(lambda c: c.execute("SELECT pg_backend_pid()").fetchone()[0])
            with psycopg.connect(pg_server.url, autocommit=True) as admin:  # type: ignore[attr-defined]
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            until(lambda: _backend_gone(pg_server.url, pid), "the backend to end")  # type: ignore[attr-defined]

        end_the_backend()
        with pytest.raises(StoreUnreachableError) as info:
            store.get_many(["alice"])
        msg = str(info.value)
        assert "lost during a read" in msg and "nothing was changed" in msg, msg
        assert "in flight" not in msg + str(info.value.hint), msg
        end_the_backend()
        with pytest.raises(StoreUnreachableError, match="in flight was made is unknown"):
            store.insert_many([WrappedKey("bob", 1, b"\x02" * 24)])
    finally:
        store.close()


def _backend_gone(conninfo: str, pid: int) -> bool:
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as c:
        row = c.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row is not None and int(row[0]) == 0


def test_a_state_row_deleted_by_hand_names_the_store(pg_server: object) -> None:
    """The keyring_state row deleted outside keysplit said "PostgreSQL key store:
    keyring_state row missing", a KeyringError naming no store (every other error does)
    and saying nothing of what to do; now the store's words for a schema changed by hand."""
    import psycopg

    url = _url(pg_server)
    _, schema = postgres_conninfo(url)
    store = open_store(url, keyring_id=KID, home=Path(tempfile.gettempdir()), create=True)
    try:
        with psycopg.connect(pg_server.url, autocommit=True) as conn:  # type: ignore[attr-defined]
            conn.execute(f"DELETE FROM {schema}.keyring_state")
        for call in (store.state, lambda: store.set_current_kek(1)):
            with pytest.raises(FormatError, match="no keyring_state row") as info:
                call()
            msg = str(info.value)
            assert f"PostgreSQL key store at host {pg_server.dir}" in msg, msg  # type: ignore[attr-defined]
            assert "changed outside keysplit; nothing was changed" in msg, msg
    finally:
        store.close()
