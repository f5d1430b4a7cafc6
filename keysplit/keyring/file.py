"""The sealed keyring file: public metadata in clear, secrets under the master key.

Layout (``docs/format/keyring.md``)::

    "KSKR" | version 0x01 | u32 len(M) | M (canonical JSON metadata) | nonce (12) | GCM(ct||tag)

The GCM associated data is every byte before the nonce, so no metadata field (threshold,
custodians, versions, public key, generation) can be altered without the file failing to
open. The plaintext holds the keyring's X25519 private key and the KEK versions::

    version 0x01 | x25519 private (32) | u16 count | count * (u32 version || 16-byte KEK)

Parsing is strict: unknown versions, unknown or missing JSON fields, wrong types,
truncation and trailing bytes are distinct :class:`FormatError` messages.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .. import _json
from ..errors import FormatError, IntegrityError

__all__ = ["Custodian", "KeyringMeta", "KeyringSecrets", "open_secrets", "parse", "serialize"]

MAGIC = b"KSKR"
VERSION = 1
FORMAT_NAME = "keysplit-keyring"
SECRETS_VERSION = 1
_HEAD = struct.Struct(">4sBI")
_KEK = struct.Struct(">I16s")
_MAX_META = 1 << 20
MAX_FILE = _HEAD.size + _MAX_META + 12 + 35 + 0xFFFF * _KEK.size + 16
"""The largest keyring file the format can describe: metadata of at most ``_MAX_META``
bytes and secrets of at most 65,535 KEKs (their count is a u16), about 2.4 MB. A file
past it is refused by its size before it is read (``KeyringHome.read_keyring``)."""
_HEX = re.compile(r"\A[0-9a-f]*\Z")


@dataclass(frozen=True)
class Custodian:
    """A named custodian and the index of the share they hold."""

    name: str
    index: int


@dataclass(frozen=True)
class KeyringMeta:
    """The public part of a keyring file (also its AAD)."""

    keyring_id: str
    generation: int
    set_id: str
    threshold: int
    custodians: tuple[Custodian, ...]
    public_key: str
    current_kek: int
    kek_versions: tuple[int, ...]
    next_kek: int
    audit_anchor: int = 0
    """1: the audit log's head is anchored in ``audit.anchor``, which must exist (written
    from ``Keyring.create`` on); 0 (field absent): a keyring from before, anchor optional."""

    def to_json(self) -> bytes:
        obj: dict[str, object] = {
            "format": FORMAT_NAME,
            "keyring_id": self.keyring_id,
            "generation": self.generation,
            "share_set": {
                "set_id": self.set_id,
                "threshold": self.threshold,
                "custodians": [{"name": c.name, "index": c.index} for c in self.custodians],
            },
            "public_key": self.public_key,
            "kek": {
                "current": self.current_kek,
                "versions": list(self.kek_versions),
                "next": self.next_kek,
            },
        }
        if self.audit_anchor:
            obj["audit_anchor"] = self.audit_anchor
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class KeyringSecrets:
    """The decrypted part: X25519 private key and KEKs by version. Repr is redacted."""

    x25519_private: bytes
    keks: dict[int, bytes] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"KeyringSecrets(<redacted>, kek_versions={sorted(self.keks)})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("KeyringSecrets cannot be pickled or copied (it holds every KEK)")

    def to_bytes(self) -> bytes:
        parts = [bytes([SECRETS_VERSION]), self.x25519_private, struct.pack(">H", len(self.keks))]
        parts += [_KEK.pack(v, k) for v, k in sorted(self.keks.items())]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyringSecrets:
        if len(data) < 35 or data[0] != SECRETS_VERSION:
            raise FormatError("keyring secrets: unsupported version or truncated")
        (count,) = struct.unpack_from(">H", data, 33)
        if len(data) != 35 + count * _KEK.size:
            raise FormatError("keyring secrets: length does not match KEK count")
        keks = {}
        for i in range(count):
            v, k = _KEK.unpack_from(data, 35 + i * _KEK.size)
            keks[v] = k
        if len(keks) != count:
            raise FormatError("keyring secrets: duplicate KEK version")
        return cls(data[1:33], keks)


def _want(obj: object, keys: set[str], where: str) -> dict[str, object]:
    if not isinstance(obj, dict):
        raise FormatError(f"keyring metadata: {where} must be an object")
    have = set(obj)
    if have != keys:
        extra, missing = sorted(have - keys), sorted(keys - have)
        raise FormatError(
            f"keyring metadata: {where} has unknown fields {extra} / missing fields {missing}"
        )
    return obj


def _int(v: object, where: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise FormatError(f"keyring metadata: {where} must be an integer in {lo}..{hi}")
    return v


def _hex(v: object, where: str, nbytes: int) -> str:
    if not isinstance(v, str) or len(v) != 2 * nbytes or not _HEX.match(v):
        raise FormatError(f"keyring metadata: {where} must be {nbytes} bytes of lowercase hex")
    return v


def _meta_from_json(raw: bytes) -> KeyringMeta:
    obj = _json.loads(raw, what="keyring metadata", max_bytes=_MAX_META)
    fields = {"format", "keyring_id", "generation", "share_set", "public_key", "kek"}
    if isinstance(obj, dict) and "audit_anchor" in obj:
        fields.add("audit_anchor")
    top = _want(obj, fields, "top level")
    if top["format"] != FORMAT_NAME:
        raise FormatError("keyring metadata: wrong format name")
    ss = _want(top["share_set"], {"set_id", "threshold", "custodians"}, "share_set")
    kek = _want(top["kek"], {"current", "versions", "next"}, "kek")
    custs_raw = ss["custodians"]
    if not isinstance(custs_raw, list) or not 2 <= len(custs_raw) <= 255:
        raise FormatError("keyring metadata: custodians must be a list of 2..255 entries")
    custodians = []
    for i, c in enumerate(custs_raw):
        c = _want(c, {"name", "index"}, f"custodian {i}")
        name = c["name"]
        # a JSON escape can spell a lone surrogate, which has no UTF-8 form (to_json)
        if not isinstance(name, str) or not name or not _json.is_unicode(name):
            raise FormatError(f"keyring metadata: custodian {i} name must be a non-empty string")
        custodians.append(Custodian(name, _int(c["index"], f"custodian {i} index", 1, 255)))
    versions_raw = kek["versions"]
    if not isinstance(versions_raw, list) or not versions_raw:
        raise FormatError("keyring metadata: kek.versions must be a non-empty list")
    versions = tuple(_int(v, "kek version", 1, 2**32 - 1) for v in versions_raw)
    meta = KeyringMeta(
        keyring_id=_hex(top["keyring_id"], "keyring_id", 16),
        generation=_int(top["generation"], "generation", 1, 2**53),
        set_id=_hex(ss["set_id"], "set_id", 8),
        threshold=_int(ss["threshold"], "threshold", 2, 255),
        custodians=tuple(custodians),
        public_key=_hex(top["public_key"], "public_key", 32),
        current_kek=_int(kek["current"], "kek.current", 1, 2**32 - 1),
        kek_versions=versions,
        next_kek=_int(kek["next"], "kek.next", 2, 2**32),
        audit_anchor=_int(top["audit_anchor"], "audit_anchor", 1, 1)
        if "audit_anchor" in top
        else 0,
    )
    if meta.threshold > len(meta.custodians):
        raise FormatError("keyring metadata: threshold exceeds the number of custodians")
    if len({c.name for c in meta.custodians}) != len(meta.custodians) or len(
        {c.index for c in meta.custodians}
    ) != len(meta.custodians):
        raise FormatError("keyring metadata: custodian names and indexes must be unique")
    if list(versions) != sorted(set(versions)) or meta.current_kek not in versions:
        raise FormatError("keyring metadata: kek versions must be sorted, unique, incl. current")
    if meta.next_kek <= max(versions):
        raise FormatError("keyring metadata: kek.next must exceed every version")
    if meta.to_json() != raw:
        raise FormatError("keyring metadata is not in canonical form")
    return meta


def serialize(meta: KeyringMeta, secrets: KeyringSecrets, master_key: bytes, nonce: bytes) -> bytes:
    """Encode and seal a keyring file (``nonce`` must be fresh: 12 random bytes)."""
    if sorted(secrets.keks) != list(meta.kek_versions):
        raise ValueError("metadata and secrets disagree on KEK versions")
    mj = meta.to_json()
    head = _HEAD.pack(MAGIC, VERSION, len(mj)) + mj
    return head + nonce + AESGCM(master_key).encrypt(nonce, secrets.to_bytes(), head)


def parse(data: bytes) -> tuple[KeyringMeta, bytes, bytes, bytes]:
    """Parse the public part; returns ``(meta, aad, nonce, ciphertext)``. No key needed."""
    if len(data) < 4 or data[:4] != MAGIC:
        raise FormatError("not a keysplit keyring file (bad magic)")
    if len(data) < _HEAD.size:
        raise FormatError("keyring file is truncated (header)")
    _, version, mlen = _HEAD.unpack_from(data)
    if version != VERSION:
        raise FormatError(f"unsupported keyring file version {version}")
    if mlen > _MAX_META:
        raise FormatError("keyring metadata length is implausible")
    end = _HEAD.size + mlen
    # secrets: 1 + 32 + 2 + n*20 bytes, plus 16-byte tag; at least one KEK
    if len(data) < end + 12 + 35 + _KEK.size + 16:
        raise FormatError("keyring file is truncated")
    meta = _meta_from_json(data[_HEAD.size : end])
    expected = end + 12 + 35 + len(meta.kek_versions) * _KEK.size + 16
    if len(data) > expected:
        raise FormatError("keyring file has trailing bytes")
    if len(data) < expected:
        raise FormatError("keyring file is truncated")
    return meta, data[:end], data[end : end + 12], data[end + 12 :]


def open_secrets(data: bytes, master_key: bytes) -> tuple[KeyringMeta, KeyringSecrets]:
    """Parse and decrypt a keyring file; :class:`IntegrityError` if it fails to open."""
    meta, aad, nonce, ct = parse(data)
    try:
        plain = AESGCM(master_key).decrypt(nonce, ct, aad)
    except InvalidTag:
        raise IntegrityError(
            "keyring file failed authentication",
            hint="the file was altered, or the shares belong to another keyring",
        ) from None
    secrets = KeyringSecrets.from_bytes(plain)
    if sorted(secrets.keks) != list(meta.kek_versions):
        raise FormatError("keyring secrets do not match the metadata's KEK versions")
    return meta, secrets
