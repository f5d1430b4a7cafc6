"""Framing shared by every custody file: checksummed envelopes and the sealed-share layout.

Every custody object (public key ``KSPK``, identity ``KSID``, sealed share ``KSSS``) is
``magic || version || body || SHA-256(magic..body)[:4]``. The checksum tells corruption
(a FormatError) apart from a wrong key or passphrase (a CustodianError).

A sealed share's body is::

    method (1) || len(name) (1) || name || set id (8) || threshold || count || index
    || method parameters (their length is fixed by the method)
    || u16 len || ciphertext

The *header* is every byte before the length field; each protection method binds it to
its ciphertext (HPKE ``info`` or AEAD associated data), so nothing can be relabelled.

Order of errors (:func:`parse_envelope`): too large (sealed shares, before anything is
parsed), bad magic, unknown version, truncation or trailing bytes, checksum mismatch,
then whatever the body parser found wrong (an unknown method, a bad name, unacceptable
parameters), so a corrupted field is reported as corruption, not as a strange value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from .. import names
from ..errors import FormatError

if TYPE_CHECKING:
    from .base import MethodParams, ProtectionMethod

T = TypeVar("T")

VERSION = 1
MAGIC_RECIPIENT = b"KSPK"
MAGIC_IDENTITY = b"KSID"
MAGIC_SEALED = b"KSSS"
CHECK_LEN = 4
MAX_SEALED_SIZE = 1 << 14
"""Largest sealed share accepted (the biggest method, ML-KEM hybrid, is ~1.2 KiB)."""

NAME_RE = names.CUSTODIAN_NAME_RE


def checksum(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:CHECK_LEN]


def check_name(name: str) -> str:
    """Validate a custodian name: the one rule in :func:`keysplit.names.check_custodian_name`
    (it appears in file names, terminals and HPKE ``info``)."""
    return names.check_custodian_name(name)


class ShapeError(FormatError):
    """Truncation or trailing bytes: reported even when the checksum also fails."""


class Reader:
    """Strict cursor over a byte string: truncation is a FormatError naming the object."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what
        self.check = b""

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ShapeError(f"{self.what} is truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def code(self, table: Mapping[int, T], what: str) -> tuple[int, T]:
        """One byte naming an entry of ``table``: ``(code, entry)``, or a FormatError
        ("sealed share has an unknown method 7")."""
        code = self.byte()
        entry = table.get(code)
        if entry is None:
            raise FormatError(f"{self.what} has an unknown {what} {code}")
        return code, entry

    def name(self) -> str:
        raw = self.take(self.byte())
        try:
            name = raw.decode("ascii")
        except UnicodeDecodeError:
            name = ""
        if not NAME_RE.fullmatch(name):
            raise FormatError(f"{self.what} has an invalid custodian name")
        return name


_KINDS: tuple[tuple[bytes, str], ...] = (
    (MAGIC_IDENTITY, "an identity file (a custodian's private key)"),
    (MAGIC_RECIPIENT, "a custodian's public key"),
    (b"keysplit-recipient-v1:", "a custodian's public key (.pub)"),
    (b"# keysplit custodian public key", "a custodian's public key (.pub)"),
    (MAGIC_SEALED, "a sealed share"),
    (b"KSSS-", "a sealed share"),
    (b"KSSH", "a share"),
    (b"ks1", "a share"),
    (b"KSSTREAM", "a file encrypted to a keyring"),
)


def kind_of(data: bytes) -> str | None:
    """What keysplit object ``data`` is by its first bytes (None: none known), for an
    error naming a mixed-up file: an identity given as a share, a ``.pub`` as an identity."""
    head = bytes(data[:32]).lstrip()
    return next((kind for magic, kind in _KINDS if head.startswith(magic)), None)


def _open_envelope(data: bytes, magic: bytes, what: str) -> Reader:
    """Check magic, version and trailing checksum; return a reader over the body."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("data must be bytes")
    data = bytes(data)
    if len(data) < len(magic) or data[: len(magic)] != magic:
        if magic.startswith(data):
            raise FormatError(f"{what} is truncated")
        kind = kind_of(data)
        raise FormatError(f"not a keysplit {what} (bad magic)" + (f": {kind}" if kind else ""))
    if len(data) < len(magic) + 1:
        raise FormatError(f"{what} is truncated")
    if data[len(magic)] != VERSION:
        raise FormatError(
            f"unsupported {what} version {data[len(magic)]} (this keysplit reads version {VERSION})"
        )
    if len(data) < len(magic) + 1 + CHECK_LEN:
        raise FormatError(f"{what} is truncated")
    body, check = data[:-CHECK_LEN], data[-CHECK_LEN:]
    reader = Reader(body, what)
    reader.pos = len(magic) + 1
    reader.check = check
    return reader


def parse_envelope(data: bytes, magic: bytes, what: str, fn: Callable[[Reader], T]) -> T:
    """Parse ``data`` with ``fn`` inside the common envelope, in the order of errors above."""
    r = _open_envelope(data, magic, what)
    err: FormatError | None = None
    result: T | None = None
    try:
        result = fn(r)
        if r.pos != len(r.data):
            raise ShapeError(f"{what} has trailing bytes (or is corrupted)")
    except ShapeError:
        raise
    except FormatError as exc:
        err = exc
    if not hmac.compare_digest(checksum(r.data), r.check):
        raise FormatError(f"{what} checksum mismatch (corrupted)")
    if err is not None:
        raise err
    assert result is not None
    return result


def seal_envelope(body: bytes) -> bytes:
    """Append the checksum to ``magic || version || body``."""
    return body + checksum(body)


# -- sealed shares --------------------------------------------------------------------------


@dataclass(frozen=True)
class SealedShare:
    """A parsed sealed share (age's *stanza*): everything an opener needs, nothing opened.

    ``header`` is the byte string the method bound to ``ciphertext``; ``params`` is what
    the method's own parser read from it (a fingerprint, or KDF parameters, salt, nonce).
    """

    method: int
    custodian: str
    set_id: bytes
    threshold: int
    count: int
    index: int
    params: MethodParams
    header: bytes
    ciphertext: bytes

    @property
    def who(self) -> str:
        """How error messages name this share."""
        return f"custodian {self.custodian!r} (share {self.index})"


def sealed_head(method: int, custodian: str, set_id: bytes, t: int, n: int, i: int) -> bytes:
    """The header up to the method parameters."""
    name = check_name(custodian).encode("ascii")
    return MAGIC_SEALED + bytes([VERSION, method, len(name)]) + name + set_id + bytes([t, n, i])


def frame_sealed(header: bytes, ciphertext: bytes) -> bytes:
    """``header || u16 len || ciphertext || checksum``."""
    return seal_envelope(header + struct.pack(">H", len(ciphertext)) + ciphertext)


# -- the text form of a sealed share (paper, typing, QR) ---------------------------------------

SEALED_TEXT_PREFIX = "KSSS-"
"""A sealed share as text: this prefix, then the sealed share's bytes in RFC 4648 base32
(no padding), in groups of five joined by ``-``. The alphabet (A-Z, 2-7, ``-``) is QR's
alphanumeric mode; case, blanks and dashes are ignored on reading. The sealed share's own
checksum (SHA-256, 4 bytes) catches a typo, it does not locate it."""
_GROUP = 5
_B32 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def sealed_text(data: bytes) -> str:
    """The text form of a sealed share (what a share sheet prints and its QR code holds);
    ``data`` is its bytes, or already its text form."""
    data = bytes(data)
    decoded = decode_sealed_text(data)
    data = data if decoded is None else decoded
    if not data.startswith(MAGIC_SEALED):
        raise ValueError("not a sealed share")
    b32 = base64.b32encode(data).decode("ascii").rstrip("=")
    groups = [b32[i : i + _GROUP] for i in range(0, len(b32), _GROUP)]
    return SEALED_TEXT_PREFIX + "-".join(groups)


def _text_body(data: bytes) -> str | None:
    """The base32 characters of a sealed share in text form (``#`` and blank lines
    skipped; blanks, dashes and case ignored), or None if ``data`` is not one."""
    if len(data) > 4 * MAX_SEALED_SIZE or (data[:4] == MAGIC_SEALED and data[4:5] != b"-"):
        return None  # too long for any sealed share's text, or the binary form
    try:
        text = bytes(data).decode("ascii")
    except UnicodeDecodeError:
        return None
    lines = [ln.strip() for ln in text.splitlines()]
    chars = "".join(ln for ln in lines if ln and not ln.startswith("#"))
    chars = "".join(chars.split()).replace("-", "").upper()
    prefix = SEALED_TEXT_PREFIX.rstrip("-")
    return chars[len(prefix) :] if chars.startswith(prefix) else None


def decode_sealed_text(data: bytes) -> bytes | None:
    """The sealed share written as text in ``data``, as bytes (None if it is not one; a
    FormatError if it is one but damaged)."""
    chars = _text_body(data)
    if chars is None:
        return None
    if not chars or not set(chars) <= _B32 or len(chars) % 8 in (1, 3, 6):
        raise FormatError("sealed share text is damaged (not base32)")
    try:
        raw = base64.b32decode(chars + "=" * (-len(chars) % 8))
    except (binascii.Error, ValueError):
        raise FormatError("sealed share text is damaged (not base32)") from None
    if not raw.startswith(MAGIC_SEALED):
        raise FormatError("sealed share text is damaged (bad magic)")
    return raw


def is_sealed(data: bytes) -> bool:
    """True if ``data`` is (or starts like) a sealed share, in bytes or in its text form
    (use before choosing how to load it)."""
    data = bytes(data)
    return data[: len(MAGIC_SEALED)] == MAGIC_SEALED or _text_body(data) is not None


def parse_sealed(data: bytes, methods: Mapping[int, ProtectionMethod]) -> SealedShare:
    """Parse a sealed share (bytes or text form); method parameters are read by the
    registered method."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        decoded = decode_sealed_text(bytes(data))
        data = data if decoded is None else decoded
    if isinstance(data, (bytes, bytearray, memoryview)) and len(data) > MAX_SEALED_SIZE:
        raise FormatError(
            f"sealed share is too large ({len(data)} bytes, at most {MAX_SEALED_SIZE})"
        )

    def body(r: Reader) -> SealedShare:
        code, method = r.code(methods, "method")
        name = r.name()
        set_id = r.take(8)
        threshold, count, index = r.take(3)
        if not 2 <= threshold <= count or not 1 <= index <= count:
            raise FormatError("sealed share has invalid parameters")
        params = method.parse_params(r)
        header = r.data[: r.pos]
        (length,) = struct.unpack(">H", r.take(2))
        ciphertext = r.take(length)
        return SealedShare(code, name, set_id, threshold, count, index, params, header, ciphertext)

    return parse_envelope(data, MAGIC_SEALED, "sealed share", body)
