"""Proof of possession: a custodian shows they opened their new share, without revealing it.

Why: a new share generation (``init``/``rekey``) that switches as soon as it is written
can leave a custodian with a share file they cannot open (wrong identity, lost passphrase,
a file that never arrived), and nobody learns it until the day a quorum is needed. Vault
asks for only a threshold of the new keys; keysplit can ask every custodian to prove
possession before the old shares die.

The code: ``HMAC-SHA256(key = share payload, "keysplit proof of possession v1" || set id ||
version, threshold, count, index)``, truncated to 40 bits and printed as 8 characters of the
bech32 alphabet in two groups (``k7m2-qx9d``). It is bound to the share set and the index
(a code for another share or generation does not match), and it is a PRF output under the
secret share: it reveals nothing usable about the share, and codes of k shares do not
combine into anything. 40 bits are enough against online guessing (a wrong code is
counted and reported), and a code is typed once.

:class:`PendingVerification` is the library state machine for ``--verify``: created with
the new shares when a generation is written, it keeps, per custodian, an Argon2id
*verifier* of the expected code (not the code: whoever reads the state file cannot prove
in a custodian's place without ~2^40 Argon2id evaluations), records who has proven, and
completes when everyone has, or explicitly when the caller names exactly who is missing.
The JSON file is written atomically (0600); the caller holds the keyring's writer lock
and writes the audit entries (the file itself carries no MAC: nothing that could key one
is available between ceremonies).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from . import _json
from ._bech32 import CHARSET
from ._fileio import atomic_write, read_bounded
from .errors import CustodianError, FormatError, KeyringError
from .share import Share

__all__ = [
    "CODE_BITS",
    "INIT_VERIFY_FILE",
    "PendingVerification",
    "ProofError",
    "Verification",
    "VerificationPending",
    "VerifyIncomplete",
    "VerifyStatus",
    "check",
    "normalize_code",
    "prove",
    "verify_path",
]

INIT_VERIFY_FILE = "keyring.ksk.verify.json"
"""Verification state of a keyring made with ``init --verify`` (beside ``keyring.ksk``); the
state of a ``rekey --verify`` is :func:`verify_path` of the pending file."""

CODE_BITS = 40
_CODE_CHARS = CODE_BITS // 5
_DOMAIN = b"keysplit proof of possession v1\x00"
_FORMAT = "keysplit-verify-v1"
_MAX_FILE = 1 << 20
_SALT_LEN = 16
_KDF_DEFAULT = {"t": 2, "m": 19 * 1024, "p": 1}  # OWASP minimum; ~0.1 s each on a loaded 2-core box
_KDF_MAX = {"t": 16, "m": 256 * 1024, "p": 8}
_IGNORED = re.compile(r"[\s\-]+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
_HEX16 = re.compile(r"[0-9a-f]{16}")


class ProofError(CustodianError):
    """A proof of possession was refused (wrong code, unknown custodian, finished state)."""


class VerifyIncomplete(ProofError):
    """Completion was asked for while custodians are missing and were not named."""

    def __init__(self, message: str, *, missing: Sequence[str], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.missing = tuple(missing)


class VerificationPending(VerifyIncomplete, KeyringError):
    """An unseal was refused: its share generation (``init --verify`` or ``rekey --verify``)
    still waits for proofs of possession. Raised by :class:`keysplit.Unsealer`, so every
    path from shares to an unsealed keyring (CLI, library, key service) obeys it."""


def prove(share: Share) -> str:
    """The proof-of-possession code of ``share``: 8 characters, ``xxxx-xxxx``."""
    if not isinstance(share, Share):
        raise TypeError("share must be a Share")
    params = bytes([share.version, share.threshold, share.count, share.index])
    mac = hmac.new(share.payload, _DOMAIN + share.set_id + params, hashlib.sha256).digest()
    value = int.from_bytes(mac[:5], "big")
    chars = "".join(CHARSET[(value >> (5 * (_CODE_CHARS - 1 - i))) & 31] for i in range(8))
    return f"{chars[:4]}-{chars[4:]}"


def normalize_code(code: str) -> str:
    """Canonical form of a typed code (case, blanks and ``-`` ignored); FormatError if malformed.

    A code is ASCII: any other character is refused (by its position, not echoed: the
    code proves possession of a share) before the Unicode-aware steps (``\\s``, ``lower``)
    could read a look-alike as the real thing (a no-break or ideographic space as a
    separator, the Kelvin sign as ``k``), as :meth:`Share.parse` does."""
    if not isinstance(code, str):
        raise TypeError("code must be a str")
    if not code.isascii():
        at = next(i for i, c in enumerate(code) if not c.isascii())
        raise FormatError(
            f"a proof code has a character that is not ASCII at position {at + 1} "
            "(counting separators)",
            hint="codes are ASCII letters, digits and dashes; retype that character "
            "(full-width, other-script or look-alike characters are not read)",
        )
    s = _IGNORED.sub("", code).lower()
    if len(s) != _CODE_CHARS or any(c not in CHARSET for c in s):
        raise FormatError(
            f"a proof code is {_CODE_CHARS} characters like 'k7m2-qx9d'",
            hint="codes use 0 2-9 and a-z without b, i, o; check 0/o, 1/l/i, 8/b",
        )
    return f"{s[:4]}-{s[4:]}"


def check(share: Share, code: str) -> bool:
    """True if ``code`` is the proof of possession of ``share`` (constant-time compare)."""
    return hmac.compare_digest(prove(share).encode(), normalize_code(code).encode())


def verify_path(pending_file: str | os.PathLike[str]) -> Path:
    """Where the verification state of a pending generation lives: next to its pending file."""
    p = Path(pending_file)
    return p.with_name(p.name + ".verify.json")


def _now(now: datetime | None) -> str:
    return (now or datetime.now(UTC)).isoformat(timespec="seconds")


def _verifier(kdf: dict[str, int], salt: bytes, code: str) -> str:
    return (
        Argon2id(salt=salt, length=32, iterations=kdf["t"], lanes=kdf["p"], memory_cost=kdf["m"])
        .derive(normalize_code(code).encode())
        .hex()
    )


@dataclass(frozen=True)
class VerifyStatus:
    """Who has proven possession of their new share (public data only)."""

    set_id_hex: str
    threshold: int
    count: int
    proven: tuple[str, ...]
    missing: tuple[str, ...]
    failures: dict[str, int]
    completed: bool
    completed_unproven: tuple[str, ...]

    @property
    def all_proven(self) -> bool:
        return not self.missing

    def to_json(self) -> dict[str, Any]:
        """For ``--json`` output and audit entries."""
        return {
            "set_id": self.set_id_hex,
            "threshold": self.threshold,
            "count": self.count,
            "proven": list(self.proven),
            "missing": list(self.missing),
            "failures": dict(self.failures),
            "completed": self.completed,
            "completed_unproven": list(self.completed_unproven),
        }


@dataclass(frozen=True)
class Verification:
    """A share generation waiting for proofs of possession: ``kind`` is ``init`` (the new
    keyring serves no ceremony and no encrypt until done) or ``rekey`` (the switch waits;
    the current shares keep working). Found by :meth:`keysplit.keyring.KeyringHome.verification`."""

    kind: str
    generation: int
    state: PendingVerification

    @property
    def status(self) -> VerifyStatus:
        return self.state.status()

    def refusal(self) -> VerificationPending:
        """The error an unseal of this generation gets while custodians are missing."""
        st = self.status
        return VerificationPending(
            f"generation {self.generation} awaits proofs of possession from: "
            + ", ".join(st.missing),
            missing=st.missing,
            hint="each runs 'keysplit share prove FILE' and the code is recorded with "
            "'keysplit verify prove DIR NAME'; or: keysplit verify complete DIR --missing NAME",
        )


class PendingVerification:
    """Proofs of possession for one pending share generation, persisted in a JSON file.

    Life cycle: :meth:`create` (with the new shares, while they are in memory) ->
    :meth:`submit` per custodian -> :meth:`complete` (all proven, or the missing named
    explicitly) -> the caller switches generations, audits, and :meth:`discard`\\ s the file.
    Every change is written atomically before the method returns.
    """

    def __init__(self, path: Path, doc: dict[str, Any]) -> None:
        self.path = path
        self._doc = doc

    # -- creation and loading -----------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        shares: Sequence[tuple[str, Share]],
        *,
        keyring_id: str | None = None,
        kdf: dict[str, int] | None = None,
        now: datetime | None = None,
    ) -> PendingVerification:
        """Start verification of a generation: ``shares`` pairs each custodian with its share.

        Refuses to replace an existing state file (FileExistsError): one generation, one file.
        """
        entries = []
        if not shares:
            raise ValueError("no shares to verify")
        ref = shares[0][1]
        names = set()
        for name, share in shares:
            if not isinstance(share, Share):
                raise TypeError("shares are (custodian name, Share) pairs")
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise ValueError(f"invalid custodian name {name!r}")
            if name in names:
                raise ValueError(f"custodian {name!r} given twice")
            names.add(name)
            if (share.set_id, share.threshold, share.count) != (
                ref.set_id,
                ref.threshold,
                ref.count,
            ):
                raise ValueError("all shares must belong to one share set")
        if len({s.index for _, s in shares}) != len(shares):
            raise ValueError("two shares have the same index")
        params = dict(_KDF_DEFAULT if kdf is None else kdf)
        _check_kdf(params)
        for name, share in shares:
            salt = os.urandom(_SALT_LEN)
            entries.append(
                {
                    "name": name,
                    "index": share.index,
                    "salt": salt.hex(),
                    "verifier": _verifier(params, salt, prove(share)),
                    "proven": None,
                    "failures": 0,
                }
            )
        doc = {
            "format": _FORMAT,
            "keyring_id": keyring_id,
            "set_id": ref.set_id.hex(),
            "threshold": ref.threshold,
            "count": ref.count,
            "created": _now(now),
            "kdf": params,
            "custodians": entries,
            "completed": None,
        }
        state = cls(Path(path), doc)
        state._write(overwrite=False)
        return state

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PendingVerification:
        """Read and strictly validate a state file (bounded JSON; FormatError if bad)."""
        p = Path(path)
        what = f"verification state {p.name}"
        data = read_bounded(p, _MAX_FILE, what, regular=True)
        doc = _json.loads(data, what=what, max_bytes=_MAX_FILE)
        _validate(doc, p.name)
        return cls(p, doc)

    # -- queries ------------------------------------------------------------------------

    @property
    def set_id(self) -> bytes:
        return bytes.fromhex(self._doc["set_id"])

    @property
    def keyring_id(self) -> str | None:
        v = self._doc["keyring_id"]
        return v if isinstance(v, str) else None

    @property
    def custodians(self) -> list[str]:
        return [e["name"] for e in self._doc["custodians"]]

    def status(self) -> VerifyStatus:
        es = self._doc["custodians"]
        done = self._doc["completed"]
        return VerifyStatus(
            set_id_hex=self._doc["set_id"],
            threshold=self._doc["threshold"],
            count=self._doc["count"],
            proven=tuple(e["name"] for e in es if e["proven"] is not None),
            missing=tuple(e["name"] for e in es if e["proven"] is None),
            failures={e["name"]: e["failures"] for e in es if e["failures"]},
            completed=done is not None,
            completed_unproven=tuple(done["unproven"]) if done else (),
        )

    # -- transitions --------------------------------------------------------------------

    def _entry(self, custodian: str) -> dict[str, Any]:
        for e in self._doc["custodians"]:
            if e["name"] == custodian:
                return e  # type: ignore[no-any-return]
        raise ProofError(
            f"custodian {custodian!r} has no share in this generation",
            hint="custodians: " + ", ".join(self.custodians),
        )

    def _open(self) -> None:
        if self._doc["completed"] is not None:
            raise ProofError("verification of this generation is already complete")

    def submit(self, custodian: str, code: str, *, now: datetime | None = None) -> VerifyStatus:
        """Record ``custodian``'s proof; ProofError (and a counted failure) if it is wrong.

        Proving again with the right code is harmless (the first time is kept).
        """
        self._open()
        entry = self._entry(custodian)
        code = normalize_code(code)
        got = _verifier(self._doc["kdf"], bytes.fromhex(entry["salt"]), code)
        if not hmac.compare_digest(got, entry["verifier"]):
            entry["failures"] += 1
            self._write()
            raise ProofError(
                f"the code does not match the new share of custodian {custodian!r} "
                f"(share {entry['index']}, set {self._doc['set_id']})",
                hint="check the code for typos, and that it was made from the new share file",
            )
        if entry["proven"] is None:
            entry["proven"] = _now(now)
            self._write()
        return self.status()

    def complete(
        self, *, unproven: Iterable[str] = (), now: datetime | None = None
    ) -> VerifyStatus:
        """Finish: allowed when everyone has proven, or when ``unproven`` names exactly the
        custodians still missing (a deliberate decision, recorded in the file and status).

        Raises :class:`VerifyIncomplete` listing who is missing otherwise.
        """
        self._open()
        named = self.check_unproven(unproven)
        self._doc["completed"] = {"at": _now(now), "unproven": sorted(set(named))}
        self._write()
        return self.status()

    def check_unproven(self, unproven: Iterable[str]) -> list[str]:
        """The names, if they are exactly the custodians still missing (what :meth:`complete`
        requires; asked before a quorum too): else :class:`ProofError` for a name that is
        no custodian's or has proven, :class:`VerifyIncomplete` listing who is left."""
        named = list(unproven)
        for name in named:
            if self._entry(name)["proven"] is not None:
                raise ProofError(f"custodian {name!r} has proven possession; do not name them")
        missing = self.status().missing
        if set(named) != set(missing):
            left = [m for m in missing if m not in named]
            raise VerifyIncomplete(
                "not every custodian has proven possession of the new share: missing "
                + ", ".join(left),
                missing=left,
                hint="wait for their codes, or complete anyway naming each missing custodian",
            )
        return named

    def discard(self) -> None:
        """Remove the state file (after the generation switched or was aborted)."""
        self.path.unlink(missing_ok=True)

    def _write(self, *, overwrite: bool = True) -> None:
        data = json.dumps(self._doc, indent=1, sort_keys=True).encode() + b"\n"
        atomic_write(self.path, data, overwrite=overwrite)


def _check_kdf(kdf: Any) -> None:
    if not isinstance(kdf, dict) or set(kdf) != set(_KDF_MAX):
        raise FormatError("verification state: kdf must have t, m, p")
    for k in ("t", "p", "m"):  # p before m: m's lower bound is 8 * p (Argon2)
        v = kdf[k]
        lo = 8 * kdf["p"] if k == "m" else 1
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= _KDF_MAX[k]:
            raise FormatError(f"verification state: kdf {k} out of range")


def _validate(doc: Any, name: str) -> None:
    def bad(why: str) -> FormatError:
        return FormatError(f"verification state {name}: {why}")

    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        raise bad(f"not a {_FORMAT} file")
    keys = {"format", "keyring_id", "set_id", "threshold", "count", "created", "kdf"}
    if set(doc) != keys | {"custodians", "completed"}:
        raise bad("unexpected or missing fields")
    if not isinstance(doc["set_id"], str) or not _HEX16.fullmatch(doc["set_id"]):
        raise bad("bad set id")
    if doc["keyring_id"] is not None and not isinstance(doc["keyring_id"], str):
        raise bad("bad keyring id")
    t, n = doc["threshold"], doc["count"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (t, n)) or not (
        2 <= t <= n <= 255
    ):
        raise bad("bad threshold/count")
    _check_kdf(doc["kdf"])
    es = doc["custodians"]
    if not isinstance(es, list) or not 1 <= len(es) <= n:
        raise bad("bad custodian list")
    seen: set[Any] = set()
    for e in es:
        if not isinstance(e, dict) or set(e) != {
            "name",
            "index",
            "salt",
            "verifier",
            "proven",
            "failures",
        }:
            raise bad("bad custodian entry")
        ok = (
            isinstance(e["name"], str)
            and _NAME.fullmatch(e["name"]) is not None
            and isinstance(e["index"], int)
            and 1 <= e["index"] <= n
            and isinstance(e["salt"], str)
            and re.fullmatch(r"[0-9a-f]{32}", e["salt"]) is not None
            and isinstance(e["verifier"], str)
            and re.fullmatch(r"[0-9a-f]{64}", e["verifier"]) is not None
            and (e["proven"] is None or isinstance(e["proven"], str))
            and isinstance(e["failures"], int)
            and e["failures"] >= 0
        )
        if not ok or e["name"] in seen or ("#", e["index"]) in seen:
            raise bad("bad or duplicate custodian entry")
        seen |= {e["name"], ("#", e["index"])}
    done = doc["completed"]
    if done is not None and not (
        isinstance(done, dict)
        and set(done) == {"at", "unproven"}
        and isinstance(done["unproven"], list)
        and all(isinstance(u, str) for u in done["unproven"])
    ):
        raise bad("bad completion record")
