"""Offline verification of attest bundles (DESIGN §6, docs/verifying.md).

:func:`verify_bundle` is the whole public entry point: it reads a bundle, picks the trainer and
server keys the *policy* trusts (never keys from the bundle, unless asked to with
``trust_bundle_keys``, which the verdict then states), runs the numbered checks and judges the
results under the policy::

    1. integrity.*   attest.verifier.integrity     signatures, Merkle root, proofs, chain, steps
    2. chain.*       attest.verifier.chain         init → checkpoints → final, model file, data
    3. scratch.*     attest.verifier.scratch       init re-creation and randomness, step-0 loss,
                                                   update bounds (needs torch)
    4. replay.*      attest.verifier.replay        verifier-chosen segments re-executed (torch)
    5. components.*  attest.verifier.components    declared external weights, fine-tune parents

Checks 3 and 4 are imported lazily: without torch (a proof-only install) they are reported as
skipped with the reason, never silently left out. They run only on a bundle that passed 1 and 2:
statistics over forged records would prove nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from attest.bundle import Bundle
from attest.errors import AttestError, FormatError
from attest.keys import TrainerPublicKey
from attest.note import Note, NoteVerifier
from attest.verifier.chain import check_chain
from attest.verifier.components import check_components, component_facts
from attest.verifier.context import Progress, VerifyContext
from attest.verifier.integrity import check_integrity
from attest.verifier.policy import Policy, builtin_policy
from attest.verifier.result import Basis, CheckResult, Status, failed, skipped, warned
from attest.verifier.verdict import Outcome, Verdict, judge

__all__ = ["Outcome", "Policy", "Verdict", "builtin_policy", "verify_bundle"]

EARLIER = "integrity.earlier_checkpoints"


def _trainer_key(bundle: Bundle, policy: Policy) -> TrainerPublicKey | None:
    ids = [s.keyid for r in bundle.records[:1] for s in r.envelope.signatures]
    for key in policy.trainer_keys:
        if key.key_id in ids:
            return key
    if not ids and len(policy.trainer_keys) == 1:
        return policy.trainer_keys[0]
    return None


def _server_verifier(bundle: Bundle, policy: Policy) -> NoteVerifier | None:
    signers: set[tuple[str, bytes]] = set()
    for text in bundle.checkpoints[:1]:
        try:
            signers = {(s.name, s.key_id) for s in Note.from_text(text).signatures}
        except AttestError:
            signers = set()
    for v in policy.server_keys:
        if (v.name, v.key_id) in signers:
            return v
    return None


def _run_family(
    name: str, fn: Callable[[VerifyContext], list[CheckResult]], ctx: VerifyContext
) -> list[CheckResult]:
    try:
        return fn(ctx)
    except AttestError as exc:
        return [
            failed(
                f"{name}.error",
                f"{name} checks",
                exc.message,
                Basis.CRYPTOGRAPHIC,
                expected=exc.expected,
                got=exc.got,
            )
        ]
    except Exception as exc:  # a crash is "could not check", never a pass
        return [
            skipped(
                f"{name}.error",
                f"{name} checks",
                f"the check crashed: {exc!r}",
                Basis.CRYPTOGRAPHIC,
            )
        ]


def _lazy(
    module: str, function: str, family: str, basis: Basis
) -> Callable[[VerifyContext], list[CheckResult]]:
    def run(ctx: VerifyContext) -> list[CheckResult]:
        if importlib.util.find_spec("torch") is None:
            return [
                skipped(
                    family,
                    f"{family} checks",
                    "torch is not installed; install attest-lineage[verifier] to run them",
                    basis,
                )
            ]
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            return [skipped(family, f"{family} checks", f"{module} is unavailable: {exc}", basis)]
        fn: Callable[[VerifyContext], list[CheckResult]] = getattr(mod, function)
        return list(fn(ctx))

    return run


def verify_bundle(
    bundle: str | Path | Bundle,
    *,
    policy: Policy,
    model: str | Path | None = None,
    data_dir: str | Path | None = None,
    state_dir: str | Path | None = None,
    replay: int = 0,
    replay_seed: int | None = None,
    parent: str | Path | None = None,
    progress: Progress | None = None,
    signature_mode: str = "auto",
    trust_bundle_keys: bool = False,
    parent_depth: int = 0,
    earlier_checkpoints: Sequence[str] = (),
) -> Verdict:
    """Verify ``bundle`` under ``policy`` and return the :class:`Verdict`.

    ``model`` is the final weights (safetensors file or folder) to compare with the attested
    digest; ``data_dir`` and ``state_dir`` let checks 3–4 recompute losses and replay segments;
    ``replay`` is the number of segments to replay (``replay_seed`` makes the choice
    reproducible); ``parent`` a fine-tune's parent bundle; ``earlier_checkpoints`` signed tree
    heads (C2SP note text) the verifier fetched before, which the log must extend — given, that
    check is required, so one that cannot be opened makes the verdict "could not check". A bundle that cannot be parsed gives
    a ``tampered`` verdict; a file that cannot be read raises :class:`FormatError`.
    """
    if signature_mode not in ("auto", "all", "sample"):
        raise FormatError("signature_mode must be 'auto', 'all' or 'sample'", got=signature_mode)
    if not isinstance(bundle, Bundle):
        path = Path(bundle)
        if not path.is_file():
            raise FormatError(f"cannot read bundle {path}: no such file")
        try:
            bundle = Bundle.read(path)
        except FormatError as exc:
            result = failed(
                "integrity.structure",
                "Bundle structure",
                f"the bundle is malformed: {exc.message}",
                Basis.CRYPTOGRAPHIC,
                expected=exc.expected,
                got=exc.got,
            )
            return judge([result], policy, run="?")
    note = None
    results: list[CheckResult] = []
    if earlier_checkpoints and EARLIER not in policy.required_checks:
        policy = replace(policy, required_checks=(*policy.required_checks, EARLIER))
    if trust_bundle_keys:
        extra_t = (
            [TrainerPublicKey.from_pem(bundle.keys["trainer"])] if "trainer" in bundle.keys else []
        )
        extra_s = [NoteVerifier.from_vkey(bundle.keys["server"])] if "server" in bundle.keys else []
        policy = policy.with_keys(trainer_keys=extra_t, server_keys=extra_s)
        note = "SELF-CONSISTENT ONLY (keys taken from the bundle)"
        results.append(
            warned(
                "integrity.trust",
                "Key trust",
                "the trainer and server keys were "
                "taken from the bundle itself: this proves the bundle is internally "
                "consistent, not who signed it",
                Basis.CRYPTOGRAPHIC,
                trainer=bundle.keys.get("trainer"),
                server=bundle.keys.get("server"),
            )
        )
    ctx = VerifyContext(
        bundle=bundle,
        policy=policy,
        trainer_key=_trainer_key(bundle, policy),
        server_verifier=_server_verifier(bundle, policy),
        model_path=Path(model) if model is not None else None,
        data_dir=Path(data_dir) if data_dir is not None else None,
        state_dir=Path(state_dir) if state_dir is not None else None,
        replay=replay,
        replay_seed=replay_seed,
        progress=progress,
        parent_bundle=Path(parent) if parent is not None else None,
        parent_depth=parent_depth,
        signature_mode=signature_mode,
        earlier_checkpoints=tuple(earlier_checkpoints),
    )
    results += _run_family("integrity", check_integrity, ctx)
    results += _run_family("chain", check_chain, ctx)
    authentic = not any(
        r.status is Status.FAIL and r.id.split(".")[0] in ("integrity", "chain") for r in results
    )
    if authentic:
        results += _run_family("components", check_components, ctx)
        results += _run_family(
            "scratch",
            _lazy("attest.verifier.scratch", "check_from_scratch", "scratch", Basis.STATISTICAL),
            ctx,
        )
        results += _run_family(
            "replay", _lazy("attest.verifier.replay", "check_replay", "replay", Basis.REPLAY), ctx
        )
    else:
        why = (
            "not run: the bundle failed integrity or chain checks, and origin checks over "
            "forged records would prove nothing"
        )
        for family, basis in (
            ("components", Basis.CRYPTOGRAPHIC),
            ("scratch", Basis.STATISTICAL),
            ("replay", Basis.REPLAY),
        ):
            results.append(skipped(family, f"{family} checks", why, basis))
    facts = _facts(ctx)
    return judge(results, policy, run=bundle.run, facts=facts, note=note)


def _facts(ctx: VerifyContext) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    try:
        end = ctx.run_end
        facts["final_root"] = end["model"]["root"] if end else None
        facts["init_root"] = ctx.weights_init["model"]["root"]
        table = ctx.step_table()
        facts["steps"] = len(table)
        facts["records"] = len(ctx.records)
        facts["checkpoints"] = [
            {"step": b["step"], "root": b["model"]["root"]} for b in ctx.checkpoints()
        ]
        stride = max(1, len(table) // 2000)
        facts["loss"] = [
            list(p) for p in zip(table.step[::stride], table.loss[::stride], strict=True)
        ]
        facts["components"] = component_facts(ctx)
        parent = ctx.run_start["parent"]
        if parent:
            facts["parent"] = {"run": parent["run"], "root": parent["model"]["root"]}
    except (AttestError, KeyError, TypeError):
        pass
    return facts
