"""DDP with two CPU processes (gloo): one chain written by rank zero, every rank's sample ids."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning_models import quiet_trainer

from attest.canonical import canonical_json, sha256_digest

_TWO_PROCESSES = {"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn"}


@pytest.mark.slow
def test_ddp_two_cpu_processes_one_chain_with_both_ranks_ids(tmp_path: Path) -> None:
    import lightning as L
    from torch.utils.data import DataLoader

    from attest.bundle import Bundle
    from attest.callbacks import LineageCallback
    from attest.demo.data import CharDataset
    from attest.demo.model import TinyGPT
    from attest.keys import TrainerKey
    from attest.records import check_chain

    key = TrainerKey.generate()
    key.save(tmp_path / "k.pem")
    L.seed_everything(5)
    ds = CharDataset(sentences=60, block_size=8)
    model = TinyGPT(ds.vocab_size, d_model=16, n_layer=1, n_head=2, block_size=8)
    cb = LineageCallback(
        key=tmp_path / "k.pem",
        destination=tmp_path / "log",
        run="ddp",
        checkpoint_every=10,
        spool_dir=tmp_path / "spool",
        export_bundle=tmp_path / "b.json",
    )
    quiet_trainer(20, cb, **_TWO_PROCESSES).fit(model, DataLoader(ds, batch_size=8, shuffle=True))

    bundle = Bundle.read(tmp_path / "b.json")
    public = key.public
    for r in bundle.records:
        r.verify(public)
    records = [r.record for r in bundle.records]
    check_chain(records, run="ddp")
    assert [r.type for r in records].count("run.start") == 1
    assert records[0].body["environment"]["world_size"] == 2
    manifest = next(r.body for r in records if r.type == "data.manifest")
    assert manifest["sampler"]["kind"] == "distributed" and manifest["sampler"]["world_size"] == 2
    steps = [r.body for r in records if r.type == "train.steps"]
    assert sum(len(s["loss"]) for s in steps) == 20
    orders = [r.body for r in records if r.type == "data.order"]
    assert all(o["batch_size"] == 16 for o in orders)
    ids = [i for o in orders for i in bundle.blob(o["order"])["ids"]]
    assert len(ids) == 20 * 16 == len(set(ids))  # both ranks' samples, none twice in an epoch
    per_step = [ids[i : i + 16] for i in range(0, len(ids), 16)]
    assert [sha256_digest(canonical_json(x)) for x in per_step] == [
        b for s in steps for b in s["batch"]
    ]
    assert [r.body["step"] for r in records if r.type == "weights.checkpoint"] == [10, 20]


@pytest.mark.slow
def test_ddp_run_with_batchnorm_and_dropout_replays_exactly(tmp_path: Path) -> None:
    """Each rank normalises its own batch, draws its own dropout masks from a generator seeded
    like every other rank's, and DDP averages the ranks' gradients and keeps rank 0's buffers.
    Replaying the gathered global batch as one batch (as replay used to) gave other losses and
    weights: an honest two-process run was "not from scratch" at step 0."""
    from dataclasses import replace

    import lightning as L
    from lightning_models import Blobs, Dropped
    from torch.utils.data import DataLoader

    from attest.callbacks import LineageCallback
    from attest.keys import TrainerKey
    from attest.verifier import Outcome, builtin_policy, verify_bundle
    from attest.verifier.result import Status

    key = TrainerKey.generate()
    key.save(tmp_path / "k.pem")
    L.seed_everything(5)
    callback = LineageCallback(
        key=tmp_path / "k.pem",
        destination=tmp_path / "log",
        run="ddp-replay",
        checkpoint_every=3,
        state_dir=tmp_path / "state",
        spool_dir=tmp_path / "spool",
        export_bundle=tmp_path / "b.json",
        config={"data": {"import_path": "lightning_models:Blobs", "init_args": {"n": 60}}},
    )
    quiet_trainer(8, callback, deterministic=True, **_TWO_PROCESSES).fit(
        Dropped(),
        DataLoader(Blobs(n=60), batch_size=8, shuffle=True),  # 30 a rank: 8, 8, 8, 6
    )
    policy = replace(builtin_policy("strict"), statistics={"replay_budget": 1.0})
    verdict = verify_bundle(
        tmp_path / "b.json",
        policy=policy,
        state_dir=tmp_path / "state",
        replay=20,
        replay_seed=0,
        trust_bundle_keys=True,
    )
    replay = verdict.result("replay.segments")
    assert replay is not None and replay.status is Status.PASS, replay
    assert replay.evidence["steps_replayed"] == replay.evidence["training_steps"] == 8
    step0 = verdict.result("scratch.step0_loss")
    assert step0 is not None and step0.status is Status.PASS, step0
    assert verdict.outcome is Outcome.VERIFIED, verdict.summary
