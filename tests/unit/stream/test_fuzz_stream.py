"""Hypothesis red team of the streaming file format at the level of whole chunks and
files: any sequence of chunks drawn from two files sealed to the same keyring (reordered,
dropped, duplicated, cut at a chunk boundary or inside a chunk, the final chunk dropped,
one file's header on the other's body, their bodies spliced at a chunk boundary), and
the chunk size and context length fields of the header set to bounds.

test_stream.py pins each case by hand and flips bits; here they are combined. Whatever
the edit, ``decrypt_file`` either opens an unaltered file to exactly its plaintext, or
raises a KeysplitError and leaves nothing: no output, no temporary file, an existing
target untouched.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keysplit import KeysplitError
from keysplit.rng import DeterministicRandom
from keysplit.stream import (
    MAGIC,
    MIN_CHUNK_SIZE,
    TAG_SIZE,
    decrypt_file,
    encrypt_stream,
    read_header,
)

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

C = MIN_CHUNK_SIZE
SK = X25519PrivateKey.from_private_bytes(bytes(range(32)))


def _seal(data: bytes, seed: str, context: dict[str, str] | None) -> bytes:
    out = io.BytesIO()
    encrypt_stream(
        io.BytesIO(data), out, SK.public_key(), context=context, chunk_size=C,
        rng=DeterministicRandom(seed),
    )  # fmt: skip
    return out.getvalue()


def _split(blob: bytes) -> tuple[bytes, list[bytes]]:
    size = read_header(io.BytesIO(blob)).size
    body, step = blob[size:], C + TAG_SIZE
    return blob[:size], [body[i : i + step] for i in range(0, len(body), step)]


_PLAIN = [bytes([65 + i]) * (3 * C + 100 * i) for i in range(2)]  # 4 chunks, the last short
_BLOBS = [_seal(p, f"s{i}", {"f": str(i)}) for i, p in enumerate(_PLAIN)]
_PARTS = [_split(b) for b in _BLOBS]


@st.composite
def edited(draw: st.DrawFn) -> bytes:
    which = draw(st.integers(0, 1))
    header, _ = _PARTS[which]
    if draw(st.booleans()):  # the other file's header, or its own with a field at a bound
        header = _PARTS[draw(st.integers(0, 1))][0]
    if draw(st.booleans()):
        field = draw(st.sampled_from([(len(MAGIC) + 1, ">I"), (len(MAGIC) + 1 + 4 + 16, ">H")]))
        off, fmt = field
        (cur,) = struct.unpack_from(fmt, header, off)
        top = 2 ** (8 * struct.calcsize(fmt)) - 1
        value = draw(st.sampled_from([0, 1, cur - 1, cur + 1, top, C - 1, 2 * C]))
        header = header[:off] + struct.pack(fmt, value % (top + 1)) + header[off + len(fmt) :]
    pool = [(f, i) for f in (0, 1) for i in range(len(_PARTS[f][1]))]
    chunks = draw(st.lists(st.sampled_from(pool), max_size=6))
    body = b"".join(_PARTS[f][1][i] for f, i in chunks)
    if draw(st.booleans()) and body:
        body = body[: draw(st.integers(0, len(body) - 1))]
    return header + body


def _names(directory: Path) -> set[str]:
    return set(os.listdir(directory))


@FUZZ
@given(edited())
def test_chunk_level_edits_open_exactly_or_leave_nothing(
    tmp_path_factory: pytest.TempPathFactory, blob: bytes
) -> None:
    d = tmp_path_factory.mktemp("stream", numbered=True)
    src = d / "in.ks"
    src.write_bytes(blob)
    (d / "existing").write_bytes(b"previous")
    before = _names(d)
    try:
        decrypt_file(src, d / "out", SK)
    except KeysplitError:
        assert _names(d) == before
    else:
        assert blob in _BLOBS
        assert (d / "out").read_bytes() == _PLAIN[_BLOBS.index(blob)]
    try:
        decrypt_file(src, d / "existing", SK, overwrite=True)
    except KeysplitError:
        assert (d / "existing").read_bytes() == b"previous"
        assert _names(d) - {"out"} == before
    else:
        assert blob in _BLOBS


@pytest.mark.parametrize("cut", range(1, 4))
def test_two_files_spliced_at_each_chunk_boundary(tmp_path: Path, cut: int) -> None:
    """Both files are sealed to the same keyring; each chunk authenticates under its own
    file key only, so a body spliced from two files never opens."""
    (h0, c0), (_, c1) = _PARTS
    src = tmp_path / "spliced.ks"
    src.write_bytes(h0 + b"".join(c0[:cut] + c1[cut:]))
    with pytest.raises(KeysplitError):
        decrypt_file(src, tmp_path / "out", SK)
    assert _names(tmp_path) == {"spliced.ks"}
