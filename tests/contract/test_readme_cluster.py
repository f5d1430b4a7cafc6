"""The README's 'Run a cluster across data centres' sequence runs as written.

Four node keyrings n1..n4 (custodians nXa, nXb, plain shares copied to nXa.kss, nXb.kss)
are served and unsealed first, as the block's first comment says; then every command of the
block runs in order with real processes (``# and n3``: the token is added on n3 too), the
``keysplit.ClusterClient`` line as Python; sockets are moved to a short temporary directory.
Then what the paragraph below the block says of a replacement node: once the token is added
on it, the cluster answers with the replaced node's peer down.
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from readme_blocks import blocks, run_lines, section, short_tempdir
from service_helpers import Server, cli, share_file, start_node

import keysplit

pytest.importorskip("rbcl")
pytestmark = pytest.mark.slow  # four served nodes and a DKG: ~35 s on the shared machine


@pytest.fixture(name="sockdir")
def sockdir_fixture() -> Iterator[Path]:
    yield from short_tempdir("ks-cl-")


def test_cluster_section_runs_as_written(
    tmp_path: Path, sockdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the client names its cluster directory 'cl'
    (block,) = blocks(section("## Run a cluster across data centres"))
    block = block.replace("/run/", f"{sockdir}/")
    nodes: dict[str, Server] = {}
    try:
        for n in ("n1", "n2", "n3", "n4"):
            nodes[n] = start_node(tmp_path, n, sockdir / f"{n}.sock")
            for c in "ab":
                shutil.copy(
                    share_file(tmp_path / f"{n}-shares", f"{n}{c}"), tmp_path / f"{n}{c}.kss"
                )

        def client() -> keysplit.ClusterClient:
            return keysplit.ClusterClient("cl", token=Path("token").read_text().strip())

        ran: list[str] = []
        for line in block.splitlines():
            code, _, comment = line.partition("  #")
            for part in code.split(";"):
                part = part.strip()
                if part.startswith("keysplit."):
                    assert eval(part, {"keysplit": keysplit})
                    ran.append("client")
                    continue
                argv = shlex.split(part)[1:]
                if argv[-1] == "&":  # the nodes are served (and unsealed) above
                    assert argv == ["serve", "n1", "--socket", str(sockdir / "n1.sock"), "&"]
                    continue
                runs = [argv]
                if "and n3" in comment:
                    runs.append([re.sub(r"^n2", "n3", a) for a in argv])
                run_lines(runs, tmp_path, timeout=120)
                ran.append(" ".join(argv[:2]))
        assert ran == [
            *("cluster create", "token create", "token add", "client"),
            *("cluster status", "cluster refresh", "cluster replace"),
        ]
        # "after `cluster replace`, run `keysplit token add` on it for every client token
        # (... until then it counts as missing: "does not know this token")"
        nodes.pop("n3").stop()  # n1 and the new n4 are the two of three
        with pytest.raises(keysplit.ClusterError, match="does not know this token"):
            client().encrypt(b"y", subject="contacts/2")
        add = ["token", "add", "n4", "--name", "app", "--token-file", "token", "--allow"]
        add += [
            "datakey",
            "--subject-prefix",
            "contacts/",
            "--share",
            "n4a.kss",
            "--share",
            "n4b.kss",
        ]
        r = cli(*add, cwd=tmp_path, timeout=60)
        assert r.returncode == 0, r.stderr
        blob = client().encrypt(b"y", subject="contacts/2")
        assert client().decrypt(blob, subject="contacts/2") == b"y"
    finally:
        for srv in nodes.values():
            srv.stop()
