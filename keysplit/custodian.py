"""Protecting a share for its custodian: sealed to a public key (HPKE) or to a passphrase.

A custodian holds an :class:`Identity` (private key, optionally encrypted under a
passphrase with Argon2id) and publishes its :class:`Recipient` (public key). A share is
sealed with HPKE (RFC 9180, base mode) using X25519 / HKDF-SHA256 / AES-128-GCM, or
optionally the post-quantum hybrid ML-KEM-768+X25519 KEM; or, for custodians without a
key pair, under a passphrase (Argon2id -> AES-128-GCM). Either way the whole header
(custodian name, set id, threshold, count, index, recipient fingerprint or KDF
parameters) is bound to the ciphertext (as HPKE ``info`` or as AEAD associated data), so
a sealed share cannot be relabelled, and the opened share is checked against it.

Failures name the custodian: the wrong identity or passphrase is a
:class:`~keysplit.errors.CustodianError`; a corrupted file is a
:class:`~keysplit.errors.FormatError` (every file ends with a SHA-256 checksum, so
corruption and a wrong key are told apart). Formats: ``docs/format/custodian.md``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from .errors import CustodianError, FormatError
from .rng import RandomSource, default_rng
from .share import Share

__all__ = [
    "Argon2Params",
    "Identity",
    "Recipient",
    "SealedShareInfo",
    "check_custodian_name",
    "is_sealed",
    "load_share",
    "open_share",
    "seal_share",
    "seal_share_with_passphrase",
    "sealed_share_info",
]

Suite = Literal["x25519", "mlkem768-x25519"]
T = TypeVar("T")

_VERSION = 1
_MAGIC_RECIPIENT = b"KSPK"
_MAGIC_IDENTITY = b"KSID"
_MAGIC_SEALED = b"KSSS"
_CHECK_LEN = 4
_SUITE_IDS: dict[str, int] = {"x25519": 0x01, "mlkem768-x25519": 0x02}
_SUITE_NAMES = {v: k for k, v in _SUITE_IDS.items()}
_PUB_LEN = {0x01: 32, 0x02: 1184 + 32}
_PRIV_LEN = {0x01: 32, 0x02: 64 + 32}
_METHOD_PASSPHRASE = 0x10
_FP_LEN = 16
_SALT_LEN = 16
_NONCE_LEN = 12
_KEY_LEN = 16
_TEXT_PREFIX = "keysplit-recipient-v1:"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
_FP_DOMAIN = b"keysplit recipient fingerprint v1\x00"
_INFO_DOMAIN = b"keysplit sealed share v1\x00"
_HPKE_KDF = hpke.KDF.HKDF_SHA256
_HPKE_AEAD = hpke.AEAD.AES_128_GCM
_HPKE_KEM = {0x01: hpke.KEM.X25519, 0x02: hpke.KEM.MLKEM768_X25519}


def _sha4(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:_CHECK_LEN]


def _check_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError("custodian name must be str")
    if not _NAME_RE.fullmatch(name):
        raise ValueError(
            "custodian name must be 1-64 characters of A-Z a-z 0-9 . _ @ + - "
            "(starting with a letter or digit)"
        )
    return name


def check_custodian_name(name: str) -> str:
    """Validate a custodian name (shared by keyrings, so every keyring name can be sealed to).

    Names appear in file names, terminals and HPKE ``info``; keeping them to a small
    printable alphabet avoids path tricks and confusable output.
    """
    return _check_name(name)


class _ShapeError(FormatError):
    """Truncation or trailing bytes: reported even when the checksum also fails."""


class _Reader:
    """Strict cursor over a byte string: truncation is a FormatError naming the object."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what
        self.check = b""

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _ShapeError(f"{self.what} is truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def name(self) -> str:
        raw = self.take(self.byte())
        try:
            name = raw.decode("ascii")
        except UnicodeDecodeError:
            name = ""
        if not _NAME_RE.fullmatch(name):
            raise FormatError(f"{self.what} has an invalid custodian name")
        return name


def _open_envelope(data: bytes, magic: bytes, what: str) -> _Reader:
    """Check magic, version and trailing checksum; return a reader over the body."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("data must be bytes")
    data = bytes(data)
    if len(data) < len(magic) or data[: len(magic)] != magic:
        if magic.startswith(data):
            raise FormatError(f"{what} is truncated")
        raise FormatError(f"not a keysplit {what} (bad magic)")
    if len(data) < len(magic) + 1:
        raise FormatError(f"{what} is truncated")
    if data[len(magic)] != _VERSION:
        raise FormatError(
            f"unsupported {what} version {data[len(magic)]} (this keysplit reads version "
            f"{_VERSION})"
        )
    if len(data) < len(magic) + 1 + _CHECK_LEN:
        raise FormatError(f"{what} is truncated")
    body, check = data[:-_CHECK_LEN], data[-_CHECK_LEN:]
    reader = _Reader(body, what)
    reader.pos = len(magic) + 1
    reader.check = check
    return reader


def _parse_envelope(data: bytes, magic: bytes, what: str, fn: Callable[[_Reader], T]) -> T:
    """Parse ``data`` with ``fn`` inside the common envelope.

    Order of errors: bad magic, unknown version, truncated / trailing bytes, checksum
    mismatch, then whatever ``fn`` found wrong (so a corrupted field is reported as
    corruption, not as a strange value).
    """
    r = _open_envelope(data, magic, what)
    err: FormatError | None = None
    result: T | None = None
    try:
        result = fn(r)
        if r.pos != len(r.data):
            raise _ShapeError(f"{what} has trailing bytes (or is corrupted)")
    except _ShapeError:
        raise
    except FormatError as exc:
        err = exc
    if not hmac.compare_digest(_sha4(r.data), r.check):
        raise FormatError(f"{what} checksum mismatch (corrupted)")
    if err is not None:
        raise err
    assert result is not None
    return result


# -- Argon2id ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Argon2Params:
    """Argon2id cost parameters, recorded in every file that uses them.

    The default (3 passes, 64 MiB, 4 lanes) is RFC 9106's second recommended option for
    memory-constrained use; one derivation takes about a third of a second on a 2-core
    server (docs/format/custodian.md). Files announcing more than
    :attr:`MAX_MEMORY_KIB` or :attr:`MAX_TIME` are refused so a hostile file cannot
    exhaust the opener's memory.
    """

    time_cost: int = 3
    memory_kib: int = 64 * 1024
    lanes: int = 4

    MAX_MEMORY_KIB = 2 * 1024 * 1024
    MAX_TIME = 64
    MAX_LANES = 16

    def __post_init__(self) -> None:
        if not 1 <= self.lanes <= self.MAX_LANES:
            raise ValueError(f"lanes must be 1..{self.MAX_LANES}")
        if not 1 <= self.time_cost <= self.MAX_TIME:
            raise ValueError(f"time_cost must be 1..{self.MAX_TIME}")
        if not 8 * self.lanes <= self.memory_kib <= self.MAX_MEMORY_KIB:
            raise ValueError(f"memory_kib must be 8*lanes..{self.MAX_MEMORY_KIB}")

    def encode(self) -> bytes:
        return struct.pack(">IIB", self.time_cost, self.memory_kib, self.lanes)

    @classmethod
    def decode(cls, reader: _Reader) -> Argon2Params:
        t, m, p = struct.unpack(">IIB", reader.take(9))
        try:
            return cls(t, m, p)
        except ValueError as exc:
            raise FormatError(
                f"{reader.what} has unacceptable Argon2id parameters: {exc}"
            ) from None

    def derive(self, passphrase: bytes, salt: bytes) -> bytes:
        return Argon2id(
            salt=salt,
            length=_KEY_LEN,
            iterations=self.time_cost,
            lanes=self.lanes,
            memory_cost=self.memory_kib,
        ).derive(passphrase)


def _check_passphrase(passphrase: bytes) -> bytes:
    if not isinstance(passphrase, (bytes, bytearray)):
        raise TypeError("passphrase must be bytes")
    if not passphrase:
        raise ValueError("passphrase must not be empty")
    return bytes(passphrase)


# -- recipients and identities ------------------------------------------------------------


def _fingerprint(suite_id: int, public: bytes) -> bytes:
    return hashlib.sha256(_FP_DOMAIN + bytes([suite_id]) + public).digest()[:_FP_LEN]


class Recipient:
    """A custodian's public key: anyone may seal a share to it. Not secret."""

    __slots__ = ("_fp", "_name", "_public", "_suite_id")

    def __init__(self, name: str, suite: Suite, public: bytes) -> None:
        self._name = _check_name(name)
        if suite not in _SUITE_IDS:
            raise ValueError(f"unknown suite {suite!r} (use one of {sorted(_SUITE_IDS)})")
        self._suite_id = _SUITE_IDS[suite]
        if not isinstance(public, bytes) or len(public) != _PUB_LEN[self._suite_id]:
            raise ValueError(f"a {suite} public key is {_PUB_LEN[self._suite_id]} bytes")
        self._public = public
        self._fp = _fingerprint(self._suite_id, public)
        self._key()  # validates the key material

    @property
    def name(self) -> str:
        """The custodian's name (a label; not part of the fingerprint)."""
        return self._name

    @property
    def suite(self) -> Suite:
        return _SUITE_NAMES[self._suite_id]  # type: ignore[return-value]

    @property
    def public_bytes(self) -> bytes:
        return self._public

    @property
    def fingerprint(self) -> str:
        """Hex of ``SHA-256("keysplit recipient fingerprint v1" || suite || key)[:16]``."""
        return self._fp.hex()

    @property
    def fingerprint_bytes(self) -> bytes:
        return self._fp

    def _key(self) -> x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey:
        try:
            if self._suite_id == 0x01:
                return x25519.X25519PublicKey.from_public_bytes(self._public)
            return hpke.MLKEM768X25519PublicKey(
                mlkem.MLKEM768PublicKey.from_public_bytes(self._public[:1184]),
                x25519.X25519PublicKey.from_public_bytes(self._public[1184:]),
            )
        except ValueError:
            raise FormatError("invalid public key") from None

    def to_bytes(self) -> bytes:
        """Binary form: ``"KSPK" || 01 || suite || name || key || SHA-256[:4]``."""
        name = self.name.encode("ascii")
        body = _MAGIC_RECIPIENT + bytes([_VERSION, self._suite_id, len(name)]) + name + self._public
        return body + _sha4(body)

    def to_text(self) -> str:
        """The public key file: comment lines and one ``keysplit-recipient-v1:`` line."""
        b64 = base64.urlsafe_b64encode(self.to_bytes()).decode("ascii").rstrip("=")
        return (
            f"# keysplit custodian public key ({self.suite})\n"
            f"# custodian: {self.name}\n"
            f"# fingerprint: {self.fingerprint}\n"
            f"{_TEXT_PREFIX}{b64}\n"
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Recipient:
        """Parse the binary form, or the text form (:meth:`to_text`) given as bytes."""
        if isinstance(data, (bytes, bytearray)) and not bytes(data).startswith(_MAGIC_RECIPIENT):
            try:
                return cls.parse(bytes(data).decode("utf-8"))
            except UnicodeDecodeError:
                raise FormatError("not a keysplit public key (bad magic)") from None

        def body(r: _Reader) -> tuple[int, str, bytes]:
            suite_id = r.byte()
            if suite_id not in _SUITE_NAMES:
                raise FormatError(f"public key has an unknown suite {suite_id}")
            name = r.name()
            return suite_id, name, r.take(_PUB_LEN[suite_id])

        suite_id, name, public = _parse_envelope(data, _MAGIC_RECIPIENT, "public key", body)
        return cls(name, _SUITE_NAMES[suite_id], public)  # type: ignore[arg-type]

    @classmethod
    def parse(cls, text: str) -> Recipient:
        """Parse a public key file; ``#`` comment lines and blank lines are ignored."""
        lines = [
            ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
        ]
        if len(lines) != 1 or not lines[0].startswith(_TEXT_PREFIX):
            raise FormatError(
                f"not a keysplit public key (expected one line starting with {_TEXT_PREFIX})"
            )
        b64 = lines[0][len(_TEXT_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
        except (binascii.Error, ValueError):
            raise FormatError("public key is not valid base64url") from None
        if base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=") != b64:
            raise FormatError("public key is not canonical base64url")
        if not raw.startswith(_MAGIC_RECIPIENT):
            raise FormatError("not a keysplit public key (bad magic)")
        return cls.from_bytes(raw)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Recipient):
            return NotImplemented
        return (self.name, self._suite_id, self._public) == (
            other.name,
            other._suite_id,
            other._public,
        )

    def __hash__(self) -> int:
        return hash((self.name, self._fp))

    def __repr__(self) -> str:
        return (
            f"Recipient(name={self.name!r}, suite={self.suite!r}, fingerprint={self.fingerprint})"
        )


class Identity:
    """A custodian's private key. Never printed; store it with :meth:`to_bytes` (0600)."""

    __slots__ = ("_name", "_private", "_recipient", "_suite_id")

    def __init__(self, name: str, suite: Suite, private: bytes) -> None:
        self._name = _check_name(name)
        if suite not in _SUITE_IDS:
            raise ValueError(f"unknown suite {suite!r}")
        self._suite_id = _SUITE_IDS[suite]
        if not isinstance(private, bytes) or len(private) != _PRIV_LEN[self._suite_id]:
            raise ValueError(f"a {suite} private key is {_PRIV_LEN[self._suite_id]} bytes")
        self._private = private
        key = self._key()
        if isinstance(key, x25519.X25519PrivateKey):
            public = key.public_key().public_bytes_raw()
        else:
            public = (
                mlkem.MLKEM768PrivateKey.from_seed_bytes(private[:64])
                .public_key()
                .public_bytes_raw()
                + x25519.X25519PrivateKey.from_private_bytes(private[64:])
                .public_key()
                .public_bytes_raw()
            )
        self._recipient = Recipient(name, suite, public)

    @classmethod
    def generate(cls, name: str, *, suite: Suite = "x25519") -> Identity:
        """A fresh key pair for custodian ``name`` (default suite: X25519)."""
        if suite == "x25519":
            private = x25519.X25519PrivateKey.generate().private_bytes_raw()
        elif suite == "mlkem768-x25519":
            private = (
                mlkem.MLKEM768PrivateKey.generate().private_bytes_raw()
                + x25519.X25519PrivateKey.generate().private_bytes_raw()
            )
        else:
            raise ValueError(f"unknown suite {suite!r}")
        return cls(name, suite, private)

    def _key(self) -> x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey:
        if self._suite_id == 0x01:
            return x25519.X25519PrivateKey.from_private_bytes(self._private)
        return hpke.MLKEM768X25519PrivateKey(
            mlkem.MLKEM768PrivateKey.from_seed_bytes(self._private[:64]),
            x25519.X25519PrivateKey.from_private_bytes(self._private[64:]),
        )

    @property
    def name(self) -> str:
        """The custodian's name."""
        return self._name

    @property
    def suite(self) -> Suite:
        return _SUITE_NAMES[self._suite_id]  # type: ignore[return-value]

    @property
    def recipient(self) -> Recipient:
        return self._recipient

    @property
    def fingerprint(self) -> str:
        """The fingerprint of :attr:`recipient` (matches sealed-share headers)."""
        return self._recipient.fingerprint

    def to_bytes(
        self,
        passphrase: bytes | None = None,
        *,
        kdf: Argon2Params | None = None,
        rng: RandomSource | None = None,
    ) -> bytes:
        """Binary identity file, encrypted under ``passphrase`` (Argon2id) if given."""
        name = self.name.encode("ascii")
        head = _MAGIC_IDENTITY + bytes([_VERSION, self._suite_id])
        if passphrase is None:
            body = head + bytes([0x00, len(name)]) + name + self._private
            return body + _sha4(body)
        passphrase = _check_passphrase(passphrase)
        params = kdf or Argon2Params()
        source = rng or default_rng()
        salt = source.random_bytes(_SALT_LEN)
        nonce = source.random_bytes(_NONCE_LEN)
        header = head + bytes([0x01, len(name)]) + name + params.encode() + salt + nonce
        key = params.derive(passphrase, salt)
        body = header + AESGCM(key).encrypt(nonce, self._private, header)
        return body + _sha4(body)

    @staticmethod
    def is_encrypted(data: bytes) -> bool:
        """True if ``data`` is an identity file protected by a passphrase."""
        return _parse_identity(data).params is not None

    @classmethod
    def from_bytes(cls, data: bytes, passphrase: bytes | None = None) -> Identity:
        """Parse an identity file; a wrong or missing passphrase is a CustodianError."""
        p = _parse_identity(data)
        suite: Suite = _SUITE_NAMES[p.suite_id]  # type: ignore[assignment]
        if p.params is None:
            private = p.sealed
        else:
            if passphrase is None:
                raise CustodianError(
                    f"the identity of custodian {p.name!r} is passphrase-protected",
                    hint="give its passphrase",
                )
            key = p.params.derive(_check_passphrase(passphrase), p.salt)
            try:
                private = AESGCM(key).decrypt(p.nonce, p.sealed, p.header)
            except InvalidTag:
                raise CustodianError(
                    f"wrong passphrase for the identity of custodian {p.name!r}"
                ) from None
        try:
            return cls(p.name, suite, private)
        except ValueError:
            raise FormatError("identity holds an invalid private key") from None

    def __repr__(self) -> str:
        return (
            f"Identity(name={self.name!r}, suite={self.suite!r}, "
            f"fingerprint={self.fingerprint}, private=<redacted>)"
        )


@dataclass(frozen=True)
class _IdentityFields:
    suite_id: int
    name: str
    params: Argon2Params | None
    salt: bytes
    nonce: bytes
    header: bytes
    sealed: bytes  # the private key itself when params is None


def _parse_identity(data: bytes) -> _IdentityFields:
    def body(r: _Reader) -> _IdentityFields:
        suite_id = r.byte()
        if suite_id not in _SUITE_NAMES:
            raise FormatError(f"identity has an unknown suite {suite_id}")
        protection = r.byte()
        if protection not in (0, 1):
            raise FormatError(f"identity has an unknown protection {protection}")
        name = r.name()
        if protection == 0:
            return _IdentityFields(suite_id, name, None, b"", b"", b"", r.take(_PRIV_LEN[suite_id]))
        params = Argon2Params.decode(r)
        salt = r.take(_SALT_LEN)
        nonce = r.take(_NONCE_LEN)
        header = r.data[: r.pos]
        sealed = r.take(_PRIV_LEN[suite_id] + 16)
        return _IdentityFields(suite_id, name, params, salt, nonce, header, sealed)

    return _parse_envelope(data, _MAGIC_IDENTITY, "identity", body)


# -- sealed shares --------------------------------------------------------------------------


@dataclass(frozen=True)
class SealedShareInfo:
    """What a sealed share's header says; no secrets (everything here is public)."""

    custodian: str
    set_id: bytes
    threshold: int
    count: int
    index: int
    method: Literal["x25519", "mlkem768-x25519", "passphrase"]
    recipient_fingerprint: str | None
    kdf: Argon2Params | None

    @property
    def set_id_hex(self) -> str:
        return self.set_id.hex()

    @property
    def protection(self) -> str:
        """``"passphrase"`` or the recipient fingerprint the share is sealed to."""
        return self.recipient_fingerprint or "passphrase"

    @property
    def fingerprint(self) -> str:
        """Same as :attr:`Share.fingerprint` of the sealed share."""
        return f"{self.set_id.hex()}-{self.index}"


def _share_header(share: Share, custodian: str, method: int) -> bytes:
    if not isinstance(share, Share):
        raise TypeError("share must be a Share")
    name = _check_name(custodian).encode("ascii")
    return (
        _MAGIC_SEALED
        + bytes([_VERSION, method, len(name)])
        + name
        + share.set_id
        + bytes([share.threshold, share.count, share.index])
    )


def _finish_sealed(header: bytes, ciphertext: bytes) -> bytes:
    body = header + struct.pack(">H", len(ciphertext)) + ciphertext
    return body + _sha4(body)


def seal_share(share: Share, recipient: Recipient) -> bytes:
    """Seal ``share`` to ``recipient`` with HPKE; ``info`` binds the whole header."""
    if not isinstance(recipient, Recipient):
        raise TypeError("recipient must be a Recipient")
    header = _share_header(share, recipient.name, recipient._suite_id) + recipient.fingerprint_bytes
    suite = hpke.Suite(_HPKE_KEM[recipient._suite_id], _HPKE_KDF, _HPKE_AEAD)
    ciphertext = suite.encrypt(share.to_bytes(), recipient._key(), _INFO_DOMAIN + header)
    return _finish_sealed(header, ciphertext)


def seal_share_with_passphrase(
    share: Share,
    custodian: str,
    passphrase: bytes,
    *,
    kdf: Argon2Params | None = None,
    rng: RandomSource | None = None,
) -> bytes:
    """Seal ``share`` under a passphrase: Argon2id -> AES-128-GCM, header as AAD."""
    passphrase = _check_passphrase(passphrase)
    params = kdf or Argon2Params()
    source = rng or default_rng()
    salt = source.random_bytes(_SALT_LEN)
    nonce = source.random_bytes(_NONCE_LEN)
    header = _share_header(share, custodian, _METHOD_PASSPHRASE) + params.encode() + salt + nonce
    key = params.derive(passphrase, salt)
    return _finish_sealed(header, AESGCM(key).encrypt(nonce, share.to_bytes(), header))


def _parse_sealed(data: bytes) -> tuple[SealedShareInfo, bytes, bytes, bytes, bytes]:
    """Returns (info, header, salt, nonce, ciphertext); salt/nonce empty for HPKE."""

    def body(r: _Reader) -> tuple[SealedShareInfo, bytes, bytes, bytes, bytes]:
        method = r.byte()
        if method not in (*_SUITE_NAMES, _METHOD_PASSPHRASE):
            raise FormatError(f"sealed share has an unknown method {method}")
        name = r.name()
        set_id = r.take(8)
        threshold, count, index = r.take(3)
        if not 2 <= threshold <= count or not 1 <= index <= count:
            raise FormatError("sealed share has invalid parameters")
        fp: str | None = None
        kdf: Argon2Params | None = None
        salt = nonce = b""
        if method == _METHOD_PASSPHRASE:
            kdf = Argon2Params.decode(r)
            salt = r.take(_SALT_LEN)
            nonce = r.take(_NONCE_LEN)
        else:
            fp = r.take(_FP_LEN).hex()
        header = r.data[: r.pos]
        (length,) = struct.unpack(">H", r.take(2))
        ciphertext = r.take(length)
        method_name = "passphrase" if method == _METHOD_PASSPHRASE else _SUITE_NAMES[method]
        info = SealedShareInfo(
            name,
            set_id,
            threshold,
            count,
            index,
            method_name,  # type: ignore[arg-type]
            fp,
            kdf,
        )
        return info, header, salt, nonce, ciphertext

    return _parse_envelope(data, _MAGIC_SEALED, "sealed share", body)


def sealed_share_info(data: bytes) -> SealedShareInfo:
    """Read a sealed share's header (checked for corruption); opens nothing."""
    return _parse_sealed(data)[0]


def is_sealed(data: bytes) -> bool:
    """True if ``data`` starts like a sealed share (use before choosing how to load it)."""
    return bytes(data[: len(_MAGIC_SEALED)]) == _MAGIC_SEALED


def open_share(
    data: bytes, *, identity: Identity | None = None, passphrase: bytes | None = None
) -> Share:
    """Open a sealed share with the custodian's identity or passphrase, and verify it."""
    info, header, salt, nonce, ciphertext = _parse_sealed(data)
    who = f"custodian {info.custodian!r} (share {info.index})"
    if info.method == "passphrase":
        if passphrase is None:
            raise CustodianError(
                f"the share of {who} is sealed under a passphrase", hint="give its passphrase"
            )
        assert info.kdf is not None
        key = info.kdf.derive(_check_passphrase(passphrase), salt)
        try:
            plain = AESGCM(key).decrypt(nonce, ciphertext, header)
        except InvalidTag:
            raise CustodianError(f"wrong passphrase for the share of {who}") from None
    else:
        if identity is None:
            raise CustodianError(
                f"the share of {who} is sealed to public key {info.recipient_fingerprint}",
                hint="give the custodian's identity file",
            )
        if not isinstance(identity, Identity):
            raise TypeError("identity must be an Identity")
        if not hmac.compare_digest(identity.fingerprint, info.recipient_fingerprint or ""):
            raise CustodianError(
                f"the share of {who} is sealed to key {info.recipient_fingerprint}, not to "
                f"the identity of {identity.name!r} ({identity.fingerprint})",
                hint=f"use the identity of custodian {info.custodian!r}",
            )
        suite = hpke.Suite(_HPKE_KEM[identity._suite_id], _HPKE_KDF, _HPKE_AEAD)
        try:
            plain = suite.decrypt(ciphertext, identity._key(), _INFO_DOMAIN + header)
        except (InvalidTag, ValueError):
            raise CustodianError(
                f"could not open the share of {who}: authentication failed (tampered)"
            ) from None
    try:
        share = Share.from_bytes(plain)
    except FormatError as exc:
        raise FormatError(f"the sealed share of {who} holds an invalid share: {exc}") from None
    if (share.set_id, share.threshold, share.count, share.index) != (
        info.set_id,
        info.threshold,
        info.count,
        info.index,
    ):
        raise FormatError(f"the sealed share of {who} does not match its header")
    return share


def load_share(
    data: bytes, *, identity: Identity | None = None, passphrase: bytes | None = None
) -> Share:
    """Load a share file of any kind: sealed, binary, or text (``#`` lines ignored)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("data must be bytes")
    data = bytes(data)
    if is_sealed(data):
        return open_share(data, identity=identity, passphrase=passphrase)
    if data.startswith(b"KSSH"):
        return Share.from_bytes(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("not a keysplit share (neither text nor a known binary form)") from None
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    return Share.parse("\n".join(lines))
