"""`make test` hands the longest modules out first, as tests/conftest.py orders them.

Under ``--dist loadfile`` a module runs whole on one worker; the run ends when the last one
does, so the longest modules must start first (on 2 cores one 200 s module started late is
the tail). tests/conftest.py sorts them to the front, but pytest-xdist (3.x) sorts modules
again by their number of tests unless told ``--no-loadscope-reorder``: a long module of a
few slow tests (test_crash.py: 16 tests, 204 s at stop 40) was handed out near the end.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import conftest

ROOT = Path(__file__).resolve().parents[2]


def _make_pytest_args() -> list[str]:
    """The Makefile's PYTEST_ARGS, with one worker."""
    makefile = (ROOT / "Makefile").read_text()
    workers = re.search(r"^PYTEST_WORKERS \?= (\S+)$", makefile, re.M)
    args = re.search(r"^PYTEST_ARGS := (.*)$", makefile, re.M)
    assert workers and args, "Makefile: PYTEST_WORKERS or PYTEST_ARGS not found"
    return args.group(1).replace("$(PYTEST_WORKERS)", "1").split()


def test_make_tests_args_keep_the_conftest_order_of_modules(tmp_path: Path) -> None:
    """(ci9) A project whose conftest puts a one-test module before a three-test one, run
    with the Makefile's pytest arguments on one xdist worker: the one-test module runs
    first. With xdist's default reorder (by number of tests) it ran last."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    log = tmp_path / "order.log"
    test = f"def test_{{n}}():\n    open({str(log)!r}, 'a').write('{{m}}\\n')\n"
    (tmp_path / "test_many.py").write_text("".join(test.format(n=n, m="many") for n in range(3)))
    (tmp_path / "test_long.py").write_text(test.format(n=0, m="long"))
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            def pytest_collection_modifyitems(items):
                items.sort(key=lambda item: "test_long.py" not in item.nodeid)
            """
        )
    )
    p = subprocess.run(
        [sys.executable, "-m", "pytest", *_make_pytest_args(), "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert log.read_text().split() == ["long", "many", "many", "many"]


def test_the_long_modules_named_first_exist() -> None:
    """A module renamed or moved without its entry would silently lose its place."""
    missing = [m for m in conftest._LONG_MODULES if not (ROOT / m).is_file()]
    assert missing == []
