"""Soak test of the key service: load from several client processes under chaos.

``make soak`` (minutes; not in ``make test`` or CI). A throwaway keyring (2 of 3, plain
shares) on a throwaway PostgreSQL store (SQLite, with one line saying so, when PostgreSQL
cannot run here), ``keysplit serve`` on a Unix socket, unsealed by two custodians with
``keysplit unseal --server``; a quorum-made token. Then, until ``--duration`` ends:

* ``--clients`` processes drive bounded loopback load through :class:`keysplit.Client`
  (``encrypt_many`` of new records, ``decrypt_many`` of acknowledged ones, ``datakeys``),
  retrying with capped exponential backoff on the errors an outage explains (sealed,
  unreachable, store connection lost). Each keeps a ledger of every record the service
  acknowledged and of a hash of every data key it was handed.
* a chaos loop SIGKILLs the service every ``--kill-every`` seconds, restarts it and
  re-unseals it as custodians would (a different pair each time), and between kills
  terminates the service's PostgreSQL backends (``pg_terminate_backend``).
* key ceremonies from the CLI while the load runs (issue 19: one keyring, many
  processes): every ``--rotate-every`` seconds ``keysplit rotate``, ``rewrap`` and
  ``retire`` of every older version (a refusal naming a live holder, e.g. the lease of a
  just-killed service, is retried next round); every ``--shred-every`` seconds ``keysplit
  shred --wait`` of one of the "victim" subjects the clients also write to (and never
  read back during the run).

Victims are checked by when their records were acknowledged: a record acknowledged before
a shred of its subject started must raise ``ShreddedError``; one acknowledged after the
subject's last shred finished must decrypt; one acknowledged while a shred ran may do
either (it is ordered before or after that shred).

At the end the service is killed once more, restarted and unsealed, and every
acknowledged record must decrypt to its plaintext and every data key must come back the
same. Exit status 1 on any lost or corrupt record, changed data key, unexpected error kind
or a phase that overran its time bound; the report gives requests served and errors by
kind. Every wait is bounded; every process started is stopped by its PID.

Why: the service's unit and integration tests restart it cleanly; this checks what an
acknowledgement is worth when the process dies at any instruction and the store
connection vanishes under it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import multiprocessing
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SoakResult", "main", "run"]

KEYSPLIT = str(Path(sys.executable).parent / "keysplit")
CUSTODIANS = ("a", "b", "c")
PREFIX = "soak/"
CLI_TIMEOUT = 120.0
START_TIMEOUT = 60.0
# Errors an outage explains: the client retries these with backoff.
RETRIED = ("SealedError", "Unreachable", "StoreUnavailable")
VICTIMS = 4  # shreddable subjects per client


def victim_subject(cid: int, k: int) -> str:
    return f"{PREFIX}v/c{cid}/v{k}"


def _kind(exc: BaseException) -> str:
    """The error's kind for the report (a lost store connection is its own kind)."""
    name = type(exc).__name__
    if name == "KeyringError" and str(exc).startswith("PostgreSQL key store:"):
        return "StoreUnavailable"
    if name == "ServiceError" and str(exc).startswith("cannot reach the key service"):
        return "Unreachable"  # any other ServiceError is a malformed answer: unexpected
    return name


def _h(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()  # the ledger never holds a data key


# -- the client processes -----------------------------------------------------------------------


def _client(cid: int, url: str, token: str, workdir: str, until: float, batch: int) -> None:
    """One client process: load until ``until`` (time.time()), ledger and stats in workdir."""
    import keysplit

    rng = random.Random(cid * 7919 + os.getpid())
    client = keysplit.Client(url, token=token, timeout=30.0)
    ledger_path = Path(workdir) / f"ledger-{cid}.jsonl"
    keys_path = Path(workdir) / f"keys-{cid}.jsonl"
    ledger: list[tuple[str, dict[str, str], bytes, bytes]] = []
    keys: dict[str, str] = {}
    ops: Counter[str] = Counter()
    items: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    bad: list[str] = []
    slowest: dict[str, float] = {}
    subjects = [f"{PREFIX}c{cid}/s{i}" for i in range(200)]
    victims = [victim_subject(cid, k) for k in range(VICTIMS)]
    seq = 0
    backoff = 0.05
    with (
        open(ledger_path, "a") as lf,
        open(keys_path, "a") as kf,
        open(Path(workdir) / f"victims-{cid}.jsonl", "a") as vf,
    ):
        while time.time() < until and len(bad) < 20:
            op = rng.choices(("encrypt", "decrypt", "datakey", "victim"), (5, 3, 2, 1))[0]
            if op == "decrypt" and not ledger:
                op = "encrypt"
            t_op = time.monotonic()
            try:
                if op == "encrypt":
                    seq += 1
                    n = rng.randint(1, batch)
                    subs = [rng.choice(subjects) for _ in range(n)]
                    ctx = {"client": str(cid), "seq": str(seq)}
                    pts = [rng.randbytes(rng.randint(0, 200)) for _ in range(n)]
                    recs = client.encrypt_many(subs, pts, ctx)
                    for s, p, r in zip(subs, pts, recs, strict=True):
                        ledger.append((s, ctx, p, r))
                        lf.write(json.dumps({"s": s, "c": ctx, "p": _b64(p), "r": _b64(r)}))
                        lf.write("\n")
                    lf.flush()
                elif op == "victim":  # written, never read back until the final check
                    n = rng.randint(1, 3)
                    subs = [rng.choice(victims) for _ in range(n)]
                    pts = [rng.randbytes(rng.randint(0, 100)) for _ in range(n)]
                    recs = client.encrypt_many(subs, pts)
                    acked = time.time()
                    for s_, p, r in zip(subs, pts, recs, strict=True):
                        vf.write(json.dumps({"s": s_, "p": _b64(p), "r": _b64(r), "t": acked}))
                        vf.write("\n")
                    vf.flush()
                elif op == "decrypt":
                    sample = rng.sample(ledger, min(len(ledger), rng.randint(1, batch)))
                    out = client.decrypt_many(
                        [e[0] for e in sample], [e[3] for e in sample], [e[1] for e in sample]
                    )
                    n = len(sample)
                    for e, p in zip(sample, out, strict=True):
                        if p != e[2]:
                            bad.append(f"client {cid}: {e[0]} decrypted to other bytes")
                else:
                    subs = list(dict.fromkeys(rng.choice(subjects) for _ in range(batch)))
                    n = len(subs)
                    for s, k in zip(subs, client.datakeys(subs), strict=True):
                        seen = keys.get(s)
                        if seen is None:
                            keys[s] = _h(k)
                            kf.write(json.dumps({"s": s, "k": _h(k)}) + "\n")
                            kf.flush()
                        elif seen != _h(k):
                            bad.append(f"client {cid}: data key of {s} changed")
                ops[op] += 1
                items[op] += n
                backoff = 0.05
                slowest[op] = max(slowest.get(op, 0.0), time.monotonic() - t_op)
            except Exception as exc:  # every kind is counted; unexpected ones fail the run
                kind = _kind(exc)
                errors[f"{op}:{kind}"] += 1
                if kind not in RETRIED:
                    bad.append(f"client {cid}: {op} raised {kind}: {exc}"[:300])
                time.sleep(min(backoff, max(0.0, until - time.time())))
                backoff = min(backoff * 2, 1.0)
    client.close()
    stats = {
        "ops": ops,
        "items": items,
        "errors": errors,
        "bad": bad,
        "records": len(ledger),
        "slowest": slowest,
        "late": time.time() - until,
    }
    (Path(workdir) / f"stats-{cid}.json").write_text(json.dumps(stats))


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


# -- the service ----------------------------------------------------------------------------------


class Service:
    """``keysplit serve DIR --socket PATH`` in a subprocess, killed and restarted at will."""

    def __init__(self, directory: Path, sock: Path, log: Path) -> None:
        self.directory = directory
        self.sock = sock
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"unix:{sock}"
        self._pair = 0

    def start(self) -> float:
        """Start it and wait until it answers (sealed); returns the seconds it took."""
        import keysplit

        t0 = time.monotonic()
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                [KEYSPLIT, "serve", str(self.directory), "--socket", str(self.sock)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        probe = keysplit.Client(self.url, timeout=5)
        while True:
            if self.proc.poll() is not None:
                raise SoakFailure(f"serve exited with {self.proc.returncode} (see {self.log})")
            if self.sock.exists():
                try:
                    doc = probe.service_status()
                    if not doc.get("sealed"):
                        raise SoakFailure("a freshly started service is not sealed")
                    probe.close()
                    return time.monotonic() - t0
                except keysplit.KeysplitError:
                    pass
            if time.monotonic() - t0 > START_TIMEOUT:
                raise SoakFailure("serve did not come up in time")
            time.sleep(0.05)

    def unseal(self) -> float:
        """Two custodians run ``keysplit unseal --server`` (a different pair each time)."""
        t0 = time.monotonic()
        pairs = [("a", "b"), ("b", "c"), ("a", "c")]
        pair = pairs[self._pair % len(pairs)]
        self._pair += 1
        # both at once, as custodians on their own machines would (progress is shared)
        running = []
        for name in pair:
            share = self.directory.parent / "shares" / f"{name}.g1.kss"
            args = ["unseal", str(self.directory), "--server", self.url, "--share", str(share)]
            running.append((name, _cli_start(*args)))
        failed = []
        for name, proc in running:
            try:
                _, err = proc.communicate(timeout=CLI_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate(timeout=10)
            if proc.returncode:
                failed.append(f"unseal by {name} failed: {err.strip()[-300:]}")
        if failed:
            raise SoakFailure("; ".join(failed))
        return time.monotonic() - t0

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


class SoakFailure(Exception):
    """A phase of the soak itself failed (setup, restart, unseal, time bound)."""


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KEYSPLIT, *args], input="", capture_output=True, text=True, timeout=CLI_TIMEOUT
    )


def _cli_start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [KEYSPLIT, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _make_keyring(root: Path, store_url: str) -> Path:
    """A 2-of-3 keyring on ``store_url`` with plain share files in root/shares."""
    from keysplit.ceremony import Custody, DirectorySink
    from keysplit.keyring import Keyring

    directory = root / "vault"
    _, shares = Keyring.create(directory, 2, list(CUSTODIANS), store_url=store_url)
    sink = DirectorySink(root / "shares")
    for name, share in shares.items():
        c = Custody(name)
        sink.write(c, 1, c.seal(share))
    return directory


def _drop_backends(pg_url: str) -> int:
    """Terminate every other backend of the store's database (the service's pool)."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return sum(1 for (ok,) in rows if ok)


# -- ceremonies under load ---------------------------------------------------------------------


def _ceremonies(directory: Path, quorum: list[str], res: SoakResult) -> None:
    """rotate, rewrap, then retire every version older than the current one."""
    r = _cli("rotate", str(directory), *quorum)
    if r.returncode:
        res.problems.append(f"rotate failed: {r.stderr.strip()[-300:]}")
        return
    res.rotations += 1
    current = int(r.stdout.strip())
    r = _cli("rewrap", str(directory), *quorum, "--json")
    if r.returncode or json.loads(r.stdout)["remaining"]:
        res.problems.append(f"rewrap failed: {r.stderr.strip()[-300:]}")
        return
    res.rewraps += 1
    r = _cli("status", str(directory), "--json")
    versions = json.loads(r.stdout)["kek_versions"] if r.returncode == 0 else []
    for v in versions:
        if v >= current:
            continue
        r = _cli("retire", str(directory), str(v), *quorum)
        if r.returncode == 0:
            res.retired.append(v)
        elif "still the current KEK of a live process" in r.stderr:
            res.retire_refusals += 1  # e.g. the lease of a service killed moments ago
        else:
            res.problems.append(f"retire {v} failed: {r.stderr.strip()[-300:]}")


def _check_victims(
    final: Any, root: Path, clients: int, shreds: list[tuple[str, float, float]], res: SoakResult
) -> None:
    """Each victim record against the shreds of its subject (module docstring)."""
    import keysplit

    by_subject: dict[str, list[tuple[float, float]]] = {}
    for subject, t0, t1 in shreds:
        by_subject.setdefault(subject, []).append((t0, t1))
    for cid in range(clients):
        path = root / f"victims-{cid}.jsonl"
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            e = json.loads(line)
            spans = by_subject.get(e["s"], [])
            dead = any(t0 > e["t"] for t0, _ in spans)
            either = not dead and any(t0 <= e["t"] <= t1 for t0, t1 in spans)
            try:
                got: bytes | None = final.decrypt(base64.b64decode(e["r"]), subject=e["s"])
            except keysplit.ShreddedError:
                got = None
            except keysplit.KeysplitError as exc:
                res.problems.append(f"victim record of {e['s']}: {_kind(exc)}: {exc}"[:300])
                continue
            if got is not None and got != base64.b64decode(e["p"]):
                res.problems.append(f"victim record of {e['s']} decrypted to other bytes")
            elif dead:
                if got is None:
                    res.victims_dead += 1
                else:
                    res.problems.append(f"victim record of {e['s']} outlived its shred")
            elif either:
                res.victims_either += 1
            elif got is None:
                res.problems.append(f"victim record of {e['s']} lost (written after the shred)")
            else:
                res.victims_alive += 1


# -- the run ------------------------------------------------------------------------------------


@dataclass
class SoakResult:
    store: str
    duration: float = 0.0
    clients: int = 0
    kills: int = 0
    drops: int = 0
    backends_terminated: int = 0
    rotations: int = 0
    rewraps: int = 0
    retired: list[int] = field(default_factory=list)
    retire_refusals: int = 0
    shreds: int = 0
    shreds_unacknowledged: int = 0
    victims_dead: int = 0
    victims_alive: int = 0
    victims_either: int = 0
    ops: Counter[str] = field(default_factory=Counter)
    items: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    records: int = 0
    verified: int = 0
    keys_checked: int = 0
    restart_s: list[float] = field(default_factory=list)
    slowest: dict[str, float] = field(default_factory=dict)
    late: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self) -> str:
        req = sum(self.ops.values())
        lines = [
            f"soak: store {self.store}, {self.clients} clients, {self.duration:.1f} s under load",
            f"  requests served: {req} ("
            + ", ".join(f"{k} {v} / {self.items[k]} items" for k, v in sorted(self.ops.items()))
            + ")",
            f"  errors by kind: {dict(sorted(self.errors.items())) or 'none'}",
            f"  chaos: {self.kills} SIGKILL+restart+unseal, {self.drops} store drops "
            f"({self.backends_terminated} backends terminated)",
        ]
        lines.append(
            f"  ceremonies under load: {self.rotations} rotate, {self.rewraps} rewrap, "
            f"retired {self.retired or 'none'} ({self.retire_refusals} refusals naming a live "
            f"holder, retried), {self.shreds} shred --wait "
            f"({self.shreds_unacknowledged} not acknowledged in time)"
        )
        lines.append(
            f"  shredded victims: {self.victims_dead} records ShreddedError as due, "
            f"{self.victims_alive} written after their shred decrypt, {self.victims_either} "
            "acknowledged during a shred (either outcome allowed)"
        )
        lines.append(
            "  slowest successful request: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(self.slowest.items()))
            + f"; last client finished {self.late:.1f} s after the deadline"
        )
        if self.restart_s:
            rs = sorted(self.restart_s)
            med = statistics.median(rs)
            lines.append(f"  restart+unseal: median {med:.2f} s, max {rs[-1]:.2f} s")
        lines.append(
            f"  verified after a final kill+restart+unseal: {self.verified}/{self.records} "
            f"acknowledged records, {self.keys_checked} data keys unchanged"
        )
        lines += [f"  PROBLEM: {p}" for p in self.problems[:30]]
        lines.append("soak: OK" if self.ok else f"soak: FAILED ({len(self.problems)} problems)")
        return "\n".join(lines)


def _start_store(kind: str, say: Any) -> tuple[str, str, Any]:
    """(store name, store URL, server or None); PostgreSQL falls back to SQLite."""
    if kind == "postgres":
        try:
            import psycopg  # noqa: F401

            from ._pgserver import PostgresUnavailable, ThrowawayPostgres

            server = ThrowawayPostgres()
            try:
                server.start()
            except (PostgresUnavailable, OSError) as exc:
                server.stop()
                raise RuntimeError(str(exc)) from None
            return "postgres", server.url, server
        except (ImportError, RuntimeError) as exc:
            say(f"soak: PostgreSQL unavailable ({exc}); falling back to the SQLite store")
    return "sqlite", "sqlite:keys.sqlite", None


def run(
    *,
    duration: float = 120.0,
    clients: int = 4,
    kill_every: float = 20.0,
    drop_every: float = 3.0,
    store: str = "postgres",
    batch: int = 40,
    say: Any = print,
    corrupt_one: bool = False,
    keep_failed: bool = True,
    rotate_every: float = 15.0,
    shred_every: float = 5.0,
) -> SoakResult:
    """One soak run; every phase bounded in time. Never raises for a failed check.

    ``corrupt_one`` alters one ledger entry's plaintext before the final check (so a test
    can see the check fail); ``keep_failed`` keeps a failed run's files for inspection.
    """
    import keysplit

    root = Path(tempfile.mkdtemp(prefix="ks-soak-", dir="/tmp" if os.path.isdir("/tmp") else None))
    store_name, url, pg = _start_store(store, say)
    res = SoakResult(store=store_name, clients=clients)
    svc: Service | None = None
    procs: list[multiprocessing.process.BaseProcess] = []
    try:
        directory = _make_keyring(root, url)
        shares = root / "shares"
        r = _cli(
            "token", "create", str(directory), "--name", "soak",
            "--allow", "encrypt,decrypt,datakey", "--subject-prefix", PREFIX,
            "--share", str(shares / "a.g1.kss"), "--share", str(shares / "c.g1.kss"),
        )  # fmt: skip
        if r.returncode:
            raise SoakFailure(f"token create failed: {r.stderr.strip()[-300:]}")
        token = r.stdout.strip()
        svc = Service(directory, root / "ks.sock", root / "serve.log")
        svc.start()
        svc.unseal()
        say(f"soak: {store_name} store, service unsealed; {clients} clients for {duration:.0f} s")

        t0 = time.time()
        until = t0 + duration
        ctx = multiprocessing.get_context("spawn")
        for cid in range(clients):
            proc: multiprocessing.process.BaseProcess = ctx.Process(
                target=_client, args=(cid, svc.url, token, str(root), until, batch)
            )
            proc.start()
            procs.append(proc)

        jitter = random.Random()
        next_kill = time.monotonic() + kill_every * jitter.uniform(0.7, 1.3)
        next_drop = time.monotonic() + drop_every * jitter.uniform(0.2, 1.8)
        next_rotate = time.monotonic() + rotate_every * jitter.uniform(0.5, 1.0)
        next_shred = time.monotonic() + shred_every * jitter.uniform(0.5, 1.5)
        shreds: list[tuple[str, float, float]] = []
        quorum = ["--share", str(shares / "a.g1.kss"), "--share", str(shares / "c.g1.kss")]
        end = time.monotonic() + duration
        while time.monotonic() < end - 1.0:
            now = time.monotonic()
            if now >= next_kill and end - now > 3.0:
                t = time.monotonic()
                svc.kill()
                svc.start()
                svc.unseal()
                res.kills += 1
                res.restart_s.append(time.monotonic() - t)
                next_kill = time.monotonic() + kill_every * jitter.uniform(0.7, 1.3)
            elif pg is not None and now >= next_drop:
                res.backends_terminated += _drop_backends(pg.url)
                res.drops += 1
                next_drop = time.monotonic() + drop_every * jitter.uniform(0.2, 1.8)
            elif now >= next_rotate and end - now > 10.0:
                _ceremonies(directory, quorum, res)
                next_rotate = time.monotonic() + rotate_every * jitter.uniform(0.7, 1.3)
            elif now >= next_shred and end - now > 5.0:
                victim = victim_subject(jitter.randrange(clients), jitter.randrange(VICTIMS))
                t_start = time.time()
                r = _cli("shred", str(directory), victim, "--yes", "--wait", "15", "--json",
                         *quorum)  # fmt: skip
                if r.returncode in (0, 4):
                    shreds.append((victim, t_start, time.time()))
                    res.shreds += 1
                    res.shreds_unacknowledged += r.returncode == 4
                elif r.returncode != 3:  # 3: no key yet (nothing written to it so far)
                    res.problems.append(f"shred failed: {r.stderr.strip()[-300:]}")
                next_shred = time.monotonic() + shred_every * jitter.uniform(0.5, 1.5)
            time.sleep(0.1)

        join_by = max(time.time(), until) + 60.0  # a request in flight has a 30 s timeout
        for proc in procs:
            proc.join(timeout=max(0.1, join_by - time.time()))
        for proc in procs:
            if proc.is_alive():
                res.problems.append(f"client pid {proc.pid} overran its deadline; killed")
                proc.kill()  # SIGKILL to that PID only
                proc.join(timeout=10)
            elif proc.exitcode != 0:
                res.problems.append(f"client pid {proc.pid} exited with {proc.exitcode}")
        res.duration = time.time() - t0

        ledger: list[dict[str, Any]] = []
        keys: dict[str, str] = {}
        for cid in range(clients):
            stats_file = root / f"stats-{cid}.json"
            if stats_file.exists():
                st = json.loads(stats_file.read_text())
                res.ops.update(st["ops"])
                res.items.update(st["items"])
                res.errors.update(st["errors"])
                res.problems += st["bad"]
                for op, v in st["slowest"].items():
                    res.slowest[op] = max(res.slowest.get(op, 0.0), v)
                res.late = max(res.late, st["late"])
            with open(root / f"ledger-{cid}.jsonl") as f:
                ledger += [json.loads(line) for line in f]
            with open(root / f"keys-{cid}.jsonl") as f:
                for line in f:
                    e = json.loads(line)
                    keys[e["s"]] = e["k"]
        res.records = len(ledger)
        if corrupt_one and ledger:
            p0 = base64.b64decode(ledger[0]["p"])
            ledger[0]["p"] = _b64(p0[:-1] + bytes([p0[-1] ^ 1]) if p0 else b"\x00")

        # the last word: a kill at rest, restart, unseal, then every acknowledged record
        svc.kill()
        svc.start()
        svc.unseal()
        final = keysplit.Client(svc.url, token=token, timeout=120)
        for i in range(0, len(ledger), 500):
            chunk = ledger[i : i + 500]
            out: list[bytes | None]
            try:
                out = list(
                    final.decrypt_many(
                        [e["s"] for e in chunk],
                        [base64.b64decode(e["r"]) for e in chunk],
                        [e["c"] for e in chunk],
                    )
                )
            except keysplit.KeysplitError:
                out = []
                for e in chunk:  # one by one, to name the lost ones
                    try:
                        out.append(
                            final.decrypt(base64.b64decode(e["r"]), subject=e["s"], context=e["c"])
                        )
                    except keysplit.KeysplitError as exc:
                        out.append(None)
                        res.problems.append(f"record of {e['s']} lost: {_kind(exc)}")
            for e, p in zip(chunk, out, strict=True):
                if p is None:
                    continue
                if p == base64.b64decode(e["p"]):
                    res.verified += 1
                else:
                    res.problems.append(f"record of {e['s']} decrypted to other bytes")
        subjects = sorted(keys)
        for i in range(0, len(subjects), 500):
            subs = subjects[i : i + 500]
            try:
                got = final.datakeys(subs, create=False)
            except keysplit.KeysplitError as exc:
                res.problems.append(f"data keys not all found: {_kind(exc)}: {exc}"[:300])
                continue
            for s, k in zip(subs, got, strict=True):
                if _h(k) == keys[s]:
                    res.keys_checked += 1
                else:
                    res.problems.append(f"data key of {s} changed")
        _check_victims(final, root, clients, shreds, res)
        final.close()
        if res.rotations == 0 and duration >= 3 * rotate_every:
            res.problems.append("no rotate ran under load")
        if res.records == 0:
            res.problems.append("no record was acknowledged: the load never ran")
        unexpected = {k for k in res.errors if k.split(":", 1)[1] not in RETRIED}
        if unexpected:
            res.problems.append(f"unexpected error kinds: {sorted(unexpected)}")
    except SoakFailure as exc:
        res.problems.append(str(exc))
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=10)
        if svc is not None:
            svc.kill(signal.SIGTERM)
        if pg is not None:
            pg.stop()
        if res.ok or not keep_failed:
            shutil.rmtree(root, ignore_errors=True)
        else:
            res.problems.append(f"files kept for inspection in {root}")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--duration", type=float, default=120.0, help="seconds under load")
    ap.add_argument("--clients", type=int, default=4, help="client processes")
    ap.add_argument("--kill-every", type=float, default=20.0, help="seconds between SIGKILLs")
    ap.add_argument("--drop-every", type=float, default=3.0, help="seconds between store drops")
    ap.add_argument("--store", choices=("postgres", "sqlite"), default="postgres")
    ap.add_argument("--batch", type=int, default=40, help="largest batch per request")
    ap.add_argument("--rotate-every", type=float, default=15.0,
                    help="seconds between rotate+rewrap+retire from the CLI")  # fmt: skip
    ap.add_argument("--shred-every", type=float, default=5.0,
                    help="seconds between shreds of a victim subject")  # fmt: skip
    a = ap.parse_args(argv)
    if a.duration <= 0 or a.clients < 1 or a.kill_every <= 0 or a.drop_every <= 0 or a.batch < 1:
        ap.error("--duration, --kill-every, --drop-every must be > 0; --clients, --batch >= 1")
    res = run(
        duration=a.duration,
        clients=a.clients,
        kill_every=a.kill_every,
        drop_every=a.drop_every,
        store=a.store,
        batch=a.batch,
        rotate_every=a.rotate_every,
        shred_every=a.shred_every,
    )
    print(res.report(), flush=True)
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
