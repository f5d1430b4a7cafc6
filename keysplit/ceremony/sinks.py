"""Where a ceremony's new shares go: custodians' protection, share files and sheets.

:class:`Custody` says how one custodian's share is protected (a public key, a passphrase,
or, for demos and tests only, nothing); a :class:`ShareSink` stores the sealed share files
(a directory today: :class:`DirectorySink`); :class:`SheetWriter` adds printable sheets.
:func:`hand_out` seals and writes a new share set and, on any failure, removes everything
it wrote: a partial share set is worse than none.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..audit.events import ShareRecord
from ..custody import Argon2Params, Recipient, seal_share, seal_share_with_passphrase
from ..errors import CustodianError, KeysplitError
from ..files import atomic_write
from ..share import Share

__all__ = [
    "Custody",
    "DirectorySink",
    "ShareFileExists",
    "ShareSink",
    "SheetWriter",
    "WrittenShare",
    "check_custody",
    "hand_out",
    "share_file_text",
]


@dataclass(frozen=True)
class Custody:
    """How one custodian's new share is protected: a public key, a passphrase, or (demos and
    tests only) nothing."""

    name: str
    recipient: Recipient | None = None
    passphrase: bytes | None = field(default=None, repr=False)

    @property
    def protection(self) -> str:
        if self.recipient is not None:
            return f"key {self.recipient.fingerprint}"
        return "passphrase" if self.passphrase is not None else "none (plain)"

    @property
    def plain(self) -> bool:
        return self.recipient is None and self.passphrase is None

    def seal(self, share: Share, *, kdf: Argon2Params | None = None) -> bytes:
        """The bytes of this custodian's share file."""
        if self.recipient is not None:
            return seal_share(share, self.recipient)
        if self.passphrase is not None:
            return seal_share_with_passphrase(share, self.name, self.passphrase, kdf=kdf)
        return share_file_text(share, self.name).encode()

    def __repr__(self) -> str:
        return f"Custody({self.name!r}, {self.protection})"


def check_custody(custody: Sequence[Custody]) -> None:
    """Refuse one public key, or one part of one, for two custodians (:class:`CustodianError`).

    A public key file names its custodian, but anyone can write one for any name (the key
    is public): a custodian whose key is also filed under another's name holds both shares,
    and a K-of-N split is then open to fewer than K people. The same holds for a part of a
    key (:attr:`Recipient.key_parts`): the X25519 half of one custodian's ML-KEM+X25519 key
    filed as another's x25519 key is opened by the first custodian's identity. Key pairs made
    honestly never share a part. Checked before anything is created. (Names are checked by
    the keyring: unique, ignoring case.)
    """
    hint = (
        "check where each public key file came from; compare the fingerprints with the custodians"
    )
    whole: dict[bytes, str] = {}
    parts: dict[tuple[str, bytes], str] = {}
    for c in custody:
        if c.recipient is None:
            continue
        other = whole.setdefault(c.recipient.public_bytes, c.name)
        if other != c.name:
            raise CustodianError(
                f"custodians {other!r} and {c.name!r} have the same public key "
                f"({c.recipient.fingerprint}): one person would hold both shares",
                hint=hint,
            )
        for part, key in c.recipient.key_parts:
            other = parts.setdefault((part, key), c.name)
            if other != c.name:
                raise CustodianError(
                    f"custodians {other!r} and {c.name!r} have keys with the same {part} "
                    f"part ({c.name}'s key {c.recipient.fingerprint}): one person may hold "
                    "both shares",
                    hint=hint,
                )


def share_file_text(share: Share, custodian: str | None = None) -> str:
    """A plain share file: two comment lines and the typable share text."""
    who = f" for custodian {custodian}" if custodian else ""
    return (
        f"# keysplit share {share.index} of {share.count}{who} "
        f"(any {share.threshold} recover the secret)\n"
        f"# set id {share.set_id_hex}\n"
        f"{share}\n"
    )


@dataclass(frozen=True)
class WrittenShare:
    """A new share as handed out: who, where (``location``), its fingerprint, protection."""

    custodian: str
    index: int
    location: str
    fingerprint: str
    protection: str

    def record(self) -> ShareRecord:
        return ShareRecord(self.custodian, self.index, self.fingerprint, self.protection)

    def as_dict(self) -> dict[str, str | int]:
        return {
            "custodian": self.custodian,
            "index": self.index,
            "file": self.location,
            "share": self.fingerprint,
            "protection": self.protection,
        }


class ShareFileExists(KeysplitError):
    """A new share would overwrite an existing share file (checked before any key exists);
    ``path``: that file, when the sink knows it."""

    path: Path | None = None


class ShareSink(Protocol):
    """Where a ceremony's new share files go (a directory today; a service channel later).

    ``reserve`` starts a ceremony: it runs before any key exists and must refuse (raise)
    rather than ever let a later ``write`` overwrite something. ``write`` stores one sealed
    share durably and returns where it went. ``discard`` removes everything this sink wrote
    in this ceremony and nothing else (the crash cleanup: a partial share set is worse than
    none; an earlier ceremony's shares are the keyring's current ones); it must not raise.
    """

    def reserve(self, custody: Sequence[Custody], generation: int) -> None: ...

    def write(self, custody: Custody, generation: int, data: bytes) -> str: ...

    def discard(self) -> None: ...


class DirectorySink:
    """Share files ``NAME.gGENERATION.kss`` in one directory, 0600.

    One name whatever the protection (sealed, or plain ``ks1`` text for demos and tests):
    readers detect the content, so a runbook's paths do not depend on how shares were
    protected."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._written: list[Path] = []

    def path(self, custody: Custody, generation: int) -> Path:
        return self.directory / f"{custody.name}.g{generation}.kss"

    def reserve(self, custody: Sequence[Custody], generation: int) -> None:
        self._written.clear()  # a new ceremony: the last one's files are kept, whatever happens
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        paths = [self.path(c, generation) for c in custody]
        for p in paths:
            if os.path.lexists(p):  # a link to nowhere is there too
                exc = ShareFileExists(f"refusing to overwrite existing share file: {p}")
                exc.path = p
                raise exc

    def write(self, custody: Custody, generation: int, data: bytes) -> str:
        path = self.path(custody, generation)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            atomic_write(path, data, overwrite=False)
        except BaseException:
            # Linked in, then a later step failed (the directory's fsync): the file is ours
            # to remove. A file that was already there (another ceremony's) never is.
            if _holds(path, data):
                self._written.append(path)
            raise
        self._written.append(path)
        return str(path)

    def discard(self) -> None:
        _discard(self._written)

    def __repr__(self) -> str:
        return f"DirectorySink({str(self.directory)!r})"


def _discard(written: list[Path]) -> None:
    """Remove what a sink wrote in this ceremony, and only that: a name it reserved may
    since hold another ceremony's share (two rekeys at once), all that unseals the keyring
    then; a file already gone is no error."""
    for p in written:
        with contextlib.suppress(OSError):
            p.unlink()
    written.clear()


def _holds(path: Path, data: bytes) -> bool:
    """Whether ``path`` holds exactly ``data`` (a sealed share: fresh randomness in each)."""
    try:
        return path.read_bytes() == data
    except OSError:
        return False


class SheetWriter:
    """Printable share sheets ``NAME.gGENERATION.pdf`` (:mod:`keysplit.sheet`), one per
    custodian, mode 0600. A sheet copies the exact bytes of its custodian's share file, in
    the same protection: a sealed share stays sealed on paper (and says which identity or
    passphrase opens it); only a plain share file gives a clear sheet."""

    def __init__(self, directory: str | Path, keyring_id: str | None = None) -> None:
        self.directory = Path(directory)
        self.keyring_id = keyring_id
        self._written: list[Path] = []

    def path(self, custodian: str, generation: int) -> Path:
        return self.directory / f"{custodian}.g{generation}.pdf"

    def reserve(self, custody: Sequence[Custody], generation: int) -> None:
        from ..sheet import _libs  # the optional 'sheets' extra: fail before any key exists

        _libs()
        self._written.clear()  # a new ceremony: the last one's sheets are kept
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for c in custody:
            if os.path.lexists(self.path(c.name, generation)):
                raise ShareFileExists(
                    f"refusing to overwrite existing sheet: {self.path(c.name, generation)}"
                )

    def write(self, custodian: str, generation: int, share_file: bytes, keyring_id: str) -> str:
        """Write the sheet of ``share_file`` (the bytes the custodian's share file holds)."""
        from ..sheet import sheet_for_file, write_pdf

        path = self.path(custodian, generation)
        write_pdf(path, [sheet_for_file(share_file, custodian, keyring_id)])
        self._written.append(path)
        return str(path)

    def discard(self) -> None:
        _discard(self._written)


def hand_out(
    shares: dict[str, Share],
    custody: Sequence[Custody],
    sink: ShareSink,
    generation: int,
    kdf: Argon2Params | None,
    sheets: tuple[SheetWriter, str] | None = None,
) -> list[WrittenShare]:
    """Seal each share for its custodian and write it (and its sheet); on any failure
    remove them all."""
    out = []
    try:
        for c in custody:
            share = shares[c.name]
            data = c.seal(share, kdf=kdf)
            location = sink.write(c, generation, data)
            if sheets is not None:
                sheets[0].write(c.name, generation, data, sheets[1])
            out.append(WrittenShare(c.name, share.index, location, share.fingerprint, c.protection))
    except BaseException:
        sink.discard()
        if sheets is not None:
            sheets[0].discard()
        raise
    return out
