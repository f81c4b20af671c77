"""State files: saved state reloads to an identical next step; digests agree live and on disk."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from attest.digest import digest_state_dict
from attest.errors import ConfigurationError, FormatError
from attest.statefiles import (
    capture_rng,
    digest_optimizer,
    digest_rng,
    digest_scheduler,
    load_state,
    restore_rng,
    save_state,
)


class Warmup:
    def __init__(self, steps: int) -> None:
        self.steps = steps

    def __call__(self, step: int) -> float:
        return min(1.0, (step + 1) / self.steps)


def setup(
    seed: int = 0,
) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, Warmup(5))
    return model, opt, sched


def train(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    n: int,
) -> list[float]:
    losses = []
    for _ in range(n):
        x = torch.randn(16, 4)
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def test_replay_from_state_files_is_bit_exact(tmp_path: Path) -> None:
    model, opt, sched = setup()
    train(model, opt, sched, 7)
    rng = capture_rng()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    digests = save_state(
        tmp_path / "step-7",
        model=weights,
        optimizer=opt.state_dict(),
        scheduler=sched.state_dict(),
        rng=rng,
        relative_to=tmp_path,
    )
    assert digests.path == "step-7"
    assert digests.optimizer == digest_optimizer(opt.state_dict())
    assert digests.scheduler == digest_scheduler(sched.state_dict())
    assert digests.rng == digest_rng(rng)
    expected = train(model, opt, sched, 5)
    final = digest_state_dict(model.state_dict())

    state = load_state(tmp_path / "step-7")
    assert state.digests.optimizer == digests.optimizer and state.digests.rng == digests.rng
    model2, opt2, sched2 = setup(seed=99)  # different init: everything must come from the files
    model2.load_state_dict(state.model)
    opt2.load_state_dict(state.optimizer)
    assert state.scheduler is not None
    sched2.load_state_dict(state.scheduler)
    restore_rng(state.rng)
    assert train(model2, opt2, sched2, 5) == expected
    assert digest_state_dict(model2.state_dict()) == final


def test_rng_round_trip_covers_python_numpy_and_torch() -> None:
    doc = capture_rng()
    json.dumps(doc)
    a = (random.random(), float(np.random.rand()), torch.rand(1).item())
    restore_rng(doc)
    assert (random.random(), float(np.random.rand()), torch.rand(1).item()) == a
    with pytest.raises(FormatError):
        restore_rng({"python": None})
    for broken in ({"torch": "AAAA"}, {"python": {**doc["python"], "state": [1, 2, 3]}}):
        with pytest.raises(FormatError, match="rng state document is malformed"):
            restore_rng({**doc, **broken})  # torch's own RuntimeError included


def test_digests_change_with_the_state(tmp_path: Path) -> None:
    model, opt, sched = setup()
    train(model, opt, sched, 2)
    before = digest_optimizer(opt.state_dict())
    train(model, opt, sched, 1)
    assert digest_optimizer(opt.state_dict()) != before
    sd = opt.state_dict()
    sd["param_groups"][0]["lr"] = 1.0
    assert digest_optimizer(sd) != digest_optimizer(opt.state_dict())
    assert digest_scheduler(None) is None
    with pytest.raises(ConfigurationError):
        digest_scheduler({"f": object()})


def test_missing_files_are_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="incomplete"):
        load_state(tmp_path)


def test_non_finite_scheduler_state_round_trips(tmp_path: Path) -> None:
    """ReduceLROnPlateau keeps ``best = inf`` (and ``mode_worse``) before its first metric:
    recording it used to stop training. The files keep it exactly and the digest is stable."""
    model, opt, _ = setup()
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)
    assert plateau.state_dict()["best"] == float("inf")
    digests = save_state(
        tmp_path,
        model=model.state_dict(),
        optimizer=opt.state_dict(),
        scheduler=plateau.state_dict(),
        rng=capture_rng(),
    )
    assert b'{"attest.float":"inf"}' in (tmp_path / "scheduler.json").read_bytes()
    loaded = load_state(tmp_path)
    assert loaded.scheduler is not None and loaded.scheduler["best"] == float("inf")
    assert loaded.digests.scheduler == digests.scheduler == digest_scheduler(plateau.state_dict())
    restored = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)
    restored.load_state_dict(loaded.scheduler)
    assert restored.state_dict() == plateau.state_dict()
    nan = digest_scheduler({"x": float("nan")})
    assert nan != digest_scheduler({"x": float("inf")}) != digest_scheduler({"x": float("-inf")})


def test_tensors_nested_in_optimizer_state_round_trip(tmp_path: Path) -> None:
    """LBFGS keeps lists of direction tensors per parameter: recording them used to stop
    training. They are stored beside the other tensors and come back exactly, so stepping on
    from the files matches stepping on from the live optimizer."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, history_size=3, max_iter=3)
    x, y = torch.randn(16, 4), torch.randn(16, 2)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (model(x) - y).pow(2).mean()
        loss.backward()
        return loss

    for _ in range(2):
        opt.step(closure)
    live = opt.state_dict()
    assert isinstance(live["state"][0]["old_dirs"], list) and live["state"][0]["old_dirs"]
    digests = save_state(
        tmp_path, model=model.state_dict(), optimizer=live, scheduler=None, rng=capture_rng()
    )
    loaded = load_state(tmp_path)
    assert loaded.digests.optimizer == digests.optimizer == digest_optimizer(live)
    for got, want in zip(
        loaded.optimizer["state"][0]["old_dirs"], live["state"][0]["old_dirs"], strict=True
    ):
        assert torch.equal(got, want)

    twin = torch.nn.Linear(4, 2)
    twin.load_state_dict(loaded.model)
    twin_opt = torch.optim.LBFGS(twin.parameters(), lr=0.5, history_size=3, max_iter=3)
    twin_opt.load_state_dict(loaded.optimizer)

    def twin_closure() -> torch.Tensor:
        twin_opt.zero_grad()
        loss = (twin(x) - y).pow(2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    twin_opt.step(twin_closure)
    assert torch.equal(model.weight, twin.weight)
