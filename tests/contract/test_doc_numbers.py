"""The defaults and bounds the documents state are the code's (each read from its constant)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from keysplit_cli._common import EXIT_CLOSED_PIPE, EXIT_NO_KEY, EXIT_NOT_ACKNOWLEDGED
from keysplit_cli._opener import PASSPHRASE_TRIES
from keysplit_cli._quorum import _MAX_BAD_TRIES
from paths import REPO

from keysplit import record, stream, trust
from keysplit import share as share_mod
from keysplit.custody import MAX_SHARE_FILE_SIZE
from keysplit.custody.passphrase import Argon2Params
from keysplit.jobs import _cache as job_cache
from keysplit.jobs._isolate import MAX_LINE
from keysplit.jobs._parquet import KEY_BATCH
from keysplit.jobs.records import PART_BYTES, PART_BYTES_MAX, PART_SHARE
from keysplit.keyring import datakeys, fleet
from keysplit.keyring import records as keyring_records
from keysplit.proof import CODE_BITS
from keysplit.record import MAX_PLAINTEXT_BYTES
from keysplit.rng import RESEED_BYTES
from keysplit.service import _wire as wire
from keysplit.service._moved_ledger import moved_check
from keysplit.service.cluster_config import keyed_hold_digest
from keysplit.service.server import Limits, ServeOptions
from keysplit.store import url as store_url
from keysplit.store.base import TOMBSTONE_SIZE
from keysplit.store.sqlite import ERASE_WAIT
from keysplit.trust import default_known_keyrings_path

DOCS = {name: (REPO / name).read_text() for name in ("README.md", "SECURITY.md", "docs/API.md")}


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def grouped(n: int) -> str:
    return f"{n:,}"


LIMITS = Limits()
ORDINAL = {16: "sixteenth", 8: "eighth", 4: "quarter"}


def mib(n: int) -> int:
    return n >> 20


WORDS = dict(enumerate(["zero", "one", "two", "three", "four", "five", "six"]))
KDF = Argon2Params()

HEADERS = f"at most {LIMITS.header_fields} fields of at most {LIMITS.field_size // 1024} KiB"
CONNECTIONS = f"at most {grouped(LIMITS.connections)} connections"

# (document, text that must appear, where the number comes from)
CLAIMS = [
    *[(doc, HEADERS, "Limits.header_fields/field_size") for doc in ("docs/API.md", "SECURITY.md")],
    *[(doc, CONNECTIONS, "Limits.connections") for doc in ("docs/API.md", "SECURITY.md")],
    ("docs/API.md", f"`--idle-timeout` (default {LIMITS.idle:g} s)", "Limits.idle"),
    ("docs/API.md", f"`--io-timeout` (default {LIMITS.io:g} s)", "Limits.io"),
    ("docs/API.md", f"within {LIMITS.handshake:g} s", "Limits.handshake"),
    ("SECURITY.md", f"`--idle-timeout` ({LIMITS.idle:g} s", "Limits.idle"),
    ("SECURITY.md", f"`--io-timeout` ({LIMITS.io:g} s)", "Limits.io"),
    (
        "SECURITY.md",
        f"default t={KDF.time_cost}, {KDF.memory_kib // 1024} MiB, {KDF.lanes} lanes",
        "KDF",
    ),
    ("SECURITY.md", f"default `ttl` {fleet.DEFAULT_LEASE_TTL:g} s", "DEFAULT_LEASE_TTL"),
    ("SECURITY.md", f"default {fleet.DEFAULT_POLL:g} s", "DEFAULT_POLL"),
    ("SECURITY.md", f"default {grouped(fleet.DEFAULT_CACHE_KEYS)}", "DEFAULT_CACHE_KEYS"),
    ("README.md", f"`KEYSPLIT_LEASE_TTL`, default {fleet.DEFAULT_LEASE_TTL:g} s", "ttl"),
    ("README.md", f"also exit {EXIT_NO_KEY} when the subject has no data key", "EXIT_NO_KEY"),
    ("README.md", f"and {EXIT_NOT_ACKNOWLEDGED} when a live holder did not drop it", "EXIT_4"),
    ("README.md", f"{EXIT_CLOSED_PIPE} when the reader of stdout went away", "EXIT_CLOSED_PIPE"),
    ("README.md", f"{WORDS[PASSPHRASE_TRIES]} tries at a terminal", "PASSPHRASE_TRIES"),
    ("README.md", f"or {WORDS[_MAX_BAD_TRIES]} rejections, stops", "_MAX_BAD_TRIES"),
    ("README.md", f"{mib(PART_BYTES)} MiB to {mib(PART_BYTES_MAX)} MiB uncompressed", "PART_BYTES"),
    ("README.md", f"a {ORDINAL[PART_SHARE]} of the smallest worker's memory", "PART_SHARE"),
    ("README.md", f"`KEYSPLIT_POLL`, default {fleet.DEFAULT_POLL:g} s", "DEFAULT_POLL"),
    (
        "README.md",
        f"`KEYSPLIT_CACHE_KEYS`, default {grouped(fleet.DEFAULT_CACHE_KEYS)} keys",
        "cache",
    ),
    (
        "README.md",
        f"`call_timeout=N` (seconds; default {store_url.DEFAULT_CALL_TIMEOUT:g},",
        "DEFAULT_CALL_TIMEOUT",
    ),
    ("SECURITY.md", f"up to {ERASE_WAIT:g} s (`keysplit.store.sqlite.ERASE_WAIT`)", "ERASE_WAIT"),
    (
        "README.md",
        f"at most 2^{(MAX_PLAINTEXT_BYTES + 1).bit_length() - 1} - 1",
        "MAX_PLAINTEXT_BYTES",
    ),
    (
        "SECURITY.md",
        f"read with bounds ({mib(trust.MAX_FILE_BYTES)} MiB,"
        f" {trust.MAX_LINE_CHARS}-character lines, {grouped(trust.MAX_ENTRIES)} entries",
        "trust.MAX_*",
    ),
]


def kib(n: int) -> int:
    return n >> 10


A = Argon2Params
NONCES = keyring_records._POOL_NONCES
# SECURITY.md's bounds on secrets, service and jobs (claims checked at stop 38)
SECURITY_CLAIMS = [
    (
        f"Bounds: at most {A.MAX_MEMORY_KIB >> 20} GiB, {A.MAX_TIME} passes, {A.MAX_LANES}"
        f" lanes and {A.MAX_WORK_KIB >> 20} GiB of passes times memory",
        "Argon2Params.MAX_*",
    ),
    (f"Work above {A.CONFIRM_ABOVE_KIB >> 20} GiB of passes times memory", "CONFIRM_ABOVE_KIB"),
    (f"Share files larger than {kib(MAX_SHARE_FILE_SIZE)} KiB are refused", "MAX_SHARE_FILE"),
    (f"A stream is rekeyed after 2^{RESEED_BYTES.bit_length() - 1} bytes", "RESEED_BYTES"),
    (
        f"drawn ahead in bulk ({kib(NONCES * record.NONCE_SIZE)} KiB, {grouped(NONCES)} nonces",
        "_POOL_NONCES",
    ),
    (f"Cost: {record.COMMIT_SIZE} header bytes per record ({record.OVERHEAD} bytes", "OVERHEAD"),
    (f"`HMAC-SHA256(K, subject)[:{TOMBSTONE_SIZE}]`", "TOMBSTONE_SIZE"),
    (f"A proof-of-possession code is a {CODE_BITS}-bit HMAC", "CODE_BITS"),
    (
        f"in chunks ({kib(stream.MIN_CHUNK_SIZE)} KiB to {mib(stream.MAX_CHUNK_SIZE)} MiB)",
        "stream chunk sizes",
    ),
    (f"`--unseal-timeout` ({ServeOptions.unseal_timeout / 60:g} min)", "unseal_timeout"),
    (f"at most {kib(LIMITS.public_body)} KiB on the endpoints that need no token", "public"),
    (f"the {mib(LIMITS.token_body)} MiB batch maximum", "Limits.token_body"),
    (f"longer than {LIMITS.handshake:g} s for a TLS handshake", "Limits.handshake"),
    (
        f"reads at most {mib(wire.RESPONSE_BASE)} MiB + the request's size"
        f" + {kib(wire.RESPONSE_PER_ITEM)} KiB per item",
        "response_limit",
    ),
    (f"each bounded ({mib(MAX_LINE)} MiB)", "jobs MAX_LINE"),
    (f"in batches of {grouped(KEY_BATCH)} subjects", "KEY_BATCH"),
    (
        f"at most 2^{job_cache.MAX_KEYS.bit_length() - 1} keys; the caches of the"
        f" {WORDS[job_cache.JOBS_KEPT]} most recent jobs",
        "jobs cache",
    ),
    (
        f"for a key for {job_cache.IDLE:g} s (`IDLE`: the job ended, failed,"
        f" or its driver died or stalled), and at the latest {job_cache.MAX_AGE / 60:g} min",
        "jobs cache IDLE, MAX_AGE",
    ),
    (
        f"the same time bounds (a job's kept keys are emptied once it has not asked for one"
        f" for {job_cache.IDLE:g} s, and at the latest {job_cache.MAX_AGE / 60:g} min after the"
        " first was kept",
        "serve_keys IDLE, MAX_AGE",
    ),
]
SECURITY_CLAIMS += [
    (f"retries, up to {datakeys._CREATE_TRIES} attempts in all", "datakeys._CREATE_TRIES"),
    (f"`keysplit shred` of a subject with no key exits {EXIT_NO_KEY}", "EXIT_NO_KEY"),
    (f"names those that have not (exit {EXIT_NOT_ACKNOWLEDGED})", "EXIT_NOT_ACKNOWLEDGED"),
]
_FPR = trust.keyring_fingerprint("00" * 16, bytes(32))
_MOVED = moved_check("00" * 16, "s", bytes(16))
_HELD = bytes.fromhex(keyed_hold_digest(bytes(16)))
SECURITY_CLAIMS += [
    (f"A `Share` carries a random {share_mod.SET_ID_LEN}-byte set id", "SET_ID_LEN"),
    (f"(false accept 2^-{8 * share_mod.TAG_LEN})", "TAG_LEN"),
    (f"public key ({len(_FPR)} characters)", "keyring_fingerprint"),
    (f"and the subject, {len(_MOVED)} bytes; no subject", "moved_check"),
    (f"as `held_keyed`: {len(_HELD)} bytes of HMAC-SHA256", "keyed_hold_digest"),
]
CLAIMS += [("SECURITY.md", text, source) for text, source in SECURITY_CLAIMS]


@pytest.mark.parametrize(("doc", "text", "source"), CLAIMS, ids=[c[2] + "@" + c[0] for c in CLAIMS])
def test_documented_default_matches_the_code(doc: str, text: str, source: str) -> None:
    assert flat(text) in flat(DOCS[doc]), f"{doc} should say {text!r} ({source})"


def test_security_md_does_not_call_connections_unbounded() -> None:
    assert "bounded only by the process's file-descriptor limit" not in flat(DOCS["SECURITY.md"])


def test_known_keyrings_default_path_is_the_documented_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    text = flat(DOCS["README.md"])
    assert "(`$XDG_CONFIG_HOME/keysplit/known_keyrings`, by default under `~/.config`" in text
    monkeypatch.delenv("KEYSPLIT_KNOWN_KEYRINGS")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_known_keyrings_path() == tmp_path / "keysplit" / "known_keyrings"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert default_known_keyrings_path() == Path.home() / ".config" / "keysplit" / "known_keyrings"


def test_dataset_jobs_say_their_token_needs_datakey() -> None:
    """A token allowed encrypt,decrypt is refused ('not allowed to datakey') by a dataset job."""
    section = flat(DOCS["README.md"].split("## Bulk jobs on a Dask cluster", 1)[1])
    assert "needs a token allowed `datakey`" in section
    assert "--allow datakey" in section


def test_readme_states_the_postgres_connect_bound() -> None:
    pg_store = pytest.importorskip("keysplit.store.postgres")  # the postgres extra
    text = f"`connect_timeout=N` (seconds; default {pg_store.DEFAULT_TIMEOUT:g})"
    assert flat(text) in flat(DOCS["README.md"])


def test_security_md_names_the_commands_that_take_allow_expensive_kdf() -> None:
    """The quorum commands have no --allow-expensive-kdf (their refusal's hint does not offer
    it): SECURITY.md lists exactly the commands that take it."""
    import typer.main
    from keysplit_cli.app import app

    def walk(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[str]:
        ctx = cmd.context_class(cmd)
        if hasattr(cmd, "list_commands"):
            for name in cmd.list_commands(ctx):
                yield from walk(cmd.get_command(ctx, name), (*path, name))
        elif any("--allow-expensive-kdf" in p.opts for p in cmd.params):
            yield " ".join(path)

    text = flat(DOCS["SECURITY.md"])
    (listed,) = re.findall(
        r"`--allow-expensive-kdf` is given to a command that takes it \(([^)]*)\)", text
    )
    assert sorted(re.findall(r"`keysplit ([a-z -]+)`", listed)) == sorted(
        walk(typer.main.get_command(app))
    )
