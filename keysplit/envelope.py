"""The record format: AES-128-GCM under a per-subject data key, bound to subject and context.

A record is ``header || ciphertext || tag`` (byte layout in ``docs/format/record.md``)::

    magic "KSRC" | version 0x01 | suite 0x01 | commitment (32) | nonce (12) | ct | tag (16)

* The GCM key is not the data key itself but ``HKDF-SHA256(data key, info=".../enc")``,
  and the header carries ``HKDF-SHA256(data key, info=".../commit")``. The commitment is
  checked (constant time) before decryption, so a record only ever opens under the one
  data key that made it: AES-GCM alone is not key-committing (the "invisible salamanders"
  attack), which matters once keys can be chosen by someone other than us. It is derived
  once per data key, not per record, so it costs nothing per record; SECURITY.md explains
  the trade-off against the AWS Encryption SDK's per-message commitment.
* The associated data is the whole header followed by the canonical encoding of the
  subject id and the context (:func:`encode_aad`), so a record moved to another subject or
  context, or altered by one bit, fails with :class:`IntegrityError`.
* Nonces are 96-bit random (drawn in bulk for batches). With random nonces one data key
  should seal at most 2**32 records (NIST SP 800-38D); per-subject keys keep every
  realistic subject far below that.

:class:`DataKey` holds the derived keys and caches the AES-GCM object, so a backend that
keeps one per subject pays the key schedule once.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import FormatError, IntegrityError
from .rng import RandomSource, default_rng

__all__ = [
    "HEADER_SIZE",
    "OVERHEAD",
    "DataKey",
    "RecordHeader",
    "decrypt",
    "decrypt_many",
    "encode_aad",
    "encrypt",
    "encrypt_many",
    "parse_header",
]

MAGIC = b"KSRC"
VERSION = 1
SUITE_AES128GCM_HKDF_COMMIT = 1
COMMIT_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
HEADER_SIZE = 4 + 1 + 1 + COMMIT_SIZE + NONCE_SIZE
OVERHEAD = HEADER_SIZE + TAG_SIZE
_PREFIX = MAGIC + bytes([VERSION, SUITE_AES128GCM_HKDF_COMMIT])
_SALT = b"keysplit record v1"
_U32 = struct.Struct(">I")
_Seal = Callable[[bytes, bytes, bytes], bytes]
MAX_SUBJECT_BYTES = 1024


class DataKey:
    """A subject's 16-byte data key with its derived GCM key and commitment.

    Holding one is holding the key: the repr is redacted and the raw key is not kept.
    """

    __slots__ = ("_aead", "_prefix", "commitment")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray | memoryview):
            raise TypeError("data key must be bytes")
        if len(key) != 16:
            raise ValueError("data key must be 16 bytes (AES-128)")
        key = bytes(key)
        enc = HKDF(hashes.SHA256(), 16, _SALT, b"keysplit/record/v1/enc").derive(key)
        self.commitment: bytes = HKDF(
            hashes.SHA256(), COMMIT_SIZE, _SALT, b"keysplit/record/v1/commit"
        ).derive(key)
        self._aead = AESGCM(enc)
        self._prefix = _PREFIX + self.commitment

    def __repr__(self) -> str:
        return "DataKey(<redacted>)"


@dataclass(frozen=True)
class RecordHeader:
    """The parsed, public header of a record."""

    version: int
    suite: int
    commitment: bytes
    nonce: bytes


def _enc_str(s: str, what: str) -> bytes:
    if not isinstance(s, str):
        raise TypeError(f"{what} must be a str")
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode text") from None


def _subject_part(subject: str) -> bytes:
    sub = _enc_str(subject, "subject")
    if not sub:
        raise ValueError("subject must not be empty")
    if len(sub) > MAX_SUBJECT_BYTES:
        raise ValueError(f"subject must be at most {MAX_SUBJECT_BYTES} bytes of UTF-8")
    return _U32.pack(len(sub)) + sub


def _context_part(context: Mapping[str, str] | None) -> bytes:
    if context is None:
        context = {}
    if not isinstance(context, Mapping):
        raise TypeError("context must be a mapping of str to str")
    items = sorted(
        (_enc_str(k, "context key"), _enc_str(v, "context value")) for k, v in context.items()
    )
    parts = [_U32.pack(len(items))]
    for k, v in items:
        parts += [_U32.pack(len(k)), k, _U32.pack(len(v)), v]
    return b"".join(parts)


def encode_aad(subject: str, context: Mapping[str, str] | None = None) -> bytes:
    """Canonical, injective encoding of subject and context (the record AAD after the header).

    ``u32 len || subject`` then ``u32 count`` then, for each context entry sorted by the
    UTF-8 bytes of its key, ``u32 len || key || u32 len || value`` (big-endian lengths,
    UTF-8 text). Equal mappings encode identically whatever their insertion order.
    """
    return _subject_part(subject) + _context_part(context)


def parse_header(record: bytes) -> RecordHeader:
    """Parse and validate a record's header; :class:`FormatError` says what is wrong."""
    if not isinstance(record, bytes | bytearray | memoryview):
        raise TypeError("record must be bytes")
    mv = memoryview(record)
    if len(mv) < 4 or mv[:4] != MAGIC:
        raise FormatError("not a keysplit record (bad magic)")
    if len(mv) < 6:
        raise FormatError("truncated record header")
    if mv[4] != VERSION:
        raise FormatError(f"unsupported record version {mv[4]}")
    if mv[5] != SUITE_AES128GCM_HKDF_COMMIT:
        raise FormatError(f"unsupported record suite {mv[5]}")
    if len(mv) < OVERHEAD:
        raise FormatError("truncated record")
    return RecordHeader(
        VERSION,
        SUITE_AES128GCM_HKDF_COMMIT,
        bytes(mv[6 : 6 + COMMIT_SIZE]),
        bytes(mv[6 + COMMIT_SIZE : HEADER_SIZE]),
    )


def _check_pt(plaintext: bytes) -> None:
    if not isinstance(plaintext, bytes | bytearray | memoryview):
        raise TypeError("plaintext must be bytes")


def encrypt(
    key: DataKey,
    plaintext: bytes,
    *,
    subject: str,
    context: Mapping[str, str] | None = None,
    rng: RandomSource | None = None,
) -> bytes:
    """Seal one record for ``subject`` under ``key``."""
    _check_pt(plaintext)
    nonce = (rng or default_rng()).random_bytes(NONCE_SIZE)
    header = _PREFIX + key.commitment + nonce
    aad = header + encode_aad(subject, context)
    return header + key._aead.encrypt(nonce, plaintext, aad)


def decrypt(
    key: DataKey, record: bytes, *, subject: str, context: Mapping[str, str] | None = None
) -> bytes:
    """Open one record; :class:`IntegrityError` if it was not sealed by ``key`` for exactly
    this subject and context, or was altered; :class:`FormatError` if it is malformed."""
    hdr = parse_header(record)
    aad_tail = encode_aad(subject, context)
    if not hmac.compare_digest(hdr.commitment, key.commitment):
        raise IntegrityError()
    mv = memoryview(record)
    try:
        return key._aead.decrypt(hdr.nonce, mv[HEADER_SIZE:], bytes(mv[:HEADER_SIZE]) + aad_tail)
    except InvalidTag:
        raise IntegrityError() from None


def _contexts(
    n: int, context: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None
) -> tuple[Mapping[str, str] | None, Sequence[Mapping[str, str] | None] | None]:
    """Split ``context`` into (shared mapping, per-record sequence); one of them is None."""
    if context is None or isinstance(context, Mapping):
        return context, None
    if isinstance(context, str | bytes) or len(context) != n:
        raise ValueError("contexts must be one mapping or one per record")
    return None, context


def encrypt_many(
    keys: Sequence[DataKey],
    subjects: Sequence[str],
    plaintexts: Sequence[bytes],
    context: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None = None,
    *,
    rng: RandomSource | None = None,
) -> list[bytes]:
    """Seal many records; ``keys[i]`` is the data key of ``subjects[i]``.

    ``context`` is either one mapping for every record or a sequence with one per record.
    Nonces are drawn in one call and the subject/context encoding is computed once per
    distinct (subject, shared context), which is where the per-record time goes.
    """
    n = len(plaintexts)
    if len(keys) != n or len(subjects) != n:
        raise ValueError("keys, subjects and plaintexts must have the same length")
    shared, per_record = _contexts(n, context)
    nonces = (rng or default_rng()).random_bytes(NONCE_SIZE * n)
    shared_part = _context_part(shared) if per_record is None else b""
    # Per distinct subject: (key, bound encrypt, header prefix, AAD tail). The identity
    # check on the key keeps the cache honest if a caller pairs one subject with two keys.
    cache: dict[str, tuple[DataKey, _Seal, bytes, bytes]] = {}
    out: list[bytes] = []
    append = out.append
    for i, (key, subject, pt) in enumerate(zip(keys, subjects, plaintexts, strict=True)):
        ent = cache.get(subject)
        if ent is None or ent[0] is not key or per_record is not None:
            tail = (
                _subject_part(subject) + shared_part
                if per_record is None
                else encode_aad(subject, per_record[i])
            )
            ent = (key, key._aead.encrypt, key._prefix, tail)
            if per_record is None:
                cache[subject] = ent
        j = NONCE_SIZE * i
        nonce = nonces[j : j + NONCE_SIZE]
        header = ent[2] + nonce
        append(header + ent[1](nonce, pt, header + ent[3]))
    return out


def decrypt_many(
    keys: Sequence[DataKey],
    subjects: Sequence[str],
    records: Sequence[bytes],
    context: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None = None,
) -> list[bytes]:
    """Open many records; raises :class:`IntegrityError` (no detail) if any fails.

    All-or-nothing on purpose: a caller that needs per-record outcomes calls :func:`decrypt`.
    """
    n = len(records)
    if len(keys) != n or len(subjects) != n:
        raise ValueError("keys, subjects and records must have the same length")
    shared, per_record = _contexts(n, context)
    shared_part = _context_part(shared) if per_record is None else b""
    tails: dict[str, bytes] = {}
    out: list[bytes] = []
    append = out.append
    compare = hmac.compare_digest
    for i, (key, subject, record) in enumerate(zip(keys, subjects, records, strict=True)):
        if per_record is None:
            tail = tails.get(subject)
            if tail is None:
                tail = tails[subject] = _subject_part(subject) + shared_part
        else:
            tail = encode_aad(subject, per_record[i])
        if (
            len(record) < OVERHEAD
            or record[:6] != _PREFIX
            or not isinstance(record, bytes | bytearray)
        ):
            parse_header(record)  # raises the precise FormatError
            raise TypeError("records must be bytes")
        if not compare(record[6 : 6 + COMMIT_SIZE], key.commitment):
            raise IntegrityError()
        header = record[:HEADER_SIZE]
        try:
            append(key._aead.decrypt(header[38:], record[HEADER_SIZE:], header + tail))
        except InvalidTag:
            raise IntegrityError() from None
    return out
