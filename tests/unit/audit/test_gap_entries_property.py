"""The quorum's incremental gap check agrees with a full read of the log, cut anywhere.

``Keyring.gap_entries`` keeps what the next unseal needs of the entries read so far (the
checkpoint); the open intents found in ``gap_entries(a) + b`` must be those of ``a + b``
for every cut, whatever intents, outcomes and ``observed`` entries the log holds. Kept
only the open intents, an ``observed`` entry after the cut naming an intent an outcome
had closed before it (two operations on one target racing) handed that outcome to an
older intent in a full read, while the checkpoint still showed the older one open.
"""

from __future__ import annotations

import json

from hypothesis import example, given, settings
from hypothesis import strategies as st

from keysplit import Keyring
from keysplit.audit import events as ev
from keysplit.audit.log import AuditEntry

_OPS = {"shred": ("shred", "subject"), "decrypt": ("decrypt", "file")}
_BY = [[{"custodian": "a", "index": 1, "share": "f" * 16}], [{"token": "t", "token_id": "1"}]]

# mostly one operation, target and authority: the races are between entries of one
_step = st.one_of(
    st.tuples(
        st.sampled_from(["intent", "outcome"]),
        st.sampled_from(["shred", "shred", "shred", "decrypt"]),
        st.sampled_from(["x", "x", "x", "y"]),
        st.sampled_from([0, 0, 0, 1]),
    ),
    st.tuples(st.just("observed"), st.integers(0, 3)),
    st.just(("other",)),
)


def _log(steps: list[tuple[object, ...]]) -> list[AuditEntry]:
    """The entries ``steps`` describe: an ``observed`` one names an earlier intent (its
    integer counts back from the latest; none yet: an unknown seq)."""
    entries: list[AuditEntry] = []
    intents: list[AuditEntry] = []
    for seq, step in enumerate(steps, 1):
        if step[0] == "intent":
            _, op, target, by = step
            data = {"operation": op, "target": target, "authorized_by": _BY[int(by)]}  # type: ignore[call-overload]
            event = "intent"
        elif step[0] == "outcome":
            _, op, target, by = step
            event, key = _OPS[str(op)]
            data = {key: target, "authorized_by": _BY[int(by)]}  # type: ignore[call-overload]
        elif step[0] == "observed":
            named = intents[-1 - int(step[1]) % len(intents)] if intents else None  # type: ignore[call-overload]
            data = {
                "operation": named.data["operation"] if named else "shred",
                "target": named.data["target"] if named else "x",
                "intent": named.seq if named else 10_000,
                "found": "raised",
                "authorized_by": _BY[0],
            }
            event = "observed"
        else:
            event, data = "unseal", {"authorized_by": _BY[0]}
        e = AuditEntry(seq, "t", event, data, "", None, json.dumps([seq, event]))
        entries.append(e)
        if event == "intent":
            intents.append(e)
    return entries


def _open(entries: list[AuditEntry]) -> list[int]:
    return [e.seq for e in ev.open_intents(entries)]


_RACE = [  # two shreds of one subject race: both intents, one outcome, the other fails
    ("intent", "shred", "x", 0),
    ("intent", "shred", "x", 0),
    ("outcome", "shred", "x", 0),
    ("observed", 0),  # names the later intent (the latest): the outcome was the older's
]


@settings(max_examples=300, deadline=None)
@given(st.lists(_step, max_size=16), st.integers(0, 16), st.integers(0, 16))
@example(_RACE, 3, 3)  # before the fix: the older intent read as open at cut 3
def test_every_cut_gives_the_full_reads_open_intents(
    steps: list[tuple[object, ...]], first: int, second: int
) -> None:
    entries = _log(steps)
    want = _open(entries)
    for cut in range(len(entries) + 1):
        kept = Keyring.gap_entries(entries[:cut])
        assert _open(kept + entries[cut:]) == want, cut
        assert _open(Keyring.gap_entries(kept + entries[cut:])) == want, cut
    # two checkpoints in a row (each unseal reads only what the last one left)
    first = min(first, len(entries))
    second = max(first, min(second, len(entries)))
    twice = Keyring.gap_entries(Keyring.gap_entries(entries[:first]) + entries[first:second])
    assert _open(twice + entries[second:]) == want
