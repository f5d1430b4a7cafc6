"""keysplit.hazmat.ristretto against RFC 9496's vectors and plain integer arithmetic."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keysplit.errors import FormatError
from keysplit.hazmat.ristretto import (
    L,
    Point,
    Scalar,
    expand_message_xmd,
    hash_to_group,
    hash_to_scalar,
)

# RFC 9496 appendix A.1: encodings of 0·B .. 15·B.
SMALL_MULTIPLES = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76",
    "6a493210f7499cd17fecb510ae0cea23a110e8d5b901f8acadd3095c73a3b919",
    "94741f5d5d52755ece4f23f044ee27d5d1ea1e2bd196b462166b16152a9d0259",
    "da80862773358b466ffadfe0b3293ab3d9fd53c5ea6c955358f568322daf6a57",
    "e882b131016b52c1d3337080187cf768423efccbb517bb495ab812c4160ff44e",
    "f64746d3c92b13050ed8d80236a7f0007c3b3f962f5ba793d19a601ebb1df403",
    "44f53520926ec81fbd5a387845beb7df85a96a24ece18738bdcfa6a7822a176d",
    "903293d8f2287ebe10e2374dc1a53e0bc887e592699f02d077d5263cdd55601c",
    "02622ace8f7303a31cafc63f8fc48fdc16e1c8c8d234b2f0d6685282a9076031",
    "20706fd788b2720a1ed2a5dad4952b01f413bcf0e7564de8cdc816689e2db95f",
    "bce83f8ba5dd2fa572864c24ba1810f9522bc6004afe95877ac73241cafdab42",
    "e4549ee16b9aa03099ca208c67adafcafa4c3f3e4e5303de6026e3ca8ff84460",
    "aa52e000df2e16f55fb1032fc33bc42742dad6bd5a8fc0be0167436c5948501f",
    "46376b80f409b29dc2b5f6f0c52591990896e5716f41477cd30085ab7f10301e",
    "e0c418f7c8d9c4cdd7395b93ea124f3ad99021bb681dfc3302a9d99a2e53e64e",
]

# RFC 9496 appendix A.2: invalid encodings (non-canonical, negative, non-square x^2,
# negative xy, s = -1).
BAD_ENCODINGS = [
    "00ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "f3ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "ed57ffd8c914fb201471d1c3d245ce3c746fcbe63a3679d51b6a516ebebe0e20",
    "c34c4e1826e5d403b78e246e88aa051c36ccf0aafebffe137d148a2bf9104562",
    "c940e5a4404157cfb1628b108db051a8d439e1a421394ec4ebccb9ec92a8ac78",
    "47cfc5497c53dc8e61c91d17fd626ffb1c49e2bca94eed052281b510b1117a24",
    "f1c6165d33367351b0da8f6e4511010c68174a03b6581212c71c0e1d026c3c72",
    "87260f7a2f12495118360f02c26a470f450dadf34a413d21042b43b9d93e1309",
    "26948d35ca62e643e26a83177332e6b6afeb9d08e4268b650f1f5bbd8d81d371",
    "4eac077a713c57b4f4397629a4145982c661f48044dd3f96427d40b147d9742f",
    "de6a7b00deadc788eb6b6c8d20c0ae96c2f2019078fa604fee5b87d6e989ad7b",
    "bcab477be20861e01e4a0e295284146a510150d9817763caf1a6f4b422d67042",
    "2a292df7e32cababbd9de088d1d1abec9fc0440f637ed2fba145094dc14bea08",
    "f4a9e534fc0d216c44b218fa0c42d99635a0127ee2e53c712f70609649fdff22",
    "8268436f8c4126196cf64b3c7ddbda90746a378625f9813dd9b8457077256731",
    "2810e5cbc2cc4d4eece54f61c6f69758e289aa7ab440b3cbeaa21995c2f4232b",
    "3eb858e78f5a7254d8c9731174a94f76755fd3941c0ac93735c07ba14579630e",
    "a45fdc55c76448c049a1ab33f17023edfb2be3581e9c7aade8a6125215e04220",
    "d483fe813c6ba647ebbfd3ec41adca1c6130c2beeee9d9bf065c8d151c5f396e",
    "8a2e1d30050198c65a54483123960ccc38aef6848e1ec8f5f780e8523769ba32",
    "32888462f8b486c68ad7dd9610be5192bbeaf3b443951ac1a8118419d9fa097b",
    "227142501b9d4355ccba290404bde41575b037693cef1f438c47f8fbf35d1165",
    "5c37cc491da847cfeb9281d407efc41e15144c876e0170b499a96a22ed31e01e",
    "445425117cb8c90edcbc7c1cc0e74f747f2c1efa5630a967c64f287792a48a4b",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
]

# RFC 9496 appendix A.3 (ristretto.group): SHA-512 of each label, mapped to the group.
HASH_TO_POINT = [
    (
        "Ristretto is traditionally a short shot of espresso coffee",
        "3066f82a1a747d45120d1740f14358531a8f04bbffe6a819f86dfe50f44a0a46",
    ),
    (
        "made with the normal amount of ground coffee but extracted with",
        "f26e5b6f7d362d2d2a94c5d0e7602cb4773c95a2e5c31a64f133189fa76ed61b",
    ),
    (
        "about half the amount of water in the same amount of time",
        "006ccd2a9e6867e6a2c5cea83d3302cc9de128dd2a9a57dd8ee7b9d7ffe02826",
    ),
    ("by using a finer grind.", "f8f0c87cf237953c5890aec3998169005dae3eca1fbb04548c635953c817f92a"),
    (
        "This produces a concentrated shot of coffee per volume.",
        "ae81e7dedf20a497e10c304a765c1767a42d6e06029758d2d7e8ef7cc4c41179",
    ),
    (
        "Just pulling a normal shot short will produce a weaker shot",
        "e2705652ff9f5e44d3e841bf1c251cf7dddb77d140870d1ab2ed64f1a9ce8628",
    ),
    (
        "and is not a Ristretto as some believe.",
        "80bd07262511cdde4863f8a7434cef696750681cb9510eea557088f76d9e5065",
    ),
]

scalars = st.integers(min_value=0, max_value=L - 1)


def test_small_multiples_of_the_generator_match_rfc9496() -> None:
    acc = Point.identity()
    for i, expected in enumerate(SMALL_MULTIPLES):
        assert Point.base_mul(Scalar.from_int(i)).hex() == expected
        assert Point.base() * Scalar.from_int(i) == Point.from_bytes(bytes.fromhex(expected))
        assert acc.hex() == expected  # repeated addition, a second path
        acc = acc + Point.base()


@pytest.mark.parametrize("encoding", BAD_ENCODINGS)
def test_invalid_encodings_from_rfc9496_are_refused(encoding: str) -> None:
    with pytest.raises(FormatError):
        Point.from_bytes(bytes.fromhex(encoding))


@pytest.mark.parametrize(("label", "expected"), HASH_TO_POINT)
def test_from_uniform_matches_rfc9496(label: str, expected: str) -> None:
    assert Point.from_uniform(hashlib.sha512(label.encode()).digest()).hex() == expected


def test_encodings_with_the_top_bit_set_are_refused() -> None:
    # libsodium 1.0.18 (bundled by rbcl 1.1) ignores bit 255 and accepts these as the
    # points without it: a second encoding of the same element, which RFC 9496 forbids.
    for i in range(1, 16):
        good = bytes.fromhex(SMALL_MULTIPLES[i])
        with pytest.raises(FormatError):
            Point.from_bytes(good[:31] + bytes([good[31] | 0x80]))


def test_point_encodings_are_strict() -> None:
    for bad in (b"", bytes(31), bytes(33), "00" * 32):
        with pytest.raises(FormatError):
            Point.from_bytes(bad)  # type: ignore[arg-type]
    assert Point.from_bytes(bytes(32)).is_identity()
    with pytest.raises(FormatError):
        Point.identity().require_not_identity()


@given(scalars, scalars)
def test_scalar_arithmetic_matches_integers(a: int, b: int) -> None:
    sa, sb = Scalar.from_int(a), Scalar.from_int(b)
    assert (sa + sb).to_bytes() == ((a + b) % L).to_bytes(32, "little")
    assert (sa - sb).to_bytes() == ((a - b) % L).to_bytes(32, "little")
    assert (sa * sb).to_bytes() == ((a * b) % L).to_bytes(32, "little")
    assert (-sa).to_bytes() == ((-a) % L).to_bytes(32, "little")
    if a:
        assert sa.invert().to_bytes() == pow(a, -1, L).to_bytes(32, "little")
    assert Scalar.from_bytes(sa.to_bytes()) == sa


@given(scalars, scalars)
def test_scalar_multiplication_is_a_homomorphism(a: int, b: int) -> None:
    sa, sb = Scalar.from_int(a), Scalar.from_int(b)
    p = Point.base_mul(sa)
    assert p * sb == Point.base_mul(sa * sb)
    assert Point.base_mul(sa) + Point.base_mul(sb) == Point.base_mul(sa + sb)
    assert p - p == Point.identity() and p + (-p) == Point.identity()


@given(st.binary(min_size=64, max_size=64))
def test_from_uniform_scalar_is_reduction(data: bytes) -> None:
    assert Scalar.from_uniform(data).to_bytes() == (int.from_bytes(data, "little") % L).to_bytes(
        32, "little"
    )


@pytest.mark.parametrize("value", [L, L + 1, 2**255 - 1, 2**256 - 1])
def test_non_canonical_scalars_are_refused(value: int) -> None:
    with pytest.raises(FormatError):
        Scalar.from_bytes(value.to_bytes(32, "little"))


def test_zero_has_no_inverse_and_scalars_hide_their_value() -> None:
    with pytest.raises(ValueError):
        Scalar.zero().invert()
    s = Scalar.from_int(0x1234567890ABCDEF)
    assert "1234567890" not in repr(s).lower() and "efcdab" not in repr(s).lower()
    assert repr(s) == "Scalar(<secret>)"
    with pytest.raises(TypeError):
        hash(s)


XMD_DST = b"QUUX-V01-CS02-with-expander-SHA512-256"


@pytest.mark.parametrize(
    ("msg", "length", "expected"),
    [
        # RFC 9380 appendix K.3, expand_message_xmd(SHA-512)
        (b"", 32, "6b9a7312411d92f921c6f68ca0b6380730a1a4d982c507211a90964c394179ba"),
        (b"abc", 32, "0da749f12fbe5483eb066a5f595055679b976e93abe9be6f0f6318bce7aca8dc"),
        (
            b"abcdef0123456789",
            32,
            "087e45a86e2939ee8b91100af1583c4938e0f5fc6c9db4b107b83346bc967f58",
        ),
        (
            b"",
            128,
            "41b037d1734a5f8df225dd8c7de38f851efdb45c372887be655212d07251b921"
            "b052b62eaed99b46f72f2ef4cc96bfaf254ebbbec091e1a3b9e4fb5e5b619d2e"
            "0c5414800a1d882b62bb5cd1778f098b8eb6cb399d5d9d18f5d5842cf5d13d7e"
            "b00a7cff859b605da678b318bd0e65ebff70bec88c753b159a805d2c89c55961",
        ),
    ],
)
def test_expand_message_xmd_matches_rfc9380(msg: bytes, length: int, expected: str) -> None:
    assert expand_message_xmd(msg, XMD_DST, length).hex() == expected


def test_hashes_are_domain_separated_and_bounded() -> None:
    assert hash_to_group(b"x", b"a") != hash_to_group(b"x", b"b")
    assert hash_to_scalar(b"x", b"a") != hash_to_scalar(b"x", b"b")
    with pytest.raises(ValueError):
        expand_message_xmd(b"", bytes(256), 64)
    with pytest.raises(ValueError):
        expand_message_xmd(b"", b"d", 64 * 256)
