"""``keysplit rekey``: a new master key and new shares for the given custodians (every old
share dies), or ``--abort`` an unfinished one. One :func:`keysplit.ceremony.rekey` call.

The proof-of-possession steps of ``rekey --verify`` are the ``keysplit verify`` group; the
old spellings ``rekey --prove/--verify-status/--complete`` still work (hidden aliases).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from .. import _common
from .._common import EXIT_USAGE, fail, handle_errors, info
from .._custodians import (
    CUSTODIAN_OPTION_HELP,
    SHARES_DIR_HELP,
    SHEETS_HELP,
    check_threshold,
    parse_custodians,
    sink,
)
from .._output import JSON_HELP, print_share_table
from .._quorum import (
    IDENTITY_OPTION,
    PASSPHRASE_OPTION,
    SHARE_OPTION,
    STORE_OPTION,
    QuorumSource,
    open_keyring,
    quorum,
)
from .._verification import VERIFY_HELP, record_proof, show_status, verify_note
from .._verification import complete as complete_verification

if TYPE_CHECKING:
    from keysplit import Keyring

__all__ = ["app"]

app = typer.Typer()


@app.command("rekey")
@handle_errors
def rekey_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    custodian: list[str] = typer.Option(
        [],
        "--custodian",
        "-c",
        metavar="NAME[=PUBFILE]",
        help="The NEW custodian list: " + CUSTODIAN_OPTION_HELP,
    ),
    threshold: int | None = typer.Option(
        None, "--threshold", "-k", help="New threshold (default: the current one)."
    ),
    new_passphrase_file: list[str] = typer.Option(
        [],
        "--new-passphrase-file",
        metavar="NAME=FILE",
        help="NAME=FILE: passphrase for NAME's NEW share.",
    ),
    shares_dir: Path | None = typer.Option(None, "--shares-dir", "--out-dir", help=SHARES_DIR_HELP),
    plain_shares: bool = typer.Option(
        False, "--plain-shares", help="Unprotected new share files (demos and tests only)."
    ),
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
    store: str | None = STORE_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    abort: bool = typer.Option(
        False,
        "--abort",
        help="Discard an unfinished rekey (left by a crash) with a quorum of the CURRENT "
        "shares; its new shares become useless.",
    ),
    verify: bool = typer.Option(
        False, "--verify", help=VERIFY_HELP + " The switch waits; the old shares keep working."
    ),
    sheets: Path | None = typer.Option(None, "--sheets", metavar="DIR", help=SHEETS_HELP),
    prove: str | None = typer.Option(
        None,
        "--prove",
        metavar="NAME",
        hidden=True,
        help="Record custodian NAME's proof code (from 'keysplit share prove'); no quorum.",
    ),
    code_file: Path | None = typer.Option(
        None,
        "--code-file",
        hidden=True,
        help="With --prove: read the code from FILE (default: a prompt).",
    ),
    verify_status: bool = typer.Option(
        False,
        "--verify-status",
        hidden=True,
        help="Show who has proven possession of the pending shares.",
    ),
    complete: bool = typer.Option(
        False,
        "--complete",
        hidden=True,
        help="Switch to the verified generation with a quorum of its NEW shares (of the "
        "current ones after 'init --verify'); custodians who have not proven must be "
        "named with --missing.",
    ),
    missing: list[str] = typer.Option(
        [],
        "--missing",
        metavar="NAME",
        hidden=True,
        help="With --complete: a custodian who has not proven.",
    ),
) -> None:
    """New master key and new shares for the given custodians; every old share dies.

    Needs a quorum of the current shares. With --abort: discard an unfinished rekey instead.

    The new share files are written before the switch: on failure the old shares still work.

    Data keys and data are untouched.

    Example: keysplit rekey vault -c ana=ana.pub -c ben=ben.pub -c dee=dee.pub --verify
    -s ana.g1.kss -s ben.g1.kss

    Exit codes: 0 rekeyed; 1 bad quorum or write failure (old shares still work); 2 usage.
    """
    from keysplit import ceremony
    from keysplit.ceremony import ShareFileExists

    kr = open_keyring(directory, store)
    if abort:
        _abort_rekey(kr, QuorumSource(share, identity, passphrase_file))
        return
    if verify_status:
        show_status(kr, as_json)
        return
    if prove is not None:
        record_proof(kr, prove, code_file, as_json)
        return
    if missing and not complete:
        fail("--missing goes with --complete", code=EXIT_USAGE)
    if complete:
        complete_verification(kr, QuorumSource(share, identity, passphrase_file), missing)
        return

    def new_threshold(count: int) -> int:
        return threshold if threshold is not None else min(kr.meta.threshold, count)

    shares = sink(shares_dir, directory, sheets)
    custody = parse_custodians(
        custodian,
        new_passphrase_file,
        plain_shares,
        "--new-passphrase-file",
        threshold=new_threshold,
    )
    k = new_threshold(len(custody))
    check_threshold(k, custody)
    try:
        done = ceremony.rekey(
            kr,
            quorum(kr, QuorumSource(share, identity, passphrase_file)),
            custody,
            shares,
            threshold=k,
            kdf=_common.KDF,
            verify=verify,
            sheets=None if sheets is None else ceremony.SheetWriter(sheets),
        )
    except ShareFileExists as exc:
        fail(str(exc), "choose another --shares-dir")
    print_share_table(f"keyring {kr.keyring_id} rekeyed: {k} of {len(custody)}", done.shares)
    if sheets is not None:
        info(f"share sheets (as secret as the shares): {sheets}/NAME.g{done.generation}.pdf")
    if done.pending:
        verify_note(directory, "the switch waits (the old shares still work)")
    else:
        info("old shares no longer unseal this keyring")
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "keyring_id": kr.keyring_id,
                    "generation": done.generation,
                    "pending_verification": done.pending,
                    "threshold": k,
                    "shares": [w.as_dict() for w in done.shares],
                    "audit_head": done.entry.hash,
                }
            )
        )
    else:
        typer.echo(kr.keyring_id)


def _abort_rekey(kr: Keyring, source: QuorumSource) -> None:
    from keysplit import ceremony

    existed = ceremony.abort_rekey(kr, quorum(kr, source)).value
    info(
        "pending rekey discarded; the current shares stay valid" if existed else "nothing to abort"
    )
