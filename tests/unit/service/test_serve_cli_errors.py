"""Red team: ``keysplit serve`` / ``seal --server`` name the file or path that is wrong.

Each failure is one ``error:`` line that names what the operator gave; before, a missing
TLS certificate or a socket in a missing directory read ``error: no such file: None``, and
a CA bundle that is not PEM was blamed on the client certificate (``None``)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from service_helpers import Server, cli, make_certs, make_keyring


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    return make_keyring(tmp_path, 2, ["a", "b", "c"])


def _one_error(r: subprocess.CompletedProcess[str], *wanted: str) -> None:
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 1, r.stderr
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for w in wanted:
        assert w in lines[0], lines[0]
    assert "None" not in lines[0], lines[0]


@pytest.mark.parametrize(("cert", "key"), [("nope.pem", "nope.key"), ("junk.pem", "junk.pem")])
def test_serve_names_a_tls_file_that_is_missing_or_not_pem(
    tmp_path: Path, vault: Path, cert: str, key: str
) -> None:
    r = cli(
        "serve", vault, "--listen", "127.0.0.1:8443", "--tls-cert", cert, "--tls-key", key,
        cwd=tmp_path, timeout=60,
    )  # fmt: skip
    _one_error(r, cert)


def test_serve_names_a_socket_path_it_cannot_bind(tmp_path: Path, vault: Path) -> None:
    r = cli("serve", vault, "--socket", "no/such/dir/s.sock", cwd=tmp_path, timeout=60)
    _one_error(r, "no/such/dir/s.sock")


def test_seal_blames_a_bad_ca_bundle_on_ca(tmp_path: Path, vault: Path) -> None:
    r = cli("seal", "--server", "https://127.0.0.1:1", "--ca", "junk.pem", cwd=tmp_path)
    _one_error(r, "--ca", "junk.pem")


@pytest.mark.parametrize("option", ["--ca", "--cert", "--key"])
@pytest.mark.parametrize("command", ["seal", "unseal"])
def test_a_missing_tls_file_is_one_error_line_exit_1(
    tmp_path: Path, vault: Path, command: str, option: str
) -> None:
    """A missing --ca/--cert/--key file exited 2 (usage), where every other missing input
    (a share, a token file, IN) exits 1: now 1, one line naming the option and the path.
    A directory given for the file is named as such."""
    certs = make_certs(tmp_path)
    given = {"--ca": certs["ca"], "--cert": certs["client-cert"], "--key": certs["client-key"]}
    given[option] = tmp_path / "gone.pem"
    args = [a for opt, path in given.items() for a in (opt, str(path))]
    extra = ("-s", str(tmp_path / "x.kss")) if command == "unseal" else ()
    r = cli(command, "--server", "https://127.0.0.1:1", *args, *extra, cwd=tmp_path)
    _one_error(r, f"{option}: no such file: {tmp_path / 'gone.pem'}")
    given[option] = tmp_path
    args = [a for opt, path in given.items() for a in (opt, str(path))]
    r = cli(command, "--server", "https://127.0.0.1:1", *args, *extra, cwd=tmp_path)
    _one_error(r, f"{option}: not a file: {tmp_path}")


@pytest.mark.parametrize("listen", ["127.0.0.1:99999", "127.0.0.1:65536"])
def test_serve_refuses_a_port_out_of_range(tmp_path: Path, vault: Path, listen: str) -> None:
    """Red team: port 99999 was taken modulo 65536: the service listened on 34463 and
    logged 'listening on https://127.0.0.1:99999'."""
    r = cli(
        "serve", vault, "--listen", listen, "--tls-cert", "junk.pem", "--tls-key", "junk.pem",
        cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "error: --listen" in r.stderr and "listening" not in r.stderr, r.stderr


def test_serve_names_a_host_it_cannot_resolve(tmp_path: Path, vault: Path) -> None:
    certs = make_certs(tmp_path)
    r = cli(
        "serve", vault, "--listen", "no-such-host.invalid:8443",
        "--tls-cert", certs["server-cert"], "--tls-key", certs["server-key"],
        cwd=tmp_path, timeout=60,
    )  # fmt: skip
    _one_error(r, "no-such-host.invalid")


def _ipv6_loopback_port() -> int | None:
    """A free port on ::1, or None where this host has no IPv6 loopback."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
            return int(s.getsockname()[1])
    except OSError:
        return None


def test_serve_logs_an_ipv6_listen_address_in_brackets(tmp_path: Path, vault: Path) -> None:
    """Red team: ``--listen [::1]:PORT`` was logged 'listening on https://::1:PORT', which
    is no URL (a client given it reads host ':' and port ':1:PORT'). Now the address is
    written as a URL writes it, in brackets; an IPv4 one is unchanged."""
    port = _ipv6_loopback_port()
    if port is None:
        pytest.skip("no IPv6 loopback on this host")
    certs = make_certs(tmp_path)
    tls = ("--tls-cert", str(certs["server-cert"]), "--tls-key", str(certs["server-key"]))
    with Server(vault, tmp_path / "s.sock", "--listen", f"[::1]:{port}", *tls) as srv:
        log = srv.log.read_text()
    assert f"https://[::1]:{port}" in log and "https://::1" not in log, log
