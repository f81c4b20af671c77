"""Check 4: re-execute verifier-chosen training segments (docs/verifying.md, "replay").

Three modules do the work: :mod:`attest.verifier.replay_plan` chooses the segments (checkpoint
intervals, within the policy's budget), :mod:`attest.verifier.replay_engine` re-executes them
from state files that :mod:`attest.verifier.checkpoint_state` has checked against the signed log,
and this module compares what replay computed with what the log says. The names callers use
(:func:`plan_segments`, :class:`Segment`, :func:`verified_state`, …) are re-exported here.

**Comparison.** *Exact mode* — the run declared ``environment.deterministic`` and ran on the CPU
with the verifier's CPU capability; replay uses the recorded thread count — requires every
recomputed loss to equal the logged one (to float32 rounding, 1e-6 relative) and the replayed
weights' digest to equal the record at ``b``. Otherwise *tolerance mode*: the first segment is
replayed twice with different thread counts; the tolerance is ten times that measured noise, at
least :data:`LOSS_FLOOR` (relative, losses) and :data:`WEIGHT_FLOOR` (relative L2, weights, which
need the state file at ``b``); both are reported. A segment stops at its first disagreement: the
*first divergent step* (a loss at step ``i`` that differs, or the checkpoint at ``b``) is found in
the same pass, since losses are compared at every step and weights at the checkpoint.

The cost is reported as replayed steps over training steps, noise replays included.
"""

from __future__ import annotations

import itertools
import math
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from attest.digest import digest_state_dict
from attest.errors import AttestError
from attest.statefiles import LoadedState
from attest.verifier.checkpoint_state import recorded_root, verified_state, verified_weights
from attest.verifier.context import VerifyContext
from attest.verifier.rebuild import RebuildError, draws_from_global_generators, preserved_rng
from attest.verifier.replay_engine import Engine, Outcome, run_segment
from attest.verifier.replay_plan import DEFAULT_BUDGET, Segment, interval_scores, plan_segments
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

LOSS_FLOOR = 1e-4
WEIGHT_FLOOR = 1e-5
_EXACT_LOSS = 1e-6
_TITLE = "Replay of verifier-chosen segments"


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
        # DDP sums the ranks' gradients in the all-reduce's order; for two ranks that sum is
        # the one replay forms (a + b = b + a), for more it may not be: tolerance mode then.
        and env.get("world_size", 1) in (1, 2)
    )


def _rel_l2(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    import torch

    num = sum(float(torch.sum((a[k].double() - b[k].double()) ** 2)) for k in b)
    den = sum(float(torch.sum(b[k].double() ** 2)) for k in b)
    return math.sqrt(num / den) if den > 0 else math.sqrt(num)


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
    scores = interval_scores(ctx, intervals)
    engine = Engine(ctx)
    first = ctx.batch_ids(0)
    if first and draws_from_global_generators(engine.dataset, first[0]):
        raise RebuildError(
            "loading a sample draws from the global random generators (random data augmentation"
            " in the dataset): training drew those numbers while its loader fetched ahead, which"
            " replay cannot redo; give the augmentation a generator of its own, seeded per sample",
            module=type(engine.dataset).__module__,
        )
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
            result = run_segment(engine, seg, state, tick)
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


def _noise(
    engine: Engine,
    seg: Segment,
    state: LoadedState,
    first: Outcome,
    tick: Any,
    tolerance: dict[str, Any],
) -> tuple[float, float]:
    import torch

    other = 2 if torch.get_num_threads() == 1 else 1
    with _threads(other):
        again = run_segment(engine, seg, state, tick)
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
    result: Outcome,
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
