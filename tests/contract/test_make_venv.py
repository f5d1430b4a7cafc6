"""`make demo`/`make test` on a fresh machine: the venv step recovers from a half-made .venv.

On Debian and Ubuntu without the python3-venv package, ``python3 -m venv`` creates the
directory and its ``bin/python``, then fails at ensurepip. The Makefile used to take any
``.venv/bin/python`` as a venv, so after installing the package every ``make demo`` kept
failing with "No module named pip" until one removed ``.venv`` by hand. The rule runs here
for real with pip replaced by ``true`` (nothing installed) and ``PYTHON`` a stub that logs
each venv it makes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")

STUB = """#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  shift 2
  echo "venv $*" >> '{log}'
  '{python}' -m venv --without-pip "$@" || exit 1
  {tail}
fi
exec '{python}' "$@"
"""


def stub(tmp_path: Path, name: str, *, ensurepip_missing: bool) -> Path:
    """A ``python3`` whose venv module works, or fails as Debian's does without python3-venv."""
    path = tmp_path / name
    tail = 'echo "ensurepip is not available" >&2; exit 1' if ensurepip_missing else "exit 0"
    path.write_text(STUB.format(log=tmp_path / "venv.log", python=sys.executable, tail=tail))
    path.chmod(0o755)
    return path


def make_core(venv: Path, python: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", "-C", str(REPO), "venv-core", f"VENV={venv}", f"PYTHON={python}",
         "PIP=true", "COMPILE_VENV=true"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_venv_left_without_pip_is_made_again(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    first = make_core(venv, stub(tmp_path, "no-ensurepip", ensurepip_missing=True))
    assert first.returncode != 0 and "ensurepip" in first.stderr
    assert (venv / "bin" / "python").exists()  # the half-made venv the failure leaves
    second = make_core(venv, stub(tmp_path, "with-venv", ensurepip_missing=False))
    assert second.returncode == 0, second.stderr
    log = (tmp_path / "venv.log").read_text().splitlines()
    assert len(log) == 2, log  # made again, not taken as it was


def test_a_working_venv_is_kept(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    marker = venv / "kept"
    marker.write_text("")
    result = make_core(venv, stub(tmp_path, "with-venv", ensurepip_missing=False))
    assert result.returncode == 0, result.stderr
    assert marker.exists()
    assert not (tmp_path / "venv.log").exists()
