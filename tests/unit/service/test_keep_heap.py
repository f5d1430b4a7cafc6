"""``keysplit.service.keep_heap``: a process that calls it stops faulting a batch's pages in
again (glibc); what it changes is checked by counting page faults in a fresh process, never
by timing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from keysplit.service import keep_heap

_PROGRAM = """
import os, resource, sys
from keysplit.service import keep_heap
took = keep_heap() if sys.argv[1] == "keep" else None
piece = os.urandom(1 << 20)
faults = []
for _ in range(12):  # a batch: 1,000 records of 1 KiB made, then dropped
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    batch = [piece[i << 10 : (i + 1) << 10] for i in range(1000)]
    del batch
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(took, max(faults[4:]))
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _PROGRAM, mode], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    took, most = out.stdout.split()
    return took, int(most)


def test_keep_heap_stops_every_batch_faulting_its_pages_in_again() -> None:
    if not keep_heap():
        pytest.skip("no glibc mallopt here: keep_heap changes nothing")
    _, default = _faults("default")
    took, kept = _faults("keep")
    assert took == "True"
    assert default >= 128  # a megabyte given back and faulted in again every batch
    assert kept < 16  # kept in the heap: the next batch reuses the pages


def test_keep_heap_can_be_called_again() -> None:
    first = keep_heap()
    assert keep_heap() is first
