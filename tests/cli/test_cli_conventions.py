"""Every command the same (issue 22 item 8): an "Example:" in every --help, --json on every
command that reports a result, no ``<bool>`` beside flags, option lists not cut, no
``GetPassWarning``, and ``keysplit ... | head`` ends quietly with exit code 141."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from ceremony_helpers import Ceremony, ceremony_fixture, fast_kdf_fixture, run  # noqa: F401
from keysplit_cli.app import app
from service_helpers import KEYSPLIT
from typer.testing import CliRunner

from keysplit.service.tokens import OPERATIONS

NOT_REPORTING = {
    "demo": "a story on stderr",
    "bench": "writes its results table",
    "serve": "runs until stopped",
    "split": "its output is the shares",
    "share convert": "its output is the shares",
    "share convert-vault": "its output is the keys",
    "share print": "its output is a PDF",
}
"""Commands whose stdout is their product (or that never end), so no --json."""

JSON_NOT_YET: set[str] = set()
"""Reporting commands that still lack --json (their owners add it): may only shrink."""


def _commands() -> Iterator[tuple[str, Any]]:
    def walk(cmd: Any, path: list[str]) -> Iterator[tuple[str, Any]]:
        if hasattr(cmd, "list_commands"):
            ctx = type(cmd).context_class(cmd)
            for name in cmd.list_commands(ctx):
                yield from walk(cmd.get_command(ctx, name), [*path, name])
        else:
            yield " ".join(path), cmd

    yield from walk(typer.main.get_command(app), [])


COMMANDS = dict(_commands())


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_help_has_an_example_and_no_bool_noise(name: str) -> None:
    r = CliRunner().invoke(app, [*name.split(), "--help"], env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    assert "Example:" in r.output, f"keysplit {name} --help shows no example"
    assert "<bool>" not in r.output


def test_every_reporting_command_has_json() -> None:
    def has_json(cmd: Any) -> bool:
        return any("--json" in getattr(p, "opts", ()) for p in cmd.params)

    missing = {n for n, c in COMMANDS.items() if n not in NOT_REPORTING and not has_json(c)}
    assert missing - JSON_NOT_YET == set(), "reporting commands without --json"
    assert JSON_NOT_YET - missing == set(), "these have --json now: remove from JSON_NOT_YET"
    assert set(NOT_REPORTING) <= set(COMMANDS)


def test_allow_list_is_not_cut_at_80_columns() -> None:
    r = CliRunner().invoke(app, ["token", "create", "--help"], env={"COLUMNS": "80"})
    text = " ".join(r.output.replace("│", " ").split())
    for op in OPERATIONS:
        assert op in text.replace(", ", " ").split() or f"{op}." in text, op
    assert "…" not in r.output


def _json(args: list[object]) -> dict[str, Any]:
    r = run([*args, "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert isinstance(doc, dict)
    return doc


def test_json_of_the_commands_that_lacked_it(cer: Ceremony, tmp_path: Path) -> None:
    q = cer.quorum("alice", "bob")
    assert _json(["rotate", cer.kr, *q])["kek_version"] == 2
    assert _json(["rewrap", cer.kr, *q])["kek_version"] == 2
    assert _json(["retire", cer.kr, "1", *q])["retired"] == 1
    assert _json(["hold", cer.kr, "u1", "--on", *q])["legal_hold"] is True
    plain = tmp_path / "p.txt"
    plain.write_text("hello")
    enc = _json(["encrypt", cer.kr, plain, tmp_path / "p.ks"])
    assert enc["plaintext_size"] == 5 and enc["out"].endswith("p.ks")
    dec = _json(["decrypt", cer.kr, tmp_path / "p.ks", tmp_path / "p.out", *q])
    assert dec["plaintext_size"] == 5 and dec["audit_head"]
    assert dec["context"] == {} and dec["context_checked"] is False
    r = run(["decrypt", cer.kr, tmp_path / "p.ks", "-", *q, "--json"])
    assert r.exit_code == 2  # stdout is the plaintext: no JSON there
    keygen = _json(["custodian", "keygen", "dee", "--no-passphrase", "--out-dir", tmp_path])
    assert keygen["custodian"] == "dee" and keygen["encrypted"] is False
    verify = _json(["share", "verify", cer.share("alice"), cer.share("bob")])
    assert verify["ok"] is True and [f["index"] for f in verify["files"]] == [1, 2]
    token = _json(["token", "create", cer.kr, "--name", "t", "--allow", "encrypt",
                   "--subject-prefix", "a/", *q])  # fmt: skip
    assert token["token"].startswith("kst1_") and token["allow"] == ["encrypt"]
    assert _json(["token", "revoke", cer.kr, "t"])["revoked"] is True


def test_closed_pipe_ends_quietly_with_141(tmp_path: Path) -> None:
    init = [KEYSPLIT, "init", "kr", "-k", "2", "-c", "a", "-c", "b", "--plain-shares"]
    r = subprocess.run(init, cwd=tmp_path, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    read, write = os.pipe()
    os.close(read)  # the reader is gone before keysplit writes a byte (| head, deterministic)
    try:
        p = subprocess.run([KEYSPLIT, "audit", "show", "kr", "--json"], cwd=tmp_path,
                           stdout=write, stderr=subprocess.PIPE, timeout=120)  # fmt: skip
    finally:
        os.close(write)
    assert p.returncode == 141, p.stderr
    assert p.stderr == b""


def test_no_getpass_warning_without_a_terminal(tmp_path: Path) -> None:
    """Passphrases from a pipe, in a process without a controlling terminal (a new
    session): getpass cannot hide anything and used to warn on every prompt."""
    p = subprocess.run(
        [KEYSPLIT, "custodian", "keygen", "ana", "--out-dir", str(tmp_path)],
        input=b"a passphrase\na passphrase\n",
        capture_output=True,
        start_new_session=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert b"GetPassWarning" not in p.stderr and b"may be echoed" not in p.stderr
    assert b"a passphrase" not in p.stderr + p.stdout
    assert (tmp_path / "ana.identity").exists()


def test_a_rewrap_of_no_keys_shows_none_of_none(cer: Ceremony) -> None:
    """(docs walkthrough, 'found, not fixed') the bar of a rewrap with no data key to move
    ended at "0/1", one key short of done; now "0/0"."""
    r = run(["rewrap", cer.kr, *cer.quorum("alice", "bob")])
    assert r.exit_code == 0, r.output
    assert "rewrapped 0 data keys" in r.stderr
    assert "0/0" in r.stderr and "0/1" not in r.stderr


def test_every_group_help_names_each_of_its_commands() -> None:
    """A group's one-line help (``keysplit --help``, ``keysplit share --help``) names every
    command it holds: 'share' said "inspect and verify" but also proves, prints and converts,
    'audit' left out repair, 'token' left out add."""
    root = typer.main.get_command(app)
    ctx = type(root).context_class(root)
    for group in root.list_commands(ctx):  # type: ignore[attr-defined]
        cmd = root.get_command(ctx, group)  # type: ignore[attr-defined]
        if not hasattr(cmd, "list_commands"):
            continue
        help_line = cmd.help or ""
        named = set(re.findall(r"[\w-]+", help_line))
        missing = [c for c in cmd.list_commands(ctx) if c not in named]
        assert not missing, f"keysplit {group}: help {help_line!r} does not name {missing}"
