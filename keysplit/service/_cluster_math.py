"""The cluster math the node and client call, in one place (bytes in, bytes out).

LOCAL STUB BODY (H7b): implemented over rbcl until H7a's keysplit.cluster lands; then every
function here becomes a one-line call into keysplit.cluster.dkg / dprf.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..cluster._stub import IDENTITY, L, b2s, base, mul, padd, rand_scalar, s2b, valid
from ..errors import ClusterError

__all__ = [
    "ClusterError",
    "combine",
    "deal",
    "derive_kek",
    "evaluate",
    "finish",
    "lagrange",
    "point_for",
    "prove",
    "public_key",
    "public_share",
    "verify",
    "verify_subshare",
]


def _poly_commit(commitments: Sequence[bytes], index: int) -> bytes:
    acc = IDENTITY
    xp = 1
    for c in commitments:
        acc = padd(acc, mul(xp, c))
        xp = xp * index % L
    return acc


def deal(
    threshold: int, indices: Sequence[int], *, zero: bool = False
) -> tuple[list[bytes], dict[int, bytes]]:
    coeffs = [0 if zero else rand_scalar()] + [rand_scalar() for _ in range(threshold - 1)]
    commitments = [base(c) for c in coeffs]
    subs = {}
    for j in indices:
        v = 0
        for c in reversed(coeffs):
            v = (v * j + c) % L
        subs[j] = s2b(v)
    return commitments, subs


def verify_subshare(dealer: int, commitments: Sequence[bytes], index: int, subshare: bytes) -> None:
    if len(subshare) != 32 or b2s(subshare) >= L or not all(valid(c) for c in commitments):
        raise ClusterError(f"node {dealer}: malformed dealing")
    if base(b2s(subshare)) != _poly_commit(commitments, index):
        raise ClusterError(f"node {dealer}: sub-share does not match its commitments")


def finish(subshares: Mapping[int, bytes], base_share: bytes | None = None) -> bytes:
    acc = b2s(base_share) if base_share is not None else 0
    for s in subshares.values():
        acc += b2s(s)
    return s2b(acc)


def public_share(dealings: Mapping[int, Sequence[bytes]], index: int) -> bytes:
    acc = IDENTITY
    for c in dealings.values():
        acc = padd(acc, _poly_commit(c, index))
    return acc


def public_key(dealings: Mapping[int, Sequence[bytes]]) -> bytes:
    acc = IDENTITY
    for c in dealings.values():
        acc = padd(acc, c[0])
    return acc


def add_points(p: bytes, q: bytes) -> bytes:
    return padd(p, q)


def point_for(cluster_id: str, region: str, subject: str, version: int) -> bytes:
    import rbcl

    h = hashlib.sha512(
        b"keysplit cluster point v1\x00"
        + bytes.fromhex(cluster_id)
        + region.encode()
        + b"\x00"
        + struct.pack(">I", version)
        + subject.encode()
    ).digest()
    return bytes(rbcl.crypto_core_ristretto255_from_hash(h))


def lagrange(indices: Sequence[int]) -> dict[int, bytes]:
    out = {}
    for i in indices:
        num, den = 1, 1
        for j in indices:
            if j != i:
                num = num * j % L
                den = den * (j - i) % L
        out[i] = s2b(num * pow(den, -1, L))
    return out


def evaluate(share: bytes, coefficient: bytes, points: Sequence[bytes]) -> list[bytes]:
    k = b2s(share) * b2s(coefficient) % L
    return [mul(k, p) for p in points]


def _challenge(*parts: bytes) -> int:
    return int.from_bytes(hashlib.sha512(b"".join(parts)).digest(), "little") % L


def _combo(points: Sequence[bytes], outputs: Sequence[bytes]) -> tuple[bytes, bytes]:
    seed = hashlib.sha512(b"keysplit dleq batch" + b"".join(points) + b"".join(outputs)).digest()
    P, Y = IDENTITY, IDENTITY
    for k, (p, y) in enumerate(zip(points, outputs, strict=True)):
        c = _challenge(seed, struct.pack(">I", k))
        P = padd(P, mul(c, p))
        Y = padd(Y, mul(c, y))
    return P, Y


def prove(
    share: bytes, coefficient: bytes, points: Sequence[bytes], outputs: Sequence[bytes]
) -> bytes:
    k = b2s(share) * b2s(coefficient) % L
    P, Y = _combo(points, outputs)
    r = rand_scalar()
    A, B = base(r), mul(r, P)
    c = _challenge(base(k), P, Y, A, B)
    return s2b(c) + s2b(r - c * k)


def verify(
    public: bytes,
    coefficient: bytes,
    points: Sequence[bytes],
    outputs: Sequence[bytes],
    proof: bytes,
) -> bool:
    if len(proof) != 64 or not all(valid(y) and y != IDENTITY for y in outputs):
        return False
    K = mul(b2s(coefficient), public)
    P, Y = _combo(points, outputs)
    c, z = b2s(proof[:32]), b2s(proof[32:])
    A = padd(base(z), mul(c, K))
    B = padd(mul(z, P), mul(c, Y))
    return _challenge(K, P, Y, A, B) == c


def combine(answers: Sequence[Sequence[bytes]]) -> list[bytes]:
    out = list(answers[0])
    for a in answers[1:]:
        out = [padd(x, y) for x, y in zip(out, a, strict=True)]
    return out


def derive_kek(point: bytes, cluster_id: str, subject: str, version: int) -> bytes:
    info = b"keysplit cluster kek v1\x00" + bytes.fromhex(cluster_id) + struct.pack(">I", version)
    return HKDF(hashes.SHA256(), 16, salt=None, info=info + subject.encode()).derive(point)


def base_point(scalar: bytes) -> bytes:
    """``scalar * G``: a node's public share from its share."""
    return base(b2s(scalar))
