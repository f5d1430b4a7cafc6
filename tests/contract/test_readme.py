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
    """The PostgreSQL store snippet (a ```text block: it needs a server), on the throwaway one,
    and the store it sets up is the one the keyring names: a later ``Keyring.open`` (another
    process, the CLI) finds the data keys it wrote. The snippet once made the tables with
    ``open_store`` and passed them to ``unseal(store=)``: the keyring kept naming its SQLite
    file, where a later open found no key (NoDataKeyError) and made new ones."""
    (code,) = [b for b in re.findall(r"```text\n(.*?)```", README.read_text(), re.S)
               if "postgresql:///app" in b]  # fmt: skip
    url = re.search(r'"(postgresql:[^"]+)"', code)
    assert url is not None and "schema=" in url.group(1)
    server_url = pg_server.url + "&schema=readme_" + tmp_path.name[-8:].replace("-", "_")  # type: ignore[attr-defined]
    monkeypatch.chdir(tmp_path)
    before = set(threading.enumerate())
    scope = {"keysplit": keysplit}
    exec(compile(code.replace(url.group(1), server_url), str(README), "exec"), scope)
    kr = scope["kr"]
    try:
        blob = kr.encrypt(b"+1 555 0100", subject="user-42")
        assert kr.decrypt(blob, subject="user-42") == b"+1 555 0100"
    finally:
        # closing the keyring closes the store: left open, its pool and lease watcher kept
        # reconnecting (and logging each failure) once the session's server had stopped
        kr.close()
    shares = scope["shares"]
    assert keysplit.Keyring.open("vault").store_url == server_url
    later = keysplit.Keyring.open("vault").unseal([shares["ben"], shares["cy"]])
    try:
        assert later.decrypt(blob, subject="user-42") == b"+1 555 0100"
    finally:
        later.close()
    assert [t.name for t in set(threading.enumerate()) - before] == []


def test_readme_names_every_error_a_damaged_or_moved_record_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'a record moved to another user or table, or altered in one bit, fails with ...': each
    class a one-bit change anywhere in a record, or a move to another subject or context,
    actually raises is the one the README names (the header's bits are a FormatError, a
    subject without a data key a NoDataKeyError, not only IntegrityError)."""
    (para,) = [p for p in README.read_text().split("\n\n") if "altered in one bit" in p]
    monkeypatch.chdir(tmp_path)
    _, shares = keysplit.Keyring.create("vault", threshold=2, custodians=["a", "b", "c"])
    kr = keysplit.Keyring.open("vault").unseal([shares["a"], shares["b"]])
    try:
        ctx = {"table": "contacts"}
        blob = kr.encrypt(b"+1 555 0100", subject="user-42", context=ctx)
        kr.encrypt(b"x", subject="user-43")
        attempts = [
            (blob, "user-43", ctx),
            (blob, "user-44", ctx),  # a subject that never had a key
            (blob, "user-42", {"table": "other"}),
            *[(blob[:i] + bytes([blob[i] ^ 1]) + blob[i + 1 :], "user-42", ctx)
              for i in range(len(blob))],
        ]  # fmt: skip
        raised = set()
        for record, subject, context in attempts:
            with pytest.raises(keysplit.KeysplitError) as err:
                kr.decrypt(record, subject=subject, context=context)
            raised.add(type(err.value).__name__)
    finally:
        kr.close()
    assert "IntegrityError" in raised
    missing = sorted(name for name in raised if f"keysplit.{name}" not in para)
    assert not missing, f"README does not say a damaged or moved record raises {missing}"
