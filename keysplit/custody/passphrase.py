"""Protection type ``0x10``: a share sealed under a passphrase (Argon2id -> AES-128-GCM).

For custodians without a key pair. Parameters in the header: Argon2id cost (9 bytes),
salt (16), nonce (12); the whole header is the AEAD's associated data.

A sealed share is input an attacker may have written, and Argon2id's cost is whatever its
header says, so opening is bounded three ways: parameters beyond :class:`Argon2Params`'s
hard limits are a FormatError; work above :attr:`Argon2Params.CONFIRM_ABOVE_KIB` runs
only if the caller's ``confirm`` hook agrees (the CLI asks the custodian); memory the
host cannot give is a CustodianError, never a ``MemoryError`` traceback.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from .. import names
from ..errors import CustodianError, FormatError
from ..rng import RandomSource, default_rng
from ..share import Share
from . import base
from ._container import Reader, SealedShare, check_name

__all__ = [
    "METHOD",
    "Argon2Params",
    "ConfirmKdf",
    "PassphraseOpener",
    "PassphraseSealer",
    "seal_share_with_passphrase",
]

METHOD = 0x10
SALT_LEN = 16
NONCE_LEN = 12
KEY_LEN = 16


@dataclass(frozen=True)
class Argon2Params:
    """Argon2id cost parameters, recorded in every file that uses them.

    The default (3 passes, 64 MiB, 4 lanes) is RFC 9106's second recommended option for
    memory-constrained use (0.45 s measured here for one derivation). Hard limits, refused
    in files as a FormatError: at most :attr:`MAX_MEMORY_KIB` (RFC 9106's first option,
    1 pass at 2 GiB), :attr:`MAX_TIME` passes and :attr:`MAX_WORK_KIB` of passes times
    memory (64 passes at 2 GiB took ~75 s; the cap allows 2 passes at 2 GiB or 64 at
    64 MiB). Work above :attr:`CONFIRM_ABOVE_KIB` (about 5x the default) needs consent.
    """

    time_cost: int = 3
    memory_kib: int = 64 * 1024
    lanes: int = 4

    MAX_MEMORY_KIB = 2 * 1024 * 1024
    MAX_TIME = 64
    MAX_LANES = 16
    MAX_WORK_KIB = 4 * 1024 * 1024
    CONFIRM_ABOVE_KIB = 1024 * 1024

    def __post_init__(self) -> None:
        if not 1 <= self.lanes <= self.MAX_LANES:
            raise ValueError(f"lanes must be 1..{self.MAX_LANES}")
        if not 1 <= self.time_cost <= self.MAX_TIME:
            raise ValueError(f"time_cost must be 1..{self.MAX_TIME}")
        if not 8 * self.lanes <= self.memory_kib <= self.MAX_MEMORY_KIB:
            raise ValueError(f"memory_kib must be 8*lanes..{self.MAX_MEMORY_KIB}")
        if self.work_kib > self.MAX_WORK_KIB:
            raise ValueError(
                f"time_cost * memory_kib must be at most {self.MAX_WORK_KIB} (got {self.work_kib})"
            )

    @property
    def work_kib(self) -> int:
        """Passes times memory: what one derivation costs (time grows with it)."""
        return self.time_cost * self.memory_kib

    @property
    def needs_confirmation(self) -> bool:
        """True if deriving with these parameters waits for the ``confirm`` hook."""
        return self.work_kib > self.CONFIRM_ABOVE_KIB

    def describe(self) -> str:
        return (
            f"Argon2id with {self.time_cost} passes over {self.memory_kib // 1024} MiB "
            f"({self.lanes} lanes)"
        )

    def encode(self) -> bytes:
        return struct.pack(">IIB", self.time_cost, self.memory_kib, self.lanes)

    @classmethod
    def decode(cls, reader: Reader) -> Argon2Params:
        t, m, p = struct.unpack(">IIB", reader.take(9))
        try:
            return cls(t, m, p)
        except ValueError as exc:
            raise FormatError(
                f"{reader.what} has unacceptable Argon2id parameters: {exc}"
            ) from None

    def derive(self, passphrase: bytes, salt: bytes) -> bytes:
        """Derive a key, unguarded: callers opening files use :func:`derive_checked`."""
        return Argon2id(
            salt=salt,
            length=KEY_LEN,
            iterations=self.time_cost,
            lanes=self.lanes,
            memory_cost=self.memory_kib,
        ).derive(passphrase)


ConfirmKdf = Callable[[Argon2Params], bool]
"""Asked before expensive work (:attr:`Argon2Params.needs_confirmation`); True goes on."""


def _available_memory_kib() -> int | None:
    """``MemAvailable`` from /proc/meminfo (what can be had without swapping), if known."""
    try:
        with open("/proc/meminfo", "rb") as fh:
            for line in fh:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, AttributeError):
        return None


def derive_checked(
    params: Argon2Params,
    passphrase: bytes,
    salt: bytes,
    what: str,
    confirm: ConfirmKdf | None = None,
) -> bytes:
    """Derive a key for a file's ``params``: consent, memory and MemoryError handled.

    ``what`` names the file in the error ("the share of custodian 'dave' (share 3)").
    """
    if params.needs_confirmation and (confirm is None or not confirm(params)):
        raise CustodianError(
            f"{what} demands {params.describe()}, more work than keysplit does without asking",
            hint="confirm the cost (the CLI asks), or re-seal it with lighter parameters",
        )
    available = _available_memory_kib()
    if available is not None and params.memory_kib > available:
        raise CustodianError(
            f"{what} needs {params.memory_kib // 1024} MiB for Argon2id; this host has "
            f"{available // 1024} MiB available",
            hint="open it on a host with more free memory",
        )
    try:
        return params.derive(passphrase, salt)
    except MemoryError:
        raise CustodianError(
            f"{what} needs {params.memory_kib // 1024} MiB for Argon2id, more than this "
            "process could allocate",
            hint="open it on a host with more free memory",
        ) from None


def sealing_key(params: Argon2Params, passphrase: bytes, salt: bytes) -> bytes:
    """The key that seals under ``passphrase``: derived from its NFC form
    (:func:`keysplit.names.normalize_passphrase`), so it opens however it is typed."""
    return params.derive(names.normalize_passphrase(check_passphrase(passphrase)), salt)


def open_with_passphrase(
    params: Argon2Params,
    passphrase: bytes,
    salt: bytes,
    what: str,
    confirm: ConfirmKdf | None,
    decrypt: Callable[[bytes], bytes],
) -> bytes:
    """``decrypt(key)`` with the key of each of :func:`keysplit.names.passphrase_candidates`
    (NFC, then the exact bytes: sealed before the library normalized) until one
    authenticates; else "wrong passphrase for <what>". ``confirm`` is asked once."""
    for candidate in names.passphrase_candidates(check_passphrase(passphrase)):
        key = derive_checked(params, candidate, salt, what, confirm)
        confirm = _confirmed  # the custodian agreed to this cost once already
        try:
            return decrypt(key)
        except InvalidTag:
            continue
    raise base.WrongPassphrase(f"wrong passphrase for {what}")


def _confirmed(params: Argon2Params) -> bool:
    return True


def check_passphrase(passphrase: bytes) -> bytes:
    if not isinstance(passphrase, (bytes, bytearray)):
        raise TypeError("passphrase must be bytes")
    if not passphrase:
        raise ValueError("passphrase must not be empty")
    return bytes(passphrase)


@dataclass(frozen=True)
class _Params:
    kdf: Argon2Params
    salt: bytes
    nonce: bytes

    @property
    def recipient_fingerprint(self) -> None:
        return None


def _parse_params(r: Reader) -> _Params:
    kdf = Argon2Params.decode(r)
    return _Params(kdf, r.take(SALT_LEN), r.take(NONCE_LEN))


def _missing(sealed: SealedShare) -> CustodianError:
    return CustodianError(
        f"the share of {sealed.who} is sealed under a passphrase", hint="give its passphrase"
    )


base.register(base.ProtectionMethod(METHOD, "passphrase", _parse_params, _missing))


class PassphraseSealer:
    """Seals for ``custodian`` under ``passphrase``; salt and nonce drawn from ``rng``."""

    method = METHOD

    def __init__(
        self,
        custodian: str,
        passphrase: bytes,
        *,
        kdf: Argon2Params | None = None,
        rng: RandomSource | None = None,
    ) -> None:
        self.custodian = check_name(custodian)
        self._passphrase = check_passphrase(passphrase)
        self._kdf = kdf or Argon2Params()
        self._rng = rng or default_rng()

    def seal(self, plaintext: bytes, head: bytes) -> tuple[bytes, bytes]:
        salt = self._rng.random_bytes(SALT_LEN)
        nonce = self._rng.random_bytes(NONCE_LEN)
        params = self._kdf.encode() + salt + nonce
        key = sealing_key(self._kdf, self._passphrase, salt)
        return params, AESGCM(key).encrypt(nonce, plaintext, head + params)

    def __repr__(self) -> str:
        return f"PassphraseSealer(custodian={self.custodian!r}, passphrase=<redacted>)"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a PassphraseSealer cannot be pickled or copied (it holds a passphrase)")


class PassphraseOpener:
    """Opens passphrase-sealed shares; a wrong passphrase is fatal (it cannot be matched)."""

    methods = frozenset({METHOD})

    def __init__(self, passphrase: bytes, *, confirm: ConfirmKdf | None = None) -> None:
        self._passphrase = check_passphrase(passphrase)
        self._confirm = confirm

    def open(self, sealed: SealedShare) -> bytes:
        p = sealed.params
        assert isinstance(p, _Params)
        return open_with_passphrase(
            p.kdf,
            self._passphrase,
            p.salt,
            f"the share of {sealed.who}",
            self._confirm,
            lambda key: AESGCM(key).decrypt(p.nonce, sealed.ciphertext, sealed.header),
        )

    def __repr__(self) -> str:
        return "PassphraseOpener(passphrase=<redacted>)"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a PassphraseOpener cannot be pickled or copied (it holds a passphrase)")


def seal_share_with_passphrase(
    share: Share,
    custodian: str,
    passphrase: bytes,
    *,
    kdf: Argon2Params | None = None,
    rng: RandomSource | None = None,
) -> bytes:
    """Seal ``share`` under a passphrase: Argon2id -> AES-128-GCM, header as AAD."""
    if not isinstance(share, Share):
        raise TypeError("share must be a Share")
    return base.seal(share, PassphraseSealer(custodian, passphrase, kdf=kdf, rng=rng))
