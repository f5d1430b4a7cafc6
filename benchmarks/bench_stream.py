"""Streaming file encryption/decryption vs a bare ``AESGCM.encrypt_into`` loop (and age).

All impls read the same file (page cache warm) in the same run and write to
``/dev/null``, so the figures compare the crypto pipeline, not the disk:

* baseline: a bare loop that ``readinto``s 1 MiB chunks into a reused buffer and calls
  ``AESGCM.encrypt_into``/``decrypt_into`` into another (no header, no HPKE, no STREAM
  nonces): the ceiling the target "streaming >= 80 % of it" is measured against;
* ``keysplit encrypt_stream``/``decrypt_stream`` (1 MiB chunks, HPKE header included);
* ``age`` (X25519 recipient, 64 KiB ChaCha20-Poly1305 chunks) when the binary is
  installed, as a subprocess (process start-up included; negligible at 1 GiB);
* ``keysplit decrypt_file`` (full mode): the atomic path to a real file, temp file, fsync
  and rename included, to show what all-or-nothing output costs on this disk.

Peak RSS: each keysplit op also runs once in a fresh subprocess per file size and the
child's ``ru_maxrss`` (via ``os.wait4``) is reported as ``peak_mb``: it should not grow
with the file (the interpreter and imports are most of it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keysplit.stream import decrypt_file, decrypt_stream, encrypt_stream

from .harness import measure_interleaved, row, run_standalone

MiB = 1 << 20
CHUNK = 1 << 20


class _Null:
    """A sink that discards (cheaper than writing to /dev/null through the kernel)."""

    def write(self, b: Any) -> int:
        return len(b)


def _make_file(path: Path, size: int) -> None:
    block = os.urandom(min(size, 16 * MiB))
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, len(block))
            fh.write(block[:n])
            left -= n


def _bare_encrypt(src: Path, dst: Path | None) -> None:
    aead = AESGCM(b"\x01" * 16)
    buf = memoryview(bytearray(CHUNK))
    out = memoryview(bytearray(CHUNK + 16))
    sink: Any = open(dst, "wb") if dst else _Null()  # noqa: SIM115
    try:
        with open(src, "rb", buffering=0) as fh:
            i = 0
            while n := fh.readinto(buf):
                ct = out[: n + 16]
                aead.encrypt_into(i.to_bytes(12, "big"), buf[:n], None, ct)
                sink.write(ct)
                i += 1
    finally:
        if dst:
            sink.close()


def _bare_decrypt(src: Path) -> None:
    aead = AESGCM(b"\x01" * 16)
    buf = memoryview(bytearray(CHUNK + 16))
    out = memoryview(bytearray(CHUNK))
    sink = _Null()
    with open(src, "rb", buffering=0) as fh:
        i = 0
        while n := fh.readinto(buf):
            pt = out[: n - 16]
            aead.decrypt_into(i.to_bytes(12, "big"), buf[:n], None, pt)
            sink.write(pt)
            i += 1


_RSS_CHILD = """
import sys
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from keysplit.stream import encrypt_stream, decrypt_stream
op, src, keyfile = sys.argv[1:4]
sk = X25519PrivateKey.from_private_bytes(open(keyfile, "rb").read())
class Null:
    def write(self, b):
        return len(b)
with open(src, "rb", buffering=0) as fh:
    if op == "encrypt":
        encrypt_stream(fh, Null(), sk.public_key())
    elif op == "decrypt":
        decrypt_stream(fh, Null(), sk)
"""


def _child_peak_mb(op: str, src: Path, keyfile: Path) -> float:
    """Peak RSS (MB) of a fresh interpreter running one op ("none": imports only)."""
    proc = subprocess.Popen([sys.executable, "-c", _RSS_CHILD, op, str(src), str(keyfile)])
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"rss child {op} failed with {proc.returncode}")
    return usage.ru_maxrss / 1024  # KiB on Linux


def _sizes(quick: bool) -> tuple[int, tuple[int, int]]:
    """(timed file size, the two file sizes whose peak RSS is compared)."""
    return (32 * MiB, (8 * MiB, 32 * MiB)) if quick else (1024 * MiB, (64 * MiB, 1024 * MiB))


def run(quick: bool) -> list[dict[str, Any]]:
    size, rss_sizes = _sizes(quick)
    repeats = 3 if quick else 5
    age = shutil.which("age")
    rows: list[dict[str, Any]] = []
    sk = X25519PrivateKey.generate()
    with tempfile.TemporaryDirectory(prefix="ks-bench-stream-") as tmp:
        d = Path(tmp)
        plain = d / "plain.bin"
        _make_file(plain, size)
        keyfile = d / "sk"
        keyfile.write_bytes(sk.private_bytes_raw())
        enc = d / "plain.ks"
        with open(plain, "rb") as s, open(enc, "wb") as o:
            encrypt_stream(s, o, sk.public_key())
        bare_ct = d / "plain.bare"
        _bare_encrypt(plain, bare_ct)
        mb = size / 1e6

        # Peak RSS per op and file size (fresh processes; "imports only" for reference).
        peaks: dict[tuple[str, int], float] = {}
        for n in rss_sizes:
            src = plain if n == size else d / f"rss{n}.bin"
            if n != size:
                _make_file(src, n)
            src_enc = d / f"rss{n}.ks"
            with open(src, "rb") as s, open(src_enc, "wb") as o:
                encrypt_stream(s, o, sk.public_key())
            peaks[("encrypt", n)] = _child_peak_mb("encrypt", src, keyfile)
            peaks[("decrypt", n)] = _child_peak_mb("decrypt", src_enc, keyfile)
        imports_mb = _child_peak_mb("none", plain, keyfile)
        rss_note = (
            "peak RSS of a fresh process: "
            + ", ".join(
                f"{op} {n // MiB} MiB -> {peaks[(op, n)]:.1f} MB"
                for op in ("encrypt", "decrypt")
                for n in rss_sizes
            )
            + f" (imports alone {imports_mb:.1f} MB)"
        )

        def ks_encrypt() -> None:
            with open(plain, "rb", buffering=0) as fh:
                encrypt_stream(fh, _Null(), sk.public_key())  # type: ignore[arg-type]

        def ks_decrypt() -> None:
            with open(enc, "rb", buffering=0) as fh:
                decrypt_stream(fh, _Null(), sk)  # type: ignore[arg-type]

        enc_fns: dict[str, Callable[[], object]] = {
            "bare AESGCM.encrypt_into loop": lambda: _bare_encrypt(plain, None),
            "keysplit encrypt_stream": ks_encrypt,
        }
        dec_fns: dict[str, Callable[[], object]] = {
            "bare AESGCM.decrypt_into loop": lambda: _bare_decrypt(bare_ct),
            "keysplit decrypt_stream": ks_decrypt,
        }
        out = d / "out.bin"
        if not quick:
            dec_fns["keysplit decrypt_file (atomic, fsync, to disk)"] = lambda: decrypt_file(
                enc, out, sk, overwrite=True
            )
        notes: dict[str, dict[str, Any]] = {
            "keysplit encrypt_stream": {
                "peak_mb": peaks[("encrypt", rss_sizes[-1])],
                "note": rss_note,
            },
            "keysplit decrypt_stream": {
                "peak_mb": peaks[("decrypt", rss_sizes[-1])],
                "note": rss_note,
            },
        }
        if age:
            identity = d / "age.key"
            subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
            recipient = subprocess.run(
                ["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True
            ).stdout.strip()
            age_ct = d / "plain.age"
            subprocess.run([age, "-r", recipient, "-o", str(age_ct), str(plain)], check=True)
            version = subprocess.run(
                [age, "--version"], capture_output=True, text=True
            ).stdout.strip()
            note = f"age {version} subprocess, ChaCha20-Poly1305 64 KiB chunks, to /dev/null"
            enc_fns["age -r (X25519)"] = lambda: subprocess.run(
                [age, "-r", recipient, "-o", os.devnull, str(plain)], check=True
            )
            dec_fns["age -d (X25519)"] = lambda: subprocess.run(
                [age, "-d", "-i", str(identity), "-o", os.devnull, str(age_ct)], check=True
            )
            notes["age -r (X25519)"] = notes["age -d (X25519)"] = {"note": note}

        for bench, fns in (
            ("stream encrypt 1 MiB chunks", enc_fns),
            ("stream decrypt 1 MiB chunks", dec_fns),
        ):
            stats = measure_interleaved(fns, mb, repeats)
            for i, impl in enumerate(fns):
                rows.append(
                    row(bench, impl, size, "MB/s", stats[impl], baseline=i == 0,
                        **notes.get(impl, {}))
                )  # fmt: skip
        out.unlink(missing_ok=True)
    return rows


if __name__ == "__main__":
    run_standalone(run, sys.argv)
