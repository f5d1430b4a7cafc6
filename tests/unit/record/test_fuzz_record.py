"""Hypothesis red team of record batches: ``decrypt_many`` over records of several
subjects and keys, one of them edited at the level of its parts (header fields of
another record, two records spliced, a record moved to another subject or index,
truncated or extended at a field boundary, its bytes duplicated).

tests/unit/parsers/test_fuzz_parsers.py mutates single records byte by byte for
``decrypt``; here the batch path (grouping by subject and key, the fast prefix check,
bytearray/memoryview records) must be all-or-nothing: the batch opens only when every
record is unaltered, else a KeysplitError and no plaintext.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keysplit import KeysplitError, record
from keysplit.rng import DeterministicRandom

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_KEYS = [record.DataKey(bytes([i]) * 16) for i in range(3)]
_SUBJECTS = ["u/1", "u/2", "Zoë/3"]
_CONTEXT = {"table": "messages"}
_PLAIN = [b"alpha", b"", b"x" * 300, b"beta", b"gamma"]
_OWNER = [0, 1, 2, 0, 1]  # record i belongs to subject/key _OWNER[i]
_RECORDS = [
    record.encrypt(
        _KEYS[o], p, subject=_SUBJECTS[o], context=_CONTEXT, rng=DeterministicRandom(f"r{i}")
    )
    for i, (o, p) in enumerate(zip(_OWNER, _PLAIN, strict=True))
]
_OWNER_SUBJECT = [_SUBJECTS[o] for o in _OWNER]
# field boundaries: magic | version | suite | commitment | nonce | ciphertext | tag
_CUTS = [0, 4, 5, 6, record.PREFIX_SIZE, record.HEADER_SIZE]


@st.composite
def edited_batch(draw: st.DrawFn) -> tuple[list[object], list[str]]:
    recs: list[object] = list(_RECORDS)
    subjects = [_SUBJECTS[o] for o in _OWNER]
    i = draw(st.integers(0, len(recs) - 1))
    j = draw(st.integers(0, len(recs) - 1))
    r, other = _RECORDS[i], _RECORDS[j]
    op = draw(st.sampled_from(["none", "field", "splice", "move", "cut", "extend", "dup", "swap"]))
    lo = draw(st.sampled_from(_CUTS))
    hi = draw(st.sampled_from([c for c in _CUTS if c > lo] + [len(r)]))
    if op == "field":  # one field of record i taken from record j
        recs[i] = r[:lo] + other[lo:hi] + r[hi:]
    elif op == "splice":
        recs[i] = r[:hi] + other[hi:]
    elif op == "move":  # record i presented as subject j's
        subjects[i] = subjects[j]
    elif op == "cut":
        recs[i] = r[: draw(st.sampled_from([*_CUTS, record.OVERHEAD, len(r) - 1]))]
    elif op == "extend":
        recs[i] = r + other[lo:hi]
    elif op == "dup":
        recs[i] = r[:hi] + r[lo:hi] + r[hi:]
    elif op == "swap":  # two records trade places, subjects staying
        recs[i], recs[j] = recs[j], recs[i]
    kind = draw(st.sampled_from([bytes, bytearray, memoryview]))
    return [kind(x) for x in recs], subjects  # type: ignore[operator]


def _expected(recs: list[object], subjects: list[str]) -> list[bytes] | None:
    """The plaintexts the batch must open to: each record an unaltered one sealed for the
    subject it is presented with (records of one subject and context may trade places:
    the AAD binds subject and context, not a position), else None (it must not open)."""
    out = []
    for rec, subject in zip(recs, subjects, strict=True):
        k = next(
            (k for k, r in enumerate(_RECORDS) if r == bytes(rec) and _OWNER_SUBJECT[k] == subject),  # type: ignore[call-overload]
            None,
        )
        if k is None:
            return None
        out.append(_PLAIN[k])
    return out


@FUZZ
@given(edited_batch())
def test_a_batch_opens_whole_or_not_at_all(batch: tuple[list[object], list[str]]) -> None:
    recs, subjects = batch
    expected = _expected(recs, subjects)
    keys = [_KEYS[_SUBJECTS.index(s)] for s in subjects]
    try:
        out = record.decrypt_many(keys, subjects, recs, _CONTEXT)  # type: ignore[arg-type]
    except KeysplitError:
        assert expected is None
        return
    assert out == expected
