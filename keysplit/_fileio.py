"""Atomic, durable file writes.

Files that hold secrets (shares, identities, keyring metadata) are written to a temporary
file in the same directory, fsynced, renamed over the target and the directory fsynced, so
a crash leaves either the old file or the new one, never a torn or empty one, and nothing
is replaced until its replacement is durable. New files get mode 0600.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import FormatError

__all__ = ["atomic_write", "atomic_writer", "fsync_dir", "read_bounded", "read_bounded_stream"]


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """fsync a directory so a rename inside it is durable."""
    fd = os.open(os.fspath(directory), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(
    path: str | os.PathLike[str], *, mode: int = 0o600, overwrite: bool = True
) -> Iterator[BinaryIO]:
    """Yield a binary file; on clean exit it atomically replaces ``path``.

    On an exception the temporary file is removed and ``path`` is untouched. With
    ``overwrite=False`` an existing ``path`` is an error (checked again at rename time via
    ``os.link`` so two writers cannot both win).
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not overwrite and target.exists():
        raise FileExistsError(f"refusing to overwrite existing file: {target}")
    tmp = directory / f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, target)
        else:
            os.link(tmp, target)
            os.unlink(tmp)
        fsync_dir(directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(
    path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600, overwrite: bool = True
) -> None:
    """Write ``data`` to ``path`` atomically and durably with permissions ``mode``."""
    with atomic_writer(path, mode=mode, overwrite=overwrite) as fh:
        fh.write(data)


def read_bounded(
    path: str | os.PathLike[str], limit: int, what: str, *, kind: str | None = None
) -> bytes:
    """Read a small input file whole, refusing it by size *before* reading.

    Identity, public-key, Vault and share files are a few KiB; reading one of hundreds of
    MB before checking its size would let a wrong (or hostile) path cost that much memory.
    The size is checked with ``fstat`` first, and at most ``limit + 1`` bytes are read (a
    file that grew meanwhile, a pipe or ``/dev/zero`` ends there). Too large: FormatError.
    """
    big = "too large" if kind is None else f"too large for {kind}"
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        if st.st_size > limit:
            raise FormatError(f"{what} is {big} ({st.st_size} bytes, at most {limit})")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise FormatError(f"{what} is {big} (more than {limit} bytes)")
    return data


def read_bounded_stream(stream: BinaryIO, limit: int, what: str) -> bytes:
    """:func:`read_bounded` for an open stream (stdin): at most ``limit + 1`` bytes read."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise FormatError(f"{what} is too large (more than {limit} bytes)")
    return data
