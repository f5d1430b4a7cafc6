"""Text rules (keysplit.names): NFC subjects and context keys, ASCII custodian names, and
NFC passphrases, with read paths that still find data written under another spelling."""

from __future__ import annotations

import enum
import os
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import keysplit
from keysplit import custody, names, record
from keysplit.errors import CustodianError, IntegrityError, ShreddedError

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
    assert names.MAX_SUBJECT_BYTES == record.MAX_SUBJECT_BYTES


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

    assert outcome(names.check_custodian_name) == outcome(custody.check_custodian_name)


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
def test_passphrase_is_stdlib_nfc(p: str | bytes) -> None:
    """UTF-8 passphrases become their NFC form (stdlib unicodedata as the reference),
    other bytes stay as they are (the rule the CLI applied before the library did)."""
    raw = p.encode("utf-8", "surrogatepass") if isinstance(p, str) else p
    try:
        expected = unicodedata.normalize("NFC", raw.decode("utf-8")).encode("utf-8")
    except UnicodeDecodeError:
        expected = raw
    assert names.normalize_passphrase(raw) == expected
    assert names.passphrase_candidates(raw)[0] == expected
    assert raw in names.passphrase_candidates(raw)


_FAST = custody.Argon2Params(time_cost=1, memory_kib=64, lanes=1)

# Written by the code before the library normalized (main at 7191898): the share
# ``LEGACY_SHARE`` sealed for "alice" under the exact NFD bytes of "José" with _FAST,
# salt 0xc8.. and nonce 0xc8.. (rng returning bytes(range(200, 200 + n))).
LEGACY_SHARE = bytes.fromhex(
    "4b535348010e7bcdc22ffc776802020110f230275d6fb463424c546e87dd22fd3efc6c92071863084e7790d436"
)
LEGACY_SEALED = bytes.fromhex(
    "4b535353011005616c6963650e7bcdc22ffc7768020201000000010000004001c8c9cacbcccdcecfd0d1d2d3"
    "d4d5d6d7c8c9cacbcccdcecfd0d1d2d3003d8099384fb0396c1a86e0e3d70a2025b196dad6583204ccd91ae8"
    "afe916da7c4c0af608304bad57873f8b28070c42af405ba3f316b984fbb594134f75893c70b267"
)
# Records by the same code: data key bytes(range(16)), nonce bytes(range(100, 112)),
# subject NFD "José", plaintext b"old record"; the first with context {NFD "clé": NFD}.
LEGACY_KEY = bytes(range(16))
LEGACY_RECORD_CTX = bytes.fromhex(
    "4b53524301015921611bcfcc602a09cc4ceb7fc4c6a31110e2a3e256ece90dade643a12fd8a16465666768"
    "696a6b6c6d6e6f16b143b56be9ac8106348ea554f8982264a1313f4c80d72cc707"
)
LEGACY_RECORD = bytes.fromhex(
    "4b53524301015921611bcfcc602a09cc4ceb7fc4c6a31110e2a3e256ece90dade643a12fd8a16465666768"
    "696a6b6c6d6e6f16b143b56be9ac81063400db2ce796ef29e53aaecaed329df72a"
)
CLE_NFD = "cle\u0301"


def test_passphrase_share_sealed_nfd_opens_with_nfc() -> None:
    """Issue 15: the library seals the NFC form, so the share opens whichever spelling the
    custodian types (before: the NFC passphrase was 'wrong' for an NFD-sealed share)."""
    (share,) = keysplit.split(bytes(16), 2, 2)[:1]
    sealed = custody.seal_share_with_passphrase(share, "alice", NFD.encode(), kdf=_FAST)
    assert custody.open_share(sealed, passphrase=NFC.encode()) == share
    assert custody.open_share(sealed, passphrase=NFD.encode()) == share
    with pytest.raises(CustodianError, match="wrong passphrase"):
        custody.open_share(sealed, passphrase=b"Jose")


def test_identity_passphrase_nfc(tmp_path: Path) -> None:
    ident = keysplit.Identity.generate("alice")
    data = ident.to_bytes(NFD.encode(), kdf=_FAST)
    assert keysplit.Identity.from_bytes(data, NFC.encode()).fingerprint == ident.fingerprint
    assert keysplit.Identity.from_bytes(data, NFD.encode()).fingerprint == ident.fingerprint
    with pytest.raises(CustodianError, match="wrong passphrase"):
        keysplit.Identity.from_bytes(data, b"Jose")


def test_legacy_nfd_sealed_share_still_opens() -> None:
    """A share sealed under the exact NFD bytes (before normalization) opens with the NFD
    passphrase: the opener tries NFC, then the bytes as given."""
    share = keysplit.Share.from_bytes(LEGACY_SHARE)
    assert custody.open_share(LEGACY_SEALED, passphrase=NFD.encode()) == share
    with pytest.raises(CustodianError, match="wrong passphrase"):
        custody.open_share(LEGACY_SEALED, passphrase=NFC.encode())


def test_confirm_asked_once_across_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-NFC passphrase costs two derivations on a legacy share; the custodian is
    asked about the cost once, and a refusal stops before any derivation."""
    monkeypatch.setattr(custody.Argon2Params, "CONFIRM_ABOVE_KIB", 32)  # _FAST now asks
    asked: list[custody.Argon2Params] = []

    def yes(p: custody.Argon2Params) -> bool:
        asked.append(p)
        return True

    share = custody.open_share(LEGACY_SEALED, passphrase=NFD.encode(), confirm_kdf=yes)
    assert share == keysplit.Share.from_bytes(LEGACY_SHARE) and asked == [_FAST]
    with pytest.raises(CustodianError, match="more work"):
        custody.open_share(LEGACY_SEALED, passphrase=NFD.encode(), confirm_kdf=lambda p: False)


# -- records written before normalization still open; new ones are written NFC ----------------


def test_envelope_legacy_records_open_under_every_spelling() -> None:
    key = record.DataKey(LEGACY_KEY)
    for subject in (NFC, NFD):
        assert record.decrypt(key, LEGACY_RECORD, subject=subject) == b"old record"
        got = record.decrypt_many([key], [subject], [LEGACY_RECORD])
        assert got == [b"old record"]
        for ctx in ({CLE_NFD: NFD}, {"cl\u00e9": NFD}):
            assert record.decrypt(key, LEGACY_RECORD_CTX, subject=subject, context=ctx) == (
                b"old record"
            )
            assert record.decrypt_many([key], [subject], [LEGACY_RECORD_CTX], [ctx]) == [
                b"old record"
            ]
    with pytest.raises(IntegrityError):  # the value is data: compared byte-exact
        record.decrypt(key, LEGACY_RECORD_CTX, subject=NFC, context={CLE_NFD: NFC})
    with pytest.raises(IntegrityError):
        record.decrypt(key, LEGACY_RECORD, subject="Jose")


def test_envelope_writes_nfc() -> None:
    key = record.DataKey(LEGACY_KEY)
    assert record.encode_aad(NFD, {CLE_NFD: NFD}) == record.encode_aad(NFC, {"cl\u00e9": NFD})
    rec = record.encrypt(key, b"new", subject=NFD, context={CLE_NFD: "v"})
    assert record.decrypt(key, rec, subject=NFC, context={"cl\u00e9": "v"}) == b"new"
    recs = record.encrypt_many([key, key], [NFD, NFC], [b"a", b"b"])
    assert record.decrypt_many([key, key], [NFC, NFD], recs) == [b"a", b"b"]


# -- the subject rule through a real keyring ---------------------------------------------------


def _legacy_key(ku: keysplit.UnsealedKeyring, subject: str) -> record.DataKey:
    """Store a data key under ``subject`` exactly as spelled, as the code before
    normalization did (wrapped and bound like any row; the keyring itself now creates
    keys under NFC subjects only)."""
    raw = np.frombuffer(os.urandom(16), np.uint8).reshape(1, 16)
    ku.store.insert_many(ku.keks_for_rewrap().wrap([subject], raw))
    (key,) = ku.local_data_keys().resolve([subject], create=False)
    assert key is not None
    return key


def _legacy_record(ku: keysplit.UnsealedKeyring, subject: str, pt: bytes) -> bytes:
    """A record as the code before normalization wrote it: the exact spelling in the AAD
    (the layout of docs/format/record.md, cross-checked against LEGACY_RECORD below)."""
    (key,) = ku.local_data_keys().resolve([subject], create=False)
    if key is None:
        key = _legacy_key(ku, subject)
    return _old_format(key, subject, pt, bytes(12))


def _old_format(key: record.DataKey, subject: str, pt: bytes, nonce: bytes) -> bytes:
    import struct

    header = b"KSRC\x01\x01" + key.commitment + nonce
    sub = subject.encode()
    aad = header + struct.pack(">I", len(sub)) + sub + struct.pack(">I", 0)
    return header + key._aead.encrypt(nonce, pt, aad)


def test_old_format_helper_matches_old_code() -> None:
    key = record.DataKey(LEGACY_KEY)
    assert _old_format(key, NFD, b"old record", bytes(range(100, 112))) == LEGACY_RECORD


def test_keyring_legacy_nfd_subject_readable_and_shreddable(tmp_path: Path) -> None:
    kr, shares = keysplit.Keyring.create(tmp_path / "kr", 2, ["a", "b"])
    with kr.unseal([shares["a"], shares["b"]]) as ku:
        legacy = _legacy_record(ku, NFD, b"old")
        assert ku.decrypt(legacy, subject=NFC) == b"old"  # found under the legacy spelling
        assert ku.decrypt(legacy, subject=NFD) == b"old"
        assert ku.decrypt_many([NFC, "alice"], [legacy, ku.encrypt(b"a", subject="alice")]) == [
            b"old",
            b"a",
        ]
        new = ku.encrypt(b"new", subject=NFD)  # written under NFC: a new key
        assert ku.data_keys([NFD])[0] is not None
        assert ku.decrypt(new, subject=NFC) == b"new"
        assert ku.decrypt_many([NFD, NFC], [new, legacy]) == [b"new", b"old"]
        assert set(ku.store.get_many([NFC, NFD])) == {NFC, NFD}
        assert ku.shred(NFC) is True  # shred("José") reaches every spelling
        assert ku.store.get_many([NFC, NFD]) == {}
        for rec in (legacy, new):
            with pytest.raises(ShreddedError):
                ku.decrypt(rec, subject=NFC)
            with pytest.raises(ShreddedError):
                ku.decrypt(rec, subject=NFD)


def test_a_hold_placed_during_a_shred_leaves_no_spelling_shredded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Red team: a subject with keys under two spellings (NFC and a legacy NFD one) was
    shredded one spelling per store transaction, so a legal hold placed on the legacy
    spelling by another process between the two deletes stopped the shred halfway: the NFC
    key gone, the NFD key kept, a LegalHoldError, a half-shredded subject. Now the store
    deletes every spelling in one transaction that checks every hold: all or nothing."""
    from keysplit.errors import LegalHoldError
    from keysplit.keyring import STORE_FILE
    from keysplit.store import SQLiteKeyStore

    kr, shares = keysplit.Keyring.create(tmp_path / "kr", 2, ["a", "b"])
    with kr.unseal([shares["a"], shares["b"]]) as ku:
        _legacy_key(ku, NFD)
        ku.encrypt(b"x", subject=NFC)
        store = ku.store
        other = SQLiteKeyStore(tmp_path / "kr" / STORE_FILE, store.keyring_id)
        placed: list[str] = []

        def hold_first(name: str) -> Any:  # another process holds the legacy spelling now
            real = getattr(store, name)

            def call(*args: Any, **kwargs: Any) -> Any:
                if not placed:
                    other.set_legal_hold(NFD, True)
                    placed.append(name)
                return real(*args, **kwargs)

            return call

        for name in ("delete", "delete_many"):
            if hasattr(store, name):
                monkeypatch.setattr(store, name, hold_first(name))
        with pytest.raises(LegalHoldError):
            ku.shred(NFC)
        assert placed
        assert set(other.get_many([NFC, NFD])) == {NFC, NFD}  # nothing shredded
        assert other.tombstones_since(0) == []
        other.set_legal_hold(NFD, False)
        assert ku.shred(NFC) is True
        assert other.get_many([NFC, NFD]) == {}
        other.close()


def test_keyring_nfd_written_key_shredded_by_nfc(tmp_path: Path) -> None:
    """Issue 15: ``shred("José")`` in NFC removes the key an NFD-spelled subject created
    (before: the NFD spelling had its own key, which survived)."""
    kr, shares = keysplit.Keyring.create(tmp_path / "kr", 2, ["a", "b"])
    with kr.unseal([shares["a"], shares["b"]]) as ku:
        rec = ku.encrypt(b"x", subject=NFD)
        (rec2,) = ku.encrypt_many([NFD], [b"y"])
        assert ku.decrypt(rec, subject=NFC) == b"x"
        assert ku.shred(NFC) is True
        with pytest.raises(ShreddedError):
            ku.decrypt(rec, subject=NFD)
        with pytest.raises(ShreddedError):
            ku.decrypt_many([NFD], [rec2])


def test_legal_hold_covers_every_spelling(tmp_path: Path) -> None:
    from keysplit.errors import LegalHoldError

    kr, shares = keysplit.Keyring.create(tmp_path / "kr", 2, ["a", "b"])
    with kr.unseal([shares["a"], shares["b"]]) as ku:
        _legacy_key(ku, NFD)
        ku.encrypt(b"x", subject=NFC)
        ku.set_legal_hold(NFC, True)
        with pytest.raises(LegalHoldError):
            ku.shred(NFD)
        assert set(ku.store.get_many([NFC, NFD])) == {NFC, NFD}  # nothing deleted
        ku.set_legal_hold(NFD, False)
        assert ku.shred(NFD) is True
        assert ku.store.get_many([NFC, NFD]) == {}


def test_custodian_names_unique_ignoring_case_in_keyring(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ignoring case"):
        keysplit.Keyring.create(tmp_path / "kr", 2, ["Alice", "alice"])


# -- issue 21, item 8: spellings neither NFC nor NFD ---------------------------------------

# "résumé" with e + U+0301 (acute, ccc 230) + U+0323 (dot below, ccc 220): the marks are out
# of canonical order, so this is neither the NFC nor the NFD spelling of its subject.
ODD = "re\u0301\u0323sume\u0301"
ODD_NFC = unicodedata.normalize("NFC", ODD)


def test_odd_spelling_is_neither_nfc_nor_nfd() -> None:
    assert ODD not in (ODD_NFC, unicodedata.normalize("NFD", ODD))
    assert ODD not in names.subject_spellings(ODD_NFC)  # what shred looked at before
    assert names.has_other_spellings(ODD_NFC)


@pytest.mark.parametrize(
    ("text", "other"),
    [
        ("plain-ascii/42", False),
        ("Key", True),  # U+212A KELVIN SIGN is "K" in NFC
        ("a;b", True),  # U+037E GREEK QUESTION MARK
        ("caf\u00e9", True),
        ("\u65e5\u672c", False),  # CJK without compatibility twins
        ("\ud55c", True),  # a Hangul syllable
        ("\u0b95\u0bbe", True),  # Tamil: U+0BBE composes with a preceding U+0BC6
    ],
)
def test_has_other_spellings(text: str, other: bool) -> None:
    assert names.has_other_spellings(text) is other


@given(st.text(alphabet="aeKo;\u00e9\u0301\u0323\u0308\u212a\u037e", min_size=1, max_size=8))
def test_every_text_with_a_twin_is_flagged(text: str) -> None:
    canon = unicodedata.normalize("NFC", text)
    if text != canon:
        assert names.has_other_spellings(canon)


def test_shred_of_nfc_reaches_an_odd_legacy_spelling(tmp_path: Path) -> None:
    kr, shares = keysplit.Keyring.create(tmp_path / "kr", 2, ["a", "b"])
    with kr.unseal([shares["a"], shares["b"]]) as ku:
        legacy = _legacy_record(ku, ODD, b"old cv")
        assert ku.decrypt(legacy, subject=ODD) == b"old cv"
        fresh = ku.encrypt(b"new cv", subject=ODD)  # written under the NFC subject
        assert set(ku.store.get_many([ODD, ODD_NFC])) == {ODD, ODD_NFC}
        assert ku.shred(ODD_NFC) is True
        assert ku.store.get_many([ODD, ODD_NFC]) == {}
        for rec in (legacy, fresh):
            for s in (ODD, ODD_NFC):
                with pytest.raises(ShreddedError):
                    ku.decrypt(rec, subject=s)


def test_shred_reaches_a_legacy_compatibility_twin_of_an_ascii_subject(tmp_path: Path) -> None:
    twin = "\u212aey/7"  # KELVIN SIGN + "ey/7": its NFC is the ASCII "Key/7"
    kr, shares = keysplit.Keyring.create(tmp_path / "kr", 2, ["a", "b"])
    with kr.unseal([shares["a"], shares["b"]]) as ku:
        _legacy_key(ku, twin)
        assert ku.shred("Key/7") is True
        assert ku.store.get_many([twin]) == {}


def test_hold_covers_an_odd_legacy_spelling(tmp_path: Path) -> None:
    from keysplit.errors import LegalHoldError

    kr, shares = keysplit.Keyring.create(tmp_path / "kr", 2, ["a", "b"])
    with kr.unseal([shares["a"], shares["b"]]) as ku:
        _legacy_key(ku, ODD)
        ku.set_legal_hold(ODD_NFC, True)
        with pytest.raises(LegalHoldError):
            ku.shred(ODD_NFC)
        assert set(ku.store.get_many([ODD])) == {ODD}  # nothing deleted
        ku.set_legal_hold(ODD_NFC, False)
        assert ku.shred(ODD_NFC) is True
        assert ku.store.get_many([ODD]) == {}


@pytest.mark.parametrize(
    "legacy",
    [ODD, "\ud558\u11ab/2", "\u212aey/9"],  # odd mark order, Hangul LV + T jamo, KELVIN SIGN
    ids=["odd-marks", "hangul", "kelvin"],
)
def test_a_shredded_legacy_only_subject_is_shredded_for_a_later_process(
    tmp_path: Path, legacy: str
) -> None:
    """Issue 21 item 8, a variant: a subject whose only key was stored under an odd legacy
    spelling is shredded by its NFC spelling; a process unsealing afterwards (the CLI's
    next command, a restarted service) knows nothing of that spelling any more, and the
    record's decrypt under the subject said NoDataKeyError ("no key was ever created")
    instead of ShreddedError: the shred tombstoned only the legacy spelling."""
    subject = unicodedata.normalize("NFC", legacy)
    kr, shares = keysplit.Keyring.create(tmp_path / "kr", 2, ["a", "b"])
    with kr.unseal([shares["a"], shares["b"]]) as ku:
        rec = _legacy_record(ku, legacy, b"old")
    with kr.unseal([shares["a"], shares["b"]]) as ku:
        assert ku.shred(subject) is True
        assert ku.store.get_many([legacy, subject]) == {}
    with kr.unseal([shares["a"], shares["b"]]) as ku:
        for s in {subject, legacy, unicodedata.normalize("NFD", subject)}:
            with pytest.raises(ShreddedError):
                ku.decrypt(rec, subject=s)


@pytest.mark.parametrize(
    ("subject", "held"),
    [
        (ODD_NFC, ODD),  # marks out of canonical order
        ("\ud55c/1", "\ud558\u11ab/1"),  # Hangul: syllable + trailing jamo
        ("Key/8", "\u212aey/8"),  # KELVIN SIGN: the ASCII subject has one spelling to try
    ],
    ids=["odd-marks", "hangul", "kelvin"],
)
def test_a_hold_on_any_spelling_refuses_shred_even_without_a_key_there(
    tmp_path: Path, subject: str, held: str
) -> None:
    """Issue 21 item 8, a variant: legal holds came before NFC (issue 15), so a hold may sit
    on a spelling under which no key is stored (the key under NFC or another spelling);
    ``shred`` looked for holds only among the spellings that have keys and went through."""
    from keysplit.errors import LegalHoldError

    kr, shares = keysplit.Keyring.create(tmp_path / "kr", 2, ["a", "b"])
    with kr.unseal([shares["a"], shares["b"]]) as ku:
        rec = ku.encrypt(b"x", subject=subject)
        ku.store.set_legal_hold(held, True)  # as the code before normalization held it
        assert held not in ku.store.get_many([held])
        for s in {subject, held, unicodedata.normalize("NFD", subject)}:
            with pytest.raises(LegalHoldError):
                ku.shred(s)
        assert set(ku.store.get_many([subject])) == {subject}  # nothing deleted
        ku.set_legal_hold(subject, False)  # lifting under one spelling lifts every one
        assert ku.store.legal_holds() == []
        assert ku.shred(subject) is True
        with pytest.raises(ShreddedError):
            ku.decrypt(rec, subject=held)


def test_a_compatibility_twin_is_another_subject_for_shred_and_hold(tmp_path: Path) -> None:
    """NFKC-equal is not the same subject (names.py: "fi" and the ligature are different
    ids): neither a key nor a hold under the ligature is touched by the plain subject."""
    from keysplit.errors import LegalHoldError

    kr, shares = keysplit.Keyring.create(tmp_path / "kr", 2, ["a", "b"])
    with kr.unseal([shares["a"], shares["b"]]) as ku:
        twin = _legacy_record(ku, "\ufb01le/1", b"ligature")
        rec = ku.encrypt(b"plain", subject="file/1")
        ku.store.set_legal_hold("\ufb01le/2", True)
        ku.encrypt(b"plain", subject="file/2")
        assert ku.shred("file/1") is True and ku.shred("file/2") is True
        assert ku.decrypt(twin, subject="\ufb01le/1") == b"ligature"
        with pytest.raises(ShreddedError):
            ku.decrypt(rec, subject="file/1")
        ku.set_legal_hold("file/2", False)
        assert ku.store.legal_holds() == ["\ufb01le/2"]
        with pytest.raises(LegalHoldError):
            ku.shred("\ufb01le/2")


def test_keys_are_created_under_nfc_subjects_only(tmp_path: Path) -> None:
    """What keeps the one-pass index of legacy spellings complete for a whole session."""
    kr, shares = keysplit.Keyring.create(tmp_path / "kr", 2, ["a", "b"])
    with kr.unseal([shares["a"], shares["b"]]) as ku:
        with pytest.raises(ValueError, match="NFC"):
            ku.local_data_keys().resolve([ODD], create=True)
        (key,) = ku.data_keys([ODD], create=True)  # the record API canonicalizes first
        assert key is not None and set(ku.store.get_many([ODD, ODD_NFC])) == {ODD_NFC}


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_a_subject_with_nul_is_refused_by_every_store(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """(red team, 'found, not fixed') "\\x00" passed check_subject: the SQLite store kept a
    key under it, PostgreSQL (text cannot hold NUL) refused it with a database error, so
    the stores disagreed, and no command line (argv cannot hold NUL) could shred it. Now
    the subject rule refuses it, before any store is asked, the same for both."""
    for bad in ("a\x00b", "\x00", "caf\u00e9\x00", "e\u0301\x00"):
        with pytest.raises(ValueError, match="NUL"):
            names.check_subject(bad)
    url = None
    if store == "postgres":
        url = f"{request.getfixturevalue('pg_server').url}&schema=nul_{os.urandom(6).hex()}"
    kr, shares = keysplit.Keyring.create(tmp_path / "kr", 2, ["a", "b"], store_url=url)
    with kr.unseal([shares["a"], shares["b"]]) as ukr:
        for bad in ("a\x00b", "caf\u00e9\x00"):
            with pytest.raises(ValueError, match="NUL"):
                ukr.encrypt(b"x", subject=bad)
            with pytest.raises(ValueError, match="NUL"):
                ukr.encrypt_many([bad, "ok"], [b"x", b"y"])
            with pytest.raises(ValueError, match="NUL"):
                ukr.shred(bad)
        assert ukr.decrypt(ukr.encrypt(b"x", subject="ok"), subject="ok") == b"x"
        assert sum(ukr.store.count_by_version().values()) == 1  # "ok" only


_batch_subject = st.one_of(
    st.text(st.characters(max_codepoint=0x7F), max_size=6),  # ASCII, NUL and empty included
    st.text(max_size=6),  # any text (surrogates too: refused, as by check_subject)
    st.sampled_from(["a" * names.MAX_SUBJECT_BYTES, "a" * (names.MAX_SUBJECT_BYTES + 1)]),
    st.sampled_from(["\u00e9" * 512, "\u00e9" * 513, "e\u0301" * 300, b"x", None, 1]),
)


def _one_by_one(subjects: list[object]) -> list[str] | type[Exception]:
    try:
        return [names.check_subject(s) for s in subjects]  # type: ignore[arg-type]
    except (ValueError, TypeError) as e:
        return type(e)


@given(st.lists(_batch_subject, max_size=8))
@example(["ok", "a\x00b"])
@example(["ok", ""])
@example(["ok", "a" * (names.MAX_SUBJECT_BYTES + 1)])
@example(["ok", "caf\u00e9", "\x00"])
def test_the_batch_check_agrees_with_the_subject_check(subjects: list[object]) -> None:
    """canonical_subjects is check_subject over a batch, by cheaper passes (one joined
    string for ASCII and NUL, the list for empty and too long): the same canonical
    spellings, or an error of the same kind, for every mix of good and bad subjects;
    and an all-ASCII batch comes back as the same object (the engine's fast-path test)."""
    want = _one_by_one(subjects)
    try:
        got: object = names.canonical_subjects(subjects)  # type: ignore[arg-type]
    except (ValueError, TypeError) as e:
        got = type(e)
    if isinstance(want, list):
        assert isinstance(got, list) and got == want
        all_ascii = all(s.isascii() for s in subjects)  # type: ignore[union-attr]
        assert (got is subjects) == all_ascii
    else:
        assert got is want


class _Case(enum.StrEnum):
    """A caller's subjects as a StrEnum whose members hash by name (as Enum does unless
    str's __hash__ comes first): equal to their value, another hash."""

    U1 = "u1"
    CAFE = "caf\u00e9"
    CAFE_NFD = "cafe\u0301"

    def __hash__(self) -> int:
        return hash(self.name)


class _Mixin(str, enum.Enum):  # noqa: UP042 (the mixin is the point)
    """str() of a (str, Enum) member is "_Mixin.U1", not its value: never call str()."""

    U1 = "u1"


class _Folded(str):
    """A case-folding str: "A" == "a", one hash."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and str.lower(self) == str.lower(other)

    def __hash__(self) -> int:
        return hash(str.lower(self))


@pytest.mark.parametrize("sub", [_Case.U1, _Case.CAFE, _Case.CAFE_NFD, _Mixin.U1, _Folded("A")])
def test_every_subject_rule_returns_a_plain_str(sub: str) -> None:
    """A str subclass came back unchanged from check_subject (NFC input) and from
    canonical_subjects' all-ASCII batch: the caller's object, with its own __hash__/__eq__,
    then sat in the key cache where a shred's drop() by the plain spelling missed it."""
    text = str.__str__(sub)
    want = unicodedata.normalize("NFC", text)
    assert type(names.check_subject(sub)) is str and names.check_subject(sub) == want
    for batch in ([sub], ["ok", sub], [sub, "caf\u00e9"], [sub, sub]):
        got = names.canonical_subjects(batch)
        assert got is not batch
        assert all(type(s) is str for s in got)
        assert [str.__str__(s) for s in got] == [unicodedata.normalize("NFC", s) for s in batch]
    spellings = names.subject_spellings(sub)
    assert all(type(s) is str for s in spellings) and spellings[0] == want
    assert text in spellings  # the exact spelling, as plain text


def test_a_str_subclass_subject_is_shredded_in_process(tmp_path: Path) -> None:
    """A StrEnum subject with its own hash: encrypt_many raised a bare KeyError from the
    store (its insert_many looked the enum up among the plain subjects it stored), and
    the key cache held the enum, which shred("u1")'s in-process drop() missed. Now every
    subject reaches the stores and caches as a plain str."""
    kr, shares = keysplit.Keyring.create(tmp_path / "kr", 2, ["a", "b"])
    with kr.unseal([shares["a"], shares["b"]]) as ukr:
        many = ukr.encrypt_many([_Case.U1, _Case.CAFE_NFD], [b"1", b"2"])
        one = ukr.encrypt(b"3", subject=_Case.U1)
        assert ukr.decrypt_many([_Case.U1, _Case.CAFE], many) == [b"1", b"2"]
        assert ukr.decrypt(one, subject=_Case.U1) == b"3"
        assert ukr.shred("u1") and ukr.shred("caf\u00e9")
        with pytest.raises(ShreddedError):
            ukr.decrypt_many([_Case.U1], many[:1])
        with pytest.raises(ShreddedError):
            ukr.decrypt_many([_Case.CAFE_NFD], many[1:])
        with pytest.raises(ShreddedError):
            ukr.decrypt(one, subject=_Case.U1)


def test_a_null_subject_says_subjects_cannot_be_null_and_which_one(tmp_path: Path) -> None:
    """(known problem) A None subject (a null from a database row or a data frame) was
    refused "subject must be a str", naming neither the null nor, in a batch, which
    subject: now "not None: subjects cannot be null", with the batch index. Every batch
    call goes through canonical_subjects; other wrong types name their type."""
    kr, shares = keysplit.Keyring.create(tmp_path / "kr", 2, ["a", "b"])
    with kr.unseal([shares["a"], shares["b"]]) as ukr:
        record_ = ukr.encrypt(b"x", subject="alice")
        for call in (
            lambda: ukr.encrypt(b"x", subject=None),  # type: ignore[arg-type]
            lambda: ukr.decrypt(record_, subject=None),  # type: ignore[arg-type]
        ):
            with pytest.raises(TypeError, match=r"^subject must be a str, not None: subjects "
                               r"cannot be null$"):  # fmt: skip
                call()
        for call in (
            lambda: ukr.encrypt_many(["alice", "josé", None], [b"1", b"2", b"3"]),  # type: ignore[list-item]
            lambda: ukr.encrypt_many(["alice", "bob", None], [b"1", b"2", b"3"]),  # type: ignore[list-item]
            lambda: ukr.decrypt_many(["alice", "bob", None], [record_] * 3),  # type: ignore[list-item]
        ):
            with pytest.raises(TypeError, match=r"^subjects\[2\]: subject must be a str, not "
                               r"None: subjects cannot be null$"):  # fmt: skip
                call()
        with pytest.raises(TypeError, match=r"^subjects\[1\]: subject must be a str, not int$"):
            ukr.encrypt_many(["alice", 7], [b"1", b"2"])  # type: ignore[list-item]
        with pytest.raises(ValueError, match=r"^subjects\[1\]: subject must not be empty$"):
            ukr.encrypt_many(["alice", ""], [b"1", b"2"])
