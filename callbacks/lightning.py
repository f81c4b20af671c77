"""``LineageCallback``: the Lightning adapter over :class:`~attest.callbacks.recorder.Recorder`
(DESIGN §4; hook order per REFERENCES "Lightning 2.6").

* ``setup``: rank zero builds the recorder (other ranks only take part in gathering ids).
* ``on_fit_start``: without ``ckpt_path``, ``run.start`` and ``weights.init`` from the weights as
  they are now (recipe ``seed-then-construct``, seed from ``PL_GLOBAL_SEED``). With a checkpoint
  that carries no attest state the weights are recorded with recipe ``loaded``: resumed weights
  are never called "init".
* ``on_train_start``: on a resume, ``run.resume`` naming the logged checkpoint root (the resumed
  weights are hashed and compared); ``data.manifest`` on a fresh run.
* ``on_train_batch_start``: at an epoch's first batch (the loader has drawn the epoch's order
  by then), the state replay needs there: the RNG state and, before a fresh run's first step,
  the step-0 state files (with ``state_dir``).
* ``on_before_optimizer_step``: learning rate and total gradient L2 norm (before clipping).
* ``on_train_batch_end``: loss (``outputs["loss"]``, summed over accumulated micro-batches, which
  Lightning has already divided by the accumulation count) and sample ids (``batch[0]`` or a
  :class:`~attest.callbacks.sampler.RecordingBatchSampler`); under DDP the ids of all ranks are
  gathered (rank order) so the recorded batch is the global one.
* ``state_dict`` (called when Lightning saves a checkpoint): a ``weights.checkpoint`` at that step,
  then the chain state, so a resume continues the same chain. ``load_state_dict`` keeps it.
* ``on_fit_end``: ``run.end``, statement, flush, bundle export.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from attest.client import LogDestination, open_destination
from attest.errors import ConfigurationError
from attest.keys import TrainerKey

from .info import Component, DatasetInfo, ModelInfo, Parent, SamplerInfo, jsonable
from .options import check_options, load_key
from .recorder import Recorder
from .sampler import RecordingBatchSampler

__all__ = ["LineageCallback"]


class LineageCallback(Callback):
    """Attest a Lightning training run: ``Trainer(callbacks=[LineageCallback(key=..., destination=...)])``."""

    def __init__(
        self,
        *,
        key: str | os.PathLike[str] | TrainerKey,
        destination: str | os.PathLike[str] | LogDestination,
        run: str | None = None,
        checkpoint_every: int = 50,
        state_dir: str | os.PathLike[str] | None = None,
        components: Sequence[Component] = (),
        parent: Parent | None = None,
        dataset: DatasetInfo | None = None,
        export_bundle: str | os.PathLike[str] | None = None,
        config: Mapping[str, Any] | None = None,
        ids_from: str = "batch",
        spool_dir: str | os.PathLike[str] | None = None,
        flush_timeout: float = 60.0,
        token: str | None = None,
    ) -> None:
        trainer_key = load_key(key)
        try:
            open_destination(destination, token=token)
        except ConfigurationError as exc:
            raise ConfigurationError(f"destination: {exc.message}", got=str(destination)) from None
        if ids_from not in ("batch", "sampler"):
            raise ConfigurationError(
                "ids_from must be 'batch' or 'sampler'", expected=["batch", "sampler"], got=ids_from
            )
        if dataset is not None and not isinstance(dataset, DatasetInfo):
            raise ConfigurationError("dataset must be a DatasetInfo", got=type(dataset).__name__)
        # Plain values only, so ddp_spawn can pickle the callback; the recorder is built in setup.
        self._options: dict[str, Any] = {
            "key": trainer_key.to_pem(),
            "destination": destination
            if not isinstance(destination, os.PathLike)
            else os.fspath(destination),
            "run": run,
            "checkpoint_every": checkpoint_every,
            "state_dir": state_dir,
            "spool_dir": spool_dir,
            "components": tuple(components),
            "parent": parent,
            "export_bundle": export_bundle,
            "flush_timeout": flush_timeout,
            "token": token,
        }
        check_options(**{k: v for k, v in self._options.items() if k in _CHECKED})
        self.dataset, self.config, self.ids_from = dataset, config, ids_from
        self.recorder: Recorder | None = None
        self._params: list[torch.nn.Parameter] = []
        self._resume_state: dict[str, Any] | None = None
        self._reset_step()
        self._seen_step = 0
        # Something outside the training steps moved the global generators since the last step
        # (a validation run, or a new process resuming the run): keep the next step's state.
        self._rng_moved = False

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["recorder"] = None
        state["_params"] = []
        return state

    def _reset_step(self) -> None:
        self._loss: Any = None
        self._ids: list[Any] = []
        self._first_batch: int | None = None
        self._lr = 0.0
        self._grad_norm: Any = None

    @property
    def _opts_for_recorder(self) -> dict[str, Any]:
        opts = dict(self._options)
        opts["key"] = TrainerKey.from_pem(opts["key"])
        return opts

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.is_global_zero and self.recorder is None:
            self.recorder = Recorder(**self._opts_for_recorder)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rec = self.recorder
        if rec is None or (trainer.ckpt_path is not None and self._resume_state):
            return
        rec.attach(pl_module)
        seed = os.environ.get("PL_GLOBAL_SEED")
        init_args = dict(getattr(pl_module, "hparams", {}) or {})
        rec.start(
            model_info=ModelInfo.of(pl_module, init_args),
            seed=int(seed) if seed is not None else None,
            config=_run_config(trainer, init_args, self.config),
            world_size=trainer.world_size,
            deterministic=torch.are_deterministic_algorithms_enabled(),
            init_recipe="seed-then-construct" if trainer.ckpt_path is None else "loaded",
        )

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._seen_step = trainer.global_step  # restored by now on a resume
        self._reset_step()
        self._rng_moved = True  # a resumed run's first batch need not be an epoch's first
        rec = self.recorder
        if self.ids_from == "sampler" and not isinstance(
            getattr(trainer.train_dataloader, "batch_sampler", None), RecordingBatchSampler
        ):
            raise ConfigurationError(
                "ids_from='sampler' needs a DataLoader with batch_sampler=RecordingBatchSampler(...)"
            )
        if rec is None:
            return
        self._params = [p for p in pl_module.parameters() if p.requires_grad]
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        configs = trainer.lr_scheduler_configs
        rec.attach(pl_module, optimizer, configs[0].scheduler if configs else None)
        if self._resume_state and trainer.ckpt_path is not None:
            progress = trainer.fit_loop.epoch_loop.batch_progress.current.ready
            stateful = hasattr(trainer.train_dataloader, "state_dict")
            rec.resume(
                self._resume_state,
                data_position={
                    "epoch": trainer.current_epoch,
                    "batch": progress,
                    "restarted_at": progress if stateful else 0,
                },
            )
            return
        rec.manifest(dataset=self._dataset_info(trainer), sampler=_sampler_info(trainer))

    @override
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.recorder is None:
            return
        if batch_idx == 0:
            self.recorder.epoch_started()
        elif self._rng_moved:
            self.recorder.generators_moved()
        self._rng_moved = False

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # A validation run between two training steps draws from the global generators (its
        # loader's seed, random layers it runs): the next step's state must be kept for replay.
        if not trainer.sanity_checking:
            self._rng_moved = True

    @override
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self.recorder is None:
            return
        self._lr = float(optimizer.param_groups[0]["lr"])
        grads = [p.grad for p in self._params if p.grad is not None]
        if grads:  # per-tensor norms now; the total is taken on the recorder's thread
            self._grad_norm = torch._foreach_norm(grads)

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        ids = self._batch_ids(trainer, batch, batch_idx)
        if self.recorder is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor):
            loss = loss.detach()
            self._loss = loss if self._loss is None else self._loss + loss
        if self._first_batch is None:
            self._first_batch = batch_idx
        self._ids.append(ids)
        if trainer.global_step > self._seen_step:  # the optimizer stepped on this batch
            self._seen_step = trainer.global_step
            self.recorder.step(
                loss=self._loss,
                lr=self._lr,
                grad_norm=self._grad_norm,
                ids=torch.cat(self._ids) if len(self._ids) > 1 else self._ids[0],
                epoch=trainer.current_epoch,
                batch=self._first_batch,
            )
            self._reset_step()

    def _batch_ids(self, trainer: Trainer, batch: Any, batch_idx: int) -> torch.Tensor:
        found: Any
        if self.ids_from == "sampler":
            sampler = trainer.train_dataloader.batch_sampler  # type: ignore[union-attr]
            found = torch.as_tensor(sampler.ids_for(batch_idx), dtype=torch.long)
        elif isinstance(batch, Mapping):
            found = batch.get("ids", batch.get("index"))
        else:
            found = batch[0] if isinstance(batch, Sequence) and len(batch) else None
        ids = _as_ids(found, batch)
        if trainer.world_size > 1:  # collective: every rank takes part, rank order
            ids = trainer.strategy.all_gather(ids.to(trainer.strategy.root_device)).reshape(-1)
        return ids.cpu()

    @override
    def state_dict(self) -> dict[str, Any]:
        rec = self.recorder
        if rec is None or rec.state is None:
            return {}
        rec.checkpoint()  # Lightning is saving: log the weights of this step first
        return rec.state_dict()

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume_state = dict(state_dict) if state_dict else None

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.recorder is not None and self.recorder.state is not None:
            self.recorder.end()

    @override
    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        if self.recorder is not None and self.recorder.state is not None:
            self.recorder.flush_steps()
            self.recorder.drain()

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.recorder is not None and stage == "fit":
            self.recorder.close()

    def _dataset_info(self, trainer: Trainer) -> DatasetInfo:
        if self.dataset is not None:
            return self.dataset
        dataset = getattr(trainer.train_dataloader, "dataset", None)
        size = len(dataset) if hasattr(dataset, "__len__") else None  # type: ignore[arg-type]
        fingerprint = getattr(dataset, "fingerprint", None)
        fp = fingerprint() if callable(fingerprint) else fingerprint
        return DatasetInfo(type(dataset).__name__, size, fp if isinstance(fp, str) else None)


def _as_ids(value: Any, batch: Any) -> torch.Tensor:
    """The batch's sample ids as a 1-d integer tensor; a clear error for anything else (the
    features or token ids of a plain ``(x, y)`` batch would otherwise be logged as the order)."""
    try:
        ids = torch.as_tensor(value).detach() if value is not None else None
    except (TypeError, ValueError, RuntimeError):
        ids = None
    if (
        ids is None
        or ids.ndim > 1
        or ids.dtype in (torch.bool, torch.uint8)
        or (ids.is_floating_point() or ids.is_complex())
    ):
        where = (
            "the batch has no 'ids' or 'index' entry"
            if isinstance(batch, Mapping)
            else ("batch[0] is not one integer per sample")
        )
        got = None if ids is None else f"dtype {ids.dtype}, shape {tuple(ids.shape)}"
        raise ConfigurationError(
            f"attest records each step's sample ids (dataset indices), but {where}; have the "
            "Dataset return (index, ...) items, give dict batches an 'ids' entry, or pass "
            "ids_from='sampler' with a RecordingBatchSampler",
            got=got,
        )
    return ids.reshape(-1)


_CHECKED = ("checkpoint_every", "run", "components", "parent", "state_dir", "export_bundle")


def _run_config(
    trainer: Trainer, hparams: Mapping[str, Any], extra: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``run.start.config``: the module's hyperparameters and the trainer settings a replay
    depends on (accumulation, clipping), then the caller's ``config`` on top. The settings are
    facts of the run, so a caller's ``trainer`` entry adds to them and never replaces them."""
    settings = {
        "max_steps": trainer.max_steps,
        "max_epochs": trainer.max_epochs,
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "gradient_clip_val": jsonable(trainer.gradient_clip_val),
        "gradient_clip_algorithm": jsonable(
            getattr(trainer.gradient_clip_algorithm, "value", trainer.gradient_clip_algorithm)
        ),
        "precision": str(trainer.precision),
    }
    config: dict[str, Any] = {"hparams": jsonable(dict(hparams)), **(extra or {})}
    given = config.get("trainer")
    config["trainer"] = {**(given if isinstance(given, Mapping) else {}), **settings}
    return config


def _sampler_info(trainer: Trainer) -> SamplerInfo:
    from torch.utils.data import DistributedSampler, RandomSampler, SequentialSampler

    loader = trainer.train_dataloader
    batch_sampler = getattr(loader, "batch_sampler", None)
    inner = getattr(batch_sampler, "batch_sampler", batch_sampler)  # RecordingBatchSampler
    sampler = getattr(inner, "sampler", getattr(loader, "sampler", None))
    seed = os.environ.get("PL_GLOBAL_SEED")
    kind, s = "other", None
    if isinstance(sampler, DistributedSampler):
        kind, s = "distributed", int(sampler.seed)
    elif isinstance(sampler, RandomSampler):
        kind, s = "random", int(seed) if seed is not None else None
    elif isinstance(sampler, SequentialSampler):
        kind = "sequential"
    batch_size = int(getattr(inner, "batch_size", None) or getattr(loader, "batch_size", 0) or 0)
    return SamplerInfo(
        kind=kind,
        seed=s,
        batch_size=batch_size,
        drop_last=bool(getattr(inner, "drop_last", False)),
        world_size=trainer.world_size,
    )
