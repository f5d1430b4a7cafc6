"""Reading and writing shares of every format ``keysplit share convert`` knows: sources
from files or stdin (never argv), each line and file named in errors; new shares to stdout
or to one 0600 file each, never overwriting.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from keysplit import KeysplitError

from ._common import (
    EXIT_USAGE,
    fail,
    info,
    read_input,
    read_small_secret,
    relabel,
    write_all_or_none,
)
from ._opener import ALLOW_EXPENSIVE_KDF, Passphrases, ShareOpener, can_prompt, hidden_prompt

if TYPE_CHECKING:
    from keysplit import Share
    from keysplit.interop import slip39, vault

__all__ = [
    "CUSTODIAN_PASSPHRASE",
    "parse_groups",
    "read_keysplit",
    "read_pycryptodome",
    "read_slip39",
    "read_sources",
    "read_vault",
    "slip39_confirmer",
    "slip39_passphrase",
    "write_items",
]


def _lines(blob: bytes, name: str) -> list[tuple[str, str]]:
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError:
        raise KeysplitError(f"{name}: not text (and not a binary keysplit share)") from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if s and not s.startswith("#"):
            out.append((f"{name} line {n}", s))
    return out


def read_sources(inputs: list[Path] | None) -> list[tuple[str, bytes]]:
    if not inputs:
        return [("stdin", read_input(None))]
    return [("stdin" if str(p) == "-" else str(p), read_input(p)) for p in inputs]


CUSTODIAN_PASSPHRASE = "--custodian-passphrase-file"  # noqa: S105 (an option name)

ALLOW_EXPENSIVE_KDF_CONVERT_HELP = (
    "Run the key derivations that keysplit asks about without asking (SLIP-39 sources above "
    "iteration exponent 10, Argon2id-sealed shares above 1 GiB x passes): scripted runs, "
    "only for shares you trust."
)


def slip39_confirmer(allow: bool, stdin_busy: bool) -> slip39.ConfirmIterations:
    """The ``confirm`` hook of a SLIP-39 recovery: yes with ``--allow-expensive-kdf``, else
    a prompt with the cost at a terminal, else a refusal that says what to pass."""
    from keysplit.interop import slip39

    def confirm(exponent: int) -> bool:
        if allow:
            return True
        n = slip39.pbkdf2_iterations(exponent)
        what = f"the SLIP-39 shares ask for {n:,} PBKDF2 iterations (iteration exponent {exponent})"
        if stdin_busy or not can_prompt():
            raise KeysplitError(
                f"{what}, more than keysplit runs without asking, and there is no prompt to ask at",
                hint=f"run it at a terminal to be asked, or pass {ALLOW_EXPENSIVE_KDF} if you "
                "trust the shares",
            )
        return typer.confirm(f"{what}; continue?", default=False, err=True)

    return confirm


def read_keysplit(
    sources: list[tuple[str, bytes]],
    identity: list[Path],
    custodian_passphrases: list[str],
    allow_expensive_kdf: bool = False,
) -> tuple[list[Share], Callable[[Share], str | None]]:
    """keysplit shares; sealed ones opened with ``identity`` files or the passphrases of
    ``--custodian-passphrase-file [NAME=]FILE`` (else prompts), as ``combine`` opens them;
    and who holds each as far as the input says (a sealed share's custodian), for
    :func:`keysplit.combine`'s messages."""
    from keysplit import Share
    from keysplit.custody import is_sealed

    shares = []
    opener = None
    for name, blob in sources:
        if is_sealed(blob):
            if opener is None:  # the same prompts and messages as `keysplit combine`
                passphrases = Passphrases(custodian_passphrases, option=CUSTODIAN_PASSPHRASE)
                opener = ShareOpener(identity, passphrases, allow_expensive_kdf=allow_expensive_kdf)
            shares.append(opener.open(name, blob))
            continue
        if blob.startswith(b"KSSH"):
            try:
                shares.append(Share.from_bytes(blob))
            except KeysplitError as exc:
                raise relabel(exc, name) from None
            continue
        for where, line in _lines(blob, name):
            try:
                shares.append(Share.parse(line))
            except KeysplitError as exc:
                raise relabel(exc, where) from None
    return shares, (opener.custodian_of if opener is not None else lambda _: None)


def read_slip39(sources: list[tuple[str, bytes]]) -> list[slip39.Slip39Share]:
    from keysplit.interop import slip39

    shares = []
    for name, blob in sources:
        for where, line in _lines(blob, name):
            try:
                shares.append(slip39.decode_mnemonic(line))
            except KeysplitError as exc:
                raise relabel(exc, where) from None
    return shares


def read_pycryptodome(sources: list[tuple[str, bytes]]) -> list[tuple[int, bytes]]:
    from keysplit.interop import pycryptodome

    shares = []
    for name, blob in sources:
        try:
            shares += pycryptodome.parse_pycryptodome(blob.decode("utf-8", errors="replace"))
        except KeysplitError as exc:
            raise relabel(exc, name) from None
    return shares


_GROUP = re.compile(r"^\s*(\d+)\s*(?:of|/|-)\s*(\d+)\s*$")


def parse_groups(spec: str) -> list[tuple[int, int]]:
    groups = []
    for part in spec.split(","):
        m = _GROUP.match(part)
        if not m:
            raise typer.BadParameter(
                f"{part.strip()!r} is not of the form T-of-N (e.g. 3of5)", param_hint="--groups"
            )
        groups.append((int(m.group(1)), int(m.group(2))))
    return groups


def slip39_passphrase(
    passphrase_file: Path | None, no_passphrase: bool, confirm: bool, stdin_busy: bool
) -> bytes:
    if no_passphrase:
        return b""
    if passphrase_file is not None:
        return read_small_secret(passphrase_file, "passphrase file")
    if stdin_busy:
        fail(
            "shares are read from stdin, so the SLIP-39 passphrase cannot be prompted for",
            hint="use --passphrase-file FILE or --no-passphrase",
            code=EXIT_USAGE,
        )
    text = hidden_prompt("SLIP-39 passphrase (empty for none)", confirm=confirm)
    return text.encode("utf-8", "surrogateescape")  # bytes that are not UTF-8 as given


def write_items(out_dir: Path | None, items: list[tuple[str, str]]) -> None:
    """Write ``(file name, text)`` items to ``out_dir`` (0600, never overwriting) or stdout,
    all of them or none (:func:`write_all_or_none`)."""
    if out_dir is None:
        sys.stdout.write("".join(text for _, text in items))
        sys.stdout.flush()
        return
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = [(out_dir / name, text.encode()) for name, text in items if not text.startswith("#")]
    write_all_or_none(files)
    info(f"wrote {len(files)} share file(s) to {out_dir}")


def read_vault(sources: list[tuple[str, bytes]]) -> vault.VaultKeys:
    from keysplit.interop import vault

    keys: list[bytes] = []
    stated: set[tuple[int | None, int | None]] = set()
    kinds = set()
    for name, blob in sources:
        try:
            vk = vault.parse_vault(blob.decode("utf-8", errors="replace"))
        except KeysplitError as exc:
            raise relabel(exc, name) from None
        keys += vk.keys
        kinds.add(vk.kind)
        if vk.threshold is not None:
            stated.add((vk.threshold, vk.count))
    if len(stated) > 1 or len(kinds) > 1:
        raise KeysplitError("the inputs come from different Vault initializations")
    t, n = stated.pop() if stated else (None, None)
    return vault.VaultKeys(tuple(keys), t, n, kinds.pop())
