"""Running a key cluster: create (the DKG), status, refresh. The CLI's ``keysplit cluster``.

The orchestrator only relays: it sends each node the round's public parameters, collects
every dealing (public commitments + sub-shares HPKE-sealed to each recipient node's keyring
public key), hands every node the dealings and the sub-shares sealed to it, and checks that
all nodes agree on the cluster public key and on each public share, recomputing them from
the commitments itself. It never sees a sub-share in clear; neither does ``cluster.json``
nor any transcript (the DKG's sealed sub-shares are not kept).

A dealing that does not verify makes the receiving node refuse and name the dealer; the
round is then abandoned (no node keeps anything) and may be run again: this is the
"joint Feldman" DKG without the complaint round, so a faulty dealer stops a round but
cannot make it finish with a key it knows more about than any other dealer.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import _json
from .._fileio import atomic_write, read_bounded
from ..errors import ClusterError, FormatError, IntegrityError, KeysplitError, PermissionDenied
from ..store import open_store
from ..store.base import Lease, check_batch_size
from . import _wire as wire
from ._moved_ledger import MovedLedger, moved_check
from .cluster_client import FLUSH_TAG, NO_TLS, ClusterClient, TlsFiles, node_info, reached_tag
from .cluster_config import (
    CLUSTER_FILE,
    DEFAULT_STORE,
    SUCCESSOR_FILE,
    ClusterConfig,
    ClusterNodeInfo,
    Successor,
    check_node_name,
    check_region,
    check_url,
    hold_digest,
    keyed_hold_digest,
    read_cluster,
    read_successor,
)

__all__ = [
    "NodeStatus",
    "Rotated",
    "abandon_cluster",
    "abort_refresh",
    "cluster_status",
    "create_cluster",
    "refresh_cluster",
    "replace_node",
    "rotate_cluster",
    "shred_subject",
]


def _post(
    url: str, path: str, doc: Any, token: str | None, name: str, tls: TlsFiles, **fields: type
) -> dict[str, Any]:
    """A node's JSON answer, with each of ``fields`` of its type (else a
    :class:`ClusterError` naming the node: a broken or hostile node's answer never reaches
    the caller as a KeyError or TypeError)."""
    try:
        with tls.client(url, token=token, timeout=120.0) as c:
            data, _ = c.request("POST", path, wire.dumps(doc))
    except KeysplitError as exc:
        raise type(exc)(f"node {name}: {exc}", hint=exc.hint) if _plain(exc) else exc from None
    out = wire.loads(data, f"node {name} answer")
    if not isinstance(out, dict):
        raise ClusterError(f"node {name}: malformed answer", node=name)
    for key, kind in fields.items():
        v = out.get(key)
        if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            raise ClusterError(f"node {name}: malformed answer ({key!r})", node=name)
    return out


def _dealt(
    nodes: Sequence[ClusterNodeInfo],
    path: str,
    docs: Mapping[str, Any],
    token: str | None,
    tls: TlsFiles,
) -> tuple[dict[str, dict[str, Any]], dict[int, list[bytes]]]:
    """Each node's dealing answer to ``path`` and its commitments (raw) by index, checked:
    dealt as its own index, hex commitments, a sealed sub-share for every node."""
    deals, raw = {}, {}
    for n in nodes:
        d = _post(
            n.url, path, docs[n.name], token, n.name, tls, dealer=int, commitments=list, sealed=dict
        )
        if d["dealer"] != n.index:
            raise ClusterError(
                f"node {n.name}: dealt as node {d['dealer']}, not {n.index}", node=n.name
            )
        try:
            raw[n.index] = [bytes.fromhex(c) for c in d["commitments"]]
        except (TypeError, ValueError):
            raise ClusterError(f"node {n.name}: malformed dealing", node=n.name) from None
        if not all(isinstance(d["sealed"].get(str(m.index)), str) for m in nodes):
            raise ClusterError(f"node {n.name}: a sub-share is missing", node=n.name)
        deals[n.name] = d
    return deals, raw


CREATING_FILE = "creating.json"
"""``DIR/creating.json``: a ``cluster create`` in progress (id, region, node names and
URLs), removed once every node committed its membership."""


def _read_creating(d: Path) -> tuple[str, list[tuple[str, str]]] | None:
    """(cluster id, [(name, url)]) of ``DIR/creating.json``, or None."""
    path = d / CREATING_FILE
    try:
        limit = 1 << 20
        doc = _json.loads(
            read_bounded(path, limit, str(path), regular=True), what=str(path), max_bytes=limit
        )
        cid = doc["cluster_id"]
        # each name and URL checked as cluster.json's are: a damaged file is no ValueError
        nodes = [(check_node_name(n["name"]), check_url(n["url"])) for n in doc["nodes"]]
    except FileNotFoundError:
        return None
    except (KeyError, TypeError, ValueError):
        raise FormatError(f"{path}: malformed") from None
    if not isinstance(cid, str) or len(cid) != 32:
        raise FormatError(f"{path}: malformed")
    return cid, nodes


def _on_each(
    nodes: Sequence[tuple[str, str]],
    path: str,
    doc: Any,
    token: str | None,
    tls: TlsFiles,
    **fields: type,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """``path`` on every node (name, URL), each whatever the others answer: (answers by
    name, first line of each failure by name)."""
    answers: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    for name, url in nodes:
        try:
            answers[name] = _post(url, path, doc, token, name, tls, **fields)
        except KeysplitError as exc:
            failed[name] = str(exc).split("\n")[0]
    return answers, failed


def _pairs(nodes: Sequence[ClusterNodeInfo]) -> list[tuple[str, str]]:
    return [(n.name, n.url) for n in nodes]


def _abandon_on(
    cid: str,
    nodes: Sequence[tuple[str, str]],
    token: str | None,
    tls: TlsFiles,
    completed: bool = False,
) -> list[str]:
    """Ask each node to erase its uncommitted membership of ``cid`` (``completed``: any
    membership of it); the names of those that had one. A node that refuses or cannot be
    reached is a :class:`ClusterError`."""
    doc: dict[str, Any] = {"cluster_id": cid}
    if completed:
        doc["completed"] = True
    out, failed = _on_each(nodes, "/v1/cluster/dkg/abandon", doc, token, tls, erased=bool)
    erased = [name for name, a in out.items() if a["erased"]]
    if failed:
        done = not completed and any("creation completed" in v for v in failed.values())
        raise ClusterError(
            f"the unfinished cluster {cid} was not abandoned on: "
            + "; ".join(f"{k}: {v}" for k, v in sorted(failed.items())),
            hint="if no cluster.json describes that cluster any more, run it again with "
            "--completed (its shares are erased)"
            if done
            else "run it again once they are reachable",
        )
    return erased


def _commit_created(d: Path, cfg: ClusterConfig, token: str | None, tls: TlsFiles) -> None:
    """Every node commits its membership (``cluster.json`` is written), then
    ``DIR/creating.json`` goes."""
    _commit_all(
        cfg,
        cfg.epoch,
        token,
        tls,
        f"cluster {cfg.cluster_id} is created ({d / CLUSTER_FILE} written), but these nodes "
        "did not commit their membership (they evaluate nothing for it yet): ",
        "run the same keysplit cluster create again once they are reachable",
    )
    (d / CREATING_FILE).unlink(missing_ok=True)


def _commit_all(
    cfg: ClusterConfig, epoch: int, token: str | None, tls: TlsFiles, lead: str, hint: str
) -> None:
    """``dkg/commit`` of ``epoch`` on every node of ``cfg``; a :class:`ClusterError`
    (``lead`` then each node that failed and why) if any failed."""
    doc = {"cluster_id": cfg.cluster_id, "epoch": epoch}
    _, failed = _on_each(_pairs(cfg.nodes), "/v1/cluster/dkg/commit", doc, token, tls)
    if failed:
        raise ClusterError(
            lead + "; ".join(f"{k}: {v}" for k, v in sorted(failed.items())), hint=hint
        )


def abandon_cluster(
    directory: str | os.PathLike[str],
    *,
    cluster_id: str | None = None,
    nodes: Sequence[tuple[str, str]] = (),
    token: str | None = None,
    tls: TlsFiles = NO_TLS,
    completed: bool = False,
) -> tuple[str, list[str]]:
    """Erase, on its nodes, the memberships and region pins an unfinished ``cluster
    create`` left: the one ``DIR/creating.json`` names (then removed), or ``cluster_id`` on
    ``nodes`` (name, URL). Each node erases only a membership whose creation it never
    committed (a completed cluster's share is refused), and unpins its region when no
    membership is left. Returns (cluster id, names of the nodes that had one).

    ``completed`` (with ``cluster_id``): erase a completed membership too, the share
    overwritten, for a cluster no ``cluster.json`` describes any more (gone, or written on
    another host and lost) or one a create cut before ``cluster.json`` left on code before
    the uncommitted marker (:func:`cluster_status` of another cluster on the same nodes
    reports it ``incomplete``). Refused while ``DIR/cluster.json`` describes that cluster.
    Whatever the cluster protected is lost if fewer than T of its shares stay."""
    d = Path(directory)
    if completed and cluster_id is None:
        raise ValueError("completed needs cluster_id and nodes")
    if cluster_id is None:
        if (d / CLUSTER_FILE).exists():
            raise ClusterError(
                f"{d / CLUSTER_FILE} exists: the cluster was created",
                hint="run the same keysplit cluster create again to finish its commits",
            )
        creating = _read_creating(d)
        if creating is None:
            raise ClusterError(
                f"{d / CREATING_FILE} does not exist: no unfinished creation is recorded here",
                hint="name it: --cluster-id ID --node NAME=URL ... (GET /v1/cluster/node lists "
                "a node's clusters; 'pending' marks an unfinished one)",
            )
        cluster_id, nodes = creating
        erased = _abandon_on(cluster_id, nodes, token, tls)
        (d / CREATING_FILE).unlink(missing_ok=True)
        return cluster_id, erased
    if not nodes:
        raise ClusterError("name the nodes the cluster may be on")
    if completed:
        try:
            described = read_cluster(d).cluster_id == cluster_id
        except KeysplitError:  # none there, or not one this can read: not that cluster
            described = False
        if described:
            raise ClusterError(
                f"{d / CLUSTER_FILE} describes cluster {cluster_id}: its memberships are "
                "not abandoned",
                hint="to retire a cluster, move its keys first (keysplit cluster rotate)",
            )
    return cluster_id, _abandon_on(cluster_id, nodes, token, tls, completed)


def _plain(exc: KeysplitError) -> bool:
    try:
        type(exc)("x", hint=None)
    except TypeError:
        return False
    return True


def _round(
    nodes: Sequence[ClusterNodeInfo], params: dict[str, Any], token: str | None, tls: TlsFiles
) -> tuple[dict[str, dict[str, Any]], dict[int, list[bytes]]]:
    """Deal, then finish, on every node; returns each node's finish answer."""
    public = [{k: v for k, v in n.as_dict().items() if k != "public_share"} for n in nodes]
    base = dict(params, nodes=public)
    docs = {n.name: dict(base, me=n.name) for n in nodes}
    deals, raw = _dealt(nodes, "/v1/cluster/dkg/deal", docs, token, tls)
    dealings = {str(n.index): deals[n.name]["commitments"] for n in nodes}
    done = {}
    for n in nodes:
        sealed = {str(d.index): deals[d.name]["sealed"][str(n.index)] for d in nodes}
        doc = dict(base, me=n.name, dealings=dealings, sealed=sealed)
        done[n.name] = _post(
            n.url, "/v1/cluster/dkg/finish", doc, token, n.name, tls, public_shares=dict
        )
    return done, raw


def _agree(
    nodes: Sequence[ClusterNodeInfo],
    done: dict[str, dict[str, Any]],
    expect: dict[int, str],
    commitments: Sequence[bytes],
) -> None:
    """Every node reports the public shares and commitments recomputed here."""
    hexed = [c.hex() for c in commitments]
    for n in nodes:
        got = done[n.name]["public_shares"]
        if {str(k): v for k, v in expect.items()} != got:
            raise ClusterError(f"node {n.name}: disagrees on the public shares", node=n.name)
        if done[n.name].get("commitments") != hexed:
            raise ClusterError(f"node {n.name}: disagrees on the commitments", node=n.name)


def create_cluster(
    directory: str | os.PathLike[str],
    *,
    threshold: int,
    region: str,
    nodes: Sequence[tuple[str, str]],
    store: str | None = None,
    token: str | None = None,
    tls: TlsFiles = NO_TLS,
) -> ClusterConfig:
    """Run the DKG among the named (unsealed) node services; write ``DIR/cluster.json``.
    ``tls``: the CA bundle and client certificate of ``https://`` nodes.

    Resumable: ``DIR/creating.json`` records the cluster id and nodes before the round.
    Each node keeps its membership uncommitted (it evaluates nothing for it) until
    ``cluster.json`` is written and this function commits it. Run again after an
    interruption: with ``cluster.json`` written it commits the remaining nodes; without, it
    first erases the memberships (and region pins) the cut round left on the nodes it
    recorded (before checking the nodes' regions: the rerun may name another region), then
    runs the DKG again under the same id. :func:`abandon_cluster` erases
    them instead."""
    from . import _cluster_math as cm  # lazily: the cluster extra

    check_region(region)
    d = Path(directory)
    creating = _read_creating(d)
    if (d / CLUSTER_FILE).exists():
        done_cfg = read_cluster(d)
        if creating is None or creating[0] != done_cfg.cluster_id:
            raise ClusterError(f"{d / CLUSTER_FILE} exists", hint="a directory holds one cluster")
        _commit_created(d, done_cfg, token, tls)  # the last run was cut during its commits
        return done_cfg
    names = [check_node_name(n) for n, _ in nodes]
    if len(set(names)) != len(names):
        raise ValueError("node names must be unique")
    if not 2 <= threshold <= len(nodes):
        raise ValueError("--threshold must be between 2 and the number of nodes")
    if creating is not None:
        # a run cut before cluster.json: erase what it left first (its memberships and
        # region pins, so a rerun may name another region or other nodes); same id
        _abandon_on(creating[0], creating[1], token, tls)
    infos = []
    for i, (name, url) in enumerate(nodes, start=1):
        try:
            doc = node_info(url, token=token, tls=tls)
        except KeysplitError as exc:
            raise ClusterError(
                f"node {name} ({url}) is unreachable: {exc}", hint=exc.hint
            ) from None
        if doc.get("sealed"):
            raise ClusterError(f"node {name} is sealed", hint="its custodians unseal it first")
        pinned = doc.get("region")
        if pinned is not None and pinned != region:
            raise ClusterError(f"node {name} serves region {pinned!r}, not {region!r}")
        infos.append(
            ClusterNodeInfo(
                name, i, url, str(doc["keyring_id"]), str(doc["hpke_public_key"]), "00" * 32
            )
        )
    if len({n.keyring_id for n in infos}) != len(infos):
        raise ClusterError("two nodes serve the same keyring")
    cid = secrets.token_hex(16) if creating is None else creating[0]
    d.mkdir(parents=True, exist_ok=True)
    record = {
        "cluster_id": cid,
        "region": region,
        "nodes": [{"name": n, "url": u} for n, u in nodes],
    }
    atomic_write(d / CREATING_FILE, json.dumps(record, indent=1).encode() + b"\n", mode=0o644)
    params = {
        "cluster_id": cid,
        "region": region,
        "threshold": threshold,
        "epoch": 1,
        "store": store or DEFAULT_STORE,
    }
    done, dealings = _round(infos, params, token, tls)
    commitments = cm.combined(dealings)
    expect = {
        i: p.hex() for i, p in cm.public_shares(commitments, [n.index for n in infos]).items()
    }
    _agree(infos, done, expect, commitments)
    pk = cm.public_key(dealings).hex()
    if any(done[n.name].get("public_key") != pk for n in infos):
        raise ClusterError("the nodes disagree on the cluster public key")
    cfg = ClusterConfig(
        cid,
        region,
        threshold,
        tuple(infos),
        pk,
        store=store or DEFAULT_STORE,
        commitments=tuple(c.hex() for c in commitments),
    ).with_shares(expect)
    open_store(cfg.store, keyring_id=cid, home=d, create=True)
    cfg.write(d)
    _commit_created(d, cfg, token, tls)
    return cfg


def refresh_cluster(
    directory: str | os.PathLike[str], *, token: str | None = None, tls: TlsFiles = NO_TLS
) -> ClusterConfig:
    """Re-randomize every node's share (same cluster key); every node must take part.
    Refused while ``DIR/creating.json`` records this cluster's create as unfinished."""
    from . import _cluster_math as cm  # lazily: the cluster extra

    cfg = read_cluster(directory)
    creating = _read_creating(Path(directory))
    if creating is not None and creating[0] == cfg.cluster_id:
        # a create cut during its commits: a refresh would promote the new epoch on a node
        # whose membership stays uncommitted (it would evaluate nothing)
        raise ClusterError(
            f"cluster {cfg.cluster_id} is not fully created ({Path(directory) / CREATING_FILE} "
            "exists: some nodes never committed their membership)",
            hint="run the same keysplit cluster create again to finish its commits first",
        )
    params = {
        "cluster_id": cfg.cluster_id,
        "region": cfg.region,
        "threshold": cfg.threshold,
        "epoch": cfg.epoch,
        "store": cfg.store,
        "refresh": True,
    }
    done, dealings = _round(cfg.nodes, params, token, tls)
    commitments = cm.refresh_commitments([bytes.fromhex(c) for c in cfg.commitments], dealings)
    indices = [n.index for n in cfg.nodes]
    expect = {i: p.hex() for i, p in cm.public_shares(commitments, indices).items()}
    _agree(cfg.nodes, done, expect, commitments)
    new = cfg.with_shares(
        expect, epoch=cfg.epoch + 1, commitments=tuple(c.hex() for c in commitments)
    )
    # Every node staged its new share and still serves the old one: only now, with every
    # node done, does cluster.json name the new epoch and each node drop its old share.
    new.write(directory)
    _commit_all(
        cfg,
        new.epoch,
        token,
        tls,
        f"cluster {cfg.cluster_id} is at epoch {new.epoch} (cluster.json written), but "
        "these nodes still keep their old share beside the new one: ",
        "run keysplit cluster refresh again once they are reachable",
    )
    return new


def abort_refresh(
    directory: str | os.PathLike[str], *, token: str | None = None, tls: TlsFiles = NO_TLS
) -> list[str]:
    """Erase, on every node, the staged share an unfinished refresh left (the share file
    overwritten, then unlinked); returns the names of the nodes that had one. Each node
    refuses unless it is at the epoch ``cluster.json`` names, so a refresh already written
    to ``cluster.json`` (cut during its commits) is never undone: run it again instead.
    Raises :class:`ClusterError` naming the nodes it could not reach or that refused."""
    cfg = read_cluster(directory)
    doc = {"cluster_id": cfg.cluster_id, "epoch": cfg.epoch}
    path = "/v1/cluster/dkg/abort"
    out, failed = _on_each(_pairs(cfg.nodes), path, doc, token, tls, erased=bool)
    erased = [n.name for n in cfg.nodes if n.name in out and out[n.name]["erased"]]
    if failed:
        raise ClusterError(
            "the staged refresh was not erased on: "
            + "; ".join(f"{k}: {v}" for k, v in sorted(failed.items())),
            hint="run keysplit cluster refresh --abort again once they are reachable",
        )
    return erased


def replace_node(
    directory: str | os.PathLike[str],
    name: str,
    url: str,
    *,
    token: str | None = None,
    tls: TlsFiles = NO_TLS,
) -> ClusterConfig:
    """Give node ``name``'s index (and share) to the fresh, unsealed node service at ``url``,
    from T healthy nodes (share recovery); nothing is re-encrypted, every public share and
    commitment stays as it is. ``cluster.json`` then names the new node's URL and keyring.
    """
    cfg = read_cluster(directory)
    lost = cfg.node(name)
    try:
        doc = node_info(url, token=token, tls=tls)
    except KeysplitError as exc:
        raise ClusterError(f"the new node ({url}) is unreachable: {exc}", hint=exc.hint) from None
    if doc.get("sealed"):
        raise ClusterError("the new node is sealed", hint="its custodians unseal it first")
    pinned = doc.get("region")
    if pinned is not None and pinned != cfg.region:
        raise ClusterError(f"the new node serves region {pinned!r}, not {cfg.region!r}")
    kid = str(doc["keyring_id"])
    if any(n.keyring_id == kid for n in cfg.nodes):
        raise ClusterError("the new node serves a keyring that is already a member")
    new = ClusterNodeInfo(
        name, lost.index, url, kid, str(doc["hpke_public_key"]), lost.public_share
    )
    nodes = tuple(new if n.name == name else n for n in cfg.nodes)
    updated = ClusterConfig(**{**cfg.__dict__, "nodes": nodes})
    held = (doc.get("clusters") or {}).get(cfg.cluster_id)
    if isinstance(held, dict) and held.get("share_ok") is True:
        # a replacement cut after the new node kept its share (before cluster.json was
        # written): the node refuses a second recovery, so finish the job here
        if (held.get("index"), held.get("epoch"), held.get("public_share")) != (
            lost.index,
            cfg.epoch,
            lost.public_share,
        ):
            raise ClusterError(f"the new node ({url}) holds another share of this cluster")
        updated.write(directory)
        return updated
    helpers: list[ClusterNodeInfo] = []
    why: dict[str, str] = {}
    for n in cfg.nodes:
        if n.name == name or len(helpers) == cfg.threshold:
            continue
        try:
            info = node_info(n.url, token=token, tls=tls)
            entry = (info.get("clusters") or {}).get(cfg.cluster_id)
        except KeysplitError as exc:
            why[n.name] = str(exc)
            continue
        if isinstance(entry, dict) and entry.get("share_ok") and entry.get("epoch") == cfg.epoch:
            helpers.append(n)
        else:
            why[n.name] = "sealed, another epoch, or its share does not check"
    if len(helpers) < cfg.threshold:
        raise ClusterError(
            f"need {cfg.threshold} healthy nodes to recover {name}; "
            + "; ".join(f"{k}: {v}" for k, v in sorted(why.items()))
        )
    base = {
        "cluster_id": cfg.cluster_id,
        "epoch": cfg.epoch,
        "lost": lost.index,
        "helpers": [h.index for h in helpers],
        "new_node": {k: v for k, v in new.as_dict().items() if k != "public_share"},
    }
    asks = {h.name: base for h in helpers}
    deals, _ = _dealt(helpers, "/v1/cluster/recover/deal", asks, token, tls)
    dealings = {str(h.index): deals[h.name]["commitments"] for h in helpers}
    blinded = {}
    for h in helpers:
        sealed = {str(d.index): deals[d.name]["sealed"][str(h.index)] for d in helpers}
        doc2 = dict(base, dealings=dealings, sealed=sealed)
        blind = _post(h.url, "/v1/cluster/recover/blind", doc2, token, h.name, tls, sealed=str)
        blinded[str(h.index)] = blind["sealed"]
    done = _post(
        url,
        "/v1/cluster/recover/finish",
        {"cluster": updated.public_dict(), "me": name, "dealings": dealings, "blinded": blinded},
        token,
        name,
        tls,
    )
    if done.get("public_share") != lost.public_share:
        raise ClusterError(f"node {name}: the recovered share does not match")
    updated.write(directory)
    return updated


@dataclass(frozen=True)
class Rotated:
    """What :func:`rotate_cluster` did: data keys moved to the new cluster by this run, and
    subjects it shredded there because they were shredded in the old one (after the
    previous run's carry) and the shred had not reached the new one."""

    moved: int
    shredded: int


def rotate_cluster(
    old_dir: str | os.PathLike[str],
    new_dir: str | os.PathLike[str],
    *,
    token: str | None,
    batch_size: int = 1000,
    tls: TlsFiles = NO_TLS,
) -> Rotated:
    """Move every wrapped data key of the cluster in ``old_dir`` to the (new, already
    created) cluster in ``new_dir``: unwrapped under the old cluster's KEKs, wrapped under
    the new cluster key's (evaluated with DLEQ proofs), in batches. Data keys and records
    do not change; a backend then switches to ``new_dir``. Idempotent (keys already moved
    are kept, and must be equal), so an interrupted rotation is run again.

    Shreds need no pause. The first run records the new cluster as the old one's
    successor (``old_dir/successor.json``, with the old store's tombstone count then) and
    copies the old store's legal holds (every run copies them again, and lifts in the new
    store those it copied before that the old one no longer has: lifted through a copy of
    the old directory without the marker); from then on every shred and hold made through
    ``old_dir`` reaches the new cluster too (:meth:`ClusterClient.shred`). A key shredded
    in the old store while this run moved it, or by a client reading another copy of the
    old directory (without the marker), is carried at the end of every run: a subject
    with a key in the new store, none in the old one and a tombstone in the old store
    since the last run's carry (``successor.json``'s ``since``, then advanced) is shredded
    in the new one if the new store's key is one the rotation moved: each run records a
    check value of every key before it stores it in the new cluster (``old_dir/moved.sqlite``,
    :mod:`._moved_ledger`), so a key written in the new cluster afresh is kept. A shred
    applies to the key it was made against. A rotation begun by code without the ledger
    (``successor.json`` without ``ledger``) carries by the old store's tombstone marks
    alone (:func:`~keysplit.service.cluster_client.reached_tag`: skipped if the shred
    reached the new cluster). Run it again once every backend uses ``new_dir``, before
    retiring the old cluster.
    """
    check_batch_size(batch_size)
    with (
        ClusterClient(old_dir, token=token, ca=tls.ca, cert=tls.cert, key=tls.key) as old,
        ClusterClient(new_dir, token=token, ca=tls.ca, cert=tls.cert, key=tls.key) as new,
    ):
        if new.config.cluster_id == old.config.cluster_id:
            raise ValueError("rotate to another cluster (run keysplit cluster create first)")
        if new.config.region != old.config.region:
            raise ClusterError(
                f"the new cluster is in region {new.config.region!r}, not {old.config.region!r}"
            )
        succ = read_successor(old_dir)
        if succ is not None and succ.cluster_id != new.config.cluster_id:
            raise ClusterError(
                f"cluster {old.config.cluster_id} is being rotated to cluster {succ.cluster_id} "
                f"({succ.directory}), not {new.config.cluster_id}",
                hint=f"finish that rotation, or remove {Path(old_dir) / SUCCESSOR_FILE} "
                "if it was abandoned",
            )
        ostore = old.datakeys.store
        if succ is None:
            onward = new._successors()  # a cycle among NEW's successors is refused here
            back = [c.directory for c in onward if c.config.cluster_id == old.config.cluster_id]
            for c in onward:
                c.close()
            if back:  # rotating back: OLD's marker would then lead to itself
                raise ClusterError(
                    f"cluster {new.config.cluster_id} is being rotated to cluster "
                    f"{old.config.cluster_id} ({back[0]}) itself",
                    hint="remove the successor.json of that rotation if it is finished, "
                    "then run this again",
                )
            succ = Successor(
                new.config.cluster_id,
                str(Path(new_dir).resolve()),
                ostore.state().tombstone_seq,
                ledger=True,
            )
            MovedLedger(old_dir, create=True).close()  # before the marker that names it
            succ.write(old_dir)
        ledger = MovedLedger(old_dir, create=False) if succ.ledger else None
        try:
            return _rotate(old_dir, old, new, succ, ledger, batch_size)
        finally:
            if ledger is not None:
                ledger.close()


def _rotate(
    old_dir: str | os.PathLike[str],
    old: ClusterClient,
    new: ClusterClient,
    succ: Successor,
    ledger: MovedLedger | None,
    batch_size: int,
) -> Rotated:
    """:func:`rotate_cluster` once the successor is recorded: holds, keys, shreds."""
    ostore, ncid = old.datakeys.store, new.config.cluster_id
    _sync_holds(old_dir, old, new, succ, batch_size)
    moved, late, after = 0, 0, ""
    while True:
        # every row: no key is ever stored under version 0, so all are "stale" for it
        rows = ostore.stale_batch(0, after, batch_size)
        if not rows:
            break
        after = rows[-1].subject
        subjects = [r.subject for r in rows]
        raws = old.datakeys.export(subjects, create=False)
        # a key that vanished was shredded meanwhile (and in the new cluster with it)
        keep = [(s, k) for s, k in zip(subjects, raws, strict=True) if k is not None]
        if keep:
            if ledger is not None:  # recorded before NEW stores them: none goes unrecorded
                ledger.add(moved_check(ncid, s, k) for s, k in keep)
            try:
                moved += new.datakeys.adopt([s for s, _ in keep], [k for _, k in keep])
            except IntegrityError:  # NEW holds another key for one: a dead moved one?
                dead = _moved_and_replaced(new, keep, ledger)
                if not dead:
                    raise
                late += sum(new.shred(s) for s in dead)
                moved += new.datakeys.adopt([s for s, _ in keep], [k for _, k in keep])
            # shredded in OLD after the export, before the adopt: a shred whose step in
            # NEW found no key yet (and marked NEW reached) must not leave it there now
            now = ostore.get_many([s for s, _ in keep])
            late += sum(new.shred(s) for s, _ in keep if s not in now)
            # shredded and written afresh in OLD meanwhile (its row changed since the batch
            # was read): NEW may have got the shredded key, which must not stay there
            seen = {r.subject: r for r in rows}
            changed = [(s, k) for s, k in keep if s in now and now[s] != seen[s]]
            if changed:
                late += _replace_renewed(old, new, changed, ledger)
    carried, upto = _carry_shreds(old, new, succ.since, batch_size, ledger)
    cur = read_successor(old_dir)
    if cur is not None and cur.cluster_id == succ.cluster_id and cur.since < upto:
        replace(cur, since=upto).write(old_dir)  # carried: once
    return Rotated(moved, late + carried)


def _moved_and_replaced(
    new: ClusterClient, keep: Sequence[tuple[str, bytes]], ledger: MovedLedger | None
) -> list[str]:
    """Of ``keep`` (a subject and its key in OLD now), those whose key in NEW is another one
    that the rotation moved there (its check value in ``ledger``): OLD's was shredded since
    (through a copy of OLD's directory without the marker, so the shred never reached NEW)
    and the subject written again. That key is dead: it goes from NEW, and OLD's moves in
    its place. A key in NEW that the rotation never moved is a backend's: left, as before."""
    if ledger is None:
        return []
    subjects = [s for s, _ in keep]
    here = new.datakeys.export(subjects, create=False)
    other = {
        s: moved_check(new.config.cluster_id, s, h)
        for (s, k), h in zip(keep, here, strict=True)
        if h is not None and not hmac.compare_digest(h, k)
    }
    known = ledger.known(list(other.values()))
    return [s for s, c in other.items() if c in known]


def _replace_renewed(
    old: ClusterClient,
    new: ClusterClient,
    changed: Sequence[tuple[str, bytes]],
    ledger: MovedLedger | None,
) -> int:
    """Of ``changed`` (a subject and the key this run just stored in NEW, whose row in OLD
    changed since the batch was read), each whose key in OLD is another one now (shredded
    and written afresh meanwhile; its shred found no key in NEW yet) is shredded in NEW,
    and OLD's new key is moved in its place (recorded in the ledger first). A row changed
    with the key kept (written again before the export) is left as it is. Returns how many
    were shredded in NEW."""
    subjects = [s for s, _ in changed]
    current = old.datakeys.export(subjects, create=False)
    stale = [
        (s, k)
        for (s, mine), k in zip(changed, current, strict=True)
        if k is None or not hmac.compare_digest(mine, k)
    ]
    shredded = sum(new.shred(s) for s, _ in stale)
    again = [(s, k) for s, k in stale if k is not None]
    if again:
        if ledger is not None:
            ledger.add(moved_check(new.config.cluster_id, s, k) for s, k in again)
        new.datakeys.adopt([s for s, _ in again], [k for _, k in again])
    return shredded


def _sync_holds(
    old_dir: str | os.PathLike[str],
    old: ClusterClient,
    new: ClusterClient,
    succ: Successor,
    batch_size: int,
) -> None:
    """Copy OLD's legal holds to NEW (one transaction: all or none), and lift in NEW each
    hold the last run copied that OLD no longer has: lifted through a copy of OLD's
    directory without the marker (a lift through OLD with it reached NEW already). A hold
    placed in NEW alone was never copied, so it stays. Records the holds copied now, each
    as a digest keyed by its tombstone tag in OLD (:func:`keyed_hold_digest`: no reader of
    the directory can test a subject against it). Digests an older run recorded under the
    public cluster id (``held``) are honoured for this lift, then dropped from the file.
    A lifted hold OLD holds again by the end of the lift (placed again through OLD
    meanwhile) is placed back in NEW and recorded."""
    ostore, nstore = old.datakeys.store, new.datakeys.store
    held = ostore.legal_holds()
    nstore.set_legal_holds(held, True)
    now = _keyed_digests(old, held, batch_size)
    gone, legacy = succ.held_keyed - set(now.values()), succ.held
    if gone or legacy:
        cid = old.config.cluster_id
        legacy -= {hold_digest(cid, s) for s in held}
        candidates = [s for s in nstore.legal_holds() if s not in now]
        mine = _keyed_digests(old, candidates, batch_size) if gone else {}
        lift = [s for s in candidates if mine.get(s) in gone or hold_digest(cid, s) in legacy]
        if lift:
            nstore.set_legal_holds(lift, False)
            # re-placed through OLD since the read above: its step in NEW (a no-op, NEW still
            # held it) may have come before this lift, which undid it; OLD has it again now.
            # A place through OLD writes NEW again after OLD, so one that wrote OLD after
            # this read is either seen here or writes NEW after the lift
            back = set(ostore.legal_holds())
            again = [s for s in lift if s in back]
            if again:
                nstore.set_legal_holds(again, True)
                now.update((s, mine[s]) for s in again if s in mine)
    cur = read_successor(old_dir)
    keyed = frozenset(now.values())
    if (
        cur is not None
        and cur.cluster_id == succ.cluster_id
        and (cur.held or cur.held_keyed != keyed)
    ):
        replace(cur, held=frozenset(), held_keyed=keyed).write(old_dir)


def _keyed_digests(old: ClusterClient, subjects: Sequence[str], batch_size: int) -> dict[str, str]:
    """Each subject's :func:`keyed_hold_digest` in OLD (one evaluation per batch), but for
    the subjects the token may not evaluate (outside its subject prefix: a hold needs no
    key, so another tenant's token may have placed it): those are left out, found by
    halving a refused batch (a few more evaluations per such subject). A hold left out is
    still copied to NEW; it is only not lifted there by a later run (it stays held in NEW,
    which refuses a shred rather than allowing one)."""
    out: dict[str, str] = {}

    def digest(part: Sequence[str]) -> None:
        try:
            tags = old.datakeys.tombstone_tags(part)
        except PermissionDenied:
            if len(part) > 1:
                digest(part[: len(part) // 2])
                digest(part[len(part) // 2 :])
            return
        out.update((s, keyed_hold_digest(t)) for s, t in zip(part, tags, strict=True))

    for i in range(0, len(subjects), batch_size):
        digest(subjects[i : i + batch_size])
    return out


def _carry_shreds(
    old: ClusterClient,
    new: ClusterClient,
    since: int,
    batch_size: int,
    ledger: MovedLedger | None,
) -> tuple[int, int]:
    """Shred in ``new`` each subject it holds that ``old`` shredded after ``since`` (its
    tombstone tag in the old store) and up to the old store's tombstone sequence number
    now, if ``new``'s key is one the rotation moved (its check value in ``ledger``), or
    without a ledger unless that shred reached ``new`` itself (its last tombstone there is
    followed by its :func:`reached_tag` for ``new``): a key made in ``new`` afresh is
    another key, which the shred never meant. Returns (how many, that sequence number):
    the next run carries only later shreds, so a subject shredded before this run and
    written in ``new`` afresh after it keeps its new key."""
    ostore, nstore = old.datakeys.store, new.datakeys.store
    upto = ostore.state().tombstone_seq
    last: dict[bytes, int] = {}  # each tag's last sequence number in the window
    seq = since
    while seq < upto and (batch := ostore.tombstones_since(seq)):
        last.update((t.tag, t.seq) for t in batch if t.seq <= upto)
        seq = batch[-1].seq
    cid = new.config.cluster_id
    # FLUSH_TAG: a shred whose subject its nodes could not tag: unknowable
    if ledger is None:  # a rotation begun without the ledger: by the marks alone
        tags = {
            t for t, q in last.items() if t != FLUSH_TAG and last.get(reached_tag(cid, t), 0) < q
        }
    else:  # whether it reached NEW or not, NEW's key goes only if it is the one moved
        tags = set(last) - {FLUSH_TAG}
    if not tags:
        return 0, upto
    shredded, after = 0, ""
    while rows := nstore.stale_batch(0, after, batch_size):
        after = rows[-1].subject
        subjects = [r.subject for r in rows]
        gone = ostore.get_many(subjects)
        gone_here = [s for s in subjects if s not in gone]
        if not gone_here:
            continue
        try:
            olds = old.datakeys.tombstone_tags(gone_here)
        except PermissionDenied as e:  # skipping the subject could miss an erasure
            raise PermissionDenied(
                str(e),
                hint="the shred carry must check every subject NEW holds: run cluster rotate "
                "with a token whose prefix covers every subject",
            ) from None
        hit = [s for s, t in zip(gone_here, olds, strict=True) if t in tags]
        if ledger is not None and hit:
            keys = new.datakeys.export(hit, create=False)
            checks = {
                s: moved_check(cid, s, k) for s, k in zip(hit, keys, strict=True) if k is not None
            }
            known = ledger.known(list(checks.values()))
            hit = [s for s, c in checks.items() if c in known]
        shredded += sum(new.shred(s) for s in hit)
    return shredded, upto


@dataclass(frozen=True)
class Shredded:
    """What :func:`shred_subject` did: whether a key existed, the store's tombstone
    sequence number after it, the live holders of the store's leases and those of them that
    had not acknowledged it within the wait."""

    existed: bool
    tombstone_seq: int
    holders: tuple[Lease, ...]
    pending: tuple[Lease, ...]


def shred_subject(
    directory: str | os.PathLike[str],
    subject: str,
    *,
    token: str | None,
    wait: float = 0.0,
    tls: TlsFiles = NO_TLS,
) -> Shredded:
    """``ClusterClient.shred`` (tombstone with the delete, refused under legal hold), then
    up to ``wait`` seconds until every live client caching the cluster's keys has dropped
    the key (:func:`keysplit.keyring.fleet.wait_for_acks`)."""
    from ..keyring import fleet
    from .cluster_client import ClusterClient

    with ClusterClient(directory, token=token, ca=tls.ca, cert=tls.cert, key=tls.key) as c:
        existed = c.shred(subject)
        store = c.datakeys.store
        seq = store.state().tombstone_seq
        pending = fleet.wait_for_acks(store, seq, wait) if existed and wait > 0 else []
        live = store.leases()
    return Shredded(existed, seq, tuple(live), tuple(pending))


@dataclass(frozen=True)
class NodeStatus:
    name: str
    url: str
    reachable: bool
    sealed: bool | None
    region: str | None
    epoch: int | None
    share_ok: bool | None
    error: str | None = None
    staged: int | None = None
    """The epoch of a refresh staged on the node and not committed (nor aborted)."""
    others: dict[str, str] = field(default_factory=dict)
    """The node's memberships of other clusters that need the administrator, by cluster
    id: ``"uncommitted"`` (a ``cluster create`` cut before it committed) or
    ``"incomplete"`` (every member of that cluster is a node of this one and some of them,
    reachable, lack it: a create cut before ``cluster.json`` on code before the uncommitted
    marker). ``keysplit cluster abandon`` clears them (``--completed`` for the latter)."""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def cluster_status(
    directory: str | os.PathLike[str], *, token: str | None = None, tls: TlsFiles = NO_TLS
) -> tuple[ClusterConfig, bool, list[NodeStatus]]:
    """(config, its public shares match its commitments, each node's status)."""
    from . import _cluster_math as cm  # lazily: the cluster extra

    cfg = read_cluster(directory)
    consistent = cm.consistent(cfg)
    out = []
    infos: dict[str, dict[str, Any]] = {}
    for n in cfg.nodes:
        try:
            infos[n.name] = node_info(n.url, token=token, tls=tls)
        except KeysplitError as exc:
            out.append(NodeStatus(n.name, n.url, False, None, None, None, None, str(exc)))
    others = _other_memberships(cfg, infos)
    for n in cfg.nodes:
        if n.name not in infos:
            continue
        doc = infos[n.name]
        entry = (doc.get("clusters") or {}).get(cfg.cluster_id)
        staged = entry.get("staged") if isinstance(entry, dict) else None
        left = staged.get("epoch") if isinstance(staged, dict) else None
        left = left if type(left) is int else None
        if (
            isinstance(entry, dict)
            and isinstance(staged, dict)
            and staged.get("epoch") == cfg.epoch != entry.get("epoch")
        ):
            # its refresh to this epoch is staged but not committed: it answers for it
            note = "the refresh to this epoch is not committed here: run cluster refresh again"
            entry = dict(staged, error=staged.get("error") or note)
        if not isinstance(entry, dict) or "epoch" not in entry:
            err = (entry or {}).get("error") if isinstance(entry, dict) else None
            out.append(
                NodeStatus(
                    n.name,
                    n.url,
                    True,
                    bool(doc.get("sealed")),
                    doc.get("region"),
                    None,
                    False,
                    err or "not a member of this cluster",
                    left,
                    others.get(n.name, {}),
                )
            )
            continue
        ok = entry.get("share_ok")
        same = entry.get("public_share") == n.public_share and entry.get("epoch") == cfg.epoch
        share_ok = None if ok is None and same else bool(ok) and same
        err = entry.get("error")
        if not same:
            err = f"node at epoch {entry.get('epoch')} with another public share"
        elif entry.get("pending"):
            share_ok = False  # the node evaluates nothing for it yet
            err = (
                "its membership was never committed (cluster create was cut): run the same "
                "keysplit cluster create again"
            )
        elif left is not None and left != cfg.epoch and not err:
            err = (
                f"a refresh to epoch {left} is staged here, not committed: run keysplit "
                "cluster refresh again, or keysplit cluster refresh --abort to erase it"
            )
        out.append(
            NodeStatus(
                n.name,
                n.url,
                True,
                bool(doc.get("sealed")),
                doc.get("region"),
                entry.get("epoch"),
                share_ok,
                err,
                left,
                others.get(n.name, {}),
            )
        )
    order = {n.name: i for i, n in enumerate(cfg.nodes)}
    return cfg, consistent, sorted(out, key=lambda x: order[x.name])


def _other_memberships(
    cfg: ClusterConfig, infos: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, str]]:
    """:attr:`NodeStatus.others` of each node, from the nodes' answers (``infos``)."""
    held: dict[str, set[str]] = {}  # cluster id -> keyring ids of the nodes that hold it
    kid = {n.name: n.keyring_id for n in cfg.nodes}
    for name, doc in infos.items():
        for cid, entry in (doc.get("clusters") or {}).items():
            if isinstance(entry, dict):
                held.setdefault(cid, set()).add(kid[name])
    asked = {kid[name] for name in infos}
    out: dict[str, dict[str, str]] = {}
    for name, doc in infos.items():
        for cid, entry in (doc.get("clusters") or {}).items():
            if cid == cfg.cluster_id or not isinstance(entry, dict):
                continue
            members = entry.get("members")
            if entry.get("pending"):
                out.setdefault(name, {})[cid] = "uncommitted"
            elif (
                isinstance(members, list)
                and set(members) <= asked
                and not set(members) <= held[cid]
            ):
                out.setdefault(name, {})[cid] = "incomplete"
    return out
