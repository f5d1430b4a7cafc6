"""KEKs on a worker: how stored rows are unwrapped and rewrapped, and how KEKs travel.

:class:`Keks` mirrors the keyring's own per-row wrap (RFC 3394 under a KEK version, one
vectorized batch per version) in two small methods, so a change of the wrapped-key format
(e.g. the subject bound in through RFC 3394's alternative initial value) is adapted here.

KEKs reach a worker only sealed to that worker's per-job X25519 key (HPKE, RFC 9180 base
mode, the keyring's suite), with ``info`` binding the job id, the keyring id and the
worker's address, so a bundle captured on the wire opens nowhere else. Bundle layout::

    magic "KSJK" | version 0x01 | u32 current | u16 count | count x (u32 version | 16 KEK)
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from .. import keywrap
from ..errors import FormatError, IntegrityError, KeyringError
from ..keyring import HPKE_SUITE
from ..store import WrappedKey

__all__ = ["Keks", "open_keks", "seal_keks"]

WRAPPED_SIZE = 24  # a 16-byte data key under RFC 3394
_MAGIC = b"KSJK\x01"
_HEAD = struct.Struct(">IH")
_ENTRY = struct.Struct(">I16s")
_INFO = b"keysplit jobs kek bundle v1\x00"


class Keks:
    """Some KEK versions of one keyring, ``current`` among them. Holds secrets."""

    __slots__ = ("_keks", "current")

    def __init__(self, current: int, keks: Mapping[int, bytes]) -> None:
        if current not in keks:
            raise ValueError("the current KEK version must be one of the KEKs")
        self.current = current
        self._keks = dict(keks)

    def __repr__(self) -> str:
        return f"Keks(<redacted>, current={self.current}, versions={sorted(self._keks)})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("KEKs are never pickled; seal them to a worker with seal_keks")

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(sorted(self._keks))

    def kek(self, version: int) -> bytes:
        try:
            return self._keks[version]
        except KeyError:
            raise KeyringError(
                f"a data key is wrapped under KEK version {version}, which this job "
                "was not given (retired, or written after the job started)"
            ) from None

    def forget(self) -> None:
        self._keks = {self.current: b""}

    def wrap(self, subjects: Sequence[str], raw: np.ndarray) -> list[WrappedKey]:
        """Rows storing ``raw[i]`` (``(N, 16)`` uint8) for ``subjects[i]`` under ``current``."""
        v = self.current
        wrapped = keywrap.wrap_batch(self.kek(v), raw)
        return [WrappedKey(s, v, wrapped[i].tobytes()) for i, s in enumerate(subjects)]

    def unwrap(self, rows: Sequence[WrappedKey]) -> tuple[np.ndarray, np.ndarray]:
        """``(keys, ok)`` in row order; failed or malformed rows are zero and False."""
        keys = np.zeros((len(rows), 16), dtype=np.uint8)
        ok = np.zeros(len(rows), dtype=bool)
        by_version: dict[int, list[int]] = {}
        for i, r in enumerate(rows):
            if len(r.wrapped) == WRAPPED_SIZE:
                by_version.setdefault(r.kek_version, []).append(i)
        for version, idx in by_version.items():
            arr = np.frombuffer(b"".join(rows[i].wrapped for i in idx), np.uint8)
            raw, good = keywrap.unwrap_batch(self.kek(version), arr.reshape(-1, WRAPPED_SIZE))
            keys[idx] = raw
            ok[idx] = good
            raw.fill(0)
        return keys, ok

    def rewrap(
        self, rows: Sequence[WrappedKey]
    ) -> tuple[list[tuple[WrappedKey, WrappedKey]], list[str]]:
        """Compare-and-swap pairs moving ``rows`` to ``current``, and the subjects whose
        stored key failed authentication (left as they are)."""
        raw, ok = self.unwrap(rows)
        good = [i for i in range(len(rows)) if ok[i]]
        new = self.wrap([rows[i].subject for i in good], raw[good])
        raw.fill(0)
        pairs = [(rows[i], n) for i, n in zip(good, new, strict=True)]
        return pairs, [r.subject for i, r in enumerate(rows) if not ok[i]]


def _info(job_id: str, keyring_id: str, worker: str) -> bytes:
    return _INFO + bytes.fromhex(job_id) + bytes.fromhex(keyring_id) + worker.encode()


def seal_keks(keks: Keks, public_key: bytes, *, job_id: str, keyring_id: str, worker: str) -> bytes:
    """Seal ``keks`` to one worker's per-job public key."""
    if any(len(k) != 16 for k in keks._keks.values()):
        raise ValueError("job KEKs must be 16 bytes (AES-128)")
    body = _MAGIC + _HEAD.pack(keks.current, len(keks._keks))
    body += b"".join(_ENTRY.pack(v, k) for v, k in sorted(keks._keks.items()))
    pk = X25519PublicKey.from_public_bytes(public_key)
    return HPKE_SUITE.encrypt(body, pk, _info(job_id, keyring_id, worker))


def open_keks(
    sealed: bytes, private_key: X25519PrivateKey, *, job_id: str, keyring_id: str, worker: str
) -> Keks:
    """Open a bundle sealed by :func:`seal_keks` for this worker and job."""
    try:
        body = HPKE_SUITE.decrypt(sealed, private_key, _info(job_id, keyring_id, worker))
    except (InvalidTag, ValueError):
        raise IntegrityError() from None
    if body[: len(_MAGIC)] != _MAGIC or len(body) < len(_MAGIC) + _HEAD.size:
        raise FormatError("not a keysplit job KEK bundle")
    current, count = _HEAD.unpack_from(body, len(_MAGIC))
    off = len(_MAGIC) + _HEAD.size
    if len(body) != off + count * _ENTRY.size:
        raise FormatError("truncated job KEK bundle")
    keks = dict(_ENTRY.iter_unpack(body[off:]))
    return Keks(current, keks)
