"""The record format: AES-128-GCM under a per-subject data key, bound to subject and context.

A record is ``header || ciphertext || tag`` (byte layout in ``docs/format/record.md``)::

    magic "KSRC" | version 0x01 | suite 0x01 | commitment (32) | nonce (12) | ct | tag (16)

* The GCM key is not the data key itself but ``HKDF-SHA256(data key, info=".../enc")``,
  and the header carries ``HKDF-SHA256(data key, info=".../commit")``. The commitment is
  checked (constant time) before decryption, so a record only ever opens under the one
  data key that made it: AES-GCM alone is not key-committing (the "invisible salamanders"
  attack), which matters once keys can be chosen by someone other than us. It is derived
  once per data key, not per record, so it costs nothing per record; SECURITY.md explains
  the trade-off against the AWS Encryption SDK's per-message commitment.
* The associated data is the whole header followed by the canonical encoding of the
  subject id and the context (:func:`encode_aad`), so a record moved to another subject or
  context, or altered by one bit, fails with :class:`IntegrityError`.
* Nonces are 96-bit random (drawn in bulk for batches). With random nonces one data key
  should seal at most 2**32 records (NIST SP 800-38D); per-subject keys keep every
  realistic subject far below that.

Parse once (pyca's Fernet): :func:`parse` checks the header and returns a :class:`Parsed`
(header, commitment, nonce, body); whoever needs the commitment to find the key (the
keyring looks keys up by it) hands the same :class:`Parsed` to :func:`open_parsed`.

:class:`DataKey` holds the derived keys and caches the AES-GCM object, so a backend that
keeps one per subject pays the key schedule once. The engine that finds keys for subjects
is :class:`keysplit.keyring.records.Records`; this module is the format and its loops.
"""

from __future__ import annotations

import hmac
import operator
import struct
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from itertools import accumulate, count
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import names
from .errors import FormatError, IntegrityError, KeysplitError
from .rng import RandomSource, default_rng

__all__ = [
    "HEADER_SIZE",
    "MAX_CONTEXT_BYTES",
    "MAX_CONTEXT_ENTRIES",
    "MAX_PLAINTEXT_BYTES",
    "MAX_RECORD_BYTES",
    "NONCE_SIZE",
    "OVERHEAD",
    "ContextTooLargeError",
    "DataKey",
    "Parsed",
    "PlaintextTooLargeError",
    "check_context",
    "decrypt",
    "decrypt_many",
    "encode_aad",
    "encrypt",
    "encrypt_many",
    "open_parsed",
    "parse",
]

MAGIC = b"KSRC"
VERSION = 1
SUITE_AES128GCM_HKDF_COMMIT = 1
COMMIT_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
HEADER_SIZE = 4 + 1 + 1 + COMMIT_SIZE + NONCE_SIZE
OVERHEAD = HEADER_SIZE + TAG_SIZE
_PREFIX = MAGIC + bytes([VERSION, SUITE_AES128GCM_HKDF_COMMIT])
PREFIX_SIZE = len(_PREFIX) + COMMIT_SIZE  # magic, version, suite, commitment
_SALT = b"keysplit record v1"
_U32 = struct.Struct(">I")
MAX_SUBJECT_BYTES = names.MAX_SUBJECT_BYTES
MAX_CONTEXT_BYTES = 0xFFFF
"""Keys plus values of one record context in UTF-8 (the stream header's bound, too)."""
MAX_CONTEXT_ENTRIES = 256
_EMPTY_CONTEXT = _U32.pack(0)


class ContextTooLargeError(FormatError, ValueError):
    """A record context beyond :data:`MAX_CONTEXT_BYTES` / :data:`MAX_CONTEXT_ENTRIES`.

    A KeysplitError, since a context may come from the wire (the key service), and a
    ValueError, as any other bad argument of the library API is.
    """


MAX_PLAINTEXT_BYTES = 2**31 - 1
"""The most plaintext one record holds: AES-GCM in ``cryptography`` takes at most
2**31 - 1 bytes per call. Larger data goes through :mod:`keysplit.stream` (chunked)."""

MAX_RECORD_BYTES = MAX_PLAINTEXT_BYTES + OVERHEAD
"""The longest record (header, :data:`MAX_PLAINTEXT_BYTES`, tag): :func:`parse` refuses a
longer one, which no keysplit build wrote and on which ``cryptography``'s decrypt panics."""


def refuse_oversized(record: Sized, exc: BaseException) -> None:
    """Called where an AEAD call raised anything but ``InvalidTag``: for a record longer
    than :data:`MAX_RECORD_BYTES`, ``cryptography`` 50 raises pyo3's ``PanicException`` (a
    ``BaseException``, past any ``except Exception`` of a service or a job), so say
    :class:`FormatError` instead; anything else is the caller's to re-raise. From the
    except clauses only: the opening loops test no length per record."""
    if len(record) > MAX_RECORD_BYTES and not isinstance(
        exc, KeyboardInterrupt | SystemExit | GeneratorExit
    ):
        raise _oversized() from None


def _oversized() -> FormatError:
    """The error of a record longer than :data:`MAX_RECORD_BYTES` (:func:`parse` and the
    opening loops alike)."""
    return FormatError(f"record longer than {MAX_RECORD_BYTES} bytes: not a keysplit record")


class PlaintextTooLargeError(KeysplitError, ValueError):
    """A plaintext over :data:`MAX_PLAINTEXT_BYTES` for one record (nothing is sealed).

    A ValueError, as any other bad argument of the library API is; a KeysplitError, so
    the CLI and the key service report it as one line. The check is ``cryptography``'s
    own, translated: the sealing loops test no length themselves.
    """


def _strided() -> TypeError:
    """A plaintext buffer AES-GCM cannot take whole (a strided ``memoryview``, ``view[::2]``):
    cryptography's ``BufferError`` as the TypeError of any other bad plaintext. From the
    sealing calls' except clauses only: no check per record."""
    return TypeError("plaintext must be bytes or a contiguous buffer (not a strided view)")


def _too_large() -> PlaintextTooLargeError:
    return PlaintextTooLargeError(
        f"a record holds at most {MAX_PLAINTEXT_BYTES} bytes of plaintext",
        hint="seal larger data as a stream (keysplit.stream, `keysplit encrypt`)",
    )


class DataKey:
    """A subject's 16-byte data key with its derived GCM key and commitment.

    Holding one is holding the key: the repr is redacted and the raw key is not kept (the
    one raw-key exit is :meth:`keysplit.keyring.DataKeys.export`).
    """

    __slots__ = ("_aead", "_memo", "_prefix", "_used", "commitment")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray | memoryview):
            raise TypeError("data key must be bytes")
        key = bytes(key)  # first: len() of a memoryview counts items, not bytes
        if len(key) != 16:
            raise ValueError("data key must be 16 bytes (AES-128)")
        enc = HKDF(hashes.SHA256(), 16, _SALT, b"keysplit/record/v1/enc").derive(key)
        self.commitment: bytes = HKDF(
            hashes.SHA256(), COMMIT_SIZE, _SALT, b"keysplit/record/v1/commit"
        ).derive(key)
        self._aead = AESGCM(enc)
        self._prefix = _PREFIX + self.commitment
        self._used = False
        """Set by a cache hit (:class:`keysplit.keyring.fleet.KeyCache`'s second chance)."""
        self._memo: tuple[dict[str, str] | None, bytes] | None = None
        """The record engine's last (context, AAD tail) of this key's own subject (public;
        :meth:`keysplit.keyring.records.Records._remember`): one object to read after the
        key cache's lookup on the single-record paths, not a second memo lookup."""

    def __repr__(self) -> str:
        return "DataKey(<redacted>)"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a DataKey cannot be pickled (it is a key; export raw keys explicitly)")


class Parsed(NamedTuple):
    """A record split into its parts by :func:`parse` (nothing authenticated yet)."""

    version: int
    suite: int
    commitment: bytes
    nonce: bytes
    header: bytes
    """The 50 header bytes (the first part of the AAD)."""
    body: bytes | memoryview
    """Ciphertext and tag."""


def _check_key(key: object) -> None:
    if not isinstance(key, DataKey):
        raise TypeError("a record key must be a DataKey (raw bytes: DataKey(key))")


def _enc_str(s: str, what: str) -> bytes:
    if not isinstance(s, str):
        raise TypeError(f"{what} must be a str")
    try:  # str.encode: the text is bound, not what a subclass's own encode() gives
        return str.encode(s, "utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode text") from None


def subject_part(subject: str) -> bytes:
    """``u32 len || subject`` of the subject's canonical spelling (:func:`names.check_subject`)."""
    sub = names.check_subject(subject).encode("utf-8")
    return _U32.pack(len(sub)) + sub


def _exact_subject_part(subject: str) -> bytes:
    """``u32 len || subject`` exactly as spelled (legacy AADs only)."""
    sub = subject.encode("utf-8")
    return _U32.pack(len(sub)) + sub


def _check_context(context: Mapping[str, str] | None) -> Mapping[str, str]:
    """The size bounds (a ContextTooLargeError before anything big is encoded)."""
    if context is None:
        return {}
    if not isinstance(context, Mapping):
        raise TypeError("context must be a mapping of str to str")
    if len(context) > MAX_CONTEXT_ENTRIES:
        raise ContextTooLargeError(
            f"record context has {len(context)} entries, at most {MAX_CONTEXT_ENTRIES}"
        )
    size = 0
    for key, value in context.items():
        # str lengths bound the UTF-8 size from below: refuse before encoding anything big
        size += len(key) + len(value) if isinstance(key, str) and isinstance(value, str) else 0
        if size > MAX_CONTEXT_BYTES:
            raise ContextTooLargeError(f"record context is larger than {MAX_CONTEXT_BYTES} bytes")
    return context


def _encode_context(context: Mapping[str, str]) -> bytes:
    items = sorted(
        (_enc_str(k, "context key"), _enc_str(v, "context value")) for k, v in context.items()
    )
    if sum(len(k) + len(v) for k, v in items) > MAX_CONTEXT_BYTES:
        raise ContextTooLargeError(f"record context is larger than {MAX_CONTEXT_BYTES} bytes")
    parts = [_U32.pack(len(items))]
    for k, v in items:
        parts += [_U32.pack(len(k)), k, _U32.pack(len(v)), v]
    return b"".join(parts)


def context_part(context: Mapping[str, str] | None) -> bytes:
    """The context encoding with NFC keys (values stay byte-exact; :mod:`keysplit.names`)."""
    if not context and (context is None or isinstance(context, Mapping)):
        return _EMPTY_CONTEXT
    return _encode_context(names.normalize_context(_check_context(context)))


def check_context(context: Mapping[str, str] | None) -> None:
    """Raise ``ValueError`` (:class:`ContextTooLargeError` for size, ``TypeError`` for
    type) for a context no record can carry: more than :data:`MAX_CONTEXT_ENTRIES`
    entries or :data:`MAX_CONTEXT_BYTES` bytes, text that is not Unicode (lone surrogates:
    bytes that are not UTF-8 in a command line), keys equal after NFC. Up front, before a
    quorum or a job; every record call checks the same."""
    context_part(context)


def _legacy_tails(subject: str, context: Mapping[str, str] | None) -> list[bytes]:
    """AAD tails a record written before NFC normalization may carry, besides the
    canonical one: the other spellings of the subject, the context keys as given and in NFD.

    Empty for ASCII subjects and context keys (the usual case), so only a record that
    failed under the canonical tail and has non-ASCII text pays for a second try.
    """
    ctx = _check_context(context)
    if subject.isascii() and all(k.isascii() for k in ctx if isinstance(k, str)):
        return []
    canonical = subject_part(subject) + context_part(ctx)
    nfd = {unicodedata.normalize("NFD", k): v for k, v in ctx.items()}
    ctx_parts = dict.fromkeys([context_part(ctx), _encode_context(ctx), _encode_context(nfd)])
    out: dict[bytes, None] = {}
    for s in names.subject_spellings(subject):
        sub = _exact_subject_part(s)
        for c in ctx_parts:
            out[sub + c] = None
    out.pop(canonical, None)
    return list(out)


def encode_aad(subject: str, context: Mapping[str, str] | None = None) -> bytes:
    """Canonical, injective encoding of subject and context (the record AAD after the header).

    ``u32 len || subject`` then ``u32 count`` then, for each context entry sorted by the
    UTF-8 bytes of its key, ``u32 len || key || u32 len || value`` (big-endian lengths,
    UTF-8 text). Equal mappings encode identically whatever their insertion order.
    """
    return subject_part(subject) + context_part(context)


def parse(record: bytes) -> Parsed:
    """Parse and validate a record's header once; :class:`FormatError` says what is wrong."""
    if type(record) is not bytes:
        record = _octets(record, "record")  # type: ignore[assignment]
    mv = memoryview(record)
    if len(mv) < 4 or mv[:4] != MAGIC:
        raise FormatError("not a keysplit record (bad magic)")
    if len(mv) < 6:
        raise FormatError("truncated record header")
    if mv[4] != VERSION:
        raise FormatError(f"unsupported record version {mv[4]}")
    if mv[5] != SUITE_AES128GCM_HKDF_COMMIT:
        raise FormatError(f"unsupported record suite {mv[5]}")
    if len(mv) < OVERHEAD:
        raise FormatError("truncated record")
    if len(mv) > MAX_RECORD_BYTES:
        raise _oversized()
    header = bytes(mv[:HEADER_SIZE])
    return Parsed(
        VERSION,
        SUITE_AES128GCM_HKDF_COMMIT,
        header[6:PREFIX_SIZE],
        header[PREFIX_SIZE:],
        header,
        record[HEADER_SIZE:] if type(record) is bytes else mv[HEADER_SIZE:],
    )


_OCTET_TYPES = frozenset((bytes, bytearray))


def _octets(data: object, what: str = "plaintext") -> bytes | bytearray | memoryview:
    """``data`` as the bytes it holds: what is sealed (or opened) and what ``len()`` counts.

    Any C-contiguous buffer is taken as its bytes, on every path (``record.*``, the engine,
    ``keysplit.Client``): a NumPy array, an ``array('H')`` or a memoryview cast to wide items
    was refused by single-record calls, sealed whole by batches when its items were bytes,
    and refused there with cryptography's "Cannot convert ... to a buffer" when they were
    wider, while the client sent it whole. A strided view, a released one or no buffer at
    all is a ``TypeError`` that says so."""
    if isinstance(data, bytes | bytearray):
        return data
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{what} must be bytes or a contiguous buffer") from None
    except ValueError:  # a released memoryview
        raise TypeError(
            f"{what} must be bytes or a contiguous buffer (not a released view)"
        ) from None
    if view.format == "B" and view.ndim == 1 and view.c_contiguous:
        return view
    try:
        return view.cast("B")
    except TypeError:
        raise TypeError(
            f"{what} must be bytes or a contiguous buffer (not a strided view)"
        ) from None


def _octet_bytes(data: object, what: str) -> bytes:
    """A copy of the bytes ``data`` holds, as :func:`_octets` takes them. Not ``bytes(data)``:
    that calls a bytes subclass's own ``__bytes__``, which would choose the bytes, and copies
    a strided view."""
    return bytes(memoryview(_octets(data, what)))


def seal(key: DataKey, nonce: bytes, plaintext: bytes, tail: bytes) -> bytes:
    """One record from its parts (``tail`` from :func:`encode_aad`); the engine's inner call."""
    header = key._prefix + nonce
    return header + key._aead.encrypt(nonce, plaintext, header + tail)


def encrypt(
    key: DataKey,
    plaintext: bytes,
    *,
    subject: str,
    context: Mapping[str, str] | None = None,
    rng: RandomSource | None = None,
) -> bytes:
    """Seal one record for ``subject`` under ``key``."""
    _check_key(key)
    plaintext = _octets(plaintext)  # type: ignore[assignment]
    tail = encode_aad(subject, context)
    try:
        return seal(key, (rng or default_rng()).random_bytes(NONCE_SIZE), plaintext, tail)
    except OverflowError:  # cryptography's length check (MAX_PLAINTEXT_BYTES)
        raise _too_large() from None
    except BufferError:
        raise _strided() from None


def open_with_tail(
    key: DataKey,
    parsed: Parsed,
    tail: bytes,
    subject: str,
    context: Mapping[str, str] | None,
) -> bytes:
    """:func:`open_parsed` with the canonical AAD tail already encoded (cached by the engine)."""
    _check_key(key)
    if not hmac.compare_digest(parsed.commitment, key.commitment):
        raise IntegrityError()
    try:
        return key._aead.decrypt(parsed.nonce, parsed.body, parsed.header + tail)
    except InvalidTag:
        return _open_legacy(key, parsed.header, parsed.body, subject, context)


def open_parsed(
    key: DataKey, parsed: Parsed, *, subject: str, context: Mapping[str, str] | None = None
) -> bytes:
    """Open a record :func:`parse` has split: :class:`IntegrityError` unless ``key`` sealed
    it for exactly this subject and context, unaltered."""
    return open_with_tail(key, parsed, encode_aad(subject, context), subject, context)


def decrypt(
    key: DataKey, record: bytes, *, subject: str, context: Mapping[str, str] | None = None
) -> bytes:
    """Open one record; :class:`IntegrityError` if it was not sealed by ``key`` for exactly
    this subject and context, or was altered; :class:`FormatError` if it is malformed."""
    parsed = parse(record)
    return open_parsed(key, parsed, subject=subject, context=context)


def split_contexts(
    n: int, context: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None
) -> tuple[Mapping[str, str] | None, Sequence[Mapping[str, str] | None] | None]:
    """Split ``context`` into (shared mapping, per-record sequence); one of them is None."""
    if context is None or isinstance(context, Mapping):
        return context, None
    if isinstance(context, str | bytes) or len(context) != n:
        raise ValueError("contexts must be one mapping or one per record")
    return None, context


def by_subject(subjects: Sequence[str]) -> dict[str, list[int]]:
    """Indices of the records of each distinct subject, in first-seen order."""
    groups: dict[str, list[int]] = {}
    get = groups.get
    for i, subject in enumerate(subjects):
        idx = get(subject)
        if idx is None:
            groups[subject] = [i]
        else:
            idx.append(i)
    return groups


Group = tuple[DataKey, bytes, Sequence[int], str, "Mapping[str, str] | None"]
"""Records sealed or opened together: key, AAD tail, their indices, subject, context."""

Plan = tuple[list[str], Sequence[int], Sequence[int]]
"""A batch's grouping (:func:`plan_groups`): its distinct subjects, the record indices
ordered by group, where each group's run ends in that order."""


def plan_groups(subjects: Sequence[str]) -> Plan:
    """(distinct subjects in first-seen order, record indices ordered by subject, where
    each subject's run ends in that order): a batch's grouping in C-level passes.

    :func:`by_subject` builds a list per subject in a Python loop; at 10k subjects that
    is 10k live lists and tuples per call, and the garbage collector walks them (profiled
    in issue 23: ~40 % of the planning). Here the per-record work is one ``map`` over a
    dict that numbers each subject as it first meets it (a ``defaultdict`` whose default
    is the next number: distinct subjects and group ids in the one pass) and a stable sort
    of small integers (NumPy's radix sort for up to 65,535 subjects); a batch of distinct
    subjects skips the sort. Stable: a subject's records keep their input order, as in
    :func:`by_subject`. Subjects must be hashable.
    """
    import numpy as np  # here, not with the module: a CLI start needs no numpy

    n = len(subjects)
    number: defaultdict[str, int] = defaultdict(count().__next__)
    gids = np.fromiter(map(number.__getitem__, subjects), np.intp, n)
    uniq = list(number)
    g = len(uniq)
    if g == n:
        return uniq, range(n), range(1, n + 1)
    if g <= 0xFFFF:
        gids = gids.astype(np.uint16)  # the radix sort
    order: list[int] = np.argsort(gids, kind="stable").tolist()
    ends: list[int] = np.cumsum(np.bincount(gids, minlength=g)).tolist()
    return uniq, order, ends


def groups_by_key(
    subjects: Sequence[str],
    keys: Sequence[DataKey],
    tail: Callable[[str], bytes],
    context: Mapping[str, str] | None,
) -> list[Group]:
    """Group record indices by subject, then by key (one AES-GCM object per group): the
    slow path of :func:`encrypt_many`/:func:`decrypt_many`, for a batch that gives one
    subject's records different key objects."""
    out: list[Group] = []
    for subject, idx in by_subject(subjects).items():
        split: dict[int, tuple[DataKey, list[int]]] = {}
        for i in idx:
            split.setdefault(id(keys[i]), (keys[i], []))[1].append(i)
        for k, _ in split.values():
            _check_key(k)
        t = tail(subject)
        out.extend((k, t, ix, subject, context) for k, ix in split.values())
    return out


class Batch(NamedTuple):
    """A batch ready for :func:`seal_planned`/:func:`open_planned`: group ``j`` seals or
    opens records ``order[ends[j-1]:ends[j]]`` with ``keys[j]`` and AAD tail ``tails[j]``;
    ``subjects[j]`` and ``contexts[j]`` are its subject and context (for the error path)."""

    keys: Sequence[DataKey]
    tails: Sequence[bytes]
    order: Sequence[int]
    ends: Sequence[int]
    subjects: Sequence[str]
    contexts: Sequence[Mapping[str, str] | None]


def batch_of_groups(groups: Sequence[Group]) -> Batch:
    """The :class:`Batch` of a list of :data:`Group` (in their order)."""
    order = [i for g in groups for i in g[2]]
    ends = list(accumulate(len(g[2]) for g in groups))
    keys, tails, _, subjects, contexts = zip(*groups, strict=True) if groups else ((),) * 5
    return Batch(keys, tails, order, ends, subjects, contexts)


def seal_planned(batch: Batch, plaintexts: Sequence[bytes], nonces: bytes) -> list[bytes]:
    """The sealing loop: record ``i`` gets nonce ``nonces[12i:12i+12]``; output in input order.

    Groups run one after the other, so consecutive calls use one AES-GCM object whose key
    schedule and GHASH table stay in cache (10k subjects round-robin: 0.72x of a one-key
    loop in input order, 0.94x grouped; /tmp measurements in the issue note), and the
    group's bound method, prefix and tail are looked up once, not per record. The groups
    come from the :class:`Batch`'s lists in this frame (no generator, no tuple per group:
    ~1 % of a 1 KiB record, issue 23's second profile).
    """
    try:
        return _seal_loops(batch, plaintexts, nonces)
    except TypeError:
        # a buffer AES-GCM does not take as bytes (wide items: an array('H'), a NumPy
        # uint16 array, a cast memoryview) or no buffer: sealed again as _octets takes
        # them, or its TypeError. Converted only then: a type pass over every batch cost
        # ~50 ns per record (issue 23). The first pass's records are dropped unseen, so
        # sealing again under the same nonces shows no nonce twice.
        if {*map(type, plaintexts)} <= _OCTET_TYPES:
            raise
        return _seal_loops(batch, [_octets(p) for p in plaintexts], nonces)  # type: ignore[misc]


def _seal_loops(batch: Batch, plaintexts: Sequence[bytes], nonces: bytes) -> list[bytes]:
    """:func:`seal_planned`'s loops."""
    order = batch.order
    done: list[bytes] = [b""] * len(plaintexts)
    start = 0
    try:  # around the loops, not in them: no cost per record
        for key, tail, end in zip(batch.keys, batch.tails, batch.ends, strict=True):
            enc = key._aead.encrypt
            prefix = key._prefix
            for i in order[start:end]:
                nonce = nonces[NONCE_SIZE * i : NONCE_SIZE * i + NONCE_SIZE]
                header = prefix + nonce
                done[i] = header + enc(nonce, plaintexts[i], header + tail)
            start = end
    except OverflowError:  # cryptography's length check (MAX_PLAINTEXT_BYTES)
        raise _too_large() from None
    except BufferError:
        raise _strided() from None
    return done


def open_planned(batch: Batch, records: Sequence[bytes]) -> list[bytes]:
    """The opening loop, all-or-nothing (:class:`IntegrityError` if any record fails).

    Per record: one C-level ``startswith`` checks magic, version, suite and commitment
    against the key's expected 38-byte prefix (all public: the commitment is in every
    record's header, so this comparison needs no constant time); any mismatch takes the
    slow path, which names the exact problem.
    """
    order = batch.order
    done: list[bytes] = [b""] * len(records)
    start = 0
    groups = zip(batch.keys, batch.tails, batch.ends, batch.subjects, batch.contexts, strict=True)
    for key, tail, end, subject, context in groups:
        dec = key._aead.decrypt
        prefix = key._prefix
        for i in order[start:end]:
            record = records[i]
            if not (type(record) is bytes and record.startswith(prefix)):
                record = _check_record(record, key)
            header = record[:HEADER_SIZE]
            try:
                done[i] = dec(header[PREFIX_SIZE:], record[HEADER_SIZE:], header + tail)
            except (InvalidTag, ValueError) as exc:  # a record shorter than OVERHEAD lands here
                if len(record) < OVERHEAD:  # (a short nonce or tag: nothing decrypted)
                    parse(record)  # the precise FormatError (truncated)
                if not isinstance(exc, InvalidTag):
                    refuse_oversized(record, exc)
                    raise
                done[i] = _open_legacy(key, header, record[HEADER_SIZE:], subject, context)
            except BaseException as exc:  # no cost unless raised
                refuse_oversized(record, exc)
                raise
        start = end
    return done


def seal_planned_into(
    batch: Batch,
    plaintexts: Sequence[bytes],
    nonces: bytes,
    offsets: Sequence[int],
    view: memoryview,
) -> None:
    """:func:`seal_planned` into one buffer: record ``i`` at ``view[offsets[i]:offsets[i +
    1]]`` (its plaintext's length + :data:`OVERHEAD`), sealed in place (``encrypt_into``)
    in the batch's groups, one key after the other as :func:`seal_planned` seals them (in
    input order, a different key every record cost the AEAD calls 25-40 %, issue 23).
    ``plaintexts`` are ``bytes`` within :data:`MAX_PLAINTEXT_BYTES` (checked by the caller)."""
    offs = list(offsets)
    order = batch.order
    start = 0
    for key, tail, end in zip(batch.keys, batch.tails, batch.ends, strict=True):
        enc = key._aead.encrypt_into
        prefix = key._prefix
        for i in order[start:end]:
            pos = offs[i]
            nonce = nonces[NONCE_SIZE * i : NONCE_SIZE * i + NONCE_SIZE]
            header = prefix + nonce
            mid = pos + HEADER_SIZE
            view[pos:mid] = header
            enc(nonce, plaintexts[i], header + tail, view[mid : offs[i + 1]])
        start = end


def open_planned_into(
    batch: Batch, src: memoryview, offsets: Sequence[int], out: Sequence[int], view: memoryview
) -> None:
    """:func:`open_planned` from one buffer into another: record ``i`` is
    ``src[offsets[i]:offsets[i + 1]]`` (``src`` a view from the start of its object), its
    plaintext goes to ``view[out[i]:out[i + 1]]``, each opened in place (``decrypt_into``,
    the ciphertext read through the view: no copy), grouped by key. All-or-nothing:
    :class:`IntegrityError` (no detail; ``view`` zeroed) for any record it does not open, a
    failed tag or a header that does not name its group's key, so the caller asks
    :func:`open_planned`'s path why. Every record is :data:`OVERHEAD` to
    :data:`MAX_RECORD_BYTES` long (checked by the caller)."""
    whole = src.obj  # sliced for each header: bytes (or a bytearray), not a view
    order = batch.order
    start = 0
    try:
        for key, tail, end in zip(batch.keys, batch.tails, batch.ends, strict=True):
            dec = key._aead.decrypt_into
            prefix = key._prefix
            for i in order[start:end]:
                a = offsets[i]
                header = whole[a : a + HEADER_SIZE]  # type: ignore[index]
                if not header.startswith(prefix):
                    raise InvalidTag
                dec(
                    header[PREFIX_SIZE:],
                    src[a + HEADER_SIZE : offsets[i + 1]],
                    header + tail,
                    view[out[i] : out[i + 1]],
                )
            start = end
    except InvalidTag:
        view[:] = bytes(len(view))  # nothing opened, nothing unauthenticated, is left
        raise IntegrityError() from None


def _check_keys(keys: Iterable[object]) -> None:
    """:func:`_check_key` over many keys: one C-level pass when all are DataKeys."""
    if not {*map(type, keys)} <= _DATAKEY_TYPE:
        for k in keys:
            _check_key(k)


_DATAKEY_TYPE = frozenset((DataKey,))


def _batch_for(
    keys: Sequence[DataKey],
    subjects: Sequence[str],
    n: int,
    context: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None,
) -> Batch:
    if len(keys) != n or len(subjects) != n:
        raise ValueError("keys, subjects and records must have the same length")
    if not names._all_plain_str(subjects):
        # grouped by their text: a str subclass's own __eq__/__hash__ (one that ignores
        # case) put two subjects in one group, sealed with the first one's AAD
        subjects = [str.__str__(s) if isinstance(s, str) else s for s in subjects]
    shared, per_record = split_contexts(n, context)
    if per_record is not None:
        _check_keys(keys)
        tails = [encode_aad(s, c) for s, c in zip(subjects, per_record, strict=True)]
        return Batch(keys, tails, range(n), range(1, n + 1), subjects, per_record)
    shared_part = context_part(shared)
    uniq, order, ends = plan_groups(subjects)
    # each subject's key: its first record's; the usual batch gives all of a subject's
    # records that one key object (C-level passes), any other takes groups_by_key
    firsts = [keys[order[a]] for a in (0, *ends[:-1])] if n else []
    owner = dict(zip(uniq, firsts, strict=True))
    if not all(map(operator.is_, keys, map(owner.__getitem__, subjects))):
        return batch_of_groups(
            groups_by_key(subjects, keys, lambda s: subject_part(s) + shared_part, shared)
        )
    _check_keys(firsts)
    tails = [subject_part(s) + shared_part for s in uniq]
    return Batch(firsts, tails, order, ends, uniq, [shared] * len(uniq))


def encrypt_many(
    keys: Sequence[DataKey],
    subjects: Sequence[str],
    plaintexts: Sequence[bytes],
    context: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None = None,
    *,
    rng: RandomSource | None = None,
) -> list[bytes]:
    """Seal many records; ``keys[i]`` is the data key of ``subjects[i]``.

    ``context`` is either one mapping for every record or a sequence with one per record.
    Nonces are drawn in one call and the subject/context encoding is computed once per
    distinct (subject, shared context). Records are processed grouped by subject and
    returned in input order (:func:`seal_planned`).
    """
    batch = _batch_for(keys, subjects, len(plaintexts), context)
    nonces = (rng or default_rng()).random_bytes(NONCE_SIZE * len(plaintexts))
    return seal_planned(batch, plaintexts, nonces)


def _check_record(record: object, key: DataKey) -> bytes:
    """The slow path of the opening loop's header check: the precise error, or the record's
    bytes if it is fine after all (any buffer :func:`decrypt` takes, :func:`_octets`: a
    database driver may hand a column back as a ``bytearray`` or ``memoryview``)."""
    held = _octet_bytes(record, "record")
    if not hmac.compare_digest(parse(held).commitment, key.commitment):
        raise IntegrityError()
    return held


def decrypt_many(
    keys: Sequence[DataKey],
    subjects: Sequence[str],
    records: Sequence[bytes],
    context: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None = None,
) -> list[bytes]:
    """Open many records; raises :class:`IntegrityError` (no detail) if any fails.

    All-or-nothing on purpose: a caller that needs per-record outcomes calls :func:`decrypt`.
    """
    return open_planned(_batch_for(keys, subjects, len(records), context), records)


def _open_legacy(
    key: DataKey,
    header: bytes,
    body: bytes | memoryview,
    subject: str,
    context: Mapping[str, str] | None,
) -> bytes:
    """A record that failed under the canonical AAD: try its pre-NFC spellings, else
    :class:`IntegrityError`."""
    for tail in _legacy_tails(subject, context):
        try:
            return key._aead.decrypt(header[PREFIX_SIZE:], body, header + tail)
        except InvalidTag:
            continue
    raise IntegrityError()
