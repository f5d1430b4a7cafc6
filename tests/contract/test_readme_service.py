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
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from paths import REPO
from service_helpers import Server, cli, make_keyring, share_file

import keysplit

README = (REPO / "README.md").read_text()


def service_block() -> str:
    section = README.split("## Run keysplit as a service\n", 1)[1]
    (block,) = re.findall(r"```\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)
    return block


@pytest.fixture(name="sockdir")
def sockdir_fixture() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ks-readme-", dir="/tmp"))  # a socket path must be short
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_service_section_runs_as_written(tmp_path: Path, sockdir: Path) -> None:
    block = service_block()
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
            out = None
            if ">" in argv:
                out = argv[argv.index(">") + 1]
                argv = argv[: argv.index(">")]
            runs = [argv]
            if argv[0] == "unseal":  # "each custodian: URL + own share"
                runs.append([a if a != "a.kss" else "b.kss" for a in argv])
            for one in runs:
                r = cli(*one, cwd=tmp_path, timeout=60)
                assert r.returncode == 0, (one, r.stderr)
                if out is not None:
                    (tmp_path / out).write_text(r.stdout)
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
