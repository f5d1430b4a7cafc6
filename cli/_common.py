"""Shared CLI plumbing: error reporting, secret input, output conventions.

Conventions (DESIGN.md section 10): data to stdout, messages to stderr; expected failures
print one ``error:`` line (and maybe a ``hint:``) and exit 1; usage errors exit 2; secrets
come from prompts, files or stdin, never argv.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from keysplit import KeysplitError
from keysplit.files import unreplaceable

if TYPE_CHECKING:
    from keysplit import Argon2Params

F = TypeVar("F", bound=Callable[..., Any])
E = TypeVar("E", bound=KeysplitError)

KDF: Argon2Params | None = None
"""Argon2id parameters for every new passphrase-sealed file the CLI writes (shares,
identities); None: the library default. Tests lower it (read at call time)."""

err_console = Console(stderr=True, highlight=False)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CLOSED_PIPE = 128 + signal.SIGPIPE
"""141: what a shell reports for a writer whose reader went away (``keysplit ... | head``)."""
EXIT_NO_KEY = 3
"""``keys shred`` / ``cluster shred``: no such key."""
EXIT_NOT_ACKNOWLEDGED = 4
"""``shred --wait``: a live holder did not drop the key in time (they are named)."""


def fail(message: str, hint: str | None = None, code: int = EXIT_FAILURE) -> NoReturn:
    """Print ``error: message`` (and ``hint: ...``) to stderr and exit; what they name
    (a path, an exception's text) with characters that are not printable escaped, as
    :func:`info` shows them."""
    typer.echo(f"error: {shown_lines(message)}", err=True)
    if hint:
        typer.echo(f"hint: {shown_lines(hint)}", err=True)
    raise typer.Exit(code)


def closed_pipe() -> NoReturn:
    """stdout's reader is gone (``| head``): stop quietly, as ``cat`` does. stdout is pointed
    at /dev/null first, so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (a test runner's stream)
        pass
    raise typer.Exit(EXIT_CLOSED_PIPE)


def _settle_stdout() -> None:
    """After a failure writing stdout (a full disk, an I/O error): what stdout's buffer
    still holds can never be written, so stdout is pointed at /dev/null, as
    :func:`closed_pipe` does; else the interpreter's own flush at exit fails again,
    prints "Exception ignored" with the error, and exits 120 instead of the command's code."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # no real file descriptor (a test runner's stream)
            pass


def relabel(exc: E, label: str) -> E:
    """The same error (same class, hint and fields), its message prefixed with ``label``:
    the file or share it is about, the CLI's unit of blame."""
    new = type(exc).__new__(type(exc))
    new.__dict__.update(exc.__dict__)
    new.args = (f"{label}: {exc}",)
    return new


def shown(text: str) -> str:
    """``text`` safe for a terminal: each character that is not printable (escape
    sequences, carriage returns, bidirectional overrides) as its Python escape (``\\x1b``),
    so a value someone else chose (a subject in the audit log) cannot move the cursor,
    clear or rewrite what is on screen, or reorder what is shown."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def shown_lines(text: str) -> str:
    """Each line of ``text`` :func:`shown` (its newlines kept)."""
    return "\n".join(shown(line) for line in text.split("\n"))


def info(message: str, *, lead: str = "", style: str = "") -> None:
    """A human-facing message on stderr (keeps stdout clean for data), as plain text: the
    brackets of a path, subject, name or file context (``[/]``, ``[blink]``) are shown as
    they are, never read as rich markup (``[/]`` raised MarkupError: a traceback once the
    work was done; others restyled the line), and characters that are not printable as
    their escapes (``\\x1b``: :func:`shown`), so such text cannot drive the
    terminal either. ``lead``: a word or two shown first, in ``style``
    (``lead="warning:", style="yellow"``)."""
    from rich.text import Text

    message = shown_lines(message)
    err_console.print(Text.assemble((lead, style), " ", message) if lead else Text(message))


def interrupted(exc: BaseException) -> bool:
    """Whether a prompt's ``Abort`` was Ctrl-C: Click raises it for Ctrl-C and for the end
    of input alike, and only the ``KeyboardInterrupt`` left as its context tells them
    apart (the end of input reports "no input" and names the option to use instead)."""
    return isinstance(exc.__context__, KeyboardInterrupt)


def handle_errors(func: F) -> F:
    """Turn expected failures into one ``error:`` line and exit code 1, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KeysplitError as exc:
            fail(str(exc) or type(exc).__name__, exc.hint)
        except BrokenPipeError:
            closed_pipe()
        except FileNotFoundError as exc:
            fail(f"no such file: {exc.filename}")
        except FileExistsError as exc:
            fail(str(exc), "choose another path or remove the existing file")
        except PermissionError as exc:
            fail(f"permission denied: {exc.filename}")
        except IsADirectoryError as exc:
            fail(f"is a directory: {exc.filename}")
        except OSError as exc:
            _settle_stdout()
            fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        except KeyboardInterrupt:
            fail("interrupted", code=130)
        except (typer.Abort, EOFError) as exc:  # a prompt met the end of stdin, or Ctrl-C
            if interrupted(exc):
                fail("interrupted", code=130)
            fail(
                "no input: a prompt reached the end of input",
                "give the value with its option or file (see --help), or run interactively",
            )

    return wrapper  # type: ignore[return-value]


def check_subject_arg(subject: str) -> None:
    """A usage error (exit 2) for a SUBJECT argument no data key can have: empty, too
    long, or not Unicode (bytes that are not UTF-8 reach argv as lone surrogates). Checked
    before a quorum is asked for, by the library's one rule
    (:func:`keysplit.names.check_subject`)."""
    from keysplit.names import check_subject

    try:
        check_subject(subject)
    except ValueError as exc:
        fail(f"SUBJECT: {exc}", code=EXIT_USAGE)


def _check_parent(directory: Path, what: str) -> None:
    """``directory`` (an output's parent) exists, is a directory and can take a new file."""
    if not directory.exists():
        fail(f"{what}: no such directory: {directory}", code=EXIT_USAGE)
    if not directory.is_dir():
        fail(f"{what}: not a directory: {directory}", code=EXIT_USAGE)
    if not os.access(directory, os.W_OK | os.X_OK):
        fail(f"{what}: cannot write in {directory} (permission denied)", code=EXIT_USAGE)


def check_output_file(
    path: str | Path, what: str, *, overwrite: bool = False, force: str | None = "--force"
) -> None:
    """A usage error (exit 2) for an output file the command could not write: its
    directory missing, not a directory or not writable, or ``path`` itself a directory;
    an existing file without ``overwrite`` is refused (exit 1) as the library would (the
    hint names the ``force`` option, if the command has one).
    Checked before any share or passphrase is asked for: nobody gives a share for a
    command that then cannot write its result. ``-`` (stdout) passes."""
    if str(path) == "-":
        return
    target = Path(path)
    kind = unreplaceable(target)  # the library's own check, made before any share
    if kind == "directory":
        fail(f"{what}: is a directory: {target}", code=EXIT_USAGE)
    if kind == "descriptor":  # /dev/stdout: the rename would replace the link
        fail(
            f"{what}: a link to an open file descriptor: {target}",
            "write to stdout with - and redirect it",
            code=EXIT_USAGE,
        )
    if kind == "special":  # a device, FIFO or socket
        fail(
            f"{what}: not a regular file: {target}",
            "write to stdout with - and redirect it",
            code=EXIT_USAGE,
        )
    if os.path.lexists(target) and not overwrite:  # a link to nowhere is there too
        fail(
            f"refusing to overwrite existing file: {target}",
            f"pass {force}" if force else "choose another path or remove the existing file",
        )
    _check_parent(target.parent, what)


def check_output_dir(path: Path, what: str) -> None:
    """:func:`check_output_file` for an output directory created with its parents if
    missing: ``path`` must be a directory if it exists, and its nearest existing ancestor
    a directory it can be created in."""
    if path.exists():
        _check_parent(path, what)
        _check_creates(path, what)
        return
    ancestor = next((p for p in path.absolute().parents if p.exists()), Path("/"))
    _check_parent(ancestor, what)
    _check_creates(ancestor, what)


def _check_creates(directory: Path, what: str) -> None:
    """``directory`` really takes a new entry: ``os.access`` answers yes for root on a
    directory the kernel then refuses (``/proc``: an ``init /proc/x`` read "no such file:
    /proc/x-shares" once the ceremony ran), so make a nameless file there (``O_TMPFILE``:
    a process killed during the probe leaves nothing behind); where the file system has no
    nameless files, make (and remove) an empty directory."""
    import errno
    import tempfile

    tmpfile = getattr(os, "O_TMPFILE", None)
    try:
        if tmpfile is not None:
            try:
                os.close(os.open(directory, tmpfile | os.O_WRONLY, 0o600))
                return
            except OSError as exc:  # EOPNOTSUPP (/proc, some file systems): probe by name
                if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                    raise
        os.rmdir(tempfile.mkdtemp(prefix=".keysplit-probe-", dir=directory))
    except OSError as exc:
        fail(
            f"{what}: cannot write in {directory} (creating an entry there fails: "
            f"{exc.strerror or exc})",
            code=EXIT_USAGE,
        )


def write_all_or_none(files: list[tuple[Path, bytes]]) -> None:
    """Write new files (0600, atomically, never overwriting): all of them or none.

    A name already taken is refused before anything is written, and a failed write removes
    the ones written. Half a new set beside an old one would mix two splits in one
    directory (pycryptodome or Vault shares carry no check to tell), and a rerun would
    then stop at the first file of the half set.
    """
    from keysplit.files import atomic_write

    for path, _ in files:
        if os.path.lexists(path):
            raise FileExistsError(f"refusing to overwrite existing file: {path}")
    written: list[Path] = []
    try:
        for path, data in files:
            atomic_write(path, data, overwrite=False)
            written.append(path)
    except BaseException:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        raise


INPUT_LIMIT = 1 << 20
"""Largest input file or stdin read by ``read_input`` (Vault's init JSON, share lists,
secrets): the Vault parser's own bound, checked before anything is read."""


SMALL_FILE_LIMIT = 64 << 10
"""Largest token, passphrase or proof-code file: each is a line of text, and a wrong path
(``/dev/zero``, a 50 MB file) must be refused before it is read, not read whole."""


def read_small_file(path: Path, what: str) -> bytes:
    """``path`` whole, at most :data:`SMALL_FILE_LIMIT` bytes (refused by size first)."""
    from keysplit.files import read_bounded

    return read_bounded(path, SMALL_FILE_LIMIT, f"{what} {path}")


def read_small_text(path: Path, what: str) -> str:
    """:func:`read_small_file` as UTF-8 text, stripped; bytes that are not UTF-8 are one
    ``error:`` line, not a traceback."""
    try:
        return read_small_file(path, what).decode("utf-8").strip()
    except UnicodeDecodeError:
        fail(f"{what} {path} is not UTF-8 text")


def read_small_secret(path: Path, what: str) -> bytes:
    """:func:`read_small_file` less one trailing newline (``\\r\\n`` or ``\\n``: what an editor
    or ``echo`` adds); every other byte, spaces too, is the secret's own."""
    data = read_small_file(path, what)
    for end in (b"\r\n", b"\n"):
        if data.endswith(end):
            return data[: -len(end)]
    return data


def read_input(path: Path | None) -> bytes:
    """Read bytes from ``path``, or from stdin when it is None or ``-`` (at most
    :data:`INPUT_LIMIT`: a larger input is refused before it is read)."""
    from keysplit.files import read_bounded, read_bounded_stream

    if path is None or str(path) == "-":
        return read_bounded_stream(sys.stdin.buffer, INPUT_LIMIT, "standard input")
    return read_bounded(path, INPUT_LIMIT, str(path))
