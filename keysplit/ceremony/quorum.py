"""Who authorizes a ceremony: a quorum of custodian shares, or a key-service token grant.

:data:`Authority` is one of the two; every ceremony in :mod:`keysplit.ceremony` takes one,
so the CLI (a quorum fed by prompts), the demo (a list of shares) and the key service (a
quorum fed by remote custodians to unseal, then token grants for each request) run the
same functions and write the same entries.

* :class:`Quorum` gathers shares through a feed and unseals with
  :meth:`keysplit.keyring.Unsealer.finish`, which holds every unseal rule (both ``--verify``
  gates, the completion of an interrupted rekey); the quorum then records what the unseal
  itself did (``verify-complete``, ``rekey-recovered``, ``rekey-switch``), since appending
  needs the unsealed keyring's MAC key, and what a ceremony killed before its entry left
  unrecorded (``observed`` entries: :mod:`.observe`).
* :class:`TokenGrant` acts on a keyring a key service already holds unsealed: the service
  authenticated the bearer; each ceremony checks the token's policy for its own operation
  and subjects before touching anything, so no ceremony runs outside a policy whatever the
  caller forgot.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from ..audit import AuditEntry
from ..audit import events as ev
from ..audit.events import Contributor, Principal, TokenHolder
from ..errors import KeyringError
from ..keyring import Keyring, UnsealedKeyring, UnsealOutcome, UnsealProgress
from ..share import Share
from .observe import record_unrecorded

__all__ = [
    "Authority",
    "Done",
    "Quorum",
    "QuorumFeed",
    "TokenGrant",
    "TokenPolicy",
    "unsealed",
]

T = TypeVar("T")

QuorumFeed = Callable[["Quorum"], None]
"""Adds shares to a :class:`Quorum` (``quorum.add``) until ``quorum.progress.complete`` or it
gives up; errors it raises end the ceremony."""


class Quorum:
    """The shares of one ceremony, fed lazily so a ceremony's cheap checks run first.

    ``feed`` is a :data:`QuorumFeed` (the CLI's prompts) or a list of shares (empty when the
    caller adds shares itself, as the key service's remote unseal does). ``contributors``
    names who gave a share (no share bytes). ``complete_missing`` (names, possibly none)
    completes a pending ``--verify`` naming exactly who is missing. ``on_recovered`` is
    called if these shares were the new set of an interrupted rekey, which unsealing
    completes; ``on_switched(generation)`` when they switched a ``rekey --verify`` whose
    proofs were complete; ``on_observed(entries)`` with the ``observed`` entries this unseal
    wrote (what a ceremony killed before its entry left unrecorded), if any.
    """

    def __init__(
        self,
        keyring: Keyring,
        feed: QuorumFeed | Sequence[Share],
        *,
        on_recovered: Callable[[], None] | None = None,
        on_switched: Callable[[int], None] | None = None,
        complete_missing: Sequence[str] | None = None,
        on_observed: Callable[[Sequence[AuditEntry]], None] | None = None,
    ) -> None:
        self.keyring = keyring
        self._feed = feed
        self._unsealer = keyring.unsealer(complete_missing=complete_missing)
        self.contributors: list[Contributor] = []
        self.on_recovered = on_recovered
        self.on_switched = on_switched
        self.on_observed = on_observed
        self.recovered = False
        """These shares completed an interrupted rekey."""
        self.switched = False
        """These shares switched a verified rekey (``rekey --verify``, proofs complete)."""
        self.observed: list[AuditEntry] = []
        """``observed`` entries this unseal wrote: changes a killed ceremony left without
        their entry (:func:`keysplit.ceremony.observe.record_unrecorded`)."""

    def add(self, share: Share, *, custodian: str | None = None) -> UnsealProgress:
        """Check one share against the keyring at once (see :meth:`Unsealer.add`;
        ``custodian``: the name the share's file carries, for messages)."""
        progress = self._unsealer.add(share, custodian=custodian)
        who = progress.custodian or "unknown custodian"
        self.contributors.append(Contributor(who, share.index, share.fingerprint))
        return progress

    def precheck(
        self, set_id: bytes, index: int, threshold: int, *, custodian: str | None = None
    ) -> None:
        """Refuse a sealed share from its header before it is opened (see
        :meth:`Unsealer.precheck`): nobody types a passphrase for a share that cannot count."""
        self._unsealer.precheck(set_id, index, threshold, custodian=custodian)

    @property
    def progress(self) -> UnsealProgress:
        return self._unsealer.progress

    @property
    def authorized_by(self) -> list[Principal]:
        return list(self.contributors)

    def unseal(self) -> UnsealedKeyring:
        """Gather the shares (through the feed) and unseal; raises if they fall short or a
        rule of the keyring refuses them (:meth:`Unsealer.finish`)."""
        if callable(self._feed):
            self._feed(self)
        else:
            for share in self._feed:
                self.add(share)
        outcome = self._unsealer.finish()
        ukr = self.keyring.unseal(outcome)
        try:
            recorded = self._record(ukr, outcome)
        except BaseException as exc:
            ukr.close()
            if outcome.switched is None or not isinstance(exc, (Exception, KeyboardInterrupt)):
                raise
            # never reported as a plain failure: the switch stands, the old shares are dead
            did = (
                "completed an interrupted" if outcome.switched != "verified" else "switched to the"
            )
            raise KeyringError(
                f"these shares {did} rekey (the old shares no longer unseal the keyring) but "
                f"it could not be recorded: {exc or 'interrupted'}",
                hint="keep these shares",
            ) from None
        if self.observed and self.on_observed is not None:
            self.on_observed(self.observed)
        if outcome.switched == "recovered" or (outcome.switched == "unrecorded" and recorded):
            self.recovered = True
            if self.on_recovered is not None:
                self.on_recovered()
        elif outcome.switched == "verified":
            self.switched = True
            if self.on_switched is not None:
                self.on_switched(outcome.meta.generation)
        return ukr

    def _record(self, ukr: UnsealedKeyring, outcome: UnsealOutcome) -> bool:
        """The entries of what unsealing itself did (the ceremony then records its own);
        whether a switch was recorded (one owed by a killed rekey that had recorded it
        after all is not recorded twice)."""
        self.observed = record_unrecorded(self.keyring, ukr, self.contributors)
        log = ukr.audit_log()
        v = outcome.verified
        if v is not None:
            st = v.status
            ev.record(
                log,
                ev.VerifyComplete(
                    kind=v.kind,
                    generation=v.generation,
                    set_id=st.set_id_hex,
                    proven=list(st.proven),
                    unproven=list(st.completed_unproven),
                    failures=st.failures,
                    authorized_by=self.contributors,
                ),
            )
            v.state.discard()
        if outcome.switched is not None:
            meta = outcome.meta
            gen = outcome.switch_generation or meta.generation  # (the rekey's, not later)
            owed = outcome.switched != "unrecorded" or not ev.switch_recorded(
                log.selected(Keyring.gap_entries),
                gen,  # (they keep every switch entry)
            )
            if owed:
                event = ev.RekeySwitch if outcome.switched == "verified" else ev.RekeyRecovered
                ev.record(
                    log,
                    event(
                        generation=gen,
                        custodians=[c.name for c in meta.custodians],
                        authorized_by=self.contributors,
                    ),
                )
            self.keyring.home.clear_unrecorded()
            return owed
        return False

    def __repr__(self) -> str:
        p = self.progress
        return f"Quorum({self.keyring.keyring_id}, {p.have}/{p.need})"


class TokenPolicy(Protocol):
    """What a grant needs of a key-service token (:class:`keysplit.service.tokens.TokenPolicy`)."""

    @property
    def name(self) -> str: ...

    @property
    def id(self) -> str: ...

    def check(self, operation: str, subjects: Iterable[str] = ()) -> None:
        """Raise :class:`~keysplit.errors.PermissionDenied` unless allowed."""
        ...


@dataclass(frozen=True)
class TokenGrant:
    """A token's authority over the keyring a key service holds unsealed.

    The service authenticates the bearer and builds the grant; each ceremony checks
    ``policy`` for its operation and subjects, then acts on ``unsealed`` (which stays open:
    the service owns it) and records the token as ``authorized_by``.
    """

    unsealed: UnsealedKeyring
    policy: TokenPolicy

    @property
    def authorized_by(self) -> list[Principal]:
        return [TokenHolder(self.policy.name, self.policy.id)]

    def __repr__(self) -> str:
        return f"TokenGrant({self.policy.name!r}, {self.unsealed.keyring.keyring_id})"


Authority = Quorum | TokenGrant
"""Who may run a ceremony: custodians' shares, or a token a key service accepted."""


@contextlib.contextmanager
def unsealed(
    authority: Authority,
    keyring: Keyring,
    operation: str,
    subjects: Iterable[str] = (),
    *,
    check_log: bool = True,
) -> Iterator[UnsealedKeyring]:
    """The unsealed ``keyring`` for one ceremony: a quorum unseals it (closed after), a
    grant lends the service's after checking its policy for ``operation`` on ``subjects``.

    ``check_log``: a ceremony (a quorum's or a grant's) is refused, before it changes
    anything, if its entry could not be appended to the log
    (:meth:`~keysplit.audit.AuditLog.check_append`): a rekey must not switch, nor a service's
    shred take effect, and then report failure. Off only for repairing the log.
    """
    if isinstance(authority, TokenGrant):
        if authority.unsealed.keyring.keyring_id != keyring.keyring_id:
            raise KeyringError("the token grant is for another keyring")
        authority.policy.check(operation, list(subjects))
        if check_log:
            authority.unsealed.audit_log().check_append()
        yield authority.unsealed
        return
    if authority.keyring.keyring_id != keyring.keyring_id:
        raise KeyringError("the quorum is for another keyring")
    with authority.unseal() as ukr:
        if check_log:
            ukr.audit_log().check_append()
        yield ukr


@dataclass(frozen=True)
class Done(Generic[T]):
    """What a ceremony did: its ``value``, the audit ``entry`` (None if nothing was recorded)
    and who authorized it (custodians' shares, or a token)."""

    value: T
    entry: AuditEntry | None
    authorized_by: Sequence[Principal] = ()

    @property
    def contributors(self) -> list[Contributor]:
        """The custodians who gave a share (none for a token grant)."""
        return [p for p in self.authorized_by if isinstance(p, Contributor)]
