"""Token scopes are judged on the canonical subject the keyring uses (issue 21, item 1).

A token scoped to ``acme`` used to reach tenant ``acmé/`` by sending ``acme`` + U+0301
(the NFD spelling): the policy compared the raw text, the keyring then wrote and read the
NFC subject. These tests send every spelling through every endpoint that names subjects.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
from service_unseal import unseal_service

import keysplit
from keysplit.errors import PermissionDenied
from keysplit.service import _wire as wire
from keysplit.service.core import KeyService, Request
from keysplit.service.tokens import OPERATIONS, TokenList, TokenPolicy, check_prefix, mac_key

NFC_TENANT = "acm\u00e9/"  # "acmé/"
NFD_TENANT = unicodedata.normalize("NFD", NFC_TENANT)  # "acme" + U+0301 + "/"
ATTACK = NFD_TENANT + "ledger"  # raw text starts with "acme"; the keyring uses "acmé/ledger"


def _policy(prefix: str) -> TokenPolicy:
    return TokenPolicy("0" * 16, "t", "0" * 64, OPERATIONS, prefix)


@pytest.mark.parametrize(
    ("prefix", "subject", "covered"),
    [
        ("acme", ATTACK, False),  # the bypass: NFC "acmé/ledger" does not start with "acme"
        ("acme", "acme" + "\u0301\u0323/x", False),  # marks out of canonical order
        ("acme/", ATTACK, False),
        ("acme/", "acme/x", True),
        (NFC_TENANT, ATTACK, True),  # the tenant's own NFD spelling is its subject
        (NFC_TENANT, NFC_TENANT + "x", True),
        (NFD_TENANT, NFC_TENANT + "x", True),  # a prefix typed in NFD covers NFC subjects
        (NFD_TENANT, "acme/x", False),
        ("finance/", "\ufb01nance/x", False),  # NFKC-equal is another subject (names.py)
        ("\ufb01nance/", "finance/x", False),
        ("acme/", "", False),  # a subject the keyring refuses is outside every prefix
        ("", "", True),  # ...but the empty prefix lets the operation report it
        ("acme/", "acme/" + "x" * 2000, False),
    ],
)
def test_covers_compares_canonical_subjects(prefix: str, subject: str, covered: bool) -> None:
    pol = _policy(prefix)
    assert pol.covers(subject) is covered
    if covered:
        pol.check("decrypt", [subject])
    else:
        with pytest.raises(PermissionDenied):
            pol.check("decrypt", [subject])


def test_prefix_must_end_at_a_separator() -> None:
    assert check_prefix("") == ""
    assert check_prefix("acme/") == "acme/"
    assert check_prefix(NFD_TENANT) == NFC_TENANT  # stored canonical
    for bad in ("acme", "acm\u00e9", "tenant/a", NFD_TENANT[:-1]):
        with pytest.raises(ValueError, match="end with '/'"):
            check_prefix(bad)
    with pytest.raises(TypeError):
        check_prefix(None)  # type: ignore[arg-type]


# -- the service, every endpoint that names subjects --------------------------------------


@pytest.fixture
def scoped(tmp_path: Path) -> tuple[KeyService, dict[str, str]]:
    """A served keyring with tokens: ``all`` (prefix ""), ``acme`` (a list written before
    the separator rule: prefix "acme"), ``acmeslash`` ("acme/") and ``tenant`` (the NFC
    tenant's prefix, given in NFD at create)."""
    kr, shares = keysplit.Keyring.create(tmp_path / "kr", 2, ["a", "b", "c"])
    with kr.unseal([shares["a"], shares["b"]]) as u:
        key = mac_key(u.audit_key(), kr.keyring_id)
    tl = TokenList.read(kr.path, kr.keyring_id)
    tokens = {
        "all": tl.create(key, name="all", allow=list(OPERATIONS), subject_prefix="")[0],
        "acmeslash": tl.create(key, name="slash", allow=list(OPERATIONS), subject_prefix="acme/")[
            0
        ],
        "tenant": tl.create(key, name="tenant", allow=list(OPERATIONS), subject_prefix=NFD_TENANT)[
            0
        ],
    }
    legacy, pol = tl.create(key, name="acme", allow=list(OPERATIONS), subject_prefix="acme/")
    tl.tokens[-1] = TokenPolicy(pol.id, pol.name, pol.sha256, pol.allow, "acme", pol.created)
    tl._write(key)  # as a list from before the rule would hold it, MACed
    tokens["acme"] = legacy
    svc = KeyService(kr.path, log=lambda m: None)
    unseal_service(svc, kr.keyring_id, [shares["a"], shares["b"]])
    return svc, tokens


def _call(svc: KeyService, token: str, op: str, subject: str, payload: bytes = b"x") -> int:
    if op in ("encrypt", "decrypt"):
        body = wire.encode_frame({}, [payload], [subject])
    elif op == "datakey":
        body = wire.encode_frame({"create": False}, [None], [subject])
    else:
        body = json.dumps({"subjects": [subject], "hold": False}).encode()
    headers = {"authorization": f"Bearer {token}"}
    return svc.handle(Request("POST", f"/v1/{op}", headers, body)).status


OPS = ("encrypt", "decrypt", "datakey", "hold", "shred")


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("token", ["acme", "acmeslash"])
def test_no_spelling_reaches_another_tenant(
    scoped: tuple[KeyService, dict[str, str]], op: str, token: str
) -> None:
    svc, tokens = scoped
    kr = svc._kr
    assert kr is not None
    victim = NFC_TENANT + "ledger"
    rec = kr.encrypt(b"tenant secret", subject=victim)
    spellings = {
        ATTACK,
        "acme" + "\u0301" + "/ledger",
        unicodedata.normalize("NFKD", victim),
        unicodedata.normalize("NFKC", victim),
    }
    for s in spellings:
        assert unicodedata.normalize("NFC", s) == victim
        assert _call(svc, tokens[token], op, s, rec) == 403, (op, s)
    assert kr.decrypt(rec, subject=victim) == b"tenant secret"  # nothing was shredded


@pytest.mark.parametrize("op", OPS)
def test_the_tenants_own_spellings_are_served(
    scoped: tuple[KeyService, dict[str, str]], op: str
) -> None:
    svc, tokens = scoped
    kr = svc._kr
    assert kr is not None
    rec = kr.encrypt(b"mine", subject=NFC_TENANT + "notes")
    for s in (NFC_TENANT + "notes", NFD_TENANT + "notes"):
        assert _call(svc, tokens["tenant"], op, s, rec) == 200, (op, s)
    assert _call(svc, tokens["tenant"], op, "acme/notes", rec) == 403
    assert _call(svc, tokens["acmeslash"], op, "acme/notes", rec) == 200
