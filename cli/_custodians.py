"""Custodians as the ceremony commands take them: ``--custodian NAME[=PUBFILE]``, their
passphrases, and where their new share files go (init, rekey, share convert).

Public keys and passphrases are all read before anything is created, so a typo costs
nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from keysplit import KeysplitError

from ._common import EXIT_USAGE, check_output_dir, fail, info, relabel
from ._opener import Passphrases, prompt_passphrase
from ._specs import parse_name_file

if TYPE_CHECKING:
    from keysplit import Recipient
    from keysplit.ceremony import Custody, DirectorySink

__all__ = [
    "CUSTODIAN_OPTION_HELP",
    "SHARES_DIR_HELP",
    "SHEETS_HELP",
    "check_threshold",
    "parse_custodians",
    "read_recipient",
    "sink",
]

CUSTODIAN_OPTION_HELP = (
    "NAME=PUBFILE seals NAME's share to their public key (from 'keysplit custodian keygen'); "
    "NAME alone seals it under a passphrase NAME types (repeatable, one per custodian)."
)


SHARES_DIR_HELP = "Where to write the share files (default: DIR-shares beside DIR)."


SHEETS_HELP = (
    "Also write one printable PDF share sheet per custodian into DIR (as secret as the shares)."
)


def read_recipient(name: str, pub: str) -> Recipient:
    """The public key in file ``pub``, which must be custodian ``name``'s."""
    from keysplit import Recipient

    try:
        recipient = Recipient.from_file(pub)
    except KeysplitError as exc:
        raise relabel(exc, pub) from None
    if recipient.name != name:
        fail(
            f"{pub} is the public key of {recipient.name!r}, not {name!r}",
            "check which file belongs to which custodian",
        )
    return recipient


def _is_custodian_name(name: str) -> bool:
    from keysplit.custody import check_custodian_name

    try:
        check_custodian_name(name)
    except ValueError:
        return False
    return True


def parse_custodians(
    specs: list[str],
    passphrase_specs: list[str],
    plain: bool,
    option: str,
    *,
    threshold: Callable[[int], int] | None = None,
) -> list[Custody]:
    """Read public keys and passphrases before anything is created (a typo costs nothing).

    Every check of the list itself (syntax, a custodian named twice, ``threshold(count)``
    against the count, one public key for two custodians) comes before the first passphrase
    prompt: nobody types and confirms a passphrase for a ceremony refused afterwards.
    """
    from keysplit.ceremony import Custody, check_custody
    from keysplit.names import check_custodian_names

    if not specs:
        fail("give the custodians with --custodian NAME[=PUBFILE]", code=EXIT_USAGE)
    passphrases = Passphrases(passphrase_specs, option=option)
    parsed_specs: list[tuple[str, str | None]] = []
    for spec in specs:
        parsed = parse_name_file(spec)
        if parsed is None or not _is_custodian_name(parsed[0]):
            fail(
                f"--custodian expects NAME or NAME=PUBFILE, got {spec!r}",
                "names are 1-64 characters of A-Z a-z 0-9 . _ @ + -",
                code=EXIT_USAGE,
            )
        parsed_specs.append(parsed)
    names = [name for name, _ in parsed_specs]
    try:
        check_custodian_names(names)  # the library's rule: unique ignoring case
    except ValueError:
        fail(
            "each custodian may appear only once",
            "names are compared ignoring case ('ann' and 'ANN' are one custodian)",
            code=EXIT_USAGE,
        )
    if threshold is not None:
        check_threshold(threshold(len(names)), names)
    keys = {name: read_recipient(name, pub) for name, pub in parsed_specs if pub}
    check_custody([Custody(name, recipient=key) for name, key in keys.items()])
    out: list[Custody] = []
    for name, pub in parsed_specs:
        if pub:
            out.append(Custody(name, recipient=keys[name]))
        elif plain:
            out.append(Custody(name))
        else:
            pw = passphrases.get(name) or prompt_passphrase(f"custodian {name!r}", confirm=True)
            out.append(Custody(name, passphrase=pw))
    if plain:
        info(
            "--plain-shares writes shares unprotected: anyone who reads enough of these "
            "files has the master key (use only for demos and tests)",
            lead="warning:",
            style="yellow",
        )
    return out


def sink(shares_dir: Path | None, directory: Path, sheets: Path | None = None) -> DirectorySink:
    """Where the new shares go (``--shares-dir``, default ``DIR-shares``), that directory
    and ``--sheets`` checked first: made before any passphrase prompt or quorum, so a path
    that cannot be written is refused before anyone types a secret."""
    from keysplit.ceremony import DirectorySink

    if shares_dir is None:
        d = directory if directory.name else directory.resolve()
        shares_dir = d.parent / f"{d.name}-shares"
    check_output_dir(shares_dir, "--shares-dir")
    if sheets is not None:
        check_output_dir(sheets, "--sheets")
    return DirectorySink(shares_dir)


def check_threshold(k: int, custody: list[Custody] | list[str]) -> None:
    if not 2 <= k <= len(custody):
        fail(f"--threshold must be between 2 and {len(custody)} (the custodians)", code=EXIT_USAGE)
