"""A throwaway PostgreSQL server for the tests and the store benchmark.

``initdb`` in a fresh temp dir, ``pg_ctl start`` listening only on a Unix socket in that dir
(no TCP port, trust auth is safe there: the dir is private), stopped and removed at exit; when
the process that started it is killed (SIGTERM, SIGKILL: no Python runs), by a reaper process
of its own. PostgreSQL refuses to run as root, so as root the server runs as an existing
unprivileged account: ``postgres`` (made by the distribution's package) or else ``nobody``. No
account is ever created (running the tests must not change the machine's users). Every wait is
bounded. Shared by ``tests/support/pg_fixture.py`` and ``benchmarks/bench_store.py``, which is
why it lives here and not in tests/ (the benchmarks also ship without the tests).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["PostgresUnavailable", "ThrowawayPostgres", "find_bindir", "throwaway_postgres"]

# Existing unprivileged accounts the server may run as when we are root, in order of preference.
SERVER_USERS = ("postgres", "nobody")
DATABASE = "keysplit"
TIMEOUT_S = 90.0


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here (or they cannot be run)."""


def find_bindir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``: ``$KEYSPLIT_PG_BINDIR`` (empty:
    none, to run without PostgreSQL), else PATH, else Debian's layout."""
    forced = os.environ.get("KEYSPLIT_PG_BINDIR")
    if forced is not None:
        if not (forced and (Path(forced) / "initdb").exists()):
            raise PostgresUnavailable(f"no initdb in KEYSPLIT_PG_BINDIR={forced!r}")
        return Path(forced)
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    raise PostgresUnavailable("initdb not found (install postgresql)")


def _server_user() -> pwd.struct_passwd | None:
    """None when not root (run as ourselves); else an existing unprivileged account."""
    if os.geteuid() != 0:
        return None
    for name in SERVER_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresUnavailable(
        f"running as root and none of the accounts {', '.join(SERVER_USERS)} exists "
        "(PostgreSQL refuses to run as root)"
    )


class ThrowawayPostgres:
    """One private server; :attr:`url` is a libpq URL for its database."""

    def __init__(self, *, durable: bool = False) -> None:
        self.bindir = find_bindir()
        self.durable = durable
        self.user = _server_user()
        # under /tmp when root: $TMPDIR may not be traversable by the server's user, and
        # a Unix socket path must stay short (about 100 bytes)
        where = "/tmp" if self.user is not None and os.path.isdir("/tmp") else None
        self.dir = Path(tempfile.mkdtemp(prefix="keysplit-pg-", dir=where))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._started = False
        self._opts: list[str] = []
        self._reaper: subprocess.Popen[bytes] | None = None
        self._reaper_pipe: int | None = None
        atexit.register(self.stop)

    @property
    def url(self) -> str:
        return f"postgresql:///{DATABASE}?host={self.dir}&user=keysplit"

    def _as_server(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The keyword arguments and environment of a process run as the server's user
        (``Any``: ``subprocess``'s overloads take them as the ints and list they are)."""
        kwargs: dict[str, Any] = {}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
            env["HOME"] = str(self.dir)
        return kwargs, env

    def _run(self, *args: str, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        kwargs, env = self._as_server()
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            cwd=self.dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )

    def _start_reaper(self) -> None:
        """A process that stops this server (by its data directory, whichever postmaster a
        restart left running) and removes its files once this process is gone, however it
        ends: :meth:`stop` and atexit need Python to run, and a run ended by SIGTERM
        (``timeout``) or SIGKILL (a cancelled job, an xdist worker) left its servers running.
        It waits for the end of a pipe only this process holds (not inherited by the
        processes it execs); in a session of its own, so a signal to this process's group
        does not end it first. After :meth:`stop` it finds nothing left to do."""
        kwargs, env = self._as_server()
        script = 'read _; "$0" -D "$1" -m immediate -w -t 30 stop; rm -rf "$2"'
        read_end, self._reaper_pipe = os.pipe()
        try:
            self._reaper = subprocess.Popen(
                ["/bin/sh", "-c", script, str(self.bindir / "pg_ctl"), str(self.data),
                 str(self.dir)],
                stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                cwd="/", env=env, start_new_session=True, **kwargs,
            )  # fmt: skip
        finally:
            os.close(read_end)

    def _stop_reaper(self) -> None:
        """After :meth:`stop`: the reaper wakes and finds nothing left to stop. A process
        forked (not exec'd) from this one may still hold the pipe: then it is ended."""
        if self._reaper_pipe is not None:
            os.close(self._reaper_pipe)
            self._reaper_pipe = None
        if self._reaper is not None:
            try:
                self._reaper.wait(5)
            except subprocess.TimeoutExpired:
                self._reaper.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._reaper.wait(5)
            self._reaper = None

    def _own_dir(self) -> None:
        """The temp dir made private to the server's user, and the reaper started."""
        if self.user is not None:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        os.chmod(self.dir, 0o700)
        self._start_reaper()

    def _launch(self, opts: list[str]) -> None:
        """``pg_ctl start`` with ``opts``; stopped and refused if it does not come up."""
        self._opts = opts
        # started from here on for stop(): a start that failed its wait (-t) may still
        # bring the server up, and stop() then stops it by its data directory
        self._started = True
        res = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
            "-o", " ".join(opts), "start",
        )  # fmt: skip
        if res.returncode:
            log = self.log.read_text(errors="replace")[-800:] if self.log.exists() else ""
            self.stop()
            raise PostgresUnavailable(f"pg_ctl start failed: {res.stdout.strip()} {log}")

    def start_standby(self, primary: ThrowawayPostgres) -> ThrowawayPostgres:
        """Start as a hot standby of ``primary`` (running): a base backup of it, then
        streaming from it; every transaction read-only (``pg_is_in_recovery()``)."""
        self._own_dir()
        res = self._run(
            "pg_basebackup", "-h", str(primary.dir), "-U", "keysplit", "-D", str(self.data),
            "-X", "stream", "-R", "-c", "fast",
        )  # fmt: skip
        if res.returncode:
            self.stop()
            raise PostgresUnavailable(f"pg_basebackup failed: {res.stderr.strip()[-500:]}")
        self._launch(
            ["-c listen_addresses=''", f"-c unix_socket_directories='{self.dir}'", "-c fsync=off"]
        )
        return self

    def start(self) -> ThrowawayPostgres:
        self._own_dir()
        res = self._run(
            "initdb", "-D", str(self.data), "-U", "keysplit", "--auth=trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        if res.returncode:
            raise PostgresUnavailable(f"initdb failed: {res.stderr.strip()[-500:]}")
        opts = [
            "-c listen_addresses=''",
            f"-c unix_socket_directories='{self.dir}'",
            "-c max_connections=60",
            "-c shared_buffers=128MB",
        ]
        if not self.durable:  # tests: a crash of the server is not what they test
            opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._launch(opts)
        # the database the URL names (createdb is in the same bindir on every layout)
        res = self._run("createdb", "-h", str(self.dir), "-U", "keysplit", DATABASE)
        if res.returncode:
            self.stop()
            raise PostgresUnavailable(f"createdb failed: {res.stderr.strip()}")
        return self

    def restart(self) -> None:
        """Restart the server (fast shutdown): every client connection is cut."""
        res = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", "fast", "-w", "-t",
            "60", "-o", " ".join(self._opts), "restart",
        )  # fmt: skip
        if res.returncode:
            raise PostgresUnavailable(f"pg_ctl restart failed: {res.stdout.strip()}")

    def halt(self) -> None:
        """Stop the server (fast shutdown: every client connection is cut), keeping its files
        for :meth:`resume`: the database is down, as when its host goes away."""
        res = self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        if res.returncode:
            raise PostgresUnavailable(f"pg_ctl stop failed: {res.stdout.strip()}")

    def resume(self) -> None:
        """Start a server stopped by :meth:`halt` again, on the same socket and data."""
        res = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
            "-o", " ".join(self._opts), "start",
        )  # fmt: skip
        if res.returncode:
            raise PostgresUnavailable(f"pg_ctl start failed: {res.stdout.strip()}")

    def stop(self) -> None:
        """Stop the server (fast, then immediate, then SIGKILL) and remove its files."""
        if self._started:
            self._started = False
            for mode in ("fast", "immediate"):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    if self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t",
                                 "30", "stop", timeout=45).returncode == 0:  # fmt: skip
                        break
            else:
                self._kill_postmaster()
        shutil.rmtree(self.dir, ignore_errors=True)
        self._stop_reaper()

    def _kill_postmaster(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)


@contextlib.contextmanager
def throwaway_postgres(*, durable: bool = False) -> Iterator[ThrowawayPostgres]:
    """Start a server for the ``with`` block; always stopped and removed afterwards."""
    server = ThrowawayPostgres(durable=durable)
    try:
        yield server.start()
    finally:
        server.stop()
