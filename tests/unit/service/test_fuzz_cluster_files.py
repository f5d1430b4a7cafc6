"""Hypothesis red team of a cluster's public files: ``cluster.json``, ``successor.json``,
``creating.json`` (an unfinished create) and a node's copy of the description
(``cluster/<id>.json``, which names the node).

Neither file is authenticated (they are public and pinned by their ids and keys), so
every edit must end in a FormatError (or a ClusterError) or in a description that writes
back what it read and whose every path can be used: a JSON escape can spell a lone
surrogate that no socket path or store file name holds, which before was accepted here
and failed later with UnicodeEncodeError (a traceback from ``keysplit cluster status``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tamper import dump_json, mutate_json, read_of_a_planted_fifo

from keysplit.errors import FormatError, KeysplitError
from keysplit.service.cluster_admin import CREATING_FILE, _read_creating, abandon_cluster
from keysplit.service.cluster_config import (
    SUCCESSOR_FILE,
    ClusterConfig,
    ClusterNodeInfo,
    Successor,
    check_node_name,
    check_url,
    read_cluster,
    read_successor,
)
from keysplit.service.cluster_node import ClusterNode

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_NODES = tuple(
    ClusterNodeInfo(f"n{i}", i, f"unix:/run/n{i}.sock", f"{i:032x}", "ab" * 32, "cd" * 32)
    for i in range(1, 4)
)
_CFG = ClusterConfig("0f" * 16, "in", 2, _NODES, "ef" * 32, commitments=("ef" * 32,) * 2)
_DOC: dict[str, Any] = json.loads(_CFG.to_bytes())
_DOC["nodes"].append(  # an https node too
    {**_DOC["nodes"][0], "name": "n4", "index": 4, "url": "https://n4.example:8443"}
)


def _usable(cfg: ClusterConfig) -> None:
    """Every path a client takes from the description can be handed to the OS."""
    os.fsencode(cfg.store)
    for n in cfg.nodes:
        if n.url.startswith("unix:"):
            os.fsencode(n.url[5:])
        else:
            n.url.encode("utf-8")


@FUZZ
@given(st.data())
def test_an_edited_cluster_json_is_refused_or_usable(data: st.DataObject) -> None:
    raw = dump_json(mutate_json(_DOC, data.draw), indent=1)
    try:
        cfg = ClusterConfig.from_bytes(raw)
    except KeysplitError:
        return
    _usable(cfg)
    assert ClusterConfig.from_bytes(cfg.to_bytes()) == cfg


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda d: d["nodes"][0].update(url="unix:/run/\ud800.sock"), "socket path"),
        (lambda d: d["nodes"][3].update(url="https://\ud800.example"), "node URL"),
        (lambda d: d.update(store="sqlite:/var/\ud800.sqlite"), "store URL"),
    ],
)
def test_a_path_no_file_name_holds_is_a_format_error(edit: Any, says: str) -> None:
    doc = json.loads(json.dumps(_DOC))
    edit(doc)
    with pytest.raises(FormatError, match=says):
        ClusterConfig.from_bytes(dump_json(doc))


def test_a_socket_path_of_a_non_utf8_file_name_is_kept() -> None:
    """A byte of a non-UTF-8 name (surrogateescape, as argv gives it) is a file name."""
    doc = json.loads(json.dumps(_DOC))
    doc["nodes"][0]["url"] = "unix:/run/\udcff.sock"
    assert ClusterConfig.from_bytes(dump_json(doc)).nodes[0].url == "unix:/run/\udcff.sock"


_SUCCESSOR = {
    "cluster_id": "ab" * 16,
    "directory": "/srv/next",
    "since": 3,
    "held": ["00" * 8],
    "ledger": "moved.sqlite",
    "held_keyed": ["11" * 8],
}


def _edited(
    factory: pytest.TempPathFactory, data: st.DataObject, name: str, doc: object, read: Any
) -> tuple[Path, Any]:
    """A fresh directory holding ``doc``, edited, as file ``name``, and what ``read`` made
    of the directory (None if it refused the file with a KeysplitError)."""
    d = factory.mktemp("files", numbered=True)
    (d / name).write_bytes(dump_json(mutate_json(doc, data.draw)))
    try:
        return d, read(d)
    except KeysplitError:
        return d, None


@FUZZ
@given(st.data())
def test_an_edited_successor_json_is_refused_or_usable(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    d, s = _edited(tmp_path_factory, data, SUCCESSOR_FILE, _SUCCESSOR, read_successor)
    if s is None:
        return
    os.fsencode(s.directory)
    s.write(d)
    assert read_successor(d) == s


def test_a_successor_directory_no_file_name_holds_is_a_format_error(tmp_path: Path) -> None:
    Successor("ab" * 16, "/srv/\ud800", 0).write(tmp_path)
    with pytest.raises(FormatError, match="malformed"):
        read_successor(tmp_path)


@pytest.mark.parametrize("me", [["n1"], {"n1": 1}, 1, None])
def test_a_node_copy_whose_me_is_not_a_name_is_a_format_error(tmp_path: Path, me: object) -> None:
    node = ClusterNode(SimpleNamespace(directory=tmp_path), object)  # type: ignore[arg-type]
    node.dir.mkdir()
    doc = {**_CFG.public_dict(), "me": me}
    (node.dir / f"{_CFG.cluster_id}.json").write_bytes(json.dumps(doc).encode())
    with pytest.raises(FormatError, match="does not name this node"):
        node._config(_CFG.cluster_id)


_CREATING = {
    "cluster_id": "ab" * 16,
    "region": "in",
    "nodes": [{"name": "n1", "url": "unix:/run/n1.sock"}, {"name": "n2", "url": "https://n2:8443"}],
}


@FUZZ
@given(st.data())
def test_an_edited_creating_json_is_refused_or_names_usable_nodes(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """``DIR/creating.json`` (an unfinished ``cluster create``) names the nodes
    ``cluster abandon DIR`` and a rerun of the create call."""
    _, got = _edited(tmp_path_factory, data, CREATING_FILE, _CREATING, _read_creating)
    for name, url in got[1] if got is not None else ():
        assert check_node_name(name) == name and check_url(url) == url


@pytest.mark.parametrize(
    "node",
    [
        {"name": "n1", "url": "ftp://n1"},
        {"name": "n1", "url": "unix:/run/\ud800.sock"},
        {"name": "n1", "url": 5},
        {"name": "bad name", "url": "unix:/run/n1.sock"},
    ],
)
def test_abandon_of_a_creating_json_naming_a_bad_node_is_a_format_error(
    tmp_path: Path, node: dict[str, object]
) -> None:
    """Before, the URL reached Client(): ValueError, UnicodeEncodeError or AttributeError
    out of ``keysplit cluster abandon DIR`` (a traceback: the CLI maps KeysplitErrors)."""
    doc = {**_CREATING, "nodes": [node]}
    (tmp_path / CREATING_FILE).write_bytes(dump_json(doc))
    with pytest.raises(FormatError, match=r"creating\.json: malformed"):
        abandon_cluster(tmp_path, token="ks1t_x")


@pytest.mark.parametrize("url", [5, None, b"unix:/x", ["unix:/x"]])
def test_check_url_of_a_value_that_is_no_text_is_a_value_error(url: object) -> None:
    with pytest.raises(ValueError, match="node URL must be"):
        check_url(url)  # type: ignore[arg-type]


def _huge(path: Path, size: int) -> Path:
    """A sparse file of ``size`` bytes: no disk used, but reading it whole costs ``size``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def _node(tmp_path: Path) -> ClusterNode:
    return ClusterNode(SimpleNamespace(directory=tmp_path), object)  # type: ignore[arg-type]


_CID = _CFG.cluster_id
_HUGE_READS: list[tuple[str, str, int, Any]] = [
    ("cluster.json", "cluster.json", 4 << 20, lambda d: read_cluster(d)),
    ("successor.json", SUCCESSOR_FILE, 32 << 20, lambda d: read_successor(d)),
    ("creating.json", CREATING_FILE, 1 << 20, lambda d: _read_creating(d)),
    ("node.json", "cluster/node.json", 4096, lambda d: _node(d).region()),
    ("node copy", f"cluster/{_CID}.json", 4 << 20, lambda d: _node(d)._config(_CID)),
    ("staged copy", f"cluster/{_CID}.json.next", 4 << 20, lambda d: _node(d)._promote(_CID, "t")),
    ("share", f"cluster/{_CID}.share", 4096, lambda d: _node(d)._share(_CFG, 1, None)),
]


@pytest.mark.parametrize(
    ("name", "limit", "read"), [h[1:] for h in _HUGE_READS], ids=[h[0] for h in _HUGE_READS]
)
def test_a_huge_planted_cluster_file_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, limit: int, read: Any
) -> None:
    """A file past its limit is refused by its size, not read whole first (a planted
    sparse file of many GiB would cost that much memory before the size check)."""
    _huge(tmp_path / name, limit + 1)
    if name.endswith(".json.next"):  # the staged share beside it, of a sane size
        (tmp_path / name).with_name(f"{_CID}.share.next").write_bytes(b"x" * 100)

    def whole(self: Path) -> bytes:
        raise AssertionError(f"{self} read whole before its size was checked")

    monkeypatch.setattr(Path, "read_bytes", whole)
    with pytest.raises(FormatError, match=rf"is too large \({limit + 1} bytes, at most {limit}\)"):
        read(tmp_path)


@pytest.mark.parametrize(
    ("name", "read"), [(h[1], h[3]) for h in _HUGE_READS], ids=[h[0] for h in _HUGE_READS]
)
def test_a_fifo_planted_as_a_cluster_file_is_refused_without_waiting(
    tmp_path: Path, name: str, read: Any
) -> None:
    """A FIFO in place of a cluster file is a FormatError at once, not an open that waits
    for ever for a writer (a node's request, ``keysplit cluster status``)."""
    if name.endswith(".json.next"):  # the staged share beside it, of a sane size
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).with_name(f"{_CID}.share.next").write_bytes(b"x" * 100)
    got = read_of_a_planted_fifo(tmp_path / name, lambda: read(tmp_path))
    assert isinstance(got, FormatError), got
    assert "is a FIFO, not a regular file" in str(got)
