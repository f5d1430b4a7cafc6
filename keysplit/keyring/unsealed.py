"""The unsealed keyring: the record API over :class:`DataKeys`, plus key administration.

Records (``encrypt``/``decrypt`` and their batch forms) are the one engine
:class:`~keysplit.keyring.records.Records` over a
:class:`~keysplit.keyring.datakeys.DataKeys`, so the same API runs over the keys held
here (:class:`LocalDataKeys`, what :meth:`Keyring.unseal` gives) or over another source
(:meth:`UnsealedKeyring.over`). Administration (rotate, retire, shred, hold, rekey)
is the :class:`~keysplit.keyring.admin.KeyAdmin` this keyring owns when it holds the keys
itself (and the bulk loop of :mod:`.rewrap`): it returns new metadata, which this keyring
hands to its :class:`Keyring` once committed. Nothing here imports :mod:`.sealed`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from ..audit import AuditLog
from ..audit import events as ev
from ..errors import (
    AuditError,
    IntegrityError,
    KeyringError,
    KeysplitError,
    ShreddedError,
    StoreUnreachableError,
)
from ..packed import Packed
from ..record import DataKey
from ..rng import RandomSource
from ..share import Share
from ..store import KeyStore
from ..store.base import AuditStore
from . import file as kf
from .admin import KeyAdmin
from .datakeys import DataKeys, KekSet, KeyringSecrets, LocalDataKeys
from .records import Records
from .rewrap import RewrapResult, rewrap_store
from .status import KeyringStatus, status_of

if TYPE_CHECKING:
    from .sealed import Keyring

__all__ = ["UnsealedKeyring", "store_state"]

Progress = Callable[[int, int], None]
T = TypeVar("T")
_log = logging.getLogger(__name__)


def store_state(ukr: UnsealedKeyring, operation: str, subject: str) -> str:
    """What the key store shows now of a ``shred`` or ``legal-hold`` of ``subject`` (an
    intent's), in words: what an ``observed`` entry records (:mod:`keysplit.ceremony.observe`
    for every operation; here, so that the library's own calls close their intents too)."""
    try:
        if operation == ev.Shred.NAME:
            why = ukr.local_data_keys().missing_error(subject)
            if isinstance(why, ShreddedError):
                return "done: the subject's data key is destroyed"
            if isinstance(why, IntegrityError):
                return "not done: the subject's data key exists"
            return "not done: the subject has no data key and no shred on record"
        if operation == ev.LegalHold.NAME:
            held = ukr.local_data_keys().held_spellings(subject)
            return f"the subject is {'' if held else 'not '}under legal hold now"
    except (KeysplitError, OSError, ValueError) as exc:
        return f"unknown: the state could not be read ({type(exc).__name__})"
    return "unknown"


def check_writable(store: KeyStore) -> None:
    """Refuse a store opened for reading only (its ``read_only``) as the store of an
    unsealed keyring, which writes to it from its first moment: its lease in the fleet,
    taken at once and renewed while it is open (each renewal would fail, and the keyring
    would stop serving cached keys when the lease lapsed), new data keys, shreds."""
    if getattr(store, "read_only", False):
        raise KeyringError(
            "the key store was opened for reading only, and an unsealed keyring writes to "
            "it (its lease in the fleet, renewed while it is open; new data keys); nothing "
            "was changed",
            hint="give a store opened for writing (without read_only=True), or none: the "
            "keyring then opens its own",
        )


class UnsealedKeyring:
    """An open keyring: encrypts and decrypts records, manages keys. Holds secrets.

    Use as a context manager (or call :meth:`close`) to drop the keys and close the store.
    """

    def __init__(
        self,
        keyring: Keyring,
        master: bytes,
        secrets: kf.KeyringSecrets,
        *,
        store: KeyStore | None = None,
        rng: RandomSource | None = None,
    ) -> None:
        self._kr = keyring
        self.rng: RandomSource = rng or keyring.rng
        self._admin_lock = threading.RLock()
        """Held by rotate, retire and the rekey steps from reading the keyring's metadata to
        adopting what they wrote: two threads of this process rotating at once took the
        second for another process ("the keyring file changed under this process")."""
        if store is None:
            store = keyring.open_store()
        elif store.keyring_id != keyring.meta.keyring_id:
            raise KeyringError("the key store belongs to another keyring")
        else:
            check_writable(store)
        local = LocalDataKeys(
            keyring.meta.keyring_id,
            secrets,
            keyring.meta.current_kek,
            store,
            rng=self.rng,
            unbound=keyring.unbound_kek_versions,
            reload=self._reload,
        )
        self._dk: DataKeys = local
        self._admin: KeyAdmin | None = KeyAdmin(
            keyring.home,
            local,
            master,
            self.rng,
            store_url=keyring.store_url,
            anchored=self._anchored,
        )
        self._use_records(Records(self._dk, rng=self.rng))

    def _reload(self) -> kf.KeyringSecrets:
        """Re-read the keyring file (another process rotated or retired): its secrets.
        :class:`IntegrityError` if this session's master key no longer opens it (rekeyed)."""
        if self._admin is None or self._admin.closed:
            raise KeyringError("the keyring was closed")
        meta, secrets = kf.open_secrets(self._kr.home.read_keyring(), self._admin.master_key)
        self._kr._adopt(meta, self._kr.pending)
        return secrets

    def set_role(self, role: str) -> None:
        """What this process is in ``keysplit status``'s lease list (``serve``, ``job``,
        ``cli``; default ``library``)."""
        member = self.local_data_keys().member
        member.role = role
        member.renew()

    @classmethod
    def over(cls, keyring: Keyring, data_keys: DataKeys) -> UnsealedKeyring:
        """The record API of ``keyring`` over another :class:`DataKeys` (a key service
        client). Key administration then raises :class:`KeyringError`."""
        if data_keys.keyring_id != keyring.keyring_id:
            raise KeyringError("the data keys belong to another keyring")
        self = cls.__new__(cls)
        self._kr = keyring
        self._admin = None
        self._admin_lock = threading.RLock()
        self.rng = keyring.rng
        self._dk = data_keys
        self._use_records(Records(data_keys, rng=self.rng))
        return self

    # -- plumbing -------------------------------------------------------------------------

    def _use_records(self, records: Records) -> None:
        """Serve the record methods straight from the engine: the methods below document
        them, and the instance attributes skip one Python frame per call (single records
        measured 5-8 % faster through the key service and a backend's loop)."""
        self.records = records
        self.encrypt = records.encrypt  # type: ignore[method-assign]
        self.decrypt = records.decrypt  # type: ignore[method-assign]
        self.encrypt_many = records.encrypt_many  # type: ignore[method-assign]
        self.decrypt_many = records.decrypt_many  # type: ignore[method-assign]
        self.encrypt_packed = records.encrypt_packed  # type: ignore[method-assign]
        self.decrypt_packed = records.decrypt_packed  # type: ignore[method-assign]

    def local_data_keys(self) -> LocalDataKeys:
        """The keys held in this process; :class:`KeyringError` over a remote DataKeys."""
        if not isinstance(self._dk, LocalDataKeys):
            raise KeyringError("key administration needs the keyring unsealed in this process")
        return self._dk

    def _key_admin(self) -> KeyAdmin:
        """This session's :class:`KeyAdmin`; :class:`KeyringError` over a remote DataKeys."""
        self.local_data_keys()
        if self._admin is None:  # not reached: the admin exists whenever the keys are local
            raise KeyringError("key administration needs the keyring unsealed in this process")
        return self._admin

    def _secrets(self) -> KeyringSecrets:
        if not isinstance(self._dk, KeyringSecrets):
            raise KeyringError("this keyring's data keys come from elsewhere: no HPKE or audit key")
        return self._dk

    @property
    def master_key(self) -> bytes:
        """The master key (re-seals the keyring file in rotate/retire). Secret."""
        if self._admin is None:
            raise KeyringError("the master key is not held in this session")
        return self._admin.master_key

    @property
    def store(self) -> KeyStore:
        return self.local_data_keys().store

    @property
    def keyring(self) -> Keyring:
        return self._kr

    @property
    def public_key(self) -> bytes:
        return self._kr.public_key

    @property
    def recipient(self) -> X25519PublicKey:
        return self._kr.recipient

    def close(self) -> None:
        """Forget the keys and close the store.

        The master key goes first: a rotate, retire or rekey racing this close then fails
        for want of it, never seals the keyring file around the KEKs the data keys' close
        has just zeroed (which left a file no quorum could open: every data key lost)."""
        if self._admin is not None:
            self._admin.close()
        self._dk.close()

    def __enter__(self) -> UnsealedKeyring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"UnsealedKeyring({str(self._kr.path)!r}, id={self._kr.keyring_id}, <redacted>)"

    def audit_key(self) -> bytes:
        """32-byte HMAC key for the ceremony log (:class:`~keysplit.audit.AuditLog`).

        Derived with HKDF-SHA256 from the keyring's X25519 private key, which rekey and
        rotate keep, so one key covers the whole life of the log; the keyring id is bound
        in, so logs of two keyrings never verify under each other's key.
        """
        return self._secrets().audit_key()

    def audit_log(self) -> AuditLog:
        """The keyring's ceremony log with its MAC key: appends are MACed, verify checks MACs."""
        return self._audit_log(bool(self._kr.meta.audit_anchor))

    def _audit_log(self, anchor_required: bool) -> AuditLog:
        store = self._dk.store if isinstance(self._dk, LocalDataKeys) else None
        home = self._kr.home
        return AuditLog(
            home.audit_path,
            mac_key=self.audit_key(),
            store=store if isinstance(store, AuditStore) else None,
            anchor=home.anchor_path,
            anchor_required=anchor_required,
            checkpoint=home.checkpoint_path,
        )

    def _anchored(self) -> bool:
        """Whether the audit anchor exists and verifies (its MAC, and the log's head against
        it, as an append checks): a keyring from before anchors may then claim it.

        A missing anchor is written first, recording the log as it is (its whole chain
        verified: a log that fails gets none). Such a keyring has no anchor until its first
        keyed append, which a ceremony makes after the metadata write that asks this: the
        flag came only with the second metadata write, and a deletion in between passed."""
        log = self._audit_log(True)
        try:
            if log.anchor_path is not None and not os.path.lexists(log.anchor_path):
                log.write_anchor()
            log.check_append()
        except (AuditError, OSError):
            return False
        return True

    # -- for the key service and jobs -----------------------------------------------------

    def data_keys(self, subjects: Sequence[str], *, create: bool = False) -> list[DataKey | None]:
        """Data keys of ``subjects`` (in order; ``None`` for a subject without a key unless
        ``create``), under any stored spelling: :meth:`Records.keys`."""
        return self.records.keys(subjects, create=create)

    def keks_for_rewrap(self) -> KekSet:
        """Every KEK of this keyring, current version included, for a rewrap job
        (:func:`keysplit.keyring.rewrap.rewrap_store` over its range of subjects).
        Holding the result is holding every KEK."""
        return self.local_data_keys().keks

    # -- records --------------------------------------------------------------------------

    def encrypt(
        self, plaintext: bytes, *, subject: str, context: Mapping[str, str] | None = None
    ) -> bytes:
        """Seal a record for ``subject`` (its data key is created on first use)."""
        return self.records.encrypt(plaintext, subject=subject, context=context)

    def decrypt(
        self, record: bytes, *, subject: str, context: Mapping[str, str] | None = None
    ) -> bytes:
        """Open a record; :class:`IntegrityError` if it does not belong to this subject and
        context, was altered, or the subject was shredded."""
        return self.records.decrypt(record, subject=subject, context=context)

    def encrypt_many(
        self,
        subjects: Sequence[str],
        plaintexts: Sequence[bytes],
        context: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None = None,
    ) -> list[bytes]:
        """Seal many records (``subjects[i]`` owns ``plaintexts[i]``) in one pass."""
        return self.records.encrypt_many(subjects, plaintexts, context)

    def decrypt_many(
        self,
        subjects: Sequence[str],
        records: Sequence[bytes],
        context: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None = None,
    ) -> list[bytes]:
        """Open many records; all-or-nothing (:class:`IntegrityError` if any fails)."""
        return self.records.decrypt_many(subjects, records, context)

    def encrypt_packed(
        self,
        subjects: Sequence[str],
        plaintexts: Sequence[bytes],
        context: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None = None,
    ) -> Packed:
        """:meth:`encrypt_many` into one buffer (a :class:`~keysplit.packed.Packed`: record
        ``i`` is ``result[i]``), sealed in place: no ``bytes`` per record."""
        return self.records.encrypt_packed(subjects, plaintexts, context)

    def decrypt_packed(
        self,
        subjects: Sequence[str],
        records: Sequence[bytes] | Packed,
        context: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None = None,
    ) -> Packed:
        """:meth:`decrypt_many` into one buffer (``records`` a list or a
        :class:`~keysplit.packed.Packed`); all-or-nothing, no plaintext if any fails."""
        return self.records.decrypt_packed(subjects, records, context)

    def hpke_open(self, ciphertext: bytes, info: bytes = b"") -> bytes:
        """Open data sealed to this keyring with :func:`hpke_seal` (RFC 9180 base mode)."""
        return self._secrets().hpke_open(ciphertext, info)

    def hpke_decrypt(self, ciphertext: bytes, info: bytes) -> bytes:
        """Same as :meth:`hpke_open`; the opener protocol :mod:`keysplit.stream` accepts."""
        return self._secrets().hpke_open(ciphertext, info)

    # -- key management (:mod:`.admin`, :mod:`.rewrap`) ---------------------------------

    # Called from the library, each of these records its audit entry (authorized_by: [],
    # i.e. "a process holding the unsealed keyring"); keysplit.ceremony passes
    # ``record=False`` because it records the entry itself, naming its authority.

    def _record(self, event: ev.Event) -> None:
        ev.record(self.audit_log(), event)

    def _check_log(self, record: bool) -> None:
        """Before a change that will be recorded: refuse it, changing nothing, if its entry
        could not be appended (a torn last line, a bad MAC), rather than act and then fail."""
        if record:
            self.audit_log().check_append()

    def rotate(self, *, record: bool = True) -> int:
        """Create a new KEK version; new data keys are wrapped under it. Returns it.

        The new KEK is durable in the keyring file before anything uses it, and current in
        the store (for every process) from then on.
        """
        kr = self._kr
        self._check_log(record)
        with self._admin_lock:
            admin = self._key_admin()
            try:
                v, meta = admin.rotate(kr.meta, kr.pending)
            except StoreUnreachableError:
                kept = admin.take_unconfirmed()  # the file kept a version the store may have
                if kept is not None:
                    kr._adopt(kept, kr.pending)
                raise
            kr._adopt(meta, kr.pending)
        if record:
            self._record(ev.Rotate(v, ()))
        return v

    def rewrap(
        self,
        *,
        batch_size: int = 10_000,
        progress: Progress | None = None,
        record: bool = True,
    ) -> RewrapResult:
        """Move every data key not under the current KEK to it, ``batch_size`` at a time.

        Each batch commits in one transaction, so an interrupted rewrap loses nothing and
        simply resumes where it stopped when run again. ``progress(done, total)`` is called
        after every batch. Data and records are untouched. A stored key that fails its
        integrity check is left as it is and named in :attr:`RewrapResult.corrupt`; the
        others are still rewrapped.
        """
        self._check_log(record)
        local = self.local_data_keys()
        local.catch_up()  # the store's current KEK, even if another process just rotated
        res = rewrap_store(local.keks, local.store, batch_size=batch_size, progress=progress)
        if record:
            self._record(ev.Rewrap(res.kek_version, res.rewrapped, res.remaining, ()))
        return res

    def retire(self, version: int, *, record: bool = True) -> None:
        """Delete KEK ``version`` from the keyring; refused (naming what still uses it)
        while any data key, or any live process's current KEK, uses it."""
        kr = self._kr
        self._check_log(record)
        with self._admin_lock:
            kr._adopt(self._key_admin().retire(kr.meta, kr.pending, version), kr.pending)
        if record:
            self._record(ev.Retire(version, ()))

    def _store_change(self, operation: str, subject: str, change: Callable[[], T]) -> T:
        """``change`` (a shred or a legal hold: the key store commits it, the keyring file
        shows nothing) after an ``intent`` entry, as the ceremonies do: killed before its
        own entry, the open intent is the mark (``audit verify``; the next quorum records
        what it finds). A change that raises closes its intent (``observed``: the error's
        class and what the store shows; best effort, the error is what propagates)."""
        log = self.audit_log()
        begun = ev.record(log, ev.Intent(operation, subject, ()))
        try:
            return change()
        except BaseException as exc:
            seen = f"{type(exc).__name__}; {store_state(self, operation, subject)}"
            with contextlib.suppress(KeysplitError, OSError):
                ev.record(log, ev.Observed(operation, subject, begun.seq, seen, ()))
            raise

    def set_legal_hold(self, subject: str, hold: bool, *, record: bool = True) -> None:
        """Place (True) or lift (False) a legal hold: a held subject cannot be shredded.
        ``record``: an ``intent`` entry before the change, a ``legal-hold`` entry after."""
        self._check_log(record)
        if not record:
            self._key_admin().set_legal_hold(subject, hold)
            return
        op = ev.LegalHold.NAME
        self._store_change(op, subject, lambda: self._key_admin().set_legal_hold(subject, hold))
        self._record(ev.LegalHold(subject, bool(hold), ()))

    def shred(self, subject: str, *, record: bool = True) -> bool:
        """Destroy ``subject``'s data key: its records can never be decrypted again.

        Raises :class:`LegalHoldError` if the subject is under legal hold. Returns whether a
        key existed. The store keeps a tombstone (a keyed hash of the subject) written with
        the delete; every process holding the keyring drops the key from its cache within
        the fleet bound (:mod:`keysplit.keyring.fleet`), and decrypting the subject's
        records then raises :class:`ShreddedError`. Copies of the store in old backups still
        hold the key wrapped under its KEK version; rotate, rewrap and retire that version
        to make those useless too.

        ``record``: an ``intent`` entry before the delete, a ``shred`` entry after (a
        refusal closes the intent with an ``observed`` one).
        """
        self._check_log(record)
        if not record:
            return self._key_admin().shred(subject)
        existed = self._store_change(
            ev.Shred.NAME, subject, lambda: self._key_admin().shred(subject)
        )
        self._record(ev.Shred(subject, existed, ()))
        return existed

    def prepare_rekey(
        self,
        *,
        threshold: int | None = None,
        custodians: Sequence[str] | None = None,
        rng: RandomSource | None = None,
    ) -> dict[str, Share]:
        """Phase 1 of rekey: new master key and shares, written as ``keyring.pending``.

        The current shares keep working until :meth:`commit_rekey`. Hand out (and ideally
        verify) the returned shares before committing. ``custodians`` defaults to the
        current names; ``threshold`` to the current one, capped at the number of custodians.
        Returns ``{custodian name: Share}`` in custodian order (share index = position + 1).
        """
        kr = self._kr
        with self._admin_lock:
            shares, pending = self._key_admin().prepare_rekey(
                kr.meta, threshold=threshold, custodians=custodians, rng=rng
            )
            kr._adopt(kr.meta, pending)
        return shares

    def commit_rekey(self) -> None:
        """Phase 2 of rekey: the pending keyring replaces the current one atomically.

        From here on only the new shares unseal the keyring. The store then counts the
        rekey (``status``'s fleet ``rekeys``, an epoch bump); a store that fails that is
        logged, not raised: the rekey took effect, and an error here had :meth:`rekey`
        lose the only shares that unseal the keyring. The count is then owed (kept in
        the keyring's home) and made by the next unseal or rekey (:meth:`_note_rekey`).
        """
        kr = self._kr
        with self._admin_lock:
            kr._adopt(self._key_admin().commit_rekey(kr.meta, kr.pending), None)
        self._note_rekey()

    def _note_rekey(self, *, current: bool = True) -> None:
        """Have the store count a rekey that took effect here (``status``'s fleet
        ``rekeys``; an epoch bump tells the fleet): by :meth:`commit_rekey`, or by an unseal
        whose shares switched the keyring, or that finds counts owed (``current=False``:
        only those). A failure is logged, not raised: the switch stands, and an error after
        it reported a rekey or an unseal as failed. The rekeys not counted are kept in the
        keyring's home (``uncounted``), oldest first, and counted first by the next call,
        in order (the store knows only the set it counted last, so a set counted out of
        order would be counted again)."""
        home = self.keyring.home
        owed = home.uncounted()
        now = self.keyring.meta.set_id
        sets = owed if now in owed or not current else [*owed, now]
        for i, rekey in enumerate(sets):
            try:
                self.store.note_rekey(rekey)
            except KeysplitError as exc:
                _log.warning("the rekey took effect; the key store did not count it: %s", exc)
                self._owe(sets[i:])
                return
        if owed:
            self._owe([])

    def _owe(self, sets: list[str]) -> None:
        """Keep ``sets`` as the rekeys the store has not counted (none: all counted)."""
        try:
            self.keyring.home.mark_uncounted(sets)
        except OSError as exc:
            _log.warning("cannot keep the rekeys the key store owes a count: %s", exc)

    def abort_rekey(self) -> bool:
        """Discard a pending rekey (its shares become useless). True if one existed."""
        with self._admin_lock:
            existed = self._key_admin().abort_rekey()
            self._kr._adopt(self._kr.meta, None)
        return existed

    def rekey(
        self,
        *,
        threshold: int | None = None,
        custodians: Sequence[str] | None = None,
        rng: RandomSource | None = None,
    ) -> dict[str, Share]:
        """New master key and shares in one step (prepare + commit); old shares die.

        Data keys and records are untouched. Prefer the two-phase form in a ceremony.
        """
        shares = self.prepare_rekey(threshold=threshold, custodians=custodians, rng=rng)
        self.commit_rekey()
        return shares

    def status(self) -> KeyringStatus:
        """Secret-free state: versions, counts, custodians, pending rekey."""
        return status_of(self._kr, self.store, sealed=False)
