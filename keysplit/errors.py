"""The keysplit exception hierarchy.

Every failure that comes from bad *data* (a share, a keyring file, a ciphertext) is a
:class:`KeysplitError`; caller misuse of the API (wrong types, impossible parameters) is
``ValueError``/``TypeError`` as usual in Python. Messages never contain secret bytes.
Integrity failures are deliberately detail-free (like ``cryptography``'s ``InvalidTag``):
telling an attacker *which* check failed helps them, telling a custodian which *share* is
bad helps them, so share errors name the share and nothing more.
"""

from __future__ import annotations

__all__ = [
    "AuditError",
    "ChecksumError",
    "ClusterError",
    "CustodianError",
    "DuplicateShareError",
    "FormatError",
    "InsufficientSharesError",
    "IntegrityError",
    "KeyringError",
    "KeysplitError",
    "LegalHoldError",
    "MixedSharesError",
    "NoDataKeyError",
    "PermissionDenied",
    "RecoveryError",
    "SealedError",
    "ShareError",
    "ShreddedError",
    "StoreUnreachableError",
    "UntrustedKeyringError",
]


class KeysplitError(Exception):
    """Base class of every error keysplit raises for bad input data.

    ``hint`` is an optional, secret-free suggestion the CLI prints as ``hint: ...``.
    """

    def __init__(self, message: str = "", *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __reduce__(self) -> tuple[object, ...]:
        """Rebuilt from its message and attributes without calling ``__init__``: errors
        cross process boundaries (multiprocessing pools, Dask, the job driver), and
        Python's default calls ``cls(*args)``, which fails for every subclass whose
        constructor wants more (``VerifyIncomplete(missing=...)``, ``KekInUseError``...)."""
        return (_rebuild, (type(self), self.args), self.__dict__)


def by_name(
    kind: object,
    message: str,
    hint: str | None = None,
    *,
    other: type[KeysplitError] | None = None,
) -> KeysplitError:
    """The error another process reported by its class name (the job driver's child, the
    jobs' key server): a class of this module by its name, built without its constructor;
    any other name is ``other`` (default :class:`KeysplitError`), whose text starts with
    the name (kept, never looked up)."""
    fallback = other or KeysplitError
    cls = globals().get(kind) if isinstance(kind, str) and kind in __all__ else None
    if not (isinstance(cls, type) and issubclass(cls, KeysplitError)):
        cls = fallback
        named = isinstance(kind, str) and kind.isidentifier() and len(kind) <= 64
        if named and kind != fallback.__name__:
            message = f"{kind}: {message}" if message else str(kind)
    exc = cls.__new__(cls, message)
    KeysplitError.__init__(exc, message, hint=hint)
    return exc


def _rebuild(cls: type[KeysplitError], args: tuple[object, ...]) -> KeysplitError:
    """The unpickling half of :meth:`KeysplitError.__reduce__`."""
    if not (isinstance(cls, type) and issubclass(cls, KeysplitError)):
        raise TypeError("not a keysplit error class")
    return cls.__new__(cls, *args)


class IntegrityError(KeysplitError):
    """Authentication failed: tampered, truncated, swapped or mis-keyed ciphertext.

    Carries no detail on purpose, so that it is no oracle.
    """

    def __init__(self, message: str = "authentication failed", *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)


class ShreddedError(KeysplitError):
    """The record's subject was shredded: its data key is gone for good, on purpose.

    Raised instead of :class:`IntegrityError` when the store holds a tombstone for the
    subject, so a backend can tell an erasure it was asked for from tampering. Says
    nothing about the record's bytes (they were never authenticated).
    """

    def __init__(
        self, message: str = "the subject was shredded", *, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)


class NoDataKeyError(KeysplitError):
    """The subject never had a data key here (no key and no tombstone): a wrong subject
    id, a record from another keyring or store, or a store restored from an old backup."""

    def __init__(
        self, message: str = "the subject has no data key", *, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)


class FormatError(KeysplitError):
    """Input is not a well-formed keysplit object (bad magic, version, length, encoding)."""


class ShareError(KeysplitError):
    """A problem with one or more shares; ``index`` names the share at fault if known."""

    def __init__(self, message: str, *, index: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.index = index


class ChecksumError(ShareError, FormatError):
    """A share's checksum does not match: a typo or corruption."""


class MixedSharesError(ShareError):
    """Shares come from different splits or disagree on parameters."""


class DuplicateShareError(ShareError):
    """The same share (index) was supplied twice."""


class InsufficientSharesError(ShareError):
    """Fewer shares than the threshold."""


class RecoveryError(ShareError):
    """The shares combined, but the recovered secret failed its check value.

    Never returned as a key: at least one share is wrong (forged or from a different split
    that reused its parameters).
    """


class CustodianError(KeysplitError):
    """A protected share could not be opened: wrong identity, passphrase or recipient."""


class KeyringError(KeysplitError):
    """A keyring directory or key store is missing, inconsistent or from another keyring."""


class SealedError(KeyringError):
    """The operation needs an unsealed keyring."""


class StoreUnreachableError(KeyringError):
    """The key store cannot serve the call now: its server cannot be reached (down,
    restarting, cut off) or does not answer, or the call waited out its bound for a lock
    another writer held or for a free pooled connection. Raised within the store's stated
    bound instead of waiting; names where it looked (host, port), never a password. A
    condition that passes: nothing was changed (unless the message says a change's outcome
    is unknown), and the same call succeeds once it has passed; a service answers 503."""


class LegalHoldError(KeyringError):
    """A subject under legal hold cannot be shredded."""


class UntrustedKeyringError(KeyringError):
    """A keyring's public key does not match the fingerprint the caller trusts (or none is
    pinned and one is required): sealing to it could hand the data to whoever replaced it.
    """


class PermissionDenied(KeysplitError):
    """A key-service token is missing, unknown, revoked or outside its policy."""


class AuditError(KeysplitError):
    """The audit trail is broken: an entry was edited, removed, reordered or appended badly.

    ``seq`` is the sequence number of the first bad entry when one can be named.
    """

    def __init__(self, message: str, *, seq: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.seq = seq


class ClusterError(KeysplitError):
    """A key-cluster protocol step failed (a bad dealing, sub-share, proof or answer).

    ``node`` names the cluster node at fault (its index, or its name where the caller knows
    it) when one can be named, so that it can be excluded and reported.
    """

    def __init__(
        self, message: str, *, node: int | str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.node = node
