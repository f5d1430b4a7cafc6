"""Streams sealed to a real keyring: anyone with the public key seals, a quorum opens."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from keysplit import IntegrityError, decrypt_file
from keysplit.keyring import Keyring
from keysplit.rng import DeterministicRandom
from keysplit.stream import encrypt_file, read_header, recipient_id


def test_seal_to_keyring_public_key_open_with_quorum(tmp_path: Path) -> None:
    kr, shares = Keyring.create(
        tmp_path / "kr", 2, ["alice", "bob", "carol"], rng=DeterministicRandom("kr")
    )
    plain = tmp_path / "backup.tar"
    data = os.urandom(200_000)
    plain.write_bytes(data)
    sealed = tmp_path / "backup.tar.ks"
    # No quorum needed to seal: only the keyring's public key (raw 32 bytes).
    info = encrypt_file(
        plain,
        sealed,
        Keyring.open(kr.path).public_key,
        context={"kind": "backup"},
        chunk_size=1 << 16,
    )
    assert info.header.recipient_id == recipient_id(kr.public_key)
    with open(sealed, "rb") as fh:
        assert dict(read_header(fh).context) == {"kind": "backup"}

    unsealed = kr.unseal([shares["alice"], shares["carol"]])
    out = tmp_path / "restored.tar"
    decrypt_file(sealed, out, unsealed, context={"kind": "backup"})
    assert out.read_bytes() == data

    # Another keyring cannot open it, and nothing is left behind.
    other, other_shares = Keyring.create(tmp_path / "other", 2, ["x", "y"])
    with other.unseal(list(other_shares.values())) as wrong, pytest.raises(IntegrityError):
        decrypt_file(sealed, tmp_path / "nope", wrong)
    assert not (tmp_path / "nope").exists()
    unsealed.close()
