"""Proofs of possession for a ``--verify`` ceremony, as ``keysplit verify ...`` shows them
(and the old ``rekey --prove/--verify-status/--complete`` spellings, which call the same
functions): record a custodian's code, show who is missing, complete the switch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ._common import err_console, fail, info, read_small_text
from ._output import names
from ._quorum import QuorumSource, quorum

if TYPE_CHECKING:
    from keysplit import Keyring

__all__ = ["VERIFY_HELP", "complete", "record_proof", "show_status", "verify_note"]

VERIFY_HELP = (
    "Every custodian must prove possession of their new share ('keysplit share prove FILE', "
    "recorded with 'keysplit verify prove DIR NAME') before it is relied on."
)


def verify_note(directory: Path, until: str) -> None:
    """What a --verify ceremony waits for, and the commands that finish it."""
    info(
        f"{until} until every custodian has proven possession: each runs 'keysplit share "
        f"prove FILE' and the code is recorded with 'keysplit verify prove {directory} "
        f"NAME'; see 'keysplit verify status {directory}'",
        lead="pending verification:",
        style="yellow",
    )


def show_status(kr: Keyring, as_json: bool) -> None:
    from rich.markup import escape
    from rich.table import Table

    from keysplit import ceremony

    v = ceremony.pending_verification(kr)
    if v is None:
        if as_json:
            typer.echo(json.dumps({"pending": False}))
            return
        fail("no share generation of this keyring awaits proofs of possession")
    st = v.status
    if as_json:
        typer.echo(
            json.dumps(
                {"pending": True, "kind": v.kind, "generation": v.generation, **st.to_json()}
            )
        )
        return
    table = Table(title=escape(f"keyring {kr.keyring_id}: {v.kind} generation {v.generation}"))
    for col in ("custodian", "proof", "wrong codes"):
        table.add_column(col)
    for name in v.state.custodians:
        table.add_row(
            escape(name),
            "proven" if name in st.proven else "MISSING",
            str(st.failures.get(name, 0)),
        )
    err_console.print(table)
    if st.completed:
        info("every custodian has proven (or was named missing): ready to switch")
    typer.echo(f"{len(st.proven)}/{len(st.proven) + len(st.missing)} proven")


def record_proof(kr: Keyring, name: str, code_file: Path | None, as_json: bool) -> None:

    from keysplit import ceremony

    if code_file is not None:
        code = read_small_text(code_file, "proof code file")
    else:
        code = str(typer.prompt(f"Proof code of {name} (xxxx-xxxx)", err=True)).strip()
    st = ceremony.prove(kr, name, code)
    missing = ", ".join(st.missing) or "none"
    info(f"for {name}; missing: {missing}", lead="proof recorded", style="green")
    if st.completed:
        info(
            "every custodian has proven: the next ceremony with a quorum (of the NEW shares "
            "after a rekey) switches and records it, e.g. 'keysplit verify complete DIR'"
        )
    typer.echo(json.dumps(st.to_json()) if as_json else f"{len(st.proven)}/{st.count} proven")


def complete(kr: Keyring, src: QuorumSource, missing: list[str], *, as_json: bool = False) -> None:
    """Switch to the verified generation with a quorum, naming the unproven custodians."""
    from keysplit import ceremony

    pending = ceremony.pending_verification(kr)
    proven = sorted(pending.status.proven) if pending is not None else []
    drill = ceremony.unseal_check(kr, quorum(kr, src, complete_missing=missing))
    # the quorum apart from the proofs: a custodian in it who is named --missing proved nothing
    info(
        f"verification complete (proven: {', '.join(proven) or 'none'}; unproven: "
        f"{', '.join(sorted(missing)) or 'none'}; quorum: {names(drill.contributors)}); "
        f"keyring {kr.keyring_id} is at generation {kr.meta.generation}"
    )
    if as_json:
        doc = {
            "keyring_id": kr.keyring_id,
            "generation": kr.meta.generation,
            "custodians": [c.as_dict() for c in drill.contributors],
            "unproven": sorted(missing),
        }
        typer.echo(json.dumps(doc))
    else:
        typer.echo(kr.keyring_id)
