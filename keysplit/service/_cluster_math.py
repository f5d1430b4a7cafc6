"""The cluster math as the node service and the client use it: bytes on the wire and on
disk, :mod:`keysplit.cluster` (dkg, dprf) underneath.

One place converts between the 32-byte encodings the wire, ``cluster.json`` and the share
file carry and the typed :class:`~keysplit.hazmat.ristretto.Point` /
:class:`~keysplit.hazmat.ristretto.Scalar` values of the math, so that a malformed
encoding from a peer is refused here (:class:`FormatError` / :class:`ClusterError`) before
any arithmetic. Imported lazily (``rbcl`` is the ``cluster`` extra).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..cluster import dkg, dprf
from ..cluster.dkg import Dealing, NodeShare
from ..errors import ClusterError, FormatError
from ..hazmat.ristretto import Point, Scalar

if TYPE_CHECKING:
    from .cluster_config import ClusterConfig

__all__ = [
    "add_points",
    "base_point",
    "combine",
    "combined",
    "consistent",
    "deal",
    "derive_kek",
    "derive_tombstone",
    "evaluate",
    "finish",
    "lagrange",
    "point_for",
    "prove",
    "public_key",
    "public_shares",
    "refresh",
    "refresh_commitments",
    "share_of",
    "verify",
]


def _point(b: bytes) -> Point:
    return Point.from_bytes(bytes(b))


def _scalar(b: bytes) -> Scalar:
    return Scalar.from_bytes(bytes(b))


def deal(
    dealer: int, threshold: int, indices: Sequence[int], *, zero: bool = False
) -> tuple[list[bytes], dict[int, bytes]]:
    """(commitments, sub-share per index); ``zero`` deals a refresh polynomial."""
    if zero:
        d, subs = dkg.deal_refresh(dealer, threshold, indices)
    else:
        d, subs = dkg.deal(dealer, threshold, indices)
    return [c.to_bytes() for c in d.commitments], {i: s.to_bytes() for i, s in subs.items()}


def _dealings(raw: Mapping[int, Sequence[bytes]]) -> list[Dealing]:
    try:
        return [Dealing(i, tuple(_point(c) for c in cs)) for i, cs in sorted(raw.items())]
    except (FormatError, ValueError, TypeError) as exc:
        raise ClusterError(f"malformed dealing: {exc}") from None


def _subshares(raw: Mapping[int, bytes]) -> dict[int, Scalar]:
    try:
        return {i: _scalar(s) for i, s in raw.items()}
    except (FormatError, ValueError) as exc:
        raise ClusterError(f"malformed sub-share: {exc}") from None


def finish(
    index: int, dealings: Mapping[int, Sequence[bytes]], subshares: Mapping[int, bytes]
) -> bytes:
    """This node's new share (every sub-share checked; a bad one names its dealer)."""
    return dkg.finish(index, _dealings(dealings), _subshares(subshares)).share.to_bytes()


def refresh(
    index: int,
    share: bytes,
    dealings: Mapping[int, Sequence[bytes]],
    subshares: Mapping[int, bytes],
) -> bytes:
    """The refreshed share (refresh dealings must have a zero constant term)."""
    old = NodeShare(index, _scalar(share))
    return dkg.refresh(old, _dealings(dealings), _subshares(subshares)).share.to_bytes()


def combined(dealings: Mapping[int, Sequence[bytes]]) -> list[bytes]:
    """The combined commitments ``C_k`` of a DKG round."""
    return [c.to_bytes() for c in dkg.combined_commitments(_dealings(dealings))]


def refresh_commitments(
    commitments: Sequence[bytes], dealings: Mapping[int, Sequence[bytes]]
) -> list[bytes]:
    """The combined commitments after a refresh round (``C_0``, the key, unchanged)."""
    new = dkg.refresh_commitments([_point(c) for c in commitments], _dealings(dealings))
    return [c.to_bytes() for c in new]


def public_shares(commitments: Sequence[bytes], indices: Sequence[int]) -> dict[int, bytes]:
    """Each node's public share ``X_i`` from the combined commitments."""
    cs = [_point(c) for c in commitments]
    return {i: dkg.public_share(cs, i).to_bytes() for i in indices}


def consistent(cfg: ClusterConfig) -> bool:
    """``cluster.json``'s public key and every node's public share are the ones its recorded
    commitments give (``C_0``; ``Σ_k i^k·C_k``): what every proof is checked against.
    False without commitments or with a malformed one."""
    if not cfg.commitments or cfg.commitments[0] != cfg.public_key:
        return False
    try:
        cs = [_point(bytes.fromhex(c)) for c in cfg.commitments]
    except FormatError:
        return False
    return all(dkg.public_share(cs, n.index).hex() == n.public_share for n in cfg.nodes)


def public_key(dealings: Mapping[int, Sequence[bytes]]) -> bytes:
    return dkg.cluster_public_key(_dealings(dealings)).to_bytes()


def base_point(scalar: Scalar | bytes) -> bytes:
    """``scalar·B``: the public share of a share."""
    k = scalar if isinstance(scalar, Scalar) else _scalar(scalar)
    return Point.base_mul(k).to_bytes()


def add_points(p: bytes, q: bytes) -> bytes:
    return (_point(p) + _point(q)).to_bytes()


def share_of(raw: bytes) -> Scalar:
    """A share from its 32 stored bytes (a non-canonical encoding is refused)."""
    return _scalar(raw)


def point_for(cluster_id: str, region: str, subject: str, version: int) -> Point:
    return dprf.point_for(bytes.fromhex(cluster_id), region, subject, version)


def lagrange(indices: Sequence[int]) -> dict[int, Scalar]:
    return dprf.lagrange(indices)


def evaluate(share: Scalar, coefficient: Scalar, points: Sequence[Point]) -> list[bytes]:
    return [z.to_bytes() for z in dprf.evaluate(share, points, coefficient=coefficient)]


def prove(
    share: Scalar, coefficient: Scalar, points: Sequence[Point], outputs: Sequence[bytes]
) -> bytes:
    return dprf.prove(share, points, [_point(z) for z in outputs], coefficient=coefficient)


def verify(
    public_share: bytes,
    coefficient: Scalar,
    points: Sequence[Point],
    outputs: Sequence[bytes],
    proof: bytes,
) -> bool:
    """True iff the node's batched DLEQ proof holds for every output (never raises)."""
    try:
        zs = [_point(z) for z in outputs]
        dprf.verify(_point(public_share), points, zs, proof, coefficient=coefficient)
    except (ClusterError, FormatError, ValueError):
        return False
    return True


def combine(answers: Mapping[int, Sequence[bytes]], threshold: int) -> list[Point]:
    """Add T pre-multiplied answers; an invalid encoding or identity is a ClusterError."""
    try:
        pts = {i: [_point(z) for z in a] for i, a in answers.items()}
    except (FormatError, ValueError) as exc:
        raise ClusterError(f"a node answered a malformed point: {exc}") from None
    return dprf.combine(pts, threshold)


def derive_kek(output: Point, cluster_id: str, subject: str, version: int) -> bytes:
    return dprf.derive_kek(output, bytes.fromhex(cluster_id), subject, version)


def derive_tombstone(output: Point, cluster_id: str, subject: str, version: int) -> bytes:
    return dprf.derive_tombstone(output, bytes.fromhex(cluster_id), subject, version)


def deal_recovery(
    helper: int, helpers: Sequence[int], lost: int
) -> tuple[list[bytes], dict[int, bytes]]:
    """A helper's blinding dealing (``δ(lost) = 0``) and its sub-share per helper."""
    d, subs = dkg.deal_recovery(helper, helpers, lost)
    return [c.to_bytes() for c in d.commitments], {i: s.to_bytes() for i, s in subs.items()}


def blind(
    index: int,
    share: Scalar,
    lost: int,
    dealings: Mapping[int, Sequence[bytes]],
    subshares: Mapping[int, bytes],
) -> bytes:
    """Helper side: ``x_i + Σ_j δ_j(i)`` (every blinding dealing and sub-share checked)."""
    mine = NodeShare(index, share)
    return dkg.blind_share(mine, lost, _dealings(dealings), _subshares(subshares)).to_bytes()


def recover(
    lost: int,
    blinded: Mapping[int, bytes],
    dealings: Mapping[int, Sequence[bytes]],
    commitments: Sequence[bytes],
) -> bytes:
    """New-node side: the lost index's share from T blinded shares (each checked)."""
    cs = [_point(c) for c in commitments]
    got = dkg.recover_share(lost, _subshares(blinded), _dealings(dealings), cs)
    return got.share.to_bytes()
