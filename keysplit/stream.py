"""Streaming file encryption: chunked AES-128-GCM sealed to a keyring's X25519 key.

Anyone holding the keyring's *public* key can seal a file (no quorum needed); only an
unsealed keyring (or the X25519 private key) can open it. The format is specified byte by
byte in ``docs/format/stream.md``.

Design, briefly:

* A fresh random 16-byte **file key** per file is sealed in the header with HPKE
  (RFC 9180 base mode, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-128-GCM, the one
  suite of :mod:`keysplit.hazmat.hpke`). The HPKE
  ``info`` is the whole header before the sealed key (magic, version, chunk size,
  recipient key id, context), so editing any header field makes unsealing fail.
* The payload key and a 7-byte nonce prefix come from HKDF-SHA256 over the file key with
  the SHA-256 of the complete header as ``info``, which binds every chunk to this exact
  header. A per-file random key already makes nonces unique; the HKDF step adds key
  separation and header binding (Tink's reason for HKDF, a key reused across files, does
  not arise here).
* The body is the STREAM construction of age and Tink: chunk ``i`` is AES-128-GCM with
  nonce ``prefix || uint32(i) || last_flag``. Truncation, reordering, duplication,
  dropping and appended data all fail authentication.

Memory stays flat: two chunk buffers and one output buffer are allocated once and reused
(``readinto`` + ``AESGCM.encrypt_into``/``decrypt_into``).

Decrypting to a *file* is atomic (:func:`decrypt_file`): plaintext goes to an unnamed
0600 file (``O_TMPFILE``) next to the target that is linked in only once the whole stream
has authenticated, so even a killed process leaves no plaintext behind. Decrypting to a
*stream* (stdout, a pipe) cannot be atomic: :func:`decrypt_stream` writes each chunk
only after that chunk authenticates, and raises :class:`~keysplit.errors.IntegrityError`
if a later chunk or the final-chunk check fails; a consumer must treat that failure (the
CLI's non-zero exit) as "discard everything".
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import stat
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import _fileio, names
from .errors import FormatError, IntegrityError
from .hazmat import hpke
from .rng import RandomSource, default_rng

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "HpkeDecryptor",
    "HpkeOpener",
    "KeyringPublicKey",
    "Opener",
    "StreamHeader",
    "StreamInfo",
    "check_context",
    "decrypt_file",
    "decrypt_stream",
    "encrypt_file",
    "encrypt_stream",
    "read_header",
    "recipient_id",
]

MAGIC = b"KSSTREAM"
VERSION = 1
MIN_CHUNK_SIZE = 1 << 16
MAX_CHUNK_SIZE = 1 << 20
DEFAULT_CHUNK_SIZE = 1 << 20
TAG_SIZE = 16
FILE_KEY_SIZE = 16
KEY_ID_SIZE = 8
SEALED_KEY_SIZE = 32 + FILE_KEY_SIZE + TAG_SIZE  # HPKE enc || AES-GCM(file key)
FIXED_HEADER_SIZE = len(MAGIC) + 1 + 4 + KEY_ID_SIZE + 2
MAX_CONTEXT_SIZE = 0xFFFF
MAX_CHUNKS = 1 << 32
_NONCE_PREFIX_SIZE = 7
_LAST = b"\x01"
_NOT_LAST = b"\x00"
_KEY_ID_LABEL = b"keysplit x25519 key id v1\x00"
_PAYLOAD_LABEL = b"keysplit stream v1 payload\x00"

HpkeOpener = Callable[[bytes, bytes], bytes]
"""``hpke_open(ciphertext, info) -> file key`` with the suite described above."""


@runtime_checkable
class HpkeDecryptor(Protocol):
    """An unsealed keyring (``keysplit.keyring.UnsealedKeyring``): opens HPKE ``enc || ct``.

    ``info`` is the stream header up to the sealed key; bytes 13..20 are the recipient
    id, should a keyring hold several X25519 keys.
    """

    def hpke_open(self, ciphertext: bytes, info: bytes) -> bytes: ...


Opener = X25519PrivateKey | HpkeOpener | HpkeDecryptor
KeyringPublicKey = X25519PublicKey | bytes
"""What a stream is sealed to: an X25519 public key object, or its 32 raw bytes
(``Keyring.public_key``). Not :class:`keysplit.Recipient`, which is a custodian's key."""


def _public_key(recipient: KeyringPublicKey) -> X25519PublicKey:
    if isinstance(recipient, X25519PublicKey):
        return recipient
    if isinstance(recipient, (bytes, bytearray)):
        if len(recipient) != 32:
            raise ValueError("a raw X25519 public key is 32 bytes")
        return X25519PublicKey.from_public_bytes(bytes(recipient))
    raise TypeError("recipient must be an X25519PublicKey or its 32 raw bytes")


def recipient_id(public_key: KeyringPublicKey) -> bytes:
    """The 8-byte id of an X25519 recipient key written in stream headers.

    It only routes a file to the right keyring (several regional keyrings are normal);
    authentication comes from HPKE, which binds the full public key.
    """
    raw = _public_key(public_key).public_bytes_raw()
    return hashlib.sha256(_KEY_ID_LABEL + raw).digest()[:KEY_ID_SIZE]


# --------------------------------------------------------------------------- context


def _encode_context(context: Mapping[str, str] | None) -> bytes:
    """Canonical context: pairs sorted by UTF-8 key, each ``u16 len || key || u16 len || value``.

    Keys are written in NFC (:func:`keysplit.names.normalize_context`); values stay exact.
    """
    if context is None:
        return b""
    if not isinstance(context, Mapping):
        raise TypeError("context must be a mapping of str to str")
    for key, value in context.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("context keys and values must be str")
        if not key:
            raise ValueError("context keys must be non-empty")
    normalized = names.normalize_context(context)
    items = sorted((k.encode("utf-8"), v.encode("utf-8")) for k, v in normalized.items())
    items.sort()
    out = bytearray()
    for k, v in items:
        if len(k) > 0xFFFF or len(v) > 0xFFFF:
            raise ValueError("context key or value too long")
        out += len(k).to_bytes(2, "big") + k + len(v).to_bytes(2, "big") + v
    if len(out) > MAX_CONTEXT_SIZE:
        raise ValueError(f"context too large: {len(out)} bytes encoded, at most {MAX_CONTEXT_SIZE}")
    return bytes(out)


def check_context(context: Mapping[str, str] | None) -> None:
    """Raise ``ValueError`` (``TypeError``) for a context a stream header cannot hold: too
    many, too long or empty keys, too long values, text that is not Unicode (lone
    surrogates: bytes that are not UTF-8 in a command line) or more than
    :data:`MAX_CONTEXT_SIZE` bytes encoded. What :func:`encrypt_stream` checks, and an
    expected context of :func:`decrypt_stream`, up front (before a quorum is gathered)."""
    _encode_context(context)


def _same_context(expected: Mapping[str, str], stored: Mapping[str, str]) -> bool:
    """Equal up to the Unicode spelling of keys (a header written before NFC keys may
    carry another spelling); exact comparison of the text if the stored one cannot be
    normalized (one key in two spellings). By text: a ``str`` subclass's own
    ``__eq__``/``__hash__`` (a case-folding type) must not call other text equal."""
    want = _encode_context(expected)
    try:
        return want == _encode_context(stored)
    except ValueError:
        return _text_items(expected) == _text_items(stored)


def _text_items(context: Mapping[str, str]) -> set[tuple[str, str]]:
    """A context's pairs as plain ``str`` (``str.__str__`` copies a subclass's text)."""
    return {(str.__str__(k), str.__str__(v)) for k, v in context.items()}


def _decode_context(data: bytes) -> dict[str, str]:
    """Strict inverse of :func:`_encode_context` (rejects any non-canonical encoding)."""
    result: dict[str, str] = {}
    pos = 0
    prev: bytes | None = None
    while pos < len(data):
        parts: list[bytes] = []
        for _ in range(2):
            if pos + 2 > len(data):
                raise FormatError("stream header: truncated context")
            n = int.from_bytes(data[pos : pos + 2], "big")
            pos += 2
            if pos + n > len(data):
                raise FormatError("stream header: truncated context")
            parts.append(data[pos : pos + n])
            pos += n
        k, v = parts
        if not k:
            raise FormatError("stream header: empty context key")
        if prev is not None and k <= prev:
            raise FormatError("stream header: context keys not in canonical order")
        prev = k
        try:
            result[k.decode("utf-8")] = v.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError("stream header: context is not valid UTF-8") from None
    return result


# --------------------------------------------------------------------------- header


@dataclass(frozen=True)
class StreamHeader:
    """A parsed stream header. Holds no secrets (the file key inside is HPKE-sealed)."""

    version: int
    chunk_size: int
    recipient_id: bytes
    context: Mapping[str, str]
    sealed_key: bytes = field(repr=False)
    raw: bytes = field(repr=False)

    @property
    def info(self) -> bytes:
        """The HPKE ``info``: every header byte before the sealed key."""
        return self.raw[:-SEALED_KEY_SIZE]

    @property
    def size(self) -> int:
        """Length of the header in bytes (the body starts here)."""
        return len(self.raw)


@dataclass(frozen=True)
class StreamInfo:
    """What :func:`encrypt_stream`/:func:`decrypt_stream` processed."""

    header: StreamHeader
    plaintext_size: int
    ciphertext_size: int
    chunks: int


def _readfull(src: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` from ``src`` unless EOF comes first; return the byte count read."""
    total = 0
    size = len(view)
    while total < size:
        n = src.readinto(view[total:])  # type: ignore[attr-defined]
        if n is None:
            raise BlockingIOError("non-blocking source is not supported")
        if n == 0:
            break
        total += n
    return total


def _writeall(dst: BinaryIO, view: memoryview, left: list[int] | None = None) -> None:
    """Write all of ``view`` (raw files may accept only part of a write).

    ``left[0]`` grows by what each write took; a write that raises counts what its
    exception says it wrote (``characters_written``: a ``BlockingIOError``'s, or 0 from a
    destination that refuses a write whole before writing any of it, as the CLI's terminal
    check does), else all that was offered, as it may have left in part."""
    while len(view):
        try:
            n = dst.write(view)
        except BaseException as exc:
            if left is not None:
                done = getattr(exc, "characters_written", None)
                left[0] += min(done, len(view)) if isinstance(done, int) else len(view)
            raise
        if n is None:
            raise BlockingIOError("non-blocking destination is not supported")
        if left is not None:
            left[0] += min(n, len(view))
        if n >= len(view):
            return
        view = view[n:]


def _unheld(left: list[int], dst: BinaryIO) -> None:
    """Take off ``left[0]`` the bytes that ``dst`` took and has not written when the output
    stops (its ``held``, if it has one: the CLI's terminal check holds back the end of a
    write, a "\r" or half a UTF-8 sequence, until the next shows it to be text)."""
    held = getattr(dst, "held", None)
    if isinstance(held, int) and not isinstance(held, bool) and held > 0:
        left[0] -= min(held, left[0])


def read_header(src: BinaryIO) -> StreamHeader:
    """Read and strictly parse a stream header from ``src`` (which is left at the body).

    Raises :class:`FormatError` for a bad magic, an unknown version, an out-of-range chunk
    size, a malformed context or truncation. Nothing here is authenticated yet: the header
    is authenticated when the file key is unsealed.
    """
    fixed = bytearray(FIXED_HEADER_SIZE)
    n = _readfull(src, memoryview(fixed))
    if n == 0:
        raise FormatError("empty input: not a keysplit stream")
    if fixed[: min(n, len(MAGIC))] != MAGIC[: min(n, len(MAGIC))]:
        raise FormatError("not a keysplit stream (bad magic)")
    if n < FIXED_HEADER_SIZE:
        raise FormatError("stream header truncated")
    version = fixed[len(MAGIC)]
    if version != VERSION:
        raise FormatError(f"unsupported stream version {version} (this keysplit reads {VERSION})")
    pos = len(MAGIC) + 1
    chunk_size = int.from_bytes(fixed[pos : pos + 4], "big")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise FormatError(f"stream header: chunk size {chunk_size} out of range")
    pos += 4
    key_id = bytes(fixed[pos : pos + KEY_ID_SIZE])
    pos += KEY_ID_SIZE
    ctx_len = int.from_bytes(fixed[pos : pos + 2], "big")
    rest = bytearray(ctx_len + SEALED_KEY_SIZE)
    if _readfull(src, memoryview(rest)) < len(rest):
        raise FormatError("stream header truncated")
    context = types.MappingProxyType(_decode_context(bytes(rest[:ctx_len])))
    return StreamHeader(
        version=version,
        chunk_size=chunk_size,
        recipient_id=key_id,
        context=context,
        sealed_key=bytes(rest[ctx_len:]),
        raw=bytes(fixed + rest),
    )


# --------------------------------------------------------------------------- HPKE


def _hpke_seal(
    recipient: X25519PublicKey, info: bytes, plaintext: bytes, rng: RandomSource
) -> bytes:
    """HPKE seal (``enc || ct``) with the ephemeral key drawn from the RNG seam (vectors)."""
    return hpke.seal(recipient, info, plaintext, ephemeral=rng.random_bytes(32))


def _open_file_key(header: StreamHeader, opener: Opener) -> bytes:
    if isinstance(opener, X25519PrivateKey):
        mine = recipient_id(opener.public_key())
        if mine != header.recipient_id:
            raise IntegrityError(
                "the stream is sealed to another key",
                hint=f"stream recipient id {header.recipient_id.hex()}, this key {mine.hex()}",
            )
        private = opener

        def unseal(ciphertext: bytes, info: bytes) -> bytes:
            return hpke.open(private, info, ciphertext)

        fn: HpkeOpener = unseal
    elif isinstance(opener, HpkeDecryptor):
        fn = opener.hpke_open
    elif callable(opener):
        fn = opener
    else:
        raise TypeError("opener must be an X25519PrivateKey, an unsealed keyring or a callable")
    try:
        file_key = fn(header.sealed_key, header.info)
    except (InvalidTag, ValueError):
        raise IntegrityError() from None
    if not isinstance(file_key, bytes) or len(file_key) != FILE_KEY_SIZE:
        raise IntegrityError()
    return file_key


def _payload_cipher(file_key: bytes, header: bytes) -> tuple[AESGCM, bytes]:
    okm = HKDF(
        hashes.SHA256(),
        16 + _NONCE_PREFIX_SIZE,
        salt=None,
        info=_PAYLOAD_LABEL + hashlib.sha256(header).digest(),
    ).derive(file_key)
    return AESGCM(okm[:16]), okm[16:]


# --------------------------------------------------------------------------- streams


def _check_chunk_size(chunk_size: int) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError("chunk_size must be an int")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}")


def encrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    recipient: KeyringPublicKey,
    *,
    context: Mapping[str, str] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    rng: RandomSource | None = None,
) -> StreamInfo:
    """Encrypt everything readable from ``src`` to ``dst``, sealed to ``recipient``.

    ``context`` (str to str) is stored in the header in clear and authenticated; use it
    for what the file is (``{"subject": "u42", "kind": "backup"}``), never for secrets.
    Constant memory: about ``3 * chunk_size``. An output that is the input's regular file
    (``sys.stdout`` under ``>> f`` while reading ``f``) is refused: ``OSError`` (EINVAL).
    """
    _check_distinct(src, dst)
    recipient = _public_key(recipient)
    _check_chunk_size(chunk_size)
    rng = rng if rng is not None else default_rng()
    ctx = _encode_context(context)
    prefix = (
        MAGIC
        + bytes([VERSION])
        + chunk_size.to_bytes(4, "big")
        + recipient_id(recipient)
        + len(ctx).to_bytes(2, "big")
        + ctx
    )
    file_key = rng.random_bytes(FILE_KEY_SIZE)
    raw = prefix + _hpke_seal(recipient, prefix, file_key, rng)
    header = StreamHeader(
        version=VERSION,
        chunk_size=chunk_size,
        recipient_id=recipient_id(recipient),
        context=types.MappingProxyType(_decode_context(ctx)),
        sealed_key=raw[len(prefix) :],
        raw=raw,
    )
    aead, nonce_prefix = _payload_cipher(file_key, raw)
    del file_key
    _writeall(dst, memoryview(raw))

    bufs = (memoryview(bytearray(chunk_size)), memoryview(bytearray(chunk_size)))
    out = memoryview(bytearray(chunk_size + TAG_SIZE))
    cur = 0
    n = _readfull(src, bufs[0])
    counter = 0
    total = 0
    while True:
        if counter >= MAX_CHUNKS:
            raise ValueError("input too large for one stream (2**32 chunks)")
        if n == chunk_size:
            m = _readfull(src, bufs[1 - cur])
            last = m == 0
        else:
            m = 0
            last = True
        nonce = nonce_prefix + counter.to_bytes(4, "big") + (_LAST if last else _NOT_LAST)
        ct = out if n == chunk_size else out[: n + TAG_SIZE]
        aead.encrypt_into(nonce, bufs[cur][:n], None, ct)
        _writeall(dst, ct)
        total += n
        counter += 1
        if last:
            break
        cur, n = 1 - cur, m
    return StreamInfo(
        header=header,
        plaintext_size=total,
        ciphertext_size=len(raw) + total + counter * TAG_SIZE,
        chunks=counter,
    )


def decrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    opener: Opener,
    *,
    context: Mapping[str, str] | None = None,
) -> StreamInfo:
    """Decrypt a stream from ``src`` to ``dst``.

    ``opener`` unseals the file key: an ``X25519PrivateKey``, an object with
    ``hpke_open(ciphertext, info) -> bytes`` (an unsealed keyring) or such a callable.
    If ``context`` is given it must equal the header's context exactly.

    Each chunk is written only after it authenticates, but earlier chunks are already
    written when a later one fails: on :class:`IntegrityError` discard all output. Use
    :func:`decrypt_file` for all-or-nothing output. An output that is the input's regular
    file is refused, as by :func:`encrypt_stream`.
    """
    _check_distinct(src, dst)
    return _decrypt_body(read_header(src), src, dst, opener, context=context)


def _decrypt_body(
    header: StreamHeader,
    src: BinaryIO,
    dst: BinaryIO,
    opener: Opener,
    *,
    context: Mapping[str, str] | None,
    released: list[int] | None = None,
    before_first_release: Callable[[], None] | None = None,
) -> StreamInfo:
    """:func:`decrypt_stream` after the header: ``src`` is at the body. ``released[0]``
    grows by the plaintext ``dst`` took (:func:`_writeall`), ``released[1]`` by each
    authenticated chunk's as it is handed to ``dst``; ``before_first_release()`` runs once,
    before the first plaintext byte is handed to ``dst`` (if it raises, none is)."""
    if context is not None and not _same_context(context, header.context):
        raise IntegrityError("stream context does not match the expected context")
    file_key = _open_file_key(header, opener)
    aead, nonce_prefix = _payload_cipher(file_key, header.raw)
    del file_key

    chunk_size = header.chunk_size
    full = chunk_size + TAG_SIZE
    bufs = (memoryview(bytearray(full)), memoryview(bytearray(full)))
    out = memoryview(bytearray(chunk_size))
    cur = 0
    n = _readfull(src, bufs[0])
    counter = 0
    total = 0
    while True:
        if n == full:
            m = _readfull(src, bufs[1 - cur])
            last = m == 0
        else:
            m = 0
            last = True
        if n == 0 and counter == 0:  # every stream has a final chunk of 16 bytes or more
            raise IntegrityError(_TRUNCATED + "its header (it has no chunk)")
        # A final chunk is empty only when the whole stream is; counters never wrap.
        if n < TAG_SIZE or (last and n == TAG_SIZE and counter > 0) or counter >= MAX_CHUNKS:
            raise IntegrityError(_CUT_OR_ALTERED)
        ctr = counter.to_bytes(4, "big")
        pt = out if n == full else out[: n - TAG_SIZE]
        try:
            aead.decrypt_into(
                nonce_prefix + ctr + (_LAST if last else _NOT_LAST), bufs[cur][:n], None, pt
            )
        except InvalidTag:
            pt[:] = bytes(len(pt))  # unauthenticated plaintext is never output, nor kept
            raise _chunk_failed(
                aead, nonce_prefix + ctr + _NOT_LAST, bufs[cur][:n], last and n == full, counter
            ) from None
        if released is not None and len(pt):
            if not released[1] and before_first_release is not None:
                before_first_release()
            released[1] += len(pt)
        _writeall(dst, pt, released)
        total += len(pt)
        counter += 1
        if last:
            break
        cur, n = 1 - cur, m
    return StreamInfo(
        header=header,
        plaintext_size=total,
        ciphertext_size=header.size + total + counter * TAG_SIZE,
        chunks=counter,
    )


_TRUNCATED = "truncated: the file ends after "
_CUT_OR_ALTERED = "authentication failed: the file was truncated or altered"


def _chunk_failed(
    aead: AESGCM, not_last: bytes, chunk: memoryview, boundary: bool, counter: int
) -> IntegrityError:
    """The error of chunk ``counter`` that did not authenticate. Where the format can tell,
    it says the file was cut: a full-size chunk read as the final one (the stream ended
    right after it: ``boundary``) that authenticates as a *non*-final chunk is genuine, and
    the chunks after it are missing (a cut at a chunk boundary). A cut inside a chunk
    cannot be told from an edit: "truncated or altered". Nothing of the chunk is released
    either way (the caller raises this). Says no more than a tamperer knows already."""
    if boundary:
        scratch = bytearray(len(chunk) - TAG_SIZE)
        try:
            aead.decrypt_into(not_last, chunk, None, scratch)
        except InvalidTag:
            pass
        else:
            scratch[:] = bytes(len(scratch))  # its plaintext is not output: not kept either
            return IntegrityError(
                _TRUNCATED + f"chunk {counter + 1}, before its final chunk (cut at a chunk "
                "boundary; the chunks read authenticate)",
                hint="the file is incomplete: copy it again from its source",
            )
    return IntegrityError(_CUT_OR_ALTERED)


# --------------------------------------------------------------------------- paths

PathArg = str | os.PathLike[str]


def _is_stdio(path: PathArg) -> bool:
    return os.fspath(path) == "-"


@contextlib.contextmanager
def _open_in(path: PathArg) -> Iterator[BinaryIO]:
    if _is_stdio(path):
        yield sys.stdin.buffer
    else:
        with open(path, "rb", buffering=0) as fh:
            yield fh


@contextlib.contextmanager
def _open_out(path: PathArg, overwrite: bool) -> Iterator[BinaryIO]:
    if _is_stdio(path):
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with _fileio.unnamed_writer(path, overwrite=overwrite) as fh:
        yield fh


def _check_distinct(src: BinaryIO, dst: BinaryIO) -> None:
    """Refuse an output that is the input (``cat``'s "input file is output file").

    A stream can be, stdout above all: ``keysplit encrypt DIR f - >> f`` appended each
    chunk to the file being read, which so never ended, growing the input until the disk
    was full (a decrypt likewise appended plaintext to the sealed file); so did a script's
    ``encrypt_stream(sys.stdin.buffer, sys.stdout.buffer, ...)`` under ``< f >> f``. A
    file OUT is a new inode. Checked by both stream functions and the file decrypt."""
    try:
        a, b = os.fstat(src.fileno()), os.fstat(dst.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return  # not a file descriptor (BytesIO, a closed stream): cannot be the same file
    if stat.S_ISREG(a.st_mode) and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
        raise OSError(errno.EINVAL, "input file is output file", str(getattr(src, "name", "-")))


def encrypt_file(
    in_path: PathArg,
    out_path: PathArg,
    recipient: KeyringPublicKey,
    *,
    context: Mapping[str, str] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    rng: RandomSource | None = None,
    overwrite: bool = False,
) -> StreamInfo:
    """:func:`encrypt_stream` between paths; ``"-"`` means stdin/stdout.

    The output file is written atomically (mode 0600); an existing ``out_path`` is a
    ``FileExistsError`` unless ``overwrite``.
    """
    with _open_in(in_path) as src, _open_out(out_path, overwrite) as dst:
        return encrypt_stream(src, dst, recipient, context=context, chunk_size=chunk_size, rng=rng)


def decrypt_file(
    in_path: PathArg,
    out_path: PathArg,
    opener: Opener,
    *,
    context: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> StreamInfo:
    """:func:`decrypt_stream` between paths; ``"-"`` means stdin/stdout.

    To a file: plaintext goes to an unnamed 0600 file (``O_TMPFILE``) in ``out_path``'s
    directory, fsynced and linked in only after the whole stream authenticated; on any
    failure, or if the process is killed, nothing is left and ``out_path`` is untouched.
    Where ``O_TMPFILE`` is unavailable a named ``.<name>.<host>.<pid>.<hex>.tmp`` file is
    used instead, and the next run for the same ``out_path`` removes one whose process on
    this host is gone.
    To stdout: see :func:`decrypt_stream` (not atomic).
    """
    with _open_in(in_path) as src:
        return _decrypt_to(src, None, out_path, opener, context=context, overwrite=overwrite)


def _decrypt_to(
    src: BinaryIO,
    header: StreamHeader | None,
    out_path: PathArg,
    opener: Opener,
    *,
    context: Mapping[str, str] | None = None,
    overwrite: bool = False,
    released: list[int] | None = None,
    before_release: Callable[[StreamInfo], None] | None = None,
    before_first_release: Callable[[], None] | None = None,
) -> StreamInfo:
    """:func:`decrypt_file` from an open source whose ``header`` may be read already
    (:func:`keysplit.ceremony.decrypt_file` reads it to check the recipient before a quorum
    is asked for: the input is opened once, since a pipe can be read only once).
    ``released`` (two counters) counts the plaintext bytes stdout took so far and those
    handed to it (a file's are released only once all authenticated), for the audit entry
    of a decrypt that fails.
    ``before_release(info)`` runs once every chunk is authenticated and, to stdout, flushed
    (a failure before, there too, takes off ``released[0]`` what stdout held back:
    :func:`_unheld`), and before a file OUT is put in place (its audit entry: recorded,
    then released); if it raises, the file is not put in place.
    ``before_first_release()``: once before the first plaintext byte goes to stdout (its
    audit intent); never for a file OUT."""
    with _open_out(out_path, overwrite) as dst:
        _check_distinct(src, dst)
        if header is None:
            header = read_header(src)
        count = released if str(out_path) == "-" else None
        first = before_first_release if count is not None else None
        try:
            info = _decrypt_body(
                header,
                src,
                dst,
                opener,
                context=context,
                released=count,
                before_first_release=first,
            )
            if count is not None:
                # the end of the output, before its entry: one that fails there (a full disk
                # or a reader gone at the last flush, the terminal check refusing what it
                # held) is a stopped decrypt, not a whole one
                dst.flush()
        except BaseException:
            if count is not None:
                _unheld(count, dst)
            raise
        if before_release is not None:
            before_release(info)
        return info
