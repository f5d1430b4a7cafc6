"""The custodian's side of the CLI (issue 22 items 1-4): what is typed at a hidden prompt
is never shown, a share's ks1- text is accepted where a share file is, and a remote
custodian unseals an mTLS service with the URL, their share and --ca/--cert/--key alone.

The prompts are driven in a real pseudo-terminal (``pty.fork``): hidden prompts switch the
terminal's echo off, and only a terminal shows whether that happened. A sealed share typed
at the hidden prompt through a pipe, and the remote custodian's unseals over mTLS, are real
``keysplit`` processes too; the other commands (arguments refused, diagnostics, ``seal``)
run in this process (:func:`cli_here`: the same exit code and output, without a start of
1.3 s of CPU each).
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest
from service_helpers import KEYSPLIT, Server, cli, cli_here, make_certs

from keysplit import Argon2Params, Client, Keyring, Share, seal_share_with_passphrase
from keysplit.custody import sealed_text

FAST = Argon2Params(time_cost=1, memory_kib=64, lanes=1)
PASSPHRASE = "alice-Secret-passphrase-7"
TYPO = "alice-Wrong-guess-4"


class Terminal:
    """``keysplit ARGS`` on a pseudo-terminal: wait for output, type answers, keep all of
    it (the transcript is what a person at the screen would see)."""

    def __init__(self, *args: str, cwd: Path) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: its stdin, stdout and stderr are the terminal
            try:
                os.chdir(cwd)
                os.execv(KEYSPLIT, [KEYSPLIT, *args])
            finally:
                os._exit(127)
        self.pid, self.fd, self.out, self.pos = pid, fd, b"", 0

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            return False
        self.out += chunk
        return bool(chunk)

    def expect(self, text: str, timeout: float = 60) -> None:
        """Wait until ``text`` appears after the previous expectation's match."""
        deadline = time.monotonic() + timeout
        while (at := self.out.find(text.encode(), self.pos)) < 0:
            if time.monotonic() > deadline or not self._read(0.2):
                raise AssertionError(f"never saw {text!r}; transcript:\n{self.transcript}")
        self.pos = at + len(text.encode())

    def type(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\r")

    def wait(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._read(0.1)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                while self._read(0.05):
                    pass
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError(f"keysplit did not finish; transcript:\n{self.transcript}")

    @property
    def transcript(self) -> str:
        return self.out.decode("utf-8", "replace")


def _keyring(tmp_path: Path) -> tuple[Path, Path, Share, Share]:
    """A 2-of-3 keyring: alice's share sealed under a passphrase, bob's as ks1- text."""
    kr, shares = Keyring.create(tmp_path / "vault", 2, ["alice", "bob", "carol"])
    alice = tmp_path / "alice.kss"
    alice.write_bytes(
        seal_share_with_passphrase(shares["alice"], "alice", PASSPHRASE.encode(), kdf=FAST)
    )
    return kr.path, alice, shares["alice"], shares["bob"]


def _hidden(term: Terminal, prompt: str) -> None:
    """Wait for a hidden prompt: the text, then the space getpass writes once echo is off
    (typing earlier would be echoed, or flushed, by the terminal)."""
    term.expect(prompt)
    term.expect(": ")


def test_terminal_wrong_passphrase_is_asked_again_hidden_and_nothing_typed_is_shown(
    tmp_path: Path,
) -> None:
    vault, alice, _, bob = _keyring(tmp_path)
    term = Terminal("unseal", str(vault), cwd=tmp_path)
    _hidden(term, "Share [0/2]")
    term.type(PASSPHRASE)  # the reflex: a passphrase typed at the share prompt
    term.expect("rejected: cannot read that share file")
    _hidden(term, "Share [0/2]")
    term.type(str(alice))
    _hidden(term, "Passphrase for custodian 'alice'")
    term.type(TYPO)
    term.expect("try again (2 left)")
    _hidden(term, "Passphrase for custodian 'alice'")  # hidden again, not the share prompt
    term.type(PASSPHRASE)
    term.expect("[1/2] share")
    _hidden(term, "Share [1/2]")
    typed = str(bob)
    term.type(typed[:-1] + ("q" if typed[-1] != "q" else "p"))  # a typo in the last character
    term.expect("rejected: the typed share: share checksum mismatch")
    _hidden(term, "Share [1/2]")
    term.type(typed.upper().replace("-", " "))  # as read aloud from a sheet: case, spaces
    term.expect("quorum verified")
    assert term.wait() == 0, term.transcript
    seen = term.transcript
    assert Keyring.open(vault).keyring_id in seen
    for secret in (PASSPHRASE, TYPO, typed, typed.upper(), typed[4:24], typed[-20:].upper()):
        assert secret not in seen, f"{secret!r} shown on the terminal:\n{seen}"
    assert "GetPassWarning" not in seen and "Traceback" not in seen


def test_share_text_on_stdin_with_the_checksum_of_files(tmp_path: Path) -> None:
    vault, alice, _, bob = _keyring(tmp_path)
    pw = tmp_path / "alice.pw"
    pw.write_text(PASSPHRASE + "\n")
    args = ("unseal", vault, "-s", alice, "--passphrase-file", f"alice={pw}", "-s", "-")
    r = cli_here(*args, cwd=tmp_path, input=f"{bob}\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == Keyring.open(vault).keyring_id
    text = str(bob)
    typo = text[:10] + ("x" if text[10] != "x" else "y") + text[11:]
    r = cli_here(*args, cwd=tmp_path, input=typo)
    assert r.returncode == 1
    assert "\nerror: stdin: share checksum mismatch" in r.stderr, r.stderr
    assert text not in r.stderr + r.stdout
    # a sealed share as its sheet prints it (KSSS- text), typed at the hidden prompt (a
    # real process: with no terminal, the CLI's own quiet reading of stdin)
    typed_sealed = sealed_text(alice.read_bytes())
    r = cli("unseal", vault, "--passphrase-file", f"alice={pw}", cwd=tmp_path,
            input=f"{typed_sealed.lower()}\n{bob}\n")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert typed_sealed not in r.stderr + r.stdout and str(bob) not in r.stderr + r.stdout
    r = cli_here("unseal", vault, "-s", "-", "-s", "-", cwd=tmp_path)
    assert r.returncode == 2 and "once" in r.stderr


def test_remote_custodian_unseals_mtls_service_with_url_share_and_certificates(
    tmp_path: Path,
) -> None:
    certs = make_certs(tmp_path)
    kr, shares = Keyring.create(tmp_path / "vault", 2, ["a", "b", "c"])
    files = {}
    for name in "ab":  # the custodians' plain share files, far from the keyring directory
        files[name] = tmp_path / f"{name}.kss"
        files[name].write_text(f"{shares[name]}\n")
    extra = ("--listen", "127.0.0.1:0", "--tls-cert", str(certs["server-cert"]))
    extra += ("--tls-key", str(certs["server-key"]), "--client-ca", str(certs["ca"]))
    sock = Path(tempfile.mkdtemp(prefix="ks", dir=os.environ.get("TMPDIR", "/tmp"))) / "s.sock"
    ca = ("--ca", str(certs["ca"]))
    mine = ("--cert", str(certs["client-cert"]), "--key", str(certs["client-key"]))
    with Server(kr.path, sock, *extra) as srv:
        url = f"https://127.0.0.1:{srv.tcp_port}"  # port 0: the one it was given
        # no client certificate: a TLS failure with a TLS hint, not "is serve running?"
        r = cli_here("unseal", "--server", url, *ca, "-s", files["a"], cwd=tmp_path)
        assert r.returncode == 1, r.stderr
        assert r.stderr.startswith("error: cannot reach the key service")
        assert "--cert" in r.stderr and "serve running" not in r.stderr
        # the server's certificate without its CA
        r = cli_here("unseal", "--server", url, *mine, "-s", files["a"], cwd=tmp_path)
        assert r.returncode == 1 and "--ca" in r.stderr, r.stderr
        # the custodian needs no keyring directory: URL, share, certificates (the executable)
        for name in "ab":
            r = cli("unseal", "--server", url, *ca, *mine, "-s", files[name], cwd=tmp_path)
            assert r.returncode == 0, r.stderr
            assert kr.keyring_id in r.stderr and "attempt key" in r.stderr
        assert r.stdout.strip() == "unsealed"
        assert Client(f"unix:{sock}").service_status()["sealed"] is False
        # seal takes the same TLS options (over TCP a token allowed 'seal' is needed)
        r = cli_here("seal", "--server", url, *ca, *mine, cwd=tmp_path)
        assert r.returncode == 1 and "error:" in r.stderr
    shutil.rmtree(sock.parent, ignore_errors=True)  # the socket and the server's log


@pytest.mark.parametrize("server", ["http://127.0.0.1:1", "ftp://example.org/x", "unix:"])
@pytest.mark.parametrize("command", ["unseal", "seal"])
def test_server_url_of_another_form_is_one_error_line(
    tmp_path: Path, command: str, server: str
) -> None:
    extra = ("-s", "x.kss") if command == "unseal" else ()
    r = cli_here(command, "--server", server, *extra, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0].startswith("error: --server") and "Traceback" not in r.stderr
    assert "unix:PATH" in r.stderr and "https://" in r.stderr
