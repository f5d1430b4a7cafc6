"""The cluster client's data-key cache under the fleet rules (issue 20 item: a shred reaches
every caching ClusterClient). Fast, in one process, no node processes: the nodes of these
clusters are unreachable sockets. The end-to-end scenario with real node and client
processes is test_cluster_nodes.py::test_shred_reaches_a_caching_client_in_another_process.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keysplit import ClusterClient, KeyringError, NoDataKeyError
from keysplit.keyring import fleet
from keysplit.record import DataKey
from keysplit.service.client import Client
from keysplit.service.cluster_client import FLUSH_TAG
from keysplit.service.cluster_config import ClusterConfig, ClusterNodeInfo
from keysplit.store import WrappedKey, open_store

pytest.importorskip("rbcl")

BOUND = 10.0


@pytest.fixture(autouse=True)
def _fast_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYSPLIT_POLL", "0.1")
    monkeypatch.setenv("KEYSPLIT_LEASE_TTL", "5")


def dealt_config(url: Callable[[int], str], n: int = 3, t: int = 2) -> ClusterConfig:
    """A cluster description whose key, commitments and public shares are consistent (one
    dealing of a random polynomial; nobody serves its shares)."""
    from keysplit.cluster import dkg

    dealing, _ = dkg.deal(1, t, list(range(1, n + 1)))
    cs = dealing.commitments
    nodes = tuple(
        ClusterNodeInfo(f"n{i}", i, url(i), f"{i:032x}", "ab" * 32, dkg.public_share(cs, i).hex())
        for i in range(1, n + 1)
    )
    hexed = tuple(c.hex() for c in cs)
    return ClusterConfig("0f" * 16, "in", t, nodes, hexed[0], commitments=hexed)


@pytest.fixture
def cl(tmp_path: Path) -> Iterator[Path]:
    cfg = dealt_config(lambda i: f"unix:{tmp_path}/absent{i}.sock")
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


def _cached_client(cl: Path) -> ClusterClient:
    """A caching client with the key of ``contacts/hot`` in its cache (the nodes of ``cl``
    are unreachable: a record of that subject needs nothing but the cache)."""
    c = ClusterClient(cl, token="t", cache_max_age=3600)
    assert c.datakeys._cache is not None
    c.datakeys._cache.put_many([("contacts/hot", DataKey(os.urandom(16)))], tags=[b"T" * 16])
    return c


def _assert_closed_for_good(c: ClusterClient, cl: Path) -> None:
    """After ``close``: no lease, locally or in the store, no cached key, every call says
    "closed"."""
    dk = c.datakeys
    assert dk.member is None or not dk.member.valid()
    assert dk._cache is None or len(dk._cache) == 0
    store = open_store(dk.config.store, keyring_id=dk.config.cluster_id, home=cl)
    try:
        assert store.leases() == []
    finally:
        store.close()
    with pytest.raises(KeyringError, match="closed"):
        c.encrypt(b"z", subject="contacts/hot")


def test_every_call_after_close_says_closed(cl: Path) -> None:
    """A closed client is closed for good: every call raises KeyringError("... closed"),
    with or without a cache, whatever part it would reach first (the store, the nodes,
    the cache); it never reconnects; a second close is a no-op."""
    with _cached_client(cl) as caching:
        rec = caching.encrypt(b"x", subject="contacts/hot")  # from the cache
    plain = ClusterClient(cl, token="t")
    plain.close()
    calls: dict[str, Callable[[ClusterClient], object]] = {
        "encrypt": lambda c: c.encrypt(b"x", subject="contacts/hot"),
        "decrypt": lambda c: c.decrypt(rec, subject="contacts/hot"),
        "encrypt_many": lambda c: c.encrypt_many(["contacts/hot"], [b"x"]),
        "decrypt_many": lambda c: c.decrypt_many(["contacts/hot"], [rec]),
        "shred": lambda c: c.shred("contacts/hot"),
        "set_legal_hold": lambda c: c.set_legal_hold("contacts/hot", True),
        "status": lambda c: c.status(),
        "resolve": lambda c: c.datakeys.resolve(["contacts/hot"], create=False),
        "export": lambda c: c.datakeys.export(["contacts/hot"], create=False),
        "tombstone_tags": lambda c: c.datakeys.tombstone_tags(["contacts/hot"]),
        "evaluate": lambda c: c.datakeys.evaluate(["contacts/hot"], proof=False),
    }
    for c in (caching, plain):
        wrong = {}
        for name, call in calls.items():
            try:
                wrong[name] = repr(call(c))
            except KeyringError as exc:
                if "closed" not in str(exc):
                    wrong[name] = repr(exc)
            except Exception as exc:  # reported by the assertion below
                wrong[name] = repr(exc)
        assert wrong == {}, f"after close (cache: {c.datakeys.member is not None})"
        c.close()  # again: nothing happens
        _assert_closed_for_good(c, cl)


def close_with_a_call_racing(c: ClusterClient, call: Callable[[], object]) -> object:
    """Close ``c`` while ``call`` runs in another thread in the window of the race: the
    lease already ended by the close, the store still open (the call runs, and is waited
    for, when the close closes its first node connection). Returns what the call returned
    or raised."""
    window: list[object] = []
    close_node = Client.close

    def racing_call() -> None:
        try:
            window.append(call())
        except BaseException as exc:  # returned: the caller's assertion reports it
            window.append(exc)

    def close_node_with_a_call_racing(self: Client) -> None:
        if not window:
            t = threading.Thread(target=racing_call, daemon=True)
            t.start()
            t.join(60)
            assert window, "the racing call did not return"
        close_node(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Client, "close", close_node_with_a_call_racing)
        c.close()
    assert len(window) == 1
    return window[0]


def test_a_call_racing_close_never_revives_the_lease(cl: Path) -> None:
    """The race of b3fb1fd (LocalDataKeys), in the cluster client: ``close`` ends the lease
    first, so a call from another thread in the rest of the close found the lease lapsed
    and renewed it: the lease lived on in the store (``cluster shred --wait`` counted a
    closed client) and locally (with nodes up, the key that call cached was served after
    close returned: test_cluster_nodes.py). Here the call comes exactly in that window,
    while close closes the node connections: it says "closed" and nothing is revived."""
    c = _cached_client(cl)
    got = close_with_a_call_racing(c, lambda: c.encrypt(b"y", subject="contacts/hot"))
    assert isinstance(got, KeyringError) and "closed" in str(got), got
    _assert_closed_for_good(c, cl)


def test_threads_on_the_fast_path_while_another_closes(cl: Path) -> None:
    """Threads sealing records from the cache while another thread closes the client: each
    call either succeeds (it ran before the close took effect) or says "closed"; none that
    started after close returned succeeds; nothing else is raised; nothing is revived."""
    c = _cached_client(cl)
    returned = threading.Event()
    late: list[int] = []
    errors: list[BaseException] = []
    done = 0

    def seal() -> None:
        nonlocal done
        while True:
            after = returned.is_set()
            try:
                c.encrypt(b"r", subject="contacts/hot")
            except KeyringError as exc:
                if "closed" not in str(exc):
                    errors.append(exc)
                if after:
                    return
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)
                return
            else:
                if after:
                    late.append(1)
                    return
                done += 1

    threads = [threading.Thread(target=seal, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + BOUND
    while done < 200 and time.monotonic() < deadline:
        time.sleep(0.001)
    c.close()
    returned.set()
    for t in threads:
        t.join(BOUND)
    assert not any(t.is_alive() for t in threads)
    assert errors == [] and late == []
    _assert_closed_for_good(c, cl)
