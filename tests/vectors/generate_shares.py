"""Regenerate tests/vectors/shares.json (run from the repo root).

Valid splits come from keysplit.split through the seeded RNG seam; each is cross-checked
with shamir-mnemonic's independent interpolation (payload = secret || tag) and an
independent recomputation of the tag before it is written. Bad cases are derived from
them by hand-crafting bodies with correct checksums where the fault must lie elsewhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from shamir_mnemonic.shamir import RawShare, _interpolate

from keysplit import _bech32
from keysplit.rng import DeterministicRandom
from keysplit.share import Share, split

SPLITS = [
    ("2-of-2 one byte", "5a", 2, 2, "share-a"),
    ("2-of-3 aes128", "000102030405060708090a0b0c0d0e0f", 2, 3, "share-b"),
    ("3-of-5 aes128", "2b7e151628aed2a6abf7158809cf4f3c", 3, 5, "share-c"),
    (
        "5-of-7 aes256",
        "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
        5,
        7,
        "share-d",
    ),
    ("3-of-255 max count", "ffeeddccbbaa99887766554433221100", 3, 255, "share-e"),
    ("2-of-3 max length 64", "a5" * 64, 2, 3, "share-f"),
]


def _text_from_body(body: bytes) -> str:
    values = _bech32.to_5bit(body)
    return "ks1" + _bech32.encode_chars(values + _bech32.checksum("ks", values))


def _binary_from_body(body: bytes) -> str:
    return (b"KSSH" + body + hashlib.sha256(body).digest()[:4]).hex()


def _tag(set_id: bytes, k: int, n: int, secret: bytes) -> bytes:
    data = b"keysplit share check v1\x00" + set_id + bytes([1, k, n, len(secret)]) + secret
    return hashlib.sha256(data).digest()[:8]


def main() -> None:
    splits = []
    made: dict[str, list[Share]] = {}
    for name, secret_hex, k, n, seed in SPLITS:
        secret = bytes.fromhex(secret_hex)
        shares = split(secret, k, n, rng=DeterministicRandom(seed))
        raw = [RawShare(s.index, s.payload) for s in shares]
        payload = _interpolate(raw[-k:], 0)
        assert payload == secret + _tag(shares[0].set_id, k, n, secret)
        made[name] = shares
        splits.append(
            {
                "name": name,
                "secret": secret_hex,
                "threshold": k,
                "count": n,
                "seed": seed,
                "set_id": shares[0].set_id.hex(),
                "shares": [
                    {"index": s.index, "text": str(s), "binary": s.to_bytes().hex()}
                    for s in (shares if n <= 7 else shares[:3] + shares[-2:])
                ],
            }
        )

    a = made["3-of-5 aes128"]
    b = made["2-of-3 aes128"]
    good = a[0]
    body = good._body()
    text = str(good)
    binary = good.to_bytes()
    flipped = text[:12] + ("q" if text[12] != "q" else "p") + text[13:]
    v2 = bytes([2]) + body[1:]
    bad_params = body[:9] + bytes([6, 5]) + body[11:]  # threshold 6 > count 5
    bad_index = body[:11] + bytes([9]) + body[12:]  # index 9 > count 5
    bad_len = body[:12] + bytes([65]) + body[13:]
    parse_cases = [
        {"name": "valid", "text": text, "expect": "ok", "index": 1},
        {
            "name": "valid, no separators, upper case",
            "expect": "ok",
            "index": 1,
            "text": text.replace("-", "").upper(),
        },
        {
            "name": "valid, spaces and newlines",
            "expect": "ok",
            "index": 1,
            "text": "  " + text.replace("-", " \n") + "\n",
        },
        {"name": "one character changed", "text": flipped, "expect": "bad-checksum"},
        {
            "name": "invalid character o",
            "text": text[:12] + "o" + text[13:],
            "expect": "bad-checksum",
        },
        {"name": "wrong prefix", "text": "kx1" + text[3:], "expect": "bad-prefix"},
        {"name": "not a share", "text": "hello", "expect": "bad-prefix"},
        {"name": "last character missing", "text": text[:-1], "expect": "bad-checksum"},
        {"name": "extra character", "text": text + "q", "expect": "bad-checksum"},
        {"name": "only the prefix", "text": "ks1", "expect": "truncated"},
        {"name": "version 2", "text": _text_from_body(v2), "expect": "unknown-version"},
        {
            "name": "truncated body, valid checksum",
            "text": _text_from_body(body[:-1]),
            "expect": "truncated",
        },
        {
            "name": "trailing byte, valid checksum",
            "text": _text_from_body(body + b"\x00"),
            "expect": "trailing",
        },
        {
            "name": "threshold above count",
            "text": _text_from_body(bad_params),
            "expect": "bad-params",
        },
        {"name": "index above count", "text": _text_from_body(bad_index), "expect": "bad-params"},
        {"name": "secret length 65", "text": _text_from_body(bad_len), "expect": "bad-params"},
    ]
    binary_cases = [
        {"name": "valid", "hex": binary.hex(), "expect": "ok", "index": 1},
        {"name": "bad magic", "hex": (b"KSSX" + binary[4:]).hex(), "expect": "bad-prefix"},
        {"name": "empty", "hex": "", "expect": "truncated"},
        {"name": "magic only", "hex": b"KSSH".hex(), "expect": "truncated"},
        {"name": "last byte missing", "hex": binary[:-1].hex(), "expect": "truncated"},
        {"name": "trailing byte", "hex": (binary + b"\x00").hex(), "expect": "trailing"},
        {
            "name": "payload bit flipped",
            "expect": "bad-checksum",
            "hex": (binary[:20] + bytes([binary[20] ^ 1]) + binary[21:]).hex(),
        },
        {
            "name": "checksum bit flipped",
            "expect": "bad-checksum",
            "hex": (binary[:-1] + bytes([binary[-1] ^ 0x80])).hex(),
        },
        {"name": "version 2", "hex": _binary_from_body(v2), "expect": "unknown-version"},
        {
            "name": "threshold above count",
            "hex": _binary_from_body(bad_params),
            "expect": "bad-params",
        },
        {
            "name": "index 0",
            "hex": _binary_from_body(body[:11] + b"\x00" + body[12:]),
            "expect": "bad-params",
        },
    ]
    forged = dataclasses.replace(a[2], payload=bytes(x ^ 1 for x in a[2].payload))
    other = split(bytes(16), 3, 5, rng=DeterministicRandom("share-c-other"))
    retagged = dataclasses.replace(other[4], set_id=a[0].set_id)  # foreign, same set id
    combine_cases = [
        {
            "name": "first three",
            "shares": [str(s) for s in a[:3]],
            "expect": "ok",
            "secret": "2b7e151628aed2a6abf7158809cf4f3c",
        },
        {
            "name": "all five, shuffled",
            "shares": [str(a[i]) for i in (4, 1, 3, 0, 2)],
            "expect": "ok",
            "secret": "2b7e151628aed2a6abf7158809cf4f3c",
        },
        {"name": "too few", "shares": [str(s) for s in a[:2]], "expect": "insufficient"},
        {
            "name": "mixed sets",
            "shares": [str(a[0]), str(a[1]), str(b[2])],
            "expect": "mixed-sets",
            "bad_index": 3,
        },
        {
            "name": "duplicate",
            "shares": [str(a[0]), str(a[1]), str(a[1])],
            "expect": "duplicate",
            "bad_index": 2,
        },
        {
            "name": "forged payload, exactly threshold",
            "shares": [str(a[0]), str(a[1]), str(forged)],
            "expect": "recovery-failure",
        },
        {
            "name": "forged payload, one spare share",
            "shares": [str(a[0]), str(forged), str(a[1]), str(a[3])],
            "expect": "recovery-failure",
            "bad_index": 3,
        },
        {
            "name": "foreign share relabelled with the set id",
            "shares": [str(a[0]), str(retagged), str(a[1]), str(a[2])],
            "expect": "recovery-failure",
            "bad_index": 5,
        },
    ]
    doc = {
        "description": "keysplit.share known answers (docs/format/shares.md); splits are "
        "seeded via keysplit.rng.DeterministicRandom(seed); expect: ok | bad-checksum | "
        "bad-prefix | truncated | trailing | unknown-version | bad-params | insufficient | "
        "mixed-sets | duplicate | recovery-failure",
        "splits": splits,
        "parse_text": parse_cases,
        "parse_binary": binary_cases,
        "combine": combine_cases,
    }
    path = Path(__file__).with_name("shares.json")
    path.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
