"""A Unix-socket HTTP proxy in front of one ``keysplit serve`` node, for tests of a node that
misbehaves on the wire (lies, or is cut off mid-protocol) while the real node runs behind it.

Requests are forwarded one by one; a request whose path is in :attr:`NodeProxy.cut` is never
forwarded (the connection is closed: a network failure before the node saw it), one in
:attr:`NodeProxy.drop_answer` is forwarded and its answer dropped (the node acted, the caller
never hears of it), and one in :attr:`NodeProxy.gated` waits until :attr:`NodeProxy.gate` is
set before it is forwarded. Subclasses rewrite answers in :meth:`NodeProxy.rewrite`
(:class:`LyingProxy` answers every evaluation wrongly).
"""

from __future__ import annotations

import io
import socket
import threading
from pathlib import Path

__all__ = ["LyingProxy", "NodeProxy"]


class NodeProxy:
    def __init__(self, target: Path, path: Path) -> None:
        # absolute: the proxy's threads run beside in-process commands that change the
        # process's working directory (service_helpers.cli_here)
        self.target, self.path = target.absolute(), path.absolute()
        self.cut: set[str] = set()
        self.drop_answer: set[str] = set()
        self.gated: set[str] = set()
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = 0  # requests held at the closed gate now
        self.seen: list[str] = []  # the path of every request read, in order
        self._count = threading.Lock()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"unix:{self.path}"

    def rewrite(self, path: str, head: bytes, body: bytes) -> bytes:
        """The body sent back for ``path`` (default: the node's own)."""
        return body

    def _pass_gate(self) -> bool:
        with self._count:
            self.waiting += 1
        try:
            return self.gate.wait(60)
        finally:
            with self._count:
                self.waiting -= 1

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _read_http(f: io.BufferedReader) -> bytes:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = f.readline()
            if not line:
                return b""
            head += line
        n = 0
        for ln in head.split(b"\r\n"):
            if ln.lower().startswith(b"content-length:"):
                n = int(ln.split(b":", 1)[1])
        return head + f.read(n)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(60)
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        up.settimeout(60)
        try:
            up.connect(str(self.target))
            cf, uf = conn.makefile("rb"), up.makefile("rb")
            while True:
                req = self._read_http(cf)
                if not req:
                    return
                path = req.split(b" ", 2)[1].decode()
                self.seen.append(path)
                if path in self.cut:
                    return
                if path in self.gated and not self._pass_gate():
                    return
                up.sendall(req)
                head, _, body = self._read_http(uf).partition(b"\r\n\r\n")
                if path in self.drop_answer:
                    return
                new = self.rewrite(path, head, body)
                if new != body:
                    head = b"\r\n".join(
                        (b"Content-Length: %d" % len(new))
                        if ln.lower().startswith(b"content-length:")
                        else ln
                        for ln in head.split(b"\r\n")
                    )
                conn.sendall(head + b"\r\n\r\n" + new)
        except OSError:
            return
        finally:
            conn.close()
            up.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()
        self.path.unlink(missing_ok=True)


class LyingProxy(NodeProxy):
    """A proxy that answers every evaluation wrongly: it adds the base point to the first
    output (a valid point, just not ``s_i*H``)."""

    def rewrite(self, path: str, head: bytes, body: bytes) -> bytes:
        import rbcl

        from keysplit.service import _wire as wire

        if b"vnd.keysplit.batch" in head and body:
            h, _, items = wire.decode_frame(body)
            if "index" in h and items and items[0]:
                g = rbcl.crypto_scalarmult_ristretto255_base(b"\x01" + bytes(31))
                items[0] = rbcl.crypto_core_ristretto255_add(items[0], g)
                return wire.encode_frame(h, items)
        return body
