"""What an attacker or a fuzzer does to files and bytes: shared by unit and CLI tests."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

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


HOSTILE_JSON: tuple[object, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1,
    2**31,
    2**32,
    2**64,
    10**30,
    1.5,
    float("inf"),  # written as 1e400 by dump_json: a number JSON reads back as infinity
    float("-inf"),
    "",
    "é",
    "\ud800",  # a lone surrogate, written as the escape a JSON file may carry
    "a\x00b",
    "x" * 300,
    [],
    {},
    [1],
    {"a": 1},
)
"""Values a hostile edit puts in a JSON document: wrong types, bounds, infinities, text
that is not Unicode."""


def _json_paths(obj: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _json_paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _json_paths(v, (*prefix, i))
    return out


def _at(doc: Any, path: tuple[object, ...]) -> Any:
    for k in path:
        doc = doc[k]
    return doc


def mutate_json(doc: object, draw: st.DrawFn, edits: int = 2) -> object:
    """Up to ``edits`` structural edits of a (copied) JSON document: a value replaced by one
    of :data:`HOSTILE_JSON`, a field or list entry deleted, a list entry duplicated, an
    unknown field added."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, edits))):
        paths = _json_paths(doc)
        leaves = [p for p in paths if not isinstance(_at(doc, p), dict | list)]
        path = draw(st.sampled_from(leaves if leaves and draw(st.booleans()) else paths))
        parent: Any = _at(doc, path[:-1])
        current = _at(doc, path)
        alike = [v for v in HOSTILE_JSON if type(v) is type(current)]
        pick = alike if alike and draw(st.booleans()) else HOSTILE_JSON  # same type: deeper
        value = json.loads(dump_json(draw(st.sampled_from(pick))))
        if not path:
            doc = value
            continue
        key: Any = path[-1]
        op = draw(st.sampled_from(["set", "set", "set", "delete", "duplicate", "add"]))
        if op == "set":
            parent[key] = value
        elif op == "delete":
            del parent[key]
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(key, json.loads(json.dumps(parent[key])))
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "v", "format"]))] = value
    return doc


def dump_json(doc: object, **kwargs: Any) -> bytes:
    """``json.dumps`` that writes infinities as ``1e400`` (valid JSON that reads back as
    infinity, unlike ``Infinity``) and lone surrogates as ``\\udXXX`` escapes."""
    kwargs.setdefault("ensure_ascii", True)
    text = json.dumps(doc, allow_nan=True, **kwargs)
    return text.replace("-Infinity", "-1e400").replace("Infinity", "1e400").encode()


def read_of_a_planted_fifo(path: Path, read: Any, bound: float = 30.0) -> BaseException | None:
    """Plant a FIFO at ``path`` (no writer ever comes) and call ``read()`` in a thread: the
    exception it raised, or None if it returned. A read still waiting after ``bound``
    seconds (blocked in the FIFO's open or read) is released, by a writer that opens the
    FIFO and closes it at once, and the test fails: the reader would have hung for ever."""
    import contextlib
    import os
    import threading

    import pytest

    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    out: list[BaseException | None] = []

    def run() -> None:
        try:
            read()
        except BaseException as exc:  # handed to the test
            out.append(exc)
        else:
            out.append(None)

    reader = threading.Thread(target=run, daemon=True)
    reader.start()
    reader.join(bound)
    if reader.is_alive():
        while reader.is_alive():  # release the open, then every read (EOF once it closes)
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            reader.join(0.1)
        pytest.fail(f"reading {path.name} waited on a FIFO planted in its place")
    return out[0]
