"""Check 4 (replay): honest segments reproduce bit for bit; a tampered loss or checkpoint fails
and the first divergent step is named."""

from __future__ import annotations

from pathlib import Path

import pytest
import scratch_fixtures as sf

from attest.keys import TrainerKey
from attest.verifier import replay as replay_mod
from attest.verifier.replay import Segment, check_replay, plan_segments
from attest.verifier.result import Status

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log")


@pytest.fixture(scope="module")
def key() -> TrainerKey:
    return TrainerKey.generate()


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory, key: TrainerKey) -> sf.Run:
    return sf.train_run(tmp_path_factory.mktemp("honest"), key, seed=3)


def test_honest_segments_match_exactly_and_report_cost(honest: sf.Run) -> None:
    progress: list[tuple[str, int, int]] = []
    from dataclasses import replace

    ctx = replace(honest.context(replay=6), progress=lambda *a: progress.append(a))
    [r] = check_replay(ctx)
    assert r.status is Status.PASS, r.why
    ev = r.evidence
    assert ev["tolerance"]["mode"] == "exact"
    assert len(ev["segments"]) == 6 and ev["steps_replayed"] == 24
    assert ev["cost_fraction"] == pytest.approx(1.0)
    assert all(s["detail"] == "losses and checkpoint digest match exactly" for s in ev["segments"])
    assert progress[-1] == ("replay", 24, 24)


def test_default_budget_caps_replay_at_five_percent(honest: sf.Run) -> None:
    [r] = check_replay(honest.context(replay=2, replay_budget=0.05))
    assert r.status is Status.PASS
    assert r.evidence["cost_fraction"] <= 0.05
    assert r.evidence["segments"][0]["partial"] is True


def test_edited_loss_fails_at_that_step(tmp_path: Path, key: TrainerKey) -> None:
    run = sf.train_run(tmp_path, key, seed=3, edit_loss=lambda s, v: v - 0.01 if s == 17 else v)
    [r] = check_replay(run.context(replay=6))
    assert r.status is Status.FAIL
    assert "step 17" in r.why
    [bad] = [s for s in r.evidence["segments"] if s["status"] == "fail"]
    assert (bad["start"], bad["end"], bad["first_divergent_step"]) == (16, 20, 17)


def test_replaced_checkpoint_is_chosen_and_named(tmp_path: Path, key: TrainerKey) -> None:
    """The swap is the largest update, so even one segment replays it; the losses before it
    match, so the checkpoint itself is the first divergent step."""
    other = sf.train_run(tmp_path / "other", key, seed=5, steps=8, every=8).final
    run = sf.train_run(tmp_path / "run", key, seed=3, swap_at=(12, other))
    [r] = check_replay(run.context(replay=1, replay_seed=123))
    assert r.status is Status.FAIL
    [seg] = r.evidence["segments"]
    assert (seg["start"], seg["end"], seg["reason"]) == (8, 12, "largest update")
    assert seg["first_divergent_step"] == 12 and "every logged loss before it" in seg["detail"]


def test_state_file_not_matching_the_record_is_not_used(tmp_path: Path, key: TrainerKey) -> None:
    run = sf.train_run(tmp_path, key, seed=3)
    scheduler = tmp_path / "state" / "step-4" / "scheduler.json"
    text = scheduler.read_text()
    assert '"_step_count":5' in text
    scheduler.write_text(text.replace('"_step_count":5', '"_step_count":6'))
    [r] = check_replay(run.context(replay=6))
    assert r.status is Status.SKIPPED
    assert "does not match the checkpoint record" in r.why


def test_tolerance_mode_measures_noise(honest: sf.Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay_mod, "_exact_mode", lambda env: False)
    [r] = check_replay(honest.context(replay=2))
    assert r.status is Status.PASS, r.why
    tol = r.evidence["tolerance"]
    assert tol["mode"] == "tolerance" and tol["threads_compared"][0] != tol["threads_compared"][1]
    assert tol["weight_tolerance_rel_l2"] >= replay_mod.WEIGHT_FLOOR
    # The noise replay is part of the cost.
    assert (
        r.evidence["steps_replayed"]
        == sum(s["end"] - s["start"] for s in r.evidence["segments"]) + 4
    )


def test_no_replay_requested_is_skipped(honest: sf.Run) -> None:
    [r] = check_replay(honest.context(replay=0))
    assert r.status is Status.SKIPPED


def test_plan_takes_largest_then_random_within_budget() -> None:
    intervals = [(0, 10), (10, 20), (20, 30), (30, 40)]
    scores = {(20, 30): 5.0, (0, 10): 1.0}
    plan = plan_segments(intervals, scores, count=2, budget_steps=15, seed=1)
    assert plan[0] == Segment(20, 30, "largest update") or plan[1] == Segment(
        20, 30, "largest update"
    )
    assert sum(s.steps for s in plan) == 15 and any(s.partial for s in plan)
    assert plan == plan_segments(intervals, scores, count=2, budget_steps=15, seed=1)


def test_a_step0_optimizer_state_is_fresh_only_without_a_trajectory() -> None:
    """Adagrad's accumulators exist at construction (one constant each, step 0): fresh. Moments
    left by earlier steps could steer a replay of the first interval towards other weights:
    refused."""
    import torch

    from attest.verifier.checkpoint_state import _not_fresh

    params = [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(4))]
    assert _not_fresh(torch.optim.Adam(params).state_dict()["state"]) is None
    assert (
        _not_fresh(torch.optim.Adagrad(params, initial_accumulator_value=0.1).state_dict()["state"])
        is None
    )
    used = torch.optim.Adam(params)
    sum(p.sum() for p in params).backward()
    used.step()
    assert _not_fresh(used.state_dict()["state"]) == "parameter 0: step 1"
    stepped_back = used.state_dict()["state"]
    for entry in stepped_back.values():
        entry["step"] = torch.tensor(0.0)
        entry["exp_avg"] = torch.randn_like(entry["exp_avg"])
    assert _not_fresh(stepped_back) == "parameter 0: exp_avg is not one constant"


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_radam_interval_bound_holds_for_its_own_steps_and_not_for_a_jump(
    weight_decay: float,
) -> None:
    """Twelve RAdam steps from step 0 (the first five unrectified, bounded by the logged
    gradient norms) stay within the interval bound; the same weights moved 10 further do not.
    (An unrectified step may move a coordinate by lr times the whole gradient's norm: a loose
    bound for a wide tensor, hence the large jump.)"""
    from types import SimpleNamespace

    import torch

    from attest.verifier.updatebound import _per_coordinate_interval, _radam_gradient_peaks

    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(64))
    opt = torch.optim.RAdam([p], lr=0.01, weight_decay=weight_decay)
    start, norms = p.detach().clone(), []
    for _ in range(12):
        opt.zero_grad()
        (p.pow(4).sum() + 3 * p.sum()).backward()
        norms.append(float(p.grad.norm()))  # type: ignore[union-attr]
        opt.step()
    groups = opt.state_dict()["param_groups"]
    rows = {s: SimpleNamespace(grad_norm=n) for s, n in enumerate(norms)}
    peaks = _radam_gradient_peaks(rows, groups, 0, 12)
    assert peaks is not None and sorted(peaks) == [1, 2, 3, 4, 5]  # the unrectified steps
    assert (
        _radam_gradient_peaks({**rows, 2: SimpleNamespace(grad_norm=None)}, groups, 0, 12) is None
    )

    def ratio(end: torch.Tensor) -> float:
        worst, _ = _per_coordinate_interval(
            "radam", groups, [0.01] * 12, 0, 1.0, {"p": (start, end)}, peaks
        )
        return worst[1]

    assert 0.2 < ratio(p.detach()) <= 1.0  # within the bound, and not by a vacuous margin
    assert ratio(p.detach() + 10.0) > 1.0


def test_update_bounds_apply_only_to_the_optimizers_they_were_derived_for() -> None:
    import torch

    from attest.verifier.updatebound import _kind

    p = [torch.nn.Parameter(torch.zeros(2))]
    kinds = {
        cls.__name__: _kind(cls(p, lr=0.1).param_groups)
        for cls in (
            torch.optim.Adam,
            torch.optim.AdamW,
            torch.optim.SGD,
            torch.optim.NAdam,
            torch.optim.RAdam,
            torch.optim.Adamax,
            torch.optim.RMSprop,
            torch.optim.Adagrad,
        )
    }
    assert kinds == {
        "Adam": "adam",
        "AdamW": "adam",
        "SGD": "sgd",
        "NAdam": "nadam",
        "RAdam": "radam",
        "Adamax": "adamax",
        "RMSprop": "rmsprop",
        "Adagrad": "adagrad",
    }
    centred = torch.optim.RMSprop(p, lr=0.1, centered=True).param_groups
    assert _kind(centred) is None  # its denominator √(v − avg²) has no floor
