"""Typer's coercion of plain option values, without importing pydantic for them.

Typer (0.29) coerces every parameter value that is not a flag's bool through a pydantic
``TypeAdapter`` built on first use, so a command given any value (``status DIR``) imported
pydantic and Typer's adapters: 0.2 s of CPU on the loaded 2-core machine, a quarter of a
``keysplit status`` start. Most of keysplit's parameters are ``str``, ``Path`` and ``int``
(and lists of them), and for their plain values the adapter's answer is simple:

* ``str``: the string itself (Typer's ``_parse_cli_str``, then pydantic's str check);
* ``Path`` (no ``path_type``, no ``allow_dash``): ``Path(value)`` (pydantic's lax path),
  then Typer's own :func:`typer._param_types.coerce_cli_path` with its checks and
  messages, which names the value it was given: taken only when ``str(Path(value))`` is
  ``value``, so the messages are the same (``vault/`` is Typer's);
* ``int`` (no min or max): ``int(value)`` of a plain decimal ``0|[1-9][0-9]{0,17}``;
* ``bool``: a bool (and, as for every type, ``None``: the unset ``--install-completion``
  of every command, which alone built an adapter);
* ``list[X]`` of those: each item.

:class:`PlainParam` answers those and hands every other value (and every other type: float,
enums, bounded ints) to the runtime parameter Typer builds, so what is not plain costs what
it did. :func:`install` puts it in front of Typer's ``get_runtime_param``; with a Typer
whose internals differ it does nothing. tests/cli/test_cli_params.py checks that every
parameter of the tree coerces plain and odd values exactly as Typer's adapter does, and
tests/cli/test_cli_startup.py that a command with values imports no pydantic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

_DECIMAL = re.compile(r"(?:0|[1-9][0-9]{0,17})\Z")
_LEAVES = (str, Path, int, bool)


def plain_leaf(annotation: Any, info: Any) -> type | None:
    """``str``, ``Path``, ``int`` or ``bool`` when Typer's adapter for ``annotation`` with ``info``
    is the plain one :class:`PlainParam` reproduces, else ``None``."""
    if info.parser is not None or annotation not in _LEAVES:
        return None
    if annotation is int and (info.min is not None or info.max is not None):
        return None
    if annotation is Path and (info.path_type not in (None, Path) or info.allow_dash):
        return None
    return annotation  # type: ignore[no-any-return]


def _coercion() -> Any:
    """Typer's coercion module, or ``None`` if it lacks what :class:`PlainParam` uses."""
    try:
        from typer import _coercion, _param_types
    except ImportError:
        return None
    needed = (
        hasattr(_coercion, "RuntimeParam")
        and hasattr(_coercion, "build_runtime_param")
        and hasattr(_param_types, "coerce_cli_path")
    )
    return _coercion if needed else None


_MISS = object()


def _plain_value(leaf: type, value: Any, info: Any, param: Any, ctx: Any) -> Any:
    """Typer's coerced ``value`` for ``leaf``, or :data:`_MISS` when it is not plain."""
    if leaf is str:
        return value if type(value) is str else _MISS
    if leaf is bool:
        return value if type(value) is bool else _MISS
    if leaf is int:
        if type(value) is int:
            return value
        if type(value) is str and _DECIMAL.match(value):
            return int(value)
        return _MISS
    if isinstance(value, str):
        path = Path(value)
        if str(path) != value:
            return _MISS
        value = path
    if not isinstance(value, Path):
        return _MISS
    from typer._param_types import coerce_cli_path

    return coerce_cli_path(value, info, path_type=Path, param=param, ctx=ctx)


def _make_plain_param(coercion: Any) -> Any:
    @dataclass(frozen=True)
    class PlainParam(coercion.RuntimeParam):  # type: ignore[misc]
        """A parameter of plain type: plain values here, others through Typer's adapter."""

        leaf: type
        many: bool

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            info = self.parameter_info
            if self.many:
                items = value if isinstance(value, (list, tuple)) else [value]
                out = [_plain_value(self.leaf, v, info, param, ctx) for v in items]
                if _MISS not in out:
                    return out
            else:
                one = _plain_value(self.leaf, value, info, param, ctx)
                if one is not _MISS:
                    return one
            typer_param = coercion.build_runtime_param(param.type_descriptor)
            return typer_param._coerce_value(value, param=param, ctx=ctx)

    return PlainParam


def plain_param(descriptor: Any, coercion: Any, cls: Any) -> Any:
    """A :class:`PlainParam` for ``descriptor`` (Typer's ``TypeDescriptor``), or ``None``."""
    if descriptor.file_annotation is not None:
        return None
    annotation, info = descriptor.annotation, descriptor.parameter_info
    many = get_origin(annotation) is list
    if many:
        (annotation,) = get_args(annotation) or (None,)
    leaf = plain_leaf(annotation, info)
    if leaf is None:
        return None
    return cls(parameter_info=info, annotation=descriptor.annotation, leaf=leaf, many=many)


def install() -> bool:
    """Answer plain values of Typer parameters here (see the module docstring); False,
    changing nothing, when Typer's internals are not the ones this was written for."""
    import typer.core

    coercion = _coercion()
    typer_param = getattr(typer.core, "_TyperParameter", None)
    if coercion is None or typer_param is None or not hasattr(typer_param, "get_runtime_param"):
        return False
    cls = _make_plain_param(coercion)

    def get_runtime_param(self: Any) -> Any:
        if self._runtime_param is None:
            self._runtime_param = plain_param(
                self.type_descriptor, coercion, cls
            ) or coercion.build_runtime_param(self.type_descriptor)
        return self._runtime_param

    typer_param.get_runtime_param = get_runtime_param
    return True
