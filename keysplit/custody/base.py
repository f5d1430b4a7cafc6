"""The custody seam: how a share is protected for its custodian, one protection type per file.

age's shape (``Recipient.Wrap`` / ``Identity.Unwrap``), applied to shares:

* a :class:`ShareSealer` protects share bytes for one custodian under one method;
* a :class:`ShareOpener` opens them again. Its error contract is age's: raise
  :class:`IncorrectIdentity` when the sealed share is not for this opener (another key),
  so the next opener is tried; **any other error is fatal** (a wrong passphrase, a
  tampered ciphertext) and propagates unchanged;
* a :class:`ProtectionMethod` registered under its method byte parses its header
  parameters and says what to ask for when no opener was given.

A protection type is one module in :mod:`keysplit.custody` that defines its sealer and
opener and calls :func:`register`; the package imports every such module, so adding one
is a change in one place. Framing and the order of parse errors: :mod:`._container`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..errors import CustodianError, FormatError
from ..share import Share
from . import _container
from ._container import SealedShare

if TYPE_CHECKING:
    from .passphrase import Argon2Params

__all__ = [
    "IncorrectIdentity",
    "MethodParams",
    "ProtectionMethod",
    "SealedShare",
    "SealedShareInfo",
    "ShareOpener",
    "ShareSealer",
    "WrongPassphrase",
    "methods",
    "open_sealed",
    "register",
    "seal",
    "sealed_share_info",
]


class IncorrectIdentity(CustodianError):
    """The sealed share is not for this opener (age's ``ErrIncorrectIdentity``).

    Only an opener raises it, and only to say "try the next one"; the message says whose
    share it is, so it is also what the caller sees when no opener matched.
    """


class WrongPassphrase(CustodianError):
    """The passphrase does not open the share or identity (every spelling was tried).

    Its own class so that a prompt can ask again (a typo) while every other error ends.
    """


@runtime_checkable
class MethodParams(Protocol):
    """Header parameters of one method, as far as :class:`SealedShareInfo` shows them."""

    @property
    def recipient_fingerprint(self) -> str | None: ...

    @property
    def kdf(self) -> Argon2Params | None: ...


@runtime_checkable
class ShareSealer(Protocol):
    """Protects a share for ``custodian`` under method byte ``method``."""

    @property
    def method(self) -> int: ...

    @property
    def custodian(self) -> str: ...

    def seal(self, plaintext: bytes, head: bytes) -> tuple[bytes, bytes]:
        """Return ``(params, ciphertext)``; the ciphertext must authenticate ``head + params``.

        ``head`` is the sealed-share header up to the method parameters (magic, version,
        method, custodian, set id, threshold, count, index).
        """
        ...


@runtime_checkable
class ShareOpener(Protocol):
    """Opens sealed shares meant for it (an identity, a passphrase, later a token)."""

    @property
    def methods(self) -> frozenset[int]:
        """The method bytes this opener can open; others are never offered to it."""
        ...

    def open(self, sealed: SealedShare) -> bytes:
        """Return the share bytes sealed in ``sealed``.

        Raise :class:`IncorrectIdentity` if ``sealed`` is not for this opener; every other
        exception is fatal and ends the attempt.
        """
        ...


@dataclass(frozen=True)
class ProtectionMethod:
    """A registered method: its byte, its name, its header parser and what to ask for."""

    code: int
    name: str
    parse_params: Callable[[_container.Reader], MethodParams]
    missing: Callable[[SealedShare], CustodianError]
    """The error when no opener for this method was given (it names what to give)."""


_METHODS: dict[int, ProtectionMethod] = {}


def register(method: ProtectionMethod) -> ProtectionMethod:
    """Register ``method`` under its byte; a byte is taken once (formats are forever)."""
    if not 0 <= method.code <= 0xFF:
        raise ValueError("a method byte is 0..255")
    other = _METHODS.get(method.code)
    if other is not None and other != method:
        raise ValueError(f"method byte {method.code:#04x} is already {other.name!r}")
    _METHODS[method.code] = method
    return method


def methods() -> Mapping[int, ProtectionMethod]:
    """The registry, read-only: method byte -> :class:`ProtectionMethod`."""
    return MappingProxyType(_METHODS)


@dataclass(frozen=True)
class SealedShareInfo:
    """What a sealed share's header says; no secrets (everything here is public)."""

    custodian: str
    set_id: bytes
    threshold: int
    count: int
    index: int
    method: str
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


def parse(data: bytes) -> SealedShare:
    """Parse a sealed share (checked for corruption); opens nothing."""
    return _container.parse_sealed(data, _METHODS)


def sealed_share_info(data: bytes) -> SealedShareInfo:
    """Read a sealed share's header (checked for corruption); opens nothing."""
    s = parse(data)
    return SealedShareInfo(
        s.custodian,
        s.set_id,
        s.threshold,
        s.count,
        s.index,
        _METHODS[s.method].name,
        s.params.recipient_fingerprint,
        s.params.kdf,
    )


def seal(share: Share, sealer: ShareSealer) -> bytes:
    """Seal ``share`` with ``sealer``: the header (with the sealer's parameters) is bound."""
    if not isinstance(share, Share):
        raise TypeError("share must be a Share")
    if sealer.method not in _METHODS:
        raise ValueError(f"sealer uses unregistered method byte {sealer.method}")
    head = _container.sealed_head(
        sealer.method, sealer.custodian, share.set_id, share.threshold, share.count, share.index
    )
    params, ciphertext = sealer.seal(share.to_bytes(), head)
    return _container.frame_sealed(head + params, ciphertext)


def open_sealed(data: bytes, openers: Iterable[ShareOpener]) -> Share:
    """Open a sealed share with the first opener it is meant for, and verify it.

    Openers whose :attr:`~ShareOpener.methods` exclude the share's method are skipped; if
    none is left the method says what to give. If every remaining opener raises
    :class:`IncorrectIdentity`, the first such error is raised.
    """
    sealed = parse(data)
    first: IncorrectIdentity | None = None
    plain: bytes | None = None
    for opener in openers:
        if sealed.method not in opener.methods:
            continue
        try:
            plain = opener.open(sealed)
        except IncorrectIdentity as exc:
            first = first or exc
            continue
        break
    if plain is None:
        raise first if first is not None else _METHODS[sealed.method].missing(sealed)
    who = sealed.who
    try:
        share = Share.from_bytes(plain)
    except FormatError as exc:
        raise FormatError(f"the sealed share of {who} holds an invalid share: {exc}") from None
    if (share.set_id, share.threshold, share.count, share.index) != (
        sealed.set_id,
        sealed.threshold,
        sealed.count,
        sealed.index,
    ):
        raise FormatError(f"the sealed share of {who} does not match its header")
    return share
