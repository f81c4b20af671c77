"""Attested training runs for the from-scratch and replay tests, built without Lightning.

:func:`train_run` trains the demo's TinyGPT (tiny sizes) on the demo character dataset with a
plain PyTorch loop that does what Lightning's automatic optimisation does (loss, zero_grad,
backward, optimizer step, per-step scheduler step), writes the records of docs/formats.md through
:class:`~attest.records.RecordWriter` into a :class:`~attest.log.LocalLog`, and keeps the state
files of every checkpoint with :mod:`attest.statefiles`. Hooks let a test tamper the way an
attacker would: another init under the claimed seed, an edited loss, a checkpoint swapped for
another model's weights with a self-consistent, re-signed chain.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from attest.canonical import canonical_json, sha256_digest
from attest.demo.data import CharDataset
from attest.demo.model import TinyGPT
from attest.digest import digest_state_dict
from attest.keys import TrainerKey
from attest.log import LocalLog
from attest.records import RecordWriter
from attest.statefiles import capture_rng, save_state
from attest.verifier.context import VerifyContext
from attest.verifier.policy import Policy

DATA = {"sentences": 300, "seed": 7, "block_size": 16}
MODEL = {"d_model": 16, "n_layer": 1, "n_head": 2, "block_size": 16, "lr": 1e-3}
DATA_PATH = "attest.demo.data:CharDataset"
MODEL_PATH = "attest.demo.model:TinyGPT"


def dataset() -> CharDataset:
    return CharDataset(**DATA)


def model_args() -> dict[str, Any]:
    return {"vocab_size": dataset().vocab_size, **MODEL}


def fresh_model(seed: int) -> TinyGPT:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return TinyGPT(**model_args())


def copy_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass
class Run:
    folder: Path
    bundle: Any
    key: TrainerKey
    final: dict[str, torch.Tensor]

    def context(
        self, *, replay: int = 0, replay_seed: int | None = 0, **stats: Any
    ) -> VerifyContext:
        policy = Policy(
            name="test",
            replay_segments=0,
            statistics={"alpha": 0.01, "replay_budget": 1.0, **stats},
        )
        return VerifyContext(
            bundle=self.bundle,
            policy=policy,
            trainer_key=self.key.public,
            server_verifier=None,
            state_dir=self.folder / "state",
            replay=replay,
            replay_seed=replay_seed,
        )


def train_run(
    folder: Path,
    key: TrainerKey,
    *,
    seed: int = 0,
    steps: int = 24,
    every: int = 4,
    batch_size: int = 8,
    init: Mapping[str, torch.Tensor] | None = None,
    edit_loss: Callable[[int, float], float] | None = None,
    swap_at: tuple[int, Mapping[str, torch.Tensor]] | None = None,
) -> Run:
    """Train and attest one run; see the module docstring for the tampering hooks."""
    torch.set_num_threads(1)
    ds = dataset()
    model = fresh_model(seed)
    if init is not None:
        model.load_state_dict(dict(init))
    cfg = model.configure_optimizers()
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    log = LocalLog(folder / "log")
    run = "run-" + folder.name[-20:].replace("_", "-")
    log.create_run(run, key.public)
    writer = RecordWriter(run, key)
    leaves: list[bytes] = []
    algo = "attest-tensors-v1/sha256/chunk=16777216"

    def write(rtype: str, body: dict[str, Any]) -> None:
        leaves.append(writer.write(rtype, body).leaf_data())

    def model_ref(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, str], str, str]:
        d = digest_state_dict(state, algorithm=algo)
        return {"algorithm": d.algorithm, "root": d.hex}, log.put_blob(run, d.to_json()), d.hex

    env = {
        "python": "3",
        "torch": torch.__version__,
        "lightning": None,
        "platform": "test",
        "device": "cpu",
        "threads": 1,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": None,
        "cudnn": None,
        "deterministic": True,
        "world_size": 1,
    }
    write(
        "run.start",
        {
            "config": {
                "data": {"import_path": DATA_PATH, "init_args": DATA},
                "batch_size": batch_size,
            },
            "code": {"revision": None, "dirty": False, "diff": None},
            "environment": env,
            "model": {
                "import_path": MODEL_PATH,
                "init_args": model_args(),
                "parameters": sum(p.numel() for p in model.parameters()),
            },
            "init": {"seed": seed, "recipe": "seed-then-construct"},
            "components": [],
            "parent": None,
            "digest_algorithm": algo,
        },
    )
    ref, blob, prev = model_ref(copy_state(model))
    write("weights.init", {"step": 0, "model": ref, "tensors": blob})
    save_state(
        folder / "state" / "step-0",
        model=copy_state(model),
        optimizer=opt.state_dict(),
        scheduler=sched.state_dict(),
        rng=capture_rng(),
    )
    ids = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed)).tolist()
    write(
        "data.manifest",
        {
            "dataset": {
                "name": "demo",
                "size": len(ds),
                "fingerprint": ds.fingerprint,
                "shards": [],
            },
            "sampler": {
                "kind": "random",
                "seed": seed,
                "batch_size": batch_size,
                "drop_last": False,
                "world_size": 1,
            },
        },
    )
    order = log.put_blob(run, {"epoch": 0, "ids": ids})
    write("data.order", {"epoch": 0, "position": 0, "batch_size": batch_size, "order": order})
    assert steps * batch_size <= len(ids)
    pending: dict[str, list[Any]] = {"loss": [], "lr": [], "grad_norm": [], "batch": []}
    first = 0
    for step in range(steps):
        batch_ids = ids[step * batch_size : (step + 1) * batch_size]
        batch = default_collate([ds[i] for i in batch_ids])
        lr = opt.param_groups[0]["lr"]
        loss = model.training_step(batch, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.sqrt(
            sum(p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None)
        )
        opt.step()
        sched.step()
        value = float(loss.item())
        if edit_loss is not None:
            value = edit_loss(step, value)
        pending["loss"].append(value)
        pending["lr"].append(lr)
        pending["grad_norm"].append(float(norm))
        pending["batch"].append(sha256_digest(canonical_json(batch_ids)))
        done = step + 1
        if done % every == 0 or done == steps:
            write("train.steps", {"first_step": first, **pending})
            pending = {k: [] for k in pending}
            first = done
            if swap_at is not None and swap_at[0] == done:
                model.load_state_dict(dict(swap_at[1]))
            state = copy_state(model)
            digests = save_state(
                folder / "state" / f"step-{done}",
                model=state,
                optimizer=opt.state_dict(),
                scheduler=sched.state_dict(),
                rng=capture_rng(),
            )
            ref, blob, root = model_ref(state)
            write(
                "weights.checkpoint",
                {
                    "step": done,
                    "model": ref,
                    "tensors": blob,
                    "state": digests.to_json(),
                    "prev_checkpoint": prev,
                },
            )
            prev = root
    ref, blob, _ = model_ref(copy_state(model))
    write("run.end", {"step": steps, "model": ref, "tensors": blob, "last_checkpoint": prev})
    for i in range(0, len(leaves), 500):
        log.append(run, leaves[i : i + 500])
    return Run(folder, log.export(run), key, copy_state(model))


def trained_state(
    folder: Path, key: TrainerKey, *, seed: int, steps: int = 60
) -> dict[str, torch.Tensor]:
    """Weights of an honest run trained for ``steps`` (the "parent" of a warm start)."""
    return train_run(folder, key, seed=seed, steps=steps, every=steps).final
