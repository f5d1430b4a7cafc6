"""Shares as durable, verifiable objects: set id, parameters, checksums, recovery check.

A raw Shamir share (:mod:`keysplit.hazmat.shamir`) is an ``(x, bytes)`` pair: mistype it, mix it
with another split's shares or hand over too few, and interpolation silently returns a
wrong key (as pycryptodome, Vault and ssss do). A :class:`Share` adds what is needed to
catch every one of those cases and to say which share is at fault:

* a random 8-byte **set id**, the threshold, the share count and the index, so shares of
  different splits, duplicates and too few shares are refused before combining;
* a **checksum** on both encodings: SHA-256 (truncated to 4 bytes) on the binary form and
  a bech32m BCH code on the text form, which catches every single typo and every swap of
  two characters;
* a **recovery check**: the split shares ``secret || tag`` where
  ``tag = SHA-256("keysplit share check v1" || set id || params || secret)[:8]``. The tag
  is itself Shamir-shared, so k-1 shares learn nothing about the secret *or* the tag
  (a check value stored in the clear would let anyone test guesses of the secret), it
  works unchanged with the batch core, and :func:`combine` recomputes it: a forged share,
  or shares of another split that happens to reuse the set id, give a
  :class:`~keysplit.errors.RecoveryError`, never a wrong key (false accept 2^-64).

Formats are specified byte by byte in ``docs/format/shares.md``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import math
import re
import secrets
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from . import _bech32
from .errors import (
    ChecksumError,
    DuplicateShareError,
    FormatError,
    InsufficientSharesError,
    MixedSharesError,
    RecoveryError,
)
from .record import _octet_bytes
from .rng import RandomSource, default_rng

if TYPE_CHECKING:
    import numpy as np

# The Shamir core (keysplit.hazmat.shamir, gf256: numpy) is imported by the functions that
# split, check or combine, not with this module: keysplit.proof and the keyring import
# Share, and a command that reads no share (status, encrypt) needs no numpy.

__all__ = [
    "MAX_SECRET_LEN",
    "SHARE_VERSION",
    "Share",
    "combine",
    "secret_fingerprint",
    "split",
    "verify_set",
]

SHARE_VERSION = 1
MAGIC = b"KSSH"
TEXT_PREFIX = "ks1"
SET_ID_LEN = 8
TAG_LEN = 8
MAX_SECRET_LEN = 64
"""Longest secret a share carries (a 512-bit key); keeps the text form typable."""

_HRP = "ks"
_HEADER_LEN = 13  # version, set id, threshold, count, index, secret length
_CHECK_LEN = 4
_TAG_DOMAIN = b"keysplit share check v1\x00"
_FP_DOMAIN = b"keysplit secret fingerprint v1\x00"
_GROUP = 5
_SEARCH_WORK_LIMIT = 1 << 18
"""Bound on each of :func:`combine`'s two searches (:func:`_search`, :func:`_disagreement`),
in share-by-coefficient products (a pass over ``m`` shares with ``k`` coefficients each
costs ``m k``): either search tries every anchor of a split of up to 255 shares at
thresholds 2 and 3, in well under a second."""
_DIRECT_SEARCH_LIMIT = 2000
"""When there are at most this many sets of ``k`` shares, :func:`_search` tries each."""
_IGNORED = re.compile(r"[\s\-]+")


_MAX_SHARES = 255
"""Most shares of one split (GF(2^8) has 255 non-zero x): ``keysplit.hazmat.shamir.MAX_SHARES``."""


@cache
def _log_exp() -> tuple[np.ndarray, np.ndarray]:
    """GF(2^8)'s log and exp tables as arrays (for PUBLIC coordinates only)."""
    import numpy as np

    from .hazmat import gf256

    return np.array(gf256.LOG, dtype=np.int64), np.array(gf256.EXP, dtype=np.uint8)


def _sha4(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:_CHECK_LEN]


def _tag(set_id: bytes, threshold: int, count: int, secret: bytes) -> bytes:
    params = bytes([SHARE_VERSION, threshold, count, len(secret)])
    return hashlib.sha256(_TAG_DOMAIN + set_id + params + secret).digest()[:TAG_LEN]


@dataclass(frozen=True, repr=False)
class Share:
    """One custodian's share of a secret: ``threshold`` of ``count`` recover it.

    ``payload`` is the Shamir share (at ``x = index``) of ``secret || tag``; it is secret
    material and never shown by ``repr``. ``str(share)`` is the typable text form, e.g.
    ``ks1-qpzry-9x8gf-...``; :meth:`parse` reads it back byte-exactly.
    """

    version: int
    set_id: bytes
    threshold: int
    count: int
    index: int
    payload: bytes

    def __post_init__(self) -> None:
        for name in ("version", "threshold", "count", "index"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"Share.{name} must be an int")
        if not isinstance(self.set_id, bytes) or not isinstance(self.payload, bytes):
            raise TypeError("Share.set_id and Share.payload must be bytes")
        if self.version != SHARE_VERSION:
            raise ValueError(f"unsupported share version {self.version}")
        if len(self.set_id) != SET_ID_LEN:
            raise ValueError(f"set_id must be {SET_ID_LEN} bytes")
        if not 2 <= self.threshold <= self.count <= _MAX_SHARES:
            raise ValueError("need 2 <= threshold <= count <= 255")
        if not 1 <= self.index <= self.count:
            raise ValueError("index must be in 1..count")
        if not TAG_LEN + 1 <= len(self.payload) <= TAG_LEN + MAX_SECRET_LEN:
            raise ValueError(f"payload must be {TAG_LEN + 1}..{TAG_LEN + MAX_SECRET_LEN} bytes")

    # -- metadata ---------------------------------------------------------------------

    @property
    def secret_len(self) -> int:
        """Length in bytes of the secret this share belongs to."""
        return len(self.payload) - TAG_LEN

    @property
    def set_id_hex(self) -> str:
        """The share-set id in hex: the same for every share of one split."""
        return self.set_id.hex()

    @property
    def fingerprint(self) -> str:
        """Short, secret-free identifier for UIs: ``<set id hex>-<index>``."""
        return f"{self.set_id.hex()}-{self.index}"

    def __repr__(self) -> str:
        return (
            f"Share(set_id={self.set_id.hex()}, index={self.index}, "
            f"threshold={self.threshold}, count={self.count}, payload=<redacted>)"
        )

    # -- binary form ------------------------------------------------------------------

    def _body(self) -> bytes:
        return (
            bytes([self.version])
            + self.set_id
            + bytes([self.threshold, self.count, self.index, self.secret_len])
            + self.payload
        )

    def to_bytes(self) -> bytes:
        """Compact binary form: ``"KSSH" || body || SHA-256(body)[:4]``."""
        body = self._body()
        return MAGIC + body + _sha4(body)

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        """Parse :meth:`to_bytes` output strictly (magic, version, length, checksum)."""
        data = _octet_bytes(data, "data")
        if len(data) < len(MAGIC) + 1:
            if MAGIC.startswith(data[: len(MAGIC)]):
                raise FormatError("share is truncated")
            raise FormatError("not a keysplit share (bad magic)")
        if data[: len(MAGIC)] != MAGIC:
            raise FormatError("not a keysplit share (bad magic)")
        body_and_check = data[len(MAGIC) :]
        expected = _expected_body_len(body_and_check)
        if len(body_and_check) < expected + _CHECK_LEN:
            raise FormatError("share is truncated")
        if len(body_and_check) > expected + _CHECK_LEN:
            raise FormatError("share has trailing bytes")
        body = body_and_check[:expected]
        if not hmac.compare_digest(_sha4(body), body_and_check[expected:]):
            raise ChecksumError("share checksum mismatch (corrupted)")
        return _from_body(body)

    # -- text form --------------------------------------------------------------------

    def __str__(self) -> str:
        values = _bech32.to_5bit(self._body())
        chars = _bech32.encode_chars(values + _bech32.checksum(_HRP, values))
        groups = [chars[i : i + _GROUP] for i in range(0, len(chars), _GROUP)]
        return "-".join([TEXT_PREFIX, *groups])

    @classmethod
    def parse(cls, text: str) -> Share:
        """Parse the text form. Whitespace and ``-`` are ignored, case does not matter.

        The text form is ASCII: any other character is refused by name, before the
        Unicode-aware steps (``\\s``, ``lower``) could read a look-alike as the real
        thing (a no-break or ideographic space as a separator, the Kelvin sign as ``k``)."""
        if not isinstance(text, str):
            raise TypeError("text must be str")
        if not text.isascii():
            at = next(i for i, c in enumerate(text) if not c.isascii())
            raise FormatError(
                f"share text has a character that is not ASCII, {text[at]!r} "
                f"(U+{ord(text[at]):04X}), at position {at + 1} (counting separators)",
                hint="share text is ASCII letters, digits and dashes; retype that character "
                "(full-width, other-script or look-alike characters are not read)",
            )
        s = _IGNORED.sub("", text).lower()
        if not s.startswith(TEXT_PREFIX):
            raise FormatError(
                f"not a keysplit share (expected the prefix {TEXT_PREFIX!r})",
                hint="share text starts with ks1-",
            )
        chars = s[len(TEXT_PREFIX) :]
        values, bad = _bech32.decode_chars(chars)
        if values is None:
            raise ChecksumError(
                f"share has an invalid character {chars[bad]!r} at position "
                f"{bad + len(TEXT_PREFIX) + 1} (not counting separators)",
                hint="shares use 0 2-9 and a-z without b, i, o; check 0/o, 1/l/i, 8/b",
            )
        if len(values) > _bech32.MAX_DATA_CHARS + 6:
            raise FormatError("share text is too long")
        if len(values) < -(-_HEADER_LEN * 8 // 5) + 6:
            raise FormatError("share text is truncated")
        if not _bech32.verify(_HRP, values):
            raise _text_checksum_error(values)
        body = _bech32.from_5bit(values[:-6])
        if body is None:
            raise FormatError("share text has invalid padding")
        expected = _expected_body_len(body)
        if len(body) < expected:
            raise FormatError("share text is truncated")
        if len(body) > expected:
            raise FormatError("share text has trailing characters")
        return _from_body(body)


def _expected_body_len(body: bytes) -> int:
    """Total body length the header announces (raises for truncation/unknown version)."""
    if len(body) < 1:
        raise FormatError("share is truncated")
    if body[0] != SHARE_VERSION:
        raise FormatError(
            f"unsupported share version {body[0]} (this keysplit reads version {SHARE_VERSION})",
            hint="upgrade keysplit, or the share is corrupted",
        )
    if len(body) < _HEADER_LEN:
        raise FormatError("share is truncated")
    secret_len = body[_HEADER_LEN - 1]
    if not 1 <= secret_len <= MAX_SECRET_LEN:
        raise FormatError(f"share announces an invalid secret length {secret_len}")
    return _HEADER_LEN + secret_len + TAG_LEN


def _from_body(body: bytes) -> Share:
    set_id = body[1 : 1 + SET_ID_LEN]
    threshold, count, index = body[9], body[10], body[11]
    if not 2 <= threshold <= count:
        raise FormatError(f"share has invalid parameters (threshold {threshold}, count {count})")
    if not 1 <= index <= count:
        raise FormatError(f"share has an invalid index {index} (count {count})")
    return Share(SHARE_VERSION, set_id, threshold, count, index, body[_HEADER_LEN:])


def _text_checksum_error(values: list[int]) -> ChecksumError:
    """A checksum error that also says when the length does not match the header."""
    detail = ""
    n_head = -(-_HEADER_LEN * 8 // 5)
    if len(values) >= n_head:
        bits = "".join(f"{v:05b}" for v in values[:n_head])
        head = int(bits[: _HEADER_LEN * 8], 2).to_bytes(_HEADER_LEN, "big")
        try:
            expected = -(-_expected_body_len(head) * 8 // 5) + 6
        except FormatError:
            expected = len(values)
        if expected != len(values):
            detail = (
                f"; its header announces {expected} characters after ks1, found "
                f"{len(values)}: truncated, extra characters, or a typo in the header"
            )
    return ChecksumError(
        f"share checksum mismatch (a typo or corruption){detail}",
        hint="compare the share character by character with the original",
    )


# -- split / combine ----------------------------------------------------------------------


def split(
    secret: bytes, threshold: int, count: int, *, rng: RandomSource | None = None
) -> list[Share]:
    """Split ``secret`` (1..64 bytes) into ``count`` shares, any ``threshold`` recover it.

    ``rng`` is the randomness seam (set id, then polynomial coefficients); the default is
    the system CSPRNG. Only pass a deterministic source to produce test vectors.
    """
    secret = _octet_bytes(secret, "secret")
    if not 1 <= len(secret) <= MAX_SECRET_LEN:
        raise ValueError(f"secret must be 1..{MAX_SECRET_LEN} bytes")
    from .hazmat import shamir

    shamir._check_params(threshold, count)
    source = rng if rng is not None else default_rng()
    set_id = source.random_bytes(SET_ID_LEN)
    if len(set_id) != SET_ID_LEN:
        raise ValueError("rng returned the wrong number of bytes")
    payload = secret + _tag(set_id, threshold, count, secret)
    rows = shamir.split(payload, threshold, count, rng=rng)
    return [Share(SHARE_VERSION, set_id, threshold, count, x, y) for x, y in rows]


Namer = Callable[[Share], "str | None"]
"""Who holds a share, for messages only (e.g. the custodian its file names), or None."""


def _who(share: Share, custodian_of: Namer | None) -> str | None:
    return custodian_of(share) if custodian_of is not None else None


def _label(share: Share, custodian_of: Namer | None, *, more: str = "") -> str:
    """``share 2``, ``share 2 (ana)``; ``more`` goes inside the parentheses too."""
    inside = ", ".join(x for x in (_who(share, custodian_of), more) if x)
    return f"share {share.index}" + (f" ({inside})" if inside else "")


def _index(share: Share) -> int:
    return share.index


def _numbered(share: Share, custodian_of: Namer | None) -> str:
    """``2``, or ``2 (ana)`` where ``custodian_of`` knows who holds it."""
    who = _who(share, custodian_of)
    return f"{share.index}" + (f" ({who})" if who else "")


def _names(shares: Sequence[Share]) -> str:
    idx = sorted(s.index for s in shares)
    return ", ".join(str(i) for i in idx)


def verify_set(shares: Sequence[Share], *, custodian_of: Namer | None = None) -> None:
    """Check that ``shares`` can belong together, without combining them.

    Raises :class:`MixedSharesError` (different splits or parameters) or
    :class:`DuplicateShareError` (an index given twice), naming the share at fault, and its
    custodian where ``custodian_of`` (messages only: e.g. the name a share file carries)
    knows it. It cannot tell whether a well-formed share was forged: only :func:`combine`
    can.
    """
    if isinstance(shares, (Share, str, bytes)):
        raise TypeError("shares must be a sequence of Share")
    shares = list(shares)
    for s in shares:
        if not isinstance(s, Share):
            raise TypeError("shares must be Share objects (use Share.parse or Share.from_bytes)")
    if not shares:
        return
    common_set, _ = Counter(s.set_id for s in shares).most_common(1)[0]
    ref = next(s for s in shares if s.set_id == common_set)
    for s in shares:
        if s.set_id != ref.set_id:
            this = _label(s, custodian_of, more=f"set {s.set_id.hex()}")
            ref_of = [str(ref.index), *filter(None, [_who(ref, custodian_of)])]
            raise MixedSharesError(
                f"shares come from different splits: {this} is not from set "
                f"{ref.set_id.hex()} (share {', '.join(ref_of)})",
                index=s.index,
                hint="use only shares whose set id matches",
            )
        for what, a, b in (
            ("threshold", s.threshold, ref.threshold),
            ("share count", s.count, ref.count),
            ("secret length", s.secret_len, ref.secret_len),
        ):
            if a != b:
                raise MixedSharesError(
                    f"{_label(s, custodian_of)} disagrees with {_label(ref, custodian_of)} "
                    f"on the {what} "
                    f"({a} vs {b}): shares come from different splits or one is forged",
                    index=s.index,
                )
    seen: dict[int, Share] = {}
    for s in shares:
        prev = seen.get(s.index)
        if prev is not None:
            if hmac.compare_digest(prev.payload, s.payload):
                msg = f"{_label(s, custodian_of)} was given twice"
            else:
                whose = sorted({w for w in (_who(prev, custodian_of), _who(s, custodian_of)) if w})
                by = f" ({' and '.join(whose)})" if whose else ""
                msg = f"two different shares claim index {s.index}{by} (one is corrupted or forged)"
            raise DuplicateShareError(msg, index=s.index)
        seen[s.index] = s


def _interpolate(shares: Sequence[Share], at: int) -> bytes:
    """Value at ``x = at`` of the polynomial through ``shares`` (constant-time core)."""
    return _through([(s.index, s.payload) for s in shares], at)


def _through(points: Sequence[tuple[int, bytes]], at: int) -> bytes:
    """Value at ``x = at`` of the polynomial through ``points`` (``(x, payload)``)."""
    return bytes(_evaluate(points, [at])[0].tobytes())


def _evaluate(points: Sequence[tuple[int, bytes]], targets: Sequence[int]) -> np.ndarray:
    """Values (one row each) at every x in ``targets`` of the polynomial through
    ``points`` (``(x, payload)``), in one pass (:func:`keysplit.hazmat.shamir.evaluate`)."""
    import numpy as np

    from .hazmat import shamir

    ys = np.stack([np.frombuffer(y, dtype=np.uint8) for _, y in points])
    return shamir.evaluate([x for x, _ in points], ys, targets)


def _same(row: np.ndarray, payload: bytes) -> bool:
    return hmac.compare_digest(row.tobytes(), payload)


def _check(ref: Share, payload: bytes) -> bytes | None:
    secret, tag = payload[:-TAG_LEN], payload[-TAG_LEN:]
    ok = hmac.compare_digest(tag, _tag(ref.set_id, ref.threshold, ref.count, secret))
    return secret if ok else None


def _search(
    shares: Sequence[Share], k: int
) -> tuple[tuple[list[Share], bytes, bytes] | None, int, bool]:
    """``k`` of ``shares`` that recover a verified secret, once the first ``k`` did not:
    ``((subset, payload at 0, secret) or None, sets tried, whether every set was tried)``.

    Each set of ``k - 1`` anchor shares (in :func:`_candidates` order, each once) is
    completed by every other share at once: the values at 0 of all those polynomials in
    one pass (:func:`_with_each`), each checked by its tag. So one right anchor set finds
    a right set of ``k`` whatever the other shares are; the passes stop within
    :data:`_SEARCH_WORK_LIMIT` (every anchor, so every set, at thresholds 2 and 3). When
    there are few sets of ``k`` (:data:`_DIRECT_SEARCH_LIMIT`), each is tried instead."""
    ref = shares[0]
    n = len(shares)
    seen: set[frozenset[int]] = set()
    tried = 0
    if math.comb(n, k) <= _DIRECT_SEARCH_LIMIT:  # few: each of them, so a sure answer
        for subset in _candidates(shares, k):
            key = frozenset(s.index for s in subset)
            if key not in seen:
                seen.add(key)
                tried += 1
                payload = _interpolate(subset, 0)
                secret = _check(ref, payload)
                if secret is not None:
                    return (list(subset), payload, secret), tried, True
        return None, tried, True
    passes = max(1, _SEARCH_WORK_LIMIT // ((n - k + 1) * k))
    for anchors in _candidates(shares, k - 1):
        key = frozenset(s.index for s in anchors)
        if key in seen:
            continue
        if len(seen) >= passes:
            return None, tried, False
        seen.add(key)
        rest = [s for s in shares if s.index not in key]
        values = _with_each([(a.index, a.payload) for a in anchors], rest, 0)
        tried += len(rest)
        for s, row in zip(rest, values, strict=True):
            payload = row.tobytes()
            secret = _check(ref, payload)
            if secret is not None:
                return ([*anchors, s], payload, secret), tried, True
    return None, tried, True


def _candidates(shares: Sequence[Share], k: int) -> Iterator[Sequence[Share]]:
    """The k-subsets ``combine`` tries once the first k shares failed: the other cyclic
    runs of k first (each leaves out a run of the others: one wrong share, wherever it is,
    is left out by some run, so it is found in at most n tries even where the subsets in
    order would all hold the first share), then every k-subset in order."""
    n = len(shares)
    for start in range(1, n):
        yield [shares[(start + j) % n] for j in range(k)]
    yield from itertools.combinations(shares, k)


def combine(shares: Sequence[Share], *, custodian_of: Namer | None = None) -> bytes:
    """Recover the secret from at least ``threshold`` shares of one split.

    Refuses mixed splits, duplicates and too few shares before interpolating, then checks
    the recovery tag: a failure is a :class:`RecoveryError`, never a returned key. Extra
    shares beyond the threshold are checked too, and a share that does not fit is named
    (so a bad share is reported even when enough good ones are present).
    ``custodian_of``: as for :func:`verify_set`.
    """
    verify_set(shares, custodian_of=custodian_of)
    shares = list(shares)
    if not shares:
        raise InsufficientSharesError("no shares given")
    k = shares[0].threshold
    if len(shares) < k:
        raise InsufficientSharesError(
            f"need {k} shares, got {len(shares)}",
            hint=f"this split (set {shares[0].set_id.hex()}) has threshold {k}",
        )
    ref = shares[0]
    zero = _interpolate(shares[:k], 0)
    secret = _check(ref, zero)
    base = shares[:k]
    if secret is None:
        if len(shares) == k:
            raise RecoveryError(
                f"recovery check failed: at least one of shares {_names(shares)} is wrong "
                "(forged, or from another split with the same set id)",
                hint="add another share of this split to find out which one",
            )
        found, tried, searched_all = _search(shares, k)
        if found is None and searched_all:  # fewer than k are right
            raise RecoveryError(
                f"recovery check failed: no {k} of shares {_names(shares)} recover a "
                f"verified secret (at least {len(shares) - k + 1} of them are wrong)"
            )
        if found is None:
            raise RecoveryError(
                f"recovery check failed: at least one of shares {_names(shares)} is wrong "
                "(forged, or from another split with the same set id); which is not known: "
                f"none of the {tried} sets of {k} tried recovers a verified secret",
                hint=f"combine fewer of them ({k} and one or two more) to find out which",
            )
        base, zero, secret = found
    in_base = {s.index for s in base}
    others = [s for s in shares if s.index not in in_base]
    on = set(in_base)
    if others:  # every other share checked against the polynomial, in one pass
        values = _evaluate([(s.index, s.payload) for s in base], [s.index for s in others])
        on |= {s.index for s, v in zip(others, values, strict=True) if _same(v, s.payload)}
    fit = [s for s in shares if s.index in on]
    if len(fit) < len(shares):
        raise _disagreement(shares, fit, zero, k, custodian_of)
    return secret


def _decisive(n: int, k: int, fit: int) -> bool:
    """Whether a polynomial through the verified point at x = 0 that ``fit`` of ``n``
    shares lie on is the only best explanation: any other such polynomial shares at most
    ``k - 2`` of those shares (two polynomials of degree ``k - 1`` that agree at x = 0 and
    at ``k - 1`` more points are one), so at most ``n - fit + k - 2`` shares fit it. With
    ``k = 1`` the verified point alone fixes the polynomial."""
    return k == 1 or fit > n - fit + k - 2


def _with_each(fixed: Sequence[tuple[int, bytes]], extra: Sequence[Share], t: int) -> np.ndarray:
    """Row ``i``: ``p_i(t)``, for ``p_i`` the polynomial through the points ``fixed``
    (``(x, payload)``) and the share ``extra[i]``, all in one pass (``t`` is none of the
    fixed x; a share at ``x = t`` is its own value there).

    Lagrange through ``F + {s}``: ``l_j(t) = b_j (t - x_s) / (x_j - x_s)`` for ``j`` in F
    (``b_j`` its basis coefficient through F alone) and ``l_s(t) = prod_F (t - x_m) /
    (x_s - x_m)``; logarithms of PUBLIC coordinates, the payloads only multiplied by
    them with the constant-time :func:`~keysplit.hazmat.gf256.mul` and xored."""
    import numpy as np

    from .hazmat import gf256

    log, exp = _log_exp()
    fx = np.array([x for x, _ in fixed], dtype=np.int64)
    fy = np.stack([np.frombuffer(y, dtype=np.uint8) for _, y in fixed])
    dummy = next(x for x in range(1, 256) if x != t and x not in fx)
    at_t = np.array([s.index == t for s in extra], dtype=bool)
    xs = np.where(at_t, dummy, np.array([s.index for s in extra], dtype=np.int64))
    ys = np.stack([np.frombuffer(s.payload, dtype=np.uint8) for s in extra])
    log_t = log[fx ^ t]  # log(t - x_m), m in F
    pair = fx[:, None] ^ fx[None, :]
    log_b = (log_t.sum() - log_t) - log[np.where(pair == 0, 1, pair)].sum(axis=1)
    to_f = log[xs[:, None] ^ fx[None, :]]  # log(x_s - x_j)
    own = np.where(at_t, 1, exp[(log_t.sum() - to_f.sum(axis=1)) % 255]).astype(np.uint8)
    coeff = exp[(log_b[None, :] + log[xs ^ t][:, None] - to_f) % 255]
    coeff = np.where(at_t[:, None], 0, coeff).astype(np.uint8)
    terms = gf256.mul(fy[None, :, :], coeff[:, :, None])
    out: np.ndarray = np.bitwise_xor.reduce(terms, axis=1) ^ gf256.mul(ys, own[:, None])
    return out


def _best_through(shares: Sequence[Share], zero: bytes, anchors: Sequence[Share]) -> list[Share]:
    """The shares on the best-supported polynomial through the verified point ``(0, zero)``
    and the ``k - 2`` ``anchors``: the anchors and the largest group of the other shares.

    Those ``k - 1`` points and any one more share fix a polynomial ``p_s``; two shares lie
    on one polynomial through the anchors exactly when their ``p_s`` agree at one further
    point ``t`` (two polynomials of degree ``k - 1`` that agree at ``k - 1`` points and are
    not one differ at every other point). So each share is evaluated once, all of them in
    one vectorised pass (Lagrange coefficients on public x-coordinates, constant-time
    products on the payloads), and grouped by ``p_s(t)``: every polynomial through the
    anchors is examined at the cost of ``k - 1`` products over the shares, where trying
    them one by one cost a full evaluation of every share each."""
    fixed = [(0, zero)] + [(a.index, a.payload) for a in anchors]
    rest = [s for s in shares if s.index not in {x for x, _ in fixed}]
    t = next(x for x in range(1, 256) if x not in {x for x, _ in fixed})
    keys = _with_each(fixed, rest, t)
    blind = secrets.token_bytes(32)
    groups: dict[bytes, list[Share]] = {}
    for s, row in zip(rest, keys, strict=True):  # by a keyed digest: no secret as a key
        digest = hashlib.blake2b(row.tobytes(), key=blind, digest_size=16).digest()
        groups.setdefault(digest, []).append(s)
    largest = max(groups.values(), key=len, default=[])
    chosen = {s.index for s in anchors} | {s.index for s in largest}
    return [s for s in shares if s.index in chosen]


def _disagreement(
    shares: Sequence[Share],
    fit: Sequence[Share],
    zero: bytes,
    k: int,
    custodian_of: Namer | None = None,
) -> RecoveryError:
    """The error for shares that recover a verified secret but do not all lie on one
    polynomial: the shares off the polynomial that more shares fit than any other could,
    or, when no polynomial is that clear, that which shares are wrong cannot be told.

    The secret is verified, but not the shares that recovered it: two or more shares with
    errors that cancel at x = 0 (no knowledge of the secret needed: the interpolation is
    linear) recover it too, and a good share is then off *their* polynomial. So the
    polynomial taken is the one fixed by the verified point at x = 0 that the most shares
    lie on: :func:`_best_through` finds the best one through each set of ``k - 2`` anchor
    shares (with ``k = 2``, no anchor: the best of all, in one pass), anchor sets tried as
    :func:`_candidates` orders them within :data:`_SEARCH_WORK_LIMIT`; and shares are named
    only when no other polynomial could be as well supported (:func:`_decisive`):
    otherwise naming one could blame a good custodian."""
    n = len(shares)
    best = list(fit)
    if not _decisive(n, k, len(best)):
        allowed = max(1, _SEARCH_WORK_LIMIT // ((n - k + 2) * (k - 1)))
        anchor_sets: Iterator[Sequence[Share]] = (
            iter([()]) if k == 2 else _candidates(shares, k - 2)
        )
        for anchors in itertools.islice(anchor_sets, allowed):
            on = _best_through(shares, zero, anchors)
            if len(on) > len(best):
                best = on
                if _decisive(n, k, len(best)):
                    break
    if _decisive(n, k, len(best)):
        kept = {s.index for s in best}
        bad = [s for s in shares if s.index not in kept]
        named = ", ".join(_numbered(s, custodian_of) for s in sorted(bad, key=_index))
        which = f"share {named} does" if len(bad) == 1 else f"shares {named} do"
        return RecoveryError(
            f"{which} not match the others (corrupted or forged); shares {_names(best)} "
            "recover a verified secret",
            index=bad[0].index,
            hint=f"leave out {which.rsplit(' ', 1)[0]}",
        )
    return RecoveryError(
        f"shares {_names(shares)} recover a verified secret but do not all lie on one "
        "polynomial, and which of them are wrong cannot be told (two or more shares whose "
        "errors cancel out recover the secret too)",
        hint="check each share against its custodian's own copy: errors that cancel out "
        "are not chance, two or more shares were changed together",
    )


def secret_fingerprint(secret: bytes) -> str:
    """Short, one-way id of a recovered secret, to confirm a recovery without showing it.

    ``SHA-256("keysplit secret fingerprint v1" || secret)[:8]`` in hex; 64 bits of a hash
    do not help guess a 128-bit random key.
    """
    return hashlib.sha256(_FP_DOMAIN + _octet_bytes(secret, "secret")).digest()[:8].hex()
