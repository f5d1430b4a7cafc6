"""The ONE place the key service touches plaintext data keys inside an UnsealedKeyring.

``UnsealedKeyring`` keeps only derived :class:`~keysplit.envelope.DataKey` objects (no raw
key). The ``datakey`` endpoint must hand raw keys to clients allowed to encrypt locally, so
this function creates missing keys through the public ``data_keys`` and unwraps the stored
rows with the keyring's :class:`~keysplit.keyring.KekSet` (subject-bound initial values
included), in one vectorized batch per KEK version.
"""

from __future__ import annotations

from collections.abc import Sequence

from .. import names
from ..errors import IntegrityError
from ..keyring import UnsealedKeyring

__all__ = ["data_keys"]


def data_keys(kr: UnsealedKeyring, subjects: Sequence[str], *, create: bool) -> list[bytes | None]:
    """Raw 16-byte data keys for valid ``subjects`` (None where a subject has none).

    ``create`` makes missing keys (wrapped under the current KEK, durable before return);
    a subject spelled differently (NFD) gets the key stored under its NFC form, as records do.
    """
    kr.data_keys(subjects, create=create)  # validates, creates and checks every stored row
    # The store holds a key under one spelling of its subject (keysplit.names: NFC first,
    # then older spellings): look each subject up the way the keyring does.
    spellings = {s: names.subject_spellings(s) for s in dict.fromkeys(subjects)}
    wanted = list(dict.fromkeys(x for sp in spellings.values() for x in sp))
    rows = list(kr.store.get_many(wanted).values())
    raw, ok = kr.local_data_keys().keks.unwrap(rows)
    try:
        if not bool(ok.all()):
            raise IntegrityError(hint="a wrapped data key in the store failed authentication")
        stored = {r.subject: raw[i].tobytes() for i, r in enumerate(rows)}
    finally:
        raw.fill(0)
    first = {s: next((stored[x] for x in sp if x in stored), None) for s, sp in spellings.items()}
    return [first[s] for s in subjects]
