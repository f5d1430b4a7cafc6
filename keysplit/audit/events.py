"""The one audit vocabulary: every event name keysplit writes and the fields its entry carries.

Each ceremony in :mod:`keysplit.ceremony` (and the key service, which runs the same
ceremonies) records typed events from here, through :func:`record`, the only writer of a
log's entries: an entry's shape is decided here and nowhere else (not in the CLI, the demo
or a service), one field layout per event name (:data:`SCHEMAS`). The names and fields
are those keysplit has always written where that was one layout; where two layouts shared
a name, one got a name of its own (``rekey-recovered``, once ``rekey`` with
``recovered: true``: see :func:`canonical_name`). Verification never depends on the
vocabulary: any name matching the format's pattern verifies (docs/format/audit.md).

Shared field schema:

* ``authorized_by``: who authorized it, a list of principals: a quorum's
  :class:`Contributor` dicts ``{"custodian", "index", "share"}`` (name, share index, share
  fingerprint; no share bytes), or one :class:`TokenHolder` dict ``{"token", "token_id"}``
  for a key-service token; ``unseal-check``, ``service-unseal`` and ``token-create`` name
  the quorum ``custodians`` (their subject is the quorum itself).
* ``custodians`` on ``init``/``rekey``/``rekey-pending``: one :class:`ShareRecord` dict per
  new share, ``{"custodian", "index", "share", "protection"}``; on ``rekey-recovered`` and
  ``rekey-switch`` the names of the new generation's custodians.
* ``generation``: the keyring file's generation (``keysplit status`` calls it the
  *keyring generation*; share files are named after the one their set was made at);
  ``kek_version``, ``subject``: as in the keyring.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from .log import AuditEntry, AuditLog

__all__ = [
    "EVENTS",
    "INTENT_OUTCOMES",
    "LEGACY_NAMES",
    "SCHEMAS",
    "AuditRepair",
    "ClusterCommit",
    "ClusterDeal",
    "ClusterEval",
    "ClusterJoin",
    "ClusterRecover",
    "ClusterRecoverDeal",
    "ClusterRecoverHelp",
    "ClusterRefresh",
    "Contributor",
    "Dataset",
    "Decrypt",
    "DecryptIncomplete",
    "Event",
    "Init",
    "Intent",
    "LegalHold",
    "Observed",
    "Principal",
    "Rekey",
    "RekeyAbort",
    "RekeyPending",
    "RekeyRecovered",
    "RekeySwitch",
    "Retire",
    "Rewrap",
    "Rotate",
    "ServiceSeal",
    "ServiceUnseal",
    "ShareRecord",
    "Shred",
    "TokenCreate",
    "TokenDenied",
    "TokenHolder",
    "TokenListInvalid",
    "TokenRevoke",
    "UnsealCheck",
    "VerifyComplete",
    "VerifyStart",
    "canonical_name",
    "intent_closer",
    "open_intents",
    "record",
    "record_many",
    "switch_recorded",
    "unsettled_intents",
]


@dataclass(frozen=True)
class Contributor:
    """A custodian who gave a share to a quorum: safe to print and log (no share bytes)."""

    custodian: str
    index: int
    fingerprint: str

    def as_dict(self) -> dict[str, str | int]:
        return {"custodian": self.custodian, "index": self.index, "share": self.fingerprint}


@dataclass(frozen=True)
class TokenHolder:
    """A key-service token that authorized an action (its name and id; never the token)."""

    token: str
    token_id: str

    def as_dict(self) -> dict[str, str | int]:
        return {"token": self.token, "token_id": self.token_id}


Principal = Contributor | TokenHolder
"""Who authorized an action: a custodian's share in a quorum, or a token."""


@dataclass(frozen=True)
class ShareRecord:
    """A new share handed to a custodian, as ``init`` and ``rekey`` log it."""

    custodian: str
    index: int
    fingerprint: str
    protection: str

    def as_dict(self) -> dict[str, str | int]:
        return {
            "custodian": self.custodian,
            "index": self.index,
            "share": self.fingerprint,
            "protection": self.protection,
        }


def _plain(value: Any) -> Any:
    """A field value as the log stores it (records as dicts, sequences as lists)."""
    if isinstance(value, (Contributor, TokenHolder, ShareRecord)):
        return value.as_dict()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Event:
    """Base of the typed events: ``NAME`` is the entry's ``event``; the dataclass fields are
    its data (``KEYS`` renames a field in the entry, ``EXTRA`` adds constant fields)."""

    NAME: ClassVar[str]
    KEYS: ClassVar[Mapping[str, str]] = {}
    EXTRA: ClassVar[Mapping[str, Any]] = {}

    def fields(self) -> dict[str, Any]:
        out = {self.KEYS.get(f.name, f.name): _plain(getattr(self, f.name)) for f in fields(self)}
        return {**out, **self.EXTRA}


@dataclass(frozen=True)
class Init(Event):
    NAME: ClassVar[str] = "init"
    keyring_id: str
    generation: int
    threshold: int
    custodians: Sequence[ShareRecord]


@dataclass(frozen=True)
class UnsealCheck(Event):
    """An unseal drill: its subject is the quorum, logged as ``custodians``."""

    NAME: ClassVar[str] = "unseal-check"
    KEYS: ClassVar[Mapping[str, str]] = {"authorized_by": "custodians"}
    generation: int
    authorized_by: Sequence[Principal]


@dataclass(frozen=True)
class Rekey(Event):
    NAME: ClassVar[str] = "rekey"
    generation: int
    old_threshold: int
    old_custodians: Sequence[str]
    threshold: int
    custodians: Sequence[ShareRecord]
    authorized_by: Sequence[Principal]


@dataclass(frozen=True)
class RekeyRecovered(Event):
    """The new shares of an interrupted rekey unsealed the keyring and so completed it (or
    unsealed it after a rekey that switched to them was killed before its own entry).

    Written as ``rekey`` with ``recovered: true`` before 0.1.0 (:func:`canonical_name`)."""

    NAME: ClassVar[str] = "rekey-recovered"
    generation: int
    custodians: Sequence[str]
    authorized_by: Sequence[Principal]


@dataclass(frozen=True)
class RekeySwitch(Event):
    """A ``rekey --verify`` whose proofs were complete switched: the new shares unsealed the
    keyring and the old ones died (nothing was interrupted)."""

    NAME: ClassVar[str] = "rekey-switch"
    generation: int
    custodians: Sequence[str]
    authorized_by: Sequence[Principal]


@dataclass(frozen=True)
class RekeyPending(Event):
    """``rekey --verify``: the new shares were handed out, the switch waits for proofs."""

    NAME: ClassVar[str] = "rekey-pending"
    generation: int
    old_threshold: int
    old_custodians: Sequence[str]
    threshold: int
    custodians: Sequence[ShareRecord]
    authorized_by: Sequence[Principal]


@dataclass(frozen=True)
class VerifyStart(Event):
    """``--verify``: every custodian of ``generation`` must prove possession of their share.

    ``kind`` is ``init`` (the new keyring stays unusable until then) or ``rekey``.
    """

    NAME: ClassVar[str] = "verify-start"
    kind: str
    generation: int
    set_id: str
    custodians: Sequence[str]


@dataclass(frozen=True)
class VerifyComplete(Event):
    """Verification of ``generation`` finished: who proved possession, and who was
    named as missing when completing without them (``unproven``). Proofs are made without a
    quorum, so they are written here, by the first ceremony with a quorum after them."""

    NAME: ClassVar[str] = "verify-complete"
    kind: str
    generation: int
    set_id: str
    proven: Sequence[str]
    unproven: Sequence[str]
    failures: Mapping[str, int]
    authorized_by: Sequence[Principal]


@dataclass(frozen=True)
class RekeyAbort(Event):
    NAME: ClassVar[str] = "rekey-abort"
    generation: int
    authorized_by: Sequence[Principal]


@dataclass(frozen=True)
class Rotate(Event):
    NAME: ClassVar[str] = "rotate"
    kek_version: int
    authorized_by: Sequence[Principal]


@dataclass(frozen=True)
class Rewrap(Event):
    NAME: ClassVar[str] = "rewrap"
    kek_version: int
    rewrapped: int
    remaining: int
    authorized_by: Sequence[Principal]


@dataclass(frozen=True)
class Retire(Event):
    NAME: ClassVar[str] = "retire"
    kek_version: int
    authorized_by: Sequence[Principal]


@dataclass(frozen=True)
class Shred(Event):
    NAME: ClassVar[str] = "shred"
    subject: str
    existed: bool
    authorized_by: Sequence[Principal]


@dataclass(frozen=True)
class LegalHold(Event):
    NAME: ClassVar[str] = "legal-hold"
    subject: str
    hold: bool
    authorized_by: Sequence[Principal]


@dataclass(frozen=True)
class Decrypt(Event):
    """A file sealed to the keyring was decrypted (``file`` as the operator named it)."""

    NAME: ClassVar[str] = "decrypt"
    file: str
    bytes: int
    context: Mapping[str, str]
    authorized_by: Sequence[Principal]


@dataclass(frozen=True)
class DecryptIncomplete(Event):
    """A decrypt to a stream (stdout) stopped after authenticated plaintext was handed to it
    (a later chunk failed, the input was cut, the reader went away, the CLI refused to
    print it to a terminal): recorded because the quorum decrypted, and ``bytes`` of it
    left the process (what the stream took: 0 when it refused the first chunk whole),
    though the file was never wholly decrypted (``error``: the failure's class name). A
    decrypt to a file releases nothing on failure."""

    NAME: ClassVar[str] = "decrypt-incomplete"
    file: str
    bytes: int
    context: Mapping[str, str]
    error: str
    authorized_by: Sequence[Principal]


@dataclass(frozen=True)
class Intent(Event):
    """Written before a change whose own entry can only follow it: a shred or a legal hold
    (the store commits first), a token's creation (the token list), a decrypt to a stream
    (plaintext leaves chunk by chunk, before the ``decrypt`` entry). ``operation`` is the
    event name of its outcome (:data:`INTENT_OUTCOMES`), ``target`` the subject, token name
    or file it names. The intent is closed by that outcome entry, or by an ``observed``
    entry naming its ``seq``; one closed by neither is a ceremony killed in between
    (:func:`open_intents`): ``audit verify`` names it and the next quorum records what it
    finds (``observed``)."""

    NAME: ClassVar[str] = "intent"
    operation: str
    target: str
    authorized_by: Sequence[Principal]


@dataclass(frozen=True)
class Observed(Event):
    """What a ceremony found done (or not) that the log did not record: the state of an
    ``intent`` left without outcome (``intent``: its seq; written by the ceremony itself
    when its operation failed after the intent, or by the next quorum after a kill), or a
    change the keyring shows and no entry records (``intent`` 0: an ``init``, ``rotate`` or
    ``retire`` killed before its entry). ``found`` says what was seen, in words;
    ``authorized_by`` is who observed it (the ceremony's authority), not who made the
    change."""

    NAME: ClassVar[str] = "observed"
    operation: str
    target: str
    intent: int
    found: str
    authorized_by: Sequence[Principal]


@dataclass(frozen=True)
class AuditRepair(Event):
    NAME: ClassVar[str] = "audit-repair"
    authorized_by: Sequence[Principal]
    dropped: str = "torn last line"


@dataclass(frozen=True)
class Dataset(Event):
    """A Dask dataset job run with a keyring unsealed here (``--keyring``): ``operation`` is
    ``encrypt``, ``decrypt`` or ``scan``; ``rows`` how many it processed (``bad``: records
    that did not open, for ``scan``)."""

    NAME: ClassVar[str] = "dataset"
    operation: str
    source: str
    destination: str | None
    column: str
    rows: int
    bad: int
    authorized_by: Sequence[Principal]


@dataclass(frozen=True)
class ServiceUnseal(Event):
    """A key service was unsealed by remote custodians (its subject is the quorum)."""

    NAME: ClassVar[str] = "service-unseal"
    KEYS: ClassVar[Mapping[str, str]] = {"authorized_by": "custodians"}
    generation: int
    authorized_by: Sequence[Principal]


@dataclass(frozen=True)
class ServiceSeal(Event):
    """A key service dropped its keys: ``reason`` (seal request, shutdown, ...) and ``by``
    (``token NAME``, ``unix socket peer``, or None for the process itself)."""

    NAME: ClassVar[str] = "service-seal"
    reason: str
    by: str | None


@dataclass(frozen=True)
class TokenCreate(Event):
    """A quorum minted a key-service token, or with ``added`` registered one minted on
    another keyring (a key-cluster node); ``region``: the cluster region it is pinned to
    ('' none); ``list_serial``: the token list's new serial; ``expires``: when the service
    stops accepting it (UTC; '' never; entries written before expiries have no such field)."""

    NAME: ClassVar[str] = "token-create"
    KEYS: ClassVar[Mapping[str, str]] = {"authorized_by": "custodians"}
    list_serial: int
    token: str
    token_id: str
    allow: Sequence[str]
    subject_prefix: str
    region: str
    added: bool
    authorized_by: Sequence[Principal]
    expires: str = ""


@dataclass(frozen=True)
class TokenRevoke(Event):
    """A revocation (made without a quorum) folded into the MACed token list."""

    NAME: ClassVar[str] = "token-revoke"
    token: str
    token_id: str
    list_serial: int


@dataclass(frozen=True)
class TokenDenied(Event):
    """The key service refused a request: ``token`` is None when none was recognised."""

    NAME: ClassVar[str] = "token-denied"
    operation: str
    token: str | None
    reason: str


@dataclass(frozen=True)
class TokenListInvalid(Event):
    """The key service refused its token list (tampered, rolled back): no token is accepted."""

    NAME: ClassVar[str] = "token-list-invalid"
    error: str


@dataclass(frozen=True)
class ClusterDeal(Event):
    """A key-cluster node dealt its part of a DKG (or refresh) round; ``by`` who asked
    (``token NAME`` or ``unix socket peer``)."""

    NAME: ClassVar[str] = "cluster-deal"
    cluster: str
    region: str
    refresh: bool
    epoch: int
    by: str


@dataclass(frozen=True)
class ClusterJoin(Event):
    """A key-cluster node finished a DKG round and stored its share (index ``index``)."""

    NAME: ClassVar[str] = "cluster-join"
    cluster: str
    region: str
    epoch: int
    index: int
    dealers: Sequence[str]
    by: str


@dataclass(frozen=True)
class ClusterRefresh(Event):
    """A key-cluster node finished a refresh round: its next epoch's share is staged beside
    the current one until the coordinator commits it (same cluster key; the fields of
    ``cluster-join``)."""

    NAME: ClassVar[str] = "cluster-refresh"
    cluster: str
    region: str
    epoch: int
    index: int
    dealers: Sequence[str]
    by: str


@dataclass(frozen=True)
class ClusterCommit(Event):
    """A key-cluster node committed a refresh: its staged share of epoch ``epoch`` replaced
    the previous epoch's, which it deleted."""

    NAME: ClassVar[str] = "cluster-commit"
    cluster: str
    epoch: int
    by: str


@dataclass(frozen=True)
class ClusterAbort(Event):
    """A key-cluster node erased what an unfinished round left: ``round`` "refresh" (its
    staged share of epoch ``epoch``) or "create" (its membership of a cluster whose
    creation never completed, and its region pin if no membership is left), or
    "membership" (a completed membership at epoch ``epoch``, erased at the administrator's
    explicit request: ``keysplit cluster abandon --completed``)."""

    NAME: ClassVar[str] = "cluster-abort"
    cluster: str
    epoch: int
    round: str
    by: str


@dataclass(frozen=True)
class ClusterEval(Event):
    """A key-cluster node evaluated its DPRF share for ``count`` subjects for a token."""

    NAME: ClassVar[str] = "cluster-eval"
    cluster: str
    token: str
    count: int
    subjects: Sequence[str]


@dataclass(frozen=True)
class ClusterRecoverDeal(Event):
    """A helper node dealt its part of recovering the lost node index ``lost``."""

    NAME: ClassVar[str] = "cluster-recover-deal"
    cluster: str
    lost: int
    helpers: Sequence[int]
    by: str


@dataclass(frozen=True)
class ClusterRecoverHelp(Event):
    """A helper node sealed its blinded value for the node replacing index ``lost``."""

    NAME: ClassVar[str] = "cluster-recover-help"
    cluster: str
    lost: int
    new_keyring: str
    by: str


@dataclass(frozen=True)
class ClusterRecover(Event):
    """This node recovered the share of index ``index`` from ``helpers``."""

    NAME: ClassVar[str] = "cluster-recover"
    cluster: str
    index: int
    helpers: Sequence[int]
    by: str


EVENTS: tuple[str, ...] = (
    "init",
    "unseal-check",
    "rekey",
    "rekey-abort",
    "rekey-pending",
    "verify-start",
    "verify-complete",
    "rotate",
    "rewrap",
    "retire",
    "shred",
    "legal-hold",
    "decrypt",
    "decrypt-incomplete",
    "intent",
    "observed",
    "audit-repair",
    "rekey-recovered",
    "rekey-switch",
    "dataset",
    "service-unseal",
    "service-seal",
    "token-create",
    "token-revoke",
    "token-denied",
    "token-list-invalid",
    "cluster-deal",
    "cluster-join",
    "cluster-refresh",
    "cluster-commit",
    "cluster-abort",
    "cluster-eval",
    "cluster-recover-deal",
    "cluster-recover-help",
    "cluster-recover",
)
"""The event names keysplit writes (others matching the format's pattern still verify)."""


def _event_classes() -> dict[str, type[Event]]:
    found: dict[str, type[Event]] = {}
    todo = list(Event.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.NAME in found:
            raise AssertionError(f"two event classes write {cls.NAME!r}")  # pragma: no cover
        found[cls.NAME] = cls
    return found


def _schema(cls: type[Event]) -> frozenset[str]:
    return frozenset([*(cls.KEYS.get(f.name, f.name) for f in fields(cls)), *cls.EXTRA])


SCHEMAS: Mapping[str, frozenset[str]] = {
    name: _schema(cls) for name, cls in sorted(_event_classes().items())
}
"""Each event name's one field layout: the keys of its entry's ``data``."""

LEGACY_NAMES: Mapping[str, str] = {
    "create": "init",
    "rekey_committed": "rekey",
    "rekey_aborted": "rekey-abort",
    "legal_hold": "legal-hold",
}
"""Spellings of the keyring's retired ``on_event`` hook, by the name keysplit writes now
(``unseal`` and ``rekey_prepared`` have no ceremony of their own and stay as they are)."""


def canonical_name(event: str, data: Mapping[str, Any] | None = None) -> str:
    """The current name of an event read from a log (old hook spellings mapped; with the
    entry's ``data``, an old ``rekey`` entry with ``recovered: true`` is ``rekey-recovered``)."""
    if event == "rekey" and data is not None and data.get("recovered") is True:
        return "rekey-recovered"
    return LEGACY_NAMES.get(event, event)


_SWITCHES = frozenset({Rekey.NAME, RekeyRecovered.NAME, RekeySwitch.NAME})


def switch_recorded(entries: Sequence[AuditEntry], generation: int) -> bool:
    """Whether ``entries`` record the keyring's switch to ``generation`` (a ``rekey``,
    ``rekey-recovered`` or ``rekey-switch`` entry naming it): a rekey killed after its
    entry and before it cleared its owed-switch mark owes nothing."""
    return any(
        canonical_name(e.event, e.data) in _SWITCHES and e.data.get("generation") == generation
        for e in reversed(entries)
    )


INTENT_OUTCOMES: Mapping[str, tuple[tuple[str, ...], str]] = {
    "shred": (("shred",), "subject"),
    "legal-hold": (("legal-hold",), "subject"),
    "token-create": (("token-create",), "token"),
    "decrypt": (("decrypt", "decrypt-incomplete"), "file"),
}
"""An ``intent``'s ``operation``: the event names that are its outcome, and the field of
theirs that holds the intent's ``target``."""


def open_intents(entries: Sequence[AuditEntry]) -> list[AuditEntry]:
    """The ``intent`` entries of ``entries`` that nothing closed: no ``observed`` entry
    naming their seq, and no later outcome entry of their own. An outcome closes the latest
    open intent before it of its operation and target that the same principals authorized
    (``authorized_by``): its own, which its ceremony wrote just before it. An older open one
    is a kill's mark, even where another authority (a key-service token, another quorum)
    changed the same target since, and stays open, named by its own seq. An intent an
    ``observed`` entry names is that entry's (its operation raised, or was killed): no
    outcome takes it, even one written before the observation (a batch records its
    outcomes, then closes its refused intents). In log order."""
    pending, _, _ = _match(entries)
    return [pending[s] for s in sorted(pending)]


def unsettled_intents(entries: Sequence[AuditEntry]) -> list[AuditEntry]:
    """The ``intent`` and outcome entries that entries appended later can still change
    :func:`open_intents`' answer about (in log order): for each operation, target and
    authority with an intent open, every intent and outcome of theirs since the last point
    none was open. An ``observed`` entry written later that names an intent an outcome
    closed hands that outcome to the intent below it (the outcome's own was another's), so
    a selection (:meth:`keysplit.keyring.Keyring.gap_entries`) that kept only the open
    intents read one as open that the whole log reads as closed. Before that point nothing
    was open, and whatever is observed later, nothing there is open again."""
    _, kept, _ = _match(entries)
    return sorted((e for run in kept.values() for e in run), key=lambda e: e.seq)


def intent_closer(entries: Sequence[AuditEntry], intent: AuditEntry) -> AuditEntry | None:
    """The entry of ``entries`` that closes ``intent`` (one of them) in
    :func:`open_intents`' reading: the first ``observed`` entry naming it, else the outcome
    matched to it (not always the first that could be: an ``observed`` entry written
    later can hand an outcome to an older intent); None while it is open."""
    for e in entries:
        if e.event == Observed.NAME and e.data.get("intent") == intent.seq:
            return e
    return _match(entries)[2].get(intent.seq)


def _match(
    entries: Sequence[AuditEntry],
) -> tuple[
    dict[int, AuditEntry], dict[tuple[str, str, str], list[AuditEntry]], dict[int, AuditEntry]
]:
    """:func:`open_intents`' matching: (the open intents by seq; for each operation, target
    and authority with one open, its intents and outcomes since none was; and the outcome
    that closed each closed intent, by its seq)."""
    outcome_of = {n: (op, key) for op, (names, key) in INTENT_OUTCOMES.items() for n in names}
    observed = {e.data.get("intent") for e in entries if e.event == Observed.NAME}
    waiting: dict[tuple[str, str, str], list[int]] = {}
    since: dict[tuple[str, str, str], list[AuditEntry]] = {}
    pending: dict[int, AuditEntry] = {}
    closed: dict[int, AuditEntry] = {}
    for e in entries:
        if e.event == Intent.NAME:
            op, target = e.data.get("operation"), e.data.get("target")
            if isinstance(op, str) and isinstance(target, str) and e.seq not in observed:
                k = (op, target, _by(e))
                waiting.setdefault(k, []).append(e.seq)
                since.setdefault(k, []).append(e)
                pending[e.seq] = e
        elif e.event in outcome_of:
            op, key = outcome_of[e.event]
            target = e.data.get(key)
            k = (op, target if isinstance(target, str) else "", _by(e))
            queue = waiting.get(k) if isinstance(target, str) else None
            while queue:
                seq = queue.pop()
                if pending.pop(seq, None) is not None:
                    closed[seq] = e
                    since[k].append(e)
                    break
            if k in since and not waiting[k]:
                del since[k]  # nothing of theirs open: what came before cannot reopen
    return pending, since, closed


def _by(e: AuditEntry) -> str:
    """An intent's or an outcome's ``authorized_by`` (as its entry names the field: a
    ``token-create``'s ``custodians``), as one comparable value."""
    cls = _BY_EVENT.get(e.event)
    key = cls.KEYS.get("authorized_by", "authorized_by") if cls is not None else "authorized_by"
    return json.dumps(e.data.get(key), sort_keys=True)


_BY_EVENT: Mapping[str, type[Event]] = {c.NAME: c for c in Event.__subclasses__()}


def record(log: AuditLog, event: Event) -> AuditEntry:
    """Append ``event`` to ``log`` as one entry and return it: the one writer of entries."""
    return log._append(event.NAME, **event.fields())


def record_many(log: AuditLog, events: Sequence[Event]) -> list[AuditEntry]:
    """:func:`record` for several events under one lock and one ``fsync`` (a batch)."""
    return log._append_many([(e.NAME, e.fields()) for e in events])
