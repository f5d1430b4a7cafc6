"""``cluster.json`` (keysplit.service.cluster_config): strict parsing, exact round trip.

Fast unit tests (no processes); the cluster's behaviour end to end is in
test_cluster_nodes.py.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keysplit.errors import ClusterError, FormatError
from keysplit.service.cluster_config import (
    ClusterConfig,
    ClusterNodeInfo,
    Successor,
    check_region,
    hold_digest,
    keyed_hold_digest,
    read_cluster,
    read_successor,
)


def _cfg(n: int = 3, t: int = 2) -> ClusterConfig:
    nodes = tuple(
        ClusterNodeInfo(f"n{i}", i, f"unix:/run/n{i}.sock", f"{i:032x}", "ab" * 32, "cd" * 32)
        for i in range(1, n + 1)
    )
    return ClusterConfig("0f" * 16, "in", t, nodes, "ef" * 32, commitments=("ef" * 32,) * t)


def test_round_trip_is_exact(tmp_path: Path) -> None:
    cfg = _cfg()
    assert ClusterConfig.from_bytes(cfg.to_bytes()) == cfg
    cfg.write(tmp_path)
    assert read_cluster(tmp_path) == cfg
    assert (tmp_path / "cluster.json").stat().st_mode & 0o777 == 0o644  # public data


def test_missing_file_is_a_cluster_error(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="does not exist"):
        read_cluster(tmp_path)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("format",), "keysplit-keyring"),
        (("v",), 2),
        (("cluster_id",), "zz" * 16),
        (("region",), "IN"),
        (("region",), ""),
        (("threshold",), 1),
        (("threshold",), 4),
        (("threshold",), True),
        (("epoch",), 0),
        (("public_key",), "ab"),
        (("commitments",), ["ef" * 32]),
        (("nodes", 1, "index"), 1),
        (("nodes", 1, "name"), "n1"),
        (("nodes", 0, "index"), 0),
        (("nodes", 0, "public_share"), "xy" * 32),
        (("nodes", 0, "keyring_id"), "00"),
        (("nodes", 0, "name"), "bad name"),
    ],
)
def test_bad_fields_are_refused(path: tuple[object, ...], value: object) -> None:
    doc = json.loads(_cfg().to_bytes())
    target = doc
    for p in path[:-1]:
        target = target[p]  # type: ignore[index]
    target[path[-1]] = value  # type: ignore[index]
    with pytest.raises(FormatError):
        ClusterConfig.from_bytes(json.dumps(doc).encode())


def test_missing_node_field_is_named() -> None:
    doc = json.loads(_cfg().to_bytes())
    del doc["nodes"][2]["hpke_public_key"]
    with pytest.raises(FormatError, match="hpke_public_key"):
        ClusterConfig.from_bytes(json.dumps(doc).encode())


@given(st.binary(max_size=400))
def test_any_bytes_give_a_config_or_a_format_error(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        ClusterConfig.from_bytes(data)


def test_regions() -> None:
    assert check_region("eu-west") == "eu-west"
    for bad in ("", "EU", "e u", "-eu", "x" * 33, "ü"):
        with pytest.raises(ValueError):
            check_region(bad)


def test_with_shares_bumps_only_what_it_is_told() -> None:
    cfg = _cfg()
    new = cfg.with_shares({1: "11" * 32, 2: "22" * 32, 3: "33" * 32}, epoch=2)
    assert [n.public_share for n in new.nodes] == ["11" * 32, "22" * 32, "33" * 32]
    assert (
        new.epoch == 2 and new.public_key == cfg.public_key and new.nodes[0].url == cfg.nodes[0].url
    )


@pytest.mark.parametrize(
    "url", ["http://host:1", "ftp://x", "https://", "https://h:99999", "unix:"]
)
def test_a_node_url_no_client_can_reach_is_one_error_line(tmp_path: Path, url: str) -> None:
    """(red team) A cluster.json naming a node by a URL keysplit cannot use (http, a bad
    port: an operator's edit), and the same URL given to ``cluster replace``, ended in a
    ValueError traceback (the node client's constructor) in status, shred, rotate and
    replace. cluster.json is refused as malformed; replace calls it a usage error."""
    from service_helpers import cli

    cfg = _cfg()
    (tmp_path / "cl").mkdir()
    cfg.write(tmp_path / "cl")
    r = cli("cluster", "replace", "cl", f"n1={url}", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr and "URL" in r.stderr
    doc = json.loads(cfg.to_bytes())
    doc["nodes"][1]["url"] = url
    (tmp_path / "cl" / "cluster.json").write_text(json.dumps(doc))
    with pytest.raises(FormatError, match="n2"):
        read_cluster(tmp_path / "cl")
    r = cli("cluster", "status", "cl", cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr and "n2" in r.stderr


def test_a_client_refuses_public_shares_its_commitments_do_not_give(tmp_path: Path) -> None:
    """(red team) The client checks every node's proof against the node's public share in
    cluster.json, and checked nothing else of the file: an edited cluster.json (a careless
    merge, or an attacker who can write the file but no node) with other public shares made
    it accept answers from whoever knows the shares named there, and wrap new data keys
    under a KEK they know. Now the public key and every public share must be the ones the
    recorded commitments give (what ``cluster status`` checks), else ClusterError."""
    pytest.importorskip("rbcl")
    from service_helpers import cli
    from test_cluster_cache import dealt_config

    from keysplit import ClusterClient
    from keysplit.cluster import dkg
    from keysplit.store import open_store

    good = dealt_config(lambda i: f"unix:/run/n{i}.sock")
    nodes = good.nodes
    other, _ = dkg.deal(1, 2, [1, 2, 3])  # shares someone else knows
    forged = dkg.public_share(other.commitments, 1).hex()
    bad = [
        good.with_shares({1: forged, 2: nodes[1].public_share, 3: nodes[2].public_share}),
        ClusterConfig(**{**good.__dict__, "public_key": other.commitments[0].hex()}),
        ClusterConfig(**{**good.__dict__, "commitments": ()}),
    ]
    for i, cfg in enumerate([good, *bad]):
        d = tmp_path / f"c{i}"
        d.mkdir()
        open_store(cfg.store, keyring_id=cfg.cluster_id, home=d, create=True).close()
        cfg.write(d)
        if cfg is good:
            ClusterClient(d, token=None).close()
        else:
            with pytest.raises(ClusterError, match="commitments"):
                ClusterClient(d, token=None)
            r = cli("cluster", "status", d, cwd=tmp_path)  # (no commitments: an IndexError)
            assert r.returncode == 1 and "commitments MISMATCH" in r.stdout, r.stderr


def test_successor_json_keeps_the_copied_holds_digests_and_refuses_bad_ones(
    tmp_path: Path,
) -> None:
    """(cluster4) ``held``: digests of the holds a rotation run copied; written only when
    there are some (a file without it reads as none), parsed strictly."""
    cid = "ab" * 16
    plain = Successor(cid, "/x/new", 7)
    plain.write(tmp_path)
    assert "held" not in json.loads((tmp_path / "successor.json").read_text())
    assert read_successor(tmp_path) == plain
    d = hold_digest(cid, "contacts/\u00e9")
    assert len(d) == 16 and d != hold_digest("cd" * 16, "contacts/\u00e9")
    held = Successor(cid, "/x/new", 9, frozenset({d}))
    held.write(tmp_path)
    assert read_successor(tmp_path) == held
    for bad in (["contacts/a"], "x", [d.upper()], [1]):
        for field in ("held", "held_keyed"):
            doc = {"cluster_id": cid, "directory": "/x/new", "since": 9, field: bad}
            (tmp_path / "successor.json").write_text(json.dumps(doc))
            with pytest.raises(FormatError):
                read_successor(tmp_path)
    # (review) the digests this code writes: keyed by a tombstone tag, under their own field
    k = keyed_hold_digest(bytes(16))
    assert len(k) == 16 and k != keyed_hold_digest(bytes(15) + b"\x01")
    keyed = Successor(cid, "/x/new", 9, held_keyed=frozenset({k}))
    keyed.write(tmp_path)
    doc = json.loads((tmp_path / "successor.json").read_text())
    assert doc["held_keyed"] == [k] and "held" not in doc  # code before it reads no holds
    assert read_successor(tmp_path) == keyed


def test_successor_json_says_whether_the_rotation_keeps_a_ledger_of_moved_keys(
    tmp_path: Path,
) -> None:
    """(cluster5) ``ledger``: the rotation records a check value of each key it moves in
    ``moved.sqlite`` beside it. A file without the field (written by code before it, or
    rewritten by such code, which drops it) reads as no ledger; any other value is
    refused. Readers ignore fields they do not know, as code before it ignores this one;
    a ledger the file names but the directory lacks is an error, not an empty ledger."""
    from keysplit.service._moved_ledger import MovedLedger, moved_check

    cid = "ab" * 16
    kept = Successor(cid, "/x/new", 7, ledger=True)
    kept.write(tmp_path)
    assert json.loads((tmp_path / "successor.json").read_text())["ledger"] == "moved.sqlite"
    assert read_successor(tmp_path) == kept
    doc = {"cluster_id": cid, "directory": "/x/new", "since": 7, "later": {"x": 1}}
    (tmp_path / "successor.json").write_text(json.dumps(doc))
    assert read_successor(tmp_path) == Successor(cid, "/x/new", 7)
    for bad in ("../keys.sqlite", True, 1, None, ""):
        doc = {"cluster_id": cid, "directory": "/x/new", "since": 7, "ledger": bad}
        (tmp_path / "successor.json").write_text(json.dumps(doc))
        with pytest.raises(FormatError):
            read_successor(tmp_path)
    with pytest.raises(ClusterError, match=r"moved\.sqlite is missing"):
        MovedLedger(tmp_path, create=False)
    key = bytes(range(16))
    check = moved_check(cid, "contacts/\u00e9", key)
    assert len(check) == 16 and b"contacts" not in check
    assert check not in {
        moved_check("cd" * 16, "contacts/\u00e9", key),
        moved_check(cid, "contacts/e\u0301", key),
        moved_check(cid, "contacts/\u00e9", bytes(16)),
    }
    with MovedLedger(tmp_path, create=True) as led:
        led.add([check])
        led.add([check])  # each run records every key it moves again: once
    with MovedLedger(tmp_path, create=False) as led:
        assert led.known([check, bytes(16)]) == {check}
    assert (tmp_path / "moved.sqlite").stat().st_mode & 0o777 == 0o644
