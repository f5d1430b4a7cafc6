"""The key service's worker processes: one leader, ``N - 1`` pre-forked workers.

Why processes: a batch of 1 KiB records is Python-bound work that holds the GIL, so one
process serves one core (issue 23 measured 1.41x for 4 clients on one event loop);
benchmarks/ab_service_workers.py measures threads against processes on the same batches
(figures in benchmarks/README.md). Why the leader hands out connections instead of every
process accepting on the shared listening socket: with a shared socket the kernel wakes
every idle process and whichever calls ``accept`` first wins, so the spread of kept-alive
client connections over processes is left to chance; round robin over the processes that
are ready is deterministic (4 connections on 2 processes: 2 and 2), and it lets the leader
keep all traffic while sealed, when only it may run the unseal state machine. The leader
hands each accepted socket, round robin, to itself or a worker over a Unix socketpair
(``SCM_RIGHTS``); a TLS handshake then runs in the process that serves the connection.
The leader keeps its own copy of a handed connection until the worker says it took it
(``TOOK``): a descriptor in flight dies with a worker that dies before reading it (the
kernel closes it, the client's request unread: a reset), so the connections a dropped
worker never took, and those a sealed worker hands back (``BACK``), are served by the
leader instead (answered, or told "sealed"), never reset. A worker sealed (the leader's
``SEAL``, a failed reload) after it took a connection and before it read a byte of it
sends that connection back the same way (``RETURN``, the descriptor attached): closing
it would reset a client whose request was on its way, on a fresh connection.

Lifecycle:

* ``run`` binds the sockets, forks the workers *before* any event loop, thread or store
  connection exists (each worker closes every descriptor that is not its own), then the
  leader serves. While sealed only the leader serves: the remote unseal is one state
  machine in one process.
* When the leader's unseal completes it sends the master key over each worker's
  socketpair (never to disk); a worker re-opens the keyring file with it (AES-GCM of the
  keyring file authenticates the key), holds its own store connection and data-key
  cache, and answers ``ready``; only ready workers get connections. With the key comes
  a copy of the keyring as the leader holds it, sealed under that key as the file is
  (:func:`unseal_message`): a worker started after a rekey made while the service runs
  (the file then opens only with the new shares' key) serves the keys every other
  process holds, from the copy, instead of idling until the next unseal.
* A state change in any process (``shred``, ``hold``, ``rotate``, ``rewrap``) makes every
  other process re-open its keyring from the master key (dropping every cached key and
  picking up the current KEK) before the request is answered: a shred acknowledged by the
  service holds in all of its processes. The store-level rules of the fleet (epochs,
  tombstones, leases) apply to each process as to any library user.
* A seal, wherever it arrives (a request, SIGTERM/SIGINT to the leader), reaches every
  process: each drops its keys and its connections (clients reconnect to the leader). A
  seal *request* is answered only once every process has acknowledged that it dropped its
  keys (bounded by ``ACK_TIMEOUT``; a worker that does not answer is killed), so a client
  that saw "sealed" is never served a decryption by a worker that had not heard yet. One
  audit entry records it. The leader stops the workers on exit; a worker whose leader is
  gone (its socketpair reads EOF) seals and exits.
* A worker that exits (the OOM killer, a crash) or stops answering is dropped, reaped and
  **replaced** in its slot (same index). A fork of the leader is out of the question by
  then (its event loop, threads and store connections would be copied half-way), and
  nothing of the unsealed state comes with a fork anyway: a worker gets the master key
  over its socketpair (``UNSEAL``) after it started. So the replacement is a fresh
  interpreter (:func:`spawn_worker`: fork+exec, every descriptor closed but its end of a
  new socketpair), told its options over that socketpair (``SETUP``, no secret). It joins
  the fleet once it says it runs (``HELLO``, its imports done: an unseal or seal fan-out
  never waits on an interpreter starting), then gets ``UNSEAL`` + the master key as the
  originals did, if the leader is unsealed; nothing of the keyring is in its argv or
  environment. A new worker that does not start counts as a death; a slot whose workers
  keep dying is refilled after a growing delay (``respawn_delay``), each wait logged. A
  frozen build or an embedded interpreter has no interpreter to start
  (:func:`spawn_unavailable`): nothing is started, the leader says why. A worker that
  could not open the keyring (``FAILED``) is sent ``UNSEAL`` again after a growing delay
  while the leader is unsealed.
  The leader tells the others how many processes are alive and how many of them serve
  (``LIVE``, whenever either count changes), which ``/v1/status`` reports as ``workers``
  and ``workers_serving`` beside ``workers_configured``: a worker whose keyring open keeps
  failing is alive but does not serve.

Control messages are single ``SOCK_SEQPACKET`` datagrams: one type byte, then a payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _interpreter
from ..errors import IntegrityError, KeysplitError
from ..keyring import Keyring, UnsealedKeyring
from ..keyring import file as kf
from . import _wire as wire
from .core import KeyService, Request, Response

__all__ = [
    "Fleet",
    "Peer",
    "WorkerLink",
    "default_workers",
    "fork_workers",
    "forwarded",
    "reopen",
    "respawn_delay",
    "spawn_unavailable",
    "spawn_worker",
    "unseal_message",
]

# leader -> worker
SETUP = b"O"  # + JSON: a spawned worker's options and index (the first message it reads)
CONN = b"C"  # + kind (0 plain, 1 TLS), sequence number (u32); one descriptor attached
UNSEAL = b"U"  # + key length (u8), master key, the leader's keyring sealed under it
SEAL = b"S"  # + sequence number (u32), echoed by the worker's DROPPED
RELOAD = b"R"
QUIT = b"Q"
LIVE = b"L"  # + how many processes are alive, how many of them serve (u32 each)
DONE = b"a"  # a change this worker reported has reached every process
# worker -> leader
HELLO = b"h"  # a spawned worker runs (its first message)
READY = b"A"  # unsealed / reloaded
FAILED = b"F"  # could not open the keyring with the master key
SEALED = b"s"  # + reason: a seal request arrived here
DROPPED = b"d"  # + the SEAL's sequence number: this worker's keys are gone
CHANGED = b"c"  # a state change here: reload the others
FORWARD = b"P"  # + id, request: served by the leader (cluster ceremonies keep state there)
TOOK = b"t"  # + a CONN's sequence number: this worker serves that connection
BACK = b"b"  # + a CONN's sequence number: not taken (sealed here): the leader serves it
RETURN = b"r"  # + kind (as CONN's); one descriptor attached: taken, sealed before any byte
# of it was read here: the leader serves it (closed here unread, its client was reset)
ANSWER = b"p"  # (leader -> worker) + id, response
MAX_FORWARD = 128 << 10
"""Largest forwarded request or response (one control datagram)."""
DATAGRAM = 2 * MAX_FORWARD + 4096
"""Largest control datagram (the socketpairs' send buffer): what each end reads at once.
A SOCK_SEQPACKET datagram longer than the read is cut, the rest lost (recv(4096) cut
every forwarded request or answer over 4 KiB)."""
GONE = b""
"""Queued to a dropped worker's waiters (never a message: every message has a type byte):
a fan-out waiting for that worker's answer goes on without it at once."""
_ID = struct.Struct(">I")
_ANSWER_HEAD = struct.Struct(">IHH")


def forwarded(path: str) -> bool:
    """Requests only the leader serves: the cluster endpoints, whose ceremonies (DKG deal
    then finish, recovery rounds) keep state between requests in one process. Evaluation
    and node status keep none (each process reads the share from disk and opens it with
    its own unsealed keyring), so every worker serves them: a batch of 10^4 points is
    larger than one forwarded datagram (``MAX_FORWARD``) and the DPRF wants every core."""
    return path.startswith("/v1/cluster/") and path not in _ANY_PROCESS


_ANY_PROCESS = frozenset({"/v1/cluster/eval", "/v1/cluster/node"})


def _pack_request(rid: int, req: Request) -> bytes:
    meta = json.dumps(
        {"m": req.method, "p": req.path, "h": dict(req.headers), "l": req.local}
    ).encode()
    return FORWARD + _ID.pack(rid) + _ID.pack(len(meta)) + meta + req.body


def _unpack_request(msg: bytes) -> tuple[int, Request]:
    (rid,) = _ID.unpack_from(msg, 0)
    (mlen,) = _ID.unpack_from(msg, 4)
    meta = json.loads(msg[8 : 8 + mlen])
    return rid, Request(meta["m"], meta["p"], meta["h"], msg[8 + mlen :], bool(meta["l"]))


ACK_TIMEOUT = 10.0
"""Seconds the leader waits for a worker to reload before it stops using that worker."""


def unseal_message(kr: UnsealedKeyring) -> bytes:
    """``UNSEAL`` for a worker: the master key of ``kr`` (the leader's), then a copy of
    ``kr`` as the leader holds it, sealed under that key as the keyring file is (empty if
    it cannot be made or would not fit one datagram): :func:`reopen` falls back to it when
    the file was rekeyed while the service runs. Secret-holding: it goes only over a
    worker's socketpair."""
    master = kr.master_key
    try:
        s = kr.local_data_keys().secrets
        keks = dict(s.keks)  # without versions retired since (the store's state)
        meta = dataclasses.replace(kr.keyring.meta, kek_versions=tuple(sorted(keks)))
        held = kf.KeyringSecrets(bytes(s.x25519_private), keks)
        copy = kf.serialize(meta, held, master, os.urandom(12))
    except (KeysplitError, ValueError):
        copy = b""
    if len(copy) > MAX_FORWARD:
        copy = b""
    return UNSEAL + bytes([len(master)]) + master + copy


def _unseal_parts(body: bytes) -> tuple[bytes, bytes]:
    """(master key, sealed copy) of an ``UNSEAL`` payload (:func:`unseal_message`)."""
    n = body[0] if body else 0
    return bytes(body[1 : 1 + n]), bytes(body[1 + n :])


def reopen(
    directory: Path, master: bytes, held: UnsealedKeyring | None = None, copy: bytes = b""
) -> UnsealedKeyring:
    """The keyring at ``directory`` opened with ``master`` (already recovered by an
    audited unseal in the leader): what every worker holds.

    ``held``: the keyring this process serves now (a reload). When ``master`` no longer
    opens the file because it was rekeyed while the service runs, the keys are taken from
    ``held`` instead: a rekey seals the same X25519 key and KEKs under a new master key
    (:mod:`keysplit.keyring.admin`), so they are still this keyring's, authenticated when
    ``held`` was opened. The new keyring has a fresh key cache, store connection and lease,
    like one re-read from the file; the unauthenticated metadata of the rekeyed file is not
    adopted, so a rotate or retire through it is refused ("unseal again") and never seals
    the file under the old master key. The next unseal (with the new shares) reads the file
    again.

    ``copy`` (from :func:`unseal_message`): the same for a process that holds nothing
    yet (a worker started after such a rekey): the keys and the metadata they were
    authenticated with come from the leader's copy, sealed under ``master``."""
    kr = Keyring.open(directory)
    try:
        meta, secrets = kf.open_secrets(kr.home.read_keyring(), master)
    except IntegrityError:
        if held is None:
            if not copy:
                raise
            return UnsealedKeyring(kr, master, kr.adopt_copy(copy, master))
        s = held.local_data_keys().secrets  # a copy: closing ``held`` replaces its own
        return UnsealedKeyring(
            held.keyring, master, kf.KeyringSecrets(bytes(s.x25519_private), dict(s.keks))
        )
    if meta != kr.meta:
        raise KeysplitError("the keyring changed while it was re-opened; try again")
    return UnsealedKeyring(kr, master, secrets)


@dataclass
class Peer:
    """The leader's handle on one worker."""

    index: int
    pid: int
    ctl: socket.socket
    ready: bool = False
    alive: bool = True
    serving: bool = False
    """Its last open of the keyring succeeded and it has not sealed since (``ready`` also
    drops while it reloads: it gets no new connection meanwhile, but it still serves)."""
    reloading: int = 0
    """Reloads (or the unseal) sent and not yet answered: a change meanwhile must send
    its own RELOAD too, since those may have run before it."""
    acks: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    dropped: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    proc: subprocess.Popen[bytes] | None = None
    """A replacement's process (:func:`spawn_worker`); None for a forked original."""
    failures: int = 0
    """Opens of the keyring that failed in a row (reset once it is ready)."""
    retrying: bool = False
    """An ``UNSEAL`` is scheduled for it after a failed open (:meth:`Fleet._ask_again`)."""
    handed: dict[int, tuple[socket.socket, Any]] = field(default_factory=dict)
    """Connections sent to it (by ``CONN`` sequence number, with their TLS context) that it
    has not said it took: the leader's copies, served by the leader if it never does."""

    def exited(self) -> bool:
        """Reaped now or before (never blocks)."""
        if self.proc is not None:
            return self.proc.poll() is not None
        try:
            return os.waitpid(self.pid, os.WNOHANG)[0] != 0
        except ChildProcessError:  # reaped already
            return True


def _recv(ctl: socket.socket) -> tuple[bytes, list[int]]:
    """One control datagram and the descriptor it carries, if any (read without room for
    one, a descriptor is closed by the kernel: its connection reset)."""
    msg, fds, _, _ = socket.recv_fds(ctl, DATAGRAM, 1)
    return msg, fds


def _pair() -> tuple[socket.socket, socket.socket]:
    pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in pair:  # room for a forwarded request (the kernel may cap it lower)
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, DATAGRAM)
    return pair


def fork_workers(
    count: int, keep: list[socket.socket], child: Callable[[int, socket.socket], int]
) -> list[tuple[int, socket.socket]]:
    """Fork ``count`` workers; returns (pid, leader end of its socketpair) for each.

    In a child, ``child(index, its end)`` runs and its result is the exit status; every
    inherited descriptor but its own end (the listening sockets in ``keep`` included) is
    closed first. Call before any event loop or thread exists.
    """
    pairs = [_pair() for _ in range(count)]
    out: list[tuple[int, socket.socket]] = []
    for i, (mine, theirs) in enumerate(pairs, 1):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child (tests see it as a process)
            code = 1
            try:
                for s in keep:
                    s.close()
                for j, (a, b) in enumerate(pairs, 1):
                    a.close()
                    if j != i:
                        b.close()
                code = child(i, theirs)
            finally:
                os._exit(code)
        theirs.close()
        out.append((pid, mine))
    return out


_BOOT = (
    "import sys\n"
    "if sys.argv[2] not in sys.path: sys.path.insert(0, sys.argv[2])\n"
    "from keysplit.service.server import _spawned\n"
    "sys.exit(_spawned(int(sys.argv[1])))\n"
)
_HOME = str(Path(__file__).resolve().parents[2])  # where this keysplit was imported from


def spawn_unavailable() -> str | None:
    """Why no replacement worker can be started in this process (None: it can).
    :func:`spawn_worker` runs ``sys.executable`` as a Python interpreter; in a frozen build
    (PyInstaller, cx_Freeze, py2exe: ``sys.frozen``) it is the application itself, which
    took ``-P -c ...`` as its own arguments (keysplit's CLI: a usage error), and an
    interpreter embedded in another program may have none (:mod:`keysplit._interpreter`,
    which the bulk jobs' driver asks too)."""
    return _interpreter.unavailable()


def spawn_worker(setup: bytes) -> tuple[int, socket.socket, subprocess.Popen[bytes]]:
    """Start a replacement worker: a fresh interpreter (fork+exec, safe in a process with
    an event loop and threads) running ``keysplit.service.server._spawned`` on its end of a
    new socketpair, every other descriptor closed (``-P``: nothing is imported from the
    working directory). ``setup`` (``SETUP`` + JSON, no secret) is its first message.
    Returns (pid, the leader's end, the process)."""
    mine, theirs = _pair()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-P", "-c", _BOOT, str(theirs.fileno()), _HOME],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
        )
        mine.send(setup)
    except BaseException:
        mine.close()
        raise
    finally:
        theirs.close()
    return proc.pid, mine, proc


RESPAWN_WINDOW = 600.0
"""Deaths of one slot's workers within this many seconds count towards its delay."""
REAP_TIMEOUT = 5.0
START_TIMEOUT = 60.0
"""Seconds a new worker has to start (an interpreter and its imports, on a busy host)."""


def respawn_delay(deaths: int) -> float:
    """Seconds before a slot whose worker died is given a new one, ``deaths`` counting this
    death and the slot's others within ``RESPAWN_WINDOW``: at once after one, then 1, 2, 4
    ... up to 60 s, so a worker that dies at start cannot make the leader spin."""
    return 0.0 if deaths <= 1 else float(min(60, 2 ** (deaths - 2)))


class Fleet:
    """The leader's side: dispatch connections, fan out unseal/seal/reload, replace a
    worker that died (``respawn(index)``: a new worker for that slot, see
    :func:`spawn_worker`; None: dropped workers are not replaced, and ``unreplaced``, if
    given, says why each time one is dropped)."""

    def __init__(
        self,
        service: KeyService,
        peers: list[Peer],
        adopt_local: Callable[[socket.socket, Any], Awaitable[None]],
        log: Callable[[str], None],
        respawn: Callable[[int], tuple[int, socket.socket, subprocess.Popen[bytes]]] | None = None,
        unreplaced: str | None = None,
    ) -> None:
        self.service = service
        self.peers = peers
        self._adopt_local = adopt_local
        self._log = log
        self._respawn = respawn
        self._unreplaced = unreplaced
        self._deaths: dict[int, list[float]] = {}
        self._stopping = False
        self._replacing: set[asyncio.Task[Any]] = set()
        self._next = 0
        self._conn_seq = 0
        self._seal_seq = 0
        self._tls: Any = None
        """The TLS context of the connections handed out (there is one TCP listener)."""
        self._tasks: set[asyncio.Task[Any]] = set()
        loop = asyncio.get_running_loop()
        for p in peers:
            p.ctl.setblocking(False)
            loop.add_reader(p.ctl.fileno(), self._on_message, p)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _send(self, p: Peer, msg: bytes, fds: list[int] | None = None) -> bool:
        if not p.alive:
            return False
        try:
            if fds:
                socket.send_fds(p.ctl, [msg], fds)
            else:
                p.ctl.send(msg)
            return True
        except OSError:  # full (a stuck worker) or gone: stop using it
            self._drop(p, "control channel failed")
            return False

    def _drop(self, p: Peer, why: str) -> None:
        if p.alive:
            p.alive = p.ready = p.serving = False
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(p.ctl.fileno())
            self._log(f"worker {p.index} (pid {p.pid}) dropped: {why}")
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
            # wake whatever waits for its answer (an unseal, seal or reload fan-out): it
            # goes on without this worker instead of waiting out ACK_TIMEOUT
            p.acks.put_nowait(GONE)
            p.dropped.put_nowait(GONE)
            self._tell_live()
            if self._stopping:  # stop() reaps it, and closes what was handed to it
                return
            # either way its exit is awaited, then the connections it never took served here
            replace = self._respawn is not None
            t = asyncio.ensure_future(self._replace(p) if replace else self._reap(p))
            self._replacing.add(t)
            t.add_done_callback(self._replacing.discard)
            if not replace and self._unreplaced:
                self._log(
                    f"worker {p.index} not replaced ({self._unreplaced}): "
                    f"{self.service.workers_live} of {1 + len(self.peers)} processes serve "
                    "until keysplit serve is restarted"
                )

    def _tell_live(self) -> None:
        """/v1/status reports the processes alive and those that serve (the leader and the
        workers that hold the keys), whichever process answers it."""
        live = 1 + sum(q.alive for q in self.peers)
        serving = 1 + sum(q.alive and q.serving for q in self.peers)
        self.service.workers_live = live
        self.service.workers_serving = serving
        for q in self.peers:
            self._send(q, LIVE + _ID.pack(live) + _ID.pack(serving))

    async def _reap(self, p: Peer) -> None:
        """Wait (bounded) for a dropped worker's exit, SIGKILL it if it lingers; then serve
        here the connections handed to it that it never took (:meth:`_reclaim`)."""
        gone = False
        for kill in (False, True):
            if kill:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
            deadline = time.monotonic() + REAP_TIMEOUT
            while not (gone := p.exited()) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if gone:
                break
        if not gone:
            self._log(f"worker {p.index} (pid {p.pid}) did not exit")
        self._reclaim(p)
        with contextlib.suppress(Exception):
            p.ctl.close()

    def _reclaim(self, p: Peer) -> None:
        """Serve here what was handed to ``p`` (dropped, its process gone) and never taken.
        Its messages not read yet (it was dropped while it ran) say first which ones it
        took: those were its own, and went with it."""
        while True:  # (a RETURN may follow the TOOKs: read to the end)
            try:
                msg, fds = _recv(p.ctl)
            except OSError:  # none left (BlockingIOError), or closed
                break
            if not msg:
                break
            if fds:
                self._returned(msg, fds)
            elif msg[:1] in (TOOK, BACK):
                self._taken(p, msg)
        handed, p.handed = p.handed, {}
        if handed:
            self._log(f"{len(handed)} connection(s) worker {p.index} never took served here")
        for conn, ctx in handed.values():
            self._spawn(self._adopt_local(conn, ctx))

    def _taken(self, p: Peer, msg: bytes) -> None:
        """``TOOK`` (the worker has the connection: the leader's copy is closed) or
        ``BACK`` (it does not: the leader serves it)."""
        if len(msg) != 1 + _ID.size:
            return
        got = p.handed.pop(_ID.unpack_from(msg, 1)[0], None)
        if got is None:
            return
        conn, ctx = got
        if msg[:1] == BACK:
            self._spawn(self._adopt_local(conn, ctx))
        else:
            conn.close()

    def _returned(self, msg: bytes, fds: list[int]) -> None:
        """A ``RETURN``: a connection a worker took, then sealed before it read any of it;
        served here (sealed: answered 503 "sealed"; a worker whose reload failed: served).
        A descriptor with any other message is closed (none is sent with one)."""
        conns = [socket.socket(fileno=fd) for fd in fds]
        if msg[:1] != RETURN or len(conns) != 1 or self._stopping:
            for c in conns:
                c.close()
            return
        ctx = self._tls if msg[1:2] == b"\x01" else None
        if msg[1:2] == b"\x01" and ctx is None:  # no TLS connection was ever handed out
            conns[0].close()
            return
        self._spawn(self._adopt_local(conns[0], ctx))

    async def _replace(self, old: Peer) -> None:
        """Put a new worker in ``old``'s slot once it says it runs (``HELLO``, its imports
        done); it gets the master key as the originals did (``UNSEAL`` over its socketpair)
        if the leader is unsealed by then. A new worker that does not start counts as a
        death of the slot's worker, as ``old`` did."""
        await self._reap(old)
        while True:
            now = time.monotonic()
            deaths = [t for t in self._deaths.get(old.index, []) if now - t < RESPAWN_WINDOW]
            deaths.append(now)
            self._deaths[old.index] = deaths
            delay = respawn_delay(len(deaths))
            if delay:
                self._log(
                    f"worker {old.index} replaced in {delay:g} s "
                    f"({len(deaths)} deaths within {RESPAWN_WINDOW:g} s)"
                )
                await asyncio.sleep(delay)
            if self._stopping or not any(q is old for q in self.peers):
                return
            assert self._respawn is not None
            try:
                pid, ctl, proc = self._respawn(old.index)
            except OSError as exc:  # e.g. out of memory still: try again, later
                self._log(f"cannot start a new worker {old.index}: {exc.strerror or exc}")
                continue
            new = Peer(old.index, pid, ctl, proc=proc)
            ctl.setblocking(False)
            if await self._started(new):
                break
            self._log(f"new worker {old.index} (pid {pid}) did not start")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            await self._reap(new)
        if self._stopping or not any(q is old for q in self.peers):
            self._send(new, QUIT)  # stopped meanwhile: stop() no longer knows of it
            await self._reap(new)
            return
        self.peers[next(i for i, q in enumerate(self.peers) if q is old)] = new
        asyncio.get_running_loop().add_reader(ctl.fileno(), self._on_message, new)
        self._log(f"worker {new.index} (pid {pid}) started in place of pid {old.pid}")
        self._tell_live()
        kr = self.service.unsealed_keyring
        w = None if kr is None or self.service.sealed else self._order(new, unseal_message(kr))
        if w is not None:
            await w

    async def _started(self, p: Peer) -> bool:
        """Whether a new worker's first message, within ``START_TIMEOUT``, is ``HELLO``."""
        loop = asyncio.get_running_loop()
        try:
            msg = await asyncio.wait_for(loop.sock_recv(p.ctl, DATAGRAM), START_TIMEOUT)
        except (TimeoutError, OSError):
            return False
        return msg == HELLO

    # -- connections ------------------------------------------------------------------------

    async def dispatch(self, conn: socket.socket, ctx: Any) -> None:
        """Serve ``conn`` here or in the next ready worker (round robin over all of them);
        ``ctx`` is the TLS context of the socket it came from (None: plain)."""
        ready = [p for p in self.peers if p.ready]
        if not ready or self.service.sealed:
            await self._adopt_local(conn, ctx)
            return
        self._next = (self._next + 1) % (len(ready) + 1)
        if self._next == 0:
            await self._adopt_local(conn, ctx)
            return
        p = ready[self._next - 1]
        self._conn_seq = seq = (self._conn_seq + 1) & 0xFFFFFFFF
        kind = b"\x00" if ctx is None else b"\x01"
        if ctx is not None:
            self._tls = ctx  # (one TLS listener) what a TLS connection handed back needs
        if not self._send(p, CONN + kind + _ID.pack(seq), [conn.fileno()]):
            await self._adopt_local(conn, ctx)
            return
        p.handed[seq] = (conn, ctx)  # until it says TOOK (or BACK), or is dropped

    # -- fan-out ----------------------------------------------------------------------------

    async def unsealed(self) -> None:
        """The leader just unsealed: hand the master key to every worker and wait (bounded)
        until each is ready, so the unseal is answered once every process serves."""
        kr = self.service.unsealed_keyring
        if kr is None:
            return
        msg = unseal_message(kr)
        waits = [w for p in self.peers if (w := self._order(p, msg))]
        await asyncio.gather(*waits)

    def _order(self, p: Peer, msg: bytes) -> Awaitable[bool] | None:
        """Send UNSEAL or RELOAD to ``p``; what waits for its answer (None: not sent).
        Counted in ``p.reloading`` from the send on, until answered or dropped."""
        if not self._send(p, msg):
            return None
        p.reloading += 1
        return self._await_ready(p)

    async def _await_ready(self, p: Peer) -> bool:
        try:
            msg = await asyncio.wait_for(p.acks.get(), ACK_TIMEOUT)
        except TimeoutError:
            self._drop(p, "did not answer")
            return False
        finally:
            p.reloading -= 1
        if msg == GONE:  # dropped (its socket closed: it exited) while we waited
            p.acks.put_nowait(GONE)  # for any other fan-out waiting on it too
            return False
        p.ready = msg == READY and not self.service.sealed
        if p.ready != p.serving:
            p.serving = p.ready
            self._tell_live()
        if msg == READY:
            p.failures = 0
        else:
            self._log(f"worker {p.index} could not open the keyring")
            if p.alive and not self.service.sealed and not p.retrying and not self._stopping:
                p.failures += 1
                p.retrying = True
                t = asyncio.ensure_future(self._ask_again(p))
                self._replacing.add(t)  # cancelled by stop()
                t.add_done_callback(self._replacing.discard)
        return p.ready

    async def _ask_again(self, p: Peer) -> None:
        """Send ``p`` the key again after a growing delay (1, 2, 4 ... 60 s): a worker whose
        open failed (its store unreachable for a moment, the keyring file unreadable while
        a change was fanned out) sealed itself, and was otherwise asked only at the next
        unseal. Not if the leader sealed, or ``p`` is gone or serves, meanwhile. (A FAILED
        of a worker sealed by a request comes after its SEALED, which sealed the leader
        first: it is never asked again here.)"""
        try:
            delay = respawn_delay(p.failures + 1)
            self._log(f"worker {p.index} asked to open the keyring again in {delay:g} s")
            await asyncio.sleep(delay)
        finally:
            p.retrying = False
        kr = self.service.unsealed_keyring
        if kr is None or self.service.sealed or self._stopping or not p.alive:
            return
        if p.ready or p.reloading or all(q is not p for q in self.peers):
            return
        w = self._order(p, unseal_message(kr))
        if w is not None:
            await w

    def seal_now(self) -> bytes:
        """The leader sealed: tell every worker to drop its keys and connections, without
        waiting (a signal handler). Returns the SEAL message sent."""
        self._seal_seq = (self._seal_seq + 1) & 0xFFFFFFFF
        msg = SEAL + _ID.pack(self._seal_seq)
        for p in self.peers:
            p.ready = p.serving = False
            self._send(p, msg)
        self._tell_live()
        return msg

    async def sealed(self, origin: Peer | None = None) -> None:
        """The leader sealed (``origin``: on that worker's seal request): returns once every
        other worker acknowledged that its keys are gone; ``origin`` is told last, and
        answers its request only then (workers that do not answer in time are dropped)."""
        self._seal_seq = (self._seal_seq + 1) & 0xFFFFFFFF
        msg = SEAL + _ID.pack(self._seal_seq)
        waits = []
        for p in self.peers:
            p.ready = p.serving = False
            if p is not origin and self._send(p, msg):
                waits.append(self._await_dropped(p, msg[1:]))
        self._tell_live()
        await asyncio.gather(*waits)
        if origin is not None:
            self._send(origin, msg)

    async def _await_dropped(self, p: Peer, seq: bytes) -> bool:
        deadline = time.monotonic() + ACK_TIMEOUT
        while True:  # earlier seals' late answers are skipped by their sequence number
            try:
                got = await asyncio.wait_for(p.dropped.get(), deadline - time.monotonic())
            except TimeoutError:
                self._drop(p, "did not acknowledge the seal")
                return False
            if got == GONE:  # dropped while we waited: its keys went with it
                p.dropped.put_nowait(GONE)
                return False
            if got == seq:
                return True

    async def changed(self, origin: Peer | None = None) -> None:
        """A state change in ``origin`` (None: the leader): every other process re-opens
        its keyring before this returns (workers that do not answer are dropped)."""
        kr = self.service.unsealed_keyring
        if kr is None:
            return  # sealed meanwhile: every worker was told to drop its keys
        if origin is not None:
            try:
                self.service.adopt(reopen(self.service.directory, kr.master_key, kr))
            except (KeysplitError, OSError) as exc:  # e.g. the store is down: the others
                # still reload (or close their connections), and the worker is answered
                self._log(f"cannot re-open the keyring after worker {origin.index}'s change: {exc}")
                kr.local_data_keys().cache.clear()  # a shred there holds here all the same
        waits = []
        for p in self.peers:
            # a worker still reloading for an earlier change (or unsealing) may have done
            # so before this one: it reloads again, and this change waits for that too
            if p is not origin and (p.ready or p.reloading):
                p.ready = False
                if w := self._order(p, RELOAD):
                    waits.append(w)
        await asyncio.gather(*waits)

    async def stop(self, timeout: float = 10.0) -> None:
        """Tell every worker to quit; SIGKILL what is still running after ``timeout``."""
        self._stopping = True
        for t in list(self._replacing):
            t.cancel()
        await asyncio.gather(*self._replacing, return_exceptions=True)
        for p in self.peers:
            self._send(p, QUIT)
        deadline = time.monotonic() + timeout
        for p in self.peers:
            while time.monotonic() < deadline:
                if p.exited():
                    break
                await asyncio.sleep(0.02)
            else:
                with contextlib.suppress(ProcessLookupError, ChildProcessError):
                    os.kill(p.pid, signal.SIGKILL)
                    os.waitpid(p.pid, 0)
            p.alive = False
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(p.ctl.fileno())
            p.ctl.close()
            for conn, _ in p.handed.values():  # stopping: nothing serves them any more
                conn.close()
            p.handed.clear()

    # -- messages from workers --------------------------------------------------------------

    def _on_message(self, p: Peer) -> None:
        while True:
            try:
                msg, fds = _recv(p.ctl)
            except BlockingIOError:
                return
            except OSError:
                msg, fds = b"", []
            if not msg:
                self._drop(p, "exited")
                return
            kind, body = msg[:1], msg[1:]
            if fds:
                self._returned(msg, fds)
                continue
            if kind in (READY, FAILED):
                p.acks.put_nowait(kind)
            elif kind == DROPPED:
                p.dropped.put_nowait(bytes(body))
            elif kind == SEALED:
                reason = body.decode("utf-8", "replace") or "seal request"
                self.service.seal(reason, audit=False)  # the worker audited it
                self._spawn(self.sealed(origin=p))
            elif kind == CHANGED:
                self._spawn(self._changed_from(p))
            elif kind == FORWARD:
                self._answer(p, msg[1:])
            elif kind in (TOOK, BACK):
                self._taken(p, msg)

    def _answer(self, p: Peer, msg: bytes) -> None:
        try:
            rid, req = _unpack_request(msg)
        except (ValueError, KeyError, TypeError, struct.error):
            self._drop(p, "malformed forwarded request")
            return
        r = self.service.handle(req)
        if len(r.body) > MAX_FORWARD:
            err = KeysplitError("response too large to forward from the leader")
            r = Response(500, wire.error_body(err))
        ct = r.content_type.encode()
        self._send(p, ANSWER + _ANSWER_HEAD.pack(rid, r.status, len(ct)) + ct + r.body)

    async def _changed_from(self, p: Peer) -> None:
        await self.changed(origin=p)
        p.ready = p.alive and not self.service.sealed
        self._send(p, DONE)


class WorkerLink:
    """A worker's side of its socketpair: receives connections and orders."""

    def __init__(
        self,
        ctl: socket.socket,
        service: KeyService,
        adopt_conn: Callable[[socket.socket, bool], Awaitable[None]],
        on_seal: Callable[[], None],
        stop: Callable[[str], None],
        log: Callable[[str], None],
    ) -> None:
        self.ctl = ctl
        self.service = service
        self._adopt_conn = adopt_conn
        self._on_seal = on_seal
        self._stop = stop
        self._log = log
        self._master = b""
        self._copy = b""  # the leader's keyring sealed under _master (unseal_message)
        self._done: asyncio.Queue[bytes] = asyncio.Queue()
        self._leader_sealed = asyncio.Event()
        self._answers: dict[int, asyncio.Future[Response]] = {}
        self._rid = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        ctl.setblocking(False)
        asyncio.get_running_loop().add_reader(ctl.fileno(), self._on_message)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def tell(self, msg: bytes) -> None:
        with contextlib.suppress(OSError):
            self.ctl.send(msg)

    def give_back(self, conn: socket.socket, tls: bool) -> None:
        """Hand ``conn`` back to the leader (``RETURN``): this process took it (``TOOK``)
        and sealed before it read any of it. Closed here unread (the leader's copy closed
        at ``TOOK``), its client would be reset; the leader answers it instead."""
        try:
            socket.send_fds(self.ctl, [RETURN + (b"\x01" if tls else b"\x00")], [conn.fileno()])
        except OSError as exc:  # the leader is gone (or stuck): nothing can serve it
            self._log(f"cannot hand a connection back to the leader: {exc.strerror or exc}")
        finally:
            conn.close()

    async def forward(self, req: Request) -> Response:
        """Have the leader serve ``req`` (see :func:`forwarded`)."""
        if len(req.body) > MAX_FORWARD:
            err = KeysplitError(f"request body larger than {MAX_FORWARD:,} bytes")
            return Response(413, wire.error_body(err))
        self._rid += 1
        msg = _pack_request(self._rid, req)
        if len(msg) > DATAGRAM:  # the headers too (up to 64 KiB of them)
            err = KeysplitError("request too large to forward to the leader")
            return Response(413, wire.error_body(err))
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._answers[self._rid] = fut
        try:
            self.ctl.send(msg)
            return await asyncio.wait_for(fut, 120.0)
        except (OSError, TimeoutError):
            err = KeysplitError("the leader process did not answer")
            return Response(503, wire.error_body(err))
        finally:
            self._answers.pop(self._rid, None)

    async def sealed(self) -> None:
        """A seal request arrived here (this process already sealed): have the leader seal
        every process, and return once it says all others dropped their keys (bounded)."""
        # sealed here: never re-open the keyring before the leader's next UNSEAL (a RELOAD
        # for another worker's change, sent before the leader saw this seal, re-opened it
        # with the key kept, and this process served again until the leader's SEAL came)
        self._master = self._copy = b""
        if self._leader_sealed.is_set():
            return
        self.tell(SEALED + b"seal request")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._leader_sealed.wait(), ACK_TIMEOUT * 2)

    async def changed(self) -> None:
        """Report a state change and wait until every other process has reloaded."""
        self.tell(CHANGED)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done.get(), ACK_TIMEOUT * 2)

    def _open(self) -> None:
        if not self._master:  # sealed (SEAL or a seal request): nothing to open with
            self.tell(FAILED)
            return
        try:
            held = self.service.unsealed_keyring  # None on UNSEAL: the file is read
            self.service.adopt(reopen(self.service.directory, self._master, held, self._copy))
        except (KeysplitError, OSError) as exc:
            self._log(f"cannot open the keyring with the leader's key: {exc}")
            self.service.seal("open failed", audit=False)
            self._on_seal()  # its clients reconnect to a process that serves (not 503)
            self.tell(FAILED)
            return
        self.tell(READY)

    def _on_message(self) -> None:
        while True:
            try:
                msg, fds, _, _ = socket.recv_fds(self.ctl, DATAGRAM, 1)
            except BlockingIOError:
                return
            except OSError:
                msg, fds = b"", []
            if not msg:
                self._stop("leader gone")
                return
            kind, body = msg[:1], msg[1:]
            if kind == CONN:
                seq = bytes(body[1 : 1 + _ID.size])
                for fd in fds:
                    conn = socket.socket(fileno=fd)
                    # the leader holds a copy until it reads our answer: closing ours
                    # resets nothing (closed unread, the only copy was reset)
                    if self.service.sealed:  # (e.g. its open failed) the leader answers it
                        self.tell(BACK + seq)
                        conn.close()
                    else:
                        self.tell(TOOK + seq)
                        self._spawn(self._adopt_conn(conn, body[:1] == b"\x01"))
            elif kind == UNSEAL:
                self._master, self._copy = _unseal_parts(body)
                self._leader_sealed.clear()
                self._open()
            elif kind == RELOAD:
                self._open()
            elif kind == SEAL:
                self._master = self._copy = b""
                self.service.seal("sealed by the leader", audit=False)
                self._on_seal()
                self.tell(DROPPED + body)
                self._leader_sealed.set()
            elif kind == DONE:
                self._done.put_nowait(kind)
            elif kind == LIVE and len(body) in (_ID.size, 2 * _ID.size):
                (self.service.workers_live,) = _ID.unpack_from(body, 0)
                if len(body) > _ID.size:  # a leader of before workers_serving sends one
                    (self.service.workers_serving,) = _ID.unpack_from(body, _ID.size)
            elif kind == ANSWER and len(body) >= _ANSWER_HEAD.size:
                rid, status, ctlen = _ANSWER_HEAD.unpack_from(body, 0)
                at = _ANSWER_HEAD.size
                fut = self._answers.get(rid)
                if fut is not None and not fut.done():
                    ct = body[at : at + ctlen].decode("ascii", "replace")
                    fut.set_result(Response(status, bytes(body[at + ctlen :]), ct))
            elif kind == QUIT:
                self._stop("leader stopping")
                return


def default_workers() -> int:
    """The core count (what ``--workers`` defaults to)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
