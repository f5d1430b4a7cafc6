"""Key administration of an unsealed keyring: rotate, retire, shred, hold, two-phase rekey.

Every operation here needs the keyring held in this process (master key and KEKs, a
:class:`~keysplit.keyring.datakeys.LocalDataKeys`); a keyring opened over a remote
:class:`~keysplit.keyring.datakeys.DataKeys` refuses them. Writers serialize on the home's
lock; the keyring file is re-read under it and must be the one this session opened, so two
processes never overwrite each other's change. Ordering keeps crashes harmless: a new KEK
is durable in the keyring file before any data key uses it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import KeyringError, LegalHoldError
from ..rng import RandomSource
from ..share import Share, split
from ..store.base import KekInUseError
from . import file as kf
from .datakeys import LocalDataKeys
from .sealed import replace_meta, validate_custodians

if TYPE_CHECKING:
    from .unsealed import UnsealedKeyring

__all__ = [
    "abort_rekey",
    "commit_rekey",
    "prepare_rekey",
    "retire",
    "rotate",
    "set_legal_hold",
    "shred",
]


def _write_keyring(
    ku: UnsealedKeyring, local: LocalDataKeys, meta: kf.KeyringMeta, secrets: kf.KeyringSecrets
) -> None:
    """Replace the keyring file atomically (caller holds the home's lock)."""
    kr = ku.keyring
    if (kr.pending is not None or kr.home.has_pending()) and kr.read_pending() is not None:
        raise KeyringError(
            "a rekey is pending",
            hint="finish it by unsealing with its new shares, or discard it "
            "(keysplit rekey --abort; UnsealedKeyring.abort_rekey())",
        )
    on_disk = kf.parse(kr.home.read_keyring())[0]
    if on_disk != kr.meta:
        raise KeyringError("the keyring file changed under this process; unseal again")
    kr.home.write_keyring(kf.serialize(meta, secrets, ku.master_key, ku.rng.random_bytes(12)))
    kr.meta = meta
    local.set_secrets(secrets, meta.current_kek)


def rotate(ku: UnsealedKeyring) -> int:
    """New KEK version, current from now on; durable before anything uses it."""
    local = ku.local_data_keys()
    kr = ku.keyring
    with kr.home.lock():
        m = kr.meta
        v = m.next_kek
        if kr.home.store_record_for(m.keyring_id) is None:
            # A keyring from before subject binding: its versions so far stay unbound
            # (recorded before the new, bound, version exists).
            kr.home.record_store(kr.store_url, m.keyring_id, m.kek_versions)
        keks = dict(local.secrets.keks)
        keks[v] = ku.rng.random_bytes(16)
        meta = replace_meta(
            m,
            generation=m.generation + 1,
            current_kek=v,
            kek_versions=tuple(sorted(keks)),
            next_kek=v + 1,
        )
        _write_keyring(ku, local, meta, kf.KeyringSecrets(local.secrets.x25519_private, keks))
        # durable in the file first; from this commit on every process writes under v
        local.store.set_current_kek(v)
    local.member.renew()  # report the new current KEK in this process's lease now
    return v


def retire(ku: UnsealedKeyring, version: int) -> None:
    """Delete KEK ``version``; refused while it is current, any data key uses it, or a live
    process (lease) still writes under it."""
    local = ku.local_data_keys()
    kr = ku.keyring
    m = kr.meta
    if version == m.current_kek:
        raise KeyringError(f"KEK version {version} is current and cannot be retired")
    if version not in m.kek_versions:
        raise KeyringError(f"KEK version {version} does not exist (or is already retired)")
    with kr.home.lock():
        # one store transaction: no data key and no live process's current KEK uses the
        # version, and from its commit on no write may use it (keysplit.store.base)
        _retire_in_store(local, version)
        keks = {v: k for v, k in local.secrets.keks.items() if v != version}
        meta = replace_meta(kr.meta, generation=m.generation + 1, kek_versions=tuple(sorted(keks)))
        _write_keyring(ku, local, meta, kf.KeyringSecrets(local.secrets.x25519_private, keks))


def _retire_in_store(local: LocalDataKeys, version: int) -> None:
    """Retire in the store; while only live holders still write under the version, give
    them a few poll intervals to adopt the current one (they do so on their own)."""
    deadline = time.monotonic() + 3 * local.member.poll + 2.0
    while True:
        try:
            local.store.retire_kek(version)
            return
        except KekInUseError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(min(0.05, local.member.poll))


def set_legal_hold(ku: UnsealedKeyring, subject: str, hold: bool) -> None:
    """Place (True) or lift (False) a legal hold: a held subject cannot be shredded."""
    local = ku.local_data_keys()
    spellings = local.stored_spellings(subject)
    for s in spellings:  # every spelling a key may be stored under (keysplit.names)
        local.store.set_legal_hold(s, bool(hold))


def shred(ku: UnsealedKeyring, subject: str) -> bool:
    """Destroy the data key of every spelling of ``subject`` (:mod:`keysplit.names`).

    A hold on any spelling refuses the whole shred before anything is deleted; the store
    still checks each delete atomically.
    """
    local = ku.local_data_keys()
    spellings = local.stored_spellings(subject)
    if len(spellings) > 1:
        held = set(spellings).intersection(local.store.legal_holds())
        if held:
            raise LegalHoldError(
                f"subject {min(held)!r} is under legal hold", hint="lift the hold first"
            )
    existed = False
    for s in spellings:
        # the tombstone commits with the delete; other processes drop the key from it
        existed = local.store.delete(s, local.tombstone_tag(s)) or existed  # LegalHoldError
        local.forget(s)
    return existed


def prepare_rekey(
    ku: UnsealedKeyring,
    *,
    threshold: int | None,
    custodians: Sequence[str] | None,
    rng: RandomSource | None,
) -> tuple[dict[str, Share], bytes]:
    """Phase 1: new master key and shares, written as the pending file. Returns the shares
    and the new master key (kept by the session until :func:`commit_rekey`)."""
    local = ku.local_data_keys()
    kr = ku.keyring
    m = kr.meta
    names = list(custodians) if custodians is not None else [c.name for c in m.custodians]
    k = threshold if threshold is not None else min(m.threshold, len(names))
    names = validate_custodians(k, names)
    rng = rng or ku.rng
    master = rng.random_bytes(16)
    shares = split(master, k, len(names), rng=rng)
    meta = replace_meta(
        m,
        generation=m.generation + 1,
        set_id=shares[0].set_id.hex(),
        threshold=k,
        custodians=tuple(kf.Custodian(n, s.index) for n, s in zip(names, shares, strict=True)),
    )
    with kr.home.lock():
        on_disk = kf.parse(kr.home.read_keyring())[0]
        if on_disk != m:
            raise KeyringError("the keyring file changed under this process; unseal again")
        kr.home.write_pending(kf.serialize(meta, local.secrets, master, rng.random_bytes(12)))
    kr.pending = meta
    return {n: s for n, s in zip(names, shares, strict=True)}, master


def commit_rekey(ku: UnsealedKeyring, master: bytes) -> kf.KeyringMeta:
    """Phase 2: the pending file (sealed under ``master``) replaces the keyring file."""
    kr = ku.keyring
    pend = kr.pending
    if pend is None:
        raise KeyringError("no rekey is pending in this session")
    with kr.home.lock():
        data = kr.home.read_pending()
        if data is None:
            raise KeyringError("the pending rekey changed on disk; start again")
        meta, _ = kf.open_secrets(data, master)
        if meta != pend or meta.generation != kr.meta.generation + 1:
            raise KeyringError("the pending rekey changed on disk; start again")
        kr.home.commit_pending()
    kr.meta, kr.pending = meta, None
    ku.local_data_keys().store.note_rekey()
    return meta


def abort_rekey(ku: UnsealedKeyring) -> bool:
    """Discard a pending rekey (its shares become useless). True if one existed."""
    ku.local_data_keys()
    kr = ku.keyring
    with kr.home.lock():
        existed = kr.home.discard_pending()
    kr.pending = None
    return existed
