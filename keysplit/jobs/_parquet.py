"""Dataset jobs on Parquet without pandas: a plan of bounded parts, and one part's task.

``encrypt_dataset``/``decrypt_dataset`` went through Dask DataFrames: a partition per
input file, pandas conversions both ways and ``Table.from_pandas`` on write. At 10^5 rows
in 8 files on one worker that job ran at 0.40x of pandas + ``encrypt_many`` in one process
(issue 23), because every per-subject step of the record engine (key lookup, AAD tail,
grouping) ran once per partition and subject, i.e. 8 times for a dataset whose subjects
occur in every file, and the conversions copied every value twice more.

So the job's driver child plans the parts itself (:func:`plan`): the row groups of every
file, packed in order into ``max(ceil(bytes / part_bytes), slots)`` parts of about equal
in-memory size (``slots``: the cluster's worker threads), so a part stays bounded while
each worker thread gets one large part rather than many small ones. A worker's task
(:func:`run_part`) reads its row groups with pyarrow, seals or opens the one column with
the job's record engine, subject by subject in batches of keys fetched while the previous
batch is sealed (each subject in exactly one ``encrypt_many``/``decrypt_many`` call;
values and subjects taken from Arrow as Python objects once; grouping, nulls and the
UTF-8 check are Arrow column operations), replaces that column and writes the part
through the one durable writer. Only the row count goes back. The part size is the
driver's choice (:func:`keysplit.jobs.records.part_bytes`: as large as the workers'
memory allows, since the engine's per-subject work is paid once per part).

Parquet metadata: every output part carries the dataset schema's metadata with the
``keysplit`` entry (sealed columns and their original types: ``sealed`` says "str" or
"bytes", ``arrow`` the column's own Arrow type where it is not plain ``string`` or
``binary``, e.g. ``large_string``, ``fixed_size_binary:16``, ``dictionary:string``,
``dictionary:int8:string`` (a dictionary's index type where it is not int32; an ordered
dictionary is refused: its order would need its values), ``null``, which decrypting casts
back to) and pandas' column entry
of the changed column made to match its new type (a sealed column is ``bytes`` to pandas;
without this pandas would decode ciphertext as text); sealing keeps the original pandas
entry in the ``keysplit`` entry so decrypting restores it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .. import _json
from .._fileio import atomic_writer
from ..errors import FormatError, KeysplitError
from ..keyring import DataKeys
from ..keyring.records import Records
from ..record import MAGIC
from ._cache import job_records

__all__ = [
    "META_KEY",
    "PartSpec",
    "Plan",
    "column_type",
    "output_metadata",
    "plan",
    "run_part",
    "sealed_types",
]

META_KEY = b"keysplit"
_PANDAS_KEY = b"pandas"
_BYTES_ENTRY = ("bytes", "object")  # what pandas writes for a column of bytes
_STR_ENTRY = ("unicode", "object")  # a str column, when the original entry is unknown

Piece = tuple[str, tuple[int, ...], Any]
"""(file path, row group ids, hive partition expression or None)."""


@dataclass(frozen=True)
class Plan:
    """A dataset cut into parts: the schema every part is read with, each part's pieces."""

    schema: pa.Schema
    parts: list[list[Piece]]
    rows: int


def _natural(path: str) -> list[Any]:
    """Sort key: ``part.10`` after ``part.9`` (Dask's order of a dataset's files)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def _dataset(src: str) -> pads.Dataset:
    try:
        return pads.dataset(src, format="parquet", partitioning="hive")
    except (OSError, pa.ArrowInvalid) as exc:
        raise KeysplitError(f"cannot read the Parquet dataset {src}: {exc}") from None


def plan(src: str, slots: int, part_bytes: int) -> Plan:
    """Cut dataset ``src`` into parts (see the module docstring): in file and row-group
    order, at most about ``part_bytes`` each (uncompressed), at least ``slots`` of them
    where there are as many row groups. A row group is never split here (a part holding
    one larger than ``part_bytes`` is read in slices: :func:`run_part`)."""
    ds = _dataset(src)
    frags = sorted(ds.get_fragments(), key=lambda f: _natural(f.path))
    if not frags:
        raise KeysplitError(f"no Parquet files in {src}")
    units: list[tuple[str, int, int, Any]] = []  # (path, row group, bytes, partition)
    rows = 0
    for f in frags:
        expr = f.partition_expression
        hive = None if expr.equals(pads.scalar(True)) else expr
        try:
            groups = f.row_groups  # reads the file's footer
        except (OSError, pa.ArrowInvalid) as exc:
            raise KeysplitError(f"cannot read the Parquet file {f.path}: {exc}") from None
        for rg in groups:
            units.append((f.path, rg.id, max(1, rg.total_byte_size), hive))
            rows += rg.num_rows
    if not units:  # only empty files: one empty part keeps the schema
        f = frags[0]
        return Plan(ds.schema, [[(f.path, (), None)]], 0)
    total = sum(u[2] for u in units)
    count = min(len(units), max(math.ceil(total / max(1, part_bytes)), slots, 1))
    target = total / count
    parts: list[list[Piece]] = [[] for _ in range(count)]
    before = 0
    for path, rg, size, hive in units:
        # by the unit's midpoint: parts of about equal size, files and row groups in order
        k = min(count - 1, int((before + size / 2) / target))
        before += size
        pieces = parts[k]
        if pieces and pieces[-1][0] == path and pieces[-1][2] is hive:
            pieces[-1] = (path, (*pieces[-1][1], rg), hive)
        else:
            pieces.append((path, (rg,), hive))
    return Plan(ds.schema, [p for p in parts if p], rows)


_PLAIN_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "large_string": pa.large_string(),
    "string_view": pa.string_view(),
    "binary": pa.binary(),
    "large_binary": pa.large_binary(),
    "binary_view": pa.binary_view(),
    "null": pa.null(),
}
_FIXED = re.compile(r"fixed_size_binary:([1-9][0-9]{0,9})")
_INDEX_TYPES: dict[str, pa.DataType] = {
    str(t): t
    for t in (pa.int8(), pa.int16(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64())
}
"""A dictionary's index types other than int32 (the default, untagged): pandas writes a
categorical's codes as int8 or int16, and decrypting gave them back as int32."""


def _type_tag(t: pa.DataType) -> str | None:
    """How a sealed column's own Arrow type is recorded (None: plain string or binary)."""
    if pa.types.is_dictionary(t):
        inner = _type_tag(t.value_type) or str(t.value_type)
        known = (inner in _PLAIN_TYPES and inner != "null") or _FIXED.fullmatch(inner)
        index = "" if t.index_type == pa.int32() else f"{t.index_type}:"
        if not known or (index and index[:-1] not in _INDEX_TYPES):
            return None
        return f"dictionary:{index}{inner}"
    if pa.types.is_fixed_size_binary(t):
        return f"fixed_size_binary:{t.byte_width}"
    tag = next((k for k, v in _PLAIN_TYPES.items() if v == t), None)
    return None if tag in ("string", "binary") else tag


def _tag_type(tag: object) -> pa.DataType:
    """The Arrow type a tag of :func:`_type_tag` names (FormatError for anything else)."""
    if isinstance(tag, str):
        dictionary = tag.startswith("dictionary:")
        inner = tag.removeprefix("dictionary:")
        index = pa.int32()
        if dictionary:  # "dictionary:[INDEX:]VALUE" (before: the value type only)
            head, _, rest = inner.partition(":")
            if head in _INDEX_TYPES:
                index, inner = _INDEX_TYPES[head], rest
        fixed = _FIXED.fullmatch(inner)
        t = pa.binary(int(fixed.group(1))) if fixed and int(fixed.group(1)) < 1 << 31 else None
        t = t or _PLAIN_TYPES.get(inner)
        if t is not None and not (dictionary and pa.types.is_null(t)):
            return pa.dictionary(index, t) if dictionary else t
    raise FormatError("malformed keysplit Parquet metadata")


def original_type(schema: pa.Schema, column: str) -> pa.DataType | None:
    """The Arrow type ``column`` had before it was sealed, if not plain string or binary."""
    tag = _keysplit_doc(schema)["arrow"].get(column)
    return None if tag is None else _tag_type(tag)


def sealed_types(schema: pa.Schema) -> dict[str, str]:
    """The original types of a dataset's sealed columns (column -> "str" or "bytes"), from
    the schema metadata the jobs write."""
    return dict(_keysplit_doc(schema)["sealed"])


def _keysplit_doc(schema: pa.Schema) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        return {"v": 1, "sealed": {}, "pandas": {}, "arrow": {}}
    bad = FormatError("malformed keysplit Parquet metadata")
    try:
        doc = _json.loads(raw, what="keysplit Parquet metadata", max_bytes=1 << 20)
        sealed, entries, arrow = doc["sealed"], doc.get("pandas", {}), doc.get("arrow", {})
        version = doc.get("v", 1)
    except (KeyError, TypeError, AttributeError):
        raise bad from None
    if version != 1 or isinstance(version, bool):  # a later format: never read as this one
        raise FormatError(
            f"unsupported keysplit Parquet metadata version {version!r} (this keysplit reads 1)"
        )
    if not isinstance(sealed, dict) or not all(
        isinstance(k, str) and v in ("str", "bytes") for k, v in sealed.items()
    ):
        raise bad
    if not isinstance(entries, dict) or not all(
        isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v)
        for v in entries.values()
    ):
        raise bad
    if not isinstance(arrow, dict) or not all(k in sealed for k in arrow):
        raise bad
    for tag in arrow.values():
        _tag_type(tag)
    return {"v": 1, "sealed": sealed, "pandas": entries, "arrow": arrow}


def column_type(schema: pa.Schema, column: str) -> str:
    """ "str" or "bytes": how ``column`` is stored (what decrypting it gives back)."""
    if column not in schema.names:
        raise KeysplitError(f"no column {column!r} in the dataset")
    t = schema.field(column).type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "str"
    return "bytes"


def _pandas_entry(doc: dict[str, Any], column: str) -> dict[str, Any] | None:
    columns = doc.get("columns")
    for entry in columns if isinstance(columns, list) else ():  # a hint: never trusted
        if isinstance(entry, dict) and entry.get("field_name", entry.get("name")) == column:
            return entry
    return None


def output_metadata(
    schema: pa.Schema, kind: str, column: str, subject_column: str
) -> dict[bytes, bytes]:
    """The schema metadata of the parts a job writes: ``kind`` "encrypt" seals ``column``
    (an error if it is sealed already), "decrypt" opens it (see the module docstring)."""
    for c in (column, subject_column):
        if c not in schema.names:
            raise KeysplitError(f"no column {c!r} in the dataset")
    meta = dict(schema.metadata or {})
    doc = _keysplit_doc(schema)
    sealed: dict[str, str] = doc["sealed"]
    entries: dict[str, list[str]] = doc["pandas"]
    arrow: dict[str, str] = doc["arrow"]
    pandas_doc = None
    if _PANDAS_KEY in meta:
        raw = meta[_PANDAS_KEY]
        try:  # depth-bounded (json.loads: RecursionError); NaN read as pandas writes it
            pandas_doc = _json.loads(
                raw, what="pandas metadata", max_bytes=len(raw), parse_constant=float
            )
        except FormatError:
            pandas_doc = None
    entry = _pandas_entry(pandas_doc, column) if isinstance(pandas_doc, dict) else None
    if kind == "encrypt":
        if column in sealed:
            raise KeysplitError(f"column {column!r} of the dataset is already sealed")
        sealed[column] = column_type(schema, column)
        t = schema.field(column).type
        if pa.types.is_dictionary(t) and t.ordered:
            raise KeysplitError(
                f"column {column!r} is an ordered dictionary (an ordered categorical): its "
                "category order could not be restored without keeping its values in the "
                "clear",
                hint="cast it to plain string or binary (or unordered) before sealing it",
            )
        tag = _type_tag(t)
        if tag is not None:
            arrow[column] = tag
        if entry is not None:
            entries[column] = [str(entry.get("pandas_type")), str(entry.get("numpy_type"))]
            entry["pandas_type"], entry["numpy_type"] = _BYTES_ENTRY
    else:
        was = sealed.pop(column, None)
        back = entries.pop(column, None)
        arrow.pop(column, None)
        if entry is not None and was is not None:
            if back is None:
                back = list(_STR_ENTRY if was == "str" else _BYTES_ENTRY)
            entry["pandas_type"], entry["numpy_type"] = back
    if entry is not None:
        meta[_PANDAS_KEY] = json.dumps(pandas_doc).encode()
    if sealed:
        doc = {
            "v": 1,
            "sealed": sealed,
            **({"pandas": entries} if entries else {}),
            **({"arrow": arrow} if arrow else {}),
        }
        meta[META_KEY] = json.dumps(doc, sort_keys=True).encode()
    else:
        meta.pop(META_KEY, None)
    return meta


@dataclass(frozen=True)
class PartSpec:
    """What every part task of one job gets (picklable: names, the key source, metadata)."""

    kind: str  # "encrypt" | "decrypt"
    column: str
    subject_column: str
    source: DataKeys
    context: Mapping[str, str] | None
    text: bool
    job_id: str
    schema: pa.Schema
    metadata: Mapping[bytes, bytes]
    restore: pa.DataType | None = None  # decrypt: the column's own type (original_type)
    part_bytes: int = 64 << 20  # the plan's part size: a larger row group is read in slices


def _read(pieces: list[Piece], schema: pa.Schema) -> pa.Table:
    """The part's rows in the dataset's schema; a file that cannot be read in it (another
    column type than the dataset's first file, a damaged file) is a KeysplitError naming it."""
    fmt, fs = pads.ParquetFileFormat(), pafs.LocalFileSystem()
    tables = []
    for path, groups, hive in pieces:
        try:
            tables.append(fmt.make_fragment(path, fs, hive, list(groups)).to_table(schema=schema))
        except (OSError, pa.ArrowException) as exc:
            raise KeysplitError(f"cannot read the Parquet file {path}: {exc}") from None
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


_READ_BUFFER = 1 << 20  # a sliced row group's column chunks are read in pieces of this


def _sizes(pieces: list[Piece]) -> dict[tuple[str, int], tuple[int, int]]:
    """(bytes, rows) of each row group of ``pieces``, from the files' footers."""
    out = {}
    for path, groups, _ in pieces:
        try:
            meta = pq.ParquetFile(path).metadata
        except (OSError, pa.ArrowException) as exc:
            raise KeysplitError(f"cannot read the Parquet file {path}: {exc}") from None
        for rg in groups:
            g = meta.row_group(rg)
            out[path, rg] = (g.total_byte_size, g.num_rows)
    return out


def _conform(batch: pa.RecordBatch, schema: pa.Schema, hive: Any, path: str) -> pa.Table:
    """A batch read straight from a file, in the dataset's schema (its hive partition
    columns added, each column cast), as the dataset reader gives it."""
    keys = {} if hive is None else pads.get_partition_keys(hive)
    n, cols = batch.num_rows, []
    try:
        for field in schema:
            if field.name in batch.schema.names:
                col = batch.column(field.name)
            elif field.name in keys:
                col = pa.array([keys[field.name]] * n)
            else:
                col = pa.nulls(n)
            cols.append(col if col.type == field.type else col.cast(field.type))
        return pa.Table.from_arrays(cols, schema=schema)
    except pa.ArrowException as exc:
        raise KeysplitError(f"cannot read the Parquet file {path}: {exc}") from None


def _read_slices(pieces: list[Piece], schema: pa.Schema, limit: int) -> Iterator[pa.Table]:
    """The part's rows as tables of about ``limit`` bytes or less: the whole part at once
    (:func:`_read`) unless one of its row groups is larger than ``limit``; then row group by
    row group, a larger one in slices of about ``limit`` (``iter_batches``: decoded as it is
    read, column chunks read in pieces), so a worker's memory is bounded by the part size
    whatever the input's row groups. Always at least one table (an empty part: empty)."""
    sizes = _sizes(pieces)
    if all(size <= limit for size, _ in sizes.values()):
        yield _read(pieces, schema)
        return
    for path, groups, hive in pieces:
        for rg in groups:
            size, rows = sizes[path, rg]
            if size <= limit:
                yield _read([(path, (rg,), hive)], schema)
                continue
            step = max(1, rows * limit // max(1, size))
            try:
                pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=_READ_BUFFER)
                batches = pf.iter_batches(step, row_groups=[rg], use_pandas_metadata=False)
                for batch in batches:
                    yield _conform(batch, schema, hive, path)
            except (OSError, pa.ArrowException) as exc:
                raise KeysplitError(f"cannot read the Parquet file {path}: {exc}") from None


def _plain(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """``col`` without dictionary encoding, still in its chunks (one per file read: joining
    them copied the whole column, 0.37 s of a 10^6-row part on a worker), and a view type
    as its large type (Arrow has no filter or take kernels for views)."""
    if pa.types.is_dictionary(col.type):
        col = pa.chunked_array([c.dictionary_decode() for c in col.chunks], col.type.value_type)
    if pa.types.is_string_view(col.type):
        return col.cast(pa.large_string())
    if pa.types.is_binary_view(col.type):
        return col.cast(pa.large_binary())
    return col


def _is_str(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_bytes(t: pa.DataType) -> bool:
    return (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_binary_view(t)
    )


def null_subjects(subject_column: str, nulls: int, column: str, where: str = "") -> KeysplitError:
    """The error of rows whose value is to be sealed or opened but whose subject is null:
    never skipped (the value would stay in the clear) nor keyed under some other subject.
    ``where``: which part of a dataset, if any."""
    return KeysplitError(
        f"subject column {subject_column!r} is null in {nulls:,} row(s) with a value in "
        f"{column!r}{where}: subjects cannot be null (a row's value is sealed under its "
        "subject's key); nothing was written",
        hint="give those rows a subject, or drop them (a row whose value is null is left as "
        "it is, whatever its subject)",
    )


class _NullSubjects(KeysplitError):
    """A part's rows with a null subject (counted): :func:`run_part` names its files."""

    def __init__(self, nulls: int) -> None:
        super().__init__(f"{nulls} null subjects")
        self.nulls = nulls


def _null_subjects(table: pa.Table, spec: PartSpec) -> int:
    """The rows of ``table`` with a value in ``spec.column`` but a null subject, counted as
    :func:`_subjects` counts them (for the error's count over a part read in slices)."""
    col = _plain(table.column(spec.column))
    subjects = _plain(table.column(spec.subject_column))
    if col.null_count:
        subjects = subjects.filter(col.is_valid())
    return int(subjects.null_count)


def _subjects(table: pa.Table, name: str, valid: pa.ChunkedArray | None) -> pa.Array:
    """The part's subjects (of the rows with a value), checked: strings, none null."""
    col = _plain(table.column(name))
    if valid is not None:
        col = col.filter(valid)
    if len(col) and col.null_count:
        raise _NullSubjects(col.null_count)
    if len(col) and not _is_str(col.type):
        raise KeysplitError(f"subject column {name!r} must hold strings (it holds {col.type})")
    return col.combine_chunks()  # a few bytes a row: one array to encode


@dataclass(frozen=True)
class _Grouped:
    """A part's rows ordered by subject: ``order`` lists the row indices subject by subject
    (distinct subjects in first-seen order, each one's rows in row order), ``uniq`` the
    distinct subjects, ``ends[j]`` where subject ``j``'s rows end in ``order``;
    ``subjects`` is the subject of each position of ``order`` (one str object per distinct
    subject, repeated); ``order`` is None when the rows are grouped already."""

    uniq: list[str]
    ends: list[int]
    subjects: list[str]
    order: np.ndarray | None

    def key_batches(self) -> list[range]:
        """The engine calls of the part: :data:`KEY_BATCH` distinct subjects each (indices
        into ``uniq``), the unit both the key fetch and the sealing go by."""
        n = len(self.uniq)
        return [range(i, min(n, i + KEY_BATCH)) for i in range(0, n, KEY_BATCH)]


def _group(subjects: pa.Array) -> _Grouped:
    encoded = pc.dictionary_encode(subjects)  # first-seen order, in C
    codes = encoded.indices.to_numpy()
    uniq: list[str] = encoded.dictionary.to_pylist()
    counts = np.bincount(codes, minlength=len(uniq))
    grouped = len(uniq) == len(codes) or bool((np.diff(codes) >= 0).all())
    # already grouped (or all distinct): first-seen order is row order, no sort needed
    order = None if grouped else np.argsort(codes, kind="stable")
    repeated = itertools.chain.from_iterable(map(itertools.repeat, uniq, counts.tolist()))
    return _Grouped(uniq, np.cumsum(counts).tolist(), list(repeated), order)


def _spread(values: pa.Array, valid: pa.ChunkedArray | None) -> pa.Array:
    """``values`` (one per valid row) back at their rows, nulls elsewhere (a take)."""
    if valid is None:
        return values
    mask = valid.to_numpy()
    index = np.cumsum(mask, dtype=np.int64) - 1
    return values.take(pa.array(index, mask=~mask))


_MAX_OFFSET = (1 << 31) - 1  # a ``binary`` array's int32 offsets


_JOIN_TO_TAKE = 64 << 20
"""A column of at least this many bytes is joined into one array before a take
(:func:`_take`); a smaller one is taken from its chunks."""


def _take(values: pa.Array | pa.ChunkedArray, indices: np.ndarray) -> pa.Array | pa.ChunkedArray:
    """``values.take(indices)``; a large column from one contiguous array.

    pyarrow's take on a ChunkedArray is slow on many chunks: the two takes of a 10^6-row
    part (10^6 values of 256 bytes in 8 chunks, a part read from 8 files, into subject
    order; 25 chunks, one per key batch, back) took 2.1 to 3.4 s in a fresh process,
    joined first 0.3 to 0.4 s; they were 31 % of a 10^6-row job on a worker (issue 23).
    At 10^5 rows the job measured no faster with the join (three A/Bs), so only a column
    of :data:`_JOIN_TO_TAKE` or more is joined (the join is a transient copy of it). Past
    int32 offsets (2 GiB of ``binary``/``string``) the chunks are kept."""
    if (
        isinstance(values, pa.ChunkedArray)
        and values.num_chunks > 1
        and values.nbytes >= _JOIN_TO_TAKE
    ):
        t = values.type
        large = pa.types.is_large_binary(t) or pa.types.is_large_string(t)
        if large or values.nbytes <= _MAX_OFFSET:
            values = values.combine_chunks()
    return values.take(indices)


def _binary(values: list[bytes]) -> pa.Array | pa.ChunkedArray:
    """``values`` as one Arrow ``binary`` array: their bytes joined into one buffer, the
    offsets from their lengths. ``pa.array(values, pa.binary())`` copies value by value
    into a buffer it grows as it goes; on a worker that was 1.65 s of a 6.4 s job at 10^6
    records of 294 bytes (issue 23), the join and the offsets about 0.1 s. Past 2 GiB
    (int32 offsets) it is left to ``pa.array``, which then returns chunks."""
    n = len(values)
    lengths = np.fromiter(map(len, values), np.int64, n)
    if int(lengths.sum()) > _MAX_OFFSET:
        return pa.array(values, pa.binary())
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    data = pa.py_buffer(b"".join(values))
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), data])


KEY_BATCH = 4096
"""Subjects per key request of a part: the records of a batch's subjects are sealed while
the next batch is fetched (small enough that sealing starts early: a 10^5-row part of 10^4
subjects is three batches)."""


class _KeyFetch:
    """A part's keys fetched into the job's cache in a thread, :data:`KEY_BATCH` subjects
    at a time, while the part is sealed batch by batch (:meth:`wait` for batch ``b``).

    Asking for 10^5 keys from ``serve_keys`` takes 0.6 to 0.9 s (the keyring's export, the
    socket, deriving or looking up each key); asked in one request before sealing starts,
    that was a wait of 0.8 s in a 10^6-row part (issue 23). Errors are left to the engine
    call for the batch, which fetches again and raises them."""

    def __init__(self, records: Records, grouped: _Grouped, *, create: bool) -> None:
        uniq = grouped.uniq
        self._batches = [uniq[b.start : b.stop] for b in grouped.key_batches()]
        self._done = [threading.Event() for _ in self._batches]
        self._records, self._create = records, create
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="keysplit-job-keys", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for batch, done in zip(self._batches, self._done, strict=True):
            try:
                if not self._stop:
                    with contextlib.suppress(Exception):
                        self._records.keys(batch, create=self._create)
            finally:
                done.set()

    def wait(self, batch: int) -> None:
        self._done[batch].wait()

    def close(self) -> None:
        """Stop after the batch in flight (the part failed) and wait for the thread."""
        self._stop = True
        self._thread.join()


def _fetch(records: Records, grouped: _Grouped, spec: PartSpec) -> _KeyFetch | None:
    """The part's keys, fetched meanwhile where they are one batch per engine call
    (creating, or ASCII subjects; else the engine finds every spelling itself)."""
    encrypt = spec.kind == "encrypt"
    if encrypt or all(map(str.isascii, grouped.uniq)):
        return _KeyFetch(records, grouped, create=encrypt)
    return None


@contextlib.contextmanager
def subject_errors(subject_column: str) -> Iterator[None]:
    """The engine's ValueError for a subject no key can have (empty, NUL, too long) as a
    KeysplitError naming the column: a bare ValueError reached the caller of a computed
    column as a ValueError, and a cluster job's as ``error: ValueError``."""
    try:
        yield
    except ValueError as exc:
        if isinstance(exc, KeysplitError):  # a context or plaintext too large: not a subject's
            raise
        raise KeysplitError(f"subject column {subject_column!r}: {exc}") from None


def not_sealed(column: str, reason: str) -> FormatError:
    """A column to decrypt that holds no keysplit records: the record parser's bare "not
    a keysplit record (bad magic)" named neither the column nor the likely cause."""
    return FormatError(
        f"column {column!r}: {reason}",
        hint=f"column {column!r} does not look sealed: decrypt only a column that "
        "encrypt-dataset (or encrypt_column) sealed, and check the column's name",
    )


def _is_record(value: Any) -> bool:
    return isinstance(value, bytes | bytearray | memoryview) and bytes(value[:4]) == MAGIC


@contextlib.contextmanager
def record_errors(column: str, values: Sequence[Any]) -> Iterator[None]:
    """A decrypt's FormatError for values of ``column`` that are not keysplit records at
    all, named: none looks sealed, or some do not (a mixed or damaged column). Any other
    FormatError (a truncated record, a malformed reply) passes unchanged; ``values`` are
    looked at only on that error path."""
    try:
        yield
    except FormatError as exc:
        plain = sum(1 for v in values if not _is_record(v))
        if not plain:
            raise
        if plain == len(values):
            raise not_sealed(column, str(exc)) from None
        raise FormatError(
            f"column {column!r}: {exc}",
            hint=f"{plain} of {len(values)} values of column {column!r} here are not keysplit "
            "records (a column mixing sealed and plain values?): scan-dataset lists them",
        ) from None


def _seal(
    records: Records,
    grouped: _Grouped,
    values: pa.Array | pa.ChunkedArray,
    spec: PartSpec,
    fetch: _KeyFetch | None,
) -> pa.ChunkedArray:
    """The engine over the part's ``values`` (in ``grouped`` order), one call per
    :data:`KEY_BATCH` of its subjects (each subject in exactly one call: the engine's
    per-subject work is done once, as for one call), each once ``fetch`` has its keys.

    A batch's values become Python objects and its records an Arrow array just for its
    call, so the next batch's objects reuse that memory: made for the whole part (10^6
    rows), the values and records were about 700 MB of Python objects on fresh pages."""
    encrypt = spec.kind == "encrypt"
    engine = records.encrypt_many if encrypt else records.decrypt_many
    ends = grouped.ends
    chunks: list[pa.Array] = []
    for b, batch in enumerate(grouped.key_batches()):
        lo, hi = ends[batch.start - 1] if batch.start else 0, ends[batch.stop - 1]
        items = values.slice(lo, hi - lo).to_pylist()
        if fetch is not None:
            fetch.wait(b)
        named = contextlib.nullcontext() if encrypt else record_errors(spec.column, items)
        with subject_errors(spec.subject_column), named:  # plaintexts are no records
            sealed = engine(grouped.subjects[lo:hi], items, spec.context)
        out = _binary(sealed)
        del items
        chunks.extend(out.chunks if isinstance(out, pa.ChunkedArray) else [out])
    return pa.chunked_array(chunks, pa.binary())


def _transform(table: pa.Table, spec: PartSpec) -> pa.Table:
    """``table`` with ``spec.column`` sealed or opened.

    The part's rows are taken subject by subject (:func:`_group`, an Arrow ``take``), so
    its values become Python objects in that order and the engine, which seals a
    subject's records together, reads and writes memory in order: on a worker at 10^6
    rows, 10^5 subjects, building the output array from records made in the engine's
    order but joined in row order was 0.45 to 1.1 s (cache misses), in order 0.1 s; one
    ``take`` puts the output back in row order. The keys come in batches as sealing runs
    (:class:`_KeyFetch`). The column's type is checked first, so a column that cannot
    be sealed creates no key."""
    i = table.schema.get_field_index(spec.column)
    col = _plain(table.column(i))
    encrypt = spec.kind == "encrypt"
    valid = None if col.null_count == 0 else col.is_valid()
    if len(col) == col.null_count:
        out = pa.array([], pa.binary())
    else:
        if not (_is_bytes(col.type) or (encrypt and _is_str(col.type))):
            if encrypt:
                raise KeysplitError(f"cannot encrypt a column of type {col.type} (bytes or str)")
            raise not_sealed(spec.column, f"not a keysplit record (a {col.type} column)")
        grouped = _group(_subjects(table, spec.subject_column, valid))
        records = job_records(spec.source, spec.job_id)
        fetch = _fetch(records, grouped, spec)  # while the values become Python objects
        try:
            vals = col if valid is None else col.filter(valid)
            del col
            if encrypt and _is_str(vals.type):
                vals = vals.cast(pa.large_binary())  # the UTF-8 bytes, no copy per value
            if grouped.order is not None:
                vals = _take(vals, grouped.order)
            out = _seal(records, grouped, vals, spec, fetch)
            del vals
        finally:
            if fetch is not None:
                fetch.close()
        if grouped.order is not None:
            back = np.empty_like(grouped.order)
            back[grouped.order] = np.arange(len(back), dtype=back.dtype)
            out = _take(out, back)
    out_type = pa.string() if spec.kind == "decrypt" and spec.text else pa.binary()
    if out.type != out_type:
        try:
            out = out.cast(out_type)  # checks UTF-8 in one pass
        except pa.ArrowInvalid:
            raise KeysplitError("a decrypted value is not UTF-8 text (drop text=True)") from None
    column = _spread(out, valid)
    if spec.restore is not None and _is_str(out_type) == _is_str(_value_type(spec.restore)):
        column = _restored(column, spec.restore)
    old = table.schema.field(i)
    field = pa.field(spec.column, column.type, nullable=True, metadata=old.metadata)
    return table.set_column(i, field, column)


def _value_type(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def _restored(column: pa.Array | pa.ChunkedArray, to: pa.DataType) -> Any:
    """The opened column as the type it had before it was sealed (:func:`original_type`)."""
    try:
        if pa.types.is_null(to):
            if column.null_count != len(column):
                raise pa.ArrowInvalid("values in a column of nulls")
            return pa.nulls(len(column))
        return column.cast(to)
    except pa.ArrowException:
        raise KeysplitError(f"a decrypted value does not fit the column's type {to}") from None


def run_part(spec: PartSpec, pieces: list[Piece], path: str) -> int:
    """(Worker) Read one part, seal or open its column, write it to ``path`` (0600,
    durable); the number of rows written. A part is one table (the engine's per-subject
    work paid once) unless a row group of it exceeds ``spec.part_bytes``: then it is
    sealed and written slice by slice (:func:`_read_slices`), one row group or more each."""
    rows = 0
    writer: pq.ParquetWriter | None = None
    with atomic_writer(path, mode=0o600) as fh:
        try:
            slices = _read_slices(pieces, spec.schema, spec.part_bytes)
            for piece in slices:
                try:
                    table = _transform(piece, spec).replace_schema_metadata(dict(spec.metadata))
                except _NullSubjects as exc:
                    del piece
                    # the whole part's count, not the rows read so far: the slices left are
                    # read (one at a time) only to count theirs
                    nulls = exc.nulls + sum(_null_subjects(t, spec) for t in slices)
                    files = ", ".join(sorted({os.path.basename(p[0]) for p in pieces}))
                    where = f" among the rows read from {files}"
                    raise null_subjects(spec.subject_column, nulls, spec.column, where) from None
                if writer is None:
                    options = _write_options(table.schema, spec)
                    writer = pq.ParquetWriter(fh, table.schema, **options)
                elif table.schema != writer.schema:  # a slice all null: another column type
                    table = table.cast(writer.schema)
                writer.write_table(table)
                rows += table.num_rows
                del table, piece
        finally:  # also on a failed slice: else the writer's __del__ writes to a closed file
            if writer is not None:
                writer.close()
    return rows


def _write_options(schema: pa.Schema, spec: PartSpec) -> dict[str, Any]:
    """A sealed column is written plain: ciphertext does not compress, has no repeats for a
    dictionary and no useful min/max (at 10^5 records of 256 bytes, 38 ms of writing
    become 10 ms). Other columns keep pyarrow's defaults; so does every column of a
    schema with nested types (their Parquet column paths are not their names)."""
    nested = any(pa.types.is_nested(f.type) for f in schema)
    if spec.kind != "encrypt" or nested:
        return {}
    others = [n for n in schema.names if n != spec.column]
    return {
        "compression": {n: "snappy" for n in others} | {spec.column: "none"},
        "use_dictionary": others,
        "write_statistics": others,
    }
