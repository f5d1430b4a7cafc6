"""Randomness for keysplit, and the seam that makes known-answer vectors reproducible.

:class:`SystemRandom` is the default everywhere. ``os.urandom`` alone delivers about
0.5 GB/s here, which would cap a batch 3-of-5 split near 12 M keys/s, so bulk randomness
comes from an AES-128-CTR keystream under a key drawn fresh from ``os.urandom`` (the core
of NIST SP 800-90A CTR_DRBG without derivation function). Each thread draws from its own
stream (a cipher context is not safe to share: two threads could read the same keystream
bytes, or crash with ``Already borrowed``), keyed on its first draw. A stream is replaced
by a fresh ``os.urandom`` key every :data:`RESEED_BYTES` bytes and in every new process:
an ``os.register_at_fork`` hook advances a generation counter in the child, and the PID is
checked as well, so a forked child never continues its parent's stream. Small draws
(keys, nonces, ids) use ``os.urandom`` directly.

:class:`DeterministicRandom` is **for tests and vector generation only**: it expands a
seed into a keystream, so everything it produces is predictable to anyone with the seed.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

if TYPE_CHECKING:
    import numpy as np

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
    """AES-128-CTR keystream writer shared by both generators.

    numpy is imported by the first stream, not with this module: a process that only draws
    keys and nonces (``random_bytes``: ``os.urandom``) never needs it (a CLI start)."""

    _ZEROS: np.ndarray | None = None
    _SCRATCH = 4096 + 16  # the longest tail written through scratch (see fill), plus slack

    def __init__(self, key: bytes, nonce: bytes) -> None:
        import numpy as np

        if _CtrStream._ZEROS is None:
            _CtrStream._ZEROS = np.zeros(1 << 18, dtype=np.uint8)
        self._zeros = _CtrStream._ZEROS
        self._enc = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
        self._scratch = np.empty(self._SCRATCH, dtype=np.uint8)
        self.used = 0

    def fill(self, out: np.ndarray) -> None:
        if out.dtype != self._zeros.dtype or not out.flags.c_contiguous:
            raise TypeError("out must be a C-contiguous uint8 array")
        flat = out.reshape(-1)
        n = flat.size
        zeros = self._zeros
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


_generation = 0


def _after_fork_in_child() -> None:
    global _generation
    _generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _fork_generation() -> int:
    """How many forks separate this process from the one that imported this module."""
    return _generation


class _ThreadStream(threading.local):
    """One thread's stream, with the process (generation, PID) it was keyed in."""

    stream: _CtrStream | None = None
    generation = -1
    pid = -1


class SystemRandom:
    """Cryptographically secure randomness (the default). Safe to share across threads.

    Every thread gets its own AES-CTR stream, so concurrent draws never overlap; a forked
    child and a stream past :data:`RESEED_BYTES` rekey from ``os.urandom``.
    """

    def __init__(self) -> None:
        self._local = _ThreadStream()

    def random_bytes(self, n: int) -> bytes:
        return os.urandom(n)

    def fill(self, out: np.ndarray) -> None:
        local = self._local
        stream = local.stream
        if (
            stream is None
            or local.generation != _generation
            or local.pid != os.getpid()
            or stream.used > RESEED_BYTES
        ):
            # Forget the old stream before drawing the new key: a child must never use it.
            local.stream = None
            stream = _CtrStream(os.urandom(16), os.urandom(16))
            local.stream, local.generation, local.pid = stream, _generation, os.getpid()
        stream.fill(out)

    def __repr__(self) -> str:
        return "SystemRandom()"


class DeterministicRandom:
    """Seeded keystream for reproducible test vectors. NEVER use for real keys."""

    def __init__(self, seed: bytes | str) -> None:
        if isinstance(seed, str):
            seed = seed.encode()
        digest = hashlib.sha256(b"keysplit deterministic rng\x00" + seed).digest()
        self._stream = _CtrStream(digest[:16], digest[16:])
        # One keystream in one order is what makes it reproducible: a lock, not per-thread
        # streams (shared between threads, the bytes are distinct but their order is not).
        self._lock = threading.Lock()

    def random_bytes(self, n: int) -> bytes:
        import numpy as np

        out = np.empty(n, dtype=np.uint8)
        self.fill(out)
        return out.tobytes()

    def fill(self, out: np.ndarray) -> None:
        with self._lock:
            self._stream.fill(out)

    def __repr__(self) -> str:
        return "DeterministicRandom(<seed>)"


_DEFAULT = SystemRandom()


def default_rng() -> RandomSource:
    """The process-wide :class:`SystemRandom`."""
    return _DEFAULT
