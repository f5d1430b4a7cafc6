"""Issue 21 item 6, variants: a number given to the CLI or the library's batch walks is a
clear refusal, never an overflow deep inside a store.

``keysplit rewrap --batch-size 1e30`` reached SQLite's ``LIMIT ?`` and printed an
``OverflowError`` traceback; the key service already capped its own ``batch_size``. Every
store walk now checks one bound (:data:`keysplit.store.base.MAX_BATCH`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from service_helpers import cli, make_keyring, share_file

from keysplit import Keyring, load_share
from keysplit.service import _wire as wire
from keysplit.service.cluster_admin import rotate_cluster
from keysplit.store.base import MAX_BATCH

HUGE = str(10**30)


def test_rewrap_batch_size_out_of_range_is_one_usage_error(tmp_path: Path) -> None:
    vault = make_keyring(tmp_path, 2, ["a", "b"])
    shares = [share_file(tmp_path / "vault-shares", n) for n in "ab"]
    for bad in (HUGE, str(MAX_BATCH + 1), "0", "-1"):
        r = cli("rewrap", vault, "--batch-size", bad, "--share", shares[0], "--share", shares[1],
                cwd=tmp_path)  # fmt: skip
        assert r.returncode == 2, (bad, r.stderr)
        assert "Traceback" not in r.stderr and "OverflowError" not in r.stderr
        assert "--batch-size" in r.stderr
    r = cli("cluster", "rotate", "a", "b", "--token-file", "t", "--batch-size", HUGE, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--batch-size" in r.stderr
    ok = cli("rewrap", vault, "--batch-size", str(MAX_BATCH), "--share", shares[0],
             "--share", shares[1], cwd=tmp_path)  # fmt: skip
    assert ok.returncode == 0, ok.stderr


def test_library_batch_walks_check_one_bound(tmp_path: Path) -> None:
    assert wire.MAX_REWRAP_BATCH == MAX_BATCH
    vault = make_keyring(tmp_path, 2, ["a", "b"])
    shares = [load_share(share_file(tmp_path / "vault-shares", n).read_bytes()) for n in "ab"]
    with Keyring.open(vault).unseal(shares) as u:
        for bad in (10**30, MAX_BATCH + 1, 0, True, 2.0):
            with pytest.raises(ValueError, match="batch_size"):
                u.rewrap(batch_size=bad)  # type: ignore[arg-type]
        assert u.rewrap(batch_size=MAX_BATCH).rewrapped == 0
        with pytest.raises(ValueError, match="batch_size"):
            rotate_cluster(tmp_path / "a", tmp_path / "b", token=None, batch_size=10**30)
        jobs = pytest.importorskip("keysplit.jobs")
        with pytest.raises(ValueError, match="batch_size"):
            jobs.rewrap(u, cluster=jobs.Cluster(), batch_size=10**30)


def test_unseal_timeout_must_be_a_finite_positive_number(tmp_path: Path) -> None:
    """``serve --unseal-timeout nan`` served with an unseal attempt that never expired
    (``elapsed > nan`` is false) and ``inf`` sent JSON's non-standard ``Infinity``."""
    from keysplit.service.unseal import RemoteUnseal

    vault = make_keyring(tmp_path, 2, ["a", "b"])
    for bad in ("nan", "inf", HUGE, "0"):
        r = cli("serve", vault, "--socket", tmp_path / "s.sock", "--unseal-timeout", bad,
                cwd=tmp_path, timeout=60)  # fmt: skip
        assert r.returncode == 2, (bad, r.stderr)
        assert "Traceback" not in r.stderr and "--unseal-timeout" in r.stderr
    kr = Keyring.open(vault)
    for v in (float("nan"), float("inf"), 10**30, -1, 0):
        with pytest.raises(ValueError, match="unseal timeout"):
            RemoteUnseal(kr, timeout=v)
    with pytest.raises(TypeError):
        RemoteUnseal(kr, timeout=True)
    assert RemoteUnseal(kr, timeout=0.5).timeout == 0.5
