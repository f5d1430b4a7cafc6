"""The key store protocol: what the keyring needs from wherever wrapped data keys live.

A key store only ever sees *wrapped* data keys (RFC 3394 under a KEK version), so a
dump of it is useless without a quorum of custodians. It is deliberately small so a
backend can put it in its own database: exactly what the keyring calls, no more: bulk
reads, insert-if-absent, compare-and-swap replace, delete guarded by legal holds, the
rewrap cursor over keys not yet under the current KEK, counts, holds.

Every method is atomic on its own (a store needs no caller-visible transactions: the
bulk methods are all-or-nothing, and the keyring never needs two calls to commit
together). ``get``, ``is_on_hold``, ``iter_subjects`` and ``transaction`` were dropped
from the protocol because the library never calls them; :class:`SQLiteKeyStore` keeps
them as plain methods. ``tests/contract/test_store_contract.py`` is the suite every store passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

__all__ = ["KeyStore", "WrappedKey"]


class WrappedKey(NamedTuple):
    """One subject's data key as stored: wrapped under KEK ``kek_version``."""

    subject: str
    kek_version: int
    wrapped: bytes


@runtime_checkable
class KeyStore(Protocol):
    """Storage for wrapped data keys, bound to one keyring (``keyring_id``)."""

    @property
    def keyring_id(self) -> str:
        """Hex id of the keyring this store belongs to."""
        ...

    def get_many(self, subjects: Sequence[str]) -> dict[str, WrappedKey]:
        """Wrapped keys of those subjects that have one."""
        ...

    def insert_many(self, rows: Sequence[WrappedKey]) -> list[WrappedKey]:
        """Insert new keys atomically; subjects that already have a key keep it.

        Returns the rows actually stored for those subjects, in request order (the existing
        one wins a race), so two writers creating a key for the same subject agree on one.
        A subject repeated within one call: its first row is the one offered.
        """
        ...

    def replace_many(self, rows: Sequence[tuple[WrappedKey, WrappedKey]]) -> int:
        """Atomically replace ``old`` with ``new`` for each ``(old, new)`` pair, only where
        the stored row still equals ``old``; returns how many were replaced. Pairs whose
        subjects differ are ignored; give each subject at most once per call."""
        ...

    def delete(self, subject: str) -> bool:
        """Remove the subject's key (crypto-shredding); True if there was one.

        Raises :class:`~keysplit.errors.LegalHoldError` (and deletes nothing) if the subject
        is under legal hold: the guard sits in the store so it is atomic with the delete.
        """
        ...

    def stale_batch(self, current_version: int, after: str, limit: int) -> list[WrappedKey]:
        """Up to ``limit`` keys not under ``current_version`` with subject > ``after``,
        ordered by subject in code-point order (= UTF-8 byte order): the rewrap cursor."""
        ...

    def stale_cuts(self, current_version: int, every: int) -> list[str]:
        """The subjects of the keys not under ``current_version`` at ranks ``every``,
        ``2 * every``, ... (1-based, in :meth:`stale_batch`'s order), the last stale key
        excluded: the boundaries that cut the stale keys into ranges of ``every`` keys.
        Computed in the store (one statement), so a rewrap planner never reads the rows."""
        ...

    def count_by_version(self) -> dict[int, int]:
        """Number of keys per KEK version."""
        ...

    def set_legal_hold(self, subject: str, hold: bool) -> None:
        """Place or lift a legal hold on a subject (independent of whether it has a key)."""
        ...

    def legal_holds(self) -> list[str]:
        """Subjects under legal hold."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...
