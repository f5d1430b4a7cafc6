"""A keyring's fingerprint: the trust anchor for sealing to it without a quorum.

Why: the keyring file's metadata is authenticated only under the master key, which an
encrypting process does not have, so whoever can write the keyring directory can swap in
their own X25519 public key. A sender checks the key against a fingerprint kept outside
the directory (printed at init, typed or pinned by the user).

Construction (the same as :func:`keysplit.trust.keyring_fingerprint` of the hardening
work, so either module can serve at merge time)::

    digest = SHA-256("keysplit keyring fingerprint v1" || 0x00
                     || u16be(len(id)) || id (UTF-8) || public_key (32 bytes))
    fingerprint = "ksk1" || bech32m("ksk", digest[:20])    (42 characters, 160 bits)

Typed fingerprints may use any case, spaces and ``-``; the bech32m checksum turns a typo
into a :class:`FormatError` rather than a mismatch.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from .. import _bech32
from ..errors import FormatError, KeyringError

__all__ = ["FingerprintMismatch", "check_fingerprint", "fingerprint"]

PREFIX = "ksk1"
_HRP = "ksk"
_LABEL = b"keysplit keyring fingerprint v1\x00"
_DIGEST_BYTES = 20
_CHARS = len(PREFIX) + 32 + 6


class FingerprintMismatch(KeyringError):
    """The keyring's public key or id does not match the fingerprint the caller trusts."""


def fingerprint(keyring_id: str, public_key: bytes) -> str:
    """The fingerprint committing to ``keyring_id`` and the X25519 ``public_key``."""
    if not isinstance(keyring_id, str) or not isinstance(public_key, bytes):
        raise TypeError("fingerprint(keyring_id: str, public_key: bytes)")
    if len(public_key) != 32:
        raise ValueError("a keyring public key is 32 bytes (X25519)")
    ident = keyring_id.encode()
    digest = hashlib.sha256(_LABEL + len(ident).to_bytes(2, "big") + ident + public_key).digest()
    values = _bech32.to_5bit(digest[:_DIGEST_BYTES])
    return PREFIX + _bech32.encode_chars(values + _bech32.checksum(_HRP, values))


def _canonical(text: str) -> str:
    if not isinstance(text, str):
        raise TypeError("an expected fingerprint is a str")
    hint = "a keyring fingerprint looks like ksk1... (42 characters); `keysplit status` shows it"
    canon = re.sub(r"[\s\-]+", "", text[: 4 * _CHARS]).lower()
    if len(text) > 4 * _CHARS or not canon.startswith(PREFIX) or len(canon) != _CHARS:
        raise FormatError("not a keyring fingerprint", hint=hint)
    values, _ = _bech32.decode_chars(canon[len(PREFIX) :])
    if values is None or not _bech32.verify(_HRP, values):
        raise FormatError("keyring fingerprint checksum does not match: a typo?", hint=hint)
    return canon


def check_fingerprint(expected: str, keyring_id: str, public_key: bytes) -> None:
    """Raise :class:`FingerprintMismatch` unless ``expected`` is this keyring's fingerprint
    (:class:`FormatError` if ``expected`` is not a well-formed fingerprint)."""
    want = _canonical(expected)
    have = fingerprint(keyring_id, public_key)
    if not hmac.compare_digest(want, have):
        raise FingerprintMismatch(
            f"keyring {keyring_id} has fingerprint {have}, not the expected {want}: "
            "its public key or id may have been replaced",
            hint="do not seal to it; compare with the fingerprint printed at init",
        )
