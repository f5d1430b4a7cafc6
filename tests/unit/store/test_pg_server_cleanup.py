"""Every throwaway PostgreSQL server a test run starts is stopped, however the run ends.

A server's teardown (``own_postgres``, the session's ``pg_server``, ``ThrowawayPostgres``'s
atexit) runs only while the process that started it can run Python: a run ended by
SIGTERM (``timeout`` around pytest) or SIGKILL (an xdist worker, a CI job cancelled) left
its servers running, with their files under ``/tmp/keysplit-pg-*``. Real processes here:
a pytest run whose tests restart their own server, and a process killed after a restart;
the servers of a data directory are counted as the processes whose working directory it
is (every PostgreSQL process changes into its data directory).
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
GUARD = 90.0  # seconds: a hang guard for each wait, many times what it takes


def _servers(data: str) -> int:
    """How many processes run in ``data`` (a PostgreSQL data directory)."""
    n = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                continue
            n += cwd in (data, f"{data} (deleted)")
    return n


def _gone(data: str) -> bool:
    """Wait (bounded) until no process runs in ``data`` and its files are removed."""
    deadline = time.monotonic() + GUARD
    while _servers(data) or Path(data).parent.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _force_stop(data: str) -> None:
    """Stop a server this test's subject left behind (so a failing run leaks nothing):
    by its data directory while there is one, then any process still running in it."""
    import shutil

    from benchmarks._pgserver import find_bindir

    if _servers(data) and Path(data).exists():
        owner = pwd.getpwuid(os.stat(data).st_uid)
        as_owner: dict[str, object] = {}
        if os.geteuid() == 0:
            as_owner = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        subprocess.run(
            [str(find_bindir() / "pg_ctl"), "-D", data, "-m", "immediate", "-w", "-t", "30",
             "stop"],
            capture_output=True, timeout=60, check=False, cwd="/", **as_owner,  # type: ignore[call-overload]
        )  # fmt: skip
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.readlink(f"/proc/{pid}/cwd") in (data, f"{data} (deleted)"):
                    os.kill(int(pid), signal.SIGKILL)
            except OSError:
                continue
    shutil.rmtree(Path(data).parent, ignore_errors=True)


def _wait_for(path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + GUARD
    while not path.exists():
        assert proc.poll() is None, "the run ended before it was ready"
        assert time.monotonic() < deadline, f"timed out waiting for {path.name}"
        time.sleep(0.05)


PROBE = """
import os, sys, time
sys.path[:0] = [{repo!r}, {support!r}]
from pathlib import Path
from pg_fixture import own_postgres

OUT = Path({out!r})

def test_restarts_then_fails():
    with own_postgres() as server:
        (OUT / "failed.dir").write_text(str(server.data))
        server.restart()
        assert False, "fails after a restart"

def test_restarts_then_is_killed():
    with own_postgres() as server:
        server.restart()
        (OUT / "killed.dir").write_text(str(server.data))
        time.sleep(600)  # ended by SIGTERM, as ``timeout`` ends a run
"""


def test_a_run_killed_after_its_test_restarted_its_server_leaves_no_server(
    pg_server: object, tmp_path: Path
) -> None:
    """A test that restarts its own server and fails stops it (its teardown runs); a run
    ended by SIGTERM while a test holds a restarted server left that server running (no
    teardown, no atexit). Now a reaper process of each server, waiting on a pipe only the
    starting process holds, stops it by its data directory and removes its files."""
    out = tmp_path / "out"
    out.mkdir()
    probe = tmp_path / "test_probe.py"
    support = str(REPO / "tests" / "support")
    probe.write_text(textwrap.dedent(PROBE.format(repo=str(REPO), support=support, out=str(out))))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
         str(probe)],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    dirs: list[str] = []
    try:
        _wait_for(out / "killed.dir", run)
        dirs = [(out / f"{name}.dir").read_text() for name in ("failed", "killed")]
        failed, killed = dirs
        assert _servers(failed) == 0 and not Path(failed).exists()  # its teardown ran
        assert _servers(killed) > 0  # up while its test runs
        run.send_signal(signal.SIGTERM)
        assert run.wait(GUARD) == -signal.SIGTERM  # killed: no teardown, no atexit
        assert _gone(killed), f"{_servers(killed)} server processes left in {killed}"
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(GUARD)
        for data in dirs:
            _force_stop(data)


KILLED = """
import os, signal, sys
sys.path[:0] = [{repo!r}]
from benchmarks._pgserver import ThrowawayPostgres

server = ThrowawayPostgres()
server.start()
server.restart()
print(server.data, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_process_killed_outright_leaves_no_server(pg_server: object) -> None:
    """SIGKILL (an xdist worker or a CI job killed) runs no Python at all: the server the
    process had started (and restarted) is stopped and removed all the same."""
    run = subprocess.run(
        [sys.executable, "-c", KILLED.format(repo=str(REPO))],
        capture_output=True,
        text=True,
        timeout=GUARD,
        check=False,
        start_new_session=True,
    )
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    data = run.stdout.strip()
    try:
        assert data.endswith("/data"), run.stdout
        assert _gone(data), f"{_servers(data)} server processes left in {data}"
    finally:
        _force_stop(data)


def test_a_forked_child_holding_the_reapers_pipe_does_not_keep_the_reaper(
    pg_server: object,
) -> None:
    """A process forked (not exec'd) while a server runs inherits the reaper's pipe, so
    the reaper does not wake when :meth:`stop` closes it: stop() waited 45 s for it and
    left it running. Now stop() ends it; the server is stopped either way."""
    from benchmarks._pgserver import ThrowawayPostgres

    server = ThrowawayPostgres()
    child = 0
    hold_r, hold_w = os.pipe()
    try:
        server.start()
        reaper = server._reaper
        assert reaper is not None
        child = os.fork()
        if child == 0:  # holds every fd of the parent until the parent closes hold_w
            os.close(hold_w)
            os.read(hold_r, 1)
            os._exit(0)
        data = str(server.data)
        server.stop()
        assert reaper.poll() is not None, "the reaper was left running"
        assert _servers(data) == 0 and not Path(data).exists()
    finally:
        os.close(hold_w)
        os.close(hold_r)
        if child:
            os.waitpid(child, 0)
        server.stop()
