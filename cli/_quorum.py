"""Gathering a quorum of custodian shares, the same way for every ceremony command.

Two modes, like Vault's ``operator unseal`` but friendlier:

* non-interactive: ``--share FILE`` (repeatable), ``--identity FILE`` (matched to sealed
  shares by recipient fingerprint, as age matches identities to stanzas) and
  ``--passphrase-file [NAME=]FILE``;
* interactive (no ``--share``): asks for share files one at a time, then for the identity
  file or passphrase each needs, shows progress ("2/3"), names a bad share at once and lets
  the custodian try again.

Each share is checked against the keyring as soon as it is read
(:class:`keysplit.ceremony.Quorum`), so a share of another keyring, an old share set or a
duplicate is refused before anyone else types a passphrase. The prompts are only a feed:
the ceremony itself (and its audit entry) runs in :mod:`keysplit.ceremony`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import typer

from keysplit import Keyring, KeysplitError
from keysplit.ceremony import Quorum

from ._common import fail, info, relabel
from ._opener import Passphrases, ShareOpener

__all__ = [
    "IDENTITY_OPTION",
    "PASSPHRASE_OPTION",
    "SHARE_OPTION",
    "STORE_OPTION",
    "QuorumSource",
    "open_keyring",
    "quorum",
]

STORE_OPTION = typer.Option(
    None,
    "--store",
    metavar="URL",
    help="Key store URL overriding the one recorded at init (sqlite:PATH, "
    "postgresql://...; never a password: use libpq's PGPASSFILE/.pgpass).",
)


def open_keyring(directory: Path, store: str | None = None) -> Keyring:
    """The keyring at ``directory``, with its store overridden by ``--store`` if given."""
    return Keyring.open(directory, store_url=store)


SHARE_OPTION = typer.Option(
    [],
    "--share",
    "-s",
    metavar="FILE",
    help="A custodian's share file (repeatable). Without any, asks for share files.",
)
IDENTITY_OPTION = typer.Option(
    [],
    "--identity",
    "-i",
    metavar="FILE",
    help="Identity file opening shares sealed to a public key (repeatable; matched by "
    "fingerprint).",
)
PASSPHRASE_OPTION = typer.Option(
    [],
    "--passphrase-file",
    metavar="[NAME=]FILE",
    help="FILE, or NAME=FILE for custodian NAME only: passphrase of passphrase-sealed shares "
    "and encrypted identities (repeatable). Without it, asks at a hidden prompt.",
)

_MAX_BAD_TRIES = 5


@dataclass
class QuorumSource:
    """Where the shares come from (the three shared options of every quorum command)."""

    shares: list[Path] = field(default_factory=list)
    identities: list[Path] = field(default_factory=list)
    passphrase_files: list[str] = field(default_factory=list)

    @property
    def interactive(self) -> bool:
        return not self.shares


def _recovered() -> None:
    info("[yellow]note:[/] these shares completed an interrupted rekey; old shares are dead")


def _switched(generation: int) -> None:
    info(f"note: the verified rekey took effect (keyring generation {generation}); old shares dead")


def quorum(
    keyring: Keyring, src: QuorumSource, *, complete_missing: list[str] | None = None
) -> Quorum:
    """A :class:`Quorum` fed from ``src``: share files, or prompts until the threshold is met.

    ``complete_missing``: complete a pending ``--verify`` naming exactly these as missing.

    Nothing is read or asked until the ceremony unseals. A bad share ends it in
    non-interactive mode; interactively the custodian may try again.
    """

    def accept(q: Quorum, opener: ShareOpener, path: Path) -> None:
        share = opener.open_path(path)
        try:
            progress = q.add(share)
        except KeysplitError as exc:
            raise relabel(exc, str(path)) from None
        who = progress.custodian or "unknown custodian"
        info(f"  [{progress.have}/{progress.need}] share {share.index} of {who} accepted")

    def feed(q: Quorum) -> None:
        passphrases = Passphrases(src.passphrase_files)
        opener = ShareOpener(src.identities, passphrases, interactive=src.interactive)
        if not src.interactive:
            for path in src.shares:
                if q.progress.complete:
                    info(f"  {path}: not needed (threshold already met)")
                    continue
                accept(q, opener, path)
            return
        info(f"Unsealing {keyring.path}: {q.progress.need} custodians must each give a share file.")
        bad = 0
        while not q.progress.complete:
            p = q.progress
            try:
                answer = typer.prompt(
                    f"Share file [{p.have}/{p.need}] (empty to stop)",
                    default="",
                    show_default=False,
                    err=True,
                )
            except typer.Abort:
                answer = ""
            answer = str(answer).strip()
            if not answer:
                break
            try:
                accept(q, opener, Path(answer).expanduser())
            except (KeysplitError, OSError) as exc:
                bad += 1
                message = str(exc) if isinstance(exc, KeysplitError) else f"cannot read {answer}"
                typer.echo(f"rejected: {message}", err=True)
                if bad >= _MAX_BAD_TRIES:
                    fail(f"giving up after {bad} rejected shares")
                typer.echo("try again (empty answer to stop)", err=True)

    return Quorum(
        keyring,
        feed,
        on_recovered=_recovered,
        on_switched=_switched,
        complete_missing=complete_missing,
    )
