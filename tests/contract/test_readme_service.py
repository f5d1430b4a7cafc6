"""The README's 'Run keysplit as a service' sequence runs as written, with real processes.

Each line of its block: ``keysplit ... > token`` keeps stdout in the file, ``keysplit serve
... &`` starts the service in the background, ``keysplit unseal --server ...`` is run by
each custodian with their own share (as its comment says), a ``keysplit.Client(...)`` line
is Python. Only the socket path is moved into a short temporary directory. Bounded: every
process has a timeout, the service is stopped at the end.
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from readme_blocks import blocks, run_lines, section, short_tempdir
from service_helpers import Server, make_keyring, share_file

import keysplit


@pytest.fixture(name="sockdir")
def sockdir_fixture() -> Iterator[Path]:
    yield from short_tempdir("ks-readme-")


def test_service_section_runs_as_written(tmp_path: Path, sockdir: Path) -> None:
    (block,) = blocks(section("## Run keysplit as a service"))
    sock = re.search(r"--socket (\S+)", block)
    assert sock is not None
    block = block.replace(sock.group(1), str(sockdir / "ks.sock"))
    vault = make_keyring(tmp_path, 2, ["a", "b"])
    for name in ("a", "b"):
        shutil.copy(share_file(tmp_path / "vault-shares", name), tmp_path / f"{name}.kss")

    server: Server | None = None
    ran: list[str] = []
    try:
        for line in block.splitlines():
            code = line.split("  #")[0].strip()
            if code.startswith("keysplit."):  # Python, as a backend would write it
                scope = {"keysplit": keysplit, "open": lambda p: open(tmp_path / p)}  # noqa: SIM115
                assert eval(code, scope)  # a record
                ran.append("client")
                continue
            argv = shlex.split(code)
            assert argv[0] == "keysplit", code
            argv = argv[1:]
            if argv[-1] == "&":
                assert argv == ["serve", "vault", "--socket", str(sockdir / "ks.sock"), "&"]
                server = Server(vault, sockdir / "ks.sock").start()
                ran.append("serve")
                continue
            runs = [argv]
            if argv[0] == "unseal":  # "each custodian: URL + own share"
                runs.append([a if a != "a.kss" else "b.kss" for a in argv])
            run_lines(runs, tmp_path)
            ran.append(" ".join(argv[:2]))
        assert ran == ["token create", "serve", "unseal --server", "client", "token revoke"]
        # the revoked token is refused by the running service at once
        token = (tmp_path / "token").read_text().strip()
        with pytest.raises(keysplit.PermissionDenied):
            keysplit.Client(f"unix:{sockdir / 'ks.sock'}", token=token).encrypt(
                b"x", subject="contacts/1"
            )
    finally:
        if server is not None:
            server.stop()
