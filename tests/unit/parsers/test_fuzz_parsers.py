"""Hypothesis fuzzing of every decoder: decode-and-re-encode exactly, or a KeysplitError.

For each parser, arbitrary input, mutations of valid encodings, and inputs whose
checksums are *valid* around random contents (so the deeper checks run) must either
decode to an object whose encoding is the input again (canonical form for text) or raise
a :class:`keysplit.KeysplitError`. Nothing else (IndexError, ValueError, OverflowError,
UnicodeError...) may escape. Example counts are bounded for the shared CI machine;
``make fuzz`` raises them with ``KEYSPLIT_FUZZ_EXAMPLES``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paths import VECTORS_DIR
from tamper import mutate

from keysplit import (
    AuditLog,
    Identity,
    KeysplitError,
    Recipient,
    Share,
    _bech32,
    load_share,
    record,
    split,
    stream,
    trust,
)
from keysplit.custody import sealed_share_info
from keysplit.interop import pycryptodome, slip39
from keysplit.interop.slip39 import rs1024
from keysplit.interop.slip39.wordlist import WORDS
from keysplit.keyring import file as kf
from keysplit.rng import DeterministicRandom


def budget(default: int) -> settings:
    """``default`` examples in ``make test``; ``KEYSPLIT_FUZZ_EXAMPLES`` (``make fuzz``) wins."""
    n = int(os.environ.get("KEYSPLIT_FUZZ_EXAMPLES", default))
    return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.too_slow])


FUZZ = budget(100)


_SHARES = split(bytes(range(16)), 3, 5, rng=DeterministicRandom("fuzz"))
_SHARES_32 = split(bytes(32), 2, 2, rng=DeterministicRandom("fuzz32"))
_VALID_SHARE_BYTES = [s.to_bytes() for s in (*_SHARES, *_SHARES_32)]


# -- keysplit share, binary ----------------------------------------------------------------


@st.composite
def share_bytes(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["random", "mutated", "valid-check"]))
    if kind == "random":
        return draw(st.binary(max_size=120))
    if kind == "mutated":
        return mutate(draw(st.sampled_from(_VALID_SHARE_BYTES)), draw)
    body = draw(st.binary(min_size=0, max_size=90))
    if draw(st.booleans()) and body:
        body = b"\x01" + body[1:]
    return b"KSSH" + body + hashlib.sha256(body).digest()[:4]


@FUZZ
@given(share_bytes())
def test_share_from_bytes(data: bytes) -> None:
    try:
        share = Share.from_bytes(data)
    except KeysplitError:
        return
    assert share.to_bytes() == data


# -- keysplit share, text -----------------------------------------------------------------


def _canon_share_text(text: str) -> str:
    return re.sub(r"[\s\-]+", "", text).lower()


@st.composite
def share_text(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["random", "charset", "mutated", "valid-check"]))
    if kind == "random":
        return draw(st.text(max_size=120))
    if kind == "charset":
        return "ks1" + draw(st.text(alphabet=_bech32.CHARSET + "-bio1 ", max_size=100))
    if kind == "mutated":
        s = str(draw(st.sampled_from([*_SHARES, *_SHARES_32])))
        raw = mutate(s.encode(), draw)
        return raw.decode("latin-1")
    values = draw(st.lists(st.integers(0, 31), max_size=90))
    chars = _bech32.encode_chars(values + _bech32.checksum("ks", values))
    return "ks1" + chars


@FUZZ
@given(share_text())
def test_share_parse(text: str) -> None:
    try:
        share = Share.parse(text)
    except KeysplitError:
        return
    assert _canon_share_text(str(share)) == _canon_share_text(text)
    assert Share.parse(str(share)) == share


# -- SLIP-39 mnemonic -----------------------------------------------------------------------

_MNEMONICS = [
    m
    for group in slip39.generate_mnemonics(
        2, [(2, 3), (1, 1)], bytes(16), iteration_exponent=0, rng=DeterministicRandom("f")
    )
    for m in group
] + slip39.generate_mnemonics(
    1, [(2, 2)], bytes(32), iteration_exponent=0, extendable=False, rng=DeterministicRandom("g")
)[0]


@st.composite
def mnemonics(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["random", "words", "mutated", "valid-check"]))
    if kind == "random":
        return draw(st.text(max_size=200))
    if kind == "words":
        return " ".join(draw(st.lists(st.sampled_from(WORDS), max_size=40)))
    if kind == "mutated":
        words = draw(st.sampled_from(_MNEMONICS)).split()
        op = draw(st.sampled_from(["replace", "drop", "add", "swap"]))
        i = draw(st.integers(0, len(words) - 1))
        if op == "replace":
            words[i] = draw(st.sampled_from(WORDS))
        elif op == "drop":
            del words[i]
        elif op == "add":
            words.insert(i, draw(st.sampled_from(WORDS)))
        else:
            j = draw(st.integers(0, len(words) - 1))
            words[i], words[j] = words[j], words[i]
        return " ".join(words)
    # random words with a VALID checksum: reaches length, padding and parameter checks
    ext = draw(st.booleans())
    data = draw(st.lists(st.integers(0, 1023), min_size=2, max_size=36))
    id_exp = (data[0] << 10) | data[1]
    id_exp = (id_exp & ~0x10) | (0x10 if ext else 0)
    data[0], data[1] = id_exp >> 10, id_exp & 1023
    cs = b"shamir_extendable" if ext else b"shamir"
    return " ".join(WORDS[i] for i in data + rs1024.create_checksum(data, cs))


@FUZZ
@given(mnemonics())
def test_slip39_decode(text: str) -> None:
    try:
        share = slip39.decode_mnemonic(text)
    except KeysplitError:
        return
    assert share.mnemonic() == " ".join(text.lower().split())
    assert slip39.decode_mnemonic(share.mnemonic()) == share


@budget(40)
@given(st.lists(st.sampled_from(_MNEMONICS), min_size=1, max_size=5), st.data())
def test_slip39_combine_sets(chosen: list[str], data: st.DataObject) -> None:
    """Arbitrary subsets (with possible mutations) combine or raise a KeysplitError."""
    if data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(chosen) - 1))
        chosen[i] = data.draw(mnemonics())
    try:
        secret = slip39.combine_mnemonics(chosen)
    except KeysplitError:
        return
    assert len(secret) in (16, 32)


# -- pycryptodome / ssss text ----------------------------------------------------------------


@st.composite
def pyc_text(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["random", "shaped"]))
    if kind == "random":
        return draw(st.text(max_size=120))
    lines = draw(
        st.lists(
            st.tuples(
                st.integers(0, 99999),
                st.sampled_from(["-", ",", ":", " - ", "x"]),
                st.text(alphabet="0123456789abcdefABCDEFg", min_size=30, max_size=34),
            ),
            max_size=5,
        )
    )
    if draw(st.booleans()) and lines:
        lines = lines * draw(st.integers(1, 300))
    return "\n".join(f"{i}{sep}{h}" for i, sep, h in lines)


@FUZZ
@given(pyc_text())
def test_pycryptodome_parse(text: str) -> None:
    try:
        shares = pycryptodome.parse_pycryptodome(text)
    except KeysplitError:
        return
    assert pycryptodome.parse_pycryptodome(pycryptodome.format_pycryptodome(shares)) == shares
    with contextlib.suppress(KeysplitError):
        pycryptodome.combine_pycryptodome(shares)


# -- formats of the other modules: seeds from their known-answer vectors ---------------------

_VEC = VECTORS_DIR


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((_VEC / name).read_text())
    return data


_RECORDS = _load("record.json")
_STREAMS = _load("stream.json")
_KEYRINGS = _load("keyring.json")
_CUSTODIAN = _load("share_custodian.json")
_AUDIT = _load("audit.json")


def _seeded(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    @st.composite
    def strat(draw: st.DrawFn) -> bytes:
        if draw(st.integers(0, 4)) == 0:
            return draw(st.binary(max_size=200))
        return mutate(draw(st.sampled_from(seeds)), draw)

    return strat()


# record header (keysplit.record)

_RECORD_SEEDS = [bytes.fromhex(c["record"]) for c in _RECORDS["cases"]]
_RECORD_OK = [c for c in _RECORDS["cases"] if c["expect"] == "ok"]


@FUZZ
@given(_seeded(_RECORD_SEEDS), st.sampled_from(_RECORD_OK))
def test_record_header_and_decrypt(data: bytes, case: dict[str, Any]) -> None:
    try:
        h = record.parse(data)
    except KeysplitError:
        h = None
    if h is not None:
        again = record.MAGIC + bytes([h.version, h.suite]) + h.commitment + h.nonce
        assert again == data[: record.HEADER_SIZE]
    key = record.DataKey(bytes.fromhex(case["data_key"]))
    try:
        pt = record.decrypt(key, data, subject=case["subject"], context=case["context"])
    except KeysplitError:
        return
    assert data == bytes.fromhex(case["record"]) and pt == bytes.fromhex(case["plaintext"])


# stream header (keysplit.stream)

_STREAM_SEEDS = [bytes.fromhex(c["ciphertext"]) for c in _STREAMS["cases"] if "ciphertext" in c]
_STREAM_KEY = X25519PrivateKey.from_private_bytes(bytes.fromhex(_STREAMS["recipient_private"]))


@FUZZ
@given(_seeded(_STREAM_SEEDS))
def test_stream_header_and_decrypt(data: bytes) -> None:
    try:
        h = stream.read_header(io.BytesIO(data))
    except KeysplitError:
        h = None
    if h is not None:
        assert h.raw == data[: h.size]
        ctx = stream._encode_context(h.context)
        again = (
            stream.MAGIC
            + bytes([h.version])
            + h.chunk_size.to_bytes(4, "big")
            + h.recipient_id
            + len(ctx).to_bytes(2, "big")
            + ctx
            + h.sealed_key
        )
        assert again == h.raw
    with contextlib.suppress(KeysplitError):
        stream.decrypt_stream(io.BytesIO(data), io.BytesIO(), _STREAM_KEY)


# keyring file metadata (keysplit.keyring.file)

_KEYRING_SEEDS = [bytes.fromhex(c["file"]) for c in _KEYRINGS["cases"]]


@FUZZ
@given(_seeded(_KEYRING_SEEDS))
def test_keyring_file(data: bytes) -> None:
    try:
        meta, aad, nonce, ct = kf.parse(data)
    except KeysplitError:
        return
    assert aad + nonce + ct == data
    assert aad[kf._HEAD.size :] == meta.to_json()
    with contextlib.suppress(KeysplitError):
        kf.open_secrets(data, bytes.fromhex(_KEYRINGS["expected"]["master_key"]))


# custodian files (keysplit.custody)

_RECIPIENT_SEEDS = [
    r["text"].encode() if "text" in r else bytes.fromhex(r["hex"]) for r in _CUSTODIAN["recipients"]
]
# Unencrypted identities only: opening an encrypted one runs Argon2id on every example.
_IDENTITY_SEEDS = [
    bytes.fromhex(i["hex"]) for i in _CUSTODIAN["identities"] if "passphrase" not in i
]
_OPEN_IDENTITY = Identity.from_bytes(
    next(
        bytes.fromhex(i["hex"])
        for i in _CUSTODIAN["identities"]
        if i["expect"] == "ok" and "passphrase" not in i
    )
)
_SEALED_SEEDS = [bytes.fromhex(s["hex"]) for s in _CUSTODIAN["sealed"]]


@FUZZ
@given(
    _seeded(
        _RECIPIENT_SEEDS + [Recipient.parse(t.decode()).to_bytes() for t in _RECIPIENT_SEEDS[:1]]
    )
)
def test_recipient(data: bytes) -> None:
    try:
        r = Recipient.from_bytes(data)
    except KeysplitError:
        return
    if data.startswith(b"KSPK"):
        assert r.to_bytes() == data
    else:
        assert Recipient.from_bytes(r.to_text().encode()) == r


@FUZZ
@given(_seeded(_IDENTITY_SEEDS))
def test_identity(data: bytes) -> None:
    try:
        ident = Identity.from_bytes(data)
    except KeysplitError:
        return
    if not Identity.is_encrypted(data):
        assert ident.to_bytes() == data


@FUZZ
@given(_seeded(_SEALED_SEEDS))
def test_sealed_share(data: bytes) -> None:
    with contextlib.suppress(KeysplitError):
        info = sealed_share_info(data)
        assert info.index >= 1
    # Only public-key opening: a passphrase attempt would run Argon2id with parameters
    # taken from the (mutated) file on every example.
    with contextlib.suppress(KeysplitError):
        if sealed_share_info(data).method != "passphrase":
            load_share(data, identity=_OPEN_IDENTITY)


# audit log (keysplit.audit)

_AUDIT_SEEDS = [c["log"].encode() for c in _AUDIT["cases"]]


@budget(100)
@given(_seeded(_AUDIT_SEEDS))
def test_audit_log(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "audit.log"
        path.write_bytes(data)
        log = AuditLog(path)
        try:
            entries = log.entries()
        except KeysplitError:
            entries = None
        if entries is not None:
            lines = []
            for e in entries:
                body: dict[str, Any] = {
                    "v": 1,
                    "seq": e.seq,
                    "time": e.time,
                    "event": e.event,
                    "data": e.data,
                    "prev": e.prev,
                }
                if e.mac is not None:
                    body["mac"] = e.mac
                line = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
                assert hashlib.sha256(line).hexdigest() == e.hash
                lines.append(line)
            assert data.startswith(b"".join(x + b"\n" for x in lines))
        with contextlib.suppress(KeysplitError):
            log.verify()


# known-keyrings file (keysplit.trust)

_KID = "00112233445566778899aabbccddeeff"
_KNOWN_SEED = (
    f"# known\n{_KID} {trust.keyring_fingerprint(_KID, bytes(32))} prod keyring\n"
    f"{'ab' * 16} {trust.keyring_fingerprint('ab' * 16, bytes(range(32)))}\n"
).encode()


@FUZZ
@given(_seeded([_KNOWN_SEED]))
def test_known_keyrings_file(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        known = trust.KnownKeyrings(Path(d) / "known_keyrings")
        known.path.write_bytes(data)
        try:
            entries = known.entries()
        except KeysplitError:
            return
        for e in entries:
            assert trust.parse_fingerprint(e.fingerprint) == e.fingerprint
            assert known.lookup(e.keyring_id) == e
        again = trust.KnownKeyrings(Path(d) / "again")
        for e in entries:  # what pin() writes reads back the same
            again.pin(e.keyring_id, e.fingerprint, e.label)
        assert again.entries() == entries
        new = "f" * 32
        if known.lookup(new) is None:  # an edit keeps every other entry of the file as it was
            known.pin(new, trust.keyring_fingerprint(new, bytes(32)), "added")
            assert known.entries() == [*entries, known.lookup(new)]
            assert known.remove(new) and known.entries() == entries


@FUZZ
@given(
    st.text(max_size=60)
    | _seeded([trust.keyring_fingerprint(_KID, bytes(32)).encode()]).map(
        lambda b: b.decode("latin-1")
    )
)
def test_typed_fingerprint(text: str) -> None:
    try:
        canon = trust.parse_fingerprint(text)
    except KeysplitError:
        return
    assert trust.parse_fingerprint(canon) == canon and len(canon) == 42
