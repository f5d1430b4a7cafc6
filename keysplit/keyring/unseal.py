"""Unsealing: collect shares one at a time, then rebuild the master key and open the keyring."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DuplicateShareError, InsufficientSharesError, KeyringError, MixedSharesError
from ..proof import PendingVerification, verify_path
from ..rng import RandomSource
from ..share import Share, combine
from ..store import KeyStore
from . import file as kf
from .home import PENDING_FILE

if TYPE_CHECKING:
    from .sealed import Keyring
    from .unsealed import UnsealedKeyring

__all__ = ["UnsealProgress", "Unsealer"]


@dataclass(frozen=True)
class UnsealProgress:
    """How far an unseal has got: ``have`` of ``need`` shares."""

    have: int
    need: int
    custodian: str | None = None

    @property
    def complete(self) -> bool:
        return self.have >= self.need


class Unsealer:
    """Collects shares one at a time and reports progress.

    Each :meth:`add` checks the share at once: a share of another keyring or an older share
    set, a duplicate, or one disagreeing with the shares so far is refused with an error
    naming it. When enough shares are in, :meth:`finish` recovers the master key (verified
    by the share recovery tag, then by the keyring file's authentication).
    """

    def __init__(self, keyring: Keyring) -> None:
        self._kr = keyring
        self._shares: list[Share] = []
        self._target: kf.KeyringMeta | None = None

    def _name(self, share: Share) -> str:
        who = self._kr.custodian_of(share)
        return f"share {share.index}" + (f" ({who})" if who else "")

    def add(self, share: Share) -> UnsealProgress:
        if not isinstance(share, Share):
            raise TypeError("add() takes a Share (use Share.parse or Share.from_bytes)")
        sid = share.set_id.hex()
        candidates = [m for m in (self._kr.meta, self._kr.pending) if m is not None]
        match = next((m for m in candidates if m.set_id == sid), None)
        if match is None:
            raise MixedSharesError(
                f"share {share.index} (set {sid}) does not belong to this keyring "
                f"(current share set {self._kr.meta.set_id})",
                index=share.index,
                hint="it may be from another keyring or from before a rekey",
            )
        if self._target is not None and match is not self._target:
            raise MixedSharesError(
                f"{self._name(share)} is from the new share set of an unfinished rekey, "
                "the others from the current one",
                index=share.index,
            )
        if share.threshold != match.threshold or share.index not in {
            c.index for c in match.custodians
        }:
            raise MixedSharesError(
                f"{self._name(share)} does not match this keyring's share set parameters",
                index=share.index,
            )
        for s in self._shares:
            if s.index == share.index:
                raise DuplicateShareError(f"{self._name(share)} was already added", index=s.index)
        self._target = match
        self._shares.append(share)
        return UnsealProgress(len(self._shares), match.threshold, self._kr.custodian_of(share))

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

    def finish(
        self, *, store: KeyStore | None = None, rng: RandomSource | None = None
    ) -> UnsealedKeyring:
        """Recover the master key and open the keyring (needs ``threshold`` shares).

        ``store`` replaces the keyring's own store (it must belong to this keyring);
        ``rng`` the keyring's randomness for this session.
        """
        from .unsealed import UnsealedKeyring

        target = self._target or self._kr.meta
        if len(self._shares) < target.threshold:
            raise InsufficientSharesError(
                f"need {target.threshold} shares, got {len(self._shares)}"
            )
        master = combine(self._shares)
        kr = self._kr
        home = kr.home
        recovered = target is kr.pending
        with home.lock():
            if target is kr.pending:
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
                _check_verified(home.path / PENDING_FILE, meta.set_id)
                # The new shares prove the pending rekey was handed out: complete it.
                home.commit_pending()
                kr.meta, kr.pending = meta, None
            else:
                meta, secrets = kf.open_secrets(home.read_keyring(), master)
                if meta != kr.meta:
                    raise KeyringError("the keyring changed while unsealing; try again")
        self._shares.clear()
        opened = UnsealedKeyring(kr, master, secrets, store=store, rng=rng)
        if recovered:  # a rekey committed here: tell the fleet (epoch, rekey count)
            opened.store.note_rekey()
        return opened

    def __repr__(self) -> str:
        p = self.progress
        return f"Unsealer(have={p.have}, need={p.need})"


def _check_verified(pending_file: Path, set_id: str) -> None:
    """A rekey made with ``--verify`` switches only once its proofs are complete."""
    state_file = verify_path(pending_file)
    if not state_file.exists():
        return
    status = PendingVerification.load(state_file).status()
    if status.set_id_hex == set_id and not status.completed:
        raise KeyringError(
            "the pending rekey waits for proofs of possession from: " + ", ".join(status.missing),
            hint="see 'keysplit verify status DIR'; the current shares still work",
        )
