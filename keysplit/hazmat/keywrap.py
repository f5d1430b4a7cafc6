"""AES key wrap (RFC 3394 / NIST SP 800-38F "KW"), one key or millions at once.

**Hazmat.** These functions wrap raw key bytes under a raw KEK. They are the building
block the keyring uses for per-subject data keys; a backend should use
:class:`keysplit.Keyring` instead of calling them directly.

Why batch: wrapping 16-byte data keys one ``aes_key_wrap`` call at a time costs about a
microsecond each in Python overhead. RFC 3394 wraps an ``n``-block key in ``6 * n``
sequential AES steps, and step ``t`` is the same operation for every key, so
:func:`wrap_batch` runs each step as **one** AES-ECB call over all N keys' blocks at once
and does the counter xor in numpy. The output is byte-identical to
``cryptography.hazmat.primitives.keywrap.aes_key_wrap`` (checked against the NIST
KW_AE/KW_AD vectors, Wycheproof and the ``cryptography`` implementation in the tests).

Integrity: :func:`unwrap_batch` checks the RFC 3394 integrity value of every key with
one vectorized comparison after all the work is done (no per-key early exit on secret
data) and returns a validity mask; rows that fail are zeroed so a caller can never use a
garbage key by accident. :func:`unwrap_batch_strict` raises :class:`IntegrityError` if
any row fails. Single-key :func:`wrap` / :func:`unwrap` use ``cryptography`` directly
(it is faster for one key than a vectorized pass).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from ..errors import IntegrityError
from . import _outputs, _parallel

__all__ = ["unwrap", "unwrap_batch", "unwrap_batch_strict", "wrap", "wrap_batch"]

_IV = 0xA6A6A6A6A6A6A6A6
# Keys per pass: 512 KiB per block buffer (L3-, not L2-resident on a 512 KiB L2). 16 Ki keys
# (the buffers L2-sized) and 64 Ki measured no faster in one thread's CPU time (0.96x, 0.98x;
# A/A 0.99x, wrap and unwrap alike): the strided numpy passes, not cache misses, set the pace.
_CHUNK = 1 << 15


def _check_kek(kek: bytes) -> None:
    if not isinstance(kek, bytes | bytearray | memoryview):
        raise TypeError("kek must be bytes")
    if len(kek) not in (16, 24, 32):
        raise ValueError("kek must be 16, 24 or 32 bytes (an AES key)")


def _as_rows(arr: np.ndarray, name: str, min_len: int) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of shape (N, L)")
    if arr.dtype != np.uint8:
        raise TypeError(f"{name} must have dtype uint8")
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (N, L)")
    if arr.shape[1] < min_len or arr.shape[1] % 8:
        raise ValueError(f"{name} rows must be a multiple of 8 bytes and at least {min_len}")
    return np.ascontiguousarray(arr)


def _be(t: int) -> np.uint64:
    """The step counter as it must be xored into a native-order uint64 view of A."""
    return np.uint64(int.from_bytes(t.to_bytes(8, "big"), "little"))


class _Block(NamedTuple):
    """One (m, 2) uint64 buffer of ``A | R[i]`` rows, seen the ways a step needs it."""

    buf: np.ndarray  # 2 * capacity + 2 words: update_into wants 16 bytes beyond the input
    data: memoryview  # the m blocks' 16 * m bytes: the AES input
    out: memoryview  # the whole buffer: AES output in place (same start as data)
    a: np.ndarray  # (m,) left halves
    r: np.ndarray  # (m,) right halves


def _view(buf: np.ndarray, m: int) -> _Block:
    raw = buf.view(np.uint8)
    return _Block(buf, raw[: 16 * m].data, raw.data, buf[: 2 * m : 2], buf[1 : 2 * m : 2])


def _as_ivs(iv: np.ndarray | None, count: int) -> np.ndarray | None:
    """Per-row initial values as ``(N,)`` uint64 words holding the 8 IV bytes in order."""
    if iv is None:
        return None
    if not isinstance(iv, np.ndarray) or iv.dtype != np.uint8:
        raise TypeError("iv must be a numpy uint8 array of shape (N, 8)")
    if iv.shape != (count, 8):
        raise ValueError(f"iv must have shape ({count}, 8): one 8-byte initial value per row")
    return np.ascontiguousarray(iv).view(np.uint64).reshape(count)


def wrap_batch(
    kek: bytes,
    keys: np.ndarray,
    *,
    iv: np.ndarray | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Wrap every row of ``keys`` (shape ``(N, L)``, ``L % 8 == 0``, ``L >= 16``) under
    ``kek``; returns an ``(N, L + 8)`` uint8 array, row ``i`` == ``aes_key_wrap(kek, keys[i])``.

    ``iv`` (shape ``(N, 8)`` uint8) gives row ``i`` its own initial value instead of RFC
    3394's default ``A6A6A6A6A6A6A6A6`` (the "alternative initial value" of RFC 3394
    §2.2.3.2): :func:`unwrap_batch` then accepts the row only with that same IV, which is
    how the keyring binds a wrapped data key to its subject. ``iv=None`` is byte-identical
    to RFC 3394.

    Layout: block ``i`` of every key lives in the right half of its own (m, 2) buffer, so
    each step is one ECB call over that buffer *in place* plus one fused numpy op writing
    ``A ^ t`` into the left half of the next block's buffer (the last one straight into
    the output): no copies of the R blocks, and only ``n`` buffers per chunk to keep in
    cache (an out-of-place spare made it ``n + 1``).
    """
    _check_kek(kek)
    keys = _as_rows(keys, "keys", 16)
    count, length = keys.shape
    n = length // 8
    out = _outputs.take((count, length + 8))  # recycled pages: see hazmat/_outputs.py
    if count == 0:
        return out
    out64 = out.view(np.uint64)  # column 0 = A, columns 1..n = R[1..n]
    keys64 = keys.view(np.uint64)
    ivs = _as_ivs(iv, count)
    default = np.uint64(_IV)
    ts = [_be(t) for t in range(1, 6 * n + 1)]  # step s = n * j + i uses t = s + 1

    def work(lo0: int, hi0: int) -> None:
        enc = Cipher(algorithms.AES(bytes(kek)), modes.ECB()).encryptor()  # noqa: S305 - RFC 3394
        for lo, hi, blocks in _loaded_chunks(lo0, hi0, n, keys64, 0):
            blocks[0].a[...] = default if ivs is None else ivs[lo:hi]
            for s, t in enumerate(ts):
                b = blocks[s % n]
                enc.update_into(b.data, b.out)
                nxt = out64[lo:hi, 0] if s == len(ts) - 1 else blocks[(s + 1) % n].a
                np.bitwise_xor(b.a, t, out=nxt)
            for i, b in enumerate(blocks):
                out64[lo:hi, i + 1] = b.r

    _parallel.run_ranges(work, count, _CHUNK, threads)
    return out


def _loaded_chunks(
    lo0: int, hi0: int, n: int, src64: np.ndarray, first: int
) -> Iterator[tuple[int, int, list[_Block]]]:
    """Rows ``lo0..hi0`` in ``_CHUNK`` slices: ``(lo, hi, blocks)`` with the ``n`` R blocks
    (columns ``first..first+n`` of ``src64``) in the right halves of ``blocks``, the
    starting point of both directions of RFC 3394. The same buffers serve every chunk
    (allocated once per range: no faults per chunk), their views made once per size."""
    bufs = [np.empty(2 * min(_CHUNK, hi0 - lo0) + 2, dtype=np.uint64) for _ in range(n)]
    blocks: list[_Block] = []
    for lo in range(lo0, hi0, _CHUNK):
        hi = min(hi0, lo + _CHUNK)
        if not blocks or len(blocks[0].a) != hi - lo:
            blocks = [_view(b, hi - lo) for b in bufs]
        for i, b in enumerate(blocks):
            b.r[...] = src64[lo:hi, i + first]
        yield lo, hi, blocks


def unwrap_batch(
    kek: bytes,
    wrapped: np.ndarray,
    *,
    iv: np.ndarray | None = None,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Unwrap every row of ``wrapped`` (shape ``(N, L + 8)``) under ``kek``.

    Returns ``(keys, ok)``: ``keys`` is ``(N, L)`` uint8 and ``ok`` a boolean ``(N,)`` mask
    of rows whose integrity check passed (against ``iv[i]`` if ``iv`` is given, see
    :func:`wrap_batch`, else RFC 3394's default IV). Rows that failed are all zero in ``keys``.
    """
    _check_kek(kek)
    wrapped = _as_rows(wrapped, "wrapped", 24)
    count, total = wrapped.shape
    ivs = _as_ivs(iv, count)
    n = total // 8 - 1
    keys = np.empty((count, 8 * n), dtype=np.uint8)
    a_final = np.empty(count, dtype=np.uint64)
    if count == 0:
        return keys, np.zeros(0, dtype=bool)
    keys64 = keys.view(np.uint64)
    w64 = wrapped.view(np.uint64)
    ts = [_be(t) for t in range(1, 6 * n + 1)]

    def work(lo0: int, hi0: int) -> None:
        dec = Cipher(algorithms.AES(bytes(kek)), modes.ECB()).decryptor()  # noqa: S305 - RFC 3394
        blocks: list[_Block] = []
        for lo, hi, blocks in _loaded_chunks(lo0, hi0, n, w64, 1):
            a_src = w64[lo:hi, 0]  # current A
            for s in range(6 * n - 1, -1, -1):
                b = blocks[s % n]
                np.bitwise_xor(a_src, ts[s], out=b.a)
                dec.update_into(b.data, b.out)
                a_src = b.a
            a_final[lo:hi] = a_src
            for i, b in enumerate(blocks):
                keys64[lo:hi, i] = b.r
        for b in blocks:  # the last chunk's keys (earlier ones were overwritten)
            b.buf.fill(0)

    _parallel.run_ranges(work, count, _CHUNK, threads)
    # One comparison over all rows, after all the work: no per-key early exit.
    ok = a_final == (np.uint64(_IV) if ivs is None else ivs)
    keys *= ok[:, None].astype(np.uint8)  # zero failed rows without branching per row
    return keys, ok


def unwrap_batch_strict(
    kek: bytes, wrapped: np.ndarray, *, iv: np.ndarray | None = None
) -> np.ndarray:
    """Like :func:`unwrap_batch` but raise :class:`IntegrityError` if any row fails."""
    keys, ok = unwrap_batch(kek, wrapped, iv=iv)
    if not bool(ok.all()):
        keys.fill(0)
        raise IntegrityError()
    return keys


def wrap(kek: bytes, key: bytes) -> bytes:
    """Wrap one key (``len(key) % 8 == 0``, ``>= 16``) under ``kek``."""
    _check_kek(kek)
    if not isinstance(key, bytes | bytearray | memoryview):
        raise TypeError("key must be bytes")
    if len(key) < 16 or len(key) % 8:
        raise ValueError("key must be a multiple of 8 bytes and at least 16")
    return aes_key_wrap(bytes(kek), bytes(key))


def unwrap(kek: bytes, wrapped: bytes) -> bytes:
    """Unwrap one key; raise :class:`IntegrityError` if it was tampered with or the KEK is
    wrong, :class:`ValueError` if its length cannot be a wrapped key."""
    _check_kek(kek)
    if not isinstance(wrapped, bytes | bytearray | memoryview):
        raise TypeError("wrapped must be bytes")
    if len(wrapped) < 24 or len(wrapped) % 8:
        raise ValueError("wrapped key must be a multiple of 8 bytes and at least 24")
    try:
        return aes_key_unwrap(bytes(kek), bytes(wrapped))
    except InvalidUnwrap:
        raise IntegrityError() from None
