"""What every verifier check reads: the bundle, the policy, the trusted keys and the parsed log.

A :class:`VerifyContext` is built once per verification (:func:`attest.verifier.verify_bundle`)
and handed to each check module (docs/verifying.md, steps 1–5). It holds the inputs — the
bundle, the policy it is judged against, the trainer key and server verifier *from the policy*
that match the bundle (never keys taken from the bundle itself), and the optional local files
(final model, data folder, state folder) — and parses the records once into the views the checks
share: the records in log order, bodies by type, the flattened per-step rows (kept column by
column, :class:`StepTable`, and turned into :class:`StepRow` objects only for the checks that
ask for rows), model digests from blobs and the step → batch sample-id schedule derived from
the committed data order.

Nothing here decides pass or fail. Parsing helpers raise :class:`~attest.errors.FormatError`
when the bundle lacks what they are asked for (a record type, a blob); the check that asked turns
that into a failed or skipped result with the evidence.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from attest.bundle import Bundle, paused_gc
from attest.digest import ModelDigest
from attest.errors import FormatError
from attest.keys import TrainerPublicKey
from attest.note import NoteVerifier
from attest.records import Record
from attest.verifier.dataorder import DataSchedule

if TYPE_CHECKING:
    from attest.verifier.policy import Policy

__all__ = ["Progress", "StepRow", "StepTable", "VerifyContext", "losses_by_step"]

Progress = Callable[[str, int, int], None]
"""``progress(task, done, total)``: called by long checks (replay) as work completes."""


@dataclass(frozen=True)
class StepRow:
    """One optimizer step as logged in ``train.steps`` (docs/formats.md, "Step numbering").

    ``loss`` is the loss on batch ``step`` with the weights *before* update ``step``; ``lr`` the
    learning rate update ``step`` used; ``grad_norm`` the total L2 gradient norm before clipping;
    ``batch`` the ``sha256:`` digest of the canonical JSON list of sample ids. ``seq`` is the
    record the row came from.
    """

    step: int
    loss: float | None
    lr: float
    grad_norm: float | None
    batch: str
    seq: int


@dataclass(frozen=True)
class StepTable:
    """Step rows column by column: row ``i`` is ``StepRow(step[i], loss[i], lr[i],
    grad_norm[i], batch[i], seq[i])``.

    Checks that read one field of every step (continuity, the data order, the loss curve) read
    a column, so a run of 10^5 steps costs them no object per step; :meth:`rows` builds the
    :class:`StepRow` objects for checks that want them.
    """

    step: tuple[int, ...]
    loss: tuple[float | None, ...]
    lr: tuple[float, ...]
    grad_norm: tuple[float | None, ...]
    batch: tuple[str, ...]
    seq: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.step)

    @classmethod
    def of(cls, rows: Sequence[StepRow]) -> StepTable:
        """The table of ``rows``."""
        return cls(
            tuple(r.step for r in rows),
            tuple(r.loss for r in rows),
            tuple(r.lr for r in rows),
            tuple(r.grad_norm for r in rows),
            tuple(r.batch for r in rows),
            tuple(r.seq for r in rows),
        )

    def rows(self) -> list[StepRow]:
        """One :class:`StepRow` per step, in order. Built with the cyclic collector paused:
        10^5 new objects would otherwise set off collections that walk the whole parsed
        bundle (:func:`~attest.bundle.paused_gc`)."""
        with paused_gc():
            return list(
                map(StepRow, self.step, self.loss, self.lr, self.grad_norm, self.batch, self.seq)
            )

    def select(self, indices: Sequence[int]) -> StepTable:
        """The rows at ``indices``, in that order."""
        return StepTable(
            _pick(self.step, indices),
            _pick(self.loss, indices),
            _pick(self.lr, indices),
            _pick(self.grad_norm, indices),
            _pick(self.batch, indices),
            _pick(self.seq, indices),
        )


@dataclass(frozen=True, eq=False)
class VerifyContext:
    """Inputs of one verification and the parsed views of its bundle (computed once, cached)."""

    bundle: Bundle
    policy: Policy
    trainer_key: TrainerPublicKey | None
    server_verifier: NoteVerifier | None
    model_path: Path | None = None
    data_dir: Path | None = None
    state_dir: Path | None = None
    replay: int = 0
    replay_seed: int | None = None
    progress: Progress | None = None
    parent_bundle: Path | None = None
    parent_depth: int = 0
    signature_mode: str = "all"  # "all": every record signature; "sample", "auto": integrity.py
    trust_note: str | None = None  # set when keys were taken from the bundle on request
    earlier_checkpoints: tuple[str, ...] = ()  # signed notes the verifier fetched before
    _digests: dict[str, ModelDigest] = field(default_factory=dict, repr=False)

    # --- records ---------------------------------------------------------------------------

    @cached_property
    def records(self) -> list[Record]:
        """Every record, in log order (as the bundle lists the leaves)."""
        return [signed.record for signed in self.bundle.records]

    @cached_property
    def _by_type(self) -> dict[str, list[Record]]:
        out: dict[str, list[Record]] = {}
        for record in self.records:
            out.setdefault(record.type, []).append(record)
        return out

    def by_type(self, rtype: str) -> list[Record]:
        """The records of type ``rtype``, in log order (empty if none)."""
        return list(self._by_type.get(rtype, ()))

    def _one(self, rtype: str) -> Record:
        found = self._by_type.get(rtype, [])
        if not found:
            raise FormatError(f"the log has no {rtype} record")
        return found[0]

    @property
    def run_start(self) -> Mapping[str, Any]:
        """The ``run.start`` body; :class:`FormatError` if the log has none."""
        return self._one("run.start").body

    @property
    def weights_init(self) -> Mapping[str, Any]:
        """The ``weights.init`` body; :class:`FormatError` if the log has none."""
        return self._one("weights.init").body

    @property
    def run_end(self) -> Mapping[str, Any] | None:
        """The last ``run.end`` body (a run extended after it ended has an earlier one), or
        ``None`` for a run that has not ended."""
        found = self._by_type.get("run.end", [])
        return found[-1].body if found else None

    @property
    def data_manifest(self) -> Mapping[str, Any] | None:
        found = self._by_type.get("data.manifest", [])
        return found[0].body if found else None

    @property
    def algorithm(self) -> str:
        """The tensor digest algorithm the run declared (``run.start.digest_algorithm``)."""
        value = self.run_start.get("digest_algorithm")
        if not isinstance(value, str):
            raise FormatError("run.start.digest_algorithm must be a string")
        return value

    def checkpoints(self) -> list[Mapping[str, Any]]:
        """The ``weights.checkpoint`` bodies, in log order."""
        return [r.body for r in self._by_type.get("weights.checkpoint", [])]

    @cached_property
    def _logged_table(self) -> StepTable:
        records = self._by_type.get("train.steps", [])
        table = _logged_columns(records)
        return StepTable.of(_logged_rows(records)) if table is None else table

    @cached_property
    def _table(self) -> StepTable:
        logged = self._logged_table
        resumes = sorted((r.seq, int(r.body["step"])) for r in self._by_type.get("run.resume", []))
        seqs, steps = logged.seq, logged.step
        ascending = all(map(operator.le, seqs, seqs[1:]))
        kept: list[int] = []
        done = 0  # rows [0, done) are in `kept` or were superseded
        for seq, step in [*resumes, (len(self.records) + 1, -1)]:
            end = _run_below(seqs, done, seq, ascending=ascending)
            kept.extend(range(done, end))
            done = end
            if step >= 0:  # a resume at `step` supersedes what was logged from `step` on
                kept = [i for i in kept if steps[i] < step]
        return logged if len(kept) == len(seqs) else logged.select(kept)

    @cached_property
    def _steps(self) -> list[StepRow]:
        return self._table.rows()

    @cached_property
    def _logged_steps(self) -> list[StepRow]:
        return self._logged_table.rows()

    def steps(self) -> list[StepRow]:
        """The run's steps in order: every ``train.steps`` row, flattened in log order, except
        rows a later ``run.resume`` superseded (steps logged after the checkpoint a resume
        restarted from). Gaps and duplicates are left as logged: ``integrity.steps`` rejects
        them."""
        return list(self._steps)

    def step_table(self) -> StepTable:
        """:meth:`steps` column by column, for checks that read one field of every step."""
        return self._table

    def logged_steps(self) -> list[StepRow]:
        """Every ``train.steps`` row as logged, superseded ones included."""
        return list(self._logged_steps)

    # --- blobs and digests -----------------------------------------------------------------

    def blob(self, digest: str) -> Any:
        """The blob named ``digest`` (``sha256:<hex>``); :class:`FormatError` if absent."""
        return self.bundle.blob(digest)

    def model_digest(self, tensors_ref: str) -> ModelDigest:
        """The per-tensor :class:`ModelDigest` stored in blob ``tensors_ref`` (parsed once)."""
        cached = self._digests.get(tensors_ref)
        if cached is None:
            cached = ModelDigest.from_json(self.blob(tensors_ref))
            self._digests[tensors_ref] = cached
        return cached

    def init_digest(self) -> ModelDigest:
        """The init's per-tensor digest (blob of ``weights.init.tensors``)."""
        return self.model_digest(str(self.weights_init["tensors"]))

    def final_digest(self) -> ModelDigest | None:
        """The final model's per-tensor digest (blob of ``run.end.tensors``), if the run ended."""
        end = self.run_end
        return None if end is None else self.model_digest(str(end["tensors"]))

    def checkpoint_digest(self, body: Mapping[str, Any]) -> ModelDigest:
        """The per-tensor digest of a ``weights.checkpoint`` body."""
        return self.model_digest(str(body["tensors"]))

    # --- data order ------------------------------------------------------------------------

    @cached_property
    def schedule(self) -> DataSchedule:
        """Step → sample ids, from the ``data.order`` blobs and ``run.resume`` positions."""
        return DataSchedule.from_records(self.records, self.blob)

    def batch_ids(self, step: int) -> list[int] | None:
        """The sample ids of ``step``'s batch under the committed order, or ``None`` when no
        committed order covers that step."""
        return self.schedule.batch_ids(step)

    # --- local files -----------------------------------------------------------------------

    def state_folder(self, step: int) -> Path | None:
        """``state_dir/step-<step>/`` when it exists (weights, optimizer, scheduler, RNG)."""
        if self.state_dir is None:
            return None
        folder = self.state_dir / f"step-{step}"
        return folder if folder.is_dir() else None

    def report_progress(self, task: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(task, done, total)


_BODY = operator.attrgetter("body")
_SEQ = operator.attrgetter("seq")
_FIRST = operator.itemgetter(0)
_STEP_FIELDS = ("first_step", "loss", "lr", "grad_norm", "batch")
_T = TypeVar("_T")


def _logged_rows(records: Sequence[Record]) -> list[StepRow]:
    """The ``train.steps`` rows, one record and one step at a time: the reference that
    :func:`_logged_columns` must agree with, and the path that raises on a malformed body."""
    rows: list[StepRow] = []
    for r in records:
        b = r.body
        first, seq = b["first_step"], r.seq
        for i, (loss, lr, gn, batch) in enumerate(
            zip(b["loss"], b["lr"], b["grad_norm"], b["batch"], strict=True)
        ):
            rows.append(StepRow(first + i, _num(loss), float(lr), _num(gn), str(batch), seq))
    return rows


def _logged_columns(records: Sequence[Record]) -> StepTable | None:
    """The table of :func:`_logged_rows`, built a column at a time by C-level ``map`` and
    ``chain`` (no Python statement per step), or ``None`` when a body is not of the usual shape
    (a missing field, lists of unequal length, a value that is not a number where one is
    expected): then :func:`_logged_rows` builds the table or raises its error.

    The parser makes the four lists JSON arrays; any other sized iterable a hand-built record
    holds is read here as ``zip`` reads it there, or sent to the reference by the exception
    or the value kinds it gives. A log of one step per record (the worst case: the recorder
    usually flushes several) takes each list's only item instead of chaining them.
    """
    try:
        bodies = list(map(_BODY, records))
        firsts, *lists = (list(map(operator.itemgetter(f), bodies)) for f in _STEP_FIELDS)
        if not set(map(type, firsts)) <= {int}:
            return None
        counts = list(map(len, lists[0]))
        if any(list(map(len, c)) != counts for c in lists[1:]):
            return None
        single = counts.count(1) == len(counts)
        flatten = _only_items if single else _chained
        loss, lr, grad_norm, batch = map(flatten, lists)
        losses, norms = _numbers(loss), _numbers(grad_norm)
        if losses is None or norms is None:
            return None
        lrs = lr if set(map(type, lr)) <= {float} else list(map(float, lr))
    except (KeyError, IndexError, TypeError, ValueError, OverflowError):
        return None
    if single:
        steps, seqs = tuple(firsts), tuple(map(_SEQ, records))
    else:
        ends = map(operator.add, firsts, counts)
        steps = tuple(chain.from_iterable(map(range, firsts, ends)))
        seqs = tuple(chain.from_iterable(map(itertools.repeat, map(_SEQ, records), counts)))
    return StepTable(steps, tuple(losses), tuple(lrs), tuple(norms), tuple(map(str, batch)), seqs)


def _only_items(lists: list[Any]) -> list[Any]:
    return list(map(_FIRST, lists))


def _chained(lists: list[Any]) -> list[Any]:
    return list(chain.from_iterable(lists))


def _pick(column: tuple[_T, ...], indices: Sequence[int]) -> tuple[_T, ...]:
    return tuple(map(column.__getitem__, indices))


def _numbers(values: list[Any]) -> list[float | None] | None:
    """``[_num(v) for v in values]`` for JSON numbers and nulls at C speed; ``None`` when a
    value is anything else (``_num`` raises for it)."""
    kinds = set(map(type, values))
    if kinds <= {float}:
        return values
    if kinds <= {float, int}:
        return list(map(float, values))
    if kinds <= {float, int, type(None)}:
        return [None if v is None else float(v) for v in values]
    return None


def _run_below(seqs: Sequence[int], start: int, bound: int, *, ascending: bool) -> int:
    """The end of the run of ``seqs[start:]`` below ``bound``: the first index from ``start``
    whose value is at least ``bound`` (``len(seqs)`` if none). A binary search when ``seqs``
    ascends, as the rows of an untampered log do."""
    if ascending:
        return max(start, bisect.bisect_left(seqs, bound, start))
    return next((i for i in range(start, len(seqs)) if seqs[i] >= bound), len(seqs))


def _num(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FormatError("train.steps values must be numbers or null", got=repr(value)[:40])
    return float(value)


def losses_by_step(rows: Sequence[StepRow]) -> dict[int, float | None]:
    """``{step: loss}`` (the last row wins for a duplicated step)."""
    return {row.step: row.loss for row in rows}
