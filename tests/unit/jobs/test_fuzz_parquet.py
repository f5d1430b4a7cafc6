"""Hypothesis red team of the schema metadata a dataset job reads from a Parquet file it
was given: keysplit's own entry (``b"keysplit"``: which columns are sealed, their types)
and pandas' (``b"pandas"``, a hint the jobs rewrite for the columns they seal or open).

Both come from a file, not from keysplit: whatever a hostile edit leaves there (a field
deleted, retyped, set to a bound, text that is not Unicode, nesting past any parser's
stack), reading it is a KeysplitError or an answer, never another exception.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tamper import dump_json, mutate_json

pa = pytest.importorskip("pyarrow")

from keysplit.errors import KeysplitError  # noqa: E402
from keysplit.jobs import _parquet as pq  # noqa: E402

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_SCHEMA = pa.schema(
    [("subject", pa.string()), ("data", pa.binary()), ("tag", pa.binary(4)), ("n", pa.int64())]
)
_PANDAS: dict[str, Any] = {
    "index_columns": [{"kind": "range", "name": None, "start": 0, "stop": 2, "step": 1}],
    "columns": [
        {"name": c, "field_name": c, "pandas_type": p, "numpy_type": "object", "metadata": None}
        for c, p in (("subject", "unicode"), ("data", "bytes"), ("tag", "bytes"), ("n", "int64"))
    ],
    "pandas_version": "2.2.0",
}
_KEYSPLIT: dict[str, Any] = {
    "v": 1,
    "sealed": {"data": "bytes", "tag": "bytes"},
    "pandas": {"data": ["bytes", "object"]},
    "arrow": {"tag": "fixed_size_binary:4"},
}


def _read_all(schema: Any) -> None:
    pq.sealed_types(schema)
    for column in ("data", "tag"):
        pq.original_type(schema, column)
        for kind in ("encrypt", "decrypt"):
            with contextlib.suppress(KeysplitError):
                pq.output_metadata(schema, kind, column, "subject")


@FUZZ
@given(st.data())
def test_edited_schema_metadata_is_read_or_refused(data: st.DataObject) -> None:
    meta = {b"keysplit": dump_json(_KEYSPLIT), b"pandas": dump_json(_PANDAS)}
    key = data.draw(st.sampled_from([b"keysplit", b"pandas"]))
    original = _KEYSPLIT if key == b"keysplit" else _PANDAS
    meta[key] = dump_json(mutate_json(original, data.draw, 3))
    with contextlib.suppress(KeysplitError):
        _read_all(_SCHEMA.with_metadata(meta))


@pytest.mark.parametrize("kind", ["encrypt", "decrypt"])
def test_pandas_metadata_nested_past_the_stack_is_ignored(kind: str) -> None:
    """pandas' metadata is a hint, never trusted: before, nesting deeper than Python's
    recursion limit raised RecursionError (a traceback from ``keysplit dataset``)."""
    deep = b"[" * 100_000
    meta = {b"keysplit": dump_json(_KEYSPLIT), b"pandas": deep}
    if kind == "encrypt":
        meta = {b"pandas": deep}
    out = pq.output_metadata(_SCHEMA.with_metadata(meta), kind, "data", "subject")
    assert out[b"pandas"] == deep  # no entry found in it: left as it was
    if kind == "encrypt":
        assert json.loads(out[b"keysplit"])["sealed"] == {"data": "bytes"}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.binary(max_size=12)), min_size=1, max_size=40),
    st.lists(st.integers(0, 40), max_size=6),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_a_take_from_joined_chunks_is_the_chunked_take(
    values: list[bytes | None], cuts: list[int], text: bool, rnd: Any
) -> None:
    """The part's grouping and its way back (``_take``: a large column's chunks joined,
    then one take; pyarrow's take on many chunks cost up to 2 s at 10^6 rows, issue 23)
    give exactly what ``ChunkedArray.take`` gives, for any chunking, nulls and order, by
    either path (the limits lowered here)."""
    import numpy as np

    if text:
        arr = pa.array([None if v is None else v.hex() for v in values], pa.string())
    else:
        arr = pa.array(values, pa.binary())
    bounds = sorted({0, len(arr), *(c for c in cuts if c <= len(arr))})
    chunked = pa.chunked_array(
        [arr.slice(a, b - a) for a, b in itertools.pairwise(bounds)], arr.type
    )
    order = np.arange(len(arr))
    rnd.shuffle(order)
    want = chunked.take(order).to_pylist()
    assert pq._take(chunked, order).to_pylist() == want  # small: from the chunks
    assert pq._take(arr, order).to_pylist() == want
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pq, "_JOIN_TO_TAKE", 0)  # large: joined
        assert pq._take(chunked, order).to_pylist() == want
        mp.setattr(pq, "_MAX_OFFSET", 0)  # past int32 offsets: from the chunks
        assert pq._take(chunked, order).to_pylist() == want
