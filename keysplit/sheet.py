"""Printable share sheets: one PDF page per share, with its text, a QR code and instructions.

Why paper: a share file on a laptop or USB stick dies with it; a sheet in a safe does not,
and a custodian can check it by eye. Each page shows the custodian, keyring id, set id,
index, k-of-n and fingerprint, the share's ``ks1-`` text in groups (typable; its bech32m
checksum catches every typo), a QR code of the same text, and recovery instructions.

The QR code holds the text form upper-cased (``KS1-QPZRY-...``): QR's alphanumeric mode
covers upper-case letters, digits and ``-``, so the code is about a third smaller than in
byte mode, and :meth:`keysplit.Share.parse` ignores case. The QR is embedded as a lossless
PNG whose modules are whole pixels, so a scan of the print or of the PDF reads it back.

A sheet never holds more than its custodian's share file, in the same protection: a
:class:`ShareSheet` prints a plain share (as secret as the plain share file it copies); a
:class:`SealedSheet` prints a *sealed* share file as it is (its text form, ``KSSS-...``,
see :data:`keysplit.custody.SEALED_TEXT_PREFIX`) and says which identity or passphrase
opens it, so paper is no weaker than the file. Ceremonies print one sheet per custodian
from the exact bytes of that custodian's share file (``ceremony.SheetWriter``). The PDF is
written atomically with mode 0600 and nothing secret goes into its metadata.

Libraries (the optional ``sheets`` extra): ``segno`` for the QR code (pure Python, no
dependencies, ISO/IEC 18004 compliant, maintained since 2016) and ``fpdf2`` for the PDF
(pure Python on Pillow and fontTools, actively maintained; the standard PDF core fonts
need no font files).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._fileio import atomic_write
from .custody import (
    SealedShareInfo,
    check_custodian_name,
    is_sealed,
    load_share,
    sealed_share_info,
    sealed_text,
)
from .errors import FormatError, KeysplitError
from .share import Share

__all__ = [
    "SealedSheet",
    "ShareSheet",
    "qr_text",
    "render_pdf",
    "share_groups",
    "sheet_for_file",
    "write_pdf",
]

_GROUPS_PER_LINE = 6
_QR_SCALE = 8  # pixels per module in the embedded PNG
_QR_BORDER = 4  # quiet zone, in modules (the standard's minimum)
_QR_CAPACITY = 3391
"""Characters the largest QR code (version 40) holds in alphanumeric mode at error level M:
far more than any sealed share's text (ML-KEM hybrid, 64-byte secret: about 2450)."""


@dataclass(frozen=True, repr=False)
class ShareSheet:
    """What one page shows: a share (secret), its custodian and, if known, the keyring id."""

    share: Share
    custodian: str
    keyring_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.share, Share):
            raise TypeError("share must be a Share")
        check_custodian_name(self.custodian)
        _check_keyring_id(self.keyring_id)

    def __repr__(self) -> str:
        return f"ShareSheet({self.custodian!r}, {self.share!r}, keyring_id={self.keyring_id!r})"


def _check_keyring_id(keyring_id: str | None) -> None:
    if keyring_id is not None and (
        not isinstance(keyring_id, str)
        or not keyring_id.isascii()
        or not keyring_id.isprintable()
        or len(keyring_id) > 80
    ):
        raise ValueError("keyring_id must be printable ASCII, at most 80 characters")


@dataclass(frozen=True)
class SealedSheet:
    """A page for a *sealed* share file: its text form, and who can open it (no secret on
    the page that the file does not already show)."""

    sealed: bytes
    keyring_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.sealed, bytes) or not is_sealed(self.sealed):
            raise TypeError("sealed must be the bytes of a sealed share file")
        sealed_share_info(self.sealed)  # parses: a damaged file is refused, not printed
        if len(self.text) > _QR_CAPACITY:  # only an edited or foreign file: no method's is
            raise FormatError(
                f"the sealed share is too large for a QR code ({len(self.text)} characters, "
                f"at most {_QR_CAPACITY}): no keysplit protection makes one so large"
            )
        _check_keyring_id(self.keyring_id)

    @property
    def info(self) -> SealedShareInfo:
        return sealed_share_info(self.sealed)

    @property
    def text(self) -> str:
        return sealed_text(self.sealed)


Sheet = ShareSheet | SealedSheet


def sheet_for_file(data: bytes, custodian: str, keyring_id: str | None = None) -> Sheet:
    """The sheet of one share file's bytes, in the file's own protection: a sealed file gives
    a :class:`SealedSheet`, a plain one a :class:`ShareSheet` (nothing is ever opened)."""
    if is_sealed(data):
        sheet = SealedSheet(bytes(data), keyring_id)
        if sheet.info.custodian != custodian:
            raise FormatError(f"the share file is {sheet.info.custodian!r}'s, not {custodian!r}'s")
        return sheet
    return ShareSheet(load_share(data), custodian, keyring_id)


def qr_text(share: Share | SealedSheet) -> str:
    """The text the QR code holds: the share's text form in upper case (a sealed share's
    ``KSSS-`` text, already upper case)."""
    if isinstance(share, SealedSheet):
        return share.text
    return str(share).upper()


def share_groups(share: Share | SealedSheet, per_line: int = _GROUPS_PER_LINE) -> list[str]:
    """The share text as printed: its ``-`` groups, ``per_line`` to a line, blank-separated."""
    groups = (share.text if isinstance(share, SealedSheet) else str(share)).split("-")
    return [" ".join(groups[i : i + per_line]) for i in range(0, len(groups), per_line)]


def _libs() -> tuple[Any, Any]:
    try:
        import fpdf
        import segno
    except ImportError:
        raise KeysplitError(
            "printing share sheets needs the optional libraries segno and fpdf2",
            hint="install the 'sheets' extra: pip install '.[sheets]' in a keysplit checkout "
            "(not on PyPI)",
        ) from None
    return segno, fpdf


def _instructions(s: ShareSheet) -> list[str]:
    sh = s.share
    k, n = sh.threshold, sh.count
    where = f"keyring {s.keyring_id}" if s.keyring_id else "the keyring"
    return [
        f"1. Keep this sheet as secret as the share itself: any {k} of the {n} shares of set "
        f"{sh.set_id_hex} unseal {where}; fewer than {k} reveal nothing. Store it offline, "
        "e.g. sealed in a safe, and never photograph it with a networked device.",
        "2. To use it, type the share text where keysplit asks for a share: its prompt "
        "is hidden (nothing typed is shown), or pipe it in with '--share -'. Or scan the "
        "QR code into a file, e.g. share.txt. Blanks, dashes and case do not matter; the "
        "text carries a checksum: a typo is reported, never silently accepted.",
        f"3. Check it: 'keysplit share inspect share.txt' must show the fingerprint "
        f"{sh.fingerprint} printed above.",
        f"4. At an unseal or rekey ceremony, give it with the shares of {k - 1} other "
        "custodians: 'keysplit unseal KEYRING_DIR' and type it at the hidden 'Share' prompt "
        "(or --share share.txt). keysplit verifies the recovered key; a wrong or foreign "
        "share is an error, never a wrong key.",
        "5. When the keyring is rekeyed, this set id is retired: destroy the sheet (shred or "
        "burn) once the new shares are verified.",
    ]


def _heading(pdf: Any, title: str, body_font: tuple[str, str, int]) -> None:
    pdf.ln(4)
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(0, 8, title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(*body_font)


@dataclass(frozen=True)
class _Layout:
    title: str
    warning: str
    fields: list[tuple[str, str]]
    heading: str
    groups: list[str]
    qr: str
    instructions: list[str]


def _plain_layout(s: ShareSheet) -> _Layout:
    sh = s.share
    return _Layout(
        f"keysplit share sheet - share {sh.index} of {sh.count}",
        "SECRET: whoever holds this sheet holds this custodian's share.",
        [
            ("Custodian", s.custodian),
            ("Keyring id", s.keyring_id or "(not recorded)"),
            ("Set id", sh.set_id_hex),
            ("Share index", str(sh.index)),
            ("Threshold", f"{sh.threshold} of {sh.count}"),
            ("Fingerprint", sh.fingerprint),
            ("Secret length", f"{sh.secret_len} bytes"),
        ],
        "Share text",
        share_groups(sh),
        qr_text(sh),
        _instructions(s),
    )


def _sealed_layout(s: SealedSheet) -> _Layout:
    i = s.info
    k, n = i.threshold, i.count
    where = f"keyring {s.keyring_id}" if s.keyring_id else "the keyring"
    if i.recipient_fingerprint is not None:
        opens = (
            f"the identity file of custodian {i.custodian} (public key {i.recipient_fingerprint})"
        )
        protection = f"sealed to public key {i.recipient_fingerprint} ({i.method})"
        give = f"--share share.kss --identity {i.custodian}.identity"
    else:
        opens = f"the passphrase of custodian {i.custodian}"
        protection = "sealed with a passphrase (Argon2id)"
        give = "--share share.kss (the passphrase is asked for)"
    return _Layout(
        f"keysplit sealed share sheet - share {i.index} of {n}",
        f"SEALED: only {opens} opens this share.",
        [
            ("Custodian", i.custodian),
            ("Keyring id", s.keyring_id or "(not recorded)"),
            ("Set id", i.set_id_hex),
            ("Share index", str(i.index)),
            ("Threshold", f"{k} of {n}"),
            ("Fingerprint", i.fingerprint),
            ("Protection", protection),
        ],
        "Sealed share text",
        share_groups(s, per_line=8),
        qr_text(s),
        [
            f"1. This sheet holds the share file of custodian {i.custodian} exactly as it was "
            f"written, still sealed: it opens only with {opens}. Keep sheet and identity "
            f"apart and both safe; any {k} opened shares of set {i.set_id_hex} unseal {where}.",
            "2. To use it, type the text where keysplit asks for a share (its prompt is "
            "hidden), or pipe it in with '--share -', or scan the QR code or type the text "
            "into a file, e.g. share.kss (blanks, dashes and case do not matter). The sealed "
            "share carries a checksum: a typo is reported, never silently accepted.",
            f"3. Check it: 'keysplit share inspect share.kss' must show the fingerprint "
            f"{i.fingerprint} printed above.",
            f"4. At an unseal or rekey ceremony: 'keysplit unseal KEYRING_DIR {give} ...' "
            f"with {k - 1} other custodian{'s' if k > 2 else ''}. A wrong or foreign share is "
            "an error, never a "
            "wrong key.",
            "5. When the keyring is rekeyed, this set id is retired: destroy the sheet.",
        ],
    )


def _page(pdf: Any, segno: Any, s: Sheet) -> None:
    lay = _plain_layout(s) if isinstance(s, ShareSheet) else _sealed_layout(s)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(0, 10, lay.title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    pdf.cell(0, 6, lay.warning, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    for label, value in lay.fields:
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(38, 7, label + ":")
        pdf.set_font("Courier", "", 11)
        pdf.cell(0, 7, value, new_x="LMARGIN", new_y="NEXT")
    _heading(pdf, lay.heading, ("Courier", "B", 13))
    for line in lay.groups:
        pdf.cell(0, 7, line, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    qr = segno.make(lay.qr, error="m", micro=False)
    png = io.BytesIO()
    qr.save(png, kind="png", scale=_QR_SCALE, border=_QR_BORDER)
    # 2 mm a module, 80 mm at most
    side = min(80.0, 2.0 * qr.symbol_size(scale=1, border=_QR_BORDER)[0])
    if pdf.get_y() + side > pdf.h - pdf.b_margin:
        pdf.add_page()  # a long sealed share: the QR code goes whole on the next page
    pdf.image(io.BytesIO(png.getvalue()), x=pdf.l_margin, y=pdf.get_y(), w=side, h=side)
    pdf.set_y(pdf.get_y() + side)
    _heading(pdf, "Recovery instructions", ("Helvetica", "", 10))
    for para in lay.instructions:
        pdf.multi_cell(0, 5, para, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)


def render_pdf(sheets: Sequence[Sheet] | Sheet) -> bytes:
    """The PDF, one A4 page per sheet, as bytes (as secret as the share files it copies)."""
    if isinstance(sheets, ShareSheet | SealedSheet):
        sheets = [sheets]
    if not sheets:
        raise ValueError("no sheets to render")
    for s in sheets:
        if not isinstance(s, ShareSheet | SealedSheet):
            raise TypeError("sheets must be ShareSheet or SealedSheet objects")
    segno, fpdf = _libs()
    pdf = fpdf.FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=12)
    pdf.set_title("keysplit share sheet")
    pdf.set_creator("keysplit")
    for s in sheets:
        _page(pdf, segno, s)
    return bytes(pdf.output())


def write_pdf(
    path: str | os.PathLike[str], sheets: Sequence[Sheet] | Sheet, *, overwrite: bool = False
) -> None:
    """Render and write atomically with mode 0600 (never replacing a file unless asked)."""
    atomic_write(path, render_pdf(sheets), overwrite=overwrite)
