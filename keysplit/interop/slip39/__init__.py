"""SLIP-39 (Shamir backup mnemonics), implemented on keysplit's constant-time core.

Interoperates word for word with Trezor's reference implementation (``shamir-mnemonic``,
used only as a test oracle) and passes the reference test vectors. Everything SLIP-39
specifies is here: 10-bit word encoding, RS1024 checksum (classic and extendable), the
PBKDF2 Feistel encryption of the master secret under a passphrase, the digest share, and
two-level group sharing.

Differences from the reference, all deliberate:

* GF(2^8) products on secret data use :func:`keysplit.hazmat.gf256.mul_const` (no tables).
* Errors are :class:`keysplit.KeysplitError` subclasses (format, checksum, mixed,
  duplicate, insufficient, recovery) that name the share at fault, never its words.
* Supplying *more* than the threshold (members or groups) is accepted: every supplied
  share then takes part in the interpolation and so in the digest check. Exact duplicate
  mnemonics are ignored.

A SLIP-39 passphrase is never checked (by design of the standard): a wrong one yields a
different, valid-looking master secret.

The PBKDF2 cost (``10000 << e`` iterations) is whatever the shares' iteration exponent
says, and shares are input anyone may have written: above :data:`CONFIRM_ABOVE_EXPONENT`
a recovery runs only if the caller's ``confirm`` hook agrees (as Argon2id costs do in
:mod:`keysplit.custody.passphrase`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ...errors import (
    DuplicateShareError,
    InsufficientSharesError,
    KeysplitError,
    MixedSharesError,
    ShareError,
)
from ...rng import RandomSource, default_rng
from . import cipher
from .share import MAX_SHARES, MIN_SECRET_BYTES, Slip39Share, decode_mnemonic, encode_mnemonic
from .sharing import recover_secret, split_secret

__all__ = [
    "CONFIRM_ABOVE_EXPONENT",
    "ConfirmIterations",
    "Slip39Share",
    "combine_mnemonics",
    "combine_shares",
    "decode_mnemonic",
    "encode_mnemonic",
    "generate_mnemonics",
    "generate_shares",
    "pbkdf2_iterations",
]

CONFIRM_ABOVE_EXPONENT = 10
"""Iteration exponents above this need the ``confirm`` hook's consent: 10 is 10,240,000
PBKDF2-HMAC-SHA256 iterations per recovery (~2.7 s measured here; the default 1 is 20,000,
5 ms), 15, the largest, 327,680,000 (~85 s here, minutes on a slow laptop)."""

ConfirmIterations = Callable[[int], bool]
"""Asked with the iteration exponent before work above :data:`CONFIRM_ABOVE_EXPONENT`;
True goes on."""


def pbkdf2_iterations(exponent: int) -> int:
    """PBKDF2 iterations of one recovery (or split) at iteration exponent ``exponent``."""
    return cipher.BASE_ITERATIONS << exponent


def _consent(exponent: int, confirm: ConfirmIterations | None) -> None:
    if exponent > CONFIRM_ABOVE_EXPONENT and (confirm is None or not confirm(exponent)):
        raise KeysplitError(
            f"the SLIP-39 shares demand {pbkdf2_iterations(exponent):,} PBKDF2 iterations "
            f"(iteration exponent {exponent}), more work than keysplit does without asking",
            hint="confirm the cost (the CLI asks), if you trust the shares",
        )


def _check_passphrase(passphrase: bytes) -> None:
    if not isinstance(passphrase, bytes):
        raise TypeError("passphrase must be bytes")
    if any(not 32 <= c <= 126 for c in passphrase):
        raise ValueError("a SLIP-39 passphrase must be printable ASCII (codes 32..126)")


def generate_shares(
    group_threshold: int,
    groups: Sequence[tuple[int, int]],
    master_secret: bytes,
    *,
    passphrase: bytes = b"",
    iteration_exponent: int = 1,
    extendable: bool = True,
    rng: RandomSource | None = None,
) -> list[list[Slip39Share]]:
    """Like :func:`generate_mnemonics`, returning share objects."""
    if not isinstance(master_secret, (bytes, bytearray)):
        raise TypeError("master_secret must be bytes")
    master_secret = bytes(master_secret)
    if len(master_secret) < MIN_SECRET_BYTES or len(master_secret) % 2:
        raise ValueError("the master secret must be an even number of bytes, at least 16")
    _check_passphrase(passphrase)
    if isinstance(iteration_exponent, bool) or not isinstance(iteration_exponent, int):
        raise TypeError("iteration_exponent must be an int")
    if not 0 <= iteration_exponent <= 15:
        raise ValueError("iteration_exponent must be in 0..15")
    if not isinstance(extendable, bool):
        raise TypeError("extendable must be a bool")
    groups = [(int(t), int(n)) for t, n in groups]
    if not 1 <= len(groups) <= MAX_SHARES:
        raise ValueError(f"need 1..{MAX_SHARES} groups")
    if not 1 <= group_threshold <= len(groups):
        raise ValueError("group_threshold must be in 1..number of groups")
    for t, n in groups:
        if not 1 <= t <= n <= MAX_SHARES:
            raise ValueError(f"each group needs 1 <= threshold <= count <= {MAX_SHARES}")
        if t == 1 and n > 1:
            raise ValueError(
                "several member shares with threshold 1 are plain copies; use 1-of-1 instead"
            )
    rng = rng if rng is not None else default_rng()
    identifier = int.from_bytes(rng.random_bytes(2), "big") & 0x7FFF
    ems = cipher.encrypt(master_secret, passphrase, iteration_exponent, identifier, extendable)
    group_secrets = split_secret(group_threshold, len(groups), ems, rng)
    return [
        [
            Slip39Share(
                identifier=identifier,
                extendable=extendable,
                iteration_exponent=iteration_exponent,
                group_index=group_index,
                group_threshold=group_threshold,
                group_count=len(groups),
                member_index=member_index,
                member_threshold=t,
                value=value,
            )
            for member_index, value in split_secret(t, n, group_secret, rng)
        ]
        for (t, n), (group_index, group_secret) in zip(groups, group_secrets, strict=True)
    ]


def generate_mnemonics(
    group_threshold: int,
    groups: Sequence[tuple[int, int]],
    master_secret: bytes,
    *,
    passphrase: bytes = b"",
    iteration_exponent: int = 1,
    extendable: bool = True,
    rng: RandomSource | None = None,
) -> list[list[str]]:
    """Split ``master_secret`` into SLIP-39 mnemonics, one list per group.

    ``groups`` holds ``(member_threshold, member_count)`` per group; any
    ``group_threshold`` groups, each with its member threshold of shares, recover the
    secret. ``passphrase`` (printable ASCII) encrypts the secret first; PBKDF2 runs
    ``10000 << iteration_exponent`` iterations. ``rng`` is the randomness seam.
    """
    shares = generate_shares(
        group_threshold,
        groups,
        master_secret,
        passphrase=passphrase,
        iteration_exponent=iteration_exponent,
        extendable=extendable,
        rng=rng,
    )
    return [[s.mnemonic() for s in group] for group in shares]


def _common(s: Slip39Share) -> tuple[int, bool, int, int, int, int]:
    return (
        s.identifier,
        s.extendable,
        s.iteration_exponent,
        s.group_threshold,
        s.group_count,
        len(s.value),
    )


_COMMON_NAMES = (
    "identifier",
    "extendable flag",
    "iteration exponent",
    "group threshold",
    "group count",
    "length",
)


def recover_ems(shares: Sequence[Slip39Share]) -> bytes:
    """Recover the encrypted master secret from decoded shares (all checks applied)."""
    if not shares:
        raise InsufficientSharesError("no SLIP-39 shares given")
    first = _common(shares[0])
    groups: dict[int, dict[int, Slip39Share]] = {}
    for n, s in enumerate(shares, start=1):
        c = _common(s)
        if c != first:
            what = next(name for name, a, b in zip(_COMMON_NAMES, first, c, strict=True) if a != b)
            raise MixedSharesError(
                f"share {n}: {what} differs from share 1; the shares come from different"
                " SLIP-39 backups",
                index=n,
            )
        members = groups.setdefault(s.group_index, {})
        other = next(iter(members.values()), None)
        if other is not None and other.member_threshold != s.member_threshold:
            raise MixedSharesError(
                f"share {n}: member threshold differs within group {s.group_index + 1}",
                index=n,
            )
        prev = members.get(s.member_index)
        if prev is not None:
            if prev == s:
                continue  # the very same share twice: harmless
            raise DuplicateShareError(
                f"share {n}: member {s.member_index + 1} of group {s.group_index + 1} given"
                " twice with different values",
                index=n,
            )
        members[s.member_index] = s
    group_threshold = shares[0].group_threshold
    complete = {
        g: m for g, m in groups.items() if len(m) >= next(iter(m.values())).member_threshold
    }
    if len(complete) < group_threshold:
        missing = [
            f"group {g + 1} has {len(m)} of {next(iter(m.values())).member_threshold}"
            for g, m in sorted(groups.items())
            if g not in complete
        ]
        detail = "".join(f"; {m} shares" for m in missing)
        raise InsufficientSharesError(
            f"need {group_threshold} complete group(s) of shares, have {len(complete)}{detail}",
            hint="collect more shares (each group needs its member threshold)",
        )
    group_points = []
    for g, members in sorted(complete.items()):
        t = next(iter(members.values())).member_threshold
        points = [(i, s.value) for i, s in sorted(members.items())]
        group_points.append((g, recover_secret(t, points)))
    return recover_secret(group_threshold, group_points)


def combine_shares(
    shares: Sequence[Slip39Share],
    *,
    passphrase: bytes = b"",
    confirm: ConfirmIterations | None = None,
) -> bytes:
    """Recover the master secret from decoded shares (``confirm``: see
    :data:`CONFIRM_ABOVE_EXPONENT`; the shares are checked first)."""
    if not isinstance(passphrase, bytes):
        raise TypeError("passphrase must be bytes")
    ems = recover_ems(shares)
    s = shares[0]
    _consent(s.iteration_exponent, confirm)
    return cipher.decrypt(ems, passphrase, s.iteration_exponent, s.identifier, s.extendable)


def combine_mnemonics(
    mnemonics: Sequence[str],
    *,
    passphrase: bytes = b"",
    confirm: ConfirmIterations | None = None,
) -> bytes:
    """Recover the master secret from SLIP-39 mnemonics.

    Raises :class:`keysplit.FormatError` / :class:`keysplit.ChecksumError` for a bad
    mnemonic (naming it by position), :class:`keysplit.MixedSharesError`,
    :class:`keysplit.DuplicateShareError`, :class:`keysplit.InsufficientSharesError`, or
    :class:`keysplit.RecoveryError` when the digest check fails.
    """
    if isinstance(mnemonics, str):
        raise TypeError("pass a sequence of mnemonics, not one string")
    shares = []
    for n, m in enumerate(mnemonics, start=1):
        try:
            shares.append(decode_mnemonic(m))
        except ShareError as exc:
            raise type(exc)(f"share {n}: {exc}", index=n, hint=exc.hint) from None
        except KeysplitError as exc:
            raise type(exc)(f"share {n}: {exc}", hint=exc.hint) from None
    return combine_shares(shares, passphrase=passphrase, confirm=confirm)
