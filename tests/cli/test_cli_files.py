"""CLI encrypt/decrypt and audit verify/show: round trips, stdio, and every tampering."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
from ceremony_helpers import (  # noqa: F401 (fixtures)
    Ceremony,
    ceremony_fixture,
    error_lines,
    fast_kdf_fixture,
    make_ceremony,
    run,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from service_helpers import KEYSPLIT

from keysplit import Identity, Keyring, load_share
from keysplit.stream import read_header

MiB = 1 << 20


def _encrypt(c: Ceremony, data: bytes, *extra: str) -> Path:
    src = c.root / "plain.bin"
    src.write_bytes(data)
    out = c.root / "sealed.ks"
    r = run(["encrypt", c.kr, src, out, *extra])
    assert r.exit_code == 0, r.output
    return out


def test_encrypt_needs_no_quorum_decrypt_needs_one(cer: Ceremony) -> None:
    data = os.urandom(2 * MiB + 123)
    sealed = _encrypt(cer, data, "--context", "kind=backup", "--context", "user=u42")
    with sealed.open("rb") as fh:
        assert dict(read_header(fh).context) == {"kind": "backup", "user": "u42"}
    out = cer.root / "out.bin"
    r = run(["decrypt", cer.kr, sealed, out, *cer.quorum("alice")])
    assert r.exit_code == 1 and error_lines(r) == ["error: need 2 shares, got 1"]
    assert not out.exists()
    r = run(["decrypt", cer.kr, sealed, out, *cer.quorum("alice", "carol")])
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == data
    # (docs walkthrough, 'found, not fixed') without --context the file's context was neither
    # checked nor shown: the operator learnt nothing of what was decrypted. Now it is shown
    said = " ".join(r.stderr.split())  # the console wraps long lines
    assert 'context {"kind": "backup", "user": "u42"} (not checked' in said
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    last = Keyring.open(cer.kr).audit_log().entries()[-1]
    assert last.event == "decrypt" and last.data["context"] == {"kind": "backup", "user": "u42"}
    # the expected context must match exactly
    r = run(
        [
            "decrypt",
            cer.kr,
            sealed,
            cer.root / "o2",
            "--context",
            "kind=other",
            *cer.quorum("alice", "bob"),
        ]
    )
    assert r.exit_code == 1 and "context does not match" in r.stderr
    # an existing output is not overwritten without --force
    r = run(["decrypt", cer.kr, sealed, out, *cer.quorum("alice", "bob")])
    assert r.exit_code == 1 and "refusing to overwrite" in r.stderr


def test_stdin_and_stdout(cer: Ceremony) -> None:
    r = run(["encrypt", cer.kr, "-", cer.root / "s.ks"], input="hello from stdin\n")
    assert r.exit_code == 0, r.output
    r = run(["decrypt", cer.kr, cer.root / "s.ks", "-", *cer.quorum("bob", "carol")])
    assert r.exit_code == 0, r.output
    assert r.stdout == "hello from stdin\n"
    r = run(["decrypt", cer.kr, "-", "-"])
    assert r.exit_code == 2 and "needs --share" in r.stderr


def _chunks(path: Path) -> tuple[bytes, list[bytes]]:
    raw = path.read_bytes()
    with path.open("rb") as fh:
        h = read_header(fh)
    body = raw[h.size :]
    step = h.chunk_size + 16
    return raw[: h.size], [body[i : i + step] for i in range(0, len(body), step)]


@pytest.mark.parametrize("attack", ["truncate", "drop-last", "reorder", "extend", "flip"])
def test_tampered_streams_fail_and_leave_no_plaintext(cer: Ceremony, attack: str) -> None:
    sealed = _encrypt(cer, os.urandom(3 * MiB + 1000))
    header, chunks = _chunks(sealed)
    assert len(chunks) == 4  # 3 full chunks and a short final one
    if attack == "truncate":
        bad = sealed.read_bytes()[:-5]
    elif attack == "drop-last":
        bad = header + b"".join(chunks[:-1])
    elif attack == "reorder":
        bad = header + chunks[1] + chunks[0] + b"".join(chunks[2:])
    elif attack == "extend":
        bad = sealed.read_bytes() + b"\x00" * 17
    else:
        ba = bytearray(sealed.read_bytes())
        ba[len(header) + 1000] ^= 1
        bad = bytes(ba)
    sealed.write_bytes(bad)
    out = cer.root / "out.bin"
    r = run(["decrypt", cer.kr, sealed, out, *cer.quorum("alice", "bob")])
    assert r.exit_code == 1
    if attack == "drop-last":  # a cut at a chunk boundary: the format can tell
        assert error_lines(r) == [
            "error: truncated: the file ends after chunk 3, before its final chunk (cut at a "
            "chunk boundary; the chunks read authenticate)"
        ]
    else:  # before: "authentication failed", also for a file cut short
        assert error_lines(r) == ["error: authentication failed: the file was truncated or altered"]
    assert not out.exists()
    assert not [p for p in cer.root.iterdir() if p.name.startswith(".out.bin")]
    assert Keyring.open(cer.kr).audit_log().entries()[-1].event == "init"  # nothing logged


def test_a_decrypt_to_stdout_that_fails_records_what_it_released(cer: Ceremony) -> None:
    """(red team) A decrypt to stdout writes each chunk once it authenticates: when a later
    chunk fails, what came before is already out, and nothing was recorded (the entry was
    written only on success). Now a ``decrypt-incomplete`` entry says how many bytes left,
    and why it stopped; a decrypt to a file still records nothing (it released nothing)."""
    data = os.urandom(3 * MiB + 1000)
    sealed = _encrypt(cer, data, "--context", "kind=backup")
    header, chunks = _chunks(sealed)
    sealed.write_bytes(header + b"".join(chunks[:2]) + chunks[2][:-1])  # the third is cut
    r = run(["decrypt", cer.kr, sealed, "-", *cer.quorum("alice", "bob")])
    assert r.exit_code == 1 and error_lines(r) == [
        "error: authentication failed: the file was truncated or altered"
    ]
    out = r.stdout_bytes
    assert out == data[: 2 * MiB]  # two chunks authenticated and left
    last = Keyring.open(cer.kr).audit_log().entries()[-1]
    assert last.event == "decrypt-incomplete"  # before: "init", nothing on the record
    assert last.data["bytes"] == len(out) and last.data["error"] == "IntegrityError"
    assert last.data["file"] == str(sealed) and last.data["context"] == {"kind": "backup"}
    assert "alice" in str(last.data["authorized_by"]) and "bob" in str(last.data["authorized_by"])
    r = run(["decrypt", cer.kr, sealed, cer.root / "o.bin", *cer.quorum("alice", "bob")])
    assert r.exit_code == 1 and not (cer.root / "o.bin").exists()
    assert Keyring.open(cer.kr).audit_log().entries()[-1] == last  # nothing released


def test_file_of_another_keyring_is_refused(cer: Ceremony, tmp_path: Path) -> None:
    other = make_ceremony(tmp_path / "other")
    sealed = _encrypt(other, b"for the other keyring")
    r = run(["decrypt", cer.kr, sealed, cer.root / "x", *cer.quorum("alice", "bob")])
    assert r.exit_code == 1
    assert error_lines(r) == [f"error: {sealed} is sealed to another keyring"]
    assert "[1/2]" not in r.stderr  # refused before any custodian was asked for a share


def test_encrypt_usage_errors(cer: Ceremony) -> None:
    r = run(["encrypt", cer.kr, "-", cer.root / "x.ks", "--context", "novalue"], input="x")
    assert r.exit_code == 2 and "KEY=VALUE" in r.stderr
    r = run(["encrypt", cer.kr, cer.root / "missing", cer.root / "x.ks"])
    assert r.exit_code == 1 and "no such file" in r.stderr


# -- audit ---------------------------------------------------------------------------------


def _grow_log(c: Ceremony) -> None:
    for names in (("alice", "bob"), ("bob", "carol"), ("alice", "carol")):
        r = run(["unseal", c.kr, *c.quorum(*names)])
        assert r.exit_code == 0, r.output


def test_audit_verify_prints_head_and_checks_macs(cer: Ceremony) -> None:
    _grow_log(cer)
    r = run(["audit", "verify", cer.kr])
    assert r.exit_code == 0, r.output
    head = r.stdout.strip()
    assert head == Keyring.open(cer.kr).audit_log().head
    assert "4 entries" in r.stderr and "MACs not checked" in r.stderr
    r = run(["audit", "verify", cer.kr, "--json", "--anchor", head, *cer.quorum("alice", "bob")])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc == {
        "entries": 4,
        "head": head,
        "mac_verified": True,
        "anchor_authenticated": True,
        "anchored": True,
        "unrecorded": [],
    }


def _lines(c: Ceremony) -> list[bytes]:
    return (c.kr / "audit.log").read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        ("edit", "entry 2: not in canonical form"),
        ("edit-canonical", "entry 2: altered"),
        ("remove", "entry 3: sequence number is 4"),
        ("reorder", "entry 2: sequence number is 3"),
        ("torn", "entry 4: incomplete last line"),
    ],
)
def test_audit_verify_detects_tampering(cer: Ceremony, attack: str, message: str) -> None:
    _grow_log(cer)
    lines = _lines(cer)
    if attack == "edit":
        lines[1] = lines[1].replace(b'"bob"', b'"eve" ')
    elif attack == "edit-canonical":
        lines[1] = lines[1].replace(b'"bob"', b'"eve"')
    elif attack == "remove":
        del lines[2]
    elif attack == "reorder":
        lines[1], lines[2] = lines[2], lines[1]
    else:
        lines[-1] = lines[-1][:-20]
    (cer.kr / "audit.log").write_bytes(b"".join(lines))
    r = run(["audit", "verify", cer.kr])
    assert r.exit_code == 1
    assert error_lines(r)[0].startswith(f"error: {message}"), r.stderr
    # a ceremony refuses to extend a broken log (it would hide the break)
    if attack == "torn":
        r = run(["unseal", cer.kr, *cer.quorum("alice", "bob")])
        assert r.exit_code == 1 and "torn" in r.stderr


def test_full_rewrite_passes_the_chain_but_not_the_macs(cer: Ceremony) -> None:
    """Someone with the disk rewrites the whole log consistently, without the MAC key."""
    _grow_log(cer)
    log = cer.kr / "audit.log"
    original = [json.loads(ln) for ln in log.read_bytes().splitlines()]
    log.unlink()
    from keysplit import AuditLog

    forged = AuditLog(log)
    for e in original:
        forged._append(e["event"], **e["data"])
    r = run(["audit", "verify", cer.kr])  # the anchor's head is not the forged log's
    assert r.exit_code == 1 and "records 4" in error_lines(r)[0], r.output
    body = {"entries": len(original), "head": forged.head, "v": 1}
    anchor = json.dumps(dict(body, mac="0" * 64), sort_keys=True, separators=(",", ":"))
    (cer.kr / "audit.anchor").write_text(anchor)  # forged too: its MAC needs the key
    r = run(["audit", "verify", cer.kr])
    assert r.exit_code == 0  # a hash chain and an unkeyed anchor alone cannot tell
    r = run(["audit", "verify", cer.kr, "--mac", *cer.quorum("alice", "bob")])
    assert r.exit_code == 1
    assert error_lines(r) == ["error: entry 1: MAC missing"]


def test_audit_show(cer: Ceremony) -> None:
    _grow_log(cer)
    r = run(["audit", "show", cer.kr, "--json"])
    assert r.exit_code == 0, r.output
    entries = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert [e["event"] for e in entries] == ["init", "unseal-check", "unseal-check", "unseal-check"]
    assert [c["custodian"] for c in entries[2]["data"]["custodians"]] == ["bob", "carol"]
    r = run(["audit", "show", cer.kr])
    assert r.exit_code == 0 and "unseal-check" in r.stdout and "custodians=[bob, carol]" in r.stdout


def test_audit_show_escapes_control_characters(cer: Ceremony) -> None:
    """A subject is any Unicode text, and whoever may shred or hold (a key service token
    holder too) chooses it: `audit show` printed it raw, so terminal escapes in it cleared
    the screen or erased and forged the lines above (red team). Now every character that
    is not printable is shown escaped; --json was already safe (JSON escapes them)."""
    evil = "u1\x1b[2J\x1b[1A\x1b[2Kfake entry\x07\u202e\r\n"
    r = run(["hold", cer.kr, evil, "--on", *cer.quorum("alice", "bob")])
    assert r.exit_code == 0, r.output
    r = run(["audit", "show", cer.kr])
    assert r.exit_code == 0, r.output
    bad = {c for c in r.stdout if not c.isprintable() and c != "\n"}
    assert not bad, sorted(bad)
    flat = "".join(r.stdout.replace("\u2502", " ").split())  # the value may be folded
    assert "u1\\x1b[2J\\x1b[1A\\x1b[2Kfakeentry\\x07\\u202e\\r\\n" in flat, r.stdout
    r = run(["audit", "show", cer.kr, "--json"])
    assert json.loads(r.stdout.splitlines()[-1])["data"]["subject"] == evil


def test_audit_repair_drops_only_a_torn_tail(cer: Ceremony) -> None:
    _grow_log(cer)
    before = _lines(cer)
    r = run(["audit", "repair", cer.kr, *cer.quorum("alice", "bob")])
    assert r.exit_code == 0 and "nothing to repair" in r.stderr, r.output
    assert _lines(cer) == before
    # a crash while appending a fifth entry (cutting the fourth, which the anchor records,
    # would be a truncation: refused, see test_a_deleted_or_truncated_audit_log_...)
    torn = [*before, before[-1][:-20]]
    (cer.kr / "audit.log").write_bytes(b"".join(torn))
    r = run(["audit", "repair", cer.kr, *cer.quorum("alice", "carol")])
    assert r.exit_code == 0, r.output
    after = _lines(cer)
    assert after[: len(before)] == before  # complete entries untouched
    assert json.loads(after[-1])["event"] == "audit-repair"
    assert run(["audit", "verify", cer.kr, "--mac", *cer.quorum("alice", "bob")]).exit_code == 0
    assert run(["unseal", cer.kr, *cer.quorum("alice", "bob")]).exit_code == 0
    # a break elsewhere is not "repaired" away
    lines = _lines(cer)
    lines[1] = lines[1].replace(b'"bob"', b'"eve"')
    (cer.kr / "audit.log").write_bytes(b"".join(lines))
    r = run(["audit", "repair", cer.kr, *cer.quorum("alice", "bob")])
    assert r.exit_code == 1 and error_lines(r)[0].startswith("error: entry 2"), r.stderr


def test_audit_repair_keeps_a_whole_shred_entry_that_lost_its_newline(cer: Ceremony) -> None:
    """The write of a shred's entry stopped just before its newline: the shred took effect
    and the entry is whole (chain and MAC check). 'audit repair' dropped it, erasing the
    only record of the erasure; now it keeps it, adds the newline and records the repair."""
    ab = [
        load_share(cer.share(n).read_bytes(), identity=Identity.from_bytes(cer.ids[n].read_bytes()))
        for n in ("alice", "bob")
    ]
    with Keyring.open(cer.kr).unseal(ab) as ukr:
        ukr.encrypt(b"card", subject="u1")
    assert run(["shred", cer.kr, "u1", "--yes", *cer.quorum("alice", "bob")]).exit_code == 0
    before = _lines(cer)
    assert json.loads(before[-1])["event"] == "shred"
    (cer.kr / "audit.log").write_bytes(b"".join(before)[:-1])
    r = run(["audit", "repair", cer.kr, *cer.quorum("alice", "carol")])
    assert r.exit_code == 0, r.output
    assert "kept, newline added" in r.stderr
    after = _lines(cer)
    assert after[: len(before)] == before  # the shred entry, byte for byte
    repair = json.loads(after[-1])
    assert repair["event"] == "audit-repair" and "was whole" in repair["data"]["dropped"]
    assert len(after) == len(before) + 1
    assert run(["audit", "verify", cer.kr, "--mac", *cer.quorum("alice", "bob")]).exit_code == 0


def test_a_deleted_or_truncated_audit_log_is_refused_without_anchor(cer: Ceremony) -> None:
    """Deleting audit.log made 'audit verify' (even --mac) report 'intact: 0 entries' and
    the next ceremony start a fresh chain; cutting its newest entries went unseen too. The
    keyring now anchors the log's head in audit.anchor after every ceremony (required by
    its authenticated metadata), and both refuse, naming the log's and the anchor's head."""
    _grow_log(cer)
    log, anchor = cer.kr / "audit.log", cer.kr / "audit.anchor"
    full = log.read_bytes()
    n = len(full.splitlines())
    log.write_bytes(b"".join(full.splitlines(keepends=True)[:-1]))
    r = run(["audit", "verify", cer.kr])
    assert r.exit_code == 1
    assert error_lines(r) == [
        f"error: audit log {log} has {n - 1} entries (head {_head_of(log)[:16]}...) but "
        f"{anchor} records {n} (head {_sha(full.splitlines()[-1])[:16]}...): the log was "
        "truncated or rolled back"
    ]
    log.unlink()
    for args in (
        ["audit", "verify", cer.kr, "--mac", *cer.quorum("alice", "bob")],
        ["unseal", cer.kr, *cer.quorum("alice", "bob")],
    ):
        r = run(args)
        assert r.exit_code == 1 and "has 0 entries" in error_lines(r)[0], r.output
    assert not log.exists()  # no fresh chain began
    anchor.unlink()
    r = run(["audit", "verify", cer.kr])
    assert r.exit_code == 1 and "audit.anchor is missing" in error_lines(r)[0]
    log.write_bytes(full)
    anchor.unlink(missing_ok=True)
    r = run(["audit", "verify", cer.kr])
    assert r.exit_code == 1 and "missing" in error_lines(r)[0]


def _sha(line: bytes) -> str:
    import hashlib

    return hashlib.sha256(line).hexdigest()


def _head_of(log: Path) -> str:
    return _sha(log.read_bytes().splitlines()[-1])


# -- inputs that can be read only once (red team) ------------------------------------------


def test_decrypt_reads_a_pipe_once(cer: Ceremony) -> None:
    """``keysplit decrypt vault <(curl ...) out``: IN is a pipe (/dev/fd/N), which can be read
    only once. The check that the file is sealed to this keyring read its header through a
    first open, and the decryption opened the path again: it found the rest of the pipe
    ("not a keysplit stream (bad magic)" or "empty input") after the custodians had given
    their shares, and a named FIFO whose writer the first open had cut off hung forever."""
    data = os.urandom(300_000)  # several pipe buffers and more than one read block
    sealed = _encrypt(cer, data).read_bytes()
    rfd, wfd = os.pipe()

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError), os.fdopen(wfd, "wb") as fh:
            fh.write(sealed)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    out = cer.root / "from-pipe.bin"
    try:
        r = run(["decrypt", cer.kr, f"/dev/fd/{rfd}", out, *cer.quorum("alice", "bob")])
    finally:
        os.close(rfd)  # a writer still blocked (the bug) gets EPIPE and ends
        writer.join(10)
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == data
    # a pipe sealed to another keyring is still refused before any share is asked for
    other = make_ceremony(cer.root / "other")
    foreign = _encrypt(other, b"for the other keyring").read_bytes()
    rfd, wfd = os.pipe()
    os.write(wfd, foreign)
    os.close(wfd)
    try:
        r = run(["decrypt", cer.kr, f"/dev/fd/{rfd}", cer.root / "x", *cer.quorum("alice", "bob")])
    finally:
        os.close(rfd)
    assert r.exit_code == 1
    assert error_lines(r) == [f"error: /dev/fd/{rfd} is sealed to another keyring"]
    assert "[1/2]" not in r.stderr


def _without_terminal(args: list[object], data: bytes) -> subprocess.CompletedProcess[bytes]:
    """The installed keysplit with ``data`` on stdin and no controlling terminal (cron, CI):
    a prompt would read stdin."""
    return subprocess.run(
        [KEYSPLIT, *map(str, args)],
        input=data,
        capture_output=True,
        start_new_session=True,
        timeout=120,
    )


def _refused(p: subprocess.CompletedProcess[bytes], code: int, last: list[str]) -> None:
    """``p`` exited with ``code``, no traceback, its stderr ending in the lines ``last``."""
    assert p.returncode == code and b"Traceback" not in p.stderr, p.stderr
    assert p.stderr.decode().splitlines()[-len(last) :] == last


def test_decrypt_from_stdin_never_reads_a_passphrase_from_it(cer: Ceremony) -> None:
    """``... | keysplit decrypt DIR - OUT --share carol.kss`` without a terminal (cron, CI):
    carol's passphrase prompt read the first line of the encrypted stream as her
    passphrase, a UnicodeEncodeError traceback (binary bytes), or else a "wrong passphrase"
    for a passphrase nobody typed. stdin is the file: the passphrase must come from a file."""
    sealed = _encrypt(cer, os.urandom(5000)).read_bytes()
    out = cer.root / "out.bin"
    args = ["decrypt", cer.kr, "-", out, "--share", cer.share("carol"), *cer.quorum("alice")]
    p = _without_terminal(args, sealed)
    _refused(
        p,
        1,
        [
            f"error: {cer.share('carol')}: standard input carries the file to decrypt, so a "
            "passphrase cannot be read from it",
            "hint: give --passphrase-file NAME=FILE",
        ],
    )
    assert not out.exists()
    args += ["--passphrase-file", f"carol={cer.carol_pw}"]  # the way to do it
    p = subprocess.run([KEYSPLIT, *map(str, args)], input=sealed, capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr


# -- text from argv the library refuses (red team) -----------------------------------------


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["k=" + "v" * 70_000], "error: --context: a context value is at most 65536 bytes"),
        (["k\udcff=v"], "error: --context: context key is not valid Unicode text"),
        (["k=\udcff"], "error: --context: context value is not valid Unicode text"),
        (
            ["k" * 2000 + "=v"],
            "error: --context: a context key must be at most 1024 bytes of UTF-8",
        ),
        (
            ["a=" + "v" * 40_000, "b=" + "v" * 40_000],
            "error: --context: context too large: 80010 bytes encoded, at most 65535",
        ),
    ],
)
def test_context_the_library_refuses_is_a_usage_error(
    cer: Ceremony, items: list[str], message: str
) -> None:
    """Text the stream format cannot hold (too long, not Unicode: bytes that are not UTF-8
    reach Python's argv as lone surrogates) was a ValueError traceback from encrypt, and
    from decrypt after the custodians had given their shares."""
    src = cer.root / "plain.bin"
    src.write_bytes(b"x")
    ctx = [arg for item in items for arg in ("--context", item)]
    r = run(["encrypt", cer.kr, src, cer.root / "x.ks", *ctx])
    assert r.exit_code == 2 and error_lines(r) == [message], r.stderr
    assert not (cer.root / "x.ks").exists()
    sealed = _encrypt(cer, b"data")
    r = run(["decrypt", cer.kr, sealed, cer.root / "y", *ctx, *cer.quorum("alice", "bob")])
    assert r.exit_code == 2 and error_lines(r) == [message], r.stderr
    assert "[1/2]" not in r.stderr  # refused before any share was asked for


def _one_row_dataset(c: Ceremony) -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    src = c.root / "ds"
    src.mkdir()
    pq.write_table(pa.table({"user": ["u1"], "email": ["a@x"]}), src / "part-0.parquet")
    return src


@pytest.mark.parametrize("command", ["encrypt-dataset", "decrypt-dataset", "scan-dataset"])
def test_dataset_context_no_record_can_carry_is_a_usage_error(cer: Ceremony, command: str) -> None:
    """A dataset job's --context that no record can carry (not Unicode) failed inside the
    job, after the quorum and the cluster's start, as `error: ValueError` (no reason)."""
    src = _one_row_dataset(cer)
    dst = [] if command == "scan-dataset" else [cer.root / "out"]
    args = [command, src, *dst, "--column", "email", "--subject-column", "user"]
    r = run([*args, "--keyring", cer.kr, "--context", "k\udcff=v", *cer.quorum("alice", "bob")])
    assert r.exit_code == 2, r.output
    assert error_lines(r) == ["error: --context: context key is not valid Unicode text"]
    assert "[1/2]" not in r.stderr and not (cer.root / "out").exists()


@pytest.mark.parametrize("command", ["encrypt-dataset", "decrypt-dataset", "scan-dataset"])
def test_dataset_column_as_its_own_subject_column_is_refused_before_any_share(
    cer: Ceremony, command: str
) -> None:
    """--column equal to --subject-column was refused by the library only once the job ran:
    after the custodians had been asked for their shares (red team, 'found, not fixed')."""
    src = _one_row_dataset(cer)
    dst = [] if command == "scan-dataset" else [cer.root / "out"]
    args = [command, src, *dst, "--column", "user", "--subject-column", "user"]
    for quorum_args in (cer.quorum("alice", "bob"), []):  # files, or the share prompt
        r = run([*args, "--keyring", cer.kr, *quorum_args], input="\n")
        assert r.exit_code == 2, r.output
        assert error_lines(r) == [
            "error: --column: column 'user' cannot be sealed as its own subject column"
        ], r.stderr
        assert "[1/2]" not in r.stderr and "Share [0/2]" not in r.stderr
        assert not (cer.root / "out").exists()


# -- output paths checked before the quorum (red team) ---------------------------------------


def _bad_outputs(c: Ceremony) -> list[tuple[Path, list[str], str]]:
    """(OUT, extra options, error line) for outputs no command can write."""
    afile = c.root / "a-file"
    afile.write_bytes(b"x")
    return [
        (c.root / "no-dir" / "out", [], f"error: OUT: no such directory: {c.root / 'no-dir'}"),
        (afile / "out", [], f"error: OUT: not a directory: {afile}"),
        (c.root, ["--force"], f"error: OUT: is a directory: {c.root}"),
    ]


def test_decrypt_output_that_cannot_be_written_is_refused_before_any_share(cer: Ceremony) -> None:
    """decrypt to a path in a missing directory (or under a file, or to a directory) failed
    only once the custodians had given their shares: `error: no such file: DIR`."""
    sealed = _encrypt(cer, b"data")
    for out, extra, message in _bad_outputs(cer):
        for quorum_args in (cer.quorum("alice", "bob"), []):  # files, or the share prompt
            r = run(["decrypt", cer.kr, sealed, out, *extra, *quorum_args], input="\n")
            assert r.exit_code == 2 and error_lines(r) == [message], r.stderr
            assert "[1/2]" not in r.stderr and "Share [0/2]" not in r.stderr


def test_output_that_is_a_dangling_symlink_is_refused_before_any_share(cer: Ceremony) -> None:
    """OUT a symbolic link to nowhere "does not exist" (Path.exists follows it), so decrypt
    asked for the shares, decrypted, then failed to link its output in:
    `error: [Errno 17] File exists: '7' -> 'OUT'`. It is an existing file like any other."""
    sealed = _encrypt(cer, b"data")
    out = cer.root / "dangling"
    out.symlink_to(cer.root / "nowhere")
    refused = f"error: refusing to overwrite existing file: {out}"
    for quorum_args in (cer.quorum("alice", "bob"), []):
        r = run(["decrypt", cer.kr, sealed, out, *quorum_args], input="\n")
        assert r.exit_code == 1 and error_lines(r) == [refused], r.stderr
        assert "[1/2]" not in r.stderr and "Share [0/2]" not in r.stderr
    r = run(["encrypt", cer.kr, cer.root / "plain.bin", out])
    assert r.exit_code == 1 and error_lines(r) == [refused], r.stderr
    assert out.is_symlink() and not (cer.root / "nowhere").exists()
    r = run(["decrypt", cer.kr, sealed, out, "--force", *cer.quorum("alice", "bob")])
    assert r.exit_code == 0 and out.read_bytes() == b"data" and not out.is_symlink()


def test_encrypt_output_that_cannot_be_written_is_a_usage_error(cer: Ceremony) -> None:
    src = cer.root / "plain.bin"
    src.write_bytes(b"x")
    for out, extra, message in _bad_outputs(cer):
        r = run(["encrypt", cer.kr, src, out, *extra])
        assert r.exit_code == 2 and error_lines(r) == [message], r.stderr


@pytest.mark.parametrize("command", ["encrypt-dataset", "decrypt-dataset", "scan-dataset"])
def test_dataset_paths_are_checked_before_the_quorum(cer: Ceremony, command: str) -> None:
    """A dataset job whose OUT is a file or a full directory (or whose IN is missing) was
    refused inside the job, after the quorum and the cluster's start."""
    src = _one_row_dataset(cer)
    full = cer.root / "full"
    full.mkdir()
    (full / "keep").write_bytes(b"x")
    cases = [(cer.root / "missing", cer.root / "out", "error: IN: no such file or directory", 1)]
    link = cer.root / "link"
    (cer.root / "empty").mkdir()
    link.symlink_to(cer.root / "empty")
    if command != "scan-dataset":
        cases += [
            (src, full, f"error: OUT: {full} exists and is not an empty directory", 2),
            (src, src / "part-0.parquet" / "out", "error: OUT: not a directory", 2),
            # (red team) an output inside its input became part of the input dataset
            (src, src / "out", f"error: OUT: {src / 'out'} is inside the input dataset", 2),
            # (red team) a link: the whole job ran, then the parts could not be renamed onto it
            (src, link, f"error: OUT: {link} is a symbolic link", 2),
        ]
    for in_path, out, message, code in cases:
        dst = [] if command == "scan-dataset" else [out]
        args = [command, in_path, *dst, "--column", "email", "--subject-column", "user"]
        r = run([*args, "--keyring", cer.kr, *cer.quorum("alice", "bob")])
        assert r.exit_code == code, r.output
        assert len(error_lines(r)) == 1 and error_lines(r)[0].startswith(message), r.stderr
        assert "[1/2]" not in r.stderr and "Dask" not in r.stderr


def test_dataset_commands_leave_no_leaked_semaphore_warning_nor_worker_log(
    tmp_path: Path,
) -> None:
    """The job's driver process was killed at exit, its LocalCluster never closed: the
    resource tracker then printed `resource_tracker: There appear to be 12 leaked semaphore
    objects to clean up at shutdown` (and a `warnings.warn` line) on the command's stderr,
    after a job that succeeded or failed alike (red team). Real processes: atexit matters."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pytest.importorskip("distributed")
    from service_helpers import cli, make_keyring, share_file

    kr = make_keyring(tmp_path, 2, ["a", "b"])
    quorum = ["--keyring", kr, "-s", share_file(kr.parent / "vault-shares", "a")]
    quorum += ["-s", share_file(kr.parent / "vault-shares", "b")]
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"user": ["u1", "u2"], "body": [b"x", b"y"]}), tmp_path / "in" / "p")
    cols = ["--column", "body", "--subject-column", "user"]
    ok = cli("encrypt-dataset", "in", "enc", *cols, *quorum, cwd=tmp_path)
    bad = cli("decrypt-dataset", "in", "out", *cols, *quorum, cwd=tmp_path)  # not records
    assert ok.returncode == 0 and bad.returncode == 1, (ok.stderr, bad.stderr)
    assert "error: column 'body': not a keysplit record" in bad.stderr  # named since 0c9105c
    for r in (ok, bad):
        assert "leaked" not in r.stderr and "resource_tracker" not in r.stderr, r.stderr
    # and a failed part is one error line: the local workers logged it as `distributed.worker
    # - ERROR - Compute Failed` with the exception's text (which the driver withholds for
    # other than keysplit errors: it may quote data) and a traceback (red team)
    assert "Traceback" not in bad.stderr and "Compute Failed" not in bad.stderr, bad.stderr
    assert [ln for ln in bad.stderr.splitlines() if "error" in ln.lower()] == [
        "error: column 'body': not a keysplit record (bad magic)"
    ], bad.stderr


def test_output_that_is_a_fifo_or_a_link_to_one_is_never_replaced(cer: Ceremony) -> None:
    """(red team) `encrypt ... /dev/null --force` as root renamed a regular file over the
    system's /dev/null (and `/dev/stdout`, a link, likewise): any device, FIFO or socket
    OUT, or a link to one, was replaced by the rename. Refused before any share now, and
    by the library's writer too. (A FIFO stands in for the device here.)"""
    sealed = _encrypt(cer, b"data")
    fifo = cer.root / "fifo"
    os.mkfifo(fifo)
    link = cer.root / "link-to-fifo"
    link.symlink_to(fifo)
    for out in (fifo, link):
        message = f"error: OUT: not a regular file: {out}"
        for force in (["--force"], []):  # not "pass --force" first, then this
            r = run(["encrypt", cer.kr, cer.root / "plain.bin", out, *force])
            assert r.exit_code == 2 and error_lines(r) == [message], r.stderr
            for quorum_args in (cer.quorum("alice", "bob"), []):
                r = run(["decrypt", cer.kr, sealed, out, *force, *quorum_args], input="\n")
                assert r.exit_code == 2 and error_lines(r) == [message], r.stderr
                assert "[1/2]" not in r.stderr and "Share [0/2]" not in r.stderr
    assert fifo.is_fifo() and link.is_symlink() and link.is_fifo()


def test_an_identity_without_passphrase_readable_by_others_is_warned_of(cer: Ceremony) -> None:
    """(red team) An identity file with no passphrase and mode 0644 (copied with cp, written
    by a script) was used silently: its private key opens the custodian's shares, and any
    local user could read it. ssh refuses such a key; keysplit warns, naming the file (a
    FAT USB stick shows 0755 whatever is done, so a refusal would lock custodians out)."""
    sealed = _encrypt(cer, b"data")
    ident = cer.ids["alice"]
    ident.chmod(0o644)
    cer.ids["bob"].chmod(0o600)
    r = run(["decrypt", cer.kr, sealed, "-", *cer.quorum("alice", "bob")])
    said = "".join(r.stderr.split())  # the console wraps long lines, even inside a path
    assert r.exit_code == 0 and r.stdout == "data", r.stderr
    warning = f"warning: identity {ident} has no passphrase and is readable by other users"
    assert "".join(warning.split()) in said
    assert "".join(f"(mode 0644); run: chmod 600 {ident}".split()) in said
    assert r.stderr.count("warning: identity") == 1
    ident.chmod(0o600)
    r = run(["decrypt", cer.kr, sealed, "-", *cer.quorum("alice", "bob")])
    assert r.exit_code == 0 and "warning: identity" not in r.stderr


def test_the_ceremony_helpers_identities_draw_no_warning(cer: Ceremony) -> None:
    """(leftovers) ``make_identity`` wrote identities 0644 (the umask's default), so every
    CLI test using them printed the "readable by other users" warning, and a test of the
    output could no longer tell that warning from one it should have caught."""
    for ident in cer.ids.values():
        assert ident.stat().st_mode & 0o777 == 0o600, ident
    sealed = _encrypt(cer, b"data")
    r = run(["decrypt", cer.kr, sealed, "-", *cer.quorum("alice", "bob")])
    assert r.exit_code == 0 and "warning" not in r.stderr, r.stderr


@pytest.mark.parametrize("name", ["/dev/stdin", "/dev/fd/0"])
def test_decrypt_from_stdin_by_another_name_never_reads_a_passphrase_from_it(
    cer: Ceremony, name: str
) -> None:
    """(red team) ``... | keysplit decrypt DIR /dev/stdin OUT``: only ``-`` counted as
    stdin, so carol's passphrase prompt read the stream's first bytes as her passphrase
    ("wrong passphrase" for one nobody typed), and without --share the share prompt read
    the stream too. Any name of fd 0 is stdin now, with the same rules as ``-``."""
    sealed = _encrypt(cer, os.urandom(5000)).read_bytes()
    out = cer.root / "out.bin"
    args = ["decrypt", cer.kr, name, out, "--share", cer.share("carol"), *cer.quorum("alice")]
    for argv, last in [
        (
            args,
            [
                f"error: {cer.share('carol')}: standard input carries the file to decrypt, so "
                "a passphrase cannot be read from it",
                "hint: give --passphrase-file NAME=FILE",
            ],
        ),
        (
            ["decrypt", cer.kr, name, out, "--identity", cer.ids["alice"]],
            ["error: reading the file from stdin needs --share (the prompts use stdin)"],
        ),
    ]:
        p = _without_terminal(argv, sealed)
        assert p.returncode in (1, 2) and b"Traceback" not in p.stderr, p.stderr
        assert p.stderr.decode().splitlines()[-len(last) :] == last
        assert not out.exists()
    args += ["--passphrase-file", f"carol={cer.carol_pw}"]
    p = subprocess.run([KEYSPLIT, *map(str, args)], input=sealed, capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr


def test_a_passphrase_longer_than_the_library_takes_is_an_error_not_a_traceback(
    cer: Ceremony,
) -> None:
    """(red team) A passphrase of more than 64 KiB at the prompt (piped in, no terminal)
    reached the library, whose ValueError escaped as a traceback."""
    sealed = _encrypt(cer, b"data")
    args = ["decrypt", cer.kr, sealed, "-", "--share", cer.share("carol"), *cer.quorum("alice")]
    r = run(args, input="x" * 70_000 + "\n")
    assert r.exit_code == 1
    assert error_lines(r) == ["error: passphrase too long (70000 bytes, at most 65536)"]
    assert "xxxx" not in r.output  # never shown


def _bounded_writes() -> None:
    """(preexec) Files this process writes stop at 8 MiB: a write past it fails (EFBIG)."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, 8 << 20))


def test_stdout_appending_to_the_input_file_is_refused(cer: Ceremony) -> None:
    """(red team) ``keysplit encrypt DIR f - >> f`` appended each sealed chunk to the file
    being read, which so never reached its end: the input grew until the disk was full
    (here: until the 8 MiB write limit). ``decrypt DIR f.ks - >> f.ks`` appended plaintext
    to the sealed file. Refused now as cat refuses it, decrypt before any share."""
    data = os.urandom(3 << 20)
    sealed = _encrypt(cer, data)
    plain = cer.root / "plain.bin"
    for argv, path, code, line in [
        (["encrypt", cer.kr, plain, "-"], plain, 1, f"error: input file is output file: {plain}"),
        (
            ["decrypt", cer.kr, sealed, "-", *cer.quorum("alice", "bob")],
            sealed,
            2,
            f"error: input file is output file: {sealed}",
        ),
    ]:
        before = path.read_bytes()
        with path.open("ab") as out:
            p = subprocess.run(
                [KEYSPLIT, *map(str, argv)],
                stdout=out,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                preexec_fn=_bounded_writes,
                timeout=120,
            )
        assert p.returncode == code and p.stderr.decode().splitlines()[-1] == line, p.stderr
        assert path.read_bytes() == before
        assert b"[1/2]" not in p.stderr


def test_a_share_or_passphrase_from_the_stdin_that_carries_the_file_is_refused(
    cer: Ceremony,
) -> None:
    """(red team) ``... | keysplit decrypt DIR - OUT --share carol.kss --passphrase-file
    carol=/dev/stdin``: the passphrase file read the encrypted stream, and the error was
    "wrong passphrase" (the ciphertext taken as carol's). Refused up front now, as is a
    share read from that stdin (``--share -``)."""
    sealed = _encrypt(cer, os.urandom(5000)).read_bytes()
    out = cer.root / "out.bin"
    alice = ["--identity", cer.ids["alice"]]
    for extra, named in [
        (["--share", cer.share("carol"), "--passphrase-file", "carol=/dev/stdin"], "/dev/stdin"),
        (["--share", cer.share("carol"), "--passphrase-file", "/dev/fd/0"], "/dev/fd/0"),
        (["--share", "-", "--share", cer.share("alice")], "-"),
    ]:
        p = _without_terminal(["decrypt", cer.kr, "-", out, *extra, *alice], sealed)
        message = (
            f"error: {named}: standard input carries the file to decrypt, so it cannot also "
            "carry a share or passphrase"
        )
        _refused(p, 2, [message, "hint: give the share or passphrase in a file"])
        assert not out.exists()


def _on_a_terminal(args: list[object]) -> tuple[subprocess.CompletedProcess[bytes], bytes]:
    """The installed keysplit with stdout a real pseudo-terminal in raw mode (bytes arrive
    as written, no newline translation), stdin empty: its result and what reached the
    terminal."""
    import pty
    import tty

    controller, terminal = pty.openpty()
    tty.setraw(terminal)
    seen = bytearray()

    def drain() -> None:  # ends at EIO once every writer of the terminal side is closed
        while True:
            try:
                chunk = os.read(controller, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        p = subprocess.run(
            [KEYSPLIT, *map(str, args)],
            stdin=subprocess.DEVNULL,
            stdout=terminal,
            stderr=subprocess.PIPE,
            timeout=120,
        )
    finally:
        os.close(terminal)
        reader.join(timeout=30)
        os.close(controller)
    assert not reader.is_alive()
    assert b"Traceback" not in p.stderr, p.stderr
    return p, bytes(seen)


def test_encrypt_refuses_to_print_ciphertext_to_a_terminal(tmp_path: Path) -> None:
    """(leftovers) ``encrypt DIR IN -`` with stdout a terminal wrote binary ciphertext to the
    screen. Like age it is refused: one usage error, a hint, nothing read or written. The
    refusal comes before the keyring is opened, so a bare directory is enough here."""
    src = tmp_path / "plain.txt"
    src.write_text("secret\n")
    p, seen = _on_a_terminal(["encrypt", tmp_path / "vault", src, "-"])
    assert seen == b""
    lines = p.stderr.decode().splitlines()
    assert p.returncode == 2, lines
    assert [ln for ln in lines if ln.startswith("error:")] == [
        "error: refusing to write the encrypted file to the terminal"
    ]
    assert any(ln.startswith("hint:") and "redirect" in ln for ln in lines), lines


def test_encrypt_counts_one_chunk_in_the_singular(cer: Ceremony) -> None:
    """(leftovers) a short file said "(1 chunks, ...)"."""
    src = cer.root / "short.txt"
    src.write_text("short\n")
    r = run(["encrypt", cer.kr, src, cer.root / "short.ks"])
    assert r.exit_code == 0, r.output
    said = " ".join(r.stderr.split())
    assert "(1 chunk)" in said and "chunks" not in said
    big = cer.root / "big.bin"
    big.write_bytes(os.urandom(2 * MiB + 1))
    r = run(["encrypt", cer.kr, big, cer.root / "big.ks"])
    assert r.exit_code == 0, r.output
    assert "(3 chunks)" in " ".join(r.stderr.split())


def test_output_that_links_to_an_open_descriptor_is_refused_before_any_share(
    cer: Ceremony,
) -> None:
    """(review2) ``encrypt ... /dev/stdout --force`` with stdout redirected to a file: the
    link names a regular file, so the rename replaced the link (as root the system's
    /dev/stdout) and the redirected file stayed empty. A usage error now, before any share
    is asked for (a link of the test's own to one of its descriptors stands in)."""
    sealed = _encrypt(cer, b"data")
    with open(cer.root / "redirected", "wb") as held:
        link = cer.root / "stdout-link"
        link.symlink_to(f"/proc/self/fd/{held.fileno()}")
        message = f"error: OUT: a link to an open file descriptor: {link}"
        r = run(["encrypt", cer.kr, cer.root / "plain.bin", link, "--force"])
        assert r.exit_code == 2 and error_lines(r) == [message], r.stderr
        r = run(["decrypt", cer.kr, sealed, link, "--force", *cer.quorum("alice", "bob")])
        assert r.exit_code == 2 and error_lines(r) == [message], r.stderr
        assert "[1/2]" not in r.stderr
    assert link.is_symlink() and (cer.root / "redirected").read_bytes() == b""


# -- decrypted content and the operator's terminal (cli4) ------------------------------------

_HOSTILE = b"report\n\x1b]0;owned\x07\x1b[2J\x1b[1;1Hall clear\n"
"""Plaintext someone else chose: sets the window title, clears the screen, writes over it."""


def _decrypt_to_terminal(
    c: Ceremony, sealed: Path, *extra: str
) -> tuple[subprocess.CompletedProcess[bytes], bytes]:
    return _on_a_terminal(["decrypt", c.kr, sealed, "-", *extra, *c.quorum("alice", "bob")])


@pytest.mark.parametrize(
    "plaintext",
    [_HOSTILE, bytes(range(256)) * 12, "right\u202eto left\n".encode(), b"over\rwritten\n"],
    ids=["escape-sequences", "binary", "bidi-override", "bare-carriage-return"],
)
def test_decrypt_refuses_to_print_what_would_drive_the_terminal(
    cer: Ceremony, plaintext: bytes
) -> None:
    """(cli4) ``decrypt DIR f.ks -`` to a terminal printed the plaintext as it was: binary
    garbage, or escape sequences of whoever made the file acting on the operator's
    terminal. Now, as rage does, plaintext that is not plain text is refused before any of
    it is written: one error line, a hint, exit 1, nothing on the terminal."""
    sealed = _encrypt(cer, plaintext)
    p, seen = _decrypt_to_terminal(cer, sealed)
    lines = p.stderr.decode().splitlines()
    assert p.returncode == 1, lines
    assert [ln for ln in lines if ln.startswith("error:")] == [
        "error: refusing to write the decrypted file to the terminal: it is not plain text "
        "(binary data or control characters)"
    ]
    hints = [ln for ln in lines if ln.startswith("hint:")]
    assert len(hints) == 1 and "redirect" in hints[0] and "--allow-unprintable" in hints[0]
    assert seen == b""
    # the quorum did decrypt: on the record, as any decrypt to stdout that stopped; and
    # nothing left (before: the refused chunk's bytes, counted before the write)
    last = Keyring.open(cer.kr).audit_log().entries()[-1]
    assert last.event == "decrypt-incomplete" and last.data["error"] == "UnprintableOutput"
    assert last.data["bytes"] == 0


def test_a_refusal_after_printed_text_records_only_the_bytes_that_left(cer: Ceremony) -> None:
    """decrypt-incomplete's ``bytes`` counted a chunk before writing it, so a terminal
    refusal (which writes nothing of the chunk it refuses) was recorded as released: one
    chunk of text printed, then a binary chunk refused, said two chunks had left. Now the
    entry counts what stdout took: exactly what reached the terminal."""
    text = b"plain text line\n" * (MiB // 16)
    assert len(text) == MiB  # one whole chunk of text, then a binary one
    p, seen = _decrypt_to_terminal(cer, _encrypt(cer, text + bytes(range(256)) * 64))
    assert p.returncode == 1, p.stderr
    assert seen == text
    last = Keyring.open(cer.kr).audit_log().entries()[-1]
    assert last.event == "decrypt-incomplete" and last.data["error"] == "UnprintableOutput"
    assert last.data["bytes"] == len(seen)  # before: MiB + 16384


def test_decrypt_prints_plain_text_to_the_terminal_as_it_is(cer: Ceremony) -> None:
    text = "héllo wörld 👍\r\n\tline two\n".encode()
    p, seen = _decrypt_to_terminal(cer, _encrypt(cer, text))
    assert p.returncode == 0, p.stderr
    assert seen == text


@pytest.mark.parametrize(
    ("plaintext", "shown"),
    [
        (b"total: 100\npay to: mallory\r", b"total: 100\npay to: mallory"),
        (b"ends in half a character \xc3", b"ends in half a character "),
    ],
    ids=["last-carriage-return", "last-half-character"],
)
def test_decrypt_refuses_what_the_plaintext_ends_with_on_the_terminal(
    cer: Ceremony, plaintext: bytes, shown: bytes
) -> None:
    """(review4) A bare "\\r" that ended the plaintext passed (nothing of the plaintext
    follows it), but the decrypt's own line on stderr does, on the same terminal: written
    from the start of the plaintext's last line, it hid that line ("pay to: mallory"
    here). So did an unfinished UTF-8 sequence at the end (not text). Both are held back
    until what follows shows them to be text; at the end they are refused, never written."""
    p, seen = _decrypt_to_terminal(cer, _encrypt(cer, plaintext))
    lines = p.stderr.decode().splitlines()
    assert p.returncode == 1, lines
    assert [ln for ln in lines if ln.startswith("error:")] == [
        "error: refusing to write the decrypted file to the terminal: it is not plain text "
        "(binary data or control characters)"
    ]
    assert seen == shown  # the held end never reached the terminal
    # recorded as it ended: stopped, the held end not counted (before: a whole 'decrypt'
    # entry, written before the refusal at the output's end)
    last = Keyring.open(cer.kr).audit_log().entries()[-1]
    assert last.event == "decrypt-incomplete" and last.data["error"] == "UnprintableOutput"
    assert last.data["bytes"] == len(shown)


def test_a_refusal_of_a_held_carriage_return_does_not_count_it(cer: Ceremony) -> None:
    """A "\r" that ends one chunk is held back until the next shows whether "\n" follows;
    the next chunk is refused (binary): decrypt-incomplete counted the held "\r" as
    released, though it never reached the terminal."""
    text = b"plain text line\n" * (MiB // 16 - 1) + b"plain text line\r"
    assert len(text) == MiB  # one whole chunk ending in "\r", then a binary one
    p, seen = _decrypt_to_terminal(cer, _encrypt(cer, text + bytes(range(256)) * 64))
    assert p.returncode == 1, p.stderr
    assert seen == text[:-1]
    last = Keyring.open(cer.kr).audit_log().entries()[-1]
    assert last.event == "decrypt-incomplete" and last.data["error"] == "UnprintableOutput"
    assert last.data["bytes"] == len(seen)  # before: len(seen) + 1


def test_a_chunk_that_fails_after_half_a_character_does_not_count_it(cer: Ceremony) -> None:
    """The first chunk ends in the first byte of "é" (held back until the next shows the
    character whole); the second chunk fails to authenticate: the held byte never reached
    the terminal, and decrypt-incomplete counted it."""
    text = b"plain text line\n" * (MiB // 16 - 1) + b"plain text line\xc3"
    assert len(text) == MiB
    sealed = _encrypt(cer, text + b"\xa9 and more text\n")
    blob = bytearray(sealed.read_bytes())
    with sealed.open("rb") as fh:
        body = read_header(fh).size
    blob[body + MiB + 16 + 3] ^= 1  # inside the second chunk
    sealed.write_bytes(bytes(blob))
    p, seen = _decrypt_to_terminal(cer, sealed)
    assert p.returncode == 1, p.stderr
    assert seen == text[:-1]
    last = Keyring.open(cer.kr).audit_log().entries()[-1]
    assert last.event == "decrypt-incomplete" and last.data["error"] == "IntegrityError"
    assert last.data["bytes"] == len(seen)  # before: len(seen) + 1


def test_a_decrypt_whose_stdout_fails_at_its_last_flush_is_recorded_incomplete(
    cer: Ceremony,
) -> None:
    """A small plaintext to stdout sits in stdout's buffer until the last flush; stdout a
    full disk (/dev/full) failed that flush after the ``decrypt`` entry was written: the
    command failed, the log said the file was wholly decrypted. The flush is now part of
    the decrypt: the entry is ``decrypt-incomplete`` (error OSError)."""
    sealed = _encrypt(cer, b"a few bytes\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout buffered
    with open("/dev/full", "wb") as full:
        p = subprocess.run(
            [KEYSPLIT, "decrypt", cer.kr, sealed, "-", *cer.quorum("alice", "bob")],
            stdin=subprocess.DEVNULL,
            stdout=full,
            stderr=subprocess.PIPE,
            timeout=120,
            env=env,
        )
    # one error line and exit 1: stdout's unwritable buffer is dropped (the interpreter's
    # own last flush failed again at exit: "Exception ignored ...", exit 120)
    assert p.returncode == 1, p.stderr
    lines = p.stderr.decode().splitlines()
    assert lines[-1] == "error: [Errno 28] No space left on device", lines
    assert not [ln for ln in lines[:-1] if "rror" in ln or "xception" in ln], lines
    events = [e.event for e in Keyring.open(cer.kr).audit_log().entries()]
    assert events[-2:] == ["intent", "decrypt-incomplete"], events
    last = Keyring.open(cer.kr).audit_log().entries()[-1]
    assert last.data["error"] == "OSError"


def test_allow_unprintable_writes_any_plaintext_to_the_terminal(cer: Ceremony) -> None:
    p, seen = _decrypt_to_terminal(cer, _encrypt(cer, _HOSTILE), "--allow-unprintable")
    assert p.returncode == 0, p.stderr
    assert seen == _HOSTILE


def test_decrypt_to_a_pipe_writes_any_plaintext_unchanged(cer: Ceremony) -> None:
    data = _HOSTILE + os.urandom(3000)
    sealed = _encrypt(cer, data)
    args = ["decrypt", cer.kr, sealed, "-", *cer.quorum("alice", "bob")]
    p = subprocess.run(
        [KEYSPLIT, *map(str, args)], stdin=subprocess.DEVNULL, capture_output=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout == data
    assert Keyring.open(cer.kr).audit_log().entries()[-1].event == "decrypt"


_PIECES = [b"a", b" ", b"\t", b"\n", b"\r", b"\r\n", "é".encode(), "👍".encode()]
_PIECES += [b"\x1b", b"\x07", b"\x7f", "\x9b".encode(), "\u202e".encode(), b"\xff", b"\xc3"]


def _through_guard(data: bytes, cuts: list[int]) -> tuple[bool, bytes]:
    """``data`` written to :func:`printable_stdout`'s writer in pieces cut at ``cuts``:
    whether every write was taken, and what reached the real stream."""
    import io

    from keysplit_cli._output import UnprintableOutput, _PrintableWriter

    out = io.BytesIO()
    guard = _PrintableWriter(out)
    bounds = [0, *sorted(cuts), len(data)]
    try:
        for a, b in itertools.pairwise(bounds):
            assert guard.write(memoryview(data)[a:b]) == b - a
        guard.finish()  # the end of the output
    except UnprintableOutput:
        return False, out.getvalue()
    return True, out.getvalue()


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_the_terminal_guard_judges_the_bytes_not_how_they_are_cut(data: st.DataObject) -> None:
    """Plaintext reaches stdout in chunks that may cut a UTF-8 sequence or a CRLF: the
    verdict is the same as for one write, and text that passes arrives unchanged."""
    whole = b"".join(data.draw(st.lists(st.sampled_from(_PIECES), max_size=12)))
    cuts = data.draw(st.lists(st.integers(0, len(whole)), max_size=5))
    ok, out = _through_guard(whole, [])
    assert _through_guard(whole, cuts)[0] == ok
    if ok:
        assert _through_guard(whole, cuts)[1] == out == whole


@pytest.mark.parametrize(
    ("data", "cuts", "ok"),
    [
        (b"line\r\nline\r\n", [5], True),  # CRLF cut between two writes
        (b"line\r", [], False),  # a last "\r": the CLI's own line would overwrite "line"
        (b"line\r", [5], False),
        (b"line\r\n", [5], True),
        (b"half \xc3", [], False),  # an unfinished UTF-8 sequence at the end
        (b"line\rover", [5], False),  # a bare "\r" cut from what follows it
        (b"text\x1b", [], False),  # a control character last in a write
        ("\x9b2J".encode(), [1], False),  # the 8-bit CSI, its UTF-8 cut in two
        ("\u00a0non-breaking, 👍, \u200d".encode(), [], True),  # printable enough
    ],
)
def test_the_terminal_guard_on_chosen_cuts(data: bytes, cuts: list[int], ok: bool) -> None:
    assert _through_guard(data, cuts)[0] is ok


def test_a_context_that_looks_like_markup_is_shown_as_it_is(cer: Ceremony) -> None:
    """(cli4) The messages on stderr went through rich markup: a file whose context (chosen
    by whoever sealed it) held ``[/]`` made ``decrypt`` fail with a MarkupError traceback
    after the plaintext was written and the decrypt recorded (``encrypt --context`` too,
    after the file was written), and ``[blink]`` or ``[black on black]`` restyled the
    operator's line. Messages are plain text now: the context is shown as it is."""
    ctx = ["--context", "a=[/]", "--context", "b=[black on black]hidden[/] :warning:"]
    sealed = _encrypt(cer, b"data\n", *ctx)
    r = run(["decrypt", cer.kr, sealed, cer.root / "out", *ctx, *cer.quorum("alice", "bob")])
    assert r.exit_code == 0, r.output
    said = " ".join(r.stderr.split())
    assert '"a": "[/]"' in said and '"b": "[black on black]hidden[/] :warning:"' in said
    assert (cer.root / "out").read_bytes() == b"data\n"


def test_scan_dataset_escapes_the_datasets_own_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(cli4) scan-dataset printed each bad row's label and subject, text of the dataset's,
    as they were: a subject holding escape sequences acted on the operator's terminal (and
    a tab or newline broke the tab-separated line). They are escaped now, as audit show
    does; --json keeps them as they are. (The job stands in: only the printing is tested.)"""
    from keysplit_cli.commands import dataset

    from keysplit.jobs.records import BadRecord, ScanReport

    hostile = "u1\x1b]0;owned\x07\tx\n"
    report = ScanReport(checked=2, bad=[BadRecord(0, "r\x1b[2J", hostile, "no data key")])
    monkeypatch.setattr(dataset, "_dataset_job", lambda *a, **k: report)
    args = ["scan-dataset", tmp_path, "--column", "c", "--subject-column", "s"]
    r = run(args)
    assert r.exit_code == 1 and error_lines(r) == ["error: 1 of 2 records do not decrypt"]
    assert r.stdout == "0\tr\\x1b[2J\tu1\\x1b]0;owned\\x07\\tx\\n\tno data key\n"
    r = run([*args, "--json"])
    assert json.loads(r.stdout)["bad"][0]["subject"] == hostile


def test_messages_show_control_characters_escaped(cer: Ceremony) -> None:
    """(cli4) rich passes escape sequences through: a name in a message (here OUT, in
    "decrypted N bytes ... to OUT"; a custodian's name read from a share file likewise)
    reached the terminal raw. Messages show them escaped now, as audit show does."""
    sealed = _encrypt(cer, b"data\n")
    out = cer.root / "o\x1b]0;owned\x07\x1b[2Jx"
    r = run(["decrypt", cer.kr, sealed, out, *cer.quorum("alice", "bob")])
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr
    assert "o\\x1b]0;owned\\x07\\x1b[2Jx" in "".join(r.stderr.split())
    assert out.read_bytes() == b"data\n"


def test_error_lines_show_control_characters_escaped(cer: Ceremony) -> None:
    """(review4) The test above escaped info() messages; the error and hint lines (fail)
    still printed the names they hold as they were: an OUT that exists, named with an
    escape sequence (a window title here: click strips CSI sequences from a stream that
    is not a terminal, but not these, and nothing on a terminal), reached the operator's
    terminal raw in "error: refusing to overwrite ...". Shown escaped now."""
    src = cer.root / "in.txt"
    src.write_text("data\n")
    out = cer.root / "o\x1b]0;owned\x07x"
    out.write_bytes(b"kept")
    r = run(["encrypt", cer.kr, src, out])
    assert r.exit_code == 1, r.output
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr, r.stderr
    (line,) = error_lines(r)
    assert "o\\x1b]0;owned\\x07x" in line
    assert out.read_bytes() == b"kept"


def test_audit_verify_without_a_quorum_says_the_anchor_is_not_authenticated(
    cer: Ceremony,
) -> None:
    """``audit verify`` without a quorum reads audit.anchor (and the keyring's audit_anchor
    flag) unauthenticated: a log cut back together with a forged anchor passed with
    'audit log intact' and nothing more, as if the anchor had been checked. It still
    passes (the MAC needs the keyring's key), but says plainly that the anchor is not
    authenticated and what catches a joint rollback (--mac; --anchor HEAD); --mac refuses
    the forged anchor."""
    _grow_log(cer)
    log, anchor = cer.kr / "audit.log", cer.kr / "audit.anchor"
    lines = log.read_bytes().splitlines(keepends=True)[:-1]
    log.write_bytes(b"".join(lines))
    forged = {"entries": len(lines), "head": _sha(lines[-1].rstrip(b"\n")), "mac": "0" * 64}
    anchor.write_bytes(
        json.dumps({**forged, "v": 1}, sort_keys=True, separators=(",", ":")).encode()
    )
    r = run(["audit", "verify", cer.kr, "--json"])
    assert r.exit_code == 0, r.output
    said = " ".join(r.stderr.split())
    assert "not authenticated without a quorum: audit.anchor" in said
    assert "--mac catches that" in said and "only --anchor HEAD" in said
    assert json.loads(r.stdout)["anchor_authenticated"] is False
    r = run(["audit", "verify", cer.kr, "--mac", *cer.quorum("alice", "bob")])
    assert r.exit_code == 1 and "audit anchor" in error_lines(r)[0] and "MAC invalid" in r.stderr


@pytest.mark.parametrize(
    "command", ["encrypt", "encrypt-dataset", "decrypt-dataset", "scan-dataset"]
)
def test_a_missing_input_exits_1_from_every_command(cer: Ceremony, command: str) -> None:
    """README, "Exit codes": 1 expected failure, 2 usage error; each command's help files an
    unreadable input under 1. encrypt exited 1, the dataset commands 2."""
    missing = cer.root / "missing"
    if command == "encrypt":
        args = ["encrypt", cer.kr, missing, cer.root / "out"]
    else:
        dst = [] if command == "scan-dataset" else [cer.root / "out"]
        args = [command, missing, *dst, "--column", "email", "--subject-column", "user"]
        args += ["--keyring", cer.kr, *cer.quorum("alice", "bob")]
    r = run(args)
    assert r.exit_code == 1, r.output
    assert len(error_lines(r)) == 1 and "no such file" in error_lines(r)[0], r.stderr
    assert "[1/2]" not in r.stderr  # still refused before any share is opened
