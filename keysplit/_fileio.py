"""Atomic, durable file writes: the one module that renames, links and fsyncs.

Every durable output of keysplit goes through here (tests/contract/test_durable_writes.py
checks that no other module calls ``os.replace``/``os.link``/``os.fsync``): secret files
(:func:`atomic_write`), decrypted streams and dataset parts (:func:`unnamed_writer`,
:func:`atomic_writer`), the keyring's pending-file commit (:func:`durable_rename`) and
append-only logs (:func:`durable_append`).

Files that hold secrets (shares, identities, keyring metadata) are written to a temporary
file in the same directory (unnamed where Linux offers ``O_TMPFILE``, so a killed writer
leaves nothing), fsynced, renamed over the target and the directory fsynced, so a crash
leaves either the old file or the new one, never a torn or empty one, and nothing is
replaced until its replacement is durable. New files get mode 0600.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Literal

from .errors import FormatError

__all__ = [
    "atomic_write",
    "atomic_writer",
    "durable_append",
    "durable_rename",
    "erase_file",
    "fsync_dir",
    "fsync_fd",
    "kind_of",
    "link_new",
    "names_a_descriptor",
    "read_bounded",
    "read_bounded_stream",
    "unnamed_writer",
    "unreplaceable",
]


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """fsync a directory so a rename inside it is durable."""
    fd = os.open(os.fspath(directory), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(
    path: str | os.PathLike[str], *, mode: int = 0o600, overwrite: bool = True
) -> Iterator[BinaryIO]:
    """Yield a binary file; on clean exit it atomically replaces ``path``.

    On an exception the temporary file is removed and ``path`` is untouched. With
    ``overwrite=False`` an existing ``path`` is an error (checked again at rename time via
    ``os.link`` so two writers cannot both win).

    The file has no name until it is complete where Linux ``O_TMPFILE`` is available, so
    a writer killed mid-write (SIGKILL, a power cut) leaves nothing; elsewhere it is a
    named ``.<name>.<host>.<pid>.<hex>.tmp``, and the next write of ``path`` removes those
    a dead writer of this host left (they may hold a whole secret).
    """
    target = Path(path)
    try:
        with _atomic_writer(target, mode, overwrite) as fh:
            yield fh
    except OSError as exc:
        if exc.errno not in SPACE_ERRORS:
            raise
        raise _with_name(exc, target) from None  # a full disk names the file it was writing


@contextlib.contextmanager
def _atomic_writer(target: Path, mode: int, overwrite: bool) -> Iterator[BinaryIO]:
    directory = target.parent if str(target.parent) else Path(".")
    _remove_leftovers(directory / target.name)
    if not overwrite and os.path.lexists(target):  # a link to nowhere is there too
        raise FileExistsError(f"refusing to overwrite existing file: {target}")
    _refuse_special(target)
    fd = _open_unnamed(directory)
    if fd is not None:
        with _unnamed_writer(fd, directory / target.name, overwrite, mode) as fh:
            yield fh
        return
    tmp = _temp_name(directory, target.name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, target)
        else:
            os.link(tmp, target)
            os.unlink(tmp)
        fsync_dir(directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


_FD_LINK = re.compile(r"/(proc/[^/]+|dev)/fd/[0-9]+")


def names_a_descriptor(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is, or is a chain of symbolic links that reaches, a process's
    file-descriptor link (``/proc/<pid>/fd/N``, ``/dev/fd/N``): ``/dev/stdout`` is one.
    Such a name stands for an open file, which a rename would not reach: it would replace
    the link itself (as root, the system's ``/dev/stdout``) and leave the file as it was."""
    p = os.path.abspath(os.fspath(path))
    for _ in range(40):  # the kernel's own bound on a chain of links
        if _FD_LINK.fullmatch(p):
            return True
        try:
            if not stat.S_ISLNK(os.lstat(p).st_mode):
                return False
            nxt = os.readlink(p)
        except OSError:
            return False
        p = os.path.normpath(os.path.join(os.path.dirname(p), nxt))
    return False


Unreplaceable = Literal["directory", "descriptor", "special"]


def unreplaceable(path: str | os.PathLike[str]) -> Unreplaceable | None:
    """Why a new file must not be renamed into ``path``'s place, or None (nothing there, a
    link to nowhere, a regular file or a link to one): the one check of the library's
    writers (:func:`atomic_writer`) and of the CLI's output checks made before a quorum.

    ``"directory"``; ``"descriptor"``: a link, or chain of links, to an open file
    descriptor (:func:`names_a_descriptor`, as ``/dev/stdout`` is), whose rename would
    replace the link and leave the file it names as it was; ``"special"``: a device, FIFO
    or socket, which the rename would replace (``--out /dev/null --force`` run as root
    replaced the system's ``/dev/null``, and a reader waiting on a FIFO got nothing).
    """
    try:
        st = os.stat(path)  # through a link: what it names is what would be lost
    except OSError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        return "directory"
    if names_a_descriptor(path):
        return "descriptor"
    if st is not None and not stat.S_ISREG(st.st_mode):
        return "special"
    return None


def _refuse_special(target: Path) -> None:
    """Refuse to replace anything but a regular file (or a link to one, or nothing):
    :func:`unreplaceable`."""
    kind = unreplaceable(target)
    if kind == "directory":
        raise IsADirectoryError(errno.EISDIR, "is a directory", str(target))
    if kind == "descriptor":
        raise FileExistsError(
            f"refusing to replace {target}: a link to an open file descriptor (as "
            "/dev/stdout is); write to stdout with - and redirect instead"
        )
    if kind == "special":
        raise FileExistsError(
            f"refusing to replace {target}: not a regular file (a device, FIFO or socket; "
            "write to stdout with - and redirect instead)"
        )


def durable_rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Replace ``dst`` by ``src`` (same directory, ``src`` already fsynced) and make the
    rename durable: the commit step of a two-phase write (the keyring's pending file)."""
    os.replace(src, dst)
    fsync_dir(Path(dst).parent)


def link_new(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Give ``src`` the name ``dst`` too, only if nothing has that name (``FileExistsError``
    otherwise): how an object made under a temporary name (``keysplit serve``'s listening
    socket) appears whole, and never over another's. Not durable: nothing is fsynced."""
    os.link(src, dst)


SPACE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""``errno`` values of a full disk (or quota, or file size limit)."""


def _with_name(exc: OSError, name: str | os.PathLike[str] | None) -> OSError:
    """``exc``, or the same error naming ``name`` when it names no file (``os.write`` on a
    descriptor raises ``[Errno 28] No space left on device`` without one)."""
    if exc.filename is not None or name is None or exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror or os.strerror(exc.errno), str(name))


def durable_append(fd: int, data: bytes, *, name: str | os.PathLike[str] | None = None) -> None:
    """Append all of ``data`` to an ``O_APPEND`` descriptor and fsync it (append-only logs:
    the audit chain, token revocations). The caller fsyncs the directory if it created the
    file (0600, as every file here), and holds the file's lock.

    If a write or the fsync fails (a full disk: a partial write, then ``ENOSPC``), the file
    is cut back to its size before the call, so it is unchanged (no torn line), and the
    ``OSError`` names ``name`` (the file's path) when it named no file."""
    start = os.fstat(fd).st_size
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            if os.fstat(fd).st_size == start + len(data) - len(view):  # only our bytes
                os.ftruncate(fd, start)
                os.fsync(fd)
        raise _with_name(exc, name) from None


def fsync_fd(fd: int) -> None:
    """fsync an open descriptor after an in-place change (a torn audit line cut off)."""
    os.fsync(fd)


def atomic_write(
    path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600, overwrite: bool = True
) -> None:
    """Write ``data`` to ``path`` atomically and durably with permissions ``mode``."""
    with atomic_writer(path, mode=mode, overwrite=overwrite) as fh:
        fh.write(data)


def erase_file(path: str | os.PathLike[str]) -> bool:
    """Overwrite ``path`` with zeros in place, fsync, unlink it and fsync its directory
    (a secret file that must not outlive its use); False if there was no such file."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return False
    try:
        size = os.fstat(fd).st_size
        done = 0
        while done < size:
            done += os.write(fd, bytes(min(size - done, 1 << 16)))
        os.fsync(fd)
    finally:
        os.close(fd)
    p.unlink(missing_ok=True)
    fsync_dir(p.parent)
    return True


# -- streams: plaintext that must not exist under any name until it is complete ----------

_USE_O_TMPFILE = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")
"""Write plaintext to an unnamed file (Linux ``O_TMPFILE``) and link it in when complete."""

_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<host>[0-9a-f]{8})\.(?P<pid>[0-9]+)\.[0-9a-f]{8}\.tmp")


_NAME_IN_TEMP = 200
"""Bytes of the target's name a temporary name keeps: the rest (``.``, host, pid, random,
``.tmp``: at most 32 bytes) must fit with it in NAME_MAX (255 bytes) for any valid name."""


def _name_in_temp(name: str) -> str:
    return os.fsdecode(os.fsencode(name)[:_NAME_IN_TEMP])


def _temp_name(directory: Path, name: str) -> Path:
    """``.<name>.<host>.<pid>.<random>.tmp`` in ``directory`` (the name cut to
    :data:`_NAME_IN_TEMP` bytes): the host tag because a directory shared between hosts
    (NFS, where ``O_TMPFILE`` is not offered) may hold another host's live temporary file,
    whose pid means nothing here."""
    tag = f"{_host_tag()}.{os.getpid()}.{os.urandom(4).hex()}"
    return directory / f".{_name_in_temp(name)}.{tag}.tmp"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dead_writers(target: Path, pattern: re.Pattern[str]) -> Iterator[tuple[Path, os.stat_result]]:
    """The entries beside ``target`` (with their ``lstat``) that a killed writer of this
    host left: ``pattern`` matches the name for ``target`` (its ``name`` group), its
    ``host`` group is this host, its writer (``pid``) is no longer running, and the entry
    belongs to this user. Another host's entries are never judged here (a directory shared
    between hosts: their pids mean nothing here). An unreadable directory has none."""
    directory, host, uid = target.parent, _host_tag(), os.getuid()
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        m = pattern.fullmatch(entry)
        if not m or m["name"] != target.name or m["host"] != host or _pid_alive(int(m["pid"])):
            continue
        try:
            st = os.lstat(directory / entry)
        except OSError:
            continue
        if st.st_uid == uid:
            yield directory / entry, st


def _remove_leftovers(target: Path) -> None:
    """Remove ``.<name>.<host>.<pid>.<hex>.tmp`` files of ``target`` left by a killed writer.

    Only where ``O_TMPFILE`` is unavailable can a killed :func:`atomic_writer` (a secret
    file, a decrypt's authenticated partial plaintext) leave one; the next write of the
    same target removes those whose writer process of this host is gone: regular files of
    this user only, never another host's (as :func:`staging_dir` does for stages).
    """
    for path, st in _dead_writers(target.with_name(_name_in_temp(target.name)), _LEFTOVER):
        if stat.S_ISREG(st.st_mode):
            with contextlib.suppress(OSError):
                os.unlink(path)


_STAGE = re.compile(r"\.(?P<name>.+)\.keysplit-(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)-[^/]+")


def _host_tag() -> str:
    """This host, as a stage name carries it: a directory shared between hosts (NFS) may
    hold another host's live stage, whose pid means nothing here."""
    return hashlib.blake2b(socket.gethostname().encode(), digest_size=4).hexdigest()


def remove_dead_stages(target: Path) -> None:
    """Remove the stages of ``target`` (see :func:`staging_dir`) that this host's dead
    processes left: only directories owned by this user, never a link, never another host's."""
    for path, st in _dead_writers(target, _STAGE):
        if stat.S_ISDIR(st.st_mode):  # never a link
            remove_stage(path)  # (the dead process's workers may still write parts)


def staging_dir(target: Path) -> Path:
    """A new private directory (0700) beside ``target`` to build it in, named
    ``.<name>.keysplit-<host>-<pid>-<random>``; renamed to ``target`` when complete.

    A process killed while building (a dataset job's driver: SIGKILL, a lost machine)
    leaves its stage behind, plaintext parts of a decrypt included. So the stages of
    ``target`` that this host's dead processes left are removed first: only directories
    owned by this user (never a link), and never another host's (its pid is not ours to
    judge).
    """
    remove_dead_stages(target)
    prefix = f".{target.name}.keysplit-{_host_tag()}-{os.getpid()}-"
    stage = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    with _stages_lock:
        _stages.difference_update([s for s in _stages if not s.is_dir()])  # renamed or removed
        _stages.add(stage)
    return stage


_stages: set[Path] = set()
_stages_lock = threading.Lock()


def remove_own_stages() -> None:
    """Remove every stage :func:`staging_dir` made in this process that is still there.

    For a process about to end itself by SIGKILL (a Dask job's driver child orphaned by its
    keyring process, past its grace: :mod:`keysplit.jobs._driver`): its job's own cleanup
    never runs then, and the stage (a decrypt's plaintext parts) would stay until a later
    job to the same target on this host removed it. A stage renamed into place meanwhile is
    gone from its path, so nothing finished is touched."""
    with _stages_lock:
        stages = list(_stages)
        _stages.clear()
    for stage in stages:
        remove_stage(stage)


def remove_stage(stage: Path) -> None:
    """Remove a stage (:func:`staging_dir`) whose job failed or was abandoned, even while
    the job's workers still write parts into it.

    A job that fails cancels its parts, but a part already running on a worker runs on
    and commits its file by path (:func:`atomic_writer`). ``rmtree`` where the stage is
    lists it, removes what it listed, then removes the directory: a part committed in
    between made that fail (ENOTEMPTY) and left the stage with the part (a decrypt's
    plaintext) in it. So the stage is first renamed to a name no worker knows (still a
    stage name of this process, which :func:`remove_dead_stages` removes if this one dies
    meanwhile): a part committed from then on finds no directory. A stage renamed into
    place first (a finished job's output) is left alone, and one this rename took first
    is no longer there to be put in place."""
    gone = stage.with_name(f"{stage.name}-gone-{os.urandom(4).hex()}")
    try:
        os.rename(stage, gone)
    except FileNotFoundError:  # renamed into place, or removed already
        return
    except OSError:  # (not renamed: removed where it is, as before)
        gone = stage
    shutil.rmtree(gone, ignore_errors=True)


def _open_unnamed(directory: Path) -> int | None:
    """An ``O_TMPFILE`` descriptor in ``directory``, or None where that is unsupported."""
    if not _USE_O_TMPFILE:
        return None
    try:
        return os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o600)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None
        raise


def _link_fd(fd: int, dst: Path) -> None:
    """``linkat(/proc/self/fd, "<fd>", dst, AT_SYMLINK_FOLLOW)``: give an O_TMPFILE a name.

    (``os.link`` calls plain ``link()``, which does not follow the magic link, unless a
    ``src_dir_fd`` is given; hence the directory descriptor.)
    """
    proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.link(str(fd), dst, src_dir_fd=proc, follow_symlinks=True)
    finally:
        os.close(proc)


@contextlib.contextmanager
def _unnamed_writer(fd: int, target: Path, overwrite: bool, mode: int) -> Iterator[BinaryIO]:
    """:func:`atomic_writer` where ``O_TMPFILE`` is offered: no name until it is complete.

    ``O_TMPFILE`` made an inode with no directory entry; only after the whole stream
    authenticated and was fsynced is it linked in (``linkat`` through ``/proc/self/fd``).
    A process killed before that leaves nothing behind: the kernel frees the inode.
    """
    directory = target.parent
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fd, mode)
        yield fh
        fh.flush()
        os.fsync(fd)
        if not overwrite:
            _link_fd(fd, target)
        else:
            tmp = _temp_name(directory, target.name)
            _link_fd(fd, tmp)
            try:
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
    fsync_dir(directory)


@contextlib.contextmanager
def unnamed_writer(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary file (mode 0600) that gets ``path`` as its name only on clean exit.

    The writer of decrypted streams: :func:`atomic_writer`, refusing an existing ``path``
    unless ``overwrite``. Their plaintext is authenticated as it is written, so it must
    have no name before the whole stream has (``O_TMPFILE``; elsewhere a named temporary
    that a later call removes if its writer died).
    """
    with atomic_writer(path, mode=0o600, overwrite=overwrite) as fh:
        yield fh


def read_bounded(
    path: str | os.PathLike[str],
    limit: int,
    what: str,
    *,
    kind: str | None = None,
    regular: bool = False,
) -> bytes:
    """Read a small input file whole, refusing it by size *before* reading.

    Identity, public-key, Vault and share files are a few KiB; reading one of hundreds of
    MB before checking its size would let a wrong (or hostile) path cost that much memory.
    The size is checked with ``fstat`` first, and at most ``limit + 1`` bytes are read (a
    file that grew meanwhile, a pipe or ``/dev/zero`` ends there). Too large: FormatError.

    ``regular``: a file keysplit keeps itself (the keyring directory's): anything but a
    regular file, directly or through a link, is a FormatError, found without waiting. A
    FIFO planted there would block the open until a writer came (and its reads until it
    wrote): the open never waits (``O_NONBLOCK``) and the type is checked on the open
    descriptor. Without it a pipe is read (a path the user names: ``<(...)``).
    """
    big = "too large" if kind is None else f"too large for {kind}"
    nonblock = os.O_NONBLOCK if regular else 0
    with open(path, "rb", opener=lambda p, f: os.open(p, f | nonblock | os.O_CLOEXEC)) as fh:
        st = os.fstat(fh.fileno())
        if regular:
            if not stat.S_ISREG(st.st_mode):
                raise FormatError(
                    f"{what} is {kind_of(st.st_mode)}, not a regular file; refusing to read it",
                    hint="move it away and put the file back (from a backup if need be)",
                )
            os.set_blocking(fh.fileno(), True)
        if st.st_size > limit:
            raise FormatError(f"{what} is {big} ({st.st_size} bytes, at most {limit})")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise FormatError(f"{what} is {big} (more than {limit} bytes)")
    return data


def kind_of(mode: int) -> str:
    """What a file that is not a regular one is (``a FIFO``, ...), for an error."""
    kinds = (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def read_bounded_stream(stream: BinaryIO, limit: int, what: str) -> bytes:
    """:func:`read_bounded` for an open stream (stdin): at most ``limit + 1`` bytes read."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise FormatError(f"{what} is too large (more than {limit} bytes)")
    return data
