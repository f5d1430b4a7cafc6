"""A key-cluster node inside ``keysplit serve``: DKG, refresh and DPRF evaluation endpoints.

Every node is an ordinary keyring served by ``keysplit serve`` and unsealed by its own
custodians. Its share of a cluster key lives in its keyring directory::

    cluster/node.json        {"region": R}: pinned when the node first joins a cluster
    cluster/<id>.json        the cluster's public description (as DIR/cluster.json) + index
    cluster/<id>.share       the share, HPKE-sealed to the node's keyring public key
    cluster/<id>.json.next   a refresh's next epoch (description and share), staged:
    cluster/<id>.share.next  kept beside the current ones until the administrator commits
                             (or aborts: both erased, the share overwritten first)
    cluster/<id>.pending     a membership whose creation is not committed yet: written
                             before the share, removed by the coordinator's commit once
                             cluster.json exists; until then the node evaluates nothing
                             for it and the administrator may abandon it

The share file opens only through the unsealed keyring (:meth:`UnsealedKeyring.hpke_open`),
so a disk thief gets as little as from the keyring file itself; its HPKE ``info`` binds
the keyring id, cluster id, region, node index and epoch, so a public file edited to
another region or index makes the share refuse to open rather than serve elsewhere.

Endpoints (JSON unless noted; docs/API.md "Key cluster")::

    GET  /v1/cluster/node          public: keyring id and key, region, clusters, share check
    POST /v1/cluster/dkg/deal      admin: deal (or, with "refresh", deal a zero polynomial)
    POST /v1/cluster/dkg/finish    admin: open + verify sub-shares, keep the (new) share
    POST /v1/cluster/dkg/commit    admin: a refresh's staged epoch replaces the current one
    POST /v1/cluster/dkg/abort     admin: erase what an unfinished refresh staged
    POST /v1/cluster/dkg/abandon   admin: erase a membership whose creation never completed
                                   (with "completed": true, any membership of the cluster)
    POST /v1/cluster/eval          token ("datakey" on every subject): batch frame in/out

Admin requests come from the Unix-socket peer (filesystem permissions vouch for it, as for
``seal``) or carry a token allowed ``cluster``. The evaluation endpoint hashes each subject
itself (NFC, :mod:`keysplit.names`): it never multiplies a point a client sent, so a
client cannot use it as a generic ``x -> s_i*x`` oracle on points of its choosing, and the
token's subject prefix is checked on the very string that is hashed. Every evaluation is
audited (token, cluster, count, subjects).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _json, names
from .._fileio import atomic_write, erase_file, read_bounded
from ..audit import events as ev
from ..errors import ClusterError, FormatError, IntegrityError, KeysplitError, SealedError
from ..keyring import UnsealedKeyring, hpke_seal
from . import _wire as wire
from .cluster_config import ClusterConfig, ClusterNodeInfo, check_node_name, check_region

if TYPE_CHECKING:
    from ..hazmat.ristretto import Scalar
    from .core import KeyService, Request, Response

__all__ = ["ClusterNode", "subshare_info"]

CLUSTER_DIR = "cluster"
SUBSHARE_LABEL = b"keysplit cluster subshare v1\x00"
SHARE_LABEL = b"keysplit cluster share v1\x00"
SHARE_MAGIC = b"KSCS\x01"
ADMIN_PATHS = frozenset(
    {
        "/v1/cluster/dkg/deal",
        "/v1/cluster/dkg/finish",
        "/v1/cluster/dkg/commit",
        "/v1/cluster/dkg/abort",
        "/v1/cluster/dkg/abandon",
    }
)
PENDING = ".pending"
"""Suffix of the marker of a membership whose creation was not committed."""
STAGED = ".next"
"""Suffix of a refresh's staged files. A refresh round changes no node's share: each node
stages its next-epoch share and keeps serving the current one (and, for a client that has
the new ``cluster.json``, the staged one) until the administrator commits the epoch, which
it does only after every node finished and agreed. A round cut after some nodes finished
used to leave the old and the new polynomial with fewer than T shares each (the cluster
key gone, with N < 2T - 1) or a ``cluster.json`` no quorum answered for."""
_MAX_DESCRIPTION = 4 << 20
"""Largest ``<id>.json`` a node reads (as ``cluster.json``): refused by size before reading."""
_MAX_SEALED_SHARE = 4096
"""Largest ``<id>.share`` a node reads: an HPKE-sealed 32-byte share is under 200 bytes."""
PUBLIC_PATHS = frozenset({"/v1/cluster/node"})


def subshare_info(
    cluster_id: str, epoch: int, dealer: int, recipient: int, recipient_keyring: str
) -> bytes:
    """HPKE ``info`` of one sub-share: it opens only for that cluster, epoch, pair and keyring."""
    return (
        SUBSHARE_LABEL
        + bytes.fromhex(cluster_id)
        + struct.pack(">IBB", epoch, dealer, recipient)
        + bytes.fromhex(recipient_keyring)
    )


def _share_info(keyring_id: str, cfg: ClusterConfig, index: int) -> bytes:
    return (
        SHARE_LABEL
        + bytes.fromhex(keyring_id)
        + bytes.fromhex(cfg.cluster_id)
        + struct.pack(">IB", cfg.epoch, index)
        + cfg.region.encode()
    )


def _check_cid(cid: object) -> None:
    """A request's cluster id is 32 lowercase hex digits (it becomes a file name here)."""
    if not isinstance(cid, str) or len(cid) != 32 or not set(cid) <= set("0123456789abcdef"):
        raise FormatError("cluster id must be 32 hex digits")


def _params(doc: Mapping[str, Any]) -> tuple[str, str, int, list[ClusterNodeInfo], int]:
    """(cluster id, region, threshold, nodes, epoch) of a deal/finish request, checked."""
    try:
        cid = str(doc["cluster_id"])
        region = check_region(str(doc["region"]))
        threshold = doc["threshold"]
        epoch = doc.get("epoch", 1)
        nodes = [ClusterNodeInfo.from_dict(dict(n, public_share="00" * 32)) for n in doc["nodes"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"cluster request: {exc}") from None
    ClusterConfig(cid, region, threshold, tuple(nodes), "00" * 32, epoch=epoch)  # validates
    return cid, region, threshold, nodes, epoch


def _digest(doc: Mapping[str, Any]) -> str:
    keep = {k: doc.get(k) for k in ("cluster_id", "region", "threshold", "epoch", "nodes", "me")}
    keep["refresh"] = bool(doc.get("refresh"))
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()


def _b64(v: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(v), validate=True)
    except (ValueError, binascii.Error):
        raise FormatError(f"cluster request: bad {what} encoding") from None


class ClusterNode:
    """The cluster endpoints of one :class:`KeyService` (same thread, no locks)."""

    def __init__(self, service: KeyService, response: type[Response]) -> None:
        self._svc = service
        self._response = response  # core's Response (passed in: no import circle)
        self.dir = Path(service.directory) / CLUSTER_DIR
        self._shares: dict[str, tuple[int, Scalar]] = {}  # cluster id -> (epoch, share)
        self._pending: dict[str, tuple[str, list[bytes]]] = {}  # id -> (params digest, mine)

    def routes(self) -> dict[tuple[str, str], Callable[[Request], Response]]:
        return {
            ("GET", "/v1/cluster/node"): self._node,
            ("POST", "/v1/cluster/dkg/deal"): self._deal,
            ("POST", "/v1/cluster/dkg/finish"): self._finish,
            ("POST", "/v1/cluster/dkg/commit"): self._commit,
            ("POST", "/v1/cluster/dkg/abort"): self._abort,
            ("POST", "/v1/cluster/dkg/abandon"): self._abandon,
            ("POST", "/v1/cluster/eval"): self._eval,
        }

    def _json(self, status: int, obj: Any) -> Response:
        return self._response(status, wire.dumps(obj))

    def forget(self) -> None:
        """Drop every share held in memory (the service sealed)."""
        self._shares.clear()
        self._pending.clear()

    # -- state on disk --------------------------------------------------------------------

    def region(self) -> str | None:
        try:
            raw = read_bounded(self.dir / "node.json", 4096, "cluster/node.json", regular=True)
            doc = _json.loads(raw, what="cluster/node.json", max_bytes=4096)
        except FileNotFoundError:
            return None
        r = doc.get("region") if isinstance(doc, dict) else None
        if not isinstance(r, str):
            raise FormatError(f"{self.dir / 'node.json'}: malformed")
        return r

    def _pin_region(self, region: str) -> None:
        pinned = self.region()
        if pinned is None:
            self.dir.mkdir(mode=0o700, exist_ok=True)
            atomic_write(self.dir / "node.json", json.dumps({"region": region}).encode() + b"\n")
        elif pinned != region:
            raise ClusterError(f"this node serves region {pinned!r}, not {region!r}")

    def pending(self, cid: str) -> bool:
        """Whether this node's membership of ``cid`` is one whose creation never committed."""
        return (self.dir / f"{cid}{PENDING}").exists()

    def _config(self, cid: str, staged: bool = False) -> tuple[ClusterConfig, int]:
        """The stored public description of cluster ``cid`` and this node's index in it
        (``staged``: a refresh's next epoch, not yet committed)."""
        _check_cid(cid)  # it names files: nothing but the id may reach the path
        path = self.dir / f"{cid}.json{STAGED if staged else ''}"
        try:
            data = read_bounded(path, _MAX_DESCRIPTION, str(path), regular=True)
        except FileNotFoundError:
            raise ClusterError(f"this node is not a member of cluster {cid}") from None
        cfg = ClusterConfig.from_bytes(data, str(path))
        doc = _json.loads(data, what=str(path), max_bytes=_MAX_DESCRIPTION)
        me = doc.get("me") if isinstance(doc, dict) else None
        if not isinstance(me, str) or me not in {x.name for x in cfg.nodes}:
            raise FormatError(f"{path}: does not name this node")
        return cfg, cfg.node(str(me)).index

    def _staged(self, cid: str, epoch: object) -> tuple[ClusterConfig, int] | None:
        """The staged description of cluster ``cid`` if it is at ``epoch``."""
        if not (self.dir / f"{cid}.json{STAGED}").exists():
            return None
        cfg, index = self._config(cid, staged=True)
        return (cfg, index) if type(epoch) is int and cfg.epoch == epoch else None

    def _promote(self, cid: str, by: str) -> None:
        """Make the staged epoch of ``cid`` the current one and drop the old share.

        Copies first, then unlinks the staged files: a crash in between leaves the staged
        epoch servable and a second commit finishes the move."""
        staged_json = self.dir / f"{cid}.json{STAGED}"
        staged_share = self.dir / f"{cid}.share{STAGED}"
        try:
            doc = read_bounded(staged_json, _MAX_DESCRIPTION, str(staged_json), regular=True)
            sealed = read_bounded(staged_share, _MAX_SEALED_SHARE, str(staged_share), regular=True)
        except FileNotFoundError:
            raise ClusterError(f"this node has no staged epoch of cluster {cid}") from None
        atomic_write(self.dir / f"{cid}.share", sealed)
        atomic_write(self.dir / f"{cid}.json", doc)
        self._shares.pop(cid, None)
        staged_share.unlink()
        staged_json.unlink()
        self._shares.pop(cid + STAGED, None)
        epoch = ClusterConfig.from_bytes(doc, str(staged_json)).epoch
        self._svc._audit(ev.ClusterCommit(cluster=cid, epoch=epoch, by=by))

    def _write_state(
        self,
        cfg: ClusterConfig,
        me: str,
        share: bytes,
        kr: UnsealedKeyring,
        staged: bool = False,
    ) -> None:

        from . import _cluster_math as cm  # lazily: the cluster extra

        index = cfg.node(me).index
        kid = self._svc.keyring.keyring_id
        sealed = hpke_seal(kr.public_key, SHARE_MAGIC + share, _share_info(kid, cfg, index))
        self.dir.mkdir(mode=0o700, exist_ok=True)
        doc = cfg.public_dict()
        doc["me"] = me
        # Share first: a crash between the two leaves a share the old description cannot
        # open (epoch in its info), which status reports, never a wrong answer.
        suffix = STAGED if staged else ""
        atomic_write(self.dir / f"{cfg.cluster_id}.share{suffix}", sealed)
        atomic_write(
            self.dir / f"{cfg.cluster_id}.json{suffix}", json.dumps(doc, indent=1).encode()
        )
        self._shares[cfg.cluster_id + suffix] = (cfg.epoch, cm.share_of(share))

    def _share(
        self, cfg: ClusterConfig, index: int, kr: UnsealedKeyring, staged: bool = False
    ) -> Scalar:

        from . import _cluster_math as cm  # lazily: the cluster extra

        key = cfg.cluster_id + (STAGED if staged else "")
        held = self._shares.get(key)
        if held is not None and held[0] == cfg.epoch:
            return held[1]
        path = self.dir / f"{cfg.cluster_id}.share{STAGED if staged else ''}"
        try:
            sealed = read_bounded(path, _MAX_SEALED_SHARE, str(path), regular=True)
        except FileNotFoundError:
            raise ClusterError(f"this node lost its share of cluster {cfg.cluster_id}") from None
        try:
            plain = kr.hpke_open(sealed, _share_info(self._svc.keyring.keyring_id, cfg, index))
        except IntegrityError:
            raise ClusterError(
                f"the share of cluster {cfg.cluster_id} does not open for epoch {cfg.epoch}",
                hint="the node's cluster files were altered or a refresh was interrupted",
            ) from None
        if len(plain) != len(SHARE_MAGIC) + 32 or not plain.startswith(SHARE_MAGIC):
            raise ClusterError(f"the share file of cluster {cfg.cluster_id} is malformed")
        try:
            share = cm.share_of(plain[len(SHARE_MAGIC) :])
        except FormatError:
            raise ClusterError(f"the share of cluster {cfg.cluster_id} is malformed") from None
        self._shares[key] = (cfg.epoch, share)
        return share

    # -- authorization ----------------------------------------------------------------------

    def _unsealed(self) -> UnsealedKeyring:
        kr = self._svc._kr
        if kr is None:
            raise SealedError(
                "the node is sealed", hint="its custodians run: keysplit unseal DIR --server URL"
            )
        return kr

    def _admin(self, req: Request, region: str | None = None) -> str:
        """Who makes this admin request: the Unix-socket peer, or a token allowed
        ``cluster``. A token pinned to a region (``token add --region``) is refused by a
        node pinned to another, and for a round (``region``) of another, as evaluations
        refuse it: a token of one region must not run or erase another region's rounds."""
        if req.local and "authorization" not in req.headers:
            self._unsealed()
            return "unix socket peer"
        pol = self._svc._authorize(req, "cluster")
        for r in (self.region(), region):
            if pol.region and r is not None and r != pol.region:
                raise ClusterError(f"token {pol.name!r} is for region {pol.region!r}, not {r!r}")
        return f"token {pol.name}"

    # -- endpoints ---------------------------------------------------------------------------

    def _describe(
        self, cfg: ClusterConfig, index: int, kr: UnsealedKeyring | None, staged: bool = False
    ) -> dict[str, Any]:
        """Public facts of this node's (current or staged) share of ``cfg``; with the
        keyring unsealed, whether the share opens and matches its public share."""

        from . import _cluster_math as cm  # lazily: the cluster extra

        entry: dict[str, Any] = {
            "region": cfg.region,
            "index": index,
            "epoch": cfg.epoch,
            "public_share": cfg.by_index()[index].public_share,
            "share_ok": None,
            # whom the cluster counts on: a status of another cluster on the same nodes
            # tells a membership some of them lack (a create cut before cluster.json)
            "members": sorted(n.keyring_id for n in cfg.nodes),
        }
        if kr is not None:
            try:
                s = self._share(cfg, index, kr, staged=staged)
                entry["share_ok"] = cm.base_point(s).hex() == entry["public_share"]
            except ClusterError as exc:
                entry["share_ok"] = False
                entry["error"] = str(exc)
        return entry

    def _node(self, req: Request) -> Response:
        kr = self._svc._kr
        clusters: dict[str, Any] = {}
        for path in sorted(self.dir.glob("*.json")) if self.dir.is_dir() else []:
            if path.name == "node.json":
                continue
            try:
                cfg, index = self._config(path.stem)
                entry = self._describe(cfg, index, kr)
                if self.pending(cfg.cluster_id):
                    entry["pending"] = True  # its creation never committed here
                if (self.dir / f"{cfg.cluster_id}.json{STAGED}").exists():
                    # a refresh staged here and not committed yet (it answers for both)
                    entry["staged"] = self._describe(*self._config(cfg.cluster_id, True), kr, True)
            except KeysplitError as exc:
                clusters[path.stem] = {"error": str(exc)}
                continue
            clusters[cfg.cluster_id] = entry
        m = self._svc.keyring
        return self._json(
            200,
            {
                "keyring_id": m.keyring_id,
                "hpke_public_key": m.public_key.hex(),
                "sealed": kr is None,
                "region": self.region(),
                "clusters": clusters,
            },
        )

    def _request_doc(self, req: Request) -> tuple[dict[str, Any], ClusterNodeInfo]:
        doc = wire.loads(req.body)
        if not isinstance(doc, dict):
            raise FormatError("cluster request must be a JSON object")
        _, _, _, nodes, _ = _params(doc)
        me = check_node_name(str(doc.get("me", "")))
        mine = next((n for n in nodes if n.name == me), None)
        m = self._svc.keyring
        if mine is None or mine.keyring_id != m.keyring_id:
            raise ClusterError(f"node {me!r}: this service serves keyring {m.keyring_id}")
        if mine.hpke_public_key != m.public_key.hex():
            raise ClusterError(f"node {me!r}: the request names another keyring public key")
        return doc, mine

    def _deal(self, req: Request) -> Response:

        from . import _cluster_math as cm  # lazily: the cluster extra

        self._admin(req)
        doc, mine = self._request_doc(req)
        cid, region, threshold, nodes, epoch = _params(doc)
        by = self._admin(req, region)
        refresh = bool(doc.get("refresh"))
        pinned = self.region()
        if pinned is not None and pinned != region:
            raise ClusterError(f"node {mine.name!r} serves region {pinned!r}, not {region!r}")
        if refresh:
            cfg, index = self._config(cid)
            if self.pending(cid):  # a refresh would promote its epoch and leave it pending
                raise ClusterError(
                    f"node {mine.name!r}: the creation of cluster {cid} was not committed here",
                    hint="run the same keysplit cluster create again to finish it first",
                )
            if cfg.epoch != epoch and self._staged(cid, epoch) is not None:
                # the last refresh was committed in cluster.json but not here: finish it
                self._promote(cid, by)
                cfg, index = self._config(cid)
            if cfg.epoch != epoch or index != mine.index:
                raise ClusterError(f"node {mine.name!r} is at epoch {cfg.epoch}, not {epoch}")
        elif (self.dir / f"{cid}.json").exists():
            raise ClusterError(f"node {mine.name!r} is already a member of cluster {cid}")
        commitments, subs = cm.deal(mine.index, threshold, [n.index for n in nodes], zero=refresh)
        sealed = {
            str(n.index): base64.b64encode(
                hpke_seal(
                    bytes.fromhex(n.hpke_public_key),
                    subs[n.index],
                    subshare_info(cid, epoch, mine.index, n.index, n.keyring_id),
                )
            ).decode()
            for n in nodes
        }
        self._pending[cid] = (_digest(doc), commitments)
        self._svc._audit(
            ev.ClusterDeal(cluster=cid, region=region, refresh=refresh, epoch=epoch, by=by)
        )
        return self._json(
            200,
            {"dealer": mine.index, "commitments": [c.hex() for c in commitments], "sealed": sealed},
        )

    def _finish(self, req: Request) -> Response:

        from . import _cluster_math as cm  # lazily: the cluster extra

        self._admin(req)
        kr = self._unsealed()
        doc, mine = self._request_doc(req)
        cid, region, threshold, nodes, epoch = _params(doc)
        by = self._admin(req, region)
        refresh = bool(doc.get("refresh"))
        pending = self._pending.get(cid)
        if pending is None or pending[0] != _digest(doc):
            raise ClusterError(f"node {mine.name!r} dealt no matching round for cluster {cid}")
        byname = {n.index: n.name for n in nodes}
        dealings_doc, sealed_doc = doc.get("dealings"), doc.get("sealed")
        if not isinstance(dealings_doc, dict) or not isinstance(sealed_doc, dict):
            raise FormatError("finish request needs 'dealings' and 'sealed'")
        dealings: dict[int, list[bytes]] = {}
        subshares: dict[int, bytes] = {}
        for n in nodes:
            raw = dealings_doc.get(str(n.index))
            if not isinstance(raw, list) or len(raw) != threshold:
                raise ClusterError(f"node {n.name!r}: missing or malformed dealing", node=n.name)
            try:
                dealings[n.index] = [bytes.fromhex(str(c)) for c in raw]
            except ValueError:
                raise ClusterError(f"node {n.name!r}: malformed dealing", node=n.name) from None
            info = subshare_info(cid, epoch, n.index, mine.index, mine.keyring_id)
            try:
                sealed = _b64(sealed_doc.get(str(n.index)), "sealed")
                subshares[n.index] = kr.hpke_open(sealed, info)
            except IntegrityError:
                raise ClusterError(
                    f"node {n.name!r}: its sub-share does not open here", node=n.name
                ) from None
        if dealings[mine.index] != pending[1]:
            raise ClusterError(f"node {mine.name!r}: the round carries another dealing of mine")
        del self._pending[cid]
        indices = [n.index for n in nodes]
        try:
            if refresh:
                old, index = self._config(cid)
                base = self._share(old, index, kr)
                share = cm.refresh(index, base.to_bytes(), dealings, subshares)
                commitments = cm.refresh_commitments(
                    [bytes.fromhex(c) for c in old.commitments], dealings
                )
            else:
                share = cm.finish(mine.index, dealings, subshares)
                commitments = cm.combined(dealings)
        except ClusterError as exc:  # name the dealer at fault, not its index
            who = byname.get(exc.node, "?") if isinstance(exc.node, int) else "?"
            raise ClusterError(f"node {who!r}: {exc}", node=who) from None
        shares = {i: p.hex() for i, p in cm.public_shares(commitments, indices).items()}
        hexed = tuple(c.hex() for c in commitments)
        if refresh:
            cfg = old.with_shares(shares, epoch=epoch + 1, commitments=hexed)
        else:
            cfg = ClusterConfig(
                cid,
                region,
                threshold,
                tuple(nodes),
                cm.public_key(dealings).hex(),
                store=str(doc.get("store") or "sqlite:cluster-keys.sqlite"),
                commitments=hexed,
            ).with_shares(shares)
            # the marker first: a crash from here on leaves a membership it can abandon
            self.dir.mkdir(mode=0o700, exist_ok=True)
            atomic_write(self.dir / f"{cid}{PENDING}", b"{}\n")
            self._pin_region(region)
        if cm.base_point(share).hex() != shares[mine.index]:
            raise ClusterError(f"node {mine.name!r}: the new share does not match the commitments")
        self._write_state(cfg, mine.name, share, kr, staged=refresh)
        self._svc._audit(
            (ev.ClusterRefresh if refresh else ev.ClusterJoin)(
                cluster=cid,
                region=region,
                epoch=cfg.epoch,
                index=mine.index,
                dealers=[byname[i] for i in sorted(dealings)],
                by=by,
            )
        )
        return self._json(
            200,
            {
                "index": mine.index,
                "epoch": cfg.epoch,
                "public_key": cfg.public_key,
                "public_shares": {str(k): v for k, v in shares.items()},
                "commitments": list(hexed),
            },
        )

    def _id_request(self, req: Request) -> tuple[str, str, dict[str, Any]]:
        """(who, cluster id, the JSON object) of an unsealed node's admin request naming a
        cluster (commit, abort, abandon)."""
        by = self._admin(req)
        self._unsealed()
        doc = wire.loads(req.body)
        if not isinstance(doc, dict):
            raise FormatError("cluster request must be a JSON object")
        return by, str(doc.get("cluster_id", "")), doc

    def _epoch_request(self, req: Request) -> tuple[str, str, Any, ClusterConfig]:
        """(who, cluster id, epoch as sent, this node's current description) of an admin
        request ``{"cluster_id", "epoch"}`` (commit, abort)."""
        by, cid, doc = self._id_request(req)
        return by, cid, doc.get("epoch"), self._config(cid)[0]

    def _commit(self, req: Request) -> Response:
        """A refresh's staged epoch becomes the current one (the old share is dropped);
        committing the current epoch again does nothing."""
        by, cid, epoch, cfg = self._epoch_request(req)
        if self.pending(cid) and type(epoch) is int and epoch == cfg.epoch:
            (self.dir / f"{cid}{PENDING}").unlink()  # the creation completed: a member now
            self._svc._audit(ev.ClusterCommit(cluster=cid, epoch=epoch, by=by))
        elif type(epoch) is not int or epoch != cfg.epoch:
            if self._staged(cid, epoch) is None:
                raise ClusterError(f"this node is at epoch {cfg.epoch}, with no staged {epoch!r}")
            self._promote(cid, by)
        return self._json(200, {"epoch": epoch})

    def _abort(self, req: Request) -> Response:
        """Erase the staged epoch an unfinished refresh left (share overwritten, then both
        files unlinked). ``epoch`` is the one the administrator's ``cluster.json`` names:
        refused unless this node is at that epoch too, so a refresh that ``cluster.json``
        already committed (a node's staged share is then the one it must serve) is never
        aborted. Answers whether anything was erased."""
        by, cid, epoch, cfg = self._epoch_request(req)
        if type(epoch) is not int or epoch != cfg.epoch:
            raise ClusterError(
                f"this node is at epoch {cfg.epoch}, not {epoch!r}",
                hint="cluster.json names a refresh this node has not committed: "
                "run keysplit cluster refresh again to finish it",
            )
        staged_json = self.dir / f"{cid}.json{STAGED}"
        staged_share = self.dir / f"{cid}.share{STAGED}"
        staged = staged_json.exists() or staged_share.exists()
        self._shares.pop(cid + STAGED, None)
        self._pending.pop(cid, None)  # a dealing of that round will not be finished
        erase_file(staged_share)  # the share first: a crash leaves no share without its epoch
        staged_json.unlink(missing_ok=True)
        if staged:
            self._svc._audit(ev.ClusterAbort(cluster=cid, epoch=epoch + 1, round="refresh", by=by))
        return self._json(200, {"epoch": epoch, "erased": staged})

    def _abandon(self, req: Request) -> Response:
        """Erase this node's membership of a cluster whose creation never completed (its
        ``.pending`` marker is still there): the share overwritten then unlinked, the
        description, then the marker; the region pin too when no membership is left.
        Refused for a completed membership unless the request says ``"completed": true``
        (the administrator's explicit ``cluster abandon --completed``: a membership no
        ``cluster.json`` describes any more, or one a create cut before ``cluster.json``
        left on code before the marker); a refresh's staged share goes with it. Answers
        whether anything was erased."""
        by, cid, doc = self._id_request(req)
        _check_cid(cid)
        completed = doc.get("completed", False)
        if type(completed) is not bool:
            raise FormatError("cluster request: 'completed' must be true or false")
        files = [self.dir / f"{cid}{x}" for x in (".share", ".json")]
        pending = self.pending(cid)
        if not pending:
            if not any(f.exists() for f in files):
                return self._json(200, {"erased": False, "region": self.region()})
            if not completed:
                raise ClusterError(
                    f"this node is a member of cluster {cid}, whose creation completed",
                    hint="only an unfinished creation is abandoned (a membership no "
                    "cluster.json describes any more: keysplit cluster abandon --completed)",
                )
        epoch = 1
        if not pending:
            with contextlib.suppress(KeysplitError):
                epoch = self._config(cid)[0].epoch
        self._shares.pop(cid, None)
        self._shares.pop(cid + STAGED, None)
        self._pending.pop(cid, None)
        # the shares first: a crash leaves no share without its description
        erase_file(self.dir / f"{cid}.share{STAGED}")
        erase_file(self.dir / f"{cid}.share")
        (self.dir / f"{cid}.json{STAGED}").unlink(missing_ok=True)
        (self.dir / f"{cid}.json").unlink(missing_ok=True)
        (self.dir / f"{cid}{PENDING}").unlink(missing_ok=True)
        left = [p for p in self.dir.iterdir() if p.name != "node.json"]
        if not left:  # no membership, pending or complete: the node may join any region
            (self.dir / "node.json").unlink(missing_ok=True)
        what = "create" if pending else "membership"
        self._svc._audit(ev.ClusterAbort(cluster=cid, epoch=epoch, round=what, by=by))
        return self._json(200, {"erased": True, "region": self.region()})

    def _eval(self, req: Request) -> Response:
        """Batch DPRF evaluation: frame of subjects in, one 32-byte point per subject out."""

        from . import _cluster_math as cm  # lazily: the cluster extra

        svc = self._svc
        if svc.sealed:
            svc._authorize(req, "datakey")  # raises SealedError (503)
        header, subjects, items = wire.decode_frame(req.body, "request")
        if len(subjects) != len(items) or any(b is not None for b in items) or not subjects:
            raise FormatError("eval request: subjects only, no payloads")
        try:
            canonical = [names.normalize_subject(s) for s in subjects]
        except ValueError as exc:
            raise FormatError(f"eval request: {exc}") from None
        pol = svc._authorize(req, "datakey", canonical)
        kr = self._unsealed()
        cid = str(header.get("cluster_id", ""))
        cfg, index = self._config(cid)
        if self.pending(cid):
            raise ClusterError(
                f"the creation of cluster {cid} was not committed on this node",
                hint="run keysplit cluster create again to finish it, or abandon it",
            )
        epoch = header.get("epoch")
        staged = type(epoch) is int and epoch != cfg.epoch and self._staged(cid, epoch)
        if staged:  # a client with the new cluster.json, before this node's commit
            cfg, index = staged
        region = self.region()
        asked = header.get("region")
        if asked != cfg.region or region != cfg.region:
            raise ClusterError(f"this node serves region {region!r}, not {asked!r}")
        token_region = getattr(pol, "region", "")
        if token_region and token_region != region:
            raise ClusterError(f"token {pol.name!r} is for region {token_region!r}, not {region!r}")
        if type(epoch) is not int or epoch != cfg.epoch:  # JSON true is not 1
            raise ClusterError(f"this node is at epoch {cfg.epoch}, not {epoch!r}")
        version = header.get("version", cfg.kek_version)
        if type(version) is not int or version != cfg.kek_version:
            raise ClusterError(f"cluster {cfg.cluster_id} evaluates version {cfg.kek_version}")
        indices = header.get("indices")
        known = cfg.by_index()
        if (
            not isinstance(indices, list)
            or len(set(indices)) != len(indices)
            or index not in indices
            or len(indices) < cfg.threshold
            or any(type(i) is not int or i not in known for i in indices)
        ):
            raise FormatError("eval request: 'indices' must name at least T distinct members")
        share = self._share(cfg, index, kr, staged=bool(staged))
        coefficient = cm.lagrange(indices)[index]
        points = [cm.point_for(cfg.cluster_id, cfg.region, s, cfg.kek_version) for s in canonical]
        outputs: list[bytes | None] = list(cm.evaluate(share, coefficient, points))
        head: dict[str, Any] = {"index": index, "epoch": cfg.epoch}
        if header.get("proof"):
            head["proof"] = cm.prove(share, coefficient, points, outputs).hex()  # type: ignore[arg-type]
        svc._audit(
            ev.ClusterEval(
                cluster=cfg.cluster_id,
                token=pol.name,
                count=len(canonical),
                subjects=sorted(set(canonical)),
            )
        )
        return self._response(200, wire.encode_frame(head, outputs), wire.BATCH_TYPE)
