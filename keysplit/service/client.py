"""``keysplit.Client``: the record API of :class:`UnsealedKeyring`, served by ``keysplit serve``.

Only the standard library's ``http.client`` (over ``AF_UNIX`` or TLS): a backend that
imports the client pulls in no HTTP stack. A streamed batch answer is decoded as it
arrives (:func:`~._wire.read_frame`), never held as one buffer. Each thread gets its own
keep-alive connection, so one ``Client`` can be shared by a thread pool. Errors are the same
:mod:`keysplit.errors` subclasses the keyring raises (``SealedError`` while the service is
sealed, ``PermissionDenied`` for a missing, revoked or out-of-policy token).

Optional data-key cache (``cache_max_age`` seconds and/or ``cache_max_records`` per key;
off by default): ``encrypt``/``decrypt`` then run the library's one record engine
(:class:`~keysplit.keyring.records.Records`) over a :class:`~.remote.RemoteDataKeys`,
which fetches raw data keys in batches from the ``datakey`` endpoint, so records are
sealed locally at library speed. A cached key outlives a ``shred`` or ``seal`` on the
server until it expires, and never longer than the fleet's lease ``ttl``
(``KEYSPLIT_LEASE_TTL``, default 10 s) whatever ``cache_max_age`` says; at most
``KEYSPLIT_CACHE_KEYS`` keys are kept (LRU). SECURITY.md spells out the trade-off.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import math
import os
import select
import socket
import ssl
import struct
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .. import names
from .. import record as fmt
from ..errors import FormatError, IntegrityError, KeysplitError, NoDataKeyError, ShreddedError
from ..keyring import KeyringStatus
from ..keyring.admin import check_hold
from ..keyring.records import Records
from . import _wire as wire
from .remote import RemoteDataKeys
from .unseal import seal_share_for

__all__ = ["Client", "ServiceError"]

_MISSING = (IntegrityError, NoDataKeyError, ShreddedError)  # "no key for this subject"

Context = Mapping[str, str] | Sequence[Mapping[str, str] | None] | None
Body = bytes | Sequence[bytes]
"""A request body: one buffer, or several sent in order (a frame's :func:`encode_parts`)."""

SEND_BUFFER = 4 << 20
"""SO_SNDBUF of a Unix-socket connection: with the default ~200 KiB a 1 MiB batch crossed
in five sleep/wake-up rounds between client and server."""
_IOV_MAX = 1024


class ServiceError(KeysplitError):
    """The key service could not be reached or answered something unexpected."""


MIN_RATE = 64 << 10
"""Bytes per second a call moves, at the least, under the default deadline: a call may take
``timeout`` plus the time its request and the largest answer the client accepts
(:func:`~._wire.response_limit`) take at this rate (a 1 MiB answer: 16 s more; a 256 MiB
batch over a slow link: hours, still bounded). A fixed default of ``timeout`` cut a big
batch that was steadily moving over a slow link; a server trickling a byte at a time is
still ended."""


def default_deadline(timeout: float, size: int, limit: int) -> float:
    """The whole-call bound of a request of ``size`` bytes whose answer may be up to
    ``limit`` bytes, when the client was given no ``deadline`` (whole seconds)."""
    return float(math.ceil(timeout + (size + limit) / MIN_RATE))


class _DeadlinePassed(TimeoutError):
    """The call's whole deadline passed (not one socket operation's timeout)."""


class _Clock:
    """The deadline of the call a connection is making (``time.monotonic()`` seconds) and
    the longest one socket operation may take (the client's ``timeout``)."""

    __slots__ = ("deadline", "op", "total")

    def __init__(self, op: float) -> None:
        self.op, self.total = op, math.inf
        self.deadline = math.inf

    def start(self, total: float, deadline: float) -> None:
        """A call (or its retry on a new connection) runs on this connection: it must end
        by ``deadline`` (``time.monotonic()``), ``total`` seconds from its start."""
        self.total, self.deadline = total, deadline

    def left(self) -> float:
        """Seconds the next socket operation may take; TimeoutError once the call's
        deadline has passed (a server trickling its answer byte by byte reset ``op``'s
        timeout with every byte: a call could last for ever)."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.expired()
        return min(self.op, left)

    def expired(self) -> TimeoutError:
        return _DeadlinePassed(f"no complete answer within the call's deadline ({self.total:g} s)")

    def name(self, exc: BaseException) -> BaseException:
        """``exc``, or the deadline's error for a timeout that ended the call at it."""
        if isinstance(exc, TimeoutError) and time.monotonic() >= self.deadline:
            return self.expired()
        return exc


class _DeadlineIO:
    """Socket methods that bound each operation by the connection's :class:`_Clock`
    (mixed into the Unix socket and the TLS socket class the client creates)."""

    _clock: _Clock | None = None

    def _arm(self) -> None:
        if self._clock is not None:
            self.settimeout(self._clock.left())  # type: ignore[attr-defined]

    def recv_into(self, *args: Any, **kw: Any) -> int:
        self._arm()
        return super().recv_into(*args, **kw)  # type: ignore[misc, no-any-return]

    def recv(self, *args: Any, **kw: Any) -> bytes:
        self._arm()
        return super().recv(*args, **kw)  # type: ignore[misc, no-any-return]

    def send(self, *args: Any, **kw: Any) -> int:
        self._arm()
        return super().send(*args, **kw)  # type: ignore[misc, no-any-return]

    def sendall(self, *args: Any, **kw: Any) -> None:
        self._arm()
        super().sendall(*args, **kw)  # type: ignore[misc]

    def sendmsg(self, *args: Any, **kw: Any) -> int:
        self._arm()
        return super().sendmsg(*args, **kw)  # type: ignore[misc, no-any-return]


class _DeadlineSocket(_DeadlineIO, socket.socket):
    pass


class _DeadlineSSLSocket(_DeadlineIO, ssl.SSLSocket):  # type: ignore[misc]  # (no sendmsg)
    pass


class _HTTPSConnection(http.client.HTTPSConnection):
    """HTTPS whose socket keeps to the call's deadline (:class:`_Clock`); the TLS context's
    ``sslsocket_class`` is :class:`_DeadlineSSLSocket`."""

    answered = cut_ok = False  # of the exchange in progress (Client._call)

    def __init__(self, host: str, port: int, clock: _Clock, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=clock.op, context=context)
        self.clock = clock

    def connect(self) -> None:
        self.timeout = self.clock.left()  # connect and handshake within the deadline too
        super().connect()
        if isinstance(self.sock, _DeadlineIO):
            self.sock._clock = self.clock


class _UnixConnection(http.client.HTTPConnection):
    """http.client over ``AF_UNIX``; a request's header block and body buffers leave in
    one ``sendmsg`` (:meth:`send_parts`), so the server wakes up once per request."""

    answered = cut_ok = False  # of the exchange in progress (Client._call)

    def __init__(self, path: str, clock: _Clock) -> None:
        super().__init__("localhost", timeout=clock.op)
        self._path = path
        self._held: list[Any] | None = None
        self.clock = clock

    def send(self, data: Any) -> None:
        if self._held is None:
            super().send(data)
            return
        if self.sock is None:
            self.connect()
        self._held.append(data)

    def send_parts(self, parts: list[Any]) -> None:
        """Finish the request begun with ``putrequest``/``putheader``: its headers and
        then ``parts`` as the body."""
        self._held = []
        try:
            self.endheaders()  # http.client hands its header block to send()
            held = self._held
        finally:
            self._held = None
        assert self.sock is not None
        _sendmsg_all(self.sock, held + parts)

    def connect(self) -> None:
        s = _DeadlineSocket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.clock.left())
        with contextlib.suppress(OSError):  # a batch goes out in one call (the kernel caps it)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        try:
            s.connect(self._path)
        except OSError:
            s.close()
            raise
        s._clock = self.clock
        self.sock = s


class _FrameConn:
    """A connection of the Unix socket's frame transport (:mod:`._frames`): ``encrypt``
    and ``decrypt`` batches without HTTP. The socket blocks, each read bounded by
    ``SO_RCVTIMEO`` set from the call's :class:`_Clock` (so one ``recv(k, MSG_WAITALL)``
    takes ``k`` bytes in one system call); the request goes out without blocking."""

    answered = cut_ok = False  # of the exchange in progress (Client._call)

    def __init__(self, path: str, clock: _Clock) -> None:
        self.path, self.clock = path, clock
        self.sock: socket.socket | None = None

    def connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(self.clock.left())
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            s.connect(self.path)
            s.settimeout(None)
        except BaseException:
            s.close()
            raise
        self.sock = s
        return s

    def _arm(self, option: int) -> socket.socket:
        assert self.sock is not None
        left = self.clock.left()  # TimeoutError once the call's deadline passed
        sec = int(left)
        usec = max(1, int((left - sec) * 1e6)) if sec == 0 else int((left - sec) * 1e6)
        self.sock.setsockopt(socket.SOL_SOCKET, option, _TIMEVAL.pack(sec, usec))
        return self.sock

    def send(self, parts: list[Any]) -> None:
        """``parts`` in order, each ``sendmsg`` without blocking (``MSG_DONTWAIT``): while
        the socket is full, it is tried again every :data:`_SEND_SLICE` seconds (or as soon
        as it polls writable), until the call's deadline, or ``timeout`` seconds without
        progress. (A blocking ``sendmsg`` under ``SO_SNDTIMEO``, which bounds each wait of
        the kernel for buffer space, not the system call, lasted as long as a peer taking
        the request a little at a time liked.)"""
        sock = self.sock
        assert sock is not None
        sent = 0
        if len(parts) <= _IOV_MAX:  # the common case: the whole request in one sendmsg
            with contextlib.suppress(BlockingIOError):
                sent = sock.sendmsg(parts, (), socket.MSG_DONTWAIT)
            if sent == sum(map(len, parts)):
                return
        room = select.poll()
        room.register(sock, select.POLLOUT)
        views = [memoryview(p) for p in parts if len(p)]
        i, moved = 0, time.monotonic()
        while True:
            while sent:  # past the buffers sent whole, into the one sent in part
                n = len(views[i])
                if sent < n:
                    views[i], sent = views[i][sent:], 0
                    break
                sent -= n
                i += 1
            if i >= len(views):
                return
            try:
                sent = sock.sendmsg(views[i : i + _IOV_MAX], (), socket.MSG_DONTWAIT)
            except BlockingIOError:
                left = self.clock.left()  # TimeoutError once the call's deadline passed
                if time.monotonic() - moved >= self.clock.op:
                    raise TimeoutError("the key service did not take the request in time") from None
                room.poll(math.ceil(min(left, _SEND_SLICE) * 1000))
                continue
            moved = time.monotonic()

    def read(self, k: int) -> bytes:
        """``k`` bytes, fewer only where the connection ended."""
        got = b""
        while len(got) < k:
            try:
                more = self._arm(socket.SO_RCVTIMEO).recv(k - len(got), socket.MSG_WAITALL)
            except BlockingIOError:  # SO_RCVTIMEO passed with nothing read
                raise TimeoutError("the key service did not answer in time") from None
            if not more:
                break
            got = more if not got else got + more
        return got

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


_TIMEVAL = struct.Struct("@ll")
_SEND_SLICE = 0.05
"""Seconds between tries of a frame request's ``sendmsg`` while the socket is full (it
polls writable only once the peer took three quarters of the buffer)."""
_HTTPConn = _UnixConnection | _HTTPSConnection
_C = TypeVar("_C", _UnixConnection | _HTTPSConnection, _FrameConn)
_T = TypeVar("_T")
_TRANSPORT = (TimeoutError, ConnectionError, http.client.HTTPException, OSError, wire.ShortRead)
"""What ends an attempt as a transport failure (:meth:`Client._call`)."""
_STALE = (BrokenPipeError, ConnectionResetError)
"""A kept-alive connection the server closed before it read the request (http.client's
``RemoteDisconnected`` is a ``ConnectionResetError``): sent once more, on a new one."""


class Client:
    """A connection to a keysplit key service (``unix:/path`` or ``https://host:port``).

    ``token`` is the bearer token (from ``keysplit token create``); ``ca`` a CA bundle to
    verify the server's certificate; ``cert``/``key`` a client certificate for mTLS.
    ``timeout`` bounds each socket operation (connect, send, one read), ``deadline`` one
    whole call, from its first byte sent to the last byte of its answer: a server that
    trickles its answer cannot hold a call longer. Without ``deadline`` the bound is
    ``timeout`` plus the time the call's bytes take at :data:`MIN_RATE` (64 KiB/s;
    :func:`default_deadline`), so a big batch moving steadily over a slow link is not cut.
    A call past either raises :class:`ServiceError` and is not sent again.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        timeout: float = 60.0,
        cache_max_age: float | None = None,
        cache_max_records: int | None = None,
        deadline: float | None = None,
    ) -> None:
        self.url = url
        self._token = token.strip() if token else None
        if self._token is not None and not (self._token.isascii() and self._token.isprintable()):
            raise ValueError("token must be printable ASCII (as keysplit token create prints)")
        self._token_bytes = (self._token or "").encode("ascii")  # a frame request's
        self._bearer = f"Bearer {self._token}"  # an HTTP request's (once, not per call)
        self._timeout = _seconds(timeout, "timeout")
        self._deadline = None if deadline is None else _seconds(deadline, "deadline")
        self._local = threading.local()
        if url.startswith("unix:"):
            self._unix: str | None = url[5:]
            if not self._unix:
                raise ValueError("unix: URL needs a socket path")
            self._ssl: ssl.SSLContext | None = None
            self._host = ""
            self._port = 0
        else:
            parts = urlsplit(url)
            if parts.scheme != "https" or not parts.hostname:
                raise ValueError("url must be unix:/path/to/socket or https://host:port")
            if "@" in parts.netloc:  # kept whole, the URL is in the repr and every error
                raise ValueError(
                    "the key service URL carries no user or password: give the token as token="
                )
            self._unix = None
            self._host = parts.hostname
            self._port = parts.port or 443
            self._ssl = ssl.create_default_context(cafile=ca)
            self._ssl.sslsocket_class = _DeadlineSSLSocket
            if cert:
                self._ssl.load_cert_chain(cert, key)
        # not "v <= 0": NaN passed it and then never expired a key (nan compares false)
        if cache_max_age is not None and (isinstance(cache_max_age, bool) or not cache_max_age > 0):
            raise ValueError("cache_max_age must be positive")
        if cache_max_records is not None and (
            isinstance(cache_max_records, bool)
            or not isinstance(cache_max_records, int)
            or cache_max_records <= 0
        ):
            raise ValueError("cache_max_records must be a positive int")
        self._cache_lock = threading.Lock()
        self._conns: list[_HTTPConn | _FrameConn] = []
        _CLIENTS.add(self)  # a fork's child drops the connections (see _forked)
        self._frames = self._unix is not None
        """Batches go over the frame transport (Unix socket); False once the server turned
        out not to speak it (an older ``keysplit serve``: HTTP from then on)."""
        self._remote: RemoteDataKeys | None = None
        self._records: Records | None = None
        if cache_max_age is not None or cache_max_records is not None:
            self._remote = RemoteDataKeys(
                self, max_age=cache_max_age, max_records=cache_max_records
            )
            self._records = Records(self._remote)

    def __repr__(self) -> str:
        return f"Client({self.url!r}, token={'<set>' if self._token else None})"

    @property
    def caching(self) -> bool:
        return self._records is not None

    # -- transport ------------------------------------------------------------------------------

    def _conn(self) -> _HTTPConn:
        c: _HTTPConn | None = getattr(self._local, "conn", None)
        if c is None:
            clock = _Clock(self._timeout)
            if self._unix is not None:
                c = _UnixConnection(self._unix, clock)
            else:
                assert self._ssl is not None
                c = _HTTPSConnection(self._host, self._port, clock, self._ssl)
            self._local.conn = c
            with self._cache_lock:
                self._conns.append(c)
        return c

    def close(self) -> None:
        """Close every thread's connection and forget cached keys (the client stays usable:
        the next call reconnects)."""
        with self._cache_lock:
            conns, self._conns = self._conns, []
        for c in conns:
            c.close()
        self._local = threading.local()
        self.drop_cache()

    def _forked(self) -> None:
        """In a forked child: forget the parent's connections (closing this process's copy
        of each descriptor only). Used here, one would carry the child's requests on the
        parent's connection, and each process read whichever answer came first: the
        parent's plaintext to the child, or the child's records to the parent."""
        conns, self._conns = self._conns, []
        self._local = threading.local()
        self._cache_lock = threading.Lock()  # (another thread may have held it at the fork)
        if self._remote is not None:
            self._remote.forked()
        for c in conns:
            with contextlib.suppress(OSError):
                c.close()

    @staticmethod
    def _forked_all() -> None:
        for client in list(_CLIENTS):
            client._forked()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        body: Body = b"",
        content_type: str = wire.JSON_TYPE,
        *,
        auth: bool = True,
        items: int = 0,
        retry: bool = True,
    ) -> tuple[bytes, str]:
        """One HTTP exchange; returns (body, content type) or raises the mapped error.

        A kept-alive connection the server has closed meanwhile (its idle timeout) is
        replaced before the request goes out. ``retry``: if a kept-alive connection still
        turns out closed after sending, send once more on a new one; ``False`` for a
        request that changes state (shred, rotate, seal, unseal), which the server may
        have run before it went away (a worker killed mid-request): it is never sent twice.

        ``body`` may be a list of buffers (a frame from :func:`~._wire.encode_parts`):
        over a Unix socket they go out with ``sendmsg``, never joined. The response is
        read only up to :func:`keysplit.service._wire.response_limit` of the request (its
        size and ``items``): a server, or whatever answers in its place, cannot make the
        client buffer more than that.
        """
        data, ctype = self._exchange(method, path, body, content_type, auth, items, retry, False)
        return data, ctype

    def _frame_request(
        self,
        path: str,
        body: Body,
        items: int,
        *,
        stream_ok: bool = False,
        begun: float | None = None,
    ) -> tuple[dict[str, Any], list[str], list[bytes | None]]:
        """POST a batch frame and decode the answer's, with the checks of :meth:`request`.
        A streamed answer (``encrypt``, or a ``decrypt`` asked with ``stream_ok``; header
        ``Keysplit-Streamed: 1``) is decoded as it arrives (:func:`~._wire.read_frame`: its
        items are cut while the server still makes the last ones); a whole answer is read
        at once, then decoded. With ``stream_ok``, a streamed answer the server cut short
        raises :class:`_StreamCut` (the caller asks again, without it, passing ``begun``:
        the cut call's start, so both share one deadline)."""
        if self._frames and path in wire.FRAME_OPS:
            framed = self._frames_exchange(path, body, items, stream_ok, begun)
            if framed is not None:
                return framed
        got, _ = self._exchange(
            "POST", path, body, wire.BATCH_TYPE, True, items, True, True, stream_ok, begun
        )
        return got  # type: ignore[no-any-return]

    def _fconn(self) -> _FrameConn:
        c: _FrameConn | None = getattr(self._local, "frames", None)
        if c is None:
            assert self._unix is not None
            c = _FrameConn(self._unix, _Clock(self._timeout))
            self._local.frames = c
            with self._cache_lock:
                self._conns.append(c)
        return c

    def _call(
        self,
        connection: Callable[[], _C],
        attempt: Callable[[_C, int], _T],
        size: int,
        items: int,
        retry: bool,
        begun: float | None,
    ) -> _T:
        """The one deadline, retry and failure policy of an exchange, over either transport
        (``connection()``: this thread's HTTP or frame connection; ``attempt(conn, limit)``
        sends the request on it and reads the answer, at most ``limit`` bytes of it,
        noting on ``conn`` whether an answer began and whether a cut is a stream's):

        * one deadline per call (``begun``: a call begun then asks again, a cut stream's
          second ask, and keeps that call's deadline), the retry on a new connection
          included; a kept-alive connection the server closed meanwhile is replaced first;
        * a malformed answer (:class:`FormatError`) drops the connection, nothing more of it
          is read; so does any other way out but an answer returned (an interrupt, an error
          answer of the frame transport): no request stays in flight on a connection the
          next call would use;
        * a transport failure drops it; a streamed answer asked with ``stream_ok`` that was
          cut (not timed out) raises :class:`_StreamCut` (asked again, whole); a kept-alive
          connection that turned out closed before any answer began (the server's idle
          bound: it never saw the request) is tried once more on a new one if ``retry``;
          never after a timeout; anything else is a :class:`ServiceError`."""
        limit = wire.response_limit(size, items)
        bound = self._deadline or default_deadline(self._timeout, size, limit)
        ends = (time.monotonic() if begun is None else begun) + bound
        for n in (0, 1):
            conn = connection()  # the retry's is a new connection: its clock is set too
            conn.clock.start(bound, ends)
            if conn.sock is not None and _closed_by_peer(conn.sock):
                conn.close()  # reconnected below (http.client: on its next send)
            reused = conn.sock is not None
            conn.answered = conn.cut_ok = False
            try:
                return attempt(conn, limit)
            except FormatError:  # a malformed answer: the rest of it is never read
                self._drop(conn)
                raise
            except _TRANSPORT as exc:
                reached = begun is not None or conn.sock is not None  # the service is there
                self._drop(conn)
                if conn.cut_ok and not isinstance(exc, TimeoutError):
                    raise _StreamCut() from None  # a streamed decrypt the server cut: again whole
                stale = retry and reused and not conn.answered and isinstance(exc, _STALE)
                if n == 1 or not stale:
                    # a server that answers too slowly (or trickles) was reached all the
                    # same: "cannot reach" sent people to check a service that was up
                    raise self._failed(exc, conn.clock, bound, reached=reached) from None
            except BaseException:  # an interrupt mid-call, an error answer: its request may
                self._drop(conn)  # be in flight still, its answer never for the next
                raise
        raise AssertionError("unreachable")

    def _frames_exchange(
        self, path: str, body: Body, items: int, stream_ok: bool, begun: float | None
    ) -> tuple[dict[str, Any], list[str], list[bytes | None]] | None:
        """:meth:`_exchange` of a batch over the frame transport (the same :meth:`_call`
        policy); None if the server does not speak it (it answered HTTP: it never ran the
        request)."""
        parts, size = _parts(body)
        token = self._token_bytes
        flags = wire.FRAME_STREAM_OK if stream_ok else 0
        op = wire.FRAME_OPS[path]
        head = wire.FRAME_REQUEST.pack(
            wire.FRAMES_MAGIC, wire.FRAMES_VERSION, op, flags, 0, len(token), size
        )

        def attempt(
            fc: _FrameConn, limit: int
        ) -> tuple[dict[str, Any], list[str], list[bytes | None]] | None:
            if fc.sock is None:
                fc.connect()
            # refused before the body was read (a token): its answer is there to read
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                fc.send([head, token, *parts])
            lead = fc.read(wire.FRAME_ANSWER.size)
            if lead[:4] == b"HTTP":  # an older server: it answered 400 and ran nothing
                self._frames = False
                self._drop(fc)
                return None
            if not lead:
                raise http.client.RemoteDisconnected("closed without an answer")
            if len(lead) < wire.FRAME_ANSWER.size or lead[:4] != wire.FRAMES_MAGIC:
                raise FormatError("key service response: not a keysplit answer frame")
            fc.answered = True
            _, status, aflags, length = wire.FRAME_ANSWER.unpack(lead)
            if length > limit:
                raise self._too_large(limit)
            if status != 200:  # the connection is dropped (a refused head closes it there)
                data = fc.read(length)
                if len(data) < length:  # a transport failure, as a short 200 answer
                    raise wire.ShortRead(f"an error answer ended at {len(data):,} bytes")
                raise wire.error_from_body(data, status)
            fc.cut_ok = stream_ok and bool(aflags & wire.FRAME_STREAMED)
            if length > wire.READ_PIECE or fc.cut_ok:
                return wire.read_frame(fc.read, length, "key service response")
            data = fc.read(length)  # small: in one recv, not one per part of the frame
            if len(data) < length:
                raise wire.ShortRead(f"the answer ended at {len(data):,} of {length:,} bytes")
            return wire.decode_frame(data, "key service response")

        return self._call(self._fconn, attempt, size, items, True, begun)

    def _too_large(self, limit: int) -> ServiceError:
        return ServiceError(
            f"the key service at {self.url} sent a response larger than {limit:,} bytes",
            hint="is the URL a keysplit key service?",
        )

    def _failed(
        self, exc: BaseException, clock: _Clock, bound: float, *, reached: bool
    ) -> ServiceError:
        """The :class:`ServiceError` of a failed exchange (``reached``: the service was)."""
        exc = clock.name(exc)
        if reached and isinstance(exc, _DeadlinePassed):
            return ServiceError(
                f"the key service at {self.url} was reached but did not answer "
                f"completely within the call's deadline ({bound:g} s)",
                hint="a busy service or a slow link: give the client a longer "
                "deadline (Client(deadline=SECONDS))",
            )
        if isinstance(exc, wire.ShortRead):
            exc = http.client.IncompleteRead(b"")
        return ServiceError(
            f"cannot reach the key service at {self.url}: {exc}",
            hint=self._transport_hint(exc),
        )

    def _exchange(
        self,
        method: str,
        path: str,
        body: Body,
        content_type: str,
        auth: bool,
        items: int,
        retry: bool,
        frame: bool,
        stream_ok: bool = False,
        begun: float | None = None,
    ) -> tuple[Any, str]:
        """One HTTP exchange under the :meth:`_call` policy. ``begun``: this exchange asks
        again what a call begun then (``time.monotonic()``) already asked the service (a
        cut streamed decrypt): it keeps that call's deadline."""
        parts, size = _parts(body)

        def attempt(conn: _HTTPConn, limit: int) -> tuple[http.client.HTTPResponse, Any]:
            self._send(conn, method, path, parts, size, content_type, auth, stream_ok)
            resp = conn.getresponse()
            conn.answered = True
            streamed = resp.status == 200 and resp.getheader(wire.STREAMED) == "1"
            if frame and resp.length is not None and streamed:  # an error is JSON
                conn.cut_ok = stream_ok
                data: Any = _read_frame(resp, limit)  # the records as they are sealed
            else:
                data = _read_bounded(resp, limit)
            if data is None:
                raise self._too_large(limit)
            return resp, data

        resp, data = self._call(self._conn, attempt, size, items, retry, begun)
        if resp.status >= 400:  # read whole: the connection stays for the next call
            raise wire.error_from_body(data, resp.status)
        if frame and type(data) is bytes:  # a whole answer (or one without a length)
            data = wire.decode_frame(data, "key service response")
        return data, resp.getheader("Content-Type", "")

    def _drop(self, conn: _HTTPConn | _FrameConn) -> None:
        """Close this thread's connection for good (the next call opens another)."""
        conn.close()
        if isinstance(conn, _FrameConn):
            self._local.frames = None
        else:
            self._local.conn = None
        with self._cache_lock:
            if conn in self._conns:
                self._conns.remove(conn)

    def _send(
        self,
        conn: _HTTPConn,
        method: str,
        path: str,
        parts: list[Any],
        size: int,
        content_type: str,
        auth: bool,
        stream_ok: bool = False,
    ) -> None:
        """The request line and headers through http.client, then the body's buffers."""
        conn.putrequest(method, path)
        conn.putheader("Content-Type", content_type)
        conn.putheader("Content-Length", str(size))
        if stream_ok:
            conn.putheader(wire.STREAM_OK, "1")
        if auth and self._token:
            conn.putheader("Authorization", self._bearer)
        if isinstance(conn, _UnixConnection):
            conn.send_parts(parts)
        else:  # TLS has no sendmsg
            conn.endheaders(parts[0] if len(parts) == 1 else b"".join(parts))

    def _transport_hint(self, exc: BaseException) -> str:
        """What to check after a failed exchange: TLS failures name the TLS settings."""
        if self._ssl is None:
            return "is keysplit serve running, and is this its --socket path?"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return (
                "the service's certificate is not trusted here: give the CA that signed it "
                "(--ca FILE, or Client(ca=...))"
            )
        text = str(exc).lower()
        if isinstance(exc, ssl.SSLError) and "certificate" in text:
            return (
                "the service refused this client's certificate (or got none): a service run "
                "with --client-ca needs --cert FILE --key FILE signed by that CA"
            )
        if isinstance(exc, ssl.SSLError):
            return "the TLS handshake failed: check --ca, --cert, --key and the port"
        if isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError)):
            return (
                "the service closed the connection during TLS: a service run with "
                "--client-ca needs --cert FILE --key FILE (signed by that CA)"
            )
        return "is keysplit serve running, and listening on this host and port?"

    def _json(
        self, method: str, path: str, obj: Any = None, *, auth: bool = True, retry: bool = True
    ) -> dict[str, Any]:
        """A JSON exchange; every endpoint answers a JSON object (anything else is a
        :class:`ServiceError`, never a ``TypeError`` further on)."""
        body = wire.dumps(obj) if obj is not None else b""
        n = len(obj.get("subjects") or ()) if isinstance(obj, dict) else 0
        data, _ = self.request(method, path, body, auth=auth, items=n, retry=retry)
        doc = wire.loads(data, "key service response")
        if not isinstance(doc, dict):
            raise ServiceError(f"the key service answered {path} with malformed JSON")
        return doc

    def _batch(
        self,
        path: str,
        subjects: list[str],
        context: Context,
        items: Sequence[bytes],
        *,
        stream_ok: bool = False,
    ) -> list[bytes]:
        """One batch request. ``stream_ok`` (``decrypt``, read-only, so safe to send twice):
        the server may stream the answer; if it cuts it (a record failed after the first
        piece went out, or its keys changed meanwhile), the batch is asked again without
        streaming, and the whole answer names each failure at its index."""
        # the context checked here as the in-process engine checks it, with its errors:
        # JSON would turn a context key 1 into "1", read a per-record context ("ab", "cd")
        # as {"a": "b", "c": "d"}, and say "dictionary update sequence" or "not JSON
        # serializable" for what the engine refuses by name
        header = _header(context, len(items))
        try:
            body = wire.encode_parts(header, items, subjects, payloads=True)
        except (TypeError, ValueError):  # (UnicodeEncodeError too) a subject or an item:
            names.canonical_subjects(subjects)  # the engine's error if it is a subject
            raise
        begun = time.monotonic()  # (the first exchange's deadline counts from a bit later)
        try:
            head, _, out = self._frame_request(path, body, len(items), stream_ok=stream_ok)
        except _StreamCut:  # asked again within the call's deadline (not a fresh one)
            head, _, out = self._frame_request(path, body, len(items), begun=begun)
        if len(out) != len(items):
            raise ServiceError("key service returned the wrong number of items")
        errs = _item_errors(head, len(out))
        if errs:
            first = min(errs)
            raise _item_error(first, errs[first])
        if None in out:  # an item missing without an error: never hand back None
            raise ServiceError("key service returned an item without a record or an error")
        return out  # type: ignore[return-value]

    # -- public, unauthenticated ----------------------------------------------------------------

    def service_status(self) -> dict[str, Any]:
        """``GET /v1/status``: sealed, unseal progress, keyring id, version (no token needed)."""
        doc = self._json("GET", "/v1/status", auth=False)
        if not isinstance(doc, dict):
            raise ServiceError("malformed status")
        return doc

    def unseal_offer(self) -> dict[str, Any]:
        """The current unseal attempt: nonce, ephemeral public key, progress."""
        doc = self._json("GET", "/v1/unseal", auth=False)
        if not isinstance(doc, dict):
            raise ServiceError("malformed unseal offer")
        return doc

    def submit_share(self, share: Any, offer: Mapping[str, Any], *, keyring_id: str) -> Any:
        """Seal ``share`` to the attempt in ``offer`` and send it; returns the new progress."""
        if offer.get("keyring_id") != keyring_id:
            raise KeysplitError(
                f"the key service serves keyring {offer.get('keyring_id')}, not {keyring_id}",
                hint="check --server and the keyring directory",
            )
        try:
            nonce = bytes.fromhex(str(offer["nonce"]))
            pub = bytes.fromhex(str(offer["public_key"]))
        except (KeyError, ValueError):
            raise ServiceError("malformed unseal offer") from None
        sealed = seal_share_for(share, public_key=pub, keyring_id=keyring_id, nonce=nonce)
        body = {"nonce": nonce.hex(), "sealed_share": base64.b64encode(sealed).decode()}
        return self._json("POST", "/v1/unseal", body, auth=False, retry=False)

    def reset_unseal(self) -> bool:
        return bool(
            self._json("POST", "/v1/unseal/reset", {}, auth=False, retry=False).get("reset")
        )

    def seal(self) -> bool:
        """Ask the service to drop its keys (a token allowed ``seal``, or the Unix socket)."""
        self.drop_cache()
        return bool(self._json("POST", "/v1/seal", {}, retry=False).get("was_unsealed"))

    # -- the record API (same as UnsealedKeyring) -----------------------------------------------

    def encrypt(
        self, plaintext: bytes, *, subject: str, context: Mapping[str, str] | None = None
    ) -> bytes:
        return self.encrypt_many([subject], [plaintext], context)[0]

    def decrypt(
        self, record: bytes, *, subject: str, context: Mapping[str, str] | None = None
    ) -> bytes:
        return self.decrypt_many([subject], [record], context)[0]

    def encrypt_many(
        self, subjects: Sequence[str], plaintexts: Sequence[bytes], context: Context = None
    ) -> list[bytes]:
        """Seal many records (``subjects[i]`` owns ``plaintexts[i]``) in one request."""
        names.check_batch(subjects)
        subjects, plaintexts = list(subjects), list(plaintexts)
        if len(subjects) != len(plaintexts):
            raise ValueError("subjects and plaintexts must have the same length")
        if self._records is not None:
            return self._records.encrypt_many(subjects, plaintexts, context)
        return self._batch("/v1/encrypt", subjects, context, plaintexts)

    def decrypt_many(
        self, subjects: Sequence[str], records: Sequence[bytes], context: Context = None
    ) -> list[bytes]:
        """Open many records; all-or-nothing, like :meth:`UnsealedKeyring.decrypt_many`."""
        names.check_batch(subjects)
        subjects, records = list(subjects), list(records)
        if len(subjects) != len(records):
            raise ValueError("subjects and records must have the same length")
        if self._records is not None:
            return self._records.decrypt_many(subjects, records, context)
        return self._batch("/v1/decrypt", subjects, context, records, stream_ok=True)

    def datakeys(self, subjects: Sequence[str], *, create: bool = True) -> list[bytes]:
        """Raw 16-byte data keys (a token allowed ``datakey``). Handle them as secrets."""
        return self._datakeys(subjects, create=create, missing_ok=False)  # type: ignore[return-value]

    def fetch_datakeys(self, subjects: Sequence[str], *, create: bool) -> list[bytes | None]:
        """:meth:`datakeys` with ``None`` for a subject that has no key (what
        :class:`~.remote.RemoteDataKeys` asks)."""
        return self._datakeys(subjects, create=create, missing_ok=True)

    def missing_error(self, subject: str) -> KeysplitError:
        """Why the service has no key of ``subject`` that opens a record: its
        :class:`ShreddedError`, :class:`NoDataKeyError` or :class:`IntegrityError` (one
        round trip; the error path of a cached decrypt, :class:`~.remote.RemoteDataKeys`)."""
        try:
            self._datakeys([subject], create=False, missing_ok=False)
        except _MISSING as exc:
            return exc
        return IntegrityError()  # it has a key, but not the one the record names

    def keyring_id(self) -> str:
        """The id of the keyring the service serves (``GET /v1/status``)."""
        kid = self.service_status().get("keyring_id")
        if not isinstance(kid, str):
            raise ServiceError("malformed status")
        return kid

    def _datakeys(
        self, subjects: Sequence[str], *, create: bool, missing_ok: bool
    ) -> list[bytes | None]:
        names.check_batch(subjects)
        subjects = list(subjects)
        names.canonical_subjects(subjects)  # the engine's errors, each naming its index
        body = wire.encode_parts({"create": bool(create)}, [None] * len(subjects), subjects)
        head, _, out = self._frame_request("/v1/datakey", body, len(subjects))
        if len(out) != len(subjects):
            raise ServiceError("key service returned malformed data keys")
        errs = _item_errors(head, len(out))
        keys: list[bytes | None] = []
        for i, k in enumerate(out):
            err = errs.get(i)
            if err is not None:
                exc = _item_error(i, err)
                if not (missing_ok and isinstance(exc, _MISSING)):
                    raise exc  # a bad subject, or (without missing_ok) a missing key
                keys.append(None)
            elif k is None or len(k) != 16:
                raise ServiceError("key service returned malformed data keys")
            else:
                keys.append(k)
        return keys

    def shred(self, subject: str) -> bool:
        """Destroy ``subject``'s data key; True if one existed (:class:`LegalHoldError` if held)."""
        return bool(self.shred_many([subject])[0])

    def shred_many(self, subjects: Sequence[str]) -> list[bool]:
        names.check_batch(subjects)
        names.canonical_subjects(subjects)  # the in-process errors, not the service's FormatError
        if self._remote is not None:
            self._remote.evict(subjects)
        return [
            bool(x) for x in self._items("/v1/shred", {"subjects": list(subjects)}, retry=False)
        ]

    def set_legal_hold(self, subject: str, hold: bool) -> None:
        check_hold(hold)
        names.check_subject(subject)  # the in-process errors, not the service's FormatError
        self._items("/v1/hold", {"subjects": [subject], "hold": hold})

    def rotate(self) -> int:
        v = self._json("POST", "/v1/rotate", {}, retry=False).get("kek_version")
        if type(v) is not int:
            raise ServiceError("malformed rotate result")
        return v

    def rewrap(self, *, batch_size: int = 10_000) -> dict[str, Any]:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise TypeError("batch_size must be an int")
        if not 1 <= batch_size <= wire.MAX_REWRAP_BATCH:
            raise ValueError(f"batch_size must be from 1 to {wire.MAX_REWRAP_BATCH:,}")
        doc = self._json("POST", "/v1/rewrap", {"batch_size": batch_size})
        if not isinstance(doc, dict):
            raise ServiceError("malformed rewrap result")
        return doc

    def status(self) -> KeyringStatus:
        """The keyring's secret-free status, as :meth:`UnsealedKeyring.status` gives it."""
        d = self._json("GET", "/v1/keyring")
        try:
            return KeyringStatus(
                path=str(d["path"]),
                keyring_id=str(d["keyring_id"]),
                generation=int(d["generation"]),
                set_id=str(d["set_id"]),
                threshold=int(d["threshold"]),
                custodians=tuple((str(c["name"]), int(c["index"])) for c in d["custodians"]),
                public_key=str(d["public_key"]),
                current_kek=int(d["current_kek"]),
                kek_versions=tuple(int(v) for v in d["kek_versions"]),
                keys_by_version={int(k): int(v) for k, v in d["keys_by_version"].items()},
                legal_holds=int(d["legal_holds"]),
                pending_rekey=bool(d["pending_rekey"]),
                sealed=bool(d["sealed"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ServiceError("malformed keyring status") from None

    def _items(self, path: str, body: dict[str, Any], *, retry: bool = True) -> list[Any]:
        doc = self._json("POST", path, body, retry=retry)
        items = doc.get("items")
        if not isinstance(items, list) or len(items) != len(body["subjects"]):
            raise ServiceError("malformed response")
        out = []
        for i, it in enumerate(items):
            if isinstance(it, dict) and "error" in it:
                raise _item_error(i, it["error"])
            if not isinstance(it, dict) or "ok" not in it:
                raise ServiceError(f"malformed response (item {i})")
            out.append(it["ok"])
        return out

    # -- data-key cache -------------------------------------------------------------------------

    def drop_cache(self) -> None:
        """Forget every cached data key."""
        if self._remote is not None:
            self._remote.close()


_CLIENTS: weakref.WeakSet[Client] = weakref.WeakSet()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=Client._forked_all)


def _parts(body: Body) -> tuple[list[Any], int]:
    """A request body as buffers to send in order, and its size (ValueError over the cap)."""
    parts = [body] if isinstance(body, bytes | bytearray | memoryview) else list(body)
    size = sum(map(len, parts))
    if size > wire.MAX_BODY:
        raise ValueError(
            f"request of {size:,} bytes is over the key service's {wire.MAX_BODY:,}"
            " (send smaller batches)"
        )
    return parts, size


def _seconds(v: float, name: str) -> float:
    """A positive, finite number of seconds (NaN or infinity would never end a call)."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < math.inf:
        raise ValueError(f"{name} must be a positive number of seconds")
    return float(v)


def _sendmsg_all(sock: socket.socket, parts: list[Any]) -> None:
    """Send every buffer of ``parts`` in order: ``sendmsg`` of up to IOV_MAX buffers per
    call, finishing a partly sent one with ``sendall``."""
    i = 0
    while i < len(parts):
        group = parts[i : i + _IOV_MAX]
        sent = sock.sendmsg(group)
        for buf in group:
            n = len(buf)
            i += 1
            if sent < n:
                sock.sendall(memoryview(buf)[sent:])
                break
            sent -= n


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether an idle kept-alive connection is readable: the server closed it (its idle
    timeout) or sent something unasked; either way it is not used for the next request."""
    try:  # poll, not select: a descriptor above FD_SETSIZE (1024) is fine
        p = select.poll()
        p.register(sock, select.POLLIN)
        return bool(p.poll(0))
    except (OSError, ValueError):
        return True


class _StreamCut(Exception):
    """A streamed answer asked with ``stream_ok`` ended early (its connection is closed)."""


def _read_bounded(resp: http.client.HTTPResponse, limit: int) -> bytes | None:
    """The response body, or None if it is (or announces itself) longer than ``limit``."""
    if resp.length is not None and resp.length > limit:
        return None
    data = resp.read(limit + 1) if resp.length is None else resp.read()
    return None if len(data) > limit else data


def _read_frame(
    resp: http.client.HTTPResponse, limit: int
) -> tuple[dict[str, Any], list[str], list[bytes | None]] | None:
    """The answer's frame, decoded as it arrives; None if it announces more than
    ``limit`` bytes. A body that ends early is a transport failure (as for
    :func:`_read_bounded`), a malformed frame a :class:`FormatError`."""
    assert resp.length is not None
    if resp.length > limit:
        return None
    try:
        return wire.read_frame(resp.read, resp.length, "key service response")
    except wire.ShortRead:
        raise http.client.IncompleteRead(b"") from None


def _header(context: Context, n: int) -> dict[str, Any]:
    """A batch's context (one, or one per record) as sent: the text of what the caller gave,
    checked as in process (:func:`keysplit.record.split_contexts`, :func:`_context_doc`)."""
    shared, per_record = fmt.split_contexts(n, context)
    if per_record is None:
        return {"context": _context_doc(shared)}
    return {"contexts": [_context_doc(c) for c in per_record]}


def _context_doc(context: Mapping[str, str] | None) -> dict[str, str] | None:
    """One context as plain text from one pass over its ``items()`` (what the engine
    encodes), refused with the engine's errors: a key or value that is not a ``str``
    (JSON would send ``1`` as ``"1"``), a non-mapping, text that is not Unicode, too big."""
    if context is None:
        return None
    if not isinstance(context, Mapping):
        raise TypeError("context must be a mapping of str to str")
    doc: dict[str, str] = {}
    for k, v in context.items():
        if not isinstance(k, str):
            raise names.not_str_error(k, "context key")
        if not isinstance(v, str):
            raise names.not_str_error(v, "context value")
        doc[str.__str__(k)] = str.__str__(v)
    fmt.check_context(doc)
    return doc


def _item_errors(head: Mapping[str, Any], n: int) -> dict[int, Any]:
    """A frame's per-item errors by index: an object whose keys are the decimal indices
    of items of the answer (anything else is a :class:`ServiceError`)."""
    errs = head.get("errors")
    if errs is None:
        return {}
    if not isinstance(errs, dict):
        raise ServiceError("key service returned malformed item errors")
    out: dict[int, Any] = {}
    for k, v in errs.items():
        if not (isinstance(k, str) and k.isdigit() and k.isascii() and int(k) < n):
            raise ServiceError("key service returned malformed item errors")
        out[int(k)] = v
    return out


def _item_error(i: int, err: Any) -> Exception:
    exc = wire.error_from_dict(err)
    if isinstance(exc, IntegrityError):
        return exc  # detail-free, as in-process
    if isinstance(exc, KeysplitError):
        return type(exc)(f"item {i}: {exc}", hint=exc.hint) if _simple(type(exc)) else exc
    return exc


def _simple(cls: type) -> bool:
    try:
        cls("x", hint=None)
    except TypeError:
        return False
    return True
