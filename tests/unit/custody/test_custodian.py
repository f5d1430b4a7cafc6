"""keysplit.custody: identities, recipients, sealed shares, RFC 9180 vectors."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.bindings._rust import openssl as rust_openssl
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import x25519
from hypothesis import given
from hypothesis import strategies as st
from paths import VECTORS_DIR

from keysplit import (
    Argon2Params,
    ChecksumError,
    CustodianError,
    FormatError,
    Identity,
    KeysplitError,
    Recipient,
    combine,
    load_share,
    open_share,
    seal_share,
    seal_share_with_passphrase,
    split,
)
from keysplit.custody import hpke as custody_hpke
from keysplit.custody import is_sealed, sealed_share_info
from keysplit.rng import DeterministicRandom

FAST = Argon2Params(time_cost=1, memory_kib=64, lanes=1)
VECTORS = json.loads((VECTORS_DIR / "share_custodian.json").read_text())
FORMAT_EXPECT = {
    "bad-checksum": "checksum mismatch",
    "truncated": "truncated",
    "trailing": "trailing",
    "unknown-version": "unsupported .* version 2",
    "bad-magic": "not a keysplit",
}
IDENTITIES = {
    case["name"]: Identity.from_bytes(bytes.fromhex(case["hex"]))
    for case in VECTORS["identities"]
    if case["expect"] == "ok" and "passphrase" not in case
}

ALICE = Identity.generate("alice")
BOB = Identity.generate("bob")
SHARES = split(bytes(range(16)), 2, 3, rng=DeterministicRandom("custodian-test"))


def _rechecksum(data: bytes) -> bytes:
    return data[:-4] + hashlib.sha256(data[:-4]).digest()[:4]


# -- known answers ------------------------------------------------------------------------


@pytest.mark.parametrize("case", VECTORS["identities"], ids=lambda c: c["name"])
def test_identity_vectors(case: dict) -> None:
    data = bytes.fromhex(case["hex"])
    pw = case["passphrase"].encode() if "passphrase" in case else None
    if case["expect"] == "ok":
        ident = Identity.from_bytes(data, pw)
        assert ident.fingerprint == case["fingerprint"]
        assert ident.name == case["custodian"]
        assert Identity.is_encrypted(data) == (pw is not None)
        if pw is None:
            assert ident.to_bytes() == data  # plain identities are canonical
        return
    if case["expect"] == "wrong-passphrase":
        with pytest.raises(CustodianError, match="alice"):
            Identity.from_bytes(data, pw)
        return
    with pytest.raises(FormatError, match=FORMAT_EXPECT[case["expect"]]):
        Identity.from_bytes(data, pw)


@pytest.mark.parametrize("case", VECTORS["recipients"], ids=lambda c: c["name"])
def test_recipient_vectors(case: dict) -> None:
    data = case["text"].encode() if "text" in case else bytes.fromhex(case["hex"])
    if case["expect"] == "ok":
        r = Recipient.from_bytes(data)
        assert r.fingerprint == case["fingerprint"]
        if "text" in case:
            assert r.to_text() == case["text"]
            assert Recipient.parse(case["text"]) == r
        else:
            assert r.to_bytes() == data
        return
    with pytest.raises(FormatError, match=FORMAT_EXPECT[case["expect"]]):
        Recipient.from_bytes(data)


@pytest.mark.parametrize("case", VECTORS["sealed"], ids=lambda c: c["name"])
def test_sealed_share_vectors(case: dict) -> None:
    data = bytes.fromhex(case["hex"])
    ident = IDENTITIES.get(case.get("identity", ""))
    pw = case["passphrase"].encode() if "passphrase" in case else None
    expect = case["expect"]
    if expect == "ok":
        info = sealed_share_info(data)
        share = open_share(data, identity=ident, passphrase=pw)
        assert share.index == info.index == case["index"]
        assert info.custodian == case["custodian"]
        assert info.set_id == share.set_id
        assert load_share(data, identity=ident, passphrase=pw) == share
        return
    if expect in ("wrong-passphrase", "wrong-identity", "tampered"):
        with pytest.raises(CustodianError) as exc:
            open_share(data, identity=ident, passphrase=pw)
        if "custodian" in case:
            assert repr(case["custodian"]) in str(exc.value)
        return
    with pytest.raises(FormatError, match=FORMAT_EXPECT[expect]):
        open_share(data, identity=ident, passphrase=pw)


def test_vector_shares_recover_the_secret() -> None:
    shares = [
        open_share(
            bytes.fromhex(c["hex"]),
            identity=IDENTITIES.get(c.get("identity", "")),
            passphrase=c["passphrase"].encode() if "passphrase" in c else None,
        )
        for c in VECTORS["sealed"]
        if c["expect"] == "ok"
    ]
    assert combine(shares).hex() == VECTORS["secret"]


def _hpke_vectors() -> list[dict]:
    import cryptography_vectors

    path = Path(cryptography_vectors.__file__).parent / "HPKE" / "test-vectors.json"
    return [
        v
        for v in json.loads(path.read_text())
        if int(v["mode"]) == 0
        and int(v["kem_id"]) == 0x20
        and int(v["kdf_id"]) == 1
        and int(v["aead_id"]) == 1
    ]


def test_rfc9180_vectors_for_our_suite() -> None:
    """RFC 9180 A.1 (base mode, X25519/HKDF-SHA256/AES-128-GCM), decrypt direction.

    The single-shot `Suite.decrypt` fixes aad = b"" while the RFC's first encryption
    uses aad "Count-0", so this goes through cryptography's `_decrypt_with_aad`, the same
    Rust routine `Suite.decrypt` calls with an empty aad.
    """
    vectors = _hpke_vectors()
    assert vectors, "RFC 9180 vectors for our suite not found in cryptography_vectors"
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
    for v in vectors:
        sk = x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(v["skRm"]))
        assert sk.public_key().public_bytes_raw().hex() == v["pkRm"]
        first = v["encryptions"][0]
        ct = bytes.fromhex(v["enc"]) + bytes.fromhex(first["ct"])
        info = bytes.fromhex(v["info"])
        pt = rust_openssl.hpke._decrypt_with_aad(suite, ct, sk, info, bytes.fromhex(first["aad"]))
        assert pt.hex() == first["pt"]
        with pytest.raises(Exception):
            rust_openssl.hpke._decrypt_with_aad(
                suite, ct, sk, info + b"x", bytes.fromhex(first["aad"])
            )
        # A recipient built from the vector key opens what keysplit seals to it.
        ident = Identity("rfc9180", "x25519", bytes.fromhex(v["skRm"]))
        assert ident.recipient.public_bytes.hex() == v["pkRm"]
        assert open_share(seal_share(SHARES[0], ident.recipient), identity=ident) == SHARES[0]


# -- behaviour -------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", ["x25519", "mlkem768-x25519"])
def test_round_trips(suite: str) -> None:
    ident = Identity.generate("carol", suite=suite)  # type: ignore[arg-type]
    assert Identity.from_bytes(ident.to_bytes()).fingerprint == ident.fingerprint
    enc = ident.to_bytes(b"pw", kdf=FAST)
    assert Identity.is_encrypted(enc)
    assert Identity.from_bytes(enc, b"pw").fingerprint == ident.fingerprint
    r = ident.recipient
    assert Recipient.from_bytes(r.to_bytes()) == r
    assert Recipient.parse(r.to_text()) == r
    assert Recipient.from_bytes(r.to_text().encode()) == r
    sealed = seal_share(SHARES[1], r)
    assert is_sealed(sealed)
    info = sealed_share_info(sealed)
    assert (info.custodian, info.index, info.method) == ("carol", 2, suite)
    assert info.recipient_fingerprint == ident.fingerprint == info.protection
    assert open_share(sealed, identity=ident) == SHARES[1]


def test_passphrase_sealing() -> None:
    sealed = seal_share_with_passphrase(SHARES[2], "dave", b"s3cret", kdf=FAST)
    info = sealed_share_info(sealed)
    assert info.protection == "passphrase" and info.kdf == FAST
    assert info.fingerprint == SHARES[2].fingerprint
    assert open_share(sealed, passphrase=b"s3cret") == SHARES[2]
    with pytest.raises(CustodianError, match="wrong passphrase for the share of custodian 'dave'"):
        open_share(sealed, passphrase=b"S3cret")
    with pytest.raises(CustodianError, match="sealed under a passphrase"):
        open_share(sealed, identity=ALICE)
    with pytest.raises(ValueError):
        seal_share_with_passphrase(SHARES[2], "dave", b"", kdf=FAST)


def test_wrong_identity_names_both_custodians() -> None:
    sealed = seal_share(SHARES[0], ALICE.recipient)
    with pytest.raises(
        CustodianError, match=r"custodian 'alice'.*not to the identity of 'bob'"
    ) as e:
        open_share(sealed, identity=BOB)
    assert e.value.hint == "use the identity of custodian 'alice'"
    with pytest.raises(CustodianError, match=r"identity file|public key"):
        open_share(sealed)
    with pytest.raises(CustodianError, match="passphrase-protected"):
        Identity.from_bytes(ALICE.to_bytes(b"pw", kdf=FAST))


def test_a_key_with_a_forged_fingerprint_header_still_fails() -> None:
    # Bob re-labels the sealed share with his own fingerprint (checksum fixed): the HPKE
    # info binds the header, and Bob's key cannot decrypt anyway.
    sealed = bytearray(seal_share(SHARES[0], ALICE.recipient))
    fp_at = 4 + 3 + len("alice") + 8 + 3
    sealed[fp_at : fp_at + 16] = bytes.fromhex(BOB.fingerprint)
    with pytest.raises(CustodianError, match="tampered"):
        open_share(_rechecksum(bytes(sealed)), identity=BOB)


def test_reprs_hide_private_material() -> None:
    ident = Identity("erin", "x25519", bytes(range(32)))
    assert "redacted" in repr(ident)
    assert bytes(range(32)).hex() not in repr(ident)
    assert "0001020304" not in repr(ident)
    assert ident.fingerprint in repr(ident.recipient)
    # the parsed identity file, which holds the private key itself when unencrypted
    fields = repr(custody_hpke._parse_identity(ident.to_bytes(None)))
    assert repr(bytes(range(32)))[2:20] not in fields and "erin" in fields


def test_longest_names_and_secrets_seal() -> None:
    big = split(b"\xaa" * 64, 2, 255)[254]
    for suite in ("x25519", "mlkem768-x25519"):
        ident = Identity.generate("n" * 64, suite=suite)  # type: ignore[arg-type]
        assert open_share(seal_share(big, ident.recipient), identity=ident) == big
    sealed = seal_share_with_passphrase(big, "p" * 64, b"pw", kdf=FAST)
    assert open_share(sealed, passphrase=b"pw") == big


def test_names_are_restricted() -> None:
    for bad in ("", "a" * 65, "-x", "a b", "al\x1bce", "名前", "a/b"):
        with pytest.raises(ValueError):
            Identity.generate(bad)
    with pytest.raises(ValueError):
        seal_share_with_passphrase(SHARES[0], "a/b", b"pw", kdf=FAST)


def test_hostile_kdf_parameters_are_refused() -> None:
    sealed = bytearray(seal_share_with_passphrase(SHARES[0], "dave", b"pw", kdf=FAST))
    kdf_at = 4 + 3 + 4 + 8 + 3
    sealed[kdf_at + 4 : kdf_at + 8] = (4 * 1024 * 1024).to_bytes(4, "big")  # 4 GiB
    with pytest.raises(FormatError, match="unacceptable Argon2id"):
        open_share(_rechecksum(bytes(sealed)), passphrase=b"pw")
    for bad in ((0, 64, 1), (1, 7, 1), (1, 64, 0), (65, 64, 1)):
        with pytest.raises(ValueError):
            Argon2Params(*bad)


def test_default_argon2_parameters_are_recorded() -> None:
    p = Argon2Params()
    assert (p.time_cost, p.memory_kib, p.lanes) == (3, 65536, 4)


def test_load_share_accepts_every_form() -> None:
    s = SHARES[1]
    text = f"# keysplit share {s.index}\n{s}\n".encode()
    assert load_share(text) == s
    assert load_share(s.to_bytes()) == s
    with pytest.raises(FormatError):
        load_share(b"\xff\xfe garbage")
    with pytest.raises(ChecksumError):
        load_share(str(s).replace("ks1-", "ks1-q").encode()[:-1] + b"\n")


SEALED_FUZZ = seal_share_with_passphrase(
    SHARES[0], "dave", b"pw", kdf=FAST, rng=DeterministicRandom("f")
)
SEALED_HPKE = seal_share(SHARES[0], ALICE.recipient)


@given(
    which=st.booleans(),
    pos=st.integers(0, 10_000),
    xor=st.integers(1, 255),
    fix=st.booleans(),
)
def test_any_byte_change_is_rejected(which: bool, pos: int, xor: int, fix: bool) -> None:
    data = bytearray(SEALED_FUZZ if which else SEALED_HPKE)
    pos %= len(data)
    data[pos] ^= xor
    mutated = _rechecksum(bytes(data)) if fix else bytes(data)
    if mutated == (SEALED_FUZZ if which else SEALED_HPKE):
        return  # the change hit the checksum and was undone by re-checksumming
    with pytest.raises(KeysplitError):
        open_share(mutated, identity=ALICE, passphrase=b"pw")


@given(st.binary(max_size=200))
def test_parsers_raise_only_keysplit_errors(data: bytes) -> None:
    for magic in (b"", b"KSSS\x01", b"KSID\x01", b"KSPK\x01"):
        blob = magic + data
        for fn in (
            lambda b: open_share(b, identity=ALICE, passphrase=b"pw"),
            lambda b: Identity.from_bytes(b, b"pw"),
            Recipient.from_bytes,
            load_share,
        ):
            with contextlib.suppress(KeysplitError):
                fn(blob)
