"""The keyring process never deserializes what a worker or the scheduler produced.

Dask's client unpickles task results, ``client.run`` answers, exceptions and scheduler
messages: code on any worker can make those run code in the client's process. So a job's
Dask client runs in a **child process** (:mod:`keysplit.jobs._driver`, started with
``python -m keysplit._jobs_boot``), and the process that holds the unsealed keyring talks
to it over pipes:

* parent -> child: one request (pickled: the child trusts its parent, never the other way),
  later JSON lines (the KEK bundles sealed to each worker's public key);
* child -> parent: JSON lines only, each at most :data:`MAX_LINE` bytes, parsed by
  :func:`keysplit._json.loads` (bounded) and checked field by field here: plain counts,
  strings, hex. Nothing from the child is unpickled, evaluated or imported.

A child is kept between jobs on the same cluster (its Dask client, and the LocalCluster it
started, stay up: Python and Dask take seconds to start) and ended when this process exits
or a job ends abnormally (a reused child is as trusted as the cluster's workers, like a
fresh one). It holds what a worker holds or less: the cluster's TLS client credentials, the
job id, subject ranges, the data key source handle (service token or loopback key) for dataset
jobs; for a rewrap it never holds a KEK (the parent seals the KEKs to each worker's
per-job public key; the child only relays the sealed bundles). A hostile worker that takes
over the child therefore learns nothing a worker of the job does not already have.

A child whose parent dies (killed mid-job, with nothing to end the child) ends its job
itself: it watches a *lifeline* pipe whose write end only the parent holds (:func:`_start`)
and, at its EOF, closes its Dask client, so the job fails at once, cleans up what it staged
and exits; its process group is killed :data:`keysplit.jobs._driver.ORPHAN_GRACE` seconds
later if it has not. Before closing its client it unregisters a rewrap's worker plugin, so
its workers forget the job's KEKs at once; where it cannot reach its scheduler they do once
the child's renewals stop (:data:`keysplit.jobs.rewrap.KEY_LEASE`).

The child enforces a job's ``timeout`` itself; this process does not rely on it. A job run
with a time budget (:func:`run_job`'s ``budget``) gives its child :data:`DEADLINE_GRACE`
seconds past it (and, until the child says it has its Dask client, the cluster's connect
timeout plus the grace): a child silent past that (suspended, stuck in a call) is killed
with its whole process group (it is started as the leader of a group of its own, so its
LocalCluster's workers go with it) and the job fails with a :class:`JobError` saying so.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import json
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from .. import _interpreter, _json
from .. import errors as _errors
from ..errors import KeysplitError
from .cluster import Cluster

__all__ = [
    "DEADLINE_GRACE",
    "ITEMS_LINE",
    "MAX_LINE",
    "JobError",
    "Message",
    "check_driver",
    "clean",
    "run_job",
]

MAX_LINE = 1 << 20
"""Largest message the child may send (a line of JSON)."""
ITEMS_LINE = MAX_LINE // 4
"""What the child puts in one line of a list it sends in pieces (``Channel.send_items``),
well inside :data:`MAX_LINE`."""
_MAX_TEXT = 1000

Message = dict[str, Any]
OnMessage = Callable[[Message], Message | None]
"""Called for every message that is not ``done``/``error``; may return a reply to send."""


class JobError(KeysplitError):
    """A distributed job could not finish; what it committed stays valid (run it again)."""


def clean(value: object, limit: int = _MAX_TEXT) -> str:
    """A string from the child, made safe to show: printable, bounded."""
    text = value if isinstance(value, str) else ""
    text = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return text


def _error(msg: Message) -> KeysplitError:
    """The error the child reported, as the same keysplit class (never anything else). A
    class :mod:`keysplit.errors` does not define (``ServiceError``, ``NoJobKeys``...) is a
    JobError whose text starts with the class's name: the reason is kept, not the class."""
    hint = msg.get("hint")
    return _errors.by_name(
        msg.get("kind"), clean(msg.get("message")), clean(hint) if hint else None, other=JobError
    )


def check_driver() -> None:
    """Raise :class:`JobError` if this process cannot start a job's driver process: it runs
    ``sys.executable -m keysplit._jobs_boot``, which a frozen build (``sys.frozen``:
    ``sys.executable`` is the application, which would take ``-m ...`` as its own
    arguments) or an interpreter embedded in another program cannot do."""
    why = _interpreter.unavailable()
    if why is not None:
        raise JobError(
            f"bulk jobs need a Python interpreter to start their driver process: {why}",
            hint="run the job from keysplit installed in a Python environment (pip)",
        )


_lifelines: dict[subprocess.Popen[bytes], int] = {}
"""This process's end of each driver child's lifeline pipe (closed once the child ended)."""


def _start() -> subprocess.Popen[bytes]:
    """A new driver child, given the read end of a pipe only this process writes to (and
    never does): its *lifeline*. When this process dies (SIGKILL included) the kernel
    closes the write end, the child reads EOF and ends its job (see
    :mod:`keysplit.jobs._driver`), instead of running on, orphaned, with the job's keys
    on its workers. A pipe, not ``prctl(PR_SET_PDEATHSIG)``: portable, and it fires on
    this process's death, not on the death of the thread that started the child."""
    check_driver()
    lifeline, keep = os.pipe()  # both non-inheritable: no other child gets ``keep``
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "keysplit._jobs_boot", "--lifeline", str(lifeline)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
            pass_fds=(lifeline,),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            process_group=0,  # its own group: _kill ends it with its LocalCluster's processes
        )
    except BaseException:
        os.close(keep)
        raise
    finally:
        os.close(lifeline)
    _lifelines[proc] = keep
    return proc


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's process group (the child, the workers and resource tracker of
    its LocalCluster), then the child itself (a stand-in started without a group)."""
    with contextlib.suppress(OSError):
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()


STOP_GRACE = 30.0
"""Seconds a driver child told to stop (its stdin closed) has to close its Dask client and
LocalCluster and exit before it is killed. A killed child leaves the semaphores of its
LocalCluster's worker processes to multiprocessing's resource tracker, which then prints
"There appear to be N leaked semaphore objects" on the command's standard error."""


def _stop(proc: subprocess.Popen[bytes], grace: float = 0.0) -> None:
    """End a driver child: with ``grace``, let it close its cluster and exit (at the end of
    its input it leaves its loop), killing it only after ``grace`` seconds; without, kill
    it (it is in the middle of a job, or not to be trusted any more)."""
    if grace and proc.poll() is None:
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    if proc.poll() is None:
        _kill(proc)
    proc.wait()
    keep = _lifelines.pop(proc, None)
    if keep is not None:  # only now: the child ended, its EOF ends nothing
        os.close(keep)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


DEADLINE_GRACE = 60.0
"""Seconds a driver child has past a job's time budget (its ``timeout``, which the child
enforces itself, then cancels the job's tasks and cleans up) before this process kills it."""


_idle: dict[str, list[subprocess.Popen[bytes]]] = {}
_idle_lock = threading.Lock()


def _forked() -> None:
    """(In a child forked, not exec'd, from this process: gunicorn ``--preload``,
    multiprocessing's ``fork``) Close the child's copies of the lifelines' write ends, and
    forget the parent's driver children: they are the parent's. Before, the copies kept
    every driver child's lifeline open for as long as the forked child lived, so a driver
    whose keyring process died ran on, orphaned, with its job's keys on its workers. Only
    the child's copies: the parent's stay open (the hook runs in the child alone).

    The child's copies of each driver's stdin and stdout pipes are pointed at /dev/null:
    the stdin copy kept a driver from reading EOF when this process told it to stop, so
    a clean exit here waited out ``STOP_GRACE`` and killed it. Not closed: the inherited
    file objects still name those descriptor numbers (a forgotten ``Popen`` lives on in
    ``subprocess._active``) and would close, or write a buffered line into, whatever the
    child opened under the same number later."""
    global _idle_lock
    for keep in _lifelines.values():
        with contextlib.suppress(OSError):
            os.close(keep)
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_RDWR)
        try:
            for proc in _lifelines:
                for stream in (proc.stdin, proc.stdout):
                    if stream is not None and not stream.closed:
                        with contextlib.suppress(OSError, ValueError):
                            os.dup2(null, stream.fileno(), inheritable=False)
        finally:
            os.close(null)
    _lifelines.clear()
    _idle.clear()  # (neither reused nor stopped at the child's exit: not its children)
    _idle_lock = threading.Lock()  # another thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


@atexit.register
def _stop_idle() -> None:
    with _idle_lock:
        procs = [p for ps in _idle.values() for p in ps]
        _idle.clear()
    for p in procs:  # all told first, so that they close their clusters side by side
        with contextlib.suppress(OSError):
            if p.stdin is not None:
                p.stdin.close()
    for p in procs:
        _stop(p, STOP_GRACE)


@contextlib.contextmanager
def _child(key: str) -> Iterator[tuple[subprocess.Popen[bytes], list[str]]]:
    """A driver child for the cluster ``key``: an idle one of this process (it keeps its
    Dask client, and its LocalCluster, between jobs: starting Python and Dask costs
    seconds) or a new one. Returned to the idle list only after a clean ``done`` or
    ``error`` (``end[0] = "reuse"``, set by the caller); after a fatal error, which the
    child leaves by closing its cluster, it is given :data:`STOP_GRACE` to exit
    (``"stop"``); any other end kills it."""
    with _idle_lock:
        procs = _idle.get(key, [])
        proc = None
        while procs:
            candidate = procs.pop()
            if candidate.poll() is None:
                proc = candidate
                break
            _stop(candidate)
    if proc is None:
        proc = _start()
    end = ["kill"]
    try:
        yield proc, end
    finally:
        if end[0] == "reuse" and proc.poll() is None:
            with _idle_lock:
                _idle.setdefault(key, []).append(proc)
        else:
            _stop(proc, STOP_GRACE if end[0] == "stop" else 0.0)


def _send(pipe: IO[bytes], line: bytes) -> None:
    pipe.write(line + b"\n")
    pipe.flush()


class _Overdue(Exception):
    """The child sent nothing before the deadline."""


class _Lines:
    """The child's messages, read from its stdout's descriptor with a deadline (a buffered
    ``readline`` cannot be given one)."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._fd = pipe.fileno()
        self._buf = bytearray()
        self._eof = False

    def receive(self, deadline: float | None) -> Message | None:
        """The next message; None at the end of the child's output; :class:`_Overdue` if
        none is complete by ``deadline`` (``time.monotonic()``; None: no deadline)."""
        while True:
            end = self._buf.find(b"\n", 0, MAX_LINE)
            if end >= 0:
                line = bytes(self._buf[: end + 1])
                del self._buf[: end + 1]
                return _parse(line)
            if len(self._buf) >= MAX_LINE or (self._eof and self._buf):
                raise JobError("the job driver sent an oversized message")
            if self._eof:
                return None
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                raise _Overdue
            ready, _, _ = select.select([self._fd], [], [], wait)
            if ready:
                chunk = os.read(self._fd, 1 << 16)
                self._eof = not chunk
                self._buf += chunk


def _parse(line: bytes) -> Message:
    msg = _json.loads(line, what="job driver message", max_bytes=MAX_LINE)
    if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
        raise JobError("the job driver sent a malformed message")
    return msg


def run_job(
    request: dict[str, Any],
    cluster: Cluster,
    on_message: OnMessage,
    budget: float | None = None,
) -> Message:
    """Run ``request`` in a child driver process on ``cluster``; return its ``done`` message.

    ``on_message`` sees every other message (progress, key requests) and may return a
    reply. An ``error`` message raises the keysplit error class it names (JobError if it
    names none); a child that dies without ``done`` is a JobError. ``budget``: the seconds
    the job may take once the child has its Dask client (the job's ``timeout``, which the
    child enforces); past it and :data:`DEADLINE_GRACE` the child is killed with its process
    group and the job is a JobError (None: no deadline). Time spent in ``on_message`` (this
    process's own work) does not count.
    """
    doc = cluster.to_doc()
    request = {**request, "cluster": doc}
    blob = base64.b64encode(pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL))
    key = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    with _child(key) as (proc, end):
        assert proc.stdin is not None and proc.stdout is not None
        lines = _Lines(proc.stdout)
        started = False
        allowed = None if budget is None else cluster.timeout + DEADLINE_GRACE  # to connect
        deadline = None if allowed is None else time.monotonic() + allowed
        with contextlib.suppress(BrokenPipeError):  # the child died at start: reported below
            _send(proc.stdin, blob)
        while True:
            try:
                msg = lines.receive(deadline)
            except _Overdue:
                raise _overdue(proc, started, allowed) from None
            except KeysplitError as exc:
                raise JobError(f"{exc}") from None
            if msg is None:
                code = proc.wait()
                raise JobError(
                    f"the job driver process ended without a result (exit code {code})",
                    hint="its log is on standard error; run the job again",
                )
            if msg["t"] == "started" and not started:  # it has its client: the job's clock
                started = True
                if budget is not None:
                    allowed = budget + DEADLINE_GRACE
                    deadline = time.monotonic() + allowed
                continue
            if msg["t"] == "done":  # "retire": the child lost its scheduler and exits
                end[0] = "stop" if msg.get("retire") is True else "reuse"
                return msg
            if msg["t"] == "error":
                end[0] = "stop" if msg.get("fatal") is True else "reuse"
                raise _error(msg)
            before = time.monotonic()
            reply = on_message(msg)
            if deadline is not None:  # this process's own work is not the child's time
                deadline += time.monotonic() - before
            if reply is not None:
                try:
                    _send(proc.stdin, _json_line(reply))
                except BrokenPipeError:
                    continue  # the child is gone: its end of stdout says so next


def _overdue(proc: subprocess.Popen[bytes], started: bool, allowed: float | None) -> JobError:
    """Kill a child silent past its deadline (``_child`` then reaps it); the job's error."""
    _kill(proc)
    what = (
        f"did not finish the job within {allowed:g} s (its timeout and a grace)"
        if started
        else f"did not start the job within {allowed:g} s (the cluster's connect timeout "
        "and a grace)"
    )
    return JobError(
        f"the job driver process {what}; it was killed",
        hint="it was stuck (suspended, or waiting on its cluster): run the job again",
    )


def _json_line(msg: Message) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode()


def progress_of(msg: Message) -> tuple[int, int] | None:
    """``(done, total)`` of a progress message (checked), else None."""
    if msg.get("t") != "progress":
        return None
    done, total = msg.get("done"), msg.get("total")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (done, total)):
        raise JobError("the job driver sent a malformed progress message")
    return done, total  # type: ignore[return-value]
