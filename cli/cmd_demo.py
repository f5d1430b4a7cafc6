"""``keysplit demo``: the whole story on an embedded default, in a temporary directory."""

from __future__ import annotations

import os
import time

import numpy as np
import typer

from keysplit import shamir

from ._common import handle_errors, info
from .app import app


@app.command()
@handle_errors
def demo() -> None:
    """Run a self-contained demonstration (no files outside a temporary directory)."""
    t0 = time.perf_counter()
    key = os.urandom(16)
    shares = shamir.split(key, 3, 5)
    info("[bold]keysplit demo[/]: split a fresh AES-128 key 3-of-5 (raw Shamir core)")
    ok = shamir.combine([shares[0], shares[2], shares[4]]) == key
    info(f"  shares 1, 3, 5 recover the key: {'yes' if ok else 'NO'}")
    n = 1_000_000
    batch = np.frombuffer(os.urandom(16 * n), dtype=np.uint8).reshape(n, 16)
    t = time.perf_counter()
    rows = shamir.split_batch(batch, 3, 5)
    t_split = time.perf_counter() - t
    t = time.perf_counter()
    back = shamir.combine_batch([2, 4, 5], rows[[1, 3, 4]])
    t_comb = time.perf_counter() - t
    info(f"  split {n:,} keys 3-of-5 in {t_split:.3f} s, combined in {t_comb:.3f} s")
    if not ok or not np.array_equal(back, batch):
        raise typer.Exit(1)
    info(f"done in {time.perf_counter() - t0:.2f} s")
