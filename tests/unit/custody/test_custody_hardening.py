"""Hostile custody input (issue 15): oversized share files, Argon2 cost and memory.

Each test failed before its fix: a 20 MB share file was decoded and parsed whole; a share
demanding more memory than the process could get ended in ``MemoryError``; a share could
demand 64 passes at 2 GiB (~75 s) and get them without anyone being asked.
"""

from __future__ import annotations

import copy
import hashlib
import io
import pickle
import struct
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from keysplit import (
    Argon2Params,
    CustodianError,
    FormatError,
    Identity,
    load_share,
    open_share,
    seal_share_with_passphrase,
    split,
)
from keysplit.custody import MAX_SHARE_FILE_SIZE, passphrase, read_share_file
from keysplit.rng import DeterministicRandom
from keysplit.stream import encrypt_stream

FAST = Argon2Params(time_cost=1, memory_kib=64, lanes=1)
SHARE = split(bytes(range(16)), 2, 3, rng=DeterministicRandom("hardening"))[0]
SEALED = seal_share_with_passphrase(SHARE, "dave", b"pw", kdf=FAST, rng=DeterministicRandom("h"))
KDF_AT = 4 + 3 + 4 + 8 + 3  # magic, version/method/len, "dave", set id, t/n/i


def _with_kdf(t: int, m: int, p: int, data: bytes = SEALED) -> bytes:
    """The sealed share with other Argon2 parameters, checksum fixed (as an attacker would)."""
    out = bytearray(data)
    out[KDF_AT : KDF_AT + 9] = struct.pack(">IIB", t, m, p)
    body = bytes(out[:-4])
    return body + hashlib.sha256(body).digest()[:4]


# -- share files by size -----------------------------------------------------------------


def _peak(fn: object) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match="too large"):
            fn()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_20_mb_share_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.share"
    with open(path, "wb") as fh:  # sparse: 20 MB long, nothing written
        fh.truncate(20 * 1024 * 1024)
    assert _peak(lambda: read_share_file(path)) < 1 << 20
    small = tmp_path / "ok.share"
    small.write_text(f"# comment\n{SHARE}\n")
    assert load_share(read_share_file(small)) == SHARE


def test_load_share_refuses_oversized_input_before_decoding() -> None:
    data = b"ks1-" + b"q" * (20 * 1024 * 1024)
    assert _peak(lambda: load_share(data)) < 1 << 20
    assert load_share(b"#" * (MAX_SHARE_FILE_SIZE - 100) + b"\n" + str(SHARE).encode()) == SHARE


def test_oversized_sealed_share_is_refused_before_parsing() -> None:
    with pytest.raises(FormatError, match="too large"):
        open_share(SEALED + b"\0" * (1 << 20), passphrase=b"pw")


# -- Argon2 cost -------------------------------------------------------------------------


def test_hard_work_cap_refuses_64_passes_at_2_gib() -> None:
    with pytest.raises(FormatError, match="unacceptable Argon2id"):
        open_share(_with_kdf(64, 2 * 1024 * 1024, 4), passphrase=b"pw")
    with pytest.raises(ValueError, match="time_cost \\* memory_kib"):
        Argon2Params(64, 2 * 1024 * 1024, 4)
    Argon2Params(1, 2 * 1024 * 1024, 4)  # RFC 9106's first option stays acceptable
    Argon2Params(64, 64 * 1024, 4)


def test_expensive_kdf_waits_for_consent() -> None:
    heavy = _with_kdf(16, 128 * 1024, 4)  # 2 GiB of passes: above the confirm threshold
    asked: list[Argon2Params] = []

    def refuse(p: Argon2Params) -> bool:
        asked.append(p)
        return False

    with pytest.raises(CustodianError, match="demands Argon2id with 16 passes over 128 MiB"):
        open_share(heavy, passphrase=b"pw")  # no hook: refused, nothing derived
    with pytest.raises(CustodianError, match="more work than keysplit does without asking"):
        open_share(heavy, passphrase=b"pw", confirm_kdf=refuse)
    assert asked == [Argon2Params(16, 128 * 1024, 4)]
    assert asked[0].needs_confirmation and not Argon2Params().needs_confirmation


def test_consent_lets_an_expensive_share_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Argon2Params, "CONFIRM_ABOVE_KIB", 32)  # FAST (64 KiB) now "expensive"
    with pytest.raises(CustodianError, match="without asking"):
        open_share(SEALED, passphrase=b"pw")
    assert open_share(SEALED, passphrase=b"pw", confirm_kdf=lambda p: True) == SHARE
    assert load_share(SEALED, passphrase=b"pw", confirm_kdf=lambda p: True) == SHARE


def test_memory_the_host_does_not_have_is_a_custodian_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(passphrase, "_available_memory_kib", lambda: 1024)
    with pytest.raises(CustodianError, match=r"needs 64 MiB .* this host has 1 MiB available"):
        open_share(_with_kdf(1, 64 * 1024, 4), passphrase=b"pw")


def test_memory_error_from_argon2_is_a_custodian_error(tmp_path: Path) -> None:
    # A real allocation failure: the child caps its address space just above what it uses.
    share_file = tmp_path / "big-kdf.sealed"
    share_file.write_bytes(_with_kdf(1, 768 * 1024, 4))
    code = textwrap.dedent(
        f"""
        import resource, sys
        from keysplit import CustodianError, open_share
        from keysplit.custody import passphrase
        passphrase._available_memory_kib = lambda: None  # let the allocation itself fail
        with open("/proc/self/status") as fh:
            vm = next(int(ln.split()[1]) for ln in fh if ln.startswith("VmSize:")) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + (256 << 20), vm + (256 << 20)))
        try:
            open_share(open({str(share_file)!r}, "rb").read(), passphrase=b"pw")
        except CustodianError as exc:
            print("CustodianError:", exc)
            sys.exit(0)
        sys.exit(3)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "needs 768 MiB for Argon2id, more than this process could allocate" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_identity_files_get_the_same_consent_check(monkeypatch: pytest.MonkeyPatch) -> None:
    from keysplit import Identity

    alice = Identity.generate("alice")
    data = alice.to_bytes(b"pw", kdf=FAST)
    monkeypatch.setattr(Argon2Params, "CONFIRM_ABOVE_KIB", 32)
    with pytest.raises(CustodianError, match="identity of custodian 'alice' demands"):
        Identity.from_bytes(data, b"pw")
    assert Identity.from_bytes(data, b"pw", confirm=lambda p: True).fingerprint == alice.fingerprint


# -- a file given in another's place (red team) ---------------------------------------------


def test_a_mixed_up_file_is_named_for_what_it_is() -> None:
    """(red team) An identity given as a share was "not a keysplit share (neither text nor
    a known binary form)", a ``.pub`` or a sealed share given as an identity "not a keysplit
    identity (bad magic)": true, but the custodian holding three files of keysplit's own
    could not tell which went where. The error now says what the file is."""
    ident = Identity.generate("erin")
    pub = ident.recipient.to_text().encode()
    blob = io.BytesIO()
    encrypt_stream(io.BytesIO(b"x"), blob, X25519PrivateKey.generate().public_key())
    for data, kind in [
        (ident.to_bytes(None), r"an identity file \(a custodian's private key\)"),
        (pub, r"a custodian's public key \(\.pub\)"),
        (blob.getvalue(), "a file encrypted to a keyring"),
    ]:
        with pytest.raises(FormatError, match=f"^not a keysplit share: {kind}$"):
            load_share(data)
    for data, kind in [(pub, r"a custodian's public key \(\.pub\)"), (SEALED, "a sealed share")]:
        with pytest.raises(FormatError, match=rf"^not a keysplit identity \(bad magic\): {kind}$"):
            Identity.from_bytes(data)
    with pytest.raises(FormatError, match=r"^not a keysplit identity \(bad magic\)$"):
        Identity.from_bytes(b"JUNK" * 20)  # nothing known: no guess


def test_custody_secrets_are_never_pickled() -> None:
    """(red team) a PassphraseOpener or PassphraseSealer pickled with its passphrase in
    clear (a pickle cache, a multiprocessing argument); an Identity refused only by chance
    (a lambda in its suite table). Each refuses, naming why."""
    identity = Identity.generate("dave")
    values = [
        passphrase.PassphraseOpener(b"pw"),
        passphrase.PassphraseSealer("dave", b"pw", kdf=FAST),
        identity,
    ]
    for value in values:
        for how in (pickle.dumps, copy.deepcopy, copy.copy):
            with pytest.raises(TypeError, match="cannot be pickled"):
                how(value)
