"""pycryptodome/ssss share interop, checked against pycryptodome and the ssss tool."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from Crypto.Protocol.SecretSharing import Shamir
from hypothesis import given, settings
from hypothesis import strategies as st
from paths import VECTORS_DIR

from keysplit import DuplicateShareError, FormatError, InsufficientSharesError, RecoveryError
from keysplit.interop import pycryptodome
from keysplit.rng import DeterministicRandom

secrets16 = st.binary(min_size=16, max_size=16)


@st.composite
def splits(draw: st.DrawFn) -> tuple[int, int, bool]:
    n = draw(st.integers(1, 6))
    return draw(st.integers(1, n)), n, draw(st.booleans())


@settings(max_examples=30)
@given(secrets16, splits(), st.randoms(use_true_random=False))
def test_pycryptodome_split_keysplit_combines(secret, cfg, rnd) -> None:
    k, n, ssss = cfg
    shares = Shamir.split(k, n, secret, ssss=ssss)
    subset = rnd.sample(shares, k)
    assert pycryptodome.combine_pycryptodome(subset, ssss=ssss) == secret
    # all n shares with the threshold stated: the extras are verified, not ignored
    assert pycryptodome.combine_pycryptodome(shares, threshold=k, ssss=ssss) == secret


@settings(max_examples=30)
@given(secrets16, splits(), st.randoms(use_true_random=False))
def test_keysplit_split_pycryptodome_combines(secret, cfg, rnd) -> None:
    k, n, ssss = cfg
    shares = pycryptodome.split_pycryptodome(secret, k, n, ssss=ssss)
    assert [x for x, _ in shares] == list(range(1, n + 1))
    assert Shamir.combine(rnd.sample(shares, k), ssss=ssss) == secret


@settings(max_examples=20)
@given(secrets16, splits())
def test_text_roundtrip(secret, cfg) -> None:
    k, n, ssss = cfg
    shares = pycryptodome.split_pycryptodome(secret, k, n, ssss=ssss)
    text = pycryptodome.format_pycryptodome(shares)
    assert pycryptodome.parse_pycryptodome(text) == shares
    assert pycryptodome.format_pycryptodome(pycryptodome.parse_pycryptodome(text)) == text


def test_wrong_extra_share_is_detected() -> None:
    shares = Shamir.split(2, 4, bytes(16))
    bad = (shares[3][0], bytes([shares[3][1][0] ^ 1]) + shares[3][1][1:])
    with pytest.raises(RecoveryError, match="share 4"):
        pycryptodome.combine_pycryptodome([*shares[:3], bad], threshold=2)


def test_errors() -> None:
    shares = Shamir.split(3, 5, bytes(16))
    with pytest.raises(InsufficientSharesError, match="need 3 shares, got 2"):
        pycryptodome.combine_pycryptodome(shares[:2], threshold=3)
    with pytest.raises(InsufficientSharesError):
        pycryptodome.combine_pycryptodome([])
    with pytest.raises(DuplicateShareError):
        pycryptodome.combine_pycryptodome([shares[0], shares[0], shares[1]])
    with pytest.raises(FormatError):
        pycryptodome.combine_pycryptodome([(1, b"short"), shares[1]])
    with pytest.raises(FormatError):
        pycryptodome.combine_pycryptodome([(0, bytes(16)), shares[1]])
    with pytest.raises(ValueError):
        pycryptodome.split_pycryptodome(bytes(32), 2, 3)
    with pytest.raises(ValueError):
        pycryptodome.split_pycryptodome(bytes(16), 4, 3)


@pytest.mark.parametrize(
    "text",
    ["1-abc", "x-" + "00" * 16, "1-" + "00" * 17, "1 " + "00" * 16 + " junk", "0-" + "00" * 16],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(FormatError, match="line 1"):
        pycryptodome.parse_pycryptodome(text)


@pytest.mark.parametrize("digit", ["\uff11", "\u0661", "\u06f1", "\u0967"])
def test_parse_refuses_an_index_in_other_digits(digit: str) -> None:
    """A full-width, Arabic-Indic or Devanagari 1 as the index matched ``\\d`` and
    int() read it as 1: a share line that is not ASCII parsed (red team)."""
    hexv = "00112233445566778899aabbccddeeff"
    with pytest.raises(FormatError, match="line 2: a character that is not ASCII") as info:
        pycryptodome.parse_pycryptodome(f"# share of José\n{digit}-{hexv}\n")
    assert f"U+{ord(digit):04X}" in str(info.value)


def test_parse_accepts_variants() -> None:
    hexv = "00112233445566778899aabbccddeeff"
    text = f"# comment\n\n  tok-01-{hexv}\n2,{hexv.upper()}\n3: {hexv}\n"
    assert [x for x, _ in pycryptodome.parse_pycryptodome(text)] == [1, 2, 3]


def test_known_answer_with_seeded_rng() -> None:
    """Coefficients from the RNG seam: p(x) = s + c1 x, checked by pycryptodome."""
    secret = bytes(range(16))
    shares = pycryptodome.split_pycryptodome(secret, 2, 3, rng=DeterministicRandom("kat"))
    assert shares == pycryptodome.split_pycryptodome(secret, 2, 3, rng=DeterministicRandom("kat"))
    assert Shamir.combine(shares[1:], ssss=False) == secret


SSSS = shutil.which("ssss-split") and shutil.which("ssss-combine")


@pytest.mark.skipif(not SSSS, reason="the ssss tool is not installed")
def test_against_the_ssss_tool() -> None:
    secret = bytes.fromhex("00112233445566778899aabbccddeeff")
    out = subprocess.run(
        ["ssss-split", "-t", "3", "-n", "5", "-x", "-s", "128", "-D", "-q"],
        input=secret.hex() + "\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    shares = pycryptodome.parse_pycryptodome(out)
    assert pycryptodome.combine_pycryptodome(shares[1:4], ssss=True) == secret
    assert pycryptodome.combine_pycryptodome(shares, threshold=3, ssss=True) == secret
    split = pycryptodome.split_pycryptodome(secret, 3, 5, ssss=True)
    ours = pycryptodome.format_pycryptodome(split)
    back = subprocess.run(
        ["ssss-combine", "-t", "3", "-x", "-D", "-q"],
        input="".join(ours.splitlines(True)[2:5]),
        capture_output=True,
        text=True,
        check=True,
    )
    assert secret.hex() in back.stdout + back.stderr


VECTORS = json.loads((VECTORS_DIR / "pycryptodome.json").read_text())
EXPECT = {
    "recovery-failed": RecoveryError,
    "insufficient": InsufficientSharesError,
    "duplicate": DuplicateShareError,
    "bad-format": FormatError,
}


@pytest.mark.parametrize("case", VECTORS, ids=[c["name"] for c in VECTORS])
def test_vectors(case: dict) -> None:
    def run() -> bytes:
        shares = pycryptodome.parse_pycryptodome(case["text"])
        return pycryptodome.combine_pycryptodome(
            shares, threshold=case["threshold"], ssss=case["ssss"]
        )

    if case["expect"] == "ok":
        assert run().hex() == case["secret"]
        k, n = case["threshold"], case["count"]
        again = pycryptodome.split_pycryptodome(
            bytes.fromhex(case["secret"]),
            k,
            n,
            ssss=case["ssss"],
            rng=DeterministicRandom(case["seed"]),
        )
        assert pycryptodome.format_pycryptodome(again) == case["text"]
        assert (
            Shamir.combine(
                pycryptodome.parse_pycryptodome(case["text"])[:k], ssss=case["ssss"]
            ).hex()
            == case["secret"]
        )
    else:
        with pytest.raises(EXPECT[case["expect"]]):
            run()


def test_gf128_inverse() -> None:
    from keysplit.interop.pycryptodome import _inv, _mul

    for a in [1, 2, 3, 0x87, (1 << 128) - 1, *range(4, 300)]:
        assert _mul(a, _inv(a)) == 1
    with pytest.raises(ValueError):
        _inv(0)
