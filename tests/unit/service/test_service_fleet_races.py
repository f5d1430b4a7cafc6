"""Red team (issue 23 follow-up): ``keysplit serve --workers 3`` under concurrent load.

test_service_fleet.py checks that a shred or seal reaches every process when nothing else
is running. Here other processes are busy with batches of the same subject while the
shred (or seal) arrives through another one: every request *sent after* the shred (seal)
was answered must fail, whichever process serves it (linearizability, no timing: each
loader notes whether the answer was already in before it sent its request).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_helpers import Server

from keysplit import Client, Keyring, KeysplitError, SealedError
from keysplit.service.tokens import OPERATIONS, TokenList, mac_key

pytestmark = pytest.mark.slow

WORKERS = 3
BATCH = 200


@pytest.fixture
def sockdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ksr", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _pinned(url: str, token: str) -> dict[int, Client]:
    out: dict[int, Client] = {}
    for _ in range(4 * WORKERS):
        c = Client(url, token=token, timeout=60)
        out.setdefault(c.service_status()["worker"], c)
        if len(out) == WORKERS:
            return out
    raise AssertionError(f"only processes {sorted(out)} served")


class _Loader(threading.Thread):
    """Decrypts a batch of ``subject``'s records again and again on one pinned client;
    records, per request, whether ``after`` was set before it was sent and how it ended."""

    def __init__(self, c: Client, records: list[bytes], subject: str, after: threading.Event):
        super().__init__(daemon=True)
        self.c, self.records, self.subject, self.after = c, records, subject, after
        self.stop = threading.Event()
        self.results: list[tuple[bool, str]] = []

    def run(self) -> None:
        subjects = [self.subject] * len(self.records)
        while not self.stop.is_set():
            sent_after = self.after.is_set()
            try:
                self.c.decrypt_many(subjects, self.records)
                self.results.append((sent_after, "ok"))
            except SealedError:
                self.results.append((sent_after, "sealed"))
            except KeysplitError as exc:
                self.results.append((sent_after, type(exc).__name__))
            if sent_after and len([r for r in self.results if r[0]]) >= 5:
                return


def _setup(tmp_path: Path) -> tuple[Keyring, dict, str]:
    kr, shares = Keyring.create(tmp_path / "vault", 2, ["a", "b", "c"])
    with kr.unseal([shares["a"], shares["b"]]) as u:
        token = TokenList.read(kr.path, kr.keyring_id).create(
            mac_key(u.audit_key(), kr.keyring_id), name="t", allow=list(OPERATIONS),
            subject_prefix="",
        )[0]  # fmt: skip
    return kr, shares, token


def _unseal(url: str, kr: Keyring, shares: dict) -> None:
    c = Client(url)
    for n in "ab":
        c.submit_share(shares[n], c.unseal_offer(), keyring_id=kr.keyring_id)
    c.close()


@pytest.mark.parametrize("change", ["shred", "seal"])
def test_a_change_through_one_worker_holds_for_requests_sent_after_it_on_busy_workers(
    tmp_path: Path, sockdir: Path, change: str
) -> None:
    kr, shares, token = _setup(tmp_path)
    with Server(kr.path, sockdir / "s.sock", "--workers", str(WORKERS)) as srv:
        _unseal(srv.url, kr, shares)
        clients = _pinned(srv.url, token)
        records = clients[0].encrypt_many(["u/x"] * BATCH, [b"%d" % i for i in range(BATCH)])
        after = threading.Event()
        # two loaders per process that does not take the change (and cache u/x's key)
        loaders = []
        for w in range(WORKERS):
            if w == 1:
                continue
            for _ in range(2):
                c = Client(srv.url, token=token, timeout=60)
                while c.service_status()["worker"] != w:  # pin a new connection to w
                    c.close()
                    c = Client(srv.url, token=token, timeout=60)
                loaders.append(_Loader(c, records, "u/x", after))
        for ld in loaders:
            ld.start()
        while not all(ld.results for ld in loaders):  # every loader got answers before
            threading.Event().wait(0.01)
        if change == "shred":
            assert clients[1].shred("u/x") is True
        else:
            assert clients[1].seal() is True
        after.set()
        for ld in loaders:
            ld.join(120)
            assert not ld.is_alive()
        for ld in loaders:
            assert ld.results[0] == (False, "ok")
            late = [r for s, r in ld.results if s]
            assert late and "ok" not in late, ld.results[-10:]
        for c in clients.values():
            c.close()
        for ld in loaders:
            ld.c.close()
