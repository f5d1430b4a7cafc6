"""One place for the text rules: subjects, context keys, custodian names, passphrases.

Why: Unicode has several spellings of the same visible text ("José" precomposed, NFC, or
"Jose" + combining acute, NFD, as macOS keyboards and file names produce). A subject is a
store key *and* part of each record's authenticated data, so two spellings used to mean two
data keys: ``shred("José")`` in NFC missed the NFD-spelled subject's key, and a passphrase
typed on another system derived another key.

The policy is **normalize on write, look up every spelling on read**:

* New data is always written under the NFC form (:func:`normalize_subject`,
  :func:`normalize_context`, :func:`normalize_passphrase`). NFC rather than rejecting
  non-NFC input, because callers cannot be expected to normalize (input methods differ);
  NFC rather than NFKC, because compatibility folding merges text that is *not* the same
  ("ﬁ" and "fi", superscripts), which for an identifier is a silent collision.
* Records, keys and sealed shares written *before* this rule may carry a non-NFC spelling,
  bound into their AAD or key derivation, so they cannot be renormalized in place. Reads
  and destructive operations therefore try :func:`subject_spellings` (NFC, then the exact
  spelling given, then NFD) and :func:`passphrase_candidates` (NFC, then the exact bytes);
  a record opens under the spelling whose key authenticates it, and ``shred`` removes every
  stored spelling's key (:func:`has_other_spellings` says when a stored spelling beyond
  those three can exist; the keyring then finds them in the store). NFC input costs
  nothing extra: its spellings list is usually one entry (two when NFD differs, which is
  the legacy macOS case the issue reported).
* Custodian names are a small ASCII alphabet (they reach file names, terminals and HPKE
  ``info``), so there is nothing to normalize: non-ASCII is refused outright, and names
  equal up to case are refused as duplicates (they collide on case-insensitive file systems).

Errors: these check arguments given to the API, so bad values are ``ValueError`` /
``TypeError``, as in :mod:`keysplit.record` today; parsers of stored data wrap them in
:class:`keysplit.errors.FormatError`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "CUSTODIAN_NAME_RE",
    "MAX_CONTEXT_ENTRIES",
    "MAX_CONTEXT_KEY_BYTES",
    "MAX_CONTEXT_VALUE_BYTES",
    "MAX_CUSTODIAN_NAME",
    "MAX_PASSPHRASE_BYTES",
    "MAX_SUBJECT_BYTES",
    "canonical_prefix",
    "canonical_subjects",
    "check_batch",
    "check_custodian_name",
    "check_custodian_names",
    "check_subject",
    "has_other_spellings",
    "is_nfc",
    "normalize_context",
    "normalize_context_key",
    "normalize_passphrase",
    "normalize_subject",
    "not_str_error",
    "passphrase_candidates",
    "subject_spellings",
]

MAX_SUBJECT_BYTES = 1024
"""UTF-8 bytes of a subject, after normalization (the same bound as the record format)."""
MAX_CONTEXT_ENTRIES = 256
MAX_CONTEXT_KEY_BYTES = 1024
MAX_CONTEXT_VALUE_BYTES = 1 << 16
MAX_CUSTODIAN_NAME = 64
MAX_PASSPHRASE_BYTES = 1 << 16
CUSTODIAN_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


def is_nfc(text: str) -> bool:
    """Whether ``text`` is already in Unicode Normalization Form C."""
    return unicodedata.is_normalized("NFC", text)


def not_str_error(text: object, what: str) -> TypeError:
    """The error for ``text`` (``what``: "subject", "context key", ...) that is not a
    ``str``, naming its type, and a null as such (a null from a database or a data frame
    reads better as that than as "not a str"). One wording for the library and the
    service's client, which refuses before sending what the engine would refuse."""
    if text is None:
        return TypeError(f"{what} must be a str, not None: {what}s cannot be null")
    return TypeError(f"{what} must be a str, not {type(text).__name__}")


def _utf8(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise not_str_error(text, what)
    try:  # str.encode: a subclass's own encode() must not choose the bytes bound
        return str.encode(text, "utf-8")
    except UnicodeEncodeError:  # lone surrogates
        raise ValueError(f"{what} is not valid Unicode text") from None


def _plain(text: str) -> str:
    """``text`` as a plain ``str``: a subclass (a caller's ``StrEnum``, a case-folding type)
    is copied with ``str.__str__``, not ``str()``, which calls the subclass's own ``__str__``
    (``"E.A"`` for a ``(str, Enum)`` member). A plain str goes on as it is."""
    return text if type(text) is str else str.__str__(text)


def _nfc(text: object, what: str) -> str:
    """The NFC form of ``text``, always a plain ``str``: what is returned becomes a store
    key, a dict key of the key caches and AAD, so a subclass's own ``__hash__``/``__eq__``
    (or ``encode``) must never reach them (a cached key a ``drop()`` by the plain spelling
    missed)."""
    _utf8(text, what)  # type and surrogates first: normalize() accepts lone surrogates
    assert isinstance(text, str)
    text = _plain(text)
    return text if is_nfc(text) else unicodedata.normalize("NFC", text)


def check_subject(subject: str) -> str:
    """The one subject check: the canonical (NFC) spelling, or ValueError (empty, too long,
    not valid Unicode, holding NUL) / TypeError (not a str).

    Every place a subject enters the library goes through it before the subject is used as
    a store key, encoded into a record's AAD, or compared with a token's prefix, so all
    three see the same text. ASCII (its own NFC form) costs three C-level checks.

    NUL (U+0000) is refused: PostgreSQL's text cannot hold it, so a store could keep a key
    that another could not, and no command line (argv) can name such a subject.
    """
    if (
        type(subject) is str
        and subject.isascii()
        and 0 < len(subject) <= MAX_SUBJECT_BYTES
        and "\x00" not in subject
    ):
        return subject
    out = _nfc(subject, "subject")
    if "\x00" in out:
        raise ValueError("subject must not contain NUL (U+0000)")
    n = len(out.encode("utf-8"))
    if n == 0:
        raise ValueError("subject must not be empty")
    if n > MAX_SUBJECT_BYTES:  # checked after NFC: normalization can lengthen text
        raise ValueError(f"subject must be at most {MAX_SUBJECT_BYTES} bytes of UTF-8")
    return out


normalize_subject = check_subject
"""The former name of :func:`check_subject`."""


def canonical_prefix(prefix: str) -> str:
    """A subject prefix (a token's scope) in the canonical form subjects are compared in:
    NFC, with no length bound (it is text to compare, not a subject). TypeError for a
    non-str, ValueError for text that is not valid Unicode."""
    return _nfc(prefix, "subject prefix")


_BYTES = (bytes, bytearray, memoryview)


def check_batch(subjects: object) -> None:
    """``TypeError`` for one string where a batch of subjects is due: iterated, its
    characters were taken for subjects (``data_keys("user-42", create=True)`` created keys
    for "u", "s", "e"...; ``Client.shred_many("alice")`` shredded "a", "l", "i"...)."""
    if isinstance(subjects, str | bytes):
        raise TypeError("subjects must be a sequence of subjects, not one string")
    # the batch calls put subjects first, unlike decrypt(record, subject=): swapped, the
    # records reached the subject check as "subject must be a str", naming no order
    if isinstance(subjects, list | tuple) and subjects and isinstance(subjects[0], _BYTES):
        raise TypeError(
            "subjects must be str, and come first: encrypt_many(subjects, plaintexts), "
            "decrypt_many(subjects, records) (subjects[0] is bytes)"
        )


def canonical_subjects(subjects: Sequence[str]) -> Sequence[str]:
    """:func:`normalize_subject` over a batch, cheap on the hot path: plain ``str`` out.

    An all-ASCII batch of plain ``str`` (the usual case: ASCII is its own NFC form) is
    returned as it is (the same object: callers test ``is`` to know the batch is all ASCII
    plain str; one type check per subject finds a ``str`` subclass, which is copied)
    after checks on one joined string (ASCII, NUL: each one C scan) and two passes over
    the list (none empty; the longest, only when the batch's text could hold a subject
    too long); only then is anything copied, and each distinct non-ASCII subject is
    normalized once. Every subject is checked here (empty, too long, NUL: ``ValueError``),
    before any key is asked for.
    """
    try:
        joined = "".join(subjects)
    except TypeError:  # not a str somewhere: normalize_subject names it
        joined = None
    if joined is not None and joined.isascii():
        if (
            "\x00" in joined
            or not all(subjects)  # an empty str is false
            or (len(joined) > MAX_SUBJECT_BYTES and max(map(len, subjects)) > MAX_SUBJECT_BYTES)
        ):
            for i, s in enumerate(subjects):
                try:
                    check_subject(s)  # the precise error
                except ValueError as exc:
                    raise ValueError(f"subjects[{i}]: {exc}") from None
        if _all_plain_str(subjects):
            return subjects
        return list(map(_plain, subjects))
    memo: dict[str, str] = {}
    out = []
    for i, s in enumerate(subjects):
        if type(s) is not str and isinstance(s, str):
            s = _plain(s)  # the memo is a dict: never a subclass's __hash__/__eq__
        c = memo.get(s) if isinstance(s, str) else None
        if c is None:
            try:
                c = memo[s] = normalize_subject(s)
            except (TypeError, ValueError) as exc:  # which of the batch: its index
                kind = TypeError if isinstance(exc, TypeError) else ValueError
                raise kind(f"subjects[{i}]: {exc}") from None
        out.append(c)
    return out


_PLAIN_STR = frozenset((str,))


def _all_plain_str(values: Iterable[object]) -> bool:
    """Whether every value is a plain ``str``, in one C-level pass: a ``str`` subclass's own
    ``__eq__``/``__hash__`` (one that ignores case) must never decide what text is bound."""
    return {*map(type, values)} <= _PLAIN_STR


def subject_spellings(subject: str) -> tuple[str, ...]:
    """Every spelling under which a key for ``subject`` may be stored: NFC first.

    Then the exact spelling given and its NFD form, when they differ (records written
    before normalization). Lookups try them in order; ``shred``/legal holds apply to all.
    """
    if isinstance(subject, str) and subject.isascii():
        return (normalize_subject(subject),)
    canon = normalize_subject(subject)
    out = [canon]
    for s in (_plain(subject), unicodedata.normalize("NFD", canon)):
        if s not in out and 0 < len(s.encode("utf-8")) <= MAX_SUBJECT_BYTES:
            out.append(s)
    return tuple(out)


_ASCII_WITH_TWINS = frozenset(";K`")
"""ASCII characters another code point decomposes to alone (U+037E, U+212A, U+1FEF)."""


class _Twins:
    """Code points that make a text's spelling not unique, from the Unicode database once:
    targets of singleton decompositions (U+212A KELVIN SIGN is "K") and starters that
    compose with a preceding starter (U+0BBE in Tamil U+0BCA)."""

    _tables: tuple[frozenset[str], frozenset[str]] | None = None

    @classmethod
    def tables(cls) -> tuple[frozenset[str], frozenset[str]]:
        if cls._tables is None:
            singles: set[str] = set()
            second: set[str] = set()
            for cp in range(0x110000):
                d = unicodedata.decomposition(chr(cp))
                if not d or d.startswith("<"):
                    continue
                full = unicodedata.normalize("NFD", chr(cp))
                if len(full) == 1:
                    singles.add(full)
                second.update(c for c in full[1:] if not unicodedata.combining(c))
            cls._tables = frozenset(singles), frozenset(second)
        return cls._tables


def has_other_spellings(subject: str) -> bool:
    """Whether text other than ``subject``'s NFC form may canonicalize to it.

    False only when provably not: no combining mark, nothing precomposed, no character
    another code point decomposes to alone, no Hangul, no starter that composes with the
    one before it. Then ``shred`` need not look for legacy spellings beyond the usual ones
    (:func:`subject_spellings`); otherwise the keyring looks the store over once per
    session for every stored spelling (``LocalDataKeys.stored_spellings``).
    """
    canon = check_subject(subject)
    if canon.isascii():
        return not _ASCII_WITH_TWINS.isdisjoint(canon)
    if unicodedata.normalize("NFD", canon) != canon:
        return True
    singles, second = _Twins.tables()
    for c in canon:
        if unicodedata.combining(c) or c in singles or c in second:
            return True
        if "\u1100" <= c <= "\u11ff" or "\uac00" <= c <= "\ud7a3" or "\u3130" <= c <= "\u318f":
            return True  # Hangul composes algorithmically
    return False


def normalize_context_key(key: str) -> str:
    """The canonical (NFC) spelling of a context key (may be empty; bounded)."""
    out = _nfc(key, "context key")
    if len(out.encode("utf-8")) > MAX_CONTEXT_KEY_BYTES:
        raise ValueError(f"a context key must be at most {MAX_CONTEXT_KEY_BYTES} bytes of UTF-8")
    return out


def normalize_context(context: Mapping[str, str] | None) -> dict[str, str]:
    """A context mapping with NFC keys, bounded; ValueError if two keys become equal.

    Values are data and stay byte-exact (only their type and size are checked): a value
    is compared as the caller wrote it, like the plaintext.
    """
    if context is None:
        return {}
    if not isinstance(context, Mapping):
        raise TypeError("context must be a mapping of str to str")
    if len(context) > MAX_CONTEXT_ENTRIES:
        raise ValueError(f"a context has at most {MAX_CONTEXT_ENTRIES} entries")
    out: dict[str, str] = {}
    for k, v in context.items():
        nk = normalize_context_key(k)
        if len(_utf8(v, "context value")) > MAX_CONTEXT_VALUE_BYTES:
            raise ValueError(f"a context value is at most {MAX_CONTEXT_VALUE_BYTES} bytes")
        if nk in out:
            raise ValueError("two context keys are the same text in different Unicode spellings")
        out[nk] = _plain(v)  # its text: a subclass's own encode()/__eq__ reach nothing after
    return out


def check_custodian_name(name: str) -> str:
    """Validate a custodian name: 1-64 of ``A-Z a-z 0-9 . _ @ + -``, starting alphanumeric.

    The same rule as ``keysplit.custody.check_custodian_name`` today; ASCII only, so
    there is no normalization to do, and look-alike letters from other scripts are refused.
    """
    if not isinstance(name, str):
        raise TypeError("custodian name must be str")
    if not CUSTODIAN_NAME_RE.fullmatch(name):
        raise ValueError(
            f"custodian name must be 1-{MAX_CUSTODIAN_NAME} characters of A-Z a-z 0-9 . _ @ + - "
            "(starting with a letter or digit)"
        )
    return name


def check_custodian_names(names: Iterable[str]) -> list[str]:
    """Validate every name and refuse duplicates, including names equal up to case."""
    if isinstance(names, str):
        raise TypeError("custodian names must be a sequence of names, not one string")
    out = [check_custodian_name(n) for n in names]
    folded = [n.casefold() for n in out]
    if len(set(folded)) != len(folded):
        raise ValueError("custodian names must be unique (ignoring case)")
    return out


def _passphrase_text(passphrase: bytes | bytearray | str) -> tuple[bytes, str | None]:
    if isinstance(passphrase, str):
        raw = _utf8(passphrase, "passphrase")
        return raw, passphrase
    if not isinstance(passphrase, (bytes, bytearray)):
        raise TypeError("passphrase must be bytes or str")
    raw = bytes(passphrase)
    try:
        return raw, raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw, None


def normalize_passphrase(passphrase: bytes | bytearray | str) -> bytes:
    """UTF-8 passphrases NFC-normalized; other bytes unchanged. ValueError if empty.

    The library's version of what the CLI did alone, so a passphrase typed on two systems
    derives the same key whichever front end sealed it.
    """
    raw, text = _passphrase_text(passphrase)
    if not raw:
        raise ValueError("passphrase must not be empty")
    if len(raw) > MAX_PASSPHRASE_BYTES:
        raise ValueError(f"passphrase must be at most {MAX_PASSPHRASE_BYTES} bytes")
    if text is None or is_nfc(text):
        return raw
    return unicodedata.normalize("NFC", text).encode("utf-8")


def passphrase_candidates(passphrase: bytes | bytearray | str) -> tuple[bytes, ...]:
    """Passphrases to try when *opening*: the NFC form, then the exact bytes if different.

    Shares sealed by the library before it normalized may have used non-NFC bytes; the
    second try (one extra KDF run, only for non-NFC input) keeps them openable.
    """
    raw, _ = _passphrase_text(passphrase)
    canon = normalize_passphrase(passphrase)
    return (canon,) if canon == raw else (canon, raw)
