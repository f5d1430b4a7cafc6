"""Count the audit log lines a test makes keysplit parse (the checkpoint and the key
service's rollback check must read only the entries since the last time)."""

from __future__ import annotations

import pytest

from keysplit.audit import log as audit_log


def count_parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A one-item list whose item counts the lines parsed from now on (the test's
    monkeypatch undoes it)."""
    return count_calls(monkeypatch, audit_log, "_parse_line")


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[int]:
    """A one-item list whose item counts the calls of ``owner.name`` from now on (the
    test's monkeypatch undoes it)."""
    seen = [0]
    real = getattr(owner, name)

    def counting(*args: object) -> object:
        seen[0] += 1
        return real(*args)

    monkeypatch.setattr(owner, name, counting)
    return seen
