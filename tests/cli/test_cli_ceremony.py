"""CLI key ceremonies: init, unseal, rekey, rotate/rewrap/retire, shred/hold, status.

Each test checks exit codes and messages, then the resulting state through the library.
"""

from __future__ import annotations

import json
import os
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ceremony_helpers import (  # noqa: F401 (fixtures)
    Ceremony,
    ceremony_fixture,
    error_lines,
    fast_kdf_fixture,
    make_ceremony,
    make_identity,
    run,
)
from keysplit_cli import _common
from paths import KEYSPLIT, run_keysplit

from keysplit import Identity, Keyring, Recipient, ShreddedError, load_share, split
from keysplit.ceremony import sinks


def _open(c: Ceremony, name: str, gen: int = 1):
    data = c.share(name, gen).read_bytes()
    if name in c.ids:
        return load_share(data, identity=Identity.from_bytes(c.ids[name].read_bytes()))
    return load_share(data, passphrase=c.carol_pw.read_text().strip().encode())


# -- init ----------------------------------------------------------------------------------


def test_init_writes_sealed_shares_and_an_audited_init(cer: Ceremony) -> None:
    files = sorted(p.name for p in cer.shares.iterdir())
    assert files == ["alice.g1.kss", "bob.g1.kss", "carol.g1.kss"]
    for p in cer.shares.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    kr = Keyring.open(cer.kr)
    assert kr.meta.threshold == 2
    assert [c.name for c in kr.meta.custodians] == ["alice", "bob", "carol"]
    # The shares really are the keyring's: any two unseal it, and the init entry is MACed.
    with kr.unseal([_open(cer, "alice"), _open(cer, "carol")]) as ukr:
        report = ukr.audit_log().verify()
    assert report.entries == 1 and report.mac_verified
    (entry,) = kr.audit_log().entries()
    assert entry.event == "init"
    assert [c["custodian"] for c in entry.data["custodians"]] == ["alice", "bob", "carol"]
    assert entry.data["custodians"][2]["protection"] == "passphrase"


def test_init_output_has_summary_and_no_secret(tmp_path: Path) -> None:
    pub, _ = make_identity(tmp_path / "keys", "alice")
    r = run(
        [
            "init",
            tmp_path / "kr",
            "-k",
            "2",
            "-c",
            f"alice={pub}",
            "-c",
            "bob",
            "-c",
            "carol",
            "--plain-shares",
            "--json",
        ]
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["threshold"] == 2 and [s["custodian"] for s in doc["shares"]] == [
        "alice",
        "bob",
        "carol",
    ]
    assert "warning" in r.stderr and "--plain-shares" in r.stderr
    assert "alice" in r.stderr and "share fingerprint" in r.stderr
    bob_share = load_share((tmp_path / "kr-shares" / "bob.g1.kss").read_bytes())
    assert str(bob_share) not in r.output  # share text never printed
    assert doc["shares"][1]["share"] == bob_share.fingerprint


def test_init_passphrase_prompt_with_confirmation_then_interactive_unseal(tmp_path: Path) -> None:
    kr = tmp_path / "kr"
    r = run(
        ["init", kr, "-k", "2", "-c", "alice", "-c", "bob"],
        input="alice-pass\nalice-pass\nbob-pass\nbob-pass\n",
    )
    assert r.exit_code == 0, r.output
    assert "alice-pass" not in r.output
    shares = tmp_path / "kr-shares"
    # Interactive unseal: a missing file and a wrong passphrase are rejected, then retried.
    r = run(
        ["unseal", kr],
        input=f"{tmp_path / 'nope'}\n{shares / 'alice.g1.kss'}\nWRONG\n"
        f"{shares / 'alice.g1.kss'}\nalice-pass\n{shares / 'bob.g1.kss'}\nbob-pass\n",
    )
    assert r.exit_code == 0, r.output
    assert "rejected: cannot read" in r.stderr
    assert "rejected:" in r.stderr and "wrong passphrase" in r.stderr
    assert "[1/2] share 1 of alice accepted" in r.stderr
    assert "[2/2] share 2 of bob accepted" in r.stderr
    assert r.stdout.split()[-1] == Keyring.open(kr).keyring_id  # CliRunner echoes input


def test_init_mismatched_confirmation_is_reprompted(tmp_path: Path) -> None:
    r = run(
        ["init", tmp_path / "kr", "-k", "2", "-c", "a", "-c", "b"],
        input="one\ntwo\none\none\nbpw\nbpw\n",
    )
    assert r.exit_code == 0, r.output
    assert "do not match" in r.stderr.lower() or "don't match" in r.stderr.lower()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["-k", "4", "-c", "a", "-c", "b", "-c", "c"], 2, "--threshold must be between 2 and 3"),
        (["-k", "1", "-c", "a", "-c", "b"], 2, "--threshold"),
        (["-k", "2", "-c", "a b", "-c", "c"], 2, "NAME or NAME=PUBFILE"),
        (["-k", "2", "-c", "a", "-c", "a"], 2, "only once"),
        (["-k", "2"], 2, "give the custodians"),
        (["-k", "2", "-c", "a=missing.pub", "-c", "b"], 1, "no such file"),
    ],
)
def test_init_usage_errors(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    r = run(["init", tmp_path / "kr", "--plain-shares", *args])
    assert r.exit_code == code, r.output
    assert message in r.stderr
    assert not (tmp_path / "kr" / "keyring.ksk").exists()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs procfs")
def test_init_under_a_directory_that_takes_no_new_entry_names_it(tmp_path: Path) -> None:
    # os.access() says root may write in /proc; the ceremony then failed to make the share
    # directory: "error: no such file: /proc/x-shares". Now the parent is named, before any
    # passphrase prompt (as root or not).
    pub, _ = make_identity(tmp_path / "keys", "a")
    pub_b, _ = make_identity(tmp_path / "keys", "b")
    r = run(["init", "/proc/keysplit-x", "-k", "2", "-c", f"a={pub}", "-c", f"b={pub_b}"])
    assert r.exit_code == 2, r.output
    assert error_lines(r)[0].startswith("error: DIR: cannot write in /proc ("), r.stderr
    assert "no such file" not in r.stderr


@pytest.mark.parametrize("cleanup", ["close", "rmdir"])
def test_a_probe_killed_before_its_cleanup_leaves_nothing(tmp_path: Path, cleanup: str) -> None:
    """The output-directory probe made a directory .keysplit-probe-* and removed it: a
    process killed in between left it in the user's directory. Now it makes a nameless
    file (O_TMPFILE): SIGKILL at the probe's clean-up (whichever call that is) leaves the
    directory as it was."""
    import subprocess
    import sys

    target = tmp_path / "out"
    target.mkdir()
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from keysplit_cli import _common\n"
        "def die(*a): os.kill(os.getpid(), signal.SIGKILL)\n"
        f"os.{cleanup} = die\n"
        "_common.check_output_dir(Path(sys.argv[1]) / 'kr', 'DIR')\n"
        "sys.exit(3)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(target)], timeout=60, check=False)
    assert r.returncode in (-9, 3), r
    assert list(target.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a 0500 directory")
def test_init_under_an_unwritable_parent_names_it(tmp_path: Path) -> None:
    pub, _ = make_identity(tmp_path / "keys", "a")
    pub_b, _ = make_identity(tmp_path / "keys", "b")
    parent = tmp_path / "ro"
    parent.mkdir(mode=0o500)
    try:
        r = run(["init", parent / "kr", "-k", "2", "-c", f"a={pub}", "-c", f"b={pub_b}"])
    finally:
        parent.chmod(0o700)
    assert r.exit_code == 2, r.output
    assert error_lines(r)[0] == f"error: DIR: cannot write in {parent} (permission denied)"
    assert list(parent.iterdir()) == []


def test_init_public_key_of_someone_else_and_existing_keyring(cer: Ceremony) -> None:
    r = run(
        [
            "init",
            cer.root / "other",
            "-k",
            "2",
            "-c",
            f"carol={cer.pubs['alice']}",
            "-c",
            "x",
            "--plain-shares",
        ]
    )
    assert r.exit_code == 1
    assert "public key of 'alice', not 'carol'" in r.stderr
    r = run(
        [
            "init",
            cer.kr,
            "-k",
            "2",
            "-c",
            "x",
            "-c",
            "y",
            "--plain-shares",
            "--shares-dir",
            cer.root / "s2",
        ]
    )
    assert r.exit_code == 1
    assert error_lines(r) == [f"error: a keyring already exists at {cer.kr}"]


def test_init_over_an_existing_keyring_is_refused_before_any_passphrase_prompt(
    cer: Ceremony,
) -> None:
    """Custodians without a key pair type their passphrase twice at init: over an existing
    keyring every one of them did so before 'a keyring already exists' (found only when the
    keyring was about to be written). Refused first now, nothing asked."""
    r = run(["init", cer.kr, "-k", "2", "-c", "x", "-c", "y", "--shares-dir", cer.root / "s3"])
    assert r.exit_code == 1
    assert error_lines(r) == [f"error: a keyring already exists at {cer.kr}"]
    assert "Passphrase" not in r.output


def test_one_public_key_filed_under_two_custodians_is_refused_before_any_prompt(
    cer: Ceremony,
) -> None:
    """alice's key in a file naming bob (anyone can write one): alice held two shares of the
    2-of-3 and unsealed it alone. Refused before any passphrase is asked for."""
    as_bob = Recipient("bob", "x25519", Recipient.from_file(cer.pubs["alice"]).public_bytes)
    bob_pub = cer.root / "bob-really.pub"
    bob_pub.write_text(as_bob.to_text())
    alice, bob = f"alice={cer.pubs['alice']}", f"bob={bob_pub}"
    r = run(["init", cer.root / "kr2", "-k", "2", "-c", alice, "-c", bob, "-c", "carol"])
    assert r.exit_code == 1 and "Passphrase" not in r.stderr
    assert error_lines(r) == [
        "error: custodians 'alice' and 'bob' have the same public key "
        f"({as_bob.fingerprint}): one person would hold both shares"
    ]
    assert not (cer.root / "kr2").exists() and not (cer.root / "kr2-shares").exists()
    r = run(["rekey", cer.kr, "-c", alice, "-c", bob, "-c", "carol", *cer.quorum("alice", "bob")])
    assert r.exit_code == 1 and "have the same public key" in r.stderr
    assert "Passphrase" not in r.stderr and "[1/2]" not in r.stderr
    assert Keyring.open(cer.kr).meta.generation == 1


def test_init_refuses_to_overwrite_share_files(cer: Ceremony) -> None:
    r = run(
        [
            "init",
            cer.root / "second",
            "-k",
            "2",
            "-c",
            "alice",
            "-c",
            "bob",
            "--passphrase-file",
            f"{cer.carol_pw}",
            "--shares-dir",
            cer.shares,
        ]
    )
    assert r.exit_code == 1
    assert "refusing to overwrite existing share file" in r.stderr
    assert not (cer.root / "second").exists()  # checked before anything is created


def test_init_over_an_earlier_keyrings_audit_log_creates_nothing(cer: Ceremony) -> None:
    """A directory still holding the log of a keyring removed by hand: init used to create
    the keyring and its shares, then fail (exit 1) on the old log's MACs."""
    second = cer.root / "second"
    second.mkdir()
    (second / "audit.log").write_bytes((cer.kr / "audit.log").read_bytes())
    r = run(["init", second, "-k", "2", "-c", "x", "-c", "y", "--plain-shares"])
    assert r.exit_code == 1
    (line,) = error_lines(r)
    assert "holds the audit log of an earlier keyring" in line
    assert not (second / "keyring.ksk").exists()
    assert not (cer.root / "second-shares").exists() or not any(
        (cer.root / "second-shares").iterdir()
    )


def test_init_with_an_unreadable_known_keyrings_file_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """init pins the new keyring last: a broken known-keyrings file used to fail it (exit 1)
    after the keyring, its shares and its 'init' entry were all made."""
    known = tmp_path / "known"
    known.write_text("not a known-keyrings line\n")
    monkeypatch.setenv("KEYSPLIT_KNOWN_KEYRINGS", str(known))
    r = run(["init", tmp_path / "kr", "-k", "2", "-c", "x", "-c", "y", "--plain-shares"])
    assert r.exit_code == 1
    assert error_lines(r) == [f"error: {known} line 1: not a keyring fingerprint"]
    assert not (tmp_path / "kr" / "keyring.ksk").exists()
    assert not list((tmp_path / "kr-shares").glob("*"))


# -- unseal --------------------------------------------------------------------------------


def test_unseal_non_interactive_records_contributors(cer: Ceremony) -> None:
    r = run(["unseal", cer.kr, *cer.quorum("bob", "carol"), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    kr = Keyring.open(cer.kr)
    assert doc["keyring_id"] == kr.keyring_id
    assert [c["custodian"] for c in doc["custodians"]] == ["bob", "carol"]
    last = kr.audit_log().entries()[-1]
    assert last.event == "unseal-check"
    assert last.data["custodians"] == doc["custodians"]
    assert last.data["custodians"][0]["share"] == _open(cer, "bob").fingerprint
    log = (cer.kr / "audit.log").read_text()
    for n in ("alice", "bob", "carol"):
        assert str(_open(cer, n)) not in log  # share text never logged
    assert doc["audit_head"] == kr.audit_log().head


def test_unseal_too_few_shares(cer: Ceremony) -> None:
    r = run(["unseal", cer.kr, *cer.quorum("alice")])
    assert r.exit_code == 1
    assert error_lines(r) == ["error: need 2 shares, got 1"]
    assert len(Keyring.open(cer.kr).audit_log().entries()) == 1  # nothing appended


def test_unseal_wrong_passphrase(cer: Ceremony, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pw"
    bad.write_text("not it\n")
    args = ["--share", cer.share("carol"), "--passphrase-file", f"carol={bad}"]
    r = run(["unseal", cer.kr, *cer.quorum("alice"), *args])
    assert r.exit_code == 1
    (line,) = error_lines(r)
    assert str(cer.share("carol")) in line and "wrong passphrase" in line


def test_unseal_wrong_identity(cer: Ceremony) -> None:
    r = run(
        [
            "unseal",
            cer.kr,
            "--share",
            cer.share("alice"),
            "--identity",
            cer.ids["bob"],
            *cer.quorum("carol"),
        ]
    )
    assert r.exit_code == 1
    (line,) = error_lines(r)
    assert "alice" in line and "no --identity matches" in line
    assert "hint: add --identity with the identity file of 'alice'" in r.stderr


def test_unseal_corrupted_share_is_named(cer: Ceremony) -> None:
    data = bytearray(cer.share("bob").read_bytes())
    data[len(data) // 2] ^= 0x40
    cer.share("bob").write_bytes(bytes(data))
    r = run(["unseal", cer.kr, *cer.quorum("alice", "bob")])
    assert r.exit_code == 1
    (line,) = error_lines(r)
    assert line.startswith(f"error: {cer.share('bob')}:")


def test_unseal_duplicate_and_foreign_shares(cer: Ceremony, tmp_path: Path) -> None:
    r = run(["unseal", cer.kr, *cer.quorum("alice", "alice")])
    assert r.exit_code == 1
    assert "already added" in r.stderr
    other = make_ceremony(tmp_path / "other")
    r = run(["unseal", cer.kr, *cer.quorum("alice"), *other.quorum("bob")])
    assert r.exit_code == 1
    assert "does not belong to this keyring" in r.stderr


def test_a_foreign_share_is_named_by_the_custodian_its_file_carries(
    cer: Ceremony, tmp_path: Path
) -> None:
    # A duplicate share named its custodian ("share 1 (alice) was already added"), a share
    # of another keyring only its index and set: the sealed file names its custodian.
    other = make_ceremony(tmp_path / "other")
    for name, index in (("bob", 2), ("carol", 3)):  # an identity, a passphrase
        r = run(["unseal", cer.kr, *cer.quorum("alice"), *other.quorum(name)])
        assert r.exit_code == 1
        (line,) = error_lines(r)
        assert f"share {index} ({name}, set " in line and "does not belong" in line, line


def _as_identity(args: list[str | Path]) -> list[str | Path]:
    return ["--identity" if a == "-i" else a for a in args]


def test_share_verify_and_combine_name_the_custodian_of_a_foreign_share(
    cer: Ceremony, tmp_path: Path
) -> None:
    """unseal named a share of another keyring by its custodian ("share 2 (bob, set ...)"),
    share verify and combine by index and set alone, though the file names its custodian
    (a sealed share's header, a plain share file's comment). Now they name it too."""
    other = make_ceremony(tmp_path / "other")
    pair = [cer.share("alice"), other.share("bob")]
    r = run(["share", "verify", *pair])  # the sealed headers alone
    assert r.exit_code == 1
    (line,) = error_lines(r)
    assert f"{pair[1]} (share 2, custodian bob) and {pair[0]} (share 1, custodian alice)" in line
    ids = ["-i", cer.ids["alice"], "-i", other.ids["bob"]]
    convert = ["share", "convert", "--from", "keysplit", "--to", "pycryptodome"]
    for command in (["share", "verify"], ["combine"], convert):  # opened
        r = run([*command, *pair, *(ids if command != convert else _as_identity(ids))])
        assert r.exit_code == 1
        (line,) = error_lines(r)
        assert "share 2 (bob, set " in line and "(share 1, alice)" in line, line
    plain = tmp_path / "yan.kss"  # a plain share file: its comment names the custodian
    plain.write_text(sinks.share_file_text(split(b"s" * 16, 2, 3)[2], "yan"))
    for args in (["combine", cer.share("alice"), plain, *ids], ["unseal", cer.kr,
                 *cer.quorum("alice"), "--share", plain]):  # fmt: skip
        r = run(args)
        assert r.exit_code == 1
        (line,) = error_lines(r)
        assert "share 3 (yan, set " in line, line


def test_unseal_interactive_asks_for_identity(cer: Ceremony) -> None:
    r = run(
        ["unseal", cer.kr],
        input=f"{cer.share('alice')}\n{cer.ids['alice']}\n{cer.share('alice')}\n"
        f"{cer.share('bob')}\n{cer.ids['bob']}\n",
    )
    assert r.exit_code == 0, r.output
    assert "Identity file of custodian 'alice'" in r.stderr
    assert "rejected:" in r.stderr and "already added" in r.stderr


def test_unseal_interactive_answer_with_a_nul_byte_is_rejected(cer: Ceremony) -> None:
    # A NUL cannot be in a path: open() raised ValueError, a traceback at the share prompt
    # and at the identity prompt alike. Now each is a rejected answer (the share prompt's
    # is hidden, and never repeated).
    r = run(
        ["unseal", cer.kr],
        input=f"x\0Tr0ub4dor\n{cer.share('alice')}\nx\0shown\n",
    )
    assert r.exit_code == 1
    assert "rejected: cannot read that share file (what was typed is not shown)" in r.stderr
    assert "rejected: cannot read that identity file (what was typed is not shown)" in r.stderr
    assert error_lines(r) == ["error: need 2 shares, got 0"] and "Tr0ub4dor" not in r.output


def test_unseal_interactive_give_up(cer: Ceremony) -> None:
    r = run(["unseal", cer.kr], input=f"{cer.share('alice')}\n{cer.ids['alice']}\n\n")
    assert r.exit_code == 1
    assert error_lines(r)[-1] == "error: need 2 shares, got 1"


def test_a_sealed_share_that_cannot_count_is_refused_before_its_passphrase(
    cer: Ceremony, tmp_path: Path
) -> None:
    # A tired custodian giving the same sealed share twice, or one of another keyring, typed
    # its passphrase (Argon2id: seconds) or named its identity file before being told. The
    # sealed header's set id and index are public: the quorum refuses from them at once.
    carol = cer.share("carol")
    other = make_ceremony(tmp_path / "other")
    r = run(
        ["unseal", cer.kr],
        input=f"{carol}\n{cer.carol_pw.read_text()}{carol}\n{other.share('alice')}\n\n",
    )
    assert r.exit_code == 1, r.output
    assert r.stderr.count("Passphrase for custodian 'carol'") == 1
    assert f"rejected: {carol}: share 3 (carol) was already added" in r.stderr
    assert "does not belong to this keyring" in r.stderr
    assert "Identity file of custodian" not in r.stderr
    assert error_lines(r) == ["error: need 2 shares, got 1"]


def test_a_key_file_given_where_another_belongs_is_named_and_never_called_a_share(
    cer: Ceremony, tmp_path: Path
) -> None:
    # An operator handed a custodian's identity file (their private key) for init's -c
    # was told "not a keysplit public key (bad magic)": not what the file is, nor that it
    # goes back. A .pub given as --share drew a warning that the "share file" had "no
    # sealing (the share in clear)" before the error saying it is no share.
    os.chmod(cer.pubs["alice"], 0o644)
    r = run(["init", tmp_path / "v2", "-k", "2", "-c", f"a={cer.ids['alice']}", "-c", "b"])
    assert r.exit_code == 1
    assert error_lines(r) == [
        f"error: {cer.ids['alice']}: not a keysplit public key (bad magic): an identity "
        "file (a custodian's private key)"
    ]
    assert "hint: give the custodian's NAME.pub" in r.stderr and "stays with its" in r.stderr
    r = run(["unseal", cer.kr, "--share", cer.pubs["alice"], *cer.quorum("bob")])
    assert r.exit_code == 1
    assert "not a keysplit share: a custodian's public key" in r.stderr
    assert "warning" not in r.stderr and "no sealing" not in r.stderr


def test_unseal_interactive_typo_shows_the_hint_of_what_to_check(cer: Ceremony) -> None:
    # The non-interactive error printed its hint ("check 0/o, 1/l/i, 8/b"); the prompt's
    # "rejected:" line dropped it, though it is there for exactly this custodian.
    text = str(split(os.urandom(16), threshold=2, count=3)[0])
    typo = text[:8] + "o" + text[9:]
    r = run(["unseal", cer.kr], input=f"{typo}\n\n")
    assert r.exit_code == 1
    assert "rejected: the typed share: share has an invalid character 'o'" in r.stderr
    assert "hint: shares use 0 2-9 and a-z without b, i, o; check 0/o, 1/l/i, 8/b" in r.stderr


_SIGINT_DEFAULT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


@pytest.mark.parametrize(
    ("with_passphrase_file", "prompt", "before"),
    [
        (True, b"Share [1/2]", "need 2 shares, got 1"),
        (False, b"Passphrase for custodian 'carol'", "no input"),
    ],
)
def test_ctrl_c_at_a_prompt_of_a_real_unseal_is_interrupted(
    cer: Ceremony, with_passphrase_file: bool, prompt: bytes, before: str
) -> None:
    # Click turns Ctrl-C at a prompt into Abort, as it does the end of input: at the share
    # prompt it was taken for an empty answer ("error: need 2 shares, got 1", as if the
    # custodian chose to stop), at a passphrase prompt for no input ("no input", and a hint
    # to give the value with its option). A real process, a real SIGINT: exit 130.
    pw = ["--passphrase-file", f"carol={cer.carol_pw}"] if with_passphrase_file else []
    proc = subprocess.Popen(
        # SIGINT's default action restored before the exec: a shell that runs this suite in
        # the background (CI under nohup ... &) starts it with SIGINT ignored, which Python
        # keeps, and the signal would never reach Click
        [sys.executable, "-c", _SIGINT_DEFAULT, str(KEYSPLIT), "unseal", str(cer.kr), *pw],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # no controlling terminal: the prompts read the pipe
    )
    try:
        assert proc.stdin is not None and proc.stderr is not None
        proc.stdin.write(f"{cer.share('carol')}\n".encode())
        proc.stdin.flush()
        seen, deadline = b"", time.monotonic() + 60
        while prompt not in seen:
            left = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([proc.stderr], [], [], left)
            chunk = os.read(proc.stderr.fileno(), 4096) if ready else b""
            assert chunk, f"no prompt {prompt!r}: {seen!r}"
            seen += chunk
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    err = (seen + rest).decode()
    assert proc.returncode == 130, err
    assert "error: interrupted" in err and before not in err and "Traceback" not in err


# -- rekey ---------------------------------------------------------------------------------


def test_rekey_drops_a_custodian_and_kills_old_shares(cer: Ceremony) -> None:
    old_id = Keyring.open(cer.kr).meta.set_id
    r = run(
        [
            "rekey",
            cer.kr,
            "-c",
            f"alice={cer.pubs['alice']}",
            "-c",
            f"bob={cer.pubs['bob']}",
            "-k",
            "2",
            *cer.quorum("alice", "carol"),
            "--json",
        ]
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["generation"] == 2 and [s["custodian"] for s in doc["shares"]] == ["alice", "bob"]
    kr = Keyring.open(cer.kr)
    assert kr.meta.set_id != old_id and kr.pending is None
    # old shares: refused; new ones (generation 2 files) unseal
    r = run(["unseal", cer.kr, *cer.quorum("alice", "bob")])
    assert r.exit_code == 1 and "does not belong to this keyring" in r.stderr
    r = run(["unseal", cer.kr, *cer.quorum("alice", "bob", gen=2)])
    assert r.exit_code == 0, r.output
    ev = kr.audit_log().entries()
    rekey = next(e for e in ev if e.event == "rekey")
    assert rekey.data["old_custodians"] == ["alice", "bob", "carol"]
    assert [c["custodian"] for c in rekey.data["authorized_by"]] == ["alice", "carol"]


def test_rekey_needs_a_custodian_list_and_valid_threshold(cer: Ceremony) -> None:
    r = run(["rekey", cer.kr, *cer.quorum("alice", "bob")])
    assert r.exit_code == 2 and "give the custodians" in r.stderr
    r = run(
        [
            "rekey",
            cer.kr,
            "-c",
            "x",
            "-c",
            "y",
            "-k",
            "3",
            "--plain-shares",
            *cer.quorum("alice", "bob"),
        ]
    )
    assert r.exit_code == 2
    assert Keyring.open(cer.kr).meta.generation == 1


def test_rekey_with_bad_quorum_changes_nothing(cer: Ceremony) -> None:
    r = run(["rekey", cer.kr, "-c", "x", "-c", "y", "--plain-shares", *cer.quorum("alice")])
    assert r.exit_code == 1
    kr = Keyring.open(cer.kr)
    assert kr.meta.generation == 1 and kr.pending is None
    assert not list(cer.shares.glob("*.g2.*"))


def test_rekey_on_a_log_it_cannot_extend_changes_nothing(cer: Ceremony) -> None:
    """A rekey whose audit entry cannot be appended (a torn last line) is refused before the
    switch: it used to switch, then fail with exit 1 while the old shares were already dead."""
    with (cer.kr / "audit.log").open("ab") as f:
        f.write(b'{"data":')  # a crash mid-append
    r = run(["rekey", cer.kr, "-c", "x", "-c", "y", "--plain-shares", *cer.quorum("alice", "bob")])
    assert r.exit_code == 1
    assert error_lines(r) == ["error: audit log ends in a torn line; refusing to append"]
    kr = Keyring.open(cer.kr)
    assert kr.meta.generation == 1 and kr.pending is None
    assert not list(cer.shares.glob("*.g2.*"))
    with kr.unseal([_open(cer, "alice"), _open(cer, "bob")]):  # the old shares still work
        pass


def _not_a_file(path: Path, kind: str) -> None:
    """Put ``kind`` where the audit log was: what someone with the disk (or a mistake)
    can leave there."""
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "link-to-dev-zero":
        path.symlink_to("/dev/zero")
    else:  # the same device, made in place (needs CAP_MKNOD)
        try:
            os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 5))
        except PermissionError:
            pytest.skip("mknod needs CAP_MKNOD")


@pytest.mark.parametrize("kind", ["fifo", "link-to-dev-zero", "char-device"])
def test_an_audit_log_that_is_no_regular_file_is_refused(cer: Ceremony, kind: str) -> None:
    """A FIFO or /dev/zero as audit.log: 'audit verify' blocked in open() (FIFO) or read
    until memory ran out (/dev/zero), 'unseal' blocked in its pre-check (FIFO) or wrote its
    entry to the device ('[Errno 22] Invalid argument'). Now each says what is there, in one
    error line, at once. The installed executable, every run bounded by a timeout."""
    log = cer.kr / "audit.log"
    _not_a_file(log, kind)
    what = {"fifo": "a FIFO", "link-to-dev-zero": "a symbolic link"}.get(kind, "a character device")
    for args in (["audit", "verify", cer.kr], ["unseal", cer.kr, *cer.quorum("alice", "bob")]):
        p = run_keysplit(args, timeout=60)
        errs = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
        assert p.returncode == 1 and "Traceback" not in p.stderr, (args, p.stderr)
        assert errs == [f"error: audit log {log} is {what}, not a regular file; refusing to use it"]
    assert not log.is_file()


# -- rotate / rewrap / retire / shred / hold / status --------------------------------------


def _fill(c: Ceremony, n: int) -> list[bytes]:
    kr = Keyring.open(c.kr)
    with kr.unseal([_open(c, "alice"), _open(c, "bob")]) as ukr:
        return ukr.encrypt_many([f"u{i}" for i in range(n)], [b"card %d" % i for i in range(n)])


def test_rotate_rewrap_retire(cer: Ceremony) -> None:
    records = _fill(cer, 50)
    r = run(["rotate", cer.kr, *cer.quorum("alice", "bob")])
    assert r.exit_code == 0 and r.stdout.strip() == "2"
    r = run(["retire", cer.kr, "1", *cer.quorum("alice", "bob")])
    assert r.exit_code == 1 and "still wrapped under KEK version 1" in r.stderr
    assert "hint: run rewrap first" in r.stderr
    r = run(["rewrap", cer.kr, "--batch-size", "7", *cer.quorum("alice", "carol"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rewrapped"] == 50
    assert "rewrapping data keys" in r.stderr
    r = run(["retire", cer.kr, "1", *cer.quorum("alice", "bob")])
    assert r.exit_code == 0, r.output
    r = run(["status", cer.kr, "--json"])
    doc = json.loads(r.stdout)
    assert doc["kek_versions"] == [2] and doc["keys_by_version"] == {"2": 50}
    kr = Keyring.open(cer.kr)
    with kr.unseal([_open(cer, "bob"), _open(cer, "carol")]) as ukr:
        assert ukr.decrypt(records[7], subject="u7") == b"card 7"
    events = [e.event for e in kr.audit_log().entries()]
    assert events == ["init", "rotate", "rewrap", "retire"]


def test_shred_confirmation_and_legal_hold(cer: Ceremony) -> None:
    records = _fill(cer, 3)
    r = run(["shred", cer.kr, "u1", *cer.quorum("alice", "bob")], input="n\n")
    assert r.exit_code == 1
    r = run(["hold", cer.kr, "u1", "--on", *cer.quorum("alice", "bob")])
    assert r.exit_code == 0, r.output
    r = run(["shred", cer.kr, "u1", "--yes", *cer.quorum("alice", "bob")])
    assert r.exit_code == 1 and "legal hold" in r.stderr
    r = run(["hold", cer.kr, "u1", "--off", *cer.quorum("alice", "bob")])
    assert r.exit_code == 0
    r = run(["shred", cer.kr, "u1", *cer.quorum("alice", "bob")], input="y\n")
    assert r.exit_code == 0, r.output
    kr = Keyring.open(cer.kr)
    with kr.unseal([_open(cer, "alice"), _open(cer, "bob")]) as ukr:
        with pytest.raises(ShreddedError, match="the subject was shredded"):
            ukr.decrypt(records[1], subject="u1")
        assert ukr.decrypt(records[2], subject="u2") == b"card 2"
    shred = [e for e in kr.audit_log().entries() if e.event == "shred"]
    assert len(shred) == 1 and shred[0].data["subject"] == "u1" and shred[0].data["existed"]


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["-k", "4", "-c", "ann", "-c", "ben", "-c", "cy"], "--threshold must be between 2 and 3"),
        (["-k", "1", "-c", "ann", "-c", "ben"], "--threshold must be between 2 and 2"),
        (["-k", "2", "-c", "ann", "-c", "ben", "-c", "ann"], "each custodian may appear only once"),
        # names equal but for case: the library refuses them; this was a traceback after
        # every passphrase prompt (and, for rekey, after the quorum) (red team)
        (["-k", "2", "-c", "ann", "-c", "ben", "-c", "ANN"], "each custodian may appear only once"),
    ],
)
def test_custodian_list_errors_come_before_any_passphrase_prompt(
    cer: Ceremony, command: list[str], message: str
) -> None:
    """init and rekey read every passphrase (typed twice) before checking the threshold
    against the custodian count and for a custodian named twice: each custodian typed and
    confirmed a passphrase, then the usage error came (red team)."""
    for args in (
        ["init", cer.root / "new", *command],
        ["rekey", cer.kr, *command, *cer.quorum("alice", "bob")],
    ):
        r = run(args, input="pass phrase one\npass phrase one\n" * 3)
        assert r.exit_code == 2, r.output
        assert error_lines(r) == [f"error: {message} (the custodians)"] or error_lines(r) == [
            f"error: {message}"
        ], r.stderr
        assert "Passphrase" not in r.stderr


@pytest.mark.parametrize("option", ["DIR", "--shares-dir", "--sheets"])
def test_output_directories_are_checked_before_any_passphrase_prompt(
    cer: Ceremony, option: str
) -> None:
    """init (DIR, --shares-dir, --sheets) and rekey (--shares-dir, --sheets) under a path
    that is a file: every custodian typed and confirmed a passphrase (and, for rekey, the
    quorum was asked for), then `error: Not a directory` (red team)."""
    afile = cer.root / "a-file"
    afile.write_bytes(b"x")
    bad = afile / "sub"
    custodians = ["-k", "2", "-c", "ann", "-c", "ben"]
    runs = [["init", cer.root / "new", *custodians]]
    if option != "DIR":
        runs.append(["rekey", cer.kr, *custodians])
    for args in runs:
        if option == "DIR":
            args[1] = bad
        else:
            args += [option, bad]
        r = run(args, input="pass phrase one\n" * 8)
        assert r.exit_code == 2, r.output
        assert error_lines(r) == [f"error: {option}: not a directory: {afile}"], r.stderr
        assert "Passphrase" not in r.stderr and "Share" not in r.stderr


def test_combine_and_share_print_check_their_output_before_reading_shares(
    cer: Ceremony,
) -> None:
    """combine --out and share print --out in a missing directory: the shares were opened
    (passphrases asked for) before the write failed (red team)."""
    out = cer.root / "no-dir" / "out"
    for args in (
        ["combine", cer.share("carol"), cer.share("alice"), "--out", out],
        ["share", "print", cer.share("carol"), "--out", out],
    ):
        r = run(args, input="carol's long passphrase\n")
        assert r.exit_code == 2, r.output
        assert error_lines(r) == [f"error: --out: no such directory: {out.parent}"], r.stderr
        assert "Passphrase" not in r.stderr


@pytest.mark.parametrize(
    ("subject", "message"),
    [
        ("", "error: SUBJECT: subject must not be empty"),
        ("u\udcff", "error: SUBJECT: subject is not valid Unicode text"),
        ("u" * 1025, "error: SUBJECT: subject must be at most 1024 bytes of UTF-8"),
    ],
)
@pytest.mark.parametrize("command", [["shred", "--yes"], ["hold", "--on"], ["hold", "--off"]])
def test_subject_the_library_refuses_is_a_usage_error(
    cer: Ceremony, command: list[str], subject: str, message: str
) -> None:
    """A subject no key can have (empty, too long, not Unicode: bytes that are not UTF-8
    reach Python's argv as lone surrogates) was a ValueError traceback from shred and hold,
    raised after the custodians had given their shares (red team)."""
    r = run([command[0], cer.kr, subject, command[1], *cer.quorum("alice", "bob")])
    assert r.exit_code == 2 and error_lines(r) == [message], r.stderr
    assert "[1/2]" not in r.stderr  # refused before any share was asked for
    assert [e.event for e in Keyring.open(cer.kr).audit_log().entries()] == ["init"]


def test_cluster_shred_refuses_a_subject_no_key_can_have(tmp_path: Path) -> None:
    r = run(["cluster", "shred", tmp_path, "u\udcff", "--token-file", tmp_path / "t", "--yes"])
    assert r.exit_code == 2, r.output
    assert error_lines(r) == ["error: SUBJECT: subject is not valid Unicode text"]


def test_status_is_public_and_needs_no_quorum(cer: Ceremony) -> None:
    _fill(cer, 4)
    r = run(["status", cer.kr, "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["threshold"] == 2 and doc["data_keys"] == 4 and doc["sealed"] is True
    assert doc["audit"]["chain_ok"] and doc["audit"]["entries"] == 1
    r = run(["status", cer.kr])
    assert r.exit_code == 0 and "2 of 3" in r.stdout and "alice (#1)" in r.stdout
    for n in ("alice", "bob"):
        assert str(_open(cer, n)) not in r.output


def test_status_shows_the_rekeys_the_store_owes_a_count(cer: Ceremony) -> None:
    """A rekey whose switch stood while the store failed to count it (here another writer
    holds the file's write lock: a real lock wait) is owed a count in the keyring's home
    (c5a1098); ``status`` showed the store's short ``rekeys`` and nothing else (stop 41,
    found). Now ``--json`` lists the owed sets (``uncounted_rekeys``) and the fleet line
    says how many, until the next unseal counts them."""
    import sqlite3

    kr = Keyring.open(cer.kr)
    with kr.unseal([_open(cer, "alice"), _open(cer, "bob")]) as ukr:
        new = ukr.prepare_rekey()
        ukr.store._db.execute("PRAGMA busy_timeout = 200")  # type: ignore[attr-defined]
        other = sqlite3.connect(str(cer.kr / "keys.sqlite"), isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            ukr.commit_rekey()  # the switch stands; the count fails (logged)
        finally:
            other.close()
    set_id = Keyring.open(cer.kr).meta.set_id
    r = run(["status", cer.kr, "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["fleet"]["rekeys"] == 0 and doc["uncounted_rekeys"] == [set_id]
    r = run(["status", cer.kr])
    assert r.exit_code == 0, r.output
    fleet = " ".join(w for w in r.stdout.split() if w != "│")  # the table wraps the row
    assert "0 rekeys (+1 not yet counted by the store" in fleet, r.stdout
    with Keyring.open(cer.kr).unseal([new["alice"], new["bob"]]):
        pass  # the next unseal counts it
    doc = json.loads(run(["status", cer.kr, "--json"]).stdout)
    assert doc["fleet"]["rekeys"] == 1 and doc["uncounted_rekeys"] == []
    assert "not yet counted" not in run(["status", cer.kr]).stdout


def test_status_reads_a_leases_time_left_on_the_stores_clock(
    cer: Ceremony, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease's ``expires`` is on the store's clock (PostgreSQL: the server's
    ``clock_timestamp()``); ``status``'s "lease N s" subtracted this host's ``time.time()``,
    off by the skew between the two (stop 42, found). Here the store's clock runs an hour
    ahead of this host's (a wrapper shifts its clock and the expiries it reads, as a server
    an hour ahead would): before, "lease 3609 s"; now the time left on the store's clock
    (``--json``: ``expires_in``)."""
    import re

    ahead = 3600.0

    class Ahead:
        def __init__(self, store: object) -> None:
            self._store = store

        def __getattr__(self, name: str) -> object:
            return getattr(self._store, name)

        def leases(self, *, live: bool = True) -> list[object]:
            return [x._replace(expires=x.expires + ahead) for x in self._store.leases(live=live)]  # type: ignore[attr-defined]

        def clock(self) -> float:
            return time.time() + ahead

    real = Keyring.open_store
    with Keyring.open(cer.kr).unseal([_open(cer, "alice"), _open(cer, "bob")]) as ukr:
        ttl = ukr.local_data_keys().member.ttl
        monkeypatch.setattr(Keyring, "open_store", lambda kr, **kw: Ahead(real(kr, **kw)))
        r = run(["status", cer.kr, "--json"])
        assert r.exit_code == 0, r.output
        (lease,) = json.loads(r.stdout)["leases"]
        assert 0 <= lease["expires_in"] <= ttl, lease
        r = run(["status", cer.kr])
        assert r.exit_code == 0, r.output
        left = [int(n) for n in re.findall(r"lease (\d+) s", " ".join(r.stdout.split()))]
        assert len(left) == 1 and 0 <= left[0] <= ttl, r.stdout


def test_commands_on_a_missing_keyring(tmp_path: Path) -> None:
    for cmd in (["status"], ["unseal"], ["rotate"], ["audit", "verify"]):
        r = run([*cmd, tmp_path / "nothing"])
        assert r.exit_code == 1, (cmd, r.output)
        assert "no keyring at" in r.stderr


def test_every_ceremony_command_has_help() -> None:
    for cmd in (
        ["init"],
        ["unseal"],
        ["rekey"],
        ["rotate"],
        ["rewrap"],
        ["retire"],
        ["shred"],
        ["hold"],
        ["status"],
        ["encrypt"],
        ["decrypt"],
        ["audit", "verify"],
        ["audit", "show"],
        ["demo"],
    ):
        r = run([*cmd, "--help"])
        assert r.exit_code == 0 and len(r.stdout) > 200, cmd
        assert "Exit codes: 0" in r.stdout, cmd


def test_init_share_dir_problems_stop_before_any_key_exists(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the shares directory should be")
    r = run(
        [
            "init",
            tmp_path / "kr",
            "-k",
            "2",
            "-c",
            "a",
            "-c",
            "b",
            "--plain-shares",
            "--shares-dir",
            blocker / "sub",
        ]
    )
    assert r.exit_code == 2  # checked up front, a usage error (before any prompt)
    assert error_lines(r) == [f"error: --shares-dir: not a directory: {blocker}"]
    assert not (tmp_path / "kr").exists()


def test_init_share_write_failure_is_reported_plainly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = sinks.atomic_write
    calls = []

    def flaky(path: Path, data: bytes, **kw: object) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(path))
        real(path, data, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(sinks, "atomic_write", flaky)
    r = run(["init", tmp_path / "kr", "-k", "2", "-c", "a", "-c", "b", "--plain-shares"])
    assert r.exit_code == 1
    (line,) = error_lines(r)
    assert "could not write the share files" in line and "can never be unsealed" in line
    assert f"hint: remove {tmp_path / 'kr'} and run init again" in r.stderr
    assert not calls[0].exists()  # the share written before the failure is removed too


def test_encrypted_identity_with_wrong_passphrase_is_named(cer: Ceremony, tmp_path: Path) -> None:
    ident = Identity.from_bytes(cer.ids["alice"].read_bytes())
    locked = tmp_path / "alice-locked.identity"
    locked.write_bytes(ident.to_bytes(b"right passphrase", kdf=_common.KDF))
    wrong = tmp_path / "wrong.pw"
    wrong.write_text("wrong passphrase\n")
    r = run(
        [
            "unseal",
            cer.kr,
            "--share",
            cer.share("alice"),
            "--identity",
            locked,
            "--passphrase-file",
            f"alice-locked={wrong}",
            *cer.quorum("bob"),
        ]
    )
    assert r.exit_code == 1
    (line,) = error_lines(r)
    assert line.startswith(f"error: {locked}:")
    right = tmp_path / "right.pw"
    right.write_text("right passphrase\n")
    r = run(
        [
            "unseal",
            cer.kr,
            "--share",
            cer.share("alice"),
            "--identity",
            locked,
            "--passphrase-file",
            f"alice-locked={right}",
            *cer.quorum("bob"),
        ]
    )
    assert r.exit_code == 0, r.output


def test_interrupted_rekey_is_completed_and_logged_by_the_new_shares(cer: Ceremony) -> None:
    """A rekey that died between writing the new shares and the switch: the new shares
    finish it (old ones then die), and the audit log says so."""
    kr = Keyring.open(cer.kr)
    ukr = kr.unseal([_open(cer, "alice"), _open(cer, "bob")])
    new = ukr.prepare_rekey(custodians=["x", "y", "z"])  # ... and then the process "dies"
    ukr.close()
    files = []
    for name in ("x", "z"):
        path = cer.root / f"{name}.txt"
        path.write_text(str(new[name]) + "\n")
        files += ["--share", path]
    r = run(["status", cer.kr, "--json"])
    assert json.loads(r.stdout)["pending_rekey"] is True
    r = run(["unseal", cer.kr, *files])
    assert r.exit_code == 0, r.output
    assert "completed an interrupted rekey" in r.stderr
    events = Keyring.open(cer.kr).audit_log().entries()
    assert [e.event for e in events][-2:] == ["rekey-recovered", "unseal-check"]
    assert events[-2].data["custodians"] == ["x", "y", "z"]
    r = run(["unseal", cer.kr, *cer.quorum("alice", "bob")])
    assert r.exit_code == 1 and "does not belong to this keyring" in r.stderr


def test_rekey_by_the_shares_of_an_interrupted_rekey_names_files_after_its_generation(
    cer: Ceremony,
) -> None:
    """The new shares of an interrupted rekey (generation 2) authorize another rekey: they
    complete the interrupted one first, so the new set is generation 3. Its files used to
    be named NAME.g2.kss, like the dead set they replace."""
    kr = Keyring.open(cer.kr)
    with kr.unseal([_open(cer, "alice"), _open(cer, "bob")]) as ukr:
        new = ukr.prepare_rekey(custodians=["x", "y", "z"])  # ... and the process "dies"
    files = []
    for name in ("x", "y"):
        path = cer.root / f"{name}.g2.txt"
        path.write_text(str(new[name]) + "\n")
        files += ["--share", path]
    out = cer.root / "next"
    args = ["rekey", cer.kr, "-c", "x", "-c", "y", "-c", "z", "--plain-shares"]
    r = run([*args, "--shares-dir", out, *files, "--json"])
    assert r.exit_code == 0, r.output
    assert "completed an interrupted rekey" in r.stderr
    doc = json.loads(r.stdout)
    assert doc["generation"] == 3 == Keyring.open(cer.kr).meta.generation
    assert sorted(p.name for p in out.iterdir()) == ["x.g3.kss", "y.g3.kss", "z.g3.kss"]
    assert [s["file"] for s in doc["shares"]] == [str(out / f"{n}.g3.kss") for n in "xyz"]
    r = run(["unseal", cer.kr, "-s", out / "x.g3.kss", "-s", out / "z.g3.kss"])
    assert r.exit_code == 0, r.output


def test_rekey_abort_discards_an_orphaned_rekey(cer: Ceremony) -> None:
    """A crash between prepare and commit leaves keyring.pending; rotate names the way out,
    and `rekey --abort` with the current quorum discards it (audited)."""
    shares = [_open(cer, n) for n in ("alice", "bob")]
    with Keyring.open(cer.kr).unseal(shares) as ukr:
        ukr.prepare_rekey()  # ...and the process dies before committing
    r = run(["rotate", cer.kr, *cer.quorum("alice", "bob")])
    assert r.exit_code == 1 and "a rekey is pending" in r.stderr and "rekey --abort" in r.stderr
    r = run(["rekey", cer.kr, "--abort", *cer.quorum("alice", "carol")])
    assert r.exit_code == 0, r.output
    assert Keyring.open(cer.kr).pending is None
    assert run(["rotate", cer.kr, *cer.quorum("alice", "bob")]).exit_code == 0
    assert "rekey-abort" in run(["audit", "show", cer.kr]).stdout
    r = run(["rekey", cer.kr, "--abort", *cer.quorum("alice", "bob")])
    assert r.exit_code == 1 and "no rekey is pending" in r.stderr


def test_an_expensive_share_refused_in_a_quorum_hints_only_what_the_command_takes(
    cer: Ceremony, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SECURITY.md: with passphrases from files an expensive Argon2id share is refused. The
    refusal's hint told `keysplit unseal` (and every quorum command) to 'pass
    --allow-expensive-kdf', an option only the share commands have: following it was a usage
    error. A quorum command's hint now points at the terminal prompt."""
    from keysplit import Argon2Params

    monkeypatch.setattr(Argon2Params, "CONFIRM_ABOVE_KIB", 32)  # carol's cheap share counts
    r = run(["unseal", cer.kr, *cer.quorum("alice", "carol")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    (line,) = error_lines(r)
    assert "no prompt to ask at" in line and str(cer.share("carol")) in line
    assert "--allow-expensive-kdf" not in r.stderr
    assert "hint:" in r.stderr and "terminal" in r.stderr
    r = run(["unseal", cer.kr, *cer.quorum("alice", "carol"), "--allow-expensive-kdf"])
    assert r.exit_code != 0  # (the quorum commands do not take it)
