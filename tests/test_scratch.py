"""Check 3 (from scratch) on attested runs: the honest run passes, each attack fails the check
that should catch it."""

from __future__ import annotations

from pathlib import Path

import pytest
import scratch_fixtures as sf
import torch

from attest.keys import TrainerKey
from attest.verifier.result import CheckResult, Status
from attest.verifier.scratch import check_from_scratch

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log")


def _by_id(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.id: r for r in results}


@pytest.fixture(scope="module")
def key() -> TrainerKey:
    return TrainerKey.generate()


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory, key: TrainerKey) -> dict[str, torch.Tensor]:
    """Another model's trained weights (100 steps)."""
    return sf.train_run(tmp_path_factory.mktemp("parent"), key, seed=11, steps=100, every=100).final


def test_honest_run_passes_every_scratch_check(tmp_path: Path, key: TrainerKey) -> None:
    results = _by_id(check_from_scratch(sf.train_run(tmp_path, key, seed=3).context()))
    assert set(results) == {
        "scratch.init_recreated",
        "scratch.init_random",
        "scratch.step0_loss",
        "scratch.update_bound",
    }
    for r in results.values():
        assert r.status is Status.PASS, (r.id, r.why)
    assert results["scratch.init_recreated"].basis.value == "cryptographic"
    assert results["scratch.step0_loss"].evidence["recomputed"] == pytest.approx(
        results["scratch.step0_loss"].evidence["logged"], rel=1e-6
    )


def test_init_swapped_for_trained_weights_keeping_the_seed_fails_init_recreated(
    tmp_path: Path, key: TrainerKey, parent: dict[str, torch.Tensor]
) -> None:
    results = _by_id(check_from_scratch(sf.train_run(tmp_path, key, seed=3, init=parent).context()))
    r = results["scratch.init_recreated"]
    assert r.status is Status.FAIL
    assert r.evidence["expected"] != r.evidence["got"]
    assert r.evidence["tensor_diff"]


def test_finetune_presented_as_from_scratch_fails_step0_loss_and_init_checks(
    tmp_path: Path, key: TrainerKey, parent: dict[str, torch.Tensor]
) -> None:
    run = sf.train_run(tmp_path, key, seed=3, init=parent)
    results = _by_id(check_from_scratch(run.context()))
    assert results["scratch.step0_loss"].status is Status.FAIL
    assert "trained weights" in results["scratch.step0_loss"].why
    assert results["scratch.init_random"].status is Status.FAIL
    assert results["scratch.init_recreated"].status is Status.FAIL
    # The init it did use came from the state files (digest-checked), not from the rebuild.
    assert results["scratch.init_random"].evidence["source"].endswith("model.safetensors")


def test_checkpoint_replaced_by_another_models_weights_fails_update_bound(
    tmp_path: Path, key: TrainerKey
) -> None:
    other = sf.train_run(tmp_path / "other", key, seed=5, steps=8, every=8).final
    run = sf.train_run(tmp_path / "run", key, seed=3, swap_at=(12, other))
    r = _by_id(check_from_scratch(run.context()))["scratch.update_bound"]
    assert r.status is Status.FAIL
    assert "8→12" in r.why
    bad = [i for i in r.evidence["intervals"] if i["worst_ratio"] > 1]
    assert [(i["from"], i["to"]) for i in bad] == [(8, 12)]


def test_unimportable_model_is_could_not_check_naming_the_module(
    tmp_path: Path, key: TrainerKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sf, "MODEL_PATH", "no_such_package.models:Net")
    results = _by_id(check_from_scratch(sf.train_run(tmp_path, key, seed=3).context()))
    r = results["scratch.init_recreated"]
    assert r.status is Status.SKIPPED
    assert "no_such_package.models" in r.why and r.evidence["module"] == "no_such_package.models"
    # The init weights still come from the digest-checked step-0 state file.
    assert results["scratch.init_random"].status is Status.PASS
    assert results["scratch.init_random"].evidence["declared_init"].startswith("zero-centred")


def test_untrusted_bundle_runs_no_code(tmp_path: Path, key: TrainerKey) -> None:
    from dataclasses import replace

    ctx = replace(sf.train_run(tmp_path, key, seed=3).context(), trainer_key=None)
    r = _by_id(check_from_scratch(ctx))["scratch.init_recreated"]
    assert r.status is Status.SKIPPED and "not trusted" in r.why


def test_non_module_import_path_is_refused(
    tmp_path: Path, key: TrainerKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sf, "MODEL_PATH", "os:getcwd")
    r = _by_id(check_from_scratch(sf.train_run(tmp_path, key, seed=3).context()))
    assert r["scratch.init_recreated"].status is Status.SKIPPED
    assert "refusing" in r["scratch.init_recreated"].why
