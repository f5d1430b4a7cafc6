"""What ``shred`` and ``cluster shred`` share: the confirmation, asked before anything is
destroyed, and the report once the key is gone (the JSON document, exit codes 3 and 4).
One copy, so the two commands keep one JSON layout and one exit-code policy."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import typer

from ._common import EXIT_NO_KEY, EXIT_NOT_ACKNOWLEDGED, fail, info

if TYPE_CHECKING:
    from keysplit.store.base import Lease

__all__ = ["confirm_shred", "report_shred"]


def confirm_shred(subject: str, yes: bool) -> None:
    """Ask before destroying ``subject``'s data key (unless ``--yes``); no: exit 1."""
    if not yes and not typer.confirm(
        f"Destroy the data key of {subject!r}? Their records become unrecoverable", err=True
    ):
        fail("not confirmed: nothing was shredded")


def report_shred(
    subject: str,
    *,
    existed: bool,
    tombstone_seq: int,
    holders: int,
    pending: Sequence[Lease],
    wait: float,
    as_json: bool,
    no_key: str,
    holder: tuple[str, str],
    no_key_hint: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """The JSON document (with ``extra`` last), then: ``no_key`` (and ``no_key_hint``, by
    default: check the subject id) and exit 3 if there was no key; the ``pending`` holders
    (``holder``: the plural and singular noun, e.g. ``("client(s)", "client")``) and exit 4
    if some did not acknowledge within ``wait``."""
    from keysplit.store.base import describe_lease

    if as_json:
        doc = {
            "subject": subject,
            "shredded": existed,
            "tombstone_seq": tombstone_seq if existed else None,
            "holders": holders,
            "not_acknowledged": [
                {"host": x.host, "pid": x.pid, "role": x.role, "lease": x.id} for x in pending
            ],
            **(extra or {}),
        }
        typer.echo(json.dumps(doc))
    if not existed:
        hint = no_key_hint or "check the subject id (a mistyped id shreds nothing)"
        fail(no_key, hint=hint, code=EXIT_NO_KEY)
    info(f"shredded the data key of {subject!r}")
    if pending:
        fail(
            f"{len(pending)} live {holder[0]} did not acknowledge the shred within {wait:g} s: "
            + ", ".join(describe_lease(x) for x in pending),
            hint="each drops the key when it next reaches the store, and stops using its "
            "cache when its lease expires",
            code=EXIT_NOT_ACKNOWLEDGED,
        )
    if wait > 0:
        info(f"acknowledged by every live {holder[1]} ({holders})")
