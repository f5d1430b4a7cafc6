"""``keysplit serve``: the key service on aiohttp (Unix socket, optionally TCP+TLS/mTLS).

Why aiohttp (benchmarks/ab_http_stack.py, figures in docs/API.md): batch throughput on
the Unix socket was within noise of Starlette on uvicorn, and aiohttp serves several
sites from one runner with TLS per site, so the local socket stays plain while TCP gets
TLS, and signal handling stays ours. One dependency tree, no ASGI server.

Handlers call :meth:`KeyService.handle` directly on the event loop: one request at a time
owns the keyring, so no locks; a large batch delays the next request by its own length.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from ..errors import KeysplitError
from . import _wire as wire
from .core import KeyService, Request

__all__ = ["ServeOptions", "make_app", "run"]


@dataclass(frozen=True)
class ServeOptions:
    directory: Path
    socket_path: Path | None = None
    listen: tuple[str, int] | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    unseal_timeout: float = 600.0


def make_app(service: KeyService) -> web.Application:
    async def handler(request: web.Request) -> web.StreamResponse:
        sock = request.transport.get_extra_info("socket") if request.transport else None
        local = sock is not None and sock.family == socket.AF_UNIX
        headers = {k.lower(): v for k, v in request.headers.items()}
        early = service.precheck(Request(request.method, request.path, headers, b"", local))
        if early is not None:
            r = early
        else:
            body = await request.read()
            r = service.handle(Request(request.method, request.path, headers, body, local))
        return web.Response(status=r.status, body=r.body, content_type=r.content_type)

    app = web.Application(client_max_size=wire.MAX_BODY)
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
    old = os.umask(0o177)
    try:
        s.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    s.listen(128)
    s.setblocking(False)
    return s


def _tls(opts: ServeOptions) -> ssl.SSLContext:
    if opts.tls_cert is None or opts.tls_key is None:
        raise KeysplitError("--listen needs --tls-cert and --tls-key (plain TCP is refused)")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(opts.tls_cert), str(opts.tls_key))
    if opts.client_ca is not None:
        ctx.load_verify_locations(cafile=str(opts.client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def _serve(opts: ServeOptions, log: Callable[[str], None]) -> int:
    service = KeyService(opts.directory, unseal_timeout=opts.unseal_timeout, log=log)
    runner = web.AppRunner(make_app(service), handle_signals=False, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reason: list[str] = []

    def on_stop(name: str) -> None:
        reason.append(name)
        service.seal(name)  # drop keys first, then stop accepting
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, on_stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, on_stop, "SIGINT")
    loop.add_signal_handler(signal.SIGHUP, lambda: service.reload_tokens(force=True))
    where = []
    sock_path = opts.socket_path
    try:
        if sock_path is not None:
            s = _unix_socket(sock_path)
            await web.SockSite(runner, s).start()
            where.append(f"unix:{sock_path}")
        if opts.listen is not None:
            host, port = opts.listen
            site = web.TCPSite(runner, host, port, ssl_context=_tls(opts))
            await site.start()
            where.append(f"https://{host}:{port}" + (" (mTLS)" if opts.client_ca else ""))
        log(f"keyring {service.keyring.keyring_id} sealed; listening on {', '.join(where)}")
        await stop.wait()
    finally:
        service.close()
        await runner.cleanup()
        if sock_path is not None and where and where[0].startswith("unix:"):
            with contextlib.suppress(FileNotFoundError):
                sock_path.unlink()
    log(f"stopped ({reason[0] if reason else 'error'})")
    return 0


def run(opts: ServeOptions, log: Callable[[str], None] | None = None) -> int:
    """Serve until SIGTERM/SIGINT (which seal first). Returns the exit code."""
    if opts.socket_path is None and opts.listen is None:
        raise ValueError("give a socket path and/or a TCP address")
    out = log or (lambda m: print(f"keysplit serve: {m}", file=sys.stderr, flush=True))
    return asyncio.run(_serve(opts, out))
