"""The client's connection never outlives an exchange it did not finish: a call that ends
any other way (an interrupt while it waits, a short error answer) leaves no request in
flight on a connection the next call would reuse, and every failure is a KeysplitError.
One policy (``Client._call``) rules both transports: frames and HTTP.

The servers are threads on a real Unix socket answering frames (or HTTP) by hand
(decrypt: each item's "plaintext" is the subject it was asked for, so an answer meant for
another request shows); every wait is bounded.
"""

from __future__ import annotations

import contextlib
import select
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_frames_transport import _FakeService, _lead
from test_service_limits import _read_request

from keysplit.service import Client, ServiceError
from keysplit.service import _wire as wire
from keysplit.service import client as client_mod

WAIT = 20.0


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    got = b""
    while len(got) < n:
        more = conn.recv(n - len(got))
        if not more:
            return None
        got += more
    return got


def _request(conn: socket.socket) -> list[str] | None:
    """The subjects of one frame request read from ``conn``; None at its end."""
    head = _recv_exact(conn, wire.FRAME_REQUEST.size)
    if head is None:
        return None
    *_, tlen, blen = wire.FRAME_REQUEST.unpack(head)
    rest = _recv_exact(conn, tlen + blen)
    if rest is None:
        return None
    _, subjects, _ = wire.decode_frame(rest[tlen:])
    return subjects


def _echo(subjects: list[str]) -> bytes:
    body = wire.encode_frame({}, [s.encode() for s in subjects], subjects)
    return wire.FRAME_ANSWER.pack(wire.FRAMES_MAGIC, 200, 0, len(body)) + body


def _listen(path: Path) -> tuple[socket.socket, str]:
    """A listening Unix socket at ``path`` (accept bounded by WAIT) and its client URL."""
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(str(path))
    lsock.listen(4)
    lsock.settimeout(WAIT)
    return lsock, f"unix:{path}"


class _SlowFirst(threading.Thread):
    """Answers every request with its own subjects, except the first connection's first
    request, answered only once a second request came on that connection (a service busy
    with it while the client gave up waiting): then both, in order."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.lsock, self.url = _listen(path)
        self.connections = 0
        self.first_read = threading.Event()

    def run(self) -> None:
        with contextlib.suppress(OSError), self.lsock:
            while self.connections < 2:
                conn, _ = self.lsock.accept()
                self.connections += 1
                conn.settimeout(WAIT)
                with conn:
                    held = _request(conn) if self.connections == 1 else None
                    self.first_read.set()
                    while (subjects := _request(conn)) is not None:
                        if held is not None:
                            conn.sendall(_echo(held))
                            held = None
                        conn.sendall(_echo(subjects))


def test_an_interrupted_call_never_hands_its_answer_to_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call interrupted while it waits for its answer (Ctrl-C, a signal handler's
    exception) drops its connection: the next call goes out on a new one and gets its own
    answer. Before, the connection stayed in use with the first request still in flight,
    and the next decrypt got the first one's plaintexts as its own."""
    srv = _SlowFirst(Path(tempfile.mkdtemp(prefix="ksf", dir="/tmp")) / "i.sock")
    srv.start()
    c = Client(srv.url, token="t", timeout=WAIT)
    read = client_mod._FrameConn.read
    calls = [0]

    def interrupted(self: client_mod._FrameConn, k: int) -> bytes:
        calls[0] += 1
        if calls[0] == 1:
            assert srv.first_read.wait(WAIT)
            raise KeyboardInterrupt
        return read(self, k)

    monkeypatch.setattr(client_mod._FrameConn, "read", interrupted)
    with pytest.raises(KeyboardInterrupt):
        c.decrypt_many(["alice"], [b"r" * 40])
    assert c.decrypt_many(["bob"], [b"r" * 40]) == [b"bob"]
    c.close()
    srv.join(WAIT + 10)
    assert srv.connections == 2


def test_an_error_answer_cut_short_is_a_service_error() -> None:
    """An error answer (non-200) that ends before its announced length is a
    ServiceError ("cannot reach"), as a short 200 answer is: before, http.client's
    IncompleteRead escaped the library unmapped."""

    def answer(conn: socket.socket) -> None:
        conn.sendall(_lead(403, 100) + b"{}")

    srv = _FakeService(Path(tempfile.mkdtemp(prefix="ksf", dir="/tmp")) / "s.sock", answer)
    srv.start()
    c = Client(srv.url, token="t", timeout=WAIT)
    with pytest.raises(ServiceError, match="cannot reach"):
        c.encrypt_many(["f/1"], [b"x"])
    assert getattr(c._local, "frames", None) is None  # dropped, not kept for the next call
    c.close()
    srv.join(WAIT + 10)


class _Counting(threading.Thread):
    """An HTTP key service by hand (keep-alive): answers each request with ``{"n": k}``,
    ``k`` counting the requests over every connection. ``hold``: the first request is
    answered only once its connection is readable again (the client sent more, or hung
    up), as a service busy with it would."""

    def __init__(self, path: Path, hold: bool) -> None:
        super().__init__(daemon=True)
        self.hold = hold
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(str(path))
        self.lsock.listen(4)
        self.lsock.settimeout(WAIT)
        self.url = f"unix:{path}"
        self.requests: list[int] = []  # the connection (1, 2 ...) of each request

    def run(self) -> None:
        with self.lsock:
            for n in (1, 2):
                conn, _ = self.lsock.accept()
                conn.settimeout(WAIT)
                with conn, contextlib.suppress(OSError):  # a reset: the client dropped it
                    while _read_request(conn):  # b"" at its end
                        self.requests.append(n)
                        if self.hold and len(self.requests) == 1:
                            select.select([conn], [], [], WAIT)
                        body = b'{"n": %d}' % len(self.requests)
                        conn.sendall(
                            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                        )


@pytest.mark.parametrize("where", ["head", "body"])
def test_an_interrupted_http_call_drops_its_connection_as_a_frame_call_does(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The two transports' exchanges differed in one rule: a frame call that ended by an
    interrupt (Ctrl-C, a signal handler's exception) dropped its connection, an HTTP call
    kept it half-way through its exchange. Interrupted before its answer's head was read,
    the next call on that thread failed ("cannot reach the key service: Request-sent")
    though the service was up; interrupted in the answer's body, the next call was sent
    on that connection (a shred would have run) and then reported as failed
    (ResponseNotReady). Now both drop it: the next call goes out on a new connection and
    gets its own answer."""
    srv = _Counting(Path(tempfile.mkdtemp(prefix="ksf", dir="/tmp")) / "h.sock", where == "head")
    srv.start()
    c = Client(srv.url, timeout=WAIT)
    c._frames = False
    calls = [0]
    if where == "head":
        target, name = client_mod.http.client.HTTPResponse, "begin"
        real = target.begin

        def cut(*a: object, **k: object) -> object:
            calls[0] += 1
            if calls[0] == 1:  # the request is out, its answer held by the service
                raise KeyboardInterrupt
            return real(*a, **k)  # type: ignore[arg-type]

    else:
        target, name = client_mod, "_read_bounded"
        real = client_mod._read_bounded

        def cut(*a: object, **k: object) -> object:
            calls[0] += 1
            if calls[0] == 1:
                raise KeyboardInterrupt
            return real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(target, name, cut)
    with pytest.raises(KeyboardInterrupt):
        c.service_status()
    assert c.service_status() == {"n": 2}
    c.close()
    srv.join(WAIT + 10)
    assert srv.requests == [1, 2]  # the second request on a new connection


class _Trickle(threading.Thread):
    """Reads a frame request slowly (256 KiB every 0.2 s, so no single send waits long)
    until the client gives up, or, the request whole, answers it."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.lsock, self.url = _listen(path)
        self.read = 0
        self.whole = False

    def run(self) -> None:
        with contextlib.suppress(OSError), self.lsock:
            conn, _ = self.lsock.accept()
            conn.settimeout(WAIT)
            with conn:
                head = _recv_exact(conn, wire.FRAME_REQUEST.size)
                assert head is not None
                *_, tlen, blen = wire.FRAME_REQUEST.unpack(head)
                stop = threading.Event()
                while self.read < tlen + blen:
                    more = conn.recv(min(256 << 10, tlen + blen - self.read))
                    if not more:
                        return
                    self.read += len(more)
                    stop.wait(0.2)
                self.whole = True
                conn.sendall(_echo(["f/1"]))


def test_a_service_reading_the_request_slowly_cannot_hold_a_call_past_its_deadline() -> None:
    """The call's deadline bounds sending the request too: a service that takes a 48 MiB
    request a little at a time (each send progressing well within ``timeout``) gets a
    ServiceError at the deadline. Before, only the first sendmsg was bounded by it; the
    rest went out through sendall, each system call's SO_SNDTIMEO armed once, so the call
    lasted as long as the trickle did (~40 s here), then returned."""
    srv = _Trickle(Path(tempfile.mkdtemp(prefix="ksf", dir="/tmp")) / "t.sock")
    srv.start()
    c = Client(srv.url, token="t", timeout=2, deadline=3)
    with pytest.raises(ServiceError, match="deadline"):
        c.encrypt_many(["f/1"] * 48, [b"x" * (1 << 20)] * 48)
    c.close()
    srv.join(WAIT + 60)
    assert not srv.whole and srv.read < 48 << 20


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.sampled_from([0, 1, 7, 1000, 4096, 70_000]), min_size=1, max_size=2100),
    chunk=st.integers(1, 50_000),
)
def test_a_frame_request_goes_out_whole_and_in_order_however_the_peer_reads_it(
    sizes: list[int], chunk: int
) -> None:
    """``_FrameConn.send``: one ``sendmsg`` when the socket takes it all, else the rest
    resumed where the kernel stopped (inside a part, past empty parts, beyond the 1,024
    buffers one call takes): the peer, reading ``chunk`` bytes at a time from a small
    buffer, gets exactly the parts joined."""
    parts = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    got: list[bytes] = []

    def drain() -> None:
        want = sum(sizes)
        while want > 0 and (more := b.recv(min(chunk, want))):
            got.append(more)
            want -= len(more)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        clock = client_mod._Clock(WAIT)
        clock.start(WAIT, time.monotonic() + WAIT)
        conn = client_mod._FrameConn("unused", clock)
        conn.sock = a
        conn.send(parts)
        reader.join(WAIT)
        assert not reader.is_alive()
        assert b"".join(got) == b"".join(parts)
    finally:
        a.close()
        b.close()
        reader.join(WAIT)
