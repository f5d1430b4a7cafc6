"""docs/API.md describes the fields the key service's answers really have."""

from __future__ import annotations

import re
from pathlib import Path

from paths import REPO

from keysplit import Keyring
from keysplit.service.core import KeyService

API = re.sub(r"\s+", " ", (REPO / "docs" / "API.md").read_text())


def documented_keys(endpoint: str) -> set[str]:
    m = re.search(re.escape(f"`{endpoint}`") + r"[^`]*-> [^`]*`(\{.*?\})`", API)
    assert m is not None, endpoint
    return set(re.findall(r'"(\w+)"', m.group(1)))


def test_status_fields_are_documented(tmp_path: Path) -> None:
    kr, _ = Keyring.create(tmp_path / "vault", 2, ["a", "b"])
    answer = KeyService(kr.path, log=lambda m: None).status_dict()
    assert answer["sealed"] is True
    missing = set(answer) - documented_keys("GET /v1/status")
    assert not missing, f"docs/API.md GET /v1/status lacks {sorted(missing)}"


def test_unseal_offer_fields_are_documented(tmp_path: Path) -> None:
    kr, _ = Keyring.create(tmp_path / "vault", 2, ["a", "b"])
    offer = KeyService(kr.path, log=lambda m: None).remote.offer()
    missing = set(offer) - documented_keys("GET /v1/unseal")
    assert not missing, f"docs/API.md GET /v1/unseal lacks {sorted(missing)}"
