"""HPKE (RFC 9180) base mode, single shot, with ONE suite: DHKEM(X25519, HKDF-SHA256),
HKDF-SHA256, AES-128-GCM. **Hazmat**: no framing, no key ids, no policy.

Why a hand-written key schedule when ``cryptography`` (50.x) has ``hpke.Suite``: its
public one-shot API takes neither associated data nor the ephemeral key, and keysplit's
stream vectors need a deterministic ephemeral key drawn through the RNG seam. So the
schedule lives here, once (RFC 9180 sections 4.1, 5.1, 5.2 and 7.1.3), and the tests
check it against the RFC's vectors from ``cryptography-vectors`` (including AAD) and
against ``hpke.Suite`` in both directions. Ciphertexts are ``enc (32) || AES-GCM ct``,
byte-compatible with ``hpke.Suite.encrypt`` / ``decrypt``.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from ..errors import IntegrityError

__all__ = ["ENC_SIZE", "KEY_SIZE", "TAG_SIZE", "key_schedule", "open", "seal"]

ENC_SIZE = 32
KEY_SIZE = 16
TAG_SIZE = 16
_MAX_SEALED = ENC_SIZE + (2**31 - 1) + TAG_SIZE
"""The longest ``enc || ct``: AES-GCM in ``cryptography`` takes at most 2**31 - 1 bytes."""
_KEM_SUITE_ID = b"KEM\x00\x20"
_HPKE_SUITE_ID = b"HPKE\x00\x20\x00\x01\x00\x01"


def _labeled_extract(salt: bytes, label: bytes, ikm: bytes, suite_id: bytes) -> bytes:
    return hmac.new(salt, b"HPKE-v1" + suite_id + label + ikm, hashlib.sha256).digest()


def _labeled_expand(prk: bytes, label: bytes, info: bytes, length: int, suite_id: bytes) -> bytes:
    labeled = length.to_bytes(2, "big") + b"HPKE-v1" + suite_id + label + info
    return HKDFExpand(hashes.SHA256(), length, labeled).derive(prk)


def _schedule(dh: bytes, enc: bytes, pk_r: bytes, info: bytes) -> tuple[bytes, bytes]:
    kem_context = enc + pk_r
    eae_prk = _labeled_extract(b"", b"eae_prk", dh, _KEM_SUITE_ID)
    shared = _labeled_expand(eae_prk, b"shared_secret", kem_context, 32, _KEM_SUITE_ID)
    psk_id_hash = _labeled_extract(b"", b"psk_id_hash", b"", _HPKE_SUITE_ID)
    info_hash = _labeled_extract(b"", b"info_hash", info, _HPKE_SUITE_ID)
    context = b"\x00" + psk_id_hash + info_hash
    secret = _labeled_extract(shared, b"secret", b"", _HPKE_SUITE_ID)
    key = _labeled_expand(secret, b"key", context, KEY_SIZE, _HPKE_SUITE_ID)
    base_nonce = _labeled_expand(secret, b"base_nonce", context, 12, _HPKE_SUITE_ID)
    return key, base_nonce


def _public(pk: X25519PublicKey | bytes) -> X25519PublicKey:
    if isinstance(pk, X25519PublicKey):
        return pk
    if isinstance(pk, (bytes, bytearray)) and len(pk) == 32:
        return X25519PublicKey.from_public_bytes(bytes(pk))
    raise TypeError("pk must be an X25519PublicKey or its 32 raw bytes")


def _private(sk: X25519PrivateKey | bytes) -> X25519PrivateKey:
    if isinstance(sk, X25519PrivateKey):
        return sk
    if isinstance(sk, (bytes, bytearray)) and len(sk) == 32:
        return X25519PrivateKey.from_private_bytes(bytes(sk))
    raise TypeError("sk must be an X25519PrivateKey or its 32 raw bytes")


def key_schedule(
    pk: X25519PublicKey | bytes, ephemeral: X25519PrivateKey | bytes, info: bytes
) -> tuple[bytes, bytes, bytes]:
    """Encap + KeySchedule (base mode): ``(enc, key, base_nonce)``. For vectors and tests."""
    recipient = _public(pk)
    eph = _private(ephemeral)
    enc = eph.public_key().public_bytes_raw()
    key, nonce = _schedule(eph.exchange(recipient), enc, recipient.public_bytes_raw(), info)
    return enc, key, nonce


def seal(
    pk: X25519PublicKey | bytes,
    info: bytes,
    pt: bytes,
    *,
    aad: bytes = b"",
    ephemeral: X25519PrivateKey | bytes | None = None,
) -> bytes:
    """Seal ``pt`` to ``pk``: ``enc || ct``. ``ephemeral`` only for reproducible vectors.

    A caller-chosen ephemeral key must be fresh randomness for every call (keysplit draws
    it through its RNG seam); reusing one reuses the AES-GCM key and nonce.
    """
    eph = X25519PrivateKey.generate() if ephemeral is None else _private(ephemeral)
    enc, key, nonce = key_schedule(pk, eph, info)
    return enc + AESGCM(key).encrypt(nonce, pt, aad)


def open(sk: X25519PrivateKey | bytes, info: bytes, enc_ct: bytes, *, aad: bytes = b"") -> bytes:
    """Open ``enc || ct`` with ``sk``; any failure is a detail-free IntegrityError."""
    private = _private(sk)
    if not isinstance(enc_ct, (bytes, bytearray, memoryview)) or not (
        ENC_SIZE + TAG_SIZE <= len(enc_ct) <= _MAX_SEALED
    ):  # longer: cryptography's decrypt panics (a BaseException), and seal never made it
        raise IntegrityError()
    data = bytes(enc_ct)
    enc = data[:ENC_SIZE]
    try:
        dh = private.exchange(X25519PublicKey.from_public_bytes(enc))
        pk_r = private.public_key().public_bytes_raw()
        key, nonce = _schedule(dh, enc, pk_r, info)
        return AESGCM(key).decrypt(nonce, data[ENC_SIZE:], aad)
    except (InvalidTag, ValueError):
        raise IntegrityError() from None
