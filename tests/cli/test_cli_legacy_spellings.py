"""Issue 21 item 8, variants through real processes: keys and holds stored before NFC
normalization under spellings that are neither NFC nor NFD, against ``keysplit shred`` /
``keysplit hold`` and a real ``keysplit serve`` (``keysplit.Client.shred``).

The library tests (tests/unit/record/test_names.py) pin each rule; these check that the
CLI and the service reach them, and that a process started after the shred still sees
the subject shredded (it never saw the legacy spelling: the key is gone by then)."""

from __future__ import annotations

import os
import struct
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from service_helpers import Server, cli, make_keyring, make_token, share_file, unseal

import keysplit
from keysplit import Client
from keysplit.errors import LegalHoldError, ShreddedError

ODD = "re\u0301\u0323sume\u0301/"  # acute (ccc 230) before dot below (ccc 220)
HANGUL = "\ud558\u11ab/"  # LV syllable + trailing jamo: NFC is the LVT syllable U+D55C


def _nfc(s: str) -> str:
    return unicodedata.normalize("NFC", s)


def _quorum(tmp: Path, d: Path) -> list[keysplit.Share]:
    return [keysplit.load_share(share_file(tmp / f"{d.name}-shares", n).read_bytes()) for n in "ab"]


def _plant(d: Path, shares: list[keysplit.Share], subject: str) -> bytes:
    """A key stored under ``subject`` exactly as spelled, and a record whose AAD carries
    that spelling, as the code before normalization wrote them."""
    with keysplit.Keyring.open(d).unseal(shares) as ku:
        raw = np.frombuffer(os.urandom(16), np.uint8).reshape(1, 16)
        ku.store.insert_many(ku.keks_for_rewrap().wrap([subject], raw))
        (key,) = ku.local_data_keys().resolve([subject], create=False)
        assert key is not None
        nonce = os.urandom(12)
        header = b"KSRC\x01\x01" + key.commitment + nonce
        sub = subject.encode()
        aad = header + struct.pack(">I", len(sub)) + sub + struct.pack(">I", 0)
        return header + key._aead.encrypt(nonce, b"old", aad)


def _assert_shredded(d: Path, shares: list[keysplit.Share], subject: str, rec: bytes) -> None:
    """In a session of its own: no key under any spelling, and the record is shredded
    under the subject and under the spelling it was written with."""
    with keysplit.Keyring.open(d).unseal(shares) as ku:
        assert ku.store.get_many([subject, _nfc(subject)]) == {}
        for s in (subject, _nfc(subject)):
            with pytest.raises(ShreddedError):
                ku.decrypt(rec, subject=s)


@pytest.mark.slow
def test_cli_shred_and_hold_reach_legacy_spellings(tmp_path: Path) -> None:
    d = make_keyring(tmp_path, 2, ["a", "b", "c"])
    q = [a for n in "ab" for a in ("-s", str(share_file(tmp_path / "vault-shares", n)))]
    shares = _quorum(tmp_path, d)
    for legacy in (ODD + "1", HANGUL + "1"):
        rec = _plant(d, shares, legacy)
        r = cli("shred", d, _nfc(legacy), "--yes", *q, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        _assert_shredded(d, shares, legacy, rec)
    # a hold placed before normalization on a spelling with no key holds the subject
    with keysplit.Keyring.open(d).unseal(shares) as ku:
        ku.encrypt(b"new", subject=_nfc(ODD + "2"))
        ku.store.set_legal_hold(ODD + "2", True)
    r = cli("shred", d, _nfc(ODD + "2"), "--yes", *q, cwd=tmp_path)
    assert r.returncode == 1 and "legal hold" in r.stderr
    r = cli("hold", d, unicodedata.normalize("NFD", ODD + "2"), "--off", *q, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cli("shred", d, _nfc(ODD + "2"), "--yes", *q, cwd=tmp_path)
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_service_shred_reaches_legacy_spellings_and_holds(tmp_path: Path) -> None:
    d = make_keyring(tmp_path, 2, ["a", "b", "c"])
    files = [share_file(tmp_path / "vault-shares", n) for n in "ab"]
    shares = _quorum(tmp_path, d)
    recs = {s: _plant(d, shares, s) for s in (ODD + "3", HANGUL + "3")}  # before serve starts
    with Server(d, tmp_path / "s.sock") as srv:
        for f in files:
            assert unseal(tmp_path, d, srv, f).returncode == 0
        token = make_token(tmp_path, d, "rt", "encrypt,decrypt,shred,hold", "", files)
        c = Client(srv.url, token=token)
        with keysplit.Keyring.open(d).unseal(shares) as ku:
            ku.store.set_legal_hold(ODD + "4", True)  # a keyless legacy hold
        c.encrypt(b"new", subject=_nfc(ODD + "4"))
        with pytest.raises(LegalHoldError):
            c.shred(_nfc(ODD + "4"))
        for legacy, rec in recs.items():
            assert c.decrypt(rec, subject=legacy) == b"old"
            assert c.shred(_nfc(legacy)) is True
            with pytest.raises(ShreddedError):
                c.decrypt(rec, subject=_nfc(legacy))
    for legacy, rec in recs.items():  # after the service is gone: still shredded
        _assert_shredded(d, shares, legacy, rec)


@pytest.mark.slow
def test_caching_client_forgets_every_spelling_it_cached_on_shred(tmp_path: Path) -> None:
    """A ``Client`` with its data-key cache that decrypted under an odd spelling (marks out
    of canonical order) must not go on decrypting after its own ``shred`` of the subject:
    the cache entry under that spelling is dropped too (it was kept until it expired)."""
    d = make_keyring(tmp_path, 2, ["a", "b", "c"])
    files = [share_file(tmp_path / "vault-shares", n) for n in "ab"]
    with Server(d, tmp_path / "s.sock") as srv:
        for f in files:
            assert unseal(tmp_path, d, srv, f).returncode == 0
        token = make_token(tmp_path, d, "rt", "datakey,shred", "", files)
        with Client(srv.url, token=token, cache_max_age=3600) as c:
            rec = c.encrypt(b"mine", subject=_nfc(ODD + "5"))
            assert c.decrypt(rec, subject=ODD + "5") == b"mine"  # cached under ODD + "5"
            assert c.shred(_nfc(ODD + "5")) is True
            for s in (ODD + "5", _nfc(ODD + "5")):
                with pytest.raises((ShreddedError, keysplit.IntegrityError)):
                    c.decrypt(rec, subject=s)
