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
were top-level before the surface shrank are gone from here (keysplit is unreleased, so
no alias is carried into a first release); asking for one raises an ``AttributeError``
naming its module (docs/MIGRATION.md, "Names no longer at the top level").

Primitives without verification live in :mod:`keysplit.hazmat` (GF(2^8), raw Shamir,
pycryptodome's share form, bare HPKE) and are never re-exported here.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

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
    StoreUnreachableError,
)

if TYPE_CHECKING:  # imported on first use (_LAZY below), typed for mypy here
    from .audit import AuditLog as AuditLog
    from .custody import Argon2Params as Argon2Params
    from .custody import Identity as Identity
    from .custody import Recipient as Recipient
    from .custody import load_share as load_share
    from .custody import open_share as open_share
    from .custody import seal_share as seal_share
    from .custody import seal_share_with_passphrase as seal_share_with_passphrase
    from .keyring import Keyring as Keyring
    from .keyring import UnsealedKeyring as UnsealedKeyring
    from .keyring import Unsealer as Unsealer
    from .keyring import hpke_seal as hpke_seal
    from .service import Client as Client
    from .service import RecordKeyring as RecordKeyring
    from .share import Share as Share
    from .share import combine as combine
    from .share import secret_fingerprint as secret_fingerprint
    from .share import split as split
    from .share import verify_set as verify_set
    from .stream import decrypt_file as decrypt_file
    from .stream import decrypt_stream as decrypt_stream
    from .trust import encrypt_file as encrypt_file
    from .trust import encrypt_stream as encrypt_stream

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
    "StoreUnreachableError",
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

if TYPE_CHECKING:  # the lazy top-level name below, typed for mypy
    from .service.cluster_client import ClusterClient as ClusterClient

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
"""Former top-level names -> the module that owns them now. Only named in the error (never
imported or returned here): one name, one home."""

_LAZY = {
    "AuditLog": "audit",
    "Argon2Params": "custody",
    "Identity": "custody",
    "Recipient": "custody",
    "load_share": "custody",
    "open_share": "custody",
    "seal_share": "custody",
    "seal_share_with_passphrase": "custody",
    "Keyring": "keyring",
    "UnsealedKeyring": "keyring",
    "Unsealer": "keyring",
    "hpke_seal": "keyring",
    "Client": "service",
    "RecordKeyring": "service",
    "Share": "share",
    "combine": "share",
    "secret_fingerprint": "share",
    "split": "share",
    "verify_set": "share",
    "decrypt_file": "stream",
    "decrypt_stream": "stream",
    "encrypt_file": "trust",
    "encrypt_stream": "trust",
}
"""The recipe names of ``__all__`` (all but the errors) -> their module, imported on first use
(PEP 562): ``import keysplit`` costs only the errors, so a program (the CLI's ``--help``)
pays for numpy, cryptography and the rest only when it uses a part that needs them."""

_EXTRA = {"ClusterClient": "service.cluster_client"}
"""Top-level names outside the recipe surface ``__all__`` (kept small on purpose,
tests/contract/test_layering.py): ``keysplit.ClusterClient("DIR", token=...)`` is the key-cluster
client, a backend's one-constructor switch from :class:`Client`."""


def __getattr__(name: str) -> object:
    moved = _MOVED.get(name)
    if moved is not None:
        raise AttributeError(
            f"module {__name__!r} has no attribute {name!r}: it lives in "
            f"{__name__}.{moved} (from {__name__}.{moved} import {name}; docs/MIGRATION.md)",
            name=name,
        )
    module = _LAZY.get(name) or _EXTRA.get(name)
    if module is None:
        # a submodule, as ``keysplit.stream`` was after a bare ``import keysplit`` when this
        # module imported its parts eagerly
        if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}"):
            return importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # resolve once
    return value
