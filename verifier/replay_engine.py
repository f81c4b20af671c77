"""The re-execution engine of replay: a run's model rebuilt and stepped as Lightning would
(docs/verifying.md, "replay").

**Re-execution.** The model is rebuilt from ``run.start.model`` (:mod:`attest.verifier.rebuild`),
its optimizer and scheduler come from its own ``configure_optimizers()`` (LightningModule
conventions: an optimizer, a list, or ``{"optimizer", "lr_scheduler": {"scheduler", "interval",
"frequency"}}``; one optimizer), and each step is what Lightning's automatic optimisation does:
loss of the step and its backward pass (:func:`~attest.verifier.rebuild.step_loss`: micro-batch
by micro-batch under gradient accumulation, rank by rank for a data-parallel run), gradient
clipping when
``run.start.config`` names ``gradient_clip_val`` (top level or under ``"trainer"``), optimizer
step, scheduler step for ``interval="step"`` (``"epoch"`` at an epoch boundary of the committed
order). Batches are the committed sample ids, whose digest must equal the logged one. A model
that overrides ``optimizer_step`` may set the learning rate there (Lightning's warm-up recipe):
replay then sets each step's rate from the log (the first group's; the others in proportion).

Before step ``s`` the generators are set from ``state_dir/rng-before-step-<s>.json`` when the
callback kept one: at an epoch's start (a loader without its own generator draws from the global
one there), after a validation run between two steps (its loader draws a seed too) and at a
resumed process's first step. A model with random layers (dropout) would otherwise draw other
masks in replay than in training.

:func:`run_segment` loads a verified checkpoint state into the :class:`Engine` and runs one
:class:`~attest.verifier.replay_plan.Segment`, stopping at the first step whose batch cannot be
checked; the :class:`Outcome` (losses, final weights) is what :mod:`attest.verifier.replay`
compares with the log.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from attest.canonical import canonical_json, sha256_digest
from attest.statefiles import LoadedState, load_rng_before_step, restore_rng, rng_steps
from attest.verifier.context import VerifyContext
from attest.verifier.rebuild import (
    RebuildError,
    StepRecipe,
    build_dataset,
    build_model,
    step_loss,
)
from attest.verifier.replay_plan import Segment

if TYPE_CHECKING:
    import torch

__all__ = ["Engine", "Outcome", "run_segment"]


class Engine:
    """The rebuilt model, optimizer and scheduler, and the committed batches."""

    def __init__(self, ctx: VerifyContext) -> None:
        start = ctx.run_start
        spec = start["model"]
        self.ctx = ctx
        seed = start.get("init", {}).get("seed")
        self.model = build_model(
            str(spec["import_path"]), spec.get("init_args", {}), seed=int(seed or 0)
        )
        config = start.get("config", {})
        data = config.get("data") if isinstance(config, dict) else None
        if not isinstance(data, dict):
            raise RebuildError(
                "run.start.config.data does not name the dataset (import_path, init_args)",
                module="(dataset)",
            )
        self.dataset = build_dataset(data, data_dir=ctx.data_dir)
        trainer = config.get("trainer", {}) if isinstance(config.get("trainer"), dict) else {}
        self.clip = config.get("gradient_clip_val", trainer.get("gradient_clip_val"))
        self.clip_algo = config.get(
            "gradient_clip_algorithm", trainer.get("gradient_clip_algorithm", "norm")
        )
        self.recipe = StepRecipe.of_run(config, ctx.data_manifest)
        self.rows = {r.step: r for r in ctx.steps()}
        # A model that overrides optimizer_step may set the learning rate itself (Lightning's
        # documented warm-up recipe does): replay then takes each step's rate from the log.
        self.lr_from_log = _overrides_optimizer_step(self.model)
        self.epochs = {s.start: s.epoch for s in ctx.schedule.segments}
        self.rng_steps = frozenset() if ctx.state_dir is None else rng_steps(ctx.state_dir)

    def load(self, state: LoadedState) -> None:
        import torch

        self.model.load_state_dict(state.model)
        self.opt, self.sched, self.interval, self.freq = _optimizers(self.model)
        # Optimizers may keep the loaded tensors (no copy): load copies so ``state`` stays as read.
        self.opt.load_state_dict(copy.deepcopy(state.optimizer))
        if self.sched is not None and state.scheduler is not None:
            self.sched.load_state_dict(copy.deepcopy(dict(state.scheduler)))
        restore_rng(state.rng)
        self.model.train()
        torch.set_grad_enabled(True)

    def step(self, step: int) -> tuple[float, str | None]:
        """Run update ``step``; return the loss before it and a problem with the batch, if any."""
        import torch

        if step in self.rng_steps and self.ctx.state_dir is not None:
            rng = load_rng_before_step(self.ctx.state_dir, step)
            if rng is not None:  # something outside the steps drew from the global generators
                restore_rng(rng)
        ids = self.ctx.batch_ids(step)
        row = self.rows.get(step)
        if ids is None or row is None:
            return math.nan, f"step {step} has no committed batch or no logged row"
        if sha256_digest(canonical_json(ids)) != row.batch:
            return math.nan, f"step {step}: the committed order's batch digest ≠ the logged one"
        self.opt.zero_grad(set_to_none=True)
        loss = step_loss(
            self.model, self.dataset, ids, recipe=self.recipe, batch_idx=step, backward=True
        )
        if self.clip:
            params = [p for p in self.model.parameters() if p.grad is not None]
            if self.clip_algo == "value":
                torch.nn.utils.clip_grad_value_(params, float(self.clip))
            else:
                torch.nn.utils.clip_grad_norm_(params, float(self.clip))
        if self.lr_from_log:
            _set_lr(self.opt, row.lr)
        self.opt.step()
        if self.sched is not None:
            boundary = (step + 1) in self.epochs  # a new epoch's order starts there
            if (self.interval == "step" and (step + 1) % self.freq == 0) or (
                self.interval == "epoch" and boundary
            ):
                self.sched.step()
        return float(loss.item()), None

    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}


def _optimizers(model: Any) -> tuple[Any, Any, str, int]:
    import torch

    if getattr(model, "automatic_optimization", True) is False:
        raise RebuildError(
            "replay re-runs Lightning's automatic optimization; this model steps its optimizer"
            " itself (automatic_optimization = False)",
            module=type(model).__module__,
        )
    conf = getattr(model, "configure_optimizers", None)
    if not callable(conf):
        raise RebuildError(
            "the model has no configure_optimizers(); replay needs it to rebuild the optimizer",
            module=type(model).__module__,
        )
    out = conf()
    sched: Any = None
    interval, freq = "epoch", 1
    if isinstance(out, (list, tuple)) and len(out) == 2 and isinstance(out[0], (list, tuple)):
        opts, scheds = list(out[0]), list(out[1])
        out = {"optimizer": opts[0], "lr_scheduler": scheds[0] if scheds else None}
        if len(opts) != 1:
            raise RebuildError("replay supports one optimizer", module=type(model).__module__)
    if isinstance(out, (list, tuple)):
        out = out[0]
    if isinstance(out, Mapping):
        lrs = out.get("lr_scheduler")
        if isinstance(lrs, Mapping):
            sched = lrs.get("scheduler")
            interval, freq = str(lrs.get("interval", "epoch")), int(lrs.get("frequency", 1))
        else:
            sched = lrs
        out = out["optimizer"]
    if not isinstance(out, torch.optim.Optimizer):
        raise RebuildError(
            "configure_optimizers() returned no optimizer", module=type(model).__module__
        )
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        raise RebuildError(
            "replay cannot step ReduceLROnPlateau: it follows a monitored metric that replay does"
            " not recompute (scratch.update_bound still holds the updates to the logged rates)",
            module=type(model).__module__,
        )
    return out, sched, interval, freq


def _overrides_optimizer_step(model: Any) -> bool:
    """Whether a class between ``model``'s own and Lightning's defines ``optimizer_step``."""
    for cls in type(model).__mro__:
        if cls.__module__.startswith(("lightning.", "pytorch_lightning.")):
            return False
        if "optimizer_step" in vars(cls):
            return True
    return False


def _set_lr(optimizer: Any, lr: float) -> None:
    """Give the first parameter group the logged rate ``lr`` and the others the same rate times
    their ratio to the first (the log records the first group's rate only)."""
    groups = optimizer.param_groups
    first = float(groups[0]["lr"])
    for group in groups[1:]:
        group["lr"] = lr * float(group["lr"]) / first if first else lr
    groups[0]["lr"] = lr


@dataclass
class Outcome:
    """What one run of a segment computed: the loss of each step, the weights at its end."""

    losses: list[float]
    problem: str | None = None
    divergent_step: int | None = None
    weights: dict[str, Any] | None = None


def run_segment(engine: Engine, seg: Segment, state: LoadedState, tick: Any) -> Outcome:
    """Load ``state`` and run ``seg``; stop at the first step whose batch cannot be checked."""
    engine.load(state)
    out = Outcome([])
    for step in range(seg.start, seg.end):
        loss, problem = engine.step(step)
        out.losses.append(loss)
        tick()
        if problem is not None:
            out.problem, out.divergent_step = problem, step
            return out
    out.weights = engine.weights()
    return out
