"""Re-create a run's model, dataset and batches from what ``run.start`` records (docs/verifying.md,
checks 3 and 4).

The init recipe ``seed-then-construct`` (docs/formats.md, ``run.start.init``) is: seed Python's
``random``, numpy's legacy global generator and torch (CPU and every CUDA device) with the
recorded seed, exactly as ``lightning.seed_everything(seed)`` does, then call
``import_path(**init_args)``; the module's ``state_dict()`` is the init. :func:`build_model`
replays that recipe and restores the caller's generator states afterwards, so a verification
leaves no trace on the process.

The dataset is rebuilt the same way from ``run.start.config["data"] = {"import_path": ...,
"init_args": {...}}`` (a ``torch.utils.data.Dataset`` whose item ``i`` is what the training
loader collated; the demo's is ``(i, x, y)``). With ``--data DIR`` the folder is passed to the
dataset as its ``data_dir`` or ``root`` argument when its constructor takes one.

**The loss of a batch** (:func:`batch_loss`), in order of preference: the model's
``attest_loss(batch)`` method (the documented replay hook), a LightningModule's
``training_step(batch, batch_idx)`` (a tensor or a mapping with ``"loss"``), else
``cross_entropy(model(x), y)`` for a batch ``(ids, x, y)`` or ``(x, y)``.

**The loss of a step** (:func:`step_loss`). With gradient accumulation over *k* loader batches
(``run.start.config.trainer.accumulate_grad_batches``), one logged step holds the sample ids of
*k* micro-batches one after another, each of the sampler's batch size times the world size (the
last of an epoch may be shorter). Lightning back-propagates each micro-batch's loss divided by
*k* and logs the sum of those parts; :func:`step_loss` does the same, micro-batch by micro-batch,
so normalisation layers see the batches training saw. Under ``precision="bf16-mixed"`` each
forward pass runs in bf16 autocast, as Lightning's mixed-precision plugin runs it
(:class:`StepRecipe`); other reduced precisions are refused (replay is then "could not check").

Importing runs code the bundle names. Only classes are called, and only subclasses of
``torch.nn.Module`` (models) or ``torch.utils.data.Dataset`` (datasets); the callers import
nothing for a bundle whose trainer signature is not trusted by the policy.
"""

from __future__ import annotations

import importlib
import inspect
import random
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attest.errors import AttestError

if TYPE_CHECKING:
    import torch

__all__ = [
    "RebuildError",
    "StepRecipe",
    "batch_loss",
    "build_dataset",
    "build_model",
    "collate",
    "draws_from_global_generators",
    "import_object",
    "preserved_rng",
    "seed_everything",
    "step_loss",
]


class RebuildError(AttestError):
    """The model or dataset named by the bundle cannot be imported or constructed here."""

    def __init__(self, message: str, *, module: str, expected: object = None, got: object = None):
        super().__init__(message, expected=expected, got=got)
        self.module = module


def import_object(path: str) -> Any:
    """Resolve ``"package.module:Qualified.Name"`` (the recorded import path)."""
    module_name, sep, qualname = path.partition(":")
    if not sep or not module_name or not qualname:
        raise RebuildError(
            f"import path {path!r} must look like 'package.module:Class'", module=module_name
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # any failure of foreign code means "could not check"
        raise RebuildError(
            f"cannot import {module_name} ({type(exc).__name__}: {exc}); install the trainer's"
            " code at the recorded revision",
            module=module_name,
        ) from None
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RebuildError(
                f"module {module_name} has no {qualname}", module=module_name
            ) from None
    return obj


def seed_everything(seed: int) -> None:
    """Seed ``random``, numpy and torch the way ``lightning.seed_everything`` does (without
    touching environment variables)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore the Python, numpy and torch CPU generator states on exit."""
    import numpy as np
    import torch

    py, npy, th = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(th)


def draws_from_global_generators(dataset: Any, index: int) -> bool:
    """Whether loading sample ``index`` draws from the global Python, numpy or torch generators
    (random data augmentation in ``__getitem__``). Training drew those numbers while its loader
    fetched ahead of the step, in an order replay cannot redo, so such a run is not replayable
    exactly (an augmentation with a generator of its own, seeded per sample, is)."""
    import numpy as np
    import torch

    with preserved_rng():
        seed_everything(0)
        py, th = random.getstate(), torch.get_rng_state()
        npy = np.random.get_state(legacy=False)["state"]
        dataset[index]
        now = np.random.get_state(legacy=False)["state"]
        return (
            random.getstate() != py
            or not torch.equal(torch.get_rng_state(), th)
            or now["pos"] != npy["pos"]
            or not np.array_equal(now["key"], npy["key"])
        )


def _construct(path: str, args: Mapping[str, Any], base: type, what: str) -> Any:
    cls = import_object(path)
    module = path.partition(":")[0]
    if not (inspect.isclass(cls) and issubclass(cls, base)):
        raise RebuildError(
            f"{path} is not a {base.__module__}.{base.__qualname__} subclass; refusing to call it"
            f" as a {what}",
            module=module,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls(**dict(args))
    except Exception as exc:
        raise RebuildError(
            f"{path}(**init_args) failed: {type(exc).__name__}: {exc}", module=module
        ) from None


def build_model(import_path: str, init_args: Mapping[str, Any], *, seed: int) -> torch.nn.Module:
    """The recipe ``seed-then-construct``: a fresh model exactly as the run built its init."""
    import torch

    with preserved_rng():
        seed_everything(seed)
        model: torch.nn.Module = _construct(import_path, init_args, torch.nn.Module, "model")
    return model


def build_dataset(spec: Mapping[str, Any], *, data_dir: Path | None = None) -> Any:
    """The dataset named by ``run.start.config["data"]``."""
    import torch.utils.data

    path = spec.get("import_path")
    args = spec.get("init_args", {})
    if not isinstance(path, str) or not isinstance(args, dict):
        raise RebuildError(
            "run.start.config.data must be {'import_path': str, 'init_args': {...}}",
            module=str(path),
        )
    args = dict(args)
    if data_dir is not None:
        try:
            params = inspect.signature(import_object(path)).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        for name in ("data_dir", "root"):
            if name in params:
                args[name] = str(data_dir)
                break
    with preserved_rng():
        dataset = _construct(path, args, torch.utils.data.Dataset, "dataset")
    if isinstance(dataset, torch.utils.data.IterableDataset):
        raise RebuildError(
            f"{path} is an IterableDataset: the step-0 loss and replay load the committed samples"
            " by id (dataset[i]); name a map-style dataset over the same samples in"
            " run.start.config.data",
            module=path.partition(":")[0],
        )
    return dataset


def collate(dataset: Any, ids: Sequence[int]) -> Any:
    """The batch a default DataLoader would have built from ``ids``."""
    from torch.utils.data import default_collate

    return default_collate([dataset[i] for i in ids])


@dataclass(frozen=True)
class StepRecipe:
    """How training ran one optimizer step, as ``run.start`` and ``data.manifest`` record it:
    ``accumulate`` micro-batches of ``micro_batch`` ids each (1 and 0 without accumulation) and
    the autocast dtype of Lightning's mixed precision (``None`` for full precision)."""

    accumulate: int = 1
    micro_batch: int = 0
    autocast: str | None = None
    # Data-parallel ranks: each (micro-)batch holds the ranks' equal shares in rank order.
    world: int = 1

    @classmethod
    def of_run(cls, config: Mapping[str, Any], manifest: Mapping[str, Any] | None) -> StepRecipe:
        trainer = config.get("trainer")
        trainer = trainer if isinstance(trainer, Mapping) else {}
        precision = config.get("precision", trainer.get("precision"))
        if precision not in _AUTOCAST:
            raise RebuildError(
                f"replay of precision {precision!r} is not supported",
                module="(trainer config)",
                expected=sorted(str(p) for p in _AUTOCAST if p is not None),
                got=precision,
            )
        autocast = _AUTOCAST[precision]
        k = config.get("accumulate_grad_batches", trainer.get("accumulate_grad_batches", 1))
        if k is None:
            k = 1
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise RebuildError(
                "run.start.config.trainer.accumulate_grad_batches must be a positive integer",
                module="(trainer config)",
                got=k,
            )
        sampler = manifest.get("sampler") if isinstance(manifest, Mapping) else None
        sampler = sampler if isinstance(sampler, Mapping) else {}
        size, world = sampler.get("batch_size"), sampler.get("world_size", 1)
        if world == 1 and k == 1:
            return cls(autocast=autocast)
        if not isinstance(size, int) or size < 1 or not isinstance(world, int) or world < 1:
            raise RebuildError(
                "gradient accumulation and data-parallel runs need data.manifest.sampler."
                "batch_size and world_size to cut a step into its rank and micro-batches",
                module="(data manifest)",
                got={"batch_size": size, "world_size": world},
            )
        return cls(k, size * world, autocast, world)


# Lightning's precision settings whose forward pass replay reproduces on the CPU: full precision,
# and bf16 autocast around the forward (its MixedPrecision plugin; no gradient scaling).
_AUTOCAST: dict[object, str | None] = {
    None: None,
    "32": None,
    "32-true": None,
    "bf16-mixed": "bfloat16",
}


def step_loss(
    model: torch.nn.Module,
    dataset: Any,
    ids: Sequence[int],
    *,
    recipe: StepRecipe = StepRecipe(),
    batch_idx: int = 0,
    backward: bool = False,
) -> torch.Tensor:
    """The loss Lightning logs for one optimizer step over ``ids`` (module docstring), with
    ``backward`` back-propagating each micro-batch's part as training did.

    A data-parallel step (``recipe.world`` ranks) is re-run rank by rank, as DDP ran it: each
    rank starts from the same generator state and buffers (every rank was seeded alike, and DDP
    broadcasts rank 0's buffers), accumulates its own gradient over its micro-batches, and the
    step's gradient is the sum of the ranks' gradients each divided by the world size (DDP's
    all-reduce). The loss, the generators and the buffers left are rank 0's, whose callback
    logged the step."""
    if recipe.world == 1:
        return _rank_loss(model, dataset, ids, recipe, batch_idx, backward)
    from attest.statefiles import capture_rng, restore_rng

    world = recipe.world
    pieces = _micro_batches(ids, recipe.micro_batch, recipe.accumulate)
    params = [p for p in model.parameters() if p.requires_grad]
    start_rng, start_buffers = capture_rng(), _buffers(model)
    summed: list[Any] = [None] * len(params)
    loss0 = end_rng = end_buffers = None
    for rank in range(world):
        if rank:
            restore_rng(start_rng)
            _restore_buffers(model, start_buffers)
        # Ranks hold equal shares of every (micro-)batch, the last of an epoch included: the
        # distributed sampler pads the ranks to equal lengths.
        mine = [
            i
            for piece in pieces
            for i in piece[rank * len(piece) // world : (rank + 1) * len(piece) // world]
        ]
        if backward:
            for p in params:
                p.grad = None
        loss = _rank_loss(model, dataset, mine, recipe, batch_idx, backward)
        if backward:
            for n, p in enumerate(params):
                if p.grad is not None:
                    part = p.grad / world
                    summed[n] = part if summed[n] is None else summed[n] + part
        if rank == 0:
            loss0, end_rng, end_buffers = loss, capture_rng(), _buffers(model)
    assert loss0 is not None and end_rng is not None and end_buffers is not None
    if backward:
        for p, grad in zip(params, summed, strict=True):
            p.grad = grad
    restore_rng(end_rng)
    _restore_buffers(model, end_buffers)
    return loss0


def _micro_batches(ids: Sequence[int], size: int, accumulate: int) -> list[Sequence[int]]:
    """``ids`` cut into the micro-batches of ``size`` ids a step accumulated (all of ``ids``
    without accumulation)."""
    return [ids[i : i + size] for i in range(0, len(ids), size)] if accumulate > 1 else [ids]


def _buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: b.detach().clone() for name, b in model.named_buffers()}


def _restore_buffers(model: torch.nn.Module, saved: Mapping[str, torch.Tensor]) -> None:
    import torch

    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(saved[name])


def _rank_loss(
    model: torch.nn.Module,
    dataset: Any,
    ids: Sequence[int],
    recipe: StepRecipe,
    batch_idx: int,
    backward: bool,
) -> torch.Tensor:
    """One rank's part of a step: its micro-batches in order, each loss divided by the
    accumulation count and back-propagated on its own."""
    import torch

    k = recipe.accumulate
    total: torch.Tensor | None = None
    for piece in _micro_batches(ids, recipe.micro_batch // recipe.world, k):
        batch = collate(dataset, piece)
        if recipe.autocast is None:
            loss = batch_loss(model, batch, batch_idx)
        else:
            dtype = getattr(torch, recipe.autocast)
            with torch.autocast("cpu", dtype=dtype, cache_enabled=False):
                loss = batch_loss(model, batch, batch_idx)
        if k > 1:
            loss = loss / k
        if backward:
            loss.backward()  # type: ignore[no-untyped-call]
        part = loss.detach()
        total = part if total is None else total + part
    assert total is not None, "a logged step has at least one sample id"
    return total


def batch_loss(model: torch.nn.Module, batch: Any, batch_idx: int = 0) -> torch.Tensor:
    """The training loss of ``batch`` (see the module docstring for the protocol)."""
    import torch
    from torch.nn import functional as F

    hook = getattr(model, "attest_loss", None)
    if callable(hook):
        out = hook(batch)
        if isinstance(out, torch.Tensor):
            return out
    step = getattr(model, "training_step", None)
    if callable(step):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # self.log() without a Trainer
            out = step(batch, batch_idx)
        if isinstance(out, Mapping):
            out = out.get("loss")
        if isinstance(out, torch.Tensor):
            return out
        raise RebuildError(
            "training_step returned no loss tensor; add an attest_loss(batch) method",
            module=type(model).__module__,
        )
    if isinstance(batch, (list, tuple)) and len(batch) in (2, 3):
        x, y = batch[-2], batch[-1]
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    raise RebuildError(
        "cannot compute the loss of a batch: give the model an attest_loss(batch) method",
        module=type(model).__module__,
    )
