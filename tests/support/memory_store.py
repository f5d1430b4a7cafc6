"""An in-memory KeyStore for tests: the protocol's meaning in a few lines of Python.

It implements exactly the trimmed :class:`keysplit.store.KeyStore` protocol (nothing
more, so passing the contract suite and running a keyring on it shows the protocol is all
the library needs). Thread-safe with one lock, which also makes every method trivially
atomic. Stores are named so a test can "reopen" one and see the keyring binding refused.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import ClassVar

from keysplit.errors import KeyringError
from keysplit.store import WrappedKey
from keysplit.store import rules as _rules
from keysplit.store.base import ADMIN_WAIT, KeyringState, Lease, Tombstone

__all__ = ["MemoryKeyStore"]


class _Data:
    def __init__(self, keyring_id: str) -> None:
        self.keyring_id = keyring_id
        self.lock = threading.Lock()
        self.admin = threading.Lock()  # admin_lock: stores of one keyring share it
        self.keys: dict[str, WrappedKey] = {}
        self.holds: set[str] = set()
        self.state = KeyringState(0, 0, (), 0, 0)
        self.tombstones: list[Tombstone] = []
        self.leases: dict[str, Lease] = {}
        self.counted_rekey = ""  # the share set of the rekey counted last (note_rekey)

    def bump(self, st: KeyringState) -> KeyringState:
        self.state = st._replace(epoch=st.epoch + 1)
        return self.state


class MemoryKeyStore:
    _stores: ClassVar[dict[str, _Data]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str, keyring_id: str, *, create: bool = False) -> None:
        with self._registry_lock:
            data = self._stores.get(name)
            if data is None:
                if not create:
                    raise KeyringError(f"key store not found: memory:{name}")
                data = self._stores[name] = _Data(keyring_id)
        if data.keyring_id != keyring_id:
            raise KeyringError(f"key store memory:{name} belongs to another keyring")
        self._d = data

    @property
    def keyring_id(self) -> str:
        return self._d.keyring_id

    def get_many(self, subjects: Sequence[str]) -> dict[str, WrappedKey]:
        with self._d.lock:
            return {s: self._d.keys[s] for s in subjects if s in self._d.keys}

    def insert_many(self, rows: Sequence[WrappedKey]) -> list[WrappedKey]:
        with self._d.lock:
            _rules.check_insert(self._d.state, {r.kek_version for r in rows})
            for r in rows:
                self._d.keys.setdefault(r.subject, r)
            return [self._d.keys[r.subject] for r in rows]

    def replace_many(self, rows: Sequence[tuple[WrappedKey, WrappedKey]]) -> int:
        n = 0
        with self._d.lock:
            _rules.check_replace(self._d.state, {new.kek_version for _, new in rows})
            for old, new in rows:
                if old.subject == new.subject and self._d.keys.get(old.subject) == old:
                    self._d.keys[old.subject] = new
                    n += 1
        return n

    def delete(self, subject: str, tombstone: bytes | Sequence[bytes] | None = None) -> bool:
        return self.delete_many([subject], tombstone)

    def delete_many(
        self, subjects: Sequence[str], tombstone: bytes | Sequence[bytes] | None = None
    ) -> bool:
        wanted = _rules.delete_subjects(subjects)
        tags = _rules.tombstone_tags(tombstone)
        with self._d.lock:
            refusal = _rules.hold_refusal(s for s in wanted if s in self._d.holds)
            if refusal is not None:
                raise refusal
            gone = sum(self._d.keys.pop(s, None) is not None for s in wanted) > 0
            if gone and tags:
                seq = self._d.state.tombstone_seq
                for tag in tags:
                    seq += 1
                    self._d.tombstones.append(Tombstone(seq, tag, time.time()))
                self._d.bump(self._d.state._replace(tombstone_seq=seq))
            return gone

    def stale_batch(self, current_version: int, after: str, limit: int) -> list[WrappedKey]:
        with self._d.lock:
            rows = [
                r
                for r in self._d.keys.values()
                if r.kek_version != current_version and r.subject > after
            ]
        return sorted(rows)[:limit]

    def stale_cuts(self, current_version: int, every: int) -> list[str]:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError("every must be a positive int")
        with self._d.lock:
            stale = sorted(
                r.subject for r in self._d.keys.values() if r.kek_version != current_version
            )
        return stale[every - 1 : len(stale) - 1 : every]

    def count_by_version(self) -> dict[int, int]:
        with self._d.lock:
            return dict(Counter(r.kek_version for r in self._d.keys.values()))

    def set_legal_hold(self, subject: str, hold: bool) -> None:
        self.set_legal_holds([subject], hold)

    def set_legal_holds(self, subjects: Sequence[str], hold: bool) -> None:
        if not subjects:
            return
        with self._d.lock:
            for subject in subjects:
                (self._d.holds.add if hold else self._d.holds.discard)(subject)
            self._d.bump(self._d.state)

    def legal_holds(self) -> list[str]:
        with self._d.lock:
            return sorted(self._d.holds)

    def state(self) -> KeyringState:
        return self._d.state

    @contextlib.contextmanager
    def admin_lock(self, timeout: float = ADMIN_WAIT) -> Iterator[None]:
        if not self._d.admin.acquire(timeout=timeout):
            raise _rules.busy_admin(timeout)
        try:
            yield
        finally:
            self._d.admin.release()

    def set_current_kek(self, version: int) -> KeyringState:
        with self._d.lock:
            _rules.check_rotate(self._d.state, version)
            return self._d.bump(self._d.state._replace(current_kek=version))

    def retire_kek(self, version: int) -> KeyringState:
        with self._d.lock:
            st = self._d.state
            left = sum(r.kek_version == version for r in self._d.keys.values())
            refusal = _rules.retire_refusal(st, version, left, self._live())
            if refusal is not None:
                raise refusal
            retired = tuple(sorted({*st.retired, version}))  # as SQLite and PostgreSQL
            return self._d.bump(st._replace(retired=retired))

    def note_rekey(self, rekey: str) -> KeyringState:
        with self._d.lock:
            if self._d.counted_rekey == rekey:
                return self._d.state
            self._d.counted_rekey = rekey
            return self._d.bump(self._d.state._replace(rekeys=self._d.state.rekeys + 1))

    def tombstones_since(self, seq: int, limit: int = 10_000) -> list[Tombstone]:
        with self._d.lock:
            return [t for t in self._d.tombstones if t.seq > seq][:limit]

    def has_tombstone(self, tags: Sequence[bytes]) -> bool:
        with self._d.lock:
            return any(t.tag in tags for t in self._d.tombstones)

    def renew_lease(self, lease: Lease, ttl: float) -> KeyringState:
        with self._d.lock:
            self._d.leases[lease.id] = lease._replace(expires=time.time() + ttl)
            return self._d.state

    def drop_lease(self, lease_id: str) -> None:
        with self._d.lock:
            self._d.leases.pop(lease_id, None)

    def _live(self) -> list[Lease]:
        now = time.time()
        return [x for x in self._d.leases.values() if x.expires > now]

    def leases(self, *, live: bool = True) -> list[Lease]:
        with self._d.lock:
            found = self._live() if live else list(self._d.leases.values())
        return sorted(found, key=lambda x: (x.host, x.pid))

    def close(self) -> None:
        pass
