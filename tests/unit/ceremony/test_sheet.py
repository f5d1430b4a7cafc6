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


# -- sheets of a public-key ceremony (issue 21 item 3) ------------------------------------


def _clear_share_on(text: str, shares: list[Share]) -> bool:
    """True if ``text`` (page text or QR) shows a clear share: the ks1 form, any of its
    printed groups, or anything that parses as a share."""
    flat = "".join(text.split()).lower()
    if "ks1" in flat:
        return True
    for sh in shares:
        if any("".join(line.split()).lower() in flat for line in share_groups(sh)):
            return True
    try:
        Share.parse(text)
    except Exception:
        return False
    return True


def test_public_key_ceremony_sheets_hold_no_clear_share(tmp_path: Path) -> None:
    """Before: init/rekey --sheets with public-key custodians printed every share in the
    clear, all in one directory. Now each sheet is its custodian's sealed share file."""
    from keysplit import Argon2Params, Identity, Keyring, ceremony, load_share
    from keysplit.custody import sealed_share_info, sealed_text

    ids = {n: Identity.generate(n) for n in ("alice", "bob")}
    custody = [ceremony.Custody(n, recipient=i.recipient) for n, i in ids.items()]
    custody.append(ceremony.Custody("carol", passphrase=b"carol's passphrase"))
    kdf = Argon2Params(time_cost=1, memory_kib=64, lanes=1)
    shares_dir, sheets_dir = tmp_path / "shares", tmp_path / "sheets"

    def open_file(name: str, gen: int) -> Share:
        data = (shares_dir / f"{name}.g{gen}.kss").read_bytes()
        if name == "carol":
            return load_share(data, passphrase=b"carol's passphrase")
        return load_share(data, identity=ids[name])

    ceremony.init(
        tmp_path / "kr",
        2,
        custody,
        ceremony.DirectorySink(shares_dir),
        kdf=kdf,
        sheets=ceremony.SheetWriter(sheets_dir),
    )
    kr = Keyring.open(tmp_path / "kr")
    quorum = ceremony.Quorum(kr, [open_file("alice", 1), open_file("carol", 1)])
    ceremony.rekey(
        kr,
        quorum,
        custody,
        ceremony.DirectorySink(shares_dir),
        kdf=kdf,
        sheets=ceremony.SheetWriter(sheets_dir),
    )
    names = sorted(c.name for c in custody)
    assert sorted(p.name for p in sheets_dir.iterdir()) == sorted(
        f"{n}.g{g}.pdf" for n in names for g in (1, 2)
    )
    clear = [open_file(n, g) for n in names for g in (1, 2)]
    for n in names:
        for gen in (1, 2):
            path = sheets_dir / f"{n}.g{gen}.pdf"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            share_file = (shares_dir / f"{n}.g{gen}.kss").read_bytes()
            info = sealed_share_info(share_file)
            reader = pypdf.PdfReader(path)
            text = "\n".join(page.extract_text() for page in reader.pages)
            qrs = [q for page in reader.pages for q in _qr_contents(page)]
            assert len(qrs) == 1
            assert not _clear_share_on(text, clear), f"clear share on {path.name}"
            assert not _clear_share_on(qrs[0], clear), f"clear share in the QR of {path.name}"
            # the sheet is exactly the share file, sealed, and says who opens it
            assert qrs[0] == sealed_text(share_file)
            printed = text.split("Sealed share text", 1)[1].split("Recovery instructions")[0]
            assert "".join(printed.split()) == "".join(sealed_text(share_file).split("-"))
            assert n in text and info.fingerprint in text
            assert "with 1 other custodian." in " ".join(text.split())  # 2 of 3: one more
            if n == "carol":
                assert "passphrase of custodian carol" in text
                assert load_share(qrs[0].encode(), passphrase=b"carol's passphrase") == (
                    open_file(n, gen)
                )
            else:
                assert f"identity file of custodian {n}" in text
                assert ids[n].recipient.fingerprint in text
                assert load_share(qrs[0].lower().encode(), identity=ids[n]) == open_file(n, gen)
