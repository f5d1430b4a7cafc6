"""keysplit.share: encodings, known answers, checksums, verified combine."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from buffers import KINDS, OwnBytes, as_buffer
from hypothesis import given, settings
from hypothesis import strategies as st
from paths import VECTORS_DIR
from shamir_mnemonic.shamir import RawShare, _interpolate

import keysplit
from keysplit import (
    ChecksumError,
    DuplicateShareError,
    FormatError,
    InsufficientSharesError,
    KeysplitError,
    MixedSharesError,
    RecoveryError,
    Share,
    _bech32,
    combine,
    split,
    verify_set,
)
from keysplit.rng import DeterministicRandom
from keysplit.share import secret_fingerprint

VECTORS = json.loads((VECTORS_DIR / "shares.json").read_text())

# expect -> (exception class, message fragment, must NOT be a ChecksumError)
PARSE_EXPECT = {
    "bad-checksum": (ChecksumError, "checksum mismatch|invalid character", False),
    "bad-prefix": (FormatError, "not a keysplit share", True),
    "truncated": (FormatError, "truncated", True),
    "trailing": (FormatError, "trailing", True),
    "unknown-version": (FormatError, "unsupported share version", True),
    "bad-params": (FormatError, "invalid", True),
}
COMBINE_EXPECT = {
    "insufficient": InsufficientSharesError,
    "mixed-sets": MixedSharesError,
    "duplicate": DuplicateShareError,
    "recovery-failure": RecoveryError,
}


def _tag(set_id: bytes, k: int, n: int, secret: bytes) -> bytes:
    data = b"keysplit share check v1\x00" + set_id + bytes([1, k, n, len(secret)]) + secret
    return hashlib.sha256(data).digest()[:8]


# -- known answers ------------------------------------------------------------------------


@pytest.mark.parametrize("case", VECTORS["splits"], ids=lambda c: c["name"])
def test_split_known_answers(case: dict) -> None:
    secret = bytes.fromhex(case["secret"])
    k, n = case["threshold"], case["count"]
    shares = split(secret, k, n, rng=DeterministicRandom(case["seed"]))
    by_index = {s.index: s for s in shares}
    assert len(shares) == n
    for entry in case["shares"]:
        s = by_index[entry["index"]]
        assert str(s).replace("-", "") == entry["text"].replace("-", "")
        assert s.to_bytes().hex() == entry["binary"]
        assert Share.parse(entry["text"]) == s
        assert Share.from_bytes(bytes.fromhex(entry["binary"])) == s
        assert s.set_id.hex() == case["set_id"]
    listed = [Share.parse(e["text"]) for e in case["shares"]]
    # Independent interpolation (shamir-mnemonic) of the payload gives secret || tag.
    raw = [RawShare(s.index, s.payload) for s in listed[:k]]
    assert _interpolate(raw, 0) == secret + _tag(listed[0].set_id, k, n, secret)
    assert combine(listed[-k:]) == secret
    assert combine(listed) == secret


@pytest.mark.parametrize("case", VECTORS["parse_text"], ids=lambda c: c["name"])
def test_parse_text_vectors(case: dict) -> None:
    if case["expect"] == "ok":
        assert Share.parse(case["text"]).index == case["index"]
        return
    cls, fragment, not_checksum = PARSE_EXPECT[case["expect"]]
    with pytest.raises(cls, match=fragment) as info:
        Share.parse(case["text"])
    if not_checksum:
        assert not isinstance(info.value, ChecksumError)


@pytest.mark.parametrize("case", VECTORS["parse_binary"], ids=lambda c: c["name"])
def test_parse_binary_vectors(case: dict) -> None:
    data = bytes.fromhex(case["hex"])
    if case["expect"] == "ok":
        assert Share.from_bytes(data).index == case["index"]
        return
    cls, fragment, not_checksum = PARSE_EXPECT[case["expect"]]
    with pytest.raises(cls, match=fragment) as info:
        Share.from_bytes(data)
    if not_checksum:
        assert not isinstance(info.value, ChecksumError)


@pytest.mark.parametrize("case", VECTORS["combine"], ids=lambda c: c["name"])
def test_combine_vectors(case: dict) -> None:
    shares = [Share.parse(t) for t in case["shares"]]
    if case["expect"] == "ok":
        assert combine(shares).hex() == case["secret"]
        return
    with pytest.raises(COMBINE_EXPECT[case["expect"]]) as info:
        combine(shares)
    if "bad_index" in case:
        assert info.value.index == case["bad_index"]
        assert f"share {case['bad_index']}" in str(info.value)


def test_bech32m_matches_bip350_test_vectors() -> None:
    # Valid bech32m strings from BIP-350.
    for s in [
        "A1LQFN3A",
        "a1lqfn3a",
        "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx",
        "split1checkupstagehandshakeupstreamerranterredcaperredlc445v",
        "?1v759aa",
    ]:
        s = s.lower()
        pos = s.rfind("1")
        values, _ = _bech32.decode_chars(s[pos + 1 :])
        assert values is not None
        assert _bech32.verify(s[:pos], values)
        assert _bech32.checksum(s[:pos], values[:-6]) == values[-6:]
    # Invalid ones (checksum computed with bech32 instead of bech32m, or corrupted).
    for s in ["a12uel5l", "abcdef1l7aum6echk45nj2s0wdvt2fg8x9yrzpqzd3ryx"]:
        pos = s.rfind("1")
        values, _ = _bech32.decode_chars(s[pos + 1 :])
        assert values is not None
        assert not _bech32.verify(s[:pos], values)


# -- the checksum catches every single typo ------------------------------------------------

TYPO_SHARES = [
    split(bytes([7]), 2, 2, rng=DeterministicRandom("typo-a"))[1],
    split(bytes(range(16)), 3, 5, rng=DeterministicRandom("typo-b"))[4],
    split(bytes(range(32)), 2, 3, rng=DeterministicRandom("typo-c"))[0],
    split(b"\xff" * 64, 200, 255, rng=DeterministicRandom("typo-d"))[254],
]


@pytest.mark.parametrize("share", TYPO_SHARES, ids=lambda s: f"{s.secret_len}B")
def test_every_single_substitution_is_detected(share: Share) -> None:
    text = str(share).replace("-", "")
    data = text[3:]
    n = 0
    for pos, original in enumerate(data):
        for c in _bech32.CHARSET:
            if c == original:
                continue
            typo = "ks1" + data[:pos] + c + data[pos + 1 :]
            with pytest.raises(ChecksumError):
                Share.parse(typo)
            n += 1
    assert n == 31 * len(data)


@pytest.mark.parametrize("share", TYPO_SHARES, ids=lambda s: f"{s.secret_len}B")
def test_every_adjacent_swap_deletion_and_insertion_is_detected(share: Share) -> None:
    data = str(share).replace("-", "")[3:]
    for pos in range(len(data) - 1):
        if data[pos] != data[pos + 1]:
            swapped = data[:pos] + data[pos + 1] + data[pos] + data[pos + 2 :]
            with pytest.raises(FormatError):
                Share.parse("ks1" + swapped)
    for pos in range(len(data)):
        with pytest.raises(FormatError):
            Share.parse("ks1" + data[:pos] + data[pos + 1 :])
        for c in "q7":
            mutated = "ks1" + data[:pos] + c + data[pos:]
            if mutated != "ks1" + data:  # inserting next to an equal char can be a no-op
                with pytest.raises(FormatError):
                    Share.parse(mutated)


@given(
    positions=st.lists(st.integers(0, 65), min_size=2, max_size=4, unique=True),
    deltas=st.lists(st.integers(1, 31), min_size=4, max_size=4),
)
def test_up_to_four_substitutions_are_detected(positions: list[int], deltas: list[int]) -> None:
    data = str(TYPO_SHARES[1]).replace("-", "")[3:]
    assert len(data) == 66
    chars = list(data)
    for pos, delta in zip(positions, deltas, strict=False):
        chars[pos] = _bech32.CHARSET[(_bech32.CHARSET.index(chars[pos]) + delta) % 32]
    with pytest.raises(ChecksumError):
        Share.parse("ks1" + "".join(chars))


def test_invalid_character_names_its_position() -> None:
    text = str(TYPO_SHARES[1]).replace("-", "")
    with pytest.raises(ChecksumError, match="invalid character 'b' at position 8") as info:
        Share.parse(text[:7] + "b" + text[8:])
    assert info.value.hint and "0/o" in info.value.hint


# -- properties ---------------------------------------------------------------------------

params = st.integers(2, 8).flatmap(lambda k: st.tuples(st.just(k), st.integers(k, 10)))


@given(secret=st.binary(min_size=1, max_size=64), kn=params, data=st.data())
def test_any_threshold_subset_recovers(secret: bytes, kn: tuple[int, int], data) -> None:
    k, n = kn
    shares = split(secret, k, n)
    subset = data.draw(st.permutations(shares)).copy()[: data.draw(st.integers(k, n))]
    assert combine(subset) == secret
    for s in shares:
        assert Share.parse(str(s)) == s
        assert Share.from_bytes(s.to_bytes()) == s
        assert "redacted" in repr(s)
        assert s.payload.hex() not in repr(s)
        if len(secret) >= 4:
            assert secret.hex() not in repr(s)


@given(secret=st.binary(min_size=1, max_size=64), kn=params)
def test_fewer_than_threshold_is_refused(secret: bytes, kn: tuple[int, int]) -> None:
    k, n = kn
    shares = split(secret, k, n)
    with pytest.raises(InsufficientSharesError, match=f"need {k} shares, got {k - 1}"):
        combine(shares[: k - 1])


_FUZZ_BASE = split(bytes(range(16)), 3, 5, rng=DeterministicRandom("fuzz"))
_ALPHABET = _bech32.CHARSET + "-  1bioKS\n"


@given(
    which=st.integers(0, 4),
    edits=st.lists(
        st.tuples(st.sampled_from("sidwu"), st.integers(0, 200), st.sampled_from(_ALPHABET)),
        min_size=1,
        max_size=4,
    ),
)
def test_text_mutations_are_rejected_or_harmless(which: int, edits: list) -> None:
    share = _FUZZ_BASE[which]
    text = list(str(share))
    for op, pos, c in edits:
        pos %= len(text) + 1
        if op == "s" and pos < len(text):
            text[pos] = c
        elif op == "i":
            text.insert(pos, c)
        elif op == "d" and pos < len(text):
            del text[pos]
        elif op == "w" and pos + 1 < len(text):
            text[pos], text[pos + 1] = text[pos + 1], text[pos]
        elif op == "u" and pos < len(text):
            text[pos] = text[pos].upper()
    try:
        parsed = Share.parse("".join(text))
    except KeysplitError:
        return
    assert parsed == share


@given(
    which=st.integers(0, 4),
    edits=st.lists(
        st.tuples(st.sampled_from("xid"), st.integers(0, 60), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    ),
)
def test_binary_mutations_are_rejected_or_harmless(which: int, edits: list) -> None:
    share = _FUZZ_BASE[which]
    data = bytearray(share.to_bytes())
    for op, pos, b in edits:
        pos %= len(data) + 1
        if op == "x" and pos < len(data):
            data[pos] ^= b
        elif op == "i":
            data.insert(pos, b)
        elif op == "d" and pos < len(data):
            del data[pos]
    try:
        parsed = Share.from_bytes(bytes(data))
    except KeysplitError:
        return
    assert parsed == share


@given(st.text(max_size=120))
def test_parse_arbitrary_text_raises_only_keysplit_errors(text: str) -> None:
    with contextlib.suppress(KeysplitError):
        Share.parse(text)


@given(st.binary(max_size=120))
def test_from_bytes_arbitrary_data_raises_only_keysplit_errors(data: bytes) -> None:
    with contextlib.suppress(KeysplitError):
        Share.from_bytes(b"KSSH" + data)
    with contextlib.suppress(KeysplitError):
        Share.from_bytes(data)


# -- combine and verify_set --------------------------------------------------------------


def test_bad_share_is_named_even_with_enough_good_ones() -> None:
    shares = split(b"k" * 16, 3, 5)
    forged = dataclasses.replace(shares[1], payload=bytes(len(shares[1].payload)))
    with pytest.raises(RecoveryError, match="share 2 does not match") as info:
        combine([shares[0], forged, shares[2], shares[3]])
    assert info.value.index == 2
    assert info.value.hint == "leave out share 2"
    # The forged share as a spare (not among the first k) is caught as well.
    with pytest.raises(RecoveryError, match="share 2 does not match"):
        combine([shares[0], shares[2], shares[3], forged])


def test_two_bad_shares_among_many() -> None:
    shares = split(b"k" * 16, 2, 6)
    bad = [dataclasses.replace(s, payload=bytes(len(s.payload))) for s in shares[:2]]
    with pytest.raises(RecoveryError, match="shares 1, 2 do not match"):
        combine([*bad, *shares[2:]])


def test_exactly_threshold_with_a_bad_share_cannot_say_which() -> None:
    shares = split(b"k" * 16, 2, 3)
    forged = dataclasses.replace(shares[1], payload=bytes(len(shares[1].payload)))
    with pytest.raises(RecoveryError, match="at least one of shares 1, 2"):
        combine([shares[0], forged])


def _wrong(s: Share) -> Share:
    """``s`` corrupted: its payload zeroed (the same bit flipped in two shares can cancel
    out at x = 0 in a subset holding both, which then verifies)."""
    return dataclasses.replace(s, payload=bytes(len(s.payload)))


def test_one_wrong_share_first_among_many_is_named() -> None:
    """(cli4) 128 of a 128-of-255 split, and all 255 given, the first one wrong: every
    k-subset in order holds the first share, so the 2000 tried all failed and combine said
    "several are wrong" (one was). The other cyclic runs of k are tried first now: the
    wrong share is named, and the rest recover a verified secret."""
    shares = split(b"k" * 16, 128, 255)
    with pytest.raises(RecoveryError, match="share 1 does not match the others") as info:
        combine([_wrong(shares[0]), *shares[1:]])
    assert info.value.index == 1 and "several" not in str(info.value)
    with pytest.raises(RecoveryError, match="share 1 does not match the others"):
        combine([_wrong(shares[0]), *shares[1:129]])  # k + 1: as before


def test_a_search_cut_short_says_a_share_is_wrong_not_which(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the search limit ends the search, all that is known is that at least one share
    is wrong (the first k failed): said so, not "several are wrong"; never a key. (Four
    wrong shares of 12 with k = 4 spread so that every cyclic run of 3 anchors holds one,
    and a limit of three passes of 9 sets; the 495 sets of 4 are not each tried.)"""
    monkeypatch.setattr(keysplit.share, "_SEARCH_WORK_LIMIT", 3 * 9 * 4)
    monkeypatch.setattr(keysplit.share, "_DIRECT_SEARCH_LIMIT", 0)
    shares = split(b"k" * 16, 4, 12)
    mixed = [_wrong(s) if i % 3 == 0 else s for i, s in enumerate(shares)]
    names = ", ".join(str(i) for i in range(1, 13))
    with pytest.raises(RecoveryError) as info:
        combine(mixed)
    assert str(info.value) == (
        f"recovery check failed: at least one of shares {names} is wrong (forged, or from "
        "another split with the same set id); which is not known: none of the 27 sets of 4 "
        "tried recovers a verified secret"
    )
    assert info.value.hint == "combine fewer of them (4 and one or two more) to find out which"
    with pytest.raises(RecoveryError, match=r"^share 1 does not match"):
        combine([*mixed[:3], *mixed[4:6], mixed[7]])  # fewer: one wrong share, named
    # every subset tried (the search not cut short) and none verifies: fewer than k are right
    three = split(b"k" * 16, 3, 4)
    with pytest.raises(RecoveryError, match=r"no 3 of .* \(at least 2 of them are wrong\)"):
        combine([_wrong(three[0]), _wrong(three[1]), *three[2:]])


def test_one_right_anchor_set_finds_a_verified_set_whatever_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two wrong shares of a 128-of-255 split placed so that every cyclic run of 128 holds
    one, and the first: the 254 runs and the 1,746 next subsets in order (all holding share
    1) failed, and combine said "which is not known" after 2,254 interpolations of 128
    points (~36 s). Now each anchor set of 127 is completed by every other share in one
    pass: the first (shares 2 to 128) holds neither wrong share, so they are named, with
    the work of two passes."""
    shares = split(b"k" * 16, 128, 255)
    mixed = [_wrong(s) if i in (0, 128) else s for i, s in enumerate(shares)]
    work = _Work(monkeypatch)
    with pytest.raises(RecoveryError, match=r"^shares 1, 129 do not match the others"):
        combine(mixed)
    n, k, length = 255, 128, len(shares[0].payload)
    assert work.products <= 4 * n * k * length and work.scalar <= 2 * k * k, vars(work)


def test_mixed_duplicate_and_empty() -> None:
    a = split(b"a" * 16, 2, 3)
    b = split(b"b" * 16, 2, 3)
    with pytest.raises(MixedSharesError, match="different splits") as info:
        combine([a[0], a[1], b[2]])
    assert info.value.index == 3
    with pytest.raises(MixedSharesError, match="threshold"):
        verify_set([a[0], dataclasses.replace(split(b"a" * 16, 3, 3)[1], set_id=a[0].set_id)])
    with pytest.raises(DuplicateShareError, match="share 1 was given twice"):
        combine([a[0], a[0]])
    with pytest.raises(DuplicateShareError, match="two different shares claim index 1"):
        verify_set([a[0], dataclasses.replace(a[0], payload=bytes(len(a[0].payload)))])
    with pytest.raises(InsufficientSharesError, match="no shares"):
        combine([])
    verify_set([])
    verify_set(a[:1])
    with pytest.raises(TypeError):
        combine([str(a[0])])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        verify_set(a[0])  # type: ignore[arg-type]


def test_verify_set_and_combine_name_custodians_where_told() -> None:
    """``custodian_of`` (messages only) names the custodian of the share at fault, and of
    the share it is compared with; without it the messages are as before."""
    a = split(b"a" * 16, 2, 3)
    b = split(b"b" * 16, 2, 3)
    names = {a[0].fingerprint: "ana", b[2].fingerprint: "yan"}

    def who(s: Share) -> str | None:
        return names.get(s.fingerprint)

    with pytest.raises(MixedSharesError) as info:
        combine([a[0], a[1], b[2]], custodian_of=who)
    assert f"share 3 (yan, set {b[2].set_id_hex}) is not from set " in str(info.value)
    assert str(info.value).endswith("(share 1, ana)") and info.value.index == 3
    with pytest.raises(MixedSharesError, match=r"share 3 \(set [0-9a-f]+\) .* \(share 1\)$"):
        verify_set([a[0], a[1], b[2]])
    other_k = dataclasses.replace(split(b"a" * 16, 3, 3)[1], set_id=a[0].set_id)
    with pytest.raises(MixedSharesError, match=r"^share 2 disagrees with share 1 \(ana\) on"):
        verify_set([a[0], other_k], custodian_of=who)
    with pytest.raises(DuplicateShareError, match=r"^share 1 \(ana\) was given twice"):
        combine([a[0], a[0]], custodian_of=who)
    with pytest.raises(DuplicateShareError, match=r"claim index 1 \(ana\) \(one is"):
        verify_set([a[0], dataclasses.replace(a[0], payload=bytes(24))], custodian_of=who)
    assert combine(a[:2], custodian_of=who) == b"a" * 16
    five = split(b"c" * 16, 2, 5)
    names.update({five[1].fingerprint: "bea", five[3].fingerprint: "dan"})
    forged = [five[0], _wrong(five[1]), five[2], _wrong(five[3]), five[4]]
    with pytest.raises(RecoveryError, match=r"^shares 2 \(bea\), 4 \(dan\) do not match"):
        combine(forged, custodian_of=who)
    with pytest.raises(RecoveryError, match=r"^share 2 \(bea\) does not match the others") as e:
        combine([*forged[:3], five[3], five[4]], custodian_of=who)
    assert e.value.hint == "leave out share 2 (bea)" and e.value.index == 2


def test_split_rejects_misuse() -> None:
    with pytest.raises(ValueError):
        split(b"", 2, 3)
    with pytest.raises(ValueError):
        split(b"x" * 65, 2, 3)
    with pytest.raises(ValueError):
        split(b"x", 1, 3)
    with pytest.raises(ValueError):
        split(b"x", 4, 3)
    with pytest.raises(ValueError):
        split(b"x", 2, 256)
    with pytest.raises(TypeError):
        split("x", 2, 3)  # type: ignore[arg-type]


def test_share_constructor_validates() -> None:
    good = split(b"x" * 16, 2, 3)[0]
    for change in (
        {"version": 2},
        {"set_id": b"short"},
        {"threshold": 1},
        {"threshold": 4},
        {"index": 0},
        {"index": 4},
        {"payload": b"x" * 8},
    ):
        with pytest.raises(ValueError):
            dataclasses.replace(good, **change)
    with pytest.raises(TypeError):
        dataclasses.replace(good, index=True)
    with pytest.raises(TypeError):
        dataclasses.replace(good, payload="text")


def test_metadata_and_fingerprints_are_secret_free() -> None:
    secret = bytes(range(16))
    shares = split(secret, 2, 3, rng=DeterministicRandom("meta"))
    s = shares[2]
    assert s.fingerprint == f"{s.set_id.hex()}-3"
    assert s.secret_len == 16
    assert str(s).startswith("ks1-")
    assert all(len(g) <= 5 for g in str(s).split("-"))
    fp = secret_fingerprint(secret)
    assert len(fp) == 16
    assert fp == hashlib.sha256(b"keysplit secret fingerprint v1\x00" + secret).digest()[:8].hex()
    assert secret.hex() not in fp


def test_public_api_exports() -> None:
    for name in ("Share", "split", "combine", "verify_set", "secret_fingerprint"):
        assert name in keysplit.__all__
        assert getattr(keysplit, name) is not None


def test_all_subsets_of_a_small_split() -> None:
    secret = b"\x00" * 16  # an all-zero secret is still protected by its tag
    shares = split(secret, 3, 5)
    for r in range(3, 6):
        for subset in itertools.combinations(shares, r):
            assert combine(list(subset)) == secret


# -- the text form is ASCII (red team) ---------------------------------------------------------

_LOOKALIKES = [
    ("\u212a", "Kelvin sign for K"),
    ("\u00a0", "no-break space"),
    ("\u3000", "ideographic space"),
    ("\u2003", "em space"),
    ("\u2028", "line separator"),
    ("\u0085", "next line"),
    ("\uff19", "full-width 9"),
    ("\u0669", "Arabic-Indic 9"),
    ("\u06f9", "extended Arabic-Indic 9"),
    ("\u0969", "Devanagari 3"),
    ("\uff4b", "full-width k"),
    ("\u2013", "en dash"),
    ("\udcff", "lone surrogate"),
]


@pytest.mark.parametrize(("char", "what"), _LOOKALIKES, ids=[w for _, w in _LOOKALIKES])
def test_share_text_with_a_non_ascii_character_is_refused_by_name(char: str, what: str) -> None:
    """Unicode whitespace was skipped as a separator (``\\s``) and the Kelvin sign read as
    ``k`` (``lower``): a share text with look-alikes parsed; others got a checksum
    error's hint about 0/o and 1/l. Now a FormatError names the character and where."""
    share = TYPO_SHARES[1]
    text = str(share)
    at = text.index("-", 4)  # a separator, then a letter, then the prefix's K
    variants = [text[:at] + char + text[at + 1 :], text[:at] + char + text[at:]]
    variants.append(char + text[1:] if char == "\u212a" else text[:6] + char + text[7:])
    for variant in variants:
        pos = variant.index(char) + 1
        with pytest.raises(FormatError, match="not ASCII") as info:
            Share.parse(variant)
        assert type(info.value) is FormatError
        assert str(info.value) == (
            f"share text has a character that is not ASCII, {char!r} "
            f"(U+{ord(char):04X}), at position {pos} (counting separators)"
        )
        assert info.value.hint and "ASCII" in info.value.hint
        if char != "\udcff":  # a file holds UTF-8: a lone surrogate cannot be in one
            with pytest.raises(FormatError, match="not ASCII"):
                keysplit.load_share(f"# custodian José\n{variant}\n".encode())
    assert keysplit.load_share(f"# custodian José\n{text}\n".encode()) == share


@given(st.text(st.characters(min_codepoint=0x80), min_size=1, max_size=3), st.data())
def test_any_non_ascii_text_in_a_share_is_refused(extra: str, data: st.DataObject) -> None:
    text = str(_FUZZ_BASE[0])
    at = data.draw(st.integers(0, len(text)))
    with pytest.raises(FormatError, match="not ASCII"):
        Share.parse(text[:at] + extra + text[at:])


def _forged_together(shares: list[Share], which: list[int], coeffs: list[int]) -> list[Share]:
    """``shares`` with those at positions ``which`` moved onto P + E, where
    E(x) = c1 x + c2 x^2 + ... has E(0) = 0: any k of the moved shares recover the true
    (verified) secret, so a good share is off *their* polynomial. Built by hand (GF(2^8)
    multiplication by the table-free scalar routine), no knowledge of the secret needed."""
    from keysplit.hazmat.gf256 import mul_scalar, pow_scalar

    out = list(shares)
    for i in which:
        s = shares[i]
        e = 0
        for j, c in enumerate(coeffs, start=1):
            e ^= mul_scalar(c, pow_scalar(s.index, j))
        out[i] = dataclasses.replace(s, payload=bytes(b ^ e for b in s.payload))
    return out


def test_shares_forged_to_cancel_at_zero_never_get_a_good_share_blamed() -> None:
    """Two shares whose errors cancel at x = 0 recover the verified secret (the key is
    right), and combine took their polynomial as the truth: with two good shares beside
    them it said "shares 3, 4 do not match the others", naming two good custodians. Now
    shares are named only when one polynomial through the verified secret is fitted by
    more shares than any other could be; else combine says it cannot tell which."""
    good = split(b"k" * 16, 2, 5)
    forged = _forged_together(good, [0, 1], [0x53])
    assert forged[0] != good[0] and forged[1] != good[1]
    assert combine(forged[:2]) == b"k" * 16  # the forgery works: the secret verifies
    # 2 forged, 2 good: a tie, nobody can tell (before: "shares 3, 4 do not match")
    with pytest.raises(RecoveryError) as info:
        combine(forged[:4])
    msg = str(info.value)
    assert "cannot be told" in msg and "do not match" not in msg, msg
    assert info.value.index is None and "changed together" in (info.value.hint or "")
    # 2 forged, 3 good: the polynomial of the three (and the secret) is the clear best;
    # the forged ones are named (before: "shares 3, 4, 5 do not match")
    with pytest.raises(RecoveryError, match=r"^shares 1, 2 do not match the others") as info:
        combine(forged)
    assert info.value.index == 1 and "shares 3, 4, 5 recover" in str(info.value)
    # the same order-independent answer with the forged pair last
    with pytest.raises(RecoveryError, match=r"^shares 1, 2 do not match"):
        combine(forged[2:] + forged[:2])


class _Work:
    """Counts GF(2^8) multiplications in :mod:`keysplit.share`: payload bytes times a
    coefficient (gf256.mul, shamir.combine_batch) and scalar ones (Lagrange coefficients)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from keysplit.hazmat import gf256, shamir

        self.products = 0
        self.scalar = 0
        mul, combine_batch, mul_scalar = gf256.mul, shamir.combine_batch, gf256.mul_scalar

        def counted_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            out = mul(a, b)
            self.products += out.size
            return out

        def counted_combine(xs: Sequence[int], ys: np.ndarray, **kw: Any) -> np.ndarray:
            self.products += ys.size
            return combine_batch(xs, ys, **kw)

        def counted_scalar(a: int, b: int) -> int:
            self.scalar += 1
            return mul_scalar(a, b)

        monkeypatch.setattr(gf256, "mul", counted_mul)
        monkeypatch.setattr(shamir, "combine_batch", counted_combine)
        monkeypatch.setattr(gf256, "mul_scalar", counted_scalar)


def test_naming_shares_forged_together_costs_a_pass_not_a_search(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """k = 2, n = 255, the first 127 shares forged together (they recover the verified
    secret): to find which polynomial most shares lie on, combine evaluated every share
    on the polynomial through each candidate share in turn, 127 x 255 evaluations (2.3 s).
    Now each share is evaluated once and grouped by the polynomial it fixes (an exact
    search): the work is a few passes over the shares, and the answer the same."""
    good = split(b"k" * 16, 2, 255)
    forged = _forged_together(good, list(range(127)), [0x53])
    work = _Work(monkeypatch)
    with pytest.raises(RecoveryError, match=r"^shares 1, 2, 3, .*, 127 do not match the others"):
        combine(forged)
    n, k, length = 255, 2, len(good[0].payload)
    assert work.products <= 4 * n * k * length and work.scalar <= n, vars(work)


def test_combine_of_many_shares_at_a_high_threshold_is_one_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every share of a 128-of-255 split: each extra share was checked by its own
    interpolation, whose Lagrange coefficients took ~2 k^2 scalar multiplications (127 x
    32,768: 1.8 s). Now the 127 extra shares are evaluated in one pass with coefficients
    from log tables; a wrong one is still named."""
    shares = split(b"k" * 16, 128, 255)
    work = _Work(monkeypatch)
    assert combine(shares) == b"k" * 16
    n, k, length = 255, 128, len(shares[0].payload)
    assert work.products <= n * k * length and work.scalar <= 2 * k * k, vars(work)
    with pytest.raises(RecoveryError, match=r"^share 200 does not match the others"):
        combine([*shares[:199], _wrong(shares[199]), *shares[200:]])


@pytest.mark.parametrize("seed", range(6))
def test_grouping_by_polynomial_agrees_with_trying_each_share(seed: int) -> None:
    """The one-pass grouping (:func:`keysplit.share._best_through`) finds a polynomial as
    well supported as trying, one by one, the polynomial each share fixes with the anchors
    and counting the shares on it."""
    from keysplit.hazmat.gf256 import mul_scalar
    from keysplit.share import _best_through, _through

    rnd = DeterministicRandom(bytes([seed]) * 32)
    k = 2 + seed % 3
    n = 3 * k + seed
    good = split(rnd.random_bytes(16), k, n, rng=rnd)
    zero = _through([(s.index, s.payload) for s in good[:k]], 0)
    shares = list(good)
    for i in range(1, n, 2):  # every other share off: half moved together, half at random
        e = mul_scalar(0x53, shares[i].index) if i % 4 == 1 else None
        pay = shares[i].payload
        shares[i] = dataclasses.replace(
            shares[i],
            payload=bytes(b ^ e for b in pay) if e is not None else rnd.random_bytes(len(pay)),
        )
    anchors = shares[-(k - 2) :] if k > 2 else []
    fixed = [(0, zero)] + [(a.index, a.payload) for a in anchors]
    tried = max(
        sum(
            1
            for t in shares
            if t in anchors
            or t is s
            or _through([*fixed, (s.index, s.payload)], t.index) == t.payload
        )
        for s in shares
        if s not in anchors
    )
    assert len(_best_through(shares, zero, anchors)) == tried


def test_three_shares_forged_together_at_threshold_three() -> None:
    """k = 3: three forged shares on P + c1 x + c2 x^2. Against four good ones no
    polynomial is clear enough (another could share one point with it): cannot tell;
    against five good ones the good polynomial is, and the forged three are named."""
    good = split(b"s" * 16, 3, 8)
    forged = _forged_together(good, [0, 1, 2], [0x1F, 0xA4])
    assert combine(forged[:3]) == b"s" * 16
    with pytest.raises(RecoveryError, match="cannot be told"):
        combine(forged[:7])
    with pytest.raises(RecoveryError, match=r"^shares 1, 2, 3 do not match") as info:
        combine(forged)
    assert "shares 4, 5, 6, 7, 8 recover" in str(info.value)
    # one share corrupted by chance (not together with others) is still named at k + 1
    one = [_wrong(good[0]), *good[1:4]]
    with pytest.raises(RecoveryError, match=r"^share 1 does not match the others"):
        combine(one)


@settings(max_examples=60, deadline=None)
@given(
    st.binary(min_size=1, max_size=16).map(lambda b: b * 4),  # a multiple of 4 bytes long
    st.sampled_from([*KINDS, "OwnBytes"]),
)
def test_split_and_from_bytes_take_any_contiguous_buffer_as_its_bytes(
    data: bytes, kind: str
) -> None:
    """``bytes(x)`` let a bytes subclass's own ``__bytes__`` choose what was split or parsed,
    took a strided view as its copied bytes and refused a NumPy array; the share entry
    points now follow ``keysplit.record._octets``: any C-contiguous buffer as its bytes."""
    held = OwnBytes(data) if kind == "OwnBytes" else as_buffer(kind, data)
    want = split(data, 2, 3, rng=DeterministicRandom("b"))
    assert split(held, 2, 3, rng=DeterministicRandom("b")) == want  # type: ignore[arg-type]
    assert secret_fingerprint(held) == secret_fingerprint(data)  # type: ignore[arg-type]
    blob = want[0].to_bytes()
    if len(blob) % 4 == 0 or kind in (
        "OwnBytes",
        "bytearray",
        "memoryview",
        "np.bytes_",
        "np.uint8",
    ):
        framed = OwnBytes(blob) if kind == "OwnBytes" else as_buffer(kind, blob)
        assert Share.from_bytes(framed) == want[0]  # type: ignore[arg-type]


def test_split_and_from_bytes_refuse_a_strided_or_released_view() -> None:
    blob = split(b"k" * 16, 2, 3, rng=DeterministicRandom("v"))[0].to_bytes()
    for call, data in ((lambda d: split(d, 2, 3), b"k" * 32), (Share.from_bytes, blob + blob)):
        with pytest.raises(TypeError, match="strided"):
            call(memoryview(data)[::2])
        released = memoryview(data)
        released.release()
        with pytest.raises(TypeError, match="released"):
            call(released)


def test_the_share_limit_is_the_shamir_core_s() -> None:
    """share.py keeps its own copy of the limit (it imports the numpy core only to split or
    combine): the two must agree."""
    from keysplit import share as share_module
    from keysplit.hazmat import shamir

    assert share_module._MAX_SHARES == shamir.MAX_SHARES


# BIP-173 and BIP-350 addresses: (address, witness program). After the hrp's "1", the data
# part is the witness version (one character), the program regrouped into 5-bit values
# (zero-padded), and the 6-character checksum.
_SEGWIT_PROGRAMS = [
    ("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "751e76e8199196d454941c45d1b3a323f1433bd6"),
    (
        "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y",
        "751e76e8199196d454941c45d1b3a323f1433bd6751e76e8199196d454941c45d1b3a323f1433bd6",
    ),
    ("BC1SW50QGDZ25J", "751e"),
    ("bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", "751e76e8199196d454941c45d1b3a323"),
    (
        "tb1pqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesf3hn0c",
        "000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433",
    ),
]
# BIP-173's invalid ones for the regrouping: more than 4 bits of padding, non-zero padding.
_BAD_PADDING = [
    "bc1zw508d6qejxtdg4y5r3zarvaryvqyzf3du",
    "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3pjxtptv",
]


def _program(address: str) -> list[int]:
    s = address.lower()
    values, _ = _bech32.decode_chars(s[s.rfind("1") + 1 :])
    assert values is not None
    return values[1:-6]


@pytest.mark.parametrize(("address", "program"), _SEGWIT_PROGRAMS)
def test_regrouping_matches_bip173_and_bip350_programs(address: str, program: str) -> None:
    assert _bech32.from_5bit(_program(address)) == bytes.fromhex(program)
    assert _bech32.to_5bit(bytes.fromhex(program)) == _program(address)


@pytest.mark.parametrize("address", _BAD_PADDING)
def test_regrouping_refuses_bip173_bad_padding(address: str) -> None:
    assert _bech32.from_5bit(_program(address)) is None


def _bits(values: Sequence[int], width: int) -> str:
    return "".join(format(v, f"0{width}b") for v in values)


@given(st.binary(max_size=80))
def test_to_5bit_is_the_bit_string_cut_in_fives(data: bytes) -> None:
    """An independent reference: the bits as a string, cut every 5, the last zero-padded."""
    bits = _bits(data, 8)
    want = [int(bits[i : i + 5].ljust(5, "0"), 2) for i in range(0, len(bits), 5)]
    assert _bech32.to_5bit(data) == want
    assert _bech32.from_5bit(want) == data


@given(st.lists(st.integers(0, 31), max_size=130))
def test_from_5bit_is_the_bit_string_cut_in_eights(values: list[int]) -> None:
    bits = _bits(values, 5)
    whole, rest = divmod(len(bits), 8)
    ok = rest < 5 and "1" not in bits[8 * whole :]
    want = bytes(int(bits[i : i + 8], 2) for i in range(0, 8 * whole, 8))
    assert _bech32.from_5bit(values) == (want if ok else None)
