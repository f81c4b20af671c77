"""The framework-free lineage recorder behind every adapter (DESIGN §4, docs/formats.md).

A :class:`Recorder` owns the run's :class:`~attest.records.RecordWriter` and its
:class:`~attest.client.Spool`. A training loop — Lightning, Hugging Face or plain PyTorch — calls::

    rec = Recorder(key=..., destination=..., run=..., checkpoint_every=50)
    rec.attach(model, optimizer, scheduler)
    rec.start(model_info=ModelInfo.of(model, init_args), seed=seed, config=hparams)
    rec.manifest(dataset=DatasetInfo(...), sampler=SamplerInfo(...))
    at each epoch's start, before its first step: rec.epoch_started()  # (with state_dir)
    for each optimizer step: rec.step(loss=..., lr=..., grad_norm=..., ids=..., epoch=e, batch=b)
    rec.end()

The training thread only takes CPU snapshots (:mod:`~attest.callbacks.snapshot`) and queues
work; one worker thread hashes, writes state files, signs records and appends them to the spool
*in submission order* (:class:`~attest.callbacks.chain.ChainWriter`), so the record sequence is
deterministic. The spool's sender ships them to the destination in the background.

Order of records: ``run.start``, ``weights.init``, ``data.manifest``; then, at each flush point
(every :data:`~attest.records.MAX_STEPS_PER_RECORD` steps, each checkpoint, the end),
``data.order`` records for the sample ids of the steps being flushed followed by their
``train.steps``; ``weights.checkpoint`` every ``checkpoint_every`` steps and on request; a
``run.resume`` after a restart; ``run.end``. Finally the signed lineage statement (once the
receipt covering ``run.end`` names its log checkpoint).

``data.order`` here carries the ids *actually seen*: one record per epoch segment flushed, its
``position`` the epoch's batch index of the first batch it lists and ``batch_size`` the number
of ids per step (global under DDP: all ranks' ids of a step, rank 0 first). A verifier cuts the
ids into steps of ``batch_size`` (the last step of an epoch may be shorter).

Beside this module: :mod:`~attest.callbacks.options` (checking the arguments),
:mod:`~attest.callbacks.steps` (step values and id encodings), :mod:`~attest.callbacks.runstate`
(what ``state_dict`` saves) and :mod:`~attest.callbacks.pending_statement` (the statement).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attest.client import LogDestination, Spool, open_destination, yielding_to_training
from attest.errors import ConfigurationError
from attest.keys import TrainerKey
from attest.records import MAX_STEPS_PER_RECORD, RecordWriter, SignedRecord
from attest.statefiles import capture_rng

from .chain import ChainWriter
from .info import (
    Component,
    DatasetInfo,
    ModelInfo,
    Parent,
    SamplerInfo,
    code_facts,
    environment_facts,
    jsonable,
)
from .options import check_options, load_key, new_run_id
from .pending_statement import PendingStatement
from .runstate import RunState, utc_now
from .snapshot import Snapshot, TrainingState
from .steps import Step

if TYPE_CHECKING:
    import torch

__all__ = ["Recorder", "load_key", "new_run_id"]

log = logging.getLogger("attest.callbacks")


class Recorder:
    """Records one training run. See the module docstring for the call sequence."""

    def __init__(
        self,
        *,
        key: str | os.PathLike[str] | TrainerKey,
        destination: str | os.PathLike[str] | LogDestination,
        run: str | None = None,
        checkpoint_every: int = 50,
        state_dir: str | os.PathLike[str] | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        components: Sequence[Component] = (),
        parent: Parent | None = None,
        export_bundle: str | os.PathLike[str] | None = None,
        flush_timeout: float = 60.0,
        digest_algorithm: str = "sha256",
        token: str | None = None,
    ) -> None:
        check_options(
            checkpoint_every=checkpoint_every,
            run=run,
            components=components,
            parent=parent,
            state_dir=state_dir,
            export_bundle=export_bundle,
        )
        self.key = load_key(key)
        try:
            self.destination = open_destination(destination, token=token)
        except ConfigurationError as exc:
            raise ConfigurationError(f"destination: {exc.message}", got=destination) from None
        self.run = run
        self.checkpoint_every = checkpoint_every
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self._spool_base = Path(spool_dir) if spool_dir is not None else None
        self.components = tuple(components)
        self.parent = parent
        self.export_bundle = Path(export_bundle) if export_bundle is not None else None
        self.flush_timeout = flush_timeout
        self.digest_algorithm = digest_algorithm
        self.model: torch.nn.Module | None = None
        self.optimizer: Any = None
        self.scheduler: Any = None
        self.spool: Spool | None = None
        self.writer: RecordWriter | None = None
        self.state: RunState | None = None
        self._chain: ChainWriter | None = None
        self._steps: list[Step] = []
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="attest-record")
        self._futures: list[Future[None]] = []
        self._statement = PendingStatement(self.key)
        self._checkpointed_at: int | None = None

    # --- plumbing ---------------------------------------------------------------------------

    @property
    def statement(self) -> dict[str, Any] | None:
        """The signed statement (a Sigstore bundle) once the log acknowledged ``run.end``."""
        return self._statement.signed

    @property
    def step_count(self) -> int:
        return self.state.step if self.state is not None else 0

    def attach(self, model: torch.nn.Module, optimizer: Any = None, scheduler: Any = None) -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler

    def _submit(self, fn: Callable[[ChainWriter], None]) -> None:
        """Queue ``fn(chain)`` on the worker thread, after everything queued before it."""
        chain = self._chain

        def run() -> None:
            assert chain is not None, "start() or resume() first"
            with yielding_to_training():
                fn(chain)

        self._futures = [f for f in self._futures if not f.done() or f.exception() is not None]
        self._futures.append(self._worker.submit(run))

    def drain(self) -> None:
        """Wait for queued hashing and signing; re-raise the first failure."""
        futures, self._futures = self._futures, []
        for f in futures:
            f.result()

    def _open(self, run: str) -> Spool:
        base = self._spool_base or Path(
            os.environ.get("ATTEST_SPOOL_DIR", Path.home() / ".cache" / "attest" / "spool")
        )
        signer = getattr(self.destination, "signer", None)
        verifier = getattr(self.destination, "verifier", None) or getattr(signer, "verifier", None)
        self.spool = Spool(base / run, self.destination, run, verifier=verifier)
        self.spool.add_listener(self._statement.offer)
        return self.spool

    def _begin(self, state: RunState, spool: Spool, writer: RecordWriter) -> None:
        """Make ``state`` the run being recorded, its records signed by ``writer``."""
        self.state, self.writer = state, writer
        self._chain = ChainWriter(state, writer, spool, digest_algorithm=self.digest_algorithm)

    # --- run start --------------------------------------------------------------------------

    def start(
        self,
        *,
        model_info: ModelInfo,
        seed: int | None,
        config: Mapping[str, Any] | None = None,
        world_size: int = 1,
        deterministic: bool = False,
        code: Mapping[str, Any] | None = None,
        environment: Mapping[str, Any] | None = None,
        init_recipe: str = "seed-then-construct",
    ) -> None:
        """Write ``run.start`` and ``weights.init`` from the attached model's current weights.

        ``init_recipe`` is ``seed-then-construct`` when the weights are what seeding and
        constructing the model gives, ``loaded`` when they came from a file.
        """
        if self.model is None:
            raise ConfigurationError("attach(model, ...) before start()")
        run = self.run or new_run_id()
        self.run = run
        spool = self._open(run)
        if spool.last_leaf() is not None:
            raise ConfigurationError(
                f"run: {run!r} already has records in the spool {spool.folder}; choose "
                "another run id, or resume from a checkpoint of that run",
                got=run,
            )
        writer = RecordWriter(run, self.key)
        env = jsonable(
            dict(
                environment or environment_facts(world_size=world_size, deterministic=deterministic)
            )
        )
        code_doc = jsonable(dict(code or code_facts()))
        cfg = jsonable(dict(config or {}))
        snap = Snapshot(self.model.state_dict())
        state = RunState(run=run, started=utc_now())
        state.params = {"config": cfg, "seed": seed, "code": code_doc, "environment": env}
        self._begin(state, spool, writer)
        spool.add_create(self.key.public, {"model": model_info.import_path})
        declared = {
            "config": cfg,
            "code": code_doc,
            "environment": env,
            "model": model_info.to_json(),
            "init": {"seed": seed, "recipe": init_recipe},
        }
        components, parent = self.components, self.parent
        self._submit(lambda chain: chain.start(snap, declared, components, parent))

    def manifest(self, *, dataset: DatasetInfo, sampler: SamplerInfo) -> None:
        """Write ``data.manifest``."""
        body = {"dataset": dataset.to_json(), "sampler": sampler.to_json()}
        self._submit(lambda chain: chain.manifest(body))

    # --- steps ------------------------------------------------------------------------------

    def step(
        self,
        *,
        loss: Any,
        lr: float,
        grad_norm: Any,
        ids: Any,
        epoch: int = 0,
        batch: int = 0,
    ) -> None:
        """Record one optimizer step (cheap: tensors are converted on the worker thread).

        ``loss``/``grad_norm`` may be floats, 0-d tensors or None (``grad_norm`` also a list
        of per-tensor norms, whose L2 norm is taken); ``ids`` a sequence of ints
        or a 1-d tensor of the step's sample ids; ``batch`` the epoch's batch index.
        """
        assert self.state is not None
        self._steps.append(Step(loss, lr, grad_norm, ids, epoch, batch))
        self.state.step += 1
        if len(self._steps) >= MAX_STEPS_PER_RECORD:
            self.flush_steps()
        if self.state.step % self.checkpoint_every == 0:
            self.checkpoint()

    def flush_steps(self) -> None:
        """Queue ``data.order`` + ``train.steps`` for the buffered steps."""
        if not self._steps:
            return
        assert self.state is not None
        steps, self._steps = self._steps, []
        first = self.state.step - len(steps)
        self._submit(lambda chain: chain.steps(first, steps))

    # --- checkpoints ------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Queue a ``weights.checkpoint`` of the attached model, optimizer, scheduler and RNGs
        at the current step (once per step)."""
        assert self.state is not None and self.model is not None
        step = self.state.step
        if self._checkpointed_at == step:
            return
        self._checkpointed_at = step
        self.flush_steps()
        copied = TrainingState.capture(self.model, self.optimizer, self.scheduler)
        state_dir = self.state_dir
        self._submit(lambda chain: chain.checkpoint(step, copied, state_dir))

    def epoch_started(self) -> None:
        """Keep what replay needs at an epoch's start; call it just before the epoch's first
        step, once the data loader has drawn the epoch's order (which consumes the global
        generator when the loader has no generator of its own). Nothing happens without
        ``state_dir``.

        It saves the generator state that step's forward pass starts from
        (:func:`attest.statefiles.save_rng_before_step`) and, before a fresh run's first step,
        ``state_dir/step-0/``: the init weights with the optimizer, scheduler and RNGs as the
        first update finds them, so a verifier can replay the interval from the init to the
        first checkpoint (the interval that shows the run did not start from other weights).
        Neither writes a record: ``weights.init`` commits the weights, the verifier requires a
        fresh optimizer, and a wrong scheduler or RNG file can only make an honest replay fail.
        """
        if self.state_dir is None or self.state is None:
            return
        assert self.model is not None
        step, state_dir = self.state.step, self.state_dir
        full = None
        if step == 0:
            full = TrainingState.capture(self.model, self.optimizer, self.scheduler)
        rng = full.rng if full is not None else capture_rng()
        self._submit(lambda chain: chain.epoch_start(step, rng, state_dir, full))

    def generators_moved(self) -> None:
        """Keep the generator state the next step starts from, when code outside the training
        steps drew from the global generators since the last one — a validation run between
        two steps does (starting its data loader draws a seed) — or when this process resumed
        the run (its generators are not the first process's). Call it just before that step;
        replay restores the state there. Nothing happens without ``state_dir``."""
        if self.state_dir is None or self.state is None:
            return
        step, state_dir, rng = self.state.step, self.state_dir, capture_rng()
        self._submit(lambda chain: chain.epoch_start(step, rng, state_dir, None))

    # --- resume -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Plain-typed state that lets a restarted job continue this chain (drains the queue)."""
        self.flush_steps()
        self.drain()
        if self.state is None:
            return {}
        return self.state.to_json()

    def resume(
        self,
        state: Mapping[str, Any],
        *,
        data_position: Mapping[str, int],
    ) -> None:
        """Continue the chain recorded in ``state`` and write ``run.resume``.

        The chain continues after the newest record this spool (or else the destination) has
        seen for the run, so records written after the checkpoint was saved are not overwritten.
        """
        if not state:
            raise ConfigurationError("resume: the checkpoint holds no attest state")
        s = RunState.from_json(state)
        self.run = s.run
        spool = self._open(s.run)
        s.seq, s.prev = self._chain_head(spool, s)
        self._begin(s, spool, RecordWriter(s.run, self.key, seq=s.seq, prev=s.prev))
        self._checkpointed_at = s.step
        # Read now: training may record more steps before the worker runs the task.
        step, from_checkpoint = s.step, s.last_checkpoint
        weights = Snapshot(self.model.state_dict()) if self.model is not None else None
        self._submit(lambda chain: chain.resume(step, from_checkpoint, data_position, weights))

    def _chain_head(self, spool: Spool, s: RunState) -> tuple[int, str | None]:
        env = spool.last_leaf()
        if env is None:
            try:
                records = self.destination.export(s.run).records
                if records:
                    env = records[-1].to_json()
            except Exception as exc:  # the destination may be down: trust the checkpoint
                log.warning("cannot read the log's chain head (%s); using the checkpoint's", exc)
        if env is not None:
            record = SignedRecord.from_json(env).record
            if record.seq + 1 > s.seq:
                return record.seq + 1, record.digest
        return s.seq, s.prev

    # --- end --------------------------------------------------------------------------------

    def end(self) -> bool:
        """Write ``run.end``, sign the statement once the log acknowledges it, flush the spool
        (up to ``flush_timeout`` seconds) and export the bundle if asked.

        Returns True when everything reached the destination; otherwise the spool keeps
        shipping in the background and the rest stays in the spool folder.
        """
        assert self.state is not None and self.model is not None
        self.flush_steps()
        weights = Snapshot(self.model.state_dict())
        self._submit(lambda chain: chain.end(weights, self._statement))
        self.drain()
        done = self.wait_shipped(self.flush_timeout)
        if not done:
            assert self.spool is not None
            log.warning(
                "the log did not acknowledge everything within %ss; %d items stay in %s and "
                "keep shipping in the background",
                self.flush_timeout,
                self.spool.pending,
                self.spool.folder,
            )
        return done

    def wait_shipped(self, timeout: float | None = None) -> bool:
        """Wait until the log acknowledged every record and the statement (after :meth:`end`),
        then export the bundle if asked. False if ``timeout`` seconds passed first."""
        assert self.spool is not None and self.state is not None
        done = (
            self.spool.flush(timeout)
            and self._statement.wait(timeout)
            and self.spool.flush(timeout)
        )
        if done and self.export_bundle is not None:
            self.export_bundle.parent.mkdir(parents=True, exist_ok=True)
            self.destination.export(self.state.run).write(self.export_bundle)
        return done

    def close(self) -> None:
        """Stop the worker; stop the sender too unless items are still pending, in which case
        it keeps retrying in the background (what is left also stays in the spool folder)."""
        self._worker.shutdown(wait=True)
        if self.spool is not None and self.spool.pending == 0:
            self.spool.close(0.0)
