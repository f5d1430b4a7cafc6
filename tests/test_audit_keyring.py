"""The keyring's on_event hook feeds the audit log: every event it emits is loggable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keysplit import AuditLog
from keysplit.keyring import Keyring


def test_keyring_events_land_in_a_verifiable_log(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log", mac_key=bytes(range(32)))

    def on_event(name: str, details: Any) -> None:
        log.append(name, **details)

    kr, shares = Keyring.create(tmp_path / "kr", 2, ["alice", "bob", "carol"], on_event=on_event)
    with kr.unseal([shares["alice"], shares["bob"]]) as u:
        u.rotate()
        u.rewrap()
        u.set_legal_hold("u1", True)
        u.shred("u2")
        u.retire(1)
    events = [e.event for e in log.entries()]
    assert events[0] == "create" and "unseal" in events and "rotate" in events
    assert "legal_hold" in events and "shred" in events and "retire" in events
    report = log.verify()
    assert report.entries == len(events) and report.mac_verified
    # No secret material: every value is a name, number, flag or hex id.
    text = log.path.read_text()
    assert "alice" in text
