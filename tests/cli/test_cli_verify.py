"""``--verify`` (issue 12): a new share generation is relied on only once every custodian
has proven possession (``keysplit share prove`` codes, recorded with ``verify prove``).
The old spellings (``rekey --prove/--verify-status/--complete``) are hidden aliases of the
``verify`` group; the first test drives them, the others the group.

Shares are plain files here (fast); the proof itself is tested in test_proof.py.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from ceremony_helpers import error_lines, fast_kdf_fixture, run  # noqa: F401 (fixtures)

from keysplit import Keyring, Share, UnsealedKeyring, ceremony
from keysplit.errors import KeyringError
from keysplit.proof import VerificationPending
from keysplit.service.core import KeyService, Request, Response
from keysplit.service.unseal import RemoteUnseal

NAMES = ("alice", "bob", "carol")


def _init(tmp_path: Path, *extra: str) -> tuple[Path, Path]:
    vault, shares = tmp_path / "vault", tmp_path / "shares"
    cs = [a for n in NAMES for a in ("-c", n)]
    r = run(["init", vault, "-k", "2", *cs, "--plain-shares", "--shares-dir", shares, *extra])
    assert r.exit_code == 0, r.output
    return vault, shares


def _q(shares: Path, gen: int, *names: str) -> list[str]:
    return [a for n in names for a in ("--share", str(shares / f"{n}.g{gen}.kss"))]


def _share(shares: Path, gen: int, name: str) -> Share:
    return Share.parse((shares / f"{name}.g{gen}.kss").read_text().splitlines()[2])


def _prove(
    vault: Path, shares: Path, gen: int, name: str, tmp_path: Path, *, alias: bool = False
) -> None:
    r = run(["share", "prove", shares / f"{name}.g{gen}.kss"])
    assert r.exit_code == 0, r.output
    code = tmp_path / f"{name}.code"
    code.write_text(r.stdout.strip())
    how = ["rekey", vault, "--prove", name] if alias else ["verify", "prove", vault, name]
    r = run([*how, "--code-file", code])
    assert r.exit_code == 0, r.output


def _status(vault: Path, *, alias: bool = False) -> dict[str, object]:
    how = ["rekey", vault, "--verify-status"] if alias else ["verify", "status", vault]
    r = run([*how, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def _events(vault: Path) -> list[str]:
    return [e.event for e in Keyring.open(vault).audit_log().entries()]


def _rekey_verify(tmp_path: Path) -> tuple[Path, Path]:
    vault, shares = _init(tmp_path)
    cs = [a for n in NAMES for a in ("-c", n)]
    r = run(["rekey", vault, *cs, "--plain-shares", "--shares-dir", shares, "--verify",
             *_q(shares, 1, "alice", "bob")])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "pending verification" in r.stderr
    return vault, shares


def test_rekey_verify_refuses_to_switch_until_every_custodian_has_proven(tmp_path: Path) -> None:
    vault, shares = _rekey_verify(tmp_path)
    assert _events(vault)[-2:] == ["rekey-pending", "verify-start"]
    # the new shares cannot switch yet (CLI and library alike); the old ones still work
    r = run(["unseal", vault, *_q(shares, 2, "alice", "bob")])
    assert r.exit_code == 1 and "awaits proofs" in error_lines(r)[0]
    with pytest.raises(KeyringError, match="proofs of possession"):
        Keyring.open(vault).unseal([_share(shares, 2, "alice"), _share(shares, 2, "carol")])
    assert run(["unseal", vault, *_q(shares, 1, "bob", "carol")]).exit_code == 0
    _prove(vault, shares, 2, "alice", tmp_path, alias=True)
    _prove(vault, shares, 2, "bob", tmp_path)
    st = _status(vault, alias=True)
    assert st["proven"] == ["alice", "bob"] and st["missing"] == ["carol"]
    assert st["kind"] == "rekey" and not st["completed"]
    r = run(["unseal", vault, *_q(shares, 2, "alice", "bob")])
    assert r.exit_code == 1 and "carol" in error_lines(r)[0]
    _prove(vault, shares, 2, "carol", tmp_path)
    assert _status(vault)["completed"] is True
    assert Keyring.open(vault).meta.generation == 1  # proofs alone switch nothing
    r = run(["unseal", vault, *_q(shares, 2, "bob", "carol")])
    assert r.exit_code == 0, r.output
    # a planned switch, not a recovery (issue 22 item 5): no "interrupted" note, own event
    assert "interrupted" not in r.stderr and "verified rekey took effect" in r.stderr
    kr = Keyring.open(vault)
    assert kr.meta.generation == 2 and kr.pending is None
    assert run(["unseal", vault, *_q(shares, 1, "alice", "bob")]).exit_code == 1  # old: dead
    events = kr.audit_log().entries()
    done = next(e for e in events if e.event == "verify-complete")
    assert done.data["proven"] == ["alice", "bob", "carol"] and done.data["unproven"] == []
    assert [e.event for e in events[-3:]] == ["verify-complete", "rekey-switch", "unseal-check"]
    assert "recovered" not in events[-2].data and events[-2].data["generation"] == 2
    assert _status(vault) == {"pending": False}
    assert kr.audit_log().verify().entries == len(events)


def test_wrong_code_refused_complete_must_name_exactly_the_missing(tmp_path: Path) -> None:
    vault, shares = _rekey_verify(tmp_path)
    wrong = tmp_path / "wrong.code"
    r = run(["share", "prove", shares / "bob.g2.kss"])
    wrong.write_text(r.stdout.strip())  # bob's code is not alice's
    r = run(["verify", "prove", vault, "alice", "--code-file", wrong])
    assert r.exit_code == 1 and "does not match" in error_lines(r)[0]
    assert "the new share of custodian 'alice'" in error_lines(r)[0]  # not "'alice''s"
    r = run(["verify", "prove", vault, "alice", "--code-file", wrong, "--json"])
    old_code = tmp_path / "old.code"  # a code of the old generation does not prove the new
    old_code.write_text(run(["share", "prove", shares / "alice.g1.kss"]).stdout.strip())
    assert run(["verify", "prove", vault, "alice", "--code-file", old_code]).exit_code == 1
    assert _status(vault)["failures"] == {"alice": 3}
    r = run(["verify", "prove", vault, "dave", "--code-file", wrong])
    assert r.exit_code == 1
    _prove(vault, shares, 2, "alice", tmp_path)
    new = _q(shares, 2, "alice", "bob")
    r = run(["verify", "complete", vault, *new])
    assert r.exit_code == 1 and "bob, carol" in error_lines(r)[0]
    r = run(["verify", "complete", vault, "--missing", "bob", *new])
    assert r.exit_code == 1 and "carol" in error_lines(r)[0]
    r = run(["verify", "complete", vault, "--missing", "bob", "--missing", "carol",
             "--missing", "alice", *new])  # fmt: skip
    assert r.exit_code == 1 and "alice" in error_lines(r)[0]  # alice has proven
    old = _q(shares, 1, "alice", "bob")
    r = run(["verify", "complete", vault, "--missing", "bob", "--missing", "carol", *old])
    assert r.exit_code == 1 and "NEW shares" in error_lines(r)[0]
    assert Keyring.open(vault).meta.generation == 1
    r = run(["verify", "complete", vault, "--missing", "bob", "--missing", "carol", *new])
    assert r.exit_code == 0, r.output
    # the summary tells the quorum from the proofs: bob unlocked the switch but proved nothing
    # (it said "verification complete (alice, bob)", as if both had proven)
    said = " ".join(r.stderr.split())
    assert "proven: alice; unproven: bob, carol; quorum: alice, bob" in said, said
    kr = Keyring.open(vault)
    assert kr.meta.generation == 2
    done = next(e for e in kr.audit_log().entries() if e.event == "verify-complete")
    assert done.data["proven"] == ["alice"] and done.data["unproven"] == ["bob", "carol"]
    assert done.data["failures"] == {"alice": 3}


def test_a_wrong_missing_list_is_refused_before_any_share_is_read(tmp_path: Path) -> None:
    """'verify complete --missing ...' checks the list after the quorum: custodians gave
    (and typed passphrases for) their shares for a completion refused on its own input."""
    vault, _ = _rekey_verify(tmp_path)
    unread = ["--share", str(tmp_path / "not-read.kss")] * 2
    for missing, message in (
        (["dave"], "custodian 'dave' has no share in this generation"),
        (["bob"], "missing alice, carol"),
    ):
        args = [a for m in missing for a in ("--missing", m)]
        r = run(["verify", "complete", vault, *args, *unread])
        assert r.exit_code == 1 and message in error_lines(r)[0], r.output
    assert Keyring.open(vault).meta.generation == 1


def test_abort_discards_a_pending_verified_rekey(tmp_path: Path) -> None:
    vault, shares = _rekey_verify(tmp_path)
    _prove(vault, shares, 2, "alice", tmp_path)
    r = run(["rekey", vault, "--abort", *_q(shares, 1, "alice", "carol")])
    assert r.exit_code == 0, r.output
    assert _status(vault) == {"pending": False}
    assert not list(vault.glob("*.verify.json"))
    assert run(["unseal", vault, *_q(shares, 2, "alice", "bob")]).exit_code == 1
    assert run(["unseal", vault, *_q(shares, 1, "alice", "bob")]).exit_code == 0
    assert _events(vault)[-2] == "rekey-abort"


def test_init_verify_keyring_is_unusable_until_proven(tmp_path: Path) -> None:
    vault, shares = _init(tmp_path, "--verify")
    src = tmp_path / "f.txt"
    src.write_text("x")
    r = run(["encrypt", vault, src, tmp_path / "f.ks"])
    assert r.exit_code == 1 and "waits for proofs" in error_lines(r)[0]
    assert not (tmp_path / "f.ks").exists()
    r = run(["unseal", vault, *_q(shares, 1, "alice", "bob")])
    assert r.exit_code == 1 and "awaits proofs" in error_lines(r)[0]
    assert _status(vault)["kind"] == "init"
    for n in NAMES:
        _prove(vault, shares, 1, n, tmp_path)
    assert run(["encrypt", vault, src, tmp_path / "f.ks"]).exit_code == 0
    assert run(["unseal", vault, *_q(shares, 1, "alice", "bob")]).exit_code == 0
    assert _events(vault) == ["init", "verify-start", "verify-complete", "unseal-check"]
    assert _status(vault) == {"pending": False}


def test_init_verify_complete_with_missing_through_the_library(tmp_path: Path) -> None:
    vault, shares = _init(tmp_path, "--verify")
    kr = Keyring.open(vault)
    from keysplit import proof

    ceremony.prove(kr, "bob", proof.prove(_share(shares, 1, "bob")))
    qs = [_share(shares, 1, "alice"), _share(shares, 1, "bob")]
    with pytest.raises(proof.VerifyIncomplete) as info:
        ceremony.unseal_check(kr, ceremony.Quorum(kr, qs))
    assert info.value.missing == ("alice", "carol")
    ceremony.unseal_check(kr, ceremony.Quorum(kr, qs, complete_missing=["alice", "carol"]))
    entry = next(e for e in kr.audit_log().entries() if e.event == "verify-complete")
    assert entry.data["kind"] == "init" and entry.data["unproven"] == ["alice", "carol"]
    assert ceremony.pending_verification(kr) is None


def test_init_and_rekey_sheets_one_pdf_per_custodian(tmp_path: Path) -> None:
    import pypdf
    import zxingcpp

    sheets = tmp_path / "sheets"
    vault, shares = _init(tmp_path, "--sheets", sheets)
    kid = Keyring.open(vault).keyring_id
    assert sorted(p.name for p in sheets.iterdir()) == [f"{n}.g1.pdf" for n in NAMES]
    for n in NAMES:
        page = pypdf.PdfReader(sheets / f"{n}.g1.pdf").pages[0]
        assert n in page.extract_text() and kid in page.extract_text()
        (qr,) = [
            r.text
            for img in page.images
            for r in zxingcpp.read_barcodes(img.image)
            if r.format.name == "QRCode"
        ]
        assert Share.parse(qr) == _share(shares, 1, n)
        assert (sheets / f"{n}.g1.pdf").stat().st_mode & 0o777 == 0o600
    cs = [a for n in ("alice", "bob") for a in ("-c", n)]
    r = run(["rekey", vault, *cs, "--plain-shares", "--shares-dir", shares, "--sheets", sheets,
             *_q(shares, 1, "alice", "carol")])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert {p.name for p in sheets.iterdir()} >= {"alice.g2.pdf", "bob.g2.pdf"}
    # an existing sheet is never overwritten: refused before any key exists
    r = run(["init", tmp_path / "v2", "-k", "2", *cs, "--plain-shares", "--shares-dir",
             tmp_path / "s2", "--sheets", sheets])  # fmt: skip
    assert r.exit_code == 1 and "refusing to overwrite" in error_lines(r)[0]
    assert not (tmp_path / "v2" / "keyring.ksk").exists()


def _sealed_for(offer: dict[str, str], share: Share) -> tuple[bytes, bytes]:
    """A custodian's share as ``keysplit unseal --server`` sends it: (nonce, sealed share)."""
    from keysplit.service.unseal import seal_share_for

    nonce = bytes.fromhex(offer["nonce"])
    return nonce, seal_share_for(
        share,
        public_key=bytes.fromhex(offer["public_key"]),
        keyring_id=offer["keyring_id"],
        nonce=nonce,
    )


def _post_share(svc: KeyService, share: Share) -> Response:
    nonce, sealed = _sealed_for(svc.remote.offer(), share)
    body = {"nonce": nonce.hex(), "sealed_share": base64.b64encode(sealed).decode()}
    return svc.handle(Request("POST", "/v1/unseal", {}, json.dumps(body).encode()))


def test_every_path_from_shares_obeys_the_init_gate(tmp_path: Path) -> None:
    """The rule lives in the Unsealer (issue 18): the library's one-call unseal, an
    Unsealer driven by hand and the key service's remote unseal all refuse, naming who
    must still prove possession; none writes anything."""
    vault, shares = _init(tmp_path, "--verify")
    quorum = [_share(shares, 1, "alice"), _share(shares, 1, "bob")]
    with pytest.raises(VerificationPending, match="alice, bob, carol") as info:
        Keyring.open(vault).unseal(quorum)
    assert info.value.missing == ("alice", "bob", "carol")
    assert isinstance(info.value, KeyringError)
    u = Keyring.open(vault).unsealer()
    for s in quorum:
        u.add(s)
    with pytest.raises(VerificationPending):
        u.finish()
    svc = KeyService(vault, log=lambda m: None)
    assert _post_share(svc, quorum[0]).status == 200
    resp = _post_share(svc, quorum[1])
    assert resp.status == 400 and b"awaits proofs of possession" in resp.body
    status = json.loads(svc.handle(Request("GET", "/v1/status", {})).body)
    assert status["sealed"] is True and status["progress"]["have"] == 0
    assert status["verification"]["missing"] == ["alice", "bob", "carol"]
    assert _events(vault) == ["init", "verify-start"]
    # once everyone proved, the same two shares unseal the service, recorded once each
    for n in NAMES:
        _prove(vault, shares, 1, n, tmp_path)
    for s in quorum:
        assert _post_share(svc, s).status == 200
    assert not svc.sealed
    svc.close()
    assert _events(vault) == [
        "init", "verify-start", "verify-complete", "service-unseal", "service-seal"
    ]  # fmt: skip
    done = Keyring.open(vault).audit_log().entries()[2]
    assert done.data["proven"] == list(NAMES)
    assert [c["custodian"] for c in done.data["authorized_by"]] == ["alice", "bob"]


def test_the_service_obeys_the_rekey_gate(tmp_path: Path) -> None:
    """A pending ``rekey --verify``: the service unseals with the current shares, and the
    new ones do not switch the keyring through it until every new custodian has proven."""
    vault, shares = _rekey_verify(tmp_path)

    def send(ru: RemoteUnseal, s: Share) -> UnsealedKeyring | None:
        return ru.submit(*_sealed_for(ru.offer(), s))[1]

    ru = RemoteUnseal(Keyring.open(vault))
    send(ru, _share(shares, 2, "alice"))
    with pytest.raises(VerificationPending, match="alice, bob, carol"):
        send(ru, _share(shares, 2, "bob"))
    assert Keyring.open(vault).meta.generation == 1 and ru.progress()["have"] == 0
    send(ru, _share(shares, 1, "alice"))
    opened = send(ru, _share(shares, 1, "carol"))
    assert opened is not None and Keyring.open(vault).pending is not None
    opened.close()
    for n in NAMES:
        _prove(vault, shares, 2, n, tmp_path)
    send(ru, _share(shares, 2, "bob"))
    opened = send(ru, _share(shares, 2, "carol"))
    assert opened is not None
    opened.close()
    kr = Keyring.open(vault)
    assert kr.meta.generation == 2 and kr.pending is None
    assert _events(vault)[-2:] == ["verify-complete", "rekey-switch"]


def test_init_and_rekey_take_out_dir_as_their_shares_dir(tmp_path: Path) -> None:
    """``custodian keygen``, ``split`` and ``share convert`` write their files to
    ``--out-dir``; ``init`` and ``rekey`` said ``--shares-dir`` for the same idea and refused
    ``--out-dir``. It is now the other spelling of ``--shares-dir`` (both are listed)."""
    vault, shares = tmp_path / "vault", tmp_path / "out"
    cs = [a for n in NAMES for a in ("-c", n)]
    r = run(["init", vault, "-k", "2", *cs, "--plain-shares", "--out-dir", shares])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in shares.iterdir()) == [f"{n}.g1.kss" for n in NAMES]
    r = run(["rekey", vault, *cs, "--plain-shares", "--out-dir", shares,
             *_q(shares, 1, "alice", "bob")])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (shares / "alice.g2.kss").is_file()
    for cmd in ("init", "rekey"):
        r = run([cmd, "--help"])
        assert "--shares-dir" in r.stdout and "--out-dir" in r.stdout, r.stdout
