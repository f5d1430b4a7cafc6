"""``keysplit serve``: the key service on aiohttp (Unix socket, optionally TCP+TLS/mTLS).

Why aiohttp (benchmarks/ab_http_stack.py, figures in docs/API.md): batch throughput on
the Unix socket was within noise of Starlette on uvicorn, and aiohttp serves several
sites from one runner with TLS per site, so the local socket stays plain while TCP gets
TLS, and signal handling stays ours. One dependency tree, no ASGI server.

Handlers call :meth:`KeyService.respond` directly on the event loop: one request at a time
owns the keyring, so no locks; a large batch delays the next request by its own length. A
large ``encrypt`` batch is answered streamed (:class:`~.core.Streamed`, :func:`_stream`):
its keys resolved, the head goes out with the first piece of records and each next piece
as soon as it is sealed, so the client cuts records while the last ones are sealed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import json
import os
import signal
import socket
import ssl
import stat
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_writer import StreamWriter

from .._fileio import link_new
from ..errors import KeysplitError
from . import _wire as wire
from ._frames import FrameProtocol, Sniffer
from .core import Interrupted, KeyService, Request, Response, Streamed
from .fleet import (
    DATAGRAM,
    HELLO,
    SETUP,
    Fleet,
    Peer,
    WorkerLink,
    default_workers,
    fork_workers,
    forwarded,
    spawn_unavailable,
    spawn_worker,
)
from .heap import keep_heap

__all__ = ["Limits", "ServeOptions", "make_app", "run"]


@dataclass(frozen=True)
class Limits:
    """What one connection may cost the server before it is refused or dropped.

    Bodies are capped *before* they are read: no body at all on an unknown path, at most
    ``public_body`` on the endpoints that need no token, and ``token_body`` only once the
    bearer token checked out (a ``Content-Length`` above the cap is answered 413 at once; a
    chunked body is cut off there). ``idle`` bounds a connection that has not completed a
    request's header (slowloris) or sits idle between requests, ``io`` the reading of one
    body and the writing of one response, ``handshake`` a TLS handshake.

    A request's header is at most ``header_fields`` fields of at most ``field_size`` bytes
    (431/400 beyond), and one process serves at most ``connections`` connections at once
    (TLS handshakes included; one more is closed at once). A header that never completes
    is held until the idle timeout, so before these bounds every unauthenticated
    connection could park aiohttp's 128 fields of 8 KiB, about 0.44 MiB of the server's
    memory each, in as many connections as the file limit allows (300 grew it by 130 MiB).
    Now the server holds at most ~1,024 x 64 KiB of parked headers (measured: 1,100 parked
    connections of 62 KB each grew it by 132 MiB, then no more).
    """

    public_body: int = wire.MAX_PUBLIC_BODY
    token_body: int = wire.MAX_BODY
    idle: float = 30.0
    io: float = 60.0
    handshake: float = 10.0
    connections: int = 1024
    header_fields: int = 32
    field_size: int = 2048

    def __post_init__(self) -> None:
        for name in ("idle", "io", "handshake"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 86_400:
                raise ValueError(f"{name} timeout must be between 0 and 86400 seconds")
        for name, hi in (
            ("connections", 1 << 20),
            ("header_fields", 1024),
            ("field_size", 1 << 16),
        ):
            v = getattr(self, name)
            if type(v) is not int or not 1 <= v <= hi:
                raise ValueError(f"{name} must be an integer from 1 to {hi}")


@dataclass(frozen=True)
class ServeOptions:
    directory: Path
    socket_path: Path | None = None
    listen: tuple[str, int] | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    unseal_timeout: float = 600.0
    limits: Limits = field(default_factory=Limits)
    workers: int = field(default_factory=default_workers)
    """Processes serving once unsealed (the leader included); default: the core count."""


READ_WINDOW = 8 << 20
"""aiohttp's read-ahead for a request whose token checked out (64 KiB otherwise): at the
default it paused and resumed reading the socket every 128 KiB of a batch."""
SEND_BUFFER = 4 << 20
"""SO_SNDBUF of an accepted Unix-socket connection (the kernel caps it at wmem_max): a
1 MiB answer goes out in one ``send`` instead of five rounds of wake-ups."""


class _Refused(Exception):
    """The peer's body is over its cap (413) or too slow (408): answer, then close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read_body(request: web.Request, limit: int, timeout: float, window: int = 0) -> bytes:
    """The request body, at most ``limit`` bytes, within ``timeout`` seconds."""
    size = request.content_length
    if size is not None and size > limit:
        raise _Refused(413, f"request body larger than {limit:,} bytes")
    if window:
        request.content.set_read_chunk_size(min(size or window, window))
    try:
        async with asyncio.timeout(timeout):
            if size is not None:
                return await request.content.readexactly(size) if size else b""
            buf = bytearray()
            while chunk := await request.content.readany():
                if len(buf) + len(chunk) > limit:
                    raise _Refused(413, f"request body larger than {limit:,} bytes")
                buf += chunk
            return bytes(buf)
    except TimeoutError:
        raise _Refused(408, f"request body not received within {timeout:g} s") from None
    except asyncio.IncompleteReadError:
        raise _Refused(400, "request body shorter than its Content-Length") from None


async def _send(
    request: web.Request, r: Response, timeout: float, close: bool
) -> web.StreamResponse:
    """Write ``r`` within ``timeout`` seconds (a peer that does not read is cut off).

    Headers and body leave in one write (a ``web.Response`` holds its headers back until
    the body): sent apart, they woke the client twice per batch."""
    resp = web.Response(status=r.status, body=r.body, headers={"Content-Type": r.content_type})
    if close:
        resp.force_close()
    try:
        async with asyncio.timeout(timeout):
            await resp.prepare(request)
            await resp.write_eof()
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()
        return resp
    if close:  # no lingering read of the rest: the peer broke a limit
        request.protocol.force_close()
    return resp


async def _stream(request: web.Request, s: Streamed, timeout: float) -> web.StreamResponse:
    """Write a :class:`Streamed` answer: the HTTP head and the first piece, then each
    piece as soon as it is sealed, within ``timeout`` seconds.

    The pieces are handed to the transport with no event-loop turn in between (a write
    without ``drain`` does not wait; a Unix socket takes a 1,000-record answer at once,
    and whatever it does not take waits in the transport's buffer, as a whole answer
    did before): no other request, seal or reload can reach this process while the
    answer is sealed. Should one anyway, :class:`Interrupted` drops the connection with
    whatever it had not sent yet; so does a failure in the middle (the client sees a
    short answer, never a wrong one)."""
    resp = web.StreamResponse(
        status=200, headers={"Content-Type": s.content_type, **dict(s.headers)}
    )
    resp.content_length = s.length
    try:
        async with asyncio.timeout(timeout):
            writer = await resp.prepare(request)
            if not isinstance(writer, StreamWriter):
                raise Interrupted("not an HTTP/1 stream writer")
            for piece in s.pieces:
                await writer.write(piece, drain=False)
            await resp.write_eof()  # waits (drains) only now
    except Exception:  # Interrupted, a timeout, a peer gone, a bug: never half an answer
        if request.transport is not None:
            request.transport.abort()
    return resp


After = Callable[[Request, Response, bool], Awaitable[None]]
"""Called after a request was handled, before its answer is sent: (request, response,
whether the service was sealed before it). The worker processes hook in here."""


def make_app(
    service: KeyService,
    limits: Limits | None = None,
    after: After | None = None,
    forward: Callable[[Request], Awaitable[Response]] | None = None,
) -> web.Application:
    """``forward`` (a worker process) serves the :func:`~.fleet.forwarded` paths elsewhere."""
    lim = limits or Limits()

    async def handler(request: web.Request) -> web.StreamResponse:
        sock = request.transport.get_extra_info("socket") if request.transport else None
        local = sock is not None and sock.family == socket.AF_UNIX
        headers = {k.lower(): v for k, v in request.headers.items()}
        head = Request(request.method, request.path, headers, b"", local)
        kind = service.route_kind(request.method, request.path)
        checked = service.handle(head) if kind is None else service.precheck(head)
        r, admitted = (checked, None) if isinstance(checked, Response) else (None, checked)
        if r is None:
            limit = lim.public_body if kind == "public" else lim.token_body
            try:
                window = READ_WINDOW if kind == "token" else 0
                body = await _read_body(request, limit, lim.io, window)
            except _Refused as exc:
                err = KeysplitError(str(exc), hint="the limits are in docs/API.md")
                refused = Response(exc.status, wire.error_body(err))
                return await _send(request, refused, lim.io, True)
            # the token checked from the headers: not again (KeyService.precheck)
            req = Request(request.method, request.path, headers, body, local, admitted=admitted)
            was_sealed = service.sealed
            if forward is not None and forwarded(req.path):
                r = await forward(req)
            else:
                streamed = service.respond(req)
                if isinstance(streamed, Streamed):  # encrypt: changes nothing, after() has
                    return await _stream(request, streamed, lim.io)  # nothing to do
                r = streamed
            if after is not None:
                await after(req, r, was_sealed)
        # A body left unread (refused from the headers, or sent where none is read) is
        # drained after the answer, discarded as it arrives, for at most ``lingering_time``.
        return await _send(request, r, lim.io, False)

    app = web.Application(client_max_size=lim.token_body)
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


def _unix_socket(path: Path) -> socket.socket:
    """Bind ``path`` with mode 0600 from the start (umask), replacing a dead socket only."""
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise KeysplitError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale socket of a dead server
        else:
            raise KeysplitError(f"another server is listening on {path}")
        finally:
            probe.close()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Listening before the name appears: bound under a temporary name, then linked to
    # ``path`` (which fails if it exists, as bind does). A client that saw the file and
    # connected between bind and listen was refused (seen under load in CI).
    tmp = path.parent / f".ks{os.urandom(4).hex()}"
    old = os.umask(0o177)
    try:
        try:
            s.bind(str(tmp))
        except OSError:  # the longer name does not fit sun_path: bind in place, as before
            tmp = path
            s.bind(str(path))
    except OSError as exc:  # bind names no path ("no such file: None")
        s.close()
        raise KeysplitError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    except BaseException:
        s.close()
        raise
    finally:
        os.umask(old)
    try:
        os.chmod(tmp, 0o600)
        s.listen(128)
        if tmp != path:
            link_new(tmp, path)  # fails if the name exists, as bind did
    except BaseException:
        s.close()
        raise
    finally:
        if tmp != path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    s.setblocking(False)
    return s


def _tls(opts: ServeOptions) -> ssl.SSLContext:
    if opts.tls_cert is None or opts.tls_key is None:
        raise KeysplitError("--listen needs --tls-cert and --tls-key (plain TCP is refused)")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:  # ssl names neither file ("no such file: None", "PEM lib (_ssl.c:3905)")
        ctx.load_cert_chain(str(opts.tls_cert), str(opts.tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise KeysplitError(
            f"cannot load the TLS certificate {opts.tls_cert} with key {opts.tls_key}: {_why(exc)}",
            hint="--tls-cert takes a PEM certificate (chain), --tls-key its unencrypted key",
        ) from None
    if opts.client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=str(opts.client_ca))
        except (OSError, ssl.SSLError) as exc:
            raise KeysplitError(
                f"cannot load the client CA bundle {opts.client_ca}: {_why(exc)}",
                hint="--client-ca takes PEM CA certificates",
            ) from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _why(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):  # "PEM lib" comes with no reason
        return str(exc.reason) if exc.reason else "not PEM, or the key does not match"
    return exc.strerror or type(exc).__name__


def _hostport(host: str, port: int) -> str:
    """``HOST:PORT`` as a URL writes it: an IPv6 address in brackets (``[::1]:8443``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _tcp_socket(host: str, port: int) -> socket.socket:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port {port!r} is not from 0 to 65535")  # not taken mod 65536
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:  # names no host ("Name or service not known")
        raise KeysplitError(f"cannot listen on {_hostport(host, port)}: {exc.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    s = socket.socket(family, kind, proto)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(addr)
    except OSError:
        s.close()
        raise
    s.listen(128)
    s.setblocking(False)
    return s


class _Acceptor:
    """Accepts connections on the listening sockets and hands each to aiohttp, or, on the
    Unix socket, to aiohttp or the frame protocol by its first byte (:mod:`._frames`).

    Our own accept loop (not aiohttp's sites) so a TLS handshake has its own timeout and
    every accepted connection passes through one place (see ``_dispatch``)."""

    def __init__(self, runner: web.AppRunner, limits: Limits, service: KeyService) -> None:
        self._runner = runner
        self._limits = limits
        self._service = service
        self._tasks: set[asyncio.Task[None]] = set()
        self._handshakes = 0  # accepted, TLS handshake in progress (not yet aiohttp's)
        self._sniffing: set[Sniffer] = set()  # Unix-socket connections not yet sent a byte
        self._frames: set[FrameProtocol] = set()  # frame connections (not aiohttp's)
        self.route: Callable[[socket.socket, ssl.SSLContext | None], Awaitable[None]]
        self.route = self.adopt

    def listen(self, lsock: socket.socket, ctx: ssl.SSLContext | None) -> None:
        self._spawn(self._accept(lsock, ctx))

    def _spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _accept(self, lsock: socket.socket, ctx: ssl.SSLContext | None) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(lsock)
            except OSError as exc:  # EMFILE and friends: back off instead of spinning
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    await asyncio.sleep(0.1)
                    continue
                raise
            self._spawn(self.route(conn, ctx))

    async def adopt(self, conn: socket.socket, ctx: ssl.SSLContext | None) -> None:
        """Serve one accepted connection here (TLS handshake bounded in time)."""
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        held = len(server.connections) + len(self._sniffing) + len(self._frames)
        if held + self._handshakes >= self._limits.connections:
            conn.close()  # over the cap: the peer reconnects later, nothing is held for it
            return
        factory: Callable[[], asyncio.BaseProtocol] = server
        if ctx is None and conn.family == socket.AF_UNIX:
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            factory = self._sniffer  # counted in _sniffing from the start
        shaking = int(factory is server)  # counted here until aiohttp counts it
        self._handshakes += shaking
        try:
            await loop.connect_accepted_socket(
                factory,
                conn,
                ssl=ctx,
                ssl_handshake_timeout=self._limits.handshake if ctx is not None else None,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError):
            conn.close()
        finally:
            self._handshakes -= shaking

    def _sniffer(self) -> Sniffer:
        """The protocol of a new plain Unix-socket connection, until its first byte."""
        lim, server = self._limits, self._runner.server
        assert server is not None

        def frames() -> FrameProtocol:
            fp = FrameProtocol(
                self._service,
                idle=lim.idle,
                io=lim.io,
                token_max=lim.field_size,
                body_max=lim.token_body,
                done=self._frames.discard,
            )
            self._frames.add(fp)
            return fp

        s = Sniffer(frames, server, lim.idle, self._sniffing.discard)
        self._sniffing.add(s)
        return s

    def close_connections(
        self, give_back: Callable[[socket.socket, bool], None] | None = None
    ) -> None:
        """Close every connection served here: idle ones at once, busy ones after the
        request in progress (``close`` alone would leave an idle one's socket open).
        ``give_back`` (a worker sealing) takes instead those of which no byte was read
        yet (fresh: closed, their client's first request would be reset)."""
        for s in list(self._sniffing):
            fresh = s.detach() if give_back is not None else None
            if give_back is not None and fresh is not None:
                give_back(fresh, False)
            else:
                s.abort()
        for fp in list(self._frames):
            fp.close()  # a frame connection is never busy between events: its answer is out
        server = self._runner.server
        for h in list(server.connections if server is not None else ()):
            if getattr(h, "_request_in_progress", False):  # aiohttp 3.x, pinned in the lock
                h.close()
            else:
                h.force_close()

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for s in list(self._sniffing):  # aiohttp's own are closed by the runner's cleanup
            s.abort()
        for fp in list(self._frames):
            fp.close()


_CHANGES = frozenset({"/v1/shred", "/v1/hold", "/v1/rotate", "/v1/rewrap"})


def _runner(
    service: KeyService,
    lim: Limits,
    after: After,
    forward: Callable[[Request], Awaitable[Response]] | None = None,
) -> web.AppRunner:
    return web.AppRunner(
        make_app(service, lim, after, forward),
        handle_signals=False,
        access_log=None,
        keepalive_timeout=lim.idle,
        max_headers=lim.header_fields,
        max_field_size=lim.field_size,
        max_line_size=8190,
        lingering_time=min(lim.io, 10.0),  # drain (and discard) an unread body, bounded
    )


async def _serve(
    opts: ServeOptions,
    log: Callable[[str], None],
    listening: list[tuple[socket.socket, str]],
    workers: list[tuple[int, socket.socket]],
) -> int:
    """The leader: the only process while sealed; then one of ``1 + len(workers)``."""
    service = KeyService(opts.directory, unseal_timeout=opts.unseal_timeout, log=log)
    service.worker = (0, 1 + len(workers))
    service.workers_live = 1 + len(workers)
    lim = opts.limits
    fleet: Fleet | None = None

    async def after(req: Request, r: Response, was_sealed: bool) -> None:
        assert fleet is not None
        if req.path == "/v1/unseal" and was_sealed and not service.sealed:
            await fleet.unsealed()
        elif req.path == "/v1/seal" and r.status == 200 and not was_sealed:
            await fleet.sealed()  # answered once every worker dropped its keys
        elif req.path in _CHANGES and r.status == 200:
            await fleet.changed()

    def respawn(index: int) -> tuple[int, socket.socket, Any]:
        doc = {"index": index, "count": opts.workers, "options": _options_doc(opts)}
        return spawn_worker(SETUP + json.dumps(doc).encode())

    runner = _runner(service, lim, after)
    await runner.setup()
    acceptor = _Acceptor(runner, lim, service)
    unreplaced = spawn_unavailable() if workers else None
    fleet = Fleet(
        service,
        [Peer(i, pid, ctl) for i, (pid, ctl) in enumerate(workers, 1)],
        acceptor.adopt,
        log,
        respawn if unreplaced is None else None,
        unreplaced,
    )
    acceptor.route = fleet.dispatch
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reason: list[str] = []

    def on_stop(name: str) -> None:
        reason.append(name)
        service.seal(name)  # drop keys first (audited once), then the workers', then stop
        fleet.seal_now()
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, on_stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, on_stop, "SIGINT")
    loop.add_signal_handler(signal.SIGHUP, lambda: service.reload_tokens(force=True))
    sock_path = opts.socket_path
    try:
        for lsock, where in listening:
            acceptor.listen(lsock, _tls(opts) if where.startswith("https") else None)
        n = f"; {1 + len(workers)} processes" if workers else ""
        where = ", ".join(w for _, w in listening)
        log(f"keyring {service.keyring.keyring_id} sealed; listening on {where}{n}")
        if unreplaced:
            log(f"a worker that exits will not be replaced: {unreplaced}")
        await stop.wait()
    finally:
        service.close()
        await fleet.stop()
        await acceptor.close()
        for lsock, _ in listening:
            lsock.close()
        await runner.cleanup()
        if sock_path is not None:
            with contextlib.suppress(FileNotFoundError):
                sock_path.unlink()
    log(f"stopped ({reason[0] if reason else 'error'})")
    return 0


async def _worker(
    opts: ServeOptions, index: int, count: int, ctl: socket.socket, log: Callable[[str], None]
) -> int:
    """A worker: idle while sealed, then serves the connections the leader hands it."""
    service = KeyService(opts.directory, unseal_timeout=opts.unseal_timeout, log=log)
    service.worker = (index, count)
    service.workers_live = count  # until the leader says one is gone (LIVE)
    lim = opts.limits
    link: WorkerLink | None = None

    async def after(req: Request, r: Response, was_sealed: bool) -> None:
        assert link is not None
        if req.path == "/v1/seal" and r.status == 200 and not was_sealed:
            await link.sealed()  # the leader's SEAL, sent last to us, closes our connections
        elif req.path in _CHANGES and r.status == 200:
            await link.changed()

    async def forward(req: Request) -> Response:
        assert link is not None
        return await link.forward(req)

    runner = _runner(service, lim, after, forward)
    await runner.setup()
    acceptor = _Acceptor(runner, lim, service)
    ctx = _tls(opts) if opts.listen is not None else None
    stop = asyncio.Event()

    def on_stop(why: str) -> None:
        service.seal(why, audit=False)
        stop.set()

    async def adopt(conn: socket.socket, tls: bool) -> None:
        assert link is not None
        if service.sealed:  # since it was taken (a SEAL read with its CONN): not served here
            link.give_back(conn, tls)
        else:
            await acceptor.adopt(conn, ctx if tls else None)

    def on_seal() -> None:
        assert link is not None
        acceptor.close_connections(link.give_back)  # the fresh ones: back to the leader

    link = WorkerLink(ctl, service, adopt, on_seal, on_stop, log)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, on_stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, on_stop, "SIGINT")
    loop.add_signal_handler(signal.SIGHUP, lambda: service.reload_tokens(force=True))
    try:
        await stop.wait()
    finally:
        service.close()
        await acceptor.close()
        await runner.cleanup()
    return 0


def _options_doc(opts: ServeOptions) -> dict[str, Any]:
    """``opts`` as JSON (paths and numbers: no secret), for a spawned worker."""

    def path(p: Path | None) -> str | None:
        return None if p is None else os.path.abspath(p)

    return {
        "directory": path(opts.directory),
        "socket_path": path(opts.socket_path),
        "listen": list(opts.listen) if opts.listen is not None else None,
        "tls_cert": path(opts.tls_cert),
        "tls_key": path(opts.tls_key),
        "client_ca": path(opts.client_ca),
        "unseal_timeout": opts.unseal_timeout,
        "limits": {f: getattr(opts.limits, f) for f in Limits.__dataclass_fields__},
        "workers": opts.workers,
    }


def _options_from(doc: dict[str, Any]) -> ServeOptions:
    def path(p: str | None) -> Path | None:
        return None if p is None else Path(p)

    listen = doc["listen"]
    return ServeOptions(
        directory=Path(doc["directory"]),
        socket_path=path(doc["socket_path"]),
        listen=(listen[0], int(listen[1])) if listen is not None else None,
        tls_cert=path(doc["tls_cert"]),
        tls_key=path(doc["tls_key"]),
        client_ca=path(doc["client_ca"]),
        unseal_timeout=float(doc["unseal_timeout"]),
        limits=Limits(**doc["limits"]),
        workers=int(doc["workers"]),
    )


def _spawned(fd: int) -> int:  # pragma: no cover - runs in a replacement worker process
    """A replacement worker (:func:`~.fleet.spawn_worker`): reads its ``SETUP`` from the
    socketpair ``fd``, then serves as a forked worker does; the master key arrives later
    over the same socketpair (``UNSEAL``), never through argv or the environment."""
    ctl = socket.socket(fileno=fd)
    ctl.settimeout(60.0)
    try:
        msg = ctl.recv(DATAGRAM)
    except OSError:
        return 1
    if not msg.startswith(SETUP):
        return 1
    ctl.settimeout(None)
    doc = json.loads(msg[len(SETUP) :])
    opts = _options_from(doc["options"])
    index = int(doc["index"])

    def wlog(m: str) -> None:
        print(f"keysplit serve: worker {index}: {m}", file=sys.stderr, flush=True)

    keep_heap()
    gc.freeze()
    ctl.send(HELLO)  # imports done: what the leader waits for before it counts this worker
    return asyncio.run(_worker(opts, index, int(doc["count"]), ctl, wlog))


def run(opts: ServeOptions, log: Callable[[str], None] | None = None) -> int:
    """Serve until SIGTERM/SIGINT (which seal first). Returns the exit code.

    With ``opts.workers > 1`` the worker processes are forked here, before any event
    loop or thread exists (:mod:`keysplit.service.fleet`).
    """
    if opts.socket_path is None and opts.listen is None:
        raise ValueError("give a socket path and/or a TCP address")
    if isinstance(opts.workers, bool) or not 1 <= opts.workers <= 256:
        raise ValueError("workers must be from 1 to 256")
    out = log or (lambda m: print(f"keysplit serve: {m}", file=sys.stderr, flush=True))
    if opts.listen is not None:
        _tls(opts)  # a bad certificate fails here, once, not in every worker
    listening: list[tuple[socket.socket, str]] = []
    try:
        if opts.socket_path is not None:
            listening.append((_unix_socket(opts.socket_path), f"unix:{opts.socket_path}"))
        if opts.listen is not None:
            host, port = opts.listen
            mtls = " (mTLS)" if opts.client_ca else ""
            tcp = _tcp_socket(host, port)
            bound = tcp.getsockname()[1]  # for port 0, the one the kernel chose: logged
            listening.append((tcp, f"https://{_hostport(host, bound)}{mtls}"))
    except BaseException:
        for s, _ in listening:
            s.close()
        if opts.socket_path is not None and listening:
            with contextlib.suppress(FileNotFoundError):
                opts.socket_path.unlink()
        raise

    def child(index: int, ctl: socket.socket) -> int:  # pragma: no cover - in the child
        def wlog(m: str) -> None:
            out(f"worker {index}: {m}")

        return asyncio.run(_worker(opts, index, opts.workers, ctl, wlog))

    keep_heap()  # every batch would fault its buffers in again (keysplit.service.heap)
    gc.freeze()  # what is loaded by now lives forever: the collector stops walking it
    workers = fork_workers(opts.workers - 1, [s for s, _ in listening], child)
    return asyncio.run(_serve(opts, out, listening, workers))
