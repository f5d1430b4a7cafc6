"""The key service's request handling, independent of the HTTP stack that carries it.

:class:`KeyService` maps one :class:`Request` (method, path, headers, body, whether the peer
came over the Unix socket) to one :class:`Response`. It is driven from a single thread
(the server's event loop), so the keyring, the unseal state and the token table need no
locks; batches run to completion before the next request is looked at.

Authorization, in order: sealed -> 503 ``SealedError`` (the token list's MAC key needs the
unsealed keyring, so nothing can be authorized while sealed); no or unknown/revoked token
-> 401; operation or a subject outside the token's policy -> 403 (the whole request is
refused, no partial work). Denials, unseal, seal and token revocations are written to the
keyring's audit log as typed events (:mod:`keysplit.audit.events`); shred, hold, rotate and
rewrap are the same :mod:`keysplit.ceremony` calls the CLI makes, under a
:class:`~keysplit.ceremony.TokenGrant` instead of a quorum, so they write the same entries.
"""

from __future__ import annotations

import base64
import binascii
import io
import sys
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import ceremony, names
from ..audit import AuditLog, AuditMark
from ..audit import events as ev
from ..ceremony import TokenGrant
from ..errors import (
    AuditError,
    FormatError,
    IntegrityError,
    KeysplitError,
    PermissionDenied,
    SealedError,
    StoreUnreachableError,
)
from ..keyring import Keyring, UnsealedKeyring
from ..record import OVERHEAD
from . import _wire as wire
from .cluster_node import ADMIN_PATHS as CLUSTER_ADMIN
from .cluster_node import PUBLIC_PATHS as CLUSTER_PUBLIC
from .cluster_node import ClusterNode
from .cluster_recovery import ADMIN_PATHS as RECOVERY_ADMIN
from .cluster_recovery import ClusterRecovery
from .tokens import TokenList, TokenPolicy, file_signature, hash_token, mac_key, token_files
from .unseal import RemoteUnseal, StaleNonceError

__all__ = ["Admission", "Interrupted", "KeyService", "Request", "Response", "Streamed"]

API_VERSION = 1


class Admission:
    """Proof that a :class:`KeyService`'s own :meth:`~KeyService.precheck` checked a
    request's token when it arrived. It carries nothing but its identity: the policy it
    stands for is kept by the service that issued it (a private weak map), so an admission
    made by hand, a policy, or another service's admission in ``Request.admitted`` counts
    for nothing and the request is checked in full; code that builds a :class:`Request`
    cannot spare it its token check, nor widen what a real admission allows."""

    __slots__ = ("__weakref__",)

    def __repr__(self) -> str:
        return "Admission()"


@dataclass(frozen=True)
class Request:
    """One request; its repr leaves out the headers (the bearer token) and the body
    (plaintexts, shares, data keys)."""

    method: str
    path: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(default=b"", repr=False)
    local: bool = False
    """True when the peer came over the Unix socket (filesystem permissions vouch for it)."""
    received: io.BytesIO | None = field(default=None, repr=False)
    """The body of a frame-transport batch as it was received (``body`` is then empty): a
    BytesIO over the one buffer the socket was read into, which the batch's frame is
    decoded from item by item, so a 1 MB body is never copied whole (the copy and its
    allocation were ~100 us of a served batch's CPU, benchmarks/README.md)."""
    admitted: Admission | None = field(default=None, repr=False, compare=False)
    """What :meth:`KeyService.precheck` gave when the request's token arrived (before its
    body was read): the request's one token check. The operation's own check (its route,
    its subjects) then uses its policy instead of checking the token again (two ``stat``
    calls and a SHA-256). The servers set it from the request's own precheck; the service
    honours only an :class:`Admission` it issued itself, anything else (None, a policy,
    another service's admission) is checked there in full."""


@dataclass(frozen=True)
class Response:
    """One answer; its repr leaves out the body (data keys, plaintexts)."""

    status: int
    body: bytes = field(repr=False)
    content_type: str = wire.JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)


STREAM_PIECE = 256 << 10
"""Bytes of records sealed per piece of a streamed ``encrypt`` answer (:class:`Streamed`);
an answer of at most one piece is not streamed. A 1,000-record answer goes out in five
pieces: with 64 KiB pieces (17) the client's wake-ups ate most of the overlap
(benchmarks/ab_service_stream.py, figures in benchmarks/README.md)."""


class Interrupted(Exception):
    """The keys may have changed while a :class:`Streamed` answer was being sealed: no
    more of it may go out, and its connection is dropped."""


@dataclass(frozen=True)
class Streamed:
    """A 200 batch answer whose records are sealed while it is written (``encrypt``).

    Its size is known before any record exists (a record is its plaintext plus
    ``OVERHEAD`` bytes), so the HTTP head and the frame's length table go out first and
    the client cuts the first records while the last are sealed. Each ``next(pieces)``
    seals the next piece (the first one carries the frame's head); it raises
    :class:`Interrupted` if any request was handled, or the service sealed, unsealed or
    reloaded its keyring, since the keys were resolved: a record sealed under a key shredded
    meanwhile never leaves. The server writes the pieces without an event-loop turn in
    between (server.py), so on a healthy connection that never happens."""

    length: int
    pieces: Iterator[bytearray]
    content_type: str = wire.BATCH_TYPE
    headers: tuple[tuple[str, str], ...] = ((wire.STREAMED, "1"),)
    """Tells ``keysplit.Client`` to cut the records as they arrive (:func:`~._wire.read_frame`);
    it reads a whole answer at once, as before."""


def _json(status: int, obj: Any) -> Response:
    return Response(status, wire.dumps(obj))


class _Denied(Exception):
    def __init__(self, status: int, exc: KeysplitError) -> None:
        super().__init__(str(exc))
        self.status = status
        self.exc = exc


_STATUS = {
    "SealedError": 503,
    "StoreUnreachableError": 503,  # try again later (a proxy may retry elsewhere)
    "PermissionDenied": 403,
    "StaleNonceError": 409,
    "LegalHoldError": 409,
    "IntegrityError": 400,
    "ShreddedError": 410,
    "NoDataKeyError": 404,
    # the log cannot take the entry (torn last line, bad MAC): the service changed nothing
    # and cannot until an operator repairs the log; not the client's fault
    "AuditError": 500,
}


def _status_for(exc: BaseException) -> int:
    for c in type(exc).__mro__:
        if c.__name__ in _STATUS:
            return _STATUS[c.__name__]
    return 400


def _subjects(obj: Any, what: str = "subjects") -> list[str]:
    """``obj`` as a JSON request's list of subjects; a wrong item is named by its index (a
    caller with 10,000 subjects needs to know which one)."""
    if not isinstance(obj, list):
        raise FormatError(f"'{what}' must be a list of strings")
    if not all(isinstance(s, str) for s in obj):
        i, bad = next((i, s) for i, s in enumerate(obj) if not isinstance(s, str))
        kind = "null" if bad is None else type(bad).__name__
        raise FormatError(
            f"'{what}'[{i}] must be a string, not {kind}"
            + (": subjects cannot be null" if bad is None else "")
        )
    if len(obj) > wire.MAX_ITEMS:
        raise FormatError(f"at most {wire.MAX_ITEMS} items per request")
    return obj


def _context(header: Mapping[str, Any], n: int) -> Any:
    if "contexts" in header:
        ctx = header["contexts"]
        if not isinstance(ctx, list) or len(ctx) != n:
            raise FormatError("'contexts' must be a list with one entry per item")
        return ctx
    return header.get("context")


def _ctx_at(context: Any, i: int) -> Any:
    return context[i] if isinstance(context, list) else context


class KeyService:
    """A sealed-until-unsealed key service over one keyring directory."""

    def __init__(
        self,
        directory: str | Path,
        *,
        unseal_timeout: float = 600.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.remote = RemoteUnseal(Keyring.open(self.directory), timeout=unseal_timeout)
        self._kr: UnsealedKeyring | None = None
        self._audit_log: AuditLog | None = None
        self._mac_key: bytes | None = None
        self._tokens: dict[str, TokenPolicy] = {}
        # the policy of each Admission precheck issued, while a request holds it
        self._admissions: weakref.WeakKeyDictionary[Admission, TokenPolicy] = (
            weakref.WeakKeyDictionary()
        )
        self._token_sig: tuple[tuple[int, int, int], ...] | None = None
        self._token_files = token_files(self.directory)  # stat'ed before every token check
        self._serials: tuple[AuditMark | None, int] = (None, 0)
        """(the audit log read so far, the newest token-list serial in it), for
        :meth:`_check_not_rolled_back`: a list change reads only the entries since."""
        self._logged_nonce = ""
        self._changes = 0
        """Bumped by every request handled and every seal, unseal and reload: a
        :class:`Streamed` answer goes on only while it is unchanged."""
        self.worker = (0, 1)
        """(index, count) of this process among the service's worker processes (count: as
        configured, ``keysplit serve --workers``)."""
        self.workers_live = 1
        """How many of those processes are still alive (the leader's count, told to the
        workers): a worker that died counts no more until its replacement runs (fleet.py)."""
        self.workers_serving = 1
        """How many of the live processes hold the keys and get connections (the leader's
        count, told to the workers, as ``workers_live``): a worker that could not open the
        keyring is alive but does not serve. ``/v1/status`` says 0 while sealed."""
        self._log = log or (lambda m: print(f"keysplit serve: {m}", file=sys.stderr, flush=True))
        self._routes: dict[tuple[str, str], Callable[[Request], Response]] = {
            ("GET", "/v1/status"): self._status,
            ("GET", "/v1/unseal"): self._unseal_offer,
            ("POST", "/v1/unseal"): self._unseal_submit,
            ("POST", "/v1/unseal/reset"): self._unseal_reset,
            ("POST", "/v1/seal"): self._seal,
            ("GET", "/v1/keyring"): self._keyring_status,
            ("POST", "/v1/encrypt"): self._encrypt,
            ("POST", "/v1/decrypt"): self._decrypt,
            ("POST", "/v1/datakey"): self._datakey,
            ("POST", "/v1/shred"): self._shred,
            ("POST", "/v1/hold"): self._hold,
            ("POST", "/v1/rotate"): self._rotate,
            ("POST", "/v1/rewrap"): self._rewrap,
        }
        self.cluster = ClusterNode(self, Response)
        self._routes.update(self.cluster.routes())
        self.recovery = ClusterRecovery(self.cluster)
        self._routes.update(self.recovery.routes())

    # -- state --------------------------------------------------------------------------------

    @property
    def keyring(self) -> Keyring:
        return self.remote.keyring

    @property
    def sealed(self) -> bool:
        return self._kr is None

    def seal(self, reason: str, by: str | None = None, *, audit: bool = True) -> bool:
        """Drop every key (audited unless ``audit=False``: the other processes of a
        multi-process service, whose seal one entry records). True if it was unsealed."""
        kr = self._kr
        self._changes += 1
        self.remote.reset()
        if kr is None:
            return False
        if audit:
            self._audit(ev.ServiceSeal(reason=reason, by=by))
        self.cluster.forget()
        self.recovery.forget()
        self._kr = None
        self._audit_log = None
        self._mac_key = None
        self._tokens = {}
        self._token_sig = None
        kr.close()
        self._log(f"sealed ({reason})")
        return True

    def close(self) -> None:
        self.seal("shutdown")

    def _audit(self, event: ev.Event) -> None:
        """Record a service event (not a ceremony's: those record their own entries)."""
        log = self._audit_log
        if log is None:
            return
        try:
            ev.record(log, event)
        except (KeysplitError, OSError) as exc:  # never take the service down over the log
            self._log(f"audit append failed: {exc}")

    def _grant(self, policy: TokenPolicy) -> TokenGrant:
        kr = self._kr
        assert kr is not None
        return TokenGrant(kr, policy)

    def _unsealed(
        self, kr: UnsealedKeyring, custodians: list[str], by: Sequence[ev.Principal] = ()
    ) -> None:
        kr.set_role("serve")  # how this process shows in the fleet's lease list
        self._changes += 1
        self._kr = kr
        self._mac_key = mac_key(kr.audit_key(), self.keyring.keyring_id)
        self._audit_log = kr.audit_log()
        self._audit(ev.ServiceUnseal(generation=self.keyring.meta.generation, authorized_by=by))
        self.reload_tokens(force=True)
        self._log(f"unsealed by {', '.join(custodians)}; {len(self._tokens)} active tokens")

    @property
    def unsealed_keyring(self) -> UnsealedKeyring | None:
        """The keyring being served (None while sealed). Secret-holding."""
        return self._kr

    def adopt(self, kr: UnsealedKeyring) -> None:
        """Serve ``kr``, opened elsewhere from this service's unseal (a worker process of
        ``keysplit serve --workers``, or a reload after a rotate/shred in another worker).
        Not audited: the unseal that produced the master key was. Replaces and closes a
        keyring already held."""
        if kr.keyring.keyring_id != self.keyring.keyring_id:
            raise KeysplitError("adopt: the keyring belongs to another service")
        kr.set_role("serve")  # every process of the service shows in the lease list
        self._changes += 1
        old, self._kr = self._kr, kr
        self._mac_key = mac_key(kr.audit_key(), self.keyring.keyring_id)
        self._audit_log = kr.audit_log()
        self.reload_tokens(force=True)
        if old is not None and old is not kr:
            old.close()

    def reload_tokens(self, *, force: bool = False) -> None:
        """Re-read the token list if it changed (SIGHUP forces it). Fails closed."""
        if self._mac_key is None:
            return
        sig = file_signature(self._token_files)
        if not force and sig == self._token_sig:
            return
        try:
            tl = TokenList.read(self.directory, self.keyring.keyring_id)
            tl.verify(self._mac_key)
            self._check_not_rolled_back(tl)
            token_names = {t.id: t.name for t in tl.tokens}
            for r in tl.fold_revocations(self._mac_key):
                self._audit(ev.TokenRevoke(token_names.get(r, "unknown id"), r, tl.serial))
            self._tokens = tl.active()
        except (KeysplitError, OSError) as exc:
            self._tokens = {}
            self._log(f"token list refused, no token is accepted: {exc}")
            self._audit(ev.TokenListInvalid(error=str(exc)))
        self._token_sig = file_signature(self._token_files)

    def _check_not_rolled_back(self, tl: TokenList) -> None:
        """Refuse a token list older than the newest one the audit log recorded.

        Every write of the list is audited with its ``list_serial``; an authentic but older
        list (say, from before a revocation was folded in) would revive revoked tokens.
        The newest serial is kept with the place in the log read so far, so each change
        of the list reads only the entries appended since; a log that no longer has that
        place (replaced, truncated, rewritten) is read whole again.
        """
        log = self._audit_log
        if log is None:
            return
        mark, newest = self._serials
        entries, mark, since = log.entries_since(mark)
        if not since:
            newest = 0
        for e in entries:
            if e.event in ("token-create", "token-revoke"):
                v = e.data.get("list_serial")
                if isinstance(v, int) and v > newest:
                    newest = v
        self._serials = (mark, newest)
        if tl.serial < newest:
            raise IntegrityError(
                f"token list serial {tl.serial} is older than serial {newest} in the audit log",
                hint="the token list was rolled back to an earlier copy",
            )

    # -- dispatch -----------------------------------------------------------------------------

    def handle(self, req: Request) -> Response:
        r = self._run(req, self._routes.get((req.method, req.path)))
        assert isinstance(r, Response)  # only respond() routes to a Streamed answer
        return r

    def respond(self, req: Request) -> Response | Streamed:
        """:meth:`handle`, except that an ``encrypt`` batch of more than one
        ``STREAM_PIECE`` whose keys all resolve comes back as a :class:`Streamed` answer
        (what the server does; :meth:`handle` always builds the whole answer)."""
        if req.method == "POST" and req.path == "/v1/encrypt":
            return self._run(req, lambda r: self._records(r, "encrypt", stream=True))
        if req.method == "POST" and req.path == "/v1/decrypt":
            # only for a client that retries a cut answer whole (the request's header):
            # a record failing mid-answer can only cut it, not report at its index
            ok = req.headers.get(wire.STREAM_OK.lower()) == "1"
            return self._run(req, lambda r: self._records(r, "decrypt", stream=ok))
        return self.handle(req)

    def _run(
        self, req: Request, route: Callable[[Request], Response | Streamed] | None
    ) -> Response | Streamed:
        self._changes += 1
        if route is None:
            known = any(p == req.path for _, p in self._routes)
            status = 405 if known else 404
            msg = "method not allowed" if known else f"no endpoint {req.path}"
            return _json(status, {"error": {"type": "KeysplitError", "message": msg}})
        try:
            return route(req)
        except _Denied as d:
            return Response(d.status, wire.error_body(d.exc))
        except (KeysplitError, ValueError, TypeError) as exc:
            if isinstance(exc, AuditError):  # the operator must act: say so in the log
                self._log(f"refused {req.method} {req.path}: {exc}")
            return Response(_status_for(exc), wire.error_body(exc))
        except Exception as exc:  # a bug or an I/O failure: JSON 500, no traceback to peers
            self._log(f"internal error on {req.method} {req.path}: {type(exc).__name__}")
            return Response(500, wire.error_body(exc))

    _PUBLIC = frozenset({"/v1/status", "/v1/unseal", "/v1/unseal/reset"}) | CLUSTER_PUBLIC

    def route_kind(self, method: str, path: str) -> str | None:
        """``"public"`` (no token: small bodies only), ``"token"`` (authorized by
        :meth:`precheck` before its body is read) or None (no such route: the body is
        never read). The server sizes its body cap from this."""
        if (method, path) not in self._routes:
            return None
        return "public" if path in self._PUBLIC or path == "/v1/seal" else "token"

    def precheck(self, req: Request) -> Response | Admission | None:
        """Refuse a request from its headers alone (sealed, no or unknown token), so an
        unauthenticated peer cannot make the server read a large body first. A token that
        checks out gives an :class:`Admission` (its policy kept here, honoured here only):
        the server passes it on as the request's :attr:`Request.admitted`, so the token is
        checked once per request, here (a token revoked or expired after this point ends
        the requests that arrive after it, not this one). None: the route needs no token
        here."""
        if req.path in self._PUBLIC or (req.method, req.path) not in self._routes:
            return None
        local_seal = req.local and "authorization" not in req.headers
        if req.path == "/v1/seal" and (self.sealed or local_seal):
            return None
        if (req.path in CLUSTER_ADMIN or req.path in RECOVERY_ADMIN) and local_seal:
            return None  # the Unix-socket peer administers the node's cluster membership
        try:  # a denial is audited under the route's name ('encrypt', 'cluster/eval')
            pol = self._authorize(req, None, route=req.path.removeprefix("/v1/"))
        except _Denied as d:
            return Response(d.status, wire.error_body(d.exc))
        adm = Admission()
        self._admissions[adm] = pol  # gone with the request that holds it
        return adm

    def _authorize(
        self, req: Request, op: str | None, subjects: Sequence[str] = (), *, route: str = "status"
    ) -> TokenPolicy:
        """The token's policy, or :class:`_Denied`; ``op=None`` accepts any valid token (a
        denial is then audited as operation ``route``)."""
        kr = self._kr
        if kr is None:
            raise _Denied(
                503,
                SealedError(
                    "the key service is sealed",
                    hint="custodians run: keysplit unseal --server URL (with their own share)",
                ),
            )
        adm = req.admitted  # checked when its token arrived (precheck): not again
        pol = self._admissions.get(adm) if type(adm) is Admission else None
        if pol is None:  # none, or not issued here (a hand-built Request): checked in full
            pol = self._token_policy(req, op or route)
        if op is None:
            return pol
        try:
            pol.check(op, subjects)
        except PermissionDenied as exc:
            self._audit(ev.TokenDenied(op, pol.name, str(exc)))
            raise _Denied(403, exc) from None
        return pol

    def _token_policy(self, req: Request, what: str) -> TokenPolicy:
        """The policy of the request's bearer token (the token list re-read if its files
        changed), or :class:`_Denied`: none, unknown, revoked or expired (audited as
        operation ``what``)."""
        self.reload_tokens()
        auth = req.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            self._audit(ev.TokenDenied(what, None, "no token"))
            raise _Denied(401, PermissionDenied("a token is required (Authorization: Bearer)"))
        pol = self._tokens.get(hash_token(token.strip()))
        if pol is None:
            self._audit(ev.TokenDenied(what, None, "unknown or revoked token"))
            raise _Denied(401, PermissionDenied("unknown or revoked token"))
        if pol.expires and pol.expired():
            self._audit(ev.TokenDenied(what, pol.name, "token expired"))
            raise _Denied(
                401,
                PermissionDenied(
                    f"token {pol.name!r} expired at {pol.expires}",
                    hint="a quorum creates a new one: keysplit token create",
                ),
            )
        return pol

    # -- public endpoints ---------------------------------------------------------------------

    def status_dict(self) -> dict[str, Any]:
        # unsealed: the keyring as served, authenticated by the master key every process
        # got from the leader's unseal, so each process says the same (the file may have
        # been rekeyed since: a process that started later read the new generation there);
        # sealed: the file as the next unseal attempt reads it (or the running one did)
        kr = self._kr
        m = (kr.keyring if kr is not None else self.remote.refresh()).meta
        from .. import __version__

        out = {
            "sealed": self.sealed,
            "keyring_id": m.keyring_id,
            "generation": m.generation,
            "threshold": m.threshold,
            "custodians": len(m.custodians),
            "progress": self.remote.progress() if self.sealed else None,
            "version": __version__,
            "api": API_VERSION,
            "worker": self.worker[0],
            "workers": self.workers_live,
            "workers_configured": self.worker[1],
            "workers_serving": 0 if self.sealed else self.workers_serving,
        }
        if self.sealed:
            out["verification"] = self._verification()
        return out

    def _verification(self) -> dict[str, Any] | None:
        """A ``--verify`` generation's public state while sealed: who must still prove
        possession before the keyring unseals (init) or its rekey switches."""
        try:
            v = self.keyring.verification()
        except (KeysplitError, OSError) as exc:
            return {"error": str(exc)}
        if v is None:
            return None
        st = v.status
        return {
            "kind": v.kind,
            "generation": v.generation,
            "proven": list(st.proven),
            "missing": list(st.missing),
            "completed": st.completed,
        }

    def _status(self, req: Request) -> Response:
        return _json(200, self.status_dict())

    def _unseal_offer(self, req: Request) -> Response:
        if not self.sealed:
            return _json(200, {"sealed": False, "keyring_id": self.keyring.keyring_id})
        offer = self.remote.offer()
        offer["sealed"] = True
        if offer["nonce"] != self._logged_nonce:
            self._logged_nonce = offer["nonce"]
            self._log(f"new unseal attempt, key {offer['fingerprint']}")
        return _json(200, offer)

    def _unseal_submit(self, req: Request) -> Response:
        doc = wire.loads(req.body)
        if not isinstance(doc, dict):
            raise FormatError("unseal request must be a JSON object")
        try:
            nonce = bytes.fromhex(str(doc.get("nonce", "")))
            sealed = base64.b64decode(str(doc.get("sealed_share", "")), validate=True)
        except (ValueError, binascii.Error):
            raise FormatError("unseal request: bad nonce or sealed_share encoding") from None
        if not self.sealed:
            raise StaleNonceError("the key service is already unsealed")
        try:
            progress, opened = self.remote.submit(nonce, sealed)
        except KeysplitError as exc:
            self._log(f"unseal share refused: {exc}")
            raise
        self._log(f"unseal progress {progress['have']}/{progress['need']}")
        if opened is not None:
            self._unsealed(opened, list(progress["custodians"]), self.remote.unsealed_by)
        return _json(200, {"sealed": self.sealed, "progress": progress})

    def _unseal_reset(self, req: Request) -> Response:
        had = self.remote.reset()
        if had:
            self._log("unseal progress reset")
        return _json(200, {"reset": had, "sealed": self.sealed})

    def _seal(self, req: Request) -> Response:
        if self.sealed:
            return _json(200, {"sealed": True, "was_unsealed": False})
        by = "unix socket peer"
        if not req.local or req.headers.get("authorization"):
            by = f"token {self._authorize(req, 'seal').name}"
        self.seal("seal request", by=by)
        return _json(200, {"sealed": True, "was_unsealed": True})

    # -- authenticated endpoints --------------------------------------------------------------

    def _keyring_status(self, req: Request) -> Response:
        self._authorize(req, None)
        kr = self._kr
        assert kr is not None
        return _json(200, kr.status().as_dict())

    def _frame(self, req: Request) -> tuple[dict[str, Any], list[bytes], list[str]]:
        body = req.body if req.received is None else req.received
        header, subjects, items = wire.decode_frame(body, "request", present=True)
        return header, items, subjects  # type: ignore[return-value]

    def _encrypt(self, req: Request) -> Response:
        r = self._records(req, "encrypt")
        assert isinstance(r, Response)
        return r

    def _decrypt(self, req: Request) -> Response:
        r = self._records(req, "decrypt")
        assert isinstance(r, Response)
        return r

    def _records(self, req: Request, op: str, *, stream: bool = False) -> Response | Streamed:
        """Batch encrypt/decrypt: one fast batch call; if it fails, item by item so each
        failure is reported at its index and the others still succeed. ``stream``: a
        large ``encrypt`` whose keys all resolve is answered :class:`Streamed`."""
        if self.sealed:
            self._authorize(req, op)
        # items as bytes: a BytesIO read each (cheaper than a memoryview per item, which
        # the AEAD call then costs more to take)
        header, items, subjects = self._frame(req)
        self._authorize(req, op, subjects)
        kr = self._kr
        assert kr is not None
        ctx = _context(header, len(items))
        many, one = (
            (kr.encrypt_many, kr.encrypt) if op == "encrypt" else (kr.decrypt_many, kr.decrypt)
        )
        if stream:  # a record is its plaintext + OVERHEAD bytes, a plaintext its record -
            grow = OVERHEAD if op == "encrypt" else -OVERHEAD
            lengths = [len(x) + grow for x in items]
            size = sum(lengths)
            if size > STREAM_PIECE:
                try:  # what can fail fails here: then whole, below (each failure at its index)
                    if op == "encrypt":
                        seal = kr.records.sealer(subjects, items, ctx)
                        return self._streamed(kr, seal, lengths, size, op)
                    open_ = kr.records.opener(subjects, items, ctx)
                    return self._streamed(kr, open_, lengths, size, op, eager=True)
                except StoreUnreachableError:
                    raise  # the store's, not an item's: 503 at once (never item by item)
                except (KeysplitError, ValueError, TypeError):
                    pass
        try:
            out: list[bytes | None] = list(many(subjects, items, ctx))
            return Response(200, wire.encode_frame({}, out), wire.BATCH_TYPE)
        except StoreUnreachableError:
            raise  # each item would wait the store's bound again
        except (KeysplitError, ValueError, TypeError):
            pass
        errs: dict[str, Any] = {}
        out = []
        for i, (s, data) in enumerate(zip(subjects, items, strict=True)):
            try:
                out.append(one(data, subject=s, context=_ctx_at(ctx, i)))
            except StoreUnreachableError:
                raise
            except (KeysplitError, ValueError, TypeError) as exc:
                out.append(None)
                errs[str(i)] = wire.error_dict(exc)
        return self._batch_response(out, errs)

    def _streamed(
        self,
        kr: UnsealedKeyring,
        seal: Callable[[int, int, bytes], bytearray],
        lengths: list[int],
        size: int,
        op: str,
        *,
        eager: bool = False,
    ) -> Streamed:
        """The answer to a batch whose keys are resolved (``seal``: records sealed, or
        opened, piece by piece) made as it is written, each piece only while nothing
        changed (:class:`Streamed`); ``lengths`` are its items', ``size`` their sum.
        ``eager`` makes the first piece now, so that its failure (a decrypt's tag) is
        raised here, before anything is sent: a cut is then always after the HTTP head,
        which tells the client to ask again whole. A later piece failing for any other
        reason than a record (a bug, memory) is logged: the server only drops the
        connection, and the client sees nothing but a short answer."""
        head = wire.encode_head({}, lengths)
        n = len(lengths)
        per = max(1, STREAM_PIECE * n // size)
        mark = self._changes
        first = [seal(0, min(n, per), head)] if eager else []

        def piece(a: int, lead: bytes) -> bytearray:
            try:
                return seal(a, min(n, a + per), lead)
            except (KeysplitError, ValueError, TypeError):
                raise  # a record that does not open: the client asks again, whole
            except Exception as exc:
                self._log(f"internal error in a streamed {op} answer: {type(exc).__name__}")
                raise

        def pieces() -> Iterator[bytearray]:
            yield from first
            lead = b"" if first else head
            for a in range(per if first else 0, n, per):
                if self._kr is not kr or self._changes != mark:
                    raise Interrupted("the keyring changed while an answer was being sealed")
                yield piece(a, lead)
                lead = b""

        return Streamed(len(head) + size, pieces())

    def _batch_response(self, out: list[bytes | None], errs: dict[str, Any]) -> Response:
        return Response(200, wire.encode_frame({"errors": errs}, out), wire.BATCH_TYPE)

    def _json_subjects(self, req: Request, op: str) -> tuple[dict[str, Any], list[str]]:
        if self.sealed:
            self._authorize(req, op)
        doc = wire.loads(req.body)
        if not isinstance(doc, dict):
            raise FormatError("request body must be a JSON object")
        subjects = _subjects(doc.get("subjects"))
        self._authorize(req, op, subjects)
        return doc, subjects

    def _valid(self, subjects: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
        ok: list[str] = []
        errs: dict[str, Any] = {}
        for i, s in enumerate(subjects):
            try:
                names.check_subject(s)
                ok.append(s)
            except (KeysplitError, ValueError, TypeError) as exc:
                errs[str(i)] = wire.error_dict(exc)
        return ok, errs

    def _datakey(self, req: Request) -> Response:
        """Raw data keys; the request is a frame of subjects (no payloads), header
        ``{"create": bool}``, so 10,000 subjects never pass through the JSON parser."""
        if self.sealed:
            self._authorize(req, "datakey")
        header, subjects, _ = wire.decode_frame(req.body, "request", present=False)
        create = header.get("create", True)
        if not isinstance(create, bool):
            raise FormatError("'create' must be true or false")
        self._authorize(req, "datakey", subjects)
        kr = self._kr
        assert kr is not None
        try:
            raws = kr.records.export(subjects, create=create)
            errs: dict[str, Any] = {}
        except StoreUnreachableError:
            raise  # 503, without asking the store again
        except (KeysplitError, ValueError, TypeError):
            good, errs = self._valid(subjects)  # name the bad subjects, serve the others
            found = dict(zip(good, kr.records.export(good, create=create), strict=True))
            raws = [None if str(i) in errs else found.get(s) for i, s in enumerate(subjects)]
        for i, k in enumerate(raws):
            if k is None and str(i) not in errs:  # shredded, or never had one: say which
                errs[str(i)] = wire.error_dict(kr.records.missing(subjects[i]))
        return self._batch_response(raws, errs)

    @staticmethod
    def _items(results: Sequence[Any]) -> list[Any]:
        return [
            {"error": wire.error_dict(r)} if isinstance(r, BaseException) else {"ok": r}
            for r in results
        ]

    def _shred(self, req: Request) -> Response:
        _, subjects = self._json_subjects(req, "shred")
        pol = self._authorize(req, "shred", subjects)
        done = ceremony.shred_many(self.keyring, self._grant(pol), subjects)
        return _json(200, {"items": self._items(done.value)})

    def _hold(self, req: Request) -> Response:
        doc, subjects = self._json_subjects(req, "hold")
        hold = doc.get("hold", True)
        if not isinstance(hold, bool):
            raise FormatError("'hold' must be true or false")
        pol = self._authorize(req, "hold", subjects)
        done = ceremony.hold_many(self.keyring, self._grant(pol), subjects, hold)
        return _json(200, {"items": self._items(done.value)})

    def _rotate(self, req: Request) -> Response:
        pol = self._authorize(req, "rotate")
        done = ceremony.rotate(self.keyring, self._grant(pol))
        return _json(200, {"kek_version": done.value})

    def _rewrap(self, req: Request) -> Response:
        pol = self._authorize(req, "rewrap")
        doc = wire.loads(req.body) if req.body else {}
        if not isinstance(doc, dict):
            raise FormatError("rewrap request must be a JSON object")
        batch = wire.int_field(doc, "batch_size", 10_000, 1, wire.MAX_REWRAP_BATCH)
        r = ceremony.rewrap(self.keyring, self._grant(pol), batch_size=batch).value
        return _json(
            200,
            {
                "rewrapped": r.rewrapped,
                "kek_version": r.kek_version,
                "remaining": r.remaining,
                "corrupt": list(r.corrupt),
            },
        )
