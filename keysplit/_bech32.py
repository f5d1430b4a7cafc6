"""Bech32m checksums (BIP-350) over the bech32 base32 alphabet, for typable encodings.

Why bech32m: its BCH code (degree 6 over GF(32)) detects every error that touches at
most 4 characters in strings up to 89 characters, so any single typo and any swap of two
characters is caught, and it avoids the visually ambiguous ``1 b i o``. Unlike BIP-173/350
we do not cap the string at 90 characters (age does the same): beyond 89 characters, single
substitutions are still always detected (the generator has a non-zero constant term, so
``e * x^i`` is never a codeword for a code length below 1023), only the 4-error guarantee
is lost.

The polymod runs without data-dependent branches (masks instead of ``if``). Mapping
5-bit values to characters is a table lookup; share text is encoded once per custodian,
and CPython string handling is not constant-time anyway (see SECURITY.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "CHARSET",
    "MAX_DATA_CHARS",
    "checksum",
    "decode_chars",
    "encode_chars",
    "from_5bit",
    "to_5bit",
    "verify",
]

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
"""The bech32 alphabet (no ``1 b i o``)."""

MAX_DATA_CHARS = 1023 - 6
"""Longest data part (before the 6 checksum characters) the code is defined for."""

_BECH32M_CONST = 0x2BC830A3
_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_REV = {c: i for i, c in enumerate(CHARSET)}


def _polymod(values: Iterable[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = ((chk & 0x1FFFFFF) << 5) ^ v
        for i in range(5):
            chk ^= _GEN[i] & -((top >> i) & 1)
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def checksum(hrp: str, data: Sequence[int]) -> list[int]:
    """The 6 five-bit checksum values for ``hrp`` and the 5-bit ``data``."""
    pm = _polymod([*_hrp_expand(hrp), *data, 0, 0, 0, 0, 0, 0]) ^ _BECH32M_CONST
    return [(pm >> (5 * (5 - i))) & 31 for i in range(6)]


def verify(hrp: str, data_with_checksum: Sequence[int]) -> bool:
    """True if the last 6 values of ``data_with_checksum`` are its valid checksum."""
    return _polymod([*_hrp_expand(hrp), *data_with_checksum]) == _BECH32M_CONST


def _regroup(values: Iterable[int], width: int, into: int) -> tuple[list[int], int, int]:
    """Regroup ``width``-bit values into ``into``-bit ones, most significant bit first:
    (the whole groups, how many bits are left over, their value). The one regrouping of
    :func:`to_5bit` and :func:`from_5bit`, over secret share bytes: every branch and loop
    count depends on the number of bits held (the position), none on the values, which
    pass through shifts and masks only."""
    acc = 0
    bits = 0
    out = []
    mask = (1 << into) - 1
    for v in values:
        acc = (acc << width) | v
        bits += width
        while bits >= into:
            bits -= into
            out.append((acc >> bits) & mask)
        acc &= (1 << bits) - 1
    return out, bits, acc


def to_5bit(data: bytes) -> list[int]:
    """Regroup bytes into 5-bit values, zero-padding the last group."""
    out, bits, acc = _regroup(data, 8, 5)
    if bits:  # the length's, not the data's: bits is 8 * len(data) mod 5
        out.append((acc << (5 - bits)) & 31)
    return out


def from_5bit(values: Sequence[int]) -> bytes | None:
    """Regroup 5-bit values into bytes; None if the padding is not minimal and zero."""
    out, bits, acc = _regroup(values, 5, 8)
    if bits >= 5 or acc:  # acc holds the padding bits only, no bit of any byte
        return None
    return bytes(out)


def decode_chars(text: str) -> tuple[list[int], int] | tuple[None, int]:
    """Map characters to 5-bit values; on failure return (None, position of the bad char)."""
    out = []
    for pos, c in enumerate(text):
        v = _REV.get(c)
        if v is None:
            return None, pos
        out.append(v)
    return out, -1


def encode_chars(values: Iterable[int]) -> str:
    """Map 5-bit values to characters."""
    return "".join(CHARSET[v] for v in values)
