"""Bulk rewrap: move stored data keys to the current KEK version, batch by batch.

Needs only a :class:`~keysplit.keyring.datakeys.KekSet` and a key store, so a rewrap job
in another process or on another host runs the same loop over its own range of subjects
(``after``/``until``) with KEKs handed over by :meth:`UnsealedKeyring.keks_for_rewrap`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..store import KeyStore, WrappedKey
from ..store.base import check_batch_size
from .datakeys import KekSet

__all__ = ["RewrapResult", "rewrap_rows", "rewrap_store"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RewrapResult:
    """What a rewrap did: keys moved to ``kek_version``, and how many remain stale.

    ``corrupt`` names subjects whose stored wrapped key failed authentication: they were
    left untouched (their records cannot be decrypted either) and count in ``remaining``.
    """

    rewrapped: int
    kek_version: int
    remaining: int
    corrupt: tuple[str, ...] = ()


def rewrap_rows(
    keks: KekSet, rows: Sequence[WrappedKey]
) -> tuple[list[tuple[WrappedKey, WrappedKey]], list[str]]:
    """``(old, new)`` pairs for :meth:`KeyStore.replace_many`, and the subjects whose row
    failed its integrity check (detected per key: skipped, reported, never rewrapped)."""
    if not rows:
        return [], []
    raw, ok = keks.unwrap(rows)
    good = [i for i in range(len(rows)) if ok[i]]
    sel = raw[good]
    raw.fill(0)
    new = keks.wrap([rows[i].subject for i in good], sel)
    sel.fill(0)
    pairs = [(rows[i], n) for i, n in zip(good, new, strict=True)]
    corrupt = [rows[i].subject for i in range(len(rows)) if not ok[i]]
    return pairs, corrupt


def rewrap_store(
    keks: KekSet,
    store: KeyStore,
    *,
    batch_size: int = 10_000,
    progress: Progress | None = None,
    after: str = "",
    until: str | None = None,
) -> RewrapResult:
    """Rewrap every stale key with ``after < subject`` (and ``subject <= until`` if given).

    Each batch commits in one transaction (``replace_many`` only where the row is still
    the one read), so an interrupted rewrap loses nothing and resumes when run again.
    ``progress(done, total)`` is called after every batch (``total``: stale keys of the
    whole store). ``remaining`` counts the whole store too.
    """
    check_batch_size(batch_size)
    current = keks.current
    keks.kek(current)
    total = sum(c for v, c in store.count_by_version().items() if v != current)
    done = 0
    corrupt: list[str] = []
    while True:
        rows = store.stale_batch(current, after, batch_size)
        if until is not None:
            rows = [r for r in rows if r.subject <= until]
        if not rows:
            break
        after = rows[-1].subject
        pairs, bad = rewrap_rows(keks, rows)
        corrupt += bad
        done += store.replace_many(pairs)
        if progress is not None:
            progress(done, total)
    remaining = sum(c for v, c in store.count_by_version().items() if v != current)
    return RewrapResult(done, current, remaining, tuple(corrupt))
