"""Shares in pycryptodome's ``Crypto.Protocol.SecretSharing.Shamir`` form (and ssss's).

**Hazmat.** pycryptodome shares a 16-byte secret over GF(2^128) (polynomial
x^128 + x^7 + x^2 + x + 1, elements as big-endian 128-bit integers): share ``i`` is
``(i, p(i))`` with ``p(0)`` the secret. With ``ssss=True`` it adds ``x^k`` to every share
(k = threshold), which makes the shares those of the ``ssss`` tool run with ``-D`` (no
diffusion layer) on a 128-bit secret. These shares carry no threshold, checksum or set
id: a mistyped or foreign share silently gives a wrong secret. keysplit cannot add that
check after the fact, but given *more* shares than the threshold it verifies that every
extra share lies on the same polynomial (:class:`keysplit.RecoveryError` otherwise).

keysplit splits over GF(2^8), pycryptodome over GF(2^128): the two share sets are points
of different polynomials over different fields, so no share can be transcoded into the
other form on its own. Converting means combining and re-splitting, which these
functions do in memory only.

Secret data is multiplied only by public field elements (x-coordinates and Lagrange
coefficients) with a branch-free shift-and-add loop whose length depends on the public
operand only; Python integers are not guaranteed constant time, so this is "no
secret-dependent branches", not more.

Text form, one share per line: ``<index>-<32 hex digits>`` as printed by ``ssss-split -x``
(an optional ``<token>-`` prefix, ``,`` or ``:`` separators and surrounding blanks are
accepted on input).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence

from ..errors import DuplicateShareError, FormatError, InsufficientSharesError, RecoveryError
from ..rng import RandomSource, default_rng

__all__ = [
    "SECRET_BYTES",
    "combine_pycryptodome",
    "format_pycryptodome",
    "parse_pycryptodome",
    "split_pycryptodome",
]

SECRET_BYTES = 16
_MASK = (1 << 128) - 1
_R = 0x87  # x^7 + x^2 + x + 1
_MAX_INDEX = 1 << 16  # generous; pycryptodome/ssss use 1..n, ssss caps n at 255
_MAX_SHARES = 255


def _mul(a: int, b: int) -> int:
    """GF(2^128) product; ``b`` must be PUBLIC (the loop runs over its bits), ``a`` may be
    secret (masked, branch-free shift-and-add)."""
    z = 0
    for i in range(b.bit_length()):
        z ^= a & -((b >> i) & 1)
        a = ((a << 1) & _MASK) ^ (_R & -(a >> 127))
    return z


def _inv(a: int) -> int:
    """Inverse of a PUBLIC non-zero element: binary-field extended Euclid (variable time,
    used on x-coordinate differences only)."""
    if a == 0:
        raise ValueError("0 has no inverse")
    u, v = a, (1 << 128) | _R
    g1, g2 = 1, 0
    while u != 1:
        j = u.bit_length() - v.bit_length()
        if j < 0:
            u, v, g1, g2, j = v, u, g2, g1, -j
        u ^= v << j
        g1 ^= g2 << j
    return g1


def _pow(a: int, e: int) -> int:
    result = 1
    for _ in range(e):
        result = _mul(result, a)
    return result


def _lagrange(xs: Sequence[int], at: int) -> list[int]:
    out = []
    for j, xj in enumerate(xs):
        num, den = 1, 1
        for m, xm in enumerate(xs):
            if m != j:
                num = _mul(num, at ^ xm)
                den = _mul(den, xj ^ xm)
        out.append(_mul(num, _inv(den)))
    return out


def _interpolate(points: Sequence[tuple[int, int]], at: int) -> int:
    xs = [x for x, _ in points]
    acc = 0
    for (_, y), c in zip(points, _lagrange(xs, at), strict=True):
        acc ^= _mul(y, c)
    return acc


def _check_threshold(threshold: int, count: int) -> None:
    for name, v in (("threshold", threshold), ("count", count)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int")
    if not 1 <= threshold <= count <= _MAX_SHARES:
        raise ValueError("need 1 <= threshold <= count <= 255")


def split_pycryptodome(
    secret: bytes,
    threshold: int,
    count: int,
    *,
    ssss: bool = False,
    rng: RandomSource | None = None,
) -> list[tuple[int, bytes]]:
    """Split a 16-byte secret into ``count`` shares ``(i, 16 bytes)``, i = 1..count.

    The shares are exactly what ``Shamir.combine`` (with the same ``ssss`` flag) takes.
    """
    if not isinstance(secret, (bytes, bytearray)) or len(secret) != SECRET_BYTES:
        raise ValueError("pycryptodome shares a secret of exactly 16 bytes")
    _check_threshold(threshold, count)
    rng = rng if rng is not None else default_rng()
    # p(x) = secret + c1 x + ... + c_{k-1} x^{k-1}; Horner from the top coefficient.
    coeffs = [int.from_bytes(rng.random_bytes(16), "big") for _ in range(threshold - 1)]
    coeffs.append(int.from_bytes(bytes(secret), "big"))
    shares = []
    for x in range(1, count + 1):
        y = 0
        for c in coeffs:
            y = _mul(y, x) ^ c
        if ssss:
            y ^= _pow(x, threshold)
        shares.append((x, y.to_bytes(16, "big")))
    return shares


def combine_pycryptodome(
    shares: Sequence[tuple[int, bytes]], *, threshold: int | None = None, ssss: bool = False
) -> bytes:
    """Recover the 16-byte secret from pycryptodome/ssss shares.

    ``threshold`` defaults to the number of shares (pycryptodome's assumption). With more
    shares than ``threshold``, the first ``threshold`` determine the secret and every
    other one must lie on the same polynomial, else :class:`RecoveryError`.
    """
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, int):
            raise TypeError("threshold must be an int")
        if not 1 <= threshold <= _MAX_SHARES:
            raise ValueError(f"threshold must be in 1..{_MAX_SHARES}")
    if len(shares) == 0:
        raise InsufficientSharesError("no shares given")
    if len(shares) > _MAX_SHARES:
        raise FormatError(f"{len(shares)} shares given; no split has more than {_MAX_SHARES}")
    k = len(shares) if threshold is None else threshold
    if len(shares) < k:
        raise InsufficientSharesError(f"need {k} shares, got {len(shares)}")
    points: list[tuple[int, int]] = []
    seen: set[int] = set()
    for n, (x, y) in enumerate(shares, start=1):
        if isinstance(x, bool) or not isinstance(x, int):
            raise TypeError("share indices are ints")
        if not isinstance(y, (bytes, bytearray)):
            raise TypeError("share values are bytes")
        if not 1 <= x < _MAX_INDEX:
            raise FormatError(f"share {n}: index {x} out of range")
        if len(y) != SECRET_BYTES:
            raise FormatError(f"share {n}: a share value is 16 bytes, got {len(y)}")
        if x in seen:
            raise DuplicateShareError(f"share {n}: index {x} given twice", index=n)
        seen.add(x)
        v = int.from_bytes(bytes(y), "big")
        if ssss:
            v ^= _pow(x, k)
        points.append((x, v))
    base = points[:k]
    for n, (x, v) in enumerate(points[k:], start=k + 1):
        expect = _interpolate(base, x)
        if not hmac.compare_digest(expect.to_bytes(16, "big"), v.to_bytes(16, "big")):
            raise RecoveryError(
                f"share {n} does not lie on the same polynomial as shares 1..{k}",
                index=n,
                hint="a share is mistyped or from another split",
            )
    return _interpolate(base, 0).to_bytes(16, "big")


_LINE = re.compile(
    r"^\s*(?:[^\s,:-]+-)?0*(\d{1,5})\s*[-,:]\s*([0-9a-fA-F]{32})\s*$",
)


def parse_pycryptodome(text: str) -> list[tuple[int, bytes]]:
    """Parse ``index-hex`` lines (blank lines and ``#`` comments ignored)."""
    if not isinstance(text, str):
        raise TypeError("text must be a str")
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.isascii():  # \d and int() would read a full-width or Arabic-Indic index
            c = next(c for c in line if not c.isascii())
            raise FormatError(
                f"line {lineno}: a character that is not ASCII, {c!r} (U+{ord(c):04X}); "
                "shares of this form are ASCII text"
            )
        m = _LINE.match(line)
        if m is None:
            raise FormatError(
                f"line {lineno}: not a share of the form <index>-<32 hex digits>",
            )
        idx = int(m.group(1))
        if not 1 <= idx < _MAX_INDEX:
            raise FormatError(f"line {lineno}: index out of range")
        out.append((idx, bytes.fromhex(m.group(2))))
    return out


def format_pycryptodome(shares: Sequence[tuple[int, bytes]]) -> str:
    """One ``index-hex`` line per share (ssss's ``-x`` output without a token)."""
    width = len(str(max((x for x, _ in shares), default=1)))
    return "".join(f"{x:0{width}d}-{bytes(y).hex()}\n" for x, y in shares)
