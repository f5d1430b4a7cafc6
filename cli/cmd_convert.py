"""``keysplit share convert``: move a split secret between share formats in one step.

Reads shares from files or stdin (never argv), combines them with every check of the
source format, re-splits the secret in the target format and writes the new shares to
stdout or to ``--out-dir`` (one 0600 file each). The secret itself is never written or
printed; only its fingerprint is shown, so both sides of a migration can be compared.
"""

from __future__ import annotations

import re
import sys
from enum import StrEnum
from pathlib import Path

import typer

from keysplit import (
    KeysplitError,
    Share,
    interop,
    secret_fingerprint,
    slip39,
)
from keysplit import combine as ks_combine
from keysplit import (
    convert as ks_convert,
)
from keysplit.custody import is_sealed
from keysplit.files import atomic_write

from ._common import EXIT_USAGE, fail, handle_errors, info, read_input, relabel
from ._opener import Passphrases, ShareOpener

__all__ = ["app"]

app = typer.Typer()


class Fmt(StrEnum):
    keysplit = "keysplit"
    slip39 = "slip39"
    pycryptodome = "pycryptodome"


def _lines(blob: bytes, name: str) -> list[tuple[str, str]]:
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError:
        raise KeysplitError(f"{name}: not text (and not a binary keysplit share)") from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if s and not s.startswith("#"):
            out.append((f"{name} line {n}", s))
    return out


def _read_sources(inputs: list[Path] | None) -> list[tuple[str, bytes]]:
    if not inputs:
        return [("stdin", read_input(None))]
    return [("stdin" if str(p) == "-" else str(p), read_input(p)) for p in inputs]


def _read_keysplit(
    sources: list[tuple[str, bytes]], identity: list[Path], custodian_passphrase: Path | None
) -> list[Share]:
    shares = []
    opener = None
    for name, blob in sources:
        if is_sealed(blob):
            if opener is None:  # the same prompts and messages as `keysplit combine`
                opener = ShareOpener(identity, Passphrases.single(custodian_passphrase))
            shares.append(opener.open(name, blob))
            continue
        if blob.startswith(b"KSSH"):
            try:
                shares.append(Share.from_bytes(blob))
            except KeysplitError as exc:
                raise relabel(exc, name) from None
            continue
        for where, line in _lines(blob, name):
            try:
                shares.append(Share.parse(line))
            except KeysplitError as exc:
                raise relabel(exc, where) from None
    return shares


def _read_slip39(sources: list[tuple[str, bytes]]) -> list[slip39.Slip39Share]:
    shares = []
    for name, blob in sources:
        for where, line in _lines(blob, name):
            try:
                shares.append(slip39.decode_mnemonic(line))
            except KeysplitError as exc:
                raise relabel(exc, where) from None
    return shares


def _read_pycryptodome(sources: list[tuple[str, bytes]]) -> list[tuple[int, bytes]]:
    shares = []
    for name, blob in sources:
        try:
            shares += interop.parse_pycryptodome(blob.decode("utf-8", errors="replace"))
        except KeysplitError as exc:
            raise relabel(exc, name) from None
    return shares


_GROUP = re.compile(r"^\s*(\d+)\s*(?:of|/|-)\s*(\d+)\s*$")


def _parse_groups(spec: str) -> list[tuple[int, int]]:
    groups = []
    for part in spec.split(","):
        m = _GROUP.match(part)
        if not m:
            raise typer.BadParameter(
                f"{part.strip()!r} is not of the form T-of-N (e.g. 3of5)", param_hint="--groups"
            )
        groups.append((int(m.group(1)), int(m.group(2))))
    return groups


def _passphrase(
    passphrase_file: Path | None, no_passphrase: bool, confirm: bool, stdin_busy: bool
) -> bytes:
    if no_passphrase:
        return b""
    if passphrase_file is not None:
        data = passphrase_file.read_bytes()
        for end in (b"\r\n", b"\n"):
            if data.endswith(end):
                return data[: -len(end)]
        return data
    if stdin_busy:
        fail(
            "shares are read from stdin, so the SLIP-39 passphrase cannot be prompted for",
            hint="use --passphrase-file FILE or --no-passphrase",
            code=EXIT_USAGE,
        )
    text: str = typer.prompt(
        "SLIP-39 passphrase (empty for none)",
        default="",
        show_default=False,
        hide_input=True,
        confirmation_prompt=confirm,
        err=True,
    )
    return text.encode("utf-8")


def _write(out_dir: Path | None, items: list[tuple[str, str]]) -> None:
    """Write ``(file name, text)`` items to ``out_dir`` (0600, never overwriting) or stdout."""
    if out_dir is None:
        sys.stdout.write("".join(text for _, text in items))
        sys.stdout.flush()
        return
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name, text in items:
        if text.startswith("#"):
            continue
        atomic_write(out_dir / name, text.encode(), overwrite=False)
    info(f"wrote {sum(1 for n, t in items if not t.startswith('#'))} share file(s) to {out_dir}")


@app.command("convert")
@handle_errors
def convert_cmd(
    inputs: list[Path] = typer.Argument(
        None, help="Files holding the source shares (one per line; '-' or none: stdin)."
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
    identity: list[Path] = typer.Option(
        [], "--identity", help="keysplit source: identity file to open shares sealed to it."
    ),
    custodian_passphrase_file: Path | None = typer.Option(
        None,
        "--custodian-passphrase-file",
        help="keysplit source: passphrase of passphrase-sealed shares (else a prompt).",
    ),
    set_id: str | None = typer.Option(
        None,
        "--set-id",
        help="keysplit target: reuse this share-set id (16 hex digits), e.g. a keyring's "
        "(keyring status), so that the keyring accepts the new shares.",
    ),
    out_dir: Path | None = typer.Option(
        None, "--out-dir", help="Write one 0600 file per share here instead of stdout."
    ),
) -> None:
    """Convert shares between keysplit, SLIP-39 and pycryptodome/ssss forms.

    The formats use different fields and encodings, so a share cannot be transcoded on its
    own: this combines the source shares (with all their checks) and re-splits the secret,
    in memory, in one step. Run it on an offline machine. The old shares keep working until
    they are destroyed.
    """
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
    sources = _read_sources(inputs)
    stdin_busy = any(name == "stdin" for name, _ in sources)
    needs_pass = Fmt.slip39 in (from_, to)
    passphrase = (
        _passphrase(passphrase_file, no_passphrase, to is Fmt.slip39, stdin_busy)
        if needs_pass
        else b""
    )

    src_t: int | None = None
    src_n: int | None = None
    try:
        if from_ is Fmt.keysplit:
            ks = _read_keysplit(sources, identity, custodian_passphrase_file)
            secret = ks_combine(ks)
            if ks:
                src_t, src_n = ks[0].threshold, ks[0].count
            n_in = len(ks)
        elif from_ is Fmt.slip39:
            sl = _read_slip39(sources)
            secret = slip39.combine_shares(sl, passphrase=passphrase)
            if sl[0].group_count == 1:
                src_t = sl[0].member_threshold
            n_in = len(sl)
        else:
            pc = _read_pycryptodome(sources)
            secret = interop.combine_pycryptodome(pc, threshold=source_threshold, ssss=ssss)
            src_t = source_threshold
            n_in = len(pc)
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
                group_list = _parse_groups(groups)
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
                items = [(f"share-{s.set_id_hex}-{s.index}.txt", f"{s}\n") for s in new]
            else:
                if len(secret) != interop.SECRET_BYTES:
                    raise KeysplitError(
                        f"pycryptodome shares hold a 16-byte secret; this one is {len(secret)}"
                    )
                pcs = interop.split_pycryptodome(secret, t, n, ssss=ssss)
                items = [
                    (f"pycryptodome-{x}.txt", interop.format_pycryptodome([(x, y)])) for x, y in pcs
                ]
    except ValueError as exc:
        fail(str(exc), code=EXIT_USAGE)
    finally:
        del secret
    _write(out_dir, items)
    if from_ is Fmt.slip39:
        info(
            "note: SLIP-39 does not check the passphrase; a wrong one gives another secret."
            " Compare the fingerprint above with the expected one before relying on it."
        )
    info("the old shares still recover the secret: destroy them once the new ones are verified")
