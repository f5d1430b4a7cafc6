"""The key service in process: wire frames, error mapping, the token list, remote-unseal
state and request handling (statuses, per-item errors), without sockets."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from service_unseal import unseal_service

import keysplit
from keysplit import errors, record
from keysplit.errors import (
    DuplicateShareError,
    FormatError,
    IntegrityError,
    KeysplitError,
    MixedSharesError,
    PermissionDenied,
    RecoveryError,
    ShareError,
)
from keysplit.service import RecordKeyring
from keysplit.service import _wire as wire
from keysplit.service.core import Admission, KeyService, Request
from keysplit.service.tokens import OPERATIONS, TokenList, TokenPolicy, hash_token, mac_key
from keysplit.service.unseal import RemoteUnseal, StaleNonceError, seal_share_for

# -- wire frames ---------------------------------------------------------------------------

_items = st.lists(st.one_of(st.none(), st.binary(max_size=64)), max_size=20)


@given(_items, st.data())
def test_frame_roundtrip(items: list[bytes | None], data: st.DataObject) -> None:
    subjects = data.draw(
        st.lists(st.text(min_size=1, max_size=8), min_size=len(items), max_size=len(items))
    )
    header = {"context": {"t": "x"}, "errors": {}}
    frame = wire.encode_frame(header, items, subjects)
    h, s, out = wire.decode_frame(frame)
    assert h == header and out == items and s == subjects
    assert wire.decode_frame(wire.encode_frame({}, items))[1] == [""] * len(items)
    # every truncation and every extension is refused, never misparsed
    for cut in {0, 3, 8, len(frame) // 2, len(frame) - 1}:
        if cut < len(frame):
            with pytest.raises(FormatError):
                wire.decode_frame(frame[:cut])
    with pytest.raises(FormatError):
        wire.decode_frame(frame + b"x")


def test_frame_rejects_bad_magic_and_huge_counts() -> None:
    frame = wire.encode_frame({}, [b"a"])
    with pytest.raises(FormatError, match="magic"):
        wire.decode_frame(b"XSB1" + frame[4:])
    hlen = int.from_bytes(frame[4:8], "big")
    huge = frame[: 8 + hlen] + (10**6).to_bytes(4, "big") + frame[12 + hlen :]
    with pytest.raises(FormatError, match="at most"):
        wire.decode_frame(huge)


@pytest.mark.parametrize(
    "cls", [getattr(errors, n) for n in errors.__all__ if n not in ("IntegrityError",)]
)
def test_errors_map_to_the_same_class(cls: type[KeysplitError]) -> None:
    try:
        exc = cls("boom", hint="try this")
    except TypeError:
        exc = cls("boom")
    back = wire.error_from_dict(wire.error_dict(exc))
    assert type(back) is cls and "boom" in str(back)


def test_integrity_error_stays_detail_free_and_unknown_types_are_base() -> None:
    back = wire.error_from_dict(wire.error_dict(IntegrityError()))
    assert type(back) is IntegrityError and str(back) == "authentication failed"
    assert type(wire.error_from_dict({"type": "os.system", "message": "x"})) is KeysplitError
    assert type(wire.error_from_dict({"type": "StaleNonceError", "message": "x"})) is (
        StaleNonceError
    )
    assert type(wire.error_from_body(b"<html>", 502)) is KeysplitError


# -- the token list ------------------------------------------------------------------------


@pytest.fixture
def ring(tmp_path: Path) -> tuple[keysplit.Keyring, dict[str, keysplit.Share]]:
    return keysplit.Keyring.create(tmp_path / "kr", 2, ["a", "b", "c"])


def _key(ring: tuple[keysplit.Keyring, dict[str, keysplit.Share]]) -> bytes:
    kr, shares = ring
    with kr.unseal([shares["a"], shares["b"]]) as u:
        return mac_key(u.audit_key(), kr.keyring_id)


def test_token_list_mac_detects_every_edit(ring: tuple[keysplit.Keyring, dict]) -> None:
    kr, _ = ring
    key = _key(ring)
    tl = TokenList.read(kr.path, kr.keyring_id)
    token, pol = tl.create(key, name="app", allow=["encrypt"], subject_prefix="c/")
    assert len(base64.urlsafe_b64decode(token[5:] + "=")) == 32
    assert token not in tl.path.read_text() and pol.sha256 == hash_token(token)
    fresh = TokenList.read(kr.path, kr.keyring_id)
    fresh.verify(key)
    assert set(fresh.active()) == {hash_token(token)}
    original = tl.path.read_text()
    doc = json.loads(original)
    for edit in (
        lambda d: d["tokens"][0].update(subject_prefix=""),
        lambda d: d["tokens"][0].update(allow=list(OPERATIONS)),
        lambda d: d["tokens"][0].update(sha256="0" * 64),
        lambda d: d.update(revoked=["00" * 8]),
        lambda d: d.update(serial=d["serial"] + 1),
    ):
        d = json.loads(original)
        edit(d)
        tl.path.write_text(json.dumps(d))
        with pytest.raises(IntegrityError):
            TokenList.read(kr.path, kr.keyring_id).verify(key)
    tl.path.write_text(original)
    other_key = mac_key(b"\x01" * 32, kr.keyring_id)
    with pytest.raises(IntegrityError):
        TokenList.read(kr.path, kr.keyring_id).verify(other_key)
    with pytest.raises(IntegrityError):
        TokenList.read(kr.path, "ab" * 16)
    assert doc["tokens"][0]["name"] == "app"


def test_revoke_needs_no_key_and_is_folded_in(ring: tuple[keysplit.Keyring, dict]) -> None:
    kr, _ = ring
    key = _key(ring)
    tl = TokenList.read(kr.path, kr.keyring_id)
    t1, _ = tl.create(key, name="one", allow=["encrypt"], subject_prefix="")
    t2, _ = tl.create(key, name="two", allow=["decrypt"], subject_prefix="")
    with pytest.raises(KeysplitError, match="exists"):
        tl.create(key, name="one", allow=["encrypt"], subject_prefix="")
    with pytest.raises(ValueError, match="unknown operation"):
        tl.create(key, name="x", allow=["sudo"], subject_prefix="")
    TokenList.read(kr.path, kr.keyring_id).revoke("one")  # no key involved
    after = TokenList.read(kr.path, kr.keyring_id)
    assert set(after.active()) == {hash_token(t2)}
    assert after.fold_revocations(key) == [after.find("one").id]
    (kr.path / "service-tokens.revoked").unlink()  # deleting the line no longer resurrects
    final = TokenList.read(kr.path, kr.keyring_id)
    final.verify(key)
    assert set(final.active()) == {hash_token(t2)} and t1


# -- remote unseal state -------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _send(ru: RemoteUnseal, share: keysplit.Share, kid: str) -> tuple[dict, object]:
    o = ru.offer()
    sealed = seal_share_for(
        share,
        public_key=bytes.fromhex(o["public_key"]),
        keyring_id=kid,
        nonce=bytes.fromhex(o["nonce"]),
    )
    return ru.submit(bytes.fromhex(o["nonce"]), sealed)


def test_remote_unseal_names_bad_shares_and_expires(
    ring: tuple[keysplit.Keyring, dict], tmp_path: Path
) -> None:
    kr, shares = ring
    _, foreign = keysplit.Keyring.create(tmp_path / "other", 2, ["x", "y"])
    clock = _Clock()
    ru = RemoteUnseal(kr, timeout=60, clock=clock)
    with pytest.raises(MixedSharesError, match="does not belong"):
        _send(ru, foreign["x"], kr.keyring_id)
    assert ru.progress()["have"] == 0
    assert _send(ru, shares["a"], kr.keyring_id)[0]["have"] == 1
    with pytest.raises(DuplicateShareError, match=r"share 1 \(a\)"):
        _send(ru, shares["a"], kr.keyring_id)
    o = ru.offer()
    # sealed with the wrong info (another keyring id): does not open, not counted
    bad = seal_share_for(
        shares["b"],
        public_key=bytes.fromhex(o["public_key"]),
        keyring_id="00" * 16,
        nonce=bytes.fromhex(o["nonce"]),
    )
    with pytest.raises(ShareError, match="does not open"):
        ru.submit(bytes.fromhex(o["nonce"]), bad)
    with pytest.raises(ShareError):
        ru.submit(bytes.fromhex(o["nonce"]), b"\x00" * 80)
    assert ru.progress()["have"] == 1
    clock.t = 61.0  # partial progress expires; a share for the old attempt is stale
    assert ru.progress()["have"] == 0
    good = seal_share_for(
        shares["b"],
        public_key=bytes.fromhex(o["public_key"]),
        keyring_id=kr.keyring_id,
        nonce=bytes.fromhex(o["nonce"]),
    )
    with pytest.raises(StaleNonceError):
        ru.submit(bytes.fromhex(o["nonce"]), good)
    _send(ru, shares["c"], kr.keyring_id)
    progress, opened = _send(ru, shares["b"], kr.keyring_id)
    assert progress["custodians"] == ["c", "b"] and opened is not None
    opened.close()  # type: ignore[attr-defined]


def test_remote_unseal_progress_has_expires_in_before_an_attempt_starts(
    ring: tuple[keysplit.Keyring, dict],
) -> None:
    """docs/API.md gives ``progress`` an ``expires_in``; before the first ``GET
    /v1/unseal`` started an attempt it had no such key at all (a client reading
    ``progress["expires_in"]`` from ``/v1/status`` got a KeyError). Now it is null until
    an attempt runs, then its seconds left."""
    kr, _ = ring
    clock = _Clock()
    ru = RemoteUnseal(kr, timeout=60, clock=clock)
    before = ru.progress()
    assert set(before) == {"have", "need", "custodians", "expires_in"}
    assert before["expires_in"] is None
    ru.offer()
    clock.t = 10.0
    assert ru.progress()["expires_in"] == 50.0


def test_remote_unseal_forged_share_discards_progress(
    ring: tuple[keysplit.Keyring, dict],
) -> None:
    kr, shares = ring
    b = shares["b"]
    forged = keysplit.Share.from_bytes(b.to_bytes())
    payload = bytes(x ^ 1 for x in forged.payload) if hasattr(forged, "payload") else None
    if payload is None:
        pytest.skip("Share has no payload attribute")
    import dataclasses

    try:
        forged = dataclasses.replace(forged, payload=payload)
    except (TypeError, ValueError, KeysplitError):
        pytest.skip("Share refuses a hand-made payload")
    ru = RemoteUnseal(kr)
    _send(ru, shares["a"], kr.keyring_id)
    with pytest.raises(RecoveryError, match="discarded"):
        _send(ru, forged, kr.keyring_id)
    assert ru.progress()["have"] == 0


# -- request handling ----------------------------------------------------------------------


@pytest.fixture
def service(ring: tuple[keysplit.Keyring, dict]) -> tuple[KeyService, dict[str, str]]:
    kr, shares = ring
    key = _key(ring)
    tl = TokenList.read(kr.path, kr.keyring_id)
    tokens = {
        "all": tl.create(key, name="all", allow=list(OPERATIONS), subject_prefix="")[0],
        "enc": tl.create(key, name="enc", allow=["encrypt"], subject_prefix="c/")[0],
    }
    svc = KeyService(kr.path, log=lambda m: None)
    unseal_service(svc, kr.keyring_id, [shares["a"], shares["b"]])
    return svc, tokens


def _req(path: str, token: str | None, body: bytes = b"", method: str = "POST") -> Request:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return Request(method, path, headers, body)


def test_statuses_and_per_item_errors(service: tuple[KeyService, dict[str, str]]) -> None:
    svc, tokens = service
    subjects = ["u/1", "u/2", "u/3"]
    frame = wire.encode_frame({"context": {"t": "m"}}, [b"a", b"b", b"c"], subjects)
    r = svc.handle(_req("/v1/encrypt", tokens["all"], frame))
    assert r.status == 200
    _, _, recs = wire.decode_frame(r.body)
    tampered = list(recs)
    tampered[1] = tampered[1][:-1] + bytes([tampered[1][-1] ^ 1])  # type: ignore[index]
    r = svc.handle(
        _req(
            "/v1/decrypt",
            tokens["all"],
            wire.encode_frame({"context": {"t": "m"}}, tampered, subjects),
        )
    )
    head, _, out = wire.decode_frame(r.body)
    assert out == [b"a", None, b"c"] and head["errors"]["1"]["type"] == "IntegrityError"
    assert svc.handle(_req("/v1/encrypt", None, frame)).status == 401
    assert svc.handle(_req("/v1/encrypt", "kst1_" + "x" * 43, frame)).status == 401
    assert svc.handle(_req("/v1/encrypt", tokens["enc"], frame)).status == 403  # prefix c/
    assert svc.handle(_req("/v1/rotate", tokens["enc"], b"{}")).status == 403
    assert svc.handle(_req("/v1/encrypt", tokens["all"], b"junk")).status == 400
    assert svc.handle(_req("/v1/nope", None)).status == 404
    assert svc.handle(_req("/v1/encrypt", None, method="GET")).status == 405
    err = json.loads(svc.handle(_req("/v1/encrypt", None, frame)).body)["error"]
    assert err["type"] == "PermissionDenied"
    svc.seal("test")
    r = svc.handle(_req("/v1/encrypt", tokens["all"], frame))
    assert r.status == 503 and json.loads(r.body)["error"]["type"] == "SealedError"
    assert json.loads(svc.handle(_req("/v1/status", None, method="GET")).body)["sealed"]


@pytest.mark.parametrize("path", ["/v1/shred", "/v1/hold"])
def test_a_json_subject_list_names_its_wrong_item(
    service: tuple[KeyService, dict[str, str]], path: str
) -> None:
    """A shred or hold of many subjects says which item is not a string, and that a subject
    cannot be null; nothing is shredded or held."""
    svc, tokens = service
    for subjects, said in (
        (["u/1", None, "u/3"], "'subjects'[1] must be a string, not null: subjects cannot be null"),
        (["u/1", "u/2", 7], "'subjects'[2] must be a string, not int"),
        ("u/1", "'subjects' must be a list of strings"),
    ):
        body = json.dumps({"subjects": subjects, "hold": True}).encode()
        r = svc.handle(_req(path, tokens["all"], body))
        err = json.loads(r.body)["error"]
        assert (r.status, err["type"], err["message"]) == (400, "FormatError", said)


def test_datakey_matches_the_keyring(
    service: tuple[KeyService, dict[str, str]], ring: tuple[keysplit.Keyring, dict]
) -> None:
    """Raw keys from /v1/datakey open records the in-process keyring sealed (independent
    path: the envelope module with the served key, not the service's own encrypt)."""
    svc, tokens = service
    kr, shares = ring
    with kr.unseal([shares["b"], shares["c"]]) as u:
        rec = u.encrypt(b"secret", subject="s/1", context={"k": "v"})
    subjects = ["s/1", "s/none", "", "s/1"]
    frame = wire.encode_frame({"create": False}, [None] * 4, subjects)
    r = svc.handle(_req("/v1/datakey", tokens["all"], frame))
    head, _, keys = wire.decode_frame(r.body)
    assert keys[0] is not None and keys[0] == keys[3] and len(keys[0]) == 16
    assert keys[1] is None and head["errors"]["1"]["type"] == "NoDataKeyError"
    assert keys[2] is None and "2" in head["errors"]  # an invalid subject, named
    dk = record.DataKey(keys[0])
    assert record.decrypt(dk, rec, subject="s/1", context={"k": "v"}) == b"secret"
    with pytest.raises(PermissionDenied):
        raise wire.error_from_dict(
            json.loads(
                svc.handle(
                    _req("/v1/datakey", tokens["enc"], wire.encode_frame({}, [None], ["c/1"]))
                ).body
            )["error"]
        )


@pytest.mark.usefixtures("harness_without_collections")  # rows, not timings (conftest)
def test_bench_service_tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark runs and returns valid rows (no timing is asserted)."""
    from benchmarks import bench_service, harness

    monkeypatch.setattr(bench_service, "_sizes", lambda quick: (2,))
    monkeypatch.setattr(
        bench_service, "_calls", lambda fns, n, quick: [[_timed(fn)] * 3 for fn in fns]
    )
    monkeypatch.setattr(bench_service, "_scale_params", lambda quick: (0.05, 1))
    rows = harness.validate_rows(bench_service.run(quick=True))
    assert {r["benchmark"] for r in rows} == {
        "service-datakey",
        "service-encrypt-1KiB",
        "service-decrypt-1KiB",
        "service-clients-encrypt-1KiB",
    }
    floors = {r["benchmark"] for r in rows if r["impl"] == bench_service.FLOOR}
    assert floors == {"service-encrypt-1KiB", "service-decrypt-1KiB"}


def _timed(fn: object) -> float:
    import time

    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0 + 1e-9


def test_precheck_refuses_from_headers_alone(service: tuple[KeyService, dict[str, str]]) -> None:
    svc, tokens = service
    assert svc.precheck(_req("/v1/encrypt", None)).status == 401  # type: ignore[union-attr]
    assert svc.precheck(_req("/v1/encrypt", "kst1_" + "y" * 43)).status == 401  # type: ignore[union-attr]
    # the token checked (its policy: the request's one check); its route and subjects with
    # the body
    assert isinstance(svc.precheck(_req("/v1/encrypt", tokens["enc"])), Admission)
    assert svc.precheck(_req("/v1/status", None, method="GET")) is None
    assert svc.precheck(Request("POST", "/v1/seal", {}, b"", local=True)) is None
    assert svc.precheck(Request("POST", "/v1/seal", {}, b"", local=False)).status == 401  # type: ignore[union-attr]
    svc.seal("test")
    assert svc.precheck(_req("/v1/decrypt", tokens["enc"])).status == 503  # type: ignore[union-attr]


def _use(k: RecordKeyring) -> bytes:
    """Typed against the Protocol: mypy checks both implementations fit it."""
    return k.decrypt(k.encrypt(b"p", subject="s"), subject="s")


def test_unsealed_keyring_satisfies_the_protocol(ring: tuple[keysplit.Keyring, dict]) -> None:
    kr, shares = ring
    with kr.unseal([shares["a"], shares["c"]]) as u:
        assert isinstance(u, RecordKeyring) and _use(u) == b"p"
    assert isinstance(keysplit.Client("unix:/nonexistent"), RecordKeyring)
    with pytest.raises(keysplit.service.ServiceError, match="cannot reach"):
        _use(keysplit.Client("unix:/nonexistent/sock"))


def test_rekey_while_sealed_is_picked_up(ring: tuple[keysplit.Keyring, dict]) -> None:
    """A sealed service re-reads the keyring at each new unseal attempt, so a rekey done
    meanwhile needs the new shares (and the old ones are refused as foreign)."""
    kr, shares = ring
    svc = KeyService(kr.path, log=lambda m: None)
    assert svc.remote.offer()["progress"]["have"] == 0
    svc.remote.reset()
    with kr.unseal([shares["a"], shares["b"]]) as u:
        new = u.rekey()
    with pytest.raises(MixedSharesError):
        _send(svc.remote, shares["a"], kr.keyring_id)
    _send(svc.remote, new["a"], kr.keyring_id)
    _, opened = _send(svc.remote, new["c"], kr.keyring_id)
    assert opened is not None and svc.keyring.meta.generation == 2
    opened.close()  # type: ignore[attr-defined]


def _fake_datakeys(monkeypatch: pytest.MonkeyPatch) -> tuple[list[float], list[list[str]]]:
    """A frozen clock (``now[0]``) and a ``fetch_datakeys`` that records each batch."""
    from keysplit.service import remote as remote_mod

    now = [1000.0]
    monkeypatch.setattr(remote_mod.time, "monotonic", lambda: now[0])
    fetched: list[list[str]] = []

    def fake_datakeys(self: object, subjects: list[str], *, create: bool) -> list[bytes]:
        fetched.append(list(subjects))
        return [bytes([len(fetched)]) * 16 for _ in subjects]

    monkeypatch.setattr(keysplit.Client, "fetch_datakeys", fake_datakeys)
    return now, fetched


def test_client_cache_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The data-key cache refetches after max records per key and after max age."""
    monkeypatch.setenv("KEYSPLIT_LEASE_TTL", "100")  # the lease bound is tested below
    now, fetched = _fake_datakeys(monkeypatch)
    c = keysplit.Client("unix:/unused", cache_max_records=5, cache_max_age=60)
    recs = c.encrypt_many(["a", "a", "b"], [b"1", b"2", b"3"])
    assert fetched == [["a", "b"]]
    c.encrypt_many(["a", "a", "a"], [b"4", b"5", b"6"])  # a would reach 5 records: ok
    assert fetched == [["a", "b"]]
    c.encrypt(b"7", subject="a")  # 6th record under a's key: refetched
    assert fetched[-1] == ["a"]
    assert c.decrypt_many(["b"], [recs[2]]) == [b"3"]  # b still cached, same key
    assert len(fetched) == 2
    now[0] += 61  # max age passed: everything refetched
    c.encrypt(b"8", subject="b")
    assert fetched[-1] == ["b"] and len(fetched) == 3
    c.drop_cache()
    c.encrypt(b"9", subject="b")
    assert len(fetched) == 4
    with pytest.raises(ValueError):
        keysplit.Client("unix:/unused", cache_max_records=0)


def test_client_cache_obeys_the_lease_bound_and_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19: no cached key outlives the fleet's lease ttl, whatever cache_max_age says,
    and the cache is LRU-bounded by KEYSPLIT_CACHE_KEYS."""
    monkeypatch.setenv("KEYSPLIT_CACHE_KEYS", "2")
    monkeypatch.setenv("KEYSPLIT_LEASE_TTL", "5")
    now, fetched = _fake_datakeys(monkeypatch)
    c = keysplit.Client("unix:/unused", cache_max_age=3600)  # asks for an hour: gets 5 s
    c.encrypt(b"1", subject="a")
    c.encrypt(b"2", subject="b")
    c.encrypt(b"3", subject="a")  # a is now the most recently used
    assert fetched == [["a"], ["b"]]
    c.encrypt(b"4", subject="c")  # over the bound of 2: b (least recently used) goes
    c.encrypt(b"5", subject="a")
    assert fetched[-1] == ["c"]
    c.encrypt(b"6", subject="b")
    assert fetched[-1] == ["b"]
    n = len(fetched)
    now[0] += 5.0  # within the lease
    c.encrypt(b"7", subject="b")
    assert len(fetched) == n
    now[0] += 5.1  # past the lease ttl: refetched although cache_max_age is an hour
    c.encrypt(b"8", subject="b")
    assert len(fetched) == n + 1


def test_rolled_back_token_list_is_refused(service: tuple[KeyService, dict[str, str]]) -> None:
    """An authentic but older token list (from before a revocation was folded in) would
    revive the revoked token; the audit log's list_serial catches it."""
    svc, tokens = service
    frame = wire.encode_frame({}, [b"x"], ["c/1"])
    assert svc.handle(_req("/v1/encrypt", tokens["enc"], frame)).status == 200
    directory = svc.directory
    old = (directory / "service-tokens.json").read_bytes()
    TokenList.read(directory, svc.keyring.keyring_id).revoke("enc")
    assert svc.handle(_req("/v1/encrypt", tokens["enc"], frame)).status == 401  # folded in
    (directory / "service-tokens.revoked").unlink()
    assert svc.handle(_req("/v1/encrypt", tokens["all"], frame)).status == 200
    (directory / "service-tokens.json").write_bytes(old)  # roll the list back
    svc.reload_tokens(force=True)
    assert svc.handle(_req("/v1/encrypt", tokens["enc"], frame)).status == 401
    assert svc.handle(_req("/v1/encrypt", tokens["all"], frame)).status == 401  # fail closed
    events = [e.event for e in svc.keyring.audit_log().entries()]
    assert "token-revoke" in events and "token-list-invalid" in events


def test_a_token_list_change_reads_only_the_audit_entries_since_the_last(
    ring: tuple[keysplit.Keyring, dict],
    service: tuple[KeyService, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rollback check read and parsed the whole audit log at every change of the token
    list (a service's shreds write two entries each); it now reads only the entries since
    the last check, and still catches a list rolled back after them."""
    from audit_parses import count_parses

    from keysplit.audit import events as ev

    kr, shares = ring
    svc, tokens = service
    by = [ev.Contributor("a", 1, "f" * 16)]
    with kr.unseal([shares["a"], shares["b"]]) as ukr:
        batch: list[ev.Event] = []
        for i in range(500):
            batch += [ev.Intent("shred", f"u{i}", by), ev.Shred(f"u{i}", True, by)]
        ev.record_many(ukr.audit_log(), batch)  # 1,000 entries
    parsed = count_parses(monkeypatch)
    svc.reload_tokens(force=True)
    before = parsed[0]
    svc.reload_tokens(force=True)
    assert parsed[0] - before < 20  # before: > 1,000 (the whole log at every change)
    frame = wire.encode_frame({}, [b"x"], ["c/1"])
    old = (svc.directory / "service-tokens.json").read_bytes()
    TokenList.read(svc.directory, kr.keyring_id).revoke("enc")
    assert svc.handle(_req("/v1/encrypt", tokens["enc"], frame)).status == 401  # folded in
    (svc.directory / "service-tokens.revoked").unlink()
    (svc.directory / "service-tokens.json").write_bytes(old)  # roll the list back
    svc.reload_tokens(force=True)
    assert svc.handle(_req("/v1/encrypt", tokens["all"], frame)).status == 401  # fail closed
    assert parsed[0] - before < 40


def test_a_token_check_joins_no_path_and_still_sees_a_revocation(
    service: tuple[KeyService, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every batch checks the token list's signature twice (before its body is read, and
    with its subjects), and each check joined both file names onto the directory with
    ``pathlib``: in a served process that cost more than the two ``stat`` calls (issue 23's
    server CPU per batch, benchmarks/README.md). The paths are joined once now; a
    revocation written between two requests is still seen by the next one."""
    svc, tokens = service
    frame = wire.encode_frame({}, [b"x"] * 3, ["c/1", "c/2", "c/3"])
    req = _req("/v1/encrypt", tokens["enc"], frame)
    assert svc.handle(req).status == 200  # keys created, caches warm
    from audit_parses import count_calls

    joins = count_calls(monkeypatch, Path, "__truediv__")
    assert isinstance(svc.precheck(req), Admission)
    assert svc.handle(req).status == 200
    assert joins[0] == 0  # before: 2 per token check
    monkeypatch.undo()
    TokenList.read(svc.directory, svc.keyring.keyring_id).revoke("enc")
    assert svc.precheck(req).status == 401  # type: ignore[union-attr]
    assert svc.handle(req).status == 401
    assert svc.handle(_req("/v1/encrypt", tokens["all"], frame)).status == 200


def test_served_data_key_follows_the_keyrings_subject_spellings(
    ring: tuple[keysplit.Keyring, dict],
) -> None:
    """An NFD-spelled subject gets the key the keyring uses for its records (stored under
    NFC), whether created through the service or found there; the key opens its records."""
    import unicodedata

    kr, shares = ring
    nfc = unicodedata.normalize("NFC", "contacts/José")
    nfd = unicodedata.normalize("NFD", nfc)
    with kr.unseal([shares["a"], shares["b"]]) as u:
        (made,) = u.records.export([nfd], create=True)
        (found,) = u.records.export([nfc], create=False)
        (again,) = u.records.export([nfd], create=False)
        rec = u.encrypt(b"x", subject=nfc)
    assert made is not None and made == found == again
    assert record.decrypt(record.DataKey(made), rec, subject=nfc) == b"x"


def test_reprs_of_requests_and_answers_hold_no_secret() -> None:
    """Request and Response were dataclasses with generated reprs: a log line or a
    traceback's locals showing one printed the bearer token and the body (plaintexts,
    data keys) (red team). The other service and job objects that hold a token or a key
    keep them out of their reprs too."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from keysplit.service.core import Response
    from keysplit.service.unseal import _Attempt

    token, plain = "tok-planted-0123456789abcdef", b"planted plaintext \x00\xff"
    request = Request(
        "POST", "/v1/decrypt", {"Authorization": f"Bearer {token}"}, plain, local=True
    )
    answer = Response(200, plain, headers={"X-Request": "r1"})
    shown = [repr(request), str(request), repr(answer)]
    for text in shown:
        assert token not in text and "planted" not in text, text
    assert "POST" in shown[0] and "/v1/decrypt" in shown[0] and "200" in shown[2]
    private = X25519PrivateKey.generate()
    raw = private.private_bytes_raw()
    attempt = _Attempt(b"n" * 16, private, b"p" * 32, 0.0, None, [])  # type: ignore[arg-type]
    assert raw.hex() not in repr(attempt) and repr(raw) not in repr(attempt)
    jobs = pytest.importorskip("keysplit.jobs")
    from keysplit.jobs._parquet import PartSpec

    source = jobs.ServiceDataKeys("unix:/run/ks.sock", token)
    spec = PartSpec("decrypt", "c", "s", source, None, False, "0" * 32, None, {})  # type: ignore[arg-type]
    assert token not in repr(spec) and token not in repr(source)


@pytest.mark.parametrize(
    ("arg", "value"),
    [
        ("cache_max_age", float("nan")),
        ("cache_max_age", float("-inf")),
        ("cache_max_records", float("nan")),
        ("cache_max_records", 2.5),
        ("cache_max_records", float("inf")),
    ],
)
def test_client_cache_bounds_must_be_real_numbers(arg: str, value: float) -> None:
    """Red team: Client(cache_max_age=nan) passed the 'positive' check (nan <= 0 is False)
    and min(nan, ttl) is nan, so 'age > max_age' was never true: every key stayed cached
    for the life of the process, past any shred, seal or revocation on the service and past
    the lease bound the docs promise; cache_max_records=nan never ran out either."""
    with pytest.raises(ValueError):
        keysplit.Client("unix:/unused", **{arg: value})


def test_token_ceremonies_change_nothing_when_their_entry_cannot_be_appended(
    service: tuple[KeyService, dict[str, str]],
) -> None:
    """A torn last audit line (another process died mid-append): a token's shred, hold,
    rotate and rewrap through the service, and retire under a grant, used to act and then
    fail on the log (the subject shredded, the KEK rotated, yet answered as failed). Now
    each is refused before it acts, as a quorum's ceremony is: a 500 naming the log, the
    keyring unchanged, nothing further appended."""
    from keysplit import ceremony

    svc, tokens = service
    frame = wire.encode_frame({}, [b"x"], ["u/1"])
    r = svc.handle(_req("/v1/encrypt", tokens["all"], frame))
    assert r.status == 200
    (rec,) = wire.decode_frame(r.body)[2]
    assert svc.handle(_req("/v1/rotate", tokens["all"], b"{}")).status == 200
    assert svc.handle(_req("/v1/rewrap", tokens["all"], b"{}")).status == 200
    ukr = svc.unsealed_keyring
    assert ukr is not None
    before = ukr.status()
    assert before.kek_versions == (1, 2) and before.current_kek == 2
    log = svc.keyring.audit_log()
    with log.path.open("ab") as fh:
        fh.write(b'{"data":')
    torn = log.path.read_bytes()
    for path, body in (
        ("/v1/shred", b'{"subjects":["u/1"]}'),
        ("/v1/hold", b'{"subjects":["u/1"]}'),
        ("/v1/rotate", b"{}"),
        ("/v1/rewrap", b"{}"),
    ):
        r = svc.handle(_req(path, tokens["all"], body))
        err = json.loads(r.body)["error"]
        assert r.status == 500, (path, r.status, err)
        assert err["type"] == "AuditError" and "torn line" in err["message"], path
        assert "keysplit audit repair" in err["hint"]
    pol = TokenList.read(svc.directory, svc.keyring.keyring_id).find("all")
    pol = dataclasses.replace(pol, allow=(*pol.allow, "retire"))  # no endpoint: the library's
    with pytest.raises(errors.AuditError, match="torn line"):
        ceremony.retire(svc.keyring, ceremony.TokenGrant(ukr, pol), 1)
    for act in (
        lambda: ukr.shred("u/1"),
        lambda: ukr.rotate(),
        lambda: ukr.retire(1),
        lambda: ukr.set_legal_hold("u/1", True),
    ):
        with pytest.raises(errors.AuditError, match="torn line"):
            act()
    assert log.path.read_bytes() == torn
    after = ukr.status()
    assert (after.kek_versions, after.current_kek, after.legal_holds) == ((1, 2), 2, 0)
    assert ukr.decrypt(rec, subject="u/1") == b"x"  # not shredded


@pytest.mark.parametrize("cached", [False, True])
def test_client_batch_calls_refuse_one_string_for_subjects(
    monkeypatch: pytest.MonkeyPatch, cached: bool
) -> None:
    """(red team) Client's batch calls turned their subjects into a list first, so one string
    was taken character by character, past the record engine's own check:
    ``shred_many("alice")`` shredded subjects "a", "l", "i", "c", "e", ``datakeys("ab")``
    created keys for "a" and "b", ``encrypt_many("ab", [b"1", b"2"])`` sealed for them. Each
    is a TypeError now, before anything is sent."""
    sent: list[object] = []

    def send(self: keysplit.Client, path: str, *args: object, **kw: object) -> object:
        sent.append((path, args))
        raise AssertionError("nothing may be sent")

    for name in ("_items", "_batch", "_frame_request", "fetch_datakeys"):
        monkeypatch.setattr(keysplit.Client, name, send)
    c = keysplit.Client("unix:/unused", cache_max_age=60 if cached else None)
    calls = [
        lambda: c.shred_many("ab"),
        lambda: c.datakeys("ab"),
        lambda: c.encrypt_many("ab", [b"1", b"2"]),
        lambda: c.decrypt_many("ab", [b"1", b"2"]),
        lambda: c.encrypt_many(b"ab", [b"1", b"2"]),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(TypeError, match="not one string"):
            call()
    assert sent == []


@pytest.mark.parametrize(
    "url", ["https://alice:hunter2@kms:8443", "https://:hunter2@kms", "https://hunter2@kms:8443"]
)
def test_client_url_carries_no_credentials(url: str) -> None:
    """(red team) a user or password in the service URL (a token put where HTTP basic auth
    goes) was never sent, yet the Client kept the URL whole: its repr and every
    'cannot reach the key service at ...' error carried the secret. Refused now, as a
    password in a store URL is, without repeating it."""
    with pytest.raises(ValueError, match="token=") as info:
        keysplit.Client(url, timeout=1)
    assert "hunter2" not in str(info.value)


def test_a_sealed_status_shows_the_keyring_the_next_unseal_needs(tmp_path: Path) -> None:
    """A sealed service re-read the keyring file only when an unseal attempt started, so
    after a rekey made meanwhile (from the CLI while sealed, or while it served and then
    sealed) /v1/status showed the old generation, threshold, custodian count and
    ``progress.need`` until a custodian began. It now shows the file's while no attempt
    runs; a running attempt keeps the keyring its progress counts against."""
    kr, shares = keysplit.Keyring.create(tmp_path / "vault", 2, ["a", "b", "c"])
    svc = KeyService(kr.path, log=lambda m: None)

    def shown() -> tuple[int, int, int, int]:
        st = svc.status_dict()
        return st["generation"], st["threshold"], st["custodians"], st["progress"]["need"]

    assert shown() == (1, 2, 3, 2)
    with keysplit.Keyring.open(kr.path).unseal([shares["a"], shares["b"]]) as u:
        new = u.rekey(threshold=3, custodians=["a", "b", "c", "d"])
    assert shown() == (2, 3, 4, 3)
    svc.remote.offer()  # an attempt starts with the file as it is
    with keysplit.Keyring.open(kr.path).unseal([new["a"], new["b"], new["c"]]) as u:
        u.rekey()
    assert shown() == (2, 3, 4, 3)  # the attempt's, as its progress
    svc.remote.reset()
    assert shown() == (3, 3, 4, 3)
    (kr.path / "keyring.ksk").write_bytes(b"not a keyring")
    assert shown() == (3, 3, 4, 3)  # unreadable: the last one read
    svc.close()


def test_a_hand_built_request_cannot_claim_its_token_was_checked(
    service: tuple[KeyService, dict[str, str]], ring: tuple[keysplit.Keyring, dict]
) -> None:
    """``Request.admitted`` spares a request its second token check (e0406e4); any
    in-process code building a ``Request`` could set it, with a policy of its own making
    and no token (or a revoked one). Only an admission this service's own ``precheck``
    issued counts now: anything else in ``admitted`` is checked in full, like no admission
    (fails before: the forged policy was served, 200)."""
    svc, tokens = service
    frame = wire.encode_frame({}, [b"x"], ["u/1"])
    forged = TokenPolicy("id", "forged", "0" * 64, tuple(OPERATIONS), "")
    real = svc._tokens[hash_token(tokens["all"])]
    for admitted in (forged, real):
        for token in (None, "kst1_" + "x" * 43):
            headers = {"authorization": f"Bearer {token}"} if token else {}
            req = Request("POST", "/v1/encrypt", headers, frame, admitted=admitted)  # type: ignore[arg-type]
            assert svc.handle(req).status == 401
    # an admission another service issued does not count here either
    kr, shares = ring
    other = KeyService(kr.path, log=lambda m: None)
    unseal_service(other, kr.keyring_id, [shares["a"], shares["b"]])
    theirs = other.precheck(_req("/v1/encrypt", tokens["all"]))
    assert isinstance(theirs, Admission)
    req = Request("POST", "/v1/encrypt", {}, frame, admitted=theirs)
    assert svc.handle(req).status == 401
    # nor one made by hand (it stands for no policy)
    req = Request("POST", "/v1/encrypt", {}, frame, admitted=Admission())
    assert svc.handle(req).status == 401
    # this service's own admission is honoured: its token is not checked again
    ours = svc.precheck(_req("/v1/encrypt", tokens["all"]))
    assert isinstance(ours, Admission) and "kst1" not in repr(ours)
    req = Request("POST", "/v1/encrypt", _req("", tokens["all"]).headers, frame, admitted=ours)
    TokenList.read(svc.directory, svc.keyring.keyring_id).revoke("all")
    assert svc.handle(req).status == 200  # judged when its token arrived (docs/API.md)
    assert svc.handle(_req("/v1/encrypt", tokens["all"], frame)).status == 401
