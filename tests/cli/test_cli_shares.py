"""CLI: split, combine, share inspect/verify, custodian keygen/show (Typer CliRunner)."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest
from keysplit_cli import _common
from keysplit_cli.app import app
from service_helpers import KEYSPLIT
from typer.testing import CliRunner

from keysplit import (
    Argon2Params,
    Identity,
    Recipient,
    Share,
    combine,
    load_share,
    seal_share_with_passphrase,
    secret_fingerprint,
    split,
)

SECRET = "2b7e151628aed2a6abf7158809cf4f3c"
runner = CliRunner()


@pytest.fixture(autouse=True)
def fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_common, "KDF", Argon2Params(time_cost=1, memory_kib=64, lanes=1))


def run(args: list[str], input: str | None = None):
    result = runner.invoke(app, [str(a) for a in args], input=input)
    assert "Traceback" not in result.output
    return result


def _error_lines(result) -> list[str]:
    # Hidden prompts echo no newline under CliRunner, so an error may follow a prompt.
    lines = result.stderr.splitlines()
    return [ln[ln.index("error:") :] for ln in lines if "error:" in ln]


def _keygen(tmp: Path, name: str) -> Path:
    r = run(["custodian", "keygen", name, "--no-passphrase", "--out-dir", tmp / "keys"])
    assert r.exit_code == 0, r.output
    return tmp / "keys" / f"{name}.pub"


def test_done_when_scenario(tmp_path: Path) -> None:
    """Split among custodians with public keys, lose one file, flip a character in another:
    the bad share is named, and the remaining valid shares recover the key."""
    pubs = {n: _keygen(tmp_path, n) for n in ("alice", "bob", "carol", "dave")}
    out = tmp_path / "out"
    args = ["split", "-k", "2", "-n", "4", "--out-dir", out]
    for name, pub in pubs.items():
        args += ["--custodian", f"{name}={pub}"]
    r = run(args, input=SECRET + "\n")
    assert r.exit_code == 0, r.output
    assert SECRET not in r.output
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [
        "share-1-alice.kss",
        "share-2-bob.kss",
        "share-3-carol.kss",
        "share-4-dave.kss",
    ]
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    (out / "share-4-dave.kss").unlink()  # lost
    bob = out / "share-2-bob.kss"
    data = bytearray(bob.read_bytes())
    data[len(data) // 2] ^= 0x20  # a flipped character
    bob.write_bytes(bytes(data))
    ids = []
    for n in ("alice", "bob", "carol"):
        ids += ["-i", tmp_path / "keys" / f"{n}.identity"]

    r = run(["share", "verify", *sorted(out.iterdir())])
    assert r.exit_code == 1
    assert "BAD  " in r.stdout and "share-2-bob.kss" in r.stdout
    assert _error_lines(r) == [f"error: 1 bad share file(s): {bob}"]

    r = run(["combine", *sorted(out.iterdir()), *ids])
    assert r.exit_code == 1
    assert _error_lines(r) == [f"error: {bob}: sealed share checksum mismatch (corrupted)"]
    assert "--skip-bad" in r.stderr

    r = run(["combine", out / "share-1-alice.kss", out / "share-3-carol.kss", *ids, "--reveal"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == SECRET

    r = run(["combine", *sorted(out.iterdir()), *ids, "--skip-bad", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["shares"] == [1, 3] and "secret" not in doc
    assert doc["fingerprint"] == secret_fingerprint(bytes.fromhex(SECRET))
    assert "skipped" in r.stderr and "share-2-bob.kss" in doc["skipped"][0]


def test_text_shares_through_stdin(tmp_path: Path) -> None:
    r = run(["split", "--threshold", "3", "--shares", "5"], input=SECRET)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert len(lines) == 5 and all(ln.startswith("ks1-") for ln in lines)
    assert SECRET not in r.output
    shares = [Share.parse(ln) for ln in lines]
    assert combine(shares[2:]).hex() == SECRET

    r = run(["combine"], input="\n".join(lines[1:4]) + "\n")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == secret_fingerprint(bytes.fromhex(SECRET))
    assert SECRET not in r.output  # fingerprint only

    r = run(["combine", "--reveal"], input="# comment\n" + "\n".join(lines[:3]))
    assert r.stdout.strip() == SECRET

    r = run(["combine"], input="\n".join(lines[:2]))
    assert r.exit_code == 1
    assert _error_lines(r) == ["error: need 3 shares, got 2"]

    typo = lines[1][:10] + ("q" if lines[1][10] != "q" else "p") + lines[1][11:]
    r = run(["combine"], input="\n".join([lines[0], typo, lines[2]]))
    assert r.exit_code == 1
    assert _error_lines(r) == [
        "error: stdin share 2: share checksum mismatch (a typo or corruption)"
    ]

    other = run(["split", "-k", "3", "-n", "5"], input=SECRET).stdout.splitlines()
    r = run(["combine"], input="\n".join([lines[0], lines[1], other[2]]))
    assert r.exit_code == 1
    assert "shares come from different splits: share 3" in _error_lines(r)[0]


def test_out_dir_text_files_and_out_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret.hex"
    secret_file.write_text(SECRET + "\n")
    r = run(["split", "-k", "2", "-n", "3", "--in", secret_file, "--out-dir", tmp_path / "s"])
    assert r.exit_code == 0, r.output
    files = sorted((tmp_path / "s").iterdir())
    assert [f.name for f in files] == ["share-1.kss", "share-2.kss", "share-3.kss"]
    assert files[0].read_text().startswith("# keysplit share 1 of 3")
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    # the directory it made is private too, like init's shares dir and convert's --out-dir
    assert stat.S_IMODE((tmp_path / "s").stat().st_mode) == 0o700
    assert combine([load_share(f.read_bytes()) for f in files]).hex() == SECRET

    out = tmp_path / "recovered.hex"
    r = run(["combine", files[0], files[2], "--out", out])
    assert r.exit_code == 0, r.output
    assert out.read_text().strip() == SECRET
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert SECRET not in r.output
    r = run(["combine", files[0], files[2], "--out", out])
    assert r.exit_code == 1 and "refusing to overwrite" in r.stderr

    r = run(["split", "-k", "2", "-n", "3", "--in", secret_file, "--out-dir", tmp_path / "s"])
    assert r.exit_code == 1 and "refusing to overwrite" in r.stderr

    r = run(["share", "inspect", files[1]])
    assert r.exit_code == 0
    assert "index: 2" in r.stdout and "threshold: 2" in r.stdout
    payload = load_share(files[1].read_bytes()).payload.hex()
    assert payload not in r.stdout and SECRET not in r.stdout
    doc = json.loads(run(["share", "inspect", "--json", files[1]]).stdout)
    assert doc["kind"] == "text" and doc["count"] == 3 and doc["secret_length"] == 16

    r = run(["share", "verify", *files])
    assert r.exit_code == 0 and "enough to recover" in r.stderr
    r = run(["share", "verify", files[0], files[0]])
    assert r.exit_code == 1 and "given twice" in r.stderr


def test_keygen_refuses_a_link_to_nowhere_before_writing_either_file(tmp_path: Path) -> None:
    # It wrote the identity, then failed on the public key: a half-made pair that blocked
    # every retry ("refusing to overwrite ... ana.identity").
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "ana.pub").symlink_to(tmp_path / "nowhere")
    r = run(["custodian", "keygen", "ana", "--no-passphrase", "--out-dir", keys])
    assert r.exit_code == 1
    assert _error_lines(r) == [f"error: refusing to overwrite existing file: {keys / 'ana.pub'}"]
    assert sorted(p.name for p in keys.iterdir()) == ["ana.pub"]


def test_keygen_makes_its_out_dir_private(tmp_path: Path) -> None:
    """(docs walkthrough) the directory ``--out-dir`` creates is 0700 like split's and
    init's: it was the umask's 0755, so every user could list whose identity lies there."""
    r = run(["custodian", "keygen", "ana", "--no-passphrase", "--out-dir", tmp_path / "keys"])
    assert r.exit_code == 0, r.stderr
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700


def test_split_refuses_one_public_key_for_two_custodians(tmp_path: Path) -> None:
    alice = _keygen(tmp_path, "alice")
    as_bob = Recipient("bob", "x25519", Recipient.from_file(alice).public_bytes)
    bob = _write(tmp_path / "bob.pub", as_bob.to_text())
    secret = _write(tmp_path / "secret", SECRET)
    args = ["split", "-k", "2", "-n", "2", "--out-dir", tmp_path / "out", "--in", secret]
    r = run([*args, "--custodian", f"alice={alice}", "--custodian", f"bob={bob}"])
    assert r.exit_code == 1 and "have the same public key" in r.stderr
    assert not (tmp_path / "out").exists()


def test_a_passphrase_that_is_not_utf8_is_taken_as_its_bytes(tmp_path: Path) -> None:
    """A passphrase piped at the hidden prompt (no terminal) in bytes that are not UTF-8 (a
    Latin-1 file): stdin hands them over as surrogates, and encoding them raised a
    UnicodeEncodeError traceback. They are the passphrase's own bytes, as from a file."""
    secret = bytes(range(16))
    shares = split(secret, 2, 2)
    fast = Argon2Params(time_cost=1, memory_kib=64, lanes=1)
    sealed = tmp_path / "dave.kss"
    sealed.write_bytes(seal_share_with_passphrase(shares[0], "dave", b"caf\xe9 \xff", kdf=fast))
    plain = _write(tmp_path / "other.txt", f"{shares[1]}\n")
    p = subprocess.run(
        [KEYSPLIT, "combine", str(sealed), str(plain)],
        input=b"caf\xe9 \xff\n",
        capture_output=True,
        start_new_session=True,  # no terminal: the prompt reads stdin
        timeout=120,
    )
    assert p.returncode == 0 and b"Traceback" not in p.stderr, p.stderr
    assert p.stdout.decode().strip() == secret_fingerprint(secret)


def test_passphrases_identity_and_passphrase_custodian(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    r = run(["custodian", "keygen", "alice", "--out-dir", keys], input="pw-a\npw-a\n")
    assert r.exit_code == 0, r.output
    ident_bytes = (keys / "alice.identity").read_bytes()
    assert Identity.is_encrypted(ident_bytes)
    assert r.stdout.strip() == Identity.from_bytes(ident_bytes, b"pw-a").fingerprint
    assert stat.S_IMODE((keys / "alice.identity").stat().st_mode) == 0o600
    r = run(["custodian", "keygen", "bob", "--out-dir", keys], input="one\ntwo\n")
    assert r.exit_code != 0 and not (keys / "bob.identity").exists()

    r = run(
        [
            "split",
            "-k",
            "2",
            "-n",
            "2",
            "--out-dir",
            tmp_path / "out2",
            "--in",
            _write(tmp_path / "secret", SECRET),
            "--custodian",
            f"alice={keys / 'alice.pub'}",
            "--passphrase-custodian",
            "dave",
        ],
        input="pw-d\npw-d\n",
    )
    assert r.exit_code == 0, r.output
    files = sorted((tmp_path / "out2").iterdir())
    assert [f.name for f in files] == ["share-1-alice.kss", "share-2-dave.kss"]
    doc = json.loads(run(["share", "inspect", "--json", files[1]]).stdout)
    assert doc["protection"] == "passphrase" and doc["custodian"] == "dave"
    assert doc["kdf"]["algorithm"] == "argon2id"

    ident = keys / "alice.identity"
    r = run(["combine", *files, "-i", ident, "--reveal"], input="pw-a\npw-d\n")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == SECRET
    r = run(["combine", *files, "-i", ident], input="pw-a\nwrong\n")
    assert r.exit_code == 1
    assert "wrong passphrase for the share of custodian 'dave'" in _error_lines(r)[0]
    r = run(["combine", *files, "-i", ident], input="nope\n")
    assert r.exit_code == 1
    assert "wrong passphrase for the identity of custodian 'alice'" in _error_lines(r)[0]
    r = run(["combine", *files], input="pw-d\n")
    assert r.exit_code == 1
    assert "sealed to custodian 'alice'" in _error_lines(r)[0]
    assert "hint: add --identity" in r.stderr

    r = run(["share", "verify", *files, "-i", ident], input="pw-a\npw-d\n")
    assert r.exit_code == 0, r.output
    r = run(["share", "verify", *files])  # headers only
    assert r.exit_code == 0, r.output


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_wrong_identity_is_named(tmp_path: Path) -> None:
    alice_pub = _keygen(tmp_path, "alice")
    _keygen(tmp_path, "bob")
    pw = _write(tmp_path / "pw", "x\n")
    r = run(
        [
            "split",
            "-k",
            "2",
            "-n",
            "2",
            "--out-dir",
            tmp_path / "o",
            "--passphrase-file",
            pw,
            "--custodian",
            f"alice={alice_pub}",
            "--passphrase-custodian",
            "erin",
        ],
        input=SECRET,
    )
    assert r.exit_code == 0, r.output
    files = sorted((tmp_path / "o").iterdir())
    r = run(["combine", *files, "-i", tmp_path / "keys" / "bob.identity", "--passphrase-file", pw])
    assert r.exit_code == 1
    assert "custodian 'alice'" in _error_lines(r)[0]
    r = run(["custodian", "show", alice_pub, "--json"])
    assert json.loads(r.stdout)["custodian"] == "alice"


def test_usage_errors(tmp_path: Path) -> None:
    pub = _keygen(tmp_path, "alice")
    r = run(["split", "-k", "2", "-n", "3", "--out-dir", tmp_path, "--custodian", f"alice={pub}"])
    assert r.exit_code == 2 and "3 shares need 3 custodians" in r.stderr
    r = run(["split", "-k", "4", "-n", "3"], input=SECRET)
    assert r.exit_code == 2
    r = run(["split", "-k", "1", "-n", "1", "--custodian", f"bob={pub}", "--out-dir", tmp_path])
    assert r.exit_code == 2
    r = run(
        [
            "split",
            "-k",
            "2",
            "-n",
            "2",
            "--out-dir",
            tmp_path / "x",
            "--custodian",
            f"bob={pub}",
            "--custodian",
            f"alice={pub}",
        ],
        input=SECRET,
    )
    assert r.exit_code == 1 and "public key of 'alice', not 'bob'" in r.stderr
    r = run(["split", "-k", "2", "-n", "3"], input="not hex")
    assert r.exit_code == 1 and _error_lines(r) == ["error: the secret must be given in hex"]
    r = run(["split", "-k", "2", "-n", "3"], input="00" * 65)
    assert r.exit_code == 2
    r = run(["custodian", "keygen", "bad name", "--no-passphrase", "--out-dir", tmp_path])
    assert r.exit_code == 2
    r = run(["custodian", "keygen", "alice", "--no-passphrase", "--out-dir", tmp_path / "keys"])
    assert r.exit_code == 1 and "refusing to overwrite" in r.stderr
    r = run(["share", "inspect", tmp_path / "missing"])
    assert r.exit_code == 1 and "no such file" in r.stderr
    r = run(["share", "inspect", pub])
    assert r.exit_code == 1 and "not a keysplit share" in r.stderr
    r = run(["combine"], input="")
    assert r.exit_code == 1 and "no shares given" in r.stderr
    r = runner.invoke(app, ["combine"], input=b"\xff\xfe\x00binary")
    assert r.exit_code == 1 and "stdin is not text" in r.stderr
    r = run(["combine", tmp_path / "keys" / "alice.identity"])
    assert r.exit_code == 1 and "not a keysplit share" in r.stderr
    r = run(["combine", pub])
    assert r.exit_code == 1 and "not a keysplit share: a custodian's public key" in r.stderr


def test_post_quantum_custodian(tmp_path: Path) -> None:
    r = run(["custodian", "keygen", "quinn", "--pq", "--no-passphrase", "--out-dir", tmp_path])
    assert r.exit_code == 0, r.output
    assert (
        json.loads(run(["custodian", "show", "--json", tmp_path / "quinn.pub"]).stdout)["suite"]
        == "mlkem768-x25519"
    )
    pw = _write(tmp_path / "pw", "pp\n")
    r = run(
        [
            "split",
            "-k",
            "2",
            "-n",
            "2",
            "--out-dir",
            tmp_path / "o",
            "--custodian",
            f"quinn={tmp_path / 'quinn.pub'}",
            "--passphrase-custodian",
            "pat",
            "--passphrase-file",
            pw,
        ],
        input=SECRET,
    )
    assert r.exit_code == 0, r.output
    files = sorted((tmp_path / "o").iterdir())
    doc = json.loads(run(["share", "inspect", "--json", files[0]]).stdout)
    assert doc["protection"] == "mlkem768-x25519"
    r = run(
        ["combine", *files, "-i", tmp_path / "quinn.identity", "--passphrase-file", pw, "--reveal"]
    )
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == SECRET


def test_passphrases_are_nfc_normalized(tmp_path: Path) -> None:
    decomposed = _write(tmp_path / "pw1", "cafe\u0301\n")  # e + combining accent
    composed = _write(tmp_path / "pw2", "caf\u00e9\n")
    r = run(
        [
            "split",
            "-k",
            "2",
            "-n",
            "2",
            "--out-dir",
            tmp_path / "o",
            "--passphrase-file",
            decomposed,
            "--passphrase-custodian",
            "a",
            "--passphrase-custodian",
            "b",
        ],
        input=SECRET,
    )
    assert r.exit_code == 0, r.output
    r = run(
        ["combine", *sorted((tmp_path / "o").iterdir()), "--passphrase-file", composed, "--reveal"]
    )
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == SECRET


def test_split_into_a_directory_writes_every_share_or_none(tmp_path: Path) -> None:
    """(files red team, 'found, not fixed') split wrote its shares one by one: with
    share-3.kss already taken it wrote share-1 and share-2 of a new set, then failed, so the
    directory held two sets mixed and a rerun stopped at share-1. Now a taken name is
    refused before anything is written, and the directory is as it was."""
    secret_file = tmp_path / "secret.hex"
    secret_file.write_text(SECRET + "\n")
    out = tmp_path / "s"
    out.mkdir()
    (out / "share-3.kss").write_text("an older set's share\n")
    r = run(["split", "-k", "2", "-n", "3", "--in", secret_file, "--out-dir", out])
    assert r.exit_code == 1
    assert _error_lines(r) == [f"error: refusing to overwrite existing file: {out / 'share-3.kss'}"]
    # nor does it announce the set it did not write ("split ... set id X" before the error)
    assert "set id" not in r.stderr, r.stderr
    assert sorted(f.name for f in out.iterdir()) == ["share-3.kss"]
    assert (out / "share-3.kss").read_text() == "an older set's share\n"


def test_a_share_in_clear_readable_by_others_is_warned_of(tmp_path: Path) -> None:
    """(red team) A share file that is not sealed (``ks1-`` text or binary) is the share
    itself; one with mode 0644 (written by a script, copied with cp) was read silently.
    Warned of now, naming the file, as an identity without a passphrase is; a 0600 one and
    a sealed one are not."""
    shares = split(bytes.fromhex(SECRET), 2, 2)
    loose, kept = tmp_path / "loose.txt", tmp_path / "kept.txt"
    loose.write_bytes(shares[0].to_bytes())
    kept.write_bytes(shares[1].to_bytes())
    loose.chmod(0o644)
    kept.chmod(0o600)
    r = run(["combine", loose, kept, "--reveal"])
    said = "".join(r.stderr.split())  # the console wraps long lines, even inside a path
    assert r.exit_code == 0 and SECRET in r.stdout, r.stderr
    warning = f"warning: share file {loose} has no sealing (the share in clear) and is readable"
    assert "".join(warning.split()) in said
    assert "".join(f"(mode 0644); run: chmod 600 {loose}".split()) in said
    assert r.stderr.count("warning: share file") == 1


def test_combine_names_the_custodian_of_a_share_that_does_not_match(tmp_path: Path) -> None:
    """A share off the others' polynomial was named by index alone ("share 2 does not
    match the others"), though its file names its custodian; now "share 2 (bea)"."""
    import dataclasses

    from keysplit.ceremony import share_file_text

    shares = split(bytes.fromhex(SECRET), 2, 3)
    shares[1] = dataclasses.replace(shares[1], payload=bytes(len(shares[1].payload)))
    files = []
    for s, name in zip(shares, ("ana", "bea", "cy"), strict=True):
        files.append(tmp_path / f"{name}.kss")
        files[-1].write_text(share_file_text(s, name))
    r = run(["combine", *files])
    assert r.exit_code == 1
    (line,) = _error_lines(r)
    assert line.startswith("error: share 2 (bea) does not match the others"), line
    assert "hint: leave out share 2 (bea)" in r.stderr
