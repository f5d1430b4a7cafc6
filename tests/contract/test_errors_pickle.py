"""Every keysplit error survives pickling: errors cross process boundaries (a
``multiprocessing`` pool in a backend, Dask workers, the job driver), and an error that
cannot be unpickled there turns into an unrelated ``TypeError`` (a pool's worker error,
re-raised in the parent, became ``VerifyIncomplete.__init__() missing ... 'missing'``)."""

from __future__ import annotations

import importlib
import io
import pickle
import pkgutil

import pytest

import keysplit
from keysplit import errors
from keysplit.errors import KeysplitError


def _all_error_classes() -> list[type[KeysplitError]]:
    for mod in pkgutil.walk_packages(keysplit.__path__, "keysplit."):
        importlib.import_module(mod.name)
    found: list[type[KeysplitError]] = []
    todo: list[type[KeysplitError]] = [KeysplitError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted(set(found), key=lambda c: (c.__module__, c.__qualname__))


ERROR_CLASSES = _all_error_classes()


def _round_trip(exc: KeysplitError) -> KeysplitError:
    """``pickle`` as a process without Dask does it: importing Dask (keysplit.jobs) makes
    tblib register a reducer for every exception class in ``copyreg``, which hid this bug
    in any process that had imported it; a private, empty dispatch table ignores those."""
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf)
    pickler.dispatch_table = {}
    pickler.dump(exc)
    back = pickle.loads(buf.getvalue())
    assert isinstance(back, KeysplitError)
    return back


def test_the_walk_finds_the_errors_defined_outside_keysplit_errors() -> None:
    names = {c.__qualname__ for c in ERROR_CLASSES}
    assert {
        "VerifyIncomplete",
        "KekInUseError",
        "StaleKekError",
        "ServiceError",
        "JobError",
    } <= names
    assert len(ERROR_CLASSES) > len(errors.__all__)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_error_class_round_trips_through_pickle(cls: type[KeysplitError]) -> None:
    exc = cls.__new__(cls, "what went wrong")
    KeysplitError.__init__(exc, "what went wrong", hint="what to do")
    exc.detail = ("custodian-b", 3)  # type: ignore[attr-defined]  # any subclass attribute
    back = _round_trip(exc)
    assert type(back) is cls
    assert str(back) == "what went wrong"
    assert back.hint == "what to do"
    assert back.detail == ("custodian-b", 3)  # type: ignore[attr-defined]


def test_errors_built_by_their_own_constructors_round_trip() -> None:
    from keysplit.proof import VerificationPending, VerifyIncomplete
    from keysplit.store.base import KekInUseError, StaleKekError

    cases: list[KeysplitError] = [
        VerifyIncomplete("2 custodians missing", missing=["ana", "ben"], hint="wait"),
        VerificationPending("proofs pending", missing=["cy"]),
        StaleKekError("stale", state=None),  # type: ignore[arg-type]
        KekInUseError("in use", holders=[], hint="retry"),
        errors.ShareError("bad share", index=2),
        errors.AuditError("broken chain", seq=7),
        errors.ClusterError("bad proof", node=3),
        errors.IntegrityError(),
    ]
    for exc in cases:
        back = _round_trip(exc)
        assert type(back) is type(exc)
        assert str(back) == str(exc)
        assert back.__dict__ == exc.__dict__


def test_the_rebuild_refuses_a_class_that_is_not_a_keysplit_error() -> None:
    with pytest.raises(TypeError):
        errors._rebuild(ValueError, ("x",))  # type: ignore[arg-type]
