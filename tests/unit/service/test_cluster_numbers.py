"""Issue 21 item 6 for the cluster endpoints: a hostile number in any numeric field of a
DKG, recovery or evaluation request is a 4xx naming the problem, never a 500.

The rewrap endpoint's ``batch_size`` (10^30 gave an OverflowError) has its own test in
test_service_limits.py; these endpoints take thresholds, epochs, indices and versions, which
would reach ``struct.pack`` and scalar arithmetic unchecked. Three unsealed in-process node
services (the request handler the server runs) are made members of one 2-of-3 cluster by
the real ``create_cluster``, so every request gets past membership to its numbers: each
endpoint first answers the request as the admin tools send it with 200, then each hostile
value in each numeric field with a 4xx.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from keysplit import Keyring
from keysplit.service import _wire as wire
from keysplit.service import cluster_admin
from keysplit.service.core import KeyService, Request
from keysplit.service.tokens import OPERATIONS, TokenList, mac_key

pytest.importorskip("rbcl")

HOSTILE: list[Any] = [10**30, -(10**30), -1, 0, 2**32, 2**64, 1.5, True, "3", None, [1], {}]
Nodes = dict[str, KeyService]
CLUSTER: dict[str, Any] = {}


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Nodes, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("nodes")
    svcs: Nodes = {}
    token = ""
    for name in ("n1", "n2", "n3"):
        kr, shares = Keyring.create(tmp / name, 2, ["a", "b"])
        with kr.unseal([shares["a"], shares["b"]]) as u:
            key = mac_key(u.audit_key(), kr.keyring_id)
            tl = TokenList.read(kr.path, kr.keyring_id)
            if not token:
                token = tl.create(key, name="t", allow=list(OPERATIONS), subject_prefix="")[0]
            else:
                tl.add(key, token, name="t", allow=list(OPERATIONS), subject_prefix="")
        svc = KeyService(kr.path, log=lambda m: None)
        svc._unsealed(kr.unseal([shares["a"], shares["b"]]), ["a", "b"])
        svcs[f"unix:{name}"] = svc
    auth = {"authorization": f"Bearer {token}"}

    def post(
        url: str, path: str, doc: Any, tok: Any, name: str, tls: Any, **fields: Any
    ) -> dict[str, Any]:
        status, body = _post(svcs[url], auth, path, doc)
        assert status == 200, (path, body)
        out: dict[str, Any] = json.loads(body)
        return out

    def info(url: str, **kw: Any) -> dict[str, Any]:
        r = svcs[url].handle(Request("GET", "/v1/cluster/node", {}, b""))
        out: dict[str, Any] = json.loads(r.body)
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cluster_admin, "_post", post)
        mp.setattr(cluster_admin, "node_info", info)
        cfg = cluster_admin.create_cluster(
            tmp / "cl",
            threshold=2,
            region="in",
            nodes=[(n, f"unix:{n}") for n in ("n1", "n2", "n3")],
        )
    CLUSTER.update(cfg.public_dict())
    yield svcs, auth


def _post(svc: KeyService, auth: dict[str, str], path: str, body: Any) -> tuple[int, bytes]:
    if isinstance(body, bytes):
        headers = dict(auth, **{"content-type": wire.BATCH_TYPE})
    else:
        headers = dict(auth, **{"content-type": wire.JSON_TYPE})
        body = json.dumps(body).encode()
    r = svc.handle(Request("POST", path, headers, body))
    return r.status, r.body


_IDS = iter(range(1, 10**6))


def _members() -> list[dict[str, Any]]:
    return [{k: v for k, v in n.items() if k != "public_share"} for n in CLUSTER["nodes"]]


def _dkg(**over: Any) -> dict[str, Any]:
    """n1's deal for a new cluster among the three nodes (a fresh cluster id each time)."""
    doc: dict[str, Any] = {
        "cluster_id": f"{next(_IDS):032x}",
        "region": "in",
        "threshold": 2,
        "epoch": 1,
        "store": "sqlite:keys.db",
        "nodes": _members(),
        "me": "n1",
    }
    doc.update(over)
    return doc


def _recover(**over: Any) -> dict[str, Any]:
    """n1's part in recovering n3's share for a new node (n1 and n2 help)."""
    doc: dict[str, Any] = {
        "cluster_id": CLUSTER["cluster_id"],
        "epoch": CLUSTER["epoch"],
        "lost": 3,
        "helpers": [1, 2],
        "new_node": _members()[2],
    }
    doc.update(over)
    return doc


def _eval(**over: Any) -> bytes:
    header: dict[str, Any] = {
        "cluster_id": CLUSTER["cluster_id"],
        "region": "in",
        "epoch": CLUSTER["epoch"],
        "version": CLUSTER["kek_version"],
        "indices": [1, 2],
    }
    header.update(over)
    return wire.encode_frame(header, [None], ["u/1"])


def _first_node(v: Any) -> dict[str, Any]:
    members = _members()
    return _dkg(nodes=[dict(members[0], index=v), *members[1:]])


CASES: list[tuple[str, Callable[[], Any], Callable[[Any], Any]]] = [
    ("/v1/cluster/dkg/deal", _dkg, lambda v: _dkg(threshold=v)),
    ("/v1/cluster/dkg/deal", _dkg, lambda v: _dkg(epoch=v)),
    ("/v1/cluster/dkg/deal", _dkg, _first_node),
    ("/v1/cluster/recover/deal", _recover, lambda v: _recover(epoch=v)),
    ("/v1/cluster/recover/deal", _recover, lambda v: _recover(lost=v)),
    ("/v1/cluster/recover/deal", _recover, lambda v: _recover(helpers=[1, v])),
    ("/v1/cluster/eval", _eval, lambda v: _eval(epoch=v)),
    ("/v1/cluster/eval", _eval, lambda v: _eval(version=v)),
    ("/v1/cluster/eval", _eval, lambda v: _eval(indices=[1, v])),
]


@pytest.mark.parametrize(("path", "good", "bad"), CASES)
def test_hostile_numbers_are_a_client_error_never_a_500(
    nodes: tuple[Nodes, dict[str, str]],
    path: str,
    good: Callable[[], Any],
    bad: Callable[[Any], Any],
) -> None:
    svcs, auth = nodes
    n1 = svcs["unix:n1"]
    status, body = _post(n1, auth, path, good())  # the numbers below are reached
    assert status == 200, (path, body[:300])
    for v in HOSTILE:
        status, body = _post(n1, auth, path, bad(v))
        assert 400 <= status < 500, (path, v, status, body[:300])
        doc = json.loads(body)
        assert doc["error"]["type"] and doc["error"]["message"], (path, v, doc)
