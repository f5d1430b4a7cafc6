"""Unseal an in-process :class:`KeyService` the way custodians do (HPKE-sealed shares)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable

from keysplit import Share
from keysplit.service.core import KeyService, Request
from keysplit.service.unseal import seal_share_for


def unseal_service(svc: KeyService, keyring_id: str, shares: Iterable[Share]) -> None:
    """Submit each share to the service's current unseal attempt; asserts it unsealed."""
    for share in shares:
        o = svc.remote.offer()
        sealed = seal_share_for(
            share,
            public_key=bytes.fromhex(o["public_key"]),
            keyring_id=keyring_id,
            nonce=bytes.fromhex(o["nonce"]),
        )
        body = json.dumps(
            {"nonce": o["nonce"], "sealed_share": base64.b64encode(sealed).decode()}
        ).encode()
        r = svc.handle(Request("POST", "/v1/unseal", {}, body))
        assert r.status == 200, r.body
    assert not svc.sealed
