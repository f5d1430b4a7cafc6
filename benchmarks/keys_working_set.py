"""How the number of distinct AES-GCM keys alone moves a bare loop (not part of make bench).

    .venv/bin/python -m benchmarks.keys_working_set

Round-robin over K keys, 50,000 1 KiB records, outputs dropped, one nonce: the Python work
per record is the same for every K, so the ratio to K = 1 is what the keys' state (2.6 KB per
cryptography ``AESGCM`` object) costs once it outgrows the caches (benchmarks/README.md,
stop 36's section). Not a keysplit benchmark: no keysplit code runs.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

N = 50_000
KEY_COUNTS = (1, 10, 100, 300, 1000, 3000, 10_000)
KB_PER_KEY = 2.6  # RSS per AESGCM object, cryptography 50 (measured: 26.1 MB per 10^4)


def _rate(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return N / (time.perf_counter() - start)


def rates(k: int, plain: list[bytes]) -> tuple[float, float]:
    """(encrypt, decrypt) records/s over ``k`` keys in turn, medians of 5."""
    keys = [AESGCM(os.urandom(16)) for _ in range(k)]
    order = [keys[i % k] for i in range(N)]
    nonce = os.urandom(12)
    blobs = [aead.encrypt(nonce, plain[i & 255], None) for i, aead in enumerate(order)]

    def enc() -> None:
        for i, aead in enumerate(order):
            aead.encrypt(nonce, plain[i & 255], None)

    def dec() -> None:
        for aead, blob in zip(order, blobs, strict=True):
            aead.decrypt(nonce, blob, None)

    runs = [(_rate(enc), _rate(dec)) for _ in range(5)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main() -> None:
    plain = [os.urandom(1024) for _ in range(256)]
    base: tuple[float, float] | None = None
    for k in KEY_COUNTS:
        enc, dec = rates(k, plain)
        base = base or (enc, dec)
        print(
            f"K={k:6d} ({k * KB_PER_KEY / 1024:6.2f} MB of key state)  "
            f"encrypt {enc / 1e3:5.0f} k/s ({enc / base[0]:.2f})  "
            f"decrypt {dec / 1e3:5.0f} k/s ({dec / base[1]:.2f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
