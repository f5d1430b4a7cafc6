"""Proof of possession codes and the --verify state machine (keysplit.proof)."""

from __future__ import annotations

import hashlib
import hmac
import json
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paths import VECTORS_DIR

from keysplit import FormatError, Share, split
from keysplit.proof import (
    PendingVerification,
    ProofError,
    VerifyIncomplete,
    check,
    normalize_code,
    prove,
    verify_path,
)

CHEAP = {"t": 1, "m": 64, "p": 1}  # tests only: the default costs ~0.1 s per code
ALPHABET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _spec_code(share: Share) -> str:
    """The code as the module docstring specifies it, computed independently."""
    msg = b"keysplit proof of possession v1\x00" + share.set_id
    msg += bytes([share.version, share.threshold, share.count, share.index])
    bits = int.from_bytes(hmac.new(share.payload, msg, hashlib.sha256).digest()[:5], "big")
    chars = "".join(ALPHABET[(bits >> (35 - 5 * i)) & 31] for i in range(8))
    return chars[:4] + "-" + chars[4:]


def test_code_matches_its_specification_and_binds_set_and_index() -> None:
    a, b = split(b"k" * 16, 2, 3), split(b"k" * 16, 2, 3)
    codes = {prove(s) for s in a + b}
    assert len(codes) == 6
    for s in a:
        assert prove(s) == _spec_code(s)
        assert check(s, prove(s).upper().replace("-", " "))
    assert not check(a[0], prove(a[1]))
    # same payload, other index or set id: another code
    moved = Share(a[0].version, a[0].set_id, 2, 3, 2, a[0].payload)
    foreign = Share(a[0].version, b[0].set_id, 2, 3, 1, a[0].payload)
    assert prove(moved) != prove(a[0]) != prove(foreign)


@given(st.binary(min_size=16, max_size=16), st.integers(0, 24 * 8 - 1))
def test_any_payload_bit_changes_the_code(secret: bytes, bit: int) -> None:
    s = split(secret, 2, 2)[0]
    p = bytearray(s.payload)
    p[bit // 8] ^= 1 << (bit % 8)
    flipped = Share(s.version, s.set_id, s.threshold, s.count, s.index, bytes(p))
    assert prove(flipped) != prove(s)  # fails with probability 2^-40


def test_normalize_rejects_malformed_codes() -> None:
    assert normalize_code(" QPZR-Y9X8 ") == "qpzr-y9x8"
    for bad in ("qpzr-y9x", "qpzr-y9x8q", "qpzr-y9xb", "qpzr-y9x1"):
        with pytest.raises(FormatError):
            normalize_code(bad)


def _state(tmp_path: Path) -> tuple[PendingVerification, list[Share]]:
    shares = split(b"m" * 16, 2, 3)
    pending = tmp_path / "keyring.pending"
    state = PendingVerification.create(
        verify_path(pending),
        list(zip(["ana", "ben", "cy"], shares, strict=True)),
        keyring_id="kr1",
        kdf=CHEAP,
    )
    return state, shares


def test_state_machine_until_everyone_proved(tmp_path: Path) -> None:
    state, shares = _state(tmp_path)
    assert state.path == tmp_path / "keyring.pending.verify.json"
    assert stat.S_IMODE(state.path.stat().st_mode) == 0o600
    text = state.path.read_text()
    assert all(prove(s) not in text for s in shares)  # only Argon2id verifiers are stored
    with pytest.raises(ProofError, match="ben"):
        state.submit("ben", prove(shares[0]))  # ana's code is not ben's
    st1 = state.submit("ana", prove(shares[0]))
    assert st1.proven == ("ana",) and st1.missing == ("ben", "cy")
    with pytest.raises(VerifyIncomplete) as exc:
        state.complete()
    assert exc.value.missing == ("ben", "cy")
    with pytest.raises(VerifyIncomplete, match="cy"):
        state.complete(unproven=["ben"])  # must name every missing custodian
    with pytest.raises(ProofError, match="has proven"):
        state.complete(unproven=["ana", "ben", "cy"])
    with pytest.raises(ProofError, match="no share"):
        state.submit("eve", prove(shares[0]))
    again = PendingVerification.load(state.path)  # everything so far is on disk
    assert again.status().failures == {"ben": 1}
    again.submit("ben", prove(shares[1]))
    again.submit("cy", prove(shares[2]))
    done = again.complete()
    assert done.completed and done.all_proven and done.completed_unproven == ()
    with pytest.raises(ProofError, match="already complete"):
        again.submit("ana", prove(shares[0]))
    again.discard()
    assert not state.path.exists()


def test_explicit_completion_names_the_missing(tmp_path: Path) -> None:
    state, shares = _state(tmp_path)
    state.submit("cy", prove(shares[2]))
    done = state.complete(unproven=["ana", "ben"])
    assert done.completed and done.completed_unproven == ("ana", "ben")
    assert PendingVerification.load(state.path).status().to_json()["completed_unproven"] == [
        "ana",
        "ben",
    ]


def test_create_refuses_an_existing_file_and_bad_input(tmp_path: Path) -> None:
    state, shares = _state(tmp_path)
    with pytest.raises(FileExistsError):
        PendingVerification.create(state.path, [("ana", shares[0])], kdf=CHEAP)
    other = split(b"m" * 16, 2, 3)
    with pytest.raises(ValueError, match="one share set"):
        PendingVerification.create(tmp_path / "x", [("a", shares[0]), ("b", other[1])])
    with pytest.raises(ValueError, match="twice"):
        PendingVerification.create(tmp_path / "x", [("a", shares[0]), ("a", shares[1])])


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.update(format="other"),
        lambda d: d.update(set_id="zz"),
        lambda d: d["custodians"][0].update(verifier="00"),
        lambda d: d["custodians"][1].update(name=d["custodians"][0]["name"]),
        lambda d: d["kdf"].update(m=1 << 30),
        lambda d: d["kdf"].update(p="x"),
        lambda d: d.update(extra=1),
        lambda d: d.update(completed={"at": "x"}),
    ],
)
def test_load_is_strict(tmp_path: Path, edit: object) -> None:
    state, _ = _state(tmp_path)
    doc = json.loads(state.path.read_text())
    edit(doc)  # type: ignore[operator]
    state.path.write_text(json.dumps(doc))
    with pytest.raises(FormatError):
        PendingVerification.load(state.path)
    state.path.write_text("[" * 50000)
    with pytest.raises(FormatError):
        PendingVerification.load(state.path)


VECTORS = json.loads((VECTORS_DIR / "proof.json").read_text())["cases"]


@pytest.mark.parametrize("case", VECTORS, ids=[f"{c['expect']}-{i}" for i, c in enumerate(VECTORS)])
def test_proof_vectors(case: dict[str, str]) -> None:
    """Codes computed from the specification by tests/vectors/generate_custodians.py."""
    share = Share.parse(case["share"])
    if case["expect"] == "bad-format":
        with pytest.raises(FormatError):
            check(share, case["code"])
        return
    assert check(share, case["code"]) == (case["expect"] == "ok")
    if case["expect"] == "ok":
        assert prove(share) == case["code"]


@pytest.mark.parametrize(
    ("code", "at"),
    [
        ("\u212a7m2-qx9d", 1),  # KELVIN SIGN: lower() makes it 'k'
        ("k7m2\u00a0qx9d", 5),  # NO-BREAK SPACE: \s skips it
        ("k7m2\u3000qx9d", 5),  # IDEOGRAPHIC SPACE
        ("k7m2-qx9\uff44", 9),  # FULLWIDTH d
    ],
)
def test_a_code_with_a_character_that_is_not_ascii_is_refused(code: str, at: int) -> None:
    """Proof codes are ASCII, as share text is: a look-alike is refused by its position,
    never read as the character it resembles (nor echoed)."""
    with pytest.raises(FormatError, match=f"not ASCII at position {at} ") as err:
        normalize_code(code)
    assert code[at - 1] not in str(err.value) + str(err.value.hint)
