"""Replay of runs attested by the Lightning callback with training features the hand-written
fixtures do not exercise: gradient accumulation (with an incomplete last group in each epoch),
bf16 mixed precision, BatchNorm buffers, tied weights, dropout, a step-wise scheduler and a
shuffling loader that draws its order from the global generator. Honest runs must replay
exactly, the interval from the init to the first checkpoint included; a run whose first
interval started from other weights must not."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import lightning as L
import lightning_models
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning_models import (
    AdaGrad,
    Blobs,
    Dropped,
    DroppedLogits,
    ManualSteps,
    ManualWarmup,
    NAdamModel,
    Plateau,
    RAdamModel,
    RmsProp,
    TiedNorm,
    Validated,
    quiet_trainer,
)
from torch.utils.data import DataLoader

from attest.callbacks import LineageCallback
from attest.keys import TrainerKey
from attest.statefiles import load_state, save_state
from attest.verifier import Outcome, Verdict, builtin_policy, verify_bundle
from attest.verifier.rebuild import RebuildError, StepRecipe
from attest.verifier.result import Status

pytestmark = pytest.mark.filterwarnings("ignore")


def _train(
    folder: Path,
    *,
    accumulate: int = 1,
    precision: str = "32-true",
    model_class: type = TiedNorm,
    loader_generator: bool = True,
    callbacks: Sequence[Callback] = (),
    seed: int = 11,
    validate_every: int | None = None,
    dataset: str = "Blobs",
) -> Path:
    key = TrainerKey.generate()
    key.save(folder / "trainer.key")
    L.seed_everything(seed)
    model = model_class()
    callback = LineageCallback(
        key=folder / "trainer.key",
        destination=folder / "log",
        checkpoint_every=2,
        state_dir=folder / "state",
        export_bundle=folder / "bundle.json",
        # A caller's config must not hide the trainer settings replay depends on.
        config={"data": {"import_path": f"lightning_models:{dataset}", "init_args": {}}},
    )
    generator = torch.Generator().manual_seed(5) if loader_generator else None
    loader = DataLoader(
        getattr(lightning_models, dataset)(), batch_size=8, shuffle=True, generator=generator
    )  # 5 batches an epoch: the last accumulation group of each epoch is incomplete
    validation = {} if validate_every is None else {"val_check_interval": validate_every}
    L.Trainer(
        max_epochs=2,
        callbacks=[callback, *callbacks],
        **validation,  # type: ignore[arg-type]
        deterministic=True,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accumulate_grad_batches=accumulate,
        precision=precision,  # type: ignore[arg-type]
    ).fit(
        model, loader, None if validate_every is None else DataLoader(Blobs(seed=1), batch_size=8)
    )
    return folder / "bundle.json"


def _verify(bundle: Path, folder: Path) -> Verdict:
    policy = replace(builtin_policy("strict"), statistics={"replay_budget": 1.0})
    return verify_bundle(
        bundle,
        policy=policy,
        state_dir=folder / "state",
        replay=20,
        replay_seed=0,
        trust_bundle_keys=True,
    )


def _config(bundle: Path) -> dict[str, object]:
    first = json.loads(bundle.read_text())["records"][0]
    return json.loads(base64.b64decode(first["payload"]))["body"]["config"]


@pytest.mark.parametrize(
    ("accumulate", "precision"), [(1, "32-true"), (2, "32-true"), (2, "bf16-mixed")]
)
def test_honest_lightning_run_replays_exactly(
    tmp_path: Path, accumulate: int, precision: str
) -> None:
    bundle = _train(tmp_path, accumulate=accumulate, precision=precision)
    config = _config(bundle)
    assert config["trainer"]["accumulate_grad_batches"] == accumulate  # type: ignore[index]
    assert config["trainer"]["precision"] == precision  # type: ignore[index]
    assert config["data"] == {"import_path": "lightning_models:Blobs", "init_args": {}}
    verdict = _verify(bundle, tmp_path)
    replay = verdict.result("replay.segments")
    assert replay is not None and replay.status is Status.PASS, replay
    assert replay.evidence["tolerance"]["mode"] == "exact"
    ev = replay.evidence
    assert ev["steps_replayed"] == ev["training_steps"]  # every interval, the first included
    assert any(s["start"] == 0 for s in ev["segments"])
    assert all(s["status"] == "pass" for s in ev["segments"])
    step0 = verdict.result("scratch.step0_loss")
    assert step0 is not None and step0.status is Status.PASS, step0
    assert step0.evidence["recomputed"] == pytest.approx(step0.evidence["logged"], rel=1e-6)
    assert verdict.outcome is Outcome.VERIFIED, verdict.summary


def test_a_precision_replay_cannot_reproduce_is_refused_by_name() -> None:
    with pytest.raises(RebuildError, match="precision '16-mixed' is not supported"):
        StepRecipe.of_run({"trainer": {"precision": "16-mixed"}}, None)
    with pytest.raises(RebuildError, match="batch_size and world_size"):
        StepRecipe.of_run({"trainer": {"accumulate_grad_batches": 2}}, {"sampler": {}})
    recipe = StepRecipe.of_run(
        {"trainer": {"accumulate_grad_batches": 3, "precision": "bf16-mixed"}},
        {"sampler": {"batch_size": 4, "world_size": 2}},
    )
    assert recipe == StepRecipe(accumulate=3, micro_batch=8, autocast="bfloat16", world=2)
    ddp = StepRecipe.of_run({}, {"sampler": {"batch_size": 4, "world_size": 2}})
    assert ddp == StepRecipe(accumulate=1, micro_batch=8, world=2)  # rank by rank, no accumulation
    assert StepRecipe.of_run({}, {"sampler": {"batch_size": 4, "world_size": 1}}) == StepRecipe()


def test_manual_optimization_is_could_not_check_not_a_failure(tmp_path: Path) -> None:
    verdict = _verify(_train(tmp_path, model_class=ManualSteps), tmp_path)
    replay = verdict.result("replay.segments")
    assert replay is not None and replay.status is Status.SKIPPED, replay
    assert "automatic_optimization = False" in replay.why
    assert verdict.outcome is not Outcome.NOT_FROM_SCRATCH


def test_dropout_with_a_loader_drawing_from_the_global_rng_replays_exactly(tmp_path: Path) -> None:
    """The loader has no generator of its own, so each epoch's start draws from the global one.
    The step-0 state and the epoch-start RNG files are taken after those draws, so the first
    interval and the one crossing into the second epoch (steps 4-5, epoch 2 starts at step 5)
    reproduce the dropout masks; without the epoch-start file the crossing one cannot."""
    bundle = _train(tmp_path, model_class=Dropped, loader_generator=False)
    assert (tmp_path / "state" / "step-0" / "rng.json").is_file()
    replay = _verify(bundle, tmp_path).result("replay.segments")
    assert replay is not None and replay.status is Status.PASS, replay
    starts = {s["start"]: s["status"] for s in replay.evidence["segments"]}
    assert starts[0] == starts[4] == "pass"

    epoch_rng = tmp_path / "state" / "rng-before-step-5.json"
    epoch_rng.write_text('{"python": null, "torch": "AAAA"}')  # no record vouches for it
    replay = _verify(bundle, tmp_path).result("replay.segments")
    assert replay is not None and replay.status is Status.SKIPPED
    assert "could not check: rng state document is malformed" in replay.why

    epoch_rng.unlink()
    replay = _verify(bundle, tmp_path).result("replay.segments")
    assert replay is not None and replay.status is Status.FAIL
    [bad] = [s for s in replay.evidence["segments"] if s["status"] == "fail"]
    assert (bad["start"], bad["first_divergent_step"]) == (4, 5)


def test_first_interval_from_other_weights_fails_replay(tmp_path: Path) -> None:
    """A fine-tune presented as from scratch: the logged init is a genuine fresh init, but
    training started from another model's weights. The step-0 folder handed to the verifier is
    rebuilt to match the init; replaying from it cannot reach the first logged checkpoint."""

    class StartFromOther(Callback):
        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.add_(0.5 * torch.randn_like(p))  # "pretrained" weights

    bundle = _train(tmp_path, callbacks=[StartFromOther()])
    L.seed_everything(11)  # what _train constructed, before the other weights replaced it
    init = {k: v.clone() for k, v in TiedNorm().state_dict().items()}  # tied: unshare
    step0 = tmp_path / "state" / "step-0"
    kept = load_state(step0)
    save_state(step0, model=init, optimizer=kept.optimizer, scheduler=kept.scheduler, rng=kept.rng)
    replay = _verify(bundle, tmp_path).result("replay.segments")
    assert replay is not None and replay.status is Status.FAIL, replay
    [first] = [s for s in replay.evidence["segments"] if s["start"] == 0]
    assert first["status"] == "fail" and first["first_divergent_step"] == 0


def test_step0_loss_of_a_model_with_dropout_is_recomputed_as_training_drew_it(
    tmp_path: Path,
) -> None:
    """Dropout draws from the global generator, so batch 0's loss on the init depends on the
    RNG state step 0 began with: the kept state reproduces it exactly; without a state folder
    the check allows the span of seeded draws; a wrong state file is caught as a mismatch."""
    bundle = _train(tmp_path, model_class=DroppedLogits)
    step0 = _verify(bundle, tmp_path).result("scratch.step0_loss")
    assert step0 is not None and step0.status is Status.PASS, step0
    assert step0.evidence["rng"] == "the state step 0 started with"
    assert step0.evidence["recomputed"] == pytest.approx(step0.evidence["logged"], rel=1e-6)

    no_state = verify_bundle(
        bundle, policy=builtin_policy("strict"), replay=0, trust_bundle_keys=True
    ).result("scratch.step0_loss")
    assert no_state is not None and no_state.status is Status.PASS, no_state
    assert no_state.evidence["rng"] == "not kept" and no_state.evidence["draws_span"] > 0

    state = tmp_path / "state"
    (state / "rng-before-step-0.json").write_bytes((state / "step-2" / "rng.json").read_bytes())
    wrong = _verify(bundle, tmp_path).result("scratch.step0_loss")
    assert wrong is not None and wrong.status is Status.FAIL, wrong
    assert "batch 0 on the init weights gives loss" in wrong.why


def test_a_fresh_two_class_model_below_nine_tenths_of_ln_2_is_not_called_trained(
    tmp_path: Path,
) -> None:
    """One batch of 8 samples and 2 classes: a fresh init with large logits scores well below
    ln 2 by chance. The recomputed loss is the committed init's own; it is judged against the
    chance loss of its own logits, not against 0.9·ln V."""
    bundle = _train(tmp_path, model_class=DroppedLogits, seed=19)
    verdict = _verify(bundle, tmp_path)
    step0 = verdict.result("scratch.step0_loss")
    assert step0 is not None and step0.status is Status.PASS, step0
    assert step0.evidence["logged"] < 0.9 * math.log(2)
    assert verdict.outcome is Outcome.VERIFIED, verdict.summary


@pytest.mark.parametrize(
    ("model_class", "bound_status"),
    [
        (RmsProp, Status.PASS),
        (AdaGrad, Status.PASS),
        (NAdamModel, Status.PASS),
        (RAdamModel, Status.PASS),
    ],
)
def test_each_optimizer_is_judged_by_its_own_update_bound_or_none(
    tmp_path: Path, model_class: type, bound_status: Status
) -> None:
    """RMSprop keeps ``momentum`` like SGD and NAdam keeps ``betas`` like Adam, but neither
    steps by their rules: judged by those bounds, honest runs failed. RMSprop, Adagrad, NAdam
    and RAdam have bounds of their own (RAdam's first, unrectified steps from the logged gradient
    norms). Adagrad creates its accumulators at construction, so its step-0 state is not empty
    yet fresh."""
    verdict = _verify(_train(tmp_path, model_class=model_class), tmp_path)
    bound = verdict.result("scratch.update_bound")
    assert bound is not None and bound.status is bound_status, bound
    if bound_status is Status.SKIPPED:
        assert "no update bound for an optimizer" in bound.why
    replay = verdict.result("replay.segments")
    assert replay is not None and replay.status is Status.PASS, replay
    assert any(s["start"] == 0 for s in replay.evidence["segments"])


def test_validation_between_steps_does_not_break_replay_of_a_model_with_dropout(
    tmp_path: Path,
) -> None:
    """Validation every 2 steps (5 steps an epoch): starting the validation loader draws from
    the global generator, so the next step's dropout masks depend on it. The callback keeps the
    generator state after each validation run; without that file the replay of an honest run
    diverges right there."""
    bundle = _train(tmp_path, model_class=Validated, validate_every=2)
    state = tmp_path / "state"
    assert (state / "rng-before-step-2.json").is_file()  # mid-epoch, after a validation run
    replay = _verify(bundle, tmp_path).result("replay.segments")
    assert replay is not None and replay.status is Status.PASS, replay
    assert replay.evidence["steps_replayed"] == replay.evidence["training_steps"]

    (state / "rng-before-step-2.json").unlink()
    replay = _verify(bundle, tmp_path).result("replay.segments")
    assert replay is not None and replay.status is Status.FAIL, replay
    assert min(s.get("first_divergent_step", 99) for s in replay.evidence["segments"]) == 2


def test_a_metric_driven_scheduler_is_recorded_and_refused_by_replay_by_name(
    tmp_path: Path,
) -> None:
    """ReduceLROnPlateau's state holds ``inf``: the callback must record it (it used to stop
    training), and replay, which recomputes no monitored metric, says so instead of failing."""
    verdict = _verify(_train(tmp_path, model_class=Plateau), tmp_path)
    replay = verdict.result("replay.segments")
    assert replay is not None and replay.status is Status.SKIPPED, replay
    assert "ReduceLROnPlateau" in replay.why
    assert verdict.result("scratch.update_bound").status is Status.PASS  # type: ignore[union-attr]


def test_random_augmentation_from_the_global_generator_is_could_not_check_not_a_failure(
    tmp_path: Path,
) -> None:
    """The dataset adds noise drawn from the global generator when a sample loads: training
    drew it while the loader fetched ahead, so no kept state makes replay redraw it. An honest
    run used to fail replay ("not from scratch"); replay now says why it cannot check, and the
    step-0 loss is judged within the span of seeded draws."""
    verdict = _verify(_train(tmp_path, dataset="NoisyBlobs"), tmp_path)
    replay = verdict.result("replay.segments")
    assert replay is not None and replay.status is Status.SKIPPED, replay
    assert "random data augmentation" in replay.why
    step0 = verdict.result("scratch.step0_loss")
    assert step0 is not None and step0.status is Status.PASS, step0
    assert step0.evidence["rng"].startswith("kept, but loading a sample draws from it")
    assert verdict.outcome is not Outcome.NOT_FROM_SCRATCH


def test_an_iterable_dataset_is_could_not_check_naming_the_fix() -> None:
    """Replay and the step-0 loss load committed samples by id; a stream cannot. That is
    "could not check", with the fix, never a crash of the scratch checks."""
    from attest.verifier.rebuild import build_dataset

    with pytest.raises(RebuildError, match=r"is an IterableDataset.*name a map-style dataset"):
        build_dataset({"import_path": "lightning_models:StreamBlobs", "init_args": {}})


def test_a_learning_rate_set_in_optimizer_step_is_replayed_from_the_log(tmp_path: Path) -> None:
    """Warm-up written in ``optimizer_step`` (no scheduler to rebuild): replay used to step at
    the configured rate and diverge at step 1 of an honest run."""
    verdict = _verify(_train(tmp_path, model_class=ManualWarmup), tmp_path)
    replay = verdict.result("replay.segments")
    assert replay is not None and replay.status is Status.PASS, replay
    assert replay.evidence["tolerance"]["mode"] == "exact"
    assert verdict.outcome is Outcome.VERIFIED, verdict.summary


def test_a_finished_run_extended_from_a_checkpoint_verifies_and_replays(tmp_path: Path) -> None:
    """Train 6 steps (the run ends), then continue from Lightning's step-6 checkpoint to 12 in a
    new process: one log with two run.end records, the first followed by the run.resume that
    extends the run. The resumed process's generators are not the first one's, so with dropout
    replay needs the state its first batch began with (that batch is not an epoch's first)."""
    key = TrainerKey.generate()
    key.save(tmp_path / "trainer.key")

    def fit(steps: int, ckpt: str | None = None) -> None:
        L.seed_everything(11)
        callback = LineageCallback(
            key=tmp_path / "trainer.key",
            destination=tmp_path / "log",
            run="extended",
            checkpoint_every=3,
            state_dir=tmp_path / "state",
            spool_dir=tmp_path / "spool",
            export_bundle=tmp_path / "bundle.json",
            config={"data": {"import_path": "lightning_models:Blobs", "init_args": {}}},
        )
        saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
        loader = DataLoader(
            Blobs(), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(5)
        )
        quiet_trainer(steps, callback, saver, deterministic=True, accelerator="cpu").fit(
            Dropped(), loader, ckpt_path=ckpt
        )

    fit(6)
    fit(12, str(next((tmp_path / "ckpt").glob("*step=6*.ckpt"))))
    types = [
        json.loads(base64.b64decode(r["payload"]))["type"]
        for r in json.loads((tmp_path / "bundle.json").read_text())["records"]
    ]
    assert types.count("run.end") == 2 and types[types.index("run.end") + 1] == "run.resume"
    verdict = _verify(tmp_path / "bundle.json", tmp_path)
    assert verdict.result("integrity.structure").status is Status.PASS  # type: ignore[union-attr]
    replay = verdict.result("replay.segments")
    assert replay is not None and replay.status is Status.PASS, replay
    assert replay.evidence["steps_replayed"] == replay.evidence["training_steps"] == 12
    assert verdict.outcome is Outcome.VERIFIED, verdict.summary
