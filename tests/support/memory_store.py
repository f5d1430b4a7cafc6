"""An in-memory KeyStore for tests: the protocol's meaning in a few lines of Python.

It implements exactly the trimmed :class:`keysplit.store.KeyStore` protocol (nothing
more, so passing the contract suite and running a keyring on it shows the protocol is all
the library needs). Thread-safe with one lock, which also makes every method trivially
atomic. Stores are named so a test can "reopen" one and see the keyring binding refused.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from typing import ClassVar

from keysplit.errors import KeyringError, LegalHoldError
from keysplit.store import WrappedKey

__all__ = ["MemoryKeyStore"]


class _Data:
    def __init__(self, keyring_id: str) -> None:
        self.keyring_id = keyring_id
        self.lock = threading.Lock()
        self.keys: dict[str, WrappedKey] = {}
        self.holds: set[str] = set()


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
            for r in rows:
                self._d.keys.setdefault(r.subject, r)
            return [self._d.keys[r.subject] for r in rows]

    def replace_many(self, rows: Sequence[tuple[WrappedKey, WrappedKey]]) -> int:
        n = 0
        with self._d.lock:
            for old, new in rows:
                if old.subject == new.subject and self._d.keys.get(old.subject) == old:
                    self._d.keys[old.subject] = new
                    n += 1
        return n

    def delete(self, subject: str) -> bool:
        with self._d.lock:
            if subject in self._d.holds:
                raise LegalHoldError(f"subject {subject!r} is under legal hold")
            return self._d.keys.pop(subject, None) is not None

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
        with self._d.lock:
            (self._d.holds.add if hold else self._d.holds.discard)(subject)

    def legal_holds(self) -> list[str]:
        with self._d.lock:
            return sorted(self._d.holds)

    def close(self) -> None:
        pass
