"""The throwaway PostgreSQL server for the tests (wired into conftest.py with one import).

One server per test session (``initdb`` + ``pg_ctl`` on a Unix socket in a temp dir, as an
unprivileged user when run as root; see benchmarks/_pgserver.py), stopped at the end of
the session, also when tests fail. Each test gets its own schema, so tests never see each
other's keys. Without PostgreSQL the tests that need it skip with one reason; with
``CI=true`` that is an error instead, so CI can never pass without having run them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from benchmarks._pgserver import PostgresUnavailable, ThrowawayPostgres

__all__ = ["pg_server"]


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
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true: {exc}")
        pytest.skip(f"PostgreSQL store tests need a local PostgreSQL ({exc})")
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        server.stop()
        if os.environ.get("CI") == "true":
            pytest.fail(f"psycopg is required under CI=true: {exc}")
        pytest.skip(f"PostgreSQL store tests need psycopg ({exc})")
    try:
        yield server
    finally:
        server.stop()
