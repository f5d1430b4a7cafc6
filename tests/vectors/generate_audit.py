"""Regenerate tests/vectors/audit.json (run from the repo root).

The base logs are written by ``AuditLog`` with a fixed clock (and, for the MACed log, a
fixed MAC key), so the tests reproduce them byte for byte. Tampered logs are derived
from the base by editing, removing, reordering, inserting or tearing lines; each records
the outcome ``verify`` must report (an ``expect`` and the first bad sequence number).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from keysplit.audit import AuditLog
from keysplit.errors import AuditError

MAC_KEY = bytes(range(32))
START = datetime(2026, 11, 28, 9, 0, 0, tzinfo=UTC)

# The ceremony the base log records: (event, fields).
EVENTS: list[tuple[str, dict[str, Any]]] = [
    (
        "init",
        {
            "threshold": 2,
            "custodians": ["alice", "bob", "carol"],
            "fingerprints": ["ks1-aaaa", "ks1-bbbb", "ks1-cccc"],
            "versions": {"keyring": 1, "kek": 1},
        },
    ),
    ("unseal-check", {"custodians": ["alice", "carol"], "ok": True}),
    ("rotate", {"custodians": ["alice", "bob"], "versions": {"kek": 2}}),
    ("rewrap", {"custodians": ["alice", "bob"], "from": [1], "to": 2, "subjects": 1000}),
    ("shred", {"custodians": ["bob", "carol"], "subject": "u42"}),
]

# Messages each expect maps to (the tests check AuditError and this text).
EXPECT_TEXT = {
    "ok": "",
    "bad-mac": "MAC invalid",
    "missing-mac": "MAC missing",
    "broken-link": "altered",
    "bad-seq": "sequence number",
    "torn": "incomplete last line",
    "non-canonical": "canonical",
    "bad-entry": "not a valid log line",
    "bad-version": "unsupported audit entry version",
    "anchor-missing": "anchor not found",
}


def clock() -> Callable[[], datetime]:
    state = {"t": START}

    def tick() -> datetime:
        state["t"] += timedelta(minutes=1, microseconds=1)
        return state["t"]

    return tick


def build(mac_key: bytes | None) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        log = AuditLog(Path(tmp) / "audit.log", mac_key=mac_key, clock=clock())
        for event, fields in EVENTS:
            log._append(event, **fields)
        return log.path.read_bytes()


def edit(line: bytes, **changes: Any) -> bytes:
    obj = json.loads(line)
    for key, value in changes.items():
        if key == "data":
            obj["data"].update(value)
        else:
            obj[key] = value
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def variants(base: bytes) -> list[tuple[str, bytes, str, int | None, dict[str, Any]]]:
    """(name, log bytes, expect, seq, extra verify arguments) for one base log."""
    ls = base.split(b"\n")[:-1]

    def join(parts: list[bytes]) -> bytes:
        return b"".join(p + b"\n" for p in parts)

    head_after_4 = hashlib.sha256(ls[3]).hexdigest()
    return [
        ("untouched", base, "ok", None, {}),
        ("untouched, anchored at entry 4", base, "ok", None, {"anchor": head_after_4}),
        (
            "entry 2 custodians edited",
            join([ls[0], edit(ls[1], data={"custodians": ["mallory"]}), *ls[2:]]),
            "edit",
            2,
            {},
        ),
        (
            "entry 1 threshold edited",
            join([edit(ls[0], data={"threshold": 1}), *ls[1:]]),
            "edit",
            1,
            {},
        ),
        ("entry 3 removed", join([*ls[:2], *ls[3:]]), "bad-seq", 3, {}),
        ("entries 2 and 3 swapped", join([ls[0], ls[2], ls[1], *ls[3:]]), "bad-seq", 2, {}),
        ("entry 2 duplicated", join([*ls[:2], ls[1], *ls[2:]]), "bad-seq", 3, {}),
        (
            "junk line inserted before entry 4",
            join([*ls[:3], b"not json", *ls[3:]]),
            "bad-entry",
            4,
            {},
        ),
        (
            "entry 3 re-serialized with spaces",
            join([*ls[:2], ls[2].replace(b",", b", "), *ls[3:]]),
            "non-canonical",
            3,
            {},
        ),
        (
            "entry 5 version bumped",
            join([*ls[:4], ls[4].replace(b'"v":1', b'"v":2')]),
            "bad-version",
            5,
            {},
        ),
        ("torn sixth line", base + b'{"data":{"custodians":["ali', "torn", 6, {}),
        ("last newline lost", base[:-1], "torn", 5, {}),
        ("truncated after entry 3", join(ls[:3]), "anchor-missing", None, {"anchor": head_after_4}),
    ]


def main() -> None:
    cases = []
    for label, key in (("plain", None), ("mac", MAC_KEY)):
        base = build(key)
        for name, data, expect, seq, extra in variants(base):
            if expect == "edit":
                # An edit breaks the MAC of the entry itself, or (without a MAC) the
                # hash link stored in the entry after it; both name the edited entry.
                expect = "bad-mac" if key else "broken-link"
            case: dict[str, Any] = {
                "name": f"{label}: {name}",
                "mac_key": key.hex() if key else None,
                "log": data.decode("ascii"),
                "expect": expect,
                "seq": seq,
                **extra,
            }
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "audit.log"
                path.write_bytes(data)
                log = AuditLog(path, mac_key=key)
                try:
                    report = log.verify(anchor=extra.get("anchor"))
                except AuditError as exc:
                    assert expect != "ok", (name, exc)
                    assert EXPECT_TEXT[expect] in str(exc), (name, str(exc))
                    assert exc.seq == seq, (name, exc.seq)
                else:
                    assert expect == "ok", name
                    case["head"] = report.head
                    case["entries"] = report.entries
            cases.append(case)
    # A rewrite without the key passes a plain verifier but not a MAC verifier.
    cases.append(
        {
            "name": "mac: whole log rewritten without the key",
            "mac_key": MAC_KEY.hex(),
            "log": build(None).decode("ascii"),
            "expect": "missing-mac",
            "seq": 1,
        }
    )
    doc = {
        "description": "keysplit audit log v1 (docs/format/audit.md). Each case is a whole "
        "log file; verify with AuditLog(path, mac_key=bytes.fromhex(mac_key) or None)"
        ".verify(anchor=anchor). ok cases give the head and entry count; failures give the "
        "first bad sequence number (null when none is named). Base logs are reproduced by "
        "AuditLog with a clock starting at 2026-11-28T09:00:00Z and stepping 1 min 1 us.",
        "expect_values": EXPECT_TEXT,
        "events": [[e, f] for e, f in EVENTS],
        "cases": cases,
    }
    Path(__file__).with_name("audit.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
