"""The SLIP-39 wordlist: 1024 words, one per 10-bit value.

Vendored unchanged from the reference implementation (see ``LICENSE.wordlist``). Every
word is 4 to 8 letters and is uniquely identified by its first four letters.

Word <-> index conversion is a table lookup on (secret) share data, as in every mnemonic
implementation; the constant-time promise of :mod:`keysplit.hazmat.gf256` covers the arithmetic,
not the text encoding, which runs once per share on a ceremony machine.
"""

from __future__ import annotations

from importlib import resources

from ...errors import FormatError

__all__ = ["RADIX", "WORDS", "indices_to_words", "words_to_indices"]

RADIX = 1024


def _load() -> tuple[str, ...]:
    text = resources.files(__package__).joinpath("wordlist.txt").read_text("ascii")
    words = tuple(text.split())
    if len(words) != RADIX or len(set(words)) != RADIX:  # pragma: no cover - packaging error
        raise RuntimeError("the vendored SLIP-39 wordlist is damaged")
    return words


WORDS = _load()
_INDEX = {w: i for i, w in enumerate(WORDS)}


def words_to_indices(mnemonic: str) -> list[int]:
    """Split a mnemonic on whitespace (any case) and map each word to its 10-bit value.

    The error names the position of an unknown word, never the word itself (a
    mistyped word is still part of a secret).
    """
    if not isinstance(mnemonic, str):
        raise TypeError("a mnemonic is a str")
    out = []
    for pos, word in enumerate(mnemonic.lower().split(), start=1):
        idx = _INDEX.get(word)
        if idx is None:
            raise FormatError(
                f"word {pos} is not in the SLIP-39 wordlist",
                hint="check the spelling of that word against the share",
            )
        out.append(idx)
    return out


def indices_to_words(indices: list[int]) -> list[str]:
    """Map 10-bit values to words."""
    return [WORDS[i] for i in indices]
