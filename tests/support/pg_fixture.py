"""The throwaway PostgreSQL server for the tests (wired into conftest.py with one import).

One server per test session (``initdb`` + ``pg_ctl`` on a Unix socket in a temp dir, as an
unprivileged user when run as root; see benchmarks/_pgserver.py), stopped at the end of
the session, also when tests fail (and by its reaper process when the run is killed: see
``ThrowawayPostgres._start_reaper``). Each test gets its own schema, so tests never see each
other's keys. Without PostgreSQL the tests that need it skip with one reason; with
``CI=true`` that is an error instead, so CI can never pass without having run them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from benchmarks._pgserver import PostgresUnavailable, ThrowawayPostgres

__all__ = [
    "end_admin_lock_backend",
    "fail_commits",
    "own_postgres",
    "pg_server",
    "pytest_runtest_makereport",
    "standby_of",
]

SKIP_REASON = "PostgreSQL store tests need a local PostgreSQL"
_HERE = (str(Path(__file__).relative_to(Path.cwd())) if Path(__file__).is_relative_to(Path.cwd())
         else __file__)  # fmt: skip
_LINE = Path(__file__).read_text().split("\ndef pg_server")[0].count("\n") + 1


@pytest.fixture(scope="session")
def pg_server() -> Iterator[ThrowawayPostgres]:
    """A running throwaway server (skips the test, or fails it under CI, if none can run)."""
    server = None
    try:
        server = ThrowawayPostgres()
        server.start()
    except (PostgresUnavailable, OSError, ImportError) as exc:
        if server is not None:
            server.stop()
        _unavailable("PostgreSQL", exc)
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        server.stop()
        _unavailable("psycopg", exc)
    try:
        yield server
    finally:
        server.stop()


def _unavailable(what: str, exc: BaseException) -> NoReturn:
    """Skip the test, or fail it under ``CI=true`` (which .ci/run sets)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required under CI=true: {exc}")
    reason = SKIP_REASON if what == "PostgreSQL" else f"{SKIP_REASON} and {what}"
    pytest.skip(f"{reason} ({exc})")


@contextlib.contextmanager
def own_postgres() -> Iterator[ThrowawayPostgres]:
    """A server of the test's own, for a test that halts it (the session's stays up)."""
    server = None
    try:
        server = ThrowawayPostgres()  # no PostgreSQL installed: refused here already
        server.start()
    except (PostgresUnavailable, OSError) as exc:
        if server is not None:
            server.stop()
        _unavailable("PostgreSQL", exc)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def standby_of(primary: ThrowawayPostgres) -> Iterator[ThrowawayPostgres]:
    """A hot standby of ``primary`` (a server of the test's own), stopped at the end."""
    standby = ThrowawayPostgres()
    try:
        standby.start_standby(primary)
    except (PostgresUnavailable, OSError) as exc:
        standby.stop()
        _unavailable("PostgreSQL", exc)
    try:
        yield standby
    finally:
        standby.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """Fold every "no PostgreSQL" skip onto one location, so ``-ra`` prints one line."""
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and isinstance(rep.longrepr, tuple) and SKIP_REASON in rep.longrepr[2]:
        rep.longrepr = (_HERE, _LINE, rep.longrepr[2])


def end_admin_lock_backend(other: object, schema: str) -> None:
    """Terminate the backend holding the store's admin lock (from ``other``, a psycopg
    connection) and wait until it is gone: the server has released the lock."""
    row = other.execute(  # type: ignore[attr-defined]
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
        "((classid::bigint << 32) | objid::bigint) = hashtextextended(%s, 0)",
        (f"keysplit/{schema}//admin",),
    ).fetchone()
    assert row is not None
    other.execute("SELECT pg_terminate_backend(%s, 30000)", (row[0],))  # type: ignore[attr-defined]


def fail_commits(conninfo: str, schema: str, table: str, errcode: str, times: int) -> None:
    """Make COMMITs of transactions that inserted into ``schema``.``table`` fail with
    SQLSTATE ``errcode`` (``conninfo``: a libpq connection string): a deferred constraint
    trigger, run at COMMIT once per inserted row after every statement succeeded, raises it
    the first ``times`` times it runs. The sequence ``schema.cuts`` counts its runs
    (nextval survives the rollback)."""
    import psycopg
    from psycopg import sql

    s = sql.Identifier(schema)
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SEQUENCE {s}.cuts").format(s=s))
        admin.execute(
            sql.SQL(
                "CREATE FUNCTION {s}.cut() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN "
                "IF nextval({seq}) <= {n} THEN "
                "RAISE EXCEPTION 'cut at commit' USING ERRCODE = {code}; END IF; "
                "RETURN NULL; END$$"
            ).format(
                s=s,
                seq=sql.Literal(f"{schema}.cuts"),
                n=sql.Literal(times),
                code=sql.Literal(errcode),
            )
        )
        admin.execute(  # runs at COMMIT, after every statement of the transaction succeeded
            sql.SQL(
                "CREATE CONSTRAINT TRIGGER cut AFTER INSERT ON {s}.{t} "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {s}.cut()"
            ).format(s=s, t=sql.Identifier(table))
        )
