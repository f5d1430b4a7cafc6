"""The quorum's gap check reads only the audit log's new entries (``audit.checkpoint``).

Every quorum unseal looks for what a killed ceremony left unrecorded (open intents, KEK
versions without their entry, ...). It read and parsed the whole log each time: with 10^5
entries that was seconds per unseal, growing with the log. A MACed checkpoint now keeps
what the check needs of the entries read so far (the first entry, open intents, switches,
rotate/retire, verify-start, token-revoke), bound to the log by the count, byte offset and
hash of the last entry read; the next unseal parses only what follows. A checkpoint that
is forged, another keyring's or no longer matches the log is ignored (the whole log is
read), so it can never hide an open intent. ``audit verify`` still reads everything.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keysplit import Keyring, Share, ceremony
from keysplit.audit import events as ev
from keysplit.audit import log as audit_log

BY = [ev.Contributor("a", 1, "f" * 16)]


def _keyring(tmp_path: Path, name: str = "kr") -> tuple[Keyring, list[Share]]:
    kr, shares = Keyring.create(tmp_path / name, 2, ["a", "b", "c"])
    return kr, [shares["a"], shares["b"]]


def _fill(kr: Keyring, shares: list[Share], n: int) -> None:
    """``n`` closed shred intents (intent + outcome: 2n entries), the real append path."""
    with kr.unseal(shares) as ukr:
        batch: list[ev.Event] = []
        for i in range(n):
            batch += [ev.Intent("shred", f"u{i}", BY), ev.Shred(f"u{i}", True, BY)]
        ev.record_many(ukr.audit_log(), batch)


def _quorum_unseal(kr: Keyring, shares: list[Share]) -> list[ev.AuditEntry]:
    q = ceremony.Quorum(kr, shares)
    with q.unseal():
        pass
    return q.observed


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many log lines are parsed (one counter per test)."""
    seen = [0]
    real = audit_log._parse_line

    def counting(line: bytes, seq: int) -> object:
        seen[0] += 1
        return real(line, seq)

    monkeypatch.setattr(audit_log, "_parse_line", counting)
    return seen


def test_a_quorum_unseal_parses_only_the_entries_since_the_last(
    tmp_path: Path, parses: list[int]
) -> None:
    kr, shares = _keyring(tmp_path)
    _fill(kr, shares, 500)  # 1,000 entries
    _quorum_unseal(kr, shares)  # reads them all once
    before = parses[0]
    _quorum_unseal(kr, shares)
    assert parses[0] - before < 20  # before: > 1,000 (the whole log, every unseal)
    assert (kr.path / "audit.checkpoint").exists()
    assert kr.audit_log().verify().entries == 1_000


def test_an_intent_before_the_checkpoint_is_still_closed_and_one_after_found(
    tmp_path: Path,
) -> None:
    """The kept open intents compose with what follows: an intent left open before the
    checkpoint is recorded once (its ``observed`` entry closes it for later unseals), one
    opened after it is found."""
    kr, shares = _keyring(tmp_path)
    _fill(kr, shares, 5)
    with kr.unseal(shares) as ukr:
        first = ev.record(ukr.audit_log(), ev.Intent("shred", "killed-1", BY))
    seen = _quorum_unseal(kr, shares)
    assert [e.data["intent"] for e in seen] == [first.seq]
    assert _quorum_unseal(kr, shares) == []  # closed: not recorded twice
    with kr.unseal(shares) as ukr:
        second = ev.record(ukr.audit_log(), ev.Intent("legal-hold", "killed-2", BY))
    seen = _quorum_unseal(kr, shares)
    assert [e.data["intent"] for e in seen] == [second.seq]
    assert _quorum_unseal(kr, shares) == [] and kr.unrecorded() == []


def _checkpoint(kr: Keyring) -> dict[str, object]:
    return json.loads((kr.path / "audit.checkpoint").read_bytes())


@pytest.mark.parametrize("how", ["edited", "foreign", "stale-log", "garbage"])
def test_a_checkpoint_that_does_not_hold_is_ignored_and_hides_nothing(
    tmp_path: Path, parses: list[int], how: str
) -> None:
    """An open intent left before the checkpoint: a checkpoint edited to drop it (its MAC
    fails), another keyring's (another MAC key), one whose log was replaced since, or not
    JSON at all, is ignored: the whole log is read and the intent recorded."""
    kr, shares = _keyring(tmp_path)
    _fill(kr, shares, 50)
    with kr.unseal(shares) as ukr:
        killed = ev.record(ukr.audit_log(), ev.Intent("shred", "killed", BY))
        # a checkpoint written now (as an unseal's gap check does) keeps the open intent
        ukr.audit_log().selected(Keyring.gap_entries)
    path = kr.path / "audit.checkpoint"
    doc = _checkpoint(kr)
    kept = doc["kept"]
    assert isinstance(kept, list) and any('"killed"' in line for line in kept)
    if how == "edited":
        doc["kept"] = [line for line in kept if '"killed"' not in line]
        path.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")))
    elif how == "foreign":
        other, other_shares = _keyring(tmp_path, "other")
        _fill(other, other_shares, 50)
        with other.unseal(other_shares) as ukr:
            ukr.audit_log().selected(Keyring.gap_entries)
        path.write_bytes((other.path / "audit.checkpoint").read_bytes())
    elif how == "stale-log":  # same offset, another entry there: the log was rewritten
        doc["head"] = "0" * 64
        path.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")))
    else:
        path.write_bytes(b"\x00not json")
    before = parses[0]
    seen = _quorum_unseal(kr, shares)
    assert parses[0] - before > 100  # the whole log was read
    assert [e.data["intent"] for e in seen] == [killed.seq]
    assert _checkpoint(kr)["entries"] == kr.audit_log().verify().entries - 1  # rewritten


def test_a_log_replaced_by_a_shorter_one_reads_it_whole(tmp_path: Path) -> None:
    """A checkpoint past the log's end (the log restored from an older copy) is ignored."""
    kr, shares = _keyring(tmp_path)
    _fill(kr, shares, 5)
    log_path = kr.path / "audit.log"
    old_log, old_anchor = log_path.read_bytes(), (kr.path / "audit.anchor").read_bytes()
    with kr.unseal(shares) as ukr:
        ev.record(ukr.audit_log(), ev.Intent("shred", "killed", BY))
    _quorum_unseal(kr, shares)
    log_path.write_bytes(old_log)  # (with its anchor: a restore from backup)
    (kr.path / "audit.anchor").write_bytes(old_anchor)
    with kr.unseal(shares) as ukr:
        again = ev.record(ukr.audit_log(), ev.Intent("shred", "killed-again", BY))
    seen = _quorum_unseal(kr, shares)
    assert [e.data["intent"] for e in seen] == [again.seq]


def test_gap_entries_keep_what_unrecorded_reads(tmp_path: Path) -> None:
    """``unrecorded`` gives the same answer on ``gap_entries`` of a log as on the log, and
    the selection composes (a log cut anywhere)."""
    kr, shares = _keyring(tmp_path)
    with kr.unseal(shares) as ukr:
        log = ukr.audit_log()
        ev.record(log, ev.Init(kr.keyring_id, 1, 2, []))
        ev.record(log, ev.Intent("shred", "open", BY))
        _ = ukr.rotate()
        ev.record_many(log, [ev.Intent("shred", "u", BY), ev.Shred("u", True, BY)])
        ev.record(log, ev.Intent("legal-hold", "open2", [ev.Contributor("b", 2, "e" * 16)]))
        ev.record(log, ev.LegalHold("open2", True, BY))  # another authority: stays open
    entries = kr.audit_log().entries()
    want = kr.unrecorded(entries)
    assert all(g.operation != "init" for g in want)
    assert len(want) == 2
    assert kr.unrecorded(Keyring.gap_entries(entries)) == want
    for cut in range(len(entries) + 1):
        composed = Keyring.gap_entries(Keyring.gap_entries(entries[:cut]) + entries[cut:])
        assert kr.unrecorded(composed) == want, cut


def test_a_log_that_begins_with_a_closed_intent_keeps_its_closer(tmp_path: Path) -> None:
    """A keyring made by the library (no ``init`` entry) whose first entry is a shred's
    intent: its outcome is kept with it, so it does not read as open, and the log is
    still not read whole by the next unseal."""
    kr, shares = _keyring(tmp_path)
    _fill(kr, shares, 200)
    with kr.unseal(shares) as ukr:
        ev.record(ukr.audit_log(), ev.Intent("shred", "killed", BY))
    entries = kr.audit_log().entries()
    kept = Keyring.gap_entries(entries)
    assert [e.seq for e in kept] == [1, 2, len(entries)]
    assert kr.unrecorded(kept) == kr.unrecorded(entries)
