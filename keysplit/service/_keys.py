"""The ONE place the key service touches plaintext data keys inside an UnsealedKeyring.

``UnsealedKeyring`` deliberately exposes no raw data keys (its cache holds derived
:class:`~keysplit.envelope.DataKey` objects). The ``datakey`` endpoint must hand raw keys
to clients allowed to encrypt locally, so this function reaches into keyring internals
(``_resolve`` to create missing keys, ``_kek`` to unwrap). When the keyring's internals
change, only this function needs repointing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import keywrap
from ..errors import FormatError, IntegrityError
from ..keyring import UnsealedKeyring
from ..store import WrappedKey

__all__ = ["data_keys"]


def data_keys(kr: UnsealedKeyring, subjects: Sequence[str], *, create: bool) -> list[bytes | None]:
    """Raw 16-byte data keys for valid ``subjects`` (None where a subject has none).

    ``create`` makes missing keys (wrapped under the current KEK, durable before return).
    Callers validate subject names first.
    """
    kr._resolve(subjects, create=create)  # creates (and caches) what is missing
    unique = list(dict.fromkeys(subjects))
    rows = kr.store.get_many(unique)
    by_version: dict[int, list[WrappedKey]] = {}
    for r in rows.values():
        by_version.setdefault(r.kek_version, []).append(r)
    raw: dict[str, bytes] = {}
    for version, group in by_version.items():
        if any(len(r.wrapped) != 24 for r in group):
            raise FormatError("key store holds a wrapped key of the wrong length")
        arr = np.frombuffer(b"".join(r.wrapped for r in group), np.uint8).reshape(-1, 24)
        keys, ok = keywrap.unwrap_batch(kr._kek(version), arr)
        if not bool(ok.all()):
            raise IntegrityError(hint="a wrapped data key in the store failed authentication")
        for r, k in zip(group, keys, strict=True):
            raw[r.subject] = k.tobytes()
        keys.fill(0)
    return [raw.get(s) for s in subjects]
