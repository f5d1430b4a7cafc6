"""The custodians' commands: ``keysplit share prove``, ``share print``, ``share convert-vault``.

A thin shell over :mod:`keysplit.proof`, :mod:`keysplit.sheet` and :mod:`keysplit.vault`:
share files are opened the way ``keysplit combine`` opens them, new share files are sealed
and written the way ``keysplit init`` writes them, and the secret is never printed.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from pathlib import Path

import typer

from keysplit import (
    KeysplitError,
    Share,
    secret_fingerprint,
    slip39,
    vault,
)
from keysplit import combine as ks_combine
from keysplit import convert as ks_convert
from keysplit import proof as ks_proof
from keysplit import sheet as ks_sheet
from keysplit.ceremony import WrittenShare
from keysplit.custody import is_sealed, read_share_file, sealed_share_info
from keysplit.files import atomic_write

from . import _common
from ._common import EXIT_USAGE, fail, handle_errors, info, relabel
from ._opener import Passphrases, ShareOpener
from .cmd_ceremony import (
    CUSTODIAN_OPTION_HELP,
    _parse_custodians,
    _print_share_table,
)
from .cmd_convert import (
    _parse_groups,
    _passphrase,
    _read_keysplit,
    _read_slip39,
    _read_sources,
    _write,
)

__all__ = ["app"]

app = typer.Typer()
"""Joins the ``share`` group (cmd_shares adds it after ``convert``)."""

_WHO = re.compile(r"^#.* for custodian ([A-Za-z0-9][A-Za-z0-9._@+-]{0,63}) ", re.MULTILINE)

IDENTITY_HELP = "Identity file opening a share sealed to a public key (repeatable)."
UNLOCK_HELP = "Passphrase of a passphrase-sealed share, or of the identity (else a prompt)."


def _open_share(path: Path, opener: ShareOpener) -> tuple[Share, str | None]:
    """The share in ``path`` and its custodian's name when the file records it."""
    data = read_share_file(path)
    share = opener.open(str(path), data)
    if is_sealed(data):
        return share, sealed_share_info(data).custodian
    m = (
        _WHO.search(data.decode("utf-8", errors="replace"))
        if not data.startswith(b"KSSH")
        else None
    )
    return share, m.group(1) if m else None


# -- share prove --------------------------------------------------------------------------


@app.command("prove")
@handle_errors
def prove_cmd(
    file: Path = typer.Argument(..., help="Your (new) share file."),
    identity: list[Path] = typer.Option([], "--identity", "-i", help=IDENTITY_HELP),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file", help=UNLOCK_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print a proof-of-possession code for your share, for a '--verify' ceremony.

    Opens the share (so it proves you can), then prints a short code bound to the share
    set and your index. The code reveals nothing about the share; give it to the
    ceremony operator. Example: keysplit share prove ana.g2.kss --identity ana.id
    """
    share, who = _open_share(file, ShareOpener(identity, Passphrases.single(passphrase_file)))
    code = ks_proof.prove(share)
    if as_json:
        doc = {"custodian": who, "set_id": share.set_id_hex, "index": share.index, "code": code}
        typer.echo(json.dumps(doc))
        return
    info(
        f"proof of possession of share {share.index} of set {share.set_id_hex}"
        + (f" (custodian {who})" if who else "")
        + ": give this code to the ceremony operator"
    )
    typer.echo(code)


# -- share print --------------------------------------------------------------------------


@app.command("print")
@handle_errors
def print_cmd(
    files: list[Path] = typer.Argument(..., help="Share files; one page each."),
    out: Path = typer.Option(..., "--out", "-o", help="The PDF to write (0600, not replaced)."),
    identity: list[Path] = typer.Option([], "--identity", "-i", help=IDENTITY_HELP),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file", help=UNLOCK_HELP),
    custodian: str | None = typer.Option(
        None, "--custodian", help="Custodian name for a plain share file that does not say."
    ),
    keyring_id: str | None = typer.Option(
        None, "--keyring-id", help="Keyring id to print (see 'keysplit status')."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out file."),
) -> None:
    """Write printable share sheets: one PDF page per share, with text, QR code, instructions.

    A sheet holds its share file in the same protection: a sealed share is printed sealed
    (its KSSS- text; no identity needed) and says who opens it, a plain one in the clear.
    Keep it like the share file (a safe); shred it when the keyring is rekeyed. Needs the
    'sheets' extra (segno, fpdf2).
    Example: keysplit share print ana.g1.kss --out ana-sheet.pdf
    """
    opener = ShareOpener(identity, Passphrases.single(passphrase_file))
    sheets: list[ks_sheet.ShareSheet | ks_sheet.SealedSheet] = []
    for path in files:
        data = read_share_file(path)
        if is_sealed(data):
            try:
                sheets.append(ks_sheet.SealedSheet(data, keyring_id=keyring_id))
            except ValueError as exc:
                fail(str(exc), code=EXIT_USAGE)
            continue
        share, who = _open_share(path, opener)
        name = who or custodian
        if name is None:
            fail(f"{path}: the file does not name its custodian", hint="give --custodian NAME")
        try:
            sheets.append(ks_sheet.ShareSheet(share, name, keyring_id=keyring_id))
        except ValueError as exc:
            fail(str(exc), code=EXIT_USAGE)
    ks_sheet.write_pdf(out, sheets, overwrite=force)
    info(f"wrote {len(sheets)} share sheet(s) to {out} (secret: store it offline)")


# -- share convert-vault ------------------------------------------------------------------


class VEnc(StrEnum):
    base64 = "base64"
    hex = "hex"


class VFmt(StrEnum):
    vault = "vault"
    keysplit = "keysplit"
    slip39 = "slip39"


def _read_vault(sources: list[tuple[str, bytes]]) -> vault.VaultKeys:
    keys: list[bytes] = []
    stated: set[tuple[int | None, int | None]] = set()
    kinds = set()
    for name, blob in sources:
        try:
            vk = vault.parse_vault(blob.decode("utf-8", errors="replace"))
        except KeysplitError as exc:
            raise relabel(exc, name) from None
        keys += vk.keys
        kinds.add(vk.kind)
        if vk.threshold is not None:
            stated.add((vk.threshold, vk.count))
    if len(stated) > 1 or len(kinds) > 1:
        raise KeysplitError("the inputs come from different Vault initializations")
    t, n = stated.pop() if stated else (None, None)
    return vault.VaultKeys(tuple(keys), t, n, kinds.pop())


def _vault_import_note(n_keys: int, k: int) -> None:
    """What could be checked (see keysplit.vault): say it every time, not only in the docs."""
    if n_keys > k:
        info(
            f"checked: all {n_keys} Vault keys lie on one polynomial of degree {k - 1} "
            f"({n_keys - k} more than the threshold {k}), so no single key is mistyped"
        )
    else:
        info(
            f"[yellow]warning:[/] exactly {k} Vault keys given: Vault keys carry no check "
            "value, so a mistyped or foreign key would give a wrong key without any error. "
            "Give one key more to check them, or confirm the fingerprint below by unsealing "
            "Vault with the new keys before destroying the old ones."
        )


@app.command("convert-vault")
@handle_errors
def convert_vault_cmd(
    inputs: list[Path] = typer.Argument(
        None,
        help="Source files ('vault operator init' output, JSON, or one key a line; "
        "share files for keysplit). '-' or none: stdin.",
    ),
    from_: VFmt = typer.Option(..., "--from", help="Format of the source shares."),
    to: VFmt = typer.Option(..., "--to", help="Format of the new shares."),
    threshold: int | None = typer.Option(
        None, "--threshold", "-t", help="Threshold of the new shares (default: the source's)."
    ),
    count: int | None = typer.Option(
        None, "--count", "-n", help="Number of new shares (default: the source's)."
    ),
    source_threshold: int | None = typer.Option(
        None,
        "--source-threshold",
        help="Vault source: its key threshold, when the input does not state it "
        "('vault status' shows it). Give one key more than it so that keys are checked.",
    ),
    custodian: list[str] = typer.Option(
        [],
        "--custodian",
        "-c",
        metavar="NAME[=PUBFILE]",
        help="keysplit target: " + CUSTODIAN_OPTION_HELP + " Without it: plain ks1 text.",
    ),
    new_passphrase_file: list[str] = typer.Option(
        [],
        "--new-passphrase-file",
        metavar="[NAME=]FILE",
        help="keysplit target: passphrase for a NAME-only --custodian (else a prompt).",
    ),
    set_id: str | None = typer.Option(
        None, "--set-id", help="keysplit target: reuse this share-set id (16 hex digits)."
    ),
    identity: list[Path] = typer.Option([], "--identity", help="keysplit source: " + IDENTITY_HELP),
    custodian_passphrase_file: Path | None = typer.Option(
        None, "--custodian-passphrase-file", help="keysplit source: " + UNLOCK_HELP
    ),
    vault_encoding: VEnc = typer.Option(
        VEnc.base64, "--vault-encoding", help="Vault target: base64 (as vault prints) or hex."
    ),
    groups: str | None = typer.Option(
        None, "--groups", help="SLIP-39 target: member groups, e.g. '1of1,3of5'."
    ),
    group_threshold: int = typer.Option(1, "--group-threshold", help="SLIP-39 target."),
    iteration_exponent: int = typer.Option(1, "--iteration-exponent", help="SLIP-39 target."),
    passphrase_file: Path | None = typer.Option(
        None, "--passphrase-file", help="SLIP-39 passphrase from this file (else a prompt)."
    ),
    no_passphrase: bool = typer.Option(False, "--no-passphrase", help="SLIP-39: empty passphrase."),
    out_dir: Path | None = typer.Option(
        None, "--out-dir", help="Write one 0600 file per share here instead of stdout."
    ),
) -> None:
    """Take HashiCorp Vault / OpenBao unseal keys into keysplit custody, or hand them back.

    --from vault --to keysplit|slip39: combine the Vault keys (checked when more than the
    threshold are given; with exactly the threshold nothing can be checked) and re-split
    the key, sealed to the custodians with --custodian NAME=PUBFILE. --from keysplit|slip39
    --to vault: recover the key (fully verified for keysplit shares) and print new keys
    for 'vault operator unseal'. Runs in memory; do it on an offline machine.
    Example: keysplit share convert-vault --from vault --to keysplit -c ana=ana.pub
    -c ben=ben.pub -c cy=cy.pub -t 2 --out-dir shares init.txt
    """
    if (from_ is VFmt.vault) == (to is VFmt.vault):
        fail("exactly one of --from and --to must be vault", code=EXIT_USAGE)
    if (custodian or set_id) and to is not VFmt.keysplit:
        fail("--custodian and --set-id apply to --to keysplit", code=EXIT_USAGE)
    if to is VFmt.vault and threshold is None:
        fail(
            "--to vault needs --threshold: Vault combines exactly as many keys as its seal "
            "configuration's threshold ('vault status'), so the new threshold must not exceed it",
            code=EXIT_USAGE,
        )
    if custodian and out_dir is None:
        fail("sealed shares are files: give --out-dir", code=EXIT_USAGE)
    set_id_bytes = None
    if set_id is not None:
        set_id_bytes = bytes.fromhex(set_id) if re.fullmatch(r"[0-9a-fA-F]{16}", set_id) else None
        if set_id_bytes is None:
            fail("--set-id takes 16 hex digits", code=EXIT_USAGE)
    sources = _read_sources(inputs)
    stdin_busy = any(name == "stdin" for name, _ in sources)
    passphrase = (
        _passphrase(passphrase_file, no_passphrase, to is VFmt.slip39, stdin_busy)
        if VFmt.slip39 in (from_, to)
        else b""
    )
    custody = (
        _parse_custodians(custodian, new_passphrase_file, False, "--new-passphrase-file")
        if custodian
        else []
    )

    src_t = src_n = None
    try:
        if from_ is VFmt.vault:
            vk = _read_vault(sources)
            k = source_threshold or vk.threshold
            if k is None:
                fail(
                    "the input does not state the Vault key threshold: pass --source-threshold K",
                    hint="give one key more than K so that the keys are checked",
                    code=EXIT_USAGE,
                )
            if vk.threshold is not None and source_threshold not in (None, vk.threshold):
                fail(
                    f"--source-threshold {source_threshold} contradicts the input "
                    f"(threshold {vk.threshold})",
                    code=EXIT_USAGE,
                )
            secret = vault.combine_vault(vk.keys, threshold=k)
            _vault_import_note(len(vk.keys), k)
            src_t, src_n, n_in = k, vk.count, len(vk.keys)
        elif from_ is VFmt.keysplit:
            ks = _read_keysplit(sources, identity, custodian_passphrase_file)
            secret = ks_combine(ks)
            src_t, src_n, n_in = ks[0].threshold, ks[0].count, len(ks)
        else:
            sl = _read_slip39(sources)
            secret = slip39.combine_shares(sl, passphrase=passphrase)
            src_t = sl[0].member_threshold if sl[0].group_count == 1 else None
            n_in = len(sl)
    except ValueError as exc:
        fail(str(exc), code=EXIT_USAGE)

    t = threshold if threshold is not None else src_t
    n = count if count is not None else (len(custody) or src_n)
    info(
        f"recovered a {len(secret)}-byte key from {n_in} share(s); "
        f"fingerprint {secret_fingerprint(secret)}"
    )
    try:
        if to is VFmt.slip39:
            group_list = _parse_groups(groups) if groups else None
            if group_list is None:
                if t is None or n is None:
                    fail("say how to split: --threshold and --count (or --groups)", code=EXIT_USAGE)
                group_list = [(t, n)]
            made = ks_convert.keysplit_to_slip39(
                ks_convert.split_with_set_id(secret, 2, 2),
                group_threshold,
                group_list,
                passphrase=passphrase,
                iteration_exponent=iteration_exponent,
            )
            items = [
                (f"slip39-g{g + 1}-m{m + 1}.txt", f"{words}\n")
                for g, members in enumerate(made)
                for m, words in enumerate(members)
            ]
            _write(out_dir, items)
        elif t is None or n is None:
            fail("say how to split: --threshold and --count", code=EXIT_USAGE)
        elif to is VFmt.vault:
            keys = vault.split_vault(secret, t, n)
            enc: vault.Encoding = "hex" if vault_encoding is VEnc.hex else "base64"
            if out_dir is None:
                typer.echo(vault.format_vault(keys, encoding=enc), nl=False)
            else:
                _write(
                    out_dir,
                    [
                        (f"vault-unseal-key-{i}.txt", vault.encode_key(key, enc) + "\n")
                        for i, key in enumerate(keys, start=1)
                    ],
                )
            info(
                f"{n} new Vault keys, any {t} recover the unseal key; Vault still asks for the "
                "number of keys in its seal configuration. Paste each key at the prompt of "
                "'vault operator unseal' (not as an argument: argv is visible to other users)."
            )
        else:
            new = ks_convert.split_with_set_id(secret, t, n, set_id=set_id_bytes)
            if custody:
                if len(custody) != n:
                    fail(f"{n} shares need {n} custodians, got {len(custody)}", code=EXIT_USAGE)
                assert out_dir is not None
                out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                rows = []
                for c, share in zip(custody, new, strict=True):
                    ext = "kss" if c.recipient or c.passphrase else "txt"
                    path = out_dir / f"{c.name}.{share.set_id_hex}.{ext}"
                    atomic_write(path, c.seal(share, kdf=_common.KDF), overwrite=False)
                    where = str(path)
                    rows.append(
                        WrittenShare(c.name, share.index, where, share.fingerprint, c.protection)
                    )
                _print_share_table(f"{t}-of-{n} keysplit shares, set {new[0].set_id_hex}", rows)
            else:
                _write(out_dir, [(f"share-{s.set_id_hex}-{s.index}.txt", f"{s}\n") for s in new])
    except ValueError as exc:
        fail(str(exc), code=EXIT_USAGE)
    finally:
        del secret
    info("the old shares still recover the key: destroy them once the new ones are verified")
