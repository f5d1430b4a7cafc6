"""keysplit: split-key encryption for storage backends and key ceremonies.

A store's AES-128 master key is split k-of-n among custodians (Shamir over GF(2^8)); once
k of them unseal it, per-subject data keys encrypt records with AES-128-GCM. See
README.md for the tour and SECURITY.md for the threat model.

``__all__`` is the recipe surface: shares, custody, keyrings, files, audit, and the
errors. The short names are the safe ones: :func:`encrypt_file`/:func:`encrypt_stream`
seal to a :class:`Keyring` after checking its fingerprint against the user's trust anchor
(:mod:`keysplit.trust`); the unchecked forms taking raw key bytes are
:func:`keysplit.stream.encrypt_file`/:func:`keysplit.stream.encrypt_stream`. Everything
else is importable from its module (``keysplit.stream.read_header``,
``keysplit.custody.sealed_share_info``, ``keysplit.store.open_store``, ...). Names that
were top-level before the surface shrank still resolve here, lazily, through the module
``__getattr__`` below (not in ``__all__``, not recommended for new code).

Primitives without verification live in :mod:`keysplit.hazmat` (GF(2^8), raw Shamir,
pycryptodome's share form, bare HPKE) and are never re-exported here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .audit import AuditLog
from .custody import (
    Argon2Params,
    Identity,
    Recipient,
    load_share,
    open_share,
    seal_share,
    seal_share_with_passphrase,
)
from .errors import (
    AuditError,
    ChecksumError,
    ClusterError,
    CustodianError,
    DuplicateShareError,
    FormatError,
    InsufficientSharesError,
    IntegrityError,
    KeyringError,
    KeysplitError,
    LegalHoldError,
    MixedSharesError,
    NoDataKeyError,
    PermissionDenied,
    RecoveryError,
    SealedError,
    ShareError,
    ShreddedError,
)
from .keyring import Keyring, UnsealedKeyring, Unsealer, hpke_seal
from .service import Client, RecordKeyring
from .share import Share, combine, secret_fingerprint, split, verify_set
from .stream import decrypt_file, decrypt_stream
from .trust import encrypt_file, encrypt_stream

__version__ = "0.1.0"

__all__ = [
    "Argon2Params",
    "AuditError",
    "AuditLog",
    "ChecksumError",
    "Client",
    "ClusterError",
    "CustodianError",
    "DuplicateShareError",
    "FormatError",
    "Identity",
    "InsufficientSharesError",
    "IntegrityError",
    "Keyring",
    "KeyringError",
    "KeysplitError",
    "LegalHoldError",
    "MixedSharesError",
    "NoDataKeyError",
    "PermissionDenied",
    "Recipient",
    "RecordKeyring",
    "RecoveryError",
    "SealedError",
    "Share",
    "ShareError",
    "ShreddedError",
    "UnsealedKeyring",
    "Unsealer",
    "__version__",
    "combine",
    "decrypt_file",
    "decrypt_stream",
    "encrypt_file",
    "encrypt_stream",
    "hpke_seal",
    "load_share",
    "open_share",
    "seal_share",
    "seal_share_with_passphrase",
    "secret_fingerprint",
    "split",
    "verify_set",
]

if TYPE_CHECKING:  # the former top-level names, typed for mypy (resolved lazily below)
    from .audit import AuditEntry as AuditEntry
    from .audit import AuditReport as AuditReport
    from .custody import SealedShareInfo as SealedShareInfo
    from .custody import check_custodian_name as check_custodian_name
    from .custody import is_sealed as is_sealed
    from .custody import sealed_share_info as sealed_share_info
    from .keyring import KeyringStatus as KeyringStatus
    from .keyring import RewrapResult as RewrapResult
    from .keyring import UnsealProgress as UnsealProgress
    from .service.cluster_client import ClusterClient as ClusterClient
    from .store import KeyStore as KeyStore
    from .store import SQLiteKeyStore as SQLiteKeyStore
    from .store import WrappedKey as WrappedKey
    from .stream import StreamHeader as StreamHeader
    from .stream import StreamInfo as StreamInfo
    from .stream import read_header as read_header
    from .stream import recipient_id as recipient_id

_MOVED = {
    "AuditEntry": "audit",
    "AuditReport": "audit",
    "SealedShareInfo": "custody",
    "check_custodian_name": "custody",
    "is_sealed": "custody",
    "sealed_share_info": "custody",
    "KeyringStatus": "keyring",
    "RewrapResult": "keyring",
    "UnsealProgress": "keyring",
    "KeyStore": "store",
    "SQLiteKeyStore": "store",
    "WrappedKey": "store",
    "StreamHeader": "stream",
    "StreamInfo": "stream",
    "read_header": "stream",
    "recipient_id": "stream",
}
"""Former top-level names -> the module that owns them (resolved by ``__getattr__``)."""

_EXTRA = {"ClusterClient": "service.cluster_client"}
"""Top-level names outside the recipe surface ``__all__`` (kept small on purpose,
tests/test_layering.py): ``keysplit.ClusterClient("DIR", token=...)`` is the key-cluster
client, a backend's one-constructor switch from :class:`Client`."""


def __getattr__(name: str) -> object:
    module = _MOVED.get(name) or _EXTRA.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # resolve once
    return value
