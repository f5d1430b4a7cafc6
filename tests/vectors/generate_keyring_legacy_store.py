"""Write tests/vectors/keyring_legacy_store.json: a keyring and store as written before
wrapped data keys were bound to their subject (issue 15).

Run once with the code of commit 21022d6 (the last one whose data keys are wrapped with
RFC 3394's default IV); later code writes bound keys, so re-running it now would not
reproduce the file, by design. The migration test opens this snapshot with today's code.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from pathlib import Path

from keysplit import Keyring
from keysplit.rng import DeterministicRandom

OUT = Path(__file__).parent / "keyring_legacy_store.json"
SUBJECTS = ["alice", "bob", "carol", "dave"]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kr"
        rng = DeterministicRandom("legacy store v1")
        kr, shares = Keyring.create(path, 2, ["c1", "c2", "c3"], rng=rng)
        with kr.unseal([shares["c1"], shares["c2"]]) as ku:
            records = {s: ku.encrypt(f"record of {s}".encode(), subject=s) for s in SUBJECTS}
        db = sqlite3.connect(path / "keys.sqlite")
        rows = db.execute("SELECT subject, kek_version, wrapped FROM data_keys ORDER BY 1")
        stored = [[s, v, w.hex()] for s, v, w in rows]
        db.close()
        doc = {
            "note": "written by keysplit at commit 21022d6 (default-IV AES-KW rows)",
            "keyring_file": (path / "keyring.ksk").read_bytes().hex(),
            "keyring_id": kr.keyring_id,
            "shares": {n: str(s) for n, s in shares.items()},
            "data_keys": stored,
            "records": {s: r.hex() for s, r in records.items()},
        }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
