"""SECURITY.md's statements about the CLI and the service as a whole, checked against the code."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer.main
from keysplit_cli.app import app
from paths import REPO

SECRET_WORDS = re.compile(
    r"pass|secret|token|key|share|password|pin|mnemonic|code|seed|master|pw", re.IGNORECASE
)
# parameters whose name sounds secret but whose value is not: a path, a name, a count, an id
NOT_SECRET = {
    "key": "FILE",  # --key: the service's unseal key file
    "share": "FILE",  # --share: a share file
    "tls_key": "FILE",
    "keyring": "DIR",
    "keyring_id": "public id",
    "passphrase_custodian": "a custodian's name",
    "shares": "a count (-n)",
}


def parameters(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    ctx = cmd.context_class(cmd)
    if hasattr(cmd, "list_commands"):
        for name in cmd.list_commands(ctx):
            yield from parameters(cmd.get_command(ctx, name), (*path, name))
    else:
        for param in cmd.params:
            yield " ".join(path), param


def test_no_command_takes_a_secret_on_its_command_line() -> None:
    """SECURITY.md "Secrets and the command line": secrets enter through hidden prompts,
    files or stdin, never argv. Every value-taking parameter whose name sounds secret is a
    file or directory (``*_file``, ``*_dir``) or one of the reviewed non-secret values; a new
    ``--passphrase TEXT`` or ``--token TOKEN`` fails here."""
    unknown: list[str] = []
    for where, param in parameters(typer.main.get_command(app)):
        if getattr(param, "is_flag", False) or not SECRET_WORDS.search(param.name):
            continue
        if re.search(r"_(file|files|dir)$", param.name):
            continue
        if param.name not in NOT_SECRET:
            unknown.append(f"{where} {'/'.join(param.opts)}")
        elif NOT_SECRET[param.name] == "FILE":  # a path, not the value
            assert getattr(param, "metavar", None) == "FILE", (where, param.name)
    assert not unknown, f"parameters that may take a secret on argv: {unknown}"


def test_the_unauthenticated_status_holds_only_what_security_md_lists(tmp_path: Path) -> None:
    """SECURITY.md "Unseal progress": `GET /v1/status` needs no token and reveals only the
    public metadata it lists. Its fields are pinned here: a new one fails until the document
    says what it reveals (it said "only counts, custodian names that contributed and the
    keyring id" while the answer also held the generation, versions, worker counts and a
    --verify generation's custodian names)."""
    from keysplit import Keyring
    from keysplit.service.core import KeyService

    kr, _ = Keyring.create(tmp_path / "kr", 2, ["a", "b", "c"])
    status = KeyService(kr.path, log=lambda m: None).status_dict()
    assert set(status) == {
        "sealed", "keyring_id", "generation", "threshold", "custodians", "progress",
        "version", "api", "worker", "workers", "workers_configured", "workers_serving",
        "verification",
    }  # fmt: skip
    assert set(status["progress"]) == {"have", "need", "custodians", "expires_in"}
    assert status["custodians"] == 3 and status["verification"] is None


def test_security_md_lists_every_operation_a_token_can_be_allowed() -> None:
    """SECURITY.md "A token holder can do exactly its `allow` list": the list it gives is
    the code's (it lacked `cluster`, which lets a TCP peer run a node's DKG and refresh)."""
    from keysplit.service.tokens import OPERATIONS

    text = re.sub(r"\s+", " ", (REPO / "SECURITY.md").read_text())
    (bullet,) = re.findall(
        r"\*\*A token holder\*\* can do exactly its `allow` list(.*?)No token", text
    )
    assert set(re.findall(r"`([a-z]+)`", bullet)) == set(OPERATIONS)
