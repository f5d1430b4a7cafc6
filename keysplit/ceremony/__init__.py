"""Key ceremonies, each one library call: authority in, keyring operation, shares out, entry.

Every ceremony that changes or uses a keyring runs the same four steps, and they live here
so that the CLI, the demo and the key service only prompt, print or relay:

1. checks that cost nothing (targets for new shares free, a pending rekey to abort, a file
   sealed to this keyring) run *before* anyone is asked for a share;
2. the authority (:data:`Authority`, :mod:`.quorum`): a :class:`Quorum` collects shares
   through its feed (prompts in the CLI, a list in the demo, remote custodians in the key
   service) and unseals the keyring through :class:`keysplit.keyring.Unsealer`, which
   holds every unseal rule; or a :class:`TokenGrant` lends the keyring a key service holds
   unsealed, after checking the token's policy for this operation and its subjects;
3. the keyring operation, through the public methods of :class:`UnsealedKeyring`;
4. new shares (init, rekey) sealed per :class:`Custody` and written through a
   :class:`ShareSink` (:mod:`.sinks`); if writing fails, what was written is removed (and
   a rekey aborted, so the old shares keep working); then typed entries from
   :mod:`keysplit.audit.events` are appended to the keyring's MACed log.

This package is the audit seam (one vocabulary, :mod:`keysplit.audit.events`, written
through :func:`keysplit.audit.events.record`). Sealing to a keyring without a quorum is
not a ceremony: its trust check lives in :mod:`keysplit.trust` (``keysplit.encrypt_file``).
Errors are :class:`KeysplitError` subclasses (or ``OSError`` from the file system) with
secret-free messages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeAlias, TypeVar

from .. import trust
from .._fileio import SPACE_ERRORS
from ..audit import AuditEntry, AuditLog, AuditReport
from ..audit import events as ev
from ..audit.events import Contributor, Principal
from ..custody import Argon2Params, is_sealed, load_share, read_share_file, sealed_share_info
from ..errors import KeyringError, KeysplitError, ShreddedError
from ..keyring import Keyring, KeyringHome, RewrapResult, UnsealedKeyring, UnsealOutcome
from ..keyring.admin import check_retirable
from ..keyring.file import open_secrets, parse
from ..proof import PendingVerification, Verification, VerifyStatus
from ..service.tokens import (
    TokenList,
    TokenPolicy,
    check_allow,
    check_expires_in,
    check_prefix,
    check_token_name,
    is_token_text,
    mac_key,
    new_token,
)
from ..share import combine
from ..stream import StreamHeader, StreamInfo, _decrypt_to, _open_in, read_header, recipient_id
from .observe import close_failed
from .quorum import Authority, Done, Quorum, QuorumFeed, TokenGrant, unsealed
from .sinks import (
    Custody,
    DirectorySink,
    ShareFileExists,
    ShareSink,
    SheetWriter,
    WrittenShare,
    check_custody,
    hand_out,
    share_file_text,
)

__all__ = [
    "Authority",
    "Contributor",
    "Custody",
    "DatasetRunner",
    "DirectorySink",
    "Done",
    "InitResult",
    "NewToken",
    "Quorum",
    "QuorumFeed",
    "RekeyResult",
    "RewrapRunner",
    "ShareFileExists",
    "ShareSink",
    "SheetWriter",
    "ShredResult",
    "TokenGrant",
    "Verification",
    "WrittenShare",
    "abort_rekey",
    "add_token",
    "check_custody",
    "create_token",
    "dataset",
    "decrypt_file",
    "hold",
    "hold_many",
    "init",
    "pending_verification",
    "prove",
    "rekey",
    "repair_audit",
    "retire",
    "rewrap",
    "rotate",
    "share_file_text",
    "shred",
    "shred_many",
    "unseal_check",
]

T = TypeVar("T")


# -- --verify: every new share proven before it is relied on ---------------------------------


def pending_verification(keyring: Keyring) -> Verification | None:
    """The generation of ``keyring`` awaiting proofs, if any (stale state files ignored)."""
    return keyring.verification()


def prove(keyring: Keyring, custodian: str, code: str) -> VerifyStatus:
    """Record ``custodian``'s proof of possession (from ``keysplit share prove``); no quorum.

    A wrong code is a :class:`keysplit.proof.ProofError` (and counted). When the last
    custodian has proven, the state is marked complete: a rekey then switches at the next
    unseal with the new shares, an init'ed keyring becomes usable. The audit entry
    (``verify-complete``, naming who proved) is written by the next ceremony with a quorum,
    since appending needs the log's MAC key.
    """
    v = keyring.verification()
    if v is None:
        raise KeyringError("no share generation of this keyring awaits proofs of possession")
    with keyring.home.lock():
        status = v.state.submit(custodian, code)
        if status.all_proven and not status.completed:
            status = v.state.complete()
    return status


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
    if pin is not None:
        pin.entries()  # an unreadable known-keyrings file is refused before anything exists
    home = KeyringHome(directory)
    log = home.audit_path  # (an existing keyring is refused by Keyring.create)
    if not home.has_keyring() and log.exists() and log.stat().st_size > 0:
        raise KeyringError(
            f"{log} holds the audit log of an earlier keyring; a new keyring starts a new log",
            hint="move it away (it is that keyring's record), then run init again",
        )
    if not home.has_keyring():
        AuditLog(log).check_append()  # a FIFO or a device in its place: refused now
    # before the share files: a keyring whose init was killed is named as such (remove it
    # and init again), not its share files in the way ("choose another --shares-dir")
    Keyring.refuse_existing(directory)
    check_custody(custody)
    sink.reserve(custody, 1)
    if sheets is not None:
        sheets.reserve(custody, 1)
    # the hand-out mark comes before the keyring file: killed before every share is
    # written, the keyring says it never unseals
    kr, shares = Keyring.create(
        directory, threshold, [c.name for c in custody], store_url=store_url, handout=True
    )
    if verify:
        # the proof requirement before any share is out (the hand-out mark keeps the
        # keyring shut until then): an init killed anywhere after its shares are out
        # leaves a keyring that serves nothing until every custodian has proven
        kr.home.init_verify_path.unlink(missing_ok=True)  # a leftover of an earlier init
        PendingVerification.create(
            kr.home.init_verify_path, list(shares.items()), keyring_id=kr.keyring_id
        )
    try:
        written = hand_out(
            shares, custody, sink, 1, kdf, None if sheets is None else (sheets, kr.keyring_id)
        )
        kr.home.clear_handout()
    except (OSError, KeysplitError) as exc:
        raise KeyringError(
            f"could not write the share files ({exc}); the keyring at {directory} was created "
            "but can never be unsealed",
            hint=f"remove {directory} and run init again",
        ) from None
    # the creator holds every share: it opens the keyring itself (its own proof requirement,
    # written above, binds the custodians' quorums, not the ceremony that set it)
    quorum = list(shares.values())[:threshold]
    master = combine(quorum)
    meta, secrets = open_secrets(kr.home.read_keyring(), master)
    with kr.unseal(UnsealOutcome(meta, master, secrets)) as ukr:
        events: list[ev.Event] = [
            ev.Init(
                keyring_id=kr.keyring_id,
                generation=kr.meta.generation,
                threshold=threshold,
                custodians=[w.record() for w in written],
            )
        ]
        if verify:  # one batch (one write): a kill never leaves the init without it
            state = PendingVerification.load(kr.home.init_verify_path)
            events.append(
                ev.VerifyStart("init", kr.meta.generation, state.set_id.hex(), state.custodians)
            )
        entry = ev.record_many(ukr.audit_log(), events)[0]
        kr.home.clear_init_unrecorded()  # (killed before: the next quorum records the init)
    shares.clear()
    pinned = trust.pin_keyring(kr, known=pin) if pin is not None else None
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
    check_custody(custody)
    try:
        sink.reserve(custody, generation)
    except ShareFileExists as exc:
        _refuse_killed_handout(keyring, generation, exc)
        raise
    if sheets is not None:
        sheets.reserve(custody, generation)
    with unsealed(quorum, keyring, "rekey") as ukr:
        if keyring.meta.generation + 1 != generation:
            # the shares of an interrupted rekey completed it: the new set is one later
            generation = keyring.meta.generation + 1
            sink.reserve(custody, generation)
            if sheets is not None:
                sheets.reserve(custody, generation)
        keyring.home.rekey_verify_path.unlink(missing_ok=True)  # an earlier pending is replaced
        old = keyring.meta
        shares = ukr.prepare_rekey(threshold=k, custodians=[c.name for c in custody])
        new_set = next(iter(shares.values())).set_id.hex()
        rekey_file = keyring.home.rekey_verify_path
        try:
            # killed while writing, the shares written must not complete the rekey
            keyring.home.mark_handout(new_set)
            if verify:  # before any share is out: a kill after leaves the proofs required
                PendingVerification.create(
                    rekey_file, list(shares.items()), keyring_id=keyring.keyring_id
                )
            sheet_to = None if sheets is None else (sheets, keyring.keyring_id)
            written = hand_out(shares, custody, sink, generation, kdf, sheet_to)
            keyring.home.clear_handout()
        except BaseException:
            ukr.abort_rekey()
            rekey_file.unlink(missing_ok=True)
            raise
        if verify:
            try:
                state = PendingVerification.load(rekey_file)
                entry = ev.record_many(  # one batch (one write): never one without the other
                    ukr.audit_log(),
                    [
                        ev.RekeyPending(
                            generation=generation,
                            old_threshold=old.threshold,
                            old_custodians=[c.name for c in old.custodians],
                            threshold=k,
                            custodians=[w.record() for w in written],
                            authorized_by=quorum.contributors,
                        ),
                        ev.VerifyStart("rekey", generation, state.set_id.hex(), state.custodians),
                    ],
                )[0]
            except BaseException:
                sink.discard()
                if sheets is not None:
                    sheets.discard()
                ukr.abort_rekey()
                raise
            finally:
                shares.clear()
            return RekeyResult(generation, k, written, entry, quorum.contributors, pending=True)
        try:
            # killed after the switch and before its entry: the next quorum records it
            keyring.home.mark_unrecorded(new_set, generation)
            ukr.commit_rekey()
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
            keyring.home.clear_unrecorded()
        except BaseException as exc:
            if not _switched_to(keyring, new_set):  # refused before the switch: useless
                keyring.home.clear_unrecorded()
                sink.discard()
                if sheets is not None:
                    sheets.discard()
                raise
            if not isinstance(exc, (Exception, KeyboardInterrupt)):
                raise
            # never reported as a plain failure: the old shares are dead now
            raise KeyringError(
                f"the rekey took effect (generation {generation}: the new shares unseal the "
                f"keyring, the old ones no longer do) but did not finish: {exc or 'interrupted'}",
                hint="keep the new share files and hand them out",
            ) from None
        finally:
            shares.clear()
    return RekeyResult(keyring.meta.generation, k, written, entry, quorum.contributors)


def _refuse_killed_handout(keyring: Keyring, generation: int, exc: ShareFileExists) -> None:
    """A share file in the way that a rekey killed while writing its shares left (its
    pending generation's hand-out never finished, and the file is of that rekey's share
    set): say so, and what to do, rather than 'choose another --shares-dir'. A file of
    another set (another keyring's live share of the same name, the killed rekey's files
    being elsewhere) keeps the plain refusal: it must not be called removable."""
    pending = keyring.pending
    if pending is None or pending.generation != generation:
        return
    if not keyring.home.handout_incomplete(pending.set_id):
        return
    if exc.path is None or _share_set_of(exc.path) != pending.set_id:
        return
    raise KeyringError(
        f"{exc}: it is from a rekey killed while it wrote its new shares, which never unseal "
        "(the current shares still work)",
        hint=f"remove that rekey's generation-{generation} share files, then rekey again "
        "(it replaces the unfinished one)",
    ) from None


def _share_set_of(path: Path) -> str | None:
    """The share set id a share file names in the clear (a sealed share's header, a plain
    share's own field), or None if it cannot be read as one. Opens nothing."""
    try:
        data = read_share_file(path)
        if is_sealed(data):
            return sealed_share_info(data).set_id_hex
        return load_share(data).set_id.hex()
    except (KeysplitError, OSError, ValueError):
        return None


def _switched_to(keyring: Keyring, set_id: str) -> bool:
    """Whether the keyring file on disk is sealed for share set ``set_id`` (True when
    unsure: the new shares of a rekey are only ever removed when they surely unseal
    nothing)."""
    try:
        return parse(keyring.home.read_keyring())[0].set_id == set_id
    except KeysplitError:
        return True


def abort_rekey(keyring: Keyring, quorum: Quorum) -> Done[bool]:
    """Discard an unfinished rekey (left by a crash) with a quorum of the current shares.

    Raises :class:`KeyringError` before asking for shares if none is pending. The value is
    whether one was still there once unsealed (only then is ``rekey-abort`` recorded).
    """
    if keyring.status().pending_rekey is False:
        raise KeyringError("no rekey is pending for this keyring")
    entry = None
    with unsealed(quorum, keyring, "rekey-abort") as ukr:
        existed = ukr.abort_rekey()
        keyring.home.rekey_verify_path.unlink(missing_ok=True)
        if existed:
            entry = ev.record(
                ukr.audit_log(),
                ev.RekeyAbort(
                    generation=keyring.meta.generation, authorized_by=quorum.contributors
                ),
            )
    return Done(existed, entry, quorum.contributors)


# -- ceremonies on an unsealed keyring --------------------------------------------------------


def _os_text(exc: OSError) -> str:
    return f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)


@contextlib.contextmanager
def _on_full_disk(says: Callable[[str], str], hint: str) -> Iterator[None]:
    """A space error (ENOSPC, EDQUOT, EFBIG) in the ``with`` body becomes a
    :class:`KeyringError` whose message is ``says(<strerror>: <file>)``."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in SPACE_ERRORS:
            raise
        raise KeyringError(says(_os_text(exc)), hint=hint) from None


def _nothing_changed(operation: str) -> contextlib.AbstractContextManager[None]:
    """Around what a ceremony writes before its change (its intent): a full disk there
    changed nothing, and the error says so, naming the file."""
    return _on_full_disk(
        lambda what: f"{what}; nothing was changed (the {operation} did not start)",
        "free space on that file system, then run it again",
    )


def _took_effect(operation: str) -> contextlib.AbstractContextManager[None]:
    """Around the entry a ceremony writes after its change (its intent is in the log): a
    full disk there must not read as a failure that changed nothing."""
    return _on_full_disk(
        lambda what: (
            f"the {operation} took effect, but its audit entry could not be written ({what})"
        ),
        "free space; 'keysplit audit verify DIR' names it (an intent without outcome) and "
        "the next quorum unseal records what it finds",
    )


def _run(
    keyring: Keyring,
    authority: Authority,
    operation: str,
    op: Callable[[UnsealedKeyring], T],
    event: Callable[[T, Sequence[Principal]], ev.Event],
    subjects: Iterable[str] = (),
    intent: tuple[str, str] | None = None,
) -> Done[T]:
    """Unseal (or borrow under a grant), do ``op``, record ``event(result, authorized_by)``:
    the shape of every one-step ceremony.

    ``intent`` (operation, target): for a change the keyring file does not show (a store
    write), an ``intent`` entry is recorded first, so a kill between the change and its
    entry leaves an open intent (:mod:`.observe`); an ``op`` that raises closes it."""
    with unsealed(authority, keyring, operation, subjects) as ukr:
        by = authority.authorized_by
        if intent is None:
            value = op(ukr)
            entry = ev.record(ukr.audit_log(), event(value, by))
            return Done(value, entry, by)
        with _nothing_changed(intent[0]):
            begun = ev.record(ukr.audit_log(), ev.Intent(*intent, by))
        try:
            value = op(ukr)
        except BaseException as exc:
            close_failed(keyring, ukr, [begun], exc, by)
            raise
        with _took_effect(intent[0]):
            entry = ev.record(ukr.audit_log(), event(value, by))
    return Done(value, entry, by)


def unseal_check(keyring: Keyring, authority: Authority) -> Done[None]:
    """An unseal drill: the quorum's shares and the recovered master key verify."""
    return _run(
        keyring,
        authority,
        "unseal-check",
        lambda ukr: None,
        lambda _, by: ev.UnsealCheck(keyring.meta.generation, by),
    )


def rotate(keyring: Keyring, authority: Authority) -> Done[int]:
    """A new KEK version for new data keys; the value is its number (then :func:`rewrap`)."""
    return _run(keyring, authority, "rotate", lambda ukr: ukr.rotate(record=False), ev.Rotate)


RewrapRunner = Callable[[UnsealedKeyring, int, Callable[[int, int], None] | None], RewrapResult]
"""``runner(ukr, batch_size, progress)``: who does a rewrap's work (default: ``ukr.rewrap``)."""


def rewrap(
    keyring: Keyring,
    authority: Authority,
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
        keyring,
        authority,
        "rewrap",
        lambda ukr: run(ukr, batch_size, progress),
        lambda r, by: ev.Rewrap(r.kek_version, r.rewrapped, r.remaining, by),
    )


def retire(keyring: Keyring, authority: Authority, version: int) -> Done[None]:
    """Delete KEK ``version`` (no data key may still use it)."""
    if isinstance(authority, Quorum):  # a version it has not: refused before any share
        check_retirable(keyring.meta, version)
    return _run(
        keyring,
        authority,
        "retire",
        lambda ukr: ukr.retire(version, record=False),
        lambda _, by: ev.Retire(version, by),
    )


@dataclass(frozen=True)
class ShredResult:
    """What :func:`shred` found: ``existed``, a key that is destroyed now; else
    ``shredded_before``, no key because an earlier shred destroyed it (a repeat, or a run
    killed after its delete and before it reported), rather than none ever made."""

    existed: bool
    shredded_before: bool = False


def shred(keyring: Keyring, authority: Authority, subject: str) -> Done[ShredResult]:
    """Destroy ``subject``'s data key (refused under legal hold); value: whether it existed
    and, if not, whether an earlier shred had destroyed it (:class:`ShredResult`).

    Recorded either way, so a request to erase a subject is on file even if it had no key.
    """

    def op(ukr: UnsealedKeyring) -> ShredResult:
        if ukr.shred(subject, record=False):
            return ShredResult(True)
        why = ukr.local_data_keys().missing_error(subject)
        return ShredResult(False, shredded_before=isinstance(why, ShreddedError))

    return _run(
        keyring,
        authority,
        "shred",
        op,
        lambda res, by: ev.Shred(subject, res.existed, by),
        [subject],
        intent=(ev.Shred.NAME, subject),
    )


def hold(keyring: Keyring, authority: Authority, subject: str, on: bool) -> Done[None]:
    """Place (``on``) or lift a legal hold on ``subject``."""
    return _run(
        keyring,
        authority,
        "hold",
        lambda ukr: ukr.set_legal_hold(subject, on, record=False),
        lambda _, by: ev.LegalHold(subject, on, by),
        [subject],
        intent=(ev.LegalHold.NAME, subject),
    )


ItemResult: TypeAlias = T | KeysplitError | ValueError | TypeError
"""One subject's result in a ``*_many`` ceremony: its value, or the error that stopped it."""


def _per_subject(
    keyring: Keyring,
    authority: Authority,
    operation: str,
    subjects: Sequence[str],
    op: Callable[[UnsealedKeyring, str], T],
    event: Callable[[str, T, Sequence[Principal]], ev.Event],
    intent: str,
) -> Done[list[ItemResult[T]]]:
    """``op`` on each subject, after one ``intent`` entry per subject (all appended
    together: one lock, one fsync; ``intent`` is the outcome's event name); then one entry
    per subject that succeeded, and for a refused one (e.g. under legal hold: reported in
    its place) an ``observed`` entry closing its intent, all appended together."""
    results: list[ItemResult[T]] = []
    done: list[ev.Event] = []
    with unsealed(authority, keyring, operation, subjects) as ukr:
        by = authority.authorized_by
        with _nothing_changed(intent):
            begun = ev.record_many(ukr.audit_log(), [ev.Intent(intent, s, by) for s in subjects])
        refused: list[tuple[AuditEntry, BaseException]] = []
        for s, mark in zip(subjects, begun, strict=True):
            try:
                value = op(ukr, s)
            except (KeysplitError, ValueError, TypeError) as exc:
                results.append(exc)
                refused.append((mark, exc))
                continue
            except BaseException as exc:
                left = begun[len(results) :]
                close_failed(keyring, ukr, [m for m, _ in refused] + left,
                             [e for _, e in refused] + [exc] * len(left), by)  # fmt: skip
                raise
            results.append(value)
            done.append(event(s, value, by))
        with _took_effect(intent):
            entries = ev.record_many(ukr.audit_log(), done)
        if refused:
            close_failed(keyring, ukr, [m for m, _ in refused], [e for _, e in refused], by)
    return Done(results, entries[-1] if entries else None, authority.authorized_by)


def shred_many(
    keyring: Keyring, authority: Authority, subjects: Sequence[str]
) -> Done[list[ItemResult[bool]]]:
    """:func:`shred` for many subjects in one authorization (the key service's batch);
    ``value[i]`` is whether ``subjects[i]`` had a key, or the error that refused it."""
    return _per_subject(
        keyring,
        authority,
        "shred",
        subjects,
        lambda ukr, s: ukr.shred(s, record=False),
        lambda s, existed, by: ev.Shred(s, existed, by),
        ev.Shred.NAME,
    )


def hold_many(
    keyring: Keyring, authority: Authority, subjects: Sequence[str], on: bool
) -> Done[list[ItemResult[bool]]]:
    """:func:`hold` for many subjects; ``value[i]`` is ``on``, or the error that refused it."""

    def one(ukr: UnsealedKeyring, s: str) -> bool:
        ukr.set_legal_hold(s, on, record=False)
        return on

    return _per_subject(
        keyring,
        authority,
        "hold",
        subjects,
        one,
        lambda s, _, by: ev.LegalHold(s, on, by),
        ev.LegalHold.NAME,
    )


def decrypt_file(
    keyring: Keyring,
    authority: Authority,
    in_path: str,
    out_path: str,
    *,
    context: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> Done[StreamInfo]:
    """Decrypt a file sealed to the keyring (``-``: stdin/stdout) and record it.

    A file sealed to another keyring is refused before any share is asked for. The input
    is opened and read once (its header for that check, then the body), so a pipe
    (``<(curl ...)``, a FIFO) works as well as a file.
    """

    def run(src: BinaryIO, header: StreamHeader | None) -> Done[StreamInfo]:
        with unsealed(authority, keyring, "decrypt", ()) as ukr:
            by = authority.authorized_by  # known once the quorum has unsealed
            released = [0, 0]  # plaintext bytes stdout took so far, and handed to it
            entries: list[AuditEntry] = []

            def begin() -> None:
                # before the first plaintext goes to stdout: killed after, the intent stays
                # open (a file OUT releases nothing before its entry: no intent needed)
                ev.record(ukr.audit_log(), ev.Intent(ev.Decrypt.NAME, in_path, by))

            def record(info: StreamInfo) -> None:
                # before a file OUT is put in place: a kill between the two leaves an entry
                # for a file that never appeared, never a file without its entry
                size, ctx = info.plaintext_size, dict(info.header.context)
                entries.append(ev.record(ukr.audit_log(), ev.Decrypt(in_path, size, ctx, by)))

            try:
                head = read_header(src) if header is None else header
                info = _decrypt_to(
                    src,
                    head,
                    out_path,
                    ukr,
                    context=context,
                    overwrite=overwrite,
                    released=released,
                    before_release=record,
                    before_first_release=begin,
                )
            except BaseException as exc:
                if released[1] and not entries:  # plaintext out: on the record, then the error
                    why = type(exc).__name__
                    done = ev.DecryptIncomplete(in_path, released[0], dict(head.context), why, by)
                    ev.record(ukr.audit_log(), done)
                elif not entries and isinstance(exc, OSError) and exc.errno in SPACE_ERRORS:
                    raise KeyringError(  # (a full disk writing OUT, or the intent)
                        f"{_os_text(exc)}; nothing was changed: no plaintext was released "
                        "and nothing recorded",
                        hint="free space on that file system, then run it again",
                    ) from None
                raise
        return Done(info, entries[0], by)

    if in_path == "-":
        with _open_in(in_path) as stdin:
            return run(stdin, None)
    with open(in_path, "rb", buffering=0) as src:
        header = read_header(src)
        mine = recipient_id(keyring.public_key)
        if header.recipient_id != mine:
            raise KeyringError(
                f"{in_path} is sealed to another keyring",
                hint=f"its key id is {header.recipient_id.hex()}, this keyring's {mine.hex()}",
            )
        return run(src, header)


DatasetRunner = Callable[[UnsealedKeyring, Callable[[T], None]], T]
"""``run(ukr, release)``: a dataset job's work with the keyring unsealed here
(:mod:`keysplit.jobs`). ``release(result)`` records the job's entry: a job that writes an
output calls it once the output is complete and before it is put in place (the
``before_release`` of :func:`keysplit.jobs.decrypt_dataset`), and puts nothing in place if
it raises. A job that never calls it (a scan) is recorded once ``run`` returns."""


def dataset(
    keyring: Keyring,
    authority: Authority,
    operation: str,
    run: DatasetRunner[T],
    *,
    source: str,
    destination: str | None,
    column: str,
    count: Callable[[T], tuple[int, int]],
) -> Done[T]:
    """A dataset job (``encrypt``, ``decrypt`` or ``scan``) run with this keyring's keys,
    recorded as one ``dataset`` entry; ``count(result)`` gives (rows, bad records).
    The entry is recorded before the output is put in place (:data:`DatasetRunner`): a kill
    between the two leaves an entry for a dataset that never appeared, never a decrypted
    dataset with nothing on the record.

    A job whose keys come from a key service is not a ceremony here: the service's token
    authorizes (and its log records) each key it hands out.
    """
    if operation not in ("encrypt", "decrypt", "scan"):
        raise ValueError("operation must be encrypt, decrypt or scan")

    with unsealed(authority, keyring, operation, ()) as ukr:
        by = authority.authorized_by
        entries: list[AuditEntry] = []

        def release(result: T) -> None:
            if entries:
                raise ValueError("a dataset job's output is released once")
            rows, bad = count(result)
            event = ev.Dataset(operation, source, destination, column, rows, bad, by)
            entries.append(ev.record(ukr.audit_log(), event))

        value = run(ukr, release)
        if not entries:
            release(value)
    return Done(value, entries[0], by)


def repair_audit(keyring: Keyring, quorum: Quorum) -> Done[AuditReport]:
    """Repair the audit log's last line and record that: a torn write is dropped; a whole
    entry lacking only its newline is kept and completed, if it links and its MAC checks
    (:meth:`~keysplit.audit.AuditLog.repair_tail`). Complete entries are untouched.

    The whole log must verify (chain and MACs) after; ``entry`` is None when there was
    nothing to repair, else its ``dropped`` field says what was done.
    """
    entry = None
    with unsealed(quorum, keyring, "audit-repair", check_log=False) as ukr:
        log = ukr.audit_log()
        how = log.repair_tail()
        report = log.verify()
        if how is not None:
            dropped = (
                "torn last line"
                if how == "dropped"
                else f"nothing: entry {report.entries} was whole, its newline added"
            )
            entry = ev.record(
                log, ev.AuditRepair(authorized_by=quorum.contributors, dropped=dropped)
            )
            report = log.verify()
    return Done(report, entry, quorum.authorized_by)


# -- key-service tokens -----------------------------------------------------------------------


@dataclass(frozen=True)
class NewToken:
    """A token just minted: ``token`` is the secret, shown once; ``policy`` what it may do."""

    token: str = field(repr=False)
    policy: TokenPolicy


def create_token(
    keyring: Keyring,
    quorum: Quorum,
    *,
    name: str,
    allow: Sequence[str],
    subject_prefix: str,
    expires_in: float | None = None,
) -> Done[NewToken]:
    """Mint a key-service token with a quorum; recorded as ``token-create`` (and a
    ``token-revoke`` for each revocation folded into the list on the way).

    The keyring keeps only the token's SHA-256 and policy, in a list MACed under a key only
    an unsealed keyring derives (:mod:`keysplit.service.tokens`). The name and operations
    are checked, and the list read, before anyone is asked for a share. ``expires_in``:
    seconds until the service stops accepting the token (None: never).
    """
    token = new_token()
    done = _change_tokens(
        keyring, quorum, token, name, allow, subject_prefix, "", added=False, expires_in=expires_in
    )
    return Done(NewToken(token, done.value), done.entry, done.authorized_by)


def add_token(
    keyring: Keyring,
    quorum: Quorum,
    token: str,
    *,
    name: str,
    allow: Sequence[str],
    subject_prefix: str,
    region: str = "",
    expires_in: float | None = None,
) -> Done[TokenPolicy]:
    """Register a token minted on another keyring (a node of a key cluster) under this
    keyring's own quorum and policy; recorded as ``token-create`` with ``added: true``."""
    if not is_token_text(token):
        raise ValueError("not a keysplit token (kst1_ and 43 base64url characters)")
    return _change_tokens(
        keyring, quorum, token, name, allow, subject_prefix, region, added=True,
        expires_in=expires_in,
    )  # fmt: skip


def _change_tokens(
    keyring: Keyring,
    quorum: Quorum,
    token: str,
    name: str,
    allow: Sequence[str],
    subject_prefix: str,
    region: str,
    *,
    added: bool,
    expires_in: float | None = None,
) -> Done[TokenPolicy]:
    """With a quorum: fold pending revocations, register ``token``, record both."""
    check_token_name(name)  # the cheap checks, before anyone is asked for a share
    allowed = list(check_allow(allow))
    check_prefix(subject_prefix)
    check_expires_in(expires_in)
    TokenList.read(keyring.path, keyring.keyring_id)  # unreadable: refused before any share
    with unsealed(quorum, keyring, "token-create") as ukr:
        tl = TokenList.read(keyring.path, keyring.keyring_id)
        # the token list commits before the entry: a kill in between leaves an open intent
        with _nothing_changed(ev.TokenCreate.NAME):
            begun = ev.record(
                ukr.audit_log(), ev.Intent(ev.TokenCreate.NAME, name, quorum.contributors)
            )
        try:
            pol = tl.add(
                mac_key(ukr.audit_key(), keyring.keyring_id),
                token,
                name=name,
                allow=allowed,
                subject_prefix=subject_prefix,
                region=region,
                created_by=[c.custodian for c in quorum.contributors],
                expires_in=expires_in,
            )
        except BaseException as exc:
            close_failed(keyring, ukr, [begun], exc, quorum.contributors)
            raise
        known = {t.id: t.name for t in tl.tokens}  # the list as written (tl adopted it)
        events: list[ev.Event] = [
            ev.TokenRevoke(known.get(r, "unknown id"), r, tl.serial) for r in tl.folded
        ]
        events.append(
            ev.TokenCreate(
                list_serial=tl.serial,
                token=pol.name,
                token_id=pol.id,
                allow=list(pol.allow),
                subject_prefix=pol.subject_prefix,
                region=pol.region,
                added=added,
                authorized_by=quorum.contributors,
                expires=pol.expires,
            )
        )
        with _took_effect(ev.TokenCreate.NAME):
            entry = ev.record_many(ukr.audit_log(), events)[-1]
    return Done(pol, entry, quorum.authorized_by)
