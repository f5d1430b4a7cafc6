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

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from ..keyring import KeyringStatus
from .client import Client, ServiceError
from .unseal import StaleNonceError

__all__ = ["Client", "RecordKeyring", "ServiceError", "StaleNonceError"]


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
