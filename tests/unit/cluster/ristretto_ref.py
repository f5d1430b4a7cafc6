"""A slow, plain-integer ristretto255 (RFC 9496 section 4) for cross-checking libsodium.

Test support only: variable time, no hardening. Written from the RFC's formulas (decode
4.3.1, encode 4.3.2, element derivation 4.3.4, SQRT_RATIO_M1 4.2) over edwards25519 in
extended coordinates (RFC 8032 5.1.4 addition), sharing no code with libsodium or rbcl,
so agreement between the two is evidence for both.
"""

from __future__ import annotations

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = 37095705934669439343138083508754565189542113879843219016388785533085940283555
SQRT_M1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752
SQRT_AD_MINUS_ONE = 25063068953384623474111414158702152701244531502492656460079210482610430750235
INVSQRT_A_MINUS_D = 54469307008909316920995813868745141605393597292927456921205312896311721017578
ONE_MINUS_D_SQ = 1159843021668779879193775521855586647937357759715417654439879720876111806838
D_MINUS_ONE_SQ = 40440834346308536858101042469323190826248399146238708352240133220865137265952

Pt = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, xy = T/Z
IDENTITY: Pt = (0, 1, 1, 0)


def _neg(x: int) -> bool:
    return (x % P) & 1 == 1


def _abs(x: int) -> int:
    x %= P
    return P - x if _neg(x) else x


def sqrt_ratio_m1(u: int, v: int) -> tuple[bool, int]:
    u %= P
    v %= P
    r = (u * pow(v, 3, P)) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    check = v * r * r % P
    correct = check == u
    flipped = check == (-u) % P
    flipped_i = check == (-u) * SQRT_M1 % P
    if flipped or flipped_i:
        r = r * SQRT_M1 % P
    return correct or flipped, _abs(r)


def decode(data: bytes) -> Pt:
    if len(data) != 32:
        raise ValueError("length")
    s = int.from_bytes(data, "little")
    if s >= P or _neg(s):
        raise ValueError("non-canonical or negative s")
    ss = s * s % P
    u1 = (1 - ss) % P
    u2 = (1 + ss) % P
    u2_sqr = u2 * u2 % P
    v = (-(D * u1 * u1) - u2_sqr) % P
    was_square, invsqrt = sqrt_ratio_m1(1, v * u2_sqr)
    den_x = invsqrt * u2 % P
    den_y = invsqrt * den_x * v % P
    x = _abs(2 * s * den_x)
    y = u1 * den_y % P
    t = x * y % P
    if not was_square or _neg(t) or y == 0:
        raise ValueError("not a ristretto255 encoding")
    return (x, y, 1, t)


def encode(p: Pt) -> bytes:
    x0, y0, z0, t0 = p
    u1 = (z0 + y0) * (z0 - y0) % P
    u2 = x0 * y0 % P
    _, invsqrt = sqrt_ratio_m1(1, u1 * u2 * u2)
    den1 = invsqrt * u1 % P
    den2 = invsqrt * u2 % P
    z_inv = den1 * den2 * t0 % P
    rotate = _neg(t0 * z_inv)
    if rotate:
        x, y = y0 * SQRT_M1 % P, x0 * SQRT_M1 % P
        den_inv = den1 * INVSQRT_A_MINUS_D % P
    else:
        x, y, den_inv = x0, y0, den2
    if _neg(x * z_inv):
        y = -y % P
    s = _abs(den_inv * (z0 - y))
    return s.to_bytes(32, "little")


def add(p: Pt, q: Pt) -> Pt:
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = t1 * 2 * D * t2 % P
    d = z1 * 2 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def neg(p: Pt) -> Pt:
    x, y, z, t = p
    return (-x % P, y, z, -t % P)


def mul(k: int, p: Pt) -> Pt:
    acc, base = IDENTITY, p
    k %= L
    while k:
        if k & 1:
            acc = add(acc, base)
        base = add(base, base)
        k >>= 1
    return acc


def _map(t: int) -> Pt:
    r = SQRT_M1 * t * t % P
    u = (r + 1) * ONE_MINUS_D_SQ % P
    v = (-1 - r * D) * (r + D) % P
    was_square, s = sqrt_ratio_m1(u, v)
    s_prime = -_abs(s * t) % P
    if not was_square:
        s = s_prime
    c = P - 1 if was_square else r
    n = (c * (r - 1) * D_MINUS_ONE_SQ - v) % P
    w0 = 2 * s * v % P
    w1 = n * SQRT_AD_MINUS_ONE % P
    w2 = (1 - s * s) % P
    w3 = (1 + s * s) % P
    return (w0 * w3 % P, w2 * w1 % P, w1 * w3 % P, w0 * w2 % P)


def from_uniform(data: bytes) -> Pt:
    if len(data) != 64:
        raise ValueError("length")
    mask = (1 << 255) - 1
    r0 = (int.from_bytes(data[:32], "little") & mask) % P
    r1 = (int.from_bytes(data[32:], "little") & mask) % P
    return add(_map(r0), _map(r1))


BASE = decode(bytes.fromhex("e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76"))


def xmd_sha512(msg: bytes, dst: bytes, n: int) -> bytes:
    """RFC 9380 5.3.1 expand_message_xmd with SHA-512, written again from the RFC."""
    import hashlib

    dst_prime = dst + bytes([len(dst)])
    b0 = hashlib.sha512(bytes(128) + msg + n.to_bytes(2, "big") + b"\0" + dst_prime).digest()
    out, prev = b"", bytes(64)
    for i in range(1, -(-n // 64) + 1):
        prev = hashlib.sha512(
            bytes(a ^ b for a, b in zip(b0, prev, strict=True)) + bytes([i]) + dst_prime
        ).digest()
        out += prev
    return out[:n]


def hash_to_scalar(msg: bytes, dst: bytes) -> int:
    return int.from_bytes(xmd_sha512(msg, dst, 64), "little") % L


def dleq_verify(k_pub: bytes, cs: list[bytes], ds: list[bytes], proof: bytes, ctx: bytes) -> bool:
    """RFC 9497 2.2 VerifyProof (with ComputeComposites) on the reference arithmetic."""
    import hashlib

    def lp(b: bytes) -> bytes:
        return len(b).to_bytes(2, "big") + b

    seed = hashlib.sha512(lp(k_pub) + lp(b"Seed-" + ctx)).digest()
    m, z = IDENTITY, IDENTITY
    for i, (c, d) in enumerate(zip(cs, ds, strict=True)):
        di = hash_to_scalar(
            lp(seed) + i.to_bytes(2, "big") + lp(c) + lp(d) + b"Composite", b"HashToScalar-" + ctx
        )
        m = add(m, mul(di, decode(c)))
        z = add(z, mul(di, decode(d)))
    c_, s_ = int.from_bytes(proof[:32], "little"), int.from_bytes(proof[32:], "little")
    if c_ >= L or s_ >= L:
        return False
    t2 = add(mul(s_, BASE), mul(c_, decode(k_pub)))
    t3 = add(mul(s_, m), mul(c_, z))
    transcript = b"".join(lp(x) for x in (k_pub, encode(m), encode(z), encode(t2), encode(t3)))
    return hash_to_scalar(transcript + b"Challenge", b"HashToScalar-" + ctx) == c_
