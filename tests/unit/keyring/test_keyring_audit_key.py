"""The keyring's audit MAC key: derivation, stability across rekey/rotate, separation."""

from __future__ import annotations

from pathlib import Path

import pytest
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

from keysplit import AuditLog, Keyring, KeyringError


def test_audit_key_matches_an_independent_hkdf(tmp_path: Path) -> None:
    kr, shares = Keyring.create(tmp_path / "k", 2, ["a", "b", "c"])
    with kr.unseal([shares["a"], shares["c"]]) as ukr:
        priv = ukr.local_data_keys().secrets.x25519_private
        info = b"keysplit keyring audit mac key v1\x00" + bytes.fromhex(kr.keyring_id)
        expected = HKDF(priv, 32, b"", SHA256, context=info)  # pycryptodome, RFC 5869
        assert ukr.audit_key() == expected


def test_audit_key_survives_rotate_and_rekey_and_differs_per_keyring(tmp_path: Path) -> None:
    kr, shares = Keyring.create(tmp_path / "k", 2, ["a", "b", "c"])
    with kr.unseal([shares["a"], shares["b"]]) as ukr:
        key = ukr.audit_key()
        ukr.audit_log()._append("init", threshold=2)
        ukr.rotate()
        new = ukr.rekey(custodians=["a", "b"])
        assert ukr.audit_key() == key
    with Keyring.open(kr.path).unseal([new["a"], new["b"]]) as ukr:
        assert ukr.audit_key() == key
        assert ukr.audit_log().verify().mac_verified
    other, oshares = Keyring.create(tmp_path / "o", 2, ["a", "b"])
    with other.unseal([oshares["a"], oshares["b"]]) as ukr:
        assert ukr.audit_key() != key


def test_sealed_log_has_no_mac_key_and_closed_keyring_has_no_audit_key(tmp_path: Path) -> None:
    kr, shares = Keyring.create(tmp_path / "k", 2, ["a", "b"])
    assert isinstance(kr.audit_log(), AuditLog) and "mac_key=None" in repr(kr.audit_log())
    ukr = kr.unseal([shares["a"], shares["b"]])
    ukr.audit_log()._append("init")
    ukr.close()
    with pytest.raises(KeyringError, match="closed"):
        ukr.audit_key()
    with pytest.raises(Exception, match="MAC-protected"):
        kr.audit_log()._append("shred", subject="x")  # no unkeyed appends to a MACed log
