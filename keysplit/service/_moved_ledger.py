"""``DIR/moved.sqlite``: the ledger of the data keys ``keysplit cluster rotate DIR NEW`` moved.

One row per key a run stored in NEW: a 16-byte check value, HMAC-SHA256 keyed by the data
key itself over NEW's cluster id and the subject (:func:`moved_check`). It names no
subject (each check is keyed by a random 128-bit key, so no list of guessed subjects can
be tried against it) and holds no key material (a keyed hash, as a share's check value).

The carry of shreds (:func:`~keysplit.service.cluster_admin.rotate_cluster`) uses it to
tell a key the rotation moved from one written in NEW afresh: a subject shredded in OLD
through a copy of its directory without ``successor.json`` is shredded in NEW only if
NEW's key for it has its check value here. Each run records a batch's checks (durably)
*before* it stores the batch in NEW, so no key reaches NEW unrecorded; a check of a batch
whose storing failed matches no other key. ``successor.json``'s ``"ledger"`` field says a
rotation keeps one from its first run on (docs/format/cluster.md).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import ClusterError

__all__ = ["MOVED_FILE", "MovedLedger", "moved_check"]

MOVED_FILE = "moved.sqlite"
_DOMAIN = b"keysplit cluster moved key\x00"


def moved_check(new_cluster_id: str, subject: str, key: bytes) -> bytes:
    """The ledger's check value of ``key`` moved to cluster ``new_cluster_id`` for
    ``subject`` (as spelled in the store)."""
    msg = _DOMAIN + bytes.fromhex(new_cluster_id) + subject.encode("utf-8", "surrogatepass")
    return hmac.digest(key, msg, hashlib.sha256)[:16]


class MovedLedger:
    """``DIR/moved.sqlite`` opened (created with ``create``); a context manager."""

    def __init__(self, directory: str | os.PathLike[str], *, create: bool) -> None:
        path = Path(directory) / MOVED_FILE
        if not create and not path.is_file():
            raise ClusterError(
                f"{path} is missing: successor.json says this rotation records the keys it "
                "moves there",
                hint="restore it from a backup of the directory; without one, remove "
                "'ledger' from successor.json: shreds are then carried by the tombstone "
                "marks alone (SECURITY.md names the case that rule gets wrong)",
            )
        fresh = not path.exists()
        db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
            db.execute("PRAGMA synchronous=FULL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS moved (check_value BLOB PRIMARY KEY) WITHOUT ROWID"
            )
            if fresh:  # not secret, like successor.json beside it (whatever the umask)
                os.chmod(path, 0o644)
        except (sqlite3.Error, OSError) as exc:
            if db is not None:
                db.close()
            raise ClusterError(f"{path}: {exc}") from None
        self._db, self._path = db, path

    def add(self, checks: Iterable[bytes]) -> None:
        """Record ``checks`` (one transaction, durable when this returns)."""
        rows = [(c,) for c in checks]
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT OR IGNORE INTO moved VALUES (?)", rows)
        except sqlite3.Error as exc:
            raise ClusterError(f"{self._path}: {exc}") from None

    def known(self, checks: Sequence[bytes]) -> set[bytes]:
        """Those of ``checks`` the ledger holds."""
        out: set[bytes] = set()
        try:
            for i in range(0, len(checks), 500):
                part = checks[i : i + 500]
                marks = ",".join("?" * len(part))
                q = f"SELECT check_value FROM moved WHERE check_value IN ({marks})"  # noqa: S608
                out.update(bytes(r[0]) for r in self._db.execute(q, part))
        except sqlite3.Error as exc:
            raise ClusterError(f"{self._path}: {exc}") from None
        return out

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> MovedLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
