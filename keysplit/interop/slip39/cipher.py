"""The SLIP-39 master-secret encryption: a 4-round Feistel network over PBKDF2-HMAC-SHA256.

SLIP-39 never shares the master secret itself but its encryption under the passphrase
(the "encrypted master secret", EMS). Round ``i`` computes
``F = PBKDF2-HMAC-SHA256(password=bytes([i]) + passphrase, salt=salt + R,
iterations=(10000 << e) // 4, dklen=len(R))``; the salt is ``b"shamir" + identifier``
(2 bytes, big endian) for classic shares and empty for extendable ones, so that an
extendable backup can get new shares with a fresh identifier.

There is no passphrase check by design (plausible deniability): any passphrase decrypts
to *some* master secret. keysplit surfaces this in the docs and the CLI.
"""

from __future__ import annotations

import hashlib

__all__ = ["BASE_ITERATIONS", "ROUNDS", "decrypt", "encrypt"]

BASE_ITERATIONS = 10000
ROUNDS = 4
_CUSTOMIZATION = b"shamir"


def _salt(identifier: int, extendable: bool) -> bytes:
    return b"" if extendable else _CUSTOMIZATION + identifier.to_bytes(2, "big")


def _round(i: int, passphrase: bytes, exponent: int, salt: bytes, r: bytes) -> bytes:
    return hashlib.pbkdf2_hmac(
        "sha256",
        bytes([i]) + passphrase,
        salt + r,
        (BASE_ITERATIONS << exponent) // ROUNDS,
        dklen=len(r),
    )


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _feistel(
    data: bytes, passphrase: bytes, exponent: int, identifier: int, extendable: bool, order: range
) -> bytes:
    if len(data) % 2:
        raise ValueError("the secret length must be even")
    half = len(data) // 2
    left, right = data[:half], data[half:]
    salt = _salt(identifier, extendable)
    for i in order:
        left, right = right, _xor(left, _round(i, passphrase, exponent, salt, right))
    return right + left


def encrypt(
    master_secret: bytes, passphrase: bytes, exponent: int, identifier: int, extendable: bool
) -> bytes:
    """Master secret -> encrypted master secret (same length)."""
    return _feistel(master_secret, passphrase, exponent, identifier, extendable, range(ROUNDS))


def decrypt(
    ems: bytes, passphrase: bytes, exponent: int, identifier: int, extendable: bool
) -> bytes:
    """Encrypted master secret -> master secret (same length)."""
    return _feistel(ems, passphrase, exponent, identifier, extendable, range(ROUNDS - 1, -1, -1))
