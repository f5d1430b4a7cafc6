"""One durable writer: every rename, link and fsync in keysplit/ is in ``keysplit/_fileio.py``.

The rule of SECURITY.md ("secret files atomic + mode 0600") holds only if no module grows
its own writer: an AST scan finds every ``os.replace/rename/link/fsync/fdatasync`` call and
every ``O_TMPFILE`` use outside ``_fileio``. The files written through it are 0600 whatever
the umask, on both stream paths (``O_TMPFILE`` and the named temporary).
"""

from __future__ import annotations

import ast
import io
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from keysplit import _fileio, stream
from keysplit.rng import DeterministicRandom

KEYSPLIT = Path(__file__).resolve().parents[2] / "keysplit"
DURABLE_CALLS = {"replace", "rename", "renames", "link", "fsync", "fdatasync", "sync"}


def _durable_uses(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and (node.attr in DURABLE_CALLS or node.attr == "O_TMPFILE")
        ):
            out.append(f"{path.relative_to(KEYSPLIT.parent)}:{node.lineno} os.{node.attr}")
    return out


def test_every_durable_write_goes_through_fileio() -> None:
    modules = [p for p in sorted(KEYSPLIT.rglob("*.py")) if p.name != "_fileio.py"]
    found = [use for p in modules for use in _durable_uses(p)]
    assert found == [], "durable writes outside keysplit/_fileio.py"
    assert _durable_uses(KEYSPLIT / "_fileio.py")  # the scan does see them where they belong


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("unnamed", [True, False])
def test_written_files_are_0600_whatever_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    if unnamed and not _fileio._USE_O_TMPFILE:
        pytest.skip("O_TMPFILE unavailable here")
    monkeypatch.setattr(_fileio, "_USE_O_TMPFILE", unnamed)
    old = os.umask(0)
    try:
        _fileio.atomic_write(tmp_path / "secret", b"s")
        with _fileio.atomic_writer(tmp_path / "new", overwrite=False) as fh:
            fh.write(b"n")
        sk = X25519PrivateKey.from_private_bytes(bytes(range(32)))
        blob = io.BytesIO()
        stream.encrypt_stream(
            io.BytesIO(b"plain" * 100), blob, sk.public_key(), rng=DeterministicRandom("f")
        )
        (tmp_path / "ct").write_bytes(blob.getvalue())
        stream.decrypt_file(tmp_path / "ct", tmp_path / "pt", sk)
        stream.decrypt_file(tmp_path / "ct", tmp_path / "pt", sk, overwrite=True)
    finally:
        os.umask(old)
    assert (tmp_path / "pt").read_bytes() == b"plain" * 100
    for name in ("secret", "new", "pt"):
        assert _mode(tmp_path / name) == 0o600, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct", "new", "pt", "secret"]


@pytest.mark.parametrize("unnamed", [True, False])
def test_a_dangling_symlink_is_an_existing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    """``Path.exists`` follows a link: one to nowhere passed the check, and the write failed
    only at the end, with the link's own error (``[Errno 17] File exists: '7' -> 'out'``)
    after the whole stream was decrypted. Refused up front now, and nothing is created
    where the link points; ``overwrite`` replaces the link itself."""
    if unnamed and not _fileio._USE_O_TMPFILE:
        pytest.skip("O_TMPFILE unavailable here")
    monkeypatch.setattr(_fileio, "_USE_O_TMPFILE", unnamed)
    out = tmp_path / "out"
    out.symlink_to(tmp_path / "nowhere")
    sk = X25519PrivateKey.from_private_bytes(bytes(range(32)))
    stream.encrypt_file(__file__, tmp_path / "ct", sk.public_key())
    refused = "refusing to overwrite existing file"
    with pytest.raises(FileExistsError, match=refused):
        _fileio.atomic_write(out, b"s", overwrite=False)
    with pytest.raises(FileExistsError, match=refused):
        stream.decrypt_file(tmp_path / "ct", out, sk)
    assert out.is_symlink() and not (tmp_path / "nowhere").exists()
    stream.decrypt_file(tmp_path / "ct", out, sk, overwrite=True)
    assert not out.is_symlink() and out.read_bytes() == Path(__file__).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct", "out"]


@pytest.mark.parametrize("unnamed", [True, False])
def test_a_special_file_is_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    """(red team) ``overwrite`` renamed a regular file over a FIFO, a device (``/dev/null``
    as root) or a link to one (``/dev/stdout``): the writer refuses such a target now.
    A directory is an ``IsADirectoryError`` before anything is written."""
    if unnamed and not _fileio._USE_O_TMPFILE:
        pytest.skip("O_TMPFILE unavailable here")
    monkeypatch.setattr(_fileio, "_USE_O_TMPFILE", unnamed)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to(fifo)
    sk = X25519PrivateKey.from_private_bytes(bytes(range(32)))
    for target in (fifo, link):
        with pytest.raises(FileExistsError, match="not a regular file"):
            _fileio.atomic_write(target, b"s", overwrite=True)
        with pytest.raises(FileExistsError, match="not a regular file"):
            stream.encrypt_file(__file__, target, sk.public_key(), overwrite=True)
    with pytest.raises(IsADirectoryError):
        _fileio.atomic_write(tmp_path, b"s", overwrite=True)
    assert fifo.is_fifo() and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "link"]


_KILLED_WRITER = """
import sys, time
from keysplit import _fileio
if sys.argv[2] == "named":
    _fileio._USE_O_TMPFILE = False
with _fileio.atomic_writer(sys.argv[1], overwrite=False) as fh:
    fh.write(b"0123456789abcdef0123456789abcdef (the secret)")
    fh.flush()
    print("written", flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("unnamed", [True, False])
def test_a_writer_killed_before_its_rename_leaves_no_secret_behind(
    tmp_path: Path, unnamed: bool
) -> None:
    """A secret file (``combine --out``, plain shares, converted shares, an unencrypted
    identity) whose writer was killed (SIGKILL, a power cut) mid-write stayed for good in
    ``.NAME.<host>.<pid>.<hex>.tmp``: only a decrypt's leftovers were ever removed. Now it
    has no name until complete (``O_TMPFILE``), and where a name is needed the next write
    of the same file removes what a dead writer of this host left."""
    if unnamed and not _fileio._USE_O_TMPFILE:
        pytest.skip("O_TMPFILE unavailable here")
    target = tmp_path / "secret.hex"
    mode = "unnamed" if unnamed else "named"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(target), mode], stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"written\n"
    finally:
        child.kill()  # SIGKILL: no cleanup runs
        child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    left = os.listdir(tmp_path)
    if unnamed:
        assert left == []
    else:
        assert len(left) == 1 and left[0].startswith(".secret.hex.")  # the fallback's window
    _fileio.atomic_write(target, b"new", overwrite=False)
    assert os.listdir(tmp_path) == ["secret.hex"] and target.read_bytes() == b"new"


@pytest.mark.parametrize("unnamed", [True, False])
def test_a_long_file_name_can_be_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    """The temporary name is ``.NAME.<host>.<pid>.<hex>.tmp``: for a NAME of 225..255 bytes
    (valid) it passed NAME_MAX, so replacing such a file failed at the very end, after a
    whole decrypt (and its quorum): ``error: File name too long: 7``."""
    if unnamed and not _fileio._USE_O_TMPFILE:
        pytest.skip("O_TMPFILE unavailable here")
    monkeypatch.setattr(_fileio, "_USE_O_TMPFILE", unnamed)
    sk = X25519PrivateKey.from_private_bytes(bytes(range(32)))
    stream.encrypt_file(__file__, tmp_path / "ct", sk.public_key())
    for name in ("n" * 255, "é" * 127):  # bytes count, not characters
        out = tmp_path / name
        _fileio.atomic_write(out, b"old")
        stream.decrypt_file(tmp_path / "ct", out, sk, overwrite=True)
        assert out.read_bytes() == Path(__file__).read_bytes()
        _fileio.atomic_write(out, b"new")
        assert out.read_bytes() == b"new"
    assert len(os.listdir(tmp_path)) == 3


@pytest.mark.parametrize("unnamed", [True, False])
def test_a_link_to_an_open_descriptor_is_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    """(review2) ``/dev/stdout`` with stdout redirected to a regular file passed the
    special-file check (the link names a regular file), so the rename replaced the link
    itself: as root the system's ``/dev/stdout`` became a regular file holding the output,
    and the file stdout named stayed empty. A link (or chain of links) to
    ``/proc/<pid>/fd/N`` or ``/dev/fd/N`` is refused now (a link of the test's own stands
    in for ``/dev/stdout``)."""
    if unnamed and not _fileio._USE_O_TMPFILE:
        pytest.skip("O_TMPFILE unavailable here")
    monkeypatch.setattr(_fileio, "_USE_O_TMPFILE", unnamed)
    with open(tmp_path / "redirected", "wb") as out:
        stdout = tmp_path / "stdout"
        stdout.symlink_to(f"/proc/self/fd/{out.fileno()}")
        again = tmp_path / "again"
        again.symlink_to(stdout)
        for target in (stdout, again, Path(f"/dev/fd/{out.fileno()}")):
            with pytest.raises(FileExistsError, match="open file descriptor"):
                _fileio.atomic_write(target, b"s", overwrite=True)
    assert stdout.is_symlink() and again.is_symlink()
    assert (tmp_path / "redirected").read_bytes() == b""
    assert not _fileio.names_a_descriptor(tmp_path / "redirected")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "redirected", "stdout"]


_TARGETS = {
    # name: (make it in tmp (returns the target path), what unreplaceable says)
    "nothing": (lambda d, fd: d / "new", None),
    "regular": (lambda d, fd: _made(d / "file"), None),
    "link to regular": (lambda d, fd: _link(d / "l", _made(d / "file")), None),
    "link to nowhere": (lambda d, fd: _link(d / "l", d / "gone"), None),
    "directory": (lambda d, fd: d, "directory"),
    "link to directory": (lambda d, fd: _link(d / "l", d), "directory"),
    "fifo": (lambda d, fd: _fifo(d / "fifo"), "special"),
    "link to fifo": (lambda d, fd: _link(d / "l", _fifo(d / "fifo")), "special"),
    "descriptor": (lambda d, fd: Path(f"/dev/fd/{fd}"), "descriptor"),
    "link to descriptor": (lambda d, fd: _link(d / "l", Path(f"/proc/self/fd/{fd}")), "descriptor"),
}


def _made(p: Path) -> Path:
    p.write_bytes(b"old")
    return p


def _link(p: Path, to: Path) -> Path:
    p.symlink_to(to)
    return p


def _fifo(p: Path) -> Path:
    os.mkfifo(p)
    return p


@pytest.mark.parametrize("name", list(_TARGETS))
def test_the_cli_and_the_writer_refuse_the_same_targets(tmp_path: Path, name: str) -> None:
    """(cli4) The CLI's output check (made before any share is asked for) was a copy of the
    writer's special-file check. Both ask one public ``keysplit.files.unreplaceable`` now:
    what it names, the writer refuses and the CLI calls a usage error; anything else both
    let through (the CLI then asks for --force where a file exists)."""
    import typer
    from keysplit_cli._common import check_output_file

    from keysplit.files import unreplaceable

    make, kind = _TARGETS[name]
    work = tmp_path / "w"
    work.mkdir()
    with open(tmp_path / "redirected", "wb") as held:
        target = make(work, held.fileno())
        assert unreplaceable(target) == kind
        try:
            check_output_file(target, "OUT", overwrite=True)
            cli_code = 0
        except typer.Exit as exc:
            cli_code = exc.exit_code
        refused = kind is not None
        assert cli_code == (2 if refused else 0)
        if refused:
            with pytest.raises((FileExistsError, IsADirectoryError)):
                _fileio.atomic_write(target, b"new", overwrite=True)
        else:
            _fileio.atomic_write(target, b"new", overwrite=True)
            assert target.read_bytes() == b"new"
    assert (tmp_path / "redirected").read_bytes() == b""
