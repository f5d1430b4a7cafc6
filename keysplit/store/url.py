"""Store URLs: the one place a key store is chosen from a string.

``sqlite:///abs/path/keys.sqlite`` (or ``sqlite:keys.sqlite``, relative to the keyring
directory) is the embedded default; ``postgresql://...`` selects the PostgreSQL store.
A URL never carries a password: PostgreSQL credentials come from libpq's environment,
``.pgpass`` or ``PGPASSFILE``, so the URL can be recorded in the keyring directory.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from ..errors import KeyringError
from .base import KeyStore
from .sqlite import SQLiteKeyStore

__all__ = ["DEFAULT_STORE_FILE", "check_store_url", "default_store_url", "open_store"]

DEFAULT_STORE_FILE = "keys.sqlite"


def default_store_url() -> str:
    """The embedded default: ``keys.sqlite`` inside the keyring directory."""
    return f"sqlite:{DEFAULT_STORE_FILE}"


def check_store_url(url: str) -> str:
    """Validate a store URL (scheme known, no password); returns it unchanged."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        if not (parts.path or parts.netloc):
            raise KeyringError("a sqlite store URL needs a path (sqlite:///abs/path)")
        return url
    if parts.scheme in ("postgresql", "postgres"):
        if parts.password is not None or "password=" in parts.query:
            raise KeyringError(
                "a store URL must not carry a password",
                hint="use PGPASSWORD, ~/.pgpass or PGPASSFILE",
            )
        return url
    raise KeyringError(f"unknown store URL scheme {parts.scheme!r} (use sqlite: or postgresql:)")


def open_store(
    url: str | None, *, keyring_id: str, home: str | Path, create: bool = False
) -> KeyStore:
    """Open (or with ``create`` make) the key store a URL names, bound to ``keyring_id``.

    ``home`` is the keyring directory; relative sqlite paths resolve against it.
    """
    url = check_store_url(url or default_store_url())
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = Path(parts.path) if url.startswith("sqlite:///") else Path(home) / url[7:]
        return SQLiteKeyStore(path, keyring_id, create=create)
    try:
        from .postgres import PostgresKeyStore  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise KeyringError(f"PostgreSQL store unavailable: {exc}") from None
    store: KeyStore = PostgresKeyStore(url, keyring_id, create=create)
    return store
