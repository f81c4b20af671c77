"""initstats: honest inits pass, trained weights in disguise fail, and the statistics are right."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from attest.demo.model import TinyGPT
from attest.verifier.initstats import (
    assess_init,
    combine_pvalues,
    ks_family,
    marchenko_pastur,
    tail_index,
)
from attest.verifier.updatebound import (
    adam_step_bound,
    adamax_step_bound,
    nadam_step_bound,
    radam_step_bound,
    rmsprop_step_bound,
)


def _seeded(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    )


def _gpt() -> nn.Module:
    return TinyGPT(40, 64, 2, 4, 32)


def _state(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize("build", [_gpt, _mlp], ids=["tinygpt", "mlp"])
@pytest.mark.parametrize("with_reference", [True, False], ids=["reference", "family"])
def test_honest_inits_pass_over_20_seeds(build, with_reference) -> None:
    """α = 0.01 is the false-failure rate by construction (bench/init_false_failures.py measures
    it over 200 seeds per model): the demo-sized TinyGPT passes all 20 seeds; for any model at
    most one in 20 may fail (P(≥ 2 of 20) = 1.7 % at α = 0.01), and never spectrally."""
    torch.set_num_threads(1)
    failures = []
    for seed in range(20):
        _seeded(seed)
        model = build()
        reference = None
        if with_reference:
            _seeded(seed + 1)
            reference = _state(build())
        params = {n for n, _ in model.named_parameters()}
        verdict = assess_init(_state(model), reference=reference, parameters=params)
        assert verdict.spectra and all(s.outliers == 0 for s in verdict.spectra.values())
        if not verdict.passed:
            failures.append((seed, verdict.reasons))
    assert len(failures) <= (0 if build is _gpt else 1), failures


def _trained_mlp(seed: int, steps: int = 150) -> tuple[dict[str, np.ndarray], nn.Module]:
    _seeded(seed)
    model = _mlp()
    init = _state(model)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(32, 10, generator=g)
    for _ in range(steps):
        x = torch.randn(64, 32, generator=g)
        loss = nn.functional.cross_entropy(model(x), (x @ teacher).argmax(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return init, model


def test_reshuffled_trained_weights_fail() -> None:
    """Permuting entries within each tensor keeps no structure but the trained spread: the
    distribution tests against the declared init reject it."""
    _, model = _trained_mlp(0)
    rng = np.random.default_rng(0)
    shuffled = {k: rng.permutation(v.ravel()).reshape(v.shape) for k, v in _state(model).items()}
    _seeded(1)
    verdict = assess_init(shuffled, reference=_state(_mlp()))
    assert not verdict.passed
    assert verdict.combination.reject


def test_trained_weights_mapped_onto_init_values_fail_spectrally() -> None:
    """Giving trained weights exactly the init's values (rank-matched) passes every marginal
    test, but training's low-rank structure stays: eigenvalues past the Marchenko–Pastur edge."""
    init, model = _trained_mlp(0)
    disguised = {}
    for k, v in _state(model).items():
        out = np.empty(v.size, v.dtype)
        out[np.argsort(v.ravel(), kind="stable")] = np.sort(init[k].ravel())
        disguised[k] = out.reshape(v.shape)
    _seeded(1)
    verdict = assess_init(disguised, reference=_state(_mlp()))
    assert not verdict.combination.reject  # the marginals are the init's
    assert not verdict.passed
    assert any(s.outliers for s in verdict.spectra.values())
    assert any("Marchenko" in r for r in verdict.reasons)


def test_seed_independent_parameter_fails() -> None:
    """A constructor that loads fixed weights gives the same tensors under every seed."""
    _, model = _trained_mlp(0)
    state = _state(model)
    verdict = assess_init(state, reference=state, parameters=set(state))
    assert not verdict.passed
    assert any(t.kind == "deterministic" and not t.ok for t in verdict.tests)


def test_constants_are_checked_exactly() -> None:
    _seeded(0)
    model = _gpt()
    state, reference = _state(model), _state(model)
    state["ln_f.weight"] = state["ln_f.weight"] + np.float32(1e-3)
    verdict = assess_init(state, reference=reference)
    assert not verdict.passed
    assert any(t.name == "ln_f.weight" and not t.ok for t in verdict.tests)


def test_marchenko_pastur_edge_and_spike() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.02, (96, 256))
    clean = marchenko_pastur(w)
    assert clean is not None and clean.outliers == 0 and 0.9 < clean.ratio < 1.1
    u, v = rng.normal(size=96), rng.normal(size=256)
    spiked = marchenko_pastur(w + 0.004 * np.outer(u, v))
    assert spiked is not None and spiked.outliers >= 1
    assert marchenko_pastur(np.zeros((16, 16))) is None
    assert marchenko_pastur(rng.normal(size=(4, 64))) is None  # too small


def test_tail_index_separates_heavy_tails() -> None:
    rng = np.random.default_rng(0)
    bulk = np.linalg.eigvalsh(np.cov(rng.normal(size=(128, 512))))
    heavy = rng.pareto(1.5, 128) + 1
    assert (tail_index(bulk) or 0) > 5
    assert (tail_index(heavy) or 99) < 4


def test_combination_controls_and_detects() -> None:
    rng = np.random.default_rng(1)
    rejections = sum(
        combine_pvalues({str(i): float(p) for i, p in enumerate(rng.uniform(size=20))}).reject
        for _ in range(2000)
    )
    assert rejections / 2000 <= 0.0085  # at most α/2 = 0.005 (the other half is spectral)
    one_bad = combine_pvalues({"a": 1e-6, **{str(i): 0.5 for i in range(20)}})
    assert one_bad.holm_rejected == ("a",)
    many_weak = combine_pvalues({str(i): 0.03 for i in range(30)})
    assert many_weak.reject and not many_weak.holm_rejected


def test_ks_family_accepts_normal_and_uniform_rejects_shift() -> None:
    rng = np.random.default_rng(2)
    assert ks_family(rng.normal(0, 0.02, 5000))[1] > 1e-3
    assert ks_family(rng.uniform(-0.1, 0.1, 5000))[1] > 1e-3
    assert ks_family(rng.normal(1.0, 0.1, 5000))[1] < 1e-6


def test_adam_step_bound_holds_for_adversarial_gradients() -> None:
    assert adam_step_bound(1, 0.9, 0.999) == pytest.approx(1.0)
    assert 7.0 < adam_step_bound(10_000, 0.9, 0.999) < 7.5
    # Gradients growing at the worst rate, and a sparse spike: the ratio stays under the bound.
    for grads in ([(0.999 / 0.9) ** t for t in range(300)], [0.0] * 50 + [1.0] + [0.0] * 20):
        p = torch.zeros(1, requires_grad=True)
        opt = torch.optim.Adam([p], lr=1.0, eps=0.0 + 1e-30)
        for t, g in enumerate(grads, start=1):
            before = float(p.detach())
            p.grad = torch.tensor([g])
            opt.step()
            assert abs(float(p.detach()) - before) <= adam_step_bound(t, 0.9, 0.999) * (1 + 1e-5)


_ADVERSARIAL = {
    "growing-slowly": [1.01**t for t in range(300)],
    "growing-at-adams-worst-rate": [(0.999 / 0.9) ** t for t in range(300)],
    "spike-after-silence": [0.0] * 50 + [1.0] + [0.0] * 20,
    "alternating": [(-1.0) ** t * 3 for t in range(100)],
}
_PER_COORDINATE: dict[str, tuple[Any, Any]] = {
    "rmsprop": (
        lambda p: torch.optim.RMSprop(p, lr=1.0, alpha=0.99, eps=1e-30),
        lambda t: rmsprop_step_bound(t, 0.99, 0.0),
    ),
    "rmsprop-momentum": (
        lambda p: torch.optim.RMSprop(p, lr=1.0, alpha=0.99, momentum=0.9, eps=1e-30),
        lambda t: rmsprop_step_bound(t, 0.99, 0.9),
    ),
    "adagrad": (lambda p: torch.optim.Adagrad(p, lr=1.0, eps=1e-30), lambda t: 1.0),
    "nadam": (
        lambda p: torch.optim.NAdam(p, lr=1.0, eps=1e-30),
        lambda t: nadam_step_bound(t, 0.9, 0.999, 0.004),
    ),
    "nadamw": (
        lambda p: torch.optim.NAdam(p, lr=1.0, eps=1e-30, decoupled_weight_decay=True),
        lambda t: nadam_step_bound(t, 0.9, 0.999, 0.004),
    ),
    "adamax": (
        lambda p: torch.optim.Adamax(p, lr=1.0, eps=1e-30),
        lambda t: adamax_step_bound(t, 0.9, 0.999),
    ),
}


@pytest.mark.parametrize("grads", _ADVERSARIAL.values(), ids=list(_ADVERSARIAL))
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.9), (0.0, 0.99)])
def test_radam_steps_stay_within_their_bound(
    grads: list[float], betas: tuple[float, float]
) -> None:
    """Unrectified, RAdam moves by its bias-corrected momentum (at most the largest gradient so
    far); rectified, by Adam's step times a factor below 1."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.RAdam([p], lr=1.0, betas=betas, eps=1e-30)
    for t, g in enumerate(grads, start=1):
        before = float(p.detach())
        p.grad = torch.tensor([g])
        opt.step()
        peak = max(abs(x) for x in grads[:t])
        bound = radam_step_bound(t, *betas, peak)
        assert abs(float(p.detach()) - before) <= bound * (1 + 1e-5) + 1e-12, t


@pytest.mark.parametrize("grads", _ADVERSARIAL.values(), ids=list(_ADVERSARIAL))
@pytest.mark.parametrize("optimizer", list(_PER_COORDINATE))
def test_per_coordinate_step_bounds_hold_for_adversarial_gradients(
    optimizer: str, grads: list[float]
) -> None:
    """No step of torch's RMSprop (not centred), Adagrad, NAdam or Adamax at lr = 1 moves a
    coordinate further than its bound at that step."""
    make, bound = _PER_COORDINATE[optimizer]
    p = torch.zeros(1, requires_grad=True)
    opt = make([p])
    for t, g in enumerate(grads, start=1):
        before = float(p.detach())
        p.grad = torch.tensor([g])
        opt.step()
        assert abs(float(p.detach()) - before) <= bound(t) * (1 + 1e-5), (optimizer, t)
