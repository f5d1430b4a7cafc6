"""The one share opener: plain, passphrase-sealed, or sealed to an identity, and the
passphrase input it needs (``--passphrase-file [NAME=]FILE`` or a hidden prompt).

Identities are matched to sealed shares by recipient fingerprint (as age matches
identities to stanzas). Every error names the file it is about (share or identity).
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import typer

from keysplit import Identity, KeysplitError, Share, load_share
from keysplit.custody import is_sealed, sealed_share_info

from ._common import EXIT_USAGE, fail, relabel
from ._specs import parse_name_file

__all__ = [
    "Passphrases",
    "ShareOpener",
    "prompt_passphrase",
    "read_passphrase_file",
]


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


class Passphrases:
    """Passphrases from ``--passphrase-file [NAME=]FILE`` options, by custodian name."""

    def __init__(self, specs: list[str], *, option: str = "--passphrase-file") -> None:
        self.by_name: dict[str, bytes] = {}
        self.default: bytes | None = None
        for spec in specs:
            parsed = parse_name_file(spec)
            if parsed is None:
                fail(f"{option} expects FILE or NAME=FILE, got {spec!r}", code=EXIT_USAGE)
            name, path = parsed
            if path is not None:
                if name in self.by_name:
                    fail(f"{option} given twice for {name!r}", code=EXIT_USAGE)
                self.by_name[name] = read_passphrase_file(Path(path))
            else:
                if self.default is not None:
                    fail(f"only one {option} without NAME= may be given", code=EXIT_USAGE)
                self.default = read_passphrase_file(Path(spec))

    @classmethod
    def single(cls, path: Path | None) -> Passphrases:
        """One passphrase file for every share and identity (or none: prompts)."""
        out = cls([])
        out.default = read_passphrase_file(path) if path is not None else None
        return out

    def get(self, name: str) -> bytes | None:
        return self.by_name.get(name, self.default)

    def __repr__(self) -> str:
        return f"Passphrases(names={sorted(self.by_name)}, default={self.default is not None})"


class ShareOpener:
    """Opens share files; ``interactive`` asks for a missing identity file at a prompt."""

    def __init__(
        self, identity_files: list[Path], passphrases: Passphrases, *, interactive: bool = False
    ) -> None:
        self._identity_files = identity_files
        self._passphrases = passphrases
        self._interactive = interactive
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
            for path in self._identity_files:
                ident = self._load_identity(path, path.stem)
                self._identities[ident.fingerprint] = ident
        return self._identities

    def _identity_for(self, custodian: str, fingerprint: str) -> Identity | None:
        """The identity whose fingerprint matches; asks for its file when interactive.

        Errors here name the identity file, not the share.
        """
        ident = self.identities().get(fingerprint)
        if ident is None and self._interactive:
            answer = typer.prompt(
                f"Identity file of custodian {custodian!r} (key {fingerprint})", err=True
            )
            ident = self._load_identity(Path(str(answer).strip()).expanduser(), custodian)
            self.identities()[ident.fingerprint] = ident
        return ident

    def open_path(self, path: Path) -> Share:
        return self.open(str(path), path.read_bytes(), short=path.name)

    def open(self, label: str, data: bytes, *, short: str | None = None) -> Share:
        """One share from ``data``; errors are relabelled with ``label``, prompts show
        ``short`` (default ``label``)."""
        try:
            if not is_sealed(data):
                return load_share(data)
            meta = sealed_share_info(data)
            if meta.method == "passphrase":
                pw = self._passphrases.get(meta.custodian) or prompt_passphrase(
                    f"custodian {meta.custodian!r} (share {meta.index}, {short or label})"
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
