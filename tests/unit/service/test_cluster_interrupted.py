"""Cluster refresh and replace interrupted mid-way (red team), with real node processes.

A 3-of-4 cluster (four ``keysplit serve`` node keyrings, each unsealed by its two
custodians) whose node n3 is reached through a Unix-socket proxy (:mod:`node_proxy`) that
can cut chosen requests: the administrator's ``keysplit cluster refresh`` then dies after some nodes
finished their round and before the others did. The cluster must stay usable with its
``cluster.json`` as it was, and running the command again must finish the job. Every wait
is bounded. The nodes are real ``keysplit serve`` processes and the coordinator that is
killed is a real ``keysplit`` process; the other administrator commands run in this process
(:func:`cli_here`: the same command over the same sockets and files, without a start).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from node_proxy import LyingProxy, NodeProxy
from service_helpers import KEYSPLIT, Server, cli_here, make_token, share_file, start_node

from keysplit import (
    ClusterClient,
    ClusterError,
    Keyring,
    LegalHoldError,
    PermissionDenied,
    ShreddedError,
)
from keysplit.service.cluster_client import ClusterDataKeys
from keysplit.service.cluster_config import ClusterConfig, read_cluster
from keysplit.store import open_store

pytest.importorskip("rbcl")
pytestmark = pytest.mark.slow

NODES = ("n1", "n2", "n3", "n4")


@dataclass
class Cluster:
    tmp: Path
    servers: dict[str, Server]
    proxy: NodeProxy
    token: str = ""
    records: list[tuple[str, bytes, bytes]] = field(default_factory=list)

    @property
    def dir(self) -> Path:
        return self.tmp / "cl"

    def shares(self, node: str) -> list[Path]:
        return [share_file(self.tmp / f"{node}-shares", f"{node}{c}") for c in "ab"]

    def check_records(self) -> None:
        subjects, recs, pts = zip(*self.records, strict=True)
        with ClusterClient(self.dir, token=self.token, timeout=20) as c:
            assert c.decrypt_many(subjects, recs) == list(pts)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    sockdir = Path(tempfile.mkdtemp(prefix="kr", dir="/tmp"))
    servers: dict[str, Server] = {}
    proxy: NodeProxy | None = None
    try:
        for n in NODES:
            servers[n] = start_node(tmp, n, sockdir / f"{n}.sock")
        proxy = NodeProxy(servers["n3"].sock, sockdir / "n3-proxy.sock")
        urls = {n: servers[n].url for n in NODES} | {"n3": proxy.url}
        args = ["cluster", "create", "cl", "--threshold", "3", "--region", "in"]
        for n in NODES:
            args += ["--node", f"{n}={urls[n]}"]
        r = cli_here(*args, cwd=tmp)
        assert r.returncode == 0, r.stderr
        cl = Cluster(tmp, servers, proxy)
        cl.token = make_token(tmp, tmp / "n1", "app", "datakey", "contacts/", cl.shares("n1"))
        (tmp / "token").write_text(cl.token)
        for n in NODES[1:]:
            shares: list[str] = []
            for p in cl.shares(n):
                shares += ["--share", str(p)]
            r = cli_here(
                "token", "add", n, "--name", "app", "--token-file", "token",
                "--allow", "datakey", "--subject-prefix", "contacts/", *shares, cwd=tmp,
            )  # fmt: skip
            assert r.returncode == 0, r.stderr
        with ClusterClient(cl.dir, token=cl.token) as c:
            subjects = [f"contacts/{i}" for i in range(4)]
            plain = [s.encode() for s in subjects]
            cl.records = list(zip(subjects, c.encrypt_many(subjects, plain), plain, strict=True))
        yield cl
    finally:
        if proxy is not None:
            proxy.close()
        for s in servers.values():
            if s.proc is not None and s.proc.poll() is None:
                s.stop()
        shutil.rmtree(sockdir, ignore_errors=True)


def _refresh_cut_at(cluster: Cluster, path: str) -> subprocess.CompletedProcess[str]:
    """``keysplit cluster refresh cl`` with n3's requests to ``path`` cut: it fails with
    one error line."""
    cluster.proxy.cut = {path}
    try:
        r = cli_here("cluster", "refresh", "cl", cwd=cluster.tmp)
    finally:
        cluster.proxy.cut = set()
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) <= 2
    return r


def test_a_refresh_cut_before_every_node_finished_loses_nothing(cluster: Cluster) -> None:
    """(red team) n3's finish is cut: n1 and n2 had finished (they replaced their shares by
    new-epoch ones), n3 and n4 had not. Each node replaced its share as soon as it
    finished, so the old polynomial kept two shares and the new one two, in a 3-of-4
    cluster: the cluster key was gone for good (every record with it), and running the
    refresh again was refused ('node n1 is at epoch 2, not 1'). Now a node keeps serving
    its old share until the administrator commits the new epoch after every node finished:
    the cluster stays usable as cluster.json describes it, and a second run completes."""
    before = read_cluster(cluster.dir)
    _refresh_cut_at(cluster, "/v1/cluster/dkg/finish")
    assert read_cluster(cluster.dir) == before
    cluster.check_records()  # the cluster as cluster.json describes it still works
    r = cli_here("cluster", "refresh", "cl", cwd=cluster.tmp)
    assert r.returncode == 0, r.stderr
    after = read_cluster(cluster.dir)
    assert after.epoch == before.epoch + 1 and after.public_key == before.public_key
    cluster.check_records()
    for n in NODES:  # each node's log says when it dropped its old share
        log = Keyring.open(cluster.tmp / n).audit_log().entries()
        commits = [e.data for e in log if e.event == "cluster-commit"]
        assert commits[-1]["epoch"] == after.epoch and commits[-1]["cluster"] == after.cluster_id
    r = cli_here("cluster", "status", "cl", "--json", cwd=cluster.tmp)
    assert r.returncode == 0 and '"usable": 4' in r.stdout, r.stdout


def _copy(
    cluster: Cluster, cfg: ClusterConfig, name: str, urls: dict[str, str] | None = None
) -> Path:
    """``DIR/cluster.json`` for ``cfg`` (with cl's one store) in ``tmp/NAME``, the named
    nodes reached at other URLs (proxies)."""
    d = cluster.tmp / name
    d.mkdir(exist_ok=True)
    store = f"sqlite://{cluster.dir / 'cluster-keys.sqlite'}"
    nodes = tuple(replace(n, url=(urls or {}).get(n.name, n.url)) for n in cfg.nodes)
    replace(cfg, store=store, nodes=nodes).write(d)
    return d


def test_a_refresh_cut_at_commit_keeps_working_and_old_shares_end(cluster: Cluster) -> None:
    """n3's commit is cut: cluster.json names the new epoch, which n3 serves from its staged
    share; the command says which node still keeps its old share, and a second run
    completes it. After a refresh that succeeded no node answers for the old epoch."""
    before = read_cluster(cluster.dir)
    r = _refresh_cut_at(cluster, "/v1/cluster/dkg/commit")
    assert "n3" in r.stderr and "old share" in r.stderr
    mid = read_cluster(cluster.dir)
    assert mid.epoch == before.epoch + 1
    cluster.check_records()
    r = cli_here("cluster", "status", "cl", "--json", cwd=cluster.tmp)  # n3 answers: usable
    assert r.returncode == 0 and '"usable": 4' in r.stdout and "not committed" in r.stdout
    with ClusterClient(cluster.dir, token=cluster.token, timeout=20) as c:
        c.datakeys.evaluate(["contacts/0"], proof=True)  # every answer proven, n3's too
        assert c.datakeys.excluded == {}
    r = cli_here("cluster", "refresh", "cl", cwd=cluster.tmp)
    assert r.returncode == 0, r.stderr
    assert read_cluster(cluster.dir).epoch == mid.epoch + 1
    cluster.check_records()
    for cfg, name in ((before, "cl-e-before"), (mid, "cl-e-mid")):
        with (
            ClusterClient(_copy(cluster, cfg, name), token=cluster.token) as c,
            pytest.raises(ClusterError, match="epoch"),
        ):
            c.decrypt(cluster.records[0][1], subject=cluster.records[0][0])


def _staged_files(cluster: Cluster, cid: str) -> dict[str, list[str]]:
    return {
        n: sorted(p.name for p in (cluster.tmp / n / "cluster").glob(f"{cid}.*.next"))
        for n in NODES
    }


def _until(cond: object, what: str) -> None:
    deadline = time.monotonic() + 60
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_refresh_whose_coordinator_is_killed_is_reported_and_aborted(cluster: Cluster) -> None:
    """(red team) The coordinator process of ``cluster refresh`` is killed (SIGKILL) while
    n3's finish is in flight: n1, n2 and n3 finished their round and staged a next-epoch
    share, n4 never heard of it. The staged shares stayed on disk until some later refresh
    and ``cluster status`` said nothing of them (cluster.json still names the old epoch).
    Now status names each node holding one, ``cluster refresh --abort`` erases them (the
    share overwritten first; audited) with the cluster key and every record intact, and the
    next refresh completes."""
    before = read_cluster(cluster.dir)
    cid = before.cluster_id
    cluster.proxy.gated, _ = {"/v1/cluster/dkg/finish"}, cluster.proxy.gate.clear()
    proc = subprocess.Popen(
        [KEYSPLIT, "cluster", "refresh", "cl"],
        cwd=cluster.tmp,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _until(lambda: cluster.proxy.waiting == 1, "n3's finish never reached the proxy")
        proc.kill()
        proc.wait(60)
    finally:
        cluster.proxy.gate.set()
        cluster.proxy.gated = set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(60)
    # n3's finish was already sent: it reaches n3 after the coordinator died
    _until(lambda: len(_staged_files(cluster, cid)["n3"]) == 2, "n3 never staged its share")
    staged = _staged_files(cluster, cid)
    assert [n for n in NODES if staged[n]] == ["n1", "n2", "n3"]
    assert read_cluster(cluster.dir) == before
    cluster.check_records()
    r = cli_here("cluster", "status", "cl", "--json", cwd=cluster.tmp)
    assert r.returncode == 0, r.stderr
    nodes = {n["name"]: n for n in json.loads(r.stdout)["nodes"]}
    assert {n: nodes[n]["staged"] for n in NODES} == {
        "n1": before.epoch + 1,
        "n2": before.epoch + 1,
        "n3": before.epoch + 1,
        "n4": None,
    }
    assert all("--abort" in (nodes[n]["error"] or "") for n in ("n1", "n2", "n3"))
    r = cli_here("cluster", "refresh", "cl", "--abort", "--json", cwd=cluster.tmp)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"erased": ["n1", "n2", "n3"]}
    assert _staged_files(cluster, cid) == {n: [] for n in NODES}
    for n in ("n1", "n2", "n3"):
        log = Keyring.open(cluster.tmp / n).audit_log().entries()
        assert [e.data["round"] for e in log if e.event == "cluster-abort"][-1] == "refresh"
    r = cli_here("cluster", "status", "cl", "--json", cwd=cluster.tmp)
    assert r.returncode == 0 and '"usable": 4' in r.stdout and "staged here" not in r.stdout
    assert read_cluster(cluster.dir) == before
    cluster.check_records()
    r = cli_here("cluster", "refresh", "cl", cwd=cluster.tmp)
    assert r.returncode == 0, r.stderr
    after = read_cluster(cluster.dir)
    assert after.epoch == before.epoch + 1 and after.public_key == before.public_key
    cluster.check_records()


def test_an_abort_never_undoes_a_refresh_cluster_json_names(cluster: Cluster) -> None:
    """A refresh cut during its commits (cluster.json at the new epoch, n3 serving it from
    its staged share): ``--abort`` is refused by n3 (erasing that share would leave n3
    without one for the epoch cluster.json names) and keeps it; running the refresh again
    finishes the job."""
    before = read_cluster(cluster.dir)
    _refresh_cut_at(cluster, "/v1/cluster/dkg/commit")
    r = cli_here("cluster", "refresh", "cl", "--abort", cwd=cluster.tmp)
    assert r.returncode == 1 and r.stderr.startswith("error: "), r.stderr
    assert "n3" in r.stderr and "Traceback" not in r.stderr
    assert len(_staged_files(cluster, before.cluster_id)["n3"]) == 2
    cluster.check_records()
    r = cli_here("cluster", "refresh", "cl", cwd=cluster.tmp)
    assert r.returncode == 0, r.stderr
    assert _staged_files(cluster, before.cluster_id) == {n: [] for n in NODES}
    cluster.check_records()


def _answer(doc: dict[str, object], **changes: object) -> dict[str, object]:
    out = dict(doc)
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


@pytest.mark.parametrize(
    ("path", "changes"),
    [
        ("/v1/cluster/node", {"clusters": "x"}),
        ("/v1/cluster/dkg/deal", {"sealed": None}),
        ("/v1/cluster/dkg/deal", {"sealed": {"1": "AA=="}}),
        ("/v1/cluster/dkg/deal", {"commitments": None}),
        ("/v1/cluster/dkg/deal", {"dealer": 2}),
        ("/v1/cluster/dkg/finish", {"public_shares": {"x": "y"}}),
    ],
)
def test_a_node_answering_malformed_json_is_named_not_a_traceback(
    cluster: Cluster, path: str, changes: dict[str, object]
) -> None:
    """(red team) A broken or hostile node whose JSON answer lacks a field or has one of
    the wrong type made ``cluster status`` / ``cluster refresh`` end in a KeyError,
    TypeError, ValueError or AttributeError traceback; now one error line names it (status
    lists it as unusable). Nothing changes: the round never reaches a finish."""

    def rewrite(p: str, head: bytes, body: bytes) -> bytes:
        if p != path or not body.startswith(b"{"):
            return body
        return json.dumps(_answer(json.loads(body), **changes)).encode()

    before = read_cluster(cluster.dir)
    cluster.proxy.rewrite = rewrite  # type: ignore[method-assign]
    try:
        cmd = "status" if path == "/v1/cluster/node" else "refresh"
        r = cli_here("cluster", cmd, "cl", cwd=cluster.tmp)
    finally:
        del cluster.proxy.rewrite
    assert "Traceback" not in r.stderr, r.stderr
    if cmd == "status":
        line = next(ln for ln in r.stdout.splitlines() if ln.strip().startswith("n3"))
        assert "malformed" in line, r.stdout
    else:
        assert r.returncode == 1 and r.stderr.startswith("error: "), r.stderr
        assert "n3" in r.stderr.splitlines()[0]
    assert read_cluster(cluster.dir) == before
    cluster.check_records()


def test_a_node_that_does_not_answer_is_not_waited_for_by_every_call(cluster: Cluster) -> None:
    """(red team) n3 accepts requests and never answers (a hung host, a dropped route):
    every call of a running client chose it again among its T nodes and waited its whole
    timeout for it before asking n4, so each call took the timeout. A node that failed is
    now asked last for a while (still asked when the others cannot make T)."""
    subject, rec, plain = cluster.records[0]
    cluster.proxy.gated, _ = {"/v1/cluster/eval"}, cluster.proxy.gate.clear()
    start = len(cluster.proxy.seen)
    try:
        with ClusterClient(cluster.dir, token=cluster.token, timeout=2) as c:
            for _ in range(3):
                assert c.decrypt(rec, subject=subject) == plain
    finally:
        cluster.proxy.gate.set()
        cluster.proxy.gated = set()
    assert cluster.proxy.seen[start:].count("/v1/cluster/eval") == 1


@pytest.mark.parametrize("liars", [("n1",), ("n1", "n2")])
def test_a_node_excluded_for_a_wrong_answer_is_asked_again_once_replaced(
    cluster: Cluster, liars: tuple[str, ...]
) -> None:
    """(red team) A running client excluded n1 for a wrong answer (a lying route to it); the
    operator fixes it (cluster.json names n1 anew: replaced, or reached another way). When
    the client next reloaded cluster.json (n3 down) it kept n1 excluded by name, for good:
    with n3 down it refused every call though n1, n2 and n4 answered. With n1 and n2 both
    excluded (fewer than T left, none down) it did not even reload. An exclusion now ends
    when cluster.json describes its node anew, and exclusions alone make the client look."""
    sockdir = cluster.proxy.path.parent
    proxies = {n: LyingProxy(cluster.servers[n].sock, sockdir / f"{n}-liar.sock") for n in liars}
    cfg = read_cluster(cluster.dir)
    name = "cl-liar-" + "-".join(liars)
    d = _copy(cluster, cfg, name, {n: p.url for n, p in proxies.items()})
    subject, rec, plain = cluster.records[0]
    try:
        with ClusterClient(d, token=cluster.token, timeout=20) as c:
            try:  # proofs: the liars are named and excluded
                c.encrypt(b"new", subject="contacts/under-liar")
            except ClusterError:
                assert len(liars) == 2  # fewer than T left
            assert sorted(c.datakeys.excluded) == list(liars)
            _copy(cluster, cfg, name)  # cluster.json reaches them directly again
            cluster.proxy.cut = {"/v1/cluster/eval"} if len(liars) == 1 else set()  # n3 down
            try:
                assert c.decrypt(rec, subject=subject) == plain
            finally:
                cluster.proxy.cut = set()
            assert c.datakeys.excluded == {}
    finally:
        for p in proxies.values():
            p.close()


def test_a_reload_by_another_thread_excludes_no_honest_node(cluster: Cluster) -> None:
    """(red team) A call chose its nodes from the client's description of epoch e; another
    thread reloaded cluster.json (epoch e+1, after a refresh) before the call's requests
    left: each request then named epoch e+1 while its answer was checked against the node's
    public share of epoch e, so every honest node's proof failed and each was excluded for
    good (the client refused every call after). Each request now names the description its
    call chose the node from, and a call that finds it stale retries with the new one.

    Made deterministic with gates: thread B's call finds every node at another epoch and
    reloads (held inside the reload); four held calls fill the client's four workers; call
    A (with proofs) then chooses its nodes from epoch e and waits for a worker; B's reload
    completes; the gates open."""
    old = read_cluster(cluster.dir)
    r = cli_here("cluster", "refresh", "cl", cwd=cluster.tmp)
    assert r.returncode == 0, r.stderr
    new = read_cluster(cluster.dir)
    sockdir = cluster.proxy.path.parent
    gates = {n: NodeProxy(cluster.servers[n].sock, sockdir / f"{n}-gate.sock") for n in NODES}
    gates["n3"] = cluster.proxy
    urls = {n: p.url for n, p in gates.items()}
    via = {
        e: read_cluster(_copy(cluster, c, f"cl-gate-{e}", urls))
        for e, c in (("old", old), ("new", new))
    }
    entered, release = threading.Event(), threading.Event()

    def reload() -> ClusterConfig:
        entered.set()
        assert release.wait(60)
        return via["new"]

    store = open_store(via["old"].store, keyring_id=old.cluster_id, home=cluster.dir)
    dk = ClusterDataKeys(via["old"], store, token=cluster.token, timeout=60, reload=reload)
    results: dict[str, object] = {}

    def call(name: str, proof: bool) -> threading.Thread:
        def run() -> None:
            try:
                results[name] = dk.evaluate(["contacts/0"], proof=proof)
            except Exception as exc:  # reported below
                results[name] = exc

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    def until(cond: object) -> None:
        deadline = time.monotonic() + 60
        while not cond():  # type: ignore[operator]
            assert time.monotonic() < deadline
            time.sleep(0.01)

    threads = []
    try:
        threads.append(call("B", False))
        assert entered.wait(60)  # B found every node at another epoch, reloading
        for p in gates.values():
            p.gated, _ = {"/v1/cluster/eval"}, p.gate.clear()
        threads += [call("C1", False), call("C2", False)]
        until(lambda: sum(p.waiting for p in gates.values()) == 4)  # every worker held
        threads.append(call("A", True))
        release.set()
        until(lambda: dk.config == via["new"])
    finally:
        release.set()
        for p in gates.values():
            p.gate.set()
            p.gated = set()
        for t in threads:
            t.join(60)
        excluded = dk.excluded
        dk.close()
        for n, p in gates.items():
            if n != "n3":
                p.close()
    assert excluded == {}
    assert all(not isinstance(v, Exception) for v in results.values()), results


def test_a_rotation_never_keeps_another_key_the_new_cluster_holds(cluster: Cluster) -> None:
    """(red team) A subject that already had a *different* data key in the new cluster (a
    backend switched to it early and wrote there) was skipped by ``cluster rotate`` as
    'already moved' and the rotation reported success: once the old cluster was retired,
    the subject's older records were lost. ClusterDataKeys.adopt promised IntegrityError
    for it; now a key already there must be the same one."""
    t = cluster.tmp
    cfg = read_cluster(cluster.dir)
    args = ["cluster", "create", "cl2", "--threshold", "3", "--region", "in"]
    for n in cfg.nodes:
        args += ["--node", f"{n.name}={n.url}"]
    r = cli_here(*args, cwd=t)
    assert r.returncode == 0, r.stderr
    subject, rec, plain = cluster.records[0]
    with ClusterClient(t / "cl2", token=cluster.token, timeout=20) as c:
        c.encrypt(b"written early", subject=subject)  # another data key for the subject
    r = cli_here("cluster", "rotate", "cl", "cl2", "--token-file", "token", cwd=t)
    assert r.returncode == 1 and r.stderr.startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    with ClusterClient(t / "cl2", token=cluster.token, timeout=20) as c:
        c.shred(subject)  # the operator resolves it (here: the early key goes)
    r = cli_here("cluster", "rotate", "cl", "cl2", "--token-file", "token", cwd=t)
    assert r.returncode == 0, r.stderr
    with ClusterClient(t / "cl2", token=cluster.token, timeout=20) as c:
        assert c.decrypt(rec, subject=subject) == plain


def _create(cluster: Cluster, name: str) -> Path:
    """A new 3-of-4 cluster ``tmp/NAME`` on the same four nodes (its own store)."""
    args = ["cluster", "create", name, "--threshold", "3", "--region", "in"]
    for n in read_cluster(cluster.dir).nodes:
        args += ["--node", f"{n.name}={n.url}"]
    r = cli_here(*args, cwd=cluster.tmp)
    assert r.returncode == 0, r.stderr
    return cluster.tmp / name


def test_a_subject_shredded_in_the_old_cluster_is_shredded_in_the_new_one(
    cluster: Cluster,
) -> None:
    """(red team) ``cluster rotate OLD NEW`` moved a subject's key, then the subject was
    shredded through OLD (the backends still used it): its key survived in NEW, so once
    the backends switched, every record of the 'erased' subject decrypted again; the
    docstring only said to pause shreds. Now a shred through OLD reaches NEW in the same
    call (OLD/successor.json), and a shred by a client reading another copy of OLD's
    directory (no marker) is carried by the next run of the rotation. A subject shredded
    before the rotation began whose key in NEW was written there afresh keeps that key."""
    t, tok = cluster.tmp, cluster.token
    old, new = _create(cluster, "cl-old"), _create(cluster, "cl-new")
    subjects = ["contacts/rot-a", "contacts/rot-b", "contacts/rot-c"]
    with ClusterClient(old, token=tok, timeout=20) as c:
        recs = dict(zip(subjects, c.encrypt_many(subjects, [b"a", b"b", b"c"]), strict=True))
        c.encrypt(b"pre", subject="contacts/rot-pre")
        assert c.shred("contacts/rot-pre")  # before the rotation
    with ClusterClient(new, token=tok, timeout=20) as c:  # a backend wrote there early
        fresh = c.encrypt(b"fresh", subject="contacts/rot-pre")
    r = cli_here("cluster", "rotate", "cl-old", "cl-new", "--token-file", "token", "--json", cwd=t)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["moved"] == 3
    r = cli_here(
        "cluster", "shred", "cl-old", "contacts/rot-a", "--token-file", "token", "--yes", cwd=t
    )
    assert r.returncode == 0, r.stderr
    with ClusterClient(new, token=tok, timeout=20) as c:
        assert c.datakeys.store.get_many(["contacts/rot-a"]) == {}
        with pytest.raises(ShreddedError):
            c.decrypt(recs["contacts/rot-a"], subject="contacts/rot-a")
    # another host's copy of OLD's directory (no successor.json) shreds rot-b
    elsewhere = t / "cl-old-elsewhere"
    elsewhere.mkdir()
    cfg = read_cluster(old)
    replace(cfg, store=f"sqlite://{old / 'cluster-keys.sqlite'}").write(elsewhere)
    with ClusterClient(elsewhere, token=tok, timeout=20) as c:
        assert c.shred("contacts/rot-b")
    r = cli_here("cluster", "rotate", "cl-old", "cl-new", "--token-file", "token", "--json", cwd=t)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"moved": 0, "shredded": 1}
    with ClusterClient(new, token=tok, timeout=20) as c:
        have = c.datakeys.store.get_many([*subjects, "contacts/rot-pre"])
        assert sorted(have) == ["contacts/rot-c", "contacts/rot-pre"]
        assert c.decrypt(recs["contacts/rot-c"], subject="contacts/rot-c") == b"c"
        assert c.decrypt(fresh, subject="contacts/rot-pre") == b"fresh"
    r = cli_here("cluster", "rotate", "cl-old", "cl-new", "--token-file", "token", "--json", cwd=t)
    assert json.loads(r.stdout) == {"moved": 0, "shredded": 0}  # nothing twice
    r = cli_here("cluster", "rotate", "cl-old", "cl", "--token-file", "token", cwd=t)
    assert r.returncode == 1 and "being rotated to" in r.stderr, r.stderr


def _marker_less_copy(old: Path, name: str) -> Path:
    """Another host's copy of OLD's directory (no successor.json), on OLD's store."""
    elsewhere = old.parent / name
    elsewhere.mkdir()
    cfg = read_cluster(old)
    replace(cfg, store=f"sqlite://{old / 'cluster-keys.sqlite'}").write(elsewhere)
    return elsewhere


def test_a_rotation_carries_a_shred_only_onto_the_key_it_was_made_against(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(cluster4) The rotation's carry shredded in NEW any subject with a key there, none
    in OLD and a tombstone in OLD since the rotation began, unless NEW had a tombstone
    under the subject's tag. (a) A shred through OLD that reached NEW while NEW's nodes
    could not tag it (FLUSH_TAG), then the subject written in NEW afresh: the next run
    destroyed the new key (data loss). (b) A subject shredded through OLD (reaching NEW),
    written again through OLD, moved, then shredded through a copy without the marker:
    NEW's old tombstone made the run keep the moved key (erasure missed). (c) A subject
    shredded through such a copy before it was moved, carried by one run (nothing in NEW),
    written in NEW afresh, lost its new key to the next run. Each shred now applies to the
    key it was made against."""
    t, tok = cluster.tmp, cluster.token
    old, new = _create(cluster, "cl-gen-old"), _create(cluster, "cl-gen-new")
    a, b, c3 = "contacts/gen-a", "contacts/gen-b", "contacts/gen-c"
    rotate = ["cluster", "rotate", old.name, new.name, "--token-file", "token", "--json"]
    with ClusterClient(old, token=tok, timeout=20) as c:
        c.encrypt_many([a, b], [b"a", b"b"])
    r = cli_here(*rotate, cwd=t)
    assert r.returncode == 0 and json.loads(r.stdout) == {"moved": 2, "shredded": 0}, r.stderr
    new_id = read_cluster(new).cluster_id
    tags = ClusterDataKeys.tombstone_tags

    def new_nodes_down(self: ClusterDataKeys, subjects: list[str]) -> list[bytes]:
        if self.config.cluster_id == new_id:
            raise ClusterError("the new cluster's nodes do not answer")
        return tags(self, subjects)

    with monkeypatch.context() as m:  # (a)
        m.setattr(ClusterDataKeys, "tombstone_tags", new_nodes_down)
        with ClusterClient(old, token=tok, timeout=20) as c:
            assert c.shred(a)
    with ClusterClient(old, token=tok, timeout=20) as c:  # (b)
        assert c.shred(b)
        again = c.encrypt(b"b again", subject=b)
    with ClusterClient(new, token=tok, timeout=20) as c:
        assert c.datakeys.store.get_many([a, b]) == {}
        fresh_a = c.encrypt(b"a afresh", subject=a)
    r = cli_here(*rotate, cwd=t)
    assert r.returncode == 0 and json.loads(r.stdout) == {"moved": 1, "shredded": 0}, r.stderr
    with ClusterClient(old, token=tok, timeout=20) as c:  # (c): written in OLD, not moved
        c.encrypt(b"c", subject=c3)
    with ClusterClient(_marker_less_copy(old, "cl-gen-copy"), token=tok, timeout=20) as c:
        assert c.shred(b) and c.shred(c3)
    r = cli_here(*rotate, cwd=t)
    assert r.returncode == 0 and json.loads(r.stdout) == {"moved": 0, "shredded": 1}, r.stderr
    with ClusterClient(new, token=tok, timeout=20) as c:
        assert c.decrypt(fresh_a, subject=a) == b"a afresh"
        with pytest.raises(ShreddedError):
            c.decrypt(again, subject=b)
        fresh_c = c.encrypt(b"c afresh", subject=c3)
    r = cli_here(*rotate, cwd=t)
    assert r.returncode == 0 and json.loads(r.stdout) == {"moved": 0, "shredded": 0}, r.stderr
    with ClusterClient(new, token=tok, timeout=20) as c:
        assert c.decrypt_many([a, c3], [fresh_a, fresh_c]) == [b"a afresh", b"c afresh"]


def test_a_key_never_moved_is_not_carried_onto_one_written_in_new_afresh(
    cluster: Cluster,
) -> None:
    """(cluster5, data loss) A subject written in OLD after a run moved the keys, shredded
    through a copy of OLD without the marker (so the key it was made against never
    reached NEW), then written in NEW afresh before the next run: the run's carry shredded
    that new key (SECURITY.md called the case one no store tells apart and asked for
    another run). Now each run records a check value of every key it moves (OLD's
    successor ledger) and the carry shreds in NEW only a key the rotation moved there; a
    moved key shredded through such a copy is still carried."""
    t, tok = cluster.tmp, cluster.token
    old, new = _create(cluster, "cl-led-old"), _create(cluster, "cl-led-new")
    x, m = "contacts/led-x", "contacts/led-m"
    rotate = ["cluster", "rotate", old.name, new.name, "--token-file", "token", "--json"]
    with ClusterClient(old, token=tok, timeout=20) as c:
        moved_rec = c.encrypt(b"m", subject=m)
    r = cli_here(*rotate, cwd=t)
    assert r.returncode == 0 and json.loads(r.stdout) == {"moved": 1, "shredded": 0}, r.stderr
    with ClusterClient(old, token=tok, timeout=20) as c:  # after the run: never moved
        c.encrypt(b"x in old", subject=x)
    with ClusterClient(_marker_less_copy(old, "cl-led-copy"), token=tok, timeout=20) as c:
        assert c.shred(x) and c.shred(m)
    with ClusterClient(new, token=tok, timeout=20) as c:
        assert c.datakeys.store.get_many([x]) == {}
        fresh = c.encrypt(b"x afresh", subject=x)
    r = cli_here(*rotate, cwd=t)
    assert r.returncode == 0 and json.loads(r.stdout) == {"moved": 0, "shredded": 1}, r.stderr
    with ClusterClient(new, token=tok, timeout=20) as c:
        assert c.decrypt(fresh, subject=x) == b"x afresh"
        assert sorted(c.datakeys.store.get_many([x, m])) == [x]
        with pytest.raises(ShreddedError):
            c.decrypt(moved_rec, subject=m)


def test_a_rotation_whose_successor_json_lost_the_ledger_carries_by_the_marks(
    cluster: Cluster,
) -> None:
    """(cluster5) Code before the ledger of moved keys rewrites successor.json without its
    ``ledger`` field (and keeps no ledger): the next runs then carry shreds by OLD's
    tombstone marks alone, as that code did, and neither need nor read moved.sqlite. A
    moved key shredded through a copy without the marker is still carried; one shredded
    through OLD itself (reaching NEW) is not carried again."""
    from keysplit.service.cluster_config import read_successor

    t, tok = cluster.tmp, cluster.token
    old, new = _create(cluster, "cl-noled-old"), _create(cluster, "cl-noled-new")
    a, b = "contacts/noled-a", "contacts/noled-b"
    rotate = ["cluster", "rotate", old.name, new.name, "--token-file", "token", "--json"]
    with ClusterClient(old, token=tok, timeout=20) as c:
        c.encrypt_many([a, b], [b"a", b"b"])
    r = cli_here(*rotate, cwd=t)
    assert r.returncode == 0 and json.loads(r.stdout) == {"moved": 2, "shredded": 0}, r.stderr
    succ = read_successor(old)
    assert succ is not None and succ.ledger
    replace(succ, ledger=False).write(old)  # as an older run's rewrite leaves it
    (old / "moved.sqlite").unlink()
    with ClusterClient(old, token=tok, timeout=20) as c:
        assert c.shred(b)  # reaches NEW: its mark says so
    with ClusterClient(new, token=tok, timeout=20) as c:
        fresh_b = c.encrypt(b"b afresh", subject=b)
    with ClusterClient(_marker_less_copy(old, "cl-noled-copy"), token=tok, timeout=20) as c:
        assert c.shred(a)
    r = cli_here(*rotate, cwd=t)
    assert r.returncode == 0 and json.loads(r.stdout) == {"moved": 0, "shredded": 1}, r.stderr
    assert not (old / "moved.sqlite").exists()
    with ClusterClient(new, token=tok, timeout=20) as c:
        assert sorted(c.datakeys.store.get_many([a, b])) == [b]
        assert c.decrypt(fresh_b, subject=b) == b"b afresh"


def test_a_rotation_copies_the_legal_holds_in_one_transaction(cluster: Cluster) -> None:
    """(cluster3) ``cluster rotate OLD NEW`` copied OLD's legal holds to NEW one
    transaction each (a store epoch each; a rotation cut among them left NEW with some of
    the holds): now one ``set_legal_holds`` transaction, all or none. Counted by NEW's
    store epoch (one per transaction); OLD holds no keys, so nothing else is written."""
    old, new = _create(cluster, "cl-hold-old"), _create(cluster, "cl-hold-new")
    held = ["contacts/hold-a", "contacts/hold-b", "contacts/hold-c"]
    with ClusterClient(old, token=cluster.token, timeout=20) as c:
        for s in held:
            c.set_legal_hold(s, True)
    with ClusterClient(new, token=cluster.token, timeout=20) as c:
        before = c.datakeys.store.state().epoch
    r = cli_here("cluster", "rotate", old.name, new.name, "--token-file", "token", cwd=cluster.tmp)
    assert r.returncode == 0, r.stderr
    with ClusterClient(new, token=cluster.token, timeout=20) as c:
        assert c.datakeys.store.legal_holds() == held
        assert c.datakeys.store.state().epoch == before + 1


@pytest.mark.parametrize("afresh", [False, True], ids=["shredded", "shredded-and-written-afresh"])
def test_a_key_shredded_while_the_rotation_moves_it_does_not_live_on_in_new(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, afresh: bool
) -> None:
    """(cluster4) A shred through OLD whose step in NEW finds no key yet (the run has
    exported the key from OLD, not yet stored it in NEW) marks OLD's tombstones as having
    reached NEW, so the carry leaves NEW alone: the run itself must then shred the key it
    stores. Forced: the shred runs inside the run, between its export and its adopt.

    (review4) ``afresh``: the subject is written in OLD again right after its shred (an
    account deleted and opened again). The re-check asked only whether OLD still had a
    key, which it did (another one), so NEW kept the shredded key (the shredded record
    opened through NEW) and the next run stopped on IntegrityError for good. It compares
    the key now: NEW's shredded one goes, OLD's new one is moved."""
    from keysplit.service.cluster_admin import rotate_cluster

    tok = cluster.token
    tag = "-afresh" if afresh else ""  # (the fixture's nodes serve every test's clusters)
    old, new = _create(cluster, f"cl-race-old{tag}"), _create(cluster, f"cl-race-new{tag}")
    s = "contacts/race-a"
    with ClusterClient(old, token=tok, timeout=20) as c:
        rec = c.encrypt(b"a", subject=s)
    adopt = ClusterDataKeys.adopt
    shredded: list[bool] = []
    written: list[bytes] = []

    def shred_first(self: ClusterDataKeys, subjects: list[str], raws: list[bytes]) -> int:
        if not shredded:
            with ClusterClient(old, token=tok, timeout=20) as c:  # marker: reaches NEW
                shredded.append(c.shred(s))
                if afresh:
                    written.append(c.encrypt(b"b", subject=s))  # another key in OLD
        return adopt(self, subjects, raws)

    monkeypatch.setattr(ClusterDataKeys, "adopt", shred_first)
    done = rotate_cluster(old, new, token=tok)
    monkeypatch.undo()
    assert shredded == [True]
    assert (done.moved, done.shredded) == (1, 1)
    with ClusterClient(new, token=tok, timeout=20) as c:
        with pytest.raises(ShreddedError):
            c.decrypt(rec, subject=s)
        if not afresh:
            assert c.datakeys.store.get_many([s]) == {}
        else:
            assert c.decrypt(written[0], subject=s) == b"b"
    if afresh:
        rotate_cluster(old, new, token=tok)  # the next run goes through


def test_a_run_killed_after_storing_a_key_shredded_meanwhile_is_finished_by_the_next(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(cluster5) The shred of the test above, when the run dies right after it stored the
    key in NEW (before its re-check): OLD's tombstones said the shred had reached NEW, so
    no later run carried it and the shredded key lived on in NEW. Now the carry goes by the
    ledger of moved keys: NEW's key is the moved one, so the next run shreds it."""
    from keysplit.service.cluster_admin import rotate_cluster

    tok = cluster.token
    old, new = _create(cluster, "cl-kill-old"), _create(cluster, "cl-kill-new")
    s = "contacts/kill-a"
    with ClusterClient(old, token=tok, timeout=20) as c:
        rec = c.encrypt(b"a", subject=s)
    adopt = ClusterDataKeys.adopt

    def shred_then_die(self: ClusterDataKeys, subjects: list[str], raws: list[bytes]) -> int:
        with ClusterClient(old, token=tok, timeout=20) as c:  # marker: reaches NEW (no key)
            assert c.shred(s)
        adopt(self, subjects, raws)
        raise KeyboardInterrupt  # the run is killed after the key is stored in NEW

    with monkeypatch.context() as m:
        m.setattr(ClusterDataKeys, "adopt", shred_then_die)
        with pytest.raises(KeyboardInterrupt):
            rotate_cluster(old, new, token=tok)
    with ClusterClient(new, token=tok, timeout=20) as c:
        assert sorted(c.datakeys.store.get_many([s])) == [s]  # the shredded key, in NEW
    done = rotate_cluster(old, new, token=tok)
    assert (done.moved, done.shredded) == (0, 1)
    with ClusterClient(new, token=tok, timeout=20) as c:
        assert c.datakeys.store.get_many([s]) == {}
        with pytest.raises(ShreddedError):
            c.decrypt(rec, subject=s)


def _rotated_with_holds(
    cluster: Cluster, name: str, held: list[str]
) -> tuple[Path, Path, list[str]]:
    """Clusters ``NAME-old`` (the ``held`` subjects under legal hold) and ``NAME-new``, one
    rotation run between them done; returns both and the rotation's command line."""
    old, new = _create(cluster, f"{name}-old"), _create(cluster, f"{name}-new")
    rotate = ["cluster", "rotate", old.name, new.name, "--token-file", "token"]
    with ClusterClient(old, token=cluster.token, timeout=20) as c:
        for s in held:
            c.set_legal_hold(s, True)
    r = cli_here(*rotate, cwd=cluster.tmp)
    assert r.returncode == 0, r.stderr
    return old, new, rotate


def test_a_hold_lifted_through_a_copy_without_the_marker_is_lifted_in_new(
    cluster: Cluster,
) -> None:
    """(cluster4) Each ``cluster rotate`` run copied OLD's legal holds to NEW, and never
    lifted one: a hold lifted through a copy of OLD's directory without successor.json
    (which does not reach NEW) stayed in NEW for good, so the subject could not be shredded
    there (nor through OLD, whose shred checks NEW's holds). Now the run lifts in NEW the
    holds it copied before that OLD no longer has; a hold placed in NEW alone stays."""
    t, tok = cluster.tmp, cluster.token
    a, b, c3 = "contacts/lift-a", "contacts/lift-b", "contacts/lift-c"
    old, new, rotate = _rotated_with_holds(cluster, "cl-lift", [a, b])
    with ClusterClient(new, token=tok, timeout=20) as c:
        assert c.datakeys.store.legal_holds() == [a, b]
        c.set_legal_hold(c3, True)  # placed in NEW alone
        c.encrypt(b"a", subject=a)
    with ClusterClient(_marker_less_copy(old, "cl-lift-copy"), token=tok, timeout=20) as c:
        c.set_legal_hold(a, False)
    r = cli_here(*rotate, cwd=t)
    assert r.returncode == 0, r.stderr
    with ClusterClient(new, token=tok, timeout=20) as c:
        assert c.datakeys.store.legal_holds() == [b, c3]
        assert c.shred(a)
    r = cli_here(*rotate, cwd=t)  # nothing more to lift
    assert r.returncode == 0, r.stderr
    with ClusterClient(new, token=tok, timeout=20) as c:
        assert c.datakeys.store.legal_holds() == [b, c3]


def _lifted_through_a_copy(cluster: Cluster, name: str, subject: str) -> tuple[Path, Path]:
    """Clusters ``NAME-old``/``NAME-new`` after one rotation run that copied the hold on
    ``subject``, then lifted in OLD alone (through a copy of OLD without the marker)."""
    old, new, _ = _rotated_with_holds(cluster, name, [subject])
    with ClusterClient(_marker_less_copy(old, f"{name}-copy"), token=cluster.token) as c:
        c.set_legal_hold(subject, False)
    return old, new


def _held_in(directory: Path, token: str) -> list[str]:
    with ClusterClient(directory, token=token, timeout=20) as c:
        return c.datakeys.store.legal_holds()


def test_a_hold_placed_again_while_a_rotation_lifts_it_stays_in_new(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(review5) A hold lifted through a copy of OLD without the marker, then placed again
    through OLD after a rotation run read OLD's holds and before it lifted the first lift
    in NEW: the run lifted it in NEW (OLD holds it), so a shred through NEW succeeded on a
    held subject until the next run. The re-place is injected at that point (after the
    read, before the lift). Now the run reads OLD again after its lift and places back
    what OLD holds again."""
    from keysplit.service import cluster_admin

    tok, x = cluster.token, "contacts/race-hold-a"
    old, new = _lifted_through_a_copy(cluster, "cl-rehold", x)
    assert _held_in(old, tok) == [] and _held_in(new, tok) == [x]
    real, placed = cluster_admin._keyed_digests, []

    def digests_then_place(*args: object, **kw: object) -> dict[str, str]:
        if not placed:  # the first call: the run has read OLD's holds and not lifted yet
            with ClusterClient(old, token=tok, timeout=20) as c:
                c.set_legal_hold(x, True)  # through OLD (the marker): NEW, then OLD
            placed.append(x)
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(cluster_admin, "_keyed_digests", digests_then_place)
    cluster_admin.rotate_cluster(old, new, token=tok)
    assert placed == [x]
    assert _held_in(old, tok) == [x] and _held_in(new, tok) == [x]
    with ClusterClient(new, token=tok, timeout=20) as c:
        c.encrypt(b"x", subject=x)
        with pytest.raises(LegalHoldError):
            c.shred(x)
    monkeypatch.undo()
    cluster_admin.rotate_cluster(old, new, token=tok)  # the next run keeps it too
    assert _held_in(new, tok) == [x]


def test_a_rotation_run_between_a_places_two_stores_leaves_the_hold_in_new(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(review5) The same race, with the whole rotation run between the place's write in
    NEW and its write in OLD: the run read OLD before the place reached it, lifted the hold
    in NEW and read OLD again before it reached it too. Now a place through OLD writes
    NEW again after OLD."""
    from keysplit.service import cluster_admin
    from keysplit.store.sqlite import SQLiteKeyStore

    tok, x = cluster.token, "contacts/race-hold-b"
    old, new = _lifted_through_a_copy(cluster, "cl-rehold2", x)
    real, ran = SQLiteKeyStore.set_legal_holds, []
    old_store = (old / "cluster-keys.sqlite").resolve()

    def run_first(self: SQLiteKeyStore, subjects: list[str], hold: bool) -> None:
        if hold and not ran and self._path.resolve() == old_store:  # NEW written already
            ran.append(True)
            cluster_admin.rotate_cluster(old, new, token=tok)
            assert _held_in(new, tok) == []  # the run lifted it in NEW
        real(self, subjects, hold)

    monkeypatch.setattr(SQLiteKeyStore, "set_legal_holds", run_first)
    with ClusterClient(old, token=tok, timeout=20) as c:
        c.set_legal_hold(x, True)
    assert ran == [True]
    monkeypatch.undo()
    assert _held_in(old, tok) == [x] and _held_in(new, tok) == [x]


def test_the_holds_a_rotation_records_cannot_be_tested_by_a_reader_of_the_directory(
    cluster: Cluster,
) -> None:
    """(review) successor.json's ``held`` digests were keyed by the cluster id, public in
    cluster.json, in a 0644 file: anyone who read OLD's directory could test a candidate
    subject (an email address) and learn it was under legal hold. Now each is keyed by the
    subject's tombstone tag in OLD (T nodes): the digest of a held subject computed from
    the directory alone matches nothing in the file. A file an older run wrote (public
    ``held``) is honoured for the next lift, then rewritten without it."""
    from keysplit.service.cluster_config import hold_digest, read_successor

    t, tok = cluster.tmp, cluster.token
    a, b = "contacts/priv-a@example.com", "contacts/priv-b@example.com"
    old, new, rotate = _rotated_with_holds(cluster, "cl-priv", [a, b])
    public_id = json.loads((old / "cluster.json").read_text())["cluster_id"]
    text = (old / "successor.json").read_text()
    doc = json.loads(text)
    assert "held" not in doc and len(doc["held_keyed"]) == 2
    for s in (a, b):  # what a directory reader can compute
        assert hold_digest(public_id, s) not in text
    # an older run's file: the public digests of the holds it copied
    succ = read_successor(old)
    assert succ is not None
    legacy = frozenset(hold_digest(public_id, s) for s in (a, b))
    replace(succ, held=legacy, held_keyed=frozenset()).write(old)
    with ClusterClient(_marker_less_copy(old, "cl-priv-copy"), token=tok, timeout=20) as c:
        c.set_legal_hold(a, False)
    r = cli_here(*rotate, cwd=t)
    assert r.returncode == 0, r.stderr
    with ClusterClient(new, token=tok, timeout=20) as c:
        assert c.datakeys.store.legal_holds() == [b]  # the old digests' lift, honoured
    text = (old / "successor.json").read_text()
    assert "held" not in json.loads(text) and hold_digest(public_id, b) not in text
    assert len(json.loads(text)["held_keyed"]) == 1


def test_a_hold_outside_the_tokens_prefix_does_not_stop_the_rotation(
    cluster: Cluster,
) -> None:
    """(cluster7) Each run keys the holds it copies by their tombstone tags in OLD, which
    the nodes evaluate only for subjects in the token's prefix: one legal hold on a subject
    outside it (placed by another tenant's token) made every ``cluster rotate`` run with the
    tenant's token fail ('may only use subjects starting with'), though the hold needs no
    key. Now every hold is still copied to NEW; one the token cannot tag is left out of
    ``held_keyed`` (a lift through a copy of OLD without the marker then does not reach NEW:
    the hold stays there, which refuses a shred rather than allowing one)."""
    t, tok = cluster.tmp, cluster.token
    inside, outside = "contacts/scope-a", "billing/scope-b"
    old, new = _create(cluster, "cl-scope-old"), _create(cluster, "cl-scope-new")
    rotate = ["cluster", "rotate", old.name, new.name, "--token-file", "token", "--json"]
    with ClusterClient(old, token=tok, timeout=20) as c:
        rec = c.encrypt(b"a", subject=inside)
        c.set_legal_hold(inside, True)
        c.set_legal_hold(outside, True)  # a hold needs no evaluation: any token places it
        with pytest.raises(PermissionDenied, match="may only use subjects"):
            c.encrypt(b"b", subject=outside)
    r = cli_here(*rotate, cwd=t)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"moved": 1, "shredded": 0}
    assert len(json.loads((old / "successor.json").read_text())["held_keyed"]) == 1
    with ClusterClient(new, token=tok, timeout=20) as c:
        assert c.datakeys.store.legal_holds() == [outside, inside]
        assert c.decrypt(rec, subject=inside) == b"a"
    with ClusterClient(_marker_less_copy(old, "cl-scope-copy"), token=tok, timeout=20) as c:
        c.set_legal_hold(inside, False)
        c.set_legal_hold(outside, False)
    r = cli_here(*rotate, cwd=t)
    assert r.returncode == 0 and json.loads(r.stdout) == {"moved": 0, "shredded": 0}, r.stderr
    with ClusterClient(new, token=tok, timeout=20) as c:
        assert c.datakeys.store.legal_holds() == [outside]  # untagged: stays (fails safe)
    assert "held_keyed" not in json.loads((old / "successor.json").read_text())


def test_a_carry_over_a_subject_outside_the_tokens_prefix_says_why_it_is_refused(
    cluster: Cluster,
) -> None:
    """(cluster7) The end-of-run shred carry asks OLD's nodes for the tombstone tag of each
    subject NEW holds and OLD does not: another tenant's key written in NEW after the
    switch is outside the token's prefix, and the run failed with the nodes' bare refusal
    ('may only use subjects starting with'). The refusal stays (skipping the subject could
    miss an erasure); it now says why and what to do."""
    from keysplit.store.base import WrappedKey

    t, tok = cluster.tmp, cluster.token
    old, new = _create(cluster, "cl-carry-old"), _create(cluster, "cl-carry-new")
    rotate = ["cluster", "rotate", old.name, new.name, "--token-file", "token"]
    with ClusterClient(old, token=tok, timeout=20) as c:
        c.encrypt(b"a", subject="contacts/carry-a")
    r = cli_here(*rotate, cwd=t)
    assert r.returncode == 0, r.stderr
    with ClusterClient(old, token=tok, timeout=20) as c:
        assert c.shred("contacts/carry-a")  # a tombstone in OLD for the next run's carry
    with ClusterClient(new, token=tok, timeout=20) as c:  # another tenant's key in NEW
        row = c.datakeys.store.get_many(["contacts/carry-a"]).get("contacts/carry-a")
        assert row is None  # the shred reached NEW
        c.encrypt(b"b", subject="contacts/carry-b")
        store = c.datakeys.store
        (mine,) = store.get_many(["contacts/carry-b"]).values()
        store.insert_many([WrappedKey("billing/carry-x", mine.kek_version, mine.wrapped)])
    r = cli_here(*rotate, cwd=t)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "may only use subjects starting with" in r.stderr
    assert "hint: the shred carry must check every subject NEW holds" in r.stderr
    assert "token whose prefix covers every subject" in r.stderr


def test_a_moved_key_shredded_and_written_again_through_a_copy_is_replaced_in_new(
    cluster: Cluster,
) -> None:
    """(review5) A key the rotation moved, then shredded through a copy of OLD without the
    marker and the subject written again there (OLD: another key, so the carry, which
    looks only at subjects without a key in OLD, passes it by): every later run failed
    with IntegrityError ('a backend wrote there before the rotation finished') and the
    shredded key stayed in NEW. NEW's key is one the rotation moved (its check value is in
    the ledger) and no longer OLD's: it is shredded in NEW and OLD's key moved in its place
    (and ClusterDataKeys.adopt stores nothing of a batch it refuses, so the batch's other
    keys are moved, and counted, once)."""
    t, tok = cluster.tmp, cluster.token
    old, new = _create(cluster, "cl-re-old"), _create(cluster, "cl-re-new")
    s = "contacts/re-s"
    rotate = ["cluster", "rotate", old.name, new.name, "--token-file", "token", "--json"]
    with ClusterClient(old, token=tok, timeout=20) as c:
        first = c.encrypt(b"first", subject=s)
    r = cli_here(*rotate, cwd=t)
    assert r.returncode == 0 and json.loads(r.stdout) == {"moved": 1, "shredded": 0}, r.stderr
    with ClusterClient(_marker_less_copy(old, "cl-re-copy"), token=tok, timeout=20) as c:
        assert c.shred(s)
        second = c.encrypt(b"second", subject=s)
        later = c.encrypt(b"later", subject="contacts/re-n")  # in the same batch: counted
    r = cli_here(*rotate, cwd=t)
    assert r.returncode == 0 and json.loads(r.stdout) == {"moved": 2, "shredded": 1}, r.stderr
    with ClusterClient(new, token=tok, timeout=20) as c:
        assert c.decrypt(second, subject=s) == b"second"
        assert c.decrypt(later, subject="contacts/re-n") == b"later"
        with pytest.raises(ShreddedError):  # the shredded key is gone from NEW too
            c.decrypt(first, subject=s)
    r = cli_here(*rotate, cwd=t)
    assert r.returncode == 0 and json.loads(r.stdout) == {"moved": 0, "shredded": 0}, r.stderr


# last: it stops n1 and replaces n4, which the tests above use
def test_a_replacement_cut_after_the_new_node_kept_its_share_is_finished(
    cluster: Cluster,
) -> None:
    """(red team) n4 is lost; the fresh n5 recovers its share, but the answer of its
    finish is lost (the coordinator dies or the link drops before cluster.json is
    written). Running the replacement again was refused for good ('this node is already a
    member'); now it sees the new node holds the lost index's share and writes
    cluster.json."""
    t, sockdir = cluster.tmp, cluster.servers["n1"].sock.parent
    cluster.servers["n5"] = start_node(t, "n5", sockdir / "n5.sock")
    proxy = NodeProxy(cluster.servers["n5"].sock, sockdir / "n5-proxy.sock")
    try:
        cluster.servers["n4"].stop()
        shutil.rmtree(t / "n4")
        before = read_cluster(cluster.dir)
        proxy.drop_answer = {"/v1/cluster/recover/finish"}
        r = cli_here("cluster", "replace", "cl", f"n4={proxy.url}", cwd=t)
        assert r.returncode == 1 and r.stderr.startswith("error: "), r.stderr
        assert read_cluster(cluster.dir) == before
        proxy.drop_answer = set()
        r = cli_here("cluster", "replace", "cl", f"n4={proxy.url}", cwd=t)
        assert r.returncode == 0, r.stderr
        after = read_cluster(cluster.dir)
        assert after.node("n4").url == proxy.url
        assert [n.public_share for n in after.nodes] == [n.public_share for n in before.nodes]
        shares: list[str] = []
        for p in cluster.shares("n5"):
            shares += ["--share", str(p)]
        r = cli_here(
            "token", "add", "n5", "--name", "app", "--token-file", "token",
            "--allow", "datakey", "--subject-prefix", "contacts/", *shares, cwd=t,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        cluster.servers["n1"].stop()  # n2, n3 and the new n4 carry the cluster
        cluster.check_records()
    finally:
        proxy.close()
