"""Store URLs through the CLI (issue 11): ``init --store`` records it, ``--store`` overrides.

Runs the README walkthrough's steps against the throwaway PostgreSQL (tests/support/pg_fixture.py).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from ceremony_helpers import error_lines, fast_kdf_fixture, run  # noqa: F401 (fixtures)

from keysplit import Keyring, Share, load_share

NAMES = ("alice", "bob", "carol")


def _init(tmp_path: Path, *store: str) -> tuple[Path, Path]:
    vault, shares = tmp_path / "vault", tmp_path / "shares"
    custodians = [a for n in NAMES for a in ("-c", n)]
    r = run(
        ["init", vault, "-k", "2", *custodians, "--plain-shares", "--shares-dir", shares, *store]
    )
    assert r.exit_code == 0, r.output
    return vault, shares


def _quorum(shares: Path, *names: str) -> list[str]:
    return [a for n in names for a in ("--share", str(shares / f"{n}.g1.kss"))]


def test_walkthrough_against_postgresql(pg_server: object, tmp_path: Path) -> None:
    url = f"{pg_server.url}&schema=cli_{uuid.uuid4().hex[:12]}"  # type: ignore[attr-defined]
    vault, shares = _init(tmp_path, "--store", url)
    kr = Keyring.open(vault)
    assert kr.store_url == url and "password" not in (vault / "store.json").read_text()
    assert not list(vault.glob("*.sqlite*"))  # nothing went to the embedded default
    r = run(["unseal", vault, *_quorum(shares, "alice", "carol")])
    assert r.exit_code == 0, r.output
    # data keys live in PostgreSQL
    qs = [
        Share.parse((shares / f"{n}.g1.kss").read_text().split("\n")[2]) for n in ("alice", "bob")
    ]
    with kr.unseal(qs) as ukr:
        ukr.encrypt_many(["u1", "u2"], [b"one", b"two"])
    src, sealed, out = tmp_path / "report.txt", tmp_path / "report.ks", tmp_path / "report.out"
    src.write_bytes(b"numbers\n" * 1000)
    assert run(["encrypt", vault, src, sealed]).exit_code == 0
    r = run(["decrypt", vault, sealed, out, *_quorum(shares, "bob", "carol")])
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == src.read_bytes()
    r = run(["shred", vault, "u1", "--yes", *_quorum(shares, "alice", "bob")])
    assert r.exit_code == 0 and "shredded" in r.stderr
    doc = json.loads(run(["status", vault, "--json"]).stdout)
    assert doc["store_url"] == url and doc["data_keys"] == 1
    # --store overrides the recorded URL: another schema is not this keyring's store
    other = f"{pg_server.url}&schema=cli_{uuid.uuid4().hex[:12]}"  # type: ignore[attr-defined]
    r = run(["status", vault, "--json", "--store", other])
    assert r.exit_code == 1 and error_lines(r)
    doc = json.loads(run(["status", vault, "--json", "--store", url]).stdout)
    assert doc["data_keys"] == 1


def test_store_override_and_bad_urls(tmp_path: Path) -> None:
    r = run(["init", tmp_path / "x", "-k", "2", "-c", "a", "-c", "b", "--plain-shares",
             "--store", "postgresql://ks:hunter2@db/ks"])  # fmt: skip
    assert r.exit_code == 1 and "hunter2" not in r.output and error_lines(r)
    assert not (tmp_path / "x").exists()
    vault, shares = _init(tmp_path, "--store", "sqlite:elsewhere.sqlite")
    assert (vault / "elsewhere.sqlite").exists() and not (vault / "keys.sqlite").exists()
    assert json.loads(run(["status", vault, "--json"]).stdout)["store_url"] == (
        "sqlite:elsewhere.sqlite"
    )
    r = run(["status", vault, "--json", "--store", "mysql://x"])
    assert r.exit_code == 1 and error_lines(r)
    r = run(
        ["unseal", vault, "--store", "sqlite:elsewhere.sqlite", *_quorum(shares, "alice", "bob")]
    )
    assert r.exit_code == 0, r.output


def test_a_store_outage_mid_command_prints_one_error_line(tmp_path: Path) -> None:
    """With the PostgreSQL store down mid-command, psycopg_pool's reconnect warnings (and a
    lease's failed renewals) went through Python's last-resort log handler: raw lines such
    as `error connecting in 'keysplit-...': connection is bad: ...` beside the CLI's one
    `error:` line (red team, 'found, not fixed'). Real processes: a server halted while a
    decrypt waits on its stdin, unsealed."""
    import os
    import subprocess
    import threading
    import time

    from pg_fixture import own_postgres
    from service_helpers import KEYSPLIT, cli, share_file

    with own_postgres() as server:
        url = f"{server.url}&connect_timeout=1&schema=outage"
        r = cli("init", "vault", "-k", "2", "-c", "a", "-c", "b", "--plain-shares", "--store", url,
                cwd=tmp_path)  # fmt: skip
        assert r.returncode == 0, r.stderr
        sh = tmp_path / "vault-shares"
        quorum = ["--share", str(share_file(sh, "a")), "--share", str(share_file(sh, "b"))]
        env = dict(os.environ, KEYSPLIT_POLL="0.2")
        env.pop("KEYSPLIT_LOG", None)
        p = subprocess.Popen(
            [KEYSPLIT, "decrypt", "vault", "-", "out", *quorum],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(p.stderr or []), daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # unsealed: its lease is in the store
                doc = json.loads(cli("status", "vault", "--json", cwd=tmp_path).stdout)
                if doc["leases"]:
                    break
                time.sleep(0.2)
            assert doc["leases"], lines
            server.halt()
            time.sleep(2.0)  # ten polls: the pool reconnects, the lease fails to renew
            assert p.stdin is not None
            p.stdin.close()  # then the command fails on its (empty) input
            p.wait(timeout=60)
            reader.join(10)
        finally:
            p.kill()
            p.wait()
        errors = [ln for ln in lines if not ln.lstrip().startswith("[")]  # the quorum's lines
        assert errors == ["error: empty input: not a keysplit stream\n"], lines
        assert p.returncode == 1


def test_a_shred_whose_erase_is_unconfirmed_says_so(tmp_path: Path) -> None:
    """While another process read an older snapshot of the SQLite store, `keysplit shred`
    printed only "shredded the data key": the store's warning that the wrapped key's old
    page was still in the WAL went to the CLI's dropped library log (SECURITY.md promises
    the warning). Real processes: the installed command and a reader pinning a snapshot."""
    import os
    import subprocess

    from service_helpers import KEYSPLIT
    from sqlite_reader import start_reader

    vault, shares = _init(tmp_path)
    kr = Keyring.open(vault)
    quorum = [load_share((shares / f"{n}.g1.kss").read_bytes()) for n in ("alice", "bob")]
    with kr.unseal(quorum) as ukr:
        ukr.encrypt(b"x", subject="victim")
    reader = start_reader(vault / "keys.sqlite")
    env = dict(os.environ)
    env.pop("KEYSPLIT_LOG", None)
    try:
        assert reader.stdout is not None and reader.stdout.readline() == "reading\n"
        r = subprocess.run(
            [KEYSPLIT, "shred", str(vault), "victim", "--yes", *_quorum(shares, "alice", "bob")],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    finally:
        reader.communicate("done\n", timeout=30)
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning: key store")]
    assert warnings and "still in the WAL" in warnings[0], r.stderr
    assert "victim" not in "".join(warnings) and "log:" not in r.stderr


def test_a_store_the_role_may_not_use_is_one_error_line_with_the_fix(
    pg_server: object, tmp_path: Path
) -> None:
    """``init --store`` with a role that may not create the schema, or on a read-only
    server: one ``error:`` line naming the store (host and database), a ``hint:`` with the
    fix, exit 1, no traceback. The read-only one waited out the connect bound and said
    the server was unreachable; the other named no store and gave no hint."""
    import psycopg

    for name, setting, hint in (
        ("weak", "", "grant"),
        ("ro", "default_transaction_read_only = on", "primary"),
    ):
        role = f"{name}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(pg_server.url, autocommit=True) as conn:  # type: ignore[attr-defined]
            conn.execute(f"CREATE ROLE {role} LOGIN")
            if setting:
                conn.execute(f"ALTER ROLE {role} SET {setting}")
        url = f"{pg_server.url}&schema=cli_{uuid.uuid4().hex[:12]}"  # type: ignore[attr-defined]
        r = run(
            ["init", tmp_path / name, "-k", "2", "-c", "alice", "-c", "bob", "--plain-shares",
             "--shares-dir", tmp_path / f"{name}-shares", "--store",
             url.replace("user=keysplit", f"user={role}")]
        )  # fmt: skip
        assert r.exit_code == 1, r.output
        lines = error_lines(r)
        assert len(lines) == 1 and "database keysplit" in lines[0], r.stderr
        assert "unreachable" not in lines[0] and "Traceback" not in r.stderr
        assert any(ln.startswith("hint:") and hint in ln for ln in r.stderr.splitlines())


@pytest.mark.parametrize(
    ("setting", "refusal", "hint"),
    [
        ("", "role {role!r} lacks INSERT, UPDATE on meta; INSERT, UPDATE, DELETE on data_keys",
         "GRANT"),
        ("default_transaction_read_only = on", "default_transaction_read_only = on", "primary"),
    ],
    ids=["select only", "read-only transactions"],
)  # fmt: skip
def test_a_role_that_may_only_read_shows_status_and_is_refused_a_shred_at_the_open(
    pg_server: object, tmp_path: Path, setting: str, refusal: str, hint: str
) -> None:
    """What the CLI does with a PostgreSQL role that may only read: ``status`` (public data,
    the audit chain) works; a command that writes (``shred``) is one ``error:`` line, at
    the store's open, naming the missing privileges (the GRANT as its hint) or the setting
    that makes every transaction read-only. Before, a role granted SELECT only opened and
    the first write failed "permission denied for table ..."; and ``status`` on a role
    with ``default_transaction_read_only = on`` (a standby's connections are read-only
    alike) failed "the server accepts no writes" (stop 40, found): ``status`` only reads."""
    import psycopg

    url = f"{pg_server.url}&schema=cli_{uuid.uuid4().hex[:12]}"  # type: ignore[attr-defined]
    vault, shares = _init(tmp_path, "--store", url)
    schema = url.rsplit("schema=", 1)[1]
    role = f"reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.url, autocommit=True) as conn:  # type: ignore[attr-defined]
        conn.execute(f"CREATE ROLE {role} LOGIN")
        if setting:
            conn.execute(f"ALTER ROLE {role} SET {setting}")
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")
    reader = url.replace("user=keysplit", f"user={role}")
    r = run(["status", vault, "--json", "--store", reader])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["audit"]["chain_ok"] is True
    r = run(["shred", vault, "u1", "--yes", "--store", reader, *_quorum(shares, "alice", "bob")])
    assert r.exit_code == 1, r.output
    lines = error_lines(r)
    assert len(lines) == 1 and refusal.format(role=role) in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert any(ln.startswith("hint:") and hint in ln for ln in r.stderr.splitlines())
