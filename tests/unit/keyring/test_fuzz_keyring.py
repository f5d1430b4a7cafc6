"""Hypothesis red team of the keyring file's metadata and the pending-rekey file.

tests/unit/parsers/test_fuzz_parsers.py mutates keyring files byte by byte; here the
metadata JSON is edited as a document (a field deleted, duplicated, retyped, set to a
bound, an infinity or text that is not Unicode) and written back with its length field
fixed, so every check past the JSON parser runs. Whatever the edit: a FormatError, or
metadata that encodes to exactly the bytes read. A pending-rekey file so damaged never
blocks the current keyring.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paths import VECTORS_DIR
from tamper import mutate_json, read_of_a_planted_fifo

from keysplit import FormatError, Keyring
from keysplit.keyring import KEYRING_FILE, PENDING_FILE, KeyringHome
from keysplit.keyring import file as kf

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_FILE = bytes.fromhex(json.loads((VECTORS_DIR / "keyring.json").read_text())["cases"][0]["file"])
_MLEN = struct.unpack_from(">I", _FILE, 5)[0]
_META = json.loads(_FILE[9 : 9 + _MLEN])
_TAIL = _FILE[9 + _MLEN :]


def _with_meta(raw: bytes) -> bytes:
    return _FILE[:5] + struct.pack(">I", len(raw)) + raw + _TAIL


def _canonical_text(doc: object) -> bytes:
    """The metadata as keysplit writes it (UTF-8, not escaped), but a lone surrogate as
    its JSON escape (it has no UTF-8 form)."""
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", "backslashreplace").replace(b"Infinity", b"1e400")


@FUZZ
@given(st.data())
def test_edited_metadata_is_a_format_error_or_exact(data: st.DataObject) -> None:
    edited = mutate_json(_META, data.draw)
    raw = _canonical_text(edited)
    try:
        meta, aad, _, _ = kf.parse(_with_meta(raw))
    except FormatError:
        return
    assert meta.to_json() == raw and aad == _FILE[:5] + struct.pack(">I", len(raw)) + raw


@pytest.mark.parametrize("name", ["\\ud800", "a\\udfffb"])
def test_a_custodian_name_that_is_not_unicode_is_a_format_error(name: str) -> None:
    raw = _FILE[9 : 9 + _MLEN]
    first = _META["share_set"]["custodians"][0]["name"]
    edited = raw.replace(f'"name":"{first}"'.encode(), f'"name":"{name}"'.encode(), 1)
    assert edited != raw
    with pytest.raises(FormatError, match="custodian 0 name"):
        kf.parse(_with_meta(edited))


def test_a_pending_file_naming_a_custodian_not_in_unicode_does_not_block_the_keyring(
    tmp_path: Path,
) -> None:
    """The pending rekey's metadata is read on every open; a damaged one is ignored
    (the rule of KeyringHome.pending_meta), whatever the damage."""
    path = tmp_path / "kr"
    _, shares = Keyring.create(path, 2, ["alice", "bob", "carol"])
    data = (path / KEYRING_FILE).read_bytes()
    mlen = struct.unpack_from(">I", data, 5)[0]
    meta = data[9 : 9 + mlen].replace(b'"name":"alice"', b'"name":"\\ud800"', 1)
    rest = data[9 + mlen :]
    (path / PENDING_FILE).write_bytes(data[:5] + struct.pack(">I", len(meta)) + meta + rest)
    kr = Keyring.open(path)
    assert kr.pending is None
    kr.unseal([shares["alice"], shares["bob"]]).close()


def _huge(path: Path, size: int) -> None:
    """A sparse file of ``size`` bytes: no disk used, but reading it whole costs ``size``."""
    with open(path, "wb") as fh:
        fh.truncate(size)


@pytest.mark.parametrize("name", [KEYRING_FILE, PENDING_FILE])
def test_a_huge_planted_keyring_file_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """keyring.ksk and keyring.pending past the largest file the format describes are
    refused by their size, not read whole first; a pending file so refused is ignored
    (it never blocks the current keyring)."""
    path = tmp_path / "kr"
    Keyring.create(path, 2, ["alice", "bob", "carol"])
    current = kf.parse((path / KEYRING_FILE).read_bytes())[0]
    _huge(path / name, kf.MAX_FILE + 1)

    def whole(self: Path) -> bytes:
        raise AssertionError(f"{self} read whole before its size was checked")

    monkeypatch.setattr(Path, "read_bytes", whole)
    home = KeyringHome(path)
    read = home.read_keyring if name == KEYRING_FILE else home.read_pending
    too_large = rf"{name} is too large \({kf.MAX_FILE + 1} bytes, at most {kf.MAX_FILE}\)"
    with pytest.raises(FormatError, match=too_large):
        read()
    if name == PENDING_FILE:
        assert home.pending_meta(current) is None


def test_the_keyring_file_bound_is_the_largest_file_the_format_describes() -> None:
    """MAX_FILE = header + the largest metadata + secrets of the most KEKs a u16 counts:
    a keyring of 65,535 KEK versions, its metadata padded to the limit, is exactly it."""
    n = 0xFFFF
    meta = kf.KeyringMeta(
        keyring_id="ab" * 16,
        generation=1,
        set_id="cd" * 8,
        threshold=2,
        custodians=(kf.Custodian("alice", 1), kf.Custodian("bob", 2)),
        public_key="ef" * 32,
        current_kek=n,
        kek_versions=tuple(range(1, n + 1)),
        next_kek=n + 1,
    )
    secrets = kf.KeyringSecrets(b"x" * 32, {v: b"k" * 16 for v in range(1, n + 1)})
    data = kf.serialize(meta, secrets, b"m" * 16, b"n" * 12)
    assert kf.parse(data)[0] == meta
    assert len(data) + kf._MAX_META - len(meta.to_json()) == kf.MAX_FILE
    with pytest.raises(struct.error):  # no more KEKs than a u16 counts can be written
        kf.KeyringSecrets(b"x" * 32, {v: b"k" * 16 for v in range(1, n + 2)}).to_bytes()


@pytest.mark.parametrize("name", [KEYRING_FILE, PENDING_FILE, "init-verify"])
def test_a_fifo_planted_as_a_keyring_file_is_refused_without_waiting(
    tmp_path: Path, name: str
) -> None:
    """A FIFO in place of keyring.ksk, keyring.pending or an init --verify state file is
    refused at once (a pending one ignored, as any damaged pending file): every unseal
    (and the key service's) blocked in its open for a writer that never came."""
    path = tmp_path / "kr"
    Keyring.create(path, 2, ["alice", "bob", "carol"])
    current = kf.parse((path / KEYRING_FILE).read_bytes())[0]
    home = KeyringHome(path)
    if name == KEYRING_FILE:
        (path / name).unlink()
        got = read_of_a_planted_fifo(path / name, home.read_keyring)
    elif name == PENDING_FILE:
        got = read_of_a_planted_fifo(path / name, lambda: home.pending_meta(current))
        assert got is None  # ignored: it never blocks the current keyring
        with pytest.raises(FormatError) as raised:
            home.read_pending()
        got = raised.value
    else:
        got = read_of_a_planted_fifo(
            home.init_verify_path, lambda: home.verification(current, None)
        )
    assert isinstance(got, FormatError), got
    assert "is a FIFO, not a regular file" in str(got)
