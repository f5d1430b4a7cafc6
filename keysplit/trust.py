"""The keyring trust anchor: a fingerprint of (keyring id, public key), pinned outside.

Why: ``encrypt`` needs no quorum, so it seals to whatever X25519 public key the keyring
directory holds. The keyring file's metadata is authenticated under the master key, which
an encrypting process does not have, so anyone who can write the directory can swap in
their own key and receive every file sealed afterwards. The fix is the one age recipients
and SSH ``known_hosts`` use: the sender checks the key against something kept *outside*
the directory: a fingerprint the user typed (``--expect``) or one pinned earlier in a
known-keyrings file.

Fingerprint::

    digest = SHA-256("keysplit keyring fingerprint v1" || 0x00
                     || u16be(len(id)) || id (UTF-8) || public_key (32 bytes))
    fingerprint = "ksk1" || bech32m("ksk", digest[:20])    (42 characters, 160 bits)

The bech32m checksum catches any typo in a typed fingerprint (a :class:`FormatError`,
not a mismatch). Parsing ignores case, spaces and ``-``, so ``ksk1-qpzr-...`` groupings
typed by hand are accepted.

Known-keyrings file (``$XDG_CONFIG_HOME/keysplit/known_keyrings`` by default, or
``$KEYSPLIT_KNOWN_KEYRINGS``), one line per keyring, ``#`` comments and blank lines
allowed::

    <keyring_id> <fingerprint> <label to end of line>

It is read with bounds (size, line length, entry count) and rewritten atomically under an
advisory lock, one entry's line at a time: comments, blank lines and the other entries stay
as they were, and a file that is a symbolic link is written where it points. Nothing in it
is secret.

The policy on top (:func:`trust_keyring`: expected, pinned, or trust on first use) and the
sealing entry points that run it, :func:`encrypt_file` and :func:`encrypt_stream`, also
live here: they are ``keysplit.encrypt_file``/``keysplit.encrypt_stream``, the short names
being the checked ones (the unchecked primitives stay in :mod:`keysplit.stream`). A
keyring made with ``init --verify`` is refused until its custodians have proven possession.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from . import _bech32
from ._fileio import atomic_write
from .errors import FormatError, KeyringError, UntrustedKeyringError
from .stream import StreamInfo
from .stream import encrypt_file as _encrypt_file
from .stream import encrypt_stream as _encrypt_stream

if TYPE_CHECKING:
    from .keyring import Keyring

__all__ = [
    "ENV_KNOWN_KEYRINGS",
    "FINGERPRINT_PREFIX",
    "TRUST_EXPECTED",
    "TRUST_FIRST_USE",
    "TRUST_PINNED",
    "KnownKeyring",
    "KnownKeyrings",
    "Sealed",
    "TrustState",
    "check_fingerprint",
    "default_known_keyrings_path",
    "encrypt_file",
    "encrypt_stream",
    "keyring_fingerprint",
    "parse_fingerprint",
    "pin_keyring",
    "trust_keyring",
    "trust_state",
    "verify_keyring",
]

FINGERPRINT_PREFIX = "ksk1"
_HRP = "ksk"
_LABEL = b"keysplit keyring fingerprint v1\x00"
_DIGEST_BYTES = 20  # 160 bits: 32 bech32 characters, then 6 of checksum
_FPR_CHARS = len(FINGERPRINT_PREFIX) + 32 + 6
ENV_KNOWN_KEYRINGS = "KEYSPLIT_KNOWN_KEYRINGS"
"""Environment variable that overrides the known-keyrings file path."""

MAX_FILE_BYTES = 1 << 20
MAX_LINE_CHARS = 1024
MAX_ENTRIES = 10_000
MAX_LABEL_CHARS = 200
_ID = re.compile(r"\A[A-Za-z0-9._:-]{1,128}\Z")
_PUBLIC_KEY_BYTES = 32


def _check_id(keyring_id: object) -> str:
    if not isinstance(keyring_id, str):
        raise TypeError("keyring_id must be a str")
    if not _ID.match(keyring_id):
        raise FormatError("a keyring id is 1..128 characters of A-Z a-z 0-9 . _ : -")
    return keyring_id


def keyring_fingerprint(keyring_id: str, public_key: bytes) -> str:
    """The canonical fingerprint committing to ``keyring_id`` and the X25519 ``public_key``."""
    ident = _check_id(keyring_id).encode()
    if not isinstance(public_key, (bytes, bytearray, memoryview)):
        raise TypeError("public_key must be bytes")
    pk = bytes(public_key)
    if len(pk) != _PUBLIC_KEY_BYTES:
        raise FormatError("a keyring public key is 32 bytes (X25519)")
    digest = hashlib.sha256(_LABEL + len(ident).to_bytes(2, "big") + ident + pk).digest()
    values = _bech32.to_5bit(digest[:_DIGEST_BYTES])
    return FINGERPRINT_PREFIX + _bech32.encode_chars(values + _bech32.checksum(_HRP, values))


def parse_fingerprint(text: str) -> str:
    """Canonical form of a typed fingerprint (case, spaces and ``-`` ignored), or FormatError."""
    if not isinstance(text, str):
        raise TypeError("fingerprint must be a str")
    if len(text) > 4 * _FPR_CHARS:
        raise FormatError("not a keyring fingerprint: too long")
    canon = re.sub(r"[\s\-]+", "", text).lower()
    hint = "a keyring fingerprint looks like ksk1... (42 characters); `keysplit status` shows it"
    if not canon.startswith(FINGERPRINT_PREFIX) or len(canon) != _FPR_CHARS:
        raise FormatError("not a keyring fingerprint", hint=hint)
    values, _ = _bech32.decode_chars(canon[len(FINGERPRINT_PREFIX) :])
    if values is None:
        raise FormatError("not a keyring fingerprint: invalid character", hint=hint)
    if not _bech32.verify(_HRP, values):
        raise FormatError("keyring fingerprint checksum does not match: a typo?", hint=hint)
    return canon


def check_fingerprint(expected: str, keyring_id: str, public_key: bytes) -> None:
    """Raise :class:`UntrustedKeyringError` unless ``expected`` is this keyring's fingerprint.

    A malformed ``expected`` is a :class:`FormatError` (a typo, caught by the checksum).
    """
    want = parse_fingerprint(expected)
    have = keyring_fingerprint(keyring_id, public_key)
    if not hmac.compare_digest(want, have):
        raise UntrustedKeyringError(
            f"keyring {keyring_id} has fingerprint {have}, not the expected {want}: "
            "its public key or id may have been replaced",
            hint="do not encrypt to it; compare with the fingerprint printed at init",
        )


# -- the known-keyrings file -----------------------------------------------------------------


def default_known_keyrings_path() -> Path:
    """``$KEYSPLIT_KNOWN_KEYRINGS``, else ``$XDG_CONFIG_HOME/keysplit/known_keyrings``."""
    override = os.environ.get(ENV_KNOWN_KEYRINGS)
    if override:
        return Path(override)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "keysplit" / "known_keyrings"


@dataclass(frozen=True)
class KnownKeyring:
    """One pinned keyring: its id, canonical fingerprint and a free-text label."""

    keyring_id: str
    fingerprint: str
    label: str = ""


def _check_label(label: object) -> str:
    if not isinstance(label, str):
        raise TypeError("label must be a str")
    label = " ".join(label.split())
    if len(label) > MAX_LABEL_CHARS or not label.isprintable():
        raise FormatError(f"a keyring label is at most {MAX_LABEL_CHARS} printable characters")
    return label


_HEADER = "# keysplit known keyrings: <keyring_id> <fingerprint> <label>"


class KnownKeyrings:
    """The pinning store: keyring id -> fingerprint, in a file outside any keyring directory."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_known_keyrings_path()

    def __repr__(self) -> str:
        return f"KnownKeyrings({str(self.path)!r})"

    def _read(self) -> bytes:
        try:
            with open(self.path, "rb") as fh:
                data = fh.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return b""
        except IsADirectoryError:
            raise FormatError(f"{self.path} is a directory, not a known-keyrings file") from None
        if len(data) > MAX_FILE_BYTES:
            raise FormatError(f"{self.path} is larger than {MAX_FILE_BYTES} bytes")
        return data

    def _text(self) -> str:
        try:
            return self._read().decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{self.path} is not UTF-8 text") from None

    def entries(self) -> list[KnownKeyring]:
        """Every pinned keyring in file order; FormatError names the first bad line."""
        return self._parse(self._text())

    def _parse(self, text: str) -> list[KnownKeyring]:
        out: list[KnownKeyring] = []
        seen: dict[str, str] = {}
        for n, line in enumerate(text.split("\n"), 1):
            where = f"{self.path} line {n}"
            if len(line) > MAX_LINE_CHARS:
                raise FormatError(f"{where}: longer than {MAX_LINE_CHARS} characters")
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 2)
            if len(parts) < 2:
                raise FormatError(f"{where}: expected '<keyring_id> <fingerprint> [label]'")
            try:
                entry = KnownKeyring(
                    _check_id(parts[0]),
                    parse_fingerprint(parts[1]),
                    _check_label(parts[2] if len(parts) > 2 else ""),
                )
            except FormatError as exc:
                raise FormatError(f"{where}: {exc}") from None
            if entry.keyring_id in seen:
                if seen[entry.keyring_id] != entry.fingerprint:
                    raise FormatError(f"{where}: conflicting fingerprints for {entry.keyring_id}")
                continue
            if len(out) >= MAX_ENTRIES:
                raise FormatError(f"{self.path}: more than {MAX_ENTRIES} keyrings")
            seen[entry.keyring_id] = entry.fingerprint
            out.append(entry)
        return out

    def lookup(self, keyring_id: str) -> KnownKeyring | None:
        """The pinned entry for ``keyring_id``, or None if it was never pinned."""
        _check_id(keyring_id)
        return next((e for e in self.entries() if e.keyring_id == keyring_id), None)

    def _target(self) -> Path:
        """The file written: the path itself, or what it links to (a known-keyrings file
        kept in a dotfiles repository and linked into place stays a link)."""
        return Path(os.path.realpath(self.path))

    def _rewrite(self, text: str, keyring_id: str, line: str | None) -> None:
        """Write the file (``text``, read and parsed under :meth:`_locked`) with
        ``keyring_id``'s line replaced by ``line`` (appended if the id has none; removed if
        ``line`` is None), every other line, comments and blank lines kept as they are."""
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the final newline
        out: list[str] = []
        done = False
        for raw in lines:
            body = raw.strip()
            if body and not body.startswith("#") and body.split(None, 1)[0] == keyring_id:
                if line is not None and not done:
                    out.append(line)
                done = True  # a duplicate line of the same id (same fingerprint) goes
                continue
            out.append(raw)
        if line is not None and not done:
            if not out:
                out.append(_HEADER)
            out.append(line)
        atomic_write(self._target(), "".join(x + "\n" for x in out).encode(), mode=0o644)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # not POSIX: atomic replace still holds, concurrent pins may race
            yield
            return
        target = self._target()  # beside the file written, whatever link names it
        fd = os.open(target.with_name(target.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def pin(
        self, keyring_id: str, fingerprint: str, label: str = "", *, replace: bool = False
    ) -> KnownKeyring:
        """Pin ``fingerprint`` for ``keyring_id`` (idempotent; a new label replaces the old).

        Pinning a *different* fingerprint for an already pinned id is refused with
        :class:`UntrustedKeyringError` unless ``replace=True`` (a deliberate re-pin after the
        owner confirmed the new key out of band).
        """
        entry = KnownKeyring(
            _check_id(keyring_id), parse_fingerprint(fingerprint), _check_label(label)
        )
        with self._locked():
            text = self._text()
            entries = self._parse(text)
            old = next((e for e in entries if e.keyring_id == keyring_id), None)
            if old is not None and old.fingerprint != entry.fingerprint and not replace:
                raise UntrustedKeyringError(
                    f"keyring {keyring_id} is pinned to {old.fingerprint} in {self.path}, "
                    f"not {entry.fingerprint}",
                    hint="re-pin only after confirming the new fingerprint with the owner",
                )
            if old == entry:
                return entry
            self._rewrite(text, keyring_id, self._line(entry))
        return entry

    def pin_keyring(
        self, keyring_id: str, public_key: bytes, label: str = "", *, replace: bool = False
    ) -> KnownKeyring:
        """Pin the fingerprint of (``keyring_id``, ``public_key``): what ``init`` should call."""
        return self.pin(
            keyring_id, keyring_fingerprint(keyring_id, public_key), label, replace=replace
        )

    def remove(self, keyring_id: str) -> bool:
        """Forget ``keyring_id``; True if it was pinned."""
        _check_id(keyring_id)
        with self._locked():
            text = self._text()
            if not any(e.keyring_id == keyring_id for e in self._parse(text)):
                return False
            self._rewrite(text, keyring_id, None)
            return True

    @staticmethod
    def _line(e: KnownKeyring) -> str:
        return f"{e.keyring_id} {e.fingerprint}{' ' + e.label if e.label else ''}"


def verify_keyring(
    keyring_id: str,
    public_key: bytes,
    *,
    expect: str | None = None,
    known: KnownKeyrings | None = None,
    require: bool = False,
) -> str:
    """The check every seal to a keyring runs before using ``public_key``; returns how it held.

    * ``expect`` given (``encrypt --expect FPR``): it must match -> ``"expected"``.
    * else the keyring is pinned in ``known`` (default file): it must match -> ``"pinned"``.
    * else ``"unpinned"``, or :class:`UntrustedKeyringError` when ``require`` is set.

    A pinned entry is checked even when ``expect`` matches, so a typed fingerprint cannot
    silently override a pin that says otherwise.
    """
    store = known if known is not None else KnownKeyrings()
    pinned = store.lookup(keyring_id)
    if expect is not None:
        check_fingerprint(expect, keyring_id, public_key)
    if pinned is not None:
        check_fingerprint(pinned.fingerprint, keyring_id, public_key)
    if expect is not None:
        return "expected"
    if pinned is not None:
        return "pinned"
    if require:
        raise UntrustedKeyringError(
            f"keyring {keyring_id} is not pinned in {store.path}",
            hint="pass the fingerprint printed at init (expect=FPR; the CLI's --expect FPR), "
            "or pin it first",
        )
    return "unpinned"


# -- sealing to a keyring without a quorum: the checks every seal runs ---------------------

TRUST_EXPECTED = "expected"
TRUST_PINNED = "pinned"
TRUST_FIRST_USE = "first-use"


def trust_keyring(
    keyring: Keyring,
    *,
    expect: str | None = None,
    known: KnownKeyrings | None = None,
    trust_on_first_use: bool = False,
) -> str:
    """Check ``keyring``'s public key against the trust anchor kept outside its directory.

    Why: sealing needs no quorum, so nothing in the keyring directory authenticates its
    public key to a sender; a writer of the directory could swap in their own. Policy:

    * ``expect`` (a fingerprint from the owner) must match -> ``"expected"``;
    * else the keyring must be pinned in ``known`` (default: the known-keyrings file) and
      match -> ``"pinned"``; a pin is checked even when ``expect`` is given;
    * an unpinned keyring without ``expect`` is refused with
      :class:`UntrustedKeyringError`, unless ``trust_on_first_use``: then its current
      fingerprint is pinned (SSH-style first contact) -> ``"first-use"``.

    Mismatches raise :class:`UntrustedKeyringError` naming both fingerprints.
    """
    store = known if known is not None else KnownKeyrings()
    how = verify_keyring(keyring.keyring_id, keyring.public_key, expect=expect, known=store)
    if how != "unpinned":
        return how
    if not trust_on_first_use:
        raise UntrustedKeyringError(
            f"keyring {keyring.keyring_id} is not pinned in {store.path} and no fingerprint "
            "was given: its public key is unverified",
            hint="pass the fingerprint the keyring's owner gives you (expect=FPR; the CLI's "
            "--expect FPR; keysplit status on the machine that ran init shows it), or pin it "
            "once with 'keysplit keyring pin DIR --expect FPR'",
        )
    store.pin_keyring(keyring.keyring_id, keyring.public_key, str(keyring.path))
    return TRUST_FIRST_USE


def pin_keyring(
    keyring: Keyring,
    *,
    expect: str | None = None,
    known: KnownKeyrings | None = None,
    label: str | None = None,
    replace: bool = False,
) -> KnownKeyring:
    """Pin ``keyring``'s fingerprint; with ``expect`` only if it matches (else refused).

    Without ``expect`` this trusts the directory as it is now (what ``init`` does, having
    just generated the key). ``replace`` re-pins an id pinned to another fingerprint.
    """
    if expect is not None:
        keyring.check_fingerprint(expect)
    store = known if known is not None else KnownKeyrings()
    return store.pin_keyring(
        keyring.keyring_id,
        keyring.public_key,
        str(keyring.path) if label is None else label,
        replace=replace,
    )


def _checked_public_key(
    keyring: Keyring,
    expect: str | None,
    known: KnownKeyrings | None,
    trust_on_first_use: bool,
) -> tuple[bytes, str]:
    if not callable(getattr(keyring, "verification", None)):
        raise TypeError(
            "seal to a Keyring (keysplit.Keyring.open(DIR)); the unchecked form taking raw "
            "key bytes is keysplit.stream.encrypt_file/encrypt_stream"
        )
    if keyring.home.handout_incomplete(keyring.meta.set_id):
        raise KeyringError(
            f"keyring {keyring.keyring_id} can never be unsealed: its init stopped before all "
            "its shares were written",
            hint=f"remove {keyring.path} and run init again",
        )
    v = keyring.verification()
    if v is not None and v.kind == "init" and not v.status.completed:
        raise KeyringError(
            f"keyring {keyring.keyring_id} was made with --verify and waits for proofs of "
            "possession from: " + ", ".join(v.status.missing),
            hint="keysplit verify status DIR shows who is missing",
        )
    # The bytes checked are the bytes sealed to (read once from the opened metadata).
    public_key = keyring.public_key
    how = trust_keyring(keyring, expect=expect, known=known, trust_on_first_use=trust_on_first_use)
    if public_key != keyring.public_key:  # pragma: no cover - meta is immutable in memory
        raise UntrustedKeyringError("the keyring's public key changed during the check")
    return public_key, how


@dataclass(frozen=True)
class Sealed:
    """What a trusted seal did: the stream's ``info`` and how the key was trusted."""

    info: StreamInfo
    trust: str


def encrypt_file(
    keyring: Keyring,
    in_path: str,
    out_path: str,
    *,
    expect: str | None = None,
    known: KnownKeyrings | None = None,
    trust_on_first_use: bool = False,
    context: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> Sealed:
    """Seal a file to ``keyring`` after :func:`trust_keyring` (nothing written if refused).

    The safe entry point, :func:`keysplit.encrypt_file`: :func:`keysplit.stream.encrypt_file`
    takes a raw public key and checks nothing.
    """
    public_key, how = _checked_public_key(keyring, expect, known, trust_on_first_use)
    info = _encrypt_file(in_path, out_path, public_key, context=context, overwrite=overwrite)
    return Sealed(info, how)


def encrypt_stream(
    keyring: Keyring,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    expect: str | None = None,
    known: KnownKeyrings | None = None,
    trust_on_first_use: bool = False,
    context: Mapping[str, str] | None = None,
) -> Sealed:
    """:func:`encrypt_file` between streams (nothing written to ``dst`` if refused)."""
    public_key, how = _checked_public_key(keyring, expect, known, trust_on_first_use)
    return Sealed(_encrypt_stream(src, dst, public_key, context=context), how)


@dataclass(frozen=True)
class TrustState:
    """Public: the keyring's fingerprint and what the known-keyrings file says about it."""

    fingerprint: str
    known_file: str
    pinned: str | None
    """The pinned fingerprint, or None if this keyring id is not pinned."""

    @property
    def matches(self) -> bool | None:
        """Whether the pin agrees with the directory's key (None: not pinned)."""
        return None if self.pinned is None else self.pinned == self.fingerprint

    def as_dict(self) -> dict[str, str | bool | None]:
        return {
            "fingerprint": self.fingerprint,
            "known_keyrings": self.known_file,
            "pinned": self.pinned is not None,
            "pin_matches": self.matches,
        }


def trust_state(keyring: Keyring, known: KnownKeyrings | None = None) -> TrustState:
    """What ``status`` shows: fingerprint, pinned or not, and whether the pin matches."""
    store = known if known is not None else KnownKeyrings()
    entry = store.lookup(keyring.keyring_id)
    return TrustState(keyring.fingerprint, str(store.path), entry.fingerprint if entry else None)
