"""A recorder's options, checked before training starts: trainer key, run id and the rest.

Apart from :class:`~attest.callbacks.recorder.Recorder` because the Lightning adapter checks
the same options in its own ``__init__``, long before it builds a recorder (it builds one in
``setup``, on rank zero, after ``ddp_spawn`` has pickled it): a bad option fails at
construction in both, with the same :class:`~attest.errors.ConfigurationError`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from attest.errors import ConfigurationError
from attest.keys import TrainerKey
from attest.records import is_run_id

from .info import Component, Parent

__all__ = ["check_options", "load_key", "new_run_id"]


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
    """A fresh run id: the UTC start time and six random hex digits (``run-20250101T120000-a1b2c3``)."""
    return datetime.now(UTC).strftime("run-%Y%m%dT%H%M%S") + f"-{os.urandom(3).hex()}"


def check_options(
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
    if run is not None and not is_run_id(run):
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
