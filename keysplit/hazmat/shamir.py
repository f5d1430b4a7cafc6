"""Shamir secret sharing over GF(2^8), one secret or millions at once.

**Hazmat.** This layer works on raw bytes and (x, y) pairs: it has no checksums, no set
ids and no recovery check, so a mistyped or foreign share silently yields a wrong secret
(exactly what pycryptodome and ssss do). Use :func:`keysplit.split` and
:func:`keysplit.combine`, which wrap it in verified :class:`keysplit.Share` objects.

Every byte of a secret is shared with its own random polynomial of degree
``threshold - 1`` whose constant term is that byte; share ``j`` (row ``j`` of
:func:`split_batch`) is the polynomials evaluated at ``x = j + 1``. Any ``threshold``
shares determine the secret by Lagrange interpolation at 0; fewer are consistent with
every possible secret.

Speed and constant time: evaluation and interpolation multiply secret arrays only by
PUBLIC constants (powers of x, Lagrange coefficients). Each random coefficient array gets
one xtime chain (c, 2c, 4c, ...), and each share is the xor of the chain terms selected by
the bits of ``x**i``; interpolation does the same with the coefficients' bits (a Horner
scheme over bit positions). Threshold 3 has a cheaper schedule: x -> x^2 is additive in
GF(2^8), so ``f(x) ^ s`` is GF(2)-linear in x and share x is the xor of ``f(2^e) ^ s``
over the bits e of x, each a short Horner chain (:func:`_additive_plan`); it evaluates the
same polynomials at the same points, so its shares are bit-identical. No secret byte ever
becomes a branch or an index; which schedule runs depends on threshold and count only.

The cost is numpy passes over memory, so the code minimises them: work runs in chunks
(randomness, chains and share rows of one chunk are produced together; about 1 MiB of work
rows for 3-of-5, which is past this host's 512 KiB L2, but L2-sized pieces lost more to
the ~1 us a ufunc call costs than they gained: 0.56-0.97x on one thread), chain
levels of several rows go through one call, and each share is derived from the closest
share already computed (see :func:`_xor_schedule`). A 3-of-5 split costs 5 xtime passes
(4 ufunc calls each), 8 xor passes and the AES-CTR keystream per byte of secret (the plain
chains: 6 and 10); with a fresh output array the page faults of
writing ``count`` times the input used to be a large part of the time: large outputs now
come from :mod:`._outputs`, which hands out already-touched memory once the previous
result is dropped (``out=`` still lets a caller manage its own buffer).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ..rng import RandomSource, SystemRandom
from . import _outputs, _parallel, gf256

__all__ = [
    "MAX_SHARES",
    "combine",
    "combine_batch",
    "evaluate",
    "lagrange_at_zero",
    "split",
    "split_batch",
]

MAX_SHARES = 255
_CHUNK_BYTES = 1 << 20  # working-set budget per chunk for the coefficient chains
_MIN_CHUNK = 1 << 12
_MAX_CHUNK = 1 << 18
_THREAD_SCALE = 2  # see _thread_step
_COMBINE_CHUNK = 1 << 17  # bytes of output per step: the working set stays in L2
# The kernels' constants as 0-d arrays: a ufunc call with a numpy or Python scalar operand
# costs ~1-1.6 us more here than with an array operand (measured: 2.8 vs 1.2 us per call).
_RED = np.array(gf256._RED, dtype=np.uint8)
_RED16 = np.array(gf256._RED, dtype=np.uint16)
_ZERO = np.array(0, dtype=np.int8)


def _mask_mul(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(view, constant)`` so that ``view * constant`` turns the 0/1 bytes of the
    C-contiguous ``mask`` into 0/0x1B: as uint16 pairs where the length allows (each byte
    is 0 or 1, so ``27 * (b0 + 256 * b1)`` carries nothing between them), which numpy
    vectorises (~2x the uint8 multiply here); else as bytes."""
    flat = mask.reshape(-1)
    if flat.size % 2 == 0:
        return flat.view(np.uint16), _RED16
    return flat, _RED


def _thread_step(chunk: int, parts: int) -> int:
    """Bytes per ufunc call when ``parts`` threads share the work.

    With several threads a call covers up to ``_THREAD_SCALE`` chunks, at most
    ``_MAX_CHUNK`` bytes (a split's chunking only matters for a seeded rng, which runs on
    one thread). The calls hand the GIL back and forth: fewer, longer ones made a 2-thread
    3-of-5 split 0.93-1.35x (median ~1.15x) and a combine 1.31-1.72x as fast in same-run
    A/B (4 chunks were no better); 2-of-3, whose chunks are already ``_MAX_CHUNK``, lost
    5-10 % at twice that.
    """
    if parts == 1:
        return chunk
    return max(chunk, min(_THREAD_SCALE * chunk, _MAX_CHUNK))


def _check_params(threshold: int, count: int) -> None:
    for name, v in (("threshold", threshold), ("count", count)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int")
    if threshold < 2:
        raise ValueError("threshold must be at least 2 (a 1-of-n split is a plain copy)")
    if count > MAX_SHARES:
        raise ValueError(f"count must be at most {MAX_SHARES} (GF(2^8) has 255 non-zero x)")
    if threshold > count:
        raise ValueError("threshold must not exceed count")


def _as_secret_array(secrets: np.ndarray) -> np.ndarray:
    if not isinstance(secrets, np.ndarray):
        raise TypeError("secrets must be a numpy array of shape (N, L)")
    if secrets.dtype != np.uint8:
        raise TypeError("secrets must have dtype uint8")
    if secrets.ndim != 2:
        raise ValueError("secrets must have shape (N, L)")
    if secrets.shape[1] == 0:
        raise ValueError("secrets must not be empty (L >= 1)")
    return np.ascontiguousarray(secrets)


def _xor_schedule(terms: list[int]) -> list[tuple[int, int, list[int]]]:
    """Order the shares so each is computed from the cheapest already-computed row.

    ``terms[j]`` is share j's set of chain terms as a bitmask; the secret row is the empty
    set. Returns ``(share, parent, term_bits)`` in computation order, ``parent`` being -1
    for the secret row or an earlier share: a minimum spanning tree (Prim) under the
    Hamming distance, so e.g. a 3-of-5 split needs 10 array xors instead of 14. PUBLIC
    data only (it depends on threshold and count).
    """
    count = len(terms)
    best = [(t.bit_count(), -1) for t in terms]
    done = [False] * count
    order: list[tuple[int, int, list[int]]] = []
    for _ in range(count):
        j = min((j for j in range(count) if not done[j]), key=lambda j: best[j])
        done[j] = True
        parent = best[j][1]
        diff = terms[j] ^ (terms[parent] if parent >= 0 else 0)
        order.append((j, parent, [b for b in range(diff.bit_length()) if (diff >> b) & 1]))
        for q in range(count):
            if not done[q]:
                d = (terms[q] ^ terms[j]).bit_count()
                if d < best[q][0]:
                    best[q] = (d, j)
    return order


def split_batch(
    secrets: np.ndarray,
    threshold: int,
    count: int,
    *,
    rng: RandomSource | None = None,
    out: np.ndarray | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Split every row of ``secrets`` (uint8, shape (N, L)) ``threshold``-of-``count``.

    Returns a uint8 array of shape ``(count, N, L)``; row ``j`` holds the shares at
    ``x = j + 1``. ``rng`` is the randomness seam (default: the system CSPRNG). ``out``
    may be a preallocated C-contiguous uint8 array of that shape (reusing it avoids page
    faults on large batches). With the default randomness the work is spread over
    ``threads`` threads (default: the CPU count, at most 4), each drawing from its own
    freshly keyed generator; an explicit ``rng`` is used from one thread so its output is
    reproducible.
    """
    _check_params(threshold, count)
    secrets = _as_secret_array(secrets)
    n_keys, length = secrets.shape
    flat = secrets.reshape(-1)
    total = flat.size
    shape = (count, n_keys, length)
    if out is None:
        out = _outputs.take(shape)  # recycled pages: see hazmat/_outputs.py
    elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint8 array of shape {shape}")
    elif np.may_share_memory(out, secrets):  # shares written over secrets not yet shared
        raise ValueError("out must not overlap the secrets")
    if total == 0:  # no secrets: nothing to draw or compute (the sizing below divides by it)
        return out
    out2 = out.reshape(count, total)
    k1 = threshold - 1
    plan = _plan(threshold, count)  # PUBLIC: depends on threshold and count only
    # The chunk size (and so which random bytes go into which chunk) stays the one of the
    # plain chains, whatever the plan: a seeded batch gives the same shares as before.
    depth = _chain_depths(threshold, count)
    chunk = max(_MIN_CHUNK, min(_MAX_CHUNK, _CHUNK_BYTES // max(1, sum(depth))))
    chunk = min(chunk, -(-total // 64) * 64)

    def work(lo: int, hi: int, source: RandomSource, chunk: int) -> None:
        size = 0
        bxor, add, less, mul = np.bitwise_xor, np.add, np.less, np.multiply
        zero = _ZERO
        for start in range(lo, hi, chunk):
            m = min(chunk, hi - start)
            if m != size:
                size = m
                # rows[:k1] are the random coefficients, laid out exactly as k1 * m
                # consecutive bytes of the generator's output
                rows = np.empty((plan.rows, m), dtype=np.uint8)
                rand = rows[:k1]
                mask = np.empty((plan.widest, m), dtype=np.uint8)
                mask_b = mask.view(np.bool_)
                stages = []
                for runs, mixes in plan.stages:
                    steps = []
                    for a, d, n in runs:
                        src = rows[a : a + n]
                        mk_w, red = _mask_mul(mask[:n])
                        steps.append(
                            (
                                src.view(np.int8),
                                src,
                                rows[d : d + n],
                                mask[:n],
                                mask_b[:n],
                                mk_w,
                                red,
                            )
                        )
                    stages.append((steps, [(rows[d], rows[x], rows[y]) for d, x, y in mixes]))
                terms = [rows[r] for r in plan.terms]
            source.fill(rand)
            for steps, mix in stages:
                for src_i8, src, dst, mk, mk_b, mk_w, red in steps:  # xtime (gf256.xtime)
                    less(src_i8, zero, out=mk_b)
                    mul(mk_w, red, out=mk_w)
                    add(src, src, out=dst)
                    bxor(dst, mk, out=dst)
                for d, x, y in mix:
                    bxor(x, y, out=d)
            s = flat[start : start + m]
            for j, parent, bits in plan.schedule:
                o = out2[j, start : start + m]
                base = s if parent < 0 else out2[parent, start : start + m]
                for b in bits:
                    bxor(base, terms[b], out=o)
                    base = o
                if base is not o:  # share equal to its parent: never for distinct x
                    o[...] = base

    if rng is None:
        parts = _parallel.split_ranges(
            total, _parallel.workers(total, threads, 4 * _MAX_CHUNK), chunk
        )
        step = _thread_step(chunk, len(parts))
        _parallel.run_jobs(
            [functools.partial(work, lo, hi, SystemRandom(), step) for lo, hi in parts]
        )
    else:
        work(0, total, rng, chunk)
    return out


_Stage = tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]
"""One stage of a :class:`_Plan`: its xtime runs ``(a, d, n)`` and its mixes ``(d, x, y)``."""


class _Plan(NamedTuple):
    """A PUBLIC evaluation schedule (it depends on threshold and count only).

    Work rows ``rows[0:rows]`` (each one chunk long); ``rows[:threshold - 1]`` are the
    random coefficients. Each stage first computes ``rows[d:d+n] = xtime(rows[a:a+n])``
    for each ``(a, d, n)`` of its runs (in place when ``a == d``), then
    ``rows[d] = rows[x] ^ rows[y]`` for each ``(d, x, y)`` of its mixes. Share ``j`` is the
    secret xor the rows ``terms[i]`` for the bits ``i`` of its term mask; ``schedule`` is
    :func:`_xor_schedule` of those masks. ``widest`` is the longest run.
    """

    rows: int
    stages: list[_Stage]
    terms: list[int]
    schedule: list[tuple[int, int, list[int]]]
    widest: int


def _make_plan(
    rows: int,
    stages: list[_Stage],
    terms: list[int],
    masks: list[int],
) -> _Plan:
    widest = max([n for runs, _ in stages for _, _, n in runs], default=1)
    return _Plan(rows, stages, terms, _xor_schedule(masks), widest)


@functools.lru_cache(maxsize=64)
def _powers(threshold: int, count: int) -> tuple[tuple[int, ...], ...]:
    """``powers[j][i] = (j + 1) ** (i + 1)`` in GF(2^8), for the shares' x = j + 1."""
    out = []
    for x in range(1, count + 1):
        row = [x]
        for _ in range(threshold - 2):
            row.append(gf256.mul_scalar(row[-1], x))
        out.append(tuple(row))
    return tuple(out)


def _chain_depths(threshold: int, count: int) -> list[int]:
    """Bits needed by each coefficient's xtime chain: the longest ``x**(i+1)``, x <= count."""
    powers = _powers(threshold, count)
    return [max(p[i] for p in powers).bit_length() for i in range(threshold - 1)]


@functools.lru_cache(maxsize=64)
def _plan(threshold: int, count: int) -> _Plan:
    """The cheapest schedule known here for a split (PUBLIC: threshold and count only)."""
    chain = _chain_plan(threshold, count)
    if threshold == 3:
        additive = _additive_plan(count)
        if _passes(additive) < _passes(chain):  # most counts, e.g. all up to 15
            return additive
    return chain


def _passes(plan: _Plan) -> int:
    """Array passes per chunk: an xtime is four ufunc calls, an xor one."""
    xtimes = sum(n for runs, _ in plan.stages for _, _, n in runs)
    mixes = sum(len(m) for _, m in plan.stages)
    return 4 * xtimes + mixes + sum(len(bits) for _, _, bits in plan.schedule)


def _chain_plan(threshold: int, count: int) -> _Plan:
    """Coefficient ``i`` (of x^(i+1)) gets an xtime chain c, 2c, 4c, ... up to the highest
    bit of any x^(i+1); share j xors in the terms selected by the bits of (j+1)^(i+1)."""
    k1 = threshold - 1
    depth = _chain_depths(threshold, count)
    levels = max(depth)
    # row t * k1 + i is chain level t of coefficient i; level t is computed, in one call
    # per contiguous run, for the coefficients whose chains reach that deep
    stages: list[_Stage] = [
        (
            [
                ((t - 1) * k1 + a, t * k1 + a, b - a)
                for a, b in _runs([i for i in range(k1) if depth[i] > t])
            ],
            [],
        )
        for t in range(1, levels)
    ]
    terms = [t * k1 + i for i in range(k1) for t in range(depth[i])]
    first = [sum(depth[:i]) for i in range(k1)]  # index of coefficient i's level 0 in terms
    masks = [sum(p[i] << first[i] for i in range(k1)) for p in _powers(threshold, count)]
    return _make_plan(levels * k1, stages, terms, masks)


def _additive_plan(count: int) -> _Plan:
    """Threshold 3: f(x) = s + c1*x + c2*x^2 with x -> x^2 additive in GF(2^8) (Frobenius).

    So f(x) ^ s is GF(2)-linear in x: share x is the secret xor d_e for every bit e of x,
    with d_e = f(2^e) ^ s = 2^e * (c1 ^ 2^e * c2) (Horner). d_0 = c1 ^ c2 is two terms;
    for e >= 1 a chain p_t = 2^t * c2 feeds u_e = c1 ^ p_e, then e xtimes in place give
    d_e. For 3-of-5 that is 5 xtime passes and 8 xors where the plain chains take 6 and 10,
    and 5 work rows instead of 9. The same polynomial is evaluated at the same points: the
    shares are bit-identical. Rows: 0 is c1, 1 is c2, 2 the p chain, 2 + e the chain of
    d_e (u_e after stage e, d_e after stage 2e).
    """
    top = count.bit_length() - 1  # highest bit e of any x <= count
    stages: list[_Stage] = []
    for t in range(1, 2 * top + 1):
        runs = [(1, 2, 1)] if t == 1 else []  # p_1 = xtime(c2); c2 itself stays a term
        active = ([2] if 1 < t <= top else []) + [
            2 + e for e in range(1, top + 1) if e < t <= 2 * e
        ]
        runs += [(a, a, b - a) for a, b in _runs(active)]
        stages.append((runs, [(2 + t, 0, 2)] if t <= top else []))
    terms = [0, 1] + [2 + e for e in range(1, top + 1)]
    masks = [((x & 1) * 3) | ((x >> 1) << 2) for x in range(1, count + 1)]
    return _make_plan(top + 3, stages, terms, masks)


def _runs(rows: list[int]) -> list[tuple[int, int]]:
    """Group sorted row indices into contiguous ``(start, stop)`` runs."""
    out: list[tuple[int, int]] = []
    for r in rows:
        if out and out[-1][1] == r:
            out[-1] = (out[-1][0], r + 1)
        else:
            out.append((r, r + 1))
    return out


def lagrange_at_zero(xs: Sequence[int]) -> list[int]:
    """Lagrange basis coefficients at x = 0 for distinct PUBLIC x-coordinates."""
    _check_xs(xs)
    coeffs = []
    for j, xj in enumerate(xs):
        num, den = 1, 1
        for m, xm in enumerate(xs):
            if m != j:
                num = gf256.mul_scalar(num, xm)
                den = gf256.mul_scalar(den, xm ^ xj)
        coeffs.append(gf256.mul_scalar(num, gf256.inv_scalar(den)))
    return coeffs


_LOG = np.array(gf256.LOG, dtype=np.int64)
_EXP = np.array(gf256.EXP, dtype=np.uint8)


def evaluate(xs: Sequence[int], ys: np.ndarray, targets: Sequence[int]) -> np.ndarray:
    """Values at every x in ``targets`` (0..255) of the polynomial through the points
    ``xs`` (distinct, 0..255) and ``ys`` (uint8, shape (k, L)): shape (len(targets), L), in
    one pass (a target that is one of ``xs`` gets its row of ``ys``).

    For checking many shares against one polynomial, or one secret: where
    :func:`combine_batch` computes the Lagrange coefficients with ~2 k^2 scalar
    multiplications per target, these come from log tables on the PUBLIC coordinates as
    sums of logarithms, vectorised (``l_j(a) = prod_{m != j} (a - x_m) / (x_j - x_m)``);
    the rows of ``ys`` are only multiplied by them with the constant-time
    :func:`~keysplit.hazmat.gf256.mul` and xored. Work and memory: ``len(targets) * k * L``.
    """
    for v in (*xs, *targets):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError("x-coordinates must be ints")
    if len(xs) == 0 or len({int(v) for v in xs}) != len(xs):
        raise ValueError("need distinct x-coordinates")
    if not isinstance(ys, np.ndarray) or ys.dtype != np.uint8 or ys.ndim != 2:
        raise TypeError("ys must be a numpy uint8 array of shape (k, L)")
    if ys.shape[0] != len(xs):
        raise ValueError(f"got {len(xs)} x-coordinates but {ys.shape[0]} rows")
    x = np.array([int(v) for v in xs], dtype=np.int64)
    at = np.array([int(v) for v in targets], dtype=np.int64)
    if min(x.min(), at.min(initial=0)) < 0 or max(x.max(), at.max(initial=0)) > MAX_SHARES:
        raise ValueError("x-coordinates must be in 0..255")
    hit = at[:, None] == x[None, :]
    diff = _LOG[np.where(hit, 1, at[:, None] ^ x[None, :])]  # log(a - x_m); log 1 = 0
    pair = x[:, None] ^ x[None, :]
    weight = _LOG[np.where(pair == 0, 1, pair)].sum(axis=1)  # log prod_{m != j} (x_j - x_m)
    coeff = _EXP[(diff.sum(axis=1)[:, None] - diff - weight[None, :]) % 255]
    coeff = np.where(hit.any(axis=1)[:, None], hit, coeff).astype(np.uint8)
    out: np.ndarray = np.bitwise_xor.reduce(gf256.mul(ys[None, :, :], coeff[:, :, None]), axis=1)
    return out


def _check_xs(xs: Sequence[int]) -> None:
    if len(xs) == 0:
        raise ValueError("need at least one share")
    for x in xs:
        if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
            raise TypeError("x-coordinates must be ints")
        if not 1 <= int(x) <= MAX_SHARES:
            raise ValueError("x-coordinates must be in 1..255 (0 would be the secret itself)")
    if len({int(x) for x in xs}) != len(xs):
        raise ValueError("x-coordinates must be distinct")


def combine_batch(xs: Sequence[int], ys: np.ndarray, *, threads: int | None = None) -> np.ndarray:
    """Interpolate at 0: ``ys`` (uint8, shape (k, N, L)) are the shares at ``xs``.

    Returns the (N, L) secrets. Passing fewer shares than the split's threshold returns
    garbage, not an error: this layer cannot know the threshold (see module docstring).
    """
    _check_xs(xs)  # before int(): 2.9, "3" or True must not become a coordinate
    xs = [int(x) for x in xs]
    coeffs = lagrange_at_zero(xs)
    if not isinstance(ys, np.ndarray) or ys.dtype != np.uint8:
        raise TypeError("ys must be a numpy uint8 array of shape (k, N, L)")
    if ys.ndim != 3:
        raise ValueError("ys must have shape (k, N, L)")
    if ys.shape[0] != len(xs):
        raise ValueError(f"got {len(xs)} x-coordinates but {ys.shape[0]} share rows")
    if ys.shape[2] == 0:
        raise ValueError("shares must not be empty (L >= 1)")
    k, n_keys, length = ys.shape
    flat = np.ascontiguousarray(ys).reshape(k, -1)
    total = flat.shape[1]
    out = np.empty(total, dtype=np.uint8)
    if total == 0:  # no shares to interpolate (the ranges below would step by 0)
        return out.reshape(n_keys, length)
    chunk = _COMBINE_CHUNK
    # PUBLIC schedule (Horner over the coefficients' bit positions, top bit first): at each
    # step r = x * r, then r ^= every share whose coefficient has that bit set.
    top = max(c.bit_length() for c in coeffs) - 1
    steps = [[j for j in range(k) if (coeffs[j] >> b) & 1] for b in range(top, -1, -1)]

    def work(lo: int, hi: int, chunk: int) -> None:
        bxor, add, less, mul = np.bitwise_xor, np.add, np.less, np.multiply
        zero = _ZERO
        mask = np.empty(chunk, dtype=np.uint8)
        for start in range(lo, hi, chunk):
            m = min(chunk, hi - start)
            r = out[start : start + m]
            r_i8 = r.view(np.int8)
            mk = mask[:m]
            mk_b = mk.view(np.bool_)
            mk_w, red = _mask_mul(mk)
            rows = [flat[j, start : start + m] for j in range(k)]
            first = steps[0]
            if len(first) == 1:
                r[...] = rows[first[0]]
            else:
                bxor(rows[first[0]], rows[first[1]], out=r)
            for j in first[2:]:
                bxor(r, rows[j], out=r)
            for step in steps[1:]:
                less(r_i8, zero, out=mk_b)  # xtime(r), branch-free (see gf256.xtime)
                mul(mk_w, red, out=mk_w)
                add(r, r, out=r)
                bxor(r, mk, out=r)
                for j in step:
                    bxor(r, rows[j], out=r)

    parts = _parallel.split_ranges(total, _parallel.workers(total, threads, 4 * _MAX_CHUNK), chunk)
    step = _thread_step(chunk, len(parts))
    _parallel.run_jobs([functools.partial(work, lo, hi, step) for lo, hi in parts])
    return out.reshape(n_keys, length)


def split(
    secret: bytes, threshold: int, count: int, *, rng: RandomSource | None = None
) -> list[tuple[int, bytes]]:
    """Split one secret; returns ``count`` pairs ``(x, share_bytes)`` with x = 1..count."""
    if not isinstance(secret, (bytes, bytearray, memoryview)):
        raise TypeError("secret must be bytes")
    data = bytes(secret)
    if not data:
        raise ValueError("secret must not be empty")
    rows = split_batch(
        np.frombuffer(data, dtype=np.uint8).reshape(1, -1), threshold, count, rng=rng
    )
    return [(j + 1, rows[j, 0].tobytes()) for j in range(count)]


def combine(shares: Sequence[tuple[int, bytes]]) -> bytes:
    """Recover one secret from ``(x, share_bytes)`` pairs (all of equal length)."""
    if len(shares) == 0:
        raise ValueError("need at least one share")
    lengths = {len(y) for _, y in shares}
    if len(lengths) != 1:
        raise ValueError("shares have different lengths")
    xs = [x for x, _ in shares]
    ys = np.stack([np.frombuffer(bytes(y), dtype=np.uint8) for _, y in shares])[:, None, :]
    return bytes(combine_batch(xs, ys)[0].tobytes())
