"""Old import path of :mod:`keysplit.keyring.file` (the sealed keyring file format).

Kept so ``from keysplit import _keyring_file`` keeps working; new code imports
``keysplit.keyring.file``.
"""

from __future__ import annotations

from .keyring.file import (
    _HEAD,
    _KEK,
    _MAX_META,
    FORMAT_NAME,
    MAGIC,
    SECRETS_VERSION,
    VERSION,
    Custodian,
    KeyringMeta,
    KeyringSecrets,
    open_secrets,
    parse,
    serialize,
)

__all__ = ["Custodian", "KeyringMeta", "KeyringSecrets", "open_secrets", "parse", "serialize"]
__all__ += ["FORMAT_NAME", "MAGIC", "SECRETS_VERSION", "VERSION", "_HEAD", "_KEK", "_MAX_META"]
