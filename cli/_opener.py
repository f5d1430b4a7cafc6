"""The one share opener: plain, passphrase-sealed, or sealed to an identity, and the
passphrase input it needs (``--passphrase-file [NAME=]FILE`` or a hidden prompt).

Identities are matched to sealed shares by recipient fingerprint (as age matches
identities to stanzas). Every error names the file it is about (share or identity).
Share files are read through :func:`keysplit.custody.read_share_file` (refused by size
before reading). Passphrases go to the library as typed: it seals their NFC form and
opens with NFC, then the exact bytes (:mod:`keysplit.names`).

An Argon2id share or identity heavier than the library does unasked
(:attr:`Argon2Params.needs_confirmation`) is confirmed at a prompt that says what it
costs; without a terminal, or with passphrases from files, it is refused unless the
command was given ``--allow-expensive-kdf``.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import stat
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer

from keysplit import CustodianError, KeysplitError

from ._common import EXIT_USAGE, fail, info, read_small_secret, relabel, shown_lines
from ._specs import parse_name_file

if TYPE_CHECKING:
    from keysplit import Argon2Params, Identity, Share
    from keysplit.custody import ConfirmKdf, SealedShareInfo

__all__ = [
    "ALLOW_EXPENSIVE_KDF",
    "ALLOW_EXPENSIVE_KDF_HELP",
    "Passphrases",
    "ShareOpener",
    "can_prompt",
    "hidden_prompt",
    "kdf_confirmer",
    "prompt_passphrase",
    "read_passphrase_file",
]

T = TypeVar("T")

PASSPHRASE_TRIES = 3
"""Passphrases typed at a terminal for one share or identity before it is given up."""
TYPED_SHARE = "the typed share"

_PLAIN_CUSTODIAN = re.compile(
    r"^#.* for custodian ([A-Za-z0-9][A-Za-z0-9._@+-]{0,63}) ", re.MULTILINE
)
"""The custodian a plain share file's comment names (``keysplit.ceremony.share_file_text``)."""
"""How a share typed (or pasted) at the prompt is named in messages."""

ALLOW_EXPENSIVE_KDF = "--allow-expensive-kdf"
"""The option that lets a non-interactive run derive an expensive Argon2id key."""
ALLOW_EXPENSIVE_KDF_HELP = (
    "Derive Argon2id keys heavier than 1 GiB x passes without asking (scripted runs; "
    "only for share and identity files you trust)."
)
_seconds_per_kib: float | None = None


def can_prompt() -> bool:
    """Whether someone can answer a prompt: stdin and stderr are terminals."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def _seconds(params: Argon2Params) -> float:
    """Estimated seconds of one derivation: a 32 MiB, one-pass run on this host (once per
    process, ~0.05-0.2 s), scaled by passes times memory over the lanes."""
    from keysplit import Argon2Params

    global _seconds_per_kib
    if _seconds_per_kib is None:
        calibration = Argon2Params(time_cost=1, memory_kib=32 * 1024, lanes=1)
        start = time.perf_counter()
        calibration.derive(b"calibration", bytes(16))
        _seconds_per_kib = (time.perf_counter() - start) / calibration.work_kib
    return _seconds_per_kib * params.work_kib / max(1, min(params.lanes, 4))


def kdf_confirmer(what: str, *, allow: bool | None, interactive: bool) -> ConfirmKdf:
    """The ``confirm_kdf`` hook for ``what`` ("this share"): yes if ``allow``, else a
    prompt with the cost when ``interactive`` and a terminal is there, else a refusal.
    ``allow`` None: the command has no :data:`ALLOW_EXPENSIVE_KDF` option (the quorum
    commands), so the refusal's hint does not offer it."""

    def confirm(params: Argon2Params) -> bool:
        if allow:
            return True
        gib = params.memory_kib / (1024 * 1024)
        if not (interactive and can_prompt()):
            raise CustodianError(
                f"{what} asks for {gib:.1f} GiB and {params.time_cost} passes of Argon2id "
                "per attempt, more than keysplit derives without asking, and there is no "
                "prompt to ask at",
                hint="run it at a terminal (passphrase typed) to be asked"
                + (
                    ""
                    if allow is None
                    else f", or pass {ALLOW_EXPENSIVE_KDF} if you trust the file"
                ),
            )
        secs = _seconds(params)
        return typer.confirm(
            f"{what} asks for {gib:.1f} GiB and ~{secs:.0f} s per attempt; continue?",
            default=False,
            err=True,
        )

    return confirm


def read_passphrase_file(path: Path) -> bytes:
    """A passphrase from a file (one trailing newline dropped); empty is an error."""
    data = read_small_secret(path, "passphrase file")
    if not data:
        fail(f"passphrase file {path} is empty")
    return data


def _has_terminal() -> bool:
    """Whether this process has a terminal to read a hidden answer from (getpass's way)."""
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        return False
    return True


def _read_line(prompt: str = "") -> str:
    """An answer from stdin when there is no terminal: nothing is shown, so nothing needs
    hiding (getpass would warn and print "Password input may be echoed")."""
    sys.stderr.write(prompt)
    sys.stderr.flush()
    line = sys.stdin.readline()
    sys.stderr.write("\n")  # as getpass ends the line the unechoed Enter did not
    if not line:
        raise EOFError
    return line.rstrip("\r\n")


@contextlib.contextmanager
def _quiet_getpass() -> Iterator[None]:
    """Hidden prompts without a terminal read stdin quietly (no ``GetPassWarning``, no
    "may be echoed"): the input is a pipe or a file, never shown. With a terminal, getpass
    as usual (it reads /dev/tty with echo off, even when stdin is a pipe)."""
    if _has_terminal():
        yield
        return
    with warnings.catch_warnings(), contextlib.ExitStack() as stack:
        warnings.simplefilter("ignore", getpass.GetPassWarning)
        original = getpass.getpass
        getpass.getpass = lambda prompt="", stream=None: _read_line(prompt)
        stack.callback(setattr, getpass, "getpass", original)
        yield


def hidden_prompt(text: str, *, confirm: bool = False) -> str:
    """One line typed at a hidden prompt on stderr ('' if empty; typed twice if
    ``confirm``). What was typed is never shown, here or in any message about it."""
    with _quiet_getpass():
        answer = typer.prompt(
            text,
            default="",
            show_default=False,
            hide_input=True,
            confirmation_prompt=confirm,
            err=True,
        )
    return str(answer)


def prompt_passphrase(what: str, *, confirm: bool = False) -> bytes:
    """A passphrase typed at a hidden prompt on stderr (with confirmation if asked)."""
    with _quiet_getpass():
        value = typer.prompt(
            f"Passphrase for {what}", hide_input=True, confirmation_prompt=confirm, err=True
        )
    if not value:
        fail("empty passphrase")
    typed = str(value).encode("utf-8", "surrogateescape")  # bytes that are not UTF-8 as given
    from keysplit.names import MAX_PASSPHRASE_BYTES

    if len(typed) > MAX_PASSPHRASE_BYTES:  # the library's ValueError was a traceback
        fail(f"passphrase too long ({len(typed)} bytes, at most {MAX_PASSPHRASE_BYTES})")
    return typed


def _unlock(
    what: str, given: bytes | None, attempt: Callable[[bytes], T], *, stdin_is_data: bool = False
) -> T:
    """``attempt(passphrase)`` with the passphrase ``given`` (from a file: once), or typed
    at a hidden prompt; at a terminal a wrong one is asked for again, up to
    :data:`PASSPHRASE_TRIES` times (a typo should not send the custodian back to the share
    prompt, where a re-typed passphrase would be shown). ``stdin_is_data``: without a
    terminal the prompt would read stdin, which is the command's input: refused."""
    from keysplit.custody import WrongPassphrase

    if given is not None:
        return attempt(given)
    if stdin_is_data and not _has_terminal():
        raise KeysplitError(
            "standard input carries the file to decrypt, so a passphrase cannot be read from it",
            hint="give --passphrase-file NAME=FILE",
        )
    tries = PASSPHRASE_TRIES if can_prompt() else 1
    for n in range(1, tries + 1):
        try:
            return attempt(prompt_passphrase(what))
        except WrongPassphrase as exc:
            if n == tries:
                raise
            typer.echo(f"{shown_lines(str(exc))}; try again ({tries - n} left)", err=True)
    raise AssertionError("unreachable")


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

    @property
    def from_files(self) -> bool:
        """True if any passphrase came from a file (a scripted run: nobody to ask)."""
        return bool(self.by_name) or self.default is not None

    def __repr__(self) -> str:
        return f"Passphrases(names={sorted(self.by_name)}, default={self.default is not None})"


def _warn_if_exposed(
    path: Path, what: str = "identity", unprotected: str = "no passphrase"
) -> None:
    """Warn (as ssh would refuse) of an unprotected secret file other users may read: an
    identity without a passphrase (its private key opens the custodian's shares) or a
    share file that is not sealed. A warning, not a refusal: a file on a FAT USB stick
    (the offline laptop's usual carrier) shows mode 0755 whatever is done."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if stat.S_ISREG(mode) and mode & 0o077:
        info(
            f"{what} {path} has {unprotected} and is readable by other users (mode "
            f"{stat.S_IMODE(mode):04o}); run: chmod 600 {path}",
            lead="warning:",
            style="yellow",
        )


def read_share_path(path: Path) -> bytes:
    """A share file's bytes (:func:`keysplit.custody.read_share_file`), with a warning if
    it is not sealed (the share itself) and other users may read it."""
    from keysplit.custody import is_sealed, kind_of, read_share_file

    data = read_share_file(path)
    kind = kind_of(data)  # a .pub or identity given as a share: refused next, not a share
    if not is_sealed(data) and (kind is None or kind.endswith("share")):
        _warn_if_exposed(path, "share file", "no sealing (the share in clear)")
    return data


class ShareOpener:
    """Opens share files; ``interactive`` asks for a missing identity file at a prompt."""

    def __init__(
        self,
        identity_files: list[Path],
        passphrases: Passphrases,
        *,
        interactive: bool = False,
        allow_expensive_kdf: bool | None = None,
        stdin_is_data: bool = False,
    ) -> None:
        self._identity_files = identity_files
        self._passphrases = passphrases
        self._interactive = interactive
        self._stdin_is_data = stdin_is_data
        self._identities: dict[str, Identity] | None = None
        self._carried: dict[str, str] = {}
        self.precheck: Callable[[SealedShareInfo], None] | None = None
        """Refuses a sealed share from its header before any passphrase or identity is
        asked for (a quorum's :meth:`~keysplit.ceremony.Quorum.precheck`)."""
        prompting = not passphrases.from_files
        self._confirm_share = kdf_confirmer(
            "this share", allow=allow_expensive_kdf, interactive=prompting
        )
        self._confirm_identity = kdf_confirmer(
            "this identity file", allow=allow_expensive_kdf, interactive=prompting
        )

    def _load_identity(self, path: Path, who: str) -> Identity:
        from keysplit import Identity
        from keysplit.custody import read_key_file

        data = read_key_file(path)
        try:
            if not Identity.is_encrypted(data):
                _warn_if_exposed(path)
                return Identity.from_bytes(data, None, confirm=self._confirm_identity)
            return _unlock(
                f"identity {path.name}",
                self._passphrases.get(who),
                lambda pw: Identity.from_bytes(data, pw, confirm=self._confirm_identity),
                stdin_is_data=self._stdin_is_data,
            )
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
            if "\0" in answer:  # no path holds one (open() would raise ValueError)
                raise KeysplitError("cannot read that identity file (what was typed is not shown)")
            ident = self._load_identity(Path(str(answer).strip()).expanduser(), custodian)
            self.identities()[ident.fingerprint] = ident
        return ident

    def open_path(self, path: Path) -> Share:
        """The share in file ``path``; ``-``: a share (text, binary or sealed) on stdin."""
        from keysplit.custody import MAX_SHARE_FILE_SIZE

        if str(path) == "-":
            return self.open("stdin", sys.stdin.buffer.read(MAX_SHARE_FILE_SIZE + 1))
        return self.open(str(path), read_share_path(path), short=path.name)

    def open_answer(self, answer: str) -> tuple[str, Share]:
        """``(name, share)`` from an answer at the share prompt: the text of a share as
        its sheet prints it (``ks1-...``, or ``KSSS-...`` for a sealed one), or the path of
        a share file. Errors never repeat the
        answer (it may be a passphrase typed at the wrong prompt)."""
        from keysplit.custody import SEALED_TEXT_PREFIX

        text = answer.strip()
        if text[:3].lower() == "ks1" or text[:4].upper() == SEALED_TEXT_PREFIX[:4]:
            return TYPED_SHARE, self.open(TYPED_SHARE, text.encode("utf-8", "surrogateescape"))
        path = Path(text).expanduser()
        try:
            data = read_share_path(path)
        except (OSError, ValueError):  # ValueError: a NUL byte, which no path holds
            raise KeysplitError(
                "cannot read that share file (what was typed is not shown)",
                hint="type the path of a share file, or the ks1- text of a share",
            ) from None
        return path.name, self.open(str(path), data, short=path.name)

    def open(self, label: str, data: bytes, *, short: str | None = None) -> Share:
        """One share from ``data``; errors are relabelled with ``label``, prompts show
        ``short`` (default ``label``)."""
        from keysplit import load_share
        from keysplit.custody import is_sealed, sealed_share_info

        try:
            if not is_sealed(data):
                share = load_share(data)
                m = (
                    None
                    if data.startswith(b"KSSH")
                    else _PLAIN_CUSTODIAN.search(data.decode("utf-8", errors="replace"))
                )
                if m is not None:
                    self._carried[share.fingerprint] = m.group(1)
                return share
            meta = sealed_share_info(data)
            if self.precheck is not None:
                self.precheck(meta)
            if meta.method == "passphrase":
                share = _unlock(
                    f"custodian {meta.custodian!r} (share {meta.index}, {short or label})",
                    self._passphrases.get(meta.custodian),
                    lambda pw: load_share(data, passphrase=pw, confirm_kdf=self._confirm_share),
                    stdin_is_data=self._stdin_is_data,
                )
                self._carried[share.fingerprint] = meta.custodian
                return share
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
            share = load_share(data, identity=ident)
        except KeysplitError as exc:
            raise relabel(exc, label) from None
        self._carried[share.fingerprint] = meta.custodian
        return share

    def custodian_of(self, share: Share) -> str | None:
        """The custodian a share opened here names: a sealed share's header, or a plain
        share file's comment (``# keysplit share 1 of 3 for custodian ana ...``); else None.
        For messages only: a plain file's comment is not authenticated."""
        return self._carried.get(share.fingerprint)
