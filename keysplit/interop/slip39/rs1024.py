"""RS1024: the Reed-Solomon checksum over GF(1024) that ends every SLIP-39 mnemonic.

Three check words (30 bits) detect any error in up to 3 words and make a random typo
pass with probability about 2^-30. The customization string binds the checksum to the
share format: ``b"shamir"`` for classic shares, ``b"shamir_extendable"`` for shares
with the extendable-backup flag, so the two kinds cannot be confused.

The generator polynomial constants are those of the SLIP-39 specification. The update
is branch-free (the mask ``-bit & GEN`` replaces an ``if``), since the words it runs
over encode secret share values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["CHECKSUM_WORDS", "create_checksum", "verify_checksum"]

CHECKSUM_WORDS = 3
_GEN = (
    0xE0E040,
    0x1C1C080,
    0x3838100,
    0x7070200,
    0xE0E0009,
    0x1C0C2412,
    0x38086C24,
    0x3090FC48,
    0x21B1F890,
    0x3F3F120,
)


def _polymod(values: Iterable[int]) -> int:
    chk = 1
    for v in values:
        b = chk >> 20
        chk = ((chk & 0xFFFFF) << 10) ^ v
        for i in range(10):
            chk ^= _GEN[i] & -((b >> i) & 1)
    return chk


def create_checksum(data: Sequence[int], customization: bytes) -> list[int]:
    """The three 10-bit check values for ``data`` (word indices)."""
    pm = _polymod([*customization, *data, 0, 0, 0]) ^ 1
    return [(pm >> (10 * i)) & 1023 for i in reversed(range(CHECKSUM_WORDS))]


def verify_checksum(data: Sequence[int], customization: bytes) -> bool:
    """True if ``data`` (including its three check words) has a valid checksum."""
    return _polymod([*customization, *data]) == 1
