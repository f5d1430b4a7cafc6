"""``keysplit share convert|convert-vault``: move a secret between share formats
(keysplit, SLIP-39, pycryptodome/ssss, HashiCorp Vault/OpenBao unseal keys).

Reads shares from files or stdin (never argv), combines them with every check of the
source format, re-splits the secret in the target format and writes the new shares to
stdout or to ``--out-dir`` (one 0600 file each). The secret itself is never written or
printed; only its fingerprint is shown, so both sides of a migration can be compared.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from keysplit import KeysplitError

from .. import _common
from .._common import EXIT_USAGE, check_output_dir, fail, handle_errors, info
from .._convert_io import (
    ALLOW_EXPENSIVE_KDF_CONVERT_HELP,
    CUSTODIAN_PASSPHRASE,
    parse_groups,
    read_keysplit,
    read_pycryptodome,
    read_slip39,
    read_sources,
    read_vault,
    slip39_confirmer,
    slip39_passphrase,
    write_items,
)
from .._custodians import CUSTODIAN_OPTION_HELP, parse_custodians
from .._opener import ALLOW_EXPENSIVE_KDF
from .._output import print_share_table

if TYPE_CHECKING:
    from keysplit.interop import vault

__all__ = ["app"]

app = typer.Typer()

IDENTITY_HELP = "Identity file opening a share sealed to a public key (repeatable)."
CUSTODIAN_PASSPHRASE_HELP = (
    "keysplit source: FILE, or NAME=FILE for custodian NAME only: passphrase of "  # noqa: S105
    "passphrase-sealed shares and encrypted identities (repeatable; else a prompt)."
)


class Fmt(StrEnum):
    keysplit = "keysplit"
    slip39 = "slip39"
    pycryptodome = "pycryptodome"
    vault = "vault"


@app.command("convert")
@handle_errors
def convert_cmd(
    inputs: list[Path] = typer.Argument(
        None,
        metavar="FILE",
        help="Files holding the source shares (one per line; '-' or none: stdin).",
    ),
    from_: Fmt = typer.Option(..., "--from", help="Format of the source shares."),
    to: Fmt = typer.Option(..., "--to", help="Format of the new shares."),
    threshold: int | None = typer.Option(
        None, "--threshold", "-t", help="Threshold of the new shares (default: the source's)."
    ),
    count: int | None = typer.Option(
        None, "--count", "-n", help="Number of new shares (default: the source's)."
    ),
    groups: str | None = typer.Option(
        None, "--groups", help="SLIP-39 target: member groups, e.g. '1of1,3of5'."
    ),
    group_threshold: int = typer.Option(
        1, "--group-threshold", help="SLIP-39 target: groups needed to recover."
    ),
    iteration_exponent: int = typer.Option(
        1, "--iteration-exponent", help="SLIP-39 target: PBKDF2 cost, 10000 << e iterations."
    ),
    extendable: bool = typer.Option(
        True,
        "--extendable/--classic",
        help="SLIP-39 target: set the extendable-backup flag (--classic for older tools).",
    ),
    source_threshold: int | None = typer.Option(
        None,
        "--source-threshold",
        help="pycryptodome source: its threshold (required: the shares do not record it); "
        "give one share more than it so that a wrong share is detected.",
    ),
    ssss: bool = typer.Option(False, "--ssss", help="pycryptodome shares use its ssss=True form."),
    passphrase_file: Path | None = typer.Option(
        None, "--passphrase-file", help="SLIP-39 passphrase from this file (else a hidden prompt)."
    ),
    no_passphrase: bool = typer.Option(
        False, "--no-passphrase", help="SLIP-39: use the empty passphrase without asking."
    ),
    allow_expensive_kdf: bool = typer.Option(
        False, ALLOW_EXPENSIVE_KDF, help=ALLOW_EXPENSIVE_KDF_CONVERT_HELP
    ),
    identity: list[Path] = typer.Option(
        [],
        "--identity",
        metavar="FILE",
        help="keysplit source: identity file to open shares sealed to it.",
    ),
    custodian_passphrase_file: list[str] = typer.Option(
        [], CUSTODIAN_PASSPHRASE, metavar="[NAME=]FILE", help=CUSTODIAN_PASSPHRASE_HELP
    ),
    set_id: str | None = typer.Option(
        None,
        "--set-id",
        help="keysplit target: reuse this share-set id (16 hex digits), e.g. a keyring's "
        "(keysplit status DIR --json: set_id), so that the keyring accepts the new shares.",
    ),
    out_dir: Path | None = typer.Option(
        None, "--out-dir", help="Write one 0600 file per share here instead of stdout."
    ),
    custodian: list[str] = typer.Option(
        [],
        "--custodian",
        "-c",
        metavar="NAME[=PUBFILE]",
        help="Vault source, keysplit target: seal each new share to a custodian (as in init).",
    ),
    new_passphrase_file: list[str] = typer.Option(
        [],
        "--new-passphrase-file",
        metavar="[NAME=]FILE",
        help="With --custodian NAME: passphrase for NAME's new share (else a prompt).",
    ),
    vault_encoding: str = typer.Option(
        "base64", "--vault-encoding", help="Vault target: base64 (as vault prints) or hex."
    ),
) -> None:
    """Convert shares between keysplit, SLIP-39, pycryptodome/ssss and Vault/OpenBao forms.

    --from vault or --to vault is what 'share convert-vault' does (same options; see its
    help for what can be checked on a Vault import).

    The formats use different fields and encodings, so a share cannot be transcoded on its
    own: this combines the source shares (with all their checks) and re-splits the secret,
    in memory, in one step. Run it on an offline machine. The old shares keep working until
    they are destroyed.

    Example: keysplit share convert --from keysplit --to slip39 -t 2 -n 3 --out-dir words
    share-1.kss share-2.kss

    Exit codes: 0 converted; 1 a bad, foreign or inconsistent source share, a wrong
    identity or passphrase, an output file that exists (nothing written); 2 usage.
    """
    from keysplit import combine as ks_combine
    from keysplit import secret_fingerprint
    from keysplit.interop import convert as ks_convert
    from keysplit.interop import pycryptodome, slip39

    if Fmt.vault in (from_, to):
        if Fmt.pycryptodome in (from_, to) or ssss:
            fail("Vault keys convert to and from keysplit or slip39 only", code=EXIT_USAGE)
        if vault_encoding not in {e.value for e in VEnc}:
            fail("--vault-encoding is base64 or hex", code=EXIT_USAGE)
        convert_vault_cmd(
            inputs=inputs,
            from_=VFmt(from_.value),
            to=VFmt(to.value),
            threshold=threshold,
            count=count,
            source_threshold=source_threshold,
            custodian=custodian,
            new_passphrase_file=new_passphrase_file,
            set_id=set_id,
            identity=identity,
            custodian_passphrase_file=custodian_passphrase_file,
            vault_encoding=VEnc(vault_encoding),
            groups=groups,
            group_threshold=group_threshold,
            iteration_exponent=iteration_exponent,
            passphrase_file=passphrase_file,
            no_passphrase=no_passphrase,
            allow_expensive_kdf=allow_expensive_kdf,
            out_dir=out_dir,
        )
        return
    if out_dir is not None:
        check_output_dir(out_dir, "--out-dir")
    if custodian or new_passphrase_file:
        fail(
            "--custodian applies to conversions from vault (see share convert-vault)",
            code=EXIT_USAGE,
        )
    set_id_bytes: bytes | None = None
    if set_id is not None:
        if to is not Fmt.keysplit:
            fail("--set-id applies to --to keysplit only", code=EXIT_USAGE)
        try:
            set_id_bytes = bytes.fromhex(set_id)
        except ValueError:
            set_id_bytes = b""
        if len(set_id_bytes) != 8:
            fail("--set-id takes 16 hex digits", code=EXIT_USAGE)
    if from_ is Fmt.pycryptodome and source_threshold is None:
        fail(
            "pycryptodome shares do not record their threshold: pass --source-threshold K",
            hint="give one share more than K so that a wrong share is detected",
            code=EXIT_USAGE,
        )
    sources = read_sources(inputs)
    stdin_busy = any(name == "stdin" for name, _ in sources)
    needs_pass = Fmt.slip39 in (from_, to)
    passphrase = (
        slip39_passphrase(passphrase_file, no_passphrase, to is Fmt.slip39, stdin_busy)
        if needs_pass
        else b""
    )

    src_t: int | None = None
    src_n: int | None = None
    try:
        if from_ is Fmt.keysplit:
            ks, who = read_keysplit(
                sources, identity, custodian_passphrase_file, allow_expensive_kdf
            )
            secret = ks_combine(ks, custodian_of=who)
            if ks:
                src_t, src_n = ks[0].threshold, ks[0].count
            n_in = len(ks)
        elif from_ is Fmt.slip39:
            sl = read_slip39(sources)
            confirm = slip39_confirmer(allow_expensive_kdf, stdin_busy)
            secret = slip39.combine_shares(sl, passphrase=passphrase, confirm=confirm)
            if sl[0].group_count == 1:
                src_t = sl[0].member_threshold
            n_in = len(sl)
        else:
            pc = read_pycryptodome(sources)
            secret = pycryptodome.combine_pycryptodome(pc, threshold=source_threshold, ssss=ssss)
            src_t = source_threshold
            n_in = len(pc)
            if source_threshold is not None:
                _unchecked_import_note(
                    n_in,
                    source_threshold,
                    "pycryptodome shares",
                    "against the one recorded for the secret before destroying the old shares",
                )
    except ValueError as exc:
        fail(str(exc), code=EXIT_USAGE)

    t = threshold if threshold is not None else src_t
    n = count if count is not None else src_n
    info(
        f"recovered a {len(secret)}-byte secret from {n_in} share(s); "
        f"fingerprint {secret_fingerprint(secret)}"
    )

    try:
        items: list[tuple[str, str]]
        if to is Fmt.slip39:
            if groups is not None:
                group_list = parse_groups(groups)
            else:
                if t is None or n is None:
                    fail("say how to split: --threshold and --count (or --groups)", code=EXIT_USAGE)
                group_list = [(t, n)]
            if len(secret) < 16 or len(secret) % 2:
                raise KeysplitError(
                    f"SLIP-39 holds secrets of 16, 18, 20 ... bytes; this one is {len(secret)}"
                )
            made = slip39.generate_shares(
                group_threshold,
                group_list,
                secret,
                passphrase=passphrase,
                iteration_exponent=iteration_exponent,
                extendable=extendable,
            )
            items = []
            for g, members in enumerate(made):
                if len(made) > 1:
                    gt, gn = group_list[g]
                    items.append(("", f"# group {g + 1}: {gt} of {gn}\n"))
                items += [
                    (
                        f"slip39-{s.identifier}-g{s.group_index + 1}-m{s.member_index + 1}.txt",
                        s.mnemonic() + "\n",
                    )
                    for s in members
                ]
        else:
            if t is None or n is None:
                fail("say how to split: --threshold and --count", code=EXIT_USAGE)
            if to is Fmt.keysplit:
                new = ks_convert.split_with_set_id(secret, t, n, set_id=set_id_bytes)
                items = [(f"share-{s.set_id_hex}-{s.index}.kss", f"{s}\n") for s in new]
            else:
                if len(secret) != pycryptodome.SECRET_BYTES:
                    raise KeysplitError(
                        f"pycryptodome shares hold a 16-byte secret; this one is {len(secret)}"
                    )
                pcs = pycryptodome.split_pycryptodome(secret, t, n, ssss=ssss)
                items = [
                    (f"pycryptodome-{x}.txt", pycryptodome.format_pycryptodome([(x, y)]))
                    for x, y in pcs
                ]
    except ValueError as exc:
        fail(str(exc), code=EXIT_USAGE)
    finally:
        del secret
    write_items(out_dir, items)
    if from_ is Fmt.slip39:
        info(
            "note: SLIP-39 does not check the passphrase; a wrong one gives another secret."
            " Compare the fingerprint above with the expected one before relying on it."
        )
    info("the old shares still recover the secret: destroy them once the new ones are verified")


class VEnc(StrEnum):
    base64 = "base64"
    hex = "hex"


class VFmt(StrEnum):
    vault = "vault"
    keysplit = "keysplit"
    slip39 = "slip39"


VAULT_CONFIRM = "by unsealing Vault with the new keys before destroying the old ones"


def _unchecked_import_note(
    n_keys: int, k: int, what: str = "Vault keys", confirm: str = VAULT_CONFIRM
) -> None:
    """What could be checked of shares without a check value (Vault keys, see
    keysplit.interop.vault; pycryptodome/ssss shares): say it every time, not only in the
    docs. ``what`` is the plural name, ``confirm`` how to confirm the fingerprint."""
    one = what.split()[-1].removesuffix("s")  # "key", "share"
    if n_keys > k:
        info(
            f"checked: all {n_keys} {what} lie on one polynomial of degree {k - 1} "
            f"({n_keys - k} more than the threshold {k}), so no single {one} is mistyped"
        )
    else:
        info(
            f"exactly {k} {what} given: {what} carry no check value, so a mistyped "
            f"or foreign {one} would give a wrong key without any error. Give one {one} more "
            f"to check them, or confirm the fingerprint below {confirm}.",
            lead="warning:",
            style="yellow",
        )


@app.command("convert-vault")
@handle_errors
def convert_vault_cmd(
    inputs: list[Path] = typer.Argument(
        None,
        metavar="FILE",
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
    identity: list[Path] = typer.Option(
        [], "--identity", metavar="FILE", help="keysplit source: " + IDENTITY_HELP
    ),
    custodian_passphrase_file: list[str] = typer.Option(
        [], CUSTODIAN_PASSPHRASE, metavar="[NAME=]FILE", help=CUSTODIAN_PASSPHRASE_HELP
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
    allow_expensive_kdf: bool = typer.Option(
        False, ALLOW_EXPENSIVE_KDF, help=ALLOW_EXPENSIVE_KDF_CONVERT_HELP
    ),
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

    Exit codes: 0 converted; 1 a bad, foreign or inconsistent source share, an unreadable
    public key, an output file that exists (nothing written); 2 usage.
    """
    from keysplit import combine as ks_combine
    from keysplit import secret_fingerprint
    from keysplit.ceremony import WrittenShare
    from keysplit.files import atomic_write
    from keysplit.interop import convert as ks_convert
    from keysplit.interop import slip39, vault

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
    if out_dir is not None:
        check_output_dir(out_dir, "--out-dir")
    set_id_bytes = None
    if set_id is not None:
        set_id_bytes = bytes.fromhex(set_id) if re.fullmatch(r"[0-9a-fA-F]{16}", set_id) else None
        if set_id_bytes is None:
            fail("--set-id takes 16 hex digits", code=EXIT_USAGE)
    sources = read_sources(inputs)
    stdin_busy = any(name == "stdin" for name, _ in sources)
    passphrase = (
        slip39_passphrase(passphrase_file, no_passphrase, to is VFmt.slip39, stdin_busy)
        if VFmt.slip39 in (from_, to)
        else b""
    )
    custody = (
        parse_custodians(custodian, new_passphrase_file, False, "--new-passphrase-file")
        if custodian
        else []
    )

    src_t = src_n = None
    try:
        if from_ is VFmt.vault:
            vk = read_vault(sources)
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
            _unchecked_import_note(len(vk.keys), k)
            src_t, src_n, n_in = k, vk.count, len(vk.keys)
        elif from_ is VFmt.keysplit:
            ks, who = read_keysplit(
                sources, identity, custodian_passphrase_file, allow_expensive_kdf
            )
            secret = ks_combine(ks, custodian_of=who)
            src_t, src_n, n_in = ks[0].threshold, ks[0].count, len(ks)
        else:
            sl = read_slip39(sources)
            confirm = slip39_confirmer(allow_expensive_kdf, stdin_busy)
            secret = slip39.combine_shares(sl, passphrase=passphrase, confirm=confirm)
            src_t = sl[0].member_threshold if sl[0].group_count == 1 else None
            n_in = len(sl)
    except ValueError as exc:
        fail(str(exc), code=EXIT_USAGE)

    t = threshold if threshold is not None else src_t
    n = count if count is not None else (len(custody) or src_n)
    if custody and t is not None and n is not None and t >= n:
        if threshold is None:
            fail(
                f"{n} custodians and the source's threshold {t}: every custodian would be "
                "needed (losing one share loses the key)",
                hint=f"give --threshold K below {n}, e.g. -t {max(2, n - 1)}",
                code=EXIT_USAGE,
            )
        info(
            f"{t} of {n}: every custodian is needed, losing one share loses the key",
            lead="warning:",
            style="yellow",
        )
    info(
        f"recovered a {len(secret)}-byte key from {n_in} share(s); "
        f"fingerprint {secret_fingerprint(secret)}"
    )
    try:
        if to is VFmt.slip39:
            group_list = parse_groups(groups) if groups else None
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
            write_items(out_dir, items)
        elif t is None or n is None:
            fail("say how to split: --threshold and --count", code=EXIT_USAGE)
        elif to is VFmt.vault:
            keys = vault.split_vault(secret, t, n)
            enc: vault.Encoding = "hex" if vault_encoding is VEnc.hex else "base64"
            if out_dir is None:
                typer.echo(vault.format_vault(keys, encoding=enc), nl=False)
            else:
                write_items(
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
                print_share_table(f"{t}-of-{n} keysplit shares, set {new[0].set_id_hex}", rows)
            else:
                write_items(
                    out_dir, [(f"share-{s.set_id_hex}-{s.index}.kss", f"{s}\n") for s in new]
                )
    except ValueError as exc:
        fail(str(exc), code=EXIT_USAGE)
    finally:
        del secret
    info("the old shares still recover the key: destroy them once the new ones are verified")
