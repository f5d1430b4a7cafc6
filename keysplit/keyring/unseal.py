"""Unsealing: collect shares one at a time, then rebuild the master key and open the keyring."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..errors import DuplicateShareError, InsufficientSharesError, KeyringError, MixedSharesError
from ..proof import Verification
from ..share import Share, combine
from . import file as kf

if TYPE_CHECKING:
    from .sealed import Keyring

__all__ = ["UnsealOutcome", "UnsealProgress", "Unsealer"]


@dataclass(frozen=True)
class UnsealProgress:
    """How far an unseal has got: ``have`` of ``need`` shares."""

    have: int
    need: int
    custodian: str | None = None

    @property
    def complete(self) -> bool:
        return self.have >= self.need


@dataclass(frozen=True, repr=False)
class UnsealOutcome:
    """What :meth:`Unsealer.finish` recovered, as values: the opened metadata and secrets
    (``master_key``, ``secrets``: secret), ``verified`` (the ``--verify`` generation these
    shares completed, whose ``verify-complete`` entry a ceremony records, else None) and
    ``switched``: ``"recovered"`` when the shares of an interrupted rekey completed it (or
    ``"unrecorded"`` when they unsealed a keyring whose rekey switched to them and was
    killed before its audit entry (a quorum records it),
    ``"verified"`` when a ``rekey --verify`` switched after its proofs, else None;
    ``switch_generation``: the generation that switch made (for ``"unrecorded"`` the one
    the owed-switch mark names: a rotation since then bumped ``meta.generation``)."""

    meta: kf.KeyringMeta
    master_key: bytes
    secrets: kf.KeyringSecrets
    verified: Verification | None = None
    switched: Literal["recovered", "verified", "unrecorded"] | None = None
    switch_generation: int | None = None

    def __repr__(self) -> str:
        return (
            f"UnsealOutcome({self.meta.keyring_id}, generation={self.meta.generation}, "
            f"switched={self.switched}, <redacted>)"
        )

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("an UnsealOutcome cannot be pickled or copied (it holds the master key)")


class Unsealer:
    """Collects shares one at a time and reports progress.

    Each :meth:`add` checks the share at once: a share of another keyring or an older share
    set, a duplicate, or one disagreeing with the shares so far is refused with an error
    naming it. When enough shares are in, :meth:`finish` applies the keyring's ``--verify``
    rules and recovers the master key (verified by the share recovery tag, then by the
    keyring file's authentication). Like trezor's ``RecoveryState``, no share reaches a
    master key except through these rules.

    ``complete_missing`` (names, possibly none): complete a pending ``--verify`` with
    exactly these custodians missing.
    """

    def __init__(self, keyring: Keyring, *, complete_missing: Sequence[str] | None = None) -> None:
        self._kr = keyring
        self._shares: list[Share] = []
        self._target: kf.KeyringMeta | None = None
        self._complete_missing = None if complete_missing is None else list(complete_missing)
        v = keyring.verification() if complete_missing is not None else None
        if v is not None and not v.status.completed:  # a wrong list: before any share
            v.state.check_unproven(complete_missing or ())

    def _name(self, sid: str, index: int) -> str:
        who = next(
            (
                c.name
                for m in (self._kr.meta, self._kr.pending)
                if m is not None and m.set_id == sid
                for c in m.custodians
                if c.index == index
            ),
            None,
        )
        return f"share {index}" + (f" ({who})" if who else "")

    def add(self, share: Share, *, custodian: str | None = None) -> UnsealProgress:
        """Check ``share`` against the keyring at once and keep it.

        ``custodian``: the name the share's file carries (a sealed share names its
        custodian), for messages only: it names a share from another keyring or share set,
        which this keyring cannot name; for its own shares the keyring's record wins.
        """
        if not isinstance(share, Share):  # file bytes, share text: name the opener to use
            raise TypeError(
                f"a share must be a keysplit.Share, not {type(share).__name__}: open a share "
                "file with keysplit.load_share(data, identity=... or passphrase=...), or "
                "parse ks1- text with keysplit.Share.parse"
            )
        match = self._check(share.set_id.hex(), share.index, share.threshold, custodian)
        self._target = match
        self._shares.append(share)
        return UnsealProgress(len(self._shares), match.threshold, self._kr.custodian_of(share))

    def precheck(
        self, set_id: bytes, index: int, threshold: int, *, custodian: str | None = None
    ) -> None:
        """The checks :meth:`add` makes that a sealed share's public header allows (its set,
        index and threshold), before anyone types a passphrase to open it: a share of another
        keyring, or one already added, is refused at once. :meth:`add` checks again."""
        self._check(set_id.hex(), index, threshold, custodian)

    def _check(self, sid: str, index: int, threshold: int, custodian: str | None) -> kf.KeyringMeta:
        candidates = [m for m in (self._kr.meta, self._kr.pending) if m is not None]
        match = next((m for m in candidates if m.set_id == sid), None)
        if match is None:
            whose = f"{custodian}, " if custodian else ""
            raise MixedSharesError(
                f"share {index} ({whose}set {sid}) does not belong to this keyring "
                f"(current share set {self._kr.meta.set_id})",
                index=index,
                hint="it may be from another keyring or from before a rekey",
            )
        if self._target is not None and match is not self._target:
            raise MixedSharesError(
                f"{self._name(sid, index)} is from the new share set of an unfinished rekey, "
                "the others from the current one",
                index=index,
            )
        if threshold != match.threshold or index not in {c.index for c in match.custodians}:
            raise MixedSharesError(
                f"{self._name(sid, index)} does not match this keyring's share set parameters",
                index=index,
            )
        for s in self._shares:
            if s.index == index:
                raise DuplicateShareError(
                    f"{self._name(sid, index)} was already added", index=index
                )
        return match

    def discard(self, index: int) -> UnsealProgress:
        """Drop the share with this index (e.g. the one a :class:`RecoveryError` named)."""
        self._shares = [s for s in self._shares if s.index != index]
        if not self._shares:
            self._target = None
        return self.progress

    @property
    def progress(self) -> UnsealProgress:
        need = (self._target or self._kr.meta).threshold
        return UnsealProgress(len(self._shares), need)

    def finish(self) -> UnsealOutcome:
        """Apply the keyring's rules, recover the master key and open the keyring file.

        Needs ``threshold`` shares. The rules hold for every caller (CLI, library, key
        service), under the home's writer lock and before the master key is recovered:

        * ``init --verify``: a keyring whose custodians have not all proven possession of
          their share serves nothing (:class:`~keysplit.proof.VerificationPending`);
        * ``rekey --verify``: the new shares do not switch the keyring until every new
          custodian has proven (the current shares keep working);
        * ``complete_missing`` completes either verification naming exactly who is missing
          (recorded in the state file once the master key has checked out);
        * a share set whose hand-out an init or rekey ceremony was killed in (the home's
          hand-out mark) unseals nothing: some custodians may have no share.

        Shares of a pending rekey complete it (the keyring file is replaced). Returns the
        values (the :class:`Keyring` object is left as it was); :meth:`Keyring.unseal` adopts
        the opened metadata and builds the :class:`UnsealedKeyring` from them and a
        ceremony records :attr:`UnsealOutcome.verified` and :attr:`UnsealOutcome.switched`.
        """
        target = self._target or self._kr.meta
        if len(self._shares) < target.threshold:
            raise InsufficientSharesError(
                f"need {target.threshold} shares, got {len(self._shares)}"
            )
        kr = self._kr
        home = kr.home
        to_new = kr.pending is not None and target is kr.pending
        with home.lock():
            if home.handout_incomplete(target.set_id):  # some custodians may have no share
                if to_new:
                    raise KeyringError(
                        "these shares are of a rekey that was killed while its new shares "
                        "were written: some custodians may have none, so they do not complete it",
                        hint="discard it with a quorum of the current shares "
                        "(keysplit rekey --abort), then rekey again",
                    )
                raise KeyringError(
                    "this keyring's init was killed while its shares were written: some "
                    "custodians may have none, so it is never unsealed",
                    hint=f"remove {home.path} and run init again",
                )
            verification = self._gate(home.verification(kr.meta, kr.pending), to_new)
            master = combine(self._shares)
            if to_new:
                data = home.read_pending()
                if data is None:
                    raise KeyringError("the pending rekey disappeared; unseal again")
                meta, secrets = kf.open_secrets(data, master)
                current = kf.parse(home.read_keyring())[0]
                if (
                    meta.keyring_id != current.keyring_id
                    or meta.generation != current.generation + 1
                ):
                    raise KeyringError(
                        "the pending rekey no longer matches the keyring file; "
                        "unseal with the current shares and run the rekey again"
                    )
            else:
                meta, secrets = kf.open_secrets(home.read_keyring(), master)
                if meta != kr.meta:
                    raise KeyringError("the keyring changed while unsealing; try again")
            if verification is not None and not verification.status.completed:
                verification.state.complete(unproven=self._complete_missing or ())
            switched: Literal["recovered", "verified", "unrecorded"] | None = None
            owed = None
            if to_new:
                # The new shares prove the pending rekey was handed out: complete it.
                home.mark_unrecorded(meta.set_id, meta.generation)  # until it is recorded
                home.commit_pending()
                verified_rekey = verification is not None and verification.kind == "rekey"
                switched = "verified" if verified_rekey else "recovered"
                owed = meta.generation
            else:
                owed = home.switch_unrecorded(meta.set_id, meta.generation)
                if owed is not None:
                    # A rekey switched to these shares and was killed before its audit
                    # entry (or a library unseal completed one): the quorum records it now.
                    switched = "unrecorded"
        self._shares.clear()
        self._target = None  # a later add is checked against the keyring as it is then
        return UnsealOutcome(meta, master, secrets, verification, switched, owed)

    def _gate(self, v: Verification | None, to_new: bool) -> Verification | None:
        """The ``--verify`` rules (see :meth:`finish`): the verification these shares
        complete (to be recorded), None if none applies; raises if one is incomplete."""
        missing = self._complete_missing
        if v is None or (v.kind == "rekey" and not to_new):
            if missing is not None:
                raise KeyringError(
                    "no share generation of these shares awaits verification"
                    if v is None
                    else "completing a verified rekey needs a quorum of the NEW shares",
                    hint=None if v is None else "the switch opens the new keyring file",
                )
            return None
        if v.status.completed or missing is not None:
            return v
        raise v.refusal()

    def __repr__(self) -> str:
        p = self.progress
        return f"Unsealer(have={p.have}, need={p.need})"
