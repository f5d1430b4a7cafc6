"""Randomness for keysplit, and the seam that makes known-answer vectors reproducible.

:class:`SystemRandom` is the default everywhere. ``os.urandom`` alone delivers about
0.5 GB/s here, which would cap a batch 3-of-5 split near 12 M keys/s, so bulk randomness
comes from an AES-128-CTR keystream under a key drawn fresh from ``os.urandom`` (the core
of NIST SP 800-90A CTR_DRBG without derivation function). The generator rekeys from
``os.urandom`` every :data:`RESEED_BYTES` bytes and in every new process (fork safety:
the PID is checked on each call). Small draws (keys, nonces, ids) use ``os.urandom``
directly.

:class:`DeterministicRandom` is **for tests and vector generation only**: it expands a
seed into a keystream, so everything it produces is predictable to anyone with the seed.
"""

from __future__ import annotations

import hashlib
import os
from typing import Protocol, runtime_checkable

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["RESEED_BYTES", "DeterministicRandom", "RandomSource", "SystemRandom", "default_rng"]

RESEED_BYTES = 1 << 32
"""Bytes drawn from one CTR key before it is replaced by a fresh ``os.urandom`` key."""


@runtime_checkable
class RandomSource(Protocol):
    """Anything that can fill buffers with random bytes."""

    def random_bytes(self, n: int) -> bytes:
        """Return ``n`` random bytes (used for keys, nonces and ids)."""
        ...

    def fill(self, out: np.ndarray) -> None:
        """Fill a C-contiguous uint8 array with random bytes (used for bulk coefficients)."""
        ...


class _CtrStream:
    """AES-128-CTR keystream writer shared by both generators."""

    _ZEROS = np.zeros(1 << 18, dtype=np.uint8)

    def __init__(self, key: bytes, nonce: bytes) -> None:
        self._enc = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
        self._scratch = np.empty(self._ZEROS.size + 16, dtype=np.uint8)
        self.used = 0

    def fill(self, out: np.ndarray) -> None:
        if out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise TypeError("out must be a C-contiguous uint8 array")
        flat = out.reshape(-1)
        n = flat.size
        zeros = self._ZEROS
        step = zeros.size
        pos = 0
        while pos < n:
            m = min(step, n - pos)
            # update_into wants 15 bytes of slack past the data: write in place while the
            # destination has it, and only the last 16 bytes through a scratch buffer
            # (CTR is a stream, so splitting a call does not change the keystream).
            # (Short tails take one call through the scratch buffer: cheaper than two.)
            direct = m if n - pos >= m + 15 else (m - 16 if m > 4096 else 0)
            if direct:
                self._enc.update_into(zeros[:direct].data, flat[pos : pos + direct + 15].data)
            if direct < m:
                rest = m - direct
                self._enc.update_into(zeros[:rest].data, self._scratch.data)
                flat[pos + direct : pos + m] = self._scratch[:rest]
            pos += m
        self.used += n


class SystemRandom:
    """Cryptographically secure randomness (the default). Safe to share across calls."""

    def __init__(self) -> None:
        self._stream: _CtrStream | None = None
        self._pid = -1

    def random_bytes(self, n: int) -> bytes:
        return os.urandom(n)

    def fill(self, out: np.ndarray) -> None:
        if self._stream is None or self._pid != os.getpid() or self._stream.used > RESEED_BYTES:
            self._stream = _CtrStream(os.urandom(16), os.urandom(16))
            self._pid = os.getpid()
        self._stream.fill(out)

    def __repr__(self) -> str:
        return "SystemRandom()"


class DeterministicRandom:
    """Seeded keystream for reproducible test vectors. NEVER use for real keys."""

    def __init__(self, seed: bytes | str) -> None:
        if isinstance(seed, str):
            seed = seed.encode()
        digest = hashlib.sha256(b"keysplit deterministic rng\x00" + seed).digest()
        self._stream = _CtrStream(digest[:16], digest[16:])

    def random_bytes(self, n: int) -> bytes:
        out = np.empty(n, dtype=np.uint8)
        self._stream.fill(out)
        return out.tobytes()

    def fill(self, out: np.ndarray) -> None:
        self._stream.fill(out)

    def __repr__(self) -> str:
        return "DeterministicRandom(<seed>)"


_DEFAULT = SystemRandom()


def default_rng() -> RandomSource:
    """The process-wide :class:`SystemRandom`."""
    return _DEFAULT
