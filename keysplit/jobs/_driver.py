"""The child process that runs a job's Dask client (``python -m keysplit._jobs_boot``, which
reads the lifeline from the start and then runs :func:`main` here).

It reads one request from its parent (:mod:`keysplit.jobs._isolate`), connects to the
cluster (or starts an authenticated LocalCluster), runs the job and reports JSON lines on
its original standard output. Everything else the libraries print goes to standard error
(file descriptor 1 is pointed there), so a stray ``print`` can never forge a message. This
process is as trusted as a worker of the job, no more: it holds no keyring and no KEK.
"""

from __future__ import annotations

import base64
import contextlib
import os
import pickle
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from .. import _fileio, _jobs_boot
from ._channel import Channel
from .cluster import LOST_SETTLE, closed_when_lost, local_memory, local_workers, scheduler_lost

__all__ = ["main"]

CLOSE_LOST = 5.0
"""Seconds this process gives its Dask client to close once it lost the scheduler (by
default Dask would give it twice the connect timeout); the job's error is already sent."""


ORPHAN_GRACE = 30.0
"""Seconds this process, once its parent is gone, gives its job to fail (its Dask client is
closed) and itself to close its LocalCluster and exit, before it kills its process group."""


def _lifeline(argv: list[str]) -> int | None:
    """The lifeline pipe's descriptor the parent passed (``--lifeline N``), if any."""
    if len(argv) == 3 and argv[1] == "--lifeline" and argv[2].isdigit():
        return int(argv[2])
    return None


class _State:
    """(Shared by the main thread and the lifeline's) ``idle``: no job runs now; once the
    parent is gone, ``orphaned`` stops the main thread from starting another."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.orphaned = False
        self.idle = threading.Event()  # set whenever no job runs
        self.idle.set()


def _watch_parent(fd: int, clients: list[Any], state: _State | None = None) -> None:
    """(A daemon thread) Once the parent is gone (EOF on the lifeline: the parent never
    writes to it, and its end closes when it dies), unregister its jobs' plugins (their
    workers forget a rewrap's KEKs at once) and close this process's Dask client, so
    that the job in progress fails at once (its futures are cancelled; a dataset job
    removes its stage, a rewrap stops renewing its workers' keys), then, if this process
    is still there after :data:`ORPHAN_GRACE`, remove the stages its jobs left and kill its
    process group (its LocalCluster's workers with it). It does so as soon as no job runs
    (none did, or the job in progress has failed and cleaned up): before, an idle driver
    whose standard input a forked copy of the parent still held waited out the grace."""
    with contextlib.suppress(OSError):
        while os.read(fd, 1 << 12):
            pass
    _orphaned(clients, state)


def _orphaned(clients: list[Any], state: _State | None = None) -> None:
    """What :func:`_watch_parent` does once the lifeline reads EOF (in the watching thread:
    this module's, or :mod:`keysplit._jobs_boot`'s, which reads it from the process's start)."""
    if state is not None:
        with state.lock:
            state.orphaned = True  # no job starts from now on
    for client in list(clients):
        _unregister_jobs(client)
        with contextlib.suppress(Exception):
            client.close(timeout=CLOSE_LOST)
    (state.idle if state is not None else threading.Event()).wait(ORPHAN_GRACE)
    _fileio.remove_own_stages()  # the job's cleanup did not run in time: its stage goes now
    if os.getpgrp() == os.getpid():  # the leader of its group: started by the parent
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _unregister_jobs(client: Any) -> None:
    """Unregister the job plugins this process registered (a rewrap's), at most
    :data:`CLOSE_LOST` seconds: their workers forget the job's KEKs now. Once the client is
    closed the job's own ``finally`` can no longer do it, and before, the workers kept them
    until their lease lapsed (``KEY_LEASE``, 60 s)."""
    from ._worker import registered

    names = sorted(registered)
    if not names:
        return

    def unregister() -> None:
        for name in names:
            with contextlib.suppress(Exception):  # a worker or the scheduler gone: the lease
                client.unregister_worker_plugin(name)

    thread = threading.Thread(target=unregister, name="keysplit-orphan-forget", daemon=True)
    thread.start()
    thread.join(CLOSE_LOST)  # a scheduler that does not answer: the lease ends them


@contextlib.contextmanager
def _client(doc: dict[str, Any]) -> Iterator[Any]:
    from distributed import Client, LocalCluster
    from distributed.security import Security

    if doc["scheduler"] is None:
        sec = Security.temporary()  # mutual TLS even on this host: no foreign worker joins
        with (
            LocalCluster(
                n_workers=local_workers(doc),  # explicit: the count the job plans for
                threads_per_worker=doc["threads_per_worker"],
                memory_limit=local_memory(doc),  # explicit: the limit the job plans for
                processes=True,
                dashboard_address=None,
                # no dashboard, and the scheduler's HTTP routes (health, metrics) on a free
                # loopback port: by default they take 8787, and when another cluster on this
                # host holds it Dask warns "Port 8787 is already in use" on our stderr
                scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                # CRITICAL only: a failed task is the job's error (one line, its text judged
                # by main()); at ERROR the workers logged it with its text and a traceback
                silence_logs=50,
                security=sec,
            ) as cluster,
            Client(cluster, security=sec, timeout=doc["timeout"]) as client,
        ):
            yield client
        return
    tls = doc["tls"]
    security = (
        None
        if tls is None
        else Security(
            tls_ca_file=tls["ca"],
            tls_client_cert=tls["cert"],
            tls_client_key=tls["key"],
            require_encryption=True,
        )
    )
    with Client(doc["scheduler"], security=security, timeout=doc["timeout"]) as client:
        yield client


def _job(client: Any, request: dict[str, Any], chan: Channel) -> dict[str, Any]:
    if request["kind"] == "rewrap":
        from .rewrap import child_job as rewrap_job

        return rewrap_job(client, request, chan)
    from .records import child_job as records_job

    return records_job(client, request, chan)


def main() -> int:
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # libraries' prints go to stderr, never into the channel
    sys.stdout = sys.stderr
    chan = Channel(out, sys.stdin)
    from ..errors import KeysplitError

    clients: list[Any] = []
    state = _State()
    fd = _lifeline(sys.argv)
    if fd is not None and not _jobs_boot.hand_over(fd, lambda: _orphaned(clients, state)):
        watch = threading.Thread(
            target=_watch_parent, args=(fd, clients, state), name="keysplit-lifeline", daemon=True
        )
        watch.start()

    with contextlib.ExitStack() as stack:
        client: Any = None
        cluster: dict[str, Any] | None = None
        while line := sys.stdin.readline():  # one job per request line, until the parent closes
            with state.lock:
                if state.orphaned:  # the lifeline ends this process
                    break
                state.idle.clear()
            try:
                # from the parent, which trusts this process less than itself: never the other way
                request = pickle.loads(base64.b64decode(line))  # noqa: S301
                if client is None:
                    cluster = request["cluster"]
                    client = stack.enter_context(_client(request["cluster"]))
                    clients.append(client)
                    stack.enter_context(closed_when_lost(client, CLOSE_LOST))
                elif request["cluster"] != cluster:
                    raise ValueError("one driver process serves one cluster")
                chan.send({"t": "started"})  # the parent's clock for the job's time budget
                result = _job(client, request, chan)
            except KeysplitError as exc:
                lost = client is not None and scheduler_lost(client) is not None
                chan.send(
                    {
                        "t": "error",
                        "kind": type(exc).__name__,
                        "message": str(exc),
                        "hint": exc.hint,
                        **({"fatal": True} if lost else {}),
                    }
                )
                if lost:
                    return _retire(client)
                continue
            except Exception as exc:  # others: the type (a task's message may quote data), OS: text
                settle = LOST_SETTLE if isinstance(exc, OSError) else 0.0  # a closed connection
                lost_why = None if client is None else scheduler_lost(client, settle)
                what = (
                    f"the job {lost_why}"
                    if lost_why is not None
                    else f"{type(exc).__name__}: {exc}"
                    if isinstance(exc, OSError)
                    else type(exc).__name__
                )
                chan.send({"t": "error", "kind": "JobError", "message": what, "fatal": True})
                return 1 if lost_why is None else _retire(client)
            finally:
                with state.lock:  # (idle from here: an orphaned one need not wait)
                    state.idle.set()
            if scheduler_lost(client) is not None:  # the job said so in its result
                chan.send({"t": "done", **result, "retire": True})
                return _retire(client)
            chan.send({"t": "done", **result})
    return 0


def _retire(client: Any) -> int:
    """End this process after its client lost the scheduler (the parent, told so, starts a
    new child for the next job): a reconnected client would hold none of the job's state,
    and until then every call waits out Dask's reconnect."""
    with contextlib.suppress(Exception):
        client.close(timeout=CLOSE_LOST)
    return 1


if __name__ == "__main__":  # run by keysplit._jobs_boot (or ``python -m`` this module)
    try:
        sys.exit(main())
    except BrokenPipeError:  # the parent is gone (the lifeline ends this process too)
        sys.exit(1)
