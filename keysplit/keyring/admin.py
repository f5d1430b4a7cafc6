"""Key administration of an unsealed keyring: rotate, retire, shred, hold, two-phase rekey.

:class:`KeyAdmin` is owned by the :class:`~keysplit.keyring.unsealed.UnsealedKeyring`
that holds the keyring in this process (master key and KEKs, a
:class:`~keysplit.keyring.datakeys.LocalDataKeys`); a keyring opened over a remote
:class:`~keysplit.keyring.datakeys.DataKeys` has none, so it refuses these operations.
It gets what it needs as arguments (the home, the local keys, the master key, the
randomness) and never reaches back into the keyring objects: each operation takes the
keyring's current metadata, an immutable :class:`~keysplit.keyring.file.KeyringMeta`, and
returns the new one, which the owner adopts once the file is committed.

Writers serialize on the home's lock; the keyring file is re-read under it and must be the
one this session opened, so two processes never overwrite each other's change. Ordering
keeps crashes harmless: a new KEK is durable in the keyring file before any data key uses
it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence

from ..errors import (
    FormatError,
    IntegrityError,
    KeyringError,
    LegalHoldError,
    StoreUnreachableError,
)
from ..names import check_custodian_names, has_other_spellings
from ..rng import RandomSource
from ..share import Share, split
from ..store.base import KekInUseError
from . import file as kf
from .datakeys import LocalDataKeys
from .home import KeyringHome

__all__ = ["KeyAdmin", "check_retirable", "validate_custodians"]

_log = logging.getLogger(__name__)


def validate_custodians(threshold: int, custodians: Sequence[str]) -> list[str]:
    """Custodian names and threshold as create and rekey accept them (caller misuse:
    ``TypeError``/``ValueError``)."""
    names = check_custodian_names(custodians)  # unique ignoring case (keysplit.names)
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise TypeError("threshold must be an int")
    if not 2 <= threshold <= len(names):
        raise ValueError("threshold must be between 2 and the number of custodians")
    if len(names) > 255:
        raise ValueError("at most 255 custodians")
    return names


def _check_sealable(secrets: kf.KeyringSecrets) -> None:
    """:class:`KeyringError` for the zeroed secrets of a closed session (no private key, no
    KEK): sealed into the keyring file they would leave nothing any quorum could open."""
    if len(secrets.x25519_private) != 32 or not secrets.keks:
        raise KeyringError("the keyring was closed")


def check_retirable(meta: kf.KeyringMeta, version: int) -> None:
    """:class:`KeyringError` if ``meta`` has no KEK ``version`` to retire (current, or none
    such); what the store still holds under it is checked when retiring. ``TypeError``
    for a version that is not an int (``True`` and ``"1"`` are not version 1)."""
    if isinstance(version, bool) or not isinstance(version, int):
        raise TypeError("KEK version must be an int")
    if version == meta.current_kek:
        raise KeyringError(f"KEK version {version} is current and cannot be retired")
    if version not in meta.kek_versions:
        raise KeyringError(f"KEK version {version} does not exist (or is already retired)")


def check_hold(hold: object) -> None:
    """TypeError unless ``hold`` is ``True`` or ``False`` (every ``set_legal_hold``)."""
    if not isinstance(hold, bool):
        raise TypeError("hold must be True or False")


class KeyAdmin:
    """The key operations of one unsealed session. Holds the master key (and, between
    :meth:`prepare_rekey` and :meth:`commit_rekey`, the new one): secret.

    ``store_url`` is the keyring's store, recorded beside a keyring from before subject
    binding on its first rotate. ``anchored``: whether the audit log's anchor file verifies
    now (written first if missing); a keyring from before anchors (``audit_anchor`` 0) gains
    the flag at the next metadata this session writes (rotate, retire, rekey) when it does,
    so deleting the anchor is noticed from then on (the file exists before the keyring
    claims it).
    """

    def __init__(
        self,
        home: KeyringHome,
        local: LocalDataKeys,
        master: bytes,
        rng: RandomSource,
        *,
        store_url: str,
        anchored: Callable[[], bool] | None = None,
    ) -> None:
        self._anchored = anchored
        self._home = home
        self._local = local
        self._master = master
        self._pending_master: bytes | None = None
        self._closed = False
        self._rng = rng
        self._store_url = store_url
        self._unconfirmed: kf.KeyringMeta | None = None

    def __repr__(self) -> str:
        return f"KeyAdmin({str(self._home.path)!r}, <redacted>)"

    @property
    def master_key(self) -> bytes:
        """The master key (re-seals the keyring file in rotate/retire). Secret."""
        if self._closed or not self._master:
            raise KeyringError("the master key is not held in this session")
        return self._master

    @property
    def closed(self) -> bool:
        return self._closed or not self._master

    def close(self) -> None:
        """Forget the master keys (the owner closes the local keys). Final: a rekey racing
        this close never hands its new master key back to the session (:meth:`_keep`)."""
        self._closed = True
        self._master = b""
        self._pending_master = None

    def _keep(self, master: bytes | None, pending: bytes | None) -> None:
        """Hold these master keys from now on, unless a close came first: the session then
        keeps none (what the rekey wrote stands; its shares complete it at the next unseal)."""
        if self._closed:
            self._master, self._pending_master = b"", None
            return
        if master is not None:
            self._master = master
        self._pending_master = pending

    def _claim_anchor(self, meta: kf.KeyringMeta) -> kf.KeyringMeta:
        """``meta`` with ``audit_anchor`` 1 if it lacks it and the anchor verifies (checked
        now, written first if missing, before the file that claims it is written)."""
        if meta.audit_anchor or self._anchored is None or not self._anchored():
            return meta
        return dataclasses.replace(meta, audit_anchor=1)

    def _write_keyring(
        self,
        current: kf.KeyringMeta,
        pending: kf.KeyringMeta | None,
        meta: kf.KeyringMeta,
        secrets: kf.KeyringSecrets,
        *,
        adopt: bool = True,
    ) -> None:
        """Replace the keyring file atomically (caller holds the home's lock); refused
        once the session is closed (its secrets zeroed: they must never be sealed).
        ``adopt``: this process's keys follow the file at once (else the caller does)."""
        home = self._home
        master = self.master_key
        _check_sealable(secrets)
        if (pending is not None or home.has_pending()) and home.pending_meta(current) is not None:
            raise KeyringError(
                "a rekey is pending",
                hint="finish it by unsealing with its new shares, or discard it "
                "(keysplit rekey --abort; UnsealedKeyring.abort_rekey())",
            )
        on_disk = kf.parse(home.read_keyring())[0]
        if on_disk != current:
            raise KeyringError("the keyring file changed under this process; unseal again")
        home.write_keyring(kf.serialize(meta, secrets, master, self._rng.random_bytes(12)))
        if adopt:
            self._local.set_secrets(secrets, meta.current_kek)

    def rotate(
        self, current: kf.KeyringMeta, pending: kf.KeyringMeta | None
    ) -> tuple[int, kf.KeyringMeta]:
        """New KEK version, current from now on; durable before anything uses it. Returns
        the version and the new metadata."""
        local = self._local
        # the store's lock first (then the directory's): of two hosts rotating at once, the
        # second waits, then its catch-up finds its copy behind the store and writes nothing
        with local.store.admin_lock(), self._home.lock():
            local.catch_up()  # a keyring file behind the store's state writes nothing
            m = current
            v = m.next_kek
            if self._home.store_record_for(m.keyring_id) is None:
                # A keyring from before subject binding: its versions so far stay unbound
                # (recorded before the new, bound, version exists).
                self._home.record_store(self._store_url, m.keyring_id, m.kek_versions)
            keks = dict(local.secrets.keks)
            keks[v] = self._rng.random_bytes(16)
            meta = dataclasses.replace(
                m,
                generation=m.generation + 1,
                current_kek=v,
                kek_versions=tuple(sorted(keks)),
                next_kek=v + 1,
            )
            meta = self._claim_anchor(meta)
            secrets = kf.KeyringSecrets(local.secrets.x25519_private, keks)
            before = self._home.read_keyring()
            self._write_keyring(current, pending, meta, secrets, adopt=False)
            # durable in the file first; from this commit on every process writes under v
            self._commit_rotation(v, before, meta, secrets)
            # and this process too, only now: ahead of the store, a thread creating a key
            # was refused (StaleKekError), caught up back to the old version and, the
            # commit landing before its one retry, failed again
            local.set_secrets(secrets, v)
        try:
            local.member.renew()  # report the new current KEK in this process's lease now
        except KeyringError:
            # The rotation is committed (file and store): a renewal that fails now (a disk
            # filling up, the store's server gone) is the lease's to retry, not a failed
            # rotation, which the caller would neither record nor believe done.
            _log.debug("keysplit: lease not renewed after rotating to KEK v%d", v)
        return v, meta

    def _commit_rotation(
        self, version: int, before: bytes, meta: kf.KeyringMeta, secrets: kf.KeyringSecrets
    ) -> None:
        """Make ``version`` current in the store (its KEK is in the keyring file already).

        When the store refuses (:meth:`KeyStore.set_current_kek` raising means nothing was
        recorded, a :class:`StoreUnreachableError` excepted) the file is put back as it was
        (``before``; the home's lock is held): no process uses the version, and a file left
        one version ahead of the store made this session's next rotate say "unseal again".
        After a StoreUnreachableError the store may have committed (a connection lost at
        COMMIT): the file keeps the version, the safe side (every process that adopts it
        finds its KEK), and this session follows the file (its keys hold the version, still
        writing under the store's current one; the owner adopts ``meta``:
        :meth:`take_unconfirmed`), so its next rotate goes on from it; a store that then
        shows ``version`` current committed it: the rotation stands.

        A refusal is never taken for a commit, even with ``version`` current by then: that
        is another process's KEK under the same number (this one lost the store's rotation
        lock and another host rotated meanwhile); kept, this host's file and that host's
        would each hold their own KEK as ``version``, and each side's new data keys would
        not open on the other."""
        store = self._local.store
        try:
            store.set_current_kek(version)
        except StoreUnreachableError:
            try:
                committed = store.state().current_kek == version
            except KeyringError:
                committed = False
            if committed:
                return
            self._local.set_secrets(secrets, self._local.keks.current)
            self._unconfirmed = meta
            raise
        except KeyringError:
            self._home.write_keyring(before)
            raise

    def take_unconfirmed(self) -> kf.KeyringMeta | None:
        """The metadata of a rotation whose store commit is unknown (its file was kept), once:
        the owner adopts it, as the file on disk now holds it."""
        meta, self._unconfirmed = self._unconfirmed, None
        return meta

    def retire(
        self, current: kf.KeyringMeta, pending: kf.KeyringMeta | None, version: int
    ) -> kf.KeyringMeta:
        """Delete KEK ``version``; refused while it is current, any data key uses it, or a
        live process (lease) still writes under it. Returns the new metadata."""
        local = self._local
        local.catch_up()  # a keyring file behind the store's state writes nothing
        m = current
        check_retirable(m, version)
        with self._home.lock():
            # one store transaction: no data key and no live process's current KEK uses the
            # version, and from its commit on no write may use it (keysplit.store.base)
            self._retire_in_store(version)
            keks = {v: k for v, k in local.secrets.keks.items() if v != version}
            meta = self._claim_anchor(
                dataclasses.replace(
                    m, generation=m.generation + 1, kek_versions=tuple(sorted(keks))
                )
            )
            secrets = kf.KeyringSecrets(local.secrets.x25519_private, keks)
            self._write_keyring(current, pending, meta, secrets)
        return meta

    def _retire_in_store(self, version: int) -> None:
        """Retire in the store; while only live holders still write under the version, give
        them a few poll intervals to adopt the current one (they do so on their own)."""
        local = self._local
        deadline = time.monotonic() + 3 * local.member.poll + 2.0
        while True:
            try:
                local.store.retire_kek(version)
                return
            except KekInUseError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(0.05, local.member.poll))

    def set_legal_hold(self, subject: str, hold: bool) -> None:
        """Place (True) or lift (False) a legal hold: a held subject cannot be shredded.
        ``hold`` is a bool, nothing else: ``"no"`` would place one, ``0`` lift one."""
        check_hold(hold)
        local = self._local
        spellings = local.stored_spellings(subject)  # every spelling a key may be stored under
        if not hold:  # and every held one, keyless or not (LocalDataKeys.held_spellings)
            spellings += tuple(h for h in local.held_spellings(subject) if h not in spellings)
        local.store.set_legal_holds(spellings, bool(hold))  # one transaction: all or none

    def shred(self, subject: str) -> bool:
        """Destroy the data key of every spelling of ``subject`` (:mod:`keysplit.names`).

        A hold on any spelling refuses the whole shred before anything is deleted; the store
        checks the holds again in the one transaction that deletes every spelling.
        """
        local = self._local
        spellings = local.stored_spellings(subject)
        if len(spellings) > 1 or has_other_spellings(subject):
            held = local.held_spellings(subject)
            if held:
                raise LegalHoldError(
                    f"subject {min(held)!r} is under legal hold", hint="lift the hold first"
                )
        # One store transaction deletes every spelling's key, or none if a hold sits on any
        # of them by then (one delete per spelling let a hold placed meanwhile stop the
        # shred halfway). The tombstones commit with it, every spelling's tag (the
        # subject's own first): other processes drop the keys from them, and a later
        # process, which no longer knows a deleted legacy spelling, still finds the
        # subject shredded.
        tags = [local.tombstone_tag(s) for s in spellings]
        try:
            return local.store.delete_many(spellings, tags)  # LegalHoldError
        finally:  # also when it failed: whether a lost COMMIT deleted the keys is unknown
            for s in spellings:
                local.forget(s)

    def prepare_rekey(
        self,
        current: kf.KeyringMeta,
        *,
        threshold: int | None,
        custodians: Sequence[str] | None,
        rng: RandomSource | None,
    ) -> tuple[dict[str, Share], kf.KeyringMeta]:
        """Phase 1: new master key and shares, written as the pending file. Returns the
        shares and the pending metadata; the new master key stays here until
        :meth:`commit_rekey`."""
        self._local.catch_up()  # new shares for a file behind the store's state: refused
        m = current
        if isinstance(custodians, str | bytes):  # list() would make each character a name
            raise TypeError("custodian names must be a sequence of names, not one string")
        names = list(custodians) if custodians is not None else [c.name for c in m.custodians]
        k = threshold if threshold is not None else min(m.threshold, len(names))
        names = validate_custodians(k, names)
        rng = rng or self._rng
        master = rng.random_bytes(16)
        shares = split(master, k, len(names), rng=rng)
        meta = dataclasses.replace(
            m,
            generation=m.generation + 1,
            set_id=shares[0].set_id.hex(),
            threshold=k,
            custodians=tuple(kf.Custodian(n, s.index) for n, s in zip(names, shares, strict=True)),
        )
        with self._home.lock():
            on_disk = kf.parse(self._home.read_keyring())[0]
            if on_disk != m:
                raise KeyringError("the keyring file changed under this process; unseal again")
            secrets = self._local.secrets
            _check_sealable(secrets)
            meta = self._claim_anchor(meta)
            self._home.write_pending(kf.serialize(meta, secrets, master, rng.random_bytes(12)))
        self._keep(None, master)
        return {n: s for n, s in zip(names, shares, strict=True)}, meta

    def commit_rekey(
        self, current: kf.KeyringMeta, pending: kf.KeyringMeta | None
    ) -> kf.KeyringMeta:
        """Phase 2: the pending file (sealed under the new master key) replaces the keyring
        file; the new master key is this session's from now on. Returns the new metadata
        (the owner adopts it, then tells the fleet: ``store.note_rekey``)."""
        master = self._pending_master
        if pending is None or master is None:
            raise KeyringError("no rekey is pending in this session")
        changed = KeyringError(
            "the pending rekey changed on disk (another rekey or an abort replaced it); start again"
        )
        with self._home.lock():
            data = self._home.read_pending()
            if data is None:
                raise changed
            try:
                meta, _ = kf.open_secrets(data, master)
            except (IntegrityError, FormatError):  # another session's, under its master key
                raise changed from None
            if meta != pending or meta.generation != current.generation + 1:
                raise changed
            self._home.commit_pending()
        self._keep(master, None)
        return meta

    def abort_rekey(self) -> bool:
        """Discard a pending rekey (its shares become useless). True if one existed."""
        with self._home.lock():
            existed = self._home.discard_pending()
        self._pending_master = None
        return existed
