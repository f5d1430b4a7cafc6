"""Move a split secret between keysplit shares, SLIP-39 mnemonics and pycryptodome shares.

No share of one scheme can be transcoded into a share of another on its own:

* keysplit shares are points over GF(2^8) of ``secret || check tag``;
* SLIP-39 shares are points over GF(2^8) too, but of the *Feistel-encrypted* secret
  (PBKDF2 under the passphrase, salted with the backup's identifier), at x = 0..15, on a
  polynomial pinned by a digest share at x = 254 and the secret at x = 255, possibly in
  two levels;
* pycryptodome/ssss shares are points over GF(2^128).

So every conversion combines the source shares (with all of that format's checks) and
splits the recovered secret afresh in the target format, here, in memory, in one call:
the secret is never written anywhere, but it does exist in this process for a moment.
Do it on an offline machine, as for any recovery. The new shares are independent of the
old ones: old and new share sets both recover the secret until the old ones are
destroyed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import KeysplitError
from ..rng import RandomSource, default_rng
from ..share import SET_ID_LEN, Share, combine, split
from . import pycryptodome, slip39

__all__ = [
    "keysplit_to_pycryptodome",
    "keysplit_to_slip39",
    "pycryptodome_to_keysplit",
    "slip39_to_keysplit",
    "split_with_set_id",
]


class _SetIdFirst:
    """RNG seam for :func:`keysplit.split`: ``set_id`` for its first draw, then ``inner``.

    ``split`` documents its draw order (set id, then coefficients); the caller checks the
    result, so a change of that order fails loudly instead of producing other ids.
    """

    def __init__(self, set_id: bytes, inner: RandomSource) -> None:
        self._set_id: bytes | None = set_id
        self._inner = inner

    def random_bytes(self, n: int) -> bytes:
        if self._set_id is not None and n == len(self._set_id):
            out, self._set_id = self._set_id, None
            return out
        return self._inner.random_bytes(n)

    def fill(self, out: np.ndarray) -> None:
        self._inner.fill(out)

    def __repr__(self) -> str:
        return "_SetIdFirst(...)"


def split_with_set_id(
    secret: bytes,
    threshold: int,
    count: int,
    *,
    set_id: bytes | None = None,
    rng: RandomSource | None = None,
) -> list[Share]:
    """:func:`keysplit.split`, optionally reusing a known share-set id.

    Reusing the set id of a keyring's share set makes the new shares acceptable to that
    keyring (it knows its quorum by set id, threshold and indices). The new shares are a
    fresh, independent split: mixed with shares of the old split they fail the recovery
    check, they never combine to a wrong key.
    """
    if set_id is None:
        return split(secret, threshold, count, rng=rng)
    if not isinstance(set_id, bytes) or len(set_id) != SET_ID_LEN:
        raise ValueError(f"set_id must be {SET_ID_LEN} bytes")
    shares = split(
        secret, threshold, count, rng=_SetIdFirst(set_id, rng if rng is not None else default_rng())
    )
    if any(s.set_id != set_id for s in shares):  # pragma: no cover - split changed its order
        raise RuntimeError("keysplit.split no longer draws the set id first")
    return shares


def keysplit_to_slip39(
    shares: Sequence[Share],
    group_threshold: int,
    groups: Sequence[tuple[int, int]],
    *,
    passphrase: bytes = b"",
    iteration_exponent: int = 1,
    extendable: bool = True,
    rng: RandomSource | None = None,
) -> list[list[str]]:
    """Combine keysplit shares (fully verified) and re-split the secret as SLIP-39."""
    secret = combine(shares)
    if len(secret) < 16 or len(secret) % 2:
        raise KeysplitError(
            f"SLIP-39 can hold a secret of 16, 18, 20 ... bytes; this one is {len(secret)} bytes"
        )
    return slip39.generate_mnemonics(
        group_threshold,
        groups,
        secret,
        passphrase=passphrase,
        iteration_exponent=iteration_exponent,
        extendable=extendable,
        rng=rng,
    )


def slip39_to_keysplit(
    mnemonics: Sequence[str],
    threshold: int,
    count: int,
    *,
    passphrase: bytes = b"",
    set_id: bytes | None = None,
    rng: RandomSource | None = None,
    confirm: slip39.ConfirmIterations | None = None,
) -> list[Share]:
    """Combine SLIP-39 mnemonics (digest-checked) and re-split as keysplit shares.

    ``set_id``: see :func:`split_with_set_id` (to hand a keyring its quorum back).
    ``confirm``: see :data:`keysplit.interop.slip39.CONFIRM_ABOVE_EXPONENT`.

    SLIP-39 cannot check the passphrase: a wrong one gives a different secret, which the
    new shares would then faithfully carry. Compare :func:`keysplit.secret_fingerprint`
    of the result with a known value, or unseal the keyring, before destroying the old
    shares.
    """
    secret = slip39.combine_mnemonics(mnemonics, passphrase=passphrase, confirm=confirm)
    return split_with_set_id(secret, threshold, count, set_id=set_id, rng=rng)


def keysplit_to_pycryptodome(
    shares: Sequence[Share],
    threshold: int,
    count: int,
    *,
    ssss: bool = False,
    rng: RandomSource | None = None,
) -> list[tuple[int, bytes]]:
    """Combine keysplit shares and re-split a 16-byte secret in pycryptodome's form."""
    secret = combine(shares)
    if len(secret) != pycryptodome.SECRET_BYTES:
        raise KeysplitError(
            f"pycryptodome shares hold a 16-byte secret; this one is {len(secret)} bytes"
        )
    return pycryptodome.split_pycryptodome(secret, threshold, count, ssss=ssss, rng=rng)


def pycryptodome_to_keysplit(
    shares: Sequence[tuple[int, bytes]],
    threshold: int,
    count: int,
    *,
    source_threshold: int | None = None,
    ssss: bool = False,
    set_id: bytes | None = None,
    rng: RandomSource | None = None,
) -> list[Share]:
    """Combine pycryptodome/ssss shares and re-split as keysplit shares.

    pycryptodome shares carry no check: give one share more than ``source_threshold``
    so that a wrong share is detected, else a typo silently becomes a wrong key.
    """
    secret = pycryptodome.combine_pycryptodome(shares, threshold=source_threshold, ssss=ssss)
    return split_with_set_id(secret, threshold, count, set_id=set_id, rng=rng)
