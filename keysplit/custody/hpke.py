"""Protection types ``0x01`` and ``0x02``: a share sealed to a custodian's public key (HPKE).

RFC 9180 base mode with HKDF-SHA256 / AES-128-GCM and one of two KEMs, listed once in
:data:`_KEMS`: DHKEM(X25519) (``0x01``, through :mod:`keysplit.hazmat.hpke`) or the
post-quantum hybrid ML-KEM-768+X25519 (``0x02``, ``cryptography``'s ``hpke.Suite``). The
method parameter in the header is the recipient fingerprint (16 bytes); HPKE ``info`` is
``"keysplit sealed share v1\\0" || header``, so the whole header is bound.

A custodian holds an :class:`Identity` (private key, optionally encrypted under a
passphrase with Argon2id) and publishes its :class:`Recipient` (public key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke as _cg_hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .._fileio import read_bounded
from ..errors import CustodianError, FormatError, IntegrityError
from ..hazmat import hpke as _hpke
from ..rng import RandomSource, default_rng
from ..share import Share
from . import base
from ._container import (
    MAGIC_IDENTITY,
    MAGIC_RECIPIENT,
    VERSION,
    Reader,
    SealedShare,
    check_name,
    kind_of,
    parse_envelope,
    seal_envelope,
)
from .passphrase import (
    NONCE_LEN,
    SALT_LEN,
    Argon2Params,
    ConfirmKdf,
    open_with_passphrase,
    sealing_key,
)

__all__ = [
    "MAX_KEY_FILE_SIZE",
    "Identity",
    "IdentityOpener",
    "Recipient",
    "RecipientSealer",
    "Suite",
    "read_key_file",
    "seal_share",
]

Suite = Literal["x25519", "mlkem768-x25519"]

FP_LEN = 16
MAX_KEY_FILE_SIZE = 1 << 16
"""Largest identity or public-key file read (a passphrase-protected ML-KEM identity is
~3.3 KiB): checked before reading, see :func:`read_key_file`."""
_TEXT_PREFIX = "keysplit-recipient-v1:"
_FP_DOMAIN = b"keysplit recipient fingerprint v1\x00"
_INFO_DOMAIN = b"keysplit sealed share v1\x00"


# -- the KEMs: one entry each ------------------------------------------------------------


@dataclass(frozen=True)
class _Kem:
    code: int
    name: str
    pub_len: int
    priv_len: int
    check_public: Callable[[bytes], object]
    """Raises ValueError for invalid key material."""
    public_of: Callable[[bytes], bytes]
    generate: Callable[[], bytes]
    seal: Callable[[bytes, bytes, bytes], bytes]
    """``seal(public, info, plaintext) -> enc || ct``."""
    open: Callable[[bytes, bytes, bytes], bytes]
    """``open(private, info, enc || ct)``; raises InvalidTag, ValueError or IntegrityError."""


def _x25519_pub(private: bytes) -> bytes:
    return x25519.X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def _hybrid_public(public: bytes) -> _cg_hpke.MLKEM768X25519PublicKey:
    return _cg_hpke.MLKEM768X25519PublicKey(
        mlkem.MLKEM768PublicKey.from_public_bytes(public[:1184]),
        x25519.X25519PublicKey.from_public_bytes(public[1184:]),
    )


def _hybrid_private(private: bytes) -> _cg_hpke.MLKEM768X25519PrivateKey:
    return _cg_hpke.MLKEM768X25519PrivateKey(
        mlkem.MLKEM768PrivateKey.from_seed_bytes(private[:64]),
        x25519.X25519PrivateKey.from_private_bytes(private[64:]),
    )


def _hybrid_pub(private: bytes) -> bytes:
    return mlkem.MLKEM768PrivateKey.from_seed_bytes(
        private[:64]
    ).public_key().public_bytes_raw() + _x25519_pub(private[64:])


_HYBRID = _cg_hpke.Suite(
    _cg_hpke.KEM.MLKEM768_X25519, _cg_hpke.KDF.HKDF_SHA256, _cg_hpke.AEAD.AES_128_GCM
)

_KEMS: dict[int, _Kem] = {
    k.code: k
    for k in (
        _Kem(
            0x01,
            "x25519",
            32,
            32,
            x25519.X25519PublicKey.from_public_bytes,
            _x25519_pub,
            lambda: x25519.X25519PrivateKey.generate().private_bytes_raw(),
            lambda pub, info, pt: _hpke.seal(pub, info, pt),
            lambda priv, info, ct: _hpke.open(priv, info, ct),
        ),
        _Kem(
            0x02,
            "mlkem768-x25519",
            1184 + 32,
            64 + 32,
            _hybrid_public,
            _hybrid_pub,
            lambda: (
                mlkem.MLKEM768PrivateKey.generate().private_bytes_raw()
                + x25519.X25519PrivateKey.generate().private_bytes_raw()
            ),
            lambda pub, info, pt: _HYBRID.encrypt(pt, _hybrid_public(pub), info),
            lambda priv, info, ct: _HYBRID.decrypt(ct, _hybrid_private(priv), info),
        ),
    )
}
_BY_NAME = {k.name: k for k in _KEMS.values()}


def _kem(suite: str) -> _Kem:
    kem = _BY_NAME.get(suite) if isinstance(suite, str) else None
    if kem is None:
        raise ValueError(f"unknown suite {suite!r} (use one of {sorted(_BY_NAME)})")
    return kem


def _fingerprint(code: int, public: bytes) -> bytes:
    return hashlib.sha256(_FP_DOMAIN + bytes([code]) + public).digest()[:FP_LEN]


# -- recipients and identities ------------------------------------------------------------


class _KeyOfCustodian:
    """What a recipient and an identity both say about themselves."""

    __slots__ = ()
    _name: str
    _kem: _Kem

    @property
    def name(self) -> str:
        """The custodian's name (a label; not part of the fingerprint)."""
        return self._name

    @property
    def suite(self) -> Suite:
        return self._kem.name  # type: ignore[return-value]


_X25519_P = 2**255 - 19
"""Every X25519 public key made from a private key is below it (its canonical encoding;
the X25519 part is the last 32 bytes of either suite's key)."""


def _not_a_public_key(data: bytes, detail: str) -> FormatError:
    """The error for a file given as a public key that is not one, naming what it is: an
    operator handed a custodian's identity file (their private key) should hear so, and
    that it goes back to its custodian."""
    kind = kind_of(data)
    if kind is None:
        return FormatError(f"not a keysplit public key ({detail})")
    hint = None
    if data.lstrip().startswith(MAGIC_IDENTITY):
        hint = (
            "give the custodian's NAME.pub (keysplit custodian keygen writes it beside "
            "NAME.identity); the identity file is private: it stays with its custodian"
        )
    return FormatError(f"not a keysplit public key ({detail}): {kind}", hint=hint)


class Recipient(_KeyOfCustodian):
    """A custodian's public key: anyone may seal a share to it. Not secret."""

    __slots__ = ("_fp", "_kem", "_name", "_public")

    def __init__(self, name: str, suite: Suite, public: bytes) -> None:
        self._name = check_name(name)
        self._kem = _kem(suite)
        if not isinstance(public, bytes) or len(public) != self._kem.pub_len:
            raise ValueError(f"a {suite} public key is {self._kem.pub_len} bytes")
        self._public = public
        self._fp = _fingerprint(self._kem.code, public)
        # X25519 ignores bit 255 and reduces u mod p (RFC 7748): another encoding of a
        # key is that key under other bytes, which check_custody (comparing bytes) would
        # take for another custodian's. No key pair makes one, so none is read.
        if int.from_bytes(public[-32:], "little") >= _X25519_P:
            raise FormatError(
                "X25519 public key is not canonical (u >= 2^255 - 19): no key pair makes it",
                hint="use the public key file the custodian's keysplit wrote",
            )
        try:
            self._kem.check_public(public)
        except ValueError:
            raise FormatError("invalid public key") from None

    @property
    def public_bytes(self) -> bytes:
        return self._public

    @property
    def fingerprint(self) -> str:
        """Hex of ``SHA-256("keysplit recipient fingerprint v1" || suite || key)[:16]``."""
        return self._fp.hex()

    @property
    def key_parts(self) -> tuple[tuple[str, bytes], ...]:
        """The KEM public keys this key is made of, named: ``X25519`` alone, or
        ``ML-KEM-768`` and ``X25519`` for the hybrid suite. Whoever holds the private key
        of a part opens what is sealed to that part alone (the X25519 half of a hybrid
        identity opens an x25519 recipient's shares), so
        :func:`keysplit.ceremony.check_custody` refuses a part two custodians share."""
        if self._kem.code == 0x02:
            return (("ML-KEM-768", self._public[:1184]), ("X25519", self._public[1184:]))
        return (("X25519", self._public),)

    @property
    def fingerprint_bytes(self) -> bytes:
        return self._fp

    def to_bytes(self) -> bytes:
        """Binary form: ``"KSPK" || 01 || suite || name || key || SHA-256[:4]``."""
        name = self.name.encode("ascii")
        head = MAGIC_RECIPIENT + bytes([VERSION, self._kem.code, len(name)])
        return seal_envelope(head + name + self._public)

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
        if isinstance(data, (bytes, bytearray)) and not bytes(data).startswith(MAGIC_RECIPIENT):
            try:
                return cls.parse(bytes(data).decode("utf-8"))
            except UnicodeDecodeError:
                raise _not_a_public_key(bytes(data), "bad magic") from None

        def body(r: Reader) -> tuple[_Kem, str, bytes]:
            _, kem = r.code(_KEMS, "suite")
            name = r.name()
            return kem, name, r.take(kem.pub_len)

        kem, name, public = parse_envelope(data, MAGIC_RECIPIENT, "public key", body)
        return cls(name, kem.name, public)  # type: ignore[arg-type]

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Recipient:
        """Read a ``.pub`` file (refused by size before it is read) and parse it."""
        return cls.from_bytes(read_key_file(path))

    @classmethod
    def parse(cls, text: str) -> Recipient:
        """Parse a public key file; ``#`` comment lines and blank lines are ignored."""
        if len(text) > 1 << 16:
            raise FormatError("not a keysplit public key (file too large)")
        lines = [
            ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
        ]
        if len(lines) != 1 or not lines[0].startswith(_TEXT_PREFIX):
            raise _not_a_public_key(
                text.encode("utf-8", "surrogateescape"),
                f"expected one line starting with {_TEXT_PREFIX}",
            )
        b64 = lines[0][len(_TEXT_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
        except (binascii.Error, ValueError):
            raise FormatError("public key is not valid base64url") from None
        if base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=") != b64:
            raise FormatError("public key is not canonical base64url")
        if not raw.startswith(MAGIC_RECIPIENT):
            raise FormatError("not a keysplit public key (bad magic)")
        return cls.from_bytes(raw)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Recipient):
            return NotImplemented
        return (self.name, self._kem.code, self._public) == (
            other.name,
            other._kem.code,
            other._public,
        )

    def __hash__(self) -> int:
        return hash((self.name, self._fp))

    def __repr__(self) -> str:
        return (
            f"Recipient(name={self.name!r}, suite={self.suite!r}, fingerprint={self.fingerprint})"
        )


class Identity(_KeyOfCustodian):
    """A custodian's private key. Never printed; store it with :meth:`to_bytes` (0600)."""

    __slots__ = ("_kem", "_name", "_private", "_recipient")

    def __init__(self, name: str, suite: Suite, private: bytes) -> None:
        self._name = check_name(name)
        self._kem = _kem(suite)
        if not isinstance(private, bytes) or len(private) != self._kem.priv_len:
            raise ValueError(f"a {suite} private key is {self._kem.priv_len} bytes")
        self._private = private
        self._recipient = Recipient(name, suite, self._kem.public_of(private))

    @classmethod
    def generate(cls, name: str, *, suite: Suite = "x25519") -> Identity:
        """A fresh key pair for custodian ``name`` (default suite: X25519)."""
        return cls(name, suite, _kem(suite).generate())

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
        head = MAGIC_IDENTITY + bytes([VERSION, self._kem.code])
        if passphrase is None:
            return seal_envelope(head + bytes([0x00, len(name)]) + name + self._private)
        params = kdf or Argon2Params()
        source = rng or default_rng()
        salt = source.random_bytes(SALT_LEN)
        nonce = source.random_bytes(NONCE_LEN)
        header = head + bytes([0x01, len(name)]) + name + params.encode() + salt + nonce
        key = sealing_key(params, passphrase, salt)
        return seal_envelope(header + AESGCM(key).encrypt(nonce, self._private, header))

    @staticmethod
    def is_encrypted(data: bytes) -> bool:
        """True if ``data`` is an identity file protected by a passphrase."""
        return _parse_identity(data).params is not None

    @classmethod
    def from_bytes(
        cls, data: bytes, passphrase: bytes | None = None, *, confirm: ConfirmKdf | None = None
    ) -> Identity:
        """Parse an identity file; a wrong or missing passphrase is a CustodianError.

        ``confirm`` is asked before an expensive Argon2id derivation (see
        :func:`keysplit.custody.passphrase.derive_checked`).
        """
        p = _parse_identity(data)
        kem = _KEMS[p.suite_id]
        if p.params is None:
            private = p.sealed
        else:
            if passphrase is None:
                raise CustodianError(
                    f"the identity of custodian {p.name!r} is passphrase-protected",
                    hint="give its passphrase",
                )
            private = open_with_passphrase(
                p.params,
                passphrase,
                p.salt,
                f"the identity of custodian {p.name!r}",
                confirm,
                lambda key: AESGCM(key).decrypt(p.nonce, p.sealed, p.header),
            )
        try:
            return cls(p.name, kem.name, private)  # type: ignore[arg-type]
        except ValueError:
            raise FormatError("identity holds an invalid private key") from None

    def __repr__(self) -> str:
        return (
            f"Identity(name={self.name!r}, suite={self.suite!r}, "
            f"fingerprint={self.fingerprint}, private=<redacted>)"
        )

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("an Identity cannot be pickled or copied (store it with to_bytes, 0600)")


@dataclass(frozen=True)
class _IdentityFields:
    suite_id: int
    name: str
    params: Argon2Params | None
    salt: bytes
    nonce: bytes
    header: bytes
    sealed: bytes = field(repr=False)  # the private key itself when params is None


def read_key_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of an identity or ``.pub`` file, at most :data:`MAX_KEY_FILE_SIZE`
    (a larger file is a FormatError before any of it is read)."""
    return read_bounded(path, MAX_KEY_FILE_SIZE, f"key file {os.fspath(path)}")


def _parse_identity(data: bytes) -> _IdentityFields:
    def body(r: Reader) -> _IdentityFields:
        suite_id, kem = r.code(_KEMS, "suite")
        protection = r.byte()
        if protection not in (0, 1):
            raise FormatError(f"identity has an unknown protection {protection}")
        name = r.name()
        if protection == 0:
            return _IdentityFields(suite_id, name, None, b"", b"", b"", r.take(kem.priv_len))
        params = Argon2Params.decode(r)
        salt = r.take(SALT_LEN)
        nonce = r.take(NONCE_LEN)
        header = r.data[: r.pos]
        sealed = r.take(kem.priv_len + 16)
        return _IdentityFields(suite_id, name, params, salt, nonce, header, sealed)

    return parse_envelope(data, MAGIC_IDENTITY, "identity", body)


# -- the protection methods ------------------------------------------------------------


@dataclass(frozen=True)
class _Params:
    fingerprint: bytes

    @property
    def recipient_fingerprint(self) -> str:
        return self.fingerprint.hex()

    @property
    def kdf(self) -> None:
        return None


def _parse_params(r: Reader) -> _Params:
    return _Params(r.take(FP_LEN))


def _missing(sealed: SealedShare) -> CustodianError:
    assert isinstance(sealed.params, _Params)
    return CustodianError(
        f"the share of {sealed.who} is sealed to public key {sealed.params.recipient_fingerprint}",
        hint="give the custodian's identity file",
    )


for _k in _KEMS.values():
    base.register(base.ProtectionMethod(_k.code, _k.name, _parse_params, _missing))


class RecipientSealer:
    """Seals to ``recipient`` with HPKE; ``info`` binds the whole header."""

    def __init__(self, recipient: Recipient) -> None:
        if not isinstance(recipient, Recipient):
            raise TypeError("recipient must be a Recipient")
        self._recipient = recipient

    @property
    def method(self) -> int:
        return self._recipient._kem.code

    @property
    def custodian(self) -> str:
        return self._recipient.name

    def seal(self, plaintext: bytes, head: bytes) -> tuple[bytes, bytes]:
        params = self._recipient.fingerprint_bytes
        kem = self._recipient._kem
        info = _INFO_DOMAIN + head + params
        return params, kem.seal(self._recipient.public_bytes, info, plaintext)


class IdentityOpener:
    """Opens shares sealed to ``identity``; another key's share is :class:`IncorrectIdentity`."""

    methods = frozenset(_KEMS)

    def __init__(self, identity: Identity) -> None:
        if not isinstance(identity, Identity):
            raise TypeError("identity must be an Identity")
        self._identity = identity

    def open(self, sealed: SealedShare) -> bytes:
        ident = self._identity
        p = sealed.params
        assert isinstance(p, _Params)
        if not hmac.compare_digest(ident._recipient.fingerprint_bytes, p.fingerprint):
            raise base.IncorrectIdentity(
                f"the share of {sealed.who} is sealed to key {p.recipient_fingerprint}, not to "
                f"the identity of {ident.name!r} ({ident.fingerprint})",
                hint=f"use the identity of custodian {sealed.custodian!r}",
            )
        try:
            return ident._kem.open(ident._private, _INFO_DOMAIN + sealed.header, sealed.ciphertext)
        except (InvalidTag, ValueError, IntegrityError):
            raise CustodianError(
                f"could not open the share of {sealed.who}: authentication failed (tampered)"
            ) from None

    def __repr__(self) -> str:
        return f"IdentityOpener({self._identity!r})"


def seal_share(share: Share, recipient: Recipient) -> bytes:
    """Seal ``share`` to ``recipient`` with HPKE; ``info`` binds the whole header."""
    return base.seal(share, RecipientSealer(recipient))
