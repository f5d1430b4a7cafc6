"""Count the audit log lines a test makes keysplit parse (the checkpoint and the key
service's rollback check must read only the entries since the last time)."""

from __future__ import annotations

import pytest

from keysplit.audit import log as audit_log


def count_parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A one-item list whose item counts the lines parsed from now on (the test's
    monkeypatch undoes it)."""
    seen = [0]
    real = audit_log._parse_line

    def counting(line: bytes, seq: int) -> object:
        seen[0] += 1
        return real(line, seq)

    monkeypatch.setattr(audit_log, "_parse_line", counting)
    return seen
