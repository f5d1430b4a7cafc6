"""Distributed key generation, refresh and share recovery for the key cluster (pure math).

The cluster key ``x`` is shared T-of-N among node indices ``1..N`` as ``x_i = f(i)`` for a
polynomial ``f`` of degree ``T-1`` that no party ever holds: every node *deals* a random
polynomial ``f_d`` with Feldman commitments ``C_{d,k} = a_{d,k}·B`` (Pedersen's "joint
Feldman" DKG), sends ``f_d(i)`` to node ``i`` (HPKE-sealed by the caller), and node ``i``
checks each sub-share against the commitments (:func:`verify_subshare`) and adds them
(:func:`finish`). ``f = Σ_d f_d``; its commitments ``C_k = Σ_d C_{d,k}`` are public and give
every node's *public share* ``X_i = x_i·B = Σ_k i^k·C_k`` and the cluster public key
``X = C_0``.

* **Refresh** (:func:`deal_refresh`, :func:`refresh`): every node deals a polynomial with
  zero constant term (its ``C_0`` must be the identity); adding the sub-shares changes every
  share and leaves ``x`` (so every DPRF output) unchanged. Old and new shares lie on
  different polynomials and do not combine.
* **Recovery** of a lost node ``r`` from T helpers (:func:`deal_recovery`,
  :func:`blind_share`, :func:`recover_share`), after Herzberg et al., "Proactive secret
  sharing" (CRYPTO 1995): each helper deals a polynomial with ``δ_j(r) = 0`` to the other
  helpers; each helper sends ``x_i + Σ_j δ_j(i)`` to the new node, which interpolates at
  ``r``. The blinded values lie on ``f + Δ``, a polynomial that agrees with ``f`` only at
  ``r``, so the new node learns ``x_r`` and nothing else; each helper sees one point of
  each other helper's ``δ_j``.

What each party sees, and why that is enough, is argued in ``docs/format/cluster.md``.
The protocol aborts on the first bad dealing (naming the dealer) rather than running the
complaint round of Pedersen/GJKR: nodes are run by one operator's data centres, and a
failed DKG is re-run without the faulty node.

Sub-shares and shares are :class:`~keysplit.hazmat.ristretto.Scalar` values: never in a
``repr`` or exception text. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ..errors import ClusterError, FormatError
from ..hazmat.ristretto import POINT_BYTES, SCALAR_BYTES, L, Point, Scalar
from ..rng import RandomSource, default_rng

__all__ = [
    "MAX_NODES",
    "Dealing",
    "NodeShare",
    "blind_share",
    "check_indices",
    "cluster_public_key",
    "combined_commitments",
    "deal",
    "deal_recovery",
    "deal_refresh",
    "finish",
    "interpolate",
    "lagrange",
    "public_share",
    "public_shares",
    "recover_share",
    "refresh",
    "refresh_commitments",
    "verify_recovery_dealing",
    "verify_subshare",
]

MAX_NODES = 255
"""Node indices are 1..255 (a cluster of data centres, not a crowd)."""

_DEALING_MAGIC = b"KSDL"
_SHARE_MAGIC = b"KSNS"
_VERSION = 1


def check_indices(indices: Iterable[int], threshold: int | None = None) -> tuple[int, ...]:
    """Validate node indices (distinct ints in 1..255) and, if given, ``2 <= threshold <= N``."""
    out = tuple(indices)
    for i in out:
        if not isinstance(i, int) or isinstance(i, bool) or not 1 <= i <= MAX_NODES:
            raise ValueError(f"node indices are integers 1..{MAX_NODES}")
    if len(set(out)) != len(out):
        raise ValueError("node indices must be distinct")
    if threshold is not None:
        if not isinstance(threshold, int) or isinstance(threshold, bool):
            raise TypeError("threshold must be an int")
        # T = 1 would let every node derive every key alone: the cluster exists to prevent it.
        if not 2 <= threshold <= len(out):
            raise ValueError(f"threshold must be 2..{len(out)} for {len(out)} nodes")
    return out


class _Horner(Protocol):
    def __mul__(self: _H, other: Scalar, /) -> _H: ...
    def __add__(self: _H, other: _H, /) -> _H: ...


_H = TypeVar("_H", bound=_Horner)


def _horner(coefficients: Sequence[_H], x: int, zero: _H) -> _H:
    """``Σ_k x^k·c_k`` by Horner's rule: on secret scalars (libsodium, constant time in the
    coefficients) or on commitments (in the exponent, public)."""
    xs = Scalar.from_int(x)
    acc = zero
    for c in reversed(coefficients):
        acc = acc * xs + c
    return acc


def _eval_poly(coefficients: Sequence[Scalar], x: int) -> Scalar:
    return _horner(coefficients, x, Scalar.zero())


def _eval_commitments(commitments: Sequence[Point], x: int) -> Point:
    return _horner(commitments, x, Point.identity())


@dataclass(frozen=True)
class Dealing:
    """One dealer's public contribution: Feldman commitments ``C_k = a_k·B``, k = 0..T-1.

    Public (goes into the DKG transcript and ``cluster.json``); the sub-shares that go with
    it are secret and travel separately.
    """

    dealer: int
    commitments: tuple[Point, ...]

    def __post_init__(self) -> None:
        check_indices([self.dealer])
        if len(self.commitments) < 2 or len(self.commitments) > MAX_NODES:
            raise ValueError("a dealing has 2..255 commitments (one per coefficient)")
        if not all(isinstance(c, Point) for c in self.commitments):
            raise TypeError("commitments must be Points")

    @property
    def threshold(self) -> int:
        return len(self.commitments)

    def to_bytes(self) -> bytes:
        """``"KSDL" || 0x01 || dealer (u8) || T (u8) || T x 32-byte commitments``."""
        return (
            _DEALING_MAGIC
            + bytes([_VERSION, self.dealer, self.threshold])
            + b"".join(c.to_bytes() for c in self.commitments)
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Dealing:
        """Strict parse of :meth:`to_bytes` (every commitment a canonical encoding)."""
        if len(data) < 7 or data[:4] != _DEALING_MAGIC:
            raise FormatError("not a keysplit cluster dealing")
        if data[4] != _VERSION:
            raise FormatError(f"unsupported dealing version {data[4]}")
        dealer, t = data[5], data[6]
        if t < 2 or dealer < 1 or len(data) != 7 + POINT_BYTES * t:
            raise FormatError("dealing has the wrong length")
        points = tuple(
            Point.from_bytes(data[7 + POINT_BYTES * k : 7 + POINT_BYTES * (k + 1)])
            for k in range(t)
        )
        return cls(dealer, points)

    def to_json(self) -> dict[str, object]:
        return {"dealer": self.dealer, "commitments": [c.hex() for c in self.commitments]}

    @classmethod
    def from_json(cls, obj: object) -> Dealing:
        if not isinstance(obj, dict) or set(obj) != {"dealer", "commitments"}:
            raise FormatError("a dealing is {dealer, commitments}")
        dealer, hexes = obj["dealer"], obj["commitments"]
        if not isinstance(dealer, int) or isinstance(dealer, bool) or not 1 <= dealer <= 255:
            raise FormatError("dealing: bad dealer index")
        if not isinstance(hexes, list) or not 2 <= len(hexes) <= MAX_NODES:
            raise FormatError("dealing: bad commitments")
        try:
            raw = [bytes.fromhex(h) for h in hexes if isinstance(h, str)]
        except ValueError:
            raise FormatError("dealing: commitments are not hex") from None
        if len(raw) != len(hexes):
            raise FormatError("dealing: commitments are not hex")
        return cls(dealer, tuple(Point.from_bytes(b) for b in raw))

    def digest(self) -> bytes:
        """SHA-256 of :meth:`to_bytes`: what a dealer commits to before revealing (see docs)."""
        return hashlib.sha256(self.to_bytes()).digest()

    def check_digest(self, digest: bytes) -> None:
        """Check a revealed dealing against the digest its dealer committed to first."""
        if not hmac.compare_digest(self.digest(), bytes(digest)):
            raise ClusterError(
                f"dealing from node {self.dealer} is not the one it committed to", node=self.dealer
            )


class NodeShare:
    """A node's share ``x_i`` of the cluster key and its public share ``X_i = x_i·B``.

    Secret: the ``repr`` shows only the index and the public share. :meth:`to_bytes` is the
    plaintext that the node seals inside its keyring (the caller seals it).
    """

    __slots__ = ("_share", "index", "public_share")

    def __init__(self, index: int, share: Scalar, public_share: Point | None = None) -> None:
        check_indices([index])
        if not isinstance(share, Scalar):
            raise TypeError("share must be a Scalar")
        expected = Point.base_mul(share)
        if public_share is not None and public_share != expected:
            raise ClusterError("node share does not match its public share", node=index)
        self.index = index
        self._share = share
        self.public_share = expected

    @property
    def share(self) -> Scalar:
        return self._share

    def to_bytes(self) -> bytes:
        """``"KSNS" || 0x01 || index (u8) || share (32)`` — secret plaintext, seal it."""
        return _SHARE_MAGIC + bytes([_VERSION, self.index]) + self._share.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes, *, public_share: Point | None = None) -> NodeShare:
        """Strict parse; with ``public_share`` (from ``cluster.json``) the share is checked."""
        if len(data) != 6 + SCALAR_BYTES or data[:4] != _SHARE_MAGIC:
            raise FormatError("not a keysplit cluster node share")
        if data[4] != _VERSION:
            raise FormatError(f"unsupported node share version {data[4]}")
        if not 1 <= data[5] <= MAX_NODES:
            raise FormatError("node share: bad index")
        return cls(data[5], Scalar.from_bytes(data[6:]), public_share)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NodeShare):
            return NotImplemented
        return self.index == other.index and self._share == other._share

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"NodeShare(index={self.index}, public_share={self.public_share.hex()})"


# -- dealing ------------------------------------------------------------------------------


def _random_poly(threshold: int, constant: Scalar | None, rng: RandomSource) -> list[Scalar]:
    a0 = constant if constant is not None else Scalar.random(rng)
    return [a0] + [Scalar.random(rng) for _ in range(threshold - 1)]


def _deal_poly(
    dealer: int, coefficients: list[Scalar], indices: Sequence[int]
) -> tuple[Dealing, dict[int, Scalar]]:
    commitments = tuple(Point.base_mul(a) for a in coefficients)
    subshares = {i: _eval_poly(coefficients, i) for i in indices}
    return Dealing(dealer, commitments), subshares


def deal(
    dealer: int,
    threshold: int,
    indices: Sequence[int],
    *,
    rng: RandomSource | None = None,
    secret: Scalar | None = None,
) -> tuple[Dealing, dict[int, Scalar]]:
    """Deal a random degree-``T-1`` polynomial: public commitments, one sub-share per index.

    ``secret`` fixes the constant term (``Scalar.zero()`` for a refresh); by default it is
    random. The sub-shares are secret: send each HPKE-sealed to its node only.
    """
    idx = check_indices(indices, threshold)
    check_indices([dealer])
    if dealer not in idx:
        raise ValueError("the dealer must be one of the indices")
    coefficients = _random_poly(threshold, secret, rng or default_rng())
    return _deal_poly(dealer, coefficients, idx)


def verify_subshare(dealing: Dealing, index: int, subshare: Scalar) -> None:
    """Check ``subshare·B == Σ_k index^k·C_k``; a mismatch raises :class:`ClusterError`
    naming the dealer (the recipient publishes it as a complaint)."""
    if Point.base_mul(subshare) != _eval_commitments(dealing.commitments, index):
        raise ClusterError(
            f"sub-share from node {dealing.dealer} does not match its commitments",
            node=dealing.dealer,
        )


def _check_round(dealings: Sequence[Dealing], subshares: Mapping[int, Scalar] | None = None) -> int:
    if not dealings:
        raise ValueError("no dealings")
    dealers = [d.dealer for d in dealings]
    if len(set(dealers)) != len(dealers):
        raise ClusterError("two dealings from the same dealer", node=_first_dup(dealers))
    t = dealings[0].threshold
    for d in dealings:
        if d.threshold != t:
            raise ClusterError(f"dealing from node {d.dealer} has another threshold", node=d.dealer)
    if subshares is not None:
        missing = sorted(set(dealers) - set(subshares))
        if missing:
            raise ClusterError(f"no sub-share from node {missing[0]}", node=missing[0])
        extra = sorted(set(subshares) - set(dealers))
        if extra:
            raise ClusterError(f"sub-share from node {extra[0]} without a dealing", node=extra[0])
    return t


def _first_dup(values: Sequence[int]) -> int:
    seen: set[int] = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    raise AssertionError("no duplicate")  # pragma: no cover


def finish(
    index: int, dealings: Sequence[Dealing], subshares_for_me: Mapping[int, Scalar]
) -> NodeShare:
    """Node ``index`` checks every sub-share addressed to it and adds them into its share.

    ``subshares_for_me`` maps dealer index to the sub-share that dealer sent this node;
    every node must use the same list of dealings (the public transcript).
    """
    check_indices([index])
    _check_round(dealings, subshares_for_me)
    total = Scalar.zero()
    for d in dealings:
        sub = subshares_for_me[d.dealer]
        verify_subshare(d, index, sub)
        total = total + sub
    return NodeShare(index, total)


def combined_commitments(dealings: Sequence[Dealing]) -> tuple[Point, ...]:
    """``C_k = Σ_d C_{d,k}``: the public commitments of the shared polynomial (cluster.json)."""
    t = _check_round(dealings)
    out = []
    for k in range(t):
        acc = Point.identity()
        for d in dealings:
            acc = acc + d.commitments[k]
        out.append(acc)
    return tuple(out)


def public_share(commitments: Sequence[Point], index: int) -> Point:
    """Node ``index``'s public share ``X_i = Σ_k i^k·C_k`` from the combined commitments."""
    check_indices([index])
    return _eval_commitments(commitments, index)


def public_shares(dealings: Sequence[Dealing], indices: Sequence[int]) -> dict[int, Point]:
    """Every node's public share, from the dealings alone (anyone can compute it)."""
    commitments = combined_commitments(dealings)
    return {i: public_share(commitments, i) for i in check_indices(indices)}


def cluster_public_key(dealings: Sequence[Dealing]) -> Point:
    """``X = x·B = Σ_d C_{d,0}``; the identity is refused (a cancelled or zero key)."""
    key = combined_commitments(dealings)[0]
    if key.is_identity():
        raise ClusterError("the dealings sum to a zero cluster key")
    return key


# -- interpolation ------------------------------------------------------------------------


def lagrange(indices: Sequence[int], at: int = 0) -> dict[int, Scalar]:
    """Lagrange coefficients ``λ_i = Π_{j≠i} (at - j)/(i - j)`` mod L for the given indices.

    Indices are public, so this is plain integer arithmetic.
    """
    idx = check_indices(indices)
    if not idx:
        raise ValueError("no indices")
    out = {}
    for i in idx:
        num, den = 1, 1
        for j in idx:
            if j != i:
                num = num * (at - j) % L
                den = den * (i - j) % L
        out[i] = Scalar.from_int(num * pow(den, -1, L))
    return out


def interpolate(values: Mapping[int, Scalar], at: int = 0) -> Scalar:
    """Lagrange interpolation of secret values at ``at`` (public indices, secret values)."""
    coefficients = lagrange(list(values), at=at)
    total = Scalar.zero()
    for i, v in values.items():
        total = total + coefficients[i] * v
    return total


# -- refresh ------------------------------------------------------------------------------


def deal_refresh(
    dealer: int, threshold: int, indices: Sequence[int], *, rng: RandomSource | None = None
) -> tuple[Dealing, dict[int, Scalar]]:
    """A refresh dealing: a random polynomial with zero constant term (``C_0`` = identity)."""
    return deal(dealer, threshold, indices, rng=rng, secret=Scalar.zero())


def _check_refresh_dealings(dealings: Sequence[Dealing], threshold: int) -> None:
    for d in dealings:
        if d.threshold != threshold:
            raise ClusterError(
                f"refresh dealing from node {d.dealer} has another threshold", node=d.dealer
            )
        if not d.commitments[0].is_identity():
            # A non-zero constant term would change the cluster key: refuse it.
            raise ClusterError(
                f"refresh dealing from node {d.dealer} would change the cluster key",
                node=d.dealer,
            )


def refresh(
    share: NodeShare, dealings: Sequence[Dealing], subshares_for_me: Mapping[int, Scalar]
) -> NodeShare:
    """The node's new share ``x_i + Σ_d g_d(i)`` after checking every refresh sub-share."""
    t = _check_round(dealings, subshares_for_me)
    _check_refresh_dealings(dealings, t)
    delta = finish(share.index, dealings, subshares_for_me)
    return NodeShare(share.index, share.share + delta.share)


def refresh_commitments(
    commitments: Sequence[Point], dealings: Sequence[Dealing]
) -> tuple[Point, ...]:
    """The combined commitments after a refresh (``C_0``, the cluster key, unchanged)."""
    if not dealings:
        raise ValueError("no dealings")
    _check_refresh_dealings(dealings, len(commitments))
    delta = combined_commitments(dealings)
    return tuple(c + d for c, d in zip(commitments, delta, strict=True))


# -- share recovery -----------------------------------------------------------------------


def deal_recovery(
    helper: int,
    helpers: Sequence[int],
    lost: int,
    *,
    rng: RandomSource | None = None,
) -> tuple[Dealing, dict[int, Scalar]]:
    """Helper ``helper`` deals a blinding polynomial ``δ`` with ``δ(lost) = 0`` to the helpers.

    ``helpers`` are the T healthy nodes (the threshold is ``len(helpers)``); ``lost`` is the
    index being recovered. ``δ(x) = Σ_k b_k x^k`` with ``b_1..b_{T-1}`` random and
    ``b_0 = -Σ_{k>=1} b_k·lost^k``.
    """
    idx = check_indices(helpers, len(helpers))
    check_indices([lost])
    if lost in idx:
        raise ValueError("the lost node cannot be one of the helpers")
    if helper not in idx:
        raise ValueError("the dealer must be one of the helpers")
    r = rng or default_rng()
    tail = [Scalar.random(r) for _ in range(len(idx) - 1)]
    b0 = -_eval_poly([Scalar.zero(), *tail], lost)
    return _deal_poly(helper, [b0, *tail], idx)


def verify_recovery_dealing(dealing: Dealing, lost: int, threshold: int) -> None:
    """Check a blinding dealing vanishes at ``lost`` (``Σ_k lost^k·C_k`` is the identity)."""
    if dealing.threshold != threshold:
        raise ClusterError(
            f"recovery dealing from node {dealing.dealer} has another threshold",
            node=dealing.dealer,
        )
    if not _eval_commitments(dealing.commitments, lost).is_identity():
        raise ClusterError(
            f"recovery dealing from node {dealing.dealer} does not vanish at node {lost}",
            node=dealing.dealer,
        )


def blind_share(
    share: NodeShare,
    lost: int,
    dealings: Sequence[Dealing],
    subshares_for_me: Mapping[int, Scalar],
) -> Scalar:
    """Helper side: ``x_i + Σ_j δ_j(i)``, to be sealed to the new node ``lost``.

    Every helper's blinding dealing must be present (one per helper, the helper's own
    included) and vanish at ``lost``; every sub-share is checked.
    """
    t = _check_round(dealings, subshares_for_me)
    if share.index not in {d.dealer for d in dealings}:
        raise ValueError("this helper's own blinding dealing is missing")
    for d in dealings:
        verify_recovery_dealing(d, lost, t)
    delta = finish(share.index, dealings, subshares_for_me)
    return share.share + delta.share


def recover_share(
    lost: int,
    blinded: Mapping[int, Scalar],
    dealings: Sequence[Dealing],
    commitments: Sequence[Point],
) -> NodeShare:
    """New-node side: check each helper's blinded share, interpolate at ``lost``, check.

    ``commitments`` are the cluster's combined commitments (from ``cluster.json``); a
    blinded share that does not match ``X_i + Σ_j Δ_j(i)`` names its helper.
    """
    t = len(commitments)
    helpers = check_indices(blinded, t)
    if len(helpers) != t:
        raise ValueError(f"recovery needs exactly {t} helpers")
    if sorted(d.dealer for d in dealings) != sorted(helpers):
        raise ClusterError("the blinding dealings do not come from the helpers")
    _check_round(dealings)
    for d in dealings:
        verify_recovery_dealing(d, lost, t)
    delta = combined_commitments(dealings)
    for i in helpers:
        expected = _eval_commitments(commitments, i) + _eval_commitments(delta, i)
        if Point.base_mul(blinded[i]) != expected:
            raise ClusterError(f"blinded share from node {i} is wrong", node=i)
    share = interpolate(blinded, at=lost)
    result = NodeShare(lost, share)
    if result.public_share != public_share(commitments, lost):
        raise ClusterError("recovered share does not match the cluster commitments")
    return result
