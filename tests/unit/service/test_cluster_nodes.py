"""The key cluster end to end (issue 20's Done-when), with real processes.

One module-scoped fixture builds the issue's scenario once: three node keyrings (each
``keysplit init nX -k 2 -c nXa -c nXb --plain-shares``) served by ``keysplit serve`` on
their own Unix sockets, each unsealed remotely by its two custodians, ``keysplit cluster
create cl --threshold 2 --region in``, a token created on n1 and added to n2 and n3. The
tests then run in file order over that one cluster (they stop and restart nodes), every
wait bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from node_proxy import LyingProxy
from service_helpers import Server, cli, make_keyring, make_token, share_file, start_node
from test_cluster_cache import close_with_a_call_racing

import keysplit
from keysplit import ClusterClient, ClusterError, IntegrityError, Keyring
from keysplit.custody import load_share
from keysplit.keyring import DataKeys
from keysplit.service import Client
from keysplit.service import _wire as wire
from keysplit.service.cluster_config import read_cluster

pytest.importorskip("rbcl")
pytestmark = pytest.mark.slow

NODES = ("n1", "n2", "n3")


@dataclass
class Cluster:
    tmp: Path
    sockdir: Path
    servers: dict[str, Server]
    token: str

    @property
    def dir(self) -> Path:
        return self.tmp / "cl"

    def shares(self, node: str) -> list[Path]:
        return [share_file(self.tmp / f"{node}-shares", f"{node}{c}") for c in "ab"]

    def start(self, node: str) -> None:
        """Start a stopped node and unseal it (its custodians' shares, over the socket)."""
        srv = self.servers[node]
        if srv.proc is None or srv.proc.poll() is not None:
            srv.start()
        c = Client(srv.url)
        kid = Keyring.open(srv.directory).keyring_id
        for p in self.shares(node):
            offer = c.unseal_offer()
            if not offer.get("sealed", True):
                break
            c.submit_share(load_share(p.read_bytes()), offer, keyring_id=kid)
        assert c.service_status()["sealed"] is False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    sockdir = Path(tempfile.mkdtemp(prefix="kc", dir="/tmp"))
    servers: dict[str, Server] = {}
    try:
        for n in NODES:
            servers[n] = start_node(tmp, n, sockdir / f"{n}.sock")
        args = ["cluster", "create", "cl", "--threshold", "2", "--region", "in"]
        for n in NODES:
            args += ["--node", f"{n}={servers[n].url}"]
        r = cli(*args, cwd=tmp)
        assert r.returncode == 0, r.stderr
        cl = Cluster(tmp, sockdir, servers, "")
        cl.token = make_token(tmp, tmp / "n1", "app", "datakey", "contacts/", cl.shares("n1"))
        (tmp / "token").write_text(cl.token)
        for n in ("n2", "n3"):
            r = cli(
                "token",
                "add",
                n,
                "--name",
                "app",
                "--token-file",
                "token",
                "--allow",
                "datakey",
                "--subject-prefix",
                "contacts/",
                *_share_args(cl.shares(n)),
                cwd=tmp,
            )
            assert r.returncode == 0, r.stderr
        yield cl
    finally:
        for s in servers.values():
            if s.proc is not None and s.proc.poll() is None:
                s.stop()
        shutil.rmtree(sockdir, ignore_errors=True)


def _share_args(paths: list[Path]) -> list[str]:
    out: list[str] = []
    for p in paths:
        out += ["--share", str(p)]
    return out


RECORDS: list[tuple[str, bytes, bytes]] = []  # (subject, record, plaintext)
FIRST: dict[str, bytes] = {}


def test_round_trip_and_cluster_json(cluster: Cluster) -> None:
    cfg = read_cluster(cluster.dir)
    assert cfg.region == "in" and cfg.threshold == 2 and [n.name for n in cfg.nodes] == list(NODES)
    with ClusterClient(cluster.dir, token=cluster.token) as c:
        assert isinstance(c.datakeys, DataKeys)  # the one key seam, under the one engine
        rec = c.encrypt(b"x", subject="contacts/1")
        assert c.decrypt(rec, subject="contacts/1") == b"x"
        subjects = [f"contacts/{i % 5}" for i in range(20)]
        recs = c.encrypt_many(subjects, [str(i).encode() for i in range(20)])
        assert c.decrypt_many(subjects, recs) == [str(i).encode() for i in range(20)]
        FIRST["contacts/1"] = rec
        RECORDS.append(("contacts/1", rec, b"x"))
        pairs = enumerate(zip(subjects, recs, strict=True))
        RECORDS.extend((s, r, str(i).encode()) for i, (s, r) in pairs)
        with pytest.raises(keysplit.PermissionDenied):
            c.encrypt(b"x", subject="mail/1")
        with pytest.raises(ClusterError, match="region"):
            ClusterClient(cluster.dir, token=cluster.token, region="eu")
    # each node audited the evaluations: token, count, subjects
    log = Keyring.open(cluster.tmp / "n1").audit_log()
    evals = [e for e in log.entries() if e.event == "cluster-eval"]
    assert evals and evals[0].data["token"] == "app" and "contacts/1" in evals[0].data["subjects"]


def test_a_shredded_accented_subject_is_shredded_and_costs_no_node(cluster: Cluster) -> None:
    """(red team) Decrypting a shredded non-ASCII subject's record asks the nodes for the
    tombstone tags of its spellings, with proofs; the client hashed the NFD spelling as
    given while each node hashes the NFC one, so every honest node's proof failed: both
    were excluded for good (the client refused every later call) and the record read as
    NoDataKeyError."""
    subject = "contacts/Jos\u00e9"
    with ClusterClient(cluster.dir, token=cluster.token) as c:
        rec = c.encrypt(b"gone", subject=subject)
        assert c.shred(subject) is True
        with pytest.raises(keysplit.ShreddedError):
            c.decrypt(rec, subject=subject)
        assert c.datakeys.excluded == {}
        assert c.decrypt(c.encrypt(b"y", subject="contacts/2"), subject="contacts/2") == b"y"


def test_an_old_record_of_a_shredded_then_reused_subject_is_shredded(cluster: Cluster) -> None:
    """A subject shredded and then used again has a new key; its records from before the
    shred read as ShreddedError, as in UnsealedKeyring (the cluster client said
    IntegrityError: it asked whether a key exists before asking for a tombstone)."""
    subject = "contacts/reused"
    with ClusterClient(cluster.dir, token=cluster.token) as c:
        old = c.encrypt(b"before", subject=subject)
        assert c.shred(subject) is True
        new = c.encrypt(b"after", subject=subject)
        with pytest.raises(keysplit.ShreddedError):
            c.decrypt(old, subject=subject)
        with pytest.raises(keysplit.ShreddedError):
            c.decrypt_many([subject], [old])
        assert c.decrypt(new, subject=subject) == b"after"
        tampered = bytearray(new)
        tampered[-1] ^= 1
        with pytest.raises(keysplit.IntegrityError):
            c.decrypt(bytes(tampered), subject=subject)
        assert c.shred(subject) is True  # the module's later tests count the stored keys


HOLDER = textwrap.dedent(
    """
    import json, sys
    from keysplit import ClusterClient
    c = ClusterClient(sys.argv[1], token=sys.stdin.readline().strip(), cache_max_age=3600)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "quit":
            break
        try:
            out = c.decrypt(bytes.fromhex(req["record"]), subject=req["subject"]).hex()
            print(json.dumps({"ok": out}), flush=True)
        except Exception as exc:
            print(json.dumps({"error": type(exc).__name__}), flush=True)
    c.close()
    """
)


def test_shred_reaches_a_caching_client_in_another_process(cluster: Cluster) -> None:
    """A backend process caches data keys (ClusterClient(cache_max_age=1 h)); a shred from
    another process (a library ClusterClient, then ``keysplit cluster shred --wait``) makes
    it raise ShreddedError within the fleet bound, while other subjects stay cached;
    ``--wait`` counts it among the holders."""
    with ClusterClient(cluster.dir, token=cluster.token) as c:
        recs = {s: c.encrypt(s.encode(), subject=s) for s in ("contacts/v1", "contacts/v2")}
        recs["contacts/kept"] = c.encrypt(b"kept", subject="contacts/kept")
    RECORDS.append(("contacts/kept", recs["contacts/kept"], b"kept"))  # checked from here on
    env = {**os.environ, "KEYSPLIT_POLL": "0.1", "KEYSPLIT_LEASE_TTL": "5"}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(cluster.dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None

    def decrypt(subject: str) -> dict[str, str]:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps({"op": "decrypt", "subject": subject,
                                     "record": recs[subject].hex()}) + "\n")  # fmt: skip
        proc.stdin.flush()
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else "the holder died"
        got: dict[str, str] = json.loads(line)
        return got

    try:
        proc.stdin.write(cluster.token + "\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline()) == {"ready": True}
        for s in recs:  # now cached in the holder
            assert decrypt(s) == {"ok": s.encode().hex() if s != "contacts/kept" else b"kept".hex()}
        with ClusterClient(cluster.dir, token=cluster.token) as other:
            assert other.shred("contacts/v1") is True
            with pytest.raises(keysplit.ShreddedError):
                other.decrypt(recs["contacts/v1"], subject="contacts/v1")
        deadline = time.monotonic() + 30  # the bound: the poll (0.1 s) plus this machine's load
        while decrypt("contacts/v1") != {"error": "ShreddedError"}:
            assert time.monotonic() < deadline, "the holder kept the shredded key"
            time.sleep(0.05)
        r = cli("cluster", "shred", "cl", "contacts/v2", "--token-file", "token", "--yes",
                "--wait", "30", "--json", cwd=cluster.tmp)  # fmt: skip
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["shredded"] is True and doc["holders"] >= 1 and doc["not_acknowledged"] == []
        assert decrypt("contacts/v2") == {"error": "ShreddedError"}  # acknowledged = dropped
        assert decrypt("contacts/kept") == {"ok": b"kept".hex()}
        r = cli("cluster", "shred", "cl", "contacts/v2", "--token-file", "token", "--yes",
                cwd=cluster.tmp)  # fmt: skip
        assert r.returncode == 3 and "nothing was shredded" in r.stderr
    finally:
        with contextlib.suppress(OSError, ValueError):
            proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            proc.stdin.flush()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_no_key_is_served_after_close(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race of b3fb1fd (LocalDataKeys) in the cluster client, with nodes up: a call
    from another thread while ``close`` closes the node connections found the lease ended
    by the close, renewed it, reconnected to the nodes and cached the key, which later
    calls were served after close had returned. Now that call says "closed", and so does
    every call after close (test_cluster_cache.py has the cheap cases)."""
    monkeypatch.setenv("KEYSPLIT_POLL", "0.1")
    monkeypatch.setenv("KEYSPLIT_LEASE_TTL", "5")
    c = ClusterClient(cluster.dir, token=cluster.token, cache_max_age=3600)
    rec = c.encrypt(b"hot", subject="contacts/race")  # the key is cached now
    RECORDS.append(("contacts/race", rec, b"hot"))  # checked from here on
    got = close_with_a_call_racing(c, lambda: c.decrypt(rec, subject="contacts/race"))
    served = []
    for _ in range(2):
        with contextlib.suppress(keysplit.KeyringError):
            served.append(c.decrypt(rec, subject="contacts/race"))
    assert served == [], "a key was served after close returned"
    assert isinstance(got, keysplit.KeyringError) and "closed" in str(got), got
    assert c.datakeys.member is not None and not c.datakeys.member.valid()
    with ClusterClient(cluster.dir, token=cluster.token) as other:
        assert other.datakeys.store.leases() == []  # the closed client holds no lease
        assert other.decrypt(rec, subject="contacts/race") == b"hot"


def _check_records(c: ClusterClient) -> None:
    subjects, recs, pts = zip(*RECORDS, strict=True)
    assert c.decrypt_many(subjects, recs) == list(pts)
    assert c.decrypt(recs[0], subject=subjects[0]) == pts[0]


def _cluster_via(cluster: Cluster, liars: dict[str, Path], name: str) -> Path:
    """A copy of ``cl`` whose named nodes are reached through the given proxy sockets."""
    d = cluster.tmp / name
    shutil.copytree(cluster.dir, d)
    cfg = read_cluster(d)
    nodes = tuple(
        n if n.name not in liars else type(n)(**{**n.as_dict(), "url": f"unix:{liars[n.name]}"})
        for n in cfg.nodes
    )
    (d / "cluster.json").unlink()
    store = f"sqlite://{cluster.dir / 'cluster-keys.sqlite'}"  # the one store of cl
    type(cfg)(**{**cfg.__dict__, "nodes": nodes, "store": store}).write(d)
    return d


def test_lying_node_is_named_and_never_yields_a_wrong_key(cluster: Cluster) -> None:
    p1 = LyingProxy(cluster.servers["n1"].sock, cluster.sockdir / "lie1.sock")
    p2 = LyingProxy(cluster.servers["n2"].sock, cluster.sockdir / "lie2.sock")
    try:
        d = _cluster_via(cluster, {"n1": p1.path}, "cl-lie1")
        with ClusterClient(d, token=cluster.token) as c:
            # an existing key: the unwrap fails, proofs name n1, n2+n3 answer instead
            assert c.decrypt(FIRST["contacts/1"], subject="contacts/1") == b"x"
            assert list(c.datakeys.excluded) == ["n1"]
            assert "DLEQ" in c.datakeys.excluded["n1"]
        with ClusterClient(d, token=cluster.token) as c:
            # a new key is only ever wrapped under a proven KEK
            rec = c.encrypt(b"new", subject="contacts/new-under-liar")
            assert list(c.datakeys.excluded) == ["n1"]
        with ClusterClient(cluster.dir, token=cluster.token) as honest:
            assert honest.decrypt(rec, subject="contacts/new-under-liar") == b"new"
            RECORDS.append(("contacts/new-under-liar", rec, b"new"))
        d2 = _cluster_via(cluster, {"n1": p1.path, "n2": p2.path}, "cl-lie2")
        with ClusterClient(d2, token=cluster.token) as c:
            with pytest.raises(ClusterError) as ei:
                c.decrypt(FIRST["contacts/1"], subject="contacts/1")
            assert "n1: wrong answer" in str(ei.value) and "n2: wrong answer" in str(ei.value)
            with pytest.raises(ClusterError):
                c.encrypt(b"y", subject="contacts/never")
            assert c.datakeys.store.get_many(["contacts/never"]) == {}
    finally:
        p1.close()
        p2.close()


def test_one_node_alone_cannot_derive_a_kek(cluster: Cluster) -> None:
    """n1's directory, shares and unsealed keyring give its share s1, and s1 alone (with or
    without any Lagrange coefficient) derives no subject's KEK; no file holds s1 in clear."""
    from keysplit.hazmat import keywrap
    from keysplit.hazmat.ristretto import Point, Scalar
    from keysplit.service import _cluster_math as cm
    from keysplit.service.cluster_node import ClusterNode
    from keysplit.service.core import Response

    n1 = cluster.tmp / "n1"
    kr = Keyring.open(n1)
    cfg = read_cluster(cluster.dir)
    shares = [load_share(p.read_bytes()) for p in cluster.shares("n1")]
    with kr.unseal(shares) as ukr:

        class _Svc:
            directory = n1
            keyring = kr
            _kr = ukr

        node = ClusterNode(_Svc(), Response)  # type: ignore[arg-type]
        ncfg, index = node._config(cfg.cluster_id)
        s1 = node._share(ncfg, index, ukr)
    assert cm.base_point(s1).hex() == cfg.node("n1").public_share
    row = cfg_store_row(cluster, "contacts/1")
    point = cm.point_for(cfg.cluster_id, cfg.region, "contacts/1", cfg.kek_version)
    for coefficient in [Scalar.one(), *cm.lagrange([1, 2]).values(), *cm.lagrange([1, 3]).values()]:
        (out,) = cm.evaluate(s1, coefficient, [point])
        kek = cm.derive_kek(Point.from_bytes(out), cfg.cluster_id, "contacts/1", cfg.kek_version)
        with pytest.raises(IntegrityError):
            keywrap.unwrap(kek, row)
    # control: the KEK T nodes give together does open the row
    with ClusterClient(cluster.dir, token=cluster.token) as c:
        (kek,) = c.datakeys._keks(["contacts/1"], proof=True)
    assert len(keywrap.unwrap(kek, row)) == 16
    for d in (n1, cluster.dir, cluster.tmp / "n1-shares"):
        for f in d.rglob("*"):
            if f.is_file():
                data = f.read_bytes()
                raw = s1.to_bytes()
                assert raw not in data and raw.hex().encode() not in data, f


def cfg_store_row(cluster: Cluster, subject: str) -> bytes:
    with ClusterClient(cluster.dir, token=cluster.token) as c:
        return c.datakeys.store.get_many([subject])[subject].wrapped


def test_region_pinning(cluster: Cluster) -> None:
    t = cluster.tmp
    r = cli(
        "cluster",
        "create",
        "cl-eu",
        "--threshold",
        "2",
        "--region",
        "eu",
        "--node",
        f"n1={cluster.servers['n1'].url}",
        "--node",
        f"n2={cluster.servers['n2'].url}",
        cwd=t,
    )
    assert r.returncode == 1 and "n1" in r.stderr and "'in'" in r.stderr and "'eu'" in r.stderr
    assert "Traceback" not in r.stderr and not (t / "cl-eu" / "cluster.json").exists()
    # a token pinned to region eu is refused by the region-in node n2
    eu = make_token(t, t / "n1", "eu-app", "datakey", "contacts/", cluster.shares("n1"))
    (t / "eu-token").write_text(eu)
    r = cli(
        "token",
        "add",
        "n2",
        "--name",
        "eu-app",
        "--token-file",
        "eu-token",
        "--allow",
        "datakey",
        "--subject-prefix",
        "contacts/",
        "--region",
        "eu",
        *_share_args(cluster.shares("n2")),
        cwd=t,
    )
    assert r.returncode == 0, r.stderr
    with ClusterClient(cluster.dir, token=eu) as c, pytest.raises(ClusterError) as ei:
        c.encrypt(b"x", subject="contacts/eu")
    msg = str(ei.value)
    assert "n2" in msg and "region 'eu'" in msg and "n3: does not know this token" in msg


def test_down_nodes(cluster: Cluster) -> None:
    cluster.servers["n2"].stop()
    with ClusterClient(cluster.dir, token=cluster.token) as c:
        rec = c.encrypt(b"while n2 is down", subject="contacts/2")
        assert c.decrypt(rec, subject="contacts/2") == b"while n2 is down"
        RECORDS.append(("contacts/2", rec, b"while n2 is down"))
        _check_records(c)
        cluster.servers["n3"].stop()
        with pytest.raises(ClusterError) as ei:
            c.decrypt(rec, subject="contacts/2")
        msg = str(ei.value)
        assert "n2: cannot reach" in msg and "n3: cannot reach" in msg and "n1:" not in msg
    r = cli("cluster", "status", "cl", cwd=cluster.tmp)
    assert r.returncode == 1 and "unreachable" in r.stdout


def test_restart_unseal_refresh(cluster: Cluster) -> None:
    cluster.servers["n1"].stop()
    for n in NODES:
        cluster.start(n)
    with ClusterClient(cluster.dir, token=cluster.token) as c:
        _check_records(c)
    before = read_cluster(cluster.dir)
    running = ClusterClient(cluster.dir, token=cluster.token)  # a backend that stays up
    assert running.decrypt(FIRST["contacts/1"], subject="contacts/1") == b"x"
    r = cli("cluster", "refresh", "cl", cwd=cluster.tmp)
    assert r.returncode == 0, r.stderr
    after = read_cluster(cluster.dir)
    assert after.epoch == before.epoch + 1 and after.public_key == before.public_key
    pairs = zip(after.nodes, before.nodes, strict=True)
    assert all(a.public_share != b.public_share for a, b in pairs)
    r = cli("cluster", "status", "cl", "--json", cwd=cluster.tmp)
    assert r.returncode == 0 and '"commitments_ok": true' in r.stdout, r.stdout
    with ClusterClient(cluster.dir, token=cluster.token) as c:
        _check_records(c)
    with running:  # it follows the new epoch in cluster.json without a restart
        _check_records(running)
        assert running.config.epoch == after.epoch
    # the old description (epoch before) is refused by every node: old shares are gone
    stale = cluster.tmp / "cl-stale"
    stale.mkdir()
    type(before)(
        **{**before.__dict__, "store": f"sqlite://{cluster.dir / 'cluster-keys.sqlite'}"}
    ).write(stale)
    with (
        ClusterClient(stale, token=cluster.token) as c,
        pytest.raises(ClusterError, match="epoch"),
    ):
        c.decrypt(FIRST["contacts/1"], subject="contacts/1")
    for n in NODES:
        cluster.servers[n].stop()
        cluster.start(n)
    with ClusterClient(cluster.dir, token=cluster.token) as c:
        _check_records(c)


def _own_records(cluster: Cluster, name: str, n: int) -> tuple[list[str], list[bytes], list[bytes]]:
    """Every node started (whatever the tests before left stopped) and ``n`` records of
    the subjects ``contacts/NAME-i`` written: (subjects, plaintexts, records)."""
    for node in NODES:
        cluster.start(node)
    mine = [f"contacts/{name}-{i}" for i in range(n)]
    plain = [s.encode() for s in mine]
    with ClusterClient(cluster.dir, token=cluster.token) as c:
        return mine, plain, c.encrypt_many(mine, plain)


def test_rotate_to_a_new_cluster_key(cluster: Cluster) -> None:
    """A second DKG among the same nodes makes cl2 (another key); every wrapped key moves to
    it (the records stay as they are) and opens there; running it again moves nothing.

    (cluster7) Self-contained: it needed the module's earlier tests (their records, and
    ``contacts/1`` in the store); alone it failed. It now starts every node, writes its own
    records and counts the keys in cl's store, and checks the earlier tests' records too."""
    t = cluster.tmp
    mine, plain, recs = _own_records(cluster, "rot", 4)
    with ClusterClient(cluster.dir, token=cluster.token) as c:
        before = c.datakeys.store.get_many(mine)
        keys = sum(c.datakeys.store.count_by_version().values())
    assert keys >= len(mine)
    args = ["cluster", "create", "cl2", "--threshold", "2", "--region", "in"]
    for n in NODES:
        args += ["--node", f"{n}={cluster.servers[n].url}"]
    r = cli(*args, cwd=t)
    assert r.returncode == 0, r.stderr
    assert read_cluster(t / "cl2").public_key != read_cluster(cluster.dir).public_key
    r = cli("cluster", "rotate", "cl", "cl2", "--token-file", "token", "--batch-size", "3", cwd=t)
    assert r.returncode == 0, r.stderr
    assert f"{keys} data keys rewrapped" in r.stderr
    with ClusterClient(t / "cl2", token=cluster.token) as c:
        assert c.decrypt_many(mine, recs) == plain
        if RECORDS:  # the module's earlier tests' records (when they ran)
            _check_records(c)
        after = c.datakeys.store.get_many(mine)
        assert all(after[s].wrapped != before[s].wrapped for s in mine)
    r = cli("cluster", "rotate", "cl", "cl2", "--token-file", "token", cwd=t)
    assert r.returncode == 0 and "0 data keys rewrapped" in r.stderr, r.stderr


def test_replace_a_lost_node(cluster: Cluster) -> None:
    """n2 is lost for good; a fresh keyring n4 takes its place from n1 and n3 (share
    recovery), and then carries the cluster with n3 while n1 is down: records still open.

    (cluster7) Self-contained: it checked only the module's earlier tests' records, and
    alone failed on none. It now starts every node, writes its own records and checks
    the earlier tests' records too when they ran."""
    t = cluster.tmp
    mine, plain, recs = _own_records(cluster, "repl", 3)
    make_keyring(t, 2, ["n4a", "n4b"], dirname="n4")
    srv = Server(t / "n4", cluster.sockdir / "n4.sock")
    cluster.servers["n4"] = srv
    cluster.start("n4")
    cluster.servers["n2"].stop()
    shutil.rmtree(t / "n2")
    before = read_cluster(cluster.dir)
    r = cli("cluster", "replace", "cl", f"n2={srv.url}", cwd=t)
    assert r.returncode == 0, r.stderr
    after = read_cluster(cluster.dir)
    assert after.node("n2").url == srv.url
    assert after.node("n2").keyring_id == Keyring.open(t / "n4").keyring_id
    assert after.commitments == before.commitments and after.public_key == before.public_key
    assert [n.public_share for n in after.nodes] == [n.public_share for n in before.nodes]
    r = cli(
        "token", "add", "n4", "--name", "app", "--token-file", "token", "--allow", "datakey",
        "--subject-prefix", "contacts/",
        *_share_args([share_file(t / "n4-shares", f"n4{c}") for c in "ab"]), cwd=t,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    cluster.servers["n1"].stop()
    with ClusterClient(cluster.dir, token=cluster.token) as c:
        assert c.decrypt_many(mine, recs) == plain
        if RECORDS:  # the module's earlier tests' records (when they ran)
            _check_records(c)
        assert c.datakeys.excluded == {}
    r = cli("cluster", "status", "cl", cwd=t)
    assert "n2" in r.stdout and "share=ok" in r.stdout
    # the new node kept its share sealed: nothing in its directory holds it in clear
    assert (t / "n4" / "cluster" / f"{after.cluster_id}.share").stat().st_mode & 0o077 == 0


def test_a_node_answer_to_a_full_batch_of_short_subjects_fits_the_client_bound() -> None:
    """A ClusterClient sent every subject of a call in one request per node: above 65,535
    subjects with proofs (every create) the node refused it (a DLEQ proof covers at most
    65,535 pairs), and a node's honest answer (40 bytes per subject and the proof) outgrew
    the client's response bound (1 MiB + the request's size) for short subjects. Now a call
    is split in batches of ``EVAL_BATCH``: the largest answer to the shortest subjects fits
    (fails for a batch of 65,535: 2.6 MB against 1.6 MB)."""
    from keysplit.cluster import dprf
    from keysplit.service import cluster_client as cc

    n = cc.EVAL_BATCH
    assert 0 < n <= dprf.MAX_BATCH
    head = {"cluster_id": "c" * 64, "region": "r", "epoch": 1, "version": 1,
            "indices": [1, 2], "proof": True}  # fmt: skip
    request = wire.encode_frame(head, [None] * n, ["a"] * n)
    answer = wire.encode_frame(
        {"index": 255, "epoch": 2**53, "proof": "00" * dprf.PROOF_SIZE}, [bytes(32)] * n
    )
    assert len(answer) <= wire.response_limit(len(request), 0)


def test_a_call_larger_than_a_batch_is_split_and_keeps_its_order(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(Last: its keys would count in the rotation above.) With the batch made small, a
    call of 2.6 batches goes to each node in requests of at most a batch, and every subject
    gets its own key back (the same one it gets asked alone). The process test of 90,000
    subjects this replaces cost 80 s of CI; the bound it checked is the test above."""
    from keysplit.service import cluster_client as cc

    monkeypatch.setattr(cc, "EVAL_BATCH", 50)
    sizes: list[int] = []
    ask = cc.ClusterDataKeys._ask

    def counted(
        self: object, cfg: object, node: object, subjects: list[str], *a: object
    ) -> list[bytes]:
        sizes.append(len(subjects))
        return ask(self, cfg, node, subjects, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(cc.ClusterDataKeys, "_ask", counted)
    subjects = [f"contacts/split-{i:x}" for i in range(130)]
    with ClusterClient(cluster.dir, token=cluster.token) as c:
        keys = c.datakeys.export(subjects, create=True)
        assert len(keys) == len(subjects) and all(k is not None and len(k) == 16 for k in keys)
        assert len(set(keys)) == len(keys)
        assert set(sizes) == {50, 30}  # 130 = 50 + 50 + 30, to each of T nodes
        for i in (0, 49, 50, 99, 100, 129):  # each side of each batch boundary
            assert c.datakeys.export([subjects[i]], create=False) == [keys[i]]
        assert c.datakeys.excluded == {}
