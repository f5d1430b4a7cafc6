"""CLI share input limits (issue 15): share files refused by size before they are read,
and an expensive Argon2id share asks the custodian (or needs --allow-expensive-kdf)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import typer.main
import typer.testing
from keysplit_cli import _opener
from keysplit_cli.app import app
from typer.testing import CliRunner

from keysplit import Argon2Params, Identity, seal_share, seal_share_with_passphrase, split

runner = CliRunner()
_FAST = Argon2Params(time_cost=1, memory_kib=64, lanes=1)
SECRET = bytes(range(16))


def _error_lines(stderr: str) -> list[str]:
    # hidden prompts echo no newline under CliRunner, so an error may follow a prompt
    return [ln[ln.index("error:") :] for ln in stderr.splitlines() if "error:" in ln]


def test_20mb_share_file_refused_by_size_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Typer builds the click tree of the whole CLI on every invoke (~1 MB, growing with the
    # CLI): build it once, so that the peak below measures the command alone.
    command = typer.main.get_command(app)
    monkeypatch.setattr(typer.testing, "_get_command", lambda _app: command)
    big = tmp_path / "big.kss"
    with open(big, "wb") as fh:
        fh.write(b"KSSS")
        fh.truncate(20_000_000)
    small = tmp_path / "small.kss"
    small.write_bytes(b"KSSS")
    runner.invoke(app, ["share", "inspect", str(small)])  # imports and first-use caches
    tracemalloc.start()
    try:
        result = runner.invoke(app, ["share", "inspect", str(big)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    errors = _error_lines(result.stderr)
    assert len(errors) == 1 and "too large for a share" in errors[0] and "big.kss" in errors[0]
    # before: the whole file was read (20 MB) and parsed (~300 MiB); now nothing big is
    # allocated (the bound is on allocation, not time)
    assert peak < 1024 * 1024, peak
    for cmd in (["share", "verify", str(big)], ["combine", str(big), str(big)]):
        r = runner.invoke(app, cmd)
        assert r.exit_code == 1 and "too large for a share" in r.output


@pytest.fixture
def heavy_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    """A passphrase share that counts as expensive (the bar lowered for the test, so the
    prompt path runs without deriving gigabytes), a plain second share, a passphrase file."""
    monkeypatch.setattr(Argon2Params, "CONFIRM_ABOVE_KIB", 32)
    assert _FAST.needs_confirmation
    a, b = split(SECRET, 2, 2)
    sealed = tmp_path / "a.kss"
    sealed.write_bytes(seal_share_with_passphrase(a, "alice", b"pw", kdf=_FAST))
    plain = tmp_path / "b.txt"
    plain.write_text(str(b) + "\n")
    pw = tmp_path / "pw"
    pw.write_bytes(b"pw\n")
    return sealed, plain, pw


def test_expensive_share_refused_without_prompt(heavy_share: tuple[Path, Path, Path]) -> None:
    sealed, plain, pw = heavy_share
    r = runner.invoke(app, ["combine", str(sealed), str(plain), "--passphrase-file", str(pw)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    (err,) = _error_lines(r.stderr)
    assert "asks for 0.0 GiB and 1 passes" in err and "no prompt" in err
    assert "hint:" in r.stderr and "--allow-expensive-kdf" in r.stderr
    r = runner.invoke(
        app,
        ["combine", str(sealed), str(plain), "--passphrase-file", str(pw), "--allow-expensive-kdf"],
    )
    assert r.exit_code == 0, r.output
    assert "recovered a verified 16-byte secret" in r.stderr


def test_expensive_share_asks_at_a_terminal(
    heavy_share: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sealed, plain, _ = heavy_share
    monkeypatch.setattr(_opener, "can_prompt", lambda: True)
    r = runner.invoke(app, ["combine", str(sealed), str(plain)], input="pw\ny\n")
    assert r.exit_code == 0, r.output
    assert "this share asks for 0.0 GiB and ~0 s per attempt; continue?" in r.stderr
    r = runner.invoke(app, ["combine", str(sealed), str(plain)], input="pw\nn\n")
    assert r.exit_code == 1 and "Traceback" not in r.output
    (err,) = _error_lines(r.stderr)
    assert "more work than keysplit does without asking" in err
    # no terminal (the real can_prompt under CliRunner): refused, even with a typed passphrase
    monkeypatch.undo()
    monkeypatch.setattr(Argon2Params, "CONFIRM_ABOVE_KIB", 32)
    r = runner.invoke(app, ["combine", str(sealed), str(plain)], input="pw\n")
    assert r.exit_code == 1 and "no prompt" in r.stderr


# -- identity, .pub and Vault input by size (issue 21 item 9) ------------------------------


def _sparse(path: Path, size: int, head: bytes = b"") -> Path:
    with open(path, "wb") as fh:  # sparse: long, almost nothing written
        fh.write(head)
        fh.truncate(size)
    return path


def _peak_of(args: list[str]) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        result = runner.invoke(app, args)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.mark.parametrize("kind", ["pub", "identity", "vault"])
def test_key_and_vault_files_refused_by_size_before_reading(tmp_path: Path, kind: str) -> None:
    """A 200 MB ``.pub``, identity or Vault input: before, each was read whole (454 MiB
    peak RSS for the ``.pub``); now it is refused by its size and nothing big is allocated."""
    share = split(SECRET, 2, 3)[0]
    sealed = tmp_path / "alice.kss"
    sealed.write_bytes(seal_share(share, Identity.generate("alice").recipient))
    big = _sparse(tmp_path / f"big.{kind}", 200_000_000)
    args = {
        "pub": ["custodian", "show", str(big)],
        "identity": [
            "share",
            "convert",
            "--from",
            "keysplit",
            "--to",
            "keysplit",
            "--identity",
            str(big),
            str(sealed),
        ],
        "vault": ["share", "convert", "--from", "vault", "--to", "slip39", str(big)],
    }[kind]
    small = tmp_path / "small"
    small.write_bytes(b"x")
    runner.invoke(app, [str(small) if a == str(big) else a for a in args])  # imports, caches
    result, peak = _peak_of(args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = _error_lines(result.stderr)
    assert len(errors) == 1 and "too large" in errors[0] and "big." in errors[0], errors
    assert peak < 8 << 20, peak  # building Typer's command tree costs ~2 MiB; the file 200 MB


def test_bounded_read_stops_at_the_limit_on_a_stream(tmp_path: Path) -> None:
    """A pipe or device has no size to check first: at most limit + 1 bytes are read."""
    from keysplit import FormatError
    from keysplit.custody import MAX_KEY_FILE_SIZE, read_key_file
    from keysplit.files import read_bounded

    with pytest.raises(FormatError, match="too large"):
        read_bounded("/dev/zero", 1000, "zeros")
    pub = tmp_path / "a.pub"
    pub.write_bytes(Identity.generate("alice").recipient.to_text().encode())
    assert read_key_file(pub) == pub.read_bytes()
    with pytest.raises(FormatError, match="too large"):
        read_key_file(_sparse(tmp_path / "b.pub", MAX_KEY_FILE_SIZE + 1))
