"""Record loops with no keysplit code, for bench_records and ab_records_ceiling (issue 23).

The ceilings ``encrypt_many``/``decrypt_many`` are read against: bare ``AESGCM`` loops over
``k`` keys, grouped by key as :func:`keysplit.record.plan_groups` groups a batch, and a v1
record's own work (header, AAD) at one key in steps. Each builder returns a callable that
runs ``n`` records; none imports keysplit's engine.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keysplit import record

_SIZE = 1024
_HEAD, _PRE = record.HEADER_SIZE, record.PREFIX_SIZE

Arm = Callable[[], object]


def layout(n: int, subjects: int) -> tuple[list[bytes], list[str], list[str]]:
    """bench_records' records: ``n`` 1 KiB plaintexts (256 distinct), the ``subjects``
    distinct names, and record ``i``'s subject (``names[i % subjects]``)."""
    pts = [os.urandom(_SIZE) for _ in range(256)]
    names = [f"user-{i:05d}" for i in range(subjects)]
    return [pts[i % 256] for i in range(n)], names, [names[i % subjects] for i in range(n)]


def grouped(k: int, n: int) -> list[range]:
    """Record indices of each of ``k`` keys (record ``i`` is key ``i % k``'s), by key."""
    return [range(j, n, k) for j in range(k)]


def sealed(aeads: list[AESGCM], plain: list[bytes]) -> list[bytes]:
    """``nonce + ct`` of each plaintext, record ``i`` under ``aeads[i % len(aeads)]``: what
    :func:`dec_grouped` opens (the key of record ``i`` as :func:`grouped` assigns it)."""
    out: list[bytes] = []
    for i, p in enumerate(plain):
        nonce = os.urandom(12)
        out.append(nonce + aeads[i % len(aeads)].encrypt(nonce, p, None))
    return out


def enc_grouped(aeads: list[AESGCM], groups: list[range], plain: list[bytes], n: int) -> Arm:
    def arm() -> None:
        nonces = os.urandom(12 * n)
        done = [b""] * n
        for aead, idx in zip(aeads, groups, strict=True):
            enc = aead.encrypt
            for i in idx:
                nonce = nonces[12 * i : 12 * i + 12]
                done[i] = nonce + enc(nonce, plain[i], None)

    return arm


def dec_grouped(aeads: list[AESGCM], groups: list[range], blobs: list[bytes], n: int) -> Arm:
    def arm() -> None:
        done = [b""] * n
        for aead, idx in zip(aeads, groups, strict=True):
            dec = aead.decrypt
            for i in idx:
                b = blobs[i]
                done[i] = dec(b[:12], b[12:], None)

    return arm


def seal_grouped(
    keys: list[tuple[AESGCM, bytes, bytes]],
    order: list[int],
    ends: list[int],
    plain: list[bytes],
    n: int,
) -> Callable[[], list[bytes]]:
    """seal_planned's loop over (aead, 38-byte prefix, AAD tail) per group."""

    def arm() -> list[bytes]:
        nonces = os.urandom(12 * n)
        done = [b""] * n
        start = 0
        for (aead, prefix, tail), end in zip(keys, ends, strict=True):
            enc = aead.encrypt
            for i in order[start:end]:
                nonce = nonces[12 * i : 12 * i + 12]
                header = prefix + nonce
                done[i] = header + enc(nonce, plain[i], header + tail)
            start = end
        return done

    return arm


def open_grouped(
    keys: list[tuple[AESGCM, bytes, bytes]],
    order: list[int],
    ends: list[int],
    recs: list[bytes],
    n: int,
) -> Arm:
    """open_planned's loop (the prefix check included) over the same per-group triples."""

    def arm() -> None:
        done = [b""] * n
        start = 0
        for (aead, prefix, tail), end in zip(keys, ends, strict=True):
            dec = aead.decrypt
            for i in order[start:end]:
                r = recs[i]
                if not (type(r) is bytes and r.startswith(prefix)):
                    raise ValueError("wrong key")
                header = r[:_HEAD]
                done[i] = dec(header[_PRE:], r[_HEAD:], header + tail)
            start = end

    return arm


def one_key_arms(
    aead: AESGCM, prefix: bytes, tail: bytes, plain: list[bytes], n: int
) -> tuple[dict[str, Arm], dict[str, Arm]]:
    """The v1 record's work at one key, step by step (see the module docstring)."""
    enc, dec = aead.encrypt, aead.decrypt
    const_aad = os.urandom(_HEAD + len(tail))
    step = _SIZE + record.OVERHEAD

    def e_header() -> None:
        nonces = os.urandom(12 * n)
        out: list[bytes] = []
        append = out.append
        for i, p in enumerate(plain):
            nonce = nonces[12 * i : 12 * i + 12]
            append(prefix + nonce + enc(nonce, p, None))

    def e_const() -> None:
        nonces = os.urandom(12 * n)
        out: list[bytes] = []
        append = out.append
        for i, p in enumerate(plain):
            nonce = nonces[12 * i : 12 * i + 12]
            append(prefix + nonce + enc(nonce, p, const_aad))

    def e_full() -> list[bytes]:
        nonces = os.urandom(12 * n)
        out: list[bytes] = []
        append = out.append
        for i, p in enumerate(plain):
            nonce = nonces[12 * i : 12 * i + 12]
            header = prefix + nonce
            append(header + enc(nonce, p, header + tail))
        return out

    into = aead.encrypt_into
    buf = bytearray(step * n)  # one buffer, reused by every run (as a caller would)
    view = memoryview(buf)

    def e_into() -> None:
        nonces = os.urandom(12 * n)
        pos = 0
        for i, p in enumerate(plain):
            nonce = nonces[12 * i : 12 * i + 12]
            header = prefix + nonce
            mid = pos + _HEAD
            end = mid + _SIZE + 16
            view[pos:mid] = header
            into(nonce, p, header + tail, view[mid:end])
            pos = end

    recs = e_full()
    hdr_recs = [r[:_HEAD] + enc(r[_PRE:_HEAD], p, None) for r, p in zip(recs, plain, strict=True)]
    const_recs = [
        r[:_HEAD] + enc(r[_PRE:_HEAD], p, const_aad) for r, p in zip(recs, plain, strict=True)
    ]

    def d_header() -> None:
        out: list[bytes] = []
        append = out.append
        for r in hdr_recs:
            if not r.startswith(prefix):
                raise ValueError("wrong key")
            append(dec(r[_PRE:_HEAD], r[_HEAD:], None))

    def d_const() -> None:
        out: list[bytes] = []
        append = out.append
        for r in const_recs:
            if not r.startswith(prefix):
                raise ValueError("wrong key")
            append(dec(r[_PRE:_HEAD], r[_HEAD:], const_aad))

    def d_full() -> None:
        out: list[bytes] = []
        append = out.append
        for r in recs:
            if not r.startswith(prefix):
                raise ValueError("wrong key")
            header = r[:_HEAD]
            append(dec(header[_PRE:], r[_HEAD:], header + tail))

    dinto = aead.decrypt_into
    pbuf = bytearray(_SIZE * n)
    pview = memoryview(pbuf)

    def d_into() -> None:
        pos = 0
        for r in recs:
            if not r.startswith(prefix):
                raise ValueError("wrong key")
            header = r[:_HEAD]
            end = pos + len(r) - record.OVERHEAD
            dinto(header[_PRE:], r[_HEAD:], header + tail, pview[pos:end])
            pos = end

    return (
        {
            "1 key, header": e_header,
            "1 key, header + const AAD": e_const,
            "1 key, header + header+tail AAD": e_full,
            "1 key, header+AAD, encrypt_into 1 buffer": e_into,
        },
        {
            "1 key, header": d_header,
            "1 key, header + const AAD": d_const,
            "1 key, header + header+tail AAD": d_full,
            "1 key, header+AAD, decrypt_into 1 buffer": d_into,
        },
    )
