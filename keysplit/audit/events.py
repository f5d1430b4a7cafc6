"""The one audit vocabulary: every ceremony's event name and the fields its entry carries.

Each ceremony in :mod:`keysplit.ceremony` records exactly one of these typed events, so an
entry's shape is decided here and nowhere else (not in the CLI, the demo or a service).
The names and fields are those keysplit has always written, so existing logs read the
same; :data:`LEGACY_NAMES` maps the spellings of the keyring's retired ``on_event`` hook
(``legal_hold``, ``rekey_committed``, ...) to them for anyone summarising old logs.
Verification never depends on the vocabulary: any name matching the format's pattern
verifies (docs/format/audit.md).

Shared field schema:

* ``authorized_by``: the quorum, a list of :class:`Contributor` dicts
  ``{"custodian", "index", "share"}`` (name, share index, share fingerprint; no share bytes);
  ``unseal-check`` names the same list ``custodians`` (its subject is the quorum itself).
* ``custodians`` on ``init``/``rekey``: one :class:`ShareRecord` dict per new share,
  ``{"custodian", "index", "share", "protection"}``.
* ``generation`` (share set generation), ``kek_version``, ``subject``: as in the keyring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from .log import AuditEntry, AuditLog

__all__ = [
    "EVENTS",
    "LEGACY_NAMES",
    "AuditRepair",
    "Contributor",
    "Decrypt",
    "Event",
    "Init",
    "LegalHold",
    "Rekey",
    "RekeyAbort",
    "RekeyRecovered",
    "Retire",
    "Rewrap",
    "Rotate",
    "ShareRecord",
    "Shred",
    "UnsealCheck",
    "canonical_name",
    "record",
]


@dataclass(frozen=True)
class Contributor:
    """A custodian who gave a share to a quorum: safe to print and log (no share bytes)."""

    custodian: str
    index: int
    fingerprint: str

    def as_dict(self) -> dict[str, str | int]:
        return {"custodian": self.custodian, "index": self.index, "share": self.fingerprint}


@dataclass(frozen=True)
class ShareRecord:
    """A new share handed to a custodian, as ``init`` and ``rekey`` log it."""

    custodian: str
    index: int
    fingerprint: str
    protection: str

    def as_dict(self) -> dict[str, str | int]:
        return {
            "custodian": self.custodian,
            "index": self.index,
            "share": self.fingerprint,
            "protection": self.protection,
        }


def _plain(value: Any) -> Any:
    """A field value as the log stores it (records as dicts, sequences as lists)."""
    if isinstance(value, (Contributor, ShareRecord)):
        return value.as_dict()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Event:
    """Base of the typed events: ``NAME`` is the entry's ``event``; the dataclass fields are
    its data (``KEYS`` renames a field in the entry, ``EXTRA`` adds constant fields)."""

    NAME: ClassVar[str]
    KEYS: ClassVar[Mapping[str, str]] = {}
    EXTRA: ClassVar[Mapping[str, Any]] = {}

    def fields(self) -> dict[str, Any]:
        out = {self.KEYS.get(f.name, f.name): _plain(getattr(self, f.name)) for f in fields(self)}
        return {**out, **self.EXTRA}


@dataclass(frozen=True)
class Init(Event):
    NAME: ClassVar[str] = "init"
    keyring_id: str
    generation: int
    threshold: int
    custodians: Sequence[ShareRecord]


@dataclass(frozen=True)
class UnsealCheck(Event):
    """An unseal drill: its subject is the quorum, logged as ``custodians``."""

    NAME: ClassVar[str] = "unseal-check"
    KEYS: ClassVar[Mapping[str, str]] = {"authorized_by": "custodians"}
    generation: int
    authorized_by: Sequence[Contributor]


@dataclass(frozen=True)
class Rekey(Event):
    NAME: ClassVar[str] = "rekey"
    generation: int
    old_threshold: int
    old_custodians: Sequence[str]
    threshold: int
    custodians: Sequence[ShareRecord]
    authorized_by: Sequence[Contributor]


@dataclass(frozen=True)
class RekeyRecovered(Event):
    """The new shares of an interrupted rekey unsealed the keyring and so completed it."""

    NAME: ClassVar[str] = "rekey"
    EXTRA: ClassVar[Mapping[str, Any]] = {"recovered": True}
    generation: int
    custodians: Sequence[str]
    authorized_by: Sequence[Contributor]


@dataclass(frozen=True)
class RekeyAbort(Event):
    NAME: ClassVar[str] = "rekey-abort"
    generation: int
    authorized_by: Sequence[Contributor]


@dataclass(frozen=True)
class Rotate(Event):
    NAME: ClassVar[str] = "rotate"
    kek_version: int
    authorized_by: Sequence[Contributor]


@dataclass(frozen=True)
class Rewrap(Event):
    NAME: ClassVar[str] = "rewrap"
    kek_version: int
    rewrapped: int
    remaining: int
    authorized_by: Sequence[Contributor]


@dataclass(frozen=True)
class Retire(Event):
    NAME: ClassVar[str] = "retire"
    kek_version: int
    authorized_by: Sequence[Contributor]


@dataclass(frozen=True)
class Shred(Event):
    NAME: ClassVar[str] = "shred"
    subject: str
    existed: bool
    authorized_by: Sequence[Contributor]


@dataclass(frozen=True)
class LegalHold(Event):
    NAME: ClassVar[str] = "legal-hold"
    subject: str
    hold: bool
    authorized_by: Sequence[Contributor]


@dataclass(frozen=True)
class Decrypt(Event):
    """A file sealed to the keyring was decrypted (``file`` as the operator named it)."""

    NAME: ClassVar[str] = "decrypt"
    file: str
    bytes: int
    context: Mapping[str, str]
    authorized_by: Sequence[Contributor]


@dataclass(frozen=True)
class AuditRepair(Event):
    NAME: ClassVar[str] = "audit-repair"
    authorized_by: Sequence[Contributor]
    dropped: str = "torn last line"


EVENTS: tuple[str, ...] = (
    "init",
    "unseal-check",
    "rekey",
    "rekey-abort",
    "rotate",
    "rewrap",
    "retire",
    "shred",
    "legal-hold",
    "decrypt",
    "audit-repair",
)
"""The event names keysplit writes (others matching the format's pattern still verify)."""

LEGACY_NAMES: Mapping[str, str] = {
    "create": "init",
    "rekey_committed": "rekey",
    "rekey_aborted": "rekey-abort",
    "legal_hold": "legal-hold",
}
"""Spellings of the keyring's retired ``on_event`` hook, by the name keysplit writes now
(``unseal`` and ``rekey_prepared`` have no ceremony of their own and stay as they are)."""


def canonical_name(event: str) -> str:
    """The current name of an event read from a log (old hook spellings mapped)."""
    return LEGACY_NAMES.get(event, event)


def record(log: AuditLog, event: Event) -> AuditEntry:
    """Append ``event`` to ``log`` as one entry; return it (the one way ceremonies log)."""
    return log.append(event.NAME, **event.fields())
