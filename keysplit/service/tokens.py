"""Key-service tokens: minted with a quorum, stored only as hashes, MACed against tampering.

A token is 256 random bits shown once (``kst1_`` + 43 base64url characters). The keyring
directory keeps ``service-tokens.json``: for each token its id, name, SHA-256, allowed
operations and subject prefix, the whole list MACed with HMAC-SHA256 under a key derived
(HKDF, own label) from :meth:`UnsealedKeyring.audit_key`, so only a quorum can add a token
and an edited list (a widened policy, an added hash) is refused by the service.

Revocation must not need a quorum (a leaked token is an emergency), but without the
quorum nobody can re-MAC the list. So ``revoke`` appends the token id to
``service-tokens.revoked`` (plain, append-only). Adding a line there can only *deny*
service, so it is trusted without a MAC; the unsealed service (or the next quorum
``create``) folds it into the MACed ``revoked`` list, after which deleting the line no
longer resurrects the token.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import math
import os
import re
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .. import _json, names
from .._fileio import atomic_write, durable_append, fsync_dir, read_bounded
from ..errors import FormatError, IntegrityError, KeysplitError, PermissionDenied

__all__ = [
    "OPERATIONS",
    "REVOKED_FILE",
    "TOKENS_FILE",
    "TokenList",
    "TokenPolicy",
    "check_allow",
    "check_expires_in",
    "check_prefix",
    "check_token_name",
    "hash_token",
    "is_token_text",
    "mac_key",
    "new_token",
]

TOKENS_FILE = "service-tokens.json"
REVOKED_FILE = "service-tokens.revoked"
OPERATIONS = (
    "encrypt",
    "decrypt",
    "datakey",
    "shred",
    "hold",
    "rewrap",
    "rotate",
    "seal",
    "cluster",
)
"""What a token may be allowed to do (``datakey`` hands out plaintext data keys, so it
implies the power to encrypt and decrypt that prefix's records locally; on a cluster node
it allows DPRF evaluations, the node's part of a data key; ``cluster`` lets a peer over
TCP run a node's DKG and refresh, which the Unix-socket peer may do without a token)."""
_PREFIX = "kst1_"
_TOKEN_RE = re.compile(r"kst1_[A-Za-z0-9_-]{43}")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ID_RE = re.compile(r"[0-9a-f]{16}")
_MAC_INFO = b"keysplit service token list mac v1\x00"
_FORMAT = "keysplit-service-tokens"
_MAX_FILE = 8 << 20
_TIME = "%Y-%m-%dT%H:%M:%SZ"
MAX_EXPIRES_IN = 100 * 366 * 86_400
"""The longest expiry a token can be given (seconds): a century, past which none is needed."""


def _now() -> datetime:
    return datetime.now(UTC)


def _parse_time(text: str) -> datetime:
    """A token list's UTC time (``YYYY-MM-DDTHH:MM:SSZ``); ValueError otherwise."""
    if not isinstance(text, str) or len(text) != 20:
        raise ValueError("not a UTC time")
    return datetime.strptime(text, _TIME).replace(tzinfo=UTC)


def check_expires_in(seconds: float | None) -> float | None:
    """Seconds until a new token expires (None: never), as ``create``/``add`` accept them:
    a positive, finite number up to :data:`MAX_EXPIRES_IN` (``ValueError`` otherwise)."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError("expires_in must be a number of seconds")
    if not 1 <= seconds <= MAX_EXPIRES_IN:  # NaN fails this too
        raise ValueError(f"a token's expiry must be from 1 second to {MAX_EXPIRES_IN:,} seconds")
    return float(seconds)


def new_token() -> str:
    """A fresh 256-bit token in its text form."""
    return _PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def hash_token(token: str) -> str:
    """SHA-256 (hex) of a token: the only form the keyring directory keeps.

    A plain hash is enough: tokens carry 256 random bits, so there is nothing to brute-force.
    """
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def is_token_text(token: str) -> bool:
    return bool(_TOKEN_RE.fullmatch(token))


def mac_key(audit_key: bytes, keyring_id: str) -> bytes:
    """The token-list MAC key: only an unsealed keyring can derive it."""
    return HKDF(hashes.SHA256(), 32, salt=None, info=_MAC_INFO + bytes.fromhex(keyring_id)).derive(
        audit_key
    )


@dataclass(frozen=True)
class TokenPolicy:
    """What one token may do: operations, and subjects starting with ``subject_prefix``."""

    id: str
    name: str
    sha256: str
    allow: tuple[str, ...]
    subject_prefix: str
    created: str = ""
    created_by: tuple[str, ...] = ()
    region: str = ""
    """A cluster region the token is pinned to ('' = none); a node of another region
    refuses it (:mod:`keysplit.service.cluster_node`)."""
    expires: str = ""
    """When the service stops accepting the token (UTC, ``YYYY-MM-DDTHH:MM:SSZ``, set at
    ``create``/``add``); '' = never. Lists written before expiries have none."""

    def permits(self, operation: str) -> bool:
        return operation in self.allow

    def expired(self, now: datetime | None = None) -> bool:
        """Whether the token's expiry has passed (never, without one)."""
        if not self.expires:
            return False
        return (now or _now()) >= _parse_time(self.expires)

    def covers(self, subject: str) -> bool:
        """Whether ``subject`` is in this token's scope, judged on the canonical spelling
        the keyring uses (:func:`keysplit.names.check_subject`, the spelling records are
        written and looked up under first; every other spelling the keyring may touch for
        this subject canonicalizes to the same text). A raw comparison let ``acme`` +
        U+0301 ("acmé" in NFD) pass a token scoped to ``acme`` and reach tenant ``acmé/``.
        A subject the keyring would refuse is covered only by the empty prefix (the
        operation then reports it)."""
        prefix = self.subject_prefix
        if not prefix:
            return True
        try:
            canonical = names.check_subject(subject)
        except (TypeError, ValueError):
            return False
        return canonical.startswith(names.canonical_prefix(prefix))

    def check(self, operation: str, subjects: Iterable[str] = ()) -> None:
        """Raise :class:`PermissionDenied` unless every subject is in policy (:meth:`covers`).

        The one policy point of the key service: every endpoint that names subjects calls
        it with the subjects of the request before any key is touched.
        """
        if operation not in self.allow:
            raise PermissionDenied(f"token {self.name!r} is not allowed to {operation}")
        if not self.subject_prefix:
            return  # every subject is covered: no walk over a batch's 10^4 subjects
        for s in subjects:
            if not self.covers(s):
                raise PermissionDenied(
                    f"token {self.name!r} may only use subjects starting with "
                    f"{self.subject_prefix!r}"
                )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "sha256": self.sha256,
            "allow": list(self.allow),
            "subject_prefix": self.subject_prefix,
            "created": self.created,
            "created_by": list(self.created_by),
            **({"region": self.region} if self.region else {}),  # absent: lists MAC as before
            **({"expires": self.expires} if self.expires else {}),  # the same
        }

    def public_dict(self) -> dict[str, Any]:
        """Everything but the hash (what ``token list`` prints)."""
        d = self.as_dict()
        del d["sha256"]
        return d

    @classmethod
    def from_dict(cls, d: Any) -> TokenPolicy:
        if not isinstance(d, dict):
            raise FormatError("token list: an entry is not an object")
        try:
            pol = cls(
                id=str(d["id"]),
                name=str(d["name"]),
                sha256=str(d["sha256"]),
                allow=tuple(str(a) for a in d["allow"]),
                subject_prefix=str(d["subject_prefix"]),
                created=str(d.get("created", "")),
                created_by=tuple(str(c) for c in d.get("created_by", [])),
                region=str(d.get("region", "")),
                expires=str(d.get("expires", "")),
            )
        except (KeyError, TypeError):
            raise FormatError("token list: an entry lacks a field") from None
        text = (pol.name, pol.subject_prefix, pol.created, pol.region, *pol.created_by)
        if not all(_json.is_unicode(t) for t in text):  # a JSON escape can spell a lone surrogate
            raise FormatError("token list: an entry holds text that is not Unicode")
        if pol.expires:
            try:
                _parse_time(pol.expires)
            except ValueError:
                raise FormatError("token list: bad expiry time") from None
        if not _ID_RE.fullmatch(pol.id) or not re.fullmatch(r"[0-9a-f]{64}", pol.sha256):
            raise FormatError("token list: bad id or hash")
        if any(a not in OPERATIONS for a in pol.allow):
            raise FormatError("token list: unknown operation")
        return pol


def check_token_name(name: str) -> str:
    """A token name as :meth:`TokenList.add` accepts it (``ValueError`` otherwise)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError("token name must be 1-64 of A-Z a-z 0-9 _ . - (starting alnum)")
    return name


def check_allow(allow: Sequence[str]) -> tuple[str, ...]:
    ops = tuple(dict.fromkeys(a.strip() for a in allow if a.strip()))
    if not ops:
        raise ValueError("a token needs at least one allowed operation")
    bad = [a for a in ops if a not in OPERATIONS]
    if bad:
        raise ValueError(f"unknown operation {bad[0]!r} (choose from {', '.join(OPERATIONS)})")
    return ops


PREFIX_SEPARATOR = "/"
"""A token's subject prefix ends here: ``acme/`` is tenant ``acme``, while ``acme`` would
also cover ``acme2/...`` and ``acmecorp/...``."""


def check_prefix(prefix: str) -> str:
    """The canonical (NFC) form of a token's subject prefix, or ValueError.

    Decision (issue 21): a prefix is empty (every subject) or ends with
    :data:`PREFIX_SEPARATOR`, so a scope is always whole path segments; a prefix ending
    mid-segment is refused at ``token create``/``add`` rather than warned about, since a
    warning is lost in a ceremony transcript while the over-broad token lives on. Lists
    written before this rule keep their prefixes and are still enforced on canonical text.
    """
    if not isinstance(prefix, str):
        raise TypeError("subject_prefix must be a str")
    if not prefix:
        return prefix
    canonical = names.canonical_prefix(prefix)
    if not canonical.endswith(PREFIX_SEPARATOR):
        raise ValueError(
            f"a subject prefix must be empty or end with {PREFIX_SEPARATOR!r} "
            f"({canonical!r} would also cover {canonical + 'x'!r}...); "
            f"use {canonical + PREFIX_SEPARATOR!r}"
        )
    return canonical


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass
class TokenList:
    """The MACed token list of one keyring directory, plus pending revocations."""

    directory: Path
    keyring_id: str
    serial: int = 0
    tokens: list[TokenPolicy] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    pending_revocations: list[str] = field(default_factory=list)
    mac: str | None = None
    folded: list[str] = field(default_factory=list)
    """The pending revocations this object's last :meth:`add` folded in: those pending
    under the lock, which a list read before it may not have seen (a revoke landing in
    between), so an audit records exactly what the write folded."""

    @property
    def path(self) -> Path:
        return self.directory / TOKENS_FILE

    @property
    def revoked_path(self) -> Path:
        return self.directory / REVOKED_FILE

    # -- reading ----------------------------------------------------------------------------

    @classmethod
    def read(cls, directory: str | os.PathLike[str], keyring_id: str) -> TokenList:
        """Parse the files strictly, without checking the MAC (see :meth:`verify`)."""
        d = Path(directory)
        out = cls(d, keyring_id)
        try:
            data = read_bounded(d / TOKENS_FILE, _MAX_FILE, "token list", regular=True)
        except FileNotFoundError:
            data = None
        if data is not None:
            doc = _json.loads(data, what="token list", max_bytes=_MAX_FILE)
            if not isinstance(doc, dict) or doc.get("format") != _FORMAT or doc.get("v") != 1:
                raise FormatError(f"{d / TOKENS_FILE}: not a keysplit token list (v1)")
            if doc.get("keyring_id") != keyring_id:
                raise IntegrityError(hint=f"{d / TOKENS_FILE} belongs to another keyring")
            try:
                out.serial = int(doc["serial"])
                out.tokens = [TokenPolicy.from_dict(t) for t in doc["tokens"]]
                out.revoked = [str(r) for r in doc["revoked"]]
                out.mac = str(doc["mac"])
            except (KeyError, TypeError, ValueError, OverflowError):  # serial: 1e400 is inf
                raise FormatError(f"{d / TOKENS_FILE}: malformed token list") from None
        try:
            raw = read_bounded(d / REVOKED_FILE, _MAX_FILE, "token revocation file", regular=True)
            lines = raw.decode("utf-8", "replace").splitlines()
        except FileNotFoundError:
            lines = []
        for ln in lines:
            tid = ln.split(" ", 1)[0].strip()
            if _ID_RE.fullmatch(tid) and tid not in out.revoked:
                out.pending_revocations.append(tid)
        return out

    def _body(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "v": 1,
            "keyring_id": self.keyring_id,
            "serial": self.serial,
            "tokens": [t.as_dict() for t in self.tokens],
            "revoked": list(self.revoked),
        }

    def _compute_mac(self, key: bytes) -> str:
        return hmac.new(key, _canonical(self._body()), hashlib.sha256).hexdigest()

    def verify(self, key: bytes) -> None:
        """Raise :class:`IntegrityError` if the list was edited (or written without a quorum)."""
        if self.mac is None and not self.tokens and not self.revoked:
            return  # no list yet
        mac = self.mac
        # compare_digest refuses (TypeError) a str that is not ASCII: an edited MAC
        if mac is None or not mac.isascii() or not hmac.compare_digest(mac, self._compute_mac(key)):
            raise IntegrityError(
                "token list authentication failed",
                hint=f"{self.path} was edited or does not belong to this keyring",
            )

    def active(self) -> dict[str, TokenPolicy]:
        """Token hash -> policy, revoked ones (MACed or pending) left out."""
        dead = set(self.revoked) | set(self.pending_revocations)
        return {t.sha256: t for t in self.tokens if t.id not in dead}

    def find(self, name_or_id: str) -> TokenPolicy:
        """The token with this id or name: the active one when a name was reused (names
        are unique among active tokens only), else the newest revoked one."""
        found = [t for t in self.tokens if name_or_id in (t.id, t.name)]
        if not found:
            raise KeysplitError(f"no token named {name_or_id!r}")
        dead = set(self.revoked) | set(self.pending_revocations)
        live = [t for t in found if t.id not in dead]
        return (live or found)[-1]

    # -- writing ----------------------------------------------------------------------------

    def _write(self, key: bytes) -> None:
        self.serial += 1
        self.mac = self._compute_mac(key)
        doc = self._body()
        doc["mac"] = self.mac
        atomic_write(self.path, json.dumps(doc, indent=1).encode() + b"\n")

    def _adopt(self, other: TokenList) -> None:
        self.serial, self.tokens, self.revoked = other.serial, other.tokens, other.revoked
        self.pending_revocations, self.mac = other.pending_revocations, other.mac

    def fold_revocations(self, key: bytes) -> list[str]:
        """Move pending revocations into the MACed list (needs the unsealed key).

        Every process of a service folds what it sees, so the list is read again under a
        lock and folded there: a process that read it before another one wrote a newer
        serial never writes its older copy back (which the audit log's serial then
        refuses, and with it every token). This list then holds what was written."""
        if not [r for r in self.pending_revocations if r not in self.revoked]:
            return []
        self.verify(key)
        with _locked(self.directory):
            cur = TokenList.read(self.directory, self.keyring_id)
            cur.verify(key)
            new = [r for r in cur.pending_revocations if r not in cur.revoked]
            if new:
                cur.revoked.extend(new)
                cur.pending_revocations = []
                cur._write(key)
        self._adopt(cur)
        return new

    def create(
        self,
        key: bytes,
        *,
        name: str,
        allow: Sequence[str],
        subject_prefix: str,
        created_by: Sequence[str] = (),
        expires_in: float | None = None,
    ) -> tuple[str, TokenPolicy]:
        """Mint a token; returns (token text, its policy). The text is never stored.
        ``expires_in``: seconds until the service stops accepting it (None: never)."""
        token = new_token()
        return token, self.add(
            key,
            token,
            name=name,
            allow=allow,
            subject_prefix=subject_prefix,
            created_by=created_by,
            expires_in=expires_in,
        )

    def add(
        self,
        key: bytes,
        token: str,
        *,
        name: str,
        allow: Sequence[str],
        subject_prefix: str,
        created_by: Sequence[str] = (),
        region: str = "",
        expires_in: float | None = None,
    ) -> TokenPolicy:
        """Register an existing token (minted on another keyring: ``keysplit token add``)
        under this keyring's own policy; only its hash is kept. ``expires_in``: seconds
        until the service stops accepting it (None: never)."""
        if not is_token_text(token):
            raise ValueError("not a keysplit token (kst1_ and 43 base64url characters)")
        check_token_name(name)
        ops = check_allow(allow)
        subject_prefix = check_prefix(subject_prefix)
        life = check_expires_in(expires_in)
        self.verify(key)
        with _locked(self.directory):  # on the list as it is now (see fold_revocations)
            cur = TokenList.read(self.directory, self.keyring_id)
            cur.verify(key)
            folded = [r for r in cur.pending_revocations if r not in cur.revoked]
            pol = cur._add(key, token, name, ops, subject_prefix, created_by, region, life)
        self._adopt(cur)
        self.folded = folded
        return pol

    def _add(
        self,
        key: bytes,
        token: str,
        name: str,
        ops: tuple[str, ...],
        subject_prefix: str,
        created_by: Sequence[str],
        region: str,
        life: float | None = None,
    ) -> TokenPolicy:
        now = _now().replace(microsecond=0)
        if any(t.name == name and not t.expired(now) for t in self.active().values()):
            raise KeysplitError(
                f"an active token named {name!r} exists", hint="revoke it first or pick a name"
            )
        if hash_token(token) in {t.sha256 for t in self.tokens}:
            raise KeysplitError("this token is already registered here (or was revoked here)")
        pol = TokenPolicy(
            id=secrets.token_hex(8),
            name=name,
            sha256=hash_token(token),
            allow=ops,
            subject_prefix=subject_prefix,
            created=now.strftime(_TIME),
            created_by=tuple(created_by),
            region=region,
            # whole seconds, rounded up: never shorter than asked
            expires=""
            if life is None
            else (now + timedelta(seconds=math.ceil(life))).strftime(_TIME),
        )
        self.revoked.extend(r for r in self.pending_revocations if r not in self.revoked)
        self.pending_revocations = []
        self.tokens.append(pol)
        self._write(key)
        return pol

    def revoke(self, name_or_id: str) -> TokenPolicy:
        """Revoke without a quorum: append the id to the revocation file (durably)."""
        pol = self.find(name_or_id)
        if pol.id in self.revoked or pol.id in self.pending_revocations:
            raise KeysplitError(f"token {pol.name!r} is already revoked")
        line = f"{pol.id} {pol.name} {datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}\n"
        created = not self.revoked_path.exists()
        fd = os.open(self.revoked_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            durable_append(fd, line.encode(), name=self.revoked_path)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.directory)
        self.pending_revocations.append(pol.id)
        return pol


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Writers of the token list, one at a time (``flock`` on the directory itself: held
    for a read and a write, never across a prompt)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def token_files(directory: Path) -> tuple[str, str]:
    """The paths of the token list and its revocations, for :func:`file_signature`. The
    service checks the signature before every token it accepts (twice per batch), so it
    joins the paths once: in a served process, whose per-request code runs with cold
    caches, the two ``pathlib`` joins of each check cost more than its two ``stat`` calls."""
    return (os.fspath(directory / TOKENS_FILE), os.fspath(directory / REVOKED_FILE))


def file_signature(directory: Path | tuple[str, str]) -> tuple[tuple[int, int, int], ...]:
    """(inode, size, mtime_ns) of both files (in ``directory``, or at the
    :func:`token_files` paths given): the service reloads when it changes."""
    out = []
    for path in token_files(directory) if isinstance(directory, Path) else directory:
        try:
            st = os.stat(path)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            out.append((0, -1, 0))
    return tuple(out)
