"""The cluster client's data-key cache under the fleet rules (issue 20 item: a shred reaches
every caching ClusterClient). Fast, in one process, no node processes: the nodes of these
clusters are unreachable sockets. The end-to-end scenario with real node and client
processes is test_cluster_nodes.py::test_shred_reaches_a_caching_client_in_another_process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keysplit import ClusterClient, NoDataKeyError
from keysplit.keyring import fleet
from keysplit.record import DataKey
from keysplit.service.cluster_client import FLUSH_TAG
from keysplit.service.cluster_config import ClusterConfig, ClusterNodeInfo
from keysplit.store import WrappedKey, open_store

pytest.importorskip("rbcl")

BOUND = 10.0


@pytest.fixture(autouse=True)
def _fast_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYSPLIT_POLL", "0.1")
    monkeypatch.setenv("KEYSPLIT_LEASE_TTL", "5")


@pytest.fixture
def cl(tmp_path: Path) -> Iterator[Path]:
    nodes = tuple(
        ClusterNodeInfo(
            f"n{i}", i, f"unix:{tmp_path}/absent{i}.sock", f"{i:032x}", "ab" * 32, "cd" * 32
        )
        for i in (1, 2, 3)
    )
    cfg = ClusterConfig("0f" * 16, "in", 2, nodes, "ef" * 32, commitments=("ef" * 32,) * 2)
    cfg.write(tmp_path)
    open_store(cfg.store, keyring_id=cfg.cluster_id, home=tmp_path, create=True).close()
    yield tmp_path


def test_key_cache_keeps_given_tags() -> None:
    """A cache without a tagger keys each entry by the tag it was given (a cluster's tags
    come from each subject's PRF output); drops, evictions and re-puts keep the tag map
    exact."""
    cache = fleet.KeyCache(2)
    k = {s: DataKey(os.urandom(16)) for s in "abc"}
    cache.put_many([("a", k["a"]), ("b", k["b"])], tags=[b"A" * 16, b"B" * 16])
    assert cache.drop_tags([b"A" * 16, b"Z" * 16]) == 1
    assert cache.get_many(["a", "b"]) == [None, k["b"]]
    cache.put_many([("a", k["a"]), ("c", k["c"])], tags=[b"A" * 16, b"C" * 16])  # evicts b
    assert cache.get_many(["a", "b", "c"]) == [k["a"], None, k["c"]]
    assert cache.drop_tags([b"B" * 16]) == 0  # b's tag went with b
    cache.drop(["c"])
    assert cache.drop_tags([b"C" * 16]) == 0
    assert cache.drop_tags([b"A" * 16]) == 1 and len(cache) == 0
    with pytest.raises(ValueError, match="one tag per key"):
        cache.put_many([("a", k["a"])], tags=[])
    with pytest.raises(ValueError, match="without a tagger"):
        fleet.KeyCache(2, fleet.TombstoneTagger(b"k" * 32)).put_many(
            [("a", k["a"])], tags=[b"A" * 16]
        )


def test_tombstone_tag_is_hkdf_of_the_prf_output() -> None:
    """Cross-checked against cryptography's HKDF; another salt than the KEK's, so a tag
    says nothing about the KEK."""
    from keysplit.cluster import dprf
    from keysplit.hazmat.ristretto import Point, Scalar

    y = Point.base_mul(Scalar.from_bytes(bytes([7]) + bytes(31)))
    cid, subject = bytes(range(16)), "contacts/Jos\u00e9"
    info = (
        len(cid).to_bytes(2, "big") + cid + len(subject.encode()).to_bytes(2, "big")
        + subject.encode() + (1).to_bytes(4, "big")
    )  # fmt: skip
    for salt, fn in ((b"keysplit cluster tombstone v1", dprf.derive_tombstone),
                     (b"keysplit cluster kek v1", dprf.derive_kek)):  # fmt: skip
        ref = HKDF(hashes.SHA256(), 16, salt, info).derive(y.to_bytes())
        assert fn(y, cid, subject, 1) == ref
    assert dprf.derive_tombstone(y, cid, subject, 1) != dprf.derive_kek(y, cid, subject, 1)


def test_shred_with_the_nodes_down_flushes_every_cache(cl: Path) -> None:
    """Erasure does not wait for the nodes: without T nodes the tag cannot be computed, so
    the delete goes ahead under FLUSH_TAG and a caching client drops every key."""
    holder = ClusterClient(cl, token="t", cache_max_age=3600)
    shredder = ClusterClient(cl, token="t")
    try:
        dk = holder.datakeys
        assert dk.member is not None and shredder.datakeys.member is None  # leases: cachers
        assert [x.role for x in dk.store.leases()] == ["cluster-client"]
        assert dk._cache is not None
        dk._cache.put_many([("s", DataKey(os.urandom(16)))], tags=[b"T" * 16])
        assert holder.datakeys.resolve(["s"], create=False)[0] is not None  # from the cache
        shredder.datakeys.store.insert_many([WrappedKey("s", 1, os.urandom(24))])
        assert shredder.shred("s") is True
        assert shredder.datakeys.store.tombstones_since(0)[-1].tag == FLUSH_TAG
        deadline = time.monotonic() + BOUND
        while len(dk._cache):
            assert time.monotonic() < deadline, "the holder kept its cached keys"
            time.sleep(0.02)
        seq = dk.store.state().tombstone_seq
        assert fleet.wait_for_acks(dk.store, seq, BOUND) == []
        assert holder.datakeys.resolve(["s"], create=False) == [None]
        assert isinstance(holder.datakeys.missing_error("s"), NoDataKeyError)
        assert shredder.shred("s") is False
    finally:
        holder.close()
        shredder.close()
    assert ClusterClient(cl, token="t").datakeys.store.leases() == []  # given back on close


def test_cache_max_age_is_checked(cl: Path) -> None:
    with pytest.raises(ValueError):
        ClusterClient(cl, token="t", cache_max_age=0)
    with ClusterClient(cl, token="t", cache_max_age=0.05) as c:
        assert c.datakeys._cache is not None
        c.datakeys._cache.put_many([("s", DataKey(os.urandom(16)))], tags=[b"T" * 16])
        time.sleep(0.1)
        assert c.datakeys.resolve(["s"], create=False) == [None]  # too old: not served
