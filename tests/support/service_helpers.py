"""Helpers for the key-service tests: real `keysplit` processes, bounded in time.

(In tests/support/: imported by the service, jobs and CLI tests alike.)
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import keysplit
from keysplit.service import Client

KEYSPLIT = str(Path(sys.executable).parent / "keysplit")
TIMEOUT = 120.0


def pid_gone(pid: int) -> bool:
    """Dead, or a zombie (an orphan is reaped by init, or by no one in a container)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def cli(
    *args: str | os.PathLike[str], cwd: Path, input: str | None = None, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KEYSPLIT, *map(str, args)],
        cwd=cwd,
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_here(
    *args: str | os.PathLike[str], cwd: Path | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``keysplit ARGS`` (in ``cwd``) run in this process by Typer's test runner: the exit
    code, stdout and stderr :func:`cli` gives, without a process start (1-3 s a call on the
    loaded 2-core CI machine). For the commands around what a test checks in a real process
    (a kill, a server): what they read and write is on disk, as for the executable. Any
    exception but an exit is raised, where the executable would print a traceback.
    ``cwd`` is this whole process's working directory for the call (``contextlib.chdir``):
    safe only while no other thread of the process resolves a relative path (see "Commands
    run in the test process" in docs/DEVELOPING.md for the threads its callers run)."""
    from keysplit_cli.app import app
    from typer.testing import CliRunner

    argv = [str(a) for a in args]
    with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
        r = CliRunner().invoke(app, argv, input=input or "")
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return subprocess.CompletedProcess(argv, r.exit_code, r.stdout, r.stderr)


def share_file(shares_dir: Path, name: str) -> Path:
    (p,) = sorted(shares_dir.glob(f"{name}.g1.*"))
    return p


def make_keyring(tmp: Path, k: int, names: Sequence[str], dirname: str = "vault") -> Path:
    """``keysplit init DIRNAME`` in ``tmp`` with plain shares: the same command and files, run
    in this process (Typer's test runner; a test of init itself runs the executable). As a
    process it cost 1.3-1.7 s on the loaded 2-core machine, in-process 0.09 s (the median of
    the 50 keyrings the service, CLI and README tests set up with it)."""
    from ceremony_helpers import run

    args: list[str] = ["init", dirname, "-k", str(k), "--plain-shares"]
    for n in names:
        args += ["-c", n]
    with contextlib.chdir(tmp):  # a relative DIRNAME, as typed: its known-keyrings label
        r = run(args)
    assert r.exit_code == 0, r.output
    return tmp / dirname


def make_token(
    tmp: Path, directory: Path, name: str, allow: str, prefix: str, shares: Sequence[Path]
) -> str:
    """``keysplit token create`` in ``tmp``, run in this process (:func:`cli_here`): the
    same token list on disk, which a running ``keysplit serve`` reads as it would the
    executable's. Its callers' tests are about serving or revoking tokens, not creating
    them (tests/unit/service/test_token_expiry.py creates them with the executable); as a
    process it cost a start of ``keysplit`` (1.3 s of CPU) for each of its 10 callers."""
    args: list[str] = ["token", "create", str(directory), "--name", name, "--allow", allow]
    args += ["--subject-prefix", prefix]
    for s in shares:
        args += ["--share", str(s)]
    r = cli_here(*args, cwd=tmp)
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("kst1_") and len(token) == 48
    return token


class Server:
    """``keysplit serve DIR --socket PATH`` in a subprocess."""

    def __init__(self, directory: Path, sock: Path, *extra: str) -> None:
        self.directory = directory
        self.sock = sock
        self.extra = extra
        self.proc: subprocess.Popen[str] | None = None
        self.log = sock.with_suffix(".log")

    @property
    def url(self) -> str:
        return f"unix:{self.sock}"

    @property
    def tcp_port(self) -> int:
        """The port of ``--listen HOST:0``, the system's choice, from the started server's
        log line (``listening on https://HOST:PORT``). A port probed free and closed
        before the server binds it can be taken in between (any connect() on this host
        picks from the same range): the tests listen on port 0 instead."""
        text = "\n".join(x for x in self.log.read_text().splitlines() if "listening on" in x)
        found = re.findall(r"https://[^\s,;]+:(\d+)", text)
        assert found, text
        return int(found[-1])

    def start(self) -> Server:
        with open(self.log, "a") as err:
            self.proc = subprocess.Popen(
                [KEYSPLIT, "serve", str(self.directory), "--socket", str(self.sock), *self.extra],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                text=True,
            )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited: {self.log.read_text()}")
            if self.sock.exists():
                try:
                    Client(self.url, timeout=5).service_status()
                    return self
                except keysplit.KeysplitError:
                    pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("serve did not come up")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()


def unseal(
    tmp: Path, directory: Path, server: Server, share: Path | str
) -> subprocess.CompletedProcess[str]:
    """One custodian's ``keysplit unseal --server``; a str names a custodian of DIR-shares."""
    if isinstance(share, str):
        share = share_file(tmp / f"{directory.name}-shares", share)
    return cli("unseal", directory, "--server", server.url, "--share", share, cwd=tmp)


def start_node(tmp: Path, name: str, sock: Path) -> Server:
    """A cluster node: keyring ``tmp/NAME`` (2 of custodians NAMEa, NAMEb, plain shares)
    served on ``sock`` (a real ``keysplit serve`` process) and unsealed by both custodians.

    The two ``keysplit unseal --server`` commands run in this process (Typer's test runner,
    as :func:`make_keyring` runs ``init``), over the node's socket as the executable would:
    a node's set-up, not what its tests check (:func:`unseal` and the service tests run the
    executable). As processes they cost 1.3-1.5 s each on the loaded 2-core machine (the
    start-up of ``keysplit`` alone: 1.3 s), and the cluster test modules start ~20 nodes."""
    from ceremony_helpers import run

    make_keyring(tmp, 2, [f"{name}a", f"{name}b"], dirname=name)
    srv = Server(tmp / name, sock).start()
    for c in "ab":
        share = share_file(tmp / f"{name}-shares", f"{name}{c}")
        r = run(["unseal", tmp / name, "--server", srv.url, "--share", share])
        assert r.exit_code == 0, r.output
    return srv


@contextlib.contextmanager
def served_nodes(
    tmp: Path, names: Sequence[str], prefix: str
) -> Iterator[tuple[Path, dict[str, Server]]]:
    """Cluster nodes NAME (:func:`start_node`) on sockets in a short temporary directory;
    yields (that directory, servers by name; a test may add more) and stops them all."""
    sockdir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    servers: dict[str, Server] = {}
    try:
        for n in names:
            servers[n] = start_node(tmp, n, sockdir / f"{n}.sock")
        yield sockdir, servers
    finally:
        for s in servers.values():
            if s.proc is not None and s.proc.poll() is None:
                s.stop()
        shutil.rmtree(sockdir, ignore_errors=True)


def make_certs(d: Path) -> dict[str, Path]:
    """A throwaway CA, a server cert for 127.0.0.1 and a client cert (cryptography x509)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("test ca"))
        .issuer_name(name("test ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    out = {"ca": d / "ca.pem"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who, san in (("server", True), ("client", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        b = (
            x509.CertificateBuilder()
            .subject_name(name(who))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        if san:
            b = b.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        cert = b.sign(ca_key, hashes.SHA256())
        out[f"{who}-cert"] = d / f"{who}.pem"
        out[f"{who}-cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out[f"{who}-key"] = d / f"{who}.key"
        out[f"{who}-key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return out
