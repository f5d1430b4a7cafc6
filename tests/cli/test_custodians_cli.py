"""CLI: share prove / share print / share convert-vault (cli/commands/share.py, convert.py)."""

from __future__ import annotations

import base64
import io
import random
import secrets
from pathlib import Path

import pypdf
import pytest
import shamir_mnemonic
import zxingcpp
from keysplit_cli import _common
from keysplit_cli.app import app
from typer.testing import CliRunner
from vault_reference import REF, init_output

from keysplit import (
    Identity,
    Share,
    combine,
    load_share,
    seal_share_with_passphrase,
    secret_fingerprint,
    split,
)
from keysplit.proof import prove

runner = CliRunner()
SECRET_HEX = "2b7e151628aed2a6abf7158809cf4f3c"


def run(args: list[object], input: str | None = None):
    result = runner.invoke(app, [str(a) for a in args], input=input)
    assert "Traceback" not in result.output
    return result


def cv(words: str, *paths: object, command: str = "convert-vault"):
    """``keysplit share convert-vault WORDS... PATHS...`` (or ``share convert``, the same)."""
    return run(["share", command, *words.split(), *paths])


def _keygen(tmp: Path, name: str) -> tuple[Path, Path]:
    r = run(["custodian", "keygen", name, "--no-passphrase", "--out-dir", tmp / "keys"])
    assert r.exit_code == 0, r.output
    return tmp / "keys" / f"{name}.pub", tmp / "keys" / f"{name}.identity"


def _identities(tmp: Path, names: list[str]) -> dict[str, tuple[Path, Path]]:
    return {n: _keygen(tmp, n) for n in names}


@pytest.mark.parametrize("command", ["convert-vault", "convert"])
def test_vault_3_of_5_into_sealed_keysplit_and_back_to_vault(tmp_path: Path, command: str) -> None:
    root = secrets.token_bytes(32)
    vkeys = REF.split(root, 5, 3, random.Random(9))
    init = tmp_path / "init.txt"
    init.write_text(init_output(vkeys, 3))
    people = _identities(tmp_path, ["ana", "ben", "cy", "dee", "eve"])
    custodians = [x for name, (pub, _) in people.items() for x in ("-c", f"{name}={pub}")]
    r = cv(
        "--from vault --to keysplit",
        *custodians,
        "--out-dir",
        tmp_path / "ks",
        init,
        command=command,
    )
    assert r.exit_code == 0, r.output
    assert "checked: all 5 Vault keys lie on one polynomial" in r.stderr
    assert secret_fingerprint(root) in r.stderr and root.hex() not in r.output
    files = {p.name.split(".")[0]: p for p in (tmp_path / "ks").iterdir()}
    assert sorted(files) == sorted(people)
    ids = [people[n][1] for n in ("ana", "cy", "eve")]
    opened = [
        load_share(files[n].read_bytes(), identity=Identity.from_bytes(people[n][1].read_bytes()))
        for n in ("ana", "cy", "eve")
    ]
    assert combine(opened) == root
    back = [x for i in ids for x in ("--identity", i)]
    r = cv(
        "--from keysplit --to vault -t 3 -n 5",
        *back,
        files["ana"],
        files["cy"],
        files["eve"],
        command=command,
    )
    assert r.exit_code == 0, r.output
    keys = [base64.b64decode(ln.split(": ", 1)[1]) for ln in r.stdout.splitlines()]
    assert len(keys) == 5
    assert REF.combine(keys[2:]) == root and REF.combine([keys[0], keys[4], keys[1]]) == root


def test_vault_import_with_exactly_k_keys_warns_and_without_threshold_refuses(
    tmp_path: Path,
) -> None:
    vkeys = REF.split(b"v" * 32, 5, 3, random.Random(4))
    plain = tmp_path / "three.txt"
    plain.write_text("".join(base64.b64encode(k).decode() + "\n" for k in vkeys[:3]))
    r = cv("--from vault --to keysplit -n 3", plain)
    assert r.exit_code == 2 and "--source-threshold" in r.stderr
    r = cv("--from vault --to keysplit -n 3 --source-threshold 3", plain)
    assert r.exit_code == 0, r.output
    assert "warning: exactly 3 Vault keys given" in " ".join(r.stderr.split())
    assert combine([Share.parse(ln) for ln in r.stdout.split()[:3]]) == b"v" * 32
    bad = bytearray(vkeys[3])
    bad[0] ^= 1
    init = tmp_path / "init.txt"
    init.write_text(init_output([*vkeys[:3], bytes(bad), vkeys[4]], 3))
    r = cv("--from vault --to keysplit", init)
    assert r.exit_code == 1
    assert r.stderr.startswith("error: Vault key 4 (x = ")


def test_vault_to_slip39_and_usage_errors(tmp_path: Path) -> None:
    vkeys = REF.split(b"w" * 16, 3, 2, random.Random(5))
    src = tmp_path / "k.txt"
    src.write_text(init_output(vkeys, 2))
    r = cv("--from vault --to slip39 -t 2 -n 3 --no-passphrase --iteration-exponent 0", src)
    assert r.exit_code == 0, r.output
    assert shamir_mnemonic.combine_mnemonics(r.stdout.strip().splitlines()[1:]) == b"w" * 16
    for args in (
        ["--from", "vault", "--to", "vault", src],
        ["--from", "keysplit", "--to", "vault", src],  # no --threshold
        ["--from", "vault", "--to", "slip39", "--set-id", "00" * 8, src],
    ):
        r = run(["share", "convert-vault", *args])
        assert r.exit_code == 2 and r.stderr.startswith("error:"), r.output


def test_share_prove_prints_the_code_of_the_opened_share(tmp_path: Path) -> None:
    pub, ident = _keygen(tmp_path, "ana")
    pub_b, _ = _keygen(tmp_path, "bob")
    out = tmp_path / "out"
    seal = [f"--custodian=ana={pub}", f"--custodian=bob={pub_b}"]
    r = run(["split", "-k", 2, "-n", 2, "--out-dir", out, *seal], input=SECRET_HEX + "\n")
    assert r.exit_code == 0, r.output
    sealed = out / "share-1-ana.kss"
    share = load_share(sealed.read_bytes(), identity=Identity.from_bytes(ident.read_bytes()))
    r = run(["share", "prove", sealed, "--identity", ident])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == prove(share)
    assert "custodian ana" in r.stderr
    r = run(["share", "prove", sealed, "--json", "--identity", ident])
    assert '"custodian": "ana"' in r.stdout and f'"index": {share.index}' in r.stdout
    r = run(["share", "prove", sealed])  # no identity: one error line
    assert r.exit_code == 1 and r.stderr.startswith("error:")


def test_share_print_writes_a_pdf_whose_qr_decodes_to_the_share(tmp_path: Path) -> None:
    shares = split(bytes(16), 2, 3)
    plain = tmp_path / "s1.txt"
    plain.write_text(f"# keysplit share 1 of 3 for custodian dee (any 2)\n{shares[0]}\n")
    nameless = tmp_path / "s2.txt"
    nameless.write_text(f"{shares[1]}\n")
    out = tmp_path / "sheet.pdf"
    r = run(["share", "print", plain, nameless, "--out", out])
    assert r.exit_code == 1 and "give --custodian" in r.stderr
    r = run(["share", "print", plain, "--out", out, "--keyring-id", "kr-9"])
    assert r.exit_code == 0, r.output
    page = pypdf.PdfReader(io.BytesIO(out.read_bytes())).pages[0]
    text = page.extract_text()
    assert "dee" in text and "kr-9" in text and shares[0].fingerprint in text
    decoded = [
        res.text
        for img in page.images
        for res in zxingcpp.read_barcodes(img.image)
        if res.format.name == "QRCode"
    ]
    assert [Share.parse(t) for t in decoded] == [shares[0]]
    r = run(["share", "print", plain, "--out", out])
    assert r.exit_code == 1 and "refusing to overwrite" in r.stderr


def test_share_print_keeps_a_sealed_share_sealed(tmp_path: Path) -> None:
    """A sealed share file prints sealed (no identity asked for, no clear share on paper)."""
    from keysplit import Identity, load_share, seal_share

    ana = Identity.generate("ana")
    share = split(bytes(16), 2, 3)[0]
    sealed = tmp_path / "ana.g1.kss"
    sealed.write_bytes(seal_share(share, ana.recipient))
    out = tmp_path / "ana.pdf"
    r = run(["share", "print", sealed, "--out", out])
    assert r.exit_code == 0, r.output
    page = pypdf.PdfReader(io.BytesIO(out.read_bytes())).pages[0]
    text = page.extract_text()
    assert "ks1" not in text.lower() and "identity file of custodian ana" in text
    (qr,) = [
        res.text
        for img in page.images
        for res in zxingcpp.read_barcodes(img.image)
        if res.format.name == "QRCode"
    ]
    assert "ks1" not in qr.lower() and load_share(qr.encode(), identity=ana) == share
    typed = tmp_path / "typed.kss"
    typed.write_text(qr.lower().replace("-", " ") + "\n")
    r = run(["share", "inspect", typed])
    assert r.exit_code == 0 and share.fingerprint in r.output


def test_share_print_refuses_a_sealed_share_no_qr_code_can_hold(tmp_path: Path) -> None:
    """A sealed share file whose header and checksum are valid but whose ciphertext is
    longer than any method makes (edited, or foreign): segno's DataOverflowError escaped as
    a traceback. Now one error line naming the file, and no PDF; a corrupted file is named
    too."""
    from keysplit import Identity, seal_share
    from keysplit.custody import _container, base

    sealed = seal_share(split(bytes(16), 2, 3)[0], Identity.generate("ana").recipient)
    parsed = _container.parse_sealed(sealed, base.methods())
    big = tmp_path / "big.kss"
    big.write_bytes(_container.frame_sealed(parsed.header, bytes(8000)))
    out = tmp_path / "out.pdf"
    r = run(["share", "print", big, "--out", out])
    assert r.exit_code == 1 and r.stderr.startswith(f"error: {big}: ")
    assert "too large for a QR code" in r.stderr and not out.exists()
    bad = tmp_path / "bad.kss"
    bad.write_bytes(sealed[:-1] + bytes([sealed[-1] ^ 1]))
    r = run(["share", "print", bad, "--out", out])
    assert r.exit_code == 1 and r.stderr.startswith(f"error: {bad}: ") and not out.exists()


def test_vault_import_to_as_many_custodians_as_its_threshold_needs_threshold(
    tmp_path: Path,
) -> None:
    """Issue 22 item 6: three -c and a Vault threshold of 3 was a silent 3-of-3 set."""
    vkeys = REF.split(b"w" * 32, 5, 3, random.Random(5))
    init = tmp_path / "init.txt"
    init.write_text(init_output(vkeys, 3))
    people = _identities(tmp_path, ["ana", "ben", "cy"])
    custodians = [x for name, (pub, _) in people.items() for x in ("-c", f"{name}={pub}")]
    r = cv("--from vault --to keysplit", *custodians, "--out-dir", tmp_path / "a", init)
    assert r.exit_code == 2 and "every custodian would be needed" in r.stderr
    assert "--threshold" in r.stderr and not (tmp_path / "a").exists()
    r = cv("--from vault --to keysplit -t 3", *custodians, "--out-dir", tmp_path / "b", init)
    assert r.exit_code == 0 and "warning: 3 of 3" in " ".join(r.stderr.split())
    r = cv("--from vault --to keysplit -t 2", *custodians, "--out-dir", tmp_path / "c", init)
    assert r.exit_code == 0 and "warning: 3 of 3" not in r.stderr
    assert len(list((tmp_path / "c").iterdir())) == 3


def test_custodian_passphrase_file_takes_name_equals_file(tmp_path: Path) -> None:
    """Issue 22 item 6: one passphrase file per custodian, as --passphrase-file elsewhere."""
    out = tmp_path / "out"
    pws = {}
    for name in ("ana", "ben"):
        pws[name] = tmp_path / f"{name}.pw"
        pws[name].write_text(f"{name}-own-passphrase\n")
    r = run(
        ["split", "-k", 2, "-n", 2, "--out-dir", out, "--passphrase-custodian", "ana",
         "--passphrase-custodian", "ben", "--passphrase-file", pws["ana"]],
        input=SECRET_HEX + "\n",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    # ben's share sealed under his own passphrase (the split used ana's for both: reseal)
    ben = out / "share-2-ben.kss"
    share = load_share(ben.read_bytes(), passphrase=b"ana-own-passphrase")
    ben.unlink()
    ben.write_bytes(seal_share_with_passphrase(share, "ben", b"ben-own-passphrase",
                                               kdf=_common.KDF))  # fmt: skip
    files = [out / "share-1-ana.kss", ben]
    spec = [f"--custodian-passphrase-file=ana={pws['ana']}",
            f"--custodian-passphrase-file=ben={pws['ben']}"]  # fmt: skip
    r = cv("--from keysplit --to vault -t 2 -n 3", *spec, *files, command="convert")
    assert r.exit_code == 0, r.output
    assert len(r.stdout.split("Unseal Key")) == 4
    r = cv("--from keysplit --to vault -t 2 -n 3", spec[0], *files, command="convert")
    assert r.exit_code == 1  # ben's share: no passphrase for him, and no prompt to ask at
