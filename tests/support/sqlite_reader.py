"""A process that pins a snapshot of a SQLite key store (an open read transaction that has
read ``data_keys``), for tests of what a shred's WAL erase does while someone reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["start_reader"]

_READER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN")
db.execute("SELECT count(*) FROM data_keys").fetchone()  # a snapshot that holds the key
print("reading", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
db.close()
"""


def start_reader(path: Path) -> subprocess.Popen[str]:
    """The reader of the store at ``path``: it prints "reading" once its snapshot is
    pinned, then holds it until a line arrives on its stdin."""
    return subprocess.Popen(
        [sys.executable, "-c", _READER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
