"""Protecting a share for its custodian: one module per protection type, one registry.

* :mod:`.base`: the :class:`ShareSealer` / :class:`ShareOpener` protocols (age's
  Recipient/Identity, with its error contract: :class:`IncorrectIdentity` means "not for
  me, try the next", anything else is fatal) and the registry by method byte;
* :mod:`._container`: framing, checksums and the stated order of parse errors;
* :mod:`.hpke`: sealed to a public key (X25519, or ML-KEM-768+X25519), with
  :class:`Recipient` / :class:`Identity`;
* :mod:`.passphrase`: sealed under a passphrase (Argon2id), with its cost bounds.

Every public module of this package is a protection type and is imported here, which
registers it: adding a type is adding one file. Formats: ``docs/format/custodian.md``.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
from collections.abc import Sequence

from .._fileio import read_bounded
from ..errors import FormatError
from ..share import Share
from . import base
from ._container import (
    MAX_SEALED_SIZE,
    SEALED_TEXT_PREFIX,
    check_name,
    is_sealed,
    kind_of,
    sealed_text,
)
from .base import (
    IncorrectIdentity,
    ProtectionMethod,
    SealedShare,
    SealedShareInfo,
    ShareOpener,
    ShareSealer,
    WrongPassphrase,
    sealed_share_info,
)
from .hpke import (
    MAX_KEY_FILE_SIZE,
    Identity,
    IdentityOpener,
    Recipient,
    RecipientSealer,
    Suite,
    read_key_file,
    seal_share,
)
from .passphrase import (
    Argon2Params,
    ConfirmKdf,
    PassphraseOpener,
    PassphraseSealer,
    seal_share_with_passphrase,
)

__all__ = [
    "MAX_KEY_FILE_SIZE",
    "MAX_SHARE_FILE_SIZE",
    "SEALED_TEXT_PREFIX",
    "Argon2Params",
    "ConfirmKdf",
    "Identity",
    "IdentityOpener",
    "IncorrectIdentity",
    "PassphraseOpener",
    "PassphraseSealer",
    "ProtectionMethod",
    "Recipient",
    "RecipientSealer",
    "SealedShare",
    "SealedShareInfo",
    "ShareOpener",
    "ShareSealer",
    "Suite",
    "WrongPassphrase",
    "check_custodian_name",
    "is_sealed",
    "kind_of",
    "load_share",
    "open_share",
    "read_key_file",
    "read_share_file",
    "seal",
    "seal_share",
    "seal_share_with_passphrase",
    "sealed_share_info",
    "sealed_text",
]

for _mod in pkgutil.iter_modules(__path__):
    if not _mod.name.startswith("_") and _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

seal = base.seal

MAX_SHARE_FILE_SIZE = 1 << 16
"""Largest share file read or parsed (the largest real one, sealed ML-KEM, is ~1.3 KiB)."""


def check_custodian_name(name: str) -> str:
    """Validate a custodian name (shared by keyrings, so every keyring name can be sealed to).

    Names appear in file names, terminals and HPKE ``info``; keeping them to a small
    printable alphabet avoids path tricks and confusable output.
    """
    return check_name(name)


def open_share(
    data: bytes,
    *,
    identity: Identity | None = None,
    passphrase: bytes | None = None,
    openers: Sequence[ShareOpener] = (),
    confirm_kdf: ConfirmKdf | None = None,
) -> Share:
    """Open a sealed share with the custodian's identity or passphrase, and verify it.

    ``openers`` adds openers of any registered type; ``confirm_kdf`` is asked before an
    Argon2id derivation heavier than :attr:`Argon2Params.CONFIRM_ABOVE_KIB` (without it,
    such a share is refused with a CustodianError).
    """
    if identity is not None and not isinstance(identity, Identity):
        raise TypeError("identity must be an Identity")
    tried: list[ShareOpener] = list(openers)
    if identity is not None:
        tried.append(IdentityOpener(identity))
    if passphrase is not None:
        tried.append(PassphraseOpener(passphrase, confirm=confirm_kdf))
    return base.open_sealed(data, tried)


def _check_size(n: int, what: str) -> None:
    if n > MAX_SHARE_FILE_SIZE:
        raise FormatError(
            f"{what} is too large for a share ({n} bytes, at most {MAX_SHARE_FILE_SIZE})"
        )


def read_share_file(path: str | os.PathLike[str]) -> bytes:
    """Read a share file, refusing by size *before* reading (a FormatError)."""
    return read_bounded(path, MAX_SHARE_FILE_SIZE, os.fspath(path), kind="a share")


def load_share(
    data: bytes,
    *,
    identity: Identity | None = None,
    passphrase: bytes | None = None,
    confirm_kdf: ConfirmKdf | None = None,
) -> Share:
    """Load a share file of any kind: sealed, binary, or text (``#`` lines ignored)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("data must be bytes")
    _check_size(len(data), "input")
    data = bytes(data)
    if is_sealed(data):
        return open_share(data, identity=identity, passphrase=passphrase, confirm_kdf=confirm_kdf)
    if data.startswith(b"KSSH"):
        return Share.from_bytes(data)
    kind = kind_of(data)
    if kind is not None and not kind.endswith("share"):
        raise FormatError(f"not a keysplit share: {kind}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("not a keysplit share (neither text nor a known binary form)") from None
    # ASCII line breaks only: str.splitlines also breaks at U+2028, U+0085..., which would
    # drop a look-alike from the share text before Share.parse could refuse it.
    lines = [ln for ln in re.split(r"\r\n|\r|\n", text) if not ln.lstrip().startswith("#")]
    return Share.parse("\n".join(lines))


del MAX_SEALED_SIZE
