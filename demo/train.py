"""Demo training runs: an honest run from scratch and the variants the verifier must judge.

Each run is an ordinary Lightning job with one extra line, the :class:`LineageCallback`; the
variants differ only in how the weights start:

* ``scratch``: ``seed_everything(seed)`` then ``TinyGPT(...)`` — a fresh init, as claimed.
* ``warm-start``: the same claim, but the weights are overwritten with a trained donor's before
  training (the dispute the product exists for); the verifier must reject it.
* ``declared-component``: the first transformer block is taken from a donor and *declared* as an
  external component; the verifier accepts it as "from scratch except declared components".
* ``finetune``: a child run that starts from a parent run's final weights and names the parent's
  bundle; the verifier walks child → parent.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from attest.callbacks import LineageCallback
from attest.callbacks.info import Component, DatasetInfo, Parent
from attest.demo.data import CharDataset, write_demo_text
from attest.demo.model import TinyGPT
from attest.keys import TrainerKey

__all__ = ["DemoRun", "train_donor", "train_run"]

DATA_ARGS: dict[str, Any] = {"sentences": 4000, "seed": 1234, "block_size": 32}
MODEL_ARGS: dict[str, Any] = {"d_model": 64, "n_layer": 2, "n_head": 4, "block_size": 32}
BATCH_SIZE = 16


@dataclass(frozen=True)
class DemoRun:
    """Where a finished demo run left its files."""

    run: str
    bundle: Path
    model: Path
    state_dir: Path
    data_dir: Path  # the data shard the run declared (demo-text.txt)
    final_root: str


def _dataset() -> CharDataset:
    return CharDataset(**DATA_ARGS)


def _loader(ds: CharDataset) -> DataLoader[Any]:
    return DataLoader(ds, batch_size=BATCH_SIZE, shuffle=True, num_workers=0)


def _trainer(steps: int, callbacks: Sequence[L.Callback], *, progress: bool) -> L.Trainer:
    return L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        deterministic=True,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        callbacks=list(callbacks),
    )


def _quiet() -> None:
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*GPU available but not used.*")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)


def train_donor(*, seed: int, steps: int) -> dict[str, torch.Tensor]:
    """Train an unattested model: the "other model" whose weights the dishonest variants reuse."""
    _quiet()
    ds = _dataset()
    L.seed_everything(seed, verbose=False)
    model = TinyGPT(ds.vocab_size, **MODEL_ARGS)
    _trainer(steps, [], progress=False).fit(model, _loader(ds))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_run(
    *,
    out: Path,
    run: str,
    key: TrainerKey,
    destination: object,
    seed: int,
    steps: int,
    checkpoint_every: int,
    overwrite: Mapping[str, torch.Tensor] | None = None,
    components: Sequence[Component] = (),
    parent: Parent | None = None,
    lr: float = 3e-3,
    progress: bool = True,
    token: str | None = None,
) -> DemoRun:
    """Train one attested run and leave its bundle, final weights and replay state under ``out``."""
    _quiet()
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "data"
    text = write_demo_text(data_dir, sentences=DATA_ARGS["sentences"], seed=DATA_ARGS["seed"])
    ds = CharDataset(**DATA_ARGS, data_dir=str(data_dir))  # the declared file is what trains
    L.seed_everything(seed, verbose=False)
    model = TinyGPT(ds.vocab_size, lr=lr, **MODEL_ARGS)
    if overwrite is not None:
        with torch.no_grad():
            state = model.state_dict()
            for name, tensor in overwrite.items():
                state[name].copy_(tensor)
    callback = LineageCallback(
        key=key,
        destination=destination,  # type: ignore[arg-type]
        token=token,
        run=run,
        checkpoint_every=checkpoint_every,
        state_dir=out / "state",
        spool_dir=out / "spool",
        components=components,
        parent=parent,
        dataset=DatasetInfo.of_files("attest-demo-text", [text], size=len(ds)),
        export_bundle=out / "bundle.json",
        config={
            "data": {"import_path": "attest.demo.data:CharDataset", "init_args": DATA_ARGS},
            "batch_size": BATCH_SIZE,
            "max_steps": steps,
            "shuffle": True,
        },
    )
    _trainer(steps, [callback], progress=progress).fit(model, _loader(ds))
    model_path = out / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(model_path))
    from attest.digest import digest_state_dict

    root = digest_state_dict(model.state_dict()).hex
    return DemoRun(run, out / "bundle.json", model_path, out / "state", data_dir, root)
