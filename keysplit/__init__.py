"""keysplit: split-key encryption for storage backends and key ceremonies.

A store's AES-128 master key is split k-of-n among custodians (Shamir over GF(2^8)); once
k of them unseal it, per-subject data keys encrypt records with AES-128-GCM. See
README.md for the tour and SECURITY.md for the threat model.

The safe API is re-exported here. Low-level building blocks (:mod:`keysplit.gf256`,
:mod:`keysplit.shamir`, :mod:`keysplit.keywrap`) are *hazmat*: they do no verification
and are documented as such.
"""

from __future__ import annotations

from .errors import (
    AuditError,
    ChecksumError,
    CustodianError,
    DuplicateShareError,
    FormatError,
    InsufficientSharesError,
    IntegrityError,
    KeyringError,
    KeysplitError,
    LegalHoldError,
    MixedSharesError,
    RecoveryError,
    SealedError,
    ShareError,
)
from .share import Share, combine, secret_fingerprint, split, verify_set

__version__ = "0.1.0"

__all__ = [
    "AuditError",
    "ChecksumError",
    "CustodianError",
    "DuplicateShareError",
    "FormatError",
    "InsufficientSharesError",
    "IntegrityError",
    "KeyringError",
    "KeysplitError",
    "LegalHoldError",
    "MixedSharesError",
    "RecoveryError",
    "SealedError",
    "Share",
    "ShareError",
    "__version__",
    "combine",
    "secret_fingerprint",
    "split",
    "verify_set",
]
