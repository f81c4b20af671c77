"""The framework-free lineage recorder behind every adapter (DESIGN §4, docs/formats.md).

A :class:`Recorder` owns the run's :class:`~attest.records.RecordWriter` and its
:class:`~attest.client.Spool`. A training loop — Lightning, Hugging Face or plain PyTorch — calls::

    rec = Recorder(key=..., destination=..., run=..., checkpoint_every=50)
    rec.attach(model, optimizer, scheduler)
    rec.start(model_info=ModelInfo.of(model, init_args), seed=seed, config=hparams)
    rec.manifest(dataset=DatasetInfo(...), sampler=SamplerInfo(...))
    for each optimizer step: rec.step(loss=..., lr=..., grad_norm=..., ids=..., epoch=e, batch=b)
    rec.end()

The training thread only takes CPU snapshots (CUDA tensors are copied into pinned memory with
``non_blocking`` and a CUDA event) and queues work; one worker thread hashes, writes state
files, signs records and appends them to the spool *in submission order*, so the record sequence
is deterministic. The spool's sender ships them to the destination in the background.

Order of records: ``run.start``, ``weights.init``, ``data.manifest``; then, at each flush point
(every :data:`~attest.records.MAX_STEPS_PER_RECORD` steps, each checkpoint, the end),
``data.order`` records for the sample ids of the steps being flushed followed by their
``train.steps``; ``weights.checkpoint`` every ``checkpoint_every`` steps and on request; a
``run.resume`` after a restart; ``run.end``. Finally the signed lineage statement (once the
receipt covering ``run.end`` names its log checkpoint).

``data.order`` here carries the ids *actually seen*: one record per epoch segment flushed, its
``position`` the epoch's batch index of the first batch it lists and ``batch_size`` the number
of ids per step (global under DDP: all ranks' ids of a step, rank 0 first). A verifier cuts the
ids into steps of ``batch_size`` (the last step of an epoch may be shorter).
"""

from __future__ import annotations

import copy
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attest.canonical import sha256_digest
from attest.client import LogDestination, Spool, open_destination, yielding_to_training
from attest.digest import ModelDigest, digest_state_dict
from attest.errors import ConfigurationError
from attest.keys import TrainerKey
from attest.log import Receipt
from attest.records import MAX_STEPS_PER_RECORD, RecordWriter, SignedRecord
from attest.statefiles import (
    StateDigests,
    capture_rng,
    digest_optimizer,
    digest_rng,
    digest_scheduler,
    save_state,
    state_folder_name,
)
from attest.statement import Dependency, LineageStatement, loss_curve_digest, sign_statement

from .info import (
    Component,
    DatasetInfo,
    ModelInfo,
    Parent,
    SamplerInfo,
    code_facts,
    environment_facts,
    jsonable,
)

if TYPE_CHECKING:
    import torch

__all__ = ["Recorder", "load_key", "new_run_id"]

log = logging.getLogger("attest.callbacks")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def load_key(key: str | os.PathLike[str] | TrainerKey, *, argument: str = "key") -> TrainerKey:
    """A trainer key from a :class:`TrainerKey` or a PEM file path; ConfigurationError if absent."""
    if isinstance(key, TrainerKey):
        return key
    path = Path(key)
    if not path.is_file():
        raise ConfigurationError(
            f"{argument}: trainer key file {path} does not exist; "
            "create one with `attest keygen --kind trainer`",
            got=str(path),
        )
    return TrainerKey.load(path)


def new_run_id() -> str:
    return datetime.now(UTC).strftime("run-%Y%m%dT%H%M%S") + f"-{os.urandom(3).hex()}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _model_ref(d: ModelDigest) -> dict[str, str]:
    return {"algorithm": d.algorithm, "root": d.hex}


class _Snapshot:
    """CPU copies of tensors, taken on the training thread; :meth:`get` waits for the copies."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        import torch

        self._event: Any = None
        self.tensors: dict[str, torch.Tensor] = {}
        for name, t in tensors.items():
            t = t.detach()
            if t.device.type == "cuda":
                buf = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                buf.copy_(t, non_blocking=True)
                self._event = self._event or torch.cuda.Event()  # type: ignore[no-untyped-call]
            else:
                buf = t.clone(memory_format=torch.contiguous_format)
            self.tensors[name] = buf
        if self._event is not None:
            self._event.record()

    def get(self) -> dict[str, torch.Tensor]:
        if self._event is not None:
            self._event.synchronize()
        return self.tensors


def _copy_optimizer_state(state: Mapping[str, Any]) -> dict[str, Any]:
    import torch

    def copy_value(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.detach().to("cpu", copy=True)
        return copy.deepcopy(v)

    return {
        "state": {
            pid: {k: copy_value(v) for k, v in e.items()} for pid, e in state["state"].items()
        },
        "param_groups": copy.deepcopy(state["param_groups"]),
    }


@dataclass
class _Step:
    loss: Any
    lr: float
    grad_norm: Any
    ids: Any
    epoch: int
    batch: int


@dataclass
class _RunState:
    """What a resumed job needs to continue the chain: plain types only."""

    run: str
    seq: int = 0
    prev: str | None = None
    step: int = 0
    started: str = ""
    init_root: str | None = None
    manifest: str | None = None
    last_checkpoint: str | None = None
    checkpoints: list[list[Any]] = field(default_factory=list)  # [step, root hex]
    losses: list[float | None] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)  # config, seed, code, environment
    components: list[dict[str, Any]] = field(default_factory=list)
    algorithm: str = ""


class Recorder:
    """Records one training run. See the module docstring for the call sequence."""

    def __init__(
        self,
        *,
        key: str | os.PathLike[str] | TrainerKey,
        destination: str | os.PathLike[str] | LogDestination,
        run: str | None = None,
        checkpoint_every: int = 50,
        state_dir: str | os.PathLike[str] | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        components: Sequence[Component] = (),
        parent: Parent | None = None,
        export_bundle: str | os.PathLike[str] | None = None,
        flush_timeout: float = 60.0,
        digest_algorithm: str = "sha256",
        token: str | None = None,
    ) -> None:
        self._check_options(
            checkpoint_every=checkpoint_every,
            run=run,
            components=components,
            parent=parent,
            state_dir=state_dir,
            export_bundle=export_bundle,
        )
        self.key = load_key(key)
        try:
            self.destination = open_destination(destination, token=token)
        except ConfigurationError as exc:
            raise ConfigurationError(f"destination: {exc.message}", got=destination) from None
        self.run = run
        self.checkpoint_every = checkpoint_every
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self._spool_base = Path(spool_dir) if spool_dir is not None else None
        self.components = tuple(components)
        self.parent = parent
        self.export_bundle = Path(export_bundle) if export_bundle is not None else None
        self.flush_timeout = flush_timeout
        self.digest_algorithm = digest_algorithm
        self.model: torch.nn.Module | None = None
        self.optimizer: Any = None
        self.scheduler: Any = None
        self.spool: Spool | None = None
        self.writer: RecordWriter | None = None
        self.state: _RunState | None = None
        self.statement: dict[str, Any] | None = None
        self._steps: list[_Step] = []
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="attest-record")
        self._futures: list[Future[None]] = []
        self._end_seq: int | None = None
        self._statement_draft: Callable[[str], LineageStatement] | None = None
        self._statement_done = threading.Event()
        self._statement_lock = threading.Lock()
        self._checkpointed_at: int | None = None

    @staticmethod
    def _check_options(
        *,
        checkpoint_every: int,
        run: str | None,
        components: Sequence[Component],
        parent: Parent | None,
        state_dir: str | os.PathLike[str] | None,
        export_bundle: str | os.PathLike[str] | None,
    ) -> None:
        """Raise :class:`ConfigurationError` naming the first argument that cannot work."""
        if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int):
            raise ConfigurationError("checkpoint_every must be an integer", got=checkpoint_every)
        if checkpoint_every <= 0:
            raise ConfigurationError(
                "checkpoint_every must be a positive number of steps", got=checkpoint_every
            )
        if run is not None and (not isinstance(run, str) or not _RUN_ID.fullmatch(run)):
            raise ConfigurationError("run must be 1-128 characters of [A-Za-z0-9._-]", got=run)
        for i, c in enumerate(components):
            if not isinstance(c, Component):
                raise ConfigurationError(f"components[{i}] must be a Component", got=type(c))
        names = [c.name for c in components]
        if len(set(names)) != len(names):
            raise ConfigurationError("components must have distinct names", got=names)
        if parent is not None and not isinstance(parent, Parent):
            raise ConfigurationError("parent must be a Parent", got=type(parent))
        for name, value in (("state_dir", state_dir), ("export_bundle", export_bundle)):
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise ConfigurationError(f"{name} must be a path", got=type(value).__name__)
        if state_dir is not None and Path(state_dir).exists() and not Path(state_dir).is_dir():
            raise ConfigurationError(f"state_dir {state_dir} exists and is not a folder")

    # --- plumbing ---------------------------------------------------------------------------

    @property
    def step_count(self) -> int:
        return self.state.step if self.state is not None else 0

    def attach(self, model: torch.nn.Module, optimizer: Any = None, scheduler: Any = None) -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler

    def _submit(self, fn: Callable[[], None]) -> None:
        def run() -> None:
            with yielding_to_training():
                fn()

        self._futures = [f for f in self._futures if not f.done() or f.exception() is not None]
        self._futures.append(self._worker.submit(run))

    def drain(self) -> None:
        """Wait for queued hashing and signing; re-raise the first failure."""
        futures, self._futures = self._futures, []
        for f in futures:
            f.result()

    def _open(self, run: str) -> None:
        base = self._spool_base or Path(
            os.environ.get("ATTEST_SPOOL_DIR", Path.home() / ".cache" / "attest" / "spool")
        )
        signer = getattr(self.destination, "signer", None)
        verifier = getattr(self.destination, "verifier", None) or getattr(signer, "verifier", None)
        self.spool = Spool(base / run, self.destination, run, verifier=verifier)
        self.spool.add_listener(self._on_receipt)

    def _write(self, rtype: str, body: Mapping[str, Any]) -> SignedRecord:
        """Worker thread only: sign the next record and put it in the spool."""
        assert self.writer is not None and self.spool is not None and self.state is not None
        signed = self.writer.write(rtype, body)
        self.spool.add_records([signed])
        self.state.seq, self.state.prev = self.writer.seq, self.writer.prev
        return signed

    def _blob(self, doc: Any) -> str:
        assert self.spool is not None
        return self.spool.add_blob(doc)

    def _digest(self, tensors: Mapping[str, torch.Tensor]) -> ModelDigest:
        return digest_state_dict(tensors, algorithm=self.digest_algorithm, workers=1)

    # --- run start --------------------------------------------------------------------------

    def start(
        self,
        *,
        model_info: ModelInfo,
        seed: int | None,
        config: Mapping[str, Any] | None = None,
        world_size: int = 1,
        deterministic: bool = False,
        code: Mapping[str, Any] | None = None,
        environment: Mapping[str, Any] | None = None,
        init_recipe: str = "seed-then-construct",
    ) -> None:
        """Write ``run.start`` and ``weights.init`` from the attached model's current weights.

        ``init_recipe`` is ``seed-then-construct`` when the weights are what seeding and
        constructing the model gives, ``loaded`` when they came from a file.
        """
        if self.model is None:
            raise ConfigurationError("attach(model, ...) before start()")
        run = self.run or new_run_id()
        self.run = run
        self._open(run)
        assert self.spool is not None
        if self.spool.last_leaf() is not None:
            raise ConfigurationError(
                f"run: {run!r} already has records in the spool {self.spool.folder}; choose "
                "another run id, or resume from a checkpoint of that run",
                got=run,
            )
        self.writer = RecordWriter(run, self.key)
        env = jsonable(
            dict(
                environment or environment_facts(world_size=world_size, deterministic=deterministic)
            )
        )
        code_doc = jsonable(dict(code or code_facts()))
        cfg = jsonable(dict(config or {}))
        snap = _Snapshot(self.model.state_dict())
        self.state = _RunState(run=run, started=_now())
        self.state.params = {"config": cfg, "seed": seed, "code": code_doc, "environment": env}
        self.spool.add_create(self.key.public, {"model": model_info.import_path})
        components, parent = self.components, self.parent

        def task() -> None:
            assert self.state is not None
            tensors = snap.get()
            init = self._digest(tensors)
            comps = []
            for c in components:
                part = {k: v for k, v in tensors.items() if k.startswith(c.prefix)}
                if not part:
                    raise ConfigurationError(
                        f"components: no tensor of the model starts with {c.prefix!r}",
                        got=c.name,
                    )
                d = self._digest(part)
                comps.append(
                    {
                        "name": c.name,
                        "prefix": c.prefix,
                        "digest": _model_ref(d),
                        "tensors": self._blob(d.to_json()),
                        "source": c.source,
                        "license": c.license,
                    }
                )
            self.state.components = comps
            self.state.algorithm = init.algorithm
            self._write(
                "run.start",
                {
                    "config": cfg,
                    "code": code_doc,
                    "environment": env,
                    "model": model_info.to_json(),
                    "init": {"seed": seed, "recipe": init_recipe},
                    "components": comps,
                    "parent": parent.to_json(init.algorithm) if parent is not None else None,
                    "digest_algorithm": init.algorithm,
                },
            )
            blob = self._blob(init.to_json())
            self._write("weights.init", {"step": 0, "model": _model_ref(init), "tensors": blob})
            self.state.init_root = init.hex
            self.state.last_checkpoint = init.hex

        self._submit(task)

    def manifest(self, *, dataset: DatasetInfo, sampler: SamplerInfo) -> None:
        """Write ``data.manifest``."""
        body = {"dataset": dataset.to_json(), "sampler": sampler.to_json()}

        def task() -> None:
            assert self.state is not None
            signed = self._write("data.manifest", body)
            self.state.manifest = signed.record.digest

        self._submit(task)

    # --- steps ------------------------------------------------------------------------------

    def step(
        self,
        *,
        loss: Any,
        lr: float,
        grad_norm: Any,
        ids: Any,
        epoch: int = 0,
        batch: int = 0,
    ) -> None:
        """Record one optimizer step (cheap: tensors are converted on the worker thread).

        ``loss``/``grad_norm`` may be floats, 0-d tensors or None (``grad_norm`` also a list
        of per-tensor norms, whose L2 norm is taken); ``ids`` a sequence of ints
        or a 1-d tensor of the step's sample ids; ``batch`` the epoch's batch index.
        """
        assert self.state is not None
        self._steps.append(_Step(loss, lr, grad_norm, ids, epoch, batch))
        self.state.step += 1
        if len(self._steps) >= MAX_STEPS_PER_RECORD:
            self.flush_steps()
        if self.state.step % self.checkpoint_every == 0:
            self.checkpoint()

    def flush_steps(self) -> None:
        """Queue ``data.order`` + ``train.steps`` for the buffered steps."""
        if not self._steps:
            return
        assert self.state is not None
        steps, self._steps = self._steps, []
        first = self.state.step - len(steps)

        def task() -> None:
            assert self.state is not None
            losses = [_finite(s.loss) for s in steps]
            ids = [_ids(s.ids) for s in steps]
            segment: list[int] = []
            for i, s in enumerate(steps):
                segment.extend(ids[i])
                last = i + 1 == len(steps) or steps[i + 1].epoch != s.epoch
                if last:
                    start = next(
                        j for j in range(i, -1, -1) if j == 0 or steps[j - 1].epoch != s.epoch
                    )
                    doc = {"epoch": s.epoch, "ids": segment}
                    assert self.spool is not None
                    order = self.spool.add_blob(doc, canonical=_order_json(s.epoch, segment))
                    self._write(
                        "data.order",
                        {
                            "epoch": s.epoch,
                            "position": steps[start].batch,
                            "batch_size": max(len(x) for x in ids[start : i + 1]),
                            "order": order,
                        },
                    )
                    segment = []
            self._write(
                "train.steps",
                {
                    "first_step": first,
                    "loss": losses,
                    "lr": [float(s.lr) for s in steps],
                    "grad_norm": [_finite(s.grad_norm) for s in steps],
                    "batch": [sha256_digest(_ints_json(x)) for x in ids],
                },
            )
            del self.state.losses[first:]
            self.state.losses.extend(losses)

        self._submit(task)

    # --- checkpoints ------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Queue a ``weights.checkpoint`` of the attached model, optimizer, scheduler and RNGs
        at the current step (once per step)."""
        assert self.state is not None and self.model is not None
        step = self.state.step
        if self._checkpointed_at == step:
            return
        self._checkpointed_at = step
        self.flush_steps()
        weights = _Snapshot(self.model.state_dict())
        opt = (
            _copy_optimizer_state(self.optimizer.state_dict())
            if self.optimizer is not None
            else {"state": {}, "param_groups": []}
        )
        sched = copy.deepcopy(self.scheduler.state_dict()) if self.scheduler is not None else None
        rng = capture_rng()
        state_dir = self.state_dir

        def task() -> None:
            assert self.state is not None
            tensors = weights.get()
            d = self._digest(tensors)
            blob = self._blob(d.to_json())
            if state_dir is not None:
                digests = save_state(
                    state_dir / state_folder_name(step),
                    model=tensors,
                    optimizer=opt,
                    scheduler=sched,
                    rng=rng,
                    relative_to=state_dir,
                )
            else:
                digests = StateDigests(
                    digest_optimizer(opt), digest_scheduler(sched), digest_rng(rng), None
                )
            self._write(
                "weights.checkpoint",
                {
                    "step": step,
                    "model": _model_ref(d),
                    "tensors": blob,
                    "state": digests.to_json(),
                    "prev_checkpoint": self.state.last_checkpoint,
                },
            )
            self.state.last_checkpoint = d.hex
            self.state.checkpoints.append([step, d.hex])

        self._submit(task)

    # --- resume -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Plain-typed state that lets a restarted job continue this chain (drains the queue)."""
        self.flush_steps()
        self.drain()
        if self.state is None:
            return {}
        s = self.state
        return {
            "version": 1,
            "run": s.run,
            "seq": s.seq,
            "prev": s.prev,
            "step": s.step,
            "started": s.started,
            "init_root": s.init_root,
            "manifest": s.manifest,
            "last_checkpoint": s.last_checkpoint,
            "checkpoints": [list(c) for c in s.checkpoints],
            "losses": list(s.losses),
            "params": s.params,
            "components": s.components,
            "algorithm": s.algorithm,
        }

    def resume(
        self,
        state: Mapping[str, Any],
        *,
        data_position: Mapping[str, int],
    ) -> None:
        """Continue the chain recorded in ``state`` and write ``run.resume``.

        The chain continues after the newest record this spool (or else the destination) has
        seen for the run, so records written after the checkpoint was saved are not overwritten.
        """
        if not state:
            raise ConfigurationError("resume: the checkpoint holds no attest state")
        s = _RunState(
            run=str(state["run"]),
            seq=int(state["seq"]),
            prev=state["prev"],
            step=int(state["step"]),
            started=str(state["started"]),
            init_root=state["init_root"],
            manifest=state["manifest"],
            last_checkpoint=state["last_checkpoint"],
            checkpoints=[list(c) for c in state["checkpoints"]],
            losses=list(state["losses"])[: int(state["step"])],
            params=dict(state["params"]),
            components=list(state["components"]),
            algorithm=str(state["algorithm"]),
        )
        self.run = s.run
        self.state = s
        self._open(s.run)
        assert self.spool is not None
        seq, prev = self._chain_head(s)
        s.seq, s.prev = seq, prev
        self.writer = RecordWriter(s.run, self.key, seq=seq, prev=prev)
        self._checkpointed_at = s.step
        from_checkpoint = s.last_checkpoint
        weights = _Snapshot(self.model.state_dict()) if self.model is not None else None

        def task() -> None:
            body: dict[str, Any] = {
                "step": s.step,
                "from_checkpoint": from_checkpoint,
                "data_position": dict(data_position),
            }
            if weights is not None:
                d = self._digest(weights.get())
                if d.hex != from_checkpoint:
                    log.warning(
                        "resumed weights %s are not the logged checkpoint %s",
                        d.hex,
                        from_checkpoint,
                    )
                    body["model"] = _model_ref(d)
            self._write("run.resume", body)

        self._submit(task)

    def _chain_head(self, s: _RunState) -> tuple[int, str | None]:
        assert self.spool is not None
        env = self.spool.last_leaf()
        if env is None:
            try:
                records = self.destination.export(s.run).records
                if records:
                    env = records[-1].to_json()
            except Exception as exc:  # the destination may be down: trust the checkpoint
                log.warning("cannot read the log's chain head (%s); using the checkpoint's", exc)
        if env is not None:
            record = SignedRecord.from_json(env).record
            if record.seq + 1 > s.seq:
                return record.seq + 1, record.digest
        return s.seq, s.prev

    # --- end --------------------------------------------------------------------------------

    def end(self) -> bool:
        """Write ``run.end``, sign the statement once the log acknowledges it, flush the spool
        (up to ``flush_timeout`` seconds) and export the bundle if asked.

        Returns True when everything reached the destination; otherwise the spool keeps
        shipping in the background and the rest stays in the spool folder.
        """
        assert self.state is not None and self.model is not None
        self.flush_steps()
        weights = _Snapshot(self.model.state_dict())
        components = self.components

        def task() -> None:
            assert self.state is not None and self.writer is not None
            s = self.state
            d = self._digest(weights.get())
            blob = self._blob(d.to_json())
            signed = self._write(
                "run.end",
                {
                    "step": s.step,
                    "model": _model_ref(d),
                    "tensors": blob,
                    "last_checkpoint": s.last_checkpoint,
                },
            )
            self._end_seq = signed.record.seq
            self._statement_draft = lambda note: self._make_statement(d, components, note)
            assert self.spool is not None
            for r in list(self.spool.receipts):
                self._on_receipt(r)

        self._submit(task)
        self.drain()
        done = self.wait_shipped(self.flush_timeout)
        if not done:
            assert self.spool is not None
            log.warning(
                "the log did not acknowledge everything within %ss; %d items stay in %s and "
                "keep shipping in the background",
                self.flush_timeout,
                self.spool.pending,
                self.spool.folder,
            )
        return done

    def wait_shipped(self, timeout: float | None = None) -> bool:
        """Wait until the log acknowledged every record and the statement (after :meth:`end`),
        then export the bundle if asked. False if ``timeout`` seconds passed first."""
        assert self.spool is not None and self.state is not None
        done = (
            self.spool.flush(timeout)
            and self._statement_done.wait(timeout)
            and self.spool.flush(timeout)
        )
        if done and self.export_bundle is not None:
            self.export_bundle.parent.mkdir(parents=True, exist_ok=True)
            self.destination.export(self.state.run).write(self.export_bundle)
        return done

    def _on_receipt(self, receipt: Receipt) -> None:
        with self._statement_lock:
            if self._end_seq is None or self._statement_draft is None:
                return
            if receipt.first_index + receipt.count <= self._end_seq:
                return
            if self._statement_done.is_set():
                return
            statement = self._statement_draft(receipt.checkpoint)
            self.statement = sign_statement(statement, self.key)
            assert self.spool is not None
            self.spool.add_statement(self.statement)
            self._statement_done.set()

    def _make_statement(
        self, final: ModelDigest, components: Sequence[Component], note: str
    ) -> LineageStatement:
        assert self.state is not None
        s = self.state
        init_root = s.init_root
        assert init_root is not None
        deps = [Dependency("init-weights", init_root, {})]
        if s.manifest is not None:
            deps.append(Dependency("data-manifest", s.manifest.removeprefix("sha256:"), {}))
        for c in s.components:
            deps.append(
                Dependency(
                    f"component:{c['name']}",
                    c["digest"]["root"],
                    {"source": c["source"], "license": c["license"], "prefix": c["prefix"]},
                )
            )
        prods = [Dependency(f"checkpoint:{st}", root, {}) for st, root in s.checkpoints]
        prods.append(Dependency("loss-curve", loss_curve_digest(0, s.losses)[7:], {}))
        p = s.params
        return LineageStatement(
            run=s.run,
            model_sha256=final.hex,
            digest_algorithm=final.algorithm,
            external_parameters={"config": p["config"], "seed": p["seed"], "code": p["code"]},
            internal_parameters={"environment": p["environment"]},
            dependencies=tuple(deps),
            byproducts=tuple(prods),
            log_checkpoint=note,
            started=s.started,
            finished=_now(),
        )

    def close(self) -> None:
        """Stop the worker; stop the sender too unless items are still pending, in which case
        it keeps retrying in the background (what is left also stays in the spool folder)."""
        self._worker.shutdown(wait=True)
        if self.spool is not None and self.spool.pending == 0:
            self.spool.close(0.0)


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):  # per-tensor norms: the total L2 norm
        import torch

        value = torch.linalg.vector_norm(torch.stack([torch.as_tensor(v) for v in value]))
    v = float(value)
    return v if v == v and v not in (float("inf"), float("-inf")) else None


def _ints_json(ids: list[int]) -> bytes:
    """RFC 8785 bytes of a list of integers (|n| < 2**53, as sample ids are), without the
    general-purpose canonicaliser: integers serialise as plain decimals, no spaces."""
    return ("[" + ",".join(map(str, ids)) + "]").encode()


def _order_json(epoch: int, ids: list[int]) -> bytes:
    return b'{"epoch":' + str(epoch).encode() + b',"ids":' + _ints_json(ids) + b"}"


def _ids(value: Any) -> list[int]:
    if hasattr(value, "tolist"):
        value = value.tolist()
    return [int(x) for x in value]
