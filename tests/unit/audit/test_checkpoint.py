"""The quorum's gap check reads only the audit log's new entries (``audit.checkpoint``).

Every quorum unseal looks for what a killed ceremony left unrecorded (open intents, KEK
versions without their entry, ...). It read and parsed the whole log each time: with 10^5
entries that was seconds per unseal, growing with the log. A MACed checkpoint now keeps
what the check needs of the entries read so far (the first entry, open intents, switches,
rotate/retire, verify-start, token-revoke), bound to the log by the count, byte offset and
hash of the last entry read; the next unseal parses only what follows. A checkpoint that
is forged, another keyring's or no longer matches the log is ignored (the whole log is
read), so it can never hide an open intent. ``audit verify`` still reads everything.

Where the PostgreSQL store keeps the chain (one row per entry, one chain for every host),
the checkpoint is count-based: the rows after its entry ``entries`` are read, and only if
that row still hashes to its ``head``. It is kept beside each host's keyring directory.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from audit_parses import count_parses

from keysplit import Keyring, Share, ceremony
from keysplit.audit import events as ev
from keysplit.audit.log import AuditLog

BY = [ev.Contributor("a", 1, "f" * 16)]


def _keyring(
    tmp_path: Path, name: str = "kr", store_url: str | None = None
) -> tuple[Keyring, list[Share]]:
    kr, shares = Keyring.create(tmp_path / name, 2, ["a", "b", "c"], store_url=store_url)
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
    return count_parses(monkeypatch)


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


@pytest.mark.parametrize("where", ["file", "store"])
@pytest.mark.parametrize("how", ["edited", "foreign", "stale-log", "other-form", "garbage"])
def test_a_checkpoint_that_does_not_hold_is_ignored_and_hides_nothing(
    request: pytest.FixtureRequest, tmp_path: Path, parses: list[int], how: str, where: str
) -> None:
    """An open intent left before the checkpoint: a checkpoint edited to drop it (its MAC
    fails), another keyring's (another MAC key), one whose log was replaced since (the
    file: another entry at its offset; the store's chain: another line in row ``entries``),
    one of the other form (a store chain's for a file log, or the reverse), or not JSON at
    all, is ignored: the whole log is read and the intent recorded."""

    def url() -> str | None:
        return None if where == "file" else _pg_url(request.getfixturevalue("pg_server"))

    kr, shares = _keyring(tmp_path, store_url=url())
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
        other, other_shares = _keyring(tmp_path, "other", store_url=url())
        _fill(other, other_shares, 50)
        with other.unseal(other_shares) as ukr:
            ukr.audit_log().selected(Keyring.gap_entries)
        path.write_bytes((other.path / "audit.checkpoint").read_bytes())
    elif how == "other-form":  # this keyring's key, the other kind of chain (file / rows)
        with kr.unseal(shares) as ukr:
            store = _RangedMemoryStore() if where == "file" else None
            twin = AuditLog(tmp_path / "twin.log", mac_key=ukr.audit_key(), store=store)
            twin.checkpoint_path = path
            ev.record_many(twin, [ev.Intent("shred", "u", BY), ev.Shred("u", True, BY)])
            twin.selected(Keyring.gap_entries)
        assert ("offset" in _checkpoint(kr)) == (where == "store")
    elif how == "stale-log":  # another entry where it was: the log was rewritten
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


# ---------------------------------------------------------------- the store-kept chain


def _pg_url(server: object) -> str:
    return f"{server.url}&schema=cp_{uuid.uuid4().hex[:12]}"  # type: ignore[attr-defined]


@pytest.fixture
def full_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the store's whole chain is fetched."""
    from keysplit.store.postgres import PostgresKeyStore

    seen = [0]
    real = PostgresKeyStore.audit_lines

    def counting(self: PostgresKeyStore) -> list[bytes]:
        seen[0] += 1
        return real(self)

    monkeypatch.setattr(PostgresKeyStore, "audit_lines", counting)
    return seen


def test_a_quorum_unseal_of_a_store_kept_chain_parses_only_the_new_rows(
    pg_server: object, tmp_path: Path, parses: list[int], full_reads: list[int]
) -> None:
    kr, shares = _keyring(tmp_path, store_url=_pg_url(pg_server))
    _fill(kr, shares, 500)  # 1,000 rows
    assert not (kr.path / "audit.log").exists()
    _quorum_unseal(kr, shares)  # reads them all once
    before, fetched = parses[0], full_reads[0]
    _quorum_unseal(kr, shares)
    assert parses[0] - before < 20  # before: > 1,000 (the whole chain, every unseal)
    assert full_reads[0] == fetched  # before: the whole chain fetched twice per unseal
    assert "offset" not in _checkpoint(kr)  # count-based: rows, not bytes
    with kr.unseal(shares) as ukr:
        killed = ev.record(ukr.audit_log(), ev.Intent("shred", "killed", BY))
    seen = _quorum_unseal(kr, shares)  # found among the new rows
    assert [e.data["intent"] for e in seen] == [killed.seq]
    assert _quorum_unseal(kr, shares) == [] and kr.unrecorded() == []
    assert kr.audit_log().verify().entries == 1_002  # (the intent, its observed entry)


def test_a_store_kept_chain_appended_by_another_host_is_read_after_the_checkpoint(
    pg_server: object, tmp_path: Path, parses: list[int]
) -> None:
    """Each host keeps its own checkpoint of the one chain: another host's appends only
    extend it, so this host's checkpoint still holds and its intents are found."""
    here, shares = _keyring(tmp_path, "host1", store_url=_pg_url(pg_server))
    shutil.copytree(here.path, tmp_path / "host2")
    there = Keyring.open(tmp_path / "host2")
    _fill(here, shares, 100)
    _quorum_unseal(here, shares)
    _fill(there, shares, 3)
    before = parses[0]
    assert _quorum_unseal(here, shares) == []
    assert parses[0] - before < 20  # only the other host's 6 rows
    with there.unseal(shares) as ukr:
        killed = ev.record(ukr.audit_log(), ev.Intent("legal-hold", "killed", BY))
    seen = _quorum_unseal(here, shares)  # (a gap found: the chain is then verified whole)
    assert [e.data["intent"] for e in seen] == [killed.seq]
    assert _quorum_unseal(there, shares) == []  # recorded once, whichever host looks


def test_a_store_kept_chain_cut_back_below_the_checkpoint_is_read_whole(
    pg_server: object, tmp_path: Path
) -> None:
    """The chain restored to fewer rows than the checkpoint's count (with its anchor, as a
    restore from backup): no row ``entries`` any more, so the whole chain is read."""
    import psycopg
    from psycopg import sql

    url = _pg_url(pg_server)
    kr, shares = _keyring(tmp_path, store_url=url)
    _fill(kr, shares, 5)
    rows, anchor = kr.audit_log().verify().entries, (kr.path / "audit.anchor").read_bytes()
    with kr.unseal(shares) as ukr:
        ev.record_many(ukr.audit_log(), [ev.Intent("shred", f"x{i}", BY) for i in range(3)])
    _quorum_unseal(kr, shares)
    assert int(str(_checkpoint(kr)["entries"])) > rows
    schema = url.rsplit("schema=", 1)[1]
    with psycopg.connect(pg_server.url) as conn:  # type: ignore[attr-defined]
        conn.execute(
            sql.SQL("DELETE FROM {}.audit WHERE seq > %s").format(sql.Identifier(schema)), (rows,)
        )
    (kr.path / "audit.anchor").write_bytes(anchor)
    with kr.unseal(shares) as ukr:
        again = ev.record(ukr.audit_log(), ev.Intent("shred", "killed-again", BY))
    seen = _quorum_unseal(kr, shares)
    assert [e.data["intent"] for e in seen] == [again.seq]


class _MemoryStore:
    """An :class:`~keysplit.store.base.AuditStore` with ``audit_lines`` and
    ``audit_append`` only (no ranged reads), as a custom store may be."""

    def __init__(self) -> None:
        self.rows: list[bytes] = []

    def audit_lines(self) -> list[bytes]:
        return list(self.rows)

    def audit_append(self, build: Callable[[bytes | None], bytes]) -> bytes:
        self.rows.append(build(self.rows[-1] if self.rows else None))
        return self.rows[-1]


class _RangedMemoryStore(_MemoryStore):
    def audit_lines_from(self, seq: int) -> list[bytes]:
        return self.rows[seq - 1 :]

    def audit_last(self) -> bytes | None:
        return self.rows[-1] if self.rows else None


def test_a_store_without_a_ranged_read_still_reads_its_whole_chain(tmp_path: Path) -> None:
    """A custom :class:`AuditStore` with ``audit_lines`` and ``audit_append`` only (no
    ``audit_lines_from``/``audit_last``) keeps working: its chain is read whole."""
    store = _MemoryStore()
    cp = tmp_path / "audit.checkpoint"
    log = AuditLog(tmp_path / "a.log", mac_key=b"k" * 32, store=store, checkpoint=cp)
    first = ev.record(log, ev.Intent("shred", "open", BY))
    ev.record_many(log, [ev.Intent("shred", "u", BY), ev.Shred("u", True, BY)])
    log.check_append()
    assert [e.seq for e in log.selected(Keyring.gap_entries)] == [first.seq]
    assert not cp.exists() and not (tmp_path / "a.log").exists()


@pytest.mark.parametrize("where", ["file", "rows", "rows-unranged"])
def test_entries_since_a_mark_reads_what_follows_or_everything(tmp_path: Path, where: str) -> None:
    """:meth:`AuditLog.entries_since` (the key service's rollback check keeps its mark in
    memory): after a mark that holds, only the new entries; after one the log no longer
    has (rewritten since), every entry and False; a store without ranged reads, always
    every entry."""
    store = {"file": None, "rows": _RangedMemoryStore(), "rows-unranged": _MemoryStore()}[where]
    log = AuditLog(tmp_path / "a.log", mac_key=b"k" * 32, store=store)  # type: ignore[arg-type]
    assert log.entries_since(None) == ([], None, False)
    ev.record_many(log, [ev.Intent("shred", f"u{i}", BY) for i in range(5)])
    first, mark, since = log.entries_since(None)
    assert [e.seq for e in first] == [1, 2, 3, 4, 5] and not since and mark is not None
    ev.record_many(log, [ev.Shred("u0", True, BY), ev.Shred("u1", True, BY)])
    new, mark2, since = log.entries_since(mark)
    ranged = where != "rows-unranged"
    assert [e.seq for e in new] == ([6, 7] if ranged else [1, 2, 3, 4, 5, 6, 7])
    assert since == ranged and mark2 is not None and mark2.entries == 7
    assert log.entries_since(mark2)[:1] == ([] if ranged else [*first, *new[-2:]],)
    forged = mark2._replace(head="0" * 64)  # another line where the mark was
    again, _, since = log.entries_since(forged)
    assert len(again) == 7 and not since


def test_a_switch_owed_by_a_killed_rekey_is_checked_after_the_checkpoint(
    tmp_path: Path, parses: list[int]
) -> None:
    """A rekey completed by a library unseal (no entry, the owed-switch mark left): the
    quorum checked whether the switch was recorded on the whole log; it reads the entries
    since the checkpoint now, and records ``rekey-recovered`` once."""
    kr, shares = _keyring(tmp_path)
    _fill(kr, shares, 500)  # 1,000 entries
    _quorum_unseal(kr, shares)  # the checkpoint
    with kr.unseal(shares) as ukr:
        new = list(ukr.prepare_rekey().values())[:2]  # then "crash" before the commit
    with Keyring.open(kr.path).unseal(new):
        pass  # the library completes the rekey: generation 2, no entry, the mark left
    kr = Keyring.open(kr.path)
    before = parses[0]
    _quorum_unseal(kr, new)
    assert parses[0] - before < 20  # before: > 1,000 (the owed switch read the whole log)
    recovered = [e for e in kr.audit_log().entries() if e.event == "rekey-recovered"]
    assert [e.data["generation"] for e in recovered] == [kr.meta.generation]
    _quorum_unseal(kr, new)
    assert len([e for e in kr.audit_log().entries() if e.event == "rekey-recovered"]) == 1


# ------------------------------------------- intents an observed entry after the cut rematches


def test_an_outcome_rematched_by_an_observed_entry_after_the_checkpoint_closes_the_older_intent(
    tmp_path: Path,
) -> None:
    """Two shreds of one subject by one quorum race: both intents, then one outcome (it
    closes the later intent, the latest open one), and a quorum's checkpoint there (the
    older intent open). The later shred then fails and closes its own intent (``observed``):
    a full read hands the outcome to the older intent, so nothing is open. The checkpoint
    kept only the older intent, so the next quorum read it as open and wrote a needless
    ``observed`` entry for it; now it keeps the entries such an ``observed`` can rematch."""
    kr, shares = _keyring(tmp_path)
    _fill(kr, shares, 20)
    with kr.unseal(shares) as ukr:
        log = ukr.audit_log()
        ev.record(log, ev.Intent("shred", "bob", BY))  # process 1
        later = ev.record(log, ev.Intent("shred", "bob", BY))  # process 2
        ev.record(log, ev.Shred("bob", True, BY))  # process 1's outcome
        log.selected(Keyring.gap_entries)  # a quorum's gap check: the checkpoint
        ev.record(log, ev.Observed("shred", "bob", later.seq, "LegalHoldError", BY))
        assert ev.open_intents(log.entries()) == []
        assert ev.open_intents(log.selected(Keyring.gap_entries)) == []  # before: the older
    assert _quorum_unseal(kr, shares) == []  # before: one needless observed entry
