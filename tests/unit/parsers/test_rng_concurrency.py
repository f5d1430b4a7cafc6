"""The shared CSPRNG under threads and processes: every draw is fresh, nothing crashes.

Before per-thread streams, ``default_rng()`` was one AES-CTR encryptor shared by every
thread: with forced thread switching two threads read the *same* keystream bytes (so two
Shamir splits could share coefficients), and large concurrent fills raised
``RuntimeError('Already borrowed')`` from the cipher context. These tests draw from many
threads with the switch interval at 1 microsecond, from forked and spawned children, and
through the real split path, and require every block to be distinct.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Iterator

import numpy as np
import pytest

import keysplit
from keysplit import rng as rng_mod
from keysplit.rng import DeterministicRandom, SystemRandom, default_rng

THREADS = 8
BLOCK = 16


@pytest.fixture()
def fast_switching() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def _run_threads(target: Callable[[int], object], n: int = THREADS) -> list[object]:
    """Run ``target(i)`` in ``n`` threads released together; re-raise the first error."""
    results: list[object] = [None] * n
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def body(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = target(i)
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a drawing thread hung"
    if errors:
        raise errors[0]
    return results


def _blocks(data: bytes) -> list[bytes]:
    return [data[i : i + BLOCK] for i in range(0, len(data), BLOCK)]


def _assert_unique(chunks: list[bytes]) -> None:
    repeated = len(chunks) - len(set(chunks))
    assert repeated == 0, f"{repeated} of {len(chunks)} blocks repeated"


def _small_fills(source: object, count: int = 1500) -> bytes:
    assert isinstance(source, (SystemRandom, DeterministicRandom))
    out = bytearray()
    buf = np.empty(BLOCK, dtype=np.uint8)
    for _ in range(count):
        source.fill(buf)
        out += buf.tobytes()
    return bytes(out)


def test_small_draws_unique_under_forced_switching(fast_switching: None) -> None:
    shared = default_rng()
    results = _run_threads(lambda i: _small_fills(shared))
    chunks = [c for r in results for c in _blocks(r)]  # type: ignore[arg-type]
    assert len(chunks) == THREADS * 1500
    _assert_unique(chunks)


def test_large_concurrent_fills_do_not_crash(fast_switching: None) -> None:
    shared = default_rng()

    def big(i: int) -> bytes:
        out = np.empty(1 << 21, dtype=np.uint8)
        seen = b""
        for _ in range(4):
            shared.fill(out)
            seen += out[:BLOCK].tobytes() + out[-BLOCK:].tobytes()
        return seen

    results = _run_threads(big)
    _assert_unique([c for r in results for c in _blocks(r)])  # type: ignore[arg-type]


def test_deterministic_random_is_safe_to_share(fast_switching: None) -> None:
    """Tests may share one seeded source between threads: distinct bytes, no crash."""
    shared = DeterministicRandom("threads")
    results = _run_threads(lambda i: _small_fills(shared, 500))
    _assert_unique([c for r in results for c in _blocks(r)])  # type: ignore[arg-type]


def _coefficient_fingerprint(shares: list[keysplit.Share]) -> bytes:
    """For a 2-of-2 split y(x) = p + a*x, y(1) xor y(2) = 3a: the coefficient, whatever p."""
    y1, y2 = shares[0].payload, shares[1].payload
    return bytes(a ^ b for a, b in zip(y1, y2, strict=True))


def test_real_split_path_never_shares_coefficients(fast_switching: None) -> None:
    """keysplit.split with the process-wide source, as Keyring.create and rekey call it."""
    shared = default_rng()
    secret = bytes(16)

    def many(i: int) -> list[bytes]:
        return [
            _coefficient_fingerprint(keysplit.split(secret, 2, 2, rng=shared)) for _ in range(300)
        ]

    results = _run_threads(many)
    fps = [f for r in results for f in r]  # type: ignore[attr-defined]
    assert len(fps) == THREADS * 300
    _assert_unique(fps)


def test_keyring_create_from_threads_unique_coefficients(
    tmp_path: object, fast_switching: None
) -> None:
    from pathlib import Path

    base = Path(str(tmp_path))

    def create(i: int) -> list[bytes]:
        out = []
        for j in range(3):
            _, shares = keysplit.Keyring.create(base / f"kr{i}-{j}", 2, ["a", "b"])
            out.append(_coefficient_fingerprint([shares["a"], shares["b"]]))
        return out

    results = _run_threads(create)
    _assert_unique([f for r in results for f in r])  # type: ignore[attr-defined]


# -- processes ------------------------------------------------------------------------------


def _child_draw(_: int) -> bytes:
    out = np.empty(BLOCK * 64, dtype=np.uint8)
    default_rng().fill(out)
    return out.tobytes()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_two_processes_draw_distinct_streams(method: str) -> None:
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    parent_before = _child_draw(0)  # the parent's stream exists before the children start
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(2) as pool:
        children = pool.map_async(_child_draw, [0, 1]).get(timeout=120)
    parent_after = _child_draw(0)
    chunks = [c for r in (parent_before, *children, parent_after) for c in _blocks(r)]
    _assert_unique(chunks)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_from_a_thread_does_not_continue_parent_stream() -> None:
    """A child forked from a thread with a live stream must rekey, never continue it."""
    result: dict[str, bytes] = {}

    def in_thread() -> None:
        source = SystemRandom()
        first = np.empty(BLOCK, dtype=np.uint8)
        source.fill(first)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: draw the next block and send it back
            try:
                child = np.empty(BLOCK, dtype=np.uint8)
                source.fill(child)
                os.write(w, child.tobytes())
            finally:
                os._exit(0)
        os.close(w)
        got = b""
        while len(got) < BLOCK:
            part = os.read(r, BLOCK)
            if not part:
                break
            got += part
        os.close(r)
        os.waitpid(pid, 0)
        nxt = np.empty(BLOCK, dtype=np.uint8)
        source.fill(nxt)
        result["child"], result["parent_next"] = got, nxt.tobytes()

    t = threading.Thread(target=in_thread)
    t.start()
    t.join(timeout=60)
    assert len(result["child"]) == BLOCK
    assert result["child"] != result["parent_next"]


def test_fork_generation_advances_in_child() -> None:
    """The at-fork hook is installed (the PID check is the second line of defence)."""
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    r, w = os.pipe()
    before = rng_mod._fork_generation()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(w, rng_mod._fork_generation().to_bytes(8, "big"))
        finally:
            os._exit(0)
    os.close(w)
    data = os.read(r, 8)
    os.close(r)
    os.waitpid(pid, 0)
    assert int.from_bytes(data, "big") == before + 1
    assert rng_mod._fork_generation() == before


def test_a_stream_past_the_reseed_bound_is_rekeyed(monkeypatch: pytest.MonkeyPatch) -> None:
    """SECURITY.md: "A stream is rekeyed after 2^32 bytes" (RESEED_BYTES, lowered here): the
    draw after the bound is from a fresh os.urandom key, the draws before it from one."""
    monkeypatch.setattr(rng_mod, "RESEED_BYTES", 1000)
    keys: list[bytes] = []
    real = os.urandom

    def urandom(n: int) -> bytes:
        out = real(n)
        keys.append(out)
        return out

    monkeypatch.setattr(rng_mod.os, "urandom", urandom)
    r = SystemRandom()
    out = np.empty(600, dtype=np.uint8)
    r.fill(out)
    assert len(keys) == 2  # the key and the counter of the first stream
    r.fill(out)  # 1,200 bytes used: past the bound only after this draw
    assert len(keys) == 2
    r.fill(out)
    assert len(keys) == 4  # rekeyed before the third draw
