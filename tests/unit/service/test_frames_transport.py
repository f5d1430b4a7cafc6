"""The Unix socket's frame transport (issue 23): ``encrypt``/``decrypt`` batches without
HTTP, authorized, bounded and answered as the HTTP path does.

Servers are real ``keysplit serve`` processes; hostile peers are raw sockets writing
frame heads by hand, and hostile *servers* are threads on a Unix socket answering the
client by hand. Every wait is bounded; no timing is asserted (a connection is "closed"
when the server ends it within its configured bound plus a generous slack).
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import select
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from service_helpers import Server
from test_wire_frames import _keyring

import keysplit
from keysplit.errors import FormatError, PermissionDenied, SealedError
from keysplit.service import Client, ServiceError
from keysplit.service import _wire as wire

pytestmark = pytest.mark.slow

SLACK = 10.0
Keyring = tuple[keysplit.Keyring, dict[str, keysplit.Share], str]


@pytest.fixture(scope="module")
def keyring() -> Iterator[tuple[keysplit.Keyring, dict[str, keysplit.Share], str, Path]]:
    d = Path(tempfile.mkdtemp(prefix="ksf", dir="/tmp"))
    yield (*_keyring(d), d)
    shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def _served(
    keyring: tuple[keysplit.Keyring, dict[str, keysplit.Share], str, Path], name: str, *extra: str
) -> Iterator[tuple[Server, Client]]:
    """A real ``keysplit serve`` of the keyring, unsealed by custodians a and b, and a
    client of it (frames on, the default over a Unix socket)."""
    kr, shares, token, d = keyring
    with Server(kr.path, d / name, *extra) as srv:
        c = Client(srv.url, token=token, timeout=60)
        for n in "ab":
            c.submit_share(shares[n], c.unseal_offer(), keyring_id=kr.keyring_id)
        try:
            yield srv, c
        finally:
            c.close()


def _batch(n: int) -> tuple[list[str], list[bytes]]:
    return [f"f/{i % 300}" for i in range(n)], [bytes([i % 251]) * 1000 for i in range(n)]


def _framed(c: Client) -> list[str]:
    """Count the client's batches that went over frames (and came back answered)."""
    calls: list[str] = []
    exchange = c._frames_exchange

    def counted(path: str, *a: object, **k: object) -> object:
        out = exchange(path, *a, **k)  # type: ignore[arg-type]
        if out is not None:
            calls.append(path)
        return out

    c._frames_exchange = counted  # type: ignore[method-assign]
    return calls


def _head(
    body: bytes, token: bytes, *, op: int = 1, flags: int = 0, blen: int | None = None
) -> bytes:
    return wire.FRAME_REQUEST.pack(
        wire.FRAMES_MAGIC, 1, op, flags, 0, len(token), len(body) if blen is None else blen
    )


def _unix(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(str(path))
    return s


def _answer(s: socket.socket) -> tuple[int, dict[str, object] | bytes]:
    """(status, JSON error or body) of one frame answer, read with bounded waits."""
    lead = b""
    while len(lead) < wire.FRAME_ANSWER.size:
        more = s.recv(wire.FRAME_ANSWER.size - len(lead))
        assert more, f"closed after {lead!r}"
        lead += more
    magic, status, _, length = wire.FRAME_ANSWER.unpack(lead)
    assert magic == wire.FRAMES_MAGIC
    body = b""
    while len(body) < length:
        more = s.recv(length - len(body))
        assert more
        body += more
    return status, (json.loads(body) if status != 200 else body)


def _closed(s: socket.socket, seconds: float) -> None:
    """The server closes ``s`` within ``seconds`` (anything it sends first is read)."""
    s.settimeout(0.2)
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        try:
            if s.recv(65536) == b"":
                return
        except TimeoutError:
            continue
        except ConnectionResetError:
            return
    raise AssertionError(f"connection still open after {seconds:.0f} s")


def test_batches_go_over_frames_and_answer_as_http(
    keyring: tuple[keysplit.Keyring, dict[str, keysplit.Share], str, Path],
) -> None:
    """Records, streamed answers (encrypt and decrypt), contexts and every kind of
    failure come back the same over frames as over HTTP, on one kept-alive connection."""
    with _served(keyring, "ok.sock", "--workers", "1") as (srv, c):
        http = Client(srv.url, token=keyring[2], timeout=60)
        http._frames = False
        framed = _framed(c)
        for n in (1, 40, 3000):  # 3000 KiB: streamed answers
            subjects, plain = _batch(n)
            recs = c.encrypt_many(subjects, plain, {"t": "x"})
            assert c.decrypt_many(subjects, recs, {"t": "x"}) == plain
            assert http.decrypt_many(subjects, recs, {"t": "x"}) == plain
            assert (
                c.decrypt_many(subjects, http.encrypt_many(subjects, plain, {"t": "x"}), {"t": "x"})
                == plain
            )
        assert len(framed) == 9 and c._local.frames.sock is not None
        subjects, plain = _batch(40)
        recs = c.encrypt_many(subjects, plain)
        bad = list(recs)
        bad[7] = bad[7][:-1] + bytes([bad[7][-1] ^ 1])
        for client in (c, http):
            with pytest.raises(keysplit.IntegrityError):
                client.decrypt_many(subjects, bad)
            with pytest.raises(ValueError, match="subject must not be empty"):
                client.encrypt_many([*subjects[:3], "", *subjects[4:]], plain)
            with pytest.raises(keysplit.IntegrityError):
                client.decrypt_many(subjects, recs, {"other": "context"})
        big_s, big_p = _batch(3000)
        big = c.encrypt_many(big_s, big_p)
        big[-1] = big[-1][:-1] + bytes([big[-1][-1] ^ 1])  # fails after the first piece
        with pytest.raises(keysplit.IntegrityError):
            c.decrypt_many(big_s, big)  # streamed, cut, asked again whole
        assert c.encrypt_many(["f/1"], [b"still served"])
        http.close()


@pytest.mark.parametrize("transport", ["frames", "http"])
def test_a_buffer_of_wide_items_is_sealed_whole_and_the_connection_stays_in_step(
    keyring: tuple[keysplit.Keyring, dict[str, keysplit.Share], str, Path], transport: str
) -> None:
    """A plaintext that is a buffer of items wider than a byte (a NumPy array, an
    ``array('H')``, a cast memoryview), which the in-process engine seals whole: the
    client framed it by ``len()``, its count of *items*, while ``sendmsg``/``join`` sent
    its bytes. Over HTTP the server read the announced (shorter) length, sealed the first
    half of the plaintext and answered 200, and the rest of the bytes waited on the
    connection as the start of its next request; over frames the client's send raised
    IndexError. Now each such item goes out as its bytes (a strided view is a TypeError, as
    in process), and the same connection answers the next batch. A real ``keysplit serve``."""
    np = pytest.importorskip("numpy")
    from array import array

    wide = [np.arange(300, dtype=np.uint16), memoryview(array("I", range(70))), b"plain"]
    with _served(keyring, f"wide-{transport}.sock") as (_, c):
        if transport == "http":
            c._frames = False
        framed = _framed(c)
        subjects = ["f/wide", "f/wide", "f/other"]
        records = c.encrypt_many(subjects, wide)
        assert c.decrypt_many(subjects, records) == [bytes(memoryview(p)) for p in wide]
        again = c.encrypt_many(["f/next"], [b"next"])  # the connection is still in step
        assert c.decrypt_many(["f/next"], again) == [b"next"]
        assert (len(framed) > 0) == (transport == "frames")
        with pytest.raises(TypeError, match="contiguous"):
            c.encrypt_many(["f/x"], [memoryview(b"abcdef")[::2]])
        assert c.decrypt_many(["f/next"], again) == [b"next"]


class _Upper(str):
    """A str type whose own ``__str__`` and ``encode`` answer other text."""

    def __str__(self) -> str:
        return str.__str__(self).upper()

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return str.__str__(self).upper().encode(encoding, errors)


_REFUSED_OR_BOUND: list[tuple[str, list[object], object]] = [
    ("context key an int", ["f/c"], {1: "v"}),
    ("context value an int", ["f/c"], {"t": 1}),
    ("context value bytes", ["f/c"], {"t": b"v"}),
    ("per-record context a pair", ["f/c"], [("ab", "cd")]),
    ("contexts a str", ["f/c"], "ab"),
    ("contexts strs", ["f/c", "f/d"], ["ab", "cd"]),
    ("context value a lone surrogate", ["f/c"], {"t": "\udc80"}),
    ("subject an int", [1], None),
    ("subject a lone surrogate", ["a\udc80"], None),
    ("context of str subclasses", ["f/c"], {_Upper("k"): _Upper("v")}),
]


@pytest.mark.parametrize("transport", ["frames", "http"])
def test_the_client_binds_or_refuses_a_subject_and_context_as_in_process(
    keyring: tuple[keysplit.Keyring, dict[str, keysplit.Share], str, Path], transport: str
) -> None:
    """The client sent a batch's context as JSON of ``dict(context)``: a context key ``1``
    was sealed as ``"1"`` (in process: TypeError), a per-record context ``("ab", "cd")``
    was read as ``{"a": "b", "c": "d"}`` and sealed under it, and other inputs the engine
    refuses by name failed with "dictionary update sequence", "not JSON serializable", a
    UnicodeEncodeError or a FormatError about the request. Each input must be refused
    with the in-process error, or sealed under the text given (it opens in process). A
    real ``keysplit serve``; the connection stays in step. ``shred``, ``shred_many``,
    ``set_legal_hold`` and ``datakeys`` of a subject the engine refuses raised the
    service's FormatError ("'subjects' must be a list of strings"), a UnicodeEncodeError
    or "sequence item 0: expected str instance": now the engine's error."""
    kr, shares, _, _ = keyring
    with _served(keyring, f"types-{transport}.sock") as (_, c):
        if transport == "http":
            c._frames = False
        with kr.unseal([shares["a"], shares["b"]]) as u:
            for label, subjects, context in _REFUSED_OR_BOUND:
                pts = [b"p%d" % i for i in range(len(subjects))]
                try:
                    u.encrypt_many(subjects, pts, context)  # type: ignore[arg-type]
                    want = None
                except (TypeError, ValueError) as exc:
                    want = (type(exc), str(exc))
                try:
                    recs = c.encrypt_many(subjects, pts, context)  # type: ignore[arg-type]
                    got = None
                except (TypeError, ValueError) as exc:
                    got = (type(exc), str(exc))
                assert got == want, label
                if got is None:
                    assert u.decrypt_many(subjects, recs, context) == pts, label  # type: ignore[arg-type]
            for what in ("plaintext", "record"):
                with pytest.raises(TypeError, match="must be bytes or a contiguous buffer"):
                    if what == "plaintext":
                        c.encrypt_many(["f/c"], [None])  # type: ignore[list-item]
                    else:
                        c.decrypt_many(["f/c"], [None])  # type: ignore[list-item]
            make_keys = functools.partial(u.data_keys, create=True)
            for bad in (1, "a\udc80", "", "a\x00"):  # shred, holds, data keys: the same errors
                pairs: list[
                    tuple[Callable[..., object], Callable[..., object], tuple[object, ...]]
                ] = [
                    (c.shred, u.shred, (bad,)),
                    (lambda *a: c.shred_many(list(a)), u.shred, (bad,)),
                    (c.set_legal_hold, u.set_legal_hold, (bad, True)),
                    (lambda *a: c.datakeys(list(a)), lambda *a: make_keys(list(a)), (bad,)),
                ]
                for client_call, engine_call, args in pairs:
                    with pytest.raises((TypeError, ValueError)) as engine_err:
                        engine_call(*args)
                    with pytest.raises(
                        type(engine_err.value), match=re.escape(str(engine_err.value))
                    ):
                        client_call(*args)
            again = c.encrypt_many(["f/next"], [b"next"])  # the connection is still in step
            assert u.decrypt_many(["f/next"], again) == [b"next"]


def test_a_refused_token_is_answered_before_the_body(
    keyring: tuple[keysplit.Keyring, dict[str, keysplit.Share], str, Path],
) -> None:
    """A wrong or missing token gets the HTTP path's PermissionDenied, never a transport
    error, even with a body far larger than the socket buffers (which the server never
    reads); the server serves on."""
    with _served(keyring, "tok.sock", "--workers", "1") as (srv, c):
        subjects, plain = _batch(4000)
        for bad in (Client(srv.url, token="not-a-token"), Client(srv.url)):
            framed = _framed(bad)
            with pytest.raises(PermissionDenied):
                bad.encrypt_many(subjects, plain)
            with pytest.raises(PermissionDenied):
                bad.decrypt_many(subjects[:1], [b"x" * 80])
            assert len(framed) == 0  # refused: errors, not answers
            bad.close()
        assert len(c.encrypt_many(subjects, plain)) == 4000


def test_hostile_frame_heads_are_answered_and_closed(
    keyring: tuple[keysplit.Keyring, dict[str, keysplit.Share], str, Path],
) -> None:
    """Garbage after the NUL byte, a wrong version or op, an oversized token or body
    length, a body that is not a batch frame: each a clear error answer (400/401/413),
    the connection closed where the head itself was refused; nothing is read past what
    the head announced, and the server serves on."""
    _, _, token, _ = keyring
    tok = token.encode()
    with _served(keyring, "bad.sock", "--workers", "1") as (srv, c):
        cases: list[tuple[bytes, int]] = [
            (b"\x00garbage-garbage!", 400),
            (wire.FRAME_REQUEST.pack(wire.FRAMES_MAGIC, 2, 1, 0, 0, len(tok), 0), 400),
            (wire.FRAME_REQUEST.pack(wire.FRAMES_MAGIC, 1, 9, 0, 0, len(tok), 0), 400),
            (wire.FRAME_REQUEST.pack(wire.FRAMES_MAGIC, 1, 1, 0x80, 0, len(tok), 0), 400),
            (wire.FRAME_REQUEST.pack(wire.FRAMES_MAGIC, 1, 1, 0, 0, 1 << 30, 10), 400),
            (wire.FRAME_REQUEST.pack(wire.FRAMES_MAGIC, 1, 1, 0, 0, 0, 10), 401),  # no token
            (_head(b"", tok, blen=(1 << 32) - 1), 413),
        ]
        for head, status in cases:
            with _unix(srv.sock) as s:
                s.sendall(head + tok + b"\x00" * 64)
                got, err = _answer(s)
                assert got == status, err
                assert isinstance(err, dict) and err["error"]["message"]
                _closed(s, SLACK)
        with _unix(srv.sock) as s:  # a body that is not a batch frame: 400, served on
            s.sendall(_head(b"junk", tok) + tok + b"junk")
            status, err = _answer(s)
            assert status == 400 and isinstance(err, dict)
            assert err["error"]["type"] == "FormatError"
            body = wire.encode_frame({}, [b"ok"], ["f/1"])
            s.sendall(_head(body, tok) + tok + body)
            status, ok = _answer(s)
            assert status == 200 and isinstance(ok, bytes)
            assert len(wire.decode_frame(ok)[2]) == 1
        with _unix(srv.sock) as s:  # a truncated request, then the peer goes away
            s.sendall(_head(b"", tok, blen=1000) + tok + b"x" * 10)
        assert c.decrypt_many(["f/1"], c.encrypt_many(["f/1"], [b"served on"])) == [b"served on"]


def _hwm_mib(pid: int) -> float:
    """Peak resident memory of a process (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_an_announced_body_costs_nothing_before_the_token_checks_out(
    keyring: tuple[keysplit.Keyring, dict[str, keysplit.Share], str, Path],
) -> None:
    """Heads announcing 64 MiB bodies, their tokens never sent or wrong, do not grow the
    server: the body's buffer exists only once the token checked out (as HTTP reads a
    body only then). Before, each head allocated (and zeroed) its whole body at once:
    four such peers grew the server by 256 MiB."""
    with _served(keyring, "mem.sock", "--workers", "1") as (srv, c):
        assert srv.proc is not None
        before = _hwm_mib(srv.proc.pid)
        peers = [_unix(srv.sock) for _ in range(4)]
        for s in peers[:2]:  # the head only: the token never comes
            s.sendall(_head(b"", b"x" * 40, blen=64 << 20))
        for s in peers[2:]:  # a wrong token: refused, the body never read
            s.sendall(_head(b"", b"x" * 40, blen=64 << 20) + b"x" * 40)
            status, err = _answer(s)
            assert status == 401 and isinstance(err, dict)
        assert c.encrypt_many(["f/1"], [b"x"])  # every head above was taken in by now
        grown = _hwm_mib(srv.proc.pid) - before
        assert grown < 32, f"peak RSS grew {grown:.0f} MiB from unauthenticated heads"
        for s in peers:
            s.close()


def test_slow_and_silent_frame_peers_are_dropped(
    keyring: tuple[keysplit.Keyring, dict[str, keysplit.Share], str, Path],
) -> None:
    """A peer that sends nothing, half a head, or half a body is dropped within the
    idle / io bounds (a body late: 408 first); HTTP still works on the same socket."""
    _, _, token, _ = keyring
    tok = token.encode()
    extra = ("--workers", "1", "--idle-timeout", "1", "--io-timeout", "1")
    with _served(keyring, "slow.sock", *extra) as (srv, c):
        with _unix(srv.sock) as s:  # silent: never says which protocol
            _closed(s, 1 + SLACK)
        with _unix(srv.sock) as s:  # half a head
            s.sendall(wire.FRAMES_MAGIC + b"\x01")
            _closed(s, 1 + SLACK)
        with _unix(srv.sock) as s:  # head and token, then half the body, then nothing
            s.sendall(_head(b"", tok, blen=4000) + tok + b"\x00" * 2000)
            status, err = _answer(s)
            assert status == 408 and isinstance(err, dict)
            _closed(s, 1 + SLACK)
        with _unix(srv.sock) as s:  # an answer never read: cut after the io bound
            body = wire.encode_frame({}, [b"x" * 1000] * 6000, ["f/1"] * 6000)
            s.sendall(_head(body, tok) + tok + body)  # answer: 6.4 MB, the kernel takes 4
            p = select.poll()
            p.register(s, select.POLLRDHUP)
            assert p.poll(1000 * (1 + 3 * SLACK)), "an unread answer held for ever"
            got = 0
            while more := s.recv(1 << 20):
                got += len(more)
            assert 0 < got < len(body) + 66 * 6000
        assert c.service_status()["sealed"] is False  # HTTP on the same socket
        time.sleep(1.5)  # the client's kept-alive frame connection was closed: reconnects
        assert c.encrypt_many(["f/1"], [b"x"])


def test_a_seal_closes_frame_connections_in_every_process(
    keyring: tuple[keysplit.Keyring, dict[str, keysplit.Share], str, Path],
) -> None:
    """With a worker process besides the leader: frame connections held in both are
    closed by a seal, and the next batch over each gets SealedError (never records,
    never a transport error)."""
    kr, shares, token, _ = keyring
    with _served(keyring, "fleet.sock", "--workers", "2") as (srv, c):
        clients = [Client(srv.url, token=token, timeout=60) for _ in range(4)]
        for x in clients:  # round robin: both processes hold some
            assert x.encrypt_many(["f/1"], [b"x"])
        c.seal()
        for x in clients:
            with pytest.raises(SealedError):
                x.encrypt_many(["f/1"], [b"x"])
            x.close()
        for n in "ab":
            c.submit_share(shares[n], c.unseal_offer(), keyring_id=kr.keyring_id)
        assert c.encrypt_many(["f/1"], [b"x"])


class _FakeService(threading.Thread):
    """A fake key service on a Unix socket that reads one frame request and answers it
    with ``answer(conn)``."""

    def __init__(self, path: Path, answer: Callable[[socket.socket], None]) -> None:
        super().__init__(daemon=True)
        self.answer = answer
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(str(path))
        self.lsock.listen(4)
        self.lsock.settimeout(30)
        self.url = f"unix:{path}"

    def run(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.lsock.accept()
            conn.settimeout(30)
            with conn:
                conn.recv(1 << 20)
                self.answer(conn)
        self.lsock.close()


def _lead(status: int, length: int, flags: int = 0) -> bytes:
    return wire.FRAME_ANSWER.pack(wire.FRAMES_MAGIC, status, flags, length)


@pytest.mark.parametrize(
    ("name", "answer", "raises", "says"),
    [
        ("garbage", lambda c: c.sendall(b"\x00KSX" + b"\x00" * 40), FormatError, "answer frame"),
        ("huge", lambda c: c.sendall(_lead(200, (1 << 32) - 1)), ServiceError, "larger than"),
        ("short", lambda c: c.sendall(_lead(200, 5000) + b"KSB1"), ServiceError, "cannot reach"),
        ("not a frame", lambda c: c.sendall(_lead(200, 8) + b"KSB2\0\0\0\0"), FormatError, "magic"),
        ("closed", lambda c: None, ServiceError, "cannot reach"),
        ("stalled", lambda c: time.sleep(4), ServiceError, "deadline"),
        (
            "error",
            lambda c: c.sendall(_lead(403, 2) + b"{}"),
            keysplit.KeysplitError,
            "malformed error",
        ),
    ],
)
def test_the_client_bounds_what_a_frame_server_answers(
    tmp_path: Path,
    name: str,
    answer: Callable[[socket.socket], None],
    raises: type[Exception],
    says: str,
) -> None:
    """Whatever a peer answers a frame request with, the client raises a clear
    KeysplitError within its deadline: never a hang, never an unmapped exception."""
    srv = _FakeService(Path(tempfile.mkdtemp(prefix="ksf", dir="/tmp")) / "f.sock", answer)
    srv.start()
    c = Client(srv.url, token="t", timeout=30, deadline=2)
    with pytest.raises(raises, match=says):
        c.encrypt_many(["f/1"], [b"x"])
    c.close()
    srv.join(40)


def test_an_older_server_is_asked_over_http(tmp_path: Path) -> None:
    """A server that answers the frame with HTTP (an older ``keysplit serve``: 400, it
    ran nothing) makes the client fall back to HTTP for good."""

    def answer(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    srv = _FakeService(Path(tempfile.mkdtemp(prefix="ksf", dir="/tmp")) / "o.sock", answer)
    srv.start()
    c = Client(srv.url, token="t", timeout=30, deadline=5)
    with pytest.raises(ServiceError):  # then HTTP, to nobody (the fake served once)
        c.encrypt_many(["f/1"], [b"x"])
    assert c._frames is False
    c.close()
    srv.join(40)


def test_a_frame_connection_closed_by_a_seal_is_cut_if_its_answer_is_not_taken(
    keyring: tuple[keysplit.Keyring, dict[str, keysplit.Share], str, Path],
) -> None:
    """A seal closes the frame connections of the worker processes; one whose peer is not
    reading a large answer (16 MB: more than the socket buffers take, so the rest waits
    in the server) is cut within the io bound. Before, closing it cancelled that bound
    and waited for the answer to be taken: a peer that never read kept the connection,
    its slot under the cap and the answer's buffer for ever. (Four connections: the
    leader hands some to the worker; the leader's own are cut by the io bound alone.)"""
    tok = keyring[2].encode()
    extra = ("--workers", "2", "--io-timeout", "8")
    body = wire.encode_frame({}, [b"x" * 2000] * 8000, ["f/1"] * 8000)
    with _served(keyring, "sealcut.sock", *extra) as (srv, c):
        peers = [_unix(srv.sock) for _ in range(4)]
        try:
            for s in peers:
                s.sendall(_head(body, tok) + tok + body)
            for s in peers:  # answered; the rest not read
                lead = s.recv(wire.FRAME_ANSWER.size, socket.MSG_WAITALL)
                assert wire.FRAME_ANSWER.unpack(lead)[1] == 200
            c.seal()
            for s in peers:
                p = select.poll()
                p.register(s, select.POLLRDHUP)
                assert p.poll(1000 * (8 + 3 * SLACK)), "a connection a seal closed held for ever"
        finally:
            for s in peers:
                s.close()


@pytest.mark.parametrize("transport", ["frames", "http"])
def test_a_bytearray_resized_while_its_batch_is_sent_leaves_the_connection_in_step(
    keyring: tuple[keysplit.Keyring, dict[str, keysplit.Share], str, Path],
    transport: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch's frame announces each item's length when it is encoded, and the items go
    out uncopied: a ``bytearray`` another thread grows in between (here: right after the
    encoding) sent more bytes than announced, and the rest was read as the connection's
    next request. The frame now holds a view of each ``bytearray`` (its size is fixed
    while the frame lives: the resize is the other thread's ``BufferError``), so the
    record is the plaintext as sent and the connection answers the next batch."""
    kr, shares, _, _ = keyring
    grown: list[bool] = []
    real = wire.encode_parts

    def encode_then_grow(*a: object, **k: object) -> list[bytes]:
        out = real(*a, **k)  # type: ignore[arg-type]
        for item in a[1]:  # type: ignore[attr-defined]
            if isinstance(item, bytearray):
                try:
                    item.extend(b"+grown")
                    grown.append(True)
                except BufferError:  # exported to the frame's view: the size holds
                    grown.append(False)
        return out

    with _served(keyring, f"grow-{transport}.sock") as (_, c):
        if transport == "http":
            c._frames = False
        with kr.unseal([shares["a"], shares["b"]]) as u:
            pt = bytearray(b"plaintext")
            monkeypatch.setattr(wire, "encode_parts", encode_then_grow)
            try:
                (rec,) = c.encrypt_many(["f/grow"], [pt])
            finally:
                monkeypatch.setattr(wire, "encode_parts", real)
            assert grown == [False]
            assert u.decrypt(rec, subject="f/grow") == b"plaintext"
            again = c.encrypt_many(["f/next"], [b"next"])  # the connection is still in step
            assert u.decrypt_many(["f/next"], again) == [b"next"]
