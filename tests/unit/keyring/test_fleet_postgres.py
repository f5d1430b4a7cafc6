"""Issue 19's PostgreSQL-only fleet promises (SECURITY.md "Many processes"), each on its own:

* a shred reaches another holder by ``LISTEN/NOTIFY``, not only by the poll: the poll is
  set far longer than the test waits, so only the push can make the other holder drop its
  cached key in time (the process scenario in tests/unit/service/test_fleet_processes.py
  polls every 0.2 s, which would hide a broken push);
* holders on several hosts (here: two copies of the keyring directory) append to one audit
  chain kept in the store, which verifies with its MACs from either copy.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from keysplit import Keyring, ShreddedError
from keysplit.store import open_store
from keysplit.store.base import AuditStore

NAMES = ["alice", "bob"]
BOUND = 20.0  # seconds a test waits for the push; the poll below is 3x longer


def _url(server: object) -> str:
    return f"{server.url}&schema=fp_{uuid.uuid4().hex[:12]}"  # type: ignore[attr-defined]


def _eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not check():
        assert time.monotonic() < deadline, f"not within {BOUND} s: {what}"
        time.sleep(0.05)


def _raises_shredded(fn: Callable[[], object]) -> bool:
    try:
        fn()
    except ShreddedError:
        return True
    return False


def test_wait_for_change_wakes_on_another_stores_change(pg_server: object, tmp_path: Path) -> None:
    url = _url(pg_server)
    kid = "a" * 32
    listener = open_store(url, keyring_id=kid, home=tmp_path, create=True)
    writer = open_store(url, keyring_id=kid, home=tmp_path)
    try:
        wait = listener.wait_for_change  # type: ignore[attr-defined]
        assert wait(0.1) is True  # the first call only starts listening ("have a look")
        assert wait(0.3) is False, "no change: the wait times out"
        woke: list[bool] = []
        t = threading.Thread(target=lambda: woke.append(wait(BOUND)))
        t.start()
        time.sleep(0.3)  # let the listener block (a change before it would still be queued)
        writer.set_current_kek(1)
        t.join(BOUND + 5)
        assert woke == [True], "a state change committed elsewhere wakes the listener"
    finally:
        listener.close()
        writer.close()


def test_shred_reaches_a_holder_by_notify_before_its_poll(
    pg_server: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYSPLIT_POLL", str(3 * BOUND))  # the poll alone would be too late
    monkeypatch.setenv("KEYSPLIT_LEASE_TTL", str(30 * BOUND))  # and so would a lease renewal
    path = tmp_path / "kr"
    _, shares = Keyring.create(path, 2, NAMES, store_url=_url(pg_server))
    a = Keyring.open(path).unseal(list(shares.values()))
    b = Keyring.open(path).unseal(list(shares.values()))
    try:
        rec = a.encrypt(b"secret", subject="victim")
        keep = a.encrypt(b"kept", subject="other")
        assert b.decrypt(rec, subject="victim") == b"secret"  # b caches the key now
        assert a.shred("victim") is True
        _eventually(
            lambda: _raises_shredded(lambda: b.decrypt(rec, subject="victim")),
            "b drops the shredded key on NOTIFY",
        )
        assert b.decrypt(keep, subject="other") == b"kept"
    finally:
        a.close()  # each watcher blocks in LISTEN for the (long) poll: close wakes it
        b.close()


def _closes_within_bound(close: Callable[[], None]) -> bool:
    t = threading.Thread(target=close, daemon=True)
    t.start()
    t.join(BOUND)
    return not t.is_alive()


def test_closing_a_holder_does_not_wait_for_its_poll(
    pg_server: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service replaces its keyring after every shred, rotate or hold and closes the old
    one on its event loop: its lease watcher, blocked in LISTEN for up to the poll, must
    not hold that close (it held it for up to the poll, 1 s by default, before wake())."""
    monkeypatch.setenv("KEYSPLIT_POLL", str(3 * BOUND))  # waiting for it fails the bound
    monkeypatch.setenv("KEYSPLIT_LEASE_TTL", str(30 * BOUND))
    path = tmp_path / "kr"
    _, shares = Keyring.create(path, 2, NAMES, store_url=_url(pg_server))
    a = Keyring.open(path).unseal(list(shares.values()))
    b = Keyring.open(path).unseal(list(shares.values()))
    try:
        rec = a.encrypt(b"secret", subject="victim")  # both watchers run and listen
        assert b.decrypt(rec, subject="victim") == b"secret"
        time.sleep(0.5)  # past their first (immediate) wait: now blocked in LISTEN
        assert _closes_within_bound(a.close), "close waited for the watcher's poll"
        assert b.decrypt(rec, subject="victim") == b"secret"  # others are untouched
    finally:
        assert _closes_within_bound(b.close), "close waited for the watcher's poll"


def test_holders_on_two_hosts_write_one_audit_chain(pg_server: object, tmp_path: Path) -> None:
    url = _url(pg_server)
    here, there = tmp_path / "host1" / "kr", tmp_path / "host2" / "kr"
    here.parent.mkdir()
    _, shares = Keyring.create(here, 2, NAMES, store_url=url)
    shutil.copytree(here, there)  # the keyring directory as a second host holds it
    a = Keyring.open(here).unseal(list(shares.values()))
    b = Keyring.open(there).unseal(list(shares.values()))
    try:
        a.encrypt(b"x", subject="u1")
        b.encrypt(b"y", subject="u2")
        a.set_legal_hold("u1", True)
        b.shred("u2")
        a.set_legal_hold("u1", False)
        b.shred("u1")
        for ukr in (a, b):
            ukr.audit_log().verify()  # hash chain and MACs, whichever host reads it
        seen_here = [(e.seq, e.event, e.hash) for e in Keyring.open(here).audit_log().entries()]
        seen_there = [(e.seq, e.event, e.hash) for e in Keyring.open(there).audit_log().entries()]
        assert seen_here == seen_there, "one chain, not one per host"
        assert [e for _, e, _ in seen_here][-8:] == [
            "intent", "legal-hold", "intent", "shred", "intent", "legal-hold", "intent", "shred",
        ]  # fmt: skip
        assert [s for s, _, _ in seen_here] == list(range(seen_here[0][0], len(seen_here) + 1))
        assert not (here / "audit.log").exists() and not (there / "audit.log").exists()
        store = open_store(url, keyring_id=Keyring.open(here).keyring_id, home=here)
        try:
            assert isinstance(store, AuditStore)
            assert len(store.audit_lines()) == len(seen_here)
        finally:
            store.close()
    finally:
        a.close()
        b.close()
