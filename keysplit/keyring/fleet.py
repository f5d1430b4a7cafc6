"""One keyring, many processes: the lease, the bounded key cache and the tombstone tags.

Every process that holds an unsealed keyring (a backend, ``keysplit serve``, a job
driver, a CLI ceremony) is a *member* of the keyring's fleet: it holds a
:class:`~keysplit.store.base.Lease` in the store (host, pid, role, its current KEK, the
last shred it has acknowledged, how many keys it caches) and watches the shared
:class:`~keysplit.store.base.KeyringState`. The rules, and the bound each one keeps:

* **Shred.** The store writes a tombstone (:func:`tombstone_tags`: a keyed hash of the
  subject) in the transaction that deletes the key. A member reads new tombstones every
  ``poll`` seconds (SQLite) or as soon as PostgreSQL notifies it, drops those subjects'
  cached keys, and acknowledges the tombstone's sequence number in its lease, which is
  what ``keysplit shred --wait`` waits for.
* **Lease bound.** The cache serves keys only until ``ttl`` seconds after the member's
  last successful renewal (renewed every ``ttl / 3``). A member cut off from the store
  stops serving cached keys when its lease expires, which is also when the rest of the
  fleet stops counting it as live: nobody ever waits on a partitioned member, and it can
  never decrypt a shredded subject for longer than ``ttl``.
* **Rotate, retire, rekey.** The store refuses a new key under a version that is not
  current (in the insert's transaction); the member then re-reads the keyring file with
  its master key and retries. A member adopts a new current KEK within ``poll`` seconds
  anyway and reports it in its lease, so a retire is refused only while some live member
  still writes under the old version.

:class:`KeyCache` is the bounded cache (an approximate LRU: second chance) of unwrapped
data keys every :class:`DataKeys` implementation that caches uses; memory per key is
stated in its docstring.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import secrets
import socket
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from typing import ClassVar, NamedTuple

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..names import subject_spellings
from ..record import DataKey
from ..store import KeyStore
from ..store.base import TOMBSTONE_SIZE, KeyringState, Lease

__all__ = [
    "DEFAULT_CACHE_KEYS",
    "DEFAULT_LEASE_TTL",
    "DEFAULT_POLL",
    "TOMBSTONE_KEY_INFO",
    "FleetConfig",
    "FleetMember",
    "KeyCache",
    "TombstoneTagger",
    "tombstone_key",
    "tombstone_tags",
    "wait_for_acks",
]

DEFAULT_LEASE_TTL = 10.0
"""Seconds a lease (and so every cached key) lives without a renewal."""
DEFAULT_POLL = 1.0
"""Seconds between looks at the shared state (PostgreSQL also wakes on NOTIFY)."""
DEFAULT_CACHE_KEYS = 100_000
"""Data keys a process caches at most (least recently used evicted first, approximately)."""
TOMBSTONE_KEY_INFO = b"keysplit keyring tombstone key v1\x00"


class FleetConfig(NamedTuple):
    """How long a lease lives, how often the state is polled, how many keys are cached.

    :meth:`from_env` reads ``KEYSPLIT_LEASE_TTL``, ``KEYSPLIT_POLL`` and
    ``KEYSPLIT_CACHE_KEYS`` (so ``keysplit serve``, jobs and backends are configured
    without code); invalid values are a ``ValueError``.
    """

    lease_ttl: float = DEFAULT_LEASE_TTL
    poll: float = DEFAULT_POLL
    cache_keys: int = DEFAULT_CACHE_KEYS

    @classmethod
    def from_env(cls) -> FleetConfig:
        env = os.environ
        return cls(
            float(env.get("KEYSPLIT_LEASE_TTL", DEFAULT_LEASE_TTL)),
            float(env.get("KEYSPLIT_POLL", DEFAULT_POLL)),
            int(env.get("KEYSPLIT_CACHE_KEYS", DEFAULT_CACHE_KEYS)),
        )


_log = logging.getLogger(__name__)


def tombstone_key(x25519_private: bytes, keyring_id: str) -> bytes:
    """The keyring's tombstone MAC key: HKDF-SHA256 of the X25519 private key (kept across
    rekey and rotate, like the audit key), the keyring id bound in."""
    return HKDF(
        hashes.SHA256(), 32, salt=None, info=TOMBSTONE_KEY_INFO + bytes.fromhex(keyring_id)
    ).derive(x25519_private)


class TombstoneTagger:
    """HMAC-SHA256(key, subject)[:16] from precomputed inner/outer states (~1 us each)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        block = key.ljust(64, b"\x00")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def __call__(self, subject: str) -> bytes:
        h = self._inner.copy()
        h.update(subject.encode())
        o = self._outer.copy()
        o.update(h.digest())
        return o.digest()[:TOMBSTONE_SIZE]


def tombstone_tags(key: bytes, subject: str) -> list[bytes]:
    """The tombstone tag of every spelling of ``subject`` (:mod:`keysplit.names`)."""
    tag = TombstoneTagger(key)
    return [tag(s) for s in subject_spellings(subject)]


def _check_tag(key: bytes, subject: str, tag: bytes) -> bool:
    """Reference HMAC (used by tests to cross-check the precomputed states)."""
    full = hmac.new(key, subject.encode(), hashlib.sha256).digest()
    return hmac.compare_digest(full[:TOMBSTONE_SIZE], tag)


class KeyCache:
    """Bounded cache of unwrapped data keys, usable only while ``valid()`` says so.

    Eviction is second chance (CLOCK), an approximate LRU: the keys are queued in the order
    they were cached; a hit only marks its key (``DataKey._used``); to make room, the
    oldest key is evicted if unmarked, else unmarked and queued again at the end (its
    second chance). So an eviction takes a key looked up since it was cached (or since its
    last second chance) only after every key that was not, and a key looked up before
    every insert outlives every key never looked up. A hit used to move its key to the end of
    the queue (``OrderedDict.move_to_end``): ~210 ns of a ~3 us single-record call, cache
    misses on the neighbouring nodes of cold entries (issue 23); the mark is a write to
    the key object the caller reads next anyway. Marks only order evictions: the bound,
    drops and the lease never depend on them (a key object shared by two caches shares
    its mark, which only shifts which of its keys each evicts first).

    Memory: a cached key costs about 3 KB of resident memory: ~2.4 KB the AES-GCM context
    its ``DataKey`` keeps in OpenSSL, the rest the object, its commitment, the subject
    string, the queue entry and the tombstone tag map entry; measured by
    ``tests/unit/keyring/test_fleet.py::test_cache_memory_per_key``. The default bound of
    100,000 keys is thus ~300 MB. Thread-safe; it never holds more than its bound, not even
    in the middle of :meth:`put_many` (it evicts before it inserts).
    """

    def __init__(self, max_keys: int = DEFAULT_CACHE_KEYS, tagger: TombstoneTagger | None = None):
        if max_keys < 1:
            raise ValueError("the key cache holds at least one key")
        self.max_keys = max_keys
        self._keys: OrderedDict[str, DataKey] = OrderedDict()
        self._tags: dict[bytes, str] = {}
        self._tag = tagger
        self._tag_of: dict[str, bytes] = {}  # without a tagger: each key's tag, as given
        self._lock = threading.Lock()
        self.generation = 0
        """Bumped by every drop: a key read from the store before a drop is not cached."""

    def __len__(self) -> int:
        return len(self._keys)

    def get_many(self, subjects: Sequence[str]) -> list[DataKey | None]:
        """Cached keys in order (``None`` where absent); each one found is marked used,
        like a single lookup's hit (one policy: the batch path keeps no exact order)."""
        keys = self._keys
        with self._lock:
            got = list(map(keys.get, subjects))
            for key in filter(None, got):
                key._used = True
        return got

    def lease_bound_get(self, member: FleetMember) -> Callable[[str], DataKey | None]:
        """A one-subject lookup for the single-record hot path: the cached key of a
        subject while ``member``'s lease is valid, else ``None`` (the caller then takes
        its full path, which renews the lease or raises, e.g. on a closed keyring).

        The same rules as the full path, in one call: a lapsed (or closed, deadline 0)
        lease serves nothing from the cache, and the lookup only reads (it never caches),
        so a drop (:meth:`drop_tags`, :meth:`drop`, :meth:`clear`) that has returned is
        never undone. A hit marks its key used, like :meth:`get_many`.

        Under the GIL it takes no lock: ``get`` of an ``OrderedDict`` with ``str`` keys is
        one C call that runs no Python code, so it is atomic against the locked writers,
        and the lookup linearizes there. A drop that returned before the ``get`` has
        removed the key, so it is not served; a drop that had not is ordered after this
        lookup, exactly as one that lands just after the caller got its key. The mark
        after the ``get`` writes to the key object, never to the cache, so it cannot put
        a dropped or evicted key back (a mark on a key no longer cached is garbage). The
        lock cost as much as the rest of the lookup (issue 23's profile). Without the GIL
        (free-threaded builds) it locks.
        """
        keys, lock = self._keys, self._lock  # never rebound: clear() empties them in place
        get = keys.get
        mono = time.monotonic

        def lookup(subject: str) -> DataKey | None:
            if mono() >= member._deadline:  # the lease's clock (FleetMember.valid, inlined)
                return None
            key = get(subject)
            if key is not None:
                key._used = True  # second chance (see the class)
            return key

        def locked(subject: str) -> DataKey | None:
            if mono() >= member._deadline:
                return None
            with lock:
                key = get(subject)
                if key is not None:
                    key._used = True
            return key

        gil = getattr(sys, "_is_gil_enabled", None)
        return lookup if gil is None or gil() else locked

    def lockless_view(
        self, member: FleetMember
    ) -> tuple[Callable[[str], DataKey | None], FleetMember] | None:
        """:meth:`lease_bound_get` for a caller that inlines it (the record engine's first
        single-record path, issue 23: the call cost ~5 % of a 1 KiB decrypt): the cache's
        own ``get`` and ``member``, whose ``_deadline`` the caller compares with
        ``time.monotonic()`` before each lookup, and which must mark a key it uses
        (``_used = True``), as the lookup does. None without the GIL (the lookup then
        locks: use :meth:`lease_bound_get`)."""
        gil = getattr(sys, "_is_gil_enabled", None)
        if gil is not None and not gil():
            return None
        return self._keys.get, member

    def put_many(
        self,
        items: Iterable[tuple[str, DataKey]],
        *,
        since: int | None = None,
        tags: Sequence[bytes] | None = None,
    ) -> None:
        """Cache keys; with ``since`` (a :attr:`generation` read before the keys were read
        from the store) nothing is cached if a drop happened in between, so a key read
        just before its shred is processed never outlives the shred in the cache.

        Each key goes to the end of the queue, unmarked (a subject cached again replaces
        its key there). The batch's new subjects first make room (the class says which
        keys go; none of the batch's own while the batch fits in the bound, so the cache
        never holds more than its bound and a key is not evicted by the put that cached
        it); a batch larger than the bound keeps its last keys.

        ``tags`` (one per item) is for a cache without a tagger, whose tombstone tags are
        not a function of the subject alone (a key cluster's come from each subject's PRF
        output, :mod:`keysplit.service.cluster_client`)."""
        tag = self._tag
        items = list(items)
        with self._lock:
            if since is not None and since != self.generation:
                return
            keys, tagmap, tag_of = self._keys, self._tags, self._tag_of
            given: Iterable[bytes | None] = repeat(None)
            if tags is not None:
                if tag is not None or len(tags) != len(items):
                    raise ValueError("one tag per key, and only for a cache without a tagger")
                given = tags
            batch = {s for s, _ in items}
            keep = {s for s in batch if s in keys}
            self._evict(
                min(len(keys) + len(batch) - len(keep) - self.max_keys, len(keys) - len(keep)), keep
            )
            for (s, k), t in zip(items, given, strict=False):  # given: as long, or endless
                if s in keys:
                    keys.move_to_end(s)
                else:
                    if len(keys) >= self.max_keys:  # only a batch larger than the bound
                        self._untag(keys.popitem(last=False)[0])
                    if tag is not None:
                        tagmap[tag(s)] = s
                if t is not None:
                    old = tag_of.get(s)
                    if old != t:
                        if old is not None:
                            tagmap.pop(old, None)
                        tag_of[s] = t
                        tagmap[t] = s
                k._used = False
                keys[s] = k

    def _evict(self, n: int, keep: set[str]) -> None:
        """Evict ``n`` keys not in ``keep`` (under the lock; there are that many): the
        oldest unmarked ones, each marked key before them unmarked and queued again (its
        second chance). Bounded: after as many second chances as there were keys (hits
        racing the sweep may mark keys again) the oldest unmarked or not goes."""
        keys = self._keys
        chances = len(keys)
        while n > 0:
            s = next(iter(keys))
            key = keys[s]
            if s in keep:
                keys.move_to_end(s)
            elif key._used and chances > 0:
                chances -= 1
                key._used = False
                keys.move_to_end(s)
            else:
                del keys[s]
                self._untag(s)
                n -= 1

    def _untag(self, subject: str) -> None:
        """Forget a dropped key's tag (under the lock)."""
        if self._tag is not None:
            self._tags.pop(self._tag(subject), None)
        else:
            t = self._tag_of.pop(subject, None)
            if t is not None:
                self._tags.pop(t, None)

    def drop(self, subjects: Iterable[str]) -> None:
        with self._lock:
            self.generation += 1
            for s in subjects:
                if self._keys.pop(s, None) is not None:
                    self._untag(s)

    def drop_tags(self, tags: Iterable[bytes]) -> int:
        """Drop the keys of subjects whose tombstone tag is in ``tags``; how many."""
        n = 0
        with self._lock:
            self.generation += 1
            for t in tags:
                s = self._tags.pop(t, None)
                if s is not None:
                    self._tag_of.pop(s, None)
                    if self._keys.pop(s, None) is not None:
                        n += 1
        return n

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._keys.clear()
            self._tags.clear()
            self._tag_of.clear()


class FleetMember:
    """This process's lease on a keyring and the thread that keeps it and its cache current.

    ``current_kek()`` reports the version this process writes under; ``on_tombstones``
    drops the named subjects' keys; ``on_state`` adopts a changed state (a new current or
    retired KEK). Both callbacks run on the member's thread; an exception in them is
    logged and retried on the next poll, and the cache lapses with the lease meanwhile.
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        role: str,
        current_kek: Callable[[], int],
        cached: Callable[[], int],
        on_tombstones: Callable[[list[bytes]], object],
        on_state: Callable[[KeyringState], None],
        ttl: float = DEFAULT_LEASE_TTL,
        poll: float = DEFAULT_POLL,
    ) -> None:
        # finite first: every comparison with NaN is false, and an infinite lease never
        # ends (cached keys of a process cut off from the store would outlive any shred)
        if not (math.isfinite(ttl) and math.isfinite(poll) and 0 < poll < ttl):
            raise ValueError(
                f"the lease needs finite seconds with 0 < poll < ttl (got ttl {ttl}, poll "
                f"{poll}: KEYSPLIT_LEASE_TTL, KEYSPLIT_POLL)"
            )
        self.store = store
        self.id = secrets.token_hex(8)
        self.role = role
        self.ttl, self.poll = float(ttl), float(poll)
        self._current_kek, self._cached = current_kek, cached
        self._on_tombstones, self._on_state = on_tombstones, on_state
        self._deadline = 0.0
        self._renewed = -1e18
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rewatch = False  # a forked child: start a watcher at the next renewal
        FleetMember._all.add(self)
        st = store.state()
        self._epoch = st.epoch
        self.acked = st.tombstone_seq  # earlier shreds removed their keys before we loaded any
        self.last_state = st

    def __repr__(self) -> str:
        return f"FleetMember({self.id}, role={self.role!r}, acked={self.acked})"

    def lease(self) -> Lease:
        return Lease(
            self.id,
            socket.gethostname(),
            os.getpid(),
            self.role,
            self._current_kek(),
            self.acked,
            self._cached(),
            0.0,
        )

    def valid(self) -> bool:
        """Whether cached keys may still be used (the lease has not lapsed locally)."""
        return time.monotonic() < self._deadline

    def lapse(self) -> None:
        """End the lease locally now (cached keys are no longer served): a renewal that
        raced a close must not leave the lease alive."""
        with self._lock:
            self._deadline = 0.0

    _all: ClassVar[weakref.WeakSet[FleetMember]] = weakref.WeakSet()

    def start(self) -> None:
        """Take the lease now (so it shows before the first use) and start watching."""
        self.renew()
        self._watch()

    def _watch(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"keysplit-lease-{self.id}", daemon=True
        )
        self._thread.start()

    def _forked(self) -> None:
        """In a forked child (a backend that unseals, then forks its workers): a lease of its
        own. The copy was the parent's, under the parent's id and without its watcher
        thread: the parent's acknowledgements spoke for this process, so ``shred --wait``
        reported every holder done while the child still served the shredded subject's
        cached key, and the child's close dropped the parent's lease. The lease lapses here
        (nothing cached is served until a renewal, which drops the cache first) and the
        next renewal takes it under a new id and starts watching."""
        self.id = secrets.token_hex(8)
        self._deadline = 0.0
        self._lock = threading.RLock()
        self._rewatch = self._thread is not None and not self._stop.is_set()
        self._thread = None

    @classmethod
    def _forked_all(cls) -> None:
        for member in list(cls._all):
            member._forked()

    def renew(self) -> KeyringState:
        """Renew the lease and catch up with the state now (also after a local change)."""
        with self._lock:
            t0 = time.monotonic()
            st = self.store.renew_lease(self.lease(), self.ttl)
            self._renewed = t0
            self._deadline = t0 + self.ttl
            if self._apply(st):  # report what was just adopted or acknowledged
                st = self.store.renew_lease(self.lease(), self.ttl)
            if self._rewatch and not self._stop.is_set():  # a forked child (see _forked)
                self._rewatch = False
                self._watch()
            return st

    def sync(self) -> KeyringState:
        """Look at the state; process what changed; renew when due or when acking."""
        with self._lock:
            due = time.monotonic() - self._renewed >= self.ttl / 3
            if due:
                return self.renew()
            st = self.store.state()
            if self._apply(st):
                return self.renew()
            return st

    def _apply(self, st: KeyringState) -> bool:
        """Process a state; True if the lease should be renewed to report it."""
        self.last_state = st
        changed = False
        while st.tombstone_seq > self.acked:
            batch = self.store.tombstones_since(self.acked)
            if not batch:
                break
            self._on_tombstones([t.tag for t in batch])
            self.acked = batch[-1].seq
            changed = True
        if st.epoch != self._epoch:
            before = self._current_kek()
            self._on_state(st)
            self._epoch = st.epoch
            changed = changed or self._current_kek() != before
        return changed

    def _run(self) -> None:
        wait = getattr(self.store, "wait_for_change", None)
        while not self._stop.is_set():
            if wait is not None:
                wait(self.poll)
            elif self._stop.wait(self.poll):
                break
            if self._stop.is_set():
                break
            try:
                self.sync()
            except Exception as exc:  # the store is unreachable: the lease lapses on its own
                if self._stop.is_set():  # closed meanwhile: nothing to warn about
                    break
                _log.warning("keysplit lease %s: %s", self.id, type(exc).__name__)

    def close(self) -> None:
        """Stop watching and give the lease back (best effort: it expires anyway)."""
        self._stop.set()
        wake = getattr(self.store, "wake", None)  # a watcher blocked in LISTEN returns now
        if wake is not None:
            wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.poll + 5.0)
        with self._lock:  # after any renewal in flight (one racing a close: see lapse)
            self._deadline = 0.0
        try:
            self.store.drop_lease(self.id)
        except Exception:  # closing; the lease expires by itself
            _log.debug("keysplit lease %s: not dropped", self.id)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=FleetMember._forked_all)


def wait_for_acks(store: KeyStore, seq: int, timeout: float, *, step: float = 0.1) -> list[Lease]:
    """Wait up to ``timeout`` seconds until every live lease has acknowledged tombstone
    ``seq`` (dropped its subject's key); return the live leases that still have not
    (empty: every holder has). A holder that cannot be reached stops counting when its
    lease expires, by which time it has stopped using its cache (the lease bound)."""
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        pending = [x for x in store.leases() if x.acked < seq]
        left = deadline - time.monotonic()
        if not pending or left <= 0:
            return pending
        time.sleep(min(step, left))
