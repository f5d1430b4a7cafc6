"""Every known-answer generator in tests/vectors/ still reproduces the file the tests read.

A vector file that its generator no longer reproduces means the format or the code drifted
from what the tests pin (or the file was edited by hand): the tests would then check stale
data. Each generator runs on a copy of tests/vectors/, so the committed files are untouched.
Generators that cannot be byte-exact say why below, and are held to the same shape instead.
"""

from __future__ import annotations

import json
import os
import shutil
import string
import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO, TESTS, VECTORS_DIR

GENERATORS = sorted(VECTORS_DIR.glob("generate_*.py"))

# Not byte-exact, and why; the regenerated file must still have the committed one's shape.
SHAPE_ONLY = {
    "generate_share_custodian.py": "ML-KEM-768 encapsulation draws from OpenSSL's RNG, "
    "which no seam reaches",
    "generate_keyring_legacy_store.py": "a snapshot written by an older keysplit (default-IV "
    "key wrap) on purpose; today's code writes subject-bound rows",
}


# Hex fields whose length today's code may change in a snapshot written by older code, and why.
LENGTH_MAY_DIFFER = {
    "keyring_legacy_store.json.keyring_file": "today's keyrings also carry audit_anchor in "
    "their metadata (docs/format/keyring.md); the snapshot's keyring has none, on purpose",
}


def _same_shape(ours: object, theirs: object, where: str = "$") -> None:
    """Same keys, list lengths, numbers and plain strings; hex strings of the same length."""
    assert type(ours) is type(theirs), where
    if where in LENGTH_MAY_DIFFER:
        return
    if isinstance(ours, dict):
        assert isinstance(theirs, dict)
        assert ours.keys() == theirs.keys(), where
        for k in ours:
            _same_shape(ours[k], theirs[k], f"{where}.{k}")
    elif isinstance(ours, list):
        assert isinstance(theirs, list)
        assert len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            _same_shape(a, b, f"{where}[{i}]")
    elif isinstance(ours, str) and (set(ours) <= set(string.hexdigits) or ours.startswith("ks1-")):
        assert isinstance(theirs, str) and len(ours) == len(theirs), where
    else:
        assert ours == theirs, where


def test_every_generator_is_listed_once() -> None:
    assert len(GENERATORS) >= 10
    assert set(SHAPE_ONLY) <= {g.name for g in GENERATORS}


@pytest.mark.parametrize("generator", GENERATORS, ids=lambda p: p.name)
def test_generator_reproduces_its_vectors(generator: Path, tmp_path: Path) -> None:
    copy = tmp_path / "vectors"
    shutil.copytree(VECTORS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = {p.name: p.read_bytes() for p in copy.glob("*.json")}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS / "support")])}
    res = subprocess.run(
        [sys.executable, str(copy / generator.name)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    after = {p.name: p.read_bytes() for p in copy.glob("*.json")}
    assert after.keys() == before.keys(), "a generator wrote a file the tests do not keep"
    written = [name for name in after if after[name] != before[name]]
    if generator.name not in SHAPE_ONLY:
        assert written == [], f"{generator.name} no longer reproduces {written}"
        return
    # Shape-only generators: whatever they rewrote keeps the committed shape.
    for name in written:
        _same_shape(json.loads(before[name]), json.loads(after[name]), name)
