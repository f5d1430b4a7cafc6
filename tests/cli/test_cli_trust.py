"""Keyring trust (issue 15): a replaced public key in keyring.ksk is refused on encrypt.

Through the real CLI and through the library's safe entry points
(:func:`keysplit.encrypt_file` / ``encrypt_stream``, from :mod:`keysplit.trust`): init pins
the fingerprint, status shows it, an unpinned keyring is refused unless --expect or trust
on first use.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from ceremony_helpers import (  # noqa: F401 (fixtures)
    Ceremony,
    ceremony_fixture,
    error_lines,
    fast_kdf_fixture,
    run,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tamper import replace_public_key

import keysplit
from keysplit import Keyring, trust
from keysplit.errors import FormatError, UntrustedKeyringError
from keysplit.stream import read_header, recipient_id
from keysplit.trust import KnownKeyrings, keyring_fingerprint


def _forge_public_key(path: Path) -> bytes:
    """What an attacker with write access to the directory does: a well-formed file, their key."""
    attacker = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    replace_public_key(path, attacker)
    assert Keyring.open(path).public_key == attacker  # it opens: checked only at unseal
    return attacker


def _plain(c: Ceremony) -> Path:
    src = c.root / "plain.txt"
    src.write_bytes(b"quarterly numbers\n" * 100)
    return src


def test_init_prints_and_pins_the_fingerprint_status_shows_it(cer: Ceremony) -> None:
    kr = Keyring.open(cer.kr)
    fpr = keyring_fingerprint(kr.keyring_id, kr.public_key)
    assert KnownKeyrings().lookup(kr.keyring_id).fingerprint == fpr  # type: ignore[union-attr]
    r = run(["status", cer.kr, "--json"])
    assert r.exit_code == 0, r.output
    trust = json.loads(r.stdout)["trust"]
    assert trust == {
        "fingerprint": fpr,
        "known_keyrings": os.environ["KEYSPLIT_KNOWN_KEYRINGS"],
        "pinned": True,
        "pin_matches": True,
    }
    r = run(["keyring", "trusted", "--json"])
    assert [e["fingerprint"] for e in json.loads(r.stdout)] == [fpr]


def test_forged_public_key_makes_encrypt_fail_and_write_nothing(cer: Ceremony) -> None:
    src = _plain(cer)
    fpr = Keyring.open(cer.kr).fingerprint
    ok = cer.root / "ok.ks"
    r = run(["encrypt", cer.kr, src, ok])  # pinned at init: accepted
    assert r.exit_code == 0, r.output
    _forge_public_key(cer.kr)
    out = cer.root / "sealed.ks"
    for extra in ([], ["--expect", fpr], ["--trust-on-first-use"]):
        r = run(["encrypt", cer.kr, src, out, *extra])
        assert r.exit_code == 1, (extra, r.output)
        (line,) = error_lines(r)
        assert fpr in line and "replaced" in line
        assert not out.exists()
        assert not list(cer.root.glob("sealed.ks*"))
    r = run(["status", cer.kr, "--json"])
    assert json.loads(r.stdout)["trust"]["pin_matches"] is False
    r = run(["status", cer.kr])
    assert "PINNED TO ANOTHER KEY" in r.stdout


def test_unpinned_keyring_is_refused_unless_expected_or_first_use(cer: Ceremony) -> None:
    src = _plain(cer)
    kr = Keyring.open(cer.kr)
    fpr = kr.fingerprint
    assert KnownKeyrings().remove(kr.keyring_id)  # as on another machine
    out = cer.root / "a.ks"
    r = run(["encrypt", cer.kr, src, out])
    assert r.exit_code == 1 and "not pinned" in error_lines(r)[0] and not out.exists()
    assert "hint:" in r.stderr
    r = run(["encrypt", cer.kr, src, out, "--expect", "-".join([fpr[:20], fpr[20:]]).upper()])
    assert r.exit_code == 0, r.output
    with out.open("rb") as fh:
        assert read_header(fh).recipient_id == recipient_id(kr.public_key)
    assert KnownKeyrings().lookup(kr.keyring_id) is None  # --expect does not pin
    bad = fpr[:-1] + ("q" if fpr[-1] != "q" else "p")
    r = run(["encrypt", cer.kr, src, cer.root / "b.ks", "--expect", bad])
    assert r.exit_code == 1 and "typo" in error_lines(r)[0]
    # pin with the owner's fingerprint; a wrong one is refused
    other = keyring_fingerprint(kr.keyring_id, bytes(32))
    r = run(["keyring", "pin", cer.kr, "--expect", other])
    assert r.exit_code == 1 and KnownKeyrings().lookup(kr.keyring_id) is None
    r = run(["keyring", "pin", cer.kr, "--expect", fpr])
    assert r.exit_code == 0 and r.stdout.strip() == fpr
    r = run(["encrypt", cer.kr, src, cer.root / "c.ks"])
    assert r.exit_code == 0, r.output
    # trust on first use pins, with a warning
    assert KnownKeyrings().remove(kr.keyring_id)
    r = run(["encrypt", cer.kr, src, cer.root / "d.ks", "--trust-on-first-use"])
    assert r.exit_code == 0 and "trust on first use" in r.stderr
    assert KnownKeyrings().lookup(kr.keyring_id).fingerprint == fpr  # type: ignore[union-attr]
    r = run(["keyring", "forget", kr.keyring_id])
    assert r.exit_code == 0
    r = run(["keyring", "forget", kr.keyring_id])
    assert r.exit_code == 1


def test_library_entry_points_carry_the_same_check(tmp_path: Path) -> None:
    known = KnownKeyrings(tmp_path / "known")
    path = tmp_path / "kr"
    kr, shares = Keyring.create(path, 2, ["alice", "bob", "carol"])
    fpr = kr.fingerprint
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(1000))
    with pytest.raises(UntrustedKeyringError, match="not pinned"):
        keysplit.encrypt_file(kr, str(src), str(tmp_path / "x"), known=known)
    assert not (tmp_path / "x").exists()
    trust.pin_keyring(kr, expect=fpr, known=known)
    sealed = keysplit.encrypt_file(kr, str(src), str(tmp_path / "ok"), known=known)
    assert sealed.trust == "pinned"
    buf = io.BytesIO()
    assert keysplit.encrypt_stream(kr, io.BytesIO(b"abc"), buf, known=known).trust == "pinned"
    with kr.unseal([shares["alice"], shares["bob"]]) as ukr:
        from keysplit import decrypt_file

        decrypt_file(str(tmp_path / "ok"), str(tmp_path / "ok.out"), ukr)
    assert (tmp_path / "ok.out").read_bytes() == src.read_bytes()

    _forge_public_key(path)
    forged = Keyring.open(path)
    for kwargs in ({}, {"expect": fpr}, {"trust_on_first_use": True}):
        with pytest.raises(UntrustedKeyringError, match="replaced"):
            keysplit.encrypt_file(forged, str(src), str(tmp_path / "y"), known=known, **kwargs)  # type: ignore[arg-type]
        buf = io.BytesIO()
        with pytest.raises(UntrustedKeyringError):
            keysplit.encrypt_stream(forged, io.BytesIO(b"abc"), buf, known=known, **kwargs)  # type: ignore[arg-type]
        assert buf.getvalue() == b""
    assert not (tmp_path / "y").exists()
    # a typed fingerprint that contradicts the pin cannot override it
    other = Keyring.create(tmp_path / "other", 2, ["a", "b"])[0]
    with pytest.raises(UntrustedKeyringError):
        trust.pin_keyring(forged, known=known)  # pinned to another key: refused
    with pytest.raises(FormatError):
        keysplit.encrypt_file(other, str(src), str(tmp_path / "z"), expect="ksk1nope")
