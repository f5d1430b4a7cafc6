"""The record engine: records over any :class:`~keysplit.keyring.datakeys.DataKeys`.

Tink's ``KmsEnvelopeAead(remote: Aead)`` shape: :class:`Records` owns every record
decision (subject check, which spelling's key opens a record, nonces, the AAD) and asks
its one seam, ``DataKeys.resolve``, only for keys. The same engine runs in
:class:`~keysplit.keyring.UnsealedKeyring` (over the keys held in this process), in
``keysplit.Client`` when it caches keys (over the key service's ``datakey`` endpoint),
in the key service's ``datakey`` endpoint (:meth:`Records.export`), and on Dask job
workers (over the keys handed to them). A fleet or a threshold cluster is one more
``DataKeys``; nothing here changes.

Subjects (:mod:`keysplit.names`): written under the NFC spelling
(:func:`~keysplit.names.check_subject`); read under every spelling a key may be stored
under (:func:`~keysplit.names.subject_spellings`), the key chosen by the commitment the
record's header carries. ASCII subjects (their own NFC form) take none of those detours.

Nonces come from the keyring's RNG seam: a batch draws ``12 * n`` bytes in one call; a
single record takes the next 12 bytes of a pool drawn ahead in bulk (one draw per 1,024
records, handed out by one C-level iterator), discarded in a forked child
(``os.register_at_fork``) so parent and child never share a nonce.
"""

from __future__ import annotations

import itertools
import operator
import os
import struct
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import ClassVar, Protocol

from cryptography.exceptions import InvalidTag

from .. import names
from .. import record as fmt
from ..errors import FormatError, IntegrityError, KeysplitError
from ..packed import Packed, _offsets_of, _output
from ..record import DataKey
from ..rng import RandomSource, default_rng
from .datakeys import DataKeys

__all__ = ["Records"]

Context = Mapping[str, str] | Sequence[Mapping[str, str] | None] | None
_NO_KEY = "the subject has no data key here (never used, shredded, or sealed under another keyring)"
_POOL_NONCES = 1024
_SUBJECT_CACHE = 1 << 16
_CONTEXT_CACHE = 256
_U32 = struct.Struct(">I")
_PLAIN_CONTEXT = (dict, type(None))  # the contexts the single-record memo keeps
_SPLIT_POOL = struct.Struct(f"{fmt.NONCE_SIZE}s" * _POOL_NONCES).unpack  # a pool's nonces
_SPENT: Iterator[bytes] = iter(())  # a pool state with no nonce left


_RECORD_PREFIX = fmt.MAGIC + bytes([fmt.VERSION, fmt.SUITE_AES128GCM_HKDF_COMMIT])
_OVERHEAD, _HEADER, _PREFIX = fmt.OVERHEAD, fmt.HEADER_SIZE, fmt.PREFIX_SIZE  # one load each
_mono = time.monotonic


class _Lease(Protocol):
    """What the engine reads of a ``cached_view``'s lease: the monotonic time its cached
    keys stop being served (``keysplit.keyring.fleet.FleetMember``; 0 once closed)."""

    _deadline: float


class _NoLease:
    """The lease of a :class:`DataKeys` without ``cached_view``: never valid, so the
    engine's first path (the key's memo) is skipped and the memo is never filled."""

    __slots__ = ("_deadline",)

    def __init__(self) -> None:
        self._deadline = 0.0


_NO_LEASE = _NoLease()


def _no_cached_key(subject: str) -> DataKey | None:
    """``cached_key`` of a :class:`DataKeys` without one: always the full path."""
    return None


class _NoncePool:
    """Nonces for single records, drawn ``_POOL_NONCES`` at a time from the RNG seam.

    Thread-safe without a lock on the hot path: a pool state is an iterator over the pool's
    nonces (a tuple of 12-byte ``bytes``, split in one ``struct`` call), read in one
    attribute load, and ``next(state)`` advances a tuple iterator, one C step that runs no
    Python code (atomic under the GIL), so each nonce is handed out once: two threads never
    get the same nonce, even across a refill. :meth:`Records.encrypt` inlines it as one
    call (an index, a bound check and a slice per record cost ~100 ns more, issue 23).
    Without the GIL (a free-threaded build) that atomicity is not promised and a nonce
    handed out twice is a repeated GCM nonce: there the pool never publishes a state with
    nonces in it (so the fast path always falls through to :meth:`next`) and hands every
    nonce out under its lock.
    """

    _all: ClassVar[weakref.WeakSet[_NoncePool]] = weakref.WeakSet()
    locked: ClassVar[bool] = not getattr(sys, "_is_gil_enabled", lambda: True)()
    """True on a free-threaded interpreter: every nonce under the lock (see above)."""

    def __init__(self, rng: RandomSource) -> None:
        self._rng = rng
        self.state: Iterator[bytes] = _SPENT
        self._locked_state: tuple[bytes, int] | None = None
        self._lock = threading.Lock()
        _NoncePool._all.add(self)

    def next(self) -> bytes:
        if self.locked:
            return self._next_locked()
        state = self.state
        nonce = next(state, None)
        if nonce is not None:
            return nonce
        with self._lock:
            if self.state is state:  # nobody refilled meanwhile
                pool = self._rng.random_bytes(fmt.NONCE_SIZE * _POOL_NONCES)
                self.state = iter(_SPLIT_POOL(pool))
        return self.next()

    def _next_locked(self) -> bytes:
        with self._lock:
            held = self._locked_state
            if held is None or held[1] >= _POOL_NONCES:
                held = (self._rng.random_bytes(fmt.NONCE_SIZE * _POOL_NONCES), 0)
            pool, i = held
            self._locked_state = (pool, i + 1)
        return pool[fmt.NONCE_SIZE * i : fmt.NONCE_SIZE * i + fmt.NONCE_SIZE]

    @classmethod
    def _forget_all(cls) -> None:
        """In a forked child: drop every pool (the parent keeps using its copy)."""
        for pool in list(cls._all):
            pool.state = _SPENT
            pool._locked_state = None
            pool._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_NoncePool._forget_all)


class Records:
    """Encrypt and decrypt records with the keys of one :class:`DataKeys`. Holds keys.

    ``rng`` is the keyring's RNG seam (nonces and nothing else). Thread-safe when the
    :class:`DataKeys` is.
    """

    __slots__ = (
        "_batch_tails",
        "_cached",
        "_context_copies",
        "_contexts",
        "_counts",
        "_dk",
        "_get",
        "_lease",
        "_memos",
        "_nonces",
        "_subjects",
        "_tails",
        "rng",
    )

    def __init__(self, datakeys: DataKeys, *, rng: RandomSource | None = None) -> None:
        self._dk = datakeys
        self.rng: RandomSource = rng or default_rng()
        self._nonces = _NoncePool(self.rng)
        self._subjects: dict[str, tuple[str, bytes]] = {}
        self._contexts: dict[tuple[object, ...], bytes] = {}
        # subject -> (the context it last came with, canonical subject, AAD tail)
        self._tails: dict[str, tuple[dict[str, str] | None, str, bytes]] = {}
        # context part -> its batch AAD tails (one context at a time: a service's batches
        # come with one context again and again)
        self._batch_tails: dict[bytes, _BatchTails] = {}
        self._context_copies: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        self._cached: Callable[[str], DataKey | None] = (
            getattr(datakeys, "cached_key", None) or _no_cached_key
        )
        self._counts: bool = getattr(datakeys, "counts_records", True)
        view = getattr(datakeys, "cached_view", None)
        # the key cache's own lookup and its lease (see decrypt); without one, none
        self._get: Callable[[str], DataKey | None] = _no_cached_key
        self._lease: _Lease = _NO_LEASE
        self._memos = view is not None
        if view is not None:
            self._get, self._lease = view

    def __repr__(self) -> str:
        return f"Records(keyring={self._dk.keyring_id}, <redacted>)"

    def share_encodings(self, other: Records) -> None:
        """Use ``other``'s memos of subject and context encodings from now on (both
        engines fill and read the same ones). They are public (a canonical spelling, an
        AAD tail): a job's worker gets a new engine per job, and encoding a dataset's
        10^4 subjects again for every job was 5 to 10 % of a job's time (issue 23)."""
        self._subjects = other._subjects
        self._contexts = other._contexts
        self._tails = other._tails
        self._batch_tails = other._batch_tails
        self._context_copies = other._context_copies

    @property
    def datakeys(self) -> DataKeys:
        return self._dk

    # -- keys ---------------------------------------------------------------------------------

    def keys(self, subjects: Sequence[str], *, create: bool = False) -> list[DataKey | None]:
        """The data key of each subject (``None`` where it has none, unless ``create``,
        which makes it under the NFC spelling); any stored spelling is found."""
        names.check_batch(subjects)
        canon = names.canonical_subjects(subjects)  # checked before any key is asked for
        if create or canon is subjects:  # (all ASCII: the one spelling)
            return self._dk.resolve(canon, create=create)
        return [self._find(s, None) for s in map(str.__str__, subjects)]

    def export(self, subjects: Sequence[str], *, create: bool = False) -> list[bytes | None]:
        """Raw 16-byte data keys, found as :meth:`keys` finds them (the key service's
        ``datakey`` endpoint and jobs handing keys to workers). Secret."""
        names.check_batch(subjects)
        canon = names.canonical_subjects(subjects)  # checked before any key is asked for
        if create or canon is subjects:  # (all ASCII: the one spelling)
            return self._dk.export(canon, create=create)
        subjects = list(map(str.__str__, subjects))  # plain str: a subclass's __eq__ merges none
        spellings = {s: names.subject_spellings(s) for s in dict.fromkeys(subjects)}
        wanted = list(dict.fromkeys(x for sp in spellings.values() for x in sp))
        got = dict(zip(wanted, self._dk.export(wanted, create=False), strict=True))
        first = {
            s: next((got[x] for x in sp if got[x] is not None), None) for s, sp in spellings.items()
        }
        return [first[s] for s in subjects]

    def _find(self, subject: str, commitment: bytes | None) -> DataKey | None:
        """The key of the first spelling of ``subject`` that has one (NFC first), or with
        ``commitment`` the one whose commitment matches (a record's header names its key)."""
        spellings = names.subject_spellings(subject)
        found = [k for k in self._dk.resolve(spellings, create=False) if k is not None]
        if commitment is not None:
            for key in found:
                if key.commitment == commitment:
                    return key
        return found[0] if found else None

    def _subject(self, subject: str) -> tuple[str, bytes]:
        """(canonical spelling, ``u32 len || UTF-8``) of a subject, checked once and cached
        (public data; a backend seals for the same users again and again)."""
        return _encoded_subject(self._subjects, subject)

    def _context(self, context: Mapping[str, str] | None) -> bytes:
        """The encoded context, cached by its items (a service sees a few contexts)."""
        if not context or not isinstance(context, Mapping):
            return fmt.context_part(context)  # empty: constant, or the precise TypeError
        items = tuple(context.items())
        if not _plain_text(items):  # compared by text only: no subclass's __eq__/__hash__
            return fmt.context_part(context)
        return self._plain_context(items)

    def _plain_context(self, items: tuple[tuple[str, str], ...]) -> bytes:
        """:meth:`_context` of a context's ``items``, all plain ``str``."""
        part = self._contexts.get(items)
        if part is None:
            # encoded from the items the memo holds (a mapping whose items() answer
            # otherwise next time must not leave a part another context then reuses)
            part = fmt.context_part(dict(items))
            if len(self._contexts) >= _CONTEXT_CACHE:
                self._contexts.clear()
            self._contexts[items] = part
        return part

    # -- records ------------------------------------------------------------------------------

    def _tail(self, subject: str, context: Mapping[str, str] | None) -> tuple[str, bytes]:
        """(canonical subject, AAD tail) of one record: the single-record paths' share of
        :meth:`_subject`/:meth:`_context`, remembered per subject with the last context it
        came with (or, once the key's memo holds that one, the context before: the two
        swap, :meth:`_remember`), for a ``str`` subject and a ``dict`` (or no) context.

        :meth:`encrypt` and :meth:`decrypt` read the memo inline: an entry is used only if
        its context equals the one given (``==``: equal mappings encode alike, the encoding
        sorts the entries), so a caller that changes its mapping gets a new tail. The
        entry holds a copy of the context, one copy shared by every subject sealed with
        equal contexts (one hot object to compare with, not one per subject).

        Only text decides a hit: the subject and every context key and value must be a
        plain ``str`` (one ``type`` per key and value, then one ``==`` of ``str`` with
        ``str``), else the call goes the full way, which refuses or encodes what it got.
        ``str``'s comparison answers ``NotImplemented`` to anything else, so Python asks
        the other object: a ``str`` subclass's own ``__eq__`` (one that ignores case), or
        any object calling itself equal to text, chose the memo entry, and so the context
        text a record was bound to or opened under. The check replaced comparing both ways
        with a ``str``-subclass copy (which guarded subclasses only) at the same cost
        (benchmarks/ab_context_memo.py); a type check over ``items()`` cost ~100 ns more.
        """
        # one snapshot of the items is checked, compared, encoded and remembered (a dict
        # another thread changes meanwhile must not leave a memo whose tail is of others)
        items = tuple(context.items()) if type(context) is dict else ()
        plain = type(context) in _PLAIN_CONTEXT and _plain_text(items)
        hit = self._tails.get(subject) if type(subject) is str and plain else None
        if hit is not None and hit[0] == context:  # text only: plain checked each key and value
            return hit[1], hit[2]
        canon, part = self._subject(subject)
        if not (type(subject) is str and plain):
            return canon, part + self._context(context)
        copy = None
        if context is not None:
            copy = self._context_copies.get(items)
            if copy is None:
                if len(self._context_copies) >= _CONTEXT_CACHE:
                    self._context_copies.clear()
                copy = dict(items)
        cpart = self._plain_context(items) if copy is not None else fmt.context_part(None)
        batch = self._batch_tails.get(cpart)
        # the batch memo's tail for this context, where a batch made one: one bytes object
        # per subject for both paths, not two (the second copy of 10^4 tails cost the
        # single-record row about 1 % of its rate, issue 23)
        tail = batch[subject] if batch is not None else part + cpart
        if copy is not None:
            self._context_copies[items] = copy  # a valid context: encoded above
        if len(self._tails) >= _SUBJECT_CACHE:
            self._tails.clear()
        self._tails[subject] = (copy, canon, tail)
        return canon, tail

    def encrypt(
        self, plaintext: bytes, *, subject: str, context: Mapping[str, str] | None = None
    ) -> bytes:
        """Seal a record for ``subject`` (its data key is created on first use).

        The steady state costs one key cache lookup (its ``cached_view``, under its lease),
        the context comparison with the key's memo (see :meth:`decrypt`) and the AEAD call;
        otherwise :meth:`_key_and_tail`.
        """
        key = (
            self._get(subject) if type(subject) is str and _mono() < self._lease._deadline else None
        )
        tail = None
        text = True  # only text decides a memo hit (see _tail): checked once, for both memos
        if context is not None:
            text = type(context) is dict
            if text:
                for k in context:
                    if type(k) is not str or type(context[k]) is not str:
                        text = False
                        break
        if key is not None:
            memo = key._memo
            if memo is not None and text and memo[0] == context:
                key._used = True  # (the cache's second chance)
                tail = memo[1]
        if key is None or tail is None:
            key, tail = self._key_and_tail(subject, context, text)
        if type(plaintext) is not bytes:
            plaintext = fmt._octets(plaintext)  # type: ignore[assignment]
        # the pool's fast path, inlined (see _NoncePool); a nonce is 12 bytes, never falsy
        nonce = next(self._nonces.state, None) or self._nonces.next()
        header = key._prefix + nonce
        try:
            return header + key._aead.encrypt(nonce, plaintext, header + tail)
        except OverflowError:  # cryptography's length check (fmt.MAX_PLAINTEXT_BYTES)
            raise fmt._too_large() from None
        except BufferError:
            raise fmt._strided() from None

    def _key_and_tail(
        self, subject: str, context: Mapping[str, str] | None, text: bool
    ) -> tuple[DataKey, bytes]:
        """:meth:`encrypt`'s key and AAD tail off its first path: the subject's memo
        (:meth:`_tail`), the ``cached_key`` of its canonical spelling, else ``resolve``
        (which creates it); the key's memo filled on the way (:meth:`_remember`).

        ``text``: :meth:`encrypt`'s verdict on ``context`` (none, or a ``dict`` of plain
        ``str``), which decides whether a memo may be used here too: one check per call,
        not one per memo (a caller alternating contexts per subject met the key's memo
        holding the other one and paid it twice, issue 23)."""
        hit = self._tails.get(subject) if type(subject) is str and text else None  # _tail
        if hit is None or hit[0] != context:
            canon, tail = self._tail(subject, context)
            # the subject's entry of another context, replaced by _tail: onto a key with
            # none (the memo entry made now is left on the key the next time)
            old, hit = hit, None
        else:
            old, canon, tail = None, hit[1], hit[2]
        key = self._cached(canon)
        if key is None:
            (key,) = self._dk.resolve((canon,), create=True)
            assert key is not None
        if self._memos:
            if hit is not None:
                self._remember(key, subject, hit)
            elif old is not None and key._memo is None:
                self._remember(key, subject, old)
        return key, tail

    def _remember(
        self, key: DataKey, subject: str, hit: tuple[dict[str, str] | None, str, bytes]
    ) -> None:
        """Leave the subject's memo entry ``hit`` (context copy, canonical spelling, AAD
        tail) on ``key``, the key of that canonical spelling, for the first path of
        :meth:`encrypt` and :meth:`decrypt`: only where ``subject`` is that spelling (the
        first path finds the key by the subject as given) and only over a ``cached_view``,
        whose keys belong to one subject each (``DataKeys``), so a key's memo is always of
        its own subject. Public data on the key object: reached only through the key
        cache, under its lease, it is coherent with the cache (a dropped key is not found).

        The entry the key held goes back to the subject's memo (the two memos swap), so a
        caller alternating two contexts per subject finds each in one of them; with one
        memo overwriting the other, every such call took the full path (:meth:`_tail`, and
        ``resolve`` to open: ~4x the steady state's CPU, issue 23). The key's entry is of
        this spelling (``subject``, canonical) as every entry left on it is."""
        if hit[1] == subject:
            held = key._memo
            key._memo = (hit[0], hit[2])
            if held is not None and held[0] != hit[0]:  # plain dicts (or None): text only
                self._tails[subject] = (held[0], subject, held[1])

    def decrypt(
        self, record: bytes, *, subject: str, context: Mapping[str, str] | None = None
    ) -> bytes:
        """Open a record; :class:`IntegrityError` if it does not belong to this subject and
        context, was altered, or the subject was shredded.

        First path (issue 23): the subject's key straight from the key cache's own lookup
        (the :class:`DataKeys`' ``cached_view``, under its lease, as ``cached_key`` does:
        a dropped or shredded key is not found, a lapsed or closed lease serves nothing),
        and the AAD tail from the key's memo (:meth:`_remember`) if its context equals the
        one given; one dict lookup and the AEAD call. Else :meth:`_decrypt_memo`.
        """
        key = (
            self._get(subject) if type(subject) is str and _mono() < self._lease._deadline else None
        )
        text = True  # only text decides a memo hit (see _tail): checked once, for both memos
        if context is not None:
            text = type(context) is dict
            if text:
                for k in context:
                    if type(k) is not str or type(context[k]) is not str:
                        text = False
                        break
        if key is not None:
            memo = key._memo
            if (
                memo is not None
                and text
                and memo[0] == context
                and type(record) is bytes
                and len(record) >= _OVERHEAD
                and record.startswith(key._prefix)  # the header names this key
            ):
                key._used = True  # (the cache's second chance)
                header = record[:_HEADER]
                try:
                    return key._aead.decrypt(header[_PREFIX:], record[_HEADER:], header + memo[1])
                except InvalidTag:
                    return fmt.open_parsed(key, fmt.parse(record), subject=subject, context=context)
                except BaseException as exc:  # no cost unless raised
                    fmt.refuse_oversized(record, exc)
                    raise
        return self._decrypt_memo(record, subject, context, text)

    def _decrypt_memo(
        self,
        record: bytes,
        subject: str,
        context: Mapping[str, str] | None,
        text: bool,
    ) -> bytes:
        """:meth:`decrypt` off its first path: the subject's memo (:meth:`_tail`) and the
        ``cached_key`` of its canonical spelling (filling the key's memo), else
        :meth:`_decrypt`. ``text`` as in :meth:`_key_and_tail`."""
        hit = self._tails.get(subject) if type(subject) is str and text else None  # _tail
        if hit is not None and hit[0] == context:
            # seen before: its canonical spelling's key, if cached, and only if the header
            # names that key (else the full path finds the spelling or says what is wrong)
            key = self._cached(hit[1])
            if key is not None and self._memos:
                self._remember(key, subject, hit)
            if (
                key is not None
                and type(record) is bytes
                and len(record) >= fmt.OVERHEAD
                and record.startswith(key._prefix)
            ):
                header = record[: fmt.HEADER_SIZE]
                try:
                    return key._aead.decrypt(
                        header[fmt.PREFIX_SIZE :], record[fmt.HEADER_SIZE :], header + hit[2]
                    )
                except InvalidTag:
                    return fmt.open_parsed(key, fmt.parse(record), subject=subject, context=context)
                except BaseException as exc:  # no cost unless raised
                    fmt.refuse_oversized(record, exc)
                    raise
        elif hit is not None and self._memos:
            # the subject's entry of another context, which _decrypt's _tail replaces:
            # onto its key if that holds none (as _key_and_tail does)
            key = self._cached(hit[1])
            if key is not None and key._memo is None:
                self._remember(key, subject, hit)
        return self._decrypt(record, subject, context)

    def _decrypt(self, record: bytes, subject: str, context: Mapping[str, str] | None) -> bytes:
        """:meth:`decrypt` in full: the precise format error first, any spelling's key."""
        if not (
            type(record) is bytes
            and len(record) >= fmt.OVERHEAD
            and record.startswith(_RECORD_PREFIX)
        ):
            record = fmt._octet_bytes(record, "record")  # any buffer: its bytes
            fmt.parse(record)  # the precise FormatError first
        tail = self._tail(subject, context)[1]
        subject = str.__str__(subject)  # checked: a plain str on (no subclass's __hash__)
        if subject.isascii():
            (key,) = self._dk.resolve((subject,), create=False)
        else:  # any spelling (keysplit.names): the one whose commitment the header names
            key = self._find(subject, record[6 : fmt.PREFIX_SIZE])
        if key is None or not record.startswith(key._prefix):
            raise self.missing(subject, key)
        header = record[: fmt.HEADER_SIZE]
        try:
            return key._aead.decrypt(
                header[fmt.PREFIX_SIZE :], record[fmt.HEADER_SIZE :], header + tail
            )
        except InvalidTag:
            return fmt.open_parsed(key, fmt.parse(record), subject=subject, context=context)
        except BaseException as exc:
            fmt.refuse_oversized(record, exc)
            raise

    def encrypt_many(
        self, subjects: Sequence[str], plaintexts: Sequence[bytes], context: Context = None
    ) -> list[bytes]:
        """Seal many records (``subjects[i]`` owns ``plaintexts[i]``) in one pass."""
        n = len(plaintexts)
        batch = self._seal_plan(subjects, n, context)
        return fmt.seal_planned(batch, plaintexts, self.rng.random_bytes(fmt.NONCE_SIZE * n))

    def _seal_plan(self, subjects: Sequence[str], n: int, context: Context) -> fmt.Batch:
        """The checks and batch plan of every sealing batch (keys created on first use)."""
        names.check_batch(subjects)
        if len(subjects) != n:
            raise ValueError("subjects and plaintexts must have the same length")
        return self._batch(names.canonical_subjects(subjects), n, context, create=True)

    def sealer(
        self, subjects: Sequence[str], plaintexts: Sequence[bytes], context: Context = None
    ) -> Callable[[int, int, bytes], bytearray]:
        """:meth:`encrypt_many` in pieces: every subject is checked, every key resolved
        (created on first use) and every nonce drawn now, so whatever can fail fails here.
        The function returned, ``seal(a, b, lead)``, gives ``lead`` followed by records
        ``a`` to ``b - 1`` (in input order) in one buffer, and can no longer fail; record
        ``i`` is ``len(plaintexts[i]) + OVERHEAD`` bytes long, the same bytes
        :meth:`encrypt_many` would give it with the same nonce. Each record is sealed in
        place (``encrypt_into``): no ``bytes`` object per record, and no join after.

        For an answer written while it is sealed (the key service's streamed ``encrypt``):
        the caller must not use the function after the keys may have changed (a seal or a
        shred), as it seals with the keys resolved here."""
        batch, nonces, plaintexts, sizes = self._to_seal(subjects, plaintexts, context)
        owner = _per_record(batch, len(sizes), "encrypt_into")
        head, over = fmt.HEADER_SIZE, fmt.OVERHEAD

        def seal(a: int, b: int, lead: bytes = b"") -> bytearray:
            pos = len(lead)
            buf = bytearray(pos + sum(sizes[a:b]) + over * (b - a))
            view = memoryview(buf)
            view[:pos] = lead
            for i in range(a, b):
                enc, prefix, tail = owner[i]
                nonce = nonces[12 * i : 12 * i + 12]
                header = prefix + nonce
                mid = pos + head
                end = mid + sizes[i] + 16
                view[pos:mid] = header
                enc(nonce, plaintexts[i], header + tail, view[mid:end])
                pos = end
            return buf

        return seal

    def _to_seal(
        self, subjects: Sequence[str], plaintexts: Sequence[bytes], context: Context
    ) -> tuple[fmt.Batch, bytes, Sequence[bytes], list[int]]:
        """What :meth:`sealer` and :meth:`encrypt_packed` seal, every check done: the
        batch plan (keys resolved, created on first use), the nonces, the plaintexts as
        ``bytes`` and their sizes."""
        n = len(plaintexts)
        batch = self._seal_plan(subjects, n, context)
        nonces = self.rng.random_bytes(fmt.NONCE_SIZE * n)
        if not all(type(p) is bytes for p in plaintexts):  # len() must count bytes, now
            plaintexts = list(map(_frozen_bytes, plaintexts))
        sizes = list(map(len, plaintexts))
        if sum(sizes) > fmt.MAX_PLAINTEXT_BYTES and max(sizes) > fmt.MAX_PLAINTEXT_BYTES:
            raise fmt._too_large()  # here, before anything is sealed
        return batch, nonces, plaintexts, sizes

    def encrypt_packed(
        self, subjects: Sequence[str], plaintexts: Sequence[bytes], context: Context = None
    ) -> Packed:
        """:meth:`encrypt_many` into one buffer: record ``i`` is ``result[i]``, the bytes
        ``encrypt_many`` would give it with the same nonce, every record sealed in place
        (``encrypt_into``), grouped by key as ``encrypt_many`` seals them: no ``bytes`` per
        record for a backend that writes rows from one buffer (Arrow, ``COPY``, a socket).
        Every check and error as ``encrypt_many``'s."""
        batch, nonces, plaintexts, sizes = self._to_seal(subjects, plaintexts, context)
        offsets = _offsets_of(map(_OVERHEAD.__add__, sizes))
        view = _output(offsets[-1])
        fmt.seal_planned_into(batch, plaintexts, nonces, offsets, view)
        return Packed._own(view, offsets)

    def opener(
        self, subjects: Sequence[str], records: Sequence[bytes], context: Context = None
    ) -> Callable[[int, int, bytes], bytearray]:
        """:meth:`decrypt_many` in pieces, for an answer written while it is opened (the
        key service's streamed ``decrypt``): every key is resolved and every record's
        header checked against its subject's key now, so that only a record's tag can
        still fail. The function returned, ``open_(a, b, lead)``, gives ``lead`` followed
        by the plaintexts of records ``a`` to ``b - 1`` in one buffer (each opened in
        place, ``decrypt_into``); it raises :class:`IntegrityError` if a tag fails, and then
        no byte of that piece may be used (what was written of it is unauthenticated, and
        is zeroed).

        Raises ``ValueError`` for a batch it does not open piece by piece (a subject that
        is not ASCII, whose key may sit under another spelling; a record whose header does
        not name its subject's key, or that is not ``bytes``), and whatever
        :meth:`decrypt_many` raises for a missing key: the caller then opens the batch
        whole, which says precisely what is wrong. Plaintext ``i`` is
        ``len(records[i]) - OVERHEAD`` bytes long."""
        batch = self._to_open(subjects, records, context)
        owner = _per_record(batch, len(records), "decrypt_into")
        over, head, pre = fmt.OVERHEAD, fmt.HEADER_SIZE, fmt.PREFIX_SIZE
        for (_, prefix, _), r in zip(owner, records, strict=True):
            if not (type(r) is bytes and len(r) >= over and r.startswith(prefix)):
                raise _NotInPieces("not opened in pieces: a record does not name its key")
        sizes = [len(r) - over for r in records]
        if sizes and max(sizes) + over > fmt.MAX_RECORD_BYTES:  # cryptography panics on those
            raise fmt._oversized()  # decrypt_many's FormatError, before any AEAD call

        def open_(a: int, b: int, lead: bytes = b"") -> bytearray:
            pos = len(lead)
            buf = bytearray(pos + sum(sizes[a:b]))
            view = memoryview(buf)
            view[:pos] = lead
            for i in range(a, b):
                dec, _, tail = owner[i]
                r = records[i]
                header = r[:head]
                end = pos + sizes[i]
                try:
                    dec(header[pre:], r[head:], header + tail, view[pos:end])
                except InvalidTag:
                    view[len(lead) :] = bytes(len(buf) - len(lead))  # nothing unauthenticated
                    raise IntegrityError() from None
                pos = end
            return buf

        return open_

    def _to_open(
        self, subjects: Sequence[str], records: Sequence[object], context: Context
    ) -> fmt.Batch:
        """:meth:`opener`'s and :meth:`decrypt_packed`'s checks and batch plan (every key
        resolved; :class:`_NotInPieces` for a subject that is not ASCII)."""
        n = len(records)
        names.check_batch(subjects)
        if len(subjects) != n:
            raise ValueError("subjects and records must have the same length")
        if names.canonical_subjects(subjects) is not subjects:  # checked before any key
            raise _NotInPieces("not opened in pieces: a subject is not ASCII (or not a plain str)")
        return self._batch(subjects, n, context, create=False)

    def decrypt_packed(
        self, subjects: Sequence[str], records: Sequence[bytes] | Packed, context: Context = None
    ) -> Packed:
        """:meth:`decrypt_many` into one buffer: plaintext ``i`` is ``result[i]``, every
        record opened in place (``decrypt_into``), grouped by key as ``decrypt_many``
        opens them; ``records`` a :class:`Packed` (as :meth:`encrypt_packed` gives: a round
        trip makes no ``bytes`` per record) or a list (joined into one buffer first).
        All-or-nothing: a failed tag anywhere raises :class:`IntegrityError` and no
        plaintext is returned. A batch the one-buffer path does not take (a subject that
        is not ASCII, a record that does not name its subject's key, or that fails) is
        opened by :meth:`decrypt_many`, so every error is its error."""
        try:
            batch = self._to_open(subjects, records, context)
            packed = records if isinstance(records, Packed) else _packed_records(records)
            if packed is not None:
                offsets = packed._offsets.tolist()
                sizes = list(map(operator.sub, offsets[1:], offsets))
                if sizes and max(sizes) > fmt.MAX_RECORD_BYTES:  # cryptography panics on those
                    raise fmt._oversized()  # decrypt_many's FormatError, before any AEAD call
                if sizes and min(sizes) < _OVERHEAD:
                    raise IntegrityError()  # cut short: decrypt_many says how
                out = _offsets_of(map(_OVERHEAD.__rsub__, sizes))
                view = _output(out[-1])
                fmt.open_planned_into(batch, packed._view, offsets, out.tolist(), view)
                return Packed._own(view, out)
        except (_NotInPieces, IntegrityError):
            pass  # whole: the precise error, or the records it opens (pre-NFC AADs)
        listed = records.tolist() if isinstance(records, Packed) else records
        return Packed.of(self.decrypt_many(subjects, listed, context))

    def decrypt_many(
        self, subjects: Sequence[str], records: Sequence[bytes], context: Context = None
    ) -> list[bytes]:
        """Open many records; all-or-nothing (:class:`IntegrityError` if any fails)."""
        n = len(records)
        names.check_batch(subjects)
        if len(subjects) != n:
            raise ValueError("subjects and records must have the same length")
        keys: list[DataKey]
        if names.canonical_subjects(subjects) is subjects:  # all ASCII, checked before any key
            batch = self._batch(subjects, n, context, create=False)
            try:
                return fmt.open_planned(batch, records)
            except IntegrityError:  # the keys again (cached) to say why
                again = self._dk.resolve(subjects, create=False)
                self._explain(subjects, again, records)
                raise
        # keys may sit under another spelling (keysplit.names): find each by commitment;
        # plain str (checked str above), so a subclass's own __hash__/__eq__ reaches no dict
        subjects = list(map(str.__str__, subjects))
        found: dict[tuple[str, bytes | None], DataKey | None] = {}
        keys = []
        for s, r in zip(subjects, records, strict=True):
            c = _commitment(r)
            if (s, c) not in found:
                names.check_subject(s)
                found[s, c] = self._find(s, c)
            k = found[s, c]
            if k is None:
                raise self.missing(s, None)
            keys.append(k)
        try:
            return fmt.decrypt_many(keys, subjects, records, context)
        except IntegrityError:
            self._explain(subjects, keys, records)
            raise

    def _explain(
        self, subjects: Sequence[str], keys: Sequence[DataKey | None], records: Sequence[bytes]
    ) -> None:
        """After a failed batch: raise why, if a subject has no key now (shredded since
        the batch looked its keys up) or a record names another key than its subject's
        (shredded, never had one, a wrong key); else let the caller re-raise."""
        for s, k, r in zip(subjects, keys, records, strict=True):
            if k is None or k.commitment != _commitment(r):
                raise self.missing(s, k) from None

    def _batch(
        self, subjects: Sequence[str], n: int, context: Context, *, create: bool
    ) -> fmt.Batch:
        """The engine's batch plan: one key lookup for the batch, then per subject its key
        and AAD tail (cached), the record indices grouped (:func:`keysplit.record.plan_groups`),
        for :func:`keysplit.record.seal_planned`/``open_planned``."""
        shared, per_record = fmt.split_contexts(n, context)
        if per_record is not None:  # one group per record, in order
            keys = self._dk.resolve(subjects, create=create)
            if not create and None in keys:
                raise self.missing(subjects[keys.index(None)], None)
            ok: Sequence[DataKey] = keys  # type: ignore[assignment]
            pairs = zip(subjects, per_record, strict=True)
            tails = [self._subject(s)[1] + self._context(c) for s, c in pairs]
            return fmt.Batch(ok, tails, range(n), range(1, n + 1), subjects, per_record)
        (uniq, order, ends), found, tails = self._plan(subjects, n, shared, create=create)
        return fmt.Batch(found, tails, order, ends, uniq, [shared] * len(uniq))

    def _plan(
        self, subjects: Sequence[str], n: int, shared: Mapping[str, str] | None, *, create: bool
    ) -> tuple[tuple[list[str], Sequence[int], Sequence[int]], list[DataKey], list[bytes]]:
        """:meth:`_batch` with one context for the batch: (the :func:`plan_groups` plan,
        the key and the AAD tail of each of its distinct subjects)."""
        part = self._context(shared)
        plan = fmt.plan_groups(subjects)
        uniq = plan[0]
        if create and len(uniq) < n and self._counts:
            # every occurrence: this DataKeys counts records per key (keysplit.Client's
            # cache_max_records); each subject's occurrences share one key object
            each = self._dk.resolve(subjects, create=True)
            keys = list(map(dict(zip(subjects, each, strict=True)).__getitem__, uniq))
        else:  # nothing counts occurrences here: each distinct subject once
            keys = self._dk.resolve(uniq, create=create)
        if not create and None in keys:
            raise self.missing(uniq[keys.index(None)], None)
        memo = self._batch_tails.get(part)
        if memo is None:
            self._batch_tails.clear()
            memo = self._batch_tails[part] = _BatchTails(self._subjects, part)
        return plan, keys, list(map(memo.__getitem__, uniq))  # type: ignore[return-value]

    def missing(self, subject: str, key: DataKey | None = None) -> KeysplitError:
        """Why no key of ``subject`` opens its record (``key``: the one it has, whose
        commitment is not the record's): the :class:`DataKeys` tells a shredded subject
        (:class:`ShreddedError`) from one that never had a key (:class:`NoDataKeyError`)
        and from a wrong key (:class:`IntegrityError`) where it can (``missing_error``);
        otherwise a detail-free :class:`IntegrityError`."""
        classify = getattr(self._dk, "missing_error", None)
        if classify is None:
            return IntegrityError(hint=_NO_KEY) if key is None else IntegrityError()
        err: KeysplitError = classify(subject)
        return err


def _per_record(
    batch: fmt.Batch, n: int, method: str
) -> list[tuple[Callable[..., object], bytes, bytes]]:
    """For :meth:`Records.sealer` and :meth:`Records.opener`: per record, in input order,
    its key's AES-GCM ``method`` (``encrypt_into``/``decrypt_into``), header prefix and
    AAD tail, from the batch plan."""
    out: list[tuple[Callable[..., object], bytes, bytes]] = [None] * n  # type: ignore[list-item]
    start = 0
    for key, tail, end in zip(batch.keys, batch.tails, batch.ends, strict=True):
        each = (getattr(key._aead, method), key._prefix, tail)
        for i in batch.order[start:end]:
            out[i] = each
        start = end
    return out


def _packed_records(records: Sequence[object]) -> Packed | None:
    """A list of ``bytes`` records in one buffer (None if one is not ``bytes``: the whole
    path then says what it is, or takes it as its bytes)."""
    if not all(type(r) is bytes for r in records):
        return None
    return Packed._own(memoryview(b"".join(records)), _offsets_of(map(len, records)))  # type: ignore[arg-type]


def _encoded_subject(memo: dict[str, tuple[str, bytes]], subject: str) -> tuple[str, bytes]:
    """:meth:`Records._subject` over the memo ``memo`` (cleared, not grown, past its bound).

    Keyed by plain ``str`` only: a lookup must compare text with text. A ``str`` subclass's
    own ``__eq__``/``__hash__`` (one that ignores case) kept in the memo made a later
    "alice" find "Alice"'s entry, and an object calling itself equal to any text found
    another subject's: records sealed under the other subject's key. Anything else is
    checked (and refused, or copied to a plain ``str``) on every call."""
    got = memo.get(subject) if type(subject) is str else None
    if got is None:
        # a plain str (not a subclass's own __eq__/__hash__): the key cache is read
        # without a lock on the single-record path (fleet.KeyCache.lease_bound_get)
        canon = str.__str__(names.check_subject(subject))
        enc = canon.encode("utf-8")
        got = (canon, _U32.pack(len(enc)) + enc)
        if type(subject) is str:
            if len(memo) >= _SUBJECT_CACHE:
                memo.clear()
            memo[subject] = got
    return got


class _BatchTails(dict[str, bytes]):
    """Canonical subject -> its AAD tail under one context part, made on first use: a
    batch's tails in one C-level ``map`` (a Python expression per distinct subject was
    ~1 % of a 1 KiB record, issue 23). Public data, bounded as the subject memo is.

    It holds the subject memo, not its engine: engines share these memos
    (:meth:`Records.share_encodings`), and a memo that held the engine which made it kept
    that engine's key source alive (a finished Dask job's key cache, its key service token
    or ``serve_keys`` authkey) for as long as any later engine shared the memo."""

    __slots__ = ("_part", "_subjects")

    def __init__(self, subjects: dict[str, tuple[str, bytes]], part: bytes) -> None:
        super().__init__()
        self._subjects = subjects
        self._part = part

    def __missing__(self, subject: str) -> bytes:
        tail = _encoded_subject(self._subjects, subject)[1] + self._part
        if len(self) >= _SUBJECT_CACHE:
            self.clear()
        self[subject] = tail
        return tail


def _plain_text(items: Iterable[tuple[object, object]]) -> bool:
    """Whether every key and value of a context's ``items`` is a plain ``str``: only then
    may a memo of encoded contexts compare one with ``==``/``hash``. A ``str`` subclass's
    own ``__eq__`` (one that ignores case) called ``{"t": "ACME"}`` equal to the memo's
    ``{"t": "acme"}``, and the record was bound to the other context's text."""
    return names._all_plain_str(itertools.chain.from_iterable(items))


class _NotInPieces(ValueError):
    """A batch :meth:`Records.opener` does not open piece by piece (its callers open it
    whole, which says precisely what is wrong, or opens it)."""


def _frozen_bytes(plaintext: object) -> bytes:
    """A plaintext as ``bytes`` for :meth:`Records.sealer`: a ``bytearray`` or ``memoryview``
    copied (its size in bytes fixed now, not changed under the sealer by the caller), anything
    else a ``TypeError`` now rather than inside the sealing."""
    if isinstance(plaintext, bytes):
        return plaintext
    return bytes(fmt._octets(plaintext))


def _commitment(record: object) -> bytes | None:
    """The key commitment a record's header carries; None if it has none (the record
    API then reports the precise format error)."""
    try:
        return fmt.parse(record).commitment  # type: ignore[arg-type]
    except (FormatError, TypeError):
        return None
