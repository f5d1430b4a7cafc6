"""The key store protocol: what the keyring needs from wherever wrapped data keys live.

A key store only ever sees *wrapped* data keys (RFC 3394 under a KEK version), so a
dump of it is useless without a quorum of custodians. It is deliberately small so a
backend can put it in its own database: get/put/delete by subject, bulk reads, iteration
over keys not yet under the current KEK (for rewrap), legal holds, counts, transactions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
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

    def get(self, subject: str) -> WrappedKey | None:
        """The subject's wrapped key, or None."""
        ...

    def get_many(self, subjects: Sequence[str]) -> dict[str, WrappedKey]:
        """Wrapped keys of those subjects that have one."""
        ...

    def insert_many(self, rows: Sequence[WrappedKey]) -> list[WrappedKey]:
        """Insert new keys atomically; subjects that already have a key keep it.

        Returns the rows actually stored for those subjects (the existing one wins a race),
        so two writers creating a key for the same subject agree on one.
        """
        ...

    def replace_many(self, rows: Sequence[tuple[WrappedKey, WrappedKey]]) -> int:
        """Atomically replace ``old`` with ``new`` for each ``(old, new)`` pair, only where
        the stored row still equals ``old``; returns how many were replaced."""
        ...

    def delete(self, subject: str) -> bool:
        """Remove the subject's key (crypto-shredding); True if there was one.

        Raises :class:`~keysplit.errors.LegalHoldError` (and deletes nothing) if the subject
        is under legal hold: the guard sits in the store so it is atomic with the delete.
        """
        ...

    def stale_batch(self, current_version: int, after: str, limit: int) -> list[WrappedKey]:
        """Up to ``limit`` keys not under ``current_version`` with subject > ``after``,
        ordered by subject (the rewrap cursor)."""
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

    def is_on_hold(self, subject: str) -> bool:
        """Whether the subject is under legal hold."""
        ...

    def transaction(self) -> AbstractContextManager[None]:
        """A write transaction: every call inside commits together or not at all."""
        ...

    def iter_subjects(self, batch_size: int = 1000) -> Iterator[list[WrappedKey]]:
        """Every stored key, in batches ordered by subject."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...
