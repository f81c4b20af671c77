"""Which segments replay re-executes: the verifier chooses them, never the trainer
(docs/verifying.md, "replay").

**Segments.** A segment is a checkpoint interval ``[a, b)``: the state files of checkpoint ``a``
(``state_dir/step-a/``, verified by :mod:`attest.verifier.checkpoint_state`) are reloaded and
steps ``a … b−1`` are re-run on the committed batches. Half the segments (rounded up) are the
intervals with the largest weight change ``‖θ_b − θ_a‖`` (from state files; the logged loss drop
where those are missing: :func:`interval_scores`), the rest are drawn at random with
``--replay-seed`` (or a fresh seed, reported so the choice can be repeated). The total stays
within the policy's budget, ``statistics.replay_budget`` (default :data:`DEFAULT_BUDGET`, 5 % of
the training steps); an interval longer than what is left is replayed as a prefix and compared
on losses only (:attr:`Segment.partial`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from attest.verifier.checkpoint_state import verified_weights
from attest.verifier.context import VerifyContext

__all__ = ["DEFAULT_BUDGET", "Segment", "interval_scores", "plan_segments"]

DEFAULT_BUDGET = 0.05


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


def interval_scores(
    ctx: VerifyContext, intervals: list[tuple[int, int]]
) -> dict[tuple[int, int], float]:
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
