"""keysplit.cluster.dkg: joint-Feldman DKG, refresh and share recovery."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keysplit.cluster import dkg, dprf
from keysplit.cluster.dkg import Dealing, NodeShare
from keysplit.errors import ClusterError, FormatError
from keysplit.hazmat.ristretto import Point, Scalar
from keysplit.rng import DeterministicRandom

IDX = [1, 2, 3]
PTS = [dprf.point_for(b"\x07" * 16, "in", f"s/{i}", 1) for i in range(2)]


def _run(
    idx: list[int], t: int, rng: DeterministicRandom
) -> tuple[list[Dealing], dict[int, NodeShare]]:
    rounds = [dkg.deal(i, t, idx, rng=rng) for i in idx]
    dealings = [d for d, _ in rounds]
    return dealings, {i: dkg.finish(i, dealings, {d.dealer: s[i] for d, s in rounds}) for i in idx}


def _outputs(shares: dict[int, NodeShare], subset: tuple[int, ...]) -> list[Point]:
    lam = dprf.lagrange(subset)
    answers = {i: dprf.evaluate(shares[i], PTS, coefficient=lam[i]) for i in subset}
    return dprf.combine(answers, len(subset))


def test_dkg_gives_consistent_shares_and_public_data() -> None:
    dealings, shares = _run(IDX, 2, DeterministicRandom("dkg"))
    public = dkg.public_shares(dealings, IDX)
    commitments = dkg.combined_commitments(dealings)
    key = dkg.cluster_public_key(dealings)
    assert commitments[0] == key
    for i in IDX:
        assert shares[i].public_share == public[i] == dkg.public_share(commitments, i)
    x = dkg.interpolate({i: shares[i].share for i in (1, 3)})
    assert Point.base_mul(x) == key
    assert x == dkg.interpolate({i: shares[i].share for i in (2, 3)})


def test_a_bad_subshare_names_its_dealer() -> None:
    rng = DeterministicRandom("bad")
    rounds = [dkg.deal(i, 2, IDX, rng=rng) for i in IDX]
    dealings = [d for d, _ in rounds]
    mine = {d.dealer: s[1] for d, s in rounds}
    mine[3] = mine[3] + Scalar.one()
    with pytest.raises(ClusterError, match="node 3") as err:
        dkg.finish(1, dealings, mine)
    assert err.value.node == 3
    # a sub-share meant for another node fails too
    with pytest.raises(ClusterError) as err:
        dkg.verify_subshare(rounds[1][0], 1, rounds[1][1][2])
    assert err.value.node == 2
    # missing, extra, duplicated and mixed-threshold contributions are refused by name
    with pytest.raises(ClusterError) as err:
        dkg.finish(1, dealings, {2: mine[2], 3: mine[3]})
    assert err.value.node == 1
    with pytest.raises(ClusterError):
        dkg.finish(1, dealings[:2], mine)
    with pytest.raises(ClusterError):
        dkg.finish(1, [dealings[0], dealings[0]], {1: mine[1]})
    other_t, subs = dkg.deal(2, 3, IDX, rng=rng)
    with pytest.raises(ClusterError) as err:
        dkg.finish(1, [dealings[0], other_t], {1: mine[1], 2: subs[1]})
    assert err.value.node == 2


def test_parameters_are_checked() -> None:
    with pytest.raises(ValueError):
        dkg.deal(1, 1, IDX)  # a 1-of-N cluster would let every node decrypt alone
    with pytest.raises(ValueError):
        dkg.deal(1, 4, IDX)
    with pytest.raises(ValueError):
        dkg.deal(4, 2, IDX)
    with pytest.raises(ValueError):
        dkg.deal(1, 2, [1, 1, 2])
    with pytest.raises(ValueError):
        dkg.deal(1, 2, [0, 1, 2])
    with pytest.raises(ValueError):
        dkg.deal(1, 2, [1, 256])


def test_secrets_never_show_and_the_transcript_holds_none() -> None:
    rng = DeterministicRandom("secrets")
    rounds = [dkg.deal(i, 2, IDX, rng=rng) for i in IDX]
    dealings = [d for d, _ in rounds]
    share = dkg.finish(2, dealings, {d.dealer: s[2] for d, s in rounds})
    secrets = [share.share.to_bytes()] + [s[i].to_bytes() for _, s in rounds for i in IDX]
    public_text = repr(share) + repr(dealings) + str([d.to_json() for d in dealings])
    transcript = b"".join(d.to_bytes() for d in dealings)
    for secret in secrets:
        assert secret.hex() not in public_text and secret not in transcript
        assert secret.hex()[:16] not in public_text
    assert "Scalar(<secret>)" in repr(rounds[0][1])
    with pytest.raises(ClusterError) as err:
        dkg.verify_subshare(dealings[0], 2, rounds[0][1][3])
    assert all(s.hex()[:16] not in str(err.value) for s in secrets)


def test_encodings_round_trip_strictly() -> None:
    rng = DeterministicRandom("enc")
    dealings, shares = _run(IDX, 3, rng)
    for d in dealings:
        assert Dealing.from_bytes(d.to_bytes()) == d
        assert Dealing.from_json(d.to_json()) == d
        assert len(d.digest()) == 32
        raw = d.to_bytes()
        for bad in (raw[:-1], raw + b"\x00", b"XXXX" + raw[4:], raw[:4] + b"\x02" + raw[5:]):
            with pytest.raises(FormatError):
                Dealing.from_bytes(bad)
        # a non-canonical commitment is refused
        with pytest.raises(FormatError):
            Dealing.from_bytes(raw[:7] + b"\xff" * 32 + raw[39:])
    for bad_json in (
        {},
        {"dealer": 1},
        {"dealer": 1, "commitments": ["zz", "00"]},
        {"dealer": 0, "commitments": []},
        {"dealer": 1, "commitments": [1, 2]},
    ):
        with pytest.raises(FormatError):
            Dealing.from_json(bad_json)
    s = shares[2]
    assert NodeShare.from_bytes(s.to_bytes(), public_share=s.public_share) == s
    with pytest.raises(ClusterError):
        NodeShare.from_bytes(s.to_bytes(), public_share=shares[1].public_share)
    with pytest.raises(FormatError):
        NodeShare.from_bytes(s.to_bytes()[:-1])


def test_refresh_keeps_outputs_and_old_and_new_shares_do_not_combine() -> None:
    rng = DeterministicRandom("refresh")
    dealings, shares = _run(IDX, 2, rng)
    commitments = dkg.combined_commitments(dealings)
    before = _outputs(shares, (1, 2))
    rounds = [dkg.deal_refresh(i, 2, IDX, rng=rng) for i in IDX]
    r_dealings = [d for d, _ in rounds]
    new = {i: dkg.refresh(shares[i], r_dealings, {d.dealer: s[i] for d, s in rounds}) for i in IDX}
    new_commitments = dkg.refresh_commitments(commitments, r_dealings)
    assert new_commitments[0] == commitments[0]
    for i in IDX:
        assert new[i].share != shares[i].share
        assert new[i].public_share == dkg.public_share(new_commitments, i)
    for subset in itertools.combinations(IDX, 2):
        assert _outputs(new, subset) == before
    mixed = {1: shares[1], 2: new[2]}
    assert _outputs(mixed, (1, 2)) != before
    # a refresh dealing with a non-zero constant would change the key: refused by name
    sneaky, subs = dkg.deal(3, 2, IDX, rng=rng)
    bad = [*r_dealings[:2], sneaky]
    with pytest.raises(ClusterError) as err:
        dkg.refresh(shares[1], bad, {1: rounds[0][1][1], 2: rounds[1][1][1], 3: subs[1]})
    assert err.value.node == 3
    with pytest.raises(ClusterError):
        dkg.refresh_commitments(commitments, bad)


def test_share_recovery_restores_the_lost_node() -> None:
    rng = DeterministicRandom("recover")
    idx = [1, 2, 3, 4]
    dealings, shares = _run(idx, 3, rng)
    commitments = dkg.combined_commitments(dealings)
    lost, helpers = 2, [1, 3, 4]
    rounds = [dkg.deal_recovery(h, helpers, lost, rng=rng) for h in helpers]
    r_dealings = [d for d, _ in rounds]
    blinded = {
        h: dkg.blind_share(shares[h], lost, r_dealings, {d.dealer: s[h] for d, s in rounds})
        for h in helpers
    }
    # the blinded values are not the helpers' shares
    assert all(blinded[h] != shares[h].share for h in helpers)
    recovered = dkg.recover_share(lost, blinded, r_dealings, commitments)
    assert recovered == shares[lost]
    # a wrong blinded share is named
    tampered = dict(blinded)
    tampered[4] = tampered[4] + Scalar.one()
    with pytest.raises(ClusterError) as err:
        dkg.recover_share(lost, tampered, r_dealings, commitments)
    assert err.value.node == 4
    # a blinding dealing that does not vanish at the lost index is refused by name
    not_zero, _subs = dkg.deal(3, 3, helpers, rng=rng)
    with pytest.raises(ClusterError) as err:
        dkg.verify_recovery_dealing(not_zero, lost, 3)
    assert err.value.node == 3
    with pytest.raises(ValueError):
        dkg.deal_recovery(2, helpers, lost)
    with pytest.raises(ValueError):
        dkg.deal_recovery(1, [1, 2, 3], 2)


@settings(max_examples=6)
@given(st.integers(2, 4), st.integers(0, 2), st.integers(0, 2**32))
def test_property_dkg_refresh_recover(t: int, extra: int, seed: int) -> None:
    idx = list(range(1, t + extra + 1))
    rng = DeterministicRandom(str(seed))
    dealings, shares = _run(idx, t, rng)
    subset = tuple(idx[:t])
    before = _outputs(shares, subset)
    assert _outputs(shares, tuple(idx[-t:])) == before
    rounds = [dkg.deal_refresh(i, t, idx, rng=rng) for i in idx]
    new = {
        i: dkg.refresh(shares[i], [d for d, _ in rounds], {d.dealer: s[i] for d, s in rounds})
        for i in idx
    }
    assert _outputs(new, tuple(idx[-t:])) == before
    # old and new shares do not combine
    mixed = {i: (shares[i] if i == idx[0] else new[i]) for i in idx}
    assert _outputs(mixed, subset) != before
    lost, helpers = idx[0], idx[1 : t + 1]
    if len(helpers) == t:
        rec = [dkg.deal_recovery(h, helpers, lost, rng=rng) for h in helpers]
        blinded = {
            h: dkg.blind_share(new[h], lost, [d for d, _ in rec], {d.dealer: s[h] for d, s in rec})
            for h in helpers
        }
        commitments = dkg.refresh_commitments(
            dkg.combined_commitments(dealings), [d for d, _ in rounds]
        )
        assert dkg.recover_share(lost, blinded, [d for d, _ in rec], commitments) == new[lost]


def test_a_revealed_dealing_must_match_its_digest() -> None:
    rng = DeterministicRandom("digest")
    first, _ = dkg.deal(1, 2, IDX, rng=rng)
    second, _ = dkg.deal(1, 2, IDX, rng=rng)
    first.check_digest(first.digest())
    with pytest.raises(ClusterError) as err:
        second.check_digest(first.digest())
    assert err.value.node == 1


@given(st.binary(max_size=200))
def test_parsers_raise_only_format_errors(data: bytes) -> None:
    for parse in (Dealing.from_bytes, NodeShare.from_bytes, Point.from_bytes, Scalar.from_bytes):
        with contextlib.suppress(FormatError):
            parse(data)


@given(st.integers(0, 8 * (7 + 64) - 1))
def test_any_bit_flip_in_a_dealing_is_refused_or_changes_it(bit: int) -> None:
    d, _ = dkg.deal(2, 2, IDX, rng=DeterministicRandom("flip"))
    raw = bytearray(d.to_bytes())
    raw[bit // 8] ^= 1 << (bit % 8)
    try:
        other = Dealing.from_bytes(bytes(raw))
    except FormatError:
        return
    assert other != d and other.digest() != d.digest()


def test_secret_scalars_do_not_pickle() -> None:
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(Scalar.one())
