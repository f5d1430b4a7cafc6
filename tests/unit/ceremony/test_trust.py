"""Keyring fingerprints and the known-keyrings pinning store (keysplit.trust)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import keysplit
from keysplit import trust
from keysplit.errors import FormatError, KeyringError, KeysplitError, UntrustedKeyringError
from keysplit.keyring import file as kf
from keysplit.trust import (
    KnownKeyring,
    KnownKeyrings,
    check_fingerprint,
    keyring_fingerprint,
    parse_fingerprint,
    verify_keyring,
)

# -- an independent bech32m: the BIP-350 reference code, transcribed -------------------------

_REF_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _ref_polymod(values: list[int]) -> int:
    gen = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    chk = 1
    for v in values:
        b = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if ((b >> i) & 1) else 0
    return chk


def _ref_bech32m(hrp: str, data: bytes) -> str:
    acc, bits, values = 0, 0, []
    for byte in data:
        acc = (acc << 8) | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            values.append((acc >> bits) & 31)
    if bits:
        values.append((acc << (5 - bits)) & 31)
    expanded = [ord(x) >> 5 for x in hrp] + [0] + [ord(x) & 31 for x in hrp]
    polymod = _ref_polymod(expanded + values + [0] * 6) ^ 0x2BC830A3
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_REF_CHARSET[d] for d in values + checksum)


def _ref_fingerprint(keyring_id: str, public_key: bytes) -> str:
    ident = keyring_id.encode()
    digest = hashlib.sha256(
        b"keysplit keyring fingerprint v1\x00" + len(ident).to_bytes(2, "big") + ident + public_key
    ).digest()
    return _ref_bech32m("ksk", digest[:20])


KID = "00112233445566778899aabbccddeeff"
PK = bytes(range(32))


def test_fingerprint_matches_independent_construction() -> None:
    fp = keyring_fingerprint(KID, PK)
    assert fp == _ref_fingerprint(KID, PK)
    assert fp.startswith("ksk1") and len(fp) == 42


def test_fingerprint_vector_is_stable() -> None:
    """Frozen once: a change of label, layout or encoding must be a deliberate new version."""
    assert keyring_fingerprint(KID, PK) == "ksk1dknz738dtfvzu34r4988jh3w0syf6j8z0rxs6j"


@settings(max_examples=50)
@given(st.from_regex(r"\A[a-f0-9]{32}\Z"), st.binary(min_size=32, max_size=32))
def test_fingerprint_property_against_reference(kid: str, pk: bytes) -> None:
    assert keyring_fingerprint(kid, pk) == _ref_fingerprint(kid, pk)


def test_fingerprint_commits_to_id_and_key() -> None:
    fp = keyring_fingerprint(KID, PK)
    assert keyring_fingerprint(KID, PK[:-1] + b"\x00") != fp
    assert keyring_fingerprint(KID[:-1] + "0", PK) != fp
    # length-prefixed id: moving bytes between id and key cannot collide
    assert keyring_fingerprint("ab", PK) != keyring_fingerprint("a", PK)


def test_check_accepts_typed_forms() -> None:
    fp = keyring_fingerprint(KID, PK)
    grouped = "-".join(fp[i : i + 6] for i in range(0, len(fp), 6)).upper()
    check_fingerprint(fp, KID, PK)
    check_fingerprint(f"  {grouped}\n", KID, PK)
    assert parse_fingerprint(grouped) == fp


def test_check_refuses_other_key_without_secrets() -> None:
    fp = keyring_fingerprint(KID, PK)
    other = bytes(32)
    with pytest.raises(UntrustedKeyringError) as info:
        check_fingerprint(fp, KID, other)
    assert isinstance(info.value, KeyringError)
    msg = str(info.value)
    assert KID in msg and fp in msg and keyring_fingerprint(KID, other) in msg
    assert PK.hex() not in msg and other.hex() not in msg
    with pytest.raises(UntrustedKeyringError):
        check_fingerprint(fp, "ffff" + KID[4:], PK)


@pytest.mark.parametrize("pos", [4, 10, 41])
def test_typo_is_a_format_error(pos: int) -> None:
    fp = keyring_fingerprint(KID, PK)
    c = "q" if fp[pos] != "q" else "p"
    with pytest.raises(FormatError, match="checksum"):
        check_fingerprint(fp[:pos] + c + fp[pos + 1 :], KID, PK)


@pytest.mark.parametrize(
    "bad", ["", "ksk1", "age1qqqq", "ksk1" + "b" * 38, "x" * 1000, "ksk1" + "q" * 39]
)
def test_malformed_fingerprints(bad: str) -> None:
    with pytest.raises(FormatError):
        parse_fingerprint(bad)


def test_bad_public_key_and_id() -> None:
    with pytest.raises(FormatError):
        keyring_fingerprint(KID, b"short")
    with pytest.raises(FormatError):
        keyring_fingerprint("has space", PK)
    with pytest.raises(TypeError):
        keyring_fingerprint(KID, "00" * 32)  # type: ignore[arg-type]


# -- the known-keyrings file -----------------------------------------------------------------


def test_pin_lookup_roundtrip(tmp_path: Path) -> None:
    store = KnownKeyrings(tmp_path / "cfg" / "known_keyrings")
    assert store.lookup(KID) is None
    entry = store.pin_keyring(KID, PK, "payroll  prod")
    assert entry == KnownKeyring(KID, keyring_fingerprint(KID, PK), "payroll prod")
    assert KnownKeyrings(store.path).lookup(KID) == entry
    line = [x for x in store.path.read_text().splitlines() if not x.startswith("#")]
    assert line == [f"{KID} {entry.fingerprint} payroll prod"]
    # idempotent; a new label replaces the old one
    store.pin_keyring(KID, PK, "payroll")
    assert store.entries() == [dataclasses.replace(entry, label="payroll")]
    assert store.remove(KID) and store.lookup(KID) is None and not store.remove(KID)


def test_pin_of_a_different_key_is_refused(tmp_path: Path) -> None:
    store = KnownKeyrings(tmp_path / "known")
    store.pin_keyring(KID, PK)
    before = store.path.read_bytes()
    with pytest.raises(UntrustedKeyringError, match="pinned"):
        store.pin_keyring(KID, bytes(32))
    assert store.path.read_bytes() == before
    store.pin_keyring(KID, bytes(32), replace=True)
    assert store.lookup(KID) == KnownKeyring(KID, keyring_fingerprint(KID, bytes(32)))


def test_atomic_write_leaves_no_temp_and_keeps_old_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = KnownKeyrings(tmp_path / "known")
    store.pin_keyring(KID, PK, "one")
    before = store.path.read_bytes()

    def boom(*a: object, **k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        store.pin_keyring("aa" * 16, PK, "two")
    assert store.path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["known", "known.lock"]


def test_concurrent_pins_all_land(tmp_path: Path) -> None:
    store = KnownKeyrings(tmp_path / "known")
    ids = [f"{i:032x}" for i in range(16)]
    threads = [threading.Thread(target=store.pin_keyring, args=(i, PK)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(e.keyring_id for e in store.entries()) == ids


def test_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(trust.ENV_KNOWN_KEYRINGS, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert KnownKeyrings().path == tmp_path / "keysplit" / "known_keyrings"
    monkeypatch.setenv(trust.ENV_KNOWN_KEYRINGS, str(tmp_path / "x"))
    assert trust.default_known_keyrings_path() == tmp_path / "x"


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe",
        b"onlyid\n",
        b"bad id ksk1qqqq\n",
        b"%s %s\n" % (KID.encode(), b"ksk1" + b"q" * 38),
        b"x" * 2000 + b"\n",
        b"%s %s \x07bell\n" % (KID.encode(), keyring_fingerprint(KID, PK).encode()),
        b"%s %s\n%s %s\n"
        % (
            KID.encode(),
            keyring_fingerprint(KID, PK).encode(),
            KID.encode(),
            keyring_fingerprint(KID, bytes(32)).encode(),
        ),
    ],
)
def test_bad_files_are_format_errors(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "known"
    p.write_bytes(content)
    with pytest.raises(FormatError):
        KnownKeyrings(p).entries()


def test_oversized_file_refused_before_reading_it_all(tmp_path: Path) -> None:
    p = tmp_path / "known"
    p.write_bytes(b"#" * (trust.MAX_FILE_BYTES + 10))
    with pytest.raises(FormatError, match="larger"):
        KnownKeyrings(p).entries()


def test_comments_blank_lines_and_duplicates(tmp_path: Path) -> None:
    fp = keyring_fingerprint(KID, PK)
    p = tmp_path / "known"
    p.write_text(f"# c\n\n  {KID}  {fp.upper()}   a  label \n{KID} {fp}\n")
    assert KnownKeyrings(p).entries() == [KnownKeyring(KID, fp, "a label")]


def test_an_edit_keeps_comments_other_lines_and_a_link(tmp_path: Path) -> None:
    """(files red team, 'found, not fixed') pin, re-pin and remove rewrote the whole file
    from its parsed entries: every comment and blank line an operator wrote was dropped,
    and a known_keyrings that is a symbolic link (kept in a dotfiles repository) was
    replaced by a regular file. Now only the entry's own line changes, written where the
    link points."""
    fp, other = keyring_fingerprint(KID, PK), keyring_fingerprint("ab" * 16, PK)
    real = tmp_path / "dotfiles" / "known_keyrings"
    real.parent.mkdir()
    text = f"# prod keyrings, confirmed by phone 2026-11-02\n\n{'ab' * 16} {other} hr\n# end\n"
    real.write_text(text)
    link = tmp_path / "cfg" / "known_keyrings"
    link.parent.mkdir()
    link.symlink_to(real)
    store = KnownKeyrings(link)
    store.pin_keyring(KID, PK, "payroll")
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert real.read_text() == text + f"{KID} {fp} payroll\n"
    store.pin_keyring(KID, bytes(32), "payroll", replace=True)  # a deliberate re-pin
    new = keyring_fingerprint(KID, bytes(32))
    assert real.read_text() == text + f"{KID} {new} payroll\n"
    assert store.remove("ab" * 16)
    assert real.read_text() == (
        f"# prod keyrings, confirmed by phone 2026-11-02\n\n# end\n{KID} {new} payroll\n"
    )
    assert link.is_symlink() and not (link.parent / "known_keyrings.lock").exists()


# -- verify_keyring and the forged-key attack ------------------------------------------------


def _forge_public_key(path: Path, new_pk: bytes) -> None:
    """What an attacker with write access to the keyring directory does: a well-formed
    keyring.ksk whose public metadata names their key (the sealed part is untouched)."""
    f = path / "keyring.ksk"
    data = f.read_bytes()
    meta, _aad, nonce, ct = kf.parse(data)
    forged = dataclasses.replace(meta, public_key=new_pk.hex()).to_json()
    f.write_bytes(kf._HEAD.pack(kf.MAGIC, kf.VERSION, len(forged)) + forged + nonce + ct)


def test_forged_keyring_key_is_refused(tmp_path: Path) -> None:
    kr, _ = keysplit.Keyring.create(tmp_path / "kr", 2, ["a", "b"])
    known = KnownKeyrings(tmp_path / "known_keyrings")
    fp = known.pin_keyring(kr.keyring_id, kr.public_key, "test").fingerprint
    assert verify_keyring(kr.keyring_id, kr.public_key, known=known) == "pinned"
    assert verify_keyring(kr.keyring_id, kr.public_key, expect=fp, known=known) == "expected"

    _forge_public_key(tmp_path / "kr", bytes(range(1, 33)))
    forged = keysplit.Keyring.open(tmp_path / "kr")
    assert forged.public_key != kr.public_key  # the file is accepted as well-formed ...
    with pytest.raises(UntrustedKeyringError):  # ... but the pin refuses it
        verify_keyring(forged.keyring_id, forged.public_key, known=known)
    with pytest.raises(UntrustedKeyringError):
        verify_keyring(forged.keyring_id, forged.public_key, expect=fp)
    # a typed fingerprint of the forged key does not override a pin that says otherwise
    forged_fp = keyring_fingerprint(forged.keyring_id, forged.public_key)
    with pytest.raises(UntrustedKeyringError):
        verify_keyring(forged.keyring_id, forged.public_key, expect=forged_fp, known=known)


def test_unpinned_policy(tmp_path: Path) -> None:
    known = KnownKeyrings(tmp_path / "none")
    assert verify_keyring(KID, PK, known=known) == "unpinned"
    with pytest.raises(UntrustedKeyringError, match="not pinned") as info:
        verify_keyring(KID, PK, known=known, require=True)
    assert isinstance(info.value, KeysplitError) and info.value.hint
    assert "expect=FPR" in info.value.hint  # a library caller has no --expect


def test_an_unpinned_seal_from_the_library_names_the_keyword_to_pass(tmp_path: Path) -> None:
    """``keysplit.encrypt_file`` on an unpinned keyring hinted "pass --expect FPR": a CLI
    flag, where the library caller's fix is ``expect=``. Both are named now."""
    kr, _ = keysplit.Keyring.create(tmp_path / "vault", 2, ["a", "b"])
    (tmp_path / "in").write_bytes(b"x")
    with pytest.raises(UntrustedKeyringError) as info:
        keysplit.encrypt_file(
            kr, str(tmp_path / "in"), str(tmp_path / "out"), known=KnownKeyrings(tmp_path / "k")
        )
    assert info.value.hint is not None and "expect=FPR" in info.value.hint
    assert "--expect FPR" in info.value.hint and not (tmp_path / "out").exists()
