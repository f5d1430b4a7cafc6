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

from . import interop, slip39
from .errors import KeysplitError
from .rng import RandomSource
from .share import Share, combine, split

__all__ = [
    "keysplit_to_pycryptodome",
    "keysplit_to_slip39",
    "pycryptodome_to_keysplit",
    "slip39_to_keysplit",
]


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
    rng: RandomSource | None = None,
) -> list[Share]:
    """Combine SLIP-39 mnemonics (digest-checked) and re-split as keysplit shares.

    SLIP-39 cannot check the passphrase: a wrong one gives a different secret, which the
    new shares would then faithfully carry. Compare :func:`keysplit.secret_fingerprint`
    of the result with a known value, or unseal the keyring, before destroying the old
    shares.
    """
    secret = slip39.combine_mnemonics(mnemonics, passphrase=passphrase)
    return split(secret, threshold, count, rng=rng)


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
    if len(secret) != interop.SECRET_BYTES:
        raise KeysplitError(
            f"pycryptodome shares hold a 16-byte secret; this one is {len(secret)} bytes"
        )
    return interop.split_pycryptodome(secret, threshold, count, ssss=ssss, rng=rng)


def pycryptodome_to_keysplit(
    shares: Sequence[tuple[int, bytes]],
    threshold: int,
    count: int,
    *,
    source_threshold: int | None = None,
    ssss: bool = False,
    rng: RandomSource | None = None,
) -> list[Share]:
    """Combine pycryptodome/ssss shares and re-split as keysplit shares.

    pycryptodome shares carry no check: give one share more than ``source_threshold``
    so that a wrong share is detected, else a typo silently becomes a wrong key.
    """
    secret = interop.combine_pycryptodome(shares, threshold=source_threshold, ssss=ssss)
    return split(secret, threshold, count, rng=rng)
