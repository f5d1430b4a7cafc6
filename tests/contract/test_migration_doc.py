"""docs/MIGRATION.md names the files `share convert --out-dir` writes as they are written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ceremony_helpers import run
from paths import REPO

from keysplit import secret_fingerprint
from keysplit.interop import slip39

MIGRATION = (REPO / "docs" / "MIGRATION.md").read_text()


def test_converted_share_files_are_named_as_the_guide_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    secret = bytes(range(16))
    words = slip39.generate_mnemonics(1, [(3, 5)], secret)[0]
    Path("slip39.txt").write_text("\n".join(words[:3]) + "\n")
    for out_dir in ("new-shares", "back"):
        r = run(
            [
                *("share", "convert", "--from", "slip39", "--to", "keysplit", "-t", "3", "-n", "5"),
                *("--no-passphrase", "--out-dir", out_dir, "slip39.txt"),
            ]
        )
        assert r.exit_code == 0, r.output
    # Every share file the guide mentions (a set id written out stands for any set id).
    named = re.findall(r"\b((?:new-shares|back)/share-[\w*-]+\.\w+)", MIGRATION)
    assert len(named) >= 6
    for ref in named:
        pattern = re.sub(r"[0-9a-f]{16}", "*", ref)
        assert sorted(Path().glob(pattern)), f"docs/MIGRATION.md names {ref}: no such file"
    # The guide's check: convert the new shares back; the fingerprint is the secret's.
    new = [p for i in (1, 2, 3) for p in Path("new-shares").glob(f"share-*-{i}.kss")]
    r = run(["share", "convert", "--from", "keysplit", "--to", "keysplit", *new])
    assert r.exit_code == 0, r.output
    assert secret_fingerprint(secret) in r.stderr
