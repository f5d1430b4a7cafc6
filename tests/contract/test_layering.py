"""Layering: the CLI uses only the public library; hazmat is imported only by the library.

* ``cli/`` imports names from ``keysplit`` that are in ``keysplit.__all__`` (or public
  submodules), and names from public modules (no ``_`` path component, not hazmat) that
  are in that module's ``__all__``;
* nothing outside ``keysplit/`` imports :mod:`keysplit.hazmat` or the hazmat-grade
  :mod:`keysplit.interop.pycryptodome` (shares without checksums), except tests and
  benchmarks;
* the old import paths deleted in issue 18 (docs/MIGRATION.md lists them) stay deleted, and
  the names that left the top level are gone from it (asking for one names its home).

``ALLOWED`` lists today's CLI violations explicitly; it may only shrink. An entry that no
longer occurs fails the test too, so the list is trimmed as the CLI is cleaned up.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import types
from pathlib import Path

import pytest
from paths import REPO

import keysplit

ROOT = REPO
EXEMPT = {"keysplit", "tests", "benchmarks", ".venv", "build", ".git"}
HAZMAT_PATHS = {
    "keysplit.hazmat",
    "keysplit.interop.pycryptodome",
}

# (file relative to the repo, imported name): known violations, to be removed.
ALLOWED: set[tuple[str, str]] = {
    # pycryptodome/ssss shares have no checksum or set id: converting them is inherently
    # unverified, so the CLI uses the hazmat form knowingly (docs/MIGRATION.md says why).
    ("cli/commands/convert.py", "keysplit.interop.pycryptodome"),
    ("cli/_convert_io.py", "keysplit.interop.pycryptodome"),
}


def _py_files(top: Path) -> list[Path]:
    return sorted(p for p in top.rglob("*.py") if not (set(p.relative_to(ROOT).parts) & EXEMPT))


def _imports(path: Path) -> list[tuple[str, str | None]]:
    """``(module, name)`` pairs of every keysplit import in ``path`` (name None: ``import m``)."""
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names if a.name.split(".")[0] == "keysplit"]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and node.module.split(".")[0] == "keysplit"
        ):
            out += [(node.module, a.name) for a in node.names]
    return out


def _is_hazmat(module: str) -> bool:
    return any(module == h or module.startswith(h + ".") for h in HAZMAT_PATHS)


def _private_path(module: str) -> bool:
    return any(part.startswith("_") for part in module.split("."))


def _public_module(module: str) -> bool:
    return not _private_path(module) and not _is_hazmat(module)


def _violations(path: Path) -> set[str]:
    bad: set[str] = set()
    for module, name in _imports(path):
        if name is None:
            if not _public_module(module):
                bad.add(module)
            continue
        if module == "keysplit":
            obj = getattr(keysplit, name, None)
            if obj is None and importlib.util.find_spec(f"keysplit.{name}") is not None:
                obj = importlib.import_module(f"keysplit.{name}")
            if isinstance(obj, types.ModuleType):
                full = f"keysplit.{name}"
                # an alias module (the old hazmat paths) reports the module it really is
                if not (_public_module(full) and _public_module(obj.__name__)):
                    bad.add(full)
            elif name not in keysplit.__all__:
                bad.add(f"keysplit.{name}")
            continue
        if not _public_module(module):
            bad.add(module)
            continue
        if _is_hazmat(f"{module}.{name}"):  # from keysplit.interop import pycryptodome
            bad.add(f"{module}.{name}")
            continue
        mod = importlib.import_module(module)
        exported = getattr(mod, "__all__", None)
        submodule = isinstance(getattr(mod, name, None), types.ModuleType)
        unexported = exported is not None and name not in exported and not submodule
        if name.startswith("_") or unexported:
            bad.add(f"{module}.{name}")
    return bad


def test_cli_imports_only_public_keysplit_names() -> None:
    found = {(str(p.relative_to(ROOT)), v) for p in _py_files(ROOT / "cli") for v in _violations(p)}
    assert found - ALLOWED == set(), "the CLI imports non-public keysplit names"
    assert ALLOWED - found == set(), "fixed: remove these from ALLOWED in this file"


def test_nothing_outside_the_library_imports_hazmat() -> None:
    found = {
        (str(p.relative_to(ROOT)), m if n is None else f"{m}.{n}")
        for p in _py_files(ROOT)
        for m, n in _imports(p)
        if _is_hazmat(m) or (n is not None and _is_hazmat(f"{m}.{n}"))
    }
    assert found <= ALLOWED, f"hazmat imported outside keysplit/: {sorted(found - ALLOWED)}"


def test_public_surface_is_small_and_hazmat_free() -> None:
    recipes = [n for n in keysplit.__all__ if not n.endswith("Error") and n != "__version__"]
    assert len(recipes) <= 24, recipes
    for name in keysplit.__all__:
        obj = getattr(keysplit, name)
        assert not getattr(obj, "__module__", "").startswith("keysplit.hazmat"), name
    assert "Recipient" in keysplit.__all__ and keysplit.Recipient.__module__.startswith(
        "keysplit.custody"
    )


# Names that left the top level when the surface shrank (docs/MIGRATION.md, "Names no
# longer at the top level"), with their one home. keysplit is unreleased: no alias is
# kept; asking ``keysplit`` for one names the home instead.
MOVED_NAMES = {
    "AuditEntry": "audit",
    "AuditReport": "audit",
    "SealedShareInfo": "custody",
    "check_custodian_name": "custody",
    "is_sealed": "custody",
    "sealed_share_info": "custody",
    "KeyringStatus": "keyring",
    "RewrapResult": "keyring",
    "UnsealProgress": "keyring",
    "KeyStore": "store",
    "SQLiteKeyStore": "store",
    "WrappedKey": "store",
    "StreamHeader": "stream",
    "StreamInfo": "stream",
    "read_header": "stream",
    "recipient_id": "stream",
}


def test_former_top_level_names_are_gone_and_name_their_home() -> None:
    from keysplit.audit import AuditEntry
    from keysplit.custody import SealedShareInfo, is_sealed
    from keysplit.stream import StreamHeader, read_header

    assert AuditEntry.__module__.startswith("keysplit.audit")
    assert SealedShareInfo.__module__.startswith("keysplit.custody")
    assert StreamHeader.__module__ == read_header.__module__ == "keysplit.stream"
    assert is_sealed.__module__.startswith("keysplit.custody")
    migration = (ROOT / "docs" / "MIGRATION.md").read_text()
    for name, home in MOVED_NAMES.items():
        assert getattr(importlib.import_module(f"keysplit.{home}"), name) is not None, name
        assert name not in keysplit.__all__ and name not in vars(keysplit), name
        with pytest.raises(AttributeError, match=rf"lives in keysplit\.{home} \(") as err:
            getattr(keysplit, name)
        assert err.value.name == name and not hasattr(keysplit, name)
        with pytest.raises(ImportError):
            exec(f"from keysplit import {name}", {})
        assert f"| `keysplit.{name}` | `keysplit.{home}.{name}` |" in migration, name
    with pytest.raises(AttributeError, match=r"no attribute 'no_such_name'\Z"):
        keysplit.no_such_name  # noqa: B018  (an unknown name gets the plain message)


# keysplit is unreleased (0.1.0): the compatibility modules were deleted, not kept
# (docs/MIGRATION.md, "Removed import paths"). Each old path must fail to import.
REMOVED_PATHS = [
    "keysplit.custodian",
    "keysplit._keyring_file",
    "keysplit.gf256",
    "keysplit.shamir",
    "keysplit.keywrap",
    "keysplit._parallel",
    "keysplit.vault",
    "keysplit.convert",
    "keysplit.slip39",
    "keysplit.hazmat.pycryptodome",
]


def test_removed_import_paths_stay_removed() -> None:
    for path in REMOVED_PATHS:
        assert importlib.util.find_spec(path) is None, path
    assert not (ROOT / "keysplit" / "interop.py").exists()  # the package took its name
    for name in REMOVED_PATHS:
        assert name.rpartition(".")[2] not in vars(keysplit), name
    migration = (ROOT / "docs" / "MIGRATION.md").read_text()
    assert all(f"`{path}`" in migration for path in [*REMOVED_PATHS, "keysplit.interop"])


def test_interop_holds_the_foreign_formats() -> None:
    from keysplit.interop import convert, pycryptodome, slip39, vault
    from keysplit.interop.slip39.wordlist import WORDS

    assert {m.__name__ for m in (convert, pycryptodome, slip39, vault)} == {
        f"keysplit.interop.{n}" for n in ("convert", "pycryptodome", "slip39", "vault")
    }
    assert len(WORDS) == 1024  # the package data came along
    assert "Hazmat" in (pycryptodome.__doc__ or "")


def test_every_library_package_is_declared_for_installation() -> None:
    """A subpackage missing from pyproject's list is absent from a non-editable install."""
    import tomllib

    declared = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "keysplit").rglob("__init__.py")
    }
    assert found <= declared
