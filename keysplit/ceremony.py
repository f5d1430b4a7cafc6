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

This module is the audit seam (one vocabulary, :mod:`keysplit.audit.events`, written here).
It is also where sealing to a keyring without a quorum checks the keyring's fingerprint
against the user's trust anchor (:func:`trust_keyring`, :func:`encrypt_file`). Errors are
:class:`KeysplitError` subclasses (or ``OSError`` from the file system) with secret-free
messages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Generic, Protocol, TypeVar

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
    trust,
)
from . import decrypt_file as _decrypt_file
from . import encrypt_file as _encrypt_file
from . import encrypt_stream as _encrypt_stream
from .audit import AuditEntry, AuditReport
from .audit import events as ev
from .audit.events import Contributor, ShareRecord
from .errors import InsufficientSharesError, UntrustedKeyringError
from .files import atomic_write
from .keyring.home import PENDING_FILE
from .proof import PendingVerification, VerifyIncomplete, VerifyStatus, verify_path

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
    "Sealed",
    "ShareFileExists",
    "ShareSink",
    "SheetWriter",
    "TrustState",
    "Verification",
    "WrittenShare",
    "abort_rekey",
    "decrypt_file",
    "encrypt_file",
    "encrypt_stream",
    "hold",
    "init",
    "pending_verification",
    "pin_keyring",
    "prove",
    "rekey",
    "repair_audit",
    "retire",
    "rewrap",
    "rotate",
    "share_file_text",
    "shred",
    "trust_keyring",
    "trust_state",
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
    """Share files ``NAME.gGENERATION.kss`` in one directory, 0600.

    One name whatever the protection (sealed, or plain ``ks1`` text for demos and tests):
    readers detect the content, so a runbook's paths do not depend on how shares were
    protected."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._written: list[Path] = []
        self._reserved: list[Path] = []

    def path(self, custody: Custody, generation: int) -> Path:
        return self.directory / f"{custody.name}.g{generation}.kss"

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


class SheetWriter:
    """Printable share sheets ``NAME.gGENERATION.pdf`` (:mod:`keysplit.sheet`), one per
    custodian, mode 0600. A sheet copies the exact bytes of its custodian's share file, in
    the same protection: a sealed share stays sealed on paper (and says which identity or
    passphrase opens it); only a plain share file gives a clear sheet."""

    def __init__(self, directory: str | Path, keyring_id: str | None = None) -> None:
        self.directory = Path(directory)
        self.keyring_id = keyring_id
        self._written: list[Path] = []

    def path(self, custodian: str, generation: int) -> Path:
        return self.directory / f"{custodian}.g{generation}.pdf"

    def reserve(self, custody: Sequence[Custody], generation: int) -> None:
        from .sheet import _libs  # the optional 'sheets' extra: fail before any key exists

        _libs()
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for c in custody:
            if self.path(c.name, generation).exists():
                raise ShareFileExists(
                    f"refusing to overwrite existing sheet: {self.path(c.name, generation)}"
                )

    def write(self, custodian: str, generation: int, share_file: bytes, keyring_id: str) -> str:
        """Write the sheet of ``share_file`` (the bytes the custodian's share file holds)."""
        from .sheet import sheet_for_file, write_pdf

        path = self.path(custodian, generation)
        write_pdf(path, [sheet_for_file(share_file, custodian, keyring_id)])
        self._written.append(path)
        return str(path)

    def discard(self) -> None:
        for p in self._written:
            with contextlib.suppress(OSError):
                p.unlink()
        self._written.clear()


def _hand_out(
    shares: dict[str, Share],
    custody: Sequence[Custody],
    sink: ShareSink,
    generation: int,
    kdf: Argon2Params | None,
    sheets: tuple[SheetWriter, str] | None = None,
) -> list[WrittenShare]:
    """Seal each share for its custodian and write it (and its sheet); on any failure
    remove them all."""
    out = []
    try:
        for c in custody:
            share = shares[c.name]
            data = c.seal(share, kdf=kdf)
            location = sink.write(c, generation, data)
            if sheets is not None:
                sheets[0].write(c.name, generation, data, sheets[1])
            out.append(WrittenShare(c.name, share.index, location, share.fingerprint, c.protection))
    except BaseException:
        sink.discard()
        if sheets is not None:
            sheets[0].discard()
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
        complete_missing: Sequence[str] | None = None,
    ) -> None:
        self.keyring = keyring
        self._feed = feed
        self._unsealer = keyring.unsealer()
        self.contributors: list[Contributor] = []
        self.on_recovered = on_recovered
        self.recovered = False
        self.complete_missing = None if complete_missing is None else list(complete_missing)
        """Set (even empty) to complete a pending ``--verify`` with exactly these missing."""
        self._set_ids: set[str] = set()

    def add(self, share: Share) -> UnsealProgress:
        """Check one share against the keyring at once (see :meth:`Unsealer.add`)."""
        progress = self._unsealer.add(share)
        self._set_ids.add(share.set_id.hex())
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
        verification = self._gate()
        before = kr.meta.generation
        ukr = self._unsealer.finish()
        if verification is not None and (
            verification.kind == "init" or kr.meta.generation != before
        ):
            _record_verified(ukr, verification, self.contributors)
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

    def _gate(self) -> Verification | None:
        """The ``--verify`` rule, before the master key is recovered: a keyring made with
        ``init --verify`` serves no ceremony, and a rekey made with ``rekey --verify`` does
        not switch, until every custodian proved possession (or the missing are named)."""
        kr = self.keyring
        v = pending_verification(kr)
        to_new = kr.pending is not None and kr.pending.set_id in self._set_ids
        if v is None or (v.kind == "rekey" and not to_new):
            if self.complete_missing is not None:
                raise KeyringError(
                    "no share generation of these shares awaits verification"
                    if v is None
                    else "completing a verified rekey needs a quorum of the NEW shares",
                    hint=None if v is None else "the switch opens the new keyring file",
                )
            return v if v is not None and v.kind == "init" else None
        st = v.state.status()
        if st.completed:
            return v
        if self.complete_missing is None:
            raise VerifyIncomplete(
                f"generation {v.generation} awaits proofs of possession from: "
                + ", ".join(st.missing),
                missing=st.missing,
                hint="each runs 'keysplit share prove FILE' and the code is recorded with "
                "'keysplit verify prove DIR NAME'; or: keysplit verify complete DIR --missing NAME",
            )
        if not self.progress.complete:
            raise InsufficientSharesError(
                f"need {self.progress.need} shares, got {self.progress.have}"
            )
        v.state.complete(unproven=self.complete_missing)
        return v

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


# -- --verify: every new share proven before it is relied on ---------------------------------

INIT_VERIFY_FILE = "keyring.ksk.verify.json"
"""Verification state of a keyring made with ``init --verify`` (beside ``keyring.ksk``); the
state of a ``rekey --verify`` is :func:`keysplit.proof.verify_path` of the pending file."""


@dataclass(frozen=True)
class Verification:
    """A share generation waiting for proofs of possession: ``kind`` is ``init`` (the new
    keyring serves no ceremony and no encrypt until done) or ``rekey`` (the switch waits;
    the current shares keep working)."""

    kind: str
    generation: int
    state: PendingVerification

    @property
    def status(self) -> VerifyStatus:
        return self.state.status()


def _verify_files(keyring: Keyring) -> tuple[Path, Path]:
    return keyring.path / INIT_VERIFY_FILE, verify_path(keyring.path / PENDING_FILE)


def pending_verification(keyring: Keyring) -> Verification | None:
    """The generation of ``keyring`` awaiting proofs, if any (stale state files ignored)."""
    init_file, rekey_file = _verify_files(keyring)
    pending = keyring.pending
    if pending is not None and rekey_file.exists():
        state = PendingVerification.load(rekey_file)
        if state.set_id.hex() == pending.set_id:
            return Verification("rekey", pending.generation, state)
    if init_file.exists():
        state = PendingVerification.load(init_file)
        if state.set_id.hex() == keyring.meta.set_id:
            return Verification("init", keyring.meta.generation, state)
    return None


def prove(keyring: Keyring, custodian: str, code: str) -> VerifyStatus:
    """Record ``custodian``'s proof of possession (from ``keysplit share prove``); no quorum.

    A wrong code is a :class:`keysplit.proof.ProofError` (and counted). When the last
    custodian has proven, the state is marked complete: a rekey then switches at the next
    unseal with the new shares, an init'ed keyring becomes usable. The audit entry
    (``verify-complete``, naming who proved) is written by the next ceremony with a quorum,
    since appending needs the log's MAC key.
    """
    v = pending_verification(keyring)
    if v is None:
        raise KeyringError("no share generation of this keyring awaits proofs of possession")
    with keyring.home.lock():
        status = v.state.submit(custodian, code)
        if status.all_proven and not status.completed:
            status = v.state.complete()
    return status


def _record_verified(
    ukr: UnsealedKeyring, v: Verification, contributors: Sequence[Contributor]
) -> None:
    st = v.state.status()
    ev.record(
        ukr.audit_log(),
        ev.VerifyComplete(
            kind=v.kind,
            generation=v.generation,
            set_id=st.set_id_hex,
            proven=list(st.proven),
            unproven=list(st.completed_unproven),
            failures=st.failures,
            authorized_by=contributors,
        ),
    )
    v.state.discard()


def _start_verification(
    ukr: UnsealedKeyring,
    kind: str,
    path: Path,
    shares: Mapping[str, Share],
    generation: int,
) -> None:
    path.unlink(missing_ok=True)  # a leftover of a superseded generation
    state = PendingVerification.create(
        path, list(shares.items()), keyring_id=ukr.keyring.keyring_id
    )
    ev.record(
        ukr.audit_log(),
        ev.VerifyStart(kind, generation, state.set_id.hex(), state.custodians),
    )


# -- init / rekey -----------------------------------------------------------------------------


@dataclass(frozen=True)
class InitResult:
    keyring: Keyring
    shares: Sequence[WrittenShare]
    entry: AuditEntry
    pinned: trust.KnownKeyring | None = None
    """The known-keyrings entry written for the new keyring (None if ``pin`` was not given)."""


def init(
    directory: str | Path,
    threshold: int,
    custody: Sequence[Custody],
    sink: ShareSink,
    *,
    kdf: Argon2Params | None = None,
    pin: trust.KnownKeyrings | None = None,
    store_url: str | None = None,
    verify: bool = False,
    sheets: SheetWriter | None = None,
) -> InitResult:
    """Create a keyring K-of-N among ``custody`` and hand every custodian their share.

    If a share cannot be written, the ones written are removed and :class:`KeyringError`
    says the new keyring can never be unsealed (it must be removed by hand). ``pin``: the
    known-keyrings file to pin the new keyring's fingerprint in (this process has just
    generated its key, so this is where trust starts). ``store_url``: the key store
    (recorded in the keyring directory; default the embedded SQLite file). ``verify``:
    the keyring serves no ceremony and no encrypt until every custodian has proven
    possession of their share (:func:`prove`), or a quorum completes naming the missing.
    ``sheets``: also write a printable sheet per custodian.
    """
    sink.reserve(custody, 1)
    if sheets is not None:
        sheets.reserve(custody, 1)
    kr, shares = Keyring.create(
        directory, threshold, [c.name for c in custody], store_url=store_url
    )
    try:
        written = _hand_out(
            shares, custody, sink, 1, kdf, None if sheets is None else (sheets, kr.keyring_id)
        )
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
        if verify:
            init_file = _verify_files(kr)[0]
            _start_verification(ukr, "init", init_file, shares, kr.meta.generation)
    shares.clear()
    pinned = pin_keyring(kr, known=pin) if pin is not None else None
    return InitResult(kr, written, entry, pinned)


@dataclass(frozen=True)
class RekeyResult:
    generation: int
    threshold: int
    shares: Sequence[WrittenShare]
    entry: AuditEntry
    contributors: Sequence[Contributor]
    pending: bool = False
    """``rekey(verify=True)``: the new generation waits for proofs; old shares still work."""


def rekey(
    keyring: Keyring,
    quorum: Quorum,
    custody: Sequence[Custody],
    sink: ShareSink,
    *,
    threshold: int | None = None,
    kdf: Argon2Params | None = None,
    verify: bool = False,
    sheets: SheetWriter | None = None,
) -> RekeyResult:
    """New master key and shares for ``custody``; every old share dies.

    Two-phase: the new shares are written before the switch, so if writing fails the
    pending rekey is aborted, the new files are removed and the old shares still work.
    ``threshold`` defaults to the current one, capped at the number of custodians.

    ``verify``: no switch now. The new generation stays pending (old shares keep working)
    until every new custodian has proven possession (:func:`prove`); then a quorum of the
    *new* shares switches (any ceremony, e.g. :func:`unseal_check`), or explicitly with
    ``Quorum(..., complete_missing=[...])`` naming exactly who is missing.
    """
    k = threshold if threshold is not None else min(keyring.meta.threshold, len(custody))
    generation = keyring.meta.generation + 1
    sink.reserve(custody, generation)
    if sheets is not None:
        sheets.reserve(custody, generation)
    with _unsealed(quorum) as ukr:
        _verify_files(keyring)[1].unlink(missing_ok=True)  # any earlier pending is replaced
        old = keyring.meta
        shares = ukr.prepare_rekey(threshold=k, custodians=[c.name for c in custody])
        try:
            sheet_to = None if sheets is None else (sheets, keyring.keyring_id)
            written = _hand_out(shares, custody, sink, generation, kdf, sheet_to)
        except BaseException:
            ukr.abort_rekey()
            raise
        if verify:
            try:
                entry = ev.record(
                    ukr.audit_log(),
                    ev.RekeyPending(
                        generation=generation,
                        old_threshold=old.threshold,
                        old_custodians=[c.name for c in old.custodians],
                        threshold=k,
                        custodians=[w.record() for w in written],
                        authorized_by=quorum.contributors,
                    ),
                )
                rekey_file = _verify_files(keyring)[1]
                _start_verification(ukr, "rekey", rekey_file, shares, generation)
            except BaseException:
                sink.discard()
                if sheets is not None:
                    sheets.discard()
                ukr.abort_rekey()
                raise
            finally:
                shares.clear()
            return RekeyResult(generation, k, written, entry, quorum.contributors, pending=True)
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
        _verify_files(keyring)[1].unlink(missing_ok=True)
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
    return _run(
        quorum, lambda ukr: ukr.rotate(record=False), lambda v: ev.Rotate(v, quorum.contributors)
    )


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
    run = runner or (lambda ukr, b, p: ukr.rewrap(batch_size=b, progress=p, record=False))
    return _run(
        quorum,
        lambda ukr: run(ukr, batch_size, progress),
        lambda r: ev.Rewrap(r.kek_version, r.rewrapped, r.remaining, quorum.contributors),
    )


def retire(keyring: Keyring, quorum: Quorum, version: int) -> Done[None]:
    """Delete KEK ``version`` (no data key may still use it)."""
    return _run(
        quorum,
        lambda ukr: ukr.retire(version, record=False),
        lambda _: ev.Retire(version, quorum.contributors),
    )


def shred(keyring: Keyring, quorum: Quorum, subject: str) -> Done[bool]:
    """Destroy ``subject``'s data key (refused under legal hold); value: whether it existed.

    Recorded either way, so a request to erase a subject is on file even if it had no key.
    """
    return _run(
        quorum,
        lambda ukr: ukr.shred(subject, record=False),
        lambda existed: ev.Shred(subject, existed, quorum.contributors),
    )


def hold(keyring: Keyring, quorum: Quorum, subject: str, on: bool) -> Done[None]:
    """Place (``on``) or lift a legal hold on ``subject``."""
    return _run(
        quorum,
        lambda ukr: ukr.set_legal_hold(subject, on, record=False),
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


# -- sealing to a keyring without a quorum: the trust check ---------------------------------

TRUST_EXPECTED = "expected"
TRUST_PINNED = "pinned"
TRUST_FIRST_USE = "first-use"


def trust_keyring(
    keyring: Keyring,
    *,
    expect: str | None = None,
    known: trust.KnownKeyrings | None = None,
    trust_on_first_use: bool = False,
) -> str:
    """Check ``keyring``'s public key against the trust anchor kept outside its directory.

    Why: sealing needs no quorum, so nothing in the keyring directory authenticates its
    public key to a sender; a writer of the directory could swap in their own. Policy:

    * ``expect`` (a fingerprint from the owner) must match -> ``"expected"``;
    * else the keyring must be pinned in ``known`` (default: the known-keyrings file) and
      match -> ``"pinned"``; a pin is checked even when ``expect`` is given;
    * an unpinned keyring without ``expect`` is refused with
      :class:`UntrustedKeyringError`, unless ``trust_on_first_use``: then its current
      fingerprint is pinned (SSH-style first contact) -> ``"first-use"``.

    Mismatches raise :class:`UntrustedKeyringError` naming both fingerprints.
    """
    store = known if known is not None else trust.KnownKeyrings()
    how = trust.verify_keyring(keyring.keyring_id, keyring.public_key, expect=expect, known=store)
    if how != "unpinned":
        return how
    if not trust_on_first_use:
        raise UntrustedKeyringError(
            f"keyring {keyring.keyring_id} is not pinned in {store.path} and no fingerprint "
            "was given: its public key is unverified",
            hint="pass --expect FPR with the fingerprint the keyring's owner gives you "
            "(keysplit status on the machine that ran init), or pin it once with "
            "'keysplit keyring pin DIR --expect FPR'",
        )
    store.pin_keyring(keyring.keyring_id, keyring.public_key, str(keyring.path))
    return TRUST_FIRST_USE


def pin_keyring(
    keyring: Keyring,
    *,
    expect: str | None = None,
    known: trust.KnownKeyrings | None = None,
    label: str | None = None,
    replace: bool = False,
) -> trust.KnownKeyring:
    """Pin ``keyring``'s fingerprint; with ``expect`` only if it matches (else refused).

    Without ``expect`` this trusts the directory as it is now (what ``init`` does, having
    just generated the key). ``replace`` re-pins an id pinned to another fingerprint.
    """
    if expect is not None:
        keyring.check_fingerprint(expect)
    store = known if known is not None else trust.KnownKeyrings()
    return store.pin_keyring(
        keyring.keyring_id,
        keyring.public_key,
        str(keyring.path) if label is None else label,
        replace=replace,
    )


def _checked_public_key(
    keyring: Keyring,
    expect: str | None,
    known: trust.KnownKeyrings | None,
    trust_on_first_use: bool,
) -> tuple[bytes, str]:
    v = pending_verification(keyring)
    if v is not None and v.kind == "init" and not v.status.completed:
        raise KeyringError(
            f"keyring {keyring.keyring_id} was made with --verify and waits for proofs of "
            "possession from: " + ", ".join(v.status.missing),
            hint="keysplit verify status DIR shows who is missing",
        )
    # The bytes checked are the bytes sealed to (read once from the opened metadata).
    public_key = keyring.public_key
    how = trust_keyring(keyring, expect=expect, known=known, trust_on_first_use=trust_on_first_use)
    if public_key != keyring.public_key:  # pragma: no cover - meta is immutable in memory
        raise UntrustedKeyringError("the keyring's public key changed during the check")
    return public_key, how


@dataclass(frozen=True)
class Sealed:
    """What a trusted seal did: the stream's ``info`` and how the key was trusted."""

    info: StreamInfo
    trust: str


def encrypt_file(
    keyring: Keyring,
    in_path: str,
    out_path: str,
    *,
    expect: str | None = None,
    known: trust.KnownKeyrings | None = None,
    trust_on_first_use: bool = False,
    context: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> Sealed:
    """Seal a file to ``keyring`` after :func:`trust_keyring` (nothing written if refused).

    The safe entry point: :func:`keysplit.encrypt_file` takes a raw public key and checks
    nothing.
    """
    public_key, how = _checked_public_key(keyring, expect, known, trust_on_first_use)
    info = _encrypt_file(in_path, out_path, public_key, context=context, overwrite=overwrite)
    return Sealed(info, how)


def encrypt_stream(
    keyring: Keyring,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    expect: str | None = None,
    known: trust.KnownKeyrings | None = None,
    trust_on_first_use: bool = False,
    context: Mapping[str, str] | None = None,
) -> Sealed:
    """:func:`encrypt_file` between streams (nothing written to ``dst`` if refused)."""
    public_key, how = _checked_public_key(keyring, expect, known, trust_on_first_use)
    return Sealed(_encrypt_stream(src, dst, public_key, context=context), how)


@dataclass(frozen=True)
class TrustState:
    """Public: the keyring's fingerprint and what the known-keyrings file says about it."""

    fingerprint: str
    known_file: str
    pinned: str | None
    """The pinned fingerprint, or None if this keyring id is not pinned."""

    @property
    def matches(self) -> bool | None:
        """Whether the pin agrees with the directory's key (None: not pinned)."""
        return None if self.pinned is None else self.pinned == self.fingerprint

    def as_dict(self) -> dict[str, str | bool | None]:
        return {
            "fingerprint": self.fingerprint,
            "known_keyrings": self.known_file,
            "pinned": self.pinned is not None,
            "pin_matches": self.matches,
        }


def trust_state(keyring: Keyring, known: trust.KnownKeyrings | None = None) -> TrustState:
    """What ``status`` shows: fingerprint, pinned or not, and whether the pin matches."""
    store = known if known is not None else trust.KnownKeyrings()
    entry = store.lookup(keyring.keyring_id)
    return TrustState(keyring.fingerprint, str(store.path), entry.fingerprint if entry else None)
