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

    def send_items(self, kind: str, field: str, items: list[Any], limit: int) -> None:
        """Send ``items`` as ``{"t": kind, field: [...]}`` messages of at most about
        ``limit`` bytes each (the parent refuses a line past its bound, so a long list,
        or long subject names, goes out in several)."""
        chunk: list[Any] = []
        size = 0
        for item in items:
            n = len(json.dumps(item, separators=(",", ":"))) + 1
            if chunk and size + n > limit:
                self.send({"t": kind, field: chunk})
                chunk, size = [], 0
            chunk.append(item)
            size += n
        if chunk:
            self.send({"t": kind, field: chunk})

    def progress(self, done: int, total: int) -> None:
        self.send({"t": "progress", "done": int(done), "total": int(total)})
