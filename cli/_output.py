"""Output conventions shared by the command modules: data on stdout, messages on stderr.

A command prints its result on stdout (one value, or one JSON document with --json)
and everything meant for a person on stderr, so keysplit ... | jq and
x=$(keysplit ...) see only the result.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import re
import sys
from collections.abc import Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any, TextIO, cast

import typer

from ._common import err_console, shown, shown_lines

if TYPE_CHECKING:
    from keysplit.ceremony import Contributor, WrittenShare

__all__ = [
    "JSON_HELP",
    "UnprintableOutput",
    "emit",
    "names",
    "note",
    "print_share_table",
    "printable_stdout",
    "shown",
]

JSON_HELP = "Print a machine-readable result on stdout."


def emit(doc: Any, as_json: bool, text: object) -> None:
    """The result on stdout: doc as one JSON line with --json, else text."""
    typer.echo(json.dumps(doc) if as_json else text)


def note(message: str) -> None:
    """A plain (unwrapped, markup-free) message on stderr (escaped as :func:`shown`)."""
    typer.echo(shown_lines(message), err=True)


def names(contributors: Sequence[Contributor]) -> str:
    """The custodians of a quorum, for a message."""
    return ", ".join(c.custodian for c in contributors)


def print_share_table(title: str, shares: Sequence[WrittenShare]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title))
    for col in ("custodian", "share file", "share fingerprint", "protection"):
        table.add_column(col, overflow="fold")
    for w in shares:
        table.add_row(
            *(escape(str(v)) for v in (w.custodian, w.location, w.fingerprint, w.protection))
        )
    err_console.print(table)


class UnprintableOutput(Exception):
    """Bytes bound for a terminal that would drive it rather than be shown (see
    :func:`printable_stdout`); raised before any of them is written, which
    ``characters_written`` (``BlockingIOError``'s name) tells the writer's caller: a decrypt's
    ``decrypt-incomplete`` entry counts only bytes that left."""

    characters_written = 0


_DRIVES_TERMINAL = re.compile(
    # C0 and C1 controls but tab, newline and a carriage return ending a line: ESC (and the
    # 8-bit CSI U+009B, OSC U+009D) starts escape sequences that move the cursor, rewrite
    # the screen, set the window title or the clipboard; BEL, backspace, a bare CR rewrite
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
    # bidirectional controls reorder what is shown (Trojan Source)
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
    "|\r(?!\n)"
)


class _PrintableWriter:
    """``out`` (stdout's binary stream) that refuses a write holding anything but UTF-8
    text a terminal shows as it is: each write is checked whole before any of it is
    written. A UTF-8 sequence or a CRLF cut between two writes is judged once complete:
    its first part is held back until then, and :meth:`finish` refuses one the output
    ends with (a last bare "\\r" sent the cursor back over the plaintext's last line, and
    the CLI's own message on stderr, the same terminal, then wrote over it)."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._cr_open = False  # the last write ended in "\r": a "\n" must come next
        self._held = b""  # the bytes not judged yet: a last "\r", half a UTF-8 sequence

    def write(self, data: bytes | bytearray | memoryview) -> int:
        data = bytes(data)
        try:
            text = self._decoder.decode(data)
        except UnicodeDecodeError:
            raise UnprintableOutput from None
        if text:
            if self._cr_open and text[0] != "\n":
                raise UnprintableOutput
            bad = _DRIVES_TERMINAL.search(text)
            if bad is not None and (bad.start() < len(text) - 1 or text[-1] != "\r"):
                # (a "\r" that ends the write waits for the next one)
                raise UnprintableOutput
            self._cr_open = bad is not None
        pending = self._held + data
        keep = len(self._decoder.getstate()[0]) + (1 if self._cr_open else 0)
        self._held = pending[len(pending) - keep :] if keep else b""
        self._out.write(pending[: len(pending) - keep])
        return len(data)

    @property
    def held(self) -> int:
        """How many bytes of earlier writes it took and has not written (yet): the
        decrypt's ``decrypt-incomplete`` entry does not count them if the output stops."""
        return len(self._held)

    def finish(self) -> None:
        """The output ends here: a "\\r" or half a UTF-8 sequence still held is refused
        (:class:`UnprintableOutput`), never written."""
        if self._held:
            raise UnprintableOutput

    def flush(self) -> None:
        """:meth:`finish`, then stdout's flush: a decrypt flushes its output at its end,
        before its audit entry (a refused end is then a stopped decrypt, on the record)."""
        self.finish()
        self._out.flush()

    def __getattr__(self, name: str) -> Any:  # flush, fileno, ...: stdout's own
        return getattr(self._out, name)


class _PrintableStdout:
    """sys.stdout whose ``buffer`` is a :class:`_PrintableWriter`; the rest is stdout's."""

    def __init__(self, real: TextIO) -> None:
        self._real = real
        self.buffer = _PrintableWriter(real.buffer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@contextlib.contextmanager
def printable_stdout(active: bool) -> Iterator[None]:
    """While ``active``, binary writes to stdout (``sys.stdout.buffer``: a decrypted file's
    plaintext) raise :class:`UnprintableOutput` instead of writing what is not plain text:
    bytes that are not UTF-8, control characters (escape sequences) or bidirectional
    controls. Decrypted content reaches an operator's terminal only as text it shows,
    never as commands to it (rage refuses the same; the content may be an attacker's)."""
    if not active:
        yield
        return
    real = sys.stdout
    guarded = _PrintableStdout(real)
    sys.stdout = cast("TextIO", guarded)
    try:
        yield
        guarded.buffer.finish()
    finally:
        sys.stdout = real
