"""The ONE place the key service touches plaintext data keys inside an UnsealedKeyring.

``UnsealedKeyring`` keeps only derived :class:`~keysplit.envelope.DataKey` objects (no raw
key). The ``datakey`` endpoint must hand raw keys to clients allowed to encrypt locally, so
this function creates missing keys through the public ``data_keys`` and unwraps the stored
rows with the keyring's :class:`~keysplit.keyring.KekSet` (subject-bound initial values
included), in one vectorized batch per KEK version.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import IntegrityError
from ..keyring import UnsealedKeyring

__all__ = ["data_keys"]


def data_keys(kr: UnsealedKeyring, subjects: Sequence[str], *, create: bool) -> list[bytes | None]:
    """Raw 16-byte data keys for valid ``subjects`` (None where a subject has none).

    ``create`` makes missing keys (wrapped under the current KEK, durable before return).
    """
    kr.data_keys(subjects, create=create)  # validates, creates and checks every stored row
    rows = list(kr.store.get_many(list(dict.fromkeys(subjects))).values())
    raw, ok = kr.local_data_keys().keks.unwrap(rows)
    try:
        if not bool(ok.all()):
            raise IntegrityError(hint="a wrapped data key in the store failed authentication")
        found = {r.subject: raw[i].tobytes() for i, r in enumerate(rows)}
    finally:
        raw.fill(0)
    return [found.get(s) for s in subjects]
