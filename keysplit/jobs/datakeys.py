"""Where a partition gets its data keys: the :class:`DataKeySource` protocol.

``datakeys(subjects, create=...)`` returns one raw 16-byte data key per subject, in order,
and raises :class:`~keysplit.errors.IntegrityError` if a subject has none (``create=False``),
which is exactly ``keysplit.Client.datakeys`` (the key service's batch ``datakey``
endpoint): a ``Client`` *is* a source. Since a source is called on the workers, it must
survive pickling; :class:`ServiceDataKeys` is the picklable handle (URL and token; each
worker process opens its own ``keysplit.Client``).

:class:`LocalDataKeys` serves an :class:`~keysplit.UnsealedKeyring` held by the driver
(tests, single-host jobs): it refuses to be pickled, and :meth:`LocalDataKeys.serve`
opens a loopback listener on a Unix socket in a private directory, authenticated with a
random per-job key (``multiprocessing.connection``'s HMAC challenge), and yields a
picklable source that workers on the same host use. Frames are bytes (bounded JSON in,
keys out), never pickles.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import tempfile
import threading
from collections.abc import Iterator, Sequence
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client as _Connect
from multiprocessing.connection import Connection, Listener
from typing import Any, Protocol, runtime_checkable

from .. import _json
from ..errors import FormatError, IntegrityError, KeysplitError
from ..keyring import UnsealedKeyring
from . import _access

__all__ = ["DataKeySource", "LocalDataKeys", "ServiceDataKeys"]

_MAX_REQUEST = 64 << 20
_ERRORS: dict[str, type[KeysplitError]] = {"IntegrityError": IntegrityError}


@runtime_checkable
class DataKeySource(Protocol):
    """Raw data keys for subjects, in one batch (``keysplit.Client`` satisfies it)."""

    def datakeys(self, subjects: Sequence[str], *, create: bool = True) -> list[bytes]:
        """One 16-byte key per subject; IntegrityError if one has none and not ``create``."""
        ...


class ServiceDataKeys:
    """A picklable source backed by the key service (``keysplit serve``).

    Needs a token allowed ``datakey`` for the subjects. Each worker process makes one
    ``keysplit.Client(url, token=..., ca=...)`` on first use.
    """

    def __init__(self, url: str, token: str, *, ca: str | None = None) -> None:
        self.url, self._token, self.ca = url, token, ca
        self._client: DataKeySource | None = None

    def __repr__(self) -> str:
        return f"ServiceDataKeys({self.url!r}, token=<redacted>)"

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "_token": self._token, "ca": self.ca, "_client": None}

    def datakeys(self, subjects: Sequence[str], *, create: bool = True) -> list[bytes]:
        if self._client is None:
            import keysplit

            make = getattr(keysplit, "Client", None)
            if make is None:
                raise KeysplitError(
                    "this keysplit has no key service client (keysplit.Client)",
                    hint="upgrade keysplit, or use LocalDataKeys",
                )
            kwargs = {} if self.ca is None else {"ca": self.ca}
            self._client = make(self.url, token=self._token, **kwargs)
        assert self._client is not None
        return self._client.datakeys(subjects, create=create)


class LocalDataKeys:
    """Data keys from an unsealed keyring in this process (the driver)."""

    def __init__(self, keyring: UnsealedKeyring) -> None:
        self._kr = keyring
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalDataKeys({self._kr!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("LocalDataKeys cannot be sent to workers; use its serve() handle")

    def datakeys(self, subjects: Sequence[str], *, create: bool = True) -> list[bytes]:
        with self._lock:
            return _access.data_keys(self._kr, list(subjects), create=create)

    @contextlib.contextmanager
    def serve(self) -> Iterator[DataKeySource]:
        """Serve this keyring's data keys to workers on this host while the block runs."""
        with tempfile.TemporaryDirectory(prefix="keysplit-jobs-") as tmp:
            os.chmod(tmp, 0o700)
            authkey = secrets.token_bytes(32)
            listener = Listener(os.path.join(tmp, "keys.sock"), "AF_UNIX", authkey=authkey)
            stop = threading.Event()
            thread = threading.Thread(
                target=self._accept,
                args=(listener, stop),
                daemon=True,
                name="keysplit-jobs-keys",
            )
            thread.start()
            try:
                yield _LoopbackDataKeys(str(listener.address), authkey)
            finally:
                stop.set()
                with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as wake:
                    wake.connect(str(listener.address))  # wakes accept(); fails its handshake
                thread.join(timeout=10)
                listener.close()

    def _accept(self, listener: Listener, stop: threading.Event) -> None:
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

    def _handle(self, conn: Connection) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv_bytes(_MAX_REQUEST)
                except (EOFError, OSError):
                    return
                try:
                    doc = _json.loads(data, what="data key request", max_bytes=_MAX_REQUEST)
                    subjects, create = doc["subjects"], doc["create"]
                    if not isinstance(subjects, list) or not isinstance(create, bool):
                        raise FormatError("malformed data key request")
                    reply = b"\x00" + b"".join(self.datakeys(subjects, create=create))
                except (KeysplitError, ValueError, TypeError, KeyError) as exc:
                    kind = type(exc).__name__ if isinstance(exc, IntegrityError) else "error"
                    reply = b"\x01" + f"{kind}\x00{exc}".encode()
                conn.send_bytes(reply)


class _LoopbackDataKeys:
    """The workers' handle on :meth:`LocalDataKeys.serve` (one connection per thread)."""

    def __init__(self, address: str, authkey: bytes) -> None:
        self.address, self._authkey = address, authkey
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"_LoopbackDataKeys({self.address!r}, <redacted>)"

    def __getstate__(self) -> dict[str, Any]:
        return {"address": self.address, "_authkey": self._authkey}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["address"], state["_authkey"])  # type: ignore[misc]

    def datakeys(self, subjects: Sequence[str], *, create: bool = True) -> list[bytes]:
        import json

        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _Connect(self.address, "AF_UNIX", authkey=self._authkey)
            self._local.conn = conn
        conn.send_bytes(json.dumps({"subjects": list(subjects), "create": create}).encode())
        reply = conn.recv_bytes(16 * len(subjects) + (1 << 16))
        if reply[:1] == b"\x00" and len(reply) == 1 + 16 * len(subjects):
            return [reply[1 + 16 * i : 17 + 16 * i] for i in range(len(subjects))]
        kind, _, message = reply[1:].decode(errors="replace").partition("\x00")
        raise _ERRORS.get(kind, KeysplitError)(message)
