"""Conversion between keysplit, SLIP-39 and pycryptodome shares: library and CLI."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import shamir_mnemonic
from Crypto.Protocol.SecretSharing import Shamir
from keysplit_cli.app import app
from service_helpers import KEYSPLIT
from typer.testing import CliRunner

from keysplit import (
    ChecksumError,
    KeysplitError,
    RecoveryError,
    Share,
    combine,
    secret_fingerprint,
    split,
)
from keysplit.interop import convert, pycryptodome, slip39

SECRET = bytes.fromhex("00112233445566778899aabbccddeeff")
runner = CliRunner()


# -- library ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [16, 32])
def test_keysplit_slip39_roundtrip(size: int) -> None:
    secret = os.urandom(size)
    shares = split(secret, 3, 5)
    mnemonics = convert.keysplit_to_slip39(
        shares[:3], 1, [(3, 5)], passphrase=b"pw", iteration_exponent=0
    )
    assert shamir_mnemonic.combine_mnemonics(mnemonics[0][1:4], b"pw") == secret
    back = convert.slip39_to_keysplit(mnemonics[0][2:], 2, 3, passphrase=b"pw")
    assert combine(back[:2]) == secret


def test_keysplit_pycryptodome_roundtrip() -> None:
    shares = split(SECRET, 2, 3)
    pc = convert.keysplit_to_pycryptodome(shares[1:], 3, 5, ssss=True)
    assert Shamir.combine(pc[:3], ssss=True) == SECRET
    back = convert.pycryptodome_to_keysplit(pc, 2, 2, source_threshold=3, ssss=True)
    assert combine(back) == SECRET


def test_conversion_refuses_bad_sources() -> None:
    a, b = split(SECRET, 2, 3), split(SECRET, 2, 3)
    with pytest.raises(KeysplitError):
        convert.keysplit_to_slip39([a[0], b[1]], 1, [(2, 3)])
    with pytest.raises(KeysplitError, match="SLIP-39"):
        convert.keysplit_to_slip39(split(b"x" * 15, 2, 2), 1, [(2, 2)])
    with pytest.raises(KeysplitError, match="16-byte"):
        convert.keysplit_to_pycryptodome(split(b"x" * 32, 2, 2), 2, 2)
    pc = Shamir.split(2, 3, SECRET)
    bad = [pc[0], pc[1], (3, bytes(16))]
    with pytest.raises(RecoveryError):
        convert.pycryptodome_to_keysplit(bad, 2, 3, source_threshold=2)


# -- CLI ----------------------------------------------------------------------------------


def _ks_file(tmp_path: Path, shares: list[Share], name: str = "in.txt") -> Path:
    p = tmp_path / name
    p.write_text("".join(f"{s}\n" for s in shares))
    return p


def test_cli_slip39_3_of_5_into_keysplit_and_back(tmp_path: Path) -> None:
    """The migration documented in docs/MIGRATION.md, end to end."""
    backup = shamir_mnemonic.generate_mnemonics(1, [(3, 5)], SECRET, b"TREZOR", True, 0)[0]
    src = tmp_path / "slip39.txt"
    src.write_text("\n".join(backup[1:4]) + "\n")
    pw = tmp_path / "pass"
    pw.write_text("TREZOR\n")
    out = tmp_path / "ks"
    r = runner.invoke(
        app,
        [
            "share",
            "convert",
            "--from",
            "slip39",
            "--to",
            "keysplit",
            "-t",
            "3",
            "-n",
            "5",
            "--passphrase-file",
            str(pw),
            "--out-dir",
            str(out),
            str(src),
        ],
    )
    assert r.exit_code == 0, r.output
    files = sorted(out.iterdir())
    assert len(files) == 5
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    shares = [Share.parse(f.read_text()) for f in files]
    assert combine(shares[:3]) == SECRET
    assert secret_fingerprint(SECRET) in r.output
    assert SECRET.hex() not in r.output

    r = runner.invoke(
        app,
        [
            "share",
            "convert",
            "--from",
            "keysplit",
            "--to",
            "slip39",
            "--passphrase-file",
            str(pw),
            "--iteration-exponent",
            "0",
            *map(str, files[1:4]),
        ],
    )
    assert r.exit_code == 0, r.output
    mnemonics = [line for line in r.stdout.splitlines() if line and not line.startswith("#")]
    assert len(mnemonics) == 5
    assert shamir_mnemonic.combine_mnemonics(mnemonics[2:], b"TREZOR") == SECRET


def test_cli_slip39_groups_and_prompt(tmp_path: Path) -> None:
    src = _ks_file(tmp_path, split(SECRET, 2, 3)[:2])
    r = runner.invoke(
        app,
        [
            "share",
            "convert",
            "--from",
            "keysplit",
            "--to",
            "slip39",
            "--groups",
            "1of1,2of3",
            "--group-threshold",
            "2",
            "--iteration-exponent",
            "0",
            str(src),
        ],
        input="hunter2\nhunter2\n",
    )
    assert r.exit_code == 0, r.output
    assert "hunter2" not in r.stdout
    lines = [x.strip() for x in r.stdout.splitlines() if x.strip() and not x.startswith("#")]
    assert len(lines) == 4
    assert slip39.combine_mnemonics([lines[0], lines[1], lines[3]], passphrase=b"hunter2") == SECRET


def test_cli_slip39_passphrase_piped_in_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    """The SLIP-39 passphrase prompt read from a pipe (no terminal) in bytes that are not
    UTF-8: a UnicodeEncodeError traceback. They are the passphrase's bytes, as from
    --passphrase-file (SLIP-39 decrypts under any bytes; only new backups need ASCII)."""
    words = slip39.generate_mnemonics(1, [(2, 3)], bytes(range(16)))[0]
    src = tmp_path / "words.txt"
    src.write_text("\n".join(words[:2]) + "\n")
    args = ["share", "convert", "--from", "slip39", "--to", "keysplit", str(src), "-t", "2"]
    p = subprocess.run(
        [KEYSPLIT, *args, "-n", "3"],
        input=b"\xff\n",
        capture_output=True,
        start_new_session=True,  # no terminal: the prompt reads stdin
        timeout=120,
    )
    assert p.returncode == 0 and b"Traceback" not in p.stderr, p.stderr
    assert b"GetPassWarning" not in p.stderr and b"may be echoed" not in p.stderr
    expected = secret_fingerprint(slip39.combine_mnemonics(words[:2], passphrase=b"\xff"))
    assert f"fingerprint {expected}" in p.stderr.decode()


def test_cli_pycryptodome_stdin_to_keysplit() -> None:
    text = pycryptodome.format_pycryptodome(Shamir.split(2, 3, SECRET))
    r = runner.invoke(
        app,
        [
            "share",
            "convert",
            "--from",
            "pycryptodome",
            "--to",
            "keysplit",
            "-t",
            "2",
            "-n",
            "2",
            "--source-threshold",
            "2",
        ],
        input=text,
    )
    assert r.exit_code == 0, r.output
    shares = [Share.parse(line) for line in r.stdout.splitlines() if line.startswith("ks1")]
    assert combine(shares) == SECRET


@pytest.mark.parametrize("given", [2, 3])
def test_cli_pycryptodome_import_says_what_it_could_check(given: int) -> None:
    """pycryptodome shares carry no check value (docs/MIGRATION.md: give one more share than
    the threshold): as for Vault keys, the import says each time whether the shares were
    checked, and warns when exactly the threshold was given (a mistyped share would make a
    wrong key silently). It said nothing either way."""
    text = pycryptodome.format_pycryptodome(Shamir.split(2, 3, SECRET)[:given])
    argv = ["share", "convert", "--from", "pycryptodome", "--to", "keysplit", "-t", "2", "-n", "2"]
    r = runner.invoke(app, [*argv, "--source-threshold", "2"], input=text)
    assert r.exit_code == 0, r.output
    said = " ".join(r.stderr.split())
    if given == 2:
        assert "warning: exactly 2 pycryptodome shares given" in said
        assert "no check value" in said
    else:
        assert "checked: all 3 pycryptodome shares lie on one polynomial of degree 1" in said


def test_cli_keysplit_to_pycryptodome_binary_input(tmp_path: Path) -> None:
    shares = split(SECRET, 2, 3)
    files = []
    for s in shares[:2]:
        p = tmp_path / f"s{s.index}.bin"
        p.write_bytes(s.to_bytes())
        files.append(str(p))
    r = runner.invoke(
        app, ["share", "convert", "--from", "keysplit", "--to", "pycryptodome", *files]
    )
    assert r.exit_code == 0, r.output
    pc = pycryptodome.parse_pycryptodome(r.stdout)
    assert len(pc) == 3 and Shamir.combine(pc[:2]) == SECRET


@pytest.mark.parametrize(
    "args,stdin,code,message",
    [
        (["--from", "keysplit", "--to", "slip39"], "ks1-garbage\n", 2, "passphrase cannot be"),
        (
            ["--from", "keysplit", "--to", "slip39", "--no-passphrase"],
            "ks1-qqqqq\n",
            1,
            "stdin line 1:",
        ),
        (
            ["--from", "pycryptodome", "--to", "keysplit"],
            "1-" + "00" * 16 + "\n",
            2,
            "--source-threshold K",
        ),
        (
            ["--from", "pycryptodome", "--to", "keysplit", "--source-threshold", "1"],
            "1-" + "00" * 16 + "\n",
            2,
            "say how to split: --threshold",
        ),
        (
            ["--from", "slip39", "--to", "keysplit", "--no-passphrase", "-t", "2", "-n", "3"],
            "duckling enlarge academic\n",
            1,
            "at least 20 words",
        ),
        (
            [
                "--from",
                "pycryptodome",
                "--to",
                "keysplit",
                "--source-threshold",
                "2",
                "-t",
                "2",
                "-n",
                "9",
                "--count",
                "1",
            ],
            "1-" + "00" * 16 + "\n2-" + "11" * 16 + "\n",
            2,
            "threshold",
        ),
    ],
)
def test_cli_errors(args: list[str], stdin: str, code: int, message: str) -> None:
    r = runner.invoke(app, ["share", "convert", *args], input=stdin)
    assert r.exit_code == code, r.output
    assert message in r.output
    assert "Traceback" not in r.output


def test_cli_bad_share_file_names_the_line(tmp_path: Path) -> None:
    shares = split(SECRET, 2, 3)
    text = str(shares[0])
    typo = text[:-3] + ("q" if text[-3] != "q" else "p") + text[-2:]
    p = tmp_path / "bad.txt"
    p.write_text(f"{shares[1]}\n{typo}\n")
    r = runner.invoke(
        app, ["share", "convert", "--from", "keysplit", "--to", "pycryptodome", str(p)]
    )
    assert r.exit_code == 1
    assert f"{p} line 2:" in r.output and "checksum" in r.output


def test_cli_out_dir_never_overwrites(tmp_path: Path) -> None:
    src = _ks_file(tmp_path, split(SECRET, 2, 2))
    out = tmp_path / "o"
    args = [
        "share",
        "convert",
        "--from",
        "keysplit",
        "--to",
        "pycryptodome",
        "--out-dir",
        str(out),
        str(src),
    ]
    assert runner.invoke(app, args).exit_code == 0
    r = runner.invoke(app, args)
    assert r.exit_code == 1 and "refusing to overwrite" in r.output


def test_cli_out_dir_with_one_taken_name_writes_no_share(tmp_path: Path) -> None:
    """One output name already taken (an earlier conversion's second share): the new first
    share was written before the refusal, leaving the old and new splits mixed in one
    directory. pycryptodome shares carry no check: that mix combines to a wrong secret
    without any error. Now nothing is written."""
    out = tmp_path / "o"
    out.mkdir()
    earlier = pycryptodome.format_pycryptodome(pycryptodome.split_pycryptodome(SECRET, 2, 2))
    (out / "pycryptodome-2.txt").write_text(earlier.splitlines()[1] + "\n")
    src = _ks_file(tmp_path, split(SECRET, 2, 2))
    args = ["share", "convert", "--from", "keysplit", "--to", "pycryptodome"]
    r = runner.invoke(app, [*args, "-t", "2", "-n", "3", "--out-dir", str(out), str(src)])
    assert r.exit_code == 1 and "refusing to overwrite" in r.output
    assert sorted(p.name for p in out.iterdir()) == ["pycryptodome-2.txt"]


def test_checksum_error_class_is_reported() -> None:
    text = str(split(SECRET, 2, 2)[0])
    typo = "q" if text[-1] != "q" else "p"  # always a real substitution (random last char)
    with pytest.raises(ChecksumError):
        Share.parse(text[:-1] + typo)


def test_cli_classic_flag(tmp_path: Path) -> None:
    src = _ks_file(tmp_path, split(SECRET, 2, 2))
    r = runner.invoke(
        app,
        [
            "share",
            "convert",
            "--from",
            "keysplit",
            "--to",
            "slip39",
            "--classic",
            "--no-passphrase",
            "--iteration-exponent",
            "0",
            str(src),
        ],
    )
    assert r.exit_code == 0, r.output
    lines = [x.strip() for x in r.stdout.splitlines() if x.strip()]
    assert not slip39.decode_mnemonic(lines[0]).extendable
    assert shamir_mnemonic.combine_mnemonics(lines) == SECRET


def test_keyring_quorum_to_slip39_and_back(tmp_path: Path) -> None:
    """A 3-of-5 keyring's custodian shares become a SLIP-39 backup and come back.

    With --set-id the keyring accepts the converted shares and unseals with them.
    """
    from keysplit import Keyring

    kr, shares = Keyring.create(tmp_path / "kr", 3, ["ann", "bob", "cy", "dee", "eve"])
    files = [_ks_file(tmp_path, [s], f"{name}.txt") for name, s in shares.items()]
    r = runner.invoke(
        app,
        [
            "share",
            "convert",
            "--from",
            "keysplit",
            "--to",
            "slip39",
            "--no-passphrase",
            "--iteration-exponent",
            "0",
            *map(str, files[:3]),
        ],
    )
    assert r.exit_code == 0, r.output
    mnemonics = [x.strip() for x in r.stdout.splitlines() if x.strip()]
    assert len(mnemonics) == 5
    backup = tmp_path / "slip39.txt"
    backup.write_text("\n".join(mnemonics[2:]) + "\n")

    set_id = kr.status().set_id
    out = tmp_path / "back"
    r = runner.invoke(
        app,
        [
            "share",
            "convert",
            "--from",
            "slip39",
            "--to",
            "keysplit",
            "--no-passphrase",
            "-t",
            "3",
            "-n",
            "5",
            "--set-id",
            set_id,
            "--out-dir",
            str(out),
            str(backup),
        ],
    )
    assert r.exit_code == 0, r.output
    back = [Share.parse(p.read_text()) for p in sorted(out.iterdir())]
    assert all(s.set_id.hex() == set_id for s in back)
    assert back[0].payload != shares["ann"].payload  # a fresh split, not a copy
    opened = Keyring.open(tmp_path / "kr").unseal([back[4], back[1], back[3]])
    opened.close()
    # old and new shares of the "same" set never combine to a wrong key
    with pytest.raises(RecoveryError):
        combine([shares["ann"], back[1], back[2]])


def test_set_id_option_checks() -> None:
    r = runner.invoke(
        app,
        ["share", "convert", "--from", "slip39", "--to", "keysplit", "--set-id", "xyz"],
        input="",
    )
    assert r.exit_code == 2 and "16 hex digits" in r.output
    r = runner.invoke(
        app,
        ["share", "convert", "--from", "keysplit", "--to", "slip39", "--set-id", "00" * 8],
        input="",
    )
    assert r.exit_code == 2 and "--to keysplit" in r.output


def test_split_with_set_id_library() -> None:
    sid = bytes(range(8))
    shares = convert.split_with_set_id(SECRET, 2, 3, set_id=sid)
    assert {s.set_id for s in shares} == {sid} and combine(shares[1:]) == SECRET
    with pytest.raises(ValueError):
        convert.split_with_set_id(SECRET, 2, 3, set_id=b"short")


def test_cli_reads_shares_sealed_to_custodians(tmp_path: Path) -> None:
    from keysplit import Identity, seal_share

    ids = [Identity.generate(n) for n in ("ann", "bob")]
    shares = split(SECRET, 2, 2)
    files = []
    for ident, s in zip(ids, shares, strict=True):
        p = tmp_path / f"{ident.recipient.name}.kss"
        p.write_bytes(seal_share(s, ident.recipient))
        files.append(str(p))
    id_files = []
    for ident in ids:
        p = tmp_path / f"{ident.recipient.name}.id"
        p.write_bytes(ident.to_bytes())
        id_files += ["--identity", str(p)]
    r = runner.invoke(
        app,
        [
            "share",
            "convert",
            "--from",
            "keysplit",
            "--to",
            "pycryptodome",
            "-t",
            "2",
            "-n",
            "3",
            *id_files,
            *files,
        ],
    )
    assert r.exit_code == 0, r.output
    assert Shamir.combine(pycryptodome.parse_pycryptodome(r.stdout)[:2]) == SECRET
    r = runner.invoke(
        app, ["share", "convert", "--from", "keysplit", "--to", "pycryptodome", *files]
    )
    assert r.exit_code == 1 and "no --identity matches" in r.output


def test_cli_documented_keyring_round_trip(tmp_path: Path) -> None:
    """docs/MIGRATION.md, 'A keyring's quorum as a SLIP-39 backup, and back', via the CLI."""
    import json

    kr, sh = tmp_path / "kr", tmp_path / "sh"
    names = ["ann", "bob", "cy", "dee", "eve"]
    custodians = [x for n in names for x in ("-c", n)]
    r = runner.invoke(
        app, ["init", str(kr), "-k", "3", *custodians, "--plain-shares", "--shares-dir", str(sh)]
    )
    assert r.exit_code == 0, r.output
    files = sorted(sh.iterdir())
    assert len(files) == 5
    r = runner.invoke(
        app,
        [
            "share",
            "convert",
            "--from",
            "keysplit",
            "--to",
            "slip39",
            "-t",
            "3",
            "-n",
            "5",
            "--no-passphrase",
            "--iteration-exponent",
            "0",
            *map(str, files[:3]),
        ],
    )
    assert r.exit_code == 0, r.output
    mnemonics = [x.strip() for x in r.stdout.splitlines() if x.strip()]
    (tmp_path / "three.txt").write_text("\n".join(mnemonics[1:4]) + "\n")
    r = runner.invoke(app, ["status", str(kr), "--json"])
    set_id = json.loads(r.stdout)["set_id"]
    back = tmp_path / "back"
    r = runner.invoke(
        app,
        [
            "share",
            "convert",
            "--from",
            "slip39",
            "--to",
            "keysplit",
            "-t",
            "3",
            "-n",
            "5",
            "--set-id",
            set_id,
            "--no-passphrase",
            "--out-dir",
            str(back),
            str(tmp_path / "three.txt"),
        ],
    )
    assert r.exit_code == 0, r.output
    picked = [back / f"share-{set_id}-{i}.kss" for i in (2, 4, 5)]
    r = runner.invoke(app, ["unseal", str(kr), *[x for p in picked for x in ("-s", str(p))]])
    assert r.exit_code == 0, r.output
    assert "quorum verified" in r.output


# -- SLIP-39 PBKDF2 cost (red team) ---------------------------------------------------------


def _costly_slip39(exponent: int) -> list[str]:
    """Mnemonics whose header claims ``exponent``: made at exponent 0, the field rewritten
    (the checksum recomputed), as anyone handing over shares can."""
    import dataclasses

    shares = slip39.generate_shares(1, [(2, 3)], SECRET, iteration_exponent=0)[0][:2]
    return [dataclasses.replace(s, iteration_exponent=exponent).mnemonic() for s in shares]


def test_a_slip39_recovery_above_the_stated_cost_needs_consent() -> None:
    """(red team, 'found, not fixed') Shares claiming iteration exponent 15 ran PBKDF2 for
    327,680,000 iterations (~85 s here, minutes on a laptop) without a word. Above
    CONFIRM_ABOVE_EXPONENT the confirm hook is asked first; no hook, or a no, refuses."""
    asked: list[int] = []
    with pytest.raises(KeysplitError, match="without asking"):
        slip39.combine_mnemonics(_costly_slip39(11), confirm=lambda e: asked.append(e) or False)
    assert asked == [11]
    with pytest.raises(KeysplitError, match="327,680,000 PBKDF2 iterations"):
        slip39.combine_mnemonics(_costly_slip39(15))
    with pytest.raises(KeysplitError, match="iteration exponent 15"):
        convert.slip39_to_keysplit(_costly_slip39(15), 2, 3)

    def never(exponent: int) -> bool:
        raise AssertionError("asked below the bound")

    cheap = slip39.generate_mnemonics(1, [(2, 3)], SECRET, iteration_exponent=1)[0][:2]
    assert slip39.combine_mnemonics(cheap, confirm=never) == SECRET


@pytest.mark.parametrize("from_stdin", [False, True])
def test_a_slip39_import_above_the_stated_cost_is_refused_without_a_prompt(
    tmp_path: Path, from_stdin: bool
) -> None:
    """The CLI, with no terminal to ask at, refuses at once (one error line, the option to
    pass); before, the command ran PBKDF2 for minutes. Real process, bounded in time."""
    src = tmp_path / "slip39.txt"
    src.write_text("\n".join(_costly_slip39(15)) + "\n")
    args = [KEYSPLIT, "share", "convert", "--from", "slip39", "--to", "keysplit"]
    args += ["-t", "2", "-n", "3", "--no-passphrase"]
    r = subprocess.run(
        [*args] if from_stdin else [*args, str(src)],
        input=src.read_text(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [
        "error: the SLIP-39 shares ask for 327,680,000 PBKDF2 iterations (iteration exponent "
        "15), more than keysplit runs without asking, and there is no prompt to ask at"
    ], r.stderr
    assert "--allow-expensive-kdf" in r.stderr and "ks1" not in r.stdout
