"""keysplit: split-key encryption for storage backends and key ceremonies.

A store's AES-128 master key is split k-of-n among custodians (Shamir over GF(2^8)); once
k of them unseal it, per-subject data keys encrypt records with AES-128-GCM. See
README.md for the tour and SECURITY.md for the threat model.

The safe API is re-exported here. Low-level building blocks (:mod:`keysplit.gf256`,
:mod:`keysplit.shamir`, :mod:`keysplit.keywrap`) are *hazmat*: they do no verification
and are documented as such.
"""

from __future__ import annotations

from .audit import AuditEntry, AuditLog, AuditReport
from .custodian import (
    Argon2Params,
    Identity,
    Recipient,
    SealedShareInfo,
    check_custodian_name,
    is_sealed,
    load_share,
    open_share,
    seal_share,
    seal_share_with_passphrase,
    sealed_share_info,
)
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
    PermissionDenied,
    RecoveryError,
    SealedError,
    ShareError,
)
from .keyring import (
    Keyring,
    KeyringStatus,
    RewrapResult,
    UnsealedKeyring,
    Unsealer,
    UnsealProgress,
    hpke_seal,
)
from .service import Client, RecordKeyring
from .share import Share, combine, secret_fingerprint, split, verify_set
from .store import KeyStore, SQLiteKeyStore, WrappedKey
from .stream import (
    StreamHeader,
    StreamInfo,
    decrypt_file,
    decrypt_stream,
    encrypt_file,
    encrypt_stream,
    read_header,
    recipient_id,
)

__version__ = "0.1.0"

__all__ = [
    "Argon2Params",
    "AuditEntry",
    "AuditError",
    "AuditLog",
    "AuditReport",
    "ChecksumError",
    "Client",
    "CustodianError",
    "DuplicateShareError",
    "FormatError",
    "Identity",
    "InsufficientSharesError",
    "IntegrityError",
    "KeyStore",
    "Keyring",
    "KeyringError",
    "KeyringStatus",
    "KeysplitError",
    "LegalHoldError",
    "MixedSharesError",
    "PermissionDenied",
    "Recipient",
    "RecordKeyring",
    "RecoveryError",
    "RewrapResult",
    "SQLiteKeyStore",
    "SealedError",
    "SealedShareInfo",
    "Share",
    "ShareError",
    "StreamHeader",
    "StreamInfo",
    "UnsealProgress",
    "UnsealedKeyring",
    "Unsealer",
    "WrappedKey",
    "__version__",
    "check_custodian_name",
    "combine",
    "decrypt_file",
    "decrypt_stream",
    "encrypt_file",
    "encrypt_stream",
    "hpke_seal",
    "is_sealed",
    "load_share",
    "open_share",
    "read_header",
    "recipient_id",
    "seal_share",
    "seal_share_with_passphrase",
    "sealed_share_info",
    "secret_fingerprint",
    "split",
    "verify_set",
]
