"""What the commands that talk to a key service share: the token file."""

from __future__ import annotations

from pathlib import Path

from ._common import fail

__all__ = ["TOKEN_FILE_HELP", "read_token"]

TOKEN_FILE_HELP = "File holding the service token (never pass tokens in argv)."  # noqa: S105


def read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    token = path.read_text("utf-8").strip()
    if not token:
        fail(f"token file {path} is empty")
    return token
