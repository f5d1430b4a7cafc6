"""Decided (issue 21): a service token minted before a rekey keeps working after it.

A rekey replaces who can unseal (master key, shares), not what the unsealed keyring
authorizes: the token list's MAC key derives from the keyring's X25519 key, which rekey
keeps (as it keeps KEKs and data keys), so tokens, like records, survive. Cutting a token
off is ``keysplit token revoke``; SECURITY.md says so. This test pins the decision, so a
change to it is deliberate.
"""

from __future__ import annotations

from pathlib import Path

from keysplit import Keyring
from keysplit.service.tokens import TokenList, hash_token, mac_key


def test_a_token_minted_before_a_rekey_still_verifies_after_it(tmp_path: Path) -> None:
    kr, shares = Keyring.create(tmp_path / "kr", 2, ["a", "b", "c"])
    with kr.unseal([shares["a"], shares["b"]]) as u:
        key = mac_key(u.audit_key(), kr.keyring_id)
        token, _ = TokenList.read(kr.path, kr.keyring_id).create(
            key, name="app", allow=["encrypt"], subject_prefix="c/"
        )
        new = u.rekey()
    kr = Keyring.open(tmp_path / "kr")
    with kr.unseal([new["b"], new["c"]]) as u:
        after = mac_key(u.audit_key(), kr.keyring_id)
    assert after == key
    tl = TokenList.read(kr.path, kr.keyring_id)
    tl.verify(after)
    assert hash_token(token) in tl.active()
    tl.revoke("app")  # the way to cut it off, with or without a quorum
    assert hash_token(token) not in TokenList.read(kr.path, kr.keyring_id).active()
