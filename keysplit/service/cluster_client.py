"""``keysplit.ClusterClient``: the record API over a threshold key cluster (no single host
can decrypt).

Each subject's KEK is ``HKDF(s*H(cluster, region, version, subject))`` where ``s`` is the
cluster key, shared T-of-N among node keyrings and never whole anywhere: T nodes each
return ``(lambda_i*s_i)*H(...)`` (pre-multiplied by their Lagrange coefficient for the
chosen set) and the client adds the points. Data keys stay random AES-128 keys, wrapped
(RFC 3394) under the subject's KEK in the store ``cluster.json`` names, bound to the
cluster id; shredding deletes the row, so a record dies even for a full quorum of nodes.

Never a wrong key:

* a subject that gets a *new* data key is evaluated with DLEQ proofs (each node proves its
  answer used the share behind its public share); a key wrapped under an unproven KEK
  could be lost for good;
* an existing key's unwrap is its own integrity check (64 bits, RFC 3394): when it fails,
  the batch is evaluated again with proofs, every node whose proof fails is named and
  excluded, and the client retries with another node; if every proof holds, the stored
  row itself is bad (:class:`IntegrityError`).

Fewer than T reachable nodes raise :class:`ClusterError` naming the missing ones (and why).
Keys are created under NFC subjects only (the record engine asks so); a node hashes the
NFC form of the subject it is sent, the one its token policy is checked on.
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import names
from ..errors import (
    ClusterError,
    FormatError,
    IntegrityError,
    KeyringError,
    KeysplitError,
    LegalHoldError,
    NoDataKeyError,
    PermissionDenied,
    SealedError,
    ShreddedError,
)
from ..keyring import fleet
from ..keyring.admin import check_hold
from ..keyring.records import Records
from ..record import DataKey
from ..store import KeyStore, WrappedKey, open_store
from ..store.base import LostInsertError
from . import _wire as wire
from .client import Client, ServiceError
from .cluster_config import (
    SUCCESSOR_FILE,
    ClusterConfig,
    ClusterNodeInfo,
    read_cluster,
    read_successor,
)

if TYPE_CHECKING:
    from ..hazmat.ristretto import Point

__all__ = ["FLUSH_TAG", "ClusterClient", "ClusterDataKeys", "ClusterStatus", "TlsFiles"]

FLUSH_TAG = b"\xff" * 16
EVAL_BATCH = 8192
"""Most subjects in one evaluation request to a node. A node's proof covers at most
65,535 pairs (RFC 9497's two-byte index), and its answer (40 bytes per subject: point and
length-table row) must fit the client's response bound of 1 MiB plus the request's size
whatever the subjects' lengths (8,192 x 40 bytes = 320 KiB); a larger batch is split."""
"""The tombstone of a shred whose subject's tag could not be computed (fewer than T
nodes): every caching client drops every cached key (and the shredded subject then reads
as :class:`NoDataKeyError`, not :class:`ShreddedError`)."""
_CLOSED = "the cluster client was closed"
_INSERT_TRIES = 4  # insert_many attempts of one call whose outcome was lost (LostInsertError)
DOWN_BACKOFF = 60.0
"""Seconds a node that failed to answer is asked last (after the nodes that answered): a
hung node made every call wait its whole timeout before another node was asked."""

Context = Mapping[str, str] | Sequence[Mapping[str, str] | None] | None


class _Lied(Exception):
    """A node's answer failed its checks (internal: the node is named and excluded)."""


@dataclass(frozen=True)
class TlsFiles:
    """TLS files for a cluster's ``https://`` nodes, given once for all of them, as
    ``keysplit.Client`` takes them for one service: ``ca`` a CA bundle (PEM; several CAs
    when the data centres' nodes have different ones), ``cert``/``key`` the client
    certificate for nodes served with ``--client-ca`` (mTLS). Unused for ``unix:`` nodes."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def client(self, url: str, *, token: str | None, timeout: float) -> Client:
        """A :class:`Client` for one node."""
        return Client(url, token=token, timeout=timeout, ca=self.ca, cert=self.cert, key=self.key)


NO_TLS = TlsFiles()


@dataclass(frozen=True)
class ClusterStatus:
    """What :meth:`ClusterClient.status` reports (secret-free)."""

    cluster_id: str
    region: str
    threshold: int
    epoch: int
    nodes: tuple[str, ...]
    excluded: tuple[str, ...]
    keys_by_version: Mapping[int, int]


class ClusterDataKeys:
    """Data keys from a key cluster: the :class:`~keysplit.keyring.DataKeys` of a cluster.

    Holds no secret beyond the data keys it hands out (and caches, if asked); thread-safe.
    :class:`ClusterClient` runs the one record engine, :class:`~keysplit.keyring.records.
    Records`, over it, exactly as :class:`~keysplit.UnsealedKeyring` runs it over its own
    keys: a backend switches from a service or a keyring to a cluster by one constructor.

    With a cache (``cache_max_age``) it is a member of the store's fleet, under the same
    rules and bound as :class:`~keysplit.keyring.datakeys.LocalDataKeys`
    (:mod:`keysplit.keyring.fleet`): it holds a lease in the cluster's store (so
    ``keysplit cluster shred --wait`` counts it), drops a shredded subject's key within the
    poll interval (PostgreSQL: on NOTIFY), and serves cached keys only while its lease is
    valid. A cluster has no keyring-wide tombstone key: each subject's tombstone tag is
    derived from its PRF output (:func:`keysplit.cluster.dprf.derive_tombstone`), so the
    cache keeps the tag it computed beside each key. Without a cache nothing is held
    between calls (every call reads the store) and no lease is taken.

    :meth:`close` is final: every later call raises :class:`KeyringError` (as the
    :class:`~keysplit.keyring.DataKeys` contract says for keys that are gone), never
    reconnects and never serves a cached key; a call racing the close in another thread
    gets the same error rather than what the torn-down store, pool or connection raised.
    """

    def __init__(
        self,
        config: ClusterConfig,
        store: KeyStore,
        *,
        token: str | None,
        timeout: float = 30.0,
        cache_max_age: float | None = None,
        reload: Callable[[], ClusterConfig] | None = None,
        tls: TlsFiles = NO_TLS,
    ) -> None:
        from . import _cluster_math as cm  # lazily: the cluster extra

        if cache_max_age is not None and (isinstance(cache_max_age, bool) or cache_max_age <= 0):
            raise ValueError("cache_max_age must be positive")
        if not cm.consistent(config):  # every proof is checked against these public shares
            raise ClusterError(
                f"cluster {config.cluster_id}: the public key or public shares in cluster.json "
                "are not the ones its commitments give",
                hint="keysplit cluster status DIR shows it; restore cluster.json",
            )
        self.config = config
        self._store = store
        self._closed = False
        self._closing = threading.Lock()  # a lease renewal vs. close (see _cache_ok)
        self._token, self._timeout, self._reload, self._tls = token, timeout, reload, tls
        self._clients = {
            n.name: tls.client(n.url, token=token, timeout=timeout) for n in config.nodes
        }
        self._pool = ThreadPoolExecutor(max_workers=len(config.nodes), thread_name_prefix="ks-cl")
        self._lock = threading.Lock()
        self._excluded: dict[str, str] = {}  # node name -> why (a wrong answer)
        self._failed: dict[str, float] = {}  # node name -> when it last failed to answer
        self._cache_age = cache_max_age
        self._cache: fleet.KeyCache | None = None
        self.member: fleet.FleetMember | None = None
        if cache_max_age is not None:
            fc = fleet.FleetConfig.from_env()
            cache = self._cache = fleet.KeyCache(fc.cache_keys)
            self._cache_born = time.monotonic()
            self.member = fleet.FleetMember(
                store,
                role="cluster-client",
                current_kek=lambda: self.config.kek_version,
                cached=lambda: len(cache),
                on_tombstones=self._on_tombstones,
                on_state=lambda st: None,  # a cluster store has no KEK versions to follow
                ttl=fc.lease_ttl,
                poll=fc.poll,
            )
            self.member.start()

    def __repr__(self) -> str:
        return f"ClusterDataKeys(cluster={self.config.cluster_id}, region={self.config.region!r})"

    @property
    def keyring_id(self) -> str:
        return self.config.cluster_id

    @property
    def excluded(self) -> dict[str, str]:
        """Nodes excluded for wrong answers (name -> reason), until :meth:`close` or until
        ``cluster.json`` describes the node anew (a replacement, a new URL, a refresh)."""
        with self._lock:
            return dict(self._excluded)

    @property
    def store(self) -> KeyStore:
        """The cluster's key store; :class:`KeyringError` once closed (every call that
        reads or writes keys comes through here or :meth:`evaluate`)."""
        if self._closed:
            raise KeyringError(_CLOSED)
        return self._store

    def close(self) -> None:
        """Drop every cached key, give the lease back, close the node connections and the
        store, for good (a second close does nothing).

        The flag goes up first, under the lock a lease renewal takes: a call racing the
        close either renewed before it (the member's close below then ends that lease) or
        sees the flag, so it can never revive the lease this close ends (nor cache a key
        that a revived lease would then serve after close returned).
        """
        with self._closing:
            if self._closed:
                return
            self._closed = True
        if self.member is not None:
            self.member.close()
        if self._cache is not None:
            self._cache.clear()
        with self._lock:
            self._excluded.clear()
        for c in self._clients.values():
            c.close()
        self._pool.shutdown(wait=False)
        close = getattr(self._store, "close", None)
        if callable(close):
            close()

    def evict(self, subjects: Sequence[str]) -> None:
        if self._cache is not None:
            self._cache.drop(subjects)

    def _on_tombstones(self, tags: list[bytes]) -> None:
        """The fleet member's callback: drop the shredded subjects' keys (all of them for a
        shred that could not name its subject, :data:`FLUSH_TAG`)."""
        if self._cache is None:
            return
        if FLUSH_TAG in tags:
            self._cache.clear()
        else:
            self._cache.drop_tags(tags)

    # -- evaluation ----------------------------------------------------------------------

    def _ask(
        self,
        cfg: ClusterConfig,
        node: ClusterNodeInfo,
        subjects: Sequence[str],
        indices: list[int],
        proof: bool,
    ) -> list[bytes]:
        """One node's pre-multiplied answers; raises :class:`_Lied` if they do not check.

        ``cfg`` is the description the call chose ``node`` from: the request names its
        epoch and the answer is checked against ``node``'s public share in it, even if
        another thread reloaded ``cluster.json`` meanwhile (an honest node answering for
        the new epoch was checked against its old public share and excluded)."""
        head = {
            "cluster_id": cfg.cluster_id,
            "region": cfg.region,
            "epoch": cfg.epoch,
            "version": cfg.kek_version,
            "indices": indices,
            "proof": proof,
        }
        body = wire.encode_frame(head, [None] * len(subjects), subjects)
        data, _ = self._clients[node.name].request(
            "POST", "/v1/cluster/eval", body, wire.BATCH_TYPE
        )
        try:
            rhead, _, out = wire.decode_frame(data, f"node {node.name}")
        except FormatError as exc:
            raise _Lied(str(exc)) from None
        if rhead.get("index") != node.index or len(out) != len(subjects):
            raise _Lied("answered for another index or count")
        if any(o is None or len(o) != 32 for o in out):
            raise _Lied("malformed points")
        points: list[bytes] = out  # type: ignore[assignment]
        if proof:
            from . import _cluster_math as m  # lazily: the cluster extra

            lam = m.lagrange(indices)[node.index]
            hashed = [m.point_for(cfg.cluster_id, cfg.region, s, cfg.kek_version) for s in subjects]
            try:
                pr = bytes.fromhex(str(rhead.get("proof", "")))
            except ValueError:
                pr = b""
            if not m.verify(bytes.fromhex(node.public_share), lam, hashed, points, pr):
                raise _Lied("its DLEQ proof does not verify against its public share")
        return points

    def evaluate(self, subjects: Sequence[str], *, proof: bool) -> list[Point]:
        """Each (NFC) subject's combined DPRF output ``s*H(subject)``, from T nodes.

        Nodes that do not answer are skipped (and named if fewer than T remain); with
        ``proof`` a node whose answer fails its DLEQ proof is excluded (see :attr:`excluded`).
        """

        from . import _cluster_math as cm  # lazily: the cluster extra

        if self._closed:
            raise KeyringError(_CLOSED)
        if len(subjects) > EVAL_BATCH:
            return [
                p
                for i in range(0, len(subjects), EVAL_BATCH)
                for p in self.evaluate(subjects[i : i + EVAL_BATCH], proof=proof)
            ]
        cfg = self.config
        down: dict[str, str] = {}
        while True:
            with self._lock:
                bad = dict(self._excluded)
            usable = [n for n in cfg.nodes if n.name not in bad and n.name not in down]
            with self._lock:  # nodes that failed lately go last (a stable sort)
                lately = {k for k, t in self._failed.items() if time.monotonic() - t < DOWN_BACKOFF}
            usable.sort(key=lambda n: n.name in lately)
            if len(usable) < cfg.threshold:
                # a refresh or replacement since we read it (here or in another thread);
                # exclusions alone count too: the excluded nodes may have been replaced
                if (down or bad) and (self.config is not cfg or self._reloaded()):
                    return self.evaluate(subjects, proof=proof)
                missing = {**down, **bad}
                raise ClusterError(
                    f"cluster {cfg.cluster_id}: need {cfg.threshold} of {len(cfg.nodes)} nodes, "
                    f"{len(usable)} usable; "
                    + "; ".join(f"{k}: {v}" for k, v in sorted(missing.items())),
                    hint="start or unseal the nodes named, or replace a lost one",
                )
            chosen = usable[: cfg.threshold]
            indices = [n.index for n in chosen]
            try:
                futures = {
                    n.name: self._pool.submit(self._ask, cfg, n, subjects, indices, proof)
                    for n in chosen
                }
            except RuntimeError:  # the pool was shut down: by a close, since the check above
                if self._closed:
                    raise KeyringError(_CLOSED) from None
                raise
            answers: dict[int, list[bytes]] = {}
            retry = False
            for n in chosen:
                try:
                    answers[n.index] = futures[n.name].result()
                except _Lied as exc:
                    with self._lock:
                        if n in self.config.nodes:  # not described anew meanwhile
                            self._excluded[n.name] = f"wrong answer ({exc})"
                    retry = True
                except PermissionDenied as exc:
                    if "unknown or revoked" in str(exc):
                        down[n.name] = "does not know this token"
                        retry = True
                    else:
                        raise PermissionDenied(f"node {n.name}: {exc}", hint=exc.hint) from None
                except (ServiceError, SealedError, ClusterError, OSError) as exc:
                    down[n.name] = str(exc).split("\n")[0] or type(exc).__name__
                    retry = True
                except KeysplitError as exc:
                    down[n.name] = f"{type(exc).__name__}: {exc}"
                    retry = True
            with self._lock:
                for n in chosen:
                    if n.name in down:
                        self._failed[n.name] = time.monotonic()
                    elif n.index in answers:
                        self._failed.pop(n.name, None)
            if retry:
                continue
            try:
                return cm.combine(answers, cfg.threshold)
            except (KeysplitError, ValueError) as exc:  # an invalid point in some answer
                if proof:
                    raise ClusterError(f"nodes answered invalid points: {exc}") from None
                return self.evaluate(subjects, proof=True)

    def _reloaded(self) -> bool:
        """Re-read ``cluster.json``; True if it changed (epoch, nodes), so a long-running
        backend follows ``cluster refresh`` and ``cluster replace`` without a restart. Only
        the same cluster (id, region, key) is accepted."""
        if self._reload is None:
            return False
        try:
            new = self._reload()
        except KeysplitError:
            return False
        old = self.config
        same = (new.cluster_id, new.region, new.public_key) == (
            old.cluster_id,
            old.region,
            old.public_key,
        )
        from . import _cluster_math as cm  # lazily: the cluster extra

        if not same or new == old or not cm.consistent(new):
            return False
        with self._lock:
            self.config = new
            for n in new.nodes:
                if n not in old.nodes:  # described anew: replaced, moved or refreshed
                    self._excluded.pop(n.name, None)
                if n.url != self._clients[n.name].url:
                    self._clients[n.name] = self._tls.client(
                        n.url, token=self._token, timeout=self._timeout
                    )
        return True

    def _keks(self, subjects: Sequence[str], *, proof: bool) -> list[bytes]:
        return self._derive(subjects, proof=proof)[0]

    def _derive(
        self, subjects: Sequence[str], *, proof: bool, tags: bool = False
    ) -> tuple[list[bytes], list[bytes]]:
        """Each subject's KEK and (with ``tags``) its tombstone tag, from one evaluation."""
        from . import _cluster_math as m  # lazily: the cluster extra

        cfg = self.config
        outs = self.evaluate(subjects, proof=proof)
        cid, v = cfg.cluster_id, cfg.kek_version
        keks = [m.derive_kek(p, cid, s, v) for p, s in zip(outs, subjects, strict=True)]
        marks = (
            [m.derive_tombstone(p, cid, s, v) for p, s in zip(outs, subjects, strict=True)]
            if tags
            else []
        )
        return keks, marks

    def tombstone_tags(self, subjects: Sequence[str]) -> list[bytes]:
        """The tombstone tag of each subject as spelled (one evaluation, with proofs: a
        wrong tag would leave a shredded key in other clients' caches)."""
        return self._derive(subjects, proof=True, tags=True)[1]

    # -- DataKeys ----------------------------------------------------------------------------

    def resolve(self, subjects: Sequence[str], *, create: bool) -> list[DataKey | None]:
        cache = self._cache
        if cache is None:
            got = self._fetch(list(dict.fromkeys(subjects)), create=create)
            keys = {s: DataKey(raw) for s, (raw, _) in got.items()}
            return [keys.get(s) for s in subjects]
        self._cache_ok(cache)
        gen = cache.generation  # a drop after this point keeps what we fetch out of the cache
        hit = cache.get_many(subjects)
        if None not in hit:  # the steady state: every key cached
            return hit
        known = {s: k for s, k in zip(subjects, hit, strict=True) if k is not None}
        missing = [s for s in dict.fromkeys(subjects) if s not in known]
        got = self._fetch(missing, create=create, tags=True)
        fetched = [(s, DataKey(raw)) for s, (raw, _) in got.items()]
        known.update(fetched)
        cache.put_many(fetched, since=gen, tags=[t for _, t in got.values()])
        if self._closed:  # closed meanwhile (maybe after its cache.clear): keep nothing
            cache.clear()
            raise KeyringError(_CLOSED)
        return [known.get(s) for s in subjects]

    def _cache_ok(self, cache: fleet.KeyCache) -> None:
        """Cached keys are used only while the client is open, while the lease holds and
        for ``cache_max_age`` (the whole cache is dropped that often: no key is older).

        A lapsed lease is renewed under the lock :meth:`close` takes to raise its flag, and
        only if the flag is still down: a close ends the lease right after, and a renewal
        after that would revive it (the lease kept in the store, the keys cached under it
        served after close returned)."""
        member = self.member
        assert member is not None and self._cache_age is not None
        if self._closed:
            raise KeyringError(_CLOSED)
        now = time.monotonic()
        if now - self._cache_born > self._cache_age:
            cache.clear()
            self._cache_born = now
        if not member.valid():  # the lease lapsed (thread starved, store was away)
            cache.clear()
            with self._closing:
                if self._closed:
                    raise KeyringError(_CLOSED)
                if not member.valid():  # (another call may have renewed it meanwhile)
                    member.renew()  # raises if the store is still unreachable

    def export(self, subjects: Sequence[str], *, create: bool) -> list[bytes | None]:
        """Raw keys, unwrapped from the store on every call (never from the cache)."""
        got = self._fetch(list(dict.fromkeys(subjects)), create=create)
        return [None if (k := got.get(s)) is None else k[0] for s in subjects]

    def missing_error(self, subject: str) -> KeysplitError:
        """Why no key of ``subject`` opens a record: :class:`ShreddedError` if the store
        holds a tombstone for one of its spellings (their tags need one evaluation), also
        when the subject has been used again since (its new key cannot open its old
        records: as :class:`~keysplit.keyring.datakeys.LocalDataKeys` says),
        :class:`IntegrityError` if it has a key, else :class:`NoDataKeyError`."""
        spellings = names.subject_spellings(subject)
        try:
            shredded = self.store.has_tombstone(self.tombstone_tags(spellings))
        except (ClusterError, PermissionDenied, SealedError, ServiceError, OSError):
            if self.store.get_many(spellings):
                return IntegrityError()
            return NoDataKeyError(
                hint="the store has no data key for this subject (shredded or never created; "
                "the cluster could not be asked which)"
            )
        if shredded:
            return ShreddedError(hint="its data key was deleted (shred); its records are gone")
        if self.store.get_many(spellings):
            return IntegrityError()
        return NoDataKeyError(
            hint="no key was ever created for this subject in this cluster's store "
            "(wrong subject, another cluster, or a store restored from an old backup)"
        )

    def _fetch(
        self, subjects: list[str], *, create: bool, tags: bool = False
    ) -> dict[str, tuple[bytes, bytes]]:
        """:meth:`_fetch_keys`, where a failure caused by a concurrent :meth:`close` (the
        store, pool or node connections closed under it) is the :class:`KeyringError` any
        call after the close gets, not whatever the torn-down part raised."""
        try:
            return self._fetch_keys(subjects, create=create, tags=tags)
        except Exception:
            if self._closed:
                raise KeyringError(_CLOSED) from None
            raise

    def _fetch_keys(
        self, subjects: list[str], *, create: bool, tags: bool = False
    ) -> dict[str, tuple[bytes, bytes]]:
        """(raw key, tombstone tag or b"") of each subject that has a key (all, with
        ``create``), from one evaluation; a failed unwrap is re-asked with proofs."""
        rows = self.store.get_many(subjects)
        wanted = [s for s in subjects if s in rows or create]
        if not wanted:
            return {}
        new = [s for s in wanted if s not in rows]
        proved = bool(new)
        keks, marks = self._derive(wanted, proof=proved, tags=tags)
        kek = dict(zip(wanted, keks, strict=True))
        tag = dict(zip(wanted, marks, strict=True)) if tags else {}
        out: dict[str, bytes] = {}
        failed = [s for s in wanted if s in rows and not _unwrap(kek[s], rows[s], out, s)]
        if failed and not proved:
            keks, marks = self._derive(failed, proof=True, tags=tags)
            kek.update(zip(failed, keks, strict=True))
            if tags:
                tag.update(zip(failed, marks, strict=True))
            failed = [s for s in failed if not _unwrap(kek[s], rows[s], out, s)]
        if failed:
            raise IntegrityError(hint="a stored data key fails its check under the cluster's KEK")
        if new:
            self._insert(new, [os.urandom(16) for _ in new], kek, out, fresh=True)
        return {s: (k, tag.get(s, b"")) for s, k in out.items()}

    def _insert(
        self,
        subjects: Sequence[str],
        raws: Sequence[bytes],
        keks: Mapping[str, bytes],
        out: dict[str, bytes],
        *,
        fresh: bool = False,
    ) -> None:
        """Wrap ``raws`` under (proven) ``keks`` and insert them; a row another writer
        stored first wins and is unwrapped instead. ``fresh``: ``raws`` are new keys, and
        an insert whose outcome was lost (:class:`LostInsertError`) is tried again with
        other new ones (the same could bring back a key shredded meanwhile)."""
        from ..hazmat import keywrap  # numpy: not imported by a command that wraps nothing

        for attempt in range(_INSERT_TRIES):
            offered = [
                WrappedKey(s, self.config.kek_version, keywrap.wrap(keks[s], k))
                for s, k in zip(subjects, raws, strict=True)
            ]
            try:
                stored = self.store.insert_many(offered)
                break
            except LostInsertError:
                if attempt == _INSERT_TRIES - 1:
                    raise
                if fresh:
                    raws = [os.urandom(16) for _ in subjects]
        for s, raw, off, got in zip(subjects, raws, offered, stored, strict=True):
            if got == off:
                out[s] = raw
            elif not _unwrap(keks[s], got, out, s):
                raise IntegrityError(hint="a stored data key fails its check")

    def adopt(self, subjects: Sequence[str], raws: Sequence[bytes]) -> int:
        """Store existing data keys (from another cluster: a rotation) under this cluster's
        KEKs, evaluated with proofs. Returns how many were new here; a subject that already
        has a key here must have the same one (else :class:`IntegrityError`)."""
        have = self.store.get_many(subjects)
        todo = [(s, k) for s, k in zip(subjects, raws, strict=True) if s not in have]
        # a key already here (a run before, or a backend that wrote here early) is compared
        # too: one skipped as moved while it differs loses the subject's older records
        out = {
            s: k
            for s, (k, _) in self._fetch([s for s in subjects if s in have], create=False).items()
        }
        given = dict(zip(subjects, raws, strict=True))
        _same_keys(out, given)  # before anything is stored: a refused batch stores none
        if todo:
            subs = [s for s, _ in todo]
            keks = dict(zip(subs, self._keks(subs, proof=True), strict=True))
            self._insert(subs, [k for _, k in todo], keks, out)
            _same_keys(out, given)  # (one another writer stored meanwhile is in out)
        return len(todo)


def _same_keys(have: Mapping[str, bytes], given: Mapping[str, bytes]) -> None:
    """IntegrityError unless each key of ``have`` is the one ``given`` for its subject."""
    if any(not hmac.compare_digest(have[s], given[s]) for s in have):
        raise IntegrityError(
            hint="a subject already has another data key in the new cluster's store "
            "(a backend wrote there before the rotation finished)"
        )


def _unwrap(kek: bytes, row: WrappedKey, out: dict[str, bytes], subject: str) -> bool:
    from ..hazmat import keywrap  # numpy: not imported by a command that unwraps nothing

    try:
        out[subject] = keywrap.unwrap(kek, row.wrapped)
    except (IntegrityError, ValueError):
        return False
    return True


class ClusterClient:
    """The record API of :class:`~keysplit.UnsealedKeyring`, keys from a key cluster.

    ``ClusterClient("DIR", token=...)`` reads ``DIR/cluster.json``; ``region`` (if given)
    must match it, so a backend configured for one region cannot open another's cluster.
    ``ca``/``cert``/``key`` are the TLS files of ``https://`` nodes, as ``keysplit.Client``
    takes them (one CA bundle and one client certificate for every node).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        token: str | None,
        region: str | None = None,
        timeout: float = 30.0,
        cache_max_age: float | None = None,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
    ) -> None:
        self.directory = Path(directory)
        self._opened = (token, timeout, ca, cert, key)  # how to open a successor (shred, hold)
        cfg = read_cluster(self.directory)
        if region is not None and region != cfg.region:
            raise ClusterError(
                f"cluster {cfg.cluster_id} is in region {cfg.region!r}, not {region!r}"
            )
        store = open_store(cfg.store, keyring_id=cfg.cluster_id, home=self.directory)
        self.datakeys = ClusterDataKeys(
            cfg,
            store,
            token=token,
            timeout=timeout,
            cache_max_age=cache_max_age,
            reload=lambda: read_cluster(self.directory),
            tls=TlsFiles(ca, cert, key),
        )
        self.records = Records(self.datakeys)

    def __repr__(self) -> str:
        c = self.datakeys.config
        return (
            f"ClusterClient({str(self.directory)!r}, cluster={c.cluster_id}, region={c.region!r})"
        )

    @property
    def config(self) -> ClusterConfig:
        return self.datakeys.config

    def close(self) -> None:
        """Forget every key, give the lease back, close the connections and the store.
        Final: any later call raises :class:`KeyringError` ("closed"); closing again does
        nothing."""
        self.datakeys.close()

    def __enter__(self) -> ClusterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def encrypt(
        self, plaintext: bytes, *, subject: str, context: Mapping[str, str] | None = None
    ) -> bytes:
        return self.records.encrypt(plaintext, subject=subject, context=context)

    def decrypt(
        self, record: bytes, *, subject: str, context: Mapping[str, str] | None = None
    ) -> bytes:
        return self.records.decrypt(record, subject=subject, context=context)

    def encrypt_many(
        self, subjects: Sequence[str], plaintexts: Sequence[bytes], context: Context = None
    ) -> list[bytes]:
        return self.records.encrypt_many(subjects, plaintexts, context)

    def decrypt_many(
        self, subjects: Sequence[str], records: Sequence[bytes], context: Context = None
    ) -> list[bytes]:
        return self.records.decrypt_many(subjects, records, context)

    def _successor(self) -> ClusterClient | None:
        """The cluster a rotation is moving this one's keys to (``DIR/successor.json``,
        :func:`~keysplit.service.cluster_admin.rotate_cluster`), opened with this client's
        token and TLS files; None if no rotation began. A successor that cannot be opened
        is a :class:`ClusterError`: a shred must not silently miss it."""
        succ = read_successor(self.directory)
        if succ is None:
            return None
        token, timeout, ca, cert, key = self._opened
        where = self.directory / SUCCESSOR_FILE
        try:
            nxt = ClusterClient(
                succ.directory,
                token=token,
                region=self.config.region,
                timeout=timeout,
                ca=ca,
                cert=cert,
                key=key,
            )
        except KeysplitError as exc:
            raise ClusterError(
                f"cluster {self.config.cluster_id} is being rotated to {succ.directory} "
                f"({where}), which cannot be opened: {exc}",
                hint="nothing was changed; make that directory reachable here",
            ) from None
        if nxt.config.cluster_id != succ.cluster_id:
            nxt.close()
            raise ClusterError(
                f"{where} names cluster {succ.cluster_id}, but {succ.directory} holds "
                f"{nxt.config.cluster_id}",
                hint="nothing was changed",
            )
        return nxt

    def _successors(self) -> list[ClusterClient]:
        """Every cluster this one's keys are being rotated to, in order: the successor
        (``DIR/successor.json``), its own successor if it is being rotated on, and so on.
        Successor files that lead back to a cluster already named (two rotations each way)
        are a :class:`ClusterError`, raised before anything is changed."""
        chain: list[ClusterClient] = []
        seen = {self.config.cluster_id}
        cur: ClusterClient = self
        try:
            while (nxt := cur._successor()) is not None:
                chain.append(nxt)
                if nxt.config.cluster_id in seen:
                    raise ClusterError(
                        f"the rotation markers ({SUCCESSOR_FILE}) of cluster "
                        f"{self.config.cluster_id} lead back to cluster {nxt.config.cluster_id} "
                        f"({cur.directory / SUCCESSOR_FILE})",
                        hint="nothing was changed; remove the successor.json of a rotation "
                        "that is finished",
                    )
                seen.add(nxt.config.cluster_id)
                cur = nxt
        except BaseException:
            for c in chain:
                c.close()
            raise
        return chain

    def shred(self, subject: str) -> bool:
        """Delete the subject's wrapped data key: its records die for every node quorum.

        Once a rotation to another cluster began (``keysplit cluster rotate``: this
        directory's ``successor.json``), the subject is shredded in that cluster too, in the
        same call: a key the rotation moved (or moves later) must not survive there. Refused
        before anything is deleted if the successor cannot be opened or holds the subject
        under legal hold (or this cluster does, under another spelling). The successor is
        shredded first; this cluster's tombstones then carry, beside each tag, a mark that
        the shred reached the successor (:func:`reached_tag`), so the rotation does not
        carry it there again onto a key made there afresh since.

        Every spelling deleted with its tombstones in one transaction (refused whole if any
        spelling is under legal hold, :class:`LegalHoldError`); every caching client of the
        store drops the key within the fleet bound (:mod:`keysplit.keyring.fleet`). The tags
        need one evaluation by T nodes with this token; if that fails the deletes go ahead anyway
        under :data:`FLUSH_TAG` (every caching client drops every cached key), since
        erasure must not wait for the nodes. Returns whether a key existed.
        """
        chain = self._successors()
        try:
            spellings = set(names.subject_spellings(subject))
            for nxt in chain:
                held = spellings & set(nxt.datakeys.store.legal_holds())
                if held:
                    raise LegalHoldError(
                        f"subject {min(held)!r} is under legal hold in cluster "
                        f"{nxt.config.cluster_id}, which this one is being rotated to",
                        hint="lift the hold first",
                    )
            held = spellings & set(self.datakeys.store.legal_holds()) if chain else set()
            if held:  # (before the successors are shredded; delete_many checks it again)
                raise LegalHoldError(
                    f"subject {min(held)!r} is under legal hold", hint="lift the hold first"
                )
            # the last successor first: each cluster's tombstones then record that the
            # shred reached the one after it
            existed = False
            ids: list[str | None] = [c.config.cluster_id for c in chain]
            for c, reached in reversed(list(zip([self, *chain], [*ids, None], strict=True))):
                existed = c._shred_here(subject, reached) or existed
            return existed
        finally:
            for nxt in chain:
                nxt.close()

    def _shred_here(self, subject: str, reached: str | None = None) -> bool:
        """Shred in this cluster's store; ``reached``: the successor the subject was just
        shredded in, whose :func:`reached_tag` of each tag the tombstones carry too."""
        dk = self.datakeys
        spellings = names.subject_spellings(subject)
        held = set(spellings).intersection(dk.store.legal_holds()) if len(spellings) > 1 else ()
        if held:
            raise LegalHoldError(
                f"subject {min(held)!r} is under legal hold", hint="lift the hold first"
            )
        present = [s for s in spellings if s in dk.store.get_many(spellings)]
        if not present:
            return False
        # the subject's own (NFC) spelling is always tagged, first, as KeyAdmin.shred does:
        # a later lookup under it finds the subject shredded even when only a legacy
        # spelling had a key, and a key created under it since the lookup above (keys are
        # made under NFC only) is not deleted without a tombstone for caching clients
        tagged = list(dict.fromkeys([spellings[0], *present]))
        try:
            tags = dk.tombstone_tags(tagged)
        except (ClusterError, PermissionDenied, SealedError, ServiceError, OSError):
            tags = [FLUSH_TAG] * len(tagged)
        if reached is not None:
            tags += [reached_tag(reached, t) for t in dict.fromkeys(tags) if t != FLUSH_TAG]
        # every spelling in one transaction that checks each one's hold again
        existed = dk.store.delete_many(spellings, tags)
        dk.evict(spellings)
        return existed

    def set_legal_hold(self, subject: str, hold: bool) -> None:
        """Place or lift a hold under every spelling (in the cluster a rotation is moving
        this one's keys to as well, if one began, and the one that is moving them on)."""
        check_hold(hold)
        chain = self._successors()
        spellings = names.subject_spellings(subject)
        try:
            for c in [*chain, self]:  # each store in one transaction: every spelling or none
                c.datakeys.store.set_legal_holds(spellings, hold)
            # placed again in each successor after this store: a rotation run that read this
            # store's holds before the place and lifts in the successor a hold lifted
            # through a copy without the marker either lifts before this (undone here) or
            # reads this store again after its lift and sees the hold (cluster_admin)
            for c in chain if hold else ():
                c.datakeys.store.set_legal_holds(spellings, True)
        finally:
            for nxt in chain:
                nxt.close()

    def status(self) -> ClusterStatus:
        c = self.config
        return ClusterStatus(
            cluster_id=c.cluster_id,
            region=c.region,
            threshold=c.threshold,
            epoch=c.epoch,
            nodes=tuple(n.name for n in c.nodes),
            excluded=tuple(sorted(self.datakeys.excluded)),
            keys_by_version=self.datakeys.store.count_by_version(),
        )


def reached_tag(successor_id: str, tag: bytes) -> bytes:
    """The tombstone tag that says a shred under ``tag`` reached the successor cluster
    ``successor_id`` in the same call (:meth:`ClusterClient.shred`): a keyed hash of the tag
    (itself a keyed hash of the subject), so it names no subject and matches no cached key.
    :func:`~keysplit.service.cluster_admin.rotate_cluster` carries a shred to the successor
    only while the subject's last tombstone has no such mark after it."""
    return hmac.digest(
        b"keysplit cluster shred reached " + bytes.fromhex(successor_id), tag, "sha256"
    )[:16]


def node_info(
    url: str, *, token: str | None = None, timeout: float = 10.0, tls: TlsFiles = NO_TLS
) -> dict[str, Any]:
    """``GET /v1/cluster/node`` of one node (public: no token needed over the socket)."""
    with tls.client(url, token=token, timeout=timeout) as c:
        doc: Any = wire.loads(c.request("GET", "/v1/cluster/node", auth=False)[0], "node info")
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("keyring_id"), str)
        or not isinstance(doc.get("hpke_public_key"), str)
        or not isinstance(doc.get("clusters", {}), dict)
    ):
        raise ServiceError(f"{url}: malformed node info")
    return doc
