"""Key stores: where wrapped data keys live, behind one small protocol.

:class:`KeyStore` is the protocol; :class:`SQLiteKeyStore` the embedded default that
lives inside the keyring directory; :class:`PostgresKeyStore` (``postgresql://`` store
URLs, the ``postgres`` extra) keeps them in a database the backend already runs. It is
imported on first use, so ``import keysplit`` never needs psycopg.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import KeyStore, WrappedKey
from .sqlite import SQLiteKeyStore
from .url import check_store_url, default_store_url, open_store

if TYPE_CHECKING:
    from .postgres import PostgresKeyStore

__all__ = [
    "KeyStore",
    "PostgresKeyStore",
    "SQLiteKeyStore",
    "WrappedKey",
    "check_store_url",
    "default_store_url",
    "open_store",
]


def __getattr__(name: str) -> Any:
    if name == "PostgresKeyStore":
        from .postgres import PostgresKeyStore

        return PostgresKeyStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
