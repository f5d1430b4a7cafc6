"""Two hosts rotating one keyring at the same moment (red team, stop 34).

Hosts of one keyring each keep a copy of its directory and share one store (SECURITY.md
"Several hosts": the keyring file is copied after every rotate). Both at version 1 and
rotating at once, each wrote its own, *different* KEK as version 2 into its copy and both
committed "2" to the store (it refused only older versions): each host then wrapped new
keys under a v2 the other could not open, and copying either file to the other host, as
the procedure says, lost every key wrapped under the other's v2. Now a rotation holds the
store's admin lock from its catch-up to its commit, so the second waits for the first and
is then refused (its copy is behind the store) before it writes anything; and the store
refuses a version that is not newer than the current one.

Real processes (one per host), on SQLite and on PostgreSQL: host a's rotation pauses
after writing its keyring file (its program wraps the write) while host b rotates.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from keysplit import Keyring, KeyringError
from keysplit.store import open_store

NAMES = ["alice", "bob"]

ROTATE = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from keysplit import Keyring, Share, KeysplitError
    from keysplit.keyring import admin
    directory, pause, go = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3])
    shares = [Share.parse(Path(p).read_text()) for p in sys.argv[4:]]
    write = admin.KeyAdmin._write_keyring
    def slow(self, *a, **k):
        write(self, *a, **k)
        Path(directory, "written").touch()
        time.sleep(pause)  # the keyring file holds the new KEK; the store not yet
    admin.KeyAdmin._write_keyring = slow
    with Keyring.open(directory).unseal(shares) as u:
        print("ready", flush=True)
        while not go.exists():
            time.sleep(0.01)
        try:
            out = {"rotated": u.rotate()}
            out["record"] = u.encrypt(b"after", subject="s/new").hex()
        except KeysplitError as exc:
            out = {"refused": str(exc)}
            try:  # a copy behind the store creates no key
                u.encrypt(b"x", subject="s/other")
            except KeysplitError as exc2:
                out["encrypt"] = str(exc2)
    print(json.dumps(out), flush=True)
    """
)


def _start(directory: Path, pause: float, go: Path, shares: list[Path]) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-c", ROTATE, str(directory), str(pause), str(go), *map(str, shares)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
    return p


def _result(p: subprocess.Popen[str]) -> dict[str, object]:
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/k.sqlite"
    server = request.getfixturevalue("pg_server")
    return f"{server.url}&schema=rh_{uuid.uuid4().hex[:12]}"


def test_two_hosts_rotating_at_once_never_make_two_version_2s(
    tmp_path: Path, store_url: str
) -> None:
    _, shares = Keyring.create(tmp_path / "a", 2, NAMES, store_url=store_url)
    files = []
    for name, share in shares.items():
        files.append(tmp_path / f"{name}.share")
        files[-1].write_text(str(share))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    go = tmp_path / "go"
    a = _start(tmp_path / "a", 2.0, go, files)
    b = _start(tmp_path / "b", 0.0, go, files)
    go.touch()  # both rotate now; a pauses after writing its file
    ra, rb = _result(a), _result(b)
    rotated = [r for r in (ra, rb) if "rotated" in r]
    refused = [r for r in (ra, rb) if "refused" in r]
    assert len(rotated) == 1 and len(refused) == 1, (ra, rb)
    assert rotated[0]["rotated"] == 2
    assert "not in this keyring file" in str(refused[0]["refused"])
    assert "not in this keyring file" in str(refused[0]["encrypt"])
    # the refused host wrote no KEK of its own: after copying the rotated host's file (the
    # procedure), both hosts open what the rotated one sealed under v2 and seal alike
    winner = tmp_path / ("a" if "rotated" in ra else "b")
    loser = tmp_path / ("b" if winner.name == "a" else "a")
    shutil.copy2(winner / "keyring.ksk", loser / "keyring.ksk")
    rec = bytes.fromhex(str(rotated[0]["record"]))
    quorum = list(shares.values())
    with Keyring.open(winner).unseal(quorum) as w, Keyring.open(loser).unseal(quorum) as lo:
        for u in (w, lo):
            assert u.status().current_kek == 2
            assert u.decrypt(rec, subject="s/new") == b"after"
        other = lo.encrypt(b"from the other host", subject="s/other")
        assert w.decrypt(other, subject="s/other") == b"from the other host"


def test_the_store_refuses_a_version_that_is_not_newer(tmp_path: Path, store_url: str) -> None:
    kr, _ = Keyring.create(tmp_path / "kr", 2, NAMES, store_url=store_url)
    store = open_store(store_url, keyring_id=kr.keyring_id, home=kr.path)
    try:
        assert store.set_current_kek(2).current_kek == 2
        with pytest.raises(KeyringError, match="another process rotated"):
            store.set_current_kek(2)  # before: accepted again
        with pytest.raises(KeyringError):
            store.set_current_kek(1)
        assert store.state().current_kek == 2
    finally:
        store.close()
