"""What an attacker or a fuzzer does to files and bytes: shared by unit and CLI tests."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from hypothesis import strategies as st

from keysplit.keyring import KEYRING_FILE


def replace_public_key(path: Path, new_pub: bytes) -> None:
    """What an attacker with write access does: a well-formed keyring file with another key."""
    data = (path / KEYRING_FILE).read_bytes()
    (mlen,) = struct.unpack_from(">I", data, 5)
    meta = json.loads(data[9 : 9 + mlen])
    meta["public_key"] = new_pub.hex()
    mj = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(mj) == mlen
    (path / KEYRING_FILE).write_bytes(data[:9] + mj + data[9 + mlen :])


def mutate(data: bytes, draw: st.DrawFn) -> bytes:
    """One random edit of ``data``: a bit flip, truncation, extension, replacement or none."""
    op = draw(st.sampled_from(["flip", "truncate", "extend", "replace", "none"]))
    if not data or op == "none":
        return data
    i = draw(st.integers(0, len(data) - 1))
    if op == "flip":
        return data[:i] + bytes([data[i] ^ (1 << draw(st.integers(0, 7)))]) + data[i + 1 :]
    if op == "truncate":
        return data[:i]
    if op == "extend":
        return data + draw(st.binary(min_size=1, max_size=8))
    return data[:i] + draw(st.binary(min_size=1, max_size=4)) + data[i + 1 :]
