"""``RemoteDataKeys``: the :class:`~keysplit.keyring.DataKeys` of a key service, cached.

What ``keysplit.Client(cache_max_age=..., cache_max_records=...)`` runs its records over:
the one record engine (:class:`~keysplit.keyring.records.Records`) in the backend's
process, keys fetched in batches from ``POST /v1/datakey`` (the service is spelling-aware
and authorizes each subject by its token's prefix). A cached key outlives a ``shred`` or
``seal`` on the server until it expires (``max_age`` seconds, or ``max_records`` records
sealed under it), and never longer than the fleet's lease ``ttl``; the cache holds at
most ``KEYSPLIT_CACHE_KEYS`` keys, least recently used dropped first
(:class:`keysplit.keyring.fleet.FleetConfig`). SECURITY.md spells out the trade-off.
"""

from __future__ import annotations

import threading
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .. import names
from ..errors import IntegrityError, KeysplitError
from ..keyring.fleet import FleetConfig
from ..record import DataKey

__all__ = ["KeyFetcher", "RemoteDataKeys"]


class KeyFetcher(Protocol):
    """The part of ``keysplit.Client`` this needs (a test can give something else)."""

    def keyring_id(self) -> str:
        """The served keyring's id."""
        ...

    def fetch_datakeys(self, subjects: Sequence[str], *, create: bool) -> list[bytes | None]:
        """Raw keys from the service, ``None`` where a subject has no key."""
        ...


@dataclass
class _Cached:
    key: DataKey
    born: float
    uses: int = 0


class RemoteDataKeys:
    """Data keys from a key service, with an optional age/use-bounded cache.

    ``resolve(create=True)`` is what sealing asks for, so it counts one use per subject
    occurrence against ``max_records``; opening does not count. ``export`` always asks the
    service (it never serves a raw key from memory: the cache holds derived keys only).
    """

    def __init__(
        self,
        fetcher: KeyFetcher,
        *,
        max_age: float | None = None,
        max_records: int | None = None,
    ) -> None:
        cfg = FleetConfig.from_env()  # the fleet's bounds hold for this cache too
        self._fetcher = fetcher
        self._max_age = min(max_age or cfg.lease_ttl, cfg.lease_ttl)
        self._max_uses = max_records
        self._max_keys = cfg.cache_keys
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()
        self._keyring_id: str | None = None

    def __repr__(self) -> str:
        return f"RemoteDataKeys({self._fetcher!r}, <redacted>)"

    def forked(self) -> None:
        """In a forked child: a lock of its own (another thread of the parent may have
        held this one at the fork: the child's copy would stay held for ever)."""
        self._lock = threading.Lock()

    @property
    def keyring_id(self) -> str:
        if self._keyring_id is None:
            self._keyring_id = self._fetcher.keyring_id()
        return self._keyring_id

    def resolve(self, subjects: Sequence[str], *, create: bool) -> list[DataKey | None]:
        now = time.monotonic()
        counts: dict[str, int] = {}
        for s in subjects:
            counts[s] = counts.get(s, 0) + 1
        fresh: dict[str, DataKey | None] = {}
        with self._lock:
            for s, n in counts.items():
                c = self._cache.get(s)
                if c is None:
                    continue
                too_old = self._max_age is not None and now - c.born > self._max_age
                too_used = create and self._max_uses is not None and c.uses + n > self._max_uses
                if too_old or too_used:
                    del self._cache[s]
                else:
                    fresh[s] = c.key
                    self._cache[s] = self._cache.pop(s)  # most recently used last (LRU)
        missing = [s for s in counts if s not in fresh]
        if missing:
            raws = self._fetcher.fetch_datakeys(missing, create=create)
            with self._lock:
                for s, raw in zip(missing, raws, strict=True):
                    if raw is None:
                        fresh[s] = None
                        continue
                    dk = DataKey(raw)
                    fresh[s] = dk
                    self._cache[s] = _Cached(dk, now)
                while len(self._cache) > self._max_keys:
                    del self._cache[next(iter(self._cache))]  # the least recently used
        if create:
            with self._lock:
                for s, n in counts.items():
                    c = self._cache.get(s)
                    if c is not None:
                        c.uses += n
        return [fresh[s] for s in subjects]

    def export(self, subjects: Sequence[str], *, create: bool) -> list[bytes | None]:
        return self._fetcher.fetch_datakeys(list(subjects), create=create)

    def evict(self, subjects: Sequence[str]) -> None:
        """Forget the cached keys of ``subjects`` under every spelling (after a shred).

        Every spelling, not only the NFC and NFD forms :func:`names.subject_spellings`
        names: a key cached under the spelling a caller decrypted with (combining marks
        out of canonical order, say) is dropped too, by comparing NFC forms. Only
        non-ASCII entries can be such spellings, and only a non-ASCII shred looks.
        """
        with self._lock:
            odd: set[str] = set()
            for s in subjects:
                try:
                    spellings: Sequence[str] = names.subject_spellings(s)
                except (TypeError, ValueError):
                    spellings = (s,) if isinstance(s, str) else ()
                for x in (s, *spellings) if isinstance(s, str) else ():
                    self._cache.pop(x, None)
                if isinstance(s, str) and not s.isascii():
                    odd.add(unicodedata.normalize("NFC", s))
            if odd:
                for x in [x for x in self._cache if not x.isascii()]:
                    if unicodedata.normalize("NFC", x) in odd:
                        del self._cache[x]

    def missing_error(self, subject: str) -> KeysplitError:
        """Why no key of ``subject`` opens a record, as the service tells it (shredded,
        never had one, or a wrong key); a detail-free :class:`IntegrityError` if the
        fetcher cannot say."""
        ask = getattr(self._fetcher, "missing_error", None)
        if ask is None:
            return IntegrityError()
        err: KeysplitError = ask(subject)
        return err

    def close(self) -> None:
        """Forget every cached key."""
        with self._lock:
            self._cache.clear()
