"""The sealed keyring a storage backend imports: unseal with k of n shares, then encrypt.

A keyring is a directory::

    keyring.ksk       sealed keyring file (metadata in clear, KEKs + X25519 key sealed
                      under the master key; docs/format/keyring.md)
    keyring.pending   only between rekey prepare and commit (or after a crash there)
    keys.sqlite       the key store: per-subject data keys wrapped under a KEK version
    audit.log         the ceremony log (keysplit.audit), MACed with ``audit_key()``
    .lock             advisory lock serializing writers

The master key exists only in memory: :meth:`Keyring.create` returns the shares, and
:class:`Unsealer` / :meth:`Keyring.unseal` rebuild it from a quorum. Every change to the
directory is atomic and durable: the keyring file is replaced by temp+fsync+rename (with a
``generation`` counter), the store uses SQLite transactions, and the ordering of writes
(KEK durable before any data key uses it; keys durable before they are dropped) means a
crash at any point leaves a keyring that unseals and a store whose records all decrypt.

Rekey is two-phase so new shares are never lost: :meth:`UnsealedKeyring.prepare_rekey`
writes ``keyring.pending`` (generation + 1, sealed under a new master key) and returns the
new shares; :meth:`UnsealedKeyring.commit_rekey` atomically renames it over the keyring
file, after which old shares are useless. Until then the old shares still unseal; if the
process dies in between, unsealing with the *new* shares completes the commit.

Events: every public operation reports ``on_event(name, details)`` with secret-free
details (names, counts, versions, ids), the seam for the audit log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import _keyring_file as kf
from . import envelope, keywrap
from ._fileio import atomic_write, fsync_dir
from .audit import AuditLog
from .custodian import check_custodian_name
from .envelope import DataKey
from .errors import (
    DuplicateShareError,
    FormatError,
    InsufficientSharesError,
    IntegrityError,
    KeyringError,
    MixedSharesError,
)
from .rng import RandomSource, default_rng
from .share import Share, combine, split
from .store import KeyStore, SQLiteKeyStore, WrappedKey

__all__ = [
    "HPKE_SUITE",
    "Keyring",
    "KeyringStatus",
    "RewrapResult",
    "UnsealProgress",
    "UnsealedKeyring",
    "Unsealer",
    "hpke_seal",
]

KEYRING_FILE = "keyring.ksk"
PENDING_FILE = "keyring.pending"
STORE_FILE = "keys.sqlite"
LOCK_FILE = ".lock"
AUDIT_FILE = "audit.log"
_AUDIT_KEY_INFO = b"keysplit keyring audit mac key v1\x00"

HPKE_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
"""RFC 9180 suite used to seal data to a keyring's public key (DHKEM(X25519), HKDF-SHA256,
AES-128-GCM, base mode)."""

EventHook = Callable[[str, Mapping[str, Any]], None]
Progress = Callable[[int, int], None]


def hpke_seal(public_key: bytes, plaintext: bytes, info: bytes = b"") -> bytes:
    """Seal ``plaintext`` to a keyring's public key; needs no quorum.

    Only :meth:`UnsealedKeyring.hpke_open` with the same ``info`` can open it.
    """
    if not isinstance(public_key, bytes) or len(public_key) != 32:
        raise ValueError("public_key must be the keyring's 32-byte X25519 public key")
    pk = X25519PublicKey.from_public_bytes(public_key)
    return HPKE_SUITE.encrypt(plaintext, pk, info)


def _validate_custodians(threshold: int, custodians: Sequence[str]) -> list[str]:
    if isinstance(custodians, str):
        raise TypeError("custodians must be a sequence of names, not one string")
    names = list(custodians)
    for n in names:
        check_custodian_name(n)
    if len(set(names)) != len(names):
        raise ValueError("custodian names must be unique")
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise TypeError("threshold must be an int")
    if not 2 <= threshold <= len(names):
        raise ValueError("threshold must be between 2 and the number of custodians")
    if len(names) > 255:
        raise ValueError("at most 255 custodians")
    return names


@dataclass(frozen=True)
class UnsealProgress:
    """How far an unseal has got: ``have`` of ``need`` shares."""

    have: int
    need: int
    custodian: str | None = None

    @property
    def complete(self) -> bool:
        return self.have >= self.need


@dataclass(frozen=True)
class RewrapResult:
    """What a rewrap did: keys moved to ``kek_version``, and how many remain stale.

    ``corrupt`` names subjects whose stored wrapped key failed authentication: they were
    left untouched (their records cannot be decrypted either) and count in ``remaining``.
    """

    rewrapped: int
    kek_version: int
    remaining: int
    corrupt: tuple[str, ...] = ()


@dataclass(frozen=True)
class KeyringStatus:
    """Secret-free description of a keyring (safe to print or log)."""

    path: str
    keyring_id: str
    generation: int
    set_id: str
    threshold: int
    custodians: tuple[tuple[str, int], ...]
    public_key: str
    current_kek: int
    kek_versions: tuple[int, ...]
    keys_by_version: dict[int, int]
    legal_holds: int
    pending_rekey: bool
    sealed: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "keyring_id": self.keyring_id,
            "generation": self.generation,
            "set_id": self.set_id,
            "threshold": self.threshold,
            "custodians": [{"name": n, "index": i} for n, i in self.custodians],
            "public_key": self.public_key,
            "current_kek": self.current_kek,
            "kek_versions": list(self.kek_versions),
            "keys_by_version": {str(k): v for k, v in sorted(self.keys_by_version.items())},
            "data_keys": sum(self.keys_by_version.values()),
            "legal_holds": self.legal_holds,
            "pending_rekey": self.pending_rekey,
            "sealed": self.sealed,
        }


@contextlib.contextmanager
def _dir_lock(path: Path) -> Iterator[None]:
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _remove_leftover_store(p: Path) -> None:
    """A store without a keyring file is what a crash during :meth:`Keyring.create` leaves
    (the keyring file is written last, as the commit point). Remove it if it is empty;
    refuse if it holds keys (then it is not a leftover but someone's data)."""
    store_path = p / STORE_FILE
    if not store_path.exists():
        return
    try:
        db = sqlite3.connect(store_path)
        try:
            n = db.execute("SELECT COUNT(*) FROM data_keys").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        n = -1
    if n != 0:
        raise KeyringError(
            f"{store_path} exists without a keyring file and is not an empty leftover",
            hint="move it away if it is not needed",
        )
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(store_path) + suffix)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyringError(f"no keyring at {path.parent} ({path.name} missing)") from None


class Keyring:
    """A sealed keyring directory: public metadata, no keys. Unseal it with shares."""

    def __init__(self, path: str | os.PathLike[str], *, on_event: EventHook | None = None):
        self.path = Path(path)
        self._on_event = on_event
        self.meta, _, _, _ = kf.parse(_read(self.path / KEYRING_FILE))
        self.pending: kf.KeyringMeta | None = self._read_pending()

    def _read_pending(self) -> kf.KeyringMeta | None:
        try:
            data = (self.path / PENDING_FILE).read_bytes()
        except FileNotFoundError:
            return None
        try:
            meta, _, _, _ = kf.parse(data)
        except FormatError:
            return None  # never blocks the current keyring; status() reports no rekey
        if meta.keyring_id != self.meta.keyring_id or meta.generation != self.meta.generation + 1:
            return None  # stale leftover: never used, removed by the next rekey
        return meta

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, on_event: EventHook | None = None) -> Keyring:
        """Open an existing keyring directory (reads only public metadata)."""
        return cls(path, on_event=on_event)

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        threshold: int,
        custodians: Sequence[str],
        *,
        rng: RandomSource | None = None,
        on_event: EventHook | None = None,
    ) -> tuple[Keyring, dict[str, Share]]:
        """Create a keyring in ``path`` (a new or empty directory).

        Returns the sealed keyring and one :class:`Share` per custodian name. The master key
        is generated here and never written: lose the shares and the data is gone.
        """
        names = _validate_custodians(threshold, custodians)
        rng = rng or default_rng()
        p = Path(path)
        p.mkdir(mode=0o700, parents=True, exist_ok=True)
        if (p / KEYRING_FILE).exists():
            raise KeyringError(f"a keyring already exists at {p}")
        _remove_leftover_store(p)
        master = rng.random_bytes(16)
        shares = split(master, threshold, len(names), rng=rng)
        x_priv = X25519PrivateKey.from_private_bytes(rng.random_bytes(32))
        pub = x_priv.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
        priv = x_priv.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption())
        meta = kf.KeyringMeta(
            keyring_id=rng.random_bytes(16).hex(),
            generation=1,
            set_id=shares[0].set_id.hex(),
            threshold=threshold,
            custodians=tuple(kf.Custodian(n, s.index) for n, s in zip(names, shares, strict=True)),
            public_key=pub.hex(),
            current_kek=1,
            kek_versions=(1,),
            next_kek=2,
        )
        secrets = kf.KeyringSecrets(priv, {1: rng.random_bytes(16)})
        with _dir_lock(p):
            store = SQLiteKeyStore(p / STORE_FILE, meta.keyring_id, create=True)
            store.close()
            atomic_write(
                p / KEYRING_FILE,
                kf.serialize(meta, secrets, master, rng.random_bytes(12)),
                overwrite=False,
            )
        kr = cls(p, on_event=on_event)
        kr._emit("create", threshold=threshold, custodians=names, keyring_id=meta.keyring_id)
        return kr, {n: s for n, s in zip(names, shares, strict=True)}

    def _emit(self, name: str, **details: Any) -> None:
        if self._on_event is not None:
            self._on_event(name, details)

    @property
    def keyring_id(self) -> str:
        return self.meta.keyring_id

    @property
    def public_key(self) -> bytes:
        """The keyring's X25519 public key (32 bytes): seal data with :func:`hpke_seal`."""
        return bytes.fromhex(self.meta.public_key)

    @property
    def recipient(self) -> X25519PublicKey:
        """The public key as an ``X25519PublicKey`` (what :mod:`keysplit.stream` seals to)."""
        return X25519PublicKey.from_public_bytes(self.public_key)

    def audit_log(self) -> AuditLog:
        """The keyring's ceremony log, without its MAC key: read it and check its hash chain.

        Appending to a MAC-protected log needs :meth:`UnsealedKeyring.audit_log`.
        """
        return AuditLog(self.path / AUDIT_FILE)

    def custodian_of(self, share: Share) -> str | None:
        """The custodian name a share belongs to (by set id and index), if any."""
        for meta in (self.meta, self.pending):
            if meta is not None and share.set_id.hex() == meta.set_id:
                for c in meta.custodians:
                    if c.index == share.index:
                        return c.name
        return None

    def unsealer(self) -> Unsealer:
        """Start an incremental unseal."""
        return Unsealer(self)

    def unseal(self, shares: Sequence[Share], *, store: KeyStore | None = None) -> UnsealedKeyring:
        """Unseal in one call from at least ``threshold`` shares."""
        u = self.unsealer()
        for s in shares:
            u.add(s)
        return u.finish(store=store)

    def status(self) -> KeyringStatus:
        """Public state of the keyring and counts from its store (no quorum needed)."""
        store = SQLiteKeyStore(self.path / STORE_FILE, self.meta.keyring_id)
        try:
            return _status(self, store, sealed=True)
        finally:
            store.close()

    def __repr__(self) -> str:
        return f"Keyring({str(self.path)!r}, id={self.meta.keyring_id}, sealed)"


def _status(kr: Keyring, store: KeyStore, *, sealed: bool) -> KeyringStatus:
    m = kr.meta
    return KeyringStatus(
        path=str(kr.path),
        keyring_id=m.keyring_id,
        generation=m.generation,
        set_id=m.set_id,
        threshold=m.threshold,
        custodians=tuple((c.name, c.index) for c in m.custodians),
        public_key=m.public_key,
        current_kek=m.current_kek,
        kek_versions=m.kek_versions,
        keys_by_version=store.count_by_version(),
        legal_holds=len(store.legal_holds()),
        pending_rekey=kr.pending is not None,
        sealed=sealed,
    )


class Unsealer:
    """Collects shares one at a time and reports progress.

    Each :meth:`add` checks the share at once: a share of another keyring or an older share
    set, a duplicate, or one disagreeing with the shares so far is refused with an error
    naming it. When enough shares are in, :meth:`finish` recovers the master key (verified
    by the share recovery tag, then by the keyring file's authentication).
    """

    def __init__(self, keyring: Keyring) -> None:
        self._kr = keyring
        self._shares: list[Share] = []
        self._target: kf.KeyringMeta | None = None

    def _name(self, share: Share) -> str:
        who = self._kr.custodian_of(share)
        return f"share {share.index}" + (f" ({who})" if who else "")

    def add(self, share: Share) -> UnsealProgress:
        if not isinstance(share, Share):
            raise TypeError("add() takes a Share (use Share.parse or Share.from_bytes)")
        sid = share.set_id.hex()
        candidates = [m for m in (self._kr.meta, self._kr.pending) if m is not None]
        match = next((m for m in candidates if m.set_id == sid), None)
        if match is None:
            raise MixedSharesError(
                f"share {share.index} (set {sid}) does not belong to this keyring "
                f"(current share set {self._kr.meta.set_id})",
                index=share.index,
                hint="it may be from another keyring or from before a rekey",
            )
        if self._target is not None and match is not self._target:
            raise MixedSharesError(
                f"{self._name(share)} is from the new share set of an unfinished rekey, "
                "the others from the current one",
                index=share.index,
            )
        if share.threshold != match.threshold or share.index not in {
            c.index for c in match.custodians
        }:
            raise MixedSharesError(
                f"{self._name(share)} does not match this keyring's share set parameters",
                index=share.index,
            )
        for s in self._shares:
            if s.index == share.index:
                raise DuplicateShareError(f"{self._name(share)} was already added", index=s.index)
        self._target = match
        self._shares.append(share)
        return UnsealProgress(len(self._shares), match.threshold, self._kr.custodian_of(share))

    def discard(self, index: int) -> UnsealProgress:
        """Drop the share with this index (e.g. the one a :class:`RecoveryError` named)."""
        self._shares = [s for s in self._shares if s.index != index]
        if not self._shares:
            self._target = None
        return self.progress

    @property
    def progress(self) -> UnsealProgress:
        need = (self._target or self._kr.meta).threshold
        return UnsealProgress(len(self._shares), need)

    def finish(self, *, store: KeyStore | None = None) -> UnsealedKeyring:
        """Recover the master key and open the keyring (needs ``threshold`` shares)."""
        target = self._target or self._kr.meta
        if len(self._shares) < target.threshold:
            raise InsufficientSharesError(
                f"need {target.threshold} shares, got {len(self._shares)}"
            )
        master = combine(self._shares)
        kr = self._kr
        with _dir_lock(kr.path):
            if target is kr.pending:
                data = (kr.path / PENDING_FILE).read_bytes()
                meta, secrets = kf.open_secrets(data, master)
                current = kf.parse(_read(kr.path / KEYRING_FILE))[0]
                if (
                    meta.keyring_id != current.keyring_id
                    or meta.generation != current.generation + 1
                ):
                    raise KeyringError(
                        "the pending rekey no longer matches the keyring file; "
                        "unseal with the current shares and run the rekey again"
                    )
                # The new shares prove the pending rekey was handed out: complete it.
                os.replace(kr.path / PENDING_FILE, kr.path / KEYRING_FILE)
                fsync_dir(kr.path)
                kr.meta, kr.pending = meta, None
                kr._emit("rekey_committed", generation=meta.generation, recovered=True)
            else:
                meta, secrets = kf.open_secrets(_read(kr.path / KEYRING_FILE), master)
                if meta != kr.meta:
                    raise KeyringError("the keyring changed while unsealing; try again")
        self._shares.clear()
        opened = UnsealedKeyring(kr, master, secrets, store=store)
        kr._emit("unseal", generation=meta.generation, set_id=meta.set_id)
        return opened

    def __repr__(self) -> str:
        p = self.progress
        return f"Unsealer(have={p.have}, need={p.need})"


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
    ) -> None:
        self._kr = keyring
        self._master = master
        self._secrets = secrets
        if store is None:
            store = SQLiteKeyStore(keyring.path / STORE_FILE, keyring.meta.keyring_id)
        elif store.keyring_id != keyring.meta.keyring_id:
            raise KeyringError("the key store belongs to another keyring")
        self._store: KeyStore | None = store
        self._keys: dict[str, DataKey] = {}
        self._pending_master: bytes | None = None

    # -- plumbing -------------------------------------------------------------------------

    @property
    def store(self) -> KeyStore:
        if self._store is None:
            raise KeyringError("the keyring was closed")
        return self._store

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
        """Forget the keys and close the store."""
        self._keys.clear()
        self._secrets = kf.KeyringSecrets(b"", {})
        self._master = b""
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> UnsealedKeyring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"UnsealedKeyring({str(self._kr.path)!r}, id={self._kr.keyring_id}, <redacted>)"

    def _kek(self, version: int) -> bytes:
        try:
            return self._secrets.keks[version]
        except KeyError:
            raise KeyringError(
                f"a data key is wrapped under KEK version {version}, which this keyring "
                "does not have (retired or never existed)"
            ) from None

    def audit_key(self) -> bytes:
        """32-byte HMAC key for the ceremony log (:class:`~keysplit.audit.AuditLog`).

        Derived with HKDF-SHA256 from the keyring's X25519 private key, which rekey and
        rotate keep, so one key covers the whole life of the log; the keyring id is bound
        in, so logs of two keyrings never verify under each other's key.
        """
        if not self._secrets.x25519_private:
            raise KeyringError("the keyring was closed")
        return HKDF(
            hashes.SHA256(),
            32,
            salt=None,
            info=_AUDIT_KEY_INFO + bytes.fromhex(self._kr.keyring_id),
        ).derive(self._secrets.x25519_private)

    def audit_log(self) -> AuditLog:
        """The keyring's ceremony log with its MAC key: appends are MACed, verify checks MACs."""
        return AuditLog(self._kr.path / AUDIT_FILE, mac_key=self.audit_key())

    def _write_keyring(self, meta: kf.KeyringMeta, secrets: kf.KeyringSecrets) -> None:
        """Replace the keyring file atomically (caller holds the directory lock)."""
        if self._kr.pending is not None or (self._kr.path / PENDING_FILE).exists():
            pend = self._kr._read_pending()
            if pend is not None:
                raise KeyringError(
                    "a rekey is pending",
                    hint="finish it by unsealing with its new shares, or discard it "
                    "(keysplit rekey --abort; UnsealedKeyring.abort_rekey())",
                )
        on_disk = kf.parse(_read(self._kr.path / KEYRING_FILE))[0]
        if on_disk != self._kr.meta:
            raise KeyringError("the keyring file changed under this process; unseal again")
        data = kf.serialize(meta, secrets, self._master, default_rng().random_bytes(12))
        atomic_write(self._kr.path / KEYRING_FILE, data)
        self._kr.meta, self._secrets = meta, secrets

    def _resolve(self, subjects: Sequence[str], *, create: bool) -> list[DataKey | None]:
        """Data keys for ``subjects`` (cached, loaded in bulk, created if ``create``)."""
        keys = self._keys
        got: list[DataKey | None] = list(map(keys.get, subjects))
        if None not in got:  # the steady state: every key cached, one C-level pass
            return got
        missing = [s for s in dict.fromkeys(subjects) if s not in keys]
        for s in missing:
            envelope.encode_aad(s)  # validate subject before touching the store
        found = self.store.get_many(missing)
        self._load(list(found.values()))
        absent = [s for s in missing if s not in found]
        if absent and create:
            self._create(absent)
        return list(map(keys.get, subjects))

    def _load(self, rows: Sequence[WrappedKey]) -> None:
        by_version: dict[int, list[WrappedKey]] = {}
        for r in rows:
            by_version.setdefault(r.kek_version, []).append(r)
        for version, group in by_version.items():
            arr = np.frombuffer(b"".join(r.wrapped for r in group), np.uint8).reshape(
                len(group), -1
            )
            if arr.shape[1] != 24:
                raise FormatError("key store holds a wrapped key of the wrong length")
            raw, ok = keywrap.unwrap_batch(self._kek(version), arr)
            if not bool(ok.all()):
                raise IntegrityError(
                    "a wrapped data key in the store failed authentication",
                    hint="the key store was altered or belongs to another keyring",
                )
            for r, k in zip(group, raw, strict=True):
                self._keys[r.subject] = DataKey(k.tobytes())

    def _create(self, subjects: Sequence[str]) -> None:
        version = self._kr.meta.current_kek
        raw = np.frombuffer(bytearray(os.urandom(16 * len(subjects))), np.uint8).reshape(-1, 16)
        wrapped = keywrap.wrap_batch(self._kek(version), raw)
        rows = [WrappedKey(s, version, wrapped[i].tobytes()) for i, s in enumerate(subjects)]
        stored = self.store.insert_many(rows)
        winners = []
        for i, (mine, kept) in enumerate(zip(rows, stored, strict=True)):
            if kept == mine:
                self._keys[mine.subject] = DataKey(raw[i].tobytes())
            else:  # another writer created this subject's key first: use theirs
                winners.append(kept)
        if winners:
            self._load(winners)
        raw.fill(0)

    # -- records --------------------------------------------------------------------------

    def encrypt(
        self, plaintext: bytes, *, subject: str, context: Mapping[str, str] | None = None
    ) -> bytes:
        """Seal a record for ``subject`` (its data key is created on first use)."""
        (key,) = self._resolve([subject], create=True)
        assert key is not None
        return envelope.encrypt(key, plaintext, subject=subject, context=context)

    def decrypt(
        self, record: bytes, *, subject: str, context: Mapping[str, str] | None = None
    ) -> bytes:
        """Open a record; :class:`IntegrityError` if it does not belong to this subject and
        context, was altered, or the subject was shredded."""
        envelope.parse_header(record)
        (key,) = self._resolve([subject], create=False)
        if key is None:
            raise IntegrityError(hint="the subject has no data key (never used, or shredded)")
        return envelope.decrypt(key, record, subject=subject, context=context)

    def encrypt_many(
        self,
        subjects: Sequence[str],
        plaintexts: Sequence[bytes],
        context: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None = None,
    ) -> list[bytes]:
        """Seal many records (``subjects[i]`` owns ``plaintexts[i]``) in one pass."""
        keys = self._resolve(subjects, create=True)
        return envelope.encrypt_many(keys, subjects, plaintexts, context)  # type: ignore[arg-type]

    def decrypt_many(
        self,
        subjects: Sequence[str],
        records: Sequence[bytes],
        context: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None = None,
    ) -> list[bytes]:
        """Open many records; all-or-nothing (:class:`IntegrityError` if any fails)."""
        keys = self._resolve(subjects, create=False)
        if any(k is None for k in keys):
            raise IntegrityError(hint="a subject has no data key (never used, or shredded)")
        return envelope.decrypt_many(keys, subjects, records, context)  # type: ignore[arg-type]

    def hpke_open(self, ciphertext: bytes, info: bytes = b"") -> bytes:
        """Open data sealed to this keyring with :func:`hpke_seal` (RFC 9180 base mode)."""
        priv = X25519PrivateKey.from_private_bytes(self._secrets.x25519_private)
        try:
            return HPKE_SUITE.decrypt(ciphertext, priv, info)
        except (InvalidTag, ValueError):
            raise IntegrityError() from None

    def hpke_decrypt(self, ciphertext: bytes, info: bytes) -> bytes:
        """Same as :meth:`hpke_open`; the opener protocol :mod:`keysplit.stream` accepts."""
        return self.hpke_open(ciphertext, info)

    # -- key management -------------------------------------------------------------------

    def rotate(self) -> int:
        """Create a new KEK version; new data keys are wrapped under it. Returns it.

        The new KEK is durable in the keyring file before anything uses it.
        """
        with _dir_lock(self._kr.path):
            m = self._kr.meta
            v = m.next_kek
            keks = dict(self._secrets.keks)
            keks[v] = default_rng().random_bytes(16)
            meta = _replace(
                m,
                generation=m.generation + 1,
                current_kek=v,
                kek_versions=tuple(sorted(keks)),
                next_kek=v + 1,
            )
            self._write_keyring(meta, kf.KeyringSecrets(self._secrets.x25519_private, keks))
        self._kr._emit("rotate", kek_version=v, generation=meta.generation)
        return v

    def rewrap(self, *, batch_size: int = 10_000, progress: Progress | None = None) -> RewrapResult:
        """Move every data key not under the current KEK to it, ``batch_size`` at a time.

        Each batch commits in one transaction, so an interrupted rewrap loses nothing and
        simply resumes where it stopped when run again. ``progress(done, total)`` is called
        after every batch. Data and records are untouched. A stored key that fails its
        integrity check is left as it is and named in :attr:`RewrapResult.corrupt`; the
        others are still rewrapped.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError("batch_size must be a positive int")
        store = self.store
        current = self._kr.meta.current_kek
        new_kek = self._kek(current)
        counts = store.count_by_version()
        total = sum(c for v, c in counts.items() if v != current)
        done = 0
        after = ""
        corrupt: list[str] = []
        while True:
            rows = store.stale_batch(current, after, batch_size)
            if not rows:
                break
            after = rows[-1].subject
            by_version: dict[int, list[WrappedKey]] = {}
            for r in rows:
                by_version.setdefault(r.kek_version, []).append(r)
            pairs: list[tuple[WrappedKey, WrappedKey]] = []
            for version, group in by_version.items():
                kek = self._kek(version)
                good = [r for r in group if len(r.wrapped) == 24]
                corrupt += [r.subject for r in group if len(r.wrapped) != 24]
                if not good:
                    continue
                arr = np.frombuffer(b"".join(r.wrapped for r in good), np.uint8).reshape(-1, 24)
                raw, ok = keywrap.unwrap_batch(kek, arr)
                wrapped = keywrap.wrap_batch(new_kek, raw)
                raw.fill(0)
                for i, r in enumerate(good):
                    if ok[i]:
                        pairs.append((r, WrappedKey(r.subject, current, wrapped[i].tobytes())))
                    else:  # detected per key: skip it, keep going, report it
                        corrupt.append(r.subject)
            done += store.replace_many(pairs)
            if progress is not None:
                progress(done, total)
        remaining = sum(c for v, c in store.count_by_version().items() if v != current)
        self._kr._emit(
            "rewrap",
            rewrapped=done,
            kek_version=current,
            remaining=remaining,
            corrupt=len(corrupt),
        )
        return RewrapResult(done, current, remaining, tuple(corrupt))

    def retire(self, version: int) -> None:
        """Delete KEK ``version`` from the keyring; refused while any data key uses it."""
        m = self._kr.meta
        if version == m.current_kek:
            raise KeyringError(f"KEK version {version} is current and cannot be retired")
        if version not in m.kek_versions:
            raise KeyringError(f"KEK version {version} does not exist (or is already retired)")
        with _dir_lock(self._kr.path):
            left = self.store.count_by_version().get(version, 0)
            if left:
                raise KeyringError(
                    f"{left} data keys are still wrapped under KEK version {version}",
                    hint="run rewrap first",
                )
            keks = {v: k for v, k in self._secrets.keks.items() if v != version}
            meta = _replace(
                self._kr.meta, generation=m.generation + 1, kek_versions=tuple(sorted(keks))
            )
            self._write_keyring(meta, kf.KeyringSecrets(self._secrets.x25519_private, keks))
        self._kr._emit("retire", kek_version=version, generation=meta.generation)

    def set_legal_hold(self, subject: str, hold: bool) -> None:
        """Place (True) or lift (False) a legal hold: a held subject cannot be shredded."""
        envelope.encode_aad(subject)
        self.store.set_legal_hold(subject, bool(hold))
        self._kr._emit("legal_hold", subject=subject, hold=bool(hold))

    def shred(self, subject: str) -> bool:
        """Destroy ``subject``'s data key: its records can never be decrypted again.

        Raises :class:`LegalHoldError` if the subject is under legal hold. Returns whether a
        key existed. Copies of the store in old backups still hold the key wrapped under its
        KEK version; rotate, rewrap and retire that version to make those useless too.
        """
        envelope.encode_aad(subject)
        existed = self.store.delete(subject)  # raises LegalHoldError if held
        self._keys.pop(subject, None)
        self._kr._emit("shred", subject=subject, existed=existed)
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
        m = self._kr.meta
        names = list(custodians) if custodians is not None else [c.name for c in m.custodians]
        k = threshold if threshold is not None else min(m.threshold, len(names))
        names = _validate_custodians(k, names)
        rng = rng or default_rng()
        master = rng.random_bytes(16)
        shares = split(master, k, len(names), rng=rng)
        meta = _replace(
            m,
            generation=m.generation + 1,
            set_id=shares[0].set_id.hex(),
            threshold=k,
            custodians=tuple(kf.Custodian(n, s.index) for n, s in zip(names, shares, strict=True)),
        )
        with _dir_lock(self._kr.path):
            on_disk = kf.parse(_read(self._kr.path / KEYRING_FILE))[0]
            if on_disk != m:
                raise KeyringError("the keyring file changed under this process; unseal again")
            data = kf.serialize(meta, self._secrets, master, rng.random_bytes(12))
            atomic_write(self._kr.path / PENDING_FILE, data)
        self._kr.pending = meta
        self._pending_master = master
        self._kr._emit("rekey_prepared", generation=meta.generation, threshold=k, custodians=names)
        return {n: s for n, s in zip(names, shares, strict=True)}

    def commit_rekey(self) -> None:
        """Phase 2 of rekey: the pending keyring replaces the current one atomically.

        From here on only the new shares unseal the keyring.
        """
        pend = self._kr.pending
        master = self._pending_master
        if pend is None or master is None:
            raise KeyringError("no rekey is pending in this session")
        with _dir_lock(self._kr.path):
            data = (self._kr.path / PENDING_FILE).read_bytes()
            meta, _ = kf.open_secrets(data, master)
            if meta != pend or meta.generation != self._kr.meta.generation + 1:
                raise KeyringError("the pending rekey changed on disk; start again")
            os.replace(self._kr.path / PENDING_FILE, self._kr.path / KEYRING_FILE)
            fsync_dir(self._kr.path)
        self._kr.meta, self._kr.pending = meta, None
        self._master, self._pending_master = master, None
        self._kr._emit("rekey_committed", generation=meta.generation, recovered=False)

    def abort_rekey(self) -> bool:
        """Discard a pending rekey (its shares become useless). True if one existed."""
        with _dir_lock(self._kr.path):
            try:
                os.unlink(self._kr.path / PENDING_FILE)
            except FileNotFoundError:
                existed = False
            else:
                fsync_dir(self._kr.path)
                existed = True
        self._kr.pending = None
        self._pending_master = None
        self._kr._emit("rekey_aborted", existed=existed)
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
        return _status(self._kr, self.store, sealed=False)


def _replace(meta: kf.KeyringMeta, **changes: Any) -> kf.KeyringMeta:
    return dataclasses.replace(meta, **changes)
