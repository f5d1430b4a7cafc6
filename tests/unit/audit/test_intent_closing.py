"""Which ``intent`` an outcome entry closes: its own (the latest open one of its operation
and target, authorized by the same principals), never an older one another authority
left open by a kill, which must stay open, named by its own seq, for the next quorum to
record what it finds."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from keysplit import ceremony, load_share
from keysplit.audit import events
from keysplit.ceremony import Custody, DirectorySink, Quorum, TokenGrant


class _Policy:
    name, id = "svc", "tok-1"

    def check(self, operation: str, subjects: Iterable[str] = ()) -> None:
        return None


def test_a_later_shred_by_another_authority_leaves_the_killed_intent_open(
    tmp_path: Path,
) -> None:
    """A quorum's shred of u1 killed after its intent (custodian 'a'), then the key
    service shreds u1 under a token (its own intent and entry): the open intent is the
    quorum's, and the next quorum's ``observed`` entry names it. Before, the service's
    ``shred`` entry closed the oldest intent of (shred, u1), the quorum's, and left the
    service's own open: the observation blamed the token's shred for the kill."""
    made = ceremony.init(
        tmp_path / "kr", 2, [Custody("a"), Custody("b")], DirectorySink(tmp_path / "s")
    )
    kr = made.keyring
    shares = [load_share(Path(w.location).read_bytes()) for w in made.shares]
    killed_by = [events.Contributor("a", 1, "f" * 16)]
    with kr.unseal(shares) as ukr:
        ukr.encrypt(b"x", subject="u1")
        killed = events.record(ukr.audit_log(), events.Intent("shred", "u1", killed_by))
        done = ceremony.shred(kr, TokenGrant(ukr, _Policy()), "u1")
    assert done.entry is not None and done.entry.event == "shred"
    gaps = kr.unrecorded()
    assert [(g.operation, g.target, g.intent) for g in gaps] == [("shred", "u1", killed.seq)]
    with Quorum(kr, shares).unseal():
        pass
    observed = kr.audit_log().entries()[-1]
    assert observed.event == "observed" and observed.data["intent"] == killed.seq
    assert observed.data["found"].startswith("done")
    assert kr.unrecorded() == []


def test_outcomes_of_one_authority_close_their_own_intents_latest_first(
    tmp_path: Path,
) -> None:
    """Two intents of one authority for one subject, one outcome: the later intent is the
    one closed (the earlier was a kill); two outcomes close both."""
    made = ceremony.init(
        tmp_path / "kr", 2, [Custody("a"), Custody("b")], DirectorySink(tmp_path / "s")
    )
    kr = made.keyring
    shares = [load_share(Path(w.location).read_bytes()) for w in made.shares]
    with kr.unseal(shares) as ukr:
        log = ukr.audit_log()
        first = events.record(log, events.Intent("legal-hold", "u2", []))
        events.record(log, events.Intent("legal-hold", "u2", []))
        events.record(log, events.LegalHold("u2", True, []))
        assert [e.seq for e in events.open_intents(log.entries())] == [first.seq]
        events.record(log, events.LegalHold("u2", False, []))
        assert events.open_intents(log.entries()) == []


def test_an_open_token_intent_is_not_observed_done_from_a_forged_token_list(
    tmp_path: Path,
) -> None:
    """A token creation killed after its intent, then a token list written by someone
    without the quorum (MACed under another key) naming that token: the next quorum's
    ``observed`` entry said "done: token ... is in the token list", from a list the key
    service refuses. The list is checked under this keyring's key first: a list that does
    not verify is "unknown", never "done"."""
    from keysplit.service.tokens import TokenList, new_token

    made = ceremony.init(
        tmp_path / "kr", 2, [Custody("a"), Custody("b")], DirectorySink(tmp_path / "s")
    )
    kr = made.keyring
    shares = [load_share(Path(w.location).read_bytes()) for w in made.shares]
    with kr.unseal(shares) as ukr:
        events.record(ukr.audit_log(), events.Intent("token-create", "ops", []))
    TokenList.read(kr.path, kr.keyring_id).add(
        b"\x07" * 32, new_token(), name="ops", allow=["encrypt"], subject_prefix=""
    )
    with Quorum(kr, shares).unseal():
        pass
    observed = kr.audit_log().entries()[-1]
    assert observed.event == "observed" and observed.data["target"] == "ops"
    assert observed.data["found"].startswith("unknown"), observed.data["found"]
    assert "does not verify" in observed.data["found"]


def test_an_intent_an_observed_entry_closes_is_never_taken_by_an_outcome(
    tmp_path: Path,
) -> None:
    """A batch with one subject twice, the second refused: its intents, the first's
    outcome, then the observed entry closing the second's intent (a batch records its
    outcomes first). The outcome must close the first intent, not the second (which the
    observed entry names): both closed, none reported open."""
    from keysplit.audit import AuditLog

    log = AuditLog(tmp_path / "audit.log")
    by = [events.TokenHolder("svc", "tok-1")]
    first = events.record(log, events.Intent("shred", "u3", by))
    second = events.record(log, events.Intent("shred", "u3", by))
    events.record(log, events.Shred("u3", True, by))
    assert [e.seq for e in events.open_intents(log.entries())] == [first.seq]
    events.record(log, events.Observed("shred", "u3", second.seq, "KeyringError; done", by))
    assert events.open_intents(log.entries()) == []
