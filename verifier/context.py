"""What every verifier check reads: the bundle, the policy, the trusted keys and the parsed log.

A :class:`VerifyContext` is built once per verification (:func:`attest.verifier.verify_bundle`)
and handed to each check module (docs/verifying.md, steps 1–5). It holds the inputs — the
bundle, the policy it is judged against, the trainer key and server verifier *from the policy*
that match the bundle (never keys taken from the bundle itself), and the optional local files
(final model, data folder, state folder) — and parses the records once into the views the checks
share: the records in log order, bodies by type, the flattened per-step rows, model digests
from blobs and the step → batch sample-id schedule derived from the committed data order.

Nothing here decides pass or fail. Parsing helpers raise :class:`~attest.errors.FormatError`
when the bundle lacks what they are asked for (a record type, a blob); the check that asked turns
that into a failed or skipped result with the evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attest.bundle import Bundle
from attest.digest import ModelDigest
from attest.errors import FormatError
from attest.keys import TrainerPublicKey
from attest.note import NoteVerifier
from attest.records import Record
from attest.verifier.dataorder import DataSchedule

if TYPE_CHECKING:
    from attest.verifier.policy import Policy

__all__ = ["Progress", "StepRow", "VerifyContext", "losses_by_step"]

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
        """The ``run.end`` body, or ``None`` for a run that has not ended."""
        found = self._by_type.get("run.end", [])
        return found[0].body if found else None

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
    def _logged_steps(self) -> list[StepRow]:
        rows: list[StepRow] = []
        append = rows.append
        for r in self._by_type.get("train.steps", []):
            b = r.body
            first, seq = b["first_step"], r.seq
            for i, (loss, lr, gn, batch) in enumerate(
                zip(b["loss"], b["lr"], b["grad_norm"], b["batch"], strict=True)
            ):
                # _num(x) is x itself for a float: skip the call on the common case.
                append(
                    StepRow(
                        first + i,
                        loss if type(loss) is float else _num(loss),
                        float(lr),
                        gn if type(gn) is float else _num(gn),
                        str(batch),
                        seq,
                    )
                )
        return rows

    @cached_property
    def _steps(self) -> list[StepRow]:
        rows: list[StepRow] = []
        resumes = sorted((r.seq, int(r.body["step"])) for r in self._by_type.get("run.resume", []))
        by_seq = iter(self._logged_steps)
        pending = next(by_seq, None)
        for seq, step in [*resumes, (len(self.records) + 1, -1)]:
            while pending is not None and pending.seq < seq:
                rows.append(pending)
                pending = next(by_seq, None)
            if step >= 0:  # a resume at `step` supersedes what was logged from `step` on
                rows = [row for row in rows if row.step < step]
        return rows

    def steps(self) -> list[StepRow]:
        """The run's steps in order: every ``train.steps`` row, flattened in log order, except
        rows a later ``run.resume`` superseded (steps logged after the checkpoint a resume
        restarted from). Gaps and duplicates are left as logged: ``integrity.steps`` rejects
        them."""
        return list(self._steps)

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


def _num(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FormatError("train.steps values must be numbers or null", got=repr(value)[:40])
    return float(value)


def losses_by_step(rows: Sequence[StepRow]) -> dict[int, float | None]:
    """``{step: loss}`` (the last row wins for a duplicated step)."""
    return {row.step: row.loss for row in rows}
