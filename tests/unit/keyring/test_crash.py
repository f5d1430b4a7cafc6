"""Crash safety: SIGKILL a real process mid-rewrap and mid-rotate/rekey, then check everything.

A process killed at an arbitrary point must leave a keyring that unseals (with the old or
the new shares) and a store in which every record still decrypts; an interrupted rewrap
resumes to completion.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from service_helpers import cli_here

from keysplit import (
    Identity,
    Keyring,
    KeyringError,
    MixedSharesError,
    Share,
    ShreddedError,
    load_share,
)

NAMES = ["alice", "bob", "carol"]
SUBJECTS = 6_000

CHILD_PRELUDE = """
import json, sys, time
from pathlib import Path
from keysplit import Keyring, Share
from keysplit._fileio import atomic_write
base = Path(sys.argv[1])
shares = [Share.parse(s) for s in json.loads((base / "shares.json").read_text())[:2]]
ku = Keyring.open(base / "kr").unseal(shares)
"""

REWRAP_CHILD = (
    CHILD_PRELUDE
    + """
def progress(done, total):
    print(done, total, flush=True)
    time.sleep(0.01)  # stretch the run so the kill lands mid-way (does not change atomicity)
ku.rewrap(batch_size=150, progress=progress)
print("finished", flush=True)
"""
)

REKEY_CHILD = (
    CHILD_PRELUDE
    + """
i = 0
while True:
    i += 1
    ku.rotate()
    new = ku.prepare_rekey()
    gen = ku.keyring.pending.generation
    text = json.dumps([str(s) for s in new.values()]).encode()
    atomic_write(base / f"shares-{gen:06d}.json", text)
    ku.commit_rekey()
    ku.encrypt(b"written after rekey %d" % i, subject=f"late-{i}")
    print(gen, flush=True)
"""
)


def _setup(tmp_path: Path) -> tuple[list[str], list[bytes]]:
    _, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    (tmp_path / "shares.json").write_text(json.dumps([str(shares[n]) for n in NAMES]))
    subjects = [f"user-{i:06d}" for i in range(SUBJECTS)]
    with Keyring.open(tmp_path / "kr").unseal([shares["alice"], shares["bob"]]) as ku:
        records = ku.encrypt_many(subjects, [s.encode() for s in subjects], {"t": "crash"})
        ku.rotate()
    return subjects, records


def _run_and_kill(tmp_path: Path, script: str, should_kill: object) -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            lines.append(line.strip())
            if should_kill(lines):  # type: ignore[operator]
                time.sleep(random.uniform(0, 0.01))
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    return lines


@pytest.mark.slow
def test_sigkill_mid_rewrap(tmp_path: Path) -> None:
    subjects, records = _setup(tmp_path)

    def third(lines: list[str]) -> bool:
        done, total = map(int, lines[-1].split())
        return done >= total // 3

    lines = _run_and_kill(tmp_path, REWRAP_CHILD, third)
    assert "finished" not in lines
    shares = [Share.parse(s) for s in json.loads((tmp_path / "shares.json").read_text())]
    with Keyring.open(tmp_path / "kr").unseal(shares[1:]) as ku:
        counts = ku.status().keys_by_version
        assert sum(counts.values()) == SUBJECTS
        assert counts.get(1, 0) > 0 and counts.get(2, 0) > 0, f"kill was not mid-rewrap: {counts}"
        assert ku.decrypt_many(subjects, records, {"t": "crash"}) == [s.encode() for s in subjects]
        res = ku.rewrap(batch_size=5000)
        assert res.rewrapped == counts[1] and res.remaining == 0
        ku.retire(1)
    with Keyring.open(tmp_path / "kr").unseal(shares[::2]) as ku:
        assert ku.decrypt_many(subjects, records, {"t": "crash"}) == [s.encode() for s in subjects]


@pytest.mark.slow
def test_sigkill_mid_rotate_and_rekey(tmp_path: Path) -> None:
    subjects, records = _setup(tmp_path)
    target = random.randint(3, 8)
    _run_and_kill(tmp_path, REKEY_CHILD, lambda lines: len(lines) >= target)
    files = sorted(tmp_path.glob("shares-*.json"))
    assert len(files) >= target
    newest = [Share.parse(s) for s in json.loads(files[-1].read_text())]
    previous = [Share.parse(s) for s in json.loads(files[-2].read_text())]
    # The newest handed-out shares always unseal: either their rekey committed, or it is
    # pending and unsealing with them commits it.
    kr = Keyring.open(tmp_path / "kr")
    with kr.unseal(newest[:2]) as ku:
        assert ku.decrypt_many(subjects, records, {"t": "crash"}) == [s.encode() for s in subjects]
        late = [f"late-{i}" for i in range(1, target)]
        for s in late:
            assert s in ku.store.get_many(late)
        ku.rewrap()
    # Older shares are refused cleanly (never a wrong key, never a crash).
    with pytest.raises(MixedSharesError):
        Keyring.open(tmp_path / "kr").unseal(previous[:2])
    pending = tmp_path / "kr" / "keyring.pending"
    if pending.exists():
        # Killed between prepare_rekey and handing out its shares: an orphan nobody can
        # commit. It must name the next generation, block rotate with a clear error, and be
        # discarded by the current quorum, after which everything works again.
        kr = Keyring.open(tmp_path / "kr")
        assert kr.pending is not None and kr.pending.generation == kr.meta.generation + 1
        with kr.unseal(newest[:2]) as ku:
            with pytest.raises(KeyringError, match="pending"):
                ku.rotate()
            assert ku.abort_rekey()
            ku.rotate()
    assert not pending.exists()


# -- a rekey killed after its switch, before its audit entry ------------------------------

KILL_AT_ENTRY = """
import os, signal, sys
from keysplit.audit import events
from keysplit_cli.app import main
real, target = events.record, sys.argv[1]
def record(log, event):
    if type(event).__name__ == target:
        os.kill(os.getpid(), signal.SIGKILL)  # after the change, before its entry
    return real(log, event)
events.record = record
sys.argv = ["keysplit", *sys.argv[2:]]
main()
"""


def _cli(args: list[object], *, kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    """``keysplit ARGS``. With ``kill_at``, a real process SIGKILLed at that audit event
    (the crash under test); without, in this process (:func:`cli_here`): the calls before
    and after a kill set up or read the files the killed process left. As processes they
    made ~3/4 of this module's time (CPU 215-221 s -> 43-49 s, wall 534-606 s -> 144-218 s,
    paired runs at load 10-16 on the 2-core CI machine)."""
    if kill_at is not None:
        return _script(KILL_AT_ENTRY, [kill_at, *args])
    return cli_here(*(str(a) for a in args))


def _rekey_events(kr: Path) -> list[tuple[str, int]]:
    return [
        (e.event, e.data["generation"])
        for e in Keyring.open(kr).audit_log().entries()
        if e.event.startswith("rekey")
    ]


def _custodians(tmp_path: Path) -> tuple[dict[str, Path], list[str]]:
    """Identities of ana, ben and cy in TMP/keys: their files, and init's ``-c`` options."""
    keys = tmp_path / "keys"
    keys.mkdir()
    ident, custodians = {}, []
    for n in ("ana", "ben", "cy"):
        me = Identity.generate(n)
        (keys / f"{n}.pub").write_text(me.recipient.to_text())
        ident[n] = keys / f"{n}.identity"
        ident[n].write_bytes(me.to_bytes(None))
        ident[n].chmod(0o600)
        custodians += ["-c", f"{n}={keys / n}.pub"]
    return ident, custodians


def _cli_keyring(tmp_path: Path) -> tuple[Path, list[str], Callable[[int], list[object]]]:
    """A 2-of-3 keyring made by ``keysplit init`` (ana, ben, cy: public-key shares): its
    directory, the ``-c`` options naming its custodians, and a quorum's options per
    generation (ana's and ben's shares and identities)."""
    ident, custodians = _custodians(tmp_path)
    kr, shares = tmp_path / "vault", tmp_path / "vault-shares"
    r = _cli(["init", kr, "-k", "2", *custodians])
    assert r.returncode == 0, r.stderr

    def quorum(gen: int) -> list[object]:
        return [
            a for n in ("ana", "ben") for a in ("-s", shares / f"{n}.g{gen}.kss", "-i", ident[n])
        ]

    return kr, custodians, quorum


def _prove_all(kr: Path, tmp_path: Path) -> None:
    """Every custodian of a ``_cli_keyring`` proves their generation-2 share (CLI)."""
    for n in ("ana", "ben", "cy"):
        share = kr.parent / "vault-shares" / f"{n}.g2.kss"
        r = _cli(["share", "prove", share, "-i", tmp_path / "keys" / f"{n}.identity"])
        assert r.returncode == 0, r.stderr
        (tmp_path / "code").write_text(r.stdout.strip())
        r = _cli(["verify", "prove", kr, n, "--code-file", tmp_path / "code"])
        assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("verify", [False, True], ids=["rekey", "rekey-verify-switch"])
def test_rekey_killed_between_switch_and_entry_is_recorded(tmp_path: Path, verify: bool) -> None:
    """A rekey whose switch took effect and whose process was SIGKILLed before the audit
    entry: the log must not silently lack the switch. The next quorum of the new shares
    records it (``rekey-recovered``), once."""
    kr, custodians, quorum = _cli_keyring(tmp_path)
    if verify:
        r = _cli(["rekey", kr, *custodians, "--verify", *quorum(1)])
        assert r.returncode == 0, r.stderr
        _prove_all(kr, tmp_path)
        r = _cli(["unseal", kr, *quorum(2)], kill_at="RekeySwitch")
    else:
        r = _cli(["rekey", kr, *custodians, *quorum(1)], kill_at="Rekey")
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert Keyring.open(kr).meta.generation == 2  # the switch took effect, unrecorded
    assert _rekey_events(kr) == ([("rekey-pending", 2)] if verify else [])
    r = _cli(["audit", "verify", kr, "--json"])  # no quorum: says what is owed
    assert r.returncode == 0, r.stderr
    assert "note: not in the log: the rekey to share set" in " ".join(r.stderr.split())
    assert len(json.loads(r.stdout)["unrecorded"]) == 1

    r = _cli(["unseal", kr, *quorum(2)])
    assert r.returncode == 0, r.stderr
    assert "completed an interrupted rekey" in r.stderr
    assert ("rekey-recovered", 2) in _rekey_events(kr)
    r = _cli(["audit", "verify", kr, *quorum(2)])
    assert r.returncode == 0, r.stderr
    r = _cli(["unseal", kr, *quorum(2)])  # recorded once
    assert r.returncode == 0, r.stderr
    assert _rekey_events(kr).count(("rekey-recovered", 2)) == 1
    assert not (kr / "keyring.ksk.unrecorded").exists()
    r = _cli(["audit", "verify", kr, "--json"])
    assert json.loads(r.stdout)["unrecorded"] == [] and "not in the log" not in r.stderr


def test_rekey_verify_killed_before_its_entry_still_waits_for_proofs(tmp_path: Path) -> None:
    """``rekey --verify`` SIGKILLed after its new shares were written and before its
    ``rekey-pending`` entry: the proof state was written only after that entry, so a quorum
    of the new shares switched the keyring at once (as for a plain rekey's interrupted
    hand-out) without a single proof. The state is written before the shares go out: the
    new shares are refused until every new custodian has proven; the old ones still work."""
    kr, custodians, quorum = _cli_keyring(tmp_path)
    shares = kr.parent / "vault-shares"
    r = _killed_at("RekeyPending", ["rekey", kr, *custodians, "--verify", *quorum(1)])
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert (shares / "cy.g2.kss").exists()  # every new share is out

    r = _cli(["unseal", kr, *quorum(2)])
    assert r.returncode == 1 and "proof" in r.stderr, r.stderr
    assert Keyring.open(kr).meta.generation == 1
    r = _cli(["unseal", kr, *quorum(1)])
    assert r.returncode == 0, r.stderr
    _prove_all(kr, tmp_path)
    r = _cli(["unseal", kr, *quorum(2)])
    assert r.returncode == 0, r.stderr
    assert Keyring.open(kr).meta.generation == 2
    events = [e.event for e in Keyring.open(kr).audit_log().entries()]
    assert "verify-complete" in events and "rekey-switch" in events, events


def test_rekey_verify_killed_before_its_entry_is_recorded_by_the_next_quorum(
    tmp_path: Path,
) -> None:
    """``rekey --verify`` SIGKILLed after its new shares were out and before its
    ``rekey-pending`` + ``verify-start`` batch: the log never said that a rekey was begun,
    nor who must prove (``audit verify`` reported nothing), and the switch later appeared
    as ``verify-complete`` + ``rekey-switch`` out of nowhere. Now the pending generation
    is reported, and the next quorum (the old shares) records it: an ``observed``
    rekey-pending entry, then the ``verify-start`` it lacked; once."""
    kr, custodians, quorum = _cli_keyring(tmp_path)
    r = _killed_at("RekeyPending", ["rekey", kr, *custodians, "--verify", *quorum(1)])
    assert r.returncode == -signal.SIGKILL, r.stderr
    pending_set = Keyring.open(kr).pending.set_id  # type: ignore[union-attr]
    gaps = _unrecorded(kr)
    assert len(gaps) == 1 and pending_set in gaps[0] and "rekey --verify" in gaps[0], gaps

    for _ in range(2):  # recorded once
        r = _cli(["unseal", kr, *quorum(1)])
        assert r.returncode == 0, r.stderr
    entries = Keyring.open(kr).audit_log().entries()
    events = [e.event for e in entries]
    assert events == ["init", "observed", "verify-start", "unseal-check", "unseal-check"]
    seen, start = entries[1].data, entries[2].data
    assert (seen["operation"], seen["target"], seen["intent"]) == ("rekey-pending", pending_set, 0)
    assert seen["found"].startswith("done") and "generation 2" in seen["found"]
    assert (start["kind"], start["generation"], start["set_id"]) == ("rekey", 2, pending_set)
    assert start["custodians"] == ["ana", "ben", "cy"]
    assert _unrecorded(kr) == []

    _prove_all(kr, tmp_path)
    r = _cli(["unseal", kr, *quorum(2)])
    assert r.returncode == 0, r.stderr
    events = [e.event for e in Keyring.open(kr).audit_log().entries()]
    assert events[5:] == ["verify-complete", "rekey-switch", "unseal-check"], events
    assert _unrecorded(kr) == []


def test_shred_killed_before_it_reported_is_told_apart_on_the_rerun(tmp_path: Path) -> None:
    """``keysplit shred`` SIGKILLed after its delete committed and before its entry: the
    operator runs it again. The key is gone (its tombstone is in the store), so the rerun
    must not say the subject never had one ('check the subject id'): it says an earlier
    shred destroyed it. A subject that never had a key still gets the old answer."""
    kr, _, quorum = _cli_keyring(tmp_path)
    share_paths = [Path(str(a)) for a in quorum(1)[1::4]]
    identities = [Identity.from_bytes(Path(str(p)).read_bytes()) for p in quorum(1)[3::4]]
    q = [
        load_share(s.read_bytes(), identity=i) for s, i in zip(share_paths, identities, strict=True)
    ]
    with Keyring.open(kr).unseal(q) as ku:
        blob = ku.encrypt(b"x", subject="user-3")

    r = _cli(["shred", kr, "user-3", "--yes", *quorum(1)], kill_at="Shred")
    assert r.returncode == -signal.SIGKILL, r.stderr
    with Keyring.open(kr).unseal(q) as ku, pytest.raises(ShreddedError):
        ku.decrypt(blob, subject="user-3")  # the delete took effect

    r = _cli(["shred", kr, "user-3", "--yes", "--json", *quorum(1)])
    assert r.returncode == 3, r.stderr
    assert "check the subject id" not in r.stderr
    assert "an earlier shred destroyed it" in r.stderr
    assert json.loads(r.stdout)["shredded_before"] is True

    r = _cli(["shred", kr, "user-never", "--yes", "--json", *quorum(1)])
    assert r.returncode == 3, r.stderr
    assert json.loads(r.stdout)["shredded_before"] is False
    assert "check the subject id" in r.stderr


FULL_AFTER_ROTATE = """
import sys
from keysplit import KeyringError
from keysplit.store.sqlite import SQLiteKeyStore
from keysplit_cli.app import main
real_set, real_renew = SQLiteKeyStore.set_current_kek, SQLiteKeyStore.renew_lease
done = []
def set_current_kek(self, version):
    real_set(self, version)
    done.append(version)
def renew_lease(self, lease, ttl):
    if done:  # the disk filled up right after the rotation committed
        raise KeyringError(f"key store {self.path}: database or disk is full")
    return real_renew(self, lease, ttl)
SQLiteKeyStore.set_current_kek = set_current_kek
SQLiteKeyStore.renew_lease = renew_lease
sys.argv = ["keysplit", *sys.argv[1:]]
main()
"""


def test_rotate_committed_is_not_reported_failed_by_its_lease_renewal(tmp_path: Path) -> None:
    """``keysplit rotate`` on a disk that fills up as the rotation commits: the new KEK was
    in the keyring file and current in the store, then the lease renewal that reports it
    (a store write) failed, and the command said 'error: ... disk is full' (exit 1) with no
    rotate entry, so the operator rotated again and version 2 was never on the record. The
    renewal is the lease's business (its poller renews it): the rotation reports success
    and is recorded."""
    kr, _, quorum = _cli_keyring(tmp_path)
    r = subprocess.run(
        [sys.executable, "-c", FULL_AFTER_ROTATE, "rotate", kr, *map(str, quorum(1))],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert Keyring.open(kr).meta.current_kek == 2
    assert r.returncode == 0, r.stderr
    rotations = [e.data["kek_version"] for e in Keyring.open(kr).audit_log().entries()[1:]]
    assert rotations == [2]


@pytest.mark.parametrize("op", ["rotate", "retire"])
def test_audit_verify_names_a_kek_change_killed_before_its_entry(tmp_path: Path, op: str) -> None:
    """``keysplit rotate`` (or ``retire``) SIGKILLed after the keyring file changed and
    before its entry: ``audit verify`` said the log was intact and nothing more, though a
    KEK version had appeared (or gone) without a record. It names the version (exit 0: the
    chain itself is intact), and says nothing once the log records every version."""
    kr, _, quorum = _cli_keyring(tmp_path)
    if op == "retire":
        for step in (["rotate", kr], ["rewrap", kr]):
            r = _cli([*step, *quorum(1)])
            assert r.returncode == 0, r.stderr
        r = _cli(["retire", kr, "1", *quorum(1)], kill_at="Retire")
        want = "KEK v1 is retired from the keyring file but no retire entry records it"
    else:
        r = _cli(["rotate", kr, *quorum(1)], kill_at="Rotate")
        want = "KEK v2 is in the keyring file but no rotate entry records it"
    assert r.returncode == -signal.SIGKILL, r.stderr
    r = _cli(["audit", "verify", kr, "--json"])
    assert r.returncode == 0, r.stderr
    assert f"note: not in the log: {want}" in " ".join(r.stderr.split())  # rich wraps
    assert json.loads(r.stdout)["unrecorded"] == [want]


KILL_AFTER = """
import os, signal, sys
from keysplit.keyring.home import KeyringHome
from keysplit_cli.app import main
name = sys.argv[1]
real = getattr(KeyringHome, name)
def killed_after(self, *args, **kwargs):
    real(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
setattr(KeyringHome, name, killed_after)
sys.argv = ["keysplit", *sys.argv[2:]]
main()
"""


@pytest.mark.parametrize(
    "killed_after",
    ["write_keyring", "clear_handout"],
    ids=["keyring-file-written", "every-share-written-mark-not-cleared"],
)
def test_init_killed_before_its_shares_are_out_says_remove_and_init_again(
    tmp_path: Path, killed_after: str
) -> None:
    """``keysplit init`` SIGKILLed (1) just after the keyring file was written, before
    the hand-out mark: the keyring looked whole (the rerun: 'a keyring already exists',
    no hint) though no share of it exists anywhere; (2) while its shares were out, the
    rerun said 'refusing to overwrite existing share file ... choose another
    --shares-dir', which leads to a second keyring over the first. Both reruns say the
    init stopped before its shares were written: remove the directory and init again."""
    keys = tmp_path / "keys"
    keys.mkdir()
    custodians = []
    for n in ("ana", "ben", "cy"):
        (keys / f"{n}.pub").write_text(Identity.generate(n).recipient.to_text())
        custodians += ["-c", f"{n}={keys / n}.pub"]
    kr = tmp_path / "vault"
    args = ["init", str(kr), "-k", "2", *custodians]
    if killed_after == "clear_handout":
        # every share written, killed as the mark is being cleared: undo the clear
        script = KILL_AFTER.replace("    real(self, *args, **kwargs)\n", "")
    else:
        script = KILL_AFTER
    r = subprocess.run(
        [sys.executable, "-c", script, killed_after, *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert (kr / "keyring.ksk").exists()
    r = _cli(args)
    assert r.returncode == 1, r.stderr
    assert "a keyring already exists" in r.stderr, r.stderr
    assert "its init stopped before all its shares were written" in " ".join(r.stderr.split())


def test_rekey_killed_after_its_entry_is_not_recorded_twice(tmp_path: Path) -> None:
    """A rekey killed after its ``rekey`` entry and before it cleared its owed-switch mark
    owes nothing: the next unseal records no ``rekey-recovered`` for the same switch, says
    no interrupted rekey was completed, clears the mark, and ``audit verify`` notes
    nothing."""
    kr, custodians, quorum = _cli_keyring(tmp_path)
    script = KILL_AFTER.replace("    real(self, *args, **kwargs)\n", "")  # killed at the call
    r = subprocess.run(
        [sys.executable, "-c", script, "clear_unrecorded", "rekey", kr, *custodians]
        + [str(a) for a in quorum(1)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert (kr / "keyring.ksk.unrecorded").exists() and _rekey_events(kr) == [("rekey", 2)]
    r = _cli(["audit", "verify", kr, "--json"])
    assert json.loads(r.stdout)["unrecorded"] == []
    r = _cli(["unseal", kr, *quorum(2)])
    assert r.returncode == 0, r.stderr
    assert "interrupted rekey" not in r.stderr
    assert _rekey_events(kr) == [("rekey", 2)]
    assert not (kr / "keyring.ksk.unrecorded").exists()


def _killed_after_its_first_share_file(args: list[object]) -> None:
    """``keysplit ARGS`` (a rekey) SIGKILLed once it has written its first share file."""
    script = KILL_AFTER.replace(
        "from keysplit.keyring.home import KeyringHome",
        "from keysplit.ceremony.sinks import DirectorySink as KeyringHome",
    )
    r = subprocess.run(
        [sys.executable, "-c", script, "write", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == -signal.SIGKILL, r.stderr


def test_rekey_rerun_after_a_kill_mid_handout_says_what_to_do(tmp_path: Path) -> None:
    """``keysplit rekey`` SIGKILLed after writing its first new share file: the rerun said
    'refusing to overwrite existing share file ... choose another --shares-dir'. It says
    the file is from a rekey killed while writing its shares (which never unseal, the
    current ones still work) and to remove them; after that the rekey goes through."""
    kr, custodians, quorum = _cli_keyring(tmp_path)
    args = ["rekey", kr, *custodians, *quorum(1)]
    _killed_after_its_first_share_file(args)
    left = sorted((tmp_path / "vault-shares").glob("*.g2.kss"))
    assert len(left) == 1
    r = _cli(args)
    assert r.returncode == 1, r.stderr
    said = " ".join(r.stderr.split())
    assert "from a rekey killed while it wrote its new shares" in said
    assert "choose another --shares-dir" not in said
    assert "remove that rekey's generation-2 share files" in said
    for p in left:
        p.unlink()
    r = _cli(args)
    assert r.returncode == 0, r.stderr
    r = _cli(["unseal", kr, *quorum(2)])
    assert r.returncode == 0, r.stderr


# -- a change killed between its effect and its entry is on the record -----------------------

KILL_AT_EVENT = """
import os, signal, sys
from keysplit.audit import events
from keysplit_cli.app import main
real, real_many, target = events.record, events.record_many, sys.argv[1]
def kill_at(batch):
    if any(type(e).__name__ == target for e in batch):
        os.kill(os.getpid(), signal.SIGKILL)  # after the change, before its entry
def record(log, event):
    kill_at([event])
    return real(log, event)
def record_many(log, batch):
    kill_at(batch)
    return real_many(log, batch)
events.record, events.record_many = record, record_many
sys.argv = ["keysplit", *sys.argv[2:]]
main()
"""


def _killed_at(event: str, args: list[object]) -> subprocess.CompletedProcess[str]:
    return _script(KILL_AT_EVENT, [event, *args])


def _script(script: str, args: list[object]) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (a fault hook, then the CLI) with ``args`` in a new interpreter."""
    return subprocess.run(
        [sys.executable, "-c", script, *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def _unrecorded(kr: Path) -> list[str]:
    r = _cli(["audit", "verify", kr, "--json"])
    assert r.returncode == 0, r.stderr
    return list(json.loads(r.stdout)["unrecorded"])


def _quorum_shares(quorum: Callable[[int], list[object]], gen: int = 1) -> list[Share]:
    args = [Path(str(a)) for a in quorum(gen)]
    return [
        load_share(s.read_bytes(), identity=Identity.from_bytes(i.read_bytes()))
        for s, i in zip(args[1::4], args[3::4], strict=True)
    ]


@pytest.mark.parametrize("op", ["shred", "hold", "token-create"])
def test_store_change_killed_before_its_entry_is_reported_and_then_recorded(
    tmp_path: Path, op: str
) -> None:
    """``shred``, ``hold --on`` and ``token create`` SIGKILLed after their change committed
    (key store, token list) and before their entry: the log held no trace of the change
    and ``audit verify`` said nothing. The ceremony writes an ``intent`` entry before the
    change; the open intent is reported, and the next quorum records what it finds (an
    ``observed`` entry), after which nothing is reported."""
    kr, _, quorum = _cli_keyring(tmp_path)
    shares = _quorum_shares(quorum)
    with Keyring.open(kr).unseal(shares) as ku:
        blob = ku.encrypt(b"x", subject="user-3")
    if op == "shred":
        r = _killed_at("Shred", ["shred", kr, "user-3", "--yes", *quorum(1)])
    elif op == "hold":
        r = _killed_at("LegalHold", ["hold", kr, "user-3", "--on", *quorum(1)])
    else:
        args = ["token", "create", kr, "--name", "billing", "--allow", "encrypt"]
        r = _killed_at("TokenCreate", [*args, "--subject-prefix", "", *quorum(1)])
    assert r.returncode == -signal.SIGKILL, r.stderr
    with Keyring.open(kr).unseal(shares) as ku:  # the change took effect
        if op == "shred":
            with pytest.raises(ShreddedError):
                ku.decrypt(blob, subject="user-3")
        elif op == "hold":
            assert ku.local_data_keys().held_spellings("user-3")
    if op == "token-create":
        r = _cli(["token", "list", kr, "--json"])
        assert "billing" in r.stdout, r.stderr

    gaps = _unrecorded(kr)
    assert len(gaps) == 1 and "was begun" in gaps[0] and "has no outcome" in gaps[0]

    r = _cli(["unseal", kr, *quorum(1)])  # the next quorum writes down what it finds
    assert r.returncode == 0, r.stderr
    assert "recorded what this quorum found: " in " ".join(r.stderr.split())
    entries = Keyring.open(kr).audit_log().entries()
    observed = [e for e in entries if e.event == "observed"]
    assert len(observed) == 1
    intent = next(e for e in entries if e.event == "intent")
    assert observed[0].data["intent"] == intent.seq
    assert observed[0].data["found"].startswith("done" if op != "hold" else "the subject is under")
    assert _unrecorded(kr) == []
    r = _cli(["audit", "verify", kr, *quorum(1)])
    assert r.returncode == 0, r.stderr
    r = _cli(["unseal", kr, *quorum(1)])  # recorded once
    assert [e.event for e in Keyring.open(kr).audit_log().entries()].count("observed") == 1


def test_token_create_killed_before_its_entries_keeps_the_revocations_it_folded(
    tmp_path: Path,
) -> None:
    """``token create`` folds the pending revocations (``token revoke``, no quorum) into the
    MACed list in the same write as the new token, and records a ``token-revoke`` for each
    with its ``token-create``. SIGKILLed before those entries, the next quorum's
    ``observed`` entry recorded the token but not the revocations: the log never said the
    token was revoked. The quorum records them (``token-revoke``, before the observation),
    once."""
    kr, _, quorum = _cli_keyring(tmp_path)
    create = ["--allow", "encrypt", "--subject-prefix", "", *quorum(1)]
    r = _cli(["token", "create", kr, "--name", "old", *create])
    assert r.returncode == 0, r.stderr
    r = _cli(["token", "revoke", kr, "old"])
    assert r.returncode == 0, r.stderr
    r = _killed_at("TokenCreate", ["token", "create", kr, "--name", "new", *create])
    assert r.returncode == -signal.SIGKILL, r.stderr
    old_id = next(e for e in Keyring.open(kr).audit_log().entries() if e.event == "token-create")
    old_id = old_id.data["token_id"]

    r = _cli(["unseal", kr, *quorum(1)])
    assert r.returncode == 0, r.stderr
    r = _cli(["unseal", kr, *quorum(1)])  # recorded once
    assert r.returncode == 0, r.stderr
    entries = Keyring.open(kr).audit_log().entries()
    events = [e.event for e in entries]
    assert events.count("token-revoke") == 1 and events.count("observed") == 1
    revoke = entries[events.index("token-revoke")]
    assert events.index("token-revoke") + 1 == events.index("observed")
    assert (revoke.data["token"], revoke.data["token_id"]) == ("old", old_id)
    assert _unrecorded(kr) == []


@pytest.mark.parametrize("op", ["init", "rotate", "retire"])
def test_keyring_change_killed_before_its_entry_is_recorded_by_the_next_quorum(
    tmp_path: Path, op: str
) -> None:
    """``init`` SIGKILLed after its shares were written and before its ``init`` entry left
    a log without ``init`` that nothing reported; a ``rotate``/``retire`` so killed was
    reported by ``audit verify`` but never recorded. The next quorum records each (an
    ``observed`` entry: the init first in the log), and then nothing is reported."""
    if op == "init":
        ident, custodians = _custodians(tmp_path)
        kr = tmp_path / "vault"
        r = _killed_at("Init", ["init", kr, "-k", "2", *custodians])
        assert r.returncode == -signal.SIGKILL, r.stderr
        shares = tmp_path / "vault-shares"
        q = [a for n in ("ana", "ben") for a in ("-s", shares / f"{n}.g1.kss", "-i", ident[n])]
        assert Keyring.open(kr).audit_log().entries() == []
        want = "was made (init) without its init entry"
    else:
        kr, _, quorum = _cli_keyring(tmp_path)
        q = quorum(1)
        if op == "retire":
            for step in (["rotate", kr], ["rewrap", kr]):
                r = _cli([*step, *q])
                assert r.returncode == 0, r.stderr
            r = _killed_at("Retire", ["retire", kr, "1", *q])
            want = "KEK v1 is retired from the keyring file but no retire entry records it"
        else:
            r = _killed_at("Rotate", ["rotate", kr, *q])
            want = "KEK v2 is in the keyring file but no rotate entry records it"
        assert r.returncode == -signal.SIGKILL, r.stderr
    gaps = _unrecorded(kr)
    assert len(gaps) == 1 and want in gaps[0]

    r = _cli(["unseal", kr, *q])
    assert r.returncode == 0, r.stderr
    entries = Keyring.open(kr).audit_log().entries()
    observed = [e for e in entries if e.event == "observed"]
    assert len(observed) == 1 and observed[0].data["operation"] == op
    assert observed[0].data["found"].startswith("done")
    if op == "init":
        assert entries[0] is observed[0] or entries[0].event == "observed"
        assert observed[0].data["target"] == Keyring.open(kr).keyring_id
        assert not (kr / "keyring.ksk.init-unrecorded").exists()
    assert _unrecorded(kr) == []
    r = _cli(["rotate", kr, *q])  # the log is comparable again: a later rotate is in it
    assert r.returncode == 0, r.stderr
    assert _unrecorded(kr) == []
    assert [e.event for e in Keyring.open(kr).audit_log().entries()].count("observed") == 1


@pytest.mark.parametrize("kill_at", ["Init", "VerifyStart"])
def test_init_verify_killed_before_its_entry_still_waits_for_proofs(
    tmp_path: Path, kill_at: str
) -> None:
    """``init --verify`` SIGKILLed after its shares were written and before its ``init``
    entry: the proof requirement was written only after that entry, so the keyring served
    a quorum without a single proof (and the ``observed`` init did not bring it back). It
    is written before the shares go out: the next quorum is refused until every custodian
    has proven, then records the init (noting the --verify), the proof requirement the
    init never wrote (``verify-start``: who must prove; once missing, so ``verify-complete``
    followed nothing) and the proofs' completion."""
    from keysplit import ceremony, proof

    ident, custodians = _custodians(tmp_path)
    kr, shares = tmp_path / "vault", tmp_path / "vault-shares"
    r = _killed_at(kill_at, ["init", kr, "-k", "2", *custodians, "--verify"])
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert Keyring.open(kr).audit_log().entries() == []
    gaps = _unrecorded(kr)
    assert len(gaps) == 2 and "proofs of possession" in gaps[1], gaps
    q = [a for n in ("ana", "ben") for a in ("-s", shares / f"{n}.g1.kss", "-i", ident[n])]

    r = _cli(["unseal", kr, *q])
    assert r.returncode == 1 and "awaits proofs" in r.stderr, r.stderr
    for n in ("ana", "ben", "cy"):
        share = load_share(
            (shares / f"{n}.g1.kss").read_bytes(),
            identity=Identity.from_bytes(ident[n].read_bytes()),
        )
        ceremony.prove(Keyring.open(kr), n, proof.prove(share))
    r = _cli(["unseal", kr, *q])
    assert r.returncode == 0, r.stderr
    entries = Keyring.open(kr).audit_log().entries()
    events = [e.event for e in entries]
    assert events == ["observed", "verify-start", "verify-complete", "unseal-check"]
    assert entries[0].data["operation"] == "init"
    assert "init --verify" in entries[0].data["found"]
    start, done = entries[1].data, entries[2].data
    assert (start["kind"], start["generation"]) == ("init", 1)
    assert start["custodians"] == ["ana", "ben", "cy"] and start["set_id"] == done["set_id"]
    assert start["set_id"] == Keyring.open(kr).meta.set_id
    assert _unrecorded(kr) == []


LIBRARY_KILLED_AT_ENTRY = """
import json, os, signal, sys
from pathlib import Path
from keysplit import Keyring, Share
from keysplit.audit import events
base, op = Path(sys.argv[1]), sys.argv[2]
real = events.record
def record(log, event):
    if type(event).__name__ in ("Shred", "LegalHold"):
        os.kill(os.getpid(), signal.SIGKILL)  # after the store's commit, before the entry
    return real(log, event)
events.record = record
shares = [Share.parse(s) for s in json.loads((base / "shares.json").read_text())[:2]]
ku = Keyring.open(base / "kr").unseal(shares)
ku.shred("user-3") if op == "shred" else ku.set_legal_hold("user-3", True)
"""


@pytest.mark.parametrize("op", ["shred", "legal-hold"])
def test_library_store_change_killed_before_its_entry_leaves_an_open_intent(
    tmp_path: Path, op: str
) -> None:
    """``UnsealedKeyring.shred`` / ``set_legal_hold`` (``record=True``, the library's own
    path) SIGKILLed after the store committed and before the entry left no trace in the
    log (the ceremonies wrote their intent; the library did not). The library writes the
    intent too: ``audit verify`` names it, the next quorum records what it finds."""
    from keysplit import ceremony

    _, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    (tmp_path / "shares.json").write_text(json.dumps([str(shares[n]) for n in NAMES]))
    quorum = [shares["alice"], shares["bob"]]
    with Keyring.open(tmp_path / "kr").unseal(quorum) as ku:
        ku.encrypt(b"x", subject="user-3")
    r = _script(LIBRARY_KILLED_AT_ENTRY, [tmp_path, op])
    assert r.returncode == -signal.SIGKILL, r.stderr
    kr = Keyring.open(tmp_path / "kr")
    assert [e.event for e in kr.audit_log().entries()][-1:] == ["intent"]
    gaps = _unrecorded(tmp_path / "kr")
    assert len(gaps) == 1 and "was begun" in gaps[0], gaps

    ceremony.unseal_check(kr, ceremony.Quorum(kr, quorum))
    observed = [e for e in kr.audit_log().entries() if e.event == "observed"]
    assert len(observed) == 1 and observed[0].data["operation"] == op
    assert observed[0].data["found"].startswith("done" if op == "shred" else "the subject is under")
    assert _unrecorded(tmp_path / "kr") == []


def test_decrypt_to_stdout_killed_mid_stream_leaves_an_entry(tmp_path: Path) -> None:
    """``keysplit decrypt DIR f.ks -`` SIGKILLed while it streams plaintext to stdout: the
    ``decrypt`` entry came only at the end, so plaintext had left and the log held nothing.
    An ``intent`` is recorded before the first byte goes out (as a file OUT records before
    it is put in place); the open intent is reported, and the next quorum records it."""
    from keysplit.stream import encrypt_file

    kr, _, quorum = _cli_keyring(tmp_path)
    plain, sealed = tmp_path / "big.bin", tmp_path / "big.ks"
    plain.write_bytes(os.urandom(4 << 20))  # more than a pipe holds: the writer blocks
    encrypt_file(plain, sealed, Keyring.open(kr).public_key)
    before = len(Keyring.open(kr).audit_log().entries())
    proc = subprocess.Popen(
        [sys.executable, "-c", "from keysplit_cli.app import main; main()", "decrypt"]
        + [str(a) for a in (kr, sealed, "-", *quorum(1))],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        got = proc.stdout.read(4096)  # plaintext has left the process
        assert len(got) == 4096
        proc.kill()
    finally:
        proc.kill()
        proc.wait(timeout=60)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    entries = Keyring.open(kr).audit_log().entries()[before:]
    assert [e.event for e in entries] == ["intent"]
    assert entries[0].data["operation"] == "decrypt" and entries[0].data["target"] == str(sealed)
    gaps = _unrecorded(kr)
    assert len(gaps) == 1 and "decrypt of" in gaps[0]
    r = _cli(["unseal", kr, *quorum(1)])
    assert r.returncode == 0, r.stderr
    observed = Keyring.open(kr).audit_log().entries()[-2]
    assert observed.event == "observed" and observed.data["found"].startswith("unknown")
    assert _unrecorded(kr) == []


# -- a full disk: the error names the file and says whether anything changed ------------------

FULL_AT_LOG_WRITE = """
import errno, os, sys
from keysplit_cli.app import main
real, which, seen, full = os.write, int(sys.argv[1]), [0], []
def write(fd, data):
    try:
        name = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        name = ""
    if name.endswith("/audit.log"):
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        seen[0] += 1
        if seen[0] == which:  # half the entry fits, then the disk is full
            full.append(fd)
            return real(fd, bytes(data)[: len(data) // 2])
    return real(fd, data)
os.write = write
sys.argv = ["keysplit", *sys.argv[2:]]
main()
"""


@pytest.mark.parametrize("at", [1, 2], ids=["intent", "outcome"])
def test_a_full_disk_names_the_file_and_says_whether_anything_changed(
    tmp_path: Path, at: int
) -> None:
    """``keysplit hold`` on a disk that fills up while it appends to the audit log said
    ``error: [Errno 28] No space left on device``: no file, and not whether the hold was
    placed. The log keeps no half line (the append is cut back). Full at the intent (before
    the store is touched): the error names the log and says nothing was changed; full at
    the outcome (after the hold committed): it says the hold took effect, and the open
    intent is reported."""
    kr, _, quorum = _cli_keyring(tmp_path)
    shares = _quorum_shares(quorum)
    r = _script(FULL_AT_LOG_WRITE, [at, "hold", kr, "user-3", "--on", *quorum(1)])
    said = " ".join(r.stderr.split())
    assert r.returncode == 1, r.stderr
    assert "[Errno 28]" not in said and f"No space left on device: {kr}/audit.log" in said
    assert "Traceback" not in r.stderr
    entries = Keyring.open(kr).audit_log().entries()  # no torn line: the append was undone
    with Keyring.open(kr).unseal(shares) as ku:
        held = bool(ku.local_data_keys().held_spellings("user-3"))
        ku.audit_log().verify()
    if at == 1:
        assert "nothing was changed" in said and "took effect" not in said
        assert not held and [e.event for e in entries] == ["init"]
        assert _unrecorded(kr) == []
    else:
        assert "the legal-hold took effect" in said and "nothing was changed" not in said
        assert held and [e.event for e in entries] == ["init", "intent"]
        assert len(_unrecorded(kr)) == 1


FILE_SIZE_LIMIT = """
import resource, signal, sys
from keysplit_cli.app import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv = ["keysplit", *sys.argv[2:]]
main()
"""


def test_a_decrypt_to_a_file_that_cannot_grow_names_it_and_says_nothing_changed(
    tmp_path: Path,
) -> None:
    """``keysplit decrypt DIR f.ks OUT`` whose output cannot be written whole (a file size
    limit here; a full disk likewise) said ``[Errno 27] File too large``: no file named,
    nothing said about OUT or the log. It names OUT and says nothing was changed (no OUT,
    no entry), which is so."""
    from keysplit.stream import encrypt_file

    kr, _, quorum = _cli_keyring(tmp_path)
    plain, sealed, out = tmp_path / "big.bin", tmp_path / "big.ks", tmp_path / "out.bin"
    plain.write_bytes(os.urandom(3 << 20))
    encrypt_file(plain, sealed, Keyring.open(kr).public_key)
    before = Keyring.open(kr).audit_log().entries()
    r = _script(FILE_SIZE_LIMIT, [1 << 20, "decrypt", kr, sealed, out, *quorum(1)])
    said = " ".join(r.stderr.split())
    assert r.returncode == 1, r.stderr
    assert "[Errno" not in said and f"File too large: {out}" in said, said
    assert "nothing was changed: no plaintext was released" in said
    assert not out.exists() and Keyring.open(kr).audit_log().entries() == before


def test_rekey_rerun_names_a_killed_handout_only_for_that_rekeys_own_files(
    tmp_path: Path,
) -> None:
    """(review4) The hint of the test above went by the keyring's state alone: any share
    file in the way of a rerun whose pending rekey's hand-out was unfinished was called
    that rekey's, to be removed. Here the killed rekey wrote into another --shares-dir,
    and the rerun's default one holds a second keyring's live shares of that generation
    (same custodians, one shares directory): the operator was told to remove them. Now
    the file's own set id must be the pending rekey's; else the usual refusal stands."""
    kr, custodians, quorum = _cli_keyring(tmp_path)
    _killed_after_its_first_share_file(
        ["rekey", kr, *custodians, *quorum(1), "--shares-dir", tmp_path / "elsewhere"]
    )
    other = tmp_path / "eu"  # another keyring of the same custodians: its shares at g2 here
    r = _cli(["init", other, "-k", "2", *custodians, "--shares-dir", tmp_path / "eu-shares"])
    assert r.returncode == 0, r.stderr
    eu_quorum = [
        a
        for n in ("ana", "ben")
        for a in (
            "-s",
            tmp_path / "eu-shares" / f"{n}.g1.kss",
            "-i",
            tmp_path / "keys" / f"{n}.identity",
        )
    ]
    r = _cli(["rekey", other, *custodians, *eu_quorum, "--shares-dir", tmp_path / "vault-shares"])
    assert r.returncode == 0, r.stderr
    live = {p: p.read_bytes() for p in (tmp_path / "vault-shares").glob("*.g2.kss")}
    assert len(live) == 3
    r = _cli(["rekey", kr, *custodians, *quorum(1)])
    assert r.returncode == 1, r.stderr
    said = " ".join(r.stderr.split())
    assert "refusing to overwrite existing share file" in said, said
    assert "killed" not in said and "remove" not in said, said
    assert {p: p.read_bytes() for p in live} == live


# -- a rekey killed between its switch and the store's count -------------------------------

KILL_AT_NOTE_REKEY = """
import os, signal, sys
from keysplit.store.sqlite import SQLiteKeyStore
from keysplit_cli.app import main
def note_rekey(self, *args):
    os.kill(os.getpid(), signal.SIGKILL)  # the keyring file switched, the store not told
SQLiteKeyStore.note_rekey = note_rekey
sys.argv = ["keysplit", *sys.argv[1:]]
main()
"""


def test_rekey_killed_between_its_switch_and_the_stores_count(tmp_path: Path) -> None:
    """``keysplit rekey`` SIGKILLed after the keyring file was rekeyed and before the store
    counted it (note_rekey): the old shares no longer unseal, the new ones do; the audit
    log owes the switch and the next quorum records it (``rekey-recovered``) once; no
    later unseal or rekey counts the rekey twice. The store's count (``status``'s fleet
    ``rekeys``) was one short for good: the owed-switch mark could not tell a kill before
    the count from one after it. Now that unseal notes the rekey to the store, which counts
    each share set once."""
    kr, custodians, quorum = _cli_keyring(tmp_path)
    r = _script(KILL_AT_NOTE_REKEY, ["rekey", kr, *custodians, *quorum(1)])
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert Keyring.open(kr).meta.generation == 2
    r = _cli(["unseal", kr, *quorum(1)])
    assert r.returncode == 1 and "error:" in r.stderr, r.stderr  # the old shares are dead
    assert len(_unrecorded(kr)) == 1  # the switch is owed its entry
    for _ in range(2):
        r = _cli(["unseal", kr, *quorum(2)])
        assert r.returncode == 0, r.stderr
    assert _rekey_events(kr) == [("rekey-recovered", 2)]  # recorded once
    assert _unrecorded(kr) == []
    r = _cli(["rekey", kr, *custodians, *quorum(2)])  # the next rekey counts itself once
    assert r.returncode == 0, r.stderr
    assert _rekey_events(kr) == [("rekey-recovered", 2), ("rekey", 3)]
    status = Keyring.open(kr).status().fleet
    assert status is not None and status.rekeys == 2  # before the fix: 1


KILL_REKEY_AT = """
import os, signal, sys
from keysplit.keyring.home import KeyringHome
from keysplit.store.sqlite import SQLiteKeyStore
from keysplit_cli.app import main
where = sys.argv[1]
if where == "before-switch":
    owner, name = KeyringHome, "commit_pending"
else:
    owner, name = SQLiteKeyStore, "note_rekey"
real = getattr(owner, name)
def killed(self, *args, **kwargs):
    if where == "after-count":
        real(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
setattr(owner, name, killed)
sys.argv = ["keysplit", *sys.argv[2:]]
main()
"""


@pytest.mark.parametrize("where", ["before-switch", "between-switch-and-count", "after-count"])
def test_a_rekey_killed_anywhere_around_its_count_is_counted_once(
    tmp_path: Path, where: str
) -> None:
    """``keysplit rekey`` SIGKILLed just before the keyring file's switch, between the
    switch and the store's count, and just after the count: in each case the next unseal
    with the new shares opens the keyring and records the rekey once, the store counts it
    exactly once (``status``'s fleet ``rekeys``: 1, however often unsealed), the old
    shares are dead, and the next rekey counts itself once more."""
    kr, custodians, quorum = _cli_keyring(tmp_path)
    r = _script(KILL_REKEY_AT, [where, "rekey", kr, *custodians, *quorum(1)])
    assert r.returncode == -signal.SIGKILL, r.stderr
    for _ in range(2):
        r = _cli(["unseal", kr, *quorum(2)])
        assert r.returncode == 0, r.stderr
        status = Keyring.open(kr).status()
        assert status.generation == 2 and status.fleet is not None
        assert status.fleet.rekeys == 1, where
    assert _rekey_events(kr) == [("rekey-recovered", 2)]
    r = _cli(["unseal", kr, *quorum(1)])
    assert r.returncode == 1 and "error:" in r.stderr, r.stderr  # the old shares are dead
    r = _cli(["rekey", kr, *custodians, *quorum(2)])
    assert r.returncode == 0, r.stderr
    fleet = Keyring.open(kr).status().fleet
    assert fleet is not None and fleet.rekeys == 2
