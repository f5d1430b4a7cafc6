"""CLI plumbing: static registration without an import cycle, public library names only,
one error relabelling that keeps the exception class."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from keysplit_cli import _common, app
from keysplit_cli._specs import parse_name_file

from keysplit import AuditError, ChecksumError, IntegrityError, KeysplitError

CLI = Path(app.__file__).parent


@pytest.mark.parametrize("name", app.COMMAND_MODULES)
def test_each_command_module_imports_alone_and_never_imports_the_app(name: str) -> None:
    code = (
        "import sys, importlib\n"
        f"m = importlib.import_module('keysplit_cli.commands.{name}')\n"
        "assert 'keysplit_cli.app' not in sys.modules, 'imports the app'\n"
        "assert m.app.registered_commands or m.app.registered_groups\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr


def _keysplit_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) for every import of keysplit in ``path`` (name "" for ``import x``)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "keysplit":
                out += [(node.module, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name, "") for a in node.names if a.name.split(".")[0] == "keysplit"]
    return out


def test_cli_imports_only_public_library_names() -> None:
    seen = []
    for path in sorted(CLI.rglob("*.py")):
        for module, name in _keysplit_imports(path):
            seen.append(module)
            private = [p for p in module.split(".") if p.startswith("_")]
            assert not private, f"{path.name} imports the private module {module}"
            assert not name.startswith("_"), f"{path.name} imports {module}.{name}"
    assert "keysplit.ceremony" in seen


def test_relabel_keeps_class_hint_and_fields() -> None:
    exc = ChecksumError("checksum mismatch", index=3, hint="retype it")
    new = _common.relabel(exc, "alice.kss")
    assert type(new) is ChecksumError and new is not exc
    assert str(new) == "alice.kss: checksum mismatch"
    assert (new.index, new.hint) == (3, "retype it")
    assert str(exc) == "checksum mismatch"  # the original is untouched
    audit = _common.relabel(AuditError("entry 4: altered", seq=4), "audit.log")
    assert isinstance(audit, AuditError) and audit.seq == 4
    assert str(_common.relabel(IntegrityError(), "f.ks")) == "f.ks: authentication failed"
    assert isinstance(_common.relabel(KeysplitError("x"), "y"), KeysplitError)


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("alice", ("alice", None)),
        ("alice=keys/alice.pub", ("alice", "keys/alice.pub")),
        ("a=b=c", ("a", "b=c")),
        ("alice=", None),
        ("=file", None),
        ("", None),
    ],
)
def test_name_file_specs(spec: str, parsed: tuple[str, str | None] | None) -> None:
    assert parse_name_file(spec) == parsed


def test_info_messages_carry_no_rich_markup() -> None:
    """(cli4) ``info`` prints plain text (a name's ``[/]`` once raised MarkupError), so a
    markup tag in its message would be shown as typed: a styled lead is
    ``info(..., lead="warning:", style="yellow")``."""
    import re

    tag = re.compile(
        r"\[/?(?:bold|dim|italic|red|green|yellow|blue|cyan|magenta|link)\b[^\]]*\]|\[/\]"
    )
    cli = Path(_common.__file__).parent
    found = []
    for path in sorted(cli.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "info"):
                continue
            for part in ast.walk(node):
                text = part.value if isinstance(part, ast.Constant) else None
                if isinstance(text, str) and tag.search(text):
                    found.append(f"{path.name}:{node.lineno}: {text!r}")
    assert not found, found
