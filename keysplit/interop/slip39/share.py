"""One SLIP-39 share and its mnemonic encoding, parsed strictly.

Layout (10-bit words, most significant bit first):

====================  ======  =============================================
field                 bits    meaning
====================  ======  =============================================
identifier            15      random; equal in every share of one backup
extendable            1       1: checksum customization "shamir_extendable"
iteration exponent    4       PBKDF2 rounds = 10000 << e
group index           4       0..15
group threshold - 1   4
group count - 1       4
member index          4       0..15 (the x-coordinate of the member share)
member threshold - 1  4
padded share value    10*n    left-padded with at most 8 zero bits
checksum              30      RS1024 over everything before it
====================  ======  =============================================

A 128-bit secret gives 20 words, a 256-bit one 33.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import ChecksumError, FormatError
from . import rs1024
from .wordlist import indices_to_words, words_to_indices

__all__ = ["MAX_SHARES", "MIN_SECRET_BYTES", "Slip39Share", "decode_mnemonic", "encode_mnemonic"]

MAX_SHARES = 16
MIN_SECRET_BYTES = 16
_METADATA_WORDS = 4 + rs1024.CHECKSUM_WORDS
_MIN_WORDS = _METADATA_WORDS + 13  # 13 words carry the 128-bit minimum


def customization(extendable: bool) -> bytes:
    """The RS1024 customization string for a share kind."""
    return b"shamir_extendable" if extendable else b"shamir"


@dataclass(frozen=True)
class Slip39Share:
    """A decoded SLIP-39 share. ``value`` is secret; ``repr`` redacts it.

    Thresholds and counts are the human numbers (1..16), indices are 0-based as on the
    wire.
    """

    identifier: int
    extendable: bool
    iteration_exponent: int
    group_index: int
    group_threshold: int
    group_count: int
    member_index: int
    member_threshold: int
    value: bytes = field(repr=False)

    def __post_init__(self) -> None:
        checks = (
            ("identifier", self.identifier, 0, (1 << 15) - 1),
            ("iteration_exponent", self.iteration_exponent, 0, 15),
            ("group_index", self.group_index, 0, MAX_SHARES - 1),
            ("group_threshold", self.group_threshold, 1, MAX_SHARES),
            ("group_count", self.group_count, 1, MAX_SHARES),
            ("member_index", self.member_index, 0, MAX_SHARES - 1),
            ("member_threshold", self.member_threshold, 1, MAX_SHARES),
        )
        for name, v, lo, hi in checks:
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an int")
            if not lo <= v <= hi:
                raise ValueError(f"{name} must be in {lo}..{hi}")
        if not isinstance(self.extendable, bool):
            raise TypeError("extendable must be a bool")
        if not isinstance(self.value, bytes):
            raise TypeError("value must be bytes")
        if len(self.value) < MIN_SECRET_BYTES or len(self.value) % 2:
            raise ValueError("value must be an even number of bytes, at least 16")
        if self.group_threshold > self.group_count:
            raise ValueError("group_threshold must not exceed group_count")

    def __repr__(self) -> str:
        return (
            f"Slip39Share(identifier={self.identifier}, extendable={self.extendable}, "
            f"iteration_exponent={self.iteration_exponent}, group={self.group_index + 1}"
            f"/{self.group_count} (threshold {self.group_threshold}), "
            f"member={self.member_index + 1} (threshold {self.member_threshold}), "
            f"value=<{len(self.value)} bytes redacted>)"
        )

    def indices(self) -> list[int]:
        """The 10-bit word values, checksum included."""
        id_exp = (self.identifier << 5) | (int(self.extendable) << 4) | self.iteration_exponent
        params = (
            (self.group_index << 16)
            | ((self.group_threshold - 1) << 12)
            | ((self.group_count - 1) << 8)
            | (self.member_index << 4)
            | (self.member_threshold - 1)
        )
        n_value = -(-len(self.value) * 8 // 10)
        v = int.from_bytes(self.value, "big")
        data = [id_exp >> 10, id_exp & 1023, params >> 10, params & 1023]
        data += [(v >> (10 * i)) & 1023 for i in reversed(range(n_value))]
        return data + rs1024.create_checksum(data, customization(self.extendable))

    def words(self) -> list[str]:
        """The mnemonic as a list of words."""
        return indices_to_words(self.indices())

    def mnemonic(self) -> str:
        """The mnemonic: lower-case words separated by single spaces."""
        return " ".join(self.words())

    @classmethod
    def from_mnemonic(cls, mnemonic: str) -> Slip39Share:
        """Parse a mnemonic (case and runs of whitespace are ignored; text that is not ASCII
        is read through NFKC and must then be ASCII: :func:`.wordlist.words_to_indices`).

        Raises :class:`FormatError` (unknown word, bad length or padding, impossible
        parameters) or :class:`ChecksumError`.
        """
        data = words_to_indices(mnemonic)
        if len(data) < _MIN_WORDS:
            raise FormatError(
                f"a SLIP-39 mnemonic has at least {_MIN_WORDS} words, got {len(data)}"
            )
        n_value = len(data) - _METADATA_WORDS
        padding = (10 * n_value) % 16
        if padding > 8:
            raise FormatError(f"{len(data)} words is not a valid SLIP-39 mnemonic length")
        id_exp = (data[0] << 10) | data[1]
        extendable = bool((id_exp >> 4) & 1)
        if not rs1024.verify_checksum(data, customization(extendable)):
            raise ChecksumError("SLIP-39 checksum mismatch", hint="a word is mistyped or missing")
        params = (data[2] << 10) | data[3]
        group_threshold = ((params >> 12) & 15) + 1
        group_count = ((params >> 8) & 15) + 1
        if group_threshold > group_count:
            raise FormatError("group threshold exceeds group count")
        v = 0
        for w in data[4 : 4 + n_value]:
            v = (v << 10) | w
        n_bytes = (10 * n_value - padding) // 8
        if v >> (8 * n_bytes):
            raise FormatError("invalid padding in SLIP-39 share value")
        return cls(
            identifier=id_exp >> 5,
            extendable=extendable,
            iteration_exponent=id_exp & 15,
            group_index=params >> 16,
            group_threshold=group_threshold,
            group_count=group_count,
            member_index=(params >> 4) & 15,
            member_threshold=(params & 15) + 1,
            value=v.to_bytes(n_bytes, "big"),
        )


def decode_mnemonic(mnemonic: str) -> Slip39Share:
    """Parse one mnemonic; see :meth:`Slip39Share.from_mnemonic`."""
    return Slip39Share.from_mnemonic(mnemonic)


def encode_mnemonic(share: Slip39Share) -> str:
    """Encode one share as its mnemonic."""
    return share.mnemonic()
