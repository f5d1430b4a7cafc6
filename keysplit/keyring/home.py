"""Where a keyring lives: its sealed file, pending rekey file, writer lock and store record.

:class:`KeyringHome` is everything the keyring code knows about *place*; no other keyring
module builds a path. Today a home is a directory::

    keyring.ksk       sealed keyring file (:mod:`keysplit.keyring.file`)
    keyring.pending   only between rekey prepare and commit (or after a crash there)
    keyring.pending.handout
                      the set id of the shares an init or rekey ceremony is writing: one
                      killed then handed out only some, so they must not unseal
    keyring.ksk.unrecorded
                      the set id of shares a rekey is switching the keyring to and the
                      generation it switches to ("SETID GEN"; code before the generation
                      wrote the set id alone), from just before the switch until its audit
                      entry is written: a process killed in between left a switch the log
                      does not show, and the next quorum unseal records it
                      (``rekey-recovered``, under that generation even if a rotation
                      bumped the keyring's since)
    keyring.ksk.uncounted
                      the set ids of the rekeys that took effect here and the key store
                      did not count (its ``note_rekey`` failed: unreachable, a lock wait),
                      oldest first: the next count of a rekey, or the next quorum unseal,
                      has the store count them first, in order (it counts each set once)
    keyring.ksk.init-unrecorded
                      the set id of a new keyring's shares, from before its init ceremony
                      hands them out until its ``init`` entry is written: one killed in
                      between left a keyring whose log lacks its ``init``, and the next
                      quorum unseal records it (``observed``)
    keyring.ksk.verify.json, keyring.pending.verify.json
                      proofs of possession awaited by ``init --verify`` / ``rekey --verify``
                      (:class:`keysplit.proof.PendingVerification`)
    store.json        which key store holds the wrapped data keys and in which format:
                      {"url", "keyring_id", "default_iv_versions"}
    audit.log         the ceremony log (keysplit.audit)
    audit.anchor      the log's head (entries, hash; MACed), rewritten after each append
    .lock             advisory lock serializing writers
    keys.sqlite       the default key store (``sqlite:keys.sqlite``), if that is the store

A database row can be a home later (the same operations: read/replace the file, write,
commit or discard the pending file, a writer lock, the recorded store URL).

The store record is public, not secret (a URL never carries a password:
:func:`keysplit.store.check_store_url`). Tampering with it is caught where it matters:
every store is bound to the keyring id (a store of another keyring refuses to open), the
record's own ``keyring_id`` must match the sealed file's, and data keys in the store are
wrapped under KEKs only the unsealed keyring holds, so a store swapped for an attacker's
one yields no key and accepts no forged one (it can only withhold keys, which shows up as
records that fail to open and in ``status``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from .. import _json
from .._fileio import atomic_write, durable_rename, fsync_dir, read_bounded
from ..errors import FormatError, KeyringError
from ..proof import INIT_VERIFY_FILE, PendingVerification, Verification, verify_path
from ..store import check_store_url, default_store_url
from .file import MAX_FILE, KeyringMeta, parse

__all__ = [
    "AUDIT_FILE",
    "HANDOUT_FILE",
    "INIT_UNRECORDED_FILE",
    "INIT_VERIFY_FILE",
    "KEYRING_FILE",
    "LOCK_FILE",
    "PENDING_FILE",
    "STORE_FILE",
    "STORE_RECORD_FILE",
    "UNCOUNTED_FILE",
    "UNRECORDED_FILE",
    "KeyringHome",
    "StoreRecord",
]

KEYRING_FILE = "keyring.ksk"
PENDING_FILE = "keyring.pending"
HANDOUT_FILE = "keyring.pending.handout"
UNRECORDED_FILE = "keyring.ksk.unrecorded"
INIT_UNRECORDED_FILE = "keyring.ksk.init-unrecorded"
UNCOUNTED_FILE = "keyring.ksk.uncounted"
STORE_FILE = "keys.sqlite"
STORE_RECORD_FILE = "store.json"
LOCK_FILE = ".lock"
AUDIT_FILE = "audit.log"
ANCHOR_FILE = "audit.anchor"
CHECKPOINT_FILE = "audit.checkpoint"
_MAX_RECORD = 8192


class StoreRecord:
    """The recorded store: its URL, the keyring id it was created for, and the KEK versions
    whose rows predate subject binding (RFC 3394 default IV; see :class:`KekSet`).

    A keyring without a record predates both: default store, every version unbound. The
    record is not authenticated, and need not be for the binding: a version listed wrongly
    either way only makes its rows fail to open (no key leaves, none is accepted moved),
    because rows with the default IV exist only under versions made before the binding.
    """

    __slots__ = ("default_iv_versions", "keyring_id", "url")

    def __init__(self, url: str, keyring_id: str, default_iv_versions: tuple[int, ...]) -> None:
        self.url = url
        self.keyring_id = keyring_id
        self.default_iv_versions = default_iv_versions

    def __repr__(self) -> str:
        return f"StoreRecord({self.url!r}, keyring_id={self.keyring_id!r})"


class KeyringHome:
    """A keyring directory: reads and atomic, durable writes of the keyring's own files."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"KeyringHome({str(self.path)!r})"

    @property
    def audit_path(self) -> Path:
        return self.path / AUDIT_FILE

    @property
    def anchor_path(self) -> Path:
        """The audit log's anchor: its head, recorded after every keyed append."""
        return self.path / ANCHOR_FILE

    @property
    def checkpoint_path(self) -> Path:
        """What a quorum's gap check kept of the audit log so far (MACed; a cache: a
        missing or invalid one means reading the whole log)."""
        return self.path / CHECKPOINT_FILE

    def make(self) -> None:
        """Create the directory (mode 0700) if needed; :class:`KeyringError` if it cannot
        be (a file in the way, no permission)."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise KeyringError(
                f"cannot create keyring directory {self.path}: {exc.strerror}"
            ) from None

    def has_keyring(self) -> bool:
        return (self.path / KEYRING_FILE).exists()

    def read_keyring(self) -> bytes:
        """The sealed keyring file; :class:`KeyringError` naming the place if missing,
        :class:`FormatError` if it is larger than the format allows (refused by its size,
        before it is read)."""
        path = self.path / KEYRING_FILE
        try:
            return read_bounded(path, MAX_FILE, str(path), regular=True)
        except FileNotFoundError:
            raise KeyringError(f"no keyring at {self.path} ({KEYRING_FILE} missing)") from None
        except OSError as exc:  # a file where the directory should be, no permission
            raise KeyringError(f"cannot read a keyring at {self.path}: {exc.strerror}") from None

    def write_keyring(self, data: bytes, *, overwrite: bool = True) -> None:
        """Replace (or with ``overwrite=False`` first create) the keyring file atomically."""
        atomic_write(self.path / KEYRING_FILE, data, overwrite=overwrite)

    def read_pending(self) -> bytes | None:
        """The pending rekey's keyring file, or None; :class:`FormatError` if it is larger
        than the format allows (refused by its size, before it is read)."""
        path = self.path / PENDING_FILE
        try:
            return read_bounded(path, MAX_FILE, str(path), regular=True)
        except FileNotFoundError:
            return None

    def pending_meta(self, current: KeyringMeta) -> KeyringMeta | None:
        """The pending rekey's metadata, if a valid one for the generation after
        ``current`` exists (a damaged or stale file is ignored: it never blocks the current
        keyring, and the next rekey replaces it)."""
        try:
            data = self.read_pending()
            if data is None:
                return None
            meta = parse(data)[0]
        except FormatError:
            return None
        if meta.keyring_id != current.keyring_id or meta.generation != current.generation + 1:
            return None
        return meta

    def has_pending(self) -> bool:
        return (self.path / PENDING_FILE).exists()

    def write_pending(self, data: bytes) -> None:
        atomic_write(self.path / PENDING_FILE, data)

    def commit_pending(self) -> None:
        """The pending file replaces the keyring file in one atomic, durable rename."""
        durable_rename(self.path / PENDING_FILE, self.path / KEYRING_FILE)

    def discard_pending(self) -> bool:
        """Delete the pending file (and its hand-out mark); True if there was one."""
        self.clear_handout()
        try:
            os.unlink(self.path / PENDING_FILE)
        except FileNotFoundError:
            return False
        fsync_dir(self.path)
        return True

    def _mark(self, name: str, set_id: str) -> None:
        atomic_write(self.path / name, set_id.encode())

    def _unmark(self, name: str) -> None:
        try:
            os.unlink(self.path / name)
        except FileNotFoundError:
            return
        fsync_dir(self.path)

    def _marks(self, name: str, set_id: str) -> bool:
        try:
            with open(self.path / name, "rb") as f:
                return f.read(65) == set_id.encode()
        except FileNotFoundError:
            return False

    def mark_handout(self, set_id: str) -> None:
        """A ceremony starts writing the shares of set ``set_id`` (a new keyring's, or a
        pending rekey's): until :meth:`clear_handout`, they must not unseal it
        (:meth:`handout_incomplete`)."""
        self._mark(HANDOUT_FILE, set_id)

    def clear_handout(self) -> None:
        """Every share of the marked set was written (or the pending rekey is discarded)."""
        self._unmark(HANDOUT_FILE)

    def handout_incomplete(self, set_id: str) -> bool:
        """Whether the writing of set ``set_id``'s new shares began and never finished (the
        ceremony was killed): some custodians of that set may have no share."""
        return self._marks(HANDOUT_FILE, set_id)

    def mark_unrecorded(self, set_id: str, generation: int) -> None:
        """The keyring is about to switch to share set ``set_id``, its ``generation`` (a
        rekey's commit): until :meth:`clear_unrecorded`, after its audit entry, the switch
        counts as unrecorded."""
        self._mark(UNRECORDED_FILE, f"{set_id} {generation}")

    def clear_unrecorded(self) -> None:
        """The switch's entry is in the audit log (or the switch never happened)."""
        self._unmark(UNRECORDED_FILE)

    def switch_unrecorded(self, set_id: str, generation: int) -> int | None:
        """The generation the keyring switched to with share set ``set_id`` (the current
        one) if the process that switched it was killed before recording it in the audit
        log, else None. The mark names it; one written by code before it did (the set id
        alone) gives ``generation``, the keyring's current one (wrong by as many rotations
        as ran since the switch)."""
        try:
            with open(self.path / UNRECORDED_FILE, "rb") as f:
                mark = f.read(96).split(b" ")
        except FileNotFoundError:
            return None
        if mark[0] != set_id.encode():
            return None
        if len(mark) == 2 and mark[1].isdigit() and len(mark[1]) <= 10:
            return int(mark[1])
        return generation

    def mark_uncounted(self, set_ids: list[str]) -> None:
        """The rekeys (their share sets' ids, oldest first) the key store has not counted:
        none clears the mark."""
        if set_ids:
            atomic_write(self.path / UNCOUNTED_FILE, " ".join(set_ids).encode())
        else:
            self._unmark(UNCOUNTED_FILE)

    def uncounted(self) -> list[str]:
        """:meth:`mark_uncounted`'s set ids, oldest first ([] if none; a word that is not
        a set id is skipped)."""
        try:
            with open(self.path / UNCOUNTED_FILE, "rb") as f:
                words = f.read(4096).decode("ascii", "replace").split()
        except FileNotFoundError:
            return []
        return [w for w in words if len(w) <= 64 and all(c in "0123456789abcdef" for c in w)]

    def mark_init_unrecorded(self, set_id: str) -> None:
        """An init ceremony is about to hand out the shares of set ``set_id``: until
        :meth:`clear_init_unrecorded`, after its ``init`` entry, the init is unrecorded."""
        self._mark(INIT_UNRECORDED_FILE, set_id)

    def clear_init_unrecorded(self) -> None:
        """The ``init`` entry is in the audit log (or the next quorum recorded its lack)."""
        self._unmark(INIT_UNRECORDED_FILE)

    def init_unrecorded(self, set_id: str) -> bool:
        """Whether the init that made share set ``set_id`` was killed before its entry."""
        return self._marks(INIT_UNRECORDED_FILE, set_id)

    # -- --verify: proofs of possession awaited before a generation is relied on -----------

    @property
    def init_verify_path(self) -> Path:
        return self.path / INIT_VERIFY_FILE

    @property
    def rekey_verify_path(self) -> Path:
        return verify_path(self.path / PENDING_FILE)

    def verification(
        self, current: KeyringMeta, pending: KeyringMeta | None
    ) -> Verification | None:
        """The generation awaiting proofs, if any: the ``pending`` rekey's, or else the
        ``current`` one's after ``init --verify``; state files of other share sets (stale
        leftovers) are ignored. Both verify gates of the unsealer ask this."""
        if pending is not None and self.rekey_verify_path.exists():
            state = PendingVerification.load(self.rekey_verify_path)
            if state.set_id.hex() == pending.set_id:
                return Verification("rekey", pending.generation, state)
        if self.init_verify_path.exists():
            state = PendingVerification.load(self.init_verify_path)
            if state.set_id.hex() == current.set_id:
                return Verification("init", current.generation, state)
        return None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive writer lock (``flock`` on ``.lock``), held for the ``with`` body."""
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- the recorded store -----------------------------------------------------------------

    def store_record(self) -> StoreRecord | None:
        """The recorded store, or None (keyrings made before the record: default store)."""
        p = self.path / STORE_RECORD_FILE
        try:
            with open(p, "rb") as f:
                raw = f.read(_MAX_RECORD + 1)
        except FileNotFoundError:
            return None
        if len(raw) > _MAX_RECORD:
            raise FormatError(f"{p} is too large to be a store record")
        obj = _json.loads(raw, what="store record", max_bytes=_MAX_RECORD)
        if (
            not isinstance(obj, dict)
            or set(obj) != {"url", "keyring_id", "default_iv_versions"}
            or not isinstance(obj["url"], str)
            or not isinstance(obj["keyring_id"], str)
            or not isinstance(obj["default_iv_versions"], list)
            or not all(
                isinstance(v, int) and not isinstance(v, bool) and 1 <= v < 2**32
                for v in obj["default_iv_versions"]
            )
        ):
            raise FormatError(
                f"{p} must be an object with fields url, keyring_id (strings) and "
                "default_iv_versions (KEK versions)"
            )
        return StoreRecord(
            check_store_url(obj["url"]), obj["keyring_id"], tuple(obj["default_iv_versions"])
        )

    def record_store(
        self, url: str, keyring_id: str, default_iv_versions: tuple[int, ...] = ()
    ) -> None:
        """Record the store URL (validated: no password), the keyring id it serves and the
        KEK versions whose rows use the default IV (none for a keyring made today)."""
        doc = {
            "url": check_store_url(url),
            "keyring_id": keyring_id,
            "default_iv_versions": sorted(default_iv_versions),
        }
        atomic_write(
            self.path / STORE_RECORD_FILE,
            json.dumps(doc, sort_keys=True).encode() + b"\n",
        )

    def restore_store_record(self, record: StoreRecord | None) -> None:
        """Put the store record back as it was (``None``: none), after a ``create`` whose
        store could not be opened: a record naming it would be taken up by the next
        ``create`` as an interrupted one's, and fail the same way."""
        if record is not None:
            self.record_store(record.url, record.keyring_id, record.default_iv_versions)
            return
        try:
            os.unlink(self.path / STORE_RECORD_FILE)
        except FileNotFoundError:
            return
        fsync_dir(self.path)

    def store_record_for(self, keyring_id: str) -> StoreRecord | None:
        """The record, refused if it was made for another keyring id (copied or tampered)."""
        rec = self.store_record()
        if rec is not None and rec.keyring_id != keyring_id:
            raise KeyringError(
                f"{self.path / STORE_RECORD_FILE} names the store of another keyring "
                f"({rec.keyring_id}, expected {keyring_id})",
                hint="restore the right store record or pass the store URL explicitly",
            )
        return rec

    def store_url(self, keyring_id: str) -> str:
        """The store URL to use for ``keyring_id``: recorded, else the embedded default."""
        rec = self.store_record_for(keyring_id)
        return default_store_url() if rec is None else rec.url
