"""``keysplit status``: what a keyring holds, from public data only (no quorum)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from keysplit import KeysplitError

from .._common import handle_errors
from .._output import JSON_HELP
from .._quorum import STORE_OPTION, open_keyring

__all__ = ["app"]

app = typer.Typer()


@app.command("status")
@handle_errors
def status_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    store: str | None = STORE_OPTION,
) -> None:
    """Show versions, custodians and key counts (public data only; needs no quorum).

    Example: keysplit status vault --json

    Exit codes: 0 shown (even if the audit chain is broken: see its line); 1 no keyring; 2 usage.
    """
    from rich.markup import escape
    from rich.table import Table

    from keysplit import trust

    kr = open_keyring(directory, store)
    doc = kr.status().as_dict()
    doc["trust"] = trust.trust_state(kr).as_dict()
    log = kr.audit_log()
    try:
        report = log.verify()
        doc["audit"] = {"entries": report.entries, "head": report.head, "chain_ok": True}
    except KeysplitError as exc:
        doc["audit"] = {"chain_ok": False, "error": str(exc)}
    if as_json:
        typer.echo(json.dumps(doc))
        return
    table = Table(title=f"keyring {doc['keyring_id']}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    custodians = ", ".join(f"{c['name']} (#{c['index']})" for c in doc["custodians"])
    versions = ", ".join(f"v{k}: {v}" for k, v in doc["keys_by_version"].items()) or "none"
    audit = doc["audit"]
    tr = doc["trust"]
    pin = (
        "not pinned: encrypt refuses without --expect (keysplit keyring pin)"
        if not tr["pinned"]
        else "pinned, matches"
        if tr["pin_matches"]
        else "PINNED TO ANOTHER KEY: the public key was replaced; do not encrypt to it"
    )
    for field_, value in (
        ("path", doc["path"]),
        ("keyring generation", str(doc["generation"])),
        ("quorum", f"{doc['threshold']} of {len(doc['custodians'])}"),
        ("custodians", custodians),
        ("share set", doc["set_id"]),
        ("public key", doc["public_key"]),
        ("fingerprint", tr["fingerprint"]),
        ("trust", f"{pin} ({tr['known_keyrings']})"),
        ("store", doc["store_url"]),
        ("current KEK", f"v{doc['current_kek']}"),
        ("KEK versions", ", ".join(f"v{v}" for v in doc["kek_versions"])),
        ("data keys", f"{doc['data_keys']} ({versions})"),
        ("legal holds", str(doc["legal_holds"])),
        ("pending rekey", "yes" if doc["pending_rekey"] else "no"),
        ("fleet", _fleet_line(doc["fleet"], doc["uncounted_rekeys"])),
        ("live holders", _holders(doc["leases"])),
        (
            "audit log",
            f"{audit['entries']} entries, head {audit['head']}"
            if audit["chain_ok"]
            else f"BROKEN: {audit['error']}",
        ),
    ):
        table.add_row(field_, escape(value))
    Console(highlight=False, width=max(Console().width, 100)).print(table)


def _fleet_line(fleet: dict[str, object] | None, uncounted: list[str]) -> str:
    # rekeys that took effect here while the store failed to count them: the store's
    # count is short by that many until the next unseal or rekey counts them
    owed = (
        f" (+{len(uncounted)} not yet counted by the store: the next unseal or rekey counts them)"
        if uncounted
        else ""
    )
    if fleet is None:
        return f"unknown{owed}"
    retired = fleet["retired"]
    gone = ", ".join(f"v{v}" for v in retired) if isinstance(retired, list) and retired else "none"
    return (
        f"epoch {fleet['epoch']}, current KEK v{fleet['current_kek']}, retired {gone}, "
        f"{fleet['shreds']} shreds, {fleet['rekeys']} rekeys{owed}"
    )


def _holders(leases: list[dict[str, object]]) -> str:
    if not leases:
        return "none"
    # the time left on the store's clock (status_of): this host's may be off by a skew
    return "\n".join(
        f"{x['host']} pid {x['pid']} ({x['role']}): KEK v{x['current_kek']}, "
        f"{x['cached_keys']} keys cached, acked shred #{x['acked_shreds']}, "
        f"lease {float(x['expires_in']):.0f} s"  # type: ignore[arg-type]
        for x in leases
    )
