"""CLI basics: version, help on every command, the installed executable."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer
from keysplit_cli.app import app
from typer.testing import CliRunner

import keysplit

runner = CliRunner()


def _all_commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    # Typer bundles its own click; groups are recognised by their `commands` mapping.
    out = []
    for name, cmd in group.commands.items():
        path = (*prefix, name)
        out.append(path)
        if hasattr(cmd, "commands"):
            out.extend(_all_commands(cmd, path))
    return out


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert keysplit.__version__ in result.output


def test_every_command_has_help_text() -> None:
    root: Any = typer.main.get_command(app)
    commands = _all_commands(root)
    assert ("demo",) in commands
    for path in commands:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, path
        cmd = root
        for part in path:
            cmd = cmd.commands[part]
        assert (cmd.help or "").strip(), f"command {' '.join(path)} has no help text"


def test_unknown_command_is_usage_error() -> None:
    result = runner.invoke(app, ["no-such-command"])
    assert result.exit_code == 2


def test_installed_executable_runs() -> None:
    exe = shutil.which("keysplit") or str(
        __import__("pathlib").Path(sys.executable).with_name("keysplit")
    )
    proc = subprocess.run(
        [exe, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"keysplit {keysplit.__version__}"


def test_prompt_at_end_of_input_is_one_error_line(tmp_path: Path) -> None:
    """A prompt meeting EOF on stdin was 'Aborted.' with no error: line (found by fuzzing)."""
    shares = tmp_path / "s.txt"
    shares.write_text("".join(f"{s}\n" for s in keysplit.split(bytes(16), threshold=2, count=3)))
    args = ["share", "convert", str(shares), "--from", "keysplit", "--to", "slip39"]
    r = CliRunner().invoke(app, [*args, "-t", "2", "-n", "3"], input="")
    assert r.exit_code == 1, r.output
    assert "error: no input" in r.output
    assert "Traceback" not in r.output
