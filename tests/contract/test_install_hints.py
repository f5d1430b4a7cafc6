"""Hints name an install that works: keysplit is not on PyPI (README "Install"), so
``pip install 'keysplit[extra]'`` fails, or installs whatever else holds that name."""

from __future__ import annotations

import re

from paths import REPO

NOT_YET: set[str] = set()  # files whose hint is known wrong (none now)


def test_no_hint_installs_keysplit_from_the_index() -> None:
    bad = []
    for path in sorted([*REPO.glob("keysplit/**/*.py"), *REPO.glob("cli/**/*.py")]):
        rel = str(path.relative_to(REPO))
        if rel not in NOT_YET and re.search(r"pip install '?keysplit\[", path.read_text()):
            bad.append(rel)
    assert not bad, f"hints that install keysplit from the package index: {bad}"
    assert "keysplit is not published on PyPI yet" in (REPO / "README.md").read_text()
