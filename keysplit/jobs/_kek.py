"""How KEKs travel to a worker: a :class:`~keysplit.keyring.KekSet` sealed to its job key.

Workers unwrap and rewrap stored rows with the keyring's own :class:`KekSet` (through
:func:`keysplit.keyring.rewrap.rewrap_rows`, the loop body of the in-process rewrap), so a
row under a version that predates subject binding opens with RFC 3394's default IV and
every rewrapped row is bound to its subject. The bundle therefore carries, per version,
whether it is unbound: without that flag a worker would refuse every legacy row (or, the
other way round, write rows the keyring refuses).

A bundle reaches a worker only sealed to that worker's per-job X25519 key (HPKE, RFC 9180
base mode, the keyring's suite), with ``info`` binding the job id, the keyring id and the
worker's address, so a bundle captured on the wire opens nowhere else. The keyring id is
not in the body: the opened set takes it from the (authenticated) ``info``. Layout::

    magic "KSJK" | version 0x02 | u32 current | u16 count
        | count x (u32 version | u8 flags | 16 KEK)      flags bit 0: unbound version
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ..errors import FormatError, IntegrityError
from ..keyring import HPKE_SUITE, KekSet

__all__ = ["open_keks", "seal_keks"]

_MAGIC = b"KSJK\x02"
_HEAD = struct.Struct(">IH")
_ENTRY = struct.Struct(">IB16s")
_UNBOUND = 0x01
_INFO = b"keysplit jobs kek bundle v2\x00"


def _info(job_id: str, keyring_id: str, worker: str) -> bytes:
    return _INFO + bytes.fromhex(job_id) + bytes.fromhex(keyring_id) + worker.encode()


def seal_keks(keks: KekSet, public_key: bytes, *, job_id: str, worker: str) -> bytes:
    """Seal ``keks`` (with its unbound-version flags) to one worker's per-job public key."""
    entries = [(v, _UNBOUND if v in keks.unbound else 0, keks.kek(v)) for v in keks.versions]
    if any(len(k) != 16 for _, _, k in entries):
        raise ValueError("job KEKs must be 16 bytes (AES-128)")
    body = _MAGIC + _HEAD.pack(keks.current, len(entries))
    body += b"".join(_ENTRY.pack(*e) for e in entries)
    pk = X25519PublicKey.from_public_bytes(public_key)
    return HPKE_SUITE.encrypt(body, pk, _info(job_id, keks.keyring_id, worker))


def open_keks(
    sealed: bytes, private_key: X25519PrivateKey, *, job_id: str, keyring_id: str, worker: str
) -> KekSet:
    """Open a bundle sealed by :func:`seal_keks` for this worker, job and keyring."""
    try:
        body = HPKE_SUITE.decrypt(sealed, private_key, _info(job_id, keyring_id, worker))
    except (InvalidTag, ValueError):
        raise IntegrityError() from None
    if body[: len(_MAGIC)] != _MAGIC or len(body) < len(_MAGIC) + _HEAD.size:
        raise FormatError("not a keysplit job KEK bundle (v2)")
    current, count = _HEAD.unpack_from(body, len(_MAGIC))
    off = len(_MAGIC) + _HEAD.size
    if len(body) != off + count * _ENTRY.size:
        raise FormatError("truncated job KEK bundle")
    entries = list(_ENTRY.iter_unpack(body[off:]))
    keks = {v: k for v, _, k in entries}
    if len(keks) != count or current not in keks or any(f & ~_UNBOUND for _, f, _ in entries):
        raise FormatError("malformed job KEK bundle")
    unbound = [v for v, f, _ in entries if f & _UNBOUND]
    return KekSet(keyring_id, current, keks, unbound=unbound)
