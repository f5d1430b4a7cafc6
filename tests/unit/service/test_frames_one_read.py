"""A small frame request is taken in one read, a small answer in two (issue 23's
single-record tail, benchmarks/README.md): the server's protocol driven as asyncio drives
a ``BufferedProtocol`` (``get_buffer``, one ``recv_into``, ``buffer_updated``), the
client against a real ``keysplit serve`` with its reads counted. Pipelined requests that
came in one read keep the rule of an unread answer: nothing more is served until the
peer takes it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_frames_transport import _served, keyring  # noqa: F401 (the fixture)
from test_service_unit import ring, service  # noqa: F401 (the fixtures)

from keysplit.service import _frames as frames
from keysplit.service import _wire as wire
from keysplit.service import client as client_mod
from keysplit.service.core import Request, Response


class _Service:
    """Answers each request with the subjects it named (precheck: every token passes)."""

    def precheck(self, req: Request) -> None:
        return None

    def respond(self, req: Request) -> Response:
        assert req.received is not None
        _, subjects, _ = wire.decode_frame(req.received)
        return Response(200, ",".join(subjects).encode())


class _Transport(asyncio.Transport):
    """Collects what is written; ``pause_at``: the write that fills the peer's buffer
    (the protocol is told to pause writing), as a peer that does not read would."""

    def __init__(self, protocol: frames.FrameProtocol, pause_at: int = 0) -> None:
        super().__init__()
        self.protocol, self.pause_at = protocol, pause_at
        self.writes: list[bytes] = []
        self.reading = True
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))
        if len(self.writes) == self.pause_at:
            self.protocol.pause_writing()

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def _request(subject: str, token: bytes = b"t0ken") -> bytes:
    body = wire.encode_frame({"context": None}, [b"x" * 1024], [subject])
    head = frames.REQUEST.pack(frames.MAGIC, frames.VERSION, 1, 0, 0, len(token), len(body))
    return head + token + body


def _receive(p: frames.FrameProtocol, t: _Transport, data: bytes) -> tuple[int, bytes]:
    """Hand ``data`` to ``p`` as asyncio's selector transport does, while reading is not
    paused and the connection open: each read fills at most the buffer ``get_buffer``
    offers. Returns the reads and what was left unread (in the socket)."""
    reads = 0
    while data and t.reading and not t.closed:
        buf = p.get_buffer(-1)
        k = min(len(buf), len(data))
        buf[:k] = data[:k]
        data = data[k:]
        reads += 1
        p.buffer_updated(k)
    return reads, data


_BOUNDS = {"idle": 5, "io": 5, "token_max": 64, "body_max": 1 << 20}
"""The protocol's limits: none of them is reached here."""


def _protocol(pause_at: int = 0) -> tuple[frames.FrameProtocol, _Transport]:
    p = frames.FrameProtocol(_Service(), **_BOUNDS)  # type: ignore[arg-type]
    t = _Transport(p, pause_at)
    p.connection_made(t)
    return p, t


def test_a_single_record_request_is_taken_in_one_read() -> None:
    """Before, the head, the token and the body were each one read, one turn of the event
    loop (three per single-record call; the server's CPU per call fell 6 % without them)."""

    async def go() -> tuple[int, list[bytes]]:
        p, t = _protocol()
        reads, _ = _receive(p, t, _request("s/1"))
        p.close()
        return reads, t.writes

    reads, writes = asyncio.run(go())
    assert reads == 1
    assert writes == [frames.answer_head(200, 3) + b"s/1"]


def test_requests_read_together_wait_for_an_unread_answer() -> None:
    """Two requests in one read: the second is served only once the peer took the first's
    answer, as it would have stayed unread in the socket before."""

    async def go() -> None:
        p, t = _protocol(pause_at=1)
        _, rest = _receive(p, t, _request("s/1") + _request("s/2"))
        assert t.writes == [frames.answer_head(200, 3) + b"s/1"]
        assert not t.reading  # paused until the peer reads
        p.resume_writing()
        assert t.reading
        _receive(p, t, rest)  # (nothing, if the second request was read already)
        assert t.writes[1:] == [frames.answer_head(200, 3) + b"s/2"]
        p.close()

    asyncio.run(go())


def test_a_request_split_anywhere_is_answered_once() -> None:
    """Whatever the reads cut, in the stage or past it, each request is answered once."""
    data = _request("s/1") + _request("s/2") + _request("s/3")

    async def go(cut: int) -> list[bytes]:
        p, t = _protocol()
        _receive(p, t, data[:cut])
        _receive(p, t, data[cut:])
        p.close()
        return t.writes

    for cut in range(0, len(data) + 1, 97):
        assert asyncio.run(go(cut)) == [
            frames.answer_head(200, 3) + s for s in (b"s/1", b"s/2", b"s/3")
        ]


def test_a_refused_head_drops_what_came_with_it() -> None:
    """A bad head read together with more bytes: answered 400 and closed; what followed it
    in the same read is never served."""

    async def go() -> list[bytes]:
        p, t = _protocol()
        _receive(p, t, b"\0KSW\x09" + bytes(11) + _request("s/2"))
        return t.writes

    (only,) = asyncio.run(go())
    assert only.startswith(frames.answer_head(400, len(only) - frames.ANSWER.size))


@pytest.mark.slow
def test_a_small_answer_is_read_in_two_reads(
    keyring: tuple[Any, ...],  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client read a small answer part by part (the lead, then five reads of the
    frame, each with its own timeout set): now the lead and the body, one read each."""
    reads: list[int] = []
    real = client_mod._FrameConn.read

    def read(self: Any, k: int) -> bytes:
        reads.append(k)
        return real(self, k)

    with _served(keyring, "two.sock", "--workers", "1") as (_, c):
        c.encrypt_many(["f/1"], [b"x" * 1024])  # connected, warm
        monkeypatch.setattr(client_mod._FrameConn, "read", read)
        record = c.encrypt_many(["f/1"], [b"x" * 1024])[0]
        assert len(reads) == 2
        reads.clear()
        assert c.decrypt_many(["f/1"], [record]) == [b"x" * 1024]
        assert len(reads) == 2


def test_a_frame_request_checks_its_token_once_when_it_arrives(
    service: tuple[Any, dict[str, str]],  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A frame request checked its token twice: before its body was read (``precheck``)
    and again with its subjects, each time two ``stat`` calls of the token files and a
    SHA-256 (svc9, found). Now once, when the token arrives: the operation's own check
    (route, subjects) takes the policy that check gave. A token revoked after that point
    ends the requests that arrive after it (at once: the next one is refused), not the
    one whose token had already checked out (docs/API.md, "Tokens")."""
    from keysplit.service import core
    from keysplit.service.tokens import TokenList

    svc, tokens = service
    token = tokens["enc"].encode()
    svc.handle(  # the subject's key made, the token list read: the steady state
        Request("POST", "/v1/encrypt", {"authorization": f"Bearer {tokens['enc']}"},
                wire.encode_frame({"context": None}, [b"x"], ["c/1"]))
    )  # fmt: skip
    signatures: list[int] = []
    real = core.file_signature

    def counted(*args: Any) -> Any:
        signatures.append(1)
        return real(*args)

    monkeypatch.setattr(core, "file_signature", counted)

    def status(answer: bytes) -> int:
        return int(frames.ANSWER.unpack_from(answer)[1])

    async def go() -> list[int]:
        p = frames.FrameProtocol(svc, **_BOUNDS)
        t = _Transport(p)
        p.connection_made(t)
        first = _request("c/1", token)
        arrived = frames.REQUEST.size + len(token)
        _receive(p, t, first[:arrived])  # the head and the token: checked here
        assert len(signatures) == 1 and not t.writes
        TokenList.read(svc.directory, svc.keyring.keyring_id).revoke("enc")
        _receive(p, t, first[arrived:])  # before: refused (checked again, and revoked)
        assert len(signatures) == 1  # before: 2
        _receive(p, t, _request("c/2", token))  # the next request: refused
        p.close()
        return [status(w) for w in t.writes]

    assert asyncio.run(go()) == [200, 401]


def test_an_http_request_checks_its_token_once_from_its_headers(
    service: tuple[Any, dict[str, str]],  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The HTTP twin of the test above: the token is checked from the headers, before the
    body is read, and not again with the subjects (before: two checks per request)."""
    from aiohttp.test_utils import TestClient, TestServer

    from keysplit.service import core
    from keysplit.service.server import make_app

    svc, tokens = service
    headers = {"Authorization": f"Bearer {tokens['enc']}", "Content-Type": wire.BATCH_TYPE}
    body = wire.encode_frame({"context": None}, [b"x"], ["c/1"])
    signatures: list[int] = []
    real = core.file_signature

    def counted(*args: Any) -> Any:
        signatures.append(1)
        return real(*args)

    async def go() -> list[int]:
        statuses = []
        async with TestClient(TestServer(make_app(svc))) as client:
            for count in (False, True):
                if count:
                    monkeypatch.setattr(core, "file_signature", counted)
                r = await client.post("/v1/encrypt", data=body, headers=headers)
                await r.read()
                statuses.append(r.status)
        return statuses

    assert asyncio.run(go()) == [200, 200]
    assert len(signatures) == 1  # before: 2
