"""The sealed keyring a storage backend imports: unseal with k of n shares, then encrypt.

A keyring lives in a home (:mod:`.home`; a directory today: ``keyring.ksk``, the pending
rekey file, the writer lock, the store record, ``audit.log``) and keeps its wrapped data
keys in a key store chosen by URL (:func:`keysplit.store.open_store`; the embedded
``sqlite:keys.sqlite`` by default).

The master key exists only in memory: :meth:`Keyring.create` returns the shares, and
:class:`Unsealer` / :meth:`Keyring.unseal` rebuild it from a quorum. Every change is atomic
and durable: the keyring file is replaced by temp+fsync+rename (with a ``generation``
counter), the store commits in transactions, and the ordering of writes (KEK durable before
any data key uses it; keys durable before they are dropped) means a crash at any point
leaves a keyring that unseals and a store whose records all decrypt.

Rekey is two-phase so new shares are never lost: :meth:`UnsealedKeyring.prepare_rekey`
writes ``keyring.pending`` (generation + 1, sealed under a new master key) and returns the
new shares; :meth:`UnsealedKeyring.commit_rekey` atomically renames it over the keyring
file, after which old shares are useless. Until then the old shares still unseal; if the
process dies in between, unsealing with the *new* shares completes the commit.

Modules: :mod:`.file` (the sealed file format), :mod:`.home` (where it lives),
:mod:`.sealed` (:class:`Keyring`), :mod:`.unseal` (:class:`Unsealer`), :mod:`.unsealed`
(:class:`UnsealedKeyring`), :mod:`.records` (:class:`Records`, the one record engine
over :class:`DataKeys`), :mod:`.datakeys` (:class:`DataKeys`, the one key seam;
:class:`LocalDataKeys`, :class:`KekSet`), :mod:`.admin` (:class:`~.admin.KeyAdmin`:
rotate, retire, shred, hold, rekey), :mod:`.status` (:class:`KeyringStatus`),
:mod:`.fleet` (leases, the key cache, tombstones), :mod:`.rewrap` (the bulk rewrap
loop), :mod:`.fingerprint` (the trust anchor for sealing without a quorum). Imports run
one way, sealed -> unseal -> unsealed -> admin; the keyring's metadata is an immutable
value that each commit replaces.

Events: the keyring reports nothing; :mod:`keysplit.ceremony` writes the audit entries
(one vocabulary, :mod:`keysplit.audit.events`).
"""

from __future__ import annotations

from .datakeys import DataKeys, KekSet, KeyringSecrets, LocalDataKeys
from .fingerprint import FingerprintMismatch, check_fingerprint, fingerprint
from .home import AUDIT_FILE, KEYRING_FILE, LOCK_FILE, PENDING_FILE, STORE_FILE, KeyringHome
from .records import Records
from .rewrap import RewrapResult, rewrap_store
from .sealed import HPKE_SUITE, Keyring, hpke_seal
from .status import KeyringStatus
from .unseal import Unsealer, UnsealOutcome, UnsealProgress
from .unsealed import UnsealedKeyring

__all__ = [
    "AUDIT_FILE",
    "HPKE_SUITE",
    "KEYRING_FILE",
    "LOCK_FILE",
    "PENDING_FILE",
    "STORE_FILE",
    "DataKeys",
    "FingerprintMismatch",
    "KekSet",
    "Keyring",
    "KeyringHome",
    "KeyringSecrets",
    "KeyringStatus",
    "LocalDataKeys",
    "Records",
    "RewrapResult",
    "UnsealOutcome",
    "UnsealProgress",
    "UnsealedKeyring",
    "Unsealer",
    "check_fingerprint",
    "fingerprint",
    "hpke_seal",
    "rewrap_store",
]
