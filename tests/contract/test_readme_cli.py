"""The README's shell sequences run as written, in order, in a temporary directory.

Each ``keysplit ...`` line of the chosen ```sh blocks is run through the CLI (Typer's runner,
in process): continuation lines joined, comments dropped, ``a && b`` run in turn, ``< FILE``
as stdin, globs expanded, ``[--json]``-style optional notation left out. A prompt is answered
the way a custodian would: a passphrase for ``custodian keygen`` (twice), the share file,
identity file and passphrase for a quorum asked at the prompt, the identity's passphrase for
``--identity``. So a renamed flag, a changed file name or a step that fails stops the test.
"""

from __future__ import annotations

import glob
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from ceremony_helpers import fast_kdf_fixture, run  # noqa: F401  (fixture: cheap Argon2id)
from readme_blocks import README, blocks, section

# Commands the sequences hold as placeholders ("..." for options a reader fills in).
PLACEHOLDER = "..."


def commands(block: str) -> list[list[str]]:
    """The keysplit commands of a shell block, as argv lists (without 'keysplit')."""
    out: list[list[str]] = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        cmd: list[str] = []
        for w in [*words, "&&"]:
            if w == "&&":
                if cmd:
                    assert cmd[0] == "keysplit", f"not a keysplit command: {cmd}"
                    out.append(cmd[1:])
                cmd = []
            elif not (w.startswith("[") and w.endswith("]")):
                cmd.append(w)
    return out


@dataclass
class Custodians:
    """Answers to the prompts, as the custodians of the walkthrough would give them."""

    shares_dir: str
    passphrase: dict[str, str] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)

    def newest_share(self, name: str) -> str:
        files = sorted(
            Path(self.shares_dir).glob(f"{name}.g*.kss"),
            key=lambda p: int(p.name.split(".g")[1].split(".")[0]),
        )
        assert files, f"no share file of {name} in {self.shares_dir}"
        return str(files[-1])

    def answers(self, argv: list[str]) -> str | None:
        if argv[:2] == ["custodian", "keygen"]:
            pw = self.passphrase.setdefault(argv[2], f"{argv[2]}'s passphrase, long enough")
            return f"{pw}\n{pw}\n"
        lines: list[str] = []
        identities = [argv[i + 1] for i, a in enumerate(argv) if a in ("--identity", "-i")]
        shares = [a for i, a in enumerate(argv) if i and argv[i - 1] in ("--share", "-s")]
        if identities:
            for ident in identities:
                lines.append(self.passphrase[Path(ident).name.split(".")[0]])
        elif not shares and argv[0] in QUORUM_COMMANDS:
            for name in sorted(self.passphrase)[:2]:  # any two custodians, at the prompt
                lines += [self.newest_share(name), f"keys/{name}.identity", self.passphrase[name]]
        return "".join(f"{ln}\n" for ln in lines) if lines else None

    def run_block(self, block: str) -> None:
        for argv in commands(block):
            if PLACEHOLDER in argv:
                continue
            stdin = None
            if "<" in argv:
                at = argv.index("<")
                stdin = Path(argv[at + 1]).read_text()
                argv = argv[:at] + argv[at + 2 :]
            argv = [x for a in argv for x in (sorted(glob.glob(a)) if "*" in a else [a])]
            answers = stdin if stdin is not None else self.answers(argv)
            result = run([*argv], input=answers)
            assert result.exit_code == 0, (argv, result.output)
            self.ran.append(" ".join(argv[:2]))


QUORUM_COMMANDS = {"unseal", "decrypt", "rotate", "rewrap", "rekey", "retire", "shred", "hold"}


@pytest.fixture(name="walk")
def walk_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Custodians:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.7 quarterly figures\n" * 1000)
    return Custodians("vault-shares")


def test_quickstart_ceremony_runs_as_written(walk: Custodians) -> None:
    """'A ceremony from the shell': keygen, init, encrypt, decrypt at the prompt, rotate and
    rewrap, rekey without cy, audit verify, status."""
    (block,) = [b for b in blocks(README, "sh") if "keysplit custodian keygen ana" in b]
    walk.run_block(block)
    assert walk.ran.count("custodian keygen") == 3
    assert {"init vault", "decrypt vault", "rekey vault", "status vault"} <= set(walk.ran)
    decrypted = next(a for a in commands(block) if a[0] == "decrypt")[3]
    assert Path(decrypted).read_bytes() == Path("report.pdf").read_bytes()
    # "cy leaves: old shares die": cy's share with one that was valid before cannot unseal.
    old = run(["unseal", "vault", "-s", "vault-shares/ana.g1.kss", "-s", "vault-shares/cy.g1.kss"])
    assert old.exit_code == 1


def test_real_ceremony_section_runs_as_written(walk: Custodians) -> None:
    """'A real 2-of-3 ceremony', every block in order (the dave/passphrase paragraph aside)."""
    text = section("### A real 2-of-3 ceremony")
    for block in blocks(text, "sh"):
        walk.run_block(block)
    assert walk.ran.count("custodian keygen") == 3
    for step in ("init vault", "encrypt vault", "decrypt vault", "rekey vault", "audit verify"):
        assert step in walk.ran, step
    decrypted = next(c for b in blocks(text, "sh") for c in commands(b) if c[0] == "decrypt")[3]
    assert Path(decrypted).read_bytes() == Path("report.pdf").read_bytes()


def test_shares_without_a_keyring_run_as_written(walk: Custodians) -> None:
    text = section("### Shares without a keyring")
    secret = "00112233445566778899aabbccddeeff"
    Path("key.hex").write_text(secret + "\n")
    (block,) = blocks(text, "sh")
    walk.run_block(block)
    assert walk.ran == [
        "split --threshold",
        "share inspect",
        "share verify",
        "combine shares/share-1.kss",
        "combine --reveal",
    ]
    out = run(["combine", "--reveal", "shares/share-1.kss", "shares/share-3.kss"])
    assert out.stdout.strip() == secret


def test_lost_share_section_runs_as_written(walk: Custodians) -> None:
    """'Lost shares': after the ceremony's keygen and init, bob's new key pair and the rekey
    by alice and carol give bob a share that works, and his old one stops working."""
    ceremony = blocks(section("### A real 2-of-3 ceremony"), "sh")
    for block in ceremony[:2]:  # keygen, init
        walk.run_block(block)
    (block,) = blocks(section("### Lost shares, compromised shares, backups"), "sh")
    walk.run_block(block)
    assert walk.ran == [*["custodian keygen"] * 3, "init vault", "custodian keygen", "rekey vault"]
    answers = f"{walk.passphrase['bob']}\n{walk.passphrase['alice']}\n"
    alice = ["-s", "vault-shares/alice.g2.kss", "-i", "keys/alice.identity"]
    new = ["-s", "vault-shares/bob.g2.kss", "-i", "new-keys/bob.identity"]
    assert run(["unseal", "vault", *new, *alice], input=answers).exit_code == 0
    old = ["-s", "vault-shares/bob.g1.kss", "-i", "keys/bob.identity"]
    assert run(["unseal", "vault", *old, *alice], input=answers).exit_code == 1
