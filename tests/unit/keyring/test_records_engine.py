"""The one record engine over the one key seam: ``Records(datakeys)``.

A ``DataKeys`` written in a few lines here (what a fleet or a cluster implements) runs the
whole record API; nonces come from the RNG seam, never repeat across threads or a fork.
"""

from __future__ import annotations

import gc
import itertools
import math
import os
import threading
import types
import unicodedata
import weakref
from collections.abc import Sequence
from pathlib import Path

import pytest
from folded import Folded
from hypothesis import given, settings
from hypothesis import strategies as st

from keysplit import IntegrityError, Keyring, names, record
from keysplit.keyring import DataKeys, Records
from keysplit.record import DataKey, PlaintextTooLargeError
from keysplit.rng import DeterministicRandom


class DictKeys:
    """The smallest DataKeys: raw keys in a dict, exact spellings, create under NFC."""

    keyring_id = "00" * 16

    def __init__(self) -> None:
        self.raw: dict[str, bytes] = {}
        self.derived: dict[str, DataKey] = {}
        self.calls: list[tuple[str, int, bool]] = []

    def export(self, subjects: Sequence[str], *, create: bool) -> list[bytes | None]:
        self.calls.append(("export", len(subjects), create))
        for s in subjects:
            if create and s not in self.raw:
                assert unicodedata.is_normalized("NFC", s)  # the engine asks for NFC only
                self.raw[s] = os.urandom(16)
        return [self.raw.get(s) for s in subjects]

    def resolve(self, subjects: Sequence[str], *, create: bool) -> list[DataKey | None]:
        self.calls.append(("resolve", len(subjects), create))
        raws = self.export(subjects, create=create)
        self.calls.pop()
        out: list[DataKey | None] = []
        for s, r in zip(subjects, raws, strict=True):
            if r is not None and s not in self.derived:
                self.derived[s] = DataKey(r)
            out.append(self.derived.get(s))
        return out

    def close(self) -> None:
        self.raw.clear()
        self.derived.clear()


NFC = "Jos\u00e9/mail"
NFD = unicodedata.normalize("NFD", NFC)


def test_a_small_datakeys_runs_the_whole_record_api() -> None:
    dk = DictKeys()
    assert isinstance(dk, DataKeys)
    rec = Records(dk)
    one = rec.encrypt(b"hello", subject=NFD, context={"t": "m"})  # written under NFC
    assert set(dk.raw) == {NFC}
    assert rec.decrypt(one, subject=NFC, context={"t": "m"}) == b"hello"
    assert rec.decrypt(one, subject=NFD, context={"t": "m"}) == b"hello"
    many = rec.encrypt_many(["a/1", "a/2", "a/1"], [b"1", b"2", b"3"], {"t": "m"})
    assert dk.calls[-1] == ("resolve", 3, True)  # one call per batch, every occurrence
    assert rec.decrypt_many(["a/1", "a/2", "a/1"], many, {"t": "m"}) == [b"1", b"2", b"3"]
    assert dk.calls[-1] == ("resolve", 2, False)  # opening: each distinct subject once
    assert rec.export(["a/2", "nobody"]) == [dk.raw["a/2"], None]
    assert rec.export([NFD]) == [dk.raw[NFC]]  # spelling-aware, above the seam
    assert record.decrypt(DataKey(dk.raw["a/1"]), many[0], subject="a/1", context={"t": "m"})
    with pytest.raises(IntegrityError):
        rec.decrypt(many[0], subject="a/2", context={"t": "m"})  # moved to another subject
    with pytest.raises(IntegrityError):
        rec.decrypt_many(["nobody"], [many[0]], {"t": "m"})
    with pytest.raises(ValueError):
        rec.encrypt(b"x", subject="")


def test_single_and_batch_nonces_come_from_the_rng_seam() -> None:
    rec = Records(DictKeys(), rng=DeterministicRandom("seam"))
    expected = DeterministicRandom("seam").random_bytes(12 * 1024)
    first = rec.encrypt(b"x", subject="s")
    second = rec.encrypt(b"y", subject="s")
    assert first[38:50] == expected[:12] and second[38:50] == expected[12:24]
    batch_rec = Records(DictKeys(), rng=DeterministicRandom("batch"))
    out = batch_rec.encrypt_many(["a", "b", "a"], [b"1", b"2", b"3"])
    nonces = DeterministicRandom("batch").random_bytes(36)
    assert [r[38:50] for r in out] == [nonces[0:12], nonces[12:24], nonces[24:36]]


def _nonces_from_threads(rec: Records, threads: int, each: int) -> list[bytes]:
    """The nonces of ``each`` single-record encrypts in each of ``threads`` threads at once."""
    seen: list[list[bytes]] = [[] for _ in range(threads)]

    def work(j: int) -> None:
        for _ in range(each):
            seen[j].append(rec.encrypt(b"", subject="s")[38:50])

    running = [threading.Thread(target=work, args=(j,)) for j in range(threads)]
    for t in running:
        t.start()
    for t in running:
        t.join()
    return [n for part in seen for n in part]


def test_nonces_never_repeat_across_threads() -> None:
    rec = Records(DictKeys())
    rec.encrypt(b"warm", subject="s")
    every = _nonces_from_threads(rec, 6, 1500)
    assert len(every) == 9000 and len(set(every)) == 9000  # across several pool refills


def test_without_the_gil_every_nonce_is_handed_out_under_the_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(red team) The pool's lock-free path relies on ``next()`` of its iterator of slices
    being atomic, which the GIL gives; a free-threaded interpreter does not promise it, and
    a nonce handed out twice is a repeated GCM nonce. There (``_NoncePool.locked``, set from
    ``sys._is_gil_enabled()``) the pool never publishes its lock-free state, so
    ``Records.encrypt``'s inlined fast path always falls through, and every nonce, still
    from the RNG seam and in order, is handed out under the lock."""
    from keysplit.keyring.records import _NoncePool

    monkeypatch.setattr(_NoncePool, "locked", True)  # what a free-threaded build sets
    rec = Records(DictKeys(), rng=DeterministicRandom("nogil"))
    expected = DeterministicRandom("nogil").random_bytes(12 * 1024 * 2)
    got = [rec.encrypt(b"", subject="s")[38:50] for _ in range(1500)]  # across a refill
    assert got == [expected[12 * i : 12 * i + 12] for i in range(1500)]
    assert next(rec._nonces.state, None) is None  # never the lock-free path
    every = got + _nonces_from_threads(rec, 4, 1000)
    assert len(set(every)) == len(every) == 5500


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_never_reuses_the_parents_nonces() -> None:
    rec = Records(DictKeys())
    rec.encrypt(b"fills the pool", subject="s")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next nonce, to the parent
        try:
            os.write(w, rec.encrypt(b"child", subject="s")[38:50])
        finally:
            os._exit(0)
    os.close(w)
    mine = rec.encrypt(b"parent", subject="s")[38:50]
    theirs = os.read(r, 12)
    os.close(r)
    os.waitpid(pid, 0)
    assert len(theirs) == 12 and theirs != mine


class CachedDictKeys(DictKeys):
    """DictKeys with the optional single-record fast path (``cached_key``)."""

    def __init__(self) -> None:
        super().__init__()
        self.serve = True

    def cached_key(self, subject: str) -> DataKey | None:
        self.calls.append(("cached_key", 1, False))
        return self.derived.get(subject) if self.serve else None


class ViewDictKeys(CachedDictKeys):
    """CachedDictKeys with ``cached_view`` too (as LocalDataKeys has): the engine's first
    single-record path, the key's own memo of its subject's AAD tail."""

    def __init__(self) -> None:
        super().__init__()
        self.lease = types.SimpleNamespace(_deadline=math.inf)
        self.cached_view = (self._get, self.lease)

    def _get(self, subject: str) -> DataKey | None:
        self.calls.append(("view", 1, False))
        return self.derived.get(subject) if self.serve else None


def test_the_first_path_takes_a_tail_left_on_the_key_of_the_subject_as_given() -> None:
    """Over a ``cached_view`` the engine leaves a subject's last (context, AAD tail) on
    its key and reads it back after the one cache lookup: the context is still compared
    (a mutated mapping, no context, another subject's key all refuse), only the key of
    the exact canonical spelling carries a tail (a key stored under another spelling never
    does, so a subject given another way never reads a tail made for its NFC form), and
    a lapsed lease or a key the cache no longer serves leaves the first path."""
    dk = ViewDictKeys()
    rec = Records(dk)
    ctx = {"t": "m"}
    one = rec.encrypt(b"1", subject="a", context=ctx)
    for _ in range(2):
        assert rec.decrypt(one, subject="a", context=ctx) == b"1"
    key = dk.derived["a"]
    assert key._memo == ({"t": "m"}, record.encode_aad("a", ctx))
    dk.calls.clear()
    assert rec.decrypt(one, subject="a", context={"t": "m"}) == b"1"
    two = rec.encrypt(b"2", subject="a", context=ctx)
    assert dk.calls == [("view", 1, False)] * 2  # one lookup each, nothing else
    ctx["t"] = "other"
    with pytest.raises(IntegrityError):
        rec.decrypt(two, subject="a", context=ctx)
    with pytest.raises(IntegrityError):
        rec.decrypt(two, subject="a")
    b = rec.encrypt(b"b", subject="b", context={"t": "m"})
    for _ in range(2):
        assert rec.decrypt(b, subject="b", context={"t": "m"}) == b"b"
    with pytest.raises(IntegrityError):
        rec.decrypt(b, subject="a", context={"t": "m"})  # another subject's record
    # spellings: NFD given, NFC key and tail; a key stored under NFD never gets a tail
    nfd = rec.encrypt(b"3", subject=NFD)
    for _ in range(3):
        assert rec.decrypt(nfd, subject=NFD) == b"3"
    assert dk.derived[NFC]._memo is None  # left only by calls that name NFC itself
    dk.raw[NFD] = os.urandom(16)  # a legacy key under the NFD spelling
    legacy = record.encrypt(DataKey(dk.raw[NFD]), b"4", subject=NFD)
    for _ in range(3):
        assert rec.decrypt(legacy, subject=NFD) == b"4"
        assert rec.decrypt(nfd, subject=NFC) == b"3"
    assert dk.derived[NFD]._memo is None and dk.derived[NFC]._memo is not None
    dk.lease._deadline = 0.0  # the lease lapsed: the first path serves nothing
    dk.calls.clear()
    assert rec.decrypt(one, subject="a", context={"t": "m"}) == b"1"
    assert ("view", 1, False) not in dk.calls and ("cached_key", 1, False) in dk.calls
    dk.lease._deadline = math.inf
    dk.serve = False  # the cache no longer has it: the full path decides
    dk.calls.clear()
    assert rec.decrypt(one, subject="a", context={"t": "m"}) == b"1"
    assert [c[0] for c in dk.calls] == ["view", "cached_key", "resolve"]


def test_single_record_memo_follows_the_context_and_the_seam() -> None:
    """The per-subject memo of the single-record paths compares the context by value (a
    mutated mapping is a new context) and asks ``cached_key`` for the canonical spelling;
    ``None`` from it means resolve, as does a DataKeys without it."""
    dk = CachedDictKeys()
    rec = Records(dk)
    ctx = {"t": "m"}
    one = rec.encrypt(b"1", subject="a/1", context=ctx)
    assert rec.decrypt(one, subject="a/1", context=ctx) == b"1"
    assert dk.calls[-1] == ("cached_key", 1, False)  # served without resolve
    ctx["t"] = "other"  # the caller changes its mapping: the memo must not keep the old tail
    with pytest.raises(IntegrityError):
        rec.decrypt(one, subject="a/1", context=ctx)
    two = rec.encrypt(b"2", subject="a/1", context=ctx)
    assert rec.decrypt(two, subject="a/1", context={"t": "other"}) == b"2"
    with pytest.raises(IntegrityError):
        rec.decrypt(two, subject="a/1", context={"t": "m"})
    with pytest.raises(IntegrityError):
        rec.decrypt(two, subject="a/1")  # no context is another context
    assert rec.decrypt(one, subject="a/1", context={"t": "m"}) == b"1"
    nfd = rec.encrypt(b"3", subject=NFD)
    assert ("cached_key", 1, False) in dk.calls and NFD not in dk.derived  # NFC asked
    assert rec.decrypt(nfd, subject=NFD) == rec.decrypt(nfd, subject=NFC) == b"3"
    dk.serve = False  # the DataKeys declines (e.g. a lapsed lease): the full path decides
    dk.calls.clear()
    assert rec.decrypt(one, subject="a/1", context={"t": "m"}) == b"1"
    assert rec.encrypt(b"4", subject="a/1")
    assert [c[0] for c in dk.calls] == ["cached_key", "resolve", "cached_key", "resolve"]
    with pytest.raises(TypeError):
        rec.encrypt(b"x", subject=["a/1"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        rec.decrypt(one, subject="a/1", context=[("t", "m")])  # type: ignore[arg-type]


def test_batches_ask_every_occurrence_only_of_a_datakeys_that_counts_them() -> None:
    """``resolve(create=True)`` gets every occurrence unless the DataKeys says it counts
    nothing (``counts_records = False``, as LocalDataKeys does); opening asks once each."""
    counting, plain = DictKeys(), DictKeys()
    plain.counts_records = False  # type: ignore[attr-defined]
    subjects = ["a", "b", "a", "a"]
    for dk, sealed in ((counting, 4), (plain, 2)):
        rec = Records(dk)
        out = rec.encrypt_many(subjects, [b"1", b"2", b"3", b"4"])
        assert dk.calls[-1] == ("resolve", sealed, True)
        assert rec.decrypt_many(subjects, out) == [b"1", b"2", b"3", b"4"]
        assert dk.calls[-1] == ("resolve", 2, False)


def test_one_string_is_not_a_batch_of_subjects() -> None:
    """(red team) A subject where the batch calls take a list was iterated: its characters
    became subjects, and data_keys("user-42", create=True) created seven data keys."""
    dk = DictKeys()
    rec = Records(dk)
    with pytest.raises(TypeError, match="not one string"):
        rec.keys("ab", create=True)
    with pytest.raises(TypeError, match="not one string"):
        rec.export("ab", create=True)
    with pytest.raises(TypeError, match="not one string"):
        rec.encrypt_many("ab", [b"1", b"2"])
    with pytest.raises(TypeError, match="not one string"):
        rec.decrypt_many("ab", rec.encrypt_many(["a", "b"], [b"1", b"2"]))
    assert set(dk.raw) == {"a", "b"}  # only the real batch made keys


def test_a_batch_with_subjects_and_items_swapped_names_the_order() -> None:
    """``decrypt(record, subject=)`` takes the record first, the batch calls the subjects:
    swapped, the records met the subject check ("subject must be a str"), which named
    neither the argument nor the order. Nothing is sealed or asked of the keys."""
    dk = DictKeys()
    rec = Records(dk)
    records = rec.encrypt_many(["a", "b"], [b"1", b"2"])
    calls = len(dk.calls)
    order = r"subjects must be str, and come first: encrypt_many\(subjects, plaintexts\)"
    with pytest.raises(TypeError, match=order):
        rec.encrypt_many([b"1", b"2"], ["a", "b"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"decrypt_many\(subjects, records\)"):
        rec.decrypt_many(records, ["a", "b"])
    with pytest.raises(TypeError, match=order):
        rec.decrypt_many((memoryview(records[0]),), ("a",))  # type: ignore[arg-type]
    assert len(dk.calls) == calls


def test_decrypt_many_takes_the_bytes_like_records_decrypt_takes(tmp_path: Path) -> None:
    """(red team) ``decrypt`` opened a memoryview record, ``decrypt_many`` refused it with
    "records must be bytes" (a database driver may hand a column back as a memoryview);
    ASCII and non-ASCII subjects alike."""
    kr, shares = Keyring.create(tmp_path / "kr", 2, ["a", "b", "c"])
    with kr.unseal([shares["a"], shares["b"]]) as u:
        subjects = ["s/1", "Jos\u00e9"]
        recs = u.encrypt_many(subjects, [b"one", b"two"])
        for wrap in (memoryview, bytearray):
            assert u.decrypt_many(subjects, [wrap(r) for r in recs]) == [b"one", b"two"]  # type: ignore[misc]
            assert u.decrypt(wrap(recs[1]), subject=subjects[1]) == b"two"  # type: ignore[arg-type]


class _AnyText:
    """Not a ``str``: equal to anything (its ``__eq__`` says so), hashed as ``text`` is."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    def __hash__(self) -> int:
        return hash(self.text)


@pytest.mark.parametrize("where", ["subject", "context key", "context value"])
def test_an_object_equal_to_any_text_is_refused_not_matched_to_a_memo_entry(
    tmp_path: Path, where: str
) -> None:
    """(stop 40, found) The single-record memos compared what was given with ``==``: an
    object (not a ``str``) whose ``__eq__`` calls itself equal to any text matched the
    memo's entry. As a subject, ``encrypt`` sealed under another subject's key ("alice"'s);
    in a context, ``encrypt`` bound the record to the memo's context and ``decrypt``
    opened a record of that context. Now each is refused as on a first call (the engine
    with a key cache, so ``decrypt``'s memo path is the one taken)."""
    kr, shares = Keyring.create(tmp_path / "kr", 2, ["a", "b", "c"])
    with kr.unseal([shares["a"], shares["b"]]) as u:
        ctx = {"k": "acme"}
        rec = u.encrypt(b"alice's", subject="alice", context=ctx)
        assert u.decrypt(rec, subject="alice", context=ctx) == b"alice's"  # memo filled
        subject: object = _AnyText("alice") if where == "subject" else "alice"
        given: object = {
            "subject": ctx,
            "context key": {_AnyText("k"): "acme"},
            "context value": {"k": _AnyText("acme")},
        }[where]
        message = f"{where} must be a str, not _AnyText"
        with pytest.raises(TypeError, match=message):
            u.encrypt(b"x", subject=subject, context=given)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=message):
            u.decrypt(rec, subject=subject, context=given)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=message):  # a fresh engine says the same
            Records(u.records.datakeys).encrypt(b"x", subject=subject, context=given)  # type: ignore[arg-type]
        assert u.decrypt(rec, subject="alice", context=ctx) == b"alice's"


def test_a_subject_subclass_never_decides_which_key_a_plain_subject_gets() -> None:
    """(found with the above) The subject memo kept a ``str`` subclass as its key: after
    ``Folded("Alice")`` (an ORM's case-insensitive text), a plain "alice" found its entry
    and was sealed under "Alice"'s key, bound to "Alice": shredding "alice" would not have
    reached that record. The memo is keyed by plain ``str`` only."""
    dk = DictKeys()
    eng = Records(dk)
    folded = eng.encrypt(b"1", subject=Folded("Alice"))
    plain = eng.encrypt(b"2", subject="alice")
    assert set(dk.raw) == {"Alice", "alice"}
    assert record.decrypt(DataKey(dk.raw["alice"]), plain, subject="alice") == b"2"
    assert record.decrypt(DataKey(dk.raw["Alice"]), folded, subject="Alice") == b"1"
    assert eng.decrypt(plain, subject="alice") == b"2"
    with pytest.raises(IntegrityError):
        eng.decrypt(folded, subject="alice")


@pytest.mark.parametrize("bad", ["text", "t\u00e9xt", 5, None], ids=repr)
def test_sealer_refuses_a_plaintext_that_is_not_bytes_up_front(bad: object) -> None:
    """``sealer`` promises that whatever can fail fails when it is made: a str plaintext
    (``len`` counts characters) or a memoryview of 4-byte items (``len`` counts items)
    was sized by that count and failed inside ``seal``, mid-answer; now the first is a
    ``TypeError`` at once and the second is sealed as its 64 bytes."""
    eng = Records(DictKeys())
    with pytest.raises(TypeError, match="plaintext"):
        eng.sealer(["a", "b"], [b"ok", bad], None)  # type: ignore[list-item]
    pts = [b"ok", bytearray(b"fine"), memoryview(bytes(range(64))).cast("I")]
    seal = eng.sealer(["a", "b", "a"], pts, {"c": "1"})
    buf = bytes(seal(0, 3, b""))
    lens = [len(bytes(p)) + record.OVERHEAD for p in pts]
    assert len(buf) == sum(lens)
    recs = [buf[sum(lens[:i]) : sum(lens[: i + 1])] for i in range(3)]
    assert eng.decrypt_many(["a", "b", "a"], recs, {"c": "1"}) == [bytes(p) for p in pts]


def test_sealer_refuses_a_plaintext_over_the_record_limit_when_it_is_made() -> None:
    """(review, stop 36) ``sealer`` sized its answer buffer and left a plaintext over
    2^31 - 1 bytes to fail inside ``seal`` (``encrypt_into``), which promises it can no
    longer fail, after allocating the whole buffer. It now raises PlaintextTooLargeError
    when made. (A bytes subclass that reports 3 GiB stands in for one that holds them.)"""

    class Huge(bytes):
        def __len__(self) -> int:
            return 3 << 30

    eng = Records(DictKeys())
    with pytest.raises(PlaintextTooLargeError):
        eng.sealer(["a", "b"], [b"ok", Huge(b"x")], None)
    assert bytes(eng.sealer(["a"], [b"ok"], None)(0, 1, b""))  # the limit only


class CheckedKeys(DictKeys):
    """A DataKeys that fails the test if the engine hands it a subject it should have
    refused (the seam's contract: the engine checks subjects, implementations do not)."""

    def export(self, subjects: Sequence[str], *, create: bool) -> list[bytes | None]:
        for s in subjects:
            assert 0 < len(s.encode("utf-8")) <= names.MAX_SUBJECT_BYTES, "bad subject at the seam"
            assert "\x00" not in s, "NUL at the seam"
        return super().export(subjects, create=create)


@pytest.mark.parametrize(
    "bad", ["", "a" * (names.MAX_SUBJECT_BYTES + 1), "a\x00b"], ids=["empty", "long", "nul"]
)
def test_a_bad_subject_in_a_batch_never_reaches_the_data_keys(bad: str) -> None:
    """(red team, library round) The batch paths checked an ASCII subject only when they
    encoded its AAD, after asking the DataKeys for its key: an empty or overlong subject
    reached the seam (with ``create``, a key was made for it) before the ValueError."""
    rec = record.encrypt(DataKey(bytes(16)), b"x", subject="ok")
    calls = [
        lambda e: e.encrypt_many([bad, "ok"], [b"x", b"y"]),
        lambda e: e.encrypt_many([bad, bad], [b"x", b"y"]),
        lambda e: e.encrypt_many([bad], [b"x"], [None]),
        lambda e: e.sealer([bad], [b"x"]),
        lambda e: e.keys([bad], create=True),
        lambda e: e.keys(["ok", bad]),
        lambda e: e.export([bad], create=True),
        lambda e: e.decrypt_many(["ok", bad], [rec, rec]),
        lambda e: e.opener([bad], [rec]),
    ]
    for call in calls:
        keys = CheckedKeys()
        with pytest.raises(ValueError, match="subject must"):
            call(Records(keys))
        assert keys.raw == {}


def test_a_shared_memo_keeps_neither_the_engine_that_made_it_nor_its_key_source_alive() -> None:
    """Engines share their memos (a Dask worker's engine per job shares the previous
    job's). The batch AAD tail memo held a bound method of the engine that made it, so a
    finished job's engine and its key source (key service token, ``serve_keys`` authkey)
    stayed alive as long as a later engine shared the memo."""
    dk = DictKeys()
    rec = Records(dk)
    rec.encrypt_many(["a", "b", "a"], [b"1", b"2", b"3"], {"t": "m"})
    later = Records(DictKeys())
    later.share_encodings(rec)
    source = weakref.ref(dk)  # an engine holds its source (Records has no weakref slot)
    del rec, dk
    gc.collect()
    assert source() is None
    sealed = later.encrypt_many(["a", "c"], [b"4", b"5"], {"t": "m"})  # the memo still works
    assert later.decrypt_many(["a", "c"], sealed, {"t": "m"}) == [b"4", b"5"]


def test_batch_tails_follow_the_context_and_are_shared_with_a_job_engine() -> None:
    """A batch's AAD tails are memoized per context (one context at a time): a batch under
    another context, a mutated mapping or no context seals under its own tail, and an
    engine that shares another's encodings reads the same memo."""
    dk = DictKeys()
    rec = Records(dk)
    ctx = {"t": "m"}
    subjects = ["a", "b", "a"]
    one = rec.encrypt_many(subjects, [b"1", b"2", b"3"], ctx)
    ctx["t"] = "other"
    two = rec.encrypt_many(subjects, [b"4", b"5", b"6"], ctx)
    three = rec.encrypt_many(subjects, [b"7", b"8", b"9"])
    other = Records(dk)
    other.share_encodings(rec)
    for engine in (rec, other):
        assert engine.decrypt_many(subjects, one, {"t": "m"}) == [b"1", b"2", b"3"]
        assert engine.decrypt_many(subjects, two, {"t": "other"}) == [b"4", b"5", b"6"]
        assert engine.decrypt_many(subjects, three) == [b"7", b"8", b"9"]
        for recs, wrong in ((one, {"t": "other"}), (two, None), (three, {"t": "m"})):
            with pytest.raises(IntegrityError):
                engine.decrypt_many(subjects, recs, wrong)
        assert [
            engine.decrypt(r, subject=s, context={"t": "m"})
            for s, r in zip(subjects, one, strict=True)
        ] == [b"1", b"2", b"3"]


_SPELLINGS = ["acme", "Acme", "ACME"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(_SPELLINGS),  # the context value's text
            st.sampled_from(["k", "K"]),  # the context key's text
            st.booleans(),  # value a case-folding str subclass
            st.booleans(),  # key a case-folding str subclass
            st.booleans(),  # encrypt_many rather than encrypt
        ),
        min_size=1,
        max_size=12,
    )
)
@pytest.mark.parametrize("source", [DictKeys, ViewDictKeys])
def test_each_record_is_bound_to_the_context_text_it_was_given_whatever_str_type(
    source: type[DictKeys], picks: list[tuple[str, str, bool, bool, bool]]
) -> None:
    """The engine remembers encoded contexts (per subject, the last context with its AAD
    tail; per batch context, its encoding) and compared a new context with a remembered
    one by ``==``/``hash``: a ``str`` subclass's own ``__eq__`` (one that ignores case) made
    ``{"k": "ACME"}`` equal to the remembered ``{"k": "acme"}``, so the record was sealed
    with the other context's text in its AAD (and ``decrypt`` opened a record bound to
    ``acme`` for ``ACME``). Each record must carry the text it was given, as the record
    API (``keysplit.record``) seals it, whichever path sealed it."""
    dk = source()
    eng = Records(dk)
    sealed = []
    for value, key, fold_value, fold_key, many in picks:
        ctx = {(Folded(key) if fold_key else key): (Folded(value) if fold_value else value)}
        if many:
            (rec,) = eng.encrypt_many(["s"], [b"pt"], ctx)
        else:
            rec = eng.encrypt(b"pt", subject="s", context=ctx)
        sealed.append((rec, ctx, {key: value}))
    k = DataKey(dk.raw["s"])
    for rec, ctx, text in sealed:
        assert record.decrypt(k, rec, subject="s", context=text) == b"pt"
        assert eng.decrypt(rec, subject="s", context=ctx) == b"pt"
        assert eng.decrypt_many(["s"], [rec], ctx) == [b"pt"]
        for other_key, other_value, folded in itertools.product("kK", _SPELLINGS, (False, True)):
            if {other_key: other_value} == text:
                continue  # (plain str: compared by text)
            other = {other_key: Folded(other_value) if folded else other_value}
            with pytest.raises(IntegrityError):
                eng.decrypt(rec, subject="s", context=other)


def test_the_single_record_memo_reuses_the_batch_memos_tail() -> None:
    """One AAD tail object per subject and context for both paths (issue 23: a second copy
    of 10^4 tails cost the single-record row ~1 % of its rate); the records each path seals
    open on the other, and a context the batch memo does not hold gets its own tail."""
    rec = Records(DictKeys())
    ctx = {"t": "m"}
    subjects = ["a", NFD, "a"]
    batch = rec.encrypt_many(subjects, [b"1", b"2", b"3"], ctx)
    single = [
        rec.encrypt(p, subject=s, context=ctx)
        for s, p in zip(subjects, [b"4", b"5", b"6"], strict=True)
    ]
    memo = rec._batch_tails[record.context_part(ctx)]
    for s in subjects:
        assert rec._tails[s][2] is memo[s]
    assert rec.decrypt_many(subjects, single, ctx) == [b"4", b"5", b"6"]
    assert [
        rec.decrypt(r, subject=s, context=ctx) for s, r in zip(subjects, batch, strict=True)
    ] == [
        b"1",
        b"2",
        b"3",
    ]
    other = rec.encrypt(b"7", subject="a", context={"t": "n"})  # not the memo's context
    assert rec._tails["a"][2] == record.encode_aad("a", {"t": "n"})
    assert rec.decrypt_many(["a"], [other], {"t": "n"}) == [b"7"]
    with pytest.raises(IntegrityError):
        rec.decrypt(other, subject="a", context=ctx)


@pytest.mark.parametrize(
    "given",
    [{Folded("K"): "acme"}, {"k": Folded("ACME")}, {Folded("K"): Folded("Acme")}],
    ids=["folded key", "folded value", "both"],
)
@pytest.mark.parametrize("source", [DictKeys, ViewDictKeys])
def test_a_memo_hit_compares_a_folded_key_or_value_by_its_text(
    source: type[DictKeys], given: dict[str, str]
) -> None:
    """A memo hit is decided by text only (see ``Records._tail``): a case-folding key or
    value matched the memo's text, and the record was bound to ``{"k": "acme"}`` instead
    of what was given. The key's memo (the first path over a ``cached_view``) likewise."""
    dk = source()
    eng = Records(dk)
    first = eng.encrypt(b"1", subject="s", context={"k": "acme"})  # fills the memo
    assert eng.decrypt(first, subject="s", context={"k": "acme"}) == b"1"
    rec = eng.encrypt(b"2", subject="s", context=given)
    text = {str.__str__(k): str.__str__(v) for k, v in given.items()}
    key = DataKey(dk.raw["s"])
    assert record.decrypt(key, rec, subject="s", context=text) == b"2"
    with pytest.raises(IntegrityError):
        record.decrypt(key, rec, subject="s", context={"k": "acme"})
    with pytest.raises(IntegrityError):
        eng.decrypt(first, subject="s", context=given)  # nor opens the memo's record
    assert eng.decrypt(rec, subject="s", context=given) == b"2"


@pytest.mark.parametrize(
    "given",
    [
        {Folded("K"): "b"},
        {"k": Folded("B")},
        {_AnyText("k"): "b"},
        {"k": _AnyText("b")},
        types.MappingProxyType({"k": Folded("B")}),
    ],
    ids=["folded key", "folded value", "any-text key", "any-text value", "not a dict"],
)
def test_the_memo_check_holds_when_the_keys_memo_holds_another_context(given: object) -> None:
    """(stop 42, rec11) The first path's check of the context (text only) is handed down
    to the subject's memo, not run again there. Here the two memos disagree (the key's
    holds ``{"k": "a"}``, the subject's ``{"k": "b"}``: a caller alternating contexts), so
    the first path checks, misses, and the subject's memo is consulted with its verdict: a
    case-folding key or value, an object equal to any text, or a mapping that is not a
    ``dict`` must not take the ``{"k": "b"}`` entry (bound to, or opening, its text)."""
    dk = ViewDictKeys()
    eng = Records(dk)
    a, b = {"k": "a"}, {"k": "b"}
    eng.encrypt(b"0", subject="s", context=a)  # the subject's memo: a
    eng.encrypt(b"0", subject="s", context=a)  # a hit there: left on the key
    rec_b = eng.encrypt(b"1", subject="s", context=b)  # the key's memo a, the subject's b
    key = dk.derived["s"]
    assert key._memo is not None and key._memo[0] == a
    assert eng._tails["s"][0] == b
    if any(isinstance(x, _AnyText) for kv in given.items() for x in kv):  # type: ignore[attr-defined]
        with pytest.raises(TypeError, match="must be a str, not _AnyText"):
            eng.encrypt(b"2", subject="s", context=given)  # type: ignore[arg-type]
        assert key._memo[0] == a and eng._tails["s"][0] == b  # as they were
        with pytest.raises(TypeError, match="must be a str, not _AnyText"):
            eng.decrypt(rec_b, subject="s", context=given)  # type: ignore[arg-type]
        return
    rec = eng.encrypt(b"2", subject="s", context=given)  # type: ignore[arg-type]
    text = {str.__str__(k): str.__str__(v) for k, v in given.items()}  # type: ignore[attr-defined]
    assert record.decrypt(key, rec, subject="s", context=text) == b"2"
    with pytest.raises(IntegrityError):
        record.decrypt(key, rec, subject="s", context=b)
    key._memo = (a, record.encode_aad("s", a))  # the memos disagree again
    eng._tails["s"] = (b, "s", record.encode_aad("s", b))
    with pytest.raises(IntegrityError):
        eng.decrypt(rec_b, subject="s", context=given)  # type: ignore[arg-type]


def test_two_contexts_in_turn_per_subject_stay_off_the_full_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(stop 42, rec11) A caller alternating two contexts per subject found the other one
    in both memos every time (the subject's memo was overwritten by each call, the key's
    only ever filled from a hit in it), so every call took the full path: ``_tail`` to
    seal, ``resolve`` to open, ~4x the steady state's CPU. The two memos now swap and
    hold one context each; every record is still bound to, and opened under, its own."""
    dk = ViewDictKeys()
    eng = Records(dk)
    a, b = {"t": "a"}, {"t": "b"}
    for _ in range(2):  # warm: both memos filled
        ra = eng.encrypt(b"A", subject="s", context=a)
        rb = eng.encrypt(b"B", subject="s", context=b)
    with monkeypatch.context() as m:
        m.setattr(dk, "resolve", lambda *_a, **_k: pytest.fail("resolve on a memo path"))
        m.setattr(Records, "_tail", lambda *_a, **_k: pytest.fail("the full path"))
        for _ in range(3):
            ra = eng.encrypt(b"A", subject="s", context={"t": "a"})
            rb = eng.encrypt(b"B", subject="s", context={"t": "b"})
            assert eng.decrypt(ra, subject="s", context={"t": "a"}) == b"A"
            assert eng.decrypt(rb, subject="s", context={"t": "b"}) == b"B"
    key = DataKey(dk.raw["s"])
    assert record.decrypt(key, ra, subject="s", context=a) == b"A"
    assert record.decrypt(key, rb, subject="s", context=b) == b"B"
    for rec, wrong in ((ra, b), (rb, a), (ra, None), (rb, {"t": "c"})):
        with pytest.raises(IntegrityError):
            eng.decrypt(rec, subject="s", context=wrong)
