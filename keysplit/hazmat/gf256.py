"""GF(2^8) arithmetic with the AES polynomial x^8 + x^4 + x^3 + x + 1 (0x11B), on numpy.

**Hazmat.** These are building blocks for :mod:`keysplit.hazmat.shamir`; most users want
:func:`keysplit.split` / :func:`keysplit.combine` instead.

Constant-time discipline: every function that takes a *secret* array (``xtime``,
``mul_const``, ``mul``, ``inv``) uses only data-independent operations on it (add, compare,
multiply by 0/1 masks, xor) and never uses secret bytes as a branch condition or as a table
index. Branches and tables appear only on *public* values: the constant of
``mul_const`` (an x-coordinate or a Lagrange coefficient) and the scalar helpers
``mul_scalar``/``inv_scalar`` used to compute those coefficients. ``mul_const`` via xtime
chains is also the fastest variant measured in numpy (``np.take`` table lookups are slower).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "EXP",
    "LOG",
    "POLY",
    "inv",
    "inv_scalar",
    "mul",
    "mul_const",
    "mul_scalar",
    "pow_scalar",
    "xtime",
]

POLY = 0x11B
_RED = np.uint8(0x1B)


def _build_tables() -> tuple[tuple[int, ...], tuple[int, ...]]:
    exp = [0] * 510
    log = [0] * 256
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        # multiply by the generator 3 = x + 1
        x ^= (x << 1) ^ (POLY if x & 0x80 else 0)
        x &= 0xFF
    for i in range(255, 510):
        exp[i] = exp[i - 255]
    return tuple(exp), tuple(log)


EXP, LOG = _build_tables()
"""Exp/log tables (generator 3). For PUBLIC values only: indexing them with a secret leaks."""


def mul_scalar(a: int, b: int) -> int:
    """Multiply two PUBLIC field elements (table based; not for secrets)."""
    if not (0 <= a < 256 and 0 <= b < 256):
        raise ValueError("field elements are integers in 0..255")
    if a == 0 or b == 0:
        return 0
    return EXP[LOG[a] + LOG[b]]


def inv_scalar(a: int) -> int:
    """Inverse of a PUBLIC non-zero field element."""
    if not 0 < a < 256:
        raise ValueError("0 has no inverse" if a == 0 else "field elements are integers in 0..255")
    return EXP[255 - LOG[a]]


def pow_scalar(a: int, e: int) -> int:
    """``a ** e`` for a PUBLIC field element and a non-negative exponent."""
    if e < 0:
        raise ValueError("exponent must be non-negative")
    result = 1
    for _ in range(e):
        result = mul_scalar(result, a)
    return result


def _check(a: np.ndarray) -> None:
    if not isinstance(a, np.ndarray) or a.dtype != np.uint8:
        raise TypeError("expected a numpy uint8 array")


def xtime(
    a: np.ndarray, out: np.ndarray | None = None, tmp: np.ndarray | None = None
) -> np.ndarray:
    """Multiply every element by x (= 2): ``(a << 1) ^ (0x1B if top bit else 0)``, branch-free.

    ``out`` and ``tmp`` may be given (same shape, uint8) to avoid allocation; ``out`` may be
    ``a`` itself.
    """
    _check(a)
    if tmp is None:
        tmp = np.empty_like(a)
    if out is None:
        out = np.empty_like(a)
    # mask = 0x1B where the top bit is set, else 0: a signed compare, then a 0/1 multiply.
    np.less(a.view(np.int8), 0, out=tmp.view(np.bool_))
    np.multiply(tmp, _RED, out=tmp)
    np.add(a, a, out=out)
    np.bitwise_xor(out, tmp, out=out)
    return out


def mul_const(a: np.ndarray, c: int, out: np.ndarray | None = None) -> np.ndarray:
    """``a * c`` for a secret array ``a`` and a PUBLIC constant ``c``.

    Runs an xtime chain over ``a`` and xors the terms selected by the bits of ``c``: the
    branches depend on ``c`` only.
    """
    _check(a)
    if not 0 <= c < 256:
        raise ValueError("constant must be in 0..255")
    if out is None:
        out = np.zeros_like(a)
    else:
        out[...] = 0
    if c == 0:
        return out
    term = a.copy()
    tmp = np.empty_like(a)
    while True:
        if c & 1:
            np.bitwise_xor(out, term, out=out)
        c >>= 1
        if not c:
            break
        xtime(term, out=term, tmp=tmp)
    return out


def mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise product of two (possibly secret) arrays, constant time.

    Eight rounds of: ``out ^= a & -(bit i of b)``; ``a = xtime(a)``. Masks are computed
    arithmetically, never branched on.
    """
    _check(a)
    _check(b)
    a, b = np.broadcast_arrays(a, b)
    term = np.array(a, dtype=np.uint8, copy=True)
    out = np.zeros_like(term)
    tmp = np.empty_like(term)
    bit = np.empty_like(term)
    for i in range(8):
        np.right_shift(b, i, out=bit)
        np.bitwise_and(bit, 1, out=bit)
        np.negative(bit, out=bit)  # 0 -> 0x00, 1 -> 0xFF
        np.bitwise_and(bit, term, out=bit)
        np.bitwise_xor(out, bit, out=out)
        if i < 7:
            xtime(term, out=term, tmp=tmp)
    return out


def inv(a: np.ndarray) -> np.ndarray:
    """Element-wise inverse as ``a ** 254`` (maps 0 to 0), constant time."""
    _check(a)
    # 254 = 0b11111110: square-and-multiply with a fixed, public schedule.
    result = np.ones_like(a)
    base = a.copy()
    for i in range(8):
        if (254 >> i) & 1:
            result = mul(result, base)
        base = mul(base, base)
    return result
