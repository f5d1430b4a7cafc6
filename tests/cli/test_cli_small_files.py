"""Issue 21 item 9, a variant: token, passphrase and proof-code files are bounded before
they are read.

``--token-file /dev/zero`` ran the CLI out of memory with a ``MemoryError`` traceback, a
50 MB token file was read whole, and a file of bytes that are not UTF-8 printed a
``UnicodeDecodeError`` traceback (``cli/_service.py`` read the token with
``read_text``). Token, passphrase and proof-code files now go through
``cli._common.read_small_file`` (at most 64 KiB, refused by size before reading); real CLI
processes, one ``error:`` line each."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from service_helpers import cli

from cli._common import SMALL_FILE_LIMIT
from cli._convert_io import slip39_passphrase
from cli._opener import read_passphrase_file


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    big = tmp_path / "big"
    big.write_bytes(b"t" * (SMALL_FILE_LIMIT + 1))
    bad = tmp_path / "not-utf8"
    bad.write_bytes(b"\xff\xfe\x00token")
    return {"/dev/zero": Path("/dev/zero"), "too large": big, "not UTF-8": bad}


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("kind", ["/dev/zero", "too large", "not UTF-8"])
def test_token_file_is_bounded_and_decoded_before_use(tmp_path: Path, kind: str) -> None:
    path = _bad_files(tmp_path)[kind]
    r = cli("cluster", "status", tmp_path / "no-cluster", "--token-file", path, cwd=tmp_path)
    assert r.returncode != 0
    line = _one_error_line(r.stderr)
    assert "token file" in line and str(path) in line
    assert ("not UTF-8" in line) == (kind == "not UTF-8")


_DATASET = ("encrypt-dataset", "in.parquet", "out", "--column", "c", "--subject-column", "s")


@pytest.mark.parametrize(
    "args",
    [
        ("cluster", "status", "no-cluster"),
        (*_DATASET, "--server", "unix:no.sock"),
    ],
    ids=["cluster", "dataset"],
)
def test_an_empty_token_file_is_the_same_error_everywhere(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """Every command reads its token file through ``cli._service.read_token``: the dataset
    commands had their own copy, worded differently ("holds no token")."""
    empty = tmp_path / "empty.token"
    empty.write_bytes(b" \n")
    (tmp_path / "in.parquet").write_bytes(b"")  # a missing IN is refused first
    r = cli(*args, "--token-file", empty, cwd=tmp_path)
    assert r.returncode == 1
    assert _one_error_line(r.stderr) == f"error: token file {empty} is empty"


@pytest.mark.parametrize(
    ("content", "passphrase"),
    [
        (b"pw\n", b"pw"),
        (b"pw\r\n", b"pw"),
        (b"pw", b"pw"),
        (b" pw \n\n", b" pw \n"),  # one newline only: the rest is the passphrase's own
        (b"pw\r", b"pw\r"),
    ],
)
def test_both_passphrase_file_readers_drop_one_trailing_newline(
    tmp_path: Path, content: bytes, passphrase: bytes
) -> None:
    """Custody passphrases (``--passphrase-file``) and SLIP-39 passphrases read the same
    file the same way (``cli._common.read_small_secret``)."""
    path = tmp_path / "pw"
    path.write_bytes(content)
    assert read_passphrase_file(path) == passphrase
    assert slip39_passphrase(path, False, False, False) == passphrase


def test_only_a_slip39_passphrase_file_may_be_empty(tmp_path: Path) -> None:
    """An empty SLIP-39 passphrase is the standard's default; an empty custody passphrase
    is a mistake."""
    path = tmp_path / "pw"
    path.write_bytes(b"\n")
    assert slip39_passphrase(path, False, False, False) == b""
    with pytest.raises(typer.Exit):
        read_passphrase_file(path)
