"""Key stores: where wrapped data keys live, behind one small protocol.

:class:`KeyStore` is the protocol; :class:`SQLiteKeyStore` the embedded default that
lives inside the keyring directory.
"""

from __future__ import annotations

from .base import KeyStore, WrappedKey
from .sqlite import SQLiteKeyStore
from .url import check_store_url, default_store_url, open_store

__all__ = [
    "KeyStore",
    "SQLiteKeyStore",
    "WrappedKey",
    "check_store_url",
    "default_store_url",
    "open_store",
]
