"""Remote unseal: custodians send their shares HPKE-sealed to a per-attempt ephemeral key.

The server publishes, for each unseal *attempt*, a random 16-byte nonce and a fresh X25519
public key. A custodian's CLI opens the share locally and seals its bytes to that key
(RFC 9180 base mode, the keyring's suite) with ``info = LABEL || keyring id || nonce``, so
the share never crosses the wire, a log or a TLS-terminating proxy in clear, and a share
sealed for another attempt or another keyring does not open. An attempt ends when the
quorum is reached (the ephemeral key is dropped), on reset, or when its partial progress
is older than the timeout; a share sealed for an ended attempt is refused as stale.

This module is only that transport. Each opened share is fed to a
:class:`keysplit.ceremony.Quorum` (checked at once by the keyring's
:class:`~keysplit.keyring.Unsealer`, so a foreign, mismatched or duplicate share is named
and not counted), and the quorum unseals exactly as a ceremony on the command line does:
the same rules (a keyring made with ``init --verify`` stays sealed until its custodians
have proven possession; a ``rekey --verify`` switches only once proven) and the same audit
entries for what unsealing did (``verify-complete``, ``rekey-recovered``).
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ..audit.events import Contributor
from ..ceremony.quorum import Quorum
from ..custody import load_share
from ..errors import (
    FormatError,
    KeysplitError,
    RecoveryError,
    SealedError,
    ShareError,
)
from ..keyring import HPKE_SUITE, Keyring, UnsealedKeyring
from ..share import Share

MAX_TIMEOUT = 86_400
"""Longest an unseal attempt may stay open (seconds), as the connection timeouts."""

__all__ = [
    "INFO_LABEL",
    "RemoteUnseal",
    "StaleNonceError",
    "key_fingerprint",
    "seal_share_for",
    "unseal_info",
]

INFO_LABEL = b"keysplit remote unseal v1\x00"


class StaleNonceError(ShareError):
    """The share was sealed for an unseal attempt that has ended (reset, timed out, done)."""


def unseal_info(keyring_id: str, nonce: bytes) -> bytes:
    return INFO_LABEL + bytes.fromhex(keyring_id) + nonce


def key_fingerprint(public_key: bytes) -> str:
    """Short fingerprint of an attempt key, for custodians to compare with the server's log."""
    return hashlib.sha256(b"keysplit unseal key\x00" + public_key).hexdigest()[:16]


def seal_share_for(share: Share, *, public_key: bytes, keyring_id: str, nonce: bytes) -> bytes:
    """Client side: the share's bytes, HPKE-sealed to one unseal attempt."""
    if len(public_key) != 32 or len(nonce) != 16:
        raise FormatError("unseal attempt: bad public key or nonce length")
    pk = X25519PublicKey.from_public_bytes(public_key)
    return HPKE_SUITE.encrypt(share.to_bytes(), pk, unseal_info(keyring_id, nonce))


@dataclass
class _Attempt:
    nonce: bytes
    private: X25519PrivateKey
    public: bytes
    started: float
    quorum: Quorum
    custodians: list[str]


class RemoteUnseal:
    """Server-side state of remote unsealing for one keyring (not thread-safe: the caller
    serializes, as the service's event loop does)."""

    def __init__(
        self,
        keyring: Keyring,
        *,
        timeout: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kr = keyring
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError("timeout must be a number of seconds")
        if not 0 < timeout <= MAX_TIMEOUT:  # NaN fails too: it never expired (and inf
            # went out as JSON's non-standard Infinity in every offer)
            raise ValueError(f"unseal timeout must be between 0 and {MAX_TIMEOUT} seconds")
        self.timeout = float(timeout)
        self._clock = clock
        self._attempt: _Attempt | None = None
        self.unsealed_by: list[Contributor] = []
        """The quorum of the last completed unseal (names, indexes, share fingerprints)."""

    @property
    def keyring(self) -> Keyring:
        """The sealed keyring as of the current (or last) unseal attempt."""
        return self._kr

    def refresh(self) -> Keyring:
        """:attr:`keyring`, re-read from the file first if no attempt runs (an attempt keeps
        the one it started with, which its progress counts against): what a sealed
        service's status shows is what the next attempt will need, after a rekey made
        meanwhile too. A file that does not read leaves the last one (the attempt then
        says why)."""
        self._expire()
        if self._attempt is None:
            with contextlib.suppress(KeysplitError, OSError):
                self._kr = Keyring.open(self._kr.path)
        return self._kr

    def _expire(self) -> None:
        a = self._attempt
        if a is not None and self._clock() - a.started > self.timeout:
            self._attempt = None

    def _current(self) -> _Attempt:
        self._expire()
        if self._attempt is None:
            # Re-read the keyring file: a rekey or rotate done while sealed is picked up.
            self._kr = Keyring.open(self._kr.path)
            priv = X25519PrivateKey.generate()
            pub = priv.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
            self._attempt = _Attempt(
                secrets.token_bytes(16), priv, pub, self._clock(), Quorum(self._kr, ()), []
            )
        return self._attempt

    def progress(self) -> dict[str, Any]:
        self._expire()
        a = self._attempt
        need = self._kr.meta.threshold
        if a is None:  # no attempt runs: nothing expires yet (the key is always there)
            return {"have": 0, "need": need, "custodians": [], "expires_in": None}
        p = a.quorum.progress
        left = max(0.0, self.timeout - (self._clock() - a.started))
        return {
            "have": p.have,
            "need": p.need,
            "custodians": list(a.custodians),
            "expires_in": round(left, 1),
        }

    def offer(self) -> dict[str, Any]:
        """The current attempt's public parameters (starting one if none is running)."""
        a = self._current()
        return {
            "keyring_id": self._kr.keyring_id,
            "nonce": a.nonce.hex(),
            "public_key": a.public.hex(),
            "fingerprint": key_fingerprint(a.public),
            "progress": self.progress(),
        }

    def reset(self) -> bool:
        had = self._attempt is not None and self._attempt.quorum.progress.have > 0
        self._attempt = None
        return had

    def submit(self, nonce: bytes, sealed: bytes) -> tuple[dict[str, Any], UnsealedKeyring | None]:
        """Take one sealed share. Returns (progress, the unsealed keyring once complete; who
        gave the quorum's shares is then :attr:`unsealed_by`).

        Raises a :class:`ShareError` subclass naming the problem; the share is not counted.
        A complete quorum the keyring's rules refuse (its custodians have not all proven
        possession: :class:`~keysplit.proof.VerificationPending`) ends the attempt, and the
        service stays sealed.
        """
        self._expire()
        a = self._attempt
        if a is None or not secrets.compare_digest(nonce, a.nonce):
            raise StaleNonceError(
                "share sealed for an unseal attempt that has ended (stale nonce)",
                hint="run keysplit unseal --server again: it fetches the current attempt",
            )
        try:
            data = HPKE_SUITE.decrypt(sealed, a.private, unseal_info(self._kr.keyring_id, a.nonce))
        except Exception:
            raise ShareError("sealed share does not open for this unseal attempt") from None
        try:
            share = load_share(data)
        except KeysplitError as exc:
            raise ShareError(f"share: {exc}") from None
        progress = a.quorum.add(share)  # raises Mixed/Duplicate errors naming the share
        a.custodians.append(progress.custodian or f"share {share.index}")
        if not progress.complete:
            return self.progress(), None
        try:
            opened = a.quorum.unseal()  # the keyring's rules, and their audit entries
        except RecoveryError:
            self._attempt = None
            raise RecoveryError(
                "the shares combined but failed their recovery check: at least one is forged "
                "or wrong; progress was discarded",
                hint="every custodian must unseal again",
            ) from None
        except (KeysplitError, OSError):  # refused by a rule, or failed: start over
            self._attempt = None
            raise
        done = {"have": progress.have, "need": progress.need, "custodians": list(a.custodians)}
        self._attempt = None
        self.unsealed_by = list(a.quorum.contributors)
        return done, opened


def require_unsealed(kr: UnsealedKeyring | None) -> UnsealedKeyring:
    if kr is None:
        raise SealedError(
            "the key service is sealed", hint="custodians run: keysplit unseal DIR --server URL"
        )
    return kr
