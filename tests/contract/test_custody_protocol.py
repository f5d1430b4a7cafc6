"""The custody seam: ShareSealer/ShareOpener, the registry by method byte, age's error contract."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keysplit import CustodianError, FormatError, Identity, seal_share, split
from keysplit.custody import (
    IdentityOpener,
    IncorrectIdentity,
    PassphraseOpener,
    ProtectionMethod,
    SealedShare,
    ShareOpener,
    ShareSealer,
    base,
    open_share,
    seal,
    sealed_share_info,
)
from keysplit.rng import DeterministicRandom

SHARES = split(bytes(range(16)), 2, 3, rng=DeterministicRandom("protocol"))
TOY = 0xE0  # a method byte no real type uses


@dataclass(frozen=True)
class _ToyParams:
    key_id: bytes

    @property
    def recipient_fingerprint(self) -> str:
        return "toy:" + self.key_id.hex()

    @property
    def kdf(self) -> None:
        return None


class ToySealer:
    """A whole protection type in a few lines: AES-GCM under a pre-shared 16-byte key."""

    method = TOY

    def __init__(self, custodian: str, key: bytes) -> None:
        self.custodian = custodian
        self._key = key

    def seal(self, plaintext: bytes, head: bytes) -> tuple[bytes, bytes]:
        params = hashlib.sha256(self._key).digest()[:4]
        return params, AESGCM(self._key).encrypt(b"\0" * 12, plaintext, head + params)


class ToyOpener:
    methods = frozenset({TOY})

    def __init__(self, key: bytes) -> None:
        self._key = key

    def open(self, sealed: SealedShare) -> bytes:
        assert isinstance(sealed.params, _ToyParams)
        if not hmac.compare_digest(sealed.params.key_id, hashlib.sha256(self._key).digest()[:4]):
            raise IncorrectIdentity(f"the share of {sealed.who} is for another toy key")
        return AESGCM(self._key).decrypt(b"\0" * 12, sealed.ciphertext, sealed.header)


@pytest.fixture
def toy() -> Iterator[None]:
    method = ProtectionMethod(
        TOY,
        "toy",
        lambda r: _ToyParams(r.take(4)),
        lambda s: CustodianError(f"the share of {s.who} needs a toy key"),
    )
    base.register(method)
    yield
    del base._METHODS[TOY]


def test_a_new_protection_type_plugs_in_through_the_registry(toy: None) -> None:
    k1, k2 = bytes(16), bytes(range(16))
    sealer = ToySealer("carol", k1)
    assert isinstance(sealer, ShareSealer) and isinstance(ToyOpener(k1), ShareOpener)
    sealed = seal(SHARES[1], sealer)
    info = sealed_share_info(sealed)
    assert (info.method, info.custodian, info.index) == ("toy", "carol", 2)
    assert info.recipient_fingerprint == "toy:" + hashlib.sha256(k1).digest()[:4].hex()
    # IncorrectIdentity from one opener: the next one is tried.
    assert open_share(sealed, openers=[ToyOpener(k2), ToyOpener(k1)]) == SHARES[1]
    with pytest.raises(IncorrectIdentity, match="another toy key"):
        open_share(sealed, openers=[ToyOpener(k2)])
    # Openers of other methods are never offered the share; the method says what to give.
    with pytest.raises(CustodianError, match="needs a toy key"):
        open_share(sealed, identity=Identity.generate("carol"), passphrase=b"pw")


def test_unregistered_method_is_refused_on_both_sides() -> None:
    with pytest.raises(ValueError, match="unregistered"):
        seal(SHARES[0], ToySealer("carol", bytes(16)))


def test_a_method_byte_is_taken_once() -> None:
    other = ProtectionMethod(
        0x01, "not-x25519", lambda r: _ToyParams(b""), lambda s: CustodianError()
    )
    with pytest.raises(ValueError, match="already 'x25519'"):
        base.register(other)
    assert base.methods()[0x01].name == "x25519"


def test_any_error_other_than_incorrect_identity_is_fatal() -> None:
    alice = Identity.generate("alice")
    sealed = seal_share(SHARES[0], alice.recipient)
    calls: list[str] = []

    class Broken:
        methods = frozenset({0x01})

        def open(self, s: SealedShare) -> bytes:
            calls.append("broken")
            raise CustodianError("fatal: token revoked")

    with pytest.raises(CustodianError, match="fatal: token revoked"):
        open_share(sealed, openers=[Broken(), IdentityOpener(alice)])
    assert calls == ["broken"]  # the matching identity after it was never tried
    bob = IdentityOpener(Identity.generate("bob"))
    assert open_share(sealed, openers=[bob, IdentityOpener(alice)]) == SHARES[0]


def test_wrong_passphrase_is_fatal_not_incorrect_identity() -> None:
    from keysplit import Argon2Params, seal_share_with_passphrase

    fast = Argon2Params(time_cost=1, memory_kib=64, lanes=1)
    sealed = seal_share_with_passphrase(SHARES[2], "dave", b"right", kdf=fast)
    with pytest.raises(CustodianError, match="wrong passphrase") as exc:
        open_share(sealed, openers=[PassphraseOpener(b"wrong"), PassphraseOpener(b"right")])
    assert not isinstance(exc.value, IncorrectIdentity)


def test_method_parameters_are_parsed_after_the_checksum(toy: None) -> None:
    # The stated order of errors: a corrupted body is "checksum mismatch", not a bad field.
    sealed = bytearray(seal(SHARES[0], ToySealer("carol", bytes(16))))
    sealed[4 + 1] = 0x7F  # method byte -> unknown
    with pytest.raises(FormatError, match="checksum mismatch"):
        sealed_share_info(bytes(sealed))
    body = bytes(sealed[:-4])
    with pytest.raises(FormatError, match="unknown method 127"):
        sealed_share_info(body + hashlib.sha256(body).digest()[:4])
