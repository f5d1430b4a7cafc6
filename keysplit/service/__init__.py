"""The keysplit key service: ``keysplit serve`` and :class:`Client` (docs/API.md).

A long-lived process holds one unsealed keyring for a fleet of backends: custodians
unseal it remotely (their shares HPKE-sealed to a per-attempt key), quorum-approved tokens
with operation and subject-prefix policies authorize batch requests, and
:class:`Client` gives backends the same record API as an in-process
:class:`~keysplit.UnsealedKeyring` (both satisfy :class:`RecordKeyring`).

The server side (:mod:`keysplit.service.server`) needs the ``service`` extra (aiohttp);
the client uses only the standard library.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # imported on first use (__getattr__ below), typed for mypy here
    from ..keyring import KeyringStatus
    from .client import Client as Client
    from .client import ServiceError as ServiceError
    from .heap import keep_heap as keep_heap
    from .unseal import StaleNonceError as StaleNonceError

__all__ = ["Client", "RecordKeyring", "ServiceError", "StaleNonceError", "keep_heap"]


@runtime_checkable
class RecordKeyring(Protocol):
    """What a storage backend needs: both :class:`Client` and ``UnsealedKeyring`` have it."""

    def encrypt(
        self, plaintext: bytes, *, subject: str, context: Mapping[str, str] | None = None
    ) -> bytes: ...

    def decrypt(
        self, record: bytes, *, subject: str, context: Mapping[str, str] | None = None
    ) -> bytes: ...

    def encrypt_many(
        self,
        subjects: Sequence[str],
        plaintexts: Sequence[bytes],
        context: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None = None,
    ) -> list[bytes]: ...

    def decrypt_many(
        self,
        subjects: Sequence[str],
        records: Sequence[bytes],
        context: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None = None,
    ) -> list[bytes]: ...

    def shred(self, subject: str) -> bool: ...

    def status(self) -> KeyringStatus: ...


_LAZY = {
    "Client": "client",
    "ServiceError": "client",
    "StaleNonceError": "unseal",
    "keep_heap": "heap",
}
"""Names of ``__all__`` -> their module, imported on first use (PEP 562): a program that needs
only a light part of the service (``keysplit token``'s help reads ``tokens.OPERATIONS``) does
not pay for the client, the keyring and numpy."""


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # resolve once
    return value
