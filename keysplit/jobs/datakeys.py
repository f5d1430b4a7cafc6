"""The data keys a job's workers are given: picklable :class:`~keysplit.keyring.DataKeys`.

Workers run the library's one record engine (:class:`~keysplit.keyring.records.Records`)
over the keys handed to them; these are the two handles that survive pickling:

* :class:`ServiceDataKeys`: the key service (``keysplit serve``), URL and token; each
  worker process opens its own ``keysplit.Client`` and asks ``datakey`` in one batch per
  partition (the service authorizes each subject against the token's prefix).
* :func:`serve_keys`: a keyring unsealed in the driver serves raw keys (exported through
  :meth:`Records.export <keysplit.keyring.records.Records.export>`, spelling-aware) on a
  Unix socket in a private directory, authenticated with a random per-job key
  (``multiprocessing.connection``'s HMAC challenge), while the block runs; it yields a
  :class:`LoopbackDataKeys` that workers on the same host use. Frames are bytes (bounded
  JSON in, keys out), never pickles.

Neither caches; a job's workers wrap them in a per-job cache (:mod:`keysplit.jobs._cache`):
each key fetched once per job and worker, derived once while the source returns it unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client as _Connect
from multiprocessing.connection import Connection, Listener
from typing import Any

from .. import _json
from .. import errors as _errors
from ..errors import FormatError, KeysplitError
from ..keyring import UnsealedKeyring
from ..keyring.datakeys import DerivedDataKeys
from ..keyring.fleet import KeyCache
from . import _cache
from ._cache import JOBS_KEPT, MAX_KEYS

__all__ = ["LoopbackDataKeys", "ServiceDataKeys", "serve_keys", "served_here"]

_SERVED: set[str] = set()
"""Addresses of the :func:`serve_keys` sockets this process serves (its keyring is here)."""

_MAX_REQUEST = 64 << 20
_JOB_ID = re.compile(r"[0-9a-f]{32}")


class ServiceDataKeys(DerivedDataKeys):
    """A picklable :class:`DataKeys` backed by the key service (``keysplit serve``).

    Needs a token allowed ``datakey`` for the subjects. Each worker process makes one
    ``keysplit.Client(url, token=..., ca=..., cert=..., key=...)`` on first use (the TLS
    files are paths: every worker must read them).
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
    ) -> None:
        self.url, self._token, self.ca, self.cert, self.key = url, token, ca, cert, key
        self._client: Any = None

    def __repr__(self) -> str:
        return f"ServiceDataKeys({self.url!r}, token=<redacted>)"

    def __getstate__(self) -> dict[str, Any]:
        tls = {"ca": self.ca, "cert": self.cert, "key": self.key}
        return {"url": self.url, "_token": self._token, **tls, "_client": None}

    def _get_client(self) -> Any:
        if self._client is None:
            import keysplit

            make = getattr(keysplit, "Client", None)
            if make is None:
                raise KeysplitError(
                    "this keysplit has no key service client (keysplit.Client)",
                    hint="upgrade keysplit, or use serve_keys",
                )
            tls = {"ca": self.ca, "cert": self.cert, "key": self.key}
            kwargs = {k: v for k, v in tls.items() if v is not None}
            self._client = make(self.url, token=self._token, **kwargs)
        return self._client

    @property
    def keyring_id(self) -> str:
        return str(self._get_client().keyring_id())

    def export(self, subjects: Sequence[str], *, create: bool) -> list[bytes | None]:
        return list(self._get_client().fetch_datakeys(list(subjects), create=create))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


@contextlib.contextmanager
def serve_keys(keyring: UnsealedKeyring) -> Iterator[LoopbackDataKeys]:
    """Serve ``keyring``'s data keys to workers on this host while the block runs."""
    server = _KeyServer(keyring)
    with tempfile.TemporaryDirectory(prefix="keysplit-jobs-") as tmp:
        os.chmod(tmp, 0o700)
        authkey = secrets.token_bytes(32)
        listener = Listener(os.path.join(tmp, "keys.sock"), "AF_UNIX", authkey=authkey)
        stop = threading.Event()
        thread = threading.Thread(
            target=server.accept, args=(listener, stop), daemon=True, name="keysplit-jobs-keys"
        )
        thread.start()
        expiry = threading.Thread(
            target=server.expire, args=(stop,), daemon=True, name="keysplit-jobs-keys-expiry"
        )
        expiry.start()
        _SERVED.add(str(listener.address))
        try:
            yield LoopbackDataKeys(str(listener.address), authkey, keyring.keyring.keyring_id)
        finally:
            _SERVED.discard(str(listener.address))
            server.forget()
            stop.set()
            server.wake.set()
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as wake:
                wake.connect(str(listener.address))  # wakes accept(); fails its handshake
            thread.join(timeout=10)
            listener.close()


def served_here(source: object) -> bool:
    """Whether ``source`` is a :func:`serve_keys` handle served by this very process, i.e.
    this process holds the unsealed keyring and must not run a Dask client for the job
    (SECURITY.md: the driver/worker trust model)."""
    return isinstance(source, LoopbackDataKeys) and source.address in _SERVED


class _KeyServer:
    """The driver's side of :func:`serve_keys` (never pickled, never leaves the driver).

    A request may name its job (:meth:`LoopbackDataKeys.for_job`): the server then answers
    from the keys it already exported for that job and asks the keyring only for the
    others. Every worker of a job asks for the subjects of its parts, and when subjects
    recur across parts those are the same keys: each export of 10^4 keys cost the keyring
    process 35 ms (SQLite lookup, unwrap), paid once per worker and one after the other,
    so a second worker made a job slower rather than faster (issue 23). This holds a job's
    raw keys in the keyring process for the job's lifetime, as its workers hold them
    (SECURITY.md): at most :data:`~keysplit.jobs._cache.MAX_KEYS` per job and the
    :data:`~keysplit.jobs._cache.JOBS_KEPT` most recent jobs, all dropped when the
    ``serve_keys`` block ends. In time as the workers' caches: a job's keys are dropped
    once it has not asked for one for :data:`~keysplit.jobs._cache.IDLE` (60 s), and at the
    latest :data:`~keysplit.jobs._cache.MAX_AGE` (10 min) after the first was kept, by a
    thread of the block (:meth:`expire`) and before any answer (before, a job that ended,
    failed or lost its driver left its raw keys here until the block ended or two newer
    jobs came, which for a long-lived ``serve_keys`` block was never).

    A shred empties every job's keys here before the next answer: every request is
    checked against the keyring's key cache generation, which each drop bumps (a shred in
    this process, a tombstone polled from another), and against its lease: once that
    lapsed (renewals failing, so shreds elsewhere may go unheard) the keys kept here go
    and the keyring answers, which renews first or raises, as its own cache does. Before,
    a worker holding the job's authentication key could name an earlier job's id and get
    that job's keys, a subject shredded since among them, while the job was one of the two
    most recent.
    A keyring whose keys are not held here (nothing to watch) answers from the keyring
    every time.
    """

    def __init__(self, keyring: UnsealedKeyring) -> None:
        self._kr = keyring
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, dict[str, bytes]] = OrderedDict()
        self._used: dict[str, float] = {}  # job -> its last request (time.monotonic())
        self._filled: dict[str, float] = {}  # job -> when its first kept key was kept
        self.wake = threading.Event()  # the expiry thread looks again (keys kept, or stop)
        try:
            local = keyring.local_data_keys()
        except KeysplitError:  # a remote DataKeys: no drop to watch, so no job cache
            self._cache: KeyCache | None = None
            self._lease_valid: Callable[[], bool] = lambda: False
        else:
            self._cache, self._lease_valid = local.cache, local.member.valid
        self._generation = self._cache.generation if self._cache is not None else 0

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("the driver's key server cannot be sent to workers")

    def forget(self) -> None:
        with self._lock:
            for keys in self._jobs.values():
                keys.clear()
            self._jobs.clear()
            self._used.clear()
            self._filled.clear()

    def _drop_due(self, now: float) -> float | None:
        """(Under the lock) Empty each job's keys due at ``now``; when the next are due
        (None: no key kept)."""
        soonest = None
        for job, keys in self._jobs.items():
            if not keys:
                continue
            due = min(self._used[job] + _cache.IDLE, self._filled[job] + _cache.MAX_AGE)
            if due <= now:
                keys.clear()
            else:
                soonest = due if soonest is None else min(soonest, due)
        return soonest

    def expire(self, stop: threading.Event) -> None:
        """(The block's daemon thread) Empty each job's keys once due, until ``stop``."""
        while not stop.is_set():
            self.wake.clear()  # before looking: keys kept meanwhile wake the next wait
            with self._lock:
                now = time.monotonic()
                soonest = self._drop_due(now)
            self.wake.wait(None if soonest is None else soonest - now)

    def accept(self, listener: Listener, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                conn = listener.accept()
            except (OSError, EOFError, ValueError, AuthenticationError):  # bad key, or closed
                if stop.is_set():
                    return
                continue
            if stop.is_set():
                conn.close()
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _export(self, subjects: list[str], create: bool, job: str | None) -> list[bytes | None]:
        """(Under the lock) the keys of ``subjects``: for a job, those it was given
        already from its cache, the others from the keyring."""
        if job is None or self._cache is None:
            return self._kr.records.export(subjects, create=create)
        gen = self._cache.generation
        # a drop since the keys here were exported, or a lapsed lease (shreds elsewhere
        # may be unheard; the keyring renews before it answers): forget them
        if gen != self._generation or not self._lease_valid():
            for old in self._jobs.values():
                old.clear()
            self._generation = gen
        now = time.monotonic()
        self._drop_due(now)  # (the expiry thread may not have run yet)
        keys = self._jobs.get(job)
        if keys is None:
            keys = self._jobs[job] = {}
            while len(self._jobs) > JOBS_KEPT:
                old_job, old = self._jobs.popitem(last=False)
                old.clear()
                self._used.pop(old_job, None)
                self._filled.pop(old_job, None)
        else:
            self._jobs.move_to_end(job)
        self._used[job] = now
        wanted = [s for s in dict.fromkeys(subjects) if s not in keys]
        if wanted:
            got = self._kr.records.export(wanted, create=create)
            if len(keys) + len(wanted) > MAX_KEYS:
                keys.clear()
            fresh = {s: k for s, k in zip(wanted, got, strict=True) if k is not None}
            if self._cache.generation == gen:  # else a key read before a drop: not kept
                if fresh and not keys:
                    self._filled[job] = now
                    self.wake.set()  # the expiry thread may be waiting for no key at all
                keys.update(fresh)
            return [keys.get(s) or fresh.get(s) for s in subjects]
        return [keys[s] for s in subjects]

    def _handle(self, conn: Connection) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv_bytes(_MAX_REQUEST)
                except (EOFError, OSError):
                    return
                try:
                    doc = _json.loads(data, what="data key request", max_bytes=_MAX_REQUEST)
                    subjects, create, job = doc["subjects"], doc["create"], doc.get("job")
                    if (
                        not isinstance(subjects, list)
                        or not isinstance(create, bool)
                        or not (job is None or (isinstance(job, str) and _JOB_ID.fullmatch(job)))
                    ):
                        raise FormatError("malformed data key request")
                    with self._lock:
                        keys = self._export(subjects, create, job)
                    present = bytes(k is not None for k in keys)
                    reply = b"\x00" + present + b"".join(k for k in keys if k is not None)
                except (KeysplitError, ValueError, TypeError, KeyError) as exc:
                    kind = type(exc).__name__ if isinstance(exc, KeysplitError) else "error"
                    reply = b"\x01" + f"{kind}\x00{exc}".encode()
                conn.send_bytes(reply)


def _server_error(kind: str, message: str) -> KeysplitError:
    """The key server's error as the worker raises it: a class of :mod:`keysplit.errors`
    by its name (a closed keyring stays a ``KeyringError``, a bad subject a
    ``FormatError``), built without its constructor as the job driver rebuilds errors;
    any other keysplit class is a :class:`KeysplitError` whose text starts with its name."""
    # "error": a failure that was no keysplit error (a bad request), sent without a class
    return _errors.by_name("KeysplitError" if kind == "error" else kind, message)


class LoopbackDataKeys(DerivedDataKeys):
    """The workers' handle on :func:`serve_keys` (one connection per thread)."""

    def __init__(
        self, address: str, authkey: bytes, keyring_id: str, job: str | None = None
    ) -> None:
        self.address, self._authkey, self._keyring_id = address, authkey, keyring_id
        self.job = job
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"LoopbackDataKeys({self.address!r}, <redacted>)"

    def __getstate__(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "_authkey": self._authkey,
            "kid": self._keyring_id,
            "job": self.job,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["address"], state["_authkey"], state["kid"], state.get("job")
        )

    def for_job(self, job_id: str) -> LoopbackDataKeys:
        """This handle for one job: the server answers the job's repeated subjects from
        the keys it exported for the job (see :class:`_KeyServer`)."""
        if not _JOB_ID.fullmatch(job_id):
            raise ValueError("a job id is 32 hex digits")
        return type(self)(self.address, self._authkey, self._keyring_id, job_id)

    @property
    def keyring_id(self) -> str:
        return self._keyring_id

    def export(self, subjects: Sequence[str], *, create: bool) -> list[bytes | None]:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _Connect(self.address, "AF_UNIX", authkey=self._authkey)
            self._local.conn = conn
        n = len(subjects)
        request = {"subjects": list(subjects), "create": create, "job": self.job}
        conn.send_bytes(json.dumps(request).encode())
        reply = conn.recv_bytes(17 * n + (1 << 16))
        if reply[:1] == b"\x00" and len(reply) >= 1 + n:
            present = reply[1 : 1 + n]
            if len(reply) == 1 + n + 16 * sum(present) and set(present) <= {0, 1}:
                out: list[bytes | None] = []
                pos = 1 + n
                for p in present:
                    out.append(reply[pos : pos + 16] if p else None)
                    pos += 16 * p
                return out
            raise FormatError("malformed reply from the job's key server")
        kind, _, message = reply[1:].decode(errors="replace").partition("\x00")
        raise _server_error(kind, message)

    def close(self) -> None:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
