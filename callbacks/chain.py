"""The worker-thread half of the recorder: hashing, state files, signing, spooling.

A :class:`~attest.callbacks.recorder.Recorder` is called on the training thread; it copies what
a record needs and queues a call to a :class:`ChainWriter` on its one worker thread. Every method
here runs there, in submission order, so the chain of records (docs/formats.md §3) comes out the
same whatever the training loop does meanwhile. Apart from the recorder because the two halves
run on different threads: nothing here may run on the training thread, and the recorder leaves
every tensor digest, state file and record signature to this one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attest.canonical import sha256_digest
from attest.client import Spool
from attest.digest import ModelDigest, digest_state_dict
from attest.errors import ConfigurationError
from attest.records import RecordWriter, SignedRecord
from attest.statefiles import (
    StateDigests,
    digest_optimizer,
    digest_rng,
    digest_scheduler,
    save_rng_before_step,
    save_state,
    state_folder_name,
)

from .info import Component, Parent
from .pending_statement import PendingStatement, draft_statement
from .runstate import RunState
from .snapshot import Snapshot, TrainingState
from .steps import Step, finite, ints_json, order_json, sample_ids, segments

if TYPE_CHECKING:
    import torch

__all__ = ["ChainWriter"]

log = logging.getLogger("attest.callbacks")


def _model_ref(d: ModelDigest) -> dict[str, str]:
    return {"algorithm": d.algorithm, "root": d.hex}


class ChainWriter:
    """Writes one run's records into ``spool``, keeping ``state`` in step with ``writer``.
    Worker thread only."""

    def __init__(
        self, state: RunState, writer: RecordWriter, spool: Spool, *, digest_algorithm: str
    ) -> None:
        self.state, self.writer, self.spool = state, writer, spool
        self.digest_algorithm = digest_algorithm

    def _write(self, rtype: str, body: Mapping[str, Any]) -> SignedRecord:
        """Sign the next record and put it in the spool."""
        signed = self.writer.write(rtype, body)
        self.spool.add_records([signed])
        self.state.seq, self.state.prev = self.writer.seq, self.writer.prev
        return signed

    def _blob(self, doc: Any) -> str:
        return self.spool.add_blob(doc)

    def _digest(self, tensors: Mapping[str, torch.Tensor]) -> ModelDigest:
        return digest_state_dict(tensors, algorithm=self.digest_algorithm, workers=1)

    def start(
        self,
        weights: Snapshot,
        declared: Mapping[str, Any],
        components: Sequence[Component],
        parent: Parent | None,
    ) -> None:
        """``run.start`` (``declared`` holds its config, code, environment, model and init)
        and ``weights.init``."""
        tensors = weights.get()
        init = self._digest(tensors)
        comps = [self._component(c, tensors) for c in components]
        self.state.components = comps
        self.state.algorithm = init.algorithm
        self._write(
            "run.start",
            {
                **declared,
                "components": comps,
                "parent": parent.to_json(init.algorithm) if parent is not None else None,
                "digest_algorithm": init.algorithm,
            },
        )
        blob = self._blob(init.to_json())
        self._write("weights.init", {"step": 0, "model": _model_ref(init), "tensors": blob})
        self.state.init_root = init.hex
        self.state.last_checkpoint = init.hex

    def _component(self, c: Component, tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        part = {k: v for k, v in tensors.items() if k.startswith(c.prefix)}
        if not part:
            raise ConfigurationError(
                f"components: no tensor of the model starts with {c.prefix!r}", got=c.name
            )
        d = self._digest(part)
        return {
            "name": c.name,
            "prefix": c.prefix,
            "digest": _model_ref(d),
            "tensors": self._blob(d.to_json()),
            "source": c.source,
            "license": c.license,
        }

    def manifest(self, body: Mapping[str, Any]) -> None:
        signed = self._write("data.manifest", body)
        self.state.manifest = signed.record.digest

    def steps(self, first: int, steps: Sequence[Step]) -> None:
        """``data.order`` for each epoch segment of ``steps``, then their ``train.steps``."""
        losses = [finite(s.loss) for s in steps]
        ids = [sample_ids(s.ids) for s in steps]
        for seg in segments(steps, ids):
            doc = {"epoch": seg.epoch, "ids": seg.ids}
            order = self.spool.add_blob(doc, canonical=order_json(seg.epoch, seg.ids))
            self._write(
                "data.order",
                {
                    "epoch": seg.epoch,
                    "position": seg.position,
                    "batch_size": seg.batch_size,
                    "order": order,
                },
            )
        self._write(
            "train.steps",
            {
                "first_step": first,
                "loss": losses,
                "lr": [float(s.lr) for s in steps],
                "grad_norm": [finite(s.grad_norm) for s in steps],
                "batch": [sha256_digest(ints_json(x)) for x in ids],
            },
        )
        del self.state.losses[first:]
        self.state.losses.extend(losses)

    def epoch_start(
        self, step: int, rng: Mapping[str, Any], state_dir: Path, full: TrainingState | None
    ) -> None:
        """The RNG file of an epoch's start and, given ``full``, the step-0 state folder (no
        record: see :meth:`Recorder.epoch_started`)."""
        save_rng_before_step(state_dir, step, rng)
        if full is not None:
            save_state(
                state_dir / state_folder_name(0),
                model=full.weights.get(),
                optimizer=full.optimizer,
                scheduler=full.scheduler,
                rng=full.rng,
                relative_to=state_dir,
            )

    def checkpoint(self, step: int, copied: TrainingState, state_dir: Path | None) -> None:
        """``weights.checkpoint``, saving the state files under ``state_dir`` if given."""
        tensors = copied.weights.get()
        d = self._digest(tensors)
        blob = self._blob(d.to_json())
        if state_dir is not None:
            digests = save_state(
                state_dir / state_folder_name(step),
                model=tensors,
                optimizer=copied.optimizer,
                scheduler=copied.scheduler,
                rng=copied.rng,
                relative_to=state_dir,
            )
        else:
            digests = StateDigests(
                digest_optimizer(copied.optimizer),
                digest_scheduler(copied.scheduler),
                digest_rng(copied.rng),
                None,
            )
        self._write(
            "weights.checkpoint",
            {
                "step": step,
                "model": _model_ref(d),
                "tensors": blob,
                "state": digests.to_json(),
                "prev_checkpoint": self.state.last_checkpoint,
            },
        )
        self.state.last_checkpoint = d.hex
        self.state.checkpoints.append([step, d.hex])

    def resume(
        self,
        step: int,
        from_checkpoint: str | None,
        data_position: Mapping[str, int],
        weights: Snapshot | None,
    ) -> None:
        """``run.resume``; it names the resumed weights too when they are not the checkpoint's."""
        body: dict[str, Any] = {
            "step": step,
            "from_checkpoint": from_checkpoint,
            "data_position": dict(data_position),
        }
        if weights is not None:
            d = self._digest(weights.get())
            if d.hex != from_checkpoint:
                log.warning(
                    "resumed weights %s are not the logged checkpoint %s", d.hex, from_checkpoint
                )
                body["model"] = _model_ref(d)
        self._write("run.resume", body)

    def end(self, weights: Snapshot, statement: PendingStatement) -> None:
        """``run.end``; then ``statement`` is signed once the log acknowledges it."""
        s = self.state
        d = self._digest(weights.get())
        blob = self._blob(d.to_json())
        signed = self._write(
            "run.end",
            {
                "step": s.step,
                "model": _model_ref(d),
                "tensors": blob,
                "last_checkpoint": s.last_checkpoint,
            },
        )
        statement.arm(signed.record.seq, lambda note: draft_statement(s, d, note), self.spool)
