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
    check_region,
    read_cluster,
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
