"""Store URLs: the one place a store URL is parsed and checked.

``sqlite:///abs/path/keys.sqlite`` (or ``sqlite:keys.sqlite``, relative to the keyring
directory) is the embedded default; ``postgresql://...`` selects the PostgreSQL store.
A URL never carries a password: PostgreSQL credentials come from libpq's environment,
``.pgpass`` or ``PGPASSFILE``, so the URL can be recorded in the keyring directory.

A PostgreSQL URL is a libpq connection URI plus two keysplit parameters, stripped before
the URI reaches libpq: ``schema`` (default ``keysplit``), the PostgreSQL schema holding
this keyring's tables, so several keyrings share one database
(``postgresql:///app?host=/run/pg&schema=keys_eu``); and ``call_timeout`` (seconds,
default :data:`DEFAULT_CALL_TIMEOUT`), the bound on one store call over an open
connection (:class:`~keysplit.store.postgres.PostgresKeyStore`).

Parsing only: :func:`keysplit.store.open_store` turns a URL into a store, and the
stores import this module, never the other way round.
"""

from __future__ import annotations

import math
import re
from urllib.parse import SplitResult, parse_qsl, quote, urlencode, urlsplit

from ..errors import KeyringError

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_PG_SCHEMA",
    "DEFAULT_STORE_FILE",
    "check_store_url",
    "default_store_url",
    "postgres_call_timeout",
    "postgres_conninfo",
]

DEFAULT_STORE_FILE = "keys.sqlite"
DEFAULT_PG_SCHEMA = "keysplit"
DEFAULT_CALL_TIMEOUT = 120.0
"""Seconds one PostgreSQL store call may take on an open connection (``call_timeout``):
a rewrap batch of 10^4 keys takes well under a second, the largest (10^6) under a minute."""
_KEYSPLIT_PARAMS = ("schema", "call_timeout")
# lower-case SQL identifiers only: never quoted differently by hand, never a keyword clash
_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def default_store_url() -> str:
    """The embedded default: ``keys.sqlite`` inside the keyring directory."""
    return f"sqlite:{DEFAULT_STORE_FILE}"


def check_store_url(url: str) -> str:
    """Validate a store URL (scheme known, no password); returns it unchanged."""
    parts = _split(url)
    if parts.scheme == "sqlite":
        if not (parts.path or parts.netloc):
            raise KeyringError("a sqlite store URL needs a path (sqlite:///abs/path)")
        if parts.netloc or "?" in url or "#" in url:
            # urlsplit would cut the path at '?' or '#' (sqlite:///d/keys?eu.sqlite opened
            # /d/keys) and a host has no meaning for a local file
            raise KeyringError(
                "a sqlite store URL is a local path without host, '?' or '#'",
                hint="sqlite:///abs/path/keys.sqlite or sqlite:relative/keys.sqlite",
            )
        return url
    if parts.scheme in ("postgresql", "postgres"):
        # parameter names as libpq reads them, percent-decoded: pass%77ord= is password=
        params = [k.lower() for k, _ in parse_qsl(parts.query, keep_blank_values=True)]
        if (
            parts.password is not None
            or "password=" in parts.query
            or any("password" in k for k in params)
        ):
            raise KeyringError(
                "a store URL must not carry a password",
                hint="use PGPASSWORD, ~/.pgpass or PGPASSFILE",
            )
        postgres_conninfo(url)  # validates the schema parameter
        postgres_call_timeout(url)  # and the call bound
        return url
    raise KeyringError(f"unknown store URL scheme {parts.scheme!r} (use sqlite: or postgresql:)")


def _split(url: str) -> SplitResult:
    """``urlsplit``, its ``ValueError`` (an unclosed IPv6 bracket) as :class:`KeyringError`;
    a NUL is refused here too (no path or libpq URI can carry one)."""
    if isinstance(url, str) and "\0" in url:
        raise KeyringError("a store URL must not contain a NUL character")
    try:
        return urlsplit(url)
    except ValueError as exc:
        raise KeyringError(f"invalid store URL: {exc}") from None


def postgres_conninfo(url: str) -> tuple[str, str]:
    """Split a ``postgresql://`` store URL into (libpq URI without ``schema``, schema name)."""
    parts = _split(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise KeyringError(f"not a PostgreSQL store URL (scheme {parts.scheme!r})")
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in query if k == "schema"]
    if len(schemas) > 1:
        raise KeyringError("a store URL names its schema at most once")
    schema = schemas[0] if schemas else DEFAULT_PG_SCHEMA
    if not _SCHEMA_RE.fullmatch(schema):
        raise KeyringError(
            f"invalid schema name {schema!r} in store URL",
            hint="use lower-case letters, digits and _ (at most 63, not starting with a digit)",
        )
    rest = urlencode(
        [(k, v) for k, v in query if k not in _KEYSPLIT_PARAMS], quote_via=quote, safe="/"
    )
    # by hand: urlunsplit drops the "//" of an empty host (postgresql:///db?host=/run/pg)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + (f"?{rest}" if rest else ""), schema


def postgres_call_timeout(url: str) -> float:
    """The URL's ``call_timeout`` (seconds, a positive finite number), else
    :data:`DEFAULT_CALL_TIMEOUT`."""
    query = parse_qsl(_split(url).query, keep_blank_values=True)
    given = [v for k, v in query if k == "call_timeout"]
    if not given:
        return DEFAULT_CALL_TIMEOUT
    try:
        seconds = float(given[0]) if len(given) == 1 else math.nan
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise KeyringError(
            f"invalid call_timeout {given[-1]!r} in store URL",
            hint="give it once, in seconds (a positive number), e.g. call_timeout=30",
        )
    return seconds
