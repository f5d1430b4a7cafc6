"""Share sheets: render a PDF, read the QR back with an independent decoder and the text."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pypdf
import pytest
import zxingcpp

from keysplit import Share, split
from keysplit.sheet import ShareSheet, qr_text, render_pdf, share_groups, write_pdf


def _qr_contents(page: pypdf.PageObject) -> list[str]:
    """Every QR code zxing-cpp (a C++ decoder keysplit did not write) finds in the page's images."""
    found = []
    for img in page.images:
        found += [r.text for r in zxingcpp.read_barcodes(img.image) if r.format.name == "QRCode"]
    return found


def test_sheet_page_one_shows_the_share_and_its_qr_decodes_to_it(tmp_path: Path) -> None:
    shares = split(bytes(range(16)), 3, 5)
    sheets = [ShareSheet(s, f"cust{s.index}", keyring_id="kr-7f3a") for s in shares[:2]]
    out = tmp_path / "sheet.pdf"
    write_pdf(out, sheets)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_pdf(out, sheets)
    reader = pypdf.PdfReader(io.BytesIO(out.read_bytes()))
    assert len(reader.pages) == 2
    for page, sh in zip(reader.pages, shares, strict=False):
        text = page.extract_text()
        for needle in (
            f"cust{sh.index}",
            "kr-7f3a",
            sh.set_id_hex,
            "3 of 5",
            sh.fingerprint,
            f"share {sh.index} of 5",
            "Recovery instructions",
        ):
            assert needle in text, needle
        for line in share_groups(sh):
            assert line in text
        # the printed groups, rejoined, are the share
        printed = "-".join(" ".join(share_groups(sh)).split())
        assert Share.parse(printed) == sh
        qrs = _qr_contents(page)
        assert qrs == [qr_text(sh)]
        assert Share.parse(qrs[0]) == sh
    assert str(shares[0]) not in str(reader.metadata)


def test_long_secret_and_bad_input() -> None:
    sh = split(b"\xff" * 64, 2, 2)[1]
    pdf = render_pdf([ShareSheet(sh, "ana")])
    page = pypdf.PdfReader(io.BytesIO(pdf)).pages[0]
    assert Share.parse(_qr_contents(page)[0]) == sh
    assert "(not recorded)" in page.extract_text()
    assert str(sh)[4:] not in repr(ShareSheet(sh, "ana"))
    with pytest.raises(ValueError):
        ShareSheet(sh, "../evil")
    with pytest.raises(ValueError):
        ShareSheet(sh, "ana", keyring_id="x\n")
    with pytest.raises(ValueError):
        render_pdf([])
