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

import hashlib
import hmac
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

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

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


def checksum(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:CHECK_LEN]


def check_name(name: str) -> str:
    """Validate a custodian name: it appears in file names, terminals and HPKE ``info``."""
    if not isinstance(name, str):
        raise TypeError("custodian name must be str")
    if not NAME_RE.fullmatch(name):
        raise ValueError(
            "custodian name must be 1-64 characters of A-Z a-z 0-9 . _ @ + - "
            "(starting with a letter or digit)"
        )
    return name


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

    def name(self) -> str:
        raw = self.take(self.byte())
        try:
            name = raw.decode("ascii")
        except UnicodeDecodeError:
            name = ""
        if not NAME_RE.fullmatch(name):
            raise FormatError(f"{self.what} has an invalid custodian name")
        return name


def _open_envelope(data: bytes, magic: bytes, what: str) -> Reader:
    """Check magic, version and trailing checksum; return a reader over the body."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("data must be bytes")
    data = bytes(data)
    if len(data) < len(magic) or data[: len(magic)] != magic:
        if magic.startswith(data):
            raise FormatError(f"{what} is truncated")
        raise FormatError(f"not a keysplit {what} (bad magic)")
    if len(data) < len(magic) + 1:
        raise FormatError(f"{what} is truncated")
    if data[len(magic)] != VERSION:
        raise FormatError(
            f"unsupported {what} version {data[len(magic)]} (this keysplit reads version "
            f"{VERSION})"
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


def is_sealed(data: bytes) -> bool:
    """True if ``data`` starts like a sealed share (use before choosing how to load it)."""
    return bytes(data[: len(MAGIC_SEALED)]) == MAGIC_SEALED


def parse_sealed(data: bytes, methods: Mapping[int, ProtectionMethod]) -> SealedShare:
    """Parse a sealed share; method parameters are read by the registered method."""
    if isinstance(data, (bytes, bytearray, memoryview)) and len(data) > MAX_SEALED_SIZE:
        raise FormatError(
            f"sealed share is too large ({len(data)} bytes, at most {MAX_SEALED_SIZE})"
        )

    def body(r: Reader) -> SealedShare:
        code = r.byte()
        method = methods.get(code)
        if method is None:
            raise FormatError(f"sealed share has an unknown method {code}")
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
