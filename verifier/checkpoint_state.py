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

from pathlib import Path

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
        if state.optimizer.get("state"):
            raise DigestMismatchError(
                "step-0 optimizer state must be that of a fresh optimizer",
                expected="no per-parameter state",
                got=f"{len(state.optimizer['state'])} parameter(s) with state",
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
