"""Vault / OpenBao unseal keys: keysplit against an independent reference of Vault's shamir.go.

``_VaultRef`` follows the published algorithm of hashicorp/vault ``shamir/shamir.go`` and
``tables.go``, written here from that description and sharing no code with keysplit:
GF(2^8) mod 0x11B with log/exp tables over the generator 0xe5 (as Vault's tables), one
random polynomial per byte with the secret byte as intercept, x-coordinates a random
permutation of 1..255, a share ``y bytes || x``; Combine by Lagrange interpolation at 0.
"""

from __future__ import annotations

import base64
import json
import random
import secrets

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keysplit import (
    DuplicateShareError,
    FormatError,
    Identity,
    InsufficientSharesError,
    RecoveryError,
    combine,
    open_share,
    seal_share,
    secret_fingerprint,
    slip39,
    split,
    vault,
)


def _clmul_mod(a: int, b: int) -> int:
    """Carry-less product mod x^8 + x^4 + x^3 + x + 1, bit by bit (reference only)."""
    r = 0
    for i in range(8):
        if (b >> i) & 1:
            r ^= a << i
    for bit in range(15, 7, -1):
        if (r >> bit) & 1:
            r ^= 0x11B << (bit - 8)
    return r


class _VaultRef:
    """Vault's shamir package, transcribed from its published algorithm (test oracle)."""

    def __init__(self) -> None:
        self.exp = [0] * 256
        self.log = [0] * 256
        v = 1
        for i in range(255):
            self.exp[i] = v
            self.log[v] = i
            v = _clmul_mod(v, 0xE5)
        self.exp[255] = self.exp[0]
        self.log[1] = 255  # Vault's table stores log(1) as 0xff (same element mod 255)

    def mult(self, a: int, b: int) -> int:
        if a == 0 or b == 0:
            return 0
        return self.exp[(self.log[a] + self.log[b]) % 255]

    def div(self, a: int, b: int) -> int:
        assert b != 0
        if a == 0:
            return 0
        return self.exp[(self.log[a] - self.log[b]) % 255]

    def split(self, secret: bytes, parts: int, threshold: int, rnd: random.Random) -> list[bytes]:
        assert 2 <= threshold <= parts <= 255 and secret
        xs = [x + 1 for x in rnd.sample(range(255), 255)][:parts]  # mathrand.Perm(255) + 1
        out = [bytearray(len(secret) + 1) for _ in range(parts)]
        for i in range(parts):
            out[i][len(secret)] = xs[i]
        for idx, val in enumerate(secret):
            coeffs = [val] + [rnd.randrange(256) for _ in range(threshold - 1)]
            for i in range(parts):
                y = coeffs[-1]  # Horner
                for c in reversed(coeffs[:-1]):
                    y = self.mult(y, xs[i]) ^ c
                out[i][idx] = y
        return [bytes(o) for o in out]

    def combine(self, parts: list[bytes]) -> bytes:
        assert len(parts) >= 2 and len({len(p) for p in parts}) == 1
        xs = [p[-1] for p in parts]
        assert len(set(xs)) == len(xs), "duplicate part detected"
        secret = bytearray(len(parts[0]) - 1)
        for idx in range(len(secret)):
            result = 0
            for i in range(len(parts)):
                basis = 1
                for j in range(len(parts)):
                    if i != j:
                        basis = self.mult(basis, self.div(xs[j], xs[i] ^ xs[j]))
                result ^= self.mult(parts[i][idx], basis)
            secret[idx] = result
        return bytes(secret)


REF = _VaultRef()


def test_reference_tables_match_vaults_published_entries() -> None:
    # First entries of Vault's tables.go: expTable 01 e5 4c b5 fb, logTable 00 ff c8 08 91.
    assert REF.exp[:5] == [0x01, 0xE5, 0x4C, 0xB5, 0xFB]
    assert REF.log[:5] == [0x00, 0xFF, 0xC8, 0x08, 0x91]
    assert REF.exp[255] == 0x01
    assert all(REF.exp[REF.log[i]] == i for i in range(1, 256))


def _init_output(keys: list[bytes], threshold: int) -> str:
    lines = [f"Unseal Key {n}: {base64.b64encode(k).decode()}" for n, k in enumerate(keys, 1)]
    return (
        "\n".join(lines)
        + "\n\nInitial Root Token: hvs.CAESIJ0000notarealtoken0000\n\n"
        + f"Vault initialized with {len(keys)} key shares and a key threshold of {threshold}. "
        "Please securely\ndistribute the key shares printed above. When the Vault is "
        "re-sealed,\nrestarted, or stopped, you must supply at least "
        f"{threshold} of these keys\nto unseal it before it can start servicing requests.\n"
    )


def test_vault_3_of_5_to_sealed_keysplit_and_back() -> None:
    """The issue's acceptance path: Vault init output -> sealed keysplit shares -> Vault keys."""
    rnd = random.Random(1)
    root = secrets.token_bytes(32)
    vkeys = REF.split(root, 5, 3, rnd)
    parsed = vault.parse_vault(_init_output(vkeys, 3))
    assert (parsed.threshold, parsed.count, len(parsed.keys)) == (3, 5, 5)
    assert "hvs." not in repr(parsed) and base64.b64encode(vkeys[0]).decode() not in repr(parsed)
    custodians = [Identity.generate(name) for name in ("ana", "ben", "cy", "dee", "eve")]
    shares = vault.vault_to_keysplit(parsed, 3, 5)
    sealed = [seal_share(s, c.recipient) for s, c in zip(shares, custodians, strict=True)]
    opened = [open_share(sealed[i], identity=custodians[i]) for i in (4, 0, 2)]
    assert combine(opened) == root
    back = vault.keysplit_to_vault(opened, 3, 5)
    text = vault.format_vault(back)
    b64 = [ln.split(": ", 1)[1] for ln in text.splitlines()]
    raw = [base64.b64decode(s) for s in b64]
    for trio in ([0, 1, 2], [4, 2, 0], [1, 3, 4]):
        assert REF.combine([raw[i] for i in trio]) == root
    assert vault.parse_vault(text).keys == tuple(raw)


@given(
    secret=st.binary(min_size=1, max_size=64),
    kn=st.tuples(st.integers(2, 6), st.integers(0, 4)),
    seed=st.integers(0, 2**32),
)
def test_combine_matches_reference_and_reference_reads_ours(
    secret: bytes, kn: tuple[int, int], seed: int
) -> None:
    k, extra = kn
    n = k + extra
    rnd = random.Random(seed)
    ref_keys = REF.split(secret, n, k, rnd)
    subset = rnd.sample(ref_keys, rnd.randint(k, n))
    assert vault.combine_vault(subset, threshold=k) == secret
    ours = vault.split_vault(secret, k, n)
    assert REF.combine(rnd.sample(ours, k)) == secret
    assert len({o[-1] for o in ours}) == n


def test_extra_keys_are_checked_and_a_single_bad_one_named() -> None:
    rnd = random.Random(7)
    keys = REF.split(b"k" * 32, 5, 3, rnd)
    assert vault.combine_vault(keys, threshold=3) == b"k" * 32
    bad = bytearray(keys[1])
    bad[10] ^= 0x01
    four = [keys[0], bytes(bad), keys[2], keys[3]]
    with pytest.raises(RecoveryError, match="do not lie on one polynomial") as e1:
        vault.combine_vault(four, threshold=3)  # k + 1: detected
    assert e1.value.index is None
    with pytest.raises(RecoveryError, match="Vault key 2") as e2:
        vault.combine_vault([*four, keys[4]], threshold=3)  # k + 2: named
    assert e2.value.index == 2
    # too low a threshold is caught by the extra keys too
    with pytest.raises(RecoveryError):
        vault.combine_vault(keys[:3], threshold=2)


def test_exactly_k_keys_cannot_be_checked() -> None:
    """Documented limit: a wrong key among exactly k gives a wrong secret, no error."""
    keys = REF.split(b"s" * 16, 3, 3, random.Random(3))
    wrong = bytearray(keys[0])
    wrong[0] ^= 0xFF
    assert vault.combine_vault([bytes(wrong), *keys[1:]], threshold=3) != b"s" * 16


def test_bad_inputs() -> None:
    keys = REF.split(b"x" * 32, 3, 2, random.Random(5))
    with pytest.raises(InsufficientSharesError):
        vault.combine_vault(keys[:1], threshold=2)
    with pytest.raises(DuplicateShareError, match="given twice"):
        vault.combine_vault([keys[0], keys[0]])
    clash = keys[1][:-1][::-1] + keys[0][-1:]
    with pytest.raises(DuplicateShareError, match="both claim"):
        vault.combine_vault([keys[0], clash])
    with pytest.raises(FormatError, match="different splits"):
        vault.combine_vault([keys[0], keys[1][1:]])
    with pytest.raises(FormatError, match="x-coordinate 0"):
        vault.combine_vault([keys[0], keys[1][:-1] + b"\x00"])
    for text, msg in (
        ("Unseal Key 1: not*base64\n", "line 1"),
        ("Unseal Key 1: " + base64.b64encode(b"\x01" * 300).decode() + "\n", "PGP"),
        ("nothing here at all\n", "no Vault keys"),
        ('{"unseal_keys_b64": 3}', "list of strings"),
        (
            '{"unseal_keys_b64": ["' + base64.b64encode(keys[0]).decode() + '"], '
            '"unseal_keys_hex": ["' + keys[1].hex() + '"]}',
            "disagree",
        ),
        ("[" * 100000, "nested too deeply"),
    ):
        with pytest.raises(FormatError, match=msg):
            vault.parse_vault(text)


def test_parse_json_hex_and_plain_lines() -> None:
    keys = REF.split(bytes(range(32)), 5, 3, random.Random(11))
    doc = {
        "unseal_keys_b64": [base64.b64encode(k).decode() for k in keys],
        "unseal_keys_hex": [k.hex() for k in keys],
        "unseal_shares": 5,
        "unseal_threshold": 3,
        "root_token": "hvs.secret",
    }
    parsed = vault.parse_vault(json.dumps(doc))
    assert (parsed.keys, parsed.threshold, parsed.count) == (tuple(keys), 3, 5)
    assert vault.combine_vault(parsed) == bytes(range(32))
    plain = "# custodian file\n" + keys[2].hex() + "\n" + base64.b64encode(keys[4]).decode()
    assert vault.parse_vault(plain).keys == (keys[2], keys[4])
    rec = vault.parse_vault(vault.format_vault(keys[:2], encoding="hex", kind="Recovery"))
    assert rec.kind == "recovery" and rec.keys == tuple(keys[:2])


def test_slip39_and_keysplit_routes() -> None:
    root = secrets.token_bytes(32)
    vkeys = REF.split(root, 4, 2, random.Random(2))
    mn = vault.vault_to_slip39(vkeys[:3], 1, [(2, 3)], source_threshold=2, iteration_exponent=0)
    assert slip39.combine_mnemonics(mn[0][:2]) == root
    back = vault.slip39_to_vault(mn[0][1:], 3, 4)
    assert REF.combine(back[1:]) == root
    ks = split(root, 2, 2)
    assert secret_fingerprint(vault.combine_vault(vault.keysplit_to_vault(ks, 2, 3)[:2])) == (
        secret_fingerprint(root)
    )
