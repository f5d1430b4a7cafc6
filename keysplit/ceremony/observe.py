"""What a ceremony finds done (or not) that the audit log does not record, written down.

Most ceremonies record their entry after their change (the entry needs the change's
outcome, and the log's MAC key). A process killed in between left a change with no entry.
Two rules close that gap, one per kind of change:

* a change whose outcome the keyring file shows (an ``init``, a ``rotate``, a ``retire``, a
  rekey's switch) is found by comparing that file with the log
  (:meth:`keysplit.Keyring.unrecorded`);
* a change that leaves no trace there (a shred or a legal hold in the key store, a token in
  the token list, plaintext sent to stdout) writes an ``intent`` entry *before* it, and its
  outcome after: an intent left open is the mark of a kill in between (a write-ahead
  record, rather than the outcome entry before the change, which would record a shred
  that may never happen as done, or an ``interrupted`` entry, which a killed process
  cannot write).

``audit verify`` names both without a quorum; :func:`record_unrecorded`, run by every
quorum unseal (:class:`keysplit.ceremony.Quorum`), writes one ``observed`` entry per gap
saying what it found: the key destroyed or not, the hold on or off, the token listed or
not, a decrypt's plaintext possibly released. A ceremony whose operation fails after its
intent closes the intent itself the same way (:func:`close_failed`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from ..audit import AuditEntry
from ..audit import events as ev
from ..audit.events import Principal
from ..errors import IntegrityError, KeysplitError
from ..keyring import Keyring, UnsealedKeyring
from ..keyring.unsealed import store_state
from ..service.tokens import TokenList, mac_key

__all__ = ["close_failed", "found", "record_unrecorded"]


def found(keyring: Keyring, ukr: UnsealedKeyring, operation: str, target: str) -> str:
    """What the keyring shows now of ``operation`` on ``target`` (an intent's), in words."""
    if operation in (ev.Shred.NAME, ev.LegalHold.NAME):
        return store_state(ukr, operation, target)
    try:
        if operation == "token-create":
            tl = TokenList.read(keyring.path, keyring.keyring_id)
            try:  # a list written without the quorum says nothing done (the service refuses it)
                tl.verify(mac_key(ukr.audit_key(), keyring.keyring_id))
            except IntegrityError:
                return "unknown: the token list does not verify under this keyring's key (edited?)"
            ids = [t.id for t in tl.active().values() if t.name == target]
            if ids:
                return f"done: token {target!r} is in the token list (id {ids[-1]})"
            return f"not done: no active token named {target!r} is in the token list"
        if operation == "decrypt":
            return "unknown: plaintext of the file may have left the process before it ended"
    except (KeysplitError, OSError, ValueError) as exc:
        return f"unknown: the state could not be read ({type(exc).__name__})"
    return "unknown"


def close_failed(
    keyring: Keyring,
    ukr: UnsealedKeyring,
    intents: Sequence[AuditEntry],
    exc: BaseException | Sequence[BaseException],
    by: Sequence[Principal],
) -> None:
    """Close ``intents`` whose operation raised (``exc``, one or one per intent): an
    ``observed`` entry each, saying the error and what the keyring shows. Best effort: the
    operation's own error is what the caller raises (an intent left open is reported)."""
    errors = [exc] * len(intents) if isinstance(exc, BaseException) else list(exc)
    events: list[ev.Event] = []
    for intent, err in zip(intents, errors, strict=True):
        op, target = str(intent.data["operation"]), str(intent.data["target"])
        seen = found(keyring, ukr, op, target)
        events.append(ev.Observed(op, target, intent.seq, f"{type(err).__name__}; {seen}", by))
    with contextlib.suppress(KeysplitError, OSError):
        ev.record_many(ukr.audit_log(), events)


def _revocations_unrecorded(
    keyring: Keyring,
    ukr: UnsealedKeyring,
    entries: Sequence[AuditEntry],
    pending: Sequence[ev.Event],
) -> list[ev.Event]:
    """A ``token-revoke`` for each revocation in the MACed token list that neither the log
    nor ``pending`` records: those a token creation killed before its entries folded in
    (its write moves every pending revocation into the list). None if the list does not
    verify under this keyring's key (nothing is recorded from a list that may be forged)."""
    try:
        tl = TokenList.read(keyring.path, keyring.keyring_id)
        tl.verify(mac_key(ukr.audit_key(), keyring.keyring_id))
    except (KeysplitError, OSError, ValueError):
        return []
    logged = {str(e.data.get("token_id")) for e in entries if e.event == ev.TokenRevoke.NAME}
    logged |= {e.token_id for e in pending if isinstance(e, ev.TokenRevoke)}
    names = {t.id: t.name for t in tl.tokens}
    return [
        ev.TokenRevoke(names.get(r, "unknown id"), r, tl.serial)
        for r in tl.revoked
        if r not in logged
    ]


def _verify_started(keyring: Keyring, set_id: str, by: Sequence[Principal]) -> list[ev.Event]:
    """The entries a ``--verify`` ceremony killed before its own left out: ``verify-start``
    (who must prove, from the proofs' state file), after an ``observed`` rekey-pending for
    a rekey (an init's is the ``observed`` init before it). Nothing if the state changed
    since it was found."""
    try:
        v = keyring.verification()
    except (KeysplitError, OSError, ValueError):
        return []
    if v is None or v.state.set_id.hex() != set_id:
        return []
    names = v.state.custodians
    out: list[ev.Event] = []
    if v.kind == "rekey":
        seen = (
            f"done: the shares of generation {v.generation} (share set {set_id}) were handed "
            f"out to {', '.join(names)} for a rekey --verify that has no rekey-pending entry "
            "(killed before it; the quorum that authorized it is not recorded); the switch "
            "waits for their proofs"
        )
        out.append(ev.Observed(ev.RekeyPending.NAME, set_id, 0, seen, by))
    out.append(ev.VerifyStart(v.kind, v.generation, set_id, names))
    return out


def record_unrecorded(
    keyring: Keyring, ukr: UnsealedKeyring, by: Sequence[Principal]
) -> list[AuditEntry]:
    """Record what the keyring shows done (or begun) that its log lacks (an ``observed``
    entry each: an init killed before its entry first, then intents left open, a
    ``--verify`` generation's missing ``verify-start`` (after an ``observed`` rekey-pending
    for a rekey), then KEK
    versions made or retired without an entry; a token creation's folded revocations as
    ``token-revoke``); a rekey's switch is the quorum's own
    (``rekey-recovered``). Nothing when the log cannot take an entry now (a torn tail:
    the ceremony's own check refuses, or a repair is running) or, there being gaps, does
    not verify (chain, MACs, anchor): an observation is never added to a log that may have
    been altered (``audit verify`` names the fault)."""
    log = ukr.audit_log()
    home, meta = keyring.home, keyring.meta
    try:
        log.check_append()
        entries = log.selected(Keyring.gap_entries)  # (the entries since the last unseal)
        gaps = [g for g in keyring.unrecorded(entries) if g.operation != "rekey"]
        if gaps:
            log.verify()  # (only then: the common case reads the log once)
    except (KeysplitError, OSError):
        return []
    gaps.sort(key=lambda g: g.operation != "init")
    events: list[ev.Event] = []
    for g in gaps:
        if g.operation == ev.VerifyStart.NAME:
            events += _verify_started(keyring, g.target, by)
            continue
        if g.intent:
            seen = found(keyring, ukr, g.operation, g.target)
            if g.operation == "token-create":  # its write folded the pending revocations
                events += _revocations_unrecorded(keyring, ukr, entries, events)
        elif g.operation == "init":
            seen = (
                f"done: the keyring exists (generation {meta.generation}) and its log had no "
                "init entry: its init was killed before it"
            )
            v = keyring.verification()
            if v is not None and v.kind == "init":
                seen += (
                    " (an init --verify: its shares were relied on only once proven; the "
                    "verify-start entry after this one names who must prove)"
                )
        else:
            seen = f"done: {g.text}"
        events.append(ev.Observed(g.operation, g.target, g.intent, seen, by))
    try:
        written = ev.record_many(log, events) if events else []
    except (KeysplitError, OSError):
        return []  # (a full disk) the ceremony's own entry says so, if it has one
    if home.init_unrecorded(meta.set_id):
        home.clear_init_unrecorded()  # recorded now, or by the init before it was killed
    return written
