"""End to end: the installed ``keysplit`` executable runs a real 2-of-3 ceremony.

Three custodians make key pairs, init a keyring, a file is encrypted without a quorum and
decrypted by two custodians, carol leaves in a rekey (her old share stops working), and the
audit trail verifies, MACs included. Exactly what the README walks a new user through.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _exe() -> str:
    beside = Path(sys.executable).parent / "keysplit"
    found = str(beside) if beside.exists() else shutil.which("keysplit")
    if found is None:
        pytest.fail("the keysplit executable is not installed (pip install -e .)")
    return found


@pytest.mark.slow
def test_real_two_of_three_ceremony(tmp_path: Path) -> None:
    exe = _exe()

    def ks(*args: object, ok: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(
            [exe, *map(str, args)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert "Traceback" not in p.stderr
        assert (p.returncode == 0) == ok, (args, p.stdout, p.stderr)
        return p

    # alice protects her identity with a passphrase (real Argon2id); bob and carol do not
    (tmp_path / "alice.pw").write_text("alice's identity passphrase\n")
    ks("custodian", "keygen", "alice", "--out-dir", "keys", "--passphrase-file", "alice.pw")
    for name in ("bob", "carol"):
        ks("custodian", "keygen", name, "--out-dir", "keys", "--no-passphrase")
    init = ks(
        "init",
        "vault",
        "-k",
        "2",
        *[x for n in ("alice", "bob", "carol") for x in ("--custodian", f"{n}=keys/{n}.pub")],
    )
    keyring_id = init.stdout.strip()
    assert len(keyring_id) == 32 and "alice" in init.stderr
    shares = tmp_path / "vault-shares"
    assert sorted(p.name for p in shares.iterdir()) == [
        "alice.g1.kss",
        "bob.g1.kss",
        "carol.g1.kss",
    ]

    secret = os.urandom(300_000)
    (tmp_path / "report.pdf").write_bytes(secret)
    ks("encrypt", "vault", "report.pdf", "report.pdf.ks", "--context", "owner=finance")
    alice = [
        "--share",
        "vault-shares/alice.g1.kss",
        "--identity",
        "keys/alice.identity",
        "--passphrase-file",
        "alice=alice.pw",
    ]
    bob = ["--share", "vault-shares/bob.g1.kss", "--identity", "keys/bob.identity"]
    carol = ["--share", "vault-shares/carol.g1.kss", "--identity", "keys/carol.identity"]
    ks("decrypt", "vault", "report.pdf.ks", "back.pdf", *alice, *bob)
    assert (tmp_path / "back.pdf").read_bytes() == secret

    ks(
        "rekey",
        "vault",
        "-k",
        "2",
        "--custodian",
        "alice=keys/alice.pub",
        "--custodian",
        "bob=keys/bob.pub",
        *bob,
        *carol,
    )
    gone = ks("unseal", "vault", *carol, *bob, ok=False)
    assert "does not belong to this keyring" in gone.stderr
    new_alice = [a.replace(".g1.", ".g2.") for a in alice]
    new_bob = [a.replace(".g1.", ".g2.") for a in bob]
    ks("decrypt", "vault", "report.pdf.ks", "again.pdf", *new_bob, *new_alice)
    assert (tmp_path / "again.pdf").read_bytes() == secret

    verified = ks("audit", "verify", "vault", "--mac", "--json", *new_alice, *new_bob)
    assert '"mac_verified": true' in verified.stdout and '"entries": 4' in verified.stdout
    log = (tmp_path / "vault" / "audit.log").read_text()
    assert all(e in log for e in ('"event":"init"', '"event":"decrypt"', '"event":"rekey"'))
    assert keyring_id in log
