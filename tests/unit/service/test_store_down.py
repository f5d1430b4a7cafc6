"""The key service while its PostgreSQL store is down (red team, stop 34).

A batch whose keys need the store failed as a whole and was then tried item by item, so
that each failure is reported at its index: with the store unreachable every item waited
the store's bound again (a batch of 1,000 new subjects: 1,000 times ``connect_timeout``)
and the answer was a 200 listing the same outage at every index. The outage is not an
item's: the request now fails at once with 503 (``StoreUnreachableError``), as every other
endpoint does (they said 400, which tells a client or a proxy not to retry).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_fixture import own_postgres
from service_unseal import unseal_service
from test_wire_frames import _keyring

from keysplit.service import _wire as wire
from keysplit.service.core import KeyService, Request


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[KeyService, str, object]]:
    with own_postgres() as server:  # its own server: the session's stays up
        url = f"{server.url}&connect_timeout=1&schema=svcdown"
        kr, shares, token = _keyring(tmp_path, url)
        svc = KeyService(kr.path, log=lambda m: None)
        unseal_service(svc, kr.keyring_id, [shares["a"], shares["b"]])
        try:
            yield svc, token, server
        finally:
            svc.close()


def _post(path: str, token: str, body: bytes) -> Request:
    return Request("POST", path, {"authorization": f"Bearer {token}"}, body)


def test_a_batch_needing_the_store_while_it_is_down_is_one_503(
    served: tuple[KeyService, str, object],
) -> None:
    svc, token, server = served
    old = [f"old/{i}" for i in range(10)]
    frame = wire.encode_frame({"context": None}, [b"x"] * 10, old)
    assert svc.handle(_post("/v1/encrypt", token, frame)).status == 200
    server.halt()  # type: ignore[attr-defined]
    try:
        new = [f"new/{i}" for i in range(10)]
        r = svc.handle(_post("/v1/encrypt", token, wire.encode_frame({}, [b"y"] * 10, new)))
        assert r.status == 503, r.body[:200]  # before: 200, the outage at each of 10 indices
        assert json.loads(r.body)["error"]["type"] == "StoreUnreachableError"
        subjects_only = wire.encode_frame({"create": True}, [None] * 10, new)
        r = svc.handle(_post("/v1/datakey", token, subjects_only))
        assert r.status == 503  # before: 400
        # keys already cached need no store: those records are still sealed
        r = svc.handle(_post("/v1/encrypt", token, frame))
        assert r.status == 200 and wire.decode_frame(r.body)[0] == {}
    finally:
        server.resume()  # type: ignore[attr-defined]
    r = svc.handle(_post("/v1/encrypt", token, wire.encode_frame({}, [b"y"] * 10, new)))
    assert r.status == 200 and wire.decode_frame(r.body)[0] == {}
