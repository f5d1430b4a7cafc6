""":class:`Packed`: many byte strings in one buffer, with their boundaries.

What :meth:`keysplit.UnsealedKeyring.encrypt_packed` and ``decrypt_packed`` give back
instead of one ``bytes`` per record (issue 23: the ``bytes`` per record and the join of
each record's header and ciphertext held ``encrypt_many``/``decrypt_many`` near 0.8x a bare
AES-GCM loop, while the same records sealed in place into one buffer ran above it).

Arrow's variable-size binary layout: item ``i`` is ``buffer[offsets[i]:offsets[i + 1]]``,
offsets are signed 64-bit (``array('q')``: no NumPy needed), ``offsets[0] == 0`` and the
last offset is the buffer's length. So a backend hands both to
``pyarrow.Array.from_buffers(pyarrow.large_binary(), len(p), [None,
pyarrow.py_buffer(p.offsets), pyarrow.py_buffer(p.buffer)])`` or ``numpy.frombuffer``
without a copy, or writes ``p.buffer`` to a socket in one call.

Immutable from outside: :attr:`Packed.buffer` and :attr:`Packed.offsets` are read-only
views, and a :class:`Packed` made from a caller's buffer holds its own copy, so records
checked and then opened cannot change in between (another thread writing the caller's
``bytearray``).
"""

from __future__ import annotations

import mmap
import operator
from array import array
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate
from typing import overload

from ._mappings import MIN_BYTES, take_mapping

__all__ = ["Packed"]


class Packed(Sequence[memoryview]):
    """Many byte strings in one buffer: ``len``, indexing (a read-only ``memoryview``
    into the buffer, no copy), iteration, :meth:`tolist` (one ``bytes`` each)."""

    __slots__ = ("_buf", "_offsets", "_view")

    _buf: bytes | bytearray | mmap.mmap  # what _view is over (sliced for record headers)
    _view: memoryview  # the items' bytes (a pooled mapping stays this Packed's while it lives)
    _offsets: array[int]

    def __init__(self, buffer: object, offsets: Iterable[int]) -> None:
        """``buffer`` (any contiguous buffer; copied) split at ``offsets`` (``n + 1``
        non-decreasing integers from 0 to the buffer's byte length); ``ValueError``
        otherwise."""
        try:
            data = bytes(memoryview(buffer).cast("B"))  # type: ignore[arg-type]
        except TypeError:
            raise TypeError("a Packed buffer must be bytes or a contiguous buffer") from None
        off = array("q", offsets)
        if not off or off[0] != 0 or off[-1] != len(data):
            raise ValueError("offsets must run from 0 to the buffer's length")
        if not all(map(operator.le, off, off[1:])):
            raise ValueError("offsets must not decrease")
        self._buf, self._view, self._offsets = data, memoryview(data), off

    @classmethod
    def _own(cls, view: memoryview, offsets: array[int]) -> Packed:
        """A :class:`Packed` over a view (of :func:`_output`, or of a joined ``bytes``) and
        offsets this library just made (not checked, not copied: nobody else holds them)."""
        self = cls.__new__(cls)
        self._buf, self._view, self._offsets = view.obj, view, offsets  # type: ignore[assignment]
        return self

    @classmethod
    def of(cls, items: Iterable[object]) -> Packed:
        """Pack byte strings (any buffers) into one: ``Packed.of(rows)``."""
        views = [memoryview(x).cast("B") for x in items]  # type: ignore[arg-type]
        return cls._own(memoryview(b"".join(views)), _offsets_of(map(len, views)))

    @property
    def buffer(self) -> memoryview:
        """Every item's bytes, one after another (read-only)."""
        return self._view.toreadonly()

    @property
    def offsets(self) -> memoryview:
        """``len(self) + 1`` int64 boundaries (format ``"q"``, read-only)."""
        return memoryview(self._offsets).toreadonly()

    @property
    def nbytes(self) -> int:
        return len(self._view)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @overload
    def __getitem__(self, i: int) -> memoryview: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[memoryview]: ...
    def __getitem__(self, i: int | slice) -> memoryview | Sequence[memoryview]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError("Packed index out of range")
        i %= n
        return self._view[self._offsets[i] : self._offsets[i + 1]].toreadonly()

    def __iter__(self) -> Iterator[memoryview]:
        view = self._view.toreadonly()
        off = self._offsets
        return map(view.__getitem__, map(slice, off, off[1:]))

    def tolist(self) -> list[bytes]:
        """One ``bytes`` per item (what ``encrypt_many``/``decrypt_many`` return)."""
        view, off = self._view, self._offsets
        return list(map(bytes, map(view.__getitem__, map(slice, off, off[1:]))))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Packed):
            return NotImplemented
        return self._offsets == other._offsets and self._view == other._view

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:  # lengths only: a Packed may hold plaintexts
        return f"Packed({len(self)} items, {len(self._view)} bytes)"


def _offsets_of(sizes: Iterable[int]) -> array[int]:
    """The offsets of items of ``sizes`` bytes laid out one after another."""
    return array("q", accumulate(sizes, initial=0))


def _output(nbytes: int) -> memoryview:
    """A writable buffer of ``nbytes`` for a batch's records or plaintexts. From
    ``nbytes`` >= 8 MiB a kept mapping (:func:`keysplit._mappings.take_mapping`):
    glibc hands out a fresh mapping for anything over 32 MiB and returns it on free, so a
    fresh 54 MB answer (50k 1 KiB records) page-faulted in again on every call, ~1 us of
    CPU per record on this VM, more than the batch's own work around the AEAD calls. The
    mapping is reused only once no buffer over it is left (this Packed, its items' views);
    its old bytes stay until overwritten, as freed heap memory's do (SECURITY.md)."""
    if nbytes < MIN_BYTES:
        return memoryview(bytearray(nbytes))
    return take_mapping(nbytes)
