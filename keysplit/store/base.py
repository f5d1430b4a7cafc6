"""The key store protocol: what the keyring needs from wherever wrapped data keys live.

A key store only ever sees *wrapped* data keys (RFC 3394 under a KEK version), so a
dump of it is useless without a quorum of custodians. It is deliberately small so a
backend can put it in its own database: exactly what the keyring calls, no more: bulk
reads, insert-if-absent, compare-and-swap replace, delete (every spelling of a subject at
once) guarded by legal holds, the rewrap cursor over keys not yet under the current KEK,
counts, holds.

Every method is atomic on its own (a store needs no caller-visible transactions: the
bulk methods are all-or-nothing, and the keyring never needs two calls to commit
together). ``get``, ``is_on_hold``, ``iter_subjects`` and ``transaction`` were dropped
from the protocol because the library never calls them; :class:`SQLiteKeyStore` keeps
them as plain methods. ``tests/contract/test_store_contract.py`` is the suite every store
passes.

**Fleet state** (several processes holding one keyring, SECURITY.md "Many processes"):
what every unsealed process must agree on lives here, changed in the same transaction as
the rows it guards. :class:`KeyringState` is one row: an ``epoch`` bumped by every change
a process must learn of (rotate, retire, shred, hold, rekey), the current KEK version, the
retired versions, a rekey counter and the last tombstone's sequence number. Because
``insert_many`` checks the current version and ``replace_many`` the retired ones inside
their own transaction, no data key is ever stored under a version that is not current (a
new key) or that is retired (a rewrapped one): the store raises :class:`StaleKekError` and
the writer re-reads the keyring. ``retire_kek`` checks, in one transaction, that no data
key and no live :class:`Lease` still uses the version. ``delete`` writes a
:class:`Tombstone` (a keyed hash of the subject, no key material) in the delete's
transaction, with a sequence number taken under the state row's lock, so sequence order is
commit order and a poller reading ``tombstones_since(seq)`` never skips one. Leases
expire on the store's clock, so clocks of different hosts do not matter.

A PostgreSQL store also keeps the audit chain (:class:`AuditStore`), so backends on
several hosts append to one chain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import NamedTuple, Protocol, runtime_checkable

from ..errors import KeyringError, StoreUnreachableError

__all__ = [
    "ADMIN_WAIT",
    "LEASE_ROLES",
    "MAX_BATCH",
    "TOMBSTONE_SIZE",
    "AuditStore",
    "KekInUseError",
    "KeyStore",
    "KeyringState",
    "Lease",
    "RangedAuditStore",
    "StaleKekError",
    "Tombstone",
    "WrappedKey",
    "check_batch_size",
    "describe_lease",
]

MAX_BATCH = 1_000_000
"""Most keys one batch of a store walk reads and rewrites (``stale_batch``'s ``limit``):
above 2^63 - 1 a backend's integer overflows, and far below that one batch is a
transaction too large to hold (the key service's ``/v1/rewrap`` allows the same)."""


def check_batch_size(batch_size: object) -> int:
    """``batch_size`` if it is an int from 1 to :data:`MAX_BATCH`, else ValueError (10^30
    was an OverflowError from SQLite deep inside a rewrap: a CLI traceback)."""
    if type(batch_size) is not int or not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch_size must be an integer from 1 to {MAX_BATCH:,}")
    return batch_size


LEASE_ROLES = ("library", "serve", "job", "cli")
TOMBSTONE_SIZE = 16
ADMIN_WAIT = 30.0
"""Seconds :meth:`KeyStore.admin_lock` waits for another process's rotation (which holds
it for a keyring file write and one store transaction: milliseconds)."""


class WrappedKey(NamedTuple):
    """One subject's data key as stored: wrapped under KEK ``kek_version``."""

    subject: str
    kek_version: int
    wrapped: bytes


class KeyringState(NamedTuple):
    """What every process holding the keyring must agree on (one row in the store).

    ``current_kek`` is 0 in a store made before fleet state was recorded: until a rotate
    (or the first unseal) records it, any version not retired is accepted for new keys.
    """

    epoch: int
    current_kek: int
    retired: tuple[int, ...]
    rekeys: int
    tombstone_seq: int


class Lease(NamedTuple):
    """A live process holding the keyring: who it is, what it holds, until when.

    ``acked`` is the last tombstone sequence number whose subjects it has dropped from its
    cache; ``cached`` how many data keys it held at its last renewal; ``expires`` is in
    seconds since the epoch on the *store's* clock (set by the store on renewal).
    """

    id: str
    host: str
    pid: int
    role: str
    current_kek: int
    acked: int
    cached: int
    expires: float


class Tombstone(NamedTuple):
    """Proof that a subject's key was deleted: a keyed hash of the subject, no key."""

    seq: int
    tag: bytes
    time: float


class StaleKekError(KeyringError):
    """A write under a KEK version that is not (or no longer) allowed: the writer's picture
    of the keyring is out of date. Carries the store's state so it can catch up."""

    def __init__(self, message: str, state: KeyringState) -> None:
        super().__init__(message, hint="re-read the keyring (another process changed it)")
        self.state = state


class LostInsertError(StoreUnreachableError):
    """:meth:`KeyStore.insert_many` lost its connection after its rows went out: whether
    they were stored is unknown. Offering the same rows again could bring back a key that a
    shred deleted meanwhile (the rows of an insert that did commit, then were shredded, and
    records other writers made with them readable again), so the caller offers new keys
    instead; a row that did commit and is still there is then handed back as stored."""


class KekInUseError(KeyringError):
    """A retire refused because live processes still write under the version (named in
    the message; ``holders`` lists their leases). Usually gone within their poll interval."""

    def __init__(self, message: str, holders: Sequence[Lease], *, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.holders = tuple(holders)


def describe_lease(lease: Lease) -> str:
    """``host pid N (role)``: how a lease is named in messages."""
    return f"{lease.host} pid {lease.pid} ({lease.role})"


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

        Raises :class:`StaleKekError` (and stores nothing) unless every row is under the
        state's current KEK version (any version not retired while none is recorded);
        the check is in the insert's transaction.

        Returns the rows actually stored for those subjects, in request order (the existing
        one wins a race), so two writers creating a key for the same subject agree on one.
        A subject repeated within one call: its first row is the one offered.
        """
        ...

    def replace_many(self, rows: Sequence[tuple[WrappedKey, WrappedKey]]) -> int:
        """Atomically replace ``old`` with ``new`` for each ``(old, new)`` pair, only where
        the stored row still equals ``old``; returns how many were replaced. Pairs whose
        subjects differ are ignored; give each subject at most once per call.
        Raises :class:`StaleKekError` (and replaces nothing) if a ``new`` row's version is
        retired."""
        ...

    def delete(self, subject: str, tombstone: bytes | Sequence[bytes] | None = None) -> bool:
        """Remove the subject's key (crypto-shredding); True if there was one.

        Raises :class:`~keysplit.errors.LegalHoldError` (and deletes nothing) if the subject
        is under legal hold: the guard sits in the store so it is atomic with the delete.
        If a key was deleted and ``tombstone`` (16 bytes, or several tags: a legacy
        spelling's and its subject's) is given, the same transaction appends each as a
        :class:`Tombstone`, in order, and bumps the epoch.
        """
        ...

    def delete_many(
        self, subjects: Sequence[str], tombstone: bytes | Sequence[bytes] | None = None
    ) -> bool:
        """Remove the keys of ``subjects`` (one subject's spellings, :mod:`keysplit.names`)
        in one transaction; True if any was there. :meth:`delete` is its one-subject case.

        Raises :class:`~keysplit.errors.LegalHoldError` (and deletes nothing) if any of
        ``subjects`` is under legal hold, checked in the same transaction: a hold placed
        on one spelling while a shred runs never leaves the subject partly shredded (one
        ``delete`` per spelling did). If a key was deleted, the transaction appends every
        tag of ``tombstone`` as a :class:`Tombstone`, in order, and bumps the epoch once.
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
        """Place or lift a legal hold on a subject (independent of whether it has a key);
        bumps the epoch in the same transaction. :meth:`set_legal_holds` of one subject."""
        ...

    def set_legal_holds(self, subjects: Sequence[str], hold: bool) -> None:
        """Place or lift a legal hold on every one of ``subjects`` (one subject's spellings,
        :mod:`keysplit.names`) in one transaction that bumps the epoch once: all of them or
        none, so a shred never sees some spellings held and others not (one transaction
        per spelling did, and a failure between them left it so)."""
        ...

    def legal_holds(self) -> list[str]:
        """Subjects under legal hold."""
        ...

    # -- fleet state ---------------------------------------------------------------------

    def state(self) -> KeyringState:
        """The shared keyring state."""
        ...

    def set_current_kek(self, version: int) -> KeyringState:
        """Record ``version`` as the current KEK (after it is durable in the keyring file);
        bumps the epoch. Refuses a retired version or one not newer than the recorded one
        (two rotations from the same version made two different KEKs under one number).
        An error means nothing was recorded (the rotation then puts its keyring file back),
        except a :class:`~keysplit.errors.StoreUnreachableError`, after which it may have
        been (a connection lost at COMMIT): a store that can ask the server (PostgreSQL:
        the transaction's id) returns the state when the commit in fact happened."""
        ...

    def admin_lock(self, timeout: float = ADMIN_WAIT) -> AbstractContextManager[None]:
        """Held by a rotation from its catch-up with the store's state to its commit, so
        that of two hosts (copies of the keyring directory, one store) rotating at once
        the second waits, then finds its copy behind the store and writes nothing. Every
        process of every host sharing the store takes turns; a :class:`KeyringError` after
        ``timeout`` seconds of waiting. Released when the holder exits or dies."""
        ...

    def retire_kek(self, version: int) -> KeyringState:
        """Mark ``version`` retired (no new row may use it); bumps the epoch. Refused with
        a :class:`KeyringError` naming what still uses it while the version is current,
        any data key is under it, or a live lease's current KEK is it, all checked in
        this one transaction."""
        ...

    def note_rekey(self, rekey: str) -> KeyringState:
        """Count the committed rekey ``rekey`` (the id of its new share set) and bump the
        epoch, once per rekey: if ``rekey`` is the one counted last, change nothing and
        return the state. The id is stored with the count (one transaction), so the next
        unseal can count a rekey killed after its switch without knowing whether the
        count was made before the kill."""
        ...

    def tombstones_since(self, seq: int, limit: int = 10_000) -> list[Tombstone]:
        """Tombstones with sequence number > ``seq``, in order, at most ``limit``."""
        ...

    def has_tombstone(self, tags: Sequence[bytes]) -> bool:
        """Whether any of ``tags`` was ever tombstoned."""
        ...

    def renew_lease(self, lease: Lease, ttl: float) -> KeyringState:
        """Create or renew ``lease`` (its ``expires`` is ignored: now + ``ttl`` on the
        store's clock), in one transaction with reading the state it returns."""
        ...

    def drop_lease(self, lease_id: str) -> None:
        """Remove a lease (its process let go of the keyring)."""
        ...

    def leases(self, *, live: bool = True) -> list[Lease]:
        """Leases ordered by host and pid; with ``live`` only unexpired ones."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...


@runtime_checkable
class AuditStore(Protocol):
    """A store that also keeps the keyring's audit chain (one chain for every host).

    Lines are the audit log's canonical JSON lines (:mod:`keysplit.audit.log`), unchanged,
    so the same hash chain and MACs verify them.
    """

    def audit_lines(self) -> list[bytes]:
        """Every entry line in sequence order."""
        ...

    def audit_append(self, build: Callable[[bytes | None], bytes]) -> bytes:
        """Under a lock that serializes appenders: ``build(last_line_or_None)`` makes the
        next line, which is stored in the same transaction and returned."""
        ...


@runtime_checkable
class RangedAuditStore(AuditStore, Protocol):
    """An :class:`AuditStore` that also reads part of its chain (the PostgreSQL store).

    A quorum's check for unrecorded changes reads only the entries after its checkpoint
    (``audit.checkpoint``), and an append's check only the last entry. A store with
    :meth:`~AuditStore.audit_lines` alone still works: those read the whole chain.
    """

    def audit_lines_from(self, seq: int) -> list[bytes]:
        """The lines of entries ``seq``, ``seq + 1``, ... (rows numbered from 1, as
        :meth:`~AuditStore.audit_append` numbers them) in sequence order; none past the end."""
        ...

    def audit_last(self) -> bytes | None:
        """The last entry's line; None if the chain is empty."""
        ...
