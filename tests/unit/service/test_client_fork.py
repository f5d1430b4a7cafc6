"""A ``keysplit.Client`` made before ``os.fork()`` (a server that preloads its app, then
forks its workers; multiprocessing's fork start method): the child never uses the
parent's connection, whose answers would then go to whichever process reads first.

The service is a thread of this (the parent) process on a real Unix socket, answering
each frame request on its own connection with the request's subjects (decrypt: each
item's "plaintext" is the subject it was asked for, so an answer meant for another
request shows); the processes order their steps through pipes; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import tempfile
import threading
from pathlib import Path

import pytest
from test_frames_client_state import WAIT, _echo, _listen, _request

from keysplit.service import Client, ServiceError
from keysplit.service import client as client_mod

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


class _Echo:
    """Answers every frame request with its own subjects, each connection in a thread;
    the parent's request ("parent") only once the child's came (on any connection: a
    service still busy with the first when the second arrives)."""

    def __init__(self, path: Path) -> None:
        self.lsock, self.url = _listen(path)
        self.connections, self.child_asked = 0, threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.lsock.accept()
                self.connections += 1
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(WAIT)
        with contextlib.suppress(OSError), conn:
            while (subjects := _request(conn)) is not None:
                if subjects == ["child"]:
                    self.child_asked.set()
                if subjects == ["parent"]:  # until the child asked, here or elsewhere
                    for _ in range(int(WAIT / 0.05)):
                        if self.child_asked.is_set() or select.select([conn], [], [], 0.05)[0]:
                            break
                conn.sendall(_echo(subjects))


def _wait_readable(fd: int) -> None:
    assert select.select([fd], [], [], WAIT)[0], "the other process did not answer"


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_never_shares_the_parents_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The parent has sent a decrypt on its kept connection and not yet read the answer
    when the child sends its own: before, the child's call went out on the inherited
    connection, read the parent's answer first and returned the parent's plaintext as its
    own (and the parent the child's). Now the child opens its own connection."""
    srv = _Echo(Path(tempfile.mkdtemp(prefix="ksf", dir="/tmp")) / "k.sock")
    c = Client(srv.url, token="t", timeout=WAIT)
    assert c.decrypt_many(["warm"], [b"r" * 40]) == [b"warm"]  # the kept connection
    go_r, go_w = os.pipe()  # parent -> child: my request is out
    got_r, got_w = os.pipe()  # child -> parent: what my call returned
    pid = os.fork()
    if pid == 0:  # the child: no pytest from here on, only os._exit
        code = 1
        try:
            _wait_readable(go_r)
            out = c.decrypt_many(["child"], [b"r" * 40])
            os.write(got_w, b",".join(out))
            code = 0
        finally:
            os._exit(code)
    read = client_mod._FrameConn.read
    first = [True]

    def parent_reads_late(self: client_mod._FrameConn, k: int) -> bytes:
        if first[0]:  # the request is out: let the child make its call, then read
            first[0] = False
            os.write(go_w, b"1")
            _wait_readable(got_r)
        return read(self, k)

    monkeypatch.setattr(client_mod._FrameConn, "read", parent_reads_late)
    try:
        mine = c.decrypt_many(["parent"], [b"r" * 40])
        theirs = os.read(got_r, 1000)
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (mine, theirs) == ([b"parent"], b"child")
    assert srv.connections == 2  # the parent's, then the child's own
    c.close()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_does_not_wait_for_a_lock_its_parent_held() -> None:
    """A fork while another thread of the parent holds the client's key-cache lock (a
    cached client in a threaded app that forks): the child's copy of the lock stayed held
    for ever, and its first call that touched the cache never returned. The child makes
    its locks anew (here its call reaches no service: a ServiceError, promptly)."""
    sock = Path(tempfile.mkdtemp(prefix="ksf", dir="/tmp")) / "none.sock"
    c = Client(f"unix:{sock}", token="t", timeout=5, cache_max_age=60)
    assert c._remote is not None
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        assert c._remote is not None
        with c._remote._lock:
            held.set()
            release.wait(WAIT)

    t = threading.Thread(target=holder, daemon=True)
    t.start()
    assert held.wait(WAIT)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            try:
                c.encrypt_many(["u"], [b"x"])
            except ServiceError:
                code = 0
        finally:
            os._exit(code)
    release.set()
    t.join(WAIT)
    for _ in range(int(WAIT / 0.05)):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        select.select([], [], [], 0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise AssertionError("the forked child waited for ever on the parent's lock")
    assert os.waitstatus_to_exitcode(status) == 0
    c.close()
