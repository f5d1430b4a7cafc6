"""The sealed keyring: public metadata and no keys; create one, open one, unseal it.

The dependency runs one way: :mod:`.sealed` starts an :mod:`.unseal`, and from its
values builds the :mod:`.unsealed` keyring, which owns the :mod:`.admin` of its keys.
:attr:`Keyring.meta` and :attr:`Keyring.pending` are immutable values: a commit (unseal,
rotate, retire, rekey, a reload after another process's change) replaces them whole, in
one place (:meth:`Keyring._adopt`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ..audit import AuditEntry, AuditLog
from ..errors import KeyringError, KeysplitError
from ..hazmat import hpke as hpke_helper
from ..record import MAX_PLAINTEXT_BYTES, PlaintextTooLargeError, _strided
from ..rng import RandomSource, default_rng
from ..share import Share, split
from ..store import KeyStore, check_store_url, default_store_url, open_store
from ..store.base import AuditStore
from . import file as kf
from .admin import validate_custodians
from .datakeys import audit_key_for
from .fingerprint import check_fingerprint, fingerprint
from .home import KeyringHome
from .status import KeyringStatus, status_of
from .unseal import Unsealer, UnsealOutcome
from .unsealed import UnsealedKeyring, check_writable

if TYPE_CHECKING:
    from ..proof import Verification

__all__ = ["HPKE_SUITE", "Keyring", "KeyringStatus", "Unrecorded", "hpke_seal"]

HPKE_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
"""RFC 9180 suite used to seal data to a keyring's public key (DHKEM(X25519), HKDF-SHA256,
AES-128-GCM, base mode). Kept for callers; keysplit seals and opens through the one helper,
:mod:`keysplit.hazmat.hpke` (byte-compatible)."""


@dataclass(frozen=True)
class Unrecorded:
    """A change the keyring shows done (or begun) that its audit log does not record:
    ``operation`` (an event name), ``target`` (a subject, token name, file, ``KEK vN``, a
    set or keyring id), ``text`` one line for an operator, ``intent`` the seq of the
    ``intent`` entry left without outcome (0 if none)."""

    operation: str
    target: str
    text: str
    intent: int = 0


_GAP_EVENTS = frozenset(
    {"rotate", "retire", "rekey", "rekey-recovered", "rekey-switch", "verify-start", "token-revoke"}
)
"""Event names (besides the first entry, open intents and observed KEK changes) that
:meth:`Keyring.unrecorded` and the quorum's recording of gaps read."""


def _init_recorded(entries: Sequence[AuditEntry], keyring_id: str) -> bool:
    """Whether ``entries`` begin with this keyring's ``init`` (or the ``observed`` entry a
    quorum wrote for an init killed before its own)."""
    if not entries:
        return False
    first = entries[0]
    if first.event == "init":
        return first.data.get("keyring_id") == keyring_id
    return (
        first.event == "observed"
        and first.data.get("operation") == "init"
        and first.data.get("target") == keyring_id
    )


def _kek_target(target: object) -> int | None:
    """The version of an ``observed`` rotate/retire entry's target ``KEK vN``."""
    if isinstance(target, str) and target.startswith("KEK v") and target[5:].isdigit():
        return int(target[5:])
    return None


def hpke_seal(
    public_key: bytes | Keyring,
    plaintext: bytes,
    info: bytes = b"",
    *,
    expect: str | None = None,
) -> bytes:
    """Seal ``plaintext`` to a keyring's public key; needs no quorum.

    Only :meth:`UnsealedKeyring.hpke_open` with the same ``info`` can open it. Pass the
    :class:`Keyring` and ``expect`` (its fingerprint, obtained outside the keyring
    directory) to refuse a replaced public key with :class:`FingerprintMismatch` before
    anything is sealed; the fingerprint commits to the keyring id too, so ``expect``
    needs the keyring, not raw key bytes. At most :data:`~keysplit.record.MAX_PLAINTEXT_BYTES`
    of ``plaintext`` (:class:`~keysplit.record.PlaintextTooLargeError`).
    """
    if isinstance(public_key, Keyring):
        if expect is not None:
            public_key.check_fingerprint(expect)
        public_key = public_key.public_key
    elif expect is not None:
        raise TypeError("hpke_seal(..., expect=) needs the Keyring (its id is fingerprinted)")
    if not isinstance(public_key, bytes) or len(public_key) != 32:
        raise ValueError("public_key must be the keyring's 32-byte X25519 public key")
    pk = X25519PublicKey.from_public_bytes(public_key)
    try:
        return hpke_helper.seal(pk, info, plaintext)  # byte-compatible with HPKE_SUITE
    except OverflowError:  # cryptography's length check
        raise PlaintextTooLargeError(
            f"hpke_seal takes at most {MAX_PLAINTEXT_BYTES} bytes of plaintext",
            hint="seal larger data as a stream (keysplit.encrypt_stream, `keysplit encrypt`)",
        ) from None
    except BufferError:
        raise _strided() from None


def _leftover(home: KeyringHome) -> str | None:
    """A hint for a keyring in the way that an init left half done (else None)."""
    try:
        set_id = kf.parse(home.read_keyring())[0].set_id
    except KeysplitError:
        return None
    if not home.handout_incomplete(set_id):
        return None
    return (
        f"its init stopped before all its shares were written (it never unseals): remove "
        f"{home.path} and init again"
    )


class Keyring:
    """A sealed keyring: public metadata, no keys. Unseal it with shares.

    ``store_url`` overrides the store recorded in the keyring's home (``store.json``; the
    embedded ``sqlite:keys.sqlite`` if none is recorded). ``rng`` is the randomness every
    later draw of this keyring and its unsealed sessions uses (keys, KEKs, nonces).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        store_url: str | None = None,
        rng: RandomSource | None = None,
    ):
        self.home = KeyringHome(path)
        self.path = self.home.path
        self.rng: RandomSource = rng or default_rng()
        self._meta: kf.KeyringMeta = kf.parse(self.home.read_keyring())[0]
        self._pending: kf.KeyringMeta | None = self.home.pending_meta(self._meta)
        self._store_url = check_store_url(store_url) if store_url is not None else None

    _UNSEALED_ONLY = frozenset(
        (
            "encrypt", "decrypt", "encrypt_many", "decrypt_many", "rotate", "rewrap",
            "retire", "shred", "set_legal_hold", "rekey", "hpke_open", "hpke_decrypt",
        )
    )  # fmt: skip

    if not TYPE_CHECKING:  # a type checker keeps flagging `Keyring.open(d).encrypt`

        def __getattr__(self, name: str) -> object:
            """Only for a name missing here: an :class:`UnsealedKeyring` operation asked of the
            sealed keyring says where it lives, not just that ``Keyring`` lacks it."""
            if name in Keyring._UNSEALED_ONLY:
                raise AttributeError(
                    f"a sealed Keyring has no {name!r}: it is a method of the UnsealedKeyring "
                    "that Keyring.open(DIR).unseal(shares) returns",
                    name=name,
                    obj=self,
                )
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}", name=name, obj=self
            )

    @property
    def meta(self) -> kf.KeyringMeta:
        """The keyring file's public metadata as this process last committed or read it."""
        return self._meta

    @property
    def pending(self) -> kf.KeyringMeta | None:
        """The metadata of the rekey pending for the next generation, if any."""
        return self._pending

    def _adopt(self, meta: kf.KeyringMeta, pending: kf.KeyringMeta | None) -> None:
        """Replace the metadata after a commit (the one place it changes): called by the
        unseal that opened it and by the :class:`UnsealedKeyring` that committed it."""
        if meta.keyring_id != self._meta.keyring_id:
            raise KeyringError("the keyring file now belongs to another keyring")
        self._meta, self._pending = meta, pending

    def adopt_copy(self, data: bytes, master_key: bytes) -> kf.KeyringSecrets:
        """Take the metadata of ``data``, a copy of this keyring's file sealed under
        ``master_key`` (authenticated here, as the file would be), and return its secrets.

        For a process that joins others holding this keyring unsealed after the file was
        rekeyed elsewhere (a new worker of ``keysplit serve``): their master key no longer
        opens the file, so it opens the copy they hand it. :class:`IntegrityError` if
        ``master_key`` does not open ``data``; :class:`KeyringError` if it is another
        keyring's."""
        meta, secrets = kf.open_secrets(data, master_key)
        self._adopt(meta, self.home.pending_meta(meta))
        return secrets

    def read_pending(self) -> kf.KeyringMeta | None:
        """The pending rekey's metadata, if a valid one for the next generation exists
        (a damaged or stale leftover is never used; status() reports no rekey)."""
        return self.home.pending_meta(self._meta)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        store_url: str | None = None,
        rng: RandomSource | None = None,
    ) -> Keyring:
        """Open an existing keyring directory (reads only public metadata)."""
        return cls(path, store_url=store_url, rng=rng)

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        threshold: int,
        custodians: Sequence[str],
        *,
        rng: RandomSource | None = None,
        store_url: str | None = None,
        handout: bool = False,
    ) -> tuple[Keyring, dict[str, Share]]:
        """Create a keyring in ``path`` (a new or empty directory).

        Returns the sealed keyring and one :class:`Share` per custodian name. The master key
        is generated here and never written: lose the shares and the data is gone.
        ``store_url`` chooses the key store (:func:`keysplit.store.open_store`; default the
        embedded SQLite file); it is recorded in the keyring directory (never a password).

        Order of writes: store record, store, keyring file (the commit point). A crash
        before the commit leaves a record and maybe an empty store; the next ``create``
        reuses that keyring id and store if the store is empty, and refuses if it holds keys.

        ``handout``: the caller writes the shares out (the init ceremony); the home's
        hand-out mark (:meth:`KeyringHome.mark_handout`) is written before the keyring file,
        so a process killed anywhere before the caller clears it leaves a keyring that says
        it never unseals, never one that looks whole while no share of it exists.
        """
        names = validate_custodians(threshold, custodians)
        rng = rng or default_rng()
        home = KeyringHome(path)
        home.make()
        cls.refuse_existing(home.path)
        master = rng.random_bytes(16)
        shares = split(master, threshold, len(names), rng=rng)
        x_priv = X25519PrivateKey.from_private_bytes(rng.random_bytes(32))
        pub = x_priv.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
        priv = x_priv.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption())
        keyring_id = rng.random_bytes(16).hex()
        kek = rng.random_bytes(16)
        nonce = rng.random_bytes(12)
        with home.lock():
            # again under the lock: a create that passed the check above while another
            # completed took its store record for an interrupted create's and rewrote its
            # audit anchor before the keyring file refused it (the winner then recorded nothing)
            cls.refuse_existing(home.path)
            leftover = home.store_record()
            if leftover is not None and (store_url is None or store_url == leftover.url):
                keyring_id, url = leftover.keyring_id, leftover.url  # an interrupted create
            else:
                url = check_store_url(store_url or default_store_url())
            meta = kf.KeyringMeta(
                keyring_id=keyring_id,
                generation=1,
                set_id=shares[0].set_id.hex(),
                threshold=threshold,
                custodians=tuple(
                    kf.Custodian(n, s.index) for n, s in zip(names, shares, strict=True)
                ),
                public_key=pub.hex(),
                current_kek=1,
                kek_versions=(1,),
                next_kek=2,
                audit_anchor=1,
            )
            home.record_store(url, keyring_id)
            try:
                store = open_store(url, keyring_id=keyring_id, home=home.path, create=True)
            except BaseException:  # nothing was made: the record goes back as it was
                home.restore_store_record(leftover)
                raise
            try:
                if store.count_by_version() or store.legal_holds():
                    raise KeyringError(
                        f"the key store {url} exists without a keyring file and is not an "
                        "empty leftover",
                        hint="move it away if it is not needed",
                    )
            finally:
                store.close()
            secrets = kf.KeyringSecrets(priv, {1: kek})
            # the anchor of the empty log, before the commit point: the keyring file says
            # it exists (audit_anchor), so it must never be missing once that file is there
            AuditLog(
                home.audit_path, mac_key=audit_key_for(priv, keyring_id), anchor=home.anchor_path
            ).write_anchor()
            if handout:
                home.mark_handout(meta.set_id)
                # cleared by the init ceremony after its entry: killed before, the next
                # quorum records the init the log lacks
                home.mark_init_unrecorded(meta.set_id)
            home.write_keyring(kf.serialize(meta, secrets, master, nonce), overwrite=False)
        kr = cls(home.path, rng=rng)
        return kr, {n: s for n, s in zip(names, shares, strict=True)}

    @staticmethod
    def refuse_existing(path: str | os.PathLike[str]) -> None:
        """Raise :class:`KeyringError` if a keyring file is in ``path`` (with a hint when an
        init stopped before all its shares were written: remove it and init again)."""
        home = KeyringHome(path)
        if home.has_keyring():
            raise KeyringError(f"a keyring already exists at {home.path}", hint=_leftover(home))

    @property
    def keyring_id(self) -> str:
        return self.meta.keyring_id

    @property
    def store_url(self) -> str:
        """The key store's URL: the override, else the recorded one, else the default."""
        if self._store_url is not None:
            return self._store_url
        return self.home.store_url(self.meta.keyring_id)

    @property
    def unbound_kek_versions(self) -> tuple[int, ...]:
        """KEK versions whose stored rows predate subject binding (RFC 3394 default IV).

        Empty for a keyring made today; every version of a keyring from before the binding
        (no store record). Migrate: :meth:`UnsealedKeyring.rotate` (the new version is
        bound), ``rewrap``, then ``retire`` the old versions.
        """
        rec = self.home.store_record_for(self.meta.keyring_id)
        if rec is None:
            return self.meta.kek_versions
        return tuple(v for v in self.meta.kek_versions if v in rec.default_iv_versions)

    def open_store(self, *, read_only: bool = False) -> KeyStore:
        """Open this keyring's key store (bound to its keyring id); ``read_only`` for a
        caller that only reads (a PostgreSQL role granted SELECT alone suffices then)."""
        return open_store(
            self.store_url, keyring_id=self.meta.keyring_id, home=self.path, read_only=read_only
        )

    @property
    def public_key(self) -> bytes:
        """The keyring's X25519 public key (32 bytes): seal data with :func:`hpke_seal`."""
        return bytes.fromhex(self.meta.public_key)

    @property
    def fingerprint(self) -> str:
        """``ksk1...``: commits to the public key and keyring id (:mod:`.fingerprint`).
        Print it at init, keep it outside the directory, check it before sealing."""
        return fingerprint(self.meta.keyring_id, self.public_key)

    def check_fingerprint(self, expected: str) -> None:
        """Raise :class:`FingerprintMismatch` unless ``expected`` is :attr:`fingerprint`
        (a malformed ``expected`` is a :class:`FormatError`)."""
        check_fingerprint(expected, self.meta.keyring_id, self.public_key)

    @property
    def recipient(self) -> X25519PublicKey:
        """The public key as an ``X25519PublicKey`` (what :mod:`keysplit.stream` seals to)."""
        return X25519PublicKey.from_public_bytes(self.public_key)

    def unrecorded_changes(self) -> list[str]:
        """What the keyring shows done (or begun) that its audit log does not record, one
        line each: a change whose process was killed (or failed) after it took effect and
        before its entry. See :meth:`unrecorded`; the next quorum unseal records each one
        (``observed``, or ``rekey-recovered`` for a rekey's switch)."""
        return [gap.text for gap in self.unrecorded()]

    @staticmethod
    def gap_entries(entries: list[AuditEntry]) -> list[AuditEntry]:
        """The entries of a log that :meth:`unrecorded` reads (in log order): the first,
        open intents, switches, ``rotate``/``retire`` (and ``observed`` ones),
        ``verify-start`` and ``token-revoke`` entries. ``unrecorded(gap_entries(e))`` is
        ``unrecorded(e)``, and ``gap_entries(gap_entries(a) + b)`` serves as
        ``gap_entries(a + b)``: a quorum reads only the log's new entries
        (:meth:`keysplit.audit.AuditLog.selected`). Beside an open intent, the intents and
        outcomes of its operation and target an ``observed`` entry in ``b`` can rematch
        (:func:`~keysplit.audit.events.unsettled_intents`). A first entry that is a closed
        intent keeps the entry that closed it (else it would read as open)."""
        from ..audit.events import canonical_name, intent_closer, unsettled_intents

        if not entries:
            return []
        unsettled = {id(e) for e in unsettled_intents(entries)}
        closer = -1
        if entries[0].event == "intent" and id(entries[0]) not in unsettled:
            # its own closer, as the whole log reads it (an observed entry naming a later
            # intent can hand it an outcome that first closed that one)
            by = intent_closer(entries, entries[0])
            closer = next((i for i, e in enumerate(entries) if e is by), -1)
        return [
            e
            for i, e in enumerate(entries)
            if i in (0, closer)
            or id(e) in unsettled
            or canonical_name(e.event, e.data) in _GAP_EVENTS
            or (e.event == "observed" and e.data.get("operation") in ("rotate", "retire"))
        ]

    def unrecorded(self, entries: Sequence[AuditEntry] | None = None) -> list[Unrecorded]:
        """:meth:`unrecorded_changes` as records (what the next quorum writes down).

        Compared: an ``intent`` without outcome (a shred, legal hold, token creation or
        decrypt to a stream killed between its intent and its entry); a generation awaiting
        proofs (``--verify``) without its ``verify-start`` entry; an init killed
        before its ``init`` entry (the home's ``keyring.ksk.init-unrecorded``); the file's
        KEK versions with the log's ``rotate`` and ``retire`` entries (and ``observed``
        ones), for a log that begins with this keyring's ``init`` (or an ``observed`` one:
        a log of a keyring made otherwise cannot be compared); a rekey's switch whose
        entry is owed (the home's ``keyring.ksk.unrecorded``)."""
        from ..audit.events import canonical_name, open_intents, switch_recorded

        if entries is None:
            entries = self.audit_log().entries()
        meta = self.meta
        gaps: list[Unrecorded] = []
        owed = self.home.switch_unrecorded(meta.set_id, meta.generation)
        if owed is not None and not switch_recorded(entries, owed):
            gaps.append(
                Unrecorded(
                    "rekey",
                    meta.set_id,
                    f"the rekey to share set {meta.set_id} (keyring generation "
                    f"{owed}) took effect without its entry: the next unseal with "
                    "those shares records it",
                )
            )
        for e in open_intents(entries):
            op, target = str(e.data["operation"]), str(e.data["target"])
            gaps.append(
                Unrecorded(
                    op,
                    target,
                    f"{op} of {target!r} was begun (intent, entry {e.seq}) and has no outcome "
                    "entry: killed before it finished? the next quorum records what it finds",
                    intent=e.seq,
                )
            )
        inited = _init_recorded(entries, meta.keyring_id)
        if not inited and self.home.init_unrecorded(meta.set_id):
            gaps.append(
                Unrecorded(
                    "init",
                    meta.keyring_id,
                    f"the keyring {meta.keyring_id} was made (init) without its init entry: "
                    "the next quorum records it",
                )
            )
            inited = not entries  # an empty log is this keyring's, from its init on
        gaps += self._verify_unstarted(entries)  # (after the init: its proof requirement)
        if not inited:
            return gaps
        made, retired = {1}, set()
        for e in entries:
            name = canonical_name(e.event, e.data)
            v = e.data.get("kek_version")
            if name == "observed" and e.data.get("operation") in ("rotate", "retire"):
                name, v = str(e.data["operation"]), _kek_target(e.data.get("target"))
            if name == "rotate" and isinstance(v, int):
                made.add(v)
            elif name == "retire" and isinstance(v, int):
                retired.add(v)
        for v in meta.kek_versions:
            if v not in made:
                gaps.append(
                    Unrecorded(
                        "rotate",
                        f"KEK v{v}",
                        f"KEK v{v} is in the keyring file but no rotate entry records it",
                    )
                )
        for v in sorted(made - set(meta.kek_versions) - retired):
            gaps.append(
                Unrecorded(
                    "retire",
                    f"KEK v{v}",
                    f"KEK v{v} is retired from the keyring file but no retire entry records it",
                )
            )
        return gaps

    def _verify_unstarted(self, entries: Sequence[AuditEntry]) -> list[Unrecorded]:
        """The generation awaiting proofs (``--verify``) whose ``verify-start`` the log
        lacks: an ``init --verify`` or ``rekey --verify`` killed after its shares were out
        and before its entries (the ``init`` or ``rekey-pending`` batch). One whose shares
        are still being handed out is no gap (its ceremony records it, or it never
        unseals)."""
        try:
            v = self.verification()
        except (KeysplitError, OSError, ValueError):
            return []  # an unreadable state file: the unseal gate names it
        if v is None:
            return []
        set_id = v.state.set_id.hex()
        if self.home.handout_incomplete(set_id) or any(
            e.event == "verify-start" and e.data.get("set_id") == set_id for e in entries
        ):
            return []
        what = ("an init", "init") if v.kind == "init" else ("a rekey", "rekey-pending")
        return [
            Unrecorded(
                "verify-start",
                set_id,
                f"generation {v.generation} (share set {set_id}, {what[0]} --verify) awaits "
                f"proofs of possession and no verify-start entry records it (nor its {what[1]} "
                "entry: killed before them?): the next quorum records them",
            )
        ]

    def audit_log(self) -> AuditLog:
        """The keyring's ceremony log, without its MAC key: read it and check its hash chain.

        Appending to a MAC-protected log needs :meth:`UnsealedKeyring.audit_log`. Where the
        store keeps the chain (PostgreSQL) the log reads it there (the store stays open for
        the log's life).
        """
        store = None
        if not self.store_url.startswith("sqlite:"):
            opened = self.open_store(read_only=True)  # no MAC key: this log only reads
            if isinstance(opened, AuditStore):
                store = opened
            else:
                opened.close()
        return AuditLog(
            self.home.audit_path,
            store=store,
            anchor=self.home.anchor_path,
            anchor_required=bool(self.meta.audit_anchor),
        )

    def custodian_of(self, share: Share) -> str | None:
        """The custodian name a share belongs to (by set id and index), if any."""
        for meta in (self.meta, self.pending):
            if meta is not None and share.set_id.hex() == meta.set_id:
                for c in meta.custodians:
                    if c.index == share.index:
                        return c.name
        return None

    def unsealer(self, *, complete_missing: Sequence[str] | None = None) -> Unsealer:
        """Start an incremental unseal (``complete_missing``: see :class:`Unsealer`)."""
        return Unsealer(self, complete_missing=complete_missing)

    def verification(self) -> Verification | None:
        """The share generation awaiting proofs of possession (``--verify``), if any."""
        return self.home.verification(self.meta, self.pending)

    def unseal(
        self,
        shares: Sequence[Share] | UnsealOutcome,
        *,
        store: KeyStore | None = None,
        rng: RandomSource | None = None,
    ) -> UnsealedKeyring:
        """Unseal from at least ``threshold`` shares, through the :class:`Unsealer`'s rules,
        or open what an :meth:`Unsealer.finish` of this keyring returned.

        ``store`` replaces the keyring's own store (it must belong to this keyring and be
        open for writing: one opened ``read_only`` is refused here, before any share is
        looked at); ``rng`` the keyring's randomness for this session.
        """
        if store is not None:
            check_writable(store)
        if isinstance(shares, UnsealOutcome):
            outcome = shares
        elif isinstance(shares, Mapping):  # create()'s dict: iterating it gives the names
            raise TypeError(
                "unseal takes a sequence of shares, not a mapping of custodian to share: "
                'give a quorum of them, e.g. [shares["ana"], shares["ben"]]'
            )
        else:
            u = self.unsealer()
            for s in shares:
                u.add(s)
            outcome = u.finish()
        if outcome.meta.keyring_id != self.meta.keyring_id:
            raise KeyringError("the unseal outcome belongs to another keyring")
        outcome = self._current(outcome)
        committed = outcome.switched in ("recovered", "verified")  # here, by these shares
        self._adopt(outcome.meta, None if committed else self.pending)
        opened = UnsealedKeyring(self, outcome.master_key, outcome.secrets, store=store, rng=rng)
        # a rekey committed here, or one whose process was killed after its switch (before
        # or after the store counted it: the store counts each share set once), or one the
        # store failed to count (its count owed): count it and tell the fleet (epoch)
        switched = committed or outcome.switched == "unrecorded"
        if switched or self.home.uncounted():
            opened._note_rekey(current=switched)
        return opened

    def _current(self, outcome: UnsealOutcome) -> UnsealOutcome:
        """``outcome`` as the keyring file is now. One kept from before a rekey (its master
        key no longer opens the file) is refused, changing nothing: it opened a session under
        the dead master key and put the old metadata back into this object, whose unsealer
        then refused the new shares. One from before a rotate or retire (the same master
        key) takes the file's metadata and KEKs."""
        data = self.home.read_keyring()
        set_id = kf.parse(data)[0].set_id
        if set_id != outcome.meta.set_id:
            raise KeyringError(
                f"the keyring was rekeyed since these shares were combined (they are of "
                f"share set {outcome.meta.set_id}, the keyring of {set_id})",
                hint="unseal again with the current shares",
            )
        meta, secrets = kf.open_secrets(data, outcome.master_key)
        if meta == outcome.meta:
            return outcome
        return dataclasses.replace(outcome, meta=meta, secrets=secrets)

    def status(self) -> KeyringStatus:
        """Public state of the keyring and counts from its store (no quorum needed)."""
        store = self.open_store(read_only=True)
        try:
            return status_of(self, store, sealed=True)
        finally:
            store.close()

    def __repr__(self) -> str:
        return f"Keyring({str(self.path)!r}, id={self.meta.keyring_id}, sealed)"
