"""KeyAdmin: owned by the unsealed keyring, given what it needs as arguments, returning new
metadata that its owner adopts; the keyring's metadata is a value replaced on commit."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from keysplit import Keyring, KeyringError, KeysplitError
from keysplit.keyring import file as kf
from keysplit.keyring.admin import KeyAdmin
from keysplit.keyring.datakeys import LocalDataKeys
from keysplit.rng import DeterministicRandom
from keysplit.store import WrappedKey
from keysplit.store.base import KeyringState, StaleKekError

NAMES = ["alice", "bob", "carol"]


def test_key_admin_returns_values_and_touches_no_keyring(tmp_path: Path) -> None:
    kr, shares = Keyring.create(tmp_path / "kr", 2, NAMES, rng=DeterministicRandom(b"admin"))
    ku = kr.unseal([shares["alice"], shares["bob"]])
    before = kr.meta
    admin = KeyAdmin(kr.home, ku.local_data_keys(), ku.master_key, ku.rng, store_url=kr.store_url)
    v, meta = admin.rotate(kr.meta, kr.pending)
    # the file holds the new metadata; the Keyring still holds the value it had
    assert kf.parse(kr.home.read_keyring())[0] == meta
    assert (v, meta.current_kek, meta.generation) == (2, 2, before.generation + 1)
    assert kr.meta is before and before.current_kek == 1
    # an owner that did not adopt it is refused rather than overwriting the change
    with pytest.raises(KeyringError, match="changed under this process"):
        ku.rotate(record=False)
    shares2, pending = admin.prepare_rekey(meta, threshold=None, custodians=None, rng=None)
    assert kr.pending is None and pending.generation == meta.generation + 1
    assert sorted(shares2) == NAMES
    committed = admin.commit_rekey(meta, pending)
    assert committed == pending and kr.meta is before
    # the new master key is the session's: the file it re-seals opens with the new shares
    assert admin.master_key != ku.master_key
    ku.close()


def test_the_unsealed_keyring_adopts_new_metadata_whole(tmp_path: Path) -> None:
    kr, shares = Keyring.create(tmp_path / "kr", 2, NAMES, rng=DeterministicRandom(b"adopt"))
    with kr.unseal([shares["alice"], shares["bob"]]) as ku:
        first = kr.meta
        v = ku.rotate(record=False)
        assert kr.meta is not first and first.current_kek == 1 and kr.meta.current_kek == v
        assert ku.keyring is kr
        ku.prepare_rekey()
        assert kr.pending is not None and kr.pending.generation == kr.meta.generation + 1
        ku.commit_rekey()
        assert kr.pending is None and kr.meta == kf.parse(kr.home.read_keyring())[0]
    with pytest.raises(AttributeError):
        kr.meta = first  # type: ignore[misc]
    with pytest.raises(AttributeError):
        kr.pending = None  # type: ignore[misc]


def test_a_closed_session_administers_nothing(tmp_path: Path) -> None:
    kr, shares = Keyring.create(tmp_path / "kr", 2, NAMES, rng=DeterministicRandom(b"closed"))
    ku = kr.unseal([shares["alice"], shares["bob"]])
    ku.close()
    with pytest.raises(KeyringError):
        ku.rotate(record=False)
    with pytest.raises(KeyringError, match="not held"):
        _ = ku.master_key
    assert kf.parse(kr.home.read_keyring())[0] == kr.meta and kr.meta.current_kek == 1


@pytest.mark.parametrize("op", ["rotate", "retire", "prepare_rekey"])
def test_an_operation_racing_close_never_seals_zeroed_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, op: str
) -> None:
    """(red team) close() dropped the data keys (KEKs and private key zeroed) before the
    master key: a rotate in that window sealed the keyring file around the zeroed secrets,
    and no quorum could open it again (every data key lost)."""
    kr, shares = Keyring.create(tmp_path / "kr", 2, NAMES, rng=DeterministicRandom(b"race"))
    ku = kr.unseal([shares["alice"], shares["bob"]])
    record = ku.encrypt(b"kept", subject="u1")
    ku.rotate(record=False)
    ku.rewrap(record=False)  # version 1 can be retired
    calls = {
        "rotate": lambda: ku.rotate(record=False),
        "retire": lambda: ku.retire(1, record=False),
        "prepare_rekey": lambda: ku.prepare_rekey(),
    }
    original = LocalDataKeys.close
    seen: list[BaseException] = []

    def close_then_race(self: LocalDataKeys) -> None:
        original(self)
        try:  # another thread's call, arriving just after the data keys were dropped
            calls[op]()
        except KeysplitError as e:
            seen.append(e)

    monkeypatch.setattr(LocalDataKeys, "close", close_then_race)
    ku.close()
    monkeypatch.undo()
    assert [type(e) for e in seen] == [KeyringError]
    assert kr.home.read_pending() is None
    with Keyring.open(tmp_path / "kr").unseal([shares["alice"], shares["carol"]]) as again:
        assert again.decrypt(record, subject="u1") == b"kept"
        assert again.keyring.meta.kek_versions == (1, 2)


def test_a_new_key_created_while_this_process_rotates_is_not_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(red team) rotate() adopted the new KEK in this process before the store made it
    current: a thread creating a key in that window wrote under the new version, was
    refused (StaleKekError), caught up *back* to the store's old version, and when the
    store's commit landed before its one retry, encrypt raised StaleKekError (3 rotations
    in 30 with two writer threads). This interleaves the two threads by hand."""
    kr, shares = Keyring.create(tmp_path / "kr", 2, NAMES, rng=DeterministicRandom(b"stale"))
    ku = kr.unseal([shares["alice"], shares["bob"]])
    store = ku.store
    set_current = store.set_current_kek
    insert = store.insert_many
    records: list[bytes] = []

    def insert_as_the_store_commits(rows: list[WrappedKey]) -> list[WrappedKey]:
        try:
            return insert(rows)
        except StaleKekError:
            set_current(2)  # the rotating thread's store commit lands before the retry
            raise

    def set_current_with_a_writer_in_the_window(version: int) -> KeyringState:
        monkeypatch.setattr(store, "insert_many", insert_as_the_store_commits)
        records.append(ku.encrypt(b"new", subject="created-meanwhile"))  # another thread
        monkeypatch.setattr(store, "insert_many", insert)
        return store.state() if store.state().current_kek == version else set_current(version)

    monkeypatch.setattr(store, "set_current_kek", set_current_with_a_writer_in_the_window)
    assert ku.rotate(record=False) == 2
    monkeypatch.undo()
    assert ku.decrypt(records[0], subject="created-meanwhile") == b"new"
    ku.encrypt(b"x", subject="after")
    assert store.get_many(["after"])["after"].kek_version == 2
    ku.close()


@pytest.mark.parametrize("phase", ["prepare", "commit"])
def test_a_rekey_racing_close_leaves_no_master_key_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, phase: str
) -> None:
    """(red team) prepare_rekey and commit_rekey stored the new master key after their
    file write: a close() landing meanwhile was undone, and the closed session held the new
    master key (handed out by ``master_key``; a prepared one still committed the rekey)."""
    kr, shares = Keyring.create(tmp_path / "kr", 2, NAMES, rng=DeterministicRandom(b"keep"))
    ku = kr.unseal([shares["alice"], shares["bob"]])
    if phase == "commit":
        new = ku.prepare_rekey()
    home = kr.home
    write = home.write_pending if phase == "prepare" else home.commit_pending
    name = "write_pending" if phase == "prepare" else "commit_pending"

    def write_then_close(*args: object) -> None:
        write(*args)  # type: ignore[operator]
        ku.close()  # another thread's close, while the rekey holds the lock

    monkeypatch.setattr(home, name, write_then_close)
    if phase == "prepare":
        new = ku.prepare_rekey()
        with pytest.raises(KeyringError):
            ku.commit_rekey()  # the closed session kept the new master key and committed
        assert kf.parse(home.read_keyring())[0].set_id != new["alice"].set_id.hex()
    else:
        # the switch is made before the close lands: the rekey took effect, so commit_rekey
        # returns (an error here had rekey() lose the only shares that unseal, 5afabef), and
        # the store's count, refused by the closed store, is logged
        with caplog.at_level(logging.WARNING, logger="keysplit.keyring.unsealed"):
            ku.commit_rekey()
        assert "the rekey took effect; the key store did not count it" in caplog.text
        assert "closed" in caplog.text
    with pytest.raises(KeyringError, match="not held"):
        _ = ku.master_key
    monkeypatch.undo()
    # what the rekey wrote stands: its shares open the keyring (completing a prepared one)
    with Keyring.open(tmp_path / "kr").unseal([new["alice"], new["carol"]]) as again:
        assert again.keyring.meta.set_id == new["alice"].set_id.hex()


def test_one_string_is_not_a_list_of_custodians_and_a_kek_version_is_an_int(
    tmp_path: Path,
) -> None:
    """(red team, library round) ``prepare_rekey(custodians="abc")`` made a pending rekey
    for custodians "a", "b" and "c" (``list()`` of the string ran before the names were
    checked; committed, it hands the keyring to three made-up names), and
    ``retire(True)``/``retire("1")`` were taken for version 1 instead of refused."""
    _, shares = Keyring.create(tmp_path / "kr", 2, ["alice", "bob", "carol"])
    with Keyring.open(tmp_path / "kr").unseal([shares["alice"], shares["bob"]]) as ku:
        with pytest.raises(TypeError, match="not one string"):
            ku.prepare_rekey(custodians="abc")
        assert ku.keyring.pending is None
        ku.rotate(record=False)
        for bad in (True, "1", 1.0):
            with pytest.raises(TypeError, match="KEK version must be an int"):
                ku.retire(bad, record=False)  # type: ignore[arg-type]
        assert ku.status().kek_versions == (1, 2)
        ku.retire(1, record=False)


def test_a_rotation_the_store_refuses_puts_the_keyring_file_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store-agnostic half of the PostgreSQL commit fix (test_postgres_rotation_commit):
    set_current_kek raising means nothing was recorded, so the rotation puts the keyring
    file back (it stayed a version ahead: the session's next rotate said "unseal again");
    after a StoreUnreachableError, whether the store recorded it may be unknown, so the
    file keeps the new KEK and the session follows it; a store that then shows the version
    current recorded it. A plain refusal stands even with the version current by then."""
    from keysplit import StoreUnreachableError

    kr, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    with kr.unseal([shares["alice"], shares["bob"]]) as ku:
        store = ku.local_data_keys().store
        real = store.set_current_kek
        before = kr.home.read_keyring()

        def refused(version: int) -> KeyringState:
            raise KeyringError("refused at commit")

        monkeypatch.setattr(store, "set_current_kek", refused)
        with pytest.raises(KeyringError, match="refused at commit"):
            ku.rotate()
        assert kr.home.read_keyring() == before and store.state().current_kek == 1

        def recorded_then_lost(version: int) -> KeyringState:
            real(version)
            raise StoreUnreachableError("connection lost after the commit")

        monkeypatch.setattr(store, "set_current_kek", recorded_then_lost)
        assert ku.rotate() == 2  # the store shows 2 current: the rotation stands
        assert kf.parse(kr.home.read_keyring())[0].current_kek == 2

        def unknown(version: int) -> KeyringState:
            raise StoreUnreachableError("no answer")

        monkeypatch.setattr(store, "set_current_kek", unknown)
        with pytest.raises(StoreUnreachableError):
            ku.rotate()
        assert kf.parse(kr.home.read_keyring())[0].current_kek == 3  # kept: may be recorded
        monkeypatch.setattr(store, "set_current_kek", real)
        assert ku.rotate() == 4  # the session follows the file it kept (store at 2)
        assert kf.parse(kr.home.read_keyring())[0].current_kek == 4
        assert store.state().current_kek == 4
    with Keyring.open(kr.path).unseal([shares["bob"], shares["carol"]]) as ku:
        assert ku.rotate() == 5
        # (review4) A refusal was taken as a commit when the store showed the version
        # current by then: another host's KEK under that number (this process lost the
        # store's rotation lock and that host rotated; test_postgres_rotation_commit), and
        # the file kept its own v6 beside the other host's. It is put back now.
        store, kept = ku.local_data_keys().store, kr.home.read_keyring()
        commit = store.set_current_kek

        def refused_as_another_committed(version: int) -> KeyringState:
            commit(version)  # as another host's rotation to the same number does
            raise KeyringError("lost the rotation lock; nothing was changed")

        monkeypatch.setattr(store, "set_current_kek", refused_as_another_committed)
        with pytest.raises(KeyringError, match="lost the rotation lock"):
            ku.rotate()
        assert kr.home.read_keyring() == kept and store.state().current_kek == 6


def test_a_key_insert_catches_up_with_two_rotations_made_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(found stop 34, fixed stop 36) A key insert refused as stale (another process
    rotated) caught up and tried once more: a second rotation landing before that retry
    made encrypt raise StaleKekError. Now it catches up again (a few times). Two sessions
    on one keyring; the second rotates before each of the first one's inserts."""
    kr, shares = Keyring.create(tmp_path / "kr", 2, NAMES, rng=DeterministicRandom(b"twice"))
    writer = kr.unseal([shares["alice"], shares["bob"]])
    other = Keyring.open(tmp_path / "kr").unseal([shares["bob"], shares["carol"]])
    insert = writer.store.insert_many
    rotations: list[int] = []

    def rotate_first(rows: list[WrappedKey]) -> list[WrappedKey]:
        if len(rotations) < 2:
            rotations.append(other.rotate(record=False))
        return insert(rows)

    monkeypatch.setattr(writer.store, "insert_many", rotate_first)
    blob = writer.encrypt(b"new", subject="created-meanwhile")
    monkeypatch.undo()
    assert rotations == [2, 3]
    assert writer.store.get_many(["created-meanwhile"])["created-meanwhile"].kek_version == 3
    assert other.decrypt(blob, subject="created-meanwhile") == b"new"
    writer.close()
    other.close()
