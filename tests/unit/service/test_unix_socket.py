"""``keysplit serve``'s Unix socket is listening the moment its name appears.

Before, the name appeared at ``bind`` and the socket listened only after a ``chmod``: a
client (a supervisor, a test, a custodian's ``unseal --server``) that saw the file and
connected in between was refused (``ECONNREFUSED``); CI hit it under load. The check runs
inside that window: the ``chmod`` is where it was.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from keysplit.errors import KeysplitError
from keysplit.service import server


def _connects(path: Path) -> str:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        c.connect(str(path))
        return "ok"
    except FileNotFoundError:
        return "absent"
    except ConnectionRefusedError:
        return "refused"
    finally:
        c.close()


def test_the_name_appears_only_once_the_socket_listens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.sock"
    seen: list[str] = []
    chmod = os.chmod

    def watching(p: object, mode: int) -> None:
        chmod(p, mode)  # type: ignore[arg-type]
        seen.append(_connects(path))  # a client that saw the file now

    monkeypatch.setattr(server.os, "chmod", watching)
    s = server._unix_socket(path)
    try:
        assert seen and "refused" not in seen, seen  # before: ['refused']
        assert _connects(path) == "ok"
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600
        assert sorted(p.name for p in tmp_path.iterdir()) == ["s.sock"]  # no temporary left
        with pytest.raises(KeysplitError, match="another server is listening"):
            server._unix_socket(path)
    finally:
        s.close()
    # a dead server's socket is replaced
    s = server._unix_socket(path)
    try:
        assert _connects(path) == "ok"
    finally:
        s.close()


def test_a_path_too_long_for_the_temporary_name_binds_in_place(tmp_path: Path) -> None:
    """sun_path holds 107 bytes: a socket path that fits while its temporary sibling
    (``.ks`` + 8 hex digits) would not is bound in place, as before."""
    pad = 100 - len(str(tmp_path)) - 1  # a directory whose path is 100 bytes long
    if pad < 1:
        pytest.skip("the temporary directory's path is too long already")
    d = tmp_path / ("d" * pad)
    d.mkdir()
    path = d / "s"  # 102 bytes; the temporary name would be 112
    s = server._unix_socket(path)
    try:
        assert _connects(path) == "ok"
        assert [p.name for p in d.iterdir()] == ["s"]
    finally:
        s.close()
