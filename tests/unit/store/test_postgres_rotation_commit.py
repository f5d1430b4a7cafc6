"""A rotation whose PostgreSQL commit fails: the keyring file and the store agree after it.

A rotation writes the new KEK into the keyring file, then commits it as current in the
store (set_current_kek). When that commit failed (the server refused it at COMMIT, or
the connection died while the server committed), the file stayed one KEK version ahead of
the store and the session kept the old metadata, so the next rotate said "the keyring file
changed under this process; unseal again". Now a commit the server refused puts the file
back as it was; a commit the server made although the client lost the connection is found
(txid_status) and the rotation succeeds. Real server processes: a deferred constraint
trigger raises at COMMIT; a Unix-socket proxy cuts the connection right after the server
answers COMMIT (the server committed, the client never hears of it).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import struct
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_fixture import fail_commits

from keysplit import Keyring, KeyringError
from keysplit.keyring import file as kf
from keysplit.store import open_store
from keysplit.store.url import postgres_conninfo

_BUMP = b"keyring_state SET epoch"  # in the rotation's UPDATE (set_current_kek's bump)
_COMMIT_DONE = b"C\x00\x00\x00\x0bCOMMIT\x00"  # the server's CommandComplete for COMMIT
_COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"  # the client's COMMIT (a simple Query)
_KEY_DATA = b"K\x00\x00\x00\x0c"  # BackendKeyData: then the backend's pid, its cancel key


def _url(server: object) -> str:
    return f"{server.url}&schema=t_{uuid.uuid4().hex[:16]}"  # type: ignore[attr-defined]


def _file_meta(kr: Keyring) -> kf.KeyringMeta:
    return kf.parse(kr.home.read_keyring())[0]


def test_a_rotation_the_server_refuses_at_commit_leaves_the_file_as_it_was(
    pg_server: object, tmp_path: Path
) -> None:
    import psycopg
    from psycopg import sql

    url = _url(pg_server)
    conninfo, schema = postgres_conninfo(url)
    kr, shares = Keyring.create(tmp_path / "kr", 2, ["a", "b", "c"])
    store = open_store(url, keyring_id=kr.keyring_id, home=kr.path, create=True)
    s = sql.Identifier(schema)
    with kr.unseal([shares["a"], shares["b"]], store=store) as ku:
        record = ku.encrypt(b"before", subject="alice")
        data_before = kr.home.read_keyring()
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(
                sql.SQL(
                    "CREATE FUNCTION {s}.cut() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$BEGIN RAISE EXCEPTION 'cut at commit'; END$$"
                ).format(s=s)
            )
            admin.execute(  # runs at COMMIT, after every statement of the rotation succeeded
                sql.SQL(
                    "CREATE CONSTRAINT TRIGGER cut AFTER UPDATE ON {s}.keyring_state "
                    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {s}.cut()"
                ).format(s=s)
            )
            with pytest.raises(KeyringError, match="cut at commit"):
                ku.rotate()
            assert store.state().current_kek == 1
            assert kr.home.read_keyring() == data_before  # the file is back as it was
            assert _file_meta(kr).current_kek == 1
            admin.execute(sql.SQL("DROP TRIGGER cut ON {s}.keyring_state").format(s=s))
        assert ku.rotate() == 2  # the same session rotates (it said "unseal again")
        assert store.state().current_kek == 2 and _file_meta(kr).current_kek == 2
        after = ku.encrypt(b"after", subject="bob")
        assert ku.decrypt(record, subject="alice") == b"before"
    with kr.unseal(
        [shares["b"], shares["c"]], store=open_store(url, keyring_id=kr.keyring_id, home=kr.path)
    ) as ku:
        assert ku.decrypt(after, subject="bob") == b"after"
        assert ku.rotate() == 3


class _CommitCutter:
    """A Unix-socket proxy in front of the server: it forwards every connection, and on a
    connection that sent the rotation's UPDATE it drops the server's answer to the next
    COMMIT and closes both ends (once): the server committed, the client saw it die."""

    def __init__(self, server_dir: str, port: int = 5432) -> None:
        self.target = f"{server_dir}/.s.PGSQL.{port}"
        self.dir = tempfile.mkdtemp(prefix="kspx", dir="/tmp")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(f"{self.dir}/.s.PGSQL.{port}")
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.armed = False  # set: cut the next rotation's commit
        self.refuse = False  # set: close every new connection at once (a server gone)
        self.then_refuse = False  # set: from the cut on, drop every connection and refuse
        self.fake_pid: int | None = None  # set: BackendKeyData names it (as pgbouncer does)
        self.match = _BUMP  # what the client sends in the transaction to cut
        self.done = _COMMIT_DONE  # the server's answer that is then dropped
        self.before = False  # set: drop the client's COMMIT instead (the server aborts)
        self.socks: list[socket.socket] = []
        self.cuts = 0
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.refuse:
                client.close()
                continue
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            self.socks += [client, upstream]
            flag = {"bump": False, "keyed": self.fake_pid is None}
            for args in ((client, upstream, flag, True), (upstream, client, flag, False)):
                threading.Thread(target=self._pump, args=args, daemon=True).start()

    def _pump(
        self, src: socket.socket, dst: socket.socket, flag: dict[str, bool], up: bool
    ) -> None:
        tail = b""
        startup = b""  # the server's start-up messages until BackendKeyData is rewritten
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not up and self.fake_pid is not None and not flag.get("keyed"):
                    startup += data
                    at = startup.find(_KEY_DATA)
                    if at < 0 or len(startup) < at + 13:
                        continue  # forwarded once the whole message is here
                    pid = struct.pack(">i", self.fake_pid)
                    data, startup = startup[: at + 5] + pid + startup[at + 9 :], b""
                    flag["keyed"] = True
                seen = tail + data
                tail = seen[-64:]
                if up and self.match in seen:
                    flag["bump"] = True
                if up and self.before and flag["bump"] and self.armed and _COMMIT in seen:
                    self.armed = False
                    self.cuts += 1
                    break  # the server never sees COMMIT: it rolls back when both ends close
                if not up and self.done in seen:
                    if flag["bump"] and self.armed:
                        self.armed = False
                        self.cuts += 1
                        if self.then_refuse:  # the server is gone: every connection too
                            self.refuse = True
                            for s in self.socks:
                                with contextlib.suppress(OSError):
                                    s.shutdown(socket.SHUT_RDWR)
                        break  # the answer to COMMIT is never forwarded
                    flag["bump"] = False
                    tail = b""
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def _cutter(server: object) -> Iterator[_CommitCutter]:
    proxy = _CommitCutter(str(server.dir))  # type: ignore[attr-defined]
    try:
        yield proxy
    finally:
        proxy.close()


@contextlib.contextmanager
def _behind_cutter(
    server: object, tmp_path: Path, extra: str = ""
) -> Iterator[tuple[_CommitCutter, Keyring, dict[str, Any], Any, str]]:
    """A new keyring whose PostgreSQL store (a schema of its own) is reached through a
    :class:`_CommitCutter`: (the proxy, the keyring, its shares, the store, the schema).
    ``extra``: more of the store URL's query (``&connect_timeout=2``)."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    kr, shares = Keyring.create(tmp_path / "kr", 2, ["a", "b", "c"])
    with _cutter(server) as proxy:
        url = f"postgresql:///keysplit?host={proxy.dir}&user=keysplit&schema={schema}{extra}"
        store = open_store(url, keyring_id=kr.keyring_id, home=kr.path, create=True)
        try:
            yield proxy, kr, shares, store, schema
        finally:  # before the proxy goes: its pool would reconnect to a socket gone
            store.close()


def test_a_rotation_committed_while_its_connection_died_succeeds(
    pg_server: object, tmp_path: Path
) -> None:
    with (
        _behind_cutter(pg_server, tmp_path) as (proxy, kr, shares, store, schema),
        kr.unseal([shares["a"], shares["b"]], store=store) as ku,
    ):
        proxy.armed = True
        assert ku.rotate() == 2  # the commit landed; the client lost its answer
        assert proxy.cuts == 1
        assert store.state().current_kek == 2 and _file_meta(kr).current_kek == 2
        record = ku.encrypt(b"after", subject="bob")
        assert ku.rotate() == 3  # the session follows its own file
        assert store.state().current_kek == 3 and _file_meta(kr).current_kek == 3
    direct = f"{pg_server.url}&schema={schema}"  # type: ignore[attr-defined]
    with kr.unseal(
        [shares["b"], shares["c"]], store=open_store(direct, keyring_id=kr.keyring_id, home=kr.path)
    ) as ku:
        assert ku.decrypt(record, subject="bob") == b"after"


def test_a_rotation_whose_commit_cannot_be_resolved_keeps_the_new_kek_in_the_file(
    pg_server: object, tmp_path: Path
) -> None:
    """The other side of the fix: when the server cannot be asked whether the commit
    happened (the connection died at COMMIT, then no connection could be made), the
    rotation fails saying so, and the keyring file keeps the new KEK: here the server did
    commit it, and a file put back would have lost the store's current KEK. Once the
    server answers, the session writes under the store's current KEK and its next rotation
    goes on from the file (test_admin.py has the case the store did not commit)."""
    from keysplit import StoreUnreachableError

    schema = f"t_{uuid.uuid4().hex[:16]}"
    kr, shares = Keyring.create(tmp_path / "kr", 2, ["a", "b", "c"])
    with _cutter(pg_server) as proxy:
        url = (
            f"postgresql:///keysplit?host={proxy.dir}&user=keysplit&schema={schema}"
            "&connect_timeout=2"
        )
        store = open_store(url, keyring_id=kr.keyring_id, home=kr.path, create=True)
        with kr.unseal([shares["a"], shares["b"]], store=store) as ku:
            proxy.armed = proxy.then_refuse = True
            with pytest.raises(StoreUnreachableError, match="unknown"):
                ku.rotate()
            assert proxy.cuts == 1
            assert _file_meta(kr).current_kek == 2  # kept: the store did commit it
            proxy.refuse = False
            record = ku.encrypt(b"under 2", subject="bob")  # follows the store's current
            assert ku.rotate() == 3  # the same session goes on from the file it kept
            assert store.state().current_kek == 3 and _file_meta(kr).current_kek == 3
        direct = f"{pg_server.url}&schema={schema}"  # type: ignore[attr-defined]
        again = open_store(direct, keyring_id=kr.keyring_id, home=kr.path)
        with Keyring.open(kr.path).unseal([shares["b"], shares["c"]], store=again) as ku:
            assert ku.decrypt(record, subject="bob") == b"under 2"
            assert ku.rotate() == 4


def test_a_rotation_that_lost_its_lock_to_another_hosts_rotation_does_not_stand(
    pg_server: object, tmp_path: Path
) -> None:
    """(review4) Host A rotates: its keyring file gets its new KEK as v2, then its store
    connection holding the rotation lock is lost (its backend ended here, as keepalives end
    one after a network interruption) and host B, with its own copy of the keyring
    directory, takes the lock and rotates: B's file and the store have B's KEK as v2.
    A's commit is refused (the lock was lost, nothing changed), but the store showed v2
    current, so A's rotation was taken as committed: A's file kept A's v2, and a key A
    made then did not open on B. Now A's refusal stands and its file is put back."""
    import psycopg
    from pg_fixture import end_admin_lock_backend

    url = _url(pg_server)
    conninfo, schema = postgres_conninfo(url)
    ka, shares = Keyring.create(tmp_path / "a", 2, ["a", "b", "c"])
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # host B's copy of the directory
    kb = Keyring.open(tmp_path / "b")
    store_a = open_store(url, keyring_id=ka.keyring_id, home=ka.path, create=True)
    store_b = open_store(url, keyring_id=kb.keyring_id, home=kb.path)
    with (
        ka.unseal([shares["a"], shares["b"]], store=store_a) as ua,
        kb.unseal([shares["b"], shares["c"]], store=store_b) as ub,
    ):
        before = ka.home.read_keyring()
        real = store_a.set_current_kek
        rival: list[int] = []

        def lock_lost_then_commit(version: int) -> object:
            with psycopg.connect(conninfo, autocommit=True) as other:
                end_admin_lock_backend(other, schema)
            rival.append(ub.rotate(record=False))  # B takes the released lock: its v2
            return real(version)

        store_a.set_current_kek = lock_lost_then_commit  # type: ignore[method-assign]
        with pytest.raises(KeyringError, match="lost the keyring's rotation lock"):
            ua.rotate(record=False)
        assert rival == [2] and store_a.state().current_kek == 2
        assert ka.home.read_keyring() == before  # A's own v2 is gone, not kept beside B's
        assert _file_meta(ka).kek_versions == (1,)
        made_on_b = ub.encrypt(b"b", subject="bob")
    shutil.copy(kb.home.path / "keyring.ksk", ka.home.path / "keyring.ksk")  # as B's hint
    again = open_store(url, keyring_id=ka.keyring_id, home=ka.path)
    with Keyring.open(ka.path).unseal([shares["a"], shares["c"]], store=again) as ua:
        assert ua.decrypt(made_on_b, subject="bob") == b"b"
        assert ua.rotate(record=False) == 3


def test_a_rekey_noted_while_its_connection_died_counts_once(
    pg_server: object, tmp_path: Path
) -> None:
    """note_rekey (the fleet's rekey count and epoch, after a rekey's commit) ran as
    idempotent work: when the server committed it and the client lost the answer to
    COMMIT, the call was retried on a new connection and the rekey counted twice (status
    said 2 rekeys after one). Now a retried attempt first asks the server whether the
    earlier one committed (txid_status) and counts only if it did not."""
    with (
        _behind_cutter(pg_server, tmp_path) as (proxy, kr, shares, store, schema),
        kr.unseal([shares["a"], shares["b"]], store=store) as ku,
    ):
        before = store.state()
        new = ku.prepare_rekey()
        proxy.armed = True
        ku.commit_rekey()  # its note_rekey's commit landed; the client lost the answer
        assert proxy.cuts == 1
        after = store.state()
        assert after.rekeys == before.rekeys + 1  # before the fix: + 2
        assert after.epoch == before.epoch + 1
        assert ku.status().fleet.rekeys == before.rekeys + 1  # type: ignore[union-attr]
        proxy.armed = True  # and called directly: the same
        assert store.note_rekey("direct").rekeys == before.rekeys + 2
        assert proxy.cuts == 2 and store.state().rekeys == before.rekeys + 2
    direct = f"{pg_server.url}&schema={schema}"  # type: ignore[attr-defined]
    with kr.unseal(
        [new["b"], new["c"]], store=open_store(direct, keyring_id=kr.keyring_id, home=kr.path)
    ) as ku:
        assert ku.store.state().rekeys == 2


def test_a_shred_committed_while_its_connection_died_reports_done(
    pg_server: object, tmp_path: Path
) -> None:
    """A shred (delete_many: not retried, whether a key existed is its answer) whose
    commit the server made while the client lost the answer to COMMIT raised the driver's
    'server closed the connection' as a plain KeyringError: the caller was told it failed
    although the key was gone, and the process kept the key in its cache. Now the
    transaction's id resolves it: the shred reports done, the key is forgotten."""
    from keysplit import ShreddedError

    with (
        _behind_cutter(pg_server, tmp_path) as (proxy, kr, shares, store, _schema),
        kr.unseal([shares["a"], shares["b"]], store=store) as ku,
    ):
        record = ku.encrypt(b"secret", subject="bob")
        epoch = store.state().epoch
        proxy.armed = True
        assert ku.shred("bob") is True  # the delete committed; the client lost the answer
        assert proxy.cuts == 1
        assert store.get("bob") is None and store.state().epoch == epoch + 1
        with pytest.raises(ShreddedError):
            ku.decrypt(record, subject="bob")  # not from this process's cache either


def test_a_shred_whose_commit_cannot_be_resolved_says_so(pg_server: object, tmp_path: Path) -> None:
    """The connection died at COMMIT and no new one could be made: the shred fails with a
    StoreUnreachableError saying whether it committed is unknown (run it again)."""
    from keysplit import StoreUnreachableError

    with (
        _behind_cutter(pg_server, tmp_path, "&connect_timeout=2") as (proxy, kr, shares, store, _),
        kr.unseal([shares["a"], shares["b"]], store=store) as ku,
    ):
        ku.encrypt(b"secret", subject="bob")
        proxy.armed = proxy.then_refuse = True
        with pytest.raises(StoreUnreachableError, match=r"shred.*unknown"):
            ku.shred("bob")
        assert proxy.cuts == 1
        proxy.refuse = False
        assert ku.shred("bob") is False  # it had committed: running it again is safe


def test_a_rotation_outlasting_the_roles_idle_in_transaction_timeout_keeps_its_lock(
    pg_server: object, tmp_path: Path
) -> None:
    """The rotation lock is a transaction advisory lock held by a connection idle in its
    transaction for the rotation's body (file writes, the home's lock). A DBA's
    ``idle_in_transaction_session_timeout`` on the role (here in the URL's options) made
    the server end that session mid-rotation, and the rotation failed ("lost the keyring's
    rotation lock"). The lock's transaction now lifts that timeout for itself."""
    import time

    import psycopg

    url = f"{_url(pg_server)}&options=-c%20idle_in_transaction_session_timeout%3D100"
    conninfo, schema = postgres_conninfo(url)
    kr, shares = Keyring.create(tmp_path / "kr", 2, ["a", "b", "c"])
    store = open_store(url, keyring_id=kr.keyring_id, home=kr.path, create=True)
    real = store.set_current_kek
    held: list[bool] = []

    def after_the_timeout(version: int) -> object:
        # wait (bounded) past the timeout: until the server ended the lock's session, or
        # for ten times the timeout while it still holds the lock
        with psycopg.connect(conninfo, autocommit=True) as other:
            deadline = time.monotonic() + 1.0
            while True:
                row = other.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND ((classid::bigint << 32) | objid::bigint) = hashtextextended(%s, 0)",
                    (f"keysplit/{schema}//admin",),
                ).fetchone()
                if not (row and row[0]) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        held.append(bool(row and row[0]))
        return real(version)

    with kr.unseal([shares["a"], shares["b"]], store=store) as ku:
        store.set_current_kek = after_the_timeout  # type: ignore[method-assign]
        assert ku.rotate(record=False) == 2
        assert held == [True]
        assert store.state().current_kek == 2


def test_a_rotation_behind_a_pooler_that_names_its_own_backend_pid_commits(
    pg_server: object, tmp_path: Path
) -> None:
    """A pooler (pgbouncer, in every pool mode) answers a client's start-up with a
    BackendKeyData of its own: the pid libpq reports is not the server backend's. The
    rotation lock's check looked for the lock under that pid, found none, and refused
    every rotation behind a pooler ("lost the keyring's rotation lock"). Now the lock's
    connection asks the server for its backend's pid (pg_backend_pid) when it takes it."""
    with _behind_cutter(pg_server, tmp_path) as (proxy, kr, shares, store, schema):
        store.close()
        proxy.fake_pid = 7  # on every connection made from now on
        url = f"postgresql:///keysplit?host={proxy.dir}&user=keysplit&schema={schema}"
        pooled = open_store(url, keyring_id=kr.keyring_id, home=kr.path)
        with kr.unseal([shares["a"], shares["b"]], store=pooled) as ku:
            assert ku.rotate(record=False) == 2
            assert pooled.state().current_kek == 2


def test_a_new_key_whose_insert_was_lost_is_never_offered_again_after_a_shred(
    pg_server: object, tmp_path: Path
) -> None:
    """Process A stores a new key for bob; the server commits it, A's connection dies
    before the answer. C meanwhile finds A's key stored and seals a record with it; B
    shreds bob (reported done). A's store call ran the same insert again on a new
    connection: the very key B had shredded was stored again, and C's record, written
    before the shred, opened again. Now A's lost insert is not repeated: A offers a new
    key, so C's record stays unreadable, and A's own record opens under the new key."""
    import threading
    import time

    from keysplit import KeysplitError

    schema = f"t_{uuid.uuid4().hex[:16]}"
    kr, shares = Keyring.create(tmp_path / "kr", 2, ["a", "b", "c"])
    direct = f"{pg_server.url}&schema={schema}"  # type: ignore[attr-defined]
    quorum = [shares["a"], shares["b"]]
    with _cutter(pg_server) as proxy:
        url = (
            f"postgresql:///keysplit?host={proxy.dir}&user=keysplit&schema={schema}"
            "&connect_timeout=30"
        )
        store_a = open_store(url, keyring_id=kr.keyring_id, home=kr.path, create=True)
        store_b = open_store(direct, keyring_id=kr.keyring_id, home=kr.path)
        store_c = open_store(direct, keyring_id=kr.keyring_id, home=kr.path)
        with (
            kr.unseal(quorum, store=store_a) as a,
            kr.unseal(quorum, store=store_b) as b,
            kr.unseal(quorum, store=store_c) as c,
        ):
            proxy.match = b"ON CONFLICT (subject) DO NOTHING"  # a new key's insert
            proxy.done = b"Z\x00\x00\x00\x05I"  # ReadyForQuery after its commit
            proxy.armed = proxy.then_refuse = True  # A reaches the server only when let
            got: list[object] = []

            def encrypt_on_a() -> None:
                try:
                    got.append(a.encrypt(b"from A", subject="bob"))
                except KeysplitError as exc:
                    got.append(exc)

            worker = threading.Thread(target=encrypt_on_a, daemon=True)
            worker.start()
            deadline = time.monotonic() + 30
            while not proxy.cuts and time.monotonic() < deadline:
                time.sleep(0.01)
            assert proxy.cuts == 1 and store_b.get("bob") is not None  # A's key committed
            before_shred = c.encrypt(b"from C", subject="bob")  # with A's key
            assert b.shred("bob") is True
            proxy.refuse = False
            worker.join(60)
            assert not worker.is_alive()
            assert len(got) == 1 and isinstance(got[0], bytes), got
            with pytest.raises(KeysplitError):  # the shredded key did not come back
                b.decrypt(before_shred, subject="bob")
            assert b.decrypt(got[0], subject="bob") == b"from A"


def test_a_rewrap_batch_committed_while_its_connection_died_counts_its_keys(
    pg_server: object, tmp_path: Path
) -> None:
    """replace_many (a rewrap's swap) ran as idempotent work: when the server committed a
    batch and the client lost the answer to COMMIT, the batch ran again on a new
    connection, found none of its rows still as read (already swapped), and counted 0:
    the rewrap reported 0 keys rewrapped although all were. Now the retry asks whether
    the earlier attempt committed (txid_status) and counts that attempt's swaps."""
    with (
        _behind_cutter(pg_server, tmp_path) as (proxy, kr, shares, store, _schema),
        kr.unseal([shares["a"], shares["b"]], store=store) as ku,
    ):
        records = {s: ku.encrypt(s.encode(), subject=s) for s in ("ann", "bob", "cy")}
        assert ku.rotate(record=False) == 2
        proxy.match = b"FROM ks_swap w"  # the swap's UPDATE
        proxy.armed = True
        res = ku.rewrap(record=False)
        assert proxy.cuts == 1
        assert (res.rewrapped, res.remaining) == (3, 0)  # before the fix: 0 rewrapped
        assert store.count_by_version() == {2: 3}
        assert ku.rewrap(record=False).rewrapped == 0
        for s, record in records.items():
            assert ku.decrypt(record, subject=s) == s.encode()


def test_an_audit_entry_committed_while_its_connection_died_is_recorded_once(
    pg_server: object, tmp_path: Path
) -> None:
    """audit_append (not retried) whose commit the server made while the client lost the
    answer to COMMIT raised the driver's error: the command failed although its entry was
    stored, and running it again recorded the entry twice. Now the transaction's id
    resolves it: the call returns the stored line; when the server cannot be asked, a
    StoreUnreachableError says whether it was recorded is unknown."""
    from keysplit import StoreUnreachableError

    with _behind_cutter(pg_server, tmp_path, "&connect_timeout=2") as (proxy, _, _, store, _):
        before = store.audit_lines()
        proxy.match = b".audit (seq, line)"  # the entry's INSERT
        proxy.armed = True
        assert store.audit_append(lambda last: b"one") == b"one"  # before the fix: raises
        assert proxy.cuts == 1
        assert store.audit_lines() == [*before, b"one"]
        proxy.armed = proxy.then_refuse = True
        with pytest.raises(StoreUnreachableError, match=r"audit entry.*unknown"):
            store.audit_append(lambda last: b"two")
        assert proxy.cuts == 2
        proxy.refuse = False
        assert store.audit_lines() == [*before, b"one", b"two"]  # it had committed


def test_a_retire_committed_while_its_connection_died_is_retired_once(
    pg_server: object, tmp_path: Path
) -> None:
    """retire_kek ran as idempotent work with no transaction-id check: when the server
    committed a retire and the client lost the answer to COMMIT, the call ran again on a
    new connection and committed a second change. Settled here: the store's ``retired``
    holds the version once (its encoding is a sorted set), but the epoch was bumped twice
    (every process re-read the state twice) and the state returned listed the version
    twice. No "already retired" refusal exists, so the retry was not refused. Now a retry
    first asks whether an earlier attempt committed (txid_status), as note_rekey does; an
    outcome the server cannot tell is a StoreUnreachableError saying it is unknown."""
    from keysplit import StoreUnreachableError

    with (
        _behind_cutter(pg_server, tmp_path, "&connect_timeout=2") as (proxy, kr, shares, store, _),
        kr.unseal([shares["a"], shares["b"]], store=store) as ku,
    ):
        record = ku.encrypt(b"kept", subject="ann")
        for version in (2, 3):
            assert ku.rotate(record=False) == version
        assert ku.rewrap(record=False).rewrapped == 1
        before = store.state()
        proxy.armed = True  # the retire's UPDATE of keyring_state: its COMMIT answer is lost
        ku.retire(1, record=False)
        assert proxy.cuts == 1
        after = store.state()
        assert after.retired == (1,)
        assert after.epoch == before.epoch + 1  # before the fix: + 2
        assert _file_meta(kr).kek_versions == (2, 3)
        proxy.armed = True  # called directly: the state it returns is the store's
        got = store.retire_kek(2)
        assert proxy.cuts == 2
        assert got == store.state()  # before the fix: retired (1, 2, 2), one epoch short
        assert got.retired == (1, 2) and got.epoch == before.epoch + 2
        proxy.armed = proxy.then_refuse = True  # no connection after the cut: unknown
        with pytest.raises(StoreUnreachableError, match=r"KEK version 2 .*retired.*unknown"):
            ku.retire(2, record=False)
        assert proxy.cuts == 3
        proxy.refuse = False
        assert store.state().retired == (1, 2)  # it had committed
        ku.retire(2, record=False)  # running it again is harmless
        assert _file_meta(kr).kek_versions == (3,)
        assert ku.decrypt(record, subject="ann") == b"kept"


def test_an_audit_entry_the_server_refuses_at_commit_fails_and_is_not_recorded(
    pg_server: object,
) -> None:
    """audit_append's aborted case (the branch a shred's resolution shares): the entry was
    written, then the server refused the COMMIT. The transaction's id says it aborted, so
    the server's error stands and nothing was recorded (running the command again records
    the entry once)."""
    from keysplit.store.postgres import PostgresKeyStore

    url = _url(pg_server)
    conninfo, schema = postgres_conninfo(url)
    store = PostgresKeyStore(url, "ab" * 16, create=True)
    try:
        before = store.audit_lines()
        fail_commits(conninfo, schema, "audit", "P0001", times=1)
        with pytest.raises(KeyringError, match="cut at commit"):
            store.audit_append(lambda last: b"one")
        assert store.audit_lines() == before
        assert store.audit_append(lambda last: b"one") == b"one"
        assert store.audit_lines() == [*before, b"one"]
    finally:
        store.close()


def test_an_audit_entry_whose_commit_never_reached_the_server_fails_and_is_not_recorded(
    pg_server: object, tmp_path: Path
) -> None:
    """audit_append's aborted case after a lost connection: the entry was written, the
    connection died as the client sent COMMIT, and the server, which never saw it, rolled
    the transaction back. The transaction's id (asked under the audit lock, granted once
    that backend has ended) says it aborted: the error stands, nothing was recorded, and
    running the command again records the entry once."""
    from keysplit import StoreUnreachableError

    with _behind_cutter(pg_server, tmp_path) as (proxy, _, _, store, _):
        before = store.audit_lines()
        proxy.match = b".audit (seq, line)"  # the entry's INSERT
        proxy.before = proxy.armed = True
        with pytest.raises(KeyringError) as failed:
            store.audit_append(lambda last: b"one")
        assert not isinstance(failed.value, StoreUnreachableError)  # not "unknown"
        assert proxy.cuts == 1
        assert store.audit_lines() == before
        assert store.audit_append(lambda last: b"one") == b"one"
        assert store.audit_lines() == [*before, b"one"]


def test_a_shred_whose_commit_never_reached_the_server_fails_and_keeps_the_key(
    pg_server: object, tmp_path: Path
) -> None:
    """The shred's side of the same branch: the server rolled the delete back, so the
    shred fails (not "unknown"), the key stays, and a shred run again deletes it."""
    from keysplit import StoreUnreachableError

    with (
        _behind_cutter(pg_server, tmp_path) as (proxy, kr, shares, store, _schema),
        kr.unseal([shares["a"], shares["b"]], store=store) as ku,
    ):
        record = ku.encrypt(b"secret", subject="bob")
        proxy.match = b"DELETE FROM"  # the shred's statement
        proxy.before = proxy.armed = True
        with pytest.raises(KeyringError) as failed:
            ku.shred("bob")
        assert not isinstance(failed.value, StoreUnreachableError)
        assert proxy.cuts == 1
        assert store.get("bob") is not None
        assert ku.decrypt(record, subject="bob") == b"secret"
        assert ku.shred("bob") is True and store.get("bob") is None


def test_an_audit_entry_retried_after_a_serialization_failure_then_committed_is_returned(
    pg_server: object, tmp_path: Path
) -> None:
    """audit_append is not retried after a lost connection, but a serialization failure
    or deadlock (the server rolled the attempt back) runs it again. When that second
    attempt committed and the client lost the answer to COMMIT, the resolution asked
    only about the first attempt's transaction (aborted) and raised the driver's error:
    the command failed although its entry was stored. Now every attempt's transaction
    is asked about, and the line of the attempt that committed is returned."""
    with _behind_cutter(pg_server, tmp_path) as (proxy, _, _, store, schema):
        before = store.audit_lines()
        conninfo, _ = postgres_conninfo(pg_server.url)  # type: ignore[attr-defined]
        fail_commits(conninfo, schema, "audit", "40001", times=1)
        proxy.match = b".audit (seq, line)"  # the entry's INSERT
        proxy.armed = True  # the first COMMIT fails (no answer to cut), the second is cut
        assert store.audit_append(lambda last: b"one") == b"one"  # before the fix: raises
        assert proxy.cuts == 1
        assert store.audit_lines() == [*before, b"one"]


def test_a_hold_committed_while_its_connection_died_bumps_the_epoch_once(
    pg_server: object, tmp_path: Path
) -> None:
    """set_legal_holds (idempotent rows, one epoch bump) whose commit the server made while
    the client lost the answer to COMMIT ran again on a new connection and bumped the
    epoch a second time (every process re-read the state twice). Now a retry first asks
    whether the earlier attempt committed, as retire_kek and note_rekey do."""
    with _behind_cutter(pg_server, tmp_path) as (proxy, _, _, store, _):
        before = store.state().epoch
        proxy.armed = True  # the hold's epoch bump: its COMMIT answer is lost
        store.set_legal_holds(["ann", "bob"], True)
        assert proxy.cuts == 1
        assert store.legal_holds() == ["ann", "bob"]
        assert store.state().epoch == before + 1  # before the fix: + 2
        proxy.armed = True  # and lifting them: the same
        store.set_legal_holds(["ann"], False)
        assert proxy.cuts == 2
        assert store.legal_holds() == ["bob"] and store.state().epoch == before + 2


def test_a_rekey_whose_count_cannot_be_resolved_still_hands_back_its_shares(
    pg_server: object, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The keyring file is rekeyed, then the store's note_rekey commits and the connection
    dies at COMMIT with no new one to be had. note_rekey raised the driver's error (not
    resolved by transaction id, as retire_kek's is), and commit_rekey passed it on after
    the switch: rekey() raised, and the new shares, the only ones that unseal the keyring
    now, were lost with it. Now the count's outcome is resolved ('unknown' here: a
    StoreUnreachableError), commit_rekey logs it, and rekey() hands back the shares."""
    from keysplit import KeysplitError, StoreUnreachableError

    with (
        _behind_cutter(pg_server, tmp_path, "&connect_timeout=2") as (proxy, kr, shares, store, _),
        kr.unseal([shares["a"], shares["b"]], store=store) as ku,
    ):
        before = store.state()
        proxy.armed = proxy.then_refuse = True
        with caplog.at_level("WARNING", logger="keysplit.keyring.unsealed"):
            new = ku.rekey()  # before the fix: raises, the new shares lost
        assert proxy.cuts == 1
        assert "the rekey took effect" in caplog.text and "unknown" in caplog.text
        proxy.refuse = False
        assert store.state().rekeys == before.rekeys + 1  # the server had counted it
        proxy.armed = proxy.then_refuse = True  # called directly: the outcome is unknown
        with pytest.raises(StoreUnreachableError, match=r"rekey was being counted.*unknown"):
            store.note_rekey("direct")
        assert proxy.cuts == 2
        proxy.refuse = False
        assert store.state().rekeys == before.rekeys + 2  # it had committed
        with pytest.raises(KeysplitError):  # the old shares are dead
            Keyring.open(kr.path).unseal([shares["a"], shares["b"]])
        with Keyring.open(kr.path).unseal([new["b"], new["c"]], store=store) as again:
            assert again.status().generation == 2


def test_a_hold_whose_commit_cannot_be_resolved_says_so(pg_server: object, tmp_path: Path) -> None:
    """set_legal_holds' connection died at COMMIT and no new one could be made: it raised
    the driver's 'server closed the connection' although the server had placed the holds
    (note_rekey and retire_kek resolve this case by transaction id). Now it says whether
    they were placed is unknown, and placing them again is harmless."""
    from keysplit import StoreUnreachableError

    with _behind_cutter(pg_server, tmp_path, "&connect_timeout=2") as (proxy, _, _, store, _):
        proxy.armed = proxy.then_refuse = True
        with pytest.raises(StoreUnreachableError, match=r"legal holds .* placed.*unknown"):
            store.set_legal_holds(["ann", "bob"], True)
        assert proxy.cuts == 1
        proxy.refuse = False
        assert store.legal_holds() == ["ann", "bob"]  # the server had placed them
        epoch = store.state().epoch
        store.set_legal_holds(["ann", "bob"], True)
        assert store.legal_holds() == ["ann", "bob"] and store.state().epoch == epoch + 1


def test_an_unseal_that_completes_a_rekey_opens_though_its_count_is_unresolved(
    pg_server: object, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An unseal with the new shares of a rekey interrupted before its commit completes
    it (the keyring file switches), then has the store count it. With the count's COMMIT
    answer lost and no new connection, the unseal raised after the switch: the caller
    was told it failed though the keyring had switched. Now the count's failure is
    logged, as commit_rekey's is, and the session opens."""
    extra = "&connect_timeout=2"
    with _behind_cutter(pg_server, tmp_path, extra) as (proxy, kr, shares, first, schema):
        with kr.unseal([shares["a"], shares["b"]], store=first) as ku:
            new = ku.prepare_rekey()  # then the process is "killed" before the commit
        url = f"postgresql:///keysplit?host={proxy.dir}&user=keysplit&schema={schema}{extra}"
        store = open_store(url, keyring_id=kr.keyring_id, home=kr.path)
        before = store.state().rekeys
        again = Keyring.open(kr.path)
        proxy.armed = proxy.then_refuse = True
        with caplog.at_level("WARNING", logger="keysplit.keyring.unsealed"):
            ku = again.unseal([new["a"], new["c"]], store=store)  # before the fix: raises
        assert proxy.cuts == 1 and "the rekey took effect" in caplog.text
        proxy.refuse = False
        with ku:
            assert ku.status().generation == 2
            assert store.state().rekeys == before + 1  # the server had counted it
