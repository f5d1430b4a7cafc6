"""``cluster.json``: the public description of a key cluster (docs/format/cluster.md).

A cluster directory holds only this file (and, for the default SQLite store, the store of
wrapped data keys, and ``successor.json`` once a rotation to another cluster began): no
secret. It names the cluster (a random 16-byte id), its region, its
threshold T, the current share epoch (bumped by every refresh), the store URL, and for each
node its name, index, URL, keyring id and keyring public key (what sub-shares are sealed
to) and its public share ``s_i*G``, against which the client checks every DLEQ proof.

The public shares are recomputable from the recorded commitments (the DKG's and each
refresh's), which is what ``keysplit cluster status`` checks. A node keeps a copy of the
same document in its keyring directory (:mod:`.cluster_node`) beside its sealed share.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .. import _json
from .._fileio import atomic_write, read_bounded
from ..errors import ClusterError, FormatError
from ._moved_ledger import MOVED_FILE

__all__ = [
    "CLUSTER_FILE",
    "ClusterConfig",
    "ClusterNodeInfo",
    "Successor",
    "check_region",
    "check_url",
    "read_cluster",
    "read_successor",
]

CLUSTER_FILE = "cluster.json"
FORMAT = "keysplit-cluster"
DEFAULT_STORE = "sqlite:cluster-keys.sqlite"
_REGION_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_NODES = 64
MAX_U32 = 2**32 - 1
"""Largest epoch and key version (each travels as a u32 in HPKE infos and DPRF points)."""
_MAX_FILE = 4 << 20


def check_region(region: str) -> str:
    """A region label: 1-32 of a-z 0-9 - (``in``, ``eu-west``), compared byte for byte."""
    if not isinstance(region, str) or not _REGION_RE.fullmatch(region):
        raise ValueError("region must be 1-32 characters of a-z 0-9 - (e.g. 'in', 'eu-west')")
    return region


def check_url(url: str) -> str:
    """A node URL keysplit can reach: ``unix:PATH`` or ``https://host[:port]`` (the rule of
    :class:`~keysplit.service.Client`, checked where a cluster description is read)."""
    if isinstance(url, str) and url.startswith("unix:") and len(url) > len("unix:"):
        if not _file_name(url[len("unix:") :]):
            raise ValueError("node URL: the socket path is no file name this system can hold")
        return url
    try:
        parts = urlsplit(url)
        ok = parts.scheme == "https" and bool(parts.hostname) and (parts.port or 443) > 0
        ok = ok and _json.is_unicode(url)  # a JSON escape can spell a lone surrogate
    except (TypeError, ValueError, AttributeError):  # urlsplit(5): AttributeError
        ok = False
    if not ok:
        raise ValueError(f"node URL must be unix:/path/to/socket or https://host:port, not {url!r}")
    return url


def check_node_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError("node name must be 1-64 of A-Z a-z 0-9 _ . - (starting alnum)")
    return name


def _hex(v: Any, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(v, str) or not pattern.fullmatch(v):
        raise FormatError(f"cluster.json: bad {what}")
    return v


def _file_name(text: str) -> bool:
    """Whether ``text`` can name a file here (``os.fsencode``): a JSON escape can spell a
    lone surrogate no file name holds (``\\udcXX``, a byte of a non-UTF-8 name, is one)."""
    try:
        os.fsencode(text)
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class ClusterNodeInfo:
    """One node as the cluster knows it (all public)."""

    name: str
    index: int
    url: str
    keyring_id: str
    hpke_public_key: str
    public_share: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "index": self.index,
            "url": self.url,
            "keyring_id": self.keyring_id,
            "hpke_public_key": self.hpke_public_key,
            "public_share": self.public_share,
        }

    @classmethod
    def from_dict(cls, d: Any) -> ClusterNodeInfo:
        if not isinstance(d, dict):
            raise FormatError("cluster.json: a node is not an object")
        try:
            n = cls(
                name=check_node_name(d["name"]),
                index=d["index"],
                url=str(d["url"]),
                keyring_id=_hex(d["keyring_id"], _HEX32, "keyring id"),
                hpke_public_key=_hex(d["hpke_public_key"], _HEX64, "node public key"),
                public_share=_hex(d["public_share"], _HEX64, "public share"),
            )
        except KeyError as exc:
            raise FormatError(f"cluster.json: a node lacks {exc.args[0]!r}") from None
        except ValueError as exc:
            raise FormatError(f"cluster.json: {exc}") from None
        try:
            check_url(n.url)
        except ValueError as exc:
            raise FormatError(f"cluster.json: node {n.name}: {exc}") from None
        if type(n.index) is not int or not 1 <= n.index <= MAX_NODES:
            raise FormatError("cluster.json: node index must be 1..64")
        return n


@dataclass(frozen=True)
class ClusterConfig:
    """The parsed ``cluster.json`` (immutable; :meth:`with_shares` makes the next epoch's)."""

    cluster_id: str
    region: str
    threshold: int
    nodes: tuple[ClusterNodeInfo, ...]
    public_key: str
    epoch: int = 1
    kek_version: int = 1
    store: str = DEFAULT_STORE
    commitments: tuple[str, ...] = field(default=())
    """The combined Feldman commitments ``C_0..C_{T-1}`` of the shared polynomial (after
    every refresh): each public share is ``sum_k i^k C_k``, and ``C_0`` is the public key."""

    def __post_init__(self) -> None:
        _hex(self.cluster_id, _HEX32, "cluster id")
        try:
            check_region(self.region)
        except ValueError as exc:
            raise FormatError(f"cluster.json: {exc}") from None
        n = len(self.nodes)
        if not 2 <= n <= MAX_NODES or type(self.threshold) is not int:
            raise FormatError("cluster.json: a cluster has 2..64 nodes")
        if not 2 <= self.threshold <= n:
            raise FormatError("cluster.json: threshold must be 2..number of nodes")
        if len({x.index for x in self.nodes}) != n or len({x.name for x in self.nodes}) != n:
            raise FormatError("cluster.json: node names and indices must be unique")
        if type(self.epoch) is not int or not 1 <= self.epoch <= MAX_U32:
            raise FormatError("cluster.json: epoch must be an integer 1..2^32-1")
        if type(self.kek_version) is not int or not 1 <= self.kek_version <= MAX_U32:
            raise FormatError("cluster.json: kek_version must be an integer 1..2^32-1")
        if self.commitments and len(self.commitments) != self.threshold:
            raise FormatError("cluster.json: one commitment per coefficient (T of them)")

    def node(self, name: str) -> ClusterNodeInfo:
        for x in self.nodes:
            if x.name == name:
                return x
        raise ClusterError(f"cluster {self.cluster_id} has no node {name!r}")

    def by_index(self) -> dict[int, ClusterNodeInfo]:
        return {x.index: x for x in self.nodes}

    def public_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "v": 1,
            "cluster_id": self.cluster_id,
            "region": self.region,
            "threshold": self.threshold,
            "epoch": self.epoch,
            "kek_version": self.kek_version,
            "store": self.store,
            "public_key": self.public_key,
            "nodes": [x.as_dict() for x in self.nodes],
            "commitments": list(self.commitments),
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.public_dict(), indent=1).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes, what: str = CLUSTER_FILE) -> ClusterConfig:
        doc = _json.loads(data, what=what, max_bytes=_MAX_FILE)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("v") != 1:
            raise FormatError(f"{what}: not a keysplit cluster description (v1)")
        try:
            nodes = tuple(ClusterNodeInfo.from_dict(x) for x in doc["nodes"])
            commitments = tuple(_hex(c, _HEX64, "commitment") for c in doc["commitments"])
            cfg = cls(
                cluster_id=str(doc["cluster_id"]),
                region=str(doc["region"]),
                threshold=doc["threshold"],
                nodes=nodes,
                public_key=_hex(doc["public_key"], _HEX64, "public key"),
                epoch=doc["epoch"],
                kek_version=doc.get("kek_version", 1),
                store=str(doc.get("store", DEFAULT_STORE)),
                commitments=commitments,
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise FormatError(f"{what}: malformed ({exc})") from None
        if not _file_name(cfg.store):
            raise FormatError(f"{what}: the store URL is no text this system can open")
        return cfg

    def with_shares(self, public_shares: Mapping[int, str], **changes: Any) -> ClusterConfig:
        nodes = tuple(replace(x, public_share=public_shares[x.index]) for x in self.nodes)
        return replace(self, nodes=nodes, **changes)

    def write(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``DIR/cluster.json`` atomically (public data: mode 0644)."""
        path = Path(directory) / CLUSTER_FILE
        atomic_write(path, self.to_bytes(), mode=0o644)
        return path


def read_cluster(directory: str | os.PathLike[str]) -> ClusterConfig:
    """Parse ``DIR/cluster.json`` strictly."""
    path = Path(directory) / CLUSTER_FILE
    try:
        data = read_bounded(path, _MAX_FILE, str(path), regular=True)
    except FileNotFoundError:
        raise ClusterError(
            f"{path} does not exist", hint="create the cluster with: keysplit cluster create DIR"
        ) from None
    return ClusterConfig.from_bytes(data, str(path))


SUCCESSOR_FILE = "successor.json"
"""``DIR/successor.json``: written by ``keysplit cluster rotate DIR NEW`` when it starts."""


@dataclass(frozen=True)
class Successor:
    """The cluster a rotation moves this cluster's keys to (``DIR/successor.json``): its
    id, its directory (absolute) and this cluster's store tombstone sequence number up to
    which the rotation carried shreds (when it began, until its first run's carry). While
    it exists every shred and legal hold made through ``DIR`` reaches the successor too,
    and the next run carries every shred made after ``since``, then advances it.

    ``held_keyed``: the :func:`keyed_hold_digest` of each legal hold this cluster's store
    had when the last run copied them to the successor, so the next run lifts there the
    holds lifted here since (through a copy of ``DIR`` without this file) and no other.
    ``held``: what code before it recorded instead, the :func:`hold_digest` (keyed by the
    public cluster id: a reader of the file could test candidate subjects); read, honoured
    by the next run's lift, then dropped by its rewrite; never written by this code.

    ``ledger``: the rotation records a check value of every key it moves in
    ``DIR/moved.sqlite`` (:mod:`._moved_ledger`), from its first run on, and carries a shred
    only onto a key it moved. False for a rotation begun by code before the ledger (and
    after such code rewrote the file, which drops the field): its carry then goes by the
    shreds' tombstone marks alone."""

    cluster_id: str
    directory: str
    since: int
    held: frozenset[str] = frozenset()
    ledger: bool = False
    held_keyed: frozenset[str] = frozenset()

    def write(self, directory: str | os.PathLike[str]) -> Path:
        path = Path(directory) / SUCCESSOR_FILE
        doc: dict[str, Any] = {
            "cluster_id": self.cluster_id,
            "directory": self.directory,
            "since": self.since,
        }
        if self.held:
            doc["held"] = sorted(self.held)
        if self.ledger:
            doc["ledger"] = MOVED_FILE
        if self.held_keyed:
            doc["held_keyed"] = sorted(self.held_keyed)
        atomic_write(path, json.dumps(doc, indent=1).encode() + b"\n", mode=0o644)
        return path


_HEX16 = re.compile(r"[0-9a-f]{16}")
_MAX_SUCCESSOR = 32 << 20  # ~1.5 million holds' digests


def hold_digest(cluster_id: str, subject: str) -> str:
    """A legal hold as code before ``held_keyed`` recorded it in ``successor.json``: 8
    bytes of SHA-256 over the cluster id and the subject (hex). Read only: the cluster id
    is public (``cluster.json``), so anyone who reads the directory can test a candidate
    subject against it."""
    data = bytes.fromhex(cluster_id) + subject.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:16]


def keyed_hold_digest(tag: bytes) -> str:
    """A legal hold as ``successor.json`` records it (``held_keyed``): 8 bytes of
    HMAC-SHA256 keyed by the subject's tombstone tag in this cluster (the tag needs the
    subject's PRF output: T nodes and a token allowed the subject), hex. Names no subject,
    and no reader of the directory can test a candidate subject against it."""
    return hmac.digest(tag, b"keysplit cluster rotation copied hold", "sha256")[:8].hex()


def read_successor(directory: str | os.PathLike[str]) -> Successor | None:
    """``DIR/successor.json`` parsed strictly, or None if there is none."""
    path = Path(directory) / SUCCESSOR_FILE
    try:
        data = read_bounded(path, _MAX_SUCCESSOR, str(path), regular=True)
    except FileNotFoundError:
        return None
    doc = _json.loads(data, what=str(path), max_bytes=_MAX_SUCCESSOR)
    try:
        cid, where, since = doc["cluster_id"], doc["directory"], doc["since"]
        held = doc.get("held", [])
        keyed = doc.get("held_keyed", [])
        ledger = "ledger" in doc
    except (KeyError, TypeError, AttributeError):
        raise FormatError(f"{path}: malformed") from None
    if (
        not isinstance(cid, str)
        or not _HEX32.fullmatch(cid)
        or not isinstance(where, str)
        or not where
        or not _file_name(where)
        or type(since) is not int
        or since < 0
        or not isinstance(held, list)
        or not all(isinstance(h, str) and _HEX16.fullmatch(h) for h in held)
        or not isinstance(keyed, list)
        or not all(isinstance(h, str) and _HEX16.fullmatch(h) for h in keyed)
        or (ledger and doc["ledger"] != MOVED_FILE)
    ):
        raise FormatError(f"{path}: malformed")
    return Successor(cid, where, since, frozenset(held), ledger, frozenset(keyed))
