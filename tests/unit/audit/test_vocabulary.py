"""One audit vocabulary (issue 18): every event name the code can emit is a typed event of
:mod:`keysplit.audit.events`, with one field layout, and entries reach a log only through
``events.record``. Static (the source) and dynamic (a ceremony run, the key service)."""

from __future__ import annotations

import ast
from pathlib import Path

from keysplit import Keyring, ceremony
from keysplit.audit import EVENTS, events
from keysplit.ceremony import Custody, DirectorySink, Quorum
from keysplit.service.core import KeyService, Request

ROOT = Path(__file__).resolve().parents[3]


def _calls() -> list[tuple[str, ast.Call]]:
    out = []
    for top in ("keysplit", "cli"):
        for path in sorted((ROOT / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call):
                    out.append((str(path.relative_to(ROOT)), node))
    return out


def test_every_emitted_name_is_a_typed_event_with_one_schema() -> None:
    classes = {c.__name__: c for c in events.Event.__subclasses__()}
    assert sorted(c.NAME for c in classes.values()) == sorted(EVENTS)
    assert len(set(EVENTS)) == len(EVENTS) and set(events.SCHEMAS) == set(EVENTS)
    used = set()
    for where, call in _calls():
        f = call.func
        # nothing appends to a log but events.record / record_many
        if isinstance(f, ast.Attribute) and f.attr in ("_append", "_append_many", "append"):
            first = call.args[0] if call.args else None
            literal = isinstance(first, ast.Constant) and isinstance(first.value, str)
            private = f.attr != "append" and not where.startswith("keysplit/audit/")
            assert not private and not (literal and call.keywords), f"{where}: raw audit append"
        # the service writes only typed events
        if isinstance(f, ast.Attribute) and f.attr == "_audit" and call.args:
            assert not isinstance(call.args[0], ast.Constant), f"{where}: untyped _audit"
        if (
            isinstance(f, ast.Attribute)
            and isinstance(f.value, ast.Name)
            and f.value.id in ("ev", "events")
            and f.attr[:1].isupper()
        ):
            used.add(f.attr)
    unknown = {u for u in used if u not in classes and u not in ("Contributor", "TokenHolder")}
    assert not unknown, unknown


def test_written_entries_match_their_schema(tmp_path: Path) -> None:
    made = ceremony.init(
        tmp_path / "kr", 2, [Custody("a"), Custody("b"), Custody("c")], DirectorySink(tmp_path)
    )
    kr = made.keyring
    from keysplit import load_share

    shares = [load_share(Path(w.location).read_bytes()) for w in made.shares[:2]]
    ceremony.unseal_check(kr, Quorum(kr, shares))
    ceremony.rotate(kr, Quorum(kr, shares))
    ceremony.hold(kr, Quorum(kr, shares), "s/1", True)
    ceremony.shred(kr, Quorum(kr, shares), "s/2")
    ceremony.dataset(
        kr,
        Quorum(kr, shares),
        "scan",
        lambda ukr, release: 3,
        source="in",
        destination=None,
        column="c",
        count=lambda n: (n, 0),
    )
    new = ceremony.create_token(
        kr, Quorum(kr, shares), name="t", allow=["shred", "rotate"], subject_prefix="s/"
    ).value
    svc = KeyService(kr.path, log=lambda m: None)
    svc._unsealed(Keyring.open(kr.path).unseal(shares), ["a", "b"], [])
    auth = {"authorization": f"Bearer {new.token}"}
    assert svc.handle(Request("POST", "/v1/shred", auth, b'{"subjects": ["s/3"]}')).status == 200
    assert svc.handle(Request("POST", "/v1/rotate", auth, b"")).status == 200
    assert svc.handle(Request("POST", "/v1/rotate", {}, b"")).status == 401
    svc.close()
    seen = set()
    for e in kr.audit_log().entries():
        assert e.event in EVENTS and set(e.data) == events.SCHEMAS[e.event], e.event
        seen.add(e.event)
    assert {"service-unseal", "service-seal", "token-create", "token-denied", "dataset"} <= seen
    # the service's shred and rotate are the CLI's ceremonies: same layout, token as principal
    by_token = [e for e in kr.audit_log().entries() if e.event in ("shred", "rotate")][-2:]
    assert [e.data["authorized_by"] for e in by_token] == [
        [{"token": "t", "token_id": new.policy.id}]
    ] * 2


def test_open_intents_close_by_outcome_latest_first_or_by_observed_seq(tmp_path: Path) -> None:
    """An ``intent`` is closed by the next outcome entry of its operation naming its target
    (the latest open one first: an older one is a kill's) or by an ``observed`` entry naming
    its seq; any other entry, an outcome for another target, or an unknown event name (a
    newer writer's) leaves it open. Unknown fields are ignored, so a newer writer's entries
    still read."""
    from keysplit.audit import AuditLog

    log = AuditLog(tmp_path / "audit.log")
    by: list[events.Principal] = []
    rec = events.record
    a = rec(log, events.Intent("shred", "u1", by))
    b = rec(log, events.Intent("shred", "u1", by))
    c = rec(log, events.Intent("token-create", "billing", by))
    d = rec(log, events.Intent("decrypt", "f.ks", by))
    e = rec(log, events.Intent("legal-hold", "u2", by))
    rec(log, events.Shred("u9", True, by))  # another subject
    log._append("some-future-event", subject="u1", token="billing")
    assert [x.seq for x in events.open_intents(log.entries())] == [
        a.seq,
        b.seq,
        c.seq,
        d.seq,
        e.seq,
    ]
    rec(log, events.Shred("u1", True, by))  # closes the later of the two (the first: killed)
    rec(log, events.DecryptIncomplete("f.ks", 10, {}, "BrokenPipeError", by))
    rec(log, events.Observed("token-create", "billing", c.seq, "done: ...", by))
    rec(log, events.LegalHold("u2", True, by))
    assert events.open_intents(log.entries()) == [log.entries()[a.seq - 1]]
    rec(log, events.Observed("shred", "u1", a.seq, "done", by))
    assert events.open_intents(log.entries()) == []
    assert log.verify().entries == 12
