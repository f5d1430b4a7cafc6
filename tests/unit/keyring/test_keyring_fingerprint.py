"""The keyring fingerprint and hpke_seal(..., expect=): a replaced public key is refused
before anything is sealed to it (issue 15, high)."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tamper import replace_public_key

from keysplit import FormatError, Keyring, KeysplitError, hpke_seal
from keysplit.keyring import FingerprintMismatch

NAMES = ["alice", "bob", "carol"]

# BIP-350 reference bech32m (independent of keysplit._bech32)
_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _polymod(values: list[int]) -> int:
    gen = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    return chk


def _bech32m(hrp: str, data: bytes) -> str:
    acc, bits, five = 0, 0, []
    for b in data:
        acc, bits = (acc << 8) | b, bits + 8
        while bits >= 5:
            bits -= 5
            five.append((acc >> bits) & 31)
    if bits:
        five.append((acc << (5 - bits)) & 31)
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    pm = _polymod(expanded + five + [0] * 6) ^ 0x2BC830A3
    check = [(pm >> 5 * (5 - i)) & 31 for i in range(6)]
    return "".join(_CHARSET[v] for v in five + check)


def _expected(keyring_id: str, public_key: bytes) -> str:
    ident = keyring_id.encode()
    digest = hashlib.sha256(
        b"keysplit keyring fingerprint v1\x00" + struct.pack(">H", len(ident)) + ident + public_key
    ).digest()
    return "ksk1" + _bech32m("ksk", digest[:20])


def test_fingerprint_matches_an_independent_computation(tmp_path: Path) -> None:
    kr, _ = Keyring.create(tmp_path / "kr", 2, NAMES)
    fpr = kr.fingerprint
    assert fpr == _expected(kr.keyring_id, kr.public_key)
    assert len(fpr) == 42 and fpr.startswith("ksk1")
    other, _ = Keyring.create(tmp_path / "other", 2, NAMES)
    assert other.fingerprint != fpr


def test_replaced_public_key_is_refused_before_sealing(tmp_path: Path) -> None:
    path = tmp_path / "kr"
    kr, shares = Keyring.create(path, 2, NAMES)
    pinned = kr.fingerprint
    sealed = hpke_seal(kr, b"for the keyring", expect=pinned)
    with kr.unseal([shares["alice"], shares["bob"]]) as ku:
        assert ku.hpke_open(sealed) == b"for the keyring"
    attacker = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    replace_public_key(path, attacker)
    forged = Keyring.open(path)  # opens: the metadata is authenticated only at unseal
    assert forged.public_key == attacker
    with pytest.raises(FingerprintMismatch, match="may have been replaced") as info:
        hpke_seal(forged, b"secret", expect=pinned)
    assert isinstance(info.value, KeysplitError)
    with pytest.raises(FingerprintMismatch):
        forged.check_fingerprint(pinned)
    # typed by hand: any case, spaces and dashes; a typo is a format error, not a mismatch
    grouped = "-".join(pinned[i : i + 6] for i in range(0, len(pinned), 6)).upper()
    kr.check_fingerprint(grouped)
    typo = pinned[:-1] + ("q" if pinned[-1] != "q" else "p")
    with pytest.raises(FormatError, match="typo"):
        kr.check_fingerprint(typo)
    with pytest.raises(FormatError):
        kr.check_fingerprint("ksk1short")
    with pytest.raises(TypeError):
        hpke_seal(kr.public_key, b"x", expect=pinned)  # raw bytes carry no keyring id
