"""Keyring: create, unseal, records, rotate/rewrap/retire, shred, rekey, HPKE, bad input."""

from __future__ import annotations

import copy
import itertools
import json
import pickle
import shutil
import stat
import struct
from pathlib import Path

import pytest
from Crypto.Cipher import AES
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st
from paths import VECTORS_DIR

from keysplit import (
    DuplicateShareError,
    FormatError,
    InsufficientSharesError,
    IntegrityError,
    Keyring,
    KeyringError,
    LegalHoldError,
    MixedSharesError,
    NoDataKeyError,
    RecoveryError,
    Share,
    ShreddedError,
    combine,
    hpke_seal,
)
from keysplit.keyring import KEYRING_FILE, PENDING_FILE, STORE_FILE
from keysplit.keyring import file as kf
from keysplit.keyring.unseal import UnsealOutcome
from keysplit.store import SQLiteKeyStore, open_store

NAMES = ["alice", "bob", "carol"]
VECTORS = json.loads((VECTORS_DIR / "keyring.json").read_text())


@pytest.fixture
def made(tmp_path: Path) -> tuple[Path, dict[str, Share]]:
    path = tmp_path / "kr"
    _, shares = Keyring.create(path, 2, NAMES)
    return path, shares


def finished(kr: Keyring, *shares: Share) -> UnsealOutcome:
    """What an :class:`Unsealer` of ``kr`` fed ``shares`` finishes with."""
    u = kr.unsealer()
    for share in shares:
        u.add(share)
    return u.finish()


def snapshot(path: Path) -> dict[str, bytes]:
    """State of a keyring directory (the empty advisory lock file is not state)."""
    return {
        p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file() and p.name != ".lock"
    }


def test_create_layout_and_permissions(made: tuple[Path, dict[str, Share]]) -> None:
    path, shares = made
    assert set(shares) == set(NAMES)
    assert sorted(s.index for s in shares.values()) == [1, 2, 3]
    for name in (KEYRING_FILE, STORE_FILE):
        assert stat.S_IMODE((path / name).stat().st_mode) == 0o600
    data = (path / KEYRING_FILE).read_bytes()
    master = combine([shares["alice"], shares["carol"]])
    assert master not in data and master.hex().encode() not in data
    with pytest.raises(KeyringError, match="already exists"):
        Keyring.create(path, 2, NAMES)


def test_every_quorum_unseals_and_progress(made: tuple[Path, dict[str, Share]]) -> None:
    path, shares = made
    kr = Keyring.open(path)
    records = {}
    with kr.unseal([shares["alice"], shares["bob"]]) as ku:
        records = {s: ku.encrypt(s.encode(), subject=s) for s in ("u1", "u2")}
    for combo in itertools.permutations(NAMES, 2):
        u = kr.unsealer()
        p1 = u.add(shares[combo[0]])
        assert (p1.have, p1.need, p1.custodian, p1.complete) == (1, 2, combo[0], False)
        p2 = u.add(shares[combo[1]])
        assert p2.complete
        with kr.unseal(u.finish()) as ku:  # finish() returns values; unseal opens them
            for s, rec in records.items():
                assert ku.decrypt(rec, subject=s) == s.encode()


def test_unsealer_rejects_at_once(made: tuple[Path, dict[str, Share]], tmp_path: Path) -> None:
    path, shares = made
    kr = Keyring.open(path)
    u = kr.unsealer()
    u.add(shares["bob"])
    with pytest.raises(DuplicateShareError, match=r"share 2 \(bob\)"):
        u.add(shares["bob"])
    _, other = Keyring.create(tmp_path / "other", 2, NAMES)
    with pytest.raises(MixedSharesError, match="does not belong to this keyring"):
        u.add(other["alice"])
    # the name a sealed share's file carries names a share this keyring cannot name
    with pytest.raises(MixedSharesError, match=r"share 1 \(alice, set [0-9a-f]+\) does not"):
        u.add(other["alice"], custodian="alice")
    with pytest.raises(InsufficientSharesError, match="need 2 shares, got 1"):
        u.finish()
    with pytest.raises(TypeError):
        u.add(str(shares["alice"]))  # type: ignore[arg-type]
    assert "have=1" in repr(u)


def test_unseal_given_file_bytes_or_create_s_dict_names_the_fix(
    made: tuple[Path, dict[str, Share]],
) -> None:
    """The two shapes a developer hands ``unseal`` by mistake: a share file's bytes (the
    error said "add() takes a Share (use Share.parse or Share.from_bytes)", which refuse a
    sealed file) and ``create``'s dict itself (iterated, its custodian names reached
    ``add``, with that same message)."""
    path, shares = made
    kr = Keyring.open(path)
    with pytest.raises(TypeError, match=r"not bytes: open a share file with keysplit\.load_share"):
        kr.unseal([shares["alice"].to_bytes()])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"not a mapping .* \[shares\[\"ana\"\], shares"):
        kr.unseal(shares)  # type: ignore[arg-type]
    with kr.unseal([shares["alice"], shares["bob"]]) as ku:  # what the message says works
        assert ku.encrypt(b"x", subject="u")


def test_a_sealed_keyring_asked_to_encrypt_says_where_the_method_lives(
    made: tuple[Path, dict[str, Share]],
) -> None:
    """``Keyring.open(DIR).encrypt(...)`` (forgetting the unseal) raised a bare "'Keyring'
    object has no attribute 'encrypt'"; it is still an AttributeError (hasattr, duck typing),
    now naming the unsealed keyring and how to get one. Other missing names are untouched."""
    path, shares = made
    kr = Keyring.open(path)
    for name in ("encrypt", "decrypt", "shred", "rotate"):
        with pytest.raises(AttributeError, match=rf"a sealed Keyring has no '{name}': .*unseal"):
            getattr(kr, name)
        assert not hasattr(kr, name)
    with pytest.raises(AttributeError, match=r"^'Keyring' object has no attribute 'nope'$"):
        kr.nope  # type: ignore[attr-defined]  # noqa: B018
    assert copy.copy(kr).meta == kr.meta  # copy probes dunders through __getattr__
    with kr.unseal([shares["alice"], shares["bob"]]) as ku:
        assert ku.decrypt(ku.encrypt(b"x", subject="u"), subject="u") == b"x"


def test_unsealer_precheck_refuses_from_a_header_and_keeps_nothing(
    made: tuple[Path, dict[str, Share]], tmp_path: Path
) -> None:
    """What a sealed share's public header says (set, index, threshold) is checked as
    ``add`` checks it, before the share is opened; a precheck adds nothing."""
    path, shares = made
    u = Keyring.open(path).unsealer()
    bob = shares["bob"]
    u.precheck(bob.set_id, bob.index, bob.threshold)  # fine, and not added
    assert u.progress.have == 0
    u.add(bob)
    with pytest.raises(DuplicateShareError, match=r"share 2 \(bob\) was already added"):
        u.precheck(bob.set_id, bob.index, bob.threshold)
    _, other = Keyring.create(tmp_path / "other", 2, NAMES)
    o = other["alice"]
    with pytest.raises(MixedSharesError, match=r"share 1 \(ana, set [0-9a-f]+\) does not belong"):
        u.precheck(o.set_id, o.index, o.threshold, custodian="ana")
    with pytest.raises(MixedSharesError, match="share set parameters"):
        u.precheck(bob.set_id, 3, 3)
    assert u.progress.have == 1


def test_forged_share_is_never_a_wrong_key(made: tuple[Path, dict[str, Share]]) -> None:
    path, shares = made
    s = shares["alice"]
    payload = bytearray(s.payload)
    payload[0] ^= 1
    forged = Share(s.version, s.set_id, s.threshold, s.count, s.index, bytes(payload))
    before = snapshot(path)
    with pytest.raises(RecoveryError):
        Keyring.open(path).unseal([forged, shares["bob"]])
    assert snapshot(path) == before


def test_records_bound_to_subject_and_context(made: tuple[Path, dict[str, Share]]) -> None:
    path, shares = made
    with Keyring.open(path).unseal(list(shares.values())[:2]) as ku:
        rec = ku.encrypt(b"secret", subject="u1", context={"table": "msg"})
        ku.encrypt(b"x", subject="u2")
        assert ku.decrypt(rec, subject="u1", context={"table": "msg"}) == b"secret"
        with pytest.raises(IntegrityError):
            ku.decrypt(rec, subject="u2", context={"table": "msg"})
        with pytest.raises(IntegrityError):
            ku.decrypt(rec, subject="u1", context={"table": "contacts"})
        with pytest.raises(NoDataKeyError):
            ku.decrypt(rec, subject="never-seen", context={"table": "msg"})
        with pytest.raises(FormatError):
            ku.decrypt(b"garbage", subject="u1")
        subjects = [f"s{i % 7}" for i in range(40)]
        pts = [bytes([i]) * i for i in range(40)]
        recs = ku.encrypt_many(subjects, pts, {"t": "x"})
        assert ku.decrypt_many(subjects, recs, {"t": "x"}) == pts
        with pytest.raises(IntegrityError):
            ku.decrypt_many(["s1", *subjects[1:]], recs, {"t": "x"})
        with pytest.raises(NoDataKeyError):
            ku.decrypt_many(["zz", *subjects[1:]], recs, {"t": "x"})
        assert ku.status().keys_by_version == {1: 9}
    # a fresh session loads the same data keys from the store
    with Keyring.open(path).unseal([shares["carol"], shares["bob"]]) as ku:
        assert ku.decrypt_many(subjects, recs, {"t": "x"}) == pts


def test_rotate_rewrap_retire(made: tuple[Path, dict[str, Share]]) -> None:
    path, shares = made
    q = [shares["alice"], shares["bob"]]
    with Keyring.open(path).unseal(q) as ku:
        recs = ku.encrypt_many([f"u{i}" for i in range(25)], [b"v%d" % i for i in range(25)])
        assert ku.rotate() == 2
        new = ku.encrypt(b"new", subject="late")
        assert ku.status().keys_by_version == {1: 25, 2: 1}
        with pytest.raises(KeyringError, match="still wrapped"):
            ku.retire(1)
        with pytest.raises(KeyringError, match="current"):
            ku.retire(2)
        seen: list[tuple[int, int]] = []
        res = ku.rewrap(batch_size=10, progress=lambda d, t: seen.append((d, t)))
        assert (res.rewrapped, res.kek_version, res.remaining) == (25, 2, 0)
        assert seen == [(10, 25), (20, 25), (25, 25)]
        ku.retire(1)
        with pytest.raises(KeyringError, match="does not exist"):
            ku.retire(1)
        assert ku.status().kek_versions == (2,)
    with Keyring.open(path).unseal(q) as ku:
        assert ku.decrypt(new, subject="late") == b"new"
        for i, r in enumerate(recs):
            assert ku.decrypt(r, subject=f"u{i}") == b"v%d" % i
        assert ku.rotate() == 3, "retired version numbers are never reused"


def test_rewrap_resumes_after_interruption(made: tuple[Path, dict[str, Share]]) -> None:
    path, shares = made
    q = [shares["alice"], shares["bob"]]
    with Keyring.open(path).unseal(q) as ku:
        ku.encrypt_many([f"u{i:03d}" for i in range(50)], [b""] * 50)
        ku.rotate()

        def boom(done: int, total: int) -> None:
            if done >= 20:
                raise RuntimeError("interrupted")

        with pytest.raises(RuntimeError):
            ku.rewrap(batch_size=20, progress=boom)
        assert ku.status().keys_by_version == {1: 30, 2: 20}
        assert ku.rewrap(batch_size=7).rewrapped == 30


def test_a_legal_hold_takes_a_bool_only(made: tuple[Path, dict[str, Share]]) -> None:
    """(red team) ``set_legal_hold(s, "no")`` placed a hold and ``set_legal_hold(s, "")``
    (or 0) lifted one: any value was taken for its truth. A compliance switch takes
    ``True`` or ``False``; anything else is a TypeError and changes nothing."""
    path, shares = made
    with Keyring.open(path).unseal([shares["alice"], shares["bob"]]) as ku:
        ku.encrypt(b"x", subject="u1")
        ku.encrypt(b"y", subject="u2")
        ku.set_legal_hold("u2", True)
        for bad in ("no", "", 0, 1, None, "False"):
            with pytest.raises(TypeError, match="hold must be True or False"):
                ku.set_legal_hold("u1", bad)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="hold must be True or False"):
                ku.set_legal_hold("u2", bad)  # type: ignore[arg-type]
        assert ku.shred("u1") is True  # never held
        with pytest.raises(LegalHoldError):
            ku.shred("u2")  # still held


def test_shred_and_legal_hold(made: tuple[Path, dict[str, Share]]) -> None:
    path, shares = made
    with Keyring.open(path).unseal([shares["alice"], shares["bob"]]) as ku:
        rec = ku.encrypt(b"bye", subject="u1")
        ku.set_legal_hold("u1", True)
        with pytest.raises(LegalHoldError):
            ku.shred("u1")
        assert ku.decrypt(rec, subject="u1") == b"bye"
        ku.set_legal_hold("u1", False)
        assert ku.shred("u1") is True
        assert ku.shred("u1") is False
        with pytest.raises(ShreddedError):
            ku.decrypt(rec, subject="u1")
        rec2 = ku.encrypt(b"again", subject="u1")  # a new key; the old record stays dead
        with pytest.raises(ShreddedError):
            ku.decrypt(rec, subject="u1")
        assert ku.decrypt(rec2, subject="u1") == b"again"
    wrapped_gone = SQLiteKeyStore(path / STORE_FILE, Keyring.open(path).keyring_id)
    assert wrapped_gone.count_by_version() == {1: 1}
    wrapped_gone.close()


def test_a_shred_landing_during_decrypt_many_is_reported_as_such(
    made: tuple[Path, dict[str, Share]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """decrypt_many looks the keys up, opens the batch, and on a failure looks them up
    again to say why. A subject shredded in between (its key gone on the second look)
    was not explained: a bare IntegrityError instead of ShreddedError."""
    from keysplit import record as fmt

    path, shares = made
    with Keyring.open(path).unseal([shares["alice"], shares["bob"]]) as ku:
        old = ku.encrypt_many(["u1", "u2"], [b"a", b"b"])
        assert ku.shred("u1") is True
        ku.encrypt(b"new key", subject="u1")  # u1's old record names the shredded key
        open_planned = fmt.open_planned

        def shred_meanwhile(batch: object, records: object) -> object:
            ku.shred("u1")  # another caller, between the lookup and the failure
            return open_planned(batch, records)  # type: ignore[arg-type]

        monkeypatch.setattr(fmt, "open_planned", shred_meanwhile)
        with pytest.raises(ShreddedError):
            ku.decrypt_many(["u1", "u2"], old)


def test_rekey_kills_old_shares(made: tuple[Path, dict[str, Share]]) -> None:
    path, shares = made
    with Keyring.open(path).unseal([shares["alice"], shares["bob"]]) as ku:
        rec = ku.encrypt(b"kept", subject="u")
        new = ku.rekey(threshold=3, custodians=["dave", "erin", "frank", "grace"])
        assert sorted(new) == ["dave", "erin", "frank", "grace"]
        assert ku.decrypt(rec, subject="u") == b"kept", "the open session keeps working"
        ku.rotate()  # the session now holds the new master key
    kr = Keyring.open(path)
    assert kr.meta.threshold == 3 and kr.meta.generation == 3
    with pytest.raises(MixedSharesError):
        kr.unseal([shares["alice"], shares["bob"]])
    with pytest.raises(InsufficientSharesError):
        kr.unseal([new["dave"], new["erin"]])
    with kr.unseal([new["dave"], new["frank"], new["grace"]]) as ku:
        assert ku.decrypt(rec, subject="u") == b"kept"


def test_two_phase_rekey(made: tuple[Path, dict[str, Share]]) -> None:
    path, shares = made
    old = [shares["alice"], shares["bob"]]
    with Keyring.open(path).unseal(old) as ku:
        rec = ku.encrypt(b"r", subject="u")
        new = ku.prepare_rekey()
        assert (path / PENDING_FILE).exists()
        assert ku.status().pending_rekey
        with pytest.raises(KeyringError, match="pending"):
            ku.rotate()
    # before commit, old shares still unseal (and leave the pending rekey alone) ...
    with Keyring.open(path).unseal(old) as ku:
        assert ku.decrypt(rec, subject="u") == b"r"
    assert (path / PENDING_FILE).exists()
    # ... and mixing old and new in one unseal is refused, naming the share
    u = Keyring.open(path).unsealer()
    u.add(shares["alice"])
    with pytest.raises(MixedSharesError, match="unfinished rekey"):
        u.add(new["bob"])
    # the new shares complete the rekey (crash between prepare and commit)
    with Keyring.open(path).unseal([new["carol"], new["alice"]]) as ku:
        assert ku.decrypt(rec, subject="u") == b"r"
    assert not (path / PENDING_FILE).exists()
    with pytest.raises(MixedSharesError):
        Keyring.open(path).unseal(old)


def test_abort_rekey(made: tuple[Path, dict[str, Share]]) -> None:
    path, shares = made
    old = [shares["alice"], shares["bob"]]
    with Keyring.open(path).unseal(old) as ku:
        new = ku.prepare_rekey()
        assert ku.abort_rekey() is True
        assert ku.abort_rekey() is False
        with pytest.raises(KeyringError, match="no rekey is pending"):
            ku.commit_rekey()
    with pytest.raises(MixedSharesError):
        Keyring.open(path).unseal([new["alice"], new["bob"]])
    Keyring.open(path).unseal(old).close()


def test_hpke_seal_open(made: tuple[Path, dict[str, Share]]) -> None:
    path, shares = made
    kr = Keyring.open(path)
    sealed = hpke_seal(kr.public_key, b"file key", b"keysplit stream v1")
    with kr.unseal([shares["alice"], shares["bob"]]) as ku:
        assert ku.hpke_open(sealed, b"keysplit stream v1") == b"file key"
        with pytest.raises(IntegrityError):
            ku.hpke_open(sealed, b"other info")
        with pytest.raises(IntegrityError):
            ku.hpke_open(sealed[:-1], b"keysplit stream v1")
    with pytest.raises(ValueError):
        hpke_seal(b"short", b"x")


def test_hpke_seal_of_more_than_it_can_take_is_a_keysplit_error(tmp_path: Path) -> None:
    """Review (74fdab5's fault one call path over): a plaintext over 2^31 - 1 bytes made
    keysplit.hpke_seal raise cryptography's OverflowError, neither a KeysplitError nor a
    ValueError, as records did before; it is PlaintextTooLargeError now (a sparse file
    mapped copy-on-write: cryptography checks the length before reading it)."""
    import mmap

    from keysplit.record import PlaintextTooLargeError

    pk = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    with open(tmp_path / "sparse", "w+b") as f:
        f.truncate(2**31)
        m = mmap.mmap(f.fileno(), 2**31, access=mmap.ACCESS_COPY)
    try:
        view = memoryview(m)
        try:
            with pytest.raises(PlaintextTooLargeError, match="at most 2147483647 bytes"):
                hpke_seal(pk, view)  # type: ignore[arg-type]
        finally:
            view.release()
    finally:
        m.close()


def test_store_from_another_keyring_is_refused(
    made: tuple[Path, dict[str, Share]], tmp_path: Path
) -> None:
    path, shares = made
    other, _ = Keyring.create(tmp_path / "other", 2, NAMES)
    shutil.copy(tmp_path / "other" / STORE_FILE, path / STORE_FILE)
    for suffix in ("-wal", "-shm"):
        (path / (STORE_FILE + suffix)).unlink(missing_ok=True)
    before = snapshot(path)
    with pytest.raises(KeyringError, match="belongs to another keyring"):
        Keyring.open(path).unseal([shares["alice"], shares["bob"]])
    with pytest.raises(KeyringError):
        Keyring.open(path).status()
    assert snapshot(path) == before
    store = SQLiteKeyStore(tmp_path / "other" / STORE_FILE, other.keyring_id)
    kr = Keyring.open(tmp_path / "other")
    assert kr.keyring_id != Keyring.open(path).keyring_id
    with pytest.raises(KeyringError, match="another keyring"):
        Keyring.open(path).unseal([shares["alice"], shares["bob"]], store=store)
    store.close()


def test_unseal_refuses_a_store_opened_for_reading_only(
    made: tuple[Path, dict[str, Share]],
) -> None:
    """(stop 42, found) ``unseal(store=<a store opened read_only>)`` opened: the keyring's
    lease, taken at once and renewed by a watcher thread, was written through a store that
    promised to read (SQLite wrote it; a SELECT-only role or a standby fails every renewal,
    and the keyring stops serving cached keys when the lease lapses). It is refused now,
    before any share is looked at, naming the fix; nothing in the directory changes."""
    path, shares = made
    with Keyring.open(path).unseal([shares["alice"], shares["bob"]]) as ku:
        ku.encrypt(b"x", subject="u")
    before = snapshot(path)
    store = open_store("sqlite:" + STORE_FILE, keyring_id=Keyring.open(path).keyring_id,
                       home=path, read_only=True)  # fmt: skip
    try:
        with pytest.raises(KeyringError) as info:
            Keyring.open(path).unseal([shares["alice"], shares["bob"]], store=store)
        assert str(info.value) == (
            "the key store was opened for reading only, and an unsealed keyring writes to it "
            "(its lease in the fleet, renewed while it is open; new data keys); nothing was "
            "changed"
        )
        assert info.value.hint == (
            "give a store opened for writing (without read_only=True), or none: the keyring "
            "then opens its own"
        )
        assert store.leases(live=False) == []  # no lease was taken through it
    finally:
        store.close()
    assert snapshot(path) == before
    with Keyring.open(path).unseal([shares["alice"], shares["bob"]]) as ku:  # its own store
        assert len(ku.store.leases()) == 1


def test_tampered_wrapped_key_detected(made: tuple[Path, dict[str, Share]]) -> None:
    import sqlite3

    path, shares = made
    with Keyring.open(path).unseal([shares["alice"], shares["bob"]]) as ku:
        rec = ku.encrypt(b"x", subject="u")
    db = sqlite3.connect(path / STORE_FILE)
    (w,) = db.execute("SELECT wrapped FROM data_keys").fetchone()
    db.execute("UPDATE data_keys SET wrapped = ?", (bytes([w[0] ^ 1]) + w[1:],))
    db.commit()
    db.close()
    with Keyring.open(path).unseal([shares["alice"], shares["bob"]]) as ku:
        with pytest.raises(IntegrityError, match="wrapped data key"):
            ku.decrypt(rec, subject="u")
        rec_ok = ku.encrypt(b"fine", subject="v")
        ku.rotate()
        res = ku.rewrap()
        assert (res.rewrapped, res.remaining, res.corrupt) == (1, 1, ("u",))
        assert ku.decrypt(rec_ok, subject="v") == b"fine"
        with pytest.raises(KeyringError, match="still wrapped"):
            ku.retire(1)


def test_reprs_and_status_hold_no_secrets(made: tuple[Path, dict[str, Share]]) -> None:
    path, shares = made
    master = combine([shares["alice"], shares["bob"]])
    kr = Keyring.open(path)
    with kr.unseal([shares["alice"], shares["bob"]]) as ku:
        ku.encrypt(b"x", subject="u")
        secrets = ku.local_data_keys().secrets
        texts = [repr(kr), repr(ku), repr(secrets), json.dumps(ku.status().as_dict())]
        texts += [repr(ku.local_data_keys()), repr(ku.keks_for_rewrap()), repr(kr.home)]
        forbidden = [master.hex(), secrets.x25519_private.hex(), secrets.keks[1].hex()]
        for t in texts:
            for f in forbidden:
                assert f not in t
        (key,) = ku.data_keys(["u"])
        assert repr(key) == "DataKey(<redacted>)"


def test_unsealed_secrets_are_never_pickled(made: tuple[Path, dict[str, Share]]) -> None:
    """(red team) the values an unseal hands a backend, UnsealOutcome (master key, KEKs,
    X25519 key) and KeyringSecrets, pickled whole: a pickle cache, a multiprocessing
    argument or a Celery task carried every key out in clear. They refuse, as DataKey does
    (a rewrap job gets a KekSet, on purpose)."""
    path, shares = made
    kr = Keyring.open(path)
    outcome = finished(kr, shares["alice"], shares["bob"])
    with kr.unseal(outcome) as ku:
        for value in (outcome, outcome.secrets, ku.local_data_keys().secrets):
            for how in (pickle.dumps, copy.deepcopy, copy.copy):
                with pytest.raises(TypeError, match="cannot be pickled"):
                    how(value)


def test_misuse(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Keyring.create(tmp_path / "a", 1, NAMES)
    with pytest.raises(ValueError):
        Keyring.create(tmp_path / "a", 4, NAMES)
    with pytest.raises(ValueError):
        Keyring.create(tmp_path / "a", 2, ["x", "x", "y"])
    with pytest.raises(TypeError):
        Keyring.create(tmp_path / "a", 2, "abc")
    with pytest.raises(KeyringError, match="no keyring"):
        Keyring.open(tmp_path / "missing")


# -- the keyring file: vectors, independent decoding, corruption ----------------------------

EXPECT = {
    "integrity": IntegrityError,
    "bad-magic": FormatError,
    "unsupported-version": FormatError,
    "truncated": FormatError,
    "trailing-bytes": FormatError,
    "bad-metadata": FormatError,
    "mixed-shares": MixedSharesError,
}


def _shares() -> list[Share]:
    return [Share.parse(VECTORS["shares"][n]) for n in ("alice", "carol")]


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["name"])
def test_keyring_vectors(case: dict[str, str], tmp_path: Path) -> None:
    exp = VECTORS["expected"]
    path = tmp_path / "kr"
    path.mkdir()
    SQLiteKeyStore(path / STORE_FILE, exp["keyring_id"], create=True).close()
    blob = bytes.fromhex(case["file"])
    (path / KEYRING_FILE).write_bytes(blob)
    before = snapshot(path)
    if case["expect"] == "ok":
        kr = Keyring.open(path)
        assert (kr.keyring_id, kr.meta.set_id, kr.public_key.hex()) == (
            exp["keyring_id"],
            exp["set_id"],
            exp["public_key"],
        )
        with kr.unseal(_shares()) as ku:
            assert ku.local_data_keys().secrets.keks == {1: bytes.fromhex(exp["kek_1"])}
            assert ku.local_data_keys().secrets.x25519_private.hex() == exp["x25519_private"]
        assert combine(_shares()).hex() == exp["master_key"]
        return
    exc = EXPECT[case["expect"]]
    with pytest.raises(exc):
        Keyring.open(path).unseal(_shares())
    assert snapshot(path) == before, "a failed open must not change anything on disk"


def test_keyring_file_decodes_independently() -> None:
    """Follow docs/format/keyring.md with pycryptodome and the standard library only."""
    exp = VECTORS["expected"]
    data = bytes.fromhex(VECTORS["cases"][0]["file"])
    assert data[:5] == b"KSKR\x01"
    (mlen,) = struct.unpack_from(">I", data, 5)
    meta = json.loads(data[9 : 9 + mlen])
    assert meta["keyring_id"] == exp["keyring_id"] and meta["generation"] == 1
    assert meta["share_set"]["threshold"] == 2
    nonce, body = data[9 + mlen : 21 + mlen], data[21 + mlen :]
    cipher = AES.new(bytes.fromhex(exp["master_key"]), AES.MODE_GCM, nonce=nonce)
    cipher.update(data[: 9 + mlen])
    plain = cipher.decrypt_and_verify(body[:-16], body[-16:])
    assert plain[0] == 1
    priv = plain[1:33]
    assert priv.hex() == exp["x25519_private"]
    pub = X25519PrivateKey.from_private_bytes(priv).public_key()
    assert pub.public_bytes(Encoding.Raw, PublicFormat.Raw).hex() == meta["public_key"]
    (count,) = struct.unpack_from(">H", plain, 33)
    assert count == 1
    version, kek = struct.unpack_from(">I16s", plain, 35)
    assert (version, kek.hex()) == (1, exp["kek_1"])
    assert len(plain) == 35 + 20


def test_keyring_vectors_reproducible(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("genkr", VECTORS_DIR / "generate_keyring.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.OUT = tmp_path / "k.json"
    mod.main()
    assert json.loads(mod.OUT.read_text()) == VECTORS


def test_every_truncation_of_keyring_file_is_a_format_error() -> None:
    data = bytes.fromhex(VECTORS["cases"][0]["file"])
    for n in range(len(data)):
        with pytest.raises(FormatError):
            kf.parse(data[:n])


def test_every_bit_flip_fails(made: tuple[Path, dict[str, Share]]) -> None:
    """Flip a bit in each byte of the sealed part: never opens, never changes disk."""
    path, shares = made
    data = (path / KEYRING_FILE).read_bytes()
    master = combine([shares["alice"], shares["bob"]])
    for pos in range(0, len(data), 3):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises((FormatError, IntegrityError)):
            kf.open_secrets(bytes(bad), master)


def test_concurrent_first_use_agrees_on_one_key(
    made: tuple[Path, dict[str, Share]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two sessions creating the same subject's key at once: the first insert wins."""
    path, shares = made
    q = [shares["alice"], shares["bob"]]
    with Keyring.open(path).unseal(q) as a, Keyring.open(path).unseal(q) as b:
        rec_a = a.encrypt(b"from a", subject="u")
        monkeypatch.setattr(b.store, "get_many", lambda subjects: {})  # b misses the row
        rec_b = b.encrypt(b"from b", subject="u")
        monkeypatch.undo()
        assert a.decrypt(rec_b, subject="u") == b"from b"
        assert b.decrypt(rec_a, subject="u") == b"from a"


def test_stream_sealed_to_keyring_opens_with_unsealed_keyring(
    made: tuple[Path, dict[str, Share]],
) -> None:
    import io

    from keysplit.stream import decrypt_stream, encrypt_stream

    path, shares = made
    kr = Keyring.open(path)
    data = bytes(range(256)) * 1000
    sealed = io.BytesIO()
    encrypt_stream(io.BytesIO(data), sealed, kr.recipient, context={"subject": "u1"})
    out = io.BytesIO()
    with kr.unseal([shares["alice"], shares["bob"]]) as ku:
        decrypt_stream(io.BytesIO(sealed.getvalue()), out, ku)
    assert out.getvalue() == data


def test_a_create_that_loses_the_race_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(red team: two replicas of a backend that create the keyring if it is missing) the
    check that no keyring exists ran before the home's lock only: a create that passed it
    while another completed took the winner's store record for an interrupted create's,
    rewrote the audit anchor under its own key and only then failed, with a bare
    FileExistsError. The winner's keyring could record nothing from then on (rotate,
    shred: 'audit anchor ... MAC invalid'). Now the loser is refused under the lock with
    the KeyringError of an existing keyring, before it writes anything."""
    path = tmp_path / "kr"
    real = Keyring.refuse_existing
    won: dict[str, object] = {}

    def then_another_creates_it(where: Path) -> None:
        real(where)
        if not won:  # right after this check, another process creates the keyring
            monkeypatch.setattr(Keyring, "refuse_existing", staticmethod(real))
            won["made"] = Keyring.create(where, 2, NAMES)
            won["files"] = snapshot(path)

    monkeypatch.setattr(Keyring, "refuse_existing", staticmethod(then_another_creates_it))
    with pytest.raises(KeyringError, match="already exists"):
        Keyring.create(path, 2, NAMES)
    assert snapshot(path) == won["files"]
    kr, shares = won["made"]  # type: ignore[misc]
    with kr.unseal([shares["alice"], shares["bob"]]) as ku:
        assert ku.audit_log().verify().mac_verified
        assert ku.rotate() == 2  # recorded


def test_create_after_crash_reuses_empty_leftover_store(tmp_path: Path) -> None:
    path = tmp_path / "kr"
    Keyring.create(path, 2, NAMES)
    (path / KEYRING_FILE).unlink()  # as if the process died before the commit point
    _, shares2 = Keyring.create(path, 2, NAMES)
    Keyring.open(path).unseal([shares2["alice"], shares2["bob"]]).close()
    with Keyring.open(path).unseal([shares2["alice"], shares2["bob"]]) as ku:
        ku.encrypt(b"x", subject="u")
    (path / KEYRING_FILE).unlink()
    with pytest.raises(KeyringError, match="not an empty leftover"):
        Keyring.create(path, 2, NAMES)


def test_corrupt_pending_file_does_not_block_the_keyring(
    made: tuple[Path, dict[str, Share]],
) -> None:
    path, shares = made
    (path / PENDING_FILE).write_bytes(b"KSKR\x01garbage")
    kr = Keyring.open(path)
    assert kr.pending is None
    kr.unseal([shares["alice"], shares["bob"]]).close()


@settings(max_examples=8)
@given(st.integers(2, 5).flatmap(lambda n: st.tuples(st.integers(2, n), st.just(n))), st.data())
def test_any_quorum_of_random_split_unseals(
    tmp_path_factory: pytest.TempPathFactory, kn: tuple[int, int], data: st.DataObject
) -> None:
    k, n = kn
    names = [f"c{i}" for i in range(n)]
    path = tmp_path_factory.mktemp("kr") / "kr"
    kr, shares = Keyring.create(path, k, names)
    chosen = data.draw(st.permutations(names))[:k]
    with kr.unseal([shares[c] for c in chosen]) as ku:
        rec = ku.encrypt(b"q", subject="s")
    too_few = [shares[c] for c in chosen[: k - 1]]
    with pytest.raises(InsufficientSharesError):
        Keyring.open(path).unseal(too_few)
    with Keyring.open(path).unseal([shares[c] for c in names]) as ku:
        assert ku.decrypt(rec, subject="s") == b"q"


def test_unsealer_discard_bad_share_and_retry(made: tuple[Path, dict[str, Share]]) -> None:
    path, shares = made
    s = shares["alice"]
    forged = Share(s.version, s.set_id, s.threshold, s.count, s.index, b"\x00" * len(s.payload))
    kr = Keyring.open(path)
    u = kr.unsealer()
    u.add(forged)
    u.add(shares["bob"])
    u.add(shares["carol"])
    with pytest.raises(RecoveryError, match="share 1"):
        u.finish()
    assert u.discard(1).have == 2
    kr.unseal(u.finish()).close()


def test_an_unsealer_serves_again_after_finish(made: tuple[Path, dict[str, Share]]) -> None:
    """(red team) finish() kept its target share set: once Keyring.unseal had adopted the
    opened metadata, the next add of a current share was refused as 'from the new share
    set of an unfinished rekey' (no rekey was pending)."""
    path, shares = made
    kr = Keyring.open(path)
    u = kr.unsealer()
    for _ in range(2):
        u.add(shares["alice"])
        u.add(shares["carol"])
        kr.unseal(u.finish()).close()


def test_an_unseal_outcome_from_before_a_rekey_is_refused(
    made: tuple[Path, dict[str, Share]],
) -> None:
    """(red team, library misuse) Keyring.unseal(outcome) took any outcome of this keyring:
    one kept from before a rekey opened a session under the dead master key and put the old
    metadata back into the Keyring object, whose unsealer then refused the NEW shares as
    foreign ("does not belong to this keyring"). Now it is refused, naming the rekey, and
    the Keyring object keeps the current metadata; an outcome from before a rotate (same
    master key) opens the keyring as the file is now, new KEK included."""
    path, shares = made
    kr = Keyring.open(path)
    kept = finished(kr, shares["alice"], shares["bob"])
    with kr.unseal(kept) as ku:
        record = ku.encrypt(b"x", subject="s")
        new = ku.rekey()
    generation = kr.meta.generation
    for keyring in (kr, Keyring.open(path)):
        with pytest.raises(KeyringError, match="rekeyed since") as info:
            keyring.unseal(kept)
        assert kept.master_key.hex() not in str(info.value)
        assert keyring.meta.generation == generation
        # the current shares are still this keyring's
        with keyring.unseal(finished(keyring, new["bob"], new["carol"])) as ku:
            assert ku.decrypt(record, subject="s") == b"x"

    before_rotate = finished(kr, new["alice"], new["carol"])
    with kr.unseal(before_rotate) as ku:
        version = ku.rotate()
    with kr.unseal(before_rotate) as ku:  # the file's KEKs, not the outcome's
        assert kr.meta.current_kek == version
        assert ku.keks_for_rewrap().versions == (1, version)
        assert ku.decrypt(record, subject="s") == b"x"


@given(
    names=st.lists(st.text(min_size=1, max_size=8), min_size=2, max_size=6, unique=True),
    versions=st.lists(st.integers(1, 2**32 - 1), min_size=1, max_size=4, unique=True),
    generation=st.integers(1, 2**53),
    data=st.data(),
)
def test_keyring_file_roundtrip_is_byte_exact(
    names: list[str], versions: list[int], generation: int, data: st.DataObject
) -> None:
    versions.sort()
    threshold = data.draw(st.integers(2, len(names)))
    meta = kf.KeyringMeta(
        keyring_id="ab" * 16,
        generation=generation,
        set_id="cd" * 8,
        threshold=threshold,
        custodians=tuple(kf.Custodian(n, i + 1) for i, n in enumerate(names)),
        public_key="ef" * 32,
        current_kek=data.draw(st.sampled_from(versions)),
        kek_versions=tuple(versions),
        next_kek=max(versions) + 1,
    )
    secrets = kf.KeyringSecrets(b"\x01" * 32, {v: bytes([v % 256]) * 16 for v in versions})
    blob = kf.serialize(meta, secrets, b"\x02" * 16, b"\x03" * 12)
    meta2, secrets2 = kf.open_secrets(blob, b"\x02" * 16)
    assert meta2 == meta and secrets2 == secrets
    assert kf.serialize(meta2, secrets2, b"\x02" * 16, b"\x03" * 12) == blob
    with pytest.raises(IntegrityError):
        kf.open_secrets(blob, b"\x04" * 16)


def test_custodian_names_must_be_sealable(tmp_path: Path) -> None:
    """Keyring names follow the custodian-file rules, so every custodian can be sealed to."""
    for bad in ("", " ", "../evil", "a b", "x" * 65, "-lead"):
        with pytest.raises(ValueError, match="custodian name"):
            Keyring.create(tmp_path / "kr", 2, [bad, "bob", "carol"])
    assert not (tmp_path / "kr" / "keyring.ksk").exists()


def test_rewrap_skips_malformed_stored_key(made: tuple[Path, dict[str, Share]]) -> None:
    import sqlite3

    path, shares = made
    q = [shares["alice"], shares["bob"]]
    with Keyring.open(path).unseal(q) as ku:
        recs = ku.encrypt_many(["a", "b", "c"], [b"1", b"2", b"3"])
    db = sqlite3.connect(path / STORE_FILE)
    db.execute("UPDATE data_keys SET wrapped = x'00' WHERE subject = 'b'")
    db.commit()
    db.close()
    with Keyring.open(path).unseal(q) as ku:
        ku.rotate()
        res = ku.rewrap(batch_size=2)
        assert (res.rewrapped, res.corrupt) == (2, ("b",))
        assert ku.decrypt(recs[0], subject="a") == b"1"
        with pytest.raises(FormatError, match="wrong length"):
            ku.decrypt(recs[1], subject="b")


def test_a_keyring_path_that_is_a_file_is_a_keyring_error(tmp_path: Path) -> None:
    """(red team) Keyring.create and Keyring.open on a path that is a file (or under one)
    raised FileExistsError / NotADirectoryError where a KeyringError is the contract."""
    afile = tmp_path / "a-file"
    afile.write_bytes(b"x")
    for path in (afile, afile / "sub"):
        with pytest.raises(KeyringError, match="cannot create keyring directory"):
            Keyring.create(path, 2, ["a", "b"])
        with pytest.raises(KeyringError, match="cannot read a keyring"):
            Keyring.open(path)
    assert afile.read_bytes() == b"x"
