"""LineageCallback on a tiny GPT on CPU: the log verifies, every step once, resume, determinism."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning_models import quiet_trainer
from torch.utils.data import DataLoader

from attest.bundle import Bundle
from attest.callbacks import LineageCallback, RecordingBatchSampler
from attest.canonical import canonical_json, sha256_digest
from attest.demo.data import CharDataset
from attest.demo.model import TinyGPT
from attest.digest import ModelDigest, digest_state_dict
from attest.errors import ConfigurationError, KeyError_
from attest.keys import TrainerKey
from attest.note import NoteVerifier, open_checkpoint
from attest.records import check_chain
from attest.statefiles import load_state
from attest.statement import loss_curve_digest, open_statement

HP = {"d_model": 16, "n_layer": 1, "n_head": 2, "block_size": 8}


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "trainer.pem"
    TrainerKey.generate().save(path)
    return path


def dataset() -> CharDataset:
    return CharDataset(sentences=60, block_size=HP["block_size"])


def without_ids(ds: CharDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset's inputs and targets as two tensors, without the sample ids."""
    return torch.stack([ds[i][1] for i in range(len(ds))]), torch.stack(
        [ds[i][2] for i in range(len(ds))]
    )


def fit(
    tmp: Path,
    key: Path,
    *,
    steps: int,
    run: str = "r1",
    seed: int = 7,
    ckpt_path: str | None = None,
    extra: list[Any] | None = None,
    **options: Any,
) -> LineageCallback:
    L.seed_everything(seed)
    ds = dataset()
    model = TinyGPT(ds.vocab_size, **HP)
    options.setdefault("checkpoint_every", 50)
    cb = LineageCallback(
        key=key,
        destination=tmp / "log",
        run=run,
        spool_dir=tmp / "spool",
        export_bundle=tmp / f"{run}.bundle.json",
        **options,
    )
    trainer = L.Trainer(
        max_steps=steps,
        callbacks=[cb, *(extra or [])],
        logger=False,
        enable_checkpointing=bool(extra),
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )
    trainer.fit(model, DataLoader(ds, batch_size=8, shuffle=True), ckpt_path=ckpt_path)
    return cb


def steps_of(bundle: Bundle) -> list[int]:
    out: list[int] = []
    for r in bundle.records:
        if r.record.type == "train.steps":
            first = r.record.body["first_step"]
            out.extend(range(first, first + len(r.record.body["loss"])))
    return out


def check_log(bundle: Bundle, key: Path, tmp: Path) -> None:
    """Signatures, chain, log checkpoint and statement, with the core's functions."""
    public = TrainerKey.load(key).public
    for r in bundle.records:
        r.verify(public)
    check_chain([r.record for r in bundle.records], run=bundle.run)
    server = NoteVerifier.from_vkey(bundle.keys["server"])
    for note in bundle.checkpoints:
        open_checkpoint(note, server, origin=bundle.origin)
    statement = open_statement(bundle.statement, public)
    end = [r.record for r in bundle.records if r.record.type == "run.end"][-1]
    assert statement.model_sha256 == end.body["model"]["root"]
    covering = open_checkpoint(statement.log_checkpoint, server).checkpoint
    assert covering.size > end.seq
    for r in bundle.records:  # every blob a record names is in the bundle
        body = r.record.body
        for name in ("tensors", "order"):
            if name in body:
                bundle.blob(body[name])


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_bad_configuration_names_the_argument(tmp_path: Path, key: Path) -> None:
    with pytest.raises(ConfigurationError, match="key"):
        LineageCallback(key=tmp_path / "missing.pem", destination=tmp_path / "log")
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(KeyError_):
        LineageCallback(key=tmp_path / "bad.pem", destination=tmp_path / "log")
    with pytest.raises(ConfigurationError, match=r"destination.*'ftp'"):
        LineageCallback(key=key, destination="ftp://example.org/log")
    with pytest.raises(ConfigurationError, match="checkpoint_every"):
        LineageCallback(key=key, destination=tmp_path / "log", checkpoint_every=0)
    with pytest.raises(ConfigurationError, match="ids_from"):
        LineageCallback(key=key, destination=tmp_path / "log", ids_from="guess")
    with pytest.raises(ConfigurationError, match="run"):
        LineageCallback(key=key, destination=tmp_path / "log", run="bad run/id")


@pytest.mark.slow
def test_trains_and_the_log_verifies_with_every_step_once(tmp_path: Path, key: Path) -> None:
    cb = fit(tmp_path, key, steps=300, state_dir=tmp_path / "state")
    bundle = Bundle.read(tmp_path / "r1.bundle.json")
    check_log(bundle, key, tmp_path)
    types = [r.record.type for r in bundle.records]
    assert types[:3] == ["run.start", "weights.init", "data.manifest"]
    assert types[-1] == "run.end"
    assert steps_of(bundle) == list(range(300))
    records = [r.record for r in bundle.records]
    ckpts = [r for r in records if r.type == "weights.checkpoint"]
    assert [c.body["step"] for c in ckpts] == [50, 100, 150, 200, 250, 300]
    init = next(r for r in records if r.type == "weights.init")
    chain = [init.body["model"]["root"]] + [c.body["model"]["root"] for c in ckpts]
    assert [c.body["prev_checkpoint"] for c in ckpts] == chain[:-1]
    start = records[0].body
    assert start["model"]["import_path"] == "attest.demo.model:TinyGPT"
    assert start["model"]["init_args"]["d_model"] == 16
    assert start["init"] == {"seed": 7, "recipe": "seed-then-construct"}
    assert start["environment"]["deterministic"] is True

    # The init is what seed-then-construct gives; step 0's loss is the init's loss on batch 0.
    L.seed_everything(7)
    ds = dataset()
    fresh = TinyGPT(**start["model"]["init_args"])
    assert digest_state_dict(fresh.state_dict()).hex == init.body["model"]["root"]
    orders = [r.body for r in records if r.type == "data.order"]
    ids = bundle.blob(orders[0]["order"])["ids"][:8]
    steps = [r.body for r in records if r.type == "train.steps"]
    assert steps[0]["batch"][0] == sha256_digest(canonical_json(ids))
    batch = [torch.stack(t) for t in zip(*(ds[i][1:] for i in ids), strict=True)]
    with torch.no_grad():
        loss0 = fresh.loss((torch.tensor(ids), *batch)).item()
    assert steps[0]["loss"][0] == pytest.approx(loss0, rel=1e-5)

    # Every step's batch digest is reproduced by the data.order ids, cut by batch_size.
    digests = []
    for o in orders:
        all_ids = bundle.blob(o["order"])["ids"]
        bs = o["batch_size"]
        digests += [
            sha256_digest(canonical_json(all_ids[i : i + bs])) for i in range(0, len(all_ids), bs)
        ]
    assert digests == [d for s in steps for d in s["batch"]]

    # Checkpoint blobs and state files match the records; the statement names them.
    last = ckpts[-1].body
    blob = ModelDigest.from_json(bundle.blob(last["tensors"]))
    assert blob.hex == last["model"]["root"]
    state = load_state(tmp_path / "state" / last["state"]["path"])
    assert digest_state_dict(state.model).hex == last["model"]["root"]
    assert state.digests.optimizer == last["state"]["optimizer"]
    assert state.digests.scheduler == last["state"]["scheduler"]
    assert state.digests.rng == last["state"]["rng"]
    statement = open_statement(bundle.statement, TrainerKey.load(key).public)
    losses = [x for s in steps for x in s["loss"]]
    assert statement.byproduct("loss-curve").sha256 == loss_curve_digest(0, losses)[7:]  # type: ignore[union-attr]
    assert statement.byproduct("checkpoint:300").sha256 == last["model"]["root"]  # type: ignore[union-attr]
    assert statement.dependency("init-weights").sha256 == init.body["model"]["root"]  # type: ignore[union-attr]
    assert cb.recorder is not None and cb.recorder.spool is not None
    assert not cb.recorder.spool.errors


@pytest.mark.slow
def test_same_seed_twice_gives_identical_digests(tmp_path: Path, key: Path) -> None:
    def facts(run: str) -> list[Any]:
        fit(tmp_path, key, steps=60, run=run, checkpoint_every=30)
        bundle = Bundle.read(tmp_path / f"{run}.bundle.json")
        out: list[Any] = []
        for r in bundle.records:
            body = r.record.body
            if r.record.type in ("weights.init", "weights.checkpoint", "run.end"):
                out.append((r.record.type, body["model"]["root"], body.get("state")))
            elif r.record.type in ("train.steps", "data.order"):
                out.append((r.record.type, body))
        return out

    assert facts("a") == facts("b")


@pytest.mark.slow
def test_resume_continues_one_chain_without_gap_or_duplicate(tmp_path: Path, key: Path) -> None:
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=20, save_top_k=-1)
    fit(tmp_path, key, steps=40, extra=[saver], checkpoint_every=30)
    ckpt = tmp_path / "ckpt" / "epoch=0-step=40.ckpt"
    if not ckpt.exists():
        ckpt = sorted((tmp_path / "ckpt").glob("*step=40*.ckpt"))[0]
    saver2 = ModelCheckpoint(dirpath=tmp_path / "ckpt2", every_n_train_steps=20)
    fit(tmp_path, key, steps=90, extra=[saver2], checkpoint_every=30, ckpt_path=str(ckpt))
    bundle = Bundle.read(tmp_path / "r1.bundle.json")
    check_log(bundle, key, tmp_path)
    records = [r.record for r in bundle.records]
    resumes = [r for r in records if r.type == "run.resume"]
    assert len(resumes) == 1
    resume = resumes[0]
    assert resume.body["step"] == 40
    logged = {
        r.body["model"]["root"] for r in records[: resume.seq] if r.type == "weights.checkpoint"
    }
    assert resume.body["from_checkpoint"] in logged
    assert "model" not in resume.body  # the resumed weights are the logged checkpoint
    assert resume.body["data_position"]["restarted_at"] == 0
    assert steps_of(bundle) == list(range(90))
    ckpt_steps = [r.body["step"] for r in records if r.type == "weights.checkpoint"]
    assert ckpt_steps == [20, 30, 40, 60, 80, 90]
    ends = [r for r in records if r.type == "run.end"]
    assert [e.body["step"] for e in ends] == [40, 90]


@pytest.mark.slow
def test_sample_ids_from_a_recording_batch_sampler(tmp_path: Path, key: Path) -> None:
    from torch.utils.data import BatchSampler, RandomSampler, TensorDataset

    L.seed_everything(3)
    ds = dataset()
    plain = TensorDataset(*without_ids(ds))
    sampler = RecordingBatchSampler(BatchSampler(RandomSampler(plain), 8, drop_last=False))

    class NoIds(TinyGPT):  # type: ignore[misc]
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss: torch.Tensor = self.loss((None, *batch))
            return loss

    model = NoIds(ds.vocab_size, **HP)
    cb = LineageCallback(
        key=key,
        destination=tmp_path / "log",
        run="s",
        spool_dir=tmp_path / "spool",
        ids_from="sampler",
        export_bundle=tmp_path / "s.json",
    )
    quiet_trainer(20, cb).fit(model, DataLoader(plain, batch_sampler=sampler))
    bundle = Bundle.read(tmp_path / "s.json")
    order = next(r.record.body for r in bundle.records if r.record.type == "data.order")
    ids = bundle.blob(order["order"])["ids"]
    assert ids[:8] != list(range(8))  # a random order, as the sampler drew it
    assert len(ids) == 20 * 8 == len(set(ids))
    assert steps_of(bundle) == list(range(20))


@pytest.mark.parametrize("kind", ["token rows", "float features", "dict without ids"])
def test_a_batch_without_sample_ids_is_refused_by_name(
    tmp_path: Path, key: Path, kind: str
) -> None:
    """A plain ``(x, y)`` batch must not have its first tensor logged as the data order."""
    from torch.utils.data import TensorDataset

    ds = dataset()
    xs, ys = without_ids(ds)
    items: Any = {
        "token rows": TensorDataset(xs, ys),
        "float features": TensorDataset(xs.float(), ys),
        "dict without ids": [{"x": x, "y": y} for x, y in zip(xs, ys, strict=True)],
    }[kind]

    class Plain(TinyGPT):  # type: ignore[misc]
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = (batch["x"], batch["y"]) if isinstance(batch, dict) else batch
            loss: torch.Tensor = self.loss((None, x.long(), y))
            return loss

    cb = LineageCallback(key=key, destination=tmp_path / "log", spool_dir=tmp_path / "spool")
    with pytest.raises(ConfigurationError, match="ids_from='sampler'") as caught:
        quiet_trainer(2, cb).fit(Plain(ds.vocab_size, **HP), DataLoader(items, batch_size=8))
    assert ("'ids' or 'index'" in caught.value.message) == (kind == "dict without ids")


def test_factory_is_opt_in(tmp_path: Path, key: Path) -> None:
    from attest.callbacks.factory import callbacks_from_environment

    assert callbacks_from_environment({}) == []
    with pytest.raises(ConfigurationError, match="ATTEST_DESTINATION"):
        callbacks_from_environment({"ATTEST_CALLBACK": "1", "ATTEST_KEY": str(key)})
    with pytest.raises(ConfigurationError, match="ATTEST_CHECKPOINT_EVERY"):
        callbacks_from_environment(
            {
                "ATTEST_CALLBACK": "1",
                "ATTEST_KEY": str(key),
                "ATTEST_DESTINATION": str(tmp_path),
                "ATTEST_CHECKPOINT_EVERY": "x",
            }
        )
    (cb,) = callbacks_from_environment(
        {"ATTEST_CALLBACK": "1", "ATTEST_KEY": str(key), "ATTEST_DESTINATION": str(tmp_path)}
    )
    assert isinstance(cb, LineageCallback)
    os.environ.pop("ATTEST_CALLBACK", None)


def test_fast_id_encodings_are_rfc8785() -> None:
    from attest.callbacks.steps import ints_json, order_json

    ids = [0, 5, 123456789, 2**52, 7]
    assert ints_json(ids) == canonical_json(ids)
    assert order_json(3, ids) == canonical_json({"epoch": 3, "ids": ids})
    assert ints_json([]) == canonical_json([])
