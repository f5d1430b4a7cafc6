"""Contexts and subjects made of ``str`` subclasses take the engine's full path (stop 41:
every key and value must be a plain ``str`` for a memo hit). Confirmed here against the
real keyring's engine (its key cache's ``cached_view``: the first single-record path),
each record checked with ``keysplit.record`` and the subject's own exported key, not with
the engine that sealed it: a subclass whose ``__eq__``/``__hash__`` call it equal to what
the memos hold cannot steer a record to another subject's key or another context."""

from __future__ import annotations

from pathlib import Path

import pytest

from keysplit import IntegrityError, Keyring, KeysplitError, record
from keysplit.keyring.unsealed import UnsealedKeyring
from keysplit.record import DataKey

MEMO = {"k": "acme"}  # the context every memo holds when the subclass comes


class _Liar(str):
    """Text equal to every ``str`` (its ``__eq__`` says so), hashed as ``looks_like``."""

    looks_like: str

    def __new__(cls, text: str, looks_like: str) -> _Liar:
        obj = super().__new__(cls, text)
        obj.looks_like = looks_like
        return obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str)

    def __ne__(self, other: object) -> bool:
        return not isinstance(other, str)

    def __hash__(self) -> int:
        return hash(self.looks_like)


def _given(where: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """(subject, context as given, its text): a liar looking like alice or the memo's."""
    subject = _Liar("bob", "alice") if where in ("subject", "all") else "bob"
    key = _Liar("q", "k") if where in ("context key", "context", "all") else "q"
    value = _Liar("evil", "acme") if where in ("context value", "context", "all") else "evil"
    return subject, {key: value}, {"q": "evil"}


def _warm(u: UnsealedKeyring) -> dict[str, bytes]:
    """Every memo (subject, key, batch context) filled with alice's and bob's MEMO."""
    out = {}
    for s in ("alice", "bob"):
        for _ in range(2):
            out[s] = u.encrypt(s.encode(), subject=s, context=MEMO)
            assert u.decrypt(out[s], subject=s, context=MEMO) == s.encode()
    u.encrypt_many(["alice", "bob"], [b"a", b"b"], MEMO)
    return out


@pytest.mark.parametrize("op", ["encrypt", "encrypt_many"])
@pytest.mark.parametrize("where", ["subject", "context key", "context value", "context", "all"])
def test_a_str_subclass_cannot_steer_a_record_to_another_key_or_context(
    tmp_path: Path, where: str, op: str
) -> None:
    kr, shares = Keyring.create(tmp_path / "kr", 2, ["a", "b", "c"])
    with kr.unseal([shares["a"], shares["b"]]) as u:
        memo_records = _warm(u)
        subject, given, text = _given(where)
        if op == "encrypt":
            rec = u.encrypt(b"p", subject=subject, context=given)
        else:
            (rec,) = u.encrypt_many([subject], [b"p"], given)
        bob, alice = (DataKey(raw) for raw in u.records.export(["bob", "alice"]))
        # sealed under bob's own key, bound to the text it was given ...
        assert record.decrypt(bob, rec, subject="bob", context=text) == b"p"
        # ... not to the memo's context, nor under alice's key or for alice
        with pytest.raises(IntegrityError):
            record.decrypt(bob, rec, subject="bob", context=MEMO)
        for ctx in (text, MEMO):
            with pytest.raises(KeysplitError):
                record.decrypt(alice, rec, subject="alice", context=ctx)
            with pytest.raises(IntegrityError):
                u.decrypt(rec, subject="alice", context=ctx)
        # the engine opens it as given, on every path, and nothing else with it
        assert u.decrypt(rec, subject=subject, context=given) == b"p"
        assert u.decrypt_many([subject], [rec], given) == [b"p"]
        for s in ("alice", "bob"):
            with pytest.raises(IntegrityError):
                u.decrypt(memo_records[s], subject=subject, context=given)
            with pytest.raises(IntegrityError):
                u.decrypt_many([subject], [memo_records[s]], given)
        # and the memos still serve the plain text they hold
        for s in ("alice", "bob"):
            assert u.decrypt(memo_records[s], subject=s, context=MEMO) == s.encode()
