"""Hypothesis fuzzing of every decoder: decode-and-re-encode exactly, or a KeysplitError.

For each parser, arbitrary input, mutations of valid encodings, and inputs whose
checksums are *valid* around random contents (so the deeper checks run) must either
decode to an object whose encoding is the input again (canonical form for text) or raise
a :class:`keysplit.KeysplitError`. Nothing else (IndexError, ValueError, OverflowError,
UnicodeError...) may escape. Example counts are bounded for the shared CI machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keysplit import KeysplitError, Share, _bech32, interop, slip39, split
from keysplit.rng import DeterministicRandom
from keysplit.slip39 import rs1024
from keysplit.slip39.wordlist import WORDS

FUZZ = settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])


def _mutate(data: bytes, draw: st.DrawFn) -> bytes:
    op = draw(st.sampled_from(["flip", "truncate", "extend", "replace", "none"]))
    if not data or op == "none":
        return data
    i = draw(st.integers(0, len(data) - 1))
    if op == "flip":
        return data[:i] + bytes([data[i] ^ (1 << draw(st.integers(0, 7)))]) + data[i + 1 :]
    if op == "truncate":
        return data[:i]
    if op == "extend":
        return data + draw(st.binary(min_size=1, max_size=8))
    return data[:i] + draw(st.binary(min_size=1, max_size=4)) + data[i + 1 :]


_SHARES = split(bytes(range(16)), 3, 5, rng=DeterministicRandom("fuzz"))
_SHARES_32 = split(bytes(32), 2, 2, rng=DeterministicRandom("fuzz32"))
_VALID_SHARE_BYTES = [s.to_bytes() for s in (*_SHARES, *_SHARES_32)]


# -- keysplit share, binary ----------------------------------------------------------------


@st.composite
def share_bytes(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["random", "mutated", "valid-check"]))
    if kind == "random":
        return draw(st.binary(max_size=120))
    if kind == "mutated":
        return _mutate(draw(st.sampled_from(_VALID_SHARE_BYTES)), draw)
    body = draw(st.binary(min_size=0, max_size=90))
    if draw(st.booleans()) and body:
        body = b"\x01" + body[1:]
    return b"KSSH" + body + hashlib.sha256(body).digest()[:4]


@FUZZ
@given(share_bytes())
def test_share_from_bytes(data: bytes) -> None:
    try:
        share = Share.from_bytes(data)
    except KeysplitError:
        return
    assert share.to_bytes() == data


# -- keysplit share, text -----------------------------------------------------------------


def _canon_share_text(text: str) -> str:
    return re.sub(r"[\s\-]+", "", text).lower()


@st.composite
def share_text(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["random", "charset", "mutated", "valid-check"]))
    if kind == "random":
        return draw(st.text(max_size=120))
    if kind == "charset":
        return "ks1" + draw(st.text(alphabet=_bech32.CHARSET + "-bio1 ", max_size=100))
    if kind == "mutated":
        s = str(draw(st.sampled_from([*_SHARES, *_SHARES_32])))
        raw = _mutate(s.encode(), draw)
        return raw.decode("latin-1")
    values = draw(st.lists(st.integers(0, 31), max_size=90))
    chars = _bech32.encode_chars(values + _bech32.checksum("ks", values))
    return "ks1" + chars


@FUZZ
@given(share_text())
def test_share_parse(text: str) -> None:
    try:
        share = Share.parse(text)
    except KeysplitError:
        return
    assert _canon_share_text(str(share)) == _canon_share_text(text)
    assert Share.parse(str(share)) == share


# -- SLIP-39 mnemonic -----------------------------------------------------------------------

_MNEMONICS = [
    m
    for group in slip39.generate_mnemonics(
        2, [(2, 3), (1, 1)], bytes(16), iteration_exponent=0, rng=DeterministicRandom("f")
    )
    for m in group
] + slip39.generate_mnemonics(
    1, [(2, 2)], bytes(32), iteration_exponent=0, extendable=False, rng=DeterministicRandom("g")
)[0]


@st.composite
def mnemonics(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["random", "words", "mutated", "valid-check"]))
    if kind == "random":
        return draw(st.text(max_size=200))
    if kind == "words":
        return " ".join(draw(st.lists(st.sampled_from(WORDS), max_size=40)))
    if kind == "mutated":
        words = draw(st.sampled_from(_MNEMONICS)).split()
        op = draw(st.sampled_from(["replace", "drop", "add", "swap"]))
        i = draw(st.integers(0, len(words) - 1))
        if op == "replace":
            words[i] = draw(st.sampled_from(WORDS))
        elif op == "drop":
            del words[i]
        elif op == "add":
            words.insert(i, draw(st.sampled_from(WORDS)))
        else:
            j = draw(st.integers(0, len(words) - 1))
            words[i], words[j] = words[j], words[i]
        return " ".join(words)
    # random words with a VALID checksum: reaches length, padding and parameter checks
    ext = draw(st.booleans())
    data = draw(st.lists(st.integers(0, 1023), min_size=2, max_size=36))
    id_exp = (data[0] << 10) | data[1]
    id_exp = (id_exp & ~0x10) | (0x10 if ext else 0)
    data[0], data[1] = id_exp >> 10, id_exp & 1023
    cs = b"shamir_extendable" if ext else b"shamir"
    return " ".join(WORDS[i] for i in data + rs1024.create_checksum(data, cs))


@FUZZ
@given(mnemonics())
def test_slip39_decode(text: str) -> None:
    try:
        share = slip39.decode_mnemonic(text)
    except KeysplitError:
        return
    assert share.mnemonic() == " ".join(text.lower().split())
    assert slip39.decode_mnemonic(share.mnemonic()) == share


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_MNEMONICS), min_size=1, max_size=5), st.data())
def test_slip39_combine_sets(chosen: list[str], data: st.DataObject) -> None:
    """Arbitrary subsets (with possible mutations) combine or raise a KeysplitError."""
    if data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(chosen) - 1))
        chosen[i] = data.draw(mnemonics())
    try:
        secret = slip39.combine_mnemonics(chosen)
    except KeysplitError:
        return
    assert len(secret) in (16, 32)


# -- pycryptodome / ssss text ----------------------------------------------------------------


@st.composite
def pyc_text(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["random", "shaped"]))
    if kind == "random":
        return draw(st.text(max_size=120))
    lines = draw(
        st.lists(
            st.tuples(
                st.integers(0, 99999),
                st.sampled_from(["-", ",", ":", " - ", "x"]),
                st.text(alphabet="0123456789abcdefABCDEFg", min_size=30, max_size=34),
            ),
            max_size=5,
        )
    )
    if draw(st.booleans()) and lines:
        lines = lines * draw(st.integers(1, 300))
    return "\n".join(f"{i}{sep}{h}" for i, sep, h in lines)


@FUZZ
@given(pyc_text())
def test_pycryptodome_parse(text: str) -> None:
    try:
        shares = interop.parse_pycryptodome(text)
    except KeysplitError:
        return
    assert interop.parse_pycryptodome(interop.format_pycryptodome(shares)) == shares
    with contextlib.suppress(KeysplitError):
        interop.combine_pycryptodome(shares)
