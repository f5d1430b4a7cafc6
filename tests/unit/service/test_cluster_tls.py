"""A key cluster whose nodes listen on TLS with client certificates (mTLS), end to end.

Issue 22 asks every command that talks to a service to take the same ``--ca/--cert/--key``;
across data centres a cluster's nodes are ``https://`` services with a private CA and
``serve --client-ca``. Two node keyrings served that way (and on a Unix socket, where their
custodians unseal them), a token allowed ``cluster`` and ``datakey`` created on n1 and
added to n2; then ``keysplit cluster create/status`` and ``keysplit.ClusterClient`` over
TLS: refused with a TLS hint without the CA or the client certificate, working with both.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from service_helpers import Server, cli, make_certs, make_keyring, make_token, share_file, unseal

from keysplit import ClusterClient, ClusterError

pytest.importorskip("rbcl")
pytestmark = pytest.mark.slow


def test_cluster_of_mtls_nodes_from_the_cli_and_the_library(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    sockdir = Path(tempfile.mkdtemp(prefix="kt", dir="/tmp"))
    servers: dict[str, Server] = {}
    urls: dict[str, str] = {}
    ca = ("--ca", str(certs["ca"]))
    mine = ("--cert", str(certs["client-cert"]), "--key", str(certs["client-key"]))
    try:
        for n in ("n1", "n2"):
            make_keyring(tmp_path, 2, [f"{n}a", f"{n}b"], dirname=n)
            servers[n] = Server(
                tmp_path / n,
                sockdir / f"{n}.sock",
                *("--listen", "127.0.0.1:0"),  # the port it was given: from its log
                *("--tls-cert", str(certs["server-cert"]), "--tls-key", str(certs["server-key"])),
                *("--client-ca", str(certs["ca"])),
            ).start()
            urls[n] = f"https://127.0.0.1:{servers[n].tcp_port}"
            for c in "ab":
                r = unseal(tmp_path, tmp_path / n, servers[n], f"{n}{c}")
                assert r.returncode == 0, r.stderr
        n1_shares = [share_file(tmp_path / "n1-shares", f"n1{c}") for c in "ab"]
        token = make_token(tmp_path, tmp_path / "n1", "ops", "cluster,datakey", "u/", n1_shares)
        (tmp_path / "token").write_text(token)
        add = ["token", "add", "n2", "--name", "ops", "--token-file", "token"]
        add += ["--allow", "cluster,datakey", "--subject-prefix", "u/"]
        for c in "ab":
            add += ["--share", str(share_file(tmp_path / "n2-shares", f"n2{c}"))]
        r = cli(*add, cwd=tmp_path)
        assert r.returncode == 0, r.stderr

        create = ["cluster", "create", "cl", "-t", "2", "--region", "in", "--token-file", "token"]
        create += ["--node", f"n1={urls['n1']}", "--node", f"n2={urls['n2']}"]
        # the nodes' private CA not given: one error line naming the node, a TLS hint
        r = cli(*create, *mine, cwd=tmp_path)
        assert r.returncode == 1, r.stderr
        assert r.stderr.startswith("error: node n1") and "Traceback" not in r.stderr
        assert "--ca" in r.stderr and "serve running" not in r.stderr
        # no client certificate for nodes served with --client-ca
        r = cli(*create, *ca, cwd=tmp_path)
        assert r.returncode == 1 and "--cert" in r.stderr, r.stderr
        # --key without --cert is a usage error, as for unseal/seal
        r = cli(*create, *ca, "--key", str(certs["client-key"]), cwd=tmp_path)
        assert r.returncode == 2 and "--key goes with --cert" in r.stderr, r.stderr
        assert not (tmp_path / "cl").exists()

        r = cli(*create, *ca, *mine, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        r = cli(
            "cluster", "status", "cl", "--json", "--token-file", "token", *ca, *mine, cwd=tmp_path
        )
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["usable"] == 2 and doc["commitments_ok"] is True

        tls = {"ca": str(certs["ca"]), "cert": str(certs["client-cert"])}
        tls["key"] = str(certs["client-key"])
        with ClusterClient(tmp_path / "cl", token=token, **tls) as c:
            rec = c.encrypt(b"over mTLS", subject="u/1")
            assert c.decrypt(rec, subject="u/1") == b"over mTLS"
        with ClusterClient(tmp_path / "cl", token=token, ca=tls["ca"]) as c:
            with pytest.raises(ClusterError) as ei:  # no client certificate: no node answers
                c.decrypt(rec, subject="u/1")
            assert "n1" in str(ei.value) and "n2" in str(ei.value)
    finally:
        for s in servers.values():
            if s.proc is not None and s.proc.poll() is None:
                s.stop()
        shutil.rmtree(sockdir, ignore_errors=True)
