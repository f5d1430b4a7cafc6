"""The ONE place :mod:`keysplit.jobs` takes key material out of an :class:`UnsealedKeyring`.

A distributed job needs what the record API keeps inside: rewrap seals KEKs to its
workers, and the in-process :class:`LocalDataKeys` serves raw data keys to them. Both go
through the keyring's public hand-overs (``keks_for_rewrap``) or the key service's one
raw-key function, so a change of the keyring's internals is adapted there, not here.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import IntegrityError
from ..keyring import KekSet, UnsealedKeyring
from ..service._keys import data_keys as _service_data_keys

__all__ = ["data_keys", "job_keks"]


def job_keks(kr: UnsealedKeyring, versions: Sequence[int]) -> KekSet:
    """The KEKs of ``versions`` plus the current one, with their unbound-version flags:
    exactly what a rewrap job needs (KeyringError if one is retired)."""
    full = kr.keks_for_rewrap()
    wanted = sorted({*versions, full.current})
    return KekSet(
        full.keyring_id,
        full.current,
        {v: full.kek(v) for v in wanted},
        unbound=[v for v in wanted if v in full.unbound],
    )


def data_keys(kr: UnsealedKeyring, subjects: Sequence[str], *, create: bool) -> list[bytes]:
    """Raw 16-byte data keys of ``subjects`` (made if ``create``); IntegrityError if one
    has none (never used, or shredded), like the key service's ``datakey`` endpoint."""
    keys = _service_data_keys(kr, subjects, create=create)
    if any(k is None for k in keys):
        raise IntegrityError(hint="a subject has no data key (never used, or shredded)")
    return [k for k in keys if k is not None]
