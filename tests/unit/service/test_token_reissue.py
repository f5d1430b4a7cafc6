"""Red team: a token re-issued under the name of a revoked one can be revoked by name.

Names are unique among *active* tokens, so ``ci`` can be minted again once the first
``ci`` is revoked; ``token revoke DIR ci`` then found the first (revoked) entry and said
``error: token 'ci' is already revoked``, while the new ``ci`` went on being served: a
leaked credential that its operator could not revoke by the name it was issued under, with
a message that reads like success. Real ``keysplit`` processes: the CLI and a service."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from service_helpers import Server, cli, make_keyring, make_token, share_file, unseal

from keysplit import Client, PermissionDenied


def test_revoke_by_name_reaches_the_active_token_of_that_name(tmp_path: Path) -> None:
    sockdir = Path(tempfile.mkdtemp(prefix="kst", dir="/tmp"))  # short: sun_path
    try:
        _revoke_reissued(tmp_path, sockdir)
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


def _revoke_reissued(tmp_path: Path, sockdir: Path) -> None:
    vault = make_keyring(tmp_path, 2, ["a", "b", "c"])
    shares = [share_file(tmp_path / "vault-shares", n) for n in "ab"]
    first = make_token(tmp_path, vault, "ci", "encrypt", "", shares)
    r = cli("token", "revoke", vault, "ci", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    second = make_token(tmp_path, vault, "ci", "encrypt", "", shares)  # re-issued
    with Server(vault, sockdir / "s.sock") as srv:
        for n in "ab":
            assert unseal(tmp_path, vault, srv, n).returncode == 0
        with pytest.raises(PermissionDenied):
            Client(srv.url, token=first).encrypt(b"x", subject="u/1")
        Client(srv.url, token=second).encrypt(b"x", subject="u/1")
        r = cli("token", "revoke", vault, "ci", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        with pytest.raises(PermissionDenied):
            Client(srv.url, token=second).encrypt(b"x", subject="u/1")
    r = cli("token", "revoke", vault, "ci", cwd=tmp_path)  # both revoked now
    assert r.returncode == 1 and "already revoked" in r.stderr, r.stderr


def test_a_slow_fold_never_writes_over_a_newer_list(tmp_path: Path) -> None:
    """Red team: every worker folds a new revocation into the MACed list when it sees one.
    A worker that read the list (serial 1 + revocation r1) and wrote only after another
    worker had folded r1 (serial 2) and a later r2 (serial 3) put serial 2 back on disk:
    older than the serial the audit log recorded, so every process then refused *every*
    token (rollback detected) until a quorum wrote the list again. Two views of the list
    stand for the two workers' reads."""
    import keysplit
    from keysplit.service.tokens import OPERATIONS, TokenList, mac_key

    kr, shares = keysplit.Keyring.create(tmp_path / "vault", 2, ["a", "b", "c"])
    with kr.unseal([shares["a"], shares["b"]]) as u:
        key = mac_key(u.audit_key(), kr.keyring_id)
    tl = TokenList.read(kr.path, kr.keyring_id)
    for n in ("t1", "t2", "keep"):
        tl.create(key, name=n, allow=list(OPERATIONS), subject_prefix="")
    TokenList.read(kr.path, kr.keyring_id).revoke("t1")
    slow = TokenList.read(kr.path, kr.keyring_id)  # worker B reads, then stalls
    assert TokenList.read(kr.path, kr.keyring_id).fold_revocations(key)  # worker A
    TokenList.read(kr.path, kr.keyring_id).revoke("t2")
    fast = TokenList.read(kr.path, kr.keyring_id)
    assert fast.fold_revocations(key)
    newest = fast.serial
    slow.fold_revocations(key)  # B wakes up and writes
    disk = TokenList.read(kr.path, kr.keyring_id)
    disk.verify(key)
    assert disk.serial >= newest  # never older than what was already written (and audited)
    assert {t.name for t in disk.active().values()} == {"keep"}
    assert {t.name for t in slow.active().values()} == {"keep"}


def test_a_revoke_landing_while_a_token_is_created_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Red team: ``token create`` listed the revocations it would fold from the list it
    read before ``TokenList.add``, which reads the list again under its lock and folds
    whatever is pending then. A ``token revoke`` landing in between was folded (no longer
    pending, so nothing records it later) with no ``token-revoke`` entry: a revocation
    missing from the audit trail. The revoke here lands as the lock is taken."""
    from contextlib import contextmanager

    from keysplit import ceremony, load_share
    from keysplit.ceremony import Custody, DirectorySink, Quorum
    from keysplit.service import tokens

    made = ceremony.init(
        tmp_path / "kr", 2, [Custody("a"), Custody("b"), Custody("c")], DirectorySink(tmp_path)
    )
    kr = made.keyring
    shares = [load_share(Path(w.location).read_bytes()) for w in made.shares[:2]]
    old = ceremony.create_token(
        kr, Quorum(kr, shares), name="old", allow=["encrypt"], subject_prefix=""
    )
    real = tokens._locked
    landed: list[str] = []

    @contextmanager
    def revoke_as_the_lock_is_taken(directory: Path):  # type: ignore[no-untyped-def]
        if not landed:  # another operator's `keysplit token revoke`, no quorum, no lock
            landed.append(tokens.TokenList.read(kr.path, kr.keyring_id).revoke("old").id)
        with real(directory):
            yield

    monkeypatch.setattr(tokens, "_locked", revoke_as_the_lock_is_taken)
    ceremony.create_token(kr, Quorum(kr, shares), name="new", allow=["encrypt"], subject_prefix="")
    assert landed == [old.value.policy.id]
    revokes = [e.data for e in kr.audit_log().entries() if e.event == "token-revoke"]
    assert [(r["token"], r["token_id"]) for r in revokes] == [("old", old.value.policy.id)]
    disk = tokens.TokenList.read(kr.path, kr.keyring_id)
    assert old.value.policy.id in disk.revoked and not disk.pending_revocations
