"""Hints name an install that works: keysplit is not on PyPI (README "Install"), so
``pip install 'keysplit[extra]'`` fails, or installs whatever else holds that name."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from paths import REPO

from keysplit import Keyring

NOT_YET: set[str] = set()  # files whose hint is known wrong (none now)


def test_no_hint_installs_keysplit_from_the_index() -> None:
    bad = []
    for path in sorted([*REPO.glob("keysplit/**/*.py"), *REPO.glob("cli/**/*.py")]):
        rel = str(path.relative_to(REPO))
        # "install keysplit[dask]" too: the import error of keysplit.jobs said so
        if rel not in NOT_YET and re.search(r"install '?keysplit\[", path.read_text()):
            bad.append(rel)
    assert not bad, f"hints that install keysplit from the package index: {bad}"
    assert "keysplit is not published on PyPI yet" in (REPO / "README.md").read_text()


def test_keysplit_jobs_without_dask_names_an_install_that_works(tmp_path: Path) -> None:
    """``import keysplit.jobs`` where Dask is missing (a ``distributed`` that cannot be
    imported shadows the installed one), and the CLI's job command there: the fix named is
    the extra from a checkout, never ``keysplit[dask]`` from the index, and said once."""
    shadow = tmp_path / "distributed"
    shadow.mkdir()
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'distributed'\", name='distributed')\n"
    )
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    r = subprocess.run(
        [sys.executable, "-c", "import keysplit.jobs"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert r.returncode == 1 and "Traceback" in r.stderr
    assert "pip install '.[dask]' in a keysplit checkout" in r.stderr
    assert "install keysplit[" not in r.stderr
    Keyring.create(tmp_path / "vault", 2, ["ana", "ben"])
    keysplit = str(Path(sys.executable).parent / "keysplit")
    cli = subprocess.run(
        [keysplit, "rewrap", str(tmp_path / "vault"), "--dask"],
        capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert cli.returncode == 1, cli.stderr
    assert cli.stderr.splitlines() == [
        "error: keysplit.jobs needs Dask distributed (No module named 'distributed')",
        "hint: install the 'dask' extra: pip install '.[dask]' in a keysplit checkout (not on "
        "PyPI)",
    ]
