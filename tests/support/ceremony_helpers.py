"""Helpers shared by the ceremony CLI tests: custodian key files and a 2-of-3 keyring."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from keysplit_cli import _common
from keysplit_cli.app import app
from typer.testing import CliRunner, Result

from keysplit import Argon2Params, Identity

runner = CliRunner()


@pytest.fixture(autouse=True, name="fast_kdf")
def fast_kdf_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheap Argon2id for passphrase-sealed shares (the real cost is tested elsewhere)."""
    fast = Argon2Params(time_cost=1, memory_kib=64, lanes=1)
    monkeypatch.setattr(_common, "KDF", fast)


@pytest.fixture(name="cer")
def ceremony_fixture(tmp_path: Path) -> Ceremony:
    """A fresh 2-of-3 keyring made through ``keysplit init``."""
    return make_ceremony(tmp_path)


def run(args: list[object], input: str | None = None) -> Result:
    result = runner.invoke(app, [str(a) for a in args], input=input)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def error_lines(result: Result) -> list[str]:
    lines = result.stderr.splitlines()
    return [ln[ln.index("error:") :] for ln in lines if "error:" in ln]


def make_identity(keys: Path, name: str) -> tuple[Path, Path]:
    """``name.pub`` and an unencrypted ``name.identity`` (fast: no Argon2), mode 0600 as
    ``keysplit custodian keygen`` writes it: a 0644 one makes the CLI warn that it is
    readable by other users (the test of that warning makes its own)."""
    keys.mkdir(parents=True, exist_ok=True)
    ident = Identity.generate(name)
    pub, priv = keys / f"{name}.pub", keys / f"{name}.identity"
    pub.write_text(ident.recipient.to_text())
    fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(ident.to_bytes(None))
    return pub, priv


@dataclass
class Ceremony:
    """A 2-of-3 keyring: alice and bob hold key-sealed shares, carol a passphrase share."""

    root: Path
    kr: Path
    shares: Path
    ids: dict[str, Path]
    pubs: dict[str, Path]
    carol_pw: Path

    def share(self, name: str, gen: int = 1) -> Path:
        ext = "kss"
        return self.shares / f"{name}.g{gen}.{ext}"

    def quorum(self, *names: str, gen: int = 1) -> list[str]:
        args: list[str] = []
        for n in names:
            args += ["--share", str(self.share(n, gen))]
            if n in self.ids:
                args += ["--identity", str(self.ids[n])]
            else:
                args += ["--passphrase-file", f"{n}={self.carol_pw}"]
        return args


def make_ceremony(tmp: Path) -> Ceremony:
    keys = tmp / "keys"
    pubs, ids = {}, {}
    for n in ("alice", "bob"):
        pubs[n], ids[n] = make_identity(keys, n)
    pw = tmp / "carol.pw"
    pw.write_text("carol's long passphrase\n")
    kr = tmp / "vault"
    r = run(
        [
            "init",
            kr,
            "-k",
            "2",
            "-c",
            f"alice={pubs['alice']}",
            "-c",
            f"bob={pubs['bob']}",
            "-c",
            "carol",
            "--passphrase-file",
            f"carol={pw}",
        ]
    )
    assert r.exit_code == 0, r.output
    return Ceremony(tmp, kr, tmp / "vault-shares", ids, pubs, pw)
