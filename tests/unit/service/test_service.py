"""The key service end to end, with real processes: `keysplit serve` in a subprocess on a
temporary Unix socket, custodians as `keysplit unseal --server` processes, clients as
separate Python processes and threads. Every wait is bounded."""

from __future__ import annotations

import dataclasses
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_helpers import (
    KEYSPLIT,
    TIMEOUT,
    Server,
    cli,
    make_certs,
    make_keyring,
    make_token,
    share_file,
    unseal,
)

import keysplit
from keysplit import Client, Keyring, PermissionDenied, SealedError
from keysplit.service import RecordKeyring, StaleNonceError
from keysplit.service.tokens import OPERATIONS, TokenList, mac_key

pytestmark = pytest.mark.slow


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory for sockets (AF_UNIX paths are limited to ~107 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="ks", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_done_when_scenario(tmp_path: Path, sockdir: Path) -> None:
    """The issue's shell scenario, verbatim but for paths; then SIGTERM and restart."""
    sock = sockdir / "ks.sock"
    script = textwrap.dedent(
        f"""
        set -e
        export PATH="{Path(KEYSPLIT).parent}:$PATH"
        keysplit init vault -k 2 -c a -c b -c c --plain-shares
        A=vault-shares/a.g1.kss; B=vault-shares/b.g1.kss; C=vault-shares/c.g1.kss
        keysplit token create vault --name app --allow encrypt,decrypt \\
            --subject-prefix contacts/ --share "$A" --share "$B" > token
        keysplit serve vault --socket {sock} < /dev/null > /dev/null 2> serve.log &
        echo $! > serve.pid
        for i in $(seq 1 300); do [ -S {sock} ] && break; sleep 0.1; done
        keysplit unseal vault --server unix:{sock} --share "$A"
        keysplit unseal vault --server unix:{sock} --share "$C"
        python -c 'import keysplit; c = keysplit.Client("unix:{sock}", token=open("token").read().strip()); b = c.encrypt(b"x", subject="contacts/1"); assert c.decrypt(b, subject="contacts/1") == b"x"'
        """  # noqa: E501
    )
    pidfile = tmp_path / "serve.pid"
    try:
        r = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT
        )
        assert r.returncode == 0, r.stderr + (tmp_path / "serve.log").read_text()
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        token = (tmp_path / "token").read_text().strip()
        c = Client(f"unix:{sock}", token=token)
        rec = c.encrypt(b"kept", subject="contacts/2")
        with pytest.raises(PermissionDenied):
            c.encrypt(b"x", subject="mail/1")
    finally:  # never leave the background server running, even if the script timed out
        if pidfile.exists():
            subprocess.run(["kill", "-TERM", pidfile.read_text().strip()], timeout=10)
    # serve exits, keys dropped; restart: sealed until two custodians unseal again
    for _ in range(300):
        if not sock.exists():
            break
        threading.Event().wait(0.1)
    assert not sock.exists()
    vault = tmp_path / "vault"
    with Server(vault, sock) as srv:
        c = Client(srv.url, token=token)
        with pytest.raises(SealedError):
            c.encrypt(b"x", subject="contacts/1")
        assert unseal(tmp_path, vault, srv, "b").returncode == 0
        with pytest.raises(SealedError):
            c.decrypt(rec, subject="contacts/2")
        assert unseal(tmp_path, vault, srv, "c").returncode == 0
        assert c.decrypt(rec, subject="contacts/2") == b"kept"
    events = [e.event for e in Keyring.open(vault).audit_log().entries()]
    assert events.count("service-unseal") == 2 and events.count("service-seal") >= 1
    assert "token-create" in events and "token-denied" in events


def test_init_verify_keyring_stays_sealed_under_remote_unseal(
    tmp_path: Path, sockdir: Path
) -> None:
    """Issue 18's Done-when (and issue 21 item 4), as a custodian types it: a keyring made
    with ``init --verify`` is not unsealed by two remote custodians before anyone proved
    possession; the service's status names the missing proofs."""
    sock = sockdir / "s.sock"
    script = textwrap.dedent(
        f"""
        set -e
        export PATH="{Path(KEYSPLIT).parent}:$PATH"
        keysplit init kr -k 2 -c a -c b -c c --plain-shares --verify
        keysplit serve kr --socket {sock} < /dev/null > /dev/null 2> serve.log &
        echo $! > serve.pid
        for i in $(seq 1 300); do [ -S {sock} ] && break; sleep 0.1; done
        keysplit unseal kr --server unix:{sock} -s kr-shares/a.g1.kss
        if keysplit unseal kr --server unix:{sock} -s kr-shares/b.g1.kss 2> b.err; then
            exit 3
        fi
        """
    )
    pidfile = tmp_path / "serve.pid"
    try:
        r = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT
        )
        assert r.returncode == 0, r.stderr + (tmp_path / "serve.log").read_text()
        err = (tmp_path / "b.err").read_text()
        assert "error:" in err and "awaits proofs of possession from: a, b, c" in err
        status = Client(f"unix:{sock}").service_status()
        assert status["sealed"] is True
        assert status["verification"]["kind"] == "init"
        assert status["verification"]["missing"] == ["a", "b", "c"]
        with pytest.raises(SealedError):
            Client(f"unix:{sock}", token="kst1_" + "A" * 43).encrypt(b"x", subject="s")
    finally:
        if pidfile.exists():
            subprocess.run(["kill", "-TERM", pidfile.read_text().strip()], timeout=10)
    events = [e.event for e in Keyring.open(tmp_path / "kr").audit_log().entries()]
    assert events == ["init", "verify-start"]  # nothing unsealed, nothing served


def test_a_foreign_share_sent_to_the_service_names_its_custodian(
    tmp_path: Path, sockdir: Path
) -> None:
    """The local unseal names a share of another keyring by the custodian its file carries;
    ``unseal --server`` said only "share 2 (set ...) does not belong to this keyring" (the
    service knows only its own custodians). Now the CLI adds the name its file carries."""
    vault = make_keyring(tmp_path, 2, ["a", "b"])
    make_keyring(tmp_path, 2, ["x", "y"], dirname="other")
    foreign = share_file(tmp_path / "other-shares", "y")
    with Server(vault, sockdir / "s.sock") as srv:
        bad = unseal(tmp_path, vault, srv, foreign)
        assert bad.returncode == 1 and "Traceback" not in bad.stderr
        (line,) = [ln for ln in bad.stderr.splitlines() if ln.startswith("error:")]
        assert line.startswith(f"error: {foreign} (custodian y): share 2 (set "), line
        assert "does not belong to this keyring" in line
        assert unseal(tmp_path, vault, srv, "a").returncode == 0
        again = unseal(tmp_path, vault, srv, "a")  # the service names its own custodian
        assert again.returncode == 1 and "share 1 (a) was already added" in again.stderr
        assert "(custodian a)" not in again.stderr
        # a forged share of this set completes the quorum and fails its recovery check:
        # a verdict on the quorum, not on the last custodian, who is not singled out
        good = keysplit.load_share(share_file(tmp_path / "vault-shares", "b").read_bytes())
        forged = tmp_path / "b-forged.kss"
        forged.write_text(
            keysplit.ceremony.share_file_text(
                dataclasses.replace(good, payload=bytes(len(good.payload))), "b"
            )
        )
        last = unseal(tmp_path, vault, srv, forged)
        assert last.returncode == 1 and "recovery check" in last.stderr, last.stderr
        assert "(custodian b)" not in last.stderr


def test_three_custodians_3of5_wrong_share_first_and_clients(tmp_path: Path, sockdir: Path) -> None:
    names = ["a", "b", "c", "d", "e"]
    vault = make_keyring(tmp_path, 3, names)
    other = make_keyring(tmp_path, 2, ["x", "y"], dirname="other")
    shares = tmp_path / "vault-shares"
    token = make_token(
        tmp_path, vault, "app", "encrypt,decrypt", "user/", [share_file(shares, n) for n in "abc"]
    )
    srv = Server(vault, sockdir / "s.sock").start()
    try:
        # custodian b first sends a share of another keyring: named, not counted
        bad = unseal(tmp_path, vault, srv, share_file(tmp_path / "other-shares", "x"))
        assert bad.returncode == 1
        assert "does not belong to this keyring" in bad.stderr and "Traceback" not in bad.stderr
        assert Client(srv.url).service_status()["progress"]["have"] == 0
        assert other.exists()
        for i, n in enumerate("bde"):
            r = unseal(tmp_path, vault, srv, n)
            assert r.returncode == 0, r.stderr
            st = Client(srv.url).service_status()
            if i < 2:
                assert st["sealed"] and st["progress"]["have"] == i + 1
        assert Client(srv.url).service_status()["sealed"] is False

        # four client processes encrypt and decrypt concurrently
        worker = textwrap.dedent(
            """
            import sys, keysplit
            c = keysplit.Client(sys.argv[1], token=sys.argv[2])
            w = sys.argv[3]
            subjects = [f"user/{w}/{i % 7}" for i in range(300)]
            pts = [f"{w}:{i}".encode() for i in range(300)]
            out = []
            for lo in range(0, 300, 50):
                recs = c.encrypt_many(subjects[lo:lo+50], pts[lo:lo+50], {"t": "m"})
                assert c.decrypt_many(subjects[lo:lo+50], recs, {"t": "m"}) == pts[lo:lo+50]
                out += recs
            sys.stdout.write("\\n".join(r.hex() for r in out))
            """
        )
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", worker, srv.url, token, str(w)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for w in range(4)
        ]
        outputs = []
        try:
            for p in procs:
                out, err = p.communicate(timeout=TIMEOUT)
                assert p.returncode == 0, err
                outputs.append([bytes.fromhex(h) for h in out.split()])
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
    finally:
        srv.stop()
    # restart: sealed until unsealed again; every record still decrypts
    with Server(vault, sockdir / "s.sock") as srv2:
        c = Client(srv2.url, token=token)
        with pytest.raises(SealedError):
            c.decrypt_many(["user/0/0"], [outputs[0][0]], {"t": "m"})
        for n in "ace":
            assert unseal(tmp_path, vault, srv2, n).returncode == 0
        for w, recs in enumerate(outputs):
            subjects = [f"user/{w}/{i % 7}" for i in range(300)]
            assert c.decrypt_many(subjects, recs, {"t": "m"}) == [
                f"{w}:{i}".encode() for i in range(300)
            ]


@pytest.fixture
def served(tmp_path: Path, sockdir: Path) -> Iterator[tuple[Path, Server, dict[str, str]]]:
    """A 2-of-3 keyring with two tokens, served and unsealed (set up through the library,
    not the CLI, to keep process start-ups few; the CLI paths are tested above)."""
    kr, shares = Keyring.create(tmp_path / "vault", 2, ["a", "b", "c"])
    with kr.unseal([shares["a"], shares["b"]]) as ukr:
        key = mac_key(ukr.audit_key(), kr.keyring_id)
        tl = TokenList.read(kr.path, kr.keyring_id)
        tokens = {
            "enc": tl.create(key, name="enc", allow=["encrypt"], subject_prefix="contacts/")[0],
            "all": tl.create(key, name="all", allow=list(OPERATIONS), subject_prefix="")[0],
        }
    with Server(kr.path, sockdir / "s.sock") as srv:
        c = Client(srv.url)
        for n in "ab":
            c.submit_share(shares[n], c.unseal_offer(), keyring_id=kr.keyring_id)
        assert c.service_status()["sealed"] is False
        yield kr.path, srv, tokens


def test_out_of_policy_and_unknown_tokens_refused(
    served: tuple[Path, Server, dict[str, str]],
) -> None:
    vault, srv, tokens = served
    enc = Client(srv.url, token=tokens["enc"])
    rec = enc.encrypt(b"hi", subject="contacts/9")
    with pytest.raises(PermissionDenied, match="not allowed to decrypt"):
        enc.decrypt(rec, subject="contacts/9")  # operation outside policy
    with pytest.raises(PermissionDenied, match="contacts/"):
        enc.encrypt_many(["contacts/1", "mail/1"], [b"a", b"b"])  # one subject outside
    with pytest.raises(PermissionDenied, match="unknown or revoked"):
        Client(srv.url, token="kst1_" + "A" * 43).encrypt(b"x", subject="contacts/1")
    with pytest.raises(PermissionDenied, match="token is required"):
        Client(srv.url).encrypt(b"x", subject="contacts/1")
    assert Client(srv.url, token=tokens["all"]).decrypt(rec, subject="contacts/9") == b"hi"
    denied = [e for e in Keyring.open(vault).audit_log().entries() if e.event == "token-denied"]
    assert len(denied) == 4
    # each denial names the operation tried, also when the headers alone refuse it
    assert [e.data["operation"] for e in denied] == ["decrypt", "encrypt", "encrypt", "encrypt"]


def test_stale_nonce_share_refused(tmp_path: Path, sockdir: Path) -> None:
    kr, shares = Keyring.create(tmp_path / "vault", 2, ["a", "b", "c"])
    with Server(kr.path, sockdir / "s.sock") as srv:
        c = Client(srv.url)
        old = c.unseal_offer()
        assert c.submit_share(shares["a"], old, keyring_id=kr.keyring_id)["progress"]["have"] == 1
        assert c.reset_unseal() is True
        assert c.service_status()["progress"]["have"] == 0
        with pytest.raises(StaleNonceError, match="stale nonce"):
            c.submit_share(shares["b"], old, keyring_id=kr.keyring_id)
        new = c.unseal_offer()
        assert new["nonce"] != old["nonce"] and new["public_key"] != old["public_key"]
        assert c.service_status()["progress"]["have"] == 0  # the stale share was not counted
        with pytest.raises(keysplit.KeysplitError, match="serves keyring"):
            c.submit_share(shares["b"], new, keyring_id="00" * 16)  # CLI of another keyring


def test_unseal_timeout_socket_in_use_and_sigint(tmp_path: Path, sockdir: Path) -> None:
    kr, shares = Keyring.create(tmp_path / "vault", 2, ["a", "b", "c"])
    # 2 s, not 0.5: the share must arrive within the timeout of the offer it answers (a
    # loaded machine can take over 0.5 s between the two: StaleNonceError); then the wait
    # outlasts the timeout, so the attempt has expired whatever the load
    srv = Server(kr.path, sockdir / "s.sock", "--unseal-timeout", "2").start()
    try:
        c = Client(srv.url)
        c.submit_share(shares["a"], c.unseal_offer(), keyring_id=kr.keyring_id)
        threading.Event().wait(2.1)
        st = c.service_status()
        assert st["sealed"] and st["progress"]["have"] == 0
        # a second server on the same socket refuses to start (and leaves it alone)
        r = cli("serve", kr.path, "--socket", srv.sock, cwd=tmp_path)
        assert r.returncode == 1 and "another server is listening" in r.stderr
        assert c.service_status()["sealed"] is True
    finally:
        assert srv.stop(signal.SIGINT) == 0
    assert not srv.sock.exists() and "stopped (SIGINT)" in srv.log.read_text()


def test_concurrent_clients_in_threads(served: tuple[Path, Server, dict[str, str]]) -> None:
    _, srv, tokens = served
    client = Client(srv.url, token=tokens["all"])
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for j in range(20):
                subjects = [f"t{t}/{k}" for k in range(10)]
                pts = [f"{t}.{j}.{k}".encode() for k in range(10)]
                recs = client.encrypt_many(subjects, pts)
                assert client.decrypt_many(subjects, recs) == pts
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(TIMEOUT)
    assert not any(th.is_alive() for th in threads)
    assert errors == []


def test_management_endpoints_and_protocol(
    tmp_path: Path, served: tuple[Path, Server, dict[str, str]]
) -> None:
    vault, srv, tokens = served
    c = Client(srv.url, token=tokens["all"])
    assert isinstance(c, RecordKeyring)
    rec = c.encrypt(b"doomed", subject="u/1")
    c.set_legal_hold("u/1", True)
    with pytest.raises(keysplit.LegalHoldError):
        c.shred("u/1")
    with pytest.raises(TypeError, match="True or False"):
        c.set_legal_hold("u/1", 0)  # type: ignore[arg-type]  # was: lifted
    with pytest.raises(keysplit.LegalHoldError):
        c.shred("u/1")
    c.set_legal_hold("u/1", False)
    assert c.shred("u/1") is True
    with pytest.raises(keysplit.ShreddedError):
        c.decrypt(rec, subject="u/1")
    keep = c.encrypt(b"kept", subject="u/2")
    assert c.rotate() == 2
    result = c.rewrap()
    assert result["kek_version"] == 2 and result["remaining"] == 0
    assert c.decrypt(keep, subject="u/2") == b"kept"
    st = c.status()
    assert st.current_kek == 2 and not st.sealed
    events = [e.event for e in Keyring.open(vault).audit_log().entries()]
    for ev in ("legal-hold", "shred", "rotate", "rewrap"):
        assert ev in events
    # seal over the socket (no token needed), then everything is SealedError
    r = cli("seal", "--server", srv.url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with pytest.raises(SealedError):
        c.decrypt(keep, subject="u/2")
    assert Client(srv.url).service_status()["sealed"] is True


def test_datakey_cache_and_revocation(
    tmp_path: Path, served: tuple[Path, Server, dict[str, str]]
) -> None:
    vault, srv, tokens = served
    cached = Client(srv.url, token=tokens["all"], cache_max_records=5, cache_max_age=60)
    plain = Client(srv.url, token=tokens["all"])
    recs = cached.encrypt_many([f"k/{i % 3}" for i in range(12)], [b"r%d" % i for i in range(12)])
    # sealed locally with served keys: the service opens them, and vice versa
    assert plain.decrypt_many([f"k/{i % 3}" for i in range(12)], recs) == [
        b"r%d" % i for i in range(12)
    ]
    other = plain.encrypt(b"srv", subject="k/1")
    assert cached.decrypt(other, subject="k/1") == b"srv"
    with pytest.raises(PermissionDenied):  # 'enc' may not fetch data keys
        Client(srv.url, token=tokens["enc"], cache_max_age=60).encrypt(b"x", subject="contacts/1")
    # revoke without a quorum: refused on the next request, audited by the service
    r = cli("token", "revoke", vault, "all", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with pytest.raises(PermissionDenied, match="unknown or revoked"):
        plain.encrypt(b"x", subject="k/1")
    lst = cli("token", "list", vault, "--json", cwd=tmp_path)
    import json

    rows = {row["name"]: row for row in json.loads(lst.stdout)}
    assert rows["all"]["revoked"] is True and rows["enc"]["revoked"] is False
    assert "token-revoke" in [e.event for e in Keyring.open(vault).audit_log().entries()]


def test_tampered_token_list_refuses_every_token(
    served: tuple[Path, Server, dict[str, str]],
) -> None:
    vault, srv, tokens = served
    c = Client(srv.url, token=tokens["enc"])
    c.encrypt(b"ok", subject="contacts/1")
    path = vault / "service-tokens.json"
    text = path.read_text()
    path.write_text(text.replace('"subject_prefix": "contacts/"', '"subject_prefix": ""'))
    srv.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    with pytest.raises(PermissionDenied):
        c.encrypt(b"x", subject="mail/1")
    with pytest.raises(PermissionDenied):
        c.encrypt(b"x", subject="contacts/1")  # fail closed: the list is not trusted at all
    assert "token list refused" in srv.log.read_text()


def test_tcp_with_mutual_tls(tmp_path: Path, sockdir: Path) -> None:
    certs = make_certs(tmp_path)
    kr, shares = Keyring.create(tmp_path / "vault", 2, ["a", "b", "c"])
    with kr.unseal([shares["a"], shares["b"]]) as ukr:
        tl = TokenList.read(kr.path, kr.keyring_id)
        key = mac_key(ukr.audit_key(), kr.keyring_id)
        token = tl.create(key, name="tls", allow=["encrypt", "decrypt", "seal"], subject_prefix="")[
            0
        ]
        no_seal = tl.create(key, name="noseal", allow=["encrypt"], subject_prefix="")[0]
    extra = ("--listen", "127.0.0.1:0", "--tls-cert", str(certs["server-cert"]))
    extra += ("--tls-key", str(certs["server-key"]), "--client-ca", str(certs["ca"]))
    with Server(kr.path, sockdir / "s.sock", *extra) as srv:
        url = f"https://127.0.0.1:{srv.tcp_port}"  # port 0: the one it was given
        tls = dict(
            ca=str(certs["ca"]), cert=str(certs["client-cert"]), key=str(certs["client-key"])
        )
        c = Client(url, token=token, **tls)  # type: ignore[arg-type]
        assert c.service_status()["sealed"] is True
        for n in "bc":  # remote unseal over TLS works too
            c.submit_share(shares[n], c.unseal_offer(), keyring_id=kr.keyring_id)
        rec = c.encrypt(b"over tls", subject="t/1")
        assert Client(srv.url, token=token).decrypt(rec, subject="t/1") == b"over tls"
        with pytest.raises(keysplit.KeysplitError):  # no client certificate: handshake refused
            Client(url, token=token, ca=str(certs["ca"])).service_status()
        with pytest.raises(keysplit.KeysplitError):  # server cert not trusted without the CA
            Client(url, token=token, cert=tls["cert"], key=tls["key"]).service_status()
        with pytest.raises(PermissionDenied):  # over TCP, seal needs a token allowed 'seal'
            Client(url, token=no_seal, **tls).seal()  # type: ignore[arg-type]
        assert c.seal() is True
        assert Client(srv.url).service_status()["sealed"] is True


def test_cli_interactive_remote_unseal_retry_and_reset(tmp_path: Path, sockdir: Path) -> None:
    """A custodian types a foreign share file first, is told why, then the right one;
    --reset discards progress. (CliRunner in process against a real served socket.)"""
    from keysplit_cli.app import app
    from typer.testing import CliRunner

    vault = make_keyring(tmp_path, 2, ["a", "b", "c"])
    make_keyring(tmp_path, 2, ["x", "y"], dirname="other")
    wrong = share_file(tmp_path / "other-shares", "x")
    right = share_file(tmp_path / "vault-shares", "a")
    runner = CliRunner()
    with Server(vault, sockdir / "s.sock") as srv:
        r = runner.invoke(
            app, ["unseal", str(vault), "--server", srv.url], input=f"{wrong}\n{right}\n"
        )
        assert r.exit_code == 0, r.output
        assert "rejected:" in r.output and "does not belong" in r.output
        assert "[1/2]" in r.output
        assert Client(srv.url).service_status()["progress"]["have"] == 1
        r = runner.invoke(app, ["unseal", str(vault), "--server", srv.url, "--reset"])
        assert r.exit_code == 0 and "discarded" in r.output
        assert Client(srv.url).service_status()["progress"]["have"] == 0
        r = runner.invoke(app, ["unseal", str(vault), "--reset"])
        assert r.exit_code == 2 and "--reset needs --server" in r.output
        r = runner.invoke(app, ["token", "list", str(vault)])
        assert r.exit_code == 0
