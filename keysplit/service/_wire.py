"""The key service's wire format: JSON for control, a framed binary body for batches.

Why a frame and not JSON with base64 for records: every JSON read from the wire goes
through :func:`keysplit._json.loads`, whose depth check walks the text in Python (about
60 ns per character). A batch of 10,000 1 KiB records in base64 JSON is 14 MB and takes
~0.9 s just to be depth-checked; the same batch as a frame carries only its small header
(subjects, sizes, context) through the JSON parser and the payload bytes untouched.

Frame (``application/vnd.keysplit.batch``, byte layout in docs/API.md)::

    magic "KSB1" | header length (u32) | header (UTF-8 JSON) | item count n (u32)
    | n subject lengths (u32 each) | n item lengths (i32 each, -1 = no item)
    | subjects (UTF-8, concatenated) | items (concatenated)

All integers big endian. The JSON header holds only what is small (a shared ``context``,
per-item ``contexts`` when given, per-item ``errors``); subjects and payloads never pass
through the JSON parser. Responses use the same frame with empty subjects.

Errors are JSON ``{"error": {"type": "SealedError", "message": "...", "hint": ...}}``;
``type`` names a :mod:`keysplit.errors` class, so a client re-raises the same subclass.
"""

from __future__ import annotations

import itertools
import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from .. import _json, errors
from ..errors import FormatError, KeysplitError

__all__ = [
    "BATCH_TYPE",
    "JSON_TYPE",
    "MAX_BODY",
    "MAX_ITEMS",
    "MAX_PUBLIC_BODY",
    "MAX_REWRAP_BATCH",
    "decode_frame",
    "dumps",
    "encode_frame",
    "error_body",
    "error_dict",
    "error_from_body",
    "error_from_dict",
    "int_field",
    "loads",
    "response_limit",
]

BATCH_TYPE = "application/vnd.keysplit.batch"
JSON_TYPE = "application/json"
MAGIC = b"KSB1"
MAX_BODY = 256 << 20
"""Largest body of an authenticated request (256 MiB): the server reads it only after
the bearer token checked out (:meth:`KeyService.precheck`)."""
MAX_PUBLIC_BODY = 64 << 10
"""Largest body of an endpoint that needs no token (64 KiB: a sealed share is ~1 KiB);
unknown paths get no body read at all."""
MAX_HEADER = 32 << 20
MAX_ITEMS = 100_000
"""Most items in one batch request."""
MAX_REWRAP_BATCH = 1_000_000
"""Largest ``batch_size`` of one rewrap step (keys read and rewritten per transaction)."""
RESPONSE_BASE = 1 << 20
RESPONSE_PER_ITEM = 1 << 10
"""A :class:`keysplit.Client` reads at most ``RESPONSE_BASE`` + the request's size +
``RESPONSE_PER_ITEM`` per item: a record grows by far less than 1 KiB, and an item's error
is one short JSON object."""
_LEN = struct.Struct(">I")


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def loads(data: bytes, what: str = "request body") -> Any:
    """Bounded JSON from the wire (:func:`keysplit._json.loads`)."""
    return _json.loads(data, what=what, max_bytes=MAX_HEADER)


def int_field(doc: Mapping[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    """``doc[name]`` as an int in ``lo..hi`` (``default`` if absent), else FormatError.

    JSON booleans are not numbers here, and a float (even ``2.0``) is refused: every
    numeric field of the API is a count.
    """
    v = doc.get(name, default)
    if type(v) is not int or not lo <= v <= hi:
        raise FormatError(f"'{name}' must be an integer from {lo:,} to {hi:,}")
    return v


def response_limit(request_size: int, items: int) -> int:
    """The most bytes a client reads back for a request of that size and item count."""
    return RESPONSE_BASE + request_size + RESPONSE_PER_ITEM * items


def encode_frame(
    header: Mapping[str, Any],
    items: Sequence[bytes | None],
    subjects: Sequence[str] | None = None,
) -> bytes:
    """One frame: ``header``, the subjects (if any) and the items (None -> length -1)."""
    h = dumps(dict(header))
    n = len(items)
    subj = [s.encode("utf-8") for s in subjects] if subjects is not None else []
    if subjects is not None and len(subj) != n:
        raise ValueError("one subject per item")
    slens = [len(b) for b in subj] if subj else [0] * n
    ilens = [-1 if b is None else len(b) for b in items]
    table = struct.pack(f">I{n}I{n}i", n, *slens, *ilens)
    return b"".join(
        [MAGIC, _LEN.pack(len(h)), h, table, *subj, *(b for b in items if b is not None)]
    )


def decode_frame(
    data: bytes, what: str = "batch", *, views: bool = False
) -> tuple[dict[str, Any], list[str], list[bytes | None]]:
    """Parse a frame strictly: (header, subjects, items); missing items come back as None.

    ``views=True`` gives the items as read-only memoryviews into ``data`` instead of
    copies (a copy per 1 KiB item was a third of the server's framing cost).
    """
    size = len(data)
    if size < 12 or data[:4] != MAGIC:
        raise FormatError(f"{what}: not a keysplit batch frame (magic KSB1)")
    (hlen,) = _LEN.unpack_from(data, 4)
    if hlen > MAX_HEADER or 12 + hlen > size:
        raise FormatError(f"{what}: truncated or oversized header")
    header = loads(bytes(data[8 : 8 + hlen]), f"{what} header")
    if not isinstance(header, dict):
        raise FormatError(f"{what}: header must be a JSON object")
    pos = 8 + hlen
    (n,) = _LEN.unpack_from(data, pos)
    pos += 4
    if n > MAX_ITEMS or pos + 8 * n > size:
        raise FormatError(f"{what}: at most {MAX_ITEMS} items, and a complete length table")
    lens = struct.unpack_from(f">{n}I{n}i", data, pos)
    pos += 8 * n
    slens, ilens = lens[:n], lens[n:]
    if min(ilens, default=0) < -1:
        raise FormatError(f"{what}: bad item length")
    if pos + sum(slens) + sum(x for x in ilens if x > 0) != size:
        raise FormatError(f"{what}: payload length does not match its length table")
    stotal = sum(slens)
    subjects = _subjects(data[pos : pos + stotal], slens, what)
    pos += stotal
    ends = list(itertools.accumulate(map(_nonneg, ilens), initial=pos))
    src: Any = memoryview(data).toreadonly() if views else data
    if min(ilens, default=0) >= 0:  # the common case: every item present
        items: list[bytes | None] = list(map(src.__getitem__, map(slice, ends, ends[1:])))
    else:
        items = [None if ln < 0 else src[ends[i] : ends[i + 1]] for i, ln in enumerate(ilens)]
    return header, subjects, items


def _nonneg(x: int) -> int:
    return x if x > 0 else 0


def _subjects(blob: bytes, lens: Sequence[int], what: str) -> list[str]:
    """The subjects of a frame. ASCII (the common case) is decoded once and sliced, since
    then byte offsets are character offsets; anything else subject by subject."""
    if blob.isascii():
        text = blob.decode("ascii")
        ends = list(itertools.accumulate(lens, initial=0))
        return list(map(text.__getitem__, map(slice, ends, ends[1:])))
    view = memoryview(blob)
    out: list[str] = []
    pos = 0
    try:
        for ln in lens:
            out.append(str(view[pos : pos + ln], "utf-8"))
            pos += ln
    except UnicodeDecodeError:
        raise FormatError(f"{what}: a subject is not UTF-8") from None
    return out


def _known(name: str) -> type[KeysplitError] | None:
    """The error classes a client can re-raise by name: keysplit.errors and the service's."""
    from .unseal import StaleNonceError

    cls = StaleNonceError if name == "StaleNonceError" else getattr(errors, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, KeysplitError) else None


def error_dict(exc: BaseException) -> dict[str, Any]:
    """The JSON form of an error: its class name (a keysplit.errors name or ValueError)."""
    if isinstance(exc, KeysplitError):
        name = next(c.__name__ for c in type(exc).__mro__ if _known(c.__name__) is c)
        out: dict[str, Any] = {"type": name, "message": str(exc)}
        if exc.hint:
            out["hint"] = exc.hint
        return out
    if isinstance(exc, (ValueError, TypeError)):
        return {"type": "ValueError", "message": str(exc)}
    return {"type": "KeysplitError", "message": "internal error"}


def error_body(exc: BaseException) -> bytes:
    return dumps({"error": error_dict(exc)})


def error_from_dict(err: Any) -> Exception:
    """Rebuild the exception a server reported: the same keysplit.errors subclass."""
    if not isinstance(err, dict):
        return KeysplitError("malformed error from the key service")
    name = err.get("type")
    message = str(err.get("message", ""))
    hint = err.get("hint")
    hint = str(hint) if hint is not None else None
    if name == "ValueError":
        return ValueError(message)
    cls = (_known(name) if isinstance(name, str) else None) or KeysplitError
    if cls is errors.IntegrityError:
        return errors.IntegrityError(hint=hint)
    try:
        return cls(message, hint=hint)
    except TypeError:
        return KeysplitError(message, hint=hint)


def error_from_body(body: bytes, status: int) -> Exception:
    try:
        doc = loads(body, "error response")
    except FormatError:
        return KeysplitError(f"key service answered HTTP {status} without a JSON error")
    err = doc.get("error") if isinstance(doc, dict) else None
    return error_from_dict(err)
