"""keysplit.ceremony: one call per ceremony, exactly one typed audit entry each, crash cleanup,
and the cheap checks before anyone is asked for a share."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from paths import run_keysplit

from keysplit import (
    Argon2Params,
    AuditError,
    CustodianError,
    FormatError,
    Identity,
    IntegrityError,
    Keyring,
    KeyringError,
    LegalHoldError,
    MixedSharesError,
    Recipient,
    Share,
    ceremony,
    load_share,
    trust,
)
from keysplit.audit import EVENTS, events
from keysplit.ceremony import (
    Custody,
    DirectorySink,
    Quorum,
    ShareFileExists,
    SheetWriter,
    check_custody,
)
from keysplit.stream import encrypt_file  # raw key: these tests trust the key they made

FAST = Argon2Params(time_cost=1, memory_kib=64, lanes=1)


def _custody(tmp: Path) -> tuple[list[Custody], dict[str, Identity]]:
    ids = {n: Identity.generate(n) for n in ("alice", "bob")}
    custody = [
        Custody("alice", recipient=ids["alice"].recipient),
        Custody("bob", recipient=ids["bob"].recipient),
        Custody("carol", passphrase=b"carol's passphrase"),
        Custody("dave"),
    ]
    return custody, ids


def _open(path: str, name: str, ids: dict[str, Identity]) -> Share:
    data = Path(path).read_bytes()
    if name in ids:
        return load_share(data, identity=ids[name])
    if name == "carol":
        return load_share(data, passphrase=b"carol's passphrase")
    return load_share(data)


def _never(q: Quorum) -> None:
    raise AssertionError("the quorum was asked for before the ceremony's own checks")


def _events(kr: Keyring) -> list[str]:
    return [e.event for e in kr.audit_log().entries()]


def test_every_ceremony_writes_exactly_one_entry_of_the_vocabulary(tmp_path: Path) -> None:
    custody, ids = _custody(tmp_path)
    sink = DirectorySink(tmp_path / "shares")
    made = ceremony.init(tmp_path / "kr", 2, custody, sink, kdf=FAST)
    kr = made.keyring
    assert _events(kr) == ["init"]
    init = kr.audit_log().entries()[0]
    assert init.data == {
        "keyring_id": kr.keyring_id,
        "generation": 1,
        "threshold": 2,
        "custodians": [w.record().as_dict() for w in made.shares],
    }
    assert [w.protection for w in made.shares][2:] == ["passphrase", "none (plain)"]
    assert [Path(w.location).name for w in made.shares] == [
        "alice.g1.kss",
        "bob.g1.kss",
        "carol.g1.kss",
        "dave.g1.kss",
    ]
    by_name = {w.custodian: w.location for w in made.shares}
    two = [_open(by_name[n], n, ids) for n in ("alice", "carol")]

    def q() -> Quorum:
        return Quorum(kr, two)

    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"hello ceremony\n" * 100)
    encrypt_file(plain, tmp_path / "plain.ks", kr.public_key, context={"kind": "t"})

    steps = [
        ("unseal-check", lambda: ceremony.unseal_check(kr, q())),
        ("rotate", lambda: ceremony.rotate(kr, q())),
        ("rewrap", lambda: ceremony.rewrap(kr, q(), batch_size=7)),
        ("retire", lambda: ceremony.retire(kr, q(), 1)),
        ("legal-hold", lambda: ceremony.hold(kr, q(), "u1", True)),
        ("shred", lambda: ceremony.shred(kr, q(), "u2")),
        (
            "decrypt",
            lambda: ceremony.decrypt_file(
                kr, q(), str(tmp_path / "plain.ks"), str(tmp_path / "out.txt")
            ),
        ),
    ]
    for name, step in steps:
        before = _events(kr)
        done = step()
        # a store change is preceded by its intent (a kill between leaves it open)
        begun = ["intent"] if name in ("legal-hold", "shred") else []
        assert _events(kr) == [*before, *begun, name]
        assert done.entry is not None and done.entry.event == name
        assert done.entry.hash == kr.audit_log().head
        who = done.entry.data.get("authorized_by", done.entry.data.get("custodians"))
        assert who == [c.as_dict() for c in done.contributors]
        assert [c.custodian for c in done.contributors] == ["alice", "carol"]
    assert (tmp_path / "out.txt").read_bytes() == plain.read_bytes()

    rekeyed = ceremony.rekey(
        kr,
        q(),
        custody[:3],
        DirectorySink(tmp_path / "shares"),
        threshold=2,
        kdf=FAST,
    )
    assert _events(kr)[-1] == "rekey" and rekeyed.entry.data["old_custodians"] == [
        "alice",
        "bob",
        "carol",
        "dave",
    ]
    with pytest.raises(MixedSharesError):
        Quorum(kr, two).unseal()
    with kr.audit_log().path.open("ab") as fh:
        fh.write(b'{"torn')
    fresh = [_open(w.location, w.custodian, ids) for w in rekeyed.shares[:2]]
    repaired = ceremony.repair_audit(kr, Quorum(kr, fresh))
    assert _events(kr)[-1] == "audit-repair" and repaired.entry is not None

    assert set(_events(kr)) <= set(EVENTS)
    with Quorum(kr, fresh).unseal() as ukr:
        report = ukr.audit_log().verify()
    assert report.mac_verified and report.entries == len(steps) + 3 + 2  # + 2 intents


def test_shred_under_legal_hold_is_refused_and_its_intent_closed(tmp_path: Path) -> None:
    """A refused shred changes nothing; its intent (written before the store is asked) is
    closed by an ``observed`` entry naming the refusal, so no open intent is reported."""
    made = ceremony.init(
        tmp_path / "kr", 2, [Custody("a"), Custody("b")], DirectorySink(tmp_path / "s")
    )
    kr = made.keyring
    shares = [load_share(Path(w.location).read_bytes()) for w in made.shares]
    ceremony.hold(kr, Quorum(kr, shares), "u1", True)
    before = _events(kr)
    with pytest.raises(LegalHoldError):
        ceremony.shred(kr, Quorum(kr, shares), "u1")
    assert _events(kr) == [*before, "intent", "observed"]
    last = kr.audit_log().entries()[-1]
    assert last.data["intent"] == last.seq - 1 and last.data["operation"] == "shred"
    assert last.data["found"].startswith("LegalHoldError; not done")
    assert kr.unrecorded_changes() == []


class _FailingSink(DirectorySink):
    """Fails on the ``fail_at``-th write, like a full disk."""

    def __init__(self, directory: Path, fail_at: int) -> None:
        super().__init__(directory)
        self.calls = 0
        self.fail_at = fail_at

    def write(self, custody: Custody, generation: int, data: bytes) -> str:
        self.calls += 1
        if self.calls == self.fail_at:
            raise OSError(28, "No space left on device")
        return super().write(custody, generation, data)


def test_init_write_failure_removes_written_shares(tmp_path: Path) -> None:
    sink = _FailingSink(tmp_path / "s", fail_at=2)
    with pytest.raises(KeyringError, match="can never be unsealed") as exc:
        ceremony.init(tmp_path / "kr", 2, [Custody("a"), Custody("b")], sink)
    assert exc.value.hint == f"remove {tmp_path / 'kr'} and run init again"
    assert list((tmp_path / "s").iterdir()) == []


def test_rekey_write_failure_aborts_and_old_shares_still_work(tmp_path: Path) -> None:
    made = ceremony.init(
        tmp_path / "kr", 2, [Custody("a"), Custody("b"), Custody("c")], DirectorySink(tmp_path)
    )
    kr = made.keyring
    old = [load_share(Path(w.location).read_bytes()) for w in made.shares]
    sink = _FailingSink(tmp_path / "new", fail_at=3)
    with pytest.raises(OSError, match="No space"):
        ceremony.rekey(kr, Quorum(kr, old[:2]), [Custody("a"), Custody("b"), Custody("d")], sink)
    assert list((tmp_path / "new").iterdir()) == []
    assert kr.status().pending_rekey is False
    assert _events(kr) == ["init"]
    ceremony.unseal_check(Keyring.open(tmp_path / "kr"), Quorum(kr, old[1:]))


class _RacedSink(DirectorySink):
    """Runs ``other`` (another process's whole ceremony) just before its first write."""

    def __init__(self, directory: Path, other: Callable[[], None]) -> None:
        super().__init__(directory)
        self.other: Callable[[], None] | None = other

    def write(self, custody: Custody, generation: int, data: bytes) -> str:
        if self.other is not None:
            other, self.other = self.other, None
            other()
        return super().write(custody, generation, data)


def _rekey_process(kr: Path, quorum: Sequence[str], *options: object) -> Callable[[], None]:
    """Another operator's whole ``keysplit rekey`` (a real process) to a, b, c."""

    def run() -> None:
        args = ["rekey", kr, "-c", "a", "-c", "b", "-c", "c", "--plain-shares", *options]
        for path in quorum:
            args += ["-s", path]
        p = run_keysplit(args)
        assert p.returncode == 0, p.stderr

    return run


def test_a_failed_rekey_never_deletes_the_shares_of_another_rekey(tmp_path: Path) -> None:
    """Two operators rekey one keyring at once into the same shares directory: another
    process switches to its new shares while this rekey is between prepare and writing.
    This one then finds those files and fails; its cleanup used to delete every file named
    like one of its own, i.e. the other's new shares: the keyring had no quorum left."""
    custody = [Custody("a"), Custody("b"), Custody("c")]
    made = ceremony.init(tmp_path / "kr", 2, custody, DirectorySink(tmp_path / "s"))
    kr = made.keyring
    old = [w.location for w in made.shares]
    other = _rekey_process(tmp_path / "kr", old[1:], "--shares-dir", tmp_path / "s")
    shares = [load_share(Path(p).read_bytes()) for p in old[:2]]
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        ceremony.rekey(kr, Quorum(kr, shares), custody, _RacedSink(tmp_path / "s", other))
    new = [load_share((tmp_path / "s" / f"{n}.g2.kss").read_bytes()) for n in ("a", "c")]
    kr = Keyring.open(tmp_path / "kr")
    assert kr.meta.generation == 2 and kr.pending is None
    ceremony.unseal_check(kr, Quorum(kr, new))  # the other rekey's shares still unseal


def test_a_sink_used_again_discards_only_the_failed_ceremonys_files(tmp_path: Path) -> None:
    # One sink (and sheet writer) for every ceremony of a keyring: a rekey whose writes fail
    # removes its own new files, never the current shares (or sheets) an earlier ceremony
    # wrote through the same objects: they are the only way left to unseal.
    sink = _FailingSink(tmp_path / "s", fail_at=4)
    sheets = SheetWriter(tmp_path / "sheets")
    made = ceremony.init(tmp_path / "kr", 2, [Custody("a"), Custody("b")], sink, sheets=sheets)
    kr = made.keyring
    current = [load_share(Path(w.location).read_bytes()) for w in made.shares]
    with pytest.raises(OSError, match="No space"):
        ceremony.rekey(kr, Quorum(kr, current), [Custody("a"), Custody("b")], sink, sheets=sheets)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["a.g1.kss", "b.g1.kss"]
    assert sorted(p.name for p in (tmp_path / "sheets").iterdir()) == ["a.g1.pdf", "b.g1.pdf"]
    ceremony.unseal_check(Keyring.open(tmp_path / "kr"), Quorum(kr, current))


def test_a_rekey_whose_pending_file_was_replaced_fails_plainly_and_leaves_no_shares(
    tmp_path: Path,
) -> None:
    """Another process starts its own rekey (--verify: its pending file stays) while this
    one is writing shares. This one's switch used to fail as 'keyring file failed
    authentication' (as if tampered with) and leave its dead share files behind."""
    custody = [Custody("a"), Custody("b"), Custody("c")]
    made = ceremony.init(tmp_path / "kr", 2, custody, DirectorySink(tmp_path / "s"))
    kr = made.keyring
    old = [w.location for w in made.shares]
    other = _rekey_process(tmp_path / "kr", old[1:], "--verify", "--shares-dir", tmp_path / "o")
    shares = [load_share(Path(p).read_bytes()) for p in old[:2]]
    mine = _RacedSink(tmp_path / "mine", other)
    with pytest.raises(KeyringError, match="pending rekey changed on disk"):
        ceremony.rekey(kr, Quorum(kr, shares), custody, mine)
    assert list((tmp_path / "mine").iterdir()) == []
    kr = Keyring.open(tmp_path / "kr")
    assert kr.meta.generation == 1 and kr.pending is not None  # the other rekey's, intact
    assert ceremony.pending_verification(kr) is not None


def test_a_link_to_nowhere_at_a_share_name_is_refused_before_the_keyring_exists(
    tmp_path: Path,
) -> None:
    # It passed the check (Path.exists follows links); the write then failed on it and init
    # left a keyring that can never be unsealed.
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "b.g1.kss").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ShareFileExists, match="refusing to overwrite existing share file"):
        ceremony.init(
            tmp_path / "kr", 2, [Custody("a"), Custody("b")], DirectorySink(tmp_path / "s")
        )
    assert not (tmp_path / "kr").exists() and not (tmp_path / "nowhere").exists()


def test_one_public_key_for_two_custodians_is_refused_before_anything(tmp_path: Path) -> None:
    # A public key file names its custodian, but anyone can write one (the key is public):
    # alice's key under the name bob gave alice two shares of a 2-of-3, so she alone could
    # unseal. Refused before a keyring, a share file or a quorum exists.
    alice = Identity.generate("alice")
    as_bob = Recipient("bob", "x25519", alice.recipient.public_bytes)
    custody = [Custody("alice", recipient=alice.recipient), Custody("bob", recipient=as_bob)]
    same = "custodians 'alice' and 'bob' have the same public key"
    with pytest.raises(CustodianError, match=same):
        ceremony.init(tmp_path / "kr", 2, [*custody, Custody("c")], DirectorySink(tmp_path / "s"))
    assert not (tmp_path / "kr").exists() and not (tmp_path / "s").exists()
    made = ceremony.init(tmp_path / "kr", 2, [Custody("a"), Custody("b")], DirectorySink(tmp_path))
    with pytest.raises(CustodianError, match=same):
        ceremony.rekey(made.keyring, Quorum(made.keyring, _never), custody, DirectorySink(tmp_path))
    assert _events(made.keyring) == ["init"]


def test_a_hybrid_keys_x25519_half_under_another_name_is_refused(tmp_path: Path) -> None:
    """(red team) check_custody compared whole public keys only: the X25519 half of alice's
    ML-KEM+X25519 key, filed as bob's x25519 key, passed; alice's identity holds that half's
    private key, so she could open bob's share too (two shares of a 2-of-3). A key sharing
    either part with another custodian's key is now refused, before anything is made."""
    from keysplit.custody import open_share, seal_share
    from keysplit.share import split

    alice = Identity.generate("alice", suite="mlkem768-x25519")
    half = alice.recipient.public_bytes[-32:]
    as_bob = Recipient("bob", "x25519", half)
    x_of_alice = Identity("alice", "x25519", alice._private[-32:])  # the threat, shown
    share = split(bytes(16), 2, 3)[1]
    assert open_share(seal_share(share, as_bob), identity=x_of_alice) == share
    custody = [Custody("alice", recipient=alice.recipient), Custody("bob", recipient=as_bob)]
    shared = "custodians 'alice' and 'bob' have keys with the same X25519 part"
    for order in (custody, custody[::-1]):
        with pytest.raises(CustodianError, match="have keys with the same X25519 part"):
            ceremony.init(tmp_path / "kr", 2, [*order, Custody("c")], DirectorySink(tmp_path / "s"))
    with pytest.raises(CustodianError, match=shared):
        check_custody(custody)
    assert not (tmp_path / "kr").exists() and not (tmp_path / "s").exists()
    # two hybrid keys built on one ML-KEM key: refused as well (one key pair, two names)
    mlkem_half = alice.recipient.public_bytes[:-32]
    other = Identity.generate("bob", suite="mlkem768-x25519").recipient.public_bytes[-32:]
    twin = Recipient("bob", "mlkem768-x25519", mlkem_half + other)
    with pytest.raises(CustodianError, match="the same ML-KEM-768 part"):
        check_custody([custody[0], Custody("bob", recipient=twin)])
    # distinct keys of either suite pass
    check_custody(
        [
            custody[0],
            Custody("bob", recipient=Identity.generate("bob").recipient),
            Custody("c", recipient=Identity.generate("c", suite="mlkem768-x25519").recipient),
        ]
    )


@pytest.mark.parametrize("suite", ["x25519", "mlkem768-x25519"])
def test_another_encoding_of_a_custodians_x25519_key_is_refused(suite: str) -> None:
    """Review: X25519 ignores bit 255 of a public key (RFC 7748) and reduces u mod p, so
    alice's key with that bit set is her key under other bytes: check_custody, which
    compares bytes (whole keys and parts), took it as bob's, and alice's private key opens
    what is sealed to it (the shared secret below). No key pair has such an encoding: a
    public key whose X25519 part is not canonical (u < 2^255 - 19) is refused when read."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )

    alice = Identity.generate("alice", suite=suite)
    pub = alice.recipient.public_bytes
    flipped = pub[:-1] + bytes([pub[-1] | 0x80])
    x_private = X25519PrivateKey.from_private_bytes(alice._private[-32:])  # the threat, shown
    same = [x_private.exchange(X25519PublicKey.from_public_bytes(k[-32:])) for k in (pub, flipped)]
    assert same[0] == same[1]
    from keysplit.custody._container import checksum, seal_envelope

    body = alice.recipient.to_bytes()[: -len(checksum(b""))]  # magic .. name, public key
    p = 2**255 - 19
    for bad in (flipped, pub[:-32] + (p + 1).to_bytes(32, "little")):
        with pytest.raises(FormatError, match="X25519 public key is not canonical"):
            Recipient("bob", suite, bad)  # type: ignore[arg-type]
        with pytest.raises(FormatError, match="X25519 public key is not canonical"):
            Recipient.from_bytes(seal_envelope(body[: -len(pub)] + bad))  # a .pub file
    Recipient("bob", suite, pub)  # type: ignore[arg-type]  # the canonical one is fine


def test_a_rekey_that_switched_says_so_when_it_cannot_finish(tmp_path: Path) -> None:
    """Another process dies mid-append to the audit log while this rekey writes its shares:
    the rekey switched, then failed on the torn log with 'audit log ends in a torn line'
    (exit 1: 'old shares still work'), yet only the new shares unsealed the keyring."""
    custody = [Custody("a"), Custody("b"), Custody("c")]
    made = ceremony.init(tmp_path / "kr", 2, custody, DirectorySink(tmp_path / "s"))
    kr = made.keyring
    log = tmp_path / "kr" / "audit.log"

    def dies_mid_append() -> None:
        torn = "import sys; open(sys.argv[1], 'ab').write(b'{\"data\":')"
        subprocess.run([sys.executable, "-c", torn, str(log)], check=True, timeout=60)

    old = [load_share(Path(w.location).read_bytes()) for w in made.shares]
    with pytest.raises(KeyringError, match="the rekey took effect") as exc:
        ceremony.rekey(
            kr, Quorum(kr, old[:2]), custody, _RacedSink(tmp_path / "n", dies_mid_append)
        )
    assert "torn line" in str(exc.value) and exc.value.hint is not None
    assert "keep the new share files" in exc.value.hint
    new = [load_share((tmp_path / "n" / f"{n}.g2.kss").read_bytes()) for n in ("a", "c")]
    with Keyring.open(tmp_path / "kr").unseal(new):
        pass


_DIES_MID_HAND_OUT = """
import os, signal, sys
from pathlib import Path
from keysplit import Keyring, ceremony, load_share
from keysplit.ceremony import Custody, DirectorySink, Quorum

class Dying(DirectorySink):  # the process is killed before it writes the third share
    def write(self, custody, generation, data):
        if len(self._written) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().write(custody, generation, data)

base = Path(sys.argv[1])
custody = [Custody("a"), Custody("b"), Custody("c")]
if sys.argv[2] == "init":
    ceremony.init(base / "kr", 2, custody, Dying(base / "s"))
kr = Keyring.open(base / "kr")
old = [load_share((base / "s" / f"{n}.g1.kss").read_bytes()) for n in ("a", "b")]
ceremony.rekey(kr, Quorum(kr, old), custody, Dying(base / "new"))
"""


def _killed_mid_hand_out(base: Path, which: str) -> None:
    p = subprocess.run(
        [sys.executable, "-c", _DIES_MID_HAND_OUT, str(base), which],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == -9, p.stderr


def test_new_shares_of_a_rekey_killed_while_writing_them_do_not_complete_it(
    tmp_path: Path,
) -> None:
    """A rekey process killed after writing 2 of its 3 new shares: those two used to
    complete it at the next unseal ('completed an interrupted rekey; old shares are dead'),
    and custodian c, whose share was never written, was left out of the keyring for good."""
    custody = [Custody("a"), Custody("b"), Custody("c")]
    made = ceremony.init(tmp_path / "kr", 2, custody, DirectorySink(tmp_path / "s"))
    _killed_mid_hand_out(tmp_path, "rekey")
    assert sorted(f.name for f in (tmp_path / "new").iterdir()) == ["a.g2.kss", "b.g2.kss"]
    kr = Keyring.open(tmp_path / "kr")
    assert kr.pending is not None
    new = [load_share((tmp_path / "new" / f"{n}.g2.kss").read_bytes()) for n in ("a", "b")]
    with pytest.raises(KeyringError, match="killed while its new shares were written"):
        ceremony.unseal_check(kr, Quorum(kr, new))
    kr = Keyring.open(tmp_path / "kr")
    assert kr.meta.generation == 1
    old = [load_share(Path(w.location).read_bytes()) for w in made.shares]
    assert ceremony.abort_rekey(kr, Quorum(kr, old[1:])).value is True
    ceremony.unseal_check(Keyring.open(tmp_path / "kr"), Quorum(kr, old[:2]))


def test_shares_of_an_init_killed_while_writing_them_do_not_unseal(tmp_path: Path) -> None:
    """An init process killed after writing 2 of its 3 shares: the keyring unsealed with
    those two as if nothing had happened, custodian c never having had a share."""
    _killed_mid_hand_out(tmp_path, "init")
    assert sorted(f.name for f in (tmp_path / "s").iterdir()) == ["a.g1.kss", "b.g1.kss"]
    kr = Keyring.open(tmp_path / "kr")
    shares = [load_share((tmp_path / "s" / f"{n}.g1.kss").read_bytes()) for n in ("a", "b")]
    with pytest.raises(KeyringError, match="killed while its shares were written"):
        ceremony.unseal_check(kr, Quorum(kr, shares))
    with pytest.raises(KeyringError, match="a keyring already exists") as again:
        ceremony.init(tmp_path / "kr", 2, [Custody("a"), Custody("b")], DirectorySink(tmp_path))
    assert again.value.hint is not None and "before all its shares were written" in again.value.hint
    # and nothing is sealed to a keyring no quorum will ever open
    (tmp_path / "f.txt").write_bytes(b"data")
    with pytest.raises(KeyringError, match="can never be unsealed"):
        trust.encrypt_file(
            kr, str(tmp_path / "f.txt"), str(tmp_path / "f.ks"), trust_on_first_use=True
        )
    assert not (tmp_path / "f.ks").exists()


def test_cheap_checks_run_before_the_quorum_is_asked(tmp_path: Path) -> None:
    made = ceremony.init(tmp_path / "kr", 2, [Custody("a"), Custody("b")], DirectorySink(tmp_path))
    kr = made.keyring
    taken = DirectorySink(tmp_path / "taken")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / f"a.g{kr.meta.generation + 1}.kss").write_text("someone's share")
    with pytest.raises(ShareFileExists, match="refusing to overwrite existing share file"):
        ceremony.rekey(kr, Quorum(kr, _never), [Custody("a"), Custody("b")], taken)
    assert (tmp_path / "taken" / "a.g2.kss").read_text() == "someone's share"
    with pytest.raises(KeyringError, match="no rekey is pending"):
        ceremony.abort_rekey(kr, Quorum(kr, _never))
    with pytest.raises(KeyringError, match="KEK version 7 does not exist"):
        ceremony.retire(kr, Quorum(kr, _never), 7)
    with pytest.raises(KeyringError, match="KEK version 1 is current"):
        ceremony.retire(kr, Quorum(kr, _never), 1)
    other = ceremony.init(
        tmp_path / "kr2", 2, [Custody("x"), Custody("y")], DirectorySink(tmp_path)
    )
    src = tmp_path / "f.txt"
    src.write_bytes(b"data")
    encrypt_file(src, tmp_path / "f.ks", other.keyring.public_key)
    with pytest.raises(KeyringError, match="sealed to another keyring"):
        ceremony.decrypt_file(kr, Quorum(kr, _never), str(tmp_path / "f.ks"), str(tmp_path / "o"))
    assert _events(kr) == ["init"]


def test_a_feed_supplies_shares_one_at_a_time(tmp_path: Path) -> None:
    made = ceremony.init(tmp_path / "kr", 2, [Custody("a"), Custody("b")], DirectorySink(tmp_path))
    kr = made.keyring
    shares = [load_share(Path(w.location).read_bytes()) for w in made.shares]
    seen: list[tuple[int, int]] = []

    def feed(q: Quorum) -> None:
        for s in shares:
            p = q.add(s)
            seen.append((p.have, p.need))

    done = ceremony.rotate(kr, Quorum(kr, feed))
    assert seen == [(1, 2), (2, 2)] and done.value == 2
    assert [c.custodian for c in done.contributors] == ["a", "b"]


def test_new_shares_of_an_interrupted_rekey_complete_it_and_are_recorded(tmp_path: Path) -> None:
    made = ceremony.init(tmp_path / "kr", 2, [Custody("a"), Custody("b")], DirectorySink(tmp_path))
    kr = made.keyring
    old = [load_share(Path(w.location).read_bytes()) for w in made.shares]
    with kr.unseal(old) as ukr:
        new: Sequence[Share] = list(ukr.prepare_rekey().values())  # then "crash" before commit
    kr = Keyring.open(tmp_path / "kr")
    calls: list[bool] = []
    q = Quorum(kr, new, on_recovered=lambda: calls.append(True))
    done = ceremony.unseal_check(kr, q)
    assert calls == [True] and q.recovered
    # its own name (once "rekey" with recovered=true: one field layout per event name)
    assert _events(kr) == ["init", "rekey-recovered", "unseal-check"]
    entry = kr.audit_log().entries()[1]
    assert entry.data["generation"] == kr.meta.generation and entry.data["custodians"] == ["a", "b"]
    assert entry.data["authorized_by"] == [c.as_dict() for c in done.contributors]
    with pytest.raises(MixedSharesError):
        Quorum(kr, old).unseal()


def test_a_rekey_a_library_unseal_completed_is_recorded_under_its_generation(
    tmp_path: Path,
) -> None:
    """(review) The owed-switch mark named only the share set; the quorum recorded the
    keyring's current generation. A library ``Keyring.unseal`` that completed an
    interrupted rekey (it records nothing and leaves the mark), then a rotation (same set,
    generation + 1): the next quorum recorded ``rekey-recovered`` under the rotation's
    generation and ``audit verify``'s note named it. The mark names the generation now."""
    made = ceremony.init(tmp_path / "kr", 2, [Custody("a"), Custody("b")], DirectorySink(tmp_path))
    old = [load_share(Path(w.location).read_bytes()) for w in made.shares]
    with made.keyring.unseal(old) as ukr:
        new: Sequence[Share] = list(ukr.prepare_rekey().values())  # then "crash" before commit
    kr = Keyring.open(tmp_path / "kr")
    with kr.unseal(new) as ukr:  # the library completes the rekey: generation 2, no entry
        ukr.rotate()  # KEK v2: generation 3, same share set
    kr = Keyring.open(tmp_path / "kr")
    assert kr.meta.generation == 3
    notes = kr.unrecorded_changes()
    assert len(notes) == 1 and "(keyring generation 2)" in notes[0], notes
    ceremony.unseal_check(kr, Quorum(kr, new))
    recovered = [e for e in kr.audit_log().entries() if e.event == "rekey-recovered"]
    assert [e.data["generation"] for e in recovered] == [2]
    assert Keyring.open(tmp_path / "kr").unrecorded_changes() == []
    home, sid = kr.home, kr.meta.set_id
    home.mark_unrecorded(sid, 2)
    assert (tmp_path / "kr" / "keyring.ksk.unrecorded").read_bytes() == f"{sid} 2".encode()
    assert home.switch_unrecorded(sid, 3) == 2 and home.switch_unrecorded("00" * 8, 3) is None
    (tmp_path / "kr" / "keyring.ksk.unrecorded").write_bytes(sid.encode())  # older code's
    assert home.switch_unrecorded(sid, 3) == 3  # its one guess: the current generation
    home.clear_unrecorded()


def test_shares_that_completed_a_rekey_say_so_when_its_entry_cannot_be_written(
    tmp_path: Path,
) -> None:
    """The new shares of an interrupted rekey complete it, then its entry cannot be
    appended (a torn log): the error used to be the log's alone, the switch (old shares
    dead from now on) unmentioned."""
    made = ceremony.init(tmp_path / "kr", 2, [Custody("a"), Custody("b")], DirectorySink(tmp_path))
    old = [load_share(Path(w.location).read_bytes()) for w in made.shares]
    with made.keyring.unseal(old) as ukr:
        new: Sequence[Share] = list(ukr.prepare_rekey().values())  # then "crash" before commit
    with (tmp_path / "kr" / "audit.log").open("ab") as f:
        f.write(b'{"data":')  # and another process died mid-append
    kr = Keyring.open(tmp_path / "kr")
    with pytest.raises(KeyringError, match="completed an interrupted rekey") as exc:
        ceremony.unseal_check(kr, Quorum(kr, new))
    assert "torn line" in str(exc.value) and "old shares no longer" in str(exc.value)
    assert Keyring.open(tmp_path / "kr").meta.generation == 2


def test_abort_discards_a_pending_rekey_with_the_current_shares(tmp_path: Path) -> None:
    made = ceremony.init(tmp_path / "kr", 2, [Custody("a"), Custody("b")], DirectorySink(tmp_path))
    kr = made.keyring
    old = [load_share(Path(w.location).read_bytes()) for w in made.shares]
    with kr.unseal(old) as ukr:
        ukr.prepare_rekey()
    kr = Keyring.open(tmp_path / "kr")
    done = ceremony.abort_rekey(kr, Quorum(kr, old))
    assert done.value is True and _events(kr) == ["init", "rekey-abort"]
    assert kr.status().pending_rekey is False


def _sealed_file(tmp_path: Path) -> tuple[Keyring, list[Share]]:
    """A 2-of-2 keyring, its shares, and f.ks: 5,000 bytes sealed to it."""
    made = ceremony.init(tmp_path / "kr", 2, [Custody("a"), Custody("b")], DirectorySink(tmp_path))
    shares = [load_share(Path(w.location).read_bytes()) for w in made.shares]
    src = tmp_path / "f.txt"
    src.write_bytes(b"x" * 5000)
    encrypt_file(src, tmp_path / "f.ks", made.keyring.public_key)
    return made.keyring, shares


def test_tampered_file_is_not_recorded_as_decrypted(tmp_path: Path) -> None:
    kr, shares = _sealed_file(tmp_path)
    bad = bytearray((tmp_path / "f.ks").read_bytes())
    bad[-50] ^= 1
    (tmp_path / "f.ks").write_bytes(bytes(bad))
    with pytest.raises(IntegrityError):
        ceremony.decrypt_file(kr, Quorum(kr, shares), str(tmp_path / "f.ks"), str(tmp_path / "o"))
    assert not (tmp_path / "o").exists() and _events(kr) == ["init"]


def test_a_decrypted_file_is_put_in_place_only_once_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(redteam2, 'found, not fixed') The decrypt entry was appended after the plaintext file
    was put in place: a kill between the two left plaintext on disk with nothing on the
    record. Now the entry is appended once every chunk is authenticated and before OUT
    appears (record, then release), so an append that fails leaves no OUT at all."""
    kr, shares = _sealed_file(tmp_path)
    real = events.record

    def failing(log: object, event: events.Event) -> object:
        if isinstance(event, events.Decrypt):
            assert not (tmp_path / "o").exists(), "the plaintext was released before its entry"
            raise OSError("disk full (the audit log)")
        return real(log, event)  # type: ignore[arg-type]

    monkeypatch.setattr(events, "record", failing)
    with pytest.raises(OSError, match="disk full"):
        ceremony.decrypt_file(kr, Quorum(kr, shares), str(tmp_path / "f.ks"), str(tmp_path / "o"))
    assert not (tmp_path / "o").exists() and _events(kr) == ["init"]
    monkeypatch.setattr(events, "record", real)
    out = str(tmp_path / "o")
    done = ceremony.decrypt_file(kr, Quorum(kr, shares), str(tmp_path / "f.ks"), out)
    assert (tmp_path / "o").read_bytes() == b"x" * 5000 and _events(kr) == ["init", "decrypt"]
    assert done.entry is not None and done.entry.event == "decrypt"


def test_vocabulary_is_one_and_old_spellings_map_to_it() -> None:
    names = {cls.NAME for cls in events.Event.__subclasses__()}
    assert names == set(EVENTS)
    assert events.canonical_name("legal_hold") == "legal-hold"
    assert events.canonical_name("rekey_committed") == "rekey"
    assert events.canonical_name("shred") == "shred"
    assert all(v in EVENTS for v in events.LEGACY_NAMES.values())


def test_custody_repr_hides_the_passphrase() -> None:
    c = Custody("carol", passphrase=b"hunter2 hunter2")
    assert "hunter2" not in repr(c) and "passphrase" in repr(c)


def test_init_beside_a_fifo_named_audit_log_makes_nothing(tmp_path: Path) -> None:
    """A FIFO where the new keyring's log goes: init made the keyring and its shares, then
    failed writing the init entry (fsync on a pipe: '[Errno 22] Invalid argument'). Now it
    is refused before anything exists."""
    import os

    (tmp_path / "kr").mkdir()
    os.mkfifo(tmp_path / "kr" / "audit.log")
    with pytest.raises(AuditError, match="is a FIFO, not a regular file"):
        ceremony.init(
            tmp_path / "kr", 2, [Custody("a"), Custody("b")], DirectorySink(tmp_path / "s")
        )
    assert sorted(p.name for p in (tmp_path / "kr").iterdir()) == ["audit.log"]
    assert not (tmp_path / "s").exists()


def test_a_quorum_adds_no_observation_to_a_log_that_does_not_verify(tmp_path: Path) -> None:
    """The next quorum records an open intent (``observed``), but only onto a log that
    verifies: with an earlier entry edited, it appended its observation to the altered
    chain (``audit verify --mac`` wrote before it checked). Now it records nothing and the
    log stays byte for byte as found; an intact log gets its observation."""
    import json as _json

    made = ceremony.init(
        tmp_path / "kr", 2, [Custody("a"), Custody("b")], DirectorySink(tmp_path / "s")
    )
    kr = made.keyring
    shares = [load_share(Path(w.location).read_bytes()) for w in made.shares]
    with kr.unseal(shares) as ukr:  # a shred killed after its intent: left open
        events.record(ukr.audit_log(), events.Intent("shred", "u1", []))
    log = kr.home.audit_path
    good = log.read_bytes()
    lines = good.splitlines(keepends=True)
    first = _json.loads(lines[0])
    first["data"]["threshold"] = 1  # an edit, re-encoded canonically
    edited = _json.dumps(first, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    log.write_bytes(edited + b"".join(lines[1:]))
    with Quorum(kr, shares).unseal():
        pass
    assert log.read_bytes() == edited + b"".join(lines[1:])
    log.write_bytes(good)
    with Quorum(kr, shares).unseal():
        pass
    assert [e.event for e in kr.audit_log().entries()][-2:] == ["intent", "observed"]
