"""CI runs what it claims: .ci/run marks its run as CI, so tests that skip on a developer's
machine without PostgreSQL fail there instead (tests/support/pg_fixture.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pg_fixture
import pytest

from benchmarks._pgserver import PostgresUnavailable

ROOT = Path(__file__).resolve().parents[2]


def _ci_run(
    tmp_path: Path, failing: str = ""
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run a copy of .ci/run with ``make`` and ``apt-get`` stand-ins that record their
    arguments and CI; ``make`` fails for the arguments ``failing``. Its result and calls."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "calls.log"
    for tool in ("make", "apt-get"):
        fail = f'if [ "$*" = "{failing}" ]; then exit 2; fi\n' if tool == "make" and failing else ""
        (fake / tool).write_text(f'#!/bin/sh\necho "{tool} $* CI=${{CI-unset}}" >> "{log}"\n{fail}')
        (fake / tool).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = f"{fake}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    p = subprocess.run(
        ["bash", str(tmp_path / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60
    )
    return p, log.read_text().splitlines()


def test_ci_run_runs_every_step_with_ci_true(tmp_path: Path) -> None:
    """(cli4) .ci/run did not set CI, so a CI service that does not set it either ran the
    PostgreSQL tests as a developer's machine does: a server that failed to start made them
    skip, and the run passed. Each step now sees CI=true. The steps: lint and typecheck
    beside the wheel check, then the README's test command, `make test`."""
    p, calls = _ci_run(tmp_path)
    assert p.returncode == 0, p.stderr
    made = sorted(c for c in calls if c.startswith("make "))
    assert made == [
        "make lint typecheck CI=true",
        "make test CI=true",
        "make venv CI=true",
        "make wheel-check CI=true",
    ], calls
    assert all(c.endswith(" CI=true") for c in calls), calls


@pytest.mark.parametrize("failing", ["lint typecheck", "wheel-check"])
def test_ci_run_stops_at_a_failed_check_before_the_tests(tmp_path: Path, failing: str) -> None:
    """Lint and typecheck run beside the wheel check: a failure of either fails the run,
    says which, and runs no tests."""
    p, calls = _ci_run(tmp_path, failing)
    assert p.returncode == 1, p.stderr
    assert f"error: make {failing} failed" in p.stderr
    assert not any(c.startswith(("make test", "make pytest")) for c in calls), calls


class _NoServer:
    """A ThrowawayPostgres whose server cannot run (``where``: refused when made, or when
    started)."""

    where = "start"

    def __init__(self) -> None:
        if self.where == "init":
            raise PostgresUnavailable("no initdb here")

    def start(self) -> None:
        raise PostgresUnavailable("initdb failed: the test's stand-in")

    def stop(self) -> None:
        pass


@pytest.mark.parametrize("where", ["init", "start"])
@pytest.mark.parametrize("ci", [True, False])
def test_a_server_of_a_tests_own_that_cannot_run_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, where: str, ci: bool
) -> None:
    """(cli4) ``own_postgres`` (a test that halts its own server) skipped under CI=true too
    when its server did not start, and raised PostgresUnavailable (an error, not a skip)
    where PostgreSQL is not installed. It follows the session server's rule now: a skip,
    a failure under CI=true."""
    monkeypatch.setattr(_NoServer, "where", where)
    monkeypatch.setattr(pg_fixture, "ThrowawayPostgres", _NoServer)
    if ci:
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)
    either = (pytest.fail.Exception, pytest.skip.Exception)  # caught: a skip must not skip this
    with pytest.raises(either, match="PostgreSQL") as outcome, pg_fixture.own_postgres():
        pass
    assert outcome.type is (pytest.fail.Exception if ci else pytest.skip.Exception)
