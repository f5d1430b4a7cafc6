"""Text rules (keysplit.names): NFC subjects and context keys, ASCII custodian names, and
NFC passphrases, with read paths that still find data written under another spelling."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import keysplit
from keysplit import custodian, envelope, names
from keysplit.errors import CustodianError, IntegrityError

NFC = "Jos\u00e9"
NFD = "Jose\u0301"


def test_nfc_and_nfd_are_different_bytes() -> None:
    assert NFC != NFD and NFC.encode() != NFD.encode()
    assert unicodedata.normalize("NFC", NFD) == NFC


# Examples from UAX #15 (Unicode Normalization Forms), figures 3-6 and the composition
# exclusions: expected values from the standard, not from this module.
@pytest.mark.parametrize(
    ("given_", "nfc"),
    [
        ("e\u0301", "\u00e9"),  # combining sequence composes
        ("\u212b", "\u00c5"),  # ANGSTROM SIGN: singleton, NFC is A-ring
        ("\u2126", "\u03a9"),  # OHM SIGN -> GREEK CAPITAL OMEGA
        ("\u1e9b\u0323", "\u1e9b\u0323"),  # NFC keeps long s with dot; NFKC would fold it
        ("\u0958", "\u0915\u093c"),  # composition exclusion: NFC *decomposes* (lengthens)
        ("\ufb01", "\ufb01"),  # the fi ligature is not folded (that would be NFKC)
    ],
)
def test_uax15_examples(given_: str, nfc: str) -> None:
    assert names.normalize_subject(given_) == nfc
    assert names.normalize_context_key(given_) == nfc


def test_subject_length_checked_after_normalization() -> None:
    s = "\u0958" * 341  # 1023 bytes as given, 2046 after NFC
    assert len(s.encode()) <= names.MAX_SUBJECT_BYTES
    with pytest.raises(ValueError, match="at most"):
        names.normalize_subject(s)
    assert names.normalize_subject("a" * names.MAX_SUBJECT_BYTES)
    with pytest.raises(ValueError):
        names.normalize_subject("a" * (names.MAX_SUBJECT_BYTES + 1))


@pytest.mark.parametrize("bad", ["", "\ud800", "a\udfffb"])
def test_bad_subjects(bad: str) -> None:
    with pytest.raises(ValueError):
        names.normalize_subject(bad)


def test_subject_type() -> None:
    with pytest.raises(TypeError):
        names.normalize_subject(b"x")  # type: ignore[arg-type]


def test_max_subject_matches_record_format() -> None:
    assert names.MAX_SUBJECT_BYTES == envelope.MAX_SUBJECT_BYTES


@settings(max_examples=200)
@given(st.text(min_size=1, max_size=40))
def test_subject_properties(s: str) -> None:
    try:
        canon = names.normalize_subject(s)
    except ValueError:
        return
    assert names.is_nfc(canon) and names.normalize_subject(canon) == canon
    assert canon == unicodedata.normalize("NFC", s)
    nfd = unicodedata.normalize("NFD", s)
    assert names.normalize_subject(nfd) == canon
    sp = names.subject_spellings(s)
    assert sp[0] == canon and s in sp and len(set(sp)) == len(sp)
    assert names.subject_spellings(nfd)[0] == canon


def test_spellings_of_nfc_include_nfd() -> None:
    assert names.subject_spellings(NFC) == (NFC, NFD)
    assert names.subject_spellings(NFD) == (NFC, NFD)
    assert names.subject_spellings("alice") == ("alice",)


def test_context_keys_normalized_values_exact() -> None:
    ctx = names.normalize_context({NFD: NFD, "table": "users"})
    assert ctx == {NFC: NFD, "table": "users"}
    assert names.normalize_context(None) == {}
    with pytest.raises(ValueError, match="spellings"):
        names.normalize_context({NFC: "1", NFD: "2"})
    with pytest.raises(ValueError):
        names.normalize_context({str(i): "" for i in range(names.MAX_CONTEXT_ENTRIES + 1)})
    with pytest.raises(ValueError):
        names.normalize_context({"k": "v" * (names.MAX_CONTEXT_VALUE_BYTES + 1)})
    with pytest.raises(ValueError):
        names.normalize_context({"k" * (names.MAX_CONTEXT_KEY_BYTES + 1): ""})
    with pytest.raises(TypeError):
        names.normalize_context({"k": 1})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        names.normalize_context([("k", "v")])  # type: ignore[arg-type]


# -- custodian names: a drop-in for today's rule, plus case-folded uniqueness ----------------


@settings(max_examples=300)
@given(st.text(max_size=70) | st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._@+\-]{0,70}\Z"))
def test_custodian_rule_matches_todays(name: str) -> None:
    def outcome(f: object) -> object:
        try:
            return f(name)  # type: ignore[operator]
        except ValueError:
            return ValueError

    assert outcome(names.check_custodian_name) == outcome(custodian.check_custodian_name)


@pytest.mark.parametrize("bad", ["\uff21lice", "\u0430lice", "Jos\u00e9", "", "-x", "a" * 65])
def test_custodian_non_ascii_and_bad_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        names.check_custodian_name(bad)


def test_custodian_names_unique_ignoring_case() -> None:
    assert names.check_custodian_names(["alice", "bob"]) == ["alice", "bob"]
    with pytest.raises(ValueError, match="ignoring case"):
        names.check_custodian_names(["Alice", "alice"])
    with pytest.raises(TypeError):
        names.check_custodian_names("alice")


# -- passphrases ------------------------------------------------------------------------------


def test_passphrase_nfc() -> None:
    assert names.normalize_passphrase(NFD.encode()) == NFC.encode()
    assert names.normalize_passphrase(NFD) == NFC.encode()
    assert names.normalize_passphrase(b"\xff\xfe raw") == b"\xff\xfe raw"
    assert names.passphrase_candidates(NFD.encode()) == (NFC.encode(), NFD.encode())
    assert names.passphrase_candidates(NFC.encode()) == (NFC.encode(),)
    with pytest.raises(ValueError):
        names.normalize_passphrase(b"")
    with pytest.raises(ValueError):
        names.normalize_passphrase(b"x" * (names.MAX_PASSPHRASE_BYTES + 1))
    with pytest.raises(TypeError):
        names.normalize_passphrase(1)  # type: ignore[arg-type]


@settings(max_examples=200)
@given(st.text(min_size=1, max_size=30) | st.binary(min_size=1, max_size=30))
def test_passphrase_matches_cli(p: str | bytes) -> None:
    """The library helper is a drop-in for the CLI's private normalization."""
    from keysplit_cli._opener import _normalize

    raw = p.encode("utf-8", "surrogatepass") if isinstance(p, str) else p
    try:
        got = names.normalize_passphrase(raw)
    except ValueError:
        return
    assert got == _normalize(raw)


_FAST = custodian.Argon2Params(time_cost=1, memory_kib=64, lanes=1)


def test_passphrase_share_sealed_nfd_opens_via_candidates() -> None:
    """Today's library seals the exact bytes; the NFC form no longer opens it, the
    candidates list (NFC, then exact) does."""
    (share,) = keysplit.split(bytes(16), 2, 2)[:1]
    sealed = custodian.seal_share_with_passphrase(share, "alice", NFD.encode(), kdf=_FAST)
    with pytest.raises(CustodianError):
        custodian.open_share(sealed, passphrase=names.normalize_passphrase(NFD.encode()))
    opened = None
    for cand in names.passphrase_candidates(NFD.encode()):
        try:
            opened = custodian.open_share(sealed, passphrase=cand)
            break
        except CustodianError:
            continue
    assert opened == share


# -- the subject rule through a real keyring (how keyring.py uses it at merge) ---------------


def test_keyring_legacy_nfd_subject_readable_and_shreddable(tmp_path: Path) -> None:
    kr, shares = keysplit.Keyring.create(tmp_path / "kr", 2, ["a", "b"])
    with kr.unseal([shares["a"], shares["b"]]) as ku:
        # today's code: the NFD spelling is its own subject with its own key
        legacy = ku.encrypt(b"old", subject=NFD)
        with pytest.raises(IntegrityError):
            ku.decrypt(legacy, subject=NFC)

        def read(record: bytes, subject: str) -> bytes:
            for s in names.subject_spellings(subject):
                try:
                    return ku.decrypt(record, subject=s)
                except IntegrityError:
                    continue
            raise IntegrityError()

        assert read(legacy, NFC) == b"old"  # found under the legacy spelling
        new = ku.encrypt(b"new", subject=names.normalize_subject(NFD))
        assert read(new, NFD) == b"new"
        for s in names.subject_spellings(NFC):  # shred("José") reaches every spelling
            ku.shred(s)
        for rec in (legacy, new):
            with pytest.raises(IntegrityError):
                read(rec, NFC)
