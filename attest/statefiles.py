"""State files: the optimizer, scheduler and RNG state a verifier needs to replay a segment
(``docs/formats.md`` "State files"; DESIGN §4).

A ``weights.checkpoint`` record commits to the model digest *and* to digests of everything else
that determines the next steps: optimizer state, learning-rate scheduler state and the random
number generators. The callback keeps the files those digests name in ``state_dir/step-<s>/``::

    model.safetensors       the weights (attest-tensors-v1 digest = the record's model root)
    optimizer.safetensors   every tensor of ``optimizer.state_dict()["state"]``, named
                            ``state.<param index>.<key>``; the safetensors metadata key
                            ``attest.optimizer`` holds the JSON of the rest (see below)
    scheduler.json          ``scheduler.state_dict()`` as canonical JSON (absent: no scheduler)
    rng.json                python ``random``, numpy and torch (CPU, CUDA) generator states

Digests (the strings in the record's ``state`` object), all ``sha256:<hex>`` of RFC 8785 JSON:

* optimizer: ``{"format": "attest-optimizer-v1", "tensors": {"algorithm", "root"}, "meta": M}``
  where the tensors digest is the attest-tensors-v1 digest of the flattened tensors and ``M`` is
  ``{"param_groups": [...], "scalars": {"<param index>.<key>": value}}`` — non-tensor per-parameter
  state. A tensor of more than one element inside such a value (LBFGS keeps lists of them) is
  stored in the file as ``state.<param index>.<key>#<n>`` and written in the value as
  ``{"attest.tensor": "<that name>"}``. It is the same whether taken from the live optimizer or
  from the files.
* scheduler: the canonical JSON of the state dict (tuples become lists; a non-finite float, such
  as ReduceLROnPlateau's ``best = inf``, becomes ``{"attest.float": "inf"}``, in optimizer
  metadata too).
* rng: the canonical JSON of the ``rng.json`` document::

      {"python": {"version": int, "state": [int, ...], "gauss_next": float | null},
       "numpy": {"kind": "MT19937", "keys": "<base64 of uint32 LE>", "pos": int,
                 "has_gauss": int, "cached_gaussian": float} | null,
       "torch": "<base64 of torch.get_rng_state() bytes>",
       "cuda": ["<base64>", ...] | null}

Epoch starts. A data loader with no generator of its own draws from the global torch generator
when an epoch's iterator starts (its base seed, and a shuffling sampler's seed), after the last
step of the previous epoch and so after the state a checkpoint there captured. The callback keeps
the generator state just before the first step of each epoch (and of the run) in
``state_dir/rng-before-step-<s>.json`` (a ``rng.json`` document), and replay restores it when it
reaches that step. These files are not in the log: a wrong one can only make an honest replay
fail, never make logged weights reproduce that training did not produce.

torch, numpy and safetensors are imported inside the functions that need them.
"""

from __future__ import annotations

import base64
import json
import math
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attest.canonical import canonical_json, sha256_digest, strict_json_loads
from attest.digest import digest_state_dict
from attest.durable import write_atomic
from attest.errors import ConfigurationError, FormatError

if TYPE_CHECKING:
    import torch

__all__ = [
    "OPTIMIZER_FORMAT",
    "LoadedState",
    "StateDigests",
    "capture_rng",
    "digest_optimizer",
    "digest_rng",
    "digest_scheduler",
    "load_rng_before_step",
    "load_state",
    "restore_rng",
    "rng_steps",
    "save_rng_before_step",
    "save_state",
    "split_optimizer_state",
    "state_folder_name",
]

OPTIMIZER_FORMAT = "attest-optimizer-v1"
_META_KEY = "attest.optimizer"


def state_folder_name(step: int) -> str:
    """``step-<s>``: the folder (relative to ``state_dir``) holding the state at step ``s``."""
    return f"step-{step}"


def _rng_file(state_dir: str | os.PathLike[str], step: int) -> Path:
    return Path(state_dir) / f"rng-before-step-{step}.json"


def save_rng_before_step(
    state_dir: str | os.PathLike[str], step: int, rng: Mapping[str, Any]
) -> None:
    """Keep the generator state the forward pass of ``step`` starts from (at an epoch's start,
    and after a validation run between two steps)."""
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    write_atomic(_rng_file(state_dir, step), canonical_json(dict(rng)))


def rng_steps(state_dir: str | os.PathLike[str]) -> frozenset[int]:
    """The steps that have a :func:`save_rng_before_step` file in ``state_dir``."""
    found = set()
    for path in Path(state_dir).glob("rng-before-step-*.json"):
        number = path.name[len("rng-before-step-") : -len(".json")]
        if number.isdigit() and path.name == _rng_file(state_dir, int(number)).name:
            found.add(int(number))
    return frozenset(found)


def load_rng_before_step(state_dir: str | os.PathLike[str], step: int) -> dict[str, Any] | None:
    """The :func:`save_rng_before_step` document of ``step``, or ``None`` if there is none."""
    path = _rng_file(state_dir, step)
    if not path.is_file():
        return None
    doc = strict_json_loads(path.read_bytes(), what=str(path))
    if not isinstance(doc, dict):
        raise FormatError(f"{path} must hold an rng.json document (a JSON object)")
    return doc


_NON_FINITE = "attest.float"  # {"attest.float": "inf" | "-inf" | "nan"}: JSON has no such number
_TENSOR = "attest.tensor"  # {"attest.tensor": "<name in optimizer.safetensors>"}


def _jsonable(value: Any, where: str) -> Any:
    """Plain JSON of a state-dict value; tensors of one element become numbers, and a
    non-finite float (ReduceLROnPlateau keeps ``best = inf``) the object
    ``{"attest.float": "inf" | "-inf" | "nan"}``, which :func:`_unjsonable` reads back."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {_NON_FINITE: repr(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "item") and hasattr(value, "numel") and value.numel() == 1:
        return _jsonable(value.item(), where)
    raise ConfigurationError(
        f"{where} holds a {type(value).__name__}, which the state files cannot record as JSON"
    )


def _unjsonable(value: Any, tensors: Mapping[str, torch.Tensor] | None = None) -> Any:
    """The state-dict value :func:`_jsonable` wrote ``value`` for: non-finite floats back, and
    (given the optimizer file's ``tensors``) the tensors :func:`_lift_tensors` moved there."""
    if isinstance(value, dict):
        if value.keys() == {_NON_FINITE} and value[_NON_FINITE] in ("inf", "-inf", "nan"):
            return float(value[_NON_FINITE])
        if tensors is not None and value.keys() == {_TENSOR}:
            if value[_TENSOR] not in tensors:
                raise FormatError(f"optimizer state names a tensor {value[_TENSOR]!r} it lacks")
            return tensors[value[_TENSOR]]
        return {k: _unjsonable(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_unjsonable(v, tensors) for v in value]
    return value


def _lift_tensors(value: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` (non-tensor per-parameter optimizer state) with every tensor of more than one
    element inside it moved to ``tensors`` as ``<name>#<n>`` and replaced by
    ``{"attest.tensor": "<name>#<n>"}`` (LBFGS keeps lists of direction tensors)."""
    import torch

    count = 0

    def lift(v: Any) -> Any:
        nonlocal count
        if isinstance(v, torch.Tensor) and v.numel() != 1:
            key = f"{name}#{count}"
            count += 1
            tensors[key] = v
            return {_TENSOR: key}
        if isinstance(v, Mapping):
            return {k: lift(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [lift(x) for x in v]
        return v

    return lift(value)


def split_optimizer_state(
    state_dict: Mapping[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into flat tensors and the JSON meta document."""
    import torch

    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, entry in state_dict.get("state", {}).items():
        for key, value in entry.items():
            name = f"{pid}.{key}"
            if isinstance(value, torch.Tensor):  # 0-d ones too (Adam's "step")
                tensors[f"state.{name}"] = value
            else:
                lifted = _lift_tensors(value, f"state.{name}", tensors)
                scalars[name] = _jsonable(lifted, f"optimizer.state[{name}]")
    groups = _jsonable(list(state_dict.get("param_groups", [])), "optimizer.param_groups")
    return tensors, {"param_groups": groups, "scalars": scalars}


def _optimizer_digest(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> str:
    d = digest_state_dict(tensors, workers=1)
    doc = {
        "format": OPTIMIZER_FORMAT,
        "tensors": {"algorithm": d.algorithm, "root": d.hex},
        "meta": dict(meta),
    }
    return sha256_digest(canonical_json(doc))


def digest_optimizer(state_dict: Mapping[str, Any]) -> str:
    """The ``state.optimizer`` digest of an optimizer state dict."""
    tensors, meta = split_optimizer_state(state_dict)
    return _optimizer_digest(tensors, meta)


def digest_scheduler(state_dict: Mapping[str, Any] | None) -> str | None:
    """The ``state.scheduler`` digest, or ``None`` when there is no scheduler."""
    if state_dict is None:
        return None
    return sha256_digest(canonical_json(_jsonable(dict(state_dict), "scheduler")))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def capture_rng() -> dict[str, Any]:
    """The current python, numpy and torch (CPU and CUDA, when initialised) RNG states as JSON."""
    import torch

    version, state, gauss = random.getstate()
    doc: dict[str, Any] = {
        "python": {"version": version, "state": list(state), "gauss_next": gauss},
        "numpy": None,
        "torch": _b64(bytes(torch.get_rng_state().numpy().tobytes())),
        "cuda": None,
    }
    try:
        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
        doc["numpy"] = {
            "kind": str(kind),
            "keys": _b64(np.asarray(keys, dtype="<u4").tobytes()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    except ImportError:
        pass
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        doc["cuda"] = [_b64(bytes(s.numpy().tobytes())) for s in torch.cuda.get_rng_state_all()]
    return doc


def restore_rng(doc: Mapping[str, Any]) -> None:
    """Set the python, numpy and torch RNGs to a :func:`capture_rng` document."""
    import torch

    try:
        py = doc["python"]
        random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
        torch.set_rng_state(
            torch.frombuffer(bytearray(base64.b64decode(doc["torch"])), dtype=torch.uint8)
        )
        if doc.get("numpy") is not None:
            import numpy as np

            n = doc["numpy"]
            keys = np.frombuffer(base64.b64decode(n["keys"]), dtype="<u4").astype(np.uint32)
            np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
        if doc.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(
                [
                    torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)
                    for s in doc["cuda"]
                ]
            )
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # RuntimeError: torch's
        raise FormatError(f"rng state document is malformed: {exc}") from None


def digest_rng(doc: Mapping[str, Any]) -> str:
    """The ``state.rng`` digest of a :func:`capture_rng` document."""
    return sha256_digest(canonical_json(dict(doc)))


@dataclass(frozen=True)
class StateDigests:
    """The ``state`` object of a ``weights.checkpoint`` record."""

    optimizer: str
    scheduler: str | None
    rng: str
    path: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "rng": self.rng,
            "path": self.path,
        }


@dataclass(frozen=True)
class LoadedState:
    """The state files of one step, as tensors and plain state dicts ready to load."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    rng: dict[str, Any]
    digests: StateDigests


def save_state(
    folder: str | os.PathLike[str],
    *,
    model: Mapping[str, torch.Tensor],
    optimizer: Mapping[str, Any],
    scheduler: Mapping[str, Any] | None,
    rng: Mapping[str, Any],
    relative_to: str | os.PathLike[str] | None = None,
) -> StateDigests:
    """Write the state files into ``folder`` and return their digests.

    Tensors must be on the CPU and must not share storage (pass copies). ``path`` in the
    result is ``folder`` relative to ``relative_to`` when given, else the folder's name.
    """
    from safetensors.torch import save_file

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    save_file(dict(model), str(out / "model.safetensors"))
    tensors, meta = split_optimizer_state(optimizer)
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    save_file(flat, str(out / "optimizer.safetensors"), metadata={_META_KEY: json.dumps(meta)})
    sched_digest = digest_scheduler(scheduler)
    if scheduler is not None:
        write_atomic(
            out / "scheduler.json", canonical_json(_jsonable(dict(scheduler), "scheduler"))
        )
    write_atomic(out / "rng.json", canonical_json(dict(rng)))
    rel = os.path.relpath(out, relative_to) if relative_to is not None else out.name
    return StateDigests(
        optimizer=_optimizer_digest(flat, meta),
        scheduler=sched_digest,
        rng=digest_rng(rng),
        path=rel,
    )


def load_state(folder: str | os.PathLike[str]) -> LoadedState:
    """Read the state files of one step; the digests are recomputed from the files."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    src = Path(folder)
    try:
        model = load_file(str(src / "model.safetensors"))
        with safe_open(str(src / "optimizer.safetensors"), framework="pt") as f:
            raw = (f.metadata() or {}).get(_META_KEY)
            flat = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        rng = strict_json_loads((src / "rng.json").read_bytes(), what=f"{src}/rng.json")
        sched_path = src / "scheduler.json"
        scheduler = (
            strict_json_loads(sched_path.read_bytes(), what=str(sched_path))
            if sched_path.exists()
            else None
        )
    except OSError as exc:
        raise FormatError(f"state files in {src} are incomplete: {exc}") from None
    if raw is None:
        raise FormatError(f"{src}/optimizer.safetensors lacks the {_META_KEY!r} metadata")
    meta = strict_json_loads(raw, what=f"{src}/optimizer.safetensors metadata")
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in flat.items():
        if "#" in name:  # lifted from inside a value: put back where the scalars name it
            continue
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = tensor
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = _unjsonable(value, flat)
    optimizer = {"state": state, "param_groups": _unjsonable(meta["param_groups"])}
    digests = StateDigests(
        optimizer=_optimizer_digest(flat, meta),
        scheduler=digest_scheduler(scheduler),
        rng=digest_rng(rng),
        path=src.name,
    )
    return LoadedState(model, optimizer, _unjsonable(scheduler), rng, digests)
