"""The ONE place :mod:`keysplit.jobs` reaches into an :class:`UnsealedKeyring`'s internals.

``UnsealedKeyring`` exposes no KEKs and no raw data keys (on purpose), but a distributed job
needs both: rewrap seals KEKs to its workers, and the in-process :class:`LocalDataKeys`
serves raw data keys to them. Both go through the functions below, so when the keyring's
internals change (the ``DataKeys``/``KekSet`` split) only this file is repointed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import IntegrityError
from ..keyring import UnsealedKeyring
from ._kek import Keks

__all__ = ["data_keys", "emit", "job_keks"]


def job_keks(kr: UnsealedKeyring, versions: Sequence[int]) -> Keks:
    """The KEKs of ``versions`` plus the current one: exactly what a rewrap job needs."""
    current = kr.keyring.meta.current_kek
    return Keks(current, {v: kr._kek(v) for v in {*versions, current}})


def data_keys(kr: UnsealedKeyring, subjects: Sequence[str], *, create: bool) -> list[bytes]:
    """Raw 16-byte data keys of ``subjects`` (made if ``create``); IntegrityError if one
    has none (never used, or shredded), like the key service's ``datakey`` endpoint."""
    kr._resolve(subjects, create=create)  # validates subjects, creates what is missing
    rows = kr.store.get_many(list(dict.fromkeys(subjects)))
    if len(rows) != len(set(subjects)):
        raise IntegrityError(hint="a subject has no data key (never used, or shredded)")
    order = list(rows.values())
    keks = job_keks(kr, sorted({r.kek_version for r in order}))
    raw, ok = keks.unwrap(order)
    if not bool(ok.all()):
        raw.fill(0)
        raise IntegrityError(hint="a wrapped data key in the store failed authentication")
    by_subject = {r.subject: raw[i].tobytes() for i, r in enumerate(order)}
    raw.fill(0)
    return [by_subject[s] for s in subjects]


def emit(kr: UnsealedKeyring, name: str, **details: Any) -> None:
    """Report a secret-free event through the keyring's ``on_event`` hook (audit seam)."""
    kr.keyring._emit(name, **details)
