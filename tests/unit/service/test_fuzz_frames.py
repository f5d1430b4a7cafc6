"""Hypothesis red team of the Unix socket's frame transport head parser, in process.

test_frames_transport.py sends hand-picked hostile heads over real sockets; here every
head field (version, op, flags, reserved byte, token and body lengths) is drawn from
its bounds and off-by-ones, a second request is pipelined behind the first, the bytes
are cut anywhere and arrive in pieces of any size. Whatever arrives, the connection
answers only whole answer frames, none of them a 5xx, and answers nothing for a head
it has not received whole.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_unseal import unseal_service

import keysplit
from keysplit.service import _frames as frames
from keysplit.service import _wire as wire
from keysplit.service.core import KeyService
from keysplit.service.tokens import OPERATIONS, TokenList, mac_key

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_BODY = wire.encode_frame({}, [b"hello", b""], ["u/1", "u/2"])


class _Transport(asyncio.Transport):
    """What the protocol writes, and whether it closed (no socket)."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False

    def write(self, data: Any) -> None:
        self.out += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[KeyService, bytes]:
    path: Path = tmp_path_factory.mktemp("frames") / "kr"
    kr, shares = keysplit.Keyring.create(path, 2, ["a", "b", "c"])
    with kr.unseal([shares["a"], shares["b"]]) as u:
        key = mac_key(u.audit_key(), kr.keyring_id)
    tl = TokenList.read(kr.path, kr.keyring_id)
    token = tl.create(key, name="all", allow=list(OPERATIONS), subject_prefix="")[0]
    svc = KeyService(kr.path, log=lambda m: None)
    unseal_service(svc, kr.keyring_id, [shares["a"], shares["b"]])
    return svc, token.encode()


def _request(data: st.DataObject, token: bytes) -> bytes:
    def field(values: list[int | None]) -> int | None:
        return data.draw(st.sampled_from(values)) if data.draw(st.booleans()) else None

    ver, op, flags, zero = field([0, 2, 255]), field([0, 3, 255]), field([2, 255]), field([1])
    tlen = field([0, 1, len(token) - 1, len(token) + 1, 2**31, 2**32 - 1])
    blen = field([0, 1, len(_BODY) - 1, len(_BODY) + 1, 2**31, 2**32 - 1])
    head = wire.FRAME_REQUEST.pack(
        wire.FRAMES_MAGIC,
        1 if ver is None else ver,
        data.draw(st.sampled_from([1, 2])) if op is None else op,
        data.draw(st.sampled_from([0, 1])) if flags is None else flags,
        0 if zero is None else zero,
        len(token) if tlen is None else tlen,
        len(_BODY) if blen is None else blen,
    )
    return head + token + _BODY


@FUZZ
@given(st.data())
def test_any_request_bytes_get_whole_answers_and_no_5xx(
    served: tuple[KeyService, bytes], data: st.DataObject
) -> None:
    svc, token = served
    raw = _request(data, token)
    if data.draw(st.booleans()):
        raw += _request(data, token)  # pipelined
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]

    async def exchange() -> _Transport:
        t = _Transport()
        p = frames.FrameProtocol(svc, idle=30, io=30, token_max=4096, body_max=1 << 20)
        p.connection_made(t)
        rest = raw
        while rest and not t.closed:
            k = data.draw(st.integers(1, len(rest)))
            p.feed(rest[:k])
            rest = rest[k:]
        p.connection_lost(None)
        return t

    out = bytes(asyncio.run(exchange()).out)
    if len(raw) < wire.FRAME_REQUEST.size:
        assert out == b""
    while out:
        magic, status, _, length = wire.FRAME_ANSWER.unpack_from(out)
        assert magic == wire.FRAMES_MAGIC and status < 500
        assert len(out) >= wire.FRAME_ANSWER.size + length
        out = out[wire.FRAME_ANSWER.size + length :]
