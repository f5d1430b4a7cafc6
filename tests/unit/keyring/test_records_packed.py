"""The one-buffer batch API (issue 23): ``encrypt_packed``/``decrypt_packed`` and ``Packed``.

Records sealed into one buffer are the bytes ``encrypt_many`` gives (same nonce, same
bytes), open with ``decrypt``/``decrypt_many`` and the other way round; every bad batch
raises what the list API raises; a failed tag anywhere hands out no plaintext.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_records_engine import NFC, NFD, DictKeys

from keysplit import IntegrityError, Keyring, KeysplitError, ShreddedError, record
from keysplit.keyring import Records
from keysplit.packed import Packed
from keysplit.record import PlaintextTooLargeError
from keysplit.rng import DeterministicRandom

CTX = {"table": "messages"}
SUBJECTS = ["a/1", "b/2", "a/1", NFC, "c/3"]
PLAIN = [b"one", b"", b"three" * 100, b"four", os.urandom(1024)]


def _twins(seed: str) -> tuple[Records, Records]:
    """Two engines over the same keys and the same nonce stream."""
    keys = DictKeys()
    return tuple(Records(keys, rng=DeterministicRandom(seed)) for _ in range(2))  # type: ignore[return-value]


# -- Packed ---------------------------------------------------------------------------------


def test_packed_is_a_read_only_sequence_of_views() -> None:
    src = bytearray(b"abcdef")
    p = Packed(src, [0, 1, 1, 6])
    src[:] = b"zzzzzz"  # the caller's buffer, copied: a checked record cannot change
    assert len(p) == 3 and p.nbytes == 6
    assert [bytes(v) for v in p] == [b"a", b"", b"bcdef"] == p.tolist()
    assert bytes(p[-1]) == b"bcdef" and [bytes(v) for v in p[1:]] == [b"", b"bcdef"]
    assert p.offsets.format == "q" and p.offsets.tolist() == [0, 1, 1, 6]
    for view in (p.buffer, p.offsets, p[0], next(iter(p))):
        assert view.readonly
    with pytest.raises(IndexError):
        p[3]
    assert p == Packed.of([b"a", b"", memoryview(b"bcdef")]) and p != Packed.of([b"abcdef"])
    assert "abc" not in repr(p)  # a Packed may hold plaintexts
    assert len(Packed.of([])) == 0 and Packed.of([]).offsets.tolist() == [0]


@pytest.mark.parametrize("offsets", [[], [1, 6], [0, 5], [0, 4, 2, 6], [0, 7]])
def test_packed_refuses_offsets_that_do_not_split_its_buffer(offsets: list[int]) -> None:
    with pytest.raises(ValueError, match="offsets"):
        Packed(b"abcdef", offsets)


def test_packed_feeds_arrow_and_numpy_without_a_copy() -> None:
    np = pytest.importorskip("numpy")
    p = Packed.of([b"x", b"yz", b""])
    assert np.frombuffer(p.offsets, np.int64).tolist() == [0, 1, 3, 3]
    pa = pytest.importorskip("pyarrow")
    arr = pa.Array.from_buffers(
        pa.large_binary(), len(p), [None, pa.py_buffer(p.offsets), pa.py_buffer(p.buffer)]
    )
    assert arr.to_pylist() == [b"x", b"yz", b""]


# -- the same records as the list API -------------------------------------------------------


@pytest.mark.parametrize("context", [None, CTX, [CTX, None, {"k": "v"}, CTX, None]], ids=repr)
def test_packed_records_are_encrypt_manys_bytes_and_open_either_way(context: Any) -> None:
    listed, packed = _twins("same-nonces")
    many = listed.encrypt_many(SUBJECTS, PLAIN, context)
    p = packed.encrypt_packed(SUBJECTS, PLAIN, context)
    assert p.tolist() == many  # same nonce -> same bytes
    assert p.offsets.tolist()[1:] == [sum(len(r) for r in many[: i + 1]) for i in range(5)]
    assert listed.decrypt_many(SUBJECTS, p.tolist(), context) == PLAIN
    assert listed.decrypt_many(SUBJECTS, list(p), context) == PLAIN  # memoryviews
    ctxs = context if isinstance(context, list) else [context] * 5
    for s, r, c, pt in zip(SUBJECTS, p, ctxs, PLAIN, strict=True):
        assert listed.decrypt(bytes(r), subject=s, context=c) == pt
    for recs in (many, p, Packed.of(many)):  # a list, or a Packed: no bytes per record
        assert packed.decrypt_packed(SUBJECTS, recs, context).tolist() == PLAIN
    nfd = [NFD if s == NFC else s for s in SUBJECTS]  # another spelling: found by commitment
    assert packed.decrypt_packed(nfd, p, context).tolist() == PLAIN


def test_unsealed_keyring_serves_the_packed_api(tmp_path: Path) -> None:
    kr, shares = Keyring.create(tmp_path / "kr", 2, ["a", "b", "c"])
    with kr.unseal([shares["a"], shares["b"]]) as ku:
        p = ku.encrypt_packed(SUBJECTS, PLAIN, CTX)
        assert ku.decrypt_many(SUBJECTS, p.tolist(), CTX) == PLAIN
        assert ku.decrypt_packed(SUBJECTS, p, CTX).tolist() == PLAIN
        assert ku.decrypt_packed(SUBJECTS, ku.encrypt_many(SUBJECTS, PLAIN), None).tolist() == PLAIN
        ku.shred("b/2")
        with pytest.raises(ShreddedError):
            ku.decrypt_many(SUBJECTS, p.tolist(), CTX)
        with pytest.raises(ShreddedError):
            ku.decrypt_packed(SUBJECTS, p, CTX)


def test_a_record_under_a_pre_nfc_aad_opens_as_decrypt_many_opens_it() -> None:
    """A record sealed before context keys were NFC-normalized (ASCII subject, its AAD
    with the key as given): the canonical tail fails, the whole path's legacy tails open
    it; the one-buffer path must not call it tampered."""
    keys = DictKeys()
    eng = Records(keys)
    ctx = {NFD: "v"}
    (key,) = keys.resolve(["s"], create=True)
    assert key is not None
    tail = record._exact_subject_part("s") + record._encode_context(ctx)
    old = record.seal(key, os.urandom(12), b"legacy", tail)
    assert eng.decrypt_many(["s"], [old], ctx) == [b"legacy"]
    assert eng.decrypt_packed(["s"], [old], ctx).tolist() == [b"legacy"]


# -- the same errors ------------------------------------------------------------------------


def _flip(rec: bytes, at: int) -> bytes:
    return rec[:at] + bytes([rec[at] ^ 1]) + rec[at + 1 :]


def _bad_batches(recs: list[bytes]) -> dict[str, tuple[list[str], list[Any], Any, str]]:
    """name -> (subjects, items, context, "enc" or "dec")."""
    two = SUBJECTS[:2]
    return {
        "wrong context": (SUBJECTS, recs, {"table": "other"}, "dec"),
        "tampered header": (SUBJECTS, [*recs[:4], _flip(recs[4], 0)], CTX, "dec"),
        "tampered commitment": (SUBJECTS, [*recs[:4], _flip(recs[4], 10)], CTX, "dec"),
        "tampered tag": (SUBJECTS, [*recs[:4], _flip(recs[4], len(recs[4]) - 1)], CTX, "dec"),
        "truncated": (SUBJECTS, [*recs[:4], recs[4][:60]], CTX, "dec"),
        "swapped": (SUBJECTS, [recs[1], recs[0], *recs[2:]], CTX, "dec"),
        "no key": (["nobody", *SUBJECTS[1:]], recs, CTX, "dec"),
        "not a record": (SUBJECTS, [*recs[:4], "text"], CTX, "dec"),
        "lengths": (two, recs, CTX, "dec"),
        "bad subject": (["", *SUBJECTS[1:]], recs, CTX, "dec"),
        "non-ascii, wrong context": ([NFD, *SUBJECTS[1:]], recs, {"x": "y"}, "dec"),
        "per-record contexts, one wrong": (SUBJECTS, recs, [CTX] * 4 + [None], "dec"),
        "contexts of the wrong count": (SUBJECTS, recs, [CTX] * 4, "dec"),
        "enc lengths": (two, PLAIN, CTX, "enc"),
        "enc bad subject": (["a\x00b", *SUBJECTS[1:]], PLAIN, CTX, "enc"),
        "enc str plaintext": (SUBJECTS, [*PLAIN[:4], "text"], CTX, "enc"),
        "enc context too large": (SUBJECTS, PLAIN, {f"k{i}": "v" for i in range(300)}, "enc"),
        "enc one string as subjects": ("abcde", PLAIN, CTX, "enc"),  # type: ignore[dict-item]
    }


BAD = list(_bad_batches([bytes(100)] * 5))


def _outcome(call: Callable[[], object]) -> tuple[type[BaseException], str]:
    with pytest.raises((KeysplitError, ValueError, TypeError)) as info:
        call()
    return type(info.value), str(info.value)


@pytest.mark.parametrize("case", BAD)
def test_a_bad_batch_raises_what_the_list_api_raises(case: str) -> None:
    eng = Records(DictKeys())
    recs = eng.encrypt_many(SUBJECTS, PLAIN, CTX)
    subjects, items, context, op = _bad_batches(recs)[case]
    if op == "enc":
        want = _outcome(lambda: eng.encrypt_many(subjects, items, context))
        assert _outcome(lambda: eng.encrypt_packed(subjects, items, context)) == want
        return
    want = _outcome(lambda: eng.decrypt_many(subjects, items, context))
    assert _outcome(lambda: eng.decrypt_packed(subjects, items, context)) == want
    if all(isinstance(r, bytes) for r in items):  # the same records as a Packed
        assert _outcome(lambda: eng.decrypt_packed(subjects, Packed.of(items), context)) == want
    if case == "wrong context":
        assert want[0] is IntegrityError


def test_an_oversized_plaintext_is_refused_before_anything_is_sealed() -> None:
    """encrypt_many's PlaintextTooLargeError (cryptography's length check, translated), said
    before the buffer is made (a bytes subclass that reports 3 GiB stands in for one)."""

    class Huge(bytes):
        def __len__(self) -> int:
            return 3 << 30

    with pytest.raises(PlaintextTooLargeError):
        Records(DictKeys()).encrypt_packed(["a", "b"], [b"ok", Huge(b"x")])


def test_plaintexts_of_records_opened_before_a_bad_tag_are_zeroed() -> None:
    """All-or-nothing in one buffer: the opener wrote the first records' plaintexts into
    its buffer before the last record's tag failed; that buffer must hold none of them
    (before: the authenticated ones and the failed one's unauthenticated bytes stayed)."""
    eng = Records(DictKeys())
    subjects = ["a", "a", "a"]
    recs = eng.encrypt_many(subjects, [b"A" * 64, b"B" * 64, b"C" * 64])
    recs[2] = _flip(recs[2], len(recs[2]) - 20)  # the ciphertext: decrypts, tag fails
    (key,) = eng.keys(["a"])
    assert key is not None
    outs: list[memoryview] = []

    class Spy:
        def __init__(self, aead: Any) -> None:
            self.aead = aead

        def decrypt_into(self, nonce: Any, data: Any, aad: Any, out: memoryview) -> None:
            outs.append(out)
            self.aead.decrypt_into(nonce, data, aad, out)

    key._aead = Spy(key._aead)  # type: ignore[assignment]
    open_ = eng.opener(subjects, recs)
    with pytest.raises(IntegrityError):
        open_(0, 3, b"lead")
    assert len(outs) == 3 and all(not any(bytes(v)) for v in outs)


# -- properties -----------------------------------------------------------------------------

_subject = st.sampled_from(["a", "b/2", NFC, NFD, "c" * 40])
_item = st.tuples(_subject, st.binary(max_size=300))
_context = st.sampled_from([None, CTX, {NFC: "v"}])


@given(batch=st.lists(_item, max_size=12), context=_context, per_record=st.booleans())
def test_packed_and_list_round_trips_agree(
    batch: list[tuple[str, bytes]], context: Any, per_record: bool
) -> None:
    subjects = [s for s, _ in batch]
    plain = [p for _, p in batch]
    ctx = [context] * len(batch) if per_record else context
    listed, packed = _twins("prop")
    many = listed.encrypt_many(subjects, plain, ctx)
    p = packed.encrypt_packed(subjects, plain, ctx)
    assert p.tolist() == many
    assert packed.decrypt_packed(subjects, p, ctx).tolist() == plain
    assert packed.decrypt_packed(subjects, many, ctx).tolist() == plain
    assert listed.decrypt_many(subjects, p.tolist(), ctx) == plain


@given(
    n=st.integers(1, 6),
    victim=st.integers(0, 5),
    at=st.integers(0, 2000),
    cut=st.booleans(),
)
def test_an_edited_record_in_a_packed_batch_opens_nothing(
    n: int, victim: int, at: int, cut: bool
) -> None:
    """Any one record flipped at one byte, or cut short, inside the one buffer: an error,
    never plaintext (the buffer's boundaries are the caller's; the records are not)."""
    eng = Records(DictKeys())
    subjects = [["a", "b", "a"][i % 3] for i in range(n)]
    recs = eng.encrypt_many(subjects, [bytes([i]) * (i * 37) for i in range(n)], CTX)
    victim %= n
    r = recs[victim]
    recs[victim] = r[: at % len(r)] if cut else _flip(r, at % len(r))
    with pytest.raises(KeysplitError):
        eng.decrypt_packed(subjects, Packed.of(recs), CTX)


def test_a_packed_buffer_whose_boundaries_move_a_record_opens_nothing() -> None:
    eng = Records(DictKeys())
    p = eng.encrypt_packed(["a", "b"], [b"x" * 10, b"y" * 10])
    off = p.offsets.tolist()
    moved: Sequence[int] = [0, off[1] + 1, off[2]]  # a byte of record 1 read as record 0's
    with pytest.raises(KeysplitError):
        eng.decrypt_packed(["a", "b"], Packed(p.buffer, moved))


def test_a_pooled_buffer_is_never_handed_out_while_a_packed_or_an_item_view_lives() -> None:
    """From 8 MiB a batch's buffer is a kept mapping (no page faults again per call); it
    goes to another batch only once nothing refers to it: not while its Packed, or one
    item's view of it, is alive (else a later batch would overwrite a caller's records)."""
    eng = Records(DictKeys())
    big = [os.urandom(1 << 20) for _ in range(9)]  # 9 MiB of records: pooled
    subjects = ["a", "b", "c"] * 3
    first = eng.encrypt_packed(subjects, big)
    kept = first.tolist()
    second = eng.encrypt_packed(subjects, big)  # first still alive: another mapping
    assert first.tolist() == kept and second.tolist() != kept
    item = first[4]
    del first
    opened = eng.decrypt_packed(subjects, second)  # first's view alive: still not reused
    assert bytes(item) == kept[4] and opened.tolist() == big
    del item, opened
    third = eng.encrypt_packed(subjects, big)  # may reuse the first's mapping now
    assert eng.decrypt_many(subjects, third.tolist()) == big
    assert eng.decrypt_many(subjects, second.tolist()) == big
