"""Red team: ``keysplit unseal --server`` seals the share only to the attempt key whose
fingerprint it printed.

The CLI prints the attempt key's fingerprint for the custodian to compare with the
service's log (SECURITY.md: the defence against an active man in the middle), but it then
fetched the offer again before sealing each share and used whatever key came back: a reset
or a substituted offer in between received the share under a key nobody compared. Real
processes: ``keysplit serve``, the custodian's CLI reading its share from stdin, and a reset
from a third party while the custodian is entering the share."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from service_helpers import KEYSPLIT, Server, make_keyring, share_file

from keysplit import Client


def test_a_share_goes_only_to_the_key_whose_fingerprint_was_shown(tmp_path: Path) -> None:
    vault = make_keyring(tmp_path, 2, ["a", "b", "c"])
    share = share_file(tmp_path / "vault-shares", "a").read_bytes()
    sockdir = Path(tempfile.mkdtemp(prefix="ksu", dir="/tmp"))  # short: sun_path
    try:
        with Server(vault, sockdir / "s.sock") as srv:
            p = subprocess.Popen(
                [KEYSPLIT, "unseal", "--server", srv.url, "-s", "-"],
                cwd=tmp_path,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            assert p.stderr is not None and p.stdin is not None
            shown = b""
            while b"unseal attempt key" not in shown:  # fingerprint printed, share next
                line = p.stderr.readline()
                assert line, shown
                shown += line
            Client(srv.url).reset_unseal()  # a new attempt key from here on
            Client(srv.url).unseal_offer()
            out, err = p.communicate(share, timeout=60)
            assert p.returncode == 1, (out, err)
            assert b"changed" in err and b"Traceback" not in err, err
            assert Client(srv.url).service_status()["progress"]["have"] == 0
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)
