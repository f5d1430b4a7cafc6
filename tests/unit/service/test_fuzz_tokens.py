"""Hypothesis red team of the key service's token list (``service-tokens.json`` and the
revocations file beside it).

The list is parsed before its MAC is checked (``TokenList.read``), so a hostile edit
reaches every field check: whatever the edit (a field deleted, duplicated, retyped, set to
a bound, an infinity or text that is not Unicode), reading raises a KeysplitError or gives
a list whose MAC check refuses it unless it says what the original said; the service
then accepts no token at all (fail closed), never the list it had before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_unseal import unseal_service
from tamper import dump_json, mutate_json, read_of_a_planted_fifo

import keysplit
from keysplit.errors import FormatError, KeysplitError
from keysplit.service import _wire as wire
from keysplit.service.core import KeyService, Request
from keysplit.service.tokens import REVOKED_FILE, TOKENS_FILE, TokenList, mac_key

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_KID = "ab" * 16
_KEY = b"k" * 32


def _make(directory: Path) -> dict[str, Any]:
    tl = TokenList(directory, _KID)
    tl.create(_KEY, name="app", allow=["encrypt", "decrypt"], subject_prefix="acme/")
    tl.create(_KEY, name="ops", allow=["datakey"], subject_prefix="", expires_in=3600)
    tl.revoke("app")
    tl.fold_revocations(_KEY)
    tl.create(_KEY, name="app", allow=["encrypt"], subject_prefix="")
    doc: dict[str, Any] = json.loads((directory / TOKENS_FILE).read_bytes())
    return doc


_MADE: list[tuple[Path, dict[str, Any], dict[str, Any]]] = []


def _original(factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """A directory holding a list (made once: tokens, an expiry, a folded revocation), the
    list's document and its MACed body."""
    if not _MADE:
        d = factory.mktemp("tokens")
        doc = _make(d)
        _MADE.append((d, doc, TokenList.read(d, _KID)._body()))
    return _MADE[0]


@FUZZ
@given(st.data())
def test_an_edited_token_list_is_refused_or_says_the_same(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    d, original, body = _original(tmp_path_factory)
    (d / REVOKED_FILE).unlink(missing_ok=True)
    (d / TOKENS_FILE).write_bytes(dump_json(mutate_json(original, data.draw)))
    if data.draw(st.booleans()):
        ids = [t["id"] for t in original["tokens"]] + ["\ud800", "", "zz" * 8]
        lines = [f"{data.draw(st.sampled_from(ids))} {data.draw(st.text(max_size=5))}"]
        (d / REVOKED_FILE).write_bytes("\n".join(lines).encode("utf-8", "surrogatepass"))
    try:
        tl = TokenList.read(d, _KID)
        for t in tl.tokens:
            t.expired()
            t.covers("acme/x")
            t.public_dict()
        tl.active()
        tl.verify(_KEY)
    except KeysplitError:
        return
    assert tl._body() == body


@pytest.mark.parametrize("serial", ["1e400", "-1e400"])
def test_a_serial_read_as_infinity_is_a_format_error(tmp_path: Path, serial: str) -> None:
    doc = _make(tmp_path)
    text = json.dumps(doc).replace(f'"serial": {doc["serial"]}', f'"serial": {serial}')
    (tmp_path / TOKENS_FILE).write_text(text)
    with pytest.raises(keysplit.FormatError, match="malformed token list"):
        TokenList.read(tmp_path, _KID)


_EDITS = {
    "serial read as infinity": lambda doc: {**doc, "serial": float("inf")},
    "a MAC that is not ASCII": lambda doc: {**doc, "mac": "\u00e9" * 64},
}


@pytest.mark.parametrize("edit", list(_EDITS))
def test_the_service_accepts_no_token_from_a_list_so_edited(tmp_path: Path, edit: str) -> None:
    """Fail closed: the tokens of the list read before are not accepted any more."""
    kr, shares = keysplit.Keyring.create(tmp_path / "kr", 2, ["a", "b", "c"])
    with kr.unseal([shares["a"], shares["b"]]) as u:
        key = mac_key(u.audit_key(), kr.keyring_id)
    token = TokenList.read(kr.path, kr.keyring_id).create(
        key, name="all", allow=["encrypt"], subject_prefix=""
    )[0]
    svc = KeyService(kr.path, log=lambda m: None)
    unseal_service(svc, kr.keyring_id, [shares["a"], shares["b"]])
    frame = wire.encode_frame({}, [b"x"], ["u/1"])

    def encrypt() -> int:
        headers = {"authorization": f"Bearer {token}"}
        return svc.handle(Request("POST", "/v1/encrypt", headers, frame)).status

    assert encrypt() == 200
    path = kr.path / TOKENS_FILE
    path.write_bytes(dump_json(_EDITS[edit](json.loads(path.read_bytes()))))
    svc.reload_tokens(force=True)
    assert encrypt() == 401
    events = [e.event for e in svc.keyring.audit_log().entries()]
    assert "token-list-invalid" in events


def test_a_mac_that_is_not_ascii_fails_authentication(tmp_path: Path) -> None:
    doc = _make(tmp_path)
    (tmp_path / TOKENS_FILE).write_bytes(dump_json({**doc, "mac": "\u00e9" * 64}))
    with pytest.raises(keysplit.IntegrityError):
        TokenList.read(tmp_path, _KID).verify(_KEY)


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "\ud800"), ("subject_prefix", "a\udfff/"), ("created_by", ["\ud800"])],
)
def test_an_entry_whose_text_is_not_unicode_is_a_format_error(
    tmp_path: Path, field: str, value: object
) -> None:
    """Before, the list was read, and ``token revoke`` (no quorum, no MAC check) then
    failed writing the entry's name with UnicodeEncodeError."""
    doc = _make(tmp_path)
    doc["tokens"][-1][field] = value
    (tmp_path / TOKENS_FILE).write_bytes(dump_json(doc))
    with pytest.raises(keysplit.FormatError, match="not Unicode"):
        TokenList.read(tmp_path, _KID).revoke(doc["tokens"][-1]["id"])


def test_a_huge_planted_token_list_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service-tokens.json past its limit is refused by its size, not read whole first
    (a planted sparse file of many GiB would cost that much memory before the check)."""
    limit = 8 << 20
    with open(tmp_path / TOKENS_FILE, "wb") as fh:
        fh.truncate(limit + 1)

    def whole(self: Path) -> bytes:
        raise AssertionError(f"{self} read whole before its size was checked")

    monkeypatch.setattr(Path, "read_bytes", whole)
    with pytest.raises(
        FormatError, match=rf"token list is too large \({limit + 1} bytes, at most {limit}\)"
    ):
        TokenList.read(tmp_path, _KID)


@pytest.mark.parametrize("name", [TOKENS_FILE, REVOKED_FILE])
def test_a_fifo_planted_as_a_token_file_is_refused_without_waiting(
    tmp_path: Path, name: str
) -> None:
    """A FIFO in place of service-tokens.json or service-tokens.revoked is a FormatError at
    once: the service's token reload (and ``keysplit token``) blocked in its open for a
    writer that never came."""
    got = read_of_a_planted_fifo(tmp_path / name, lambda: TokenList.read(tmp_path, _KID))
    assert isinstance(got, FormatError), got
    assert "is a FIFO, not a regular file" in str(got)


def test_a_huge_planted_revocation_file_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """service-tokens.revoked (appended by ``token revoke`` without a quorum, read at every
    reload) is refused by its size as the token list is, not read whole first."""
    limit = 8 << 20
    with open(tmp_path / REVOKED_FILE, "wb") as fh:
        fh.truncate(limit + 1)

    def whole(self: Path, *args: Any, **kwargs: Any) -> str:
        raise AssertionError(f"{self} read whole before its size was checked")

    monkeypatch.setattr(Path, "read_text", whole)
    with pytest.raises(FormatError, match=rf"revocation file is too large \({limit + 1} bytes"):
        TokenList.read(tmp_path, _KID)
