"""The import graph of keysplit/ and cli/, read from the source (no import is run).

* **No new circles inside** ``keysplit/``. ``CIRCLES`` lists the strongly connected
  components of today's module graph (every import counts, module-level or inside a
  function: a lazy import that dodges a cycle is still the same tangle; only
  ``if TYPE_CHECKING:`` blocks are left out). The list may only shrink: a component that
  grows, or a new one, fails; a listed one that is gone fails too, so the list is trimmed
  as circles are broken.
* **Private means private to a package**: a module imports ``a.b._c`` only from inside
  ``a.b`` (the package the ``_`` module belongs to, or one of its subpackages).
* **Command modules are leaves**: no ``cli/commands/`` module imports another one or the
  app (what they share lives in ``cli/_*.py``).

``python tests/contract/test_import_graph.py`` prints today's circles (to update ``CIRCLES``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"keysplit": ROOT / "keysplit", "keysplit_cli": ROOT / "cli"}

# Today's import circles inside keysplit/ (strongly connected components, sorted): each
# may only lose members or disappear. None since issue 18 (feat/rooms): the keyring runs
# sealed -> unseal -> unsealed -> admin, and store URLs are parsed in store/url.py, which
# imports no store.
CIRCLES: list[set[str]] = []

# Today's imports of another package's private module: may only shrink (the
# keysplit._parallel shim was deleted in issue 18; jobs/_access.py and service/_keys.py are
# gone).
PRIVATE_ALLOWED: set[str] = set()


def _modules() -> dict[str, Path]:
    """Every module of the two packages by dotted name (``pkg.__init__`` as ``pkg``)."""
    out = {}
    for top, base in PACKAGES.items():
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([top, *parts])] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for other in node.orelse:
                yield from _import_nodes_of(other)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        else:
            yield from _import_nodes(node)


def _import_nodes_of(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    else:
        yield from _import_nodes(node)


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that module ``name`` imports (``from p import m``: the
    submodule ``p.m`` if it is one, else ``p``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
            continue
        if node.level:
            base = package.split(".")
            base = base[: len(base) - node.level + 1]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        for alias in node.names:
            sub = f"{mod}.{alias.name}"
            if sub in known:
                out.add(sub)
            elif mod in known:
                out.add(mod)
    out.discard(name)
    return out


def graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def circles(g: dict[str, set[str]], prefix: str = "keysplit") -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan), among the
    modules named ``prefix`` or under it."""
    nodes = sorted(n for n in g if n == prefix or n.startswith(prefix + "."))
    inside = set(nodes)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g[v] & inside):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for n in nodes:
        if n not in index:
            visit(n)
    return sorted(out, key=lambda c: sorted(c))


def test_no_new_import_circles_in_the_library() -> None:
    found = circles(graph())
    grown = [c for c in found if not any(c <= allowed for allowed in CIRCLES)]
    assert not grown, f"new or larger import circles: {[sorted(c) for c in grown]}"
    gone = [c for c in CIRCLES if not any(f <= c and len(f & c) > 1 for f in found)]
    assert not gone, f"broken circles: remove from CIRCLES {[sorted(c) for c in gone]}"


def _owner(private: str) -> str:
    """The package a private module belongs to: ``a.b._c`` -> ``a.b``; for a name with a
    private package (``a._p.m``), the package above the first private part."""
    parts = private.split(".")
    first = next(i for i, p in enumerate(parts) if p.startswith("_"))
    return ".".join(parts[:first])


def test_no_module_imports_another_packages_private_module() -> None:
    g = graph()
    mods = _modules()
    bad = []
    for name, deps in g.items():
        own = name if mods[name].name == "__init__.py" else name.rpartition(".")[0]
        for dep in deps:
            if not any(p.startswith("_") for p in dep.split(".")):
                continue
            owner = _owner(dep)
            if not (own == owner or own.startswith(owner + ".")):
                bad.append(f"{name} imports {dep}")
    assert set(bad) - PRIVATE_ALLOWED == set(), "imports of another package's private module"
    assert PRIVATE_ALLOWED - set(bad) == set(), "fixed: remove these from PRIVATE_ALLOWED"


def test_command_modules_import_no_other_command_module_nor_the_app() -> None:
    g = graph()
    commands = {n for n in g if n.startswith("keysplit_cli.commands.")}
    assert len(commands) >= 10
    bad = [
        f"{n} imports {d}"
        for n in sorted(commands)
        for d in sorted(g[n])
        if d in commands or d == "keysplit_cli.app"
    ]
    assert not bad, bad


def test_the_graph_sees_imports_of_every_kind() -> None:
    """The parser itself: relative, from-package submodule, lazy; TYPE_CHECKING left out."""
    g = graph()
    assert "keysplit_cli._common" in g["keysplit_cli.commands.init"]  # from .._common import
    assert "keysplit_cli.commands.init" in g["keysplit_cli.app"]  # from .commands import init
    assert "keysplit.ceremony" in g["keysplit_cli.commands.init"]  # absolute


if __name__ == "__main__":
    for c in circles(graph()):
        print(sorted(c))
