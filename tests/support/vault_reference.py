"""An independent reference of HashiCorp Vault's ``shamir`` package, for tests only.

Written from the published algorithm of hashicorp/vault ``shamir/shamir.go`` and
``tables.go``, sharing no code with keysplit: GF(2^8) mod 0x11B with log/exp tables over
the generator 0xe5 (as Vault's tables), one random polynomial per byte with the secret
byte as intercept, x-coordinates a random permutation of 1..255, a share ``y bytes || x``;
Combine by Lagrange interpolation at 0 with Vault's mult/div.
"""

from __future__ import annotations

import base64
import random


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


def init_output(keys: list[bytes], threshold: int) -> str:
    lines = [f"Unseal Key {n}: {base64.b64encode(k).decode()}" for n, k in enumerate(keys, 1)]
    return (
        "\n".join(lines)
        + "\n\nInitial Root Token: hvs.CAESIJ0000notarealtoken0000\n\n"
        + f"Vault initialized with {len(keys)} key shares and a key threshold of {threshold}. "
        "Please securely\ndistribute the key shares printed above. When the Vault is "
        "re-sealed,\nrestarted, or stopped, you must supply at least "
        f"{threshold} of these keys\nto unseal it before it can start servicing requests.\n"
    )
