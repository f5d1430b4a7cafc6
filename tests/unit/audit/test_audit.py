"""Audit log: chain, MAC, anchoring, every kind of tampering, torn tails, durability."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keysplit import AuditError, AuditLog
from keysplit.audit import GENESIS

KEY = bytes(range(32))


def clock_from(start: datetime) -> object:
    state = {"t": start}

    def tick() -> datetime:
        state["t"] += timedelta(seconds=1)
        return state["t"]

    return tick


def make_log(path: Path, n: int = 5, *, mac_key: bytes | None = None) -> AuditLog:
    log = AuditLog(path, mac_key=mac_key, clock=clock_from(datetime(2026, 1, 1, tzinfo=UTC)))  # type: ignore[arg-type]
    events = ["init", "unseal-check", "rotate", "rewrap", "shred", "rekey", "retire"]
    for i in range(n):
        log._append(
            events[i % len(events)],
            custodians=["alice", "bob"],
            fingerprints=[f"fp{i:02d}"],
            versions={"kek": i, "keyring": 1},
        )
    return log


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_append_and_verify(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    assert log.entries() == []
    assert log.head == GENESIS
    assert log.verify().entries == 0
    e1 = log._append("init", custodians=["alice", "bob", "carol"], threshold=2)
    e2 = log._append("rotate", versions={"kek": 2})
    assert (e1.seq, e2.seq) == (1, 2)
    assert e1.prev == GENESIS and e2.prev == e1.hash
    assert log.head == e2.hash
    assert log.entries() == [e1, e2]
    report = log.verify(anchor=e1.hash)
    assert (report.entries, report.head, report.mac_verified, report.anchored) == (
        2,
        e2.hash,
        False,
        True,
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # The head is the SHA-256 of the last line, checkable with standard tools.
    assert hashlib.sha256(lines(path)[-1].rstrip(b"\n")).hexdigest() == log.head
    assert e1.time.endswith("Z")


def test_entry_format_is_canonical_json(tmp_path: Path) -> None:
    log = make_log(tmp_path / "a.log", 2, mac_key=KEY)
    for raw in lines(log.path):
        obj = json.loads(raw)
        assert set(obj) == {"v", "seq", "time", "event", "data", "prev", "mac"}
        assert raw == json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() + b"\n"


@pytest.mark.parametrize("mac", [None, KEY])
def test_edit_any_entry_names_it(tmp_path: Path, mac: bytes | None) -> None:
    for target in range(1, 6):
        path = tmp_path / f"log{target}"
        make_log(path, 5, mac_key=mac)
        ls = lines(path)
        obj = json.loads(ls[target - 1])
        obj["data"]["custodians"] = ["mallory"]
        ls[target - 1] = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        path.write_bytes(b"".join(ls))
        log = AuditLog(path, mac_key=mac)
        if mac is None and target == 5:
            # Without a MAC the last entry can be rewritten consistently; only an anchor
            # (or a MAC) catches that -- which is why both exist.
            log.verify()
            continue
        with pytest.raises(AuditError) as exc:
            log.verify()
        assert exc.value.seq == target, str(exc.value)
        assert f"entry {target}" in str(exc.value)


def test_last_entry_edit_caught_by_anchor(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log = make_log(path, 3)
    anchor = log.head
    ls = lines(path)
    obj = json.loads(ls[-1])
    obj["event"] = "retire"
    ls[-1] = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(ls))
    log.verify()
    with pytest.raises(AuditError, match="anchor"):
        log.verify(anchor=anchor)


@pytest.mark.parametrize(
    ("mutate", "seq"),
    [
        (lambda ls: ls[:1] + ls[2:], 2),  # removed entry 2
        (lambda ls: ls[:2] + ls[3:], 3),  # removed entry 3
        (lambda ls: [ls[1], ls[0], *ls[2:]], 1),  # swapped 1 and 2
        (lambda ls: [*ls[:2], ls[3], ls[2]], 3),  # swapped 3 and 4
        (lambda ls: [*ls[:2], ls[1], *ls[2:]], 3),  # duplicated entry 2
        (lambda ls: ls[1:], 1),  # removed the first entry
        (lambda ls: [*ls, ls[0]], 5),  # replayed entry 1 at the end
        (lambda ls: [*ls[:2], b"\n", *ls[2:]], 3),  # blank line inserted
        (lambda ls: [*ls[:2], b"garbage\n", *ls[2:]], 3),  # junk inserted
        (lambda ls: [ls[0].replace(b'"v":1', b'"v":2'), *ls[1:]], 1),  # unknown version
        (lambda ls: [ls[0].replace(b",", b", ", 1), *ls[1:]], 1),  # whitespace edit
    ],
)
def test_structural_tampering(tmp_path: Path, mutate: object, seq: int) -> None:
    path = tmp_path / "a.log"
    make_log(path, 4)
    path.write_bytes(b"".join(mutate(lines(path))))  # type: ignore[operator]
    with pytest.raises(AuditError) as exc:
        AuditLog(path).verify()
    assert exc.value.seq == seq, str(exc.value)


def test_truncation_caught_by_anchor(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log = make_log(path, 4)
    anchor = log.head
    path.write_bytes(b"".join(lines(path)[:3]))
    log.verify()  # a clean prefix is a valid chain by itself
    with pytest.raises(AuditError, match="anchor"):
        log.verify(anchor=anchor)


def test_full_rewrite_detected_with_mac_key(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    make_log(path, 4, mac_key=KEY)
    # The attacker rebuilds a consistent chain from scratch without the key ...
    path.unlink()
    forged = make_log(path, 3)
    assert forged.verify().entries == 3  # ... which passes the plain hash check,
    with pytest.raises(AuditError, match="entry 1: MAC missing") as exc:
        AuditLog(path, mac_key=KEY).verify()  # but not a quorum-holding verifier,
    assert exc.value.seq == 1
    path.unlink()
    make_log(path, 3, mac_key=b"attacker's own key!!")
    with pytest.raises(AuditError, match="MAC invalid"):
        AuditLog(path, mac_key=KEY).verify()  # nor with a MAC under a guessed key.


def test_mac_log_refuses_unkeyed_appends_and_unmaced_tails(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    make_log(path, 2, mac_key=KEY)
    before = path.read_bytes()
    # Without the key an append would leave an entry no MAC verifier accepts: refused.
    with pytest.raises(AuditError, match="MAC-protected"):
        AuditLog(path)._append("encrypt", file="x")
    assert path.read_bytes() == before
    # A keyed writer never extends a tail that lacks a valid MAC.
    other = tmp_path / "b.log"
    make_log(other, 2)
    with pytest.raises(AuditError, match="entry 1: MAC missing"):
        AuditLog(other, mac_key=KEY).verify()
    with pytest.raises(AuditError, match="entry 2: MAC missing or invalid; refusing"):
        AuditLog(other, mac_key=KEY)._append("rotate")
    ls = lines(path)
    obj = json.loads(ls[-1])
    obj["mac"] = ("0" if obj["mac"][0] != "0" else "1") + obj["mac"][1:]
    ls[-1] = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(ls))
    with pytest.raises(AuditError, match="entry 2: MAC missing or invalid; refusing"):
        AuditLog(path, mac_key=KEY)._append("rotate")


def test_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log = make_log(path, 3)
    good = path.read_bytes()
    head = log.head
    # Simulate a crash mid-append: part of a fourth line, no newline.
    with open(path, "ab") as fh:
        fh.write(b'{"data":{},"event":"rot')
    with pytest.raises(AuditError, match="entry 4: incomplete last line") as exc:
        log.verify()
    assert exc.value.seq == 4
    assert exc.value.hint
    with pytest.raises(AuditError, match="torn"):
        log._append("rotate")
    assert log.head == head
    assert log.repair_torn_tail() is True
    assert path.read_bytes() == good
    assert log.repair_torn_tail() is False
    assert log._append("rotate").seq == 4
    assert log.verify().entries == 4


@pytest.mark.parametrize("mac", [None, KEY], ids=["plain", "maced"])
def test_a_whole_last_entry_without_its_newline_is_kept(tmp_path: Path, mac: bytes | None) -> None:
    """The write stopped just before the newline: the entry is whole, links and (MACed)
    verifies; it may record a ceremony that took effect. Repair used to drop it; now it is
    kept and the newline added, so the log is byte for byte what the append meant."""
    path = tmp_path / "a.log"
    make_log(path, 2, mac_key=mac)
    whole = path.read_bytes()
    path.write_bytes(whole[:-1])  # the whole line but its newline
    with pytest.raises(AuditError, match="entry 2: incomplete last line") as exc:
        AuditLog(path, mac_key=mac).verify()
    assert "the entry itself is whole" in str(exc.value) and "adds the newline" in str(
        exc.value.hint
    )
    assert AuditLog(path, mac_key=mac).repair_tail() == "completed"
    assert path.read_bytes() == whole
    assert AuditLog(path, mac_key=mac).verify().entries == 2
    assert AuditLog(path, mac_key=mac).repair_tail() is None


def test_a_whole_last_entry_that_does_not_belong_is_not_repaired_away(tmp_path: Path) -> None:
    """A whole unterminated last entry that breaks the chain or fails its MAC is an edit, not
    a crash: repair refuses it (nothing changed) rather than erase the evidence."""
    path = tmp_path / "a.log"
    make_log(path, 3, mac_key=KEY)
    lines = path.read_bytes().splitlines(keepends=True)
    last = json.loads(lines[-1])
    edits = {
        "does not follow": dict(last, seq=7),
        "MAC is missing or invalid": dict(last, data={"custodians": ["mallory"]}),
    }
    for says, forged in edits.items():
        line = json.dumps(forged, sort_keys=True, separators=(",", ":")).encode()
        path.write_bytes(b"".join(lines[:-1]) + line)
        with pytest.raises(AuditError, match=says) as exc:
            AuditLog(path, mac_key=KEY).repair_tail()
        assert exc.value.seq == 3
        assert path.read_bytes() == b"".join(lines[:-1]) + line


def test_torn_first_line(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b'{"dat')
    with pytest.raises(AuditError, match="entry 1: incomplete"):
        AuditLog(path).verify()
    assert AuditLog(path).repair_torn_tail()
    assert path.read_bytes() == b""


def test_refuses_secrets_and_bad_input(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.log")
    with pytest.raises(TypeError, match="never key material"):
        log._append("init", share=b"\x01\x02")
    with pytest.raises(TypeError):
        log._append("init", nested={"k": [bytearray(b"x")]})
    with pytest.raises(TypeError):
        log._append("init", ratio=0.5)
    with pytest.raises(ValueError):
        log._append("Init")
    with pytest.raises(ValueError):
        log._append("a" * 41)
    with pytest.raises(ValueError):
        AuditLog(tmp_path / "b", mac_key=b"short")
    with pytest.raises(TypeError):
        AuditLog(tmp_path / "b", mac_key="k" * 32)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AuditLog(tmp_path / "c", clock=lambda: datetime(2026, 1, 1))._append("init")
    assert not (tmp_path / "a.log").exists()
    assert "0001" not in repr(AuditLog(tmp_path / "d", mac_key=KEY))


@settings(max_examples=30)
@given(
    fields=st.dictionaries(
        st.text(min_size=1, max_size=5),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=4), inner, max_size=3)
            ),
            max_leaves=6,
        ),
        max_size=4,
    ),
    flip=st.integers(min_value=0),
)
def test_fields_round_trip_and_any_byte_change_detected(
    tmp_path_factory: pytest.TempPathFactory, fields: dict[str, object], flip: int
) -> None:
    path = tmp_path_factory.mktemp("h") / "a.log"
    log = AuditLog(path, mac_key=KEY)
    log._append("init", **{"x": 1})
    entry = log._append("rekey", **fields)  # type: ignore[arg-type]
    assert log.entries()[-1].data == entry.data
    assert log.verify().entries == 2
    data = bytearray(path.read_bytes())
    pos = flip % len(data)
    data[pos] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(AuditError):
        log.verify()


def _appender(path: str, n: int) -> None:
    log = AuditLog(path, mac_key=KEY)
    for i in range(n):
        log._append("unseal-check", worker=os.getpid(), i=i)


def test_concurrent_appends_keep_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_appender, args=(str(path), 25)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    report = AuditLog(path, mac_key=KEY).verify()
    assert report.entries == 75


_CRASH_CHILD = """
import sys
from keysplit.audit import AuditLog
log = AuditLog(sys.argv[1], mac_key=bytes(range(32)))
i = 0
while True:
    log._append("unseal-check", custodians=["alice", "bob"], i=i, pad="x" * 3000)
    if i == 0:  # one complete entry before the kill can come, however loaded the machine
        print("ready", flush=True)
    i += 1
"""


def test_sigkill_mid_append_never_corrupts_complete_entries(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "a.log"
    for delay in (0.05, 0.2):
        proc = subprocess.Popen(
            [sys.executable, "-c", _CRASH_CHILD, str(path)], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log = AuditLog(path, mac_key=KEY)
        try:
            report = log.verify()
        except AuditError as exc:  # only a torn *last* line is acceptable
            assert "incomplete last line" in str(exc)
            assert log.repair_torn_tail()
            report = log.verify()
        assert report.entries == len(log.entries()) > 0


_EVERY_ENTRY_POINT = r"""
import os, sys
from pathlib import Path
from keysplit import AuditError, AuditLog
from keysplit.audit import events as ev

log = AuditLog(Path(sys.argv[1]), mac_key=bytes(32))
calls = {
    "verify": log.verify,
    "entries": log.entries,
    "head": lambda: log.head,
    "check_append": log.check_append,
    "append": lambda: ev.record(log, ev.UnsealCheck(1, ())),
    "repair_torn_tail": log.repair_torn_tail,
}
for name, call in calls.items():
    try:
        call()
    except AuditError as exc:
        print(name, exc, sep=": ")
    else:
        print(name, "accepted", sep=": ")
"""


@pytest.mark.parametrize("kind", ["fifo", "link-to-dev-zero", "link-to-a-file", "directory"])
def test_every_entry_point_refuses_a_log_that_is_no_regular_file(tmp_path: Path, kind: str) -> None:
    """Each AuditLog method opened the path as it found it: a FIFO blocked verify, entries,
    head and check_append in open(); /dev/zero was read until memory ran out (verify,
    entries, head) or written to (append). Now every one refuses, naming what is there, and
    a link is never followed (not even to a regular file: appends must not land elsewhere).
    In a child process, bounded by a timeout, as the old code blocks."""
    import subprocess
    import sys

    path = tmp_path / "audit.log"
    what = {"fifo": "a FIFO", "directory": "a directory"}.get(kind, "a symbolic link")
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "link-to-dev-zero":
        path.symlink_to("/dev/zero")
    else:
        make_log(tmp_path / "real.log", 2, mac_key=bytes(32))
        path.symlink_to(tmp_path / "real.log")
    p = subprocess.run(
        [sys.executable, "-c", _EVERY_ENTRY_POINT, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    refused = f"audit log {path} is {what}, not a regular file; refusing to use it"
    assert p.stdout.splitlines() == [
        f"{name}: {refused}"
        for name in ("verify", "entries", "head", "check_append", "append", "repair_torn_tail")
    ]
    if kind == "link-to-a-file":
        assert AuditLog(tmp_path / "real.log", mac_key=bytes(32)).verify().entries == 2


def test_the_anchor_catches_truncation_rollback_and_removal(tmp_path: Path) -> None:
    """Without an anchor a log cut back to any earlier entry, or deleted ("intact: 0
    entries"), verified, MACs and all, and the next append extended it (or began a fresh
    chain). The anchor file records the head after every keyed append; a shorter or
    diverging log is refused by verify, check_append and append, naming both heads."""
    path, anchor = tmp_path / "a.log", tmp_path / "a.anchor"

    def log(*, key: bytes | None = KEY, required: bool = True) -> AuditLog:
        return AuditLog(path, mac_key=key, anchor=anchor, anchor_required=required)

    log().write_anchor()  # a keyring's creation: the empty log
    for i in range(3):
        log()._append("rotate", kek_version=i + 2, authorized_by=[])
    full = path.read_bytes()
    assert json.loads(anchor.read_bytes())["entries"] == 3
    assert log().verify().entries == 3 and log(key=None).verify().entries == 3
    lines = full.splitlines(keepends=True)
    for cut, count in ((lines[:2], 2), ([], 0)):
        path.write_bytes(b"".join(cut))
        says = rf"has {count} entries .* but {anchor} records 3 .*truncated or rolled back"
        for call in (log().verify, log(key=None).verify, log().check_append):
            with pytest.raises(AuditError, match=says):
                call()
        with pytest.raises(AuditError, match=says):
            log()._append("shred", subject="x", existed=False, authorized_by=[])
        assert path.read_bytes() == b"".join(cut)  # nothing appended
    path.unlink()
    with pytest.raises(AuditError, match="has 0 entries"):
        log().verify()
    # rolled back to two entries, then a different third one (same key): diverges
    path.write_bytes(b"".join(lines[:2]))
    AuditLog(path, mac_key=KEY)._append("retire", version=1, authorized_by=[])
    with pytest.raises(AuditError, match=r"has 3 entries .* records 3 .*rolled back"):
        log().verify()
    path.write_bytes(full)
    log()._append("shred", subject="x", existed=False, authorized_by=[])
    # a stale anchor (a longer log) is fine, but its entry must be the recorded one
    stale = anchor.read_bytes()
    log()._append("shred", subject="y", existed=False, authorized_by=[])
    anchor.write_bytes(stale)
    assert log().verify().entries == 5
    edited = json.loads(stale)
    anchor.write_bytes(
        json.dumps(dict(edited, entries=2), sort_keys=True, separators=(",", ":")).encode()
    )
    with pytest.raises(AuditError, match="MAC invalid"):
        log().verify()
    anchor.unlink()
    with pytest.raises(AuditError, match=r"anchor .* is missing"):
        log().verify()
    assert log(required=False).verify().entries == 5  # a keyring from before anchors
    log(required=False)._append("shred", subject="z", existed=False, authorized_by=[])
    assert json.loads(anchor.read_bytes())["entries"] == 6  # and from now on it has one


def _append_during_anchor_write(
    monkeypatch: pytest.MonkeyPatch, append: Callable[[], object]
) -> Callable[[], None]:
    """Make the calling thread's next anchor write first start ``append`` in another
    thread (another writer) and give it a bounded while: it is done before the write (the
    fault) or waits for the lock (fixed). Returns a function that joins it."""
    import threading

    import keysplit.audit.log as log_mod

    real = log_mod.atomic_write
    first = threading.current_thread()
    other: list[threading.Thread] = []

    def write(p: object, data: bytes, **kw: object) -> None:
        if threading.current_thread() is first and not other:
            t = threading.Thread(target=append)
            other.append(t)
            t.start()
            t.join(timeout=2)
        real(p, data, **kw)  # type: ignore[arg-type]

    def join() -> None:
        other[0].join(timeout=30)
        assert not other[0].is_alive()

    monkeypatch.setattr(log_mod, "atomic_write", write)
    return join


def test_a_batch_anchors_under_the_log_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's anchor was written after the batch had released the log's lock (a check,
    then a write): a writer appending in between anchored its longer chain, and the batch
    then put its shorter head over it. Now the batch writes its anchor under the lock, so
    the other writer's append and anchor come after it."""

    from keysplit.audit import events as ev

    path, anchor = tmp_path / "a.log", tmp_path / "a.anchor"

    def log() -> AuditLog:
        return AuditLog(path, mac_key=KEY, anchor=anchor, anchor_required=True)

    log().write_anchor()
    join = _append_during_anchor_write(monkeypatch, lambda: ev.record(log(), ev.Retire(1, ())))
    ev.record_many(log(), [ev.Retire(1, ()), ev.Retire(2, ())])
    join()
    assert log().verify().entries == 3
    assert json.loads(anchor.read_bytes())["entries"] == 3


def test_threads_sharing_a_log_each_write_their_anchor(tmp_path: Path) -> None:
    """The batch's deferral of the anchor was an attribute of the AuditLog: another thread
    appending through the same object while a batch ran skipped its anchor write. Now the
    deferral is the batch call's own."""
    import threading

    from keysplit.audit import events as ev

    path, anchor = tmp_path / "a.log", tmp_path / "a.anchor"
    seen: list[int] = []
    calls: list[int] = []
    batch_thread = threading.current_thread()

    def clock() -> datetime:
        calls.append(1)
        if threading.current_thread() is batch_thread and len(calls) == 2:
            # the batch is under way: another thread appends through the same object
            t = threading.Thread(target=lambda: ev.record(shared, ev.Retire(9, ())))
            t.start()
            t.join(timeout=30)
            assert not t.is_alive()
            seen.append(json.loads(anchor.read_bytes())["entries"])
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=len(calls))

    shared = AuditLog(path, mac_key=KEY, anchor=anchor, anchor_required=True, clock=clock)
    shared.write_anchor()
    ev.record_many(shared, [ev.Retire(1, ()), ev.Retire(2, ()), ev.Retire(3, ())])
    assert seen == [1]  # the other thread's entry was anchored when it was appended
    assert shared.verify().entries == 4
    assert json.loads(anchor.read_bytes())["entries"] == 4


def test_the_store_chains_anchor_is_checked_and_written_under_a_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the store keeps the chain, an append's anchor was a check (is the recorded
    head shorter?) then a write, unlocked: another writer's longer head, written between
    them, was replaced by the shorter one. Both now happen under one lock."""
    import threading

    from keysplit.audit import events as ev

    class Store:
        def __init__(self) -> None:
            self.rows: list[bytes] = []
            self.lock = threading.Lock()

        def audit_lines(self) -> list[bytes]:
            return list(self.rows)

        def audit_append(self, build: object) -> bytes:
            with self.lock:
                line = build(self.rows[-1] if self.rows else None)  # type: ignore[operator]
                self.rows.append(line)
                return line  # type: ignore[no-any-return]

    store, anchor = Store(), tmp_path / "a.anchor"

    def log() -> AuditLog:
        return AuditLog(tmp_path / "a.log", mac_key=KEY, store=store, anchor=anchor)  # type: ignore[arg-type]

    log().write_anchor()
    join = _append_during_anchor_write(monkeypatch, lambda: ev.record(log(), ev.Retire(2, ())))
    ev.record(log(), ev.Retire(1, ()))
    join()
    assert len(store.rows) == 2 and log().verify().entries == 2
    assert json.loads(anchor.read_bytes())["entries"] == 2
    assert not (tmp_path / "a.log").exists()
