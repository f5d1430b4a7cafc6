"""``keysplit init``: create a keyring, a fresh master key split K-of-N among custodians.

Prompts and prints only: one call into :func:`keysplit.ceremony.init`, which writes the
shares and the keyring and records the 'init' audit entry. The master key is never printed.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .. import _common
from .._common import check_output_dir, fail, handle_errors, info
from .._custodians import (
    CUSTODIAN_OPTION_HELP,
    SHARES_DIR_HELP,
    SHEETS_HELP,
    check_threshold,
    parse_custodians,
    sink,
)
from .._output import JSON_HELP, print_share_table
from .._verification import VERIFY_HELP, verify_note

__all__ = ["app"]

app = typer.Typer()


@app.command("init")
@handle_errors
def init_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="New keyring directory (created)."),
    threshold: int = typer.Option(..., "--threshold", "-k", help="Custodians needed to unseal."),
    custodian: list[str] = typer.Option(
        [], "--custodian", "-c", metavar="NAME[=PUBFILE]", help=CUSTODIAN_OPTION_HELP
    ),
    passphrase_file: list[str] = typer.Option(
        [],
        "--passphrase-file",
        metavar="[NAME=]FILE",
        help="NAME=FILE: passphrase for custodian NAME's share; FILE alone: for all "
        "(automation; default: a hidden prompt with confirmation).",
    ),
    shares_dir: Path | None = typer.Option(None, "--shares-dir", "--out-dir", help=SHARES_DIR_HELP),
    plain_shares: bool = typer.Option(
        False,
        "--plain-shares",
        help="Custodians without a key get unprotected share files (demos and tests only).",
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    verify: bool = typer.Option(False, "--verify", help=VERIFY_HELP),
    sheets: Path | None = typer.Option(None, "--sheets", metavar="DIR", help=SHEETS_HELP),
    store: str | None = typer.Option(
        None,
        "--store",
        metavar="URL",
        help="Key store URL recorded in the keyring (default: sqlite:keys.sqlite inside DIR; "
        "postgresql://... without a password: libpq's PGPASSFILE/.pgpass).",
    ),
) -> None:
    """Create a keyring: a fresh master key split K-of-N among the custodians.

    Writes one share file per custodian (mode 0600) and an 'init' audit entry.

    Prints the keyring fingerprint (ksk1...) and pins it in the known-keyrings file
    ($KEYSPLIT_KNOWN_KEYRINGS or ~/.config/keysplit/known_keyrings): encrypt checks it.

    The master key is never written or printed: keep K share files safe.

    Example: keysplit init vault -k 2 -c ana=keys/ana.pub -c ben=keys/ben.pub -c cy=keys/cy.pub

    Exit codes: 0 created; 1 failure (bad public key, existing keyring or share file); 2 usage.
    """
    from keysplit import Keyring, ceremony
    from keysplit.ceremony import ShareFileExists
    from keysplit.store import check_store_url
    from keysplit.trust import KnownKeyrings

    url = check_store_url(store) if store is not None else None
    check_output_dir(directory, "DIR")
    Keyring.refuse_existing(directory)  # before any custodian types a passphrase
    shares = sink(shares_dir, directory, sheets)
    custody = parse_custodians(
        custodian, passphrase_file, plain_shares, "--passphrase-file", threshold=lambda n: threshold
    )
    check_threshold(threshold, custody)
    try:
        done = ceremony.init(
            directory,
            threshold,
            custody,
            shares,
            kdf=_common.KDF,
            pin=KnownKeyrings(),
            store_url=url,
            verify=verify,
            sheets=None if sheets is None else ceremony.SheetWriter(sheets),
        )
    except ShareFileExists as exc:
        fail(str(exc), "choose another --shares-dir")
    kr = done.keyring
    print_share_table(f"keyring {kr.keyring_id}: {threshold} of {len(custody)}", done.shares)
    if sheets is not None:
        info(f"share sheets (as secret as the shares): {sheets}/NAME.g1.pdf")
    info(f"audit log head: {done.entry.hash}")
    if verify:
        verify_note(directory, "the keyring serves no ceremony and no encrypt")
    info(f"keyring fingerprint: {kr.fingerprint}")
    if done.pinned is not None:
        info(
            f"pinned in {KnownKeyrings().path}; on other machines: "
            f"keysplit keyring pin DIR --expect {kr.fingerprint}"
        )
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "keyring_id": kr.keyring_id,
                    "fingerprint": kr.fingerprint,
                    "store_url": kr.store_url,
                    "threshold": threshold,
                    "shares": [w.as_dict() for w in done.shares],
                    "audit_head": done.entry.hash,
                }
            )
        )
    else:
        typer.echo(kr.keyring_id)
