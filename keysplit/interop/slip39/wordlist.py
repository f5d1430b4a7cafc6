"""The SLIP-39 wordlist: 1024 words, one per 10-bit value.

Vendored unchanged from the reference implementation (see ``LICENSE.wordlist``). Every
word is 4 to 8 letters and is uniquely identified by its first four letters.

Word <-> index conversion is a table lookup on (secret) share data, as in every mnemonic
implementation; the constant-time promise of :mod:`keysplit.hazmat.gf256` covers the arithmetic,
not the text encoding, which runs once per share on a ceremony machine.
"""

from __future__ import annotations

import unicodedata
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

    Text that is not ASCII is first brought to NFKC, and must then be ASCII: the words
    are ASCII letters, and NFKC maps to them only the same letters in another form
    (fullwidth "ａｂｌｅ" from an input method, the KELVIN SIGN, U+212A, for "K") and to a
    space only the other spaces (a no-break space pasted from a document, U+00A0, U+3000).
    What is still not ASCII is refused with its position, rather than left to chance: the
    reference implementation (shamir-mnemonic) lower-cases and splits on any Unicode
    whitespace, so it took the KELVIN SIGN (whose lower case is "k") but no other
    non-ASCII letter, and it splits on LINE SEPARATOR (U+2028) or NEL (U+0085), which
    keysplit refuses. The RS1024 checksum still checks every share.

    The error names the position of an unknown word, never the word itself (a
    mistyped word is still part of a secret).
    """
    if not isinstance(mnemonic, str):
        raise TypeError("a mnemonic is a str")
    text = mnemonic if mnemonic.isascii() else unicodedata.normalize("NFKC", mnemonic)
    out = []
    for pos, word in enumerate(text.split(), start=1):
        if not word.isascii():
            raise FormatError(
                f"word {pos} holds a character that is not a letter a-z",
                hint="type the share's words in plain letters a-z, separated by spaces",
            )
        idx = _INDEX.get(word.lower())
        if idx is None:
            raise FormatError(
                f"word {pos} is not in the SLIP-39 wordlist",
                hint="check the spelling of that word against the share",
            )
        out.append(idx)
    if not text.isascii():  # every word is ASCII: a separator is not
        raise FormatError(
            "the words are separated by a character that is not a space or a line break",
            hint="separate the share's words by spaces",
        )
    return out


def indices_to_words(indices: list[int]) -> list[str]:
    """Map 10-bit values to words."""
    return [WORDS[i] for i in indices]
