"""Gathering a quorum of custodian shares, the same way for every ceremony command.

Two modes, like Vault's ``operator unseal`` but friendlier:

* non-interactive: ``--share FILE`` (repeatable), ``--identity FILE`` (matched to sealed
  shares by recipient fingerprint, as age matches identities to stanzas) and
  ``--passphrase-file [NAME=]FILE``;
* interactive (no ``--share``): asks for shares one at a time at a hidden prompt (a share
  file's path, or a share's text typed from its sheet: ``ks1-``, or ``KSSS-`` sealed),
  then for the identity file or passphrase each needs (a wrong passphrase is asked for
  again, hidden), shows
  progress ("2/3"), names a bad share at once and lets the custodian try again. Nothing
  typed at a hidden prompt is ever printed back, not even in a rejection.

``--share -`` reads one share (text, binary or sealed) from stdin.

Each share is checked against the keyring as soon as it is read
(:class:`keysplit.ceremony.Quorum`), so a share of another keyring, an old share set or a
duplicate is refused before anyone else types a passphrase. The prompts are only a feed:
the ceremony itself (and its audit entry) runs in :mod:`keysplit.ceremony`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from keysplit import KeysplitError

from ._common import EXIT_USAGE, fail, info, interrupted, relabel, shown_lines
from ._opener import Passphrases, ShareOpener, hidden_prompt

if TYPE_CHECKING:
    from keysplit import Keyring, Share
    from keysplit.audit import AuditEntry
    from keysplit.ceremony import Quorum

__all__ = [
    "IDENTITY_OPTION",
    "PASSPHRASE_OPTION",
    "SHARE_OPTION",
    "STORE_OPTION",
    "QuorumSource",
    "ask_for_shares",
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
    from keysplit import Keyring

    return Keyring.open(directory, store_url=store)


SHARE_OPTION = typer.Option(
    [],
    "--share",
    "-s",
    metavar="FILE",
    help="A custodian's share file (repeatable; - reads one share from stdin, e.g. its ks1- "
    "text). Without any, asks for shares at a hidden prompt.",
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
    stdin_is_data: bool = False
    """stdin carries the command's input (``decrypt DIR -``): no prompt may read it."""

    def __post_init__(self) -> None:
        if sum(str(p) == "-" for p in self.shares) > 1:
            fail("--share - (stdin) can be given once", code=EXIT_USAGE)

    @property
    def interactive(self) -> bool:
        return not self.shares


def ask_for_shares(
    opener: ShareOpener, prompt: Callable[[], str | None], take: Callable[[str, Share], bool]
) -> None:
    """Ask for shares at a hidden prompt, ``prompt()`` its text (None: enough), until an
    empty answer; each share goes to ``take(name, share)`` (False: stop). A rejected answer
    is reported without repeating it; after :data:`_MAX_BAD_TRIES` rejections, give up."""
    bad = 0
    while (text := prompt()) is not None:
        try:
            answer = hidden_prompt(f"{text} (file or share text, hidden; empty to stop)").strip()
        except typer.Abort as exc:  # end of input: as an empty answer; Ctrl-C: interrupted
            if interrupted(exc):
                raise
            return
        if not answer:
            return
        try:
            name, share = opener.open_answer(answer)
            if not take(name, share):
                return
        except KeysplitError as exc:
            bad += 1
            typer.echo(f"rejected: {shown_lines(str(exc))}", err=True)
            if exc.hint:  # what to check ("0/o, 1/l/i"), as the non-interactive error shows it
                typer.echo(f"hint: {shown_lines(exc.hint)}", err=True)
            if bad >= _MAX_BAD_TRIES:
                fail(f"giving up after {bad} rejected shares")
            typer.echo("try again (empty answer to stop)", err=True)


def _recovered() -> None:
    info(
        "these shares completed an interrupted rekey; old shares are dead",
        lead="note:",
        style="yellow",
    )


def _observed(entries: Sequence[AuditEntry]) -> None:
    for e in entries:
        d = e.data
        info(
            f"note: the log lacked the {d.get('operation')} of {d.get('target')!r} (a ceremony "
            f"killed before its entry); recorded what this quorum found: {d.get('found')}"
        )


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
    from keysplit.ceremony import Quorum

    def accept(q: Quorum, name: str, share: Share, opener: ShareOpener) -> bool:
        try:
            progress = q.add(share, custodian=opener.custodian_of(share))
        except KeysplitError as exc:
            raise relabel(exc, name) from None
        who = progress.custodian or "unknown custodian"
        info(f"  [{progress.have}/{progress.need}] share {share.index} of {who} accepted")
        return True

    def feed(q: Quorum) -> None:
        passphrases = Passphrases(src.passphrase_files)
        opener = ShareOpener(
            src.identities,
            passphrases,
            interactive=src.interactive,
            stdin_is_data=src.stdin_is_data,
        )
        opener.precheck = lambda meta: q.precheck(
            meta.set_id, meta.index, meta.threshold, custodian=meta.custodian
        )
        if not src.interactive:
            for path in src.shares:
                if q.progress.complete:
                    info(f"  {path}: not needed (threshold already met)")
                    continue
                accept(q, str(path), opener.open_path(path), opener)
            return
        info(f"Unsealing {keyring.path}: {q.progress.need} custodians must each give a share.")

        def prompt() -> str | None:
            p = q.progress
            return None if p.complete else f"Share [{p.have}/{p.need}]"

        ask_for_shares(opener, prompt, lambda name, share: accept(q, name, share, opener))

    return Quorum(
        keyring,
        feed,
        on_recovered=_recovered,
        on_switched=_switched,
        complete_missing=complete_missing,
        on_observed=_observed,
    )
