"""Issue 18 as structure: one key seam, one record engine, one way from shares to keys.

The issue removed the service's and the jobs' own copies of the key logic
(``service/_keys.py``, ``jobs/_access.py``, ``jobs.DataKeySource``, a second
``LocalDataKeys``) and put every unseal rule in :class:`keysplit.keyring.Unsealer`. These
checks keep it so: a copy brought back by a merge, or a new place that builds an unsealed
keyring without the unsealer's rules, fails here.
"""

from __future__ import annotations

import ast
import importlib.util

from paths import REPO

import keysplit
from keysplit.keyring.records import Records
from keysplit.service.remote import RemoteDataKeys

LIB = REPO / "keysplit"

GONE = ["keysplit.service._keys", "keysplit.jobs._access"]

# Where an UnsealedKeyring may be built: from an Unsealer's outcome, and in a key-service
# worker from the master key its leader recovered through one (service/fleet.py:reopen).
BUILDS_UNSEALED = {"keysplit/keyring/sealed.py", "keysplit/service/fleet.py"}


def _trees() -> list[tuple[str, ast.AST]]:
    return [
        (str(p.relative_to(REPO)), ast.parse(p.read_text(), str(p)))
        for p in sorted(LIB.rglob("*.py"))
    ]


def test_the_removed_copies_stay_removed() -> None:
    for name in GONE:
        assert importlib.util.find_spec(name) is None, name
    import keysplit.jobs

    assert not hasattr(keysplit.jobs, "DataKeySource")
    assert not hasattr(keysplit.jobs, "LocalDataKeys")


def test_one_datakeys_implementation_and_one_record_engine() -> None:
    found: dict[str, list[str]] = {"LocalDataKeys": [], "Records": [], "DataKeys": []}
    for where, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name in found:
                found[node.name].append(where)
    assert found == {
        "LocalDataKeys": ["keysplit/keyring/datakeys.py"],
        "Records": ["keysplit/keyring/records.py"],
        "DataKeys": ["keysplit/keyring/datakeys.py"],
    }


def test_unsealed_keyrings_are_built_only_behind_the_unsealer() -> None:
    builders = set()
    for where, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)
                if name == "UnsealedKeyring":
                    builders.add(where)
    assert builders == BUILDS_UNSEALED


def test_the_caching_client_uses_the_one_engine() -> None:
    c = keysplit.Client("unix:/unused", cache_max_age=60)
    try:
        assert isinstance(c._records, Records) and isinstance(c._remote, RemoteDataKeys)
        assert c._records._dk is c._remote  # the engine over the remote seam, not a copy
    finally:
        c.close()
