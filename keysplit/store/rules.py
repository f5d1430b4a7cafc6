"""The fleet-state rules every store applies inside its transactions (written once).

Each store reads the state row under its lock, calls one of these, and writes what they
return in the same transaction; the rules themselves never touch a database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..errors import FormatError, KeyringError, LegalHoldError, StoreUnreachableError
from .base import (
    TOMBSTONE_SIZE,
    KekInUseError,
    KeyringState,
    Lease,
    StaleKekError,
    describe_lease,
)

__all__ = [
    "busy_admin",
    "changed_by_hand",
    "check_insert",
    "check_replace",
    "check_rotate",
    "delete_subjects",
    "encode_retired",
    "hold_refusal",
    "older_schema",
    "parse_retired",
    "retire_refusal",
    "tombstone_tags",
]


def encode_retired(versions: Iterable[int]) -> str:
    return ",".join(str(v) for v in sorted(set(versions)))


def parse_retired(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v)


def check_insert(state: KeyringState, versions: Iterable[int]) -> None:
    """New keys go under the current KEK only (any non-retired one while none is recorded)."""
    for v in set(versions):
        if v in state.retired:
            raise StaleKekError(f"KEK version {v} is retired; new keys use a current one", state)
        if state.current_kek and v != state.current_kek:
            raise StaleKekError(
                f"KEK version {v} is not current (version {state.current_kek} is)", state
            )


def check_replace(state: KeyringState, versions: Iterable[int]) -> None:
    """A rewrapped key never lands under a retired version."""
    for v in set(versions):
        if v in state.retired:
            raise StaleKekError(f"KEK version {v} is retired; cannot rewrap to it", state)


def lock_waited(store: str, seconds: float, where_to_look: str = "") -> StoreUnreachableError:
    """The error of a change that waited ``seconds`` for a lock another writer of the same
    keyring held, and gave up (``store``: how the store names itself): one wording on every
    store, so the same condition reads the same; ``where_to_look`` ends the hint."""
    return StoreUnreachableError(
        f"{store}: waited {seconds:g} s for a lock held by another writer of this keyring "
        "(a long bulk insert, rewrap, rotation or shred, or a process holding its "
        "transaction open); nothing was changed",
        hint=f"try again once that writer is done{where_to_look}",
    )


def changed_by_hand(store: str, what: str, where_else: str = "") -> FormatError:
    """The error of a store whose tables were dropped or altered outside keysplit (``what``:
    what was found): one wording on every store, as for :func:`lock_waited`. Not a store
    to wait for, nor one to reconfigure: restore it; ``where_else`` ends the hint."""
    return FormatError(
        f"{store}: {what}: it was changed outside keysplit; nothing was changed",
        hint="restore it from a backup (keysplit never repairs a store altered by hand)"
        + where_else,
    )


def older_schema(store: str, have: int, need: int, writer: str = "") -> KeyringError:
    """The error of a store opened for reading only (``read_only``: ``keysplit status``,
    a sealed keyring's audit log) whose schema is older than this keysplit's: upgrading it
    writes, which such an open must not (a standby or a SELECT-only role refuses it, in
    words that name neither version), and reading an older schema as a newer one is not
    done; one wording on every store. ``writer``: who may upgrade it (ends the hint)."""
    return KeyringError(
        f"{store} is at version {have}, this keysplit needs version {need}; it is "
        "upgraded only by an open for writing, and this one only reads: nothing was changed",
        hint="open it for writing once with this keysplit (keysplit unseal does)"
        + writer
        + ", then run this again",
    )


def busy_admin(timeout: float) -> KeyringError:
    """The error of a :meth:`KeyStore.admin_lock` not taken within ``timeout`` seconds."""
    return KeyringError(
        f"another process has held this keyring's rotation lock for over {timeout:g} s",
        hint="a rotation takes milliseconds: a process holding it longer is stuck; stop it",
    )


def check_rotate(state: KeyringState, version: int) -> None:
    if version in state.retired:
        raise KeyringError(f"KEK version {version} is retired")
    if version <= state.current_kek:  # equal: two rotations made two different "v"s
        raise KeyringError(
            f"KEK version {version} is not newer than the store's current one "
            f"({state.current_kek}): another process rotated",
            hint="unseal again (on another host: copy its keyring file first)",
        )


def tombstone_tags(tombstone: bytes | Sequence[bytes] | None) -> tuple[bytes, ...]:
    """The tags of a ``delete``'s ``tombstone`` argument (none, one, or several), each
    checked to be :data:`TOMBSTONE_SIZE` bytes."""
    if tombstone is None:
        return ()
    tags = (tombstone,) if isinstance(tombstone, bytes) else tuple(tombstone)
    for tag in tags:
        if not isinstance(tag, bytes) or len(tag) != TOMBSTONE_SIZE:
            raise ValueError(f"a tombstone is {TOMBSTONE_SIZE} bytes")
    return tags


def delete_subjects(subjects: Sequence[str]) -> list[str]:
    """The distinct subjects of a ``delete_many`` (a lone ``str`` is a caller's mistake:
    iterating it would delete its characters)."""
    if isinstance(subjects, str) or not all(isinstance(s, str) for s in subjects):
        raise TypeError("delete_many takes a sequence of subjects (str)")
    return list(dict.fromkeys(subjects))


def hold_refusal(held: Iterable[str]) -> LegalHoldError | None:
    """The error of a delete that found ``held`` subjects under legal hold, or None."""
    first = min(held, default=None)
    if first is None:
        return None
    return LegalHoldError(f"subject {first!r} is under legal hold", hint="lift the hold first")


def retire_refusal(
    state: KeyringState, version: int, keys_left: int, live: Sequence[Lease]
) -> KeyringError | None:
    """Why ``version`` cannot be retired now (naming what still uses it), or None."""
    if version == state.current_kek:
        return KeyringError(f"KEK version {version} is current and cannot be retired")
    if keys_left:
        return KeyringError(
            f"{keys_left} data keys are still wrapped under KEK version {version}",
            hint="run rewrap first",
        )
    users = [lease for lease in live if lease.current_kek == version]
    if users:
        named = ", ".join(describe_lease(lease) for lease in users[:3])
        more = f" and {len(users) - 3} more" if len(users) > 3 else ""
        return KekInUseError(
            f"KEK version {version} is still the current KEK of a live process: {named}{more}",
            users,
            hint="it adopts the new version within its poll interval; retry shortly, "
            "or stop it (its lease then expires)",
        )
    return None
