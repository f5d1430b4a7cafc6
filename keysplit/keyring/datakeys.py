"""Data keys: the one seam between records and whoever holds the keys.

:class:`DataKeys` (``resolve``, ``export``) is all the record engine
(:class:`keysplit.keyring.records.Records`) needs. :class:`LocalDataKeys` is the
in-process implementation (KEKs, the X25519 key, the key store and a cache of derived
keys); ``keysplit.service.client.RemoteDataKeys`` fetches keys from a key service, and a
fleet or a threshold cluster plugs in here the same way, once. :class:`KeyringSecrets` is
the rest of what an unsealed keyring opens (HPKE, the audit MAC key).

:class:`KekSet` is the KEKs of one keyring with the wrap/unwrap of stored rows: what
:class:`LocalDataKeys` wraps new keys with and what a rewrap job is handed
(:meth:`UnsealedKeyring.keks_for_rewrap`).
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
import threading
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .. import names
from ..errors import (
    FormatError,
    IntegrityError,
    KeyringError,
    KeysplitError,
    NoDataKeyError,
    ShreddedError,
)
from ..hazmat import hpke
from ..names import check_subject
from ..record import DataKey
from ..rng import RandomSource, default_rng
from ..store import KeyStore, WrappedKey
from ..store.base import KeyringState, LostInsertError, StaleKekError
from . import file as kf
from . import fleet

if TYPE_CHECKING:
    import numpy as np

# numpy and the batch key wrap (keysplit.hazmat.keywrap, numpy too) are imported by the
# functions that wrap, unwrap or make keys, not with this module: every keysplit command
# imports it through keysplit.keyring, and most (status, encrypt, pin) never wrap a key.

__all__ = [
    "AUDIT_KEY_INFO",
    "DataKeys",
    "DerivedDataKeys",
    "KekSet",
    "KeyringSecrets",
    "LocalDataKeys",
    "audit_key_for",
]

AUDIT_KEY_INFO = b"keysplit keyring audit mac key v1\x00"
WRAPPED_SIZE = 24  # a 16-byte data key wrapped with RFC 3394
_INSERT_FIRST = 16  # create for at most this many uncached subjects: insert, no lookup first
_CREATE_TRIES = 4
"""Attempts of one key insert refused because the KEK changed meanwhile (each refusal
catches up first): a ceremony may rotate and retire within one insert's window."""
IV_LABEL = b"keysplit/keyring/kw-subject-iv/v1"
_HMAC_BLOCK = 64


class _SubjectIV:
    """Per-row RFC 3394 initial values that bind a wrapped data key to its row.

    ``IV = HMAC-SHA256(K, IV_LABEL || 0x00 || keyring_id (16) || u32 version || subject)[:8]``
    with ``K = HKDF-SHA256(KEK, salt=none, info=IV_LABEL || " key")``. Keyed (not a plain
    hash) so nobody without the KEK can search subject names for two with the same 64-bit
    IV offline; one HMAC per row, from precomputed inner/outer states.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, kek: bytes, keyring_id: str, version: int) -> None:
        key = HKDF(hashes.SHA256(), 32, None, IV_LABEL + b" key").derive(kek)
        block = key.ljust(_HMAC_BLOCK, b"\x00")
        prefix = IV_LABEL + b"\x00" + bytes.fromhex(keyring_id) + struct.pack(">I", version)
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block) + prefix)
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def ivs(self, subjects: Sequence[str]) -> np.ndarray:
        import numpy as np

        inner, outer = self._inner, self._outer

        def one(subject: str) -> bytes:
            h = inner.copy()
            h.update(subject.encode())
            o = outer.copy()
            o.update(h.digest())
            return o.digest()[:8]

        out = np.frombuffer(b"".join(map(one, subjects)), np.uint8)
        return out.reshape(len(subjects), 8)


@runtime_checkable
class DataKeys(Protocol):
    """Where records get their data keys: the one key seam (Tink's ``KmsEnvelopeAead(remote)``).

    Contract: :meth:`resolve` and :meth:`export` take subjects exactly as spelled (the one
    engine above the seam, :class:`keysplit.keyring.records.Records`, checks them with
    ``names.check_subject`` and tries every spelling; an implementation never normalizes)
    and answer in order, duplicates allowed (and given the same key object by
    :meth:`resolve`: the engine seals a subject's records with one AES-GCM object). A
    subject without a key gets ``None``, or with ``create`` a new key that is durable
    before it is returned and is the same key every concurrent caller gets (``create`` is
    only ever asked for canonical, NFC, subjects).
    Raise :class:`IntegrityError` when a stored key fails authentication and
    :class:`KeyringError` when the keys are gone (closed, sealed, KEK retired); anything
    else (a network failure) propagates as it is. :meth:`export` is the only way a raw
    key leaves an implementation: :class:`DataKey` does not keep it. Implementations are
    thread-safe. Today: :class:`LocalDataKeys` (this process holds the KEKs and the store)
    and ``keysplit.service.client.RemoteDataKeys`` (keys fetched from ``keysplit serve``).

    Optional: ``cached_key(subject) -> DataKey | None`` is the single-record fast path:
    the key of one subject (spelled exactly so) if it can be served right now without I/O
    and under every rule :meth:`resolve` keeps (a fleet member: its lease is valid, the key
    was not dropped), else ``None``, and the engine calls :meth:`resolve`. It never
    creates, fetches or caches anything.
    ``cached_view: (get, lease) | None`` is ``cached_key`` for the engine to inline: ``get``
    is the cache's own one-C-call lookup (atomic under the GIL), used only while
    ``time.monotonic() < lease._deadline``, a found key marked ``_used``; offered only by
    a cache whose keys each belong to one subject (the engine leaves a subject's AAD tail
    on its key, :meth:`Records._remember`).
    ``counts_records: bool`` (default True): whether ``resolve(create=True)`` counts each
    occurrence of a subject as one record sealed (a use-bounded cache, as
    ``keysplit.Client(cache_max_records=...)``'s); then the engine passes every occurrence
    of a batch, otherwise each distinct subject once.
    ``missing_error(subject) -> KeysplitError`` says why no key of a subject
    opens a record (:class:`ShreddedError`, :class:`NoDataKeyError`, or
    :class:`IntegrityError` for a wrong key); without it the engine raises a detail-free
    :class:`IntegrityError`. Fleet coherence (leases, tombstones, the current-KEK check,
    :mod:`keysplit.keyring.fleet`) lives in :class:`LocalDataKeys`, under this seam.
    """

    @property
    def keyring_id(self) -> str:
        """Hex id of the keyring whose keys these are."""
        ...

    def resolve(self, subjects: Sequence[str], *, create: bool) -> list[DataKey | None]:
        """The data key of each subject, ready for records."""
        ...

    def export(self, subjects: Sequence[str], *, create: bool) -> list[bytes | None]:
        """The raw 16-byte data key of each subject. Secret: whoever holds one opens every
        record of its subject."""
        ...

    def close(self) -> None:
        """Forget every key held (and release connections)."""
        ...


@runtime_checkable
class KeyringSecrets(Protocol):
    """What an unsealed keyring opens besides data keys (HPKE, the audit MAC key).

    :class:`LocalDataKeys` has it; a :class:`DataKeys` over a service need not (the
    keyring then raises :class:`KeyringError` for :meth:`UnsealedKeyring.hpke_open`).
    """

    def hpke_open(self, ciphertext: bytes, info: bytes) -> bytes:
        """Open an RFC 9180 base-mode ciphertext sealed to the keyring's public key;
        a detail-free :class:`IntegrityError` for anything it cannot open."""
        ...

    def audit_key(self) -> bytes:
        """The 32-byte MAC key of the keyring's ceremony log."""
        ...


def audit_key_for(x25519_private: bytes, keyring_id: str) -> bytes:
    """The audit MAC key of a keyring (:meth:`LocalDataKeys.audit_key`). Secret."""
    return HKDF(
        hashes.SHA256(), 32, salt=None, info=AUDIT_KEY_INFO + bytes.fromhex(keyring_id)
    ).derive(x25519_private)


class DerivedDataKeys:
    """Base of a :class:`DataKeys` whose keys arrive raw (a key service, a job's key
    server): :meth:`resolve` derives a :class:`DataKey` per distinct subject from
    :meth:`export` and keeps nothing."""

    def export(self, subjects: Sequence[str], *, create: bool) -> list[bytes | None]:
        raise NotImplementedError

    def resolve(self, subjects: Sequence[str], *, create: bool) -> list[DataKey | None]:
        uniq = list(dict.fromkeys(subjects))
        raws = self.export(uniq, create=create)
        if len(raws) != len(uniq):
            raise KeyringError("the data key source returned the wrong number of keys")
        keys = {s: None if r is None else DataKey(r) for s, r in zip(uniq, raws, strict=True)}
        return [keys[s] for s in subjects]


class KekSet:
    """The KEK versions of one keyring and how stored rows are wrapped under them.

    Rows are bound to their subject (and keyring id and KEK version) through RFC 3394's
    alternative initial value (:class:`_SubjectIV`), so a row moved to another subject or
    swapped with one fails its integrity check. ``unbound`` lists the versions that predate
    the binding (rows under them use the default IV, docs/format/keyring.md "Migration"):
    every version created since is bound, so a default-IV row under one is refused.

    Holding one is holding every KEK: the repr is redacted. Immutable; rotate and retire
    make a new one.
    """

    __slots__ = ("_binders", "_keks", "current", "keyring_id", "unbound")

    def __init__(
        self,
        keyring_id: str,
        current: int,
        keks: Mapping[int, bytes],
        *,
        unbound: Sequence[int] = (),
    ) -> None:
        if current not in keks:
            raise ValueError("the current KEK version must be one of the KEKs")
        self.keyring_id = keyring_id
        self.current = current
        self._keks = dict(keks)
        self.unbound = frozenset(unbound)
        self._binders: dict[int, _SubjectIV] = {}

    def __repr__(self) -> str:
        return f"KekSet(<redacted>, current={self.current}, versions={sorted(self._keks)})"

    def __reduce__(self) -> tuple[object, ...]:
        """Picklable (for a rewrap job in another process; the pickle holds every KEK):
        the derived IV states are rebuilt on the other side."""
        return (KekSet, (self.keyring_id, self.current, self._keks), {"unbound": self.unbound})

    def __setstate__(self, state: dict[str, frozenset[int]]) -> None:
        self.unbound = frozenset(state["unbound"])

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(sorted(self._keks))

    def only(self, versions: Sequence[int]) -> KekSet:
        """The KEKs of ``versions`` plus the current one, with their unbound flags: exactly
        what a rewrap job over rows under those versions needs (KeyringError if one is
        retired)."""
        wanted = sorted({*versions, self.current})
        return KekSet(
            self.keyring_id,
            self.current,
            {v: self.kek(v) for v in wanted},
            unbound=[v for v in wanted if v in self.unbound],
        )

    def kek(self, version: int) -> bytes:
        try:
            return self._keks[version]
        except KeyError:
            raise KeyringError(
                f"a data key is wrapped under KEK version {version}, which this keyring "
                "does not have (retired or never existed)"
            ) from None

    def _ivs(self, version: int, subjects: Sequence[str]) -> np.ndarray | None:
        if version in self.unbound:
            return None  # written before the binding: RFC 3394's default IV
        binder = self._binders.get(version)
        if binder is None:
            binder = self._binders[version] = _SubjectIV(
                self.kek(version), self.keyring_id, version
            )
        return binder.ivs(subjects)

    def wrap(self, subjects: Sequence[str], raw: np.ndarray) -> list[WrappedKey]:
        """Rows storing ``raw[i]`` (shape ``(N, 16)``) for ``subjects[i]`` under the
        current KEK, each bound to its subject."""
        from ..hazmat import keywrap

        v = self.current
        wrapped = keywrap.wrap_batch(self.kek(v), raw, iv=self._ivs(v, subjects))
        return [WrappedKey(s, v, wrapped[i].tobytes()) for i, s in enumerate(subjects)]

    def unwrap(self, rows: Sequence[WrappedKey]) -> tuple[np.ndarray, np.ndarray]:
        """Unwrap stored rows: ``(keys, ok)`` in row order, ``keys`` ``(N, 16)`` uint8 and
        ``ok`` the per-row integrity mask (failed and malformed rows are zero and False).
        One vectorized batch per KEK version."""
        import numpy as np

        from ..hazmat import keywrap

        keys = np.zeros((len(rows), 16), dtype=np.uint8)
        ok = np.zeros(len(rows), dtype=bool)
        by_version: dict[int, list[int]] = {}
        for i, r in enumerate(rows):
            if len(r.wrapped) == WRAPPED_SIZE:
                by_version.setdefault(r.kek_version, []).append(i)
        for version, idx in by_version.items():
            kek = self.kek(version)
            arr = np.frombuffer(b"".join(rows[i].wrapped for i in idx), np.uint8)
            iv = self._ivs(version, [rows[i].subject for i in idx])
            raw, good = keywrap.unwrap_batch(kek, arr.reshape(len(idx), WRAPPED_SIZE), iv=iv)
            keys[idx] = raw
            ok[idx] = good
            raw.fill(0)
        return keys, ok


class LocalDataKeys:
    """:class:`DataKeys` held in this process: KEKs, X25519 key, store, key cache.

    A member of the keyring's fleet (:mod:`.fleet`): it holds a lease in the store, drops
    shredded subjects' keys within the stated bound, serves cached keys only while its
    lease is valid, and creates keys only under the store's current KEK (re-reading the
    keyring file through ``reload`` when another process rotated; refusing to write with
    "rekeyed elsewhere: unseal again" when it no longer can).
    """

    def __init__(
        self,
        keyring_id: str,
        secrets: kf.KeyringSecrets,
        current_kek: int,
        store: KeyStore,
        *,
        rng: RandomSource | None = None,
        unbound: Sequence[int] = (),
        reload: Callable[[], kf.KeyringSecrets] | None = None,
        role: str = "library",
        config: fleet.FleetConfig | None = None,
    ) -> None:
        if store.keyring_id != keyring_id:
            raise KeyringError("the key store belongs to another keyring")
        self._keyring_id = keyring_id
        self._secrets = secrets
        self._unbound = tuple(unbound)
        self._kekset = KekSet(keyring_id, current_kek, secrets.keks, unbound=self._unbound)
        self._store: KeyStore | None = store
        self._closed = False
        self._rng = rng or default_rng()
        self._legacy: dict[str, tuple[str, ...]] | None = None
        self._legacy_lock = threading.Lock()
        self._reload = reload
        self._refusal: str | None = None
        self._adopt_lock = threading.RLock()
        cfg = config or fleet.FleetConfig.from_env()
        self._tombstone_key = fleet.tombstone_key(secrets.x25519_private, keyring_id)
        self._tag = fleet.TombstoneTagger(self._tombstone_key)
        self._cache = fleet.KeyCache(cfg.cache_keys, self._tag)
        self.member = fleet.FleetMember(
            store,
            role=role,
            current_kek=lambda: self._kekset.current,
            cached=lambda: len(self._cache),
            on_tombstones=self._cache.drop_tags,
            on_state=self._adopt,
            ttl=cfg.lease_ttl,
            poll=cfg.poll,
        )
        self.cached_key = self._cache.lease_bound_get(self.member)
        """The single-record fast path (the optional ``cached_key`` of :class:`DataKeys`):
        a cached key while the lease is valid, else ``None``; never touches the store."""
        self.cached_view = self._cache.lockless_view(self.member)
        """The same, inlined by the record engine (the optional ``cached_view``)."""
        st = self.member.last_state
        if not st.current_kek:  # a store from before fleet state: record the file's version
            with contextlib.suppress(KeyringError):
                st = store.set_current_kek(current_kek)
        self._adopt(st, reload=False)  # the file was read just now (and its reader is not set up)
        self.member.start()

    counts_records = False
    """Sealing counts nothing here: a batch asks for each distinct subject once."""

    def __repr__(self) -> str:
        return f"LocalDataKeys(id={self._keyring_id}, <redacted>)"

    @property
    def keyring_id(self) -> str:
        return self._keyring_id

    @property
    def store(self) -> KeyStore:
        if self._store is None:
            raise KeyringError("the keyring was closed")
        return self._store

    @property
    def secrets(self) -> kf.KeyringSecrets:
        """The sealed part of the keyring file (for re-sealing it in rotate/retire/rekey)."""
        return self._secrets

    @property
    def keks(self) -> KekSet:
        """Every KEK; :class:`KeyringError` once closed (never the zeroed placeholder)."""
        if self._closed:
            raise KeyringError("the keyring was closed")
        return self._kekset

    @property
    def cache(self) -> fleet.KeyCache:
        return self._cache

    def catch_up(self) -> None:
        """Follow the store's shared state now, not at the next poll: an admin call acts on
        what the store says (a rewrap right after another process rotated moves the keys to
        the new version; it answered "nothing to do" under the old one). KeyringError if
        this process cannot follow it (unseal again)."""
        self._adopt(self.store.state())
        if self._refusal is not None:
            raise KeyringError(self._refusal, hint="another process changed the keyring")

    def set_secrets(self, secrets: kf.KeyringSecrets, current_kek: int) -> None:
        """Adopt the KEKs of a rewritten keyring file (after rotate or retire)."""
        self._kekset = KekSet(self._keyring_id, current_kek, secrets.keks, unbound=self._unbound)
        self._secrets = secrets
        self._refusal = None

    def stored_spellings(self, subject: str) -> tuple[str, ...]:
        """Every spelling a key of ``subject`` may be stored under: what ``shred`` deletes
        and a legal hold covers (issue 21: a key stored before normalization under marks
        out of canonical order, neither NFC nor NFD, survived ``shred`` of the NFC subject).

        :func:`~keysplit.names.subject_spellings` (NFC, as given, NFD), plus, when the
        subject can be spelled other ways at all (:func:`~keysplit.names.has_other_spellings`),
        the stored non-NFC subjects that canonicalize to it. Those are found by one pass over
        the store per session (keys created since are NFC-only, see :meth:`_create`, so
        the set can only shrink); an ASCII subject without ``K``, ``;`` or a backquote never
        pays for it.
        """
        spellings = names.subject_spellings(subject)
        if not names.has_other_spellings(subject):
            return spellings
        extra = self._legacy_index().get(spellings[0], ())
        return spellings + tuple(x for x in extra if x not in spellings)

    def held_spellings(self, subject: str) -> tuple[str, ...]:
        """The spellings of ``subject`` under legal hold, read from the store now.

        Those of :meth:`stored_spellings`, and any other held text that canonicalizes to
        the subject: holds came before normalization, so one may sit on a spelling under
        which no key is stored (the key under NFC or another spelling), and it still holds
        the subject. Only an empty answer lets ``shred`` go ahead.
        """
        spellings = self.stored_spellings(subject)
        holds = self.store.legal_holds()
        if not holds:
            return ()
        if not names.has_other_spellings(subject):
            return tuple(h for h in holds if h in spellings)
        canon = spellings[0]
        return tuple(
            h
            for h in holds
            if h in spellings or (not names.is_nfc(h) and unicodedata.normalize("NFC", h) == canon)
        )

    def _legacy_index(self) -> dict[str, tuple[str, ...]]:
        """NFC subject -> the non-NFC spellings stored for it (one scan of the store)."""
        with self._legacy_lock:
            if self._legacy is None:
                found: dict[str, list[str]] = {}
                after = ""
                while True:  # every row: no key is under version -1
                    rows = self.store.stale_batch(-1, after, 10_000)
                    if not rows:
                        break
                    for r in rows:
                        if not names.is_nfc(r.subject):
                            nfc = unicodedata.normalize("NFC", r.subject)
                            found.setdefault(nfc, []).append(r.subject)
                    after = rows[-1].subject
                self._legacy = {k: tuple(v) for k, v in found.items()}
            return self._legacy

    def forget(self, subject: str) -> None:
        """Drop a cached key (after its subject was shredded)."""
        self._cache.drop([subject])

    def tombstone_tags(self, subject: str) -> list[bytes]:
        """Tombstone tags of every spelling a key of ``subject`` may be stored under."""
        return [self._tag(s) for s in self.stored_spellings(subject)]

    def tombstone_tag(self, subject: str) -> bytes:
        """The tombstone tag of this exact spelling."""
        return self._tag(subject)

    def missing_error(self, subject: str) -> KeysplitError:
        """Why no key of ``subject`` opens a record: :class:`ShreddedError` if the store
        holds a tombstone for any of its spellings, :class:`IntegrityError` if it has a key
        (but not the one the record names), else :class:`NoDataKeyError`."""
        if self.store.has_tombstone(self.tombstone_tags(subject)):
            return ShreddedError(
                hint="its data key was deleted (keysplit shred); its records are gone"
            )
        if self.store.get_many(self.stored_spellings(subject)):
            return IntegrityError()
        return NoDataKeyError(
            hint="no key was ever created for this subject in this store "
            "(wrong subject, another keyring, or a store restored from an old backup)"
        )

    def _adopt(self, st: KeyringState, *, reload: bool = True) -> None:
        """Follow the shared state: the store's current KEK, without retired versions
        (``reload``: re-read the keyring file for a current KEK it does not know yet)."""
        with self._adopt_lock:
            ks = self._kekset
            retired = set(st.retired) & set(ks.versions)
            if (not st.current_kek or st.current_kek == ks.current) and not retired:
                return
            secrets = self._secrets
            if st.current_kek and st.current_kek not in secrets.keks:
                if reload and self._reload is None:
                    self._refusal = "the keyring changed elsewhere: unseal again"
                    return
                try:
                    secrets = self._reload() if reload and self._reload else secrets
                except IntegrityError:
                    self._refusal = "rekeyed elsewhere: unseal again"
                    return
                if st.current_kek not in secrets.keks:
                    self._refusal = (
                        f"the store's current KEK version {st.current_kek} is not in this "
                        "keyring file (rotated on another host?): unseal again"
                    )
                    return
            keks = {v: k for v, k in secrets.keks.items() if v not in st.retired}
            current = st.current_kek or ks.current
            self._kekset = KekSet(self._keyring_id, current, keks, unbound=self._unbound)
            self._secrets = kf.KeyringSecrets(secrets.x25519_private, keks)
            self._refusal = None

    def close(self) -> None:
        self._closed = True  # first: a call racing the teardown below says "closed"
        self.member.close()
        self._cache.clear()
        self._secrets = kf.KeyringSecrets(b"", {})
        self._kekset = KekSet(self._keyring_id, 0, {0: b""})
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- DataKeys -------------------------------------------------------------------------

    def _lease_ok(self) -> None:
        """Cached keys are used only while the lease holds (:mod:`.fleet`)."""
        if self._closed or self._store is None:
            raise KeyringError("the keyring was closed")
        if not self.member.valid():  # the lease lapsed (thread starved, store was away)
            self._cache.clear()
            try:
                self.member.renew()  # raises if the store is still unreachable
            except Exception:
                if self._closed:
                    raise KeyringError("the keyring was closed") from None
                raise
            if self._closed:  # a close zeroed the lease meanwhile: never leave it revived,
                self.member.lapse()  # or what this call caches is served after close
                raise KeyringError("the keyring was closed")

    def resolve(self, subjects: Sequence[str], *, create: bool) -> list[DataKey | None]:
        self._lease_ok()
        cache = self._cache
        gen = cache.generation  # a drop after this point keeps what we fetch out of the cache
        got = cache.get_many(subjects)
        if None not in got:  # the steady state: every key cached
            return got
        known = {s: k for s, k in zip(subjects, got, strict=True) if k is not None}
        missing = [s for s in dict.fromkeys(subjects) if s not in known]
        raw, found = self._fetch_open(missing, create=create)
        try:
            fetched = [(s, DataKey(raw[i].tobytes())) for i, s in enumerate(found)]
        finally:
            raw.fill(0)
        known.update(fetched)
        cache.put_many(fetched, since=gen)
        return list(map(known.get, subjects))

    def export(self, subjects: Sequence[str], *, create: bool) -> list[bytes | None]:
        """Raw keys, unwrapped from the store on every call (never from the cache of
        derived keys, which holds no raw key)."""
        self._lease_ok()
        uniq = list(dict.fromkeys(subjects))
        raw, found = self._fetch_open(uniq, create=create)
        try:
            got = {s: raw[i].tobytes() for i, s in enumerate(found)}
        finally:
            raw.fill(0)
        return [got.get(s) for s in subjects]

    def _fetch_open(self, subjects: Sequence[str], *, create: bool) -> tuple[np.ndarray, list[str]]:
        """:meth:`_fetch`, where a failure caused by a concurrent :meth:`close` (the store
        closed under it, the KEKs zeroed) is the :class:`KeyringError` any call after the
        close gets, not whatever the torn-down part raised."""
        try:
            return self._fetch(subjects, create=create)
        except Exception:
            if self._closed:
                raise KeyringError("the keyring was closed") from None
            raise

    def _fetch(self, subjects: Sequence[str], *, create: bool) -> tuple[np.ndarray, list[str]]:
        """Raw keys ``(N, 16)`` of those of ``subjects`` (distinct) that have one, or all
        with ``create``, and their subjects in row order. The one unwrap path of both
        :meth:`resolve` and :meth:`export`; the caller zeroes the array."""
        for s in subjects:
            check_subject(s)  # a bad subject never reaches the store
        if create and not all(map(names.is_nfc, subjects)):
            raise ValueError("data keys are created under NFC subjects only (keysplit.names)")
        if create and len(subjects) <= _INSERT_FIRST and self._refusal is None:
            # a few subjects: offer new keys straight away; insert_many hands back the
            # stored key where one exists, so a new subject costs one store call (one
            # round trip on PostgreSQL) instead of a lookup and then an insert
            return self._create(subjects)
        found = self.store.get_many(subjects)
        rows = list(found.values())
        raw = self._unwrap(rows)
        subs = [r.subject for r in rows]
        absent = [s for s in subjects if s not in found]
        if absent and create:
            import numpy as np

            made, made_subs = self._create(absent)
            raw = np.concatenate([raw, made])
            made.fill(0)
            subs += made_subs
        return raw, subs

    def _unwrap(self, rows: Sequence[WrappedKey]) -> np.ndarray:
        if any(len(r.wrapped) != WRAPPED_SIZE for r in rows):
            raise FormatError("key store holds a wrapped key of the wrong length")
        raw, ok = self._kekset.unwrap(rows)
        if not bool(ok.all()):
            raw.fill(0)
            bad = [r.subject for r, good in zip(rows, ok, strict=True) if not good]
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise IntegrityError(
                f"the wrapped data key of subject {bad[0]!r}{more} in the store failed "
                "authentication",
                hint="the row was altered, moved from another subject, or belongs to "
                "another keyring",
            )
        return raw

    def _create(self, subjects: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """New keys for ``subjects``, inserted if absent; where another writer won the race
        its key is unwrapped instead. Returns the raw keys actually stored.

        Only under the store's current KEK: the store checks it in the insert's
        transaction; on :class:`StaleKekError` this process catches up (re-reads the
        keyring file) and tries again (up to :data:`_CREATE_TRIES` in all: each refusal
        means another rotation or retirement landed meanwhile), or refuses with the reason."""
        import numpy as np

        for attempt in range(_CREATE_TRIES):
            if self._refusal is not None:
                raise KeyringError(self._refusal, hint="another process changed the keyring")
            raw = np.frombuffer(bytearray(self._rng.random_bytes(16 * len(subjects))), np.uint8)
            raw = raw.reshape(-1, 16)
            rows = self._kekset.wrap(subjects, raw)
            try:
                stored = self.store.insert_many(rows)
            except StaleKekError as exc:  # rotated or retired elsewhere: catch up
                raw.fill(0)
                self._adopt(exc.state)
                if attempt == _CREATE_TRIES - 1:
                    raise
                continue
            except LostInsertError:  # stored or not: never offer these keys again
                raw.fill(0)
                if attempt == _CREATE_TRIES - 1:
                    raise
                continue
            lost = [
                i for i, (mine, kept) in enumerate(zip(rows, stored, strict=True)) if kept != mine
            ]
            if lost:  # another writer created these subjects' keys first: use theirs
                try:
                    theirs = self._unwrap([stored[i] for i in lost])
                except BaseException:
                    raw.fill(0)
                    raise
                raw[lost] = theirs
                theirs.fill(0)
            return raw, list(subjects)
        raise AssertionError("unreachable")

    def hpke_open(self, ciphertext: bytes, info: bytes) -> bytes:
        if not self._secrets.x25519_private:
            raise KeyringError("the keyring was closed")
        if not isinstance(info, bytes | bytearray):
            raise TypeError("info must be bytes")
        return hpke.open(self._secrets.x25519_private, bytes(info), ciphertext)

    def audit_key(self) -> bytes:
        """HKDF-SHA256 of the X25519 private key (kept by rekey and rotate, so one key
        covers the log's whole life), with the keyring id bound in (logs of two keyrings
        never verify under each other's key)."""
        if not self._secrets.x25519_private:
            raise KeyringError("the keyring was closed")
        return audit_key_for(self._secrets.x25519_private, self._keyring_id)
