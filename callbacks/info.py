"""Declared facts about a run: components, parent, dataset, sampler, model, code, environment
(docs/formats.md, bodies of ``run.start`` and ``data.manifest``).

Everything here is plain data that ends up, as JSON, in a record body; the functions that read
the environment (:func:`environment_facts`, :func:`code_facts`) never fail a training job: a fact
that cannot be read is recorded as ``null``.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attest.canonical import canonical_json, parse_sha256_digest, sha256_digest
from attest.errors import ConfigurationError, FormatError

__all__ = [
    "Component",
    "DatasetInfo",
    "ModelInfo",
    "Parent",
    "SamplerInfo",
    "Shard",
    "code_facts",
    "environment_facts",
    "jsonable",
]


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON: tuples become lists, paths strings, non-finite floats null and
    anything else its ``repr`` (a config must never stop training)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)  # plain str, also for subclasses such as torch's TorchVersion
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if value == value and abs(value) != float("inf") else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return jsonable(value.item())
    return repr(value)


@dataclass(frozen=True)
class Component:
    """Weights taken from elsewhere: every tensor whose name starts with ``prefix``."""

    name: str
    prefix: str
    source: str
    license: str

    def __post_init__(self) -> None:
        for f in ("name", "prefix", "source", "license"):
            if not isinstance(getattr(self, f), str) or not getattr(self, f):
                raise ConfigurationError(f"Component.{f} must be a non-empty string")


@dataclass(frozen=True)
class Parent:
    """A run this one continues from: its id, its final model root and its bundle file."""

    run: str
    model_root: str
    bundle: str | os.PathLike[str]

    def __post_init__(self) -> None:
        if len(self.model_root) != 64 or any(c not in "0123456789abcdef" for c in self.model_root):
            raise ConfigurationError("Parent.model_root must be 64 lowercase hex digits")
        if not Path(self.bundle).is_file():
            raise ConfigurationError(f"Parent.bundle: {self.bundle} is not a file")

    def to_json(self, algorithm: str) -> dict[str, Any]:
        digest = sha256_digest(Path(self.bundle).read_bytes())
        return {
            "run": self.run,
            "model": {"algorithm": algorithm, "root": self.model_root},
            "bundle": digest,
        }


@dataclass(frozen=True)
class Shard:
    path: str
    digest: str
    bytes: int

    @classmethod
    def of_file(cls, path: str | os.PathLike[str], *, name: str | None = None) -> Shard:
        h = hashlib.sha256()
        size = 0
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
        return cls(name or Path(path).name, "sha256:" + h.hexdigest(), size)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "digest": self.digest, "bytes": self.bytes}


@dataclass(frozen=True)
class DatasetInfo:
    """The dataset: a name, its size in samples and a fingerprint or shard files.

    With shards and no fingerprint, the fingerprint is the digest of the shard list. Without
    either it is ``null`` (the verifier reports the data as undeclared).
    """

    name: str
    size: int | None = None
    fingerprint: str | None = None
    shards: Sequence[Shard] = ()

    def __post_init__(self) -> None:
        if self.fingerprint is not None:
            try:
                parse_sha256_digest(self.fingerprint, field="DatasetInfo.fingerprint")
            except FormatError as exc:
                raise ConfigurationError(exc.message, got=self.fingerprint) from None

    @classmethod
    def of_files(
        cls, name: str, paths: Sequence[str | os.PathLike[str]], *, size: int | None = None
    ) -> DatasetInfo:
        return cls(name, size, None, tuple(Shard.of_file(p) for p in paths))

    def to_json(self) -> dict[str, Any]:
        shards = [s.to_json() for s in self.shards]
        fingerprint = self.fingerprint
        if fingerprint is None and shards:
            fingerprint = sha256_digest(canonical_json(shards))
        return {"name": self.name, "size": self.size, "fingerprint": fingerprint, "shards": shards}


@dataclass(frozen=True)
class SamplerInfo:
    kind: str
    seed: int | None
    batch_size: int
    drop_last: bool
    world_size: int = 1

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
            "world_size": self.world_size,
        }


@dataclass(frozen=True)
class ModelInfo:
    """How a verifier rebuilds the model: ``import_path(**init_args)`` after seeding."""

    import_path: str
    init_args: Mapping[str, Any]
    parameters: int

    @classmethod
    def of(cls, model: Any, init_args: Mapping[str, Any] | None = None) -> ModelInfo:
        t = type(model)
        count = sum(int(p.numel()) for p in model.parameters())
        return cls(f"{t.__module__}:{t.__qualname__}", jsonable(dict(init_args or {})), count)

    def to_json(self) -> dict[str, Any]:
        return {
            "import_path": self.import_path,
            "init_args": dict(self.init_args),
            "parameters": self.parameters,
        }


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def environment_facts(*, world_size: int = 1, deterministic: bool = False) -> dict[str, Any]:
    """The facts bit-exact replay depends on (``run.start.environment``)."""
    import torch

    cuda = torch.version.cuda if torch.cuda.is_available() else None
    cudnn = torch.backends.cudnn.version() if torch.cuda.is_available() else None  # type: ignore[no-untyped-call]
    try:
        capability: str | None = torch.backends.cpu.get_cpu_capability()
    except Exception:
        capability = os.environ.get("ATEN_CPU_CAPABILITY")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "lightning": _version("lightning"),
        "platform": platform.platform(),
        "device": device,
        "threads": torch.get_num_threads(),
        "cpu_capability": capability,
        "cuda": cuda,
        "cudnn": cudnn,
        "deterministic": bool(deterministic or torch.are_deterministic_algorithms_enabled()),
        "world_size": world_size,
    }


def code_facts(cwd: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Git revision of the working directory, whether it is dirty and the digest of its diff."""
    where = os.fspath(cwd) if cwd is not None else os.getcwd()

    def git(*args: str) -> bytes | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=where, capture_output=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout

    rev = git("rev-parse", "--verify", "HEAD")
    if rev is None:
        return {"revision": None, "dirty": False, "diff": None}
    diff = git("diff", "HEAD") or b""
    return {
        "revision": rev.decode().strip(),
        "dirty": bool(diff),
        "diff": sha256_digest(diff) if diff else None,
    }
