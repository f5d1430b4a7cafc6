"""What ``keysplit status`` shows: a secret-free description of a keyring and its store.

Its own module so the sealed and the unsealed keyring describe themselves the same way
without importing each other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..store import KeyStore
from ..store.base import KeyringState, Lease

if TYPE_CHECKING:
    from .sealed import Keyring

__all__ = ["KeyringStatus", "status_of"]


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
    store_url: str = ""
    unbound_kek_versions: tuple[int, ...] = ()
    """KEK versions whose rows predate subject binding (rotate, rewrap, retire them)."""
    fleet: KeyringState | None = None
    """The state every process holding the keyring shares (from the store)."""
    leases: tuple[Lease, ...] = ()
    """Live processes holding the keyring unsealed."""
    uncounted_rekeys: tuple[str, ...] = ()
    """Share set ids of rekeys that took effect here but the store failed to count
    (oldest first): ``fleet.rekeys`` is short by this many until the next quorum unseal
    or rekey of this keyring's home counts them (``keyring.ksk.uncounted``)."""
    store_time: float = 0.0
    """The store's clock when the leases were read (seconds since the epoch; PostgreSQL:
    the server's), which their ``expires`` is on: a lease's time left is the difference,
    right on a host whose own clock is off by a skew."""

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
            "store_url": self.store_url,
            "unbound_kek_versions": list(self.unbound_kek_versions),
            "fleet": None
            if self.fleet is None
            else {
                "epoch": self.fleet.epoch,
                "current_kek": self.fleet.current_kek,
                "retired": list(self.fleet.retired),
                "rekeys": self.fleet.rekeys,
                "shreds": self.fleet.tombstone_seq,
            },
            "uncounted_rekeys": list(self.uncounted_rekeys),
            "leases": [
                {
                    "id": x.id,
                    "host": x.host,
                    "pid": x.pid,
                    "role": x.role,
                    "current_kek": x.current_kek,
                    "acked_shreds": x.acked,
                    "cached_keys": x.cached,
                    "expires": x.expires,
                    "expires_in": max(0.0, x.expires - self.store_time),
                }
                for x in self.leases
            ],
        }


def status_of(kr: Keyring, store: KeyStore, *, sealed: bool) -> KeyringStatus:
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
        fleet=store.state(),
        leases=tuple(store.leases()),
        store_time=_clock(store),
        pending_rekey=kr.pending is not None,
        sealed=sealed,
        store_url=kr.store_url,
        unbound_kek_versions=kr.unbound_kek_versions,
        uncounted_rekeys=tuple(kr.home.uncounted()),
    )


def _clock(store: KeyStore) -> float:
    """The store's clock (its ``clock()``: the PostgreSQL server's, the SQLite host's);
    this host's for a store that keeps none (a lease's expiry is then on this host's)."""
    clock = getattr(store, "clock", None)
    return float(clock()) if callable(clock) else time.time()
