"""``keysplit audit verify|show``: the keyring's tamper-evident ceremony log.

Without a quorum ``verify`` checks the hash chain (edited, removed, inserted, reordered or
torn entries) and prints the head hash to write down or publish; ``--anchor HEAD`` checks
that a head recorded earlier is still in the log. Without a quorum the anchor file
(``audit.anchor``) and the keyring's ``audit_anchor`` flag are read unauthenticated (their
MACs need the keyring's key), and the output says so. With a quorum (``--share`` or
``--mac``) it also checks every entry's MAC and the anchor's, which catches even a complete
rewrite of the log; a rollback of the log *and* its anchor to an earlier authentic pair
(both restored from a backup) is caught only by ``--anchor HEAD``.

Exit codes: 0 log intact, 1 log broken (the first bad entry is named), 2 usage error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from .._common import handle_errors, info
from .._quorum import IDENTITY_OPTION, PASSPHRASE_OPTION, SHARE_OPTION, QuorumSource, quorum

if TYPE_CHECKING:
    from keysplit.audit import AuditEntry

__all__ = ["app"]

app = typer.Typer()


@app.command("verify")
@handle_errors
def verify_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    anchor: str | None = typer.Option(
        None, "--anchor", help="A head hash recorded earlier: it must still be in the log."
    ),
    mac: bool = typer.Option(
        False, "--mac", help="Also check MACs (asks for a quorum unless --share is given)."
    ),
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable result."),
) -> None:
    """Check the audit log; print its head hash on stdout.

    Example: keysplit audit verify vault --anchor 3f9c...  (a head written down earlier)

    Without a quorum, audit.anchor is not authenticated: a log cut or removed together
    with it is caught by --mac; a log and anchor restored together from a backup only by
    --anchor HEAD.

    Exit codes: 0 log intact; 1 log broken (first bad entry named) or bad quorum; 2 usage.
    """
    from keysplit import Keyring

    kr = Keyring.open(directory)
    if mac or share:
        with quorum(kr, QuorumSource(share, identity, passphrase_file)).unseal() as ukr:
            report = ukr.audit_log().verify(anchor=anchor)  # while its store is open
    else:
        report = kr.audit_log().verify(anchor=anchor)
    checks = "hash chain" + (" and MACs" if report.mac_verified else "")
    info(f"{report.entries} entries, {checks} verified", lead="audit log intact:", style="green")
    if not report.mac_verified:
        info("MACs not checked (give --share/--mac with a quorum to detect a full rewrite)")
        info(
            "not authenticated without a quorum: audit.anchor and the keyring file's "
            "audit_anchor flag (their MACs need the keyring's key), so a log cut, rolled back "
            "or removed together with them passes here; --mac catches that. A log and "
            "audit.anchor restored together from a backup pass --mac too: only --anchor HEAD "
            "(a head written down or published earlier) catches that"
        )
    unrecorded = kr.unrecorded_changes()
    for gap in unrecorded:  # a change made and then killed (or failed) before its entry
        info(f"note: not in the log: {gap}")
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "entries": report.entries,
                    "head": report.head,
                    "mac_verified": report.mac_verified,
                    "anchor_authenticated": report.mac_verified,
                    "anchored": report.anchored,
                    "unrecorded": unrecorded,
                }
            )
        )
    else:
        typer.echo(report.head)


def _summary(data: Any) -> str:
    """An entry's data on one line; every value as text shown escaped (:func:`shown`): a
    subject, for one, is whatever text a shred or hold (or a token holder) gave."""
    from .._output import shown

    parts = []
    for key, value in data.items():
        if isinstance(value, list):
            names = [str(v.get("custodian", "?")) if isinstance(v, dict) else str(v) for v in value]
            parts.append(f"{key}=[{', '.join(names)}]")
        else:
            parts.append(f"{key}={value}")
    return shown(" ".join(parts))


def _entry_dict(e: AuditEntry) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "time": e.time,
        "event": e.event,
        "data": dict(e.data),
        "prev": e.prev,
        "hash": e.hash,
        "mac": e.mac,
    }


@app.command("show")
@handle_errors
def show_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per entry (JSON lines)."),
) -> None:
    """List the audit entries (not verified: use 'audit verify' for that).

    Example: keysplit audit show vault --json | jq .event

    Exit codes: 0 shown; 1 unreadable log or no keyring; 2 usage.
    """
    from rich.markup import escape
    from rich.table import Table

    from keysplit import Keyring

    entries = Keyring.open(directory).audit_log().entries()
    if as_json:
        for e in entries:
            typer.echo(json.dumps(_entry_dict(e)))
        return
    table = Table(title=f"audit log of {directory}")
    for col in ("seq", "time (UTC)", "event", "details"):
        table.add_column(col, overflow="fold")
    for e in entries:
        table.add_row(str(e.seq), e.time, e.event, escape(_summary(e.data)))
    Console(highlight=False, width=max(Console().width, 100)).print(table)


@app.command("repair")
@handle_errors
def repair_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable result."),
) -> None:
    """Repair a last line left by a crash mid-append, with a quorum; records the repair.

    Example: keysplit audit repair vault -s ana.g1.kss -s ben.g1.kss

    A torn write (part of an entry) is dropped. A whole entry that lacks only its newline is
    kept and the newline added, if it follows the chain and its MAC checks (else refused:
    that is an edit, not a crash). Complete entries are never touched. The whole log must
    verify (chain and MACs) after.

    Exit codes: 0 repaired (or nothing to repair); 1 log broken elsewhere or bad quorum; 2 usage.
    """
    from keysplit import Keyring, ceremony

    kr = Keyring.open(directory)
    done = ceremony.repair_audit(kr, quorum(kr, QuorumSource(share, identity, passphrase_file)))
    report = done.value
    if done.entry is not None and done.entry.data.get("dropped") == "torn last line":
        info(f"dropped a torn last line; {report.entries} entries verify (chain and MACs)")
    elif done.entry is not None:
        info(
            f"the last entry was whole but for its newline: kept, newline added; "
            f"{report.entries} entries verify (chain and MACs)"
        )
    else:
        info(f"nothing to repair; {report.entries} entries verify (chain and MACs)")
    doc = {"repaired": done.entry is not None, "entries": report.entries, "head": report.head}
    typer.echo(json.dumps(doc) if as_json else report.head)
