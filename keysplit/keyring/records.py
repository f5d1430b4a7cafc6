"""The record engine: records over any :class:`~keysplit.keyring.datakeys.DataKeys`.

Tink's ``KmsEnvelopeAead(remote: Aead)`` shape: :class:`Records` owns every record
decision (subject check, which spelling's key opens a record, nonces, the AAD) and asks
its one seam, ``DataKeys.resolve``, only for keys. The same engine runs in
:class:`~keysplit.keyring.UnsealedKeyring` (over the keys held in this process), in
``keysplit.Client`` when it caches keys (over the key service's ``datakey`` endpoint),
in the key service's ``datakey`` endpoint (:meth:`Records.export`), and on Dask job
workers (over the keys handed to them). A fleet or a threshold cluster is one more
``DataKeys``; nothing here changes.

Subjects (:mod:`keysplit.names`): written under the NFC spelling
(:func:`~keysplit.names.check_subject`); read under every spelling a key may be stored
under (:func:`~keysplit.names.subject_spellings`), the key chosen by the commitment the
record's header carries. ASCII subjects (their own NFC form) take none of those detours.

Nonces come from the keyring's RNG seam: a batch draws ``12 * n`` bytes in one call; a
single record takes the next 12 bytes of a pool drawn ahead in bulk (one draw per 1,024
records), discarded in a forked child (``os.register_at_fork``) so parent and child never
share a nonce.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import ClassVar

from .. import names
from .. import record as fmt
from ..errors import FormatError, IntegrityError
from ..record import DataKey
from ..rng import RandomSource, default_rng
from .datakeys import DataKeys

__all__ = ["Records"]

Context = Mapping[str, str] | Sequence[Mapping[str, str] | None] | None
_NO_KEY = "the subject has no data key (never used, or shredded)"
_POOL_NONCES = 1024
_TAIL_CACHE = 4096


def _any_non_ascii(subjects: Sequence[str]) -> bool:
    """False for the usual all-ASCII batch (one C-level pass); True otherwise, also when
    something is not a str (the slow path reports it)."""
    try:
        return not all(map(str.isascii, subjects))
    except TypeError:
        return True


class _NoncePool:
    """Nonces for single records, drawn ``_POOL_NONCES`` at a time from the RNG seam.

    Thread-safe without a lock on the hot path: a pool state is ``(bytes, counter)`` read
    in one attribute load, and ``next(counter)`` hands each index out once (atomic in
    CPython), so two threads never get the same slice, even across a refill.
    """

    _all: ClassVar[weakref.WeakSet[_NoncePool]] = weakref.WeakSet()

    def __init__(self, rng: RandomSource) -> None:
        self._rng = rng
        self._state: tuple[bytes, itertools.count[int]] | None = None
        self._lock = threading.Lock()
        _NoncePool._all.add(self)

    def next(self) -> bytes:
        state = self._state
        if state is not None:
            i = next(state[1])
            if i < _POOL_NONCES:
                return state[0][fmt.NONCE_SIZE * i : fmt.NONCE_SIZE * i + fmt.NONCE_SIZE]
        with self._lock:
            if self._state is state:  # nobody refilled meanwhile
                pool = self._rng.random_bytes(fmt.NONCE_SIZE * _POOL_NONCES)
                self._state = (pool, itertools.count())
        return self.next()

    @classmethod
    def _forget_all(cls) -> None:
        """In a forked child: drop every pool (the parent keeps using its copy)."""
        for pool in list(cls._all):
            pool._state = None
            pool._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_NoncePool._forget_all)


class Records:
    """Encrypt and decrypt records with the keys of one :class:`DataKeys`. Holds keys.

    ``rng`` is the keyring's RNG seam (nonces and nothing else). Thread-safe when the
    :class:`DataKeys` is.
    """

    __slots__ = ("_dk", "_nonces", "_tails", "rng")

    def __init__(self, datakeys: DataKeys, *, rng: RandomSource | None = None) -> None:
        self._dk = datakeys
        self.rng: RandomSource = rng or default_rng()
        self._nonces = _NoncePool(self.rng)
        self._tails: dict[tuple[str, object], bytes] = {}

    def __repr__(self) -> str:
        return f"Records(keyring={self._dk.keyring_id}, <redacted>)"

    @property
    def datakeys(self) -> DataKeys:
        return self._dk

    # -- keys ---------------------------------------------------------------------------------

    def keys(self, subjects: Sequence[str], *, create: bool = False) -> list[DataKey | None]:
        """The data key of each subject (``None`` where it has none, unless ``create``,
        which makes it under the NFC spelling); any stored spelling is found."""
        if create:
            return self._dk.resolve(names.canonical_subjects(subjects), create=True)
        if not _any_non_ascii(subjects):
            return self._dk.resolve(subjects, create=False)
        return [self._find(s, None) for s in subjects]

    def export(self, subjects: Sequence[str], *, create: bool = False) -> list[bytes | None]:
        """Raw 16-byte data keys, found as :meth:`keys` finds them (the key service's
        ``datakey`` endpoint and jobs handing keys to workers). Secret."""
        if create:
            canon = names.canonical_subjects(subjects)
            return self._dk.export(canon, create=True)
        if not _any_non_ascii(subjects):
            for s in subjects:
                names.check_subject(s)
            return self._dk.export(subjects, create=False)
        spellings = {s: names.subject_spellings(s) for s in dict.fromkeys(subjects)}
        wanted = list(dict.fromkeys(x for sp in spellings.values() for x in sp))
        got = dict(zip(wanted, self._dk.export(wanted, create=False), strict=True))
        first = {
            s: next((got[x] for x in sp if got[x] is not None), None) for s, sp in spellings.items()
        }
        return [first[s] for s in subjects]

    def _find(self, subject: str, commitment: bytes | None) -> DataKey | None:
        """The key of the first spelling of ``subject`` that has one (NFC first), or with
        ``commitment`` the one whose commitment matches (a record's header names its key)."""
        spellings = names.subject_spellings(subject)
        found = [k for k in self._dk.resolve(spellings, create=False) if k is not None]
        if commitment is not None:
            for key in found:
                if key.commitment == commitment:
                    return key
        return found[0] if found else None

    def _tail(self, subject: str, context: Mapping[str, str] | None) -> bytes:
        """The canonical AAD tail of (subject, context), cached: it is public, and a
        service or backend encrypts for the same few contexts again and again."""
        try:
            ck: object = tuple(context.items()) if context else None
            memo = (subject, ck)
            tail = self._tails.get(memo)
        except (TypeError, AttributeError):  # unhashable or not a mapping: no cache
            return fmt.encode_aad(subject, context)
        if tail is None:
            tail = fmt.encode_aad(subject, context)
            if len(self._tails) >= _TAIL_CACHE:
                self._tails.clear()
            self._tails[memo] = tail
        return tail

    # -- records ------------------------------------------------------------------------------

    def encrypt(
        self, plaintext: bytes, *, subject: str, context: Mapping[str, str] | None = None
    ) -> bytes:
        """Seal a record for ``subject`` (its data key is created on first use)."""
        subject = names.check_subject(subject)
        tail = self._tail(subject, context)
        if not isinstance(plaintext, bytes | bytearray | memoryview):
            raise TypeError("plaintext must be bytes")
        (key,) = self._dk.resolve((subject,), create=True)
        assert key is not None
        return fmt.seal(key, self._nonces.next(), plaintext, tail)

    def decrypt(
        self, record: bytes, *, subject: str, context: Mapping[str, str] | None = None
    ) -> bytes:
        """Open a record; :class:`IntegrityError` if it does not belong to this subject and
        context, was altered, or the subject was shredded."""
        parsed = fmt.parse(record)
        tail = self._tail(subject, context)  # checks the subject
        if subject.isascii():
            (key,) = self._dk.resolve((subject,), create=False)
        else:  # any spelling (keysplit.names)
            key = self._find(subject, parsed.commitment)
        if key is None:
            raise IntegrityError(hint=_NO_KEY)
        return fmt.open_with_tail(key, parsed, tail, subject, context)

    def encrypt_many(
        self, subjects: Sequence[str], plaintexts: Sequence[bytes], context: Context = None
    ) -> list[bytes]:
        """Seal many records (``subjects[i]`` owns ``plaintexts[i]``) in one pass."""
        subjects = names.canonical_subjects(subjects)
        keys = self._dk.resolve(subjects, create=True)
        return fmt.encrypt_many(keys, subjects, plaintexts, context, rng=self.rng)  # type: ignore[arg-type]

    def decrypt_many(
        self, subjects: Sequence[str], records: Sequence[bytes], context: Context = None
    ) -> list[bytes]:
        """Open many records; all-or-nothing (:class:`IntegrityError` if any fails)."""
        keys: list[DataKey | None]
        if _any_non_ascii(subjects):  # keys may sit under another spelling (keysplit.names)
            found: dict[tuple[str, bytes | None], DataKey | None] = {}
            keys = []
            for s, r in zip(subjects, records, strict=True):
                c = _commitment(r)
                if (s, c) not in found:
                    names.check_subject(s)
                    found[s, c] = self._find(s, c)
                keys.append(found[s, c])
        else:
            keys = self._dk.resolve(subjects, create=False)
        if None in keys:
            raise IntegrityError(hint="a subject has no data key (never used, or shredded)")
        return fmt.decrypt_many(keys, subjects, records, context)  # type: ignore[arg-type]


def _commitment(record: object) -> bytes | None:
    """The key commitment a record's header carries; None if it has none (the record
    API then reports the precise format error)."""
    try:
        return fmt.parse(record).commitment  # type: ignore[arg-type]
    except (FormatError, TypeError):
        return None
