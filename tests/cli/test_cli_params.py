"""cli/_params.py: plain option values coerced without pydantic, exactly as Typer does.

Every parameter of the whole tree that :func:`keysplit_cli._params.plain_param` takes over
is given plain and odd values; each outcome (the value and its type, or the error and its
message) must be the one Typer's own runtime parameter (its pydantic adapter) gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer.main
from keysplit_cli import _params
from keysplit_cli import app as cli_app
from typer import _coercion
from typer._click import Context

_STR = ["", "x", "vault", "é", "a b", "--x", "12", b"raw"]
_INT = ["0", "12", "012", "+3", " 4 ", "1_000", "1.0", "-5", "x", "", "9" * 19, 7, True, 2.0]
_BOOL = [True, False, "true", "no", 1, 0]
_PATH = [
    "",
    "x",
    "file",
    "file/",
    "dir",
    "dir/",
    "./file",
    "a//b",
    "-",
    "missing",
    " file",
    "é",
    Path("file"),
    Path("missing"),
    12,
]
_SAMPLES: dict[type, list[Any]] = {str: _STR, int: _INT, bool: _BOOL, Path: _PATH}


def _outcome(coerce: Any, value: Any, param: Any, ctx: Context) -> tuple[str, str, str]:
    try:
        value = coerce(value, param=param, ctx=ctx)
    except Exception as exc:  # the error Typer shows: its class and message
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        return ("error", type(exc).__name__, message)
    return ("ok", repr(type(value)), repr(value))


def _params_of(group: Any) -> list[tuple[Any, Any]]:
    out = []
    for cmd in group.commands.values():
        if hasattr(cmd, "commands"):
            out.extend(_params_of(cmd))
        else:
            out.extend((cmd, p) for p in cmd.params)
    return out


def test_plain_params_coerce_as_typer_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("file").write_text("x")
    Path("dir").mkdir()
    coercion = _params._coercion()
    assert coercion is _coercion  # the Typer these pins install: the fast path is on
    cls = _params._make_plain_param(coercion)
    taken = compared = 0
    for cmd, param in _params_of(typer.main.get_command(cli_app.app)):
        plain = _params.plain_param(param.type_descriptor, coercion, cls)
        if plain is None:
            continue
        taken += 1
        ctx = Context(cmd, info_name=cmd.name)
        typer_own = _coercion.build_runtime_param(param.type_descriptor)
        values = _SAMPLES[plain.leaf]
        if plain.many:
            values = [[v] for v in values] + [values[:3], tuple(values[:2]), values[1]]
        for value in values:
            ours = _outcome(plain._coerce_value, value, param, ctx)
            theirs = _outcome(typer_own._coerce_value, value, param, ctx)
            assert ours == theirs, (cmd.name, param.name, value)
            compared += 1
    assert taken > 200 and compared > 2000  # the tree's str/Path/int/bool parameters


def test_what_is_not_plain_is_left_to_typer() -> None:
    coercion = _params._coercion()
    cls = _params._make_plain_param(coercion)
    kinds: dict[str, set[bool]] = {}
    for _, param in _params_of(typer.main.get_command(cli_app.app)):
        desc = param.type_descriptor
        info = desc.parameter_info
        plain = _params.plain_param(desc, coercion, cls) is not None
        bounded = info.min is not None or info.max is not None
        kinds.setdefault(f"{desc.annotation!r}{' bounded' if bounded else ''}", set()).add(plain)
    assert kinds["<class 'float'>"] == {False}
    assert kinds["<class 'int'> bounded"] == {False}
    assert all(v == {False} for k, v in kinds.items() if k.startswith("<enum"))
    for plain in ("str", "int", "bool", "pathlib.Path"):
        assert kinds[f"<class '{plain}'>"] == {True}
    assert kinds["list[pathlib.Path]"] == kinds["list[str]"] == {True}


def test_a_typer_without_the_internals_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import typer.core

    before = typer.core._TyperParameter.get_runtime_param
    monkeypatch.delattr(_coercion, "build_runtime_param")
    assert _params._coercion() is None
    assert _params.install() is False
    assert typer.core._TyperParameter.get_runtime_param is before
