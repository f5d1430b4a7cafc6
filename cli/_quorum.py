"""Gathering a quorum of custodian shares, the same way for every ceremony command.

Two modes, like Vault's ``operator unseal`` but friendlier:

* non-interactive: ``--share FILE`` (repeatable), ``--identity FILE`` (matched to sealed
  shares by recipient fingerprint, as age matches identities to stanzas) and
  ``--passphrase-file [NAME=]FILE``;
* interactive (no ``--share``): asks for share files one at a time, then for the identity
  file or passphrase each needs, shows progress ("2/3"), names a bad share at once and lets
  the custodian try again.

Each share is checked against the keyring as soon as it is read (:class:`Unsealer`), so a
share of another keyring, an old share set or a duplicate is refused before anyone else
types a passphrase.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import typer

from keysplit import (
    Argon2Params,
    Identity,
    Keyring,
    KeysplitError,
    Share,
    UnsealedKeyring,
    is_sealed,
    load_share,
    sealed_share_info,
)

from ._common import EXIT_USAGE, fail, info

__all__ = [
    "IDENTITY_OPTION",
    "KDF",
    "PASSPHRASE_OPTION",
    "SHARE_OPTION",
    "Contributor",
    "Passphrases",
    "QuorumSource",
    "gather_quorum",
    "prompt_passphrase",
    "read_passphrase_file",
    "relabel",
    "share_file_text",
]

KDF: Argon2Params | None = None
"""Argon2id parameters for new passphrase-sealed shares (None: the library default).
Tests lower it."""

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


def relabel(exc: KeysplitError, label: str) -> KeysplitError:
    """The same error, prefixed with the file it is about (the CLI's unit of blame)."""
    return KeysplitError(f"{label}: {exc}", hint=exc.hint)


def _normalize(passphrase: bytes) -> bytes:
    """NFC-normalize UTF-8 passphrases, so the same words typed on another system match."""
    try:
        return unicodedata.normalize("NFC", passphrase.decode("utf-8")).encode("utf-8")
    except UnicodeDecodeError:
        return passphrase


def read_passphrase_file(path: Path) -> bytes:
    """A passphrase from a file (one trailing newline dropped); empty is an error."""
    data = path.read_bytes()
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        fail(f"passphrase file {path} is empty")
    return _normalize(data)


def prompt_passphrase(what: str, *, confirm: bool = False) -> bytes:
    """A passphrase typed at a hidden prompt on stderr (with confirmation if asked)."""
    value = typer.prompt(
        f"Passphrase for {what}", hide_input=True, confirmation_prompt=confirm, err=True
    )
    if not value:
        fail("empty passphrase")
    return _normalize(str(value).encode("utf-8"))


def share_file_text(share: Share, custodian: str | None = None) -> str:
    """A plain share file: two comment lines and the typable share text."""
    who = f" for custodian {custodian}" if custodian else ""
    return (
        f"# keysplit share {share.index} of {share.count}{who} "
        f"(any {share.threshold} recover the secret)\n"
        f"# set id {share.set_id_hex}\n"
        f"{share}\n"
    )


class Passphrases:
    """Passphrases from ``--passphrase-file [NAME=]FILE`` options, by custodian name."""

    def __init__(self, specs: list[str], *, option: str = "--passphrase-file") -> None:
        self.by_name: dict[str, bytes] = {}
        self.default: bytes | None = None
        for spec in specs:
            name, sep, path = spec.partition("=")
            if sep and name and path:
                if name in self.by_name:
                    fail(f"{option} given twice for {name!r}", code=EXIT_USAGE)
                self.by_name[name] = read_passphrase_file(Path(path))
            elif not sep:
                if self.default is not None:
                    fail(f"only one {option} without NAME= may be given", code=EXIT_USAGE)
                self.default = read_passphrase_file(Path(spec))
            else:
                fail(f"{option} expects FILE or NAME=FILE, got {spec!r}", code=EXIT_USAGE)

    def get(self, name: str) -> bytes | None:
        return self.by_name.get(name, self.default)

    def __repr__(self) -> str:
        return f"Passphrases(names={sorted(self.by_name)}, default={self.default is not None})"


@dataclass
class QuorumSource:
    """Where the shares come from (the three shared options of every quorum command)."""

    shares: list[Path] = field(default_factory=list)
    identities: list[Path] = field(default_factory=list)
    passphrase_files: list[str] = field(default_factory=list)

    @property
    def interactive(self) -> bool:
        return not self.shares


@dataclass(frozen=True)
class Contributor:
    """Who contributed a share: safe to print and log (no share bytes)."""

    custodian: str
    index: int
    fingerprint: str

    def as_dict(self) -> dict[str, str | int]:
        return {"custodian": self.custodian, "index": self.index, "share": self.fingerprint}


class _Opener:
    """Opens one share file: plain, passphrase-sealed, or sealed to an identity."""

    def __init__(self, src: QuorumSource) -> None:
        self._src = src
        self._passphrases = Passphrases(src.passphrase_files)
        self._identities: dict[str, Identity] | None = None

    def _load_identity(self, path: Path, who: str) -> Identity:
        data = path.read_bytes()
        try:
            pw = None
            if Identity.is_encrypted(data):
                pw = self._passphrases.get(who) or prompt_passphrase(f"identity {path.name}")
            return Identity.from_bytes(data, pw)
        except KeysplitError as exc:
            raise relabel(exc, str(path)) from None

    def identities(self) -> dict[str, Identity]:
        if self._identities is None:
            self._identities = {}
            for path in self._src.identities:
                ident = self._load_identity(path, path.stem)
                self._identities[ident.fingerprint] = ident
        return self._identities

    def _identity_for(self, custodian: str, fingerprint: str) -> Identity | None:
        """The identity whose fingerprint matches; asks for its file when interactive.

        Errors here name the identity file, not the share.
        """
        ident = self.identities().get(fingerprint)
        if ident is None and self._src.interactive:
            answer = typer.prompt(
                f"Identity file of custodian {custodian!r} (key {fingerprint})", err=True
            )
            ident = self._load_identity(Path(str(answer).strip()).expanduser(), custodian)
            self.identities()[ident.fingerprint] = ident
        return ident

    def open(self, path: Path) -> Share:
        data = path.read_bytes()
        label = str(path)
        try:
            if not is_sealed(data):
                return load_share(data)
            meta = sealed_share_info(data)
            if meta.method == "passphrase":
                pw = self._passphrases.get(meta.custodian) or prompt_passphrase(
                    f"custodian {meta.custodian!r} (share {meta.index}, {path.name})"
                )
                return load_share(data, passphrase=pw)
        except KeysplitError as exc:
            raise relabel(exc, label) from None
        fp = meta.recipient_fingerprint or ""
        ident = self._identity_for(meta.custodian, fp)
        try:
            if ident is None:
                raise KeysplitError(
                    f"share {meta.index} is sealed to custodian {meta.custodian!r} "
                    f"(key {fp}) and no --identity matches",
                    hint=f"add --identity with the identity file of {meta.custodian!r}",
                )
            return load_share(data, identity=ident)
        except KeysplitError as exc:
            raise relabel(exc, label) from None


def gather_quorum(keyring: Keyring, src: QuorumSource) -> tuple[UnsealedKeyring, list[Contributor]]:
    """Collect shares until the keyring's threshold is met, then unseal it.

    Raises :class:`KeysplitError` (the CLI prints it) for a bad share in non-interactive
    mode, too few shares, or a quorum that fails its recovery check.
    """
    unsealer = keyring.unsealer()
    opener = _Opener(src)
    contributors: list[Contributor] = []

    def accept(path: Path) -> None:
        share = opener.open(path)
        try:
            progress = unsealer.add(share)
        except KeysplitError as exc:
            raise relabel(exc, str(path)) from None
        who = progress.custodian or "unknown custodian"
        contributors.append(Contributor(who, share.index, share.fingerprint))
        info(f"  [{progress.have}/{progress.need}] share {share.index} of {who} accepted")

    if not src.interactive:
        for path in src.shares:
            if unsealer.progress.complete:
                info(f"  {path}: not needed (threshold already met)")
                continue
            accept(path)
    else:
        need = unsealer.progress.need
        info(f"Unsealing {keyring.path}: {need} custodians must each give a share file.")
        bad = 0
        while not unsealer.progress.complete:
            p = unsealer.progress
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
                accept(Path(answer).expanduser())
            except (KeysplitError, OSError) as exc:
                bad += 1
                message = str(exc) if isinstance(exc, KeysplitError) else f"cannot read {answer}"
                typer.echo(f"rejected: {message}", err=True)
                if bad >= _MAX_BAD_TRIES:
                    fail(f"giving up after {bad} rejected shares")
                typer.echo("try again (empty answer to stop)", err=True)
    before = keyring.meta.generation
    unsealed = unsealer.finish()
    if keyring.meta.generation != before:
        # These were the new shares of an interrupted rekey: unsealing completed it.
        info("[yellow]note:[/] these shares completed an interrupted rekey; old shares are dead")
        unsealed.audit_log().append(
            "rekey",
            generation=keyring.meta.generation,
            recovered=True,
            custodians=[c.name for c in keyring.meta.custodians],
            authorized_by=[c.as_dict() for c in contributors],
        )
    return unsealed, contributors
