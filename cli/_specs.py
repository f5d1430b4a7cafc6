"""The one parser of ``NAME[=FILE]`` option values (``--custodian``, ``--passphrase-file``).

Splits at the first ``=``; each option then decides what a lone value means (a custodian
name for ``--custodian``, a file for ``--passphrase-file``) and words its own error.
"""

from __future__ import annotations

__all__ = ["parse_name_file"]


def parse_name_file(spec: str) -> tuple[str, str | None] | None:
    """``"NAME=FILE"`` -> ``(NAME, FILE)``; ``"VALUE"`` -> ``(VALUE, None)``; None if
    malformed (an empty side of the ``=``, or an empty value)."""
    head, sep, tail = spec.partition("=")
    if not head or (sep and not tail):
        return None
    return head, (tail if sep else None)
