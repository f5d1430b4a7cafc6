"""The README's Python examples run as written (in a temporary directory)."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
from paths import REPO

import keysplit

README = REPO / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})


def test_readme_postgres_example_runs(
    pg_server: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PostgreSQL store snippet (a ```text block: it needs a server), on the throwaway one."""
    (code,) = [b for b in re.findall(r"```text\n(.*?)```", README.read_text(), re.S)
               if "open_store" in b]  # fmt: skip
    url = re.search(r'"(postgresql:[^"]+)"', code)
    assert url is not None and "schema=" in url.group(1)
    server_url = pg_server.url + "&schema=readme_" + tmp_path.name[-8:].replace("-", "_")  # type: ignore[attr-defined]
    monkeypatch.chdir(tmp_path)
    sealed, shares = keysplit.Keyring.create("vault", threshold=2, custodians=["a", "b", "c"])
    before = set(threading.enumerate())
    scope = {"keysplit": keysplit, "sealed": sealed, "quorum": [shares["a"], shares["c"]]}
    exec(compile(code.replace(url.group(1), server_url), str(README), "exec"), scope)
    kr = scope["kr"]
    try:
        blob = kr.encrypt(b"+1 555 0100", subject="user-42")
        assert kr.decrypt(blob, subject="user-42") == b"+1 555 0100"
    finally:
        # closing the keyring closes the store: left open, its pool and lease watcher kept
        # reconnecting (and logging each failure) once the session's server had stopped
        kr.close()
    assert [t.name for t in set(threading.enumerate()) - before] == []
