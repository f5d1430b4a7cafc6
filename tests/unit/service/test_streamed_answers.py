"""Streamed ``encrypt`` answers (issue 23): the record engine's piecewise sealer, the
client's frame reader, and the rule that no record sealed after a change of keys leaves.

A large ``encrypt`` batch is answered by :meth:`KeyService.respond` as a ``Streamed``
answer: the keys are resolved first, then the server seals and writes piece after piece
while the client cuts the records of the earlier pieces (``_wire.read_frame``). A seal,
shred, reload or any other request reaching the process in between must stop the answer
(``Interrupted``, the connection dropped): checked here in process and against a real
``keysplit serve`` whose program seals itself after the first piece.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from service_unseal import unseal_service
from test_wire_frames import _keyring, _malformed

import keysplit
from keysplit import record as fmt
from keysplit.errors import FormatError, SealedError
from keysplit.rng import DeterministicRandom
from keysplit.service import Client, ServiceError
from keysplit.service import _wire as wire
from keysplit.service.core import STREAM_PIECE, Interrupted, KeyService, Request, Streamed

# -- the record engine: sealer --------------------------------------------------------------


@pytest.fixture(scope="module")
def keyring() -> Iterator[tuple[keysplit.Keyring, dict[str, keysplit.Share], str, Path]]:
    d = Path(tempfile.mkdtemp(prefix="kss", dir="/tmp"))
    yield (*_keyring(d), d)
    shutil.rmtree(d, ignore_errors=True)


def _cases() -> list[tuple[str, list[str], list[bytes], object]]:
    plain = [bytes([i % 256]) * (i % 97) for i in range(40)]
    return [
        ("distinct", [f"u/{i}" for i in range(40)], plain, None),
        ("repeated", [f"u/{i % 3}" for i in range(40)], plain, {"table": "t"}),
        (
            "per-record contexts, NFD spelling",
            [f"re\u0301/{i % 4}" for i in range(40)],
            plain,
            [{"i": str(i)} if i % 2 else None for i in range(40)],
        ),
        ("one empty", ["u/0"], [b""], None),
    ]


@pytest.mark.parametrize(("name", "subjects", "plain", "ctx"), _cases(), ids=lambda x: str(x)[:12])
def test_sealer_and_opener_give_encrypt_many_s_records_and_decrypt_many_s_plaintexts(
    keyring: tuple[keysplit.Keyring, dict[str, keysplit.Share], str, Path],
    name: str,
    subjects: list[str],
    plain: list[bytes],
    ctx: object,
) -> None:
    """Byte for byte the records ``encrypt_many`` seals with the same nonces, in any
    split into pieces, after the lead given; and they open, also piece by piece."""
    kr, shares, _, _ = keyring
    with kr.unseal([shares["a"], shares["b"]]) as u:
        u.records.rng = DeterministicRandom("nonces")
        want = u.encrypt_many(subjects, plain, ctx)  # type: ignore[arg-type]
        u.records.rng = DeterministicRandom("nonces")
        seal = u.records.sealer(subjects, plain, ctx)  # type: ignore[arg-type]
        n = len(plain)
        for cut in (1, 3, n):
            got = bytearray()
            for a in range(0, n, cut):
                piece = seal(a, min(n, a + cut), b"LEAD" if a == 0 else b"")
                assert len(piece) == (4 if a == 0 else 0) + sum(
                    len(p) + fmt.OVERHEAD for p in plain[a : a + cut]
                )
                got += piece
            assert bytes(got) == b"LEAD" + b"".join(want)
        assert u.decrypt_many(subjects, want, ctx) == plain  # type: ignore[arg-type]
        # the streamed decrypt's opener: decrypt_many's plaintexts, in any split; a batch
        # it does not open in pieces (a subject that is not ASCII) is a ValueError, so the
        # caller opens it whole
        if not all(s.isascii() for s in subjects):
            with pytest.raises(ValueError, match="not ASCII"):
                u.records.opener(subjects, want, ctx)  # type: ignore[arg-type]
            return
        open_ = u.records.opener(subjects, want, ctx)  # type: ignore[arg-type]
        for per in (1, 7, n):
            out = b"".join(
                bytes(open_(a, min(n, a + per), b"LEAD" if a == 0 else b""))
                for a in range(0, n, per)
            )
            assert out == b"LEAD" + b"".join(plain)


def test_sealer_fails_before_sealing(
    keyring: tuple[keysplit.Keyring, dict[str, keysplit.Share], str, Path],
) -> None:
    kr, shares, _, _ = keyring
    with kr.unseal([shares["a"], shares["b"]]) as u:
        with pytest.raises(ValueError):
            u.records.sealer(["u/1", ""], [b"a", b"b"])
        with pytest.raises(ValueError, match="same length"):
            u.records.sealer(["u/1"], [b"a", b"b"])
        with pytest.raises((TypeError, ValueError)):
            u.records.sealer(["u/1"], [b"a"], {"k": 1})  # type: ignore[dict-item]


def test_opener_checks_every_header_first_and_fails_on_a_tag(
    keyring: tuple[keysplit.Keyring, dict[str, keysplit.Share], str, Path],
) -> None:
    """What can be checked before any plaintext exists is (a record naming another key,
    one that is not bytes, a subject without a key); a bad tag fails its piece with
    IntegrityError, and the pieces before it were fine."""
    kr, shares, _, _ = keyring
    with kr.unseal([shares["a"], shares["b"]]) as u:
        subjects = [f"o/{i}" for i in range(6)]
        recs = u.encrypt_many(subjects, [b"x" * 50] * 6)
        swapped = [recs[1], recs[0], *recs[2:]]
        for bad in (swapped, [bytearray(recs[0]), *recs[1:]], [recs[0][:60], *recs[1:]]):
            with pytest.raises(ValueError, match="does not name its key"):
                u.records.opener(subjects, bad)  # type: ignore[arg-type]
        with pytest.raises(keysplit.NoDataKeyError):
            u.records.opener([*subjects[:5], "o/never"], recs)
        tampered = [*recs[:5], recs[5][:-1] + bytes([recs[5][-1] ^ 1])]
        open_ = u.records.opener(subjects, tampered)
        assert bytes(open_(0, 5, b"")) == b"x" * 250
        with pytest.raises(keysplit.IntegrityError):
            open_(5, 6, b"")


# -- the client's frame reader ----------------------------------------------------------------

_subject = st.text(st.characters(codec="utf-8"), max_size=8)
_items = st.lists(st.one_of(st.none(), st.binary(max_size=40)), max_size=20)


class _Reader:
    """A body read as a socket is: 1 to ``k`` bytes per call (at most ``chunk``, what
    "has arrived"), ``b""`` at the end; counts the bytes asked for."""

    def __init__(self, body: bytes, chunk: int = 1 << 30) -> None:
        self.f = io.BytesIO(body)
        self.chunk = chunk
        self.asked = 0

    def read(self, k: int) -> bytes:
        self.asked += k
        return self.f.read(min(k, self.chunk))


@settings(max_examples=60)
@given(_items, st.data())
def test_read_frame_decodes_as_decode_frame(items: list[bytes | None], data: st.DataObject) -> None:
    subjects = data.draw(st.lists(_subject, min_size=len(items), max_size=len(items)))
    frame = wire.encode_frame({"context": {"a": "b"}}, items, subjects)
    piece = data.draw(st.sampled_from([1, 7, 64, wire.READ_PIECE]))
    r = _Reader(frame + b"next answer", data.draw(st.sampled_from([1, 3, 50, 1 << 30])))
    got = wire.read_frame(r.read, len(frame), piece=piece)
    assert got == wire.decode_frame(frame) == ({"context": {"a": "b"}}, subjects, items)
    assert all(type(x) is bytes for x in got[2] if x is not None)
    assert r.f.tell() == len(frame)  # every byte, nothing past the end


@pytest.mark.parametrize(("name", "body", "says"), _malformed(), ids=lambda x: str(x)[:30])
def test_read_frame_refuses_what_decode_frame_refuses(name: str, body: bytes, says: str) -> None:
    with pytest.raises(FormatError, match=says):
        wire.read_frame(_Reader(body).read, len(body), "answer")


def test_read_frame_never_reads_past_its_size() -> None:
    """A frame whose table promises more than the Content-Length is refused before any
    item is read; a body that ends before its Content-Length is a ShortRead."""
    frame = wire.encode_frame({}, [b"x" * 100, b"y" * 50])
    r = _Reader(frame + b"more")
    with pytest.raises(FormatError, match="length"):
        wire.read_frame(r.read, len(frame) - 1)
    assert r.asked == len(frame) - 150  # the head only
    for cut in (3, 20, len(frame) - 1):
        with pytest.raises(wire.ShortRead):
            wire.read_frame(_Reader(frame[:cut]).read, len(frame))


def test_encode_head_is_encode_frame_s_head() -> None:
    items = [b"a" * 5, b"", b"c" * 300]
    frame = wire.encode_frame({}, items)
    head = wire.encode_head({}, [5, 0, 300])
    assert frame == head + b"".join(items)


# -- the service in process: Streamed, Interrupted -------------------------------------------


@pytest.fixture
def service(
    keyring: tuple[keysplit.Keyring, dict[str, keysplit.Share], str, Path],
) -> Iterator[tuple[KeyService, str, keysplit.UnsealedKeyring]]:
    kr, shares, token, _ = keyring
    svc = KeyService(kr.path, log=lambda m: None)
    unseal_service(svc, kr.keyring_id, [shares["a"], shares["b"]])
    local = kr.unseal([shares["b"], shares["c"]])
    yield svc, token, local
    local.close()
    svc.close()


def _batch(n: int) -> tuple[list[str], list[bytes]]:
    return [f"s/{i % 300}" for i in range(n)], [bytes([i % 256]) * 1000 for i in range(n)]


def _request(token: str, subjects: list[str], plain: list[bytes], path: str) -> Request:
    body = wire.encode_frame({"context": {"t": "x"}}, plain, subjects)
    return Request("POST", path, {"authorization": f"Bearer {token}"}, body)


def test_a_large_encrypt_is_streamed_and_opens(
    service: tuple[KeyService, str, keysplit.UnsealedKeyring],
) -> None:
    svc, token, local = service
    subjects, plain = _batch(1000)
    s = svc.respond(_request(token, subjects, plain, "/v1/encrypt"))
    assert isinstance(s, Streamed)
    pieces = [bytes(p) for p in s.pieces]
    assert len(pieces) > 2
    body = b"".join(pieces)
    assert len(body) == s.length
    head, _, recs = wire.decode_frame(body, present=True)
    assert head == {}
    assert local.decrypt_many(subjects, recs, {"t": "x"}) == plain  # type: ignore[arg-type]
    # what handle() answers for the same request has the same shape
    r = svc.handle(_request(token, subjects, plain, "/v1/encrypt"))
    assert len(r.body) == s.length and r.body[: len(pieces[0]) - 100] != pieces[0][:-100]


def test_small_batches_failures_and_decrypt_are_whole_answers(
    service: tuple[KeyService, str, keysplit.UnsealedKeyring],
) -> None:
    svc, token, _ = service
    subjects, plain = _batch(10)
    assert sum(map(len, plain)) < STREAM_PIECE
    r = svc.respond(_request(token, subjects, plain, "/v1/encrypt"))
    assert not isinstance(r, Streamed) and r.status == 200
    subjects, plain = _batch(1000)
    subjects[500] = ""  # a bad subject: reported at its index, the others sealed
    r = svc.respond(_request(token, subjects, plain, "/v1/encrypt"))
    assert not isinstance(r, Streamed) and r.status == 200
    head, _, out = wire.decode_frame(r.body)
    assert list(head["errors"]) == ["500"] and out[500] is None and out[499] is not None
    subjects, plain = _batch(1000)
    recs = wire.decode_frame(svc.handle(_request(token, subjects, plain, "/v1/encrypt")).body)[2]
    r = svc.respond(_request(token, subjects, recs, "/v1/decrypt"))  # type: ignore[arg-type]
    assert not isinstance(r, Streamed) and r.status == 200
    r = svc.respond(Request("POST", "/v1/encrypt", {}, wire.encode_frame({}, plain, subjects)))
    assert not isinstance(r, Streamed) and r.status == 401


def _stream_ok(r: Request) -> Request:
    return Request(r.method, r.path, {**r.headers, wire.STREAM_OK.lower(): "1"}, r.body)


def test_a_large_decrypt_is_streamed_only_for_a_client_that_asks(
    service: tuple[KeyService, str, keysplit.UnsealedKeyring],
) -> None:
    """With the request's ``Keysplit-Stream-Ok`` a large decrypt is Streamed and gives the
    plaintexts; a record failing in the first piece gives the whole answer (its error at
    its index); one failing in a later piece stops the answer (IntegrityError, which the
    server turns into a cut connection, and the client into a second, whole request)."""
    svc, token, local = service
    subjects, plain = _batch(1000)
    recs = local.encrypt_many(subjects, plain, {"t": "x"})
    s = svc.respond(_stream_ok(_request(token, subjects, recs, "/v1/decrypt")))
    assert isinstance(s, Streamed)
    pieces = [bytes(p) for p in s.pieces]
    assert len(pieces) > 2 and sum(map(len, pieces)) == s.length
    assert wire.decode_frame(b"".join(pieces), present=True)[2] == plain
    for at, streamed in ((3, False), (999, True)):
        bad = list(recs)
        bad[at] = bad[at][:-1] + bytes([bad[at][-1] ^ 1])
        s = svc.respond(_stream_ok(_request(token, subjects, bad, "/v1/decrypt")))
        if not streamed:
            assert not isinstance(s, Streamed) and s.status == 200
            head, _, out = wire.decode_frame(s.body)
            assert list(head["errors"]) == [str(at)] and out[at] is None
            continue
        assert isinstance(s, Streamed)
        got = [next(s.pieces), next(s.pieces)]
        with pytest.raises(keysplit.IntegrityError):
            for p in s.pieces:
                got.append(p)
        assert sum(map(len, got)) < s.length


def _shred(token: str, subject: str) -> Request:
    body = json.dumps({"subjects": [subject]}).encode()
    return Request("POST", "/v1/shred", {"authorization": f"Bearer {token}"}, body)


@pytest.mark.parametrize("after", [0, 1, 3])
@pytest.mark.parametrize("change", ["shred", "seal", "status request", "reload"])
def test_a_change_mid_answer_stops_it(
    service: tuple[KeyService, str, keysplit.UnsealedKeyring],
    keyring: tuple[keysplit.Keyring, dict[str, keysplit.Share], str, Path],
    change: str,
    after: int,
) -> None:
    """A shred, a seal, a reload of the keyring (another process's shred) or any other
    request handled between two pieces: the next piece is never sealed (Interrupted), so
    no record sealed under a key shredded meanwhile leaves."""
    svc, token, _ = service
    subjects, plain = _batch(1000)
    s = svc.respond(_request(token, subjects, plain, "/v1/encrypt"))
    assert isinstance(s, Streamed)
    got = [next(s.pieces) for _ in range(after)]
    if change == "shred":
        assert svc.handle(_shred(token, subjects[-1])).status == 200
    elif change == "seal":
        svc.seal("test")
    elif change == "status request":
        svc.handle(Request("GET", "/v1/status", {}))
    else:
        from keysplit.service.fleet import reopen

        kr = svc.unsealed_keyring
        assert kr is not None
        svc.adopt(reopen(svc.directory, kr.master_key))
    with pytest.raises(Interrupted):
        next(s.pieces)
    with pytest.raises(StopIteration):  # and that was the end of it
        next(s.pieces)
    assert sum(map(len, got)) < s.length


# -- a real keysplit serve ---------------------------------------------------------------------

_SEAL_MID_ANSWER = """
import keysplit.service.core as core
from keysplit_cli.app import main

made = core.KeyService._streamed

def _streamed(self, *a, **k):
    s = made(self, *a, **k)
    def pieces(it=s.pieces):
        yield next(it)
        self.seal("sealed mid-answer by the test")  # a seal reaching this process now
        yield from it
    return core.Streamed(s.length, pieces(), s.content_type)

core.KeyService._streamed = _streamed
sys.argv[0] = "keysplit"
main()
"""


_PLAIN = "from keysplit_cli.app import main\nsys.argv[0] = 'keysplit'\nmain()"


@contextlib.contextmanager
def _running(
    code: str, keyring: tuple[keysplit.Keyring, dict[str, keysplit.Share], str, Path], name: str
) -> Iterator[Client]:
    """``keysplit serve --workers 1`` run by the program ``code``, unsealed by custodians
    a and b, and a client of it; stopped on exit (bounded in time)."""
    kr, shares, token, d = keyring
    sock = d / name
    argv = [sys.executable, "-c", "import sys\n" + code, "serve", str(kr.path)]
    proc = subprocess.Popen(
        [*argv, "--workers", "1", "--socket", str(sock)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.05)
        c = Client(f"unix:{sock}", token=token, timeout=60)
        for n in "ab":
            c.submit_share(shares[n], c.unseal_offer(), keyring_id=kr.keyring_id)
        yield c
        c.close()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def test_a_failure_mid_answer_other_than_a_record_is_logged(
    keyring: tuple[keysplit.Keyring, dict[str, keysplit.Share], str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A piece after the first failing for a reason other than a record (a bug, memory):
    the answer stops (the server drops the connection) and the service log says so, with
    the error's class and never its text; a record that does not open is not logged
    (the client asks again whole and gets its error at its index)."""
    kr, shares, token, _ = keyring
    logged: list[str] = []
    svc = KeyService(kr.path, log=logged.append)
    unseal_service(svc, kr.keyring_id, [shares["a"], shares["b"]])
    try:
        records = type(svc._kr.records)  # type: ignore[union-attr]
        sealer = records.sealer

        def failing(self: Any, *a: Any) -> Any:
            seal = sealer(self, *a)

            def broken(lo: int, hi: int, lead: bytes = b"") -> bytearray:
                if lo > 0:
                    raise RuntimeError("secret-looking text")
                return seal(lo, hi, lead)

            return broken

        monkeypatch.setattr(records, "sealer", failing)
        subjects, plain = _batch(1000)
        s = svc.respond(_request(token, subjects, plain, "/v1/encrypt"))
        assert isinstance(s, Streamed)
        logged.clear()
        first = next(s.pieces)
        assert first and logged == []
        with pytest.raises(RuntimeError):
            next(s.pieces)
        assert logged == ["internal error in a streamed encrypt answer: RuntimeError"]
        monkeypatch.undo()
        logged.clear()
        answer = svc.handle(_request(token, subjects, plain, "/v1/encrypt"))
        recs = wire.decode_frame(answer.body)[2]
        bad = list(recs)
        bad[-1] = bad[-1][:-1] + bytes([bad[-1][-1] ^ 1])  # type: ignore[index]
        s = svc.respond(_stream_ok(_request(token, subjects, bad, "/v1/decrypt")))  # type: ignore[arg-type]
        assert isinstance(s, Streamed)
        with pytest.raises(keysplit.IntegrityError):
            list(s.pieces)
        assert logged == []
    finally:
        svc.close()


def test_a_seal_mid_answer_drops_the_connection(
    keyring: tuple[keysplit.Keyring, dict[str, keysplit.Share], str, Path],
) -> None:
    """Against a real server whose program seals the service after the first piece of
    a streamed answer: the client gets an error, never the records, and the service is
    sealed; a small batch (not streamed) before it went through."""
    with _running(_SEAL_MID_ANSWER, keyring, "mid.sock") as c:
        assert len(c.encrypt_many(["s/1"], [b"small"])) == 1
        subjects, plain = _batch(1000)
        with pytest.raises(ServiceError, match="cannot reach"):
            c.encrypt_many(subjects, plain)
        assert c.service_status()["sealed"] is True
        with pytest.raises(SealedError):
            c.encrypt_many(subjects, plain)


def test_a_cut_streamed_decrypt_is_asked_again_whole(
    keyring: tuple[keysplit.Keyring, dict[str, keysplit.Share], str, Path],
) -> None:
    """Against a real server: a record failing after the first piece of a streamed
    decrypt cuts the answer; the client asks again without streaming and raises the
    whole answer's precise error (IntegrityError at its index, ShreddedError), never a
    transport error or a partial list; the connection serves on."""
    with _running(_PLAIN, keyring, "cut.sock") as c:
        asked: list[bool] = []
        frame_request = c._frame_request

        def counted(*a: Any, stream_ok: bool = False, **kw: Any) -> Any:
            asked.append(stream_ok)
            return frame_request(*a, stream_ok=stream_ok, **kw)

        c._frame_request = counted  # type: ignore[method-assign]
        subjects, plain = _batch(3000)
        recs = c.encrypt_many(subjects, plain)
        bad = list(recs)
        bad[-1] = bad[-1][:-1] + bytes([bad[-1][-1] ^ 1])
        asked.clear()
        with pytest.raises(keysplit.IntegrityError):
            c.decrypt_many(subjects, bad)
        assert asked == [True, False]  # streamed, cut, then whole (where the error is)
        asked.clear()
        assert c.decrypt_many(subjects, recs) == plain
        assert asked == [True]
        c.shred(subjects[-1])
        with pytest.raises(keysplit.ShreddedError, match="item 299"):
            c.decrypt_many(subjects, recs)  # its key is resolved first: a whole answer
        assert asked == [True, True]


def test_streamed_answers_over_a_real_socket(
    keyring: tuple[keysplit.Keyring, dict[str, keysplit.Share], str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Streamed answers back to back on one kept-alive connection, with a whole answer
    (decrypt) in between, and a client reading over a socket with a tiny receive buffer.
    Only the streamed ones are read as they arrive."""
    streamed = []
    read_frame = wire.read_frame

    def counted(*a: object, **k: object) -> object:
        streamed.append(1)
        return read_frame(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(wire, "read_frame", counted)
    with _running(_PLAIN, keyring, "ok.sock") as c:
        subjects, plain = _batch(3000)
        for i in range(3):
            recs = c.encrypt_many(subjects, plain, {"t": "x"})
            assert len(streamed) == 2 * i + 1
            assert c.decrypt_many(subjects, recs, {"t": "x"}) == plain
            assert len(streamed) == 2 * i + 2
        assert c.datakeys(subjects[:2]) is not None  # a whole answer in between
        assert len(streamed) == 6
        conn = c._conn()
        assert conn.sock is not None
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert c.decrypt_many(subjects, c.encrypt_many(subjects, plain), None) == plain
