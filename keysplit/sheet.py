"""Printable share sheets: one PDF page per share, with its text, a QR code and instructions.

Why paper: a share file on a laptop or USB stick dies with it; a sheet in a safe does not,
and a custodian can check it by eye. Each page shows the custodian, keyring id, set id,
index, k-of-n and fingerprint, the share's ``ks1-`` text in groups (typable; its bech32m
checksum catches every typo), a QR code of the same text, and recovery instructions.

The QR code holds the text form upper-cased (``KS1-QPZRY-...``): QR's alphanumeric mode
covers upper-case letters, digits and ``-``, so the code is about a third smaller than in
byte mode, and :meth:`keysplit.Share.parse` ignores case. The QR is embedded as a lossless
PNG whose modules are whole pixels, so a scan of the print or of the PDF reads it back.

A sheet holds the share in the clear: it is as secret as the share file. The PDF is written
atomically with mode 0600 and nothing secret goes into its metadata.

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
from .custodian import check_custodian_name
from .errors import KeysplitError
from .share import Share

__all__ = ["ShareSheet", "qr_text", "render_pdf", "share_groups", "write_pdf"]

_GROUPS_PER_LINE = 6
_QR_SCALE = 8  # pixels per module in the embedded PNG
_QR_BORDER = 4  # quiet zone, in modules (the standard's minimum)


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
        if self.keyring_id is not None and (
            not isinstance(self.keyring_id, str)
            or not self.keyring_id.isascii()
            or not self.keyring_id.isprintable()
            or len(self.keyring_id) > 80
        ):
            raise ValueError("keyring_id must be printable ASCII, at most 80 characters")

    def __repr__(self) -> str:
        return f"ShareSheet({self.custodian!r}, {self.share!r}, keyring_id={self.keyring_id!r})"


def qr_text(share: Share) -> str:
    """The text the QR code holds: the share's text form in upper case."""
    return str(share).upper()


def share_groups(share: Share, per_line: int = _GROUPS_PER_LINE) -> list[str]:
    """The share text as printed: its ``-`` groups, ``per_line`` to a line, blank-separated."""
    groups = str(share).split("-")
    return [" ".join(groups[i : i + per_line]) for i in range(0, len(groups), per_line)]


def _libs() -> tuple[Any, Any]:
    try:
        import fpdf
        import segno
    except ImportError:
        raise KeysplitError(
            "printing share sheets needs the optional libraries segno and fpdf2",
            hint="pip install 'keysplit[sheets]'",
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


def _page(pdf: Any, segno: Any, s: ShareSheet) -> None:
    sh = s.share
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(
        0,
        10,
        f"keysplit share sheet - share {sh.index} of {sh.count}",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.set_font("Helvetica", "", 10)
    pdf.cell(
        0,
        6,
        "SECRET: whoever holds this sheet holds this custodian's share.",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(3)
    fields = [
        ("Custodian", s.custodian),
        ("Keyring id", s.keyring_id or "(not recorded)"),
        ("Set id", sh.set_id_hex),
        ("Share index", str(sh.index)),
        ("Threshold", f"{sh.threshold} of {sh.count}"),
        ("Fingerprint", sh.fingerprint),
        ("Secret length", f"{sh.secret_len} bytes"),
    ]
    for label, value in fields:
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(38, 7, label + ":")
        pdf.set_font("Courier", "", 11)
        pdf.cell(0, 7, value, new_x="LMARGIN", new_y="NEXT")
    _heading(pdf, "Share text", ("Courier", "B", 13))
    for line in share_groups(sh):
        pdf.cell(0, 7, line, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    qr = segno.make(qr_text(sh), error="m", micro=False)
    png = io.BytesIO()
    qr.save(png, kind="png", scale=_QR_SCALE, border=_QR_BORDER)
    # 2 mm a module, 80 mm at most
    side = min(80.0, 2.0 * qr.symbol_size(scale=1, border=_QR_BORDER)[0])
    pdf.image(io.BytesIO(png.getvalue()), x=pdf.l_margin, y=pdf.get_y(), w=side, h=side)
    pdf.set_y(pdf.get_y() + side)
    _heading(pdf, "Recovery instructions", ("Helvetica", "", 10))
    for para in _instructions(s):
        pdf.multi_cell(0, 5, para, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)


def render_pdf(sheets: Sequence[ShareSheet]) -> bytes:
    """The PDF, one A4 page per sheet, as bytes (secret: it holds the shares)."""
    if isinstance(sheets, ShareSheet):
        sheets = [sheets]
    if not sheets:
        raise ValueError("no sheets to render")
    for s in sheets:
        if not isinstance(s, ShareSheet):
            raise TypeError("sheets must be ShareSheet objects")
    segno, fpdf = _libs()
    pdf = fpdf.FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=12)
    pdf.set_title("keysplit share sheet")
    pdf.set_creator("keysplit")
    for s in sheets:
        _page(pdf, segno, s)
    return bytes(pdf.output())


def write_pdf(
    path: str | os.PathLike[str], sheets: Sequence[ShareSheet], *, overwrite: bool = False
) -> None:
    """Render and write atomically with mode 0600 (never replacing a file unless asked)."""
    atomic_write(path, render_pdf(sheets), overwrite=overwrite)
