"""Issue 19's Done-when scenario with real processes, on SQLite and on a throwaway
PostgreSQL: ``keysplit serve`` unsealed, a second Python process holding the keyring
unsealed, and the CLI shredding, rotating, rewrapping and retiring between their writes.

Every wait is bounded; the poll interval is lowered (KEYSPLIT_POLL) so the test is quick,
but nothing relies on timing: ``shred --wait`` reports when both holders acknowledged.

The ``shred``, ``rotate``, ``rewrap`` and ``retire`` run between the holders' writes are
``keysplit`` processes; the set-up and read-back commands around them (init, token, unseal,
status, audit verify, the refused shred, the rotation after both holders stopped) run in
this process (:func:`cli_here`: the same command on the same files and sockets, without a
start of 1.3 s of CPU each).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from service_helpers import TIMEOUT, Server, cli, cli_here, make_token, share_file

from keysplit import Client, Keyring, ShreddedError
from keysplit.store import open_store

pytestmark = pytest.mark.slow

HOLDER = textwrap.dedent(
    """
    import json, sys
    from keysplit import Keyring, load_share
    kr = Keyring.open(sys.argv[1])
    ku = kr.unseal([load_share(open(p, "rb").read()) for p in sys.argv[2:]])
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "quit":
            break
        try:
            if req["op"] == "encrypt":
                out = ku.encrypt(bytes.fromhex(req["data"]), subject=req["subject"]).hex()
            else:
                out = ku.decrypt(bytes.fromhex(req["record"]), subject=req["subject"]).hex()
            print(json.dumps({"ok": out}), flush=True)
        except Exception as exc:
            print(json.dumps({"error": type(exc).__name__, "message": str(exc)}), flush=True)
    ku.close()
    """
)

FRESH = textwrap.dedent(
    """
    import json, sys
    from keysplit import Keyring, ShreddedError, load_share
    kr = Keyring.open(sys.argv[1])
    doc = json.loads(sys.stdin.read())
    with kr.unseal([load_share(open(p, "rb").read()) for p in sys.argv[2:]]) as ku:
        for s, (rec, pt) in doc["kept"].items():
            assert ku.decrypt(bytes.fromhex(rec), subject=s) == bytes.fromhex(pt), s
        for s, rec in doc["shredded"].items():
            try:
                ku.decrypt(bytes.fromhex(rec), subject=s)
            except ShreddedError:
                continue
            raise AssertionError(f"{s} still decrypts")
    print("ok")
    """
)


class Holder:
    """The second process: ``Keyring.open(kr).unseal(shares)`` serving JSON lines."""

    def __init__(self, cwd: Path, kr: Path, shares: list[Path]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(kr), *map(str, shares)],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.read() == {"ready": True}

    def read(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read() if self.proc.stderr else "holder died"
        return json.loads(line)

    def ask(self, **req: str) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def encrypt(self, subject: str, data: bytes) -> bytes:
        got = self.ask(op="encrypt", subject=subject, data=data.hex())
        assert "ok" in got, got
        return bytes.fromhex(got["ok"])

    def decrypt(self, subject: str, record: bytes) -> dict[str, str]:
        got: dict[str, str] = self.ask(op="decrypt", subject=subject, record=record.hex())
        return got

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(AssertionError, OSError, ValueError):
                self.ask(op="quit")
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    server = request.getfixturevalue("pg_server")
    return f"{server.url}&schema=f_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def sockdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ksf", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_one_keyring_many_processes(
    tmp_path: Path, sockdir: Path, store_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYSPLIT_POLL", "0.2")  # inherited by every child process
    init = ["init", "kr", "-k", "2", "-c", "a", "-c", "b", "--plain-shares"]
    r = cli_here(*init, *(["--store", store_url] if store_url else []), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    kr = tmp_path / "kr"
    shares = [share_file(tmp_path / "kr-shares", n) for n in "ab"]
    quorum = [x for s in shares for x in ("--share", str(s))]
    token = make_token(tmp_path, kr, "app", "encrypt,decrypt", "u/", shares)
    kept: dict[str, tuple[bytes, bytes]] = {}
    shredded: dict[str, bytes] = {}
    srv = Server(kr, sockdir / "s.sock").start()
    holder: Holder | None = None
    try:
        for s in shares:
            r = cli_here("unseal", kr, "--server", srv.url, "--share", s, cwd=tmp_path)
            assert r.returncode == 0, r.stderr
        holder = Holder(tmp_path, kr, shares)
        c = Client(srv.url, token=token)
        served_by = c.service_status()["workers"]  # each process of the service holds a lease
        for s in ("u/s-victim", "u/s-keep"):
            kept[s] = (c.encrypt(s.encode(), subject=s), s.encode())
        for s in ("u/p-victim", "u/p-keep"):
            kept[s] = (holder.encrypt(s, s.encode()), s.encode())
        # each holder has used (and caches) both victims' keys
        assert c.decrypt(kept["u/p-victim"][0], subject="u/p-victim") == b"u/p-victim"
        assert holder.decrypt("u/s-victim", kept["u/s-victim"][0]) == {"ok": b"u/s-victim".hex()}

        for victim in ("u/s-victim", "u/p-victim"):
            r = cli("shred", kr, victim, "--yes", "--wait", "60", "--json", *quorum, cwd=tmp_path)
            assert r.returncode == 0, r.stderr
            doc = json.loads(r.stdout)
            assert doc["shredded"] and doc["holders"] == 1 + served_by
            assert doc["not_acknowledged"] == []
            shredded[victim] = kept.pop(victim)[0]
        r = cli_here("shred", kr, "u/never-was", "--yes", *quorum, cwd=tmp_path)
        assert r.returncode == 3 and "no data key" in r.stderr

        for victim, rec in shredded.items():  # acknowledged: both dropped the keys
            with pytest.raises(ShreddedError):
                c.decrypt(rec, subject=victim)
            assert holder.decrypt(victim, rec)["error"] == "ShreddedError"

        r = cli("rotate", kr, *quorum, cwd=tmp_path)
        assert r.returncode == 0 and r.stdout.strip() == "2", r.stderr
        # both write between the rotate and the rewrap: under v2, never v1
        kept["u/s-mid"] = (c.encrypt(b"mid", subject="u/s-mid"), b"mid")
        kept["u/p-mid"] = (holder.encrypt("u/p-mid", b"mid"), b"mid")
        r = cli("rewrap", kr, *quorum, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + TIMEOUT
        while True:  # refused only while a live holder still writes under v1 (named)
            r = cli("retire", kr, "1", *quorum, cwd=tmp_path)
            if r.returncode == 0:
                break
            assert "still the current KEK of a live process" in r.stderr and "pid" in r.stderr
            assert time.monotonic() < deadline, r.stderr
            time.sleep(0.5)

        for i in range(3):  # both processes write new subjects after the retire
            s, p = f"u/s-new-{i}", f"u/p-new-{i}"
            kept[s] = (c.encrypt(s.encode(), subject=s), s.encode())
            kept[p] = (holder.encrypt(p, p.encode()), p.encode())
        for s, (rec, pt) in kept.items():
            assert c.decrypt(rec, subject=s) == pt
            assert holder.decrypt(s, rec) == {"ok": pt.hex()}

        r = cli_here("status", kr, "--json", cwd=tmp_path)
        doc = json.loads(r.stdout)
        assert doc["fleet"]["retired"] == [1] and doc["fleet"]["current_kek"] == 2
        assert sorted(x["role"] for x in doc["leases"]) == ["library"] + ["serve"] * served_by
        assert {x["current_kek"] for x in doc["leases"]} == {2}
        store = open_store(store_url, keyring_id=Keyring.open(kr).keyring_id, home=kr)
        try:
            assert set(store.count_by_version()) == {2}
        finally:
            store.close()
    finally:
        if holder is not None:
            holder.close()
        srv.stop()

    # restart: every record written at any point decrypts, from the restarted service
    # and from a fresh process; the shredded stay shredded
    with Server(kr, sockdir / "s.sock") as srv2:
        for s in shares:
            r = cli_here("unseal", kr, "--server", srv2.url, "--share", s, cwd=tmp_path)
            assert r.returncode == 0, r.stderr
        c = Client(srv2.url, token=token)
        for s, (rec, pt) in kept.items():
            assert c.decrypt(rec, subject=s) == pt
        for s, rec in shredded.items():
            with pytest.raises(ShreddedError):
                c.decrypt(rec, subject=s)
    doc = {
        "kept": {s: (rec.hex(), pt.hex()) for s, (rec, pt) in kept.items()},
        "shredded": {s: rec.hex() for s, rec in shredded.items()},
    }
    fresh = subprocess.run(
        [sys.executable, "-c", FRESH, str(kr), *map(str, shares)],
        input=json.dumps(doc), capture_output=True, text=True, cwd=tmp_path, timeout=TIMEOUT,
    )  # fmt: skip
    assert fresh.returncode == 0 and fresh.stdout.strip() == "ok", fresh.stderr

    r = cli_here("rotate", kr, *quorum, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "3", r.stderr
    r = cli_here("rewrap", kr, *quorum, "--json", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["remaining"] == 0, r.stderr

    # one audit trail: every shred, rotate, rewrap and retire; the chain verifies (MACs too)
    r = cli_here("audit", "verify", kr, "--json", *quorum, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["mac_verified"] is True
    events = [e.event for e in Keyring.open(kr).audit_log().entries()]
    for name, n in (("shred", 3), ("rotate", 2), ("rewrap", 2), ("retire", 1)):
        assert events.count(name) == n, (name, events)
