"""``keysplit demo``: the story runs, every claim holds, and a false claim fails it."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer.main
from ceremony_helpers import fast_kdf_fixture, run  # noqa: F401 (fixtures)
from keysplit_cli.commands import demo as cmd_demo

from keysplit import Keyring


def test_demo_small_run_keeps_its_directory(tmp_path: Path) -> None:
    keep = tmp_path / "demo"
    r = run(["demo", "--users", "200", "--keep", keep])
    assert r.exit_code == 0, r.output
    assert "all claims held" in r.stderr
    assert "✗" not in r.stderr
    for step in (
        "1. Key ceremony",
        "3. Two custodians cannot unseal",
        "5. Rotate",
        "6. Shred",
        "7. Erin leaves",
        "8. Verify the audit trail",
    ):
        assert step in r.stderr
    kr = Keyring.open(keep / "keyring")
    assert [c.name for c in kr.meta.custodians] == ["alice", "bob", "carol", "dave"]
    report = kr.audit_log().verify()  # the demo restored the log after tampering with it
    assert report.entries >= 8
    assert kr.status().keys_by_version == {2: 199}
    # what the demo suggests trying afterwards works with the CLI
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith("  keysplit unseal"))
    r = run(line.split()[1:])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == kr.keyring_id


def test_demo_fails_when_a_claim_is_false(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cmd_demo, "_raises", lambda exc, fn: False)
    r = run(["demo", "--users", "50"])
    assert r.exit_code == 1
    assert "✗ FALSE" in r.stderr
    assert "claim(s) did not hold" in r.stderr


def test_demo_refuses_a_non_empty_keep_dir(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("mine")
    r = run(["demo", "--keep", tmp_path])
    assert r.exit_code == 1 and "not empty" in r.stderr
    assert (tmp_path / "x").read_text() == "mine"


def test_demo_runs_at_its_smallest_user_count(tmp_path: Path) -> None:
    """`--users` accepts N from its minimum up, and at the minimum the story runs with every
    claim held on records it actually checked. Below 44 users the demo's shred victim (user 42)
    did not exist: a traceback (IndexError), not a claim; the 'records still decrypt' claims
    looked at users 100-599 only, so at 50 users they checked none."""
    (param,) = [p for p in typer.main.get_command(cmd_demo.app).params if p.name == "users"]
    r = run(["demo", "--users", str(param.min), "--keep", tmp_path / "demo"])
    assert r.exit_code == 0, r.output
    assert "all claims held" in r.stderr
    assert cmd_demo.CHECKED.start < param.min  # the sample is not empty
    below = run(["demo", "--users", str(param.min - 1)])
    assert below.exit_code == 2 and "Traceback" not in below.output
