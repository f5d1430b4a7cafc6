"""Tamper-evident ceremony log: hash-chained JSON lines, optionally MACed.

Every ceremony (init, unseal-check, rekey, rotate, rewrap, retire, shred, legal-hold, ...;
the vocabulary and field schema live in :mod:`keysplit.audit.events`) appends one line to
a log in the keyring directory. Each line carries
the SHA-256 of the previous line, so editing, removing, inserting or reordering any entry
breaks the chain at that point, and :meth:`AuditLog.verify` names the first bad sequence
number. The format is specified in ``docs/format/audit.md``.

A hash chain alone cannot stop someone with the disk from rewriting the *whole* log. Two
defences, both optional:

* ``mac_key``: each entry also carries an HMAC-SHA256 under a key that only an unsealed
  keyring has; a verifier holding a quorum then detects even a full rewrite.
* :attr:`AuditLog.head`: the hash of the last entry, short enough to print, write down or
  publish after a ceremony; ``verify(anchor=...)`` later checks that the log still
  contains that exact entry (so it was neither rewritten nor truncated before it).

Entries hold names, fingerprints, versions and counts. Never pass key material or share
bytes: ``bytes`` values are refused outright so that cannot happen by accident.

Appends are durable (``fsync``) and serialized with ``flock``; a crash mid-append leaves
a torn last line, which :meth:`AuditLog.verify` reports (and appending
refuses to build on) until an operator calls :meth:`AuditLog.repair_torn_tail`.

Where the key store keeps the chain (``store=``, a PostgreSQL
:class:`~keysplit.store.base.AuditStore`), the same lines live in a table, one row per
entry, appended in a transaction under a lock, so processes on several hosts write one
chain; reading, hashing, MACs and verification are exactly those of the file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import hmac
import json
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from .. import _json
from .._fileio import atomic_write, durable_append, fsync_dir, fsync_fd, kind_of
from ..errors import AuditError, FormatError
from ..store.base import AuditStore, RangedAuditStore

__all__ = ["GENESIS", "AuditEntry", "AuditLog", "AuditMark", "AuditReport"]

VERSION = 1
GENESIS = "0" * 64
"""The ``prev`` of the first entry, and the head of an empty log."""

_MAC_LABEL = b"keysplit audit mac v1\x00"
_EVENT_RE = re.compile(r"[a-z][a-z0-9_-]{0,39}")
_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_BODY_KEYS = frozenset({"v", "seq", "time", "event", "data", "prev"})
_MAX_LINE = 1 << 20
_ANCHOR_LABEL = b"keysplit audit anchor v1\x00"
_ANCHOR_KEYS = frozenset({"v", "entries", "head", "mac"})
_MAX_ANCHOR = 4096
_CHECKPOINT_LABEL = b"keysplit audit checkpoint v1\x00"
_CHECKPOINT_KEYS = frozenset({"v", "entries", "offset", "head", "kept", "mac"})
_STORE_CHECKPOINT_LABEL = b"keysplit audit store checkpoint v1\x00"
_STORE_CHECKPOINT_KEYS = _CHECKPOINT_KEYS - {"offset"}
_MAX_CHECKPOINT = 16 << 20


def _canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _check_value(value: Any, where: str) -> Any:
    """Copy ``value`` into plain JSON types; refuse bytes, floats and anything exotic."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"audit field {where!r} is bytes: log names, fingerprints or hex ids, "
            "never key material"
        )
    if isinstance(value, (list, tuple)):
        return [_check_value(v, where) for v in value]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"audit field {where!r}: keys must be str")
            out[k] = _check_value(v, f"{where}.{k}")
        return out
    raise TypeError(f"audit field {where!r}: unsupported type {type(value).__name__}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def _reject_float(text: str) -> Any:
    raise ValueError("floats are not allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


@dataclass(frozen=True)
class AuditEntry:
    """One verified-parseable log entry. Holds no secrets."""

    seq: int
    time: str
    event: str
    data: Mapping[str, Any]
    prev: str
    mac: str | None
    hash: str = field(compare=False)


class AuditMark(NamedTuple):
    """A place in a log (:meth:`AuditLog.entries_since`): just after entry ``entries``,
    whose line hashes to ``head``; ``offset``: the byte offset after that line in a log
    file, None in the store's chain (counted in rows)."""

    entries: int
    head: str
    offset: int | None = None


@dataclass(frozen=True)
class AuditReport:
    """Result of a successful :meth:`AuditLog.verify`."""

    entries: int
    head: str
    mac_verified: bool
    anchored: bool


def _parse_line(line: bytes, seq: int) -> tuple[AuditEntry, dict[str, Any]]:
    """Strictly parse one line (without its newline); ``seq`` is its expected number."""
    try:
        obj = _json.loads(
            line,
            what=f"audit entry {seq}",
            max_bytes=_MAX_LINE,
            encoding="ascii",
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
            parse_float=_reject_float,
        )
    except FormatError:
        raise AuditError(f"entry {seq}: not a valid log line", seq=seq) from None
    if not isinstance(obj, dict):
        raise AuditError(f"entry {seq}: not a valid log line", seq=seq)
    keys = set(obj)
    if keys != _BODY_KEYS and keys != _BODY_KEYS | {"mac"}:
        raise AuditError(f"entry {seq}: unexpected or missing fields", seq=seq)
    if obj["v"] != VERSION:
        raise AuditError(f"entry {seq}: unsupported audit entry version {obj['v']!r}", seq=seq)
    if _canonical(obj) != line:
        raise AuditError(f"entry {seq}: not in canonical form (edited by hand?)", seq=seq)
    if (
        not isinstance(obj["seq"], int)
        or isinstance(obj["seq"], bool)
        or not isinstance(obj["time"], str)
        or not _TIME_RE.fullmatch(obj["time"])
        or not isinstance(obj["event"], str)
        or not _EVENT_RE.fullmatch(obj["event"])
        or not isinstance(obj["data"], dict)
        or not isinstance(obj["prev"], str)
        or not _HEX64_RE.fullmatch(obj["prev"])
        or ("mac" in obj and not (isinstance(obj["mac"], str) and _HEX64_RE.fullmatch(obj["mac"])))
    ):
        raise AuditError(f"entry {seq}: malformed field", seq=seq)
    entry = AuditEntry(
        seq=obj["seq"],
        time=obj["time"],
        event=obj["event"],
        data=obj["data"],
        prev=obj["prev"],
        mac=obj.get("mac"),
        hash=hashlib.sha256(line).hexdigest(),
    )
    return entry, obj


def _mac(key: bytes, body: Mapping[str, Any], label: bytes = _MAC_LABEL) -> str:
    return hmac.new(key, label + _canonical(body), hashlib.sha256).hexdigest()


def _mac_ok(key: bytes, entry: AuditEntry, obj: Mapping[str, Any]) -> bool:
    """Whether a parsed line carries a valid MAC under ``key`` (constant-time compare).

    The one MAC check, used by :meth:`AuditLog.verify` and before every append.
    """
    body = {k: v for k, v in obj.items() if k != "mac"}
    return entry.mac is not None and hmac.compare_digest(entry.mac, _mac(key, body))


class AuditLog:
    """An append-only, hash-chained audit log at ``path`` (created on first append).

    With ``mac_key`` (>= 16 bytes, e.g. derived by an unsealed keyring) every appended
    entry is MACed and :meth:`verify` requires a valid MAC on every entry.
    ``clock`` is a test seam returning an aware UTC ``datetime``.

    ``anchor``: a file that records the chain's head (entry count and hash, MACed), kept
    outside the log and rewritten after every keyed append; :meth:`verify`,
    :meth:`check_append` and every append refuse a log shorter than it or diverging from
    it (truncation or rollback of the log alone). ``anchor_required``: a missing anchor
    file is an error too (the keyring's authenticated metadata says it is anchored).

    ``checkpoint``: a file where :meth:`selected` keeps what it selected from the log so
    far (keyed logs only), so that the next call reads only the entries after it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mac_key: bytes | None = None,
        clock: Callable[[], datetime] | None = None,
        store: AuditStore | None = None,
        anchor: str | os.PathLike[str] | None = None,
        anchor_required: bool = False,
        checkpoint: str | os.PathLike[str] | None = None,
    ) -> None:
        if mac_key is not None:
            if not isinstance(mac_key, bytes):
                raise TypeError("mac_key must be bytes")
            if len(mac_key) < 16:
                raise ValueError("mac_key must be at least 16 bytes")
        self.path = Path(path)
        self.store = store
        self.anchor_path = Path(anchor) if anchor is not None else None
        self.checkpoint_path = Path(checkpoint) if checkpoint is not None else None
        self._anchor_required = anchor_required
        self._mac_key = mac_key
        self._clock = clock if clock is not None else (lambda: datetime.now(UTC))

    def __repr__(self) -> str:
        where = repr(self.store) if self.store is not None else repr(str(self.path))
        return f"AuditLog({where}, mac_key={'<set>' if self._mac_key else None})"

    # ------------------------------------------------------------------ reading

    def _read(self) -> bytes:
        if self.store is not None:
            return b"".join(line + b"\n" for line in self.store.audit_lines())
        try:
            fd = _open_log(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return b""
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # no append half-seen (a false torn line)
            return _read_exactly(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)

    def _scan(self, data: bytes, *, check: bool, first: int = 1) -> list[AuditEntry]:
        """The entries of ``data``, whose first line is entry ``first`` (``check``: from the
        log's start only)."""
        if not data:
            return []
        lines = data.split(b"\n")
        torn = lines.pop()  # b"" when the file ends with a newline
        entries: list[AuditEntry] = []
        prev = GENESIS
        for i, line in enumerate(lines):
            seq = i + first
            entry, obj = _parse_line(line, seq)
            if check:
                if self._mac_key is not None:
                    if entry.mac is None:
                        raise AuditError(f"entry {seq}: MAC missing", seq=seq)
                    if not _mac_ok(self._mac_key, entry, obj):
                        raise AuditError(
                            f"entry {seq}: MAC invalid (entry edited or log rewritten)",
                            seq=seq,
                            hint="check that the log belongs to this keyring",
                        )
                if entry.seq != seq:
                    raise AuditError(
                        f"entry {seq}: sequence number is {entry.seq} "
                        "(an entry was removed, inserted or reordered)",
                        seq=seq,
                    )
                if entry.prev != prev:
                    bad = max(seq - 1, 1)
                    raise AuditError(
                        f"entry {bad}: altered (its hash does not match the link in entry {seq})",
                        seq=bad,
                    )
            prev = entry.hash
            entries.append(entry)
        if torn:
            seq = len(lines) + first
            if _whole_entry(torn) is not None:
                raise AuditError(
                    f"entry {seq}: incomplete last line (only its newline is missing; "
                    "the entry itself is whole)",
                    seq=seq,
                    hint="if no ceremony is running, 'keysplit audit repair DIR' "
                    "(AuditLog.repair_torn_tail()) keeps it and adds the newline, once "
                    "the entry links to the chain (and its MAC checks)",
                )
            raise AuditError(
                f"entry {seq}: incomplete last line (torn write, e.g. a crash during append)",
                seq=seq,
                hint="if no ceremony is running, 'keysplit audit repair DIR' "
                "(AuditLog.repair_torn_tail()) drops the torn line",
            )
        return entries

    def entries(self) -> list[AuditEntry]:
        """All entries, parsed strictly but without checking the chain (see :meth:`verify`)."""
        return self._scan(self._read(), check=False)

    def entries_since(
        self, mark: AuditMark | None
    ) -> tuple[list[AuditEntry], AuditMark | None, bool]:
        """(the entries after ``mark``, the mark after the last entry read, whether they
        are only those after ``mark``).

        ``mark`` is one this method returned before (kept by the caller, e.g. in memory). It
        holds if the log still has its entry, whole, where it was (a file: ending at its byte
        offset; the store's chain: as row ``entries``), hashing to its ``head``: through the
        hash chain, the same entries before it. Then only what follows is read and parsed;
        otherwise (None, the log replaced, truncated or rewritten since, a store that cannot
        read part of its chain) every entry is returned, with False. Parsed as
        :meth:`entries` (no chain check)."""
        held, new, _, end = self._since(mark)
        return new, end, held is not None

    def _since(
        self, mark: AuditMark | None
    ) -> tuple[AuditMark | None, list[AuditEntry], list[bytes], AuditMark | None]:
        """(``mark`` if it holds else None, the entries after it (all if None), their
        lines, the mark after the last of them)."""
        if self.store is not None:
            store, lines = self.store, None
            if mark is not None and mark.offset is None and isinstance(store, RangedAuditStore):
                rows = store.audit_lines_from(mark.entries)
                if rows and hashlib.sha256(rows[0]).hexdigest() == mark.head:
                    lines = rows[1:]
            if lines is None:  # none, or the chain no longer has its entry: read it all
                mark, lines = None, store.audit_lines()
            data = b"".join(line + b"\n" for line in lines)
            offset = None
        else:
            try:
                fd = _open_log(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return None, [], [], None
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)  # no append half-seen
                size = os.fstat(fd).st_size
                if mark is not None and not _mark_holds(fd, size, mark):
                    mark = None
                start = 0 if mark is None or mark.offset is None else mark.offset
                data = _read_exactly(fd, size, start) if size > start else b""
            finally:
                os.close(fd)
            lines, offset = data.split(b"\n"), start + len(data)
        count = 0 if mark is None else mark.entries
        new = self._scan(data, check=False, first=count + 1)
        return mark, new, lines, AuditMark(count + len(new), new[-1].hash, offset) if new else mark

    def selected(self, keep: Callable[[list[AuditEntry]], list[AuditEntry]]) -> list[AuditEntry]:
        """``keep(self.entries())``, reading only the entries appended since the last call.

        ``keep`` picks the entries a caller needs from a log (a quorum's gap check: the
        first entry, open intents, ...); ``keep(keep(a) + b)`` must serve as
        ``keep(a + b)``. With a ``mac_key`` and a ``checkpoint`` file, what it kept is written
        there, MACed, with the :class:`AuditMark` after the last entry read; the next call
        takes it only if its MAC holds and the mark holds (:meth:`entries_since`), and then
        parses only what follows. Otherwise (no checkpoint, a forged, stale or foreign one,
        a store that cannot read part of its chain) the whole log is read, as
        :meth:`entries`. Entries before the checkpoint are not read again, so an edit of
        them is not seen here (nor was it by :meth:`entries`, which checks no chain):
        :meth:`verify` reads everything.
        """
        if self._mac_key is None or self.checkpoint_path is None:
            return keep(self.entries())
        if self.store is not None and not isinstance(self.store, RangedAuditStore):
            return keep(self.entries())
        mark, kept = self._checkpoint() or (None, [])
        held, new, lines, end = self._since(mark)
        if held is None:
            kept = []
        result = keep([e for e, _ in kept] + new)
        if new and end is not None:
            line_of = {id(e): line for e, line in kept}
            line_of.update(zip(map(id, new), lines, strict=False))
            self._put_checkpoint(end, [line_of[id(e)] for e in result])
        return result

    def _checkpoint(self) -> tuple[AuditMark, list[tuple[AuditEntry, bytes]]] | None:
        """(the mark, the kept entries with their lines) of the checkpoint file if it is of
        this log's form (a file's with ``offset``, the store chain's without, each under its
        own MAC label), its MAC holds and its fields are well formed, else None; the caller
        checks that the mark still holds."""
        assert self.checkpoint_path is not None and self._mac_key is not None
        in_store = self.store is not None
        keys = _STORE_CHECKPOINT_KEYS if in_store else _CHECKPOINT_KEYS
        label = _STORE_CHECKPOINT_LABEL if in_store else _CHECKPOINT_LABEL
        try:
            cfd = _open_log(self.checkpoint_path, os.O_RDONLY, what="audit checkpoint")
        except (OSError, AuditError):
            return None
        try:
            data = _read_exactly(cfd, min(os.fstat(cfd).st_size, _MAX_CHECKPOINT + 1))
        finally:
            os.close(cfd)
        try:
            obj = _json.loads(
                data, what="audit checkpoint", max_bytes=_MAX_CHECKPOINT, encoding="ascii"
            )
        except FormatError:
            return None
        if (
            not isinstance(obj, dict)
            or set(obj) != keys
            or obj["v"] != VERSION
            or not isinstance(obj["mac"], str)
            or not _HEX64_RE.fullmatch(obj["mac"])
        ):
            return None
        body = {k: v for k, v in obj.items() if k != "mac"}
        if not hmac.compare_digest(obj["mac"], _mac(self._mac_key, body, label)):
            return None  # forged, edited or another keyring's: read everything
        count, head, kept = obj["entries"], obj["head"], obj["kept"]
        offset = obj.get("offset")
        if (
            not isinstance(count, int)
            or isinstance(count, bool)
            or count <= 0
            or not (in_store or (isinstance(offset, int) and not isinstance(offset, bool)))
            or not isinstance(head, str)
            or not isinstance(kept, list)
            or not all(isinstance(line, str) for line in kept)
        ):
            return None
        try:
            raw = [line.encode("ascii") for line in kept]
            parsed = [(_parse_line(line, -1)[0], line) for line in raw]
        except (AuditError, UnicodeEncodeError):
            return None
        return AuditMark(count, head, offset), parsed

    def _put_checkpoint(self, end: AuditMark, kept: list[bytes]) -> None:
        """Record what :meth:`selected` kept (the lines) of the log up to ``end`` (best
        effort: without it the next call reads the whole log). The store chain's (no
        ``offset``) has another MAC label: neither form is ever taken for the other."""
        assert self.checkpoint_path is not None and self._mac_key is not None
        lines = [line.decode("ascii") for line in kept]
        body: dict[str, Any] = {"v": VERSION, "entries": end.entries, "head": end.head}
        body["kept"] = lines
        label = _STORE_CHECKPOINT_LABEL
        if end.offset is not None:
            body["offset"], label = end.offset, _CHECKPOINT_LABEL
        obj = dict(body, mac=_mac(self._mac_key, body, label))
        data = _canonical(obj)
        if len(data) > _MAX_CHECKPOINT:
            return
        with contextlib.suppress(OSError):
            atomic_write(self.checkpoint_path, data)

    def verify(self, *, anchor: str | None = None) -> AuditReport:
        """Check the whole log; raise :class:`AuditError` naming the first bad entry.

        Detects edited, removed, inserted, reordered and torn entries; with a ``mac_key``
        also a complete rewrite. ``anchor`` is a head printed earlier: the log must still
        contain that entry (catches truncation and rewrites back to it).
        """
        entries = self._scan(self._read(), check=True)
        head = entries[-1].hash if entries else GENESIS
        recorded = self._recorded()
        if recorded is not None:
            n, h = recorded
            self._check_anchor(len(entries), head, n, h)
            if 0 < n < len(entries) and entries[n - 1].hash != h:
                raise AuditError(
                    f"entry {n}: differs from the head recorded in {self.anchor_path} "
                    f"({h[:16]}...): the log was rewritten",
                    seq=n,
                    hint=_ANCHOR_HINT,
                )
        if anchor is not None:
            anchor = anchor.strip().lower()
            if anchor != GENESIS and all(e.hash != anchor for e in entries):
                raise AuditError(
                    "anchor not found: the log was rewritten or truncated since it was recorded"
                )
        return AuditReport(
            entries=len(entries),
            head=head,
            mac_verified=self._mac_key is not None,
            anchored=anchor is not None,
        )

    @property
    def head(self) -> str:
        """SHA-256 (hex) of the last entry, for out-of-band anchoring; GENESIS if empty."""
        return _last_entry_hash(self._read())

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def _locked(self) -> Iterator[tuple[int, bool]]:
        created = not os.path.lexists(self.path)
        fd = _open_log(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd, created
        finally:
            os.close(fd)  # releases the lock

    def _append_many(self, items: Sequence[tuple[str, Mapping[str, Any]]]) -> list[AuditEntry]:
        """Append several entries in order (a batch of per-subject entries) under one hold
        of the log's lock; the anchor is written once, after the last, under that lock too
        (so no other writer's longer head is overwritten by this batch's)."""
        prepared = [self._prepare(event, fields) for event, fields in items]
        if not prepared:
            return []
        return self._write_entries(prepared)

    def _append(self, event: str, /, **fields: Any) -> AuditEntry:
        """Private: entries are written through :func:`keysplit.audit.events.record`, so
        each name has its one field layout.

        Durably append one entry; return it.

        ``fields`` become the entry's ``data`` (str, int, bool, None, lists and str-keyed
        mappings of those). Raises :class:`AuditError` if the current last line is torn or
        (with a ``mac_key``) fails its MAC, so a broken chain is never extended silently.
        """
        return self._write_entries([self._prepare(event, fields)])[0]

    def _prepare(self, event: str, fields: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
        """(event, time stamp, data) of one entry to append, checked."""
        if not isinstance(event, str) or not _EVENT_RE.fullmatch(event):
            raise ValueError("event must match [a-z][a-z0-9_-]{0,39}")
        data = {k: _check_value(v, k) for k, v in fields.items()}
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("clock must return an aware datetime")
        return event, now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), data

    def _build(
        self, item: tuple[str, str, dict[str, Any]], last: tuple[bytes, bool] | None
    ) -> tuple[AuditEntry, bytes]:
        """The entry after ``last`` (the current last line) and its line."""
        event, stamp, data = item
        seq, prev = self._link(last)
        body: dict[str, Any] = {
            "v": VERSION,
            "seq": seq,
            "time": stamp,
            "event": event,
            "data": data,
            "prev": prev,
        }
        obj: dict[str, Any] = dict(body)
        if self._mac_key is not None:
            obj["mac"] = _mac(self._mac_key, body)
        line = _canonical(obj)
        if len(line) > _MAX_LINE:
            raise ValueError("audit entry too large")
        entry = AuditEntry(
            seq=seq,
            time=stamp,
            event=event,
            data=data,
            prev=prev,
            mac=obj.get("mac"),
            hash=hashlib.sha256(line).hexdigest(),
        )
        return entry, line

    def _store_append(self, item: tuple[str, str, dict[str, Any]]) -> AuditEntry:
        """Append one entry to the store's chain (its own transaction, under its lock)."""
        assert self.store is not None
        built: list[AuditEntry] = []

        def build(last: bytes | None) -> bytes:
            entry, line = self._build(item, None if last is None else (last, True))
            built.append(entry)
            return line

        self.store.audit_append(build)
        return built[-1]

    def _write_entries(self, items: Sequence[tuple[str, str, dict[str, Any]]]) -> list[AuditEntry]:
        """Append ``items`` in order and anchor the last one written, all under the log's
        lock (the store's chain: each entry in its own transaction, the anchor under
        :meth:`_anchor_lock`). An entry that cannot be built (too large) ends the batch:
        those before it are written and anchored, then the error is raised."""
        out: list[AuditEntry] = []
        if self.store is not None:
            try:
                for item in items:
                    out.append(self._store_append(item))
            finally:
                if out:
                    self._write_anchor(out[-1].seq, out[-1].hash, only_forward=True)
            return out
        if not os.path.lexists(self.path):
            self._link(None)  # a removed log is not re-created only to be refused
        with self._locked() as (fd, created):
            last = _read_last_line(fd)
            lines: list[bytes] = []
            try:
                for item in items:
                    entry, line = self._build(item, last)
                    out.append(entry)
                    lines.append(line + b"\n")
                    last = (line, True)
            finally:
                if lines:
                    durable_append(fd, b"".join(lines), name=self.path)
                    if created:
                        fsync_dir(self.path.parent)
                    # under the log's lock: the anchor is its head
                    self._write_anchor(out[-1].seq, out[-1].hash)
        return out

    def check_append(self) -> None:
        """Raise the :class:`AuditError` an append would raise now (a torn or unreadable last
        line; with a ``mac_key`` a last entry whose MAC is missing or wrong), writing nothing.

        A ceremony checks this before it changes anything, so that an entry it cannot
        append never fails it after the change is made (a rekey that switched reported as
        failed). Reads only the last line (the whole chain where a store keeps it that
        cannot read its last entry alone).
        """
        if isinstance(self.store, RangedAuditStore):
            last = self.store.audit_last()
            self._link(None if last is None else (last, True))
            return
        if self.store is not None:
            lines = self.store.audit_lines()
            self._link((lines[-1], True) if lines else None)
            return
        try:
            fd = _open_log(self.path, os.O_RDONLY)
        except FileNotFoundError:
            self._link(None)  # no log: fine, unless its anchor records entries
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            self._link(_read_last_line(fd))
        finally:
            os.close(fd)

    def _link(self, last: tuple[bytes, bool] | None) -> tuple[int, str]:
        """(seq, prev) of the entry after ``last``; refuses to extend a broken chain, or a
        chain shorter than (or diverging from) the head its anchor records."""
        seq, prev = self._link_last(last)
        recorded = self._recorded()
        if recorded is not None:
            self._check_anchor(seq - 1, prev, *recorded)
        return seq, prev

    def _link_last(self, last: tuple[bytes, bool] | None) -> tuple[int, str]:
        if last is None:
            return 1, GENESIS
        line, complete = last
        if not complete:
            raise AuditError(
                "audit log ends in a torn line; refusing to append",
                hint="'keysplit audit repair DIR' (AuditLog.repair_torn_tail()) drops it",
            )
        try:
            entry, obj = _parse_line(line, -1)
        except AuditError:
            raise AuditError(
                "audit log: last entry is unreadable; refusing to append",
                hint="run verify on the log",
            ) from None
        if self._mac_key is not None:
            if not _mac_ok(self._mac_key, entry, obj):
                raise AuditError(
                    f"entry {entry.seq}: MAC missing or invalid; refusing to append",
                    seq=entry.seq,
                )
        elif entry.mac is not None:
            raise AuditError(
                "audit log is MAC-protected; appending needs its MAC key",
                hint="append while the keyring is unsealed",
            )
        return entry.seq + 1, entry.hash

    # ------------------------------------------------------------------ the anchor

    def _recorded(self) -> tuple[int, str] | None:
        """(entries, head) the anchor file records; None without one (not required)."""
        path = self.anchor_path
        if path is None:
            return None
        try:
            fd = _open_log(path, os.O_RDONLY, what="audit anchor")
        except FileNotFoundError:
            if not self._anchor_required:
                return None
            raise AuditError(
                f"audit anchor {path} is missing, though the keyring records that its log is "
                "anchored: the log and its anchor were removed or replaced",
                hint=_ANCHOR_HINT,
            ) from None
        try:
            size = os.fstat(fd).st_size
            data = _read_exactly(fd, min(size, _MAX_ANCHOR + 1))
        finally:
            os.close(fd)
        bad = AuditError(f"audit anchor {path} is not a valid anchor", hint=_ANCHOR_HINT)
        try:
            obj = _json.loads(data, what="audit anchor", max_bytes=_MAX_ANCHOR, encoding="ascii")
        except FormatError:
            raise bad from None
        if (
            not isinstance(obj, dict)
            or set(obj) != _ANCHOR_KEYS
            or obj["v"] != VERSION
            or isinstance(obj["entries"], bool)
            or not isinstance(obj["entries"], int)
            or obj["entries"] < 0
            or not isinstance(obj["head"], str)
            or not _HEX64_RE.fullmatch(obj["head"])
            or not isinstance(obj["mac"], str)
            or not _HEX64_RE.fullmatch(obj["mac"])
            or _canonical(obj) != data
        ):
            raise bad
        if self._mac_key is not None:
            body = {k: v for k, v in obj.items() if k != "mac"}
            want = _mac(self._mac_key, body, _ANCHOR_LABEL)
            if not hmac.compare_digest(obj["mac"], want):
                raise AuditError(
                    f"audit anchor {path}: MAC invalid (edited, or another keyring's)",
                    hint=_ANCHOR_HINT,
                )
        return obj["entries"], obj["head"]

    def _check_anchor(self, count: int, head: str, n: int, h: str) -> None:
        """Refuse a log of ``count`` entries ending in ``head`` that is shorter than the
        anchored ``n`` entries, or as long but with another head."""
        if count < n or (count == n and head != h):
            raise AuditError(
                f"audit log {self.path} has {count} entries (head {head[:16]}...) but "
                f"{self.anchor_path} records {n} (head {h[:16]}...): the log was truncated "
                "or rolled back",
                hint=_ANCHOR_HINT,
            )

    def _write_anchor(
        self, entries: int, head: str, *, only_forward: bool = False, strict: bool = False
    ) -> None:
        """Record the chain's head in the anchor file (keyed logs only). ``only_forward``:
        never replace a longer recorded chain (the store's chain, appended by other
        processes without the log file's lock): the check and the write are made under
        :meth:`_anchor_lock`, so two such writers never put a shorter head last."""
        if self.anchor_path is None or self._mac_key is None:
            return
        if not only_forward:
            self._put_anchor(entries, head, strict=strict)
            return
        with self._anchor_lock():
            with contextlib.suppress(AuditError):
                recorded = self._recorded()
                if recorded is not None and recorded[0] >= entries:
                    return
            self._put_anchor(entries, head, strict=strict)

    @contextlib.contextmanager
    def _anchor_lock(self) -> Iterator[None]:
        """An exclusive ``flock`` on the anchor's directory: serializes the store chain's
        anchor writers on this host (the log file's lock serializes the file chain's)."""
        assert self.anchor_path is not None
        try:
            fd = os.open(self.anchor_path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            yield  # no directory: the write below fails (ignored after an append)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _put_anchor(self, entries: int, head: str, *, strict: bool) -> None:
        assert self.anchor_path is not None and self._mac_key is not None
        body = {"v": VERSION, "entries": entries, "head": head}
        obj = dict(body, mac=_mac(self._mac_key, body, _ANCHOR_LABEL))
        try:
            atomic_write(self.anchor_path, _canonical(obj))
        except OSError:
            # after an append the entry is durable already: a failed write (a full disk)
            # must not fail the ceremony after the fact; the previous anchor (a shorter
            # chain) still holds. ``strict`` (write_anchor) raises: nothing rests on it yet
            if strict:
                raise

    def write_anchor(self) -> None:
        """Anchor the chain as it is now (a keyring's creation: the empty log); needs the
        MAC key. Verifies the whole chain first, so only a valid head is ever recorded."""
        if self._mac_key is None:
            raise AuditError("writing the audit anchor needs the log's MAC key")
        if self.store is not None or not os.path.lexists(self.path):
            entries = self._scan(self._read(), check=True)
            head = entries[-1].hash if entries else GENESIS
            self._write_anchor(len(entries), head, strict=True)
            return
        with self._locked() as (fd, _):
            entries = self._scan(_read_exactly(fd, os.fstat(fd).st_size), check=True)
            head = entries[-1].hash if entries else GENESIS
            self._write_anchor(len(entries), head, strict=True)

    def repair_torn_tail(self) -> bool:
        """Repair a last line without its newline (a crash mid-append); True if repaired.

        See :meth:`repair_tail`, which also says how.
        """
        return self.repair_tail() is not None

    def repair_tail(self) -> str | None:
        """Repair a last line that lacks its newline: ``"dropped"``, ``"completed"`` or None.

        A torn write (a prefix of an entry) is dropped: only the bytes after the last
        newline go. A whole entry that lacks only its newline (the write stopped just before
        it) is kept and its newline added ("completed"), provided it links to the chain (its
        ``seq`` and ``prev`` follow the entry before it) and, with a ``mac_key``, its MAC
        checks: such an entry may record a ceremony that took effect, so dropping it would
        erase that record. A whole entry that does not link or whose MAC fails is no torn
        write but an edit: :class:`AuditError`, nothing changed. Complete entries are never
        touched. A chain kept in the store has no torn lines (each entry is one committed row).
        """
        if self.store is not None or not os.path.lexists(self.path):
            return None
        with self._locked() as (fd, _):
            size = os.fstat(fd).st_size
            last = _read_last_line(fd)
            if last is None or last[1]:
                return None
            tail = last[0]
            if self._keep_tail(tail, _read_last_line(fd, size - len(tail))):
                durable_append(fd, b"\n", name=self.path)
                return "completed"
            os.ftruncate(fd, size - len(tail))
            fsync_fd(fd)
            return "dropped"

    def _keep_tail(self, tail: bytes, before: tuple[bytes, bool] | None) -> bool:
        """Whether an unterminated last line is a whole entry that follows ``before`` (the
        line before it); False for a torn write; AuditError for a whole entry that does not
        belong (edited, or its MAC fails)."""
        found = _whole_entry(tail)
        if found is None:
            return False
        entry, obj = found
        seq, prev = 1, GENESIS
        if before is not None:
            try:
                prev_entry, _ = _parse_line(before[0], -1)
            except AuditError:
                raise AuditError(
                    "audit log: the entry before the unterminated last line is unreadable; "
                    "refusing to repair",
                    hint="run verify on the log",
                ) from None
            seq, prev = prev_entry.seq + 1, prev_entry.hash
        if entry.seq != seq or entry.prev != prev:
            raise AuditError(
                f"entry {seq}: the unterminated last line is a whole entry that does not "
                "follow the one before it (edited, not torn); refusing to repair",
                seq=seq,
                hint="inspect it ('keysplit audit show DIR'); the log may have been altered",
            )
        if self._mac_key is not None and not _mac_ok(self._mac_key, entry, obj):
            raise AuditError(
                f"entry {seq}: the unterminated last line is a whole entry whose MAC is "
                "missing or invalid (edited, not torn); refusing to repair",
                seq=seq,
                hint="check that the log belongs to this keyring",
            )
        return True


_ANCHOR_HINT = (
    "restore the log and its anchor (audit.anchor) together from a backup; compare with a "
    "head written down earlier ('keysplit audit verify --anchor HEAD')"
)


def _not_regular(path: Path, mode: int, what: str = "audit log") -> AuditError:
    return AuditError(
        f"{what} {path} is {kind_of(mode)}, not a regular file; refusing to use it",
        hint="the log is a regular file in the keyring directory: move this away and "
        "put the keyring's log back (from a backup if need be)",
    )


def _open_log(path: Path, flags: int, *, what: str = "audit log") -> int:
    """A descriptor on the log file, refused (:class:`AuditError`) unless it is a regular
    file: a FIFO or a device (``/dev/zero``) put in its place, directly or by a symbolic
    link, would block the ceremony or never end its read. The final component is never
    followed (``O_NOFOLLOW``), a FIFO's open never waits for a writer (``O_NONBLOCK``), and
    the type is checked on the open descriptor (``fstat``), so a swap between the ``lstat``
    (which spares opening a device at all) and the open is caught too.
    ``FileNotFoundError`` if there is no log (and ``flags`` does not create it).
    """
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode, what)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # made a link since the lstat
            raise _not_regular(path, stat.S_IFLNK, what) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode, what)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_exactly(fd: int, size: int, start: int = 0) -> bytes:
    """The bytes ``start`` to ``size`` of a regular file (its size when locked): never more."""
    parts: list[bytes] = []
    pos = start
    while pos < size:
        chunk = os.pread(fd, min(size - pos, 1 << 20), pos)
        if not chunk:
            break
        parts.append(chunk)
        pos += len(chunk)
    return b"".join(parts)


def _last_entry_hash(data: bytes) -> str:
    end = data.rfind(b"\n")
    if end < 0:
        return GENESIS
    start = data.rfind(b"\n", 0, end) + 1
    return hashlib.sha256(data[start:end]).hexdigest()


def _whole_entry(line: bytes) -> tuple[AuditEntry, dict[str, Any]] | None:
    """``line`` parsed if it is a whole entry (no strict prefix of one ever parses: the
    object closes at its last byte), else None."""
    try:
        return _parse_line(line, -1)
    except AuditError:
        return None


def _mark_holds(fd: int, size: int, mark: AuditMark) -> bool:
    """Whether the log file open at ``fd`` (``size`` bytes) still has ``mark``'s entry,
    whole, ending at its offset."""
    if mark.offset is None or not 0 < mark.entries <= mark.offset <= size:
        return False
    last = _read_last_line(fd, mark.offset)
    return last is not None and last[1] and hashlib.sha256(last[0]).hexdigest() == mark.head


def _read_last_line(fd: int, end: int | None = None) -> tuple[bytes, bool] | None:
    """The last line of the file (or of its first ``end`` bytes), without newline, and
    whether it was newline-terminated.

    Reads backwards in blocks, so appends stay cheap however long the log grows.
    """
    size = os.fstat(fd).st_size if end is None else end
    if size == 0:
        return None
    block = 4096
    tail = b""
    pos = size
    while pos > 0:
        step = min(block, pos)
        pos -= step
        tail = os.pread(fd, step, pos) + tail
        body = tail[:-1] if tail.endswith(b"\n") else tail
        cut = body.rfind(b"\n")
        if cut >= 0:
            return body[cut + 1 :], tail.endswith(b"\n")
        if len(tail) > _MAX_LINE + 1:
            raise AuditError("audit log: last line too long")
    body = tail[:-1] if tail.endswith(b"\n") else tail
    return body, tail.endswith(b"\n")
