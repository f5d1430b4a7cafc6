"""``keysplit demo``: the whole story on the embedded SQLite store, in a temporary directory.

Every claim the demo prints is checked as it runs; if any turns out false the demo says
so and exits 1, so ``make demo`` doubles as a smoke test of the whole stack. It uses only
the public library API: every ceremony is the same :mod:`keysplit.ceremony` call the CLI
makes (so the audit log holds the same entries), and it shows the equivalent ``keysplit``
command for each step.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from keysplit import (
    AuditError,
    InsufficientSharesError,
    IntegrityError,
    KeysplitError,
    LegalHoldError,
    MixedSharesError,
    ShreddedError,
)

from .. import _common
from .._common import err_console, fail, handle_errors, info
from .._progress import progress_bar

if TYPE_CHECKING:
    from keysplit import Keyring, Share, UnsealedKeyring
    from keysplit.ceremony import Custody, DirectorySink, Quorum

__all__ = ["app"]

app = typer.Typer()

MIN_USERS = 50
"""The story needs user 7 (legal hold), 42 (shredded) and 43 (the name a tampered entry gets)."""
CHECKED = slice(44, 544)
"""The users whose records each "still decrypt" claim checks: past those three, at most 500."""

CUSTODIANS = ("alice", "bob", "carol", "dave", "erin")
KEY_SEALED = ("alice", "bob", "carol")  # X25519 key pairs; dave and erin use passphrases
THRESHOLD = 3

_FIRST = [
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Margaret",
    "Dennis",
    "Barbara",
    "Ken",
    "Radia",
    "Edsger",
    "Frances",
    "Donald",
    "Hedy",
    "Claude",
    "Katherine",
    "Tim",
    "Sophie",
    "Whitfield",
    "Shafi",
    "Ron",
    "Adi",
    "Len",
    "Ralph",
    "Martin",
    "Joan",
    "Niklaus",
]
_LAST = [
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Ritchie",
    "Liskov",
    "Thompson",
    "Perlman",
    "Dijkstra",
    "Allen",
    "Knuth",
    "Lamarr",
    "Shannon",
    "Johnson",
    "Berners-Lee",
    "Wilson",
    "Diffie",
    "Goldwasser",
    "Rivest",
    "Shamir",
    "Adleman",
    "Merkle",
    "Hellman",
    "Daemen",
    "Wirth",
]


class _Story:
    """Steps with timings, and claims that must hold (any false claim fails the demo)."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, float, str]] = []
        self.failed: list[str] = []

    @contextmanager
    def step(self, title: str, command: str | None = None) -> Iterator[list[str]]:
        from rich.markup import escape

        err_console.print(f"\n[bold cyan]== {escape(title)}[/]")
        if command:
            err_console.print(f"[dim]   $ {escape(command)}[/]")
        result: list[str] = []
        t = time.perf_counter()
        yield result
        elapsed = time.perf_counter() - t
        self.steps.append((title, elapsed, result[0] if result else ""))
        err_console.print(f"[dim]   ({elapsed:.2f} s)[/]")

    def claim(self, text: str, ok: bool) -> None:
        from rich.markup import escape

        mark = "[green]✓[/]" if ok else "[bold red]✗ FALSE:[/]"
        err_console.print(f"   {mark} {escape(text)}")
        if not ok:
            self.failed.append(text)


def _raises(exc: type[BaseException], fn: Callable[[], object]) -> bool:
    try:
        fn()
    except exc:
        return True
    return False


def _contacts(rng: random.Random, n: int) -> list[tuple[str, bytes]]:
    """Synthetic users: ``(subject, JSON contact card)``, generated locally."""
    users = []
    for i in range(n):
        card = {
            "name": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
            "phone": f"+1-555-{rng.randrange(10**7):07d}",
            "contacts": [
                {
                    "name": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
                    "phone": f"+44-20-{rng.randrange(10**8):08d}",
                }
                for _ in range(3)
            ],
        }
        users.append((f"user-{i:06d}", json.dumps(card).encode()))
    return users


class _Custodians:
    """The five custodians' share files, identities and passphrases in the demo folder."""

    def __init__(self, root: Path) -> None:
        from keysplit import Identity
        from keysplit.files import atomic_write

        self.dir = root / "custodians"
        self.dir.mkdir()
        self.identities = {n: Identity.generate(n) for n in KEY_SEALED}
        self.passphrases = {
            n: f"correct horse battery staple {n}".encode()
            for n in CUSTODIANS
            if n not in KEY_SEALED
        }
        # Demo only: in a real ceremony each custodian keeps these to themselves.
        for n, ident in self.identities.items():
            atomic_write(self.dir / f"{n}.identity", ident.to_bytes(None))
            atomic_write(self.dir / f"{n}.pub", ident.recipient.to_text().encode(), mode=0o644)
        for n, pw in self.passphrases.items():
            atomic_write(self.dir / f"{n}.passphrase", pw + b"\n")

    def custody(self, names: tuple[str, ...]) -> list[Custody]:
        """How each custodian's new share is sealed (as ``-c NAME=PUBFILE`` / ``-c NAME``)."""
        from keysplit.ceremony import Custody

        return [
            Custody(n, recipient=self.identities[n].recipient)
            if n in self.identities
            else Custody(n, passphrase=self.passphrases[n])
            for n in names
        ]

    def sink(self) -> DirectorySink:
        from keysplit.ceremony import DirectorySink

        return DirectorySink(self.dir)

    def open(self, name: str, path: Path) -> Share:
        from keysplit import load_share

        data = path.read_bytes()
        if name in self.identities:
            return load_share(data, identity=self.identities[name])
        return load_share(data, passphrase=self.passphrases[name])


def _unseal(kr: Keyring, shares: list[Share]) -> UnsealedKeyring:
    return kr.unseal(shares)


def _records_db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE IF NOT EXISTS records (subject TEXT PRIMARY KEY, blob BLOB)")
    return db


@app.command()
@handle_errors
def demo(
    users: int = typer.Option(10_000, "--users", min=MIN_USERS, help="Synthetic users to store."),
    keep: Path | None = typer.Option(
        None, "--keep", help="Run in this (new) directory and keep it, instead of a temp dir."
    ),
) -> None:
    """Run the whole story in a temporary directory: init, store, unseal, rotate, shred, rekey.

    Every claim printed is checked; exit code 1 if any is false.

    Example: keysplit demo

    Exit codes: 0 every claim held; 1 a claim was false (named); 2 usage.
    """
    if keep is not None:
        if keep.exists() and any(keep.iterdir()):
            fail(f"--keep directory {keep} is not empty")
        keep.mkdir(parents=True, exist_ok=True)
        root = keep
    else:
        root = Path(tempfile.mkdtemp(prefix="keysplit-demo-"))
    try:
        gen = _run(root, users)
        if keep is not None:
            c = keep / "custodians"
            # plain echo: rich would wrap the long paths
            typer.echo(f"\nkept in {keep}; try for example:", err=True)
            typer.echo(f"  keysplit status {keep / 'keyring'}", err=True)
            typer.echo(f"  keysplit audit show {keep / 'keyring'}", err=True)
            typer.echo(
                f"  keysplit unseal {keep / 'keyring'} -s {c / f'alice.g{gen}.kss'} "
                f"-i {c / 'alice.identity'} -s {c / f'bob.g{gen}.kss'} -i {c / 'bob.identity'} "
                f"-s {c / f'dave.g{gen}.kss'} --passphrase-file dave={c / 'dave.passphrase'}",
                err=True,
            )
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def _run(root: Path, n_users: int) -> int:
    """The story; returns the generation of the custodians' current share files."""
    from rich.markup import escape
    from rich.table import Table

    from keysplit import Keyring, ceremony, encrypt_file
    from keysplit.ceremony import Quorum

    t_start = time.perf_counter()
    story = _Story()
    rng = random.Random(2026)  # synthetic data only; all keys come from the OS CSPRNG
    kdir = root / "keyring"
    err_console.print(
        "[bold]keysplit demo[/]: a contacts service whose data no single employee can read"
    )
    info(f"   working in {root}")
    cust = _Custodians(root)
    log_head = ""

    with story.step(
        f"1. Key ceremony: a {THRESHOLD}-of-{len(CUSTODIANS)} keyring",
        "keysplit init keyring -k 3 -c alice=alice.pub -c bob=bob.pub -c carol=carol.pub "
        "-c dave -c erin",
    ) as r:
        made = ceremony.init(
            kdir, THRESHOLD, cust.custody(CUSTODIANS), cust.sink(), kdf=_common.KDF
        )
        kr = made.keyring
        for w in made.shares:
            how = "X25519 key" if w.custodian in KEY_SEALED else "passphrase (Argon2id)"
            info(f"   {w.custodian:6} {Path(w.location).name:14} sealed to {how}")
        story.claim(
            "the master key was written nowhere",
            all(not f.name.startswith("master") for f in kdir.iterdir()),
        )
        r.append(f"keyring {kr.keyring_id[:12]}…, 5 sealed share files")

    def quorum(names: tuple[str, ...], gen: int = 1) -> list[Share]:
        return [cust.open(n, cust.dir / f"{n}.g{gen}.kss") for n in names]

    def q(shares: list[Share]) -> Quorum:
        """A quorum of already opened shares for one ceremony (as the CLI's --share files)."""
        return Quorum(kr, shares)

    data = _contacts(rng, n_users)
    db = _records_db(root / "records.sqlite")
    with story.step(f"2. Store {n_users:,} users' contact cards, each under its own data key") as r:
        with _unseal(kr, quorum(("alice", "bob", "dave"))) as ukr:
            t = time.perf_counter()
            blobs = ukr.encrypt_many([s for s, _ in data], [p for _, p in data])
            dt = time.perf_counter() - t
            with db:
                db.executemany(
                    "INSERT INTO records VALUES (?, ?)",
                    zip([s for s, _ in data], blobs, strict=True),
                )
        sample = data[0][1].decode()
        info(f"   e.g. {data[0][0]}: {sample[:70]}…")
        raw = (root / "records.sqlite").read_bytes()
        story.claim(
            "no phone number appears in clear in the records database",
            b"+1-555-" not in raw and b"+44-20-" not in raw,
        )
        r.append(f"{n_users:,} records in {dt:.2f} s ({n_users / dt:,.0f} records/s)")
        info(f"   encrypted {n_users:,} records in {dt:.3f} s")

    def all_records() -> tuple[list[str], list[bytes]]:
        rows = db.execute("SELECT subject, blob FROM records ORDER BY subject").fetchall()
        return [s for s, _ in rows], [b for _, b in rows]

    subjects, blobs = all_records()
    with story.step(
        "3. Two custodians cannot unseal; three can",
        "keysplit unseal keyring --share ... --identity ...",
    ) as r:
        two = quorum(("alice", "erin"))
        story.claim(
            "alice + erin (2 of 3 needed) cannot unseal",
            _raises(InsufficientSharesError, lambda: kr.unseal(two)),
        )
        three = ("bob", "carol", "erin")
        three_shares = quorum(three)
        ceremony.unseal_check(kr, q(three_shares))
        with _unseal(kr, three_shares) as ukr:
            plain = ukr.decrypt_many(subjects, blobs)
        story.claim(
            f"bob + carol + erin unseal and decrypt all {len(plain):,} records",
            plain == [p for _, p in data],
        )
        r.append("2 refused, 3 decrypt everything")

    export = root / "export.csv"
    with story.step(
        "4. Encrypt a file to the keyring's public key, no quorum needed",
        "keysplit encrypt keyring export.csv export.ks --context kind=export",
    ) as r:
        lines = [f"{s},{json.loads(p)['name']},{json.loads(p)['phone']}" for s, p in data]
        export.write_text("subject,name,phone\n" + "\n".join(lines) + "\n")
        public = Keyring.open(kdir)  # its public key is all that encrypting needs
        sealed = root / "export.ks"
        # checked against the fingerprint printed at init (here: the keyring just made)
        encrypt_file(
            public, str(export), str(sealed), expect=public.fingerprint, context={"kind": "export"}
        )
        story.claim(
            "the encrypted file holds no phone number", b"+1-555-" not in sealed.read_bytes()
        )
        acd = quorum(("alice", "carol", "dave"))
        out = root / "export.decrypted.csv"
        ceremony.decrypt_file(kr, q(acd), str(sealed), str(out))
        story.claim("a quorum decrypts it byte for byte", out.read_bytes() == export.read_bytes())
        bad = bytearray(sealed.read_bytes())
        bad[-100] ^= 1
        tampered = root / "export.tampered.ks"
        tampered.write_bytes(bytes(bad))
        out2 = root / "export.tampered.csv"
        story.claim(
            "a flipped bit is rejected and leaves no partial plaintext",
            _raises(
                IntegrityError, lambda: ceremony.decrypt_file(kr, q(acd), str(tampered), str(out2))
            )
            and not out2.exists(),
        )
        r.append(f"{export.stat().st_size:,} bytes round-trip; tampering detected")

    with story.step(
        "5. Rotate the KEK and rewrap every data key",
        "keysplit rotate keyring ...; keysplit rewrap keyring ...",
    ) as r:
        abc = quorum(("alice", "bob", "carol"))
        v = ceremony.rotate(kr, q(abc)).value
        with progress_bar("rewrapping data keys") as bar:
            result = ceremony.rewrap(
                kr, q(abc), batch_size=max(n_users // 20, 1), progress=bar
            ).value
            bar.finish(result.rewrapped)
        ceremony.retire(kr, q(abc), 1)
        with _unseal(kr, abc) as ukr:
            counts = ukr.status().keys_by_version
            story.claim(
                f"all {n_users:,} data keys are now under KEK v{v}, v1 is retired",
                counts == {v: n_users} and ukr.status().kek_versions == (v,),
            )
            story.claim(
                "records still decrypt (they were not re-encrypted)",
                ukr.decrypt_many(subjects[CHECKED], blobs[CHECKED])
                == [p for _, p in data[CHECKED]],
            )
        r.append(f"{result.rewrapped:,} keys rewrapped to v{v}")

    victim, held = subjects[42], subjects[7]
    with story.step(
        f"6. Shred {victim} (right to erasure); {held} is under legal hold",
        f"keysplit shred keyring {victim} ...",
    ) as r:
        bde = quorum(("bob", "dave", "erin"))
        ceremony.hold(kr, q(bde), held, True)
        ceremony.shred(kr, q(bde), victim)
        story.claim(
            f"{held} cannot be shredded while on hold",
            _raises(LegalHoldError, lambda: ceremony.shred(kr, q(bde), held)),
        )
        with _unseal(kr, quorum(("alice", "carol", "erin"))) as ukr:
            story.claim(
                f"{victim}'s record no longer decrypts (ShreddedError, not tampering)",
                _raises(ShreddedError, lambda: ukr.decrypt(blobs[42], subject=victim)),
            )
            others = [i for i in range(min(len(subjects), 1000)) if i != 42]
            got = ukr.decrypt_many([subjects[i] for i in others], [blobs[i] for i in others])
            story.claim(
                "every other user's record still decrypts", got == [data[i][1] for i in others]
            )
        r.append(f"1 user shredded, {n_users - 1:,} intact")

    with story.step(
        "7. Erin leaves: rekey 3-of-4 without her",
        "keysplit rekey keyring -k 3 -c alice=... -c bob=... -c carol=... -c dave",
    ) as r:
        stay = tuple(n for n in CUSTODIANS if n != "erin")
        rekeyed = ceremony.rekey(
            kr,
            q(quorum(("alice", "bob", "erin"))),
            cust.custody(stay),
            cust.sink(),
            threshold=3,
            kdf=_common.KDF,
        )
        erin_old = cust.open("erin", cust.dir / "erin.g1.kss")
        story.claim(
            "erin's old share is refused by the keyring",
            _raises(MixedSharesError, lambda: kr.unsealer().add(erin_old)),
        )
        story.claim(
            "three old shares no longer unseal",
            _raises(KeysplitError, lambda: kr.unseal(quorum(("alice", "bob", "carol")))),
        )
        with _unseal(kr, quorum(("bob", "carol", "dave"), gen=rekeyed.generation)) as ukr:
            story.claim(
                "three new shares unseal, and the data is untouched",
                ukr.decrypt_many(subjects[CHECKED], blobs[CHECKED])
                == [p for _, p in data[CHECKED]],
            )
            mac_report = ukr.audit_log().verify()
        r.append("old shares dead, new 3-of-4 works")

    with story.step(
        "8. Verify the audit trail, then tamper with it", "keysplit audit verify keyring --mac ..."
    ) as r:
        plain_report = Keyring.open(kdir).audit_log().verify()
        log_head = plain_report.head
        story.claim(
            f"{mac_report.entries} entries: hash chain and every MAC verify",
            mac_report.mac_verified and mac_report.entries == plain_report.entries,
        )
        info(f"   head {log_head}")
        path = kdir / "audit.log"
        original = path.read_bytes()
        try:
            path.write_bytes(original.replace(victim.encode(), subjects[43].encode(), 1))
            story.claim(
                f"editing the shred entry ({victim} -> {subjects[43]}) is detected",
                _raises(AuditError, lambda: Keyring.open(kdir).audit_log().verify()),
            )
            entries = original.splitlines(keepends=True)
            path.write_bytes(b"".join(entries[:3] + entries[4:]))
            story.claim(
                "removing an entry is detected",
                _raises(AuditError, lambda: Keyring.open(kdir).audit_log().verify()),
            )
        finally:
            path.write_bytes(original)
        r.append(f"{plain_report.entries} entries, tampering detected")

    db.close()
    table = Table(title="keysplit demo: summary")
    table.add_column("step")
    table.add_column("result")
    table.add_column("time", justify="right")
    for title, elapsed, outcome in story.steps:
        table.add_row(escape(title), escape(outcome), f"{elapsed:.2f} s")
    err_console.print()
    err_console.print(table)
    total = time.perf_counter() - t_start
    if story.failed:
        fail(f"{len(story.failed)} claim(s) did not hold: {'; '.join(story.failed)}")
    err_console.print(f"[bold green]all claims held[/] in {total:.1f} s; audit head {log_head}")
    return rekeyed.generation
