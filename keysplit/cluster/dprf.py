"""The DDH-based distributed PRF of the key cluster (pure math, no I/O).

For a subject the cluster's PRF value is ``Y = x·H`` where ``H = point_for(cluster_id,
region, subject, version)`` is a hash to ristretto255 and ``x`` the cluster key, shared T
of N (:mod:`keysplit.cluster.dkg`). Node ``i`` answers ``Z_i = λ_i·x_i·H`` (pre-multiplied
by its Lagrange coefficient for the T-subset the client chose, :func:`lagrange`) or
``x_i·H``; the client adds T answers (:func:`combine`) and derives the subject's 16-byte
KEK with HKDF-SHA256 (:func:`derive_kek`). This is the (verifiable) OPRF evaluation of
RFC 9497 without blinding (the node must see the subject to apply its policy) and with
the key shared (Naor-Pinkas-Reingold's DDH-based DPRF).

Each answer carries a batched DLEQ proof (Chaum-Pedersen, Fiat-Shamir) that ``log_B
(λ_i·X_i) = log_H Z`` for every ``(H, Z)`` in the request, where ``X_i`` is the node's
public share from ``cluster.json``. The proof is byte for byte RFC 9497's
``GenerateProof``/``VerifyProof`` (section 2.2, with ``ComputeComposites``) under this
module's context string; the tests reproduce RFC 9497's ristretto255-SHA512 VOPRF proofs
with the RFC's own context string. A wrong answer fails :func:`verify` with a
:class:`~keysplit.errors.ClusterError` naming the node.

Byte layouts and domain-separation strings are in ``docs/format/cluster.md``.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import unicodedata
from collections.abc import Mapping, Sequence

from ..errors import ClusterError, FormatError
from ..hazmat.ristretto import Point, Scalar, hash_to_group, hash_to_scalar
from ..rng import RandomSource, default_rng
from .dkg import NodeShare, check_indices, lagrange

__all__ = [
    "CONTEXT",
    "KEK_SIZE",
    "PROOF_SIZE",
    "combine",
    "derive_kek",
    "derive_tombstone",
    "evaluate",
    "lagrange",
    "point_for",
    "prove",
    "verify",
]

CONTEXT = b"keysplit-cluster-v1"
"""The context string of every domain-separation tag below (RFC 9497's ``contextString``)."""

KEK_SIZE = 16
KEK_SALT = b"keysplit cluster kek v1"
TOMBSTONE_SALT = b"keysplit cluster tombstone v1"
PROOF_SIZE = 64
MAX_BATCH = 65535
"""RFC 9497's transcripts carry the pair index in two bytes."""

_MAX_FIELD = 65535


def _lp(data: bytes) -> bytes:
    """``I2OSP(len(data), 2) || data``: the length prefix RFC 9497 uses in transcripts."""
    if len(data) > _MAX_FIELD:
        raise ValueError("field longer than 65535 bytes")
    return len(data).to_bytes(2, "big") + data


def _text(value: str, what: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str")
    return value.encode("utf-8")


def _check_version(version: int) -> int:
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version < 2**32:
        raise ValueError("version is an integer 0..2^32-1")
    return version


def point_for(
    cluster_id: bytes, region: str, subject: str, version: int, *, context: bytes = CONTEXT
) -> Point:
    """``H = hash_to_ristretto255(lp(cluster_id) || lp(region) || lp(subject) || u32(version),
    DST = "HashToGroup-" || context)``.

    The subject is hashed in its canonical (NFC) spelling, the one the node checks its
    token policy on and hashes, whatever spelling the caller holds: a client verifying a
    node's proof for a legacy or NFD spelling (asking whether it was shredded) hashed that
    spelling, the proof of every honest node failed and the client excluded them all.
    ``version`` is the cluster-key version (a rotation to a new cluster key gives new
    points).
    """
    if not isinstance(cluster_id, bytes) or not cluster_id:
        raise TypeError("cluster_id must be non-empty bytes")
    if isinstance(subject, str) and not subject.isascii():
        subject = unicodedata.normalize("NFC", subject)
    msg = (
        _lp(cluster_id)
        + _lp(_text(region, "region"))
        + _lp(_text(subject, "subject"))
        + struct.pack(">I", _check_version(version))
    )
    return hash_to_group(msg, b"HashToGroup-" + context)


def _key(share: NodeShare | Scalar, coefficient: Scalar | None) -> Scalar:
    k = share.share if isinstance(share, NodeShare) else share
    if not isinstance(k, Scalar):
        raise TypeError("share must be a NodeShare or Scalar")
    return k * coefficient if coefficient is not None else k


def evaluate(
    share: NodeShare | Scalar, points: Sequence[Point], *, coefficient: Scalar | None = None
) -> list[Point]:
    """Node side: ``Z_j = (coefficient·x_i)·H_j`` for each point of the batch.

    The node computes ``points`` itself with :func:`point_for` from the subject it checked;
    it never evaluates a point a client sent.
    """
    k = _key(share, coefficient)
    return [k * p for p in points]


# -- DLEQ proofs (RFC 9497 section 2.2) ----------------------------------------------------


def _composites(
    b: Point,
    cs: Sequence[Point],
    ds: Sequence[Point],
    k: Scalar | None,
    context: bytes,
) -> tuple[Point, Point]:
    """``ComputeComposites`` (``k`` None) / ``ComputeCompositesFast`` (``k`` given)."""
    seed_dst = b"Seed-" + context
    seed = hashlib.sha512(_lp(b.to_bytes()) + _lp(seed_dst)).digest()
    h2s_dst = b"HashToScalar-" + context
    m = Point.identity()
    z = Point.identity()
    for i, (c, d) in enumerate(zip(cs, ds, strict=True)):
        transcript = (
            _lp(seed) + i.to_bytes(2, "big") + _lp(c.to_bytes()) + _lp(d.to_bytes()) + b"Composite"
        )
        di = hash_to_scalar(transcript, h2s_dst)
        m = m + c * di
        if k is None:
            z = z + d * di
    if k is not None:
        z = m * k
    return m, z


def _challenge(b: Point, m: Point, z: Point, t2: Point, t3: Point, context: bytes) -> Scalar:
    transcript = b"".join(_lp(p.to_bytes()) for p in (b, m, z, t2, t3)) + b"Challenge"
    return hash_to_scalar(transcript, b"HashToScalar-" + context)


def _check_batch(points: Sequence[Point], outputs: Sequence[Point]) -> None:
    if not points or len(points) != len(outputs):
        raise ValueError("a proof covers a non-empty batch of (point, output) pairs")
    if len(points) > MAX_BATCH:
        raise ValueError(f"a proof covers at most {MAX_BATCH} pairs")


def _generate_proof(
    k: Scalar,
    a: Point,
    b: Point,
    cs: Sequence[Point],
    ds: Sequence[Point],
    r: Scalar,
    context: bytes,
) -> bytes:
    m, z = _composites(b, cs, ds, k, context)
    t2 = a * r
    t3 = m * r
    c = _challenge(b, m, z, t2, t3, context)
    s = r - c * k
    return c.to_bytes() + s.to_bytes()


def _verify_proof(
    a: Point, b: Point, cs: Sequence[Point], ds: Sequence[Point], proof: bytes, context: bytes
) -> bool:
    if not isinstance(proof, (bytes, bytearray)) or len(proof) != PROOF_SIZE:
        return False
    try:
        c = Scalar.from_bytes(bytes(proof[:32]))
        s = Scalar.from_bytes(bytes(proof[32:]))
    except FormatError:
        return False
    m, z = _composites(b, cs, ds, None, context)
    t2 = a * s + b * c
    t3 = m * s + z * c
    expected = _challenge(b, m, z, t2, t3, context)
    return hmac.compare_digest(expected.to_bytes(), c.to_bytes())


def prove(
    share: NodeShare | Scalar,
    points: Sequence[Point],
    outputs: Sequence[Point],
    *,
    coefficient: Scalar | None = None,
    rng: RandomSource | None = None,
    context: bytes = CONTEXT,
) -> bytes:
    """A 64-byte proof (``c || s``) that every ``outputs[j] = k·points[j]`` for the ``k``
    behind ``k·B = coefficient·X_i``. One proof covers the whole batch."""
    _check_batch(points, outputs)
    k = _key(share, coefficient)
    r = Scalar.random(rng or default_rng())
    return _generate_proof(k, Point.base(), Point.base_mul(k), points, outputs, r, context)


def verify(
    public_share: Point,
    points: Sequence[Point],
    outputs: Sequence[Point],
    proof: bytes,
    *,
    coefficient: Scalar | None = None,
    node: int | str | None = None,
    context: bytes = CONTEXT,
) -> None:
    """Check a node's batched answer against its public share ``X_i``; a bad proof, a
    wrong output or an identity output raises :class:`ClusterError` naming ``node``."""
    _check_batch(points, outputs)
    for z in outputs:
        if z.is_identity():
            raise ClusterError(f"node {node} answered the identity", node=node)
    b = public_share * coefficient if coefficient is not None else public_share
    if b.is_identity() or not _verify_proof(Point.base(), b, points, outputs, proof, context):
        raise ClusterError(f"node {node} answered with an invalid proof", node=node)


def combine(
    answers: Mapping[int, Sequence[Point]], threshold: int, *, premultiplied: bool = True
) -> list[Point]:
    """The PRF outputs ``Y_j`` from exactly ``threshold`` nodes' answers.

    With ``premultiplied`` the nodes applied their Lagrange coefficients for exactly this
    set of indices and the answers are added; otherwise the coefficients are applied here.
    A result equal to the identity is refused (never a KEK from it).
    """
    idx = check_indices(answers)
    if len(idx) != threshold:
        raise ClusterError(f"need answers from exactly {threshold} nodes, got {len(idx)}")
    lengths = {len(v) for v in answers.values()}
    if len(lengths) != 1:
        raise ClusterError("nodes answered batches of different sizes")
    (n,) = lengths
    coefficients = None if premultiplied else lagrange(idx)
    outputs = []
    for j in range(n):
        terms = [
            answers[i][j] if coefficients is None else answers[i][j] * coefficients[i] for i in idx
        ]
        acc = terms[0]
        for z in terms[1:]:
            acc = acc + z
        if acc.is_identity():
            raise ClusterError("the combined PRF output is the identity")
        outputs.append(acc)
    return outputs


def _hkdf16(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """RFC 5869 HKDF-SHA256 with L = 16 (one expand block): two HMACs through
    :func:`hmac.digest` (C), a few microseconds less per subject than the HKDF object."""
    prk = hmac.digest(salt, ikm, "sha256")
    return hmac.digest(prk, info + b"\x01", "sha256")[:16]


def _kek_info(cluster_id: bytes, subject: str, version: int) -> bytes:
    return (
        _lp(cluster_id)
        + _lp(_text(subject, "subject"))
        + struct.pack(">I", _check_version(version))
    )


def derive_kek(output: Point, cluster_id: bytes, subject: str, version: int) -> bytes:
    """The subject's 16-byte KEK: HKDF-SHA256(ikm = Y, salt = "keysplit cluster kek v1",
    info = lp(cluster_id) || lp(subject) || u32(version))."""
    if output.is_identity():
        raise ClusterError("the PRF output is the identity")
    return _hkdf16(output.to_bytes(), KEK_SALT, _kek_info(cluster_id, subject, version))


def derive_tombstone(output: Point, cluster_id: bytes, subject: str, version: int) -> bytes:
    """The subject's 16-byte tombstone tag: HKDF-SHA256(ikm = Y, salt = "keysplit cluster
    tombstone v1", info as :func:`derive_kek`'s).

    What a shred writes with the delete and every caching client keys its cached data key
    by (the fleet rules of :mod:`keysplit.keyring.fleet`): computable only with the
    subject's PRF output (T nodes, a token allowed the subject), so the store's tombstone
    table names no subject, and independent of the KEK (another salt).
    """
    if output.is_identity():
        raise ClusterError("the PRF output is the identity")
    return _hkdf16(output.to_bytes(), TOMBSTONE_SALT, _kek_info(cluster_id, subject, version))
