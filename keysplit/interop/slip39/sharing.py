"""SLIP-39's Shamir layer: digest-checked splits at two levels, on keysplit's GF(2^8) core.

SLIP-39 interpolates over GF(2^8) with the AES polynomial, like :mod:`keysplit.hazmat.shamir`,
but places the shared secret at x = 255 and a *digest share* at x = 254: 4 bytes of
HMAC-SHA256(key=R, msg=secret) followed by the random R. A ``t``-of-``n`` split takes
``t - 2`` random shares at x = 0.., adds those two points, and evaluates the unique
polynomial through them at the remaining member indices. Recovery interpolates at 255 and
254 and checks the digest, so a wrong or foreign share is detected (probability of a
miss 2^-32). A threshold of 1 copies the secret and has no digest.

Unlike the reference implementation (lookup tables, "not hardened"), every product of a
secret byte array here is a :func:`keysplit.hazmat.gf256.mul_const` by a PUBLIC Lagrange
coefficient computed from the x-coordinates only.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

import numpy as np

from ...errors import RecoveryError
from ...hazmat import gf256
from ...rng import RandomSource

__all__ = ["DIGEST_INDEX", "SECRET_INDEX", "interpolate", "recover_secret", "split_secret"]

SECRET_INDEX = 255
DIGEST_INDEX = 254
_DIGEST_BYTES = 4


def _coefficients(xs: Sequence[int], at: int) -> list[int]:
    """Lagrange basis at ``at`` for distinct PUBLIC x-coordinates ``xs``."""
    out = []
    for j, xj in enumerate(xs):
        num, den = 1, 1
        for m, xm in enumerate(xs):
            if m != j:
                num = gf256.mul_scalar(num, at ^ xm)
                den = gf256.mul_scalar(den, xj ^ xm)
        out.append(gf256.mul_scalar(num, gf256.inv_scalar(den)))
    return out


def interpolate(points: Sequence[tuple[int, bytes]], at: int) -> bytes:
    """Evaluate the polynomial through ``points`` (distinct x, equal-length y) at ``at``."""
    xs = [x for x, _ in points]
    if len(set(xs)) != len(xs):
        raise ValueError("x-coordinates must be distinct")
    for x, y in points:
        if x == at:
            return y
    coeffs = _coefficients(xs, at)
    acc = np.zeros(len(points[0][1]), dtype=np.uint8)
    for (_, y), c in zip(points, coeffs, strict=True):
        np.bitwise_xor(acc, gf256.mul_const(np.frombuffer(y, dtype=np.uint8), c), out=acc)
    return acc.tobytes()


def _digest(random_part: bytes, secret: bytes) -> bytes:
    return hmac.new(random_part, secret, hashlib.sha256).digest()[:_DIGEST_BYTES]


def split_secret(
    threshold: int, count: int, secret: bytes, rng: RandomSource
) -> list[tuple[int, bytes]]:
    """``threshold``-of-``count`` shares at x = 0..count-1 (caller validated the numbers)."""
    if threshold == 1:
        return [(i, secret) for i in range(count)]
    n_random = threshold - 2
    shares = [(i, rng.random_bytes(len(secret))) for i in range(n_random)]
    random_part = rng.random_bytes(len(secret) - _DIGEST_BYTES)
    base = [
        *shares,
        (DIGEST_INDEX, _digest(random_part, secret) + random_part),
        (SECRET_INDEX, secret),
    ]
    shares += [(i, interpolate(base, i)) for i in range(n_random, count)]
    return shares


def recover_secret(threshold: int, points: Sequence[tuple[int, bytes]]) -> bytes:
    """Recover from at least ``threshold`` points; checks the digest (threshold >= 2).

    Raises :class:`RecoveryError` if the digest does not match, or (threshold 1) if the
    copies differ.
    """
    if threshold == 1:
        first = points[0][1]
        if not all(hmac.compare_digest(first, y) for _, y in points[1:]):
            raise RecoveryError("the shares of a 1-of-n group differ")
        return first
    secret = interpolate(points, SECRET_INDEX)
    digest_share = interpolate(points, DIGEST_INDEX)
    expected = _digest(digest_share[_DIGEST_BYTES:], secret)
    if not hmac.compare_digest(expected, digest_share[:_DIGEST_BYTES]):
        raise RecoveryError(
            "the SLIP-39 shares do not fit together (digest mismatch)",
            hint="one of the shares is wrong or belongs to another backup",
        )
    return secret
