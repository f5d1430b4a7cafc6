"""Key stores: where wrapped data keys live, behind one small protocol.

:class:`KeyStore` is the protocol; :class:`SQLiteKeyStore` the embedded default that
lives inside the keyring directory; :class:`PostgresKeyStore` (``postgresql://`` store
URLs, the ``postgres`` extra) keeps them in a database the backend already runs. It is
imported on first use, so ``import keysplit`` never needs psycopg. :func:`open_store` is
the one place a store is chosen from its URL (parsed by :mod:`.url`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import KeyringError
from .base import KeyStore, WrappedKey
from .sqlite import SQLiteKeyStore
from .url import check_store_url, default_store_url

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


def open_store(
    url: str | None,
    *,
    keyring_id: str,
    home: str | Path,
    create: bool = False,
    read_only: bool = False,
) -> KeyStore:
    """Open (or with ``create`` make) the key store a URL names, bound to ``keyring_id``.

    ``home`` is the keyring directory; relative sqlite paths resolve against it.
    ``read_only``: the caller only reads, so a PostgreSQL role granted SELECT alone may
    open it (else the open refuses a role lacking a privilege a write needs, naming it),
    and the open never upgrades a store of an older schema (it refuses, naming both
    versions: the upgrade writes, which a standby or a SELECT-only role refuses).
    """
    url = check_store_url(url or default_store_url())
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = Path(parts.path) if url.startswith("sqlite:///") else Path(home) / url[7:]
        return SQLiteKeyStore(path, keyring_id, create=create, read_only=read_only)
    try:
        from .postgres import PostgresKeyStore  # lazily: psycopg is an optional extra
    except ImportError as exc:
        raise KeyringError(
            f"PostgreSQL store unavailable: {exc}",
            hint="install the 'postgres' extra: pip install '.[postgres]' in a keysplit "
            "checkout (not on PyPI)",
        ) from None
    store: KeyStore = PostgresKeyStore(url, keyring_id, create=create, read_only=read_only)
    return store
