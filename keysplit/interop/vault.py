"""HashiCorp Vault / OpenBao unseal (and recovery) keys: read, combine, re-split, convert.

Vault's ``shamir`` package shares each byte of the unseal key with its own random
polynomial over GF(2^8) with the AES polynomial 0x11B (the field keysplit uses), and a
share is ``y_1 .. y_L || x``: the L evaluations followed by one byte holding the
x-coordinate. ``vault operator init`` (and ``bao operator init``) print the shares in
base64 (``Unseal Key 1: ...``) and, with ``-format=json``, in base64 and hex.

So a Vault share *is* a raw GF(2^8) Shamir point, and combining it needs no Vault code:
the interpolation runs on keysplit's constant-time core
(:func:`keysplit.hazmat.shamir.combine_batch`, multiplications by public Lagrange
coefficients only), not on Vault's table lookups.

What keysplit can and cannot verify on import (Vault shares carry no check value, no
threshold, no set id):

* **can**: the encoding (base64 or hex, one length for all shares, 2..65 bytes), that no
  x-coordinate is 0 and none repeats (the same share twice, or two shares claiming one x),
  that at least the threshold is given when it is known (``vault operator init``'s text or
  JSON output states it; otherwise the caller must); and, **given more shares than the
  threshold**, that every extra share lies on the polynomial through the first
  ``threshold`` ones, byte by byte. One extra share always detects an error confined to
  one share (every Lagrange coefficient at a further x is non-zero); with two or more
  extra shares and a single wrong one, that share is named. Giving a threshold lower than
  the real one is caught the same way (the points do not fit a lower degree).
* **cannot**: with exactly ``threshold`` shares nothing at all: any k points with distinct
  x interpolate to *some* key, so a typo, a share of another Vault cluster, or a wrong
  threshold silently give a wrong key. base64/hex carry no checksum either (44 base64
  characters encode exactly 33 bytes, no spare bits). Even a consistent set only proves
  that the shares belong together, not that they are this Vault's: only unsealing Vault,
  or comparing :func:`keysplit.secret_fingerprint` with one recorded earlier, confirms
  the key itself.

Converting re-splits the recovered key in memory (see :mod:`keysplit.interop.convert`): the new
shares are independent of the old ones, and both sets work until the old one is destroyed.
New Vault shares use x = 1..count (Vault's own ``Combine`` accepts any distinct non-zero x).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .. import _json
from ..errors import (
    DuplicateShareError,
    FormatError,
    InsufficientSharesError,
    RecoveryError,
)
from ..hazmat.shamir import MAX_SHARES, combine_batch, evaluate, split_batch
from ..rng import RandomSource
from ..share import MAX_SECRET_LEN, Share, combine
from . import convert

__all__ = [
    "Encoding",
    "VaultKeys",
    "combine_vault",
    "encode_key",
    "format_vault",
    "keysplit_to_vault",
    "parse_vault",
    "slip39_to_vault",
    "split_vault",
    "vault_to_keysplit",
    "vault_to_slip39",
]

Encoding = Literal["base64", "hex"]

_MIN_LEN = 2
_MAX_LEN = MAX_SECRET_LEN + 1
# Vault decodes a key as hex only when the result has min..max bytes of BarrierKeyLength():
# the barrier's (16, 32), the x byte added to the max only (http/sys_seal.go, vault/core.go),
# so 16..33; anything else is read as base64. Short strings such as "AAAA" are valid in
# both, so keysplit applies the same rule to read what Vault reads.
_HEX_MIN_LEN, _HEX_MAX_LEN = 16, 33
_MAX_TEXT = 1 << 20
_HEX = re.compile(r"[0-9a-fA-F]+")
_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_KEY_LINE = re.compile(r"^\s*(Unseal|Recovery)\s+Key\s+(\d{1,3})\s*:\s*(\S+)\s*$", re.IGNORECASE)
_THRESHOLD = re.compile(
    r"initialized\s+with\s+(\d{1,3})\s+(?:key|recovery key)\s+shares?\s+and\s+a\s+"
    r"(?:key|recovery key)\s+threshold\s+of\s+(\d{1,3})",
    re.IGNORECASE,
)
_SKIP_LINE = re.compile(r"^\s*#")


@dataclass(frozen=True, repr=False)
class VaultKeys:
    """Vault shares as read from text: raw ``y || x`` bytes, and what the text said.

    ``threshold``/``count`` are what ``vault operator init`` printed (None when the input
    did not say). ``keys`` is secret material: ``repr`` shows only the x-coordinates.
    """

    keys: tuple[bytes, ...]
    threshold: int | None = None
    count: int | None = None
    kind: Literal["unseal", "recovery"] = "unseal"

    @property
    def xs(self) -> list[int]:
        """The shares' x-coordinates (public)."""
        return [k[-1] for k in self.keys]

    def __repr__(self) -> str:
        return (
            f"VaultKeys({self.kind}, x={self.xs}, threshold={self.threshold}, "
            f"count={self.count}, keys=<redacted>)"
        )


def _as_hex(token: str) -> bytes | None:
    """The key Vault's unseal reads from ``token`` as hex (it tries hex first), or None
    where it reads base64: not hex digits, or not 16..33 bytes."""
    if len(token) % 2 == 0 and _HEX.fullmatch(token):
        raw = bytes.fromhex(token)
        if _HEX_MIN_LEN <= len(raw) <= _HEX_MAX_LEN:
            return raw
    return None


def _decode_key(token: str, where: str) -> bytes:
    """One share, hex or base64 (Vault's unseal accepts both; hex is tried first, as it does)."""
    raw = _as_hex(token)
    if raw is None and _B64.fullmatch(token) and len(token) % 4 == 0:
        try:
            raw = base64.b64decode(token, validate=True)
        except binascii.Error:
            raw = None
    if raw is None:
        raise FormatError(f"{where}: not a Vault key (expected base64 or hex)")
    if not _MIN_LEN <= len(raw) <= _MAX_LEN:
        raise FormatError(
            f"{where}: a Vault key of {len(raw)} bytes; expected {_MIN_LEN}..{_MAX_LEN} "
            "(PGP-encrypted keys must be decrypted first)"
        )
    return raw


def _int_field(doc: dict[str, Any], name: str) -> int | None:
    v = doc.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_SHARES:
        raise FormatError(f"Vault JSON: {name} must be an integer in 1..{MAX_SHARES}")
    return v


def _parse_json(text: str) -> VaultKeys:
    doc = _json.loads(text, what="Vault init JSON", max_bytes=_MAX_TEXT)
    if not isinstance(doc, dict):
        raise FormatError("Vault JSON: expected an object (vault operator init -format=json)")
    for kind, prefix in (("unseal", "unseal"), ("recovery", "recovery")):
        lists = {}
        for enc in ("b64", "hex"):
            v = doc.get(f"{prefix}_keys_{enc}")
            if v is None:
                continue
            if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
                raise FormatError(f"Vault JSON: {prefix}_keys_{enc} must be a list of strings")
            lists[enc] = [
                _decode_key(s.strip(), f"{prefix}_keys_{enc}[{i}]") for i, s in enumerate(v)
            ]
        if not any(lists.values()):
            continue
        if len(lists) == 2 and lists["b64"] and lists["hex"]:
            a, b = lists["b64"], lists["hex"]
            if len(a) != len(b) or not hmac.compare_digest(b"".join(a), b"".join(b)):
                raise FormatError(
                    f"Vault JSON: {prefix}_keys_b64 and {prefix}_keys_hex disagree (edited?)"
                )
        keys = lists.get("b64") or lists["hex"]
        return VaultKeys(
            tuple(keys),
            _int_field(doc, f"{prefix}_threshold"),
            _int_field(doc, f"{prefix}_shares"),
            kind,  # type: ignore[arg-type]
        )
    raise FormatError("Vault JSON holds no unseal_keys_b64/_hex or recovery_keys_b64/_hex")


def _ascii(text: str, where: str) -> None:
    """Vault writes ASCII: a look-alike (a full-width digit, which ``\\d`` and ``int()``
    read as the digit) in a line that is used is refused by name, never read."""
    if not text.isascii():
        c = next(c for c in text if not c.isascii())
        raise FormatError(f"{where}: a character that is not ASCII, {c!r} (U+{ord(c):04X})")


def parse_vault(text: str) -> VaultKeys:
    """Read Vault shares from ``vault operator init`` output (text or ``-format=json``),
    or from plain lines holding one base64/hex key each (``#`` comments ignored).

    The root token in init output is skipped and never kept. Every problem names its line.
    """
    if not isinstance(text, str):
        raise TypeError("text must be a str")
    if len(text) > _MAX_TEXT:
        raise FormatError("Vault key input is too large")
    if text.lstrip()[:1] in ("{", "["):
        return _parse_json(text)
    keys: list[bytes] = []
    kinds: set[str] = set()
    threshold = count = None
    m = _THRESHOLD.search(" ".join(text.split()))
    if m:
        _ascii(m.group(0), "the threshold sentence")  # \d and int() read other digits
        count, threshold = int(m.group(1)), int(m.group(2))
        if not 1 <= threshold <= count <= MAX_SHARES:
            raise FormatError(f"Vault output states an impossible {threshold}-of-{count} split")
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        km = _KEY_LINE.match(line)
        if km:
            _ascii(line, f"line {lineno}")
            kinds.add(km.group(1).lower())
            keys.append(_decode_key(km.group(3), f"line {lineno}"))
        elif _SKIP_LINE.match(line) or ":" in line or len(line.split()) > 1:
            continue  # prose, the root token line, or other labelled output
        else:
            keys.append(_decode_key(line.strip(), f"line {lineno}"))
    if not keys:
        raise FormatError("no Vault keys found (expected 'Unseal Key N: ...' or one key a line)")
    if len(kinds) > 1:
        raise FormatError("input mixes unseal keys and recovery keys")
    kind = "recovery" if kinds == {"recovery"} else "unseal"
    return VaultKeys(tuple(keys), threshold, count, kind)  # type: ignore[arg-type]


def _points(keys: Sequence[bytes]) -> tuple[list[int], np.ndarray]:
    """Validate raw shares (lengths, x) and split them into public xs and secret ys."""
    if isinstance(keys, (bytes, str)):
        raise TypeError("keys must be a sequence of bytes")
    if len(keys) == 0:
        raise InsufficientSharesError("no Vault keys given")
    if len(keys) > MAX_SHARES:
        raise FormatError(f"{len(keys)} keys given; no Vault split has more than {MAX_SHARES}")
    length = None
    seen: dict[int, int] = {}
    for n, key in enumerate(keys, start=1):
        if not isinstance(key, (bytes, bytearray)):
            raise TypeError("Vault keys are bytes")
        if not _MIN_LEN <= len(key) <= _MAX_LEN:
            raise FormatError(f"key {n}: {len(key)} bytes, expected {_MIN_LEN}..{_MAX_LEN}")
        if length is None:
            length = len(key)
        elif len(key) != length:
            raise FormatError(
                f"key {n} is {len(key)} bytes but key 1 is {length}: keys of different splits",
                hint="all keys of one Vault have the same length",
            )
        x = key[-1]
        if x == 0:
            raise FormatError(f"key {n}: x-coordinate 0 (not a Vault share)")
        if x in seen:
            first = keys[seen[x] - 1]
            same = hmac.compare_digest(bytes(first), bytes(key))
            msg = (
                f"key {n} is key {seen[x]} given twice"
                if same
                else f"keys {seen[x]} and {n} both claim x = {x} (one is mistyped or foreign)"
            )
            raise DuplicateShareError(msg, index=n)
        seen[x] = n
    xs = [k[-1] for k in keys]
    ys = np.stack([np.frombuffer(bytes(k[:-1]), dtype=np.uint8) for k in keys])
    return xs, ys


def _value_at(xs: Sequence[int], ys: np.ndarray, at: int) -> bytes:
    """p(at) for the polynomial through (xs, ys), on the constant-time core.

    Over GF(2^8), p(at) = q(0) for q(z) = p(z + at), whose points sit at x ^ at.
    """
    return bytes(combine_batch([x ^ at for x in xs], ys[:, None, :])[0].tobytes())


def _all_fit(xs: Sequence[int], ys: np.ndarray, keys: Sequence[int], k: int) -> bool:
    """Whether the keys at positions ``keys`` lie on one polynomial of degree ``k - 1``:
    the others checked against that of the first ``k`` in one pass."""
    base, rest = list(keys[:k]), list(keys[k:])
    if not rest:
        return True
    values = evaluate([xs[i] for i in base], ys[base], [xs[j] for j in rest])
    return all(
        hmac.compare_digest(v.tobytes(), ys[j].tobytes()) for v, j in zip(values, rest, strict=True)
    )


def combine_vault(keys: Sequence[bytes] | VaultKeys, *, threshold: int | None = None) -> bytes:
    """Recover the key Vault split, checking every share beyond ``threshold``.

    ``threshold`` defaults to the one stated by :func:`parse_vault`'s input, else to the
    number of keys (then nothing can be checked; see the module docstring). Raises
    :class:`InsufficientSharesError` for too few keys and :class:`RecoveryError` when the
    keys do not lie on one polynomial (naming the wrong key when the others outvote it).
    """
    if isinstance(keys, VaultKeys):
        if threshold is None:
            threshold = keys.threshold
        keys = keys.keys
    if threshold is None and len(keys) < 2:
        raise InsufficientSharesError(f"need at least 2 Vault keys, got {len(keys)}")
    k = len(keys) if threshold is None else threshold
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError("threshold must be an int")
    if k == 1:
        raise FormatError(
            "a Vault initialized with a key threshold of 1 does not split its key: the one "
            "'unseal key' is the key itself, not a Shamir share",
            hint="re-initialize or rekey Vault with a threshold of 2 or more to split it",
        )
    if not 2 <= k <= MAX_SHARES:
        raise ValueError(f"threshold must be in 2..{MAX_SHARES}")
    xs, ys = _points(keys)
    if len(keys) < k:
        raise InsufficientSharesError(f"need {k} Vault keys, got {len(keys)}")
    if not _all_fit(xs, ys, range(len(keys)), k):
        raise _inconsistent(xs, ys, k)
    return _value_at(xs[:k], ys[:k], 0)


def _inconsistent(xs: list[int], ys: np.ndarray, k: int) -> RecoveryError:
    """The error for keys that do not fit one polynomial; names a key outvoted by the rest.

    A key without which the other keys, at least k + 1 of them, lie on one polynomial is
    named (it takes two extra keys: with k + 1 keys, either could be wrong). Each key is
    left out in turn, the others checked in one pass: m passes, where trying the k-subsets
    one by one (up to 2000, each checked against every key) could miss it and took
    seconds. At most one key can be it (two such polynomials would share k keys).
    """
    m = len(xs)
    for j in range(m) if m - 1 >= k + 1 else ():
        if _all_fit(xs, ys, [i for i in range(m) if i != j], k):
            return RecoveryError(
                f"Vault key {j + 1} (x = {xs[j]}) does not lie on the polynomial "
                f"of the other {m - 1} keys: it is mistyped or from another split",
                index=j + 1,
                hint=f"leave out key {j + 1}",
            )
    return RecoveryError(
        f"the {m} Vault keys do not lie on one polynomial of degree {k - 1}: at least one "
        "is mistyped or from another split, or the threshold is higher than "
        f"{k}",
        hint="add another key of this Vault to find out which one"
        if m == k + 1
        else "check each key against its original",
    )


def split_vault(
    secret: bytes, threshold: int, count: int, *, rng: RandomSource | None = None
) -> list[bytes]:
    """Split ``secret`` into ``count`` Vault-format shares ``y || x`` (x = 1..count).

    Uses keysplit's batch core (uniformly random coefficients, constant-time evaluation);
    Vault's ``Combine`` and ``vault operator unseal`` accept the result.
    """
    if not isinstance(secret, (bytes, bytearray)):
        raise TypeError("secret must be bytes")
    if not 1 <= len(secret) <= MAX_SECRET_LEN:
        raise ValueError(f"secret must be 1..{MAX_SECRET_LEN} bytes")
    rows = split_batch(
        np.frombuffer(bytes(secret), dtype=np.uint8).reshape(1, -1), threshold, count, rng=rng
    )
    return [rows[j, 0].tobytes() + bytes([j + 1]) for j in range(count)]


def format_vault(
    keys: Sequence[bytes], *, encoding: Encoding = "base64", kind: str = "Unseal"
) -> str:
    """``Unseal Key N: <key>`` lines as ``vault operator init`` prints them (reads back with
    :func:`parse_vault`); paste the part after the colon into ``vault operator unseal``."""
    if encoding not in ("base64", "hex"):
        raise ValueError("encoding must be 'base64' or 'hex'")
    return "".join(
        f"{kind} Key {n}: {encode_key(k, encoding)}\n" for n, k in enumerate(keys, start=1)
    )


def encode_key(key: bytes, encoding: Encoding = "base64") -> str:
    """One share as ``vault operator unseal`` takes it.

    Hex only for keys Vault reads as hex (16..33 bytes); others would be read as base64.
    Base64 only where Vault reads it as base64: a base64 text made of hex digits alone
    (``AAAA...`` for a key of zeros) whose hex would be 16..33 bytes is read as hex, by
    Vault's unseal as by :func:`parse_vault` (random keys: about one in 10^20).
    """
    if encoding == "base64":
        text = base64.b64encode(key).decode()
        if _as_hex(text) is not None:
            raise ValueError(
                "Vault would read this key's base64 as hex (it holds only hex digits)"
                + ("; use hex" if _HEX_MIN_LEN <= len(key) <= _HEX_MAX_LEN else "")
            )
        return text
    if not _HEX_MIN_LEN <= len(key) <= _HEX_MAX_LEN:
        raise ValueError(
            f"Vault reads hex keys of {_HEX_MIN_LEN}..{_HEX_MAX_LEN} bytes only; use base64"
        )
    return bytes(key).hex()


# -- conversions (combine with every check, re-split in memory) ----------------------------


def vault_to_keysplit(
    keys: Sequence[bytes] | VaultKeys,
    threshold: int,
    count: int,
    *,
    source_threshold: int | None = None,
    set_id: bytes | None = None,
    rng: RandomSource | None = None,
) -> list[Share]:
    """Combine Vault keys (see :func:`combine_vault` for what is checked) and re-split the
    key as keysplit shares, which carry the recovery check Vault's lack."""
    secret = combine_vault(keys, threshold=source_threshold)
    return convert.split_with_set_id(secret, threshold, count, set_id=set_id, rng=rng)


def vault_to_slip39(
    keys: Sequence[bytes] | VaultKeys,
    group_threshold: int,
    groups: Sequence[tuple[int, int]],
    *,
    source_threshold: int | None = None,
    passphrase: bytes = b"",
    iteration_exponent: int = 1,
    extendable: bool = True,
    rng: RandomSource | None = None,
) -> list[list[str]]:
    """Combine Vault keys and re-split the key as SLIP-39 mnemonics (via an in-memory
    keysplit 2-of-2, so :func:`keysplit.interop.convert.keysplit_to_slip39` does the
    SLIP-39 part)."""
    return convert.keysplit_to_slip39(
        vault_to_keysplit(keys, 2, 2, source_threshold=source_threshold),
        group_threshold,
        groups,
        passphrase=passphrase,
        iteration_exponent=iteration_exponent,
        extendable=extendable,
        rng=rng,
    )


def keysplit_to_vault(
    shares: Sequence[Share], threshold: int, count: int, *, rng: RandomSource | None = None
) -> list[bytes]:
    """Combine keysplit shares (fully verified) and re-split the secret in Vault's form."""
    return split_vault(combine(shares), threshold, count, rng=rng)


def slip39_to_vault(
    mnemonics: Sequence[str],
    threshold: int,
    count: int,
    *,
    passphrase: bytes = b"",
    rng: RandomSource | None = None,
) -> list[bytes]:
    """Combine SLIP-39 mnemonics (digest-checked; the passphrase is not checkable) and
    re-split the secret in Vault's form."""
    via = convert.slip39_to_keysplit(mnemonics, 2, 2, passphrase=passphrase)
    return keysplit_to_vault(via, threshold, count, rng=rng)
