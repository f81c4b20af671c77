"""The step rows the checks read: the column-wise table against a row-by-row reference.

:class:`VerifyContext` builds the logged ``train.steps`` rows a column at a time and applies
``run.resume`` supersession with a binary search. These tests compare it, on odd bodies and
tampered sequence numbers alike, with the plain loops it replaced: the same rows, or the same
exception (type and message) where a body is malformed.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from attest.records import Record
from attest.verifier.context import (
    StepRow,
    StepTable,
    VerifyContext,
    _num,  # the per-value rule both paths share
)


def _reference_logged(records: list[Record]) -> list[StepRow]:
    """One record, one step at a time (the loop the table replaced)."""
    rows = []
    for r in records:
        if r.type != "train.steps":
            continue
        b = r.body
        first, seq = b["first_step"], r.seq
        for i, (loss, lr, gn, batch) in enumerate(
            zip(b["loss"], b["lr"], b["grad_norm"], b["batch"], strict=True)
        ):
            rows.append(StepRow(first + i, _num(loss), float(lr), _num(gn), str(batch), seq))
    return rows


def _reference_steps(records: list[Record]) -> list[StepRow]:
    """Rows in log order, each ``run.resume`` at step ``s`` dropping the rows logged before it
    from ``s`` on; a row is taken while its seq is below the next resume's (a tampered seq
    stops the walk early, as it did)."""
    rows: list[StepRow] = []
    resumes = sorted((r.seq, int(r.body["step"])) for r in records if r.type == "run.resume")
    by_seq = iter(_reference_logged(records))
    pending = next(by_seq, None)
    for seq, step in [*resumes, (len(records) + 1, -1)]:
        while pending is not None and pending.seq < seq:
            rows.append(pending)
            pending = next(by_seq, None)
        if step >= 0:
            rows = [row for row in rows if row.step < step]
    return rows


def _context(records: list[Record]) -> VerifyContext:
    bundle = SimpleNamespace(records=[SimpleNamespace(record=r) for r in records])
    return VerifyContext(
        bundle=cast(Any, bundle), policy=cast(Any, None), trainer_key=None, server_verifier=None
    )


def _outcome(f: Any) -> Any:
    """``repr`` of what ``f`` returns (so 3 and 3.0 differ), or the error's type and message."""
    try:
        return repr(f())
    except Exception as exc:  # the same error, type and message, is part of the contract
        return type(exc), str(exc)


_numbers = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-5, 5) | st.none()
_odd = st.booleans() | st.text(max_size=3) | st.just(10**400) | st.sampled_from(["0.5", "1e3"])


@st.composite
def _steps_body(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 3))
    odd = draw(st.integers(0, 12))  # mostly well-formed bodies; now and then one odd value

    def column(values: st.SearchStrategy[Any]) -> list[Any]:
        out = draw(st.lists(values, min_size=n, max_size=n))
        if odd == 0:
            out[draw(st.integers(0, n - 1))] = draw(_odd)
        return out

    body = {
        "first_step": draw(st.integers(0, 12)) if odd != 1 else draw(st.sampled_from([1.5, "2"])),
        "loss": column(_numbers),
        "lr": column(st.floats(0, 1) | st.integers(0, 2)),
        "grad_norm": column(_numbers),
        "batch": column(st.text(max_size=4) | st.integers(0, 9)),
    }
    if odd == 2:
        body[draw(st.sampled_from(["loss", "lr", "grad_norm", "batch"]))].append(0.5)
    if odd == 3:
        del body[draw(st.sampled_from(list(body)))]
    return body


@st.composite
def _logs(draw: st.DrawFn) -> list[Record]:
    records = []
    for seq in range(draw(st.integers(0, 10))):
        if draw(st.integers(0, 4)) == 0:
            step = draw(st.integers(0, 12))
            body: dict[str, Any] = {"step": step, "from_checkpoint": "x", "data_position": {}}
            rtype = "run.resume"
        else:
            body, rtype = draw(_steps_body()), "train.steps"
        tampered = draw(st.integers(0, 8)) == 0
        records.append(
            Record(rtype, "r", draw(st.integers(0, 12)) if tampered else seq, None, "t", body)
        )
    return records


@settings(max_examples=400, deadline=None)
@given(_logs())
def test_logged_rows_and_steps_equal_the_row_by_row_reference(records: list[Record]) -> None:
    ctx = _context(records)
    assert _outcome(ctx.logged_steps) == _outcome(lambda: _reference_logged(records))
    assert _outcome(ctx.steps) == _outcome(lambda: _reference_steps(records))


@settings(max_examples=200, deadline=None)
@given(_logs())
def test_step_table_columns_are_the_fields_of_the_rows(records: list[Record]) -> None:
    ctx = _context(records)
    try:
        rows = ctx.steps()
    except Exception:
        return  # the previous test compares the errors
    assert ctx.step_table() == StepTable.of(rows)
    assert repr(ctx.step_table().rows()) == repr(rows)


def test_one_step_a_record_and_several_a_record_give_the_same_table() -> None:
    def steps(first: int, n: int, seq: int) -> Record:
        body = {
            "first_step": first,
            "loss": [float(first + i) for i in range(n)],
            "lr": [0.1] * n,
            "grad_norm": [None] * n,
            "batch": [f"b{first + i}" for i in range(n)],
        }
        return Record("train.steps", "r", seq, None, "t", body)

    singles = _context([steps(i, 1, i) for i in range(6)]).step_table()
    pairs = _context([steps(2 * i, 2, i) for i in range(3)]).step_table()
    assert singles.step == pairs.step == tuple(range(6))
    assert singles.batch == pairs.batch and singles.loss == pairs.loss
    assert singles.seq == tuple(range(6)) and pairs.seq == (0, 0, 1, 1, 2, 2)
