"""SQLite key store: protocol, binding to its keyring, transactions, strict opening."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from memory_store import MemoryKeyStore
from sqlite_reader import start_reader

from keysplit import FormatError, Keyring, KeyringError, LegalHoldError
from keysplit.store import KeyStore, SQLiteKeyStore, WrappedKey, open_store

KID = "00" * 16


@pytest.fixture
def store(tmp_path: Path) -> SQLiteKeyStore:
    s = SQLiteKeyStore(tmp_path / "keys.sqlite", KID, create=True)
    yield s  # type: ignore[misc]
    s.close()


def rows(n: int, version: int = 1, tag: int = 0) -> list[WrappedKey]:
    return [WrappedKey(f"s{i:04d}", version, bytes([tag]) * 24) for i in range(n)]


def test_is_a_keystore_and_settings(store: SQLiteKeyStore) -> None:
    assert isinstance(store, KeyStore)
    db = store._db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert db.execute("PRAGMA secure_delete").fetchone()[0] == 1
    assert (store.path.stat().st_mode & 0o777) == 0o600
    assert KID in repr(store)


def test_insert_get_existing_wins(store: SQLiteKeyStore) -> None:
    first = rows(3, tag=1)
    assert store.insert_many(first) == first
    again = [WrappedKey("s0001", 1, b"\x09" * 24), WrappedKey("new", 1, b"\x02" * 24)]
    got = store.insert_many(again)
    assert got == [first[1], again[1]], "an existing key is never overwritten"
    assert store.get("s0001") == first[1]
    assert store.get("nope") is None
    assert set(store.get_many(["s0000", "new", "nope"])) == {"s0000", "new"}
    assert len(store.get_many([f"s{i:04d}" for i in range(1200)])) == 3


def test_replace_only_if_unchanged(store: SQLiteKeyStore) -> None:
    old = rows(2)
    store.insert_many(old)
    new0 = WrappedKey("s0000", 2, b"\x05" * 24)
    stale = WrappedKey("s0001", 7, b"\x00" * 24)  # not what is stored
    assert store.replace_many([(old[0], new0), (stale, WrappedKey("s0001", 2, b"\x06" * 24))]) == 1
    assert store.get("s0000") == new0
    assert store.get("s0001") == old[1]


def test_stale_batches_and_counts(store: SQLiteKeyStore) -> None:
    store.insert_many(rows(25))
    store.insert_many([WrappedKey("zz", 2, b"\x01" * 24)])
    assert store.count_by_version() == {1: 25, 2: 1}
    b1 = store.stale_batch(2, "", 10)
    assert [r.subject for r in b1] == [f"s{i:04d}" for i in range(10)]
    b3 = store.stale_batch(2, "s0019", 10)
    assert len(b3) == 5
    assert sum(len(b) for b in store.iter_subjects(batch_size=4)) == 26


def test_transaction_rolls_back(store: SQLiteKeyStore) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        store.insert_many(rows(3))
        store.set_legal_hold("s0000", True)
        raise RuntimeError
    assert store.count_by_version() == {}
    assert store.legal_holds() == []


def test_legal_hold_guards_delete(store: SQLiteKeyStore) -> None:
    store.insert_many(rows(2))
    store.set_legal_hold("s0000", True)
    store.set_legal_hold("s0000", True)
    assert store.legal_holds() == ["s0000"] and store.is_on_hold("s0000")
    with pytest.raises(LegalHoldError):
        store.delete("s0000")
    assert store.get("s0000") is not None
    store.set_legal_hold("s0000", False)
    assert store.delete("s0000") and not store.delete("s0000")


def test_shredded_bytes_leave_the_database_file(tmp_path: Path) -> None:
    s = SQLiteKeyStore(tmp_path / "k.sqlite", KID, create=True)
    marker = b"\xa5\x5a" * 12
    s.insert_many([WrappedKey("victim", 1, marker)])
    s.delete("victim")
    s.close()
    blob = (tmp_path / "k.sqlite").read_bytes()
    wal = tmp_path / "k.sqlite-wal"
    if wal.exists():
        blob += wal.read_bytes()
    assert marker not in blob


def _with_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[SQLiteKeyStore, Path, bytes, subprocess.Popen[str]]:
    """A store holding the key "victim" (its wrapped bytes: the marker) and a reader process
    about to pin a snapshot of it (it prints "reading", then waits for a line); shreds retry
    their erase for 0.2 s."""
    from keysplit.store import sqlite as sqlite_store

    monkeypatch.setattr(sqlite_store, "ERASE_WAIT", 0.2, raising=False)
    path = tmp_path / "k.sqlite"
    s = SQLiteKeyStore(path, KID, create=True)
    marker = b"\xc3\x3c" * 12
    s.insert_many([WrappedKey("victim", 1, marker), *rows(3)])
    return s, path, marker, start_reader(path)


def test_a_shred_whose_checkpoint_is_blocked_says_so_and_erases_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Red team: while another process read an older snapshot, a shred's
    ``wal_checkpoint(TRUNCATE)`` waited the 30 s busy timeout holding the store's lock,
    then its busy result was ignored: nothing said that the wrapped key's old page was
    still on disk, and nothing erased it later. Now the shred retries within a bound,
    logs a warning, and the store's next write after the reader is gone erases it."""
    s, path, marker, reader = _with_reader(tmp_path, monkeypatch)
    try:
        assert reader.stdout is not None and reader.stdout.readline() == "reading\n"
        with caplog.at_level("WARNING", logger="keysplit.store.sqlite"):
            assert s.delete("victim")
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        assert "victim" not in caplog.text and "WAL" in caplog.text
        assert s.checkpoint(0) is False  # the reader still holds its snapshot
    finally:
        reader.communicate("done\n", timeout=30)
    assert reader.returncode == 0
    s.set_legal_hold("other", True)  # the next write erases it
    blob = path.read_bytes() + (path.with_name("k.sqlite-wal").read_bytes())
    assert marker not in blob
    assert s.checkpoint(0) is True
    s.close()


def test_writes_after_an_unconfirmed_erase_do_not_wait_for_the_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Red team: once a shred's erase was left pending, every later write transaction retried
    the checkpoint with a 100 ms busy wait, holding the store's lock: while a reader kept its
    snapshot for long (a backup, a replication tool), each write of the process (a new
    subject's key, a hold) waited 100 ms and every other call of the store with it. The
    retry after a commit is now one try that does not wait (busy_timeout 0); the erase still
    happens at the first write after the reader is gone."""
    s, path, marker, reader = _with_reader(tmp_path, monkeypatch)
    sent: list[str] = []
    try:
        assert reader.stdout is not None and reader.stdout.readline() == "reading\n"
        assert s.delete("victim")  # the erase is left pending (the reader holds it)
        s._db.set_trace_callback(sent.append)
        for i in range(3):
            s.set_legal_hold(f"h{i}", True)
        s._db.set_trace_callback(None)
    finally:
        reader.communicate("done\n", timeout=30)
    assert reader.returncode == 0
    tries = [i for i, q in enumerate(sent) if "wal_checkpoint" in q]
    assert len(tries) == 3, sent  # one try after each write...
    assert all(sent[i - 1] == "PRAGMA busy_timeout = 0" for i in tries), sent  # ...not waiting
    s.set_legal_hold("other", True)  # the reader is gone: this write erases it
    assert marker not in path.read_bytes() + path.with_name("k.sqlite-wal").read_bytes()
    assert s.checkpoint(0) is True
    s.close()


def test_an_unconfirmed_erase_is_done_at_close_once_the_reader_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """SECURITY.md: the store erases "at its first write or close after that reader ends".
    With no write in between, closing the store is what takes the shredded key's page out
    of the live files (no warning then); closing while the reader still holds its snapshot
    says so."""
    s, path, marker, reader = _with_reader(tmp_path, monkeypatch)
    try:
        assert reader.stdout is not None and reader.stdout.readline() == "reading\n"
        assert s.delete("victim")  # the erase is left pending (the reader holds it)
    finally:
        reader.communicate("done\n", timeout=30)
    assert reader.returncode == 0
    assert marker in path.read_bytes() + path.with_name("k.sqlite-wal").read_bytes()
    caplog.clear()
    with caplog.at_level("WARNING", logger="keysplit.store.sqlite"):
        s.close()
    assert not caplog.records
    wal = path.with_name("k.sqlite-wal")
    assert marker not in path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")

    (tmp_path / "again").mkdir()
    s, path, marker, reader = _with_reader(tmp_path / "again", monkeypatch)
    try:
        assert reader.stdout is not None and reader.stdout.readline() == "reading\n"
        assert s.delete("victim")
        caplog.clear()
        with caplog.at_level("WARNING", logger="keysplit.store.sqlite"):
            s.close()  # never refused for it, but said
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        assert "victim" not in caplog.text and "erase unconfirmed" in caplog.text
    finally:
        reader.communicate("done\n", timeout=30)
    assert reader.returncode == 0


def test_binding_and_strict_open(tmp_path: Path) -> None:
    p = tmp_path / "k.sqlite"
    SQLiteKeyStore(p, KID, create=True).close()
    with pytest.raises(KeyringError, match="another keyring"):
        SQLiteKeyStore(p, "11" * 16)
    with pytest.raises(KeyringError, match="not found"):
        SQLiteKeyStore(tmp_path / "missing.sqlite", KID)
    db = sqlite3.connect(p)
    db.execute("UPDATE meta SET value = '9' WHERE name = 'version'")
    db.commit()
    db.close()
    with pytest.raises(FormatError, match="unsupported version"):
        SQLiteKeyStore(p, KID)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(FormatError):
        SQLiteKeyStore(junk, KID)
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).close()
    with pytest.raises(FormatError, match="not a keysplit key store"):
        SQLiteKeyStore(empty, KID)


def test_sqlite_urls_name_exactly_one_file(tmp_path: Path) -> None:
    """(red team) urlsplit cut a sqlite URL's path at '?' or '#': sqlite:///d/keys?eu.sqlite
    and sqlite:///d/keys#us.sqlite both opened d/keys; a host was joined to the home as a
    path; creating a store in a missing directory was a raw FileNotFoundError."""
    for url in (
        f"sqlite://{tmp_path}/keys?eu.sqlite",
        f"sqlite://{tmp_path}/keys#us.sqlite",
        "sqlite:keys?eu.sqlite",
        f"sqlite://localhost{tmp_path}/keys.sqlite",
    ):
        with pytest.raises(KeyringError, match="local path"):
            open_store(url, keyring_id=KID, home=tmp_path, create=True)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyringError, match="cannot create key store"):
        open_store(
            f"sqlite://{tmp_path}/missing/k.sqlite", keyring_id=KID, home=tmp_path, create=True
        )
    with pytest.raises(KeyringError, match="cannot create key store"):
        Keyring.create(tmp_path / "kr", 2, ["a", "b"], store_url=f"sqlite://{tmp_path}/no/k.sqlite")


def test_keyring_runs_on_any_keystore(tmp_path: Path) -> None:
    kr, shares = Keyring.create(tmp_path / "kr", 2, ["a", "b", "c"])
    store = MemoryKeyStore(str(tmp_path), kr.keyring_id, create=True)  # only the protocol
    assert isinstance(store, KeyStore)
    with kr.unseal([shares["a"], shares["b"]], store=store) as ku:
        recs = ku.encrypt_many([f"u{i}" for i in range(30)], [b"%d" % i for i in range(30)])
        ku.rotate()
        assert ku.rewrap(batch_size=7).rewrapped == 30
        ku.retire(1)
        ku.set_legal_hold("u0", True)
        with pytest.raises(LegalHoldError):
            ku.shred("u0")
        assert ku.shred("u1")
        assert ku.decrypt(recs[0], subject="u0") == b"0"
        assert store.count_by_version() == {2: 29}
    with pytest.raises(KeyringError, match="another keyring"):
        kr.unseal([shares["a"], shares["b"]], store=MemoryKeyStore("other", "ff" * 16, create=True))


def test_a_full_database_is_a_keyring_error_and_the_store_goes_on(tmp_path: Path) -> None:
    """(red team) A disk or database that is full (here: SQLite's page limit) failed a key
    creation with sqlite3's "cannot rollback - no transaction is active": SQLite had
    already rolled the transaction back on SQLITE_FULL, the store's ROLLBACK then failed
    and its error, a bare sqlite3 one, hid the real cause. Now a KeyringError that says
    the store is full; nothing was stored; the store works on once there is room."""
    kr, shares = Keyring.create(tmp_path / "kr", 2, ["a", "b"])
    with kr.unseal(list(shares.values())) as ukr:
        store = ukr.store
        assert isinstance(store, SQLiteKeyStore)
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages}")  # no room for another page
        subjects = [f"s/{i:04d}" + "y" * 500 for i in range(40)]
        with pytest.raises(KeyringError, match="full"):
            for s in subjects:
                ukr.encrypt(b"x", subject=s)
        stored = store.count_by_version()
        with pytest.raises(KeyringError, match="full"):
            store.insert_many([WrappedKey(s, 1, b"k" * 24) for s in subjects])
        assert store.count_by_version() == stored  # all or nothing
        store._db.execute(f"PRAGMA max_page_count = {pages * 100}")
        rec = ukr.encrypt(b"x", subject=subjects[-1])
        assert ukr.decrypt(rec, subject=subjects[-1]) == b"x"


def cli_status(kr: Path) -> subprocess.CompletedProcess[str]:
    """``keysplit status KR`` in a child process (its stderr is what a user sees)."""
    return subprocess.run(
        [sys.executable, "-c", "from keysplit_cli.app import main; main()", "status", kr],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_a_damaged_meta_table_is_a_format_error(tmp_path: Path) -> None:
    """(red team) a key store whose file opens but whose meta table's page is damaged (a
    zeroed page: a bad sector, a torn copy) raised sqlite3's bare DatabaseError from
    Keyring.unseal and status, past every `except KeysplitError` of a backend and as a
    traceback in the CLI: only the first query of the opening was translated. Now the
    same FormatError as a file that is no database at all, in the library and the CLI."""
    kr = tmp_path / "vault"
    _, shares = Keyring.create(kr, 2, ["ana", "ben"])
    path = kr / "keys.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'meta'").fetchone()
        (size,) = db.execute("PRAGMA page_size").fetchone()
    data = bytearray(path.read_bytes())
    data[(root - 1) * size : root * size] = bytes(size)
    path.write_bytes(data)
    with pytest.raises(FormatError, match="not a valid database"):
        Keyring.open(kr).unseal(list(shares.values()))
    with pytest.raises(FormatError, match="not a valid database"):
        Keyring.open(kr).status()
    r = cli_status(kr)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "error: key store" in r.stderr and "not a valid database" in r.stderr


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A directory on a small tmpfs (root only), to be filled by the test."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", mnt], check=False)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", mnt], check=False, timeout=60)


def test_a_full_disk_is_not_called_an_invalid_database(full_disk: Path) -> None:
    """A sound key store on a full disk: SQLite cannot size its WAL index (SQLITE_IOERR);
    opening it said 'is not a valid database' (FormatError), sending its owner to restore a
    sound file. It names the I/O error and the disk instead, in the library and the CLI."""
    kr = full_disk / "vault"
    Keyring.create(kr, 2, ["ana", "ben"])
    (kr / "keys.sqlite-shm").unlink(missing_ok=True)
    (kr / "keys.sqlite-wal").unlink(missing_ok=True)
    st = os.statvfs(full_disk)
    with open(full_disk / "filler", "wb") as f, contextlib.suppress(OSError):
        f.write(b"\0" * (st.f_bavail * st.f_frsize))
    with pytest.raises(KeyringError) as err:
        SQLiteKeyStore(kr / "keys.sqlite", Keyring.open(kr).keyring_id).close()
    assert not isinstance(err.value, FormatError)
    assert "not a valid database" not in str(err.value) and "free space" in (err.value.hint or "")
    r = cli_status(kr)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "not a valid database" not in r.stderr
    assert "error: cannot open key store" in r.stderr and "hint:" in r.stderr
    (full_disk / "filler").unlink()
    SQLiteKeyStore(kr / "keys.sqlite", Keyring.open(kr).keyring_id).close()  # it was sound


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_retiring_a_retired_version_again_lists_it_once(tmp_path: Path, kind: str) -> None:
    """Retiring a version the store has already retired is harmless (a retire whose
    keyring file write was lost runs again), and the state it returns is the store's:
    the version listed once, as stored (the encoding is a sorted set). Before, the
    returned state listed it twice: (*retired, version)."""
    s: KeyStore = (
        SQLiteKeyStore(tmp_path / "keys.sqlite", KID, create=True)
        if kind == "sqlite"
        else MemoryKeyStore(str(tmp_path), KID, create=True)
    )
    try:
        s.set_current_kek(2)
        s.set_current_kek(3)
        assert s.retire_kek(1).retired == (1,)
        assert s.retire_kek(2).retired == (1, 2)
        again = s.retire_kek(1)
        assert again.retired == (1, 2)
        assert again == s.state()
    finally:
        s.close()


def _by_hand(path: Path, statement: str) -> None:
    """``statement`` run on the store's database outside keysplit (an operator's sqlite3)."""
    db = sqlite3.connect(path)
    db.execute(statement)
    db.commit()
    db.close()


def test_a_state_row_deleted_by_hand_is_a_store_changed_outside_keysplit(tmp_path: Path) -> None:
    """The keyring_state row deleted outside keysplit: every state read (state(), each
    write's guard) raised "cannot unpack non-iterable NoneType object", a bare TypeError."""
    p = tmp_path / "k.sqlite"
    store = SQLiteKeyStore(p, KID, create=True)
    try:
        _by_hand(p, "DELETE FROM keyring_state")
        for call in (store.state, lambda: store.set_current_kek(1)):
            with pytest.raises(FormatError, match="no keyring_state row") as info:
                call()
            assert str(p) in str(info.value) and "changed outside keysplit" in str(info.value)
    finally:
        store.close()


def test_a_table_dropped_by_hand_reads_as_on_postgresql(tmp_path: Path) -> None:
    """A data_keys table dropped outside keysplit: the store opened, and each call said
    "key store ...: no such table: data_keys", a plain KeyringError. Now a FormatError in
    the PostgreSQL store's words (rules.changed_by_hand), at the call and at the open."""
    p = tmp_path / "k.sqlite"
    store = SQLiteKeyStore(p, KID, create=True)
    try:
        _by_hand(p, "DROP TABLE data_keys")
        with pytest.raises(FormatError, match="changed outside keysplit; nothing was changed"):
            store.get_many(["alice"])
    finally:
        store.close()
    with pytest.raises(FormatError, match=r"lacks the table\(s\) data_keys") as info:
        SQLiteKeyStore(p, KID)
    assert info.value.hint and "backup" in info.value.hint
