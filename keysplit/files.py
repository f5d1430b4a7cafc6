"""Atomic, durable writes of secret files (shares, identities, recovered secrets).

The public face of the library's one file writer, for applications and the CLI: the file
appears whole or not at all, new files get mode 0600, and ``overwrite=False`` refuses an
existing target even against a concurrent writer (see :mod:`keysplit._fileio`).
"""

from ._fileio import (
    atomic_write,
    atomic_writer,
    names_a_descriptor,
    read_bounded,
    read_bounded_stream,
    unreplaceable,
)

__all__ = [
    "atomic_write",
    "atomic_writer",
    "names_a_descriptor",
    "read_bounded",
    "read_bounded_stream",
    "unreplaceable",
]
