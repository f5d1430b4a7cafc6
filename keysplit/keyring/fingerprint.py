"""A keyring's fingerprint: the trust anchor for sealing to it without a quorum.

Why: the keyring file's metadata is authenticated only under the master key, which an
encrypting process does not have, so whoever can write the keyring directory can swap in
their own X25519 public key. A sender checks the key against a fingerprint kept outside
the directory (printed at init, typed or pinned by the user).

The construction lives in :mod:`keysplit.trust` (with the pinning file); this module is
the keyring's name for it, and ``FingerprintMismatch`` is ``UntrustedKeyringError``::

    digest = SHA-256("keysplit keyring fingerprint v1" || 0x00
                     || u16be(len(id)) || id (UTF-8) || public_key (32 bytes))
    fingerprint = "ksk1" || bech32m("ksk", digest[:20])    (42 characters, 160 bits)

Typed fingerprints may use any case, spaces and ``-``; the bech32m checksum turns a typo
into a :class:`FormatError` rather than a mismatch.
"""

from __future__ import annotations

from ..errors import UntrustedKeyringError as FingerprintMismatch
from ..trust import check_fingerprint
from ..trust import keyring_fingerprint as fingerprint

__all__ = ["FingerprintMismatch", "check_fingerprint", "fingerprint"]
