"""The embedded default key store: one SQLite file inside the keyring directory.

Durability: WAL journal with ``synchronous=FULL``. In WAL mode ``NORMAL`` never corrupts
the database but may lose the last commits on power loss; for a key store that would be a
data key whose records were already written elsewhere, i.e. lost data, so every commit is
fsynced. ``secure_delete`` overwrites a shredded key's bytes in the database file, and a
shred checkpoints the WAL so the old page does not linger there (backups taken earlier
still hold it, wrapped under its KEK: rotate, rewrap and retire that KEK to kill those).

That checkpoint (``TRUNCATE``: every WAL frame copied into the database file, the WAL
emptied) cannot finish while another connection reads an older snapshot, which may still
need the old page. The shred then retries for up to :data:`ERASE_WAIT` seconds, without
holding the store's lock between tries, and if the erase is still unconfirmed logs a
warning (logger ``keysplit.store.sqlite``) and retries after every later write
transaction of this store and at :meth:`SQLiteKeyStore.close` until one succeeds;
:meth:`SQLiteKeyStore.checkpoint` does it on demand and says whether it did. The shred
itself stands (its transaction committed with its tombstone): only where the wrapped
bytes still lie on disk is delayed, as with a backup. Before, the checkpoint waited the
30 s busy timeout holding the store's lock and ignored a busy result.

The store records the id of the keyring it belongs to and refuses to open for another
one, so a store copied from another keyring (or region) is never mixed in.

Fleet state (:class:`~keysplit.store.base.KeyringState`, leases, tombstones) lives in
three more tables; every rule runs inside a ``BEGIN IMMEDIATE`` transaction, which
serializes all writers of the file, so the checks and the writes they guard are atomic.
Version 1 stores (no fleet tables) are upgraded in place by a writing open (a
``read_only`` one refuses them, naming both versions). Lease expiry uses this host's
clock: every process sharing a SQLite file runs on the one host.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import FormatError, KeyringError, KeysplitError
from . import rules as _rules
from .base import ADMIN_WAIT, KeyringState, Lease, Tombstone, WrappedKey


class _ClosedDb:
    """Stands in for the connection of a closed store: every use says so."""

    def __getattr__(self, name: str) -> Any:
        raise KeyringError("key store is closed")

    def close(self) -> None:
        return None


_CLOSED: Any = _ClosedDb()

__all__ = ["ERASE_WAIT", "SQLiteKeyStore"]

_log = logging.getLogger(__name__)

ERASE_WAIT = 5.0
"""Seconds a shred retries its WAL checkpoint while another connection holds an old
snapshot (a reader's transaction: normally milliseconds), before it logs a warning and
leaves the erase to the store's next write or close."""
_BUSY_MS = 30_000  # the connection's busy timeout (sqlite3.connect's timeout=30.0)
_ERASE_TRY_MS = 100  # busy timeout of one checkpoint try
FORMAT = "keysplit-keystore"
VERSION = 2  # 2: fleet state (keyring_state, tombstones, leases)
_IN_CHUNK = 500  # bound on SQL host parameters per IN (...) query

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS data_keys (
    subject TEXT PRIMARY KEY,
    kek_version INTEGER NOT NULL,
    wrapped BLOB NOT NULL
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS legal_holds (subject TEXT PRIMARY KEY) STRICT, WITHOUT ROWID;
"""
_FLEET_SCHEMA = """
CREATE TABLE IF NOT EXISTS keyring_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL,
    current_kek INTEGER NOT NULL,
    retired TEXT NOT NULL,
    rekeys INTEGER NOT NULL,
    tombstone_seq INTEGER NOT NULL
) STRICT;
INSERT OR IGNORE INTO keyring_state VALUES (1, 0, 0, '', 0, 0);
CREATE TABLE IF NOT EXISTS tombstones (
    seq INTEGER PRIMARY KEY,
    tag BLOB NOT NULL,
    time REAL NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS tombstones_tag ON tombstones (tag);
CREATE TABLE IF NOT EXISTS leases (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    role TEXT NOT NULL,
    current_kek INTEGER NOT NULL,
    acked INTEGER NOT NULL,
    cached INTEGER NOT NULL,
    expires REAL NOT NULL
) STRICT;
"""
_HELD = "SELECT 1 FROM legal_holds WHERE subject = ?"
# sqlite3's words for a table or column that is not there (dropped or altered by hand)
_ALTERED = ("no such table", "no such column", "table data_keys has no column")
_DELETE = "DELETE FROM data_keys WHERE subject = ?"
_STATE = "SELECT epoch, current_kek, retired, rekeys, tombstone_seq FROM keyring_state"
# the share set of the rekey counted last (note_rekey: each rekey is counted once)
_COUNTED_REKEY = "SELECT value FROM meta WHERE name = 'counted_rekey'"
_COUNT_REKEY = (
    "INSERT INTO meta (name, value) VALUES ('counted_rekey', ?) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value"
)
_LEASE = "SELECT id, host, pid, role, current_kek, acked, cached, expires FROM leases"


def _statements(script: str) -> list[str]:
    return [stmt for stmt in script.strip().split(";") if stmt.strip()]


# the tables the schema makes: an open checks they are all there
_TABLES = frozenset(
    stmt.split("EXISTS", 1)[1].split("(", 1)[0].strip()
    for stmt in _statements(_SCHEMA + _FLEET_SCHEMA)
    if stmt.strip().startswith("CREATE TABLE")
)


class SQLiteKeyStore:
    """SQLite-backed :class:`~keysplit.store.KeyStore`. Thread-safe (one lock)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        keyring_id: str,
        *,
        create: bool = False,
        read_only: bool = False,
    ):
        """``read_only``: the caller only reads. The connection is SQLite's
        ``query_only``, so no write can go through it (each is refused as a
        :class:`KeyringError`, the file untouched), and the open never upgrades an older
        schema (:func:`~keysplit.store.rules.older_schema` refuses it instead)."""
        self._path = Path(path)
        if not create and not self._path.exists():
            raise KeyringError(f"key store not found: {self._path}")
        if create and not self._path.exists():
            try:
                fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as exc:  # no such directory, not writable: a KeysplitError
                raise KeyringError(
                    f"cannot create key store {self._path}: {exc.strerror}"
                ) from None
            os.close(fd)
        self._lock = threading.RLock()
        self._depth = 0
        self._unerased = False  # a shred's WAL checkpoint is not confirmed yet
        self._read_only = read_only
        try:
            self._db = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
        except sqlite3.Error as exc:
            raise KeyringError(f"cannot open key store {self._path}: {exc}") from None
        try:
            self._init(keyring_id, create, read_only)
        except BaseException:
            self._db.close()
            raise
        self._keyring_id = keyring_id

    def _init(self, keyring_id: str, create: bool, read_only: bool) -> None:
        db = self._db
        try:
            if read_only:  # SQLite itself refuses every write on this connection
                # (query_only, not mode=ro: a read-only connection cannot remove the WAL
                # and its index at close, so each status left two files behind)
                db.execute("PRAGMA query_only=ON")
            else:  # set at create; setting it writes the file's header
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA secure_delete=ON")
            db.execute("PRAGMA foreign_keys=ON")
            has_meta = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
            ).fetchone()
            # read here, translated with the rest: a damaged page under the meta table
            # (the file opens, sqlite_master reads) raised sqlite3's bare DatabaseError
            meta_rows = db.execute("SELECT name, value FROM meta").fetchall() if has_meta else []
        except sqlite3.OperationalError as exc:
            # A full disk, an I/O error, a read-only or locked file: the file may be a sound
            # database, which "not a valid database" would send its owner to restore.
            raise KeyringError(
                f"cannot open key store {self._path}: {exc}",
                hint="the file may be sound: check that its disk has free space and is "
                "writable, and that no process holds it locked, then try again",
            ) from None
        except sqlite3.DatabaseError as exc:
            raise FormatError(f"key store {self._path} is not a valid database: {exc}") from None
        if not has_meta:
            if not create:
                raise FormatError(f"key store {self._path} is not a keysplit key store")
            with self.transaction():
                for stmt in _statements(_SCHEMA + _FLEET_SCHEMA):
                    db.execute(stmt)
                meta_rows = [
                    ("format", FORMAT),
                    ("version", str(VERSION)),
                    ("keyring_id", keyring_id),
                ]
                db.executemany("INSERT INTO meta (name, value) VALUES (?, ?)", meta_rows)
        meta = dict(meta_rows)
        if meta.get("format") != FORMAT:
            raise FormatError(f"key store {self._path} is not a keysplit key store")
        if meta.get("version") == "1" and meta.get("keyring_id") == keyring_id:
            if read_only:
                raise _rules.older_schema(f"key store {self._path}", 1, VERSION)
            with self.transaction():  # upgrade in place: add the fleet tables
                for stmt in _statements(_FLEET_SCHEMA):
                    db.execute(stmt)
                db.execute("UPDATE meta SET value = ? WHERE name = 'version'", (str(VERSION),))
            meta["version"] = str(VERSION)
        if meta.get("version") != str(VERSION):
            raise FormatError(
                f"key store {self._path} has unsupported version {meta.get('version')!r}"
            )
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if missing := sorted(_TABLES - tables):  # else each call fails on its own
            raise _rules.changed_by_hand(
                f"key store {self._path}", f"it lacks the table(s) {', '.join(missing)}"
            )
        if meta.get("keyring_id") != keyring_id:
            raise KeyringError(
                f"key store {self._path} belongs to another keyring "
                f"({meta.get('keyring_id')}, expected {keyring_id})",
                hint="each keyring has its own store; do not copy stores between keyrings",
            )

    @property
    def keyring_id(self) -> str:
        return self._keyring_id

    @property
    def path(self) -> Path:
        return self._path

    @property
    def read_only(self) -> bool:
        """Opened for reading only: every write is refused (an unsealed keyring, which
        writes its lease, refuses such a store)."""
        return self._read_only

    def _error(self, exc: sqlite3.Error) -> KeysplitError:
        """sqlite3's error (a full disk, a lock held past the timeout, a damaged file) as
        the library's: its message names no value, only what failed. A lock another
        writer held past the busy timeout reads as the PostgreSQL store's lock wait
        (:func:`~keysplit.store.rules.lock_waited`), not sqlite3's 'database is locked'."""
        code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
        if code == sqlite3.SQLITE_READONLY and self._read_only:
            return KeyringError(
                f"key store {self._path}: opened for reading only, so it takes no writes; "
                "nothing was changed",
                hint="open the store for writing (without read_only=True)",
            )
        if code == sqlite3.SQLITE_BUSY:
            waited = _BUSY_MS
            with contextlib.suppress(sqlite3.Error):
                waited = int(self._db.execute("PRAGMA busy_timeout").fetchone()[0])
            return _rules.lock_waited(f"key store {self._path}", waited / 1000)
        if isinstance(exc, sqlite3.OperationalError) and str(exc).startswith(_ALTERED):
            # as the PostgreSQL store says it (a table or column dropped by hand)
            return _rules.changed_by_hand(
                f"key store {self._path}", f"it is not as keysplit made it ({exc})"
            )
        return KeyringError(f"key store {self._path}: {exc}")

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """The store's lock, with sqlite3's errors raised as :class:`KeyringError`."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise self._error(exc) from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            with self._reading():
                self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
                self._depth = 0
                self._db.execute("COMMIT")
                if self._unerased:  # a shred's erase left pending (or shred in a transaction)
                    # one try that does not wait: while a reader keeps its snapshot for long
                    # (a backup), a waiting try cost every write its wait, under the lock
                    with contextlib.suppress(KeyringError):  # the commit stands either way
                        self._checkpoint_once(0)
            except BaseException as exc:
                self._depth = 0
                # SQLite may have rolled back already (SQLITE_FULL, an I/O error): a second
                # ROLLBACK failed with "no transaction is active" and hid the cause
                with contextlib.suppress(sqlite3.Error):
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._error(exc) from None
                raise

    def get(self, subject: str) -> WrappedKey | None:
        with self._reading():
            row = self._db.execute(
                "SELECT subject, kek_version, wrapped FROM data_keys WHERE subject = ?",
                (subject,),
            ).fetchone()
        return WrappedKey(*row) if row else None

    def get_many(self, subjects: Sequence[str]) -> dict[str, WrappedKey]:
        return self._fetch_many(subjects)

    def _fetch_many(self, subjects: Sequence[str]) -> dict[str, WrappedKey]:
        out: dict[str, WrappedKey] = {}
        subjects = list(dict.fromkeys(subjects))
        with self._reading():
            for lo in range(0, len(subjects), _IN_CHUNK):
                chunk = subjects[lo : lo + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT subject, kek_version, wrapped FROM data_keys WHERE subject IN ({marks})"  # noqa: S608,E501 - placeholders only
                for row in self._db.execute(sql, chunk):
                    out[row[0]] = WrappedKey(*row)
        return out

    def insert_many(self, rows: Sequence[WrappedKey]) -> list[WrappedKey]:
        with self.transaction():
            _rules.check_insert(self._state(), {r.kek_version for r in rows})
            self._db.executemany(
                "INSERT OR IGNORE INTO data_keys (subject, kek_version, wrapped) VALUES (?, ?, ?)",
                [tuple(r) for r in rows],
            )
            stored = self._fetch_many([r.subject for r in rows])
        return [stored[r.subject] for r in rows]

    def replace_many(self, rows: Sequence[tuple[WrappedKey, WrappedKey]]) -> int:
        with self.transaction():
            _rules.check_replace(self._state(), {new.kek_version for _, new in rows})
            before = self._db.total_changes
            self._db.executemany(
                "UPDATE data_keys SET kek_version = ?, wrapped = ? "
                "WHERE subject = ? AND kek_version = ? AND wrapped = ?",
                [
                    (new.kek_version, new.wrapped, old.subject, old.kek_version, old.wrapped)
                    for old, new in rows
                    if old.subject == new.subject
                ],
            )
            return self._db.total_changes - before

    def delete(self, subject: str, tombstone: bytes | Sequence[bytes] | None = None) -> bool:
        return self.delete_many([subject], tombstone)

    def delete_many(
        self, subjects: Sequence[str], tombstone: bytes | Sequence[bytes] | None = None
    ) -> bool:
        wanted = _rules.delete_subjects(subjects)
        tags = _rules.tombstone_tags(tombstone)
        with self.transaction():
            db = self._db
            refusal = _rules.hold_refusal(s for s in wanted if db.execute(_HELD, (s,)).fetchone())
            if refusal is not None:
                raise refusal
            gone = sum(db.execute(_DELETE, (s,)).rowcount for s in wanted)
            if gone and tags:
                seq = self._state().tombstone_seq
                for tag in tags:
                    seq += 1
                    self._db.execute(
                        "INSERT INTO tombstones (seq, tag, time) VALUES (?, ?, ?)",
                        (seq, tag, time.time()),
                    )
                self._bump(tombstone_seq=seq)
            if gone:
                self._unerased = True  # the commit's own try (transaction) is the first
        if gone and self._unerased and not self._depth and not self.checkpoint(ERASE_WAIT):
            _log.warning(
                "key store %s: a shredded key's old page is still in the WAL or database "
                "file (another connection keeps an older snapshot open); the erase is "
                "retried after the next write and at close",
                self._path,
            )
        return gone > 0

    def _checkpoint_once(self, wait_ms: int = _ERASE_TRY_MS) -> bool:
        """One ``wal_checkpoint(TRUNCATE)`` try that waits at most ``wait_ms`` for readers
        (under the lock, outside any transaction): True if it finished, i.e. every frame is
        in the database file and the WAL is empty."""
        with self._reading():
            if self._depth or self._db.in_transaction:
                return False
            db = self._db
            db.execute(f"PRAGMA busy_timeout = {int(wait_ms)}")
            try:
                row = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.OperationalError:  # locked: the same as a busy result
                row = None
            finally:
                db.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
            done = row is not None and row[0] == 0
            if done:
                self._unerased = False
            return done

    def checkpoint(self, timeout: float = ERASE_WAIT) -> bool:
        """Copy every committed page out of the WAL into the database file and empty the
        WAL (what makes a shredded key's old page leave the live files), retrying for up
        to ``timeout`` seconds while another connection reads an older snapshot. True once
        done; False if it could not finish in time (the store retries after its next write
        and at close). The store's lock is not held between tries."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            if self._checkpoint_once():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def stale_batch(self, current_version: int, after: str, limit: int) -> list[WrappedKey]:
        with self._reading():
            rows = self._db.execute(
                "SELECT subject, kek_version, wrapped FROM data_keys "
                "WHERE kek_version != ? AND subject > ? ORDER BY subject LIMIT ?",
                (current_version, after, limit),
            ).fetchall()
        return [WrappedKey(*r) for r in rows]

    def stale_cuts(self, current_version: int, every: int) -> list[str]:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError("every must be a positive int")
        with self._reading():
            rows = self._db.execute(
                "SELECT subject FROM (SELECT subject, ROW_NUMBER() OVER (ORDER BY subject) AS rn,"
                " COUNT(*) OVER () AS n FROM data_keys WHERE kek_version != ?) "
                "WHERE rn % ? = 0 AND rn < n ORDER BY subject",
                (current_version, every),
            ).fetchall()
        return [r[0] for r in rows]

    def count_by_version(self) -> dict[int, int]:
        with self._reading():
            rows = self._db.execute(
                "SELECT kek_version, COUNT(*) FROM data_keys GROUP BY kek_version"
            ).fetchall()
        return {int(v): int(c) for v, c in rows}

    def set_legal_hold(self, subject: str, hold: bool) -> None:
        self.set_legal_holds([subject], hold)

    def set_legal_holds(self, subjects: Sequence[str], hold: bool) -> None:
        wanted = [(s,) for s in sorted(set(subjects))]
        if not wanted:
            return
        with self.transaction():
            if hold:
                self._db.executemany(
                    "INSERT OR IGNORE INTO legal_holds (subject) VALUES (?)", wanted
                )
            else:
                self._db.executemany("DELETE FROM legal_holds WHERE subject = ?", wanted)
            self._bump()

    def legal_holds(self) -> list[str]:
        with self._reading():
            return [r[0] for r in self._db.execute("SELECT subject FROM legal_holds ORDER BY 1")]

    def is_on_hold(self, subject: str) -> bool:
        with self._reading():
            row = self._db.execute(_HELD, (subject,)).fetchone()
        return row is not None

    def iter_subjects(self, batch_size: int = 1000) -> Iterator[list[WrappedKey]]:
        after = ""
        while True:
            with self._reading():
                rows = self._db.execute(
                    "SELECT subject, kek_version, wrapped FROM data_keys "
                    "WHERE subject > ? ORDER BY subject LIMIT ?",
                    (after, batch_size),
                ).fetchall()
            if not rows:
                return
            yield [WrappedKey(*r) for r in rows]
            after = rows[-1][0]

    # -- fleet state ------------------------------------------------------------------------

    def _state(self) -> KeyringState:
        row = self._db.execute(_STATE).fetchone()
        if row is None:  # deleted by hand (its creation wrote it): was a TypeError
            raise _rules.changed_by_hand(f"key store {self._path}", "it has no keyring_state row")
        e, cur, retired, rekeys, ts = row
        return KeyringState(e, cur, _rules.parse_retired(retired), rekeys, ts)

    def _bump(self, **changes: object) -> KeyringState:
        """Epoch + 1 and ``changes``, inside the caller's transaction."""
        st = self._state()._replace(**changes)  # type: ignore[arg-type]
        st = st._replace(epoch=st.epoch + 1)
        self._db.execute(
            "UPDATE keyring_state SET epoch = ?, current_kek = ?, retired = ?, rekeys = ?, "
            "tombstone_seq = ? WHERE id = 1",
            (st.epoch, st.current_kek, _rules.encode_retired(st.retired), st.rekeys,
             st.tombstone_seq),
        )  # fmt: skip
        return st

    def _in_tx(self, work: Callable[[], KeyringState]) -> KeyringState:
        with self.transaction():
            return work()

    def state(self) -> KeyringState:
        with self._reading():
            return self._state()

    @contextlib.contextmanager
    def admin_lock(self, timeout: float = ADMIN_WAIT) -> Iterator[None]:
        """``flock`` on ``<store>.admin-lock`` beside the database (never on the database
        file itself: closing another descriptor of it would drop SQLite's own locks)."""
        path = self._path.with_name(self._path.name + ".admin-lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise KeyringError(f"cannot open the key store's lock {path}: {exc.strerror}") from None
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise _rules.busy_admin(timeout) from None
                    time.sleep(0.01)
            yield
        finally:
            os.close(fd)  # releases the lock

    def set_current_kek(self, version: int) -> KeyringState:
        def work() -> KeyringState:
            _rules.check_rotate(self._state(), version)
            return self._bump(current_kek=version)

        return self._in_tx(work)

    def retire_kek(self, version: int) -> KeyringState:
        def work() -> KeyringState:
            st = self._state()
            (left,) = self._db.execute(
                "SELECT COUNT(*) FROM data_keys WHERE kek_version = ?", (version,)
            ).fetchone()
            refusal = _rules.retire_refusal(st, version, left, self._leases(live=True))
            if refusal is not None:
                raise refusal
            retired = tuple(sorted({*st.retired, version}))  # as stored (encode_retired)
            return self._bump(retired=retired)

        return self._in_tx(work)

    def note_rekey(self, rekey: str) -> KeyringState:
        def work() -> KeyringState:
            row = self._db.execute(_COUNTED_REKEY).fetchone()
            if row is not None and row[0] == rekey:
                return self._state()  # counted already (a rekey killed after its count)
            self._db.execute(_COUNT_REKEY, (rekey,))
            return self._bump(rekeys=self._state().rekeys + 1)

        return self._in_tx(work)

    def tombstones_since(self, seq: int, limit: int = 10_000) -> list[Tombstone]:
        with self._reading():
            rows = self._db.execute(
                "SELECT seq, tag, time FROM tombstones WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [Tombstone(*r) for r in rows]

    def has_tombstone(self, tags: Sequence[bytes]) -> bool:
        with self._reading():
            return any(
                self._db.execute("SELECT 1 FROM tombstones WHERE tag = ?", (t,)).fetchone()
                for t in tags
            )

    def renew_lease(self, lease: Lease, ttl: float) -> KeyringState:
        def work() -> KeyringState:
            self._db.execute(
                "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*lease[:-1], time.time() + ttl),
            )
            return self._state()

        return self._in_tx(work)

    def drop_lease(self, lease_id: str) -> None:
        with self.transaction():
            self._db.execute("DELETE FROM leases WHERE id = ?", (lease_id,))

    def _leases(self, *, live: bool) -> list[Lease]:
        where = " WHERE expires > ?" if live else " WHERE ? IS NOT NULL"
        rows = self._db.execute(_LEASE + where + " ORDER BY host, pid", (time.time(),))
        return [Lease(*r) for r in rows.fetchall()]

    def leases(self, *, live: bool = True) -> list[Lease]:
        with self._reading():
            return self._leases(live=live)

    def clock(self) -> float:
        """The store's clock (seconds since the epoch), which lease expiries are on: this
        host's, as every process sharing the file runs here."""
        return time.time()

    def close(self) -> None:
        """Close the database; any later call (also one that was waiting for the lock,
        from another thread) is a :class:`KeyringError`, not sqlite3's ProgrammingError."""
        with self._lock:
            if self._unerased and self._db is not _CLOSED:
                with contextlib.suppress(KeyringError):  # closing is never refused for it
                    if not self._checkpoint_once():
                        _log.warning(
                            "key store %s closed with a shredded key's erase unconfirmed: "
                            "SQLite checkpoints the WAL when its last connection closes",
                            self._path,
                        )
            self._db.close()
            self._db = _CLOSED

    def __repr__(self) -> str:
        return f"SQLiteKeyStore({str(self._path)!r}, keyring_id={self._keyring_id!r})"
