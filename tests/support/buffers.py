"""Bytes held by other buffer types, for the tests that every entry point takes any
C-contiguous buffer as its bytes (``keysplit.record._octets``)."""

from __future__ import annotations

import array

import numpy as np

KINDS = [
    "bytearray",
    "memoryview",
    "np.bytes_",
    "np.uint8",
    "np.uint16",
    "np.2d",
    "array.H",
    "cast.I",
]
"""Each holds ``data`` (a multiple of 4 bytes long) as its bytes."""


def as_buffer(kind: str, data: bytes) -> object:
    """``data`` held by another bytes-like type (its bytes are ``data``)."""
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(data)
    if kind == "np.bytes_":
        return np.bytes_(data)
    if kind == "np.uint8":
        return np.frombuffer(data, dtype=np.uint8).copy()
    if kind == "np.uint16":
        return np.frombuffer(data, dtype=np.uint16).copy()
    if kind == "np.2d":
        return np.frombuffer(data, dtype=np.uint8).reshape(2, -1).copy()
    if kind == "array.H":
        return array.array("H", data)
    assert kind == "cast.I"
    return memoryview(bytearray(data)).cast("I")


class OwnBytes(bytes):
    """A bytes subclass whose ``__bytes__`` answers other bytes: ``bytes(x)`` calls it, the
    buffer (what ``x`` holds) does not."""

    def __bytes__(self) -> bytes:
        return b"\xff" * len(self)
