"""The state files of a checkpoint, used only once they match the signed log (docs/verifying.md).

The callback keeps, for each checkpoint ``a``, a folder ``state_dir/step-a/``: weights, optimizer,
LR scheduler, RNG. Every state file is used only after its digest equals the one in the signed
``weights.checkpoint`` record (the weights' ``attest-tensors-v1`` root, the ``state.optimizer`` /
``scheduler`` / ``rng`` digests of :mod:`attest.statefiles`). :func:`verified_weights` checks the
weights alone and returns a missing or mismatched file as a reason, not an error (replay's
segment scores, the scratch and update-bound checks fall back or skip); :func:`verified_state`
checks the whole folder before replay loads it, and raises
:class:`~attest.errors.DigestMismatchError` with both digests when one differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attest.digest import digest_safetensors, digest_state_dict
from attest.errors import DigestMismatchError, FormatError
from attest.statefiles import LoadedState, load_state
from attest.verifier.context import VerifyContext

__all__ = ["recorded_root", "verified_state", "verified_weights"]


def recorded_root(ctx: VerifyContext, step: int) -> str | None:
    """The model root (hex) the log commits to at ``step`` (the init for 0, else the last
    ``weights.checkpoint`` at that step)."""
    if step == 0:
        return str(ctx.weights_init["model"]["root"])
    found = [c for c in ctx.checkpoints() if c.get("step") == step]
    return str(found[-1]["model"]["root"]) if found else None


def verified_weights(ctx: VerifyContext, step: int) -> tuple[Path | None, str]:
    """``state_dir/step-<step>/model.safetensors`` if its digest equals the log's; else
    ``(None, why)``."""
    folder = ctx.state_folder(step)
    if folder is None or not (folder / "model.safetensors").is_file():
        return None, f"no state file for step {step}"
    root = recorded_root(ctx, step)
    if root is None:
        return None, f"no checkpoint record at step {step}"
    got = digest_safetensors(folder / "model.safetensors", algorithm=ctx.algorithm).hex
    if got != root:
        return None, f"step-{step}/model.safetensors digest {got[:16]}… ≠ logged {root[:16]}…"
    return folder / "model.safetensors", "ok"


def verified_state(ctx: VerifyContext, step: int) -> LoadedState:
    """All state files of checkpoint ``step``, each checked against the record's digests."""
    folder = ctx.state_folder(step)
    if folder is None:
        raise FormatError(f"no state folder step-{step} in the state directory")
    bodies = [c for c in ctx.checkpoints() if c.get("step") == step]
    if not bodies and step != 0:
        raise FormatError(f"no weights.checkpoint record at step {step}")
    state = load_state(folder)
    got_model = digest_state_dict(state.model, algorithm=ctx.algorithm).hex
    if not bodies:
        # The init: weights.init commits the weights only. The optimizer must be fresh (no
        # per-parameter state); scheduler and RNG files are used as given (a wrong one can
        # only make an honest replay fail).
        root = recorded_root(ctx, 0)
        if got_model != root:
            raise DigestMismatchError(
                "step-0 model state file does not match weights.init", expected=root, got=got_model
            )
        stale = _not_fresh(state.optimizer.get("state") or {})
        if stale:
            raise DigestMismatchError(
                "step-0 optimizer state must be that of a fresh optimizer",
                expected="no per-parameter state, or step 0 and one constant per tensor",
                got=stale,
            )
        return state
    body = bodies[-1]
    claims = body.get("state") or {}
    pairs = [
        ("model", str(body["model"]["root"]), got_model),
        ("optimizer", claims.get("optimizer"), state.digests.optimizer),
        ("scheduler", claims.get("scheduler"), state.digests.scheduler),
        ("rng", claims.get("rng"), state.digests.rng),
    ]
    for what, expected, got in pairs:
        if expected != got:
            raise DigestMismatchError(
                f"step-{step} {what} state file does not match the checkpoint record",
                expected=expected,
                got=got,
            )
    return state


def _not_fresh(per_parameter: Mapping[Any, Any]) -> str | None:
    """Why a step-0 optimizer state is not a fresh optimizer's, or ``None``.

    Adam, SGD and RMSprop create per-parameter state at their first step; Adagrad creates its
    accumulators at construction, filled with ``initial_accumulator_value`` and a step count of
    0. So a fresh state holds, per parameter, step counters at 0 and tensors each holding one
    value throughout. One number per tensor cannot carry a trajectory towards other weights;
    moments or accumulators left from earlier training can, and are refused."""
    import torch

    for index, entry in per_parameter.items():
        if not isinstance(entry, Mapping):
            return f"parameter {index}: state is not a mapping"
        for name, value in entry.items():
            if name == "step":
                if float(value) != 0.0:
                    return f"parameter {index}: step {float(value):g}"
            elif isinstance(value, torch.Tensor) and value.numel() > 1:
                flat = value.reshape(-1)
                if not bool((flat == flat[0]).all()):
                    return f"parameter {index}: {name} is not one constant"
    return None
