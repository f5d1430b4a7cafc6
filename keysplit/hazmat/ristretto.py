"""The ristretto255 group (RFC 9496) through libsodium, bundled by ``rbcl``. **Hazmat.**

Two small value types, :class:`Scalar` (an integer mod the group order ``L``) and
:class:`Point` (a group element), whose constructors are the only way in, so that every
value this module hands out is valid:

* a point is parsed only from its canonical 32-byte encoding (RFC 9496 section 4.3.1 via
  ``crypto_core_ristretto255_is_valid_point``, plus the top-bit check that the libsodium
  1.0.18 inside rbcl 1.1 lacks); anything else is a :class:`FormatError`.
  This matters because libsodium's ``add``/``sub`` return an all-zero buffer (the identity)
  when an input fails to decode, and ``rbcl`` ignores that return code: a raw byte string
  must never reach them. The identity is a valid element (commitments to a zero secret
  are the identity); callers that must refuse it say so (:meth:`Point.require_not_identity`).
* a scalar is parsed only from its canonical encoding (little-endian, ``< L``); reductions
  of 64 uniform bytes (:meth:`Scalar.from_uniform`) and public integers
  (:meth:`Scalar.from_int`) are the other ways in.

Scalars are secret by default: their ``repr`` never shows the value and equality is
constant time. Arithmetic on them goes through libsodium (constant time); only *public*
integers (node indices, Lagrange coefficients) are handled as Python ``int``.

:func:`hash_to_group` and :func:`hash_to_scalar` are ``hash_to_ristretto255`` of RFC 9380
and the ``HashToScalar`` of RFC 9497 (``expand_message_xmd`` with SHA-512, 64 bytes);
the tests check them against the RFC 9496 and RFC 9497 vectors.

``rbcl`` writes its bundled libsodium to a temporary file on import and never removes it;
this module unlinks that file once the library is mapped (see :func:`_forget_tempfile`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import sys

import rbcl

from ..errors import FormatError
from ..rng import RandomSource, default_rng

__all__ = [
    "POINT_BYTES",
    "SCALAR_BYTES",
    "UNIFORM_BYTES",
    "L",
    "Point",
    "Scalar",
    "expand_message_xmd",
    "hash_to_group",
    "hash_to_scalar",
]

L = 2**252 + 27742317777372353535851937790883648493
"""The order of the ristretto255 group."""

SCALAR_BYTES = 32
POINT_BYTES = 32
UNIFORM_BYTES = 64
"""Bytes of uniform input for a point (RFC 9496 ``from_uniform_bytes``) or a reduced scalar."""

_ZERO32 = bytes(32)


def _forget_tempfile() -> None:
    """Unlink the copy of libsodium ``rbcl`` left in the temp directory (already mapped).

    rbcl 1.1 writes its 2.7 MB library to ``tempfile.NamedTemporaryFile(delete=False)`` on
    every import: each keysplit process would leave one behind.
    """
    path = getattr(sys.modules.get("rbcl._sodium"), "lib_path", None)
    if isinstance(path, str) and os.path.basename(path).startswith("tmp"):
        with contextlib.suppress(OSError):
            os.unlink(path)


_forget_tempfile()


class Scalar:
    """An integer mod :data:`L`; secret by default (no value in ``repr``, constant-time ``==``)."""

    __slots__ = ("_b",)

    def __init__(self, canonical: bytes) -> None:
        # Internal: callers use from_bytes/from_int/from_uniform/random, which guarantee
        # a canonical encoding.
        self._b = canonical

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_bytes(cls, data: bytes) -> Scalar:
        """Parse a canonical 32-byte little-endian scalar (``< L``); else :class:`FormatError`."""
        if not isinstance(data, (bytes, bytearray)) or len(data) != SCALAR_BYTES:
            raise FormatError("a scalar is 32 bytes")
        data = bytes(data)
        # Canonical iff reducing it changes nothing (libsodium's reduce is constant time,
        # unlike comparing a secret integer with L).
        reduced = rbcl.crypto_core_ristretto255_scalar_reduce(data + _ZERO32)
        if not hmac.compare_digest(reduced, data):
            raise FormatError("not a canonical scalar")
        return cls(data)

    @classmethod
    def from_int(cls, value: int) -> Scalar:
        """A *public* integer reduced mod :data:`L` (indices, coefficients; never secrets)."""
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError("value must be an int")
        return cls((value % L).to_bytes(SCALAR_BYTES, "little"))

    @classmethod
    def from_uniform(cls, data: bytes) -> Scalar:
        """Reduce 64 uniform bytes mod :data:`L` (bias below 2^-259)."""
        if not isinstance(data, (bytes, bytearray)) or len(data) != UNIFORM_BYTES:
            raise ValueError("from_uniform takes 64 bytes")
        return cls(rbcl.crypto_core_ristretto255_scalar_reduce(bytes(data)))

    @classmethod
    def random(cls, rng: RandomSource | None = None) -> Scalar:
        """A uniform scalar drawn through the RNG seam (64 bytes, reduced)."""
        return cls.from_uniform((rng or default_rng()).random_bytes(UNIFORM_BYTES))

    @classmethod
    def zero(cls) -> Scalar:
        return cls(_ZERO32)

    @classmethod
    def one(cls) -> Scalar:
        return cls.from_int(1)

    # -- encoding ------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The canonical 32-byte encoding. Secret for shares: handle as key material."""
        return self._b

    def is_zero(self) -> bool:
        return hmac.compare_digest(self._b, _ZERO32)

    # -- arithmetic (libsodium, constant time) ---------------------------------------------
    def __add__(self, other: Scalar) -> Scalar:
        if not isinstance(other, Scalar):
            return NotImplemented
        return Scalar(rbcl.crypto_core_ristretto255_scalar_add(self._b, other._b))

    def __sub__(self, other: Scalar) -> Scalar:
        if not isinstance(other, Scalar):
            return NotImplemented
        return Scalar(rbcl.crypto_core_ristretto255_scalar_sub(self._b, other._b))

    def __mul__(self, other: Scalar) -> Scalar:
        if not isinstance(other, Scalar):
            return NotImplemented
        return Scalar(rbcl.crypto_core_ristretto255_scalar_mul(self._b, other._b))

    def __neg__(self) -> Scalar:
        return Scalar(rbcl.crypto_core_ristretto255_scalar_negate(self._b))

    def invert(self) -> Scalar:
        """The multiplicative inverse; ``ValueError`` for zero."""
        if self.is_zero():
            raise ValueError("zero has no inverse")
        return Scalar(rbcl.crypto_core_ristretto255_scalar_invert(self._b))

    # -- comparison and display ----------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Scalar):
            return NotImplemented
        return hmac.compare_digest(self._b, other._b)

    __hash__ = None  # type: ignore[assignment]  # secret values are not dict keys

    def __repr__(self) -> str:
        return "Scalar(<secret>)"

    def __reduce__(self) -> str | tuple[object, ...]:
        # Pickling a secret scalar (e.g. into a Dask task) is never what is meant.
        raise TypeError("Scalar values are not picklable")


class Point:
    """A ristretto255 group element (public): canonical encoding only."""

    __slots__ = ("_b",)

    def __init__(self, canonical: bytes) -> None:
        # Internal: from_bytes validates; the arithmetic below only ever feeds valid points
        # to libsodium, whose results are canonical encodings.
        self._b = canonical

    @classmethod
    def from_bytes(cls, data: bytes) -> Point:
        """Parse a canonical encoding (RFC 9496 4.3.1); anything else is :class:`FormatError`."""
        if not isinstance(data, (bytes, bytearray)) or len(data) != POINT_BYTES:
            raise FormatError("a group element is 32 bytes")
        data = bytes(data)
        # libsodium 1.0.18 (the one rbcl 1.1 bundles) ignores the top bit of s, so it
        # accepts a second, non-canonical encoding of half the points; RFC 9496 does not.
        if data[31] & 0x80 or not rbcl.crypto_core_ristretto255_is_valid_point(data):
            raise FormatError("not a canonical ristretto255 encoding")
        return cls(data)

    @classmethod
    def from_uniform(cls, data: bytes) -> Point:
        """RFC 9496 ``from_uniform_bytes`` (the one-way map) of 64 uniform bytes."""
        if not isinstance(data, (bytes, bytearray)) or len(data) != UNIFORM_BYTES:
            raise ValueError("from_uniform takes 64 bytes")
        return cls(rbcl.crypto_core_ristretto255_from_hash(bytes(data)))

    @classmethod
    def identity(cls) -> Point:
        return cls(_ZERO32)

    @classmethod
    def base(cls) -> Point:
        """The generator ``B`` of RFC 9496."""
        return _BASE

    @classmethod
    def base_mul(cls, scalar: Scalar) -> Point:
        """``scalar * B`` (the identity for the zero scalar)."""
        return cls(rbcl.crypto_scalarmult_ristretto255_base_allow_scalar_zero(scalar._b))

    def to_bytes(self) -> bytes:
        return self._b

    def hex(self) -> str:
        return self._b.hex()

    def is_identity(self) -> bool:
        return hmac.compare_digest(self._b, _ZERO32)

    def require_not_identity(self, what: str = "group element") -> Point:
        if self.is_identity():
            raise FormatError(f"{what} is the identity")
        return self

    def __add__(self, other: Point) -> Point:
        if not isinstance(other, Point):
            return NotImplemented
        return Point(rbcl.crypto_core_ristretto255_add(self._b, other._b))

    def __sub__(self, other: Point) -> Point:
        if not isinstance(other, Point):
            return NotImplemented
        return Point(rbcl.crypto_core_ristretto255_sub(self._b, other._b))

    def __neg__(self) -> Point:
        return Point(rbcl.crypto_core_ristretto255_sub(_ZERO32, self._b))

    def __mul__(self, scalar: Scalar) -> Point:
        """``scalar * self`` (constant time in the scalar; the identity for zero)."""
        if not isinstance(scalar, Scalar):
            return NotImplemented
        try:
            # Not rbcl's *_allow_scalar_zero variant: it re-validates the point first (about
            # a quarter of the cost here). libsodium fails only for an invalid point, which a
            # Point never is, or an identity product (zero scalar or identity point).
            return Point(rbcl.crypto_scalarmult_ristretto255(scalar._b, self._b))
        except RuntimeError:
            return Point(_ZERO32)

    __rmul__ = __mul__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Point):
            return NotImplemented
        return hmac.compare_digest(self._b, other._b)

    def __hash__(self) -> int:
        return hash(self._b)

    def __repr__(self) -> str:
        return f"Point({self._b.hex()})"


_BASE = Point(rbcl.crypto_scalarmult_ristretto255_base((1).to_bytes(32, "little")))


def expand_message_xmd(msg: bytes, dst: bytes, length: int) -> bytes:
    """``expand_message_xmd`` of RFC 9380 section 5.3.1 with SHA-512."""
    if len(dst) > 255:
        raise ValueError("DST longer than 255 bytes")
    b_in_bytes, r_in_bytes = 64, 128
    ell = -(-length // b_in_bytes)
    if ell > 255 or length > 65535:
        raise ValueError("requested length too large")
    dst_prime = dst + bytes([len(dst)])
    msg_prime = bytes(r_in_bytes) + msg + length.to_bytes(2, "big") + b"\x00" + dst_prime
    b0 = hashlib.sha512(msg_prime).digest()
    blocks = [hashlib.sha512(b0 + b"\x01" + dst_prime).digest()]
    for i in range(2, ell + 1):
        prev = blocks[-1]
        mixed = bytes(x ^ y for x, y in zip(b0, prev, strict=True))
        blocks.append(hashlib.sha512(mixed + bytes([i]) + dst_prime).digest())
    return b"".join(blocks)[:length]


def hash_to_group(msg: bytes, dst: bytes) -> Point:
    """``hash_to_ristretto255`` (RFC 9380 appendix B; RFC 9497 ``HashToGroup``)."""
    return Point.from_uniform(expand_message_xmd(msg, dst, UNIFORM_BYTES))


def hash_to_scalar(msg: bytes, dst: bytes) -> Scalar:
    """RFC 9497 ``HashToScalar`` for ristretto255-SHA512: 64 expanded bytes reduced mod L."""
    return Scalar.from_uniform(expand_message_xmd(msg, dst, UNIFORM_BYTES))
