"""Wrapped data keys are bound to their subject (issue 15): a moved or swapped row is
refused, and stores written before the binding migrate by rotate + rewrap (+ retire)."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF
from paths import VECTORS_DIR

from keysplit import AuditError, IntegrityError, Keyring, KeyringError, Share, record
from keysplit.hazmat import keywrap
from keysplit.keyring import KEYRING_FILE, STORE_FILE
from keysplit.store import SQLiteKeyStore, WrappedKey

NAMES = ["alice", "bob", "carol"]
LEGACY = json.loads((VECTORS_DIR / "keyring_legacy_store.json").read_text())


def _two(shares: dict[str, Share]) -> list[Share]:
    return [shares["alice"], shares["bob"]]


def _row(path: Path, subject: str) -> tuple[int, bytes]:
    db = sqlite3.connect(path / STORE_FILE)
    try:
        row = db.execute(
            "SELECT kek_version, wrapped FROM data_keys WHERE subject = ?", (subject,)
        ).fetchone()
    finally:
        db.close()
    assert row is not None
    return int(row[0]), bytes(row[1])


def _put(path: Path, subject: str, version: int, wrapped: bytes) -> None:
    db = sqlite3.connect(path / STORE_FILE)
    try:
        db.execute(
            "INSERT OR REPLACE INTO data_keys (subject, kek_version, wrapped) VALUES (?, ?, ?)",
            (subject, version, wrapped),
        )
        db.commit()
    finally:
        db.close()


@pytest.fixture
def two_subjects(tmp_path: Path) -> tuple[Path, dict[str, Share], dict[str, bytes]]:
    kr, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    with kr.unseal(_two(shares)) as ku:
        recs = {s: ku.encrypt(f"of {s}".encode(), subject=s) for s in ("alice", "bob", "eve")}
    return tmp_path / "kr", shares, recs


def test_moved_row_is_refused_naming_the_subject(
    two_subjects: tuple[Path, dict[str, Share], dict[str, bytes]],
) -> None:
    path, shares, recs = two_subjects
    _put(path, "alice", *_row(path, "bob"))  # bob's wrapped key copied into alice's row
    with Keyring.open(path).unseal(_two(shares)) as ku:
        with pytest.raises(IntegrityError, match="'alice'"):
            ku.data_keys(["alice"])
        with pytest.raises(IntegrityError, match="'alice'"):
            ku.encrypt(b"new record", subject="alice")  # would have used bob's key
        assert ku.decrypt(recs["bob"], subject="bob") == b"of bob"
        assert ku.decrypt(recs["eve"], subject="eve") == b"of eve"


def test_swapped_rows_are_both_refused(
    two_subjects: tuple[Path, dict[str, Share], dict[str, bytes]],
) -> None:
    path, shares, recs = two_subjects
    a, b = _row(path, "alice"), _row(path, "bob")
    _put(path, "alice", *b)
    _put(path, "bob", *a)
    with Keyring.open(path).unseal(_two(shares)) as ku:
        for s in ("alice", "bob"):
            with pytest.raises(IntegrityError, match=f"'{s}'"):
                ku.data_keys([s])
        with pytest.raises(IntegrityError):
            ku.decrypt_many(["eve", "bob"], [recs["eve"], recs["bob"]])
        ku.rotate()
        res = ku.rewrap()  # detected per key, reported, left untouched
        assert sorted(res.corrupt) == ["alice", "bob"] and res.rewrapped == 1


def test_shredded_subject_does_not_live_on_in_another_row(
    two_subjects: tuple[Path, dict[str, Share], dict[str, bytes]],
) -> None:
    path, shares, recs = two_subjects
    _put(path, "alice", *_row(path, "bob"))
    with Keyring.open(path).unseal(_two(shares)) as ku:
        assert ku.shred("bob")
        with pytest.raises(IntegrityError, match="'alice'"):
            (key,) = ku.data_keys(["alice"])
            assert key is not None
            record.decrypt(key, recs["bob"], subject="bob")  # bob's record, via alice


def test_binding_iv_matches_an_independent_derivation(tmp_path: Path) -> None:
    """The stored row is RFC 3394 with IV = HMAC-SHA256(HKDF(KEK), label||id||v||subject)[:8]
    (docs/format/keyring.md), recomputed here with pycryptodome and the standard library."""
    kr, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    with kr.unseal(_two(shares)) as ku:
        (key,) = ku.data_keys(["José"], create=True)
        assert key is not None
        kek = ku.local_data_keys().secrets.keks[1]
    version, wrapped = _row(tmp_path / "kr", "José")
    bind_key = HKDF(kek, 32, b"", SHA256, context=b"keysplit/keyring/kw-subject-iv/v1 key")
    msg = (
        b"keysplit/keyring/kw-subject-iv/v1\x00"
        + bytes.fromhex(kr.keyring_id)
        + version.to_bytes(4, "big")
        + "José".encode()
    )
    iv = hmac.new(bind_key, msg, hashlib.sha256).digest()[:8]
    # RFC 3394 §2.2.2 unwrap by hand with pycryptodome AES-ECB: A must come back as iv
    aes = AES.new(kek, AES.MODE_ECB)
    a, r = wrapped[:8], [wrapped[8:16], wrapped[16:24]]
    for j in range(5, -1, -1):
        for i in (1, 0):
            t = 2 * j + i + 1
            b = aes.decrypt((int.from_bytes(a, "big") ^ t).to_bytes(8, "big") + r[i])
            a, r[i] = b[:8], b[8:]
    assert a == iv
    raw = r[0] + r[1]
    rec = record.encrypt(record.DataKey(raw), b"x", subject="José")
    with Keyring.open(tmp_path / "kr").unseal(_two(shares)) as ku:
        assert ku.decrypt(rec, subject="José") == b"x"


# -- migration of a store written before the binding ----------------------------------------


def _legacy_dir(tmp_path: Path) -> tuple[Path, list[Share]]:
    path = tmp_path / "legacy"
    path.mkdir()
    (path / KEYRING_FILE).write_bytes(bytes.fromhex(LEGACY["keyring_file"]))
    store = SQLiteKeyStore(path / STORE_FILE, LEGACY["keyring_id"], create=True)
    store.insert_many([WrappedKey(s, v, bytes.fromhex(w)) for s, v, w in LEGACY["data_keys"]])
    store.close()
    shares = [Share.parse(LEGACY["shares"][n]) for n in ("c1", "c3")]
    return path, shares


def _records() -> dict[str, bytes]:
    return {s: bytes.fromhex(r) for s, r in LEGACY["records"].items()}


def test_legacy_store_opens_and_migrates(tmp_path: Path) -> None:
    path, shares = _legacy_dir(tmp_path)
    records = _records()
    kr = Keyring.open(path)
    assert kr.status().unbound_kek_versions == (1,)
    with kr.unseal(shares) as ku:  # today's rows still open
        for s, rec in records.items():
            assert ku.decrypt(rec, subject=s) == f"record of {s}".encode()
        ku.encrypt(b"new", subject="zed")  # current KEK v1 is unbound: written as before
        v = ku.rotate()  # the first bound KEK version
        assert ku.status().unbound_kek_versions == (1,)
        res = ku.rewrap()  # migrates every default-IV row to a bound one
        assert (res.rewrapped, res.remaining, res.corrupt) == (5, 0, ())
        ku.retire(1)
        assert ku.status().unbound_kek_versions == ()
    for s in records:
        assert _row(path, s)[0] == v
    with Keyring.open(path).unseal(shares) as ku:
        for s, rec in records.items():
            assert ku.decrypt(rec, subject=s) == f"record of {s}".encode()
    # a keyring from before audit anchors (no audit_anchor in its metadata) works without
    # audit.anchor; the first metadata a quorum writes (rotate) anchors the log as it is and
    # claims the anchor, so deleting it is noticed from then on (before: the flag never
    # came, a deletion passed); the appends (rotate, rewrap, retire) move it on
    assert Keyring.open(path).meta.audit_anchor == 1
    assert json.loads((path / "audit.anchor").read_bytes())["entries"] == 3
    anchor = (path / "audit.anchor").read_bytes()
    (path / "audit.anchor").unlink()
    with pytest.raises(AuditError, match=r"anchor .* is missing"):
        Keyring.open(path).audit_log().verify()
    (path / "audit.anchor").write_bytes(anchor)
    assert Keyring.open(path).audit_log().verify().entries == 3
    # after the migration a moved row is refused ...
    alice = _row(path, "alice")
    _put(path, "bob", *alice)
    ku = Keyring.open(path).unseal(shares)
    with ku, pytest.raises(IntegrityError, match="'bob'"):
        ku.data_keys(["bob"])
    # ... and so is a default-IV row under a bound version (what pre-binding code would
    # write), even for its own subject
    with Keyring.open(path).unseal(shares) as ku:
        kek = ku.local_data_keys().secrets.keks[v]
    raw = np.frombuffer(b"k" * 16, np.uint8).reshape(1, 16)
    _put(path, "carol", v, keywrap.wrap_batch(kek, raw)[0].tobytes())
    ku = Keyring.open(path).unseal(shares)
    with ku, pytest.raises(IntegrityError, match="'carol'"):
        ku.data_keys(["carol"])
    # the original default-IV rows from before the migration are of a retired KEK now
    s, ver, w = LEGACY["data_keys"][0]
    _put(path, s, ver, bytes.fromhex(w))
    ku = Keyring.open(path).unseal(shares)
    with ku, pytest.raises(KeyringError, match="retired"):
        ku.data_keys([s])


def test_a_legacy_keyring_claims_its_anchor_at_its_first_metadata_write(tmp_path: Path) -> None:
    """(cli4) A keyring from before anchors has no audit.anchor until its first keyed
    append, which comes after the ceremony's metadata write: the first rotate wrote the
    keyring file while no anchor existed, so the flag came only with the second metadata
    write, and deleting the anchor in between passed. The first write now anchors the log
    as it is (its whole chain verified first) and claims the anchor."""
    path, shares = _legacy_dir(tmp_path)
    assert not (path / "audit.anchor").exists()
    with Keyring.open(path).unseal(shares) as ku:
        ku.rotate()
    assert Keyring.open(path).meta.audit_anchor == 1
    assert Keyring.open(path).audit_log().verify().entries == 1  # the rotate's entry
    (path / "audit.anchor").unlink()
    with pytest.raises(AuditError, match=r"anchor .* is missing"):
        Keyring.open(path).audit_log().verify()


def test_a_legacy_keyring_whose_log_fails_verification_claims_no_anchor(tmp_path: Path) -> None:
    """The anchor written for the claim records only a chain that verifies: a log whose
    entry was edited gets no anchor, and the keyring stays unanchored."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first, shares = _legacy_dir(tmp_path / "one")
    with Keyring.open(first).unseal(shares) as ku:
        ku.rotate()  # a log of one MACed entry, of the same keyring as the copy below
    entry = (first / "audit.log").read_bytes()
    edited = entry.replace(b'"rotate"', b'"rotatE"')
    assert edited != entry
    path, shares = _legacy_dir(tmp_path / "two")
    (path / "audit.log").write_bytes(edited)
    with Keyring.open(path).unseal(shares) as ku:
        ku.rotate(record=False)
    assert Keyring.open(path).meta.audit_anchor == 0
    assert not (path / "audit.anchor").exists()


def test_a_legacy_keyring_claims_only_an_anchor_that_verifies(tmp_path: Path) -> None:
    """The flag is set only when the anchor verifies when the keyring file is written: one
    that fails its MAC leaves the keyring as it was (and is not replaced); a rekey's new
    file claims a valid one."""
    path, shares = _legacy_dir(tmp_path)
    with Keyring.open(path).unseal(shares) as ku:
        ku.audit_log().write_anchor()  # an anchor, not claimed yet
        good = (path / "audit.anchor").read_bytes()
        forged = json.loads(good)
        forged["mac"] = "0" * 64
        bad = json.dumps(forged, sort_keys=True, separators=(",", ":")).encode()
        (path / "audit.anchor").write_bytes(bad)
        with pytest.raises(AuditError, match="MAC invalid"):
            ku.rotate()  # the ceremony refuses the forged anchor (nothing changed) ...
        ku.rotate(record=False)  # ... and an unrecorded rotate does not claim it
        assert Keyring.open(path).meta.audit_anchor == 0
        assert (path / "audit.anchor").read_bytes() == bad
        (path / "audit.anchor").write_bytes(good)
        ku.prepare_rekey()  # the pending file claims it; the commit puts it in place
        assert Keyring.open(path).meta.audit_anchor == 0
        ku.commit_rekey()
    assert Keyring.open(path).meta.audit_anchor == 1
    (path / "audit.anchor").unlink()
    with pytest.raises(AuditError, match=r"anchor .* is missing"):
        Keyring.open(path).audit_log().verify()


def test_new_keyring_has_no_unbound_version(tmp_path: Path) -> None:
    kr, _ = Keyring.create(tmp_path / "kr", 2, NAMES)
    st = kr.status()
    assert st.unbound_kek_versions == () and st.as_dict()["unbound_kek_versions"] == []
    assert st.as_dict()["store_url"] == "sqlite:keys.sqlite"
