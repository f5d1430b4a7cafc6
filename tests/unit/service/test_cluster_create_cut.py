"""``keysplit cluster create`` interrupted mid-way (red team), with real node processes.

Three fresh node keyrings x1..x3 served by ``keysplit serve`` (x3 behind a Unix-socket
proxy that cuts chosen requests, :mod:`node_proxy`). A create cut after some nodes finished
their round used to leave those nodes a membership of a cluster that never existed and a
region pin, with no command to undo either. Every wait is bounded. The nodes are real
``keysplit serve`` processes; the administrator's commands run in this process
(:func:`cli_here`: the same command over the same sockets and files, without a start).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from node_proxy import NodeProxy
from service_helpers import Server, cli_here, served_nodes, share_file

from keysplit import Keyring
from keysplit.service.cluster_client import node_info
from keysplit.service.cluster_config import read_cluster

pytest.importorskip("rbcl")
pytestmark = pytest.mark.slow

NODES = ("x1", "x2", "x3")


@dataclass
class Nodes:
    tmp: Path
    servers: dict[str, Server]
    proxy: NodeProxy

    def urls(self) -> dict[str, str]:
        return {n: self.servers[n].url for n in NODES} | {"x3": self.proxy.url}

    def create(self, name: str, region: str, cut: str | None = None) -> tuple[int, str]:
        args = ["cluster", "create", name, "--threshold", "2", "--region", region]
        for n, url in self.urls().items():
            args += ["--node", f"{n}={url}"]
        self.proxy.cut = {cut} if cut else set()
        try:
            r = cli_here(*args, cwd=self.tmp)
        finally:
            self.proxy.cut = set()
        assert "Traceback" not in r.stderr, r.stderr
        return r.returncode, r.stderr

    def files(self, node: str) -> list[str]:
        d = self.tmp / node / "cluster"
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []

    def info(self, node: str) -> dict[str, object]:
        return node_info(self.servers[node].url)


@contextmanager
def fresh_nodes(tmp: Path, prefix: str) -> Iterator[Nodes]:
    """x1..x3 freshly served from ``tmp``, x3 behind the cutting proxy."""
    with served_nodes(tmp, NODES, prefix) as (sockdir, servers):
        proxy = NodeProxy(servers["x3"].sock, sockdir / "x3-proxy.sock")
        try:
            yield Nodes(tmp, servers, proxy)
        finally:
            proxy.close()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    with fresh_nodes(tmp_path_factory.mktemp("create-cut"), "kx") as out:
        yield out


def test_an_unfinished_create_is_abandoned_and_its_nodes_join_another_region(
    nodes: Nodes,
) -> None:
    """(red team) x3's finish is cut: x1 and x2 kept a share of a cluster that was never
    written and were pinned to region eu for good (no leave or unpin command), so a cluster
    of another region could not use them. Now their membership is uncommitted (they
    evaluate nothing for it) and ``cluster abandon DIR`` erases it (share overwritten,
    audited) and the pin, on the nodes ``DIR/creating.json`` recorded."""
    code, err = nodes.create("cl-eu", "eu", cut="/v1/cluster/dkg/finish")
    assert code == 1 and err.startswith("error: ") and "x3" in err, err
    cid = json.loads((nodes.tmp / "cl-eu" / "creating.json").read_text())["cluster_id"]
    for n in ("x1", "x2"):
        assert nodes.files(n) == sorted(
            [f"{cid}.json", f"{cid}.pending", f"{cid}.share", "node.json"]
        )
        entry = nodes.info(n)["clusters"][cid]  # type: ignore[index]
        assert entry["pending"] is True
    assert nodes.files("x3") == []
    r = cli_here("cluster", "abandon", "cl-eu", "--json", cwd=nodes.tmp)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"cluster_id": cid, "erased": ["x1", "x2"]}
    assert not (nodes.tmp / "cl-eu" / "creating.json").exists()
    for n in NODES:
        assert nodes.files(n) == [] and nodes.info(n)["region"] is None
    for n in ("x1", "x2"):
        log = Keyring.open(nodes.tmp / n).audit_log().entries()
        assert [e.data for e in log if e.event == "cluster-abort"][-1]["cluster"] == cid
    code, err = nodes.create("cl-us", "us")
    assert code == 0, err
    assert read_cluster(nodes.tmp / "cl-us").region == "us"


def test_a_create_cut_during_its_commits_is_finished_by_running_it_again(nodes: Nodes) -> None:
    """x3's commit is cut: cluster.json is written, x3's membership is not committed (status
    says so, abandon refuses the created cluster); the same command again finishes it."""
    code, err = nodes.create("cl-c", "us", cut="/v1/cluster/dkg/commit")
    assert code == 1 and "x3" in err and "did not commit" in err, err
    cfg = read_cluster(nodes.tmp / "cl-c")
    r = cli_here("cluster", "status", "cl-c", "--json", cwd=nodes.tmp)
    status = {n["name"]: n for n in json.loads(r.stdout)["nodes"]}
    assert status["x3"]["share_ok"] is False and "never committed" in status["x3"]["error"]
    assert status["x1"]["share_ok"] is True
    r = cli_here("cluster", "abandon", "cl-c", cwd=nodes.tmp)
    assert r.returncode == 1 and "cluster.json exists" in r.stderr, r.stderr
    url = nodes.servers["x1"].url
    by_id = ["--cluster-id", cfg.cluster_id, "--node", f"x1={url}"]
    r = cli_here("cluster", "abandon", "elsewhere", *by_id, cwd=nodes.tmp)
    assert r.returncode == 1 and "completed" in r.stderr, r.stderr
    code, err = nodes.create("cl-c", "us")
    assert code == 0, err
    assert read_cluster(nodes.tmp / "cl-c") == cfg
    assert not (nodes.tmp / "cl-c" / "creating.json").exists()
    r = cli_here("cluster", "status", "cl-c", "--json", cwd=nodes.tmp)
    assert r.returncode == 0 and json.loads(r.stdout)["usable"] == 3, r.stdout
    assert not any(f.endswith(".pending") for n in NODES for f in nodes.files(n))


def test_a_refresh_after_a_create_cut_during_its_commits_is_refused(nodes: Nodes) -> None:
    """(cluster3) x3's commit is cut, then ``cluster refresh`` ran: it promoted the new
    epoch on every node but left x3's membership uncommitted (``.pending``), so x3
    evaluated nothing for the cluster at any epoch. Now the refresh is refused while
    ``DIR/creating.json`` records the create as unfinished, nothing is staged; the create
    run again finishes it and the refresh then works."""
    code, err = nodes.create("cl-f", "us", cut="/v1/cluster/dkg/commit")
    assert code == 1 and "did not commit" in err, err
    cfg = read_cluster(nodes.tmp / "cl-f")
    r = cli_here("cluster", "refresh", "cl-f", cwd=nodes.tmp)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: ") and "keysplit cluster create" in r.stderr, r.stderr
    assert read_cluster(nodes.tmp / "cl-f") == cfg
    for n in NODES:
        entry = node_info(nodes.urls()[n])["clusters"][cfg.cluster_id]  # type: ignore[index]
        assert entry["epoch"] == 1 and not entry.get("staged"), entry
    code, err = nodes.create("cl-f", "us")
    assert code == 0, err
    r = cli_here("cluster", "refresh", "cl-f", cwd=nodes.tmp)
    assert r.returncode == 0, r.stderr
    assert read_cluster(nodes.tmp / "cl-f").epoch == 2
    r = cli_here("cluster", "status", "cl-f", "--json", cwd=nodes.tmp)
    assert r.returncode == 0 and json.loads(r.stdout)["usable"] == 3, r.stdout
    assert not any(f.endswith(".pending") for n in NODES for f in nodes.files(n))


def test_a_node_whose_creation_is_not_committed_refuses_a_refresh(nodes: Nodes) -> None:
    """(cluster3) The same cut create, refreshed from a copy of the directory without
    ``creating.json`` (or by an older coordinator): x3 took part, promoted the new epoch
    and stayed ``.pending``. Now x3 refuses the refresh's deal, so no node stages anything;
    the create run again (with ``creating.json``) finishes it."""
    code, err = nodes.create("cl-g", "us", cut="/v1/cluster/dkg/commit")
    assert code == 1 and "did not commit" in err, err
    cfg = read_cluster(nodes.tmp / "cl-g")
    creating = nodes.tmp / "cl-g" / "creating.json"
    kept = creating.read_bytes()
    creating.unlink()
    r = cli_here("cluster", "refresh", "cl-g", cwd=nodes.tmp)
    assert r.returncode == 1 and r.stderr.startswith("error: "), r.stderr
    assert "x3" in r.stderr and "not committed" in r.stderr, r.stderr
    assert read_cluster(nodes.tmp / "cl-g") == cfg
    for n in NODES:
        entry = node_info(nodes.urls()[n])["clusters"][cfg.cluster_id]  # type: ignore[index]
        assert entry["epoch"] == 1 and not entry.get("staged"), entry
    creating.write_bytes(kept)
    code, err = nodes.create("cl-g", "us")
    assert code == 0, err
    assert not any(f.endswith(".pending") for n in NODES for f in nodes.files(n))


def test_a_create_cut_before_cluster_json_is_rerun_under_the_same_id(nodes: Nodes) -> None:
    """x3's finish is cut again: running the same command erases what the cut round left
    on x1 and x2 and runs the DKG again under the recorded id; nothing else stays (each
    node gains the cluster's files and, if this is its first cluster, its region pin
    node.json: whether earlier tests of the module left one, this test does not assume)."""
    before = {n: nodes.files(n) for n in NODES}
    assert all(nodes.info(n)["region"] in (None, "us") for n in NODES)
    code, err = nodes.create("cl-r", "us", cut="/v1/cluster/dkg/finish")
    assert code == 1, err
    cid = json.loads((nodes.tmp / "cl-r" / "creating.json").read_text())["cluster_id"]
    code, err = nodes.create("cl-r", "us")
    assert code == 0, err
    assert read_cluster(nodes.tmp / "cl-r").cluster_id == cid
    for n in NODES:
        gained = {f"{cid}.json", f"{cid}.share", "node.json"}
        assert nodes.files(n) == sorted(set(before[n]) | gained)
        assert nodes.info(n)["region"] == "us"
    r = cli_here("cluster", "status", "cl-r", "--json", cwd=nodes.tmp)
    assert r.returncode == 0 and json.loads(r.stdout)["usable"] == 3, r.stdout


def test_a_membership_no_cluster_json_describes_is_reported_and_abandoned(nodes: Nodes) -> None:
    """(cluster5) Two memberships no command could clear: (a) what a create cut before
    cluster.json left on code before the uncommitted marker (stop 35): x1 and x2 hold a
    membership x3 lacks, with no ``.pending`` and no ``creating.json``; the nodes called it
    completed, so ``cluster abandon --cluster-id`` was refused and ``cluster status`` of the
    nodes' other cluster said nothing of it. (b) A completed cluster whose ``cluster.json``
    is gone (or was written on another host). Now status names, for each node, a membership
    of another cluster that some of its members lack, and ``cluster abandon --cluster-id ID
    --node ... --completed`` erases a completed membership (refused while DIR/cluster.json
    describes that cluster); the node keeps its region pin while it is a member of another."""
    t = nodes.tmp
    code, err = nodes.create("cl-35", "us", cut="/v1/cluster/dkg/finish")
    assert code == 1, err
    cid = json.loads((t / "cl-35" / "creating.json").read_text())["cluster_id"]
    for n in ("x1", "x2"):  # as code before the marker left it
        (t / n / "cluster" / f"{cid}.pending").unlink()
    (t / "cl-35" / "creating.json").unlink()
    r = cli_here("cluster", "status", "cl-r", "--json", cwd=t)
    assert r.returncode == 0, r.stderr
    others = {n["name"]: n["others"] for n in json.loads(r.stdout)["nodes"]}
    assert others["x1"][cid] == others["x2"][cid] == "incomplete" and cid not in others["x3"]
    r = cli_here("cluster", "status", "cl-r", cwd=t)
    assert f"cluster {cid}: incomplete" in r.stdout and "--completed" in r.stdout, r.stdout
    everywhere = [f"--node={n}={u}" for n, u in nodes.urls().items()]
    r = cli_here("cluster", "abandon", "cl-35", "--cluster-id", cid, *everywhere, cwd=t)
    assert r.returncode == 1 and "--completed" in r.stderr, r.stderr
    r = cli_here("cluster", "abandon", "cl-35", "--cluster-id", cid, *everywhere, "--completed",
            "--json", cwd=t)  # fmt: skip
    assert r.returncode == 0 and json.loads(r.stdout)["erased"] == ["x1", "x2"], r.stderr
    for n in NODES:
        assert not [f for f in nodes.files(n) if f.startswith(cid)]
        assert nodes.info(n)["region"] == "us"  # still a member of cl-r
    r = cli_here("cluster", "status", "cl-r", "--json", cwd=t)
    assert all(cid not in n["others"] for n in json.loads(r.stdout)["nodes"]), r.stdout
    log = Keyring.open(t / "x1").audit_log().entries()
    last = [e.data for e in log if e.event == "cluster-abort"][-1]
    assert last["cluster"] == cid and last["round"] == "membership"
    # (b) a created cluster whose cluster.json goes
    code, err = nodes.create("cl-gone", "us")
    assert code == 0, err
    gone = read_cluster(t / "cl-gone").cluster_id
    args = ["cluster", "abandon", "cl-gone", "--cluster-id", gone, *everywhere, "--completed"]
    r = cli_here(*args, cwd=t)
    assert r.returncode == 1 and "cluster.json describes" in r.stderr, r.stderr
    (t / "cl-gone" / "cluster.json").unlink()
    r = cli_here(*args, "--json", cwd=t)
    assert r.returncode == 0 and json.loads(r.stdout)["erased"] == list(NODES), r.stderr
    for n in NODES:
        assert gone not in nodes.info(n)["clusters"]  # type: ignore[operator]


def test_a_create_cut_before_cluster_json_is_rerun_in_another_region(tmp_path: Path) -> None:
    """(cluster3) A create in region eu cut at x3's finish, run again with ``--region us``:
    the region check ran before the cut round was abandoned, so x1 and x2 (pinned to eu by
    that round) refused it ('serves region 'eu'') and only ``cluster abandon DIR`` first
    helped. Now the rerun erases the recorded round (and its pins) first, then creates the
    cluster in us under the recorded id."""
    with fresh_nodes(tmp_path, "kv") as fresh:
        code, err = fresh.create("cl", "eu", cut="/v1/cluster/dkg/finish")
        assert code == 1, err
        cid = json.loads((tmp_path / "cl" / "creating.json").read_text())["cluster_id"]
        assert fresh.info("x1")["region"] == "eu"
        code, err = fresh.create("cl", "us")
        assert code == 0, err
        cfg = read_cluster(tmp_path / "cl")
        assert (cfg.cluster_id, cfg.region) == (cid, "us")
        assert not (tmp_path / "cl" / "creating.json").exists()
        for n in NODES:
            assert fresh.info(n)["region"] == "us"
            assert not any(f.endswith(".pending") for f in fresh.files(n))
        r = cli_here("cluster", "status", "cl", "--json", cwd=tmp_path)
        assert r.returncode == 0 and json.loads(r.stdout)["usable"] == 3, r.stdout


def test_a_cluster_id_that_is_not_hex_reaches_no_file_outside_the_cluster_directory(
    tmp_path: Path,
) -> None:
    """(review2) A node checked a request's cluster id only for its length (32): an id such
    as ``../vvv...`` made ``dkg/abort`` read ``DIR/vvv....json`` and overwrite and unlink
    ``DIR/vvv....share.next``, files outside the node's ``cluster/`` directory (eval, with
    a ``datakey`` token, and commit read or renamed such files alike). Every id must be 32
    hex digits now. Real node process, request over its Unix socket."""
    from test_cluster_cache import dealt_config

    from keysplit import FormatError
    from keysplit.service.cluster_admin import _post
    from keysplit.service.cluster_client import NO_TLS

    with served_nodes(tmp_path, ["y1"], "ky") as (_, servers):
        home = tmp_path / "y1"
        (home / "cluster").mkdir(mode=0o700, exist_ok=True)  # a node of some cluster has it
        cfg = dealt_config(lambda i: f"unix:/absent{i}.sock")
        doc = cfg.public_dict() | {"me": "n1"}
        (home / ("v" * 29 + ".json")).write_text(json.dumps(doc))  # named by the id below
        victim = home / ("v" * 29 + ".share.next")
        victim.write_bytes(b"not the node's to erase")
        for path, body in (
            ("/v1/cluster/dkg/abort", {"epoch": cfg.epoch}),
            ("/v1/cluster/dkg/commit", {"epoch": cfg.epoch + 1}),
            ("/v1/cluster/dkg/abandon", {}),
        ):
            body = {"cluster_id": "../" + "v" * 29, **body}
            with pytest.raises(FormatError, match="32 hex digits"):
                _post(servers["y1"].url, path, body, None, "y1", NO_TLS)
        assert victim.read_bytes() == b"not the node's to erase"


def test_a_token_pinned_to_one_region_runs_no_admin_request_of_another(tmp_path: Path) -> None:
    """(review2) A token pinned to a region (``token add --region eu``) is refused by a
    node of another region for evaluations, but the admin endpoints (deal, finish, commit,
    abort, abandon, and the recovery rounds) took it from any region: the eu coordinator's
    token, registered on every node, could run rounds on and erase the shares of us
    nodes. A node pinned to another region, or a round of another region, refuses it now.
    Real node process; the token is sent over its Unix socket."""
    import os
    import secrets as _secrets
    from dataclasses import replace

    from test_cluster_cache import dealt_config

    from keysplit import ClusterError
    from keysplit.service.cluster_admin import _post
    from keysplit.service.cluster_client import NO_TLS
    from keysplit.service.tokens import new_token

    with served_nodes(tmp_path, ["y2"], "kz") as (_, servers):
        home, url = tmp_path / "y2", servers["y2"].url
        token = new_token()
        (tmp_path / "eu-token").write_text(token + "\n")
        os.chmod(tmp_path / "eu-token", 0o600)
        quorum = [
            a for c in "ab" for a in ("--share", str(share_file(tmp_path / "y2-shares", f"y2{c}")))
        ]
        r = cli_here(
            "token", "add", "y2", "--name", "eu-admin", "--token-file", "eu-token",
            "--allow", "cluster", "--subject-prefix", "", "--region", "eu", *quorum, cwd=tmp_path,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        info = node_info(url)
        me = {
            "name": "y2", "index": 1, "url": url,
            "keyring_id": info["keyring_id"], "hpke_public_key": info["hpke_public_key"],
        }  # fmt: skip
        other = dict(me, name="y9", index=2, keyring_id=_secrets.token_hex(16))
        deal = {
            "cluster_id": "ab" * 16, "region": "us", "threshold": 2, "epoch": 1,
            "nodes": [me, other], "me": "y2",
        }  # fmt: skip
        with pytest.raises(ClusterError, match="is for region 'eu', not 'us'"):
            _post(url, "/v1/cluster/dkg/deal", deal, token, "y2", NO_TLS)  # a round of us
        assert _post(url, "/v1/cluster/dkg/deal", dict(deal, region="eu"), token, "y2", NO_TLS)
        cfg = dealt_config(lambda i: f"unix:/absent{i}.sock")
        mine = replace(
            cfg.nodes[0], keyring_id=me["keyring_id"], hpke_public_key=me["hpke_public_key"]
        )
        cfg = replace(cfg, region="us", nodes=(mine, *cfg.nodes[1:]))
        recover = {"cluster": cfg.public_dict(), "me": mine.name, "dealings": {}, "blinded": {}}
        with pytest.raises(ClusterError, match="is for region 'eu', not 'us'"):  # a us share
            _post(url, "/v1/cluster/recover/finish", recover, token, "y2", NO_TLS)
        (home / "cluster").mkdir(mode=0o700, exist_ok=True)
        (home / "cluster" / "node.json").write_text('{"region": "us"}\n')  # a node of us
        for path, body in (
            ("/v1/cluster/dkg/abandon", {"cluster_id": "ab" * 16}),
            ("/v1/cluster/dkg/abort", {"cluster_id": "ab" * 16, "epoch": 1}),
            ("/v1/cluster/dkg/commit", {"cluster_id": "ab" * 16, "epoch": 1}),
        ):
            with pytest.raises(ClusterError, match="is for region 'eu', not 'us'"):
                _post(url, path, body, token, "y2", NO_TLS)
