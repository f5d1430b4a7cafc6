"""The keyring's seams: DataKeys (records over any key source), the store chosen by URL and
recorded in the keyring's home, the RNG threaded through every draw, the rewrap job API."""

from __future__ import annotations

import json
import pickle
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from keysplit import FormatError, Keyring, KeyringError, Share, hpke_seal, record
from keysplit.keyring import (
    KEYRING_FILE,
    PENDING_FILE,
    STORE_FILE,
    DataKeys,
    UnsealedKeyring,
    rewrap_store,
)
from keysplit.keyring.home import STORE_RECORD_FILE
from keysplit.record import DataKey
from keysplit.rng import DeterministicRandom

NAMES = ["alice", "bob", "carol"]


def _two(shares: dict[str, Share]) -> list[Share]:
    return [shares["alice"], shares["bob"]]


class CountingDataKeys:
    """A DataKeys that is not LocalDataKeys (as a key-service client would be)."""

    def __init__(self, inner: DataKeys) -> None:
        self.inner = inner
        self.calls: list[tuple[int, bool]] = []

    @property
    def keyring_id(self) -> str:
        return self.inner.keyring_id

    def resolve(self, subjects: Sequence[str], *, create: bool) -> list[DataKey | None]:
        self.calls.append((len(subjects), create))
        return self.inner.resolve(subjects, create=create)

    def export(self, subjects: Sequence[str], *, create: bool) -> list[bytes | None]:
        return self.inner.export(subjects, create=create)

    def hpke_open(self, ciphertext: bytes, info: bytes) -> bytes:
        return self.inner.hpke_open(ciphertext, info)

    def audit_key(self) -> bytes:
        return self.inner.audit_key()

    def close(self) -> None:
        self.inner.close()


def test_record_api_over_another_datakeys(tmp_path: Path) -> None:
    kr, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    local = kr.unseal(_two(shares))
    assert isinstance(local.local_data_keys(), DataKeys)
    remote = CountingDataKeys(local.local_data_keys())
    assert isinstance(remote, DataKeys)
    ku = UnsealedKeyring.over(kr, remote)
    rec = ku.encrypt(b"hello", subject="u1", context={"t": "x"})
    assert local.decrypt(rec, subject="u1", context={"t": "x"}) == b"hello"
    recs = ku.encrypt_many(["a", "b", "a"], [b"1", b"2", b"3"])
    assert ku.decrypt_many(["a", "b", "a"], recs) == [b"1", b"2", b"3"]
    assert ku.hpke_open(hpke_seal(kr.public_key, b"s")) == b"s"
    assert ku.audit_key() == local.audit_key()
    # sealing asks for every occurrence (a DataKeys may count records per key), opening
    # for each distinct subject once
    assert remote.calls == [(1, True), (3, True), (2, False)]
    for admin in (ku.rotate, ku.rewrap, ku.abort_rekey, ku.keks_for_rewrap, ku.status):
        with pytest.raises(KeyringError, match="unsealed in this process"):
            admin()
    with pytest.raises(KeyringError, match="unsealed in this process"):
        ku.shred("u1")
    other, _ = Keyring.create(tmp_path / "other", 2, NAMES)
    with pytest.raises(KeyringError, match="another keyring"):
        UnsealedKeyring.over(other, remote)
    ku.close()


def test_data_keys_hand_out_the_keys_records_use(tmp_path: Path) -> None:
    kr, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    with kr.unseal(_two(shares)) as ku:
        rec = ku.encrypt(b"payload", subject="u1")
        k1, k2 = ku.data_keys(["u1", "nobody"])
        assert k1 is not None and k2 is None
        assert record.decrypt(k1, rec, subject="u1") == b"payload"
        (created,) = ku.data_keys(["nobody"], create=True)
        assert created is not None
        rec2 = record.encrypt(created, b"x", subject="nobody")
        assert ku.decrypt(rec2, subject="nobody") == b"x"
        with pytest.raises(ValueError):
            ku.data_keys(["x" * 5000])
    with Keyring.open(tmp_path / "kr").unseal(_two(shares)) as ku:  # durable, same key
        assert ku.decrypt(rec2, subject="nobody") == b"x"


def test_rewrap_job_over_ranges_with_handed_over_keks(tmp_path: Path) -> None:
    kr, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    subjects = [f"s{i:04d}" for i in range(300)]
    with kr.unseal(_two(shares)) as ku:
        records = ku.encrypt_many(subjects, [s.encode() for s in subjects])
        v = ku.rotate()
        keks = ku.keks_for_rewrap()
        assert keks.current == v and keks.versions == (1, v)
        assert "redacted" in repr(keks)
        _, ok = keks.unwrap(list(ku.store.get_many(["s0000"]).values()))
        assert ok.all()
        keks = pickle.loads(pickle.dumps(keks))  # as handed to a job in another process
        first = rewrap_store(keks, ku.store, batch_size=64, until="s0149")
        assert (first.rewrapped, first.remaining) == (150, 150)
        second = rewrap_store(keks, ku.store, batch_size=64, after="s0149")
        assert (second.rewrapped, second.remaining) == (150, 0)
        ku.retire(1)
    with Keyring.open(tmp_path / "kr").unseal(_two(shares)) as ku:
        assert ku.decrypt_many(subjects, records) == [s.encode() for s in subjects]


def _lifecycle(path: Path) -> dict[str, bytes]:
    """Everything a keyring writes, from one seeded RNG (no other source of randomness)."""
    rng = DeterministicRandom("seam")
    kr, shares = Keyring.create(path, 2, NAMES, rng=rng)
    out = {"create": (path / KEYRING_FILE).read_bytes()}
    with kr.unseal(_two(shares)) as ku:
        ku.data_keys([f"u{i}" for i in range(50)], create=True)
        ku.rotate()
        out["rotate"] = (path / KEYRING_FILE).read_bytes()
        ku.rewrap()
        ku.data_keys(["late"], create=True)
        new = ku.prepare_rekey()
        out["pending"] = (path / PENDING_FILE).read_bytes()
        out["shares"] = json.dumps([str(s) for s in new.values()]).encode()
        ku.commit_rekey()
        ku.retire(1)
        out["retire"] = (path / KEYRING_FILE).read_bytes()
    db = sqlite3.connect(path / STORE_FILE)
    out["store"] = repr(db.execute("SELECT * FROM data_keys ORDER BY subject").fetchall()).encode()
    db.close()
    return out


def test_every_keyring_draw_goes_through_the_rng_seam(tmp_path: Path) -> None:
    """Two runs from the same seed write byte-identical files and wrapped keys: a single
    draw from os.urandom (data keys, KEKs, nonces, rekey) would make them differ."""
    a, b = _lifecycle(tmp_path / "a"), _lifecycle(tmp_path / "b")
    assert a == b
    assert a["create"] != a["rotate"] != a["retire"]


# -- the store chosen by URL, recorded in the home -----------------------------------------


def test_store_url_recorded_used_and_overridden(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "keys.db"
    outside.parent.mkdir()
    url = f"sqlite://{outside}"
    kr, shares = Keyring.create(tmp_path / "kr", 2, NAMES, store_url=url)
    assert not (tmp_path / "kr" / STORE_FILE).exists() and outside.exists()
    rec = json.loads((tmp_path / "kr" / STORE_RECORD_FILE).read_text())
    assert rec == {"url": url, "keyring_id": kr.keyring_id, "default_iv_versions": []}
    with Keyring.open(tmp_path / "kr").unseal(_two(shares)) as ku:
        assert ku.keyring.store_url == url
        rec_bytes = ku.encrypt(b"x", subject="u")
    assert Keyring.open(tmp_path / "kr").status().keys_by_version == {1: 1}
    db = sqlite3.connect(outside)
    assert db.execute("SELECT COUNT(*) FROM data_keys").fetchone() == (1,)
    db.close()
    # the override wins; a store of another keyring is refused, not mixed in
    Keyring.create(tmp_path / "other", 2, NAMES)
    other_url = f"sqlite://{tmp_path / 'other' / STORE_FILE}"
    with pytest.raises(KeyringError, match="another keyring"):
        Keyring.open(tmp_path / "kr", store_url=other_url).status()
    moved = tmp_path / "moved.db"
    outside.rename(moved)
    with pytest.raises(KeyringError, match="not found"):
        Keyring.open(tmp_path / "kr").status()
    kr2 = Keyring.open(tmp_path / "kr", store_url=f"sqlite://{moved}")
    with kr2.unseal(_two(shares)) as ku:
        assert ku.decrypt(rec_bytes, subject="u") == b"x"


def test_tampered_store_record_is_caught(tmp_path: Path) -> None:
    kr, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    Keyring.create(tmp_path / "other", 2, NAMES)
    record = tmp_path / "kr" / STORE_RECORD_FILE
    # pointed at another keyring's store: that store is bound to its own keyring id
    doc = {
        "url": f"sqlite://{tmp_path / 'other' / STORE_FILE}",
        "keyring_id": kr.keyring_id,
        "default_iv_versions": [],
    }
    record.write_text(json.dumps(doc))
    with pytest.raises(KeyringError, match="belongs to another keyring"):
        Keyring.open(tmp_path / "kr").status()
    with pytest.raises(KeyringError, match="belongs to another keyring"):
        Keyring.open(tmp_path / "kr").unseal(_two(shares))
    # a record copied from another keyring names the wrong keyring id
    (tmp_path / "other" / STORE_RECORD_FILE).replace(record)
    with pytest.raises(KeyringError, match="another keyring"):
        Keyring.open(tmp_path / "kr").status()
    # a password in a URL is refused, a malformed record is a FormatError-class error
    record.write_text(json.dumps(doc | {"url": "postgresql://u:pw@h/db"}))
    with pytest.raises(KeyringError, match="password"):
        Keyring.open(tmp_path / "kr").status()
    record.write_text("[" * 100_000)
    with pytest.raises(FormatError):
        Keyring.open(tmp_path / "kr").status()
    with pytest.raises(KeyringError, match="password"):
        Keyring.create(tmp_path / "new", 2, NAMES, store_url="postgresql://u:pw@h/db")


def test_closed_keyring_holds_no_keys(tmp_path: Path) -> None:
    kr, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    ku = kr.unseal(_two(shares))
    ku.encrypt(b"x", subject="u")
    ku.close()
    with pytest.raises(KeyringError, match="closed"):
        ku.data_keys(["u"])
    with pytest.raises(KeyringError, match="closed"):
        ku.audit_key()
    # (red team) every KEK accessor says so too: keks_for_rewrap() handed back the zeroed
    # placeholder (version 0, an empty KEK) for a rewrap job to fail on later
    with pytest.raises(KeyringError, match="closed"):
        ku.keks_for_rewrap()
    with pytest.raises(KeyringError, match="closed"):
        ku.hpke_open(b"\x00" * 80)
    with pytest.raises(KeyringError, match="closed"):
        ku.records.export(["u"])
