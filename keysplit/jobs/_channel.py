"""The job driver child's side of its pipes to the parent (see :mod:`keysplit.jobs._isolate`):
JSON lines out (what the parent parses, checked), the trusted parent's replies in."""

from __future__ import annotations

import json
from typing import IO, Any

__all__ = ["Channel"]


class Channel:
    """This side of the pipe pair: JSON lines out, the parent's replies in."""

    def __init__(self, out: IO[str], inp: IO[str]) -> None:
        self._out, self._in = out, inp

    def send(self, msg: dict[str, Any]) -> None:
        self._out.write(json.dumps(msg, separators=(",", ":")) + "\n")
        self._out.flush()

    def ask(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Send ``msg`` and wait for the parent's reply (the parent is trusted)."""
        self.send(msg)
        line = self._in.readline()
        if not line:
            raise EOFError("the parent closed the channel")
        reply = json.loads(line)
        if not isinstance(reply, dict):
            raise ValueError("malformed reply from the parent")
        return reply

    def progress(self, done: int, total: int) -> None:
        self.send({"t": "progress", "done": int(done), "total": int(total)})
