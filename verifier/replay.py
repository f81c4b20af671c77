"""Check 4: re-execute verifier-chosen training segments (docs/verifying.md, "replay").

**Segments.** A segment is a checkpoint interval ``[a, b)``: the state files of checkpoint ``a``
(``state_dir/step-a/``: weights, optimizer, LR scheduler, RNG) are reloaded and steps ``a … b−1``
are re-run on the committed batches. Every state file is used only after its digest equals the
one in the signed ``weights.checkpoint`` record (the weights' ``attest-tensors-v1`` root, the
``state.optimizer`` / ``scheduler`` / ``rng`` digests of :mod:`attest.statefiles`). The verifier
picks the segments, never the trainer: half (rounded up) are the intervals with the largest
weight change ``‖θ_b − θ_a‖`` (from state files; the logged loss drop where those are missing),
the rest are drawn at random with ``--replay-seed`` (or a fresh seed, reported so the choice can
be repeated). The total stays within the policy's budget, ``statistics.replay_budget`` (default
:data:`DEFAULT_BUDGET`, 5 % of the training steps); an interval longer than what is left is
replayed as a prefix and compared on losses only.

**Re-execution.** The model is rebuilt from ``run.start.model`` (:mod:`attest.verifier.rebuild`),
its optimizer and scheduler come from its own ``configure_optimizers()`` (LightningModule
conventions: an optimizer, a list, or ``{"optimizer", "lr_scheduler": {"scheduler", "interval",
"frequency"}}``; one optimizer), and each step is what Lightning's automatic optimisation does:
loss of the step and its backward pass (:func:`~attest.verifier.rebuild.step_loss`: micro-batch
by micro-batch under gradient accumulation), gradient clipping when
``run.start.config`` names ``gradient_clip_val`` (top level or under ``"trainer"``), optimizer
step, scheduler step for ``interval="step"`` (``"epoch"`` at an epoch boundary of the committed
order). Batches are the committed sample ids, whose digest must equal the logged one.

**Comparison.** *Exact mode* — the run declared ``environment.deterministic`` and ran on the CPU
with the verifier's CPU capability; replay uses the recorded thread count — requires every
recomputed loss to equal the logged one (to float32 rounding, 1e-6 relative) and the replayed
weights' digest to equal the record at ``b``. Otherwise *tolerance mode*: the first segment is
replayed twice with different thread counts; the tolerance is ten times that measured noise, at
least :data:`LOSS_FLOOR` (relative, losses) and :data:`WEIGHT_FLOOR` (relative L2, weights, which
need the state file at ``b``); both are reported. A segment stops at its first disagreement: the
*first divergent step* (a loss at step ``i`` that differs, or the checkpoint at ``b``) is found in
the same pass, since losses are compared at every step and weights at the checkpoint. At the
first step of an epoch the generators are set from ``state_dir/rng-before-step-<s>.json`` when the
callback kept it: a loader without its own generator draws from the global one at an epoch's
start, which a model with random layers (dropout) would otherwise not see in replay.

The cost is reported as replayed steps over training steps, noise replays included.
"""

from __future__ import annotations

import copy
import itertools
import math
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attest.canonical import canonical_json, sha256_digest
from attest.digest import digest_safetensors, digest_state_dict
from attest.errors import AttestError, DigestMismatchError, FormatError
from attest.statefiles import LoadedState, load_rng_before_step, load_state, restore_rng
from attest.verifier.context import VerifyContext
from attest.verifier.rebuild import (
    RebuildError,
    StepRecipe,
    build_dataset,
    build_model,
    preserved_rng,
    step_loss,
)
from attest.verifier.result import Basis, CheckResult, Status

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_BUDGET",
    "LOSS_FLOOR",
    "WEIGHT_FLOOR",
    "Segment",
    "check_replay",
    "plan_segments",
    "recorded_root",
    "verified_state",
    "verified_weights",
]

DEFAULT_BUDGET = 0.05
LOSS_FLOOR = 1e-4
WEIGHT_FLOOR = 1e-5
_EXACT_LOSS = 1e-6
_TITLE = "Replay of verifier-chosen segments"


# --- verified state files ------------------------------------------------------------------


def recorded_root(ctx: VerifyContext, step: int) -> str | None:
    """The model root (hex) the log commits to at ``step`` (the init for 0, else the last
    ``weights.checkpoint`` at that step)."""
    if step == 0:
        return str(ctx.weights_init["model"]["root"])
    found = [c for c in ctx.checkpoints() if c.get("step") == step]
    return str(found[-1]["model"]["root"]) if found else None


def verified_weights(ctx: VerifyContext, step: int) -> tuple[Path | None, str]:
    """``state_dir/step-<step>/model.safetensors`` if its digest equals the log's; else
    ``(None, why)``."""
    folder = ctx.state_folder(step)
    if folder is None or not (folder / "model.safetensors").is_file():
        return None, f"no state file for step {step}"
    root = recorded_root(ctx, step)
    if root is None:
        return None, f"no checkpoint record at step {step}"
    got = digest_safetensors(folder / "model.safetensors", algorithm=ctx.algorithm).hex
    if got != root:
        return None, f"step-{step}/model.safetensors digest {got[:16]}… ≠ logged {root[:16]}…"
    return folder / "model.safetensors", "ok"


def verified_state(ctx: VerifyContext, step: int) -> LoadedState:
    """All state files of checkpoint ``step``, each checked against the record's digests."""
    folder = ctx.state_folder(step)
    if folder is None:
        raise FormatError(f"no state folder step-{step} in the state directory")
    bodies = [c for c in ctx.checkpoints() if c.get("step") == step]
    if not bodies and step != 0:
        raise FormatError(f"no weights.checkpoint record at step {step}")
    state = load_state(folder)
    got_model = digest_state_dict(state.model, algorithm=ctx.algorithm).hex
    if not bodies:
        # The init: weights.init commits the weights only. The optimizer must be fresh (no
        # per-parameter state); scheduler and RNG files are used as given (a wrong one can
        # only make an honest replay fail).
        root = recorded_root(ctx, 0)
        if got_model != root:
            raise DigestMismatchError(
                "step-0 model state file does not match weights.init", expected=root, got=got_model
            )
        if state.optimizer.get("state"):
            raise DigestMismatchError(
                "step-0 optimizer state must be that of a fresh optimizer",
                expected="no per-parameter state",
                got=f"{len(state.optimizer['state'])} parameter(s) with state",
            )
        return state
    body = bodies[-1]
    claims = body.get("state") or {}
    pairs = [
        ("model", str(body["model"]["root"]), got_model),
        ("optimizer", claims.get("optimizer"), state.digests.optimizer),
        ("scheduler", claims.get("scheduler"), state.digests.scheduler),
        ("rng", claims.get("rng"), state.digests.rng),
    ]
    for what, expected, got in pairs:
        if expected != got:
            raise DigestMismatchError(
                f"step-{step} {what} state file does not match the checkpoint record",
                expected=expected,
                got=got,
            )
    return state


# --- segment choice ------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """Steps ``start … end−1`` replayed from the checkpoint at ``start``."""

    start: int
    end: int
    reason: str  # "largest update" | "random"
    partial: bool = False  # a prefix of the interval: losses compared, weights not

    @property
    def steps(self) -> int:
        return self.end - self.start


def plan_segments(
    intervals: list[tuple[int, int]],
    scores: Mapping[tuple[int, int], float],
    *,
    count: int,
    budget_steps: int,
    seed: int,
) -> list[Segment]:
    """Choose ``count`` intervals: half by largest score, the rest at random, within budget."""
    import random

    chosen: list[Segment] = []
    left = budget_steps
    ranked = sorted(intervals, key=lambda iv: (-scores.get(iv, 0.0), iv))
    n_top = (count + 1) // 2
    pool = list(intervals)
    rng = random.Random(seed)

    def take(iv: tuple[int, int], reason: str) -> None:
        nonlocal left
        pool.remove(iv)
        length = min(iv[1] - iv[0], left)
        if length > 0:
            chosen.append(Segment(iv[0], iv[0] + length, reason, length < iv[1] - iv[0]))
            left -= length

    for iv in ranked[:n_top]:
        take(iv, "largest update")
    while len(chosen) < count and pool and left > 0:
        take(rng.choice(pool), "random")
    return sorted(chosen, key=lambda s: s.start)


# --- the replay engine ---------------------------------------------------------------------


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Engine:
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
        self.epochs = {s.start: s.epoch for s in ctx.schedule.segments}

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

        if step in self.epochs and self.ctx.state_dir is not None:
            rng = load_rng_before_step(self.ctx.state_dir, step)
            if rng is not None:  # the loader drew from the global generator at the epoch start
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
    return out, sched, interval, freq


# --- the check -----------------------------------------------------------------------------


def _skip(why: str, **evidence: Any) -> list[CheckResult]:
    return [CheckResult("replay.segments", _TITLE, Status.SKIPPED, why, Basis.REPLAY, evidence)]


def _exact_mode(env: Mapping[str, Any]) -> bool:
    import torch

    device = str(env.get("device") or "cpu")
    return (
        env.get("deterministic") is True
        and device.startswith("cpu")
        and env.get("cpu_capability") == torch.backends.cpu.get_cpu_capability()
        and isinstance(env.get("threads"), int)
    )


def _rel_l2(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    import torch

    num = sum(float(torch.sum((a[k].double() - b[k].double()) ** 2)) for k in b)
    den = sum(float(torch.sum(b[k].double() ** 2)) for k in b)
    return math.sqrt(num / den) if den > 0 else math.sqrt(num)


@dataclass
class _Outcome:
    losses: list[float]
    problem: str | None = None
    divergent_step: int | None = None
    weights: dict[str, Any] | None = None


def _run(engine: _Engine, seg: Segment, state: LoadedState, tick: Any) -> _Outcome:
    engine.load(state)
    out = _Outcome([])
    for step in range(seg.start, seg.end):
        loss, problem = engine.step(step)
        out.losses.append(loss)
        tick()
        if problem is not None:
            out.problem, out.divergent_step = problem, step
            return out
    out.weights = engine.weights()
    return out


def check_replay(ctx: VerifyContext) -> list[CheckResult]:
    """Replay ``ctx.replay`` segments (or the policy's count) and compare with the log."""
    count = ctx.replay or ctx.policy.replay_segments
    if count <= 0:
        return _skip("no replay requested (policy replay.segments is 0 and no --replay N)")
    if ctx.trainer_key is None:
        return _skip("not running code named by a bundle whose trainer key is not trusted")
    if ctx.state_dir is None:
        return _skip("no state directory given (--state DIR): nothing to replay from")
    try:
        with preserved_rng():  # replay sets the generators; leave the caller's as they were
            return _check(ctx, count)
    except RebuildError as exc:
        return _skip(f"could not check: {exc.message}", module=exc.module)
    except AttestError as exc:
        return _skip(f"could not check: {exc.message}")


def _check(ctx: VerifyContext, count: int) -> list[CheckResult]:
    end = ctx.run_end
    rows = ctx.steps()
    total = int(end["step"]) if end is not None else (max(r.step for r in rows) + 1 if rows else 0)
    marks = sorted({0, *(int(c["step"]) for c in ctx.checkpoints())} | {total})
    intervals = [
        (a, b) for a, b in itertools.pairwise(marks) if b > a and ctx.state_folder(a) is not None
    ]
    if not intervals:
        return _skip("no checkpoint with state files to start a segment from")
    budget = float(ctx.policy.statistics.get("replay_budget", DEFAULT_BUDGET))
    seed = ctx.replay_seed if ctx.replay_seed is not None else secrets.randbits(32)
    scores = _scores(ctx, intervals)
    engine = _Engine(ctx)
    env = ctx.run_start.get("environment", {})
    exact = _exact_mode(env)
    budget_steps = max(1, math.floor(budget * total))
    plan = plan_segments(intervals, scores, count=count, budget_steps=budget_steps, seed=seed)
    if not exact and plan:  # the first segment runs twice to measure noise: keep room for it
        room = max(1, budget_steps - plan[0].steps)
        plan = plan_segments(intervals, scores, count=count, budget_steps=room, seed=seed)
    work = sum(s.steps for s in plan) + (0 if exact or not plan else plan[0].steps)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        ctx.report_progress("replay", done, work)

    losses = {r.step: r.loss for r in rows}
    threads = int(env["threads"]) if exact else None
    tolerance: dict[str, Any] = {"mode": "exact" if exact else "tolerance"}
    reports: list[dict[str, Any]] = []
    failed = False
    loss_tol = weight_tol = 0.0
    with _threads(threads):
        for i, seg in enumerate(plan):
            state = verified_state(ctx, seg.start)
            result = _run(engine, seg, state, tick)
            if not exact and i == 0:
                loss_tol, weight_tol = _noise(engine, seg, state, result, tick, tolerance)
            report = _compare(ctx, seg, result, losses, exact, loss_tol, weight_tol)
            reports.append(report)
            failed |= report["status"] == "fail"
    replayed = done
    evidence = {
        "seed": seed,
        "segments": reports,
        "steps_replayed": replayed,
        "training_steps": total,
        "cost_fraction": round(replayed / total, 5) if total else None,
        "budget_fraction": budget,
        "tolerance": tolerance,
    }
    if failed:
        first = min(r["first_divergent_step"] for r in reports if r["status"] == "fail")
        bad = next(r for r in reports if r.get("first_divergent_step") == first)
        why = f"replay diverges from the log at step {first}: {bad['detail']}"
        status = Status.FAIL
    else:
        why = (
            f"{len(plan)} segment(s), {replayed} steps ({100 * replayed / max(total, 1):.1f} % of"
            f" training) reproduce the logged losses"
            + (" and checkpoint digests exactly" if exact else " and weights within tolerance")
        )
        status = Status.PASS
    return [CheckResult("replay.segments", _TITLE, status, why, Basis.REPLAY, evidence)]


def _scores(ctx: VerifyContext, intervals: list[tuple[int, int]]) -> dict[tuple[int, int], float]:
    """‖θ_b − θ_a‖ from state files where both exist, else the logged loss drop."""
    from safetensors.torch import load_file

    losses = {r.step: r.loss for r in ctx.steps()}
    out: dict[tuple[int, int], float] = {}
    for a, b in intervals:
        pa, _ = verified_weights(ctx, a)
        pb, _ = verified_weights(ctx, b)
        if pa is not None and pb is not None:
            wa, wb = load_file(str(pa)), load_file(str(pb))
            out[(a, b)] = math.sqrt(
                sum(float(((wb[k].double() - wa[k].double()) ** 2).sum()) for k in wa if k in wb)
            )
        else:
            la, lb = losses.get(a), losses.get(b - 1)
            out[(a, b)] = abs(la - lb) if la is not None and lb is not None else 0.0
    return out


def _noise(
    engine: _Engine,
    seg: Segment,
    state: LoadedState,
    first: _Outcome,
    tick: Any,
    tolerance: dict[str, Any],
) -> tuple[float, float]:
    import torch

    other = 2 if torch.get_num_threads() == 1 else 1
    with _threads(other):
        again = _run(engine, seg, state, tick)
    n = min(len(first.losses), len(again.losses))
    loss_noise = max(
        (
            abs(x - y) / max(1.0, abs(x))
            for x, y in zip(first.losses[:n], again.losses[:n], strict=True)
        ),
        default=0.0,
    )
    w_noise = (
        _rel_l2(first.weights, again.weights)
        if first.weights is not None and again.weights is not None
        else 0.0
    )
    loss_tol, weight_tol = max(10 * loss_noise, LOSS_FLOOR), max(10 * w_noise, WEIGHT_FLOOR)
    tolerance.update(
        {
            "noise_segment": [seg.start, seg.end],
            "threads_compared": [torch.get_num_threads(), other],
            "loss_noise_rel": loss_noise,
            "weight_noise_rel_l2": w_noise,
            "loss_tolerance_rel": loss_tol,
            "weight_tolerance_rel_l2": weight_tol,
        }
    )
    return loss_tol, weight_tol


def _compare(
    ctx: VerifyContext,
    seg: Segment,
    result: _Outcome,
    losses: Mapping[int, float | None],
    exact: bool,
    loss_tol: float,
    weight_tol: float,
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "start": seg.start,
        "end": seg.end,
        "reason": seg.reason,
        "partial": seg.partial,
    }
    tol = _EXACT_LOSS if exact else loss_tol
    for step, got in zip(range(seg.start, seg.end), result.losses, strict=False):
        logged = losses.get(step)
        if result.problem is not None and step == result.divergent_step:
            break
        if logged is None or abs(got - logged) > tol * max(1.0, abs(logged)):
            return report | {
                "status": "fail",
                "first_divergent_step": step,
                "detail": f"recomputed loss {got!r} ≠ logged {logged!r} at step {step}",
            }
    if result.problem is not None:
        return report | {
            "status": "fail",
            "first_divergent_step": result.divergent_step,
            "detail": result.problem,
        }
    if seg.partial or result.weights is None:
        return report | {"status": "pass", "detail": "losses match (prefix: weights not compared)"}
    root = recorded_root(ctx, seg.end)
    if exact:
        got_root = digest_state_dict(result.weights, algorithm=ctx.algorithm).hex
        if root is not None and got_root != root:
            return report | {
                "status": "fail",
                "first_divergent_step": seg.end,
                "detail": f"replayed weights at step {seg.end} have digest {got_root[:16]}…,"
                f" the checkpoint record says {root[:16]}… (every logged loss before it matches)",
            }
        return report | {"status": "pass", "detail": "losses and checkpoint digest match exactly"}
    path, why = verified_weights(ctx, seg.end)
    if path is None:
        return report | {"status": "pass", "detail": f"losses match; weights not compared ({why})"}
    from safetensors.torch import load_file

    distance = _rel_l2(result.weights, load_file(str(path)))
    if distance > weight_tol:
        return report | {
            "status": "fail",
            "first_divergent_step": seg.end,
            "detail": f"replayed weights at step {seg.end} differ from the checkpoint by"
            f" {distance:.3g} (relative L2) > tolerance {weight_tol:.3g}",
        }
    return report | {"status": "pass", "detail": f"weights within {distance:.3g} relative L2"}
