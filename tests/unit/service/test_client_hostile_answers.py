"""Red team (issue 23 follow-up): ``keysplit.Client`` reading answers no keysplit service
sends. Whatever answers on the socket (a proxy, another program, a compromised host), the
Client raises a :class:`KeysplitError` naming the problem; never a bare ``TypeError``,
``ValueError``, ``IndexError`` or ``AttributeError``, and never ``None`` where a record,
a plaintext or a key was asked for. (test_wire_frames.py covers garbage, truncated and
oversized frames and a wrong item count; these are the shapes it does not try.)"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from keysplit import Client
from keysplit.errors import KeysplitError
from keysplit.service import _wire as wire


class _Answer(threading.Thread):
    """A fake key service on a Unix socket that answers one request with ``reply``."""

    def __init__(self, path: Path, reply: bytes) -> None:
        super().__init__(daemon=True)
        self.reply = reply
        self.lsock = socket.create_server(str(path), family=socket.AF_UNIX)
        self.lsock.settimeout(30)

    def run(self) -> None:
        try:
            conn, _ = self.lsock.accept()
        except OSError:
            return
        conn.settimeout(30)
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            body = head.split(b"\r\n\r\n", 1)[1]
            while len(body) < length:
                body += conn.recv(65536)
            with contextlib.suppress(OSError):
                conn.sendall(self.reply)
        self.lsock.close()


def _http(body: bytes, content_type: str = wire.BATCH_TYPE, status: str = "200 OK") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
    return head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


def _json(doc: Any) -> bytes:
    return _http(wire.dumps(doc), wire.JSON_TYPE)


@pytest.fixture
def sockdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ksh", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


Call = Callable[[Client], Any]
ENCRYPT: Call = lambda c: c.encrypt_many(["u/1", "u/2"], [b"a", b"b"])  # noqa: E731
DECRYPT: Call = lambda c: c.decrypt_many(["u/1"], [b"r" * 40])  # noqa: E731
DATAKEYS: Call = lambda c: c.datakeys(["u/1"])  # noqa: E731

CASES: list[tuple[str, bytes, Call]] = [
    # per-item errors that are not an object of index -> error
    ("errors-list", _http(wire.encode_frame({"errors": [1, 2]}, [b"x", b"y"])), ENCRYPT),
    ("errors-string", _http(wire.encode_frame({"errors": "boom"}, [b"x", b"y"])), ENCRYPT),
    ("errors-number", _http(wire.encode_frame({"errors": 7}, [b"x"])), DECRYPT),
    ("errors-bad-index", _http(wire.encode_frame({"errors": {"x": {}}}, [b"x", b"y"])), ENCRYPT),
    ("errors-list-keys", _http(wire.encode_frame({"errors": [{"type": "X"}]}, [None])), DATAKEYS),
    # an answer whose items are missing (length -1) where records / plaintexts were asked
    ("missing-records", _http(wire.encode_frame({}, [None, None])), ENCRYPT),
    ("missing-plaintext", _http(wire.encode_frame({}, [None])), DECRYPT),
    # JSON endpoints answering JSON of another shape
    ("rotate-list", _json([1, 2]), lambda c: c.rotate()),
    ("rotate-no-version", _json({}), lambda c: c.rotate()),
    ("rotate-text-version", _json({"kek_version": "two"}), lambda c: c.rotate()),
    ("seal-list", _json([]), lambda c: c.seal()),
    ("shred-items-not-objects", _json({"items": ["yes"]}), lambda c: c.shred("u/1")),
    ("shred-fewer-items", _json({"items": [{"ok": True}]}), lambda c: c.shred_many(["a", "b"])),
    ("status-list", _json([]), lambda c: c.service_status()),
    ("keyring-list", _json([]), lambda c: c.status()),
    ("offer-list", _json([]), lambda c: c.unseal_offer()),
]


@pytest.mark.parametrize(("reply", "call"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_client_answers_hostile_shapes_with_keysplit_errors(
    sockdir: Path, reply: bytes, call: Call
) -> None:
    srv = _Answer(sockdir / "h.sock", reply)
    srv.start()
    c = Client(f"unix:{sockdir / 'h.sock'}", token="kst1_" + "x" * 43, timeout=30)
    try:
        with pytest.raises(KeysplitError):
            got = call(c)
            raise AssertionError(f"accepted: {got!r}")  # pragma: no cover - the bug
    finally:
        c.close()
        srv.lsock.close()
        srv.join(40)
