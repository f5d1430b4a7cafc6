"""Replacing a lost cluster node from T healthy ones (share recovery), node side.

The replacement is a fresh keyring served by ``keysplit serve`` and unsealed by its own
custodians; it takes the lost node's index and gets that index's share without any helper,
the coordinator or the new node learning anything else (docs/format/cluster.md "Share
recovery", after Herzberg et al.). Nothing is re-encrypted: the cluster key, the
commitments and every public share stay as they are.

Endpoints (admin, as the DKG's; coordinated by ``keysplit cluster replace``)::

    POST /v1/cluster/recover/deal    helper: a blinding dealing, sub-shares sealed to helpers
    POST /v1/cluster/recover/blind   helper: x_i + Σ δ_j(i), sealed to the new node's keyring
    POST /v1/cluster/recover/finish  new node: check, interpolate at the lost index, keep

Helpers seal to each other with the keyring keys of their *own* copy of the cluster
description, never keys a request names; only the new node's key comes from the request
(it is new), which is why recovery is an administrator's act on T nodes.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..audit import events as ev
from ..errors import ClusterError, FormatError, IntegrityError
from ..keyring import hpke_seal
from . import _wire as wire
from .cluster_config import ClusterConfig, ClusterNodeInfo
from .cluster_node import SUBSHARE_LABEL, ClusterNode, _b64

if TYPE_CHECKING:
    from .core import Request, Response

__all__ = ["ADMIN_PATHS", "ClusterRecovery", "blinded_info"]

ADMIN_PATHS = frozenset(
    {"/v1/cluster/recover/deal", "/v1/cluster/recover/blind", "/v1/cluster/recover/finish"}
)
BLINDED_LABEL = b"keysplit cluster blinded share v1\x00"
_RECOVERY_LABEL = SUBSHARE_LABEL + b"recovery\x00"


def _subshare_info(cid: str, epoch: int, lost: int, dealer: int, to: int, keyring: str) -> bytes:
    return (
        _RECOVERY_LABEL
        + bytes.fromhex(cid)
        + struct.pack(">IBBB", epoch, lost, dealer, to)
        + bytes.fromhex(keyring)
    )


def blinded_info(cid: str, epoch: int, lost: int, helper: int, new_keyring: str) -> bytes:
    """HPKE ``info`` of a helper's blinded share for the new node."""
    return (
        BLINDED_LABEL
        + bytes.fromhex(cid)
        + struct.pack(">IBB", epoch, lost, helper)
        + bytes.fromhex(new_keyring)
    )


def _is(v: Any, want: int) -> bool:
    """``v`` is the integer ``want`` (JSON ``true`` is not 1)."""
    return type(v) is int and v == want


def _ints(v: Any, what: str) -> list[int]:
    if not isinstance(v, list) or not all(type(i) is int for i in v):
        raise FormatError(f"recovery request: '{what}' must be a list of node indices")
    return list(v)


class ClusterRecovery:
    """The share-recovery endpoints of one node (shares :class:`ClusterNode`'s state)."""

    def __init__(self, node: ClusterNode) -> None:
        self._n = node
        self._pending: dict[str, list[bytes]] = {}  # cluster id -> my blinding commitments

    def routes(self) -> dict[tuple[str, str], Callable[[Request], Response]]:
        return {
            ("POST", "/v1/cluster/recover/deal"): self._deal,
            ("POST", "/v1/cluster/recover/blind"): self._blind,
            ("POST", "/v1/cluster/recover/finish"): self._finish,
        }

    def forget(self) -> None:
        self._pending.clear()

    def _helper_round(
        self, req: Request
    ) -> tuple[dict[str, Any], ClusterConfig, int, list[int], int, ClusterNodeInfo]:
        """(doc, my cluster description, my index, helpers, lost index, new node), checked."""
        doc = wire.loads(req.body)
        if not isinstance(doc, dict):
            raise FormatError("recovery request must be a JSON object")
        cfg, index = self._n._config(str(doc.get("cluster_id", "")))
        if not _is(doc.get("epoch"), cfg.epoch):
            raise ClusterError(f"this node is at epoch {cfg.epoch}, not {doc.get('epoch')}")
        helpers = _ints(doc.get("helpers"), "helpers")
        lost = doc.get("lost")
        known = cfg.by_index()
        if (
            type(lost) is not int
            or lost not in known
            or lost in helpers
            or index not in helpers
            or len(set(helpers)) != cfg.threshold
            or len(helpers) != cfg.threshold
            or any(h not in known for h in helpers)
        ):
            raise FormatError("recovery request: T distinct helpers (me among them), another lost")
        try:
            new = ClusterNodeInfo.from_dict(dict(doc.get("new_node") or {}, public_share="00" * 32))
        except (TypeError, ValueError) as exc:
            raise FormatError(f"recovery request: new_node: {exc}") from None
        if new.index != lost:
            raise FormatError("recovery request: the new node takes the lost index")
        return doc, cfg, index, helpers, lost, new

    def _deal(self, req: Request) -> Response:
        from . import _cluster_math as cm  # lazily: the cluster extra

        by = self._n._admin(req)
        kr = self._n._unsealed()
        _, cfg, index, helpers, lost, _ = self._helper_round(req)
        self._n._share(cfg, index, kr)  # this helper must hold a working share
        commitments, subs = cm.deal_recovery(index, helpers, lost)
        known = cfg.by_index()
        sealed = {
            str(h): base64.b64encode(
                hpke_seal(
                    bytes.fromhex(known[h].hpke_public_key),
                    subs[h],
                    _subshare_info(cfg.cluster_id, cfg.epoch, lost, index, h, known[h].keyring_id),
                )
            ).decode()
            for h in helpers
        }
        self._pending[cfg.cluster_id] = commitments
        self._n._svc._audit(
            ev.ClusterRecoverDeal(cluster=cfg.cluster_id, lost=lost, helpers=helpers, by=by)
        )
        return self._n._json(
            200, {"dealer": index, "commitments": [c.hex() for c in commitments], "sealed": sealed}
        )

    def _blind(self, req: Request) -> Response:
        from . import _cluster_math as cm  # lazily: the cluster extra

        by = self._n._admin(req)
        kr = self._n._unsealed()
        doc, cfg, index, helpers, lost, new = self._helper_round(req)
        mine = self._pending.pop(cfg.cluster_id, None)
        dealings, sealed = doc.get("dealings"), doc.get("sealed")
        if mine is None or not isinstance(dealings, dict) or not isinstance(sealed, dict):
            raise ClusterError("this node dealt no matching recovery round")
        known = cfg.by_index()
        raw: dict[int, list[bytes]] = {}
        subs: dict[int, bytes] = {}
        for h in helpers:
            try:
                raw[h] = [bytes.fromhex(str(c)) for c in dealings[str(h)]]
            except (KeyError, TypeError, ValueError):
                raise ClusterError(f"node {known[h].name!r}: malformed dealing") from None
            info = _subshare_info(
                cfg.cluster_id, cfg.epoch, lost, h, index, known[index].keyring_id
            )
            try:
                subs[h] = kr.hpke_open(_b64(sealed.get(str(h)), "sealed"), info)
            except IntegrityError:
                raise ClusterError(
                    f"node {known[h].name!r}: its sub-share does not open here"
                ) from None
        if raw[index] != mine:
            raise ClusterError("the round carries another dealing of mine")
        try:
            value = cm.blind(index, self._n._share(cfg, index, kr), lost, raw, subs)
        except ClusterError as exc:
            who = known[exc.node].name if isinstance(exc.node, int) and exc.node in known else "?"
            raise ClusterError(f"node {who!r}: {exc}", node=who) from None
        out = hpke_seal(
            bytes.fromhex(new.hpke_public_key),
            value,
            blinded_info(cfg.cluster_id, cfg.epoch, lost, index, new.keyring_id),
        )
        self._n._svc._audit(
            ev.ClusterRecoverHelp(
                cluster=cfg.cluster_id, lost=lost, new_keyring=new.keyring_id, by=by
            )
        )
        return self._n._json(200, {"helper": index, "sealed": base64.b64encode(out).decode()})

    def _finish(self, req: Request) -> Response:
        from . import _cluster_math as cm  # lazily: the cluster extra

        self._n._admin(req)
        kr = self._n._unsealed()
        doc = wire.loads(req.body)
        if not isinstance(doc, dict):
            raise FormatError("recovery request must be a JSON object")
        cfg = ClusterConfig.from_bytes(wire.dumps(doc.get("cluster")), "recovery request: cluster")
        by = self._n._admin(req, cfg.region)  # a region-pinned token: that region's only
        me = cfg.node(str(doc.get("me", "")))
        m = self._n._svc.keyring
        if me.keyring_id != m.keyring_id or me.hpke_public_key != m.public_key.hex():
            raise ClusterError(f"node {me.name!r}: the request names another keyring")
        if (self._n.dir / f"{cfg.cluster_id}.json").exists():
            raise ClusterError(f"this node is already a member of cluster {cfg.cluster_id}")
        pinned = self._n.region()
        if pinned is not None and pinned != cfg.region:
            raise ClusterError(f"node {me.name!r} serves region {pinned!r}, not {cfg.region!r}")
        dealings, blinded = doc.get("dealings"), doc.get("blinded")
        if not isinstance(dealings, dict) or not isinstance(blinded, dict):
            raise FormatError("recovery finish needs 'dealings' and 'blinded'")
        known = cfg.by_index()
        raw: dict[int, list[bytes]] = {}
        values: dict[int, bytes] = {}
        for k, v in blinded.items():
            try:
                h = int(k)
                raw[h] = [bytes.fromhex(str(c)) for c in dealings[str(h)]]
            except (KeyError, TypeError, ValueError):
                raise FormatError("recovery finish: malformed dealings") from None
            if h not in known or h == me.index:
                raise FormatError("recovery finish: a helper that is not a member")
            info = blinded_info(cfg.cluster_id, cfg.epoch, me.index, h, m.keyring_id)
            try:
                values[h] = kr.hpke_open(_b64(v, "blinded"), info)
            except IntegrityError:
                raise ClusterError(
                    f"node {known[h].name!r}: its blinded share does not open here"
                ) from None
        try:
            share = cm.recover(me.index, values, raw, [bytes.fromhex(c) for c in cfg.commitments])
        except ClusterError as exc:
            who = known[exc.node].name if isinstance(exc.node, int) and exc.node in known else "?"
            raise ClusterError(f"node {who!r}: {exc}", node=who) from None
        except ValueError as exc:
            raise FormatError(f"recovery finish: {exc}") from None
        if cm.base_point(share).hex() != me.public_share:
            raise ClusterError("the recovered share does not match the cluster's public share")
        self._n._pin_region(cfg.region)
        self._n._write_state(cfg, me.name, share, kr)
        self._n._svc._audit(
            ev.ClusterRecover(cluster=cfg.cluster_id, index=me.index, helpers=sorted(values), by=by)
        )
        return self._n._json(200, {"index": me.index, "public_share": me.public_share})
