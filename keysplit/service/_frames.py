"""Batch frames without HTTP on the Unix socket: the same-host transport of ``encrypt`` and
``decrypt`` batches (issue 23; the measurement behind it is in benchmarks/README.md,
"service transport").

A connection to the Unix socket whose first byte is NUL speaks this protocol; any other
first byte is HTTP, handed to aiohttp unchanged (no HTTP request begins with NUL). TCP/TLS
connections are HTTP only. Every request carries its bearer token and is authorized
exactly as the HTTP request of the same path (:meth:`KeyService.precheck` before the body
is read, then the route's own check); the answer is the HTTP answer's status and body
(a batch frame, or the JSON error), so the client maps errors the same way. Layout (all
integers big endian)::

    request:  magic "\\0KSW" | version 1 (u8) | op (u8: 1 encrypt, 2 decrypt) | flags (u8:
              bit 0 = streamed decrypt welcome, as ``Keysplit-Stream-Ok``) | 0 (u8)
              | token length (u32) | body length (u32) | token (ASCII) | body (a KSB1 frame)
    answer:   magic "\\0KSW" | status (u16) | flags (u16: bit 0 = streamed) | length (u32)
              | body

Bounds, as on the HTTP path (:class:`~.server.Limits`): a connection that has not sent a
whole request head within ``idle`` seconds of being idle is closed; the token is at most
``field_size`` bytes; the body at most ``token_body`` bytes, read only after the token
checked out, within ``io`` seconds (else a 408 answer and the connection closed); an
answer the peer does not read within ``io`` seconds is cut. A malformed head (magic,
version, op, reserved byte, sizes) is answered 400 or 413 and the connection closed: no
length is trusted before it is checked, and nothing past a refused head is parsed (a new
request's first ``recv`` takes up to :data:`STAGE_SIZE` bytes at once; what follows the
refused head among them is dropped with the connection).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from io import BytesIO
from typing import Any

from ..errors import FormatError, KeysplitError
from . import _wire as wire
from .core import Admission, KeyService, Request, Response, Streamed

__all__ = [
    "ANSWER",
    "FIRST",
    "MAGIC",
    "OPS",
    "REQUEST",
    "STREAMED",
    "STREAM_OK",
    "FrameProtocol",
    "Sniffer",
]

MAGIC = wire.FRAMES_MAGIC
FIRST = MAGIC[:1]
"""The first byte of a frame connection (never the first byte of an HTTP request)."""
VERSION = wire.FRAMES_VERSION
REQUEST = wire.FRAME_REQUEST
ANSWER = wire.FRAME_ANSWER
OPS = {op: path for path, op in wire.FRAME_OPS.items()}
STREAM_OK = wire.FRAME_STREAM_OK
STREAMED = wire.FRAME_STREAMED


STAGE_SIZE = 64 << 10
"""Bytes a new request is first read into (:func:`_stage`)."""
_stages = threading.local()


def _stage() -> memoryview:
    """Where each new request's first bytes land, in one ``recv`` with as much as has come
    (head, token and a small body together), then copied to the request's own buffers
    before the event loop runs anything else: one buffer for every connection of the
    thread's event loop. Read a part at a time (the head, then the token, then the body) a
    single-record request took three turns of the event loop (benchmarks/README.md, "the
    single-record tail")."""
    try:
        stage: memoryview = _stages.buffer
    except AttributeError:
        stage = _stages.buffer = memoryview(bytearray(STAGE_SIZE))
    return stage


def answer_head(status: int, length: int, flags: int = 0) -> bytes:
    return ANSWER.pack(MAGIC, status, flags, length)


class FrameProtocol(asyncio.BufferedProtocol):
    """One frame connection of the Unix socket, served by ``service`` on this event loop.

    A request's first bytes come in one ``recv`` into the process's stage (head, token and
    a small body at once), the rest of it straight into its final buffer (no chunks to
    join); it is answered at once, on the event loop, as the HTTP handler answers: one
    request at a time owns the keyring. A streamed answer's pieces go to the transport
    with no event-loop turn in between (the rule of ``server._stream``)."""

    def __init__(
        self,
        service: KeyService,
        *,
        idle: float,
        io: float,
        token_max: int,
        body_max: int,
        done: Callable[[FrameProtocol], None] | None = None,
    ) -> None:
        self.service = service
        self._idle, self._io = idle, io
        self._token_max, self._body_max = token_max, body_max
        self._done = done
        self._transport: asyncio.Transport | None = None
        self._head = bytearray(REQUEST.size)
        self._buf: bytearray | memoryview | None = None  # token, then body, being read
        self._body: BytesIO | None = None  # the body's buffer (self._buf is a view of it)
        self._got = 0
        self._meta: tuple[int, int, int] = (0, 0, 0)  # op, flags, body length
        self._token: bytes | None = None  # the request's token, once read
        self._admitted: Admission | None = None  # its admission, once precheck passed it
        self._timer: asyncio.TimerHandle | None = None
        self._writing_paused = False
        self._closing = False
        self._staged: memoryview | None = None  # the stage the last get_buffer handed out
        self._pending = b""  # read past an answer the peer has not taken yet

    # -- asyncio ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._arm(self._idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._cancel()
        self._buf = self._body = None
        self._pending = b""
        if self._done is not None:
            self._done(self)

    def eof_received(self) -> bool:
        return False  # the peer is done: close

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._transport is not None and not self._closing:
            self._arm(self._idle)
            pending, self._pending = self._pending, b""
            if pending:  # requests that came with the one answered last: served now
                self.feed(pending)
            if not self._writing_paused and not self._closing:
                self._transport.resume_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._buf is None and self._got == 0:  # a new request: as much as has come
            self._staged = _stage()
            return self._staged
        return self._target()

    def buffer_updated(self, nbytes: int) -> None:
        if self._staged is not None:  # into the stage: copied to the request's own buffers
            stage, self._staged = self._staged, None
            self.feed(stage[:nbytes])
            return
        self._advance(nbytes)

    def _target(self) -> memoryview:
        """Where the request's next bytes go: its head, then its token, then its body."""
        if self._buf is None:
            return memoryview(self._head)[self._got :]
        return memoryview(self._buf)[self._got :]

    def _advance(self, nbytes: int) -> None:
        """``nbytes`` more of the request are in :meth:`_target`'s buffer."""
        self._got += nbytes
        if self._closing:
            return
        if self._buf is None:
            if self._got == len(self._head):
                self._begin()
        elif self._got == len(self._buf):
            if self._token is None:
                self._token = bytes(self._buf)
                self._check_token()
            else:
                self._finish()

    # -- the request --------------------------------------------------------------------------

    def feed(self, data: bytes | memoryview) -> None:
        """Bytes already read from the connection (the sniffer's, or the stage's), as if
        received now. Once an answer waits for the peer to take it (writing paused), what
        follows that request is kept until it does, as unread bytes wait in the socket."""
        view = memoryview(data)
        while view and not self._closing:
            if self._writing_paused and self._buf is None and self._got == 0:
                self._pending = bytes(view)
                return
            buf = self._target()
            k = min(len(buf), len(view))
            buf[:k] = view[:k]
            view = view[k:]
            self._advance(k)

    def _begin(self) -> None:
        """A whole request head: check it, then read the token and the body."""
        magic, version, op, flags, zero, tlen, blen = REQUEST.unpack(self._head)
        if magic != MAGIC or version != VERSION or op not in OPS or zero or flags & ~STREAM_OK:
            self._refuse(400, "not a keysplit request frame (magic, version 1, op, flags)")
            return
        if tlen > self._token_max:
            self._refuse(400, f"a token of at most {self._token_max:,} bytes")
            return
        if blen > self._body_max:
            self._refuse(413, f"request body larger than {self._body_max:,} bytes")
            return
        self._meta = (op, flags, blen)
        self._token = None
        self._arm(self._io)  # the token and the body, within the io bound
        if tlen:
            self._buf, self._got = bytearray(tlen), 0  # the token first, at most token_max
        else:  # no token: refused as HTTP refuses no Authorization header
            self._token = b""
            self._check_token()

    def _request(self, body: BytesIO | None = None) -> Request:
        op, flags, _ = self._meta
        token = self._token
        assert token is not None
        if not (token.isascii() and token.decode().isprintable()):
            raise FormatError("the token must be printable ASCII")
        headers = {"authorization": f"Bearer {token.decode()}"} if token else {}
        if flags & STREAM_OK:
            headers[wire.STREAM_OK.lower()] = "1"
        return Request("POST", OPS[op], headers, b"", True, body, self._admitted)

    def _check_token(self) -> None:
        """The token has arrived, the body not yet: refuse here (and close), before the body
        is read or even has a buffer, what the HTTP path refuses from the headers alone;
        else make the body's buffer (checked against ``body_max`` with the head)."""
        self._admitted = None
        try:
            r = self.service.precheck(self._request())
        except FormatError as exc:
            r = Response(400, wire.error_body(exc))
        if isinstance(r, Response):
            self._answer(r, close=True)
            return
        self._admitted = r  # the request's one token check (KeyService.precheck)
        blen = self._meta[2]
        self._body = body = BytesIO()  # received into, then decoded from: never copied
        if blen:
            body.seek(blen - 1)
            body.write(b"\0")  # blen bytes (zeros): room for the body, read in place
        self._buf, self._got = body.getbuffer(), 0
        if not blen:
            self._finish()

    def _finish(self) -> None:
        body = self._body
        assert body is not None and self._buf is not None
        self._cancel()
        req = self._request(body)
        self._buf, self._body, self._got, self._token = None, None, 0, None
        self._admitted = None
        r = self.service.respond(req)
        if isinstance(r, Streamed):
            self._stream(r)
        else:
            self._answer(r, close=False)

    # -- the answer ---------------------------------------------------------------------------

    def _answer(self, r: Response, *, close: bool) -> None:
        t = self._transport
        assert t is not None
        t.write(answer_head(r.status, len(r.body)) + r.body)
        if close:
            self._close()
        else:
            self._sent()

    def _stream(self, s: Streamed) -> None:
        t = self._transport
        assert t is not None
        try:
            lead = answer_head(200, s.length, STREAMED)
            for piece in s.pieces:  # no event-loop turn in between (server._stream's rule)
                t.write(lead + piece if lead else piece)
                lead = b""
        except Exception:  # Interrupted, a failure mid-answer: never half an answer
            self._closing = True
            self._cancel()
            t.abort()
            return
        self._sent()

    def _sent(self) -> None:
        """An answer is in the transport: the next request head may come (idle bound), or,
        while the peer does not take the answer, nothing is read until it does (io bound)."""
        t = self._transport
        assert t is not None
        if self._writing_paused:
            t.pause_reading()
            self._arm(self._io)
        else:
            self._arm(self._idle)

    def _refuse(self, status: int, message: str) -> None:
        err = KeysplitError(message, hint="the frame layout and limits are in docs/API.md")
        self._answer(Response(status, wire.error_body(err)), close=True)

    def _close(self) -> None:
        """Close after the answer is written (unread bytes are not read: the head said
        something this side refuses, so nothing that follows it is trusted)."""
        self._closing = True
        self._cancel()
        # nothing more is read (a scratch head if asked)
        self._buf, self._body, self._got = None, None, 0
        t = self._transport
        assert t is not None
        t.close()
        if t.get_write_buffer_size():  # an answer still going out: the io bound, as before
            self._timer = asyncio.get_running_loop().call_later(self._io, t.abort)

    # -- time bounds --------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._cancel()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expired)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self._closing or self._transport is None:
            return
        if self._buf is not None:  # a request not received within the io bound
            self._refuse(408, f"request not received within {self._io:g} s")
            return
        self._closing = True  # idle, or an answer not taken: close (abort drops the answer)
        self._transport.abort()

    def close(self) -> None:
        """Close the connection: at once when idle, else once the answer is written (cut
        if the peer does not take it within the io bound)."""
        if self._transport is not None and not self._closing:
            self._close()


class Sniffer(asyncio.Protocol):
    """The first protocol of a plain Unix-socket connection: its first byte says whether
    it speaks frames (:data:`FIRST`: a :class:`FrameProtocol` from ``frames()``) or HTTP
    (anything else: aiohttp's protocol from ``http()``, given the bytes read so far). A
    connection that sends nothing is closed after ``idle`` seconds, as aiohttp would."""

    def __init__(
        self,
        frames: Callable[[], FrameProtocol],
        http: Callable[[], Any],
        idle: float,
        done: Callable[[Sniffer], None] | None = None,
    ) -> None:
        self._frames, self._http, self._idle = frames, http, idle
        self._done = done
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._timer = asyncio.get_running_loop().call_later(self._idle, transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()

    def _end(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._done is not None:
            done, self._done = self._done, None
            done(self)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def detach(self) -> socket.socket | None:
        """Give the connection up unread, for another process to serve (None if it is
        closing): a duplicate of its socket, this side closed. No byte of it was read:
        a sniffer hands each one on to the connection's protocol as it arrives."""
        t = self._transport
        sock = t.get_extra_info("socket") if t is not None and not t.is_closing() else None
        if t is None or sock is None:
            return None
        dup: socket.socket = sock.dup()
        t.abort()  # (the duplicate keeps the connection open: no reset, no FIN)
        return dup

    def data_received(self, data: bytes) -> None:
        t = self._transport
        assert t is not None and data
        self._end()  # the connection is its protocol's from now on
        if data[:1] == FIRST:
            fp = self._frames()
            t.set_protocol(fp)
            fp.connection_made(t)
            fp.feed(data)
        else:
            h = self._http()
            t.set_protocol(h)
            h.connection_made(t)
            h.data_received(data)

    def eof_received(self) -> bool:
        return False
