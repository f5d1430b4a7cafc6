"""keysplit.hazmat.hpke: the one HPKE suite, against RFC 9180 vectors and cryptography's HPKE."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cryptography_vectors
import pytest
from cryptography.hazmat.bindings._rust import openssl as rust_openssl
from cryptography.hazmat.primitives import hpke as cg_hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from keysplit import IntegrityError
from keysplit.hazmat import hpke

SUITE = cg_hpke.Suite(cg_hpke.KEM.X25519, cg_hpke.KDF.HKDF_SHA256, cg_hpke.AEAD.AES_128_GCM)
SK = X25519PrivateKey.from_private_bytes(bytes(range(32)))
PK = SK.public_key()


def _rfc_vector() -> dict[str, Any]:
    path = Path(cryptography_vectors.__file__).parent / "HPKE" / "test-vectors.json"
    ids = ("mode", "kem_id", "kdf_id", "aead_id")
    vectors = json.loads(path.read_text())
    (v,) = [x for x in vectors if tuple(int(x[k]) for k in ids) == (0, 0x20, 1, 1)]
    return v


def test_seal_and_open_match_rfc9180_base_vector_with_aad() -> None:
    v = _rfc_vector()
    h = bytes.fromhex
    first = v["encryptions"][0]
    sealed = hpke.seal(
        h(v["pkRm"]),
        h(v["info"]),
        h(first["pt"]),
        aad=h(first["aad"]),
        ephemeral=h(v["skEm"]),
    )
    assert sealed == h(v["enc"]) + h(first["ct"])
    opened = hpke.open(h(v["skRm"]), h(v["info"]), sealed, aad=h(first["aad"]))
    assert opened == h(first["pt"])
    enc, key, nonce = hpke.key_schedule(h(v["pkRm"]), h(v["skEm"]), h(v["info"]))
    assert (enc.hex(), key.hex(), nonce.hex()) == (v["enc"], v["key"], v["base_nonce"])


@settings(max_examples=20)
@given(info=st.binary(max_size=100), pt=st.binary(max_size=100), aad=st.binary(max_size=40))
def test_interoperates_with_cryptography_hpke(info: bytes, pt: bytes, aad: bytes) -> None:
    # Ours -> cryptography (public API has no AAD; its private helper does) and back.
    ours = hpke.seal(PK, info, pt, aad=aad)
    assert rust_openssl.hpke._decrypt_with_aad(SUITE, ours, SK, info, aad) == pt
    if not aad:
        assert SUITE.decrypt(ours, SK, info) == pt
        assert hpke.open(SK, info, SUITE.encrypt(pt, PK, info)) == pt
    theirs = rust_openssl.hpke._encrypt_with_aad(SUITE, pt, PK, info, aad)
    assert hpke.open(SK, info, theirs, aad=aad) == pt


def test_every_failure_is_a_bare_integrity_error() -> None:
    sealed = hpke.seal(PK, b"info", b"secret", aad=b"a")
    other = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    bad = [
        (SK, b"other info", sealed, b"a"),
        (SK, b"info", sealed, b"b"),
        (other, b"info", sealed, b"a"),
        (SK, b"info", sealed[:-1], b"a"),
        (SK, b"info", sealed[:40], b"a"),
        (SK, b"info", bytes(32) + sealed[32:], b"a"),  # low-order point: DH fails
    ]
    for sk, info, ct, aad in bad:
        with pytest.raises(IntegrityError) as exc:
            hpke.open(sk, info, ct, aad=aad)
        assert str(exc.value) == "authentication failed"
    assert hpke.open(SK, b"info", sealed, aad=b"a") == b"secret"


def test_fresh_ephemeral_by_default() -> None:
    assert hpke.seal(PK, b"", b"x")[:32] != hpke.seal(PK, b"", b"x")[:32]
    with pytest.raises(TypeError):
        hpke.seal(b"short", b"", b"x")


def test_a_ciphertext_longer_than_any_is_an_integrity_error(tmp_path: Path) -> None:
    """Review (b3ab135's fault one call path over): over 2^31 - 1 bytes of AES-GCM input,
    cryptography's decrypt raises pyo3's PanicException, a BaseException that passes every
    ``except Exception``; hpke.open (a keyring's hpke_open: anyone may seal to it) let it
    out, after copying the ciphertext whole. It is now refused by length first (a sparse
    file mapped copy-on-write: no 2 GiB in memory once refused)."""
    import mmap

    sk = X25519PrivateKey.generate()
    sealed = hpke.seal(sk.public_key(), b"info", b"x")  # a valid enc: the DH succeeds
    size = hpke.ENC_SIZE + 2**31 + hpke.TAG_SIZE
    with open(tmp_path / "sparse", "w+b") as f:
        f.truncate(size)
        f.write(sealed[: hpke.ENC_SIZE])
        f.flush()
        m = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
    try:
        view = memoryview(m)
        try:
            with pytest.raises(IntegrityError):
                hpke.open(sk, b"info", view)
        finally:
            view.release()
    finally:
        m.close()
