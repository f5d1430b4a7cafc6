"""Tokens with an expiry: ``keysplit token create ... --expires-in``, checked by the service,
shown by ``token list``; lists written before expiries keep their MAC and keep working.
Real ``keysplit`` processes (the CLI and a service) where the expiry crosses them."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_helpers import Server, cli, make_keyring, share_file, unseal

import keysplit
from keysplit import Client, PermissionDenied
from keysplit.errors import IntegrityError
from keysplit.service.tokens import OPERATIONS, TokenList, TokenPolicy, mac_key


@pytest.fixture
def sockdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="kse", dir="/tmp"))  # short: sun_path
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _create(tmp: Path, vault: Path, name: str, *extra: str) -> str:
    shares = [share_file(tmp / "vault-shares", n) for n in "ab"]
    args: list[str] = ["token", "create", str(vault), "--name", name, "--allow", "encrypt,decrypt"]
    args += ["--subject-prefix", "", *extra]
    for s in shares:
        args += ["--share", str(s)]
    r = cli(*args, cwd=tmp)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_an_expired_token_is_refused_by_the_service_and_listed_as_expired(
    tmp_path: Path, sockdir: Path
) -> None:
    vault = make_keyring(tmp_path, 2, ["a", "b", "c"])
    short = _create(tmp_path, vault, "short", "--expires-in", "2s")
    long = _create(tmp_path, vault, "long", "--expires-in", "90d")
    never = _create(tmp_path, vault, "never")
    with Server(vault, sockdir / "s.sock") as srv:
        for n in "ab":
            assert unseal(tmp_path, vault, srv, n).returncode == 0
        kr = keysplit.Keyring.open(vault)
        (pol,) = [t for t in TokenList.read(vault, kr.keyring_id).tokens if t.name == "short"]
        deadline = time.monotonic() + 60
        while not pol.expired():  # the list's own clock: no timing asserted
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with pytest.raises(PermissionDenied, match="expired"):
            Client(srv.url, token=short).encrypt(b"x", subject="u/1")
        for tok in (long, never):  # unexpired, and without an expiry (as before)
            c = Client(srv.url, token=tok)
            assert c.decrypt(c.encrypt(b"x", subject="u/1"), subject="u/1") == b"x"
    made = {e.data["token"]: e.data["expires"] for e in kr.audit_log().entries()
            if e.event == "token-create"}  # fmt: skip
    assert made["never"] == "" and made["long"] == pol_of(vault, "long").expires
    denied = [e for e in kr.audit_log().entries() if e.event == "token-denied"]
    assert [e.data.get("reason") for e in denied][-1:] == ["token expired"], denied
    assert denied[-1].data["operation"] == "encrypt" and denied[-1].data["token"] == "short"
    r = cli("token", "list", vault, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["short"]["expired"] and not rows["long"]["expired"]
    assert "expires" in rows["long"] and "expires" not in rows["never"]
    text = cli("token", "list", vault, cwd=tmp_path).stdout
    (line,) = [ln for ln in text.splitlines() if " short " in ln]
    assert " expired " in line and "expires " in line


def pol_of(vault: Path, name: str) -> TokenPolicy:
    kr = keysplit.Keyring.open(vault)
    (pol,) = [t for t in TokenList.read(vault, kr.keyring_id).tokens if t.name == name]
    return pol


def test_a_name_of_an_expired_token_can_be_issued_again(tmp_path: Path) -> None:
    vault = make_keyring(tmp_path, 2, ["a", "b", "c"])
    kr = keysplit.Keyring.open(vault)
    _create(tmp_path, vault, "ci", "--expires-in", "1")
    (pol,) = TokenList.read(vault, kr.keyring_id).tokens
    deadline = time.monotonic() + 60
    while not pol.expired():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    _create(tmp_path, vault, "ci")  # an active token of that name would be refused


@pytest.mark.parametrize(
    "bad", ["0", "-5s", "soon", "5w", "1.5h", "99999999999d", "1" + "0" * 400, "9" * 5000 + "d"]
)
def test_create_refuses_a_duration_it_cannot_read(tmp_path: Path, bad: str) -> None:
    vault = make_keyring(tmp_path, 2, ["a", "b", "c"])
    r = cli(
        "token", "create", vault, "--name", "t", "--allow", "encrypt", "--subject-prefix", "",
        "--expires-in", bad, "--share", share_file(tmp_path / "vault-shares", "a"),
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "expir" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (vault / "service-tokens.json").exists()


def test_an_expiry_is_under_the_mac_and_old_entries_keep_theirs(tmp_path: Path) -> None:
    """Moving an expiry in the file (to keep a token alive) fails the list's MAC; an entry
    without one serializes as before (its MAC unchanged), so old lists verify."""
    kr, shares = keysplit.Keyring.create(tmp_path / "vault", 2, ["a", "b", "c"])
    with kr.unseal([shares["a"], shares["b"]]) as u:
        key = mac_key(u.audit_key(), kr.keyring_id)
    tl = TokenList.read(kr.path, kr.keyring_id)
    tl.create(key, name="old", allow=list(OPERATIONS), subject_prefix="")
    tl.create(key, name="new", allow=["encrypt"], subject_prefix="", expires_in=60)
    old, new = TokenList.read(kr.path, kr.keyring_id).tokens
    assert "expires" not in old.as_dict() and new.expires and not new.expired()
    TokenList.read(kr.path, kr.keyring_id).verify(key)
    doc = json.loads(tl.path.read_text())
    doc["tokens"][1]["expires"] = "2999-01-01T00:00:00Z"
    tl.path.write_text(json.dumps(doc))
    with pytest.raises(IntegrityError):
        TokenList.read(kr.path, kr.keyring_id).verify(key)
    with pytest.raises(ValueError, match="expiry"):
        tl.create(key, name="x", allow=["encrypt"], subject_prefix="", expires_in=float("nan"))
    assert TokenPolicy("0" * 16, "t", "0" * 64, ("encrypt",), "").expired() is False
