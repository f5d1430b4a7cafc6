"""decrypt_file killed mid-stream (SIGKILL, a real process) leaves no plaintext behind.

Before the fix the plaintext went to a named ``.out.<pid>.<hex>.tmp`` that nothing
removed. Now it goes to an unnamed ``O_TMPFILE`` inode that the kernel frees on death;
where that is unavailable (forced here), the leftover is removed by the next run.
"""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from keysplit import _fileio, decrypt_file
from keysplit import stream as ks_stream
from keysplit.rng import DeterministicRandom
from keysplit.stream import encrypt_stream

SK = X25519PrivateKey.from_private_bytes(bytes(range(32)))
C = ks_stream.MIN_CHUNK_SIZE
DATA = bytes(i % 251 for i in range(12 * C))

CHILD = """
import sys
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from keysplit import _fileio, stream
if sys.argv[3] == "named":
    _fileio._USE_O_TMPFILE = False
stream.decrypt_file(sys.argv[1], sys.argv[2], X25519PrivateKey.from_private_bytes(bytes(range(32))))
"""


def _blob() -> bytes:
    out = io.BytesIO()
    rng = DeterministicRandom("k")
    encrypt_stream(io.BytesIO(DATA), out, SK.public_key(), chunk_size=C, rng=rng)
    return out.getvalue()


def _plaintext_fd_open(pid: int, directory: Path) -> bool:
    """True once the child holds a non-empty regular file in ``directory`` (its output)."""
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(fd_dir / fd)
            st = os.stat(fd_dir / fd)
        except OSError:
            continue
        if target.startswith(str(directory)) and stat.S_ISREG(st.st_mode) and st.st_size > 0:
            return True
    return False


def _kill_mid_stream(tmp_path: Path, mode: str) -> Path:
    blob = _blob()
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    out = tmp_path / "out.bin"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(fifo), str(out), mode])
    try:
        with open(fifo, "wb") as w:
            w.write(blob[: len(blob) // 2])  # half the stream; the rest never comes
            w.flush()
            deadline = time.monotonic() + 60
            while not _plaintext_fd_open(child.pid, tmp_path):
                assert child.poll() is None, "child ended early"
                assert time.monotonic() < deadline, "child wrote no plaintext in 60 s"
                time.sleep(0.02)
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    fifo.unlink()
    return out


@pytest.mark.skipif(not _fileio._USE_O_TMPFILE, reason="O_TMPFILE unavailable here")
def test_sigkill_leaves_no_plaintext_with_o_tmpfile(tmp_path: Path) -> None:
    _kill_mid_stream(tmp_path, "unnamed")
    assert os.listdir(tmp_path) == []


def test_sigkill_leftover_is_removed_by_the_next_run(tmp_path: Path) -> None:
    out = _kill_mid_stream(tmp_path, "named")
    leftovers = os.listdir(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].startswith(".out.bin.")  # the fallback's window
    (tmp_path / "in.ks").write_bytes(_blob())
    decrypt_file(tmp_path / "in.ks", out, SK)
    assert sorted(os.listdir(tmp_path)) == ["in.ks", "out.bin"]
    assert out.read_bytes() == DATA


def test_leftover_of_a_live_writer_is_kept(tmp_path: Path) -> None:
    live = tmp_path / f".out.bin.{_fileio._host_tag()}.{os.getpid()}.0123abcd.tmp"
    live.write_bytes(b"in progress")
    (tmp_path / "in.ks").write_bytes(_blob())
    decrypt_file(tmp_path / "in.ks", tmp_path / "out.bin", SK)
    assert live.exists()


def test_only_this_hosts_dead_writers_leftovers_are_removed(tmp_path: Path) -> None:
    """In a directory shared between hosts (NFS offers no ``O_TMPFILE``, so the named
    fallback is what runs there) a live writer's temporary file on another host must not
    be judged by its pid here: before the host tag, one whose pid was free here was
    removed. A link is never followed or removed."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead, host = proc.pid, _fileio._host_tag()
    other = "%08x" % (int(host, 16) ^ 1)
    mine = tmp_path / f".out.bin.{host}.{dead}.0123abcd.tmp"
    theirs = tmp_path / f".out.bin.{other}.{dead}.0123abcd.tmp"
    link = tmp_path / f".out.bin.{host}.{dead}.4567cdef.tmp"
    for p in (mine, theirs):
        p.write_bytes(b"partial")
    (tmp_path / "keep").write_bytes(b"x")
    link.symlink_to(tmp_path / "keep")
    (tmp_path / "in.ks").write_bytes(_blob())
    decrypt_file(tmp_path / "in.ks", tmp_path / "out.bin", SK)
    assert not mine.exists()
    assert theirs.read_bytes() == b"partial"  # another host's: not ours to judge
    assert link.is_symlink() and (tmp_path / "keep").read_bytes() == b"x"
