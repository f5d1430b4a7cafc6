"""Fuzz every CLI command's file inputs: corrupt one file, run the command, and require a
clean outcome: exit 0, or exit 1/2 with an ``error:`` line on stderr, never a traceback or
an exception escaping the command.

A pristine 2-of-3 keyring (made once with ``keysplit init``, custodians with unencrypted
identities so no example pays for Argon2id), its shares, an identity, a plain and a binary
share, a sealed file and its audit log are copied for each example; one of them is
corrupted (bit flips, truncation, junk, or a JSON edit behind a valid length header) and
the command that reads it runs through Typer's CliRunner. Example counts are small in
``make test``; ``make fuzz`` raises them with ``KEYSPLIT_FUZZ_EXAMPLES``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keysplit_cli.app import app
from tamper import mutate
from typer.testing import CliRunner, Result

import keysplit
from keysplit import Identity
from keysplit.interop import pycryptodome, slip39
from keysplit.keyring import file as kf
from keysplit.rng import DeterministicRandom

runner = CliRunner()


def _budget(default: int) -> settings:
    n = int(os.environ.get("KEYSPLIT_FUZZ_EXAMPLES", default))
    return settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


CLI = _budget(15)
NAMES = ("alice", "bob", "carol")


def _run(args: list[str]) -> Result:
    return runner.invoke(app, args, input="", catch_exceptions=True)


def _assert_clean(result: Result, args: list[str]) -> None:
    where = f"keysplit {' '.join(args)}"
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), f"{where}: {type(exc).__name__}: {exc}"
    assert "Traceback" not in result.output and "Traceback" not in result.stderr, where
    assert result.exit_code in (0, 1, 2), f"{where}: exit {result.exit_code}"
    if result.exit_code == 1:
        assert any(ln.startswith("error:") for ln in result.stderr.splitlines()), (
            f"{where}: exit 1 without an error: line: {result.stderr!r}"
        )


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzzcli")
    keys = root / "keys"
    keys.mkdir()
    spec = []
    for n in NAMES:
        ident = Identity.generate(n)
        (keys / f"{n}.pub").write_text(ident.recipient.to_text())
        (keys / f"{n}.identity").write_bytes(ident.to_bytes(None))
        (keys / f"{n}.identity").chmod(0o600)  # 0644 would add a warning to every run
        spec += ["-c", f"{n}={keys / f'{n}.pub'}"]
    r = _run(["init", str(root / "vault"), "-k", "2", *spec])
    assert r.exit_code == 0, r.output
    (root / "plain.txt").write_bytes(b"attack at dawn\n" * 20)
    r = _run(["encrypt", str(root / "vault"), str(root / "plain.txt"), str(root / "file.ks")])
    assert r.exit_code == 0, r.output
    shares = keysplit.split(bytes(range(16)), 2, 3, rng=DeterministicRandom("cli-fuzz"))
    (root / "share.txt").write_text(f"# a plain share\n{shares[0]}\n")
    (root / "share.bin").write_bytes(shares[1].to_bytes())
    (root / "share2.txt").write_text(f"{shares[2]}\n")
    (root / "secret.hex").write_text(bytes(range(16)).hex() + "\n")
    mnemonics = slip39.generate_mnemonics(
        1, [(2, 3)], bytes(16), iteration_exponent=0, rng=DeterministicRandom("cli-fuzz-s")
    )[0]
    (root / "slip39.txt").write_text("\n".join(mnemonics[:2]) + "\n")
    pyc = pycryptodome.split_pycryptodome(bytes(16), 2, 3, rng=DeterministicRandom("cli-fuzz-p"))
    (root / "pyc.txt").write_text(pycryptodome.format_pycryptodome(pyc[:2]) + "\n")
    assert (root / "vault" / "audit.log").exists()
    return root


def _sealed(root: Path, name: str) -> Path:
    return root / "vault-shares" / f"{name}.g1.kss"


def _quorum(root: Path, names: tuple[str, ...] = ("alice", "bob")) -> list[str]:
    args: list[str] = []
    for n in names:
        args += [
            "--share",
            str(_sealed(root, n)),
            "--identity",
            str(root / "keys" / f"{n}.identity"),
        ]
    return args


def _json_edit(data: bytes, draw: st.DrawFn) -> bytes:
    """Edit the keyring file's JSON metadata and re-pack it behind a correct length."""
    try:
        _meta, aad, nonce, ct = kf.parse(data)
    except keysplit.KeysplitError:
        return data
    if draw(st.integers(0, 9)) == 0:  # hostile nesting behind a valid length header
        raw = b"[" * draw(st.sampled_from([100, 5000, 100_000]))
        return kf._HEAD.pack(kf.MAGIC, kf.VERSION, len(raw)) + raw + nonce + ct
    obj = json.loads(aad[kf._HEAD.size :])
    key = draw(st.sampled_from(sorted(obj)))
    obj[key] = draw(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(2**70), 2**70),
            st.text(max_size=40),
            st.lists(st.integers(-5, 300), max_size=5),
            st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
            st.just("ff" * 32),
        )
    )
    raw = json.dumps(obj).encode()
    return kf._HEAD.pack(kf.MAGIC, kf.VERSION, len(raw)) + raw + nonce + ct


def _line_edit(data: bytes, draw: st.DrawFn) -> bytes:
    """Replace one JSON line (audit log) with an edited copy or junk."""
    lines = data.split(b"\n")
    i = draw(st.integers(0, len(lines) - 1))
    try:
        obj = json.loads(lines[i])
    except ValueError:
        obj = None
    if isinstance(obj, dict) and obj and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(obj)))
        obj[key] = draw(st.one_of(st.none(), st.integers(), st.text(max_size=10), st.just([])))
        lines[i] = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    else:
        lines[i] = draw(st.sampled_from([b"", b"{}", b"[" * 5000, b"\xff\xfe", b'{"v":1}']))
    return b"\n".join(lines)


def _corrupt(data: bytes, draw: st.DrawFn, kind: str) -> bytes:
    choice = draw(st.sampled_from(["mutate", "mutate", "structured", "empty", "junk"]))
    if choice == "empty":
        return b""
    if choice == "junk":
        return draw(st.binary(max_size=300))
    if choice == "structured" and kind == "keyring":
        return _json_edit(data, draw)
    if choice == "structured" and kind == "lines":
        return _line_edit(data, draw)
    return mutate(data, draw)


def _case(
    pristine: Path,
    target: str,
    data: st.DataObject,
    make_args: Callable[[Path], list[str]],
    kind: str = "bytes",
) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "w"
        shutil.copytree(pristine, root)
        path = root / target
        path.write_bytes(_corrupt(path.read_bytes(), data.draw, kind))
        args = make_args(root)
        _assert_clean(_run(args), args)


SHARE_FILES = ["share.txt", "share.bin", "vault-shares/alice.g1.kss"]


@CLI
@given(st.sampled_from(SHARE_FILES), st.data())
def test_share_inspect(pristine: Path, target: str, data: st.DataObject) -> None:
    _case(pristine, target, data, lambda r: ["share", "inspect", str(r / target)])


@CLI
@given(st.sampled_from([*SHARE_FILES, "keys/alice.identity"]), st.data())
def test_share_verify(pristine: Path, target: str, data: st.DataObject) -> None:
    _case(
        pristine,
        target,
        data,
        lambda r: [
            "share",
            "verify",
            str(r / "share.txt"),
            str(r / "share.bin"),
            str(_sealed(r, "alice")),
            "-i",
            str(r / "keys" / "alice.identity"),
        ],
    )


@CLI
@given(st.sampled_from(["share.txt", "share.bin", "share2.txt"]), st.data())
def test_combine(pristine: Path, target: str, data: st.DataObject) -> None:
    _case(
        pristine,
        target,
        data,
        lambda r: ["combine", str(r / "share.txt"), str(r / "share.bin"), str(r / "share2.txt")],
    )


@CLI
@given(st.data())
def test_status(pristine: Path, data: st.DataObject) -> None:
    _case(pristine, "vault/keyring.ksk", data, lambda r: ["status", str(r / "vault")], "keyring")


@CLI
@given(
    st.sampled_from(["vault/keyring.ksk", "vault-shares/alice.g1.kss", "keys/bob.identity"]),
    st.data(),
)
def test_unseal(pristine: Path, target: str, data: st.DataObject) -> None:
    kind = "keyring" if target.endswith(".ksk") else "bytes"
    _case(pristine, target, data, lambda r: ["unseal", str(r / "vault"), *_quorum(r)], kind)


@CLI
@given(st.data())
def test_encrypt(pristine: Path, data: st.DataObject) -> None:
    _case(
        pristine,
        "vault/keyring.ksk",
        data,
        lambda r: [
            "encrypt",
            str(r / "vault"),
            str(r / "plain.txt"),
            str(r / "out.ks"),
            "--trust-on-first-use",
        ],
        "keyring",
    )


@CLI
@given(st.sampled_from(["file.ks", "vault/keyring.ksk"]), st.data())
def test_decrypt(pristine: Path, target: str, data: st.DataObject) -> None:
    kind = "keyring" if target.endswith(".ksk") else "bytes"
    _case(
        pristine,
        target,
        data,
        lambda r: [
            "decrypt",
            str(r / "vault"),
            str(r / "file.ks"),
            str(r / "out.txt"),
            *_quorum(r),
        ],
        kind,
    )


@CLI
@given(st.sampled_from(["show", "verify"]), st.data())
def test_audit(pristine: Path, sub: str, data: st.DataObject) -> None:
    _case(
        pristine,
        "vault/audit.log",
        data,
        lambda r: ["audit", sub, str(r / "vault")],
        "lines",
    )


@CLI
@given(st.data())
def test_init_with_corrupt_public_key(pristine: Path, data: st.DataObject) -> None:
    def args(r: Path) -> list[str]:
        spec = [f"-c{n}={r / 'keys' / f'{n}.pub'}" for n in NAMES]
        return ["init", str(r / "new"), "-k", "2", *spec]

    _case(pristine, "keys/carol.pub", data, args)


@CLI
@given(st.data())
def test_custodian_show(pristine: Path, data: st.DataObject) -> None:
    _case(
        pristine, "keys/alice.pub", data, lambda r: ["custodian", "show", str(r / "keys/alice.pub")]
    )


@CLI
@given(st.data())
def test_split_secret_file(pristine: Path, data: st.DataObject) -> None:
    _case(
        pristine,
        "secret.hex",
        data,
        lambda r: ["split", "-k", "2", "-n", "3", "--in", str(r / "secret.hex")],
    )


@CLI
@given(
    st.sampled_from(
        [
            ("slip39.txt", "slip39", "keysplit"),
            ("pyc.txt", "pycryptodome", "slip39"),
            ("share2.txt", "keysplit", "pycryptodome"),
        ]
    ),
    st.data(),
)
def test_share_convert(pristine: Path, case: tuple[str, str, str], data: st.DataObject) -> None:
    target, src, dst = case

    def args(r: Path) -> list[str]:
        inputs = [str(r / target)] + ([str(r / "share.txt")] if src == "keysplit" else [])
        extra = ["--no-passphrase", "-t", "2", "-n", "3"] + (
            ["--source-threshold", "2"] if src == "pycryptodome" else []
        )
        return ["share", "convert", *inputs, "--from", src, "--to", dst, *extra]

    _case(pristine, target, data, args)


def test_pristine_commands_succeed(pristine: Path) -> None:
    """The fuzz targets are real: each command succeeds on the uncorrupted files."""
    identity = lambda b: b  # noqa: E731
    for target, make in [
        ("share.txt", lambda r: ["share", "inspect", str(r / "share.txt")]),
        (
            "file.ks",
            lambda r: ["decrypt", str(r / "vault"), str(r / "file.ks"), str(r / "o"), *_quorum(r)],
        ),
        ("vault/audit.log", lambda r: ["audit", "verify", str(r / "vault")]),
        ("vault/keyring.ksk", lambda r: ["status", str(r / "vault")]),
        (
            "slip39.txt",
            lambda r: [
                "share",
                "convert",
                str(r / "slip39.txt"),
                "--from",
                "slip39",
                "--to",
                "keysplit",
                "--no-passphrase",
                "-t",
                "2",
                "-n",
                "3",
            ],
        ),
        (
            "pyc.txt",
            lambda r: [
                "share",
                "convert",
                str(r / "pyc.txt"),
                "--from",
                "pycryptodome",
                "--to",
                "slip39",
                "--no-passphrase",
                "--source-threshold",
                "2",
                "-t",
                "2",
                "-n",
                "3",
            ],
        ),
        ("secret.hex", lambda r: ["split", "-k", "2", "-n", "3", "--in", str(r / "secret.hex")]),
        ("keys/alice.pub", lambda r: ["custodian", "show", str(r / "keys/alice.pub")]),
        (
            "vault/keyring.ksk",
            lambda r: [
                "encrypt",
                str(r / "vault"),
                str(r / "plain.txt"),
                str(r / "o"),
                "--trust-on-first-use",
            ],
        ),
    ]:
        with tempfile.TemporaryDirectory() as d:
            root = Path(d) / "w"
            shutil.copytree(pristine, root)
            args = make(root)
            (root / target).write_bytes(identity((root / target).read_bytes()))
            result = _run(args)
            assert result.exit_code == 0, (args, result.output, result.stderr)
