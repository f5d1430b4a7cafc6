"""Key stores in bulk: insert N new subjects, and rewrap N keys, SQLite vs PostgreSQL.

Both stores run on this machine in the same run: SQLite (WAL, ``synchronous=FULL``) in a
temp file, PostgreSQL 15 on a throwaway server (benchmarks/_pgserver.py; durable settings:
fsync and synchronous_commit on) over its Unix socket. Workloads, N = 10^6 in full mode:

* insert: ``insert_many`` of N new subjects in calls of ``BATCH`` rows (a fresh store for
  every repeat, setup untimed);
* rewrap: the keyring's rewrap loop without the crypto: ``stale_batch`` pages of ``BATCH``
  and ``replace_many`` (compare-and-swap) of each page to the next KEK version.

* first record: ``UnsealedKeyring.encrypt`` of one record for a subject never seen
  before (a new data key made, stored and checked against the fleet state), one at a
  time, on a keyring over each store; SQLite is the baseline (issue 23: PostgreSQL >= 0.5x
  it, one round trip per new subject). Repeats interleave the two stores.

Reference (``*``): a per-row loop against the same PostgreSQL table, one statement per
subject inside one transaction (``INSERT ... ON CONFLICT DO NOTHING`` /
``UPDATE ... WHERE`` old row), i.e. what the set-based paths replace; it is timed on a
sample of ``SAMPLE`` rows and reported per row. Key wrapping is not measured here
(bench_keywrap, bench_rewrap do that).
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from keysplit.store import SQLiteKeyStore, WrappedKey
from keysplit.store.url import postgres_conninfo

from ._pgserver import throwaway_postgres
from .harness import measure, measure_interleaved, progress, row, run_standalone

KID = "be" * 16
BATCH = 10_000


def _rows(n: int, prefix: str, version: int = 1) -> list[WrappedKey]:
    blob = os.urandom(24 * n)
    return [WrappedKey(f"{prefix}-{i:08d}", version, blob[24 * i : 24 * i + 24]) for i in range(n)]


def _insert(store: Any, rows: list[WrappedKey]) -> None:
    for lo in range(0, len(rows), BATCH):
        store.insert_many(rows[lo : lo + BATCH])


def _rewrap(store: Any, current: int) -> int:
    after, done = "", 0
    while page := store.stale_batch(current, after, BATCH):
        after = page[-1].subject
        done += store.replace_many(
            [(r, WrappedKey(r.subject, current, r.wrapped[::-1])) for r in page]
        )
    return done


Stats = tuple[float, float, float]


def _bulk(
    name: str, fresh: Callable[[], Any], rows: list[WrappedKey], repeats: int
) -> tuple[Stats, Stats]:
    """insert_many of all rows into a fresh store per repeat; then rewrap that store."""
    n = len(rows)
    holder: dict[str, Any] = {}
    progress(f"store: {name} insert_many, {n:,} rows")

    def setup() -> None:
        holder["s"] = fresh()

    inserted = measure(lambda: _insert(holder["s"], rows), n, repeats, warmup=0, setup=setup)
    progress(f"store: {name} rewrap, {n:,} rows")
    store, version = holder["s"], [1]  # the last repeat's store holds all N at version 1

    def bump() -> None:
        version[0] += 1

    def rewrap() -> None:
        assert _rewrap(store, version[0]) == n

    return inserted, measure(rewrap, n, repeats, warmup=0, setup=bump)


def run(quick: bool) -> list[dict[str, Any]]:
    n = 20_000 if quick else 1_000_000
    sample = 2_000 if quick else 20_000
    repeats = 3 if quick else 5
    import psycopg

    from keysplit.store.postgres import PostgresKeyStore

    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, throwaway_postgres(durable=True) as server:
        rows = _rows(n, "user")
        opened: list[Any] = []

        def fresh_sqlite() -> SQLiteKeyStore:
            s = SQLiteKeyStore(Path(tmp) / f"{uuid.uuid4().hex}.sqlite", KID, create=True)
            opened.append(s)
            return s

        def fresh_pg() -> PostgresKeyStore:
            url = f"{server.url}&schema=b_{uuid.uuid4().hex[:12]}"
            s = PostgresKeyStore(url, KID, create=True)
            opened.append(s)
            return s

        holder: dict[str, Any] = {}

        # ---- per-row reference on PostgreSQL (a sample)
        progress(f"store: per-row loop, {sample:,} rows")
        conninfo, _ = postgres_conninfo(server.url)
        sample_rows = rows[:sample]

        def loop_setup() -> None:
            holder["pg"] = fresh_pg()

        def loop_insert() -> None:
            schema = holder["pg"].schema
            with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
                for r in sample_rows:
                    cur.execute(
                        f"INSERT INTO {schema}.data_keys VALUES (%s, %s, %s) "
                        "ON CONFLICT (subject) DO NOTHING",
                        r,
                    )

        def loop_replace() -> None:
            schema = holder["pg"].schema
            with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
                for r in sample_rows:
                    cur.execute(
                        f"UPDATE {schema}.data_keys SET kek_version = %s, wrapped = %s "
                        "WHERE subject = %s AND kek_version = %s AND wrapped = %s",
                        (2, r.wrapped[::-1], r.subject, r.kek_version, r.wrapped),
                    )

        def loop_replace_setup() -> None:
            loop_setup()
            _insert(holder["pg"], sample_rows)

        ins_loop = measure(loop_insert, sample, repeats, warmup=0, setup=loop_setup)
        rep_loop = measure(loop_replace, sample, repeats, warmup=0, setup=loop_replace_setup)

        # ---- bulk paths
        results: dict[tuple[str, str], tuple[float, float, float]] = {}
        for name, fresh in (("sqlite", fresh_sqlite), ("pg", fresh_pg)):
            results[(name, "insert")], results[(name, "rewrap")] = _bulk(name, fresh, rows, repeats)
            for s in opened:
                s.close()
            opened.clear()

        first = _first_record(Path(tmp), server.url, 200 if quick else 2_000, repeats)

    loop_note = "one statement per row, one transaction, same PostgreSQL table"
    out += [
        row("store-insert-new", "PostgreSQL per-row INSERT loop", n, "subjects/s", ins_loop,
            baseline=True, timed_n=sample, note=loop_note),
        row("store-insert-new", "PostgresKeyStore.insert_many (COPY + INSERT ON CONFLICT)", n,
            "subjects/s", results[("pg", "insert")]),
        row("store-insert-new", "SQLiteKeyStore.insert_many (executemany)", n, "subjects/s",
            results[("sqlite", "insert")]),
        row("store-rewrap", "PostgreSQL per-row UPDATE loop", n, "subjects/s", rep_loop,
            baseline=True, timed_n=sample, note=loop_note),
        row("store-rewrap", "PostgresKeyStore stale_batch + replace_many (UPDATE FROM)", n,
            "subjects/s", results[("pg", "rewrap")]),
        row("store-rewrap", "SQLiteKeyStore stale_batch + replace_many", n, "subjects/s",
            results[("sqlite", "rewrap")]),
        row("store-first-record", "SQLite store: encrypt for a new subject", first["n"],
            "records/s", first["sqlite"], baseline=True),
        row("store-first-record", "PostgreSQL store: encrypt for a new subject", first["n"],
            "records/s", first["pg"], note="one pipelined round trip per new subject"),
    ]  # fmt: skip
    return out


def _first_record(tmp: Path, pg_url: str, n: int, repeats: int) -> dict[str, Any]:
    """encrypt() of one record per never-seen subject, keyrings on SQLite and PostgreSQL."""
    from keysplit import Keyring

    progress(f"store: first record of {n:,} new subjects, SQLite vs PostgreSQL")
    opened = []
    for name, url in (("sqlite", None), ("pg", f"{pg_url}&schema=f_{uuid.uuid4().hex[:12]}")):
        _, shares = Keyring.create(tmp / f"first-{name}", 2, ["a", "b"], store_url=url)
        opened.append((name, Keyring.open(tmp / f"first-{name}").unseal(list(shares.values()))))
    rounds = {name: 0 for name, _ in opened}

    def one(name: str, ku: Any) -> Any:
        def go() -> None:
            rounds[name] += 1
            for i in range(n):
                ku.encrypt(b"x", subject=f"r{rounds[name]}-{i}")

        return go

    try:
        stats = measure_interleaved({name: one(name, ku) for name, ku in opened}, n, repeats)
    finally:
        for _, ku in opened:
            ku.close()
    return {"n": n, **stats}


if __name__ == "__main__":
    run_standalone(run, sys.argv)
