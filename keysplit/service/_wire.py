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

The codec keeps per-record Python work small (a 1,000-record answer took the client
0.64 ms to decode before, 0.14 ms now): :func:`encode_parts` gives the head and the items
uncopied, for the client to hand to ``sendmsg``; lengths go through ``array`` and one
byteswap; ASCII subjects are encoded and decoded as one text; items are read from one
``BytesIO`` over the body instead of a slice each.

A client reads an answer with :func:`read_frame`, as it arrives (the same checks as
:func:`decode_frame`, before any item is read), so a streamed ``encrypt`` answer, whose
head :func:`encode_head` makes before any record is sealed, is cut into records while the
server still seals the last ones.
"""

from __future__ import annotations

import bisect
import io
import itertools
import json
import struct
import sys
from array import array
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import _json, errors
from ..errors import FormatError, KeysplitError
from ..record import _octets as _record_octets
from ..store.base import MAX_BATCH

__all__ = [
    "BATCH_TYPE",
    "JSON_TYPE",
    "MAX_BODY",
    "MAX_ITEMS",
    "MAX_PUBLIC_BODY",
    "MAX_REWRAP_BATCH",
    "STREAMED",
    "STREAM_OK",
    "decode_frame",
    "dumps",
    "encode_frame",
    "encode_head",
    "encode_parts",
    "error_body",
    "error_dict",
    "error_from_body",
    "error_from_dict",
    "int_field",
    "loads",
    "read_frame",
    "response_limit",
]

BATCH_TYPE = "application/vnd.keysplit.batch"
STREAMED = "Keysplit-Streamed"
"""Response header of a frame whose records follow as they are sealed (value ``1``)."""
STREAM_OK = "Keysplit-Stream-Ok"
"""Request header (value ``1``) of a ``decrypt`` whose client takes a streamed answer and,
should the server cut it (a record failed after the first piece went out), asks again
without the header, to get the whole answer with each failure at its index."""
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
MAX_REWRAP_BATCH = MAX_BATCH
"""Largest ``batch_size`` of one rewrap step (keys read and rewritten per transaction)."""
RESPONSE_BASE = 1 << 20
RESPONSE_PER_ITEM = 1 << 10
"""A :class:`keysplit.Client` reads at most ``RESPONSE_BASE`` + the request's size +
``RESPONSE_PER_ITEM`` per item: a record grows by far less than 1 KiB, and an item's error
is one short JSON object."""
_LEN = struct.Struct(">I")
_SWAP = sys.byteorder == "little"  # frame integers are big endian
assert array("I").itemsize == 4 and array("i").itemsize == 4


FRAMES_MAGIC = b"\x00KSW"
"""The first bytes of a request and an answer of the Unix socket's frame transport
(:mod:`keysplit.service._frames`; no HTTP request begins with NUL)."""
FRAMES_VERSION = 1
FRAME_REQUEST = struct.Struct(">4sBBBBII")
"""magic, version, op, flags (bit 0: a streamed decrypt welcome), 0, token length, body
length; then the token and the body (a batch frame)."""
FRAME_ANSWER = struct.Struct(">4sHHI")
"""magic, HTTP status, flags (bit 0: streamed), body length; then the body (a batch frame,
or the JSON error of the same status)."""
FRAME_OPS = {"/v1/encrypt": 1, "/v1/decrypt": 2}
FRAME_STREAM_OK = 1
FRAME_STREAMED = 1


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


def encode_parts(
    header: Mapping[str, Any],
    items: Sequence[bytes | None],
    subjects: Sequence[str] | None = None,
    *,
    payloads: bool = False,
) -> list[bytes]:
    """One frame as buffers to send in order (or join): its head (magic, header, length
    table, subjects) and then the items themselves, uncopied. ``payloads``: the items are
    plaintexts or records, so a None among them is a TypeError (it is a data key
    request's item), not an item sent without bytes.

    A client hands this list to ``socket.sendmsg`` so a 1,000-record batch is never joined
    into one fresh megabyte (whose page faults cost more than the copy).
    """
    h = dumps(dict(header))
    n = len(items)
    if not {*map(type, items)} <= (_PAYLOAD_TYPES if payloads else _OCTET_TYPES):
        items = [_octets(b, payloads) for b in items]  # (one C-level pass over the usual batch)
    if subjects is None:
        slens, blob = _zeros(n), b""
    else:
        if len(subjects) != n:
            raise ValueError("one subject per item")
        slens, blob = _encode_subjects(subjects)
    try:
        ilens = array("i", map(len, items))  # type: ignore[arg-type]
        present: Sequence[bytes] = items  # type: ignore[assignment]
    except TypeError:  # some None: length -1, nothing sent
        ilens = array("i", [-1 if b is None else len(b) for b in items])
        present = [b for b in items if b is not None]
    if _SWAP:
        slens.byteswap()
        ilens.byteswap()
    head = b"".join([MAGIC, _LEN.pack(len(h)), h, _LEN.pack(n), slens.tobytes(), ilens.tobytes()])
    return [head, blob, *present] if blob else [head, *present]


_OCTET_TYPES = frozenset((bytes, type(None)))
_PAYLOAD_TYPES = frozenset((bytes,))


def _octets(item: Any, payload: bool = False) -> Any:
    """An item as a buffer whose ``len()`` is its size in bytes, which is what ``sendmsg``
    and ``join`` send: ``len()`` of a NumPy array, an ``array('H')`` or a cast memoryview
    counts its items, so the frame announced fewer bytes than went out (the server sealed
    a cut plaintext, and the rest was read as the connection's next request)."""
    # the one rule of every path (keysplit.record._octets): any C-contiguous buffer as its
    # bytes; a strided or released view, or no buffer, is a TypeError that says so
    if item is None and not payload:
        return None
    if isinstance(item, bytearray):
        # a view: the frame's length table holds while the frame lives (another thread's
        # resize is its BufferError), where the bytearray itself sent what it held by then
        return memoryview(item)
    return _record_octets(item, "a plaintext or record")


def encode_frame(
    header: Mapping[str, Any],
    items: Sequence[bytes | None],
    subjects: Sequence[str] | None = None,
) -> bytes:
    """One frame: ``header``, the subjects (if any) and the items (None -> length -1)."""
    return b"".join(encode_parts(header, items, subjects))


def _zeros(n: int) -> array[int]:
    return array("I", bytes(4 * n))


def _encode_subjects(subjects: Sequence[str]) -> tuple[array[int], bytes]:
    """(byte lengths, concatenated UTF-8) of the subjects: ASCII, the common case, is
    encoded in one call (byte lengths are then character lengths)."""
    text = "".join(subjects)  # TypeError for anything but str
    blob = text.encode("utf-8")
    if len(blob) == len(text):
        return array("I", map(len, subjects)), blob
    enc = [s.encode("utf-8") for s in subjects]
    return array("I", map(len, enc)), b"".join(enc)


def encode_head(header: Mapping[str, Any], lengths: Sequence[int]) -> bytes:
    """The head of a frame without subjects whose items have these ``lengths`` (all
    present): what a streamed answer sends before its items (:meth:`KeyService.respond`)."""
    h = dumps(dict(header))
    n = len(lengths)
    ilens = array("i", lengths)
    if _SWAP:
        ilens.byteswap()
    return b"".join([MAGIC, _LEN.pack(len(h)), h, _LEN.pack(n), bytes(4 * n), ilens.tobytes()])


_Head = tuple[dict[str, Any], "array[int]", "array[int]", int, int, int]


def _head(take: Callable[[int], bytes], size: int, what: str, present: bool | None) -> _Head:
    """Parse and check a frame's head, read in order with ``take(k)`` (exactly ``k`` bytes
    of a frame of ``size`` bytes; never asked past ``size``): (header, subject lengths,
    item lengths, lowest item length, subject bytes, item bytes). Every inconsistency is
    a :class:`FormatError` naming ``what``, found before any subject or item is read."""
    lead = take(min(size, 8))
    if lead[:4] != MAGIC:
        raise FormatError(f"{what}: not a keysplit batch frame (magic KSB1)")
    if size < 12:
        raise FormatError(f"{what}: truncated header")
    (hlen,) = _LEN.unpack_from(lead, 4)
    if hlen > MAX_HEADER or 12 + hlen > size:
        raise FormatError(f"{what}: truncated or oversized header")
    raw = take(hlen + 4)
    header = loads(raw[:hlen], f"{what} header")
    if not isinstance(header, dict):
        raise FormatError(f"{what}: header must be a JSON object")
    (n,) = _LEN.unpack_from(raw, hlen)
    pos = 12 + hlen
    if n > MAX_ITEMS or pos + 8 * n > size:
        raise FormatError(f"{what}: at most {MAX_ITEMS} items, and a complete length table")
    table = take(8 * n)
    slens, ilens = array("I"), array("i")
    slens.frombytes(table[: 4 * n])
    ilens.frombytes(table[4 * n :])
    if _SWAP:
        slens.byteswap()
        ilens.byteswap()
    pos += 8 * n
    low = min(ilens, default=0)
    if low < -1:
        raise FormatError(f"{what}: bad item length")
    if present is True and low < 0:
        raise FormatError(f"{what}: one subject and one payload per item")
    if present is False and max(ilens, default=-1) != -1:
        raise FormatError(f"{what}: subjects only, no payloads")
    stotal = sum(slens)
    itotal = sum(ilens) if low >= 0 else sum(x for x in ilens if x > 0)
    if pos + stotal + itotal != size:
        raise FormatError(f"{what}: payload length does not match its length table")
    return header, slens, ilens, low, stotal, itotal


def decode_frame(
    data: bytes | bytearray | memoryview | io.BytesIO,
    what: str = "batch",
    *,
    present: bool | None = None,
) -> tuple[dict[str, Any], list[str], list[bytes | None]]:
    """Parse a frame strictly: (header, subjects, items); missing items come back as None.

    Every malformed frame (truncated, a count or length that does not add up to the
    body's size, a header that is not a JSON object, a subject that is not UTF-8) is a
    :class:`FormatError` naming ``what``; nothing else escapes. Items are ``bytes``,
    read from one BytesIO over ``data`` (which shares a ``bytes`` body: no copy, and no
    slice object per item). ``data`` may be that BytesIO itself (the whole of it is the
    frame): the frame transport receives a body straight into one, so the body is never
    copied whole. ``present=True`` requires every item, ``False`` none.
    """
    if isinstance(data, io.BytesIO):
        size = data.seek(0, io.SEEK_END)
        data.seek(0)
        header, slens, ilens, low, stotal, _ = _head(data.read, size, what, present)
        subjects = _subjects(data.read(stotal), slens, what) if stotal else [""] * len(ilens)
        return header, subjects, _items(data, ilens, low)
    if type(data) is not bytes:
        data = memoryview(data).cast("B")
    at = [0]

    def take(k: int) -> bytes:
        p = at[0]
        at[0] = p + k
        return bytes(data[p : p + k])

    header, slens, ilens, low, stotal, _ = _head(take, len(data), what, present)
    n = len(ilens)
    subjects = _subjects(take(stotal), slens, what) if stotal else [""] * n
    pos = at[0]
    if type(data) is bytes:  # one BytesIO shares the body and reads item after item
        stream = io.BytesIO(data)
        stream.seek(pos)
        return header, subjects, _items(stream, ilens, low)
    # a reused receive buffer: one copy per item, never a copy of the whole
    ends = list(itertools.accumulate((x if x > 0 else 0 for x in ilens), initial=pos))
    items: list[Any] = list(map(bytes, map(data.__getitem__, map(slice, ends, ends[1:]))))
    if low < 0:
        items = [None if ln < 0 else it for ln, it in zip(ilens, items, strict=True)]
    return header, subjects, items


def _items(stream: io.BytesIO, ilens: Sequence[int], low: int) -> list[bytes | None]:
    """The items of lengths ``ilens`` (-1: missing) read in order from ``stream``."""
    if low >= 0:
        return list(map(stream.read, ilens))
    read = stream.read
    return [None if ln < 0 else read(ln) for ln in ilens]


READ_PIECE = 64 << 10
"""Bytes of items :func:`read_frame` reads at a time (whole items; one item may be more)."""


class ShortRead(Exception):
    """The body ended before its announced size (:func:`read_frame`): a transport
    failure, not a malformed frame."""


def read_frame(
    read: Callable[[int], bytes],
    size: int,
    what: str = "batch",
    *,
    present: bool | None = None,
    piece: int = READ_PIECE,
) -> tuple[dict[str, Any], list[str], list[bytes | None]]:
    """:func:`decode_frame` of a body of ``size`` bytes (its Content-Length) read as it
    arrives with ``read(k)`` (an HTTP response's: ``k`` bytes, fewer only at its end): the
    head is checked exactly as there before anything else is read, then the items are
    read whole items at a time, about ``piece`` bytes, and cut into ``bytes`` objects.

    What this buys a client: the body never exists as one buffer (a 1,000-record answer
    is 1.1 MB, faulted in and copied once more for nothing), and the items of the first
    pieces are cut while the server is still sealing the last (a streamed answer,
    :class:`~.core.Streamed`). Nothing is read past ``size``; a body that ends early
    raises :class:`ShortRead`.
    """

    def take(k: int) -> bytes:
        got = read(k) if k else b""
        while len(got) < k:  # a file's read gives all k (fewer at its end); a socket may not
            more = read(k - len(got))
            if not more:
                raise ShortRead(f"{what}: the body ended before its {size:,} bytes")
            got += more
        return got

    header, slens, ilens, low, stotal, _ = _head(take, size, what, present)
    n = len(ilens)
    subjects = _subjects(take(stotal), slens, what) if stotal else [""] * n
    sizes = ilens if low >= 0 else array("i", [x if x > 0 else 0 for x in ilens])
    ends = list(itertools.accumulate(sizes, initial=0))
    items: list[Any] = []
    i = 0
    while i < n:
        j = max(i + 1, bisect.bisect_right(ends, ends[i] + piece, i + 1) - 1)
        cut = io.BytesIO(take(ends[j] - ends[i])).read
        items += map(cut, sizes[i:j])
        i = j
    if low < 0:
        items = [None if ln < 0 else it for ln, it in zip(ilens, items, strict=True)]
    return header, subjects, items


def _subjects(raw: bytes, lens: Sequence[int], what: str) -> list[str]:
    """The subjects of a frame. ASCII (the common case) is decoded once and read in
    pieces, since then byte lengths are character lengths; anything else one by one."""
    if raw.isascii():
        return list(map(io.StringIO(raw.decode("ascii"), newline="").read, lens))
    view = memoryview(raw)
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
