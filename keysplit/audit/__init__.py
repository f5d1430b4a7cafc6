"""The ceremony audit log: :mod:`.log` (the hash-chained, MACed file format) and
:mod:`.events` (the one event vocabulary and field schema ceremonies write)."""

from . import events
from .events import EVENTS
from .log import GENESIS, VERSION, AuditEntry, AuditLog, AuditMark, AuditReport

__all__ = [
    "EVENTS",
    "GENESIS",
    "VERSION",
    "AuditEntry",
    "AuditLog",
    "AuditMark",
    "AuditReport",
    "events",
]
