"""Known-answer vectors for the audit log format (tests/vectors/audit.json)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from paths import VECTORS_DIR

from keysplit import AuditError, AuditLog

VECTORS = VECTORS_DIR
DOC = json.loads((VECTORS / "audit.json").read_text())
_spec = importlib.util.spec_from_file_location("generate_audit", VECTORS / "generate_audit.py")
assert _spec and _spec.loader
GEN = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(GEN)


def test_vector_file_covers_every_expect() -> None:
    assert {c["expect"] for c in DOC["cases"]} == set(DOC["expect_values"])


@pytest.mark.parametrize("mac", [False, True])
def test_base_logs_reproduced_byte_for_byte(mac: bool) -> None:
    label = "mac" if mac else "plain"
    (case,) = [c for c in DOC["cases"] if c["name"] == f"{label}: untouched"]
    built = GEN.build(GEN.MAC_KEY if mac else None)
    assert built.decode("ascii") == case["log"]
    assert case["entries"] == len(GEN.EVENTS)


@pytest.mark.parametrize("case", DOC["cases"], ids=[c["name"] for c in DOC["cases"]])
def test_audit_vectors(tmp_path: Path, case: dict[str, Any]) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(case["log"].encode("ascii"))
    key = bytes.fromhex(case["mac_key"]) if case["mac_key"] else None
    log = AuditLog(path, mac_key=key)
    if case["expect"] == "ok":
        report = log.verify(anchor=case.get("anchor"))
        assert (report.head, report.entries) == (case["head"], case["entries"])
        assert report.mac_verified is (key is not None)
        assert log.head == case["head"]
        return
    with pytest.raises(AuditError) as exc:
        log.verify(anchor=case.get("anchor"))
    assert DOC["expect_values"][case["expect"]] in str(exc.value)
    assert exc.value.seq == case["seq"]
