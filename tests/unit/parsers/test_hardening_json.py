"""Hostile JSON: deep nesting and oversized input end in a KeysplitError, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

import keysplit
from keysplit import _json
from keysplit.audit import AuditLog
from keysplit.keyring import file as kf


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


def test_loads_refuses_deep_nesting_without_recursion() -> None:
    with pytest.raises(keysplit.FormatError, match="nested too deeply"):
        _json.loads(_deep(100_000), what="x", max_bytes=1 << 20)


def test_loads_refuses_by_size_before_parsing() -> None:
    with pytest.raises(keysplit.FormatError, match="too large"):
        _json.loads(b"1" * 2048, what="x", max_bytes=1024)


def test_depth_scan_ignores_brackets_inside_strings() -> None:
    text = '{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\""}'
    assert _json.loads(text, what="x", max_bytes=99, max_depth=2) == {"a": "[" * 28 + '"'}


def test_keyring_file_with_deeply_nested_metadata() -> None:
    meta = _deep(100_000)  # 200 kB: within the metadata length bound
    head = kf._HEAD.pack(kf.MAGIC, kf.VERSION, len(meta))
    blob = head + meta + b"\0" * (12 + 35 + kf._KEK.size + 16)
    with pytest.raises(keysplit.FormatError):
        kf.parse(blob)


def test_audit_line_deeply_nested(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(_deep(100_000) + b"\n")
    log = AuditLog(path)
    with pytest.raises(keysplit.AuditError):
        log.verify()
    with pytest.raises(keysplit.AuditError):
        list(log.entries())
