"""Red team (issue 23 follow-up): the first record of a new subject, made by two
processes at once on PostgreSQL (a new subject's key is offered in one guarded
``INSERT ... ON CONFLICT DO NOTHING`` round trip, the stored key read back in the same
pipeline) and on SQLite. Both processes must end up sealing under the one key the store
kept: every record either of them wrote opens in a third process afterwards. Single
records (the one-round-trip path), small batches (at most 16 new subjects: insert
first) and large batches (lookup, then bulk insert) race on the same subjects.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from service_helpers import TIMEOUT, cli, share_file

from keysplit import Keyring, load_share

pytestmark = pytest.mark.slow

RACER = textwrap.dedent(
    """
    import json, sys
    from keysplit import Keyring, load_share
    kr = Keyring.open(sys.argv[1])
    ku = kr.unseal([load_share(open(p, "rb").read()) for p in sys.argv[3:]])
    me = sys.argv[2]
    print("ready", flush=True)
    assert sys.stdin.readline().strip() == "go"
    out = {}
    for i in range(60):  # single records: the first record of each subject
        s = f"one/{i}"
        out[s] = [ku.encrypt(f"{me} {s}".encode(), subject=s).hex()]
    for b in range(6):  # small batches: 10 new subjects each
        subs = [f"small/{b}/{i}" for i in range(10)]
        recs = ku.encrypt_many(subs, [f"{me} {s}".encode() for s in subs])
        for s, r in zip(subs, recs):
            out.setdefault(s, []).append(r.hex())
    subs = [f"big/{i}" for i in range(400)]  # one large batch
    recs = ku.encrypt_many(subs, [f"{me} {s}".encode() for s in subs])
    for s, r in zip(subs, recs):
        out.setdefault(s, []).append(r.hex())
    for i in range(60):  # and a second record of each single subject: the cached key
        s = f"one/{i}"
        out[s].append(ku.encrypt(f"{me} {s}".encode(), subject=s).hex())
    ku.close()
    print(json.dumps(out), flush=True)
    """
)


@pytest.fixture(params=["sqlite", "postgres"])
def store_args(request: pytest.FixtureRequest) -> list[str]:
    if request.param == "sqlite":
        return []
    server = request.getfixturevalue("pg_server")
    return ["--store", f"{server.url}&schema=r_{uuid.uuid4().hex[:12]}"]


def test_two_processes_creating_the_same_new_subjects_share_one_key(
    tmp_path: Path, store_args: list[str]
) -> None:
    init = ["init", "kr", "-k", "2", "-c", "a", "-c", "b", "--plain-shares", *store_args]
    r = cli(*init, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    kr = tmp_path / "kr"
    shares = [share_file(tmp_path / "kr-shares", n) for n in "ab"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(kr), name, *map(str, shares)],
            cwd=tmp_path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("p1", "p2")
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready", p.stderr
        for p in procs:  # both start together
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = {}
        for name, p in zip(("p1", "p2"), procs, strict=True):
            out, err = p.communicate(timeout=TIMEOUT)
            assert p.returncode == 0, err
            results[name] = json.loads(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    ku = Keyring.open(kr).unseal([load_share(s.read_bytes()) for s in shares])
    try:
        for name, recs in results.items():
            for subject, hexes in recs.items():
                for h in hexes:
                    got = ku.decrypt(bytes.fromhex(h), subject=subject)
                    assert got == f"{name} {subject}".encode()
        assert sum(ku.status().keys_by_version.values()) == 60 + 60 + 400
    finally:
        ku.close()
