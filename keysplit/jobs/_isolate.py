"""The keyring process never deserializes what a worker or the scheduler produced.

Dask's client unpickles task results, ``client.run`` answers, exceptions and scheduler
messages: code on any worker can make those run code in the client's process. So a job's
Dask client runs in a **child process** (:mod:`keysplit.jobs._driver`, started with
``python -m``), and the process that holds the unsealed keyring talks to it over pipes:

* parent -> child: one request (pickled: the child trusts its parent, never the other way),
  later JSON lines (the KEK bundles sealed to each worker's public key);
* child -> parent: JSON lines only, each at most :data:`MAX_LINE` bytes, parsed by
  :func:`keysplit._json.loads` (bounded) and checked field by field here: plain counts,
  strings, hex. Nothing from the child is unpickled, evaluated or imported.

The child holds what a worker holds or less: the cluster's TLS client credentials, the job
id, subject ranges, the data key source handle (service token or loopback key) for dataset
jobs; for a rewrap it never holds a KEK (the parent seals the KEKs to each worker's
per-job public key; the child only relays the sealed bundles). A hostile worker that takes
over the child therefore learns nothing a worker of the job does not already have.
"""

from __future__ import annotations

import base64
import contextlib
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

from .. import _json
from .. import errors as _errors
from ..errors import KeysplitError
from .cluster import Cluster

__all__ = ["MAX_LINE", "JobError", "Message", "clean", "run_job"]

MAX_LINE = 1 << 20
"""Largest message the child may send (a line of JSON)."""
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
    """The error the child reported, as the same keysplit class (never anything else)."""
    kind = msg.get("kind")
    cls = getattr(_errors, kind, None) if isinstance(kind, str) and kind.isidentifier() else None
    if kind == "JobError" or not (isinstance(cls, type) and issubclass(cls, KeysplitError)):
        cls = JobError
    hint = msg.get("hint")
    exc = cls.__new__(cls)
    KeysplitError.__init__(exc, clean(msg.get("message")), hint=clean(hint) if hint else None)
    return exc


@contextlib.contextmanager
def _child() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "keysplit.jobs._driver"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        close_fds=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def _send(pipe: IO[bytes], line: bytes) -> None:
    pipe.write(line + b"\n")
    pipe.flush()


def _receive(pipe: IO[bytes]) -> Message | None:
    line = pipe.readline(MAX_LINE + 1)
    if not line:
        return None
    if len(line) > MAX_LINE or not line.endswith(b"\n"):
        raise JobError("the job driver sent an oversized message")
    msg = _json.loads(line, what="job driver message", max_bytes=MAX_LINE)
    if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
        raise JobError("the job driver sent a malformed message")
    return msg


def run_job(request: dict[str, Any], cluster: Cluster, on_message: OnMessage) -> Message:
    """Run ``request`` in a child driver process on ``cluster``; return its ``done`` message.

    ``on_message`` sees every other message (progress, key requests) and may return a
    reply. An ``error`` message raises the keysplit error class it names (JobError if it
    names none); a child that dies without ``done`` is a JobError.
    """
    request = {**request, "cluster": cluster.to_doc()}
    blob = base64.b64encode(pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL))
    with _child() as proc:
        assert proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(BrokenPipeError):  # the child died at start: reported below
            _send(proc.stdin, blob)
        while True:
            try:
                msg = _receive(proc.stdout)
            except KeysplitError as exc:
                raise JobError(f"{exc}") from None
            if msg is None:
                code = proc.wait()
                raise JobError(
                    f"the job driver process ended without a result (exit code {code})",
                    hint="its log is on standard error; run the job again",
                )
            if msg["t"] == "done":
                return msg
            if msg["t"] == "error":
                raise _error(msg)
            reply = on_message(msg)
            if reply is not None:
                try:
                    _send(proc.stdin, _json_line(reply))
                except BrokenPipeError:
                    continue  # the child is gone: its end of stdout says so next


def _json_line(msg: Message) -> bytes:
    import json

    return json.dumps(msg, separators=(",", ":")).encode()


def progress_of(msg: Message) -> tuple[int, int] | None:
    """``(done, total)`` of a progress message (checked), else None."""
    if msg.get("t") != "progress":
        return None
    done, total = msg.get("done"), msg.get("total")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (done, total)):
        raise JobError("the job driver sent a malformed progress message")
    return done, total  # type: ignore[return-value]
