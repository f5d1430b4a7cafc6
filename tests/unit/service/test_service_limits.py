"""Issue 21 items 5 and 6: what an unauthenticated (or slow, or hostile) peer can cost the
key service, and what a hostile server can cost ``keysplit.Client``.

The server is a real ``keysplit serve`` process on a Unix socket (and TCP+TLS); peers are
raw sockets speaking just enough HTTP/1.1. Every wait is bounded; no timing is asserted
beyond "dropped within the configured bound plus a generous slack".
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from service_helpers import Server, make_certs

from keysplit import Keyring
from keysplit.errors import FormatError
from keysplit.service import Client, ServiceError
from keysplit.service import _wire as wire
from keysplit.service.core import KeyService, Request
from keysplit.service.tokens import OPERATIONS, TokenList, mac_key

pytestmark = pytest.mark.slow

SLACK = 10.0  # seconds beyond a configured timeout before we call the connection "kept"


@pytest.fixture
def sockdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ksl", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _hwm_kib(pid: int) -> int:
    """Peak resident memory of a process (VmHWM), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _status_line(s: socket.socket, timeout: float) -> str:
    s.settimeout(timeout)
    data = b""
    while b"\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode("latin-1")


def _unix(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(path))
    return s


def _closed_within(s: socket.socket, seconds: float, trickle: bytes = b"") -> float:
    """Seconds until the server closes ``s`` (we send ``trickle`` one byte per 0.2 s
    meanwhile); fails if it is still open after ``seconds``."""
    t0 = time.monotonic()
    s.settimeout(0.2)
    i = 0
    while time.monotonic() - t0 < seconds:
        try:
            if s.recv(65536) == b"":
                return time.monotonic() - t0
        except TimeoutError:
            pass
        except (ConnectionResetError, ssl.SSLError):
            return time.monotonic() - t0
        if trickle:
            try:
                s.send(trickle[i % len(trickle) : i % len(trickle) + 1])
            except OSError:
                return time.monotonic() - t0
            i += 1
    raise AssertionError(f"connection still open after {seconds:.0f} s")


def test_bodies_are_capped_before_they_are_read(tmp_path: Path, sockdir: Path) -> None:
    """The issue's two requests (unknown path, POST /v1/unseal) no longer grow the server:
    a Content-Length over the cap gets 413 before any body byte is sent; a chunked body
    is cut off at the cap; the server's peak RSS stays put (old main: +32 MiB each)."""
    kr, _ = Keyring.create(tmp_path / "vault", 2, ["a", "b"])
    with Server(kr.path, sockdir / "s.sock") as srv:
        assert srv.proc is not None
        with _unix(srv.sock) as s:  # 413 at once, no body sent
            s.sendall(b"POST /v1/unseal HTTP/1.1\r\nHost: k\r\nContent-Length: 268435456\r\n\r\n")
            assert _status_line(s, 20).split()[1] == "413"
        with _unix(srv.sock) as s:  # over the unauthenticated cap, though far under 256 MiB
            s.sendall(b"POST /v1/unseal HTTP/1.1\r\nHost: k\r\nContent-Length: 1048576\r\n\r\n")
            assert _status_line(s, 20).split()[1] == "413"
        before = _hwm_kib(srv.proc.pid)
        for path, status in ((b"/nope", "404"), (b"/v1/unseal", "413")):
            with _unix(srv.sock) as s:
                s.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: k\r\n")
                s.sendall(b"Transfer-Encoding: chunked\r\n\r\n")
                chunk = b"%x\r\n" % (1 << 20) + b"\0" * (1 << 20) + b"\r\n"
                sent = 0
                try:
                    for _ in range(32):
                        s.sendall(chunk)
                        sent += 1
                except OSError:  # the server answered and closed: expected
                    pass
                assert _status_line(s, 20).split()[1] == status
                assert sent < 32 or status == "404"
        grown = (_hwm_kib(srv.proc.pid) - before) / 1024
        assert grown < 16, f"peak RSS grew {grown:.0f} MiB from unauthenticated bodies"
        assert Client(srv.url).service_status()["sealed"] is True  # still serving


def test_idle_and_slow_connections_are_dropped(tmp_path: Path, sockdir: Path) -> None:
    """slowloris (a header trickled byte by byte), a trickled body, a silent TLS peer and
    an idle keep-alive connection are each closed within their timeout (+ slack)."""
    certs = make_certs(tmp_path)
    kr, _ = Keyring.create(tmp_path / "vault", 2, ["a", "b"])
    extra = ("--idle-timeout", "1", "--io-timeout", "1", "--listen", "127.0.0.1:0")
    extra += ("--tls-cert", str(certs["server-cert"]), "--tls-key", str(certs["server-key"]))
    with Server(kr.path, sockdir / "s.sock", *extra) as srv:
        port = srv.tcp_port
        with _unix(srv.sock) as s:  # slowloris: the header never completes
            s.sendall(b"GET /v1/status HTTP/1.1\r\n")
            assert _closed_within(s, 1 + SLACK, trickle=b"X-Slow: aaaaaaaaaaaaaaaaaaaa\r\n") >= 0.5
        with _unix(srv.sock) as s:  # a body trickled byte by byte
            s.sendall(b"POST /v1/unseal HTTP/1.1\r\nHost: k\r\nContent-Length: 4000\r\n\r\n{")
            _closed_within(s, 1 + SLACK, trickle=b" ")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # silent TLS peer
            _closed_within(s, 1 + SLACK)
        ctx = ssl.create_default_context(cafile=str(certs["ca"]))
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:  # idle, over TLS
            s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: k\r\n\r\n")
            assert _status_line(s, 20).split()[1] == "200"
            _closed_within(s, 1 + SLACK)
        # a client that keeps its connection alive just reconnects after the idle close
        c = Client(srv.url)
        assert c.service_status()["sealed"] is True
        time.sleep(1.5)
        assert c.service_status()["sealed"] is True


class _Hostile(threading.Thread):
    """A fake key service on a Unix socket: answers one request with an endless chunked
    body (or a huge Content-Length) and counts what it managed to send."""

    def __init__(self, path: Path, chunked: bool) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.chunked = chunked
        self.sent = 0
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(str(path))
        self.lsock.listen(1)
        self.lsock.settimeout(30)

    def run(self) -> None:
        conn, _ = self.lsock.accept()
        conn.settimeout(30)
        with conn:
            conn.recv(65536)
            if not self.chunked:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n{")
                time.sleep(0.5)
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"%x\r\n" % 65536 + b" " * 65536 + b"\r\n"
            try:
                while self.sent < (64 << 20):
                    conn.sendall(chunk)
                    self.sent += 65536
                conn.sendall(b"1\r\n1\r\n0\r\n\r\n")
            except OSError:
                pass
        self.lsock.close()


@pytest.mark.parametrize("chunked", [True, False])
def test_client_reads_bounded_responses(sockdir: Path, chunked: bool) -> None:
    srv = _Hostile(sockdir / "h.sock", chunked)
    srv.start()
    with pytest.raises(ServiceError, match="larger than"):
        Client(f"unix:{srv.path}", timeout=30).service_status()
    srv.join(40)
    assert srv.sent < 8 << 20  # the client stopped reading near its 1 MiB control bound


class _Trickle(threading.Thread):
    """A fake key service that answers one request a byte at a time, each byte well within
    the client's per-operation timeout, until the client hangs up (or 30 s have passed)."""

    def __init__(self, lsock: socket.socket, ctx: ssl.SSLContext | None = None) -> None:
        super().__init__(daemon=True)
        self.lsock, self.ctx = lsock, ctx
        self.lsock.listen(1)
        self.lsock.settimeout(30)
        self.sent = 0
        self.hung_up = False

    def run(self) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n"
        answer = head + b" " * 3998 + b"{}"
        conn, _ = self.lsock.accept()
        if self.ctx is not None:
            conn = self.ctx.wrap_socket(conn, server_side=True)
        conn.settimeout(30)
        end = time.monotonic() + 30
        with conn:
            conn.recv(65536)
            try:
                while self.sent < len(answer) and time.monotonic() < end:
                    conn.sendall(answer[self.sent : self.sent + 1])
                    self.sent += 1
                    time.sleep(0.02)
            except OSError:
                self.hung_up = True
        self.lsock.close()


def _fake_service(
    sockdir: Path, tls: bool, kind: type[threading.Thread], **client_kw: float
) -> tuple[Any, Client]:
    """A started fake service of ``kind`` (TLS on loopback, or a Unix socket) and a client."""
    if tls:
        certs = make_certs(sockdir)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(certs["server-cert"], certs["server-key"])
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.bind(("127.0.0.1", 0))
        srv = kind(lsock, ctx)  # type: ignore[call-arg]
        url = f"https://127.0.0.1:{lsock.getsockname()[1]}"
        client = Client(url, ca=str(certs["ca"]), **client_kw)
    else:
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(str(sockdir / "t.sock"))
        srv = kind(lsock)  # type: ignore[call-arg]
        client = Client(f"unix:{sockdir / 't.sock'}", **client_kw)
        client._frames = False  # the fakes speak HTTP (frames: test_frames_transport.py)
    srv.start()
    return srv, client


@pytest.mark.parametrize("tls", [False, True])
def test_client_bounds_a_whole_call_against_a_trickling_server(sockdir: Path, tls: bool) -> None:
    """Red team: the client's timeout bounded each socket read, so a server (or whatever
    answered in its place) sending one byte per read held a call for as long as it liked:
    each byte reset the timeout. Now ``deadline`` (default: ``timeout``) bounds the whole
    call; the trickle here would take 80 s, the server gives up after 30 s, and the client
    must hang up first, naming the deadline."""
    srv, client = _fake_service(sockdir, tls, _Trickle, timeout=10, deadline=2)
    with pytest.raises(ServiceError) as info:
        client.service_status()
    # (leftovers) it said "cannot reach the key service": the service was reached
    assert str(info.value) == (
        f"the key service at {client.url} was reached but did not answer completely within "
        "the call's deadline (2 s)"
    )
    assert "deadline" in (info.value.hint or "")
    client.close()
    srv.join(40)
    assert not srv.is_alive()
    assert srv.hung_up and srv.sent < 4000


class _Steady(_Trickle):
    """A fake key service whose answer (400 KB) moves steadily over a slow link: 10 KB every
    50 ms, each piece well within the client's per-operation timeout, 2 s in all."""

    def run(self) -> None:
        body = b" " * (400_000 - 2) + b"{}"
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
        answer = head.encode() + b"\r\n\r\n" + body
        conn, _ = self.lsock.accept()
        if self.ctx is not None:
            conn = self.ctx.wrap_socket(conn, server_side=True)
        conn.settimeout(30)
        with conn, contextlib.suppress(OSError):
            conn.recv(65536)
            while self.sent < len(answer):
                conn.sendall(answer[self.sent : self.sent + 10_000])
                self.sent = min(len(answer), self.sent + 10_000)
                time.sleep(0.05)
        self.lsock.close()


@pytest.mark.parametrize("tls", [False, True])
def test_a_call_moving_steadily_past_timeout_is_not_cut_by_the_default_deadline(
    sockdir: Path, tls: bool
) -> None:
    """Red team: the whole-call deadline defaulted to ``timeout``, so a big batch whose bytes
    kept moving over a slow link, which worked while ``timeout`` bounded each socket
    operation, now failed once the whole call outlasted it. Without ``deadline`` the bound
    is ``timeout`` plus the time the call's bytes take at 64 KiB/s: this answer (2 s with
    ``timeout=1``) arrives whole; a trickling server is still ended (finite bound)."""
    srv, client = _fake_service(sockdir, tls, _Steady, timeout=1)
    try:
        assert client.service_status() == {}
    finally:
        client.close()
        srv.join(40)
    assert not srv.is_alive()
    from keysplit.service.client import MIN_RATE, default_deadline

    limit = wire.response_limit(0, 0)
    assert default_deadline(1.0, 0, limit) == math.ceil(1 + limit / MIN_RATE)  # finite


class _HangUpThenTrickle(_Trickle):
    """A fake key service that answers a first request whole (keep-alive), hangs up on the
    second unanswered (the client then sends it again on a new connection, as it does when
    a server's idle timeout closed a kept-alive one), and trickles its answer there."""

    def run(self) -> None:
        ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        first, _ = self.lsock.accept()
        if self.ctx is not None:
            first = self.ctx.wrap_socket(first, server_side=True)
        with first:
            first.settimeout(30)
            first.recv(65536)
            first.sendall(ok)
            first.recv(65536)  # the second request: never answered here
        super().run()  # the retry's connection: a byte every 20 ms


@pytest.mark.parametrize("tls", [False, True])
def test_a_retried_call_keeps_the_calls_deadline(sockdir: Path, tls: bool) -> None:
    """Red team: a call sent again on a new connection (its kept-alive one closed by the
    server before an answer) ran on that connection's fresh clock, with no deadline at all:
    a server could hang up once, then trickle the answer for as long as it liked. The retry
    now keeps the call's deadline."""
    srv, client = _fake_service(sockdir, tls, _HangUpThenTrickle, timeout=10, deadline=2)
    try:
        assert client.service_status() == {}
        with pytest.raises(ServiceError, match="was reached but did not answer completely"):
            client.service_status()
    finally:
        client.close()
        srv.join(40)
    assert not srv.is_alive()
    assert srv.hung_up and srv.sent < 4000


def _read_request(conn: socket.socket) -> bytes:
    """One HTTP request read whole (its header, then Content-Length bytes of body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        got = conn.recv(65536)
        if not got:
            return buf
        buf += got
    head, _, body = buf.partition(b"\r\n\r\n")
    size = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < size:
        got = conn.recv(65536)
        if not got:
            break
        body += got
    return head


class _CutThenStall(_Trickle):
    """A fake key service: a streamed decrypt's answer is cut after its head (as a server
    does when a record fails after the first piece), then the client's whole retry on a
    new connection is never answered (a stalled server); counts the requests it got."""

    def run(self) -> None:
        self.requests: list[bytes] = []
        streamed = (
            f"HTTP/1.1 200 OK\r\nContent-Type: {wire.BATCH_TYPE}\r\n"
            f"{wire.STREAMED}: 1\r\nContent-Length: 5000\r\n\r\n"
        ).encode()
        with contextlib.suppress(OSError):
            for answer in (True, False):
                conn, _ = self.lsock.accept()
                if self.ctx is not None:
                    conn = self.ctx.wrap_socket(conn, server_side=True)
                conn.settimeout(30)
                with conn:
                    self.requests.append(_read_request(conn))
                    if answer:
                        conn.sendall(streamed)  # and hang up: 5,000 bytes announced, none sent
                        continue
                    self.hung_up = conn.recv(1) == b""  # until the client hangs up (or 30 s)
        self.lsock.close()


@pytest.mark.parametrize("tls", [False, True])
def test_a_cut_streamed_decrypt_asked_again_keeps_the_calls_deadline(
    sockdir: Path, tls: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A streamed decrypt the server cut is asked again whole; that retry began a new
    call with a fresh deadline, so a server that cut the stream late and then stalled held
    the caller for up to twice its deadline. The retry now keeps the first call's deadline:
    the deadline each attempt's connection was given is recorded (no timing asserted), and
    the stalled retry ends with the deadline's error."""
    from keysplit.service import client as client_mod

    given: list[tuple[float, float]] = []
    start = client_mod._Clock.start

    def recorded(self: Any, total: float, deadline: float) -> None:
        given.append((total, deadline))
        start(self, total, deadline)

    monkeypatch.setattr(client_mod._Clock, "start", recorded)
    srv, client = _fake_service(sockdir, tls, _CutThenStall, timeout=10, deadline=2)
    try:
        with pytest.raises(ServiceError) as info:
            client.decrypt_many(["u/1"], [b"x" * 40])
    finally:
        client.close()
        srv.join(40)
    assert not srv.is_alive()
    assert [r.split(b"\r\n")[0] for r in srv.requests] == [b"POST /v1/decrypt HTTP/1.1"] * 2
    assert wire.STREAM_OK.lower().encode() in srv.requests[0].lower()
    assert wire.STREAM_OK.lower().encode() not in srv.requests[1].lower()  # asked whole
    assert srv.hung_up  # the client gave up on the stalled retry
    assert len(given) == 2 and given[0][0] == given[1][0] == 2
    assert given[1][1] <= given[0][1]  # before: the retry's deadline began at the retry
    assert str(info.value) == (
        f"the key service at {client.url} was reached but did not answer completely within "
        "the call's deadline (2 s)"
    )


def test_client_timeout_and_deadline_must_be_positive_seconds() -> None:
    for bad in (0, -1, float("nan"), float("inf"), True, "5"):
        with pytest.raises(ValueError, match="positive number of seconds"):
            Client("unix:/nonexistent", timeout=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="positive number of seconds"):
            Client("unix:/nonexistent", deadline=bad)  # type: ignore[arg-type]


# -- item 6: numeric fields ----------------------------------------------------------------


def test_rewrap_batch_size_is_validated(tmp_path: Path) -> None:
    """batch_size 10^30 was an HTTP 500 (OverflowError); every bad value is a 400 naming
    the field, the good ones still work, and the client refuses them before sending."""
    kr, shares = Keyring.create(tmp_path / "vault", 2, ["a", "b"])
    with kr.unseal([shares["a"], shares["b"]]) as u:
        tl = TokenList.read(kr.path, kr.keyring_id)
        token = tl.create(
            mac_key(u.audit_key(), kr.keyring_id), name="t", allow=list(OPERATIONS),
            subject_prefix="",
        )[0]  # fmt: skip
    svc = KeyService(kr.path, log=lambda m: None)
    svc._unsealed(kr.unseal([shares["a"], shares["b"]]), ["a", "b"])
    auth = {"authorization": f"Bearer {token}"}

    def rewrap(body: bytes) -> tuple[int, dict]:
        r = svc.handle(Request("POST", "/v1/rewrap", auth, body))
        return r.status, json.loads(r.body)

    for bad in ("1" + "0" * 30, "0", "-1", "1.5", "2.0", "true", '"10"', "null", "1e3"):
        status, doc = rewrap(b'{"batch_size": ' + bad.encode() + b"}")
        assert status == 400, (bad, doc)
        assert doc["error"]["type"] == "FormatError" and "batch_size" in doc["error"]["message"]
    status, doc = rewrap(b'{"batch_size": ' + b"9" * 5000 + b"}")  # beyond int parsing
    assert status == 400 and doc["error"]["type"] == "FormatError"
    assert rewrap(b"[]")[0] == 400
    for good in (b"{}", b'{"batch_size": 1}', b'{"batch_size": %d}' % wire.MAX_REWRAP_BATCH):
        assert rewrap(good)[0] == 200
    assert rewrap(b'{"batch_size": %d}' % (wire.MAX_REWRAP_BATCH + 1))[0] == 400
    c = Client("unix:/nonexistent", token=token)
    for v in (10**30, 0, True):
        with pytest.raises((ValueError, TypeError)):
            c.rewrap(batch_size=v)
    with pytest.raises(FormatError):
        wire.int_field({"n": 10**30}, "n", 1, 1, 10)
    svc.close()


def test_parked_headers_are_bounded_per_connection_and_in_number(
    tmp_path: Path, sockdir: Path
) -> None:
    """A header that never completes is held until the idle timeout; before, aiohttp's
    defaults let each unauthenticated connection park 128 fields of 8 KiB and nothing
    capped the connections (300 grew a real server by 130 MiB). The server's own stack
    (runner + acceptor, as ``keysplit serve`` runs them) with ``connections=3``: a fourth
    connection is closed at once, a freed slot serves again, 33 header fields are refused."""
    import asyncio

    from keysplit.service import server as srv_mod

    kr, _ = Keyring.create(tmp_path / "vault", 2, ["a", "b"])
    svc = KeyService(kr.path, log=lambda m: None)
    lim = srv_mod.Limits(connections=3, idle=30.0)
    assert lim.header_fields == 32 and lim.field_size == 2048
    for bad in ({"connections": 0}, {"header_fields": True}, {"field_size": 10**9}):
        with pytest.raises(ValueError):
            srv_mod.Limits(**bad)  # type: ignore[arg-type]
    path = sockdir / "s.sock"

    async def after(req: Request, r: object, was_sealed: bool) -> None:
        return None

    async def status(reader: asyncio.StreamReader) -> str:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
        except ConnectionResetError:  # closed with our request unread
            return "closed"
        return line.decode("latin-1").split(" ")[1] if line else "closed"

    async def main() -> None:
        runner = srv_mod._runner(svc, lim, after)
        await runner.setup()
        acc = srv_mod._Acceptor(runner, lim, svc)
        acc.listen(srv_mod._unix_socket(path), None)
        parked = []
        for _ in range(3):
            r, w = await asyncio.open_unix_connection(str(path))
            w.write(b"GET /v1/status HTTP/1.1\r\nHost: k\r\nX-A: " + b"a" * 2000 + b"\r\n")
            parked.append((r, w))
        for _ in range(100):
            if runner.server is not None and len(runner.server.connections) == 3:
                break
            await asyncio.sleep(0.05)
        r4, w4 = await asyncio.open_unix_connection(str(path))
        w4.write(b"GET /v1/status HTTP/1.1\r\nHost: k\r\n\r\n")
        assert await status(r4) == "closed"  # over the cap: closed, nothing answered
        w4.close()
        parked[0][1].close()
        for _ in range(100):
            assert runner.server is not None
            if len(runner.server.connections) < 3:
                break
            await asyncio.sleep(0.05)
        r5, w5 = await asyncio.open_unix_connection(str(path))
        w5.write(b"GET /v1/status HTTP/1.1\r\nHost: k\r\n\r\n")
        assert await status(r5) == "200"
        w5.close()
        many = b"".join(b"X-%d: v\r\n" % i for i in range(33))
        r5, w5 = await asyncio.open_unix_connection(str(path))
        w5.write(b"GET /v1/status HTTP/1.1\r\nHost: k\r\n" + many + b"\r\n")
        assert await status(r5) in ("400", "431", "closed")
        w5.close()
        for _, w in parked[1:]:
            w.close()
        await acc.close()
        await runner.cleanup()

    asyncio.run(main())
    svc.close()
