"""Key ceremonies, each one library call: quorum in, keyring operation, shares out, one entry.

Every ceremony that changes or uses a keyring runs the same four steps, and they live here
so that the CLI, the demo and (later) a key service only prompt, print or relay:

1. checks that cost nothing (targets for new shares free, a pending rekey to abort, a file
   sealed to this keyring) run *before* anyone is asked for a share;
2. the quorum: a :class:`Quorum` collects shares through its feed (prompts in the CLI, a
   list in the demo, a network channel in a service) and unseals the keyring; shares of an
   interrupted rekey complete it here, recorded as a recovered ``rekey``;
3. the keyring operation, through the public methods of :class:`UnsealedKeyring`;
4. new shares (init, rekey) sealed per :class:`Custody` and written through a
   :class:`ShareSink` (a directory today); if writing fails, what was written is removed
   (and a rekey aborted, so the old shares keep working); then exactly one typed entry
   from :mod:`keysplit.audit.events` is appended to the keyring's MACed log.

This module is the audit seam: the keyring's ``on_event`` hook has no caller and is left
for removal (one vocabulary, written here). Errors are :class:`KeysplitError` subclasses
(or ``OSError`` from the file system) with secret-free messages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from . import (
    Argon2Params,
    Keyring,
    KeyringError,
    KeysplitError,
    Recipient,
    RewrapResult,
    Share,
    StreamInfo,
    UnsealedKeyring,
    UnsealProgress,
    read_header,
    recipient_id,
    seal_share,
    seal_share_with_passphrase,
)
from . import decrypt_file as _decrypt_file
from .audit import AuditEntry, AuditReport
from .audit import events as ev
from .audit.events import Contributor, ShareRecord
from .files import atomic_write

__all__ = [
    "Contributor",
    "Custody",
    "DirectorySink",
    "Done",
    "InitResult",
    "Quorum",
    "QuorumFeed",
    "RekeyResult",
    "RewrapRunner",
    "ShareFileExists",
    "ShareSink",
    "WrittenShare",
    "abort_rekey",
    "decrypt_file",
    "hold",
    "init",
    "rekey",
    "repair_audit",
    "retire",
    "rewrap",
    "rotate",
    "share_file_text",
    "shred",
    "unseal_check",
]

T = TypeVar("T")


# -- custodians and their share files ---------------------------------------------------------


@dataclass(frozen=True)
class Custody:
    """How one custodian's new share is protected: a public key, a passphrase, or (demos and
    tests only) nothing."""

    name: str
    recipient: Recipient | None = None
    passphrase: bytes | None = field(default=None, repr=False)

    @property
    def protection(self) -> str:
        if self.recipient is not None:
            return f"key {self.recipient.fingerprint}"
        return "passphrase" if self.passphrase is not None else "none (plain)"

    @property
    def plain(self) -> bool:
        return self.recipient is None and self.passphrase is None

    def seal(self, share: Share, *, kdf: Argon2Params | None = None) -> bytes:
        """The bytes of this custodian's share file."""
        if self.recipient is not None:
            return seal_share(share, self.recipient)
        if self.passphrase is not None:
            return seal_share_with_passphrase(share, self.name, self.passphrase, kdf=kdf)
        return share_file_text(share, self.name).encode()

    def __repr__(self) -> str:
        return f"Custody({self.name!r}, {self.protection})"


def share_file_text(share: Share, custodian: str | None = None) -> str:
    """A plain share file: two comment lines and the typable share text."""
    who = f" for custodian {custodian}" if custodian else ""
    return (
        f"# keysplit share {share.index} of {share.count}{who} "
        f"(any {share.threshold} recover the secret)\n"
        f"# set id {share.set_id_hex}\n"
        f"{share}\n"
    )


@dataclass(frozen=True)
class WrittenShare:
    """A new share as handed out: who, where (``location``), its fingerprint, protection."""

    custodian: str
    index: int
    location: str
    fingerprint: str
    protection: str

    def record(self) -> ShareRecord:
        return ShareRecord(self.custodian, self.index, self.fingerprint, self.protection)

    def as_dict(self) -> dict[str, str | int]:
        return {
            "custodian": self.custodian,
            "index": self.index,
            "file": self.location,
            "share": self.fingerprint,
            "protection": self.protection,
        }


class ShareFileExists(KeysplitError):
    """A new share would overwrite an existing share file (checked before any key exists)."""


class ShareSink(Protocol):
    """Where a ceremony's new share files go (a directory today; a service channel later).

    ``reserve`` runs before any key exists and must refuse (raise) rather than ever let a
    later ``write`` overwrite something. ``write`` stores one sealed share durably and
    returns where it went. ``discard`` removes everything this sink wrote in this ceremony
    (the crash cleanup: a partial share set is worse than none); it must not raise.
    """

    def reserve(self, custody: Sequence[Custody], generation: int) -> None: ...

    def write(self, custody: Custody, generation: int, data: bytes) -> str: ...

    def discard(self) -> None: ...


class DirectorySink:
    """Share files ``NAME.gGENERATION.kss`` (``.txt`` when plain) in one directory, 0600."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._written: list[Path] = []
        self._reserved: list[Path] = []

    def path(self, custody: Custody, generation: int) -> Path:
        ext = "txt" if custody.plain else "kss"
        return self.directory / f"{custody.name}.g{generation}.{ext}"

    def reserve(self, custody: Sequence[Custody], generation: int) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        paths = [self.path(c, generation) for c in custody]
        for p in paths:
            if p.exists():
                raise ShareFileExists(f"refusing to overwrite existing share file: {p}")
        self._reserved = paths

    def write(self, custody: Custody, generation: int, data: bytes) -> str:
        path = self.path(custody, generation)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(path, data, overwrite=False)
        self._written.append(path)
        return str(path)

    def discard(self) -> None:
        # The reserved names too: a write that failed after its rename is not in _written.
        for p in dict.fromkeys([*self._written, *self._reserved]):
            with contextlib.suppress(OSError):
                p.unlink()
        self._written.clear()

    def __repr__(self) -> str:
        return f"DirectorySink({str(self.directory)!r})"


def _hand_out(
    shares: dict[str, Share],
    custody: Sequence[Custody],
    sink: ShareSink,
    generation: int,
    kdf: Argon2Params | None,
) -> list[WrittenShare]:
    """Seal each share for its custodian and write it; on any failure remove them all."""
    out = []
    try:
        for c in custody:
            share = shares[c.name]
            location = sink.write(c, generation, c.seal(share, kdf=kdf))
            out.append(WrittenShare(c.name, share.index, location, share.fingerprint, c.protection))
    except BaseException:
        sink.discard()
        raise
    return out


# -- the quorum -------------------------------------------------------------------------------

QuorumFeed = Callable[["Quorum"], None]
"""Adds shares to a :class:`Quorum` (``quorum.add``) until ``quorum.progress.complete`` or it
gives up; errors it raises end the ceremony."""


class Quorum:
    """The shares of one ceremony, fed lazily so a ceremony's cheap checks run first.

    ``feed`` is a :data:`QuorumFeed` (the CLI's prompts, a service's channel) or a list of
    shares. ``contributors`` names who gave a share (no share bytes). ``on_recovered`` is
    called if these shares were the new set of an interrupted rekey, which unsealing
    completes (the ceremony also records it as a recovered ``rekey``).
    """

    def __init__(
        self,
        keyring: Keyring,
        feed: QuorumFeed | Sequence[Share],
        *,
        on_recovered: Callable[[], None] | None = None,
    ) -> None:
        self.keyring = keyring
        self._feed = feed
        self._unsealer = keyring.unsealer()
        self.contributors: list[Contributor] = []
        self.on_recovered = on_recovered
        self.recovered = False

    def add(self, share: Share) -> UnsealProgress:
        """Check one share against the keyring at once (see :meth:`Unsealer.add`)."""
        progress = self._unsealer.add(share)
        who = progress.custodian or "unknown custodian"
        self.contributors.append(Contributor(who, share.index, share.fingerprint))
        return progress

    @property
    def progress(self) -> UnsealProgress:
        return self._unsealer.progress

    def unseal(self) -> UnsealedKeyring:
        """Gather the shares (through the feed) and unseal; raises if they fall short."""
        if callable(self._feed):
            self._feed(self)
        else:
            for share in self._feed:
                self.add(share)
        kr = self.keyring
        before = kr.meta.generation
        ukr = self._unsealer.finish()
        if kr.meta.generation != before:
            self.recovered = True
            if self.on_recovered is not None:
                self.on_recovered()
            ev.record(
                ukr.audit_log(),
                ev.RekeyRecovered(
                    generation=kr.meta.generation,
                    custodians=[c.name for c in kr.meta.custodians],
                    authorized_by=self.contributors,
                ),
            )
        return ukr

    def __repr__(self) -> str:
        p = self.progress
        return f"Quorum({self.keyring.keyring_id}, {p.have}/{p.need})"


@contextlib.contextmanager
def _unsealed(quorum: Quorum) -> Iterator[UnsealedKeyring]:
    with quorum.unseal() as ukr:
        yield ukr


@dataclass(frozen=True)
class Done(Generic[T]):
    """What a ceremony did: its ``value``, the audit ``entry`` (None if nothing was recorded)
    and the quorum that authorized it."""

    value: T
    entry: AuditEntry | None
    contributors: Sequence[Contributor] = ()


# -- init / rekey -----------------------------------------------------------------------------


@dataclass(frozen=True)
class InitResult:
    keyring: Keyring
    shares: Sequence[WrittenShare]
    entry: AuditEntry


def init(
    directory: str | Path,
    threshold: int,
    custody: Sequence[Custody],
    sink: ShareSink,
    *,
    kdf: Argon2Params | None = None,
) -> InitResult:
    """Create a keyring K-of-N among ``custody`` and hand every custodian their share.

    If a share cannot be written, the ones written are removed and :class:`KeyringError`
    says the new keyring can never be unsealed (it must be removed by hand).
    """
    sink.reserve(custody, 1)
    kr, shares = Keyring.create(directory, threshold, [c.name for c in custody])
    try:
        written = _hand_out(shares, custody, sink, 1, kdf)
    except (OSError, KeysplitError) as exc:
        raise KeyringError(
            f"could not write the share files ({exc}); the keyring at {directory} was created "
            "but can never be unsealed",
            hint=f"remove {directory} and run init again",
        ) from None
    with kr.unseal(list(shares.values())[:threshold]) as ukr:
        entry = ev.record(
            ukr.audit_log(),
            ev.Init(
                keyring_id=kr.keyring_id,
                generation=kr.meta.generation,
                threshold=threshold,
                custodians=[w.record() for w in written],
            ),
        )
    shares.clear()
    return InitResult(kr, written, entry)


@dataclass(frozen=True)
class RekeyResult:
    generation: int
    threshold: int
    shares: Sequence[WrittenShare]
    entry: AuditEntry
    contributors: Sequence[Contributor]


def rekey(
    keyring: Keyring,
    quorum: Quorum,
    custody: Sequence[Custody],
    sink: ShareSink,
    *,
    threshold: int | None = None,
    kdf: Argon2Params | None = None,
) -> RekeyResult:
    """New master key and shares for ``custody``; every old share dies.

    Two-phase: the new shares are written before the switch, so if writing fails the
    pending rekey is aborted, the new files are removed and the old shares still work.
    ``threshold`` defaults to the current one, capped at the number of custodians.
    """
    k = threshold if threshold is not None else min(keyring.meta.threshold, len(custody))
    generation = keyring.meta.generation + 1
    sink.reserve(custody, generation)
    with _unsealed(quorum) as ukr:
        old = keyring.meta
        shares = ukr.prepare_rekey(threshold=k, custodians=[c.name for c in custody])
        try:
            written = _hand_out(shares, custody, sink, generation, kdf)
        except BaseException:
            ukr.abort_rekey()
            raise
        ukr.commit_rekey()
        shares.clear()
        entry = ev.record(
            ukr.audit_log(),
            ev.Rekey(
                generation=keyring.meta.generation,
                old_threshold=old.threshold,
                old_custodians=[c.name for c in old.custodians],
                threshold=k,
                custodians=[w.record() for w in written],
                authorized_by=quorum.contributors,
            ),
        )
    return RekeyResult(keyring.meta.generation, k, written, entry, quorum.contributors)


def abort_rekey(keyring: Keyring, quorum: Quorum) -> Done[bool]:
    """Discard an unfinished rekey (left by a crash) with a quorum of the current shares.

    Raises :class:`KeyringError` before asking for shares if none is pending. The value is
    whether one was still there once unsealed (only then is ``rekey-abort`` recorded).
    """
    if keyring.status().pending_rekey is False:
        raise KeyringError("no rekey is pending for this keyring")
    entry = None
    with _unsealed(quorum) as ukr:
        existed = ukr.abort_rekey()
        if existed:
            entry = ev.record(
                ukr.audit_log(),
                ev.RekeyAbort(
                    generation=keyring.meta.generation, authorized_by=quorum.contributors
                ),
            )
    return Done(existed, entry, quorum.contributors)


# -- ceremonies on an unsealed keyring --------------------------------------------------------


def _run(
    quorum: Quorum, op: Callable[[UnsealedKeyring], T], event: Callable[[T], ev.Event]
) -> Done[T]:
    """Unseal, do ``op``, record ``event(result)``: the shape of every one-step ceremony."""
    with _unsealed(quorum) as ukr:
        value = op(ukr)
        entry = ev.record(ukr.audit_log(), event(value))
    return Done(value, entry, quorum.contributors)


def unseal_check(keyring: Keyring, quorum: Quorum) -> Done[None]:
    """An unseal drill: the quorum's shares and the recovered master key verify."""
    return _run(
        quorum,
        lambda ukr: None,
        lambda _: ev.UnsealCheck(keyring.meta.generation, quorum.contributors),
    )


def rotate(keyring: Keyring, quorum: Quorum) -> Done[int]:
    """A new KEK version for new data keys; the value is its number (then :func:`rewrap`)."""
    return _run(quorum, lambda ukr: ukr.rotate(), lambda v: ev.Rotate(v, quorum.contributors))


RewrapRunner = Callable[[UnsealedKeyring, int, Callable[[int, int], None] | None], RewrapResult]
"""``runner(ukr, batch_size, progress)``: who does a rewrap's work (default: ``ukr.rewrap``)."""


def rewrap(
    keyring: Keyring,
    quorum: Quorum,
    *,
    batch_size: int = 10_000,
    progress: Callable[[int, int], None] | None = None,
    runner: RewrapRunner | None = None,
) -> Done[RewrapResult]:
    """Re-wrap every data key under the current KEK (resumable: each batch commits).

    ``runner`` does the work elsewhere, e.g. on a Dask cluster (:func:`keysplit.jobs.rewrap`),
    recorded as the same one ``rewrap`` entry."""
    run = runner or (lambda ukr, b, p: ukr.rewrap(batch_size=b, progress=p))
    return _run(
        quorum,
        lambda ukr: run(ukr, batch_size, progress),
        lambda r: ev.Rewrap(r.kek_version, r.rewrapped, r.remaining, quorum.contributors),
    )


def retire(keyring: Keyring, quorum: Quorum, version: int) -> Done[None]:
    """Delete KEK ``version`` (no data key may still use it)."""
    return _run(
        quorum, lambda ukr: ukr.retire(version), lambda _: ev.Retire(version, quorum.contributors)
    )


def shred(keyring: Keyring, quorum: Quorum, subject: str) -> Done[bool]:
    """Destroy ``subject``'s data key (refused under legal hold); value: whether it existed.

    Recorded either way, so a request to erase a subject is on file even if it had no key.
    """
    return _run(
        quorum,
        lambda ukr: ukr.shred(subject),
        lambda existed: ev.Shred(subject, existed, quorum.contributors),
    )


def hold(keyring: Keyring, quorum: Quorum, subject: str, on: bool) -> Done[None]:
    """Place (``on``) or lift a legal hold on ``subject``."""
    return _run(
        quorum,
        lambda ukr: ukr.set_legal_hold(subject, on),
        lambda _: ev.LegalHold(subject, on, quorum.contributors),
    )


def decrypt_file(
    keyring: Keyring,
    quorum: Quorum,
    in_path: str,
    out_path: str,
    *,
    context: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> Done[StreamInfo]:
    """Decrypt a file sealed to the keyring (``-``: stdin/stdout) and record it.

    A file sealed to another keyring is refused before any share is asked for.
    """
    if in_path != "-":
        with open(in_path, "rb") as fh:
            header = read_header(fh)
        mine = recipient_id(keyring.public_key)
        if header.recipient_id != mine:
            raise KeyringError(
                f"{in_path} is sealed to another keyring",
                hint=f"its key id is {header.recipient_id.hex()}, this keyring's {mine.hex()}",
            )
    return _run(
        quorum,
        lambda ukr: _decrypt_file(in_path, out_path, ukr, context=context, overwrite=overwrite),
        lambda r: ev.Decrypt(
            in_path, r.plaintext_size, dict(r.header.context), quorum.contributors
        ),
    )


def repair_audit(keyring: Keyring, quorum: Quorum) -> Done[AuditReport]:
    """Drop a torn last line of the audit log (complete entries untouched) and record that.

    The rest of the log must verify (chain and MACs) before and after; ``entry`` is None
    when there was nothing to repair.
    """
    entry = None
    with _unsealed(quorum) as ukr:
        log = ukr.audit_log()
        dropped = log.repair_torn_tail()
        report = log.verify()
        if dropped:
            entry = ev.record(log, ev.AuditRepair(authorized_by=quorum.contributors))
            report = log.verify()
    return Done(report, entry, quorum.contributors)
