"""The PostgreSQL key store: wrapped data keys in a schema of a database you already run.

Tables (in schema ``keysplit``, or the URL's ``?schema=NAME``, so keyrings can share a
database)::

    keysplit_migrations (version int PK, description text, applied_at timestamptz)
    meta        (name text PK, value text)          format, keyring_id
    data_keys   (subject text COLLATE "C" PK, kek_version int, wrapped bytea)
    legal_holds (subject text COLLATE "C" PK)

Why it is shaped like this:

* ``COLLATE "C"``: subjects order by their UTF-8 bytes, as in SQLite and as Python
  orders ``str``, so the rewrap cursor (``stale_batch``) means the same on every store.
* Bulk paths are set-based, one round trip per step, not one per row: ``insert_many``
  COPYs into a session temp table and runs one ``INSERT ... SELECT ... ON CONFLICT DO
  NOTHING`` (in subject order, so two bulk inserters never deadlock); only when the row
  count shows conflicts does a second statement (a fresh READ COMMITTED snapshot, so it
  sees a racing writer's committed row) fetch the rows that won. ``replace_many`` is one
  ``UPDATE ... FROM`` whose WHERE compares the old row: PostgreSQL re-checks it against a
  concurrently updated row, so the compare-and-swap holds under races.
* Legal hold and delete: the delete statement itself checks the hold, and both
  ``delete`` and ``set_legal_hold`` first take a transaction advisory lock on the
  subject's bucket (one of 64, so a hold on tens of thousands of subjects stays within
  the server's lock table), so the check always sees a hold committed before it (a plain
  READ COMMITTED snapshot could miss one placed while the delete statement starts).
* Schema versioned by ``keysplit_migrations``; created with ``create=True`` under an
  advisory lock (two processes creating at once get one schema); bound to one keyring id.
  Upgraded by a writing open only: a ``read_only`` open of an older schema is refused,
  naming both versions (the upgrade writes; a standby or a SELECT-only role refuses it).
* Thread-safe: a psycopg-pool pool; every method runs in its own transaction on a pooled
  connection, retried on deadlock or serialization failure.
* A server that is down or unreachable fails a call within a stated bound: the URL's
  libpq ``connect_timeout`` (seconds), else the ``connect_timeout`` argument (default
  5 s). The call raises :class:`~keysplit.errors.StoreUnreachableError` naming the host
  and port (never a password) once no connection could be made for that long; the pool
  gives up reconnecting after the same bound and the next call tries afresh, so the
  first call after the server is back succeeds (no restart of the process). Without the
  bound every call waited the pool's 30 s, and calls after the server came back waited
  out its reconnect backoff (doubling, up to 5 minutes).

* A server that stops answering on an open connection (its backend stopped or hung, its
  host gone) fails a call within the URL's ``call_timeout`` (seconds, default 120):
  TCP keepalives and ``tcp_user_timeout`` (libpq's, set to the same bound unless the URL
  sets them) let the kernel give up on a vanished peer, and a watchdog shuts down the
  socket of a connection whose call outlives the bound (a stopped backend's kernel still
  acknowledges every packet: only the client can tell). The call raises
  :class:`~keysplit.errors.StoreUnreachableError` naming host and port; the connection is
  closed, so the pool discards it and the next call, once the server answers again, runs
  on a new one. Before, a stopped backend made a call wait for ever and a vanished host
  for ~15 minutes of TCP retransmissions. A wait for a lock that another writer holds (a
  long bulk insert holds the state lock) is bounded apart, by ``lock_timeout`` (0.8 of
  ``call_timeout``): it fails first, with a StoreUnreachableError that says so and that
  nothing was changed, not as a server that did not answer. So is an open's schema set-up
  queued behind another session's lock on the schema's tables (a ``VACUUM (FULL)``).

* Fleet state (migration 2): ``keyring_state`` (one row), ``tombstones``, ``leases`` and
  ``audit`` (the keyring's audit chain, one for every host). Every transaction that reads
  the state to guard a write (``insert_many``, ``replace_many``) takes a *shared*
  transaction advisory lock on the keyring; every one that changes it (rotate, retire,
  rekey, shred, hold) the *exclusive* one, always before any other lock, so a retire's
  count sees every insert that passed its check and lock order never deadlocks. A shared
  advisory lock is an entry in the lock table, not a row lock (no MultiXact writes on the
  hot insert path). State changes ``NOTIFY`` the channel ``ks_<schema>`` with the new
  epoch at commit; :meth:`PostgresKeyStore.wait_for_change` LISTENs on it, so processes
  learn of a shred or rotate as it commits. Leases expire on the server's clock.

What a shred leaves behind in PostgreSQL (dead tuples, WAL, backups) is in SECURITY.md.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import random
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import FormatError, KeyringError, KeysplitError, StoreUnreachableError
from . import rules as _rules
from .base import ADMIN_WAIT, KeyringState, Lease, LostInsertError, Tombstone, WrappedKey
from .url import check_store_url, postgres_call_timeout, postgres_conninfo

__all__ = ["PostgresKeyStore"]

SUBJECT_BUCKETS = 64
"""Most subject locks one transaction takes (:meth:`PostgresKeyStore._subject_locks`):
below PostgreSQL's default ``max_locks_per_transaction`` (64) times a few connections."""


def subject_bucket(subject: str) -> int:
    """The lock bucket of ``subject`` (0 to :data:`SUBJECT_BUCKETS` - 1), the same in every
    process and version: the first bytes of its UTF-8 SHA-256."""
    digest = hashlib.sha256(subject.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:4], "big") % SUBJECT_BUCKETS


FORMAT = "keysplit-keystore"
_T = TypeVar("_T")
_Conn = psycopg.Connection[Any]
_RETRIES = 8
# the server rolled the transaction back to end a deadlock or a serialization failure: the
# work runs again. SQLSTATEs, not classes: psycopg's DeadlockDetected (40P01) and
# SerializationFailure (40001) are not subclasses of its TransactionRollback (40000)
_ROLLED_BACK = frozenset({"40000", "40001", "40P01"})
_ROUNDS = 10  # insert_many re-inserts subjects shredded between its two statements
_SMALL = 64  # insert_many of up to this many rows: one pipelined round trip, no COPY
DEFAULT_TIMEOUT = 5.0  # seconds: the unreachable bound without connect_timeout in the URL
_BUSY_WAIT = 30.0  # seconds a call waits for a connection while the server is reachable
_WAKE_WAIT = 3.0  # seconds close() gives its wake notification (connection and answer)
RELISTEN = 30.0
"""Seconds :meth:`PostgresKeyStore.wait_for_change` polls after the server refused LISTEN
(a hot standby) before it asks again: a standby promoted to primary is listened on within
this bound, at the cost of one connection per bound while it stays a standby."""
# a server's refusals that pass (57P03 cannot_connect_now, 53300 too_many_connections)
_TRANSIENT = (
    "starting up",
    "shutting down",
    "recovery mode",
    "not yet accepting",
    "too many clients",
    "too many connections",
    "slots are reserved",
)

# (version, description, statements); {s} is the schema. Append, never edit.
MIGRATIONS: tuple[tuple[int, str, tuple[LiteralString, ...]], ...] = (
    (
        1,
        "meta, data_keys, legal_holds",
        (
            "CREATE TABLE {s}.meta (name text PRIMARY KEY, value text NOT NULL)",
            'CREATE TABLE {s}.data_keys (subject text COLLATE "C" PRIMARY KEY, '
            "kek_version integer NOT NULL, wrapped bytea NOT NULL)",
            'CREATE TABLE {s}.legal_holds (subject text COLLATE "C" PRIMARY KEY)',
        ),
    ),
    (
        2,
        "fleet state: keyring_state, tombstones, leases, audit",
        (
            "CREATE TABLE {s}.keyring_state (id integer PRIMARY KEY CHECK (id = 1), "
            "epoch bigint NOT NULL, current_kek integer NOT NULL, retired text NOT NULL, "
            "rekeys integer NOT NULL, tombstone_seq bigint NOT NULL)",
            "INSERT INTO {s}.keyring_state VALUES (1, 0, 0, '', 0, 0)",
            "CREATE TABLE {s}.tombstones (seq bigint PRIMARY KEY, tag bytea NOT NULL, "
            "time double precision NOT NULL)",
            "CREATE INDEX tombstones_tag ON {s}.tombstones (tag)",
            "CREATE TABLE {s}.leases (id text PRIMARY KEY, host text NOT NULL, "
            "pid integer NOT NULL, role text NOT NULL, current_kek integer NOT NULL, "
            "acked bigint NOT NULL, cached integer NOT NULL, expires double precision NOT NULL)",
            "CREATE TABLE {s}.audit (seq bigint PRIMARY KEY, line bytea NOT NULL)",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]
# the tables the migrations make: an open checks they are all there
_TABLES = frozenset(
    stmt.split(".", 1)[1].split(" ", 1)[0]
    for _, _, stmts in MIGRATIONS
    for stmt in stmts
    if stmt.startswith("CREATE TABLE")
) | {"keysplit_migrations"}

# What an open checks each table against (one catalogue query, :meth:`_check_catalogue`),
# so a table altered by hand fails the open instead of the first call that meets it: every
# column's type as format_type() names it (all of them NOT NULL; the subjects COLLATE "C",
# on which the rewrap cursor's order rests), and the writes keysplit makes to the table
# beyond SELECT (a role granted less opens for reading only: ``read_only``).
_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "keysplit_migrations": (
        ("version", "integer"),
        ("description", "text"),
        ("applied_at", "timestamp with time zone"),
    ),
    "meta": (("name", "text"), ("value", "text")),
    "data_keys": (("subject", "text"), ("kek_version", "integer"), ("wrapped", "bytea")),
    "legal_holds": (("subject", "text"),),
    "keyring_state": (
        ("id", "integer"),
        ("epoch", "bigint"),
        ("current_kek", "integer"),
        ("retired", "text"),
        ("rekeys", "integer"),
        ("tombstone_seq", "bigint"),
    ),
    "tombstones": (("seq", "bigint"), ("tag", "bytea"), ("time", "double precision")),
    "leases": (
        ("id", "text"),
        ("host", "text"),
        ("pid", "integer"),
        ("role", "text"),
        ("current_kek", "integer"),
        ("acked", "bigint"),
        ("cached", "integer"),
        ("expires", "double precision"),
    ),
    "audit": (("seq", "bigint"), ("line", "bytea")),
}
_C_COLLATED = frozenset({("data_keys", "subject"), ("legal_holds", "subject")})
_WRITES: dict[str, tuple[str, ...]] = {
    "meta": ("INSERT", "UPDATE"),  # the rekey counted last (note_rekey)
    "data_keys": ("INSERT", "UPDATE", "DELETE"),
    "legal_holds": ("INSERT", "DELETE"),
    "keyring_state": ("UPDATE",),
    "tombstones": ("INSERT",),
    "leases": ("INSERT", "UPDATE", "DELETE"),
    "audit": ("INSERT",),
}
_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")  # the query's columns, in this order
_CATALOGUE: LiteralString = (
    "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
    "a.atthasdef, co.collname, has_table_privilege(c.oid, 'SELECT'), "
    "has_table_privilege(c.oid, 'INSERT'), has_table_privilege(c.oid, 'UPDATE'), "
    "has_table_privilege(c.oid, 'DELETE'), current_user "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
    "LEFT JOIN pg_collation co ON co.oid = a.attcollation "
    "WHERE n.nspname = %s AND c.relkind = 'r'"
)


def _altered(rows: Sequence[tuple[Any, ...]]) -> list[str]:
    """What the catalogue ``rows`` (:data:`_CATALOGUE`) show altered by hand in keysplit's
    tables, one phrase each naming the table and column (empty: as keysplit made them).
    A column added by hand is harmless unless it is NOT NULL without a default (every
    insert would then fail)."""
    found: dict[str, dict[str, tuple[str, bool, bool, str | None]]] = {}
    for table, column, kind, notnull, hasdef, coll, *_ in rows:
        if column is not None:
            found.setdefault(table, {})[column] = (kind, notnull, hasdef, coll)
    faults: list[str] = []
    for table, columns in _COLUMNS.items():
        have = found.get(table)
        if have is None:
            continue  # a missing table is reported as such
        for column, kind in columns:
            got = have.get(column)
            if got is None:
                faults.append(f"table {table} has no column {column} ({kind})")
            elif got[0] != kind:
                faults.append(f"column {table}.{column} is {got[0]}, not {kind}")
            elif not got[1]:
                faults.append(f"column {table}.{column} may be null (keysplit made it NOT NULL)")
            elif (table, column) in _C_COLLATED and got[3] != "C":
                faults.append(f'column {table}.{column} is not COLLATE "C" (it is {got[3]})')
        names = {column for column, _ in columns}
        faults.extend(
            f"table {table} has a column {column} keysplit did not make, NOT NULL without "
            "a default (every insert would fail)"
            for column, (_, notnull, hasdef, _) in sorted(have.items())
            if column not in names and notnull and not hasdef
        )
    return faults


def _lacking(rows: Sequence[tuple[Any, ...]], *, read_only: bool) -> dict[str, list[str]]:
    """The privileges the role of the catalogue ``rows`` lacks, by table: SELECT on every
    table, and unless ``read_only`` the writes of :data:`_WRITES`."""
    has: dict[str, dict[str, bool]] = {}
    for row in rows:
        has[row[0]] = dict(zip(_PRIVILEGES, row[6:10], strict=True))
    lacking: dict[str, list[str]] = {}
    for table in _COLUMNS:
        if table not in has:
            continue
        need = ("SELECT",) if read_only else ("SELECT", *_WRITES.get(table, ()))
        if missing := [p for p in need if not has[table][p]]:
            lacking[table] = missing
    return lacking


# Per-connection staging tables (created once per pooled connection, emptied at commit).
_TEMP_TABLES: tuple[LiteralString, ...] = (
    'CREATE TEMP TABLE ks_in (subject text COLLATE "C" NOT NULL, '
    "kek_version integer NOT NULL, wrapped bytea NOT NULL) ON COMMIT DELETE ROWS",
    'CREATE TEMP TABLE ks_swap (subject text COLLATE "C" NOT NULL, old_version integer '
    "NOT NULL, old_wrapped bytea NOT NULL, new_version integer NOT NULL, "
    "new_wrapped bytea NOT NULL) ON COMMIT DELETE ROWS",
)
_COPY_IN = sql.SQL("COPY ks_in (subject, kek_version, wrapped) FROM STDIN (FORMAT BINARY)")
_COPY_SWAP = sql.SQL(
    "COPY ks_swap (subject, old_version, old_wrapped, new_version, new_wrapped) "
    "FROM STDIN (FORMAT BINARY)"
)
# COPY's binary format built by hand: 1.5-4x faster than a write_row() call per row
# (measured: 76 ms vs 20-49 ms per 10,000 rows, build included).
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_TRAILER = b"\xff\xff"
_COPY_CHUNK = 20_000  # rows per write: bounded memory for any call size
_FIELD = struct.Struct(">hi").pack  # (field count, length of the first field)
_INT_AND_LEN = struct.Struct(">iii").pack  # (4, int4 value, length of the next field)

_STATEMENTS: dict[str, LiteralString] = {
    "get_many": "SELECT subject, kek_version, wrapped FROM {s}.data_keys "
    "WHERE subject = ANY(%s::text[])",
    # rows were staged in subject order (no ORDER BY: a sort costs more than it saves)
    "insert": "INSERT INTO {s}.data_keys (subject, kek_version, wrapped) "
    "SELECT subject, kek_version, wrapped FROM ks_in ON CONFLICT (subject) DO NOTHING",
    # the stored row where it is not the one we asked for (NULL: gone again meanwhile)
    "winners": "SELECT t.subject, d.kek_version, d.wrapped FROM ks_in t "
    "LEFT JOIN {s}.data_keys d ON d.subject = t.subject "
    "WHERE d.subject IS NULL OR d.kek_version <> t.kek_version OR d.wrapped <> t.wrapped",
    # the swap's count and its transaction's id (a retry asks whether that committed)
    "replace": "WITH u AS (UPDATE {s}.data_keys d SET kek_version = w.new_version, "
    "wrapped = w.new_wrapped FROM ks_swap w WHERE d.subject = w.subject "
    "AND d.kek_version = w.old_version AND d.wrapped = w.old_wrapped RETURNING 1) "
    "SELECT count(*), txid_current() FROM u",
    "lock_subject": "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
    "lock_shared": "SELECT pg_advisory_xact_lock_shared(hashtextextended(%s, 0))",
    # a few new keys in one statement, guarded by the state in the same statement (its
    # snapshot is taken after the shared lock of the statement before it was granted)
    # (all rows or none: one row under a version the state refuses stores nothing); it
    # returns the state it decided on, which says why when nothing was stored
    "insert_small": "WITH st AS (SELECT epoch, current_kek, retired, rekeys, tombstone_seq "
    "FROM {s}.keyring_state), v AS (SELECT * FROM unnest(%s::text[], %s::int[], %s::bytea[]) "
    "AS v(s, k, w)), ok AS (SELECT bool_and((st.current_kek = 0 OR v.k = st.current_kek) "
    "AND NOT (v.k::text = ANY(string_to_array(st.retired, ',')))) AS fine FROM v, st), "
    "ins AS (INSERT INTO {s}.data_keys (subject, kek_version, wrapped) "
    "SELECT v.s, v.k, v.w FROM v, ok WHERE ok.fine ORDER BY v.s "
    "ON CONFLICT (subject) DO NOTHING) "
    "SELECT epoch, current_kek, retired, rekeys, tombstone_seq FROM st",
    # every spelling of a subject at once: all deleted, or none if any is held
    "delete": "WITH held AS (SELECT subject FROM {s}.legal_holds "
    "WHERE subject = ANY(%(s)s::text[])), "
    "gone AS (DELETE FROM {s}.data_keys WHERE subject = ANY(%(s)s::text[]) "
    "AND NOT EXISTS (SELECT 1 FROM held) RETURNING 1) "
    "SELECT (SELECT array_agg(subject) FROM held), (SELECT count(*) FROM gone), txid_current()",
    # subject (bucket) locks in one statement, in the order given
    "lock_subjects": "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) "
    "FROM unnest(%s::text[]) AS k",
    "stale": "SELECT subject, kek_version, wrapped FROM {s}.data_keys "
    "WHERE kek_version <> %s AND subject > %s ORDER BY subject LIMIT %s",
    "page": "SELECT subject, kek_version, wrapped FROM {s}.data_keys "
    "WHERE subject > %s ORDER BY subject LIMIT %s",
    "counts": "SELECT kek_version, count(*) FROM {s}.data_keys GROUP BY kek_version",
    # "a next row exists" (lead) and not "rn < count(*) OVER ()": a count over the whole
    # window keeps every row until the end (spilled to disk past work_mem; 100,000 keys:
    # ~100 ms instead of ~55 ms), and the plan waits for it before any partition starts
    "cuts": "SELECT subject FROM (SELECT subject, row_number() OVER w AS rn, "
    "lead(true) OVER w AS more FROM {s}.data_keys WHERE kek_version <> %s "
    "WINDOW w AS (ORDER BY subject)) t WHERE mod(rn, %s) = 0 AND more ORDER BY subject",
    "holds_set": "INSERT INTO {s}.legal_holds (subject) SELECT unnest(%s::text[]) "
    "ON CONFLICT DO NOTHING",
    "holds_lift": "DELETE FROM {s}.legal_holds WHERE subject = ANY(%s::text[])",
    "holds": "SELECT subject FROM {s}.legal_holds ORDER BY subject",
    "is_held": "SELECT 1 FROM {s}.legal_holds WHERE subject = %s",
    # whether backend %s still holds the transaction advisory lock on key %s (a bigint key
    # is classid, objid: its high and low halves; objsubid 1)
    "holds_lock": "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
    "AND pid = %s AND granted AND mode = 'ExclusiveLock' AND objsubid = 1 "
    "AND ((classid::bigint << 32) | objid::bigint) = hashtextextended(%s, 0))",
    "state": "SELECT epoch, current_kek, retired, rekeys, tombstone_seq FROM {s}.keyring_state",
    "bump": "UPDATE {s}.keyring_state SET epoch = epoch + 1, current_kek = %s, retired = %s, "
    "rekeys = %s, tombstone_seq = %s RETURNING epoch",
    "tombstone": "INSERT INTO {s}.tombstones (seq, tag, time) "
    "VALUES (%s, %s, extract(epoch FROM clock_timestamp()))",
    "tombstones": "SELECT seq, tag, time FROM {s}.tombstones WHERE seq > %s ORDER BY seq LIMIT %s",
    "has_tombstone": "SELECT 1 FROM {s}.tombstones WHERE tag = ANY(%s::bytea[]) LIMIT 1",
    "count_version": "SELECT count(*) FROM {s}.data_keys WHERE kek_version = %s",
    "renew": "INSERT INTO {s}.leases (id, host, pid, role, current_kek, acked, cached, expires) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, extract(epoch FROM clock_timestamp()) + %s) "
    "ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
    "role = excluded.role, current_kek = excluded.current_kek, acked = excluded.acked, "
    "cached = excluded.cached, expires = excluded.expires",
    "drop_lease": "DELETE FROM {s}.leases WHERE id = %s",
    "clock": "SELECT extract(epoch FROM clock_timestamp())",
    "leases": "SELECT id, host, pid, role, current_kek, acked, cached, expires FROM {s}.leases "
    "WHERE NOT %s OR expires > extract(epoch FROM clock_timestamp()) ORDER BY host, pid",
    "audit_last": "SELECT seq, line FROM {s}.audit ORDER BY seq DESC LIMIT 1",
    "audit_add": "INSERT INTO {s}.audit (seq, line) VALUES (%s, %s) RETURNING txid_current()",
    "audit_all": "SELECT line FROM {s}.audit ORDER BY seq",
    "audit_from": "SELECT line FROM {s}.audit WHERE seq >= %s ORDER BY seq",
    # the share set of the rekey counted last (note_rekey: each rekey is counted once)
    "counted_rekey": "SELECT value FROM {s}.meta WHERE name = 'counted_rekey'",
    "count_rekey": "INSERT INTO {s}.meta (name, value) VALUES ('counted_rekey', %s) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    # each transaction id's fate: committed, aborted, in progress, or NULL (too old)
    "txid_status": "SELECT x, txid_status(x) FROM unnest(%s::bigint[]) AS x",
}


_LOCK_SHARE = 0.8  # of call_timeout: a longer wait for a lock fails as a lock wait


def _pg_ms(seconds: float) -> str:
    """``seconds`` as a PostgreSQL ``lock_timeout`` value: whole milliseconds, at least 1
    (0 would mean no bound)."""
    return f"{max(1, math.floor(seconds * 1000))}ms"


def _statuses(conn: _Conn, stmt: sql.Composed, xids: Sequence[int]) -> dict[int, str | None]:
    """``txid_status`` of each of ``xids`` (``stmt``: the store's "txid_status")."""
    return {int(x): status for x, status in conn.execute(stmt, (list(xids),)).fetchall()}


def _note_xid(conn: _Conn, xids: list[int]) -> None:
    """Add the id of ``conn``'s transaction to ``xids`` (each attempt's, of one call)."""
    row = conn.execute("SELECT txid_current()").fetchone()
    xids.append(int(row[0]) if row else 0)


def _configure(conn: _Conn, lock_timeout: str, read_only: bool) -> None:
    """Set up a pooled connection: its bulk writes' temporary tables, or, for a store opened
    for reading only, none (a read-only role, a standby, or ``default_transaction_read_only``
    cannot create them, and reading never uses them) and a session whose transactions are
    all read-only, so the server refuses every write through it (SQLSTATE 25006), as
    SQLite's ``query_only`` does: a role that may write (the owner) no longer can."""
    if read_only:
        _read_only_session(conn)
    else:
        for stmt in _TEMP_TABLES:
            conn.execute(stmt)
    # a call queued behind another writer's lock (a long insert_many holding the state
    # lock) fails as such, before the watchdog would take it for a server not answering
    conn.execute("SELECT set_config('lock_timeout', %s, false)", (lock_timeout,))


def _read_only_session(conn: _Conn) -> None:
    """Make every later transaction of ``conn``'s session read-only (a session setting, set
    outside a transaction so it stays; harmless on a standby, where it is so already)."""
    conn.execute("SELECT set_config('default_transaction_read_only', 'on', false)")


def _copy_in_rows(rows: Sequence[WrappedKey]) -> Iterator[bytes]:
    """Binary COPY data for ks_in, in chunks."""
    yield _COPY_HEADER
    for lo in range(0, len(rows), _COPY_CHUNK):
        parts: list[bytes] = []
        for subject, version, wrapped in rows[lo : lo + _COPY_CHUNK]:
            s = subject.encode()
            parts += (_FIELD(3, len(s)), s, _INT_AND_LEN(4, version, len(wrapped)), wrapped)
        yield b"".join(parts)
    yield _COPY_TRAILER


def _copy_swap_rows(pairs: Sequence[tuple[WrappedKey, WrappedKey]]) -> Iterator[bytes]:
    """Binary COPY data for ks_swap, in chunks."""
    yield _COPY_HEADER
    for lo in range(0, len(pairs), _COPY_CHUNK):
        parts: list[bytes] = []
        for old, new in pairs[lo : lo + _COPY_CHUNK]:
            s = old.subject.encode()
            parts += (
                _FIELD(5, len(s)),
                s,
                _INT_AND_LEN(4, old.kek_version, len(old.wrapped)),
                old.wrapped,
                _INT_AND_LEN(4, new.kek_version, len(new.wrapped)),
                new.wrapped,
            )
        yield b"".join(parts)
    yield _COPY_TRAILER


# SQLSTATEs of a connection the server ended or lost (class 08, an operator's shutdown or
# termination of the backend, a crash restart): the change's fate is unknown
_LOST = ("08", "57P01", "57P02", "57P03")


def _db_error(
    exc: psycopg.Error,
    where: str = "",
    schema: str = "",
    *,
    read: bool = False,
    read_only: bool = False,
) -> KeysplitError:
    """A secret-free error for what the server said, in one sentence naming the store
    (``where``: host, port, database; never a password) and saying whether anything was
    changed, with the fix as a hint: the primary message only (DETAIL may quote row
    values). Its class says what to do: :class:`StoreUnreachableError` for a condition
    that passes (a lost connection, a cancelled statement, conflicts), :class:`FormatError`
    for a schema altered by hand, :class:`KeyringError` for a URL or role to fix. ``read``:
    the call changes nothing, so a lost connection's outcome is known (nothing changed).
    ``read_only``: the store was opened for reading only, so a write the server refused
    as read-only (25006) is refused for that, in the words the SQLite store uses."""
    diag = getattr(exc, "diag", None)
    msg = (diag.message_primary if diag is not None else None) or str(exc).split("\n")[0]
    msg = msg.strip()
    store = f"PostgreSQL key store at {where}" if where else "PostgreSQL key store"
    state = exc.sqlstate or ""
    if state.startswith(_LOST) or (isinstance(exc, psycopg.OperationalError) and not state):
        if read:  # nothing was in flight: the outcome is known
            return StoreUnreachableError(
                f"{store}: the connection was lost during a read ({msg}); nothing was changed",
                hint="check that the server is up; keysplit connects again by itself, so try "
                "again once it is",
            )
        lost = StoreUnreachableError(
            f"{store}: the connection was lost ({msg}); whether a change in flight was "
            "made is unknown",
            hint="check that the server is up; keysplit connects again by itself, so try "
            "again once it is (a shred or rotation: check its outcome first)",
        )
        lost.lost_connection = True  # type: ignore[attr-defined]  # see _rolled_back
        return lost
    if state == "57014":  # query_canceled: statement_timeout, or pg_cancel_backend
        return StoreUnreachableError(
            f"{store}: the server cancelled the call ({msg}); nothing was changed",
            hint="try again; if it keeps happening, raise the statement_timeout set on "
            "the role or database (keysplit bounds its own calls with call_timeout=N)",
        )
    if state in _ROLLED_BACK:
        return StoreUnreachableError(
            f"{store}: the call kept conflicting with other writers ({msg}); nothing was changed",
            hint="try again once fewer processes write to this keyring at once",
        )
    if state == "42501":  # insufficient_privilege
        return KeyringError(
            f"{store}: the store URL's role may not do what keysplit needs ({msg}); "
            "nothing was changed",
            hint=f"grant the role USAGE on schema {schema!r} and SELECT, INSERT, UPDATE and "
            "DELETE on its tables (CREATE on the database to create the store), or use the "
            "role that created the store",
        )
    if state == "25006" and read_only:  # the store's own read-only sessions (or a standby)
        return KeyringError(f"{store}: {_OPENED_READ_ONLY}", hint=_OPENED_READ_ONLY_FIX)
    if state == "25006":  # read_only_sql_transaction: a standby, or a read-only role
        return KeyringError(f"{store}: {_READ_ONLY}; nothing was changed", hint=_READ_ONLY_FIX)
    if state in ("42P01", "42703", "42883", "42804", "3F000"):
        return _rules.changed_by_hand(
            store, f"schema {schema!r} is not as keysplit made it ({msg})", _OWN_SCHEMA
        )
    return KeyringError(f"{store}: {msg}")


_OWN_SCHEMA = ", or point ?schema=NAME at the store's own schema"
# a write through a store opened read_only: as the SQLite store says it
_OPENED_READ_ONLY = "opened for reading only, so it takes no writes; nothing was changed"
_OPENED_READ_ONLY_FIX = "open the store for writing (without read_only=True)"
_READ_ONLY = (
    "the server accepts no writes (a read-only replica, or default_transaction_read_only "
    "= on for the role or database)"
)
_READ_ONLY_FIX = (
    "point the store URL at the primary (target_session_attrs=read-write lists several "
    "hosts and picks it), or turn default_transaction_read_only off for keysplit's role"
)


class _Reach:
    """What the pool's connection attempts met: ``error`` is the last attempt's failure
    (None after a success), ``pending`` the attempts under way. Written by the pool's
    connection class (:func:`_recording`), read by a call that got no connection."""

    __slots__ = ("error", "lock", "pending")

    def __init__(self) -> None:
        self.error: psycopg.OperationalError | None = None
        self.pending = 0
        self.lock = threading.Lock()  # the pool connects from several worker threads


def _recording(reach: _Reach) -> type[_Conn]:
    """A connection class for the pool that notes each connection attempt in ``reach``."""

    class Connection(psycopg.Connection[Any]):
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
            with reach.lock:
                reach.pending += 1
            error = None
            try:
                return super().connect(conninfo, **kwargs)
            except psycopg.OperationalError as exc:
                error = exc
                raise
            finally:
                with reach.lock:
                    reach.pending -= 1
                    reach.error = error

    return Connection


# libpq's TCP settings unless the URL has its own: a peer that vanished is noticed by the
# kernel (keepalives on an idle connection, tcp_user_timeout on unacknowledged data)
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
               "keepalives_count": 3}  # fmt: skip


class _Watch:
    """One call's deadline on one connection; ``fired`` once the watchdog ended it.
    ``sock`` is a duplicate of the connection's socket taken when the call was armed: the
    watchdog shuts that down, never whatever socket holds the connection's descriptor
    number by then (libpq may have closed it and another thread reused the number)."""

    __slots__ = ("deadline", "fired", "sock")

    def __init__(self, sock: socket.socket | None, deadline: float) -> None:
        self.sock, self.deadline, self.fired = sock, deadline, False


def _dup_socket(conn: _Conn) -> socket.socket | None:
    """A duplicate of the connection's socket (None if it has none: the call fails anyway)."""
    try:
        return socket.socket(fileno=os.dup(conn.fileno()))
    except (OSError, psycopg.Error, ValueError):
        return None


VACUUM_FULL_LOCK_WAIT = 5.0
"""Seconds :meth:`PostgresKeyStore.vacuum` with ``full=True`` waits for its exclusive lock:
every other call on the key tables queues behind that wait, so it is short."""
_STOP_WAIT = 5.0
"""How long :meth:`_Watchdog.stop` waits for its thread (it ends at once unless it is in
the middle of shutting a socket down)."""


class _Watchdog:
    """Ends the calls that outlive their bound: shuts down their connection's socket, so
    the blocked call fails at once (as if the server had dropped it), whatever the server
    does. One daemon thread per store, started on first use, looking every ``tick``
    seconds; arming a call costs a dict insert and a duplicate of the connection's
    descriptor (two system calls, against a network round trip), no thread."""

    def __init__(self, tick: float, name: str) -> None:
        self._tick, self._name = tick, name
        self._lock = threading.Lock()
        self._armed: dict[int, _Watch] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def bound(self, conn: _Conn, seconds: float) -> Iterator[_Watch]:
        """Arm a deadline ``seconds`` from now for the ``with`` body's use of ``conn``;
        if it fired, ``conn`` is closed on the way out (the pool then discards it)."""
        watch = _Watch(_dup_socket(conn), time.monotonic() + seconds)
        with self._lock:
            self._armed[id(watch)] = watch
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, daemon=True, name=self._name)
                self._thread.start()
        try:
            yield watch
        finally:
            with self._lock:  # the watchdog shuts down under the lock: then sock is unused
                self._armed.pop(id(watch), None)
            if watch.sock is not None:
                watch.sock.close()
            if watch.fired:
                with contextlib.suppress(Exception):
                    conn.close()

    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            now = time.monotonic()
            with self._lock:  # held while shutting down: a disarmed call is never cut
                if not self._armed:  # idle: end (the next call starts it again), so a
                    self._thread = None  # store nobody closes leaves no thread behind
                    return
                for watch in self._armed.values():
                    if not watch.fired and now >= watch.deadline:
                        watch.fired = True
                        _shutdown(watch.sock)

    def stop(self) -> None:
        """End the thread and wait for it (bounded): a closed store leaves none behind."""
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_STOP_WAIT)


def _shutdown(sock: socket.socket | None) -> None:
    """Shut a connection's socket down in both directions (through the call's duplicate of
    its descriptor: the connection's own stays open until it is closed): a thread blocked
    reading or writing it returns at once with an error."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _where(params: dict[str, Any]) -> str:
    """Where libpq connects, for messages: host(s), port(s) and database of the URL, nothing
    else (the URL never holds a password: :func:`check_store_url` refuses one)."""
    host = params.get("host") or params.get("hostaddr") or "the default local socket"
    port, db = params.get("port"), params.get("dbname")
    return f"host {host}" + (f", port {port}" if port else "") + (f", database {db}" if db else "")


class PostgresKeyStore:
    """PostgreSQL-backed :class:`~keysplit.store.KeyStore`. Thread-safe (connection pool).

    ``url`` is a ``postgresql://`` libpq URI without a password (libpq's environment,
    ``~/.pgpass`` or ``PGPASSFILE`` supply it), optionally with ``schema=NAME``. With
    ``create`` the schema and tables are made if missing; either way the schema must
    belong to ``keyring_id``.

    ``connect_timeout`` (seconds; the URL's ``connect_timeout=N`` wins) bounds how long
    a call waits for a server that is down or unreachable before it raises
    :class:`~keysplit.errors.StoreUnreachableError`; the store reconnects by itself once
    the server is back. A reachable server whose pooled connections are all busy is
    waited for up to 30 s, then a StoreUnreachableError says so. A call on an open
    connection that gets no answer within the URL's ``call_timeout=N`` (seconds, default
    120) raises
    :class:`~keysplit.errors.StoreUnreachableError` too (whether a change in flight
    committed is then unknown, as with any lost connection).

    The open checks the schema's tables and columns against what keysplit made
    (:class:`~keysplit.errors.FormatError` naming the table and column altered by hand)
    and the role's privileges (:class:`~keysplit.errors.KeyringError` naming the table,
    the privilege and the GRANT): SELECT on every table, and the writes keysplit makes
    unless ``read_only`` (a role granted SELECT only can then read: counts, state, the
    audit chain; a write is refused by the server). A server whose transactions are
    read-only (a standby, ``default_transaction_read_only``) is refused at a writing open,
    naming the setting; opened ``read_only``, it reads (no staging tables are made).
    """

    def __init__(
        self,
        url: str,
        keyring_id: str,
        *,
        create: bool = False,
        pool_size: int = 4,
        connect_timeout: float = DEFAULT_TIMEOUT,
        read_only: bool = False,
    ) -> None:
        self._read_only = read_only
        self._url = check_store_url(url)
        conninfo, self._schema = postgres_conninfo(self._url)
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            raise _db_error(exc) from None
        self._where = _where(params)
        with contextlib.suppress(ValueError):  # libpq says what is wrong with it below
            if float(str(params.get("connect_timeout") or 0)) > 0:
                connect_timeout = float(str(params["connect_timeout"]))
        if not connect_timeout > 0:
            raise ValueError("connect_timeout must be a positive number of seconds")
        # libpq takes whole seconds, at least 2 (it reads 1 as 2)
        self._timeout = max(2.0, float(connect_timeout))
        self._reach = _Reach()
        self._call_timeout = postgres_call_timeout(self._url)
        self._watchdog = _Watchdog(
            min(1.0, self._call_timeout / 4), f"keysplit-{self._schema}-watchdog"
        )
        self._keyring_id = keyring_id
        self._lock_prefix = f"keysplit/{self._schema}//subjects/"  # + a bucket number
        self._state_lock = f"keysplit/{self._schema}//state"  # no subject ends in "//state"
        self._admin_lock = f"keysplit/{self._schema}//admin"  # admin_lock: rotations
        self._channel = f"ks_{self._schema}"
        # this store's own channel: :meth:`wake` ends its listener's wait, no one else's
        self._wake_channel = f"ksw_{secrets.token_hex(16)}"
        self._conninfo, self._conn_kwargs = conninfo, None
        self._listener: _Conn | None = None
        self._listen_lock = threading.Lock()
        # the server refused LISTEN (a hot standby): wait_for_change polls until this
        # monotonic time (0.0: it listens), and wake() ends a poll's wait through this event
        self._no_listen = 0.0
        self._woken = threading.Event()
        # .conn: this thread's admin_lock connection and its server backend's pid
        self._admin_held = threading.local()
        ident = sql.Identifier(self._schema)
        self._sql = {k: sql.SQL(v).format(s=ident) for k, v in _STATEMENTS.items()}
        self._lock_wait = self._call_timeout * _LOCK_SHARE
        self._lock_timeout = _pg_ms(self._lock_wait)
        kwargs: dict[str, Any] = {"autocommit": True, "application_name": "keysplit"}
        if "connect_timeout" not in params:
            kwargs["connect_timeout"] = math.ceil(self._timeout)
        kwargs.update((k, v) for k, v in _KEEPALIVES.items() if k not in params)
        if "tcp_user_timeout" not in params:  # milliseconds, a C int for libpq (~24.8 days)
            kwargs["tcp_user_timeout"] = min(math.ceil(self._call_timeout * 1000), 2**31 - 1)
        self._conn_kwargs = kwargs
        try:  # first connection by hand: its error names the real cause, not a pool timeout
            first = psycopg.connect(conninfo, **kwargs)
        except psycopg.OperationalError as exc:
            raise self._unreachable(exc) from None
        except psycopg.Error as exc:
            raise self._error(exc) from None
        watch: _Watch | None = None
        try:
            with first as conn, self._watchdog.bound(conn, self._call_timeout) as watch:
                self._setup(conn, create)
        except psycopg.Error as exc:
            if watch is not None and watch.fired:
                raise self._silent() from None
            if isinstance(exc, psycopg.errors.LockNotAvailable):
                raise self._lock_waited(opening=True) from None
            raise self._error(exc) from None
        self._pool: ConnectionPool[_Conn] = ConnectionPool(
            conninfo,
            connection_class=_recording(self._reach),
            min_size=1,
            max_size=max(1, pool_size),
            kwargs=kwargs,
            configure=functools.partial(
                _configure, lock_timeout=self._lock_timeout, read_only=read_only
            ),
            # no check query on checkout (it would cost every call a round trip): a call
            # that meets a connection the server dropped retries on another (_tx)
            timeout=self._timeout,
            # give up reconnecting after the bound, so that the next call tries at once
            # (a backoff doubling to minutes kept calls failing after the server was back)
            reconnect_timeout=self._timeout,
            name=f"keysplit-{self._schema}",
            open=False,
        )
        try:  # the server can die after the first connection: the same bound, the same error
            self._pool.open(wait=True, timeout=self._timeout)
        except PoolTimeout:  # the pool has closed itself
            raise self._unreachable(self._reach.error, self._timeout) from None
        self._closed = threading.Event()

    # ------------------------------------------------------------------ schema

    def _setup(self, conn: _Conn, create: bool) -> None:
        schema = self._schema
        store = f"PostgreSQL key store at {self._where}"  # each error names it
        ident = sql.Identifier(schema)
        if self._read_only:  # its set-up only reads too (an older schema is refused below)
            _read_only_session(conn)
        with conn.transaction():
            # a wait behind another session's lock on the schema's tables (a VACUUM FULL,
            # a migration, a LOCK TABLE) fails as such, before the watchdog's bound
            row = conn.execute(
                "SELECT set_config('lock_timeout', %s, true), "
                "current_setting('transaction_read_only')",
                (self._lock_timeout,),
            ).fetchone()
            # a writing open only: each pooled connection's staging tables, and every write,
            # would fail; reading needs neither (keysplit status on a standby)
            if row and row[1] == "on" and not self._read_only:
                raise KeyringError(
                    f"PostgreSQL key store at {self._where}: {_READ_ONLY}; nothing was changed",
                    hint=_READ_ONLY_FIX,
                )
            conn.execute(self._sql["lock_subject"], (f"keysplit/{schema}",))
            has_schema = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)
            ).fetchone()
            has_log = conn.execute(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = 'keysplit_migrations'",
                (schema,),
            ).fetchone()
            applied = 0
            if not has_log:
                if not create:
                    raise KeyringError(
                        f"{store}: key store not found: no keysplit tables in schema {schema!r}",
                        hint="create the keyring with this store URL first",
                    )
                if has_schema:
                    others = conn.execute(
                        "SELECT count(*) FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname = %s",
                        (schema,),
                    ).fetchone()
                    if others and others[0]:
                        raise FormatError(
                            f"{store}: schema {schema!r} holds other tables: not a keysplit "
                            "key store",
                            hint="choose a schema of its own with ?schema=NAME",
                        )
                else:
                    conn.execute(sql.SQL("CREATE SCHEMA {s}").format(s=ident))
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE {s}.keysplit_migrations (version integer PRIMARY KEY, "
                        "description text NOT NULL, applied_at timestamptz NOT NULL "
                        "DEFAULT now())"
                    ).format(s=ident)
                )
            else:
                row = conn.execute(
                    sql.SQL("SELECT max(version) FROM {s}.keysplit_migrations").format(s=ident)
                ).fetchone()
                applied = int(row[0]) if row and row[0] is not None else 0
            if applied > SCHEMA_VERSION:
                raise FormatError(
                    f"{store}: key store schema {schema!r} has unsupported version {applied} "
                    f"(this keysplit knows up to {SCHEMA_VERSION})",
                    hint="upgrade keysplit",
                )
            if self._read_only and applied < SCHEMA_VERSION:  # upgrading it would write
                raise _rules.older_schema(
                    f"{store}: schema {schema!r}",
                    applied,
                    SCHEMA_VERSION,
                    f" as a role that may create tables in schema {schema!r}, on the primary",
                )
            for version, description, stmts in MIGRATIONS:
                if version > applied:
                    for stmt in stmts:
                        conn.execute(sql.SQL(stmt).format(s=ident))
                    conn.execute(
                        sql.SQL(
                            "INSERT INTO {s}.keysplit_migrations (version, description) "
                            "VALUES (%s, %s)"
                        ).format(s=ident),
                        (version, description),
                    )
            if applied == 0:
                conn.execute(
                    sql.SQL("INSERT INTO {s}.meta (name, value) VALUES (%s, %s), (%s, %s)").format(
                        s=ident
                    ),
                    ("format", FORMAT, "keyring_id", self._keyring_id),
                )
            # one query for tables, columns and privileges (it was tables alone): an
            # altered column or a missing grant fails here, not at the first call that
            # meets it (a ceremony's quorum typed in, then the first write refused)
            self._check_catalogue(conn.execute(_CATALOGUE, (schema,)).fetchall())
            meta = dict(conn.execute(sql.SQL("SELECT name, value FROM {s}.meta").format(s=ident)))
        if meta.get("format") != FORMAT:
            raise FormatError(f"{store}: schema {schema!r} is not a keysplit key store")
        if meta.get("keyring_id") != self._keyring_id:
            raise KeyringError(
                f"{store}: key store schema {schema!r} belongs to another keyring "
                f"({meta.get('keyring_id')}, expected {self._keyring_id})",
                hint="give each keyring its own schema: add ?schema=NAME to the store URL",
            )

    def _check_catalogue(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Refuse a schema altered by hand (a table dropped, a column dropped, retyped or
        made nullable: :class:`FormatError`) or a role that lacks a privilege a call will
        need (:class:`KeyringError` naming the tables, privileges and the GRANT)."""
        schema = self._schema
        store = f"PostgreSQL key store at {self._where}"
        if missing := sorted(_TABLES - {r[0] for r in rows}):  # else each call fails on its own
            raise _rules.changed_by_hand(
                store, f"schema {schema!r} lacks the table(s) {', '.join(missing)}", _OWN_SCHEMA
            )
        if faults := _altered(rows):
            raise _rules.changed_by_hand(
                store, f"schema {schema!r}: {'; '.join(faults)}", _OWN_SCHEMA
            )
        if lacking := _lacking(rows, read_only=self._read_only):
            role = str(rows[0][10])
            what = "; ".join(f"{', '.join(p)} on {t}" for t, p in lacking.items())
            grants = " ".join(
                f"GRANT {', '.join(p)} ON {schema}.{t} TO {role};" for t, p in lacking.items()
            )
            reads = (
                ""
                if self._read_only
                else ("; a role that only reads (keysplit status, audit verify) needs SELECT only")
            )
            raise KeyringError(
                f"{store}: the store URL's role {role!r} lacks {what} in schema {schema!r}; "
                "nothing was changed",
                hint=f"as the store's owner run: {grants} or use the role that created the "
                f"store{reads}",
            )

    # ------------------------------------------------------------------ plumbing

    def _unreachable(self, exc: psycopg.Error | None, waited: float | None = None) -> KeyringError:
        """The error of a failed connection: where (host, port: the URL has no password)
        and libpq's first line of why. :class:`StoreUnreachableError` unless the server
        answered with a lasting refusal (a wrong database, role or password: nothing to
        wait for), which stays a plain KeyringError. ``waited``: the seconds the call
        waited for a connection, named only then (or when libpq's own timeout expired): a
        connection refused at once was not "no connection within 5 s"."""
        why = str(exc).split("\n")[0].strip() if exc is not None else "no answer"
        if waited is None and "timeout expired" in why:
            waited = self._timeout
        # the server's lasting refusal (FATAL), or libpq's own: it asked for a password
        # that neither ~/.pgpass nor PGPASSWORD supplied (no "FATAL:": libpq ends it)
        refused = next(
            (why.rsplit(m, 1)[1].strip() for m in ("FATAL:", "fe_sendauth:") if m in why), None
        )
        if refused is not None and not any(m in why for m in _TRANSIENT):
            return KeyringError(
                f"PostgreSQL key store at {self._where} refused the connection: "
                f"{refused}; nothing was changed",
                hint="fix the store URL's database or user, or the role's password "
                "(from ~/.pgpass, PGPASSFILE or PGPASSWORD, never the URL) or pg_hba.conf",
            )
        within = f" (no connection within {waited:g} s)" if waited is not None else ""
        return StoreUnreachableError(
            f"PostgreSQL key store unreachable at {self._where}: {why}{within}",
            hint="check that the server is up and reachable; keysplit connects again by "
            "itself once it is (connect_timeout=N in the store URL sets this bound)",
        )

    def _silent(self, bound: float | None = None, *, read: bool = False) -> StoreUnreachableError:
        """The error of a call the watchdog ended: host and port, the bound, no secret.
        ``read``: the call changes nothing (no change in flight to be unsure of)."""
        fate = "" if read else "whether a change in flight committed is unknown; "
        return StoreUnreachableError(
            f"PostgreSQL key store at {self._where} did not answer within "
            f"{self._call_timeout if bound is None else bound:g} s (connection dropped)",
            hint=f"the server, its host or the network is stopped or overloaded; {fate}the "
            "next call uses a new connection (call_timeout=N in the store URL sets this bound)",
        )

    def _lock_waited(self, *, opening: bool = False) -> StoreUnreachableError:
        """The error of a call whose wait for a lock outlasted lock_timeout (a share of
        call_timeout): the server answered, another writer held the lock. ``opening``: the
        schema set-up of an open (the lock on a table of the schema, or another open's)."""
        look = (
            "; pg_stat_activity shows who holds it (the wait is "
            f"{_LOCK_SHARE:g} of call_timeout=N in the store URL)"
        )
        if not opening:  # as the SQLite store says it
            return _rules.lock_waited(
                f"PostgreSQL key store at {self._where}", self._lock_wait, look
            )
        return StoreUnreachableError(
            f"PostgreSQL key store at {self._where}: opening the store waited "
            f"{self._lock_wait:g} s for a lock on schema {self._schema!r} held by another "
            "session (a VACUUM FULL, a migration, a LOCK TABLE, or another process creating "
            "the schema); nothing was changed",
            hint=f"try again once that writer is done{look}",
        )

    @contextlib.contextmanager
    def _connection(self, limit: float | None = None) -> Iterator[_Conn]:
        """A pooled connection, or :class:`StoreUnreachableError` once none could be made
        within the bound. A reachable server whose connections are all in use by other
        calls is waited for up to ``_BUSY_WAIT``, then a StoreUnreachableError says so
        (nothing was changed). ``limit`` (seconds) shortens both."""
        start = time.monotonic()
        busy = _BUSY_WAIT if limit is None else min(_BUSY_WAIT, limit)
        wait = self._timeout if limit is None else min(self._timeout, limit)
        while True:
            try:
                conn = self._pool.getconn(timeout=wait)
                break
            except PoolTimeout:
                reach = self._reach
                if reach.error is not None or reach.pending:
                    raise self._unreachable(reach.error, wait) from None
                if time.monotonic() - start >= busy:
                    # a condition that passes, as a lock wait is: callers retry it (the
                    # service answers 503 at once, not a batch item by item waiting again)
                    raise StoreUnreachableError(
                        f"PostgreSQL key store at {self._where}: no free connection within "
                        f"{busy:g} s (every pooled connection stayed in use by other calls); "
                        "nothing was changed",
                        hint="try again; if it keeps happening, open the store with a larger "
                        "pool_size or run fewer calls at once in this process",
                    ) from None
        try:
            yield conn
        finally:
            self._pool.putconn(conn)

    def _tx(
        self,
        work: Callable[[_Conn], _T],
        *,
        idempotent: bool = True,
        pipeline: bool = False,
        limit: float | None = None,
        fresh: bool = False,
        read: bool = False,
    ) -> _T:
        """Run ``work`` in one transaction on a pooled connection; retry lost races.

        A connection the server dropped (restart, failover, a terminated backend) fails
        its first statement; the call is then retried on another connection (the pool
        discards the broken one). ``idempotent=False`` work (a shred: whether a key existed;
        an audit append) first checks the connection instead, so it never runs twice.
        ``pipeline``: the work's statements go out together (psycopg pipeline mode) as one
        *implicit* transaction, no BEGIN or COMMIT: the server runs everything up to the
        pipeline's one Sync as a single transaction (its transaction-scoped advisory locks
        held to the end, each statement a fresh READ COMMITTED snapshot), commits at the
        Sync, and rolls all of it back if a statement fails. One round trip when the work
        reads its results only after the pipeline ends (``conn.transaction()`` here cost
        three more: psycopg syncs after BEGIN, after COMMIT and on leaving the pipeline).
        ``limit`` (seconds) bounds each attempt's wait for a connection and its call, below
        their usual bounds. ``fresh`` (insert_many): a connection dropped once the work began
        raises :class:`LostInsertError` instead of running it again (the caller offers new
        rows: the same ones could bring back a key shredded after they committed).
        ``read``: the work only reads, so its errors say that nothing was changed.
        """
        if self._closed.is_set():
            raise KeyringError("key store is closed")
        for attempt in range(_RETRIES):
            started = False
            conn: _Conn | None = None
            watch: _Watch | None = None
            try:
                with (
                    self._connection(limit) as conn,
                    self._watchdog.bound(
                        conn, self._call_timeout if limit is None else limit
                    ) as watch,
                ):
                    if not idempotent:
                        ConnectionPool.check_connection(conn)
                    started = True
                    if pipeline:  # autocommit connection: one implicit transaction
                        with conn.pipeline():
                            return work(conn)
                    with conn.transaction():
                        return work(conn)
            except psycopg.Error as exc:
                if watch is not None and watch.fired:  # no answer within the bound
                    raise self._silent(limit, read=read) from None
                if isinstance(exc, psycopg.errors.LockNotAvailable):
                    raise self._lock_waited() from None
                if exc.sqlstate in _ROLLED_BACK:
                    if attempt == _RETRIES - 1:  # deadlock, serialization
                        raise self._error(exc, read=read) from None
                    time.sleep(random.uniform(0.001, 0.02) * (attempt + 1))  # jitter
                    continue
                dropped = conn is not None and (conn.broken or conn.closed)
                if (
                    not isinstance(exc, psycopg.OperationalError)
                    or not dropped
                    or (started and not idempotent)
                    or attempt == _RETRIES - 1
                ):
                    raise self._error(exc, read=read) from None
                if started and fresh:
                    raise LostInsertError(
                        f"PostgreSQL key store at {self._where}: the connection was lost "
                        "while new data keys were being stored; whether they were is unknown",
                        hint="offer new keys: a row that was stored is handed back",
                    ) from None
        raise AssertionError("unreachable")

    def _error(self, exc: psycopg.Error, *, read: bool = False) -> KeysplitError:
        """:func:`_db_error` for this store: where it is, its schema, whether it was opened
        for reading only."""
        return _db_error(exc, self._where, self._schema, read=read, read_only=self._read_only)

    def _check_staging(self) -> None:
        """Refuse a bulk write (it stages rows in the connection's temporary tables) or a
        VACUUM on a store opened for reading only, whose connections have no staging
        tables: said as the server's refusal of any other write is, not as the missing
        table the server would name (a schema "changed by hand")."""
        if self._read_only:
            raise KeyringError(
                f"PostgreSQL key store at {self._where}: {_OPENED_READ_ONLY}",
                hint=_OPENED_READ_ONLY_FIX,
            )

    @staticmethod
    def _copy(conn: _Conn, stmt: sql.SQL, chunks: Iterable[bytes]) -> None:
        with conn.cursor() as cur, cur.copy(stmt) as copy:
            for chunk in chunks:
                copy.write(chunk)

    @staticmethod
    def _nested_loops(conn: _Conn) -> None:
        """Join a staged batch to data_keys by index probes, never by hashing the table.

        Without this the planner hashes all of data_keys for every batch (it prices index
        probes at random_page_cost). Measured on PostgreSQL 15 (EXPLAIN ANALYZE, 10,000-row
        replace batch, 200,000 keys, loaded 2-core machine): hash join ~1.0 s, probes
        ~0.43 s; the hash grows with the table, the probes do not.
        """
        conn.execute("SET LOCAL enable_hashjoin = off")
        conn.execute("SET LOCAL enable_mergejoin = off")

    # ------------------------------------------------------------------ protocol

    @property
    def keyring_id(self) -> str:
        return self._keyring_id

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding this store's tables."""
        return self._schema

    @property
    def read_only(self) -> bool:
        """Opened for reading only (``read_only``): an unsealed keyring, which writes its
        lease, refuses such a store."""
        return self._read_only

    def get(self, subject: str) -> WrappedKey | None:
        return self.get_many([subject]).get(subject)

    def get_many(self, subjects: Sequence[str]) -> dict[str, WrappedKey]:
        if not subjects:
            return {}
        wanted = list(dict.fromkeys(subjects))

        def work(conn: _Conn) -> dict[str, WrappedKey]:
            cur = conn.execute(self._sql["get_many"], (wanted,), binary=True)
            return {r[0]: WrappedKey._make(r) for r in cur.fetchall()}  # fetchall: C speed

        return self._tx(work, read=True)

    def insert_many(self, rows: Sequence[WrappedKey]) -> list[WrappedKey]:
        if not rows:
            return []
        first: dict[str, WrappedKey] = {}
        for r in rows:
            first.setdefault(r.subject, r)  # a subject twice in one call: the first counts
        # subject order (UTF-8 bytes = code points = COLLATE "C"): two bulk inserters then
        # take their index locks in one order and do not deadlock (one would be retried)
        ordered = sorted(first.values())

        versions = {r.kek_version for r in ordered}
        if len(ordered) <= _SMALL:
            stored = self._insert_small(first, ordered, versions)
            return [stored[r.subject] for r in rows]
        self._check_staging()

        def work(conn: _Conn) -> dict[str, WrappedKey]:
            _rules.check_insert(self._guard(conn), versions)
            stored = dict(first)
            pending = ordered
            for _ in range(_ROUNDS):
                self._copy(conn, _COPY_IN, _copy_in_rows(pending))
                if conn.execute(self._sql["insert"]).rowcount == len(pending):
                    return stored  # every row was new: ours is what is stored
                self._nested_loops(conn)
                gone = []
                for s, v, w in conn.execute(self._sql["winners"], binary=True):
                    if v is None:
                        gone.append(first[s])  # the winner was shredded meanwhile: retry
                    else:
                        stored[s] = WrappedKey(s, v, w)
                if not gone:
                    return stored
                conn.execute("DELETE FROM ks_in")
                pending = sorted(gone)
            raise KeyringError("insert_many: subjects keep being shredded concurrently")

        stored = self._tx(work, fresh=True)
        return [stored[r.subject] for r in rows]

    def _insert_small(
        self, first: dict[str, WrappedKey], ordered: list[WrappedKey], versions: set[int]
    ) -> dict[str, WrappedKey]:
        """A few new keys in one round trip of three statements: the shared state lock;
        one guarded ``INSERT ... SELECT FROM unnest ... ON CONFLICT DO NOTHING`` that
        returns the state it decided on; the stored rows (a fresh snapshot: a racing
        writer's committed row wins). They go out together in pipeline mode as one
        implicit transaction (see :meth:`_tx`); the results are read after the commit.
        The state decides in SQL and is checked again here to say why nothing was stored."""
        stored = dict(first)
        pending = ordered
        for _ in range(_ROUNDS):

            def work(conn: _Conn, rows: list[WrappedKey] = pending) -> tuple[Any, Any]:
                subjects = [r.subject for r in rows]
                conn.execute(self._sql["lock_shared"], (self._state_lock,))
                state = conn.execute(
                    self._sql["insert_small"],
                    (subjects, [r.kek_version for r in rows], [r.wrapped for r in rows]),
                )
                return state, conn.execute(self._sql["get_many"], (subjects,), binary=True)

            state_cur, rows_cur = self._tx(work, pipeline=True, fresh=True)
            e, cur, retired, rekeys, ts = state_cur.fetchone()
            st = KeyringState(int(e), int(cur), _rules.parse_retired(retired), int(rekeys), int(ts))
            _rules.check_insert(st, versions)  # nothing was inserted if this raises
            got = {r[0]: WrappedKey._make(r) for r in rows_cur.fetchall()}
            stored.update(got)
            pending = [r for r in pending if r.subject not in got]  # shredded meanwhile
            if not pending:
                return stored
        raise KeyringError("insert_many: subjects keep being shredded concurrently")

    def replace_many(self, rows: Sequence[tuple[WrappedKey, WrappedKey]]) -> int:
        pairs: dict[str, tuple[WrappedKey, WrappedKey]] = {}
        for old, new in rows:
            if old.subject == new.subject:
                pairs.setdefault(old.subject, (old, new))
        if not pairs:
            return 0
        self._check_staging()
        staged = sorted(pairs.values())

        versions = {new.kek_version for _, new in staged}
        # each attempt whose swap ran: its transaction's id and its count. _tx runs the
        # work again on a new connection when one is dropped; when the server had committed
        # an earlier attempt (the client lost COMMIT's answer), the rows it swapped no
        # longer match and this attempt counts 0 for them, so the earlier count is added,
        # once the server says that attempt committed
        earlier: dict[int, int] = {}

        def work(conn: _Conn) -> int:
            _rules.check_replace(self._guard(conn), versions)
            self._copy(conn, _COPY_SWAP, _copy_swap_rows(staged))
            self._nested_loops(conn)
            row = conn.execute(self._sql["replace"]).fetchone()
            count, xid = (int(row[0]), int(row[1])) if row else (0, 0)
            done = count
            if earlier:  # final now: this swap waited for the row locks an earlier one held
                fate = _statuses(conn, self._sql["txid_status"], list(earlier))
                done += sum(n for x, n in earlier.items() if fate[x] == "committed")
            earlier[xid] = count
            return done

        return self._tx(work)

    def delete(self, subject: str, tombstone: bytes | Sequence[bytes] | None = None) -> bool:
        return self.delete_many([subject], tombstone)

    def delete_many(
        self, subjects: Sequence[str], tombstone: bytes | Sequence[bytes] | None = None
    ) -> bool:
        """One transaction: the exclusive state lock, each subject's bucket lock (as
        :meth:`set_legal_hold` takes it), then one statement that deletes every key
        unless one of the subjects is held."""
        wanted = _rules.delete_subjects(subjects)
        tags = _rules.tombstone_tags(tombstone)
        if not wanted:
            return False
        locks = self._subject_locks(wanted)
        xids: list[int] = []  # each attempt's transaction id (the delete statement's)
        done: list[bool] = []  # set once an attempt's work is all done: only COMMIT is left

        def work(conn: _Conn) -> bool:
            done.clear()
            st = self._exclusive(conn)
            conn.execute(self._sql["lock_subjects"], (locks,))
            row = conn.execute(self._sql["delete"], {"s": wanted}).fetchone()
            held, gone, xid = row if row else (None, 0, 0)
            xids.append(int(xid))
            refusal = _rules.hold_refusal(held or ())
            if refusal is not None:
                raise refusal
            if gone and tags:
                seq = st.tombstone_seq
                for tag in tags:
                    seq += 1
                    conn.execute(self._sql["tombstone"], (seq, tag))
                self._bump(conn, st._replace(tombstone_seq=seq))
            done.append(bool(gone))
            return bool(gone)

        try:
            return self._tx(work, idempotent=False)
        except KeyringError as exc:
            if not done:  # failed before COMMIT was sent: the server rolled it back
                raise self._rolled_back(exc) from None
            # the connection died (or the watchdog ended it) at COMMIT: did it commit?
            self._settle(
                exc,
                xids,
                f"a shred of {len(wanted)} subject key(s) was committing, and whether it committed",
                "shred again once the server answers: it deletes what is left (no key "
                "left: it reports none)",
            )
            return done[0]

    def stale_batch(self, current_version: int, after: str, limit: int) -> list[WrappedKey]:
        def work(conn: _Conn) -> list[WrappedKey]:
            cur = conn.execute(self._sql["stale"], (current_version, after, limit), binary=True)
            return list(map(WrappedKey._make, cur.fetchall()))

        return self._tx(work, read=True)

    def stale_cuts(self, current_version: int, every: int) -> list[str]:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError("every must be a positive int")

        def work(conn: _Conn) -> list[str]:
            return [r[0] for r in conn.execute(self._sql["cuts"], (current_version, every))]

        return self._tx(work, read=True)

    def count_by_version(self) -> dict[int, int]:
        def work(conn: _Conn) -> dict[int, int]:
            return {int(v): int(c) for v, c in conn.execute(self._sql["counts"])}

        return self._tx(work, read=True)

    def set_legal_hold(self, subject: str, hold: bool) -> None:
        self.set_legal_holds([subject], hold)

    def set_legal_holds(self, subjects: Sequence[str], hold: bool) -> None:
        """One transaction: the exclusive state lock, each subject's bucket lock (in order,
        as :meth:`delete_many` takes them), the holds placed or lifted, one epoch bump. A
        retry (the connection dropped) first asks whether an earlier attempt committed, as
        :meth:`note_rekey` does: the rows are idempotent, the bump is not. A failure once
        the change was made is resolved as :meth:`_settle` says."""
        wanted = sorted(set(subjects))
        if not wanted:
            return
        locks = self._subject_locks(wanted)
        xids: list[int] = []

        def work(conn: _Conn) -> KeyringState:
            st = self._exclusive(conn)
            if self._committed_before(conn, xids):
                return st
            conn.execute(self._sql["lock_subjects"], (locks,))
            conn.execute(self._sql["holds_set" if hold else "holds_lift"], (wanted,))
            _note_xid(conn, xids)
            return self._bump(conn, st)

        done = "placed" if hold else "lifted"
        self._tx_settled(
            work,
            xids,
            f"legal holds on {len(wanted)} subject(s) were being {done}, and whether that "
            "committed",
            f"have them {done} again once the server answers: doing it twice is harmless",
        )

    def _subject_locks(self, subjects: Iterable[str]) -> list[str]:
        """The advisory locks that guard ``subjects``' holds and deletes, in lock order: one
        per bucket (:func:`subject_bucket`), at most :data:`SUBJECT_BUCKETS` in all. A lock
        per subject put tens of thousands of entries in the server's shared lock table in
        one transaction (a rotation copying its holds), past ``max_locks_per_transaction``
        times the connections: 'out of shared memory'. A delete and a hold of one subject
        still take the same lock (coarser: subjects of one bucket wait for each other)."""
        return [self._lock_prefix + str(b) for b in sorted({subject_bucket(s) for s in subjects})]

    def legal_holds(self) -> list[str]:
        return self._tx(lambda conn: [r[0] for r in conn.execute(self._sql["holds"])], read=True)

    def is_on_hold(self, subject: str) -> bool:
        """Whether the subject is under legal hold (kept for parity with SQLiteKeyStore)."""
        return self._tx(
            lambda conn: conn.execute(self._sql["is_held"], (subject,)).fetchone() is not None,
            read=True,
        )

    def iter_subjects(self, batch_size: int = 1000) -> Iterator[list[WrappedKey]]:
        """Every stored key in batches ordered by subject (parity with SQLiteKeyStore)."""
        after = ""
        while True:
            page = self._tx(functools.partial(self._page, after=after, limit=batch_size), read=True)
            if not page:
                return
            yield page
            after = page[-1].subject

    def _page(self, conn: _Conn, after: str, limit: int) -> list[WrappedKey]:
        cur = conn.execute(self._sql["page"], (after, limit), binary=True)
        return list(map(WrappedKey._make, cur.fetchall()))

    def vacuum(self, *, full: bool = False) -> None:
        """VACUUM the key tables: after shredding, what is needed to get the bytes out.

        A delete leaves the row as a dead tuple; plain VACUUM frees its space (its bytes may
        stay in the page until overwritten), ``full=True`` rewrites the tables into new files
        (an exclusive lock for the duration; the old files go back to the file system).
        Needs table ownership. SECURITY.md says what WAL and backups still hold.

        Its bound: ``call_timeout`` does not apply (no watchdog: a ``VACUUM (FULL)`` of a
        large table may rightly run longer). A server host that vanishes is noticed by the
        kernel (keepalives, about 25 s unless the URL sets them; tcp_user_timeout for data
        never acknowledged) and fails the call; a backend that stops answering makes it wait
        for ever. Plain VACUUM waits for its lock as long as it takes (it takes none that
        ordinary calls wait for). ``full=True`` needs an exclusive lock on the tables: while
        it waits for every transaction using them (a long bulk insert or rewrap, a session
        idle in a transaction), every other call on them, from every process, queues behind
        it. So it waits at most :data:`VACUUM_FULL_LOCK_WAIT` seconds and then raises
        :class:`~keysplit.errors.KeyringError` (nothing was changed; run it again when no
        long transaction is open): the other calls are held that long at most.

        A store opened ``read_only`` refuses it, as every write: the server would run it
        (VACUUM is allowed in a read-only session), and ``full=True`` rewrites the tables.
        """
        if self._closed.is_set():
            raise KeyringError("key store is closed")
        self._check_staging()  # the same refusal as a write's
        stmt = (
            "VACUUM (FULL) {s}.data_keys, {s}.legal_holds"
            if full
            else ("VACUUM {s}.data_keys, {s}.legal_holds")
        )
        try:
            for attempt in range(_RETRIES):
                conn: _Conn | None = None
                try:
                    with self._connection() as conn:  # autocommit: VACUUM refuses a transaction
                        wait = _pg_ms(VACUUM_FULL_LOCK_WAIT) if full else "0"
                        conn.execute("SELECT set_config('lock_timeout', %s, false)", (wait,))
                        try:
                            conn.execute(sql.SQL(stmt).format(s=sql.Identifier(self._schema)))
                        finally:
                            conn.execute(
                                "SELECT set_config('lock_timeout', %s, false)",
                                (self._lock_timeout,),
                            )
                    return
                except psycopg.OperationalError:
                    # a pooled connection the server dropped (a restart): VACUUM is
                    # idempotent, so it runs again on another one, as _tx's calls do
                    if conn is None or not (conn.broken or conn.closed):
                        raise
                    if attempt == _RETRIES - 1:
                        raise
        except psycopg.errors.LockNotAvailable:
            raise KeyringError(
                f"PostgreSQL key store at {self._where}: VACUUM FULL did not get its exclusive "
                f"lock on the key tables within {VACUUM_FULL_LOCK_WAIT:g} s; nothing was changed",
                hint="another session holds a transaction on them open (a bulk insert, a "
                "rewrap, a session idle in a transaction): run it again when none is open",
            ) from None
        except psycopg.Error as exc:
            raise self._error(exc) from None

    # ------------------------------------------------------------------ fleet state

    def _read_state(self, conn: _Conn) -> KeyringState:
        row = conn.execute(self._sql["state"]).fetchone()
        if row is None:  # deleted by hand: every open store has one (its creation wrote it)
            raise _rules.changed_by_hand(
                f"PostgreSQL key store at {self._where}",
                f"schema {self._schema!r} has no keyring_state row",
                _OWN_SCHEMA,
            )
        e, cur, retired, rekeys, ts = row
        return KeyringState(int(e), int(cur), _rules.parse_retired(retired), int(rekeys), int(ts))

    def _guard(self, conn: _Conn) -> KeyringState:
        """The state, read under the shared lock (held to commit): a write it allows cannot
        be overtaken by a state change."""
        conn.execute(self._sql["lock_shared"], (self._state_lock,))
        return self._read_state(conn)

    def _exclusive(self, conn: _Conn) -> KeyringState:
        conn.execute(self._sql["lock_subject"], (self._state_lock,))
        self._check_admin_lock(conn)
        return self._read_state(conn)

    def _check_admin_lock(self, conn: _Conn) -> None:
        """In a thread inside :meth:`admin_lock`: refuse the change unless the lock's
        connection still holds the lock. Its backend may be gone (a network interruption
        that keepalives ended, a terminated backend): the server then released the lock,
        another process may have taken it, and this change would commit unguarded."""
        held: tuple[_Conn, int] | None = getattr(self._admin_held, "conn", None)
        if held is None:
            return
        holder, pid = held
        alive = not (holder.closed or holder.broken)
        if alive:
            row = conn.execute(self._sql["holds_lock"], (pid, self._admin_lock)).fetchone()
            alive = bool(row and row[0])
        if not alive:
            raise KeyringError(
                "this process lost the keyring's rotation lock: its PostgreSQL connection "
                "was dropped (a network interruption or a terminated backend), so the server "
                "released the lock; nothing was changed in the key store",
                hint="run the command again: it takes the lock afresh",
            )

    def _bump(self, conn: _Conn, st: KeyringState) -> KeyringState:
        """Write ``st`` with epoch + 1 and notify listeners (delivered at commit)."""
        row = conn.execute(
            self._sql["bump"],
            (st.current_kek, _rules.encode_retired(st.retired), st.rekeys, st.tombstone_seq),
        ).fetchone()
        epoch = int(row[0]) if row else st.epoch + 1
        conn.execute("SELECT pg_notify(%s, %s)", (self._channel, str(epoch)))
        return st._replace(epoch=epoch)

    def state(self) -> KeyringState:
        return self._tx(self._read_state, read=True)

    @contextlib.contextmanager
    def admin_lock(self, timeout: float = ADMIN_WAIT) -> Iterator[None]:
        """A transaction advisory lock on a connection of its own, held open (idle) for the
        ``with`` body; the server drops it with the session if this process dies. Every
        state change the body's thread makes (:meth:`set_current_kek`, ...) first checks,
        in its own transaction, that the lock's backend still holds it: a connection lost
        meanwhile (keepalives end an idle one after a network interruption) fails the
        change with a :class:`KeyringError` instead of committing it unguarded."""
        if self._closed.is_set():
            raise KeyringError("key store is closed")
        with self._connection() as conn:
            watch: _Watch | None = None
            try:  # the wait for the lock is bounded by lock_timeout, the answers by the watchdog
                with self._watchdog.bound(conn, timeout + self._call_timeout) as watch:
                    conn.execute("BEGIN")
                    # this transaction stays idle for the body by design: a DBA's
                    # idle_in_transaction_session_timeout (on the role or the database)
                    # would end the session mid-rotation, releasing the lock; it holds
                    # no snapshot (READ COMMITTED, between statements), so lifting the
                    # timeout for it keeps back no VACUUM. The backend's pid from the
                    # server: behind a pooler (pgbouncer) libpq's backend_pid is the
                    # pooler's own number, and the lock was never found under it
                    row = conn.execute(
                        "SELECT set_config('lock_timeout', %s, true), "
                        "set_config('idle_in_transaction_session_timeout', '0', true), "
                        "pg_backend_pid()",
                        (f"{max(1, int(timeout * 1000))}ms",),
                    ).fetchone()
                    pid = int(row[2]) if row else 0
                    conn.execute(self._sql["lock_subject"], (self._admin_lock,))
            except psycopg.Error as exc:
                if watch is not None and watch.fired:  # its bound: the lock wait and answers
                    raise self._silent(timeout + self._call_timeout) from None
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
                if isinstance(exc, psycopg.errors.LockNotAvailable):
                    raise _rules.busy_admin(timeout) from None
                raise self._error(exc) from None
            before = getattr(self._admin_held, "conn", None)
            # every change in the body checks it (_exclusive)
            self._admin_held.conn = (conn, pid)
            try:
                yield
            finally:
                self._admin_held.conn = before
                with (
                    self._watchdog.bound(conn, self._call_timeout),
                    contextlib.suppress(psycopg.Error),  # gone with the session otherwise
                ):
                    conn.execute("ROLLBACK")

    def set_current_kek(self, version: int) -> KeyringState:
        """As :meth:`KeyStore.set_current_kek`; a failure at or after COMMIT is resolved by
        the transaction's id. A connection that died while the server committed (the call
        was retried and met ``version`` already current: "another process rotated"), a
        refusal at COMMIT, a call the watchdog ended: once the attempt's transaction has
        ended (a shared state lock waits for it: it held the exclusive one to its end),
        ``txid_status`` says whether it committed. Committed: the call returns the state.
        Aborted: its error stands (nothing was changed). No answer: a
        :class:`StoreUnreachableError` saying that whether it committed is unknown."""
        xids: list[int] = []

        def work(conn: _Conn) -> KeyringState:
            st = self._exclusive(conn)
            _rules.check_rotate(st, version)
            _note_xid(conn, xids)
            return self._bump(conn, st._replace(current_kek=version))

        try:
            return self._tx(work)
        except KeyringError as exc:
            if not xids:  # no attempt got as far as the change: nothing was changed
                raise self._rolled_back(exc) from None
            st = self._committed(xids, version)
            if st is None:
                raise self._rolled_back(exc) from None
            return st

    def _committed_before(self, conn: _Conn, xids: list[int]) -> bool:
        """In a retried attempt holding the exclusive state lock: whether an earlier attempt
        of the same call (``xids``, noted by :func:`_note_xid`) committed. Final: each held
        that lock to its end. Its work must not be done again: the server committed it
        while the client lost the answer to COMMIT."""
        if not xids:
            return False
        return "committed" in _statuses(conn, self._sql["txid_status"], xids).values()

    def _outcome(self, xids: list[int], lock: str | None = None) -> tuple[str, KeyringState | None]:
        """Whether one of ``xids`` (transactions that held the exclusive state lock)
        committed: "committed", "aborted" (all of them), or "unknown" (the server cannot
        be asked now, or a transaction is too old to tell); and the state read with the
        answer. Asked under the shared state lock, granted once each of them has ended,
        so the answer is final. ``lock``: the exclusive advisory lock they held instead
        (the audit's), taken here for the same reason."""

        def work(conn: _Conn) -> tuple[list[str | None], KeyringState]:
            if lock is None:
                conn.execute(self._sql["lock_shared"], (self._state_lock,))
            else:
                conn.execute(self._sql["lock_subject"], (lock,))
            fate = _statuses(conn, self._sql["txid_status"], xids)
            return [fate[x] for x in xids], self._read_state(conn)

        try:
            statuses, st = self._tx(work)
        except KeyringError:
            return "unknown", None
        if "committed" in statuses:
            return "committed", st
        if statuses and all(s == "aborted" for s in statuses):  # None: too old to tell
            return "aborted", st
        return "unknown", st

    def _settle(
        self, exc: KeyringError, xids: list[int], what: str, hint: str, lock: str | None = None
    ) -> KeyringState:
        """After ``exc`` ended a call once its work was done (only COMMIT left): the state
        if one of ``xids`` committed, ``exc`` raised if all aborted, else a
        :class:`StoreUnreachableError` saying ``what`` ("... is unknown") with ``hint``."""
        outcome, st = self._outcome(xids, lock=lock)
        if outcome == "committed" and st is not None:
            return st
        if outcome == "aborted":
            raise self._rolled_back(exc) from None
        raise StoreUnreachableError(
            f"PostgreSQL key store at {self._where}: the connection was lost while {what} "
            "is unknown (the server could not be asked)",
            hint=hint,
        ) from None

    def _rolled_back(self, exc: KeyringError) -> KeyringError:
        """``exc`` of a change the server is known to have rolled back (COMMIT never sent,
        or its transaction aborted): a lost connection's error says the outcome is unknown,
        so it becomes a plain KeyringError that says nothing was changed (a refusal, as
        :meth:`KeyStore.set_current_kek` promises: a rotation puts its keyring file back).
        Any other error stands."""
        if not getattr(exc, "lost_connection", False):
            return exc
        return KeyringError(
            f"PostgreSQL key store at {self._where}: the connection was lost before the "
            "change committed, and the server rolled it back; nothing was changed",
            hint="run it again once the server answers",
        )

    def _committed(self, xids: list[int], version: int) -> KeyringState | None:
        """The state if one of ``xids`` committed, None if all of them aborted; a
        :class:`StoreUnreachableError` if the server cannot say (now)."""
        outcome, st = self._outcome(xids)
        if outcome == "committed":
            return st
        if outcome == "aborted":
            return None
        raise StoreUnreachableError(
            f"PostgreSQL key store at {self._where}: the connection was lost while KEK "
            f"version {version} was being made current, and whether that committed is "
            "unknown (the server could not be asked)",
            hint="rotate again once the server answers: the keyring file holds the new "
            "version either way, and the next rotation follows what the store recorded",
        )

    def retire_kek(self, version: int) -> KeyringState:
        """As :meth:`KeyStore.retire_kek`, committed once per call. :meth:`_tx` runs the
        work again on a new connection when one is dropped: a server that committed the
        retire while the client lost the answer to COMMIT had it committed twice (the
        epoch bumped twice). So each attempt notes its transaction's id and a later
        attempt first asks whether an earlier one committed, as :meth:`note_rekey` does;
        a failure once the change was made is resolved as :meth:`_settle` says."""
        xids: list[int] = []

        def work(conn: _Conn) -> KeyringState:
            st = self._exclusive(conn)
            # an earlier attempt of this call failed: did it commit?
            if self._committed_before(conn, xids):
                return st
            row = conn.execute(self._sql["count_version"], (version,)).fetchone()
            live = self._leases(conn, live=True)
            refusal = _rules.retire_refusal(st, version, int(row[0]) if row else 0, live)
            if refusal is not None:
                raise refusal
            _note_xid(conn, xids)
            retired = tuple(sorted({*st.retired, version}))  # as stored (encode_retired)
            return self._bump(conn, st._replace(retired=retired))

        return self._tx_settled(
            work,
            xids,
            f"KEK version {version} was being retired, and whether that committed",
            "retire it again once the server answers: the keyring file still holds the "
            "version, and a version the store has retired is retired again harmlessly",
        )

    def _tx_settled(
        self, work: Callable[[_Conn], KeyringState], xids: list[int], what: str, hint: str
    ) -> KeyringState:
        """``self._tx(work)`` for work that notes its change's transaction id in ``xids``
        (:func:`_note_xid`): a failure once one was noted is resolved as :meth:`_settle`
        says (``what``, ``hint``); one before it is raised (nothing was changed)."""
        try:
            return self._tx(work)
        except KeyringError as exc:
            if not xids:
                raise self._rolled_back(exc) from None
            return self._settle(exc, xids, what, hint)

    def note_rekey(self, rekey: str) -> KeyringState:
        """As :meth:`KeyStore.note_rekey`: counted once per rekey (``rekey``, its share
        set, is kept in ``meta`` in the same transaction as the count). An increment is not
        idempotent, and :meth:`_tx` runs the work again on a new connection when one is
        dropped: a server that committed the count while the client lost the answer to
        COMMIT had the rekey counted twice. So each attempt notes its transaction's id, and
        a later attempt of the same call first asks the server whether an earlier one
        committed (``txid_status``; final by then: each held the exclusive state lock to
        its end, and this one holds it now): if so, it returns the state as it is (the
        set's row says the same, and also to a later call: a re-run). A failure once the
        count was made (no new connection to retry on) is resolved as :meth:`_settle`
        says, as :meth:`retire_kek`'s."""
        xids: list[int] = []

        def work(conn: _Conn) -> KeyringState:
            st = self._exclusive(conn)
            # an earlier attempt of this call failed: did it commit?
            if self._committed_before(conn, xids):
                return st
            row = conn.execute(self._sql["counted_rekey"]).fetchone()
            if row is not None and row[0] == rekey:
                return st  # counted already (a rekey killed after its count, re-run)
            _note_xid(conn, xids)
            conn.execute(self._sql["count_rekey"], (rekey,))
            return self._bump(conn, st._replace(rekeys=st.rekeys + 1))

        return self._tx_settled(
            work,
            xids,
            "a rekey was being counted, and whether that committed",
            "the rekey itself took effect (the keyring file is rekeyed); 'keysplit status' "
            "shows the count once the server answers",
        )

    def tombstones_since(self, seq: int, limit: int = 10_000) -> list[Tombstone]:
        def work(conn: _Conn) -> list[Tombstone]:
            rows = conn.execute(self._sql["tombstones"], (seq, limit), binary=True).fetchall()
            return [Tombstone(int(q), bytes(t), float(w)) for q, t, w in rows]

        return self._tx(work, read=True)

    def has_tombstone(self, tags: Sequence[bytes]) -> bool:
        if not tags:
            return False
        return self._tx(
            lambda conn: (
                conn.execute(self._sql["has_tombstone"], (list(tags),)).fetchone() is not None
            ),
            read=True,
        )

    def renew_lease(self, lease: Lease, ttl: float) -> KeyringState:
        def work(conn: _Conn) -> KeyringState:
            conn.execute(self._sql["renew"], (*lease[:-1], float(ttl)))
            return self._read_state(conn)

        return self._tx(work)

    def drop_lease(self, lease_id: str) -> None:
        self._tx(lambda conn: conn.execute(self._sql["drop_lease"], (lease_id,)))

    def _leases(self, conn: _Conn, *, live: bool) -> list[Lease]:
        rows = conn.execute(self._sql["leases"], (live,)).fetchall()
        return [Lease(r[0], r[1], int(r[2]), r[3], int(r[4]), int(r[5]), int(r[6]), float(r[7]))
                for r in rows]  # fmt: skip

    def leases(self, *, live: bool = True) -> list[Lease]:
        return self._tx(functools.partial(self._leases, live=live), read=True)

    def clock(self) -> float:
        """The server's clock (seconds since the epoch), which lease expiries are on
        (``clock_timestamp()``): a host whose own clock is off by a skew reads a lease's
        time left from this, not from its ``time.time()``."""

        def work(conn: _Conn) -> float:
            row = conn.execute(self._sql["clock"]).fetchone()
            assert row is not None  # a SELECT of one value gives one row
            return float(row[0])

        return self._tx(work, read=True)

    def wait_for_change(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for a state change (LISTEN/NOTIFY); True if one
        was notified. Opens its own connection on first use; a lost connection is
        reopened on the next call (the caller polls the state either way). A server that
        refuses LISTEN (a hot standby, where a ``read_only`` open reads) is remembered for
        :data:`RELISTEN` seconds: each wait then lasts its ``timeout`` (or until
        :meth:`wake`) and returns True, so the caller polls the state once per ``timeout``,
        and no connection is opened; the first wait after that asks again (one connection),
        so a standby promoted to primary is listened on within the bound, without the store
        being reopened. No keysplit command reaches this on a standby (status and the audit
        log do not watch; a lease watcher needs a writing open, refused there)."""
        if self._no_listen and time.monotonic() < self._no_listen:
            if self._closed.is_set():
                return False
            if self._woken.wait(max(0.0, timeout)):
                self._woken.clear()
            return True
        with self._listen_lock:
            if self._closed.is_set():
                return False
            conn: _Conn | None = None
            try:
                if self._listener is None or self._listener.closed:
                    conn = psycopg.connect(self._conninfo, **(self._conn_kwargs or {}))
                    for channel in (self._channel, self._wake_channel):
                        conn.execute(sql.SQL("LISTEN {c}").format(c=sql.Identifier(channel)))
                    self._listener, self._no_listen = conn, 0.0
                    return True  # changes before LISTEN were missed: have the caller look
                got = False
                for _ in self._listener.notifies(timeout=timeout, stop_after=1):
                    got = True
                return got
            except psycopg.Error as exc:
                if conn is not None:  # it was left open before (a refused LISTEN)
                    conn.close()
                if self._listener is not None:
                    self._listener.close()
                self._listener = None
                if exc.sqlstate == "25006":  # "cannot execute LISTEN during recovery"
                    self._no_listen = time.monotonic() + RELISTEN  # then asked again
                    return True  # the caller looks now, then polls
                time.sleep(min(timeout, 1.0))
                return True

    # ------------------------------------------------------------------ audit chain

    def audit_lines(self) -> list[bytes]:
        return self._tx(
            lambda conn: [bytes(r[0]) for r in conn.execute(self._sql["audit_all"], binary=True)],
            read=True,
        )

    def audit_lines_from(self, seq: int) -> list[bytes]:
        return self._tx(
            lambda conn: [
                bytes(r[0]) for r in conn.execute(self._sql["audit_from"], (seq,), binary=True)
            ],
            read=True,
        )

    def audit_last(self) -> bytes | None:
        row = self._tx(
            lambda conn: conn.execute(self._sql["audit_last"], binary=True).fetchone(), read=True
        )
        return bytes(row[1]) if row else None

    def audit_append(self, build: Callable[[bytes | None], bytes]) -> bytes:
        """As :meth:`KeyStore.audit_append`; a failure once the line was written (only
        COMMIT left: the connection died, or the watchdog ended it) is resolved by the
        transaction's id, asked under the audit lock (granted once that transaction has
        ended): committed, the line is returned (a caller running its command again would
        record it twice); aborted, the error stands; no answer, a
        :class:`StoreUnreachableError` says whether it was recorded is unknown."""
        lock = f"keysplit/{self._schema}//audit"
        written: list[tuple[int, bytes]] = []  # (transaction id, line) once it is written

        def work(conn: _Conn) -> bytes:
            conn.execute(self._sql["lock_subject"], (lock,))
            row = conn.execute(self._sql["audit_last"], binary=True).fetchone()
            seq, last = (int(row[0]), bytes(row[1])) if row else (0, None)
            line = build(last)
            got = conn.execute(self._sql["audit_add"], (seq + 1, line)).fetchone()
            written.append((int(got[0]) if got else 0, line))
            return line

        try:
            return self._tx(work, idempotent=False)
        except KeyringError as exc:
            if not written:  # failed before COMMIT was sent: the server rolled it back
                raise self._rolled_back(exc) from None
            # every attempt's transaction: a deadlock or serialization failure (rolled
            # back) ran the work again, and only the last attempt can have committed
            self._settle(
                exc,
                [xid for xid, _ in written],
                "an audit entry was committing, and whether it was recorded",
                "check 'keysplit audit verify' once the server answers before running the "
                "command again",
                lock=lock,
            )
            return written[-1][1]

    def wake(self) -> None:
        """End a :meth:`wait_for_change` blocked in another thread now (it returns True),
        by a notification on this store's own channel: a closing lease watcher would
        otherwise hold :meth:`close` (and the event loop of a service replacing its
        keyring after every shred or rotate) for up to its poll. Best effort."""
        self._woken.set()  # a polling wait (the server refused LISTEN) ends now
        if self._listener is None or self._closed.is_set():
            return  # nobody is listening: the first wait returns at once anyway
        # else the wait ends at its timeout (a server that is down: _tx's KeyringError); a
        # server that does not answer holds close() for _WAKE_WAIT, not call_timeout
        with contextlib.suppress(psycopg.Error, KeyringError):
            self._tx(
                lambda conn: conn.execute("SELECT pg_notify(%s, '')", (self._wake_channel,)),
                limit=_WAKE_WAIT,
            )

    def close(self) -> None:
        if not self._closed.is_set():
            self.wake()  # before the flag: wake() is a no-op on a closed store
            self._closed.set()
            self._watchdog.stop()
            self._pool.close(timeout=10.0)
            with self._listen_lock:
                if self._listener is not None:
                    self._listener.close()
                    self._listener = None

    def __repr__(self) -> str:
        return (
            f"PostgresKeyStore({self._url!r}, schema={self._schema!r}, "
            f"keyring_id={self._keyring_id!r})"
        )
