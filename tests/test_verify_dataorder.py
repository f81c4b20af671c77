"""The committed data order as a step schedule: segments, whole epochs, resumes."""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from attest.canonical import canonical_json, canonical_json_reference, sha256_digest
from attest.errors import FormatError
from attest.records import Record
from attest.verifier.dataorder import DataSchedule, Segment

BLOBS: dict[str, Any] = {}


def _blob(doc: Any) -> str:
    name = sha256_digest(canonical_json(doc))
    BLOBS[name] = doc
    return name


def _rec(seq: int, rtype: str, body: dict[str, Any]) -> Record:
    return Record(rtype, "r", seq, None, "t", body)


def _order(seq: int, epoch: int, position: int, ids: list[int], bs: int = 2) -> Record:
    return _rec(
        seq,
        "data.order",
        {
            "epoch": epoch,
            "position": position,
            "batch_size": bs,
            "order": _blob({"epoch": epoch, "ids": ids}),
        },
    )


MANIFEST = _rec(0, "data.manifest", {"dataset": {"size": 6}, "sampler": {"drop_last": False}})


def test_segments_follow_each_other_and_cut_a_short_last_batch() -> None:
    s = DataSchedule.from_records(
        [MANIFEST, _order(1, 0, 0, [5, 4, 3]), _order(2, 0, 2, [2, 1, 0])], BLOBS.__getitem__
    )
    assert [s.batch_ids(i) for i in range(4)] == [[5, 4], [3], [2, 1], [0]]
    assert s.batch_ids(4) is None


def test_whole_epoch_order_with_a_position_starts_mid_epoch() -> None:
    s = DataSchedule.from_records(
        [MANIFEST, _order(1, 0, 1, [0, 1, 2, 3, 4, 5])], BLOBS.__getitem__
    )
    assert [s.batch_ids(i) for i in range(3)] == [[2, 3], [4, 5], None]


def test_resume_supersedes_steps_after_its_checkpoint() -> None:
    records = [
        MANIFEST,
        _order(1, 0, 0, [0, 1, 2, 3, 4, 5]),  # steps 0..2
        _rec(
            2,
            "run.resume",
            {"step": 1, "from_checkpoint": "x", "data_position": {"epoch": 0, "batch": 1}},
        ),
        _order(3, 0, 1, [9, 8, 7, 6]),  # the restarted loader: steps 1..2
    ]
    s = DataSchedule.from_records(records, BLOBS.__getitem__)
    assert [s.batch_ids(i) for i in range(4)] == [[0, 1], [9, 8], [7, 6], None]
    assert not s.problems


def test_resume_past_the_committed_order_is_a_problem() -> None:
    records = [
        MANIFEST,
        _order(1, 0, 0, [0, 1]),
        _rec(2, "run.resume", {"step": 5, "from_checkpoint": "x", "data_position": {}}),
    ]
    assert DataSchedule.from_records(records, BLOBS.__getitem__).problems


def _linear_batch_ids(s: DataSchedule, step: int) -> list[int] | None:
    """The reference look-up: the last segment in log order that covers ``step``."""
    for seg in reversed(s.segments):
        if seg.start <= step < seg.stop:
            return seg.ids_at(step)
    return None


@st.composite
def _schedules(draw: st.DrawFn) -> list[Record]:
    records = [MANIFEST]
    for seq in range(1, draw(st.integers(1, 8)) + 1):
        if draw(st.booleans()):
            ids = draw(st.lists(st.integers(-(2**54), 2**54) | st.integers(0, 9), max_size=7))
            name = "sha256:" + hashlib.sha256(repr(ids).encode()).hexdigest()
            BLOBS[name] = {"epoch": 0, "ids": ids}  # ids RFC 8785 may refuse: named by repr
            body = {"epoch": 0, "position": draw(st.integers(0, 3)), "order": name}
            records.append(_rec(seq, "data.order", {**body, "batch_size": draw(st.integers(1, 3))}))
        else:
            step = draw(st.integers(0, 8))
            records.append(
                _rec(seq, "run.resume", {"step": step, "from_checkpoint": "x", "data_position": {}})
            )
    return records


@settings(max_examples=300, deadline=None)
@given(_schedules())
def test_step_look_up_and_batch_digest_equal_the_reference(records: list[Record]) -> None:
    s = DataSchedule.from_records(records, BLOBS.__getitem__)
    starts = [seg.start for seg in s.segments]
    assert starts == sorted(starts)  # the invariant the binary search relies on
    for step in range(-1, 12):
        ids = _linear_batch_ids(s, step)
        assert s.batch_ids(step) == ids
        if ids is None:
            assert s.batch_digest(step) is None
            continue
        try:
            want: str | None = sha256_digest(canonical_json_reference(ids))
        except FormatError:
            want = None
        try:
            got: str | None = s.batch_digest(step)
        except FormatError:
            got = None
        assert got == want


@settings(max_examples=300, deadline=None)
@given(_schedules(), st.integers(-2, 10), st.integers(0, 12))
def test_batch_digests_of_a_range_equal_the_step_by_step_digests(
    records: list[Record], start: int, length: int
) -> None:
    s = DataSchedule.from_records(records, BLOBS.__getitem__)
    steps = range(start, start + length)
    try:
        want: list[str | None] | None = [s.batch_digest(step) for step in steps]
    except FormatError:
        want = None
    try:
        got: list[str | None] | None = s.batch_digests(steps.start, steps.stop)
    except FormatError:
        got = None
    assert got == want


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(-(2**54), 2**54) | st.integers(0, 99), max_size=40),
    st.integers(0, 6),
    st.integers(0, 3),
    st.integers(0, 25),
    st.integers(-3, 25),
    st.integers(-2, 25),
)
def test_segment_digests_equal_digest_at_for_every_step(
    ids: list[int], batch: int, base: int, count: int, start: int, length: int
) -> None:
    seg = Segment(0, count, 0, base, batch, base, tuple(ids), 1)
    steps = range(start, start + length)
    try:
        want: list[str] | None = [seg.digest_at(step) for step in steps]
    except FormatError:
        want = None
    try:
        got: list[str] | None = seg.digests(steps.start, steps.stop)
    except FormatError:
        got = None
    assert got == want
