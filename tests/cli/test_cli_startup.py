"""CLI start-up: the app imports no part of the library, and a command only what it uses.

Every ``keysplit`` call (and the hundreds the test suite starts) pays for what the app
imports before it parses argv: the command modules import the library inside the
commands, the package face ``keysplit`` imports its parts on first use (PEP 562), and the
console entry point builds only the command it runs (``app_for``). These tests read
``sys.modules`` of fresh processes (``-X importtime`` of the installed executable); they
time nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from keysplit_cli import app as cli_app
from typer.testing import CliRunner

import keysplit

KEYSPLIT = str(Path(sys.executable).with_name("keysplit"))

# Parts only some commands use (the service, jobs, sheets, clusters, foreign formats): never
# imported by a command that does not.
SERVICE_AND_JOBS = (
    "dask",
    "distributed",
    "pandas",
    "pyarrow",
    "psycopg",
    "aiohttp",
    "fpdf",
    "segno",
    "rbcl",
    "keysplit.interop",
    "keysplit.service.client",
    "keysplit.service.cluster_admin",
    "keysplit.service.cluster_client",
    "keysplit.jobs",
)
# Those and the library's own heavy parts: none is needed to parse argv, print help or the
# version.
HEAVY = (
    "numpy",
    "rich.progress",
    "keysplit.share",
    "keysplit.custody",
    "keysplit.keyring",
    "keysplit.ceremony",
    "keysplit.audit",
    "keysplit.stream",
    *SERVICE_AND_JOBS,
)


def _imported(*args: str, cwd: Path | None = None, exit_code: int = 0) -> set[str]:
    """The modules a ``keysplit ARGS`` process imported (it must exit with ``exit_code``)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", KEYSPLIT, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == exit_code, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("import time:")]
    assert lines, proc.stderr[-2000:]
    return {ln.rpartition("|")[2].strip() for ln in lines}


def _python(code: str) -> str:
    """The output of ``python -c CODE`` in a fresh process (it must succeed)."""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _heavy(modules: set[str], names: tuple[str, ...] = HEAVY) -> list[str]:
    return sorted(n for n in names if n in modules or any(m.startswith(n + ".") for m in modules))


def test_importing_the_app_imports_no_heavy_module() -> None:
    code = (
        "import sys\n"
        "import keysplit_cli.app\n"
        f"heavy = {HEAVY!r}\n"
        "print(sorted(n for n in heavy if n in sys.modules))\n"
    )
    assert _python(code).strip() == "[]"


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["status", "--help"]])
def test_help_and_version_import_no_heavy_module(args: list[str]) -> None:
    modules = _imported(*args)
    assert _heavy(modules) == []
    if args[0].startswith("-"):  # Typer (0.29) coerces a command's parameters through
        assert "pydantic" not in modules  # pydantic, even for its --help: not ours to avoid


def test_import_keysplit_imports_only_the_errors() -> None:
    code = (
        "import sys\n"
        "import keysplit\n"
        "print(sorted(m for m in sys.modules if m.startswith('keysplit')))\n"
        "print('numpy' in sys.modules, 'cryptography' in sys.modules)\n"
    )
    assert _python(code).split("\n")[:2] == ["['keysplit', 'keysplit.errors']", "False False"]


def test_every_public_name_resolves_lazily_and_star_import_works() -> None:
    code = (
        "import keysplit\n"
        "assert 'Share' not in vars(keysplit)\n"
        "ns = {}\n"
        "exec('from keysplit import *', ns)\n"
        "missing = [n for n in keysplit.__all__ if n not in ns]\n"
        "assert not missing, missing\n"
        "assert ns['Share'] is keysplit.Share is vars(keysplit)['Share']\n"
        "assert keysplit.stream.read_header  # a submodule, as before the lazy face\n"
        "import keysplit.service\n"
        "assert keysplit.service.Client is keysplit.Client\n"
    )
    _python(code)


def test_a_command_imports_what_it_uses_only(tmp_path: Path) -> None:
    shares = keysplit.split(bytes(range(16)), threshold=2, count=3)
    (tmp_path / "a.kss").write_text(f"{shares[0]}\n")
    (tmp_path / "secret.hex").write_text(bytes(range(16)).hex() + "\n")
    inspect = _imported("share", "inspect", "a.kss", cwd=tmp_path)
    assert "keysplit.share" in inspect  # the command did run
    assert _heavy(inspect, SERVICE_AND_JOBS) == []
    split = _imported("split", "-k", "2", "-n", "3", "--in", "secret.hex", cwd=tmp_path)
    assert "keysplit.share" in split
    assert _heavy(split, SERVICE_AND_JOBS) == []


def _all_paths(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in group.commands.items():
        out.append((*prefix, name))
        if hasattr(cmd, "commands"):
            out.extend(_all_paths(cmd, (*prefix, name)))
    return out


def test_the_entry_point_builds_only_the_command_it_runs() -> None:
    full = cli_app.app
    assert cli_app.app_for([]) is full
    assert cli_app.app_for(["--help"]) is full
    assert cli_app.app_for(["--version"]) is full
    assert cli_app.app_for(["no-such-command"]) is full
    status = cli_app.app_for(["status", "vault", "--json"])
    assert [c.callback.__name__ for c in status.registered_commands if c.callback] == ["status_cmd"]
    assert status.registered_groups == []
    share = cli_app.app_for(["share", "inspect", "x"])
    assert share.registered_commands == []
    assert [g.name for g in share.registered_groups] == ["share"]


def test_the_entry_point_shows_what_the_whole_tree_shows() -> None:
    """Help and usage errors of every command are the same from the trimmed app."""
    paths = _all_paths(typer.main.get_command(cli_app.app))
    assert len(paths) > 40
    runner = CliRunner()
    env = {"COLUMNS": "100"}
    for path in paths:
        for args in ([*path, "--help"], [*path, "--no-such-option"]):
            whole = runner.invoke(cli_app.app, args, env=env, prog_name="keysplit")
            alone = runner.invoke(cli_app.app_for(args), args, env=env, prog_name="keysplit")
            assert (alone.exit_code, alone.output) == (whole.exit_code, whole.output), args


def test_commands_that_split_or_wrap_nothing_import_no_numpy_nor_pydantic(tmp_path: Path) -> None:
    """numpy (a quarter to a third of such a start's CPU) is the Shamir and key-wrap core's:
    reading a keyring's public data, sealing a file to it, pinning it and asking a cluster's
    nodes for their status import it nowhere (keysplit.rng, keyring.datakeys, record, share
    and service.cluster_client import it in the functions that split, wrap or group). Nor
    do their plain option values import pydantic (Typer's adapters; cli/_params.py)."""
    from keysplit.service.cluster_config import ClusterConfig, ClusterNodeInfo

    _, shares = keysplit.Keyring.create(tmp_path / "vault", threshold=2, custodians=["a", "b"])
    del shares
    fp = keysplit.Keyring.open(tmp_path / "vault").fingerprint
    (tmp_path / "small.bin").write_bytes(b"x" * 300)
    nodes = tuple(
        ClusterNodeInfo(f"n{i}", i, f"unix:{tmp_path}/n{i}.sock", f"{i:032x}", "ab" * 32, "cd" * 32)
        for i in (1, 2)
    )
    (tmp_path / "nodes").mkdir()
    ClusterConfig("0f" * 16, "in", 2, nodes, "ef" * 32, commitments=("ef" * 32,) * 2).write(
        tmp_path / "nodes"
    )
    runs = {
        "status": _imported("status", "vault", cwd=tmp_path),
        "pin": _imported("keyring", "pin", "vault", "--expect", fp, cwd=tmp_path),
        "encrypt": _imported("encrypt", "vault", "small.bin", "small.ks", cwd=tmp_path),
        "cluster status": _imported("cluster", "status", "nodes", cwd=tmp_path, exit_code=1),
    }
    assert (tmp_path / "small.ks").exists()  # the commands did run
    assert "keysplit.service.cluster_admin" in runs["cluster status"]
    assert {name: _heavy(mods, ("numpy", "pydantic")) for name, mods in runs.items()} == {
        name: [] for name in runs
    }
