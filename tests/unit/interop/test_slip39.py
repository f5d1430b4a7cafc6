"""SLIP-39: cross-checks with shamir-mnemonic both ways, strict errors, no leaks."""

from __future__ import annotations

import itertools

import pytest
import shamir_mnemonic
import shamir_mnemonic.shamir as ref_shamir
from hypothesis import given, settings
from hypothesis import strategies as st

from keysplit import (
    ChecksumError,
    DuplicateShareError,
    FormatError,
    InsufficientSharesError,
    KeysplitError,
    MixedSharesError,
    RecoveryError,
)
from keysplit.interop import slip39
from keysplit.interop.slip39 import rs1024
from keysplit.interop.slip39.wordlist import WORDS
from keysplit.rng import DeterministicRandom

SECRET16 = bytes(range(16))


@st.composite
def configs(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]]]:
    n_groups = draw(st.integers(1, 4))
    groups = []
    for _ in range(n_groups):
        count = draw(st.integers(1, 5))
        threshold = 1 if count == 1 else draw(st.integers(2, count))
        groups.append((threshold, count))
    return draw(st.integers(1, n_groups)), groups


def _pick(groups_mnemonics: list[list[str]], group_threshold: int, groups, rnd) -> list[str]:
    chosen = rnd.sample(range(len(groups)), group_threshold)
    out = []
    for g in chosen:
        out += rnd.sample(groups_mnemonics[g], groups[g][0])
    rnd.shuffle(out)
    return out


secrets_st = st.sampled_from([16, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n))
passphrases = st.text(alphabet=[chr(c) for c in range(32, 127)], max_size=8).map(str.encode)


@settings(max_examples=25)
@given(configs(), secrets_st, passphrases, st.booleans(), st.randoms(use_true_random=False))
def test_keysplit_generates_reference_accepts(cfg, secret, passphrase, extendable, rnd) -> None:
    group_threshold, groups = cfg
    mnemonics = slip39.generate_mnemonics(
        group_threshold,
        groups,
        secret,
        passphrase=passphrase,
        iteration_exponent=0,
        extendable=extendable,
    )
    assert [len(g) for g in mnemonics] == [n for _, n in groups]
    subset = _pick(mnemonics, group_threshold, groups, rnd)
    assert shamir_mnemonic.combine_mnemonics(subset, passphrase) == secret
    assert slip39.combine_mnemonics(subset, passphrase=passphrase) == secret


@settings(max_examples=25)
@given(configs(), secrets_st, passphrases, st.booleans(), st.randoms(use_true_random=False))
def test_reference_generates_keysplit_accepts(cfg, secret, passphrase, extendable, rnd) -> None:
    group_threshold, groups = cfg
    mnemonics = shamir_mnemonic.generate_mnemonics(
        group_threshold, groups, secret, passphrase, extendable, 0
    )
    subset = _pick(mnemonics, group_threshold, groups, rnd)
    assert slip39.combine_mnemonics(subset, passphrase=passphrase) == secret


@settings(max_examples=10)
@given(configs(), secrets_st, st.booleans(), st.binary(min_size=1, max_size=8))
def test_same_randomness_gives_identical_mnemonics(cfg, secret, extendable, seed) -> None:
    """Fed the same random stream, keysplit and the reference emit the same words."""
    group_threshold, groups = cfg
    ours = slip39.generate_mnemonics(
        group_threshold,
        groups,
        secret,
        iteration_exponent=0,
        extendable=extendable,
        rng=DeterministicRandom(seed),
    )
    stream = DeterministicRandom(seed)
    saved = ref_shamir.RANDOM_BYTES
    ref_shamir.RANDOM_BYTES = stream.random_bytes
    try:
        theirs = shamir_mnemonic.generate_mnemonics(
            group_threshold, groups, secret, b"", extendable, 0
        )
    finally:
        ref_shamir.RANDOM_BYTES = saved
    assert ours == theirs


def test_every_threshold_subset_recovers_and_fewer_do_not() -> None:
    groups = slip39.generate_mnemonics(1, [(3, 5)], SECRET16, iteration_exponent=0)
    for k in range(1, 6):
        for subset in itertools.combinations(groups[0], k):
            if k >= 3:
                # more than the threshold is accepted and every share is checked
                assert slip39.combine_mnemonics(list(subset)) == SECRET16
            else:
                with pytest.raises(InsufficientSharesError):
                    slip39.combine_mnemonics(list(subset))


def test_two_level_3_of_5_groups() -> None:
    groups = [(1, 1), (1, 1), (3, 5), (2, 6)]
    ms = slip39.generate_mnemonics(2, groups, SECRET16 * 2, iteration_exponent=0)
    assert slip39.combine_mnemonics(ms[0] + ms[1]) == SECRET16 * 2
    assert slip39.combine_mnemonics(ms[2][:3] + ms[3][4:]) == SECRET16 * 2
    with pytest.raises(InsufficientSharesError, match="group 3 has 2 of 3"):
        slip39.combine_mnemonics(ms[2][:2] + ms[3][:2])


def test_passphrase_is_not_checked_by_design() -> None:
    ms = slip39.generate_mnemonics(1, [(2, 3)], SECRET16, passphrase=b"right", iteration_exponent=0)
    assert slip39.combine_mnemonics(ms[0][:2], passphrase=b"right") == SECRET16
    other = slip39.combine_mnemonics(ms[0][:2], passphrase=b"wrong")
    assert other != SECRET16 and len(other) == 16


def test_iteration_exponent_and_flags_roundtrip() -> None:
    ms = slip39.generate_mnemonics(1, [(2, 2)], SECRET16, iteration_exponent=2, extendable=False)
    s = slip39.decode_mnemonic(ms[0][0])
    assert (s.iteration_exponent, s.extendable) == (2, False)
    assert shamir_mnemonic.combine_mnemonics(ms[0]) == SECRET16


def test_wrong_share_is_detected_by_the_digest() -> None:
    a = slip39.generate_mnemonics(
        1, [(2, 3)], SECRET16, iteration_exponent=0, rng=DeterministicRandom("a")
    )
    share = slip39.decode_mnemonic(a[0][1])
    forged = slip39.Slip39Share(
        **{**share.__dict__, "value": bytes([share.value[0] ^ 1]) + share.value[1:]}
    )
    with pytest.raises(RecoveryError):
        slip39.combine_mnemonics([a[0][0], forged.mnemonic()])


def test_mixed_backups_are_rejected() -> None:
    a = slip39.generate_mnemonics(1, [(2, 3)], SECRET16, iteration_exponent=0)
    b = slip39.generate_mnemonics(1, [(2, 3)], SECRET16, iteration_exponent=0)
    if slip39.decode_mnemonic(a[0][0]).identifier == slip39.decode_mnemonic(b[0][0]).identifier:
        pytest.skip("identifiers collided (p = 2^-15)")
    with pytest.raises(MixedSharesError, match="share 2: identifier"):
        slip39.combine_mnemonics([a[0][0], b[0][1]])


def test_duplicates() -> None:
    ms = slip39.generate_mnemonics(1, [(2, 3)], SECRET16, iteration_exponent=0)[0]
    # the very same share twice counts once
    with pytest.raises(InsufficientSharesError):
        slip39.combine_mnemonics([ms[0], ms[0]])
    assert slip39.combine_mnemonics([ms[0], ms[0], ms[1]]) == SECRET16
    s = slip39.decode_mnemonic(ms[1])
    clash = slip39.Slip39Share(**{**s.__dict__, "member_index": 0})
    with pytest.raises(DuplicateShareError):
        slip39.combine_mnemonics([ms[0], clash.mnemonic(), ms[2]])


def test_bad_words_name_the_position_not_the_word() -> None:
    m = slip39.generate_mnemonics(1, [(1, 1)], SECRET16, iteration_exponent=0)[0][0].split()
    m[5] = "zzzsecretword"
    with pytest.raises(FormatError) as exc:
        slip39.combine_mnemonics([" ".join(m)])
    assert "word 6" in str(exc.value) and "zzzsecretword" not in str(exc.value)
    assert "share 1" in str(exc.value)


@settings(max_examples=40)
@given(st.data())
def test_any_single_word_substitution_is_caught(data) -> None:
    m = slip39.generate_mnemonics(
        1, [(1, 1)], SECRET16, iteration_exponent=0, rng=DeterministicRandom("w")
    )[0][0]
    words = m.split()
    pos = data.draw(st.integers(0, len(words) - 1))
    new = data.draw(st.sampled_from(WORDS).filter(lambda w: w != words[pos]))
    words[pos] = new
    with pytest.raises((ChecksumError, FormatError)):
        slip39.decode_mnemonic(" ".join(words))


def test_rs1024_customization_separates_kinds() -> None:
    data = [1, 2, 3, 4]
    a = rs1024.create_checksum(data, b"shamir")
    b = rs1024.create_checksum(data, b"shamir_extendable")
    assert a != b
    assert rs1024.verify_checksum(data + a, b"shamir")
    assert not rs1024.verify_checksum(data + a, b"shamir_extendable")


def test_repr_redacts_value() -> None:
    s = slip39.decode_mnemonic(
        slip39.generate_mnemonics(1, [(1, 1)], SECRET16, iteration_exponent=0)[0][0]
    )
    assert SECRET16.hex() not in repr(s) and s.value.hex() not in repr(s)
    assert "redacted" in repr(s)


@pytest.mark.parametrize(
    "kwargs,exc",
    [
        ({"master_secret": b"x" * 15}, ValueError),
        ({"master_secret": b"x" * 17}, ValueError),
        ({"master_secret": "x" * 16}, TypeError),
        ({"passphrase": "str"}, TypeError),
        ({"passphrase": b"caf\xc3\xa9"}, ValueError),
        ({"iteration_exponent": 16}, ValueError),
        ({"groups": [(1, 2)]}, ValueError),
        ({"groups": [(3, 2)]}, ValueError),
        ({"groups": [(2, 17)]}, ValueError),
        ({"group_threshold": 2}, ValueError),
        ({"groups": []}, ValueError),
    ],
)
def test_generate_rejects_misuse(kwargs, exc) -> None:
    args = {"group_threshold": 1, "groups": [(2, 3)], "master_secret": SECRET16, **kwargs}
    gt, groups, ms = args.pop("group_threshold"), args.pop("groups"), args.pop("master_secret")
    with pytest.raises(exc):
        slip39.generate_mnemonics(gt, groups, ms, **args)


def test_combine_misuse_and_empty() -> None:
    with pytest.raises(TypeError):
        slip39.combine_mnemonics("one string")  # type: ignore[arg-type]
    with pytest.raises(InsufficientSharesError):
        slip39.combine_mnemonics([])
    with pytest.raises(KeysplitError):
        slip39.combine_mnemonics([""])


def test_deterministic_rng_is_reproducible() -> None:
    a = slip39.generate_mnemonics(
        2, [(2, 3), (1, 1)], SECRET16, iteration_exponent=0, rng=DeterministicRandom("x")
    )
    b = slip39.generate_mnemonics(
        2, [(2, 3), (1, 1)], SECRET16, iteration_exponent=0, rng=DeterministicRandom("x")
    )
    assert a == b


def _mnemonic() -> str:
    return slip39.generate_mnemonics(
        1, [(1, 1)], SECRET16, iteration_exponent=0, rng=DeterministicRandom("nfkc")
    )[0][0]


@pytest.mark.parametrize(
    "spell",
    [
        lambda m: m.replace("k", "\u212a"),  # KELVIN SIGN: NFKC "K"
        lambda m: m.replace(" ", "\u00a0"),  # NO-BREAK SPACE, pasted from a document
        lambda m: m.replace(" ", "\u3000"),  # IDEOGRAPHIC SPACE
        lambda m: m.replace(" ", "\u2003 "),  # EM SPACE and a space
        lambda m: m.upper().replace(" ", "\u202f"),  # NARROW NO-BREAK SPACE
    ],
    ids=["kelvin", "nbsp", "ideographic-space", "em-space", "narrow-nbsp-upper"],
)
def test_other_unicode_forms_of_letters_and_spaces_read_as_the_reference_reads_them(
    spell,
) -> None:
    """Letters and spaces that NFKC maps to ASCII read as the ASCII mnemonic, as the
    reference (shamir-mnemonic: lower case, split on Unicode whitespace) reads them too."""
    m = _mnemonic()
    odd = spell(m)
    assert odd != m and not odd.isascii()
    assert slip39.decode_mnemonic(odd) == slip39.decode_mnemonic(m)
    assert shamir_mnemonic.share.Share.from_mnemonic(
        odd
    ) == shamir_mnemonic.share.Share.from_mnemonic(m)
    assert slip39.combine_mnemonics([odd]) == shamir_mnemonic.combine_mnemonics([odd]) == SECRET16


def test_fullwidth_letters_are_read_as_letters() -> None:
    """Fullwidth letters (a CJK input method's) are the letters under NFKC: read as the
    ASCII mnemonic (before: "not in the wordlist"). The reference refuses them; keysplit
    reads a superset there, and the RS1024 checksum still checks the share."""
    m = _mnemonic()
    wide = "".join(chr(ord(c) + 0xFEE0) if "a" <= c <= "z" else c for c in m)
    assert slip39.decode_mnemonic(wide) == slip39.decode_mnemonic(m)
    with pytest.raises(shamir_mnemonic.MnemonicError):
        shamir_mnemonic.share.Share.from_mnemonic(wide)


@pytest.mark.parametrize(
    ("sep", "why"),
    [("\u2028", "LINE SEPARATOR"), ("\u0085", "NEL"), ("\u1680", "OGHAM SPACE MARK")],
)
def test_a_separator_nfkc_does_not_make_a_space_is_refused(sep: str, why: str) -> None:
    """The reference splits on any Unicode whitespace (so it takes these); keysplit
    (before: the same, by str.split) now refuses a separator NFKC leaves non-ASCII, with
    a message that says so rather than reading text it cannot show the custodian."""
    m = _mnemonic()
    odd = m.replace(" ", sep, 1)
    assert shamir_mnemonic.share.Share.from_mnemonic(
        odd
    ) == shamir_mnemonic.share.Share.from_mnemonic(m)
    with pytest.raises(FormatError) as exc:
        slip39.decode_mnemonic(odd)
    assert "not a space" in str(exc.value), why


@pytest.mark.parametrize("bad", ["\u00e9", "\u0130", "\u0131", "\ud800", "\u0430"])
def test_a_word_still_not_ascii_after_nfkc_names_its_position(bad: str) -> None:
    """é, dotted capital I, dotless i, a lone surrogate, Cyrillic а (looks like "a"):
    refused with the word's position and why, never the word (part of a secret)."""
    words = _mnemonic().split()
    words[3] = words[3][:2] + bad + words[3][3:]
    with pytest.raises(FormatError) as exc:
        slip39.decode_mnemonic(" ".join(words))
    msg = str(exc.value)
    assert "word 4" in msg and "not a letter a-z" in msg and words[3] not in msg
