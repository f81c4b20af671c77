"""Honest runs for the verifier tests, built without Lightning or a server.

:func:`train` runs a plain PyTorch loop on :class:`~tamper.models.TinyMLP` and returns the run's
*facts* — the record bodies of docs/formats.md in log order, the blobs they reference — with the
state files of every checkpoint written under ``state_dir``. :func:`seal` signs the facts with a
trainer key into a fresh :class:`~attest.log.LocalLog` (the log countersigns whatever a trainer
submits, as a real server would), signs the lineage statement and exports the bundle. Attacks
that the trainer itself mounts edit the facts and seal again (a self-consistent, validly signed
forgery); attacks by anyone else edit the sealed bundle.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric import ed25519
from safetensors.torch import save_file

from attest.bundle import Bundle
from attest.canonical import canonical_json, sha256_digest
from attest.digest import digest_state_dict
from attest.keys import TrainerKey
from attest.log import LocalLog
from attest.records import RecordWriter
from attest.statefiles import capture_rng, save_state
from attest.statement import Dependency, LineageStatement, loss_curve_digest, sign_statement
from attest.verifier.policy import Policy

from .models import TinyMLP, make_data

__all__ = ["Facts", "RunConfig", "Sealed", "honest_run", "policy_for", "seal", "train"]

IMPORT_PATH = "tamper.models:TinyMLP"
DATA_PATH = "tamper.models:TinyData"


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    steps: int = 12
    every: int = 4
    batch_size: int = 4
    samples: int = 24
    init_args: Mapping[str, Any] = field(
        default_factory=lambda: {"d_in": 8, "hidden": 32, "classes": 4, "lr": 0.1}
    )
    data_seed: int = 1234
    components: Sequence[Mapping[str, str]] = ()  # {"name", "prefix", "source", "license"}
    init_state: Mapping[str, torch.Tensor] | None = None  # load these weights instead of seeding
    parent: Mapping[str, Any] | None = None


@dataclass
class Facts:
    """A run before signing: record bodies in log order, blobs, and the files it produced."""

    run: str
    entries: list[tuple[str, dict[str, Any]]]
    blobs: dict[str, Any]
    final_state: dict[str, torch.Tensor]
    state_dir: Path
    data_dir: Path

    def blob(self, doc: Any) -> str:
        name = sha256_digest(canonical_json(doc))
        self.blobs[name] = doc
        return name

    def bodies(self, rtype: str) -> list[dict[str, Any]]:
        return [b for t, b in self.entries if t == rtype]

    def copy(self) -> Facts:
        return replace(self, entries=copy.deepcopy(self.entries), blobs=dict(self.blobs))


@dataclass(frozen=True)
class Sealed:
    """A signed, logged run: the bundle and the keys and files a verifier would be given."""

    facts: Facts
    bundle: Bundle
    bundle_path: Path
    model_path: Path
    trainer_key: TrainerKey
    server_key: ed25519.Ed25519PrivateKey
    log: LocalLog

    @property
    def server_vkey(self) -> str:
        return self.log.signer.verifier.to_vkey()


def _ref(d: Any) -> dict[str, str]:
    return {"algorithm": d.algorithm, "root": d.hex}


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(folder: Path, cfg: RunConfig = RunConfig(), *, run: str = "honest-run") -> Facts:
    """Train ``cfg.steps`` SGD steps and return the facts (docs/formats.md record bodies) of the run."""
    folder.mkdir(parents=True, exist_ok=True)
    state_dir, data_dir = folder / "state", folder / "data"
    data_dir.mkdir(exist_ok=True)
    x, y = make_data(
        cfg.samples,
        d_in=cfg.init_args["d_in"],
        classes=cfg.init_args["classes"],
        seed=cfg.data_seed,
    )
    save_file({"x": x, "y": y}, str(data_dir / "data.safetensors"))
    data = (data_dir / "data.safetensors").read_bytes()
    shards = [{"path": "data.safetensors", "digest": sha256_digest(data), "bytes": len(data)}]
    _seed_all(cfg.seed)
    model = TinyMLP(**cfg.init_args)
    if cfg.init_state is not None:
        model.load_state_dict(dict(cfg.init_state))
    facts = Facts(run, [], {}, {}, state_dir, data_dir)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    init = digest_state_dict(sd, workers=1)
    comps = []
    for c in cfg.components:
        part = {k: v for k, v in sd.items() if k.startswith(c["prefix"])}
        d = digest_state_dict(part, workers=1)
        comps.append({**c, "digest": _ref(d), "tensors": facts.blob(d.to_json())})
    params = sum(p.numel() for p in model.parameters())
    facts.entries.append(
        (
            "run.start",
            {
                "config": {
                    "lr": cfg.init_args["lr"],
                    "batch_size": cfg.batch_size,
                    "steps": cfg.steps,
                    "data": {
                        "import_path": DATA_PATH,
                        "init_args": {
                            "samples": cfg.samples,
                            "d_in": cfg.init_args["d_in"],
                            "classes": cfg.init_args["classes"],
                            "seed": cfg.data_seed,
                        },
                    },
                },
                "code": {"revision": None, "dirty": False, "diff": None},
                "environment": {
                    "python": "3",
                    "torch": torch.__version__,
                    "lightning": None,
                    "platform": "test",
                    "device": "cpu",
                    "threads": torch.get_num_threads(),
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "cuda": None,
                    "cudnn": None,
                    "deterministic": True,
                    "world_size": 1,
                },
                "model": {
                    "import_path": IMPORT_PATH,
                    "init_args": dict(cfg.init_args),
                    "parameters": params,
                },
                "init": {
                    "seed": cfg.seed,
                    "recipe": "seed-then-construct" if cfg.init_state is None else "loaded",
                },
                "components": comps,
                "parent": dict(cfg.parent) if cfg.parent else None,
                "digest_algorithm": init.algorithm,
            },
        )
    )
    facts.entries.append(
        ("weights.init", {"step": 0, "model": _ref(init), "tensors": facts.blob(init.to_json())})
    )
    facts.entries.append(
        (
            "data.manifest",
            {
                "dataset": {
                    "name": "synthetic",
                    "size": cfg.samples,
                    "fingerprint": sha256_digest(canonical_json(shards)),
                    "shards": shards,
                },
                "sampler": {
                    "kind": "random",
                    "seed": cfg.data_seed,
                    "batch_size": cfg.batch_size,
                    "drop_last": False,
                    "world_size": 1,
                },
            },
        )
    )
    opt = model.configure_optimizers()
    save_state(
        state_dir / "step-0",
        model=sd,
        optimizer=opt.state_dict(),
        scheduler=None,
        rng=capture_rng(),
    )
    per_epoch = -(-cfg.samples // cfg.batch_size)
    pending: list[dict[str, Any]] = []
    prev_root = init.hex

    def flush() -> None:
        if not pending:
            return
        seg: list[int] = []
        for i, s in enumerate(pending):
            seg.extend(s["ids"])
            if i + 1 == len(pending) or pending[i + 1]["epoch"] != s["epoch"]:
                start = next(
                    j for j in range(i, -1, -1) if j == 0 or pending[j - 1]["epoch"] != s["epoch"]
                )
                facts.entries.append(
                    (
                        "data.order",
                        {
                            "epoch": s["epoch"],
                            "position": pending[start]["batch"],
                            "batch_size": cfg.batch_size,
                            "order": facts.blob({"epoch": s["epoch"], "ids": seg}),
                        },
                    )
                )
                seg = []
        facts.entries.append(
            (
                "train.steps",
                {
                    "first_step": pending[0]["step"],
                    "loss": [s["loss"] for s in pending],
                    "lr": [s["lr"] for s in pending],
                    "grad_norm": [s["gn"] for s in pending],
                    "batch": [sha256_digest(canonical_json(s["ids"])) for s in pending],
                },
            )
        )
        pending.clear()

    order: list[int] = []
    for step in range(cfg.steps):
        epoch, b = divmod(step, per_epoch)
        if b == 0:
            g = torch.Generator().manual_seed(cfg.data_seed + epoch)
            order = torch.randperm(cfg.samples, generator=g).tolist()
        ids = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        loss = torch.nn.functional.cross_entropy(model(x[ids]), y[ids])
        opt.zero_grad()
        loss.backward()
        gn = torch.sqrt(
            sum((p.grad.detach() ** 2).sum() for p in model.parameters() if p.grad is not None)
        )
        opt.step()
        pending.append(
            {
                "step": step,
                "loss": float(loss.detach()),
                "lr": cfg.init_args["lr"],
                "gn": float(gn),
                "ids": ids,
                "epoch": epoch,
                "batch": b,
            }
        )
        done = step + 1
        if done % cfg.every == 0:
            flush()
            sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
            d = digest_state_dict(sd, workers=1)
            st = save_state(
                state_dir / f"step-{done}",
                model=sd,
                optimizer=opt.state_dict(),
                scheduler=None,
                rng=capture_rng(),
            )
            facts.entries.append(
                (
                    "weights.checkpoint",
                    {
                        "step": done,
                        "model": _ref(d),
                        "tensors": facts.blob(d.to_json()),
                        "state": st.to_json(),
                        "prev_checkpoint": prev_root,
                    },
                )
            )
            prev_root = d.hex
    flush()
    final = {k: v.detach().clone() for k, v in model.state_dict().items()}
    d = digest_state_dict(final, workers=1)
    facts.entries.append(
        (
            "run.end",
            {
                "step": cfg.steps,
                "model": _ref(d),
                "tensors": facts.blob(d.to_json()),
                "last_checkpoint": prev_root,
            },
        )
    )
    facts.final_state = final
    return facts


def seal(
    facts: Facts,
    folder: Path,
    *,
    trainer_key: TrainerKey,
    server_key: ed25519.Ed25519PrivateKey,
    append_every: int = 3,
    statement_hook: Callable[[LineageStatement], LineageStatement] | None = None,
) -> Sealed:
    """Sign ``facts`` into a fresh local log and export the bundle (``folder/bundle.json``)."""
    folder.mkdir(parents=True, exist_ok=True)
    log = LocalLog(folder / "log", server_key=server_key)
    log.create_run(facts.run, trainer_key.public)
    for doc in facts.blobs.values():
        log.put_blob(facts.run, doc)
    writer = RecordWriter(facts.run, trainer_key)
    leaves = [writer.write(t, b, time="2026-01-01T00:00:00Z").leaf_data() for t, b in facts.entries]
    note = ""
    for i in range(0, len(leaves), append_every):
        note = log.append(facts.run, leaves[i : i + append_every]).checkpoint
    start = facts.bodies("run.start")[0]
    end = facts.bodies("run.end")[0]
    init = facts.bodies("weights.init")[0]
    manifest_digest = ""
    w2 = RecordWriter(facts.run, trainer_key)
    for t, b in facts.entries:  # recompute record digests (same chain, no signing needed)
        r = w2.write(t, b, time="2026-01-01T00:00:00Z")
        if t == "data.manifest":
            manifest_digest = r.record.digest[7:]
    rows = [loss for b in facts.bodies("train.steps") for loss in b["loss"]]
    statement = LineageStatement(
        run=facts.run,
        model_sha256=end["model"]["root"],
        digest_algorithm=start["digest_algorithm"],
        external_parameters={
            "config": start["config"],
            "seed": start["init"]["seed"],
            "code": start["code"],
        },
        internal_parameters={"environment": start["environment"]},
        dependencies=(
            Dependency("init-weights", init["model"]["root"], {}),
            Dependency("data-manifest", manifest_digest, {}),
            *(
                Dependency(f"component:{c['name']}", c["digest"]["root"], {})
                for c in start["components"]
            ),
        ),
        byproducts=(
            *(
                Dependency(f"checkpoint:{b['step']}", b["model"]["root"], {})
                for b in facts.bodies("weights.checkpoint")
            ),
            Dependency("loss-curve", loss_curve_digest(0, rows)[7:], {}),
        ),
        log_checkpoint=note,
        started="2026-01-01T00:00:00Z",
        finished="2026-01-01T00:00:01Z",
    )
    if statement_hook is not None:
        statement = statement_hook(statement)
    log.put_statement(facts.run, sign_statement(statement, trainer_key))
    bundle = log.export(facts.run)
    path = folder / "bundle.json"
    bundle.write(path)
    model_path = folder / "model.safetensors"
    save_file(facts.final_state, str(model_path))
    return Sealed(facts, bundle, path, model_path, trainer_key, server_key, log)


def policy_for(sealed: Sealed, *, base: str = "strict", **overrides: Any) -> Policy:
    """The built-in policy ``base`` trusting this run's trainer and server keys."""
    from attest.verifier.policy import builtin_policy

    policy = builtin_policy(base).with_keys(
        trainer_keys=[sealed.trainer_key.public],
        server_keys=[sealed.log.signer.verifier],
    )
    return replace(policy, **overrides) if overrides else policy


def honest_run(
    folder: Path,
    cfg: RunConfig = RunConfig(),
    *,
    run: str = "honest-run",
    trainer_key: TrainerKey | None = None,
    server_key: ed25519.Ed25519PrivateKey | None = None,
) -> Sealed:
    facts = train(folder / "train", cfg, run=run)
    return seal(
        facts,
        folder / "sealed",
        trainer_key=trainer_key or TrainerKey.generate(),
        server_key=server_key or ed25519.Ed25519PrivateKey.generate(),
    )
